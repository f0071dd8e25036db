/*
 * bridge_line.h — one serial line of ke-mapper-bridge: a tty (raw, 115200
 * 8N1) or a TCP endpoint (QEMU's UART socket), opened without blocking,
 * reopened with back-off when it fails or closes, with a bounded buffer of
 * bytes waiting to be written. Framing and relaying are bridge.c's.
 */
#ifndef BRIDGE_LINE_H
#define BRIDGE_LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BR_LINE_OUT_MAX 4096        /* bytes waiting for the line; more are dropped */
#define BR_LINE_BACKOFF_MIN_MS 100  /* first reopen delay */
#define BR_LINE_BACKOFF_MAX_MS 2000 /* reopen delay ceiling */
#define BR_LINE_PATH_MAX 256

typedef enum { BR_LINE_CLOSED, BR_LINE_CONNECTING, BR_LINE_OPEN } br_line_state;

typedef struct br_line {
    char path[BR_LINE_PATH_MAX]; /* "/dev/ttyUSB0" or "tcp:HOST:PORT" */
    int fd;                      /* -1 when closed */
    br_line_state state;
    int64_t reopen_at_ms;
    uint32_t backoff_ms;
    uint8_t out[BR_LINE_OUT_MAX];
    size_t out_len;
    uint32_t opens, closes, out_dropped;
} br_line;

/* br_line_init prepares l for path (copied). Returns 0, or -1 if too long
 * or neither a path nor tcp:HOST:PORT. Nothing is opened yet. */
int br_line_init(br_line *l, const char *path);

/* br_line_tick opens a closed line when its back-off has passed, and
 * finishes a TCP connect when poll said the socket is writable. Returns
 * 1 when the line has just become open, else 0. */
int br_line_tick(br_line *l, int64_t now_ms, short revents);

/* br_line_events: what to poll for (0 when there is no fd). */
short br_line_events(const br_line *l);

/* br_line_read reads what the line has into buf. Returns the count, 0
 * when nothing waits, or -1 when the line closed or failed (it is then
 * closed, to be reopened after the back-off). */
long br_line_read(br_line *l, uint8_t *buf, size_t cap, int64_t now_ms);

/* br_line_write queues buf (all or nothing: false, counted, when it does
 * not fit or the line is not open) and writes what it can now. */
bool br_line_write(br_line *l, const uint8_t *buf, size_t len, int64_t now_ms);

/* br_line_flush writes queued bytes (on POLLOUT). */
void br_line_flush(br_line *l, int64_t now_ms);

/* br_line_close closes the fd now and schedules a reopen after the
 * back-off (which doubles up to BR_LINE_BACKOFF_MAX_MS). */
void br_line_close(br_line *l, int64_t now_ms);

#endif
