/*
 * cortex_m.h — what the boards share of the ARMv7-M core: register access,
 * the NVIC, interrupt masking, SysTick, and the C runtime set-up each
 * board's Reset_Handler runs (runtime.c). Private to mappers/boards/.
 */
#ifndef KE_CORTEX_M_H
#define KE_CORTEX_M_H

#include <stdint.h>

/* A memory-mapped 32-bit register. */
#define CM_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* An entry of a vector table: a handler, or (entry 0) the initial stack. */
typedef void (*cm_vector_t)(void);

/* Linker-script symbols (cortex-m/sections.ld). */
extern uint32_t __stack_limit[], __stack_top[];
extern uint32_t __data_start[], __data_end[], __data_load[];
extern uint32_t __bss_start[], __bss_end[];

/* cm_runtime_init: copies .data from flash, zeroes .bss, and paints the
 * unused stack with BOARD_STACK_PAINT. Called by Reset_Handler before
 * anything else. */
void cm_runtime_init(void);

/* cm_systick_start: a SysTick interrupt every millisecond from a core
 * clock of cpu_hz (board_millis counts them). */
void cm_systick_start(uint32_t cpu_hz);

/* cm_nvic_enable: lets external interrupt irq (0-based, after the 16
 * system exceptions) reach the core. */
static inline void cm_nvic_enable(unsigned irq)
{
  CM_REG(0xE000E100u + 4u * (irq / 32u)) = 1u << (irq % 32u); /* NVIC_ISERn: set-enable bit of irq */
}

static inline void cm_irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void cm_irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }

/* The handlers every board's vector table names. */
void Reset_Handler(void);
void cm_default_handler(void);
void SysTick_Handler(void);
int main(void);

#endif /* KE_CORTEX_M_H */
