/*
 * ke_http.c — see ke_http.h.
 *
 * Map: ke_http_parse_listen turns "host:port" into a socket address; ke_http_start
 * hands it to libmicrohttpd with bounded connections and timeouts; on_request
 * routes GET /metrics and GET /healthz to one function each. libmicrohttpd's
 * own diagnostics go through ke_log.
 */
#include "ke_http.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_watchdog.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LOG_MOD "http"
#define CONTENT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TEXT "text/plain; charset=utf-8"

struct ke_http {
    struct MHD_Daemon *daemon;
    ke_http_health_fn health;
    void *health_arg;
    int port;
};

/* ke_http_parse_listen resolves "host:port" ("[v6]:port", ":port" = 0.0.0.0) into
 * *ss. Host names resolve through getaddrinfo; the first answer is used. */
int ke_http_parse_listen(const char *listen, struct sockaddr_storage *ss)
{
    char host[256];
    const char *port;
    if (!listen)
        return KE_EINVAL;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof(host))
            return KE_EINVAL;
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof(host))
            return KE_EINVAL;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        if (!host[0])
            snprintf(host, sizeof(host), "0.0.0.0");
        port = colon + 1;
    }
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen || atoi(port) > 65535)
        return KE_EINVAL;

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return KE_EINVAL;
    int rv = KE_EINVAL;
    if (res->ai_addrlen <= sizeof(*ss) &&
        (res->ai_family == AF_INET || res->ai_family == AF_INET6)) {
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        rv = 0;
    }
    freeaddrinfo(res);
    return rv;
}

/* ke_http_mhd_log routes libmicrohttpd's messages into the process log. */
void ke_http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    /* libmicrohttpd 0.9.75 reports our logger option as "not the first
     * option" even when it is; that notice says nothing about the server. */
    /* microhttpd's messages can quote what a client sent: escape them. */
    char el[KE_LOG_ESC_SIZE(sizeof(line))];
    if (strstr(line, "MHD_OPTION_EXTERNAL_LOGGER")) {
        ke_log_debug(LOG_MOD, "microhttpd: %s", ke_log_esc(line, el, sizeof(el)));
        return;
    }
    ke_log_warn(LOG_MOD, "microhttpd: %s", ke_log_esc(line, el, sizeof(el)));
}

/* reply queues `body` (copied) with status `code`. */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TEXT);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, MHD_HTTP_METHOD_GET);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
    char *text = NULL;
    size_t len = 0;
    if (ke_metrics_render(&text, &len) != 0)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot render metrics\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_METRICS);
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* serve_healthz: the watchdog first (a stalled worker is the one failure a
 * component's own callback cannot report, and that callback might wait on
 * the stalled worker's lock), then the component's callback. */
static enum MHD_Result serve_healthz(ke_http *h, struct MHD_Connection *c)
{
    char reason[KE_HTTP_MAX_REASON] = "";
    if (ke_watchdog_check(reason, sizeof(reason)) > 0) {
        reason[sizeof(reason) - 1] = '\0';
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, reason);
    }
    if (!h->health || h->health(h->health_arg, reason, sizeof(reason)) == 0) {
        reason[sizeof(reason) - 1] = '\0';
        if (!reason[0])
            return reply(c, MHD_HTTP_OK, "ok");
        char ok[KE_HTTP_MAX_REASON + 4];
        snprintf(ok, sizeof(ok), "ok\n%s", reason); /* the component's detail */
        return reply(c, MHD_HTTP_OK, ok);
    }
    reason[sizeof(reason) - 1] = '\0';
    return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, reason[0] ? reason : "unhealthy");
}

/* on_request answers on the first call for the request: nothing here reads
 * a body, and libmicrohttpd discards one it was not asked to read. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    ke_http *h = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(c);
    if (strcmp(url, "/healthz") == 0)
        return serve_healthz(h, c);
    return reply(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

int ke_http_start(const ke_http_config *cfg, ke_http **out)
{
    if (!cfg || !out)
        return KE_EINVAL;
    *out = NULL;
    struct sockaddr_storage ss;
    if (ke_http_parse_listen(cfg->listen, &ss) != 0) {
        ke_log_error(LOG_MOD, "bad listen address listen=%s (want host:port)",
                     cfg->listen ? cfg->listen : "(null)");
        return KE_EINVAL;
    }
    ke_http *h = calloc(1, sizeof(*h));
    if (!h)
        return KE_ENOMEM;
    h->health = cfg->health;
    h->health_arg = cfg->health_arg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* the port argument only labels MHD's messages: SOCK_ADDR decides */
    uint16_t port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port;
    /* the logger goes first so that option errors reach it too */
    h->daemon = MHD_start_daemon(flags, ntohs(port), NULL, NULL, on_request, h,
                                 MHD_OPTION_EXTERNAL_LOGGER, ke_http_mhd_log, NULL,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)KE_HTTP_MAX_CONNECTIONS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)KE_HTTP_TIMEOUT_S,
                                 MHD_OPTION_END);
    if (!h->daemon) {
        ke_log_error(LOG_MOD, "cannot start http server listen=%s", cfg->listen);
        free(h);
        return KE_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? (int)info->port : 0;
    ke_log_info(LOG_MOD, "serving /metrics and /healthz listen=%s port=%d", cfg->listen, h->port);
    *out = h;
    return 0;
}

void ke_http_stop(ke_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}

int ke_http_port(const ke_http *h) { return h ? h->port : 0; }
