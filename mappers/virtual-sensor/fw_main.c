/*
 * fw_main.c — the virtual sensor as Cortex-M firmware: the SDK's framed
 * link over the board's console UART (115200 8N1), the bridge
 * (mappers/bridge) on the other end. Every buffer is static; nothing
 * allocates. Between polls the core sleeps until an interrupt (a received
 * byte or the 1 ms tick).
 */
#include <stdbool.h>
#include <stdint.h>

#include "board.h"
#include "ke_mapper.h"
#include "vsensor.h"

static int uart_send(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    board_uart_write(buf, len);
    return 0;
}

static int uart_recv(void *ctx, uint8_t *buf, size_t cap)
{
    (void)ctx;
    return (int)board_uart_read(buf, cap);
}

static const ke_transport uart_transport = {
    .send = uart_send, .recv = uart_recv, .ctx = NULL, .framed = true};

static ke_mapper mapper;
static vsensor sensor;

int main(void)
{
    board_init();
    /* A reset may have cut a frame short: one 0x00 ends it at the peer. */
    static const uint8_t resync = 0;
    board_uart_write(&resync, 1);
    uint32_t now = board_millis();
    vsensor_init(&sensor, now, board_stack_high_water);
    const ke_mapper_config cfg = {
        .device = KE_VSENSOR_DEVICE,
        .props = vsensor_props,
        .n_props = VSENSOR_NPROPS,
        .read = vsensor_read,
        .write = vsensor_write,
        .user = &sensor,
        .transport = &uart_transport,
        /* no boot counter without writable storage: the tick at start
         * still differs between boots on real hardware; DeviceTwin's
         * duplicate window is a few seconds either way */
        .seq_start = 1u + now,
    };
    if (ke_mapper_start(&mapper, &cfg, now) != 0)
        for (;;)
            board_idle(); /* a bad table: nothing to do (caught on the host first) */
    for (;;) {
        now = board_millis();
        vsensor_step(&sensor, now);
        ke_mapper_poll(&mapper, now);
        board_idle();
    }
}
