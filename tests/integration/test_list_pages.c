/*
 * test_list_pages.c — lists by page and the deletion mark through a real
 * cloudcore (keadm init, mutual TLS, the user API as system:admin):
 * EdgeController.List of 1,200 pods comes in pages of 500/500/200 at one
 * resource version with no object twice; a malformed continue token is
 * INVALID_ARGUMENT naming continue_token; `kectl get` walks the pages and
 * prints every pod once (default chunk and --chunk-size); ListDevices
 * honours the request's kind (Device or DeviceModel) and pages too; an
 * Apply of a pod marked for deletion keeps metadata.deletionTimestamp.
 * No edge runs: pods stay unplaced, and a pod deleted gracefully stays
 * marked, its node never confirming.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define PODS 1200
#define KECTL_OUT_MAX (512 * 1024)

static ke_cluster C;
static char kectl[1024];

/* call makes one unary call as system:admin; returns the status code, the
 * reply in *reply (free it) and the message in msg. */
static int call(const ProtobufCServiceDescriptor *svc, const char *method,
                const ProtobufCMessage *req, ProtobufCMessage **reply, char *msg, size_t len)
{
    ke_rpc_stub stub = {C.admin, svc};
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 20000};
    ProtobufCMessage *r = NULL;
    assert_int_equal(ke_rpc_stub_unary(&stub, method, req, &o, &r, &st), 0);
    if (msg)
        snprintf(msg, len, "%s", st.message);
    if (reply)
        *reply = r;
    else if (r)
        protobuf_c_message_free_unpacked(r, NULL);
    return st.code;
}

/* apply applies one object; returns the status code and, when out is not
 * NULL and the call succeeded, the stored object. */
static int apply(const char *json, json_t **out)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    ProtobufCMessage *reply = NULL;
    char msg[512];
    int code = call(&ke__v1__edge_controller__descriptor, "Apply", &req.base, &reply, msg,
                    sizeof(msg));
    if (code != KE_RPC_OK)
        print_message("apply: %s\n", msg);
    if (out && reply) {
        Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
        *out = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, NULL);
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return code;
}

/* list asks one page; returns the status code; *reply on OK. */
static int list(const ProtobufCServiceDescriptor *svc, const char *method, const char *kind,
                const char *ns, uint32_t limit, const char *token, Ke__V1__ListReply **reply,
                char *msg, size_t len)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = (char *)kind;
    req.namespace_ = (char *)ns;
    req.limit = limit;
    req.continue_token = (char *)token;
    ProtobufCMessage *r = NULL;
    int code = call(svc, method, &req.base, &r, msg, len);
    *reply = (Ke__V1__ListReply *)r;
    return code;
}

/* item_name returns "ns/name" of a list item into buf. */
static const char *item_name(const ProtobufCBinaryData *b, char *buf, size_t len)
{
    json_t *o = json_loadb((const char *)b->data, b->len, 0, NULL);
    assert_non_null(o);
    json_t *md = json_object_get(o, "metadata");
    snprintf(buf, len, "%s/%s", json_string_value(json_object_get(md, "namespace")),
             json_string_value(json_object_get(md, "name")));
    json_decref(o);
    return buf;
}

/* run runs `kectl ARGS`; returns its exit code, stdout and stderr in out. */
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

static const char *pod_json(const char *ns, const char *name, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"%s\"},\"spec\":{\"containers\":[{\"name\":\"c\","
             "\"image\":\"busybox\"}]}}",
             name, ns);
    return buf;
}

static int setup(void **state)
{
    (void)state;
    ke_cluster_start(&C, NULL);
    snprintf(kectl, sizeof(kectl),
             "%s/tools/kectl --server 127.0.0.1:%d --ca %s/cloud/ca.crt --cert "
             "%s/cloud/admin.crt --key %s/cloud/admin.key",
             ke_tp_env("KE_BIN_DIR"), C.grpc_port, C.dir, C.dir, C.dir);
    /* a node that never connects: devices and pods bound to it stay put */
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":"
                           "\"edge-away\",\"labels\":{\"node-role.kubernetes.io/edge\":\"\"}}}",
                           NULL),
                     KE_RPC_OK);
    /* 1,200 pods, half in "default" and half in "team-b", applied out of order */
    char name[32], json[512];
    for (int i = 0; i < PODS; i++) {
        int n = (i * 7) % PODS;
        snprintf(name, sizeof(name), "pod-%04d", n / 2);
        assert_int_equal(apply(pod_json(n % 2 ? "team-b" : "default", name, json, sizeof(json)),
                               NULL),
                         KE_RPC_OK);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    return 0;
}

static void test_list_of_1200_pods_comes_in_pages_of_500_500_200(void **state)
{
    (void)state;
    static const size_t want[] = {500, 500, 200};
    static char seen[PODS][48];
    size_t nseen = 0, pages = 0;
    char token[1024] = "", msg[512];
    uint64_t rv = 0;
    do {
        Ke__V1__ListReply *r = NULL;
        assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", 0, token,
                              &r, msg, sizeof(msg)),
                         KE_RPC_OK);
        assert_true(pages < 3);
        assert_int_equal(r->n_items_json, want[pages]);
        if (pages == 0)
            rv = r->resource_version;
        assert_int_equal(r->resource_version, rv);
        for (size_t i = 0; i < r->n_items_json; i++) {
            char key[48];
            item_name(&r->items_json[i], key, sizeof(key));
            /* ordered by namespace then name: each key after the one before */
            if (nseen > 0 && strcmp(seen[nseen - 1], key) >= 0)
                fail_msg("%s listed after %s", key, seen[nseen - 1]);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", key);
        }
        snprintf(token, sizeof(token), "%s", r->continue_token);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        pages++;
        if (pages == 1) { /* a pod created after the first page is not on later pages */
            char json[512];
            assert_int_equal(apply(pod_json("team-b", "pod-9999", json, sizeof(json)), NULL),
                             KE_RPC_OK);
        }
    } while (token[0]);
    assert_int_equal(pages, 3);
    assert_int_equal(nseen, PODS);
    assert_string_equal(seen[0], "default/pod-0000");
    assert_string_equal(seen[PODS - 1], "team-b/pod-0599");

    /* one namespace: 600, in pages of 500 and 100 */
    Ke__V1__ListReply *r = NULL;
    assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "default", 0, "",
                          &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 500);
    snprintf(token, sizeof(token), "%s", r->continue_token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "default", 0,
                          token, &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 100);
    assert_string_equal(r->continue_token, "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_list_limit_is_honoured_and_large_limits_are_served(void **state)
{
    (void)state;
    char msg[512];
    Ke__V1__ListReply *r = NULL;
    assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", 7, "", &r,
                          msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 7);
    assert_true(r->continue_token[0]);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* past the cap (5,000): served at the cap, here everything at once */
    assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", 100000, "",
                          &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_true(r->n_items_json >= PODS);
    assert_string_equal(r->continue_token, "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_list_refuses_a_malformed_continue_token_naming_it(void **state)
{
    (void)state;
    static const char *const bad[] = {"not-a-token", "1:Pod:abc:default:pod-0001",
                                      "1:ConfigMap:1:default:x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[512];
        Ke__V1__ListReply *r = NULL;
        assert_int_equal(list(&ke__v1__edge_controller__descriptor, "List", "Pod", "", 0, bad[i],
                              &r, msg, sizeof(msg)),
                         KE_RPC_INVALID_ARGUMENT);
        assert_null(r);
        if (!strstr(msg, "continue_token"))
            fail_msg("refusal \"%s\" does not name continue_token", msg);
    }
}

/* count_lines_with counts the lines of out that contain text. */
static size_t count_lines_with(const char *out, const char *text)
{
    size_t n = 0;
    for (const char *p = out; (p = strstr(p, text)); p += strlen(text))
        n++;
    return n;
}

/* assert_every_pod_once checks that kectl's output holds every pod of
 * namespace ns (name column) exactly once. */
static void assert_every_pod_once(const char *out)
{
    for (int i = 0; i < PODS / 2; i++) {
        char name[32];
        snprintf(name, sizeof(name), "\npod-%04d ", i);
        size_t n = count_lines_with(out, name);
        if (n != 1)
            fail_msg("pod-%04d printed %zu times", i, n);
    }
}

static void test_kectl_get_walks_every_page_and_prints_every_object_once(void **state)
{
    (void)state;
    static char out[KECTL_OUT_MAX];
    /* the default chunk (500): 600 pods of "default" in two pages */
    assert_int_equal(run(out, sizeof(out), "get pods"), 0);
    assert_int_equal(strncmp(out, "NAME ", 5), 0);
    assert_int_equal(count_lines_with(out, "\n"), 1 + PODS / 2);
    assert_every_pod_once(out);
    /* --chunk-size 7: 86 pages, the same objects in the same order (names:
     * the table's AGE column may tick between two runs) */
    static char small[KECTL_OUT_MAX];
    assert_int_equal(run(small, sizeof(small), "get pods --chunk-size 7"), 0);
    assert_every_pod_once(small);
    assert_int_equal(run(out, sizeof(out), "get pods -o name"), 0);
    assert_int_equal(run(small, sizeof(small), "get pods -o name --chunk-size 7"), 0);
    assert_int_equal(count_lines_with(out, "pod/"), PODS / 2);
    assert_string_equal(small, out);
    /* every namespace, by name */
    assert_int_equal(run(out, sizeof(out), "get pods -A -o name --chunk-size 250"), 0);
    assert_true(count_lines_with(out, "pod/") >= PODS);
    assert_int_equal(run(out, sizeof(out), "get pods --chunk-size 0"), 2);
    assert_non_null(strstr(out, "--chunk-size"));
    assert_int_equal(run(out, sizeof(out), "get pods --chunk-size 5001"), 2);
}

static void test_list_devices_honours_the_kind_of_the_request(void **state)
{
    (void)state;
    assert_int_equal(apply("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":"
                           "\"DeviceModel\",\"metadata\":{\"name\":\"thermometer\"},\"spec\":{"
                           "\"properties\":[{\"name\":\"temperature\",\"type\":\"INT\","
                           "\"accessMode\":\"ReadOnly\"}]}}",
                           NULL),
                     KE_RPC_OK);
    for (int i = 0; i < 3; i++) {
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                 "\"metadata\":{\"name\":\"thermometer-%d\"},\"spec\":{\"deviceModelRef\":{"
                 "\"name\":\"thermometer\"},\"nodeName\":\"edge-away\"}}",
                 i);
        assert_int_equal(apply(json, NULL), KE_RPC_OK);
    }
    char msg[512], key[64];
    Ke__V1__ListReply *r = NULL;
    /* no kind: devices */
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "", "", 0, "",
                          &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 3);
    assert_string_equal(item_name(&r->items_json[0], key, sizeof(key)), "default/thermometer-0");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* DeviceModel: the model only */
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "DeviceModel",
                          "", 0, "", &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 1);
    json_t *o = json_loadb((const char *)r->items_json[0].data, r->items_json[0].len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "kind")), "DeviceModel");
    json_decref(o);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* Device by name, in pages of 2 */
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "Device", "", 2,
                          "", &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 2);
    char token[1024];
    snprintf(token, sizeof(token), "%s", r->continue_token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "Device", "", 2,
                          token, &r, msg, sizeof(msg)),
                     KE_RPC_OK);
    assert_int_equal(r->n_items_json, 1);
    assert_string_equal(item_name(&r->items_json[0], key, sizeof(key)), "default/thermometer-2");
    assert_string_equal(r->continue_token, "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* a token of the device list is not one for the model list */
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "DeviceModel",
                          "", 2, token, &r, msg, sizeof(msg)),
                     KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "continue_token"));
    /* anything else is not a device list */
    assert_int_equal(list(&ke__v1__device_controller__descriptor, "ListDevices", "Pod", "", 0,
                          "", &r, msg, sizeof(msg)),
                     KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "kind"));
}

static void test_apply_of_a_pod_marked_for_deletion_keeps_the_mark(void **state)
{
    (void)state;
    const char *pod = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"doomed\","
                      "\"labels\":{\"v\":\"1\"}},\"spec\":{\"nodeName\":\"edge-away\","
                      "\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}";
    assert_int_equal(apply(pod, NULL), KE_RPC_OK);
    /* graceful delete: marked, kept until the node confirms (it never will) */
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Pod";
    ref.namespace_ = "default";
    ref.name = "doomed";
    Ke__V1__DeleteRequest del = KE__V1__DELETE_REQUEST__INIT;
    del.ref = &ref;
    ProtobufCMessage *reply = NULL;
    assert_int_equal(call(&ke__v1__edge_controller__descriptor, "Delete", &del.base, &reply, NULL,
                          0),
                     KE_RPC_OK);
    Ke__V1__ObjectReply *dr = (Ke__V1__ObjectReply *)reply;
    json_t *marked = json_loadb((const char *)dr->object_json.data, dr->object_json.len, 0, NULL);
    protobuf_c_message_free_unpacked(reply, NULL);
    const char *ts = json_string_value(
        json_object_get(json_object_get(marked, "metadata"), "deletionTimestamp"));
    assert_non_null(ts);

    /* the same manifest applied again, with a change: the mark stays */
    const char *pod2 = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                       "\"doomed\",\"labels\":{\"v\":\"2\"}},\"spec\":{\"nodeName\":"
                       "\"edge-away\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}";
    json_t *out = NULL;
    assert_int_equal(apply(pod2, &out), KE_RPC_OK);
    json_t *md = json_object_get(out, "metadata");
    assert_non_null(json_string_value(json_object_get(md, "deletionTimestamp")));
    assert_string_equal(json_string_value(json_object_get(md, "deletionTimestamp")), ts);
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), "v")),
                        "2");
    json_decref(out);
    /* nor can the applied object move the mark */
    const char *pod3 = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                       "\"doomed\",\"deletionTimestamp\":\"2001-01-01T00:00:00Z\","
                       "\"deletionGracePeriodSeconds\":1},\"spec\":{\"nodeName\":"
                       "\"edge-away\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}";
    assert_int_equal(apply(pod3, &out), KE_RPC_OK);
    md = json_object_get(out, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "deletionTimestamp")), ts);
    assert_null(json_object_get(md, "deletionGracePeriodSeconds"));
    json_decref(out);
    /* and a new object cannot be created marked */
    const char *fresh = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
                        "\"fresh\",\"deletionTimestamp\":\"2001-01-01T00:00:00Z\"},\"spec\":{"
                        "\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}";
    assert_int_equal(apply(fresh, &out), KE_RPC_OK);
    assert_null(json_object_get(json_object_get(out, "metadata"), "deletionTimestamp"));
    json_decref(out);
    json_decref(marked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_of_1200_pods_comes_in_pages_of_500_500_200),
        cmocka_unit_test(test_list_limit_is_honoured_and_large_limits_are_served),
        cmocka_unit_test(test_list_refuses_a_malformed_continue_token_naming_it),
        cmocka_unit_test(test_kectl_get_walks_every_page_and_prints_every_object_once),
        cmocka_unit_test(test_list_devices_honours_the_kind_of_the_request),
        cmocka_unit_test(test_apply_of_a_pod_marked_for_deletion_keeps_the_mark),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
