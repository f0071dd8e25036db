/*
 * rx_ring.h — the receive ring between a UART's interrupt (the only
 * producer) and board_uart_read (the only consumer). Head and tail count
 * bytes forever and are masked on use, so full and empty differ without a
 * spare slot; each is written by one side only, so no lock is needed on a
 * single core.
 */
#ifndef KE_RX_RING_H
#define KE_RX_RING_H

#include <stddef.h>
#include <stdint.h>

#include "board.h"

_Static_assert((BOARD_UART_RX_RING & (BOARD_UART_RX_RING - 1u)) == 0,
               "BOARD_UART_RX_RING must be a power of two");

struct rx_ring {
  volatile uint32_t head; /* written by the interrupt */
  volatile uint32_t tail; /* written by board_uart_read */
  uint8_t buf[BOARD_UART_RX_RING];
};

static inline int rx_ring_full(const struct rx_ring *r)
{
  return r->head - r->tail == BOARD_UART_RX_RING;
}

/* rx_ring_put: interrupt side; the caller checked rx_ring_full. */
static inline void rx_ring_put(struct rx_ring *r, uint8_t b)
{
  r->buf[r->head & (BOARD_UART_RX_RING - 1u)] = b;
  r->head = r->head + 1u;
}

/* rx_ring_take: reader side; at most n bytes, returns how many. */
static inline size_t rx_ring_take(struct rx_ring *r, uint8_t *out, size_t n)
{
  size_t got = 0;
  uint32_t tail = r->tail;
  const uint32_t head = r->head;
  while (got < n && tail != head) {
    out[got++] = r->buf[tail & (BOARD_UART_RX_RING - 1u)];
    tail++;
  }
  r->tail = tail;
  return got;
}

#endif /* KE_RX_RING_H */
