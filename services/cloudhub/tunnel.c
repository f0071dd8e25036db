/*
 * tunnel.c — the Tunnel stream: one per edge node, mutual TLS, the node
 * being its certificate's CN. One function per frame type:
 *
 *   tunnel_on_hello      registers the stream, answers HelloAck, queues the
 *                        difference between the node's objects and the
 *                        edge's digest (updates and deletes), then ResyncDone
 *   tunnel_on_message    an upstream report: node authorization, dedup by
 *                        sequence number, persist the next expected seq,
 *                        fan out to subscribers, ack
 *   tunnel_on_ack        the edge applied everything up to seq: send more
 *   tunnel_on_keepalive  liveness; answered with a keepalive
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tunnel_conn {
    cloudhub *ch;
    char node[CH_NODE_NAME_MAX];
    int hello;
} tunnel_conn;

int ch_resource_node(const char *resource, char *buf, size_t len)
{
    if (!resource || strncmp(resource, "node/", 5) != 0)
        return KE_EINVAL;
    const char *start = resource + 5, *end = strchr(start, '/');
    if (!end || end == start || (size_t)(end - start) >= len)
        return KE_EINVAL;
    memcpy(buf, start, (size_t)(end - start));
    buf[end - start] = '\0';
    return 0;
}

int ch_auth_node(cloudhub *ch, ke_rpc_call *call, char *node, size_t len, char *why,
                 size_t whylen)
{
    char *pem = NULL, fp[65], cur[65], prev[65];
    if (ke_rpc_call_peer_cn(call, node, len) != 0 || ke_rpc_call_peer_cert(call, &pem) != 0) {
        snprintf(why, whylen, "a client certificate from the cluster CA is required");
        return KE_RPC_UNAUTHENTICATED;
    }
    int rc = ke_pki_cert_fingerprint(pem, fp); /* verified by TLS already */
    free(pem);
    if (rc != 0) {
        snprintf(why, whylen, "unreadable client certificate");
        return KE_RPC_UNAUTHENTICATED;
    }
    pthread_mutex_lock(&ch->mu);
    rc = ch_store_node_get(ch, node, cur, prev, NULL);
    pthread_mutex_unlock(&ch->mu);
    if (rc == KE_ENOTFOUND) {
        snprintf(why, whylen, "node %s is not registered (never joined, or removed): run keadm join",
                 node);
        return KE_RPC_PERMISSION_DENIED;
    }
    if (rc != 0) {
        snprintf(why, whylen, "node registry unavailable");
        return KE_RPC_UNAVAILABLE;
    }
    if (strcmp(fp, cur) != 0 && strcmp(fp, prev) != 0) {
        snprintf(why, whylen, "this certificate is no longer the one issued to node %s: "
                              "run keadm join again", node);
        return KE_RPC_PERMISSION_DENIED;
    }
    return KE_RPC_OK;
}

static void refuse(cloudhub *ch, ke_rpc_call *call, const char *node, int code, const char *why)
{
    ke_log_warn(CH_MOD, "refused tunnel node=%s code=%s reason=\"%s\"", node,
                ke_rpc_status_name(code), why);
    ke_metric_add(ch->m.refused, 1);
    ke_rpc_call_finish(call, code, why, NULL);
}

void ch_node_disconnect(cloudhub *ch, ch_node *n, int code, const char *why)
{
    (void)ch;
    if (!n->stream)
        return;
    if (ke_rpc_call_finish(n->stream, code, why, NULL) != 0)
        ke_rpc_call_cancel(n->stream);
}

static void send_frame(ke_rpc_call *call, Ke__V1__CloudFrame *f)
{
    ke_rpc_call_send(call, &f->base);
}

static void send_ack(ke_rpc_call *call, uint64_t seq)
{
    Ke__V1__Ack ack = KE__V1__ACK__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    ack.seq = seq;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_ACK;
    f.ack = &ack;
    send_frame(call, &f);
}

static void send_refusal(ke_rpc_call *call, uint64_t seq, const char *reason, int fatal)
{
    Ke__V1__Refusal r = KE__V1__REFUSAL__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    r.seq = seq;
    r.reason = (char *)reason;
    r.fatal = fatal;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_REFUSAL;
    f.refusal = &r;
    send_frame(call, &f);
}

/* ---- resync: the node's objects against the edge's digest ---- */

typedef struct resync {
    cloudhub *ch;
    ch_node *n;
    ke_map *digest; /* key -> DigestEntry of the hello */
    uint32_t updates, deletes;
    int full;
} resync;

static int resync_object(const char *key, uint64_t rv, int deleted, const void *msg, size_t len,
                         void *arg)
{
    resync *r = arg;
    Ke__V1__DigestEntry *have = ke_map_del(r->digest, key);
    int send = deleted ? (have && have->resource_version <= rv)
                       : (!have || have->resource_version < rv);
    if (!send)
        return 0;
    if (ch_queue_push(r->ch, r->n, key, rv, msg, len, 0) != 0) {
        r->full = 1;
        return 1;
    }
    if (deleted)
        r->deletes++;
    else
        r->updates++;
    return 0;
}

/* The edge holds a key the cloud never had (or forgot): delete it at the
 * edge's own version. */
static int resync_unknown(const char *key, void *value, void *arg)
{
    resync *r = arg;
    Ke__V1__DigestEntry *d = value;
    if (ch_queue_push(r->ch, r->n, key, d->resource_version, NULL, 0, 1) != 0) {
        r->full = 1;
        return 1;
    }
    r->deletes++;
    return 0;
}

static void tunnel_on_hello(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__Hello *h)
{
    cloudhub *ch = c->ch;
    if (strcmp(h->node_name, c->node) != 0) {
        char why[200];
        snprintf(why, sizeof(why), "hello names node \"%s\" but the certificate is for \"%s\"",
                 h->node_name, c->node);
        refuse(ch, call, c->node, KE_RPC_PERMISSION_DENIED, why);
        return;
    }
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (!n) {
        pthread_mutex_unlock(&ch->mu);
        refuse(ch, call, c->node, KE_RPC_PERMISSION_DENIED, "node was removed");
        return;
    }
    if (n->stream) {
        ke_log_info(CH_MOD, "replacing the previous stream node=%s", n->name);
        ch_node_disconnect(ch, n, KE_RPC_ABORTED, "replaced by a newer connection of this node");
        ke_rpc_call_unref(n->stream);
        n->stream = NULL;
        ch->connected--;
    }
    ch_queue_clear(ch, n);
    ke_rpc_call_ref(call);
    n->stream = call;
    n->hello_done = 1;
    n->last_seen_ms = ch_now_ms();
    snprintf(n->agent_version, sizeof(n->agent_version), "%s", h->agent_version);
    ch->connected++;
    ke_metric_set(ch->m.connected, ch->connected);
    c->hello = 1;

    Ke__V1__HelloAck ack = KE__V1__HELLO_ACK__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    ack.next_edge_seq = n->next_edge_seq;
    ack.keepalive_ms = (uint32_t)ch->cfg.keepalive_ms;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK;
    f.hello_ack = &ack;
    send_frame(call, &f);

    resync r = {.ch = ch, .n = n, .digest = ke_map_new()};
    for (size_t i = 0; r.digest && i < h->n_digest; i++)
        ke_map_put(r.digest, h->digest[i]->key, h->digest[i], NULL);
    if (r.digest)
        ch_store_node_objects(ch, n->name, resync_object, &r);
    if (r.digest && !r.full)
        ke_map_each(r.digest, resync_unknown, &r);
    ke_map_free(r.digest);
    if (!r.digest || r.full) {
        ke_log_error(CH_MOD, "out of memory computing the resync node=%s", n->name);
        ch_queue_clear(ch, n);
        ch_node_disconnect(ch, n, KE_RPC_RESOURCE_EXHAUSTED, "cloudhub is out of memory");
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    ch_queue_push_marker(ch, n, r.updates, r.deletes);
    ke_metric_add(ch->m.resyncs, 1);
    ch_queue_pump(ch, n);
    pthread_mutex_unlock(&ch->mu);
    ke_log_info(CH_MOD, "node connected node=%s agent=%s digest=%zu updates=%u deletes=%u "
                        "next_edge_seq=%llu",
                c->node, h->agent_version, h->n_digest, r.updates, r.deletes,
                (unsigned long long)ack.next_edge_seq);
}

static void tunnel_on_message(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__SequencedMessage *sm)
{
    cloudhub *ch = c->ch;
    char owner[CH_NODE_NAME_MAX];
    Ke__V1__Message *msg = sm->message;
    if (!msg || !msg->route || !msg->header || sm->seq == 0 ||
        ch_resource_node(msg->route->resource, owner, sizeof(owner)) != 0 ||
        strcmp(owner, c->node) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "resource \"%s\" does not belong to node %s",
                 msg && msg->route ? msg->route->resource : "", c->node);
        ke_log_warn(CH_MOD, "refused upstream frame node=%s seq=%llu reason=\"%s\"", c->node,
                    (unsigned long long)sm->seq, why);
        ke_metric_add(ch->m.refused, 1);
        pthread_mutex_lock(&ch->mu);
        ch_node *n = ke_map_get(ch->nodes, c->node);
        /* The refusal is final for this seq: step past it so it is not resent. */
        if (n && sm->seq >= n->next_edge_seq && ch_store_node_set_seq(ch, n->name, sm->seq + 1) == 0)
            n->next_edge_seq = sm->seq + 1;
        pthread_mutex_unlock(&ch->mu);
        send_refusal(call, sm->seq, why, 0);
        return;
    }
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (!n || n->stream != call) {
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    n->last_seen_ms = ch_now_ms();
    if (sm->seq < n->next_edge_seq) {
        ke_metric_add(ch->m.up_duplicates, 1);
        send_ack(call, sm->seq);
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    if (ch_store_node_set_seq(ch, n->name, sm->seq + 1) != 0) {
        ch_node_disconnect(ch, n, KE_RPC_UNAVAILABLE, "cannot persist upstream sequence");
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    n->next_edge_seq = sm->seq + 1;
    ke_metric_add(ch->m.up_received, 1);
    ch_hub_fanout(ch, n->name, sm->seq, msg);
    send_ack(call, sm->seq);
    pthread_mutex_unlock(&ch->mu);
}

static void tunnel_on_ack(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__Ack *a)
{
    cloudhub *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->last_seen_ms = ch_now_ms();
        if (a->seq > n->acked_seq && a->seq <= n->sent_seq) {
            ke_metric_add(ch->m.acked, (int64_t)(a->seq - n->acked_seq));
            n->acked_seq = a->seq;
        }
        ch_queue_pump(ch, n);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void tunnel_on_keepalive(tunnel_conn *c, ke_rpc_call *call)
{
    cloudhub *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->last_seen_ms = ch_now_ms();
        Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
        Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
        k.time_ms = n->last_seen_ms;
        f.frame_case = KE__V1__CLOUD_FRAME__FRAME_KEEPALIVE;
        f.keepalive = &k;
        send_frame(call, &f);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void on_open(ke_rpc_call *call, void *ud)
{
    cloudhub *ch = ud;
    char node[CH_NODE_NAME_MAX] = "", why[256];
    int code = ch_auth_node(ch, call, node, sizeof(node), why, sizeof(why));
    if (code != KE_RPC_OK) {
        refuse(ch, call, node[0] ? node : "-", code, why);
        return;
    }
    tunnel_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    c->ch = ch;
    snprintf(c->node, sizeof(c->node), "%s", node);
    ke_rpc_call_set_data(call, c);
    ke_log_debug(CH_MOD, "tunnel opened node=%s", node);
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)ud;
    tunnel_conn *c = ke_rpc_call_get_data(call);
    const Ke__V1__EdgeFrame *f = (const Ke__V1__EdgeFrame *)m;
    ke_log_debug(CH_MOD, "frame node=%s case=%d", c ? c->node : "-", (int)f->frame_case);
    if (!c)
        return; /* refused at open */
    if (!c->hello && f->frame_case != KE__V1__EDGE_FRAME__FRAME_HELLO) {
        refuse(c->ch, call, c->node, KE_RPC_FAILED_PRECONDITION, "the first frame must be hello");
        return;
    }
    switch (f->frame_case) {
    case KE__V1__EDGE_FRAME__FRAME_HELLO:
        if (c->hello)
            refuse(c->ch, call, c->node, KE_RPC_FAILED_PRECONDITION, "hello sent twice");
        else
            tunnel_on_hello(c, call, f->hello);
        break;
    case KE__V1__EDGE_FRAME__FRAME_MESSAGE:
        tunnel_on_message(c, call, f->message);
        break;
    case KE__V1__EDGE_FRAME__FRAME_ACK:
        tunnel_on_ack(c, call, f->ack);
        break;
    case KE__V1__EDGE_FRAME__FRAME_KEEPALIVE:
        tunnel_on_keepalive(c, call);
        break;
    default:
        refuse(c->ch, call, c->node, KE_RPC_INVALID_ARGUMENT, "empty or unknown frame");
        break;
    }
}

static void on_drain(ke_rpc_call *call, void *ud)
{
    cloudhub *ch = ud;
    tunnel_conn *c = ke_rpc_call_get_data(call);
    if (!c)
        return;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call)
        ch_queue_pump(ch, n);
    pthread_mutex_unlock(&ch->mu);
}

static void on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    cloudhub *ch = ud;
    tunnel_conn *c = ke_rpc_call_get_data(call);
    if (!c)
        return;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->stream = NULL;
        n->hello_done = 0;
        n->last_seen_ms = ch_now_ms();
        ch_queue_clear(ch, n);
        ch->connected--;
        ke_metric_set(ch->m.connected, ch->connected);
        ke_rpc_call_unref(call);
        ke_log_info(CH_MOD, "node disconnected node=%s status=%s reason=\"%s\"", c->node,
                    ke_rpc_status_name(st->code), st->message);
    }
    pthread_mutex_unlock(&ch->mu);
    free(c);
}

int ch_tunnel_register(cloudhub *ch, ke_rpc_server *srv)
{
    static const ke_rpc_handler h = {.on_open = on_open,
                                     .on_message = on_message,
                                     .on_drain = on_drain,
                                     .on_close = on_close};
    return ke_rpc_server_add(srv, &ke__v1__cloud_hub__descriptor, "Tunnel", KE_RPC_BIDI_STREAM,
                             &h, ch);
}
