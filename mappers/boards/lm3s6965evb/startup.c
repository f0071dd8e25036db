/*
 * startup.c — LM3S6965 vector table and reset handler. The table sits at
 * flash address 0 (VTOR's reset value); entries not named here go to
 * cm_default_handler.
 */
#include "cortex_m.h"

void lm3s_uart0_irq(void);

#define LM3S_IRQ_COUNT 48u /* external interrupts of the LM3S6965 (0..47) */
#define LM3S_IRQ_UART0 5u

void Reset_Handler(void)
{
  cm_runtime_init();
  (void)main(); /* firmware main never returns; if it does, stop here */
  cm_default_handler();
}

/* The range initialiser fills every slot with the default handler; the
 * named ones then override it, which is what -Woverride-init warns of. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
__attribute__((section(".vectors"), used))
const cm_vector_t lm3s_vectors[16u + LM3S_IRQ_COUNT] = {
  [1 ... 16u + LM3S_IRQ_COUNT - 1u] = cm_default_handler,
  [0] = (cm_vector_t)(uintptr_t)__stack_top, /* initial main stack pointer */
  [1] = Reset_Handler,
  [15] = SysTick_Handler,
  [16u + LM3S_IRQ_UART0] = lm3s_uart0_irq,
};
#pragma GCC diagnostic pop
