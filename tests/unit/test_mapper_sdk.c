/*
 * test_mapper_sdk.c — the device API (mappers/sdk/ke_mapper.h) over an
 * in-memory framed wire (mapper_wire.h) against a scripted peer (a ke_link
 * playing DeviceTwin): start-up sends StateReport online and TwinGet, a
 * DesiredUpdate of the setpoint goes through write() and is reported back,
 * a desired value of the read-only property is refused, reports come on
 * the clock and on change, a Refusal is not retransmitted, a lost report
 * is sent again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ke_mapper.h"
#include "mapper_wire.h"

/* the device the author writes: a table and two callbacks */
typedef struct device {
    char temperature[16];
    int setpoint;
    int humidity;
    int writes;
    char last_write[64];
} device;

enum { P_TEMP, P_SET, P_HUM };
static const ke_prop props[] = {
    {"temperature", KE_PROP_FLOAT, KE_PROP_READ, 1000, 0},
    {"setpoint", KE_PROP_INT, KE_PROP_READWRITE, 0, 0},
    {"humidity", KE_PROP_INT, KE_PROP_READ, 0, 100},
};

static int dev_read(void *user, const ke_prop *p, char *value, size_t size)
{
    device *d = user;
    if (p == &props[P_TEMP])
        snprintf(value, size, "%s", d->temperature);
    else if (p == &props[P_SET])
        snprintf(value, size, "%d", d->setpoint);
    else
        snprintf(value, size, "%d", d->humidity);
    return 0;
}

static int dev_write(void *user, const ke_prop *p, const char *value)
{
    device *d = user;
    d->writes++;
    snprintf(d->last_write, sizeof(d->last_write), "%s=%s", p->name, value);
    if (p != &props[P_SET])
        return -1;
    int v = 0;
    if (sscanf(value, "%d", &v) != 1)
        return -1;
    d->setpoint = v;
    return 0;
}

#define MAX_SEEN 64
typedef struct fixture {
    wire up, down;
    wire_end em, ep;
    device dev;
    ke_mapper m;
    ke_link peer;
    ke_mapper_v1_MapperFrame seen[MAX_SEEN]; /* data frames the peer got */
    int n_seen;
    ke_mapper_v1_MapperFrame in;
} fixture;

static int setup(void **state)
{
    static fixture fx;
    memset(&fx, 0, sizeof(fx));
    wire_pair(&fx.em, &fx.ep, &fx.up, &fx.down, 1);
    strcpy(fx.dev.temperature, "21.5");
    fx.dev.setpoint = 20;
    fx.dev.humidity = 40;
    ke_link_init(&fx.peer, &fx.ep.tr, 100, 3, 500, NULL, NULL);
    ke_mapper_config cfg = {
        .device = "sensor-1",
        .props = props,
        .n_props = 3,
        .read = dev_read,
        .write = dev_write,
        .user = &fx.dev,
        .transport = &fx.em.tr,
        .retry_ms = 100,
        .retries = 3,
        .seq_start = 1,
    };
    assert_int_equal(ke_mapper_start(&fx.m, &cfg, 0), 0);
    *state = &fx;
    return 0;
}

/* run polls mapper and peer at now until nothing moves; the peer (it acks
 * by itself, as DeviceTwin) records each data frame it gets. */
static void run(fixture *fx, uint32_t now)
{
    for (int i = 0; i < 50; i++) {
        unsigned before = fx->up.sends + fx->down.sends;
        ke_mapper_poll(&fx->m, now);
        while (ke_link_poll(&fx->peer, now, &fx->in) == 1) {
            assert_true(fx->n_seen < MAX_SEEN);
            fx->seen[fx->n_seen++] = fx->in;
        }
        if (fx->up.sends + fx->down.sends == before)
            return;
    }
    fail_msg("the mapper and the peer never went quiet");
}

/* peer_send sends a frame from the scripted peer (without waiting for it). */
static void peer_send(fixture *fx, ke_mapper_v1_MapperFrame *f, uint32_t now)
{
    fx->peer.busy = false; /* the script does not wait for acks */
    assert_int_equal(ke_link_send(&fx->peer, f, now, NULL), 0);
}

static void desired(fixture *fx, const char *name, const char *value, uint32_t now)
{
    ke_mapper_v1_MapperFrame f;
    memset(&f, 0, sizeof(f));
    f.which_body = ke_mapper_v1_MapperFrame_desired_tag;
    strcpy(f.body.desired.device, "sensor-1");
    f.body.desired.properties_count = 1;
    strcpy(f.body.desired.properties[0].name, name);
    strcpy(f.body.desired.properties[0].value, value);
    peer_send(fx, &f, now);
}

/* reported finds name's value in frame i (NULL if absent or not a report). */
static const char *reported(const fixture *fx, int i, const char *name)
{
    const ke_mapper_v1_MapperFrame *f = &fx->seen[i];
    if (f->which_body != ke_mapper_v1_MapperFrame_reported_tag)
        return NULL;
    for (pb_size_t k = 0; k < f->body.reported.properties_count; k++)
        if (strcmp(f->body.reported.properties[k].name, name) == 0)
            return f->body.reported.properties[k].value;
    return NULL;
}

static void test_start_sends_state_online_twin_get_and_a_first_report(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    assert_int_equal(fx->n_seen, 3);
    assert_int_equal(fx->seen[0].which_body, ke_mapper_v1_MapperFrame_state_tag);
    assert_string_equal(fx->seen[0].body.state.device, "sensor-1");
    assert_int_equal(fx->seen[0].body.state.state, ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE);
    assert_int_equal(fx->seen[1].which_body, ke_mapper_v1_MapperFrame_get_tag);
    assert_string_equal(fx->seen[1].body.get.device, "sensor-1");
    assert_string_equal(reported(fx, 2, "temperature"), "21.5");
    assert_string_equal(reported(fx, 2, "setpoint"), "20");
    assert_string_equal(reported(fx, 2, "humidity"), "40");
    assert_string_equal(fx->seen[2].body.reported.device, "sensor-1");
    assert_int_equal(fx->m.link.stats.acked, 3);
    assert_int_equal(fx->m.stats.reports, 1);
}

/* set_online: each change goes as a StateReport; a change back before
 * the frame leaves sends only the current state */
static void test_set_online_reports_offline_then_online(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    int n = fx->n_seen;
    assert_int_equal(ke_mapper_set_online(&fx->m, false), 0);
    run(fx, 10);
    assert_int_equal(fx->n_seen, n + 1);
    assert_int_equal(fx->seen[n].which_body, ke_mapper_v1_MapperFrame_state_tag);
    assert_int_equal(fx->seen[n].body.state.state, ke_mapper_v1_DeviceState_DEVICE_STATE_OFFLINE);
    assert_int_equal(ke_mapper_set_online(&fx->m, false), 0); /* no change: nothing sent */
    run(fx, 20);
    assert_int_equal(fx->n_seen, n + 1);
    assert_int_equal(ke_mapper_set_online(&fx->m, true), 0);
    assert_int_equal(ke_mapper_set_online(&fx->m, false), 0);
    assert_int_equal(ke_mapper_set_online(&fx->m, true), 0);
    run(fx, 30);
    assert_int_equal(fx->n_seen, n + 2);
    assert_int_equal(fx->seen[n + 1].body.state.state,
                     ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE);
    assert_int_equal(ke_mapper_set_online(NULL, true), -1);
}

static void test_a_desired_setpoint_is_written_and_reported_back(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    int n = fx->n_seen;
    desired(fx, "setpoint", "42", 10);
    run(fx, 10);
    assert_int_equal(fx->dev.writes, 1);
    assert_string_equal(fx->dev.last_write, "setpoint=42");
    assert_int_equal(fx->dev.setpoint, 42);
    assert_int_equal(fx->m.stats.writes, 1);
    assert_int_equal(fx->n_seen, n + 1);
    assert_string_equal(reported(fx, n, "setpoint"), "42");
    assert_null(reported(fx, n, "temperature")); /* only what changed */
    assert_int_equal(fx->m.link.stats.delivered, 1);
    assert_int_equal(fx->peer.stats.acked, 1); /* the mapper acked the desired frame */
}

static void test_a_desired_value_of_a_read_only_property_is_refused(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    int n = fx->n_seen;
    desired(fx, "temperature", "99", 10);
    run(fx, 10);
    assert_int_equal(fx->dev.writes, 0);
    assert_int_equal(fx->m.stats.writes_refused, 1);
    assert_string_equal(fx->dev.temperature, "21.5");
    /* the twin hears the value the device holds */
    assert_int_equal(fx->n_seen, n + 1);
    assert_string_equal(reported(fx, n, "temperature"), "21.5");
    /* and a property the device does not have */
    desired(fx, "colour", "blue", 20);
    run(fx, 20);
    assert_int_equal(fx->m.stats.unknown, 1);
    assert_int_equal(fx->n_seen, n + 1);
    /* a failed write: counted, and the value read back is reported */
    desired(fx, "setpoint", "warm", 30);
    run(fx, 30);
    assert_int_equal(fx->m.stats.writes_failed, 1);
    assert_string_equal(reported(fx, n + 1, "setpoint"), "20");
}

static void test_periodic_reports_follow_the_clock(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    int n = fx->n_seen;
    run(fx, 999);
    assert_int_equal(fx->n_seen, n);
    strcpy(fx->dev.temperature, "22.0");
    run(fx, 1000);
    assert_int_equal(fx->n_seen, n + 1);
    assert_string_equal(reported(fx, n, "temperature"), "22.0");
    run(fx, 1500);
    assert_int_equal(fx->n_seen, n + 1);
    run(fx, 2000); /* the same value: periodic reports go anyway */
    assert_int_equal(fx->n_seen, n + 2);
    assert_string_equal(reported(fx, n + 1, "temperature"), "22.0");
    for (uint32_t t = 3000; t <= 10000; t += 1000)
        run(fx, t);
    assert_int_equal(fx->n_seen, n + 10);
}

static void test_a_change_is_reported_at_the_next_sample(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    int n = fx->n_seen;
    run(fx, 100); /* sampled: no change, no report */
    assert_int_equal(fx->n_seen, n);
    fx->dev.humidity = 55;
    run(fx, 150);
    assert_int_equal(fx->n_seen, n);
    run(fx, 200);
    assert_int_equal(fx->n_seen, n + 1);
    assert_string_equal(reported(fx, n, "humidity"), "55");
    assert_null(reported(fx, n, "temperature"));
    /* the author may say so at once */
    assert_int_equal(ke_mapper_changed(&fx->m, P_SET), 0);
    assert_int_equal(ke_mapper_changed(&fx->m, 3), -1);
    run(fx, 210);
    assert_string_equal(reported(fx, n + 1, "setpoint"), "20");
}

static void test_a_refused_report_is_not_sent_again(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    /* the edge refuses the next report (409 stale) instead of acking it */
    fx->down.drop_all = 1; /* the peer's automatic ack is lost... */
    strcpy(fx->dev.temperature, "23.0");
    run(fx, 1000);
    fx->down.drop_all = 0;
    ke_mapper_v1_MapperFrame r;
    memset(&r, 0, sizeof(r));
    r.which_body = ke_mapper_v1_MapperFrame_refused_tag;
    r.body.refused.seq = fx->m.link.out_seq;
    r.body.refused.code = 409;
    uint8_t pb[KE_FRAME_MAX], w[KE_FRAME_WIRE_MAX];
    long n = ke_link_encode_frame(&r, pb, sizeof(pb));
    size_t wl;
    assert_true(n > 0);
    assert_int_equal(ke_frame_encode(pb, (size_t)n, w, sizeof(w), &wl), 0);
    assert_int_equal(fx->ep.tr.send(fx->ep.tr.ctx, w, wl), 0); /* ...and a Refusal comes */
    unsigned sends = fx->up.sends;
    ke_mapper_poll(&fx->m, 1001);
    assert_int_equal(fx->m.stats.frames_refused, 1);
    assert_false(ke_link_busy(&fx->m.link));
    ke_mapper_poll(&fx->m, 1500);
    assert_int_equal(fx->up.sends, sends); /* no retransmission, nothing else due */
}

/* resync: after a refusal (its code kept), state, TwinGet and every value
 * go again, as at start */
static void test_resync_sends_state_get_and_values_again(void **state)
{
    fixture *fx = *state;
    test_a_refused_report_is_not_sent_again(state);
    assert_int_equal(fx->m.stats.last_refusal_code, 409);
    int n = fx->n_seen;
    assert_int_equal(ke_mapper_resync(&fx->m), 0);
    run(fx, 2000);
    assert_int_equal(fx->n_seen, n + 3);
    assert_int_equal(fx->seen[n].which_body, ke_mapper_v1_MapperFrame_state_tag);
    assert_int_equal(fx->seen[n + 1].which_body, ke_mapper_v1_MapperFrame_get_tag);
    assert_string_equal(reported(fx, n + 2, "temperature"), "23.0");
    assert_string_equal(reported(fx, n + 2, "setpoint"), "20");
    assert_int_equal(ke_mapper_resync(NULL), -1);
}

static void test_a_report_given_up_is_sent_again_later(void **state)
{
    fixture *fx = *state;
    run(fx, 0);
    fx->up.drop_all = 1; /* the line is cut */
    strcpy(fx->dev.temperature, "24.0");
    for (uint32_t t = 1000; t <= 1400; t += 100)
        run(fx, t);
    assert_int_equal(fx->m.stats.frames_lost, 1);
    fx->up.drop_all = 0;
    int n = fx->n_seen;
    run(fx, 1500);
    assert_int_equal(fx->n_seen, n + 1);
    assert_string_equal(reported(fx, n, "temperature"), "24.0");
}

static void test_a_bad_config_is_refused(void **state)
{
    fixture *fx = *state;
    ke_mapper m;
    ke_mapper_config cfg = fx->m.cfg;
    cfg.write = NULL; /* setpoint is writable */
    assert_int_equal(ke_mapper_start(&m, &cfg, 0), -1);
    cfg = fx->m.cfg;
    cfg.device = "";
    assert_int_equal(ke_mapper_start(&m, &cfg, 0), -1);
    cfg = fx->m.cfg;
    cfg.n_props = KE_MAPPER_PROPS_MAX + 1;
    assert_int_equal(ke_mapper_start(&m, &cfg, 0), -1);
    cfg = fx->m.cfg;
    cfg.device = "0123456789012345678901234567890123456789012345678901234567890123"; /* 64 */
    assert_int_equal(ke_mapper_start(&m, &cfg, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_start_sends_state_online_twin_get_and_a_first_report, setup),
        cmocka_unit_test_setup(test_set_online_reports_offline_then_online, setup),
        cmocka_unit_test_setup(test_a_desired_setpoint_is_written_and_reported_back, setup),
        cmocka_unit_test_setup(test_a_desired_value_of_a_read_only_property_is_refused, setup),
        cmocka_unit_test_setup(test_periodic_reports_follow_the_clock, setup),
        cmocka_unit_test_setup(test_a_change_is_reported_at_the_next_sample, setup),
        cmocka_unit_test_setup(test_a_refused_report_is_not_sent_again, setup),
        cmocka_unit_test_setup(test_a_report_given_up_is_sent_again_later, setup),
        cmocka_unit_test_setup(test_resync_sends_state_get_and_values_again, setup),
        cmocka_unit_test_setup(test_a_bad_config_is_refused, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
