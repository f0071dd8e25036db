/*
 * test_cloudcore_config.c — the cloudcore program refuses bad configuration
 * with one line naming the file, line and key, exits non-zero, and starts
 * nothing; --help exits 0 and names every key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_testproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
    int code;
    char err[4096];
    int lines;
} run;

/* run_cloudcore writes `yaml` to a file and runs cloudcore --config on it
 * (plus `flags`); collects the exit code and stderr. */
static void run_cloudcore(const char *yaml, const char *flags, run *r, char *path)
{
    char dir[64];
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    snprintf(path, 128, "%s/cloudcore.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    char errfile[128];
    snprintf(errfile, sizeof(errfile), "%s/stderr", dir);
    r->code = ke_tp_sh("%s --config %s --grpc.listen=127.0.0.1:0 --http.listen=127.0.0.1:0 --kubeapi.listen=127.0.0.1:0 --cloudhub.enable=false %s "
                       ">/dev/null 2>%s",
                       ke_tp_env("KE_CLOUDCORE"), path, flags ? flags : "", errfile);
    f = fopen(errfile, "r");
    assert_non_null(f);
    size_t n = fread(r->err, 1, sizeof(r->err) - 1, f);
    r->err[n] = '\0';
    fclose(f);
    r->lines = 0;
    for (char *p = r->err; *p; p++)
        r->lines += *p == '\n';
    ke_tp_sh("rm -rf %s", dir);
}

static void test_cloudcore_malformed_yaml_names_file_and_line(void **state)
{
    (void)state;
    run r;
    char path[128], want[160];
    run_cloudcore("grpc:\n  listen: \"127.0.0.1:0\"\n  threads: [1, 2\nhttp: {}\n", NULL, &r,
                  path);
    assert_int_equal(r.code, 2);
    assert_int_equal(r.lines, 1);
    snprintf(want, sizeof(want), "%s:4:", path);
    assert_non_null(strstr(r.err, want));
    assert_non_null(strstr(r.err, "YAML syntax error"));
}

static void test_cloudcore_unknown_key_names_file_line_and_key(void **state)
{
    (void)state;
    run r;
    char path[128], want[200];
    run_cloudcore("log_level: info\ngrpc:\n  threads: 2\n  lisen: \"0.0.0.0:1\"\n", NULL, &r,
                  path);
    assert_int_equal(r.code, 2);
    assert_int_equal(r.lines, 1);
    snprintf(want, sizeof(want), "%s:4: unknown key \"grpc.lisen\"", path);
    assert_non_null(strstr(r.err, want));
}

static void test_cloudcore_wrong_type_names_key(void **state)
{
    (void)state;
    run r;
    char path[128], want[200];
    run_cloudcore("grpc:\n  threads: many\n", NULL, &r, path);
    assert_int_equal(r.code, 2);
    assert_int_equal(r.lines, 1);
    snprintf(want, sizeof(want), "%s:2: key \"grpc.threads\"", path);
    assert_non_null(strstr(r.err, want));
}

static void test_cloudcore_unknown_flag_is_refused(void **state)
{
    (void)state;
    run r;
    char path[128];
    run_cloudcore("log_level: info\n", "--grpc.lissten=1", &r, path);
    assert_int_equal(r.code, 2);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.err, "unknown flag --grpc.lissten"));
}

static void test_cloudcore_help_exits_zero_and_lists_keys(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s --help", ke_tp_env("KE_CLOUDCORE"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8192];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_non_null(strstr(out, "grpc.listen"));
    assert_non_null(strstr(out, "grpc.tls.client_auth"));
    assert_non_null(strstr(out, "http.listen"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cloudcore_malformed_yaml_names_file_and_line),
        cmocka_unit_test(test_cloudcore_unknown_key_names_file_line_and_key),
        cmocka_unit_test(test_cloudcore_wrong_type_names_key),
        cmocka_unit_test(test_cloudcore_unknown_flag_is_refused),
        cmocka_unit_test(test_cloudcore_help_exits_zero_and_lists_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
