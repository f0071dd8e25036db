/*
 * test_edged.c — pods run as real containers: a private containerd (its
 * own root, state, socket and runc state under the test's directory,
 * tools/images/containerd.sh) with images built locally (busybox-static
 * and the project's pause), a cloudcore process, an edgecore process with
 * Edged, and the real kectl. What is checked is what a user sees: kectl's
 * output, the pod's status in the cloud's store, and what the runtime runs
 * (asked through CRI, as the test's own client).
 *
 * Skipped (exit 77) when containerd or runc is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cri/api.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_rpc.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NODE "edge-1"
#define WAIT_MS 60000

static ke_cluster C;
static ke_edge E;
static char ctrd[256], sock[300], kectl[1024], edged_root[300];
static ke_rpc_channel *cri;
static const char *edge_extra[8];
static char ep_arg[400], root_arg[400];

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return ke_tp_capture(out, len, "%s %s 2>&1", kectl, args);
}

static void apply_yaml(const char *name, const char *yaml)
{
    char path[512], out[4096];
    snprintf(path, sizeof(path), "%s/%s.yaml", C.dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    int rc = run(out, sizeof(out), "apply -f %s", path);
    if (rc != 0)
        fprintf(stderr, "kectl apply %s: %s\n", name, out);
    assert_int_equal(rc, 0);
}

static json_t *pod_get(const char *name)
{
    return ke_ec_get(C.api, "Pod", "default", name, NULL);
}

/* wait_pod polls the pod in the cloud until pred holds; returns it */
static json_t *wait_pod(const char *name, int (*pred)(const json_t *pod, const void *arg),
                        const void *arg, const char *what)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    json_t *last = NULL;
    while (ke_time_mono_ms() < until) {
        json_t *p = pod_get(name);
        if (p && pred(p, arg)) {
            json_decref(last);
            return p;
        }
        json_decref(last);
        last = p;
        pause_ms(100);
    }
    char *s = last ? json_dumps(json_object_get(last, "status"), JSON_INDENT(1)) : NULL;
    fprintf(stderr, "pod %s never became %s; last status: %s\n", name, what, s ? s : "(none)");
    free(s);
    json_decref(last);
    fail();
    return NULL;
}

static const json_t *cstatus(const json_t *pod, size_t i)
{
    return json_array_get(json_object_get(json_object_get(pod, "status"), "containerStatuses"), i);
}

static const char *phase(const json_t *pod) { return ke_k8s_str(pod, "status.phase"); }

static int is_running(const json_t *pod, const void *arg)
{
    (void)arg;
    const char *ph = phase(pod);
    return ph && strcmp(ph, "Running") == 0 &&
           json_object_get(json_object_get(cstatus(pod, 0), "state"), "running") != NULL;
}

static int is_phase(const json_t *pod, const void *arg)
{
    const char *ph = phase(pod);
    return ph && strcmp(ph, arg) == 0;
}

static int waiting_reason(const json_t *pod, const void *arg)
{
    const char *r = ke_k8s_str(json_object_get(cstatus(pod, 0), "state"), "waiting.reason");
    return r && strcmp(r, arg) == 0;
}

/* is_ready: the pod's Ready condition is arg ("True"/"False") while running */
static int is_ready(const json_t *pod, const void *arg)
{
    if (!is_running(pod, NULL))
        return 0;
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i, c) {
        const char *t = ke_k8s_str(c, "type");
        if (t && strcmp(t, "Ready") == 0)
            return strcmp(ke_k8s_str(c, "status"), arg) == 0 &&
                   json_is_true(json_object_get(cstatus(pod, 0), "ready")) ==
                       (strcmp(arg, "True") == 0);
    }
    return 0;
}

static int restarted_at_least(const json_t *pod, const void *arg)
{
    return json_integer_value(json_object_get(cstatus(pod, 0), "restartCount")) >=
           *(const int64_t *)arg;
}

static int restarted_twice(const json_t *pod, const void *arg)
{
    (void)arg;
    const json_t *cs = cstatus(pod, 0);
    const json_t *t = json_object_get(json_object_get(cs, "lastState"), "terminated");
    return json_integer_value(json_object_get(cs, "restartCount")) >= 2 && t &&
           json_integer_value(json_object_get(t, "exitCode")) == 1;
}

/* ---- the runtime, asked directly ---- */

/* containers the runtime holds for a pod uid (any state) */
static size_t runtime_containers(const char *uid, size_t *running, char *first_id, size_t cap)
{
    Runtime__V1__ContainerFilter__LabelSelectorEntry sel =
        RUNTIME__V1__CONTAINER_FILTER__LABEL_SELECTOR_ENTRY__INIT;
    Runtime__V1__ContainerFilter__LabelSelectorEntry *selp = &sel;
    sel.key = "io.kubernetes.pod.uid";
    sel.value = (char *)uid;
    Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
    f.label_selector = &selp;
    f.n_label_selector = 1;
    Runtime__V1__ListContainersRequest r = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
    r.filter = &f;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_stub stub = {cri, &runtime__v1__runtime_service__descriptor};
    assert_int_equal(ke_rpc_stub_unary(&stub, "ListContainers", &r.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    Runtime__V1__ListContainersResponse *lr = (void *)reply;
    size_t n = lr->n_containers;
    if (running)
        *running = 0;
    for (size_t i = 0; i < n; i++) {
        if (running && lr->containers[i]->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING)
            (*running)++;
        if (first_id && i == 0)
            snprintf(first_id, cap, "%s", lr->containers[i]->id);
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    return n;
}

static size_t runtime_sandboxes(const char *uid)
{
    Runtime__V1__PodSandboxFilter__LabelSelectorEntry sel =
        RUNTIME__V1__POD_SANDBOX_FILTER__LABEL_SELECTOR_ENTRY__INIT;
    Runtime__V1__PodSandboxFilter__LabelSelectorEntry *selp = &sel;
    sel.key = "io.kubernetes.pod.uid";
    sel.value = (char *)uid;
    Runtime__V1__PodSandboxFilter f = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
    f.label_selector = &selp;
    f.n_label_selector = 1;
    Runtime__V1__ListPodSandboxRequest r = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
    r.filter = &f;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_stub stub = {cri, &runtime__v1__runtime_service__descriptor};
    assert_int_equal(ke_rpc_stub_unary(&stub, "ListPodSandbox", &r.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    size_t n = ((Runtime__V1__ListPodSandboxResponse *)reply)->n_items;
    protobuf_c_message_free_unpacked(reply, NULL);
    return n;
}

/* wait_gone polls the cloud until the pod is not found; returns 1 */
static int wait_gone(const char *name)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_time_mono_ms() < until) {
        ke_rpc_status st;
        json_t *p = ke_ec_get(C.api, "Pod", "default", name, &st);
        if (!p && st.code == KE_RPC_NOT_FOUND)
            return 1;
        json_decref(p);
        pause_ms(100);
    }
    return 0;
}

/* ---- set-up ---- */

static void start_edge(void)
{
    ke_edge_start(&C, &E, NODE, C.grpc_port, edge_extra);
}

/* stop_runtime stops the test's containerd and everything it runs; also
 * at exit, so a failed set-up (cmocka then skips teardown) leaves nothing */
static int runtime_started;
static void stop_runtime(void)
{
    if (!runtime_started)
        return;
    runtime_started = 0;
    ke_tp_sh("%s/tools/images/containerd.sh --stop %s", ke_tp_env("KE_SOURCE_DIR"), ctrd);
}

static int setup(void **state)
{
    (void)state;
    if (ke_tp_sh("command -v containerd >/dev/null && command -v runc >/dev/null && "
                 "command -v ctr >/dev/null && test -x /bin/busybox") != 0) {
        fprintf(stderr, "containerd, runc or busybox-static not installed: skipping\n");
        exit(77);
    }
    ke_cluster_start(&C, NULL);
    snprintf(ctrd, sizeof(ctrd), "%s/ctrd", C.dir);
    snprintf(sock, sizeof(sock), "%s/containerd.sock", ctrd);
    runtime_started = 1;
    atexit(stop_runtime);
    assert_int_equal(ke_tp_sh("KE_IMAGE_CACHE=%s/test-images %s/tools/images/containerd.sh %s "
                              ">%s/containerd.sh.log 2>&1",
                              ke_tp_env("KE_BIN_DIR"), ke_tp_env("KE_SOURCE_DIR"), ctrd, C.dir),
                     0);
    char target[400];
    snprintf(target, sizeof(target), "unix:%s", sock);
    assert_int_equal(ke_rpc_channel_new(C.loop, target, NULL, &cri), 0);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    snprintf(edged_root, sizeof(edged_root), "%s/" NODE "/edged", C.dir);
    snprintf(ep_arg, sizeof(ep_arg), "--edged.runtime_endpoint=%s", sock);
    snprintf(root_arg, sizeof(root_arg), "--edged.root_dir=%s", edged_root);
    edge_extra[0] = "--modules.edged.enable=true";
    edge_extra[1] = ep_arg;
    edge_extra[2] = root_arg;
    edge_extra[3] = "--edged.relist_period=300ms";
    edge_extra[4] = "--edged.backoff_initial=1s";
    edge_extra[5] = "--edged.backoff_max=4s";
    edge_extra[6] = NULL;
    start_edge();
    snprintf(kectl, sizeof(kectl),
             "%s/tools/kectl --server 127.0.0.1:%d --ca %s/cloud/ca.crt --cert "
             "%s/cloud/admin.crt --key %s/cloud/admin.key",
             ke_tp_env("KE_BIN_DIR"), C.grpc_port, C.dir, C.dir, C.dir);
    return 0;
}

/* teardown stops everything before it judges how edgecore ended, so a
 * failure there leaves no process behind */
static int teardown(void **state)
{
    (void)state;
    int edge_status = E.running ? ke_tp_stop(&E.proc) : 0;
    E.running = 0;
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    ke_rpc_channel_free(cri);
    stop_runtime();
    if (edge_status != 0)
        ke_tp_sh("echo edgecore exited with status %d >&2; tail -40 %s >&2", edge_status, E.log);
    ke_cluster_stop(&C);
    assert_int_equal(edge_status, 0);
    return 0;
}

/* ---- 1: env from a ConfigMap, a file from a Secret, a refreshed file ---- */

static const char *APP =
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  nodeName: " NODE "\n"
    "  hostNetwork: true\n  terminationGracePeriodSeconds: 5\n"
    "  containers:\n  - name: main\n    image: localhost/busybox:1.0\n"
    "    imagePullPolicy: IfNotPresent\n"
    "    command: [\"sh\", \"-c\"]\n"
    "    args:\n    - |\n"
    "      echo GREETING=$GREETING\n"
    "      echo TOKEN=$(cat /etc/secret/token)\n"
    "      trap 'echo got TERM; exit 0' TERM\n"
    "      last=\n"
    "      while true; do\n"
    "        now=$(cat /etc/config/greeting)\n"
    "        if [ \"$now\" != \"$last\" ]; then echo FILE=$now; last=$now; fi\n"
    "        sleep 0.2\n"
    "      done\n"
    "    env:\n    - name: GREETING\n      valueFrom:\n        configMapKeyRef:\n"
    "          name: app-config\n          key: greeting\n"
    "    volumeMounts:\n    - name: config\n      mountPath: /etc/config\n"
    "    - name: secret\n      mountPath: /etc/secret\n"
    "  volumes:\n  - name: config\n    configMap:\n      name: app-config\n"
    "  - name: secret\n    secret:\n      secretName: app-secret\n      defaultMode: 0400\n";

static char app_uid[64], app_cid[128];

/* logs_contain: kectl logs app shows text (the log is read on the edge) */
static int logs_contain(const char *pod, const char *text)
{
    char out[16384];
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_time_mono_ms() < until) {
        if (run(out, sizeof(out), "logs %s", pod) == 0 && strstr(out, text))
            return 1;
        pause_ms(200);
    }
    fprintf(stderr, "kectl logs %s never showed \"%s\"; last output:\n%s\n", pod, text, out);
    return 0;
}

static void test_pod_runs_with_configmap_env_and_secret_file(void **state)
{
    (void)state;
    apply_yaml("cm", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n"
                     "data:\n  greeting: hello-from-configmap\n");
    apply_yaml("secret", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secret\n"
                         "stringData:\n  token: s3cret-value\n");
    apply_yaml("app", APP);
    json_t *p = wait_pod("app", is_running, NULL, "Running");
    snprintf(app_uid, sizeof(app_uid), "%s", ke_k8s_str(p, "metadata.uid"));
    const char *cid = ke_k8s_str(cstatus(p, 0), "containerID");
    assert_non_null(cid);
    assert_true(strncmp(cid, "containerd://", 13) == 0);
    snprintf(app_cid, sizeof(app_cid), "%s", cid);
    assert_non_null(ke_k8s_str(p, "status.startTime"));
    json_decref(p);
    /* the runtime runs exactly one container for it */
    size_t running = 0;
    assert_int_equal(runtime_containers(app_uid, &running, NULL, 0), 1);
    assert_int_equal(running, 1);
    assert_int_equal(runtime_sandboxes(app_uid), 1);
    /* what it printed: the env var from the ConfigMap, the file from the Secret */
    assert_true(logs_contain("app", "GREETING=hello-from-configmap"));
    assert_true(logs_contain("app", "TOKEN=s3cret-value"));
    assert_true(logs_contain("app", "FILE=hello-from-configmap"));
    /* kectl get pods shows it running */
    char out[4096];
    assert_int_equal(run(out, sizeof(out), "get pods app"), 0);
    assert_non_null(strstr(out, "Running"));
    assert_non_null(strstr(out, "1/1"));
    /* the node's status: what the host has, all of it for pods */
    json_t *node = ke_ec_get(C.api, "Node", "", NODE, NULL);
    assert_non_null(node);
    assert_non_null(ke_k8s_str(node, "status.capacity.ephemeral-storage"));
    assert_non_null(ke_k8s_str(node, "status.allocatable.cpu"));
    assert_string_equal(ke_k8s_str(node, "status.allocatable.memory"),
                        ke_k8s_str(node, "status.capacity.memory"));
    json_decref(node);
    /* the secret file has the mode asked for */
    char path[700];
    snprintf(path, sizeof(path), "%s/pods/%s/volumes/secret/token", edged_root, app_uid);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0400);
    /* editing the ConfigMap updates the mounted file, seen by the container */
    apply_yaml("cm2", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n"
                      "data:\n  greeting: changed-at-runtime\n");
    assert_true(logs_contain("app", "FILE=changed-at-runtime"));
}

/* ---- pod networking: a pod in its own namespace, reachable at its IP ---- */

static void test_pod_gets_its_own_ip_and_serves_on_it(void **state)
{
    (void)state;
    if (access("/usr/lib/cni/bridge", X_OK) != 0) {
        fprintf(stderr, "containernetworking-plugins not installed: host-network pods only\n");
        skip();
    }
    apply_yaml("www", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: www\n"
                      "data:\n  index.html: served-from-a-pod\n");
    apply_yaml("web", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n"
                      "  nodeName: " NODE "\n"
                      "  containers:\n  - name: httpd\n    image: localhost/busybox:1.0\n"
                      "    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
                      "    readinessProbe:\n      httpGet:\n        path: /index.html\n"
                      "        port: 8080\n      periodSeconds: 1\n"
                      "    volumeMounts:\n    - name: www\n      mountPath: /www\n"
                      "  volumes:\n  - name: www\n    configMap:\n      name: www\n");
    json_t *p = wait_pod("web", is_ready, "True", "Ready (its httpGet readiness probe passing)");
    const char *ip = ke_k8s_str(p, "status.podIP");
    assert_non_null(ip);
    assert_true(strncmp(ip, "10.88.", 6) == 0);
    char out[256] = "";
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_time_mono_ms() < until) {
        if (ke_tp_capture(out, sizeof(out), "curl -s --max-time 2 http://%s:8080/index.html", ip) == 0 &&
            strstr(out, "served-from-a-pod"))
            break;
        pause_ms(200);
    }
    assert_non_null(strstr(out, "served-from-a-pod"));
    json_decref(p);
    assert_int_equal(run(out, sizeof(out), "delete pod web"), 0);
    assert_true(wait_gone("web"));
}

/* ---- probes: exec readiness and liveness follow a ConfigMap's keys ---- */

static void test_exec_probes_set_ready_and_restart_a_dead_container(void **state)
{
    (void)state;
    apply_yaml("flags", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
                        "data:\n  alive: \"1\"\n");
    apply_yaml("probed", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probed\nspec:\n"
                         "  nodeName: " NODE "\n  hostNetwork: true\n"
                         "  terminationGracePeriodSeconds: 1\n"
                         "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                         "    command: [\"sh\", \"-c\", \"while true; do sleep 1; done\"]\n"
                         "    readinessProbe:\n      exec:\n"
                         "        command: [\"test\", \"-f\", \"/flags/ready\"]\n"
                         "      periodSeconds: 1\n      failureThreshold: 1\n"
                         "    livenessProbe:\n      exec:\n"
                         "        command: [\"test\", \"-f\", \"/flags/alive\"]\n"
                         "      periodSeconds: 1\n      failureThreshold: 2\n"
                         "    volumeMounts:\n    - name: flags\n      mountPath: /flags\n"
                         "  volumes:\n  - name: flags\n    configMap:\n      name: flags\n");
    json_t *p = wait_pod("probed", is_ready, "False", "Running and not ready");
    assert_int_equal(json_integer_value(json_object_get(cstatus(p, 0), "restartCount")), 0);
    json_decref(p);
    /* the probe passes once the file is there, and fails again without it */
    apply_yaml("flags2", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
                         "data:\n  alive: \"1\"\n  ready: \"1\"\n");
    json_decref(wait_pod("probed", is_ready, "True", "Ready"));
    apply_yaml("flags3", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
                         "data:\n  alive: \"1\"\n");
    json_decref(wait_pod("probed", is_ready, "False", "not ready again"));
    /* liveness failing: the container is killed and restarted */
    apply_yaml("flags4", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
                         "data:\n  ready: \"1\"\n");
    int64_t one = 1;
    json_decref(wait_pod("probed", restarted_at_least, &one, "restarted by its liveness probe"));
    apply_yaml("flags5", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n"
                         "data:\n  alive: \"1\"\n  ready: \"1\"\n");
    json_decref(wait_pod("probed", is_ready, "True", "Ready after its restart"));
    char out[256];
    assert_int_equal(run(out, sizeof(out), "delete pod probed"), 0);
    assert_true(wait_gone("probed"));
}

/* ---- 2: restart policy and back-off ---- */

static void test_failing_container_restarts_with_backoff_and_never_fails(void **state)
{
    (void)state;
    apply_yaml("crash", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n"
                        "  nodeName: " NODE "\n  hostNetwork: true\n"
                        "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                        "    command: [\"sh\", \"-c\", \"echo boom; exit 1\"]\n");
    apply_yaml("never", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: never\nspec:\n"
                        "  nodeName: " NODE "\n  hostNetwork: true\n  restartPolicy: Never\n"
                        "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                        "    command: [\"sh\", \"-c\", \"exit 3\"]\n");
    apply_yaml("done", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\nspec:\n"
                       "  nodeName: " NODE "\n  hostNetwork: true\n  restartPolicy: OnFailure\n"
                       "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                       "    command: [\"sh\", \"-c\", \"exit 0\"]\n");
    /* back-off shows as CrashLoopBackOff, then a later restart happens */
    json_decref(wait_pod("crash", waiting_reason, "CrashLoopBackOff", "in CrashLoopBackOff"));
    json_t *p = wait_pod("crash", restarted_twice, NULL, "restarted twice");
    const char *ph = phase(p);
    assert_string_equal(ph, "Running");
    json_decref(p);
    p = wait_pod("never", is_phase, "Failed", "Failed");
    const json_t *t = json_object_get(json_object_get(cstatus(p, 0), "state"), "terminated");
    assert_non_null(t);
    assert_int_equal(json_integer_value(json_object_get(t, "exitCode")), 3);
    assert_int_equal(json_integer_value(json_object_get(cstatus(p, 0), "restartCount")), 0);
    json_decref(p);
    p = wait_pod("done", is_phase, "Succeeded", "Succeeded");
    assert_int_equal(json_integer_value(json_object_get(cstatus(p, 0), "restartCount")), 0);
    json_decref(p);
}

/* ---- 5: bad input gives a clear reason; the other pods keep running ---- */

static void test_bad_pods_get_clear_reasons(void **state)
{
    (void)state;
    apply_yaml("noimage", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n"
                          "  nodeName: " NODE "\n  hostNetwork: true\n"
                          "  containers:\n  - name: c\n    image: localhost/absent:1.0\n"
                          "    imagePullPolicy: Never\n");
    apply_yaml("nopull", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nopull\nspec:\n"
                         "  nodeName: " NODE "\n  hostNetwork: true\n"
                         "  containers:\n  - name: c\n    image: 127.0.0.1:9/absent:1.0\n");
    apply_yaml("badvol", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: badvol\nspec:\n"
                         "  nodeName: " NODE "\n  hostNetwork: true\n"
                         "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                         "    volumeMounts:\n    - name: missing\n      mountPath: /x\n");
    apply_yaml("nocm", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nocm\nspec:\n"
                       "  nodeName: " NODE "\n  hostNetwork: true\n"
                       "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                       "  volumes:\n  - name: v\n    configMap:\n      name: no-such-map\n");
    apply_yaml("nocmd", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nocmd\nspec:\n"
                        "  nodeName: " NODE "\n  hostNetwork: true\n"
                        "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                        "    command: [\"/bin/no-such-command\"]\n");
    json_t *p = wait_pod("noimage", waiting_reason, "ErrImageNeverPull", "ErrImageNeverPull");
    assert_non_null(strstr(ke_k8s_str(json_object_get(cstatus(p, 0), "state"), "waiting.message"),
                           "localhost/absent:1.0"));
    json_decref(p);
    p = wait_pod("badvol", waiting_reason, "CreateContainerConfigError", "a config error");
    assert_non_null(strstr(ke_k8s_str(json_object_get(cstatus(p, 0), "state"), "waiting.message"),
                           "missing"));
    json_decref(p);
    p = wait_pod("nocm", waiting_reason, "CreateContainerConfigError", "a config error");
    assert_non_null(strstr(ke_k8s_str(json_object_get(cstatus(p, 0), "state"), "waiting.message"),
                           "no-such-map"));
    json_decref(p);
    /* a command that does not exist: the start fails, the reason says why */
    p = wait_pod("nocmd", waiting_reason, "CrashLoopBackOff", "CrashLoopBackOff");
    const json_t *t = json_object_get(json_object_get(cstatus(p, 0), "lastState"), "terminated");
    assert_non_null(t);
    assert_non_null(strstr(json_string_value(json_object_get(t, "message")), "no-such-command"));
    json_decref(p);
    json_t *q = NULL;
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        q = pod_get("nopull");
        const char *r = ke_k8s_str(json_object_get(cstatus(q, 0), "state"), "waiting.reason");
        if (r && (strcmp(r, "ErrImagePull") == 0 || strcmp(r, "ImagePullBackOff") == 0))
            break;
        json_decref(q);
        assert_true(ke_time_mono_ms() < until);
        pause_ms(100);
    }
    json_decref(q);
    /* the pod that was running still is, the same container */
    p = wait_pod("app", is_running, NULL, "Running");
    assert_string_equal(ke_k8s_str(cstatus(p, 0), "containerID"), app_cid);
    json_decref(p);
    char out[256];
    assert_int_equal(run(out, sizeof(out), "delete pod noimage"), 0);
    assert_true(wait_gone("noimage"));
}

/* ---- 3: autonomy ---- */

static int64_t restarts(const json_t *pod)
{
    return json_integer_value(json_object_get(cstatus(pod, 0), "restartCount"));
}

/* A Watch on one pod from a resourceVersion: every write to it, in order */
typedef struct watch_rec {
    pthread_mutex_t mu;
    int64_t counts[4096]; /* restartCount of each event */
    size_t n;
    int closed;
} watch_rec;

static void watch_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    json_t *pod = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, NULL);
    pthread_mutex_lock(&w->mu);
    if (pod && w->n < sizeof(w->counts) / sizeof(w->counts[0]))
        w->counts[w->n++] = restarts(pod);
    pthread_mutex_unlock(&w->mu);
    json_decref(pod);
}

static void watch_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    (void)st;
    watch_rec *w = ud;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    pthread_mutex_unlock(&w->mu);
}

static void test_pods_survive_cloud_and_edge_kills_and_status_catches_up(void **state)
{
    (void)state;
    json_t *p = pod_get("crash");
    assert_non_null(p);
    int64_t before = restarts(p);
    uint64_t rv0 = strtoull(ke_k8s_str(p, "metadata.resourceVersion"), NULL, 10);
    json_decref(p);
    ke_cluster_kill_cloud(&C);
    ke_edge_kill(&E);
    start_edge();
    /* the edge runs on alone: the same container, no second copy */
    size_t running = 0;
    char id[128] = "";
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_time_mono_ms() < until) {
        if (ke_file_contains(E.log, "runtime listed"))
            break;
        pause_ms(100);
    }
    assert_true(ke_file_contains(E.log, "runtime listed"));
    assert_int_equal(runtime_containers(app_uid, &running, id, sizeof(id)), 1);
    assert_int_equal(running, 1);
    assert_string_equal(id, app_cid + 13);
    assert_int_equal(runtime_sandboxes(app_uid), 1);
    /* the crashing pod keeps restarting meanwhile: wait for two more exits
     * (seen in edgecore's log), then bring the cloud back */
    until = ke_time_mono_ms() + WAIT_MS;
    int exits = 0;
    while (ke_time_mono_ms() < until && exits < 2) {
        char out[64];
        ke_tp_capture(out, sizeof(out), "grep -c 'container exited pod=default/crash' %s", E.log);
        exits = atoi(out);
        pause_ms(100);
    }
    assert_true(exits >= 2);
    ke_cluster_start_cloud(&C, NULL);
    /* the changes made meanwhile reach the store in order: a Watch from
     * before the kill sees every write to the pod, and its restart count
     * never goes down on the way to what the edge counted */
    static watch_rec w;
    pthread_mutex_init(&w.mu, NULL);
    static const ke_rpc_handler h = {.on_message = watch_message, .on_close = watch_close};
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "Pod";
    req.namespace_ = "default";
    req.field_selector = "metadata.name=crash";
    req.resource_version = rv0;
    ke_rpc_stub ec = {C.api, &ke__v1__edge_controller__descriptor};
    ke_rpc_call *watch = NULL;
    assert_int_equal(ke_rpc_stub_start(&ec, "Watch", &h, &w, NULL, &watch), 0);
    assert_int_equal(ke_rpc_call_send(watch, &req.base), 0);
    assert_int_equal(ke_rpc_call_close_send(watch), 0);
    until = ke_time_mono_ms() + WAIT_MS;
    int caught_up = 0;
    while (ke_time_mono_ms() < until && !caught_up) {
        pthread_mutex_lock(&w.mu);
        caught_up = w.n > 0 && w.counts[w.n - 1] >= before + 2;
        pthread_mutex_unlock(&w.mu);
        if (!caught_up)
            pause_ms(100);
    }
    ke_rpc_call_cancel(watch);
    for (int closed = 0; !closed; pause_ms(10)) {
        pthread_mutex_lock(&w.mu);
        closed = w.closed;
        pthread_mutex_unlock(&w.mu);
    }
    ke_rpc_call_unref(watch);
    assert_true(caught_up);
    assert_true(w.n >= 2);
    for (size_t i = 1; i < w.n; i++)
        assert_true(w.counts[i] >= w.counts[i - 1]);
    assert_true(w.counts[0] >= before);
    p = wait_pod("app", is_running, NULL, "Running");
    assert_string_equal(ke_k8s_str(cstatus(p, 0), "containerID"), app_cid);
    json_decref(p);
    assert_int_equal(runtime_containers(app_uid, &running, NULL, 0), 1);
}

/* ---- the runtime itself killed: pods keep running, Edged carries on ---- */

/* log_count: how many lines of edgecore's log hold text */
static int log_count(const char *text)
{
    char out[64] = "";
    ke_tp_capture(out, sizeof(out), "grep -c '%s' %s", text, E.log);
    return atoi(out);
}

/* wait_log_more waits until edgecore's log holds more lines with text than n */
static int wait_log_more(const char *text, int n)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_time_mono_ms() < until) {
        if (log_count(text) > n)
            return 1;
        pause_ms(100);
    }
    return 0;
}

static void test_containerd_killed_and_back_pods_run_on(void **state)
{
    (void)state;
    int down = log_count("unreachable"), up = log_count("container runtime reachable");
    assert_int_equal(ke_tp_sh("kill -KILL $(cat %s/containerd.pid)", ctrd), 0);
    /* Edged notices, and keeps everything as it is */
    assert_true(wait_log_more("unreachable", down));
    assert_int_equal(ke_tp_sh("KE_IMAGE_CACHE=%s/test-images %s/tools/images/containerd.sh %s "
                              ">>%s/containerd.sh.log 2>&1",
                              ke_tp_env("KE_BIN_DIR"), ke_tp_env("KE_SOURCE_DIR"), ctrd, C.dir),
                     0);
    assert_true(wait_log_more("container runtime reachable", up));
    /* the same container runs on, one of it */
    size_t running = 0;
    char id[128] = "";
    assert_int_equal(runtime_containers(app_uid, &running, id, sizeof(id)), 1);
    assert_int_equal(running, 1);
    assert_string_equal(id, app_cid + 13);
    json_t *p = wait_pod("app", is_running, NULL, "Running");
    assert_string_equal(ke_k8s_str(cstatus(p, 0), "containerID"), app_cid);
    json_decref(p);
    /* and a new pod runs */
    apply_yaml("after", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: after\nspec:\n"
                        "  nodeName: " NODE "\n  hostNetwork: true\n"
                        "  terminationGracePeriodSeconds: 0\n"
                        "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                        "    command: [\"sleep\", \"3600\"]\n");
    json_decref(wait_pod("after", is_running, NULL, "Running"));
    char out[256];
    assert_int_equal(run(out, sizeof(out), "delete pod after"), 0);
    assert_true(wait_gone("after"));
}

/* ---- 4: graceful deletion, confirmed after the runtime is clean ---- */

static void test_delete_stops_within_grace_then_the_cloud_forgets(void **state)
{
    (void)state;
    char out[4096], follow[512];
    /* SIGTERM first: the container's trap prints, seen by a reader following its log */
    snprintf(follow, sizeof(follow), "%s/app-follow.log", C.dir);
    assert_int_equal(ke_tp_sh("%s logs -f app > %s 2>&1 &", kectl, follow), 0);
    assert_true(ke_file_wait_contains(follow, "GREETING=", WAIT_MS));
    assert_int_equal(run(out, sizeof(out), "delete pod app"), 0);
    assert_true(ke_file_wait_contains(follow, "got TERM", WAIT_MS));
    int gone_cloud = wait_gone("app");
    assert_true(gone_cloud);
    /* when the cloud forgets it, the runtime holds nothing of it */
    assert_int_equal(runtime_containers(app_uid, NULL, NULL, 0), 0);
    assert_int_equal(runtime_sandboxes(app_uid), 0);
    /* a container that ignores SIGTERM is killed after its grace period */
    apply_yaml("stubborn", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n"
                           "  nodeName: " NODE "\n  hostNetwork: true\n"
                           "  terminationGracePeriodSeconds: 1\n"
                           "  containers:\n  - name: c\n    image: localhost/busybox:1.0\n"
                           "    command: [\"sh\", \"-c\", \"trap '' TERM; while true; do sleep 1; done\"]\n");
    json_t *p = wait_pod("stubborn", is_running, NULL, "Running");
    char uid[64];
    snprintf(uid, sizeof(uid), "%s", ke_k8s_str(p, "metadata.uid"));
    json_decref(p);
    assert_int_equal(run(out, sizeof(out), "delete pod stubborn"), 0);
    assert_true(wait_gone("stubborn"));
    assert_int_equal(runtime_containers(uid, NULL, NULL, 0), 0);
    assert_int_equal(runtime_sandboxes(uid), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pod_runs_with_configmap_env_and_secret_file),
        cmocka_unit_test(test_pod_gets_its_own_ip_and_serves_on_it),
        cmocka_unit_test(test_exec_probes_set_ready_and_restart_a_dead_container),
        cmocka_unit_test(test_failing_container_restarts_with_backoff_and_never_fails),
        cmocka_unit_test(test_bad_pods_get_clear_reasons),
        cmocka_unit_test(test_pods_survive_cloud_and_edge_kills_and_status_catches_up),
        cmocka_unit_test(test_containerd_killed_and_back_pods_run_on),
        cmocka_unit_test(test_delete_stops_within_grace_then_the_cloud_forgets),
    };
    return cmocka_run_group_tests_name("edged", tests, setup, teardown);
}
