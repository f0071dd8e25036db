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

static void test_k8s_kind_names_resolve(void **state)
{
    (void)state;
    assert_string_equal(ke_k8s_kind_find("po")->kind, "Pod");
    assert_string_equal(ke_k8s_kind_find("configmaps")->kind, "ConfigMap");
    assert_string_equal(ke_k8s_kind_find("Node")->kind, "Node");
    assert_int_equal(ke_k8s_kind_find("nodes")->namespaced, 0);
    assert_null(ke_k8s_kind_find("deployments"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_k8s_valid_objects_pass),
        cmocka_unit_test(test_k8s_refusals_name_the_field),
        cmocka_unit_test(test_k8s_kind_names_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
