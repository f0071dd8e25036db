/*
 * test_k8s_rest.c — the REST conventions the Kubernetes API gateway and
 * MetaServer share (lib/k8s/ke_k8s_rest) and the one printing of kinds'
 * columns (lib/k8s/ke_k8s_print): request paths, query parameters, the
 * HTTP map of errors, Status, List, watch events and Table objects, ages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_k8s_print.h"
#include "ke_k8s_rest.h"
#include "ke_time.h"

#include <stdio.h>
#include <string.h>

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, 0, &je);
    if (!v)
        fail_msg("bad test JSON (%s): %s", je.text, s);
    return v;
}

static void test_paths(void **state)
{
    (void)state;
    ke_k8s_path p;
    char why[256];
    assert_int_equal(ke_k8s_path_parse("/api/v1/namespaces/shop/pods/web/status", &p, why,
                                       sizeof(why)), 0);
    assert_string_equal(p.group, "");
    assert_string_equal(p.ns, "shop");
    assert_true(p.ns_given);
    assert_string_equal(p.resource, "pods");
    assert_string_equal(p.name, "web");
    assert_string_equal(p.sub, "status");
    assert_string_equal(p.kind->kind, "Pod");

    assert_int_equal(ke_k8s_path_parse("/api/v1/pods", &p, why, sizeof(why)), 0);
    assert_false(p.ns_given);
    assert_string_equal(p.name, "");

    /* the Namespace itself, and its status */
    assert_int_equal(ke_k8s_path_parse("/api/v1/namespaces/shop", &p, why, sizeof(why)), 0);
    assert_string_equal(p.kind->kind, "Namespace");
    assert_string_equal(p.name, "shop");
    assert_int_equal(ke_k8s_path_parse("/api/v1/namespaces/shop/status", &p, why, sizeof(why)),
                     0);
    assert_string_equal(p.kind->kind, "Namespace");
    assert_string_equal(p.sub, "status");

    /* a group-version of its own; a cluster-scoped kind */
    assert_int_equal(ke_k8s_path_parse("/apis/devices.kubeedge.io/v1beta1/namespaces/default/"
                                       "devices/thermometer-1", &p, why, sizeof(why)), 0);
    assert_string_equal(p.kind->kind, "Device");
    assert_string_equal(p.group, "devices.kubeedge.io");
    assert_int_equal(ke_k8s_path_parse("/api/v1/nodes/edge-1", &p, why, sizeof(why)), 0);
    assert_string_equal(p.kind->kind, "Node");

    /* not resource paths of this server: 404 */
    static const char *const missing[] = {
        "/api/v2/pods",          "/api/v1/widgets",       "/apis/devices.kubeedge.io/v1/devices",
        "/apis/devices.kubeedge.io/v1beta1/pods", "/healthz", "/api/v1/namespaces/a/pods/b/c/d",
        "/apis",                 "",
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        assert_int_equal(ke_k8s_path_parse(missing[i], &p, why, sizeof(why)), KE_ENOTFOUND);
    /* a name or namespace no object can have */
    assert_int_equal(ke_k8s_path_parse("/api/v1/namespaces/shop/pods/Bad_Name", &p, why,
                                       sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "name"));
    assert_string_equal(p.resource, "pods");
    assert_int_equal(ke_k8s_path_parse("/api/v1/namespaces/Shop/pods", &p, why, sizeof(why)),
                     KE_EINVAL);
    char longname[400];
    memset(longname, 'a', sizeof(longname));
    memcpy(longname, "/api/v1/nodes/", 14);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_not_equal(ke_k8s_path_parse(longname, &p, why, sizeof(why)), 0);
}

static void test_query(void **state)
{
    (void)state;
    ke_k8s_query q;
    char why[256];
    ke_k8s_query_init(&q);
    assert_int_equal(q.grace, -1);
    assert_int_equal(q.include_object, 1);
    assert_int_equal(ke_k8s_query_set(&q, "watch", "True", why, sizeof(why)), 0); /* python */
    assert_true(q.watch);
    assert_int_equal(ke_k8s_query_set(&q, "watch", NULL, why, sizeof(why)), 0);
    assert_true(q.watch);
    assert_int_equal(ke_k8s_query_set(&q, "limit", "500", why, sizeof(why)), 0);
    assert_int_equal(q.limit, 500);
    assert_int_equal(ke_k8s_query_set(&q, "resourceVersion", "1234", why, sizeof(why)), 0);
    assert_int_equal(q.rv, 1234);
    assert_int_equal(ke_k8s_query_set(&q, "includeObject", "Object", why, sizeof(why)), 0);
    assert_int_equal(q.include_object, 2);
    assert_int_equal(ke_k8s_query_set(&q, "unknownParam", "x", why, sizeof(why)), 0);
    static const char *const bad[][2] = {
        {"limit", "ten"},           {"limit", "-1"},          {"watch", "maybe"},
        {"resourceVersion", "abc"}, {"timeoutSeconds", "1s"}, {"gracePeriodSeconds", "-5"},
        {"includeObject", "All"},   {"fieldValidation", "Loud"}, {"dryRun", "Some"},
        {"resourceVersionMatch", "Newest"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(ke_k8s_query_set(&q, bad[i][0], bad[i][1], why, sizeof(why)),
                         KE_EINVAL);
        assert_int_equal(strncmp(why, bad[i][0], strlen(bad[i][0])), 0);
    }
}

static void test_status_list_events(void **state)
{
    (void)state;
    const char *reason;
    assert_int_equal(ke_k8s_http_of(KE_ENOTFOUND, &reason), 404);
    assert_string_equal(reason, "NotFound");
    assert_int_equal(ke_k8s_http_of(KE_ECONFLICT, &reason), 409);
    assert_string_equal(reason, "Conflict");
    assert_int_equal(ke_k8s_http_of(KE_EGONE, &reason), 410);
    assert_int_equal(ke_k8s_http_of(KE_EDB, &reason), 500);

    const ke_k8s_kind *dev = ke_k8s_kind_find("Device");
    json_t *st = ke_k8s_status(404, "NotFound", "devices \"x\" not found", dev, "x");
    assert_string_equal(json_string_value(json_object_get(st, "status")), "Failure");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 404);
    assert_string_equal(ke_k8s_str(st, "details.kind"), "devices");
    assert_string_equal(ke_k8s_str(st, "details.group"), "devices.kubeedge.io");
    json_decref(st);

    json_t *l = ke_k8s_list(ke_k8s_kind_find("pods"), parse("[{\"kind\":\"Pod\"}]"), 42, "tok");
    assert_string_equal(ke_k8s_str(l, "kind"), "PodList");
    assert_string_equal(ke_k8s_str(l, "metadata.resourceVersion"), "42");
    assert_string_equal(ke_k8s_str(l, "metadata.continue"), "tok");
    assert_int_equal(json_array_size(json_object_get(l, "items")), 1);
    json_decref(l);

    json_t *obj = parse("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}");
    json_t *e = ke_k8s_watch_event(KE_STORE_DELETED, obj);
    assert_string_equal(ke_k8s_str(e, "type"), "DELETED");
    assert_string_equal(ke_k8s_str(e, "object.metadata.name"), "a");
    json_decref(e);
    json_decref(obj);
    e = ke_k8s_watch_bookmark(ke_k8s_kind_find("Pod"), 77);
    assert_string_equal(ke_k8s_str(e, "type"), "BOOKMARK");
    assert_string_equal(ke_k8s_str(e, "object.metadata.resourceVersion"), "77");
    json_decref(e);
    e = ke_k8s_watch_error(410, "Expired", "too old");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "object"), "code")),
                     410);
    json_decref(e);
}

static void test_table(void **state)
{
    (void)state;
    assert_int_equal(ke_k8s_accepts_table("application/json;as=Table;v=v1;g=meta.k8s.io,"
                                          "application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                                          "application/json"), 1);
    assert_int_equal(ke_k8s_accepts_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
                     2);
    assert_int_equal(ke_k8s_accepts_table("application/json"), 0);
    assert_int_equal(ke_k8s_accepts_table(NULL), 0);

    int64_t now = 0;
    assert_int_equal(ke_time_rfc3339_parse("2026-01-01T00:10:00Z", &now), 0);
    json_t *pods = parse(
        "[{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"namespace\":\"d\","
        "\"creationTimestamp\":\"2026-01-01T00:00:00Z\"},\"spec\":{\"nodeName\":\"edge-1\","
        "\"containers\":[{\"name\":\"a\"},{\"name\":\"b\"}]},\"status\":{\"phase\":\"Running\","
        "\"podIP\":\"10.0.0.5\",\"containerStatuses\":[{\"ready\":true,\"restartCount\":2,"
        "\"state\":{\"running\":{}}},{\"ready\":false,\"restartCount\":1,\"state\":{\"waiting\":"
        "{\"reason\":\"CrashLoopBackOff\"}}}]}}]");
    json_t *t = ke_k8s_table(ke_k8s_kind_find("Pod"), "v1", pods, 1, 9, NULL, now);
    json_t *cols = json_object_get(t, "columnDefinitions");
    assert_string_equal(ke_k8s_str(t, "apiVersion"), "meta.k8s.io/v1");
    assert_string_equal(ke_k8s_str(json_array_get(cols, 0), "name"), "Name");
    assert_string_equal(ke_k8s_str(json_array_get(cols, 5), "name"), "IP");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(cols, 5), "priority")), 1);
    json_t *cells = json_object_get(json_array_get(json_object_get(t, "rows"), 0), "cells");
    assert_string_equal(json_string_value(json_array_get(cells, 0)), "web");
    assert_string_equal(json_string_value(json_array_get(cells, 1)), "1/2");
    assert_string_equal(json_string_value(json_array_get(cells, 2)), "CrashLoopBackOff");
    assert_int_equal(json_integer_value(json_array_get(cells, 3)), 3);
    assert_string_equal(json_string_value(json_array_get(cells, 4)), "10m");
    assert_string_equal(json_string_value(json_array_get(cells, 5)), "10.0.0.5");
    assert_string_equal(json_string_value(json_array_get(cells, 6)), "edge-1");
    json_t *row = json_array_get(json_object_get(t, "rows"), 0);
    assert_string_equal(ke_k8s_str(row, "object.kind"), "PartialObjectMetadata");
    assert_string_equal(ke_k8s_str(row, "object.metadata.name"), "web");
    json_decref(t);
    json_decref(pods);
}

static void test_ages(void **state)
{
    (void)state;
    static const struct {
        int64_t s;
        const char *want;
    } cases[] = {
        {0, "0s"},        {119, "119s"},      {125, "2m5s"},   {600, "10m"},    {3 * 3600, "3h"},
        {3 * 3600 + 240, "3h4m"}, {30 * 3600, "30h"}, {3 * 86400 + 3600, "3d1h"}, {40 * 86400, "40d"},
        {3 * 365 * 86400 + 86400, "3y1d"}, {-5, "<invalid>"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ke_k8s_human_duration(buf, sizeof(buf), cases[i].s);
        assert_string_equal(buf, cases[i].want);
    }
    ke_k8s_age(buf, sizeof(buf), "not a time", 0);
    assert_string_equal(buf, "<unknown>");
    int64_t ms;
    assert_int_equal(ke_time_rfc3339_parse("2026-01-01T01:00:00+01:00", &ms), 0);
    int64_t utc;
    assert_int_equal(ke_time_rfc3339_parse("2026-01-01T00:00:00.123Z", &utc), 0);
    assert_int_equal(ms, utc); /* the fraction is dropped */
    assert_int_equal(ke_time_rfc3339_parse("2026-13-01T00:00:00Z", &ms), KE_EINVAL);
    assert_int_equal(ke_time_rfc3339_parse("2026-01-01 00:00:00Z", &ms), KE_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),           cmocka_unit_test(test_query),
        cmocka_unit_test(test_status_list_events), cmocka_unit_test(test_table),
        cmocka_unit_test(test_ages),
    };
    return cmocka_run_group_tests_name("k8s_rest", tests, NULL, NULL);
}
