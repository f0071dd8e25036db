/*
 * startup.c — STM32F405 vector table and reset handler. The table sits at
 * the start of flash (0x08000000), which the part aliases at address 0
 * when booting from flash, where VTOR's reset value points.
 */
#include "cortex_m.h"

void stm32_usart1_irq(void);

#define STM32_IRQ_COUNT 82u /* external interrupts of the STM32F405 (0..81) */
#define STM32_IRQ_USART1 37u

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
const cm_vector_t stm32_vectors[16u + STM32_IRQ_COUNT] = {
  [1 ... 16u + STM32_IRQ_COUNT - 1u] = cm_default_handler,
  [0] = (cm_vector_t)(uintptr_t)__stack_top, /* initial main stack pointer */
  [1] = Reset_Handler,
  [15] = SysTick_Handler,
  [16u + STM32_IRQ_USART1] = stm32_usart1_irq,
};
#pragma GCC diagnostic pop
