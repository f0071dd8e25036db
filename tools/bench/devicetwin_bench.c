/*
 * devicetwin_bench — DeviceTwin end to end: reported values from many
 * devices on one edge to the cloud's store. A private mosquitto (Debian's
 * /usr/sbin/mosquitto on a free loopback port, its own config), keadm
 * init/join, cloudcore and edgecore (Edged off, EventBus on that broker)
 * as processes on loopback. One DeviceModel and N Devices bound to edge-1
 * are applied through EdgeController.Apply; the bench waits until the
 * edge's membership/get/result lists all N. Then P MQTT connections
 * (libmosquitto, QoS 1) publish KubeEdge's JSON twin/update reports
 *
 *   {"event_id":"r<seq>","timestamp":<ms>,"twin":{"temp":{"actual":
 *    {"value":"<seq>","metadata":{"timestamp":<ms>}}}}}
 *
 * round robin over the devices, and a DeviceController.WatchTwins stream
 * (all devices) records when each value reaches the cloud's store. The
 * value is the report's sequence number, so each arrival maps to its send
 * time (one monotonic clock, one process).
 *
 * In flight is bounded end to end: at most W reports sent and not yet in
 * the cloud, and never two of one device (the cloud's upstream log keeps
 * the newest report of a device, so a second one in flight could replace
 * the first; with one at a time every report must arrive). Prints:
 *
 *   run 1     M reports as fast as the pipeline takes them: reports/s from
 *             the first send to the last arrival, p50/p99/max latency;
 *   run 2     M/2 reports paced at half of run 1's rate: latency at a
 *             steady load;
 *   RSS       edgecore's VmRSS idle with N devices, and after the runs;
 *   refused   edgecore's ke_devicetwin_refused_total during the runs;
 *   missing   reports that never reached the cloud (exit 1 when any).
 *
 * Not run by the tests; figures go in the README.
 *
 * Usage: ke-bench-devicetwin [--devices N] [--reports M] [--window W]
 *                            [--publishers P] [--keep-tmp]
 */
#include "bench_util.h"
#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_rpc.h"
#include "ke_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DB_NAME "devicetwin_bench"
#define DB_MOSQUITTO "/usr/sbin/mosquitto"
#define DB_NODE "edge-1"
#define DB_MODEL "bench-thermometer"
#define DB_START_S 30
#define DB_STOP_S 15
#define DB_STALL_S 30        /* a run gives up when nothing arrives for this long */
#define DB_MEMBERS_S 300     /* the edge has every device within this */
#define DB_PUBLISHERS_MAX 64
#define DB_DEVICES_MAX 100000
#define DB_REPORTS_MAX 10000000L
#define DB_METRICS_MAX (4 * 1024 * 1024)

typedef struct bench {
    char dir[256], target[64], keadm[512], cloudcore[512], edgecore[512];
    pid_t broker, cloud, edge;
    int mqtt_port, edge_http;
    ke_rpc_loop *loop;
    ke_rpc_channel *admin;
    ke_rpc_call *watch;
    struct mosquitto *ctl;                       /* membership */
    struct mosquitto *pub[DB_PUBLISHERS_MAX];    /* reports */
    int n_pub;
    long n_dev, n_reports, window;
    int64_t wall_base; /* the reports' reading times: wall_base + seq */
    bench_waiter w;    /* mu guards everything below, cv wakes the main thread */
    int64_t *sent_ns, *arrived_ns; /* by seq; 0: not yet */
    unsigned char *busy;           /* by device: a report in flight */
    long total;                    /* seqs allocated (both runs) */
    long outstanding, arrived, dups, strays;
    long members; /* devices in the last membership/get/result */
    atomic_long puback_pending;
    atomic_int stopping;
} bench;

static bench B;

/* ---- processes ---- */

static void stop_child(pid_t *pid, const char *what)
{
    int st = 0;
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    if (bench_child_wait(*pid, DB_STOP_S, &st) != 0) {
        fprintf(stderr, DB_NAME ": %s did not exit within %d s of SIGTERM: killing it\n", what,
                DB_STOP_S);
        kill(*pid, SIGKILL);
        bench_child_wait(*pid, DB_STOP_S, &st);
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, DB_NAME ": %s exited with status %d\n", what,
                WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    *pid = 0;
}

static void cleanup(int keep)
{
    atomic_store(&B.stopping, 1);
    for (int i = 0; i < B.n_pub; i++) {
        if (!B.pub[i])
            continue;
        mosquitto_disconnect(B.pub[i]);
        mosquitto_loop_stop(B.pub[i], false);
        mosquitto_destroy(B.pub[i]);
        B.pub[i] = NULL;
    }
    if (B.ctl) {
        mosquitto_disconnect(B.ctl);
        mosquitto_loop_stop(B.ctl, false);
        mosquitto_destroy(B.ctl);
        B.ctl = NULL;
    }
    if (B.watch) {
        ke_rpc_call_cancel(B.watch);
        ke_rpc_call_unref(B.watch);
        B.watch = NULL;
    }
    stop_child(&B.edge, "edgecore");
    ke_rpc_channel_free(B.admin);
    B.admin = NULL;
    if (B.cloud > 0)
        bench_cloudcore_stop(B.cloud, DB_STOP_S);
    B.cloud = 0;
    stop_child(&B.broker, "mosquitto");
    ke_rpc_loop_free(B.loop);
    B.loop = NULL;
    bench_tmp_done(B.dir, keep);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, DB_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup(1);
    exit(1);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* tcp_connect connects to 127.0.0.1:port; returns the socket or -1. */
static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void start_broker(void)
{
    char conf[400];
    B.mqtt_port = free_port();
    if (B.mqtt_port <= 0)
        die("no free port for mosquitto");
    snprintf(conf, sizeof(conf), "%s/mosquitto.conf", B.dir);
    FILE *f = fopen(conf, "w");
    /* errors and warnings only, on stderr: as root mosquitto runs as the
     * user mosquitto, which cannot write in the private temporary dir */
    if (!f || fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\n"
                         "log_dest stderr\nlog_type error\nlog_type warning\n",
                      B.mqtt_port) < 0 ||
        fclose(f) != 0)
        die("cannot write %s: %s", conf, strerror(errno));
    char *argv[] = {DB_MOSQUITTO, "-c", conf, NULL};
    B.broker = bench_spawn(argv, -1);
    if (B.broker < 0)
        die("cannot start mosquitto");
    int64_t until = ke_time_mono_ms() + DB_START_S * 1000;
    for (;;) {
        int fd = tcp_connect(B.mqtt_port);
        if (fd >= 0) {
            close(fd);
            return;
        }
        int st;
        if (bench_child_wait(B.broker, 0, &st) == 0) {
            B.broker = 0;
            die("mosquitto exited (its messages are above)");
        }
        if (ke_time_mono_ms() > until)
            die("mosquitto does not listen on 127.0.0.1:%d", B.mqtt_port);
        pause_ms(20);
    }
}

static void start_edge(void)
{
    char cmd[2048], token[512] = "", edgedir[300], config[400], server[96], broker[64],
        line[256];
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s", B.keadm, B.dir);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(token, sizeof(token), p))
        die("keadm gettoken failed");
    if (pclose(p) != 0)
        die("keadm gettoken failed");
    token[strcspn(token, "\n")] = '\0';
    snprintf(edgedir, sizeof(edgedir), "%s/edge", B.dir);
    snprintf(cmd, sizeof(cmd),
             "%s join --cloudhub %s --token %s --node-name " DB_NODE " --dir %s >/dev/null",
             B.keadm, B.target, token, edgedir);
    if (system(cmd) != 0)
        die("keadm join failed");
    snprintf(config, sizeof(config), "%s/edgecore.yaml", edgedir);
    snprintf(server, sizeof(server), "--edgehub.server=%s", B.target);
    snprintf(broker, sizeof(broker), "--eventbus.broker=127.0.0.1:%d", B.mqtt_port);
    char *argv[] = {B.edgecore,
                    "--config",
                    config,
                    server,
                    broker,
                    "--http.listen=127.0.0.1:0",
                    "--modules.edged.enable=false",
                    "--log_level=warn",
                    NULL};
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    B.edge = bench_spawn(argv, fds[1]);
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    const char *h = NULL;
    if (B.edge < 0 || !out || !fgets(line, sizeof(line), out) || strncmp(line, "ready", 5) != 0 ||
        !(h = strstr(line, "http=")) || sscanf(h, "http=%d", &B.edge_http) != 1)
        die("edgecore did not start (no \"ready ... http=P\" line)");
    fclose(out); /* edgecore prints nothing more on stdout */
}

/* ---- rpc ---- */

static int ec_call(const char *method, const ProtobufCMessage *req)
{
    ke_rpc_stub ec = {B.admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    int rc = ke_rpc_stub_unary(&ec, method, req, &o, &reply, &st);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (rc == 0 && st.code != KE_RPC_OK)
        fprintf(stderr, DB_NAME ": EdgeController.%s: %s: %s\n", method,
                ke_rpc_status_name(st.code), st.message);
    return rc == 0 ? st.code : -1;
}

static int apply_json(const char *json)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    return ec_call("Apply", &req.base);
}

static void wait_node(void)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Node";
    ref.name = DB_NODE;
    ke_rpc_stub ec = {B.admin, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 5000};
    int64_t until = ke_time_mono_ms() + DB_START_S * 1000;
    for (;;) {
        ke_rpc_status st;
        ProtobufCMessage *reply = NULL;
        int rc = ke_rpc_stub_unary(&ec, "Get", &ref.base, &o, &reply, &st);
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        if (rc == 0 && st.code == KE_RPC_OK)
            return;
        if (ke_time_mono_ms() > until)
            die("the Node " DB_NODE " never appeared");
        pause_ms(50);
    }
}

static void dev_name(char *out, size_t len, long i)
{
    snprintf(out, len, "therm-%05ld", i);
}

static void create_devices(void)
{
    if (apply_json("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
                   "\"metadata\":{\"name\":\"" DB_MODEL "\",\"namespace\":\"default\"},"
                   "\"spec\":{\"properties\":["
                   "{\"name\":\"temp\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"},"
                   "{\"name\":\"humidity\",\"type\":\"FLOAT\",\"accessMode\":\"ReadOnly\"},"
                   "{\"name\":\"pressure\",\"type\":\"FLOAT\",\"accessMode\":\"ReadOnly\"},"
                   "{\"name\":\"setpoint\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"}]}}") !=
        KE_RPC_OK)
        die("cannot apply the DeviceModel");
    for (long i = 0; i < B.n_dev; i++) {
        char name[32], json[512];
        dev_name(name, sizeof(name), i);
        snprintf(json, sizeof(json),
                 "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                 "\"metadata\":{\"name\":\"%s\",\"namespace\":\"default\"},"
                 "\"spec\":{\"deviceModelRef\":{\"name\":\"" DB_MODEL "\"},"
                 "\"nodeName\":\"" DB_NODE "\",\"properties\":[{\"name\":\"temp\"}]}}",
                 name);
        if (apply_json(json) != KE_RPC_OK)
            die("cannot apply Device %s", name);
    }
}

/* WatchTwins: each reported temp is a report arriving in the cloud. */
static void twin_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    (void)ud;
    int64_t now = bench_now_ns();
    const Ke__V1__TwinEvent *ev = (const Ke__V1__TwinEvent *)msg;
    if (!ev->twin || !ev->twin->reported || !ev->device || strcmp(ev->twin->property, "temp") != 0)
        return;
    long dev = -1, seq = -1;
    char *end = NULL;
    if (sscanf(ev->device->name, "therm-%ld", &dev) != 1)
        return;
    seq = strtol(ev->twin->reported->value, &end, 10);
    pthread_mutex_lock(&B.w.mu);
    if (!end || *end || seq < 0 || seq >= B.total || dev < 0 || dev >= B.n_dev ||
        seq % B.n_dev != dev || B.sent_ns[seq] == 0) {
        B.strays++;
    } else if (B.arrived_ns[seq] != 0) {
        B.dups++;
    } else {
        B.arrived_ns[seq] = now;
        B.arrived++;
        B.outstanding--;
        B.busy[dev] = 0;
    }
    pthread_cond_broadcast(&B.w.cv);
    pthread_mutex_unlock(&B.w.mu);
}

static void twin_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    (void)ud;
    if (!atomic_load(&B.stopping))
        bench_waiter_fail(&B.w, "WatchTwins ended: %s: %s", ke_rpc_status_name(st->code),
                          st->message);
}

static const ke_rpc_handler twin_handler = {.on_message = twin_on_message,
                                            .on_close = twin_on_close};

static void watch_twins(void)
{
    ke_rpc_stub stub = {B.admin, &ke__v1__device_controller__descriptor};
    int rc = ke_rpc_stub_start(&stub, "WatchTwins", &twin_handler, NULL, NULL, &B.watch);
    if (rc != 0)
        die("cannot open WatchTwins: %s", ke_strerror(rc));
    Ke__V1__WatchTwinsRequest req = KE__V1__WATCH_TWINS_REQUEST__INIT;
    req.namespace_ = "default";
    if (ke_rpc_call_send(B.watch, &req.base) != 0 || ke_rpc_call_close_send(B.watch) != 0)
        die("cannot send the WatchTwins request");
}

/* ---- MQTT ---- */

static void ctl_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    (void)m;
    (void)ud;
    json_t *j = json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL);
    json_t *devs = json_object_get(j, "devices");
    if (json_is_array(devs)) {
        pthread_mutex_lock(&B.w.mu);
        B.members = (long)json_array_size(devs);
        pthread_cond_broadcast(&B.w.cv);
        pthread_mutex_unlock(&B.w.mu);
    }
    json_decref(j);
}

static void pub_on_publish(struct mosquitto *m, void *ud, int mid)
{
    (void)m;
    (void)ud;
    (void)mid;
    atomic_fetch_sub(&B.puback_pending, 1);
}

static void pub_on_disconnect(struct mosquitto *m, void *ud, int rc)
{
    (void)m;
    (void)ud;
    if (!atomic_load(&B.stopping))
        bench_waiter_fail(&B.w, "an MQTT connection was lost: %s", mosquitto_strerror(rc));
}

static struct mosquitto *mqtt_client(const char *id)
{
    struct mosquitto *m = mosquitto_new(id, true, NULL);
    if (!m)
        die("mosquitto_new: %s", strerror(errno));
    mosquitto_publish_callback_set(m, pub_on_publish);
    mosquitto_disconnect_callback_set(m, pub_on_disconnect);
    int rc = mosquitto_connect(m, "127.0.0.1", B.mqtt_port, 60);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_start(m);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(m);
        die("MQTT client %s: %s", id, mosquitto_strerror(rc));
    }
    return m;
}

static void mqtt_publish(struct mosquitto *m, const char *topic, const char *payload)
{
    atomic_fetch_add(&B.puback_pending, 1);
    int rc = mosquitto_publish(m, NULL, topic, (int)strlen(payload), payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_sub(&B.puback_pending, 1);
        die("publish on %s: %s", topic, mosquitto_strerror(rc));
    }
}

/* wait_members asks for the node's membership every second until the edge
 * lists every device; returns the seconds it took. */
static double wait_members(void)
{
    char topic[128];
    double t0 = bench_now_s();
    B.ctl = mqtt_client("bench-ctl");
    mosquitto_message_callback_set(B.ctl, ctl_on_message);
    int rc = mosquitto_subscribe(B.ctl, NULL, "$hw/events/node/" DB_NODE "/membership/get/result",
                                 1);
    if (rc != MOSQ_ERR_SUCCESS)
        die("subscribe: %s", mosquitto_strerror(rc));
    snprintf(topic, sizeof(topic), "$hw/events/node/%s/membership/get", DB_NODE);
    int64_t until = ke_time_mono_ms() + DB_MEMBERS_S * 1000;
    pthread_mutex_lock(&B.w.mu);
    while (B.members < B.n_dev) {
        pthread_mutex_unlock(&B.w.mu);
        if (ke_time_mono_ms() > until)
            die("the edge lists %ld of %ld devices after %d s", B.members, B.n_dev,
                DB_MEMBERS_S);
        char body[96];
        snprintf(body, sizeof(body), "{\"event_id\":\"m\",\"timestamp\":%lld}",
                 (long long)ke_time_wall_ms());
        mqtt_publish(B.ctl, topic, body);
        pthread_mutex_lock(&B.w.mu);
        struct timespec dl = ke_time_deadline(1000);
        while (B.members < B.n_dev && pthread_cond_timedwait(&B.w.cv, &B.w.mu, &dl) == 0)
            ;
    }
    pthread_mutex_unlock(&B.w.mu);
    return bench_now_s() - t0;
}

/* ---- edgecore's /metrics ---- */

/* metric_sum sums every sample of metric `name` on edgecore's /metrics;
 * -1 when it cannot be read. */
static double metric_sum(const char *name)
{
    int fd = tcp_connect(B.edge_http);
    if (fd < 0)
        return -1;
    const char *req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    char *buf = malloc(DB_METRICS_MAX + 1);
    size_t n = 0;
    double sum = -1;
    if (!buf || write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        goto out;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0)
            goto out;
        ssize_t r = read(fd, buf + n, DB_METRICS_MAX - n);
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == DB_METRICS_MAX)
            goto out;
    }
    buf[n] = '\0';
    if (!strstr(buf, " 200 "))
        goto out;
    sum = 0;
    size_t nl = strlen(name);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) == 0 && (line[nl] == ' ' || line[nl] == '{')) {
            const char *sp = strchr(line, ' ');
            const char *nlp = strchr(line, '\n');
            if (line[nl] == '{') /* the value follows the labels */
                sp = strchr(strchr(line, '}') ? strchr(line, '}') : line, ' ');
            if (sp && (!nlp || sp < nlp))
                sum += strtod(sp + 1, NULL);
        }
    }
out:
    free(buf);
    close(fd);
    return sum;
}

static long settle_rss(pid_t pid)
{
    /* the loop at rest: the largest of 3 samples a second apart */
    long best = -1;
    for (int i = 0; i < 3; i++) {
        pause_ms(1000);
        long r = bench_rss_kib(pid);
        if (r > best)
            best = r;
    }
    return best;
}

/* ---- a run ---- */

typedef struct run_result {
    long sent, arrived;
    double secs, rate;
    int64_t p50, p99, max; /* ns */
} run_result;

/* run sends count reports from seq first, paced at rate per second (0: as
 * fast as the window lets), and waits for them in the cloud. Returns 0, or
 * -1 when some never arrived (res->arrived says how many did). */
static int run(long first, long count, double rate, run_result *res)
{
    char topic[128], body[384];
    int64_t t0 = bench_now_ns();
    int rc = 0;
    memset(res, 0, sizeof(*res));
    for (long seq = first; seq < first + count && rc == 0; seq++) {
        long dev = seq % B.n_dev;
        if (rate > 0) {
            int64_t at = t0 + (int64_t)((double)(seq - first) * 1e9 / rate);
            struct timespec ts = {(time_t)(at / 1000000000LL), (long)(at % 1000000000LL)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        pthread_mutex_lock(&B.w.mu);
        long seen = B.arrived;
        struct timespec dl = ke_time_deadline(DB_STALL_S * 1000);
        while ((B.outstanding >= B.window || B.busy[dev]) && atomic_load(&B.w.failed) == 0) {
            if (pthread_cond_timedwait(&B.w.cv, &B.w.mu, &dl) != ETIMEDOUT)
                continue;
            if (B.arrived == seen) {
                fprintf(stderr, DB_NAME ": no report reached the cloud for %d s\n", DB_STALL_S);
                rc = -1;
                break;
            }
            seen = B.arrived;
            dl = ke_time_deadline(DB_STALL_S * 1000);
        }
        if (atomic_load(&B.w.failed) != 0)
            rc = -1;
        if (rc == 0) {
            B.busy[dev] = 1;
            B.outstanding++;
            B.sent_ns[seq] = bench_now_ns();
            B.total = seq + 1 > B.total ? seq + 1 : B.total;
        }
        pthread_mutex_unlock(&B.w.mu);
        if (rc != 0)
            break;
        int64_t ts = B.wall_base + seq; /* readings newer and newer, per device too */
        snprintf(topic, sizeof(topic), "$hw/events/device/therm-%05ld/twin/update", dev);
        snprintf(body, sizeof(body),
                 "{\"event_id\":\"r%ld\",\"timestamp\":%lld,\"twin\":{\"temp\":{\"actual\":"
                 "{\"value\":\"%ld\",\"metadata\":{\"timestamp\":%lld}}}}}",
                 seq, (long long)ke_time_wall_ms(), seq, (long long)ts);
        mqtt_publish(B.pub[dev % B.n_pub], topic, body);
        res->sent++;
    }
    /* every report sent reaches the cloud */
    pthread_mutex_lock(&B.w.mu);
    if (rc == 0) {
        long seen = B.arrived;
        struct timespec dl = ke_time_deadline(DB_STALL_S * 1000);
        while (B.outstanding > 0 && atomic_load(&B.w.failed) == 0) {
            if (pthread_cond_timedwait(&B.w.cv, &B.w.mu, &dl) != ETIMEDOUT)
                continue;
            if (B.arrived == seen) {
                fprintf(stderr, DB_NAME ": %ld report(s) did not reach the cloud within %d s\n",
                        B.outstanding, DB_STALL_S);
                rc = -1;
                break;
            }
            seen = B.arrived;
            dl = ke_time_deadline(DB_STALL_S * 1000);
        }
    }
    if (atomic_load(&B.w.failed) != 0) {
        fprintf(stderr, DB_NAME ": %s\n", B.w.first_error);
        rc = -1;
    }
    int64_t *lat = calloc((size_t)count + 1, sizeof(*lat));
    int64_t last = t0;
    size_t n = 0;
    for (long seq = first; lat && seq < first + count; seq++) {
        if (B.sent_ns[seq] == 0 || B.arrived_ns[seq] == 0)
            continue;
        lat[n++] = B.arrived_ns[seq] - B.sent_ns[seq];
        if (B.arrived_ns[seq] > last)
            last = B.arrived_ns[seq];
    }
    int64_t start = B.sent_ns[first] ? B.sent_ns[first] : t0;
    pthread_mutex_unlock(&B.w.mu);
    if (!lat)
        die("out of memory");
    bench_sort_i64(lat, n);
    res->arrived = (long)n;
    res->secs = (double)(last - start) / 1e9;
    res->rate = res->secs > 0 ? (double)n / res->secs : 0;
    res->p50 = bench_pct_i64(lat, n, 50);
    res->p99 = bench_pct_i64(lat, n, 99);
    res->max = n ? lat[n - 1] : 0;
    free(lat);
    return rc == 0 && res->arrived == count ? 0 : -1;
}

static void print_run(const char *what, const run_result *r)
{
    printf("%-34s %8ld %8ld %10.0f %9.1f %9.1f %9.1f\n", what, r->sent, r->arrived, r->rate,
           (double)r->p50 / 1e6, (double)r->p99 / 1e6, (double)r->max / 1e6);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: ke-bench-devicetwin [--devices N] [--reports M] [--window W]\n"
               "                           [--publishers P] [--keep-tmp]\n"
               "  --devices N     devices bound to the edge node, 1..%d (default 1000)\n"
               "  --reports M     reports in the full-speed run, 1..%ld (default 20000); the\n"
               "                  paced run at half its rate sends M/2\n"
               "  --window W      reports sent and not yet in the cloud, at most (default 500)\n"
               "  --publishers P  MQTT connections sharing the devices, 1..%d (default 4)\n"
               "  --keep-tmp      keep the temporary directory (logs, stores)\n",
            DB_DEVICES_MAX, DB_REPORTS_MAX, DB_PUBLISHERS_MAX);
}

static long num_arg(const char *s, long lo, long hi, const char *flag)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, DB_NAME ": %s: \"%s\" is not a number in %ld..%ld\n", flag, s, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    bench_main_init(DB_NAME, &B.w, DB_STALL_S);
    int keep = 0, c;
    B.n_dev = 1000;
    B.n_reports = 20000;
    B.window = 500;
    B.n_pub = 4;
    static const struct option opts[] = {{"devices", required_argument, NULL, 'n'},
                                         {"reports", required_argument, NULL, 'm'},
                                         {"window", required_argument, NULL, 'w'},
                                         {"publishers", required_argument, NULL, 'p'},
                                         {"keep-tmp", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': B.n_dev = num_arg(optarg, 1, DB_DEVICES_MAX, "--devices"); break;
        case 'm': B.n_reports = num_arg(optarg, 1, DB_REPORTS_MAX, "--reports"); break;
        case 'w': B.window = num_arg(optarg, 1, 1000000, "--window"); break;
        case 'p': B.n_pub = (int)num_arg(optarg, 1, DB_PUBLISHERS_MAX, "--publishers"); break;
        case 'k': keep = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (access(DB_MOSQUITTO, X_OK) != 0) {
        fprintf(stderr, DB_NAME ": %s is needed (tools/deps.sh installs mosquitto)\n",
                DB_MOSQUITTO);
        return 1;
    }
    long half = B.n_reports / 2 > 0 ? B.n_reports / 2 : 1;
    long all = B.n_reports + half;
    B.sent_ns = calloc((size_t)all, sizeof(*B.sent_ns));
    B.arrived_ns = calloc((size_t)all, sizeof(*B.arrived_ns));
    B.busy = calloc((size_t)B.n_dev, 1);
    if (!B.sent_ns || !B.arrived_ns || !B.busy) {
        fprintf(stderr, DB_NAME ": out of memory\n");
        return 1;
    }
    bench_sibling_path(B.keadm, sizeof(B.keadm), BENCH_REL_KEADM);
    bench_sibling_path(B.cloudcore, sizeof(B.cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(B.edgecore, sizeof(B.edgecore), "../../edge-agent/edgecore");
    if (mosquitto_lib_init() != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, DB_NAME ": mosquitto_lib_init failed\n");
        return 1;
    }

    if (bench_make_tmp(B.dir, sizeof(B.dir), "ke-bench-devicetwin") != 0)
        die("no temporary directory");
    start_broker();
    if (bench_keadm_init(B.keadm, B.dir, DB_START_S, DB_STOP_S) != 0)
        die("keadm init failed");
    const char *extra[] = {NULL};
    B.cloud = bench_cloudcore_start(B.cloudcore, B.dir, extra, DB_START_S, DB_STOP_S, B.target,
                                    sizeof(B.target));
    if (B.cloud < 0)
        die("cloudcore did not start");
    if (ke_rpc_loop_new(2, &B.loop) != 0 ||
        bench_admin_channel(B.loop, B.target, B.dir, &B.admin) != 0)
        die("no admin channel");
    start_edge();
    wait_node();
    long rss_empty = settle_rss(B.edge);
    double t_apply = bench_now_s();
    create_devices();
    t_apply = bench_now_s() - t_apply;
    double t_members = wait_members();
    long rss_idle = settle_rss(B.edge);
    watch_twins();
    for (int i = 0; i < B.n_pub; i++) {
        char id[32];
        snprintf(id, sizeof(id), "bench-pub-%d", i);
        B.pub[i] = mqtt_client(id);
    }
    double refused0 = metric_sum("ke_devicetwin_refused_total");
    double reports0 = metric_sum("ke_devicetwin_reports_total");
    double dropped0 = metric_sum("ke_eventbus_dropped_total");
    B.wall_base = ke_time_wall_ms();

    run_result r1, r2;
    memset(&r2, 0, sizeof(r2));
    int failed = run(0, B.n_reports, 0, &r1) != 0;
    if (!failed)
        failed = run(B.n_reports, half, r1.rate / 2, &r2) != 0;
    long rss_after = settle_rss(B.edge);
    double refused1 = metric_sum("ke_devicetwin_refused_total");
    double reports1 = metric_sum("ke_devicetwin_reports_total");
    double dropped1 = metric_sum("ke_eventbus_dropped_total");
    if (refused0 < 0 || refused1 < 0 || reports0 < 0 || reports1 < 0) {
        fprintf(stderr, DB_NAME ": cannot read edgecore's /metrics on 127.0.0.1:%d\n",
                B.edge_http);
        failed = 1;
    }
    double refused = refused1 - refused0, reports = reports1 - reports0;
    long missing = (r1.sent - r1.arrived) + (r2.sent - r2.arrived);
    if (failed && r2.sent == 0)
        missing += half; /* run 2 never started */

    printf("devicetwin: %ld devices on one edge, %ld MQTT connection(s) (QoS 1), window %ld\n",
           B.n_dev, (long)B.n_pub, B.window);
    printf("  applied %ld devices in %.1f s; the edge listed them all %.1f s later\n", B.n_dev,
           t_apply, t_members);
    printf("%-34s %8s %8s %10s %9s %9s %9s\n", "run (report -> cloud store)", "sent", "arrived",
           "reports/s", "p50 ms", "p99 ms", "max ms");
    print_run("full speed", &r1);
    if (r2.sent) {
        char what[64];
        snprintf(what, sizeof(what), "paced at %.0f/s", r1.rate / 2);
        print_run(what, &r2);
    }
    printf("edgecore RSS: no devices %ld KiB, %ld devices idle %ld KiB, after the runs %ld KiB\n",
           rss_empty, B.n_dev, rss_idle, rss_after);
    printf("edge: reports stored %.0f, refused %.0f; cloud: missing %ld, duplicates %ld, "
           "strays %ld\n",
           reports, refused, missing, B.dups, B.strays);
    /* results and documents to the mappers that EventBus could not queue
     * (its queue full while the broker lagged): not a failure, a figure */
    printf("edge: publishes to mappers refused by EventBus's bounded queue %.0f\n",
           dropped1 - dropped0);
    cleanup(keep || failed);
    mosquitto_lib_cleanup();
    bench_waiter_destroy(&B.w);
    free(B.sent_ns);
    free(B.arrived_ns);
    free(B.busy);
    if (failed || missing > 0 || refused != 0) {
        fprintf(stderr, DB_NAME ": FAILED: %ld report(s) missing, %.0f refused\n", missing,
                refused);
        return 1;
    }
    return 0;
}
