/*
 * test_chaos.c — the suite's chaos test: the whole reliability model
 * (DESIGN.md §4) at once, end to end, with real processes.
 *
 * Three joined nodes, each edgecore behind its own TCP proxy. A driver,
 * steered by a seeded PRNG (the seed is printed; KE_CHAOS_SEED replays
 * the same plan), makes 1,000 downstream changes through
 * EdgeController.Apply/Delete, as a user would, over 100 keys: 60 pods
 * (9 stable ones, only ever updated, and 51 that are created, updated,
 * deleted and re-created, moving between nodes), 20 ConfigMaps and 20
 * Secrets the pods reference (env valueFrom, secret volumes); and 1,000
 * upstream reports (the 9 stable pods' statuses, a counter that only
 * grows) through EdgeLocal, as Edged would. Meanwhile:
 *   - each proxy cuts its links every 100 messages (changes + reports),
 *     the three staggered;
 *   - the cloud is SIGKILLed at random points and started again at once:
 *     cloudcore at least twice, or, split, cloudhub at least twice and
 *     edgecontroller at least twice; one edgecore is SIGKILLed once;
 *   - a graceful pod delete completes only when the edge confirms it
 *     (EdgeLocal podstatus DELETE, at the version of the marked pod the
 *     edge holds, standing in for Edged), and a pod is re-created (on any
 *     node) only once its delete is complete.
 * At the end, with deadlines:
 *   - no pod is left marked for deletion;
 *   - every stable pod's status in the store holds its last report;
 *   - every node's store (EdgeLocal.List) holds exactly what the store
 *     says it should (the pods bound to it and the ConfigMaps/Secrets they
 *     reference that exist), each object's content at the store's current
 *     resourceVersion, and its outbox is empty;
 *   - a Watch on pods held from the start (resumed at its last revision
 *     after each restart) saw every pod's resourceVersion and every stable
 *     pod's status counter only grow, and saw the last reports;
 *   - each edge's audit table shows no key applied at an older version
 *     after a newer one.
 * The driver is one thread: every change, report, confirmation, cut and
 * kill happens in the order of the plan; waits are on observable state
 * with deadlines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_proxy.h"
#include "ke_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NNODES 3
#define NSTABLE 9     /* pods st-0..st-8: updated, never deleted; their status is reported */
#define NPODS 60      /* keys 0..59: the stable pods, then w-09..w-59 */
#define NCM 20        /* keys 60..79: cm-00..cm-19 */
#define NSEC 20       /* keys 80..99: sec-00..sec-19 */
#define NKEYS (NPODS + NCM + NSEC)
#define NCHANGES 1000
#define NREPORTS 1000
#define CUT_EVERY 100 /* messages between two cuts of one proxy */
#define RECREATE_AFTER 40 /* changes between a pod's delete and its re-creation */
#define WAIT_MS 60000

enum { K_POD, K_CM, K_SEC };
enum { S_ABSENT, S_LIVE, S_DELETING };

typedef struct key_state {
    int kind, state;
    char name[16];
    int node;     /* pods: 0..NNODES-1 */
    int cm, sec;  /* pods: referenced ConfigMap / Secret index, -1 none */
    int del_at;   /* pods: the change that marked it for deletion */
    unsigned gen; /* grows with every update */
} key_state;

typedef struct watch_rec {
    pthread_mutex_t mu;
    uint64_t last_rev;        /* resume point */
    uint64_t last_rv[NPODS];  /* per pod, the last resourceVersion seen */
    long long last_n[NSTABLE];
    int events, backwards_rv, backwards_n, closed, gone;
} watch_rec;

typedef struct chaos {
    int split;
    ke_cluster c;
    ke_edge e[NNODES];
    ke_proxy *p[NNODES];
    uint64_t rng;
    key_state k[NKEYS];
    long long reported[NSTABLE];
    long msgs;
    int cut_calls, cuts, cloud_kills, hub_kills, ctl_kills, edge_kills;
    int creates, updates, deletes, recreates, changes, reports, confirms;
    watch_rec w;
    ke_rpc_call *watch;
    int started;
} chaos;

static chaos X;

static const char *const cloud_flags[] = {"--cloudhub.keepalive=1s", "--cloudhub.dead_peer=4s",
                                          NULL};
static const char *const edge_flags[] = {"--edgehub.keepalive=1s", "--edgehub.dead_peer=3s",
                                         NULL};

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the plan's randomness: xorshift64*, seeded ---- */

static uint32_t rnd(uint32_t n)
{
    X.rng ^= X.rng >> 12;
    X.rng ^= X.rng << 25;
    X.rng ^= X.rng >> 27;
    return (uint32_t)((X.rng * 2685821657736338717ULL) >> 33) % n;
}

static uint64_t chaos_seed(void)
{
    const char *s = getenv("KE_CHAOS_SEED");
    if (s && *s)
        return strtoull(s, NULL, 10);
    return (uint64_t)ke_time_wall_ms() ^ ((uint64_t)getpid() << 32);
}

static const char *node_name(int n)
{
    static const char *const names[NNODES] = {"edge-1", "edge-2", "edge-3"};
    return names[n];
}

/* ---- the controllers' API, retried while a restarted process is back ---- */

/* api_unary calls an EdgeController method; UNAVAILABLE (the process or
 * the channel coming back after a kill) is retried up to a deadline.
 * Returns the final status code; *reply as ke_rpc_stub_unary's. */
static int api_unary(const char *method, const ProtobufCMessage *req, ProtobufCMessage **reply,
                     int *attempts)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    ke_rpc_status st;
    for (*attempts = 1;; (*attempts)++) {
        ke_rpc_stub ec = {X.c.api, &ke__v1__edge_controller__descriptor};
        ke_rpc_call_opts o = {.timeout_ms = 10000};
        *reply = NULL;
        assert_int_equal(ke_rpc_stub_unary(&ec, method, req, &o, reply, &st), 0);
        if ((st.code != KE_RPC_UNAVAILABLE && st.code != KE_RPC_DEADLINE_EXCEEDED) ||
            ke_time_mono_ms() > until)
            break;
        if (*reply)
            protobuf_c_message_free_unpacked(*reply, NULL);
        pause_ms(20);
    }
    if (st.code != KE_RPC_OK && st.code != KE_RPC_NOT_FOUND)
        fprintf(stderr, "chaos: %s: %s: %s\n", method, ke_rpc_status_name(st.code), st.message);
    return st.code;
}

static void apply(const char *json)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    ProtobufCMessage *reply;
    int attempts;
    int code = api_unary("Apply", &req.base, &reply, &attempts);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (code != KE_RPC_OK)
        fail_msg("Apply failed (%s): %s", ke_rpc_status_name(code), json);
}

static void del(const char *kind, const char *name)
{
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = "default";
    ref.name = (char *)name;
    req.ref = &ref;
    ProtobufCMessage *reply;
    int attempts;
    int code = api_unary("Delete", &req.base, &reply, &attempts);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    /* NOT_FOUND after a retry: the first attempt did it */
    if (code != KE_RPC_OK && !(code == KE_RPC_NOT_FOUND && attempts > 1))
        fail_msg("Delete %s %s failed: %s", kind, name, ke_rpc_status_name(code));
}

/* get returns the stored object (json_decref it), or NULL when not found. */
static json_t *get(const char *kind, const char *name)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = !strcmp(kind, "Node") ? "" : "default";
    ref.name = (char *)name;
    ProtobufCMessage *reply;
    int attempts;
    int code = api_unary("Get", &ref.base, &reply, &attempts);
    json_t *obj = NULL;
    if (code == KE_RPC_OK) {
        Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
        obj = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, NULL);
    } else if (code != KE_RPC_NOT_FOUND) {
        fail_msg("Get %s %s failed: %s", kind, name, ke_rpc_status_name(code));
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return obj;
}

/* list returns every object of kind in namespace default (all pages), as
 * a JSON object name -> object. */
static json_t *list(const char *kind)
{
    json_t *all = json_object();
    char token[512] = "";
    do {
        Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
        req.kind = (char *)kind;
        req.namespace_ = "default";
        req.continue_token = token;
        ProtobufCMessage *reply;
        int attempts;
        int code = api_unary("List", &req.base, &reply, &attempts);
        if (code != KE_RPC_OK)
            fail_msg("List %s failed: %s", kind, ke_rpc_status_name(code));
        Ke__V1__ListReply *r = (Ke__V1__ListReply *)reply;
        for (size_t i = 0; i < r->n_items_json; i++) {
            json_t *o = json_loadb((const char *)r->items_json[i].data, r->items_json[i].len, 0,
                                   NULL);
            assert_non_null(o);
            const char *name = json_string_value(
                json_object_get(json_object_get(o, "metadata"), "name"));
            assert_non_null(name);
            json_object_set_new(all, name, o);
        }
        snprintf(token, sizeof(token), "%s", r->continue_token ? r->continue_token : "");
        protobuf_c_message_free_unpacked(reply, NULL);
    } while (token[0]);
    return all;
}

static const char *obj_rv(const json_t *o)
{
    const char *s =
        json_string_value(json_object_get(json_object_get(o, "metadata"), "resourceVersion"));
    return s ? s : "";
}

/* ---- the objects ---- */

static void b64(char *out, const char *in)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static void apply_key(const key_state *k)
{
    char json[1024], vol[128] = "", env[160] = "";
    switch (k->kind) {
    case K_POD:
        if (k->sec >= 0)
            snprintf(vol, sizeof(vol), "{\"name\":\"s\",\"secret\":{\"secretName\":\"sec-%02d\"}}",
                     k->sec);
        if (k->cm >= 0)
            snprintf(env, sizeof(env),
                     ",{\"name\":\"K\",\"valueFrom\":{\"configMapKeyRef\":{\"name\":\"cm-%02d\","
                     "\"key\":\"v\"}}}",
                     k->cm);
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
                 "\"namespace\":\"default\",\"labels\":{\"gen\":\"g%u\"}},\"spec\":{\"nodeName\":"
                 "\"%s\",\"volumes\":[%s],\"containers\":[{\"name\":\"c\",\"image\":\"busybox\","
                 "\"env\":[{\"name\":\"V\",\"value\":\"%u\"}%s]}]}}",
                 k->name, k->gen, node_name(k->node), vol, k->gen, env);
        break;
    case K_CM:
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"%s\","
                 "\"namespace\":\"default\"},\"data\":{\"v\":\"%u\"}}",
                 k->name, k->gen);
        break;
    default: {
        char plain[32], enc[64];
        snprintf(plain, sizeof(plain), "secret-%u", k->gen);
        b64(enc, plain);
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"%s\","
                 "\"namespace\":\"default\"},\"data\":{\"v\":\"%s\"}}",
                 k->name, enc);
        break;
    }
    }
    apply(json);
}

static const char *kind_name(int kind)
{
    return kind == K_POD ? "Pod" : kind == K_CM ? "ConfigMap" : "Secret";
}

static void keys_init(void)
{
    for (int i = 0; i < NKEYS; i++) {
        key_state *k = &X.k[i];
        k->state = S_ABSENT;
        k->cm = k->sec = -1;
        if (i < NSTABLE) {
            k->kind = K_POD;
            snprintf(k->name, sizeof(k->name), "st-%d", i);
        } else if (i < NPODS) {
            k->kind = K_POD;
            snprintf(k->name, sizeof(k->name), "w-%02d", i);
        } else if (i < NPODS + NCM) {
            k->kind = K_CM;
            snprintf(k->name, sizeof(k->name), "cm-%02d", i - NPODS);
        } else {
            k->kind = K_SEC;
            snprintf(k->name, sizeof(k->name), "sec-%02d", i - NPODS - NCM);
        }
    }
}

static int key_index(const char *kind, const char *name)
{
    int n;
    if (!strcmp(kind, "Pod") && sscanf(name, "st-%d", &n) == 1 && n >= 0 && n < NSTABLE)
        return n;
    if (!strcmp(kind, "Pod") && sscanf(name, "w-%d", &n) == 1 && n >= NSTABLE && n < NPODS)
        return n;
    if (!strcmp(kind, "ConfigMap") && sscanf(name, "cm-%d", &n) == 1 && n >= 0 && n < NCM)
        return NPODS + n;
    if (!strcmp(kind, "Secret") && sscanf(name, "sec-%d", &n) == 1 && n >= 0 && n < NSEC)
        return NPODS + NCM + n;
    return -1;
}

/* ---- the edge's side: Edged confirming deletes, reports ---- */

/* edge_call sends one EdgeLocal.Report; UNAVAILABLE (edgecore restarting)
 * is retried when `retry`. Returns the status code. */
static int edge_report(ke_edge *e, const char *key, uint64_t rv, Ke__V1__Operation op,
                       const char *content, int retry)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        int code = ke_edge_report_op(e, key, rv, "podstatus", op, content);
        if (!retry || code != KE_RPC_UNAVAILABLE || ke_time_mono_ms() > until)
            return code;
        pause_ms(20);
    }
}

/* edged_confirm does what Edged does for a pod marked for deletion: once
 * its containers are stopped (at once here) it reports the pod gone, at
 * the version of the marked pod it holds. A repeat is a no-op (the edge's
 * report dedup). */
static void edged_confirm(void)
{
    for (int n = 0; n < NNODES; n++) {
        ke_edge *e = &X.e[n];
        Ke__V1__EdgeListReply *r = e->running ? ke_edge_list(e) : NULL;
        for (size_t i = 0; r && i < r->n_objects; i++) {
            const Ke__V1__EdgeObject *o = r->objects[i];
            static const char mark[] = "\"deletionTimestamp\"";
            if (!strstr(o->key, "/Pod/") ||
                !memmem(o->content.data, o->content.len, mark, sizeof(mark) - 1))
                continue;
            if (edge_report(e, o->key, o->resource_version, KE__V1__OPERATION__OPERATION_DELETE,
                            NULL, 0) == KE_RPC_OK)
                X.confirms++;
        }
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
    }
}

/* report sends the next status of stable pod s through its node's EdgeLocal. */
static void report(int s)
{
    const key_state *k = &X.k[s];
    char key[128], content[96];
    long long n = ++X.reported[s];
    snprintf(key, sizeof(key), "node/%s/default/Pod/%s", node_name(k->node), k->name);
    snprintf(content, sizeof(content), "{\"phase\":\"Running\",\"n\":%lld}", n);
    int code = edge_report(&X.e[k->node], key, (uint64_t)n, KE__V1__OPERATION__OPERATION_UPLOAD,
                           content, 1);
    if (code != KE_RPC_OK)
        fail_msg("Report %s n=%lld: %s", key, n, ke_rpc_status_name(code));
    X.reports++;
}

/* ---- a Watch on pods from the start, resumed after restarts ---- */

static void watch_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    json_t *pod = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, NULL);
    const char *name = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
    uint64_t rv = strtoull(obj_rv(pod), NULL, 10);
    int k = name ? key_index("Pod", name) : -1;
    json_t *n = json_object_get(json_object_get(pod, "status"), "n");
    pthread_mutex_lock(&w->mu);
    if (ev->resource_version > w->last_rev)
        w->last_rev = ev->resource_version;
    if (k >= 0) {
        w->events++;
        if (rv < w->last_rv[k]) {
            fprintf(stderr, "chaos: watch: pod %s went back from rv %" PRIu64 " to %" PRIu64 "\n",
                    name, w->last_rv[k], rv);
            w->backwards_rv++;
        }
        if (rv > w->last_rv[k])
            w->last_rv[k] = rv;
        if (k < NSTABLE && json_is_integer(n)) {
            if (json_integer_value(n) < w->last_n[k]) {
                fprintf(stderr, "chaos: watch: pod %s status went back from n=%lld to n=%lld\n",
                        name, w->last_n[k], (long long)json_integer_value(n));
                w->backwards_n++;
            }
            if (json_integer_value(n) > w->last_n[k])
                w->last_n[k] = json_integer_value(n);
        }
    }
    pthread_mutex_unlock(&w->mu);
    json_decref(pod);
}

static void watch_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    if (st->code == KE_RPC_OUT_OF_RANGE)
        w->gone = 1;
    pthread_mutex_unlock(&w->mu);
}

static void watch_start(void)
{
    static const ke_rpc_handler h = {.on_message = watch_on_message, .on_close = watch_on_close};
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "Pod";
    req.namespace_ = "default";
    pthread_mutex_lock(&X.w.mu);
    req.resource_version = X.w.last_rev;
    X.w.closed = 0;
    pthread_mutex_unlock(&X.w.mu);
    ke_rpc_stub ec = {X.c.api, &ke__v1__edge_controller__descriptor};
    assert_int_equal(ke_rpc_stub_start(&ec, "Watch", &h, &X.w, NULL, &X.watch), 0);
    assert_int_equal(ke_rpc_call_send(X.watch, &req.base), 0);
    assert_int_equal(ke_rpc_call_close_send(X.watch), 0);
}

/* watch_end cancels the watch and waits for its end (no callback after). */
static void watch_end(void)
{
    if (!X.watch)
        return;
    ke_rpc_call_cancel(X.watch);
    int64_t until = ke_time_mono_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&X.w.mu);
        int closed = X.w.closed;
        pthread_mutex_unlock(&X.w.mu);
        if (closed)
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("the Watch call did not end after its cancel");
        pause_ms(10);
    }
    ke_rpc_call_unref(X.watch);
    X.watch = NULL;
}

/* watch_ensure resumes a watch that ended (its server was killed) from the
 * last revision it saw. */
static void watch_ensure(void)
{
    pthread_mutex_lock(&X.w.mu);
    int closed = X.w.closed, gone = X.w.gone;
    pthread_mutex_unlock(&X.w.mu);
    if (gone)
        fail_msg("the Watch fell off the store's history (OUT_OF_RANGE)");
    if (!closed)
        return;
    watch_end();
    watch_start();
}

/* ---- links and processes ---- */

/* tick counts one message (a change or a report); each proxy cuts its
 * links every CUT_EVERY messages, the three a third apart. */
static void tick(void)
{
    X.msgs++;
    for (int n = 0; n < NNODES; n++)
        if ((X.msgs + n * (CUT_EVERY / NNODES)) % CUT_EVERY == 0) {
            X.cut_calls++;
            X.cuts += ke_proxy_cut(X.p[n]) > 0;
        }
}

static void kill_cloud(void)
{
    ke_cluster_kill_cloud(&X.c);
    ke_cluster_start_cloud(&X.c, cloud_flags);
    if (X.split)
        X.hub_kills++;
    else
        X.cloud_kills++;
}

static void kill_controllers(void)
{
    ke_cluster_kill_controllers(&X.c);
    ke_cluster_start_controllers(&X.c);
    X.ctl_kills++;
}

static void kill_edge(int n)
{
    ke_edge_kill(&X.e[n]);
    ke_edge_start(&X.c, &X.e[n], node_name(n), ke_proxy_port(X.p[n]), edge_flags);
    X.edge_kills++;
}

/* pick_points fills pts[0..n) with distinct change indices in [lo, hi)
 * not yet in taken (a bitmap of NCHANGES), and marks them. */
static void pick_points(int *pts, int n, int lo, int hi, unsigned char *taken)
{
    for (int i = 0; i < n; i++) {
        int p;
        do
            p = lo + (int)rnd((uint32_t)(hi - lo));
        while (taken[p]);
        taken[p] = 1;
        pts[i] = p;
    }
}

/* ---- the changes ---- */

/* wait_pod_gone waits, confirming deletes as Edged, until the store no
 * longer holds pod k (its graceful delete is complete). */
static void wait_pod_gone(const key_state *k)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        json_t *o = get("Pod", k->name);
        if (!o)
            return;
        json_decref(o);
        if (ke_time_mono_ms() > until)
            fail_msg("pod %s (node %s) is still in the store %d s after its delete", k->name,
                     node_name(k->node), WAIT_MS / 1000);
        edged_confirm();
        watch_ensure();
        pause_ms(20);
    }
}

static void pod_refs(key_state *k)
{
    k->cm = (int)rnd(NCM);
    k->sec = rnd(2) ? (int)rnd(NSEC) : -1;
}

static int eligible(const key_state *k, int i)
{
    return k->state != S_DELETING || i - k->del_at >= RECREATE_AFTER;
}

/* change makes change number i of the plan. */
static void change(int i)
{
    key_state *k;
    if (i < NKEYS) {
        /* first every key is created: ConfigMaps and Secrets, then pods */
        k = &X.k[(i + NPODS) % NKEYS];
        k->state = S_LIVE;
        if (k->kind == K_POD) {
            k->node = (int)((k - X.k) % NNODES);
            pod_refs(k);
        }
        apply_key(k);
        X.creates++;
        X.changes++;
        return;
    }
    int idx = (int)rnd(NKEYS);
    while (!eligible(&X.k[idx], i))
        idx = (idx + 1) % NKEYS;
    k = &X.k[idx];
    int stable = idx < NSTABLE;
    if (k->state == S_ABSENT) {
        k->gen++;
        k->state = S_LIVE;
        if (k->kind == K_POD) {
            k->node = (int)rnd(NNODES);
            pod_refs(k);
        }
        apply_key(k);
        X.recreates++;
    } else if (k->state == S_DELETING) {
        wait_pod_gone(k);
        k->gen++;
        k->state = S_LIVE;
        k->node = (int)rnd(NNODES); /* moves, the Kubernetes way */
        pod_refs(k);
        apply_key(k);
        X.recreates++;
    } else if (stable || rnd(4) != 0) {
        k->gen++;
        if (k->kind == K_POD && rnd(3) == 0)
            pod_refs(k);
        apply_key(k);
        X.updates++;
    } else {
        del(kind_name(k->kind), k->name);
        if (k->kind == K_POD) {
            k->state = S_DELETING;
            k->del_at = i;
        } else {
            k->state = S_ABSENT;
        }
        X.deletes++;
    }
    X.changes++;
}

/* ---- the end state ---- */

/* wait_no_marked_pods confirms deletes until no pod in the store is marked. */
static void wait_no_marked_pods(void)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        json_t *pods = list("Pod");
        const char *name;
        json_t *o;
        int marked = 0;
        json_object_foreach(pods, name, o) {
            if (json_object_get(json_object_get(o, "metadata"), "deletionTimestamp")) {
                if (ke_time_mono_ms() > until)
                    fprintf(stderr, "chaos: pod %s is still marked for deletion\n", name);
                marked++;
            }
        }
        json_decref(pods);
        if (!marked)
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("%d pods still marked for deletion after %d s", marked, WAIT_MS / 1000);
        edged_confirm();
        pause_ms(50);
    }
    for (int i = 0; i < NKEYS; i++)
        if (X.k[i].state == S_DELETING)
            X.k[i].state = S_ABSENT;
}

/* wait_reports waits until every stable pod's status holds its last report. */
static void wait_reports(void)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (int s = 0; s < NSTABLE; s++) {
        long long n = -1;
        for (;;) {
            json_t *pod = get("Pod", X.k[s].name);
            json_t *v = json_object_get(json_object_get(pod, "status"), "n");
            n = json_is_integer(v) ? json_integer_value(v) : -1;
            json_decref(pod);
            if (n == X.reported[s] || ke_time_mono_ms() > until)
                break;
            pause_ms(50);
        }
        if (n != X.reported[s])
            fail_msg("pod %s: status.n=%lld in the store, last report n=%lld", X.k[s].name, n,
                     X.reported[s]);
    }
}

/* desired computes, from the store, key -> object of everything
 * node should hold: the pods bound to it and the ConfigMaps/Secrets they
 * reference that exist, each with the store's object (its content must be
 * that, at the same resourceVersion). */
static json_t *desired(int node, json_t *pods, json_t *cms, json_t *secs)
{
    json_t *want = json_object();
    char key[160];
    const char *name;
    json_t *pod;
    json_object_foreach(pods, name, pod) {
        const char *bound = json_string_value(
            json_object_get(json_object_get(pod, "spec"), "nodeName"));
        if (!bound || strcmp(bound, node_name(node)) != 0)
            continue;
        snprintf(key, sizeof(key), "node/%s/default/Pod/%s", bound, name);
        json_object_set(want, key, pod);
        json_t *spec = json_object_get(pod, "spec");
        size_t i, j;
        json_t *v, *c, *e;
        json_array_foreach(json_object_get(spec, "volumes"), i, v) {
            const char *s = json_string_value(
                json_object_get(json_object_get(v, "secret"), "secretName"));
            const char *cm = json_string_value(
                json_object_get(json_object_get(v, "configMap"), "name"));
            if (s && json_object_get(secs, s)) {
                snprintf(key, sizeof(key), "node/%s/default/Secret/%s", bound, s);
                json_object_set(want, key, json_object_get(secs, s));
            }
            if (cm && json_object_get(cms, cm)) {
                snprintf(key, sizeof(key), "node/%s/default/ConfigMap/%s", bound, cm);
                json_object_set(want, key, json_object_get(cms, cm));
            }
        }
        json_array_foreach(json_object_get(spec, "containers"), i, c) {
            json_array_foreach(json_object_get(c, "env"), j, e) {
                json_t *vf = json_object_get(e, "valueFrom");
                const char *cm = json_string_value(
                    json_object_get(json_object_get(vf, "configMapKeyRef"), "name"));
                const char *s = json_string_value(
                    json_object_get(json_object_get(vf, "secretKeyRef"), "name"));
                if (cm && json_object_get(cms, cm)) {
                    snprintf(key, sizeof(key), "node/%s/default/ConfigMap/%s", bound, cm);
                    json_object_set(want, key, json_object_get(cms, cm));
                }
                if (s && json_object_get(secs, s)) {
                    snprintf(key, sizeof(key), "node/%s/default/Secret/%s", bound, s);
                    json_object_set(want, key, json_object_get(secs, s));
                }
            }
        }
    }
    return want;
}

/* edge_diff compares node's store with want; returns the number of
 * differences, printing them when verbose. */
static int edge_diff(int node, json_t *want, int verbose)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(&X.e[node]);
    if (!r) {
        if (verbose)
            fprintf(stderr, "chaos: %s: EdgeLocal.List failed\n", node_name(node));
        return 1;
    }
    int diffs = 0;
    json_t *seen = json_object();
    for (size_t i = 0; i < r->n_objects; i++) {
        const Ke__V1__EdgeObject *o = r->objects[i];
        json_t *w = json_object_get(want, o->key);
        json_t *content = json_loadb((const char *)o->content.data, o->content.len, 0, NULL);
        const char *rv = obj_rv(content);
        if (!w) {
            diffs++;
            if (verbose)
                fprintf(stderr, "chaos: %s holds %s (rv %s), which it should not\n",
                        node_name(node), o->key, rv);
        } else if (strcmp(rv, obj_rv(w)) != 0) {
            diffs++;
            if (verbose)
                fprintf(stderr, "chaos: %s holds %s at rv %s, the store at %s\n",
                        node_name(node), o->key, rv, obj_rv(w));
        } else if (!json_equal(content, w)) {
            diffs++;
            if (verbose)
                fprintf(stderr, "chaos: %s holds %s at rv %s with other content than the "
                                "store's\n",
                        node_name(node), o->key, rv);
        }
        json_object_set_new(seen, o->key, json_true());
        json_decref(content);
    }
    const char *key;
    json_t *w;
    json_object_foreach(want, key, w) {
        if (!json_object_get(seen, key)) {
            diffs++;
            if (verbose)
                fprintf(stderr, "chaos: %s lacks %s (rv %s)\n", node_name(node), key,
                        obj_rv(w));
        }
    }
    if (r->outbox_pending) {
        diffs++;
        if (verbose)
            fprintf(stderr, "chaos: %s: %" PRIu64 " reports still in the outbox\n",
                    node_name(node), r->outbox_pending);
    }
    json_decref(seen);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return diffs;
}

/* check_model compares the store with the plan: exactly the live keys. */
static void check_model(json_t *pods, json_t *cms, json_t *secs)
{
    for (int i = 0; i < NKEYS; i++) {
        const key_state *k = &X.k[i];
        json_t *in = k->kind == K_POD ? pods : k->kind == K_CM ? cms : secs;
        json_t *o = json_object_get(in, k->name);
        if (!!o != (k->state == S_LIVE))
            fail_msg("%s %s: the plan says %s, the store %s", kind_name(k->kind), k->name,
                     k->state == S_LIVE ? "live" : "absent", o ? "holds it" : "does not");
        if (o && k->kind == K_POD &&
            strcmp(json_string_value(json_object_get(json_object_get(o, "spec"), "nodeName")),
                   node_name(k->node)) != 0)
            fail_msg("pod %s is bound elsewhere than the plan says", k->name);
    }
}

/* wait_edges_converged waits until every node holds exactly what the store
 * says it should. */
static void wait_edges_converged(void)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        json_t *pods = list("Pod"), *cms = list("ConfigMap"), *secs = list("Secret");
        int late = ke_time_mono_ms() > until, diffs = 0;
        check_model(pods, cms, secs);
        for (int n = 0; n < NNODES; n++) {
            json_t *want = desired(n, pods, cms, secs);
            diffs += edge_diff(n, want, late);
            json_decref(want);
        }
        json_decref(pods);
        json_decref(cms);
        json_decref(secs);
        if (!diffs)
            return;
        if (late)
            fail_msg("%d differences between the nodes and the store after %d s", diffs,
                     WAIT_MS / 1000);
        pause_ms(100);
    }
}

/* wait_watch waits until the watch has seen every stable pod's last report. */
static void wait_watch(void)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (int s = 0; s < NSTABLE; s++) {
        long long n;
        for (;;) {
            watch_ensure();
            pthread_mutex_lock(&X.w.mu);
            n = X.w.last_n[s];
            pthread_mutex_unlock(&X.w.mu);
            if (n == X.reported[s] || ke_time_mono_ms() > until)
                break;
            pause_ms(50);
        }
        if (n != X.reported[s])
            fail_msg("the Watch saw pod %s at n=%lld at most, last report n=%lld", X.k[s].name, n,
                     X.reported[s]);
    }
}

/* audit_check reads a stopped edge's audit table: per key, the applied
 * versions never go down. Returns the number of applies. */
static int audit_check(ke_edge *e, int *repeats)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/edge.db", e->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT key, rv FROM audit ORDER BY id", -1, &st, NULL),
        SQLITE_OK);
    json_t *last = json_object();
    int applies = 0, backwards = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        json_int_t rv = sqlite3_column_int64(st, 1);
        json_int_t prev = json_integer_value(json_object_get(last, key));
        if (rv < prev) {
            fprintf(stderr, "chaos: %s applied %s at rv %lld after rv %lld\n", e->node, key,
                    (long long)rv, (long long)prev);
            backwards++;
        }
        if (rv == prev)
            (*repeats)++;
        json_object_set_new(last, key, json_integer(rv > prev ? rv : prev));
        applies++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    json_decref(last);
    if (backwards)
        fail_msg("%s: %d keys applied at an older version after a newer one", e->node, backwards);
    return applies;
}

/* ---- the test ---- */

static void wait_node(const char *node)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    json_t *n;
    while (!(n = get("Node", node)) && ke_time_mono_ms() < until)
        pause_ms(50);
    if (!n)
        fail_msg("no Node object for %s", node);
    json_decref(n);
}

static void chaos_run(int split)
{
    int64_t t0 = ke_time_mono_ms();
    uint64_t seed = chaos_seed();
    fprintf(stderr, "chaos: %s seed=%" PRIu64 " (replay with KE_CHAOS_SEED=%" PRIu64 ")\n",
            split ? "split" : "one-process", seed, seed);
    memset(&X, 0, sizeof(X));
    pthread_mutex_init(&X.w.mu, NULL);
    X.split = split;
    X.rng = seed ? seed : 1;
    keys_init();

    if (split)
        ke_cluster_start_split(&X.c, cloud_flags);
    else
        ke_cluster_start(&X.c, cloud_flags);
    X.started = 1;
    const char *token = ke_cluster_token(&X.c);
    for (int n = 0; n < NNODES; n++) {
        assert_int_equal(ke_cluster_join(&X.c, node_name(n), token), 0);
        assert_int_equal(ke_proxy_start(X.c.grpc_port, &X.p[n]), 0);
        ke_edge_start(&X.c, &X.e[n], node_name(n), ke_proxy_port(X.p[n]), edge_flags);
    }
    for (int n = 0; n < NNODES; n++)
        wait_node(node_name(n));
    watch_start();

    /* The kills, at points of the plan. */
    unsigned char taken[NCHANGES] = {0};
    int cloud_pts[3], ctl_pts[3], edge_pt, n_cloud = 2 + (int)rnd(2), n_ctl = 0;
    pick_points(cloud_pts, n_cloud, 50, NCHANGES - 50, taken);
    if (split) {
        n_ctl = 2 + (int)rnd(2);
        pick_points(ctl_pts, n_ctl, 50, NCHANGES - 50, taken);
    }
    pick_points(&edge_pt, 1, 50, NCHANGES - 50, taken);
    int edge_node = (int)rnd(NNODES);

    for (int i = 0; i < NCHANGES; i++) {
        change(i);
        tick();
        if (i < NREPORTS) {
            report(i % NSTABLE);
            tick();
        }
        if (i % 5 == 4)
            edged_confirm();
        for (int j = 0; j < n_cloud; j++)
            if (cloud_pts[j] == i)
                kill_cloud();
        for (int j = 0; j < n_ctl; j++)
            if (ctl_pts[j] == i)
                kill_controllers();
        if (edge_pt == i)
            kill_edge(edge_node);
        watch_ensure();
    }
    int64_t t_driven = ke_time_mono_ms();

    wait_no_marked_pods();
    wait_reports();
    wait_edges_converged();
    wait_watch();
    pthread_mutex_lock(&X.w.mu);
    int backwards_rv = X.w.backwards_rv, backwards_n = X.w.backwards_n, events = X.w.events;
    pthread_mutex_unlock(&X.w.mu);
    watch_end();
    if (backwards_rv || backwards_n)
        fail_msg("the Watch saw %d resourceVersions and %d statuses go back", backwards_rv,
                 backwards_n);

    int applies = 0, repeats = 0;
    for (int n = 0; n < NNODES; n++) {
        ke_edge_stop(&X.e[n]);
        applies += audit_check(&X.e[n], &repeats);
    }

    assert_int_equal(X.changes, NCHANGES);
    assert_int_equal(X.reports, NREPORTS);
    if (split) {
        assert_true(X.hub_kills >= 2);
        assert_true(X.ctl_kills >= 2);
    } else {
        assert_true(X.cloud_kills >= 2);
    }
    assert_true(X.cuts >= 10);
    fprintf(stderr,
            "chaos: %s seed=%" PRIu64 " changes=%d (creates=%d updates=%d deletes=%d "
            "re-creates=%d) reports=%d confirm_reports=%d cuts=%d/%d kills: cloudcore=%d cloudhub=%d "
            "edgecontroller=%d edgecore=%d watch_events=%d edge_applies=%d repeats=%d "
            "driven=%.1fs total=%.1fs\n",
            split ? "split" : "one-process", seed, X.changes, X.creates, X.updates, X.deletes,
            X.recreates, X.reports, X.confirms, X.cuts, X.cut_calls, X.cloud_kills, X.hub_kills,
            X.ctl_kills, X.edge_kills, events, applies, repeats, (t_driven - t0) / 1000.0,
            (ke_time_mono_ms() - t0) / 1000.0);
}

static int chaos_teardown(void **state)
{
    (void)state;
    if (!X.started)
        return 0;
    if (X.watch) { /* the test failed with its watch open */
        ke_rpc_call_cancel(X.watch);
        int64_t until = ke_time_mono_ms() + 10000;
        for (int closed = 0; !closed && ke_time_mono_ms() < until; pause_ms(10)) {
            pthread_mutex_lock(&X.w.mu);
            closed = X.w.closed;
            pthread_mutex_unlock(&X.w.mu);
        }
        ke_rpc_call_unref(X.watch);
        X.watch = NULL;
    }
    for (int n = 0; n < NNODES; n++) {
        if (X.e[n].running) {
            kill(X.e[n].proc.pid, SIGKILL);
            ke_tp_wait_exit(&X.e[n].proc, 10000);
            X.e[n].running = 0;
        }
        ke_rpc_channel_free(X.e[n].local);
        X.e[n].local = NULL;
        ke_proxy_stop(X.p[n]);
        X.p[n] = NULL;
    }
    X.started = 0;
    ke_cluster_stop(&X.c);
    return 0;
}

static void test_chaos_one_process(void **state)
{
    (void)state;
    chaos_run(0);
}

static void test_chaos_split(void **state)
{
    (void)state;
    chaos_run(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_chaos_one_process, chaos_teardown),
        cmocka_unit_test_teardown(test_chaos_split, chaos_teardown),
    };
    return cmocka_run_group_tests_name("chaos", tests, NULL, NULL);
}
