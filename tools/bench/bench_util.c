/*
 * bench_util.c — the helpers the benchmark programs share (see
 * bench_util.h): clocks, percentiles, /proc, the temporary directory,
 * keadm and cloudcore as child processes, and bench_waiter.
 */
#include "bench_util.h"

#include "ke_log.h"
#include "ke_time.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *bench_prog = "bench";

void bench_set_name(const char *name)
{
    bench_prog = name;
}

/* ---- clocks ---- */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- sorting and percentiles ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void bench_sort_i64(int64_t *a, size_t n)
{
    qsort(a, n, sizeof(*a), cmp_i64);
}

void bench_sort_double(double *a, size_t n)
{
    qsort(a, n, sizeof(*a), cmp_double);
}

/* pct_index is the index of the pct-th percentile of n > 0 sorted values. */
static size_t pct_index(size_t n, unsigned pct)
{
    size_t i = n * pct / 100;
    return i < n ? i : n - 1;
}

int64_t bench_pct_i64(const int64_t *sorted, size_t n, unsigned pct)
{
    return n ? sorted[pct_index(n, pct)] : 0;
}

double bench_pct_double(const double *sorted, size_t n, unsigned pct)
{
    return n ? sorted[pct_index(n, pct)] : 0;
}

/* ---- /proc ---- */

long bench_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

long long bench_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command (which may hold spaces): from the last ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (long long)((ut + st) * 1000ULL / (unsigned long long)hz) : -1;
}

void bench_sibling_path(char *out, size_t len, const char *rel)
{
    char self[PATH_MAX];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[sl > 0 ? sl : 0] = '\0';
    snprintf(out, len, "%s/%s", dirname(self), rel);
}

/* ---- the temporary directory ---- */

int bench_make_tmp(char *out, size_t len, const char *prefix)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    if (strlen(base) > len - 32) {
        fprintf(stderr, "%s: TMPDIR is longer than %d bytes\n", bench_prog, (int)len - 32);
        out[0] = '\0';
        return -1;
    }
    snprintf(out, len, "%s/%s-XXXXXX", base, prefix);
    if (!mkdtemp(out)) {
        fprintf(stderr, "%s: cannot create %s: %s\n", bench_prog, out, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void bench_tmp_done(const char *dir, int keep)
{
    if (dir[0] && !keep)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else if (dir[0])
        printf("kept %s\n", dir);
}

/* ---- child processes ---- */

int bench_child_wait(pid_t pid, int timeout_s, int *status)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int64_t deadline = bench_now_ns() + (int64_t)timeout_s * 1000000000LL;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
        int64_t left = deadline - bench_now_ns();
        if (left <= 0)
            return -1;
        struct timespec ts = {(time_t)(left / 1000000000LL), (long)(left % 1000000000LL)};
        sigtimedwait(&chld, NULL, &ts); /* any SIGCHLD, or the timeout */
    }
}

pid_t bench_spawn(char *const argv[], int out_fd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int fd = out_fd >= 0 ? out_fd : open("/dev/null", O_WRONLY);
    if (fd >= 0)
        dup2(fd, STDOUT_FILENO);
    execv(argv[0], argv);
    fprintf(stderr, "%s: cannot run %s: %s\n", bench_prog, argv[0], strerror(errno));
    _exit(127);
}

int bench_keadm_init(const char *keadm, const char *dir, int start_s, int stop_s)
{
    char *argv[] = {(char *)keadm, "init", "--dir", (char *)dir, NULL};
    int st = 0;
    pid_t pid = bench_spawn(argv, -1);
    if (pid < 0 || bench_child_wait(pid, start_s, &st) != 0 || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0) {
        if (pid > 0 && kill(pid, SIGKILL) == 0)
            bench_child_wait(pid, stop_s, &st);
        fprintf(stderr, "%s: %s init --dir %s failed\n", bench_prog, keadm, dir);
        return -1;
    }
    return 0;
}

static int last_http_port; /* of the last "ready" line read */

int bench_read_ready(int fd, int timeout_s, int *grpc_port)
{
    char buf[256] = "";
    size_t n = 0;
    int64_t deadline = bench_now_ns() + (int64_t)timeout_s * 1000000000LL;
    while (n < sizeof(buf) - 1 && !strchr(buf, '\n')) {
        int64_t left_ms = (deadline - bench_now_ns()) / 1000000;
        struct pollfd p = {fd, POLLIN, 0};
        if (left_ms <= 0 || poll(&p, 1, (int)left_ms) <= 0)
            break;
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
    }
    int http = 0;
    int got = sscanf(buf, "ready grpc=%d http=%d", grpc_port, &http);
    if (got == 2)
        last_http_port = http;
    return got >= 1 ? 0 : -1;
}

int bench_cloudcore_http_port(void)
{
    return last_http_port;
}

double bench_metric(int http_port, const char *series)
{
    char cmd[128], line[512];
    snprintf(cmd, sizeof(cmd), "curl -sS --max-time 10 http://127.0.0.1:%d/metrics", http_port);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    double v = -1;
    size_t n = strlen(series);
    while (fgets(line, sizeof(line), p))
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtod(line + n + 1, NULL);
    if (pclose(p) != 0)
        v = -1;
    return v;
}

pid_t bench_cloudcore_start(const char *cloudcore, const char *dir, const char *const extra[],
                            int start_s, int stop_s, char *target, size_t target_len)
{
    enum { FIXED = 6, EXTRA_MAX = 8 };
    char config[PATH_MAX];
    snprintf(config, sizeof(config), "%s/cloudcore.yaml", dir);
    char *argv[FIXED + EXTRA_MAX + 1] = {(char *)cloudcore,
                                         "--config",
                                         config,
                                         "--grpc.listen=127.0.0.1:0",
                                         "--http.listen=127.0.0.1:0",
                                         "--kubeapi.listen=127.0.0.1:0",
                                         "--log_level=warn"};
    for (int i = 0; extra && extra[i]; i++) {
        if (i == EXTRA_MAX)
            return -1;
        argv[FIXED + i] = (char *)extra[i];
    } /* the rest of argv is NULL */
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = bench_spawn(argv, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    int port = 0, st = 0;
    int rc = bench_read_ready(fds[0], start_s, &port);
    close(fds[0]); /* cloudcore prints nothing more and ignores SIGPIPE */
    if (rc != 0) {
        fprintf(stderr, "%s: %s did not print \"ready\" (it exited, or not within %d s)\n",
                bench_prog, cloudcore, start_s);
        kill(pid, SIGKILL);
        bench_child_wait(pid, stop_s, &st);
        return -1;
    }
    snprintf(target, target_len, "127.0.0.1:%d", port);
    return pid;
}

int bench_cloudcore_stop(pid_t pid, int stop_s)
{
    int st = 0;
    if (pid <= 0)
        return 0;
    kill(pid, SIGTERM);
    if (bench_child_wait(pid, stop_s, &st) != 0) {
        fprintf(stderr, "%s: cloudcore did not exit within %d s of SIGTERM: killing it\n",
                bench_prog, stop_s);
        kill(pid, SIGKILL);
        bench_child_wait(pid, stop_s, &st);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "%s: cloudcore exited with status %d\n", bench_prog,
                WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        return -1;
    }
    return 0;
}

/* ---- rpc ---- */

int bench_admin_channel(ke_rpc_loop *loop, const char *target, const char *pki_dir,
                        ke_rpc_channel **out)
{
    char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
    snprintf(crt, sizeof(crt), "%s/admin.crt", pki_dir);
    snprintf(key, sizeof(key), "%s/admin.key", pki_dir);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = crt, .key_file = key};
    ke_rpc_channel_opts co = {.tls = &tls};
    return ke_rpc_channel_new(loop, target, &co, out);
}

/* ---- waking the main thread ---- */

void bench_waiter_init(bench_waiter *w, int stall_s)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    w->stall_s = stall_s;
    w->first_error[0] = '\0';
    atomic_store(&w->failed, 0);
}

void bench_waiter_destroy(bench_waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

void bench_waiter_signal(bench_waiter *w)
{
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void bench_waiter_fail(bench_waiter *w, const char *fmt, ...)
{
    pthread_mutex_lock(&w->mu);
    if (!w->first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first_error, sizeof(w->first_error), fmt, ap);
        va_end(ap);
    }
    atomic_fetch_add(&w->failed, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int bench_waiter_wait(bench_waiter *w, atomic_long *count, long target, const char *what)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    long seen = atomic_load(count);
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += w->stall_s;
    while (atomic_load(count) < target && atomic_load(&w->failed) == 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) != ETIMEDOUT)
            continue;
        long cur = atomic_load(count);
        if (cur == seen) {
            fprintf(stderr, "%s: %s: %ld of %ld, none for %d s: giving up\n", bench_prog, what, cur,
                    target, w->stall_s);
            rc = -1;
            break;
        }
        seen = cur;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += w->stall_s;
    }
    if (rc == 0 && atomic_load(&w->failed) != 0) {
        fprintf(stderr, "%s: %s: %ld failure(s), first: %s\n", bench_prog, what,
                atomic_load(&w->failed), w->first_error);
        rc = -1;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- the start of main ---- */

void bench_main_init(const char *name, bench_waiter *w, int stall_s)
{
    bench_set_name(name);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, NULL);
    signal(SIGPIPE, SIG_IGN);
    ke_log_set_level(KE_LOG_ERROR);
    bench_waiter_init(w, stall_s);
}

long bench_open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    long n = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

int bench_mem_split(pid_t pid, long *anon, long *file)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    long rss = -1, an = -1, v;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Rss: %ld kB", &v) == 1)
            rss = v;
        else if (sscanf(line, "Anonymous: %ld kB", &v) == 1)
            an = v;
    }
    if (f)
        fclose(f);
    if (rss < 0 || an < 0)
        return -1;
    *anon = an;
    *file = rss - an;
    return 0;
}

int bench_write_plain(const char *path, const char *data, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

int bench_raise_nofile(long need, rlim_t *got)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -2;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need) {
        struct rlimit want = {(rlim_t)need, (rlim_t)need};
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            *got = rl.rlim_max;
            return -1;
        }
        rl = want;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -2;
    *got = rl.rlim_cur;
    return 0;
}

int64_t bench_pub_fill(bench_pub *p, const char *node, long j, int content_bytes)
{
    snprintf(p->name, sizeof(p->name), "%s", node);
    snprintf(p->resource, sizeof(p->resource), "node/%s/default/ConfigMap/cm-%ld", node, j);
    snprintf(p->id, sizeof(p->id), "edgesim-%s-%ld", node, j);
    int64_t issued = bench_now_ns(), wall = ke_time_wall_ms();
    static const char fmt[] =
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm-%ld\","
        "\"namespace\":\"default\",\"resourceVersion\":\"%ld\"},\"data\":{\"publishedAtMs\":"
        "\"%lld\",\"publishedAtMonoNs\":\"%lld\",\"pad\":\"%.*s\"}}";
    static const char pad[] = "................................................................"
                              "................................................................"
                              "................................................................"
                              "................................................................";
    if (content_bytes > BENCH_PUB_CONTENT_MAX)
        content_bytes = BENCH_PUB_CONTENT_MAX;
    int base = snprintf(NULL, 0, fmt, j, j + 1, (long long)wall, (long long)issued, 0, pad);
    int padlen = base < content_bytes ? content_bytes - base : 0;
    if (padlen > (int)sizeof(pad) - 1)
        padlen = (int)sizeof(pad) - 1;
    int clen = snprintf(p->content, sizeof(p->content), fmt, j, j + 1, (long long)wall,
                        (long long)issued, padlen, pad);
    ke__v1__message_header__init(&p->h);
    ke__v1__route__init(&p->route);
    ke__v1__message__init(&p->m);
    ke__v1__publish_request__init(&p->req);
    p->h.id = p->id;
    p->h.timestamp_ms = wall;
    p->h.resource_version = (uint64_t)j + 1;
    p->route.source = "edgesim";
    p->route.group = "resource";
    p->route.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    p->route.resource = p->resource;
    p->m.header = &p->h;
    p->m.route = &p->route;
    p->m.content.data = (uint8_t *)p->content;
    p->m.content.len =
        (size_t)(clen < (int)sizeof(p->content) ? clen : (int)sizeof(p->content) - 1);
    p->req.node_name = p->name;
    p->req.message = &p->m;
    return issued;
}
