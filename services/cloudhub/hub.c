/*
 * hub.c — the Hub API, CloudHub's face to the cloud controllers:
 *
 *   Publish     record the message as the node's latest for its resource
 *               (idempotent by resource_version; `resend` queues a stored
 *               version again) and queue it if the node is connected:
 *               checked here, stored and answered by the group-commit
 *               writer (writer.c)
 *   PublishBatch  the same for up to CH_PUBLISH_BATCH_MAX messages
 *   Subscribe   see subscribe.c (the durable upstream log)
 *   ListNodes   registered nodes, connected or not, with last-seen time and
 *               monotonic idle time, in name order and in pages
 *   ListNodeObjects  one node's objects rows (key, version, tombstone), in
 *               key order and in pages, optionally of some kinds only
 *   RemoveNode  forget a node: close its stream, drop its state
 *   Logs        see logs.c (container logs through the node's tunnel)
 *   ProxyHTTP   see service.c (an HTTP request through the node's tunnel)
 *
 * Who may call: the server's authorizer (lib/authz, installed by
 * cloudcore) lets only system:masters through, the controllers inside
 * cloudcore included (in-process calls); nodes never.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Page bounds: ListNodes, ListNodeObjects. */
#define CH_LIST_NODES_DEFAULT 500u
#define CH_LIST_NODES_MAX 5000u
#define CH_LIST_OBJECTS_DEFAULT 1000u
#define CH_LIST_OBJECTS_MAX 10000u
#define CH_KINDS_MAX 64u

static int valid_operation(Ke__V1__Operation op)
{
    return op == KE__V1__OPERATION__OPERATION_INSERT ||
           op == KE__V1__OPERATION__OPERATION_UPDATE ||
           op == KE__V1__OPERATION__OPERATION_DELETE || op == KE__V1__OPERATION__OPERATION_PATCH ||
           op == KE__V1__OPERATION__OPERATION_RESPONSE;
}

/* publish_check returns why req cannot be published (field paths after
 * prefix), or NULL. */
static const char *publish_check(const Ke__V1__PublishRequest *req, const char *prefix,
                                 char *why, size_t len)
{
    const Ke__V1__Message *msg = req->message;
    char owner[CH_NODE_NAME_MAX];
    const char *bad = NULL;
    if (!req->node_name[0] || strlen(req->node_name) >= CH_NODE_NAME_MAX)
        bad = "node_name: required, at most 63 bytes";
    else if (!msg || !msg->header || !msg->route)
        bad = "message: header and route are required";
    else if (ch_resource_node(msg->route->resource, owner, sizeof(owner)) != 0 ||
             strcmp(owner, req->node_name) != 0)
        bad = "message.route.resource: must be node/<node_name>/<namespace>/<kind>/<name>";
    else if (!valid_operation(msg->route->operation))
        bad = "message.route.operation: must be insert, update, delete, patch or response";
    else if (msg->header->resource_version == 0)
        bad = "message.header.resource_version: must be greater than 0";
    if (!bad)
        return NULL;
    snprintf(why, len, "%s%s", prefix, bad);
    return why;
}

/* publish_fill copies a checked request into a writer item. 0 or KE_ENOMEM. */
static int publish_fill(ch_pub *p, const Ke__V1__PublishRequest *req)
{
    const Ke__V1__Message *msg = req->message;
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    size_t klen = strlen(msg->route->resource);
    if (!(p->buf = malloc(len + klen + 1)))
        return KE_ENOMEM;
    protobuf_c_message_pack(&msg->base, p->buf);
    memcpy(p->buf + len, msg->route->resource, klen + 1);
    p->msg = p->buf;
    p->len = len;
    p->key = (const char *)p->buf + len;
    snprintf(p->node, sizeof(p->node), "%s", req->node_name);
    p->rv = msg->header->resource_version;
    p->deleted = msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE;
    p->resend = req->resend;
    return 0;
}

/* publish_submit hands a filled job to the writer, which answers it. */
static void publish_submit(cloudhub *ch, ke_rpc_call *call, ch_wjob *j)
{
    ke_rpc_call_ref(call);
    int rc = ch_writer_submit(ch, j);
    if (rc == 0)
        return;
    ke_rpc_call_unref(call);
    ch_writer_job_free(j);
    ke_rpc_call_finish(call, rc == KE_EFULL ? KE_RPC_RESOURCE_EXHAUSTED : KE_RPC_UNAVAILABLE,
                       rc == KE_EFULL ? "cloudhub's write queue is full: retry later"
                                      : "cloudhub is stopping",
                       NULL);
}

static void publish_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__PublishRequest *req = (const Ke__V1__PublishRequest *)m;
    char why[320];
    if (publish_check(req, "", why, sizeof(why))) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, why, NULL);
        return;
    }
    ch_wjob *j = ch_writer_job_new(call, 0, 1);
    if (!j || publish_fill(&j->items[0], req) != 0) {
        ch_writer_job_free(j);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    publish_submit(ch, call, j);
}

static void publish_batch_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__PublishBatchRequest *req = (const Ke__V1__PublishBatchRequest *)m;
    char why[320], prefix[32];
    if (req->n_items == 0 || req->n_items > CH_PUBLISH_BATCH_MAX) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "items: 1 to %u publishes, not %zu",
                            CH_PUBLISH_BATCH_MAX, req->n_items);
        return;
    }
    /* Every item is checked before anything is stored. */
    for (size_t i = 0; i < req->n_items; i++) {
        snprintf(prefix, sizeof(prefix), "items[%zu].", i);
        if (publish_check(req->items[i], prefix, why, sizeof(why))) {
            ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, why, NULL);
            return;
        }
    }
    ch_wjob *j = ch_writer_job_new(call, 1, req->n_items);
    int rc = j ? 0 : KE_ENOMEM;
    for (size_t i = 0; rc == 0 && i < req->n_items; i++)
        rc = publish_fill(&j->items[i], req->items[i]);
    if (rc != 0) {
        ch_writer_job_free(j);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    publish_submit(ch, call, j);
}

/* ---- ListNodes ---- */

typedef struct list_ctx {
    cloudhub *ch;
    Ke__V1__NodeInfo *infos;
    Ke__V1__NodeInfo **ptrs;
    size_t n, cap;
    int64_t now;
} list_ctx;

static int list_one(const char *name, void *arg)
{
    list_ctx *l = arg;
    ch_node *n = ke_map_get(l->ch->nodes, name);
    if (!n || l->n == l->cap)
        return 0; /* removed in this very transaction's view: skip */
    Ke__V1__NodeInfo *i = &l->infos[l->n];
    ke__v1__node_info__init(i);
    i->name = n->name;
    i->connected = n->stream != NULL && n->hello_done;
    i->last_seen_ms = n->last_seen_ms;
    i->idle_ms = l->now - n->last_seen_mono;
    i->queue_depth = n->depth;
    i->agent_version = n->agent_version;
    l->ptrs[l->n++] = i;
    return 0;
}

/* valid_node_token: a continue token of ListNodes is the last name of the
 * previous page, so it looks like a node name. */
static int valid_node_token(const char *t)
{
    size_t len = strlen(t);
    if (len >= CH_NODE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-' ||
              t[i] == '.'))
            return 0;
    return 1;
}

static void list_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__ListNodesRequest *req = (const Ke__V1__ListNodesRequest *)m;
    if (!valid_node_token(req->continue_token)) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT,
                           "continue_token: not a token from a previous ListNodes reply", NULL);
        return;
    }
    uint32_t limit = req->limit == 0                  ? CH_LIST_NODES_DEFAULT
                     : req->limit > CH_LIST_NODES_MAX ? CH_LIST_NODES_MAX
                                                      : req->limit;
    /* One more than the page, to know whether another page follows. */
    list_ctx l = {.ch = ch, .cap = limit + 1, .now = ke_time_mono_ms()};
    l.infos = calloc(l.cap, sizeof(*l.infos));
    l.ptrs = calloc(l.cap, sizeof(*l.ptrs));
    if (!l.infos || !l.ptrs) {
        free(l.infos);
        free(l.ptrs);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    ch_lock(ch);
    int rc = ch_store_node_page(ch, req->continue_token, limit + 1, list_one, &l);
    Ke__V1__ListNodesReply reply = KE__V1__LIST_NODES_REPLY__INIT;
    char next[CH_NODE_NAME_MAX] = "";
    if (l.n > limit) {
        l.n = limit;
        snprintf(next, sizeof(next), "%s", l.ptrs[limit - 1]->name);
    }
    reply.n_nodes = l.n;
    reply.nodes = l.ptrs;
    reply.continue_token = next;
    /* Packed while the lock keeps the node names stable. */
    if (rc != 0)
        ke_rpc_call_finish(call, KE_RPC_INTERNAL, "store error", NULL);
    else
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &reply.base);
    pthread_mutex_unlock(&ch->mu);
    free(l.infos);
    free(l.ptrs);
}

/* ---- ListNodeObjects ---- */

typedef struct objects_ctx {
    Ke__V1__NodeObject *objs;
    Ke__V1__NodeObject **ptrs;
    size_t n, cap;
    char *const *kinds;
    size_t n_kinds;
    int more;
} objects_ctx;

/* key_kind points at the <kind> of node/<node>/<ns>/<kind>/<name> and sets
 * *len; NULL when the key has no such segment. */
static const char *key_kind(const char *key, size_t *len)
{
    const char *p = key;
    for (int i = 0; i < 3; i++) {
        p = strchr(p, '/');
        if (!p)
            return NULL;
        p++;
    }
    const char *end = strchr(p, '/');
    if (!end)
        return NULL;
    *len = (size_t)(end - p);
    return p;
}

static int objects_kind_wanted(const objects_ctx *o, const char *key)
{
    if (o->n_kinds == 0)
        return 1;
    size_t len;
    const char *kind = key_kind(key, &len);
    for (size_t i = 0; kind && i < o->n_kinds; i++)
        if (strlen(o->kinds[i]) == len && memcmp(o->kinds[i], kind, len) == 0)
            return 1;
    return 0;
}

static int objects_one(const char *key, uint64_t rv, int deleted, void *arg)
{
    objects_ctx *o = arg;
    if (!objects_kind_wanted(o, key))
        return 0;
    if (o->n == o->cap) {
        o->more = 1;
        return 1;
    }
    Ke__V1__NodeObject *obj = &o->objs[o->n];
    ke__v1__node_object__init(obj);
    if (!(obj->key = strdup(key)))
        return KE_ENOMEM;
    obj->resource_version = rv;
    obj->deleted = deleted != 0;
    o->ptrs[o->n++] = obj;
    return 0;
}

/* objects_check validates a ListNodeObjects request; returns NULL or the
 * reason, naming the field. */
static const char *objects_check(const Ke__V1__ListNodeObjectsRequest *req)
{
    if (!req->node_name[0] || strlen(req->node_name) >= CH_NODE_NAME_MAX)
        return "node_name: required, at most 63 bytes";
    if (req->n_kinds > CH_KINDS_MAX)
        return "kinds: at most 64";
    for (size_t i = 0; i < req->n_kinds; i++)
        if (!req->kinds[i][0] || strchr(req->kinds[i], '/'))
            return "kinds: each a kind name (not empty, no '/')";
    if (req->continue_token[0]) {
        char prefix[CH_NODE_NAME_MAX + 8];
        snprintf(prefix, sizeof(prefix), "node/%s/", req->node_name);
        if (strlen(req->continue_token) > CH_KEY_MAX ||
            strncmp(req->continue_token, prefix, strlen(prefix)) != 0)
            return "continue_token: not a token from a previous ListNodeObjects reply for "
                   "this node";
    }
    return NULL;
}

static void objects_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__ListNodeObjectsRequest *req = (const Ke__V1__ListNodeObjectsRequest *)m;
    const char *bad = objects_check(req);
    if (bad) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, bad, NULL);
        return;
    }
    uint32_t limit = req->limit == 0                    ? CH_LIST_OBJECTS_DEFAULT
                     : req->limit > CH_LIST_OBJECTS_MAX ? CH_LIST_OBJECTS_MAX
                                                        : req->limit;
    objects_ctx o = {.cap = limit, .kinds = req->kinds, .n_kinds = req->n_kinds};
    o.objs = calloc(o.cap, sizeof(*o.objs));
    o.ptrs = calloc(o.cap, sizeof(*o.ptrs));
    int rc = o.objs && o.ptrs ? 0 : KE_ENOMEM;
    int known = 0;
    if (rc == 0) {
        ch_lock(ch);
        known = ke_map_get(ch->nodes, req->node_name) != NULL;
        if (known)
            rc = ch_store_object_page(ch, req->node_name,
                                      req->continue_token[0] ? req->continue_token : NULL,
                                      objects_one, &o);
        pthread_mutex_unlock(&ch->mu);
    }
    if (rc == 0 && !known) {
        ke_rpc_call_finish(call, KE_RPC_NOT_FOUND, "node_name: no such node", NULL);
    } else if (rc != 0) {
        ke_rpc_call_finish(call, rc == KE_ENOMEM ? KE_RPC_RESOURCE_EXHAUSTED : KE_RPC_INTERNAL,
                           rc == KE_ENOMEM ? "out of memory" : "store error", NULL);
    } else {
        Ke__V1__ListNodeObjectsReply reply = KE__V1__LIST_NODE_OBJECTS_REPLY__INIT;
        reply.n_objects = o.n;
        reply.objects = o.ptrs;
        reply.continue_token = o.more && o.n ? o.ptrs[o.n - 1]->key : "";
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &reply.base);
    }
    for (size_t i = 0; i < o.n; i++)
        free(o.objs[i].key);
    free(o.objs);
    free(o.ptrs);
}

/* ---- RemoveNode ---- */

static void remove_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__RemoveNodeRequest *req = (const Ke__V1__RemoveNodeRequest *)m;
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, req->node_name);
    if (!n) {
        pthread_mutex_unlock(&ch->mu);
        ke_rpc_call_finish(call, KE_RPC_NOT_FOUND, "node_name: no such node", NULL);
        return;
    }
    int rc = ke_sqlite_begin(ch->db);
    if (rc == 0)
        rc = ch_store_node_delete(ch, n->name);
    if (rc == 0)
        rc = ch_store_node_drop_objects(ch, n->name);
    if (rc == 0)
        rc = ke_sqlite_commit(ch->db);
    else
        ke_sqlite_rollback(ch->db);
    if (rc != 0) {
        pthread_mutex_unlock(&ch->mu);
        ke_rpc_call_finish(call, KE_RPC_INTERNAL, "store error", NULL);
        return;
    }
    ke_map_del(ch->nodes, n->name);
    ke_wheel_disarm(&ch->dead_wheel, &n->dead_timer);
    if (n->stream) {
        ch_node_disconnect(ch, n, KE_RPC_PERMISSION_DENIED, "node was removed");
        ch_tcall_tunnel_gone(ch, n, "node was removed");
        ke_rpc_call_unref(n->stream);
        ch->connected--;
        ke_metric_set(ch->m.connected, ch->connected);
    }
    ch_queue_clear(ch, n);
    ke_map_free(n->pending);
    ke_log_info(CH_MOD, "node removed node=%s", n->name);
    free(n);
    ke_metric_set(ch->m.known, (int64_t)ke_map_len(ch->nodes));
    pthread_mutex_unlock(&ch->mu);
    Ke__V1__RemoveNodeReply reply = KE__V1__REMOVE_NODE_REPLY__INIT;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &reply.base);
}

int ch_hub_register(cloudhub *ch, ke_rpc_server *srv)
{
    ke_rpc_method_def methods[] = {
        {"Publish", KE_RPC_UNARY, {.on_message = publish_on_message}},
        {"PublishBatch", KE_RPC_UNARY, {.on_message = publish_batch_on_message}},
        {"Subscribe", KE_RPC_BIDI_STREAM, {0}},
        {"ListNodes", KE_RPC_UNARY, {.on_message = list_on_message}},
        {"ListNodeObjects", KE_RPC_UNARY, {.on_message = objects_on_message}},
        {"RemoveNode", KE_RPC_UNARY, {.on_message = remove_on_message}},
        {"Logs", KE_RPC_SERVER_STREAM, {0}},
        {"ProxyHTTP", KE_RPC_UNARY, {0}},
    };
    methods[2].handler = ch_subscribe_handler;
    methods[6].handler = ch_logs_handler;
    methods[7].handler = ch_service_handler;
    return ke_rpc_server_add_all(srv, &ke__v1__hub__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), ch);
}
