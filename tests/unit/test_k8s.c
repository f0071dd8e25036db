/*
 * test_k8s.c — the kind table and object validation: every refusal names
 * the field path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_rest.h"

#include <string.h>

static void expect(const char *json, const char *why_prefix)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    assert_non_null(o);
    char why[256] = "";
    int rc = ke_k8s_validate(o, why, sizeof(why));
    json_decref(o);
    if (!why_prefix) {
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, KE_EINVAL);
    if (strncmp(why, why_prefix, strlen(why_prefix)) != 0)
        fail_msg("got \"%s\", want a message starting \"%s\"", why, why_prefix);
}

#define POD(spec) "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\"},\"spec\":" spec "}"

static void test_k8s_valid_objects_pass(void **state)
{
    (void)state;
    expect(POD("{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}"),
           NULL);
    expect("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cfg\"},"
           "\"data\":{\"a\":\"1\"}}",
           NULL);
    expect("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
           "\"metadata\":{\"name\":\"thermo\"},\"spec\":{\"properties\":[{\"name\":\"temp\","
           "\"type\":\"INT\",\"accessMode\":\"ReadWrite\"}]}}",
           NULL);
}

static void test_k8s_refusals_name_the_field(void **state)
{
    (void)state;
    expect("[]", "object:");
    expect("{\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"x\"}}", "kind: required");
    expect("{\"apiVersion\":\"v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"x\"}}",
           "kind: unknown kind \"Deployment\"");
    expect("{\"apiVersion\":\"v1\",\"kind\":7,\"metadata\":{\"name\":\"x\"}}", "kind: must be");
    expect("{\"apiVersion\":\"v2\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"x\"}}", "apiVersion:");
    expect("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{}}", "metadata.name: required");
    expect("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"Web_1\"}}",
           "metadata.name: must be");
    expect("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"w\",\"labels\":"
           "{\"app\":3}}}",
           "metadata.labels.app: must be a string");
    expect(POD("{\"containers\":[]}"), "spec.containers: required");
    expect(POD("{\"containers\":[{\"name\":\"c\"}]}"), "spec.containers[0].image: required");
    expect(POD("{\"containers\":[{\"name\":\"c\",\"image\":5}]}"),
           "spec.containers[0].image: must be a string");
    expect(POD("{\"nodeName\":1,\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}"),
           "spec.nodeName: must be a string");
    expect(POD("{\"restartPolicy\":\"Sometimes\",\"containers\":[{\"name\":\"c\",\"image\":\"i\"}]}"),
           "spec.restartPolicy:");
    expect("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"},"
           "\"data\":{\"n\":1}}",
           "data.n: must be a string");
    expect("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":"
           "{\"name\":\"d\"},\"spec\":{\"nodeName\":\"edge-1\"}}",
           "spec.deviceModelRef.name: required");
    expect("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\",\"metadata\":"
           "{\"name\":\"m\"},\"spec\":{\"properties\":[{\"name\":\"t\",\"type\":\"COLOUR\"}]}}",
           "spec.properties[0].type:");
}

/* Query booleans are spelled as Go's strconv.ParseBool takes them: the API
 * server's, and python3-kubernetes sends "True". */
static void test_k8s_query_booleans_as_the_api_server(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "True", "TRUE", "t", "T", "1", ""};
    static const char *const no[] = {"false", "False", "FALSE", "f", "F", "0"};
    char why[128];
    ke_k8s_query q;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        ke_k8s_query_init(&q);
        assert_int_equal(ke_k8s_query_set(&q, "watch", yes[i], why, sizeof(why)), 0);
        assert_int_equal(q.watch, 1);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        ke_k8s_query_init(&q);
        assert_int_equal(ke_k8s_query_set(&q, "watch", no[i], why, sizeof(why)), 0);
        assert_int_equal(q.watch, 0);
    }
    ke_k8s_query_init(&q);
    assert_int_equal(ke_k8s_query_set(&q, "watch", "yes", why, sizeof(why)), KE_EINVAL);
    assert_int_equal(ke_k8s_query_set(&q, "limit", "abc", why, sizeof(why)), KE_EINVAL);
}

static void test_k8s_kind_names_resolve(void **state)
{
    (void)state;
    assert_string_equal(ke_k8s_kind_find("po")->kind, "Pod");
    assert_string_equal(ke_k8s_kind_find("configmaps")->kind, "ConfigMap");
    assert_string_equal(ke_k8s_kind_find("Node")->kind, "Node");
    assert_int_equal(ke_k8s_kind_find("nodes")->namespaced, 0);
    assert_null(ke_k8s_kind_find("deployments"));
}

static void test_k8s_numbers_are_finite(void **state)
{
    (void)state;
    static const char *const ok[] = {"0", "-3.5", "1e3", "100"};
    static const char *const bad[] = {"", " 1", "nan", "NaN", "inf", "-Infinity", "1e999",
                                      "1x", "0x"};
    double d;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        json_t *v = json_string(ok[i]);
        assert_int_equal(ke_k8s_parse_number(v, &d), 0);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *v = json_string(bad[i]);
        if (ke_k8s_parse_number(v, &d) != KE_EINVAL)
            fail_msg("\"%s\" was taken as a number", bad[i]);
        json_decref(v);
    }
    json_t *n = json_real(2.5);
    assert_int_equal(ke_k8s_parse_number(n, &d), 0);
    assert_true(d == 2.5);
    json_decref(n);
}

static void test_k8s_secret_data_is_base64_and_string_data_merges(void **state)
{
    (void)state;
#define SECRET(rest) "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\"}" rest "}"
    expect(SECRET(",\"data\":{\"a\":\"YWJj\",\"b\":\"YQ==\",\"c\":\"\"}"), NULL);
    expect(SECRET(",\"data\":{\"a\":\"abc\"}"), "data.a: not base64");
    expect(SECRET(",\"data\":{\"a\":\"YQ=a\"}"), "data.a: not base64");
    expect(SECRET(",\"data\":{\"a\":\"Y===\"}"), "data.a: not base64");
    expect(SECRET(",\"data\":{\"a\":\"YW-j\"}"), "data.a: not base64");
    expect(SECRET(",\"stringData\":{\"a\":[]}"), "stringData.a: must be a string");
    json_t *o = json_loads(SECRET(",\"data\":{\"a\":\"b2xk\",\"k\":\"YQ==\"},"
                                  "\"stringData\":{\"a\":\"new\",\"b\":\"xy\"}"),
                           0, NULL);
    assert_int_equal(ke_k8s_secret_merge(o), 0);
    assert_null(json_object_get(o, "stringData"));
    json_t *data = json_object_get(o, "data");
    assert_string_equal(json_string_value(json_object_get(data, "a")), "bmV3");
    assert_string_equal(json_string_value(json_object_get(data, "b")), "eHk=");
    assert_string_equal(json_string_value(json_object_get(data, "k")), "YQ==");
    json_decref(o);
}

static void test_k8s_json_depth_is_bounded_naming_where(void **state)
{
    (void)state;
    json_t *v = json_object();
    for (int i = 1; i < 5; i++)
        v = i == 2 ? json_pack("[o]", v) : json_pack("{s:o}", "a", v);
    char why[256];
    /* {"a":{"a":[{"a":{}}]}}: depth 5 */
    assert_int_equal(ke_k8s_json_depth_check(v, 5, why, sizeof(why)), 0);
    assert_int_equal(ke_k8s_json_depth_check(v, 4, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "a.a[0].a: nested deeper than 4 levels");
    json_decref(v);
}

static void test_k8s_namespace_rule(void **state)
{
    (void)state;
    const char *ns = NULL;
    char why[256];
    const ke_k8s_kind *pod = ke_k8s_kind_find("pods"), *node = ke_k8s_kind_find("no");
    assert_int_equal(ke_k8s_resolve_ns(pod, "", 1, &ns, why, sizeof(why)), 0);
    assert_string_equal(ns, "default");
    assert_int_equal(ke_k8s_resolve_ns(pod, NULL, 0, &ns, why, sizeof(why)), 0);
    assert_string_equal(ns, "");
    assert_int_equal(ke_k8s_resolve_ns(pod, "team", 0, &ns, why, sizeof(why)), 0);
    assert_string_equal(ns, "team");
    assert_int_equal(ke_k8s_resolve_ns(pod, "a.b", 1, &ns, why, sizeof(why)), KE_EINVAL);
    assert_int_equal(strncmp(why, "namespace: ", 11), 0);
    assert_int_equal(ke_k8s_resolve_ns(node, "", 1, &ns, why, sizeof(why)), 0);
    assert_string_equal(ns, "");
    assert_int_equal(ke_k8s_resolve_ns(node, "default", 0, &ns, why, sizeof(why)), KE_EINVAL);
    assert_int_equal(strncmp(why, "namespace: must be empty", 24), 0);
    assert_int_equal(ke_k8s_check_name("", "ref.name", why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "ref.name: required");
    assert_int_equal(ke_k8s_check_name("web.1", "name", why, sizeof(why)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_k8s_valid_objects_pass),
        cmocka_unit_test(test_k8s_refusals_name_the_field),
        cmocka_unit_test(test_k8s_kind_names_resolve),
        cmocka_unit_test(test_k8s_query_booleans_as_the_api_server),
        cmocka_unit_test(test_k8s_numbers_are_finite),
        cmocka_unit_test(test_k8s_secret_data_is_base64_and_string_data_merges),
        cmocka_unit_test(test_k8s_json_depth_is_bounded_naming_where),
        cmocka_unit_test(test_k8s_namespace_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
