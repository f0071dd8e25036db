/*
 * test_logs.c — kectl logs end to end: a real cloudcore process (CloudHub,
 * EdgeController, the authorizer), the real kectl binary, and edgecore's
 * runtime in this process (tests/support/edge) with MetaManager, EdgeHub
 * and a test module serving group "edged" that answers log requests per
 * the bus contract (edge-agent/README.md, "Log streams") from a script:
 * lines "line 1\n".."line 20\n"; in follow mode one more line each time
 * the test asks, until the stream is cancelled, which it records.
 *
 *   (a) a bound pod's log arrives whole and in order; --tail N: the last N
 *   (b) -f streams lines as they are produced; when kectl is stopped the
 *       module gets the DELETE of that very stream
 *   (c) refusals: no RBAC get on pods/log (while get on pods is granted),
 *       a node's certificate, a pod not bound, an unknown pod, an unknown
 *       container or none named among several, a node not connected
 *   (d) the module's error reaches kectl as a clear message, exit 1
 *   (e) a tunnel that goes away ends a follow stream UNAVAILABLE, and the
 *       module is told to stop every stream
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_edgetest.h"
#include "ke_err.h"
#include "ke_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <time.h>

#define NODE "edge-1"
#define FAR "edge-2" /* joined, never connected */
#define SCRIPT_LINES 20
#define FOLLOW_MAX 16

/* ---- the log module (this test's; it stands where Edged will) ---- */

typedef struct follow {
    uint64_t id;
    int next; /* the next line's number */
} follow;

static follow follows[FOLLOW_MAX]; /* loop thread only */
static size_t n_follows;
static atomic_int lm_queries;        /* log requests received */
static atomic_ullong lm_last_query;  /* the stream id of the latest */
static atomic_int lm_cancels;        /* DELETE logs/<id> received */
static atomic_ullong lm_last_cancel; /* the stream id of the latest */
static atomic_int lm_cancel_all;     /* DELETE of every stream received */
static atomic_int lm_follows;        /* follow streams running */
static atomic_int lm_errors;         /* what went wrong on the loop */

static void lm_send(ke_rt *e, uint64_t id, Ke__V1__Operation op, const char *content)
{
    char res[40];
    snprintf(res, sizeof(res), "logs/%" PRIu64, id);
    Ke__V1__Message *m = ke_rt_message_new("logprobe", "", op, res, content, strlen(content));
    if (!m || ke_rt_send_to(e, "edgehub", m) != 0) {
        atomic_fetch_add(&lm_errors, 1);
        if (m)
            ke__v1__message__free_unpacked(m, NULL);
    }
}

static void lm_line(ke_rt *e, uint64_t id, int n)
{
    char line[32];
    snprintf(line, sizeof(line), "line %d\n", n);
    lm_send(e, id, KE__V1__OPERATION__OPERATION_UPLOAD, line);
}

static void lm_query(ke_rt *e, uint64_t id, const Ke__V1__Message *msg)
{
    json_t *q = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    const char *pod = json_string_value(json_object_get(q, "pod"));
    json_int_t tail = json_integer_value(json_object_get(q, "tailLines"));
    int follow_mode = json_is_true(json_object_get(q, "follow"));
    atomic_store(&lm_last_query, id);
    atomic_fetch_add(&lm_queries, 1);
    if (!pod || !json_is_string(json_object_get(q, "container"))) {
        atomic_fetch_add(&lm_errors, 1);
    } else if (strcmp(pod, "broken") == 0) {
        lm_send(e, id, KE__V1__OPERATION__OPERATION_RESPONSE,
                "{\"error\":\"container c not running\"}");
    } else {
        int first = tail > 0 && tail < SCRIPT_LINES ? SCRIPT_LINES - (int)tail + 1 : 1;
        for (int i = first; i <= SCRIPT_LINES; i++)
            lm_line(e, id, i);
        if (!follow_mode) {
            lm_send(e, id, KE__V1__OPERATION__OPERATION_RESPONSE, "{\"eof\":true}");
        } else if (n_follows == FOLLOW_MAX) {
            atomic_fetch_add(&lm_errors, 1);
        } else {
            follows[n_follows].id = id;
            follows[n_follows++].next = SCRIPT_LINES + 1;
            atomic_fetch_add(&lm_follows, 1);
        }
    }
    json_decref(q);
}

static void lm_on_message(ke_module *m, Ke__V1__Message *msg)
{
    ke_rt *e = ke_module_rt(m);
    const char *res = msg->route->resource;
    uint64_t id = 0;
    int one = sscanf(res, "logs/%" SCNu64, &id) == 1;
    if (msg->route->operation == KE__V1__OPERATION__OPERATION_QUERY && one &&
        strcmp(msg->route->source, "edgehub") == 0) {
        lm_query(e, id, msg);
    } else if (msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE &&
               strcmp(res, "logs/*") == 0) {
        n_follows = 0;
        atomic_store(&lm_follows, 0);
        atomic_fetch_add(&lm_cancel_all, 1);
    } else if (msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE && one) {
        for (size_t i = 0; i < n_follows; i++)
            if (follows[i].id == id) {
                follows[i] = follows[--n_follows];
                atomic_fetch_sub(&lm_follows, 1);
                break;
            }
        atomic_store(&lm_last_cancel, id);
        atomic_fetch_add(&lm_cancels, 1);
    } else if (strncmp(res, "node/", 5) != 0) {
        /* changes of the node's pods (MetaManager passes them to group
         * "edged" too) are Edged's business, not this module's */
        atomic_fetch_add(&lm_errors, 1);
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static const ke_module_ops log_module = {
    .name = "logprobe",
    .group = "edged",
    .on_message = lm_on_message,
};

typedef struct produce_arg {
    ke_rt *e;
} produce_arg;

/* produce_on_loop: one more line on every follow stream. */
static void produce_on_loop(void *arg)
{
    produce_arg *p = arg;
    for (size_t i = 0; i < n_follows; i++)
        lm_line(p->e, follows[i].id, follows[i].next++);
}

/* ---- the cluster ---- */

static ke_cluster C;
static ke_edgetest EDGE;
static char KECTL[1024]; /* kectl as the administrator */

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void apply_ok(const char *json)
{
    ke_cluster_apply_ok(&C, json);
}

static void apply_pod(const char *name, const char *node, const char *containers)
{
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"default\"},\"spec\":{%s%s%s\"containers\":[%s]}}",
             name, node ? "\"nodeName\":\"" : "\"nodeSelector\":{\"nowhere\":\"x\"},",
             node ? node : "", node ? "\"," : "", containers);
    apply_ok(json);
}

static int setup(void **state)
{
    (void)state;
    const char *extra[] = {"--edgecontroller.node_grace=1h", NULL};
    ke_cluster_start(&C, extra);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    assert_int_equal(ke_cluster_join(&C, FAR, ke_cluster_token(&C)), 0);
    const char *keadm = ke_tp_env("KE_KEADM");
    assert_int_equal(ke_tp_sh("%s certs user viewer --dir %s/cloud >/dev/null", keadm, C.dir), 0);
    assert_int_equal(ke_tp_sh("%s certs user logger --dir %s/cloud >/dev/null", keadm, C.dir), 0);
    ke_cluster_kectl(&C, KECTL, sizeof(KECTL));

    ke_edgetest_start_node(&EDGE, &C, NODE, "logs.db", &log_module, NULL);

    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"" NODE "\"}}");
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"" FAR "\"}}");
    apply_pod("web", NODE, "{\"name\":\"c\",\"image\":\"busybox\"}");
    apply_pod("multi", NODE,
              "{\"name\":\"a\",\"image\":\"busybox\"},{\"name\":\"b\",\"image\":\"busybox\"}");
    apply_pod("broken", NODE, "{\"name\":\"c\",\"image\":\"busybox\"}");
    apply_pod("far", FAR, "{\"name\":\"c\",\"image\":\"busybox\"}");
    apply_pod("floating", NULL, "{\"name\":\"c\",\"image\":\"busybox\"}");
    /* viewer may get pods but not their logs; logger may get pods/log in
     * namespace default */
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\","
             "\"metadata\":{\"name\":\"pod-reader\"},\"rules\":[{\"apiGroups\":[\"\"],"
             "\"resources\":[\"pods\"],\"verbs\":[\"get\",\"list\"]}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRoleBinding\","
             "\"metadata\":{\"name\":\"viewer-pods\"},\"roleRef\":{\"apiGroup\":"
             "\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"pod-reader\"},"
             "\"subjects\":[{\"kind\":\"User\",\"name\":\"viewer\"}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"Role\",\"metadata\":"
             "{\"name\":\"log-reader\",\"namespace\":\"default\"},\"rules\":[{\"apiGroups\":"
             "[\"\"],\"resources\":[\"pods/log\"],\"verbs\":[\"get\"]}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\","
             "\"metadata\":{\"name\":\"logger-logs\",\"namespace\":\"default\"},\"roleRef\":"
             "{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":"
             "\"log-reader\"},\"subjects\":[{\"kind\":\"User\",\"name\":\"logger\"}]}");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_edgetest_stop(&EDGE);
    ke_cluster_stop(&C);
    return 0;
}

/* expected writes "line from\n".."line to\n" into buf. */
static void expected(char *buf, size_t len, int from, int to)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = from; i <= to && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "line %d\n", i);
}

/* ---- (a) ---- */

static void test_logs_whole_and_tail_in_order(void **state)
{
    (void)state;
    char out[4096], want[4096];
    int q0 = atomic_load(&lm_queries);
    expected(want, sizeof(want), 1, SCRIPT_LINES);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs web", KECTL), 0);
    assert_string_equal(out, want);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs web -c c -n default", KECTL), 0);
    assert_string_equal(out, want);
    expected(want, sizeof(want), SCRIPT_LINES - 2, SCRIPT_LINES);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs pod/web --tail 3", KECTL), 0);
    assert_string_equal(out, want);
    /* one request reached the module per call, and nothing went wrong there */
    assert_int_equal(atomic_load(&lm_queries), q0 + 3);
    assert_int_equal(atomic_load(&lm_errors), 0);
    /* a user granted get on pods/log in the namespace reads it too (RBAC is
     * read from the store by a watch: wait for it to take effect) */
    char kc[200];
    snprintf(kc, sizeof(kc), "%s/cloud/logger.kubeconfig", C.dir);
    expected(want, sizeof(want), SCRIPT_LINES, SCRIPT_LINES);
    int64_t until = ke_time_mono_ms() + 20000;
    int rc;
    while ((rc = ke_tp_capture(out, sizeof(out), "%s/tools/kectl --kubeconfig %s --server "
                                                 "127.0.0.1:%d logs web --tail 1",
                               ke_tp_env("KE_BIN_DIR"), kc, C.grpc_port)) != 0 &&
           ke_time_mono_ms() < until)
        pause_ms(50);
    if (rc != 0)
        fail_msg("logger cannot read the log: %s", out);
    assert_string_equal(out, want);
}

/* ---- (b) ---- */

static void test_logs_follow_streams_and_cancel_reaches_the_edge(void **state)
{
    (void)state;
    char kectl[1100], line[256];
    snprintf(kectl, sizeof(kectl), "%s/tools/kectl", ke_tp_env("KE_BIN_DIR"));
    char port[16], ca[160], crt[160], key[160];
    snprintf(port, sizeof(port), "127.0.0.1:%d", C.grpc_port);
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(crt, sizeof(crt), "%s/cloud/admin.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/admin.key", C.dir);
    char *argv[] = {kectl, "--server", port, "--ca", ca, "--cert", crt, "--key", key,
                    "logs", "web", "-f", "--tail", "2", NULL};
    int cancels0 = atomic_load(&lm_cancels), q0 = atomic_load(&lm_queries);
    ke_tp p;
    assert_int_equal(ke_tp_start(&p, argv), 0);
    /* the tail first, in order */
    assert_int_equal(ke_tp_wait_line(&p, "line", 20000, line, sizeof(line)), 0);
    assert_string_equal(line, "line 19");
    assert_int_equal(ke_tp_wait_line(&p, "line", 20000, line, sizeof(line)), 0);
    assert_string_equal(line, "line 20");
    /* the module has the stream, and nothing more comes until it writes */
    int64_t until = ke_time_mono_ms() + 20000;
    while (atomic_load(&lm_follows) < 1 && ke_time_mono_ms() < until)
        pause_ms(10);
    assert_int_equal(atomic_load(&lm_follows), 1);
    assert_int_equal(atomic_load(&lm_queries), q0 + 1);
    uint64_t id = atomic_load(&lm_last_query);
    produce_arg pa = {EDGE.edge};
    for (int n = SCRIPT_LINES + 1; n <= SCRIPT_LINES + 5; n++) {
        char want[32];
        snprintf(want, sizeof(want), "line %d", n);
        assert_int_equal(ke_rt_call_sync(EDGE.edge, produce_on_loop, &pa), 0);
        assert_int_equal(ke_tp_wait_line(&p, "line", 20000, line, sizeof(line)), 0);
        assert_string_equal(line, want);
    }
    /* kectl stopped (as by Ctrl-C): the call is cancelled, kectl exits 0,
     * and the module is told to stop that very stream */
    int status = ke_tp_stop(&p);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    until = ke_time_mono_ms() + 20000;
    while (atomic_load(&lm_cancels) == cancels0 && ke_time_mono_ms() < until)
        pause_ms(10);
    assert_int_equal(atomic_load(&lm_cancels), cancels0 + 1);
    assert_int_equal(atomic_load(&lm_last_cancel), id);
    assert_int_equal(atomic_load(&lm_follows), 0);
    assert_int_equal(atomic_load(&lm_errors), 0);
}

/* ---- (c) and (d) ---- */

/* logs_call runs EdgeController.Logs on ch to its end: the status, and the
 * bytes received in out (cut at len). */
typedef struct call_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    ke_rpc_status st;
    char *out;
    size_t len, used;
} call_wait;

static void cw_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    call_wait *w = ud;
    const Ke__V1__PodLogChunk *c = (const Ke__V1__PodLogChunk *)m;
    pthread_mutex_lock(&w->mu);
    size_t n = c->data.len < w->len - 1 - w->used ? c->data.len : w->len - 1 - w->used;
    memcpy(w->out + w->used, c->data.data, n);
    w->used += n;
    w->out[w->used] = '\0';
    pthread_mutex_unlock(&w->mu);
}

static void cw_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    call_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    w->st = *st;
    w->done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* logs_start starts EdgeController.Logs on ch; logs_wait waits for its end:
 * the status, and the bytes received in w->out (cut at len). */
static ke_rpc_call *logs_start(call_wait *w, ke_rpc_channel *ch, const char *pod,
                               const char *container, int follow, char *out, size_t len)
{
    static const ke_rpc_handler h = {.on_message = cw_message, .on_close = cw_close};
    memset(w, 0, sizeof(*w));
    w->out = out;
    w->len = len;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    out[0] = '\0';
    ke_rpc_stub stub = {ch, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = follow ? 0 : 20000};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&stub, "Logs", &h, w, &o, &call), 0);
    Ke__V1__PodLogRequest req = KE__V1__POD_LOG_REQUEST__INIT;
    req.pod = (char *)pod;
    req.container = (char *)container;
    req.follow = follow;
    assert_int_equal(ke_rpc_call_send(call, &req.base), 0);
    /* the server may have answered (an error) already: the call is over */
    int rc = ke_rpc_call_close_send(call);
    assert_true(rc == 0 || rc == KE_ECLOSED);
    return call;
}

static int logs_wait(call_wait *w, ke_rpc_call *call, ke_rpc_status *st)
{
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    ke_rpc_call_unref(call);
    *st = w->st;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    return st->code;
}

static int logs_call(ke_rpc_channel *ch, const char *pod, const char *container, char *out,
                     size_t len, ke_rpc_status *st)
{
    call_wait w;
    ke_rpc_call *call = logs_start(&w, ch, pod, container, 0, out, len);
    return logs_wait(&w, call, st);
}

static ke_rpc_channel *channel(const char *cert, const char *key)
{
    return ke_cluster_channel(&C, cert, key);
}

static void test_logs_refusals(void **state)
{
    (void)state;
    char out[4096];
    ke_rpc_status st;
    int q0 = atomic_load(&lm_queries);

    /* the API: status codes and messages */
    assert_int_equal(logs_call(C.api, "nosuch", "", out, sizeof(out), &st), KE_RPC_NOT_FOUND);
    assert_non_null(strstr(st.message, "pods \"nosuch\" not found"));
    assert_int_equal(logs_call(C.api, "floating", "", out, sizeof(out), &st),
                     KE_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "pod floating is not bound to a node"));
    assert_int_equal(logs_call(C.api, "web", "nope", out, sizeof(out), &st),
                     KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "container nope is not valid for pod web"));
    assert_int_equal(logs_call(C.api, "multi", "", out, sizeof(out), &st),
                     KE_RPC_INVALID_ARGUMENT);
    assert_string_equal(st.message, "container: a container name must be specified for pod "
                                    "multi, choose one of: [a b]");
    assert_int_equal(logs_call(C.api, "far", "", out, sizeof(out), &st), KE_RPC_UNAVAILABLE);
    assert_non_null(strstr(st.message, "node " FAR " is not connected"));
    assert_int_equal(logs_call(C.api, "multi", "b", out, sizeof(out), &st), KE_RPC_OK);
    assert_int_equal(strncmp(out, "line 1\nline 2\n", 14), 0);

    /* a node's certificate: never (even for a pod bound to it) */
    char crt[160], key[160];
    snprintf(crt, sizeof(crt), "%s/%s/node.crt", C.dir, NODE);
    snprintf(key, sizeof(key), "%s/%s/node.key", C.dir, NODE);
    ke_rpc_channel *node = channel(crt, key);
    assert_int_equal(logs_call(node, "web", "", out, sizeof(out), &st),
                     KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(st.message, "pods/log"));
    ke_rpc_channel_free(node);

    /* a user with get on pods but not on pods/log */
    snprintf(crt, sizeof(crt), "%s/cloud/viewer.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/viewer.key", C.dir);
    ke_rpc_channel *viewer = channel(crt, key);
    json_t *pod = ke_ec_get(viewer, "Pod", "default", "web", &st);
    assert_non_null(pod);
    json_decref(pod);
    assert_int_equal(logs_call(viewer, "web", "", out, sizeof(out), &st),
                     KE_RPC_PERMISSION_DENIED);
    assert_string_equal(st.message, "user \"viewer\" (groups: none) cannot get pods/log in "
                                    "namespace \"default\" (name \"web\")");
    ke_rpc_channel_free(viewer);
    /* only the allowed call reached the edge */
    assert_int_equal(atomic_load(&lm_queries), q0 + 1);

    /* kectl: the server's message, exit 1 */
    char kc[200];
    snprintf(kc, sizeof(kc), "%s/cloud/viewer.kubeconfig", C.dir);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s/tools/kectl --kubeconfig %s --server "
                                                     "127.0.0.1:%d logs web",
                                   ke_tp_env("KE_BIN_DIR"), kc, C.grpc_port),
                     1);
    assert_non_null(strstr(out, "Error from server (Forbidden): user \"viewer\""));
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs nosuch", KECTL), 1);
    assert_string_equal(out, "Error from server (NotFound): pods \"nosuch\" not found\n");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs multi", KECTL), 1);
    assert_non_null(strstr(out, "a container name must be specified for pod multi, choose one "
                                "of: [a b]"));
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs far", KECTL), 1);
    assert_string_equal(out, "Error from server (ServiceUnavailable): node " FAR
                             " is not connected\n");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs floating", KECTL), 1);
    assert_non_null(strstr(out, "pod floating is not bound to a node"));
}

static void test_logs_edge_error_reaches_kectl(void **state)
{
    (void)state;
    char out[4096];
    ke_rpc_status st;
    assert_int_equal(logs_call(C.api, "broken", "", out, sizeof(out), &st),
                     KE_RPC_FAILED_PRECONDITION);
    assert_string_equal(st.message, "node " NODE ": container c not running");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s logs broken", KECTL), 1);
    assert_string_equal(out, "Error from server (Conflict): node " NODE
                             ": container c not running\n");
}

/* kubectl logs through the Kubernetes API gateway: the same stream, the
 * same refusals, as Status objects kubectl prints. */
static void test_logs_through_kubectl(void **state)
{
    (void)state;
    const char *kubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
    if (access(kubectl, X_OK) != 0 || C.kubeapi_port == 0) {
        skip();
        return;
    }
    char kc[600], out[4096], want[4096];
    snprintf(kc, sizeof(kc),
             "HOME=%s %s --server https://127.0.0.1:%d --certificate-authority %s/cloud/ca.crt",
             C.dir, kubectl, C.kubeapi_port, C.dir);
    int q0 = atomic_load(&lm_queries);
    expected(want, sizeof(want), 1, SCRIPT_LINES);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --client-certificate %s/cloud/admin.crt "
                                                     "--client-key %s/cloud/admin.key logs web",
                                   kc, C.dir, C.dir),
                     0);
    assert_string_equal(out, want);
    expected(want, sizeof(want), SCRIPT_LINES - 4, SCRIPT_LINES);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --client-certificate %s/cloud/admin.crt "
                                                     "--client-key %s/cloud/admin.key logs web "
                                                     "-c c --tail=5",
                                   kc, C.dir, C.dir),
                     0);
    assert_string_equal(out, want);
    assert_int_equal(atomic_load(&lm_queries), q0 + 2);
    /* the edge's refusal and a node not connected: their status, exit 1 */
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --client-certificate %s/cloud/admin.crt "
                                                     "--client-key %s/cloud/admin.key logs broken",
                                   kc, C.dir, C.dir),
                     1);
    assert_string_equal(out, "Error from server (BadRequest): node " NODE
                             ": container c not running\n");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --client-certificate %s/cloud/admin.crt "
                                                     "--client-key %s/cloud/admin.key logs far",
                                   kc, C.dir, C.dir),
                     1);
    assert_string_equal(out, "Error from server (ServiceUnavailable): node " FAR
                             " is not connected\n");
    /* viewer may get the pod but not its log: 403, nothing reaches the edge */
    int q1 = atomic_load(&lm_queries);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --client-certificate %s/cloud/viewer.crt "
                                                     "--client-key %s/cloud/viewer.key logs web",
                                   kc, C.dir, C.dir),
                     1);
    assert_non_null(strstr(out, "Error from server (Forbidden)"));
    assert_non_null(strstr(out, "cannot get pods/log"));
    assert_int_equal(atomic_load(&lm_queries), q1);
}

/* Last (it removes the node): a follow stream whose tunnel goes away ends
 * UNAVAILABLE at the caller, and the edge stops every stream. */
static void test_logs_tunnel_gone_ends_the_stream(void **state)
{
    (void)state;
    char out[4096];
    ke_rpc_status st;
    int all0 = atomic_load(&lm_cancel_all);
    call_wait w;
    ke_rpc_call *call = logs_start(&w, C.api, "web", "", 1, out, sizeof(out));
    int64_t until = ke_time_mono_ms() + 20000;
    while (atomic_load(&lm_follows) < 1 && ke_time_mono_ms() < until)
        pause_ms(10);
    assert_int_equal(atomic_load(&lm_follows), 1);
    /* what the edge sent first has reached the caller before the tunnel goes */
    for (int got = 0; !got;) {
        pthread_mutex_lock(&w.mu);
        got = strstr(out, "line 20\n") != NULL;
        pthread_mutex_unlock(&w.mu);
        assert_true(got || ke_time_mono_ms() < until);
        if (!got)
            pause_ms(10);
    }
    Ke__V1__RemoveNodeRequest rm = KE__V1__REMOVE_NODE_REQUEST__INIT;
    rm.node_name = NODE;
    ke_rpc_stub hub = {C.admin, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_stub_unary(&hub, "RemoveNode", &rm.base, &o, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);
    assert_int_equal(logs_wait(&w, call, &st), KE_RPC_UNAVAILABLE);
    assert_non_null(strstr(st.message, "node " NODE " is not connected"));
    assert_non_null(strstr(out, "line 20\n"));
    until = ke_time_mono_ms() + 20000;
    while (atomic_load(&lm_cancel_all) == all0 && ke_time_mono_ms() < until)
        pause_ms(10);
    assert_true(atomic_load(&lm_cancel_all) > all0);
    assert_int_equal(atomic_load(&lm_follows), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logs_whole_and_tail_in_order),
        cmocka_unit_test(test_logs_follow_streams_and_cancel_reaches_the_edge),
        cmocka_unit_test(test_logs_refusals),
        cmocka_unit_test(test_logs_edge_error_reaches_kectl),
        cmocka_unit_test(test_logs_through_kubectl),
        cmocka_unit_test(test_logs_tunnel_gone_ends_the_stream),
    };
    return cmocka_run_group_tests_name("logs", tests, setup, teardown);
}
