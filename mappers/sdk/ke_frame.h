/*
 * ke_frame.h — framing of MapperFrames on a byte stream (a UART, a TCP
 * socket): one frame on the wire is
 *
 *     COBS( payload || CRC-16/CCITT-FALSE(payload), big-endian ) 0x00
 *
 * COBS removes every 0x00 from the encoded bytes, so 0x00 only ever ends a
 * frame and a receiver that lost sync (noise, a truncated frame, a restart
 * mid-frame) finds the next frame at the next 0x00. The CRC rejects what
 * noise makes of a frame; the payload (an encoded MapperFrame) is at most
 * KE_FRAME_MAX bytes and never empty.
 *
 * Part of the SDK core: no malloc, no OS calls; the decoder's buffer lives
 * in a caller-provided struct. Bytes go in one at a time (a UART interrupt
 * or a poll loop), frames come out whole.
 */
#ifndef KE_FRAME_H
#define KE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest payload: a MapperFrame at its api/mapper.options bounds
 * (ke_mapper_v1_MapperFrame_size, checked at compile time in ke_link.c). */
#define KE_FRAME_MAX 360
/* CRC-16 bytes after the payload. */
#define KE_FRAME_CRC_LEN 2
/* COBS adds one byte per started 254-byte block. */
#define KE_FRAME_COBS_MAX(n) ((n) + ((n) + 253) / 254)
/* Bytes of the largest encoded frame without / with its 0x00 delimiter. */
#define KE_FRAME_BODY_MAX KE_FRAME_COBS_MAX(KE_FRAME_MAX + KE_FRAME_CRC_LEN)
#define KE_FRAME_WIRE_MAX (KE_FRAME_BODY_MAX + 1)

/* Why the decoder dropped bytes (an index into ke_frame_decoder.rejected). */
enum {
    KE_FRAME_REJ_CRC = 0,  /* the CRC did not match */
    KE_FRAME_REJ_OVERSIZE, /* more than KE_FRAME_BODY_MAX bytes before a 0x00 */
    KE_FRAME_REJ_EMPTY,    /* a 0x00 right after a 0x00, or an empty payload */
    KE_FRAME_REJ_COBS,     /* not valid COBS, or shorter than the CRC */
    KE_FRAME_REJ_COUNT
};

/* ke_frame_decoder: the state of one receive direction. Initialise with
 * ke_frame_decoder_init; all fields other than the counters are private. */
typedef struct ke_frame_decoder {
    uint8_t buf[KE_FRAME_BODY_MAX]; /* encoded bytes of the frame being received */
    size_t len;                     /* bytes in buf */
    bool overflow;                  /* dropping bytes until the next 0x00 */
    uint32_t frames;                /* good frames delivered */
    uint32_t rejected[KE_FRAME_REJ_COUNT];
} ke_frame_decoder;

/* ke_crc16 returns CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no
 * reflection, no final xor; "123456789" gives 0x29B1) of p[0..n). */
uint16_t ke_crc16(const uint8_t *p, size_t n);

/* ke_frame_encode writes the frame of payload[0..len) (COBS, CRC and the
 * 0x00 delimiter) to out[0..cap) and its length to *out_len. len must be
 * 1..KE_FRAME_MAX; cap at least KE_FRAME_WIRE_MAX is always enough.
 * Returns 0, or -1 (bad length, or cap too small: nothing usable written).
 * payload may lie inside out at its very end (payload == out + cap - len,
 * cap >= KE_FRAME_WIRE_MAX): every byte is written behind the one being
 * read, so a sender needs one buffer, not two (ke_link_send does this). */
int ke_frame_encode(const uint8_t *payload, size_t len, uint8_t *out, size_t cap,
                    size_t *out_len);

/* ke_frame_decoder_init empties d and zeroes its counters. */
void ke_frame_decoder_init(ke_frame_decoder *d);

/* ke_frame_decoder_push feeds one received byte. Returns 1 when it completed
 * a good frame: *payload and *len then describe it, in d->buf, valid until
 * the next push. Returns 0 otherwise (more bytes needed, or a bad frame was
 * dropped and counted in d->rejected). */
int ke_frame_decoder_push(ke_frame_decoder *d, uint8_t byte, const uint8_t **payload,
                          size_t *len);

#endif
