/*
 * edgehub.c — see edgehub.h.
 *
 * Everything runs on edgecore's loop (ke_rt.h): the stream's events are
 * handed over by the runtime, the timer drives keepalives, the dead-peer
 * check, rotation and the reconnect back-off. No lock.
 *
 * Connections have generations. Events of an older stream's call are
 * dropped, and so are MetaManager's answers about its changes (they stay
 * unacked: the cloud resends or resyncs them). Before each new stream,
 * EdgeHub sends MetaManager a barrier query: its answer comes after every
 * change queued before it has been applied, and carries the store's
 * tombstone mark. So nothing written after the mark comes from an older
 * stream, and the tombstones at or below it can go at this stream's
 * ResyncDone.
 *
 * Connect: Hello with the first page of the digest (at most
 * EH_DIGEST_CHUNK_ENTRIES entries, EH_DIGEST_CHUNK_BYTES bytes); when more
 * follow, digest_follows and DigestChunk frames, one page read from SQLite
 * at a time, the last with last = true. A send queue at its bound
 * (KE_EFULL) pauses the digest until the call drains; nothing is dropped.
 *
 * Log streams (kectl logs; edge-agent/README.md, "Log streams"). The
 * cloud's LogRequest frame becomes a bus message to the module serving
 * group "edged": operation QUERY, resource "logs/<stream_id>", route.source
 * "edgehub", content {"namespace","pod","container","follow","tailLines",
 * "limitBytes"}; no such module: a LogChunk with error "no Edged module on
 * this node" and eof, at once. The answering module sends to module
 * "edgehub" (ke_rt_send_to), resource "logs/<stream_id>": UPLOAD messages
 * with raw log bytes as content (each at most 64 KiB; larger ones are cut
 * into 64 KiB chunks here), then one RESPONSE with {"eof":true} or
 * {"error":"text"}. Each becomes a LogChunk frame on the current tunnel
 * (the data ones under the call's byte bound: a stream that hits it is
 * dropped, the module told to stop and the cloud sent an error chunk).
 * LogCancel from the cloud becomes DELETE "logs/<stream_id>" to group
 * "edged"; so does anything the module sends for a stream EdgeHub does not
 * know (ended, cancelled, or of a tunnel gone). When the tunnel ends,
 * a DELETE of "logs/" + "*" stops them all. Log frames are not
 * sequenced, not acked, and never touch the outbox. At most EH_LOGS_MAX
 * streams at once (CloudHub allows 16 per node).
 *
 * Service calls (ServiceBus; edge-agent/README.md, "Service calls"). The
 * cloud's ServiceRequest frame becomes a bus message to the module serving
 * group "servicebus": operation QUERY, resource "servicebus/<request_id>",
 * route.source "edgehub", content the packed ke.v1.ServiceRequest. The
 * module answers with one RESPONSE to module "edgehub", same resource,
 * content a packed ke.v1.ServiceResponse, which goes up as a
 * ServiceResponse frame on the current tunnel. No such module: a
 * ServiceResponse FAILED_PRECONDITION at once. Nothing is tracked here:
 * the module bounds and times out its calls itself, and an answer whose
 * tunnel has gone is dropped (its cloud caller has been told UNAVAILABLE).
 * A tunnel at its byte bound: the answer goes as a control frame without
 * its body, code UNAVAILABLE.
 *
 * Clocks (ke_time.h): every timeout, keepalive, dead-peer check and
 * back-off is monotonic; wall time only for the certificate's validity and
 * the keepalive's informational time_ms.
 */
#include "edgehub.h"

#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_pki.h"
#include "ke_time.h"
#include "ke_wire.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EH_MOD "edgehub"
#define EH_META "metamanager"

/* Digest entries per Hello or DigestChunk (api/cloudhub.proto). */
#define EH_DIGEST_CHUNK_ENTRIES EDGE_STORE_DIGEST_PAGE
/* Bytes of entries per Hello or DigestChunk: under the 4 MiB message bound
 * with room for the frame, whatever the keys' lengths. */
#define EH_DIGEST_CHUNK_BYTES (3u << 20)
/* Log streams: the module that answers them, how many at once, the
 * largest LogChunk data. */
#define EH_EDGED_GROUP "edged"
#define EH_LOGS_MAX 32
#define EH_LOG_CHUNK_MAX (64u << 10)
/* Service calls: the module that answers them. */
#define EH_SERVICEBUS_GROUP "servicebus"
/* A pump from the timer as well as on MetaManager's notices. */
#define EH_RETRY_ROTATION_MS 60000
/* The longest wait a Refusal's retry_after_ms may impose (CloudHub's own
 * bound is the same: a larger one is taken as this). */
#define EH_RETRY_AFTER_MAX_MS 60000u
/* TLS sessions kept for resumption: one server, a few tickets. */
#define EH_TLS_CACHE_SESSIONS 4

typedef enum { DIGEST_HELLO, DIGEST_CHUNKS, DIGEST_SENT } digest_stage;

typedef struct digest_sender {
    digest_stage stage;
    char *after;                 /* last key sent; NULL before the first page */
    Ke__V1__DigestEntry **page;  /* read but not yet sent (KE_EFULL) */
    size_t n;
    int loaded, more;
} digest_sender;

typedef enum { H_IDLE, H_BARRIER, H_STREAM } hub_phase;

typedef struct hub {
    ke_rt *e;
    edge_store *st;
    edgehub_config cfg;
    uv_timer_t timer;
    int stopping;
    unsigned seed;
    /* the connection */
    hub_phase phase;
    uint64_t gen;
    ke_rpc_channel *ch;
    ke_rpc_call *call;       /* the Tunnel stream, NULL between streams */
    ke_rpc_call *renew;      /* a Renew in flight */
    int ready, renewed, rotate_req;
    digest_sender digest;
    uint64_t tomb_mark;
    uint64_t unsent_ack; /* a downstream ack the full send queue refused */
    uint64_t sent_upto, acked;
    int64_t last_rx_ms, keepalive_ms, next_ka_ms, rotate_at_ms, reconnect_at_ms;
    int64_t backoff_ms;
    uint32_t retry_after_ms; /* CloudHub's admission control asked to wait (0: no) */
    /* TLS sessions of earlier channels, so that a reconnect resumes (an
     * abbreviated handshake); dropped when the certificate changes, since a
     * resumed session carries the certificate it was made with */
    ke_rpc_session_cache *tls_cache;
    int attempts, was_ready;
    char *renew_key;
    uint64_t logs[EH_LOGS_MAX]; /* log streams of the current tunnel */
    size_t n_logs;
    ke_metric *m_connected, *m_reconnects, *m_rotations, *m_refused, *m_tunnel_refused;
} hub;

typedef struct conn {
    hub *h;
    uint64_t gen;
} conn;

static void hub_arm(hub *h);
static void connect_begin(hub *h);

/* ---- sending ---- */

static int send_frame(hub *h, Ke__V1__EdgeFrame *f)
{
    return h->call ? ke_rpc_call_send(h->call, &f->base) : KE_ECLOSED;
}

static int send_ack(hub *h, uint64_t seq)
{
    Ke__V1__Ack ack = KE__V1__ACK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    ack.seq = seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &ack;
    return send_frame(h, &f);
}

/* ack sends the ack of seq, or keeps it for when the queue drains (acks
 * are cumulative: the highest refused one is enough). */
static void ack(hub *h, uint64_t seq)
{
    int rc = send_ack(h, seq);
    if (rc == KE_EFULL) {
        if (seq > h->unsent_ack)
            h->unsent_ack = seq;
    } else if (rc == 0 && seq >= h->unsent_ack) {
        h->unsent_ack = 0;
    }
}

static void send_keepalive(hub *h)
{
    Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    k.time_ms = ke_time_wall_ms();
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_KEEPALIVE;
    f.keepalive = &k;
    /* Refused by a full queue: the frames ahead of it keep the cloud's
     * dead-peer timer fed, and the next period sends another. */
    int rc = send_frame(h, &f);
    if (rc != 0 && rc != KE_EFULL && rc != KE_ECLOSED)
        ke_log_warn(EH_MOD, "keepalive not sent: %s", ke_strerror(rc));
}

typedef struct pump_ctx {
    ke_rpc_call *call;
    uint64_t last;
} pump_ctx;

static int pump_one(uint64_t seq, const uint8_t *msg, size_t len, void *arg)
{
    pump_ctx *p = arg;
    size_t flen;
    uint8_t *frame = ke_wire_sequenced_frame(seq, msg, len, &flen);
    if (!frame)
        return 1;
    int rc = ke_rpc_call_send_raw(p->call, frame, flen);
    free(frame);
    if (rc != 0)
        return 1;
    p->last = seq;
    return 0;
}

/* pump sends queued reports after sent_upto, within the window. */
static void pump(hub *h)
{
    uint64_t inflight = h->sent_upto > h->acked ? h->sent_upto - h->acked : 0;
    if (!h->ready || !h->call || inflight >= h->cfg.window)
        return;
    pump_ctx p = {h->call, 0};
    int rc = edge_store_outbox_scan(h->st, h->sent_upto + 1, h->cfg.window - (size_t)inflight,
                                    pump_one, &p);
    if (rc != 0)
        ke_log_warn(EH_MOD, "cannot read the outbox: %s", ke_strerror(rc));
    if (p.last > h->sent_upto)
        h->sent_upto = p.last;
}

static int send_hello(hub *h, Ke__V1__DigestEntry **page, size_t n, int follows)
{
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    hello.node_name = (char *)h->cfg.node_name;
    hello.agent_version = (char *)h->cfg.agent_version;
    hello.digest = page;
    hello.n_digest = n;
    hello.digest_follows = follows;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    return send_frame(h, &f);
}

static int send_digest_chunk(hub *h, Ke__V1__DigestEntry **page, size_t n, int last)
{
    Ke__V1__DigestChunk d = KE__V1__DIGEST_CHUNK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    d.entries = page;
    d.n_entries = n;
    d.last = last;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK;
    f.digest_chunk = &d;
    return send_frame(h, &f);
}

static void digest_clear(digest_sender *d)
{
    edge_store_digest_free(d->page, d->n);
    free(d->after);
    memset(d, 0, sizeof(*d));
}

/* digest_send sends as much of the digest as the send queue takes: 0 when
 * all of it is sent, KE_EFULL to go on when the call drains, or an error. */
static int digest_send(hub *h)
{
    digest_sender *d = &h->digest;
    while (d->stage != DIGEST_SENT) {
        if (!d->loaded) {
            int rc = edge_store_digest_page(h->st, d->after, EH_DIGEST_CHUNK_ENTRIES,
                                            EH_DIGEST_CHUNK_BYTES, &d->page, &d->n, &d->more);
            if (rc != 0)
                return rc;
            d->loaded = 1;
        }
        int rc = d->stage == DIGEST_HELLO ? send_hello(h, d->page, d->n, d->more)
                                          : send_digest_chunk(h, d->page, d->n, !d->more);
        if (rc != 0)
            return rc; /* KE_EFULL: the same page again after the drain */
        if (d->n > 0) {
            char *after = strdup(d->page[d->n - 1]->key);
            if (!after)
                return KE_ENOMEM;
            free(d->after);
            d->after = after;
        }
        edge_store_digest_free(d->page, d->n);
        d->page = NULL;
        d->n = 0;
        d->loaded = 0;
        d->stage = d->more ? DIGEST_CHUNKS : DIGEST_SENT;
    }
    return 0;
}

/* progress does what the stream can do now: the digest, a refused ack,
 * the outbox. */
static void progress(hub *h)
{
    if (h->phase != H_STREAM || !h->call)
        return;
    if (h->digest.stage != DIGEST_SENT) {
        int rc = digest_send(h);
        if (rc != 0 && rc != KE_EFULL && rc != KE_ECLOSED) {
            ke_log_error(EH_MOD, "cannot send the digest: %s; reconnecting", ke_strerror(rc));
            ke_rpc_call_cancel(h->call);
            return;
        }
    }
    if (h->unsent_ack)
        ack(h, h->unsent_ack);
    pump(h);
}

/* ---- the cloud's frames ---- */

static void on_hello_ack(hub *h, const Ke__V1__HelloAck *a)
{
    uint64_t next = a->next_edge_seq ? a->next_edge_seq : 1;
    /* Everything below next reached the cloud before: drop it. */
    int rc = edge_store_outbox_ack(h->st, next - 1);
    if (rc != 0)
        ke_log_warn(EH_MOD, "cannot drop acknowledged reports: %s", ke_strerror(rc));
    h->ready = h->was_ready = 1;
    h->sent_upto = next - 1;
    h->acked = next - 1;
    if (a->keepalive_ms && a->keepalive_ms < h->cfg.keepalive_ms)
        h->keepalive_ms = a->keepalive_ms;
    h->backoff_ms = h->cfg.backoff_initial_ms;
    ke_metric_set(h->m_connected, 1);
    ke_log_info(EH_MOD, "connected node=%s server=%s next_edge_seq=%llu", h->cfg.node_name,
                h->cfg.server, (unsigned long long)next);
}

/* on_change hands a change to MetaManager; it is acked when MetaManager
 * answers (on_meta_answer). */
static void on_change(hub *h, Ke__V1__CloudFrame *f)
{
    Ke__V1__SequencedMessage *sm = f->message;
    Ke__V1__Message *msg = sm->message;
    char id[64];
    snprintf(id, sizeof(id), "hub:%" PRIu64 ":%" PRIu64, h->gen, sm->seq);
    int rc = KE_EINVAL;
    if (msg && msg->route && msg->header) {
        sm->message = NULL; /* now ours */
        char *src = strdup(EH_MOD);
        if (src && ke_rt_message_set_id(msg, id) == 0) {
            if (msg->route->source != protobuf_c_empty_string)
                free(msg->route->source);
            msg->route->source = src;
            src = NULL;
            rc = ke_rt_send_to(h->e, EH_META, msg);
        } else {
            rc = KE_ENOMEM;
        }
        free(src);
        if (rc != 0)
            ke__v1__message__free_unpacked(msg, NULL);
    }
    if (rc != 0) {
        ke_log_error(EH_MOD, "cannot hand seq=%llu to metamanager: %s; reconnecting",
                     (unsigned long long)sm->seq, ke_strerror(rc));
        ke_rpc_call_cancel(h->call);
    }
}

static void on_upstream_acked(hub *h, uint64_t seq)
{
    int rc = edge_store_outbox_ack(h->st, seq);
    if (rc != 0)
        ke_log_warn(EH_MOD, "cannot drop acknowledged reports: %s", ke_strerror(rc));
    if (seq > h->acked)
        h->acked = seq;
}

static void on_refusal(hub *h, const Ke__V1__Refusal *r)
{
    char er[KE_LOG_ESC_SIZE(256)];
    if (r->seq == 0) {
        /* Not about a report: the tunnel itself (admission control). */
        ke_log_info(EH_MOD, "cloud refused the tunnel reason=\"%s\" fatal=%d retry_after_ms=%u",
                    ke_log_esc(r->reason, er, sizeof(er)), r->fatal, r->retry_after_ms);
        ke_metric_add(h->m_tunnel_refused, 1);
        if (r->retry_after_ms)
            h->retry_after_ms = r->retry_after_ms > EH_RETRY_AFTER_MAX_MS ? EH_RETRY_AFTER_MAX_MS
                                                                          : r->retry_after_ms;
        if (r->fatal)
            ke_rpc_call_cancel(h->call);
        return;
    }
    ke_log_warn(EH_MOD, "cloud refused report seq=%llu reason=\"%s\" fatal=%d",
                (unsigned long long)r->seq, ke_log_esc(r->reason, er, sizeof(er)), r->fatal);
    ke_metric_add(h->m_refused, 1);
    on_upstream_acked(h, r->seq); /* the cloud's final word on that report */
    if (r->fatal)
        ke_rpc_call_cancel(h->call);
}

static void on_resync_done(hub *h, const Ke__V1__ResyncDone *rd)
{
    ke_log_info(EH_MOD, "resync done updates=%u deletes=%u", rd->updates, rd->deletes);
    size_t collected = 0;
    int rc = edge_store_tombstones_collect(h->st, h->tomb_mark, &collected);
    if (rc != 0)
        ke_log_warn(EH_MOD, "tombstone collection stopped: %s (retried after the next resync)",
                    ke_strerror(rc));
    else if (collected > 0)
        ke_log_info(EH_MOD, "tombstones collected count=%zu", collected);
}

/* ---- log streams ---- */

static int logs_find(const hub *h, uint64_t id)
{
    for (size_t i = 0; i < h->n_logs; i++)
        if (h->logs[i] == id)
            return (int)i;
    return -1;
}

static void logs_drop(hub *h, int i)
{
    h->logs[i] = h->logs[--h->n_logs];
}

/* edged_delete tells the module serving "edged" to stop resource
 * ("logs/<id>" or "logs/" "*"). */
static void edged_delete(hub *h, const char *resource)
{
    Ke__V1__Message *d = ke_rt_message_new(EH_MOD, EH_EDGED_GROUP,
                                           KE__V1__OPERATION__OPERATION_DELETE, resource, NULL, 0);
    int rc = d ? ke_rt_send(h->e, d) : KE_ENOMEM;
    if (rc != 0 && d)
        ke__v1__message__free_unpacked(d, NULL);
    if (rc != 0 && rc != KE_ENOTFOUND && rc != KE_ECLOSED)
        ke_log_warn(EH_MOD, "cannot tell edged to stop %s: %s", resource, ke_strerror(rc));
}

/* log_end sends the last LogChunk of stream id (error "" for a plain eof).
 * A control frame: small, and one per stream. */
static void log_end(hub *h, uint64_t id, const char *error)
{
    Ke__V1__LogChunk lc = KE__V1__LOG_CHUNK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    lc.stream_id = id;
    lc.eof = 1;
    lc.error = (char *)error;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_LOG_CHUNK;
    f.log_chunk = &lc;
    int rc = h->call ? ke_rpc_call_send_control(h->call, &f.base) : KE_ECLOSED;
    if (rc != 0)
        ke_log_debug(EH_MOD, "end of log stream %" PRIu64 " not sent: %s", id, ke_strerror(rc));
}

static void on_log_request(hub *h, const Ke__V1__LogRequest *r)
{
    char res[32];
    snprintf(res, sizeof(res), "logs/%" PRIu64, r->stream_id);
    if (logs_find(h, r->stream_id) >= 0)
        return; /* asked twice: the first one is running */
    if (h->n_logs >= EH_LOGS_MAX) {
        log_end(h, r->stream_id, "too many log streams on this node");
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:I, s:I}", "namespace", r->namespace_, "pod",
                          r->pod, "container", r->container, "follow", r->follow, "tailLines",
                          (json_int_t)r->tail_lines, "limitBytes", (json_int_t)r->limit_bytes);
    char *content = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    Ke__V1__Message *q =
        content ? ke_rt_message_new(EH_MOD, EH_EDGED_GROUP, KE__V1__OPERATION__OPERATION_QUERY,
                                    res, content, strlen(content))
                : NULL;
    free(content);
    int rc = q ? ke_rt_send(h->e, q) : KE_ENOMEM;
    if (rc != 0 && q)
        ke__v1__message__free_unpacked(q, NULL);
    if (rc == KE_ENOTFOUND) {
        log_end(h, r->stream_id, "no Edged module on this node");
    } else if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "edged cannot take the request: %s", ke_strerror(rc));
        log_end(h, r->stream_id, why);
    } else {
        h->logs[h->n_logs++] = r->stream_id;
        char ep[KE_LOG_ESC_SIZE(64)];
        ke_log_debug(EH_MOD, "log stream %" PRIu64 " asked pod=%s follow=%d", r->stream_id,
                     ke_log_esc(r->pod, ep, sizeof(ep)), r->follow);
    }
}

static void on_log_cancel(hub *h, const Ke__V1__LogCancel *lc)
{
    int i = logs_find(h, lc->stream_id);
    if (i < 0)
        return;
    logs_drop(h, i);
    char res[32];
    snprintf(res, sizeof(res), "logs/%" PRIu64, lc->stream_id);
    edged_delete(h, res);
}

/* on_log_answer: the module's UPLOAD (log bytes) or RESPONSE (the end) of
 * a stream. */
static void on_log_answer(hub *h, const Ke__V1__Message *msg)
{
    const char *res = msg->route->resource;
    uint64_t id = 0;
    char extra;
    if (sscanf(res, "logs/%" SCNu64 "%c", &id, &extra) != 1)
        return; /* the wildcard or garbage: nothing of ours */
    int i = logs_find(h, id);
    Ke__V1__Operation op = msg->route->operation;
    if (i < 0 || !h->call) {
        if (i >= 0)
            logs_drop(h, i);
        if (op != KE__V1__OPERATION__OPERATION_RESPONSE)
            edged_delete(h, res); /* ended, cancelled, or of a tunnel gone: stop */
        return;
    }
    if (op == KE__V1__OPERATION__OPERATION_UPLOAD) {
        for (size_t off = 0; off < msg->content.len; off += EH_LOG_CHUNK_MAX) {
            size_t n = msg->content.len - off;
            Ke__V1__LogChunk lc = KE__V1__LOG_CHUNK__INIT;
            Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
            lc.stream_id = id;
            lc.data.data = msg->content.data + off;
            lc.data.len = n > EH_LOG_CHUNK_MAX ? EH_LOG_CHUNK_MAX : n;
            f.frame_case = KE__V1__EDGE_FRAME__FRAME_LOG_CHUNK;
            f.log_chunk = &lc;
            int rc = ke_rpc_call_send(h->call, &f.base);
            if (rc != 0) {
                /* The tunnel is at its bound (or ending): this stream
                 * cannot keep up; it ends here, with a word to the cloud. */
                ke_log_warn(EH_MOD, "log stream %" PRIu64 " dropped: %s", id, ke_strerror(rc));
                logs_drop(h, i);
                edged_delete(h, res);
                log_end(h, id, "log stream dropped: the node's tunnel to the cloud is at its "
                               "send bound");
                return;
            }
        }
    } else if (op == KE__V1__OPERATION__OPERATION_RESPONSE) {
        json_t *j = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
        const char *err = json_string_value(json_object_get(j, "error"));
        int eof = json_is_true(json_object_get(j, "eof"));
        logs_drop(h, i);
        log_end(h, id, err ? err : eof ? "" : "edged ended the log stream without eof or error");
        json_decref(j);
    } else {
        ke_log_warn(EH_MOD, "ignoring operation %d for log stream %" PRIu64, (int)op, id);
    }
}

/* logs_tunnel_gone: every log stream ends with its tunnel. */
static void logs_tunnel_gone(hub *h)
{
    h->n_logs = 0;
    edged_delete(h, "logs/*");
}

/* ---- service calls ---- */

/* service_fail answers request id with code and error (a control frame:
 * small, one per request). */
static void service_fail(hub *h, uint64_t id, int code, const char *error)
{
    Ke__V1__ServiceResponse sr = KE__V1__SERVICE_RESPONSE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    sr.request_id = id;
    sr.code = code;
    sr.error = (char *)error;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_SERVICE_RESPONSE;
    f.service_response = &sr;
    int rc = h->call ? ke_rpc_call_send_control(h->call, &f.base) : KE_ECLOSED;
    if (rc != 0)
        ke_log_debug(EH_MOD, "answer to service request %" PRIu64 " not sent: %s", id,
                     ke_strerror(rc));
}

static void on_service_request(hub *h, const Ke__V1__ServiceRequest *r)
{
    char res[40];
    snprintf(res, sizeof(res), "servicebus/%" PRIu64, r->request_id);
    size_t len = ke__v1__service_request__get_packed_size(r);
    uint8_t *buf = malloc(len ? len : 1);
    Ke__V1__Message *q = NULL;
    if (buf) {
        ke__v1__service_request__pack(r, buf);
        q = ke_rt_message_new(EH_MOD, EH_SERVICEBUS_GROUP, KE__V1__OPERATION__OPERATION_QUERY,
                              res, buf, len);
    }
    free(buf);
    int rc = q ? ke_rt_send(h->e, q) : KE_ENOMEM;
    if (rc != 0 && q)
        ke__v1__message__free_unpacked(q, NULL);
    if (rc == KE_ENOTFOUND) {
        service_fail(h, r->request_id, KE_RPC_FAILED_PRECONDITION,
                     "no ServiceBus module on this node (modules.servicebus.enable)");
    } else if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "servicebus cannot take the request: %s", ke_strerror(rc));
        ke_log_warn(EH_MOD, "service request %" PRIu64 " refused: %s", r->request_id, why);
        service_fail(h, r->request_id,
                     rc == KE_EFULL ? KE_RPC_RESOURCE_EXHAUSTED : KE_RPC_UNAVAILABLE, why);
    } else {
        ke_log_debug(EH_MOD, "service request %" PRIu64 " asked", r->request_id);
    }
}

/* on_service_answer: the module's RESPONSE to a service request. */
static void on_service_answer(hub *h, const Ke__V1__Message *msg)
{
    const char *res = msg->route->resource;
    uint64_t id = 0;
    char extra;
    if (sscanf(res, "servicebus/%" SCNu64 "%c", &id, &extra) != 1 ||
        msg->route->operation != KE__V1__OPERATION__OPERATION_RESPONSE) {
        ke_log_warn(EH_MOD, "ignoring a servicebus message that is not an answer op=%d",
                    (int)msg->route->operation);
        return;
    }
    Ke__V1__ServiceResponse *sr =
        ke__v1__service_response__unpack(NULL, msg->content.len, msg->content.data);
    if (!sr || sr->request_id != id) {
        ke_log_warn(EH_MOD, "servicebus answered request %" PRIu64 " with %s", id,
                    sr ? "another request's id" : "an undecodable ServiceResponse");
        service_fail(h, id, KE_RPC_INTERNAL, "the edge's ServiceBus answered garbage");
    } else if (!h->call) {
        ke_log_debug(EH_MOD, "answer to service request %" PRIu64 " dropped: no tunnel (its "
                             "caller was told UNAVAILABLE)",
                     id);
    } else {
        Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
        f.frame_case = KE__V1__EDGE_FRAME__FRAME_SERVICE_RESPONSE;
        f.service_response = sr;
        int rc = ke_rpc_call_send(h->call, &f.base);
        if (rc == KE_EFULL) {
            ke_log_warn(EH_MOD, "answer to service request %" PRIu64 " dropped: the tunnel is "
                                "at its send bound",
                        id);
            service_fail(h, id, KE_RPC_UNAVAILABLE,
                         "the answer was dropped: the node's tunnel to the cloud is at its send "
                         "bound; try again");
        } else if (rc != 0) {
            ke_log_debug(EH_MOD, "answer to service request %" PRIu64 " not sent: %s", id,
                         ke_strerror(rc));
        }
    }
    if (sr)
        ke__v1__service_response__free_unpacked(sr, NULL);
}

static void tunnel_on_message(ke_rpc_call *call, ProtobufCMessage *m, void *ud)
{
    conn *c = ud;
    hub *h = c->h;
    Ke__V1__CloudFrame *f = (Ke__V1__CloudFrame *)m;
    if (c->gen != h->gen || call != h->call) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    h->last_rx_ms = ke_time_mono_ms();
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        on_hello_ack(h, f->hello_ack);
        hub_arm(h); /* a rotation may be due now that the stream is up */
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        on_change(h, f);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_ACK:
        on_upstream_acked(h, f->ack->seq);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        on_refusal(h, f->refusal);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        on_resync_done(h, f->resync_done);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_KEEPALIVE:
        break;
    case KE__V1__CLOUD_FRAME__FRAME_LOG_REQUEST:
        on_log_request(h, f->log_request);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_LOG_CANCEL:
        on_log_cancel(h, f->log_cancel);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_SERVICE_REQUEST:
        on_service_request(h, f->service_request);
        break;
    default:
        ke_log_warn(EH_MOD, "ignoring an empty or unknown frame from the cloud");
        break;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    progress(h);
}

static void tunnel_on_drain(ke_rpc_call *call, void *ud)
{
    conn *c = ud;
    if (c->gen == c->h->gen && call == c->h->call)
        progress(c->h);
}

/* tls_cache_reset forgets the TLS sessions (made with the certificate in
 * use until now) and starts an empty cache; out of memory, none (full
 * handshakes). */
static void tls_cache_reset(hub *h)
{
    ke_rpc_session_cache_free(h->tls_cache);
    h->tls_cache = ke_rpc_session_cache_new(EH_TLS_CACHE_SESSIONS);
    if (!h->tls_cache)
        ke_log_warn(EH_MOD, "no TLS session cache (out of memory): full handshakes only");
}

static void maybe_free_channel(hub *h)
{
    if (!h->call && !h->renew && h->ch) {
        ke_rpc_channel_free(h->ch);
        h->ch = NULL;
    }
}

static void tunnel_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    conn *c = ud;
    hub *h = c->h;
    if (call == h->call) {
        char em[KE_LOG_ESC_SIZE(sizeof(st->message))];
        ke_log_info(EH_MOD, "tunnel closed node=%s status=%s reason=\"%s\"", h->cfg.node_name,
                    ke_rpc_status_name(st->code), ke_log_esc(st->message, em, sizeof(em)));
        ke_metric_set(h->m_connected, 0);
        h->call = NULL;
        h->ready = 0;
        h->phase = H_IDLE;
        digest_clear(&h->digest);
        logs_tunnel_gone(h);
        if (h->renew)
            ke_rpc_call_cancel(h->renew);
        if (!h->stopping) {
            if (h->was_ready || h->renewed)
                h->backoff_ms = h->cfg.backoff_initial_ms;
            int64_t b = h->backoff_ms;
            /* Jittered exponential backoff: a uniform wait in [b/2, b]. */
            int64_t delay = b / 2 + (int64_t)(rand_r(&h->seed) % (unsigned)(b / 2 + 1));
            if (h->renewed)
                delay = 0; /* reconnect at once with the new certificate */
            h->renewed = 0;
            if (h->retry_after_ms) {
                /* CloudHub's admission control: no sooner than it asked
                 * (jittered up by a tenth), nor than our own backoff. */
                int64_t ra = (int64_t)h->retry_after_ms;
                ra += (int64_t)(rand_r(&h->seed) % (unsigned)(ra / 10 + 1));
                if (ra > delay)
                    delay = ra;
                ke_log_info(EH_MOD, "reconnecting after %lld ms (cloudhub asked "
                                    "retry_after_ms=%u)",
                            (long long)delay, h->retry_after_ms);
                h->retry_after_ms = 0;
            } else {
                ke_log_debug(EH_MOD, "reconnecting after %lld ms", (long long)delay);
            }
            if (st->code == KE_RPC_UNAUTHENTICATED || st->code == KE_RPC_PERMISSION_DENIED)
                tls_cache_reset(h); /* the next handshake shows the certificate afresh */
            h->reconnect_at_ms = ke_time_mono_ms() + delay;
            h->backoff_ms = b * 2 > h->cfg.backoff_max_ms ? h->cfg.backoff_max_ms : b * 2;
            hub_arm(h);
        }
    }
    ke_rpc_call_unref(call);
    free(c);
    maybe_free_channel(h);
}

static const ke_rt_rpc_handler tunnel_handler = {
    .on_message = tunnel_on_message, .on_drain = tunnel_on_drain, .on_close = tunnel_on_close};

/* ---- rotation ---- */

static int64_t cert_remaining_ms(hub *h)
{
    char *pem = NULL;
    int64_t not_after = 0;
    if (ke_pki_read_file(h->cfg.cert_file, &pem, NULL) != 0)
        return INT64_MAX;
    int rc = ke_pki_cert_info(pem, NULL, 0, NULL, &not_after);
    free(pem);
    if (rc != 0)
        return INT64_MAX;
    return not_after - ke_time_wall_ms(); /* validity is wall time */
}

static void renew_on_message(ke_rpc_call *call, ProtobufCMessage *m, void *ud)
{
    (void)call;
    hub *h = ud;
    Ke__V1__JoinResponse *r = (Ke__V1__JoinResponse *)m;
    /* Key first: a crash between the two writes leaves a key without its
     * certificate, which the next start reports; never the reverse. */
    int rc = ke_pki_write_file(h->cfg.key_file, h->renew_key, strlen(h->renew_key), 0600);
    if (rc == 0)
        rc = ke_pki_write_file(h->cfg.cert_file, r->certificate_pem.data, r->certificate_pem.len,
                               0644);
    if (rc == 0) {
        ke_metric_add(h->m_rotations, 1);
        ke_log_info(EH_MOD, "certificate rotated node=%s not_after_ms=%lld", h->cfg.node_name,
                    (long long)r->not_after_ms);
        h->renewed = 1;
        tls_cache_reset(h); /* sessions made with the old certificate */
    } else {
        ke_log_error(EH_MOD, "cannot write the renewed certificate: %s", ke_strerror(rc));
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void renew_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    hub *h = ud;
    if (st->code != KE_RPC_OK) {
        char em[KE_LOG_ESC_SIZE(sizeof(st->message))];
        ke_log_warn(EH_MOD, "certificate renewal refused: %s: \"%s\"",
                    ke_rpc_status_name(st->code), ke_log_esc(st->message, em, sizeof(em)));
    }
    free(h->renew_key);
    h->renew_key = NULL;
    h->renew = NULL;
    ke_rpc_call_unref(call);
    if (h->renewed && h->call) {
        /* Reconnect with the new certificate; whatever is in flight is
         * resent or resynced on the new stream. */
        ke_rpc_call_cancel(h->call);
    } else {
        if (!h->renewed) /* refused or failed: retry in a minute */
            h->rotate_at_ms = ke_time_mono_ms() + EH_RETRY_ROTATION_MS;
        h->renewed = 0; /* no stream to leave: the next one uses the new files */
        hub_arm(h);
    }
    maybe_free_channel(h);
}

static const ke_rt_rpc_handler renew_handler = {.on_message = renew_on_message,
                                                  .on_close = renew_on_close};

static void rotate_start(hub *h)
{
    if (h->renew || !h->ready || !h->ch)
        return;
    char *key = NULL, *csr = NULL;
    int rc = ke_pki_key_create(&key);
    if (rc == 0)
        rc = ke_pki_csr_create(key, h->cfg.node_name, &csr);
    ke_rpc_call *call = NULL;
    if (rc == 0) {
        ke_rpc_call_opts o = {.timeout_ms = 15000};
        rc = ke_rt_call_start(h->e, h->ch, &ke__v1__cloud_hub__descriptor, "Renew",
                                &renew_handler, h, &o, &call);
    }
    if (rc == 0) {
        Ke__V1__RenewRequest req = KE__V1__RENEW_REQUEST__INIT;
        req.csr_pem.data = (uint8_t *)csr;
        req.csr_pem.len = strlen(csr);
        if (ke_rpc_call_send(call, &req.base) != 0 || ke_rpc_call_close_send(call) != 0)
            ke_rpc_call_cancel(call);
        h->renew = call;
        h->renew_key = key;
        key = NULL;
    } else {
        ke_log_warn(EH_MOD, "certificate renewal not started: %s", ke_strerror(rc));
        h->rotate_at_ms = ke_time_mono_ms() + EH_RETRY_ROTATION_MS;
    }
    free(key);
    free(csr);
}

/* ---- the connection ---- */

/* connect_begin: the barrier first (on_meta_answer goes on with
 * stream_open). */
static void connect_begin(hub *h)
{
    if (h->stopping || h->phase != H_IDLE)
        return;
    if (h->attempts++ > 0)
        ke_metric_add(h->m_reconnects, 1);
    h->gen++;
    h->phase = H_BARRIER;
    h->reconnect_at_ms = INT64_MAX;
    Ke__V1__Message *q = ke_rt_message_new(EH_MOD, "", KE__V1__OPERATION__OPERATION_QUERY,
                                             "meta/barrier", NULL, 0);
    char id[64];
    snprintf(id, sizeof(id), "hub:%" PRIu64 ":barrier", h->gen);
    int rc = q ? ke_rt_message_set_id(q, id) : KE_ENOMEM;
    if (rc == 0)
        rc = ke_rt_send_to(h->e, EH_META, q);
    if (rc != 0) {
        if (q)
            ke__v1__message__free_unpacked(q, NULL);
        ke_log_error(EH_MOD, "cannot ask metamanager for a barrier: %s", ke_strerror(rc));
        h->phase = H_IDLE;
        h->reconnect_at_ms = ke_time_mono_ms() + h->backoff_ms;
        hub_arm(h);
    }
}

static void stream_open(hub *h, uint64_t mark)
{
    ke_rpc_tls tls = {.ca_file = h->cfg.ca_file,
                      .cert_file = h->cfg.cert_file,
                      .key_file = h->cfg.key_file};
    ke_rpc_channel_opts co = {
        .tls = &tls, .max_message_bytes = 16u << 20, .session_cache = h->tls_cache};
    int64_t now = ke_time_mono_ms();
    h->tomb_mark = mark;
    if (!h->ch && ke_rpc_channel_new(ke_rt_rpc(h->e), h->cfg.server, &co, &h->ch) != 0) {
        ke_log_error(EH_MOD, "cannot load the node's TLS files ca=%s cert=%s key=%s",
                     h->cfg.ca_file, h->cfg.cert_file, h->cfg.key_file);
        h->phase = H_IDLE;
        h->reconnect_at_ms = now + h->backoff_ms;
        hub_arm(h);
        return;
    }
    conn *c = calloc(1, sizeof(*c));
    ke_rpc_call *call = NULL;
    int rc = KE_ENOMEM;
    if (c) {
        c->h = h;
        c->gen = h->gen;
        rc = ke_rt_call_start(h->e, h->ch, &ke__v1__cloud_hub__descriptor, "Tunnel",
                                &tunnel_handler, c, NULL, &call);
    }
    if (rc != 0) {
        free(c);
        ke_log_error(EH_MOD, "cannot open the tunnel: %s", ke_strerror(rc));
        h->phase = H_IDLE;
        h->reconnect_at_ms = now + h->backoff_ms;
        maybe_free_channel(h);
        hub_arm(h);
        return;
    }
    h->call = call;
    h->phase = H_STREAM;
    h->ready = h->was_ready = 0;
    h->unsent_ack = 0;
    h->keepalive_ms = h->cfg.keepalive_ms;
    h->last_rx_ms = now;
    h->next_ka_ms = now + h->keepalive_ms;
    int64_t left = cert_remaining_ms(h);
    h->rotate_at_ms = left == INT64_MAX ? INT64_MAX : now + left - h->cfg.renew_before_ms;
    digest_clear(&h->digest);
    progress(h);
    hub_arm(h);
}

/* on_meta_answer: MetaManager's answer to a barrier or a change. */
static void on_meta_answer(hub *h, Ke__V1__Message *msg)
{
    const char *pid = msg->header ? msg->header->parent_id : NULL;
    uint64_t gen = 0, seq = 0;
    char what[16] = "";
    if (!pid || sscanf(pid, "hub:%" SCNu64 ":%15s", &gen, what) != 2 || gen != h->gen)
        return; /* an older stream's: left unacked */
    json_t *j = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    const char *err = json_string_value(json_object_get(j, "error"));
    if (strcmp(what, "barrier") == 0) {
        if (h->phase == H_BARRIER) {
            if (err) {
                ke_log_error(EH_MOD, "metamanager refused the barrier: %s", err);
                h->phase = H_IDLE;
                h->reconnect_at_ms = ke_time_mono_ms() + h->backoff_ms;
                hub_arm(h);
            } else {
                stream_open(h, (uint64_t)json_integer_value(json_object_get(j, "mark")));
            }
        }
    } else if (sscanf(what, "%" SCNu64, &seq) == 1 && h->call) {
        if (err) {
            char er[KE_LOG_ESC_SIZE(256)];
            ke_log_error(EH_MOD, "cannot apply seq=%llu resource=\"%s\": %s; reconnecting",
                         (unsigned long long)seq,
                         ke_log_esc(msg->route ? msg->route->resource : "-", er, sizeof(er)), err);
            ke_rpc_call_cancel(h->call);
        } else {
            ack(h, seq);
        }
    }
    json_decref(j);
}

/* ---- the timer ---- */

static void on_timer(uv_timer_t *t)
{
    hub *h = t->data;
    int64_t now = ke_time_mono_ms();
    if (h->phase == H_IDLE && now >= h->reconnect_at_ms) {
        connect_begin(h);
    } else if (h->phase == H_STREAM && h->call) {
        if (now - h->last_rx_ms > h->cfg.dead_peer_ms) {
            ke_log_warn(EH_MOD, "cloud silent for %lld ms: reconnecting",
                        (long long)(now - h->last_rx_ms));
            ke_rpc_call_cancel(h->call);
            return;
        }
        if (now >= h->next_ka_ms && h->digest.stage != DIGEST_HELLO) {
            send_keepalive(h);
            h->next_ka_ms = now + h->keepalive_ms;
        }
        if (h->ready && !h->renew && (h->rotate_req || now >= h->rotate_at_ms)) {
            h->rotate_req = 0;
            rotate_start(h);
        }
        progress(h);
    }
    hub_arm(h);
}

/* hub_arm sets the timer to the next thing due. */
static void hub_arm(hub *h)
{
    if (h->stopping)
        return;
    int64_t now = ke_time_mono_ms(), at = INT64_MAX;
    if (h->phase == H_IDLE) {
        at = h->reconnect_at_ms;
    } else if (h->phase == H_STREAM) {
        at = h->next_ka_ms;
        if (h->last_rx_ms + h->cfg.dead_peer_ms + 1 < at)
            at = h->last_rx_ms + h->cfg.dead_peer_ms + 1;
        if (h->ready && !h->renew && h->rotate_req)
            at = now;
        else if (h->ready && !h->renew && h->rotate_at_ms < at)
            at = h->rotate_at_ms;
    }
    if (at == INT64_MAX) {
        uv_timer_stop(&h->timer);
        return;
    }
    uv_timer_start(&h->timer, on_timer, at > now ? (uint64_t)(at - now) : 0, 0);
}

/* ---- the module ---- */

static void eh_on_message(ke_module *m, Ke__V1__Message *msg)
{
    hub *h = ke_module_data(m);
    if (msg->route && strncmp(msg->route->resource, "logs/", 5) == 0) {
        on_log_answer(h, msg); /* the log streams' module */
    } else if (msg->route && strncmp(msg->route->resource, "servicebus/", 11) == 0) {
        on_service_answer(h, msg); /* ServiceBus */
    } else if (msg->route && msg->route->operation == KE__V1__OPERATION__OPERATION_RESPONSE) {
        on_meta_answer(h, msg);
    } else if (msg->route && msg->route->resource &&
               strcmp(msg->route->resource, EDGEHUB_ROTATE) == 0) {
        ke_log_info(EH_MOD, "rotating the node certificate on request");
        h->rotate_req = 1;
        hub_arm(h);
    } else {
        pump(h); /* MetaManager: the outbox grew */
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static int eh_start(ke_module *m)
{
    const edgehub_config *cfg = ke_module_config(m);
    ke_rt *e = ke_module_rt(m);
    if (!cfg || !cfg->node_name || !cfg->server || !cfg->ca_file || !cfg->cert_file ||
        !cfg->key_file) {
        ke_log_error(EH_MOD, "node name, server and TLS files are required");
        return KE_EINVAL;
    }
    if (!ke_rt_has_module(e, EH_META)) {
        ke_log_error(EH_MOD, "needs the metamanager module (modules.metamanager.enable)");
        return KE_EINVAL;
    }
    hub *h = calloc(1, sizeof(*h));
    if (!h)
        return KE_ENOMEM;
    h->e = e;
    h->st = ke_rt_store(e);
    h->cfg = *cfg;
    if (!h->cfg.agent_version)
        h->cfg.agent_version = "";
    if (h->cfg.keepalive_ms <= 0)
        h->cfg.keepalive_ms = 5000;
    if (h->cfg.dead_peer_ms <= 0)
        h->cfg.dead_peer_ms = 3 * h->cfg.keepalive_ms;
    if (h->cfg.backoff_initial_ms <= 0)
        h->cfg.backoff_initial_ms = 500;
    if (h->cfg.backoff_max_ms < h->cfg.backoff_initial_ms)
        h->cfg.backoff_max_ms = 30000;
    if (h->cfg.renew_before_ms <= 0)
        h->cfg.renew_before_ms = 30LL * 24 * 3600 * 1000;
    if (!h->cfg.window)
        h->cfg.window = 256;
    h->backoff_ms = h->cfg.backoff_initial_ms;
    h->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    if (uv_timer_init(ke_rt_loop(e), &h->timer) != 0) {
        free(h);
        return KE_EIO;
    }
    h->timer.data = h;
    tls_cache_reset(h);
    ke_metrics_gauge_new("ke_edgehub_connected", "1 while the tunnel to CloudHub is up", NULL,
                         &h->m_connected);
    ke_metrics_counter_new("ke_edgehub_reconnects_total", "tunnel reconnect attempts", NULL,
                           &h->m_reconnects);
    ke_metrics_counter_new("ke_edgehub_certificate_rotations_total", "node certificates renewed",
                           NULL, &h->m_rotations);
    ke_metrics_counter_new("ke_edgehub_refused_reports_total", "reports the cloud refused", NULL,
                           &h->m_refused);
    ke_metrics_counter_new("ke_edgehub_tunnel_refusals_total",
                           "tunnels CloudHub refused with a Refusal frame (admission control: "
                           "the next reconnect waits its retry_after_ms)",
                           NULL, &h->m_tunnel_refused);
    ke_module_set_data(m, h);
    h->phase = H_IDLE;
    connect_begin(h);
    return 0;
}

static int eh_health(ke_module *m, char *detail, size_t cap)
{
    hub *h = ke_module_data(m);
    uint64_t inflight = h->sent_upto > h->acked ? h->sent_upto - h->acked : 0;
    snprintf(detail, cap, "%s server=%s inflight=%" PRIu64,
             h->ready ? "connected" : h->phase == H_IDLE ? "waiting" : "connecting",
             h->cfg.server, inflight);
    return 0; /* a cloud out of reach is the edge's normal life, not a fault */
}

static void eh_stop(ke_module *m)
{
    hub *h = ke_module_data(m);
    h->stopping = 1;
    uv_timer_stop(&h->timer);
    if (h->call)
        ke_rpc_call_cancel(h->call);
    if (h->renew)
        ke_rpc_call_cancel(h->renew);
}

static void free_hub(uv_handle_t *t)
{
    hub *h = t->data;
    digest_clear(&h->digest);
    free(h->renew_key);
    ke_rpc_session_cache_free(h->tls_cache);
    free(h);
}

static void eh_destroy(ke_module *m)
{
    hub *h = ke_module_data(m);
    ke_module_set_data(m, NULL);
    if (h->ch) {
        ke_rpc_channel_free(h->ch);
        h->ch = NULL;
    }
    uv_close((uv_handle_t *)&h->timer, free_hub);
}

const ke_module_ops edgehub_module = {
    .name = EH_MOD,
    .group = "hub",
    .start = eh_start,
    .on_message = eh_on_message,
    .health = eh_health,
    .stop = eh_stop,
    .destroy = eh_destroy,
};
