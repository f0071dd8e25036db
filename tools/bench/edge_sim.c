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
 *   fan-out   M messages per node published over Hub.Publish by a
 *             "system:admin" client, 256 in flight; time from the first
 *             publish until every node has acked all of its messages, and
 *             the latency of each message from its Publish being issued to
 *             the node sending its ack (p50/p99/max).
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
 * Usage: ke-bench-edgesim [--nodes N] [--messages M] [--keep-tmp]
 *                         [--cloudcore PATH] [--keadm PATH]
 * (the programs default to the ones built next to this one). Not run by
 * the tests; figures go in the README's benchmarks section.
 */
#include "bench_util.h"
#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_rpc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
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
#define SIM_PUBLISH_WINDOW 256   /* Publish calls in flight */
#define SIM_LOOP_THREADS 2       /* the rpc loop shared by every node */
#define SIM_STALL_S 300          /* a phase fails when its counter stands still this long */
#define SIM_START_S 60           /* keadm init and cloudcore's "ready" line */
#define SIM_STOP_S 60            /* cloudcore's exit after SIGTERM */
#define SIM_RPC_TIMEOUT_MS (SIM_STALL_S * 1000LL) /* deadline of each Join / Publish */
#define SIM_TOKEN_TTL_S 3600
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

typedef struct sim sim;

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
} sim_node;

struct sim {
    /* options */
    long n_nodes, n_messages;
    int keep_tmp;
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
    long opened; /* tunnels started (main thread) */
    atomic_llong last_hello_ns;
    /* fan-out: [node * n_messages + j] */
    int64_t *issue_ns;
    _Atomic int64_t *latency_ns; /* 0: not acked yet */
    atomic_long acked, duplicates;
    atomic_llong fanout_done_ns;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- processes: keadm and cloudcore ---- */

/* open_fds counts the entries of /proc/PID/fd. */
static long open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    long n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* mem_split reads /proc/PID/smaps_rollup: resident anonymous memory (the
 * heap, grpc's and OpenSSL's per-connection buffers, stacks) and the rest
 * of RSS (mapped files: the program and its libraries), in KiB. Returns 0,
 * or -1 when the file cannot be read (kernels before 4.14). */
static int mem_split(pid_t pid, long *anon, long *file)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    long rss = -1, an = -1, v;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Rss: %ld kB", &v) == 1)
            rss = v;
        else if (sscanf(line, "Anonymous: %ld kB", &v) == 1)
            an = v;
    }
    if (f)
        fclose(f);
    if (rss < 0 || an < 0)
        return -1;
    *anon = an;
    *file = rss - an;
    return 0;
}

/* raise_nofile lifts RLIMIT_NOFILE to the hard limit, first raising the
 * hard limit to `need` when it is lower (which takes CAP_SYS_RESOURCE).
 * cloudcore inherits the limit. Returns 0, or -1 after saying why. */
static int raise_nofile(long need, rlim_t *got)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need) {
        struct rlimit want = {(rlim_t)need, (rlim_t)need};
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            fprintf(stderr, "edge_sim: %ld nodes need %ld open files per process (%d per node "
                            "+ %d) but the hard limit is %llu and cannot be raised (%s): lower "
                            "--nodes, or raise it (ulimit -Hn, limits.conf, CAP_SYS_RESOURCE)\n",
                    (need - SIM_FD_RESERVE) / SIM_FD_PER_NODE, need, SIM_FD_PER_NODE,
                    SIM_FD_RESERVE,
                    (unsigned long long)rl.rlim_max, strerror(errno));
            return -1;
        }
        rl = want;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "edge_sim: cannot raise the open files limit: %s\n", strerror(errno));
        return -1;
    }
    *got = rl.rlim_cur;
    return 0;
}

/* write_plain writes a file without fsync: these are throwaway files, and
 * ke_pki_write_file's two fsyncs per file would dominate a 10,000-node run. */
static int write_plain(const char *path, const char *data, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
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
        rc = ke_pki_token_create(ca_pem, secret, secret_len, wall_ms() / 1000 + SIM_TOKEN_TTL_S,
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
        if (write_plain(key, n->key_pem, 0600) != 0 || write_plain(crt, n->cert_pem, 0644) != 0) {
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

static void node_on_hello_ack(sim_node *n)
{
    sim *s = n->s;
    atomic_store(&n->hello_acked, 1);
    atomic_store(&s->last_hello_ns, bench_now_ns());
    atomic_fetch_add(&s->connect_finished, 1);
    bench_waiter_signal(&s->w);
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
        node_on_hello_ack(n);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        node_on_downstream(n, call, f->message);
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        bench_waiter_fail(&n->s->w, "node %s: cloud refused seq=%llu: %s", n->name,
                          (unsigned long long)f->refusal->seq, f->refusal->reason);
        break;
    default: /* keepalive, resync done, ack of upstream: nothing to do */
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
    ke_rpc_channel_opts co = {.tls = &tls};
    int rc = ke_rpc_channel_new(s->loop, s->target, &co, &n->ch);
    ke_rpc_stub stub = {n->ch, &ke__v1__cloud_hub__descriptor};
    if (rc == 0)
        rc = ke_rpc_stub_start(&stub, "Tunnel", &node_handler, n, NULL, &n->call);
    if (rc != 0) {
        fprintf(stderr, "edge_sim: cannot open the tunnel of %s: %s\n", n->name, ke_strerror(rc));
        return rc;
    }
    s->opened++;
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

/* publish_issue publishes message j of node n: ConfigMap cm-<j>, version
 * j+1, ~SIM_CONTENT_BYTES of JSON carrying the publish time. */
static int publish_issue(sim *s, ke_rpc_channel *admin, sim_node *n, long j)
{
    char resource[96], id[48], content[SIM_CONTENT_BYTES + 64];
    snprintf(resource, sizeof(resource), "node/%s/default/ConfigMap/cm-%ld", n->name, j);
    snprintf(id, sizeof(id), "edgesim-%s-%ld", n->name, j);
    int64_t issued = bench_now_ns(), wall = wall_ms();
    static const char fmt[] =
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm-%ld\","
        "\"namespace\":\"default\",\"resourceVersion\":\"%ld\"},\"data\":{\"publishedAtMs\":"
        "\"%lld\",\"publishedAtMonoNs\":\"%lld\",\"pad\":\"%.*s\"}}";
    static const char pad[] = "................................................................"
                              "................................................................";
    int base = snprintf(NULL, 0, fmt, j, j + 1, (long long)wall, (long long)issued, 0, pad);
    int padlen = base < SIM_CONTENT_BYTES ? SIM_CONTENT_BYTES - base : 0;
    if (padlen > (int)sizeof(pad) - 1)
        padlen = (int)sizeof(pad) - 1;
    int clen = snprintf(content, sizeof(content), fmt, j, j + 1, (long long)wall,
                        (long long)issued, padlen, pad);

    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route route = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
    h.id = id;
    h.timestamp_ms = wall;
    h.resource_version = (uint64_t)j + 1;
    route.source = "edgesim";
    route.group = "resource";
    route.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    route.resource = resource;
    m.header = &h;
    m.route = &route;
    m.content.data = (uint8_t *)content;
    m.content.len = (size_t)(clen < (int)sizeof(content) ? clen : (int)sizeof(content) - 1);
    req.node_name = n->name;
    req.message = &m;
    s->issue_ns[(size_t)n->idx * (size_t)s->n_messages + (size_t)j] = issued;
    ke_rpc_call_opts o = {.timeout_ms = SIM_RPC_TIMEOUT_MS};
    int rc = ke_rpc_unary_async(admin, SIM_PUBLISH_PATH, &req.base,
                                &ke__v1__publish_reply__descriptor, &o, publish_on_reply, s);
    if (rc != 0)
        fprintf(stderr, "edge_sim: cannot start a publish to %s: %s\n", n->name, ke_strerror(rc));
    return rc;
}

static int phase_fanout(sim *s)
{
    ke_rpc_channel *admin = NULL;
    long total = s->n_nodes * s->n_messages, issued = 0;
    int status = -1;
    int64_t *lat = NULL;
    if (bench_admin_channel(s->loop, s->target, s->cloud, &admin) != 0)
        goto out;
    /* Round-robin over the nodes so that every tunnel is busy at once. */
    int64_t t0 = bench_now_ns();
    for (long j = 0; j < s->n_messages; j++) {
        for (long i = 0; i < s->n_nodes; i++, issued++) {
            if (bench_waiter_wait(&s->w, &s->publish_finished, issued - SIM_PUBLISH_WINDOW + 1,
                                  "Publish replies") != 0 ||
                publish_issue(s, admin, &s->node[i], j) != 0)
                goto out;
        }
    }
    if (bench_waiter_wait(&s->w, &s->acked, total, "messages acked by the nodes") != 0 ||
        bench_waiter_wait(&s->w, &s->publish_finished, total, "Publish replies") != 0)
        goto out;
    double el = (double)(atomic_load(&s->fanout_done_ns) - t0) / 1e9;
    printf("fan-out:  %ld*%ld messages in %.2f s (%.0f msg/s delivered, %d publishes in "
           "flight, %ld duplicates)\n",
           s->n_nodes, s->n_messages, el, (double)total / el, SIM_PUBLISH_WINDOW,
           atomic_load(&s->duplicates));
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

/* ---- phase 6: shutdown ---- */

static int close_tunnels(sim *s)
{
    atomic_store(&s->stopping, 1);
    for (long i = 0; i < s->n_nodes; i++)
        if (s->node[i].call)
            ke_rpc_call_cancel(s->node[i].call);
    atomic_store(&s->w.failed, 0); /* only the closes count now */
    int rc = bench_waiter_wait(&s->w, &s->closed, s->opened, "tunnels closed");
    for (long i = 0; i < s->n_nodes; i++) {
        ke_rpc_call_unref(s->node[i].call);
        ke_rpc_channel_free(s->node[i].ch);
        s->node[i].call = NULL;
        s->node[i].ch = NULL;
    }
    return rc;
}

/* ---- main ---- */

static const char USAGE[] =
    "usage: ke-bench-edgesim [--nodes N] [--messages M] [--keep-tmp]\n"
    "                        [--cloudcore PATH] [--keadm PATH]\n"
    "  --nodes N        simulated edge nodes, 1..99999 (default 1000)\n"
    "  --messages M     messages published per node, 1..10000 (default 10)\n"
    "  --keep-tmp       leave the temporary directory (PKI, node certificates, db)\n"
    "  --cloudcore PATH cloudcore binary (default: the one built next to this program)\n"
    "  --keadm PATH     keadm binary (default: the one built next to this program)\n";

static int parse_args(sim *s, int argc, char **argv)
{
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, 'n'},   {"messages", required_argument, NULL, 'm'},
        {"keep-tmp", no_argument, NULL, 'k'},      {"cloudcore", required_argument, NULL, 'c'},
        {"keadm", required_argument, NULL, 'a'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bench_sibling_path(s->cloudcore, sizeof(s->cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(s->keadm, sizeof(s->keadm), BENCH_REL_KEADM);
    s->n_nodes = SIM_DEFAULT_NODES;
    s->n_messages = SIM_DEFAULT_MESSAGES;
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
        case 'k': s->keep_tmp = 1; break;
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
    static const char *const cc_flags[] = {"--cloudhub.dead_peer=600s", "--grpc.threads=2",
                                           "--edgecontroller.enable=false", NULL};
    int status = 1;
    rlim_t nofile = 0;
    long need = SIM_FD_PER_NODE * s->n_nodes + SIM_FD_RESERVE;
    size_t total = (size_t)s->n_nodes * (size_t)s->n_messages;
    s->node = calloc((size_t)s->n_nodes, sizeof(*s->node));
    s->issue_ns = calloc(total, sizeof(*s->issue_ns));
    s->latency_ns = calloc(total, sizeof(*s->latency_ns));
    if (!s->node || !s->issue_ns || !s->latency_ns) {
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
    int split = mem_split(s->cc_pid, &anon0, &file0) == 0;
    if (phase_connect(s) != 0)
        goto out;
    long busy = bench_rss_kib(s->cc_pid);
    printf("cloudhub RSS: idle %.1f MiB, with %ld nodes %.1f MiB, %.1f KiB per node\n",
           (double)idle / 1024, s->n_nodes, (double)busy / 1024,
           (double)(busy - idle) / (double)s->n_nodes);
    /* Where it went: per-connection buffers are anonymous memory; file-backed
     * pages (code) should not grow with nodes. */
    if (split && mem_split(s->cc_pid, &anon1, &file1) == 0)
        printf("cloudhub RSS by kind: anonymous %.1f -> %.1f MiB (%.1f KiB per node), "
               "file-backed %.1f -> %.1f MiB\n",
               (double)anon0 / 1024, (double)anon1 / 1024,
               (double)(anon1 - anon0) / (double)s->n_nodes, (double)file0 / 1024,
               (double)file1 / 1024);
    printf("open fds: cloudcore %ld, simulator %ld; simulator RSS %.1f MiB\n", open_fds(s->cc_pid),
           open_fds(getpid()), (double)bench_rss_kib(getpid()) / 1024);
    fflush(stdout);
    if (phase_fanout(s) != 0)
        goto out;
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
    bench_waiter_destroy(&s->w);
    return status;
}
