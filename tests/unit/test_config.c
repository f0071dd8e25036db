/*
 * test_config.c — unit tests for lib/config (ke_config.h): YAML loading,
 * flag parsing, --help, and the one-line error messages that name file,
 * line and key. Each test writes its YAML to a mkstemp file under /tmp and
 * removes it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ke_config.h"
#include "ke_err.h"

struct tcfg {
    char *listen;
    int64_t port;
    bool tls;
    int64_t timeout_ms;
    ke_config_strlist nodes;
    char *name;
    int64_t keepalive_ms;
};

static const ke_config_field fields[] = {
    { "cloudhub.listen", KE_CONFIG_STRING, offsetof(struct tcfg, listen), "0.0.0.0",
      "address the hub listens on" },
    { "cloudhub.port", KE_CONFIG_INT64, offsetof(struct tcfg, port), "10000", "hub port" },
    { "cloudhub.tls.enable", KE_CONFIG_BOOL, offsetof(struct tcfg, tls), "false",
      "serve TLS" },
    { "cloudhub.timeout", KE_CONFIG_DURATION, offsetof(struct tcfg, timeout_ms), "30s",
      "handshake timeout" },
    { "cloudhub.nodes", KE_CONFIG_STRLIST, offsetof(struct tcfg, nodes), "a,b",
      "nodes allowed to connect" },
    { "name", KE_CONFIG_STRING, offsetof(struct tcfg, name), NULL, "instance name" },
    { "keepalive", KE_CONFIG_DURATION, offsetof(struct tcfg, keepalive_ms), "500",
      "keepalive interval" },
};
#define NF KE_CONFIG_NFIELDS(fields)

/* write_tmp writes `text` to a fresh /tmp file and puts its name in path. */
static void write_tmp(char path[64], const char *text)
{
    strcpy(path, "/tmp/ke_config_test_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* load writes `text` to a temp file and loads it into c. */
static int load(const char *text, struct tcfg *c, char *err, size_t errlen, char path[64])
{
    write_tmp(path, text);
    int rc = ke_config_load_file(fields, NF, c, path, err, errlen);
    unlink(path);
    return rc;
}

/* expect_err checks rc and that err equals "<path><rest>" exactly. */
static void expect_err(int rc, const char *err, const char *path, const char *rest)
{
    char want[KE_CONFIG_ERR_MAX];
    snprintf(want, sizeof want, "%s%s", path, rest);
    assert_int_equal(rc, KE_EINVAL);
    assert_string_equal(err, want);
}

static void test_config_valid_file_loads_every_type(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n"
                  "  listen: 127.0.0.1\n"
                  "  port: 9443\n"
                  "  tls:\n"
                  "    enable: yes\n"
                  "  timeout: 2m\n"
                  "  nodes: [edge-1, \"edge-2\"]\n"
                  "name: cc-1\n"
                  "keepalive: 1m30s\n",
                  &c, err, sizeof err, path);
    assert_int_equal(rc, 0);
    assert_string_equal(c.listen, "127.0.0.1");
    assert_int_equal(c.port, 9443);
    assert_true(c.tls);
    assert_int_equal(c.timeout_ms, 120000);
    assert_int_equal(c.nodes.len, 2);
    assert_string_equal(c.nodes.items[0], "edge-1");
    assert_string_equal(c.nodes.items[1], "edge-2");
    assert_string_equal(c.name, "cc-1");
    assert_int_equal(c.keepalive_ms, 90000);
    ke_config_free(fields, NF, &c);
    assert_null(c.listen);
    assert_null(c.nodes.items);
}

static void test_config_missing_keys_take_defaults(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n  port: 1\n", &c, err, sizeof err, path);
    assert_int_equal(rc, 0);
    assert_string_equal(c.listen, "0.0.0.0");
    assert_int_equal(c.port, 1);
    assert_false(c.tls);
    assert_int_equal(c.timeout_ms, 30000);
    assert_int_equal(c.nodes.len, 2);
    assert_string_equal(c.nodes.items[1], "b");
    assert_null(c.name);
    assert_int_equal(c.keepalive_ms, 500);
    ke_config_free(fields, NF, &c);
}

static void test_config_empty_file_gives_defaults(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    assert_int_equal(load("# nothing here\n", &c, err, sizeof err, path), 0);
    assert_int_equal(c.port, 10000);
    ke_config_free(fields, NF, &c);
}

static void test_config_null_value_keeps_default(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n  port:\n  listen: ~\n  tls:\nname: \"\"\n", &c, err,
                  sizeof err, path);
    assert_int_equal(rc, 0);
    assert_int_equal(c.port, 10000);
    assert_string_equal(c.listen, "0.0.0.0");
    assert_string_equal(c.name, ""); /* quoted empty is a value, not null */
    ke_config_free(fields, NF, &c);
}

static void test_config_nested_mappings_map_to_dotted_keys(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    /* block, flow and literal-dotted spellings of nested keys all work */
    int rc = load("cloudhub:\n"
                  "  tls: {enable: true}\n"
                  "cloudhub.port: 7\n",
                  &c, err, sizeof err, path);
    assert_int_equal(rc, 0);
    assert_true(c.tls);
    assert_int_equal(c.port, 7);
    ke_config_free(fields, NF, &c);
}

static void test_config_flags_override_file(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    write_tmp(path, "cloudhub:\n  port: 9443\n  listen: 10.0.0.1\nname: from-file\n");
    /* flags before --config still win over the file */
    char *argv[] = { "cloudcore", "--cloudhub.port=1234", "--config", path,
                     "--name", "from-flag", "--cloudhub.tls.enable",
                     "--cloudhub.nodes=x,y,z", "--keepalive", "2s" };
    int rc = ke_config_parse_args(fields, NF, &c, 10, argv, err, sizeof err);
    unlink(path);
    assert_int_equal(rc, 0);
    assert_int_equal(c.port, 1234);
    assert_string_equal(c.listen, "10.0.0.1");
    assert_string_equal(c.name, "from-flag");
    assert_true(c.tls);
    assert_int_equal(c.nodes.len, 3);
    assert_string_equal(c.nodes.items[2], "z");
    assert_int_equal(c.keepalive_ms, 2000);
    assert_int_equal(c.timeout_ms, 30000);
    ke_config_free(fields, NF, &c);
}

static void test_config_no_args_gives_defaults(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    char *argv[] = { "cloudcore" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 1, argv, err, sizeof err), 0);
    assert_string_equal(c.listen, "0.0.0.0");
    assert_int_equal(c.port, 10000);
    ke_config_free(fields, NF, &c);
}

static void test_config_malformed_yaml_gives_one_line_with_file_line_column(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64], want[128];
    int rc = load("cloudhub:\n  port: 1\n  listen: [a, b\nname: x\n", &c, err, sizeof err,
                  path);
    assert_int_equal(rc, KE_EINVAL);
    snprintf(want, sizeof want, "%s:", path);
    assert_memory_equal(err, want, strlen(want));
    assert_non_null(strstr(err, ": YAML syntax error: "));
    assert_null(strchr(err, '\n'));

    rc = load("a: b\n  c: d\n", &c, err, sizeof err, path);
    assert_int_equal(rc, KE_EINVAL);
    snprintf(want, sizeof want, "%s:2:4: YAML syntax error: ", path);
    assert_memory_equal(err, want, strlen(want));
    assert_null(c.listen);
}

static void test_config_unknown_key_names_file_line_and_key(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n  port: 1\n  lisen: x\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":3: unknown key \"cloudhub.lisen\"");
    rc = load("name: a\nbogus:\n  x: 1\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":2: unknown key \"bogus\"");
}

static void test_config_wrong_type_names_key(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("name: a\ncloudhub:\n  port: abc\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":3: key \"cloudhub.port\": expected an integer, got \"abc\"");
    rc = load("cloudhub: {tls: {enable: maybe}}\n", &c, err, sizeof err, path);
    expect_err(rc, err, path,
               ":1: key \"cloudhub.tls.enable\": expected a boolean (true/false), got \"maybe\"");
    rc = load("keepalive: 5x\n", &c, err, sizeof err, path);
    expect_err(rc, err, path,
               ":1: key \"keepalive\": expected a duration (e.g. 500ms, 30s, 2m), got \"5x\"");
    rc = load("cloudhub:\n  nodes: edge-1\n", &c, err, sizeof err, path);
    expect_err(rc, err, path,
               ":2: key \"cloudhub.nodes\": expected a list of strings, got \"edge-1\"");
    rc = load("cloudhub:\n  nodes:\n    - a\n    - {b: 1}\n", &c, err, sizeof err, path);
    expect_err(rc, err, path,
               ":4: key \"cloudhub.nodes\": list item must be a string, got a mapping");
}

static void test_config_mapping_where_scalar_expected_names_key(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n  port:\n    value: 1\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":2: key \"cloudhub.port\": expected an integer, got a mapping");
    rc = load("cloudhub: 5\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":1: key \"cloudhub\": expected a mapping, got \"5\"");
    rc = load("- a\n- b\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":1: expected a mapping of keys at the top level, got a list");
}

static void test_config_duplicate_key_is_an_error(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    int rc = load("cloudhub:\n  port: 1\n  port: 2\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":3: duplicate key \"cloudhub.port\" (first at line 2)");
    rc = load("cloudhub:\n  port: 1\nname: x\ncloudhub:\n  listen: y\n", &c, err, sizeof err,
              path);
    expect_err(rc, err, path, ":4: duplicate key \"cloudhub\" (first at line 1)");
    rc = load("cloudhub:\n  port: 1\ncloudhub.port: 2\n", &c, err, sizeof err, path);
    expect_err(rc, err, path, ":3: duplicate key \"cloudhub.port\" (first at line 2)");
}

static void test_config_missing_file_says_cannot_open(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    int rc = ke_config_load_file(fields, NF, &c, "/tmp/ke_config_test_no_such.yaml", err,
                                 sizeof err);
    assert_int_equal(rc, KE_EIO);
    assert_string_equal(err, "/tmp/ke_config_test_no_such.yaml: cannot open: "
                             "No such file or directory");
    char *argv[] = { "cloudcore", "--config=/tmp/ke_config_test_no_such.yaml" };
    rc = ke_config_parse_args(fields, NF, &c, 2, argv, err, sizeof err);
    assert_int_equal(rc, KE_EIO);
    assert_null(c.listen);
}

static void test_config_unknown_flag_names_flag(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    char *argv1[] = { "cloudcore", "--foo" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv1, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "unknown flag --foo (see --help)");
    char *argv2[] = { "cloudcore", "--cloudhub.prt=5" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv2, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "unknown flag --cloudhub.prt (see --help)");
    char *argv3[] = { "cloudcore", "stray" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv3, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "unexpected argument \"stray\" (see --help)");
}

static void test_config_bad_flag_value_names_flag(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    char *argv1[] = { "cloudcore", "--cloudhub.port", "x1" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 3, argv1, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "flag --cloudhub.port: expected an integer, got \"x1\"");
    char *argv2[] = { "cloudcore", "--cloudhub.port" };
    assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv2, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "flag --cloudhub.port needs a value");
}

static void test_config_help_returns_help_code(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    char *argv[] = { "/usr/bin/cloudcore", "--cloudhub.port=1", "--help" };
    /* keep the usage text out of the test output */
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), devnull = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && devnull >= 0);
    dup2(devnull, STDOUT_FILENO);
    int rc = ke_config_parse_args(fields, NF, &c, 3, argv, err, sizeof err);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    close(devnull);
    assert_int_equal(rc, KE_CONFIG_HELP);
    assert_int_equal(c.port, 0); /* nothing applied */
    assert_null(c.listen);
}

static void test_config_usage_lists_every_key_with_default(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    ke_config_usage(fields, NF, "cloudcore", out);
    fclose(out);
    assert_non_null(strstr(text, "Usage: cloudcore [--config FILE]"));
    assert_non_null(strstr(text, "--cloudhub.listen=STRING"));
    assert_non_null(strstr(text, "address the hub listens on (default \"0.0.0.0\")"));
    assert_non_null(strstr(text, "hub port (default 10000)"));
    assert_non_null(strstr(text, "--cloudhub.timeout=DURATION"));
    assert_non_null(strstr(text, "instance name\n"));
    free(text);
}

static void test_config_nothing_written_to_target_on_error(void **state)
{
    (void)state;
    struct tcfg c = { .port = 777, .tls = true, .timeout_ms = 5 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    /* good values first, a bad one last */
    int rc = load("cloudhub:\n  listen: x\n  port: 1\n  nodes: [q]\nname: n\nkeepalive: -1\n",
                  &c, err, sizeof err, path);
    assert_int_equal(rc, KE_EINVAL);
    /* a good file, then a bad flag */
    write_tmp(path, "cloudhub:\n  port: 2\n");
    char *argv[] = { "cloudcore", "--config", path, "--name=n", "--cloudhub.tls.enable=nah" };
    rc = ke_config_parse_args(fields, NF, &c, 5, argv, err, sizeof err);
    unlink(path);
    assert_int_equal(rc, KE_EINVAL);
    assert_string_equal(err, "flag --cloudhub.tls.enable: expected a boolean (true/false), "
                             "got \"nah\"");
    assert_int_equal(c.port, 777);
    assert_true(c.tls);
    assert_int_equal(c.timeout_ms, 5);
    assert_null(c.listen);
    assert_null(c.name);
    assert_null(c.nodes.items);
    assert_int_equal(c.keepalive_ms, 0);
}

static void test_config_reload_replaces_previous_values(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", path[64];
    assert_int_equal(load("name: first\n", &c, err, sizeof err, path), 0);
    assert_int_equal(load("name: second\n", &c, err, sizeof err, path), 0);
    assert_string_equal(c.name, "second"); /* "first" freed: ASan would say */
    ke_config_free(fields, NF, &c);
    ke_config_free(fields, NF, &c); /* second free is a no-op */
    ke_config_free(fields, NF, NULL);
}

static void test_config_duration_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } ok[] = { { "1500", 1500 }, { "500ms", 500 }, { "30s", 30000 }, { "2m", 120000 },
               { "1h", 3600000 }, { "1m30s", 90000 }, { "0", 0 } };
    static const char *const bad[] = { "5x", "-1", "s", "1.5s", "", "10 s",
                                       "99999999999999999999h" };
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "", arg[64];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(arg, sizeof arg, "--keepalive=%s", ok[i].text);
        char *argv[] = { "cloudcore", arg };
        assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv, err, sizeof err), 0);
        assert_int_equal(c.keepalive_ms, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(arg, sizeof arg, "--keepalive=%s", bad[i]);
        char *argv[] = { "cloudcore", arg };
        assert_int_equal(ke_config_parse_args(fields, NF, &c, 2, argv, err, sizeof err),
                         KE_EINVAL);
    }
    ke_config_free(fields, NF, &c);
}

static void test_config_bad_schema_is_rejected(void **state)
{
    (void)state;
    struct tcfg c = { 0 };
    char err[KE_CONFIG_ERR_MAX] = "";
    char *argv[] = { "cloudcore" };
    const ke_config_field bad_default[] = {
        { "port", KE_CONFIG_INT64, offsetof(struct tcfg, port), "ten", "" },
    };
    assert_int_equal(ke_config_parse_args(bad_default, 1, &c, 1, argv, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "schema: key \"port\": default: expected an integer, got \"ten\"");
    const ke_config_field overlap[] = {
        { "a", KE_CONFIG_INT64, offsetof(struct tcfg, port), NULL, "" },
        { "a.b", KE_CONFIG_INT64, offsetof(struct tcfg, timeout_ms), NULL, "" },
    };
    assert_int_equal(ke_config_parse_args(overlap, 2, &c, 1, argv, err, sizeof err),
                     KE_EINVAL);
    assert_string_equal(err, "schema: key \"a.b\" conflicts with \"a\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_valid_file_loads_every_type),
        cmocka_unit_test(test_config_missing_keys_take_defaults),
        cmocka_unit_test(test_config_empty_file_gives_defaults),
        cmocka_unit_test(test_config_null_value_keeps_default),
        cmocka_unit_test(test_config_nested_mappings_map_to_dotted_keys),
        cmocka_unit_test(test_config_flags_override_file),
        cmocka_unit_test(test_config_no_args_gives_defaults),
        cmocka_unit_test(test_config_malformed_yaml_gives_one_line_with_file_line_column),
        cmocka_unit_test(test_config_unknown_key_names_file_line_and_key),
        cmocka_unit_test(test_config_wrong_type_names_key),
        cmocka_unit_test(test_config_mapping_where_scalar_expected_names_key),
        cmocka_unit_test(test_config_duplicate_key_is_an_error),
        cmocka_unit_test(test_config_missing_file_says_cannot_open),
        cmocka_unit_test(test_config_unknown_flag_names_flag),
        cmocka_unit_test(test_config_bad_flag_value_names_flag),
        cmocka_unit_test(test_config_help_returns_help_code),
        cmocka_unit_test(test_config_usage_lists_every_key_with_default),
        cmocka_unit_test(test_config_nothing_written_to_target_on_error),
        cmocka_unit_test(test_config_reload_replaces_previous_values),
        cmocka_unit_test(test_config_duration_spellings),
        cmocka_unit_test(test_config_bad_schema_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
