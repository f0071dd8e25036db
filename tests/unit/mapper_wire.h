/*
 * mapper_wire.h — an in-memory wire for the mapper SDK tests: a pipe of
 * bytes (framed) or of whole messages, one per direction, as a
 * ke_transport. A test can drop chosen sends (drop_mask: bit k drops the
 * k-th send, counted from 0) or every send (drop_all), to play a lossy line.
 */
#ifndef MAPPER_WIRE_H
#define MAPPER_WIRE_H

#include <stdint.h>
#include <string.h>

#include "ke_link.h"

#define WIRE_CAP 65536
#define WIRE_MSGS 64

typedef struct wire {
    uint8_t buf[WIRE_CAP]; /* framed: stream bytes; messages: concatenated */
    size_t len, pos;
    size_t msg_len[WIRE_MSGS]; /* messages: lengths, FIFO */
    size_t msg_head, msg_n;
    uint64_t drop_mask;
    int drop_all;
    unsigned sends, dropped;
} wire;

/* one end: sends into out, receives from in */
typedef struct wire_end {
    wire *out, *in;
    ke_transport tr;
} wire_end;

static int wire_send(void *ctx, const uint8_t *b, size_t n)
{
    wire_end *e = ctx;
    wire *w = e->out;
    unsigned k = w->sends++;
    if (w->drop_all || (k < 64 && (w->drop_mask >> k) & 1)) {
        w->dropped++;
        return 0; /* lost on the line: the sender cannot tell */
    }
    if (w->len + n > WIRE_CAP || w->msg_n == WIRE_MSGS)
        return -1;
    memcpy(w->buf + w->len, b, n);
    w->len += n;
    w->msg_len[(w->msg_head + w->msg_n++) % WIRE_MSGS] = n;
    return 0;
}

static int wire_recv(void *ctx, uint8_t *b, size_t cap)
{
    wire_end *e = ctx;
    wire *w = e->in;
    if (w->msg_n == 0)
        return 0;
    size_t n;
    if (e->tr.framed) { /* any number of bytes: 7 at a time, to split frames */
        n = w->len - w->pos;
        if (n > 7)
            n = 7;
        if (n > cap)
            n = cap;
    } else {
        n = w->msg_len[w->msg_head];
        if (n > cap)
            return -1;
    }
    memcpy(b, w->buf + w->pos, n);
    w->pos += n;
    if (!e->tr.framed) {
        w->msg_head = (w->msg_head + 1) % WIRE_MSGS;
        w->msg_n--;
    }
    if (w->pos == w->len) { /* drained: start over */
        w->pos = w->len = 0;
        w->msg_n = 0;
        w->msg_head = 0;
    }
    return (int)n;
}

/* wire_pair connects a and b through w_ab (a → b) and w_ba (b → a). */
static void wire_pair(wire_end *a, wire_end *b, wire *w_ab, wire *w_ba, int framed)
{
    memset(w_ab, 0, sizeof(*w_ab));
    memset(w_ba, 0, sizeof(*w_ba));
    a->out = w_ab;
    a->in = w_ba;
    b->out = w_ba;
    b->in = w_ab;
    a->tr = (ke_transport){wire_send, wire_recv, a, framed != 0};
    b->tr = (ke_transport){wire_send, wire_recv, b, framed != 0};
}

#endif
