/*
 * ke_log.h — levelled, structured logging for every kubeedge-c program.
 *
 * One line per event on stderr:
 *   2026-11-25T14:03:11.123Z INFO  cloudhub: node connected node=edge-1 rv=42
 * The message is free text; facts go in key=value fields after it so that
 * a log line can be grepped and parsed. The process-wide level is the one
 * piece of global mutable state libke keeps besides the metrics registry.
 * Thread-safe: each line is written with a single write(2).
 *
 * Strings a peer chose (an agent version, a node or object name, metadata,
 * a peer's error text) go through ke_log_esc before they reach a format:
 * a newline or a terminal escape in them must not forge a log line or
 * repaint the operator's terminal.
 */
#ifndef KE_LOG_H
#define KE_LOG_H

#include <stddef.h>

typedef enum {
    KE_LOG_DEBUG = 0,
    KE_LOG_INFO = 1,
    KE_LOG_WARN = 2,
    KE_LOG_ERROR = 3,
} ke_log_level;

/* ke_log_set_level sets the process-wide threshold (default INFO). */
void ke_log_set_level(ke_log_level level);

/* ke_log_get_level returns the process-wide threshold. */
ke_log_level ke_log_get_level(void);

/* ke_log_parse_level maps "debug", "info", "warn"/"warning", "error" to a
 * level. Returns 0, or KE_EINVAL for any other string. */
int ke_log_parse_level(const char *name, ke_log_level *out);

/* ke_log_write formats one line: `module` names the subsystem, `fmt` is
 * printf-style. Lines longer than 4 KiB are truncated. A control character
 * that reaches the formatted text anyway is written as '?' (a last line of
 * defence: call sites escape peer strings with ke_log_esc, which keeps
 * them readable). */
void ke_log_write(ke_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Room for ke_log_esc of a string of n bytes, escaped in full (each byte
 * is at most 4 output bytes) plus the NUL. */
#define KE_LOG_ESC_SIZE(n) (4 * (n) + 1)

/* ke_log_esc copies s into buf[len] (len >= 1) with every byte outside
 * printable ASCII (0x20..0x7e) escaped: \n, \r, \t, and \xNN for the
 * others (bytes >= 0x80 included: log lines are ASCII, so UTF-8 shows as
 * its bytes), and '\' and '"' backslash-escaped, so the result can sit
 * inside a quoted key="value" field and be read back without ambiguity.
 * An escape is never cut: when s does not fit, the output stops before the
 * first escape that would not and ends with "..." (when len allows).
 * s NULL is written as "". Returns buf, so the call can be an argument of
 * the log format:
 *   char e[KE_LOG_ESC_SIZE(64)];
 *   ke_log_info(MOD, "agent=\"%s\"", ke_log_esc(v, e, sizeof(e)));
 * Never fails; buf NULL or len 0 returns "". */
const char *ke_log_esc(const char *s, char *buf, size_t len);

#define ke_log_debug(mod, ...) \
    do { if (ke_log_get_level() <= KE_LOG_DEBUG) ke_log_write(KE_LOG_DEBUG, mod, __VA_ARGS__); } while (0)
#define ke_log_info(mod, ...) ke_log_write(KE_LOG_INFO, mod, __VA_ARGS__)
#define ke_log_warn(mod, ...) ke_log_write(KE_LOG_WARN, mod, __VA_ARGS__)
#define ke_log_error(mod, ...) ke_log_write(KE_LOG_ERROR, mod, __VA_ARGS__)

#endif
