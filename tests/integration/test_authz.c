/*
 * test_authz.c — every method of every cloud service against every kind of
 * caller, on a real cloudcore set up by keadm (docs/security.md):
 *
 *   admin    keadm init's admin.crt (system:masters)
 *   viewer   keadm certs user viewer, bound by a ClusterRoleBinding to a
 *            ClusterRole of get/list/watch on everything
 *   dev      keadm certs user dev --group dev, the group bound by a
 *            RoleBinding in namespace "team" to a ClusterRole of everything
 *   edge-1   a joined node's certificate (system:node:edge-1)
 *   edge-2   another joined node's
 *   nocert   TLS without a client certificate
 *   otherca  a user certificate from another cluster's CA
 *
 * Each row is one call; each column says whether the authorizer lets it
 * through (the handler may then still refuse: NOT_FOUND, INVALID_ARGUMENT,
 * its own checks) or refuses it (PERMISSION_DENIED naming identity, verb
 * and resource; UNAUTHENTICATED; a TLS handshake that fails). Around every
 * refusal the store's every kind (admin List, resourceVersions included)
 * is compared: a refused call changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "devicecontroller.pb-c.h"
#include "diag.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ADMIN, VIEWER, DEV, NODE1, NODE2, NOCERT, OTHERCA, N_ID };
static const char *const id_names[N_ID] = {"admin",  "viewer", "dev",    "edge-1",
                                           "edge-2", "nocert", "otherca"};

static ke_cluster C;
static ke_rpc_channel *ch[N_ID];
static char other_dir[128];

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ke_rpc_channel *channel(const char *ca, const char *cert, const char *key)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *c = NULL;
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &c), 0);
    return c;
}

/* ---- calls ---- */

static int unary(int who, const ProtobufCServiceDescriptor *svc, const char *m,
                 const ProtobufCMessage *req, ke_rpc_status *st)
{
    ke_rpc_stub stub = {ch[who], svc};
    ProtobufCMessage *reply = NULL;
    ke_rpc_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(ke_rpc_stub_unary(&stub, m, req, &o, &reply, st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st->code;
}

typedef struct stream_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    ke_rpc_status st;
} stream_wait;

static void sw_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    stream_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    w->st = *st;
    w->done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* stream sends req on streaming method m, half-closes, and waits for the
 * end: a stream the server keeps open ends at the 1.5 s deadline
 * (DEADLINE_EXCEEDED: it was let through). */
static int stream(int who, const ProtobufCServiceDescriptor *svc, const char *m,
                  const ProtobufCMessage *req, ke_rpc_status *st)
{
    stream_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0, ""}};
    ke_rpc_handler h = {.on_close = sw_close};
    ke_rpc_stub stub = {ch[who], svc};
    ke_rpc_call_opts o = {.timeout_ms = 1500};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&stub, m, &h, &w, &o, &call), 0);
    if (req)
        (void)ke_rpc_call_send(call, req); /* a refused call may have ended already */
    (void)ke_rpc_call_close_send(call); /* likewise: KE_ECLOSED is an answer here */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    ke_rpc_call_unref(call);
    *st = w.st;
    return st->code;
}

/* refused: the authorizer's answer, not the handler's. */
static int refused(const ke_rpc_status *st)
{
    if (st->code == KE_RPC_UNAUTHENTICATED)
        return 1;
    if (st->code == KE_RPC_PERMISSION_DENIED && strstr(st->message, " cannot "))
        return 1;
    /* another CA's certificate: the TLS handshake fails */
    return st->code == KE_RPC_UNAVAILABLE && !strstr(st->message, "registry");
}

/* ---- the store, seen by admin ---- */

static const char *const kinds[] = {"Pod",  "ConfigMap",   "Secret", "Node",
                                    "Device", "DeviceModel", "Role", "ClusterRole",
                                    "RoleBinding", "ClusterRoleBinding"};

/* snapshot: every object of every kind as "Kind ns/name rv" lines. */
static char *snapshot(void)
{
    size_t cap = 1 << 16, len = 0;
    char *s = calloc(1, cap);
    assert_non_null(s);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
        req.kind = (char *)kinds[k];
        req.limit = 5000;
        ke_rpc_stub stub = {ch[ADMIN], &ke__v1__edge_controller__descriptor};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        assert_int_equal(ke_rpc_stub_unary(&stub, "List", &req.base, NULL, &reply, &st), 0);
        assert_int_equal(st.code, KE_RPC_OK);
        Ke__V1__ListReply *r = (Ke__V1__ListReply *)reply;
        for (size_t i = 0; i < r->n_items_json; i++) {
            json_t *o = json_loadb((const char *)r->items_json[i].data, r->items_json[i].len, 0,
                                   NULL);
            assert_non_null(o);
            char line[640];
            int n = snprintf(line, sizeof(line), "%s %s/%s %s %zu\n", kinds[k],
                             json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                               "namespace")) ?: "",
                             json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                               "name")),
                             json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                               "resourceVersion")),
                             r->items_json[i].len);
            json_decref(o);
            while (len + (size_t)n + 1 > cap) {
                cap *= 2;
                s = realloc(s, cap);
                assert_non_null(s);
            }
            memcpy(s + len, line, (size_t)n + 1);
            len += (size_t)n;
        }
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return s;
}

/* ---- setup ---- */

static int apply_as(int who, const char *json, ke_rpc_status *st)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    return unary(who, &ke__v1__edge_controller__descriptor, "Apply", &req.base, st);
}

static void admin_apply(const char *json)
{
    ke_rpc_status st;
    int code = apply_as(ADMIN, json, &st);
    if (code != KE_RPC_OK)
        fail_msg("apply %s: %s %s", json, ke_rpc_status_name(code), st.message);
}

static int get_as(int who, const char *kind, const char *ns, const char *name, ke_rpc_status *st)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    return unary(who, &ke__v1__edge_controller__descriptor, "Get", &ref.base, st);
}

/* wait_allowed polls until who's Get is let through (caches catch up). */
static void wait_allowed(int who, const char *kind, const char *ns, const char *name)
{
    ke_rpc_status st;
    for (int i = 0; i < 200; i++) {
        get_as(who, kind, ns, name, &st);
        if (!refused(&st))
            return;
        pause_ms(50);
    }
    fail_msg("%s never allowed to get %s %s/%s: %s", id_names[who], kind, ns, name, st.message);
}

static int setup(void **state)
{
    (void)state;
    const char *extra[] = {"--edgecontroller.node_grace=1h", NULL};
    ke_cluster_start(&C, extra);
    const char *keadm = ke_tp_env("KE_KEADM");
    assert_int_equal(ke_cluster_join(&C, "edge-1", ke_cluster_token(&C)), 0);
    assert_int_equal(ke_cluster_join(&C, "edge-2", ke_cluster_token(&C)), 0);
    assert_int_equal(ke_tp_sh("%s certs user viewer --dir %s/cloud >/dev/null", keadm, C.dir), 0);
    assert_int_equal(
        ke_tp_sh("%s certs user dev --group dev --dir %s/cloud >/dev/null", keadm, C.dir), 0);
    snprintf(other_dir, sizeof(other_dir), "%s/other", C.dir);
    assert_int_equal(ke_tp_sh("%s init --dir %s >/dev/null && %s certs user stranger --group "
                              "system:masters --dir %s >/dev/null",
                              keadm, other_dir, keadm, other_dir),
                     0);
    char ca[160], crt[200], key[200];
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    ch[ADMIN] = C.admin;
    snprintf(crt, sizeof(crt), "%s/cloud/viewer.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/viewer.key", C.dir);
    ch[VIEWER] = channel(ca, crt, key);
    snprintf(crt, sizeof(crt), "%s/cloud/dev.crt", C.dir);
    snprintf(key, sizeof(key), "%s/cloud/dev.key", C.dir);
    ch[DEV] = channel(ca, crt, key);
    snprintf(crt, sizeof(crt), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    ch[NODE1] = channel(ca, crt, key);
    snprintf(crt, sizeof(crt), "%s/edge-2/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-2/node.key", C.dir);
    ch[NODE2] = channel(ca, crt, key);
    ch[NOCERT] = channel(ca, NULL, NULL);
    snprintf(crt, sizeof(crt), "%s/stranger.crt", other_dir);
    snprintf(key, sizeof(key), "%s/stranger.key", other_dir);
    ch[OTHERCA] = channel(ca, crt, key);

    /* the nodes' Node objects come from CloudHub's registry */
    ke_rpc_status st;
    for (int i = 0; i < 200 && get_as(ADMIN, "Node", "", "edge-2", &st) != KE_RPC_OK; i++)
        pause_ms(50);
    assert_int_equal(st.code, KE_RPC_OK);
    admin_apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                "\"web-config\"},\"data\":{\"a\":\"b\"}}");
    admin_apply("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                "\"web-secret\"},\"data\":{\"p\":\"cw==\"}}");
    admin_apply("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                "\"other-secret\"},\"data\":{\"p\":\"cw==\"}}");
    admin_apply("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\"},"
                "\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"w\",\"image\":"
                "\"nginx\",\"envFrom\":[{\"configMapRef\":{\"name\":\"web-config\"}},"
                "{\"secretRef\":{\"name\":\"web-secret\"}}]}]}}");
    admin_apply("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
                "\"metadata\":{\"name\":\"thermo-model\"},\"spec\":{\"properties\":[{\"name\":"
                "\"temp\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"}]}}");
    admin_apply("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                "\"metadata\":{\"name\":\"thermo\"},\"spec\":{\"deviceModelRef\":{\"name\":"
                "\"thermo-model\"},\"nodeName\":\"edge-1\"}}");
    admin_apply("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\","
                "\"metadata\":{\"name\":\"view\"},\"rules\":[{\"apiGroups\":[\"*\"],"
                "\"resources\":[\"*\"],\"verbs\":[\"get\",\"list\",\"watch\"]}]}");
    admin_apply("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":"
                "\"ClusterRoleBinding\",\"metadata\":{\"name\":\"viewers\"},\"subjects\":[{"
                "\"kind\":\"User\",\"name\":\"viewer\"}],\"roleRef\":{\"kind\":\"ClusterRole\","
                "\"name\":\"view\"}}");
    admin_apply("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\","
                "\"metadata\":{\"name\":\"editor\"},\"rules\":[{\"apiGroups\":[\"*\"],"
                "\"resources\":[\"*\"],\"verbs\":[\"*\"]}]}");
    admin_apply("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\","
                "\"metadata\":{\"name\":\"dev-edit\",\"namespace\":\"team\"},\"subjects\":[{"
                "\"kind\":\"Group\",\"name\":\"dev\"}],\"roleRef\":{\"kind\":\"ClusterRole\","
                "\"name\":\"editor\"}}");
    /* the RBAC watches and the controllers' node caches catch up */
    wait_allowed(VIEWER, "Secret", "default", "web-secret");
    wait_allowed(DEV, "Secret", "team", "none");
    wait_allowed(NODE1, "Secret", "default", "web-secret");
    ke_rpc_status dst;
    Ke__V1__DeviceRef dref = KE__V1__DEVICE_REF__INIT;
    dref.namespace_ = "default";
    dref.name = "thermo";
    for (int i = 0; i < 200; i++) {
        unary(NODE1, &ke__v1__device_controller__descriptor, "GetDevice", &dref.base, &dst);
        if (!refused(&dst))
            break;
        pause_ms(50);
    }
    assert_false(refused(&dst));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_ID; i++)
        if (i != ADMIN)
            ke_rpc_channel_free(ch[i]);
    ke_cluster_stop(&C);
    return 0;
}

/* ---- the matrix ---- */

typedef int (*call_fn)(int who, ke_rpc_status *st);

typedef struct row {
    const char *what;
    call_fn call;
    const char *allow; /* N_ID chars: 'y' let through, 'n' refused */
} row;

/* CloudHub */
static int c_bootstrap(int who, ke_rpc_status *st)
{
    Ke__V1__BootstrapRequest r = KE__V1__BOOTSTRAP_REQUEST__INIT;
    return unary(who, &ke__v1__cloud_hub__descriptor, "Bootstrap", &r.base, st);
}
static int c_join(int who, ke_rpc_status *st)
{
    Ke__V1__JoinRequest r = KE__V1__JOIN_REQUEST__INIT;
    r.node_name = "intruder";
    r.token = "not-a-token";
    return unary(who, &ke__v1__cloud_hub__descriptor, "Join", &r.base, st);
}
static int c_renew(int who, ke_rpc_status *st)
{
    Ke__V1__RenewRequest r = KE__V1__RENEW_REQUEST__INIT; /* no CSR: refused by the handler */
    return unary(who, &ke__v1__cloud_hub__descriptor, "Renew", &r.base, st);
}
static int c_tunnel(int who, ke_rpc_status *st)
{
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    Ke__V1__Keepalive k = KE__V1__KEEPALIVE__INIT;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_KEEPALIVE; /* not a hello: the handler ends it */
    f.keepalive = &k;
    return stream(who, &ke__v1__cloud_hub__descriptor, "Tunnel", &f.base, st);
}
/* Hub */
static int h_publish(int who, ke_rpc_status *st)
{
    Ke__V1__PublishRequest r = KE__V1__PUBLISH_REQUEST__INIT; /* no node: INVALID_ARGUMENT */
    return unary(who, &ke__v1__hub__descriptor, "Publish", &r.base, st);
}
static int h_publish_batch(int who, ke_rpc_status *st)
{
    Ke__V1__PublishBatchRequest r = KE__V1__PUBLISH_BATCH_REQUEST__INIT; /* empty: INVALID_ARGUMENT */
    return unary(who, &ke__v1__hub__descriptor, "PublishBatch", &r.base, st);
}
static int h_subscribe(int who, ke_rpc_status *st)
{
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT; /* empty: INVALID_ARGUMENT */
    return stream(who, &ke__v1__hub__descriptor, "Subscribe", &f.base, st);
}
static int h_list_nodes(int who, ke_rpc_status *st)
{
    Ke__V1__ListNodesRequest r = KE__V1__LIST_NODES_REQUEST__INIT;
    return unary(who, &ke__v1__hub__descriptor, "ListNodes", &r.base, st);
}
static int h_list_objects(int who, ke_rpc_status *st)
{
    Ke__V1__ListNodeObjectsRequest r = KE__V1__LIST_NODE_OBJECTS_REQUEST__INIT;
    r.node_name = "edge-1";
    return unary(who, &ke__v1__hub__descriptor, "ListNodeObjects", &r.base, st);
}
static int h_remove(int who, ke_rpc_status *st)
{
    Ke__V1__RemoveNodeRequest r = KE__V1__REMOVE_NODE_REQUEST__INIT;
    r.node_name = "no-such-node";
    return unary(who, &ke__v1__hub__descriptor, "RemoveNode", &r.base, st);
}
/* EdgeController */
static int e_apply_team(int who, ke_rpc_status *st)
{
    char j[256];
    snprintf(j, sizeof(j), "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{"
                           "\"name\":\"m-%s\",\"namespace\":\"team\"}}", id_names[who]);
    return apply_as(who, j, st);
}
static int e_apply_prod(int who, ke_rpc_status *st)
{
    char j[256];
    snprintf(j, sizeof(j), "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{"
                           "\"name\":\"m-%s\",\"namespace\":\"prod\"}}", id_names[who]);
    return apply_as(who, j, st);
}
static int e_apply_hostnet(int who, ke_rpc_status *st)
{
    return apply_as(who, "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                         "\"root\",\"namespace\":\"team\"},\"spec\":{\"nodeName\":\"edge-1\","
                         "\"hostNetwork\":true,\"containers\":[{\"name\":\"r\",\"image\":"
                         "\"busybox\",\"securityContext\":{\"privileged\":true}}]}}",
                    st);
}
static int e_get_secret(int who, ke_rpc_status *st)
{
    return get_as(who, "Secret", "default", "web-secret", st);
}
static int e_get_other_secret(int who, ke_rpc_status *st)
{
    return get_as(who, "Secret", "default", "other-secret", st);
}
static int e_get_pod(int who, ke_rpc_status *st) { return get_as(who, "pods", "", "web", st); }
static int e_get_node1(int who, ke_rpc_status *st) { return get_as(who, "Node", "", "edge-1", st); }
static int e_get_team(int who, ke_rpc_status *st)
{
    return get_as(who, "ConfigMap", "team", "none", st);
}
static int list_as(int who, const char *kind, const char *ns, ke_rpc_status *st)
{
    Ke__V1__ListRequest r = KE__V1__LIST_REQUEST__INIT;
    r.kind = (char *)kind;
    r.namespace_ = (char *)ns;
    return unary(who, &ke__v1__edge_controller__descriptor, "List", &r.base, st);
}
static int e_list_all(int who, ke_rpc_status *st) { return list_as(who, "Pod", "", st); }
static int e_list_team(int who, ke_rpc_status *st) { return list_as(who, "Pod", "team", st); }
static int e_list_roles(int who, ke_rpc_status *st) { return list_as(who, "ClusterRole", "", st); }
static int delete_as(int who, const char *ns, ke_rpc_status *st)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    Ke__V1__DeleteRequest r = KE__V1__DELETE_REQUEST__INIT;
    ref.kind = "Pod";
    ref.namespace_ = (char *)ns;
    ref.name = "nope"; /* absent: an allowed delete changes nothing either */
    r.ref = &ref;
    return unary(who, &ke__v1__edge_controller__descriptor, "Delete", &r.base, st);
}
static int e_delete_team(int who, ke_rpc_status *st) { return delete_as(who, "team", st); }
static int e_delete_default(int who, ke_rpc_status *st) { return delete_as(who, "default", st); }
static int e_watch_team(int who, ke_rpc_status *st)
{
    Ke__V1__WatchRequest r = KE__V1__WATCH_REQUEST__INIT;
    r.kind = "Pod";
    r.namespace_ = "team";
    return stream(who, &ke__v1__edge_controller__descriptor, "Watch", &r.base, st);
}
/* DeviceController */
static int d_get_device(int who, ke_rpc_status *st)
{
    Ke__V1__DeviceRef r = KE__V1__DEVICE_REF__INIT;
    r.name = "thermo";
    return unary(who, &ke__v1__device_controller__descriptor, "GetDevice", &r.base, st);
}
static int d_list(int who, ke_rpc_status *st)
{
    Ke__V1__ListRequest r = KE__V1__LIST_REQUEST__INIT;
    return unary(who, &ke__v1__device_controller__descriptor, "ListDevices", &r.base, st);
}
static int d_watch(int who, ke_rpc_status *st)
{
    Ke__V1__WatchRequest r = KE__V1__WATCH_REQUEST__INIT;
    r.namespace_ = "default";
    return stream(who, &ke__v1__device_controller__descriptor, "WatchDevices", &r.base, st);
}
static int d_set_desired(int who, ke_rpc_status *st)
{
    Ke__V1__DeviceRef d = KE__V1__DEVICE_REF__INIT;
    Ke__V1__SetDesiredRequest r = KE__V1__SET_DESIRED_REQUEST__INIT;
    d.name = "thermo";
    r.device = &d;
    r.property = "no-such-property"; /* refused by the handler when let through */
    r.value = "1";
    return unary(who, &ke__v1__device_controller__descriptor, "SetDesired", &r.base, st);
}
static int d_get_twin(int who, ke_rpc_status *st)
{
    Ke__V1__DeviceRef r = KE__V1__DEVICE_REF__INIT;
    r.namespace_ = "default";
    r.name = "thermo";
    return unary(who, &ke__v1__device_controller__descriptor, "GetTwin", &r.base, st);
}
static int d_watch_twin(int who, ke_rpc_status *st)
{
    Ke__V1__WatchTwinsRequest r = KE__V1__WATCH_TWINS_REQUEST__INIT;
    r.namespace_ = "default";
    r.name = "thermo";
    return stream(who, &ke__v1__device_controller__descriptor, "WatchTwins", &r.base, st);
}
static int d_watch_twins_all(int who, ke_rpc_status *st)
{
    Ke__V1__WatchTwinsRequest r = KE__V1__WATCH_TWINS_REQUEST__INIT;
    return stream(who, &ke__v1__device_controller__descriptor, "WatchTwins", &r.base, st);
}
/* Diagnostics */
static int g_ping(int who, ke_rpc_status *st)
{
    Ke__V1__PingRequest r = KE__V1__PING_REQUEST__INIT;
    return unary(who, &ke__v1__diagnostics__descriptor, "Ping", &r.base, st);
}
static int g_echo(int who, ke_rpc_status *st)
{
    Ke__V1__EchoFrame f = KE__V1__ECHO_FRAME__INIT;
    return stream(who, &ke__v1__diagnostics__descriptor, "Echo", &f.base, st);
}
static int g_ticks(int who, ke_rpc_status *st)
{
    Ke__V1__TicksRequest r = KE__V1__TICKS_REQUEST__INIT;
    r.count = 1;
    return stream(who, &ke__v1__diagnostics__descriptor, "Ticks", &r.base, st);
}

/*                     admin viewer dev edge-1 edge-2 nocert otherca */
static const row matrix[] = {
    {"CloudHub.Bootstrap", c_bootstrap, "yyyyyyn"},
    {"CloudHub.Join", c_join, "yyyyyyn"},
    {"CloudHub.Renew", c_renew, "ynnyynn"},
    {"CloudHub.Tunnel", c_tunnel, "ynnyynn"},
    {"Hub.Publish", h_publish, "ynnnnnn"},
    {"Hub.PublishBatch", h_publish_batch, "ynnnnnn"},
    {"Hub.Subscribe", h_subscribe, "ynnnnnn"},
    {"Hub.ListNodes", h_list_nodes, "ynnnnnn"},
    {"Hub.ListNodeObjects", h_list_objects, "ynnnnnn"},
    {"Hub.RemoveNode", h_remove, "ynnnnnn"},
    {"EdgeController.Apply ConfigMap in team", e_apply_team, "ynynnnn"},
    {"EdgeController.Apply ConfigMap in prod", e_apply_prod, "ynnnnnn"},
    {"EdgeController.Apply hostNetwork pod on edge-1", e_apply_hostnet, "ynynnnn"},
    {"EdgeController.Get Secret its pod references", e_get_secret, "yynynnn"},
    {"EdgeController.Get Secret no pod references", e_get_other_secret, "yynnnnn"},
    {"EdgeController.Get Pod bound to edge-1", e_get_pod, "yynynnn"},
    {"EdgeController.Get Node edge-1", e_get_node1, "yynynnn"},
    {"EdgeController.Get ConfigMap in team", e_get_team, "yyynnnn"},
    {"EdgeController.List pods, all namespaces", e_list_all, "yynnnnn"},
    {"EdgeController.List pods in team", e_list_team, "yyynnnn"},
    {"EdgeController.List clusterroles", e_list_roles, "yynnnnn"},
    {"EdgeController.Delete pod in team", e_delete_team, "ynynnnn"},
    {"EdgeController.Delete pod in default", e_delete_default, "ynnnnnn"},
    {"EdgeController.Watch pods in team", e_watch_team, "yyynnnn"},
    {"DeviceController.GetDevice edge-1's", d_get_device, "yynynnn"},
    {"DeviceController.ListDevices", d_list, "yynnnnn"},
    {"DeviceController.WatchDevices", d_watch, "yynnnnn"},
    {"DeviceController.SetDesired", d_set_desired, "ynnnnnn"},
    {"DeviceController.GetTwin edge-1's", d_get_twin, "yynynnn"},
    {"DeviceController.WatchTwins edge-1's device", d_watch_twin, "yynynnn"},
    {"DeviceController.WatchTwins all", d_watch_twins_all, "yynnnnn"},
    {"Diagnostics.Ping", g_ping, "yyyyynn"},
    {"Diagnostics.Echo", g_echo, "yyyyynn"},
    {"Diagnostics.Ticks", g_ticks, "yyyyynn"},
};

static void test_authz_matrix_every_method_every_identity(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t r = 0; r < sizeof(matrix) / sizeof(matrix[0]); r++) {
        for (int who = 0; who < N_ID; who++) {
            int want = matrix[r].allow[who] == 'y';
            char *before = want ? NULL : snapshot();
            ke_rpc_status st;
            matrix[r].call(who, &st);
            int got = !refused(&st);
            if (got != want) {
                print_error("%s as %s: want %s, got %s %s\n", matrix[r].what, id_names[who],
                            want ? "let through" : "refused", ke_rpc_status_name(st.code),
                            st.message);
                failures++;
            }
            if (!want) {
                char *after = snapshot();
                if (strcmp(before, after) != 0) {
                    print_error("%s as %s: refused, yet the store changed\n", matrix[r].what,
                                id_names[who]);
                    failures++;
                }
                free(after);
                free(before);
            }
        }
    }
    assert_int_equal(failures, 0);
}

static void test_authz_denial_names_identity_verb_resource(void **state)
{
    (void)state;
    ke_rpc_status st;
    e_delete_default(DEV, &st);
    assert_int_equal(st.code, KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(st.message, "user \"dev\" (groups: dev) cannot delete pods in "
                                       "namespace \"default\""));
    e_apply_team(VIEWER, &st);
    assert_int_equal(st.code, KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(st.message, "user \"viewer\" (groups: none) cannot create "
                                       "configmaps in namespace \"team\""));
    e_get_other_secret(NODE1, &st);
    assert_int_equal(st.code, KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(st.message, "user \"system:node:edge-1\" (groups: system:nodes) "
                                       "cannot get secrets in namespace \"default\""));
    g_ping(NOCERT, &st);
    assert_int_equal(st.code, KE_RPC_UNAUTHENTICATED);
    /* each refusal is logged once, with its facts */
    assert_true(ke_file_contains(C.cloud_log, "denied method=/ke.v1.EdgeController/Delete "
                                              "user=\"dev\""));
}

static void test_authz_rbac_change_takes_effect_without_restart(void **state)
{
    (void)state;
    ke_rpc_status st;
    e_apply_prod(DEV, &st);
    assert_true(refused(&st));
    admin_apply("{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\","
                "\"metadata\":{\"name\":\"dev-edit\",\"namespace\":\"prod\"},\"subjects\":[{"
                "\"kind\":\"Group\",\"name\":\"dev\"}],\"roleRef\":{\"kind\":\"ClusterRole\","
                "\"name\":\"editor\"}}");
    for (int i = 0; i < 200; i++) {
        e_apply_prod(DEV, &st);
        if (!refused(&st))
            break;
        pause_ms(50);
    }
    assert_int_equal(st.code, KE_RPC_OK);
    /* and deleting it takes the grant away again */
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    Ke__V1__DeleteRequest d = KE__V1__DELETE_REQUEST__INIT;
    ref.kind = "RoleBinding";
    ref.namespace_ = "prod";
    ref.name = "dev-edit";
    d.ref = &ref;
    assert_int_equal(unary(ADMIN, &ke__v1__edge_controller__descriptor, "Delete", &d.base, &st),
                     KE_RPC_OK);
    for (int i = 0; i < 200; i++) {
        list_as(DEV, "Pod", "prod", &st);
        if (refused(&st))
            break;
        pause_ms(50);
    }
    assert_true(refused(&st));
}

/* keadm certs user writes a kubeconfig kectl uses, flags winning over it */
static void test_authz_kectl_kubeconfig_of_a_user(void **state)
{
    (void)state;
    const char *bin = ke_tp_env("KE_BIN_DIR");
    char cfg[200];
    snprintf(cfg, sizeof(cfg), "%s/cloud/viewer.kubeconfig", C.dir);
    assert_true(ke_file_contains(cfg, "client-certificate: "));
    /* the file names localhost:10000; --server points at this cluster */
    assert_int_equal(ke_tp_sh("%s/tools/kectl --kubeconfig %s --server 127.0.0.1:%d get pods "
                              ">%s/kc.out 2>&1",
                              bin, cfg, C.grpc_port, C.dir),
                     0);
    assert_int_equal(ke_tp_sh("KECTL_KUBECONFIG=%s %s/tools/kectl --server 127.0.0.1:%d delete "
                              "pod web >%s/kc.err 2>&1",
                              cfg, bin, C.grpc_port, C.dir),
                     1);
    char err[200];
    snprintf(err, sizeof(err), "%s/kc.err", C.dir);
    assert_true(ke_file_contains(err, "Forbidden"));
    assert_true(ke_file_contains(err, "user \"viewer\" (groups: none) cannot delete pods"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authz_matrix_every_method_every_identity),
        cmocka_unit_test(test_authz_denial_names_identity_verb_resource),
        cmocka_unit_test(test_authz_rbac_change_takes_effect_without_restart),
        cmocka_unit_test(test_authz_kectl_kubeconfig_of_a_user),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
