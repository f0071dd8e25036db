/*
 * test_delivery.c — end-to-end delivery (DESIGN.md §4), measured where a
 * user sees it: the controllers' store and the edge's store, with real
 * processes (cloudcore, or cloudhub + edgecontroller when split; edgecore
 * reporting through its outbox via EdgeLocal, standing in for Edged and
 * DeviceTwin).
 *
 * Upstream, in one process and split, each test reports pod statuses and a
 * device's twin values while:
 *   - the consuming controllers are stopped (acked by CloudHub, applied
 *     when they return);
 *   - the cloud process is SIGKILLed as soon as the edge's outbox shows
 *     every report acknowledged;
 *   - 5,000 reports wait in the outbox while the cloud is down and flush at
 *     once while it starts (before the controllers subscribe);
 * and checks that every report's effect is in the store, that per pod the
 * statuses were applied in order (a Watch sees them only grow), and that
 * a restart applies nothing twice (resourceVersions do not move).
 * Downstream: after a restart a node whose objects did not change receives
 * nothing but ResyncDone; a pod, a Device and the Secret/ConfigMap a pod
 * references, moved between nodes or no longer referenced, leave the old
 * node's store, also when that node was offline during the move; 50 watches
 * cancelled while bound pods change right after a restart leave cloudcore
 * serving.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_time.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NPODS 10
#define WAIT_MS 60000

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the controllers' API ---- */

static int apply(ke_cluster *c, const char *json)
{
    ke_rpc_status st;
    int code = ke_ec_apply(c->api, json, &st);
    if (code != KE_RPC_OK)
        fprintf(stderr, "apply: %s: %s\n", ke_rpc_status_name(st.code), st.message);
    return code;
}

static int del(ke_cluster *c, const char *kind, const char *name)
{
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = "default";
    ref.name = (char *)name;
    req.ref = &ref;
    ke_rpc_stub ec = {c->api, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_stub_unary(&ec, "Delete", &req.base, &o, &reply, &st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

/* get returns the object (json_decref it) or NULL. Retries UNAVAILABLE:
 * the controllers may be restarting. */
static json_t *get(ke_cluster *c, const char *kind, const char *name)
{
    /* Nodes are cluster-scoped: no namespace */
    const char *ns = strcmp(kind, "Node") == 0 ? "" : "default";
    for (int i = 0; i < 100; i++) {
        ke_rpc_status st;
        json_t *obj = ke_ec_get(c->api, kind, ns, name, &st);
        if (st.code != KE_RPC_UNAVAILABLE)
            return obj;
        pause_ms(100);
    }
    return NULL;
}

static long long pod_n(ke_cluster *c, const char *name, char *rv, size_t rvlen)
{
    json_t *pod = get(c, "Pod", name);
    long long n = -1;
    json_t *v = json_object_get(json_object_get(pod, "status"), "n");
    if (json_is_integer(v))
        n = json_integer_value(v);
    if (rv) {
        const char *s = json_string_value(
            json_object_get(json_object_get(pod, "metadata"), "resourceVersion"));
        snprintf(rv, rvlen, "%s", s ? s : "");
    }
    json_decref(pod);
    return n;
}

static long long twin_value(ke_cluster *c, const char *device)
{
    json_t *d = get(c, "Device", device);
    long long v = -1;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(json_object_get(d, "status"), "twins"), i, t) {
        const char *s = json_string_value(json_object_get(json_object_get(t, "reported"), "value"));
        if (s)
            v = atoll(s);
    }
    json_decref(d);
    return v;
}

/* wait_store waits until every pod's status.n is last and the device's
 * reported value is last; fails naming what is missing. */
static void wait_store(ke_cluster *c, long long last)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    char name[32];
    for (int i = 0; i < NPODS; i++) {
        snprintf(name, sizeof(name), "p-%d", i);
        long long n;
        while ((n = pod_n(c, name, NULL, 0)) != last && ke_time_mono_ms() < until)
            pause_ms(50);
        if (n != last)
            fprintf(stderr, "pod %s: status.n=%lld, want %lld\n", name, n, last);
        assert_int_equal(n, last);
    }
    long long v;
    while ((v = twin_value(c, "d-1")) != last && ke_time_mono_ms() < until)
        pause_ms(50);
    assert_int_equal(v, last);
}

/* ---- the edge ---- */

static int edge_rv(ke_edge *e, const char *key, uint64_t *rv)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(e);
    int found = 0;
    for (size_t i = 0; r && i < r->n_objects; i++)
        if (strcmp(r->objects[i]->key, key) == 0) {
            found = 1;
            if (rv)
                *rv = r->objects[i]->resource_version;
        }
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return found;
}

static void wait_edge(ke_edge *e, const char *key, int want)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    int has;
    while ((has = edge_rv(e, key, NULL)) != want && ke_time_mono_ms() < until)
        pause_ms(50);
    if (has != want)
        fprintf(stderr, "edge %s: %s is %s\n", e->node, key, has ? "still there" : "missing");
    assert_int_equal(has, want);
}

static void wait_outbox_empty(ke_edge *e)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    long long n;
    while ((n = ke_edge_outbox_pending(e)) != 0 && ke_time_mono_ms() < until)
        pause_ms(20);
    assert_int_equal(n, 0);
}

/* report sends pod statuses n = from..to for every pod and the device's
 * twin value, interleaved, each with its own version. */
static void report(ke_edge *e, long long from, long long to)
{
    char key[128], content[256];
    for (long long n = from; n <= to; n++) {
        for (int i = 0; i < NPODS; i++) {
            snprintf(key, sizeof(key), "node/%s/default/Pod/p-%d", e->node, i);
            snprintf(content, sizeof(content), "{\"phase\":\"Running\",\"n\":%lld}", n);
            assert_int_equal(ke_edge_report(e, key, (uint64_t)n + 1, "podstatus", content), 0);
        }
        snprintf(key, sizeof(key), "node/%s/default/Device/d-1", e->node);
        snprintf(content, sizeof(content),
                 "{\"twins\":[{\"propertyName\":\"temp\",\"reported\":{\"value\":\"%lld\","
                 "\"metadata\":{\"timestamp\":\"%lld\"}}}],\"state\":\"online\"}",
                 n, n);
        assert_int_equal(ke_edge_report(e, key, (uint64_t)n + 1, "twin", content), 0);
    }
}

/* ---- a Watch on pods, to see the order statuses were applied in ---- */

typedef struct watch_rec {
    pthread_mutex_t mu;
    long long last[NPODS];
    int backwards, events, closed;
} watch_rec;

static void watch_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    json_t *pod = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, NULL);
    const char *name = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
    json_t *n = json_object_get(json_object_get(pod, "status"), "n");
    int i;
    pthread_mutex_lock(&w->mu);
    if (name && sscanf(name, "p-%d", &i) == 1 && i >= 0 && i < NPODS && json_is_integer(n)) {
        if (json_integer_value(n) < w->last[i])
            w->backwards++;
        w->last[i] = json_integer_value(n);
        w->events++;
    }
    pthread_mutex_unlock(&w->mu);
    json_decref(pod);
}

static void watch_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    (void)st;
    watch_rec *w = ud;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    pthread_mutex_unlock(&w->mu);
}

static ke_rpc_call *watch_pods(ke_cluster *c, watch_rec *w, uint64_t from)
{
    static const ke_rpc_handler h = {.on_message = watch_on_message, .on_close = watch_on_close};
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "Pod";
    req.namespace_ = "default";
    req.resource_version = from;
    ke_rpc_stub ec = {c->api, &ke__v1__edge_controller__descriptor};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&ec, "Watch", &h, w, NULL, &call), 0);
    assert_int_equal(ke_rpc_call_send(call, &req.base), 0);
    assert_int_equal(ke_rpc_call_close_send(call), 0);
    return call;
}

static void watch_end(ke_rpc_call *call, watch_rec *w)
{
    ke_rpc_call_cancel(call);
    int64_t until = ke_time_mono_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int closed = w->closed;
        pthread_mutex_unlock(&w->mu);
        if (closed || ke_time_mono_ms() > until)
            break;
        pause_ms(10);
    }
    ke_rpc_call_unref(call);
}

/* ---- setup ---- */

/* wait_node waits for the Node object the controllers make for a joined,
 * connected node (pods can be bound to it from then on). */
static void wait_node(ke_cluster *c, const char *node)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    json_t *n = NULL;
    while (!(n = get(c, "Node", node)) && ke_time_mono_ms() < until)
        pause_ms(50);
    assert_non_null(n);
    json_decref(n);
}

static void apply_workload(ke_cluster *c, const char *node)
{
    char json[1024];
    wait_node(c, node);
    assert_int_equal(apply(c, "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":"
                              "\"DeviceModel\",\"metadata\":{\"name\":\"thermo\",\"namespace\":"
                              "\"default\"},\"spec\":{\"properties\":[{\"name\":\"temp\",\"type\":"
                              "\"STRING\",\"accessMode\":\"ReadOnly\"}]}}"),
                     KE_RPC_OK);
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":"
             "{\"name\":\"d-1\",\"namespace\":\"default\"},\"spec\":{\"deviceModelRef\":"
             "{\"name\":\"thermo\"},\"nodeName\":\"%s\",\"properties\":[{\"name\":\"temp\"}]}}",
             node);
    assert_int_equal(apply(c, json), KE_RPC_OK);
    for (int i = 0; i < NPODS; i++) {
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p-%d\","
                 "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"%s\",\"containers\":"
                 "[{\"name\":\"c\",\"image\":\"busybox\"}]}}",
                 i, node);
        assert_int_equal(apply(c, json), KE_RPC_OK);
    }
}

static void stop_consumers(ke_cluster *c)
{
    if (c->split) {
        ke_cluster_kill_controllers(c);
    } else {
        /* cloudcore with CloudHub only: nobody consumes the upstream log */
        static const char *const hub_only[] = {"--edgecontroller.enable=false", NULL};
        ke_cluster_restart_cloud(c, hub_only);
    }
}

static void start_consumers(ke_cluster *c)
{
    if (c->split)
        ke_cluster_start_controllers(c);
    else
        ke_cluster_restart_cloud(c, NULL);
}

/* restart_cloud_killed SIGKILLs the cloud (both processes when split) and
 * starts it again. */
static void kill_and_restart(ke_cluster *c)
{
    ke_cluster_kill_cloud(c);
    if (c->split)
        ke_cluster_kill_controllers(c);
    ke_cluster_start_cloud(c, NULL);
    if (c->split)
        ke_cluster_start_controllers(c);
}

static void upstream_survives_everything(int split)
{
    ke_cluster c;
    ke_edge e = {0};
    if (split)
        ke_cluster_start_split(&c, NULL);
    else
        ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    ke_edge_start(&c, &e, "edge-1", c.grpc_port, NULL);
    apply_workload(&c, "edge-1");
    wait_edge(&e, "node/edge-1/default/Pod/p-9", 1);
    wait_edge(&e, "node/edge-1/default/Device/d-1", 1);

    /* 1. The consumers are stopped: CloudHub acks, the store gets it later. */
    stop_consumers(&c);
    report(&e, 0, 19);
    wait_outbox_empty(&e);
    start_consumers(&c);
    wait_store(&c, 19);

    /* 2. The cloud dies the moment the edge sees its reports acked. */
    report(&e, 20, 39);
    wait_outbox_empty(&e);
    kill_and_restart(&c);
    wait_store(&c, 39);

    /* 3. 5,000 reports queued while the cloud is down flush at once while
     * it starts; a watch from before sees each pod's statuses only grow. */
    char rv[32];
    pod_n(&c, "p-0", rv, sizeof(rv));
    ke_cluster_kill_cloud(&c);
    if (split)
        ke_cluster_kill_controllers(&c);
    report(&e, 40, 494); /* 455 x 11 = 5,005 reports */
    assert_true(ke_edge_outbox_pending(&e) >= 5000);
    ke_cluster_start_cloud(&c, NULL);
    if (split)
        ke_cluster_start_controllers(&c);
    watch_rec w;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    ke_rpc_call *wc = watch_pods(&c, &w, strtoull(rv, NULL, 10));
    wait_outbox_empty(&e);
    wait_store(&c, 494);
    watch_end(wc, &w);
    assert_int_equal(w.backwards, 0);
    assert_true(w.events >= NPODS);

    /* 4. Nothing is applied twice: after a restart, one more report of p-0
     * lands (the consumer goes in log order) and no other pod moved. */
    char before[NPODS][32], after[32], name[32];
    for (int i = 0; i < NPODS; i++) {
        snprintf(name, sizeof(name), "p-%d", i);
        pod_n(&c, name, before[i], sizeof(before[i]));
    }
    kill_and_restart(&c);
    char key[128];
    snprintf(key, sizeof(key), "node/edge-1/default/Pod/p-0");
    assert_int_equal(ke_edge_report(&e, key, 100000, "podstatus", "{\"n\":100000}"), 0);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (pod_n(&c, "p-0", NULL, 0) != 100000 && ke_time_mono_ms() < until)
        pause_ms(50);
    assert_int_equal(pod_n(&c, "p-0", NULL, 0), 100000);
    for (int i = 1; i < NPODS; i++) {
        snprintf(name, sizeof(name), "p-%d", i);
        pod_n(&c, name, after, sizeof(after));
        assert_string_equal(after, before[i]);
    }
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

static void test_delivery_upstream_reaches_the_store_one_process(void **state)
{
    (void)state;
    upstream_survives_everything(0);
}

static void test_delivery_upstream_reaches_the_store_split(void **state)
{
    (void)state;
    upstream_survives_everything(1);
}

/* ---- downstream ---- */

typedef struct edge_snapshot {
    char keys[64][128];
    uint64_t rvs[64];
    size_t n;
} edge_snapshot;

static void snapshot(ke_edge *e, edge_snapshot *s)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(e);
    assert_non_null(r);
    s->n = 0;
    for (size_t i = 0; i < r->n_objects && s->n < 64; i++, s->n++) {
        snprintf(s->keys[s->n], sizeof(s->keys[s->n]), "%s", r->objects[i]->key);
        s->rvs[s->n] = r->objects[i]->resource_version;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_delivery_restart_resends_nothing(void **state)
{
    (void)state;
    ke_cluster c;
    ke_edge e = {0};
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    ke_edge_start(&c, &e, "edge-1", c.grpc_port, NULL);
    apply_workload(&c, "edge-1");
    wait_edge(&e, "node/edge-1/default/Pod/p-9", 1);
    wait_edge(&e, "node/edge-1/default/DeviceModel/thermo", 1);
    wait_edge(&e, "node/edge-1/default/Device/d-1", 1);
    for (int i = 0; i < NPODS; i++) {
        char key[64];
        snprintf(key, sizeof(key), "node/edge-1/default/Pod/p-%d", i);
        wait_edge(&e, key, 1);
    }
    edge_snapshot a, b;
    snapshot(&e, &a);
    assert_int_equal(a.n, NPODS + 2);

    ke_tp_sh(": > %s", c.cloud_log); /* only what the new process says */
    ke_cluster_restart_cloud(&c, NULL);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_cluster_node_connected(&c, "edge-1") != 1 && ke_time_mono_ms() < until)
        pause_ms(20);
    assert_int_equal(ke_cluster_node_connected(&c, "edge-1"), 1);
    /* A marker pod applied after the restart reaches the edge: by then the
     * controllers have converged edge-1 at least once since they started. */
    assert_int_equal(apply(&c, "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                               "\"marker\",\"namespace\":\"default\"},\"spec\":{\"nodeName\":"
                               "\"edge-1\",\"containers\":[{\"name\":\"c\",\"image\":\"x\"}]}}"),
                     KE_RPC_OK);
    wait_edge(&e, "node/edge-1/default/Pod/marker", 1);
    snapshot(&e, &b);
    assert_int_equal(b.n, a.n + 1);
    for (size_t i = 0; i < a.n; i++) {
        uint64_t rv = 0;
        assert_true(edge_rv(&e, a.keys[i], &rv));
        assert_int_equal(rv, a.rvs[i]); /* not sent again */
    }
    /* CloudHub's connect line: the resync held nothing but ResyncDone, and
     * the only message it sent since the restart is the marker. */
    assert_true(ke_file_contains(c.cloud_log, "node connected node=edge-1"));
    assert_true(ke_file_contains(c.cloud_log, "updates=0 deletes=0"));

    assert_int_equal(ke_cluster_metric(&c, "ke_cloudhub_messages_sent_total"), 1);
    /* Converged and idle: no reconcile runs again before the resync period
     * (a controller that re-checks its nodes in a loop burns the CPU). */
    const char *lno = "ke_rpc_server_calls_total{method=\"/ke.v1.Hub/ListNodeObjects\"}";
    long long before = ke_cluster_metric(&c, lno);
    pause_ms(2000); /* a quiet period, not a synchronisation */
    assert_int_equal(ke_cluster_metric(&c, lno), before);
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

/* confirm_deleted waits until the edge holds pod `name` marked for
 * deletion, then confirms it is gone as Edged does, and waits until it
 * leaves the edge's store. */
static void confirm_deleted(ke_edge *e, const char *name)
{
    char key[128], content[4096] = "";
    snprintf(key, sizeof(key), "node/%s/default/Pod/%s", e->node, name);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        Ke__V1__EdgeGetRequest g = KE__V1__EDGE_GET_REQUEST__INIT;
        g.key = key;
        ke_rpc_stub local = {e->local, &ke__v1__edge_local__descriptor};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        assert_int_equal(ke_rpc_stub_unary(&local, "Get", &g.base, NULL, &reply, &st), 0);
        if (st.code == KE_RPC_OK) {
            Ke__V1__EdgeObject *o = (Ke__V1__EdgeObject *)reply;
            size_t n = o->content.len < sizeof(content) - 1 ? o->content.len : sizeof(content) - 1;
            memcpy(content, o->content.data, n);
            content[n] = '\0';
        }
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        if (strstr(content, "deletionTimestamp") || ke_time_mono_ms() > until)
            break;
        pause_ms(50);
    }
    assert_non_null(strstr(content, "deletionTimestamp"));
    assert_int_equal(ke_edge_report_op(e, key, 1, "podstatus",
                                       KE__V1__OPERATION__OPERATION_DELETE, NULL),
                     0);
    wait_edge(e, key, 0);
}

static void moves(int split)
{
    ke_cluster c;
    ke_edge e1 = {0}, e2 = {0};
    if (split)
        ke_cluster_start_split(&c, NULL);
    else
        ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    assert_int_equal(ke_cluster_join(&c, "edge-2", ke_cluster_token(&c)), 0);
    ke_edge_start(&c, &e1, "edge-1", c.grpc_port, NULL);
    ke_edge_start(&c, &e2, "edge-2", c.grpc_port, NULL);
    wait_node(&c, "edge-1");
    wait_node(&c, "edge-2");
    assert_int_equal(apply(&c, "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                               "\"s\",\"namespace\":\"default\"},\"data\":{\"k\":\"dg==\"}}"),
                     KE_RPC_OK);
    assert_int_equal(apply(&c, "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                               "\"cm\",\"namespace\":\"default\"},\"data\":{\"k\":\"v\"}}"),
                     KE_RPC_OK);
    const char *pod_fmt =
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"namespace\":"
        "\"default\"},\"spec\":{\"nodeName\":\"%s\",\"volumes\":[%s],\"containers\":[{\"name\":"
        "\"c\",\"image\":\"x\",\"env\":[{\"name\":\"K\",\"valueFrom\":{\"configMapKeyRef\":"
        "{\"name\":\"cm\",\"key\":\"k\"}}}]}]}}";
    const char *with_secret = "{\"name\":\"s\",\"secret\":{\"secretName\":\"s\"}}";
    char json[1024];
    snprintf(json, sizeof(json), pod_fmt, "edge-1", with_secret);
    assert_int_equal(apply(&c, json), KE_RPC_OK);
    apply_workload(&c, "edge-1"); /* the device d-1 and its model */
    wait_edge(&e1, "node/edge-1/default/Pod/web", 1);
    wait_edge(&e1, "node/edge-1/default/Secret/s", 1);
    wait_edge(&e1, "node/edge-1/default/ConfigMap/cm", 1);
    wait_edge(&e1, "node/edge-1/default/Device/d-1", 1);
    wait_edge(&e1, "node/edge-1/default/DeviceModel/thermo", 1);

    /* No longer referenced: the Secret leaves edge-1, the ConfigMap stays. */
    snprintf(json, sizeof(json), pod_fmt, "edge-1", "");
    assert_int_equal(apply(&c, json), KE_RPC_OK);
    wait_edge(&e1, "node/edge-1/default/Secret/s", 0);
    wait_edge(&e1, "node/edge-1/default/ConfigMap/cm", 1);

    /* Moved while edge-1 is offline, the Kubernetes way for a pod (bound
     * pods do not move: deleted here, made again there) and by a new
     * nodeName for the device: everything leaves edge-1 when it comes
     * back, and arrives on edge-2. */
    ke_edge_kill(&e1);
    assert_int_equal(del(&c, "Pod", "web"), KE_RPC_OK); /* graceful: marked */
    const char *pod2_fmt =
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web2\",\"namespace\":"
        "\"default\"},\"spec\":{\"nodeName\":\"%s\",\"volumes\":[%s],\"containers\":[{\"name\":"
        "\"c\",\"image\":\"x\",\"env\":[{\"name\":\"K\",\"valueFrom\":{\"configMapKeyRef\":"
        "{\"name\":\"cm\",\"key\":\"k\"}}}]}]}}";
    snprintf(json, sizeof(json), pod2_fmt, "edge-2", with_secret);
    assert_int_equal(apply(&c, json), KE_RPC_OK);
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":"
             "{\"name\":\"d-1\",\"namespace\":\"default\"},\"spec\":{\"deviceModelRef\":"
             "{\"name\":\"thermo\"},\"nodeName\":\"edge-2\",\"properties\":[{\"name\":\"temp\"}]}}");
    assert_int_equal(apply(&c, json), KE_RPC_OK);
    for (int i = 0; i < NPODS; i++) { /* and the other pods are deleted (marked) */
        char name[16];
        snprintf(name, sizeof(name), "p-%d", i);
        assert_int_equal(del(&c, "Pod", name), KE_RPC_OK);
    }
    wait_edge(&e2, "node/edge-2/default/Pod/web2", 1);
    wait_edge(&e2, "node/edge-2/default/Secret/s", 1);
    wait_edge(&e2, "node/edge-2/default/ConfigMap/cm", 1);
    wait_edge(&e2, "node/edge-2/default/Device/d-1", 1);
    wait_edge(&e2, "node/edge-2/default/DeviceModel/thermo", 1);
    /* In the meantime the cloud restarts (state from its files only). */
    kill_and_restart(&c);
    ke_edge_start(&c, &e1, "edge-1", c.grpc_port, NULL);
    /* edge-1 learns that its pods are being deleted; its Edged confirms
     * each has stopped (EdgeLocal stands in), and only then do they leave. */
    confirm_deleted(&e1, "web");
    for (int i = 0; i < NPODS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p-%d", i);
        confirm_deleted(&e1, name);
    }
    wait_edge(&e1, "node/edge-1/default/ConfigMap/cm", 0);
    wait_edge(&e1, "node/edge-1/default/Device/d-1", 0);
    wait_edge(&e1, "node/edge-1/default/DeviceModel/thermo", 0);
    Ke__V1__EdgeListReply *r = ke_edge_list(&e1);
    assert_non_null(r);
    int left = 0;
    for (size_t i = 0; i < r->n_objects; i++) {
        fprintf(stderr, "edge-1 still holds %s\n", r->objects[i]->key);
        left++;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(left, 0);
    ke_edge_stop(&e1);
    ke_edge_stop(&e2);
    ke_cluster_stop(&c);
}

static void test_delivery_moved_objects_leave_the_old_node_one_process(void **state)
{
    (void)state;
    moves(0);
}

static void test_delivery_moved_objects_leave_the_old_node_split(void **state)
{
    (void)state;
    moves(1);
}

/* ---- watches cancelled while bound pods change, after a restart ---- */

typedef struct churn {
    ke_cluster *c;
    int stop, applied;
} churn;

static void *churn_pods(void *arg)
{
    churn *ch = arg;
    char json[512];
    for (int i = 0; !__atomic_load_n(&ch->stop, __ATOMIC_ACQUIRE); i++) {
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p-%d\","
                 "\"namespace\":\"default\",\"labels\":{\"gen\":\"g%d\"}},\"spec\":{\"nodeName\":"
                 "\"edge-1\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}",
                 i % NPODS, i);
        if (apply(ch->c, json) == KE_RPC_OK)
            __atomic_add_fetch(&ch->applied, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void test_delivery_watch_cancel_storm_after_restart(void **state)
{
    (void)state;
    ke_cluster c;
    ke_edge e = {0};
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    ke_edge_start(&c, &e, "edge-1", c.grpc_port, NULL);
    apply_workload(&c, "edge-1");
    wait_edge(&e, "node/edge-1/default/Pod/p-9", 1);
    ke_cluster_restart_cloud(&c, NULL);

    churn ch = {&c, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_pods, &ch), 0);
    for (int round = 0; round < 3; round++) {
        watch_rec w[50];
        ke_rpc_call *calls[50];
        for (int i = 0; i < 50; i++) {
            memset(&w[i], 0, sizeof(w[i]));
            pthread_mutex_init(&w[i].mu, NULL);
            calls[i] = watch_pods(&c, &w[i], 0);
        }
        int target = __atomic_load_n(&ch.applied, __ATOMIC_ACQUIRE) + 20;
        while (__atomic_load_n(&ch.applied, __ATOMIC_ACQUIRE) < target)
            pause_ms(5);
        for (int i = 0; i < 50; i++)
            watch_end(calls[i], &w[i]);
    }
    __atomic_store_n(&ch.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    /* Still serving: an apply goes through and reaches the edge. */
    assert_int_equal(apply(&c, "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                               "\"after\",\"namespace\":\"default\"},\"spec\":{\"nodeName\":"
                               "\"edge-1\",\"containers\":[{\"name\":\"c\",\"image\":\"x\"}]}}"),
                     KE_RPC_OK);
    wait_edge(&e, "node/edge-1/default/Pod/after", 1);
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivery_upstream_reaches_the_store_one_process),
        cmocka_unit_test(test_delivery_upstream_reaches_the_store_split),
        cmocka_unit_test(test_delivery_restart_resends_nothing),
        cmocka_unit_test(test_delivery_moved_objects_leave_the_old_node_one_process),
        cmocka_unit_test(test_delivery_moved_objects_leave_the_old_node_split),
        cmocka_unit_test(test_delivery_watch_cancel_storm_after_restart),
    };
    if (getenv("KE_TEST_FILTER")) /* e.g. "*restart*": run only those */
        cmocka_set_test_filter(getenv("KE_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
