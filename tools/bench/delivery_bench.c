/*
 * delivery_bench — measures end-to-end upstream delivery: reports written
 * into a real edgecore's outbox (EdgeLocal.Report, as Edged and DeviceTwin
 * do) until their effect is in the controllers' store (a pod's status),
 * through EdgeHub, CloudHub's durable upstream log and EdgeController's
 * durable consumer. Prints:
 *
 *   sustained  R reports (status counters of P pods) as fast as the edge
 *              takes them: the rate the edge accepted them, and the rate at
 *              which their effect reached the store (until every pod shows
 *              its last counter; the log coalesces by pod, so a slow
 *              consumer sees fewer writes, never a lost last value);
 *   latency    one report at a time, from Report to the store's Watch event
 *              carrying it: p50/p99/max over L reports;
 *   offline    cloudcore SIGKILLed, O reports queued in the outbox, cloudcore
 *              started again: the time from its start to every pod showing
 *              its last counter (the flush runs while the controllers are
 *              subscribing);
 *   RSS        cloudcore and edgecore at the end.
 *
 * With --idle S it measures only edgecore at rest instead: connected, its
 * store holding the P pods (use --pods 1000), RSS and the CPU it used over
 * S seconds with nothing happening.
 *
 * Real processes on loopback: keadm init/gettoken/join, cloudcore (mutual
 * TLS), edgecore. Not run by the tests; figures go in the README.
 *
 * Usage: ke-bench-delivery [--pods P] [--reports R] [--latency L]
 *            [--offline O] [--idle S] [--keep-tmp]
 */
#include "bench_util.h"
#include "edge.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_rpc.h"
#include "ke_time.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DB_START_S 30
#define DB_STOP_S 15
#define DB_WAIT_MS 120000
#define DB_PODS_MAX 10000

typedef struct bench {
    char dir[256], target[64], keadm[512], cloudcore[512], edgecore[512];
    pid_t cloud, edge;
    ke_rpc_loop *loop;
    ke_rpc_channel *admin, *local;
    int pods;
    /* the latency watch */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long long want;   /* status.n awaited on p-0 */
    int64_t seen_ms;  /* when it arrived */
} bench;

static void die(const char *what)
{
    fprintf(stderr, "delivery_bench: %s\n", what);
    exit(1);
}

static int apply(bench *b, const char *json)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    ke_rpc_stub ec = {b->admin, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    int rc = ke_rpc_stub_unary(&ec, "Apply", &req.base, &o, &reply, &st);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return rc == 0 ? st.code : -1;
}

/* pod_n reads status.n of pod p-i (-1: none yet). */
static long long pod_n(bench *b, int i)
{
    char name[32];
    snprintf(name, sizeof(name), "p-%d", i);
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Pod";
    ref.namespace_ = "default";
    ref.name = name;
    ke_rpc_stub ec = {b->admin, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    long long n = -1;
    if (ke_rpc_stub_unary(&ec, "Get", &ref.base, &o, &reply, &st) == 0 && st.code == KE_RPC_OK) {
        Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
        json_t *pod = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, NULL);
        json_t *v = json_object_get(json_object_get(pod, "status"), "n");
        if (json_is_integer(v))
            n = json_integer_value(v);
        json_decref(pod);
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return n;
}

/* wait_all waits until every pod shows status.n == n; returns the time it
 * took from t0 (ms), or -1. Polls the store at 20 ms. */
static double wait_all(bench *b, long long n, int64_t t0_ns)
{
    int64_t until = ke_time_mono_ms() + DB_WAIT_MS;
    for (int i = 0; i < b->pods;) {
        if (pod_n(b, i) == n) {
            i++;
            continue;
        }
        if (ke_time_mono_ms() > until)
            return -1;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return (double)(bench_now_ns() - t0_ns) / 1e6;
}

static int report(bench *b, int pod, long long n)
{
    char key[128], content[128];
    snprintf(key, sizeof(key), "node/edge-1/default/Pod/p-%d", pod);
    snprintf(content, sizeof(content), "{\"phase\":\"Running\",\"n\":%lld}", n);
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__ReportRequest req = KE__V1__REPORT_REQUEST__INIT;
    h.resource_version = (uint64_t)n + 1;
    r.source = "bench";
    r.group = "podstatus";
    r.operation = KE__V1__OPERATION__OPERATION_UPLOAD;
    r.resource = key;
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)content;
    m.content.len = strlen(content);
    req.message = &m;
    ke_rpc_stub local = {b->local, &ke__v1__edge_local__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = ke_rpc_stub_unary(&local, "Report", &req.base, &o, &reply, &st);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return rc == 0 ? st.code : -1;
}

static void watch_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    bench *b = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    json_t *pod = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, NULL);
    const char *name = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
    json_t *n = json_object_get(json_object_get(pod, "status"), "n");
    pthread_mutex_lock(&b->mu);
    if (name && strcmp(name, "p-0") == 0 && json_is_integer(n) &&
        json_integer_value(n) == b->want && !b->seen_ms) {
        b->seen_ms = ke_time_mono_ms();
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    json_decref(pod);
}

static pid_t start_cloud(bench *b, const char *listen)
{
    char flag[96];
    snprintf(flag, sizeof(flag), "--grpc.listen=%s", listen);
    const char *extra[] = {flag, NULL};
    pid_t pid = bench_cloudcore_start(b->cloudcore, b->dir, extra, DB_START_S, DB_STOP_S,
                                      b->target, sizeof(b->target));
    if (pid < 0)
        die("cloudcore did not start");
    return pid;
}

static long rss_mib10(pid_t pid)
{
    long kib = bench_rss_kib(pid);
    return kib < 0 ? -1 : kib * 10 / 1024;
}

static void setup(bench *b)
{
    char cmd[2048], token[512] = "", edgedir[300], config[400], server[96], line[256];
    if (bench_make_tmp(b->dir, sizeof(b->dir), "ke-bench-delivery") != 0)
        die("no temporary directory");
    if (bench_keadm_init(b->keadm, b->dir, DB_START_S, DB_STOP_S) != 0)
        die("keadm init failed");
    b->cloud = start_cloud(b, "127.0.0.1:0");
    if (ke_rpc_loop_new(2, &b->loop) != 0 ||
        bench_admin_channel(b->loop, b->target, b->dir, &b->admin) != 0)
        die("no admin channel");
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s", b->keadm, b->dir);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(token, sizeof(token), p))
        die("keadm gettoken failed");
    pclose(p);
    token[strcspn(token, "\n")] = '\0';
    snprintf(edgedir, sizeof(edgedir), "%s/edge", b->dir);
    snprintf(cmd, sizeof(cmd),
             "%s join --cloudhub %s --token %s --node-name edge-1 --dir %s >/dev/null",
             b->keadm, b->target, token, edgedir);
    if (system(cmd) != 0)
        die("keadm join failed");
    snprintf(config, sizeof(config), "%s/edgecore.yaml", edgedir);
    snprintf(server, sizeof(server), "--edgehub.server=%s", b->target);
    char *argv[] = {b->edgecore, "--config", config, server, "--http.listen=",
                    "--log_level=warn", "--edgehub.backoff_initial=50ms",
                    "--edgehub.backoff_max=500ms", NULL};
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe");
    b->edge = bench_spawn(argv, fds[1]);
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    if (b->edge < 0 || !out || !fgets(line, sizeof(line), out) || strncmp(line, "ready", 5) != 0)
        die("edgecore did not start");
    fclose(out);
    char target[400];
    snprintf(target, sizeof(target), "unix:%s/edgecore.sock", edgedir);
    if (ke_rpc_channel_new(b->loop, target, NULL, &b->local) != 0)
        die("no EdgeLocal channel");
    /* The Node object, then the pods bound to it. */
    char json[512];
    int64_t until = ke_time_mono_ms() + 30000;
    for (;;) {
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p-0\","
                 "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"edge-1\",\"containers\":"
                 "[{\"name\":\"c\",\"image\":\"busybox\"}]}}");
        if (apply(b, json) == KE_RPC_OK)
            break;
        if (ke_time_mono_ms() > until)
            die("the Node object never appeared");
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 1; i < b->pods; i++) {
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p-%d\","
                 "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"edge-1\",\"containers\":"
                 "[{\"name\":\"c\",\"image\":\"busybox\"}]}}",
                 i);
        if (apply(b, json) != KE_RPC_OK)
            die("apply failed");
    }
}

/* edge_objects returns how many objects edgecore's store holds (EdgeLocal.List), or -1. */
static long edge_objects(bench *b)
{
    Ke__V1__EdgeListRequest req = KE__V1__EDGE_LIST_REQUEST__INIT;
    req.prefix = "";
    ke_rpc_stub el = {b->local, &ke__v1__edge_local__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    long n = -1;
    if (ke_rpc_stub_unary(&el, "List", &req.base, &o, &reply, &st) == 0 && st.code == KE_RPC_OK)
        n = (long)((Ke__V1__EdgeListReply *)reply)->n_objects;
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return n;
}

/* idle_run: edgecore at rest with the pods in its store. */
static int idle_run(bench *b, int seconds, int keep, bench_waiter *w)
{
    int64_t until = ke_time_mono_ms() + DB_WAIT_MS;
    long n;
    while ((n = edge_objects(b)) < b->pods) {
        if (ke_time_mono_ms() > until)
            die("the pods never all reached the edge");
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Let the first keepalives and the node status settle, then measure. */
    struct timespec settle = {2, 0};
    nanosleep(&settle, NULL);
    long long cpu0 = bench_cpu_ms(b->edge);
    int64_t t0 = ke_time_mono_ms();
    struct timespec ts = {seconds, 0};
    nanosleep(&ts, NULL);
    long long cpu1 = bench_cpu_ms(b->edge);
    int64_t t1 = ke_time_mono_ms();
    long re10 = rss_mib10(b->edge);
    long rkib = bench_rss_kib(b->edge);
    if (cpu0 < 0 || cpu1 < 0 || rkib < 0)
        die("cannot read edgecore's /proc figures");
    printf("idle: edgecore connected with %ld objects in its store: RSS %ld.%ld MiB (%ld KiB); "
           "CPU %.3f%% of a core over %.0f s (%lld ms)\n",
           n, re10 / 10, re10 % 10, rkib, 100.0 * (double)(cpu1 - cpu0) / (double)(t1 - t0),
           (double)(t1 - t0) / 1e3, cpu1 - cpu0);
    ke_rpc_channel_free(b->local);
    ke_rpc_channel_free(b->admin);
    ke_rpc_loop_free(b->loop);
    int status;
    kill(b->edge, SIGTERM);
    bench_child_wait(b->edge, DB_STOP_S, &status);
    bench_cloudcore_stop(b->cloud, DB_STOP_S);
    bench_tmp_done(b->dir, keep);
    bench_waiter_destroy(w);
    return 0;
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof(b));
    bench_waiter w;
    bench_main_init("delivery_bench", &w, 60);
    int reports = 10000, latency = 200, offline = 5000, keep = 0, idle = 0;
    b.pods = 100;
    static const struct option opts[] = {{"pods", required_argument, NULL, 'p'},
                                         {"reports", required_argument, NULL, 'r'},
                                         {"latency", required_argument, NULL, 'l'},
                                         {"offline", required_argument, NULL, 'o'},
                                         {"idle", required_argument, NULL, 'i'},
                                         {"keep-tmp", no_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': b.pods = atoi(optarg); break;
        case 'r': reports = atoi(optarg); break;
        case 'l': latency = atoi(optarg); break;
        case 'o': offline = atoi(optarg); break;
        case 'i': idle = atoi(optarg); break;
        case 'k': keep = 1; break;
        default:
            fprintf(stderr, "usage: ke-bench-delivery [--pods P] [--reports R] [--latency L] "
                            "[--offline O] [--idle S] [--keep-tmp]\n");
            return 2;
        }
    }
    if (b.pods < 1 || b.pods > DB_PODS_MAX || reports < b.pods || latency < 1 ||
        offline < b.pods) {
        fprintf(stderr, "delivery_bench: need 1 <= pods <= %d, reports and offline >= pods, "
                        "latency >= 1\n",
                DB_PODS_MAX);
        return 2;
    }
    bench_sibling_path(b.keadm, sizeof(b.keadm), BENCH_REL_KEADM);
    bench_sibling_path(b.cloudcore, sizeof(b.cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(b.edgecore, sizeof(b.edgecore), "../../edge-agent/edgecore");
    pthread_mutex_init(&b.mu, NULL);
    ke_time_cond_init(&b.cv);
    setup(&b);
    if (idle > 0)
        return idle_run(&b, idle, keep, &w);

    /* sustained */
    long long rounds = reports / b.pods, n = 0;
    int64_t t0 = bench_now_ns();
    for (long long k = 1; k <= rounds; k++)
        for (int i = 0; i < b.pods; i++)
            if (report(&b, i, k) != KE_RPC_OK)
                die("report refused");
    n = rounds;
    double submit_ms = (double)(bench_now_ns() - t0) / 1e6;
    double done_ms = wait_all(&b, n, t0);
    if (done_ms < 0)
        die("sustained reports never all reached the store");
    long total = (long)(rounds * b.pods);
    printf("sustained: %ld reports (%d pods): edge accepted %.0f/s; in the store after %.0f ms "
           "(%.0f reports/s end to end)\n",
           total, b.pods, total / (submit_ms / 1e3), done_ms, total / (done_ms / 1e3));

    /* latency */
    static const ke_rpc_handler h = {.on_message = watch_on_message};
    Ke__V1__WatchRequest wr = KE__V1__WATCH_REQUEST__INIT;
    wr.kind = "Pod";
    wr.namespace_ = "default";
    ke_rpc_stub ec = {b.admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_call *watch = NULL;
    if (ke_rpc_stub_start(&ec, "Watch", &h, &b, NULL, &watch) != 0 ||
        ke_rpc_call_send(watch, &wr.base) != 0 || ke_rpc_call_close_send(watch) != 0)
        die("no watch");
    int64_t *lat = calloc((size_t)latency, sizeof(int64_t));
    if (!lat)
        die("out of memory");
    for (int i = 0; i < latency; i++) {
        pthread_mutex_lock(&b.mu);
        b.want = ++n;
        b.seen_ms = 0;
        pthread_mutex_unlock(&b.mu);
        int64_t start = ke_time_mono_ms();
        if (report(&b, 0, n) != KE_RPC_OK)
            die("report refused");
        pthread_mutex_lock(&b.mu);
        struct timespec until = ke_time_deadline(DB_WAIT_MS);
        while (!b.seen_ms && pthread_cond_timedwait(&b.cv, &b.mu, &until) == 0)
            ;
        int64_t seen = b.seen_ms;
        pthread_mutex_unlock(&b.mu);
        if (!seen)
            die("a report never reached the watch");
        lat[i] = seen - start;
    }
    ke_rpc_call_cancel(watch);
    ke_rpc_call_unref(watch);
    bench_sort_i64(lat, (size_t)latency);
    printf("latency: report -> store watch event, %d one at a time: p50 %lld ms, p99 %lld ms, "
           "max %lld ms\n",
           latency, (long long)bench_pct_i64(lat, (size_t)latency, 50),
           (long long)bench_pct_i64(lat, (size_t)latency, 99), (long long)lat[latency - 1]);
    free(lat);

    /* offline flush */
    kill(b.cloud, SIGKILL);
    int status;
    bench_child_wait(b.cloud, DB_STOP_S, &status);
    long long base = n;
    rounds = offline / b.pods;
    for (long long k = 1; k <= rounds; k++)
        for (int i = 0; i < b.pods; i++)
            if (report(&b, i, base + k) != KE_RPC_OK)
                die("report refused while the cloud is down");
    n = base + rounds;
    char listen[64];
    snprintf(listen, sizeof(listen), "%s", b.target);
    t0 = bench_now_ns();
    b.cloud = start_cloud(&b, listen);
    done_ms = wait_all(&b, n, t0);
    if (done_ms < 0)
        die("the offline reports never all reached the store");
    printf("offline: %lld reports queued while cloudcore was down: all in the store %.0f ms "
           "after it started (%.0f reports/s)\n",
           rounds * b.pods, done_ms, (double)(rounds * b.pods) / (done_ms / 1e3));
    long rc10 = rss_mib10(b.cloud), re10 = rss_mib10(b.edge);
    printf("RSS: cloudcore %ld.%ld MiB, edgecore %ld.%ld MiB\n", rc10 / 10, rc10 % 10, re10 / 10,
           re10 % 10);

    ke_rpc_channel_free(b.local);
    ke_rpc_channel_free(b.admin);
    ke_rpc_loop_free(b.loop);
    kill(b.edge, SIGTERM);
    bench_child_wait(b.edge, DB_STOP_S, &status);
    bench_cloudcore_stop(b.cloud, DB_STOP_S);
    bench_tmp_done(b.dir, keep);
    bench_waiter_destroy(&w);
    return 0;
}
