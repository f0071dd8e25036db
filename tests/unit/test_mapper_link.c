/*
 * test_mapper_link.c — the mapper SDK's reliable link (mappers/sdk/ke_link.h)
 * between two ends over an in-memory wire (mapper_wire.h) with an injected
 * clock: delivery and acks, a lost frame retransmitted, a lost ack giving a
 * duplicate that is acked but delivered once, giving up after the retries,
 * a Refusal ending a frame without retransmission, seq numbering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ke_link.h"
#include "ke_mapper.h"
#include "mapper_wire.h"

#define RETRY 100
#define RETRIES 3

typedef struct outcome {
    int n;
    uint32_t seq;
    ke_link_outcome how;
    uint32_t code;
} outcome;

static void on_done(void *ctx, uint32_t seq, ke_link_outcome how, const ke_mapper_v1_Refusal *r)
{
    outcome *o = ctx;
    o->n++;
    o->seq = seq;
    o->how = how;
    o->code = r ? r->code : 0;
}

typedef struct fixture {
    wire ab, ba;
    wire_end ea, eb;
    ke_link a, b;
    outcome oa, ob;
    ke_mapper_v1_MapperFrame in;
} fixture;

static int setup(void **state, int framed)
{
    static fixture fx;
    memset(&fx, 0, sizeof(fx));
    wire_pair(&fx.ea, &fx.eb, &fx.ab, &fx.ba, framed);
    ke_link_init(&fx.a, &fx.ea.tr, RETRY, RETRIES, 1, on_done, &fx.oa);
    ke_link_init(&fx.b, &fx.eb.tr, RETRY, RETRIES, 1000, on_done, &fx.ob);
    *state = &fx;
    return 0;
}
static int setup_framed(void **state) { return setup(state, 1); }
static int setup_messages(void **state) { return setup(state, 0); }

static void a_state_frame(ke_mapper_v1_MapperFrame *f)
{
    memset(f, 0, sizeof(*f));
    f->which_body = ke_mapper_v1_MapperFrame_state_tag;
    strcpy(f->body.state.device, "dev");
    f->body.state.state = ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE;
}

/* deliveries polls b until quiet and counts the data frames delivered. */
static int deliveries(fixture *fx, uint32_t now)
{
    int n = 0;
    while (ke_link_poll(&fx->b, now, &fx->in) == 1)
        n++;
    return n;
}

static void test_a_frame_is_delivered_and_acked(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    uint32_t seq = 0;
    assert_int_equal(ke_link_send(&fx->a, &f, 0, &seq), 0);
    assert_int_equal(seq, 1);
    assert_true(ke_link_busy(&fx->a));
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), -1); /* window of one */
    assert_int_equal(deliveries(fx, 1), 1);
    assert_int_equal(fx->in.which_body, ke_mapper_v1_MapperFrame_state_tag);
    assert_int_equal(fx->in.seq, 1);
    assert_string_equal(fx->in.body.state.device, "dev");
    assert_int_equal(ke_link_poll(&fx->a, 2, &fx->in), 0);
    assert_false(ke_link_busy(&fx->a));
    assert_int_equal(fx->oa.n, 1);
    assert_int_equal(fx->oa.how, KE_LINK_ACKED);
    assert_int_equal(fx->oa.seq, 1);
    /* the next frame takes the next seq */
    assert_int_equal(ke_link_send(&fx->a, &f, 3, &seq), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(fx->a.stats.retransmits, 0);
}

static void test_a_lost_frame_is_retransmitted(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    fx->ab.drop_mask = 1; /* the first transmission is lost */
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), 0);
    assert_int_equal(deliveries(fx, 0), 0);
    assert_int_equal(ke_link_poll(&fx->a, RETRY - 1, &fx->in), 0);
    assert_int_equal(fx->a.stats.retransmits, 0); /* not before its time */
    assert_int_equal(ke_link_poll(&fx->a, RETRY, &fx->in), 0);
    assert_int_equal(fx->a.stats.retransmits, 1);
    assert_int_equal(deliveries(fx, RETRY), 1);
    assert_int_equal(fx->in.seq, 1);
    ke_link_poll(&fx->a, RETRY + 1, &fx->in);
    assert_int_equal(fx->oa.n, 1);
    assert_int_equal(fx->oa.how, KE_LINK_ACKED);
}

static void test_a_lost_ack_gives_a_duplicate_acked_and_delivered_once(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    fx->ba.drop_mask = 1; /* b's first ack is lost */
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), 0);
    assert_int_equal(deliveries(fx, 0), 1);
    ke_link_poll(&fx->a, 1, &fx->in);
    assert_true(ke_link_busy(&fx->a));
    ke_link_poll(&fx->a, RETRY, &fx->in); /* retransmits */
    assert_int_equal(deliveries(fx, RETRY), 0);
    assert_int_equal(fx->b.stats.duplicates, 1);
    assert_int_equal(fx->b.stats.delivered, 1);
    ke_link_poll(&fx->a, RETRY + 1, &fx->in);
    assert_false(ke_link_busy(&fx->a));
    assert_int_equal(fx->oa.how, KE_LINK_ACKED);
    assert_int_equal(fx->ba.sends, 2); /* two acks sent, one arrived */
    /* a new frame after the duplicate is delivered */
    assert_int_equal(ke_link_send(&fx->a, &f, RETRY + 2, NULL), 0);
    assert_int_equal(deliveries(fx, RETRY + 2), 1);
    assert_int_equal(fx->in.seq, 2);
}

static void test_retries_give_up_after_n(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    fx->ab.drop_all = 1;
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), 0);
    uint32_t now = 0;
    for (int i = 0; i < 20 && ke_link_busy(&fx->a); i++) {
        now += RETRY;
        ke_link_poll(&fx->a, now, &fx->in);
    }
    assert_false(ke_link_busy(&fx->a));
    assert_int_equal(fx->oa.n, 1);
    assert_int_equal(fx->oa.how, KE_LINK_GAVE_UP);
    assert_int_equal(fx->ab.sends, 1 + RETRIES);
    assert_int_equal(fx->a.stats.retransmits, RETRIES);
    assert_int_equal(fx->a.stats.gave_up, 1);
    assert_int_equal(now, (1 + RETRIES) * RETRY);
}

static void test_the_clock_may_wrap(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    fx->ab.drop_mask = 1;
    uint32_t t0 = UINT32_MAX - 10;
    assert_int_equal(ke_link_send(&fx->a, &f, t0, NULL), 0);
    ke_link_poll(&fx->a, t0 + 5, &fx->in);
    assert_int_equal(fx->a.stats.retransmits, 0);
    ke_link_poll(&fx->a, t0 + RETRY, &fx->in); /* wrapped past 0 */
    assert_int_equal(fx->a.stats.retransmits, 1);
}

static void test_a_refusal_ends_the_frame_without_retransmission(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    uint32_t seq;
    assert_int_equal(ke_link_send(&fx->a, &f, 0, &seq), 0);
    /* the peer (DeviceTwin over MQTT) answers with a Refusal, not an ack */
    ke_mapper_v1_MapperFrame r;
    memset(&r, 0, sizeof(r));
    r.seq = 77;
    r.which_body = ke_mapper_v1_MapperFrame_refused_tag;
    r.body.refused.seq = seq;
    r.body.refused.code = 404;
    strcpy(r.body.refused.reason, "device \"dev\" is not bound to this node");
    uint8_t pb[KE_FRAME_MAX];
    long n = ke_link_encode_frame(&r, pb, sizeof(pb));
    assert_true(n > 0);
    assert_int_equal(fx->eb.tr.send(fx->eb.tr.ctx, pb, (size_t)n), 0);
    assert_int_equal(ke_link_poll(&fx->a, 1, &fx->in), 0); /* not delivered, not acked */
    assert_false(ke_link_busy(&fx->a));
    assert_int_equal(fx->oa.how, KE_LINK_REFUSED);
    assert_int_equal(fx->oa.code, 404);
    assert_int_equal(fx->a.stats.refused, 1);
    unsigned sends = fx->ab.sends;
    for (uint32_t t = 0; t < 10 * RETRY; t += RETRY)
        ke_link_poll(&fx->a, t, &fx->in);
    assert_int_equal(fx->ab.sends, sends);
    /* a stale ack or refusal changes nothing */
    assert_int_equal(fx->eb.tr.send(fx->eb.tr.ctx, pb, (size_t)n), 0);
    ke_link_poll(&fx->a, 10 * RETRY, &fx->in);
    assert_int_equal(fx->a.stats.stale, 1);
    assert_int_equal(fx->oa.n, 1);
}

static void test_seq_skips_zero_when_it_wraps(void **state)
{
    fixture *fx = *state;
    ke_link_init(&fx->a, &fx->ea.tr, RETRY, RETRIES, UINT32_MAX, on_done, &fx->oa);
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    uint32_t seq;
    assert_int_equal(ke_link_send(&fx->a, &f, 0, &seq), 0);
    assert_int_equal(seq, UINT32_MAX);
    assert_int_equal(deliveries(fx, 0), 1);
    ke_link_poll(&fx->a, 1, &fx->in);
    assert_int_equal(ke_link_send(&fx->a, &f, 2, &seq), 0);
    assert_int_equal(seq, 1);
}

static void test_the_same_seq_long_after_is_a_new_frame(void **state)
{
    fixture *fx = *state;
    ke_mapper_v1_MapperFrame f;
    a_state_frame(&f);
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), 0);
    assert_int_equal(deliveries(fx, 0), 1);
    ke_link_poll(&fx->a, 1, &fx->in);
    /* the sender restarts and numbers from 1 again, long after */
    ke_link_init(&fx->a, &fx->ea.tr, RETRY, RETRIES, 1, on_done, &fx->oa);
    uint32_t later = RETRY * (RETRIES + 1) + 1;
    assert_int_equal(ke_link_send(&fx->a, &f, later, NULL), 0);
    assert_int_equal(deliveries(fx, later), 1);
    assert_int_equal(fx->b.stats.duplicates, 0);
    assert_int_equal(fx->b.stats.delivered, 2);
}

static void test_a_frame_at_its_bounds_crosses_the_link(void **state)
{
    fixture *fx = *state;
    static ke_mapper_v1_MapperFrame f;
    memset(&f, 0, sizeof(f));
    f.which_body = ke_mapper_v1_MapperFrame_desired_tag;
    memset(f.body.desired.device, 'd', KE_MAPPER_TEXT_MAX);
    f.body.desired.properties_count = KE_MAPPER_FRAME_PROPS;
    for (int i = 0; i < KE_MAPPER_FRAME_PROPS; i++) {
        /* 0x7F... and zero-free runs across the frame */
        memset(f.body.desired.properties[i].name, 'a' + i, KE_MAPPER_TEXT_MAX);
        memset(f.body.desired.properties[i].value, 0x7F, KE_MAPPER_TEXT_MAX);
        f.body.desired.properties[i].timestamp_ms = i ? INT64_MIN : 0;
    }
    assert_int_equal(ke_link_send(&fx->a, &f, 0, NULL), 0);
    /* framed in place in the link's one buffer: within a few bytes of the bound */
    assert_true(fx->a.out_len > ke_mapper_v1_MapperFrame_size - 16);
    assert_int_equal(deliveries(fx, 0), 1);
    assert_int_equal(fx->in.body.desired.properties_count, KE_MAPPER_FRAME_PROPS);
    assert_string_equal(fx->in.body.desired.device, f.body.desired.device);
    for (int i = 0; i < KE_MAPPER_FRAME_PROPS; i++) {
        assert_string_equal(fx->in.body.desired.properties[i].name,
                            f.body.desired.properties[i].name);
        assert_string_equal(fx->in.body.desired.properties[i].value,
                            f.body.desired.properties[i].value);
        assert_true(fx->in.body.desired.properties[i].timestamp_ms ==
                    f.body.desired.properties[i].timestamp_ms);
    }
}

static void test_undecodable_payloads_are_counted(void **state)
{
    fixture *fx = *state;
    const uint8_t junk[] = {0xFF, 0xFF, 0xFF};
    assert_int_equal(fx->ea.tr.send(fx->ea.tr.ctx, junk, sizeof(junk)), 0);
    assert_int_equal(deliveries(fx, 0), 0);
    assert_int_equal(fx->b.stats.undecodable, 1);
    assert_int_equal(fx->ba.sends, 0); /* nothing to ack */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_a_frame_is_delivered_and_acked, setup_framed),
        cmocka_unit_test_setup(test_a_frame_is_delivered_and_acked, setup_messages),
        cmocka_unit_test_setup(test_a_lost_frame_is_retransmitted, setup_framed),
        cmocka_unit_test_setup(test_a_lost_ack_gives_a_duplicate_acked_and_delivered_once,
                               setup_framed),
        cmocka_unit_test_setup(test_a_lost_ack_gives_a_duplicate_acked_and_delivered_once,
                               setup_messages),
        cmocka_unit_test_setup(test_retries_give_up_after_n, setup_framed),
        cmocka_unit_test_setup(test_the_clock_may_wrap, setup_framed),
        cmocka_unit_test_setup(test_a_refusal_ends_the_frame_without_retransmission,
                               setup_messages),
        cmocka_unit_test_setup(test_seq_skips_zero_when_it_wraps, setup_framed),
        cmocka_unit_test_setup(test_the_same_seq_long_after_is_a_new_frame, setup_framed),
        cmocka_unit_test_setup(test_a_frame_at_its_bounds_crosses_the_link, setup_framed),
        cmocka_unit_test_setup(test_a_frame_at_its_bounds_crosses_the_link, setup_messages),
        cmocka_unit_test_setup(test_undecodable_payloads_are_counted, setup_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
