/*
 * runtime.c — the C runtime set-up of every board (.data, .bss, the stack
 * paint), the stack measurement, the default exception handler, and the
 * millisecond SysTick. Everything here is ARMv7-M architecture, not a part.
 */
#include "board.h"
#include "cortex_m.h"

#define SYST_CSR 0xE000E010u /* SysTick control and status */
#define SYST_RVR 0xE000E014u /* SysTick reload value */
#define SYST_CVR 0xE000E018u /* SysTick current value */

static volatile uint32_t cm_ms;

void cm_runtime_init(void)
{
  uint32_t *src = __data_load;
  for (uint32_t *dst = __data_start; dst < __data_end;)
    *dst++ = *src++;
  for (uint32_t *dst = __bss_start; dst < __bss_end;)
    *dst++ = 0;
  /* Paint from the bottom of the stack up to just below this frame: the
   * words above the current stack pointer are in use. */
  uint32_t *sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t *p = __stack_limit; p < sp - 1;)
    *p++ = BOARD_STACK_PAINT;
}

size_t board_stack_high_water(void)
{
  const uint32_t *p = __stack_limit;
  while (p < __stack_top && *p == BOARD_STACK_PAINT)
    p++;
  return (size_t)(__stack_top - p) * sizeof(uint32_t);
}

size_t board_stack_size(void)
{
  return (size_t)(__stack_top - __stack_limit) * sizeof(uint32_t);
}

/* An exception or interrupt nobody handles: stop here, where a debugger
 * (or QEMU's gdb stub) shows which one in IPSR. */
void cm_default_handler(void)
{
  for (;;)
    __asm__ volatile("wfi");
}

void cm_systick_start(uint32_t cpu_hz)
{
  CM_REG(SYST_RVR) = cpu_hz / 1000u - 1u; /* reload: one wrap per millisecond of core clock */
  CM_REG(SYST_CVR) = 0;                   /* clear the counter so the first period is a full one */
  CM_REG(SYST_CSR) = (1u << 2)            /* CLKSOURCE: the core clock */
                     | (1u << 1)          /* TICKINT: interrupt on each wrap */
                     | (1u << 0);         /* ENABLE: start counting */
}

void SysTick_Handler(void)
{
  cm_ms++;
}

void board_idle(void)
{
  /* A byte taken by the interrupt just before this is already in the ring
   * and waits at most one tick (1 ms) for the loop to look again. */
  __asm__ volatile("wfi");
}

uint32_t board_millis(void)
{
  return cm_ms; /* one aligned 32-bit load: atomic against the handler */
}
