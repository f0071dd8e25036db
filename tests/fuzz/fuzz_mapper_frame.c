/*
 * fuzz_mapper_frame.c — libFuzzer harness for the mapper SDK's byte-stream
 * side (mappers/sdk): what arrives on a UART from a noisy wire or a hostile
 * bridge.
 *
 * 1. The bytes go one by one through ke_frame_decoder. Contracts checked
 *    (abort when broken): a delivered payload is 1..KE_FRAME_MAX bytes;
 *    framing it again and decoding that gives the same payload; a payload
 *    nanopb decodes encodes again within KE_FRAME_MAX.
 * 2. The same bytes are what a ke_mapper's framed transport receives (in
 *    chunks of varying size, the clock moving on): the whole SDK (link
 *    acks, duplicates, desired values through write(), reports) runs on
 *    them; the counters must stay consistent.
 * Seeds: tests/fuzz/corpus/mapper_frame/ (framed MapperFrames, noise).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_frame.h"
#include "ke_link.h"
#include "ke_mapper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_payload(const uint8_t *p, size_t len)
{
    static uint8_t wire[KE_FRAME_WIRE_MAX], pb[KE_FRAME_MAX];
    static ke_frame_decoder d2;
    static ke_mapper_v1_MapperFrame f;
    if (len == 0 || len > KE_FRAME_MAX)
        abort();
    size_t wl;
    if (ke_frame_encode(p, len, wire, sizeof(wire), &wl) != 0)
        abort();
    ke_frame_decoder_init(&d2);
    int got = 0;
    for (size_t i = 0; i < wl; i++) {
        const uint8_t *q;
        size_t ql;
        if (ke_frame_decoder_push(&d2, wire[i], &q, &ql) == 1) {
            if (ql != len || memcmp(q, p, len) != 0 || i != wl - 1)
                abort();
            got++;
        }
    }
    if (got != 1)
        abort();
    memset(&f, 0, sizeof(f));
    if (ke_link_decode_frame(p, len, &f) == 0 && ke_link_encode_frame(&f, pb, sizeof(pb)) < 0)
        abort();
}

/* the fuzz input as a framed transport, served in chunks */
typedef struct feed {
    const uint8_t *data;
    size_t size, pos;
    unsigned sent;
} feed;

static int feed_send(void *ctx, const uint8_t *buf, size_t len)
{
    feed *f = ctx;
    if (!buf || len == 0 || len > KE_FRAME_WIRE_MAX || buf[len - 1] != 0)
        abort(); /* the SDK sends whole frames */
    f->sent++;
    return 0;
}

static int feed_recv(void *ctx, uint8_t *buf, size_t cap)
{
    feed *f = ctx;
    size_t n = f->size - f->pos;
    size_t chunk = 1 + (f->pos * 7) % 23; /* varying sizes */
    if (n > chunk)
        n = chunk;
    if (n > cap)
        n = cap;
    memcpy(buf, f->data + f->pos, n);
    f->pos += n;
    return (int)n;
}

static const ke_prop props[] = {
    {"temperature", KE_PROP_FLOAT, KE_PROP_READ, 1000, 0},
    {"setpoint", KE_PROP_INT, KE_PROP_READWRITE, 0, 50},
};

static int rd(void *user, const ke_prop *p, char *value, size_t size)
{
    (void)user;
    snprintf(value, size, "%s", p == &props[0] ? "21.5" : "20");
    return 0;
}

static int wr(void *user, const ke_prop *p, const char *value)
{
    unsigned *writes = user;
    if (p != &props[1] || strlen(value) > KE_MAPPER_TEXT_MAX)
        abort(); /* a read-only property is never written; values are bounded */
    (*writes)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    uint32_t delivered = 0;
    for (size_t i = 0; i < size; i++) {
        const uint8_t *p;
        size_t len;
        if (ke_frame_decoder_push(&d, data[i], &p, &len) == 1) {
            delivered++;
            check_payload(p, len);
        }
    }
    if (d.frames != delivered)
        abort();

    static ke_mapper m;
    feed fd = {data, size, 0, 0};
    unsigned writes = 0;
    ke_transport tr = {feed_send, feed_recv, &fd, true};
    ke_mapper_config cfg = {"dev", props, 2, rd, wr, &writes, &tr, 100, 2, 1};
    if (ke_mapper_start(&m, &cfg, 0) != 0)
        abort();
    uint32_t now = 0;
    for (int i = 0; i < 64 && (fd.pos < size || i < 8); i++) {
        ke_mapper_poll(&m, now);
        now += 37;
    }
    if (writes != m.stats.writes + m.stats.writes_failed)
        abort();
    if (m.link.stats.delivered + m.link.stats.duplicates > m.link.dec.frames)
        abort();
    return 0;
}
