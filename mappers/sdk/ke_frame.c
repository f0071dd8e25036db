/*
 * ke_frame.c — COBS + CRC-16 framing (ke_frame.h). Bitwise CRC: no table,
 * so no 512 bytes of flash on a microcontroller for a few hundred bytes a
 * second.
 */
#include "ke_frame.h"

#include <string.h>

uint16_t ke_crc16(const uint8_t *p, size_t n)
{
    uint16_t crc = 0xFFFF;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint16_t)p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* cobs_put appends byte b of the source to the COBS output being written
 * at out[*o], with the current block's code byte at out[*code]. */
static int cobs_put(uint8_t b, uint8_t *out, size_t cap, size_t *o, size_t *code)
{
    if (*o - *code == 255) { /* a full block: 254 bytes and no 0x00 implied */
        out[*code] = 0xFF;
        if (*o >= cap)
            return -1;
        *code = (*o)++;
    }
    if (b == 0) { /* the 0x00 becomes the distance to the next code byte */
        out[*code] = (uint8_t)(*o - *code);
        if (*o >= cap)
            return -1;
        *code = (*o)++;
        return 0;
    }
    if (*o >= cap)
        return -1;
    out[(*o)++] = b;
    return 0;
}

int ke_frame_encode(const uint8_t *payload, size_t len, uint8_t *out, size_t cap,
                    size_t *out_len)
{
    if (!payload || !out || !out_len || len == 0 || len > KE_FRAME_MAX || cap < 2)
        return -1;
    uint16_t crc = ke_crc16(payload, len);
    uint8_t tail[KE_FRAME_CRC_LEN] = {(uint8_t)(crc >> 8), (uint8_t)crc};
    size_t code = 0, o = 1;
    for (size_t i = 0; i < len; i++)
        if (cobs_put(payload[i], out, cap, &o, &code) != 0)
            return -1;
    for (size_t i = 0; i < KE_FRAME_CRC_LEN; i++)
        if (cobs_put(tail[i], out, cap, &o, &code) != 0)
            return -1;
    out[code] = (uint8_t)(o - code);
    if (o >= cap)
        return -1;
    out[o++] = 0x00;
    *out_len = o;
    return 0;
}

void ke_frame_decoder_init(ke_frame_decoder *d)
{
    memset(d, 0, sizeof(*d));
}

/* cobs_decode decodes buf[0..len) in place (the output is never longer
 * than the input, and never ahead of it). Returns the decoded length, or
 * -1 when the codes do not fit the bytes or a 0x00 is inside. */
static long cobs_decode(uint8_t *buf, size_t len)
{
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = buf[i++];
        if (code == 0 || i - 1 + code > len)
            return -1;
        for (uint8_t k = 1; k < code; k++) {
            if (buf[i] == 0)
                return -1;
            buf[o++] = buf[i++];
        }
        /* a block shorter than 254 stands for a 0x00, except the last */
        if (code != 0xFF && i < len)
            buf[o++] = 0;
    }
    return (long)o;
}

/* frame_end judges the frame that a 0x00 ended. Returns 1 with the payload,
 * or 0 after counting why it was dropped. */
static int frame_end(ke_frame_decoder *d, const uint8_t **payload, size_t *len)
{
    size_t n = d->len;
    bool overflow = d->overflow;
    d->len = 0;
    d->overflow = false;
    if (overflow) {
        d->rejected[KE_FRAME_REJ_OVERSIZE]++;
        return 0;
    }
    if (n == 0) {
        d->rejected[KE_FRAME_REJ_EMPTY]++;
        return 0;
    }
    long m = cobs_decode(d->buf, n);
    if (m < KE_FRAME_CRC_LEN) {
        d->rejected[KE_FRAME_REJ_COBS]++;
        return 0;
    }
    size_t plen = (size_t)m - KE_FRAME_CRC_LEN;
    if (plen > KE_FRAME_MAX) {
        d->rejected[KE_FRAME_REJ_OVERSIZE]++;
        return 0;
    }
    uint16_t want = (uint16_t)((uint16_t)(d->buf[plen] << 8) | d->buf[plen + 1]);
    if (ke_crc16(d->buf, plen) != want) {
        d->rejected[KE_FRAME_REJ_CRC]++;
        return 0;
    }
    if (plen == 0) {
        d->rejected[KE_FRAME_REJ_EMPTY]++;
        return 0;
    }
    d->frames++;
    *payload = d->buf;
    *len = plen;
    return 1;
}

int ke_frame_decoder_push(ke_frame_decoder *d, uint8_t byte, const uint8_t **payload,
                          size_t *len)
{
    if (byte == 0x00)
        return frame_end(d, payload, len);
    if (d->overflow)
        return 0;
    if (d->len == sizeof(d->buf)) {
        d->overflow = true; /* counted once, at the 0x00 that ends it */
        return 0;
    }
    d->buf[d->len++] = byte;
    return 0;
}
