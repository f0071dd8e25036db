/*
 * controlplane_bench — measures the cloud control plane (the resource
 * store and EdgeController's user API) with N Node objects and P pods,
 * and prints the figures:
 *
 *   store     in-process, no server: ke_store on a fresh SQLite file;
 *             creates/s of N Nodes then P Pods, updates/s of P Pods (a
 *             label change), and the time of a list of every pod, a
 *             label-selector list and a field-selector list;
 *   apply     through a real cloudcore (keadm init PKI, mutual TLS, the
 *             "system:admin" certificate): EdgeController.Apply of N Nodes,
 *             then of P Pods bound round-robin to them, 64 calls in flight.
 *             Every bound pod is also sent to its node: EdgeController's
 *             store watch publishes it to CloudHub (Hub.Publish, in-process)
 *             which stores it for the node (none is connected). That
 *             publishing runs behind the Apply replies; a sentinel update
 *             seen through a Watch tells when it has caught up;
 *   watch     W EdgeController.Watch streams (kind Pod, from the current
 *             resource version) on the same channel, then K pod updates
 *             (a label change, U in flight); for every one of the W*K
 *             deliveries, the time from the Apply being issued to the event
 *             arriving (matched by the resourceVersion of the Apply reply):
 *             p50/p99/max, events/s delivered, and the CPU time cloudcore
 *             and this program used meanwhile (they share the machine);
 *   RSS       cloudcore's VmRSS idle, with the nodes and pods loaded, with
 *             the W watches open and after the updates.
 *
 * Threads: the main thread drives the phases; every rpc callback runs on
 * one ke_rpc_loop (BENCH_LOOP_THREADS threads). Callbacks only record and
 * count, and wake the main thread through b->w; the main thread never
 * sleeps to wait: it waits on counters with a stall timeout.
 *
 * Usage: ke-bench-controlplane [--nodes N] [--pods P] [--watchers W]
 *            [--updates K] [--update-window U] [--keep-tmp]
 *            [--cloudcore PATH] [--keadm PATH]
 * (the programs default to the ones built next to this one). Not run by
 * the tests; figures go in the README's benchmarks section.
 */
#include "bench_util.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_rpc.h"
#include "ke_store.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- bounds and knobs, all in one place ---- */
#define BENCH_DEFAULT_NODES 1000
#define BENCH_DEFAULT_PODS 10000
#define BENCH_DEFAULT_WATCHERS 100
#define BENCH_DEFAULT_UPDATES 1000
#define BENCH_DEFAULT_UPDATE_WINDOW 1
#define BENCH_MAX_NODES 99999       /* node-00001 .. node-99999 */
#define BENCH_MAX_PODS 999999       /* pod-000001 .. pod-999999 */
#define BENCH_MAX_WATCHERS 4000     /* below KE_STORE_WATCH_MAX with cloudcore's own */
#define BENCH_MAX_UPDATES 100000
#define BENCH_MAX_UPDATE_WINDOW 64
#define BENCH_MAX_DELIVERIES 10000000L /* watchers * updates: 16 bytes of timing each */
#define BENCH_APPLY_WINDOW 64       /* Apply calls in flight while loading */
#define BENCH_LOOP_THREADS 2        /* the rpc loop of this process */
#define BENCH_STALL_S 300           /* a wait fails when its counter stands still this long */
#define BENCH_START_S 60            /* keadm init and cloudcore's "ready" line */
#define BENCH_STOP_S 60             /* cloudcore's exit after SIGTERM */
#define BENCH_RPC_TIMEOUT_MS (BENCH_STALL_S * 1000LL) /* deadline of each unary call */
#define BENCH_WATCH_SLACK 8         /* events a watch may record beyond what is expected */
#define BENCH_OBJ_MAX 2048          /* one object's JSON text */
#define BENCH_DIR_MAX 512           /* the temporary directory, TMPDIR included */
#define BENCH_SUBDIR_MAX (BENCH_DIR_MAX + 16)
#define BENCH_PATH_MAX (BENCH_SUBDIR_MAX + 64)
#define BENCH_PROG_MAX (PATH_MAX + 64)

#define BENCH_APPLY_PATH "/ke.v1.EdgeController/Apply"
/* A field selector that matches no pod: a List with it returns only the
 * store revision. */
#define BENCH_NO_POD "metadata.name=ke-bench-no-such-pod"
/* The label selector and field selector timed in the store phase. */
#define BENCH_LABEL_SEL "app=app-007"
#define BENCH_FIELD_SEL "spec.nodeName=node-00007"

typedef struct bench bench;

/* apply_op: one Apply call. The reply callback fills rv (when want_rv) and
 * done_ns before counting the reply. */
typedef struct apply_op {
    bench *b;
    int want_rv;
    int64_t issue_ns;
    uint64_t rv;
    int64_t done_ns;
} apply_op;

/* watcher: one Watch stream. rv/at are written by its own callbacks only
 * (never concurrently for one call) and read by the main thread once the
 * event counter says they are complete. */
typedef struct watcher {
    bench *b;
    ke_rpc_call *call; /* our reference, or NULL */
    uint64_t *rv;
    int64_t *at_ns;
    size_t n, cap;
    atomic_long overflow; /* events beyond cap, not recorded */
} watcher;

struct bench {
    /* options */
    long n_nodes, n_pods, n_watchers, n_updates, update_window;
    int keep_tmp;
    char cloudcore[BENCH_PROG_MAX], keadm[BENCH_PROG_MAX];
    /* setup */
    char tmp[BENCH_DIR_MAX], cloud[BENCH_SUBDIR_MAX];
    char target[64];
    pid_t cc_pid;
    ke_rpc_loop *loop;
    ke_rpc_channel *admin;
    /* wake-ups and the first error, for the main thread */
    bench_waiter w;
    atomic_int stopping; /* watch closes are ours from now on */
    /* counters (cumulative over the run) */
    long issued;            /* Apply calls started (main thread) */
    atomic_long replied;    /* Apply calls finished, ok or not */
    atomic_llong last_reply_ns;
    atomic_long events;     /* watch events received, all watches */
    atomic_long events_goal; /* wake the main thread when events reaches this */
    atomic_llong last_event_ns;
    atomic_long closed;     /* watches ended */
    long opened;            /* watches started (main thread) */
    apply_op bulk;          /* shared by the loading calls (no rv wanted) */
};

static double secs(int64_t ns)
{
    return (double)ns / 1e9;
}

/* ---- the objects ---- */

/* node_json writes Node i (0-based) as named node-00001..., an edge node. */
static int node_json(char *buf, size_t len, long i)
{
    return snprintf(buf, len,
                    "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":"
                    "\"node-%05ld\",\"labels\":{\"node-role.kubernetes.io/edge\":\"\","
                    "\"kubernetes.io/hostname\":\"node-%05ld\"}}}",
                    i + 1, i + 1);
}

/* pod_json writes Pod i (0-based), bound round-robin to the n_nodes nodes:
 * a small real-looking pod (labels, one container with image, env, ports
 * and resources). `round`, when not NULL, is the value of a label
 * "bench-round": changing it is the update. */
static int pod_json(char *buf, size_t len, long i, long n_nodes, const char *round)
{
    char extra[64] = "";
    if (round)
        snprintf(extra, sizeof(extra), ",\"bench-round\":\"%s\"", round);
    return snprintf(
        buf, len,
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"pod-%06ld\","
        "\"namespace\":\"default\",\"labels\":{\"app\":\"app-%03ld\",\"tier\":\"edge\"%s}},"
        "\"spec\":{\"nodeName\":\"node-%05ld\",\"restartPolicy\":\"Always\",\"containers\":[{"
        "\"name\":\"app\",\"image\":\"registry.example.com/edge/app-%03ld:1.4.2\",\"env\":[{"
        "\"name\":\"LOG_LEVEL\",\"value\":\"info\"},{\"name\":\"POD_INDEX\",\"value\":\"%ld\"}],"
        "\"ports\":[{\"containerPort\":8080,\"protocol\":\"TCP\"}],\"resources\":{\"requests\":{"
        "\"cpu\":\"100m\",\"memory\":\"64Mi\"},\"limits\":{\"cpu\":\"500m\",\"memory\":"
        "\"128Mi\"}}}]}}",
        i + 1, i % 100, extra, i % n_nodes + 1, i % 100, i + 1);
}

/* ---- phase 1: the store, in-process ---- */

typedef enum { OBJ_NODE, OBJ_POD, OBJ_POD_UPDATED } obj_set;

/* parse_objects builds n json_t objects of one set (before timing). */
static json_t **parse_objects(const bench *b, obj_set set, long n)
{
    json_t **o = calloc((size_t)n, sizeof(*o));
    char buf[BENCH_OBJ_MAX];
    for (long i = 0; o && i < n; i++) {
        if (set == OBJ_NODE)
            node_json(buf, sizeof(buf), i);
        else
            pod_json(buf, sizeof(buf), i, b->n_nodes, set == OBJ_POD_UPDATED ? "u1" : NULL);
        json_error_t je;
        if (!(o[i] = json_loads(buf, 0, &je))) {
            fprintf(stderr, "controlplane_bench: bad object JSON: %s\n", je.text);
            for (long j = 0; j < i; j++)
                json_decref(o[j]);
            free(o);
            return NULL;
        }
    }
    return o;
}

static void free_objects(json_t **o, long n)
{
    for (long i = 0; o && i < n; i++)
        json_decref(o[i]);
    free(o);
}

/* store_writes times n creates (or updates) of a set; prints the rate. */
static int store_writes(bench *b, ke_store *s, obj_set set, long n, const char *what)
{
    json_t **o = parse_objects(b, set, n);
    if (!o)
        return -1;
    int rc = 0;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n && rc == 0; i++)
        rc = set == OBJ_POD_UPDATED ? ke_store_update(s, o[i], NULL)
                                    : ke_store_create(s, o[i], NULL);
    int64_t el = bench_now_ns() - t0;
    free_objects(o, n);
    if (rc != 0) {
        fprintf(stderr, "controlplane_bench: store %s failed: %s\n", what, ke_strerror(rc));
        return -1;
    }
    printf("  %-26s %7ld in %6.2f s  %8.0f /s  (%.0f us each)\n", what, n, secs(el),
           (double)n / secs(el), secs(el) * 1e6 / (double)n);
    return 0;
}

/* store_list times one ke_store_list of pods; prints the time and count. */
static int store_list(ke_store *s, const char *label_sel, const char *field_sel,
                      const char *what)
{
    json_t *items = NULL;
    int64_t t0 = bench_now_ns();
    int rc = ke_store_list(s, "Pod", "", label_sel, field_sel, &items, NULL);
    int64_t el = bench_now_ns() - t0;
    if (rc != 0) {
        fprintf(stderr, "controlplane_bench: store list %s failed: %s\n", what, ke_strerror(rc));
        return -1;
    }
    printf("  %-29s %7zu pods in %8.1f ms\n", what, json_array_size(items), (double)el / 1e6);
    json_decref(items);
    return 0;
}

static long file_kib(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)(st.st_size / 1024) : 0;
}

static int phase_store(bench *b)
{
    char path[BENCH_PATH_MAX], wal[BENCH_PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/store-bench.db", b->tmp);
    snprintf(wal, sizeof(wal), "%s-wal", path);
    ke_store *s = NULL;
    int rc = ke_store_open(path, &s);
    if (rc != 0) {
        fprintf(stderr, "controlplane_bench: cannot open a store at %s: %s\n", path,
                ke_strerror(rc));
        return -1;
    }
    printf("store, in-process (ke_store on a new SQLite file, WAL, synchronous=NORMAL, one "
           "transaction per write, history %d events):\n",
           KE_STORE_HISTORY_DEFAULT);
    char sel[64];
    snprintf(sel, sizeof(sel), "list %s", BENCH_LABEL_SEL);
    char fsel[64];
    snprintf(fsel, sizeof(fsel), "list %s", BENCH_FIELD_SEL);
    rc = -1;
    if (store_writes(b, s, OBJ_NODE, b->n_nodes, "create Node") != 0 ||
        store_writes(b, s, OBJ_POD, b->n_pods, "create Pod") != 0 ||
        store_writes(b, s, OBJ_POD_UPDATED, b->n_pods, "update Pod (label)") != 0 ||
        store_list(s, NULL, NULL, "list all pods") != 0 ||
        store_list(s, BENCH_LABEL_SEL, NULL, sel) != 0 ||
        store_list(s, NULL, BENCH_FIELD_SEL, fsel) != 0)
        goto out;
    printf("  file: %ld KiB + WAL %ld KiB\n", file_kib(path), file_kib(wal));
    rc = 0;
out:
    ke_store_close(s);
    return rc;
}

/* ---- processes: keadm and cloudcore ---- */

/* cloudcore_stop stops cloudcore (bench_cloudcore_stop), clears
 * b->cc_pid and says how long it took. Returns 0 when it exited with
 * status 0. */
static int cloudcore_stop(bench *b)
{
    if (b->cc_pid <= 0)
        return 0;
    int64_t t0 = bench_now_ns();
    int rc = bench_cloudcore_stop(b->cc_pid, BENCH_STOP_S);
    b->cc_pid = 0;
    if (rc == 0)
        printf("cloudcore: exited 0, %.0f ms after SIGTERM\n", (double)(bench_now_ns() - t0) / 1e6);
    return rc;
}

/* cpu_s returns the user+system CPU time of pid (0: this process) in
 * seconds, from /proc/PID/stat, or -1. */
static double cpu_s(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), pid ? "/proc/%d/stat" : "/proc/self/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *ok = fgets(line, sizeof(line), f);
    fclose(f);
    char *p = ok ? strrchr(line, ')') : NULL; /* comm may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- Apply, many in flight ---- */

static uint64_t reply_rv(const ProtobufCMessage *reply)
{
    const Ke__V1__ObjectReply *r = (const Ke__V1__ObjectReply *)reply;
    json_error_t je;
    json_t *obj = r ? json_loadb((const char *)r->object_json.data, r->object_json.len, 0, &je)
                    : NULL;
    const char *rv =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
    uint64_t v = rv ? strtoull(rv, NULL, 10) : 0;
    json_decref(obj);
    return v;
}

static void apply_on_reply(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    apply_op *op = ud;
    bench *b = op->b;
    int64_t t = bench_now_ns();
    if (st->code != KE_RPC_OK) {
        bench_waiter_fail(&b->w, "Apply: %s: %s", ke_rpc_status_name(st->code), st->message);
    } else if (op->want_rv) {
        op->rv = reply_rv(reply);
        op->done_ns = t;
        if (op->rv == 0)
            bench_waiter_fail(&b->w, "Apply: the reply has no metadata.resourceVersion");
    }
    atomic_store(&b->last_reply_ns, t);
    atomic_fetch_add(&b->replied, 1);
    bench_waiter_signal(&b->w);
}

/* apply_issue starts one Apply of `json` with op as its record. */
static int apply_issue(bench *b, const char *json, int len, apply_op *op)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = (size_t)len;
    ke_rpc_call_opts o = {.timeout_ms = BENCH_RPC_TIMEOUT_MS};
    op->issue_ns = bench_now_ns();
    int rc = ke_rpc_unary_async(b->admin, BENCH_APPLY_PATH, &req.base,
                                &ke__v1__object_reply__descriptor, &o, apply_on_reply, op);
    if (rc != 0) {
        fprintf(stderr, "controlplane_bench: cannot start an Apply: %s\n", ke_strerror(rc));
        return rc;
    }
    b->issued++;
    return 0;
}

/* apply_one applies one object and waits for the reply; returns its
 * resourceVersion in *rv, or -1. */
static int apply_one(bench *b, const char *json, int len, uint64_t *rv)
{
    apply_op op = {.b = b, .want_rv = 1};
    if (apply_issue(b, json, len, &op) != 0 ||
        bench_waiter_wait(&b->w, &b->replied, b->issued, "the Apply reply") != 0)
        return -1;
    *rv = op.rv;
    return 0;
}

/* apply_load applies n Nodes or Pods, BENCH_APPLY_WINDOW in flight, and
 * prints the rate. Sets *t_first to the first issue. */
static int apply_load(bench *b, obj_set set, long n, const char *what, int64_t *t_first)
{
    char buf[BENCH_OBJ_MAX];
    int64_t t0 = bench_now_ns();
    long base = b->issued;
    *t_first = t0;
    for (long i = 0; i < n; i++) {
        int len = set == OBJ_NODE ? node_json(buf, sizeof(buf), i)
                                  : pod_json(buf, sizeof(buf), i, b->n_nodes, NULL);
        if (bench_waiter_wait(&b->w, &b->replied, b->issued - BENCH_APPLY_WINDOW + 1,
                              "Apply replies") != 0 ||
            apply_issue(b, buf, len, &b->bulk) != 0)
            return -1;
    }
    if (bench_waiter_wait(&b->w, &b->replied, base + n, "Apply replies") != 0)
        return -1;
    double el = secs(atomic_load(&b->last_reply_ns) - t0);
    printf("  %-26s %7ld in %6.2f s  %8.0f /s  (%d in flight)\n", what, n, el, (double)n / el,
           BENCH_APPLY_WINDOW);
    return 0;
}

/* store_revision asks EdgeController for the store revision: a List of
 * pods matching nothing. */
static int store_revision(bench *b, uint64_t *rev)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = "Pod";
    req.field_selector = BENCH_NO_POD;
    ke_rpc_stub stub = {b->admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = BENCH_RPC_TIMEOUT_MS};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = ke_rpc_stub_unary(&stub, "List", &req.base, &o, &reply, &st);
    if (rc != 0 || st.code != KE_RPC_OK) {
        fprintf(stderr, "controlplane_bench: List failed: %s: %s\n",
                rc ? ke_strerror(rc) : ke_rpc_status_name(st.code), rc ? "" : st.message);
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        return -1;
    }
    *rev = ((Ke__V1__ListReply *)reply)->resource_version;
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

/* ---- watches ---- */

static void watch_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    watcher *w = ud;
    bench *b = w->b;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)msg;
    int64_t t = bench_now_ns();
    if (w->n < w->cap) {
        w->rv[w->n] = ev->resource_version;
        w->at_ns[w->n] = t;
        w->n++;
    } else {
        atomic_fetch_add(&w->overflow, 1);
    }
    atomic_store(&b->last_event_ns, t);
    long got = atomic_fetch_add(&b->events, 1) + 1;
    if (got >= atomic_load(&b->events_goal))
        bench_waiter_signal(&b->w);
}

static void watch_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    watcher *w = ud;
    bench *b = w->b;
    if (!atomic_load(&b->stopping))
        bench_waiter_fail(&b->w, "a Watch ended: %s: %s", ke_rpc_status_name(st->code),
                          st->message);
    atomic_fetch_add(&b->closed, 1);
    bench_waiter_signal(&b->w);
}

static const ke_rpc_handler watch_handler = {.on_message = watch_on_message,
                                             .on_close = watch_on_close};

/* watch_open opens w's Watch of pods after revision from_rv, recording up
 * to cap events. */
static int watch_open(bench *b, watcher *w, uint64_t from_rv, size_t cap)
{
    w->b = b;
    w->cap = cap;
    w->rv = calloc(cap, sizeof(*w->rv));
    w->at_ns = calloc(cap, sizeof(*w->at_ns));
    if (!w->rv || !w->at_ns) {
        fprintf(stderr, "controlplane_bench: out of memory\n");
        return KE_ENOMEM;
    }
    ke_rpc_stub stub = {b->admin, &ke__v1__edge_controller__descriptor};
    int rc = ke_rpc_stub_start(&stub, "Watch", &watch_handler, w, NULL, &w->call);
    if (rc != 0) {
        fprintf(stderr, "controlplane_bench: cannot open a Watch: %s\n", ke_strerror(rc));
        return rc;
    }
    b->opened++;
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "Pod";
    req.resource_version = from_rv;
    if (ke_rpc_call_send(w->call, &req.base) != 0 || ke_rpc_call_close_send(w->call) != 0)
        ke_rpc_call_cancel(w->call); /* on_close reports it */
    return 0;
}

/* watches_close cancels the watches and waits for every close. */
static int watches_close(bench *b, watcher *w, long n)
{
    atomic_store(&b->stopping, 1);
    for (long i = 0; i < n; i++)
        if (w[i].call)
            ke_rpc_call_cancel(w[i].call);
    long failed = atomic_exchange(&b->w.failed, 0); /* only the closes count now */
    int rc = bench_waiter_wait(&b->w, &b->closed, b->opened, "Watch streams closed");
    for (long i = 0; i < n; i++) {
        ke_rpc_call_unref(w[i].call);
        w[i].call = NULL;
        free(w[i].rv);
        free(w[i].at_ns);
        w[i].rv = NULL;
        w[i].at_ns = NULL;
    }
    atomic_fetch_add(&b->w.failed, failed);
    atomic_store(&b->stopping, 0);
    return rc;
}

/* wait_events waits until the watches have received `goal` events in all. */
static int wait_events(bench *b, long goal, const char *what)
{
    atomic_store(&b->events_goal, goal);
    return bench_waiter_wait(&b->w, &b->events, goal, what);
}

/* ---- phase 2: loading through cloudcore ---- */

static int phase_load(bench *b)
{
    int64_t t_nodes = 0, t_pods = 0;
    uint64_t rev = 0, srv = 0;
    printf("through cloudcore (EdgeController.Apply, mutual TLS as system:admin, one "
           "channel):\n");
    /* A first call outside the timing: the TLS connection is set up here. */
    if (store_revision(b, &rev) != 0 ||
        apply_load(b, OBJ_NODE, b->n_nodes, "apply Node", &t_nodes) != 0 ||
        apply_load(b, OBJ_POD, b->n_pods, "apply Pod (bound)", &t_pods) != 0)
        return -1;
    int64_t t_last = atomic_load(&b->last_reply_ns);
    fflush(stdout);

    /* Sentinel: a watch from now, one more pod write; the store delivers
     * it once the dispatcher, which also runs EdgeController's pod watch
     * (one Hub.Publish per pod), is within one batch of it. */
    watcher probe = {0};
    char buf[BENCH_OBJ_MAX];
    long base = atomic_load(&b->events);
    int rc = -1;
    if (store_revision(b, &rev) != 0 || watch_open(b, &probe, rev, BENCH_WATCH_SLACK) != 0)
        goto out;
    int len = pod_json(buf, sizeof(buf), 0, b->n_nodes, "sentinel");
    if (apply_one(b, buf, len, &srv) != 0 || wait_events(b, base + 1, "the sentinel event") != 0)
        goto out;
    int64_t t_seen = probe.n ? probe.at_ns[0] : bench_now_ns();
    printf("  pods published to CloudHub (store watch -> Hub.Publish, stored for the "
           "unconnected nodes): caught up %.2f s after the last Apply reply, %.0f pods/s "
           "from the first pod Apply\n",
           secs(t_seen - t_last), (double)b->n_pods / secs(t_seen - t_pods));
    rc = 0;
out:
    if (watches_close(b, &probe, 1) != 0)
        rc = -1;
    return rc;
}

/* ---- phase 3: watch fan-out ---- */

typedef struct rv_issue {
    uint64_t rv;
    int64_t issue_ns;
} rv_issue;

static int cmp_rv(const void *a, const void *b)
{
    uint64_t x = ((const rv_issue *)a)->rv, y = ((const rv_issue *)b)->rv;
    return x < y ? -1 : x > y;
}

/* report_latency matches every recorded event after the warm-up (revision
 * wrv) to the update that made it and prints p50/p99/max and the delivery
 * rate. */
static int report_latency(bench *b, watcher *w, const apply_op *ops, uint64_t wrv, int64_t t0)
{
    long k = b->n_updates, total = b->n_watchers * k, n = 0, other = 0, missing = 0;
    long overflow = 0;
    rv_issue *map = calloc((size_t)k, sizeof(*map));
    int64_t *lat = calloc((size_t)total, sizeof(*lat));
    if (!map || !lat) {
        free(map);
        free(lat);
        fprintf(stderr, "controlplane_bench: out of memory\n");
        return -1;
    }
    for (long j = 0; j < k; j++)
        map[j] = (rv_issue){ops[j].rv, ops[j].issue_ns};
    qsort(map, (size_t)k, sizeof(*map), cmp_rv);
    for (long i = 0; i < b->n_watchers; i++) {
        long matched = 0;
        for (size_t e = 0; e < w[i].n; e++) {
            rv_issue key = {w[i].rv[e], 0};
            if (key.rv <= wrv)
                continue;
            rv_issue *hit = bsearch(&key, map, (size_t)k, sizeof(*map), cmp_rv);
            if (!hit) {
                other++;
                continue;
            }
            if (n < total)
                lat[n++] = w[i].at_ns[e] - hit->issue_ns;
            matched++;
        }
        missing += matched < k ? k - matched : 0;
        overflow += atomic_load(&w[i].overflow);
    }
    bench_sort_i64(lat, (size_t)n);
    double el = secs(atomic_load(&b->last_event_ns) - t0);
    printf("  %-26s %7ld in %6.2f s  %8.0f events/s delivered  (%ld updates x %ld watches)\n",
           "watch deliveries", n, el, (double)n / el, k, b->n_watchers);
    if (n > 0)
        printf("  latency Apply issued -> event received: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               (double)bench_pct_i64(lat, (size_t)n, 50) / 1e6,
               (double)bench_pct_i64(lat, (size_t)n, 99) / 1e6,
               (double)bench_pct_i64(lat, (size_t)n, 100) / 1e6);
    if (other || missing || overflow)
        printf("  NOTE: %ld events not from the updates, %ld expected events missing, %ld beyond "
               "the recording bound\n",
               other, missing, overflow);
    free(map);
    free(lat);
    return missing ? -1 : 0;
}

static int phase_watch(bench *b, long rss_loaded)
{
    long nw = b->n_watchers, k = b->n_updates;
    watcher *w = calloc((size_t)nw, sizeof(*w));
    apply_op *ops = calloc((size_t)k, sizeof(*ops));
    char buf[BENCH_OBJ_MAX], round[32];
    uint64_t rev = 0, wrv = 0;
    int rc = -1;
    if (!w || !ops) {
        fprintf(stderr, "controlplane_bench: out of memory\n");
        goto out;
    }
    if (store_revision(b, &rev) != 0)
        goto out;
    long base = atomic_load(&b->events);
    int64_t t_open = bench_now_ns();
    for (long i = 0; i < nw; i++)
        if (watch_open(b, &w[i], rev, (size_t)k + 1 + BENCH_WATCH_SLACK) != 0)
            goto out;
    /* Warm-up: one update every watch must see, so that all are live. */
    int len = pod_json(buf, sizeof(buf), 0, b->n_nodes, "warmup");
    if (apply_one(b, buf, len, &wrv) != 0 ||
        wait_events(b, base + nw, "the warm-up event on every watch") != 0)
        goto out;
    long rss_w = bench_rss_kib(b->cc_pid);
    printf("  %ld watches open and live (warm-up event on each) in %.2f s; cloudcore RSS %.1f "
           "MiB (+%.1f KiB per watch)\n",
           nw, secs(bench_now_ns() - t_open), (double)rss_w / 1024,
           (double)(rss_w - rss_loaded) / (double)nw);
    fflush(stdout);

    base = atomic_load(&b->events);
    long ibase = b->issued;
    double cc_cpu0 = cpu_s(b->cc_pid), my_cpu0 = cpu_s(0);
    int64_t t0 = bench_now_ns();
    for (long j = 0; j < k; j++) {
        snprintf(round, sizeof(round), "u%ld", j + 1);
        len = pod_json(buf, sizeof(buf), j % b->n_pods, b->n_nodes, round);
        ops[j] = (apply_op){.b = b, .want_rv = 1};
        if (bench_waiter_wait(&b->w, &b->replied, b->issued - b->update_window + 1,
                              "update replies") != 0 ||
            apply_issue(b, buf, len, &ops[j]) != 0)
            goto out;
    }
    if (bench_waiter_wait(&b->w, &b->replied, ibase + k, "update replies") != 0 ||
        wait_events(b, base + nw * k, "watch events of the updates") != 0)
        goto out;
    int64_t t_applied = atomic_load(&b->last_reply_ns);
    printf("  %-26s %7ld in %6.2f s  %8.0f /s  (%ld in flight, each seen by %ld watches)\n",
           "apply Pod update (label)", k, secs(t_applied - t0), (double)k / secs(t_applied - t0),
           b->update_window, nw);
    rc = report_latency(b, w, ops, wrv, t0);
    printf("  CPU during the updates and deliveries: cloudcore %.2f s, this program %.2f s "
           "(%.2f s elapsed)\n",
           cpu_s(b->cc_pid) - cc_cpu0, cpu_s(0) - my_cpu0,
           secs(atomic_load(&b->last_event_ns) - t0));
    printf("cloudcore RSS after the updates, %ld watches open: %.1f MiB\n", nw,
           (double)bench_rss_kib(b->cc_pid) / 1024);
out:
    if (w && watches_close(b, w, nw) != 0)
        rc = -1;
    free(w);
    free(ops);
    return rc;
}

/* ---- main ---- */

static const char USAGE[] =
    "usage: ke-bench-controlplane [--nodes N] [--pods P] [--watchers W] [--updates K]\n"
    "                             [--update-window U] [--keep-tmp]\n"
    "                             [--cloudcore PATH] [--keadm PATH]\n"
    "  --nodes N         Node objects, 1..99999 (default 1000)\n"
    "  --pods P          Pod objects bound round-robin to the nodes, 1..999999 (default 10000)\n"
    "  --watchers W      EdgeController.Watch streams, 1..4000 (default 100)\n"
    "  --updates K       pod updates timed through the watches, 1..100000 (default 1000)\n"
    "  --update-window U updates in flight, 1..64 (default 1)\n"
    "  --keep-tmp        leave the temporary directory (PKI, databases)\n"
    "  --cloudcore PATH  cloudcore binary (default: the one built next to this program)\n"
    "  --keadm PATH      keadm binary (default: the one built next to this program)\n";

/* parse_long reads a flag's value within [lo, hi]; returns 0 or -1. */
static int parse_long(const char *flag, const char *arg, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "controlplane_bench: --%s must be %ld..%ld\n", flag, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(bench *b, int argc, char **argv)
{
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, 'n'},
        {"pods", required_argument, NULL, 'p'},
        {"watchers", required_argument, NULL, 'w'},
        {"updates", required_argument, NULL, 'u'},
        {"update-window", required_argument, NULL, 'W'},
        {"keep-tmp", no_argument, NULL, 'k'},
        {"cloudcore", required_argument, NULL, 'c'},
        {"keadm", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bench_sibling_path(b->cloudcore, sizeof(b->cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(b->keadm, sizeof(b->keadm), BENCH_REL_KEADM);
    b->n_nodes = BENCH_DEFAULT_NODES;
    b->n_pods = BENCH_DEFAULT_PODS;
    b->n_watchers = BENCH_DEFAULT_WATCHERS;
    b->n_updates = BENCH_DEFAULT_UPDATES;
    b->update_window = BENCH_DEFAULT_UPDATE_WINDOW;
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': bad = parse_long("nodes", optarg, 1, BENCH_MAX_NODES, &b->n_nodes); break;
        case 'p': bad = parse_long("pods", optarg, 1, BENCH_MAX_PODS, &b->n_pods); break;
        case 'w':
            bad = parse_long("watchers", optarg, 1, BENCH_MAX_WATCHERS, &b->n_watchers);
            break;
        case 'u':
            bad = parse_long("updates", optarg, 1, BENCH_MAX_UPDATES, &b->n_updates);
            break;
        case 'W':
            bad = parse_long("update-window", optarg, 1, BENCH_MAX_UPDATE_WINDOW,
                             &b->update_window);
            break;
        case 'k': b->keep_tmp = 1; break;
        case 'c': snprintf(b->cloudcore, sizeof(b->cloudcore), "%s", optarg); break;
        case 'a': snprintf(b->keadm, sizeof(b->keadm), "%s", optarg); break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (bad)
        return 2;
    if (optind < argc) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (b->n_watchers * b->n_updates > BENCH_MAX_DELIVERIES) {
        fprintf(stderr, "controlplane_bench: --watchers * --updates must be at most %ld\n",
                BENCH_MAX_DELIVERIES);
        return 2;
    }
    return 0;
}

/* make_tmp creates TMP; TMP/cloud is made by keadm. */
static int make_tmp(bench *b)
{
    if (bench_make_tmp(b->tmp, sizeof(b->tmp), "ke-cpbench") != 0)
        return -1;
    snprintf(b->cloud, sizeof(b->cloud), "%s/cloud", b->tmp);
    return 0;
}

/* open_admin starts the rpc loop and the admin channel (TMP/cloud PKI). */
static int open_admin(bench *b)
{
    int rc = ke_rpc_loop_new(BENCH_LOOP_THREADS, &b->loop);
    if (rc == 0)
        rc = bench_admin_channel(b->loop, b->target, b->cloud, &b->admin);
    if (rc != 0)
        fprintf(stderr, "controlplane_bench: cannot open the admin channel: %s\n",
                ke_strerror(rc));
    return rc;
}

int main(int argc, char **argv)
{
    static bench bench_ctx;
    bench *b = &bench_ctx;
    int rc = parse_args(b, argc, argv);
    if (rc != 0)
        return rc == 1 ? 0 : 2;

    bench_main_init("controlplane_bench", &b->w, BENCH_STALL_S); /* before any thread exists */
    b->bulk.b = b;

    int status = 1;
    printf("control plane: %ld nodes, %ld pods, %ld watches, %ld updates (%ld in flight); "
           "%ld CPUs\n",
           b->n_nodes, b->n_pods, b->n_watchers, b->n_updates, b->update_window,
           sysconf(_SC_NPROCESSORS_ONLN));
    if (make_tmp(b) != 0 || phase_store(b) != 0)
        goto out;
    fflush(stdout);
    /* Every watch is the administrator's, on one connection: above
     * cloudcore's default caps on both when there are many. */
    char cap[64], conc[64];
    snprintf(cap, sizeof(cap), "--grpc.max_streams_per_identity=%ld", b->n_watchers + 64);
    snprintf(conc, sizeof(conc), "--grpc.max_concurrent_streams=%ld", b->n_watchers + 64);
    const char *const extra[] = {cap, conc, NULL};
    if (bench_keadm_init(b->keadm, b->cloud, BENCH_START_S, BENCH_STOP_S) != 0 ||
        (b->cc_pid = bench_cloudcore_start(b->cloudcore, b->cloud, extra, BENCH_START_S,
                                           BENCH_STOP_S, b->target, sizeof(b->target))) < 0)
        goto out;
    long idle = bench_rss_kib(b->cc_pid);
    printf("cloudcore pid %d on %s (TLS, --log_level=warn); RSS idle %.1f MiB\n", (int)b->cc_pid,
           b->target, (double)idle / 1024);
    fflush(stdout);
    if (open_admin(b) != 0 || phase_load(b) != 0)
        goto out;
    long loaded = bench_rss_kib(b->cc_pid);
    printf("cloudcore RSS with %ld nodes and %ld pods: %.1f MiB (+%.1f MiB over idle)\n",
           b->n_nodes, b->n_pods, (double)loaded / 1024, (double)(loaded - idle) / 1024);
    printf("watch fan-out (EdgeController.Watch, kind Pod, all on the admin channel):\n");
    fflush(stdout);
    if (phase_watch(b, loaded) != 0)
        goto out;
    status = 0;
out:
    fflush(stdout);
    ke_rpc_channel_free(b->admin);
    ke_rpc_loop_free(b->loop);
    if (cloudcore_stop(b) != 0)
        status = 1;
    bench_tmp_done(b->tmp, b->keep_tmp);
    bench_waiter_destroy(&b->w);
    return status;
}
