/*
 * test_devicetwin.c — DeviceTwin end to end with a C mapper on the
 * protobuf topics: a private mosquitto (tests/support/ke_mqtt.h), a
 * cloudcore process, an edgecore process (EventBus and DeviceTwin on,
 * reaching the cloud through a test proxy), and a mapper in this process
 * (libmosquitto, ke.mapper.v1.MapperFrame on ke/mapper/<device>/up|down).
 * What is checked is what a user sees: the frames the mapper receives,
 * the cloud's twin (DeviceController.GetTwin, WatchTwins), edgecore's
 * /metrics.
 *
 *   1 protobuf flow: SetDesired reaches the mapper as a DesiredUpdate; a
 *     ReportedUpdate is acked and shows in the cloud; TwinGet answers
 *     with the desired values; bad frames are refused (Refusal, counter)
 *     and change nothing
 *   2 the broker restarts mid-flow: every report the broker accepted
 *     reaches the cloud, in order, and later ones still arrive
 *   3 autonomy: cloudcore SIGKILLed, 100 readings, edgecore SIGKILLed and
 *     restarted (twin/get answered from its store meanwhile), cloudcore
 *     back: WatchTwins shows all 100, in order
 *
 * Skipped (exit 77) when mosquitto is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "devicecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_mqtt.h"
#include "ke_proxy.h"
#include "ke_testproc.h"
#include "ke_time.h"
#include "mapper.pb-c.h"

#include <jansson.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"
#define DEVICE "therm-1"
#define WAIT_MS 30000
#define UP "ke/mapper/" DEVICE "/up"
#define DOWN "ke/mapper/" DEVICE "/down"

static ke_cluster C;
static ke_edge E;
static ke_mqtt B;
static ke_proxy *P;
static char broker_arg[64], server_arg[64];
static const char *edge_extra[12];

/* ---- the mapper: libmosquitto, its own thread; what arrives is kept ---- */

#define INBOX_MAX 4096
typedef struct inmsg {
    char topic[160];
    uint8_t *payload;
    int len;
} inmsg;

static struct mosquitto *M;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;
static inmsg inbox[INBOX_MAX];
static size_t n_in, n_taken; /* n_taken: consumed by expect_frame */
static int connected, acked_pubs;

static void m_connect(struct mosquitto *m, void *ud, int rc)
{
    (void)ud;
    /* a clean session: subscribe at every connect */
    if (rc == 0 && (mosquitto_subscribe(m, NULL, "ke/mapper/+/down", 1) != MOSQ_ERR_SUCCESS ||
                    mosquitto_subscribe(m, NULL, "$hw/events/device/+/twin/get/result", 1) !=
                        MOSQ_ERR_SUCCESS))
        rc = -1;
    pthread_mutex_lock(&mu);
    connected = rc == 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void m_disconnect(struct mosquitto *m, void *ud, int rc)
{
    (void)m;
    (void)ud;
    (void)rc;
    pthread_mutex_lock(&mu);
    connected = 0;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void m_publish(struct mosquitto *m, void *ud, int mid)
{
    (void)m;
    (void)ud;
    (void)mid;
    pthread_mutex_lock(&mu);
    acked_pubs++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void m_message(struct mosquitto *m, void *ud, const struct mosquitto_message *mm)
{
    (void)m;
    (void)ud;
    pthread_mutex_lock(&mu);
    if (n_in < INBOX_MAX) {
        inmsg *i = &inbox[n_in++];
        snprintf(i->topic, sizeof(i->topic), "%s", mm->topic);
        i->payload = malloc(mm->payloadlen ? (size_t)mm->payloadlen : 1);
        memcpy(i->payload, mm->payload, (size_t)mm->payloadlen);
        i->len = mm->payloadlen;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
}

static void mapper_start(void)
{
    ke_time_cond_init(&cv);
    mosquitto_lib_init();
    M = mosquitto_new("test-mapper", true, NULL);
    assert_non_null(M);
    mosquitto_connect_callback_set(M, m_connect);
    mosquitto_disconnect_callback_set(M, m_disconnect);
    mosquitto_publish_callback_set(M, m_publish);
    mosquitto_message_callback_set(M, m_message);
    mosquitto_reconnect_delay_set(M, 1, 2, false);
    assert_int_equal(mosquitto_connect(M, "127.0.0.1", B.port, 30), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(M), MOSQ_ERR_SUCCESS);
}

static void mapper_stop(void)
{
    if (!M)
        return;
    mosquitto_disconnect(M);
    mosquitto_loop_stop(M, false); /* after disconnect the thread ends by itself; forcing cancels it holding a lock */
    mosquitto_destroy(M);
    M = NULL;
    for (size_t i = 0; i < n_in; i++)
        free(inbox[i].payload);
    n_in = n_taken = 0;
}

/* wait_connected: the mapper is (again) connected to the broker. */
static void wait_connected(void)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&mu);
    while (!connected && ke_time_mono_ms() < until) {
        struct timespec ts = ke_time_deadline(100);
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    int ok = connected;
    pthread_mutex_unlock(&mu);
    if (!ok)
        fail_msg("the mapper did not connect to the broker");
}

/* pub publishes with QoS 1 and waits for the broker's PUBACK. */
static void pub(const char *topic, const void *payload, size_t len)
{
    pthread_mutex_lock(&mu);
    int want = acked_pubs + 1;
    pthread_mutex_unlock(&mu);
    assert_int_equal(mosquitto_publish(M, NULL, topic, (int)len, payload, 1, false),
                     MOSQ_ERR_SUCCESS);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&mu);
    while (acked_pubs < want && ke_time_mono_ms() < until) {
        struct timespec ts = ke_time_deadline(100);
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    int ok = acked_pubs >= want;
    pthread_mutex_unlock(&mu);
    if (!ok)
        fail_msg("the broker did not acknowledge a publish on %s", topic);
}

static void pub_frame(const char *topic, Ke__Mapper__V1__MapperFrame *f)
{
    uint8_t buf[1024];
    size_t len = ke__mapper__v1__mapper_frame__get_packed_size(f);
    assert_true(len <= sizeof(buf));
    ke__mapper__v1__mapper_frame__pack(f, buf);
    pub(topic, buf, len);
}

static void pub_reported(uint32_t seq, const char *prop, const char *value, int64_t ts)
{
    Ke__Mapper__V1__PropertyValue pv = KE__MAPPER__V1__PROPERTY_VALUE__INIT, *pp = &pv;
    pv.name = (char *)prop;
    pv.value = (char *)value;
    pv.timestamp_ms = ts;
    Ke__Mapper__V1__ReportedUpdate ru = KE__MAPPER__V1__REPORTED_UPDATE__INIT;
    ru.device = DEVICE;
    ru.n_properties = 1;
    ru.properties = &pp;
    Ke__Mapper__V1__MapperFrame f = KE__MAPPER__V1__MAPPER_FRAME__INIT;
    f.seq = seq;
    f.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_REPORTED;
    f.reported = &ru;
    pub_frame(UP, &f);
}

/* expect_frame: the next frame on topic (after those already taken) for
 * which pred holds; frames on topic that fail pred are consumed. The
 * caller frees the frame. */
typedef int (*frame_pred)(const Ke__Mapper__V1__MapperFrame *f, const void *arg);
static Ke__Mapper__V1__MapperFrame *expect_frame(const char *topic, frame_pred pred,
                                                 const void *arg, const char *what)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&mu);
    for (;;) {
        for (size_t i = n_taken; i < n_in; i++) {
            if (strcmp(inbox[i].topic, topic) != 0)
                continue;
            Ke__Mapper__V1__MapperFrame *f =
                ke__mapper__v1__mapper_frame__unpack(NULL, (size_t)inbox[i].len, inbox[i].payload);
            inbox[i].topic[0] = '\0'; /* consumed */
            if (f && pred(f, arg)) {
                pthread_mutex_unlock(&mu);
                return f;
            }
            if (f)
                ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
        }
        if (ke_time_mono_ms() > until)
            break;
        struct timespec ts = ke_time_deadline(100);
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    pthread_mutex_unlock(&mu);
    ke_tp_sh("tail -20 %s >&2", E.log);
    fail_msg("no frame on %s: %s", topic, what);
    return NULL;
}

static int is_ack(const Ke__Mapper__V1__MapperFrame *f, const void *arg)
{
    return f->body_case == KE__MAPPER__V1__MAPPER_FRAME__BODY_ACK &&
           f->ack == *(const uint32_t *)arg;
}

static int is_refusal(const Ke__Mapper__V1__MapperFrame *f, const void *arg)
{
    return f->body_case == KE__MAPPER__V1__MAPPER_FRAME__BODY_REFUSED &&
           f->refused->seq == *(const uint32_t *)arg;
}

/* is_answer: the ack or the refusal of frame seq */
static int is_answer(const Ke__Mapper__V1__MapperFrame *f, const void *arg)
{
    return is_ack(f, arg) || is_refusal(f, arg);
}

typedef struct want_desired {
    const char *prop, *value;
} want_desired;

static int is_desired(const Ke__Mapper__V1__MapperFrame *f, const void *arg)
{
    const want_desired *w = arg;
    if (f->body_case != KE__MAPPER__V1__MAPPER_FRAME__BODY_DESIRED)
        return 0;
    for (size_t i = 0; i < f->desired->n_properties; i++)
        if (strcmp(f->desired->properties[i]->name, w->prop) == 0 &&
            strcmp(f->desired->properties[i]->value, w->value) == 0)
            return strcmp(f->desired->device, DEVICE) == 0;
    return 0;
}

/* ---- the cloud side ---- */

static void set_desired(const char *prop, const char *value)
{
    ke_dc_set_desired(C.api, "default", DEVICE, prop, value);
}

/* reported_in_cloud: the cloud's reported value of prop (malloc'd), or NULL. */
static char *reported_in_cloud(const char *prop)
{
    Ke__V1__TwinReply *r = ke_dc_get_twin(C.api, "default", DEVICE);
    char *out = NULL;
    for (size_t i = 0; r && i < r->n_twins; i++)
        if (strcmp(r->twins[i]->property, prop) == 0 && r->twins[i]->reported)
            out = strdup(r->twins[i]->reported->value);
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return out;
}

static void wait_reported_in_cloud(const char *prop, const char *value)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    char *v = NULL;
    while (ke_time_mono_ms() < until) {
        v = reported_in_cloud(prop);
        if (v && strcmp(v, value) == 0) {
            free(v);
            return;
        }
        free(v);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ke_tp_sh("tail -20 %s >&2", E.log);
    fail_msg("the cloud does not show %s reported as %s", prop, value);
}

/* A twin watch: the reported values of "temp" in the order they arrive,
 * each distinct value once (WatchTwins sends a twin when it changed). */
#define SEEN_MAX 1024
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char seen[SEEN_MAX][32];
    size_t n;
    int events, done;
    ke_rpc_call *call;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void w_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    (void)ud;
    const Ke__V1__TwinEvent *ev = (const Ke__V1__TwinEvent *)msg;
    pthread_mutex_lock(&W.mu);
    W.events++;
    if (ev->twin && strcmp(ev->twin->property, "temp") == 0 && ev->twin->reported &&
        W.n < SEEN_MAX && (W.n == 0 || strcmp(W.seen[W.n - 1], ev->twin->reported->value) != 0))
        snprintf(W.seen[W.n++], sizeof(W.seen[0]), "%s", ev->twin->reported->value);
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
}

static void w_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    (void)st;
    (void)ud;
    pthread_mutex_lock(&W.mu);
    W.done = 1;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
}

/* watch_start opens WatchTwins on the device and returns once it is live:
 * a desired value set on "label" shows on it. */
static void watch_start(void)
{
    pthread_mutex_lock(&W.mu);
    W.n = 0;
    W.events = 0;
    W.done = 0;
    pthread_mutex_unlock(&W.mu);
    ke_rpc_handler h = {.on_message = w_message, .on_close = w_close};
    ke_rpc_stub stub = {C.api, &ke__v1__device_controller__descriptor};
    assert_int_equal(ke_rpc_stub_start(&stub, "WatchTwins", &h, NULL, NULL, &W.call), 0);
    Ke__V1__WatchTwinsRequest r = KE__V1__WATCH_TWINS_REQUEST__INIT;
    r.namespace_ = "default";
    r.name = DEVICE;
    assert_int_equal(ke_rpc_call_send(W.call, &r.base), 0);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    char label[32];
    for (int i = 0;; i++) {
        snprintf(label, sizeof(label), "poke-%d", i);
        int before;
        pthread_mutex_lock(&W.mu);
        before = W.events;
        pthread_mutex_unlock(&W.mu);
        set_desired("label", label);
        struct timespec ts = ke_time_deadline(300);
        pthread_mutex_lock(&W.mu);
        if (W.events == before && !W.done)
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
        int live = W.events > before, done = W.done;
        pthread_mutex_unlock(&W.mu);
        if (live)
            return;
        if (done || ke_time_mono_ms() > until)
            fail_msg("WatchTwins did not go live");
    }
}

static void watch_stop(void)
{
    if (!W.call)
        return;
    ke_rpc_call_cancel(W.call);
    pthread_mutex_lock(&W.mu);
    while (!W.done)
        pthread_cond_wait(&W.cv, &W.mu);
    pthread_mutex_unlock(&W.mu);
    ke_rpc_call_unref(W.call);
    W.call = NULL;
}

/* wait_seen: the watch has seen `value` as reported temp. */
static void wait_seen(const char *value)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        for (size_t i = 0; i < W.n; i++)
            if (strcmp(W.seen[i], value) == 0) {
                pthread_mutex_unlock(&W.mu);
                return;
            }
        if (ke_time_mono_ms() > until || W.done)
            break;
        struct timespec ts = ke_time_deadline(100);
        pthread_cond_timedwait(&W.cv, &W.mu, &ts);
    }
    pthread_mutex_unlock(&W.mu);
    ke_tp_sh("tail -20 %s >&2; tail -20 %s >&2", E.log, C.cloud_log);
    fail_msg("WatchTwins never showed temp reported as %s", value);
}

static long long edge_metric(const char *series)
{
    char *body = NULL;
    if (ke_tp_http_get(E.http_port, "/metrics", &body) != 200) {
        free(body);
        return -1;
    }
    long long v = -1;
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, series, strlen(series)) == 0 && line[strlen(series)] == ' ')
            v = atoll(line + strlen(series) + 1);
    free(body);
    return v;
}

static long long refused(const char *reason)
{
    char s[96];
    snprintf(s, sizeof(s), "ke_devicetwin_refused_total{reason=\"%s\"}", reason);
    return edge_metric(s);
}

/* ---- set-up ---- */

static void start_edge(void)
{
    ke_edge_start(&C, &E, NODE, ke_proxy_port(P), edge_extra);
}

static void stop_broker(void) { ke_mqtt_stop(&B); }

static void apply(const char *json)
{
    ke_rpc_status st;
    if (ke_ec_apply(C.api, json, &st) != KE_RPC_OK)
        fail_msg("apply: %s", st.message);
}

static int setup(void **state)
{
    (void)state;
    if (!ke_mqtt_available()) {
        fprintf(stderr, "mosquitto or mosquitto_pub not installed: skipping\n");
        exit(77);
    }
    ke_time_cond_init(&W.cv);
    ke_cluster_start(&C, NULL);
    char dir[200];
    snprintf(dir, sizeof(dir), "%s/mqtt", C.dir);
    atexit(stop_broker);
    ke_mqtt_start(&B, dir, 0);
    assert_int_equal(ke_proxy_start(C.grpc_port, &P), 0);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    apply("{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"DeviceModel\","
          "\"metadata\":{\"name\":\"thermometer\"},\"spec\":{\"properties\":["
          "{\"name\":\"temp\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"},"
          "{\"name\":\"humidity\",\"type\":\"FLOAT\",\"accessMode\":\"ReadOnly\"},"
          "{\"name\":\"label\",\"type\":\"STRING\",\"accessMode\":\"ReadWrite\"}]}}");
    snprintf(broker_arg, sizeof(broker_arg), "--eventbus.broker=127.0.0.1:%d", B.port);
    snprintf(server_arg, sizeof(server_arg), "--edgehub.backoff_initial=100ms");
    edge_extra[0] = "--modules.eventbus.enable=true";
    edge_extra[1] = broker_arg;
    edge_extra[2] = "--eventbus.backoff_initial=100ms";
    edge_extra[3] = "--eventbus.backoff_max=1s";
    edge_extra[4] = "--http.listen=127.0.0.1:0";
    edge_extra[5] = server_arg;
    edge_extra[6] = "--edgehub.backoff_max=1s";
    edge_extra[7] = NULL;
    start_edge();
    if (!ke_file_wait_contains(E.log, "connected to the broker", WAIT_MS))
        fail_msg("edgecore did not connect to the broker");
    /* the device, once the node exists (its edge has connected) */
    const char *dev = "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
                      "\"metadata\":{\"name\":\"" DEVICE "\"},\"spec\":{\"deviceModelRef\":"
                      "{\"name\":\"thermometer\"},\"nodeName\":\"" NODE "\"}}";
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    ke_rpc_status st;
    while (ke_ec_apply(C.api, dev, &st) != KE_RPC_OK) {
        if (ke_time_mono_ms() > until)
            fail_msg("apply: %s", st.message);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    mapper_start();
    wait_connected();
    /* the device has reached the edge (edgecore had it in its store before
     * it started): a TwinGet is answered, not refused */
    uint32_t seq = 1;
    Ke__Mapper__V1__TwinGet g = KE__MAPPER__V1__TWIN_GET__INIT;
    g.device = DEVICE;
    Ke__Mapper__V1__MapperFrame f = KE__MAPPER__V1__MAPPER_FRAME__INIT;
    f.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_GET;
    f.get = &g;
    until = ke_time_mono_ms() + WAIT_MS;
    for (;; seq++) {
        f.seq = seq;
        pub_frame(UP, &f);
        Ke__Mapper__V1__MapperFrame *a =
            expect_frame(DOWN, is_answer, &seq, "TwinGet answered or refused");
        int ok = a->body_case == KE__MAPPER__V1__MAPPER_FRAME__BODY_ACK;
        ke__mapper__v1__mapper_frame__free_unpacked(a, NULL);
        if (ok)
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("the device did not reach the edge");
        struct timespec ts = {0, 100 * 1000000L}; /* the edge is still syncing */
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    watch_stop();
    mapper_stop();
    int edge_status = E.running ? ke_tp_stop(&E.proc) : 0;
    E.running = 0;
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    int broker_status = ke_mqtt_stop(&B);
    ke_proxy_stop(P);
    P = NULL;
    if (edge_status != 0)
        ke_tp_sh("echo edgecore exited with status %d >&2; tail -40 %s >&2", edge_status, E.log);
    ke_cluster_stop(&C);
    assert_int_equal(edge_status, 0);
    assert_int_equal(broker_status, 0);
    return 0;
}

/* ---- 1: the protobuf topics ---- */

static void test_protobuf_mapper(void **state)
{
    (void)state;
    /* desired value from the cloud -> DesiredUpdate to the mapper */
    set_desired("temp", "25");
    want_desired w = {"temp", "25"};
    Ke__Mapper__V1__MapperFrame *f = expect_frame(DOWN, is_desired, &w, "DesiredUpdate temp=25");
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);

    /* the mapper reports; acked; the cloud shows it */
    uint32_t seq = 10;
    int64_t now = ke_time_wall_ms();
    pub_reported(seq, "temp", "25", now);
    f = expect_frame(DOWN, is_ack, &seq, "ack of the report");
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
    wait_reported_in_cloud("temp", "25");

    /* TwinGet -> the desired values */
    Ke__Mapper__V1__TwinGet g = KE__MAPPER__V1__TWIN_GET__INIT;
    g.device = DEVICE;
    Ke__Mapper__V1__MapperFrame gf = KE__MAPPER__V1__MAPPER_FRAME__INIT;
    gf.seq = ++seq;
    gf.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_GET;
    gf.get = &g;
    pub_frame(UP, &gf);
    f = expect_frame(DOWN, is_desired, &w, "TwinGet answered with temp=25");
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);

    /* bad frames: refused with a Refusal, counted, nothing changes */
    struct {
        const char *reason;
        uint32_t code;
        const char *prop, *value;
        int64_t ts;
    } bad[] = {
        {"unknown_property", 400, "colour", "red", now + 1},
        {"type", 400, "temp", "warm", now + 1},
        {"stale", 409, "temp", "19", now - 60000},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long n = refused(bad[i].reason);
        pub_reported(++seq, bad[i].prop, bad[i].value, bad[i].ts);
        f = expect_frame(DOWN, is_refusal, &seq, bad[i].reason);
        assert_int_equal(f->refused->code, bad[i].code);
        assert_true(strlen(f->refused->reason) > 0);
        ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
        assert_int_equal(refused(bad[i].reason), n + 1);
    }
    /* not a MapperFrame at all */
    long long n = refused("malformed");
    uint32_t zero = 0;
    pub(UP, "\xff\xff\xff\xff garbage", 13);
    f = expect_frame(DOWN, is_refusal, &zero, "refusal of garbage");
    assert_int_equal(f->refused->code, 400);
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
    assert_int_equal(refused("malformed"), n + 1);
    /* a desired value from the mapper */
    n = refused("desired");
    Ke__Mapper__V1__PropertyValue pv = KE__MAPPER__V1__PROPERTY_VALUE__INIT, *pp = &pv;
    pv.name = "temp";
    pv.value = "99";
    Ke__Mapper__V1__DesiredUpdate du = KE__MAPPER__V1__DESIRED_UPDATE__INIT;
    du.device = DEVICE;
    du.n_properties = 1;
    du.properties = &pp;
    Ke__Mapper__V1__MapperFrame df = KE__MAPPER__V1__MAPPER_FRAME__INIT;
    df.seq = ++seq;
    df.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_DESIRED;
    df.desired = &du;
    pub_frame(UP, &df);
    f = expect_frame(DOWN, is_refusal, &seq, "refusal of a desired value");
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
    assert_int_equal(refused("desired"), n + 1);
    /* an unknown device: refused on its own topic */
    n = refused("unknown_device");
    Ke__Mapper__V1__MapperFrame uf = KE__MAPPER__V1__MAPPER_FRAME__INIT;
    uf.seq = 77;
    uf.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_GET;
    uf.get = &g;
    pub_frame("ke/mapper/nosuch/up", &uf);
    uint32_t s77 = 77;
    f = expect_frame("ke/mapper/nosuch/down", is_refusal, &s77, "refusal of an unknown device");
    assert_int_equal(f->refused->code, 404);
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
    assert_int_equal(refused("unknown_device"), n + 1);

    /* nothing refused reached the cloud: still 25 (a later good report
     * proves the refusals were not merely slow) */
    pub_reported(++seq, "temp", "26", now + 2);
    f = expect_frame(DOWN, is_ack, &seq, "ack of the last report");
    ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
    wait_reported_in_cloud("temp", "26");
    watch_start();
    pthread_mutex_lock(&W.mu);
    for (size_t i = 0; i < W.n; i++)
        if (strcmp(W.seen[i], "warm") == 0 || strcmp(W.seen[i], "19") == 0)
            fail_msg("a refused reading reached the cloud: %s", W.seen[i]);
    pthread_mutex_unlock(&W.mu);
    watch_stop();
}

/* ---- 2: the broker restarts mid-flow ---- */

static void test_broker_restart_mid_flow(void **state)
{
    (void)state;
    watch_start();
    int64_t t0 = ke_time_wall_ms() + 10000;
    char v[32];
    uint32_t seq = 1000;
    for (int i = 1; i <= 20; i++) {
        snprintf(v, sizeof(v), "%d", 1000 + i);
        pub_reported(++seq, "temp", v, t0 + i);
    }
    /* the broker goes with reports accepted and maybe not yet delivered */
    assert_int_equal(ke_mqtt_stop(&B), 0);
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&mu);
    while (connected && ke_time_mono_ms() < until) {
        struct timespec ts = ke_time_deadline(100);
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    pthread_mutex_unlock(&mu);
    ke_mqtt_restart(&B);
    wait_connected();
    for (int i = 21; i <= 40; i++) {
        snprintf(v, sizeof(v), "%d", 1000 + i);
        pub_reported(++seq, "temp", v, t0 + i);
    }
    wait_seen("1040");
    pthread_mutex_lock(&W.mu);
    size_t at = 0;
    while (at < W.n && strcmp(W.seen[at], "1001") != 0)
        at++;
    for (int i = 1; i <= 40; i++) {
        snprintf(v, sizeof(v), "%d", 1000 + i);
        if (at + (size_t)i - 1 >= W.n || strcmp(W.seen[at + (size_t)i - 1], v) != 0) {
            pthread_mutex_unlock(&W.mu);
            fail_msg("reading %s missing or out of order in the cloud's watch", v);
        }
    }
    pthread_mutex_unlock(&W.mu);
    watch_stop();
}

/* ---- 3: autonomy ---- */

static void test_offline_readings_reach_the_cloud_in_order(void **state)
{
    (void)state;
    ke_cluster_kill_cloud(&C); /* SIGKILL: the cloud gets no say */
    long long before = edge_metric("ke_devicetwin_reports_total");
    assert_true(before >= 0);
    int64_t t0 = ke_time_wall_ms() + 20000;
    char v[32];
    uint32_t seq = 2000;
    for (int i = 1; i <= 100; i++) {
        snprintf(v, sizeof(v), "r%d", i);
        pub_reported(++seq, "label", v, t0 + i); /* STRING: any text */
        snprintf(v, sizeof(v), "%d", 2000 + i);
        pub_reported(++seq, "temp", v, t0 + i);
    }
    /* all 200 are in edgecore's store and outbox */
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (edge_metric("ke_devicetwin_reports_total") < before + 200) {
        if (ke_time_mono_ms() > until)
            fail_msg("edgecore queued %lld of 200 readings",
                     edge_metric("ke_devicetwin_reports_total") - before);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ke_edge_kill(&E);
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    /* the proxy holds the link until the cloud's watch is live */
    ke_proxy_freeze(P, 1);
    start_edge();
    /* offline, just restarted: twin/get is answered from the edge's store */
    const char *get = "{\"event_id\":\"off\"}";
    if (mosquitto_publish(M, NULL, "$hw/events/device/" DEVICE "/twin/get", (int)strlen(get),
                          get, 1, false) != MOSQ_ERR_SUCCESS)
        fail_msg("publish twin/get");
    until = ke_time_mono_ms() + WAIT_MS;
    int answered = 0;
    while (!answered && ke_time_mono_ms() < until) {
        pthread_mutex_lock(&mu);
        for (size_t i = n_taken; i < n_in && !answered; i++) {
            if (strcmp(inbox[i].topic, "$hw/events/device/" DEVICE "/twin/get/result") != 0)
                continue;
            json_t *j = json_loadb((const char *)inbox[i].payload, (size_t)inbox[i].len, 0, NULL);
            const char *eid = json_string_value(json_object_get(j, "event_id"));
            json_t *temp = json_object_get(json_object_get(j, "twin"), "temp");
            const char *av =
                json_string_value(json_object_get(json_object_get(temp, "actual"), "value"));
            if (eid && strcmp(eid, "off") == 0) {
                if (!av || strcmp(av, "2100") != 0) {
                    pthread_mutex_unlock(&mu);
                    fail_msg("twin/get offline: temp actual %s, want 2100", av ? av : "none");
                }
                answered = 1;
            }
            json_decref(j);
        }
        pthread_mutex_unlock(&mu);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(answered);
    ke_cluster_start_cloud(&C, NULL);
    watch_start();
    ke_proxy_freeze(P, 0);
    ke_proxy_cut(P); /* a connection frozen half-way is started afresh */
    wait_seen("2100");
    pthread_mutex_lock(&W.mu);
    size_t at = 0;
    while (at < W.n && strcmp(W.seen[at], "2001") != 0)
        at++;
    for (int i = 1; i <= 100; i++) {
        snprintf(v, sizeof(v), "%d", 2000 + i);
        if (at + (size_t)i - 1 >= W.n || strcmp(W.seen[at + (size_t)i - 1], v) != 0) {
            pthread_mutex_unlock(&W.mu);
            fail_msg("offline reading %s missing or out of order in the cloud's watch", v);
        }
    }
    pthread_mutex_unlock(&W.mu);
    watch_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protobuf_mapper),
        cmocka_unit_test(test_broker_restart_mid_flow),
        cmocka_unit_test(test_offline_readings_reach_the_cloud_in_order),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
