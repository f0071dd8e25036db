/*
 * ke_link.c — acks, retransmission and duplicate suppression over a
 * transport (ke_link.h). One function per kind of incoming frame
 * (link_on_ack, link_on_refused, link_on_data) behind link_on_payload.
 */
#include "ke_link.h"

#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

/* The payload bound must hold the largest MapperFrame api/mapper.options
 * allows, or a frame at its bounds could not be sent. */
_Static_assert(ke_mapper_v1_MapperFrame_size <= KE_FRAME_MAX,
               "KE_FRAME_MAX is smaller than a MapperFrame at its mapper.options bounds");

/* An ack frame is tiny: seq 0 (one tag byte) and ack (tag + varint). */
#define LINK_ACK_MAX 16

long ke_link_encode_frame(const ke_mapper_v1_MapperFrame *f, uint8_t *buf, size_t cap)
{
    pb_ostream_t os = pb_ostream_from_buffer(buf, cap);
    if (!pb_encode(&os, ke_mapper_v1_MapperFrame_fields, f))
        return -1;
    return (long)os.bytes_written;
}

int ke_link_decode_frame(const uint8_t *buf, size_t len, ke_mapper_v1_MapperFrame *f)
{
    pb_istream_t is = pb_istream_from_buffer(buf, len);
    return pb_decode(&is, ke_mapper_v1_MapperFrame_fields, f) ? 0 : -1;
}

void ke_link_init(ke_link *l, const ke_transport *tr, uint32_t retry_ms, uint8_t retries,
                  uint32_t seq_start, ke_link_done_fn done, void *done_ctx)
{
    memset(l, 0, sizeof(*l));
    l->tr = tr;
    l->retry_ms = retry_ms ? retry_ms : KE_LINK_RETRY_MS;
    l->retries = retries ? retries : KE_LINK_RETRIES;
    l->next_seq = seq_start ? seq_start : 1;
    l->done = done;
    l->done_ctx = done_ctx;
    ke_frame_decoder_init(&l->dec);
}

bool ke_link_busy(const ke_link *l)
{
    return l->busy;
}

/* transmit sends the outstanding frame (again) at now. */
static int transmit(ke_link *l, uint32_t now)
{
    l->sent_at = now;
    l->tries++;
    if (l->tr->send(l->tr->ctx, l->out, l->out_len) != 0) {
        l->stats.send_errors++;
        return -2;
    }
    return 0;
}

/* wire puts payload[0..n) into out[0..cap) as the transport wants it. */
static int wire(const ke_link *l, const uint8_t *payload, size_t n, uint8_t *out, size_t cap,
                size_t *out_len)
{
    if (l->tr->framed)
        return ke_frame_encode(payload, n, out, cap, out_len);
    if (n > cap)
        return -1;
    memmove(out, payload, n);
    *out_len = n;
    return 0;
}

int ke_link_send(ke_link *l, ke_mapper_v1_MapperFrame *f, uint32_t now_ms, uint32_t *seq_out)
{
    if (l->busy)
        return -1;
    f->seq = l->next_seq;
    /* The payload is encoded into out itself and framed in place, so the
     * link holds one buffer of KE_FRAME_WIRE_MAX bytes, not two: nanopb
     * writes it at the tail, it moves to the very end, and ke_frame_encode
     * writes from the front, always behind the byte it reads. */
    uint8_t *tail = l->out + (sizeof(l->out) - KE_FRAME_MAX);
    long n = ke_link_encode_frame(f, tail, KE_FRAME_MAX);
    if (n <= 0)
        return -1;
    size_t plen = (size_t)n;
    if (l->tr->framed) {
        uint8_t *src = l->out + sizeof(l->out) - plen;
        memmove(src, tail, plen);
        if (ke_frame_encode(src, plen, l->out, sizeof(l->out), &l->out_len) != 0)
            return -1;
    } else {
        memmove(l->out, tail, plen);
        l->out_len = plen;
    }
    l->out_seq = f->seq;
    l->next_seq = l->next_seq + 1 ? l->next_seq + 1 : 1;
    l->busy = true;
    l->tries = 0;
    l->stats.sent++;
    if (seq_out)
        *seq_out = f->seq;
    return transmit(l, now_ms);
}

/* finish ends the outstanding frame with outcome. */
static void finish(ke_link *l, ke_link_outcome outcome, const ke_mapper_v1_Refusal *r)
{
    l->busy = false;
    if (outcome == KE_LINK_ACKED)
        l->stats.acked++;
    else if (outcome == KE_LINK_REFUSED)
        l->stats.refused++;
    else
        l->stats.gave_up++;
    if (l->done)
        l->done(l->done_ctx, l->out_seq, outcome, r);
}

static void send_ack(ke_link *l, uint32_t seq)
{
    ke_mapper_v1_MapperFrame a = ke_mapper_v1_MapperFrame_init_zero;
    uint8_t payload[LINK_ACK_MAX], out[KE_FRAME_COBS_MAX(LINK_ACK_MAX + KE_FRAME_CRC_LEN) + 1];
    size_t len;
    a.which_body = ke_mapper_v1_MapperFrame_ack_tag;
    a.body.ack = seq;
    long n = ke_link_encode_frame(&a, payload, sizeof(payload));
    if (n <= 0 || wire(l, payload, (size_t)n, out, sizeof(out), &len) != 0 ||
        l->tr->send(l->tr->ctx, out, len) != 0)
        l->stats.send_errors++;
}

static void link_on_ack(ke_link *l, uint32_t seq)
{
    if (l->busy && seq == l->out_seq)
        finish(l, KE_LINK_ACKED, NULL);
    else
        l->stats.stale++;
}

static void link_on_refused(ke_link *l, const ke_mapper_v1_Refusal *r)
{
    if (l->busy && r->seq == l->out_seq)
        finish(l, KE_LINK_REFUSED, r);
    else
        l->stats.stale++;
}

/* link_on_data acks a data frame; returns 1 when it is new. A repeat of
 * the last seq is a duplicate only within the time a sender retransmits
 * (the link's own retry budget stands for the peer's): later, it is a peer
 * that restarted its numbering, and its frame is new. */
static int link_on_data(ke_link *l, uint32_t seq, uint32_t now)
{
    send_ack(l, seq);
    uint32_t window = l->retry_ms * ((uint32_t)l->retries + 1);
    if (l->have_last && seq == l->last_seq && (uint32_t)(now - l->last_at) <= window) {
        l->stats.duplicates++;
        return 0;
    }
    l->have_last = true;
    l->last_seq = seq;
    l->last_at = now;
    l->stats.delivered++;
    return 1;
}

/* link_on_payload handles one received payload; returns 1 when it
 * delivered a data frame into *in. */
static int link_on_payload(ke_link *l, const uint8_t *p, size_t n, ke_mapper_v1_MapperFrame *in,
                           uint32_t now)
{
    if (ke_link_decode_frame(p, n, in) != 0) {
        l->stats.undecodable++;
        return 0;
    }
    switch (in->which_body) {
    case ke_mapper_v1_MapperFrame_ack_tag:
        link_on_ack(l, in->body.ack);
        return 0;
    case ke_mapper_v1_MapperFrame_refused_tag:
        link_on_refused(l, &in->body.refused);
        return 0;
    case ke_mapper_v1_MapperFrame_desired_tag:
    case ke_mapper_v1_MapperFrame_reported_tag:
    case ke_mapper_v1_MapperFrame_get_tag:
    case ke_mapper_v1_MapperFrame_state_tag:
        return link_on_data(l, in->seq, now);
    default: /* no body: nothing to ack or deliver */
        l->stats.undecodable++;
        return 0;
    }
}

/* timers retransmits or gives up on the outstanding frame. */
static void timers(ke_link *l, uint32_t now)
{
    if (!l->busy || (int32_t)(now - l->sent_at) < (int32_t)l->retry_ms)
        return;
    if (l->tries > l->retries) {
        finish(l, KE_LINK_GAVE_UP, NULL);
        return;
    }
    l->stats.retransmits++;
    (void)transmit(l, now); /* a failure is counted; the next timeout tries again */
}

/* poll_stream reads stream bytes through the decoder, at most
 * KE_LINK_RX_BUDGET bytes a call so a babbling line cannot hold the loop. */
static int poll_stream(ke_link *l, ke_mapper_v1_MapperFrame *in, uint32_t now)
{
    size_t budget = KE_LINK_RX_BUDGET;
    for (;;) {
        if (l->chunk_pos == l->chunk_len) {
            if (budget == 0)
                return 0;
            int n = l->tr->recv(l->tr->ctx, l->chunk, sizeof(l->chunk));
            if (n < 0)
                l->stats.recv_errors++;
            if (n <= 0)
                return 0;
            l->chunk_len = (size_t)n > sizeof(l->chunk) ? sizeof(l->chunk) : (size_t)n;
            l->chunk_pos = 0;
            budget = budget > l->chunk_len ? budget - l->chunk_len : 0;
        }
        while (l->chunk_pos < l->chunk_len) {
            const uint8_t *p;
            size_t len;
            if (ke_frame_decoder_push(&l->dec, l->chunk[l->chunk_pos++], &p, &len) == 1 &&
                link_on_payload(l, p, len, in, now) == 1)
                return 1;
        }
    }
}

/* poll_messages reads whole messages, at most KE_LINK_RX_MSGS a call. */
static int poll_messages(ke_link *l, ke_mapper_v1_MapperFrame *in, uint32_t now)
{
    for (int i = 0; i < KE_LINK_RX_MSGS; i++) {
        int n = l->tr->recv(l->tr->ctx, l->dec.buf, KE_FRAME_MAX);
        if (n < 0)
            l->stats.recv_errors++; /* the next poll reads on */
        if (n <= 0)
            return 0;
        if ((size_t)n > KE_FRAME_MAX) {
            l->stats.recv_errors++;
            continue;
        }
        if (link_on_payload(l, l->dec.buf, (size_t)n, in, now) == 1)
            return 1;
    }
    return 0;
}

int ke_link_poll(ke_link *l, uint32_t now_ms, ke_mapper_v1_MapperFrame *in)
{
    int rc = l->tr->framed ? poll_stream(l, in, now_ms) : poll_messages(l, in, now_ms);
    timers(l, now_ms);
    return rc;
}
