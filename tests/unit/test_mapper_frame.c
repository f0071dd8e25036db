/*
 * test_mapper_frame.c — the mapper SDK's framing (mappers/sdk/ke_frame.h)
 * and nanopb codec: every MapperFrame body at its api/mapper.options bounds
 * through nanopb encode → frame encode → byte-by-byte decode → nanopb
 * decode; and the decoder under corruption: byte flips, truncation,
 * garbage between frames, oversized and zero-length frames, random noise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ke_frame.h"
#include "ke_link.h"
#include "ke_mapper.h"

/* What a feed delivered: the last payload and how many. */
typedef struct got {
    uint8_t last[KE_FRAME_MAX];
    size_t last_len;
    int frames;
} got;

static void feed(ke_frame_decoder *d, const uint8_t *b, size_t n, got *g)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p;
        size_t len;
        if (ke_frame_decoder_push(d, b[i], &p, &len) == 1) {
            assert_true(len >= 1 && len <= KE_FRAME_MAX);
            memcpy(g->last, p, len);
            g->last_len = len;
            g->frames++;
        }
    }
}

static uint32_t rng = 12345;
static uint32_t rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

static void fill_text(char *s, size_t n, char c)
{
    memset(s, c, n);
    s[n] = '\0';
}

static void fill_props(ke_mapper_v1_PropertyValue *pv, pb_size_t *count)
{
    *count = KE_MAPPER_FRAME_PROPS;
    for (int i = 0; i < KE_MAPPER_FRAME_PROPS; i++) {
        fill_text(pv[i].name, KE_MAPPER_TEXT_MAX, (char)('a' + i));
        fill_text(pv[i].value, KE_MAPPER_TEXT_MAX, (char)('A' + i));
        pv[i].timestamp_ms = i % 2 ? INT64_MAX : INT64_MIN;
    }
}

/* round_trip sends f through nanopb and the framing and checks that what
 * comes out encodes to the same bytes. */
static void round_trip(const ke_mapper_v1_MapperFrame *f, ke_mapper_v1_MapperFrame *out)
{
    uint8_t pb[KE_FRAME_MAX], wire[KE_FRAME_WIRE_MAX], again[KE_FRAME_MAX];
    long n = ke_link_encode_frame(f, pb, sizeof(pb));
    assert_true(n > 0 && n <= KE_FRAME_MAX);
    size_t wl;
    assert_int_equal(ke_frame_encode(pb, (size_t)n, wire, sizeof(wire), &wl), 0);
    assert_true(wl <= KE_FRAME_WIRE_MAX);
    assert_null(memchr(wire, 0, wl - 1));
    assert_int_equal(wire[wl - 1], 0);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    got g = {0};
    feed(&d, wire, wl, &g);
    assert_int_equal(g.frames, 1);
    assert_int_equal(g.last_len, (size_t)n);
    assert_memory_equal(g.last, pb, (size_t)n);
    memset(out, 0, sizeof(*out));
    assert_int_equal(ke_link_decode_frame(g.last, g.last_len, out), 0);
    long m = ke_link_encode_frame(out, again, sizeof(again));
    assert_int_equal(m, n);
    assert_memory_equal(again, pb, (size_t)n);
}

static void test_crc16_is_ccitt_false(void **state)
{
    (void)state;
    assert_int_equal(ke_crc16((const uint8_t *)"123456789", 9), 0x29B1);
    assert_int_equal(ke_crc16(NULL, 0), 0xFFFF);
}

static void test_every_body_round_trips_at_its_bounds(void **state)
{
    (void)state;
    static ke_mapper_v1_MapperFrame f, out;
    /* desired and reported: a device name and KE_MAPPER_FRAME_PROPS properties
     * at KE_MAPPER_TEXT_MAX bytes each (mapper.options) */
    memset(&f, 0, sizeof(f));
    f.seq = UINT32_MAX;
    f.which_body = ke_mapper_v1_MapperFrame_desired_tag;
    fill_text(f.body.desired.device, KE_MAPPER_TEXT_MAX, 'd');
    fill_props(f.body.desired.properties, &f.body.desired.properties_count);
    round_trip(&f, &out);
    assert_int_equal(out.which_body, ke_mapper_v1_MapperFrame_desired_tag);
    assert_int_equal(out.body.desired.properties_count, KE_MAPPER_FRAME_PROPS);
    assert_string_equal(out.body.desired.properties[KE_MAPPER_FRAME_PROPS - 1].value,
                        f.body.desired.properties[KE_MAPPER_FRAME_PROPS - 1].value);
    assert_true(out.body.desired.properties[1].timestamp_ms == INT64_MAX);

    memset(&f, 0, sizeof(f));
    f.seq = 1;
    f.which_body = ke_mapper_v1_MapperFrame_reported_tag;
    fill_text(f.body.reported.device, KE_MAPPER_TEXT_MAX, 'r');
    fill_props(f.body.reported.properties, &f.body.reported.properties_count);
    round_trip(&f, &out);
    assert_int_equal(out.which_body, ke_mapper_v1_MapperFrame_reported_tag);
    assert_string_equal(out.body.reported.device, f.body.reported.device);
    assert_int_equal(out.body.reported.properties_count, KE_MAPPER_FRAME_PROPS);

    memset(&f, 0, sizeof(f));
    f.seq = 2;
    f.which_body = ke_mapper_v1_MapperFrame_get_tag;
    fill_text(f.body.get.device, KE_MAPPER_TEXT_MAX, 'g');
    round_trip(&f, &out);
    assert_string_equal(out.body.get.device, f.body.get.device);

    memset(&f, 0, sizeof(f));
    f.seq = 3;
    f.which_body = ke_mapper_v1_MapperFrame_state_tag;
    fill_text(f.body.state.device, KE_MAPPER_TEXT_MAX, 's');
    f.body.state.state = ke_mapper_v1_DeviceState_DEVICE_STATE_OFFLINE;
    round_trip(&f, &out);
    assert_int_equal(out.body.state.state, ke_mapper_v1_DeviceState_DEVICE_STATE_OFFLINE);

    memset(&f, 0, sizeof(f));
    f.seq = 0;
    f.which_body = ke_mapper_v1_MapperFrame_ack_tag;
    f.body.ack = UINT32_MAX;
    round_trip(&f, &out);
    assert_int_equal(out.which_body, ke_mapper_v1_MapperFrame_ack_tag);
    assert_int_equal(out.body.ack, UINT32_MAX);

    memset(&f, 0, sizeof(f));
    f.seq = UINT32_MAX;
    f.which_body = ke_mapper_v1_MapperFrame_refused_tag;
    f.body.refused.seq = UINT32_MAX;
    f.body.refused.code = UINT32_MAX;
    fill_text(f.body.refused.reason, sizeof(f.body.refused.reason) - 1, 'x');
    round_trip(&f, &out);
    assert_int_equal(out.body.refused.code, UINT32_MAX);
    assert_string_equal(out.body.refused.reason, f.body.refused.reason);
}

static void test_a_value_past_its_bound_does_not_encode(void **state)
{
    (void)state;
    /* nanopb refuses rather than truncates a string with no NUL in bound */
    static ke_mapper_v1_MapperFrame f;
    uint8_t pb[KE_FRAME_MAX];
    memset(&f, 0, sizeof(f));
    f.which_body = ke_mapper_v1_MapperFrame_get_tag;
    memset(f.body.get.device, 'z', sizeof(f.body.get.device)); /* no NUL */
    assert_true(ke_link_encode_frame(&f, pb, sizeof(pb)) < 0);
}

static void test_payloads_of_every_shape_round_trip(void **state)
{
    (void)state;
    static uint8_t p[KE_FRAME_MAX], wire[KE_FRAME_WIRE_MAX];
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    size_t lens[] = {1, 2, 253, 254, 255, KE_FRAME_MAX - 1, KE_FRAME_MAX};
    for (int shape = 0; shape < 4; shape++) {
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
            size_t n = lens[k];
            for (size_t i = 0; i < n; i++)
                p[i] = shape == 0 ? 0 : shape == 1 ? 0xFF : shape == 2 ? (uint8_t)rnd() : (uint8_t)(i % 255 ? 1 : 0);
            size_t wl;
            assert_int_equal(ke_frame_encode(p, n, wire, sizeof(wire), &wl), 0);
            assert_null(memchr(wire, 0, wl - 1));
            got g = {0};
            feed(&d, wire, wl, &g);
            assert_int_equal(g.frames, 1);
            assert_int_equal(g.last_len, n);
            assert_memory_equal(g.last, p, n);
        }
    }
    /* bad arguments and a short buffer */
    size_t wl;
    assert_int_equal(ke_frame_encode(p, 0, wire, sizeof(wire), &wl), -1);
    assert_int_equal(ke_frame_encode(p, KE_FRAME_MAX + 1, wire, sizeof(wire), &wl), -1);
    assert_int_equal(ke_frame_encode(p, 100, wire, 50, &wl), -1);
    assert_int_equal(d.rejected[KE_FRAME_REJ_CRC] + d.rejected[KE_FRAME_REJ_COBS] +
                         d.rejected[KE_FRAME_REJ_EMPTY] + d.rejected[KE_FRAME_REJ_OVERSIZE],
                     0);
}

/* a_frame makes the wire bytes of a small ReportedUpdate. */
static size_t a_frame(uint32_t seq, uint8_t *wire, uint8_t *pb, size_t *pb_len)
{
    static ke_mapper_v1_MapperFrame f;
    memset(&f, 0, sizeof(f));
    f.seq = seq;
    f.which_body = ke_mapper_v1_MapperFrame_reported_tag;
    strcpy(f.body.reported.device, "sensor-1");
    f.body.reported.properties_count = 1;
    strcpy(f.body.reported.properties[0].name, "temperature");
    strcpy(f.body.reported.properties[0].value, "21.5");
    long n = ke_link_encode_frame(&f, pb, KE_FRAME_MAX);
    assert_true(n > 0);
    *pb_len = (size_t)n;
    size_t wl;
    assert_int_equal(ke_frame_encode(pb, (size_t)n, wire, KE_FRAME_WIRE_MAX, &wl), 0);
    return wl;
}

static void test_every_byte_flip_is_rejected_and_the_next_frame_decodes(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX], bad[KE_FRAME_WIRE_MAX], next[KE_FRAME_WIRE_MAX];
    uint8_t pb[KE_FRAME_MAX], pb2[KE_FRAME_MAX];
    size_t pl, pl2;
    size_t gl = a_frame(7, good, pb, &pl);
    size_t nl = a_frame(8, next, pb2, &pl2);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    unsigned cases = 0;
    for (size_t i = 0; i + 1 < gl; i++) { /* every byte but the delimiter */
        for (unsigned v = 0; v < 256; v++) {
            if (v == good[i])
                continue;
            memcpy(bad, good, gl);
            bad[i] = (uint8_t)v;
            got g = {0};
            feed(&d, bad, gl, &g);
            assert_int_equal(g.frames, 0);
            feed(&d, next, nl, &g);
            assert_int_equal(g.frames, 1);
            assert_int_equal(g.last_len, pl2);
            assert_memory_equal(g.last, pb2, pl2);
            cases++;
        }
    }
    assert_int_equal(cases, (gl - 1) * 255);
    assert_true(d.rejected[KE_FRAME_REJ_CRC] > 0);
    assert_int_equal(d.frames, cases);
}

static void test_truncated_frames_are_rejected(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX], cut[KE_FRAME_WIRE_MAX];
    uint8_t pb[KE_FRAME_MAX];
    size_t pl;
    size_t gl = a_frame(9, good, pb, &pl);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    for (size_t keep = 1; keep + 1 < gl; keep++) {
        memcpy(cut, good, keep);
        cut[keep] = 0; /* the line went idle, or the sender restarted */
        got g = {0};
        feed(&d, cut, keep + 1, &g);
        assert_int_equal(g.frames, 0);
        feed(&d, good, gl, &g);
        assert_int_equal(g.frames, 1);
        assert_memory_equal(g.last, pb, pl);
    }
    /* a frame cut at its start is simply a frame with garbage in front */
    assert_int_equal(d.rejected[KE_FRAME_REJ_CRC] + d.rejected[KE_FRAME_REJ_COBS], gl - 2);
}

static void test_garbage_between_frames_is_skipped(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX], noise[300];
    uint8_t pb[KE_FRAME_MAX];
    size_t pl;
    size_t gl = a_frame(10, good, pb, &pl);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    got g = {0};
    for (int round = 0; round < 50; round++) {
        size_t n = 1 + rnd() % sizeof(noise);
        for (size_t i = 0; i < n; i++)
            noise[i] = (uint8_t)(1 + rnd() % 255);
        noise[n - 1] = 0; /* the garbage ends where the line goes idle */
        feed(&d, noise, n, &g);
        feed(&d, good, gl, &g);
        assert_int_equal(g.frames, round + 1);
        assert_memory_equal(g.last, pb, pl);
    }
    assert_int_equal(d.frames, 50);
}

static void test_oversized_frames_are_rejected(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX], big[KE_FRAME_BODY_MAX + 100];
    uint8_t pb[KE_FRAME_MAX];
    size_t pl;
    size_t gl = a_frame(11, good, pb, &pl);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    /* more encoded bytes than any frame has */
    memset(big, 0x42, sizeof(big));
    big[sizeof(big) - 1] = 0;
    got g = {0};
    feed(&d, big, sizeof(big), &g);
    assert_int_equal(g.frames, 0);
    assert_int_equal(d.rejected[KE_FRAME_REJ_OVERSIZE], 1);
    feed(&d, good, gl, &g);
    assert_int_equal(g.frames, 1);
    /* valid COBS and CRC around KE_FRAME_MAX + 1 payload bytes of zeros:
     * short on the wire (codes of 0x01), too long decoded */
    static uint8_t p[KE_FRAME_MAX + 1 + KE_FRAME_CRC_LEN];
    memset(p, 0, sizeof(p));
    uint16_t crc = ke_crc16(p, KE_FRAME_MAX + 1);
    p[KE_FRAME_MAX + 1] = (uint8_t)(crc >> 8);
    p[KE_FRAME_MAX + 2] = (uint8_t)crc;
    size_t o = 0;
    static uint8_t w[KE_FRAME_WIRE_MAX + 10];
    for (size_t i = 0; i < KE_FRAME_MAX + 1; i++)
        w[o++] = 0x01; /* each zero is an empty block */
    w[o++] = 3;        /* the last block: the two CRC bytes (non-zero here) */
    assert_true(p[KE_FRAME_MAX + 1] != 0 && p[KE_FRAME_MAX + 2] != 0);
    w[o++] = p[KE_FRAME_MAX + 1];
    w[o++] = p[KE_FRAME_MAX + 2];
    w[o++] = 0;
    assert_true(o - 1 <= KE_FRAME_BODY_MAX);
    feed(&d, w, o, &g);
    assert_int_equal(g.frames, 1);
    assert_int_equal(d.rejected[KE_FRAME_REJ_OVERSIZE], 2);
    feed(&d, good, gl, &g);
    assert_int_equal(g.frames, 2);
}

static void test_zero_length_frames_are_rejected(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX];
    uint8_t pb[KE_FRAME_MAX];
    size_t pl;
    size_t gl = a_frame(12, good, pb, &pl);
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    got g = {0};
    const uint8_t zeros[4] = {0, 0, 0, 0};
    feed(&d, zeros, sizeof(zeros), &g);
    assert_int_equal(d.rejected[KE_FRAME_REJ_EMPTY], 4);
    /* an empty payload with a right CRC (0xFFFF): COBS 03 FF FF 00 */
    const uint8_t empty[4] = {0x03, 0xFF, 0xFF, 0x00};
    feed(&d, empty, sizeof(empty), &g);
    assert_int_equal(d.rejected[KE_FRAME_REJ_EMPTY], 5);
    /* a lone byte: too short for the CRC */
    const uint8_t one[2] = {0x02, 0x00};
    feed(&d, one, sizeof(one), &g);
    feed(&d, good, gl, &g);
    assert_int_equal(g.frames, 1);
    assert_memory_equal(g.last, pb, pl);
}

static void test_noise_never_crashes_and_good_frames_after_it_decode(void **state)
{
    (void)state;
    static uint8_t good[KE_FRAME_WIRE_MAX], noise[4096];
    uint8_t pb[KE_FRAME_MAX];
    size_t pl;
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    int want = 0;
    got g = {0};
    for (int round = 0; round < 2000; round++) {
        size_t n = rnd() % sizeof(noise);
        int zeros = rnd() % 4; /* 0: no 0x00 inside, else some */
        for (size_t i = 0; i < n; i++)
            noise[i] = zeros ? (uint8_t)rnd() : (uint8_t)(1 + rnd() % 255);
        feed(&d, noise, n, &g);
        uint8_t idle = 0; /* the noise ends when the line resyncs */
        feed(&d, &idle, 1, &g);
        int before = g.frames;
        size_t gl = a_frame((uint32_t)round, good, pb, &pl);
        feed(&d, good, gl, &g);
        /* noise may itself hold a frame only with a 1 in 65536 CRC match;
         * the good frame always arrives, and last */
        assert_true(g.frames >= before + 1);
        assert_int_equal(g.last_len, pl);
        assert_memory_equal(g.last, pb, pl);
        want++;
    }
    assert_true(d.frames >= (uint32_t)want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_is_ccitt_false),
        cmocka_unit_test(test_every_body_round_trips_at_its_bounds),
        cmocka_unit_test(test_a_value_past_its_bound_does_not_encode),
        cmocka_unit_test(test_payloads_of_every_shape_round_trip),
        cmocka_unit_test(test_every_byte_flip_is_rejected_and_the_next_frame_decodes),
        cmocka_unit_test(test_truncated_frames_are_rejected),
        cmocka_unit_test(test_garbage_between_frames_is_skipped),
        cmocka_unit_test(test_oversized_frames_are_rejected),
        cmocka_unit_test(test_zero_length_frames_are_rejected),
        cmocka_unit_test(test_noise_never_crashes_and_good_frames_after_it_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
