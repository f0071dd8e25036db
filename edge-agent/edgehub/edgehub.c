/*
 * edgehub.c — see edgehub.h.
 *
 * Threads: the hub's own thread runs the connection loop (connect, hello,
 * keepalives, dead-peer check, outbox pump, rotation, backoff); frames
 * from the cloud are handled on the rpc loop's threads (apply + ack),
 * which only touch MetaManager (thread-safe) and the connection state
 * below under eh->mu. Each connection has its own context, so callbacks of
 * an old stream never act on a new one.
 */
#include "edgehub.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_pki.h"
#include "ke_wire.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EH_MOD "edgehub"

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
    pthread_cond_t cv;
    pthread_t thread;
    int started, stopping, rotate_req, wake;
    unsigned seed;
    /* the current connection */
    uint64_t gen;
    ke_rpc_call *call;
    int closed, ready;
    uint64_t next_send, sent_upto, acked;
    int64_t last_rx_ms, keepalive_ms;
    ke_metric *m_connected, *m_reconnects, *m_rotations, *m_refused;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_until waits on eh->cv until the monotonic deadline; mu held. */
static void wait_until(edgehub *eh, int64_t deadline_ms)
{
    int64_t left = deadline_ms - mono_ms();
    if (left <= 0)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += left / 1000;
    until.tv_nsec += (left % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&eh->cv, &eh->mu, &until);
}

static void signal_locked(edgehub *eh)
{
    eh->wake = 1;
    pthread_cond_broadcast(&eh->cv);
}

/* ---- frames from the cloud (rpc threads) ---- */

static void send_edge_frame(ke_rpc_call *call, Ke__V1__EdgeFrame *f)
{
    ke_rpc_call_send(call, &f->base);
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

static void edge_on_message(edgehub *eh, ke_rpc_call *call, const Ke__V1__SequencedMessage *sm)
{
    int rc = metamanager_apply(eh->mm, sm->message);
    if (rc < 0) {
        ke_log_error(EH_MOD, "cannot apply seq=%llu resource=%s: %s; reconnecting",
                     (unsigned long long)sm->seq,
                     sm->message && sm->message->route ? sm->message->route->resource : "-",
                     ke_strerror(rc));
        ke_rpc_call_cancel(call);
        return;
    }
    Ke__V1__Ack ack = KE__V1__ACK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    ack.seq = sm->seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &ack;
    send_edge_frame(call, &f);
}

static void edge_on_refusal(edgehub *eh, conn_ctx *c, ke_rpc_call *call, const Ke__V1__Refusal *r)
{
    ke_log_warn(EH_MOD, "cloud refused report seq=%llu reason=\"%s\" fatal=%d",
                (unsigned long long)r->seq, r->reason, r->fatal);
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
        eh->last_rx_ms = mono_ms();
    pthread_mutex_unlock(&eh->mu);
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        edge_on_hello_ack(eh, c, f->hello_ack);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        edge_on_message(eh, call, f->message);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_ACK:
        on_upstream_acked(eh, c, f->ack->seq);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        edge_on_refusal(eh, c, call, f->refusal);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        ke_log_info(EH_MOD, "resync done updates=%u deletes=%u", f->resync_done->updates,
                    f->resync_done->deletes);
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
    ke_log_info(EH_MOD, "tunnel closed node=%s status=%s reason=\"%s\"", eh->node,
                ke_rpc_status_name(st->code), st->message);
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

static void send_keepalive(edgehub *eh)
{
    Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    k.time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_KEEPALIVE;
    f.keepalive = &k;
    send_edge_frame(eh->call, &f);
}

static int send_hello(edgehub *eh, ke_rpc_call *call)
{
    Ke__V1__DigestEntry **digest = NULL;
    size_t n = 0;
    int rc = metamanager_digest(eh->mm, &digest, &n);
    if (rc != 0)
        return rc;
    Ke__V1__Hello h = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.node_name = eh->node;
    h.agent_version = eh->version;
    h.digest = digest;
    h.n_digest = n;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &h;
    rc = ke_rpc_call_send(call, &f.base);
    metamanager_digest_free(digest, n);
    return rc;
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return not_after - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
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
        ke_log_warn(EH_MOD, "certificate renewal refused: %s: %s", ke_rpc_status_name(st.code),
                    st.message);
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
    eh->closed = eh->ready = 0;
    eh->keepalive_ms = eh->cfg.keepalive_ms;
    eh->last_rx_ms = mono_ms();
    pthread_mutex_unlock(&eh->mu);

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
    if (send_hello(eh, call) != 0)
        ke_rpc_call_cancel(call);

    int was_ready = 0;
    int64_t next_ka = mono_ms() + eh->keepalive_ms;
    /* When to rotate, from the certificate this connection uses. */
    int64_t left = cert_remaining_ms(eh);
    int64_t rotate_at = left == INT64_MAX ? INT64_MAX : mono_ms() + left - eh->cfg.renew_before_ms;
    pthread_mutex_lock(&eh->mu);
    while (!eh->closed && !eh->stopping) {
        int64_t now = mono_ms();
        if (now - eh->last_rx_ms > eh->cfg.dead_peer_ms) {
            ke_log_warn(EH_MOD, "cloud silent for %lld ms: reconnecting",
                        (long long)(now - eh->last_rx_ms));
            ke_rpc_call_cancel(call);
            break;
        }
        if (now >= next_ka) {
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
            rotate_at = mono_ms() + 60000; /* refused or failed: retry in a minute */
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
        int64_t until = mono_ms() + delay;
        while (!eh->stopping && mono_ms() < until)
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
    pthread_cond_init(&eh->cv, NULL);
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
    pthread_cond_destroy(&eh->cv);
    free(eh->node);
    free(eh->server);
    free(eh->ca);
    free(eh->cert);
    free(eh->key);
    free(eh->version);
    free(eh);
}
