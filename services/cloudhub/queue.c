/*
 * queue.c — the downstream queue of one connected node.
 *
 * A FIFO of entries, at most one per resource key: publishing a newer
 * version of a key that is still queued replaces the queued message in
 * place (counted as coalesced). The queue is bounded (cfg.queue_max keys);
 * at the bound the caller drops the queue and forces the node to resync,
 * which loses nothing because the objects table is the truth.
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

static void entry_free(ch_entry *e)
{
    if (!e)
        return;
    free(e->key);
    free(e->msg);
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

int ch_queue_push(cloudhub *ch, ch_node *n, const char *key, uint64_t rv, const uint8_t *msg,
                  size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return KE_ENOMEM;
    memcpy(copy, msg, len);
    ch_entry *e = ke_map_get(n->pending, key);
    if (e) {
        /* A newer version replaces the unsent older one, in place. */
        if (e->rv >= rv) {
            free(copy);
            return 0;
        }
        free(e->msg);
        e->msg = copy;
        e->len = len;
        e->rv = rv;
        ke_metric_add(ch->m.coalesced, 1);
        return 0;
    }
    if (n->depth >= ch->cfg.queue_max) {
        free(copy);
        return KE_EFULL;
    }
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key)) || ke_map_put(n->pending, key, e, NULL) != 0) {
        if (e)
            free(e->key);
        free(e);
        free(copy);
        return KE_ENOMEM;
    }
    e->rv = rv;
    e->msg = copy;
    e->len = len;
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

void ch_queue_pump(cloudhub *ch, ch_node *n)
{
    while (n->stream && n->head && n->sent_seq - n->acked_seq < ch->cfg.window) {
        ch_entry *e = n->head;
        if (e->key) {
            size_t flen;
            uint8_t *frame = ke_wire_sequenced_frame(n->sent_seq + 1, e->msg, e->len, &flen);
            if (!frame)
                return;
            int rc = ke_rpc_call_send_raw(n->stream, frame, flen);
            free(frame);
            if (rc == KE_EFULL)
                return; /* the rpc queue drains first; on_drain pumps again */
            if (rc != 0)
                return; /* the stream is ending; on_close clears the queue */
            n->sent_seq++;
            ke_metric_add(ch->m.sent, 1);
            ke_map_del(n->pending, e->key);
        } else {
            send_marker(n, e);
        }
        n->head = e->next;
        if (!n->head)
            n->tail = NULL;
        depth_add(ch, n, -1);
        entry_free(e);
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
        entry_free(e);
    }
    n->tail = NULL;
    n->sent_seq = n->acked_seq = 0;
}
