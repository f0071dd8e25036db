/*
 * edged_bench — Edged with real containers: a private containerd
 * (tools/images/containerd.sh, images built locally), keadm init/join,
 * cloudcore and edgecore as processes on loopback. Prints:
 *
 *   RSS        edgecore (and containerd) with 0, 10 and 50 running pods
 *              (busybox sleep, host network);
 *   startup    the time from EdgeController.Apply to the pod showing
 *              Running in the cloud's store, for 1 pod, and for 20 pods
 *              applied together (until the last is Running).
 *
 * Not run by the tests; figures go in the README. Needs root, containerd,
 * runc and busybox-static (tools/deps.sh installs them).
 *
 * Usage: ke-bench-edged [--keep-tmp]
 */
#include "bench_util.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_rpc.h"
#include "ke_time.h"

#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EB_START_S 30
#define EB_STOP_S 15
#define EB_WAIT_MS 180000

typedef struct bench {
    char dir[256], target[64], keadm[512], cloudcore[512], edgecore[512], ctrd[300];
    char source[512];
    pid_t cloud, edge;
    ke_rpc_loop *loop;
    ke_rpc_channel *admin;
} bench;

static bench B;

static void cleanup(int keep)
{
    if (B.edge > 0) {
        kill(B.edge, SIGTERM);
        int st;
        if (bench_child_wait(B.edge, EB_STOP_S, &st) != 0) {
            kill(B.edge, SIGKILL);
            bench_child_wait(B.edge, EB_STOP_S, &st);
        }
        B.edge = 0;
    }
    if (B.ctrd[0]) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "%s/tools/images/containerd.sh --stop %s", B.source, B.ctrd);
        if (system(cmd) != 0)
            fprintf(stderr, "edged_bench: stopping containerd failed\n");
    }
    ke_rpc_channel_free(B.admin);
    B.admin = NULL;
    if (B.cloud > 0)
        bench_cloudcore_stop(B.cloud, EB_STOP_S);
    B.cloud = 0;
    ke_rpc_loop_free(B.loop);
    B.loop = NULL;
    bench_tmp_done(B.dir, keep);
}

static void die(const char *what)
{
    fprintf(stderr, "edged_bench: %s\n", what);
    cleanup(1);
    exit(1);
}

static int ec_call(const char *method, const ProtobufCMessage *req, ProtobufCMessage **reply)
{
    ke_rpc_stub ec = {B.admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    *reply = NULL;
    int rc = ke_rpc_stub_unary(&ec, method, req, &o, reply, &st);
    return rc == 0 ? st.code : -1;
}

static int apply_pod(const char *name)
{
    char json[768];
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"edge-1\",\"hostNetwork\":true,"
             "\"terminationGracePeriodSeconds\":0,\"containers\":[{\"name\":\"c\",\"image\":"
             "\"localhost/busybox:1.0\",\"command\":[\"sleep\",\"3600\"]}]}}",
             name);
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    ProtobufCMessage *reply;
    int rc = ec_call("Apply", &req.base, &reply);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return rc;
}

static int delete_pod(const char *name)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Pod";
    ref.namespace_ = "default";
    ref.name = (char *)name;
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    ProtobufCMessage *reply;
    int rc = ec_call("Delete", &req.base, &reply);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return rc;
}

/* pods_count counts pods of the store: all of them, and those Running */
static int pods_count(int *all, int *running)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = "Pod";
    req.namespace_ = "default";
    ProtobufCMessage *reply;
    int rc = ec_call("List", &req.base, &reply);
    if (rc != KE_RPC_OK) {
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        return -1;
    }
    Ke__V1__ListReply *lr = (Ke__V1__ListReply *)reply;
    *all = (int)lr->n_items_json;
    *running = 0;
    for (size_t i = 0; i < lr->n_items_json; i++) {
        json_t *o = json_loadb((const char *)lr->items_json[i].data, lr->items_json[i].len, 0, NULL);
        const char *ph = ke_k8s_str(o, "status.phase");
        *running += ph && strcmp(ph, "Running") == 0;
        json_decref(o);
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

/* wait_pods waits until the store holds `all` pods of which `running` run;
 * returns the ms it took */
static int64_t wait_pods(int want_all, int want_running)
{
    int64_t t0 = ke_time_mono_ms();
    for (;;) {
        int all = 0, running = 0;
        if (pods_count(&all, &running) == 0 && all == want_all && running == want_running)
            return ke_time_mono_ms() - t0;
        if (ke_time_mono_ms() - t0 > EB_WAIT_MS)
            die("pods never reached the expected state");
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static long settle_rss(pid_t pid)
{
    /* the loop at rest: RSS after a few relists, the largest of 3 samples */
    long best = -1;
    for (int i = 0; i < 3; i++) {
        sleep(1);
        long r = bench_rss_kib(pid);
        if (r > best)
            best = r;
    }
    return best;
}

static pid_t containerd_pid(void)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/containerd.pid", B.ctrd);
    FILE *f = fopen(path, "r");
    long pid = -1;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = -1;
        fclose(f);
    }
    return (pid_t)pid;
}

static void setup(void)
{
    char cmd[2048], token[512] = "", edgedir[300], config[400], server[96], line[256];
    if (bench_make_tmp(B.dir, sizeof(B.dir), "ke-bench-edged") != 0)
        die("no temporary directory");
    snprintf(B.ctrd, sizeof(B.ctrd), "%s/ctrd", B.dir);
    snprintf(cmd, sizeof(cmd), "%s/tools/images/containerd.sh %s >/dev/null", B.source, B.ctrd);
    if (system(cmd) != 0)
        die("containerd did not start (tools/images/containerd.sh)");
    if (bench_keadm_init(B.keadm, B.dir, EB_START_S, EB_STOP_S) != 0)
        die("keadm init failed");
    const char *extra[] = {NULL};
    B.cloud = bench_cloudcore_start(B.cloudcore, B.dir, extra, EB_START_S, EB_STOP_S, B.target,
                                    sizeof(B.target));
    if (B.cloud < 0)
        die("cloudcore did not start");
    if (ke_rpc_loop_new(2, &B.loop) != 0 ||
        bench_admin_channel(B.loop, B.target, B.dir, &B.admin) != 0)
        die("no admin channel");
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s", B.keadm, B.dir);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(token, sizeof(token), p))
        die("keadm gettoken failed");
    pclose(p);
    token[strcspn(token, "\n")] = '\0';
    snprintf(edgedir, sizeof(edgedir), "%s/edge", B.dir);
    snprintf(cmd, sizeof(cmd),
             "%s join --cloudhub %s --token %s --node-name edge-1 --dir %s "
             "--runtime-endpoint %s/containerd.sock >/dev/null",
             B.keadm, B.target, token, edgedir, B.ctrd);
    if (system(cmd) != 0)
        die("keadm join failed");
    snprintf(config, sizeof(config), "%s/edgecore.yaml", edgedir);
    snprintf(server, sizeof(server), "--edgehub.server=%s", B.target);
    char *argv[] = {B.edgecore, "--config", config, server, "--http.listen=",
                    "--log_level=warn", NULL};
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe");
    B.edge = bench_spawn(argv, fds[1]);
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    if (B.edge < 0 || !out || !fgets(line, sizeof(line), out) || strncmp(line, "ready", 5) != 0)
        die("edgecore did not start");
    fclose(out);
    /* the Node object exists once a pod bound to it is accepted */
    int64_t until = ke_time_mono_ms() + 30000;
    while (apply_pod("warmup") != KE_RPC_OK) {
        if (ke_time_mono_ms() > until)
            die("the Node object never appeared");
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    wait_pods(1, 1); /* images unpacked, the runtime warm */
    if (delete_pod("warmup") != KE_RPC_OK)
        die("delete failed");
    wait_pods(0, 0);
}

int main(int argc, char **argv)
{
    bench_waiter w;
    bench_main_init("edged_bench", &w, 60);
    int keep = 0;
    static const struct option opts[] = {{"keep-tmp", no_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'k') {
            keep = 1;
        } else {
            fprintf(stderr, "usage: ke-bench-edged [--keep-tmp]\n");
            return 2;
        }
    }
    if (system("command -v containerd >/dev/null && command -v runc >/dev/null") != 0) {
        fprintf(stderr, "edged_bench: containerd and runc are needed (tools/deps.sh)\n");
        return 1;
    }
    bench_sibling_path(B.keadm, sizeof(B.keadm), BENCH_REL_KEADM);
    bench_sibling_path(B.cloudcore, sizeof(B.cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(B.edgecore, sizeof(B.edgecore), "../../edge-agent/edgecore");
    const char *src = getenv("KE_SOURCE_DIR");
    if (src && *src) {
        snprintf(B.source, sizeof(B.source), "%s", src);
    } else {
        bench_sibling_path(B.source, sizeof(B.source), "../../..");
        char *real = realpath(B.source, NULL);
        if (real) {
            snprintf(B.source, sizeof(B.source), "%s", real);
            free(real);
        }
    }
    setup();
    long rss0 = settle_rss(B.edge), ctr0 = settle_rss(containerd_pid());
    char name[32];
    /* one pod */
    int64_t one = 0;
    if (apply_pod("one") != KE_RPC_OK)
        die("apply failed");
    one = wait_pods(1, 1);
    if (delete_pod("one") != KE_RPC_OK)
        die("delete failed");
    wait_pods(0, 0);
    /* twenty at once */
    int64_t t0 = ke_time_mono_ms();
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "b-%d", i);
        if (apply_pod(name) != KE_RPC_OK)
            die("apply failed");
    }
    wait_pods(20, 20);
    int64_t twenty = ke_time_mono_ms() - t0;
    /* RSS at 10 and 50 running */
    for (int i = 10; i < 20; i++) {
        snprintf(name, sizeof(name), "b-%d", i);
        if (delete_pod(name) != KE_RPC_OK)
            die("delete failed");
    }
    wait_pods(10, 10);
    long rss10 = settle_rss(B.edge), ctr10 = settle_rss(containerd_pid());
    for (int i = 10; i < 50; i++) {
        snprintf(name, sizeof(name), "b-%d", i);
        if (apply_pod(name) != KE_RPC_OK)
            die("apply failed");
    }
    wait_pods(50, 50);
    long rss50 = settle_rss(B.edge), ctr50 = settle_rss(containerd_pid());
    printf("edgecore RSS with 0 / 10 / 50 running pods: %ld / %ld / %ld KiB\n", rss0, rss10, rss50);
    printf("containerd RSS with 0 / 10 / 50 running pods: %ld / %ld / %ld KiB\n", ctr0, ctr10,
           ctr50);
    printf("apply -> Running: 1 pod %lld ms; 20 pods applied together, the last Running after "
           "%lld ms\n",
           (long long)one, (long long)twenty);
    cleanup(keep);
    bench_waiter_destroy(&w);
    return 0;
}
