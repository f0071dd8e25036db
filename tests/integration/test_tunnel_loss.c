/*
 * test_tunnel_loss.c — the reliability model, end to end with real
 * processes on loopback: cloudcore (CloudHub), edgecore behind a TCP proxy
 * that cuts or freezes the link, the Hub API as a controller would use it,
 * and EdgeLocal for upstream reports.
 *
 *   loss        1,000 changes to 100 keys downstream while the link is cut
 *               every 100 messages and edgecore is SIGKILLed twice; the
 *               same upstream. Afterwards the edge equals the cloud key by
 *               key, no key was ever applied older-after-newer (audit
 *               table), and every report reached the cloud exactly once per
 *               version, in order per key.
 *   offline     deletes made while the edge is stopped are applied when it
 *               comes back.
 *   rotation    a certificate rotation in the middle of a stream loses and
 *               duplicates nothing.
 *   dead peer   a link that goes silent is detected on both sides and the
 *               edge comes back by itself.
 *   metrics     /metrics shows the tunnel's counters.
 *   restart     changes published while the node is away survive a
 *               CloudHub restart (they are in its SQLite file).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_consumer.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_proxy.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NKEYS 100
#define NODE "edge-1"

static ke_cluster C;
static ke_proxy *P;
static ke_edge E;

static const char *const edge_flags[] = {"--edgehub.keepalive=1s", "--edgehub.dead_peer=3s",
                                         NULL};

/* ---- the cloud's expected state, per key ---- */

static uint64_t want_rv[NKEYS + 64];
static int want_deleted[NKEYS + 64];
static uint64_t next_rv[NKEYS + 64];

static void key_name(char *buf, size_t len, int k)
{
    snprintf(buf, len, "node/" NODE "/default/ConfigMap/cm-%03d", k);
}

static void publish(int k, int del)
{
    char key[96], content[64];
    key_name(key, sizeof(key), k);
    uint64_t rv = ++next_rv[k];
    snprintf(content, sizeof(content), "{\"key\":%d,\"v\":%llu}", k, (unsigned long long)rv);
    int code = ke_cluster_publish(&C, NODE, key, rv,
                                  del ? KE__V1__OPERATION__OPERATION_DELETE
                                      : KE__V1__OPERATION__OPERATION_UPDATE,
                                  del ? NULL : content);
    assert_int_equal(code, KE_RPC_OK);
    want_rv[k] = rv;
    want_deleted[k] = del;
}

/* edge_matches compares EdgeLocal.List with the expected state. */
static int edge_matches(int nkeys, uint64_t *pending)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(&E);
    if (!r)
        return 0;
    int live = 0, ok = 1;
    for (int k = 0; k < nkeys; k++)
        live += want_rv[k] && !want_deleted[k];
    size_t seen = 0;
    for (size_t i = 0; i < r->n_objects; i++) {
        int k;
        if (sscanf(r->objects[i]->key, "node/" NODE "/default/ConfigMap/cm-%d", &k) != 1)
            continue;
        seen++;
        char content[64];
        snprintf(content, sizeof(content), "{\"key\":%d,\"v\":%llu}", k,
                 (unsigned long long)want_rv[k]);
        if (k >= nkeys || want_deleted[k] || r->objects[i]->resource_version != want_rv[k] ||
            r->objects[i]->content.len != strlen(content) ||
            memcmp(r->objects[i]->content.data, content, strlen(content)) != 0)
            ok = 0;
    }
    if (pending)
        *pending = r->outbox_pending;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok && (int)seen == live;
}

/* wait_converged polls the edge's store (there is no event to wait on
 * from outside) until it equals the cloud's state; 60 s at most. */
static int wait_converged(int nkeys)
{
    for (int i = 0; i < 600; i++) {
        uint64_t pending = 1;
        if (edge_matches(nkeys, &pending) && pending == 0)
            return 1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* ---- the upstream consumer ---- */

#define MAX_REPORTS 64

typedef struct upstream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t rvs[NKEYS][MAX_REPORTS];
    int count[NKEYS];
    int total;
    ke_consumer con;
} upstream;

static upstream U;

/* up_message runs for each entry the consumer receives (it acks each). */
static void up_message(const Ke__V1__UpstreamMessage *msg, void *ud)
{
    upstream *u = ud;
    int k;
    pthread_mutex_lock(&u->mu);
    if (sscanf(msg->message->route->resource, "node/" NODE "/default/PodStatus/p-%d", &k) == 1 &&
        k >= 0 && k < NKEYS && u->count[k] < MAX_REPORTS) {
        u->rvs[k][u->count[k]++] = msg->message->header->resource_version;
        u->total++;
    }
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

static int up_wait(int *field, int n, int seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&U.mu);
    while (*field < n && pthread_cond_timedwait(&U.cv, &U.mu, &until) == 0) {
    }
    int got = *field;
    pthread_mutex_unlock(&U.mu);
    return got >= n;
}

/* subscribe: a durable consumer of group "status", acking each entry as it
 * arrives. Reports logged before it subscribes wait for it in the log, so
 * no synchronisation is needed. A large window means an entry is sent as
 * soon as it is logged, so none is coalesced with a newer report of its
 * key before the consumer sees it. */
static void subscribe(void)
{
    static const char *const groups[] = {"status", NULL};
    memset(&U, 0, sizeof(U));
    pthread_mutex_init(&U.mu, NULL);
    pthread_cond_init(&U.cv, NULL);
    ke_consumer_start(&U.con, C.admin, "test-loss", groups, 4096, 1, up_message, &U);
}

static uint64_t report_rv[NKEYS];

static void report(int k)
{
    char key[96], content[32];
    snprintf(key, sizeof(key), "node/" NODE "/default/PodStatus/p-%02d", k);
    uint64_t rv = ++report_rv[k];
    snprintf(content, sizeof(content), "{\"phase\":%llu}", (unsigned long long)rv);
    assert_int_equal(ke_edge_report(&E, key, rv, "status", content), KE_RPC_OK);
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    const char *cloud_flags[] = {"--cloudhub.keepalive=1s", "--cloudhub.dead_peer=4s", NULL};
    ke_cluster_start(&C, cloud_flags);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    assert_int_equal(ke_proxy_start(C.grpc_port, &P), 0);
    ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_flags);
    subscribe();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_consumer_stop(&U.con);
    ke_edge_stop(&E);
    ke_proxy_stop(P);
    ke_cluster_stop(&C);
    return 0;
}

/* audit_check reads the edge's audit table (edgecore stopped) and checks
 * that per key the applied versions only ever go up, and returns the
 * number of applies and of repeated (key, rv) pairs. */
static void audit_check(int *applies, int *repeats)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/edge.db", E.dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT key, rv FROM audit ORDER BY id", -1, &st,
                                        NULL),
                     SQLITE_OK);
    static uint64_t last[NKEYS + 64];
    memset(last, 0, sizeof(last));
    *applies = *repeats = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int k;
        if (sscanf((const char *)sqlite3_column_text(st, 0),
                   "node/" NODE "/default/ConfigMap/cm-%d", &k) != 1)
            continue;
        uint64_t rv = (uint64_t)sqlite3_column_int64(st, 1);
        if (rv == last[k])
            (*repeats)++;
        /* never an older version after a newer one */
        assert_true(rv >= last[k]);
        last[k] = rv;
        (*applies)++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- tests ---- */

static void test_tunnel_loss_free_with_cut_links_and_killed_edge(void **state)
{
    (void)state;
    int cuts = 0, kills = 0;
    for (int i = 0; i < 1000; i++) {
        publish(i % NKEYS, 0);
        report(i % NKEYS);
        if ((i + 1) % 100 == 0)
            cuts += ke_proxy_cut(P) > 0;
        if (i == 333 || i == 666) {
            ke_edge_kill(&E);
            kills++;
            ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_flags);
        }
    }
    assert_int_equal(kills, 2);
    assert_true(cuts >= 5); /* most cuts found a live connection to drop */

    /* Downstream: the edge converges to the cloud's state, key by key. */
    assert_true(wait_converged(NKEYS));
    /* Upstream: every report arrived once per version, in order per key. */
    assert_true(up_wait(&U.total, 1000, 60));
    pthread_mutex_lock(&U.mu);
    for (int k = 0; k < NKEYS; k++) {
        assert_int_equal(U.count[k], 10);
        for (int j = 0; j < U.count[k]; j++)
            assert_int_equal(U.rvs[k][j], (uint64_t)j + 1);
    }
    pthread_mutex_unlock(&U.mu);
    long long resyncs = ke_cluster_metric(&C, "ke_cloudhub_resyncs_total");
    if (resyncs < 3) /* the start and the two SIGKILLs at least */
        fail_msg("ke_cloudhub_resyncs_total is %lld, want >= 3", resyncs);
}

static void test_tunnel_offline_deletes_are_applied_on_reconnect(void **state)
{
    (void)state;
    ke_edge_stop(&E);
    for (int k = 10; k < 20; k++)
        publish(k, 1);
    publish(20, 0);
    assert_int_equal(ke_cluster_node_connected(&C, NODE), 0);
    ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_flags);
    assert_true(wait_converged(NKEYS));
    for (int k = 10; k < 20; k++) {
        char key[96];
        key_name(key, sizeof(key), k);
        Ke__V1__EdgeGetRequest req = KE__V1__EDGE_GET_REQUEST__INIT;
        req.key = key;
        ke_rpc_stub local = {E.local, &ke__v1__edge_local__descriptor};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        assert_int_equal(ke_rpc_stub_unary(&local, "Get", &req.base, NULL, &reply, &st), 0);
        assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    }
    assert_true(ke_file_wait_contains(E.log, "resync done updates=1 deletes=10", 10000));
}

static void cert_fingerprint(char *fp)
{
    char path[256], *pem = NULL;
    snprintf(path, sizeof(path), "%s/node.crt", E.dir);
    assert_int_equal(ke_pki_read_file(path, &pem, NULL), 0);
    assert_int_equal(ke_pki_ca_hash(pem, fp), 0);
    free(pem);
}

static void test_tunnel_certificate_rotation_mid_stream_loses_nothing(void **state)
{
    (void)state;
    char before[KE_PKI_HASH_HEX], after[KE_PKI_HASH_HEX];
    cert_fingerprint(before);
    long long renewals = ke_cluster_metric(&C, "ke_cloudhub_certificate_renewals_total");
    for (int i = 0; i < 400; i++) {
        publish(i % NKEYS, 0);
        if (i == 200)
            kill(E.proc.pid, SIGHUP); /* rotate now, while messages flow */
    }
    assert_true(wait_converged(NKEYS));
    cert_fingerprint(after);
    assert_string_not_equal(before, after);
    assert_int_equal(ke_cluster_metric(&C, "ke_cloudhub_certificate_renewals_total"),
                     renewals + 1);
    assert_true(ke_file_contains(E.log, "certificate rotated node=" NODE));
    /* The new certificate is this node's, from the cluster CA. */
    char path[256], *pem = NULL, *ca = NULL, cn[64];
    snprintf(path, sizeof(path), "%s/node.crt", E.dir);
    assert_int_equal(ke_pki_read_file(path, &pem, NULL), 0);
    snprintf(path, sizeof(path), "%s/ca.crt", E.dir);
    assert_int_equal(ke_pki_read_file(path, &ca, NULL), 0);
    assert_int_equal(ke_pki_verify_chain(ca, pem), 0);
    assert_int_equal(ke_pki_cert_info(pem, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "system:node:" NODE); /* Renew issues the node naming */
    free(pem);
    free(ca);
    /* Nothing applied twice, nothing older after newer, over the whole run. */
    ke_edge_stop(&E);
    int applies = 0, repeats = 0;
    audit_check(&applies, &repeats);
    assert_true(applies >= NKEYS);
    assert_int_equal(repeats, 0);
    ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_flags);
    assert_true(wait_converged(NKEYS));
}

static int wait_connected(int want)
{
    for (int i = 0; i < 300; i++) {
        if (ke_cluster_node_connected(&C, NODE) == want)
            return 1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_tunnel_dead_peer_is_detected_and_the_edge_returns(void **state)
{
    (void)state;
    assert_true(wait_connected(1));
    ke_proxy_freeze(P, 1); /* the link goes silent; no FIN, no RST */
    assert_true(wait_connected(0)); /* CloudHub's reaper (dead_peer 4 s) */
    assert_true(ke_file_contains(C.cloud_log, "node silent, closing its tunnel node=" NODE));
    ke_proxy_freeze(P, 0);
    assert_true(wait_connected(1));
    publish(0, 0);
    assert_true(wait_converged(NKEYS));
}

static void test_tunnel_metrics_are_exported(void **state)
{
    (void)state;
    assert_int_equal(ke_cluster_metric(&C, "ke_cloudhub_nodes_connected"), 1);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_nodes_known") >= 1);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_queue_depth") >= 0);
    /* Coalescing and resync mean fewer sends than publishes, but every key
     * went down at least once, and nothing is acked that was not sent. */
    long long sent = ke_cluster_metric(&C, "ke_cloudhub_messages_sent_total");
    long long acked = ke_cluster_metric(&C, "ke_cloudhub_messages_acked_total");
    assert_true(sent >= NKEYS);
    assert_true(acked >= NKEYS);
    assert_true(acked <= sent);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_messages_dropped_total") >= 0);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_queue_overflows_total") >= 0);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_resyncs_total") >= 5);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_upstream_received_total") >= 1000);
}

static void test_tunnel_cloudhub_restart_loses_no_pending_message(void **state)
{
    (void)state;
    /* Changes published while the node is away are only in CloudHub's
     * store; CloudHub restarts; the node comes back and gets them. */
    ke_edge_stop(&E);
    for (int k = 0; k < NKEYS; k += 2)
        publish(k, k % 10 == 0);
    const char *cloud_flags[] = {"--cloudhub.keepalive=1s", "--cloudhub.dead_peer=4s", NULL};
    ke_cluster_restart_cloud(&C, cloud_flags);
    ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_flags);
    assert_true(wait_connected(1));
    assert_true(wait_converged(NKEYS));
    assert_true(ke_file_wait_contains(E.log, "resync done updates=40 deletes=10", 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tunnel_loss_free_with_cut_links_and_killed_edge),
        cmocka_unit_test(test_tunnel_offline_deletes_are_applied_on_reconnect),
        cmocka_unit_test(test_tunnel_certificate_rotation_mid_stream_loses_nothing),
        cmocka_unit_test(test_tunnel_dead_peer_is_detected_and_the_edge_returns),
        cmocka_unit_test(test_tunnel_metrics_are_exported),
        cmocka_unit_test(test_tunnel_cloudhub_restart_loses_no_pending_message),
    };
    return cmocka_run_group_tests_name("tunnel/reliability", tests, setup, teardown);
}
