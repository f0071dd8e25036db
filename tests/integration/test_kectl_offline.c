/*
 * test_kectl_offline.c — the kectl program, run as a user would run it,
 * for everything it must decide without a server: help and usage exit
 * codes, unknown kinds refused before connecting, missing files, and
 * manifests that are malformed anywhere (YAML or JSON) reported as
 * FILE:LINE:COL with nothing sent. "Nothing sent" is checked on a socket
 * the test listens on: no connection may arrive there. --dry-run shows
 * the converted objects: a folder's files in name order, namespaces
 * defaulted from -n. One fresh temp dir per test, removed by teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_testproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];    /* the test's temp dir */
    char out[16384]; /* stdout of the last kectl run */
    char err[8192];  /* stderr of the last kectl run */
    int listen_fd;   /* a socket nobody should connect to */
    int port;
} fixture;

static void slurp(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* kectl runs "kectl ARGS" (printf-style, shell syntax) with stdout and
 * stderr captured in f->out / f->err, and KECTL_SERVER pointing at the
 * test's listening socket; returns the exit code. */
static int kectl(fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kectl(fixture *f, const char *fmt, ...)
{
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    int rc = ke_tp_sh("cd %s && KECTL_SERVER=127.0.0.1:%d %s/tools/kectl --timeout 3000 %s "
                      ">%s/.out 2>%s/.err",
                      f->dir, f->port, ke_tp_env("KE_BIN_DIR"), args, f->dir, f->dir);
    char path[128];
    snprintf(path, sizeof(path), "%s/.out", f->dir);
    slurp(path, f->out, sizeof(f->out));
    unlink(path);
    snprintf(path, sizeof(path), "%s/.err", f->dir);
    slurp(path, f->err, sizeof(f->err));
    unlink(path);
    return rc;
}

/* put writes a file into the test's dir. */
static void put(fixture *f, const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

/* assert_nothing_connected checks that no one connected to the socket. */
static void assert_nothing_connected(fixture *f)
{
    int c = accept(f->listen_fd, NULL, NULL);
    if (c >= 0) {
        close(c);
        fail_msg("kectl connected to the server although it had nothing to send");
    }
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || ke_tp_tmpdir(f->dir) != 0) {
        free(f);
        return -1;
    }
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(f->listen_fd, 16) != 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) != 0) {
        if (f->listen_fd >= 0)
            close(f->listen_fd);
        ke_tp_sh("rm -rf '%s'", f->dir);
        free(f);
        return -1;
    }
    f->port = ntohs(a.sin_port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->listen_fd);
    ke_tp_sh("rm -rf '%s'", f->dir);
    free(f);
    return 0;
}

static const char good_pod[] = "apiVersion: v1\n"
                               "kind: Pod\n"
                               "metadata:\n"
                               "  name: web\n"
                               "spec:\n"
                               "  containers:\n"
                               "  - name: web\n"
                               "    image: nginx\n";

/* ---- help and usage ---- */

static void test_kectl_help_exits_0_and_describes_every_flag(void **state)
{
    fixture *f = *state;
    assert_int_equal(kectl(f, "--help"), 0);
    static const char *const global[] = {"--server", "--ca",        "--cert", "--key",
                                         "--timeout", "--namespace", "-A, --all-namespaces"};
    for (size_t i = 0; i < sizeof(global) / sizeof(global[0]); i++)
        if (!strstr(f->out, global[i]))
            fail_msg("kectl --help does not describe %s:\n%s", global[i], f->out);
    static const char *const verbs[] = {"apply", "get", "describe", "delete", "twin", "version",
                                        "ping"};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        assert_non_null(strstr(f->out, verbs[i]));

    static const struct {
        const char *verb;
        const char *flags[6];
    } per_verb[] = {
        {"get", {"--output", "--selector", "--field-selector", "--watch", "--no-headers", NULL}},
        {"apply", {"--filename", "--output", "--dry-run", NULL}},
        {"delete", {"--filename", "--ignore-not-found", NULL}},
        {"describe", {"--selector", NULL}},
        {"twin", {"twin get DEVICE", "twin set DEVICE PROPERTY VALUE", "--output", NULL}},
        {"ping", {"--count", "--size", NULL}},
    };
    for (size_t i = 0; i < sizeof(per_verb) / sizeof(per_verb[0]); i++) {
        assert_int_equal(kectl(f, "%s --help", per_verb[i].verb), 0);
        assert_non_null(strstr(f->out, "--server")); /* the global flags too */
        for (size_t j = 0; per_verb[i].flags[j]; j++)
            if (!strstr(f->out, per_verb[i].flags[j]))
                fail_msg("kectl %s --help does not describe %s", per_verb[i].verb,
                         per_verb[i].flags[j]);
    }
    assert_int_equal(kectl(f, "help get"), 0);
    assert_non_null(strstr(f->out, "--field-selector"));
    assert_nothing_connected(f);
}

static void test_kectl_usage_errors_exit_2(void **state)
{
    fixture *f = *state;
    assert_int_equal(kectl(f, "frobnicate"), 2);
    assert_non_null(strstr(f->err, "error: unknown command \"frobnicate\" for \"kectl\""));
    assert_int_equal(kectl(f, "%s", ""), 2);
    assert_int_equal(kectl(f, "get"), 2);
    assert_int_equal(kectl(f, "get pods --no-such-flag"), 2);
    assert_non_null(strstr(f->err, "unknown flag: --no-such-flag"));
    assert_int_equal(kectl(f, "get pods -o table"), 2);
    assert_int_equal(kectl(f, "apply"), 2);
    assert_int_equal(kectl(f, "apply web.yaml"), 2);
    assert_int_equal(kectl(f, "delete pods"), 2);
    assert_int_equal(kectl(f, "twin set dev"), 2);
    assert_int_equal(kectl(f, "--timeout soon version"), 2);
    assert_int_equal(kectl(f, "get pods -n"), 2);
    assert_string_equal(f->out, "");
    assert_nothing_connected(f);
}

/* ---- checked before connecting ---- */

static void test_kectl_unknown_kind_is_refused_before_connecting(void **state)
{
    fixture *f = *state;
    assert_int_equal(kectl(f, "get foo"), 1);
    assert_string_equal(f->err, "error: the server doesn't have a resource type \"foo\"\n");
    assert_int_equal(kectl(f, "delete foos web"), 1);
    assert_string_equal(f->err, "error: the server doesn't have a resource type \"foos\"\n");
    assert_int_equal(kectl(f, "describe bar/web"), 1);
    assert_string_equal(f->err, "error: the server doesn't have a resource type \"bar\"\n");
    assert_nothing_connected(f);
    /* the known ones pass this check (kubectl's names and short forms) and
     * go on to connect: here to a closed port */
    static const char *const known[] = {"po", "pods", "Pod", "cm", "secret", "no", "devices",
                                        "devicemodel", "devices.devices.kubeedge.io", "cm/x"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        assert_int_equal(kectl(f, "--server 127.0.0.1:1 get %s", known[i]), 1);
        if (!strstr(f->err, "error: unable to connect to the server 127.0.0.1:1"))
            fail_msg("get %s: %s", known[i], f->err);
    }
}

static void test_kectl_apply_missing_file_is_an_error(void **state)
{
    fixture *f = *state;
    assert_int_equal(kectl(f, "apply -f nope.yaml"), 1);
    assert_string_equal(f->err, "error: the path \"nope.yaml\" does not exist\n");
    assert_int_equal(kectl(f, "delete -f nope/"), 1);
    assert_string_equal(f->err, "error: the path \"nope/\" does not exist\n");
    assert_nothing_connected(f);
}

static void test_kectl_apply_malformed_yaml_names_file_line_col_and_sends_nothing(void **state)
{
    fixture *f = *state;
    /* a good file first in the folder: it must not be applied either */
    assert_int_equal(ke_tp_sh("mkdir %s/m", f->dir), 0);
    put(f, "m/1-good.yaml", good_pod);
    put(f, "m/2-bad.yaml", "apiVersion: v1\n"
                           "kind: ConfigMap\n"
                           "metadata:\n"
                           "  name: cfg\n"
                           "data:\n"
                           "  a: [1, 2\n"
                           "  b: x\n");
    assert_int_equal(kectl(f, "apply -f m"), 1);
    assert_string_equal(f->out, "");
    if (!strstr(f->err, "error: m/2-bad.yaml:7:4: "))
        fail_msg("not the parse error with its position: %s", f->err);
    assert_null(strstr(f->err, "connect"));
    assert_nothing_connected(f);

    /* the same with the server at a closed port: still the parse error */
    assert_int_equal(kectl(f, "--server 127.0.0.1:1 apply -f m/1-good.yaml -f m/2-bad.yaml"), 1);
    assert_non_null(strstr(f->err, "m/2-bad.yaml:7:4: "));
    assert_null(strstr(f->err, "connect"));

    /* and from stdin */
    assert_int_equal(kectl(f, "apply -f - < m/2-bad.yaml"), 1);
    assert_non_null(strstr(f->err, "error: STDIN:7:4: "));
    assert_nothing_connected(f);
}

static void test_kectl_apply_malformed_json_names_file_line_col(void **state)
{
    fixture *f = *state;
    put(f, "web.yaml", good_pod);
    put(f, "cm.json", "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n"
                      "  \"metadata\": {\"name\": \"cfg\"},,\n}\n");
    assert_int_equal(kectl(f, "apply -f web.yaml -f cm.json"), 1);
    assert_string_equal(f->out, "");
    if (!strstr(f->err, "error: cm.json:4:31: "))
        fail_msg("not the JSON error with its position: %s", f->err);
    assert_nothing_connected(f);
}

static void test_kectl_apply_invalid_objects_are_refused_before_connecting(void **state)
{
    fixture *f = *state;
    put(f, "nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n");
    assert_int_equal(kectl(f, "apply -f nokind.yaml"), 1);
    assert_string_equal(f->err, "error: error validating \"nokind.yaml\": error validating data: "
                                "kind not set\n");
    put(f, "noname.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {labels: {a: b}}\n");
    assert_int_equal(kectl(f, "apply -f noname.yaml"), 1);
    assert_non_null(strstr(f->err, "metadata.name not set"));
    put(f, "crd.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
    assert_int_equal(kectl(f, "apply -f crd.yaml"), 1);
    assert_non_null(strstr(f->err, "no matches for kind \"Deployment\" in version \"apps/v1\""));
    put(f, "ns.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n");
    assert_int_equal(kectl(f, "apply -f ns.yaml -n b"), 1);
    assert_non_null(strstr(f->err, "the namespace from the provided object \"a\" does not match "
                                   "the namespace \"b\""));
    put(f, "empty.yaml", "# nothing\n---\n");
    assert_int_equal(kectl(f, "apply -f empty.yaml"), 1);
    assert_string_equal(f->err, "error: no objects passed to apply\n");
    assert_nothing_connected(f);
}

static void test_kectl_apply_dry_run_reads_a_folder_in_name_order(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_tp_sh("mkdir %s/m", f->dir), 0);
    put(f, "m/b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
                       "data: {mode: '0644', on: yes}\n"
                       "---\n"
                       "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\n"
                       "metadata: {name: thermo}\nspec: {deviceModelRef: {name: t1000}}\n");
    put(f, "m/a.json", "{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": "
                       "\"edge-1\"}}");
    put(f, "m/c.yml", "apiVersion: v1\nkind: List\nitems:\n"
                      "- {apiVersion: v1, kind: Secret, metadata: {name: s, namespace: shop}}\n");
    put(f, "m/notes.txt", "not a manifest: [\n");
    /* with -n shop, then without -n: the Secret keeps its own namespace */
    for (int run = 0; run < 2; run++) {
        const char *ns = run == 0 ? "shop" : "default";
        assert_int_equal(kectl(f, "apply -f m --dry-run -o json %s", run == 0 ? "-n shop" : ""),
                         0);
        json_error_t je;
        json_t *list = json_loads(f->out, 0, &je);
        if (!list)
            fail_msg("not JSON (%s): %s", je.text, f->out);
        json_t *items = json_object_get(list, "items");
        assert_string_equal(json_string_value(json_object_get(list, "kind")), "List");
        assert_int_equal(json_array_size(items), 4);
        const char *const want[][3] = {
            {"Node", "edge-1", NULL}, /* cluster-scoped: no namespace added */
            {"ConfigMap", "cfg", ns},
            {"Device", "thermo", ns},
            {"Secret", "s", "shop"},
        };
        for (size_t i = 0; i < 4; i++) {
            json_t *o = json_array_get(items, i);
            json_t *meta = json_object_get(o, "metadata");
            assert_string_equal(json_string_value(json_object_get(o, "kind")), want[i][0]);
            assert_string_equal(json_string_value(json_object_get(meta, "name")), want[i][1]);
            if (want[i][2])
                assert_string_equal(json_string_value(json_object_get(meta, "namespace")),
                                    want[i][2]);
            else
                assert_null(json_object_get(meta, "namespace"));
        }
        json_t *data = json_object_get(json_array_get(items, 1), "data");
        assert_string_equal(json_string_value(json_object_get(data, "mode")), "0644");
        assert_true(json_is_true(json_object_get(data, "on")));
        json_decref(list);
    }

    assert_int_equal(kectl(f, "apply -f m/b.yaml --dry-run"), 0);
    assert_string_equal(f->out, "configmap/cfg checked (dry run)\n"
                                "device/thermo checked (dry run)\n");
    assert_nothing_connected(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kectl_help_exits_0_and_describes_every_flag, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kectl_usage_errors_exit_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kectl_unknown_kind_is_refused_before_connecting,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_kectl_apply_missing_file_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_kectl_apply_malformed_yaml_names_file_line_col_and_sends_nothing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_kectl_apply_malformed_json_names_file_line_col,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_kectl_apply_invalid_objects_are_refused_before_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kectl_apply_dry_run_reads_a_folder_in_name_order,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
