/*
 * uart.c — STM32F405 USART1 on PA9 (TX) / PA10 (RX), alternate function 7;
 * QEMU's first -serial on netduinoplus2. 115200 8N1 from the 84 MHz APB2
 * clock; received bytes taken by the interrupt into a ring, sent by
 * polling TXE. (On the real Netduino Plus 2 the header's D0/D1 are USART6
 * on PC7/PC6: porting to it changes the addresses and pins here only.)
 */
#include "board.h"
#include "cortex_m.h"
#include "rx_ring.h"

#define RCC_AHB1ENR 0x40023830u /* AHB1 peripheral clock enable (GPIO) */
#define RCC_APB2ENR 0x40023844u /* APB2 peripheral clock enable (USART1) */
#define GPIOA_MODER 0x40020000u /* port A mode */
#define GPIOA_AFRH 0x40020024u  /* port A alternate function, pins 8-15 */

#define USART1 0x40011000u
#define USART_SR (USART1 + 0x00u)  /* status */
#define USART_DR (USART1 + 0x04u)  /* data */
#define USART_BRR (USART1 + 0x08u) /* baud rate */
#define USART_CR1 (USART1 + 0x0Cu) /* control 1 */
#define USART_CR2 (USART1 + 0x10u) /* control 2 */
#define USART_CR3 (USART1 + 0x14u) /* control 3 */

#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define CR1_UE (1u << 13)
#define STM32_IRQ_USART1 37u
#define BAUD 115200u

static struct rx_ring rx;

void stm32_usart1_init(uint32_t pclk_hz)
{
  CM_REG(RCC_AHB1ENR) |= 1u << 0; /* AHB1ENR: clock GPIO port A */
  CM_REG(RCC_APB2ENR) |= 1u << 4; /* APB2ENR: clock USART1 */
  (void)CM_REG(RCC_APB2ENR);      /* a read lets the clocks settle before the first access */
  uint32_t moder = CM_REG(GPIOA_MODER) & ~((3u << 18) | (3u << 20));
  CM_REG(GPIOA_MODER) = moder | (2u << 18) | (2u << 20); /* MODER: PA9, PA10 alternate function */
  uint32_t afrh = CM_REG(GPIOA_AFRH) & ~((0xFu << 4) | (0xFu << 8));
  CM_REG(GPIOA_AFRH) = afrh | (7u << 4) | (7u << 8); /* AFRH: PA9, PA10 -> AF7 (USART1) */

  CM_REG(USART_CR1) = 0; /* CR1: USART off while it is configured */
  CM_REG(USART_CR2) = 0; /* CR2: 1 stop bit */
  CM_REG(USART_CR3) = 0; /* CR3: no flow control, no DMA */
  /* BRR = clock / baud in 1/16ths (mantissa << 4 | fraction), oversampling
   * by 16: 84 MHz -> 45 + 9/16 (0.02% off). */
  CM_REG(USART_BRR) = (pclk_hz + BAUD / 2u) / BAUD; /* BRR: 115200 baud */
  CM_REG(USART_CR1) = CR1_UE | CR1_TE | CR1_RE  /* CR1: USART, transmitter and receiver on, 8N1 */
                      | CR1_RXNEIE;             /*      interrupt on each received byte */
  cm_nvic_enable(STM32_IRQ_USART1);
}

void stm32_usart1_irq(void)
{
  while (CM_REG(USART_SR) & SR_RXNE) {
    if (rx_ring_full(&rx)) {
      CM_REG(USART_CR1) &= ~CR1_RXNEIE; /* CR1: no receive interrupt until board_uart_read makes room */
      return;
    }
    rx_ring_put(&rx, (uint8_t)CM_REG(USART_DR)); /* reading DR clears RXNE */
  }
}

void board_uart_write(const uint8_t *buf, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    while (!(CM_REG(USART_SR) & SR_TXE)) {
    }
    CM_REG(USART_DR) = buf[i]; /* DR: hand one byte to the transmitter */
  }
}

size_t board_uart_read(uint8_t *buf, size_t n)
{
  size_t got = rx_ring_take(&rx, buf, n);
  if (got > 0) {
    cm_irq_disable();
    CM_REG(USART_CR1) |= CR1_RXNEIE; /* CR1: room again, receive interrupt back on */
    cm_irq_enable();
  }
  return got;
}
