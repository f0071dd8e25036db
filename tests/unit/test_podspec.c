/*
 * test_podspec.c — what a Pod asks of the runtime (edge-agent/edged/
 * podspec.c): quantities, env from ConfigMaps and Secrets, mounts, and the
 * volume files on the host — with the bad inputs refused by name and
 * nothing written outside a pod's directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "podspec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], pod_dir[128], log_dir[128];
static json_t *objects; /* "Kind/name" -> object */

static json_t *lookup(const char *kind, const char *ns, const char *name, void *arg)
{
    (void)arg;
    (void)ns;
    char k[256];
    snprintf(k, sizeof(k), "%s/%s", kind, name);
    json_t *o = json_object_get(objects, k);
    return o ? json_incref(o) : NULL;
}

static podspec_ctx ctx(void)
{
    podspec_ctx c = {.node = "edge-1", .pod_dir = pod_dir, .log_dir = log_dir,
                     .pod_ip = "10.88.0.5", .lookup = lookup, .lookup_arg = NULL};
    return c;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    if (!o)
        fprintf(stderr, "bad test json: %s\n", e.text);
    assert_non_null(o);
    return o;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/ke-podspec-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(pod_dir, sizeof(pod_dir), "%s/pods/uid-1", dir);
    snprintf(log_dir, sizeof(log_dir), "%s/logs", dir);
    objects = parse("{\"ConfigMap/cm\":{\"data\":{\"greeting\":\"hello\",\"other\":\"x\"}},"
                    "\"Secret/s\":{\"data\":{\"token\":\"czNjcmV0\"}},"
                    "\"Secret/bad\":{\"data\":{\"token\":\"not base64!\"}}}");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(objects);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_quantities(void **state)
{
    (void)state;
    int64_t m;
    assert_int_equal(podspec_quantity("100m", &m), 0);
    assert_int_equal(m, 100);
    assert_int_equal(podspec_quantity("1", &m), 0);
    assert_int_equal(m, 1000);
    assert_int_equal(podspec_quantity("1.5", &m), 0);
    assert_int_equal(m, 1500);
    assert_int_equal(podspec_quantity("64Mi", &m), 0);
    assert_int_equal(m, 64LL * 1048576 * 1000);
    assert_int_equal(podspec_quantity("1G", &m), 0);
    assert_int_equal(m, 1000000000LL * 1000);
    const char *bad[] = {"", "abc", "-1", "1Zi", "1 Mi", "nan", "inf", "1e30Ei", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(podspec_quantity(bad[i], &m), -1);
}

static void test_env_from_configmap_secret_fields(void **state)
{
    (void)state;
    json_t *pod = parse(
        "{\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"uid-1\"},"
        "\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"c\",\"image\":\"i\","
        "\"envFrom\":[{\"configMapRef\":{\"name\":\"cm\"},\"prefix\":\"CM_\"}],"
        "\"env\":[{\"name\":\"A\",\"value\":\"1\"},"
        "{\"name\":\"G\",\"valueFrom\":{\"configMapKeyRef\":{\"name\":\"cm\",\"key\":\"greeting\"}}},"
        "{\"name\":\"T\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"s\",\"key\":\"token\"}}},"
        "{\"name\":\"N\",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":\"metadata.name\"}}},"
        "{\"name\":\"IP\",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":\"status.podIP\"}}},"
        "{\"name\":\"O\",\"valueFrom\":{\"configMapKeyRef\":{\"name\":\"nope\",\"key\":\"k\","
        "\"optional\":true}}},"
        "{\"name\":\"A\",\"value\":\"2\"}]}]}}");
    podspec_ctx c = ctx();
    char why[512] = "";
    podspec_arena *a = podspec_arena_new();
    Runtime__V1__ContainerConfig *cc =
        podspec_container(a, pod, json_array_get(json_object_get(json_object_get(pod, "spec"),
                                                                 "containers"), 0),
                          &c, 3, why, sizeof(why));
    assert_non_null(cc);
    const char *want[][2] = {{"CM_greeting", "hello"}, {"CM_other", "x"}, {"A", "2"},
                             {"G", "hello"}, {"T", "s3cret"}, {"N", "p"}, {"IP", "10.88.0.5"}};
    assert_int_equal(cc->n_envs, 7); /* O optional and absent; A once, the later value */
    for (size_t i = 0; i < 7; i++) {
        int found = 0;
        for (size_t j = 0; j < cc->n_envs; j++)
            if (strcmp(cc->envs[j]->key, want[i][0]) == 0) {
                assert_string_equal(cc->envs[j]->value, want[i][1]);
                found = 1;
            }
        assert_true(found);
    }
    assert_int_equal(cc->metadata->attempt, 3);
    assert_string_equal(cc->log_path, "c/3.log");
    podspec_arena_free(a);
    json_decref(pod);
}

static void expect_container_error(const char *container_json, const char *volumes_json,
                                   const char *reason_part)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"uid-1\"},"
             "\"spec\":{\"containers\":[%s],\"volumes\":%s}}",
             container_json, volumes_json);
    json_t *pod = parse(text);
    podspec_ctx c = ctx();
    char why[512] = "";
    podspec_arena *a = podspec_arena_new();
    Runtime__V1__ContainerConfig *cc =
        podspec_container(a, pod, json_array_get(json_object_get(json_object_get(pod, "spec"),
                                                                 "containers"), 0),
                          &c, 0, why, sizeof(why));
    assert_null(cc);
    if (!strstr(why, reason_part))
        fprintf(stderr, "why: %s\n", why);
    assert_non_null(strstr(why, "CreateContainerConfigError: "));
    assert_non_null(strstr(why, reason_part));
    podspec_arena_free(a);
    json_decref(pod);
}

static void test_container_errors_name_what_is_wrong(void **state)
{
    (void)state;
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"env\":[{\"name\":\"X\",\"valueFrom\":"
                           "{\"configMapKeyRef\":{\"name\":\"cm\",\"key\":\"missing\"}}}]}",
                           "[]", "couldn't find key missing in ConfigMap default/cm");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"env\":[{\"name\":\"X\",\"valueFrom\":"
                           "{\"secretKeyRef\":{\"name\":\"absent\",\"key\":\"k\"}}}]}",
                           "[]", "secret \"absent\" not found");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"env\":[{\"name\":\"X\",\"valueFrom\":"
                           "{\"secretKeyRef\":{\"name\":\"bad\",\"key\":\"token\"}}}]}",
                           "[]", "couldn't find key token in Secret default/bad");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"volumeMounts\":[{\"name\":\"v\","
                           "\"mountPath\":\"/x\"}]}",
                           "[]", "no volume named \"v\"");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"volumeMounts\":[{\"name\":\"v\","
                           "\"mountPath\":\"relative\"}]}",
                           "[{\"name\":\"v\",\"emptyDir\":{}}]", "mountPath must be an absolute");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"volumeMounts\":[{\"name\":\"v\","
                           "\"mountPath\":\"/x\",\"subPath\":\"../../etc\"}]}",
                           "[{\"name\":\"v\",\"emptyDir\":{}}]", "subPath must be a relative");
    expect_container_error("{\"name\":\"c\",\"image\":\"i\",\"resources\":{\"limits\":"
                           "{\"memory\":\"lots\"}}}",
                           "[]", "resources.limits.memory \"lots\"");
}

static void test_volumes_written_with_modes_and_refreshed(void **state)
{
    (void)state;
    json_t *pod = parse(
        "{\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"uid-1\"},"
        "\"spec\":{\"volumes\":[{\"name\":\"cfg\",\"configMap\":{\"name\":\"cm\"}},"
        "{\"name\":\"sec\",\"secret\":{\"secretName\":\"s\",\"defaultMode\":256}},"
        "{\"name\":\"one\",\"configMap\":{\"name\":\"cm\",\"items\":[{\"key\":\"greeting\","
        "\"path\":\"sub/g.txt\",\"mode\":384}]}},"
        "{\"name\":\"scratch\",\"emptyDir\":{}}]}}");
    podspec_ctx c = ctx();
    char why[512] = "", path[512], buf[64];
    assert_int_equal(podspec_volumes(pod, &c, why, sizeof(why)), 0);
    struct stat sb;
    snprintf(path, sizeof(path), "%s/volumes/sec/token", pod_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0400);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    assert_string_equal(buf, "s3cret");
    snprintf(path, sizeof(path), "%s/volumes/one/sub/g.txt", pod_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/volumes/one/other", pod_dir);
    assert_int_equal(stat(path, &sb), -1); /* items: only what is listed */
    snprintf(path, sizeof(path), "%s/volumes/scratch", pod_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    /* the ConfigMap changes: the file follows, a key gone takes its file */
    json_object_set_new(objects, "ConfigMap/cm", parse("{\"data\":{\"greeting\":\"changed\"}}"));
    assert_int_equal(podspec_volumes(pod, &c, why, sizeof(why)), 0);
    snprintf(path, sizeof(path), "%s/volumes/cfg/greeting", pod_dir);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    assert_string_equal(buf, "changed");
    snprintf(path, sizeof(path), "%s/volumes/cfg/other", pod_dir);
    assert_int_equal(stat(path, &sb), -1);
    assert_true(podspec_volume_refers(pod, "ConfigMap", "cm"));
    assert_true(podspec_volume_refers(pod, "Secret", "s"));
    assert_false(podspec_volume_refers(pod, "ConfigMap", "s"));
    json_decref(pod);
}

/* fsGroup: projected files get the pod's group (as a kubelet gives them)
 * so a non-root process of that group reads a 0440 Secret; runAsGroup and
 * supplementalGroups + fsGroup reach the container's CRI security context. */
static void test_groups_for_non_root_pods(void **state)
{
    (void)state;
    json_t *pod = parse(
        "{\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"uid-1\"},"
        "\"spec\":{\"securityContext\":{\"runAsUser\":65532,\"runAsGroup\":65532,"
        "\"fsGroup\":65533,\"supplementalGroups\":[7]},"
        "\"containers\":[{\"name\":\"c\",\"image\":\"i\",\"securityContext\":"
        "{\"runAsGroup\":65534,\"readOnlyRootFilesystem\":true}}],"
        "\"volumes\":[{\"name\":\"sec\",\"secret\":{\"secretName\":\"s\",\"defaultMode\":288}}]}}");
    podspec_ctx c = ctx();
    char why[512] = "", path[512];
    assert_int_equal(podspec_volumes(pod, &c, why, sizeof(why)), 0);
    struct stat sb;
    snprintf(path, sizeof(path), "%s/volumes/sec/token", pod_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0440);
    if (geteuid() == 0) /* only root can give a file away */
        assert_int_equal(sb.st_gid, 65533);
    podspec_arena *a = podspec_arena_new();
    Runtime__V1__ContainerConfig *cc =
        podspec_container(a, pod, json_array_get(json_object_get(json_object_get(pod, "spec"),
                                                                 "containers"), 0),
                          &c, 0, why, sizeof(why));
    assert_non_null(cc);
    Runtime__V1__LinuxContainerSecurityContext *sec = cc->linux->security_context;
    assert_int_equal(sec->run_as_user->value, 65532);
    assert_int_equal(sec->run_as_group->value, 65534); /* the container's wins */
    assert_int_equal(sec->n_supplemental_groups, 2);
    assert_int_equal(sec->supplemental_groups[0], 7);
    assert_int_equal(sec->supplemental_groups[1], 65533);
    assert_true(sec->readonly_rootfs);
    podspec_arena_free(a);
    json_decref(pod);
}

static void expect_volume_error(const char *volumes_json, const char *reason_part)
{
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"metadata\":{\"name\":\"p\",\"namespace\":\"default\",\"uid\":\"uid-1\"},"
             "\"spec\":{\"volumes\":%s}}",
             volumes_json);
    json_t *pod = parse(text);
    podspec_ctx c = ctx();
    char why[512] = "";
    assert_int_equal(podspec_volumes(pod, &c, why, sizeof(why)), -1);
    if (!strstr(why, reason_part))
        fprintf(stderr, "why: %s\n", why);
    assert_non_null(strstr(why, reason_part));
    json_decref(pod);
}

static void test_bad_volumes_refused_and_nothing_escapes(void **state)
{
    (void)state;
    expect_volume_error("[{\"name\":\"v\",\"configMap\":{\"name\":\"cm\",\"items\":"
                        "[{\"key\":\"greeting\",\"path\":\"../../../escaped\"}]}}]",
                        "relative path without \"..\"");
    expect_volume_error("[{\"name\":\"v\",\"configMap\":{\"name\":\"cm\",\"items\":"
                        "[{\"key\":\"greeting\",\"path\":\"/etc/x\"}]}}]",
                        "relative path");
    expect_volume_error("[{\"name\":\"../v\",\"emptyDir\":{}}]", "spec.volumes[0].name");
    expect_volume_error("[{\"name\":\"v\",\"configMap\":{\"name\":\"absent\"}}]",
                        "configmap \"absent\" not found");
    expect_volume_error("[{\"name\":\"v\",\"hostPath\":{\"path\":\"relative\"}}]",
                        "hostPath.path must be absolute");
    expect_volume_error("[{\"name\":\"v\",\"nfs\":{\"server\":\"x\"}}]",
                        "only configMap, secret, emptyDir and hostPath");
    char path[512];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/escaped", dir);
    assert_int_equal(stat(path, &sb), -1);
    snprintf(path, sizeof(path), "%s/pods/escaped", dir);
    assert_int_equal(stat(path, &sb), -1);
}

static void test_sandbox_labels_and_network(void **state)
{
    (void)state;
    json_t *pod = parse("{\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"uid\":\"u\","
                        "\"labels\":{\"app\":\"web\"}},\"spec\":{\"hostNetwork\":true}}");
    podspec_ctx c = ctx();
    char why[256];
    podspec_arena *a = podspec_arena_new();
    Runtime__V1__PodSandboxConfig *sc = podspec_sandbox(a, pod, &c, 2, why, sizeof(why));
    assert_non_null(sc);
    assert_int_equal(sc->metadata->attempt, 2);
    assert_string_equal(sc->hostname, ""); /* the host's name on the host's network */
    assert_int_equal(sc->linux->security_context->namespace_options->network,
                     RUNTIME__V1__NAMESPACE_MODE__NODE);
    int uid = 0, node = 0, app = 0;
    for (size_t i = 0; i < sc->n_labels; i++) {
        uid |= strcmp(sc->labels[i]->key, PODSPEC_LABEL_UID) == 0 &&
               strcmp(sc->labels[i]->value, "u") == 0;
        node |= strcmp(sc->labels[i]->key, PODSPEC_LABEL_NODE) == 0 &&
                strcmp(sc->labels[i]->value, "edge-1") == 0;
        app |= strcmp(sc->labels[i]->key, "app") == 0;
    }
    assert_true(uid && node && app);
    podspec_arena_free(a);
    json_decref(pod);
    pod = parse("{\"metadata\":{\"namespace\":\"ns\",\"uid\":\"u\"},\"spec\":{}}");
    a = podspec_arena_new();
    assert_null(podspec_sandbox(a, pod, &c, 0, why, sizeof(why)));
    assert_non_null(strstr(why, "metadata.name"));
    podspec_arena_free(a);
    json_decref(pod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_env_from_configmap_secret_fields),
        cmocka_unit_test(test_container_errors_name_what_is_wrong),
        cmocka_unit_test(test_volumes_written_with_modes_and_refreshed),
        cmocka_unit_test(test_groups_for_non_root_pods),
        cmocka_unit_test(test_bad_volumes_refused_and_nothing_escapes),
        cmocka_unit_test(test_sandbox_labels_and_network),
    };
    return cmocka_run_group_tests_name("podspec", tests, setup, teardown);
}
