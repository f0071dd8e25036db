/*
 * subscribe.c — Hub.Subscribe: named, durable consumers of the upstream log.
 *
 * Reports from nodes are in the uplog table (store.c) before the edge gets
 * its ack. A consumer ("edgecontroller", ...) opens Subscribe, whose first
 * frame is `start` {consumer, groups, window}; CloudHub registers it (its
 * cursor survives restarts) and streams the entries of its groups after
 * its cursor, in log order, at most `window` unacked at a time. The
 * consumer acks a log id once it has committed the effect of everything up
 * to it; the cursor moves (durably) and entries every consumer of their
 * group has acked are removed. Nothing is dropped for a slow or absent
 * consumer: entries wait in the log, which is bounded per node
 * (cloudhub.uplog_node_max keys; past it the edge is not acked and
 * retries). Each node has at most cloudhub.uplog_node_window entries in
 * the log at a time (tunnel.c holds its later reports back), so entries
 * are read in log order and yet one node's flood is at most a window ahead
 * of another node's report; acks that collect entries let held-back
 * reports in (ch_tunnel_undefer).
 *
 * One function per frame: subscribe_on_start, subscribe_on_ack. Sending is
 * non-blocking: sub_pump stops at a full rpc send queue and on_drain
 * resumes it. New entries wake the live consumers of their group
 * (ch_subscribe_wake, from tunnel.c). Everything runs under ch->mu.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB_WINDOW_DEFAULT 256u
#define SUB_WINDOW_MAX 4096u
#define SUB_NAME_MAX 63u
#define SUB_GROUPS_MAX 32u
#define SUB_GROUP_MAX 63u
/* Entries read from SQLite per query (a pump may run several). */
#define SUB_BATCH 256u

struct ch_subscriber {
    struct ch_subscriber *next;
    cloudhub *ch;
    ke_rpc_call *call;   /* a reference, dropped at on_close */
    int live;            /* in ch->subs */
    char name[SUB_NAME_MAX + 1];
    char **groups;
    size_t n_groups;
    char *groups_json;   /* JSON array of the groups; NULL: every group */
    uint32_t window;
    uint64_t cursor;     /* durable: acked up to here */
    uint64_t scanned;    /* the log was read up to here (sent or not ours) */
    uint64_t last_sent;  /* highest log id sent */
    uint64_t *inflight;  /* log ids sent and not acked, oldest first (ring) */
    uint32_t in_head, in_len;
    int blocked;         /* the rpc send queue was full: wait for the drain */
    /* acks go through the group-commit writer (writer.c): the newest log id
     * acked (durable once the cursor reaches it) and the writer's job for
     * it while queued (its sub is cleared if this goes first) */
    uint64_t ack_want;
    int ack_queued;
    ch_wjob *ack_job;
};

static void sub_free(ch_subscriber *s)
{
    for (size_t i = 0; i < s->n_groups; i++)
        free(s->groups[i]);
    free(s->groups);
    free(s->groups_json);
    free(s->inflight);
    free(s);
}

static void sub_unlink(cloudhub *ch, ch_subscriber *s)
{
    for (ch_subscriber **pp = &ch->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->live = 0;
}

static int sub_wants(const ch_subscriber *s, const char *group)
{
    if (s->n_groups == 0)
        return 1;
    for (size_t i = 0; i < s->n_groups; i++)
        if (strcmp(s->groups[i], group) == 0)
            return 1;
    return 0;
}

/* upstream_frame encodes UpstreamMessage{node_name, seq, message, log_id}
 * around the stored, packed Message without unpacking it: the other fields
 * through protobuf-c, then field 3 appended by hand (field order is free
 * in protobuf). Returns a malloc'd buffer or NULL. */
static uint8_t *upstream_frame(uint64_t id, const char *node, uint64_t seq, const void *msg,
                               size_t len, size_t *out_len)
{
    Ke__V1__UpstreamMessage up = KE__V1__UPSTREAM_MESSAGE__INIT;
    up.node_name = (char *)node;
    up.seq = seq;
    up.log_id = id;
    size_t head = protobuf_c_message_get_packed_size(&up.base);
    uint8_t *buf = malloc(head + 1 + 10 + len);
    if (!buf)
        return NULL;
    size_t n = protobuf_c_message_pack(&up.base, buf);
    buf[n++] = (3 << 3) | 2; /* field 3, length-delimited */
    for (uint64_t v = len; ; v >>= 7) {
        buf[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    if (len)
        memcpy(buf + n, msg, len);
    *out_len = n + len;
    return buf;
}

typedef struct pump_ctx {
    ch_subscriber *s;
    uint32_t rows;  /* rows seen */
    int stop;       /* the stream is full or ending */
} pump_ctx;

static int pump_row(uint64_t id, const char *node, uint64_t seq, const void *msg, size_t len,
                    void *arg)
{
    pump_ctx *p = arg;
    ch_subscriber *s = p->s;
    size_t flen;
    uint8_t *frame = upstream_frame(id, node, seq, msg, len, &flen);
    if (!frame) {
        p->stop = 1; /* out of memory: retried at the next wake, ack or drain */
        return 1;
    }
    int rc = ke_rpc_call_send_raw(s->call, frame, flen);
    free(frame);
    if (rc != 0) {
        /* KE_EFULL: the drain resumes from scanned; else the stream ends. */
        s->blocked = rc == KE_EFULL;
        p->stop = 1;
        return 1;
    }
    s->inflight[(s->in_head + s->in_len) % s->window] = id;
    s->in_len++;
    s->scanned = s->last_sent = id;
    p->rows++;
    ke_metric_add(s->ch->m.up_delivered, 1);
    return 0;
}

/* sub_pump sends the consumer's next entries while its window has room,
 * reading at most SUB_BATCH rows per query. */
static void sub_pump(cloudhub *ch, ch_subscriber *s)
{
    while (s->live && !s->blocked && s->in_len < s->window) {
        uint32_t want = s->window - s->in_len;
        if (want > SUB_BATCH)
            want = SUB_BATCH;
        pump_ctx p = {.s = s};
        uint64_t max_id = 0;
        int rc = ch_store_uplog_read(ch, s->scanned, s->groups_json, want, pump_row, &p, &max_id);
        if (rc != 0) {
            ke_log_error(CH_MOD, "cannot read the upstream log consumer=%s: %s", s->name,
                         ke_strerror(rc));
            ke_rpc_call_finish(s->call, KE_RPC_INTERNAL, "cannot read the upstream log", NULL);
            sub_unlink(ch, s);
            return;
        }
        if (p.stop)
            return;
        if (p.rows < want) {
            /* Caught up: nothing of ours up to max_id, and later entries
             * get higher ids. */
            if (max_id > s->scanned)
                s->scanned = max_id;
            return;
        }
    }
}

/* ack_flush makes the consumer's newest ack durable now, outside the
 * writer (a queued writer job for it then finds nothing to do), and does
 * what follows an ack (ch_subscribe_acked). ch->mu held. */
static void ack_flush(cloudhub *ch, ch_subscriber *s)
{
    if (s->ack_want <= s->cursor)
        return;
    int collected = 0;
    uint64_t want = s->ack_want;
    int rc = ch_store_consumer_ack(ch, s->name, s->cursor, want, &collected);
    ch_subscribe_acked(ch, s, want, collected, rc);
}

void ch_subscribe_wake(cloudhub *ch, const char *group)
{
    for (ch_subscriber *s = ch->subs, *next; s; s = next) {
        next = s->next; /* sub_pump may unlink s */
        if (sub_wants(s, group))
            sub_pump(ch, s);
    }
}

/* ---- frames ---- */

static int valid_consumer(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > SUB_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '-'))
            return 0;
    return 1;
}

/* valid_group: [A-Za-z0-9._/-], 1..63 bytes (so the JSON needs no escapes). */
static int valid_group(const char *g)
{
    size_t len = strlen(g);
    if (len == 0 || len > SUB_GROUP_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((g[i] >= 'a' && g[i] <= 'z') || (g[i] >= 'A' && g[i] <= 'Z') ||
              (g[i] >= '0' && g[i] <= '9') || g[i] == '-' || g[i] == '_' || g[i] == '.' ||
              g[i] == '/'))
            return 0;
    return 1;
}

/* start_check validates a start frame; NULL or the reason, naming the field. */
static const char *start_check(const Ke__V1__SubscribeRequest *req)
{
    if (!valid_consumer(req->consumer))
        return "start.consumer: required, [a-z0-9-], at most 63 bytes";
    if (req->n_groups > SUB_GROUPS_MAX)
        return "start.groups: at most 32";
    for (size_t i = 0; i < req->n_groups; i++)
        if (!valid_group(req->groups[i]))
            return "start.groups: each 1..63 bytes of [A-Za-z0-9._/-]";
    return NULL;
}

/* sub_new builds the consumer's stream state from its start frame. */
static ch_subscriber *sub_new(cloudhub *ch, ke_rpc_call *call, const Ke__V1__SubscribeRequest *req)
{
    ch_subscriber *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->ch = ch;
    s->call = call;
    snprintf(s->name, sizeof(s->name), "%s", req->consumer);
    s->window = req->window == 0                 ? SUB_WINDOW_DEFAULT
                : req->window > SUB_WINDOW_MAX ? SUB_WINDOW_MAX
                                               : req->window;
    if (!(s->inflight = calloc(s->window, sizeof(*s->inflight))))
        goto fail;
    size_t json_len = 3;
    if (req->n_groups) {
        if (!(s->groups = calloc(req->n_groups, sizeof(char *))))
            goto fail;
        for (size_t i = 0; i < req->n_groups; i++) {
            if (!(s->groups[i] = strdup(req->groups[i])))
                goto fail;
            s->n_groups++;
            json_len += strlen(req->groups[i]) + 3;
        }
    }
    /* The registered groups, as stored: [] for every group. */
    if (!(s->groups_json = malloc(json_len)))
        goto fail;
    char *p = s->groups_json;
    *p++ = '[';
    for (size_t i = 0; i < s->n_groups; i++)
        p += sprintf(p, "%s\"%s\"", i ? "," : "", s->groups[i]);
    *p++ = ']';
    *p = '\0';
    return s;
fail:
    sub_free(s);
    return NULL;
}

static void subscribe_on_start(cloudhub *ch, ke_rpc_call *call,
                               const Ke__V1__SubscribeRequest *req)
{
    const char *bad = start_check(req);
    if (bad) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, bad, NULL);
        return;
    }
    ch_subscriber *s = sub_new(ch, call, req);
    if (!s) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    ch_lock(ch);
    /* The stream this one replaces may have an ack waiting for the writer:
     * made durable first, so this stream starts after it. */
    for (ch_subscriber *o = ch->subs, *next; o; o = next) {
        next = o->next; /* a failed flush unlinks o */
        if (strcmp(o->name, s->name) == 0)
            ack_flush(ch, o);
    }
    int rc = ch_store_consumer_register(ch, s->name, s->groups_json, &s->cursor);
    if (rc != 0) {
        pthread_mutex_unlock(&ch->mu);
        ke_log_error(CH_MOD, "cannot register consumer=%s: %s", s->name, ke_strerror(rc));
        sub_free(s);
        ke_rpc_call_finish(call, KE_RPC_INTERNAL, "cannot register the consumer", NULL);
        return;
    }
    for (ch_subscriber *o = ch->subs; o; o = o->next) {
        if (strcmp(o->name, s->name) == 0) {
            ke_log_info(CH_MOD, "consumer=%s: a newer stream replaces the older", s->name);
            ke_rpc_call_finish(o->call, KE_RPC_ABORTED,
                               "replaced by a newer Subscribe stream of this consumer", NULL);
            sub_unlink(ch, o);
            break;
        }
    }
    if (s->n_groups == 0) {
        /* reads every group: the query needs no filter */
        free(s->groups_json);
        s->groups_json = NULL;
    }
    s->scanned = s->last_sent = s->cursor;
    ke_rpc_call_ref(call);
    ke_rpc_call_set_data(call, s);
    s->live = 1;
    s->next = ch->subs;
    ch->subs = s;
    ke_log_info(CH_MOD, "consumer subscribed consumer=%s groups=%zu window=%u cursor=%llu",
                s->name, s->n_groups, s->window, (unsigned long long)s->cursor);
    sub_pump(ch, s);
    pthread_mutex_unlock(&ch->mu);
}

static void subscribe_on_ack(cloudhub *ch, ke_rpc_call *call, ch_subscriber *s,
                             const Ke__V1__SubscribeAck *a)
{
    ch_lock(ch);
    if (!s->live) {
        pthread_mutex_unlock(&ch->mu);
        return; /* replaced: its acks no longer count */
    }
    if (a->log_id > s->last_sent) {
        /* One stream is handled in order: an ack before this one is
         * durable before the refusal goes out (the writer's job for it, if
         * still queued, then finds nothing to do). */
        ack_flush(ch, s);
        if (!s->live) {
            pthread_mutex_unlock(&ch->mu);
            return; /* the flush failed: ended INTERNAL */
        }
        char why[160];
        snprintf(why, sizeof(why), "ack.log_id: %llu is beyond the last entry sent (%llu)",
                 (unsigned long long)a->log_id, (unsigned long long)s->last_sent);
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, why, NULL);
        sub_unlink(ch, s);
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    if (a->log_id > s->ack_want)
        s->ack_want = a->log_id;
    if (s->ack_want > s->cursor && !s->ack_queued) {
        /* The cursor moves in the writer's next transaction, with the
         * reports and publishes around it; the window opens after it. */
        ch_wjob *j = ch_writer_job_new(call, 0, 0);
        if (j) {
            j->cack = 1;
            j->sub = s;
            ke_rpc_call_ref(call);
            if (ch_writer_submit(ch, j) == 0) {
                s->ack_queued = 1;
                s->ack_job = j;
                pthread_mutex_unlock(&ch->mu);
                return;
            }
            ke_rpc_call_unref(call);
            ch_writer_job_free(j);
        }
        ack_flush(ch, s); /* no room in the writer's queue: here, alone */
    }
    if (s->live)
        sub_pump(ch, s);
    pthread_mutex_unlock(&ch->mu);
}

int ch_subscribe_ack_log(cloudhub *ch, ch_wjob *j, int *collected)
{
    ch_subscriber *s = j->sub;
    if (!s)
        return 0; /* its stream closed first, and made the ack durable */
    s->ack_queued = 0;
    s->ack_job = NULL;
    if (s->ack_want <= s->cursor) {
        j->sub = NULL;
        return 0;
    }
    /* An ack accepted while the stream was live counts even if the stream
     * was replaced since (the cursor only ever grows). */
    j->ack_to = s->ack_want;
    return ch_store_consumer_ack_tx(ch, s->name, s->cursor, j->ack_to, collected);
}

void ch_subscribe_acked(cloudhub *ch, ch_subscriber *s, uint64_t log_id, int collected, int rc)
{
    if (rc != 0) {
        /* Not moved: the consumer sees these entries again from its cursor,
         * which its idempotent apply absorbs. */
        ke_log_error(CH_MOD, "cannot move the cursor consumer=%s log_id=%llu: %s", s->name,
                     (unsigned long long)log_id, ke_strerror(rc));
        ke_rpc_call_finish(s->call, KE_RPC_INTERNAL, "cannot persist the cursor", NULL);
        sub_unlink(ch, s);
        return;
    }
    if (log_id > s->cursor)
        s->cursor = log_id;
    if (collected > 0)
        ch_tunnel_undefer(ch); /* room in nodes' windows: their held-back reports */
    while (s->in_len && s->inflight[s->in_head] <= log_id) {
        s->in_head = (s->in_head + 1) % s->window;
        s->in_len--;
    }
    ke_log_debug(CH_MOD, "consumer=%s cursor=%llu collected=%d", s->name,
                 (unsigned long long)s->cursor, collected);
    sub_pump(ch, s);
}

static void subscribe_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__SubscribeFrame *f = (const Ke__V1__SubscribeFrame *)m;
    ch_subscriber *s = ke_rpc_call_get_data(call);
    if (!s) {
        if (f->frame_case != KE__V1__SUBSCRIBE_FRAME__FRAME_START) {
            ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT,
                               "start: the first frame must be start (a SubscribeRequest)", NULL);
            return;
        }
        subscribe_on_start(ch, call, f->start);
        return;
    }
    switch (f->frame_case) {
    case KE__V1__SUBSCRIBE_FRAME__FRAME_ACK:
        subscribe_on_ack(ch, call, s, f->ack);
        break;
    case KE__V1__SUBSCRIBE_FRAME__FRAME_START:
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "start: sent twice on one stream",
                           NULL);
        break;
    default:
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "frame: empty or of an unknown type", NULL);
        break;
    }
}

static void subscribe_on_drain(ke_rpc_call *call, void *ud)
{
    cloudhub *ch = ud;
    ch_lock(ch);
    ch_subscriber *s = ke_rpc_call_get_data(call);
    if (s && s->live) {
        s->blocked = 0;
        sub_pump(ch, s);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void subscribe_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    cloudhub *ch = ud;
    ch_subscriber *s = ke_rpc_call_get_data(call);
    if (!s)
        return;
    ch_lock(ch);
    if (s->live)
        sub_unlink(ch, s);
    ke_rpc_call_set_data(call, NULL);
    ke_log_info(CH_MOD, "consumer unsubscribed consumer=%s cursor=%llu status=%s", s->name,
                (unsigned long long)s->cursor, ke_rpc_status_name(st->code));
    if (s->ack_queued) {
        /* An ack still waiting for the writer: durable now, as on receipt,
         * and the writer's job left with nothing to do. */
        ack_flush(ch, s);
        s->ack_job->sub = NULL;
    }
    ke_rpc_call_unref(s->call);
    pthread_mutex_unlock(&ch->mu);
    sub_free(s);
}

const ke_rpc_handler ch_subscribe_handler = {
    .on_message = subscribe_on_message,
    .on_drain = subscribe_on_drain,
    .on_close = subscribe_on_close,
};

void ch_subscribe_free_all(cloudhub *ch)
{
    /* After the server stopped every call has seen on_close: normally
     * empty. */
    while (ch->subs) {
        ch_subscriber *s = ch->subs;
        sub_unlink(ch, s);
        ke_rpc_call_unref(s->call);
        sub_free(s);
    }
}
