/*
 * rpc_bench — measures libke rpc against a real cloudcore process on
 * loopback, and prints the figures:
 *
 *   unary round trips/s, one call at a time (latency p50/p99) and with
 *     64 calls in flight;
 *   streaming messages/s with 100-byte messages: server → client (Ticks)
 *     and both ways (Echo, 256 frames in flight);
 *   cloudcore's RSS idle, with 1 and with 1,000 open bidirectional streams.
 *
 * Usage: ke-bench-rpc [--cloudcore PATH] [--seconds N] [--streams N]
 * (PATH defaults to the cloudcore built next to this program.)
 * No test runs this; figures go in the README's benchmarks section.
 */
#include "bench_util.h"
#include "diag.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_rpc.h"

#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PING "/ke.v1.Diagnostics/Ping"
#define ECHO "/ke.v1.Diagnostics/Echo"
#define TICKS "/ke.v1.Diagnostics/Ticks"
#define MSG_BYTES 100
#define RPC_START_S 20 /* cloudcore's "ready" line */

/* start_cloudcore runs cloudcore on a free port; returns its pid and port. */
static pid_t start_cloudcore(const char *path, int *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        execl(path, path, "--grpc.listen=127.0.0.1:0", "--http.listen=127.0.0.1:0",
              "--kubeapi.listen=127.0.0.1:0",
              "--log_level=error", "--cloudhub.enable=false", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    int rc = bench_read_ready(fds[0], RPC_START_S, port);
    close(fds[0]);
    if (rc != 0) {
        fprintf(stderr, "cloudcore did not start (%s)\n", path);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* ---------------------------------------------------------------- unary */

static void bench_unary_sequential(ke_rpc_channel *ch, double seconds)
{
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    size_t cap = 1 << 20, n = 0;
    double *lat = malloc(cap * sizeof(double));
    double start = bench_now_s(), end = start + seconds;
    for (double t = start; t < end && n < cap; t = bench_now_s()) {
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        if (ke_rpc_unary(ch, PING, &req.base, &ke__v1__ping_reply__descriptor, NULL, &reply,
                         &st) != 0 ||
            st.code != KE_RPC_OK) {
            fprintf(stderr, "ping failed: %s\n", st.message);
            break;
        }
        protobuf_c_message_free_unpacked(reply, NULL);
        lat[n++] = (bench_now_s() - t) * 1e6;
    }
    double el = bench_now_s() - start;
    bench_sort_double(lat, n);
    printf("unary, 1 in flight:        %9.0f round trips/s   p50 %.0f us  p99 %.0f us\n",
           (double)n / el, bench_pct_double(lat, n, 50), bench_pct_double(lat, n, 99));
    free(lat);
}

typedef struct pipeline {
    ke_rpc_channel *ch;
    atomic_long done;
    atomic_int inflight;
    atomic_int stop;
    atomic_int errors;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pipeline;

static void pipeline_issue(pipeline *p);

static void pipeline_cb(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    (void)reply;
    pipeline *p = ud;
    if (st->code != KE_RPC_OK)
        atomic_fetch_add(&p->errors, 1);
    atomic_fetch_add(&p->done, 1);
    if (!atomic_load(&p->stop)) {
        pipeline_issue(p);
    } else if (atomic_fetch_sub(&p->inflight, 1) == 1) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void pipeline_issue(pipeline *p)
{
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    ke_rpc_unary_async(p->ch, PING, &req.base, &ke__v1__ping_reply__descriptor, NULL,
                       pipeline_cb, p);
}

static void bench_unary_pipelined(ke_rpc_channel *ch, double seconds, int depth)
{
    pipeline p = {.ch = ch};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    atomic_store(&p.inflight, depth);
    double start = bench_now_s();
    for (int i = 0; i < depth; i++)
        pipeline_issue(&p);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL); /* the measuring window */
    long done = atomic_load(&p.done);
    double el = bench_now_s() - start;
    atomic_store(&p.stop, 1);
    pthread_mutex_lock(&p.mu);
    while (atomic_load(&p.inflight) > 0)
        pthread_cond_wait(&p.cv, &p.mu);
    pthread_mutex_unlock(&p.mu);
    printf("unary, %d in flight:       %9.0f round trips/s   (%d errors)\n", depth,
           (double)done / el, atomic_load(&p.errors));
}

/* ------------------------------------------------------------ streaming */

typedef struct counter {
    atomic_long received;
    atomic_int closed;
    int code;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long wait_for;
} counter;

static void counter_msg(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    (void)m;
    counter *c = ud;
    long r = atomic_fetch_add(&c->received, 1) + 1;
    if (c->wait_for && r >= c->wait_for) {
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
}

static void counter_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    counter *c = ud;
    pthread_mutex_lock(&c->mu);
    c->code = st->code;
    atomic_fetch_add(&c->closed, 1);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static const ke_rpc_handler counter_h = {.on_message = counter_msg, .on_close = counter_close};

static void counter_init(counter *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void bench_ticks(ke_rpc_channel *ch, long count)
{
    counter c;
    counter_init(&c);
    ke_rpc_call *call = NULL;
    double start = bench_now_s();
    ke_rpc_call_start(ch, TICKS, &ke__v1__echo_frame__descriptor, &counter_h, &c, NULL, &call);
    Ke__V1__TicksRequest req = KE__V1__TICKS_REQUEST__INIT;
    req.count = (uint32_t)count;
    req.payload_size = MSG_BYTES;
    ke_rpc_call_send(call, &req.base);
    ke_rpc_call_close_send(call);
    pthread_mutex_lock(&c.mu);
    while (!atomic_load(&c.closed))
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    double el = bench_now_s() - start;
    printf("stream server->client:     %9.0f messages/s      (%ld x %d-byte frames, %s)\n",
           (double)atomic_load(&c.received) / el, atomic_load(&c.received), MSG_BYTES,
           ke_rpc_status_name(c.code));
    ke_rpc_call_unref(call);
}

/* Echo with a window: send until `window` frames are unanswered. */
typedef struct echo_win {
    counter c;
    ke_rpc_call *call;
    long total, sent;
    int window;
    pthread_mutex_t smu;
} echo_win;

static void echo_send_more(echo_win *e)
{
    static uint8_t payload[MSG_BYTES];
    Ke__V1__EchoFrame f = KE__V1__ECHO_FRAME__INIT;
    f.payload.data = payload;
    f.payload.len = MSG_BYTES;
    pthread_mutex_lock(&e->smu);
    while (e->sent < e->total && e->sent - atomic_load(&e->c.received) < e->window) {
        f.seq = (uint64_t)e->sent + 1;
        if (ke_rpc_call_send(e->call, &f.base) != 0)
            break;
        e->sent++;
    }
    if (e->sent == e->total) {
        ke_rpc_call_close_send(e->call);
        e->sent++; /* close only once */
    }
    pthread_mutex_unlock(&e->smu);
}

static void echo_msg(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    echo_win *e = ud;
    counter_msg(call, m, &e->c);
    echo_send_more(e);
}

static void echo_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    counter_close(call, st, &((echo_win *)ud)->c);
}

static void bench_echo(ke_rpc_channel *ch, long total)
{
    echo_win e;
    memset(&e, 0, sizeof(e));
    counter_init(&e.c);
    pthread_mutex_init(&e.smu, NULL);
    e.total = total;
    e.window = 256;
    ke_rpc_handler h = {.on_message = echo_msg, .on_close = echo_close};
    double start = bench_now_s();
    ke_rpc_call_start(ch, ECHO, &ke__v1__echo_frame__descriptor, &h, &e, NULL, &e.call);
    echo_send_more(&e);
    pthread_mutex_lock(&e.c.mu);
    while (!atomic_load(&e.c.closed))
        pthread_cond_wait(&e.c.cv, &e.c.mu);
    pthread_mutex_unlock(&e.c.mu);
    double el = bench_now_s() - start;
    printf("stream echo (both ways):   %9.0f messages/s each way (%ld frames, window %d, %s)\n",
           (double)atomic_load(&e.c.received) / el, atomic_load(&e.c.received), e.window,
           ke_rpc_status_name(e.c.code));
    ke_rpc_call_unref(e.call);
}

/* open_streams opens n Echo streams and waits until each has echoed one
 * frame, so each is live on the server. */
static ke_rpc_call **open_streams(ke_rpc_channel *ch, counter *c, int n)
{
    ke_rpc_call **calls = calloc((size_t)n, sizeof(*calls));
    Ke__V1__EchoFrame f = KE__V1__ECHO_FRAME__INIT;
    c->wait_for = n;
    for (int i = 0; i < n; i++) {
        ke_rpc_call_start(ch, ECHO, &ke__v1__echo_frame__descriptor, &counter_h, c, NULL,
                          &calls[i]);
        ke_rpc_call_send(calls[i], &f.base);
    }
    pthread_mutex_lock(&c->mu);
    while (atomic_load(&c->received) < n && !atomic_load(&c->closed))
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return calls;
}

static void close_streams(ke_rpc_call **calls, counter *c, int n)
{
    for (int i = 0; i < n; i++)
        ke_rpc_call_close_send(calls[i]);
    pthread_mutex_lock(&c->mu);
    while (atomic_load(&c->closed) < n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++)
        ke_rpc_call_unref(calls[i]);
    free(calls);
}

static void bench_rss(ke_rpc_channel *ch, pid_t pid, int streams)
{
    long idle = bench_rss_kib(pid);
    counter c1, cn;
    counter_init(&c1);
    counter_init(&cn);
    ke_rpc_call **one = open_streams(ch, &c1, 1);
    long with1 = bench_rss_kib(pid);
    close_streams(one, &c1, 1);
    ke_rpc_call **many = open_streams(ch, &cn, streams);
    long withn = bench_rss_kib(pid);
    printf("cloudcore RSS:             idle %ld KiB, 1 stream %ld KiB, %d streams %ld KiB "
           "(%.1f KiB per stream)\n",
           idle, with1, streams, withn, (double)(withn - idle) / streams);
    close_streams(many, &cn, streams);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cloudcore", required_argument, NULL, 'c'},
        {"seconds", required_argument, NULL, 's'},
        {"streams", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char def[PATH_MAX + 64];
    bench_set_name("rpc_bench");
    bench_sibling_path(def, sizeof(def), BENCH_REL_CLOUDCORE);
    const char *cloudcore = def;
    double seconds = 3;
    int streams = 1000, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cloudcore = optarg; break;
        case 's': seconds = atof(optarg); break;
        case 'n': streams = atoi(optarg); break;
        default:
            printf("usage: ke-bench-rpc [--cloudcore PATH] [--seconds N] [--streams N]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    ke_log_set_level(KE_LOG_ERROR);
    int port = 0;
    pid_t pid = start_cloudcore(cloudcore, &port);
    if (pid < 0)
        return 1;
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    ke_rpc_loop *loop = NULL;
    ke_rpc_channel *ch = NULL;
    ke_rpc_loop_new(2, &loop);
    ke_rpc_channel_new(loop, target, NULL, &ch);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("rpc benchmark: cloudcore pid %d on %s, plaintext, %ld CPUs, client and server on "
           "the same host\n",
           (int)pid, target, cpus);
    bench_unary_sequential(ch, seconds);
    bench_unary_pipelined(ch, seconds, 64);
    bench_ticks(ch, 1000000);
    bench_echo(ch, 1000000);
    bench_rss(ch, pid, streams);

    ke_rpc_channel_free(ch);
    ke_rpc_loop_free(loop);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
