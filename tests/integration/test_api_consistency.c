/*
 * test_api_consistency.c — the API conventions of docs/api.md, one test
 * per point, against a real cloudcore (keadm init, a joined node "ghost"
 * that never connects) through the gRPC channels of ke_cluster as
 * system:admin, and kectl for the command-line side:
 *   status codes (permanent errors never UNAVAILABLE), field paths in every
 *   INVALID_ARGUMENT, SetDesired bounds and NaN/Inf, ListDevices' kind,
 *   kind names in every form, the empty namespace, forced pod deletion,
 *   Secret stringData/base64, JSON nesting depth, control bytes in
 *   selectors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_time.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

static ke_cluster C;
static char kectl[1024];

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- calls ---- */

/* unary calls method m of svc on the API channel; *out (may be NULL) gets
 * the reply's object_json parsed when the reply is an ObjectReply. */
static int unary(const ProtobufCServiceDescriptor *svc, const char *m,
                 const ProtobufCMessage *req, ke_rpc_status *st, ProtobufCMessage **reply)
{
    ke_rpc_stub stub = {svc == &ke__v1__hub__descriptor ? C.admin : C.api, svc};
    ProtobufCMessage *r = NULL;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_stub_unary(&stub, m, req, &o, &r, st), 0);
    if (reply)
        *reply = r;
    else if (r)
        protobuf_c_message_free_unpacked(r, NULL);
    return st->code;
}

static int apply(const char *json, ke_rpc_status *st)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    return unary(&ke__v1__edge_controller__descriptor, "Apply", &req.base, st, NULL);
}

static void apply_ok(const char *json)
{
    ke_rpc_status st;
    if (apply(json, &st) != KE_RPC_OK)
        fail_msg("apply %s: %s %s", json, ke_rpc_status_name(st.code), st.message);
}

static json_t *object_of(ProtobufCMessage *reply)
{
    Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
    json_t *o = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, NULL);
    protobuf_c_message_free_unpacked(reply, NULL);
    return o;
}

/* get returns the object (json_decref it) or NULL with st set. */
static json_t *get(const char *kind, const char *ns, const char *name, ke_rpc_status *st)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    ProtobufCMessage *reply = NULL;
    if (unary(&ke__v1__edge_controller__descriptor, "Get", &ref.base, st, &reply) != KE_RPC_OK)
        return NULL;
    return object_of(reply);
}

static json_t *get_device(const char *ns, const char *name, ke_rpc_status *st)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    ProtobufCMessage *reply = NULL;
    if (unary(&ke__v1__device_controller__descriptor, "GetDevice", &ref.base, st, &reply) !=
        KE_RPC_OK)
        return NULL;
    return object_of(reply);
}

/* list returns the items' "ns/name" joined by ' ' in buf (one page). */
static int list(const ProtobufCServiceDescriptor *svc, const char *m, const char *kind,
                const char *ns, const char *labels, const char *fields, ke_rpc_status *st,
                char *buf, size_t len)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = (char *)kind;
    req.namespace_ = (char *)ns;
    req.label_selector = (char *)labels;
    req.field_selector = (char *)fields;
    ProtobufCMessage *reply = NULL;
    if (buf)
        buf[0] = '\0';
    if (unary(svc, m, &req.base, st, &reply) != KE_RPC_OK)
        return st->code;
    Ke__V1__ListReply *r = (Ke__V1__ListReply *)reply;
    for (size_t i = 0; buf && i < r->n_items_json; i++) {
        json_t *o = json_loadb((const char *)r->items_json[i].data, r->items_json[i].len, 0, NULL);
        const char *ns_ = json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                            "namespace"));
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s/%s/%s ",
                 json_string_value(json_object_get(o, "kind")), ns_ ? ns_ : "",
                 json_string_value(json_object_get(json_object_get(o, "metadata"), "name")));
        json_decref(o);
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    return st->code;
}

static int ec_list(const char *kind, const char *ns, ke_rpc_status *st, char *buf, size_t len)
{
    return list(&ke__v1__edge_controller__descriptor, "List", kind, ns, "", "", st, buf, len);
}

static int del(const char *kind, const char *ns, const char *name, int force, int64_t grace,
               ke_rpc_status *st)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    req.force = force;
    req.grace_period_seconds = grace;
    return unary(&ke__v1__edge_controller__descriptor, "Delete", &req.base, st, NULL);
}

/* ---- streams ---- */

typedef struct stream_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, events;
    char first[512]; /* "ns/name" of the first event's object */
    ke_rpc_status st;
} stream_wait;

static void sw_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    stream_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    if (w->events++ == 0 && msg->descriptor == &ke__v1__watch_event__descriptor) {
        const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)msg;
        json_t *o = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, NULL);
        const char *ns = json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                           "namespace"));
        snprintf(w->first, sizeof(w->first), "%s/%s", ns ? ns : "",
                 json_string_value(json_object_get(json_object_get(o, "metadata"), "name")));
        json_decref(o);
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

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

/* stream opens streaming method m with req and waits for its first event
 * (returns OK: the watch was accepted; `first` names the event's object)
 * or its end (returns its status). Callers ask for a version that has an
 * event to replay, so an accepted watch answers at once; the 20 s deadline
 * only bounds a broken server. */
static int stream_poke(const ProtobufCServiceDescriptor *svc, const char *m,
                       const ProtobufCMessage *req, void (*poke)(void), ke_rpc_status *st,
                       char *first, size_t flen);
static int stream(const ProtobufCServiceDescriptor *svc, const char *m,
                  const ProtobufCMessage *req, ke_rpc_status *st, char *first, size_t flen)
{
    return stream_poke(svc, m, req, NULL, st, first, flen);
}

/* stream_poke is stream for watches that start "from now": poke (when not
 * NULL) makes a change once the call is open. It may run before the
 * server has started the watch: pokes are repeated until an event or the
 * end arrives. */
static int stream_poke(const ProtobufCServiceDescriptor *svc, const char *m,
                       const ProtobufCMessage *req, void (*poke)(void), ke_rpc_status *st,
                       char *first, size_t flen)
{
    stream_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", {0, ""}};
    ke_rpc_handler h = {.on_message = sw_message, .on_close = sw_close};
    ke_rpc_stub stub = {C.api, svc};
    ke_rpc_call_opts o = {.timeout_ms = 20000};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&stub, m, &h, &w, &o, &call), 0);
    /* a refused call may have ended already: its status is the answer */
    int src = ke_rpc_call_send(call, req);
    int crc = ke_rpc_call_close_send(call);
    assert_true(src == 0 || src == KE_ECLOSED);
    assert_true(crc == 0 || crc == KE_ECLOSED);
    pthread_mutex_lock(&w.mu);
    while (!w.done && w.events == 0) {
        if (!poke) {
            pthread_cond_wait(&w.cv, &w.mu);
            continue;
        }
        pthread_mutex_unlock(&w.mu);
        poke();
        pthread_mutex_lock(&w.mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until); /* pthread_cond_timedwait's clock */
        until.tv_nsec += 200 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (!w.done && w.events == 0)
            pthread_cond_timedwait(&w.cv, &w.mu, &until);
    }
    int accepted = w.events > 0;
    pthread_mutex_unlock(&w.mu);
    if (accepted)
        ke_rpc_call_cancel(call);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    ke_rpc_call_unref(call);
    if (first)
        snprintf(first, flen, "%s", w.first);
    *st = w.st;
    if (accepted) {
        st->code = KE_RPC_OK;
        st->message[0] = '\0';
    }
    return st->code;
}

static int watch(const ProtobufCServiceDescriptor *svc, const char *m, const char *kind,
                 const char *ns, const char *labels, const char *fields, uint64_t rv,
                 ke_rpc_status *st, char *first, size_t flen)
{
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = (char *)kind;
    req.namespace_ = (char *)ns;
    req.label_selector = (char *)labels;
    req.field_selector = (char *)fields;
    req.resource_version = rv;
    return stream(svc, m, &req.base, st, first, flen);
}

static int ec_watch(const char *kind, const char *ns, uint64_t rv, ke_rpc_status *st, char *first,
                    size_t flen)
{
    return watch(&ke__v1__edge_controller__descriptor, "Watch", kind, ns, "", "", rv, st, first,
                 flen);
}

/* rv_of returns an object's metadata.resourceVersion. */
static uint64_t rv_of(const char *kind, const char *ns, const char *name)
{
    ke_rpc_status st;
    json_t *o = get(kind, ns, name, &st);
    if (!o)
        fail_msg("get %s %s/%s: %s", kind, ns, name, st.message);
    uint64_t rv = strtoull(json_string_value(json_object_get(json_object_get(o, "metadata"),
                                                             "resourceVersion")),
                           NULL, 10);
    json_decref(o);
    return rv;
}

/* ---- kectl ---- */

static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return ke_tp_capture(out, len, "%s %s", kectl, args);
}

/* ---- setup ---- */

#define MODEL                                                                                   \
    "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\",\"metadata\":{"  \
    "\"name\":\"thermo-model\"},\"spec\":{\"properties\":["                                     \
    "{\"name\":\"temp\",\"type\":\"INT\",\"minimum\":\"0\",\"maximum\":\"100\"},"              \
    "{\"name\":\"ratio\",\"type\":\"FLOAT\",\"minimum\":-1.5,\"maximum\":1.5},"                \
    "{\"name\":\"label\",\"type\":\"STRING\"}]}}"
#define DEVICE(name)                                                                            \
    "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"       \
    "\"name\":\"" name "\"},\"spec\":{\"deviceModelRef\":{\"name\":\"thermo-model\"},"        \
    "\"nodeName\":\"ghost\"}}"

static int setup(void **state)
{
    (void)state;
    ke_cluster_start(&C, NULL);
    /* joined, never connected: a node that is gone as far as its pods know */
    assert_int_equal(ke_cluster_join(&C, "ghost", ke_cluster_token(&C)), 0);
    ke_rpc_status st;
    json_t *n = NULL;
    int64_t until = ke_time_mono_ms() + 30000;
    while (!(n = get("Node", "", "ghost", &st)) && ke_time_mono_ms() < until)
        pause_ms(100);
    assert_non_null(n);
    json_decref(n);
    snprintf(kectl, sizeof(kectl),
             "%s/tools/kectl --server 127.0.0.1:%d --ca %s/cloud/ca.crt --cert "
             "%s/cloud/admin.crt --key %s/cloud/admin.key",
             ke_tp_env("KE_BIN_DIR"), C.grpc_port, C.dir, C.dir, C.dir);
    apply_ok(MODEL);
    apply_ok(DEVICE("thermo"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    return 0;
}

/* ---- 1: permanent errors are never UNAVAILABLE ---- */

static void expect(int got, const ke_rpc_status *st, int want, const char *what)
{
    if (got == KE_RPC_UNAVAILABLE || got != want)
        fail_msg("%s: got %s \"%s\", want %s", what, ke_rpc_status_name(got), st->message,
                 ke_rpc_status_name(want));
}

static void test_permanent_errors_are_never_unavailable(void **state)
{
    (void)state;
    ke_rpc_status st;
    json_t *o = get("Pod", "default", "no-such-pod", &st);
    assert_null(o);
    expect(st.code, &st, KE_RPC_NOT_FOUND, "Get of a missing pod");
    o = get_device("default", "Bad_Name", &st);
    assert_null(o);
    expect(st.code, &st, KE_RPC_INVALID_ARGUMENT, "GetDevice with a malformed name");
    o = get_device("default", "no-such-device", &st);
    assert_null(o);
    expect(st.code, &st, KE_RPC_NOT_FOUND, "GetDevice of a missing device");

    /* a desired value that would make the device larger than the store takes */
    size_t big = 1100 * 1024;
    char *value = malloc(big + 1);
    assert_non_null(value);
    memset(value, 'v', big);
    value[big] = '\0';
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.name = "thermo";
    Ke__V1__SetDesiredRequest sd = KE__V1__SET_DESIRED_REQUEST__INIT;
    sd.device = &ref;
    sd.property = "label";
    sd.value = value;
    expect(unary(&ke__v1__device_controller__descriptor, "SetDesired", &sd.base, &st, NULL), &st,
           KE_RPC_INVALID_ARGUMENT, "SetDesired of an oversized value");
    assert_int_equal(strncmp(st.message, "value:", 6), 0);
    free(value);

    /* a device whose model was deleted: the model is a precondition */
    apply_ok(DEVICE("orphan"));
    apply_ok("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
             "\"metadata\":{\"name\":\"gone-model\"},\"spec\":{\"properties\":[{\"name\":\"p\","
             "\"type\":\"INT\"}]}}");
    apply_ok("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"
             "\"name\":\"orphan\"},\"spec\":{\"deviceModelRef\":{\"name\":\"gone-model\"},"
             "\"nodeName\":\"ghost\"}}");
    expect(del("DeviceModel", "", "gone-model", 0, 0, &st), &st, KE_RPC_OK, "delete model");
    ref.name = "orphan";
    sd.property = "p";
    sd.value = "1";
    expect(unary(&ke__v1__device_controller__descriptor, "SetDesired", &sd.base, &st, NULL), &st,
           KE_RPC_FAILED_PRECONDITION, "SetDesired on a device without its model");

    /* a watch from a version the store has not reached */
    expect(ec_watch("Pod", "", 1u << 30, &st, NULL, 0), &st, KE_RPC_INVALID_ARGUMENT,
           "Watch from a future version");
    assert_int_equal(strncmp(st.message, "resource_version:", 17), 0);
    expect(watch(&ke__v1__device_controller__descriptor, "WatchDevices", "", "", "", "", 1u << 30,
                 &st, NULL, 0),
           &st, KE_RPC_INVALID_ARGUMENT, "WatchDevices from a future version");
    assert_int_equal(strncmp(st.message, "resource_version:", 17), 0);

    /* Hub API */
    Ke__V1__RemoveNodeRequest rm = KE__V1__REMOVE_NODE_REQUEST__INIT;
    rm.node_name = "no-such-node";
    expect(unary(&ke__v1__hub__descriptor, "RemoveNode", &rm.base, &st, NULL), &st,
           KE_RPC_NOT_FOUND, "RemoveNode of an unknown node");
}

/* ---- 2: every INVALID_ARGUMENT names the field path ---- */

typedef int (*bad_call)(ke_rpc_status *st);
typedef struct bad_case {
    const char *what;
    bad_call call;
    const char *path; /* the message starts with it */
} bad_case;

static int b_apply_json(ke_rpc_status *st) { return apply("{not json", st); }
static int b_apply_noname(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{}}", st);
}
static int b_apply_badname(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"Web\"}}",
                 st);
}
static int b_apply_badns(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"w\","
                 "\"namespace\":\"a.b\"}}",
                 st);
}
static int b_apply_image(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"},"
                 "\"spec\":{\"containers\":[{\"name\":\"c\"}]}}",
                 st);
}
static int b_apply_kind(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"Foo\",\"metadata\":{\"name\":\"f\"}}", st);
}
static int b_apply_data(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"d\"},"
                 "\"data\":{\"n\":42}}",
                 st);
}
static int b_apply_api(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v2\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"d\"}}",
                 st);
}
static int b_apply_minimum(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
                 "\"metadata\":{\"name\":\"m\"},\"spec\":{\"properties\":[{\"name\":\"p\","
                 "\"type\":\"INT\",\"minimum\":\"low\"}]}}",
                 st);
}
static int b_apply_label(ke_rpc_status *st)
{
    return apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"d\","
                 "\"labels\":{\"-bad-\":\"x\"}}}",
                 st);
}
static int b_apply_large(ke_rpc_status *st)
{
    size_t n = 1100 * 1024;
    char *big = malloc(n + 200);
    assert_non_null(big);
    int at = snprintf(big, 200, "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                                "{\"name\":\"d\"},\"data\":{\"v\":\"");
    memset(big + at, 'x', n);
    snprintf(big + at + n, 8, "\"}}");
    int code = apply(big, st);
    free(big);
    return code;
}
static int b_get_kind(ke_rpc_status *st)
{
    json_t *o = get("Foo", "", "x", st);
    json_decref(o);
    return st->code;
}
static int b_get_ns(ke_rpc_status *st)
{
    json_t *o = get("Pod", "Bad_NS", "x", st);
    json_decref(o);
    return st->code;
}
static int b_get_noname(ke_rpc_status *st)
{
    json_t *o = get("Pod", "", "", st);
    json_decref(o);
    return st->code;
}
static int b_get_badname(ke_rpc_status *st)
{
    json_t *o = get("Pod", "", "UPPER", st);
    json_decref(o);
    return st->code;
}
static int b_get_node_ns(ke_rpc_status *st)
{
    json_t *o = get("Node", "default", "ghost", st);
    json_decref(o);
    return st->code;
}
static int b_list_kind(ke_rpc_status *st) { return ec_list("Foo", "", st, NULL, 0); }
static int b_list_ns(ke_rpc_status *st) { return ec_list("Pod", "-x", st, NULL, 0); }
static int b_list_node_ns(ke_rpc_status *st) { return ec_list("nodes", "default", st, NULL, 0); }
static int b_list_label(ke_rpc_status *st)
{
    return list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", "a in (", "", st, NULL,
                0);
}
static int b_list_field(ke_rpc_status *st)
{
    return list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", "", "novalue", st, NULL,
                0);
}
static int b_list_continue(ke_rpc_status *st)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = "Pod";
    req.continue_token = "garbage";
    return unary(&ke__v1__edge_controller__descriptor, "List", &req.base, st, NULL);
}
static int b_delete_noref(ke_rpc_status *st)
{
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    return unary(&ke__v1__edge_controller__descriptor, "Delete", &req.base, st, NULL);
}
static int b_delete_kind(ke_rpc_status *st) { return del("Foo", "", "x", 0, 0, st); }
static int b_delete_name(ke_rpc_status *st) { return del("Pod", "", "", 0, 0, st); }
static int b_delete_ns(ke_rpc_status *st) { return del("Node", "x", "ghost", 0, 0, st); }
static int b_delete_grace(ke_rpc_status *st) { return del("Pod", "", "x", 0, -1, st); }
static int b_watch_kind(ke_rpc_status *st) { return ec_watch("Foo", "", 0, st, NULL, 0); }
static int b_watch_ns(ke_rpc_status *st) { return ec_watch("Pod", "UP", 0, st, NULL, 0); }
static int b_watch_label(ke_rpc_status *st)
{
    return watch(&ke__v1__edge_controller__descriptor, "Watch", "Pod", "", "!", "", 0, st, NULL,
                 0);
}
static int b_getdev_name(ke_rpc_status *st)
{
    json_t *o = get_device("", "", st);
    json_decref(o);
    return st->code;
}
static int b_getdev_ns(ke_rpc_status *st)
{
    json_t *o = get_device("no_such", "thermo", st);
    json_decref(o);
    return st->code;
}
static int b_listdev_kind(ke_rpc_status *st)
{
    return list(&ke__v1__device_controller__descriptor, "ListDevices", "Pod", "", "", "", st,
                NULL, 0);
}
static int b_listdev_ns(ke_rpc_status *st)
{
    return list(&ke__v1__device_controller__descriptor, "ListDevices", "", "A", "", "", st, NULL,
                0);
}
static int b_watchdev_kind(ke_rpc_status *st)
{
    return watch(&ke__v1__device_controller__descriptor, "WatchDevices", "ConfigMap", "", "", "",
                 0, st, NULL, 0);
}
static int b_watchdev_field(ke_rpc_status *st)
{
    return watch(&ke__v1__device_controller__descriptor, "WatchDevices", "", "", "", "x", 0, st,
                 NULL, 0);
}
static int set_desired(const char *ns, const char *name, const char *prop, const char *value,
                       ke_rpc_status *st)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    Ke__V1__SetDesiredRequest sd = KE__V1__SET_DESIRED_REQUEST__INIT;
    sd.device = name ? &ref : NULL;
    sd.property = (char *)prop;
    sd.value = (char *)value;
    return unary(&ke__v1__device_controller__descriptor, "SetDesired", &sd.base, st, NULL);
}
static int b_sd_nodevice(ke_rpc_status *st) { return set_desired("", NULL, "temp", "1", st); }
static int b_sd_ns(ke_rpc_status *st) { return set_desired("x_y", "thermo", "temp", "1", st); }
static int b_sd_prop(ke_rpc_status *st) { return set_desired("", "thermo", "", "1", st); }
static int b_sd_value(ke_rpc_status *st) { return set_desired("", "thermo", "temp", "x", st); }
static int b_twin_name(ke_rpc_status *st)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.name = "a b";
    return unary(&ke__v1__device_controller__descriptor, "GetTwin", &ref.base, st, NULL);
}
static int watch_twins(const char *ns, const char *name, ke_rpc_status *st)
{
    Ke__V1__WatchTwinsRequest r = KE__V1__WATCH_TWINS_REQUEST__INIT;
    r.namespace_ = (char *)ns;
    r.name = (char *)name;
    return stream(&ke__v1__device_controller__descriptor, "WatchTwins", &r.base, st, NULL, 0);
}
static int b_wt_ns(ke_rpc_status *st) { return watch_twins("Ns", "", st); }
static int b_wt_name(ke_rpc_status *st) { return watch_twins("", "x,y=z", st); }
static int b_hub_publish(ke_rpc_status *st)
{
    Ke__V1__PublishRequest r = KE__V1__PUBLISH_REQUEST__INIT;
    return unary(&ke__v1__hub__descriptor, "Publish", &r.base, st, NULL);
}
static int b_hub_nodes(ke_rpc_status *st)
{
    Ke__V1__ListNodesRequest r = KE__V1__LIST_NODES_REQUEST__INIT;
    r.continue_token = "../x";
    return unary(&ke__v1__hub__descriptor, "ListNodes", &r.base, st, NULL);
}
static int b_hub_objects(ke_rpc_status *st)
{
    Ke__V1__ListNodeObjectsRequest r = KE__V1__LIST_NODE_OBJECTS_REQUEST__INIT;
    return unary(&ke__v1__hub__descriptor, "ListNodeObjects", &r.base, st, NULL);
}

static const bad_case bad_cases[] = {
    {"Apply: not JSON", b_apply_json, "object_json: "},
    {"Apply: no name", b_apply_noname, "metadata.name: "},
    {"Apply: bad name", b_apply_badname, "metadata.name: "},
    {"Apply: bad namespace", b_apply_badns, "metadata.namespace: "},
    {"Apply: no image", b_apply_image, "spec.containers[0].image: "},
    {"Apply: unknown kind", b_apply_kind, "kind: unknown kind \"Foo\""},
    {"Apply: data not strings", b_apply_data, "data.n: "},
    {"Apply: wrong apiVersion", b_apply_api, "apiVersion: "},
    {"Apply: model minimum", b_apply_minimum, "spec.properties[0].minimum: "},
    {"Apply: label key", b_apply_label, "metadata.labels: "},
    {"Apply: too large", b_apply_large, "object: too large"},
    {"Get: unknown kind", b_get_kind, "kind: "},
    {"Get: bad namespace", b_get_ns, "namespace: "},
    {"Get: no name", b_get_noname, "name: "},
    {"Get: bad name", b_get_badname, "name: "},
    {"Get: namespace of a Node", b_get_node_ns, "namespace: "},
    {"List: unknown kind", b_list_kind, "kind: "},
    {"List: bad namespace", b_list_ns, "namespace: "},
    {"List: namespace of nodes", b_list_node_ns, "namespace: "},
    {"List: label selector", b_list_label, "label_selector: "},
    {"List: field selector", b_list_field, "field_selector: "},
    {"List: continue token", b_list_continue, "continue_token: "},
    {"Delete: no ref", b_delete_noref, "ref: "},
    {"Delete: unknown kind", b_delete_kind, "ref.kind: "},
    {"Delete: no name", b_delete_name, "ref.name: "},
    {"Delete: namespace of a Node", b_delete_ns, "ref.namespace: "},
    {"Delete: negative grace", b_delete_grace, "grace_period_seconds: "},
    {"Watch: unknown kind", b_watch_kind, "kind: "},
    {"Watch: bad namespace", b_watch_ns, "namespace: "},
    {"Watch: label selector", b_watch_label, "label_selector: "},
    {"GetDevice: no name", b_getdev_name, "name: "},
    {"GetDevice: bad namespace", b_getdev_ns, "namespace: "},
    {"ListDevices: kind", b_listdev_kind, "kind: "},
    {"ListDevices: bad namespace", b_listdev_ns, "namespace: "},
    {"WatchDevices: kind", b_watchdev_kind, "kind: "},
    {"WatchDevices: field selector", b_watchdev_field, "field_selector: "},
    {"SetDesired: no device", b_sd_nodevice, "device.name: "},
    {"SetDesired: bad namespace", b_sd_ns, "device.namespace: "},
    {"SetDesired: no property", b_sd_prop, "property: "},
    {"SetDesired: bad value", b_sd_value, "value: "},
    {"GetTwin: bad name", b_twin_name, "name: "},
    {"WatchTwins: bad namespace", b_wt_ns, "namespace: "},
    {"WatchTwins: bad name", b_wt_name, "name: "},
    {"Hub.Publish: empty", b_hub_publish, "node_name: "},
    {"Hub.ListNodes: bad token", b_hub_nodes, "continue_token: "},
    {"Hub.ListNodeObjects: no node", b_hub_objects, "node_name: "},
};

static void test_every_invalid_argument_names_the_field_path(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        ke_rpc_status st = {0, ""};
        int code = bad_cases[i].call(&st);
        if (code != KE_RPC_INVALID_ARGUMENT ||
            strncmp(st.message, bad_cases[i].path, strlen(bad_cases[i].path)) != 0) {
            print_error("%s: got %s \"%s\", want INVALID_ARGUMENT \"%s...\"\n",
                        bad_cases[i].what, ke_rpc_status_name(code), st.message,
                        bad_cases[i].path);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
    /* nothing of the refused applies was stored */
    ke_rpc_status st;
    assert_null(get("ConfigMap", "", "d", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    assert_null(get("Pod", "", "p", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
}

/* ---- 3: SetDesired enforces the model ---- */

static void test_set_desired_enforces_the_model_bounds_and_refuses_nan_and_inf(void **state)
{
    (void)state;
    static const struct {
        const char *prop, *value, *says;
    } refused[] = {
        {"temp", "101", "maximum"}, {"temp", "-1", "minimum"},   {"temp", "1.5", "valid"},
        {"temp", "1e2", "valid"},   {"temp", " 5", "valid"},     {"ratio", "nan", "valid"},
        {"ratio", "NaN", "valid"},  {"ratio", "inf", "valid"},   {"ratio", "-infinity", "valid"},
        {"ratio", "1e999", "valid"}, {"ratio", "1.6", "maximum"}, {"ratio", "-2", "minimum"},
        {"ratio", "", "valid"},
    };
    ke_rpc_status st;
    json_t *before = get_device("", "thermo", &st);
    assert_non_null(before);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        int code = set_desired("", "thermo", refused[i].prop, refused[i].value, &st);
        char prop[64];
        snprintf(prop, sizeof(prop), "\"%s\"", refused[i].prop);
        if (code != KE_RPC_INVALID_ARGUMENT || strncmp(st.message, "value: ", 7) != 0 ||
            !strstr(st.message, prop) || !strstr(st.message, refused[i].says))
            fail_msg("SetDesired %s=%s: got %s \"%s\"", refused[i].prop, refused[i].value,
                     ke_rpc_status_name(code), st.message);
    }
    json_t *after = get_device("", "thermo", &st);
    assert_non_null(after);
    assert_true(json_equal(before, after));
    json_decref(after);
    /* within the bounds: taken */
    assert_int_equal(set_desired("", "thermo", "temp", "100", &st), KE_RPC_OK);
    assert_int_equal(set_desired("", "thermo", "ratio", "-1.5", &st), KE_RPC_OK);
    after = get_device("", "thermo", &st);
    assert_false(json_equal(before, after));
    char *text = json_dumps(after, JSON_COMPACT);
    assert_non_null(strstr(text, "\"value\":\"100\""));
    assert_non_null(strstr(text, "\"value\":\"-1.5\""));
    free(text);
    json_decref(before);
    json_decref(after);
}

/* ---- 4: ListDevices honours kind ---- */

static void test_list_devices_honours_kind(void **state)
{
    (void)state;
    ke_rpc_status st;
    char buf[2048];
    const ProtobufCServiceDescriptor *dc = &ke__v1__device_controller__descriptor;
    assert_int_equal(list(dc, "ListDevices", "", "", "", "", &st, buf, sizeof(buf)), KE_RPC_OK);
    assert_non_null(strstr(buf, "Device/default/thermo "));
    assert_null(strstr(buf, "DeviceModel/"));
    assert_int_equal(list(dc, "ListDevices", "DeviceModel", "", "", "", &st, buf, sizeof(buf)),
                     KE_RPC_OK);
    assert_non_null(strstr(buf, "DeviceModel/default/thermo-model "));
    assert_null(strstr(buf, "Device/"));
    assert_int_equal(list(dc, "ListDevices", "Pod", "", "", "", &st, buf, sizeof(buf)),
                     KE_RPC_INVALID_ARGUMENT);
}

/* ---- 5: kind names in every form, on every call ---- */

static const char *const cm_forms[] = {"ConfigMap", "configmap", "configmaps", "cm"};
static const char *const node_forms[] = {"Node", "node", "nodes", "no"};
static const char *const device_forms[] = {"Device", "device", "devices", "DEVICES"};
static const char *const model_forms[] = {"DeviceModel", "devicemodel", "devicemodels",
                                          "DeviceModels"};

static void test_kind_names_are_accepted_in_every_form_on_every_call(void **state)
{
    (void)state;
    ke_rpc_status st;
    char buf[4096], first[512];
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"forms\"}}");
    uint64_t cm_rv = rv_of("ConfigMap", "default", "forms");
    uint64_t node_rv = rv_of("Node", "", "ghost");
    for (int i = 0; i < 4; i++) {
        const char *f = cm_forms[i];
        json_t *o = get(f, "", "forms", &st);
        if (!o)
            fail_msg("Get %s: %s", f, st.message);
        json_decref(o);
        assert_int_equal(ec_list(f, "default", &st, buf, sizeof(buf)), KE_RPC_OK);
        assert_non_null(strstr(buf, "ConfigMap/default/forms "));
        assert_int_equal(ec_watch(f, "default", cm_rv - 1, &st, first, sizeof(first)), KE_RPC_OK);
        assert_string_equal(first, "default/forms");
        char name[32], json[256];
        snprintf(name, sizeof(name), "gone-%d", i);
        snprintf(json, sizeof(json), "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":"
                                     "{\"name\":\"%s\"}}", name);
        apply_ok(json);
        if (del(f, "", name, 0, 0, &st) != KE_RPC_OK)
            fail_msg("Delete %s: %s", f, st.message);
        assert_null(get("ConfigMap", "default", name, &st));
        assert_int_equal(st.code, KE_RPC_NOT_FOUND);

        f = node_forms[i];
        o = get(f, "", "ghost", &st);
        if (!o)
            fail_msg("Get %s: %s", f, st.message);
        json_decref(o);
        assert_int_equal(ec_list(f, "", &st, buf, sizeof(buf)), KE_RPC_OK);
        assert_non_null(strstr(buf, "Node//ghost "));
        /* a watch replays the node's last change */
        assert_int_equal(ec_watch(f, "", node_rv - 1, &st, first, sizeof(first)), KE_RPC_OK);

        /* DeviceController: ListDevices and WatchDevices */
        const ProtobufCServiceDescriptor *dc = &ke__v1__device_controller__descriptor;
        assert_int_equal(list(dc, "ListDevices", device_forms[i], "", "", "", &st, buf,
                              sizeof(buf)),
                         KE_RPC_OK);
        assert_non_null(strstr(buf, "Device/default/thermo "));
        assert_int_equal(list(dc, "ListDevices", model_forms[i], "", "", "", &st, buf,
                              sizeof(buf)),
                         KE_RPC_OK);
        assert_non_null(strstr(buf, "DeviceModel/default/thermo-model "));
        assert_int_equal(watch(dc, "WatchDevices", model_forms[i], "", "", "",
                               rv_of("DeviceModel", "", "thermo-model") - 1, &st, first,
                               sizeof(first)),
                         KE_RPC_OK);
        assert_string_equal(first, "default/thermo-model");
        assert_int_equal(watch(dc, "WatchDevices", device_forms[i], "", "", "",
                               rv_of("Device", "", "thermo") - 1, &st, first, sizeof(first)),
                         KE_RPC_OK);
        assert_string_equal(first, "default/thermo");
        /* EdgeController serves devices under any of their names too */
        o = get(device_forms[i], "", "thermo", &st);
        assert_non_null(o);
        json_decref(o);
    }
    /* An object's own kind field is its Kind, as in Kubernetes: a resource
     * name there is refused, saying which Kind was meant. */
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"configmaps\",\"metadata\":{"
                           "\"name\":\"x\"}}",
                           &st),
                     KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "\"ConfigMap\""));
    /* kectl: every form, on get and delete */
    char out[4096];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(run(out, sizeof(out), "get %s forms", cm_forms[i]), 0);
        assert_non_null(strstr(out, "forms"));
        assert_int_equal(run(out, sizeof(out), "get %s ghost", node_forms[i]), 0);
        assert_non_null(strstr(out, "ghost"));
        assert_int_equal(run(out, sizeof(out), "get %s thermo", device_forms[i]), 0);
        assert_non_null(strstr(out, "thermo"));
        apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                 "\"by-kectl\"}}");
        assert_int_equal(run(out, sizeof(out), "delete %s by-kectl", cm_forms[i]), 0);
        assert_null(get("ConfigMap", "", "by-kectl", &st));
        assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    }
}

/* ---- 6: the empty namespace ---- */

/* poke_elsewhere sets a new desired value of other/elsewhere (a twin event). */
static void poke_elsewhere(void)
{
    static int n;
    char v[16];
    ke_rpc_status st;
    snprintf(v, sizeof(v), "%d", ++n);
    assert_int_equal(set_desired("other", "elsewhere", "temp", v, &st), KE_RPC_OK);
}

static void test_empty_namespace_is_default_for_one_object_and_all_for_lists(void **state)
{
    (void)state;
    ke_rpc_status st;
    char buf[4096], first[512];
    /* Apply without a namespace: "default" */
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"ns-a\"}}");
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"ns-b\","
             "\"namespace\":\"other\"}}");
    json_t *o = get("ConfigMap", "default", "ns-a", &st);
    assert_non_null(o);
    json_decref(o);
    /* Get "" is "default": finds ns-a, not other's ns-b */
    o = get("ConfigMap", "", "ns-a", &st);
    assert_non_null(o);
    json_decref(o);
    assert_null(get("ConfigMap", "", "ns-b", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    /* List "" is every namespace */
    assert_int_equal(ec_list("ConfigMap", "", &st, buf, sizeof(buf)), KE_RPC_OK);
    assert_non_null(strstr(buf, "ConfigMap/default/ns-a "));
    assert_non_null(strstr(buf, "ConfigMap/other/ns-b "));
    assert_int_equal(ec_list("ConfigMap", "other", &st, buf, sizeof(buf)), KE_RPC_OK);
    assert_null(strstr(buf, "ns-a"));
    /* Watch "" is every namespace: the first event after ns-a's version is other's ns-b */
    assert_int_equal(ec_watch("ConfigMap", "", rv_of("ConfigMap", "", "ns-a"), &st, first,
                              sizeof(first)),
                     KE_RPC_OK);
    assert_string_equal(first, "other/ns-b");
    /* Delete "" is "default" */
    assert_int_equal(del("ConfigMap", "", "ns-b", 0, 0, &st), KE_RPC_NOT_FOUND);
    o = get("ConfigMap", "other", "ns-b", &st);
    assert_non_null(o);
    json_decref(o);
    assert_int_equal(del("ConfigMap", "", "ns-a", 0, 0, &st), KE_RPC_OK);
    assert_null(get("ConfigMap", "default", "ns-a", &st));
    /* cluster-scoped: the namespace must be empty, on every call */
    assert_null(get("Node", "default", "ghost", &st));
    assert_int_equal(st.code, KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(ec_list("Node", "default", &st, NULL, 0), KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(ec_watch("Node", "default", 0, &st, NULL, 0), KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(del("Node", "default", "ghost", 0, 0, &st), KE_RPC_INVALID_ARGUMENT);
    o = get("Node", "", "ghost", &st); /* and the refusals changed nothing */
    assert_non_null(o);
    json_decref(o);
    /* DeviceController: the same rule */
    apply_ok("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
             "\"metadata\":{\"name\":\"thermo-model\",\"namespace\":\"other\"},\"spec\":{"
             "\"properties\":[{\"name\":\"temp\",\"type\":\"INT\"}]}}");
    apply_ok("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"
             "\"name\":\"elsewhere\",\"namespace\":\"other\"},\"spec\":{\"deviceModelRef\":{"
             "\"name\":\"thermo-model\"},\"nodeName\":\"ghost\"}}");
    o = get_device("", "thermo", &st);
    assert_non_null(o);
    json_decref(o);
    assert_null(get_device("", "elsewhere", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    const ProtobufCServiceDescriptor *dc = &ke__v1__device_controller__descriptor;
    assert_int_equal(list(dc, "ListDevices", "", "", "", "", &st, buf, sizeof(buf)), KE_RPC_OK);
    assert_non_null(strstr(buf, "Device/default/thermo "));
    assert_non_null(strstr(buf, "Device/other/elsewhere "));
    assert_int_equal(set_desired("", "elsewhere", "temp", "1", &st), KE_RPC_NOT_FOUND);
    Ke__V1__DeviceRef tref = KE__V1__DEVICE_REF__INIT;
    tref.name = "thermo";
    assert_int_equal(unary(dc, "GetTwin", &tref.base, &st, NULL), KE_RPC_OK);
    tref.name = "elsewhere";
    assert_int_equal(unary(dc, "GetTwin", &tref.base, &st, NULL), KE_RPC_NOT_FOUND);
    tref.namespace_ = "other";
    assert_int_equal(unary(dc, "GetTwin", &tref.base, &st, NULL), KE_RPC_OK);
    assert_int_equal(set_desired("other", "elsewhere", "temp", "1", &st), KE_RPC_OK);
    assert_int_equal(watch(dc, "WatchDevices", "", "", "", "",
                           rv_of("Device", "default", "thermo") - 1, &st, first, sizeof(first)),
                     KE_RPC_OK);
    /* WatchTwins "" is every namespace: other's device reports its twin */
    Ke__V1__WatchTwinsRequest wt = KE__V1__WATCH_TWINS_REQUEST__INIT;
    wt.name = "elsewhere";
    assert_int_equal(stream_poke(dc, "WatchTwins", &wt.base, poke_elsewhere, &st, NULL, 0),
                     KE_RPC_OK);
}

/* ---- 7: forced deletion of a pod whose node is gone ---- */

#define POD(name)                                                                               \
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"" name "\"},\"spec\":{"  \
    "\"nodeName\":\"ghost\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}"

static void test_force_delete_removes_a_pod_whose_node_never_confirms(void **state)
{
    (void)state;
    ke_rpc_status st;
    apply_ok(POD("stuck"));
    /* a normal delete only marks it: the node must confirm */
    assert_int_equal(del("Pod", "", "stuck", 0, 0, &st), KE_RPC_OK);
    json_t *o = get("Pod", "", "stuck", &st);
    assert_non_null(o);
    assert_non_null(json_object_get(json_object_get(o, "metadata"), "deletionTimestamp"));
    json_decref(o);
    /* force with a grace period is still graceful (and records it) */
    assert_int_equal(del("Pod", "", "stuck", 1, 5, &st), KE_RPC_OK);
    o = get("Pod", "", "stuck", &st);
    assert_non_null(o);
    json_decref(o);
    /* force with grace 0: gone from the store at once */
    assert_int_equal(del("Pod", "", "stuck", 1, 0, &st), KE_RPC_OK);
    assert_null(get("Pod", "", "stuck", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    char buf[2048];
    assert_int_equal(ec_list("Pod", "", &st, buf, sizeof(buf)), KE_RPC_OK);
    assert_null(strstr(buf, "/stuck "));

    /* the grace period is recorded on a graceful delete */
    apply_ok(POD("graceful"));
    assert_int_equal(del("Pod", "", "graceful", 0, 7, &st), KE_RPC_OK);
    o = get("Pod", "", "graceful", &st);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "metadata"),
                                                        "deletionGracePeriodSeconds")),
                     7);
    json_decref(o);

    /* kectl: the same, from the command line */
    char out[4096];
    apply_ok(POD("stuck2"));
    assert_int_equal(run(out, sizeof(out), "delete pod stuck2"), 0);
    o = get("Pod", "", "stuck2", &st);
    assert_non_null(o);
    json_decref(o);
    assert_int_equal(run(out, sizeof(out), "delete pod stuck2 --grace-period=0"), 0);
    o = get("Pod", "", "stuck2", &st); /* 0 without --force is 1: still graceful */
    assert_non_null(o);
    json_decref(o);
    assert_int_equal(run(out, sizeof(out), "delete pod stuck2 --force --grace-period=0"), 0);
    assert_non_null(strstr(out, "force deleted"));
    assert_null(get("Pod", "", "stuck2", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
}

/* ---- 8: Secret data ---- */

static void test_secret_string_data_is_merged_and_data_must_be_base64(void **state)
{
    (void)state;
    ke_rpc_status st;
    /* "b2xk" is base64("old"); stringData's a overrides it */
    apply_ok("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"creds\"},"
             "\"data\":{\"a\":\"b2xk\",\"keep\":\"a2VlcA==\"},"
             "\"stringData\":{\"a\":\"new\",\"b\":\"plain text\"}}");
    json_t *o = get("Secret", "", "creds", &st);
    assert_non_null(o);
    assert_null(json_object_get(o, "stringData"));
    json_t *data = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_object_get(data, "a")), "bmV3");
    assert_string_equal(json_string_value(json_object_get(data, "b")), "cGxhaW4gdGV4dA==");
    assert_string_equal(json_string_value(json_object_get(data, "keep")), "a2VlcA==");

    /* data that is not base64 is refused, naming the key; nothing changes */
    static const char *const bad[] = {"not base64!", "abc", "ab=c", "a===", "YQ=\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *s = json_pack("{s:s,s:s,s:{s:s},s:{s:s}}", "apiVersion", "v1", "kind", "Secret",
                              "metadata", "name", "creds", "data", "x", bad[i]);
        char *text = json_dumps(s, JSON_COMPACT);
        assert_int_equal(apply(text, &st), KE_RPC_INVALID_ARGUMENT);
        if (strncmp(st.message, "data.x: not base64", 18) != 0)
            fail_msg("data %s: \"%s\"", bad[i], st.message);
        free(text);
        json_decref(s);
    }
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                           "\"creds\"},\"stringData\":{\"n\":5}}",
                           &st),
                     KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(strncmp(st.message, "stringData.n: ", 14), 0);
    json_t *after = get("Secret", "", "creds", &st);
    assert_true(json_equal(o, after));
    json_decref(after);
    json_decref(o);
    assert_null(get("Secret", "", "never", &st));
}

/* ---- 9: JSON nesting depth ---- */

/* nested returns a pod whose spec holds `levels` objects inside each other. */
static char *nested(int levels)
{
    json_t *inner = json_object(), *top = inner;
    for (int i = 1; i < levels; i++)
        top = json_pack("{s:o}", "x", top);
    json_t *pod = json_loads(POD("deep"), 0, NULL);
    json_object_set_new(json_object_get(pod, "spec"), "extra", top);
    char *text = json_dumps(pod, JSON_COMPACT);
    json_decref(pod);
    return text;
}

static void test_json_nesting_deeper_than_the_bound_is_refused_naming_where(void **state)
{
    (void)state;
    ke_rpc_status st;
    char *text = nested(100); /* spec.extra is at depth 3: 102 in all */
    assert_int_equal(apply(text, &st), KE_RPC_INVALID_ARGUMENT);
    free(text);
    if (strncmp(st.message, "spec.extra.x.x.x", 16) != 0 || !strstr(st.message, "64 levels"))
        fail_msg("deep object: \"%s\"", st.message);
    assert_null(get("Pod", "", "deep", &st));
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);
    text = nested(62); /* 64 in all: taken */
    int code = apply(text, &st);
    free(text);
    if (code != KE_RPC_OK)
        fail_msg("64 levels: %s", st.message);
    text = nested(63);
    assert_int_equal(apply(text, &st), KE_RPC_INVALID_ARGUMENT);
    free(text);
}

/* ---- 10: selectors with control bytes ---- */

static void test_selectors_with_control_bytes_are_refused(void **state)
{
    (void)state;
    ke_rpc_status st;
    const ProtobufCServiceDescriptor *ec = &ke__v1__edge_controller__descriptor,
                                     *dc = &ke__v1__device_controller__descriptor;
    assert_int_equal(list(ec, "List", "Pod", "", "app=web\x01", "", &st, NULL, 0),
                     KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(strncmp(st.message, "label_selector: ", 16), 0);
    assert_int_equal(list(ec, "List", "Pod", "", "", "metadata.name=a\nb", &st, NULL, 0),
                     KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(strncmp(st.message, "field_selector: ", 16), 0);
    assert_null(strchr(st.message, '\n'));
    assert_int_equal(watch(ec, "Watch", "Pod", "", "a\x7f", "", 0, &st, NULL, 0),
                     KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(strncmp(st.message, "label_selector: ", 16), 0);
    assert_int_equal(list(dc, "ListDevices", "", "", "x=\x1b[2J", "", &st, NULL, 0),
                     KE_RPC_INVALID_ARGUMENT);
    assert_int_equal(strncmp(st.message, "label_selector: ", 16), 0);
    /* a NUL inside the string: sent as raw bytes of field 3 (label_selector) */
    static const uint8_t raw[] = {0x1a, 0x09, 'a', 'p', 'p', '=', 'w', 0x00, 'e', 'b', 'x'};
    ProtobufCMessageUnknownField uf = {.tag = 3,
                                       .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                                       .len = sizeof(raw) - 1,
                                       .data = (uint8_t *)raw + 1};
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = "Pod";
    req.base.n_unknown_fields = 1;
    req.base.unknown_fields = &uf;
    assert_int_equal(unary(ec, "List", &req.base, &st, NULL), KE_RPC_INVALID_ARGUMENT);
    if (strncmp(st.message, "label_selector: ", 16) != 0)
        fail_msg("NUL in a selector: \"%s\"", st.message);
    /* a plain selector still works */
    char buf[1024];
    assert_int_equal(list(ec, "List", "Pod", "", "app=web", "", &st, buf, sizeof(buf)),
                     KE_RPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permanent_errors_are_never_unavailable),
        cmocka_unit_test(test_every_invalid_argument_names_the_field_path),
        cmocka_unit_test(test_set_desired_enforces_the_model_bounds_and_refuses_nan_and_inf),
        cmocka_unit_test(test_list_devices_honours_kind),
        cmocka_unit_test(test_kind_names_are_accepted_in_every_form_on_every_call),
        cmocka_unit_test(test_empty_namespace_is_default_for_one_object_and_all_for_lists),
        cmocka_unit_test(test_force_delete_removes_a_pod_whose_node_never_confirms),
        cmocka_unit_test(test_secret_string_data_is_merged_and_data_must_be_base64),
        cmocka_unit_test(test_json_nesting_deeper_than_the_bound_is_refused_naming_where),
        cmocka_unit_test(test_selectors_with_control_bytes_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
