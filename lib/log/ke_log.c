/*
 * ke_log.c — see ke_log.h. Formats into a stack buffer and emits the line
 * with one write(2) so concurrent threads never interleave within a line;
 * ke_log_esc, the escaping of peer-chosen strings for those lines.
 */
#include "ke_log.h"
#include "ke_err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = KE_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void ke_log_set_level(ke_log_level level) { atomic_store(&g_level, (int)level); }

ke_log_level ke_log_get_level(void) { return (ke_log_level)atomic_load(&g_level); }

int ke_log_parse_level(const char *name, ke_log_level *out)
{
    static const struct { const char *name; ke_log_level level; } map[] = {
        {"debug", KE_LOG_DEBUG}, {"info", KE_LOG_INFO},   {"warn", KE_LOG_WARN},
        {"warning", KE_LOG_WARN}, {"error", KE_LOG_ERROR},
    };
    for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcasecmp(name, map[i].name) == 0) {
            *out = map[i].level;
            return 0;
        }
    }
    return KE_EINVAL;
}

void ke_log_write(ke_log_level level, const char *module, const char *fmt, ...)
{
    if ((int)level < atomic_load(&g_level))
        return;
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level & 3],
                     module ? module : "-");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* One event, one line, whatever a format argument held: a control
     * character that a call site let through (it should have used
     * ke_log_esc) becomes '?' rather than a line break or a terminal
     * escape. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

const char *ke_log_esc(const char *s, char *buf, size_t len)
{
    if (!buf || len == 0)
        return "";
    static const char hex[] = "0123456789abcdef";
    size_t j = 0, mark = 0;
    for (size_t i = 0; s && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[4];
        size_t n;
        if (c == '\\' || c == '"') {
            e[0] = '\\';
            e[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            e[0] = '\\';
            e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c > 0x7e) {
            e[0] = '\\';
            e[1] = 'x';
            e[2] = hex[c >> 4];
            e[3] = hex[c & 0xf];
            n = 4;
        } else {
            e[0] = (char)c;
            n = 1;
        }
        if (j + n + 1 > len) { /* does not fit: cut at the last boundary with room for "..." */
            j = mark;
            if (j + 4 <= len) {
                memcpy(buf + j, "...", 3);
                j += 3;
            }
            break;
        }
        memcpy(buf + j, e, n);
        j += n;
        if (j + 4 <= len)
            mark = j; /* an escape boundary that leaves room for "..." and the NUL */
    }
    buf[j] = '\0';
    return buf;
}
