/*
 * test_k8s_patch.c — the patch engine: RFC 7386 merge patch (the RFC's
 * example table), RFC 6902 JSON patch (every operation, pointers, failures
 * leaving the document unchanged) and strategic merge patch (list merge by
 * key, the directives, the shape `kubectl apply` sends).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_patch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &je);
    if (!v)
        fail_msg("bad test JSON (%s): %s", je.text, s);
    return v;
}

/* same fails unless got equals the JSON text want. */
static void same(const json_t *got, const char *want)
{
    json_t *w = parse(want);
    if (!json_equal((json_t *)got, w)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
        char *x = json_dumps(w, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
        print_error("got  %s\nwant %s\n", g, x);
        free(g);
        free(x);
        json_decref(w);
        fail();
    }
    json_decref(w);
}

/* ---- merge patch ---- */

static void merge_case(const char *orig, const char *patch, const char *want)
{
    json_t *d = parse(orig), *p = parse(patch);
    char why[256] = "";
    assert_int_equal(ke_k8s_merge_patch(&d, p, why, sizeof(why)), 0);
    same(d, want);
    json_decref(d);
    json_decref(p);
}

static void test_merge_patch_rfc7386_examples(void **state)
{
    (void)state;
    merge_case("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    merge_case("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}");
    merge_case("{\"a\":\"b\"}", "{\"a\":null}", "{}");
    merge_case("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}");
    merge_case("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    merge_case("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}");
    merge_case("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}",
               "{\"a\":{\"b\":\"d\"}}");
    merge_case("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}");
    merge_case("[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]");
    merge_case("{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]");
    merge_case("{\"a\":\"foo\"}", "null", "null");
    merge_case("{\"a\":\"foo\"}", "\"bar\"", "\"bar\"");
    merge_case("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}");
    merge_case("[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}");
    merge_case("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}");
}

static void test_merge_patch_depth_refused(void **state)
{
    (void)state;
    json_t *deep = json_object(), *cur = deep;
    for (int i = 0; i < KE_K8S_JSON_DEPTH_MAX + 2; i++) {
        json_t *n = json_object();
        json_object_set_new(cur, "a", n);
        cur = n;
    }
    json_t *d = parse("{\"x\":1}"), *orig = d;
    char why[256] = "";
    assert_int_equal(ke_k8s_merge_patch(&d, deep, why, sizeof(why)), KE_EINVAL);
    assert_ptr_equal(d, orig);
    assert_non_null(strstr(why, "nested deeper"));
    same(d, "{\"x\":1}");
    json_decref(d);
    json_decref(deep);
}

/* ---- JSON patch ---- */

static int jpatch(const char *doc, const char *ops, const char *want, char *why, size_t len)
{
    json_t *d = parse(doc), *o = parse(ops), *before = json_deep_copy(d);
    int rc = ke_k8s_json_patch(&d, o, why, len);
    if (rc == 0 && want)
        same(d, want);
    if (rc != 0)
        assert_true(json_equal(d, before)); /* unchanged on error */
    json_decref(d);
    json_decref(o);
    json_decref(before);
    return rc;
}

static void jp_ok(const char *doc, const char *ops, const char *want)
{
    char why[256] = "";
    int rc = jpatch(doc, ops, want, why, sizeof(why));
    if (rc)
        fail_msg("json patch failed (%d): %s", rc, why);
}

static void jp_err(const char *doc, const char *ops, int code, const char *why_part)
{
    char why[256] = "";
    assert_int_equal(jpatch(doc, ops, NULL, why, sizeof(why)), code);
    if (why_part && !strstr(why, why_part))
        fail_msg("got \"%s\", want it to contain \"%s\"", why, why_part);
}

static void test_json_patch_operations(void **state)
{
    (void)state;
    /* add: object member, array insert, "-" append, whole document */
    jp_ok("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\"}]",
          "{\"foo\":\"bar\",\"baz\":\"qux\"}");
    jp_ok("{\"foo\":[\"bar\",\"baz\"]}", "[{\"op\":\"add\",\"path\":\"/foo/1\",\"value\":\"qux\"}]",
          "{\"foo\":[\"bar\",\"qux\",\"baz\"]}");
    jp_ok("{\"foo\":[\"bar\"]}", "[{\"op\":\"add\",\"path\":\"/foo/-\",\"value\":[\"abc\"]}]",
          "{\"foo\":[\"bar\",[\"abc\"]]}");
    jp_ok("{\"foo\":1}", "[{\"op\":\"add\",\"path\":\"\",\"value\":{\"x\":2}}]", "{\"x\":2}");
    jp_ok("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"/a\",\"value\":null}]", "{\"a\":null}");
    /* remove, replace */
    jp_ok("{\"baz\":\"qux\",\"foo\":\"bar\"}", "[{\"op\":\"remove\",\"path\":\"/baz\"}]",
          "{\"foo\":\"bar\"}");
    jp_ok("{\"foo\":[\"bar\",\"qux\",\"baz\"]}", "[{\"op\":\"remove\",\"path\":\"/foo/1\"}]",
          "{\"foo\":[\"bar\",\"baz\"]}");
    jp_ok("{\"baz\":\"qux\",\"foo\":\"bar\"}",
          "[{\"op\":\"replace\",\"path\":\"/baz\",\"value\":\"boo\"}]",
          "{\"baz\":\"boo\",\"foo\":\"bar\"}");
    jp_ok("{\"a\":[1,2,3]}", "[{\"op\":\"replace\",\"path\":\"/a/1\",\"value\":9}]",
          "{\"a\":[1,9,3]}");
    /* move, copy */
    jp_ok("{\"foo\":{\"bar\":\"baz\",\"waldo\":\"fred\"},\"qux\":{\"corge\":\"grault\"}}",
          "[{\"op\":\"move\",\"from\":\"/foo/waldo\",\"path\":\"/qux/thud\"}]",
          "{\"foo\":{\"bar\":\"baz\"},\"qux\":{\"corge\":\"grault\",\"thud\":\"fred\"}}");
    jp_ok("{\"foo\":[\"all\",\"grass\",\"cows\",\"eat\"]}",
          "[{\"op\":\"move\",\"from\":\"/foo/1\",\"path\":\"/foo/3\"}]",
          "{\"foo\":[\"all\",\"cows\",\"eat\",\"grass\"]}");
    jp_ok("{\"a\":{\"b\":[1]}}", "[{\"op\":\"copy\",\"from\":\"/a/b\",\"path\":\"/c\"},"
                                 "{\"op\":\"add\",\"path\":\"/c/-\",\"value\":2}]",
          "{\"a\":{\"b\":[1]},\"c\":[1,2]}");
    jp_ok("{\"a\":[1,2]}", "[{\"op\":\"copy\",\"from\":\"/a/0\",\"path\":\"/a/-\"}]",
          "{\"a\":[1,2,1]}");
    /* escapes: ~1 is '/', ~0 is '~' */
    jp_ok("{\"a/b\":1,\"m~n\":2}",
          "[{\"op\":\"replace\",\"path\":\"/a~1b\",\"value\":3},"
          "{\"op\":\"remove\",\"path\":\"/m~0n\"}]",
          "{\"a/b\":3}");
    jp_ok("{\"metadata\":{\"labels\":{}}}",
          "[{\"op\":\"add\",\"path\":\"/metadata/labels/app.kubernetes.io~1name\","
          "\"value\":\"web\"}]",
          "{\"metadata\":{\"labels\":{\"app.kubernetes.io/name\":\"web\"}}}");
    /* test, numbers by value */
    jp_ok("{\"a\":{\"b\":[1,\"x\"]},\"n\":1}",
          "[{\"op\":\"test\",\"path\":\"/a\",\"value\":{\"b\":[1.0,\"x\"]}},"
          "{\"op\":\"test\",\"path\":\"/n\",\"value\":1}]",
          "{\"a\":{\"b\":[1,\"x\"]},\"n\":1}");
    jp_ok("{\"a\":1}", "[]", "{\"a\":1}");
}

static void test_json_patch_failures_leave_doc_unchanged(void **state)
{
    (void)state;
    /* a failed test is a conflict, even after earlier ops applied */
    jp_err("{\"a\":1,\"b\":2}",
           "[{\"op\":\"replace\",\"path\":\"/a\",\"value\":5},"
           "{\"op\":\"test\",\"path\":\"/b\",\"value\":3}]",
           KE_ECONFLICT, "ops[1].path");
    jp_err("{\"a\":1}", "[{\"op\":\"test\",\"path\":\"/zz\",\"value\":1}]", KE_ECONFLICT,
           "does not exist");
    jp_err("{\"a\":\"1\"}", "[{\"op\":\"test\",\"path\":\"/a\",\"value\":1}]", KE_ECONFLICT, NULL);
    /* bad pointers */
    jp_err("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"a\"}]", KE_EINVAL, "starts with '/'");
    jp_err("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"/~2\"}]", KE_EINVAL, "'~'");
    jp_err("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"/b\"}]", KE_EINVAL, "does not exist");
    jp_err("{\"a\":1}", "[{\"op\":\"replace\",\"path\":\"/b/c\",\"value\":1}]", KE_EINVAL,
           "does not exist");
    jp_err("{\"a\":[1]}", "[{\"op\":\"add\",\"path\":\"/a/2\",\"value\":1}]", KE_EINVAL,
           "out of range");
    jp_err("{\"a\":[1]}", "[{\"op\":\"add\",\"path\":\"/a/01\",\"value\":1}]", KE_EINVAL, NULL);
    jp_err("{\"a\":[1]}", "[{\"op\":\"remove\",\"path\":\"/a/-\"}]", KE_EINVAL, NULL);
    jp_err("{\"a\":1}", "[{\"op\":\"move\",\"from\":\"/x\",\"path\":\"/y\"}]", KE_EINVAL,
           "ops[0].from");
    jp_err("{\"a\":{\"b\":1}}", "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a/b/c\"}]",
           KE_EINVAL, "into itself");
    jp_err("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"\"}]", KE_EINVAL, NULL);
    /* malformed operations */
    jp_err("{\"a\":1}", "{\"op\":\"add\"}", KE_EINVAL, "array");
    jp_err("{\"a\":1}", "[{\"op\":\"frob\",\"path\":\"/a\"}]", KE_EINVAL, "unknown operation");
    jp_err("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"/a\"}]", KE_EINVAL, "value");
    jp_err("{\"a\":1}", "[{\"path\":\"/a\"}]", KE_EINVAL, "ops[0].op");
    jp_err("{\"a\":1}", "[7]", KE_EINVAL, "ops[0]");
}

static void test_json_patch_bounds(void **state)
{
    (void)state;
    char why[256] = "";
    /* too many operations */
    json_t *ops = json_array();
    for (int i = 0; i <= KE_K8S_JSON_PATCH_OPS_MAX; i++)
        json_array_append_new(ops, json_pack("{s:s,s:s,s:i}", "op", "test", "path", "/a",
                                             "value", 1));
    json_t *d = parse("{\"a\":1}");
    assert_int_equal(ke_k8s_json_patch(&d, ops, why, sizeof(why)), KE_EINVAL);
    json_array_remove(ops, 0);
    assert_int_equal(ke_k8s_json_patch(&d, ops, why, sizeof(why)), 0);
    json_decref(ops);
    /* copies of the document into itself stop at the copy budget */
    ops = json_array();
    json_array_append_new(ops, json_pack("{s:s,s:s,s:s}", "op", "add", "path", "/s", "value",
                                         "0123456789012345678901234567890123456789"));
    for (int i = 0; i < 40; i++) {
        char path[16];
        snprintf(path, sizeof(path), "/k%d", i);
        json_array_append_new(ops, json_pack("{s:s,s:s,s:s}", "op", "copy", "from", "", "path",
                                             path));
    }
    assert_int_equal(ke_k8s_json_patch(&d, ops, why, sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "copies exceed"));
    same(d, "{\"a\":1}");
    json_decref(ops);
    /* a value may not nest the document past the depth bound */
    ops = json_array();
    json_t *p = json_string("/x"), *prev = NULL;
    for (int i = 0; i < KE_K8S_JSON_DEPTH_MAX + 3; i++) {
        json_array_append_new(ops, json_pack("{s:s,s:O,s:{}}", "op", "add", "path",
                                             prev ? prev : p, "value"));
        char *np = malloc(strlen(json_string_value(prev ? prev : p)) + 3);
        sprintf(np, "%s/x", json_string_value(prev ? prev : p));
        json_decref(prev);
        prev = json_string(np);
        free(np);
    }
    assert_int_equal(ke_k8s_json_patch(&d, ops, why, sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "too deep"));
    same(d, "{\"a\":1}");
    json_decref(prev);
    json_decref(p);
    json_decref(ops);
    json_decref(d);
}

/* ---- strategic merge patch ---- */

static int test_meta(void *ud, const char *kind, const char *path, ke_k8s_patch_meta *m)
{
    (void)ud;
    if (strcmp(kind, "Pod") != 0)
        return 0;
    static const struct {
        const char *path, *strategy, *key;
    } tab[] = {
        {"spec.containers", "merge", "name"},
        {"spec.containers[].env", "merge", "name"},
        {"spec.containers[].ports", "merge", "containerPort"},
        {"spec.volumes", "merge,retainKeys", "name"},
        {"metadata.finalizers", "merge", NULL},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (!strcmp(tab[i].path, path)) {
            m->strategy = tab[i].strategy;
            m->merge_key = tab[i].key;
            return 1;
        }
    }
    return 0;
}

static int smp(const char *doc, const char *patch, const char *want, char *why, size_t len)
{
    json_t *d = parse(doc), *p = parse(patch), *before = json_deep_copy(d), *orig = d;
    int rc = ke_k8s_strategic_patch(&d, p, "Pod", test_meta, NULL, why, len);
    if (rc == 0 && want)
        same(d, want);
    if (rc != 0) {
        assert_ptr_equal(d, orig);
        assert_true(json_equal(d, before));
    }
    json_decref(d);
    json_decref(p);
    json_decref(before);
    return rc;
}

static void smp_ok(const char *doc, const char *patch, const char *want)
{
    char why[256] = "";
    int rc = smp(doc, patch, want, why, sizeof(why));
    if (rc)
        fail_msg("strategic patch failed (%d): %s", rc, why);
}

static void smp_err(const char *doc, const char *patch, const char *want_why)
{
    char why[256] = "";
    assert_int_equal(smp(doc, patch, NULL, why, sizeof(why)), KE_EINVAL);
    if (want_why && strcmp(why, want_why) != 0)
        fail_msg("got \"%s\", want \"%s\"", why, want_why);
}

#define POD2 "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"spec\":{" \
             "\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.24\",\"env\":["        \
             "{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"2\"}],"         \
             "\"ports\":[{\"containerPort\":80,\"protocol\":\"TCP\"}]},"                   \
             "{\"name\":\"side\",\"image\":\"busybox\"}]}}"

static void test_smp_maps_and_replaced_lists(void **state)
{
    (void)state;
    smp_ok("{\"metadata\":{\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"x\":1}",
           "{\"metadata\":{\"labels\":{\"a\":null,\"c\":\"3\"}},\"y\":{\"z\":null,\"w\":1}}",
           "{\"metadata\":{\"labels\":{\"b\":\"2\",\"c\":\"3\"}},\"x\":1,\"y\":{\"w\":1}}");
    /* a list without metadata is replaced whole */
    smp_ok("{\"spec\":{\"tolerations\":[{\"key\":\"a\"},{\"key\":\"b\"}]}}",
           "{\"spec\":{\"tolerations\":[{\"key\":\"c\"}]}}",
           "{\"spec\":{\"tolerations\":[{\"key\":\"c\"}]}}");
    smp_ok("{\"spec\":{\"containers\":[{\"name\":\"a\",\"args\":[\"x\",\"y\"]}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"args\":[\"z\"]}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"args\":[\"z\"]}]}}");
    /* no metadata callback at all: every list is replaced */
    json_t *d = parse(POD2), *p = parse("{\"spec\":{\"containers\":[{\"name\":\"x\"}]}}");
    assert_int_equal(ke_k8s_strategic_patch(&d, p, "Pod", NULL, NULL, NULL, 0), 0);
    same(json_object_get(d, "spec"), "{\"containers\":[{\"name\":\"x\"}]}");
    json_decref(d);
    json_decref(p);
}

static void test_smp_merge_lists_by_key(void **state)
{
    (void)state;
    /* containers by name, env by name, ports by containerPort; new appended */
    smp_ok(POD2,
           "{\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.25\",\"env\":["
           "{\"name\":\"B\",\"value\":\"20\"},{\"name\":\"C\",\"value\":\"3\"}],"
           "\"ports\":[{\"containerPort\":80,\"name\":\"http\"},{\"containerPort\":443}]},"
           "{\"name\":\"new\",\"image\":\"redis\"}]}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"spec\":{"
           "\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.25\",\"env\":["
           "{\"name\":\"A\",\"value\":\"1\"},{\"name\":\"B\",\"value\":\"20\"},"
           "{\"name\":\"C\",\"value\":\"3\"}],"
           "\"ports\":[{\"containerPort\":80,\"protocol\":\"TCP\",\"name\":\"http\"},"
           "{\"containerPort\":443}]},"
           "{\"name\":\"side\",\"image\":\"busybox\"},{\"name\":\"new\",\"image\":\"redis\"}]}}");
    /* a null inside a merged element deletes that field */
    smp_ok("{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"i\",\"command\":[\"x\"]}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"command\":null}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"image\":\"i\"}]}}");
    /* primitives merge as a set: original first, then new ones */
    smp_ok("{\"metadata\":{\"finalizers\":[\"a\",\"b\"]}}",
           "{\"metadata\":{\"finalizers\":[\"c\",\"a\"]}}",
           "{\"metadata\":{\"finalizers\":[\"a\",\"b\",\"c\"]}}");
    /* a merge list that does not exist yet */
    smp_ok("{\"spec\":{}}", "{\"spec\":{\"containers\":[{\"name\":\"a\",\"x\":null,\"y\":1}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"y\":1}]}}");
}

static void test_smp_patch_directives(void **state)
{
    (void)state;
    /* delete an element by key */
    smp_ok(POD2,
           "{\"spec\":{\"containers\":[{\"name\":\"side\",\"$patch\":\"delete\"},"
           "{\"name\":\"web\",\"env\":[{\"name\":\"A\",\"$patch\":\"delete\"}]}]}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"spec\":{"
           "\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.24\",\"env\":["
           "{\"name\":\"B\",\"value\":\"2\"}],"
           "\"ports\":[{\"containerPort\":80,\"protocol\":\"TCP\"}]}]}}");
    /* replace a merge list */
    smp_ok(POD2,
           "{\"spec\":{\"containers\":[{\"$patch\":\"replace\"},"
           "{\"name\":\"only\",\"image\":\"x\"}]}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},"
           "\"spec\":{\"containers\":[{\"name\":\"only\",\"image\":\"x\"}]}}");
    /* replace a map; delete a map */
    smp_ok(POD2, "{\"metadata\":{\"labels\":{\"$patch\":\"replace\",\"z\":\"9\"}},"
                 "\"spec\":{\"$patch\":\"delete\"}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"z\":\"9\"}}}");
    smp_ok("{\"a\":{\"b\":1,\"c\":2}}", "{\"a\":{\"$patch\":\"merge\",\"c\":3}}",
           "{\"a\":{\"b\":1,\"c\":3}}");
    smp_ok("{\"a\":1}", "{\"$patch\":\"delete\"}", "{}");
    /* remove values from a primitive merge list */
    smp_ok("{\"metadata\":{\"finalizers\":[\"a\",\"b\",\"c\"]}}",
           "{\"metadata\":{\"$deleteFromPrimitiveList/finalizers\":[\"b\",\"zz\"],"
           "\"finalizers\":[\"d\"]}}",
           "{\"metadata\":{\"finalizers\":[\"a\",\"c\",\"d\"]}}");
    smp_ok("{\"metadata\":{\"finalizers\":[\"a\",\"b\"]}}",
           "{\"metadata\":{\"$deleteFromPrimitiveList/finalizers\":[\"a\"]}}",
           "{\"metadata\":{\"finalizers\":[\"b\"]}}");
}

static void test_smp_retain_keys(void **state)
{
    (void)state;
    /* a volume changing source: the old source goes */
    smp_ok("{\"spec\":{\"volumes\":[{\"name\":\"v\",\"hostPath\":{\"path\":\"/d\"}},"
           "{\"name\":\"w\",\"emptyDir\":{}}]}}",
           "{\"spec\":{\"volumes\":[{\"name\":\"v\",\"$retainKeys\":[\"name\",\"emptyDir\"],"
           "\"emptyDir\":{}}]}}",
           "{\"spec\":{\"volumes\":[{\"name\":\"v\",\"emptyDir\":{}},"
           "{\"name\":\"w\",\"emptyDir\":{}}]}}");
    smp_err("{\"spec\":{\"volumes\":[{\"name\":\"v\"}]}}",
            "{\"spec\":{\"volumes\":[{\"name\":\"v\",\"$retainKeys\":[\"name\"],"
            "\"emptyDir\":{}}]}}",
            "spec.volumes[0]: $retainKeys: does not list \"emptyDir\", which the patch sets");
}

static void test_smp_set_element_order(void **state)
{
    (void)state;
    const char *doc = "{\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":\"b\"},"
                      "{\"name\":\"c\"}]}}";
    /* the named elements take the directive's order */
    smp_ok(doc,
           "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"c\"},{\"name\":\"b\"},"
           "{\"name\":\"a\"}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"c\"},{\"name\":\"b\"},{\"name\":\"a\"}]}}");
    /* with a new element, placed where the directive says */
    smp_ok(doc,
           "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"b\"},{\"name\":\"n\"},"
           "{\"name\":\"a\"},{\"name\":\"c\"}],\"containers\":[{\"name\":\"n\",\"image\":\"x\"}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"b\"},{\"name\":\"n\",\"image\":\"x\"},"
           "{\"name\":\"a\"},{\"name\":\"c\"}]}}");
    /* an element the directive does not name (the server's) that came last
     * stays last */
    smp_ok(doc,
           "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"b\"},{\"name\":\"a\"}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"b\"},{\"name\":\"a\"},{\"name\":\"c\"}]}}");
    /* one that came first keeps its place before the named ones */
    smp_ok(doc,
           "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"c\"},{\"name\":\"b\"}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":\"c\"},{\"name\":\"b\"}]}}");
    /* inside a merged element, as kubectl sends for env */
    smp_ok(POD2,
           "{\"spec\":{\"containers\":[{\"name\":\"web\",\"$setElementOrder/env\":["
           "{\"name\":\"B\"},{\"name\":\"C\"},{\"name\":\"A\"}],"
           "\"env\":[{\"name\":\"C\",\"value\":\"3\"}]}]}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"spec\":{"
           "\"containers\":[{\"name\":\"web\",\"image\":\"nginx:1.24\",\"env\":["
           "{\"name\":\"B\",\"value\":\"2\"},{\"name\":\"C\",\"value\":\"3\"},"
           "{\"name\":\"A\",\"value\":\"1\"}],"
           "\"ports\":[{\"containerPort\":80,\"protocol\":\"TCP\"}]},"
           "{\"name\":\"side\",\"image\":\"busybox\"}]}}");
    /* merge keys that are numbers: 80 and 80.0 are one port */
    smp_ok("{\"spec\":{\"containers\":[{\"name\":\"a\",\"ports\":[{\"containerPort\":80},"
           "{\"containerPort\":81}]}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"$setElementOrder/ports\":["
           "{\"containerPort\":81},{\"containerPort\":80.0}],"
           "\"ports\":[{\"containerPort\":80.0,\"name\":\"http\"}]}]}}",
           "{\"spec\":{\"containers\":[{\"name\":\"a\",\"ports\":[{\"containerPort\":81},"
           "{\"containerPort\":80.0,\"name\":\"http\"}]}]}}");
    /* primitives by value */
    smp_ok("{\"metadata\":{\"finalizers\":[\"x\",\"y\"]}}",
           "{\"metadata\":{\"$setElementOrder/finalizers\":[\"z\",\"y\",\"x\"],"
           "\"finalizers\":[\"z\"]}}",
           "{\"metadata\":{\"finalizers\":[\"z\",\"y\",\"x\"]}}");
    /* the patch list must follow the directive */
    smp_err(doc,
            "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"a\"},{\"name\":\"b\"}],"
            "\"containers\":[{\"name\":\"b\"},{\"name\":\"a\"}]}}",
            "spec.containers: $setElementOrder: element 1 of the patch's list is out of its "
            "order");
    smp_err(doc, "{\"spec\":{\"$setElementOrder/containers\":[{\"image\":\"a\"}]}}",
            "spec.containers: $setElementOrder: element 0: missing merge key \"name\"");
    smp_err(doc, "{\"spec\":{\"$setElementOrder/containers\":{}}}",
            "spec: $setElementOrder/containers: must be a list");
}

static void test_smp_kubectl_apply_shape(void **state)
{
    (void)state;
    const char *live =
        "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\","
        "\"namespace\":\"default\",\"resourceVersion\":\"7\",\"annotations\":{"
        "\"kubectl.kubernetes.io/last-applied-configuration\":\"{old}\"}},"
        "\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"web\","
        "\"image\":\"nginx:1.24\",\"imagePullPolicy\":\"IfNotPresent\"}]}}";
    const char *patch =
        "{\"metadata\":{\"annotations\":{\"kubectl.kubernetes.io/last-applied-configuration\":"
        "\"{new}\"}},\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"web\"}],"
        "\"containers\":[{\"image\":\"nginx:1.25\",\"name\":\"web\"}]}}";
    smp_ok(live, patch,
           "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\","
           "\"namespace\":\"default\",\"resourceVersion\":\"7\",\"annotations\":{"
           "\"kubectl.kubernetes.io/last-applied-configuration\":\"{new}\"}},"
           "\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"web\","
           "\"image\":\"nginx:1.25\",\"imagePullPolicy\":\"IfNotPresent\"}]}}");
    /* apply removing a container and adding one, as kubectl computes it */
    smp_ok(POD2,
           "{\"spec\":{\"$setElementOrder/containers\":[{\"name\":\"side\"},{\"name\":\"db\"}],"
           "\"containers\":[{\"$patch\":\"delete\",\"name\":\"web\"},"
           "{\"image\":\"postgres\",\"name\":\"db\"}]}}",
           "{\"metadata\":{\"name\":\"p\",\"labels\":{\"a\":\"1\",\"b\":\"2\"}},\"spec\":{"
           "\"containers\":[{\"name\":\"side\",\"image\":\"busybox\"},"
           "{\"name\":\"db\",\"image\":\"postgres\"}]}}");
}

static void test_smp_refusals(void **state)
{
    (void)state;
    smp_err(POD2,
            "{\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"x\"},{\"image\":\"y\"}]}}",
            "spec.containers[1]: missing merge key \"name\"");
    smp_err(POD2,
            "{\"spec\":{\"containers\":[{\"name\":\"web\",\"env\":[{\"value\":\"1\"}]}]}}",
            "spec.containers[0].env[0]: missing merge key \"name\"");
    smp_err(POD2, "{\"spec\":{\"containers\":[{\"$patch\":\"delete\"}]}}",
            "spec.containers[0]: missing merge key \"name\"");
    smp_err(POD2, "{\"spec\":{\"containers\":[\"web\"]}}", NULL);
    smp_err(POD2, "{\"spec\":{\"$patch\":\"frob\"}}",
            "spec: $patch: unknown directive \"frob\" (replace, delete or merge)");
    smp_err(POD2, "{\"spec\":{\"containers\":[{\"name\":\"web\",\"$patch\":\"x\"}]}}",
            "spec.containers[0]: $patch: unknown directive \"x\" (replace, delete or merge)");
    smp_err(POD2, "{\"metadata\":{\"finalizers\":[{\"a\":1}]}}", NULL);
    smp_err(POD2, "{\"metadata\":{\"$deleteFromPrimitiveList/labels\":[\"a\"]}}", NULL);
    smp_err(POD2, "{\"$setElementOrder/\":[]}", NULL);
    char why[256] = "";
    assert_int_equal(smp(POD2, "[1]", NULL, why, sizeof(why)), KE_EINVAL);
    assert_string_equal(why, "patch: a strategic merge patch must be a JSON object");
    /* too deep */
    json_t *deep = json_object(), *cur = deep;
    for (int i = 0; i < KE_K8S_JSON_DEPTH_MAX + 1; i++) {
        json_t *n = json_object();
        json_object_set_new(cur, "a", n);
        cur = n;
    }
    json_t *d = parse(POD2), *orig = d;
    assert_int_equal(ke_k8s_strategic_patch(&d, deep, "Pod", test_meta, NULL, why, sizeof(why)),
                     KE_EINVAL);
    assert_ptr_equal(d, orig);
    assert_non_null(strstr(why, "nested deeper than 64"));
    /* why may be NULL */
    assert_int_equal(ke_k8s_strategic_patch(&d, deep, "Pod", test_meta, NULL, NULL, 0), KE_EINVAL);
    json_decref(d);
    json_decref(deep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_patch_rfc7386_examples),
        cmocka_unit_test(test_merge_patch_depth_refused),
        cmocka_unit_test(test_json_patch_operations),
        cmocka_unit_test(test_json_patch_failures_leave_doc_unchanged),
        cmocka_unit_test(test_json_patch_bounds),
        cmocka_unit_test(test_smp_maps_and_replaced_lists),
        cmocka_unit_test(test_smp_merge_lists_by_key),
        cmocka_unit_test(test_smp_patch_directives),
        cmocka_unit_test(test_smp_retain_keys),
        cmocka_unit_test(test_smp_set_element_order),
        cmocka_unit_test(test_smp_kubectl_apply_shape),
        cmocka_unit_test(test_smp_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
