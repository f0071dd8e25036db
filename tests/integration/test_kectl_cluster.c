/*
 * test_kectl_cluster.c — kectl against a real cluster (keadm, cloudcore,
 * edgecore): invalid objects are refused with an error naming the field and
 * nothing is stored; a pod applied from YAML reaches its node and its
 * status, sent by the edge, shows in `kectl get pods -o wide`; deleting it
 * removes it at the edge and then in the cloud.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ke_cluster C;
static ke_edge E;
static char kectl[1024];

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* run runs `kectl ARGS` and returns its exit code; output in out. */
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

static void write_file(const char *name, const char *text, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", C.dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    ke_cluster_start(&C, NULL);
    assert_int_equal(ke_cluster_join(&C, "edge-1", ke_cluster_token(&C)), 0);
    ke_edge_start(&C, &E, "edge-1", C.grpc_port, NULL);
    snprintf(kectl, sizeof(kectl),
             "%s/tools/kectl --server 127.0.0.1:%d --ca %s/cloud/ca.crt --cert "
             "%s/cloud/admin.crt --key %s/cloud/admin.key",
             ke_tp_env("KE_BIN_DIR"), C.grpc_port, C.dir, C.dir, C.dir);
    char out[4096];
    for (int i = 0; i < 300 && !strstr(out, "Ready"); i++) {
        run(out, sizeof(out), "get nodes");
        if (!strstr(out, "edge-1") || !strstr(out, "Ready"))
            pause_ms(100);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_edge_stop(&E);
    ke_cluster_stop(&C);
    return 0;
}

static void test_kectl_refuses_invalid_objects_naming_the_field(void **state)
{
    (void)state;
    char path[256], out[4096];
    write_file("lost.yaml",
               "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lost\nspec:\n  nodeName: edge-9\n"
               "  containers:\n  - name: c\n    image: busybox\n",
               path, sizeof(path));
    assert_int_equal(run(out, sizeof(out), "apply -f %s", path), 1);
    assert_non_null(strstr(out, "spec.nodeName"));
    write_file("noimage.yaml",
               "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  nodeName: edge-1\n"
               "  containers:\n  - name: c\n",
               path, sizeof(path));
    assert_int_equal(run(out, sizeof(out), "apply -f %s", path), 1);
    assert_non_null(strstr(out, "spec.containers[0].image"));
    /* nothing was stored */
    assert_int_equal(run(out, sizeof(out), "get pods lost"), 1);
    assert_non_null(strstr(out, "not found"));
    assert_int_equal(run(out, sizeof(out), "get pods noimage"), 1);
}

static void test_kectl_pod_status_from_the_edge_shows_in_get_wide(void **state)
{
    (void)state;
    char out[8192], path[512];
    snprintf(path, sizeof(path), "%s/deploy/examples/web.yaml", ke_tp_env("KE_SOURCE_DIR"));
    assert_int_equal(run(out, sizeof(out), "apply -f %s", path), 0);
    assert_non_null(strstr(out, "pod/web created"));
    int at_edge = 0;
    for (int i = 0; i < 300 && !at_edge; i++) {
        Ke__V1__EdgeListReply *r = ke_edge_list(&E);
        for (size_t k = 0; r && k < r->n_objects; k++)
            at_edge |= strcmp(r->objects[k]->key, "node/edge-1/default/Pod/web") == 0;
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (!at_edge)
            pause_ms(100);
    }
    assert_true(at_edge);
    assert_int_equal(ke_edge_report(&E, "node/edge-1/default/Pod/web", 1, "podstatus",
                                    "{\"phase\":\"Running\",\"podIP\":\"192.168.7.7\","
                                    "\"containerStatuses\":[{\"name\":\"web\",\"ready\":true,"
                                    "\"restartCount\":2}]}"),
                     KE_RPC_OK);
    int ok = 0;
    for (int i = 0; i < 300 && !ok; i++) {
        assert_int_equal(run(out, sizeof(out), "get pods -o wide"), 0);
        ok = strstr(out, "Running") != NULL;
        if (!ok)
            pause_ms(100);
    }
    assert_true(ok);
    assert_non_null(strstr(out, "NODE"));
    assert_non_null(strstr(out, "edge-1"));
    assert_non_null(strstr(out, "192.168.7.7"));
    assert_non_null(strstr(out, "1/1"));
}

static void test_kectl_delete_removes_the_pod_at_the_edge_then_in_the_cloud(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(run(out, sizeof(out), "delete pod web"), 0);
    assert_non_null(strstr(out, "pod \"web\" deleted"));
    /* still there, terminating, until the edge confirms */
    assert_int_equal(run(out, sizeof(out), "get pods web"), 0);
    assert_int_equal(ke_edge_report_op(&E, "node/edge-1/default/Pod/web", 2, "podstatus",
                                       KE__V1__OPERATION__OPERATION_DELETE, NULL),
                     KE_RPC_OK);
    int gone = 0;
    for (int i = 0; i < 300 && !gone; i++) {
        gone = run(out, sizeof(out), "get pods web") == 1 && strstr(out, "not found");
        if (!gone)
            pause_ms(100);
    }
    assert_true(gone);
    Ke__V1__EdgeListReply *r = ke_edge_list(&E);
    for (size_t k = 0; r && k < r->n_objects; k++)
        assert_string_not_equal(r->objects[k]->key, "node/edge-1/default/Pod/web");
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kectl_refuses_invalid_objects_naming_the_field),
        cmocka_unit_test(test_kectl_pod_status_from_the_edge_shows_in_get_wide),
        cmocka_unit_test(test_kectl_delete_removes_the_pod_at_the_edge_then_in_the_cloud),
    };
    return cmocka_run_group_tests_name("kectl", tests, setup, teardown);
}
