/*
 * ke_log.h — levelled, structured logging for every kubeedge-c program.
 *
 * One line per event on stderr:
 *   2026-11-25T14:03:11.123Z INFO  cloudhub: node connected node=edge-1 rv=42
 * The message is free text; facts go in key=value fields after it so that
 * a log line can be grepped and parsed. The process-wide level is the one
 * piece of global mutable state libke keeps besides the metrics registry.
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef KE_LOG_H
#define KE_LOG_H

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
 * printf-style. Lines longer than 4 KiB are truncated. */
void ke_log_write(ke_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ke_log_debug(mod, ...) \
    do { if (ke_log_get_level() <= KE_LOG_DEBUG) ke_log_write(KE_LOG_DEBUG, mod, __VA_ARGS__); } while (0)
#define ke_log_info(mod, ...) ke_log_write(KE_LOG_INFO, mod, __VA_ARGS__)
#define ke_log_warn(mod, ...) ke_log_write(KE_LOG_WARN, mod, __VA_ARGS__)
#define ke_log_error(mod, ...) ke_log_write(KE_LOG_ERROR, mod, __VA_ARGS__)

#endif
