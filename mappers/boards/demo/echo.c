/*
 * echo.c — the board bring-up firmware: proves a board's startup, clock,
 * UART, tick and the nanopb runtime before real mapper firmware runs on it
 * (tests/integration/test_qemu_boards.py drives it in QEMU).
 *
 * On reset it prints a banner line, encodes and decodes one MapperFrame
 * and prints "nanopb OK <bytes>" (or "nanopb FAIL"), then echoes every byte
 * it receives. After echoing the sequence "!HWM?" it also prints
 *   "\r\nhwm=<bytes> stack=<bytes> ms=<millis>\r\n"
 * — the stack high-water mark since reset, the reserved stack, and
 * board_millis().
 */
#include <stdbool.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "board.h"
#include "mapper.pb.h"

static const uint8_t ECHO_REPORT_SEQ[] = "!HWM?";
#define ECHO_REPORT_LEN (sizeof ECHO_REPORT_SEQ - 1u)

/* Static, not on the stack: the stack figure then shows what the code
 * itself needs, as the SDK's static buffers will. */
static ke_mapper_v1_MapperFrame echo_tx_frame, echo_rx_frame;
static uint8_t echo_pb_buf[ke_mapper_v1_MapperFrame_size];

static void echo_puts(const char *s)
{
  board_uart_write((const uint8_t *)s, strlen(s));
}

static void echo_put_u32(uint32_t v)
{
  char digits[10];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v != 0);
  while (n > 0)
    board_uart_write((const uint8_t *)&digits[--n], 1);
}

/* One reported reading through the codec and back, as the mapper SDK will
 * send it; returns the encoded size, or 0 if anything differs. */
static size_t echo_nanopb_roundtrip(void)
{
  echo_tx_frame = (ke_mapper_v1_MapperFrame)ke_mapper_v1_MapperFrame_init_zero;
  echo_tx_frame.seq = 42;
  echo_tx_frame.which_body = ke_mapper_v1_MapperFrame_reported_tag;
  ke_mapper_v1_ReportedUpdate *r = &echo_tx_frame.body.reported;
  strcpy(r->device, "virtual-sensor-1");
  r->properties_count = 1;
  strcpy(r->properties[0].name, "temperature");
  strcpy(r->properties[0].value, "21.5");
  r->properties[0].timestamp_ms = board_millis();

  pb_ostream_t os = pb_ostream_from_buffer(echo_pb_buf, sizeof echo_pb_buf);
  if (!pb_encode(&os, ke_mapper_v1_MapperFrame_fields, &echo_tx_frame))
    return 0;
  pb_istream_t is = pb_istream_from_buffer(echo_pb_buf, os.bytes_written);
  if (!pb_decode(&is, ke_mapper_v1_MapperFrame_fields, &echo_rx_frame))
    return 0;
  const ke_mapper_v1_ReportedUpdate *d = &echo_rx_frame.body.reported;
  bool same = echo_rx_frame.seq == 42 &&
              echo_rx_frame.which_body == ke_mapper_v1_MapperFrame_reported_tag &&
              strcmp(d->device, r->device) == 0 && d->properties_count == 1 &&
              strcmp(d->properties[0].name, "temperature") == 0 &&
              strcmp(d->properties[0].value, "21.5") == 0 &&
              d->properties[0].timestamp_ms == r->properties[0].timestamp_ms;
  return same ? os.bytes_written : 0;
}

static void echo_report(void)
{
  echo_puts("\r\nhwm=");
  echo_put_u32((uint32_t)board_stack_high_water());
  echo_puts(" stack=");
  echo_put_u32((uint32_t)board_stack_size());
  echo_puts(" ms=");
  echo_put_u32(board_millis());
  echo_puts("\r\n");
}

int main(void)
{
  board_init();
  echo_puts("kubeedge-c echo on ");
  echo_puts(board_name());
  echo_puts("\r\n");
  size_t n = echo_nanopb_roundtrip();
  if (n > 0) {
    echo_puts("nanopb OK ");
    echo_put_u32((uint32_t)n);
    echo_puts("\r\n");
  } else {
    echo_puts("nanopb FAIL\r\n");
  }

  size_t matched = 0; /* how much of ECHO_REPORT_SEQ the last bytes spell */
  uint8_t buf[32];
  for (;;) {
    size_t got = board_uart_read(buf, sizeof buf);
    if (got == 0)
      board_idle();
    for (size_t i = 0; i < got; i++) {
      board_uart_write(&buf[i], 1);
      if (buf[i] == ECHO_REPORT_SEQ[matched])
        matched++;
      else
        matched = buf[i] == ECHO_REPORT_SEQ[0] ? 1u : 0u;
      if (matched == ECHO_REPORT_LEN) {
        echo_report();
        matched = 0;
      }
    }
  }
}
