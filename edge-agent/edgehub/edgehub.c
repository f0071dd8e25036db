/*
 * edgehub.c — see edgehub.h.
 *
 * Threads: the hub's own thread runs the connection loop (connect, hello,
 * keepalives, dead-peer check, outbox pump, rotation, backoff); frames
 * from the cloud are handled on the rpc loop's threads (apply + ack),
 * which only touch MetaManager (thread-safe) and the connection state
 * below under eh->mu. Each connection has its own context, so callbacks of
 * an old stream never act on a new one: a downstream message of an older
 * stream is dropped unapplied (eh->apply_mu makes "is it current? apply"
 * one step against the hub thread's barrier after each new generation).
 * That is what lets a tombstone go at the next ResyncDone.
 *
 * Connect: Hello with the first page of MetaManager's digest (at most
 * EH_DIGEST_CHUNK_ENTRIES entries, EH_DIGEST_CHUNK_BYTES bytes); when more
 * follow, digest_follows and DigestChunk frames, one page read from SQLite
 * at a time, the last with last = true. A send queue at its bound
 * (KE_EFULL) pauses the digest until on_drain; nothing is dropped. A node
 * whose digest fits one page sends a plain Hello, as before chunks.
 *
 * Clocks (ke_time.h): every timeout, keepalive, dead-peer check and
 * back-off is monotonic; wall time only for the certificate's validity
 * and the keepalive's informational time_ms.
 */
#include "edgehub.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_pki.h"
#include "ke_time.h"
#include "ke_wire.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EH_MOD "edgehub"

/* Digest entries per Hello or DigestChunk (api/cloudhub.proto). */
#define EH_DIGEST_CHUNK_ENTRIES METAMANAGER_DIGEST_PAGE
/* Bytes of entries per Hello or DigestChunk: under the 4 MiB message bound
 * with room for the frame, whatever the keys' lengths. */
#define EH_DIGEST_CHUNK_BYTES (3u << 20)

typedef struct conn_ctx {
    struct edgehub *eh;
    uint64_t gen;
} conn_ctx;

struct edgehub {
    edgehub_config cfg;
    char *node, *server, *ca, *cert, *key, *version;
    ke_rpc_loop *loop;
    metamanager *mm;
    pthread_mutex_t mu;
    pthread_mutex_t apply_mu; /* taken before mu, never while holding it */
    pthread_cond_t cv;
    pthread_t thread;
    int started, stopping, rotate_req, wake;
    unsigned seed;
    /* the current connection */
    uint64_t gen;
    ke_rpc_call *call;
    int closed, ready;
    int resync_done;     /* ResyncDone seen: collect the Hello's tombstones */
    uint64_t unsent_ack; /* a downstream ack the full send queue refused */
    uint64_t next_send, sent_upto, acked;
    int64_t last_rx_ms, keepalive_ms;
    ke_metric *m_connected, *m_reconnects, *m_rotations, *m_refused;
};

/* wait_until waits on eh->cv (a monotonic condition) until the monotonic
 * deadline; mu held. A timeout or an early wake-up both just return: the
 * caller re-checks its state. */
static void wait_until(edgehub *eh, int64_t deadline_ms)
{
    int64_t left = deadline_ms - ke_time_mono_ms();
    if (left <= 0)
        return;
    struct timespec until = ke_time_deadline(left);
    pthread_cond_timedwait(&eh->cv, &eh->mu, &until);
}

static void signal_locked(edgehub *eh)
{
    eh->wake = 1;
    pthread_cond_broadcast(&eh->cv);
}

/* ---- frames from the cloud (rpc threads) ---- */

static int send_edge_frame(ke_rpc_call *call, Ke__V1__EdgeFrame *f)
{
    return ke_rpc_call_send(call, &f->base);
}

/* send_ack acks every downstream seq up to seq. */
static int send_ack(ke_rpc_call *call, uint64_t seq)
{
    Ke__V1__Ack ack = KE__V1__ACK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    ack.seq = seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &ack;
    return send_edge_frame(call, &f);
}

static void on_upstream_acked(edgehub *eh, conn_ctx *c, uint64_t seq)
{
    metamanager_outbox_ack(eh->mm, seq);
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen && seq > eh->acked) {
        eh->acked = seq;
        signal_locked(eh);
    }
    pthread_mutex_unlock(&eh->mu);
}

static void edge_on_hello_ack(edgehub *eh, conn_ctx *c, const Ke__V1__HelloAck *a)
{
    uint64_t next = a->next_edge_seq ? a->next_edge_seq : 1;
    /* Everything below next reached the cloud before: drop it. */
    metamanager_outbox_ack(eh->mm, next - 1);
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen) {
        eh->ready = 1;
        eh->next_send = next;
        eh->sent_upto = next - 1;
        eh->acked = next - 1;
        if (a->keepalive_ms && a->keepalive_ms < eh->cfg.keepalive_ms)
            eh->keepalive_ms = a->keepalive_ms;
        signal_locked(eh);
    }
    pthread_mutex_unlock(&eh->mu);
    ke_metric_set(eh->m_connected, 1);
    ke_log_info(EH_MOD, "connected node=%s server=%s next_edge_seq=%llu", eh->node, eh->server,
                (unsigned long long)next);
}

static void edge_on_message(edgehub *eh, conn_ctx *c, ke_rpc_call *call,
                            const Ke__V1__SequencedMessage *sm)
{
    /* Checked and applied as one step against the barrier in
     * connect_once: once a newer stream exists, nothing of this one is
     * applied (it is unacked, so the cloud resends or resyncs it). */
    pthread_mutex_lock(&eh->apply_mu);
    pthread_mutex_lock(&eh->mu);
    int current = c->gen == eh->gen;
    pthread_mutex_unlock(&eh->mu);
    int rc = current ? metamanager_apply(eh->mm, sm->message) : 0;
    pthread_mutex_unlock(&eh->apply_mu);
    if (!current) {
        ke_log_debug(EH_MOD, "dropping seq=%llu of an older stream",
                     (unsigned long long)sm->seq);
        return;
    }
    if (rc < 0) {
        char er[KE_LOG_ESC_SIZE(256)];
        ke_log_error(EH_MOD, "cannot apply seq=%llu resource=\"%s\": %s; reconnecting",
                     (unsigned long long)sm->seq,
                     ke_log_esc(sm->message && sm->message->route ? sm->message->route->resource
                                                                 : "-",
                                er, sizeof(er)),
                     ke_strerror(rc));
        ke_rpc_call_cancel(call);
        return;
    }
    rc = send_ack(call, sm->seq);
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen) {
        if (rc == KE_EFULL) {
            /* Acks are cumulative: the hub thread sends the highest one
             * refused once the queue drains. */
            if (sm->seq > eh->unsent_ack)
                eh->unsent_ack = sm->seq;
            signal_locked(eh);
        } else if (rc == 0 && sm->seq >= eh->unsent_ack) {
            eh->unsent_ack = 0;
        }
    }
    pthread_mutex_unlock(&eh->mu);
    /* KE_ECLOSED: the stream is ending; the message is resent or resynced
     * on the next one. */
}

/* edge_on_resync_done: the cloud has answered this stream's Hello. The
 * hub thread collects the tombstones that existed when it was sent. */
static void edge_on_resync_done(edgehub *eh, conn_ctx *c, const Ke__V1__ResyncDone *rd)
{
    ke_log_info(EH_MOD, "resync done updates=%u deletes=%u", rd->updates, rd->deletes);
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen) {
        eh->resync_done = 1;
        signal_locked(eh);
    }
    pthread_mutex_unlock(&eh->mu);
}

static void edge_on_refusal(edgehub *eh, conn_ctx *c, ke_rpc_call *call, const Ke__V1__Refusal *r)
{
    char er[KE_LOG_ESC_SIZE(256)];
    ke_log_warn(EH_MOD, "cloud refused report seq=%llu reason=\"%s\" fatal=%d",
                (unsigned long long)r->seq, ke_log_esc(r->reason, er, sizeof(er)), r->fatal);
    ke_metric_add(eh->m_refused, 1);
    on_upstream_acked(eh, c, r->seq); /* the cloud's final word on that report */
    if (r->fatal)
        ke_rpc_call_cancel(call);
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    conn_ctx *c = ud;
    edgehub *eh = c->eh;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen)
        eh->last_rx_ms = ke_time_mono_ms();
    pthread_mutex_unlock(&eh->mu);
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        edge_on_hello_ack(eh, c, f->hello_ack);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        edge_on_message(eh, c, call, f->message);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_ACK:
        on_upstream_acked(eh, c, f->ack->seq);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        edge_on_refusal(eh, c, call, f->refusal);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        edge_on_resync_done(eh, c, f->resync_done);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_KEEPALIVE:
        break;
    default:
        ke_log_warn(EH_MOD, "ignoring an empty or unknown frame from the cloud");
        break;
    }
}

static void on_drain(ke_rpc_call *call, void *ud)
{
    (void)call;
    conn_ctx *c = ud;
    pthread_mutex_lock(&c->eh->mu);
    if (c->gen == c->eh->gen)
        signal_locked(c->eh);
    pthread_mutex_unlock(&c->eh->mu);
}

static void on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    conn_ctx *c = ud;
    edgehub *eh = c->eh;
    char em[KE_LOG_ESC_SIZE(sizeof(st->message))];
    ke_log_info(EH_MOD, "tunnel closed node=%s status=%s reason=\"%s\"", eh->node,
                ke_rpc_status_name(st->code), ke_log_esc(st->message, em, sizeof(em)));
    pthread_mutex_lock(&eh->mu);
    if (c->gen == eh->gen) {
        ke_metric_set(eh->m_connected, 0);
        eh->closed = 1;
        eh->ready = 0;
        signal_locked(eh);
    }
    /* Last touch of eh: once the hub thread sees `closed` it may return and
     * edgehub_free may run. */
    pthread_mutex_unlock(&eh->mu);
    free(c);
}

static const ke_rpc_handler tunnel_handler = {
    .on_message = on_message, .on_drain = on_drain, .on_close = on_close};

/* ---- the connection thread ---- */

typedef struct pump_ctx {
    ke_rpc_call *call;
    uint64_t last;
    int full;
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
    if (rc != 0) {
        p->full = 1;
        return 1;
    }
    p->last = seq;
    return 0;
}

/* pump sends queued reports after sent_upto, within the window. mu held;
 * released around the store read. */
static void pump(edgehub *eh)
{
    uint64_t inflight = eh->sent_upto > eh->acked ? eh->sent_upto - eh->acked : 0;
    if (!eh->ready || inflight >= eh->cfg.window)
        return;
    pump_ctx p = {eh->call, 0, 0};
    uint64_t from = eh->sent_upto + 1;
    size_t room = eh->cfg.window - (size_t)inflight;
    pthread_mutex_unlock(&eh->mu);
    metamanager_outbox_scan(eh->mm, from, room, pump_one, &p);
    pthread_mutex_lock(&eh->mu);
    if (p.last > eh->sent_upto)
        eh->sent_upto = p.last;
}

/* send_keepalive: time_ms is wall time, informational only (nothing is
 * timed by it). A keepalive refused by a full send queue is not retried:
 * the frames ahead of it keep the cloud's dead-peer timer fed, and the
 * next period sends another. */
static void send_keepalive(edgehub *eh)
{
    Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    k.time_ms = ke_time_wall_ms();
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_KEEPALIVE;
    f.keepalive = &k;
    int rc = send_edge_frame(eh->call, &f);
    if (rc != 0 && rc != KE_EFULL && rc != KE_ECLOSED)
        ke_log_warn(EH_MOD, "keepalive not sent: %s", ke_strerror(rc));
}

/* send_hello sends the Hello with the digest's first page; follows says
 * DigestChunk frames come after it. */
static int send_hello(edgehub *eh, ke_rpc_call *call, Ke__V1__DigestEntry **page, size_t n,
                      int follows)
{
    Ke__V1__Hello h = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.node_name = eh->node;
    h.agent_version = eh->version;
    h.digest = page;
    h.n_digest = n;
    h.digest_follows = follows;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &h;
    return send_edge_frame(call, &f);
}

/* send_digest_chunk sends one more page of the digest; last ends it. */
static int send_digest_chunk(ke_rpc_call *call, Ke__V1__DigestEntry **page, size_t n, int last)
{
    Ke__V1__DigestChunk d = KE__V1__DIGEST_CHUNK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    d.entries = page;
    d.n_entries = n;
    d.last = last;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK;
    f.digest_chunk = &d;
    return send_edge_frame(call, &f);
}

/* The digest of one connection, sent page by page. */
typedef enum { DIGEST_HELLO, DIGEST_CHUNKS, DIGEST_SENT } digest_stage;

typedef struct digest_sender {
    digest_stage stage;
    char *after;                 /* last key sent; NULL before the first page */
    Ke__V1__DigestEntry **page;  /* read but not yet sent (KE_EFULL) */
    size_t n;
    int loaded, more;
} digest_sender;

static void digest_sender_clear(digest_sender *d)
{
    metamanager_digest_free(d->page, d->n);
    free(d->after);
    memset(d, 0, sizeof(*d));
}

/* digest_send sends as much of the digest as the send queue takes: 0 when
 * all of it is sent, KE_EFULL to go on after on_drain, or an error (the
 * connection is then dropped). Hub thread, mu released. */
static int digest_send(edgehub *eh, ke_rpc_call *call, digest_sender *d)
{
    while (d->stage != DIGEST_SENT) {
        if (!d->loaded) {
            int rc = metamanager_digest_page(eh->mm, d->after, EH_DIGEST_CHUNK_ENTRIES,
                                             EH_DIGEST_CHUNK_BYTES, &d->page, &d->n, &d->more);
            if (rc != 0)
                return rc;
            d->loaded = 1;
        }
        int rc = d->stage == DIGEST_HELLO ? send_hello(eh, call, d->page, d->n, d->more)
                                          : send_digest_chunk(call, d->page, d->n, !d->more);
        if (rc != 0)
            return rc; /* KE_EFULL: the same page again after on_drain */
        if (d->n > 0) {
            char *after = strdup(d->page[d->n - 1]->key);
            if (!after)
                return KE_ENOMEM;
            free(d->after);
            d->after = after;
        }
        metamanager_digest_free(d->page, d->n);
        d->page = NULL;
        d->n = 0;
        d->loaded = 0;
        d->stage = d->more ? DIGEST_CHUNKS : DIGEST_SENT;
    }
    return 0;
}

/* cert_remaining_ms returns how long the node certificate stays valid. */
static int64_t cert_remaining_ms(edgehub *eh)
{
    char *pem = NULL;
    int64_t not_after = 0;
    if (ke_pki_read_file(eh->cert, &pem, NULL) != 0)
        return INT64_MAX;
    int rc = ke_pki_cert_info(pem, NULL, 0, NULL, &not_after);
    free(pem);
    if (rc != 0)
        return INT64_MAX;
    return not_after - ke_time_wall_ms(); /* validity is wall time */
}

/* rotate gets a new key and certificate through Renew on ch and writes
 * them. Runs on the hub thread with mu released. */
static int rotate(edgehub *eh, ke_rpc_channel *ch)
{
    char *key = NULL, *csr = NULL;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st = {0};
    int rc = ke_pki_key_create(&key);
    if (rc == 0)
        rc = ke_pki_csr_create(key, eh->node, &csr);
    if (rc == 0) {
        Ke__V1__RenewRequest req = KE__V1__RENEW_REQUEST__INIT;
        req.csr_pem.data = (uint8_t *)csr;
        req.csr_pem.len = strlen(csr);
        ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
        ke_rpc_call_opts o = {.timeout_ms = 15000};
        rc = ke_rpc_stub_unary(&stub, "Renew", &req.base, &o, &reply, &st);
    }
    if (rc == 0 && st.code != KE_RPC_OK) {
        char em[KE_LOG_ESC_SIZE(sizeof(st.message))];
        ke_log_warn(EH_MOD, "certificate renewal refused: %s: \"%s\"",
                    ke_rpc_status_name(st.code), ke_log_esc(st.message, em, sizeof(em)));
        rc = KE_EPERM;
    }
    if (rc == 0) {
        Ke__V1__JoinResponse *r = (Ke__V1__JoinResponse *)reply;
        /* Key first: a crash between the two writes leaves a key without its
         * certificate, which the next start reports; never the reverse. */
        rc = ke_pki_write_file(eh->key, key, strlen(key), 0600);
        if (rc == 0)
            rc = ke_pki_write_file(eh->cert, r->certificate_pem.data, r->certificate_pem.len,
                                   0644);
        if (rc == 0) {
            ke_metric_add(eh->m_rotations, 1);
            ke_log_info(EH_MOD, "certificate rotated node=%s not_after_ms=%lld", eh->node,
                        (long long)r->not_after_ms);
        }
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    free(key);
    free(csr);
    return rc;
}

/* connect_once runs one connection until it ends; returns 1 when the
 * stream got as far as HelloAck. */
static int connect_once(edgehub *eh)
{
    ke_rpc_tls tls = {.ca_file = eh->ca, .cert_file = eh->cert, .key_file = eh->key};
    ke_rpc_channel_opts co = {.tls = &tls, .max_message_bytes = 16u << 20};
    ke_rpc_channel *ch = NULL;
    if (ke_rpc_channel_new(eh->loop, eh->server, &co, &ch) != 0) {
        ke_log_error(EH_MOD, "cannot load the node's TLS files ca=%s cert=%s key=%s", eh->ca,
                     eh->cert, eh->key);
        return 0;
    }
    conn_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        ke_rpc_channel_free(ch);
        return 0;
    }
    pthread_mutex_lock(&eh->mu);
    c->eh = eh;
    c->gen = ++eh->gen;
    eh->closed = eh->ready = eh->resync_done = 0;
    eh->unsent_ack = 0;
    eh->keepalive_ms = eh->cfg.keepalive_ms;
    eh->last_rx_ms = ke_time_mono_ms();
    pthread_mutex_unlock(&eh->mu);
    /* Barrier: an older stream's message being applied now finishes, and
     * every later one sees the new generation and is dropped. So nothing
     * written after the mark comes from an older stream, and the Hello's
     * tombstones (at or below the mark) can go at this stream's
     * ResyncDone. */
    pthread_mutex_lock(&eh->apply_mu);
    pthread_mutex_unlock(&eh->apply_mu);
    uint64_t tomb_mark = metamanager_tombstone_mark(eh->mm);

    ke_rpc_call *call = NULL;
    ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
    if (ke_rpc_stub_start(&stub, "Tunnel", &tunnel_handler, c, NULL, &call) != 0) {
        free(c);
        ke_rpc_channel_free(ch);
        return 0;
    }
    pthread_mutex_lock(&eh->mu);
    eh->call = call;
    pthread_mutex_unlock(&eh->mu);

    digest_sender digest = {0};
    int was_ready = 0;
    int64_t next_ka = ke_time_mono_ms() + eh->keepalive_ms;
    /* When to rotate, from the certificate this connection uses. */
    int64_t left = cert_remaining_ms(eh);
    int64_t rotate_at =
        left == INT64_MAX ? INT64_MAX : ke_time_mono_ms() + left - eh->cfg.renew_before_ms;
    pthread_mutex_lock(&eh->mu);
    while (!eh->closed && !eh->stopping) {
        if (digest.stage != DIGEST_SENT) {
            pthread_mutex_unlock(&eh->mu);
            int rc = digest_send(eh, call, &digest);
            pthread_mutex_lock(&eh->mu);
            if (rc == KE_ECLOSED)
                break; /* the stream ended (cloud unreachable): its close is logged */
            if (rc != 0 && rc != KE_EFULL) {
                ke_log_error(EH_MOD, "cannot send the digest: %s; reconnecting",
                             ke_strerror(rc));
                ke_rpc_call_cancel(call);
                break;
            }
        }
        if (eh->resync_done) {
            eh->resync_done = 0;
            pthread_mutex_unlock(&eh->mu);
            size_t collected = 0;
            int rc = metamanager_tombstones_collect(eh->mm, tomb_mark, &collected);
            if (rc != 0)
                ke_log_warn(EH_MOD, "tombstone collection stopped: %s (retried after the next "
                                    "resync)", ke_strerror(rc));
            else if (collected > 0)
                ke_log_info(EH_MOD, "tombstones collected count=%zu", collected);
            pthread_mutex_lock(&eh->mu);
        }
        if (eh->unsent_ack) {
            uint64_t seq = eh->unsent_ack;
            int rc = send_ack(call, seq);
            if (rc == 0 && eh->unsent_ack == seq)
                eh->unsent_ack = 0;
        }
        int64_t now = ke_time_mono_ms();
        if (now - eh->last_rx_ms > eh->cfg.dead_peer_ms) {
            ke_log_warn(EH_MOD, "cloud silent for %lld ms: reconnecting",
                        (long long)(now - eh->last_rx_ms));
            ke_rpc_call_cancel(call);
            break;
        }
        if (now >= next_ka && digest.stage != DIGEST_HELLO) {
            send_keepalive(eh);
            next_ka = now + eh->keepalive_ms;
        }
        was_ready |= eh->ready;
        if (eh->ready && (eh->rotate_req || now >= rotate_at)) {
            eh->rotate_req = 0;
            pthread_mutex_unlock(&eh->mu);
            int rc = rotate(eh, ch);
            pthread_mutex_lock(&eh->mu);
            if (rc == 0) {
                /* Reconnect with the new certificate; whatever is in flight
                 * is resent or resynced on the new stream. */
                ke_rpc_call_cancel(call);
                break;
            }
            rotate_at = ke_time_mono_ms() + 60000; /* refused or failed: retry in a minute */
        }
        pump(eh);
        if (eh->wake) {
            eh->wake = 0;
            continue;
        }
        int64_t deadline = next_ka < eh->last_rx_ms + eh->cfg.dead_peer_ms + 1
                               ? next_ka
                               : eh->last_rx_ms + eh->cfg.dead_peer_ms + 1;
        wait_until(eh, deadline);
    }
    if (eh->stopping && !eh->closed)
        ke_rpc_call_cancel(call);
    while (!eh->closed)
        pthread_cond_wait(&eh->cv, &eh->mu);
    eh->call = NULL;
    eh->ready = 0;
    pthread_mutex_unlock(&eh->mu);
    digest_sender_clear(&digest);
    ke_rpc_call_unref(call);
    ke_rpc_channel_free(ch);
    return was_ready;
}

static void *hub_main(void *arg)
{
    edgehub *eh = arg;
    int64_t backoff = eh->cfg.backoff_initial_ms;
    int attempts = 0;
    for (;;) {
        pthread_mutex_lock(&eh->mu);
        int stop = eh->stopping;
        pthread_mutex_unlock(&eh->mu);
        if (stop)
            break;
        if (attempts++ > 0)
            ke_metric_add(eh->m_reconnects, 1);
        if (connect_once(eh))
            backoff = eh->cfg.backoff_initial_ms;
        /* Jittered exponential backoff: a uniform wait in [backoff/2, backoff]. */
        int64_t delay = backoff / 2 + (int64_t)(rand_r(&eh->seed) % (unsigned)(backoff / 2 + 1));
        pthread_mutex_lock(&eh->mu);
        int64_t until = ke_time_mono_ms() + delay;
        while (!eh->stopping && ke_time_mono_ms() < until)
            wait_until(eh, until);
        pthread_mutex_unlock(&eh->mu);
        ke_log_debug(EH_MOD, "reconnecting after %lld ms", (long long)delay);
        backoff = backoff * 2 > eh->cfg.backoff_max_ms ? eh->cfg.backoff_max_ms : backoff * 2;
    }
    return NULL;
}

int edgehub_new(const edgehub_config *cfg, ke_rpc_loop *loop, metamanager *mm, edgehub **out)
{
    if (!cfg || !cfg->node_name || !cfg->server || !cfg->ca_file || !cfg->cert_file ||
        !cfg->key_file || !loop || !mm)
        return KE_EINVAL;
    edgehub *eh = calloc(1, sizeof(*eh));
    if (!eh)
        return KE_ENOMEM;
    eh->cfg = *cfg;
    eh->node = strdup(cfg->node_name);
    eh->server = strdup(cfg->server);
    eh->ca = strdup(cfg->ca_file);
    eh->cert = strdup(cfg->cert_file);
    eh->key = strdup(cfg->key_file);
    eh->version = strdup(cfg->agent_version ? cfg->agent_version : "");
    if (!eh->node || !eh->server || !eh->ca || !eh->cert || !eh->key || !eh->version) {
        edgehub_free(eh);
        return KE_ENOMEM;
    }
    if (eh->cfg.keepalive_ms <= 0)
        eh->cfg.keepalive_ms = 5000;
    if (eh->cfg.dead_peer_ms <= 0)
        eh->cfg.dead_peer_ms = 3 * eh->cfg.keepalive_ms;
    if (eh->cfg.backoff_initial_ms <= 0)
        eh->cfg.backoff_initial_ms = 500;
    if (eh->cfg.backoff_max_ms < eh->cfg.backoff_initial_ms)
        eh->cfg.backoff_max_ms = 30000;
    if (eh->cfg.renew_before_ms <= 0)
        eh->cfg.renew_before_ms = 30LL * 24 * 3600 * 1000;
    if (!eh->cfg.window)
        eh->cfg.window = 256;
    eh->loop = loop;
    eh->mm = mm;
    eh->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    pthread_mutex_init(&eh->mu, NULL);
    pthread_mutex_init(&eh->apply_mu, NULL);
    int prc = ke_time_cond_init(&eh->cv);
    if (prc != 0) {
        ke_log_error(EH_MOD, "cannot make a monotonic condition variable: %s", strerror(prc));
        pthread_mutex_destroy(&eh->apply_mu);
        pthread_mutex_destroy(&eh->mu);
        free(eh->node);
        free(eh->server);
        free(eh->ca);
        free(eh->cert);
        free(eh->key);
        free(eh->version);
        free(eh);
        return KE_ENOMEM;
    }
    ke_metrics_gauge_new("ke_edgehub_connected", "1 while the tunnel to CloudHub is up", NULL,
                         &eh->m_connected);
    ke_metrics_counter_new("ke_edgehub_reconnects_total", "tunnel reconnect attempts", NULL,
                           &eh->m_reconnects);
    ke_metrics_counter_new("ke_edgehub_certificate_rotations_total", "node certificates renewed",
                           NULL, &eh->m_rotations);
    ke_metrics_counter_new("ke_edgehub_refused_reports_total", "reports the cloud refused", NULL,
                           &eh->m_refused);
    *out = eh;
    return 0;
}

int edgehub_start(edgehub *eh)
{
    if (pthread_create(&eh->thread, NULL, hub_main, eh) != 0)
        return KE_ENOMEM;
    pthread_setname_np(eh->thread, "ke-edgehub");
    eh->started = 1;
    return 0;
}

void edgehub_notify(edgehub *eh)
{
    pthread_mutex_lock(&eh->mu);
    signal_locked(eh);
    pthread_mutex_unlock(&eh->mu);
}

void edgehub_rotate(edgehub *eh)
{
    pthread_mutex_lock(&eh->mu);
    eh->rotate_req = 1;
    signal_locked(eh);
    pthread_mutex_unlock(&eh->mu);
}

int edgehub_connected(edgehub *eh)
{
    pthread_mutex_lock(&eh->mu);
    int r = eh->ready;
    pthread_mutex_unlock(&eh->mu);
    return r;
}

void edgehub_free(edgehub *eh)
{
    if (!eh)
        return;
    if (eh->started) {
        pthread_mutex_lock(&eh->mu);
        eh->stopping = 1;
        signal_locked(eh);
        pthread_mutex_unlock(&eh->mu);
        pthread_join(eh->thread, NULL);
    }
    /* A tunnel's on_close may still be leaving eh->mu (its last touch of
     * eh): take the lock once so it has. */
    pthread_mutex_lock(&eh->mu);
    pthread_mutex_unlock(&eh->mu);
    pthread_mutex_destroy(&eh->mu);
    pthread_mutex_destroy(&eh->apply_mu);
    pthread_cond_destroy(&eh->cv);
    free(eh->node);
    free(eh->server);
    free(eh->ca);
    free(eh->cert);
    free(eh->key);
    free(eh->version);
    free(eh);
}
