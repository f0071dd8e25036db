/*
 * cloudhub.c — CloudHub's lifecycle: configuration, the node table, the
 * dead-peer reaper and the metrics. The protocol lives in tunnel.c, the
 * controllers' API in hub.c, identity in join.c, persistence in store.c.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_time.h"
#include "ke_watchdog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void metrics_init(ch_metrics *m)
{
    ke_metrics_counter_new("ke_cloudhub_hello_timeouts_total",
                           "tunnel streams closed for not completing a hello within "
                           "cloudhub.hello_timeout (no first frame, or a digest left open)",
                           NULL, &m->hello_timeouts);
    ke_metrics_counter_new("ke_cloudhub_upstream_deferred_total",
                           "upstream reports held back (unacked) while their node had "
                           "cloudhub.uplog_node_window entries waiting for consumers",
                           NULL, &m->up_deferred);
    ke_metrics_gauge_new("ke_cloudhub_nodes_connected", "edge nodes with an open tunnel", NULL,
                         &m->connected);
    ke_metrics_gauge_new("ke_cloudhub_nodes_known", "registered edge nodes", NULL, &m->known);
    ke_metrics_gauge_new("ke_cloudhub_queue_depth",
                         "downstream messages queued for connected nodes, all nodes", NULL,
                         &m->queue_depth);
    ke_metrics_counter_new("ke_cloudhub_messages_sent_total", "downstream messages sent", NULL,
                           &m->sent);
    ke_metrics_counter_new("ke_cloudhub_messages_acked_total",
                           "downstream messages acknowledged by nodes", NULL, &m->acked);
    ke_metrics_counter_new("ke_cloudhub_messages_dropped_total",
                           "queued messages replaced by a newer version of the same resource",
                           NULL, &m->coalesced);
    ke_metrics_counter_new("ke_cloudhub_queue_overflows_total",
                           "downstream queues that hit their bound (the node resyncs)", NULL,
                           &m->overflows);
    ke_metrics_counter_new("ke_cloudhub_resyncs_total", "resyncs after a node's hello", NULL,
                           &m->resyncs);
    ke_metrics_counter_new("ke_cloudhub_upstream_received_total",
                           "upstream messages accepted from nodes", NULL, &m->up_received);
    ke_metrics_counter_new("ke_cloudhub_upstream_duplicates_total",
                           "upstream messages received again and dropped", NULL,
                           &m->up_duplicates);
    ke_metrics_counter_new("ke_cloudhub_refused_total",
                           "tunnels and frames refused (identity, authorization, protocol)",
                           NULL, &m->refused);
    ke_metrics_counter_new("ke_cloudhub_upstream_backpressure_total",
                           "upstream reports not acked because the node's upstream log is at "
                           "its bound (the edge retries)",
                           NULL, &m->up_backpressure);
    ke_metrics_counter_new("ke_cloudhub_upstream_delivered_total",
                           "upstream log entries sent to consumers", NULL, &m->up_delivered);
    ke_metrics_counter_new("ke_cloudhub_tombstones_collected_total",
                           "deleted objects rows removed once the node had the delete", NULL,
                           &m->tombstones_collected);
    ke_metrics_counter_new("ke_cloudhub_write_commits_total",
                           "transactions of the group-commit writer (publishes)", NULL,
                           &m->write_commits);
    ke_metrics_counter_new("ke_cloudhub_write_items_total",
                           "publishes stored by the group-commit writer (divided by its "
                           "transactions: the batch size)",
                           NULL, &m->write_items);
    ke_metrics_counter_new("ke_cloudhub_write_refused_total",
                           "publishes refused because the writer's queue was at its bound",
                           NULL, &m->write_refused);
    ke_metrics_counter_new("ke_cloudhub_lock_contended_total",
                           "times a thread found CloudHub's state lock taken and waited", NULL,
                           &m->lock_contended);
    ke_metrics_register(KE_METRIC_COUNTER, KE_METRIC_DOUBLE,
                        "ke_cloudhub_lock_wait_seconds_total",
                        "time threads waited for CloudHub's state lock", NULL, &m->lock_wait);
    ke_metrics_register(KE_METRIC_COUNTER, KE_METRIC_DOUBLE,
                        "ke_cloudhub_write_lock_seconds_total",
                        "time the group-commit writer held CloudHub's state lock (its "
                        "transactions and the queueing after them)",
                        NULL, &m->write_lock_held);
    ke_metrics_counter_new("ke_cloudhub_joins_total", "nodes joined", NULL, &m->joins);
    ke_metrics_counter_new("ke_cloudhub_join_refusals_total", "join requests refused", NULL,
                           &m->join_refused);
    ke_metrics_counter_new("ke_cloudhub_certificate_renewals_total",
                           "node certificates renewed", NULL, &m->renewals);
    ke_metrics_counter_new("ke_cloudhub_hello_refused_total",
                           "Hellos refused by admission control (past "
                           "cloudhub.hello_concurrency), each with a retry_after",
                           NULL, &m->hello_refused);
    ke_metrics_gauge_new("ke_cloudhub_hello_admitting",
                         "Tunnel streams between their Hello and the end of their resync", NULL,
                         &m->hello_admitting);
    ke_metrics_counter_new("ke_cloudhub_tls_resumed_total",
                           "Tunnel streams whose TLS session was resumed (session ticket)",
                           NULL, &m->tls_resumed);
    ke_metrics_counter_new("ke_cloudhub_tls_full_handshakes_total",
                           "Tunnel streams whose TLS session was a full handshake", NULL,
                           &m->tls_full);
}

/* Timer wheels: a tick of CH_WHEEL_TICK_MS, CH_WHEEL_SLOTS slots (a turn
 * of 64 s spans the default dead_peer and hello_timeout, so a timer is
 * looked at about once before it is due; longer ones are visited once a
 * turn). */
#define CH_WHEEL_TICK_MS 250
#define CH_WHEEL_SLOTS 256u

void ch_lock(cloudhub *ch)
{
    if (pthread_mutex_trylock(&ch->mu) == 0)
        return;
    int64_t t0 = ke_time_mono_ns();
    pthread_mutex_lock(&ch->mu);
    ke_metric_add(ch->m.lock_contended, 1);
    ke_metric_add_double(ch->m.lock_wait, (double)(ke_time_mono_ns() - t0) / 1e9);
}

/* dead_fire: a connected node's dead-peer deadline passed. Frames move
 * last_seen_mono without touching the wheel; here a node heard from since
 * is re-armed at its new deadline, a silent one is cancelled (its on_close
 * does the cleanup). ch->mu held. */
static void dead_fire(ke_wheel_timer *t, void *arg)
{
    cloudhub *ch = arg;
    ch_node *n = t->data;
    if (!n->stream)
        return;
    int64_t now = ke_time_mono_ms();
    if (now - n->last_seen_mono <= ch->cfg.dead_peer_ms) {
        ke_wheel_arm(&ch->dead_wheel, t, n->last_seen_mono + ch->cfg.dead_peer_ms + 1);
        return;
    }
    ke_log_warn(CH_MOD, "node silent, closing its tunnel node=%s silent_ms=%lld", n->name,
                (long long)(now - n->last_seen_mono));
    ke_rpc_call_cancel(n->stream);
}

/* The reaper wakes every second (or the watchdog's tick, if shorter; the
 * monotonic clock: a step of the wall clock neither fires nor delays it),
 * cancels streams of silent nodes (their on_close does the cleanup),
 * closes streams whose Hello is overdue (ch_tunnel_reap) and beats the
 * heartbeat "cloudhub-reaper" on every wake-up. */
static void *reaper_main(void *arg)
{
    cloudhub *ch = arg;
    ke_watchdog_hb *hb = NULL;
    int rc = ke_watchdog_register("cloudhub-reaper", 0, &hb);
    if (rc != 0) /* it still reaps, unwatched */
        ke_log_warn(CH_MOD, "the reaper is not watched: %s", ke_strerror(rc));
    ch_lock(ch);
    while (!ch->stopping) {
        ke_watchdog_beat(hb);
        struct timespec until = ke_time_deadline(ke_watchdog_tick_ms(hb));
        int wrc = pthread_cond_timedwait(&ch->cv, &ch->mu, &until);
        if (wrc != 0 && wrc != ETIMEDOUT)
            ke_log_warn(CH_MOD, "reaper wait failed: %s", strerror(wrc));
        if (ch->stopping)
            break;
        ke_watchdog_beat(hb);
        int64_t now = ke_time_mono_ms();
        ke_wheel_advance(&ch->dead_wheel, now, dead_fire, ch);
        ch_tunnel_reap(ch, now);
        ch_tunnel_undefer(ch); /* a safety net: acks that collect call it too */
    }
    pthread_mutex_unlock(&ch->mu);
    ke_watchdog_unregister(hb);
    return NULL;
}

static int node_free(const char *key, void *value, void *arg)
{
    (void)key;
    cloudhub *ch = arg;
    ch_node *n = value;
    ch_queue_clear(ch, n);
    if (n->stream)
        ke_rpc_call_unref(n->stream);
    ke_map_free(n->pending);
    free(n);
    return 0;
}

int cloudhub_new(const cloudhub_config *cfg, cloudhub **out)
{
    cloudhub *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return KE_ENOMEM;
    ch->cfg = *cfg;
    if (!ch->cfg.queue_max)
        ch->cfg.queue_max = 65536;
    if (!ch->cfg.window)
        ch->cfg.window = 256;
    if (!ch->cfg.uplog_node_max)
        ch->cfg.uplog_node_max = CH_UPLOG_NODE_MAX_DEFAULT;
    if (!ch->cfg.uplog_node_window)
        ch->cfg.uplog_node_window = CH_UPLOG_NODE_WINDOW_DEFAULT;
    if (ch->cfg.uplog_node_window > ch->cfg.uplog_node_max)
        ch->cfg.uplog_node_window = ch->cfg.uplog_node_max; /* no window: the bound alone */
    if (ch->cfg.window > CH_WINDOW_MAX) {
        ke_log_error(CH_MOD, "window=%u is above %u: the rpc send queue (%u frames) must keep "
                             "room for acks and keepalives",
                     ch->cfg.window, CH_WINDOW_MAX, KE_RPC_DEFAULT_SEND_QUEUE);
        free(ch);
        return KE_EINVAL;
    }
    if (ch->cfg.keepalive_ms <= 0)
        ch->cfg.keepalive_ms = 5000;
    if (ch->cfg.dead_peer_ms <= 0)
        ch->cfg.dead_peer_ms = 3 * ch->cfg.keepalive_ms;
    if (ch->cfg.hello_timeout_ms <= 0)
        ch->cfg.hello_timeout_ms = 30000;
    if (!ch->cfg.hello_concurrency)
        ch->cfg.hello_concurrency = CH_HELLO_CONCURRENCY_DEFAULT;
    ch->admit_est_us = CH_HELLO_EST_MS_DEFAULT * 1000;
    ch->admit_seed = (unsigned)ke_time_mono_ms() ^ (unsigned)getpid();
    if (ch->cfg.node_cert_ttl_ms <= 0)
        ch->cfg.node_cert_ttl_ms = 365LL * 24 * 3600 * 1000;
    pthread_mutex_init(&ch->mu, NULL);
    if (ke_time_cond_init(&ch->cv) != 0) {
        pthread_mutex_destroy(&ch->mu);
        free(ch);
        return KE_ENOMEM;
    }
    metrics_init(&ch->m);
    int rc = KE_ENOMEM;
    uint8_t secret[KE_PKI_SECRET_MAX];
    if (!(ch->nodes = ke_map_new()) || ch_tcall_init(ch) != 0)
        goto fail;
    int64_t now = ke_time_mono_ms();
    if ((rc = ke_wheel_init(&ch->dead_wheel, CH_WHEEL_SLOTS, CH_WHEEL_TICK_MS, now)) != 0 ||
        (rc = ke_wheel_init(&ch->hello_wheel, CH_WHEEL_SLOTS, CH_WHEEL_TICK_MS, now)) != 0)
        goto fail;
    rc = KE_ENOMEM;
    if ((rc = ke_pki_read_file(cfg->ca_cert_file, &ch->ca_pem, NULL)) != 0 ||
        (rc = ke_pki_read_file(cfg->ca_key_file, &ch->ca_key_pem, NULL)) != 0 ||
        (rc = ke_pki_secret_read(cfg->token_secret_file, secret, sizeof(secret),
                                 &ch->secret_len)) != 0) {
        ke_log_error(CH_MOD, "cannot load the CA, its key or the token secret ca=%s key=%s "
                             "secret=%s",
                     cfg->ca_cert_file, cfg->ca_key_file, cfg->token_secret_file);
        rc = KE_ETLS;
        goto fail;
    }
    if (!(ch->secret = malloc(ch->secret_len)))
        goto fail;
    memcpy(ch->secret, secret, ch->secret_len);
    if ((rc = ch_store_open(ch)) != 0 || (rc = ch_store_load_nodes(ch)) != 0)
        goto fail;
    ke_metric_set(ch->m.known, (int64_t)ke_map_len(ch->nodes));
    ke_metric_set(ch->m.connected, 0);
    if ((rc = ch_writer_start(ch)) != 0)
        goto fail;
    if (pthread_create(&ch->reaper, NULL, reaper_main, ch) != 0) {
        rc = KE_ENOMEM;
        goto fail;
    }
    pthread_setname_np(ch->reaper, "ke-cloudhub-reap");
    ke_log_info(CH_MOD, "ready nodes=%zu db=%s keepalive_ms=%lld dead_peer_ms=%lld",
                ke_map_len(ch->nodes), cfg->db_path, (long long)ch->cfg.keepalive_ms,
                (long long)ch->cfg.dead_peer_ms);
    *out = ch;
    return 0;
fail:
    ch->stopping = 1;
    ch->reaper = 0;
    cloudhub_free(ch);
    return rc;
}

int cloudhub_register(cloudhub *ch, ke_rpc_server *srv)
{
    int rc = ch_join_register(ch, srv);
    if (rc == 0)
        rc = ch_tunnel_register(ch, srv);
    if (rc == 0)
        rc = ch_hub_register(ch, srv);
    return rc;
}

int cloudhub_health(void *arg, char *reason, size_t cap)
{
    cloudhub *ch = arg;
    ch_lock(ch);
    int rc = ke_sqlite_exec(ch->db, "SELECT 1");
    pthread_mutex_unlock(&ch->mu);
    if (rc != 0) {
        snprintf(reason, cap, "cloudhub database does not answer");
        return 1;
    }
    char why[200];
    if (ke_rpc_listener_failed(why, sizeof(why))) {
        /* No new node can connect until cloudcore restarts. */
        snprintf(reason, cap, "grpc stopped accepting connections (%s): restart cloudcore with a "
                              "higher open-files limit",
                 why);
        return 1;
    }
    return 0;
}

void cloudhub_free(cloudhub *ch)
{
    if (!ch)
        return;
    ch_lock(ch);
    int had_reaper = !ch->stopping;
    ch->stopping = 1;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
    if (had_reaper)
        pthread_join(ch->reaper, NULL);
    ch_writer_stop(ch);
    if (ch->nodes) {
        ke_map_each(ch->nodes, node_free, ch);
        ke_map_free(ch->nodes);
    }
    ch_subscribe_free_all(ch);
    ch_tcall_free(ch);
    ke_wheel_free(&ch->dead_wheel);
    ke_wheel_free(&ch->hello_wheel);
    ke_sqlite_close(ch->db);
    free(ch->ca_pem);
    free(ch->ca_key_pem);
    free(ch->secret);
    pthread_mutex_destroy(&ch->mu);
    pthread_cond_destroy(&ch->cv);
    free(ch);
}
