/*
 * kubeconfig.c — kectl's client config file (--kubeconfig FILE, or
 * $KECTL_KUBECONFIG), in kubeconfig's shape as keadm certs user writes it:
 *
 *   clusters: [{name, cluster: {server, certificate-authority}}]
 *   users:    [{name, user: {client-certificate, client-key}}]
 *   contexts: [{name, context: {cluster, user}}]
 *   current-context: NAME
 *
 * The current context picks the cluster and the user (without one, the
 * first of each). Relative paths are read relative to the file's folder,
 * as kubectl does. Flags win: --server, --ca, --cert and --key override
 * what the file says; the file overrides $KECTL_SERVER.
 */
#include "kectl.h"
#include "kectl_yaml.h"

#include "ke_err.h"
#include "ke_pki.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* named finds the entry of list whose "name" is name (NULL: the first). */
static const json_t *named(const json_t *list, const char *name)
{
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e) {
        const json_t *n = json_object_get(e, "name");
        if (!name || (json_is_string(n) && strcmp(json_string_value(n), name) == 0))
            return e;
    }
    return NULL;
}

static const char *str_at(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(json_object_get(o, a), b);
    return json_is_string(v) && *json_string_value(v) ? json_string_value(v) : NULL;
}

/* resolve writes p, relative to the folder of file, into out. */
static int resolve(const char *file, const char *p, char *out, size_t len)
{
    const char *slash = strrchr(file, '/');
    int n = p[0] == '/' || !slash ? snprintf(out, len, "%s", p)
                                  : snprintf(out, len, "%.*s/%s", (int)(slash - file), file, p);
    return n < 0 || (size_t)n >= len ? KE_EFULL : 0;
}

int kectl_kubeconfig_apply(kectl *k)
{
    if (!k->kubeconfig || !k->kubeconfig[0] || k->kcfg)
        return 0;
    const char *f = k->kubeconfig;
    char *buf = NULL, err[KECTL_YAML_ERR_MAX];
    size_t len = 0;
    json_t *docs = NULL;
    int rc = ke_pki_read_file(f, &buf, &len);
    if (rc != 0) {
        fprintf(stderr, "error: --kubeconfig %s: cannot read it: %s\n", f, ke_strerror(rc));
        return rc;
    }
    rc = kectl_yaml_to_json(f, buf, len, &docs, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "error: --kubeconfig: %s\n", rc == KE_EINVAL ? err : ke_strerror(rc));
        return rc;
    }
    const json_t *doc = json_array_get(docs, 0);
    const json_t *cur = json_object_get(doc, "current-context");
    const json_t *ctx = named(json_object_get(doc, "contexts"),
                              json_is_string(cur) ? json_string_value(cur) : NULL);
    const json_t *cl = named(json_object_get(doc, "clusters"), str_at(ctx, "context", "cluster"));
    const json_t *us = named(json_object_get(doc, "users"), str_at(ctx, "context", "user"));
    const char *server = str_at(cl, "cluster", "server"),
               *ca = str_at(cl, "cluster", "certificate-authority"),
               *cert = str_at(us, "user", "client-certificate"),
               *key = str_at(us, "user", "client-key");
    if (!server) {
        fprintf(stderr, "error: --kubeconfig %s: no cluster with a server\n", f);
        json_decref(docs);
        return KE_EINVAL;
    }
    if ((ca && resolve(f, ca, k->kcfg_paths[0], sizeof(k->kcfg_paths[0])) != 0) ||
        (cert && resolve(f, cert, k->kcfg_paths[1], sizeof(k->kcfg_paths[1])) != 0) ||
        (key && resolve(f, key, k->kcfg_paths[2], sizeof(k->kcfg_paths[2])) != 0)) {
        fprintf(stderr, "error: --kubeconfig %s: a path is too long\n", f);
        json_decref(docs);
        return KE_EFULL;
    }
    k->kcfg = docs; /* keeps server's text alive */
    if (!k->server_flag)
        k->server = server;
    if (ca && !k->tls.ca_file) {
        k->tls.ca_file = k->kcfg_paths[0];
        k->use_tls = 1;
    }
    if (cert && key && !k->tls.cert_file && !k->tls.key_file) {
        k->tls.cert_file = k->kcfg_paths[1];
        k->tls.key_file = k->kcfg_paths[2];
        k->use_tls = 1;
    }
    return 0;
}
