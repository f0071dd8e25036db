/*
 * uart.c — LM3S6965 UART0 (an ARM PL011) on PA0/PA1, the EVB's USB virtual
 * COM port and QEMU's first -serial: 115200 8N1, FIFOs on, received bytes
 * taken by the interrupt into a ring, sent by polling the TX FIFO.
 */
#include "board.h"
#include "cortex_m.h"
#include "rx_ring.h"

#define SYSCTL_RCGC1 0x400FE104u /* run-mode clock gating 1 (UARTs) */
#define SYSCTL_RCGC2 0x400FE108u /* run-mode clock gating 2 (GPIO ports) */
#define GPIOA_AFSEL 0x40004420u  /* port A alternate function select */
#define GPIOA_DEN 0x4000451Cu    /* port A digital enable */

#define UART0 0x4000C000u
#define UART_DR (UART0 + 0x000u)   /* data */
#define UART_FR (UART0 + 0x018u)   /* flags */
#define UART_IBRD (UART0 + 0x024u) /* integer baud divisor */
#define UART_FBRD (UART0 + 0x028u) /* fractional baud divisor */
#define UART_LCRH (UART0 + 0x02Cu) /* line control */
#define UART_CTL (UART0 + 0x030u)  /* control */
#define UART_IM (UART0 + 0x038u)   /* interrupt mask */
#define UART_ICR (UART0 + 0x044u)  /* interrupt clear */

#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define IM_RX ((1u << 4) | (1u << 6)) /* RXIM (FIFO level) | RTIM (receive timeout) */
#define LM3S_IRQ_UART0 5u
#define BAUD 115200u

static struct rx_ring rx;

void lm3s_uart0_init(uint32_t cpu_hz)
{
  CM_REG(SYSCTL_RCGC1) |= 1u << 0; /* RCGC1: clock UART0 */
  CM_REG(SYSCTL_RCGC2) |= 1u << 0; /* RCGC2: clock GPIO port A */
  (void)CM_REG(SYSCTL_RCGC2);      /* a read lets the clocks settle before the first access */
  CM_REG(GPIOA_AFSEL) |= 0x3u;     /* AFSEL: PA0/PA1 driven by UART0 (U0Rx/U0Tx) */
  CM_REG(GPIOA_DEN) |= 0x3u;       /* DEN: PA0/PA1 digital */

  CM_REG(UART_CTL) = 0; /* CTL: UART off while it is configured */
  /* Divisor = clock / (16 * baud), in 1/64ths: 50 MHz -> 27 + 8/64 (0.02% off). */
  uint32_t div64 = (cpu_hz * 4u + BAUD / 2u) / BAUD;
  CM_REG(UART_IBRD) = div64 >> 6;   /* IBRD: integer part of the divisor */
  CM_REG(UART_FBRD) = div64 & 63u;  /* FBRD: fractional part, 1/64ths */
  CM_REG(UART_LCRH) = (3u << 5)     /* LCRH: 8 data bits, no parity, 1 stop (latches IBRD/FBRD) */
                      | (1u << 4);  /*       FEN: 16-byte FIFOs on */
  CM_REG(UART_ICR) = 0x7FFu;        /* ICR: clear anything pending */
  CM_REG(UART_IM) = IM_RX;          /* IM: interrupt on received data and on receive timeout */
  CM_REG(UART_CTL) = (1u << 0)      /* CTL: UARTEN */
                     | (1u << 8)    /*      TXE: transmitter on */
                     | (1u << 9);   /*      RXE: receiver on */
  cm_nvic_enable(LM3S_IRQ_UART0);
}

void lm3s_uart0_irq(void)
{
  while (!(CM_REG(UART_FR) & FR_RXFE)) {
    if (rx_ring_full(&rx)) {
      CM_REG(UART_IM) &= ~IM_RX; /* IM: stop receive interrupts until board_uart_read makes room */
      return;
    }
    rx_ring_put(&rx, (uint8_t)CM_REG(UART_DR));
  }
  CM_REG(UART_ICR) = IM_RX; /* ICR: acknowledge the receive and timeout interrupts */
}

void board_uart_write(const uint8_t *buf, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    while (CM_REG(UART_FR) & FR_TXFF) {
    }
    CM_REG(UART_DR) = buf[i]; /* DR: queue one byte in the TX FIFO */
  }
}

size_t board_uart_read(uint8_t *buf, size_t n)
{
  size_t got = rx_ring_take(&rx, buf, n);
  if (got > 0) {
    cm_irq_disable();
    CM_REG(UART_IM) |= IM_RX; /* IM: room again, receive interrupts back on */
    cm_irq_enable();
  }
  return got;
}
