/*
 * test_controllers.c — EdgeController end to end with real processes:
 * cloudcore (CloudHub + EdgeController + store), two joined edge nodes
 * running edgecore, the user API over mutual TLS as system:admin, and
 * EdgeLocal standing in for Edged on the edge (it reports pod status and
 * confirms deletions through the same EdgeHub outbox Edged will use).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ke_cluster C;
static ke_edge E1, E2;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int apply(const char *json, char *msg, size_t len)
{
    ke_rpc_status st;
    int code = ke_ec_apply(C.admin, json, &st);
    if (msg)
        snprintf(msg, len, "%s", st.message);
    return code;
}

/* get returns the object (json_decref it), or NULL with *code set. */
static json_t *get(const char *kind, const char *ns, const char *name, int *code)
{
    ke_rpc_status st;
    json_t *obj = ke_ec_get(C.admin, kind, ns, name, &st);
    if (code)
        *code = st.code;
    return obj;
}

/* edge_has reports whether the edge's store holds key; *rv gets its version. */
static int edge_has(ke_edge *e, const char *key, char *content, size_t len)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(e);
    int found = 0;
    for (size_t i = 0; r && i < r->n_objects; i++) {
        if (strcmp(r->objects[i]->key, key) == 0) {
            found = 1;
            if (content) {
                size_t n = r->objects[i]->content.len < len - 1 ? r->objects[i]->content.len
                                                                  : len - 1;
                memcpy(content, r->objects[i]->content.data, n);
                content[n] = '\0';
            }
        }
    }
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return found;
}

/* wait_edge polls the edge's store until key is present (want 1) or absent
 * (want 0), and, when contains is set, its content contains that text. */
static int wait_edge(ke_edge *e, const char *key, int want, const char *contains)
{
    char content[8192];
    for (int i = 0; i < 300; i++) {
        int has = edge_has(e, key, content, sizeof(content));
        if (has == want && (!want || !contains || strstr(content, contains)))
            return 1;
        pause_ms(100);
    }
    return 0;
}

static const char *node_ready(const char *node, char *buf, size_t len)
{
    json_t *n = get("Node", "", node, NULL);
    snprintf(buf, len, "?");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(n, "status"), "conditions"), i, c)
        if (strcmp(json_string_value(json_object_get(c, "type")), "Ready") == 0)
            snprintf(buf, len, "%s", json_string_value(json_object_get(c, "status")));
    json_decref(n);
    return buf;
}

static int wait_ready(const char *node, const char *want)
{
    char buf[16];
    for (int i = 0; i < 300; i++) {
        if (strcmp(node_ready(node, buf, sizeof(buf)), want) == 0)
            return 1;
        pause_ms(100);
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    const char *flags[] = {"--edgecontroller.node_grace=2s", NULL};
    ke_cluster_start(&C, flags);
    assert_int_equal(ke_cluster_join(&C, "edge-1", ke_cluster_token(&C)), 0);
    assert_int_equal(ke_cluster_join(&C, "edge-2", ke_cluster_token(&C)), 0);
    ke_edge_start(&C, &E1, "edge-1", C.grpc_port, NULL);
    ke_edge_start(&C, &E2, "edge-2", C.grpc_port, NULL);
    assert_true(wait_ready("edge-1", "True"));
    assert_true(wait_ready("edge-2", "True"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_edge_stop(&E1);
    ke_edge_stop(&E2);
    ke_cluster_stop(&C);
    return 0;
}

static void assert_refused(const char *json, const char *field)
{
    char msg[512];
    assert_int_equal(apply(json, msg, sizeof(msg)), KE_RPC_INVALID_ARGUMENT);
    if (!strstr(msg, field))
        fail_msg("refusal \"%s\" does not name \"%s\"", msg, field);
}

static void test_apply_refuses_invalid_objects_naming_the_field(void **state)
{
    (void)state;
    assert_refused("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{},\"spec\":{"
                   "\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}}",
                   "metadata.name");
    assert_refused("{\"apiVersion\":\"v1\",\"kind\":\"Gadget\",\"metadata\":{\"name\":\"g\"}}",
                   "kind");
    assert_refused("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"bad\"},"
                   "\"data\":{\"n\":42}}",
                   "data.n");
    assert_refused("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"lost\"},"
                   "\"spec\":{\"nodeName\":\"edge-9\",\"containers\":[{\"name\":\"c\","
                   "\"image\":\"i\"}]}}",
                   "spec.nodeName");
    assert_refused("not json", "object_json");
    int code = 0;
    assert_null(get("Pod", "default", "lost", &code));
    assert_int_equal(code, KE_RPC_NOT_FOUND);
    assert_null(get("ConfigMap", "default", "bad", &code));
    assert_int_equal(code, KE_RPC_NOT_FOUND);
}

#define CM(name, v)                                                                             \
    "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"" name "\"},"      \
    "\"data\":{\"v\":\"" v "\"}}"

static void test_pod_reaches_its_node_with_only_its_configmap_and_secret(void **state)
{
    (void)state;
    assert_int_equal(apply(CM("web-config", "one"), NULL, 0), KE_RPC_OK);
    assert_int_equal(apply(CM("unrelated", "x"), NULL, 0), KE_RPC_OK);
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                           "\"web-secret\"},\"data\":{\"pw\":\"c2VjcmV0\"}}",
                           NULL, 0),
                     KE_RPC_OK);
    assert_int_equal(
        apply("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"labels\":"
              "{\"app\":\"web\"}},\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":"
              "\"web\",\"image\":\"nginx\",\"envFrom\":[{\"configMapRef\":{\"name\":"
              "\"web-config\"}}]}],\"volumes\":[{\"name\":\"s\",\"secret\":{\"secretName\":"
              "\"web-secret\"}}]}}",
              NULL, 0),
        KE_RPC_OK);
    assert_int_equal(
        apply("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"db\"},\"spec\":{"
              "\"nodeName\":\"edge-2\",\"containers\":[{\"name\":\"db\",\"image\":\"redis\"}]}}",
              NULL, 0),
        KE_RPC_OK);
    assert_true(wait_edge(&E1, "node/edge-1/default/Pod/web", 1, "nginx"));
    assert_true(wait_edge(&E1, "node/edge-1/default/ConfigMap/web-config", 1, "one"));
    assert_true(wait_edge(&E1, "node/edge-1/default/Secret/web-secret", 1, "c2VjcmV0"));
    assert_true(wait_edge(&E2, "node/edge-2/default/Pod/db", 1, "redis"));
    /* not another node's pod, not an unreferenced ConfigMap */
    assert_false(edge_has(&E1, "node/edge-1/default/Pod/db", NULL, 0));
    assert_false(edge_has(&E1, "node/edge-1/default/ConfigMap/unrelated", NULL, 0));
    assert_false(edge_has(&E2, "node/edge-2/default/ConfigMap/web-config", NULL, 0));
    /* an update of a referenced ConfigMap follows */
    assert_int_equal(apply(CM("web-config", "two"), NULL, 0), KE_RPC_OK);
    assert_true(wait_edge(&E1, "node/edge-1/default/ConfigMap/web-config", 1, "\"two\""));
}

static void test_pod_status_from_the_edge_reaches_the_cloud(void **state)
{
    (void)state;
    assert_int_equal(ke_edge_report(&E1, "node/edge-1/default/Pod/web", 1, "podstatus",
                                    "{\"phase\":\"Running\",\"podIP\":\"10.1.0.7\","
                                    "\"containerStatuses\":[{\"name\":\"web\",\"ready\":true,"
                                    "\"restartCount\":0}]}"),
                     KE_RPC_OK);
    int ok = 0;
    for (int i = 0; i < 300 && !ok; i++) {
        json_t *pod = get("Pod", "default", "web", NULL);
        const char *phase = json_string_value(
            json_object_get(json_object_get(pod, "status"), "phase"));
        ok = phase && strcmp(phase, "Running") == 0;
        json_decref(pod);
        if (!ok)
            pause_ms(100);
    }
    assert_true(ok);
    /* a node cannot report the status of another node's pod */
    assert_int_equal(ke_edge_report(&E2, "node/edge-2/default/Pod/web", 1, "podstatus",
                                    "{\"phase\":\"Failed\"}"),
                     KE_RPC_OK);
    assert_true(wait_edge(&E2, "node/edge-2/default/Pod/db", 1, NULL)); /* a round trip */
    json_t *pod = get("Pod", "default", "web", NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(pod, "status"), "phase")),
                        "Running");
    json_decref(pod);
    /* the node's own report filled its Node object */
    json_t *node = get("Node", "", "edge-1", NULL);
    assert_non_null(json_object_get(json_object_get(node, "status"), "addresses"));
    assert_non_null(json_object_get(json_object_get(node, "status"), "capacity"));
    json_decref(node);
}

static void test_stale_resource_version_is_aborted_and_nothing_changes(void **state)
{
    (void)state;
    char msg[512];
    assert_int_equal(apply(CM("versioned", "a"), NULL, 0), KE_RPC_OK);
    json_t *cm = get("ConfigMap", "default", "versioned", NULL);
    char rv[32];
    snprintf(rv, sizeof(rv), "%s",
             json_string_value(json_object_get(json_object_get(cm, "metadata"), "resourceVersion")));
    json_decref(cm);
    assert_int_equal(apply(CM("versioned", "b"), NULL, 0), KE_RPC_OK); /* moves it on */
    char stale[512];
    snprintf(stale, sizeof(stale),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"versioned\","
             "\"resourceVersion\":\"%s\"},\"data\":{\"v\":\"c\"}}",
             rv);
    assert_int_equal(apply(stale, msg, sizeof(msg)), KE_RPC_ABORTED);
    assert_non_null(strstr(msg, "resourceVersion"));
    cm = get("ConfigMap", "default", "versioned", NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(cm, "data"), "v")), "b");
    json_decref(cm);
}

static void test_an_edge_query_for_its_own_object_is_answered(void **state)
{
    (void)state;
    /* web-config is referenced by edge-1's pod: asking for it sends it again,
     * at a newer transport version. */
    Ke__V1__EdgeListReply *r = ke_edge_list(&E1);
    uint64_t before = 0;
    for (size_t i = 0; r && i < r->n_objects; i++)
        if (strcmp(r->objects[i]->key, "node/edge-1/default/ConfigMap/web-config") == 0)
            before = r->objects[i]->resource_version;
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_true(before > 0);
    assert_int_equal(ke_edge_report_op(&E1, "node/edge-1/default/ConfigMap/web-config", 1,
                                       "resource", KE__V1__OPERATION__OPERATION_QUERY, NULL),
                     KE_RPC_OK);
    uint64_t after = before;
    for (int i = 0; i < 300 && after == before; i++) {
        r = ke_edge_list(&E1);
        for (size_t k = 0; r && k < r->n_objects; k++)
            if (strcmp(r->objects[k]->key, "node/edge-1/default/ConfigMap/web-config") == 0)
                after = r->objects[k]->resource_version;
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (after == before)
            pause_ms(100);
    }
    assert_true(after > before);
    /* a query for what is not the node's is refused (logged) and answers nothing */
    assert_int_equal(ke_edge_report_op(&E1, "node/edge-1/default/ConfigMap/unrelated", 1,
                                       "resource", KE__V1__OPERATION__OPERATION_QUERY, NULL),
                     KE_RPC_OK);
    int refused = 0;
    for (int i = 0; i < 300 && !refused; i++) {
        refused = ke_file_contains(C.cloud_log, "query refused node=edge-1 resource=default/"
                                                "ConfigMap/unrelated");
        if (!refused)
            pause_ms(100);
    }
    assert_true(refused);
    assert_false(edge_has(&E1, "node/edge-1/default/ConfigMap/unrelated", NULL, 0));
}

static void test_deleting_a_pod_removes_it_at_the_edge_then_in_the_cloud(void **state)
{
    (void)state;
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Pod";
    ref.namespace_ = "default";
    ref.name = "web";
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    ke_rpc_stub ec = {C.admin, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&ec, "Delete", &req.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);
    /* graceful: the edge is told first; the pod stays in the cloud until then */
    assert_true(wait_edge(&E1, "node/edge-1/default/Pod/web", 1, "deletionTimestamp"));
    int code = 0;
    json_t *pod = get("Pod", "default", "web", &code);
    assert_non_null(pod);
    json_decref(pod);
    /* Edged's part: the containers are gone, confirm */
    assert_int_equal(ke_edge_report_op(&E1, "node/edge-1/default/Pod/web", 2, "podstatus",
                                       KE__V1__OPERATION__OPERATION_DELETE, NULL),
                     KE_RPC_OK);
    assert_true(wait_edge(&E1, "node/edge-1/default/Pod/web", 0, NULL));
    assert_null(get("Pod", "default", "web", &code));
    assert_int_equal(code, KE_RPC_NOT_FOUND);
    /* what only that pod referenced leaves the node too */
    assert_true(wait_edge(&E1, "node/edge-1/default/ConfigMap/web-config", 0, NULL));
    assert_true(wait_edge(&E1, "node/edge-1/default/Secret/web-secret", 0, NULL));
}

static void test_node_goes_not_ready_when_edgecore_dies_and_ready_when_back(void **state)
{
    (void)state;
    ke_edge_kill(&E2);
    assert_true(wait_ready("edge-2", "False"));
    assert_true(wait_ready("edge-1", "True"));
    ke_edge_start(&C, &E2, "edge-2", C.grpc_port, NULL);
    assert_true(wait_ready("edge-2", "True"));
}

static void test_pod_with_a_node_selector_is_placed_on_a_ready_matching_node(void **state)
{
    (void)state;
    assert_int_equal(
        apply("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"placed\"},"
              "\"spec\":{\"nodeSelector\":{\"kubernetes.io/hostname\":\"edge-2\"},"
              "\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}",
              NULL, 0),
        KE_RPC_OK);
    json_t *pod = get("Pod", "default", "placed", NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(pod, "spec"), "nodeName")),
                        "edge-2");
    json_decref(pod);
    assert_true(wait_edge(&E2, "node/edge-2/default/Pod/placed", 1, "busybox"));
}

typedef struct watch_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, closed, code;
    uint64_t rvs[16];
    int types[16];
} watch_rec;

static void watch_msg(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    pthread_mutex_lock(&w->mu);
    if (w->n < 16) {
        w->rvs[w->n] = ev->resource_version;
        w->types[w->n] = ev->type;
    }
    w->n++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void watch_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    w->code = st->code;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static ke_rpc_call *watch_cms(watch_rec *w, uint64_t from)
{
    static const ke_rpc_handler h = {.on_message = watch_msg, .on_close = watch_close};
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    ke_rpc_stub ec = {C.admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&ec, "Watch", &h, w, NULL, &call), 0);
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "configmaps";
    req.namespace_ = "default";
    req.field_selector = "metadata.name=watched";
    req.resource_version = from;
    assert_int_equal(ke_rpc_call_send(call, &req.base), 0);
    ke_rpc_call_close_send(call);
    return call;
}

static int watch_wait(watch_rec *w, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 15;
    pthread_mutex_lock(&w->mu);
    while (w->n < n && !w->closed && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
    }
    int got = w->n >= n;
    pthread_mutex_unlock(&w->mu);
    return got;
}

static void test_watch_delivers_every_change_after_a_version_in_order(void **state)
{
    (void)state;
    char rv[32];
    assert_int_equal(apply(CM("watched", "0"), NULL, 0), KE_RPC_OK);
    json_t *cm = get("ConfigMap", "default", "watched", NULL);
    snprintf(rv, sizeof(rv), "%s",
             json_string_value(json_object_get(json_object_get(cm, "metadata"), "resourceVersion")));
    json_decref(cm);
    /* changes made before the watch starts, after rv, come from history */
    assert_int_equal(apply(CM("watched", "1"), NULL, 0), KE_RPC_OK);
    assert_int_equal(apply(CM("watched", "2"), NULL, 0), KE_RPC_OK);
    watch_rec w;
    ke_rpc_call *call = watch_cms(&w, strtoull(rv, NULL, 10));
    assert_int_equal(apply(CM("watched", "3"), NULL, 0), KE_RPC_OK);
    assert_true(watch_wait(&w, 3));
    assert_int_equal(w.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(w.types[i], KE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_TYPE_MODIFIED);
    assert_true(w.rvs[0] > strtoull(rv, NULL, 10));
    assert_true(w.rvs[1] > w.rvs[0] && w.rvs[2] > w.rvs[1]);
    ke_rpc_call_cancel(call);
    /* w lives on this stack: wait for the call's last callback */
    pthread_mutex_lock(&w.mu);
    while (!w.closed)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    ke_rpc_call_unref(call);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_refuses_invalid_objects_naming_the_field),
        cmocka_unit_test(test_pod_reaches_its_node_with_only_its_configmap_and_secret),
        cmocka_unit_test(test_pod_status_from_the_edge_reaches_the_cloud),
        cmocka_unit_test(test_stale_resource_version_is_aborted_and_nothing_changes),
        cmocka_unit_test(test_an_edge_query_for_its_own_object_is_answered),
        cmocka_unit_test(test_deleting_a_pod_removes_it_at_the_edge_then_in_the_cloud),
        cmocka_unit_test(test_pod_with_a_node_selector_is_placed_on_a_ready_matching_node),
        cmocka_unit_test(test_watch_delivers_every_change_after_a_version_in_order),
        cmocka_unit_test(test_node_goes_not_ready_when_edgecore_dies_and_ready_when_back),
    };
    return cmocka_run_group_tests_name("controllers", tests, setup, teardown);
}
