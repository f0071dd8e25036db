/*
 * logs.c — GET /api/v1/namespaces/NS/pods/NAME/log: a container's log as
 * the pod's edge node reads it, through EdgeController.Logs (which relays
 * it from the node's tunnel; nothing is kept in the cloud), answered as
 * text/plain, streamed while `follow` is set (kubectl logs -f).
 *
 * The gateway has authorized `get pods/log` for the caller; the call to
 * EdgeController goes over an in-process channel as cloudcore itself. The
 * HTTP status waits for the first bytes or the end of the call (at most
 * KA_LOG_FIRST_MS): an error before any byte — no such pod or container,
 * a node not connected, the edge's own — is answered with its Status
 * (404, 400, 503, 500); after that the log streams with 200. Chunks queue
 * per client up to KUBEAPI_WATCH_QUEUE_BYTES: a reader slower than its
 * log is cut off (the edge is told to stop), as a watch is.
 */
#include "kubeapi_internal.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define KA_LOG_FIRST_MS 2000

typedef struct log_ctx {
    atomic_int refs; /* the HTTP response's and the call's (on_close) */
    ka_stream s;     /* its mu guards the fields below too */
    int closed;      /* the call ended: st holds its status */
    ke_rpc_status st;
    ke_rpc_call *call; /* a reference */
} log_ctx;

static void ctx_unref(log_ctx *x)
{
    if (atomic_fetch_sub(&x->refs, 1) != 1)
        return;
    ka_stream_destroy(&x->s);
    if (x->call)
        ke_rpc_call_unref(x->call);
    free(x);
}

static void on_chunk(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    log_ctx *x = ud;
    const Ke__V1__PodLogChunk *ch = (const Ke__V1__PodLogChunk *)msg;
    pthread_mutex_lock(&x->s.mu);
    if (x->s.ended || ch->data.len == 0) {
        pthread_mutex_unlock(&x->s.mu);
        return;
    }
    if (ka_stream_push_locked(&x->s, ch->data.data, ch->data.len, 1) != 0) {
        ka_stream_end_locked(&x->s); /* on_close follows the cancel */
        pthread_mutex_unlock(&x->s.mu);
        ke_log_warn(KA_MOD, "log stream cut off: the client reads too slowly");
        ke_rpc_call_cancel(call);
        return;
    }
    pthread_mutex_unlock(&x->s.mu);
}

static void on_end(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    log_ctx *x = ud;
    pthread_mutex_lock(&x->s.mu);
    x->st = *st;
    x->closed = 1;
    ka_stream_end_locked(&x->s);
    pthread_mutex_unlock(&x->s.mu);
    ctx_unref(x);
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    log_ctx *x = cls;
    ssize_t n = ka_stream_read(&x->s, buf, max, NULL, NULL);
    if (n == MHD_CONTENT_READER_END_OF_STREAM)
        ke_rpc_call_cancel(x->call); /* the client left or the server stops: the edge
                                        is told to stop (a no-op once the call ended) */
    return n;
}

static void response_done(void *cls)
{
    log_ctx *x = cls;
    ke_rpc_call_cancel(x->call); /* no-op once ended */
    ctx_unref(x);
}

/* http_of maps the call's status to the HTTP answer. */
static unsigned http_of(int code, const char **reason)
{
    switch (code) {
    case KE_RPC_NOT_FOUND: *reason = "NotFound"; return 404;
    case KE_RPC_INVALID_ARGUMENT:
    case KE_RPC_FAILED_PRECONDITION: /* not bound, not running: as the API server's 400 */
        *reason = "BadRequest";
        return 400;
    case KE_RPC_PERMISSION_DENIED: *reason = "Forbidden"; return 403;
    case KE_RPC_UNAVAILABLE: *reason = "ServiceUnavailable"; return 503;
    case KE_RPC_DEADLINE_EXCEEDED: *reason = "Timeout"; return 504;
    case KE_RPC_RESOURCE_EXHAUSTED: *reason = "TooManyRequests"; return 429;
    default: *reason = "InternalError"; return 500;
    }
}

static int query_int(struct MHD_Connection *c, const char *key, int64_t *out, char *why,
                     size_t len)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    *out = 0;
    if (!v)
        return 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < 0) {
        snprintf(why, len, "%s: must be a non-negative integer", key);
        return -1;
    }
    *out = x;
    return 0;
}

enum MHD_Result ka_serve_log(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                             const ke_k8s_path *p, const char *ns)
{
    (void)r;
    if (!ka->cfg.self)
        return ka_send_status(c, 404, "NotFound", "pod logs are not served by this process",
                              p->kind, p->name);
    char why[256];
    int64_t tail = 0, limit = 0;
    if (query_int(c, "tailLines", &tail, why, sizeof(why)) != 0 ||
        query_int(c, "limitBytes", &limit, why, sizeof(why)) != 0)
        return ka_send_status(c, 400, "BadRequest", why, p->kind, p->name);
    const char *follow = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "follow");
    const char *container = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "container");
    Ke__V1__PodLogRequest req = KE__V1__POD_LOG_REQUEST__INIT;
    req.namespace_ = (char *)ns;
    req.pod = (char *)p->name;
    req.container = (char *)(container ? container : "");
    req.follow = follow && (strcmp(follow, "true") == 0 || strcmp(follow, "1") == 0);
    req.tail_lines = tail;
    req.limit_bytes = limit;

    log_ctx *x = calloc(1, sizeof(*x));
    if (!x)
        return ka_send_json(c, 500, NULL, NULL);
    atomic_init(&x->refs, 2);
    ka_stream_init(&x->s, ka, c, KUBEAPI_WATCH_QUEUE_BYTES);
    static const ke_rpc_handler h = {.on_message = on_chunk, .on_close = on_end};
    ke_rpc_stub stub = {ka->cfg.self, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 0}; /* a followed log has no deadline */
    int rc = ke_rpc_stub_start(&stub, "Logs", &h, x, &co, &x->call);
    if (rc != 0) {
        atomic_store(&x->refs, 1);
        ctx_unref(x);
        return ka_send_status(c, 503, "ServiceUnavailable", "cannot reach EdgeController",
                              p->kind, p->name);
    }
    if (ke_rpc_call_send(x->call, &req.base) != 0 || ke_rpc_call_close_send(x->call) != 0)
        ke_rpc_call_cancel(x->call); /* on_close says why */

    /* the status line waits for the first bytes or the end */
    pthread_mutex_lock(&x->s.mu);
    int64_t until = ke_time_mono_ms() + KA_LOG_FIRST_MS;
    while (!x->s.head && !x->closed && ke_time_mono_ms() < until) {
        struct timespec ts = ke_time_deadline(until - ke_time_mono_ms());
        pthread_cond_timedwait(&x->s.cv, &x->s.mu, &ts);
    }
    int failed = !x->s.head && x->closed && x->st.code != KE_RPC_OK;
    ke_rpc_status st = x->st;
    pthread_mutex_unlock(&x->s.mu);
    if (failed) {
        ctx_unref(x); /* the response's reference: none is made */
        const char *reason;
        unsigned code = http_of(st.code, &reason);
        return ka_send_status(c, code, reason, st.message, p->kind, p->name);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, reader, x, response_done);
    if (!resp) {
        response_done(x);
        return MHD_NO;
    }
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0U);
    MHD_add_response_header(resp, "Content-Type", "text/plain");
    enum MHD_Result res = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return res;
}
