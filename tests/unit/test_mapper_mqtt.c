/*
 * test_mapper_mqtt.c — a mapper built on the SDK (mappers/sdk) over its MQTT
 * host transport (mappers/sdk/host/ke_mqtt_transport.h) and a private
 * mosquitto broker, against a scripted peer that speaks as edgecore's
 * DeviceTwin does on ke/mapper/<device>/up and /down: acks by seq, a
 * Refusal, a DesiredUpdate. Checks that frames travel whole (nanopb, no
 * framing), that a Refusal settles a frame, that a desired setpoint is
 * written and reported back, and that a report due while the broker
 * restarts arrives once it is back. Skipped (exit 77) without mosquitto.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mosquitto.h>

#include "ke_mapper.h"
#include "ke_mqtt.h"
#include "ke_mqtt_transport.h"

#define WAIT_MS 10000

static ke_mqtt B;
static char dir[] = "/tmp/ke-mapper-mqtt-XXXXXX";

static const ke_prop props[] = {
    {"temperature", KE_PROP_FLOAT, KE_PROP_READ, 0, 0},
    {"setpoint", KE_PROP_INT, KE_PROP_READWRITE, 0, 0},
};
static int setpoint = 20;

static int rd(void *u, const ke_prop *p, char *value, size_t size)
{
    (void)u;
    if (p == &props[0])
        snprintf(value, size, "21.5");
    else
        snprintf(value, size, "%d", setpoint);
    return 0;
}

static int wr(void *u, const ke_prop *p, const char *value)
{
    (void)u;
    (void)p;
    setpoint = atoi(value);
    return 0;
}

/* the peer: what it got on the up topic */
#define SEEN_MAX 32
static ke_mapper_v1_MapperFrame seen[SEEN_MAX];
static int n_seen;

static void peer_on_message(struct mosquitto *m, void *ctx, const struct mosquitto_message *msg)
{
    (void)m;
    (void)ctx;
    if (n_seen < SEEN_MAX &&
        ke_link_decode_frame(msg->payload, (size_t)msg->payloadlen, &seen[n_seen]) == 0)
        n_seen++;
}

static void peer_publish(struct mosquitto *peer, ke_mapper_v1_MapperFrame *f)
{
    uint8_t pb[KE_FRAME_MAX];
    long n = ke_link_encode_frame(f, pb, sizeof(pb));
    assert_true(n > 0);
    assert_int_equal(mosquitto_publish(peer, NULL, "ke/mapper/sensor-1/down", (int)n, pb, 1, false),
                     MOSQ_ERR_SUCCESS);
}

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

/* run drives the mapper and the peer until the peer has seen `want` frames
 * (it waits on the sockets, at most 10 ms a turn, WAIT_MS in all). */
static void run(ke_mapper *m, struct mosquitto *peer, int want)
{
    uint32_t end = now_ms() + WAIT_MS;
    while (n_seen < want && (int32_t)(now_ms() - end) < 0) {
        ke_mapper_poll(m, now_ms());
        assert_int_equal(mosquitto_loop(peer, 10, 1), MOSQ_ERR_SUCCESS);
    }
    assert_int_equal(n_seen, want);
}

static void answer(struct mosquitto *peer, uint32_t seq, int refuse);

/* settle drives both until the mapper's outstanding frame is done; the
 * peer acks a frame sent again (a retransmission), as DeviceTwin does. */
static void settle(ke_mapper *m, struct mosquitto *peer)
{
    uint32_t end = now_ms() + WAIT_MS;
    int answered = n_seen;
    while (ke_link_busy(&m->link) && (int32_t)(now_ms() - end) < 0) {
        ke_mapper_poll(m, now_ms());
        assert_int_equal(mosquitto_loop(peer, 10, 1), MOSQ_ERR_SUCCESS);
        for (; answered < n_seen; answered++)
            answer(peer, seen[answered].seq, 0);
    }
    assert_false(ke_link_busy(&m->link));
}

static void answer(struct mosquitto *peer, uint32_t seq, int refuse)
{
    static uint32_t peer_seq = 100;
    ke_mapper_v1_MapperFrame f;
    memset(&f, 0, sizeof(f));
    f.seq = ++peer_seq; /* DeviceTwin numbers its acks too */
    if (refuse) {
        f.which_body = ke_mapper_v1_MapperFrame_refused_tag;
        f.body.refused.seq = seq;
        f.body.refused.code = 404;
        strcpy(f.body.refused.reason, "device \"sensor-1\" is not bound to this node");
    } else {
        f.which_body = ke_mapper_v1_MapperFrame_ack_tag;
        f.body.ack = seq;
    }
    peer_publish(peer, &f);
}

static void stop_broker(void)
{
    ke_mqtt_stop(&B);
}

static void test_a_host_mapper_talks_to_the_twin_over_mqtt(void **state)
{
    (void)state;
    if (!ke_mqtt_available()) {
        fprintf(stderr, "mosquitto not installed: skipping\n");
        exit(77);
    }
    assert_non_null(mkdtemp(dir));
    atexit(stop_broker);
    ke_mqtt_start(&B, dir, 0);

    mosquitto_lib_init();
    struct mosquitto *peer = mosquitto_new("devicetwin-script", true, NULL);
    assert_non_null(peer);
    mosquitto_message_callback_set(peer, peer_on_message);
    assert_int_equal(mosquitto_connect(peer, "127.0.0.1", B.port, 30), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_subscribe(peer, NULL, "ke/mapper/sensor-1/up", 1), MOSQ_ERR_SUCCESS);
    for (int i = 0; i < 20; i++) /* CONNACK and SUBACK */
        assert_int_equal(mosquitto_loop(peer, 10, 1), MOSQ_ERR_SUCCESS);

    static ke_mqtt_transport t;
    assert_int_equal(ke_mqtt_transport_open(&t, "127.0.0.1", B.port, "sensor-1", WAIT_MS), 0);
    assert_false(t.tr.framed);
    static ke_mapper m;
    ke_mapper_config cfg = {"sensor-1", props, 2, rd, wr, NULL, &t.tr, 500, 3, 1};
    assert_int_equal(ke_mapper_start(&m, &cfg, now_ms()), 0);

    /* StateReport online, acked */
    run(&m, peer, 1);
    assert_int_equal(seen[0].which_body, ke_mapper_v1_MapperFrame_state_tag);
    assert_int_equal(seen[0].body.state.state, ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE);
    answer(peer, seen[0].seq, 0);
    /* TwinGet, refused: settled, not sent again */
    run(&m, peer, 2);
    assert_int_equal(seen[1].which_body, ke_mapper_v1_MapperFrame_get_tag);
    answer(peer, seen[1].seq, 1);
    /* the first report comes once the TwinGet is settled */
    run(&m, peer, 3);
    assert_int_equal(seen[2].which_body, ke_mapper_v1_MapperFrame_reported_tag);
    assert_int_equal(seen[2].body.reported.properties_count, 2);
    assert_int_equal(m.stats.frames_refused, 1);
    assert_int_equal(m.link.stats.retransmits, 0);
    answer(peer, seen[2].seq, 0);

    /* a desired setpoint: acked by seq, written, reported back */
    ke_mapper_v1_MapperFrame d;
    memset(&d, 0, sizeof(d));
    d.seq = 7000;
    d.which_body = ke_mapper_v1_MapperFrame_desired_tag;
    strcpy(d.body.desired.device, "sensor-1");
    d.body.desired.properties_count = 1;
    strcpy(d.body.desired.properties[0].name, "setpoint");
    strcpy(d.body.desired.properties[0].value, "42");
    peer_publish(peer, &d);
    run(&m, peer, 5);
    int ack = seen[3].which_body == ke_mapper_v1_MapperFrame_ack_tag ? 3 : 4;
    assert_int_equal(seen[ack].which_body, ke_mapper_v1_MapperFrame_ack_tag);
    assert_int_equal(seen[ack].body.ack, 7000);
    const ke_mapper_v1_MapperFrame *r = &seen[7 - ack];
    assert_int_equal(r->which_body, ke_mapper_v1_MapperFrame_reported_tag);
    assert_int_equal(r->body.reported.properties_count, 1);
    assert_string_equal(r->body.reported.properties[0].name, "setpoint");
    assert_string_equal(r->body.reported.properties[0].value, "42");
    assert_int_equal(setpoint, 42);
    assert_int_equal(m.stats.writes, 1);
    answer(peer, r->seq, 0);
    settle(&m, peer);

    /* the broker restarts while a report is due: it arrives afterwards */
    assert_int_equal(ke_mqtt_stop(&B), 0);
    setpoint = 50;
    assert_int_equal(ke_mapper_changed(&m, 1), 0);
    for (uint32_t end = now_ms() + 1500; (int32_t)(now_ms() - end) < 0;)
        ke_mapper_poll(&m, now_ms()); /* sends into the void, retries */
    assert_true(m.link.stats.send_errors + m.link.stats.retransmits > 0);
    ke_mqtt_restart(&B);
    assert_int_equal(mosquitto_reconnect(peer), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_subscribe(peer, NULL, "ke/mapper/sensor-1/up", 1), MOSQ_ERR_SUCCESS);
    int before = n_seen;
    run(&m, peer, before + 1);
    const ke_mapper_v1_MapperFrame *again = &seen[before];
    assert_int_equal(again->which_body, ke_mapper_v1_MapperFrame_reported_tag);
    assert_string_equal(again->body.reported.properties[0].name, "setpoint");
    assert_string_equal(again->body.reported.properties[0].value, "50");
    assert_true(t.reconnects >= 1);
    answer(peer, again->seq, 0);
    settle(&m, peer);

    ke_mqtt_transport_close(&t);
    ke_mqtt_transport_close(&t); /* twice is safe */
    mosquitto_disconnect(peer);
    mosquitto_destroy(peer);
    mosquitto_lib_cleanup();
    assert_int_equal(ke_mqtt_stop(&B), 0);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_host_mapper_talks_to_the_twin_over_mqtt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
