/*
 * test_k8s_schema.c — the embedded OpenAPI schema: objects of every kind
 * served (deploy/examples among them) pass strict field validation,
 * unknown fields are named by path and wrong types refused, the strategic
 * merge patch facts are found, and the /openapi/v2 and /openapi/v3
 * documents carry what kubectl looks for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_k8s_schema.h"

#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o)
        fail_msg("bad test JSON: %s (line %d)", je.text, je.line);
    return o;
}

/* check runs strict validation of text; want_rc and, when want_why is
 * set, the exact message. */
static void check(const char *text, int want_rc, const char *want_why)
{
    json_t *o = parse(text);
    char why[512] = "";
    int rc = ke_k8s_schema_check(o, why, sizeof(why));
    json_decref(o);
    if (rc != want_rc)
        fail_msg("rc %d, want %d (why: %s) for %s", rc, want_rc, why, text);
    if (want_why && strcmp(why, want_why) != 0)
        fail_msg("got \"%s\", want \"%s\"", why, want_why);
}

/* deploy/examples/web.yaml, with env, ports, resources and a Service. */
static const char *const web_pod =
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"labels\":{\"app\":"
    "\"web\"}},\"spec\":{\"nodeName\":\"edge-1\",\"hostNetwork\":true,\"restartPolicy\":"
    "\"Always\",\"terminationGracePeriodSeconds\":5,\"containers\":[{\"name\":\"web\",\"image\":"
    "\"localhost/busybox:1.0\",\"imagePullPolicy\":\"IfNotPresent\",\"command\":[\"sh\",\"-c\"],"
    "\"args\":[\"exec httpd -f -p 8080\"],\"envFrom\":[{\"configMapRef\":{\"name\":"
    "\"web-config\"}}],\"env\":[{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"valueFrom\":"
    "{\"secretKeyRef\":{\"name\":\"web-secret\",\"key\":\"password\"}}}],\"ports\":[{"
    "\"containerPort\":8080,\"name\":\"http\",\"protocol\":\"TCP\"}],\"resources\":{\"limits\":"
    "{\"cpu\":1,\"memory\":\"64Mi\"},\"requests\":{\"cpu\":\"100m\"}},\"volumeMounts\":[{"
    "\"name\":\"secret\",\"mountPath\":\"/etc/web\"}],\"readinessProbe\":{\"httpGet\":{\"path\":"
    "\"/index.html\",\"port\":8080},\"periodSeconds\":2},\"livenessProbe\":{\"tcpSocket\":{"
    "\"port\":\"http\"}}}],\"volumes\":[{\"name\":\"secret\",\"secret\":{\"secretName\":"
    "\"web-secret\"}},{\"name\":\"tmp\",\"emptyDir\":{\"sizeLimit\":\"1Gi\"}}],\"tolerations\":"
    "[{\"key\":\"k\",\"operator\":\"Exists\"}],\"os\":{\"name\":\"linux\"},"
    "\"initContainers\":[{\"name\":\"side\",\"image\":\"i\",\"restartPolicy\":\"Always\","
    "\"startupProbe\":{\"grpc\":{\"port\":9000}}}]},\"status\":null}";

/* deploy/examples/thermometer.yaml, the Device with a status. */
static const char *const thermometer =
    "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"
    "\"name\":\"thermometer-1\",\"labels\":{\"room\":\"hall\"}},\"spec\":{\"deviceModelRef\":{"
    "\"name\":\"thermometer\"},\"nodeName\":\"edge-1\",\"protocol\":{\"protocolName\":"
    "\"modbus\",\"configData\":{\"slaveID\":1}},\"properties\":[{\"name\":\"temperature\","
    "\"reportCycle\":10000,\"collectCycle\":1000,\"reportToCloud\":true,\"visitors\":{"
    "\"protocolName\":\"modbus\",\"configData\":{\"register\":\"HoldingRegister\","
    "\"offset\":2}},\"pushMethod\":{\"mqtt\":{\"topic\":\"t\"}}},{\"name\":"
    "\"target-temperature\",\"desired\":{\"value\":\"20\",\"metadata\":{\"timestamp\":"
    "\"1700000000000\",\"type\":\"int\"}}}]},\"status\":{\"state\":\"online\","
    "\"lastOnlineTime\":\"2026-11-30T12:00:00Z\",\"twins\":[{\"propertyName\":\"temperature\","
    "\"reported\":{\"value\":\"21\",\"metadata\":{\"timestamp\":\"1700000000000\"}},"
    "\"observedDesired\":{\"value\":\"20\"}}]}}";

static void test_schema_valid_objects_pass(void **state)
{
    (void)state;
    assert_int_equal(ke_k8s_schema_load(), 0);
    check(web_pod, 0, "");
    check(thermometer, 0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"web-config\"},"
          "\"data\":{\"GREETING\":\"hello from the cloud\"}}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"web-secret\"},"
          "\"type\":\"Opaque\",\"data\":{\"password\":\"c2VjcmV0\"},\"stringData\":{\"a\":\"b\"}}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\","
          "\"namespace\":\"default\"},\"spec\":{\"selector\":{\"app\":\"web\"},\"type\":"
          "\"ClusterIP\",\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080},{\"port\":"
          "81,\"targetPort\":\"http\",\"protocol\":\"TCP\"}]}}",
          0, "");
    check("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\",\"metadata\":"
          "{\"name\":\"thermometer\"},\"spec\":{\"protocol\":\"modbus\",\"properties\":[{\"name\":"
          "\"temperature\",\"type\":\"INT\",\"accessMode\":\"ReadOnly\",\"unit\":\"celsius\","
          "\"description\":\"d\"},{\"name\":\"target-temperature\",\"type\":\"INT\",\"accessMode\":"
          "\"ReadWrite\",\"minimum\":5,\"maximum\":\"30\"}]}}",
          0, "");
    check("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"
          "\"name\":\"vsensor-1\"},\"spec\":{\"deviceModelRef\":{\"name\":\"virtual-sensor\"},"
          "\"nodeName\":\"edge-1\"}}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"edge-1\"},\"spec\":{"
          "\"podCIDRs\":[\"10.0.0.0/24\"],\"taints\":[{\"key\":\"k\",\"effect\":\"NoSchedule\"}]},"
          "\"status\":{\"capacity\":{\"cpu\":\"4\",\"memory\":\"8Gi\",\"pods\":110},\"addresses\":"
          "[{\"type\":\"InternalIP\",\"address\":\"10.0.0.1\"}],\"conditions\":[{\"type\":"
          "\"Ready\",\"status\":\"True\",\"lastHeartbeatTime\":\"2026-11-30T12:00:00Z\"}]}}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"ns\","
          "\"finalizers\":[\"x\"],\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Pod\","
          "\"name\":\"p\",\"uid\":\"u\"}]}}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":{\"name\":\"e\"},"
          "\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"web\"},\"reason\":\"Started\","
          "\"count\":2,\"type\":\"Normal\",\"firstTimestamp\":\"2026-11-30T12:00:00Z\"}",
          0, "");
    check("{\"apiVersion\":\"v1\",\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"7\"},"
          "\"items\":[]}",
          0, "");
}

static void test_schema_unknown_fields_named_by_path(void **state)
{
    (void)state;
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"extra\":1,\"metadata\":{\"name\":\"p\","
          "\"labelz\":{}},\"spec\":{\"foo\":1,\"containers\":[{\"name\":\"a\",\"image\":\"i\"},"
          "{\"name\":\"b\",\"imagee\":\"i\",\"env\":[{\"name\":\"E\",\"vaule\":\"x\"}]}],"
          "\"volumes\":[{\"name\":\"v\",\"secret\":{\"secretNam\":\"s\"}}]}}",
          KE_EINVAL,
          "strict decoding error: unknown field \"extra\", unknown field \"metadata.labelz\", "
          "unknown field \"spec.foo\", unknown field \"spec.containers[1].imagee\", unknown field "
          "\"spec.containers[1].env[0].vaule\", unknown field "
          "\"spec.volumes[0].secret.secretNam\"");
    check("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\",\"metadata\":{"
          "\"name\":\"d\"},\"spec\":{\"deviceModelRef\":{\"name\":\"m\",\"kind\":\"x\"},"
          "\"properties\":[{\"name\":\"a\"},{\"name\":\"b\",\"desired\":{\"valu\":\"1\"}}]},"
          "\"status\":{\"twins\":[{\"propertyName\":\"a\",\"reportedd\":{}}]}}",
          KE_EINVAL,
          "strict decoding error: unknown field \"spec.deviceModelRef.kind\", unknown field "
          "\"spec.properties[1].desired.valu\", unknown field \"status.twins[0].reportedd\"");
    check("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\",\"metadata\":"
          "{\"name\":\"m\"},\"spec\":{\"properties\":[{\"name\":\"a\",\"type\":\"INT\","
          "\"acessMode\":\"ReadOnly\"}]}}",
          KE_EINVAL, "strict decoding error: unknown field \"spec.properties[0].acessMode\"");
    check("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"},"
          "\"dat\":{}}",
          KE_EINVAL, "strict decoding error: unknown field \"dat\"");

    /* a short buffer keeps whole entries only */
    json_t *o = parse("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"aaaa\":1,\"bbbb\":2,"
                      "\"cccc\":3}");
    char why[64];
    assert_int_equal(ke_k8s_schema_check(o, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "strict decoding error: unknown field \"aaaa\"");
    assert_int_equal(ke_k8s_schema_check(o, NULL, 0), KE_EINVAL);
    char tiny[16];
    assert_int_equal(ke_k8s_schema_check(o, tiny, sizeof(tiny)), KE_EINVAL);
    assert_string_equal(tiny, "strict decoding");
    json_decref(o);
}

static void test_schema_wrong_types_refused(void **state)
{
    (void)state;
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"containers\":{\"name\":\"a\"}}}",
          KE_EINVAL, "spec.containers: expected array, got object");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":7}]}}",
          KE_EINVAL, "spec.containers[0].name: expected string, got integer");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":\"x\"}", KE_EINVAL,
          "spec: expected object, got string");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"hostNetwork\":\"yes\","
          "\"containers\":[]}}",
          KE_EINVAL, "spec.hostNetwork: expected boolean, got string");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"terminationGracePeriodSeconds\":"
          "1.5}}",
          KE_EINVAL, "spec.terminationGracePeriodSeconds: expected integer, got number");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"spec\":{\"ports\":[{\"port\":1,"
          "\"targetPort\":true}]}}",
          KE_EINVAL, "spec.ports[0].targetPort: expected string or integer, got boolean");
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"a\","
          "\"resources\":{\"limits\":{\"cpu\":[]}}}]}}",
          KE_EINVAL,
          "spec.containers[0].resources.limits.cpu: expected string or number, got array");
    check("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"data\":{\"a\":1}}", KE_EINVAL,
          "data.a: expected string, got integer");
    /* a type mismatch is reported over unknown fields */
    check("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"zz\":1,\"metadata\":[]}", KE_EINVAL,
          "metadata: expected object, got array");
    /* no schema: unknown kind or version; not an object */
    check("{\"apiVersion\":\"v1\",\"kind\":\"Gadget\"}", KE_ENOTFOUND, NULL);
    check("{\"apiVersion\":\"apps/v1\",\"kind\":\"Pod\"}", KE_ENOTFOUND, NULL);
    check("{\"apiVersion\":\"devices.kubeedge.io/v1alpha2\",\"kind\":\"Device\"}", KE_ENOTFOUND,
          NULL);
    check("{\"kind\":\"Pod\"}", KE_EINVAL, NULL);
    check("[1]", KE_EINVAL, NULL);
}

static void expect_meta(const char *kind, const char *path, const char *strategy,
                        const char *key)
{
    ke_k8s_patch_meta m = {NULL, NULL};
    int found = ke_k8s_schema_patch_meta(NULL, kind, path, &m);
    if (!strategy) {
        assert_int_equal(found, 0);
        return;
    }
    if (found != 1)
        fail_msg("no patch meta for %s %s", kind, path);
    assert_string_equal(m.strategy, strategy);
    if (key)
        assert_string_equal(m.merge_key, key);
    else
        assert_null(m.merge_key);
}

static void test_schema_patch_meta(void **state)
{
    (void)state;
    expect_meta("Pod", "spec.containers", "merge", "name");
    expect_meta("Pod", "spec.initContainers", "merge", "name");
    expect_meta("Pod", "spec.containers[].env", "merge", "name");
    expect_meta("Pod", "spec.containers[].ports", "merge", "containerPort");
    expect_meta("Pod", "spec.containers[].volumeMounts", "merge", "mountPath");
    expect_meta("Pod", "spec.volumes", "merge,retainKeys", "name");
    expect_meta("Pod", "spec.imagePullSecrets", "merge", "name");
    expect_meta("Pod", "metadata.finalizers", "merge", NULL);
    expect_meta("Pod", "metadata.ownerReferences", "merge", "uid");
    expect_meta("Pod", "status.conditions", "merge", "type");
    expect_meta("Service", "spec.ports", "merge", "port");
    expect_meta("Node", "spec.podCIDRs", "merge", NULL);
    expect_meta("Node", "status.addresses", "merge", "type");
    expect_meta("Device", "spec.properties", "merge", "name");
    expect_meta("DeviceModel", "spec.properties", "merge", "name");
    expect_meta("Pod", "spec.tolerations", NULL, NULL);
    expect_meta("Pod", "spec.containers[].args", NULL, NULL);
    expect_meta("Pod", "spec.nosuch", NULL, NULL);
    expect_meta("Pod", "spec.containers[].env[].nosuch", NULL, NULL);
    expect_meta("Gadget", "spec.containers", NULL, NULL);
    expect_meta("Pod", "", NULL, NULL);
    expect_meta("Pod", "spec..containers", NULL, NULL);
}

/* refs_resolve reports whether every $ref under v names a key of defs
 * with the prefix given. */
static int refs_resolve(const json_t *v, const json_t *defs, const char *prefix)
{
    if (json_is_object(v)) {
        const char *key;
        json_t *sub;
        json_object_foreach((json_t *)v, key, sub) {
            if (strcmp(key, "$ref") == 0) {
                const char *r = json_string_value(sub);
                if (!r || strncmp(r, prefix, strlen(prefix)) != 0 ||
                    !json_object_get(defs, r + strlen(prefix))) {
                    print_error("dangling ref %s\n", r ? r : "(none)");
                    return 0;
                }
            } else if (!refs_resolve(sub, defs, prefix)) {
                return 0;
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!refs_resolve(e, defs, prefix))
                return 0;
        }
    }
    return 1;
}

static int has_gvk(const json_t *schema, const char *group, const char *version,
                   const char *kind)
{
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(schema, "x-kubernetes-group-version-kind"), i, g) {
        if (strcmp(json_string_value(json_object_get(g, "group")), group) == 0 &&
            strcmp(json_string_value(json_object_get(g, "version")), version) == 0 &&
            strcmp(json_string_value(json_object_get(g, "kind")), kind) == 0)
            return 1;
    }
    return 0;
}

/* has_query_param reports whether op lists the query parameter name. */
static int has_query_param(const json_t *op, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(op, "parameters"), i, p) {
        const char *n = json_string_value(json_object_get(p, "name"));
        const char *in = json_string_value(json_object_get(p, "in"));
        if (n && in && strcmp(n, name) == 0 && strcmp(in, "query") == 0)
            return 1;
    }
    return 0;
}

static void test_schema_openapi_v2(void **state)
{
    (void)state;
    json_t *doc = ke_k8s_openapi_v2();
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "swagger")), "2.0");
    assert_non_null(json_object_get(json_object_get(doc, "info"), "title"));
    json_t *defs = json_object_get(doc, "definitions");
    json_t *pod = json_object_get(defs, "io.k8s.api.core.v1.Pod");
    assert_non_null(pod);
    assert_true(has_gvk(pod, "", "v1", "Pod"));
    assert_true(has_gvk(json_object_get(defs, "io.kubeedge.devices.v1beta1.Device"),
                        "devices.kubeedge.io", "v1beta1", "Device"));
    assert_non_null(json_object_get(defs, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert_true(refs_resolve(doc, defs, "#/definitions/"));
    json_t *item = json_object_get(json_object_get(doc, "paths"),
                                   "/api/v1/namespaces/{namespace}/pods/{name}");
    json_t *patch = json_object_get(item, "patch");
    assert_non_null(patch);
    assert_string_equal(json_string_value(json_object_get(patch, "x-kubernetes-action")),
                        "patch");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(patch, "x-kubernetes-group-version-kind"), "kind")),
                        "Pod");
    assert_true(has_query_param(patch, "fieldValidation"));
    json_t *p0 = json_array_get(json_object_get(patch, "parameters"), 0);
    assert_string_equal(json_string_value(json_object_get(p0, "type")), "string");
    assert_non_null(json_object_get(json_object_get(doc, "paths"), "/api/v1/nodes/{name}"));
    assert_non_null(json_object_get(json_object_get(doc, "paths"),
                                    "/apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/"
                                    "devicemodels/{name}"));
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    free(text);
    json_decref(doc);
}

static void test_schema_openapi_v3(void **state)
{
    (void)state;
    json_t *index = ke_k8s_openapi_v3_index(NULL);
    assert_non_null(index);
    json_t *paths = json_object_get(index, "paths");
    const char *u1 = json_string_value(
        json_object_get(json_object_get(paths, "api/v1"), "serverRelativeURL"));
    const char *u2 = json_string_value(json_object_get(
        json_object_get(paths, "apis/devices.kubeedge.io/v1beta1"), "serverRelativeURL"));
    assert_non_null(u1);
    assert_non_null(u2);
    assert_int_equal(strncmp(u1, "/openapi/v3/api/v1?hash=", 24), 0);
    assert_int_equal(strlen(u1), 24 + 64);
    assert_int_equal(strncmp(u2, "/openapi/v3/apis/devices.kubeedge.io/v1beta1?hash=", 50), 0);
    /* stable: the same document gives the same URL */
    json_t *again = ke_k8s_openapi_v3_index(NULL);
    assert_non_null(again);
    assert_true(json_equal(index, again));
    json_decref(again);
    json_decref(index);

    json_t *doc = ke_k8s_openapi_v3("/api/v1?hash=X");
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.0.0");
    json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    json_t *pod = json_object_get(schemas, "io.k8s.api.core.v1.Pod");
    assert_non_null(pod);
    assert_true(has_gvk(pod, "", "v1", "Pod"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(pod, "properties"), "spec"), "$ref")),
                        "#/components/schemas/io.k8s.api.core.v1.PodSpec");
    assert_non_null(json_object_get(schemas, "io.k8s.api.core.v1.Container"));
    assert_null(json_object_get(schemas, "io.kubeedge.devices.v1beta1.Device"));
    assert_true(refs_resolve(doc, schemas, "#/components/schemas/"));
    json_t *patch = json_object_get(
        json_object_get(json_object_get(doc, "paths"),
                        "/api/v1/namespaces/{namespace}/pods/{name}"),
        "patch");
    assert_non_null(patch);
    assert_true(has_query_param(patch, "fieldValidation"));
    size_t i;
    json_t *p;
    int seen = 0;
    json_array_foreach(json_object_get(patch, "parameters"), i, p) {
        if (strcmp(json_string_value(json_object_get(p, "name")), "fieldValidation") == 0) {
            json_t *s = json_object_get(p, "schema");
            assert_string_equal(json_string_value(json_object_get(s, "type")), "string");
            assert_true(json_is_true(json_object_get(s, "uniqueItems")));
            seen = 1;
        }
    }
    assert_true(seen);
    json_t *gvk = json_object_get(patch, "x-kubernetes-group-version-kind");
    assert_string_equal(json_string_value(json_object_get(gvk, "kind")), "Pod");
    assert_string_equal(json_string_value(json_object_get(gvk, "version")), "v1");
    assert_non_null(json_object_get(json_object_get(patch, "requestBody"), "content"));
    json_decref(doc);

    doc = ke_k8s_openapi_v3("apis/devices.kubeedge.io/v1beta1");
    assert_non_null(doc);
    schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    assert_true(has_gvk(json_object_get(schemas, "io.kubeedge.devices.v1beta1.DeviceModel"),
                        "devices.kubeedge.io", "v1beta1", "DeviceModel"));
    assert_null(json_object_get(schemas, "io.k8s.api.core.v1.Pod"));
    assert_true(refs_resolve(doc, schemas, "#/components/schemas/"));
    patch = json_object_get(
        json_object_get(json_object_get(doc, "paths"),
                        "/apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/devices/{name}"),
        "patch");
    assert_true(has_query_param(patch, "fieldValidation"));
    json_decref(doc);

    assert_null(ke_k8s_openapi_v3("apis/apps/v1"));
    assert_null(ke_k8s_openapi_v3(NULL));
}

/* pb_field finds field number `field` (length-delimited) in the message
 * [b, b+n) after *pos; sets *v and *vn to its bytes. 1 found, 0 not. */
static int pb_field(const unsigned char *b, size_t n, size_t *pos, unsigned field,
                    const unsigned char **v, size_t *vn)
{
    while (*pos < n) {
        uint64_t key = 0, len = 0;
        for (int shift = 0; *pos < n; shift += 7) {
            unsigned char c = b[(*pos)++];
            key |= (uint64_t)(c & 0x7f) << shift;
            if (!(c & 0x80))
                break;
        }
        unsigned wt = (unsigned)(key & 7);
        if (wt == 0) {
            while (*pos < n && (b[(*pos)++] & 0x80))
                ;
            continue;
        }
        assert_int_equal(wt, 2); /* the document uses varints and bytes only */
        for (int shift = 0; *pos < n; shift += 7) {
            unsigned char c = b[(*pos)++];
            len |= (uint64_t)(c & 0x7f) << shift;
            if (!(c & 0x80))
                break;
        }
        assert_true(len <= n - *pos);
        const unsigned char *d = b + *pos;
        *pos += len;
        if ((key >> 3) == field) {
            *v = d;
            *vn = len;
            return 1;
        }
    }
    return 0;
}

/* pb_named finds, among the repeated field `field` of a message, the
 * Named* entry (1: name, 2: value) called name; its value in *v, *vn. */
static int pb_named(const unsigned char *b, size_t n, unsigned field, const char *name,
                    const unsigned char **v, size_t *vn)
{
    size_t pos = 0;
    const unsigned char *e;
    size_t en;
    while (pb_field(b, n, &pos, field, &e, &en)) {
        size_t p2 = 0;
        const unsigned char *k;
        size_t kn;
        if (pb_field(e, en, &p2, 1, &k, &kn) && kn == strlen(name) && memcmp(k, name, kn) == 0) {
            p2 = 0;
            return pb_field(e, en, &p2, 2, v, vn);
        }
    }
    return 0;
}

static void test_schema_openapi_v2_protobuf(void **state)
{
    (void)state;
    unsigned char *b = NULL;
    size_t n = 0;
    assert_int_equal(ke_k8s_openapi_v2_pb(&b, &n), 0);
    assert_non_null(b);
    assert_true(n > 1000);
    assert_memory_equal(b, "\x0a\x03" "2.0", 5); /* swagger = 1 */
    const unsigned char *v, *w, *x;
    size_t vn, wn, xn, pos = 0;
    /* definitions (9) -> io.k8s.api.core.v1.Pod -> its vendor extensions (31) */
    assert_true(pb_field(b, n, &pos, 9, &v, &vn));
    assert_true(pb_named(v, vn, 1, "io.k8s.api.core.v1.Pod", &w, &wn));
    assert_true(pb_named(w, wn, 31, "x-kubernetes-group-version-kind", &x, &xn));
    pos = 0;
    const unsigned char *y;
    size_t yn;
    assert_true(pb_field(x, xn, &pos, 2, &y, &yn)); /* Any.yaml */
    const char *want = "[{\"group\":\"\",\"kind\":\"Pod\",\"version\":\"v1\"}]";
    assert_int_equal(yn, strlen(want));
    assert_memory_equal(y, want, yn);
    /* paths (8) -> the pod item -> patch (8) -> a query parameter fieldValidation */
    pos = 0;
    assert_true(pb_field(b, n, &pos, 8, &v, &vn));
    assert_true(pb_named(v, vn, 2, "/api/v1/namespaces/{namespace}/pods/{name}", &w, &wn));
    pos = 0;
    assert_true(pb_field(w, wn, &pos, 8, &x, &xn));
    int found = 0;
    pos = 0;
    while (!found && pb_field(x, xn, &pos, 8, &y, &yn)) { /* ParametersItem */
        const unsigned char *a, *c, *d, *e;
        size_t an, cn, dn, en, p1 = 0, p2 = 0, p3 = 0, p4 = 0;
        if (pb_field(y, yn, &p1, 1, &a, &an) && pb_field(a, an, &p2, 2, &c, &cn) &&
            pb_field(c, cn, &p3, 3, &d, &dn) && pb_field(d, dn, &p4, 4, &e, &en))
            found = en == strlen("fieldValidation") && memcmp(e, "fieldValidation", en) == 0;
    }
    assert_true(found);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_valid_objects_pass),
        cmocka_unit_test(test_schema_unknown_fields_named_by_path),
        cmocka_unit_test(test_schema_wrong_types_refused),
        cmocka_unit_test(test_schema_patch_meta),
        cmocka_unit_test(test_schema_openapi_v2),
        cmocka_unit_test(test_schema_openapi_v2_protobuf),
        cmocka_unit_test(test_schema_openapi_v3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
