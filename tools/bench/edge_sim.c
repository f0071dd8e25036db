/*
 * edge_sim — simulates N edge nodes in one process against one CloudHub
 * (a real cloudcore on loopback, with the PKI of `keadm init`) and prints
 * the figures:
 *
 *   join      N nodes through CloudHub.Join (token + CSR), 64 in flight;
 *   connect   one TLS channel and one Tunnel stream per node (Hello with an
 *             empty digest), 200 connection attempts in flight; time from
 *             the first open to the last HelloAck;
 *   RSS       cloudcore's VmRSS before the nodes connect and with all N
 *             connected, and the difference per node;
 *   fan-out   M messages per node published by a "system:admin" client
 *             over Hub.PublishBatch (--batch B messages per call, 4 calls
 *             in flight) or Hub.Publish (--batch 1, 256 in flight), as fast
 *             as CloudHub answers or paced at --rate; time from the first
 *             publish until every node has acked all of its messages, and
 *             the latency of each message from its Publish being issued to
 *             the node sending its ack (p50/p99/max).
 *   restart   (--restart) SIGKILL cloudcore, start it again on the same
 *             port and files, and time until every node has reconnected
 *             (HelloAck) and resynced (ResyncDone). Every node retries as
 *             EdgeHub does: a jittered exponential backoff (500 ms doubling
 *             to 30 s, reset by a HelloAck), at least the retry_after_ms of
 *             an admission refusal (plus up to a tenth), no window (a storm);
 *             each node keeps a TLS session cache of its own (a session
 *             carries its client certificate, so nodes must not share one)
 *             and the figures say how many HelloAcks came on a resumed
 *             session. A thread of its own (the reconnector) opens the due
 *             reconnects; the callbacks only schedule them.
 *
 *   upstream  with --reports S: for S seconds every node sends one report a
 *             second (its own key each time, so none is coalesced), the
 *             nodes spread evenly over the second, to a Hub.Subscribe
 *             consumer ("edgesim", window 4096, acking each entry); the
 *             latency of each from its send to its arrival at the consumer.
 *
 * A simulated node does what EdgeHub does on the wire, minus storage: it
 * acks every downstream message at once and ignores keepalives. It sends
 * no keepalives itself, so cloudcore runs with --cloudhub.dead_peer=600s.
 *
 * Threads: the main thread drives the phases; every rpc callback runs on
 * the one ke_rpc_loop (SIM_LOOP_THREADS threads) shared by all nodes, the
 * join channel and the admin channel. Callbacks only update counters and
 * wake the main thread through sim->w; the main thread never sleeps
 * to wait, it waits on counters with a stall timeout.
 *
 * Usage: ke-bench-edgesim [--nodes N] [--messages M] [--batch B] [--rate R] [--reports S]
 *                         [--keep-tmp] [--restart] [--hello-concurrency K] [--no-resume]
 *                         [--cloudcore PATH] [--keadm PATH]
 * (the programs default to the ones built next to this one). Not run by
 * the tests; figures go in the README's benchmarks section.
 */
#include "bench_util.h"
#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_rpc.h"
#include "ke_time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- bounds and knobs, all in one place ---- */
#define SIM_DEFAULT_NODES 1000
#define SIM_DEFAULT_MESSAGES 10
#define SIM_MAX_NODES 99999      /* names are sim-00001 .. sim-99999 */
#define SIM_MAX_MESSAGES 10000   /* per node; below cloudhub's queue bound */
#define SIM_MAX_TOTAL 10000000L  /* nodes * messages: 16 bytes of timing each */
#define SIM_JOIN_WINDOW 64       /* Join calls in flight */
#define SIM_CONNECT_WINDOW 200   /* tunnels between open and HelloAck */
#define SIM_PUBLISH_WINDOW 256   /* Publish calls in flight (--batch 1) */
#define SIM_DEFAULT_BATCH 256    /* messages per PublishBatch */
#define SIM_MAX_BATCH 4096       /* CloudHub's bound on one PublishBatch */
#define SIM_BATCH_CALLS 4        /* PublishBatch calls in flight */
#define SIM_LOOP_THREADS 2       /* the rpc loop shared by every node */
#define SIM_STALL_S 300          /* a phase fails when its counter stands still this long */
#define SIM_START_S 60           /* keadm init and cloudcore's "ready" line */
#define SIM_STOP_S 60            /* cloudcore's exit after SIGTERM */
#define SIM_RPC_TIMEOUT_MS (SIM_STALL_S * 1000LL) /* deadline of each Join / Publish */
#define SIM_TOKEN_TTL_S 3600
/* The restart phase's retries, as EdgeHub's defaults. */
#define SIM_BACKOFF_INITIAL_MS 500
#define SIM_BACKOFF_MAX_MS 30000
#define SIM_RETRY_AFTER_MAX_MS 60000u
#define SIM_RECONNECT_TICK_MS 100 /* the reconnector's longest sleep */
/* Open files per process: the simulator and cloudcore each hold one socket
 * per node (measured: 1,000 nodes -> 1,010 and 1,017 fds), and each
 * process has its own RLIMIT_NOFILE, so N + a reserve, not 2N, is needed. */
#define SIM_FD_PER_NODE 1
#define SIM_FD_RESERVE 100       /* files, pipes, epoll, listeners, grpc's wakeup fds */
#define SIM_CONTENT_BYTES 200    /* JSON content of a published message */
#define SIM_NAME_MAX 16
#define SIM_DIR_MAX 512          /* the temporary directory, TMPDIR included */
#define SIM_SUBDIR_MAX (SIM_DIR_MAX + 16)    /* TMP/cloud, TMP/nodes */
#define SIM_PATH_MAX (SIM_SUBDIR_MAX + 64)   /* a file in them */
#define SIM_PROG_MAX (PATH_MAX + 64)         /* --cloudcore, --keadm */

#define SIM_JOIN_PATH "/ke.v1.CloudHub/Join"
#define SIM_PUBLISH_PATH "/ke.v1.Hub/Publish"
#define SIM_PUBLISH_BATCH_PATH "/ke.v1.Hub/PublishBatch"

typedef struct sim sim;

/* A PublishBatch call in flight. */
typedef struct sim_batch {
    sim *s;
    int n;
} sim_batch;

/* sim_node: one simulated edge node. Written by the main thread before its
 * calls start; afterwards the callbacks touch only the atomics. */
typedef struct sim_node {
    sim *s;
    uint32_t idx;
    char name[SIM_NAME_MAX];
    char *key_pem;  /* until written to TMP/nodes/<name>.key */
    char *cert_pem; /* set by the Join reply, until written */
    ke_rpc_channel *ch;
    ke_rpc_call *call; /* the Tunnel (our reference), or NULL */
    atomic_int hello_acked;
    atomic_uint received; /* distinct fan-out messages acked */
    /* restart phase: the close callback schedules, the reconnector opens */
    ke_rpc_session_cache *tls_cache; /* this node's TLS sessions, or NULL */
    atomic_int need_reconnect;
    atomic_llong retry_at_ms;        /* monotonic */
    atomic_uint retry_after_ms;      /* of the last admission refusal; 0: none */
    int64_t backoff_ms;              /* the close callback's only */
    unsigned seed;
    atomic_int restart_acked, restart_resynced; /* counted once each */
    atomic_llong resynced_ns;        /* its first ResyncDone after the restart */
    atomic_uint refused;             /* admission refusals it got */
} sim_node;

struct sim {
    /* options */
    long n_nodes, n_messages;
    int batch;  /* messages per call: 1 = Publish, more = PublishBatch */
    long rate;  /* messages per second to publish at (0: as fast as replies allow) */
    int keep_tmp, restart, no_resume;
    long hello_concurrency; /* 0: cloudcore's default */
    char cloudcore[SIM_PROG_MAX], keadm[SIM_PROG_MAX];
    /* setup */
    char tmp[SIM_DIR_MAX], cloud[SIM_SUBDIR_MAX], nodes_dir[SIM_SUBDIR_MAX];
    char target[64];
    pid_t cc_pid;
    ke_rpc_loop *loop;
    sim_node *node;
    /* wake-ups and the first error, for the main thread */
    bench_waiter w;
    atomic_int stopping;
    /* per phase: calls finished (ok or not) */
    atomic_long join_finished, connect_finished, publish_finished, closed;
    atomic_long opened; /* tunnels started */
    /* restart phase */
    atomic_int restarting, reconnector_stop;
    atomic_long restart_acked, restart_resynced, refusals, attempts, failed_attempts, resumed;
    atomic_llong last_restart_ack_ns, last_resync_ns;
    pthread_mutex_t rmu;
    pthread_cond_t rcv; /* CLOCK_MONOTONIC: wakes the reconnector */
    atomic_llong last_hello_ns;
    /* fan-out: [node * n_messages + j] */
    int64_t *issue_ns;
    _Atomic int64_t *latency_ns; /* 0: not acked yet */
    atomic_long acked, duplicates;
    atomic_llong fanout_done_ns;
    /* upstream: [node * reports + k], report k of node at seq k + 1 */
    long n_reports;              /* per node (--reports S: one a second for S s) */
    int64_t *report_ns;          /* when each was sent (monotonic) */
    _Atomic int64_t *report_lat; /* report -> consumer; 0: not delivered yet */
    atomic_long delivered, up_duplicates, up_send_failed;
    atomic_int consumer_closing;
    _Atomic uint64_t ack_owed; /* newest log id the consumer could not ack yet (queue full) */
};


/* ---- processes: keadm and cloudcore ---- */

/* raise_nofile: bench_raise_nofile, saying what it means here. */
static int raise_nofile(long need, rlim_t *got)
{
    int rc = bench_raise_nofile(need, got);
    if (rc == -1)
        fprintf(stderr, "edge_sim: %ld nodes need %ld open files per process (%d per node "
                        "+ %d) but the hard limit is %llu and cannot be raised (%s): lower "
                        "--nodes, or raise it (ulimit -Hn, limits.conf, CAP_SYS_RESOURCE)\n",
                (need - SIM_FD_RESERVE) / SIM_FD_PER_NODE, need, SIM_FD_PER_NODE, SIM_FD_RESERVE,
                (unsigned long long)*got, strerror(errno));
    else if (rc != 0)
        fprintf(stderr, "edge_sim: cannot raise the open files limit: %s\n", strerror(errno));
    return rc;
}

/* ---- phase 2: join ---- */

static void join_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    sim_node *n = ud;
    sim *s = n->s;
    const Ke__V1__JoinResponse *r = (const Ke__V1__JoinResponse *)reply;
    if (st->code != KE_RPC_OK)
        bench_waiter_fail(&s->w, "join %s: %s: %s", n->name, ke_rpc_status_name(st->code),
                          st->message);
    else if (r->certificate_pem.len == 0 || r->certificate_pem.len > KE_PKI_PEM_MAX ||
             !(n->cert_pem = strndup((const char *)r->certificate_pem.data,
                                     r->certificate_pem.len)))
        bench_waiter_fail(&s->w, "join %s: no usable certificate in the reply", n->name);
    atomic_fetch_add(&s->join_finished, 1);
    bench_waiter_signal(&s->w);
}

/* join_issue makes node n's key, CSR and token and starts its Join. */
static int join_issue(ke_rpc_channel *ch, sim_node *n, const char *ca_pem,
                      const uint8_t *secret, size_t secret_len)
{
    char *csr = NULL, *token = NULL;
    int rc = ke_pki_key_create(&n->key_pem);
    if (rc == 0)
        rc = ke_pki_csr_create(n->key_pem, n->name, &csr);
    if (rc == 0)
        rc = ke_pki_token_create(ca_pem, secret, secret_len, ke_time_wall_ms() / 1000 + SIM_TOKEN_TTL_S,
                                 &token);
    if (rc == 0) {
        Ke__V1__JoinRequest req = KE__V1__JOIN_REQUEST__INIT;
        req.token = token;
        req.node_name = n->name;
        req.csr_pem.data = (uint8_t *)csr;
        req.csr_pem.len = strlen(csr);
        ke_rpc_call_opts o = {.timeout_ms = SIM_RPC_TIMEOUT_MS};
        rc = ke_rpc_unary_async(ch, SIM_JOIN_PATH, &req.base, &ke__v1__join_response__descriptor,
                                &o, join_on_reply, n);
    }
    if (rc != 0)
        fprintf(stderr, "edge_sim: cannot start the join of %s: %s\n", n->name, ke_strerror(rc));
    free(csr);
    free(token);
    return rc;
}

static int phase_join(sim *s)
{
    char path[SIM_PATH_MAX];
    char *ca_pem = NULL;
    uint8_t secret[KE_PKI_SECRET_MAX];
    size_t secret_len = 0;
    ke_rpc_channel *ch = NULL;
    int status = -1;
    snprintf(path, sizeof(path), "%s/ca.crt", s->cloud);
    if (ke_pki_read_file(path, &ca_pem, NULL) != 0) {
        fprintf(stderr, "edge_sim: cannot read %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/token.secret", s->cloud);
    if (ke_pki_secret_read(path, secret, sizeof(secret), &secret_len) != 0) {
        fprintf(stderr, "edge_sim: cannot read %s\n", path);
        goto out;
    }
    /* Server-authenticated TLS, no client certificate: as keadm join. */
    snprintf(path, sizeof(path), "%s/ca.crt", s->cloud);
    ke_rpc_tls tls = {.ca_file = path};
    ke_rpc_channel_opts co = {.tls = &tls};
    if (ke_rpc_channel_new(s->loop, s->target, &co, &ch) != 0)
        goto out;

    int64_t t0 = bench_now_ns();
    for (long i = 0; i < s->n_nodes; i++) {
        if (bench_waiter_wait(&s->w, &s->join_finished, i - SIM_JOIN_WINDOW + 1, "join replies") !=
                0 ||
            join_issue(ch, &s->node[i], ca_pem, secret, secret_len) != 0)
            goto out;
    }
    if (bench_waiter_wait(&s->w, &s->join_finished, s->n_nodes, "join replies") != 0)
        goto out;
    double el = (double)(bench_now_ns() - t0) / 1e9;
    printf("join:     %ld nodes in %.2f s (%.0f joins/s, %d in flight, keys and CSRs made "
           "meanwhile)\n",
           s->n_nodes, el, (double)s->n_nodes / el, SIM_JOIN_WINDOW);

    for (long i = 0; i < s->n_nodes; i++) {
        sim_node *n = &s->node[i];
        char crt[SIM_PATH_MAX], key[SIM_PATH_MAX];
        snprintf(crt, sizeof(crt), "%s/%s.crt", s->nodes_dir, n->name);
        snprintf(key, sizeof(key), "%s/%s.key", s->nodes_dir, n->name);
        if (bench_write_plain(key, n->key_pem, 0600) != 0 ||
            bench_write_plain(crt, n->cert_pem, 0644) != 0) {
            fprintf(stderr, "edge_sim: cannot write %s: %s\n", crt, strerror(errno));
            goto out;
        }
        free(n->key_pem);
        free(n->cert_pem);
        n->key_pem = n->cert_pem = NULL;
    }
    status = 0;
out:
    ke_rpc_channel_free(ch);
    free(ca_pem);
    return status;
}

/* ---- phase 3: the nodes' tunnels ---- */

static void node_on_hello_ack(sim_node *n, ke_rpc_call *call)
{
    sim *s = n->s;
    atomic_store(&n->hello_acked, 1);
    if (atomic_load(&s->restarting)) {
        n->backoff_ms = SIM_BACKOFF_INITIAL_MS; /* as EdgeHub: a good stream resets it */
        if (ke_rpc_call_tls_resumed(call) == 1)
            atomic_fetch_add(&s->resumed, 1);
        if (atomic_exchange(&n->restart_acked, 1) == 0) {
            atomic_store(&s->last_restart_ack_ns, bench_now_ns());
            atomic_fetch_add(&s->restart_acked, 1);
        }
        bench_waiter_signal(&s->w);
        return;
    }
    atomic_store(&s->last_hello_ns, bench_now_ns());
    atomic_fetch_add(&s->connect_finished, 1);
    bench_waiter_signal(&s->w);
}

static void node_on_resync_done(sim_node *n)
{
    sim *s = n->s;
    if (atomic_load(&s->restarting) && atomic_exchange(&n->restart_resynced, 1) == 0) {
        int64_t t = bench_now_ns();
        atomic_store(&n->resynced_ns, t);
        atomic_store(&s->last_resync_ns, t);
        atomic_fetch_add(&s->restart_resynced, 1);
        bench_waiter_signal(&s->w);
    }
}

/* node_on_refusal: in the restart phase an admission refusal (seq 0,
 * fatal) sets the node's next wait; any other refusal is a failure. */
static void node_on_refusal(sim_node *n, const Ke__V1__Refusal *r)
{
    sim *s = n->s;
    if (atomic_load(&s->restarting) && r->seq == 0 && r->fatal) {
        atomic_fetch_add(&s->refusals, 1);
        atomic_fetch_add(&n->refused, 1);
        atomic_store(&n->retry_after_ms, r->retry_after_ms > SIM_RETRY_AFTER_MAX_MS
                                             ? SIM_RETRY_AFTER_MAX_MS
                                             : r->retry_after_ms);
        return; /* the stream ends: node_on_close schedules the retry */
    }
    bench_waiter_fail(&s->w, "node %s: cloud refused seq=%llu: %s", n->name,
                      (unsigned long long)r->seq, r->reason);
}

/* node_schedule (the close callback, restart phase): the next attempt as
 * EdgeHub's: uniform in [b/2, b] of the backoff b (doubling to its bound),
 * and no sooner than a retry_after (plus up to a tenth of it). */
static void node_schedule(sim_node *n)
{
    sim *s = n->s;
    int64_t b = n->backoff_ms ? n->backoff_ms : SIM_BACKOFF_INITIAL_MS;
    int64_t delay = b / 2 + (int64_t)(rand_r(&n->seed) % (unsigned)(b / 2 + 1));
    n->backoff_ms = b * 2 > SIM_BACKOFF_MAX_MS ? SIM_BACKOFF_MAX_MS : b * 2;
    int64_t ra = (int64_t)atomic_exchange(&n->retry_after_ms, 0);
    if (ra) {
        ra += (int64_t)(rand_r(&n->seed) % (unsigned)(ra / 10 + 1));
        if (ra > delay)
            delay = ra;
    }
    atomic_store(&n->retry_at_ms, bench_now_ns() / 1000000 + delay);
    atomic_store(&n->need_reconnect, 1); /* last: the reconnector may take it now */
    pthread_mutex_lock(&s->rmu);
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

/* node_on_downstream acks at once, then records the latency of message
 * j (its resource_version - 1) of this node. */
static void node_on_downstream(sim_node *n, ke_rpc_call *call, const Ke__V1__SequencedMessage *sm)
{
    sim *s = n->s;
    Ke__V1__Ack ack = KE__V1__ACK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    ack.seq = sm->seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &ack;
    ke_rpc_call_send(call, &f.base);
    int64_t t = bench_now_ns();
    uint64_t rv = sm->message && sm->message->header ? sm->message->header->resource_version : 0;
    if (rv == 0 || rv > (uint64_t)s->n_messages || !s->latency_ns) {
        bench_waiter_fail(&s->w, "node %s got a message it was not sent (seq=%llu rv=%llu)",
                          n->name, (unsigned long long)sm->seq, (unsigned long long)rv);
        return;
    }
    size_t k = (size_t)n->idx * (size_t)s->n_messages + (size_t)(rv - 1);
    int64_t expect = 0, lat = t - s->issue_ns[k];
    if (!atomic_compare_exchange_strong(&s->latency_ns[k], &expect, lat > 0 ? lat : 1)) {
        atomic_fetch_add(&s->duplicates, 1);
        return;
    }
    unsigned got = atomic_fetch_add(&n->received, 1) + 1;
    long total = atomic_fetch_add(&s->acked, 1) + 1;
    if (total == s->n_nodes * s->n_messages)
        atomic_store(&s->fanout_done_ns, t);
    if (got == (unsigned)s->n_messages)
        bench_waiter_signal(&s->w); /* the main thread waits for the last node */
}

static void node_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    sim_node *n = ud;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        node_on_hello_ack(n, call);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        node_on_resync_done(n);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        node_on_downstream(n, call, f->message);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        node_on_refusal(n, f->refusal);
        break;
    default: /* keepalive, ack of upstream: nothing to do */
        break;
    }
}

static void node_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    sim_node *n = ud;
    sim *s = n->s;
    if (atomic_load(&s->stopping)) {
        /* our own cancel */
    } else if (atomic_load(&s->restarting)) {
        /* cloudcore killed, an admission refusal, or not up yet: retry */
        if (!atomic_load(&n->hello_acked))
            atomic_fetch_add(&s->failed_attempts, 1);
        atomic_fetch_add(&s->closed, 1);
        node_schedule(n); /* last: the reconnector may free the call now */
        return;
    } else if (!atomic_load(&n->hello_acked)) {
        bench_waiter_fail(&s->w, "tunnel of %s closed before HelloAck: %s: %s", n->name,
                          ke_rpc_status_name(st->code), st->message);
        atomic_fetch_add(&s->connect_finished, 1);
    } else {
        bench_waiter_fail(&s->w, "tunnel of %s closed: %s: %s", n->name,
                          ke_rpc_status_name(st->code), st->message);
    }
    atomic_fetch_add(&s->closed, 1);
    bench_waiter_signal(&s->w);
}

static const ke_rpc_handler node_handler = {.on_message = node_on_message,
                                            .on_close = node_on_close};

/* node_connect opens node n's own channel (its certificate) and Tunnel,
 * and sends its Hello. */
static int node_connect(sim *s, sim_node *n)
{
    char ca[SIM_PATH_MAX], crt[SIM_PATH_MAX], key[SIM_PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca.crt", s->cloud);
    snprintf(crt, sizeof(crt), "%s/%s.crt", s->nodes_dir, n->name);
    snprintf(key, sizeof(key), "%s/%s.key", s->nodes_dir, n->name);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = crt, .key_file = key};
    if (!s->no_resume && !n->tls_cache && !(n->tls_cache = ke_rpc_session_cache_new(1))) {
        fprintf(stderr, "edge_sim: out of memory (TLS session cache of %s)\n", n->name);
        return KE_ENOMEM;
    }
    ke_rpc_channel_opts co = {.tls = &tls, .session_cache = n->tls_cache};
    atomic_store(&n->hello_acked, 0);
    int rc = ke_rpc_channel_new(s->loop, s->target, &co, &n->ch);
    ke_rpc_stub stub = {n->ch, &ke__v1__cloud_hub__descriptor};
    if (rc == 0)
        rc = ke_rpc_stub_start(&stub, "Tunnel", &node_handler, n, NULL, &n->call);
    if (rc != 0) {
        fprintf(stderr, "edge_sim: cannot open the tunnel of %s: %s\n", n->name, ke_strerror(rc));
        return rc;
    }
    atomic_fetch_add(&s->opened, 1);
    Ke__V1__Hello h = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.node_name = n->name;
    h.agent_version = "sim";
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &h;
    if ((rc = ke_rpc_call_send(n->call, &f.base)) != 0)
        ke_rpc_call_cancel(n->call); /* on_close reports it */
    return 0;
}

static int phase_connect(sim *s)
{
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < s->n_nodes; i++) {
        if (bench_waiter_wait(&s->w, &s->connect_finished, i - SIM_CONNECT_WINDOW + 1,
                              "HelloAcks") != 0 ||
            node_connect(s, &s->node[i]) != 0)
            return -1;
    }
    if (bench_waiter_wait(&s->w, &s->connect_finished, s->n_nodes, "HelloAcks") != 0)
        return -1;
    double el = (double)(atomic_load(&s->last_hello_ns) - t0) / 1e9;
    printf("connect:  %ld nodes in %.2f s (%.0f nodes/s, %d handshakes in flight)\n", s->n_nodes,
           el, (double)s->n_nodes / el, SIM_CONNECT_WINDOW);
    return 0;
}

/* ---- CloudHub's lock, from its metrics ---- */

typedef struct lock_snap {
    double contended, wait_s, write_held_s;
    int64_t at_ns;
} lock_snap;

static void lock_snap_take(lock_snap *l)
{
    int port = bench_cloudcore_http_port();
    l->contended = bench_metric(port, "ke_cloudhub_lock_contended_total");
    l->wait_s = bench_metric(port, "ke_cloudhub_lock_wait_seconds_total");
    l->write_held_s = bench_metric(port, "ke_cloudhub_write_lock_seconds_total");
    l->at_ns = bench_now_ns();
}

/* lock_print says what CloudHub's one state lock cost between a and now:
 * waits for it and the writer's hold, as shares of one CPU of the wall
 * time, so a finer lock's best case is read off. */
static void lock_print(const char *phase, const lock_snap *a)
{
    lock_snap b;
    lock_snap_take(&b);
    if (a->contended < 0 || b.contended < 0 || a->wait_s < 0 || b.wait_s < 0) {
        printf("%s lock: CloudHub's lock metrics could not be read\n", phase);
        return;
    }
    double wall = (double)(b.at_ns - a->at_ns) / 1e9;
    printf("%s lock: %.0f waits for CloudHub's state lock, %.2f s waited (%.1f%% of the wall "
           "time), writer held it %.2f s (%.1f%%)\n",
           phase, b.contended - a->contended, b.wait_s - a->wait_s,
           100.0 * (b.wait_s - a->wait_s) / wall, b.write_held_s - a->write_held_s,
           100.0 * (b.write_held_s - a->write_held_s) / wall);
}

/* ---- phase 5: fan-out ---- */

static void publish_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    (void)reply;
    sim *s = ud;
    if (st->code != KE_RPC_OK)
        bench_waiter_fail(&s->w, "publish: %s: %s", ke_rpc_status_name(st->code), st->message);
    atomic_fetch_add(&s->publish_finished, 1);
    bench_waiter_signal(&s->w);
}

/* A PublishBatch in flight: its items, counted as finished on the reply. */
static void batch_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    sim_batch *b = ud;
    sim *s = b->s;
    const Ke__V1__PublishBatchReply *r = (const Ke__V1__PublishBatchReply *)reply;
    if (st->code != KE_RPC_OK)
        bench_waiter_fail(&s->w, "publish batch: %s: %s", ke_rpc_status_name(st->code),
                          st->message);
    else if (r->n_results != (size_t)b->n)
        bench_waiter_fail(&s->w, "publish batch: %zu results for %d items", r->n_results, b->n);
    else
        for (size_t i = 0; i < r->n_results; i++)
            if (r->results[i]->code != KE_RPC_OK) {
                bench_waiter_fail(&s->w, "publish batch item %zu: %s", i, r->results[i]->error);
                break;
            }
    atomic_fetch_add(&s->publish_finished, b->n);
    free(b);
    bench_waiter_signal(&s->w);
}

/* publish_issue publishes the messages k .. k+cnt-1 of the round-robin
 * order (message k is number k / nodes of node k % nodes): one Publish, or
 * one PublishBatch when --batch is above 1. */
static int publish_issue(sim *s, ke_rpc_channel *admin, long k, int cnt)
{
    bench_pub *p = calloc((size_t)cnt, sizeof(*p));
    Ke__V1__PublishRequest **items = calloc((size_t)cnt, sizeof(*items));
    sim_batch *b = s->batch > 1 ? calloc(1, sizeof(*b)) : NULL;
    int rc = KE_ENOMEM;
    if (!p || !items || (s->batch > 1 && !b))
        goto out;
    for (int i = 0; i < cnt; i++) {
        sim_node *n = &s->node[(k + i) % s->n_nodes];
        long j = (k + i) / s->n_nodes;
        s->issue_ns[(size_t)n->idx * (size_t)s->n_messages + (size_t)j] =
            bench_pub_fill(&p[i], n->name, j, SIM_CONTENT_BYTES);
        items[i] = &p[i].req;
    }
    ke_rpc_call_opts o = {.timeout_ms = SIM_RPC_TIMEOUT_MS};
    if (!b) {
        rc = ke_rpc_unary_async(admin, SIM_PUBLISH_PATH, &p[0].req.base,
                                &ke__v1__publish_reply__descriptor, &o, publish_on_reply, s);
    } else {
        Ke__V1__PublishBatchRequest req = KE__V1__PUBLISH_BATCH_REQUEST__INIT;
        req.n_items = (size_t)cnt;
        req.items = items;
        b->s = s;
        b->n = cnt;
        rc = ke_rpc_unary_async(admin, SIM_PUBLISH_BATCH_PATH, &req.base,
                                &ke__v1__publish_batch_reply__descriptor, &o, batch_on_reply, b);
        if (rc == 0)
            b = NULL; /* the reply frees it */
    }
out:
    if (rc != 0)
        fprintf(stderr, "edge_sim: cannot start a publish: %s\n", ke_strerror(rc));
    free(b);
    free(items);
    free(p);
    return rc;
}

static int phase_fanout(sim *s)
{
    ke_rpc_channel *admin = NULL;
    long total = s->n_nodes * s->n_messages, issued = 0;
    long window = s->batch > 1 ? (long)s->batch * SIM_BATCH_CALLS : SIM_PUBLISH_WINDOW;
    int status = -1;
    int64_t *lat = NULL;
    if (bench_admin_channel(s->loop, s->target, s->cloud, &admin) != 0)
        goto out;
    /* Round-robin over the nodes so that every tunnel is busy at once;
     * with --rate, each call is issued at its time in the schedule. */
    lock_snap lk;
    lock_snap_take(&lk);
    int64_t t0 = bench_now_ns();
    long long cc_cpu0 = bench_cpu_ms(s->cc_pid), sim_cpu0 = bench_cpu_ms(getpid());
    while (issued < total) {
        int cnt = (int)(total - issued < s->batch ? total - issued : s->batch);
        if (s->rate > 0) {
            int64_t at = t0 + (int64_t)((double)issued * 1e9 / (double)s->rate);
            struct timespec ts = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        if (bench_waiter_wait(&s->w, &s->publish_finished, issued + cnt - window,
                              "Publish replies") != 0 ||
            publish_issue(s, admin, issued, cnt) != 0)
            goto out;
        issued += cnt;
    }
    if (bench_waiter_wait(&s->w, &s->acked, total, "messages acked by the nodes") != 0 ||
        bench_waiter_wait(&s->w, &s->publish_finished, total, "Publish replies") != 0)
        goto out;
    double el = (double)(atomic_load(&s->fanout_done_ns) - t0) / 1e9;
    long long cc_cpu = bench_cpu_ms(s->cc_pid) - cc_cpu0, sim_cpu = bench_cpu_ms(getpid()) - sim_cpu0;
    char how[128];
    int hl;
    if (s->batch > 1)
        hl = snprintf(how, sizeof(how), "PublishBatch of %d, %d calls in flight", s->batch,
                      SIM_BATCH_CALLS);
    else
        hl = snprintf(how, sizeof(how), "Publish, %d in flight", SIM_PUBLISH_WINDOW);
    if (s->rate > 0 && hl > 0 && (size_t)hl < sizeof(how))
        snprintf(how + hl, sizeof(how) - (size_t)hl, ", paced at %ld msg/s", s->rate);
    printf("fan-out:  %ld*%ld messages in %.2f s (%.0f msg/s delivered; %s; %ld duplicates)\n",
           s->n_nodes, s->n_messages, el, (double)total / el, how, atomic_load(&s->duplicates));
    printf("fan-out CPU: cloudcore %.1f s (%.1f us per message), simulator %.1f s (%.1f us per "
           "message)\n",
           (double)cc_cpu / 1e3, (double)cc_cpu * 1e3 / (double)total, (double)sim_cpu / 1e3,
           (double)sim_cpu * 1e3 / (double)total);
    lock_print("fan-out", &lk);
    if (!(lat = malloc((size_t)total * sizeof(*lat))))
        goto out;
    for (long k = 0; k < total; k++)
        lat[k] = atomic_load(&s->latency_ns[k]);
    bench_sort_i64(lat, (size_t)total);
    printf("latency:  publish issued -> node acked: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           (double)bench_pct_i64(lat, (size_t)total, 50) / 1e6,
           (double)bench_pct_i64(lat, (size_t)total, 99) / 1e6,
           (double)bench_pct_i64(lat, (size_t)total, 100) / 1e6);
    status = 0;
out:
    free(lat);
    ke_rpc_channel_free(admin);
    return status;
}

/* ---- phase 6: upstream ---- */

/* The consumer: a Hub.Subscribe stream as system:admin, acking each entry;
 * it times each report from its send to its arrival here. */
static void consumer_ack(sim *s, ke_rpc_call *call, uint64_t log_id);

static void consumer_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    sim *s = ud;
    const Ke__V1__UpstreamMessage *u = (const Ke__V1__UpstreamMessage *)m;
    int64_t t = bench_now_ns();
    unsigned idx = 0;
    const char *key = u->message && u->message->route ? u->message->route->resource : "";
    const char *node = strstr(key, "/sim-");
    long k = (long)u->seq - 1;
    if (!node || sscanf(node, "/sim-%u/", &idx) != 1 || idx < 1 || idx > (unsigned)s->n_nodes ||
        k < 0 || k >= s->n_reports) {
        bench_waiter_fail(&s->w, "consumer: an entry not sent (key=%s seq=%llu)", key,
                          (unsigned long long)u->seq);
        return;
    }
    size_t i = (size_t)(idx - 1) * (size_t)s->n_reports + (size_t)k;
    int64_t expect = 0, lat = t - s->report_ns[i];
    if (atomic_compare_exchange_strong(&s->report_lat[i], &expect, lat > 0 ? lat : 1))
        atomic_fetch_add(&s->delivered, 1);
    else
        atomic_fetch_add(&s->up_duplicates, 1);
    consumer_ack(s, call, u->log_id);
    bench_waiter_signal(&s->w);
}

/* consumer_ack acks up to log_id (acks are cumulative); with the send
 * queue full the newest id waits for the drain. */
static void consumer_ack(sim *s, ke_rpc_call *call, uint64_t log_id)
{
    uint64_t owed = atomic_load(&s->ack_owed);
    while (owed < log_id && !atomic_compare_exchange_weak(&s->ack_owed, &owed, log_id))
        ;
    owed = atomic_exchange(&s->ack_owed, 0);
    if (!owed)
        return;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    Ke__V1__SubscribeAck a = KE__V1__SUBSCRIBE_ACK__INIT;
    a.log_id = owed;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_ACK;
    f.ack = &a;
    int rc = ke_rpc_call_send(call, &f.base);
    if (rc == KE_EFULL) {
        uint64_t cur = atomic_load(&s->ack_owed);
        while (cur < owed && !atomic_compare_exchange_weak(&s->ack_owed, &cur, owed))
            ;
    } else if (rc != 0) {
        bench_waiter_fail(&s->w, "consumer: cannot ack log_id %llu: %s", (unsigned long long)owed,
                          ke_strerror(rc));
    }
}

static void consumer_on_drain(ke_rpc_call *call, void *ud)
{
    consumer_ack(ud, call, 0);
}

static void consumer_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    sim *s = ud;
    if (!atomic_load(&s->consumer_closing))
        bench_waiter_fail(&s->w, "consumer stream ended: %s: %s", ke_rpc_status_name(st->code),
                          st->message);
}

/* report_send sends report k of node n (seq k + 1, a key of its own). */
static void report_send(sim *s, sim_node *n, long k)
{
    char key[96], content[128];
    snprintf(key, sizeof(key), "node/%s/default/Event/r-%ld", n->name, k);
    int clen = snprintf(content, sizeof(content), "{\"reason\":\"edgesim\",\"count\":%ld}", k);
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route route = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__SequencedMessage sm = KE__V1__SEQUENCED_MESSAGE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.resource_version = (uint64_t)k + 1;
    route.source = "edgesim";
    route.group = "resource";
    route.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    route.resource = key;
    m.header = &h;
    m.route = &route;
    m.content.data = (uint8_t *)content;
    m.content.len = (size_t)clen;
    sm.seq = (uint64_t)k + 1;
    sm.message = &m;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_MESSAGE;
    f.message = &sm;
    s->report_ns[(size_t)n->idx * (size_t)s->n_reports + (size_t)k] = bench_now_ns();
    if (ke_rpc_call_send(n->call, &f.base) != 0)
        atomic_fetch_add(&s->up_send_failed, 1);
}

static int phase_upstream(sim *s)
{
    ke_rpc_channel *admin = NULL;
    ke_rpc_call *con = NULL;
    int64_t *lat = NULL;
    long total = s->n_nodes * s->n_reports;
    int status = -1;
    static const ke_rpc_handler ch = {.on_message = consumer_on_message,
                                      .on_drain = consumer_on_drain,
                                      .on_close = consumer_on_close};
    if (bench_admin_channel(s->loop, s->target, s->cloud, &admin) != 0)
        goto out;
    ke_rpc_stub hub = {admin, &ke__v1__hub__descriptor};
    if (ke_rpc_stub_start(&hub, "Subscribe", &ch, s, NULL, &con) != 0)
        goto out;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    Ke__V1__SubscribeRequest r = KE__V1__SUBSCRIBE_REQUEST__INIT;
    r.consumer = "edgesim";
    r.window = 4096;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_START;
    f.start = &r;
    if (ke_rpc_call_send(con, &f.base) != 0)
        goto out;
    /* Each node reports once a second, the nodes spread evenly over it. */
    lock_snap lk;
    lock_snap_take(&lk);
    int64_t t0 = bench_now_ns();
    long long cc_cpu0 = bench_cpu_ms(s->cc_pid);
    for (long i = 0; i < total; i++) {
        int64_t at = t0 + (int64_t)((double)i * 1e9 / (double)s->n_nodes);
        struct timespec ts = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        report_send(s, &s->node[i % s->n_nodes], i / s->n_nodes);
    }
    double sent_s = (double)(bench_now_ns() - t0) / 1e9;
    if (bench_waiter_wait(&s->w, &s->delivered, total - atomic_load(&s->up_send_failed),
                          "reports delivered to the consumer") != 0)
        goto out;
    long long cc_cpu = bench_cpu_ms(s->cc_pid) - cc_cpu0;
    lock_print("upstream", &lk);
    long n = 0;
    if (!(lat = malloc((size_t)total * sizeof(*lat))))
        goto out;
    for (long k = 0; k < total; k++) {
        int64_t v = atomic_load(&s->report_lat[k]);
        if (v > 0)
            lat[n++] = v;
    }
    bench_sort_i64(lat, (size_t)n);
    printf("upstream: %ld nodes x %ld reports (one a second each) in %.2f s: %.0f reports/s "
           "sent, %ld delivered to the consumer, %ld not sent (tunnel queue full), %ld "
           "duplicates; cloudcore CPU %.1f s (%.1f us per report)\n",
           s->n_nodes, s->n_reports, sent_s, (double)total / sent_s, n,
           atomic_load(&s->up_send_failed), atomic_load(&s->up_duplicates), (double)cc_cpu / 1e3,
           (double)cc_cpu * 1e3 / (double)(n ? n : 1));
    printf("upstream latency: report sent -> consumer: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           (double)bench_pct_i64(lat, (size_t)n, 50) / 1e6,
           (double)bench_pct_i64(lat, (size_t)n, 99) / 1e6,
           (double)bench_pct_i64(lat, (size_t)n, 100) / 1e6);
    status = 0;
out:
    if (status != 0)
        fprintf(stderr, "edge_sim: the upstream phase failed\n");
    free(lat);
    if (con) {
        atomic_store(&s->consumer_closing, 1);
        ke_rpc_call_cancel(con);
        ke_rpc_call_unref(con);
    }
    ke_rpc_channel_free(admin);
    return status;
}

/* ---- phase 7 (--restart): a CloudHub SIGKILL and the reconnect storm ---- */

/* reconnect_due reopens node n's tunnel on a new channel (the old call
 * has closed; its TLS session cache stays). */
static void reconnect_due(sim *s, sim_node *n)
{
    atomic_store(&n->need_reconnect, 0);
    ke_rpc_call_unref(n->call);
    ke_rpc_channel_free(n->ch);
    n->call = NULL;
    n->ch = NULL;
    atomic_fetch_add(&s->attempts, 1);
    if (node_connect(s, n) != 0)
        bench_waiter_fail(&s->w, "cannot reconnect %s", n->name);
}

/* reconnector: opens each node's reconnect when it is due; sleeps until
 * the next one is (at most SIM_RECONNECT_TICK_MS), woken by a schedule. */
static void *reconnector(void *arg)
{
    sim *s = arg;
    while (!atomic_load(&s->reconnector_stop)) {
        int64_t now = bench_now_ns() / 1000000, next = now + SIM_RECONNECT_TICK_MS;
        for (long i = 0; i < s->n_nodes && !atomic_load(&s->reconnector_stop); i++) {
            sim_node *n = &s->node[i];
            if (!atomic_load(&n->need_reconnect))
                continue;
            int64_t at = atomic_load(&n->retry_at_ms);
            if (at <= now)
                reconnect_due(s, n);
            else if (at < next)
                next = at;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t wait = next - bench_now_ns() / 1000000;
        if (wait <= 0)
            continue;
        until.tv_sec += wait / 1000;
        until.tv_nsec += (wait % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&s->rmu);
        /* a schedule made since the scan signals; a missed one waits a tick */
        pthread_cond_timedwait(&s->rcv, &s->rmu, &until);
        pthread_mutex_unlock(&s->rmu);
    }
    return NULL;
}

static int phase_restart(sim *s, const char *const *cc_flags)
{
    pthread_t th;
    for (long i = 0; i < s->n_nodes; i++) {
        s->node[i].backoff_ms = SIM_BACKOFF_INITIAL_MS;
        s->node[i].seed = (unsigned)(i * 2654435761u) ^ (unsigned)getpid();
    }
    atomic_store(&s->restarting, 1);
    if (pthread_create(&th, NULL, reconnector, s) != 0) {
        fprintf(stderr, "edge_sim: cannot start the reconnector thread\n");
        return -1;
    }
    int status = -1;
    int64_t t_kill = bench_now_ns();
    int st = 0;
    if (kill(s->cc_pid, SIGKILL) != 0) {
        fprintf(stderr, "edge_sim: cannot kill cloudcore: %s\n", strerror(errno));
        goto out;
    }
    if (bench_child_wait(s->cc_pid, SIM_STOP_S, &st) != 0) {
        fprintf(stderr, "edge_sim: cloudcore did not die of SIGKILL within %d s\n", SIM_STOP_S);
        goto out;
    }
    s->cc_pid = -1;
    char target[64];
    s->cc_pid = bench_cloudcore_start(s->cloudcore, s->cloud, cc_flags, SIM_START_S, SIM_STOP_S,
                                      target, sizeof(target));
    if (s->cc_pid < 0)
        goto out;
    int64_t t_ready = bench_now_ns();
    if (strcmp(target, s->target) != 0) {
        fprintf(stderr, "edge_sim: cloudcore came back on %s, not %s\n", target, s->target);
        goto out;
    }
    if (bench_waiter_wait(&s->w, &s->restart_acked, s->n_nodes, "HelloAcks after the restart") !=
            0 ||
        bench_waiter_wait(&s->w, &s->restart_resynced, s->n_nodes,
                          "ResyncDones after the restart") != 0)
        goto out;
    double ack_s = (double)(atomic_load(&s->last_restart_ack_ns) - t_ready) / 1e9;
    double sync_s = (double)(atomic_load(&s->last_resync_ns) - t_ready) / 1e9;
    double kill_s = (double)(atomic_load(&s->last_resync_ns) - t_kill) / 1e9;
    printf("restart:  cloudcore SIGKILLed, ready again after %.2f s; all %ld nodes HelloAcked "
           "%.2f s and resynced %.2f s after ready (%.2f s after the kill)\n",
           (double)(t_ready - t_kill) / 1e9, s->n_nodes, ack_s, sync_s, kill_s);
    printf("storm:    %ld connection attempts (%ld ended before a HelloAck: server down or "
           "refused), %ld admission refusals with retry_after; TLS: %ld of %ld HelloAcks on a "
           "resumed session%s\n",
           atomic_load(&s->attempts), atomic_load(&s->failed_attempts),
           atomic_load(&s->refusals), atomic_load(&s->resumed), atomic_load(&s->restart_acked),
           s->no_resume ? " (--no-resume)" : "");
    /* no node starved: each one's time from the kill to its ResyncDone */
    int64_t *per = malloc((size_t)s->n_nodes * sizeof(*per));
    if (!per) {
        fprintf(stderr, "edge_sim: out of memory\n");
        goto out;
    }
    unsigned most = 0;
    for (long i = 0; i < s->n_nodes; i++) {
        per[i] = atomic_load(&s->node[i].resynced_ns) - t_kill;
        unsigned r = atomic_load(&s->node[i].refused);
        most = r > most ? r : most;
    }
    bench_sort_i64(per, (size_t)s->n_nodes);
    printf("per node: kill -> its ResyncDone p50 %.2f s, p99 %.2f s, max %.2f s; most "
           "refusals of one node %u\n",
           (double)bench_pct_i64(per, (size_t)s->n_nodes, 50) / 1e9,
           (double)bench_pct_i64(per, (size_t)s->n_nodes, 99) / 1e9,
           (double)bench_pct_i64(per, (size_t)s->n_nodes, 100) / 1e9, most);
    free(per);
    status = 0;
out:
    atomic_store(&s->reconnector_stop, 1);
    pthread_mutex_lock(&s->rmu);
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
    pthread_join(th, NULL);
    return status;
}

/* ---- phase 8: shutdown ---- */

static int close_tunnels(sim *s)
{
    atomic_store(&s->stopping, 1);
    for (long i = 0; i < s->n_nodes; i++)
        if (s->node[i].call)
            ke_rpc_call_cancel(s->node[i].call); /* a closed one: a no-op */
    atomic_store(&s->w.failed, 0); /* only the closes count now */
    int rc = bench_waiter_wait(&s->w, &s->closed, s->opened, "tunnels closed");
    for (long i = 0; i < s->n_nodes; i++) {
        ke_rpc_call_unref(s->node[i].call);
        ke_rpc_channel_free(s->node[i].ch);
        ke_rpc_session_cache_free(s->node[i].tls_cache);
        s->node[i].call = NULL;
        s->node[i].ch = NULL;
        s->node[i].tls_cache = NULL;
    }
    return rc;
}

/* ---- main ---- */

static const char USAGE[] =
    "usage: ke-bench-edgesim [--nodes N] [--messages M] [--batch B] [--rate R] [--reports S]\n"
    "                        [--keep-tmp] [--restart] [--hello-concurrency K] [--no-resume]\n"
    "                        [--cloudcore PATH] [--keadm PATH]\n"
    "  --nodes N        simulated edge nodes, 1..99999 (default 1000)\n"
    "  --messages M     messages published per node, 1..10000 (default 10)\n"
    "  --batch B        messages per Hub.PublishBatch call, 4 calls in flight; 1: one\n"
    "                   Hub.Publish per message, 256 in flight (default 256)\n"
    "  --rate R         publish at R messages/s (default: as fast as CloudHub answers)\n"
    "  --reports S      then S seconds of upstream: every node reports once a second to a\n"
    "                   Hub.Subscribe consumer (default 0: none)\n"
    "  --keep-tmp       leave the temporary directory (PKI, node certificates, db)\n"
    "  --restart        after the fan-out, SIGKILL cloudcore, restart it and time the\n"
    "                   reconnect storm until every node has resynced\n"
    "  --hello-concurrency K  cloudcore's cloudhub.hello_concurrency (default: its own)\n"
    "  --no-resume      no TLS session caches (every reconnect a full handshake)\n"
    "  --cloudcore PATH cloudcore binary (default: the one built next to this program)\n"
    "  --keadm PATH     keadm binary (default: the one built next to this program)\n";

static int parse_args(sim *s, int argc, char **argv)
{
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, 'n'},   {"messages", required_argument, NULL, 'm'},
        {"keep-tmp", no_argument, NULL, 'k'},      {"cloudcore", required_argument, NULL, 'c'},
        {"keadm", required_argument, NULL, 'a'},   {"help", no_argument, NULL, 'h'},
        {"batch", required_argument, NULL, 'b'},   {"rate", required_argument, NULL, 'r'},
        {"reports", required_argument, NULL, 'u'},
        {"restart", no_argument, NULL, 'x'},       {"no-resume", no_argument, NULL, 'R'},
        {"hello-concurrency", required_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    bench_sibling_path(s->cloudcore, sizeof(s->cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(s->keadm, sizeof(s->keadm), BENCH_REL_KEADM);
    s->n_nodes = SIM_DEFAULT_NODES;
    s->n_messages = SIM_DEFAULT_MESSAGES;
    s->batch = SIM_DEFAULT_BATCH;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            s->n_nodes = strtol(optarg, &end, 10);
            if (*end || s->n_nodes < 1 || s->n_nodes > SIM_MAX_NODES) {
                fprintf(stderr, "edge_sim: --nodes must be 1..%d\n", SIM_MAX_NODES);
                return 2;
            }
            break;
        case 'm':
            s->n_messages = strtol(optarg, &end, 10);
            if (*end || s->n_messages < 1 || s->n_messages > SIM_MAX_MESSAGES) {
                fprintf(stderr, "edge_sim: --messages must be 1..%d\n", SIM_MAX_MESSAGES);
                return 2;
            }
            break;
        case 'b': {
            long b = strtol(optarg, &end, 10);
            if (*end || b < 1 || b > SIM_MAX_BATCH) {
                fprintf(stderr, "edge_sim: --batch must be 1..%d\n", SIM_MAX_BATCH);
                return 2;
            }
            s->batch = (int)b;
            break;
        }
        case 'r':
            s->rate = strtol(optarg, &end, 10);
            if (*end || s->rate < 1) {
                fprintf(stderr, "edge_sim: --rate must be a positive number of messages/s\n");
                return 2;
            }
            break;
        case 'u':
            s->n_reports = strtol(optarg, &end, 10);
            if (*end || s->n_reports < 0 || s->n_reports > SIM_MAX_MESSAGES) {
                fprintf(stderr, "edge_sim: --reports must be 0..%d seconds\n", SIM_MAX_MESSAGES);
                return 2;
            }
            break;
        case 'k': s->keep_tmp = 1; break;
        case 'x': s->restart = 1; break;
        case 'R': s->no_resume = 1; break;
        case 'H':
            s->hello_concurrency = strtol(optarg, &end, 10);
            if (*end || s->hello_concurrency < 1 || s->hello_concurrency > 100000) {
                fprintf(stderr, "edge_sim: --hello-concurrency must be 1..100000\n");
                return 2;
            }
            break;
        case 'c': snprintf(s->cloudcore, sizeof(s->cloudcore), "%s", optarg); break;
        case 'a': snprintf(s->keadm, sizeof(s->keadm), "%s", optarg); break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (optind < argc) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (s->n_nodes * s->n_messages > SIM_MAX_TOTAL) {
        fprintf(stderr, "edge_sim: --nodes * --messages must be at most %ld\n", SIM_MAX_TOTAL);
        return 2;
    }
    return 0;
}

/* make_tmp creates TMP and TMP/nodes; TMP/cloud is made by keadm. */
static int make_tmp(sim *s)
{
    if (bench_make_tmp(s->tmp, sizeof(s->tmp), "ke-edgesim") != 0)
        return -1;
    snprintf(s->cloud, sizeof(s->cloud), "%s/cloud", s->tmp);
    snprintf(s->nodes_dir, sizeof(s->nodes_dir), "%s/nodes", s->tmp);
    if (mkdir(s->nodes_dir, 0700) != 0) {
        fprintf(stderr, "edge_sim: cannot create %s: %s\n", s->nodes_dir, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static sim sim_ctx;
    sim *s = &sim_ctx;
    int rc = parse_args(s, argc, argv);
    if (rc != 0)
        return rc == 1 ? 0 : 2;

    bench_main_init("edge_sim", &s->w, SIM_STALL_S); /* before any thread exists */

    /* cloudcore's flags beyond bench_cloudcore_start's: no keepalives come
     * from the simulated nodes; two grpc threads; CloudHub alone (the
     * objects published here are not in the store, and the controllers
     * would rightly converge them away). */
    char hc_flag[64] = "", listen_flag[64] = "";
    const char *cc_flags[6] = {"--cloudhub.dead_peer=600s", "--grpc.threads=2",
                               "--edgecontroller.enable=false", NULL, NULL, NULL};
    if (s->hello_concurrency) {
        snprintf(hc_flag, sizeof(hc_flag), "--cloudhub.hello_concurrency=%ld",
                 s->hello_concurrency);
        cc_flags[3] = hc_flag;
    }
    pthread_mutex_init(&s->rmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->rcv, &ca);
    pthread_condattr_destroy(&ca);
    int status = 1;
    rlim_t nofile = 0;
    long need = SIM_FD_PER_NODE * s->n_nodes + SIM_FD_RESERVE;
    size_t total = (size_t)s->n_nodes * (size_t)s->n_messages;
    s->node = calloc((size_t)s->n_nodes, sizeof(*s->node));
    s->issue_ns = calloc(total, sizeof(*s->issue_ns));
    s->latency_ns = calloc(total, sizeof(*s->latency_ns));
    size_t up_total = (size_t)s->n_nodes * (size_t)s->n_reports;
    s->report_ns = calloc(up_total ? up_total : 1, sizeof(*s->report_ns));
    s->report_lat = calloc(up_total ? up_total : 1, sizeof(*s->report_lat));
    if (!s->node || !s->issue_ns || !s->latency_ns || !s->report_ns || !s->report_lat) {
        fprintf(stderr, "edge_sim: out of memory\n");
        goto out;
    }
    for (long i = 0; i < s->n_nodes; i++) {
        s->node[i].s = s;
        s->node[i].idx = (uint32_t)i;
        snprintf(s->node[i].name, sizeof(s->node[i].name), "sim-%05d", (int)(i + 1));
    }
    if (raise_nofile(need, &nofile) != 0 || make_tmp(s) != 0 ||
        bench_keadm_init(s->keadm, s->cloud, SIM_START_S, SIM_STOP_S) != 0 ||
        (s->cc_pid = bench_cloudcore_start(s->cloudcore, s->cloud, cc_flags, SIM_START_S,
                                           SIM_STOP_S, s->target, sizeof(s->target))) < 0)
        goto out;
    printf("edge simulation: %ld nodes, %ld messages each; cloudcore pid %d on %s (TLS, "
           "grpc.threads=2); %ld CPUs; open files limit %llu; %d rpc threads here\n",
           s->n_nodes, s->n_messages, (int)s->cc_pid, s->target, sysconf(_SC_NPROCESSORS_ONLN),
           (unsigned long long)nofile, SIM_LOOP_THREADS);
    fflush(stdout);
    if (ke_rpc_loop_new(SIM_LOOP_THREADS, &s->loop) != 0) {
        fprintf(stderr, "edge_sim: cannot start the rpc loop\n");
        goto out;
    }
    if (phase_join(s) != 0)
        goto out;
    fflush(stdout);
    long idle = bench_rss_kib(s->cc_pid), anon0 = 0, file0 = 0, anon1, file1;
    int split = bench_mem_split(s->cc_pid, &anon0, &file0) == 0;
    if (phase_connect(s) != 0)
        goto out;
    long busy = bench_rss_kib(s->cc_pid);
    printf("cloudhub RSS: idle %.1f MiB, with %ld nodes %.1f MiB, %.1f KiB per node\n",
           (double)idle / 1024, s->n_nodes, (double)busy / 1024,
           (double)(busy - idle) / (double)s->n_nodes);
    /* Where it went: per-connection buffers are anonymous memory; file-backed
     * pages (code) should not grow with nodes. */
    if (split && bench_mem_split(s->cc_pid, &anon1, &file1) == 0)
        printf("cloudhub RSS by kind: anonymous %.1f -> %.1f MiB (%.1f KiB per node), "
               "file-backed %.1f -> %.1f MiB\n",
               (double)anon0 / 1024, (double)anon1 / 1024,
               (double)(anon1 - anon0) / (double)s->n_nodes, (double)file0 / 1024,
               (double)file1 / 1024);
    printf("open fds: cloudcore %ld, simulator %ld; simulator RSS %.1f MiB\n",
           bench_open_fds(s->cc_pid), bench_open_fds(getpid()),
           (double)bench_rss_kib(getpid()) / 1024);
    fflush(stdout);
    if (phase_fanout(s) != 0)
        goto out;
    fflush(stdout);
    if (s->n_reports > 0 && phase_upstream(s) != 0)
        goto out;
    if (s->restart) {
        /* the same port and files; later flags override earlier ones */
        snprintf(listen_flag, sizeof(listen_flag), "--grpc.listen=%.48s", s->target);
        cc_flags[s->hello_concurrency ? 4 : 3] = listen_flag;
        if (phase_restart(s, cc_flags) != 0)
            goto out;
    }
    status = 0;
out:
    fflush(stdout);
    if (s->node && close_tunnels(s) != 0)
        status = 1;
    ke_rpc_loop_free(s->loop);
    if (bench_cloudcore_stop(s->cc_pid, SIM_STOP_S) != 0)
        status = 1;
    bench_tmp_done(s->tmp, s->keep_tmp);
    if (s->node)
        for (long i = 0; i < s->n_nodes; i++) {
            free(s->node[i].key_pem);
            free(s->node[i].cert_pem);
        }
    free(s->node);
    free(s->issue_ns);
    free((void *)s->latency_ns);
    free(s->report_ns);
    free((void *)s->report_lat);
    pthread_cond_destroy(&s->rcv);
    pthread_mutex_destroy(&s->rmu);
    bench_waiter_destroy(&s->w);
    return status;
}
