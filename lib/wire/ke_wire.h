/*
 * ke_wire.h — hand encoding of the tunnel's hot frame around an already
 * packed ke.v1.Message, so stored messages are sent without being
 * unpacked and repacked:
 *
 *   CloudFrame / EdgeFrame { message(2): SequencedMessage{ seq(1), message(2): bytes } }
 *
 * Both frame types carry SequencedMessage as field 2, so one encoder
 * serves both directions.
 */
#ifndef KE_WIRE_H
#define KE_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* ke_wire_sequenced_frame returns a malloc'd frame (caller frees) holding
 * SequencedMessage{seq, msg[len]} as field 2, and its length in *out_len;
 * NULL when out of memory. */
uint8_t *ke_wire_sequenced_frame(uint64_t seq, const uint8_t *msg, size_t len, size_t *out_len);

#endif
