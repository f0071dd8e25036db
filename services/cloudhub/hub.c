/*
 * hub.c — the Hub API, CloudHub's face to the cloud controllers:
 *
 *   Publish     record the message as the node's latest for its resource
 *               (idempotent by resource_version) and queue it if the node
 *               is connected
 *   Subscribe   stream upstream messages of chosen groups
 *   ListNodes   registered nodes, connected or not, with last-seen time
 *   RemoveNode  forget a node: close its stream, drop its state
 *
 * With require_admin (TLS deployments), callers must present a client
 * certificate whose CN starts with "system:" (keadm init issues
 * "system:admin"), or call in-process (controllers inside cloudcore);
 * node certificates are refused.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* authorized checks the caller; on refusal it finishes the call. */
static int authorized(cloudhub *ch, ke_rpc_call *call)
{
    if (!ch->cfg.require_admin || ke_rpc_call_is_inproc(call))
        return 1; /* plaintext deployments, and controllers in this process */
    char cn[128];
    if (ke_rpc_call_peer_cn(call, cn, sizeof(cn)) == 0 && strncmp(cn, "system:", 7) == 0)
        return 1;
    ke_log_warn(CH_MOD, "refused hub call method=%s: caller is not a system: client",
                ke_rpc_call_method(call));
    ke_rpc_call_finish(call, KE_RPC_PERMISSION_DENIED,
                       "the Hub API needs a client certificate with CN system:*", NULL);
    return 0;
}

static int valid_operation(Ke__V1__Operation op)
{
    return op == KE__V1__OPERATION__OPERATION_INSERT ||
           op == KE__V1__OPERATION__OPERATION_UPDATE ||
           op == KE__V1__OPERATION__OPERATION_DELETE || op == KE__V1__OPERATION__OPERATION_PATCH ||
           op == KE__V1__OPERATION__OPERATION_RESPONSE;
}

static void publish_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__PublishRequest *req = (const Ke__V1__PublishRequest *)m;
    if (!authorized(ch, call))
        return;
    const Ke__V1__Message *msg = req->message;
    char owner[CH_NODE_NAME_MAX], why[320];
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
    if (bad) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, bad, NULL);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    protobuf_c_message_pack(&msg->base, buf);
    const char *key = msg->route->resource;
    uint64_t rv = msg->header->resource_version;
    int deleted = msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE;

    Ke__V1__PublishReply reply = KE__V1__PUBLISH_REPLY__INIT;
    pthread_mutex_lock(&ch->mu);
    int rc = ch_store_object_put(ch, req->node_name, key, rv, deleted, buf, len);
    if (rc == 0) {
        reply.seq = ++ch->pub_seq;
        ch_node *n = ke_map_get(ch->nodes, req->node_name);
        if (n && n->hello_done) {
            ch_queue_push(ch, n, key, rv, buf, len, 0);
            ch_queue_pump(ch, n);
        }
    }
    pthread_mutex_unlock(&ch->mu);
    free(buf);
    if (rc == 0 || rc == KE_EEXIST) {
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &reply.base);
    } else if (rc == KE_ECONFLICT) {
        snprintf(why, sizeof(why), "message.header.resource_version: %llu is older than the "
                                   "version stored for %s",
                 (unsigned long long)rv, key);
        ke_rpc_call_finish(call, KE_RPC_FAILED_PRECONDITION, why, NULL);
    } else {
        ke_rpc_call_finish(call, KE_RPC_UNAVAILABLE, "store error", NULL);
    }
}

/* ---- Subscribe ---- */

static void subscribe_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__SubscribeRequest *req = (const Ke__V1__SubscribeRequest *)m;
    if (!authorized(ch, call))
        return;
    ch_subscriber *s = calloc(1, sizeof(*s));
    if (!s || (req->n_groups && !(s->groups = calloc(req->n_groups, sizeof(char *))))) {
        free(s);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    for (size_t i = 0; i < req->n_groups; i++)
        if ((s->groups[i] = strdup(req->groups[i])) != NULL)
            s->n_groups++;
    ke_rpc_call_ref(call);
    s->call = call;
    ke_rpc_call_set_data(call, s);
    pthread_mutex_lock(&ch->mu);
    s->next = ch->subs;
    ch->subs = s;
    pthread_mutex_unlock(&ch->mu);
}

static void subscriber_free(ch_subscriber *s)
{
    for (size_t i = 0; i < s->n_groups; i++)
        free(s->groups[i]);
    free(s->groups);
    ke_rpc_call_unref(s->call);
    free(s);
}

static void subscribe_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    cloudhub *ch = ud;
    (void)st;
    ch_subscriber *s = ke_rpc_call_get_data(call);
    if (!s)
        return;
    pthread_mutex_lock(&ch->mu);
    for (ch_subscriber **pp = &ch->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&ch->mu);
    subscriber_free(s);
}

static int wants(const ch_subscriber *s, const char *group)
{
    if (s->n_groups == 0)
        return 1;
    for (size_t i = 0; i < s->n_groups; i++)
        if (strcmp(s->groups[i], group) == 0)
            return 1;
    return 0;
}

void ch_hub_fanout(cloudhub *ch, const char *node, uint64_t seq, Ke__V1__Message *msg)
{
    if (!ch->subs)
        return;
    Ke__V1__UpstreamMessage up = KE__V1__UPSTREAM_MESSAGE__INIT;
    up.node_name = (char *)node;
    up.seq = seq;
    up.message = msg;
    size_t len = protobuf_c_message_get_packed_size(&up.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    protobuf_c_message_pack(&up.base, buf);
    for (ch_subscriber *s = ch->subs; s; s = s->next) {
        if (!wants(s, msg->route->group))
            continue;
        if (ke_rpc_call_send_raw(s->call, buf, len) == KE_EFULL) {
            ke_log_warn(CH_MOD, "subscriber too slow: closing it");
            ke_rpc_call_finish(s->call, KE_RPC_RESOURCE_EXHAUSTED,
                               "subscriber is not keeping up", NULL);
        }
    }
    free(buf);
}

/* ---- ListNodes, RemoveNode ---- */

typedef struct list_ctx {
    Ke__V1__NodeInfo *infos;
    Ke__V1__NodeInfo **ptrs;
    size_t n;
} list_ctx;

static int list_one(const char *key, void *value, void *arg)
{
    (void)key;
    list_ctx *l = arg;
    ch_node *n = value;
    Ke__V1__NodeInfo *i = &l->infos[l->n];
    ke__v1__node_info__init(i);
    i->name = n->name;
    i->connected = n->stream != NULL && n->hello_done;
    i->last_seen_ms = n->last_seen_ms;
    i->queue_depth = n->depth;
    i->agent_version = n->agent_version;
    l->ptrs[l->n++] = i;
    return 0;
}

static void list_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    (void)m;
    if (!authorized(ch, call))
        return;
    pthread_mutex_lock(&ch->mu);
    size_t count = ke_map_len(ch->nodes);
    list_ctx l = {calloc(count + 1, sizeof(Ke__V1__NodeInfo)),
                  calloc(count + 1, sizeof(Ke__V1__NodeInfo *)), 0};
    if (l.infos && l.ptrs)
        ke_map_each(ch->nodes, list_one, &l);
    Ke__V1__ListNodesReply reply = KE__V1__LIST_NODES_REPLY__INIT;
    reply.n_nodes = l.n;
    reply.nodes = l.ptrs;
    /* Packed while the lock keeps the node names stable. */
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &reply.base);
    pthread_mutex_unlock(&ch->mu);
    free(l.infos);
    free(l.ptrs);
}

static void remove_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__RemoveNodeRequest *req = (const Ke__V1__RemoveNodeRequest *)m;
    if (!authorized(ch, call))
        return;
    pthread_mutex_lock(&ch->mu);
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
        ke_rpc_call_finish(call, KE_RPC_UNAVAILABLE, "store error", NULL);
        return;
    }
    ke_map_del(ch->nodes, n->name);
    if (n->stream) {
        ch_node_disconnect(ch, n, KE_RPC_PERMISSION_DENIED, "node was removed");
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
    static const ke_rpc_method_def methods[] = {
        {"Publish", KE_RPC_UNARY, {.on_message = publish_on_message}},
        {"Subscribe", KE_RPC_SERVER_STREAM,
         {.on_message = subscribe_on_message, .on_close = subscribe_on_close}},
        {"ListNodes", KE_RPC_UNARY, {.on_message = list_on_message}},
        {"RemoveNode", KE_RPC_UNARY, {.on_message = remove_on_message}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__hub__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), ch);
}
