/*
 * edge_sim_lean — the edge-node simulator for 100,000 nodes against one
 * CloudHub (a real cloudcore on loopback, with the PKI of `keadm init`).
 *
 * ke-bench-edgesim gives every simulated node a full grpc channel (~170
 * KiB each); here a simulated node's Tunnel is a lean client stack of its
 * own: one non-blocking TCP socket, one OpenSSL SSL object (the node's own
 * client certificate and key, read from its files while it connects; the
 * server verified against the CA and 127.0.0.1, the name the real edge
 * uses, whatever loopback address it dialled), one nghttp2 client session
 * and one gRPC stream (POST /ke.v1.CloudHub/Tunnel, length-prefixed
 * protobuf-c EdgeFrame / CloudFrame, trailers as its end).
 *
 * Phases:
 *   join      N nodes through CloudHub.Join (token + CSR), over ke_rpc in
 *             the parent (as ke-bench-edgesim), 64 in flight;
 *   connect   every node's tunnel and Hello (empty digest), 200 in flight
 *             in all; time from the first open to the last HelloAck, and
 *             to the last ResyncDone;
 *   RSS       cloudcore's VmRSS (anonymous / file-backed) idle and with all
 *             N connected, per node; the simulator's (its workers summed);
 *             the machine's used memory and the kernel's slab, per node;
 *             open files on both sides;
 *   fan-out   M messages per node (--messages, default 10) published by a
 *             "system:admin" client over Hub.PublishBatch (--batch B, 4
 *             calls in flight) from the parent; each timed from its publish
 *             (the monotonic time written into its content: one clock for
 *             every process) to the node's ack, in a shared array;
 *   restart   (--restart) SIGKILL cloudcore, start it again on the same
 *             port and files, and time until every node has HelloAcked and
 *             resynced again. Every node retries as EdgeHub does: jittered
 *             exponential backoff (500 ms doubling to 30 s, reset by a
 *             HelloAck), at least the retry_after_ms of an admission
 *             refusal (plus up to a tenth), no window (a storm); each node
 *             keeps its own TLS session (DER, ~1 KiB) for resumption.
 *
 * Processes: the parent runs keadm, cloudcore, the join and the phases; W
 * worker processes (--workers, default: the CPUs), forked before any grpc
 * exists in the parent, each own the nodes i with i % W == w on an epoll
 * loop of their own (no threads, no grpc). They share one MAP_SHARED block
 * of atomic counters with the parent; the parent commands them by setting
 * its epoch and writing to each one's wake pipe, and they wake the parent
 * through one notify pipe after a loop round that moved a counter. The
 * parent waits on counters with a stall timeout, never sleeping to wait.
 *
 * Addresses and limits: cloudcore listens on 0.0.0.0 (its grpc.listen as
 * given; loopback-only traffic all the same) and node i dials 127.0.0.(1 +
 * i % D), D = ceil(N / 10,000) (--dests), so that no destination needs more
 * than 10,000 of the 28,232 ephemeral ports. The parent raises
 * RLIMIT_NOFILE (the hard limit too, to N + a reserve) before it starts
 * cloudcore and forks the workers, which inherit it.
 *
 * A simulated node acks every downstream message at once and ignores
 * keepalives; it sends none, so cloudcore runs with --cloudhub.dead_peer=600s.
 *
 * Usage: ke-bench-edgesim-lean [--nodes N] [--messages M] [--batch B] [--workers W]
 *                              [--dests D] [--restart]
 *                              [--keep-tmp] [--cloudcore PATH] [--keadm PATH]
 * Not run by the tests; figures go in the README's benchmarks section.
 */
#include "bench_util.h"
#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_rpc.h"
#include "ke_time.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- bounds and knobs ---- */
#define LEAN_DEFAULT_NODES 2000
#define LEAN_MAX_NODES 200000     /* names sim-00001 .. sim-200000 */
#define LEAN_MAX_WORKERS 64
#define LEAN_NODES_PER_DEST 10000 /* of the 28,232 ephemeral ports per destination */
#define LEAN_MAX_DESTS 254        /* 127.0.0.1 .. 127.0.0.254 */
#define LEAN_JOIN_WINDOW 64       /* Join calls in flight */
#define LEAN_CONNECT_WINDOW 200   /* tunnels between open and HelloAck, all workers */
#define LEAN_LOOP_THREADS 2       /* the parent's rpc loop (join) */
#define LEAN_STALL_S 300          /* a phase fails when its counter stands still this long */
#define LEAN_START_S 60           /* keadm init and cloudcore's "ready" line */
#define LEAN_STOP_S 120           /* cloudcore's or a worker's exit */
#define LEAN_RPC_TIMEOUT_MS (LEAN_STALL_S * 1000LL)
#define LEAN_TOKEN_TTL_S 3600
#define LEAN_BACKOFF_INITIAL_MS 500
#define LEAN_BACKOFF_MAX_MS 30000
#define LEAN_RETRY_AFTER_MAX_MS 60000u
#define LEAN_TICK_MS 100          /* a worker's longest epoll wait while reconnects are due */
#define LEAN_FD_RESERVE 100       /* cloudcore's beyond one socket per node (measured: 17) */
#define LEAN_STORM_HEADROOM_DIV 5  /* a restart storm: warn below N + N/5 open files */
#define LEAN_WORKER_FD_RESERVE 32 /* a worker's beyond one socket per node: pipes, epoll, files */
#define LEAN_READ_CHUNK 16384     /* one SSL_read */
#define LEAN_MSG_MAX (4u << 20)   /* largest CloudFrame accepted */
#define LEAN_EPOLL_BATCH 256
#define LEAN_DEFAULT_MESSAGES 10  /* fan-out: per node */
#define LEAN_MAX_MESSAGES 1000
#define LEAN_DEFAULT_BATCH 256    /* messages per PublishBatch */
#define LEAN_BATCH_CALLS 4        /* PublishBatch calls in flight */
#define LEAN_CONTENT_BYTES 200    /* JSON content of a published message */
#define LEAN_NAME_MAX 32
#define LEAN_DIR_MAX 512
#define LEAN_SUBDIR_MAX (LEAN_DIR_MAX + 16)
#define LEAN_PATH_MAX (LEAN_SUBDIR_MAX + 64)
#define LEAN_PROG_MAX (PATH_MAX + 64)
#define LEAN_ERR_MAX 320
#define LEAN_EPOCHS 3             /* 0: none, 1: connect, 2: after the restart */

#define LEAN_JOIN_PATH "/ke.v1.CloudHub/Join"
#define LEAN_PUBLISH_BATCH_PATH "/ke.v1.Hub/PublishBatch"
#define LEAN_TUNNEL_PATH "/ke.v1.CloudHub/Tunnel"
#define LEAN_SERVER_IP "127.0.0.1" /* the server certificate's name the edge checks */

/* ---- what the parent and the workers share (MAP_SHARED) ---- */

typedef struct lean_shared {
    atomic_int epoch; /* 1: connect, 2: after the restart; 0: not yet */
    atomic_int stop;  /* close everything and exit */
    atomic_int port;  /* cloudcore's grpc port */
    atomic_long ready; /* workers set up */
    /* per epoch: first HelloAck / ResyncDone of each node, and when the last came */
    atomic_long acked[LEAN_EPOCHS], resynced[LEAN_EPOCHS], resumed[LEAN_EPOCHS];
    atomic_llong last_ack_ns[LEAN_EPOCHS], last_resync_ns[LEAN_EPOCHS];
    atomic_long attempts, failed_attempts, refusals, lost_after_ack, closed, open_fds;
    atomic_long first_open_ns_set;
    /* fan-out: distinct messages acked, duplicates, and when the last came */
    atomic_long fan_acked, fan_dups;
    atomic_llong fan_done_ns;
    atomic_llong first_open_ns;
    /* what each worker's libraries hold, bytes (malloc_usable_size) */
    atomic_long ssl_bytes[LEAN_MAX_WORKERS], h2_bytes[LEAN_MAX_WORKERS];
    atomic_int failed;
    char first_error[LEAN_ERR_MAX];
} lean_shared;

/* ---- the options and the parent's state ---- */

typedef struct lean {
    long n_nodes;
    int workers, dests, restart, keep_tmp;
    char cloudcore[LEAN_PROG_MAX], keadm[LEAN_PROG_MAX];
    char tmp[LEAN_DIR_MAX], cloud[LEAN_SUBDIR_MAX], nodes_dir[LEAN_SUBDIR_MAX];
    char target[64];
    pid_t cc_pid;
    pid_t wpid[LEAN_MAX_WORKERS];
    int wake_w[LEAN_MAX_WORKERS]; /* write ends of the workers' wake pipes */
    int notify_r;                 /* read end of the workers' notify pipe */
    lean_shared *sh;
    _Atomic int64_t *resynced_ns; /* [N], shared: each node's first ResyncDone after the restart */
    atomic_uint *refused;         /* [N], shared: admission refusals per node */
    _Atomic int64_t *fan_lat;     /* [N * M], shared: publish -> node's ack; 0: not yet */
    long n_messages;              /* fan-out: per node (--messages; 0: no fan-out) */
    int batch;                    /* messages per PublishBatch */
    atomic_long publish_finished;
    size_t shm_len;
    bench_waiter w; /* the join's */
    atomic_long join_finished;
} lean;

static lean g_lean;


static void node_name(char *out, size_t len, long idx)
{
    snprintf(out, len, "sim-%05ld", idx + 1);
}

/* lean_fail keeps the first failure for the parent to say. Any process. */
static void lean_fail(lean_shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lean_fail(lean_shared *sh, const char *fmt, ...)
{
    if (atomic_fetch_add(&sh->failed, 1) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->first_error, sizeof(sh->first_error), fmt, ap);
    va_end(ap);
}

/* ---- counting allocators: where the workers' heap goes ---- */

/* Live bytes OpenSSL and nghttp2 hold in this process. Each worker is one
 * thread; the parent's rpc threads also allocate through OpenSSL, hence
 * the atomic (the parent does not report it). */
static atomic_long g_ssl_live;
static long g_h2_live;

static void *ssl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add_explicit(&g_ssl_live, (long)malloc_usable_size(p), memory_order_relaxed);
    return p;
}

static void *ssl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    long old = p ? (long)malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q || n == 0)
        atomic_fetch_add_explicit(&g_ssl_live, (q ? (long)malloc_usable_size(q) : 0) - old,
                                  memory_order_relaxed);
    return q;
}

static void ssl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p)
        atomic_fetch_sub_explicit(&g_ssl_live, (long)malloc_usable_size(p), memory_order_relaxed);
    free(p);
}

/* nghttp2's allocator. Each block has a header: its size and whether it
 * is mapped. Blocks of LEAN_H2_MAP_MIN bytes or more (the session's 16 KiB
 * frame buffer, made by a realloc that glibc would keep on the heap) get
 * pages of their own, of which only the touched ones are resident: our
 * frames are small, so one page of the four. */
#define LEAN_H2_MAP_MIN 8192
typedef struct h2_hdr {
    size_t size;   /* what the caller asked for */
    size_t mapped; /* 1: mmap, 0: malloc */
} h2_hdr;

static void *h2_alloc(size_t n, int zero)
{
    h2_hdr *h;
    if (n >= LEAN_H2_MAP_MIN) {
        void *p = mmap(NULL, n + sizeof(*h), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        h = p;
        h->mapped = 1;
    } else {
        h = zero ? calloc(1, n + sizeof(*h)) : malloc(n + sizeof(*h));
        if (!h)
            return NULL;
        h->mapped = 0;
    }
    h->size = n;
    g_h2_live += (long)n;
    return h + 1;
}

static void h2_free(void *p, void *ud)
{
    (void)ud;
    if (!p)
        return;
    h2_hdr *h = (h2_hdr *)p - 1;
    g_h2_live -= (long)h->size;
    if (h->mapped)
        munmap(h, h->size + sizeof(*h));
    else
        free(h);
}

static void *h2_malloc(size_t n, void *ud)
{
    (void)ud;
    return h2_alloc(n, 0);
}

static void *h2_calloc(size_t k, size_t n, void *ud)
{
    (void)ud;
    if (n && k > SIZE_MAX / n)
        return NULL;
    return h2_alloc(k * n, 1);
}

static void *h2_realloc(void *p, size_t n, void *ud)
{
    if (!p)
        return h2_alloc(n, 0);
    if (n == 0) {
        h2_free(p, ud);
        return NULL;
    }
    h2_hdr *h = (h2_hdr *)p - 1;
    void *q = h2_alloc(n, 0);
    if (!q)
        return NULL;
    memcpy(q, p, h->size < n ? h->size : n);
    h2_free(p, ud);
    return q;
}

static nghttp2_mem g_h2_mem = {NULL, h2_malloc, h2_free, h2_calloc, h2_realloc};

/* ---- /proc ---- */

/* meminfo reads a field of /proc/meminfo in KiB (-1: none). */
static long meminfo(const char *field)
{
    char line[256], name[64];
    long v = -1, x;
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "%63[^:]: %ld kB", name, &x) == 2 && strcmp(name, field) == 0) {
            v = x;
            break;
        }
    if (f)
        fclose(f);
    return v;
}

/* raise_nofile: bench_raise_nofile, saying what it means here. */
static int raise_nofile(long need, rlim_t *got)
{
    int rc = bench_raise_nofile(need, got);
    if (rc == -1)
        fprintf(stderr, "edge_sim_lean: cloudcore needs %ld open files for %ld nodes (one "
                        "socket each + %d) but the hard limit is %llu and cannot be raised "
                        "(%s: raising it takes CAP_SYS_RESOURCE, which %s; "
                        "/proc/sys/fs/nr_open bounds it). At most %llu nodes here.\n",
                need, need - LEAN_FD_RESERVE, LEAN_FD_RESERVE, (unsigned long long)*got,
                strerror(errno),
                prctl(PR_CAPBSET_READ, CAP_SYS_RESOURCE, 0, 0, 0) == 1
                    ? "this process may have but did not get"
                    : "is not in this machine's capability bounding set",
                (unsigned long long)(*got - LEAN_FD_RESERVE));
    else if (rc != 0)
        fprintf(stderr, "edge_sim_lean: cannot raise the open files limit: %s\n",
                strerror(errno));
    return rc;
}

/* ======================================================================
 * The worker: N / W nodes on one epoll loop.
 * ====================================================================== */

enum { LN_IDLE, LN_CONNECTING, LN_TLS, LN_H2 };

/* lnode: one simulated node's tunnel, in its worker only. Buffers exist
 * only while they hold bytes. */
typedef struct lnode {
    uint32_t idx;
    int fd; /* -1: none */
    uint8_t state;
    uint8_t acked_epoch, resynced_epoch; /* the epoch of its last counted HelloAck / ResyncDone */
    uint8_t acked_now;   /* this connection got its HelloAck */
    uint8_t in_window;   /* counted in the connect window */
    uint8_t need_reconnect, closing;
    uint32_t events;     /* registered with epoll */
    int32_t stream_id;
    SSL *ssl;
    nghttp2_session *h2;
    unsigned char *sess_der; /* its last TLS session, DER; NULL: none */
    uint32_t sess_len;
    uint8_t *rx;             /* a partly received gRPC message */
    uint32_t rx_len, rx_cap;
    uint8_t *tx;             /* gRPC bytes not yet taken by nghttp2 */
    uint32_t tx_len, tx_off;
    int32_t backoff_ms;
    uint32_t retry_after_ms;
    int64_t retry_at_ms;
    unsigned seed;
} lnode;

typedef struct worker {
    int id, n_workers;
    long n_total, n_mine, next_start; /* next_start: the first connect's cursor over mine */
    int window, inflight;
    int dests;
    lean_shared *sh;
    _Atomic int64_t *resynced_ns;
    atomic_uint *refused;
    _Atomic int64_t *fan_lat;
    long n_messages;
    lnode *node;
    int ep, wake_r, notify_w;
    SSL_CTX *ctx;
    const char *nodes_dir;
    char authority[32];
    int epoch, port;
    long pending_reconnects;
    int64_t next_due_ms;
    int moved; /* a shared counter moved this round: notify the parent */
    uint8_t rbuf[LEAN_READ_CHUNK];
} worker;

static worker *g_w; /* the worker of this process (callbacks reach it here) */

static int64_t now_ms(void)
{
    return bench_now_ns() / 1000000;
}

static void w_set_events(worker *w, lnode *n, uint32_t ev)
{
    if (n->fd < 0 || n->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = n};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, n->fd, &e) == 0)
        n->events = ev;
}

static void w_leave_window(worker *w, lnode *n)
{
    if (n->in_window) {
        n->in_window = 0;
        w->inflight--;
    }
}

/* node_schedule: the next attempt as EdgeHub's: uniform in [b/2, b] of
 * the backoff b (doubling to its bound), no sooner than a retry_after
 * (plus up to a tenth). */
static void node_schedule(worker *w, lnode *n)
{
    int64_t b = n->backoff_ms ? n->backoff_ms : LEAN_BACKOFF_INITIAL_MS;
    int64_t delay = b / 2 + (int64_t)(rand_r(&n->seed) % (unsigned)(b / 2 + 1));
    n->backoff_ms = (int32_t)(b * 2 > LEAN_BACKOFF_MAX_MS ? LEAN_BACKOFF_MAX_MS : b * 2);
    int64_t ra = n->retry_after_ms;
    n->retry_after_ms = 0;
    if (ra) {
        ra += (int64_t)(rand_r(&n->seed) % (unsigned)(ra / 10 + 1));
        if (ra > delay)
            delay = ra;
    }
    n->retry_at_ms = now_ms() + delay;
    n->need_reconnect = 1;
    w->pending_reconnects++;
    if (n->retry_at_ms < w->next_due_ms)
        w->next_due_ms = n->retry_at_ms;
}

/* node_teardown frees the connection's state; with a retry unless stopping. */
static void node_teardown(worker *w, lnode *n)
{
    if (n->h2) {
        nghttp2_session_del(n->h2);
        n->h2 = NULL;
    }
    if (n->ssl) {
        SSL_free(n->ssl);
        n->ssl = NULL;
    }
    if (n->fd >= 0) {
        close(n->fd);
        n->fd = -1;
        atomic_fetch_sub(&w->sh->open_fds, 1);
    }
    free(n->rx);
    free(n->tx);
    n->rx = n->tx = NULL;
    n->rx_len = n->rx_cap = n->tx_len = n->tx_off = 0;
    n->events = 0;
    n->stream_id = 0;
    n->closing = 0;
    w_leave_window(w, n);
    if (n->state != LN_IDLE) {
        if (!n->acked_now)
            atomic_fetch_add(&w->sh->failed_attempts, 1);
        else
            atomic_fetch_add(&w->sh->lost_after_ack, 1);
        atomic_fetch_add(&w->sh->closed, 1);
        w->moved = 1;
    }
    n->state = LN_IDLE;
    n->acked_now = 0;
    if (!atomic_load(&w->sh->stop))
        node_schedule(w, n);
}

/* ---- gRPC messages ---- */

/* node_queue appends one gRPC message (EdgeFrame) to the node's send
 * bytes and lets nghttp2 take them. Returns 0, or -1. */
static int node_queue(lnode *n, const Ke__V1__EdgeFrame *f)
{
    size_t len = protobuf_c_message_get_packed_size(&f->base);
    size_t have = n->tx_len - n->tx_off;
    uint8_t *buf = malloc(have + 5 + len);
    if (!buf)
        return -1;
    if (have)
        memcpy(buf, n->tx + n->tx_off, have);
    buf[have] = 0;
    buf[have + 1] = (uint8_t)(len >> 24);
    buf[have + 2] = (uint8_t)(len >> 16);
    buf[have + 3] = (uint8_t)(len >> 8);
    buf[have + 4] = (uint8_t)len;
    protobuf_c_message_pack(&f->base, buf + have + 5);
    free(n->tx);
    n->tx = buf;
    n->tx_off = 0;
    n->tx_len = (uint32_t)(have + 5 + len);
    if (n->h2 && n->stream_id > 0)
        nghttp2_session_resume_data(n->h2, n->stream_id);
    return 0;
}

/* node_on_fanout times message j of the fan-out (its resource_version -
 * 1) from its publish (the monotonic time the publisher wrote into its
 * content: one clock for every process) to now, its ack. */
static void node_on_fanout(worker *w, lnode *n, const Ke__V1__SequencedMessage *sm)
{
    static const char key[] = "\"publishedAtMonoNs\":\"";
    const Ke__V1__Message *m = sm ? sm->message : NULL;
    uint64_t rv = m && m->header ? m->header->resource_version : 0;
    char text[LEAN_CONTENT_BYTES + 64];
    if (!m || rv == 0 || rv > (uint64_t)w->n_messages || m->content.len >= sizeof(text)) {
        lean_fail(w->sh, "node %u got a message it was not sent (seq=%llu rv=%llu)", n->idx + 1,
                  sm ? (unsigned long long)sm->seq : 0ULL, (unsigned long long)rv);
        w->moved = 1;
        return;
    }
    memcpy(text, m->content.data, m->content.len);
    text[m->content.len] = 0;
    const char *at = strstr(text, key);
    long long issued = at ? atoll(at + sizeof(key) - 1) : 0;
    int64_t now = bench_now_ns(), lat = issued > 0 ? now - issued : 0, expect = 0;
    size_t k = (size_t)n->idx * (size_t)w->n_messages + (size_t)(rv - 1);
    if (!atomic_compare_exchange_strong(&w->fan_lat[k], &expect, lat > 0 ? lat : 1)) {
        atomic_fetch_add(&w->sh->fan_dups, 1);
        return;
    }
    atomic_store(&w->sh->fan_done_ns, now);
    atomic_fetch_add(&w->sh->fan_acked, 1);
    w->moved = 1;
}

static void node_on_frame(worker *w, lnode *n, const Ke__V1__CloudFrame *f)
{
    lean_shared *sh = w->sh;
    int ep = w->epoch;
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        n->acked_now = 1;
        n->backoff_ms = LEAN_BACKOFF_INITIAL_MS; /* as EdgeHub: a good stream resets it */
        w_leave_window(w, n);
        if (n->acked_epoch != ep) {
            n->acked_epoch = (uint8_t)ep;
            if (SSL_session_reused(n->ssl))
                atomic_fetch_add(&sh->resumed[ep], 1);
            atomic_store(&sh->last_ack_ns[ep], bench_now_ns());
            atomic_fetch_add(&sh->acked[ep], 1);
            w->moved = 1;
        }
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        if (n->resynced_epoch != ep) {
            n->resynced_epoch = (uint8_t)ep;
            int64_t t = bench_now_ns();
            if (ep == 2)
                atomic_store(&w->resynced_ns[n->idx], t);
            atomic_store(&sh->last_resync_ns[ep], t);
            atomic_fetch_add(&sh->resynced[ep], 1);
            w->moved = 1;
        }
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE: {
        Ke__V1__Ack ack = KE__V1__ACK__INIT;
        Ke__V1__EdgeFrame e = KE__V1__EDGE_FRAME__INIT;
        ack.seq = f->message ? f->message->seq : 0;
        e.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
        e.ack = &ack;
        if (node_queue(n, &e) != 0)
            n->closing = 1;
        node_on_fanout(w, n, f->message);
        break;
    }
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        if (f->refusal && f->refusal->seq == 0 && f->refusal->fatal) {
            /* admission: the stream ends; the teardown schedules the retry */
            atomic_fetch_add(&sh->refusals, 1);
            atomic_fetch_add(&w->refused[n->idx], 1);
            n->retry_after_ms = f->refusal->retry_after_ms > LEAN_RETRY_AFTER_MAX_MS
                                    ? LEAN_RETRY_AFTER_MAX_MS
                                    : f->refusal->retry_after_ms;
        } else {
            char name[LEAN_NAME_MAX];
            node_name(name, sizeof(name), n->idx);
            lean_fail(sh, "node %s: cloud refused seq=%llu: %s", name,
                      f->refusal ? (unsigned long long)f->refusal->seq : 0ULL,
                      f->refusal && f->refusal->reason ? f->refusal->reason : "");
            w->moved = 1;
        }
        break;
    default: /* keepalive, ack of upstream */
        break;
    }
}

/* node_rx takes DATA bytes: whole gRPC messages are decoded and handled. */
static int node_rx(worker *w, lnode *n, const uint8_t *data, size_t len)
{
    while (len > 0) {
        /* the common case: whole messages straight from the read buffer */
        if (n->rx_len == 0 && len >= 5) {
            uint32_t ml = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 |
                          (uint32_t)data[3] << 8 | data[4];
            if (data[0] != 0 || ml > LEAN_MSG_MAX)
                return -1;
            if (len >= 5 + (size_t)ml) {
                Ke__V1__CloudFrame *f = ke__v1__cloud_frame__unpack(NULL, ml, data + 5);
                if (!f)
                    return -1;
                node_on_frame(w, n, f);
                ke__v1__cloud_frame__free_unpacked(f, NULL);
                data += 5 + ml;
                len -= 5 + ml;
                continue;
            }
        }
        /* a partial message: gather it */
        uint32_t need = 5;
        if (n->rx_len >= 5) {
            need = 5 + ((uint32_t)n->rx[1] << 24 | (uint32_t)n->rx[2] << 16 |
                        (uint32_t)n->rx[3] << 8 | n->rx[4]);
        }
        size_t take = need - n->rx_len < len ? need - n->rx_len : len;
        if (n->rx_len + take > n->rx_cap) {
            uint32_t cap = need < 64 ? 64 : need;
            uint8_t *nb = realloc(n->rx, cap);
            if (!nb)
                return -1;
            n->rx = nb;
            n->rx_cap = cap;
        }
        memcpy(n->rx + n->rx_len, data, take);
        n->rx_len += (uint32_t)take;
        data += take;
        len -= take;
        if (n->rx_len == 5) {
            uint32_t ml = (uint32_t)n->rx[1] << 24 | (uint32_t)n->rx[2] << 16 |
                          (uint32_t)n->rx[3] << 8 | n->rx[4];
            if (n->rx[0] != 0 || ml > LEAN_MSG_MAX)
                return -1;
            if (ml > 0)
                continue;
        }
        if (n->rx_len >= 5 && n->rx_len == need) {
            Ke__V1__CloudFrame *f = ke__v1__cloud_frame__unpack(NULL, need - 5, n->rx + 5);
            free(n->rx);
            n->rx = NULL;
            n->rx_len = n->rx_cap = 0;
            if (!f)
                return -1;
            node_on_frame(w, n, f);
            ke__v1__cloud_frame__free_unpacked(f, NULL);
        }
    }
    return 0;
}

/* ---- nghttp2 callbacks (user_data: the lnode) ---- */

static ssize_t h2_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    lnode *n = ud;
    ERR_clear_error();
    int r = SSL_write(n->ssl, data, len > INT_MAX ? INT_MAX : (int)len);
    if (r > 0)
        return r;
    int e = SSL_get_error(n->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
        return NGHTTP2_ERR_WOULDBLOCK;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *ud)
{
    (void)s;
    (void)flags;
    lnode *n = ud;
    if (sid != n->stream_id)
        return 0;
    if (node_rx(g_w, n, data, len) != 0) {
        char name[LEAN_NAME_MAX];
        node_name(name, sizeof(name), n->idx);
        lean_fail(g_w->sh, "node %s: a CloudFrame that does not decode", name);
        n->closing = 1;
    }
    return 0;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    (void)s;
    (void)flags;
    lnode *n = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != n->stream_id)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0 &&
        !(valuelen == 3 && memcmp(value, "200", 3) == 0))
        n->closing = 1;
    /* grpc-status: the stream's end; the close callback follows. Nonzero is
     * normal in the restart phase (a refusal: RESOURCE_EXHAUSTED). */
    return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud)
{
    (void)s;
    (void)error_code;
    lnode *n = ud;
    if (sid == n->stream_id)
        n->closing = 1;
    return 0;
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    (void)s;
    lnode *n = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        n->closing = 1;
    return 0;
}

static ssize_t h2_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)flags;
    (void)src;
    lnode *n = ud;
    size_t have = n->tx_len - n->tx_off;
    if (have == 0)
        return NGHTTP2_ERR_DEFERRED; /* the stream stays open; node_queue resumes it */
    size_t k = have < len ? have : len;
    memcpy(buf, n->tx + n->tx_off, k);
    n->tx_off += (uint32_t)k;
    if (n->tx_off == n->tx_len) {
        free(n->tx);
        n->tx = NULL;
        n->tx_len = n->tx_off = 0;
    }
    return (ssize_t)k;
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_h2opt;

static int h2_setup(void)
{
    if (nghttp2_session_callbacks_new(&g_cbs) != 0 || nghttp2_option_new(&g_h2opt) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(g_cbs, h2_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, h2_on_data);
    nghttp2_session_callbacks_set_on_header_callback(g_cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, h2_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, h2_on_frame_recv);
    /* our HPACK encoder keeps no dynamic table: the one request's headers
     * are sent once per connection */
    nghttp2_option_set_max_deflate_dynamic_table_size(g_h2opt, 0);
    nghttp2_option_set_no_auto_window_update(g_h2opt, 0);
    return 0;
}

/* node_h2_start: the nghttp2 session, its SETTINGS, the Tunnel request and
 * the Hello. Returns 0, or -1. */
static int node_h2_start(worker *w, lnode *n)
{
    if (nghttp2_session_client_new3(&n->h2, g_cbs, n, g_h2opt, &g_h2_mem) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0},   /* no dynamic table for the server's headers */
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0}, /* the server opens none */
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535},
    };
    if (nghttp2_submit_settings(n->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0)
        return -1;
#define NV(k, v)                                                                                  \
    {(uint8_t *)(k), (uint8_t *)(v), sizeof(k) - 1, sizeof(v) - 1,                               \
     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
    nghttp2_nv hdr[] = {
        NV(":method", "POST"),
        NV(":scheme", "https"),
        NV(":path", LEAN_TUNNEL_PATH),
        {(uint8_t *)":authority", (uint8_t *)w->authority, 10, strlen(w->authority),
         NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE},
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "ke-edgesim-lean"),
    };
#undef NV
    nghttp2_data_provider body = {.source.ptr = NULL, .read_callback = h2_body};
    int32_t sid = nghttp2_submit_request(n->h2, NULL, hdr, sizeof(hdr) / sizeof(hdr[0]), &body, n);
    if (sid < 0)
        return -1;
    n->stream_id = sid;
    char name[LEAN_NAME_MAX];
    node_name(name, sizeof(name), n->idx);
    Ke__V1__Hello h = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.node_name = name;
    h.agent_version = "sim-lean";
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &h;
    return node_queue(n, &f);
}

/* ---- TLS ---- */

/* A new session (TLS 1.3: after the handshake, in a NewSessionTicket):
 * kept as DER, the node's only TLS state between connections. */
static int tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    lnode *n = SSL_get_app_data(ssl);
    int len = i2d_SSL_SESSION(sess, NULL);
    if (!n || len <= 0)
        return 0;
    unsigned char *der = malloc((size_t)len), *p = der;
    if (!der)
        return 0;
    if (i2d_SSL_SESSION(sess, &p) != len) {
        free(der);
        return 0;
    }
    free(n->sess_der);
    n->sess_der = der;
    n->sess_len = (uint32_t)len;
    return 0; /* we keep no reference to sess */
}

static SSL_CTX *tls_ctx_new(const char *ca_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    static const unsigned char alpn[] = "\x02h2";
    if (!ctx || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 ||
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), LEAN_SERVER_IP) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
    return ctx;
}

/* tls_use_identity reads the node's certificate and key from its files
 * and gives them to ssl (which holds them until it is freed). */
static int tls_use_identity(worker *w, SSL *ssl, long idx)
{
    char name[LEAN_NAME_MAX], path[LEAN_PATH_MAX];
    node_name(name, sizeof(name), idx);
    int ok = 0;
    snprintf(path, sizeof(path), "%s/%s.crt", w->nodes_dir, name);
    FILE *f = fopen(path, "re");
    X509 *crt = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    snprintf(path, sizeof(path), "%s/%s.key", w->nodes_dir, name);
    f = fopen(path, "re");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (crt && key && SSL_use_certificate(ssl, crt) == 1 && SSL_use_PrivateKey(ssl, key) == 1)
        ok = 1;
    X509_free(crt);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

/* ---- the connection's steps ---- */

static void node_open(worker *w, lnode *n)
{
    n->need_reconnect = 0;
    atomic_fetch_add(&w->sh->attempts, 1);
    if (atomic_load(&w->sh->first_open_ns_set) == 0 &&
        atomic_exchange(&w->sh->first_open_ns_set, 1) == 0)
        atomic_store(&w->sh->first_open_ns, bench_now_ns());
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port)};
    a.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(n->idx % (uint32_t)w->dests));
    n->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (n->fd < 0) {
        lean_fail(w->sh, "socket: %s (open files limit?)", strerror(errno));
        n->state = LN_CONNECTING; /* counted as a failed attempt */
        node_teardown(w, n);
        return;
    }
    atomic_fetch_add(&w->sh->open_fds, 1);
    n->state = LN_CONNECTING;
    int one = 1;
    setsockopt(n->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(n->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
        if (errno == EADDRNOTAVAIL)
            lean_fail(w->sh, "connect: %s (ephemeral ports used up: more --dests)",
                      strerror(errno));
        node_teardown(w, n);
        return;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = n};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, n->fd, &e) != 0) {
        lean_fail(w->sh, "epoll_ctl: %s", strerror(errno));
        node_teardown(w, n);
        return;
    }
    n->events = EPOLLOUT;
}

/* node_flush lets nghttp2 write; sets the events the connection waits for. */
static void node_flush(worker *w, lnode *n)
{
    if (nghttp2_session_send(n->h2) != 0) {
        n->closing = 1;
        return;
    }
    if (!nghttp2_session_want_read(n->h2) && !nghttp2_session_want_write(n->h2)) {
        n->closing = 1;
        return;
    }
    /* still wanting to write after a send: the socket is full (WOULDBLOCK) */
    w_set_events(w, n, nghttp2_session_want_write(n->h2) ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void node_tls_step(worker *w, lnode *n)
{
    ERR_clear_error();
    int r = SSL_do_handshake(n->ssl);
    if (r != 1) {
        int e = SSL_get_error(n->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            w_set_events(w, n, EPOLLIN);
        else if (e == SSL_ERROR_WANT_WRITE)
            w_set_events(w, n, EPOLLOUT);
        else
            n->closing = 1; /* refused, reset, or the server's certificate did not verify */
        if (e == SSL_ERROR_SSL && SSL_get_verify_result(n->ssl) != X509_V_OK)
            lean_fail(w->sh, "the server certificate did not verify: %s",
                      X509_verify_cert_error_string(SSL_get_verify_result(n->ssl)));
        return;
    }
    const unsigned char *proto = NULL;
    unsigned plen = 0;
    SSL_get0_alpn_selected(n->ssl, &proto, &plen);
    if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
        lean_fail(w->sh, "the server did not select ALPN h2");
        n->closing = 1;
        return;
    }
    /* the node's certificate and key are no longer needed on this connection
     * (TLS 1.3: no renegotiation; grpc asks no post-handshake auth) */
    SSL_certs_clear(n->ssl);
    n->state = LN_H2;
    if (node_h2_start(w, n) != 0) {
        n->closing = 1;
        return;
    }
    node_flush(w, n);
}

static void node_h2_read(worker *w, lnode *n)
{
    for (;;) {
        ERR_clear_error();
        int r = SSL_read(n->ssl, w->rbuf, sizeof(w->rbuf));
        if (r > 0) {
            if (nghttp2_session_mem_recv(n->h2, w->rbuf, (size_t)r) < 0) {
                n->closing = 1;
                return;
            }
            if (n->closing)
                return;
            continue;
        }
        int e = SSL_get_error(n->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            n->closing = 1; /* EOF, reset: cloudcore gone, or the stream refused */
        return;
    }
}

static void node_event(worker *w, lnode *n, uint32_t ev)
{
    switch (n->state) {
    case LN_CONNECTING: {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(n->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0 ||
            (ev & (EPOLLERR | EPOLLHUP))) {
            n->closing = 1;
            break;
        }
        n->ssl = SSL_new(w->ctx);
        if (!n->ssl || tls_use_identity(w, n->ssl, n->idx) != 0 || SSL_set_fd(n->ssl, n->fd) != 1) {
            lean_fail(w->sh, "cannot set up TLS for node %u", n->idx + 1);
            n->closing = 1;
            break;
        }
        SSL_set_app_data(n->ssl, n);
        if (n->sess_der) {
            const unsigned char *p = n->sess_der;
            SSL_SESSION *s = d2i_SSL_SESSION(NULL, &p, (long)n->sess_len);
            if (s) {
                SSL_set_session(n->ssl, s);
                SSL_SESSION_free(s);
            }
        }
        SSL_set_connect_state(n->ssl);
        n->state = LN_TLS;
        node_tls_step(w, n);
        break;
    }
    case LN_TLS:
        node_tls_step(w, n);
        break;
    case LN_H2:
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
            node_h2_read(w, n);
        if (!n->closing)
            node_flush(w, n);
        break;
    default:
        break;
    }
    if (n->closing)
        node_teardown(w, n);
}

/* w_reconnect_due opens every reconnect that is due; sets next_due_ms. */
static void w_reconnect_due(worker *w)
{
    int64_t now = now_ms(), next = INT64_MAX;
    if (w->pending_reconnects == 0 || now < w->next_due_ms)
        return;
    for (long i = 0; i < w->n_mine; i++) {
        lnode *n = &w->node[i];
        if (!n->need_reconnect)
            continue;
        if (n->retry_at_ms <= now) {
            w->pending_reconnects--;
            node_open(w, n);
        } else if (n->retry_at_ms < next) {
            next = n->retry_at_ms;
        }
    }
    w->next_due_ms = next;
}

/* w_start_more opens first connections while the window allows. */
static void w_start_more(worker *w)
{
    while (w->epoch >= 1 && w->next_start < w->n_mine && w->inflight < w->window) {
        lnode *n = &w->node[w->next_start++];
        n->in_window = 1;
        w->inflight++;
        node_open(w, n);
    }
}

static int worker_main(worker *w)
{
    w->ctx = NULL;
    char ca[LEAN_PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca.crt", g_lean.cloud);
    if (h2_setup() != 0) {
        lean_fail(w->sh, "worker %d: nghttp2 setup failed", w->id);
        return 1;
    }
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    if (w->ep < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake_r, &e) != 0) {
        lean_fail(w->sh, "worker %d: epoll: %s", w->id, strerror(errno));
        return 1;
    }
    w->node = calloc((size_t)w->n_mine ? (size_t)w->n_mine : 1, sizeof(*w->node));
    if (!w->node) {
        lean_fail(w->sh, "worker %d: out of memory", w->id);
        return 1;
    }
    for (long i = 0; i < w->n_mine; i++) {
        lnode *n = &w->node[i];
        n->idx = (uint32_t)(w->id + i * w->n_workers);
        n->fd = -1;
        n->backoff_ms = LEAN_BACKOFF_INITIAL_MS;
        n->seed = n->idx * 2654435761u ^ (unsigned)getpid();
    }
    w->next_due_ms = INT64_MAX;
    atomic_fetch_add(&w->sh->ready, 1);
    if (write(w->notify_w, "r", 1) < 0) {
        /* a full pipe: the parent has a wake-up pending already */
    }
    struct epoll_event evs[LEAN_EPOLL_BATCH];
    int stopping = 0;
    while (!stopping) {
        int timeout = -1;
        if (w->pending_reconnects > 0) {
            int64_t d = w->next_due_ms - now_ms();
            timeout = d < 0 ? 0 : d > LEAN_TICK_MS ? LEAN_TICK_MS : (int)d;
        }
        int k = epoll_wait(w->ep, evs, LEAN_EPOLL_BATCH, timeout);
        if (k < 0 && errno != EINTR) {
            lean_fail(w->sh, "worker %d: epoll_wait: %s", w->id, strerror(errno));
            break;
        }
        for (int i = 0; i < k; i++) {
            if (evs[i].data.ptr == NULL) { /* the parent: a new epoch, or stop */
                char buf[64];
                while (read(w->wake_r, buf, sizeof(buf)) > 0)
                    ;
                if (atomic_load(&w->sh->stop)) {
                    stopping = 1;
                    break;
                }
                int ep = atomic_load(&w->sh->epoch);
                if (ep != w->epoch) {
                    w->epoch = ep;
                    w->port = atomic_load(&w->sh->port);
                    snprintf(w->authority, sizeof(w->authority), "%s:%d", LEAN_SERVER_IP,
                             w->port);
                    if (!w->ctx && !(w->ctx = tls_ctx_new(ca))) {
                        lean_fail(w->sh, "worker %d: cannot load %s", w->id, ca);
                        stopping = 1;
                        break;
                    }
                }
                continue;
            }
            node_event(w, evs[i].data.ptr, evs[i].events);
        }
        if (stopping)
            break;
        w_reconnect_due(w);
        w_start_more(w);
        atomic_store(&w->sh->ssl_bytes[w->id], atomic_load(&g_ssl_live));
        atomic_store(&w->sh->h2_bytes[w->id], g_h2_live);
        if (w->moved || atomic_load(&w->sh->failed)) {
            w->moved = 0;
            if (write(w->notify_w, "m", 1) < 0) {
                /* full: the parent is woken already */
            }
        }
    }
    for (long i = 0; i < w->n_mine; i++) {
        lnode *n = &w->node[i];
        if (n->state != LN_IDLE)
            node_teardown(w, n);
        free(n->sess_der);
    }
    free(w->node);
    SSL_CTX_free(w->ctx);
    nghttp2_session_callbacks_del(g_cbs);
    nghttp2_option_del(g_h2opt);
    close(w->ep);
    return 0;
}

/* ======================================================================
 * The parent.
 * ====================================================================== */

/* workers_start forks the workers: before any grpc in this process. */
static int workers_start(lean *L)
{
    int nf[2];
    if (pipe2(nf, O_CLOEXEC | O_NONBLOCK) != 0)
        return -1;
    L->notify_r = nf[0];
    for (int i = 0; i < L->workers; i++) {
        int wp[2];
        if (pipe2(wp, O_CLOEXEC | O_NONBLOCK) != 0)
            return -1;
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            /* a worker does not outlive the parent (killed, or crashed) */
            if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() == 1)
                _exit(1);
            close(nf[0]);
            close(wp[1]);
            for (int j = 0; j < i; j++)
                close(L->wake_w[j]);
            static worker wk;
            wk.id = i;
            wk.n_workers = L->workers;
            wk.n_total = L->n_nodes;
            wk.n_mine = L->n_nodes / L->workers + (i < L->n_nodes % L->workers);
            wk.window = LEAN_CONNECT_WINDOW / L->workers;
            if (wk.window < 1)
                wk.window = 1;
            wk.dests = L->dests;
            wk.sh = L->sh;
            wk.resynced_ns = L->resynced_ns;
            wk.refused = L->refused;
            wk.fan_lat = L->fan_lat;
            wk.n_messages = L->n_messages;
            wk.wake_r = wp[0];
            wk.notify_w = nf[1];
            wk.nodes_dir = L->nodes_dir;
            g_w = &wk;
            _exit(worker_main(&wk));
        }
        close(wp[0]);
        L->wpid[i] = pid;
        L->wake_w[i] = wp[1];
    }
    close(nf[1]);
    return 0;
}

static void workers_wake(lean *L)
{
    for (int i = 0; i < L->workers; i++)
        if (write(L->wake_w[i], "w", 1) < 0) {
            /* full: that worker has a wake-up pending already */
        }
}

/* workers_alive: -1 (said why) when a worker has exited. */
static int workers_alive(lean *L)
{
    for (int i = 0; i < L->workers; i++) {
        int st;
        if (L->wpid[i] > 0 && waitpid(L->wpid[i], &st, WNOHANG) == L->wpid[i]) {
            L->wpid[i] = -1;
            fprintf(stderr, "edge_sim_lean: worker %d ended (status 0x%x)\n", i, st);
            return -1;
        }
    }
    return 0;
}

/* lean_wait blocks until *count >= target, woken by the workers; gives up
 * after a failure, a worker's end, or LEAN_STALL_S without a move. */
static int lean_wait(lean *L, atomic_long *count, long target, const char *what)
{
    long last = atomic_load(count);
    double moved = bench_now_s();
    while (atomic_load(count) < target) {
        if (atomic_load(&L->sh->failed)) {
            fprintf(stderr, "edge_sim_lean: %s\n", L->sh->first_error);
            return -1;
        }
        if (workers_alive(L) != 0)
            return -1;
        long c = atomic_load(count);
        if (c != last) {
            last = c;
            moved = bench_now_s();
        } else if (bench_now_s() - moved > LEAN_STALL_S) {
            fprintf(stderr, "edge_sim_lean: %ld of %ld %s, none for %d s\n", c, target, what,
                    LEAN_STALL_S);
            return -1;
        }
        struct pollfd p = {.fd = L->notify_r, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0) {
            char buf[256];
            while (read(L->notify_r, buf, sizeof(buf)) > 0)
                ;
        }
    }
    return 0;
}

static int workers_stop(lean *L)
{
    int status = 0;
    atomic_store(&L->sh->stop, 1);
    workers_wake(L);
    for (int i = 0; i < L->workers; i++) {
        int st = 0;
        if (L->wpid[i] <= 0)
            continue;
        if (bench_child_wait(L->wpid[i], LEAN_STOP_S, &st) != 0) {
            fprintf(stderr, "edge_sim_lean: worker %d did not exit; killed\n", i);
            kill(L->wpid[i], SIGKILL);
            bench_child_wait(L->wpid[i], LEAN_STOP_S, &st);
            status = -1;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            status = -1;
        }
        L->wpid[i] = -1;
        close(L->wake_w[i]);
    }
    return status;
}

/* workers' memory summed: RSS and the anonymous / file split, KiB. */
static void workers_mem(lean *L, long *rss, long *anon, long *file, long *fds)
{
    *rss = *anon = *file = *fds = 0;
    for (int i = 0; i < L->workers; i++) {
        long a = 0, f = 0;
        if (L->wpid[i] <= 0)
            continue;
        *rss += bench_rss_kib(L->wpid[i]);
        if (bench_mem_split(L->wpid[i], &a, &f) == 0) {
            *anon += a;
            *file += f;
        }
        *fds += bench_open_fds(L->wpid[i]);
    }
}

/* ---- join (the parent, over ke_rpc) ---- */

/* join_ctx: one Join in flight; its reply writes the node's files and frees it. */
typedef struct join_ctx {
    lean *L;
    long idx;
    char *key_pem;
} join_ctx;

static void join_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    join_ctx *j = ud;
    lean *L = j->L;
    const Ke__V1__JoinResponse *r = (const Ke__V1__JoinResponse *)reply;
    char name[LEAN_NAME_MAX], crt[LEAN_PATH_MAX], key[LEAN_PATH_MAX], *cert = NULL;
    node_name(name, sizeof(name), j->idx);
    snprintf(crt, sizeof(crt), "%s/%s.crt", L->nodes_dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", L->nodes_dir, name);
    if (st->code != KE_RPC_OK)
        bench_waiter_fail(&L->w, "join %s: %s: %s", name, ke_rpc_status_name(st->code),
                          st->message);
    else if (r->certificate_pem.len == 0 || r->certificate_pem.len > KE_PKI_PEM_MAX ||
             !(cert = strndup((const char *)r->certificate_pem.data, r->certificate_pem.len)))
        bench_waiter_fail(&L->w, "join %s: no usable certificate in the reply", name);
    else if (bench_write_plain(key, j->key_pem, 0600) != 0 ||
             bench_write_plain(crt, cert, 0644) != 0)
        bench_waiter_fail(&L->w, "cannot write %s: %s", crt, strerror(errno));
    free(cert);
    free(j->key_pem);
    free(j);
    atomic_fetch_add(&L->join_finished, 1);
    bench_waiter_signal(&L->w);
}

static int join_issue(lean *L, ke_rpc_channel *ch, long idx, const char *ca_pem,
                      const uint8_t *secret, size_t secret_len)
{
    char *csr = NULL, *token = NULL, name[LEAN_NAME_MAX];
    join_ctx *j = calloc(1, sizeof(*j));
    node_name(name, sizeof(name), idx);
    int rc = j ? ke_pki_key_create(&j->key_pem) : KE_ENOMEM;
    if (rc == 0)
        rc = ke_pki_csr_create(j->key_pem, name, &csr);
    if (rc == 0)
        rc = ke_pki_token_create(ca_pem, secret, secret_len, ke_time_wall_ms() / 1000 + LEAN_TOKEN_TTL_S,
                                 &token);
    if (rc == 0) {
        Ke__V1__JoinRequest req = KE__V1__JOIN_REQUEST__INIT;
        req.token = token;
        req.node_name = name;
        req.csr_pem.data = (uint8_t *)csr;
        req.csr_pem.len = strlen(csr);
        ke_rpc_call_opts o = {.timeout_ms = LEAN_RPC_TIMEOUT_MS};
        j->L = L;
        j->idx = idx;
        rc = ke_rpc_unary_async(ch, LEAN_JOIN_PATH, &req.base, &ke__v1__join_response__descriptor,
                                &o, join_on_reply, j);
    }
    if (rc != 0) {
        fprintf(stderr, "edge_sim_lean: cannot start the join of %s: %s\n", name, ke_strerror(rc));
        if (j)
            free(j->key_pem);
        free(j);
    }
    free(csr);
    free(token);
    return rc;
}

static int phase_join(lean *L, ke_rpc_loop *loop)
{
    char path[LEAN_PATH_MAX];
    char *ca_pem = NULL;
    uint8_t secret[KE_PKI_SECRET_MAX];
    size_t secret_len = 0;
    ke_rpc_channel *ch = NULL;
    int status = -1;
    long issued = 0;
    snprintf(path, sizeof(path), "%s/ca.crt", L->cloud);
    if (ke_pki_read_file(path, &ca_pem, NULL) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot read %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/token.secret", L->cloud);
    if (ke_pki_secret_read(path, secret, sizeof(secret), &secret_len) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot read %s\n", path);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/ca.crt", L->cloud);
    ke_rpc_tls tls = {.ca_file = path};
    ke_rpc_channel_opts co = {.tls = &tls};
    if (ke_rpc_channel_new(loop, L->target, &co, &ch) != 0)
        goto out;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < L->n_nodes; i++) {
        if (bench_waiter_wait(&L->w, &L->join_finished, i - LEAN_JOIN_WINDOW + 1,
                              "join replies") != 0 ||
            join_issue(L, ch, i, ca_pem, secret, secret_len) != 0)
            goto out;
        issued = i + 1;
    }
    if (bench_waiter_wait(&L->w, &L->join_finished, L->n_nodes, "join replies") != 0)
        goto out;
    double el = (double)(bench_now_ns() - t0) / 1e9;
    printf("join:     %ld nodes in %.2f s (%.0f joins/s, %d in flight, keys and CSRs made "
           "meanwhile)\n",
           L->n_nodes, el, (double)L->n_nodes / el, LEAN_JOIN_WINDOW);
    status = 0;
out:
    if (status != 0 && issued > 0) { /* the replies due free their contexts */
        atomic_store(&L->w.failed, 0);
        bench_waiter_wait(&L->w, &L->join_finished, issued, "join replies");
    }
    ke_rpc_channel_free(ch);
    free(ca_pem);
    return status;
}

/* ---- connect ---- */

static int phase_connect(lean *L)
{
    lean_shared *sh = L->sh;
    int64_t t0 = bench_now_ns();
    atomic_store(&sh->epoch, 1);
    workers_wake(L);
    if (lean_wait(L, &sh->acked[1], L->n_nodes, "HelloAcks") != 0 ||
        lean_wait(L, &sh->resynced[1], L->n_nodes, "ResyncDones") != 0)
        return -1;
    double el = (double)(atomic_load(&sh->last_ack_ns[1]) - t0) / 1e9;
    double rs = (double)(atomic_load(&sh->last_resync_ns[1]) - t0) / 1e9;
    printf("connect:  %ld nodes in %.2f s (%.0f nodes/s: TCP, TLS handshake with the node's "
           "certificate, Hello -> HelloAck; %d in flight over %d workers); all resynced at "
           "%.2f s\n",
           L->n_nodes, el, (double)L->n_nodes / el, LEAN_CONNECT_WINDOW, L->workers, rs);
    printf("          %ld connection attempts, %ld ended before a HelloAck, %ld admission "
           "refusals, %ld lost after their HelloAck\n",
           atomic_load(&sh->attempts), atomic_load(&sh->failed_attempts),
           atomic_load(&sh->refusals), atomic_load(&sh->lost_after_ack));
    return 0;
}

/* ---- fan-out ---- */

/* A PublishBatch in flight. */
typedef struct lean_batch {
    lean *L;
    int n;
} lean_batch;

static void batch_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    lean_batch *b = ud;
    lean *L = b->L;
    const Ke__V1__PublishBatchReply *r = (const Ke__V1__PublishBatchReply *)reply;
    if (st->code != KE_RPC_OK)
        bench_waiter_fail(&L->w, "publish batch: %s: %s", ke_rpc_status_name(st->code),
                          st->message);
    else if (r->n_results != (size_t)b->n)
        bench_waiter_fail(&L->w, "publish batch: %zu results for %d items", r->n_results, b->n);
    else
        for (size_t i = 0; i < r->n_results; i++)
            if (r->results[i]->code != KE_RPC_OK) {
                bench_waiter_fail(&L->w, "publish batch item %zu: %s", i, r->results[i]->error);
                break;
            }
    atomic_fetch_add(&L->publish_finished, b->n);
    free(b);
    bench_waiter_signal(&L->w);
}

/* pub_issue publishes messages k .. k+cnt-1 of the round-robin order
 * (message k is number k / N of node k % N) in one PublishBatch. */
static int pub_issue(lean *L, ke_rpc_channel *admin, long k, int cnt)
{
    bench_pub *p = calloc((size_t)cnt, sizeof(*p));
    Ke__V1__PublishRequest **items = calloc((size_t)cnt, sizeof(*items));
    lean_batch *b = calloc(1, sizeof(*b));
    int rc = KE_ENOMEM;
    if (p && items && b) {
        for (int i = 0; i < cnt; i++) {
            char name[LEAN_NAME_MAX];
            node_name(name, sizeof(name), (k + i) % L->n_nodes);
            bench_pub_fill(&p[i], name, (k + i) / L->n_nodes, LEAN_CONTENT_BYTES);
            items[i] = &p[i].req;
        }
        Ke__V1__PublishBatchRequest req = KE__V1__PUBLISH_BATCH_REQUEST__INIT;
        req.n_items = (size_t)cnt;
        req.items = items;
        b->L = L;
        b->n = cnt;
        ke_rpc_call_opts o = {.timeout_ms = LEAN_RPC_TIMEOUT_MS};
        rc = ke_rpc_unary_async(admin, LEAN_PUBLISH_BATCH_PATH, &req.base,
                                &ke__v1__publish_batch_reply__descriptor, &o, batch_on_reply, b);
        if (rc == 0)
            b = NULL; /* the reply frees it */
    }
    if (rc != 0)
        fprintf(stderr, "edge_sim_lean: cannot start a publish: %s\n", ke_strerror(rc));
    free(b);
    free(items);
    free(p);
    return rc;
}

static int phase_fanout(lean *L, ke_rpc_loop *loop)
{
    ke_rpc_channel *admin = NULL;
    long total = L->n_nodes * L->n_messages, issued = 0;
    long window = (long)L->batch * LEAN_BATCH_CALLS;
    int64_t *lat = NULL;
    int status = -1;
    if (bench_admin_channel(loop, L->target, L->cloud, &admin) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot open the admin channel\n");
        goto out;
    }
    int64_t t0 = bench_now_ns();
    long long cc_cpu0 = bench_cpu_ms(L->cc_pid), w_cpu0 = 0;
    for (int i = 0; i < L->workers; i++)
        w_cpu0 += bench_cpu_ms(L->wpid[i]);
    while (issued < total) {
        int cnt = (int)(total - issued < L->batch ? total - issued : L->batch);
        if (bench_waiter_wait(&L->w, &L->publish_finished, issued + cnt - window,
                              "Publish replies") != 0 ||
            pub_issue(L, admin, issued, cnt) != 0)
            goto out;
        issued += cnt;
    }
    if (lean_wait(L, &L->sh->fan_acked, total, "messages acked by the nodes") != 0 ||
        bench_waiter_wait(&L->w, &L->publish_finished, total, "Publish replies") != 0)
        goto out;
    double el = (double)(atomic_load(&L->sh->fan_done_ns) - t0) / 1e9;
    long long cc_cpu = bench_cpu_ms(L->cc_pid) - cc_cpu0, w_cpu = -w_cpu0;
    for (int i = 0; i < L->workers; i++)
        w_cpu += bench_cpu_ms(L->wpid[i]);
    printf("fan-out:  %ld*%ld messages in %.2f s (%.0f msg/s delivered; PublishBatch of %d, %d "
           "calls in flight; %ld duplicates); CPU per message: cloudcore %.1f us, simulator "
           "workers %.1f us\n",
           L->n_nodes, L->n_messages, el, (double)total / el, L->batch, LEAN_BATCH_CALLS,
           atomic_load(&L->sh->fan_dups), (double)cc_cpu * 1e3 / (double)total,
           (double)w_cpu * 1e3 / (double)total);
    if (!(lat = malloc((size_t)total * sizeof(*lat))))
        goto out;
    for (long k = 0; k < total; k++)
        lat[k] = atomic_load(&L->fan_lat[k]);
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

/* ---- restart ---- */

static int phase_restart(lean *L, const char *const *cc_flags)
{
    lean_shared *sh = L->sh;
    long att0 = atomic_load(&sh->attempts), fail0 = atomic_load(&sh->failed_attempts);
    long ref0 = atomic_load(&sh->refusals);
    /* the epoch first: every close from now on is the kill's */
    atomic_store(&sh->epoch, 2);
    workers_wake(L);
    int64_t t_kill = bench_now_ns();
    int st = 0;
    if (kill(L->cc_pid, SIGKILL) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot kill cloudcore: %s\n", strerror(errno));
        return -1;
    }
    if (bench_child_wait(L->cc_pid, LEAN_STOP_S, &st) != 0) {
        fprintf(stderr, "edge_sim_lean: cloudcore did not die of SIGKILL\n");
        return -1;
    }
    L->cc_pid = -1;
    char target[64];
    L->cc_pid = bench_cloudcore_start(L->cloudcore, L->cloud, cc_flags, LEAN_START_S, LEAN_STOP_S,
                                      target, sizeof(target));
    if (L->cc_pid < 0)
        return -1;
    int64_t t_ready = bench_now_ns();
    if (strcmp(target, L->target) != 0) {
        fprintf(stderr, "edge_sim_lean: cloudcore came back on %s, not %s\n", target, L->target);
        return -1;
    }
    if (lean_wait(L, &sh->acked[2], L->n_nodes, "HelloAcks after the restart") != 0 ||
        lean_wait(L, &sh->resynced[2], L->n_nodes, "ResyncDones after the restart") != 0)
        return -1;
    double ack_s = (double)(atomic_load(&sh->last_ack_ns[2]) - t_ready) / 1e9;
    double sync_s = (double)(atomic_load(&sh->last_resync_ns[2]) - t_ready) / 1e9;
    double kill_s = (double)(atomic_load(&sh->last_resync_ns[2]) - t_kill) / 1e9;
    printf("restart:  cloudcore SIGKILLed, ready again after %.2f s; all %ld nodes HelloAcked "
           "%.2f s and resynced %.2f s after ready (%.2f s after the kill)\n",
           (double)(t_ready - t_kill) / 1e9, L->n_nodes, ack_s, sync_s, kill_s);
    printf("storm:    %ld connection attempts (%ld ended before a HelloAck: server down or "
           "refused), %ld admission refusals with retry_after; TLS: %ld of %ld HelloAcks on a "
           "resumed session\n",
           atomic_load(&sh->attempts) - att0, atomic_load(&sh->failed_attempts) - fail0,
           atomic_load(&sh->refusals) - ref0, atomic_load(&sh->resumed[2]),
           atomic_load(&sh->acked[2]));
    int64_t *per = malloc((size_t)L->n_nodes * sizeof(*per));
    if (!per)
        return -1;
    unsigned most = 0;
    for (long i = 0; i < L->n_nodes; i++) {
        per[i] = atomic_load(&L->resynced_ns[i]) - t_kill;
        unsigned r = atomic_load(&L->refused[i]);
        most = r > most ? r : most;
    }
    bench_sort_i64(per, (size_t)L->n_nodes);
    printf("per node: kill -> its ResyncDone p50 %.2f s, p99 %.2f s, max %.2f s; most "
           "refusals of one node %u\n",
           (double)bench_pct_i64(per, (size_t)L->n_nodes, 50) / 1e9,
           (double)bench_pct_i64(per, (size_t)L->n_nodes, 99) / 1e9,
           (double)bench_pct_i64(per, (size_t)L->n_nodes, 100) / 1e9, most);
    free(per);
    return 0;
}

/* ---- main ---- */

static const char USAGE[] =
    "usage: ke-bench-edgesim-lean [--nodes N] [--messages M] [--batch B] [--workers W]\n"
    "                             [--dests D] [--restart]\n"
    "                             [--keep-tmp] [--cloudcore PATH] [--keadm PATH]\n"
    "  --nodes N        simulated edge nodes, 1..200000 (default 2000)\n"
    "  --messages M     fan-out: messages published per node, 0..1000 (default 10; 0: none)\n"
    "  --batch B        messages per Hub.PublishBatch, 4 calls in flight (default 256)\n"
    "  --workers W      simulator processes (default: the CPUs, or more when one's\n"
    "                   sockets would not fit under the open files limit)\n"
    "  --dests D        loopback destinations 127.0.0.1..127.0.0.D (default: one per\n"
    "                   10,000 nodes)\n"
    "  --restart        SIGKILL cloudcore, restart it and time the reconnect storm\n"
    "  --keep-tmp       leave the temporary directory (PKI, node certificates, db)\n"
    "  --cloudcore PATH cloudcore binary (default: the one built next to this program)\n"
    "  --keadm PATH     keadm binary (default: the one built next to this program)\n";

static int parse_args(lean *L, int argc, char **argv)
{
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, 'n'},     {"workers", required_argument, NULL, 'w'},
        {"dests", required_argument, NULL, 'd'},     {"restart", no_argument, NULL, 'x'},
        {"keep-tmp", no_argument, NULL, 'k'},        {"cloudcore", required_argument, NULL, 'c'},
        {"keadm", required_argument, NULL, 'a'},     {"help", no_argument, NULL, 'h'},
        {"messages", required_argument, NULL, 'm'},  {"batch", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0},
    };
    bench_sibling_path(L->cloudcore, sizeof(L->cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(L->keadm, sizeof(L->keadm), BENCH_REL_KEADM);
    L->n_nodes = LEAN_DEFAULT_NODES;
    L->n_messages = LEAN_DEFAULT_MESSAGES;
    L->batch = LEAN_DEFAULT_BATCH;
    L->workers = 0; /* after the open files limit is known */
    int c;
    char *end;
    long v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            L->n_nodes = strtol(optarg, &end, 10);
            if (*end || L->n_nodes < 1 || L->n_nodes > LEAN_MAX_NODES) {
                fprintf(stderr, "edge_sim_lean: --nodes must be 1..%d\n", LEAN_MAX_NODES);
                return 2;
            }
            break;
        case 'w':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > LEAN_MAX_WORKERS) {
                fprintf(stderr, "edge_sim_lean: --workers must be 1..%d\n", LEAN_MAX_WORKERS);
                return 2;
            }
            L->workers = (int)v;
            break;
        case 'd':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > LEAN_MAX_DESTS) {
                fprintf(stderr, "edge_sim_lean: --dests must be 1..%d\n", LEAN_MAX_DESTS);
                return 2;
            }
            L->dests = (int)v;
            break;
        case 'm':
            L->n_messages = strtol(optarg, &end, 10);
            if (*end || L->n_messages < 0 || L->n_messages > LEAN_MAX_MESSAGES) {
                fprintf(stderr, "edge_sim_lean: --messages must be 0..%d\n", LEAN_MAX_MESSAGES);
                return 2;
            }
            break;
        case 'b':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 4096) {
                fprintf(stderr, "edge_sim_lean: --batch must be 1..4096\n");
                return 2;
            }
            L->batch = (int)v;
            break;
        case 'x': L->restart = 1; break;
        case 'k': L->keep_tmp = 1; break;
        case 'c': snprintf(L->cloudcore, sizeof(L->cloudcore), "%s", optarg); break;
        case 'a': snprintf(L->keadm, sizeof(L->keadm), "%s", optarg); break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (optind < argc) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (!L->dests) {
        long d = (L->n_nodes + LEAN_NODES_PER_DEST - 1) / LEAN_NODES_PER_DEST;
        L->dests = (int)(d > LEAN_MAX_DESTS ? LEAN_MAX_DESTS : d);
    }
    return 0;
}

/* workers_plan: the CPUs, or more when one worker's share of sockets would
 * not fit under the open files limit (each process has its own). */
static int workers_plan(lean *L, rlim_t nofile)
{
    long per = (long)nofile - LEAN_WORKER_FD_RESERVE;
    long least = per > 0 ? (L->n_nodes + per - 1) / per : LEAN_MAX_WORKERS + 1;
    if (L->workers == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        L->workers = (int)(cpus < 1 ? 1 : cpus > LEAN_MAX_WORKERS ? LEAN_MAX_WORKERS : cpus);
        if (L->workers < least && least <= LEAN_MAX_WORKERS)
            L->workers = (int)least;
    }
    if (L->workers > L->n_nodes)
        L->workers = (int)L->n_nodes;
    if (L->workers < least) {
        fprintf(stderr, "edge_sim_lean: %ld nodes need at least %ld workers under an open files "
                        "limit of %llu\n",
                L->n_nodes, least, (unsigned long long)nofile);
        return -1;
    }
    return 0;
}

static int make_tmp(lean *L)
{
    if (bench_make_tmp(L->tmp, sizeof(L->tmp), "ke-edgesim-lean") != 0)
        return -1;
    snprintf(L->cloud, sizeof(L->cloud), "%s/cloud", L->tmp);
    snprintf(L->nodes_dir, sizeof(L->nodes_dir), "%s/nodes", L->tmp);
    if (mkdir(L->nodes_dir, 0700) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot create %s: %s\n", L->nodes_dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int shared_map(lean *L)
{
    size_t off_ns = (sizeof(lean_shared) + 63) & ~(size_t)63;
    size_t off_ref = off_ns + (size_t)L->n_nodes * sizeof(int64_t);
    size_t off_lat = (off_ref + (size_t)L->n_nodes * sizeof(unsigned) + 63) & ~(size_t)63;
    L->shm_len = off_lat + (size_t)L->n_nodes * (size_t)L->n_messages * sizeof(int64_t);
    void *p = mmap(NULL, L->shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "edge_sim_lean: mmap: %s\n", strerror(errno));
        return -1;
    }
    L->sh = p;
    L->resynced_ns = (_Atomic int64_t *)((char *)p + off_ns);
    L->refused = (atomic_uint *)((char *)p + off_ref);
    L->fan_lat = (_Atomic int64_t *)((char *)p + off_lat);
    return 0;
}

int main(int argc, char **argv)
{
    lean *L = &g_lean;
    int rc = parse_args(L, argc, argv);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    /* before OpenSSL allocates anything: count what it holds */
    if (CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free) != 1)
        fprintf(stderr, "edge_sim_lean: OpenSSL's allocations will not be counted\n");
    bench_main_init("edge_sim_lean", &L->w, LEAN_STALL_S);

    /* cloudcore: CloudHub alone, no keepalives expected from the nodes,
     * two grpc threads, listening on every address (the nodes dial
     * 127.0.0.1..D; traffic stays on loopback) */
    char listen_flag[64] = "--grpc.listen=0.0.0.0:0";
    const char *cc_flags[5] = {"--cloudhub.dead_peer=600s", "--grpc.threads=2",
                               "--edgecontroller.enable=false", listen_flag, NULL};
    int status = 1;
    ke_rpc_loop *loop = NULL;
    rlim_t nofile = 0;
    long need = L->n_nodes + LEAN_FD_RESERVE;
    for (int i = 0; i < LEAN_MAX_WORKERS; i++) {
        L->wpid[i] = -1;
        L->wake_w[i] = -1;
    }
    L->notify_r = -1;
    L->cc_pid = -1;
    if (shared_map(L) != 0 || raise_nofile(need, &nofile) != 0 || workers_plan(L, nofile) != 0 ||
        make_tmp(L) != 0 ||
        bench_keadm_init(L->keadm, L->cloud, LEAN_START_S, LEAN_STOP_S) != 0 ||
        (L->cc_pid = bench_cloudcore_start(L->cloudcore, L->cloud, cc_flags, LEAN_START_S,
                                           LEAN_STOP_S, L->target, sizeof(L->target))) < 0)
        goto out;
    if (L->restart && (long)nofile < L->n_nodes + L->n_nodes / LEAN_STORM_HEADROOM_DIV)
        printf("warning: cloudcore's open files limit %llu leaves little headroom above %ld "
               "nodes for the restart storm; grpc 1.51 stops listening after one EMFILE\n",
               (unsigned long long)nofile, L->n_nodes);
    const char *colon = strrchr(L->target, ':');
    atomic_store(&L->sh->port, colon ? atoi(colon + 1) : 0);
    if (workers_start(L) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot start the workers: %s\n", strerror(errno));
        goto out;
    }
    if (lean_wait(L, &L->sh->ready, L->workers, "workers ready") != 0)
        goto out;
    printf("edge simulation (lean): %ld nodes over %d worker processes, destinations "
           "127.0.0.1..127.0.0.%d; cloudcore pid %d on 0.0.0.0:%d (TLS, grpc.threads=2); %ld "
           "CPUs; open files limit %llu\n",
           L->n_nodes, L->workers, L->dests, (int)L->cc_pid, atomic_load(&L->sh->port),
           sysconf(_SC_NPROCESSORS_ONLN), (unsigned long long)nofile);
    fflush(stdout);
    if (ke_rpc_loop_new(LEAN_LOOP_THREADS, &loop) != 0) {
        fprintf(stderr, "edge_sim_lean: cannot start the rpc loop\n");
        goto out;
    }
    if (phase_join(L, loop) != 0)
        goto out;
    fflush(stdout);

    long cc0 = bench_rss_kib(L->cc_pid), cca0 = 0, ccf0 = 0, cca1 = 0, ccf1 = 0;
    long wr0, wa0, wf0, wfd0, wr1, wa1, wf1, wfd1, ssl0 = 0, h20 = 0, ssl1 = 0, h21 = 0;
    for (int i = 0; i < L->workers; i++) {
        ssl0 += atomic_load(&L->sh->ssl_bytes[i]);
        h20 += atomic_load(&L->sh->h2_bytes[i]);
    }
    bench_mem_split(L->cc_pid, &cca0, &ccf0);
    workers_mem(L, &wr0, &wa0, &wf0, &wfd0);
    long avail0 = meminfo("MemAvailable"), slab0 = meminfo("Slab");
    if (phase_connect(L) != 0)
        goto out;
    for (int i = 0; i < L->workers; i++) {
        ssl1 += atomic_load(&L->sh->ssl_bytes[i]);
        h21 += atomic_load(&L->sh->h2_bytes[i]);
    }
    long cc1 = bench_rss_kib(L->cc_pid);
    bench_mem_split(L->cc_pid, &cca1, &ccf1);
    workers_mem(L, &wr1, &wa1, &wf1, &wfd1);
    long avail1 = meminfo("MemAvailable"), slab1 = meminfo("Slab");
    double n = (double)L->n_nodes;
    printf("cloudhub RSS: idle %.1f MiB, with %ld nodes %.1f MiB, %.1f KiB per node; "
           "anonymous %.1f -> %.1f MiB (%.1f KiB per node), file-backed %.1f -> %.1f MiB\n",
           (double)cc0 / 1024, L->n_nodes, (double)cc1 / 1024, (double)(cc1 - cc0) / n,
           (double)cca0 / 1024, (double)cca1 / 1024, (double)(cca1 - cca0) / n,
           (double)ccf0 / 1024, (double)ccf1 / 1024);
    printf("simulator RSS (%d workers summed): %.1f -> %.1f MiB, %.1f KiB per node; anonymous "
           "%.1f KiB per node; parent (join's grpc) %.1f MiB\n",
           L->workers, (double)wr0 / 1024, (double)wr1 / 1024, (double)(wr1 - wr0) / n,
           (double)(wa1 - wa0) / n, (double)bench_rss_kib(getpid()) / 1024);
    printf("simulator heap per node: OpenSSL %.1f KiB (SSL object, keys, session), nghttp2 "
           "%.1f KiB asked (session, HPACK, stream map, a 16 KiB frame buffer mapped of which "
           "a page is touched)\n",
           (double)(ssl1 - ssl0) / 1024 / n, (double)(h21 - h20) / 1024 / n);
    printf("kernel and machine: slab %.1f -> %.1f MiB (%.1f KiB per node: both ends' sockets), "
           "MemAvailable %.1f GiB lower (%.1f KiB per node; the whole machine: noisy when "
           "anything else runs)\n",
           (double)slab0 / 1024, (double)slab1 / 1024, (double)(slab1 - slab0) / n,
           (double)(avail0 - avail1) / 1048576, (double)(avail0 - avail1) / n);
    printf("open fds: cloudcore %ld, simulator workers %ld (%ld sockets)\n",
           bench_open_fds(L->cc_pid), wfd1, atomic_load(&L->sh->open_fds));
    fflush(stdout);
    if (L->n_messages > 0 && phase_fanout(L, loop) != 0)
        goto out;
    fflush(stdout);
    if (L->restart) {
        snprintf(listen_flag, sizeof(listen_flag), "--grpc.listen=0.0.0.0:%d",
                 atomic_load(&L->sh->port));
        if (phase_restart(L, cc_flags) != 0)
            goto out;
    }
    status = 0;
out:
    fflush(stdout);
    if (L->notify_r >= 0 && workers_stop(L) != 0)
        status = 1;
    ke_rpc_loop_free(loop);
    if (bench_cloudcore_stop(L->cc_pid, LEAN_STOP_S) != 0)
        status = 1;
    bench_tmp_done(L->tmp, L->keep_tmp);
    if (L->notify_r >= 0)
        close(L->notify_r);
    if (L->sh)
        munmap(L->sh, L->shm_len);
    bench_waiter_destroy(&L->w);
    return status;
}
