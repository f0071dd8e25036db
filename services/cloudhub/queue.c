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
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
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
                  size_t len, int synth_delete)
{
    ch_entry *e = ke_map_get(n->pending, key);
    if (e) {
        if (e->rv >= rv)
            return 0;
        e->rv = rv;
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

static void send_marker(ch_node *n, const ch_entry *e)
{
    Ke__V1__ResyncDone done = KE__V1__RESYNC_DONE__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    done.updates = e->updates;
    done.deletes = e->deletes;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE;
    f.resync_done = &done;
    ke_rpc_call_send(n->stream, &f.base);
}

/* synth_delete_msg packs a delete of key at rv (the cloud has no row). */
static uint8_t *synth_delete_msg(const char *key, uint64_t rv, size_t *len)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route route = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.resource_version = rv;
    h.timestamp_ms = ch_now_ms();
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
            }
            ke_map_del(n->pending, e->key);
        } else {
            send_marker(n, e);
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
}
