/*
 * test_eventbus.c — EventBus against a real broker: a private mosquitto
 * (tests/support/ke_mqtt.h), a cloudcore process, an edgecore process with
 * EventBus on, and a durable consumer of CloudHub's upstream log (group
 * "eventbus"). Messages are published with mosquitto_pub (QoS 1); what is
 * checked is what the consumer receives: the payload, the key, and that
 * nothing is forwarded twice under a new key or version.
 *
 * Skipped (exit 77) when mosquitto or mosquitto_pub is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_consumer.h"
#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_mqtt.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"
#define WAIT_MS 30000
#define TOPIC "$hw/events/upload/test"
#define KEY_PREFIX "node/" NODE "//EventBus/%24hw%2Fevents%2Fupload%2Ftest@"

static ke_cluster C;
static ke_edge E;
static ke_mqtt B;
static ke_consumer K;
static int consumer_on;
static char broker_arg[64];
static const char *edge_extra[8];

/* what the consumer received: every entry, in order */
typedef struct got {
    char key[400];
    uint64_t rv;
    char payload[256];
    char group[64];
} got;
static pthread_mutex_t got_mu = PTHREAD_MUTEX_INITIALIZER;
static got gots[256];
static size_t ngot;

static void on_entry(const Ke__V1__UpstreamMessage *m, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&got_mu);
    if (ngot < sizeof(gots) / sizeof(gots[0]) && m->message && m->message->route) {
        got *g = &gots[ngot++];
        snprintf(g->key, sizeof(g->key), "%s",
                 m->message->route->resource ? m->message->route->resource : "");
        snprintf(g->group, sizeof(g->group), "%s",
                 m->message->route->group ? m->message->route->group : "");
        g->rv = m->message->header ? m->message->header->resource_version : 0;
        size_t n = m->message->content.len < sizeof(g->payload) - 1 ? m->message->content.len
                                                                    : sizeof(g->payload) - 1;
        memcpy(g->payload, m->message->content.data, n);
        g->payload[n] = '\0';
    }
    pthread_mutex_unlock(&got_mu);
}

/* count_payload: entries received with this payload, and how many
 * distinct keys they came under (a message forwarded again would have
 * another key). */
static size_t count_payload(const char *payload, size_t *keys)
{
    size_t n = 0, k = 0;
    pthread_mutex_lock(&got_mu);
    for (size_t i = 0; i < ngot; i++) {
        if (strcmp(gots[i].payload, payload) != 0)
            continue;
        n++;
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(gots[j].payload, payload) == 0 && strcmp(gots[j].key, gots[i].key) == 0)
                seen = 1;
        k += !seen;
    }
    pthread_mutex_unlock(&got_mu);
    if (keys)
        *keys = k;
    return n;
}

/* wait_payload polls what the consumer received until the payload is
 * there or the deadline passes. */
static int wait_payload(const char *payload, int64_t timeout_ms)
{
    int64_t until = ke_time_mono_ms() + timeout_ms;
    while (count_payload(payload, NULL) == 0) {
        if (ke_time_mono_ms() > until)
            return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static got find_payload(const char *payload)
{
    got g;
    memset(&g, 0, sizeof(g));
    pthread_mutex_lock(&got_mu);
    for (size_t i = 0; i < ngot; i++)
        if (strcmp(gots[i].payload, payload) == 0) {
            g = gots[i];
            break;
        }
    pthread_mutex_unlock(&got_mu);
    return g;
}

/* count_in_file: occurrences of text in a file (a log). */
static int count_in_file(const char *path, const char *text)
{
    char out[32];
    if (ke_tp_capture(out, sizeof(out), "grep -cF -- '%s' %s", text, path) < 0)
        return -1;
    return atoi(out);
}

static int wait_count_in_file(const char *path, const char *text, int n, int64_t timeout_ms)
{
    int64_t until = ke_time_mono_ms() + timeout_ms;
    while (count_in_file(path, text) < n) {
        if (ke_time_mono_ms() > until)
            return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static void start_edge(void)
{
    ke_edge_start(&C, &E, NODE, C.grpc_port, edge_extra);
}

/* the broker is stopped at exit too: a failed set-up (cmocka then skips
 * teardown) leaves nothing behind */
static void stop_broker(void) { ke_mqtt_stop(&B); }

static int setup(void **state)
{
    (void)state;
    if (!ke_mqtt_available()) {
        fprintf(stderr, "mosquitto or mosquitto_pub not installed: skipping\n");
        exit(77);
    }
    ke_cluster_start(&C, NULL);
    char dir[200];
    snprintf(dir, sizeof(dir), "%s/mqtt", C.dir);
    atexit(stop_broker);
    ke_mqtt_start(&B, dir, 0);
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    const char *groups[] = {"eventbus", NULL};
    ke_consumer_start(&K, C.admin, "eventbus-test", groups, 0, 1, on_entry, NULL);
    consumer_on = 1;
    snprintf(broker_arg, sizeof(broker_arg), "--eventbus.broker=127.0.0.1:%d", B.port);
    edge_extra[0] = "--modules.eventbus.enable=true";
    edge_extra[1] = broker_arg;
    edge_extra[2] = "--eventbus.backoff_initial=100ms";
    edge_extra[3] = "--eventbus.backoff_max=1s";
    edge_extra[4] = "--http.listen=127.0.0.1:0";
    edge_extra[5] = NULL;
    start_edge();
    /* subscribed (the session exists at the broker from now on) */
    if (!ke_file_wait_contains(E.log, "connected to the broker", WAIT_MS)) {
        ke_tp_sh("tail -30 %s >&2", E.log);
        fail_msg("edgecore did not connect to the broker");
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int edge_status = E.running ? ke_tp_stop(&E.proc) : 0;
    E.running = 0;
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    int broker_status = ke_mqtt_stop(&B);
    if (consumer_on)
        ke_consumer_stop(&K);
    consumer_on = 0;
    if (edge_status != 0)
        ke_tp_sh("echo edgecore exited with status %d >&2; tail -40 %s >&2", edge_status, E.log);
    ke_cluster_stop(&C);
    assert_int_equal(edge_status, 0);
    assert_int_equal(broker_status, 0);
    return 0;
}

static void expect_payload(const char *payload)
{
    if (!wait_payload(payload, WAIT_MS)) {
        ke_tp_sh("tail -30 %s >&2; tail -20 %s >&2", E.log, B.log);
        fail_msg("\"%s\" did not reach the consumer", payload);
    }
}

/* ---- 1: an MQTT message reaches the cloud, payload intact ---- */

static void test_message_reaches_the_cloud(void **state)
{
    (void)state;
    const char *payload = "{\"event\":\"door\",\"open\":true,\"n\":1}";
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, payload), 0);
    expect_payload(payload);
    got g = find_payload(payload);
    assert_string_equal(g.group, "eventbus");
    if (strncmp(g.key, KEY_PREFIX, strlen(KEY_PREFIX)) != 0)
        fail_msg("key %s does not start with %s", g.key, KEY_PREFIX);
    assert_true(g.rv > 0);
    /* two messages on one topic are two entries (not coalesced) */
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "second"), 0);
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "third"), 0);
    expect_payload("second");
    expect_payload("third");
    got g2 = find_payload("second"), g3 = find_payload("third");
    assert_string_not_equal(g2.key, g3.key);
    /* a topic outside the subscription is not forwarded: sent before a
     * marker, it would arrive before it */
    assert_int_equal(ke_mqtt_pub(&B, "other/topic", "not-forwarded"), 0);
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "marker-1"), 0);
    expect_payload("marker-1");
    assert_int_equal(count_payload("not-forwarded", NULL), 0);
    char *body = NULL;
    assert_int_equal(ke_tp_http_get(E.http_port, "/healthz", &body), 200);
    if (!strstr(body, "eventbus: ok connected broker=127.0.0.1:"))
        fail_msg("healthz:\n%s", body);
    free(body);
}

/* ---- 2: the broker restarts; edgecore reconnects; its session kept ---- */

static void test_broker_restart(void **state)
{
    (void)state;
    int connects = count_in_file(E.log, "connected to the broker");
    assert_true(connects >= 1);
    assert_int_equal(ke_mqtt_stop(&B), 0);
    if (!ke_file_wait_contains(E.log, "broker connection lost", WAIT_MS))
        fail_msg("edgecore did not see the broker go");
    /* away: healthy all the same, saying why */
    char *body = NULL;
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        assert_int_equal(ke_tp_http_get(E.http_port, "/healthz", &body), 200);
        if (strstr(body, "eventbus: ok disconnected: ") && strstr(body, "retry in "))
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("healthz while the broker is away:\n%s", body);
        free(body);
        body = NULL;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(body);
    ke_mqtt_restart(&B);
    /* published at once: the session the broker restored (persistence)
     * keeps it until edgecore is back, if it is not yet */
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "after-broker-restart"), 0);
    if (!wait_count_in_file(E.log, "connected to the broker", connects + 1, WAIT_MS))
        fail_msg("edgecore did not reconnect");
    expect_payload("after-broker-restart");
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "after-reconnect"), 0);
    expect_payload("after-reconnect");

    /* edgecore away, the broker up: its persistent session keeps QoS 1
     * messages for it */
    ke_edge_stop(&E);
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "while-away-1"), 0);
    assert_int_equal(ke_mqtt_pub(&B, "$hw/events/upload/other", "while-away-2"), 0);
    start_edge();
    expect_payload("while-away-1");
    expect_payload("while-away-2");
}

/* ---- 3: edgecore restarted: nothing forwarded twice ---- */

static void test_edgecore_restart_sends_nothing_twice(void **state)
{
    (void)state;
    /* a burst, then a restart right behind it: reports still in the outbox
     * are resent under their key and version, never as new reports */
    char p[64];
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof(p), "burst-%d", i);
        assert_int_equal(ke_mqtt_pub(&B, TOPIC, p), 0);
    }
    expect_payload("burst-0");
    ke_edge_stop(&E);
    start_edge();
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "marker-2"), 0);
    expect_payload("marker-2"); /* the outbox is in order: anything resent came before */
    for (int i = 0; i < 20; i++) {
        snprintf(p, sizeof(p), "burst-%d", i);
        expect_payload(p);
    }
    const char *all[] = {"second", "third", "marker-1", "after-broker-restart", "after-reconnect",
                         "while-away-1", "while-away-2", "marker-2"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]) + 20; i++) {
        const char *q = all[i < 8 ? i : 0];
        if (i >= 8) {
            snprintf(p, sizeof(p), "burst-%zu", i - 8);
            q = p;
        }
        size_t keys = 0, n = count_payload(q, &keys);
        if (keys != 1)
            fail_msg("\"%s\": %zu entries under %zu keys (want one key)", q, n, keys);
        if (n != 1)
            print_message("\"%s\" received %zu times under its one key and version\n", q, n);
    }
}

/* ---- 4: the cloud's MQTTMessage objects are published on the broker ---- */

/* wait_health polls /healthz until it holds text. */
static void wait_health(const char *text)
{
    char *body = NULL;
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        assert_int_equal(ke_tp_http_get(E.http_port, "/healthz", &body), 200);
        if (strstr(body, text))
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("no \"%s\" in /healthz:\n%s", text, body);
        free(body);
        body = NULL;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(body);
}

static int cloud_publish(const char *topic_enc, uint64_t version, const char *payload)
{
    char key[200];
    snprintf(key, sizeof(key), "node/" NODE "//MQTTMessage/%s", topic_enc);
    return ke_hub_publish(C.admin, NODE, key, KE__V1__OPERATION__OPERATION_UPDATE, "eventbus",
                          payload, strlen(payload), version, 0);
}

static void test_cloud_messages_are_published(void **state)
{
    (void)state;
    /* a persistent QoS 1 session at the broker that keeps what is
     * published on down/# until the test reads it */
    const char *sub = "mosquitto_sub -h 127.0.0.1 -p %d -c -i ke-test-sub -q 1 -t 'down/#'";
    char cmd[256], out[512];
    snprintf(cmd, sizeof(cmd), sub, B.port);
    assert_int_equal(ke_tp_sh("%s -E", cmd), 0);
    assert_int_equal(cloud_publish("down%2Fa", 1, "to-device-1"), 0);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s -v -C 1 -W 30", cmd), 0);
    assert_string_equal(out, "down/a to-device-1\n");

    /* the broker away: publishes wait in order, and go out on reconnect */
    int connects = count_in_file(E.log, "connected to the broker");
    assert_int_equal(ke_mqtt_stop(&B), 0);
    wait_health("eventbus: ok disconnected: ");
    assert_int_equal(cloud_publish("down%2Fa", 2, "queued-1"), 0);
    assert_int_equal(cloud_publish("down%2Fb", 1, "queued-2"), 0);
    wait_health(", queued=2");
    ke_mqtt_restart(&B);
    if (!wait_count_in_file(E.log, "connected to the broker", connects + 1, WAIT_MS))
        fail_msg("edgecore did not reconnect");
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s -v -C 2 -W 30", cmd), 0);
    assert_string_equal(out, "down/a queued-1\ndown/b queued-2\n");
    wait_health("eventbus: ok connected broker=127.0.0.1:");
    wait_health("queued=0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_reaches_the_cloud),
        cmocka_unit_test(test_broker_restart),
        cmocka_unit_test(test_edgecore_restart_sends_nothing_twice),
        cmocka_unit_test(test_cloud_messages_are_published),
    };
    return cmocka_run_group_tests_name("eventbus", tests, setup, teardown);
}
