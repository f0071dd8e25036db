/*
 * ke_rt.c — see ke_rt.h.
 *
 * The loop owns: an async handle (closures posted by other threads), an
 * idle handle (bus delivery, active only while a queue holds messages), a
 * one-second timer (the loop's watchdog heartbeat and the modules' health
 * snapshot); signals are the program's (edgecore takes them on a thread of
 * its own). Stopping: stop each started
 * module in reverse order, keep running until every rpc call made or served
 * through the runtime has delivered on_close, destroy the modules, close
 * the runtime's handles, and let uv_run return.
 */
#include "ke_rt.h"

#include "ke_err.h"
#include "ke_http.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RT_MOD "edgecore"
#define BUS_BATCH 64 /* messages delivered per module per loop turn */
#define STOP_BUS_TURNS 1024 /* bus turns run at a stop before modules stop */

typedef struct bus_item {
    Ke__V1__Message *msg;
    size_t bytes;
    struct bus_item *next;
} bus_item;

struct ke_module {
    const ke_module_ops *ops;
    ke_rt *edge;
    void *config, *data;
    int started;
    bus_item *qhead, *qtail;
    size_t qlen, qbytes;
    ke_metric *m_dropped, *m_delivered, *m_healthy;
};

typedef struct post_item {
    void (*fn)(void *arg);
    void *arg;
    size_t bytes;
    struct post_item *next;
} post_item;

typedef enum { RT_NEW, RT_RUNNING, RT_STOPPING, RT_DONE } rt_state;

struct ke_rt {
    ke_rt_config cfg;
    uv_loop_t loop;
    int loop_inited;
    uv_async_t async;
    uv_idle_t bus_idle;
    uv_timer_t tick;
    int bus_idle_on;
    ke_module mods[KE_RT_MAX_MODULES];
    size_t n_mods;
    rt_state state;
    int start_failed;
    atomic_int stop_req;
    atomic_long calls_open; /* rpc calls whose on_close has not run on the loop */
    /* closures posted by other threads */
    pthread_mutex_t post_mu;
    post_item *phead, *ptail;
    size_t pbytes;
    int post_closed;
    /* health, written on the loop, read by the HTTP thread */
    pthread_mutex_t health_mu;
    char health_text[KE_RT_MAX_MODULES * KE_RT_HEALTH_MAX];
    int health_bad;
    ke_http *http;
    ke_watchdog_hb *hb;
    struct method_ctx *methods; /* served through ke_rt_serve */
};

/* ---- small accessors ---- */

uv_loop_t *ke_rt_loop(ke_rt *e) { return &e->loop; }
edge_store *ke_rt_store(ke_rt *e) { return e->cfg.store; }
ke_rpc_loop *ke_rt_rpc(ke_rt *e) { return e->cfg.rpc; }
ke_rt *ke_module_rt(ke_module *m) { return m->edge; }
const char *ke_module_name(const ke_module *m) { return m->ops->name; }
void *ke_module_config(ke_module *m) { return m->config; }
void ke_module_set_data(ke_module *m, void *data) { m->data = data; }
void *ke_module_data(ke_module *m) { return m->data; }
int ke_rt_http_port(const ke_rt *e) { return e->http ? ke_http_port(e->http) : 0; }

static ke_module *module_by_name(ke_rt *e, const char *name)
{
    for (size_t i = 0; i < e->n_mods; i++)
        if (strcmp(e->mods[i].ops->name, name) == 0)
            return &e->mods[i];
    return NULL;
}

static ke_module *module_by_group(ke_rt *e, const char *group)
{
    for (size_t i = 0; i < e->n_mods; i++)
        if (e->mods[i].ops->group && strcmp(e->mods[i].ops->group, group) == 0)
            return &e->mods[i];
    return NULL;
}

int ke_rt_has_module(ke_rt *e, const char *name) { return module_by_name(e, name) != NULL; }

/* ---- posts from other threads ---- */

int ke_rt_post(ke_rt *e, void (*fn)(void *arg), void *arg, size_t bytes)
{
    post_item *p = malloc(sizeof(*p));
    if (!p)
        return KE_ENOMEM;
    p->fn = fn;
    p->arg = arg;
    p->bytes = bytes + sizeof(*p);
    p->next = NULL;
    int rc = 0;
    pthread_mutex_lock(&e->post_mu);
    if (e->post_closed)
        rc = KE_ECLOSED;
    else if (e->pbytes + p->bytes > KE_RT_POST_BYTES)
        rc = KE_EFULL;
    else {
        if (e->ptail)
            e->ptail->next = p;
        else
            e->phead = p;
        e->ptail = p;
        e->pbytes += p->bytes;
        uv_async_send(&e->async);
    }
    pthread_mutex_unlock(&e->post_mu);
    if (rc != 0)
        free(p);
    return rc;
}

/* run_posts runs what other threads posted, oldest first. Loop thread. */
static void run_posts(ke_rt *e)
{
    pthread_mutex_lock(&e->post_mu);
    post_item *p = e->phead;
    e->phead = e->ptail = NULL;
    e->pbytes = 0;
    pthread_mutex_unlock(&e->post_mu);
    while (p) {
        post_item *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

typedef struct sync_call {
    void (*fn)(void *arg);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} sync_call;

static void sync_run(void *arg)
{
    sync_call *s = arg;
    s->fn(s->arg);
    pthread_mutex_lock(&s->mu);
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int ke_rt_call_sync(ke_rt *e, void (*fn)(void *arg), void *arg)
{
    sync_call s = {.fn = fn, .arg = arg};
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    int rc = ke_rt_post(e, sync_run, &s, 0);
    if (rc == 0) {
        pthread_mutex_lock(&s.mu);
        while (!s.done)
            pthread_cond_wait(&s.cv, &s.mu);
        pthread_mutex_unlock(&s.mu);
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return rc;
}

/* ---- the bus ---- */

static void bus_item_free(bus_item *it)
{
    ke__v1__message__free_unpacked(it->msg, NULL);
    free(it);
}

static void bus_deliver(uv_idle_t *h);

static int enqueue(ke_rt *e, ke_module *m, Ke__V1__Message *msg)
{
    if (e->state != RT_RUNNING)
        return KE_ECLOSED;
    size_t bytes = ke__v1__message__get_packed_size(msg);
    if (m->qlen >= KE_RT_QUEUE_LEN || (m->qlen > 0 && m->qbytes + bytes > KE_RT_QUEUE_BYTES)) {
        ke_metric_add(m->m_dropped, 1);
        return KE_EFULL;
    }
    bus_item *it = malloc(sizeof(*it));
    if (!it)
        return KE_ENOMEM;
    it->msg = msg;
    it->bytes = bytes;
    it->next = NULL;
    if (m->qtail)
        m->qtail->next = it;
    else
        m->qhead = it;
    m->qtail = it;
    m->qlen++;
    m->qbytes += bytes;
    if (!e->bus_idle_on) {
        e->bus_idle_on = 1;
        uv_idle_start(&e->bus_idle, bus_deliver);
    }
    return 0;
}

int ke_rt_send(ke_rt *e, Ke__V1__Message *msg)
{
    if (!msg || !msg->route || !msg->route->group || !*msg->route->group)
        return KE_EINVAL;
    ke_module *m = module_by_group(e, msg->route->group);
    return m ? enqueue(e, m, msg) : KE_ENOTFOUND;
}

int ke_rt_send_to(ke_rt *e, const char *module, Ke__V1__Message *msg)
{
    if (!msg || !module)
        return KE_EINVAL;
    ke_module *m = module_by_name(e, module);
    return m ? enqueue(e, m, msg) : KE_ENOTFOUND;
}

/* bus_turn delivers up to BUS_BATCH queued messages to each module;
 * returns 1 while some queue still holds messages. */
static int bus_turn(ke_rt *e)
{
    int more = 0;
    for (size_t i = 0; i < e->n_mods; i++) {
        ke_module *m = &e->mods[i];
        if (!m->started && e->state == RT_RUNNING)
            continue; /* starts later in this turn */
        for (int k = 0; k < BUS_BATCH && m->qhead; k++) {
            bus_item *it = m->qhead;
            m->qhead = it->next;
            if (!m->qhead)
                m->qtail = NULL;
            m->qlen--;
            m->qbytes -= it->bytes;
            if (m->started && m->ops->on_message && e->state == RT_RUNNING) {
                ke_metric_add(m->m_delivered, 1);
                m->ops->on_message(m, it->msg);
                free(it);
            } else {
                bus_item_free(it);
            }
        }
    }
    /* A module may have sent to one delivered earlier in this turn: look
     * at every queue again. */
    for (size_t i = 0; i < e->n_mods && !more; i++)
        more = e->mods[i].qhead != NULL;
    return more;
}

static void bus_deliver(uv_idle_t *h)
{
    ke_rt *e = h->data;
    if (!bus_turn(e)) {
        e->bus_idle_on = 0;
        uv_idle_stop(&e->bus_idle);
    }
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

Ke__V1__Message *ke_rt_message_new(const char *source, const char *group, Ke__V1__Operation op,
                                     const char *resource, const void *content, size_t len)
{
    Ke__V1__Message *m = calloc(1, sizeof(*m));
    Ke__V1__Route *r = calloc(1, sizeof(*r));
    Ke__V1__MessageHeader *h = calloc(1, sizeof(*h));
    if (!m || !r || !h) {
        free(m);
        free(r);
        free(h);
        return NULL;
    }
    ke__v1__message__init(m);
    ke__v1__route__init(r);
    ke__v1__message_header__init(h);
    m->route = r;
    m->header = h;
    r->operation = op;
    r->source = dup_or_empty(source);
    r->group = dup_or_empty(group);
    r->resource = dup_or_empty(resource);
    if (content && len) {
        m->content.data = malloc(len);
        if (m->content.data) {
            memcpy(m->content.data, content, len);
            m->content.len = len;
        }
    }
    if (!r->source || !r->group || !r->resource || (content && len && !m->content.data)) {
        ke__v1__message__free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}

int ke_rt_message_set_id(Ke__V1__Message *msg, const char *id)
{
    char *s = strdup(id);
    if (!s)
        return KE_ENOMEM;
    if (msg->header->id && msg->header->id != protobuf_c_empty_string)
        free(msg->header->id);
    msg->header->id = s;
    return 0;
}

int ke_rt_respond(ke_rt *e, const char *from, const Ke__V1__Message *req, const char *json)
{
    if (!req->route || !req->route->source || !*req->route->source || !req->header)
        return KE_EINVAL;
    Ke__V1__Message *r =
        ke_rt_message_new(from, "", KE__V1__OPERATION__OPERATION_RESPONSE,
                            req->route->resource, json, json ? strlen(json) : 0);
    if (!r)
        return KE_ENOMEM;
    r->header->parent_id = strdup(req->header->id ? req->header->id : "");
    if (!r->header->parent_id) {
        ke__v1__message__free_unpacked(r, NULL);
        return KE_ENOMEM;
    }
    int rc = ke_rt_send_to(e, req->route->source, r);
    if (rc != 0)
        ke__v1__message__free_unpacked(r, NULL);
    return rc;
}

/* ---- rpc events on the loop ---- */

typedef struct call_ctx {
    ke_rt *e;
    ke_rt_rpc_handler h;
    void *ud;
    struct rpc_event *close_ev; /* made in advance: a close is never refused */
} call_ctx;

typedef enum { EV_MESSAGE, EV_DRAIN, EV_CLOSE } ev_type;

typedef struct rpc_event {
    ev_type type;
    call_ctx *ctx;
    ke_rpc_call *call;
    const ProtobufCMessageDescriptor *desc;
    uint8_t *buf;
    size_t len;
    ke_rpc_status st;
} rpc_event;

typedef struct method_ctx {
    ke_rt *e;
    ke_rt_rpc_handler h;
    void *ud;
    struct method_ctx *next; /* the runtime's list, freed at ke_rt_free */
} method_ctx;

static void event_run(void *arg)
{
    rpc_event *ev = arg;
    call_ctx *c = ev->ctx;
    switch (ev->type) {
    case EV_MESSAGE: {
        ProtobufCMessage *msg = protobuf_c_message_unpack(ev->desc, NULL, ev->len, ev->buf);
        if (!msg) {
            ke_log_error(RT_MOD, "cannot decode a message handed to the loop; cancelling the call");
            ke_rpc_call_cancel(ev->call);
        } else if (c->h.on_message) {
            c->h.on_message(ev->call, msg, c->ud);
        } else {
            protobuf_c_message_free_unpacked(msg, NULL);
        }
        break;
    }
    case EV_DRAIN:
        if (c->h.on_drain)
            c->h.on_drain(ev->call, c->ud);
        break;
    case EV_CLOSE:
        if (c->h.on_close)
            c->h.on_close(ev->call, &ev->st, c->ud);
        atomic_fetch_sub(&c->e->calls_open, 1);
        free(c);
        break;
    }
    ke_rpc_call_unref(ev->call);
    free(ev->buf);
    free(ev);
}

static void post_event(call_ctx *c, ke_rpc_call *call, rpc_event *ev, size_t bytes)
{
    ev->ctx = c;
    ev->call = call;
    ke_rpc_call_ref(call);
    int rc = ke_rt_post(c->e, event_run, ev, ev->type == EV_CLOSE ? 0 : bytes);
    if (rc == 0)
        return;
    if (ev->type == EV_CLOSE) {
        /* The runtime has finished: nobody waits for this call any more. */
        atomic_fetch_sub(&c->e->calls_open, 1);
        free(c);
    } else {
        ke_log_warn(RT_MOD, "the loop is %u bytes behind; cancelling call method=%s",
                    KE_RT_POST_BYTES, ke_rpc_call_method(call));
        ke_rpc_call_cancel(call);
    }
    ke_rpc_call_unref(call);
    free(ev->buf);
    free(ev);
}


static void tr_message(call_ctx *c, ke_rpc_call *call, const ProtobufCMessage *msg)
{
    rpc_event *ev = calloc(1, sizeof(*ev));
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!ev || !buf) {
        free(ev);
        free(buf);
        ke_log_error(RT_MOD, "out of memory handing a message to the loop; cancelling the call");
        ke_rpc_call_cancel(call);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    ev->type = EV_MESSAGE;
    ev->desc = msg->descriptor;
    ev->buf = buf;
    ev->len = len;
    post_event(c, call, ev, len);
}

static void tr_drain(call_ctx *c, ke_rpc_call *call)
{
    rpc_event *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        ke_log_error(RT_MOD, "out of memory handing a drain to the loop; cancelling the call");
        ke_rpc_call_cancel(call);
        return;
    }
    ev->type = EV_DRAIN;
    post_event(c, call, ev, 0);
}

static void tr_close(call_ctx *c, ke_rpc_call *call, const ke_rpc_status *st)
{
    rpc_event *ev = c->close_ev;
    c->close_ev = NULL;
    ev->type = EV_CLOSE;
    ev->st = *st;
    post_event(c, call, ev, 0);
}

/* client calls: ud is the call_ctx */
static void cl_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    tr_message(ud, call, msg);
}
static void cl_on_drain(ke_rpc_call *call, void *ud) { tr_drain(ud, call); }
static void cl_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    tr_close(ud, call, st);
}

static call_ctx *ctx_new(ke_rt *e, const ke_rt_rpc_handler *h, void *ud)
{
    call_ctx *c = calloc(1, sizeof(*c));
    rpc_event *ev = calloc(1, sizeof(*ev));
    if (!c || !ev) {
        free(c);
        free(ev);
        return NULL;
    }
    c->e = e;
    c->h = *h;
    c->ud = ud;
    c->close_ev = ev;
    return c;
}

static void ctx_free(call_ctx *c)
{
    free(c->close_ev);
    free(c);
}

int ke_rt_call_start(ke_rt *e, ke_rpc_channel *ch, const ProtobufCServiceDescriptor *svc,
                       const char *method, const ke_rt_rpc_handler *h, void *ud,
                       const ke_rpc_call_opts *opts, ke_rpc_call **out)
{
    call_ctx *c = ctx_new(e, h, ud);
    if (!c)
        return KE_ENOMEM;
    static const ke_rpc_handler tramp = {
        .on_message = cl_on_message, .on_drain = cl_on_drain, .on_close = cl_on_close};
    ke_rpc_stub stub = {ch, svc};
    atomic_fetch_add(&e->calls_open, 1);
    int rc = ke_rpc_stub_start(&stub, method, &tramp, c, opts, out);
    if (rc != 0) {
        atomic_fetch_sub(&e->calls_open, 1);
        ctx_free(c);
    }
    return rc;
}

/* server calls: the method_ctx is the method's ud; each call gets its own
 * call_ctx at on_open, kept as the call's data */
static void sv_on_open(ke_rpc_call *call, void *ud)
{
    method_ctx *mc = ud;
    call_ctx *c = ctx_new(mc->e, &mc->h, mc->ud);
    if (!c) {
        ke_log_error(RT_MOD, "out of memory for a call method=%s", ke_rpc_call_method(call));
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "edgecore is out of memory", NULL);
        return;
    }
    atomic_fetch_add(&mc->e->calls_open, 1);
    ke_rpc_call_set_data(call, c);
}
static void sv_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    call_ctx *c = ke_rpc_call_get_data(call);
    if (c)
        tr_message(c, call, msg);
}
static void sv_on_drain(ke_rpc_call *call, void *ud)
{
    (void)ud;
    call_ctx *c = ke_rpc_call_get_data(call);
    if (c)
        tr_drain(c, call);
}
static void sv_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)ud;
    call_ctx *c = ke_rpc_call_get_data(call);
    if (c)
        tr_close(c, call, st);
}

int ke_rt_serve(ke_rt *e, ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                  const char *method, ke_rpc_kind kind, const ke_rt_rpc_handler *h, void *ud)
{
    const ProtobufCMethodDescriptor *md = protobuf_c_service_descriptor_get_method_by_name(svc, method);
    if (!md)
        return KE_EINVAL;
    /* Kept until ke_rt_free: a server registered here is freed by its
     * module's destroy, before that. */
    method_ctx *mc = calloc(1, sizeof(*mc));
    if (!mc)
        return KE_ENOMEM;
    mc->e = e;
    mc->h = *h;
    mc->ud = ud;
    char path[256];
    snprintf(path, sizeof(path), "/%s/%s", svc->name, method);
    static const ke_rpc_handler tramp = {.on_open = sv_on_open,
                                         .on_message = sv_on_message,
                                         .on_drain = sv_on_drain,
                                         .on_close = sv_on_close};
    int rc = ke_rpc_server_add_method(srv, path, kind, md->input, &tramp, mc);
    if (rc != 0) {
        free(mc);
        return rc;
    }
    mc->next = e->methods;
    e->methods = mc;
    return 0;
}

/* ---- health ---- */

static void health_update(ke_rt *e)
{
    char text[sizeof(e->health_text)];
    size_t off = 0;
    int bad = 0;
    text[0] = '\0';
    for (size_t i = 0; i < e->n_mods && off < sizeof(text); i++) {
        ke_module *m = &e->mods[i];
        char detail[KE_RT_HEALTH_MAX] = "";
        int rc = 0;
        if (m->started && m->ops->health)
            rc = m->ops->health(m, detail, sizeof(detail));
        detail[sizeof(detail) - 1] = '\0';
        ke_metric_set(m->m_healthy, rc == 0);
        bad |= rc != 0;
        int n = snprintf(text + off, sizeof(text) - off, "%s%s: %s%s%s", off ? "\n" : "",
                         m->ops->name, rc == 0 ? "ok" : "unhealthy", detail[0] ? " " : "",
                         detail);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    pthread_mutex_lock(&e->health_mu);
    memcpy(e->health_text, text, sizeof(text));
    e->health_bad = bad;
    pthread_mutex_unlock(&e->health_mu);
}

/* http_health: HTTP thread. The loop's own stall is the watchdog's. */
static int http_health(void *arg, char *reason, size_t cap)
{
    ke_rt *e = arg;
    pthread_mutex_lock(&e->health_mu);
    snprintf(reason, cap, "%s", e->health_text);
    int bad = e->health_bad;
    pthread_mutex_unlock(&e->health_mu);
    return bad;
}

/* ---- lifetime ---- */

static void finish_if_drained(ke_rt *e);

static void stop_modules(ke_rt *e)
{
    if (e->state != RT_RUNNING)
        return;
    /* What is on the bus was accepted already (an MQTT message EventBus
     * has PUBACKed, a frame EdgeHub has read): hand it on before anything
     * stops, or a graceful stop loses it. Bounded: a module that keeps
     * sending cannot hold the stop up. */
    for (int turn = 0; turn < STOP_BUS_TURNS && bus_turn(e); turn++)
        ;
    e->state = RT_STOPPING;
    for (size_t i = e->n_mods; i-- > 0;) {
        ke_module *m = &e->mods[i];
        if (!m->started)
            continue;
        ke_watchdog_shutdown_step(m->ops->name);
        ke_log_info(RT_MOD, "stopping module %s", m->ops->name);
        if (m->ops->stop)
            m->ops->stop(m);
    }
    finish_if_drained(e);
}

static void close_cb(uv_handle_t *h) { (void)h; }

/* finish_if_drained: once every call has closed, destroy the modules and
 * close the runtime's handles; uv_run then returns. */
static void finish_if_drained(ke_rt *e)
{
    if (e->state != RT_STOPPING || atomic_load(&e->calls_open) > 0)
        return;
    e->state = RT_DONE;
    for (size_t i = e->n_mods; i-- > 0;) {
        ke_module *m = &e->mods[i];
        if (m->started && m->ops->destroy)
            m->ops->destroy(m);
        m->started = 0;
        if (m->qlen)
            ke_log_warn(RT_MOD, "stopped with %zu messages for module %s not delivered",
                        (size_t)m->qlen, m->ops->name);
        while (m->qhead) {
            bus_item *it = m->qhead;
            m->qhead = it->next;
            bus_item_free(it);
        }
        m->qtail = NULL;
        m->qlen = m->qbytes = 0;
    }
    uv_close((uv_handle_t *)&e->async, close_cb);
    uv_close((uv_handle_t *)&e->bus_idle, close_cb);
    uv_close((uv_handle_t *)&e->tick, close_cb);
}

static void on_async(uv_async_t *h)
{
    ke_rt *e = h->data;
    run_posts(e);
    if (atomic_load(&e->stop_req))
        stop_modules(e);
    finish_if_drained(e);
}

static void on_tick(uv_timer_t *t)
{
    ke_rt *e = t->data;
    ke_watchdog_beat(e->hb);
    if (e->state == RT_RUNNING)
        health_update(e);
}

int ke_rt_new(const ke_rt_config *cfg, ke_rt **out)
{
    if (!cfg || !cfg->store || !cfg->rpc || !out)
        return KE_EINVAL;
    ke_rt *e = calloc(1, sizeof(*e));
    if (!e)
        return KE_ENOMEM;
    e->cfg = *cfg;
    pthread_mutex_init(&e->post_mu, NULL);
    pthread_mutex_init(&e->health_mu, NULL);
    int rc = KE_EIO;
    if (uv_loop_init(&e->loop) != 0)
        goto fail;
    e->loop_inited = 1;
    if (uv_async_init(&e->loop, &e->async, on_async) != 0 ||
        uv_idle_init(&e->loop, &e->bus_idle) != 0 || uv_timer_init(&e->loop, &e->tick) != 0)
        goto fail;
    e->async.data = e->bus_idle.data = e->tick.data = e;
    snprintf(e->health_text, sizeof(e->health_text), "starting");
    if (cfg->http_listen && *cfg->http_listen) {
        ke_http_config hc = {.listen = cfg->http_listen, .health = http_health, .health_arg = e};
        if ((rc = ke_http_start(&hc, &e->http)) != 0)
            goto fail;
    }
    *out = e;
    return 0;
fail:
    ke_rt_free(e);
    return rc;
}

int ke_rt_add(ke_rt *e, const ke_module_ops *ops, void *config)
{
    if (!e || !ops || !ops->name || !*ops->name || e->state != RT_NEW)
        return KE_EINVAL;
    if (e->n_mods == KE_RT_MAX_MODULES)
        return KE_EFULL;
    if (module_by_name(e, ops->name) || (ops->group && module_by_group(e, ops->group)))
        return KE_EEXIST;
    ke_module *m = &e->mods[e->n_mods++];
    memset(m, 0, sizeof(*m));
    m->ops = ops;
    m->edge = e;
    m->config = config;
    const char *const labels[] = {"module", ops->name, NULL};
    if (ke_metrics_counter_new("ke_bus_dropped_total",
                               "Messages refused because the receiving module's queue was full.",
                               labels, &m->m_dropped) != 0 ||
        ke_metrics_counter_new("ke_bus_delivered_total", "Messages handed to the module.", labels,
                               &m->m_delivered) != 0 ||
        ke_metrics_gauge_new("ke_edge_module_healthy", "1 while the module reports itself healthy",
                             labels, &m->m_healthy) != 0)
        ke_log_warn(RT_MOD, "metrics of module %s not all registered", ops->name);
    return 0;
}

/* start_modules: on the loop's thread, before its first turn, so a
 * module's start already runs under the threading rule. */
static void start_modules(ke_rt *e)
{
    e->state = RT_RUNNING;
    for (size_t i = 0; i < e->n_mods; i++) {
        ke_module *m = &e->mods[i];
        int rc = m->ops->start ? m->ops->start(m) : 0;
        if (rc != 0) {
            ke_log_error(RT_MOD, "module %s did not start: %s", m->ops->name, ke_strerror(rc));
            e->start_failed = 1;
            atomic_store(&e->stop_req, 1);
            uv_async_send(&e->async);
            return;
        }
        m->started = 1;
        ke_log_info(RT_MOD, "module %s started", m->ops->name);
    }
    health_update(e);
    /* The loop's heartbeat, beaten by the one-second tick: a loop stuck
     * for the stall limit turns /healthz to 503 (ke_watchdog.h). */
    int rc = ke_watchdog_register("edge-loop", 0, &e->hb);
    if (rc != 0)
        ke_log_warn(RT_MOD, "no watchdog heartbeat for the loop: %s", ke_strerror(rc));
    if (e->cfg.on_started)
        e->cfg.on_started(e, e->cfg.started_arg);
}

int ke_rt_run(ke_rt *e)
{
    if (e->state != RT_NEW)
        return KE_EINVAL;
    uv_timer_start(&e->tick, on_tick, KE_WATCHDOG_TICK_MAX_MS, KE_WATCHDOG_TICK_MAX_MS);
    /* This thread is the loop's: the modules start here, before any
     * closure posted meanwhile runs (those run in the loop's first turn). */
    start_modules(e);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&e->post_mu);
    e->post_closed = 1;
    post_item *p = e->phead;
    e->phead = e->ptail = NULL;
    pthread_mutex_unlock(&e->post_mu);
    while (p) { /* a close posted after the last turn: nothing waits for it */
        post_item *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
    ke_watchdog_unregister(e->hb);
    e->hb = NULL;
    return e->start_failed ? KE_EIO : 0;
}

void ke_rt_stop(ke_rt *e)
{
    if (!e)
        return;
    atomic_store(&e->stop_req, 1);
    pthread_mutex_lock(&e->post_mu);
    if (!e->post_closed)
        uv_async_send(&e->async);
    pthread_mutex_unlock(&e->post_mu);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, close_cb);
}

void ke_rt_free(ke_rt *e)
{
    if (!e)
        return;
    ke_http_stop(e->http);
    if (e->loop_inited) {
        if (e->state == RT_NEW) {
            /* never run: close the handles made at ke_rt_new */
            uv_walk(&e->loop, walk_close, NULL);
            uv_run(&e->loop, UV_RUN_DEFAULT);
        }
        if (uv_loop_close(&e->loop) != 0)
            ke_log_warn(RT_MOD, "the loop still had handles at exit");
    }
    while (e->methods) {
        struct method_ctx *mc = e->methods;
        e->methods = mc->next;
        free(mc);
    }
    pthread_mutex_destroy(&e->post_mu);
    pthread_mutex_destroy(&e->health_mu);
    free(e);
}
