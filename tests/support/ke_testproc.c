/*
 * ke_testproc.c — see ke_testproc.h.
 */
#include "ke_testproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ke_tp_start(ke_tp *p, char *const argv[]) { return ke_tp_start_log(p, argv, NULL); }

int ke_tp_start_log(ke_tp *p, char *const argv[], const char *stderr_path)
{
    int fds[2];
    memset(p, 0, sizeof(*p));
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        if (stderr_path) {
            int e = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (e >= 0)
                dup2(e, STDERR_FILENO);
        }
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    p->pid = pid;
    p->out_fd = fds[0];
    return 0;
}

int ke_tp_wait_line(ke_tp *p, const char *prefix, int timeout_ms, char *line, size_t len)
{
    long long end = now_ms() + timeout_ms;
    size_t plen = strlen(prefix);
    for (;;) {
        char *nl;
        while ((nl = memchr(p->buf, '\n', p->len)) != NULL) {
            size_t l = (size_t)(nl - p->buf);
            int match = l >= plen && memcmp(p->buf, prefix, plen) == 0;
            if (match && line) {
                size_t c = l < len - 1 ? l : len - 1;
                memcpy(line, p->buf, c);
                line[c] = '\0';
            }
            memmove(p->buf, nl + 1, p->len - l - 1);
            p->len -= l + 1;
            if (match)
                return 0;
        }
        long long left = end - now_ms();
        if (left <= 0 || p->len == sizeof(p->buf))
            return -1;
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        if (poll(&pfd, 1, (int)left) <= 0)
            return -1;
        ssize_t n = read(p->out_fd, p->buf + p->len, sizeof(p->buf) - p->len);
        if (n <= 0)
            return -1;
        p->len += (size_t)n;
    }
}

int ke_tp_wait_exit(ke_tp *p, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid)
            break;
        if (now_ms() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->pid = 0;
            return -1;
        }
        /* Block on the child's stdout closing (its exit) with a short poll. */
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        if (poll(&pfd, 1, 20) > 0) {
            char tmp[512];
            if (read(p->out_fd, tmp, sizeof(tmp)) <= 0)
                pfd.fd = -1;
        }
    }
    close(p->out_fd);
    p->pid = 0;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

int ke_tp_stop(ke_tp *p)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    return ke_tp_wait_exit(p, 10000);
}

int ke_tp_tmpdir(char *path)
{
    strcpy(path, "/tmp/ke-test-XXXXXX");
    return mkdtemp(path) ? 0 : -1;
}

int ke_tp_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *ke_tp_env(const char *name)
{
    const char *v = getenv(name);
    if (!v)
        fail_msg("environment variable %s is not set (run the tests through ctest)", name);
    return v;
}

int ke_tp_http_get(int port, const char *path, char **body)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "curl -s -m 5 -w '\\n%%{http_code}' http://127.0.0.1:%d%s", port,
             path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0)
        n += r;
    pclose(p);
    char *nl = strrchr(buf, '\n');
    assert_non_null(nl);
    *nl = '\0';
    *body = buf;
    return atoi(nl + 1);
}

long long ke_tp_metric_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return atoll(p + n + 1);
    }
    return -1;
}

int ke_tp_capture(char *out, size_t len, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0, got;
    while (n < len - 1 && (got = fread(out + n, 1, len - 1 - n, p)) > 0)
        n += got;
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
