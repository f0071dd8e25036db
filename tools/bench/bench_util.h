/*
 * bench_util.h — what the benchmark programs in tools/bench share: clocks,
 * sorting and percentiles, /proc readings, the programs built next to this
 * one, the temporary directory, running keadm and cloudcore as children,
 * and a counter-waiting main thread woken by rpc callbacks.
 *
 * Only the benchmarks use it; it is not part of libke. Messages to stderr
 * start with the name given to bench_set_name ("bench" until then), so each
 * program keeps its own prefix. Helpers that reap children with
 * bench_child_wait need SIGCHLD blocked in every thread: call
 * bench_main_init at the start of main, before any thread exists.
 */
#ifndef KE_BENCH_UTIL_H
#define KE_BENCH_UTIL_H

#include "cloudhub.pb-c.h"
#include "ke_rpc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

/* Where cloudcore and keadm are built, relative to the directory of a
 * benchmark program (build/tools/bench): for bench_sibling_path. */
#define BENCH_REL_CLOUDCORE "../../services/cloudcore/cloudcore"
#define BENCH_REL_KEADM "../keadm"

/* The first failure message a bench_waiter keeps, NUL included. */
#define BENCH_WAITER_ERR_MAX 320

/* ---- naming ---- */

/* bench_set_name sets the prefix of the messages this module prints
 * ("edge_sim", ...). name must outlive every later call; main thread,
 * before any other thread exists. */
void bench_set_name(const char *name);

/* ---- clocks ---- */

/* bench_now_ns returns CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

/* bench_now_s returns CLOCK_MONOTONIC in seconds. */
double bench_now_s(void);

/* ---- sorting and percentiles ---- */

/* bench_sort_i64 sorts a[0..n) ascending in place. */
void bench_sort_i64(int64_t *a, size_t n);

/* bench_sort_double sorts a[0..n) ascending in place. */
void bench_sort_double(double *a, size_t n);

/* bench_pct_i64 returns the pct-th percentile (0..100) of sorted[0..n),
 * ascending: the element at index n * pct / 100, the last one for 100.
 * Returns 0 when n is 0. */
int64_t bench_pct_i64(const int64_t *sorted, size_t n, unsigned pct);

/* bench_pct_double is bench_pct_i64 for doubles. */
double bench_pct_double(const double *sorted, size_t n, unsigned pct);

/* ---- /proc ---- */

/* bench_rss_kib returns VmRSS of pid in KiB, from /proc/PID/status, or -1
 * when it cannot be read. */
long bench_rss_kib(pid_t pid);

/* bench_cpu_ms returns the CPU time (user + system) pid has used, in ms,
 * from /proc/PID/stat, or -1 when it cannot be read. */
long long bench_cpu_ms(pid_t pid);

/* bench_sibling_path writes "DIR/rel" to out (len bytes, truncated to fit,
 * always NUL-terminated), DIR being the directory of this program as
 * /proc/self/exe names it. rel: e.g. BENCH_REL_CLOUDCORE. */
void bench_sibling_path(char *out, size_t len, const char *rel);

/* ---- the temporary directory ---- */

/* bench_make_tmp creates a new directory $TMPDIR/<prefix>-XXXXXX ($TMPDIR
 * unset or empty: /tmp) and writes its path to out (len bytes). Returns 0,
 * or -1 with out set to "" after saying why on stderr (also when $TMPDIR
 * is longer than len - 32 bytes). */
int bench_make_tmp(char *out, size_t len, const char *prefix);

/* bench_tmp_done removes the directory dir and all below it, or, when
 * keep, prints "kept DIR" on stdout. dir "" (none made): nothing. */
void bench_tmp_done(const char *dir, int keep);

/* ---- child processes ---- */

/* bench_child_wait reaps pid within timeout_s, waiting on SIGCHLD (blocked
 * by bench_main_init). Returns 0 and the wait status in *status, or -1
 * when the child is still running. */
int bench_child_wait(pid_t pid, int timeout_s, int *status);

/* bench_spawn runs argv[0] (a path) with argv, stdout to out_fd (-1:
 * /dev/null), stderr inherited and the signal mask cleared. The parent
 * keeps out_fd open. Returns the child's pid, or -1 when fork fails; when
 * exec fails the child says so on stderr and exits 127. */
pid_t bench_spawn(char *const argv[], int out_fd);

/* bench_keadm_init runs `KEADM init --dir DIR` and waits start_s for it to
 * exit 0; a keadm still running then is killed and reaped (within stop_s).
 * Returns 0, or -1 after saying on stderr that it failed. */
int bench_keadm_init(const char *keadm, const char *dir, int start_s, int stop_s);

/* bench_read_ready reads cloudcore's first stdout line from fd for up to
 * timeout_s in all, and parses its "ready grpc=P http=H". Returns 0 with P
 * in *grpc_port, or -1 (no such line: it exited, or did not print in
 * time). Does not close fd. Prints nothing. */
int bench_read_ready(int fd, int timeout_s, int *grpc_port);

/* ---- published messages ---- */

#define BENCH_PUB_CONTENT_MAX 256

/* bench_pub: one Hub publish of a ConfigMap, its strings with it. */
typedef struct bench_pub {
    char name[64], resource[128], id[96], content[BENCH_PUB_CONTENT_MAX + 64];
    Ke__V1__MessageHeader h;
    Ke__V1__Route route;
    Ke__V1__Message m;
    Ke__V1__PublishRequest req;
} bench_pub;

/* bench_pub_fill makes message j of node `node`: ConfigMap cm-<j>, version
 * j+1, about content_bytes (at most BENCH_PUB_CONTENT_MAX) of JSON carrying
 * the publish time (wall ms and monotonic ns). Returns that monotonic time
 * (bench_now_ns). */
int64_t bench_pub_fill(bench_pub *p, const char *node, long j, int content_bytes);

/* bench_open_fds counts the entries of /proc/PID/fd. */
long bench_open_fds(pid_t pid);

/* bench_mem_split reads /proc/PID/smaps_rollup: resident anonymous memory
 * (heap, per-connection buffers, stacks) and the rest of RSS (mapped files:
 * the program and its libraries), in KiB. Returns 0, or -1 when the file
 * cannot be read (kernels before 4.14). */
int bench_mem_split(pid_t pid, long *anon, long *file);

/* bench_write_plain writes a file without fsync: for throwaway files, where
 * ke_pki_write_file's two fsyncs per file would dominate a large run.
 * Returns 0 or -1 (errno set). */
int bench_write_plain(const char *path, const char *data, mode_t mode);

/* bench_raise_nofile lifts RLIMIT_NOFILE to the hard limit, first raising
 * the hard limit to `need` when it is lower (which takes CAP_SYS_RESOURCE);
 * children started after inherit it. Returns 0 with the new soft limit in
 * *got; -1 when the hard limit cannot be raised (errno set, *got the hard
 * limit); -2 when the soft limit cannot be set (errno set). */
int bench_raise_nofile(long need, rlim_t *got);

/* bench_cloudcore_http_port returns the http port of the last "ready" line
 * bench_read_ready read (0: none yet). */
int bench_cloudcore_http_port(void);

/* bench_metric scrapes http://127.0.0.1:HTTP_PORT/metrics (curl) and
 * returns the value of the unlabelled series, or -1 when it is absent or
 * the scrape failed. */
double bench_metric(int http_port, const char *series);

/* bench_cloudcore_start runs the cloudcore of a `keadm init --dir DIR` on
 * free loopback ports: `CLOUDCORE --config DIR/cloudcore.yaml
 * --grpc.listen=127.0.0.1:0 --http.listen=127.0.0.1:0 --log_level=warn`
 * and then the flags in extra (NULL-terminated, at most 8; NULL: none). It
 * waits up to start_s for cloudcore's "ready" line on stdout, then closes
 * that pipe (cloudcore prints nothing more and ignores SIGPIPE). Returns
 * the pid, with "127.0.0.1:P" (P its grpc port) written to target
 * (target_len bytes); or -1: nothing started (pipe or fork failed, nothing
 * printed), or no "ready" line, said on stderr, the child then killed and
 * reaped within stop_s. */
pid_t bench_cloudcore_start(const char *cloudcore, const char *dir, const char *const extra[],
                            int start_s, int stop_s, char *target, size_t target_len);

/* bench_cloudcore_stop sends SIGTERM to pid and reaps it within stop_s
 * seconds, else kills (SIGKILL) and reaps it, saying so on stderr. Returns
 * 0 when it exited with status 0, -1 otherwise (a status other than 0 is
 * said on stderr). pid <= 0: nothing to stop, returns 0. */
int bench_cloudcore_stop(pid_t pid, int stop_s);

/* ---- rpc ---- */

/* bench_admin_channel opens a mutual-TLS channel on loop to target with
 * the "system:admin" identity of a `keadm init` directory: PKI_DIR/ca.crt,
 * admin.crt and admin.key. Returns 0 with *out, or a ke error code (*out
 * untouched); prints nothing. */
int bench_admin_channel(ke_rpc_loop *loop, const char *target, const char *pki_dir,
                        ke_rpc_channel **out);

/* ---- waking the main thread ---- */

/* bench_waiter: counters are atomics that rpc callbacks (any thread)
 * advance; after advancing one, a callback calls bench_waiter_signal. The
 * main thread waits for a counter to reach a target with
 * bench_waiter_wait. The first failure's message is kept for it to say.
 * failed may be read, reset and restored directly (atomics). */
typedef struct bench_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int stall_s;
    char first_error[BENCH_WAITER_ERR_MAX];
    atomic_long failed;
} bench_waiter;

/* bench_waiter_init readies w (zeroed or not): a wait gives up when its
 * counter has not moved for stall_s seconds. Main thread. */
void bench_waiter_init(bench_waiter *w, int stall_s);

/* bench_waiter_destroy releases what bench_waiter_init made. */
void bench_waiter_destroy(bench_waiter *w);

/* bench_waiter_signal wakes the main thread. Any thread. */
void bench_waiter_signal(bench_waiter *w);

/* bench_waiter_fail counts a failure, keeps the first message (printf
 * format) and wakes the main thread. Any thread. */
void bench_waiter_fail(bench_waiter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* bench_waiter_wait blocks until *count >= target, or any failure is
 * counted. It gives up when *count has not moved for stall_s seconds.
 * Returns 0, or -1 after saying on stderr what did not arrive (what: e.g.
 * "join replies") or the first failure. Main thread only. */
int bench_waiter_wait(bench_waiter *w, atomic_long *count, long target, const char *what);

/* ---- the start of main ---- */

/* bench_main_init is the start of main of a benchmark that runs keadm and
 * cloudcore and waits on counters, before any thread exists: it sets the
 * message prefix to name (bench_set_name), blocks SIGCHLD in this thread
 * and so in every thread started later (bench_child_wait takes it with
 * sigtimedwait), ignores SIGPIPE, sets libke's log level to ERROR and
 * readies w (bench_waiter_init with stall_s). */
void bench_main_init(const char *name, bench_waiter *w, int stall_s);

#endif
