/*
 * board.c — LM3S6965 evaluation board: the 50 MHz system clock from the
 * 8 MHz crystal through the PLL, then the UART and the tick. QEMU models
 * the RCC register (its clock is 200 MHz / (SYSDIV + 1)), so the same code
 * gives the same 50 MHz there and board_millis keeps real time in both.
 */
#include "board.h"
#include "cortex_m.h"

#define SYSCTL_RIS 0x400FE050u /* raw interrupt status (PLL lock) */
#define SYSCTL_RCC 0x400FE060u /* run-mode clock configuration */

#define RCC_MOSCDIS (1u << 0)
#define RCC_OSCSRC_MASK (3u << 4)
#define RCC_XTAL_MASK (0xFu << 6)
#define RCC_XTAL_8MHZ (0xEu << 6)
#define RCC_BYPASS (1u << 11)
#define RCC_PWRDN (1u << 13)
#define RCC_USESYSDIV (1u << 22)
#define RCC_SYSDIV_MASK (0xFu << 23)
#define RCC_SYSDIV_4 (3u << 23) /* PLL 200 MHz / 4 = 50 MHz */
#define RIS_PLLLRIS (1u << 6)

#define LM3S_CPU_HZ 50000000u
#define PLL_LOCK_SPINS 100000u /* bounded wait: ~ms at the crystal's speed */

void lm3s_uart0_init(uint32_t cpu_hz);

static void lm3s_clock_init(void)
{
  uint32_t rcc = CM_REG(SYSCTL_RCC);
  rcc |= RCC_BYPASS;      /* run from the crystal while the PLL starts */
  rcc &= ~RCC_USESYSDIV;  /* and undivided */
  CM_REG(SYSCTL_RCC) = rcc; /* RCC: bypass the PLL, no divider */
  rcc &= ~(RCC_XTAL_MASK | RCC_OSCSRC_MASK | RCC_PWRDN | RCC_MOSCDIS);
  rcc |= RCC_XTAL_8MHZ;   /* the EVB's 8 MHz crystal, main oscillator (OSCSRC 0) */
  CM_REG(SYSCTL_RCC) = rcc; /* RCC: main oscillator on, crystal 8 MHz, PLL powered up */
  rcc = (rcc & ~RCC_SYSDIV_MASK) | RCC_SYSDIV_4 | RCC_USESYSDIV;
  CM_REG(SYSCTL_RCC) = rcc; /* RCC: system clock = PLL / 4 once the bypass goes */
  for (uint32_t i = 0; i < PLL_LOCK_SPINS && !(CM_REG(SYSCTL_RIS) & RIS_PLLLRIS); i++) {
  }
  rcc &= ~RCC_BYPASS;
  CM_REG(SYSCTL_RCC) = rcc; /* RCC: switch the system clock to the PLL (50 MHz) */
}

void board_init(void)
{
  lm3s_clock_init();
  lm3s_uart0_init(LM3S_CPU_HZ);
  cm_systick_start(LM3S_CPU_HZ);
}

const char *board_name(void)
{
  return "lm3s6965evb";
}

uint32_t board_cpu_hz(void)
{
  return LM3S_CPU_HZ;
}
