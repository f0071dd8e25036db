/*
 * kubeapi.c — the gateway's server: libmicrohttpd over GnuTLS, one thread
 * per connection; client certificates verified against the cluster CA and
 * read into an identity (CN user, O groups) as on the gRPC port; request
 * bodies collected with a bound; then discovery, OpenAPI or a resource
 * request (resources.c).
 */
#include "kubeapi_internal.h"

#include "ke_err.h"
#include "ke_http.h"
#include "ke_log.h"
#include "ke_pki.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- replies ---- */

enum MHD_Result ka_send_json(struct MHD_Connection *c, unsigned code, json_t *body,
                             const char *warning)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
                                  "\"status\":\"Failure\",\"message\":\"out of memory\","
                                  "\"reason\":\"InternalError\",\"code\":500}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
        enum MHD_Result rc = MHD_queue_response(c, 500, r);
        MHD_destroy_response(r);
        return rc;
    }
    size_t n = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-cache, private");
    if (warning && *warning) {
        char w[1200];
        snprintf(w, sizeof(w), "299 - \"%.1100s\"", warning);
        for (char *p = w + 7; *p && p[1]; p++) /* a quote inside would end the text */
            if (*p == '"' && p[1] != '\0' && p[1] != '\n')
                *p = '\'';
        MHD_add_response_header(r, "Warning", w);
    }
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result ka_send_status(struct MHD_Connection *c, unsigned code, const char *reason,
                               const char *message, const ke_k8s_kind *k, const char *name)
{
    return ka_send_json(c, code, ke_k8s_status((int)code, reason, message, k, name), NULL);
}

enum MHD_Result ka_send_error(struct MHD_Connection *c, int rc, const char *why,
                              const ke_k8s_kind *k, const char *name)
{
    const char *reason;
    int code = ke_k8s_http_of(rc, &reason);
    if (rc == KE_EINVAL && k) {
        /* Invalid names the Kind and lists the causes, field by field:
         * kubectl prints The Pod "web" is invalid: spec...: ... */
        char msg[1024], field[256] = "";
        const char *colon = strstr(why, ": ");
        if (colon && (size_t)(colon - why) < sizeof(field) && !memchr(why, ' ', colon - why)) {
            memcpy(field, why, (size_t)(colon - why));
            field[colon - why] = '\0';
        }
        snprintf(msg, sizeof(msg), "%s \"%s\" is invalid: %s", k->kind, name ? name : "", why);
        json_t *st = ke_k8s_status(422, "Invalid", msg, k, name);
        json_t *d = st ? json_object_get(st, "details") : NULL;
        if (d) {
            json_object_set_new(d, "kind", json_string(k->kind));
            json_object_set_new(d, "causes",
                                json_pack("[{s:s, s:s, s:s}]", "reason", "FieldValueInvalid",
                                          "message", field[0] ? colon + 2 : why, "field", field));
        }
        return ka_send_json(c, 422, st, NULL);
    }
    return ka_send_status(c, (unsigned)code, reason, why, k, name);
}

/* ---- identity ---- */

/* peer_identity reads the verified client certificate of c into *id:
 * 0 (anonymous when none was sent); KE_ETLS with why when one was sent
 * and does not verify against the CA or has no usable subject. */
static int peer_identity(struct MHD_Connection *c, ke_rpc_identity *id, char *why, size_t len)
{
    memset(id, 0, sizeof(*id));
    id->kind = KE_RPC_ID_ANONYMOUS;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return 0;
    gnutls_session_t s = (gnutls_session_t)ci->tls_session;
    unsigned n = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(s, &n);
    if (!peers || n == 0)
        return 0;
    unsigned status = 0;
    int grc = gnutls_certificate_verify_peers2(s, &status);
    if (grc < 0 || status != 0) {
        gnutls_datum_t out = {0};
        if (grc >= 0 &&
            gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
            snprintf(why, len, "client certificate: %s", (const char *)out.data);
            gnutls_free(out.data);
        } else {
            snprintf(why, len, "client certificate: %s",
                     grc < 0 ? gnutls_strerror(grc) : "not verified");
        }
        return KE_ETLS;
    }
    gnutls_datum_t pem = {0};
    if (gnutls_pem_base64_encode2("CERTIFICATE", &peers[0], &pem) < 0) {
        snprintf(why, len, "client certificate: cannot encode");
        return KE_ETLS;
    }
    char *text = malloc(pem.size + 1);
    if (!text) {
        gnutls_free(pem.data);
        return KE_ENOMEM;
    }
    memcpy(text, pem.data, pem.size);
    text[pem.size] = '\0';
    gnutls_free(pem.data);
    int rc = ke_pki_cert_subject(text, id->user, sizeof(id->user), id->groups,
                                 KE_RPC_ID_GROUPS_MAX, &id->n_groups);
    if (rc == 0)
        rc = ke_pki_cert_fingerprint(text, id->fingerprint);
    free(text);
    if (rc != 0) {
        memset(id, 0, sizeof(*id));
        id->kind = KE_RPC_ID_ANONYMOUS;
        snprintf(why, len, "client certificate: no usable subject (one CN, at most %d O)",
                 KE_RPC_ID_GROUPS_MAX);
        return KE_ETLS;
    }
    id->kind = KE_RPC_ID_CERT;
    return 0;
}

/* ---- requests ---- */

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    ka_req *r = *con_cls;
    if (!r)
        return;
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    ka_req *r = cls;
    if (r->query_rc == 0 &&
        ke_k8s_query_set(&r->q, key, value, r->query_why, sizeof(r->query_why)) != 0)
        r->query_rc = KE_EINVAL;
    return MHD_YES;
}

static int open_path(const char *url)
{
    return strcmp(url, "/version") == 0 || strcmp(url, "/version/") == 0 ||
           strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
           strcmp(url, "/livez") == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    kubeapi *ka = cls;
    ka_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        ke_k8s_query_init(&r->q);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large)
            return MHD_YES;
        if (r->len + n > KUBEAPI_BODY_MAX) {
            r->too_large = 1; /* keep reading (and dropping) so the answer reaches the client */
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n + 1)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) {
                r->too_large = 1;
                return MHD_YES;
            }
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    /* the whole request is in */
    if (r->too_large) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the request body is larger than %d bytes", KUBEAPI_BODY_MAX);
        return ka_send_status(c, 413, "RequestEntityTooLarge", msg, NULL, NULL);
    }
    char why[512] = "";
    int rc = peer_identity(c, &r->id, why, sizeof(why));
    if (rc != 0) {
        ke_log_warn(KA_MOD, "refused client method=%s reason=\"%s\"", method, why);
        return ka_send_status(c, 401, "Unauthorized", why, NULL, NULL);
    }
    if (r->id.kind == KE_RPC_ID_ANONYMOUS && !open_path(url))
        return ka_send_status(c, 401, "Unauthorized",
                              "Unauthorized: a client certificate of the cluster CA is required "
                              "(keadm init writes an admin kubeconfig)", NULL, NULL);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_arg, r);
    r->method = method;
    r->url = url;
    r->accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    r->content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (strncmp(url, "/api", 4) != 0)
        return ka_serve_other(ka, c, r);
    if (strcmp(url, "/api") == 0 || strcmp(url, "/api/") == 0 || strcmp(url, "/apis") == 0 ||
        strcmp(url, "/apis/") == 0)
        return ka_serve_discovery(ka, c, r);
    return ka_serve_resource(ka, c, r);
}

/* ---- namespaces every cluster has ---- */

static int ensure_namespaces(ke_store *st)
{
    static const char *const names[] = {"default", "kube-system", "kube-public",
                                        "kube-node-lease"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        json_t *o = NULL;
        int rc = ke_store_get(st, "Namespace", "", names[i], &o);
        json_decref(o);
        if (rc == 0)
            continue;
        if (rc != KE_ENOTFOUND)
            return rc;
        json_t *ns = json_pack("{s:s, s:s, s:{s:s}, s:{}, s:{s:s}}", "apiVersion", "v1", "kind",
                               "Namespace", "metadata", "name", names[i], "spec", "status",
                               "phase", "Active");
        if (!ns)
            return KE_ENOMEM;
        rc = ke_store_create(st, ns, NULL);
        json_decref(ns);
        if (rc != 0 && rc != KE_EEXIST)
            return rc;
    }
    return 0;
}

/* ---- lifecycle ---- */

int kubeapi_start(const kubeapi_config *cfg, kubeapi **out)
{
    *out = NULL;
    struct sockaddr_storage ss;
    if (!cfg->store || !cfg->ec || !cfg->authz || ke_http_parse_listen(cfg->listen, &ss) != 0) {
        ke_log_error(KA_MOD, "bad configuration listen=%s (want host:port)",
                     cfg->listen ? cfg->listen : "(null)");
        return KE_EINVAL;
    }
    kubeapi *ka = calloc(1, sizeof(*ka));
    if (!ka)
        return KE_ENOMEM;
    ka->cfg = *cfg;
    if (ka->cfg.bookmark_ms <= 0)
        ka->cfg.bookmark_ms = 15000;
    size_t n;
    int rc = 0;
    if (!cfg->ca_file || !cfg->cert_file || !cfg->key_file ||
        ke_pki_read_file(cfg->ca_file, &ka->ca, &n) != 0 ||
        ke_pki_read_file(cfg->cert_file, &ka->cert, &n) != 0 ||
        ke_pki_read_file(cfg->key_file, &ka->key, &n) != 0) {
        ke_log_error(KA_MOD, "cannot read the TLS files ca=%s cert=%s key=%s (all three are "
                             "needed: the gateway serves HTTPS only)",
                     cfg->ca_file ? cfg->ca_file : "", cfg->cert_file ? cfg->cert_file : "",
                     cfg->key_file ? cfg->key_file : "");
        rc = KE_ETLS;
        goto fail;
    }
    rc = ensure_namespaces(cfg->store);
    if (rc != 0) {
        ke_log_error(KA_MOD, "cannot create the default namespaces: %s", ke_strerror(rc));
        goto fail;
    }
    pthread_mutex_init(&ka->mu, NULL);
    ka->mu_init = 1;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_TLS | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port;
    unsigned conns = cfg->max_connections ? cfg->max_connections : KUBEAPI_CONNECTIONS_DEFAULT;
    ka->d = MHD_start_daemon(flags, ntohs(port), NULL, NULL, on_request, ka,
                             MHD_OPTION_EXTERNAL_LOGGER, ke_http_mhd_log, NULL,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                             MHD_OPTION_HTTPS_MEM_KEY, ka->key,
                             MHD_OPTION_HTTPS_MEM_CERT, ka->cert,
                             MHD_OPTION_HTTPS_MEM_TRUST, ka->ca,
                             MHD_OPTION_CONNECTION_LIMIT, conns,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KUBEAPI_IDLE_TIMEOUT_S,
                             MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
                             MHD_OPTION_END);
    if (!ka->d) {
        ke_log_error(KA_MOD, "cannot serve listen=%s (address in use, or the TLS files do not "
                             "load into GnuTLS)", cfg->listen);
        rc = KE_EIO;
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(ka->d, MHD_DAEMON_INFO_BIND_PORT);
    atomic_store(&ka->port, info ? (int)info->port : 0);
    ke_log_info(KA_MOD, "serving the Kubernetes API listen=%s port=%d", cfg->listen,
                atomic_load(&ka->port));
    *out = ka;
    return 0;
fail:
    if (ka->mu_init)
        pthread_mutex_destroy(&ka->mu);
    free(ka->ca);
    free(ka->cert);
    free(ka->key);
    free(ka);
    return rc;
}

int kubeapi_port(const kubeapi *ka) { return ka ? atomic_load(&ka->port) : 0; }

void kubeapi_stop(kubeapi *ka)
{
    if (!ka)
        return;
    ka_watches_stop(ka); /* watches return, so their connection threads can end */
    MHD_stop_daemon(ka->d);
    pthread_mutex_destroy(&ka->mu);
    free(ka->ca);
    free(ka->cert);
    free(ka->key);
    free(ka);
}
