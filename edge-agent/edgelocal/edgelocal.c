/*
 * edgelocal.c — see edgelocal.h.
 */
#include "edgelocal.h"

#include "edge.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EL_MOD "edgelocal"
#define EL_META "metamanager"

/* A Report waiting for MetaManager's answer. */
typedef struct pending {
    char id[32];
    ke_rpc_call *call;
    struct pending *next;
} pending;

typedef struct el {
    ke_rt *e;
    ke_rpc_server *srv;
    pending *waiting;
    uint64_t next_id;
} el;

static void finish(ke_rpc_call *call, int code, const char *why)
{
    ke_rpc_call_finish(call, code, why, NULL);
}

/* ---- Report ---- */

static void report_on_message(ke_rpc_call *call, ProtobufCMessage *m, void *ud)
{
    el *s = ud;
    Ke__V1__ReportRequest *req = (Ke__V1__ReportRequest *)m;
    Ke__V1__Message *msg = req->message;
    if (!msg || !msg->route || !msg->header || !msg->route->resource ||
        !*msg->route->resource || !msg->header->resource_version) {
        finish(call, KE_RPC_INVALID_ARGUMENT,
               "message: route.resource and header.resource_version are required");
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    pending *p = calloc(1, sizeof(*p));
    char *src = strdup(EL_MOD);
    int rc = p && src ? 0 : KE_ENOMEM;
    if (rc == 0) {
        snprintf(p->id, sizeof(p->id), "local:%" PRIu64, ++s->next_id);
        rc = ke_rt_message_set_id(msg, p->id);
    }
    if (rc == 0) {
        req->message = NULL; /* the bus's once sent */
        if (msg->route->source != protobuf_c_empty_string)
            free(msg->route->source);
        msg->route->source = src;
        src = NULL;
        msg->header->sync = 1;
        rc = ke_rt_send_to(s->e, EL_META, msg);
        if (rc != 0)
            ke__v1__message__free_unpacked(msg, NULL);
    }
    free(src);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0) {
        free(p);
        if (rc == KE_EFULL)
            finish(call, KE_RPC_RESOURCE_EXHAUSTED, "edgecore is busy: metamanager's queue is full");
        else if (rc == KE_ECLOSED) /* stopping: a retry reaches the next edgecore */
            finish(call, KE_RPC_UNAVAILABLE, "edgecore is stopping");
        else
            finish(call, KE_RPC_RESOURCE_EXHAUSTED, "edgecore is out of memory");
        return;
    }
    ke_rpc_call_ref(call);
    p->call = call;
    p->next = s->waiting;
    s->waiting = p;
}

static pending *take(el *s, const char *id, ke_rpc_call *call)
{
    for (pending **pp = &s->waiting; *pp; pp = &(*pp)->next) {
        pending *p = *pp;
        if ((id && strcmp(p->id, id) == 0) || (call && p->call == call)) {
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void report_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    pending *p = take(ud, NULL, call); /* the client went before the answer */
    if (p) {
        ke_rpc_call_unref(p->call);
        free(p);
    }
}

/* on_answer: MetaManager queued the report (or could not). */
static void on_answer(el *s, const Ke__V1__Message *msg)
{
    pending *p = take(s, msg->header ? msg->header->parent_id : "", NULL);
    if (!p)
        return;
    json_t *j = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    json_t *err = json_object_get(j, "error");
    if (err) {
        int rc = (int)json_integer_value(json_object_get(j, "rc"));
        if (rc == KE_EINVAL)
            finish(p->call, KE_RPC_INVALID_ARGUMENT,
                   "message: route.resource and header.resource_version are required");
        else if (rc == KE_EFULL)
            finish(p->call, KE_RPC_RESOURCE_EXHAUSTED,
                   "outbox full: the cloud has not acknowledged earlier reports");
        else
            finish(p->call, KE_RPC_INTERNAL, "edge store error (see edgecore's log)");
    } else {
        Ke__V1__ReportReply r = KE__V1__REPORT_REPLY__INIT;
        r.outbox_seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        r.duplicate = json_is_true(json_object_get(j, "duplicate"));
        ke_rpc_call_finish(p->call, KE_RPC_OK, NULL, &r.base);
    }
    json_decref(j);
    ke_rpc_call_unref(p->call);
    free(p);
}

/* ---- Get, List ---- */

static void get_on_message(ke_rpc_call *call, ProtobufCMessage *m, void *ud)
{
    el *s = ud;
    const Ke__V1__EdgeGetRequest *req = (const Ke__V1__EdgeGetRequest *)m;
    Ke__V1__EdgeObject o = KE__V1__EDGE_OBJECT__INIT;
    uint8_t *content = NULL;
    size_t len = 0;
    int rc = edge_store_get(ke_rt_store(s->e), req->key, &o.resource_version, &content, &len);
    if (rc == KE_ENOTFOUND) {
        finish(call, KE_RPC_NOT_FOUND, "key: not held by this node");
    } else if (rc != 0) {
        finish(call, KE_RPC_INTERNAL, "edge store error (see edgecore's log)");
    } else {
        o.key = req->key;
        o.content.data = content;
        o.content.len = len;
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &o.base);
    }
    free(content);
    protobuf_c_message_free_unpacked(m, NULL);
}

typedef struct list_ctx {
    Ke__V1__EdgeObject **v;
    size_t n, cap;
} list_ctx;

static int list_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    list_ctx *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        Ke__V1__EdgeObject **v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    Ke__V1__EdgeObject *o = calloc(1, sizeof(*o) + len + strlen(key) + 1);
    if (!o)
        return 1;
    ke__v1__edge_object__init(o);
    uint8_t *buf = (uint8_t *)(o + 1);
    if (len)
        memcpy(buf, content, len);
    o->content.data = buf;
    o->content.len = len;
    o->key = (char *)buf + len;
    strcpy(o->key, key);
    o->resource_version = rv;
    l->v[l->n++] = o;
    return 0;
}

static void list_on_message(ke_rpc_call *call, ProtobufCMessage *m, void *ud)
{
    el *s = ud;
    const Ke__V1__EdgeListRequest *req = (const Ke__V1__EdgeListRequest *)m;
    list_ctx l = {0};
    edge_store *st = ke_rt_store(s->e);
    int rc = edge_store_list(st, req->prefix, list_one, &l);
    if (rc != 0) {
        finish(call, KE_RPC_INTERNAL, "edge store error (see edgecore's log)");
    } else {
        Ke__V1__EdgeListReply r = KE__V1__EDGE_LIST_REPLY__INIT;
        r.objects = l.v;
        r.n_objects = l.n;
        r.outbox_pending = edge_store_outbox_pending(st);
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- the module ---- */

static int el_start(ke_module *m)
{
    const edgelocal_config *cfg = ke_module_config(m);
    if (!cfg || !cfg->listen || !*cfg->listen) {
        ke_log_error(EL_MOD, "local.listen is required");
        return KE_EINVAL;
    }
    el *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    s->e = ke_module_rt(m);
    ke_module_set_data(m, s);
    if (strncmp(cfg->listen, "unix:", 5) == 0)
        unlink(cfg->listen + 5); /* a socket left by a killed edgecore */
    static const ke_rt_rpc_handler report = {.on_message = report_on_message,
                                               .on_close = report_on_close};
    static const ke_rt_rpc_handler get = {.on_message = get_on_message};
    static const ke_rt_rpc_handler list = {.on_message = list_on_message};
    const ProtobufCServiceDescriptor *svc = &ke__v1__edge_local__descriptor;
    ke_rpc_server_opts lo = {.listen = cfg->listen};
    int rc = ke_rpc_server_new(ke_rt_rpc(s->e), &lo, &s->srv);
    if (rc == 0)
        rc = ke_rt_serve(s->e, s->srv, svc, "Report", KE_RPC_UNARY, &report, s);
    if (rc == 0)
        rc = ke_rt_serve(s->e, s->srv, svc, "Get", KE_RPC_UNARY, &get, s);
    if (rc == 0)
        rc = ke_rt_serve(s->e, s->srv, svc, "List", KE_RPC_UNARY, &list, s);
    if (rc == 0)
        rc = ke_rpc_server_start(s->srv);
    if (rc != 0) {
        ke_log_error(EL_MOD, "cannot serve the local API listen=%s: %s", cfg->listen,
                     ke_strerror(rc));
        ke_rpc_server_free(s->srv); /* destroy is not called for a module that did not start */
        free(s);
        ke_module_set_data(m, NULL);
        return rc;
    }
    return 0;
}

static void el_on_message(ke_module *m, Ke__V1__Message *msg)
{
    if (msg->route && msg->route->operation == KE__V1__OPERATION__OPERATION_RESPONSE)
        on_answer(ke_module_data(m), msg);
    ke__v1__message__free_unpacked(msg, NULL);
}

static void el_stop(ke_module *m)
{
    el *s = ke_module_data(m);
    /* Cancels every open call; their closes are handed to the loop. */
    ke_rpc_server_stop(s->srv);
}

static void el_destroy(ke_module *m)
{
    el *s = ke_module_data(m);
    while (s->waiting) {
        pending *p = s->waiting;
        s->waiting = p->next;
        ke_rpc_call_unref(p->call);
        free(p);
    }
    ke_rpc_server_free(s->srv);
    free(s);
}

const ke_module_ops edgelocal_module = {
    .name = EL_MOD,
    .start = el_start,
    .on_message = el_on_message,
    .stop = el_stop,
    .destroy = el_destroy,
};
