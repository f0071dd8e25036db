/*
 * ke_http.h — the small HTTP server every kubeedge-c program runs for
 * operators: GET /metrics (the ke_metrics registry, Prometheus text format
 * 0.0.4) and GET /healthz (200 "ok", or 503 with the reason). Anything else
 * is 404; a method other than GET is 405.
 *
 * /healthz is 503 when any watchdog heartbeat is stalled (ke_watchdog.h:
 * "stalled: rpc-0-1 for 12.3s (limit 10.0s)"), else when the health
 * callback reports a reason, else 200 "ok".
 *
 * Built on libmicrohttpd with its own internal polling thread
 * (MHD_USE_INTERNAL_POLLING_THREAD): requests are answered on that thread,
 * so the health callback runs there and must be thread-safe and quick (read
 * an atomic flag or take a short lock; never block on the module loop).
 */
#ifndef KE_HTTP_H
#define KE_HTTP_H

#include <stdarg.h>
#include <stddef.h>

struct sockaddr_storage;

/* Bounds: concurrent connections, idle connection timeout, health reason. */
#define KE_HTTP_MAX_CONNECTIONS 64
#define KE_HTTP_TIMEOUT_S 10
#define KE_HTTP_MAX_REASON 1024

typedef struct ke_http ke_http;

/* Health callback: return 0 when healthy. Otherwise write a reason
 * (NUL-terminated, at most `cap` bytes; truncated beyond) into `reason` and
 * return non-zero: /healthz then answers 503 with that reason. A healthy
 * component may write detail too (its parts' state, a line each): the
 * answer is then 200 "ok" followed by a newline and that detail. Called on
 * the server thread, once per /healthz request. */
typedef int (*ke_http_health_fn)(void *arg, char *reason, size_t cap);

typedef struct {
    /* "host:port": "127.0.0.1:9100", "0.0.0.0:0", "[::1]:9100", ":9100"
     * (all IPv4 interfaces). Port 0 picks a free port (see ke_http_port). */
    const char *listen;
    ke_http_health_fn health; /* NULL: always healthy */
    void *health_arg;         /* passed to health, borrowed for the server's life */
} ke_http_config;

/* ke_http_start binds cfg->listen and starts serving on a new thread.
 * `cfg` is read during the call only (health_arg is kept). On success *out
 * owns the running server; stop and free it with ke_http_stop. Returns 0;
 * KE_EINVAL for a bad address; KE_EIO when it cannot bind (address in use,
 * permission); KE_ENOMEM. */
int ke_http_start(const ke_http_config *cfg, ke_http **out);

/* ke_http_stop stops the server (waits for its thread; in-flight requests
 * are cut) and frees it. ke_http_stop(NULL) is a no-op. */
void ke_http_stop(ke_http *h);

/* ke_http_port returns the bound TCP port — the real one when the config
 * asked for port 0 — or 0 for NULL. */
int ke_http_port(const ke_http *h);

/* What the project's other libmicrohttpd servers (the Kubernetes gateway,
 * MetaServer) share with this one: */
/* ke_http_parse_listen resolves "host:port" ("[v6]:port", ":port" =
 * 0.0.0.0; names through getaddrinfo, first answer) into *ss. Returns 0 or
 * KE_EINVAL. */
int ke_http_parse_listen(const char *listen, struct sockaddr_storage *ss);

/* ke_http_mhd_log is the MHD_OPTION_EXTERNAL_LOGGER that routes
 * libmicrohttpd's messages into the process log, escaped (they can quote
 * what a client sent). */
void ke_http_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
