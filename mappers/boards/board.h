/*
 * board.h — the board API every firmware image is written against: one
 * implementation per board in mappers/boards/<board>/ (clocks, UART, tick)
 * plus the Cortex-M parts they share in mappers/boards/cortex-m/.
 *
 * The API is deliberately tiny: a UART that moves bytes, a millisecond
 * clock and a stack measurement. No call allocates; none blocks except
 * board_uart_write, which waits for room in the transmitter.
 */
#ifndef KE_BOARD_H
#define KE_BOARD_H

#include <stddef.h>
#include <stdint.h>

/* Bytes the UART's receive interrupt can hold before board_uart_read takes
 * them. When the ring is full the receive interrupt is masked until
 * board_uart_read makes room, so bytes wait in the UART (QEMU holds them
 * back; on silicon the UART's small FIFO can overrun). */
#define BOARD_UART_RX_RING 256u

/* The word the stack is painted with at reset (board_stack_high_water). */
#define BOARD_STACK_PAINT 0xA5A5A5A5u

/* board_init: clocks (the board's full speed), the console UART at
 * 115200 8N1 with its receive interrupt, and the 1 ms SysTick. Call once,
 * first thing in main(). */
void board_init(void);

/* board_name: the board's name, e.g. "lm3s6965evb" (a static string). */
const char *board_name(void);

/* board_cpu_hz: the core clock board_init set, in Hz. */
uint32_t board_cpu_hz(void);

/* board_uart_write: sends n bytes, waiting for room in the transmitter
 * (never for the far end). Safe to call with n == 0. */
void board_uart_write(const uint8_t *buf, size_t n);

/* board_uart_read: copies at most n received bytes into buf and returns how
 * many; 0 when none is waiting. Never blocks. */
size_t board_uart_read(uint8_t *buf, size_t n);

/* board_millis: milliseconds since board_init, from the SysTick interrupt;
 * wraps after 49.7 days (compare with subtraction). */
uint32_t board_millis(void);

/* board_idle: sleeps until the next interrupt: a received byte, or the
 * tick within 1 ms. For a main loop with nothing to do. */
void board_idle(void);

/* board_stack_high_water: the most stack, in bytes, used since reset: the
 * reserved stack is painted with BOARD_STACK_PAINT before main() and this
 * counts from the top down to the deepest word that was overwritten. */
size_t board_stack_high_water(void);

/* board_stack_size: the bytes the linker script reserves for the stack
 * (interrupts included: Cortex-M runs them on the same main stack). */
size_t board_stack_size(void);

#endif /* KE_BOARD_H */
