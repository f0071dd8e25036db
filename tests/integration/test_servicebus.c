/*
 * test_servicebus.c — ServiceBus end to end: a real cloudcore process
 * (CloudHub, EdgeController, the authorizer), edgecore's runtime in this
 * process (tests/support/edge) with MetaManager, EdgeHub and the real
 * ServiceBus module, and a test HTTP service on loopback (libmicrohttpd,
 * a thread per connection) standing for an application on the edge host:
 *
 *   /echo   200, body "echo:<method>:<request body>", headers X-Echo (the
 *           request's X-Test) and X-Query (the query's q)
 *   /fail   503 "backend down"
 *   /slow   answers only when the test releases it (a timeout's target)
 *   /big    200 with a 2 MiB body (past the response bound)
 *
 * modules.servicebus.allow lists the service and a port where nothing
 * listens (a bound socket that never listens: connections are refused).
 *
 *   (a) a call reaches the service and returns its status, headers, body
 *   (b) an HTTP error is a response (503 with its body, RPC OK)
 *   (c) a timeout is DEADLINE_EXCEEDED; a refused target UNAVAILABLE with
 *       curl's reason; a body past 1 MiB RESOURCE_EXHAUSTED
 *   (d) a target not in the allow list is PERMISSION_DENIED, and the
 *       service sees no request
 *   (e) refusals in the cloud: a request body past 1 MiB, a bad header, an
 *       unknown node, a node not connected, a node's certificate, a user
 *       without RBAC create on nodes/proxy (while one with it succeeds)
 *   (f) kectl call: the response (with -i its status and headers), the
 *       server's refusal as kectl's message with exit 1, --fail
 *   (g) a tunnel that goes away ends a call in flight UNAVAILABLE
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
#include "servicebus.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NODE "edge-1"
#define FAR "edge-2" /* joined, never connected */
#define BIG_BODY (2u << 20)

/* ---- the service on the edge host ---- */

static struct MHD_Daemon *HTTPD;
static int SVC_PORT;    /* the service */
static int CLOSED_PORT; /* bound, never listening: refused */
static int CLOSED_FD = -1;
static atomic_int svc_requests; /* requests the service has seen */
static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cv; /* on the monotonic clock (ke_time_cond_init) */
static int slow_waiting; /* /slow requests waiting to be released */
static unsigned slow_gen; /* released up to */
static char *big_body;

typedef struct upload {
    char *data;
    size_t len;
} upload;

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *body,
                               size_t len, const char *const *headers)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    for (size_t i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(r, headers[i], headers[i + 1]);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* slow_wait holds a /slow request until the test releases it (at most 30 s). */
static void slow_wait(void)
{
    pthread_mutex_lock(&slow_mu);
    unsigned gen = slow_gen;
    slow_waiting++;
    pthread_cond_broadcast(&slow_cv);
    struct timespec until = ke_time_deadline(30000);
    while (slow_gen == gen && pthread_cond_timedwait(&slow_cv, &slow_mu, &until) == 0)
        ;
    slow_waiting--;
    pthread_mutex_unlock(&slow_mu);
}

static void slow_release(void)
{
    pthread_mutex_lock(&slow_mu);
    slow_gen++;
    pthread_cond_broadcast(&slow_cv);
    pthread_mutex_unlock(&slow_mu);
}

static enum MHD_Result svc_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version,
                                   const char *data, size_t *data_len, void **state)
{
    (void)cls;
    (void)version;
    upload *u = *state;
    if (!u) {
        u = calloc(1, sizeof(*u));
        *state = u;
        atomic_fetch_add(&svc_requests, 1);
        return MHD_YES;
    }
    if (*data_len) {
        char *grown = realloc(u->data, u->len + *data_len + 1);
        if (!grown)
            return MHD_NO;
        u->data = grown;
        memcpy(u->data + u->len, data, *data_len);
        u->len += *data_len;
        u->data[u->len] = '\0';
        *data_len = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/echo") == 0) {
        char body[1100];
        int n = u->len <= 1000 ? snprintf(body, sizeof(body), "echo:%s:%.*s", method,
                                          (int)u->len, u->data ? u->data : "")
                               : snprintf(body, sizeof(body), "echo:%s:<%zu bytes>", method,
                                          u->len);
        const char *xt = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Test");
        const char *q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "q");
        const char *h[] = {"X-Echo", xt ? xt : "-", "X-Query", q ? q : "-", NULL};
        return respond(conn, 200, body, (size_t)n, h);
    }
    if (strcmp(url, "/fail") == 0)
        return respond(conn, 503, "backend down", 12, NULL);
    if (strcmp(url, "/slow") == 0) {
        slow_wait();
        return respond(conn, 200, "late", 4, NULL);
    }
    if (strcmp(url, "/big") == 0)
        return respond(conn, 200, big_body, BIG_BODY, NULL);
    return respond(conn, 404, "no such path", 12, NULL);
}

static void svc_done(void *cls, struct MHD_Connection *conn, void **state,
                     enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)conn;
    (void)why;
    upload *u = *state;
    if (u) {
        free(u->data);
        free(u);
    }
    *state = NULL;
}

static void svc_start(void)
{
    big_body = malloc(BIG_BODY);
    assert_non_null(big_body);
    memset(big_body, 'x', BIG_BODY);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    HTTPD = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                 MHD_USE_ERROR_LOG,
                             0, NULL, NULL, svc_handler, NULL, MHD_OPTION_SOCK_ADDR, &a,
                             MHD_OPTION_NOTIFY_COMPLETED, svc_done, NULL, MHD_OPTION_END);
    assert_non_null(HTTPD);
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(HTTPD, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(i);
    SVC_PORT = i->port;
    /* a port that refuses: bound (so no one else takes it), never listening */
    CLOSED_FD = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(CLOSED_FD >= 0);
    assert_int_equal(bind(CLOSED_FD, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(CLOSED_FD, (struct sockaddr *)&a, &len), 0);
    CLOSED_PORT = ntohs(a.sin_port);
}

/* ---- the cluster ---- */

static ke_cluster C;
static ke_edgetest EDGE;
static char KECTL[1024]; /* kectl as the administrator */
static char ALLOW[128];
static servicebus_config SBC;

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void apply_ok(const char *json)
{
    ke_cluster_apply_ok(&C, json);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(ke_time_cond_init(&slow_cv), 0);
    svc_start();
    const char *extra[] = {"--edgecontroller.node_grace=1h", NULL};
    ke_cluster_start(&C, extra);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    assert_int_equal(ke_cluster_join(&C, FAR, ke_cluster_token(&C)), 0);
    ke_cluster_kectl(&C, KECTL, sizeof(KECTL));
    const char *keadm = ke_tp_env("KE_KEADM");
    assert_int_equal(ke_tp_sh("%s certs user viewer --dir %s/cloud >/dev/null", keadm, C.dir), 0);
    assert_int_equal(ke_tp_sh("%s certs user prober --dir %s/cloud >/dev/null", keadm, C.dir), 0);

    snprintf(ALLOW, sizeof(ALLOW), "127.0.0.1:%d, 127.0.0.1:%d", SVC_PORT, CLOSED_PORT);
    SBC = (servicebus_config){.node_name = NODE, .allow = ALLOW};
    ke_edgetest_start_node(&EDGE, &C, NODE, "servicebus.db", &servicebus_module, &SBC);

    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"" NODE "\"}}");
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"" FAR "\"}}");
    /* viewer may get and create nodes but not nodes/proxy; prober may
     * create nodes/proxy */
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\","
             "\"metadata\":{\"name\":\"node-admin\"},\"rules\":[{\"apiGroups\":[\"\"],"
             "\"resources\":[\"nodes\"],\"verbs\":[\"get\",\"create\"]}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRoleBinding\","
             "\"metadata\":{\"name\":\"viewer-nodes\"},\"roleRef\":{\"apiGroup\":"
             "\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"node-admin\"},"
             "\"subjects\":[{\"kind\":\"User\",\"name\":\"viewer\"}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\","
             "\"metadata\":{\"name\":\"node-proxier\"},\"rules\":[{\"apiGroups\":[\"\"],"
             "\"resources\":[\"nodes/proxy\"],\"verbs\":[\"create\"]}]}");
    apply_ok("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRoleBinding\","
             "\"metadata\":{\"name\":\"prober-proxy\"},\"roleRef\":{\"apiGroup\":"
             "\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"node-proxier\"},"
             "\"subjects\":[{\"kind\":\"User\",\"name\":\"prober\"}]}");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    slow_release();
    ke_edgetest_stop(&EDGE);
    ke_cluster_stop(&C);
    MHD_stop_daemon(HTTPD);
    close(CLOSED_FD);
    free(big_body);
    return 0;
}

/* ---- calls ---- */

typedef struct http_req {
    const char *node, *target, *method, *path, *body;
    size_t body_len;
    const char *const *headers; /* name, value, ..., NULL */
    int64_t timeout_ms;
} http_req;

typedef struct http_resp {
    ke_rpc_status st;
    int status;
    char body[4096];
    size_t body_len;
    char headers[1024]; /* "Name: value\n" ... */
} http_resp;

static void fill(Ke__V1__NodeHTTPRequest *r, Ke__V1__HTTPHeader *hs, Ke__V1__HTTPHeader **hp,
                 const http_req *q)
{
    ke__v1__node_httprequest__init(r);
    r->node_name = (char *)(q->node ? q->node : NODE);
    r->target = (char *)q->target;
    r->method = (char *)(q->method ? q->method : "");
    r->path = (char *)(q->path ? q->path : "");
    r->body.data = (uint8_t *)q->body;
    r->body.len = q->body ? (q->body_len ? q->body_len : strlen(q->body)) : 0;
    r->timeout_ms = q->timeout_ms;
    size_t n = 0;
    for (; q->headers && q->headers[2 * n]; n++) {
        ke__v1__httpheader__init(&hs[n]);
        hs[n].name = (char *)q->headers[2 * n];
        hs[n].value = (char *)q->headers[2 * n + 1];
        hp[n] = &hs[n];
    }
    r->n_headers = n;
    r->headers = hp;
}

static void take(http_resp *out, const Ke__V1__NodeHTTPResponse *r)
{
    out->status = r->status;
    out->body_len = r->body.len;
    snprintf(out->body, sizeof(out->body), "%.*s", (int)r->body.len, (const char *)r->body.data);
    size_t used = 0;
    for (size_t i = 0; i < r->n_headers && used < sizeof(out->headers); i++)
        used += (size_t)snprintf(out->headers + used, sizeof(out->headers) - used, "%s: %s\n",
                                 r->headers[i]->name, r->headers[i]->value);
}

/* proxy calls EdgeController.ProxyHTTP on ch; returns the status code. */
static int proxy(ke_rpc_channel *ch, const http_req *q, http_resp *out)
{
    Ke__V1__NodeHTTPRequest r;
    Ke__V1__HTTPHeader hs[8];
    Ke__V1__HTTPHeader *hp[8];
    fill(&r, hs, hp, q);
    memset(out, 0, sizeof(*out));
    ke_rpc_stub stub = {ch, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 60000};
    ProtobufCMessage *reply = NULL;
    assert_int_equal(ke_rpc_stub_unary(&stub, "ProxyHTTP", &r.base, &o, &reply, &out->st), 0);
    if (out->st.code == KE_RPC_OK) {
        assert_non_null(reply);
        take(out, (const Ke__V1__NodeHTTPResponse *)reply);
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return out->st.code;
}

static ke_rpc_channel *channel(const char *cert, const char *key)
{
    return ke_cluster_channel(&C, cert, key);
}

static const char *svc(void)
{
    static char t[32];
    snprintf(t, sizeof(t), "127.0.0.1:%d", SVC_PORT);
    return t;
}

/* ---- (a) and (b) ---- */

static void test_servicebus_call_reaches_the_service(void **state)
{
    (void)state;
    http_resp out;
    const char *hdrs[] = {"X-Test", "hello there", "Content-Type", "text/plain", NULL};
    int n0 = atomic_load(&svc_requests);
    http_req q = {.target = svc(), .method = "POST", .path = "/echo?q=42", .body = "ping",
                  .headers = hdrs, .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_OK);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.body, "echo:POST:ping");
    assert_non_null(strstr(out.headers, "X-Echo: hello there\n"));
    assert_non_null(strstr(out.headers, "X-Query: 42\n"));
    assert_non_null(strstr(out.headers, "Content-Length: 14\n"));
    /* defaults: GET, no body, the default timeout */
    http_req g = {.target = svc(), .path = "/echo"};
    assert_int_equal(proxy(C.api, &g, &out), KE_RPC_OK);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.body, "echo:GET:");
    assert_non_null(strstr(out.headers, "X-Echo: -\n"));
    assert_int_equal(atomic_load(&svc_requests), n0 + 2);
}

static void test_servicebus_http_error_is_a_response(void **state)
{
    (void)state;
    http_resp out;
    http_req q = {.target = svc(), .path = "/fail", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_OK);
    assert_int_equal(out.status, 503);
    assert_string_equal(out.body, "backend down");
    http_req nf = {.target = svc(), .path = "/nowhere", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &nf, &out), KE_RPC_OK);
    assert_int_equal(out.status, 404);
    assert_string_equal(out.body, "no such path");
}

/* ---- (c) ---- */

static void test_servicebus_timeout_is_deadline_exceeded(void **state)
{
    (void)state;
    http_resp out;
    http_req q = {.target = svc(), .path = "/slow", .timeout_ms = 300};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_DEADLINE_EXCEEDED);
    char want[96];
    snprintf(want, sizeof(want), "node " NODE ": %s did not answer within 300 ms", svc());
    assert_string_equal(out.st.message, want);
    slow_release();
}

static void test_servicebus_refused_target_is_unavailable(void **state)
{
    (void)state;
    http_resp out;
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", CLOSED_PORT);
    http_req q = {.target = target, .path = "/", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_UNAVAILABLE);
    char want[96];
    snprintf(want, sizeof(want), "node " NODE ": %s: ", target);
    assert_int_equal(strncmp(out.st.message, want, strlen(want)), 0);
    assert_non_null(strstr(out.st.message, "onnect")); /* curl: "Failed to connect ..." */
}

static void test_servicebus_response_past_its_bound(void **state)
{
    (void)state;
    http_resp out;
    http_req q = {.target = svc(), .path = "/big", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(out.st.message, "has a body larger than 1048576 bytes"));
}

/* ---- (d) ---- */

static void test_servicebus_target_not_allowed(void **state)
{
    (void)state;
    http_resp out;
    char target[32];
    snprintf(target, sizeof(target), "localhost:%d", SVC_PORT); /* the service, by another name */
    int n0 = atomic_load(&svc_requests);
    http_req q = {.target = target, .path = "/echo", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_PERMISSION_DENIED);
    char want[160];
    snprintf(want, sizeof(want),
             "node " NODE ": target %s is not in modules.servicebus.allow of node " NODE, target);
    assert_string_equal(out.st.message, want);
    http_req other = {.target = "127.0.0.1:1", .path = "/", .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &other, &out), KE_RPC_PERMISSION_DENIED);
    /* the answer came after the check, and nothing was sent: the service
     * saw no request */
    assert_int_equal(atomic_load(&svc_requests), n0);
}

/* ---- (e) ---- */

static void test_servicebus_refusals(void **state)
{
    (void)state;
    http_resp out;
    int n0 = atomic_load(&svc_requests);

    /* the request's bounds, in the cloud */
    char *big = malloc((1u << 20) + 1);
    assert_non_null(big);
    memset(big, 'b', (1u << 20) + 1);
    http_req q = {.target = svc(), .method = "POST", .path = "/echo", .body = big,
                  .body_len = (1u << 20) + 1, .timeout_ms = 10000};
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_INVALID_ARGUMENT);
    assert_string_equal(out.st.message, "body: at most 1048576 bytes (1048577 given)");
    q.body_len = 1u << 20; /* exactly the bound: accepted */
    assert_int_equal(proxy(C.api, &q, &out), KE_RPC_OK);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.body, "echo:POST:<1048576 bytes>");
    free(big);
    const char *bad[] = {"X-Bad", "a\r\nInjected: yes", NULL};
    http_req h = {.target = svc(), .path = "/echo", .headers = bad};
    assert_int_equal(proxy(C.api, &h, &out), KE_RPC_INVALID_ARGUMENT);
    assert_string_equal(out.st.message, "headers[0].value: control characters are not allowed");
    http_req p = {.target = svc(), .path = "no-slash"};
    assert_int_equal(proxy(C.api, &p, &out), KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(out.st.message, "path: must start with \"/\""));
    http_req t = {.target = "127.0.0.1", .path = "/"};
    assert_int_equal(proxy(C.api, &t, &out), KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(out.st.message, "must be host:port"));

    /* nodes: unknown, not connected */
    http_req u = {.node = "nosuch", .target = svc(), .path = "/echo"};
    assert_int_equal(proxy(C.api, &u, &out), KE_RPC_NOT_FOUND);
    assert_string_equal(out.st.message, "nodes \"nosuch\" not found");
    http_req f = {.node = FAR, .target = svc(), .path = "/echo"};
    assert_int_equal(proxy(C.api, &f, &out), KE_RPC_UNAVAILABLE);
    assert_string_equal(out.st.message, "node " FAR " is not connected");

    /* a node's certificate: never (not even to itself) */
    char crt[160], key[160];
    snprintf(crt, sizeof(crt), "%s/%s/node.crt", C.dir, NODE);
    snprintf(key, sizeof(key), "%s/%s/node.key", C.dir, NODE);
    ke_rpc_channel *node = channel(crt, key);
    http_req e = {.target = svc(), .path = "/echo"};
    assert_int_equal(proxy(node, &e, &out), KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(out.st.message, "nodes/proxy"));
    ke_rpc_channel_free(node);

    /* a user with create on nodes but not on nodes/proxy */
    snprintf(crt, sizeof(crt), "%s/cloud/viewer.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/viewer.key", C.dir);
    ke_rpc_channel *viewer = channel(crt, key);
    assert_int_equal(proxy(viewer, &e, &out), KE_RPC_PERMISSION_DENIED);
    assert_string_equal(out.st.message, "user \"viewer\" (groups: none) cannot create "
                                        "nodes/proxy at the cluster scope (name \"" NODE "\")");
    ke_rpc_channel_free(viewer);
    /* nothing so far reached the service but the one allowed call */
    assert_int_equal(atomic_load(&svc_requests), n0 + 1);

    /* a user granted create on nodes/proxy (RBAC is read from the store by
     * a watch: wait for it to take effect) */
    snprintf(crt, sizeof(crt), "%s/cloud/prober.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/prober.key", C.dir);
    ke_rpc_channel *prober = channel(crt, key);
    int64_t until = ke_time_mono_ms() + 20000;
    int code;
    while ((code = proxy(prober, &e, &out)) == KE_RPC_PERMISSION_DENIED &&
           ke_time_mono_ms() < until)
        pause_ms(50);
    assert_int_equal(code, KE_RPC_OK);
    assert_int_equal(out.status, 200);
    assert_string_equal(out.body, "echo:GET:");
    ke_rpc_channel_free(prober);
}

/* ---- (f) ---- */

static void test_servicebus_kectl_call(void **state)
{
    (void)state;
    char out[4096], want[256];
    assert_int_equal(ke_tp_capture(out, sizeof(out),
                                   "%s call " NODE " 'http://127.0.0.1:%d/echo?q=7' -X PUT "
                                   "-H 'X-Test: from kectl' -d hi -i",
                                   KECTL, SVC_PORT),
                     0);
    assert_int_equal(strncmp(out, "HTTP/1.1 200\r\n", 14), 0);
    assert_non_null(strstr(out, "X-Echo: from kectl\r\n"));
    assert_non_null(strstr(out, "X-Query: 7\r\n"));
    assert_non_null(strstr(out, "\r\n\r\necho:PUT:hi"));
    /* -d alone is a POST; the body only without -i */
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s call " NODE " http://127.0.0.1:%d/echo "
                                                     "-d abc",
                                   KECTL, SVC_PORT),
                     0);
    assert_string_equal(out, "echo:POST:abc");
    /* an HTTP error is a response: exit 0, or 1 with --fail */
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s call " NODE " http://127.0.0.1:%d/fail",
                                   KECTL, SVC_PORT),
                     0);
    assert_string_equal(out, "backend down");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s call " NODE
                                                     " http://127.0.0.1:%d/fail --fail",
                                   KECTL, SVC_PORT),
                     1);
    assert_string_equal(out, "backend downerror: the service answered 503\n");
    /* the server's refusal, as kubectl says it */
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s call " NODE " http://localhost:%d/echo",
                                   KECTL, SVC_PORT),
                     1);
    snprintf(want, sizeof(want),
             "Error from server (Forbidden): node " NODE ": target localhost:%d is not in "
             "modules.servicebus.allow of node " NODE "\n",
             SVC_PORT);
    assert_string_equal(out, want);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s call " NODE " ftp://127.0.0.1:%d/",
                                   KECTL, SVC_PORT),
                     2);
    assert_non_null(strstr(out, "URL must start with http://"));
}

/* ---- (g) ---- */

typedef struct async_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    ke_rpc_status st;
} async_wait;

static void async_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    (void)reply;
    async_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    w->st = *st;
    w->done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Last (it removes the node): a call in flight when the tunnel goes away
 * ends UNAVAILABLE. */
static void test_servicebus_tunnel_gone_ends_the_call(void **state)
{
    (void)state;
    async_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(ke_time_cond_init(&w.cv), 0);
    Ke__V1__NodeHTTPRequest r;
    Ke__V1__HTTPHeader hs[1];
    Ke__V1__HTTPHeader *hp[1];
    http_req q = {.target = svc(), .path = "/slow", .timeout_ms = 60000};
    fill(&r, hs, hp, &q);
    ke_rpc_call_opts o = {.timeout_ms = 60000};
    assert_int_equal(ke_rpc_unary_async(C.api, "/ke.v1.EdgeController/ProxyHTTP", &r.base,
                                        &ke__v1__node_httpresponse__descriptor, &o, async_done,
                                        &w),
                     0);
    /* the request has reached the service: it is in flight on the edge */
    pthread_mutex_lock(&slow_mu);
    struct timespec until = ke_time_deadline(20000);
    while (slow_waiting == 0 && pthread_cond_timedwait(&slow_cv, &slow_mu, &until) == 0)
        ;
    int waiting = slow_waiting;
    pthread_mutex_unlock(&slow_mu);
    assert_int_equal(waiting, 1);
    Ke__V1__RemoveNodeRequest rm = KE__V1__REMOVE_NODE_REQUEST__INIT;
    rm.node_name = NODE;
    ke_rpc_stub hub = {C.admin, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts ro = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_stub_unary(&hub, "RemoveNode", &rm.base, &ro, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);
    pthread_mutex_lock(&w.mu);
    until = ke_time_deadline(20000);
    while (!w.done && pthread_cond_timedwait(&w.cv, &w.mu, &until) == 0)
        ;
    int done = w.done;
    pthread_mutex_unlock(&w.mu);
    assert_true(done);
    assert_int_equal(w.st.code, KE_RPC_UNAVAILABLE);
    assert_non_null(strstr(w.st.message, "node " NODE " is not connected"));
    slow_release();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_servicebus_call_reaches_the_service),
        cmocka_unit_test(test_servicebus_http_error_is_a_response),
        cmocka_unit_test(test_servicebus_timeout_is_deadline_exceeded),
        cmocka_unit_test(test_servicebus_refused_target_is_unavailable),
        cmocka_unit_test(test_servicebus_response_past_its_bound),
        cmocka_unit_test(test_servicebus_target_not_allowed),
        cmocka_unit_test(test_servicebus_refusals),
        cmocka_unit_test(test_servicebus_kectl_call),
        cmocka_unit_test(test_servicebus_tunnel_gone_ends_the_call),
    };
    return cmocka_run_group_tests_name("servicebus", tests, setup, teardown);
}
