/*
 * board.c — Netduino Plus 2 (STM32F405RG): 168 MHz from the board's 25 MHz
 * crystal through the main PLL, APB2 at 84 MHz (USART1), APB1 at 42 MHz,
 * then the UART and the tick.
 *
 * QEMU's netduinoplus2 does not model the RCC (its registers read as 0) and
 * runs its clock tree at a fixed 168 MHz. A real RCC never reads 0 (HSI is
 * on and ready out of reset), so a zero RCC_CR means "emulated, already at
 * 168 MHz" and the ready-bit waits are skipped.
 */
#include "board.h"
#include "cortex_m.h"

#define RCC_CR 0x40023800u      /* clock control */
#define RCC_PLLCFGR 0x40023804u /* main PLL configuration */
#define RCC_CFGR 0x40023808u    /* clock configuration (source, prescalers) */
#define FLASH_ACR 0x40023C00u   /* flash access control */

#define CR_HSEON (1u << 16)
#define CR_HSERDY (1u << 17)
#define CR_PLLON (1u << 24)
#define CR_PLLRDY (1u << 25)
#define CFGR_SWS_MASK (3u << 2)
#define CFGR_SWS_PLL (2u << 2)

#define STM32_CPU_HZ 168000000u
#define STM32_APB2_HZ 84000000u
#define CLOCK_SPINS 200000u /* bounded wait for each ready bit */

void stm32_usart1_init(uint32_t pclk_hz);

static void stm32_wait(uint32_t reg, uint32_t mask, uint32_t want)
{
  for (uint32_t i = 0; i < CLOCK_SPINS && (CM_REG(reg) & mask) != want; i++) {
  }
}

static void stm32_clock_init(void)
{
  if (CM_REG(RCC_CR) == 0)
    return; /* emulated RCC: the clock tree is fixed at 168 MHz already */
  CM_REG(RCC_CR) |= CR_HSEON; /* RCC_CR: start the 25 MHz crystal oscillator */
  stm32_wait(RCC_CR, CR_HSERDY, CR_HSERDY);
  CM_REG(RCC_PLLCFGR) = 25u           /* PLLCFGR: PLLM /25 -> 1 MHz PLL input */
                        | (336u << 6) /*          PLLN x336 -> 336 MHz VCO */
                        | (0u << 16)  /*          PLLP /2 -> 168 MHz system clock */
                        | (1u << 22)  /*          PLLSRC: HSE */
                        | (7u << 24); /*          PLLQ /7 -> 48 MHz for USB/SDIO */
  CM_REG(RCC_CR) |= CR_PLLON; /* RCC_CR: start the main PLL */
  stm32_wait(RCC_CR, CR_PLLRDY, CR_PLLRDY);
  CM_REG(FLASH_ACR) = 5u            /* ACR: 5 wait states, needed at 168 MHz / 3.3 V */
                      | (1u << 8)   /*      PRFTEN: prefetch */
                      | (1u << 9)   /*      ICEN: instruction cache */
                      | (1u << 10); /*      DCEN: data cache */
  CM_REG(RCC_CFGR) = (0u << 4)      /* CFGR: AHB = SYSCLK */
                     | (5u << 10)   /*       APB1 = AHB / 4 (42 MHz, its maximum) */
                     | (4u << 13)   /*       APB2 = AHB / 2 (84 MHz, its maximum) */
                     | (2u << 0);   /*       SW: system clock from the PLL */
  stm32_wait(RCC_CFGR, CFGR_SWS_MASK, CFGR_SWS_PLL);
}

void board_init(void)
{
  stm32_clock_init();
  stm32_usart1_init(STM32_APB2_HZ);
  cm_systick_start(STM32_CPU_HZ);
}

const char *board_name(void)
{
  return "netduinoplus2";
}

uint32_t board_cpu_hz(void)
{
  return STM32_CPU_HZ;
}
