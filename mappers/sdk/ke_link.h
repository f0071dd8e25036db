/*
 * ke_link.h — the reliable mapper link: MapperFrames over a transport, with
 * acks and retransmission by MapperFrame.seq.
 *
 * Rules (mappers/README.md, "The link"):
 *   - every data frame (desired, reported, get, state) carries a seq, never
 *     0, that the sender increments per new frame; a retransmission carries
 *     the same seq;
 *   - the receiver answers each data frame with MapperFrame{seq 0, ack = seq}
 *     and delivers it once: a frame with the seq of the last delivered one,
 *     within retry_ms * (retries + 1) of it, is a duplicate (our ack was
 *     lost), acked again and not delivered; later it is new (the peer
 *     restarted its numbering, as edgecore does when it restarts);
 *   - one data frame is outstanding at a time (a window of 1): it is done
 *     when acked, or when the peer sends Refusal{seq} (done, not accepted:
 *     DeviceTwin's answer to a frame it will not apply), or after
 *     1 + retries transmissions without either (given up);
 *   - acks and refusals are not acked.
 *
 * The transport moves either a byte stream (framed: the link adds COBS and
 * CRC, ke_frame.h) or whole messages (MQTT: one message is one encoded
 * MapperFrame). Time comes from the caller (now_ms, a monotonic
 * millisecond clock that may wrap), so tests drive it.
 *
 * Part of the SDK core: no malloc, no OS calls; all state in ke_link.
 */
#ifndef KE_LINK_H
#define KE_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_frame.h"
#include "mapper.pb.h"

/* ke_transport: how the link moves bytes. Both calls must not block. */
typedef struct ke_transport {
    /* send writes buf[0..len) (framed: bytes of the stream; otherwise one
     * whole message). Returns 0, or negative when nothing was sent. */
    int (*send)(void *ctx, const uint8_t *buf, size_t len);
    /* recv reads up to cap bytes into buf (framed: any number of stream
     * bytes; otherwise one whole message, and a message longer than cap
     * is dropped and reported as negative). Returns the count, 0 when
     * nothing is waiting, or negative on error. */
    int (*recv)(void *ctx, uint8_t *buf, size_t cap);
    void *ctx;
    bool framed; /* true: a byte stream (UART, TCP); false: messages (MQTT) */
} ke_transport;

#define KE_LINK_RETRY_MS 1000 /* default wait for an ack before sending again */
#define KE_LINK_RETRIES 5     /* default retransmissions before giving up */
#define KE_LINK_RX_CHUNK 64   /* stream bytes read per recv call */
/* What one ke_link_poll reads at most, so input arriving faster than it is
 * handled cannot keep the caller's loop: stream bytes, or messages. */
#define KE_LINK_RX_BUDGET (4 * KE_FRAME_WIRE_MAX)
#define KE_LINK_RX_MSGS 16

/* How the outstanding frame ended (ke_link_done_fn). */
typedef enum {
    KE_LINK_ACKED = 0,
    KE_LINK_REFUSED, /* the peer sent Refusal{seq}: code and reason say why */
    KE_LINK_GAVE_UP, /* no answer after 1 + retries transmissions */
} ke_link_outcome;

/* ke_link_done_fn is called once per data frame sent, when it is done.
 * refusal is the peer's Refusal for KE_LINK_REFUSED, NULL otherwise. */
typedef void (*ke_link_done_fn)(void *ctx, uint32_t seq, ke_link_outcome outcome,
                                const ke_mapper_v1_Refusal *refusal);

typedef struct ke_link_stats {
    uint32_t sent;        /* data frames sent (first transmissions) */
    uint32_t retransmits; /* transmissions after the first */
    uint32_t acked, refused, gave_up;
    uint32_t delivered;    /* data frames handed to the caller */
    uint32_t duplicates;   /* data frames seen again: acked, not delivered */
    uint32_t stale;        /* acks/refusals of no outstanding frame */
    uint32_t undecodable;  /* payloads that were not a MapperFrame */
    uint32_t send_errors;  /* transport send failures */
    uint32_t recv_errors;  /* transport recv failures (e.g. an oversized message) */
} ke_link_stats;

/* ke_link: one end of a link. Fields are private except stats and dec
 * (its rejection counters). */
typedef struct ke_link {
    const ke_transport *tr;
    ke_link_done_fn done;
    void *done_ctx;
    uint32_t retry_ms;
    uint8_t retries;
    uint32_t next_seq;
    /* the outstanding data frame */
    bool busy;
    uint32_t out_seq;
    uint8_t out[KE_FRAME_WIRE_MAX]; /* as sent: framed or not */
    size_t out_len;
    uint32_t sent_at;
    uint8_t tries;
    /* receiving */
    bool have_last;
    uint32_t last_seq; /* seq of the last data frame delivered */
    uint32_t last_at;  /* when it was */
    ke_frame_decoder dec; /* framed: the decoder; messages: dec.buf holds one */
    uint8_t chunk[KE_LINK_RX_CHUNK];
    size_t chunk_len, chunk_pos;
    ke_link_stats stats;
} ke_link;

/* ke_link_init prepares l over tr (borrowed: it must outlive l). retry_ms
 * and retries of 0 take the defaults above. seq_start is the first seq
 * sent (0 is taken as 1): a device without memory across restarts should
 * pass something that differs per boot, so the peer's duplicate check does
 * not swallow its first frame. done (may be NULL) hears how each frame
 * ended. */
void ke_link_init(ke_link *l, const ke_transport *tr, uint32_t retry_ms, uint8_t retries,
                  uint32_t seq_start, ke_link_done_fn done, void *done_ctx);

/* ke_link_busy tells whether a data frame is outstanding. */
bool ke_link_busy(const ke_link *l);

/* ke_link_send sends f as the next data frame: it sets f->seq, encodes,
 * frames and sends it, and keeps it for retransmission. Returns 0; -1 when a
 * frame is outstanding (nothing done) or f does not encode; -2 when the
 * transport failed (the frame is outstanding all the same and is
 * retransmitted on time). *seq_out (may be NULL) gets the seq. */
int ke_link_send(ke_link *l, ke_mapper_v1_MapperFrame *f, uint32_t now_ms, uint32_t *seq_out);

/* ke_link_poll does the link's work at now_ms: retransmits or gives up on
 * the outstanding frame when it is time, reads what the transport has,
 * acks data frames and settles acks and refusals. It stops at the first
 * new data frame and returns 1 with it decoded in *in (call again until it
 * returns 0: more may be waiting). Returns 0 when there is nothing more to
 * read, or when this call read its budget (KE_LINK_RX_BUDGET bytes or
 * KE_LINK_RX_MSGS messages): the rest waits for the next call. */
int ke_link_poll(ke_link *l, uint32_t now_ms, ke_mapper_v1_MapperFrame *in);

/* ke_link_encode_frame encodes f with nanopb into buf[0..cap): the helper
 * the link and its tests share. Returns the length, or -1. */
long ke_link_encode_frame(const ke_mapper_v1_MapperFrame *f, uint8_t *buf, size_t cap);

/* ke_link_decode_frame decodes buf[0..len) into *f. Returns 0 or -1. */
int ke_link_decode_frame(const uint8_t *buf, size_t len, ke_mapper_v1_MapperFrame *f);

#endif
