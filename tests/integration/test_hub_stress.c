/*
 * test_hub_stress.c — CloudHub under everything at once, small scale: 500
 * nodes, each its own certificate and TLS connection to a real cloudcore,
 * while a controller fans out versions of their objects through
 * Hub.PublishBatch:
 *
 *   connect storm  all 500 tunnels open at once;
 *   link cuts      every few rounds 50 random tunnels are cut and reopen
 *                  with their digest (what they hold);
 *   cloud kill     cloudcore is SIGKILLed mid fan-out and started again on
 *                  its file: every node reconnects at once, and publishes
 *                  that failed meanwhile are retried (idempotent by version);
 *
 * then, with every node reconnected, each node must hold exactly the last
 * acknowledged version of each of its objects (deleted ones absent): the
 * effect a user sees, not an ack. No message may be lost.
 *
 * A simulated node is EdgeHub minus storage: its "store" is an array of the
 * versions it applied; it acks each downstream message once applied, and
 * its Hello carries what it holds. Waits are on conditions with monotonic
 * deadlines; the reconnect back-off is the only timed wait.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define NODES 500
#define KEYS 8            /* objects per node */
#define ROUNDS 16         /* fan-out rounds: each publishes to every node */
#define PER_ROUND 3       /* keys of each node published per round */
#define CUT_EVERY 3       /* rounds between link cuts */
#define CUT_NODES 50
#define KILL_ROUND 8      /* the round after which cloudcore is killed */
#define BATCH 500         /* items per PublishBatch */
#define CONVERGE_MS 240000

typedef struct snode {
    char name[16];
    ke_rpc_channel *ch;
    ke_rpc_call *call;     /* the live Tunnel (a reference), or NULL */
    int gen;               /* stream generation: callbacks of old ones are ignored */
    int hello_acked, resynced;
    int64_t retry_at;      /* monotonic ms: when to open again */
    int fails;             /* consecutive failed opens (back-off) */
    uint64_t held[KEYS];   /* applied version per key; 0: absent */
    uint64_t ack_owed;     /* an ack not yet queued (send queue was full) */
} snode;

typedef struct stream_ud {
    snode *n;
    int gen;
} stream_ud;

static ke_cluster C;
static snode S[NODES];
static uint64_t expect[NODES][KEYS]; /* last acknowledged version; 0: deleted or never */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static atomic_int stopping;
static pthread_t driver;
static atomic_long opened, cuts;

static const char *const cloud_flags[] = {"--edgecontroller.enable=false",
                                          "--cloudhub.dead_peer=600s", NULL};

static int key_index(const char *key, int *node)
{
    /* node/s-NNN/default/ConfigMap/k-K */
    int ni, ki;
    if (sscanf(key, "node/s-%d/default/ConfigMap/k-%d", &ni, &ki) != 2 || ni < 0 ||
        ni >= NODES || ki < 0 || ki >= KEYS)
        return -1;
    *node = ni;
    return ki;
}

/* ---- a simulated node ---- */

static void send_ack_locked(snode *n, uint64_t seq)
{
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    Ke__V1__Ack a = KE__V1__ACK__INIT;
    a.seq = seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &a;
    int rc = ke_rpc_call_send(n->call, &f.base);
    n->ack_owed = rc == KE_EFULL ? seq : 0; /* sent at the next drain */
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    stream_ud *u = ud;
    snode *n = u->n;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    pthread_mutex_lock(&mu);
    if (u->gen != n->gen || !n->call) {
        pthread_mutex_unlock(&mu);
        return;
    }
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK: n->hello_acked = 1; break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        n->resynced = 1;
        n->fails = 0;
        pthread_cond_broadcast(&cv);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE: {
        const Ke__V1__Message *msg = f->message->message;
        int ni, k = msg && msg->route ? key_index(msg->route->resource, &ni) : -1;
        if (k >= 0 && &S[ni] == n) {
            uint64_t rv = msg->header->resource_version;
            if (msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE)
                n->held[k] = 0;
            else if (rv > n->held[k])
                n->held[k] = rv;
        }
        send_ack_locked(n, f->message->seq); /* applied: ack */
        pthread_cond_broadcast(&cv);
        break;
    }
    default: break; /* keepalives, acks of nothing, refusals (the close follows) */
    }
    pthread_mutex_unlock(&mu);
}

static void on_drain(ke_rpc_call *call, void *ud)
{
    (void)call;
    stream_ud *u = ud;
    pthread_mutex_lock(&mu);
    if (u->gen == u->n->gen && u->n->call && u->n->ack_owed)
        send_ack_locked(u->n, u->n->ack_owed);
    pthread_mutex_unlock(&mu);
}

static void on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    stream_ud *u = ud;
    snode *n = u->n;
    pthread_mutex_lock(&mu);
    if (u->gen == n->gen && n->call == call) {
        ke_rpc_call_unref(n->call);
        n->call = NULL;
        n->hello_acked = n->resynced = 0;
        n->ack_owed = 0;
        /* back-off: 100 ms doubling to 2 s, jittered */
        int64_t b = 100LL << (n->fails < 5 ? n->fails : 5);
        if (b > 2000)
            b = 2000;
        n->fails++;
        n->retry_at = ke_time_mono_ms() + b / 2 + rand() % (b / 2 + 1);
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    free(u);
}

/* open_locked starts a Tunnel for n and sends its Hello with what it holds. */
static void open_locked(snode *n)
{
    static const ke_rpc_handler h = {.on_message = on_message, .on_drain = on_drain,
                                     .on_close = on_close};
    stream_ud *u = calloc(1, sizeof(*u));
    assert_non_null(u);
    u->n = n;
    u->gen = ++n->gen;
    ke_rpc_stub stub = {n->ch, &ke__v1__cloud_hub__descriptor};
    if (ke_rpc_stub_start(&stub, "Tunnel", &h, u, NULL, &n->call) != 0) {
        free(u);
        n->call = NULL;
        n->retry_at = ke_time_mono_ms() + 200;
        return;
    }
    atomic_fetch_add(&opened, 1);
    Ke__V1__DigestEntry e[KEYS], *ep[KEYS];
    char keys[KEYS][64];
    size_t nd = 0;
    for (int k = 0; k < KEYS; k++) {
        if (!n->held[k])
            continue;
        ke__v1__digest_entry__init(&e[nd]);
        snprintf(keys[nd], sizeof(keys[nd]), "node/%s/default/ConfigMap/k-%d", n->name, k);
        e[nd].key = keys[nd];
        e[nd].resource_version = n->held[k];
        ep[nd] = &e[nd];
        nd++;
    }
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    hello.node_name = n->name;
    hello.agent_version = "stress";
    hello.n_digest = nd;
    hello.digest = ep;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    /* An empty queue takes the first frame; a failure ends in on_close. */
    if (ke_rpc_call_send(n->call, &f.base) != 0)
        ke_rpc_call_cancel(n->call);
}

/* The driver thread opens every closed tunnel once its back-off passed. */
static void *driver_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!atomic_load(&stopping)) {
        int64_t now = ke_time_mono_ms(), next = now + 1000;
        for (int i = 0; i < NODES; i++) {
            snode *n = &S[i];
            if (n->call)
                continue;
            if (n->retry_at <= now)
                open_locked(n);
            else if (n->retry_at < next)
                next = n->retry_at;
        }
        struct timespec until = ke_time_deadline(next - now > 0 ? next - now : 1);
        pthread_cond_timedwait(&cv, &mu, &until);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static int connected_count_locked(void)
{
    int c = 0;
    for (int i = 0; i < NODES; i++)
        c += S[i].call && S[i].resynced;
    return c;
}

static int wait_all_connected(int64_t timeout_ms)
{
    struct timespec until = ke_time_deadline(timeout_ms);
    pthread_mutex_lock(&mu);
    int ok = 1;
    while (connected_count_locked() < NODES && ok)
        ok = pthread_cond_timedwait(&cv, &mu, &until) != ETIMEDOUT;
    pthread_mutex_unlock(&mu);
    return ok;
}

/* ---- the controller's side ---- */

/* publish_batch publishes items [from, to) of the round's plan until
 * CloudHub answers (retrying through a cloud restart) and records what was
 * acknowledged. */
typedef struct plan_item {
    int node, key;
    uint64_t rv;
    int del;
} plan_item;

static void publish_batch(const plan_item *p, size_t n)
{
    Ke__V1__MessageHeader *h = calloc(n, sizeof(*h));
    Ke__V1__Route *r = calloc(n, sizeof(*r));
    Ke__V1__Message *m = calloc(n, sizeof(*m));
    Ke__V1__PublishRequest *req = calloc(n, sizeof(*req));
    Ke__V1__PublishRequest **items = calloc(n, sizeof(*items));
    char(*keys)[64] = calloc(n, sizeof(*keys));
    assert_true(h && r && m && req && items && keys);
    for (size_t i = 0; i < n; i++) {
        ke__v1__message_header__init(&h[i]);
        ke__v1__route__init(&r[i]);
        ke__v1__message__init(&m[i]);
        ke__v1__publish_request__init(&req[i]);
        snprintf(keys[i], sizeof(keys[i]), "node/%s/default/ConfigMap/k-%d", S[p[i].node].name,
                 p[i].key);
        h[i].resource_version = p[i].rv;
        r[i].source = "stress";
        r[i].group = "resource";
        r[i].operation = p[i].del ? KE__V1__OPERATION__OPERATION_DELETE
                                  : KE__V1__OPERATION__OPERATION_UPDATE;
        r[i].resource = keys[i];
        m[i].header = &h[i];
        m[i].route = &r[i];
        m[i].content.data = (uint8_t *)"{\"data\":{\"k\":\"v\"}}";
        m[i].content.len = strlen((const char *)m[i].content.data);
        req[i].node_name = S[p[i].node].name;
        req[i].message = &m[i];
        items[i] = &req[i];
    }
    Ke__V1__PublishBatchRequest b = KE__V1__PUBLISH_BATCH_REQUEST__INIT;
    b.n_items = n;
    b.items = items;
    int64_t end = ke_time_mono_ms() + 120000;
    for (;;) {
        ke_rpc_stub hub = {C.admin, &ke__v1__hub__descriptor};
        ke_rpc_call_opts o = {.timeout_ms = 20000};
        ke_rpc_status st;
        Ke__V1__PublishBatchReply *reply = NULL;
        assert_int_equal(
            ke_rpc_stub_unary(&hub, "PublishBatch", &b.base, &o, (ProtobufCMessage **)&reply, &st),
            0);
        if (st.code == KE_RPC_OK) {
            assert_int_equal(reply->n_results, n);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(reply->results[i]->code, KE_RPC_OK);
                expect[p[i].node][p[i].key] = p[i].del ? 0 : p[i].rv;
            }
            protobuf_c_message_free_unpacked(&reply->base, NULL);
            break;
        }
        /* The cloud is down or restarting: the same batch again (a version
         * already stored is a no-op). */
        assert_true(st.code == KE_RPC_UNAVAILABLE || st.code == KE_RPC_DEADLINE_EXCEEDED ||
                    st.code == KE_RPC_RESOURCE_EXHAUSTED);
        assert_true(ke_time_mono_ms() < end);
        struct timespec backoff = {0, 100 * 1000000L}; /* a retry's back-off */
        nanosleep(&backoff, NULL);
    }
    free(keys);
    free(items);
    free(req);
    free(m);
    free(r);
    free(h);
}

static void cut_links(void)
{
    pthread_mutex_lock(&mu);
    for (int c = 0; c < CUT_NODES; c++) {
        snode *n = &S[rand() % NODES];
        if (n->call) {
            ke_rpc_call_cancel(n->call); /* on_close reopens it after a back-off */
            atomic_fetch_add(&cuts, 1);
        }
    }
    pthread_mutex_unlock(&mu);
}

static int converged_locked(int *bad_node)
{
    for (int i = 0; i < NODES; i++) {
        if (!S[i].call || !S[i].resynced) {
            *bad_node = i;
            return 0;
        }
        for (int k = 0; k < KEYS; k++)
            if (S[i].held[k] != expect[i][k]) {
                *bad_node = i;
                return 0;
            }
    }
    return 1;
}

static void test_500_nodes_storms_cuts_and_a_cloud_kill_lose_nothing(void **state)
{
    (void)state;
    /* Connect storm: every node at once. */
    pthread_mutex_lock(&mu);
    for (int i = 0; i < NODES; i++)
        S[i].retry_at = 0;
    pthread_mutex_unlock(&mu);
    assert_int_equal(pthread_create(&driver, NULL, driver_main, NULL), 0);
    assert_true(wait_all_connected(120000));

    plan_item *plan = calloc((size_t)NODES * PER_ROUND, sizeof(*plan));
    assert_non_null(plan);
    for (int round = 1; round <= ROUNDS; round++) {
        size_t np = 0;
        for (int i = 0; i < NODES; i++)
            for (int j = 0; j < PER_ROUND; j++) {
                /* PER_ROUND distinct keys of the node, rotating */
                int k = (round * PER_ROUND + j) % KEYS;
                plan[np++] = (plan_item){i, k, (uint64_t)round, rand() % 5 == 0};
            }
        for (size_t off = 0; off < np; off += BATCH)
            publish_batch(plan + off, np - off < BATCH ? np - off : BATCH);
        if (round % CUT_EVERY == 0)
            cut_links();
        if (round == KILL_ROUND)
            ke_cluster_kill_restart_cloud(&C, cloud_flags);
    }
    free(plan);

    /* Every node reconnected, holding exactly the last acknowledged version
     * of each object. */
    struct timespec until = ke_time_deadline(CONVERGE_MS);
    int bad = -1, ok = 1;
    pthread_mutex_lock(&mu);
    while (!converged_locked(&bad) && ok)
        ok = pthread_cond_timedwait(&cv, &mu, &until) != ETIMEDOUT;
    if (!ok) {
        fprintf(stderr, "node %s: connected=%d resynced=%d\n", S[bad].name, S[bad].call != NULL,
                S[bad].resynced);
        for (int k = 0; k < KEYS; k++)
            fprintf(stderr, "  k-%d held %llu expected %llu\n", k,
                    (unsigned long long)S[bad].held[k], (unsigned long long)expect[bad][k]);
    }
    pthread_mutex_unlock(&mu);
    assert_true(ok);
    fprintf(stderr, "stress: %d nodes, %ld tunnel opens, %ld cuts, %d rounds of %d messages\n",
            NODES, atomic_load(&opened), atomic_load(&cuts), ROUNDS, NODES * PER_ROUND);
    assert_true(atomic_load(&cuts) > 0);
    assert_true(atomic_load(&opened) >= 2 * NODES); /* the storm and the restart */
}

static int setup(void **state)
{
    (void)state;
    /* Each node holds one socket here and one in cloudcore (which inherits
     * this limit). */
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 4 * NODES) {
        rl.rlim_cur = rl.rlim_max < 4 * NODES ? rl.rlim_max : 4 * NODES;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    assert_true(rl.rlim_cur >= 2 * NODES + 100);
    ke_time_cond_init(&cv);
    srand(20261201);
    ke_cluster_start(&C, cloud_flags);
    /* Joins: keadm join, 8 at a time. */
    assert_int_equal(ke_tp_sh("seq -f 's-%%03g' 0 %d | xargs -P 8 -I NODE sh -c '%s join "
                              "--cloudhub 127.0.0.1:%d --token %s --node-name NODE --dir %s/NODE "
                              ">/dev/null 2>%s/NODE.join.log'",
                              NODES - 1, ke_tp_env("KE_KEADM"), C.grpc_port, ke_cluster_token(&C),
                              C.dir, C.dir),
                     0);
    for (int i = 0; i < NODES; i++) {
        snode *n = &S[i];
        char ca[128], cert[200], key[200], target[64];
        snprintf(n->name, sizeof(n->name), "s-%03d", i);
        snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
        snprintf(cert, sizeof(cert), "%.63s/%.15s/node.crt", C.dir, n->name);
        snprintf(key, sizeof(key), "%.63s/%.15s/node.key", C.dir, n->name);
        snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
        ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
        ke_rpc_channel_opts o = {.tls = &tls};
        assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &n->ch), 0);
        n->retry_at = INT64_MAX; /* the test starts them all at once */
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&stopping, 1);
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (driver)
        pthread_join(driver, NULL);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < NODES; i++)
        if (S[i].call)
            ke_rpc_call_cancel(S[i].call);
    pthread_mutex_unlock(&mu);
    /* Wait for every on_close (they free their data and drop the calls). */
    struct timespec until = ke_time_deadline(30000);
    pthread_mutex_lock(&mu);
    for (;;) {
        int open = 0;
        for (int i = 0; i < NODES; i++)
            open += S[i].call != NULL;
        if (!open || pthread_cond_timedwait(&cv, &mu, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < NODES; i++)
        ke_rpc_channel_free(S[i].ch);
    ke_cluster_stop(&C);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_500_nodes_storms_cuts_and_a_cloud_kill_lose_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
