/*
 * servicebus.c — see servicebus.h. Map of this file:
 *
 *   curl on the loop   socket_cb (a uv_poll per socket curl wants watched),
 *                      timer_cb (the one uv_timer curl asks for), on_poll
 *                      and on_timer drive curl_multi_socket_action, and
 *                      check_done collects finished transfers
 *   a call             call_start (bounds, allow list, the easy handle),
 *                      header_cb and write_cb (the response, capped),
 *                      call_done (curl's result -> the answer)
 *   the module         start, on_message, health, stop, destroy
 *
 * Everything runs on edgecore's loop. libcurl resolves names with its
 * threaded resolver (Debian's libcurl4), so no call here blocks.
 */
#include "servicebus.h"

#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_servicebus.h"
#include "ke_time.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SB_MOD "servicebus"

typedef struct sbus sbus;

/* A socket curl asked us to watch. Closed handles free themselves only:
 * their close callback may run after the module's state is gone. */
typedef struct sb_sock {
    uv_poll_t poll;
    sbus *sb;
    curl_socket_t fd;
    struct sb_sock *prev, *next; /* sb->socks, while open */
} sb_sock;

typedef struct sb_call {
    sbus *sb;
    CURL *easy;
    uint64_t id;
    char res[40];                 /* "servicebus/<id>" */
    char *source;                 /* the module to answer */
    Ke__V1__ServiceRequest *req;  /* owns the body curl sends */
    char *url;
    struct curl_slist *hdrs;
    /* the response */
    uint8_t *body;
    size_t body_len, body_cap;
    Ke__V1__HTTPHeader **rh;
    size_t n_rh, rh_bytes;
    int over; /* a bound was crossed: 1 body, 2 headers */
    char err[CURL_ERROR_SIZE];
    int64_t started_ms;
    struct sb_call *prev, *next; /* sb->calls */
} sb_call;

struct sbus {
    ke_rt *e;
    servicebus_config cfg;
    CURLM *multi;
    uv_timer_t timer;
    sb_call *calls;
    unsigned n_calls;
    sb_sock *socks;
    int stopping;
    ke_metric *m_calls, *m_denied, *m_failed, *m_inflight;
};

/* ---- answers ---- */

/* answer sends the ServiceResponse r for request (res, source). */
static void answer(sbus *sb, const char *source, const char *res, Ke__V1__ServiceResponse *r)
{
    size_t len = ke__v1__service_response__get_packed_size(r);
    uint8_t *buf = malloc(len ? len : 1);
    Ke__V1__Message *m = NULL;
    if (buf) {
        ke__v1__service_response__pack(r, buf);
        m = ke_rt_message_new(SB_MOD, "", KE__V1__OPERATION__OPERATION_RESPONSE, res, buf, len);
    }
    free(buf);
    int rc = m ? ke_rt_send_to(sb->e, source, m) : KE_ENOMEM;
    if (rc != 0) {
        if (m)
            ke__v1__message__free_unpacked(m, NULL);
        ke_log_warn(SB_MOD, "answer to %s not delivered to %s: %s (its caller times out)", res,
                    source, ke_strerror(rc));
    }
}

/* refuse answers request (res, source, id) with code and why, before any
 * call was made. */
static void refuse(sbus *sb, const char *source, const char *res, uint64_t id, int code,
                   const char *why)
{
    Ke__V1__ServiceResponse r = KE__V1__SERVICE_RESPONSE__INIT;
    r.request_id = id;
    r.code = code;
    r.error = (char *)why;
    ke_metric_add(code == KE_RPC_PERMISSION_DENIED ? sb->m_denied : sb->m_failed, 1);
    answer(sb, source, res, &r);
}

/* ---- a call ---- */

static void call_free(sb_call *c)
{
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->hdrs);
    if (c->req)
        ke__v1__service_request__free_unpacked(c->req, NULL);
    for (size_t i = 0; i < c->n_rh; i++) {
        free(c->rh[i]->name);
        free(c->rh[i]->value);
        free(c->rh[i]);
    }
    free(c->rh);
    free(c->body);
    free(c->url);
    free(c->source);
    free(c);
}

static void call_unlink(sbus *sb, sb_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        sb->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sb->n_calls--;
    ke_metric_set(sb->m_inflight, sb->n_calls);
}

static void rh_clear(sb_call *c)
{
    for (size_t i = 0; i < c->n_rh; i++) {
        free(c->rh[i]->name);
        free(c->rh[i]->value);
        free(c->rh[i]);
    }
    c->n_rh = 0;
    c->rh_bytes = 0;
}

/* header_cb: one response header line. A status line starts a response
 * (again after a 1xx); the blank line ends the headers. */
static size_t header_cb(char *data, size_t size, size_t n, void *ud)
{
    sb_call *c = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        rh_clear(c);
        return len;
    }
    size_t end = len;
    while (end > 0 && (data[end - 1] == '\r' || data[end - 1] == '\n'))
        end--;
    if (end == 0)
        return len;
    const char *colon = memchr(data, ':', end);
    if (!colon || colon == data || data[0] == ' ' || data[0] == '\t')
        return len; /* obsolete line folding or garbage: not a header of ours */
    if (c->n_rh >= KE_SERVICEBUS_HEADERS_MAX || c->rh_bytes + end > KE_SERVICEBUS_HEADER_BYTES_MAX) {
        c->over = 2;
        return 0; /* curl ends the transfer (CURLE_WRITE_ERROR) */
    }
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1;
    while (v < data + end && (*v == ' ' || *v == '\t'))
        v++;
    Ke__V1__HTTPHeader *h = malloc(sizeof(*h));
    Ke__V1__HTTPHeader **grown = realloc(c->rh, (c->n_rh + 1) * sizeof(*grown));
    if (grown)
        c->rh = grown;
    if (h) {
        ke__v1__httpheader__init(h);
        h->name = strndup(data, nl);
        h->value = strndup(v, (size_t)(data + end - v));
    }
    if (!h || !grown || !h->name || !h->value) {
        if (h) {
            free(h->name);
            free(h->value);
            free(h);
        }
        snprintf(c->err, sizeof(c->err), "out of memory reading the response headers");
        return 0;
    }
    c->rh[c->n_rh++] = h;
    c->rh_bytes += end;
    return len;
}

/* write_cb: response body bytes, at most KE_SERVICEBUS_BODY_MAX. */
static size_t write_cb(char *data, size_t size, size_t n, void *ud)
{
    sb_call *c = ud;
    size_t len = size * n;
    if (len > KE_SERVICEBUS_BODY_MAX - c->body_len) {
        c->over = 1;
        return 0; /* curl ends the transfer (CURLE_WRITE_ERROR) */
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        if (cap > KE_SERVICEBUS_BODY_MAX)
            cap = KE_SERVICEBUS_BODY_MAX;
        uint8_t *b = realloc(c->body, cap);
        if (!b) {
            snprintf(c->err, sizeof(c->err), "out of memory reading the response body");
            return 0;
        }
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
    return len;
}

/* call_done turns curl's result into the answer, and frees the call. */
static void call_done(sbus *sb, sb_call *c, CURLcode res)
{
    Ke__V1__ServiceResponse r = KE__V1__SERVICE_RESPONSE__INIT;
    char why[CURL_ERROR_SIZE + 300];
    const char *target = c->req->target;
    r.request_id = c->id;
    if (res == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        r.code = KE_RPC_OK;
        r.status = (int32_t)status;
        r.n_headers = c->n_rh;
        r.headers = c->rh;
        r.body.data = c->body;
        r.body.len = c->body_len;
    } else if (c->over == 1) {
        r.code = KE_RPC_RESOURCE_EXHAUSTED;
        snprintf(why, sizeof(why), "the response of %s has a body larger than %u bytes", target,
                 KE_SERVICEBUS_BODY_MAX);
    } else if (c->over == 2) {
        r.code = KE_RPC_RESOURCE_EXHAUSTED;
        snprintf(why, sizeof(why), "the response of %s has more than %d headers or %u bytes of "
                                   "them",
                 target, KE_SERVICEBUS_HEADERS_MAX, KE_SERVICEBUS_HEADER_BYTES_MAX);
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        r.code = KE_RPC_DEADLINE_EXCEEDED;
        snprintf(why, sizeof(why), "%s did not answer within %" PRId64 " ms", target,
                 c->req->timeout_ms);
    } else {
        r.code = KE_RPC_UNAVAILABLE;
        snprintf(why, sizeof(why), "%s: %s", target,
                 c->err[0] ? c->err : curl_easy_strerror(res));
    }
    if (r.code != KE_RPC_OK) {
        r.error = why;
        ke_metric_add(sb->m_failed, 1);
    }
    char ep[KE_LOG_ESC_SIZE(64)], ew[KE_LOG_ESC_SIZE(200)];
    ke_log_debug(SB_MOD, "call done request=%" PRIu64 " target=%s path=%s code=%s status=%d "
                         "body=%zu ms=%" PRId64 "%s%s",
                 c->id, target, ke_log_esc(c->req->path, ep, sizeof(ep)),
                 ke_rpc_status_name(r.code), r.status, c->body_len,
                 ke_time_mono_ms() - c->started_ms, r.error[0] ? " error=" : "",
                 r.error[0] ? ke_log_esc(r.error, ew, sizeof(ew)) : "");
    answer(sb, c->source, c->res, &r);
    call_unlink(sb, c);
    curl_multi_remove_handle(sb->multi, c->easy);
    call_free(c);
}

/* build_headers: the caller's headers as curl wants them, and no
 * "Expect: 100-continue" unless the caller asks for one. */
static int build_headers(sb_call *c)
{
    int has_expect = 0;
    for (size_t i = 0; i < c->req->n_headers; i++) {
        const Ke__V1__HTTPHeader *h = c->req->headers[i];
        size_t len = strlen(h->name) + strlen(h->value) + 3;
        char *line = malloc(len);
        if (!line)
            return KE_ENOMEM;
        if (h->value[0])
            snprintf(line, len, "%s: %s", h->name, h->value);
        else
            snprintf(line, len, "%s;", h->name); /* curl's way to send an empty value */
        struct curl_slist *l = curl_slist_append(c->hdrs, line);
        free(line);
        if (!l)
            return KE_ENOMEM;
        c->hdrs = l;
        has_expect |= strcasecmp(h->name, "Expect") == 0;
    }
    if (!has_expect) {
        struct curl_slist *l = curl_slist_append(c->hdrs, "Expect:");
        if (!l)
            return KE_ENOMEM;
        c->hdrs = l;
    }
    return 0;
}

/* setup_easy prepares c->easy for c->req. 0 or KE_ENOMEM. */
static int setup_easy(sb_call *c)
{
    const Ke__V1__ServiceRequest *r = c->req;
    size_t ul = strlen("http://") + strlen(r->target) + strlen(r->path) + 1;
    if (!(c->url = malloc(ul)) || !(c->easy = curl_easy_init()) || build_headers(c) != 0)
        return KE_ENOMEM;
    snprintf(c->url, ul, "http://%s%s", r->target, r->path);
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                            \
    do {                                                                                         \
        if (rc == CURLE_OK)                                                                      \
            rc = curl_easy_setopt(e, opt, val);                                                  \
    } while (0)
    SET(CURLOPT_URL, c->url);
    SET(CURLOPT_PROTOCOLS_STR, "http");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_NOPROXY, "*");
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PATH_AS_IS, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    SET(CURLOPT_ERRORBUFFER, c->err);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, c);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, c);
    SET(CURLOPT_PRIVATE, c);
    SET(CURLOPT_HTTPHEADER, c->hdrs);
    if (strcmp(r->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, r->method);
        if (r->body.len > 0 || strcmp(r->method, "POST") == 0 || strcmp(r->method, "PUT") == 0 ||
            strcmp(r->method, "PATCH") == 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
            SET(CURLOPT_POSTFIELDS, r->body.len ? (const char *)r->body.data : "");
        }
    }
#undef SET
    if (rc != CURLE_OK) {
        snprintf(c->err, sizeof(c->err), "%s", curl_easy_strerror(rc));
        return KE_EIO;
    }
    return 0;
}

/* call_start takes a request from the bus: checks, then starts it (or
 * answers at once). */
static void call_start(sbus *sb, const Ke__V1__Message *msg, uint64_t id)
{
    const char *source = msg->route->source;
    const char *res = msg->route->resource;
    char why[400];
    Ke__V1__ServiceRequest *req =
        ke__v1__service_request__unpack(NULL, msg->content.len, msg->content.data);
    if (!req || req->request_id != id) {
        ke_log_warn(SB_MOD, "refused %s: %s", res,
                    req ? "its request_id is not the resource's" : "not a ServiceRequest");
        refuse(sb, source, res, id, KE_RPC_INVALID_ARGUMENT,
               "the request is not a valid ServiceRequest");
        goto out;
    }
    if (ke_servicebus_check_request(req, why, sizeof(why)) != 0) {
        char ew[KE_LOG_ESC_SIZE(200)];
        ke_log_warn(SB_MOD, "refused request=%" PRIu64 ": %s", id, ke_log_esc(why, ew, sizeof(ew)));
        refuse(sb, source, res, id, KE_RPC_INVALID_ARGUMENT, why);
        goto out;
    }
    if (!ke_servicebus_allowed(sb->cfg.allow, req->target)) {
        snprintf(why, sizeof(why), "target %s is not in modules.servicebus.allow of node %s",
                 req->target, sb->cfg.node_name);
        ke_log_warn(SB_MOD, "refused request=%" PRIu64 ": %s", id, why);
        refuse(sb, source, res, id, KE_RPC_PERMISSION_DENIED, why);
        goto out;
    }
    if (sb->n_calls >= KE_SERVICEBUS_NODE_CALLS_MAX) {
        snprintf(why, sizeof(why), "%u service calls in flight on node %s already; try again",
                 KE_SERVICEBUS_NODE_CALLS_MAX, sb->cfg.node_name);
        ke_log_warn(SB_MOD, "refused request=%" PRIu64 ": %s", id, why);
        refuse(sb, source, res, id, KE_RPC_RESOURCE_EXHAUSTED, why);
        goto out;
    }
    sb_call *c = calloc(1, sizeof(*c));
    if (!c || !(c->source = strdup(source))) {
        free(c);
        refuse(sb, source, res, id, KE_RPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    c->sb = sb;
    c->id = id;
    c->req = req;
    req = NULL; /* the call's now */
    snprintf(c->res, sizeof(c->res), "%s", res);
    c->started_ms = ke_time_mono_ms();
    int rc = setup_easy(c);
    CURLMcode mc = rc == 0 ? curl_multi_add_handle(sb->multi, c->easy) : CURLM_OK;
    if (rc != 0 || mc != CURLM_OK) {
        snprintf(why, sizeof(why), "cannot start the call: %s",
                 rc == KE_ENOMEM ? "out of memory"
                 : rc != 0       ? c->err
                                 : curl_multi_strerror(mc));
        ke_log_warn(SB_MOD, "request=%" PRIu64 " %s", id, why);
        refuse(sb, source, res, id, KE_RPC_INTERNAL, why);
        call_free(c);
        goto out;
    }
    c->next = sb->calls;
    if (sb->calls)
        sb->calls->prev = c;
    sb->calls = c;
    sb->n_calls++;
    ke_metric_add(sb->m_calls, 1);
    ke_metric_set(sb->m_inflight, sb->n_calls);
    char ep[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(SB_MOD, "call started request=%" PRIu64 " %s %s%s timeout_ms=%" PRId64, id,
                 c->req->method, c->req->target, ke_log_esc(c->req->path, ep, sizeof(ep)),
                 c->req->timeout_ms);
out:
    if (req)
        ke__v1__service_request__free_unpacked(req, NULL);
}

/* ---- curl on the loop ---- */

static void check_done(sbus *sb)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(sb->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        sb_call *c = (sb_call *)priv;
        CURLcode res = m->data.result; /* m is gone after the handle is removed */
        if (c)
            call_done(sb, c, res);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sb_sock *ss = p->data;
    sbus *sb = ss->sb;
    int flags = 0, running = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else
        flags = (events & UV_READABLE ? CURL_CSELECT_IN : 0) |
                (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    CURLMcode mc = curl_multi_socket_action(sb->multi, ss->fd, flags, &running);
    if (mc != CURLM_OK)
        ke_log_warn(SB_MOD, "curl_multi_socket_action: %s", curl_multi_strerror(mc));
    check_done(sb);
}

static void on_timer(uv_timer_t *t)
{
    sbus *sb = t->data;
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(sb->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (mc != CURLM_OK)
        ke_log_warn(SB_MOD, "curl_multi_socket_action: %s", curl_multi_strerror(mc));
    check_done(sb);
}

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

/* sock_close stops watching ss and frees it once libuv is done with it. */
static void sock_close(sbus *sb, sb_sock *ss)
{
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        sb->socks = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    uv_poll_stop(&ss->poll);
    uv_close((uv_handle_t *)&ss->poll, sock_closed);
}

static int socket_cb(CURL *easy, curl_socket_t s, int action, void *ud, void *socketp)
{
    (void)easy;
    sbus *sb = ud;
    sb_sock *ss = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (ss) {
            sock_close(sb, ss);
            curl_multi_assign(sb->multi, s, NULL);
        }
        return 0;
    }
    if (!ss) {
        ss = calloc(1, sizeof(*ss));
        if (!ss)
            return -1;
        if (uv_poll_init_socket(ke_rt_loop(sb->e), &ss->poll, s) != 0) {
            ke_log_warn(SB_MOD, "cannot watch socket %d", (int)s);
            free(ss);
            return -1;
        }
        ss->sb = sb;
        ss->fd = s;
        ss->poll.data = ss;
        ss->next = sb->socks;
        if (sb->socks)
            sb->socks->prev = ss;
        sb->socks = ss;
        curl_multi_assign(sb->multi, s, ss);
    }
    int events = (action & CURL_POLL_IN ? UV_READABLE : 0) |
                 (action & CURL_POLL_OUT ? UV_WRITABLE : 0);
    int rc = uv_poll_start(&ss->poll, events, on_poll);
    if (rc != 0) {
        ke_log_warn(SB_MOD, "cannot watch socket %d: %s", (int)s, uv_strerror(rc));
        return -1;
    }
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *ud)
{
    (void)multi;
    sbus *sb = ud;
    if (timeout_ms < 0)
        uv_timer_stop(&sb->timer);
    else if (!sb->stopping)
        uv_timer_start(&sb->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- the module ---- */

static void sb_on_message(ke_module *m, Ke__V1__Message *msg)
{
    sbus *sb = ke_module_data(m);
    const Ke__V1__Route *rt = msg->route;
    uint64_t id = 0;
    char extra;
    if (!rt || sscanf(rt->resource, "servicebus/%" SCNu64 "%c", &id, &extra) != 1 ||
        rt->operation != KE__V1__OPERATION__OPERATION_QUERY || !rt->source[0]) {
        char er[KE_LOG_ESC_SIZE(64)];
        ke_log_warn(SB_MOD, "ignoring a message that is not a service request resource=%s op=%d",
                    rt ? ke_log_esc(rt->resource, er, sizeof(er)) : "-",
                    rt ? (int)rt->operation : -1);
    } else if (sb->stopping) {
        refuse(sb, rt->source, rt->resource, id, KE_RPC_UNAVAILABLE, "edgecore is stopping");
    } else {
        call_start(sb, msg, id);
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static int sb_start(ke_module *m)
{
    const servicebus_config *cfg = ke_module_config(m);
    char why[300];
    if (!cfg || !cfg->node_name) {
        ke_log_error(SB_MOD, "node name is required");
        return KE_EINVAL;
    }
    if (ke_servicebus_check_allow(cfg->allow, why, sizeof(why)) != 0) {
        ke_log_error(SB_MOD, "modules.servicebus.allow: %s", why);
        return KE_EINVAL;
    }
    CURLcode gc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (gc != CURLE_OK) {
        ke_log_error(SB_MOD, "cannot initialise libcurl: %s", curl_easy_strerror(gc));
        return KE_EIO;
    }
    sbus *sb = calloc(1, sizeof(*sb));
    if (!sb || !(sb->multi = curl_multi_init())) {
        free(sb);
        curl_global_cleanup();
        ke_log_error(SB_MOD, "out of memory");
        return KE_ENOMEM;
    }
    sb->e = ke_module_rt(m);
    sb->cfg = *cfg;
    if (!sb->cfg.allow)
        sb->cfg.allow = "";
    if (uv_timer_init(ke_rt_loop(sb->e), &sb->timer) != 0) {
        curl_multi_cleanup(sb->multi);
        free(sb);
        curl_global_cleanup();
        return KE_EIO;
    }
    sb->timer.data = sb;
    curl_multi_setopt(sb->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(sb->multi, CURLMOPT_SOCKETDATA, sb);
    curl_multi_setopt(sb->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(sb->multi, CURLMOPT_TIMERDATA, sb);
    ke_metrics_counter_new("ke_servicebus_calls_total", "HTTP calls started for the cloud", NULL,
                           &sb->m_calls);
    ke_metrics_counter_new("ke_servicebus_denied_total",
                           "service requests refused: target not in modules.servicebus.allow",
                           NULL, &sb->m_denied);
    ke_metrics_counter_new("ke_servicebus_failed_total",
                           "service requests answered with an error (timeout, refused, bounds)",
                           NULL, &sb->m_failed);
    ke_metrics_gauge_new("ke_servicebus_inflight", "HTTP calls in flight", NULL,
                         &sb->m_inflight);
    ke_module_set_data(m, sb);
    char ea[KE_LOG_ESC_SIZE(200)];
    ke_log_info(SB_MOD, "serving allow=\"%s\"", ke_log_esc(sb->cfg.allow, ea, sizeof(ea)));
    return 0;
}

static int sb_health(ke_module *m, char *detail, size_t cap)
{
    sbus *sb = ke_module_data(m);
    if (!sb)
        return 0;
    snprintf(detail, cap, "inflight=%u", sb->n_calls);
    return 0;
}

static void sb_stop(ke_module *m)
{
    sbus *sb = ke_module_data(m);
    if (!sb)
        return;
    sb->stopping = 1;
    /* Calls in flight end unanswered: EdgeHub has stopped, and their cloud
     * callers are told UNAVAILABLE when the tunnel ends. */
    while (sb->calls) {
        sb_call *c = sb->calls;
        call_unlink(sb, c);
        curl_multi_remove_handle(sb->multi, c->easy);
        call_free(c);
    }
    curl_multi_cleanup(sb->multi); /* closes cached connections (socket_cb) */
    sb->multi = NULL;
    while (sb->socks) /* any curl did not say it removed */
        sock_close(sb, sb->socks);
    uv_timer_stop(&sb->timer);
}

static void sb_freed(uv_handle_t *t)
{
    free(t->data);
    curl_global_cleanup();
}

static void sb_destroy(ke_module *m)
{
    sbus *sb = ke_module_data(m);
    if (!sb)
        return;
    ke_module_set_data(m, NULL);
    uv_close((uv_handle_t *)&sb->timer, sb_freed);
}

const ke_module_ops servicebus_module = {
    .name = SB_MOD,
    .group = SB_MOD,
    .start = sb_start,
    .on_message = sb_on_message,
    .health = sb_health,
    .stop = sb_stop,
    .destroy = sb_destroy,
};
