/*
 * ke_wire.c — see ke_wire.h. Protobuf wire format: a field key is
 * (number << 3) | wire type; type 0 is a varint, type 2 is length-delimited.
 */
#include "ke_wire.h"

#include <stdlib.h>
#include <string.h>

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

uint8_t *ke_wire_sequenced_frame(uint64_t seq, const uint8_t *msg, size_t len, size_t *out_len)
{
    size_t inner = 1 + varint_len(seq) + 1 + varint_len(len) + len;
    size_t total = 1 + varint_len(inner) + inner;
    uint8_t *b = malloc(total), *p = b;
    if (!b)
        return NULL;
    *p++ = (2 << 3) | 2; /* frame.message */
    p += put_varint(p, inner);
    *p++ = (1 << 3) | 0; /* SequencedMessage.seq */
    p += put_varint(p, seq);
    *p++ = (2 << 3) | 2; /* SequencedMessage.message */
    p += put_varint(p, len);
    if (len)
        memcpy(p, msg, len);
    *out_len = total;
    return b;
}
