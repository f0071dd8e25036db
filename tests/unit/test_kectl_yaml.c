/*
 * test_kectl_yaml.c — kectl's manifest conversion (tools/kectl/yamljson.c):
 * YAML streams to JSON values the way kubectl reads them (documents,
 * nesting, scalar types, anchors and merge keys, bounds), errors with
 * file:line:col, JSON streams, and the JSON-to-YAML emitter of -o yaml
 * (kubectl's layout, quoting that reads back the same).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kectl_yaml.h"
#include "ke_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err[KECTL_YAML_ERR_MAX];

/* parse converts YAML text, failing the test on an error. */
static json_t *parse(const char *yaml)
{
    json_t *docs = NULL;
    int rc = kectl_yaml_to_json("t.yaml", yaml, strlen(yaml), &docs, err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error %d: %s", rc, err);
    return docs;
}

/* parse_err converts YAML text that must fail; returns the message. */
static const char *parse_err(const char *yaml)
{
    json_t *docs = (json_t *)1;
    assert_int_equal(kectl_yaml_to_json("t.yaml", yaml, strlen(yaml), &docs, err, sizeof(err)),
                     KE_EINVAL);
    assert_null(docs);
    return err;
}

/* assert_json checks that v equals the JSON text `want`. */
static void assert_json(const json_t *v, const char *want)
{
    json_error_t je;
    json_t *w = json_loads(want, JSON_DECODE_ANY, &je);
    if (!w)
        fail_msg("bad expectation %s: %s", want, je.text);
    if (!json_equal(v, w)) {
        char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        print_error("got  %s\nwant %s\n", got, want);
        free(got);
        json_decref(w);
        fail();
    }
    json_decref(w);
}

static void test_kectl_yaml_multi_document_stream_gives_one_value_per_document(void **state)
{
    (void)state;
    json_t *docs = parse("# a comment first\n"
                         "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
                         "---\n"
                         "---\n" /* empty: skipped */
                         "# only a comment\n"
                         "---\n"
                         "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"
                         "...\n"
                         "--- {kind: Secret}\n"
                         "---\n");
    assert_json(docs, "[{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}},"
                      "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"b\"}},"
                      "{\"kind\":\"Secret\"}]");
    json_decref(docs);

    docs = parse("");
    assert_int_equal(json_array_size(docs), 0);
    json_decref(docs);
}

static void test_kectl_yaml_nested_maps_and_lists(void **state)
{
    (void)state;
    json_t *docs = parse("spec:\n"
                         "  containers:\n"
                         "  - name: web\n"
                         "    ports:\n"
                         "    - containerPort: 80\n"
                         "      protocol: TCP\n"
                         "    - {containerPort: 443}\n"
                         "    args: [a, [b, c], {d: e}]\n"
                         "  - name: side\n"
                         "    env: []\n"
                         "    resources: {}\n"
                         "matrix:\n"
                         "- - 1\n"
                         "  - 2\n"
                         "- - 3\n"
                         "text: |\n"
                         "  line one\n"
                         "  line two\n"
                         "folded: >\n"
                         "  a\n"
                         "  b\n");
    assert_json(json_array_get(docs, 0),
                "{\"spec\":{\"containers\":["
                "{\"name\":\"web\",\"ports\":[{\"containerPort\":80,\"protocol\":\"TCP\"},"
                "{\"containerPort\":443}],\"args\":[\"a\",[\"b\",\"c\"],{\"d\":\"e\"}]},"
                "{\"name\":\"side\",\"env\":[],\"resources\":{}}]},"
                "\"matrix\":[[1,2],[3]],"
                "\"text\":\"line one\\nline two\\n\",\"folded\":\"a b\\n\"}");
    json_decref(docs);
}

static void test_kectl_yaml_plain_scalars_resolve_and_quoted_stay_strings(void **state)
{
    (void)state;
    json_t *docs = parse("int: 42\n"
                         "neg: -7\n"
                         "under: 1_000\n"
                         "octal: 0644\n"
                         "octal12: 0o17\n"
                         "hex: 0x1F\n"
                         "float: 1.5\n"
                         "exp: 1e3\n"
                         "whole: 3.0\n"
                         "dot: .5\n"
                         "t: true\n"
                         "yes: yes\n"
                         "off: Off\n"
                         "n: null\n"
                         "tilde: ~\n"
                         "empty:\n"
                         "y: y\n"
                         "qint: \"42\"\n"
                         "sint: '0644'\n"
                         "qbool: \"true\"\n"
                         "qnull: 'null'\n"
                         "tagged: !!str 123\n"
                         "tint: !!int \"12\"\n"
                         "version: 1.2.3\n"
                         "ip: 10.0.0.1\n"
                         "word: hello world\n"
                         "colon: a:b\n"
                         "big: 99999999999999999999999\n");
    assert_json(json_array_get(docs, 0),
                "{\"int\":42,\"neg\":-7,\"under\":1000,\"octal\":420,\"octal12\":15,\"hex\":31,"
                "\"float\":1.5,\"exp\":1000,\"whole\":3,\"dot\":0.5,"
                "\"t\":true,\"yes\":true,\"off\":false,\"n\":null,\"tilde\":null,\"empty\":null,"
                "\"y\":\"y\",\"qint\":\"42\",\"sint\":\"0644\",\"qbool\":\"true\","
                "\"qnull\":\"null\",\"tagged\":\"123\",\"tint\":12,"
                "\"version\":\"1.2.3\",\"ip\":\"10.0.0.1\",\"word\":\"hello world\","
                "\"colon\":\"a:b\",\"big\":1e23}");
    /* integers stay integers in JSON, floats stay floats */
    json_t *d = json_array_get(docs, 0);
    assert_true(json_is_integer(json_object_get(d, "exp")));
    assert_true(json_is_real(json_object_get(d, "float")));
    json_decref(docs);
}

static void test_kectl_yaml_syntax_error_names_file_line_and_column(void **state)
{
    (void)state;
    /* an unclosed flow sequence: found at line 6, column 1 */
    const char *e = parse_err("apiVersion: v1\n"
                              "kind: Pod\n"
                              "metadata:\n"
                              "  name: x\n"
                              "  labels: [1, 2\n");
    assert_non_null(strstr(e, "t.yaml:6:1: "));
    assert_non_null(strstr(e, "did not find expected ',' or ']'"));

    /* a tab where indentation is expected */
    e = parse_err("a: 1\nb:\n\t- x\n");
    assert_int_equal(strncmp(e, "t.yaml:3:1: ", 12), 0);

    /* a bad indentation in the middle of the second document */
    e = parse_err("a: 1\n---\nb: 2\n  c: 3\n");
    assert_int_equal(strncmp(e, "t.yaml:4:4: ", 12), 0);
}

static void test_kectl_yaml_duplicate_keys_and_non_scalar_keys_are_errors(void **state)
{
    (void)state;
    const char *e = parse_err("metadata:\n  name: a\n  name: b\n");
    assert_string_equal(e, "t.yaml:3:3: mapping key \"name\" already defined");
    e = parse_err("? [a, b]\n: c\n");
    assert_int_equal(strncmp(e, "t.yaml:1:3: a mapping key must be a scalar", 42), 0);
}

static void test_kectl_yaml_anchors_aliases_and_merge_keys(void **state)
{
    (void)state;
    json_t *docs = parse("base: &base {image: nginx, pull: Always}\n"
                         "a: *base\n"
                         "b:\n"
                         "  <<: *base\n"
                         "  pull: Never\n"
                         "c:\n"
                         "  pull: IfNotPresent\n"
                         "  <<: [*base, {extra: 1}]\n"
                         "name: &n web\n"
                         "again: *n\n");
    assert_json(json_array_get(docs, 0),
                "{\"base\":{\"image\":\"nginx\",\"pull\":\"Always\"},"
                "\"a\":{\"image\":\"nginx\",\"pull\":\"Always\"},"
                "\"b\":{\"image\":\"nginx\",\"pull\":\"Never\"},"
                "\"c\":{\"pull\":\"IfNotPresent\",\"image\":\"nginx\",\"extra\":1},"
                "\"name\":\"web\",\"again\":\"web\"}");
    /* aliases are copies: changing one place leaves the other alone */
    json_t *d = json_array_get(docs, 0);
    json_object_set_new(json_object_get(d, "a"), "image", json_string("changed"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "base"), "image")),
                        "nginx");
    json_decref(docs);

    const char *e = parse_err("a: &x [1, *x]\n");
    assert_non_null(strstr(e, "t.yaml:1:11: unknown anchor 'x'"));
}

static void test_kectl_yaml_alias_expansion_bomb_is_refused(void **state)
{
    (void)state;
    const char *e = parse_err("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                              "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                              "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                              "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                              "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                              "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n");
    assert_non_null(strstr(e, "counting alias expansions"));

    /* nesting is bounded too */
    char deep[KECTL_YAML_MAX_DEPTH * 2 + 8];
    size_t n = 0;
    for (int i = 0; i < KECTL_YAML_MAX_DEPTH + 1; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    e = parse_err(deep);
    assert_non_null(strstr(e, "nested deeper than"));
}

static void test_kectl_yaml_inf_and_nan_are_errors(void **state)
{
    (void)state;
    assert_non_null(strstr(parse_err("x: 1\ny: .inf\n"), "t.yaml:2:4: .inf cannot be represented"));
    assert_non_null(strstr(parse_err("y: .NaN\n"), ".NaN cannot be represented"));
    /* quoted, they are strings */
    json_t *docs = parse("y: \".inf\"\n");
    assert_json(json_array_get(docs, 0), "{\"y\":\".inf\"}");
    json_decref(docs);
}

static void test_kectl_json_stream_parses_and_reports_positions(void **state)
{
    (void)state;
    const char *text = "{\"kind\": \"Pod\", \"n\": 1}\n  {\"kind\": \"ConfigMap\"} [1]\n";
    json_t *docs = NULL;
    assert_int_equal(kectl_json_to_docs("t.json", text, strlen(text), &docs, err, sizeof(err)), 0);
    assert_json(docs, "[{\"kind\":\"Pod\",\"n\":1},{\"kind\":\"ConfigMap\"},[1]]");
    json_decref(docs);

    text = "{\"a\": 1}\n{\"b\": 2,\n \"c\": }\n";
    docs = (json_t *)1;
    assert_int_equal(kectl_json_to_docs("t.json", text, strlen(text), &docs, err, sizeof(err)),
                     KE_EINVAL);
    assert_null(docs);
    assert_int_equal(strncmp(err, "t.json:3:7: ", 12), 0);

    text = "{\"a\": 1, \"a\": 2}";
    assert_int_equal(kectl_json_to_docs("t.json", text, strlen(text), &docs, err, sizeof(err)),
                     KE_EINVAL);
    assert_non_null(strstr(err, "duplicate"));
}

/* emit writes v as YAML into a malloc'd string. */
static char *emit(const json_t *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(kectl_yaml_emit(f, v), 0);
    fclose(f);
    return buf;
}

static void test_kectl_yaml_emit_has_kubectls_layout(void **state)
{
    (void)state;
    json_t *v = json_loads("{\"kind\":\"Pod\",\"apiVersion\":\"v1\","
                           "\"metadata\":{\"name\":\"web\",\"labels\":{\"app\":\"web\"},"
                           "\"creationTimestamp\":\"2024-05-01T10:00:00Z\"},"
                           "\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"nginx\","
                           "\"args\":[\"-c\",\"yes\"],\"ports\":[{\"containerPort\":80}],"
                           "\"env\":[]}],\"nodeSelector\":{},\"x\":null,\"r\":1.5,"
                           "\"m\":[[1,2],[]]}}",
                           0, NULL);
    char *y = emit(v);
    assert_string_equal(y, "apiVersion: v1\n"
                           "kind: Pod\n"
                           "metadata:\n"
                           "  creationTimestamp: \"2024-05-01T10:00:00Z\"\n"
                           "  labels:\n"
                           "    app: web\n"
                           "  name: web\n"
                           "spec:\n"
                           "  containers:\n"
                           "  - args:\n"
                           "    - -c\n"
                           "    - \"yes\"\n"
                           "    env: []\n"
                           "    image: nginx\n"
                           "    name: web\n"
                           "    ports:\n"
                           "    - containerPort: 80\n"
                           "  m:\n"
                           "  - - 1\n"
                           "    - 2\n"
                           "  - []\n"
                           "  nodeSelector: {}\n"
                           "  r: 1.5\n"
                           "  x: null\n");
    free(y);
    json_decref(v);
}

static void test_kectl_yaml_emit_quotes_what_would_read_back_differently(void **state)
{
    (void)state;
    static const char *const tricky[] = {
        "",   "yes", "No",   "y",    "true", "null", "~",       "0644",    "1e3",  "0x1F",
        ".5", "-",   "- x",  "---",  "...",  "#c",   "a #b",    "a: b",    "ends:", " lead",
        "trail ",    "multi\nline", "tab\there", "quote\"back\\slash", "2024-01-01",
        "*ref", "&anc", "!tag", "{x}", "[x]", "%p", "@at", "`bt", "|", ">", "<<", "=",
        "plain text", "a:b", "http://x/y", "-c", "ünïcödé",
        /* NEL, LS, PS, BOM, a C1 control: a reader would fold or refuse them raw */
        "nel\xc2\x85x", "ls\xe2\x80\xa8x", "ps\xe2\x80\xa9x", "bom\xef\xbb\xbfx", "c1\xc2\x9fx",
    };
    json_t *obj = json_object();
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof(tricky) / sizeof(tricky[0]); i++) {
        json_array_append_new(arr, json_string(tricky[i]));
        json_object_set_new(obj, tricky[i], json_integer((json_int_t)i));
    }
    json_t *v = json_pack("{s:o, s:o}", "list", arr, "keys", obj);
    char *y = emit(v);
    json_t *docs = parse(y);
    assert_int_equal(json_array_size(docs), 1);
    char *want = json_dumps(v, JSON_COMPACT);
    assert_json(json_array_get(docs, 0), want);
    free(want);
    /* plain where kubectl writes them plain */
    assert_non_null(strstr(y, "- plain text\n"));
    assert_non_null(strstr(y, "- http://x/y\n"));
    assert_non_null(strstr(y, "- -c\n"));
    assert_non_null(strstr(y, "- \"0644\"\n"));
    free(y);
    json_decref(docs);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kectl_yaml_multi_document_stream_gives_one_value_per_document),
        cmocka_unit_test(test_kectl_yaml_nested_maps_and_lists),
        cmocka_unit_test(test_kectl_yaml_plain_scalars_resolve_and_quoted_stay_strings),
        cmocka_unit_test(test_kectl_yaml_syntax_error_names_file_line_and_column),
        cmocka_unit_test(test_kectl_yaml_duplicate_keys_and_non_scalar_keys_are_errors),
        cmocka_unit_test(test_kectl_yaml_anchors_aliases_and_merge_keys),
        cmocka_unit_test(test_kectl_yaml_alias_expansion_bomb_is_refused),
        cmocka_unit_test(test_kectl_yaml_inf_and_nan_are_errors),
        cmocka_unit_test(test_kectl_json_stream_parses_and_reports_positions),
        cmocka_unit_test(test_kectl_yaml_emit_has_kubectls_layout),
        cmocka_unit_test(test_kectl_yaml_emit_quotes_what_would_read_back_differently),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
