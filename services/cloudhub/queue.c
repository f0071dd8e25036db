/*
 * queue.c — the downstream queue of one connected node.
 *
 * A FIFO of entries, at most one per resource key: publishing a newer
 * version of a key that is still queued replaces the queued message in
 * place (counted as dropped). The memory is bounded: a node holds at most
 * cfg.queue_max message bodies; past that, an entry keeps only its key and
 * version and the message is read back from the store when its turn comes
 * ("spilled", counted in ke_cloudhub_queue_overflows_total). So a full
 * queue never refuses a publish and never loses one: the objects table is
 * the truth, the queue only says what to send next. The number of entries
 * is bounded by the node's resources.
 *
 * Entries leave the queue when sent; at most cfg.window messages are in
 * flight unacknowledged. A marker entry sends ResyncDone in order.
 * Frames wrap the stored, already packed ke.v1.Message (ke_wire.h).
 *
 * Tombstones in flight are remembered (seq, key, rv): once the edge acks
 * the seq that carried one, the objects row is removed if it is still that
 * tombstone, so deleted rows do not pile up under create/delete churn.
 *
 * Control frames (acks of upstream reports, keepalive replies) do not
 * queue behind data: each is a slot on the node (the newest seq to ack, a
 * keepalive due), sent first on every pump and on every drain, and never
 * dropped. Data in the rpc send queue is at most cfg.window <=
 * CH_WINDOW_MAX frames, which leaves CH_CONTROL_RESERVE frames of the
 * queue to control; past that a slot simply waits for the drain.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"
#include "ke_wire.h"

#include <stdlib.h>
#include <string.h>

static void entry_drop_body(ch_node *n, ch_entry *e)
{
    if (e->msg) {
        free(e->msg);
        e->msg = NULL;
        n->held--;
    }
    if (n->held == 0)
        n->spilling = 0;
}

static void entry_free(ch_node *n, ch_entry *e)
{
    entry_drop_body(n, e);
    free(e->key);
    free(e);
}

static void depth_add(cloudhub *ch, ch_node *n, int d)
{
    n->depth = (uint32_t)((int)n->depth + d);
    ch->total_depth = (uint32_t)((int)ch->total_depth + d);
    ke_metric_set(ch->m.queue_depth, ch->total_depth);
}

static void append(cloudhub *ch, ch_node *n, ch_entry *e)
{
    if (n->tail)
        n->tail->next = e;
    else
        n->head = e;
    n->tail = e;
    depth_add(ch, n, 1);
}

/* entry_set_body keeps a copy of msg when the node is under its bound. */
static void entry_set_body(cloudhub *ch, ch_node *n, ch_entry *e, const uint8_t *msg, size_t len)
{
    entry_drop_body(n, e);
    e->len = 0;
    if (!msg)
        return;
    if (n->held < ch->cfg.queue_max && (e->msg = malloc(len ? len : 1)) != NULL) {
        memcpy(e->msg, msg, len);
        e->len = len;
        n->held++;
    } else {
        ke_metric_add(ch->m.overflows, 1);
        if (!n->spilling)
            ke_log_warn(CH_MOD, "downstream queue at its bound node=%s held=%u: further messages "
                                "stay in the store until sent",
                        n->name, n->held);
        n->spilling = 1;
    }
}

int ch_queue_push(cloudhub *ch, ch_node *n, const char *key, uint64_t rv, const uint8_t *msg,
                  size_t len, int deleted, int synth_delete)
{
    ch_entry *e = ke_map_get(n->pending, key);
    if (e) {
        if (e->rv >= rv)
            return 0;
        e->rv = rv;
        e->deleted = deleted;
        e->synth_delete = synth_delete;
        entry_set_body(ch, n, e, msg, len);
        ke_metric_add(ch->m.coalesced, 1);
        return 0;
    }
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key)) || ke_map_put(n->pending, key, e, NULL) != 0) {
        if (e)
            free(e->key);
        free(e);
        return KE_ENOMEM;
    }
    e->rv = rv;
    e->deleted = deleted;
    e->synth_delete = synth_delete;
    entry_set_body(ch, n, e, msg, len);
    append(ch, n, e);
    return 0;
}

int ch_queue_push_marker(cloudhub *ch, ch_node *n, uint32_t updates, uint32_t deletes)
{
    ch_entry *e = calloc(1, sizeof(*e));
    if (!e)
        return KE_ENOMEM;
    e->updates = updates;
    e->deletes = deletes;
    append(ch, n, e);
    return 0;
}

/* send_marker sends ResyncDone: 0, KE_EFULL (retry at the drain), or
 * KE_ECLOSED. */
static int send_marker(ch_node *n, const ch_entry *e)
{
    Ke__V1__ResyncDone done = KE__V1__RESYNC_DONE__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    done.updates = e->updates;
    done.deletes = e->deletes;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE;
    f.resync_done = &done;
    return ke_rpc_call_send_control(n->stream, &f.base);
}

/* ---- control slots ---- */

void ch_control_ack(ch_node *n, uint64_t seq)
{
    if (seq > n->ack_owed)
        n->ack_owed = seq;
}

void ch_control_keepalive(ch_node *n)
{
    n->keepalive_owed = 1;
}

void ch_control_flush(cloudhub *ch, ch_node *n)
{
    (void)ch;
    if (!n->stream)
        return;
    if (n->ack_owed) {
        Ke__V1__Ack ack = KE__V1__ACK__INIT;
        Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
        ack.seq = n->ack_owed;
        f.frame_case = KE__V1__CLOUD_FRAME__FRAME_ACK;
        f.ack = &ack;
        int rc = ke_rpc_call_send_control(n->stream, &f.base);
        /* KE_EFULL: stays owed until the drain. KE_ECLOSED: the stream is
         * ending; the edge learns next_edge_seq from the next HelloAck. */
        if (rc != KE_EFULL)
            n->ack_owed = 0;
    }
    if (n->keepalive_owed) {
        Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
        Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
        k.time_ms = ke_time_wall_ms();
        f.frame_case = KE__V1__CLOUD_FRAME__FRAME_KEEPALIVE;
        f.keepalive = &k;
        if (ke_rpc_call_send_control(n->stream, &f.base) != KE_EFULL)
            n->keepalive_owed = 0;
    }
}

/* ---- tombstones in flight ---- */

static void dels_free(ch_node *n)
{
    for (uint32_t i = 0; i < n->dels_len; i++)
        free(n->dels[(n->dels_head + i) % CH_WINDOW_MAX].key);
    free(n->dels);
    n->dels = NULL;
    n->dels_head = n->dels_len = 0;
}

/* dels_push remembers a tombstone sent at seq. At most window entries are
 * in flight, so the ring (CH_WINDOW_MAX) never overflows; out of memory,
 * the row simply stays until a later resync. */
static void dels_push(ch_node *n, uint64_t seq, const char *key, uint64_t rv)
{
    if (!n->dels && !(n->dels = calloc(CH_WINDOW_MAX, sizeof(*n->dels))))
        return;
    if (n->dels_len == CH_WINDOW_MAX)
        return;
    char *k = strdup(key);
    if (!k)
        return;
    ch_sent_delete *d = &n->dels[(n->dels_head + n->dels_len) % CH_WINDOW_MAX];
    d->seq = seq;
    d->rv = rv;
    d->key = k;
    n->dels_len++;
}

void ch_queue_acked(cloudhub *ch, ch_node *n, uint64_t seq)
{
    if (seq <= n->acked_seq || seq > n->sent_seq)
        return;
    ke_metric_add(ch->m.acked, (int64_t)(seq - n->acked_seq));
    n->acked_seq = seq;
    if (n->resyncing && n->resync_end_seq && seq >= n->resync_end_seq)
        ch_tunnel_resync_end(ch, n, 1); /* the edge has applied its resync */
    if (!n->dels_len || n->dels[n->dels_head].seq > seq)
        return;
    int in_tx = ke_sqlite_begin(ch->db) == 0;
    int64_t dropped = 0;
    while (n->dels_len && n->dels[n->dels_head].seq <= seq) {
        ch_sent_delete *d = &n->dels[n->dels_head];
        int rc = ch_store_tombstone_drop(ch, d->key, d->rv);
        if (rc != 0)
            ke_log_warn(CH_MOD, "cannot remove an acked tombstone node=%s key=%s rv=%llu: it "
                                "stays until the node resyncs",
                        n->name, d->key, (unsigned long long)d->rv);
        else
            dropped++;
        free(d->key);
        n->dels_head = (n->dels_head + 1) % CH_WINDOW_MAX;
        n->dels_len--;
    }
    if (in_tx && ke_sqlite_commit(ch->db) != 0) {
        ke_log_warn(CH_MOD, "cannot commit tombstone removal node=%s: the rows stay until the "
                            "node resyncs",
                    n->name);
        dropped = 0;
    }
    ke_metric_add(ch->m.tombstones_collected, dropped);
}

/* synth_delete_msg packs a delete of key at rv (the cloud has no row). */
static uint8_t *synth_delete_msg(const char *key, uint64_t rv, size_t *len)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route route = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.resource_version = rv;
    h.timestamp_ms = ke_time_wall_ms();
    route.source = "cloudhub";
    route.group = "resource";
    route.operation = KE__V1__OPERATION__OPERATION_DELETE;
    route.resource = (char *)key;
    m.header = &h;
    m.route = &route;
    *len = protobuf_c_message_get_packed_size(&m.base);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(&m.base, buf);
    return buf;
}

/* entry_body returns the bytes to send for e: its own copy, or (spilled)
 * the store's current message, or a synthesized delete. *owned says
 * whether the caller frees it. */
static const uint8_t *entry_body(cloudhub *ch, ch_entry *e, size_t *len, int *owned)
{
    *owned = 0;
    if (e->msg) {
        *len = e->len;
        return e->msg;
    }
    uint8_t *buf = NULL;
    uint64_t rv = 0;
    *owned = 1;
    if (e->synth_delete)
        return synth_delete_msg(e->key, e->rv, len);
    if (ch_store_object_get(ch, e->key, &rv, &buf, len) != 0)
        return NULL;
    return buf;
}

void ch_queue_pump(cloudhub *ch, ch_node *n)
{
    ch_control_flush(ch, n);
    while (n->stream && n->head && n->sent_seq - n->acked_seq < ch->cfg.window) {
        ch_entry *e = n->head;
        if (e->key) {
            size_t len = 0, flen;
            int owned;
            const uint8_t *body = entry_body(ch, e, &len, &owned);
            uint8_t *frame = body ? ke_wire_sequenced_frame(n->sent_seq + 1, body, len, &flen)
                                  : NULL;
            if (owned)
                free((void *)body);
            if (!frame) {
                /* The row vanished (node removed) or memory ran out: skip it. */
                ke_log_warn(CH_MOD, "cannot send queued message node=%s key=%s", n->name, e->key);
            } else {
                int rc = ke_rpc_call_send_raw(n->stream, frame, flen);
                free(frame);
                if (rc == KE_EFULL)
                    return; /* the rpc queue drains first; on_drain pumps again */
                if (rc != 0)
                    return; /* the stream is ending; on_close clears the queue */
                n->sent_seq++;
                ke_metric_add(ch->m.sent, 1);
                if (e->deleted && !e->synth_delete)
                    dels_push(n, n->sent_seq, e->key, e->rv);
            }
            ke_map_del(n->pending, e->key);
        } else if (send_marker(n, e) != 0) {
            return; /* KE_EFULL: sent at the drain, in order; else the stream is ending */
        } else if (n->resyncing) {
            /* The resync is out: its slot is released once the edge has
             * acked all of it (at once when nothing is in flight). */
            n->resync_end_seq = n->sent_seq;
            if (n->sent_seq <= n->acked_seq)
                ch_tunnel_resync_end(ch, n, 1);
        }
        n->head = e->next;
        if (!n->head)
            n->tail = NULL;
        depth_add(ch, n, -1);
        entry_free(n, e);
    }
}

void ch_queue_clear(cloudhub *ch, ch_node *n)
{
    while (n->head) {
        ch_entry *e = n->head;
        n->head = e->next;
        if (e->key)
            ke_map_del(n->pending, e->key);
        depth_add(ch, n, -1);
        entry_free(n, e);
    }
    n->tail = NULL;
    n->sent_seq = n->acked_seq = 0;
    n->ack_owed = 0;
    n->keepalive_owed = 0;
    n->upstream_stopped = 0;
    dels_free(n);
    ch_tunnel_defer_clear(ch, n);
    ch_tunnel_resync_end(ch, n, 0);
}
