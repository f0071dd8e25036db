/*
 * tunnel.c — the Tunnel stream: one per edge node, mutual TLS, the node
 * being its certificate's CN. One function per frame type:
 *
 *   tunnel_on_hello      starts the digest (the Hello's own entries); when
 *                        nothing follows, completes it at once
 *   tunnel_on_digest_chunk  more digest entries (bounded); the last one
 *                        completes it
 *   (hello_complete)     registers the stream, answers HelloAck, queues the
 *                        difference between the node's objects and the
 *                        digest (updates and deletes), then ResyncDone
 *   tunnel_on_message    an upstream report: node authorization, dedup by
 *                        sequence number, then in one transaction the next
 *                        expected seq and the durable upstream log entry;
 *                        acked only after the commit; consumers woken.
 *                        While the node has cfg.uplog_node_window entries in
 *                        the log, its reports are held back in memory,
 *                        unacked, and logged as consumers make room
 *                        (ch_tunnel_undefer): one node's flood then sits
 *                        ahead of another node's report by at most a window
 *   tunnel_on_ack        the edge applied everything up to seq: collect
 *                        acked tombstones, send more
 *   tunnel_on_keepalive  liveness; answered with a keepalive (a slot)
 *   log_chunk            a piece of a Hub.Logs stream: relayed to its
 *                        caller (logs.c); not sequenced, not acked
 *   service_response     the answer to a Hub.ProxyHTTP call: ends it
 *                        (service.c); not sequenced, not acked
 *
 * Admission control: at most cfg.hello_concurrency streams between their
 * Hello and the end of their resync; a Hello past it gets a fatal Refusal
 * with retry_after_ms (see "admission control" below, docs/tunnel.md).
 *
 * A stream must complete its Hello within cfg.hello_timeout_ms: the rpc
 * layer closes one that sends no first frame (the method's open timeout),
 * and ch_tunnel_reap (from the reaper) one whose digest stays open.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tunnel_conn {
    cloudhub *ch;
    ke_rpc_call *call;       /* valid until on_close, which disarms the timer */
    ke_wheel_timer hello_timer; /* on ch->hello_wheel until the Hello completes */
    char node[CH_NODE_NAME_MAX];
    int hello;               /* a Hello was received */
    int ended;               /* refused by admission control: frames ignored */
    int admitted;            /* holds an admission slot (until hello_complete) */
    int64_t admit_start;     /* monotonic ms of its admission */
    /* the digest being received (Hello, then DigestChunks) */
    int digest_open;
    ke_map *digest;          /* key -> uint64_t rv (malloc'd) */
    size_t digest_n;         /* entries received (counts against the bounds) */
    char agent_version[64];
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
    char cur[65], prev[65];
    ke_rpc_identity id;
    int rc = ke_rpc_call_identity(call, &id); /* TLS verified the chain */
    if (rc != 0 || id.kind != KE_RPC_ID_CERT) {
        snprintf(why, whylen, rc == 0 || rc == KE_ETLS
                                  ? "a client certificate from the cluster CA is required"
                                  : "unreadable client certificate");
        return KE_RPC_UNAUTHENTICATED;
    }
    /* "system:node:<name>", or a bare "<name>" from before node naming */
    size_t pl = strlen(CLOUDHUB_NODE_CN_PREFIX);
    const char *name = strncmp(id.user, CLOUDHUB_NODE_CN_PREFIX, pl) == 0 ? id.user + pl : id.user;
    if (strlen(name) >= len) {
        snprintf(why, whylen, "client certificate: not a node certificate");
        return KE_RPC_PERMISSION_DENIED;
    }
    snprintf(node, len, "%s", name);
    const char *fp = id.fingerprint;
    ch_lock(ch);
    rc = ch_store_node_get(ch, node, cur, prev, NULL);
    pthread_mutex_unlock(&ch->mu);
    if (rc == KE_ENOTFOUND) {
        snprintf(why, whylen, "node %s is not registered (never joined, or removed): run keadm join",
                 node);
        return KE_RPC_PERMISSION_DENIED;
    }
    if (rc != 0) {
        snprintf(why, whylen, "node registry unavailable");
        return KE_RPC_INTERNAL;
    }
    if (strcmp(fp, cur) != 0 && strcmp(fp, prev) != 0) {
        snprintf(why, whylen, "this certificate is no longer the one issued to node %s: "
                              "run keadm join again", node);
        return KE_RPC_PERMISSION_DENIED;
    }
    return KE_RPC_OK;
}

int cloudhub_node_cert_matches(void *hub, const char *node, const char *fingerprint)
{
    cloudhub *ch = hub;
    char cur[65], prev[65];
    if (!node || strlen(node) >= CH_NODE_NAME_MAX || !fingerprint || !*fingerprint)
        return 0;
    ch_lock(ch);
    int rc = ch_store_node_get(ch, node, cur, prev, NULL);
    pthread_mutex_unlock(&ch->mu);
    if (rc == KE_ENOTFOUND)
        return 0;
    if (rc != 0)
        return KE_EDB;
    return strcmp(fingerprint, cur) == 0 || strcmp(fingerprint, prev) == 0;
}

static void refuse(cloudhub *ch, ke_rpc_call *call, const char *node, int code, const char *why)
{
    char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ew[KE_LOG_ESC_SIZE(300)];
    ke_log_warn(CH_MOD, "refused tunnel node=%s code=%s reason=\"%s\"",
                ke_log_esc(node, en, sizeof(en)), ke_rpc_status_name(code),
                ke_log_esc(why, ew, sizeof(ew)));
    ke_metric_add(ch->m.refused, 1);
    ke_rpc_call_finish(call, code, why, NULL);
}

void ch_node_disconnect(cloudhub *ch, ch_node *n, int code, const char *why)
{
    if (!n->stream)
        return;
    /* Acks owed go before the end: the edge then forgets what is stored. */
    ch_control_flush(ch, n);
    if (ke_rpc_call_finish(n->stream, code, why, NULL) != 0)
        ke_rpc_call_cancel(n->stream);
}

/* send_refusal tells the edge a report is refused for good. */
static void send_refusal(ke_rpc_call *call, uint64_t seq, const char *reason, int fatal)
{
    Ke__V1__Refusal r = KE__V1__REFUSAL__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    r.seq = seq;
    r.reason = (char *)reason;
    r.fatal = fatal;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_REFUSAL;
    f.refusal = &r;
    /* Dropping it on a full queue is safe: next_edge_seq is already past
     * seq, so when the edge resends it after a reconnect it is acked as a
     * duplicate and leaves the outbox all the same. */
    if (ke_rpc_call_send(call, &f.base) != 0)
        ke_log_debug(CH_MOD, "refusal not sent seq=%llu (stream full or ending)",
                     (unsigned long long)seq);
}

/* ---- the digest: Hello, then DigestChunks ---- */

static int digest_value_free(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
    return 0;
}

/* digest_drop frees the digest in progress and returns its entries to the
 * hub-wide bound. ch->mu held. */
static void digest_drop(cloudhub *ch, tunnel_conn *c)
{
    if (c->digest) {
        ke_map_each(c->digest, digest_value_free, NULL);
        ke_map_free(c->digest);
        c->digest = NULL;
    }
    ch->digest_held -= c->digest_n;
    c->digest_n = 0;
    c->digest_open = 0;
}

/* digest_add adds entries to the digest in progress: KE_RPC_OK, or
 * RESOURCE_EXHAUSTED with why filled past a bound (or out of memory).
 * ch->mu held. */
static int digest_add(cloudhub *ch, tunnel_conn *c, Ke__V1__DigestEntry *const *entries,
                      size_t n, char *why, size_t whylen)
{
    if (c->digest_n + n > CH_DIGEST_MAX) {
        snprintf(why, whylen, "digest: more than %u entries", CH_DIGEST_MAX);
        return KE_RPC_RESOURCE_EXHAUSTED;
    }
    if (ch->digest_held + n > CH_DIGEST_HUB_MAX) {
        snprintf(why, whylen, "digest: cloudhub holds %u digest entries of connecting nodes "
                              "already; retry later",
                 CH_DIGEST_HUB_MAX);
        return KE_RPC_RESOURCE_EXHAUSTED;
    }
    c->digest_n += n;
    ch->digest_held += n;
    for (size_t i = 0; i < n; i++) {
        uint64_t *rv = malloc(sizeof(*rv)), *old = NULL;
        if (!rv || ke_map_put(c->digest, entries[i]->key, rv, (void **)&old) != 0) {
            free(rv);
            snprintf(why, whylen, "cloudhub is out of memory");
            return KE_RPC_RESOURCE_EXHAUSTED;
        }
        *rv = entries[i]->resource_version;
        free(old);
    }
    return KE_RPC_OK;
}

/* ---- resync: the node's objects against the edge's digest ---- */

typedef struct resync {
    cloudhub *ch;
    ch_node *n;
    ke_map *digest; /* key -> uint64_t rv */
    uint32_t updates, deletes;
    ch_sent_delete *gone; /* tombstones of keys the edge does not hold */
    size_t n_gone, cap_gone;
    int full;
} resync;

/* resync_forget notes a tombstone the edge has no key for: it has nothing
 * left to do, so the row goes (after the scan). Out of memory it stays,
 * harmlessly, until a later resync. */
static void resync_forget(resync *r, const char *key, uint64_t rv)
{
    if (r->n_gone == r->cap_gone) {
        size_t cap = r->cap_gone ? r->cap_gone * 2 : 64;
        ch_sent_delete *g = realloc(r->gone, cap * sizeof(*g));
        if (!g)
            return;
        r->gone = g;
        r->cap_gone = cap;
    }
    r->gone[r->n_gone].rv = rv;
    if ((r->gone[r->n_gone].key = strdup(key)) != NULL)
        r->n_gone++;
}

static int resync_object(const char *key, uint64_t rv, int deleted, const void *msg, size_t len,
                         void *arg)
{
    resync *r = arg;
    uint64_t *have = ke_map_del(r->digest, key);
    uint64_t have_rv = have ? *have : 0;
    free(have);
    int send = deleted ? (have && have_rv <= rv) : (!have || have_rv < rv);
    if (deleted && !have)
        resync_forget(r, key, rv);
    if (!send)
        return 0;
    if (ch_queue_push(r->ch, r->n, key, rv, msg, len, deleted, 0) != 0) {
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
    const uint64_t *rv = value;
    if (ch_queue_push(r->ch, r->n, key, *rv, NULL, 0, 1, 1) != 0) {
        r->full = 1;
        return 1;
    }
    r->deletes++;
    return 0;
}

/* resync_drop_gone removes the tombstones the edge had no key for, in one
 * transaction; on error they stay (collected at a later resync). */
static void resync_drop_gone(resync *r)
{
    if (!r->n_gone)
        return;
    int rc = ke_sqlite_begin(r->ch->db);
    for (size_t i = 0; rc == 0 && i < r->n_gone; i++)
        rc = ch_store_tombstone_drop(r->ch, r->gone[i].key, r->gone[i].rv);
    if (rc == 0)
        rc = ke_sqlite_commit(r->ch->db);
    else
        ke_sqlite_rollback(r->ch->db);
    if (rc == 0)
        ke_metric_add(r->ch->m.tombstones_collected, (int64_t)r->n_gone);
    else
        ke_log_warn(CH_MOD, "cannot remove tombstones the node does not hold node=%s n=%zu",
                    r->n->name, r->n_gone);
}

/* ---- admission control ----
 *
 * At most cfg.hello_concurrency streams are between their Hello and the end
 * of their resync at once: a slot held by the tunnel_conn while its digest
 * arrives, then by its ch_node until the edge has acked every message sent
 * before ResyncDone (at once when there was none), or the stream ends.
 * A Hello past the bound gets a fatal Refusal with retry_after_ms and the
 * stream ends with RESOURCE_EXHAUSTED. retry_after spreads a storm: refused
 * streams are handed successive retry slots one admission interval apart
 * (the moving average of Hello -> resync acked over the bound, at least
 * CH_ADMIT_INTERVAL_MIN_US: a retry costs a TLS handshake first), so the
 * k-th refused node comes back about k intervals from now, plus up to a
 * quarter more of jitter. */

static void admit_gauge(cloudhub *ch)
{
    ke_metric_set(ch->m.hello_admitting, ch->admitting);
}

/* admit_retry_after: the wait for a stream refused now. ch->mu held. */
static uint32_t admit_retry_after(cloudhub *ch, int64_t now_ms)
{
    int64_t interval = ch->admit_est_us / (int64_t)ch->cfg.hello_concurrency;
    if (interval < CH_ADMIT_INTERVAL_MIN_US)
        interval = CH_ADMIT_INTERVAL_MIN_US;
    int64_t now_us = now_ms * 1000;
    if (ch->retry_slot_us < now_us)
        ch->retry_slot_us = now_us;
    ch->retry_slot_us += interval;
    if (ch->retry_slot_us - now_us > (int64_t)CH_RETRY_AFTER_MAX_MS * 1000)
        ch->retry_slot_us = now_us + (int64_t)CH_RETRY_AFTER_MAX_MS * 1000;
    int64_t base = (ch->retry_slot_us - now_us) / 1000;
    int64_t ms = base + (int64_t)(rand_r(&ch->admit_seed) % (unsigned)(base / 4 + 1));
    if (ms < CH_RETRY_AFTER_MIN_MS)
        ms = CH_RETRY_AFTER_MIN_MS + (int64_t)(rand_r(&ch->admit_seed) % CH_RETRY_AFTER_MIN_MS);
    if (ms > CH_RETRY_AFTER_MAX_MS)
        ms = CH_RETRY_AFTER_MAX_MS;
    return (uint32_t)ms;
}

void ch_tunnel_resync_end(cloudhub *ch, ch_node *n, int sent)
{
    if (!n->resyncing)
        return;
    n->resyncing = 0;
    n->resync_end_seq = 0;
    ch->admitting--;
    admit_gauge(ch);
    if (sent) {
        int64_t us = (ke_time_mono_ms() - n->resync_start_mono) * 1000;
        ch->admit_est_us += (us - ch->admit_est_us) / 8;
        if (ch->admit_est_us < 1000)
            ch->admit_est_us = 1000;
    }
}

/* admit_refuse ends a stream whose Hello is past the bound: a fatal
 * Refusal carrying retry_after_ms, then RESOURCE_EXHAUSTED. ch->mu NOT
 * held. */
static void admit_refuse(cloudhub *ch, tunnel_conn *c, ke_rpc_call *call, uint32_t admitting,
                         uint32_t retry_after)
{
    char why[200];
    snprintf(why, sizeof(why), "cloudhub is admitting %u nodes (cloudhub.hello_concurrency=%u): "
                               "retry after %u ms",
             admitting, ch->cfg.hello_concurrency, retry_after);
    ke_log_info(CH_MOD, "hello refused by admission control node=%s admitting=%u "
                        "retry_after_ms=%u", c->node, admitting, retry_after);
    ke_metric_add(ch->m.hello_refused, 1);
    Ke__V1__Refusal r = KE__V1__REFUSAL__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    r.reason = why;
    r.fatal = 1;
    r.retry_after_ms = retry_after;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_REFUSAL;
    f.refusal = &r;
    c->ended = 1;
    /* The queue is empty before a HelloAck: only a closed call refuses it,
     * and then there is nobody to tell. */
    if (ke_rpc_call_send(call, &f.base) != 0)
        ke_log_debug(CH_MOD, "admission refusal not sent node=%s (stream ending)", c->node);
    if (ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, why, NULL) != 0)
        ke_log_debug(CH_MOD, "admission refusal: stream already ended node=%s", c->node);
}

/* unhello_unlink ends c's Hello phase: disarms its Hello deadline and
 * releases its admission slot. ch->mu held. */
static void unhello_unlink(cloudhub *ch, tunnel_conn *c)
{
    if (c->admitted) {
        c->admitted = 0;
        ch->admitting--;
        admit_gauge(ch);
    }
    ke_wheel_disarm(&ch->hello_wheel, &c->hello_timer);
}

/* hello_fire closes a Tunnel stream whose Hello did not complete within
 * cfg.hello_timeout_ms (its timer on ch->hello_wheel). ch->mu held. */
static void hello_fire(ke_wheel_timer *t, void *arg)
{
    cloudhub *ch = arg;
    tunnel_conn *c = t->data;
    char why[160];
    snprintf(why, sizeof(why), "no complete hello within cloudhub.hello_timeout (%lld ms)",
             (long long)ch->cfg.hello_timeout_ms);
    unhello_unlink(ch, c); /* its admission slot */
    ke_log_warn(CH_MOD, "closing a tunnel without a hello node=%s", c->node);
    if (ke_rpc_call_abort(c->call, KE_RPC_DEADLINE_EXCEEDED, why) == 0)
        ke_metric_add(ch->m.hello_timeouts, 1);
    digest_drop(ch, c); /* the digest it held is freed now */
}

void ch_tunnel_reap(cloudhub *ch, int64_t now)
{
    ke_wheel_advance(&ch->hello_wheel, now, hello_fire, ch);
}

/* hello_complete does the work of a Hello once its digest is whole:
 * registers the stream (replacing an older one), answers HelloAck and
 * queues the difference, then ResyncDone. ch->mu held. */
static void hello_complete(tunnel_conn *c, ke_rpc_call *call)
{
    cloudhub *ch = c->ch;
    ch_node *n = ke_map_get(ch->nodes, c->node);
    size_t digest_n = c->digest_n;
    unhello_unlink(ch, c);
    if (!n) {
        digest_drop(ch, c);
        refuse(ch, call, c->node, KE_RPC_PERMISSION_DENIED, "node was removed");
        return;
    }
    if (n->stream) {
        ke_log_info(CH_MOD, "replacing the previous stream node=%s", n->name);
        ch_node_disconnect(ch, n, KE_RPC_ABORTED, "replaced by a newer connection of this node");
        ch_tcall_tunnel_gone(ch, n, "its tunnel was replaced by a newer one");
        ke_rpc_call_unref(n->stream);
        n->stream = NULL;
        ch->connected--;
    }
    ch_queue_clear(ch, n); /* releases the older stream's slot, if any */
    ke_rpc_call_ref(call);
    n->stream = call;
    n->hello_done = 1;
    /* the slot passes from the conn (released by unhello_unlink) to the
     * node until its resync is acked (queue.c) */
    n->resyncing = 1;
    n->resync_end_seq = 0;
    n->resync_start_mono = c->admit_start;
    ch->admitting++;
    admit_gauge(ch);
    n->last_seen_ms = ke_time_wall_ms();
    n->last_seen_mono = ke_time_mono_ms();
    n->dead_timer.data = n;
    ke_wheel_arm(&ch->dead_wheel, &n->dead_timer, n->last_seen_mono + ch->cfg.dead_peer_ms);
    snprintf(n->agent_version, sizeof(n->agent_version), "%s", c->agent_version);
    ch->connected++;
    ke_metric_set(ch->m.connected, ch->connected);

    Ke__V1__HelloAck ack = KE__V1__HELLO_ACK__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    ack.next_edge_seq = n->next_edge_seq;
    ack.keepalive_ms = (uint32_t)ch->cfg.keepalive_ms;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK;
    f.hello_ack = &ack;
    /* The call's send queue is empty here: only a closed call refuses it. */
    if (ke_rpc_call_send(call, &f.base) != 0) {
        digest_drop(ch, c);
        return; /* the stream is ending; on_close cleans up */
    }

    resync r = {.ch = ch, .n = n, .digest = c->digest};
    int rc = ch_store_node_objects(ch, n->name, resync_object, &r);
    if (rc != 0) {
        ke_log_error(CH_MOD, "cannot read the node's objects for its resync node=%s: %s",
                     n->name, ke_strerror(rc));
        for (size_t i = 0; i < r.n_gone; i++)
            free(r.gone[i].key);
        free(r.gone);
        digest_drop(ch, c);
        ch_queue_clear(ch, n);
        ch_node_disconnect(ch, n, KE_RPC_INTERNAL, "cannot read the node's objects");
        return;
    }
    if (!r.full)
        ke_map_each(r.digest, resync_unknown, &r);
    if (!r.full)
        resync_drop_gone(&r);
    for (size_t i = 0; i < r.n_gone; i++)
        free(r.gone[i].key);
    free(r.gone);
    digest_drop(ch, c);
    if (r.full || ch_queue_push_marker(ch, n, r.updates, r.deletes) != 0) {
        ke_log_error(CH_MOD, "out of memory computing the resync node=%s", n->name);
        ch_queue_clear(ch, n);
        ch_node_disconnect(ch, n, KE_RPC_RESOURCE_EXHAUSTED, "cloudhub is out of memory");
        return;
    }
    ke_metric_add(ch->m.resyncs, 1);
    ch_queue_pump(ch, n);
    char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ea[KE_LOG_ESC_SIZE(sizeof(c->agent_version))];
    ke_log_info(CH_MOD, "node connected node=%s agent=\"%s\" digest=%zu updates=%u deletes=%u "
                        "next_edge_seq=%llu",
                ke_log_esc(c->node, en, sizeof(en)),
                ke_log_esc(c->agent_version, ea, sizeof(ea)), digest_n, r.updates, r.deletes,
                (unsigned long long)ack.next_edge_seq);
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
    c->hello = 1;
    snprintf(c->agent_version, sizeof(c->agent_version), "%s", h->agent_version);
    ch_lock(ch);
    if (ch->admitting >= ch->cfg.hello_concurrency) {
        uint32_t admitting = ch->admitting;
        uint32_t retry_after = admit_retry_after(ch, ke_time_mono_ms());
        pthread_mutex_unlock(&ch->mu);
        admit_refuse(ch, c, call, admitting, retry_after);
        return;
    }
    c->admitted = 1;
    c->admit_start = ke_time_mono_ms();
    ch->admitting++;
    admit_gauge(ch);
    char why[200];
    int code = (c->digest = ke_map_new()) != NULL ? KE_RPC_OK : KE_RPC_RESOURCE_EXHAUSTED;
    snprintf(why, sizeof(why), "cloudhub is out of memory");
    c->digest_open = 1;
    if (code == KE_RPC_OK)
        code = digest_add(ch, c, h->digest, h->n_digest, why, sizeof(why));
    if (code != KE_RPC_OK) {
        digest_drop(ch, c);
        pthread_mutex_unlock(&ch->mu);
        refuse(ch, call, c->node, code, why);
        return;
    }
    if (!h->digest_follows)
        hello_complete(c, call);
    pthread_mutex_unlock(&ch->mu);
}

static void tunnel_on_digest_chunk(tunnel_conn *c, ke_rpc_call *call,
                                   const Ke__V1__DigestChunk *d)
{
    cloudhub *ch = c->ch;
    if (!c->digest_open) {
        refuse(ch, call, c->node, KE_RPC_FAILED_PRECONDITION,
               "digest_chunk: no digest in progress (a hello with digest_follows comes first)");
        return;
    }
    char why[200];
    ch_lock(ch);
    int code = digest_add(ch, c, d->entries, d->n_entries, why, sizeof(why));
    if (code != KE_RPC_OK) {
        digest_drop(ch, c);
        pthread_mutex_unlock(&ch->mu);
        refuse(ch, call, c->node, code, why);
        return;
    }
    if (d->last)
        hello_complete(c, call);
    pthread_mutex_unlock(&ch->mu);
}

/* ---- upstream ---- */

/* upstream_refuse answers a report about a resource that is not the
 * node's: a Refusal, final for that seq (stepped past, so not resent). */
static void upstream_refuse(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__SequencedMessage *sm)
{
    cloudhub *ch = c->ch;
    Ke__V1__Message *msg = sm->message;
    char why[300];
    snprintf(why, sizeof(why), "resource \"%s\" does not belong to node %s",
             msg && msg->route ? msg->route->resource : "", c->node);
    char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ew[KE_LOG_ESC_SIZE(sizeof(why))];
    ke_log_warn(CH_MOD, "refused upstream frame node=%s seq=%llu reason=\"%s\"",
                ke_log_esc(c->node, en, sizeof(en)), (unsigned long long)sm->seq,
                ke_log_esc(why, ew, sizeof(ew)));
    ke_metric_add(ch->m.refused, 1);
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (!n || n->stream != call || n->upstream_stopped) {
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    if (sm->seq >= n->next_edge_seq) {
        if (ch_store_node_set_seq(ch, n->name, sm->seq + 1) != 0) {
            /* Not stepped past: no refusal either; the edge resends it. */
            n->upstream_stopped = 1;
            ch_node_disconnect(ch, n, KE_RPC_INTERNAL, "cannot persist upstream sequence");
            pthread_mutex_unlock(&ch->mu);
            return;
        }
        n->next_edge_seq = sm->seq + 1;
    }
    pthread_mutex_unlock(&ch->mu);
    send_refusal(call, sm->seq, why, 0);
}

/* ---- fairness: a window of each node's entries in the log ---- */

static void deferred_free(ch_deferred *d)
{
    free(d->group);
    free(d->key);
    free(d->msg);
    free(d);
}

void ch_tunnel_defer_clear(cloudhub *ch, ch_node *n)
{
    if (n->defer_head)
        ch->deferring--;
    while (n->defer_head) {
        ch_deferred *d = n->defer_head;
        n->defer_head = d->next;
        deferred_free(d);
    }
    n->defer_tail = NULL;
    n->defer_len = 0;
    n->defer_bytes = 0;
}

/* defer_push holds back a report (msg is taken). Returns 0, or KE_EFULL
 * past CH_DEFER_MAX / CH_DEFER_BYTES_MAX (msg freed), KE_ENOMEM. */
static int defer_push(cloudhub *ch, ch_node *n, uint64_t seq, const char *group, const char *key,
                      uint8_t *msg, size_t len)
{
    if (n->defer_len >= CH_DEFER_MAX || n->defer_bytes + len > CH_DEFER_BYTES_MAX) {
        free(msg);
        return KE_EFULL;
    }
    ch_deferred *d = calloc(1, sizeof(*d));
    if (!d || !(d->group = strdup(group)) || !(d->key = strdup(key))) {
        if (d)
            deferred_free(d);
        free(msg);
        return KE_ENOMEM;
    }
    d->seq = seq;
    d->msg = msg;
    d->len = len;
    if (n->defer_tail)
        n->defer_tail->next = d;
    else {
        n->defer_head = d;
        ch->deferring++;
    }
    n->defer_tail = d;
    n->defer_len++;
    n->defer_bytes += len;
    ke_metric_add(ch->m.up_deferred, 1);
    return 0;
}

/* uplog_node_cap: the entries a node may have in the log when its report
 * is logged now — the window, or the bound when there is no window. */
static uint32_t uplog_node_cap(const cloudhub *ch)
{
    return ch->cfg.uplog_node_window < ch->cfg.uplog_node_max ? ch->cfg.uplog_node_window
                                                              : ch->cfg.uplog_node_max;
}

static void upstream_not_acked(cloudhub *ch, ch_node *n, uint64_t seq, int rc);

/* upstream_not_acked's reason for a report the writer's queue had no room
 * for (not a KE_E code of the store's). */
#define KE_EBUSY_WRITER (-1000)

/* undefer_node logs n's held-back reports while its window has room. */
static int undefer_node(const char *name, void *value, void *arg)
{
    (void)name;
    cloudhub *ch = arg;
    ch_node *n = value;
    int logged = 0;
    while (n->defer_head && n->stream && !n->upstream_stopped) {
        ch_deferred *d = n->defer_head;
        uint64_t id = 0;
        int rc = ch_store_uplog_append(ch, n->name, d->group, d->key, d->seq, d->msg, d->len,
                                       uplog_node_cap(ch), &id);
        if (rc == KE_EFULL)
            break; /* no room yet */
        if (rc != 0) {
            upstream_not_acked(ch, n, d->seq, rc); /* clears the rest with the stream */
            return 0;
        }
        n->defer_head = d->next;
        if (!n->defer_head) {
            n->defer_tail = NULL;
            ch->deferring--;
        }
        n->defer_len--;
        n->defer_bytes -= d->len;
        n->next_edge_seq = d->seq + 1;
        n->uplog_full = 0;
        ke_metric_add(ch->m.up_received, 1);
        ch_control_ack(n, d->seq);
        ch_subscribe_wake(ch, d->group);
        deferred_free(d);
        logged++;
    }
    if (logged)
        ch_control_flush(ch, n);
    return 0;
}

void ch_tunnel_undefer(cloudhub *ch)
{
    if (ch->deferring)
        ke_map_each(ch->nodes, undefer_node, ch);
}

/* upstream_not_acked ends the stream after a report that could not be
 * logged: nothing after it on this stream is accepted, and the edge, which
 * keeps it in its outbox, resends from HelloAck.next_edge_seq when it
 * reconnects. ch->mu held. */
static void upstream_not_acked(cloudhub *ch, ch_node *n, uint64_t seq, int rc)
{
    n->upstream_stopped = 1;
    if (rc == KE_EBUSY_WRITER) {
        ke_metric_add(ch->m.up_backpressure, 1);
        ke_log_warn(CH_MOD, "cloudhub's write queue is full node=%s seq=%llu: not acked; the "
                            "edge retries",
                    n->name, (unsigned long long)seq);
        ch_node_disconnect(ch, n, KE_RPC_RESOURCE_EXHAUSTED,
                           "cloudhub's write queue is full: retry later");
        return;
    }
    if (rc == KE_EFULL) {
        ke_metric_add(ch->m.up_backpressure, 1);
        int windowed = ch->cfg.uplog_node_window < ch->cfg.uplog_node_max;
        if (!n->uplog_full)
            ke_log_warn(CH_MOD, "upstream log at its bound for node=%s seq=%llu max=%u%s: not "
                                "acked; the edge retries (consumers must ack to make room)",
                        n->name, (unsigned long long)seq, ch->cfg.uplog_node_max,
                        windowed ? " and its held-back reports at their bound" : "");
        n->uplog_full = 1;
        char why[200];
        if (windowed)
            snprintf(why, sizeof(why), "too many upstream reports waiting for consumers (%u in "
                                       "memory past cloudhub.uplog_node_window=%u): retry later",
                     n->defer_len, ch->cfg.uplog_node_window);
        else
            snprintf(why, sizeof(why), "upstream log of this node is full "
                                       "(cloudhub.uplog_node_max=%u keys): retry later",
                     ch->cfg.uplog_node_max);
        ch_node_disconnect(ch, n, KE_RPC_RESOURCE_EXHAUSTED, why);
        return;
    }
    ke_log_error(CH_MOD, "cannot log an upstream report node=%s seq=%llu: %s; not acked",
                 n->name, (unsigned long long)seq, ke_strerror(rc));
    ch_node_disconnect(ch, n, KE_RPC_INTERNAL, "cannot persist the upstream report");
}

static void tunnel_on_message(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__SequencedMessage *sm)
{
    cloudhub *ch = c->ch;
    char owner[CH_NODE_NAME_MAX];
    Ke__V1__Message *msg = sm->message;
    if (sm->seq == 0 || sm->seq == UINT64_MAX) {
        /* Not a Refusal: a refusal acks its seq at the edge, and UINT64_MAX
         * would clear the whole outbox. */
        refuse(ch, call, c->node, KE_RPC_INVALID_ARGUMENT,
               "message.seq: must be between 1 and 2^64-2");
        return;
    }
    if (!msg || !msg->route || !msg->header ||
        ch_resource_node(msg->route->resource, owner, sizeof(owner)) != 0 ||
        strcmp(owner, c->node) != 0) {
        upstream_refuse(c, call, sm);
        return;
    }
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (!n || n->stream != call || n->upstream_stopped) {
        pthread_mutex_unlock(&ch->mu);
        return; /* not acked: resent after the reconnect */
    }
    n->last_seen_ms = ke_time_wall_ms();
    n->last_seen_mono = ke_time_mono_ms();
    if (sm->seq < n->next_edge_seq) {
        ke_metric_add(ch->m.up_duplicates, 1);
        ch_control_ack(n, sm->seq);
        ch_control_flush(ch, n);
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    /* Logged, acked and handed to consumers by the group-commit writer, in
     * the order received (writer.c; ch_tunnel_report_log below). */
    pthread_mutex_unlock(&ch->mu);
    const char *group = msg->route->group ? msg->route->group : "";
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    size_t klen = strlen(msg->route->resource), glen = strlen(group);
    ch_wjob *j = ch_writer_job_new(call, 0, 1);
    int rc = KE_ENOMEM;
    if (j && (j->items[0].buf = malloc(len + klen + glen + 2)) != NULL) {
        ch_pub *p = &j->items[0];
        j->report = 1;
        protobuf_c_message_pack(&msg->base, p->buf);
        memcpy(p->buf + len, msg->route->resource, klen + 1);
        memcpy(p->buf + len + klen + 1, group, glen + 1);
        p->msg = p->buf;
        p->len = len;
        p->key = (const char *)p->buf + len;
        p->group = (const char *)p->buf + len + klen + 1;
        p->seq = sm->seq;
        snprintf(p->node, sizeof(p->node), "%s", c->node);
        ke_rpc_call_ref(call);
        if ((rc = ch_writer_submit(ch, j)) == 0)
            return;
        ke_rpc_call_unref(call);
    }
    ch_writer_job_free(j);
    ch_lock(ch);
    n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call && !n->upstream_stopped)
        upstream_not_acked(ch, n, sm->seq, rc == KE_EFULL ? KE_EBUSY_WRITER : rc);
    pthread_mutex_unlock(&ch->mu);
}

int ch_tunnel_report_log(cloudhub *ch, ke_rpc_call *call, ch_pub *p)
{
    ch_node *n = ke_map_get(ch->nodes, p->node);
    p->rc = 1; /* nothing to do after the commit unless logged */
    if (!n || n->stream != call || n->upstream_stopped)
        return 0; /* not acked: resent after the reconnect */
    int windowed = ch->cfg.uplog_node_window < ch->cfg.uplog_node_max;
    uint64_t id = 0;
    /* Behind reports held back, or past the window: held back too. */
    int rc = n->defer_head ? KE_EFULL
                           : ch_store_uplog_append_tx(ch, n->name, p->group, p->key, p->seq, p->msg,
                                                      p->len, uplog_node_cap(ch), &id);
    if (rc == 0) {
        p->rc = 0;
        return 0;
    }
    if (rc == KE_EFULL && windowed) {
        uint8_t *copy = malloc(p->len ? p->len : 1);
        if (copy)
            memcpy(copy, p->msg, p->len);
        rc = copy ? defer_push(ch, n, p->seq, p->group, p->key, copy, p->len) : KE_ENOMEM;
        if (rc == 0)
            return 0; /* acked when logged */
    }
    if (rc == KE_EFULL || rc == KE_ENOMEM) {
        /* The stream ends unacked from here, but only once the reports
         * logged before it in this transaction are committed and acked
         * (ch_tunnel_report_done); nothing later on it is logged. */
        n->upstream_stopped = 1;
        p->rc = 2;
        p->stop_rc = rc;
        return 0;
    }
    return rc; /* the store failed: the whole transaction goes */
}

void ch_tunnel_report_done(cloudhub *ch, ke_rpc_call *call, const ch_pub *p, int store_rc)
{
    ch_node *n = ke_map_get(ch->nodes, p->node);
    if (p->rc == 1 || !n || n->stream != call)
        return;
    if (p->rc == 2) {
        upstream_not_acked(ch, n, p->seq, p->stop_rc);
        return;
    }
    if (store_rc != 0) {
        if (!n->upstream_stopped) /* once per stream */
            upstream_not_acked(ch, n, p->seq, store_rc);
        return;
    }
    /* Committed: now, and only now, the edge may forget it. */
    if (p->seq + 1 > n->next_edge_seq)
        n->next_edge_seq = p->seq + 1;
    n->uplog_full = 0;
    ke_metric_add(ch->m.up_received, 1);
    ch_control_ack(n, p->seq);
    ch_writer_pump_later(ch, n); /* the ack goes once the writer's batch let go of ch->mu */
    ch_subscribe_wake(ch, p->group);
}

static void tunnel_on_ack(tunnel_conn *c, ke_rpc_call *call, const Ke__V1__Ack *a)
{
    cloudhub *ch = c->ch;
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->last_seen_ms = ke_time_wall_ms();
        n->last_seen_mono = ke_time_mono_ms();
        ch_queue_acked(ch, n, a->seq);
        ch_queue_pump(ch, n);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void tunnel_on_keepalive(tunnel_conn *c, ke_rpc_call *call)
{
    cloudhub *ch = c->ch;
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->last_seen_ms = ke_time_wall_ms();
        n->last_seen_mono = ke_time_mono_ms();
        ch_control_keepalive(n);
        ch_control_flush(ch, n);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void on_open(ke_rpc_call *call, void *ud)
{
    cloudhub *ch = ud;
    char node[CH_NODE_NAME_MAX] = "", why[256];
    /* A resumed TLS session must still carry the client certificate (the
     * ticket holds it): ch_auth_node checks it the same way either way. */
    int resumed = ke_rpc_call_tls_resumed(call);
    if (resumed == 1)
        ke_metric_add(ch->m.tls_resumed, 1);
    else if (resumed == 0)
        ke_metric_add(ch->m.tls_full, 1);
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
    c->call = call;
    snprintf(c->node, sizeof(c->node), "%s", node);
    ke_rpc_call_set_data(call, c);
    c->hello_timer.data = c;
    ch_lock(ch);
    ke_wheel_arm(&ch->hello_wheel, &c->hello_timer, ke_time_mono_ms() + ch->cfg.hello_timeout_ms);
    pthread_mutex_unlock(&ch->mu);
    ke_log_debug(CH_MOD, "tunnel opened node=%s", node);
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)ud;
    tunnel_conn *c = ke_rpc_call_get_data(call);
    const Ke__V1__EdgeFrame *f = (const Ke__V1__EdgeFrame *)m;
    ke_log_debug(CH_MOD, "frame node=%s case=%d", c ? c->node : "-", (int)f->frame_case);
    if (!c || c->ended)
        return; /* refused at open, or by admission control */
    if (!c->hello && f->frame_case != KE__V1__EDGE_FRAME__FRAME_HELLO) {
        refuse(c->ch, call, c->node, KE_RPC_FAILED_PRECONDITION, "the first frame must be hello");
        return;
    }
    if (c->digest_open && f->frame_case != KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK &&
        f->frame_case != KE__V1__EDGE_FRAME__FRAME_KEEPALIVE) {
        refuse(c->ch, call, c->node, KE_RPC_FAILED_PRECONDITION,
               "digest in progress: only digest_chunk (or keepalive) frames until the last chunk");
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
    case KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK:
        tunnel_on_digest_chunk(c, call, f->digest_chunk);
        break;
    case KE__V1__EDGE_FRAME__FRAME_LOG_CHUNK:
        ch_logs_on_chunk(c->ch, c->node, call, f->log_chunk);
        break;
    case KE__V1__EDGE_FRAME__FRAME_SERVICE_RESPONSE:
        ch_service_on_response(c->ch, c->node, call, f->service_response);
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
    ch_lock(ch);
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
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, c->node);
    if (n && n->stream == call) {
        n->stream = NULL;
        n->hello_done = 0;
        ke_wheel_disarm(&ch->dead_wheel, &n->dead_timer);
        n->last_seen_ms = ke_time_wall_ms();
        n->last_seen_mono = ke_time_mono_ms();
        ch_queue_clear(ch, n);
        ch_tcall_tunnel_gone(ch, n, "its tunnel ended");
        ch->connected--;
        ke_metric_set(ch->m.connected, ch->connected);
        ke_rpc_call_unref(call);
        char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ew[KE_LOG_ESC_SIZE(256)];
        ke_log_info(CH_MOD, "node disconnected node=%s status=%s reason=\"%s\"",
                    ke_log_esc(c->node, en, sizeof(en)), ke_rpc_status_name(st->code),
                    ke_log_esc(st->message, ew, sizeof(ew)));
    }
    unhello_unlink(ch, c);
    digest_drop(ch, c);
    pthread_mutex_unlock(&ch->mu);
    free(c);
}

int ch_tunnel_register(cloudhub *ch, ke_rpc_server *srv)
{
    static const ke_rpc_handler h = {.on_open = on_open,
                                     .on_message = on_message,
                                     .on_drain = on_drain,
                                     .on_close = on_close};
    int rc = ke_rpc_server_add(srv, &ke__v1__cloud_hub__descriptor, "Tunnel", KE_RPC_BIDI_STREAM,
                               &h, ch);
    if (rc == 0) /* a stream that sends nothing never reaches on_open */
        rc = ke_rpc_server_set_open_timeout(srv, "/ke.v1.CloudHub/Tunnel",
                                            ch->cfg.hello_timeout_ms);
    return rc;
}
