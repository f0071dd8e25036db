/*
 * ke_testproc.h — helpers for tests that run real programs: start a
 * process with its stdout on a pipe, wait for a line it prints (the
 * programs print "ready ..." once they listen), stop it, make temp dirs,
 * run shell commands. Synchronisation is always on something the program
 * says or does, never on sleeps.
 */
#ifndef KE_TESTPROC_H
#define KE_TESTPROC_H

#include <sys/types.h>

typedef struct ke_tp {
    pid_t pid;
    int out_fd;      /* read end of the child's stdout */
    char buf[8192];  /* unread stdout bytes */
    size_t len;
} ke_tp;

/* ke_tp_start runs argv[0] (a path) with argv; stderr is inherited.
 * Returns 0 or -1. */
int ke_tp_start(ke_tp *p, char *const argv[]);

/* ke_tp_start_log is ke_tp_start with the child's stderr appended to
 * stderr_path (NULL: inherited). */
int ke_tp_start_log(ke_tp *p, char *const argv[], const char *stderr_path);

/* ke_tp_wait_line reads the child's stdout until a line starting with
 * `prefix` arrives; copies it (without newline) into line. Returns 0, or -1
 * on timeout or when the child closed stdout. */
int ke_tp_wait_line(ke_tp *p, const char *prefix, int timeout_ms, char *line, size_t len);

/* ke_tp_stop sends SIGTERM and waits up to 10 s (then SIGKILL). Returns the
 * exit status as from waitpid, or -1. */
int ke_tp_stop(ke_tp *p);

/* ke_tp_wait_exit waits for the child to exit by itself; returns its exit
 * code (0..255), 128+signal, or -1 on timeout (the child is then killed). */
int ke_tp_wait_exit(ke_tp *p, int timeout_ms);

/* ke_tp_tmpdir makes a fresh directory under /tmp; path must hold 64 bytes. */
int ke_tp_tmpdir(char *path);

/* ke_tp_sh runs a shell command (printf-style); returns its exit code. */
int ke_tp_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ke_tp_env returns getenv(name), failing the test when it is unset. */
const char *ke_tp_env(const char *name);

/* ke_tp_capture runs the shell command `fmt ...` with its stderr joined to
 * its stdout, puts what it printed in out (len bytes, NUL-terminated, cut
 * beyond) and returns its exit code (-1 when it did not exit normally). */
int ke_tp_capture(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ke_tp_http_get fetches http://127.0.0.1:<port><path> with curl (at most
 * 5 s) into a malloc'd *body (the caller frees); returns the HTTP status,
 * 0 when curl got no answer. */
int ke_tp_http_get(int port, const char *path, char **body);

/* ke_tp_metric_value finds `series` at the start of a line of a Prometheus
 * text body and returns its value, or -1. */
long long ke_tp_metric_value(const char *body, const char *series);

#endif
