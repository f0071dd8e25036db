/*
 * kubeapi_bench — measures cloudcore's Kubernetes API (services/kubeapi)
 * with real Kubernetes clients, and prints the figures:
 *
 *   create    N pods (namespace "bench", one container, labels app=bench
 *             and i=<n%10>) through POST, C connections (libcurl multi,
 *             keep-alive, HTTP/1.1, TLS with the admin client certificate);
 *   kubectl   the real kubectl with admin.kubeconfig: `get pods -n bench`
 *             (its rows counted: N + 1 with the header), `-o wide`,
 *             `-o json` (items counted);
 *   paginate  every pod in pages of 500 following metadata.continue: with
 *             python3-kubernetes (kubeapi_pylist.py) and with libcurl;
 *   load      for S seconds each, C connections: get of a random pod,
 *             list with labelSelector=i=3 in "bench" (N/10 matches), the
 *             same list in "small" (100 pods, 10 matches), merge patch of a
 *             label on a random pod: req/s, p50/p99, connections opened;
 *   watch     one watch on the ConfigMaps of namespace "lat" from the
 *             current resourceVersion; M merge patches of one ConfigMap,
 *             one at a time, each carrying its monotonic send time; the
 *             time until its MODIFIED event arrives: p50/p99/max;
 *   cloudcore RSS idle, after the creates and after the load; its CPU
 *             time in each phase.
 *
 * Every HTTP status is checked: a non-2xx answer is an error, counted and
 * (the first few) printed at the end; the program then exits 1.
 *
 * Threads: the main thread drives every phase (one curl multi handle);
 * the watch runs on its own thread (a curl easy handle) and wakes the main
 * thread through a bench_waiter. Nothing sleeps to wait.
 *
 * Usage: ke-bench-kubeapi [--pods N] [--conns C] [--seconds S]
 *            [--watch-events M] [--kubectl PATH] [--keep]
 * Not run by the tests; figures go in the README's benchmarks section.
 */
#include "bench_util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- bounds and knobs ---- */
#define KB_DEFAULT_PODS 10000
#define KB_DEFAULT_CONNS 8
#define KB_DEFAULT_SECONDS 5
#define KB_DEFAULT_WATCH_EVENTS 200
#define KB_MAX_PODS 999999
#define KB_MAX_CONNS 128 /* below cloudcore's kubeapi.max_connections (256) */
#define KB_MAX_SECONDS 600
#define KB_MAX_WATCH_EVENTS 100000
#define KB_PAGE 500
#define KB_START_S 60   /* keadm init, cloudcore's "ready" line */
#define KB_STOP_S 60    /* cloudcore's exit after SIGTERM */
#define KB_CHILD_S 600  /* kubectl, python */
#define KB_STALL_S 60   /* a watch event that does not come */
#define KB_REQ_TIMEOUT_S 300
#define KB_ERRORS_KEPT 5
#define KB_ERR_MAX 512
#define KB_DIR_MAX 512
#define KB_PATH_MAX (KB_DIR_MAX + 64)
#define KB_PROG_MAX (PATH_MAX + 64)
#define KB_URL_MAX 4096
#define KB_BODY_MAX 1024
#define KB_NS "bench"
#define KB_SMALL_NS "small" /* KB_SMALL_PODS pods, for a list in a small namespace */
#define KB_SMALL_PODS 100
#define KB_LAT_NS "lat"
#define KB_LAT_CM "lat-cm"
#define KB_KUBECTL_DEFAULT "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
#define KB_PYTHON "/usr/bin/python3"

#ifndef KB_SRC_DIR
#define KB_SRC_DIR "tools/bench"
#endif

/* a growing byte buffer, NUL-terminated */
typedef struct kb_buf {
    char *p;
    size_t n, cap;
} kb_buf;

/* latencies of one phase, ns */
typedef struct kb_lat {
    int64_t *v;
    size_t n, cap;
} kb_lat;

typedef struct bench bench;

/* slot: one connection of the load phases (an easy handle kept across
 * requests, so its connection is reused). */
typedef struct slot {
    bench *b;
    CURL *h;
    kb_buf resp;
    char url[KB_URL_MAX];
    char body[KB_BODY_MAX];
    const char *method;
    int64_t t0;
} slot;

/* the request generator of a load phase: sets s->method, url, body for
 * request number i. */
typedef void (*kb_gen)(bench *b, slot *s, long i);

struct bench {
    long pods, conns, seconds, watch_events;
    int keep;
    char kubectl[KB_PROG_MAX], cloudcore[KB_PROG_MAX], keadm[KB_PROG_MAX];
    char tmp[KB_DIR_MAX], dir[KB_PATH_MAX];
    char ca[KB_PATH_MAX], crt[KB_PATH_MAX], key[KB_PATH_MAX], kubeconfig[KB_PATH_MAX];
    char base[96]; /* https://127.0.0.1:PORT */
    pid_t cc;
    CURLM *multi;
    slot *slots;
    struct curl_slist *json_hdr, *merge_hdr;
    uint64_t rng;
    long connects; /* connections the load driver opened (keep-alive check) */
    /* errors */
    long errors;
    char err[KB_ERRORS_KEPT][KB_ERR_MAX];
    /* watch */
    bench_waiter w;
    atomic_long events;
    atomic_int watch_stop;
    int64_t *ev_lat; /* by patch number */
    long ev_want;
    kb_buf wbuf;
    char watch_rv[64];
    CURLcode watch_rc;
    long watch_code;
};

/* ---- small helpers ---- */

static void buf_reset(kb_buf *b)
{
    b->n = 0;
    if (b->p)
        b->p[0] = '\0';
}

static int buf_add(kb_buf *b, const void *d, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static size_t on_write(char *d, size_t sz, size_t nm, void *arg)
{
    return buf_add(arg, d, sz * nm) == 0 ? sz * nm : 0;
}

static int lat_add(kb_lat *l, int64_t v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        int64_t *p = realloc(l->v, cap * sizeof(*p));
        if (!p)
            return -1;
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return 0;
}

static uint64_t rnd(bench *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

/* note_error counts an error and keeps the first few messages. */
static void note_error(bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(bench *b, const char *fmt, ...)
{
    if (b->errors < KB_ERRORS_KEPT) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err[b->errors], KB_ERR_MAX, fmt, ap);
        va_end(ap);
    }
    b->errors++;
}

static double ms(int64_t ns) { return (double)ns / 1e6; }

static void cpu_mark(bench *b, long long *last, const char *phase)
{
    long long now = bench_cpu_ms(b->cc);
    printf("| cloudcore CPU time in %s | %.2f s |\n", phase, (double)(now - *last) / 1000);
    *last = now;
    fflush(stdout);
}

/* ---- curl handles ---- */

static int easy_setup(bench *b, CURL *h, kb_buf *resp)
{
    CURLcode c = CURLE_OK;
#define SET(o, v) \
    if (c == CURLE_OK) \
    c = curl_easy_setopt(h, o, v)
    SET(CURLOPT_CAINFO, b->ca);
    SET(CURLOPT_SSLCERT, b->crt);
    SET(CURLOPT_SSLKEY, b->key);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, resp);
    SET(CURLOPT_TIMEOUT, (long)KB_REQ_TIMEOUT_S);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
#undef SET
    if (c != CURLE_OK)
        fprintf(stderr, "kubeapi_bench: curl_easy_setopt: %s\n", curl_easy_strerror(c));
    return c == CURLE_OK ? 0 : -1;
}

/* easy_request sets method (GET, POST, PATCH), URL and body of h. PATCH
 * bodies are merge patches, POST bodies JSON. */
static int easy_request(bench *b, CURL *h, const char *method, const char *url, const char *body)
{
    CURLcode c = curl_easy_setopt(h, CURLOPT_URL, url);
    if (c == CURLE_OK && strcmp(method, "GET") == 0) {
        c = curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        if (c == CURLE_OK)
            c = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    } else if (c == CURLE_OK) {
        c = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        if (c == CURLE_OK)
            c = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        if (c == CURLE_OK)
            c = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST,
                                 strcmp(method, "POST") == 0 ? NULL : method);
        if (c == CURLE_OK)
            c = curl_easy_setopt(h, CURLOPT_HTTPHEADER,
                                 strcmp(method, "PATCH") == 0 ? b->merge_hdr : b->json_hdr);
    }
    if (c != CURLE_OK)
        fprintf(stderr, "kubeapi_bench: curl_easy_setopt: %s\n", curl_easy_strerror(c));
    return c == CURLE_OK ? 0 : -1;
}

/* check_done checks a finished transfer: curl's result and a 2xx status.
 * Returns 0, or -1 after noting the error. */
static int check_done(bench *b, CURL *h, CURLcode rc, const char *method, const char *url,
                      const kb_buf *resp)
{
    long code = 0;
    if (rc != CURLE_OK) {
        note_error(b, "%s %s: %s", method, url, curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code < 200 || code > 299) {
        note_error(b, "%s %s: HTTP %ld: %.300s", method, url, code, resp->p ? resp->p : "");
        return -1;
    }
    return 0;
}

/* one synchronous request on h; resp holds the body. Returns the check. */
static int do_request(bench *b, CURL *h, kb_buf *resp, const char *method, const char *url,
                      const char *body)
{
    buf_reset(resp);
    if (easy_request(b, h, method, url, body) != 0)
        return -1;
    return check_done(b, h, curl_easy_perform(h), method, url, resp);
}

/* ---- the load driver ---- */

/* run_load keeps b->conns requests in flight: count of them (count > 0),
 * or as many as start within seconds (count 0). Latencies go to lat.
 * Returns the number of requests done; errors are noted. */
static long run_load(bench *b, kb_gen gen, long count, double seconds, kb_lat *lat)
{
    int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9);
    long issued = 0, done = 0, running = 0;
    int failed = 0;
    for (long i = 0; i < b->conns && (count == 0 || issued < count); i++) {
        slot *s = &b->slots[i];
        gen(b, s, issued++);
        buf_reset(&s->resp);
        if (easy_request(b, s->h, s->method, s->url, s->body) != 0)
            return -1;
        s->t0 = bench_now_ns();
        curl_multi_add_handle(b->multi, s->h);
        running++;
    }
    while (running > 0) {
        int still = 0;
        CURLMcode mc = curl_multi_perform(b->multi, &still);
        /* curl_multi_wait, not curl_multi_poll: with Debian's libcurl
         * 7.88.1 (OpenSSL) curl_multi_poll sat out its whole timeout now
         * and then with answers already readable (1 s stalls on both
         * connections at once); curl_multi_wait does not. */
        if (mc == CURLM_OK)
            mc = curl_multi_wait(b->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            fprintf(stderr, "kubeapi_bench: curl multi: %s\n", curl_multi_strerror(mc));
            return -1;
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(b->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            int64_t now = bench_now_ns();
            CURLcode rc = m->data.result;
            long nc = 0;
            if (curl_easy_getinfo(s->h, CURLINFO_NUM_CONNECTS, &nc) == CURLE_OK)
                b->connects += nc;
            curl_multi_remove_handle(b->multi, s->h);
            running--;
            done++;
            if (check_done(b, s->h, rc, s->method, s->url, &s->resp) != 0)
                failed = 1;
            else if (lat_add(lat, now - s->t0) != 0)
                return -1;
            int more = count > 0 ? issued < count : now < end;
            if (!more || failed)
                continue;
            gen(b, s, issued++);
            buf_reset(&s->resp);
            if (easy_request(b, s->h, s->method, s->url, s->body) != 0)
                return -1;
            s->t0 = bench_now_ns();
            curl_multi_add_handle(b->multi, s->h);
            running++;
        }
    }
    return done;
}

static void gen_create(bench *b, slot *s, long i)
{
    s->method = "POST";
    snprintf(s->url, sizeof(s->url), "%s/api/v1/namespaces/" KB_NS "/pods", b->base);
    snprintf(s->body, sizeof(s->body),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"pod-%06ld\","
             "\"labels\":{\"app\":\"bench\",\"i\":\"%ld\"}},\"spec\":{\"containers\":"
             "[{\"name\":\"c\",\"image\":\"localhost/busybox:1.0\"}]}}",
             i, i % 10);
}

static void gen_create_small(bench *b, slot *s, long i)
{
    gen_create(b, s, i);
    snprintf(s->url, sizeof(s->url), "%s/api/v1/namespaces/" KB_SMALL_NS "/pods", b->base);
}

static void gen_list_small(bench *b, slot *s, long i)
{
    (void)i;
    s->method = "GET";
    snprintf(s->url, sizeof(s->url),
             "%s/api/v1/namespaces/" KB_SMALL_NS "/pods?labelSelector=i%%3D3", b->base);
}

static void gen_get(bench *b, slot *s, long i)
{
    (void)i;
    s->method = "GET";
    snprintf(s->url, sizeof(s->url), "%s/api/v1/namespaces/" KB_NS "/pods/pod-%06ld", b->base,
             (long)(rnd(b) % (uint64_t)b->pods));
}

static void gen_list(bench *b, slot *s, long i)
{
    (void)i;
    s->method = "GET";
    snprintf(s->url, sizeof(s->url), "%s/api/v1/namespaces/" KB_NS "/pods?labelSelector=i%%3D3",
             b->base);
}

static void gen_patch(bench *b, slot *s, long i)
{
    s->method = "PATCH";
    snprintf(s->url, sizeof(s->url), "%s/api/v1/namespaces/" KB_NS "/pods/pod-%06ld", b->base,
             (long)(rnd(b) % (uint64_t)b->pods));
    snprintf(s->body, sizeof(s->body), "{\"metadata\":{\"labels\":{\"touched\":\"%ld\"}}}", i);
}

/* print_load prints one row of the load table. */
static void print_load(const char *what, long done, double secs, kb_lat *l, long connects)
{
    bench_sort_i64(l->v, l->n);
    printf("| %s | %.0f req/s (%ld in %.2f s; p50 %.2f ms, p99 %.2f ms; %ld new connections) |\n",
           what, (double)done / secs, done, secs, ms(bench_pct_i64(l->v, l->n, 50)),
           ms(bench_pct_i64(l->v, l->n, 99)), connects);
    fflush(stdout);
}

/* ---- processes ---- */

/* free_port returns a loopback port that was free a moment ago, or -1. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* run_wait waits for pid within timeout; returns its exit code, or -1. */
static int run_wait(pid_t pid, int timeout_s)
{
    int st = 0;
    if (bench_child_wait(pid, timeout_s, &st) != 0) {
        kill(pid, SIGKILL);
        bench_child_wait(pid, KB_STOP_S, &st);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* run_capture runs argv with stdout into out; returns the exit code
 * (-1: did not run, killed or timed out). */
static int run_capture(char *const argv[], kb_buf *out)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = bench_spawn(argv, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    buf_reset(out);
    int64_t deadline = bench_now_ns() + (int64_t)KB_CHILD_S * 1000000000LL;
    char chunk[65536];
    for (;;) {
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        struct pollfd p = {fds[0], POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            fprintf(stderr, "kubeapi_bench: %s: no output end within %d s\n", argv[0],
                    KB_CHILD_S);
            break;
        }
        ssize_t r = read(fds[0], chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (buf_add(out, chunk, (size_t)r) != 0)
            break;
    }
    close(fds[0]);
    return run_wait(pid, KB_CHILD_S);
}

static int start_cloudcore(bench *b)
{
    int port = free_port();
    if (port < 0) {
        fprintf(stderr, "kubeapi_bench: no free port\n");
        return -1;
    }
    char server[64], listen[80], config[KB_PATH_MAX + 16];
    snprintf(server, sizeof(server), "127.0.0.1:%d", port);
    snprintf(listen, sizeof(listen), "--kubeapi.listen=127.0.0.1:%d", port);
    snprintf(config, sizeof(config), "%s/cloudcore.yaml", b->dir);
    char *kargv[] = {b->keadm, "init", "--dir", b->dir, "--kubeapi-server", server, NULL};
    pid_t kp = bench_spawn(kargv, -1);
    if (kp < 0 || run_wait(kp, KB_START_S) != 0) {
        fprintf(stderr, "kubeapi_bench: %s init --dir %s failed\n", b->keadm, b->dir);
        return -1;
    }
    char *cargv[] = {b->cloudcore,
                     "--config",
                     config,
                     "--grpc.listen=127.0.0.1:0",
                     "--http.listen=127.0.0.1:0",
                     listen,
                     "--log_level=warn",
                     NULL};
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    b->cc = bench_spawn(cargv, fds[1]);
    close(fds[1]);
    if (b->cc < 0) {
        b->cc = 0;
        close(fds[0]);
        return -1;
    }
    char line[256] = "";
    size_t n = 0;
    int64_t deadline = bench_now_ns() + (int64_t)KB_START_S * 1000000000LL;
    while (n < sizeof(line) - 1 && !strchr(line, '\n')) {
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        struct pollfd p = {fds[0], POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t r = read(fds[0], line + n, sizeof(line) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        line[n] = '\0';
    }
    close(fds[0]); /* cloudcore prints nothing more and ignores SIGPIPE */
    const char *k = strstr(line, "kubeapi=");
    if (strncmp(line, "ready", 5) != 0 || !k || atoi(k + 8) != port) {
        fprintf(stderr, "kubeapi_bench: cloudcore did not print \"ready ... kubeapi=%d\": %s\n",
                port, line);
        return -1;
    }
    snprintf(b->base, sizeof(b->base), "https://%s", server);
    return 0;
}

/* ---- kubectl ---- */

static int count_lines(const kb_buf *o)
{
    int n = 0;
    for (size_t i = 0; i < o->n; i++)
        n += o->p[i] == '\n';
    return n;
}

static int phase_kubectl(bench *b)
{
    const char *variants[][3] = {{"", NULL, NULL}, {" -o wide", "-o", "wide"},
                                 {" -o json", "-o", "json"}};
    kb_buf out = {0};
    int rc = 0;
    for (int v = 0; v < 3 && rc == 0; v++) {
        char *argv[] = {b->kubectl, "get", "pods", "-n", KB_NS, (char *)variants[v][1],
                        (char *)variants[v][2], NULL};
        int64_t t0 = bench_now_ns();
        int code = run_capture(argv, &out);
        double secs = (double)(bench_now_ns() - t0) / 1e9;
        if (code != 0) {
            note_error(b, "kubectl get pods -n " KB_NS "%s: exit %d", variants[v][0], code);
            rc = -1;
            break;
        }
        if (v < 2) {
            int lines = count_lines(&out);
            if (lines != b->pods + 1) {
                note_error(b, "kubectl get pods -n " KB_NS "%s: %d lines, want %ld", variants[v][0],
                           lines, b->pods + 1);
                rc = -1;
            }
            printf("| kubectl get pods -n %s%s | %.2f s (%d lines, %zu bytes) |\n", KB_NS,
                   variants[v][0], secs, lines, out.n);
        } else {
            json_error_t je;
            json_t *j = out.n ? json_loadb(out.p, out.n, 0, &je) : NULL;
            size_t items = json_array_size(json_object_get(j, "items"));
            json_decref(j);
            if (items != (size_t)b->pods) {
                note_error(b, "kubectl get pods -o json: %zu items, want %ld", items, b->pods);
                rc = -1;
            }
            printf("| kubectl get pods -n %s%s | %.2f s (%zu items, %zu bytes) |\n", KB_NS,
                   variants[v][0], secs, items, out.n);
        }
        fflush(stdout);
    }
    free(out.p);
    return rc;
}

/* ---- paginated lists ---- */

static int phase_python(bench *b)
{
    char script[PATH_MAX], limit[16];
    snprintf(script, sizeof(script), "%s/kubeapi_pylist.py", KB_SRC_DIR);
    snprintf(limit, sizeof(limit), "%d", KB_PAGE);
    char *argv[] = {KB_PYTHON, script, b->kubeconfig, KB_NS, limit, NULL};
    kb_buf out = {0};
    int64_t t0 = bench_now_ns();
    int code = run_capture(argv, &out);
    double wall = (double)(bench_now_ns() - t0) / 1e9;
    long count = -1, pages = 0;
    double secs = 0;
    if (code != 0 || !out.p || sscanf(out.p, "%ld %ld %lf", &count, &pages, &secs) != 3 ||
        count != b->pods) {
        note_error(b, "kubeapi_pylist.py: exit %d, output \"%.100s\", want %ld pods", code,
                   out.p ? out.p : "", b->pods);
        free(out.p);
        return -1;
    }
    printf("| python3-kubernetes list_namespaced_pod, limit %d | %.2f s (%ld pods, %ld pages; "
           "%.2f s with the interpreter's start) |\n",
           KB_PAGE, secs, count, pages, wall);
    fflush(stdout);
    free(out.p);
    return 0;
}

static int phase_curl_pages(bench *b)
{
    CURL *h = curl_easy_init();
    kb_buf resp = {0};
    char url[KB_URL_MAX], cont[KB_URL_MAX] = "";
    long count = 0, pages = 0;
    int rc = h ? easy_setup(b, h, &resp) : -1;
    int64_t t0 = bench_now_ns();
    while (rc == 0) {
        char *esc = cont[0] ? curl_easy_escape(h, cont, 0) : NULL;
        snprintf(url, sizeof(url), "%s/api/v1/namespaces/" KB_NS "/pods?limit=%d%s%s", b->base,
                 KB_PAGE, esc ? "&continue=" : "", esc ? esc : "");
        curl_free(esc);
        if (do_request(b, h, &resp, "GET", url, NULL) != 0) {
            rc = -1;
            break;
        }
        json_error_t je;
        json_t *j = json_loadb(resp.p, resp.n, 0, &je);
        const char *c = json_string_value(json_object_get(json_object_get(j, "metadata"),
                                                          "continue"));
        count += (long)json_array_size(json_object_get(j, "items"));
        pages++;
        snprintf(cont, sizeof(cont), "%s", c ? c : "");
        if (!j) {
            note_error(b, "GET %s: not JSON: %s", url, je.text);
            rc = -1;
        }
        json_decref(j);
        if (!cont[0])
            break;
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (rc == 0 && count != b->pods) {
        note_error(b, "paginated list (curl): %ld pods, want %ld", count, b->pods);
        rc = -1;
    }
    if (rc == 0)
        printf("| libcurl + jansson, limit %d, one connection | %.2f s (%ld pods, %ld pages) |\n",
               KB_PAGE, secs, count, pages);
    fflush(stdout);
    free(resp.p);
    if (h)
        curl_easy_cleanup(h);
    return rc;
}

/* ---- watch latency ---- */

/* on_watch_line handles one watch event line. */
static void on_watch_line(bench *b, const char *line, size_t n)
{
    int64_t now = bench_now_ns();
    json_error_t je;
    json_t *j = json_loadb(line, n, 0, &je);
    if (!j) {
        bench_waiter_fail(&b->w, "watch: a line that is not JSON: %s", je.text);
        return;
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    json_t *obj = json_object_get(j, "object");
    json_t *data = json_object_get(obj, "data");
    const char *seq = json_string_value(json_object_get(data, "seq"));
    const char *sent = json_string_value(json_object_get(data, "sent"));
    if (type && strcmp(type, "ERROR") == 0) {
        bench_waiter_fail(&b->w, "watch: ERROR event: %.200s", line);
    } else if (type && strcmp(type, "MODIFIED") == 0 && seq && sent) {
        long i = atol(seq);
        if (i >= 0 && i < b->ev_want) {
            b->ev_lat[i] = now - atoll(sent);
            atomic_fetch_add(&b->events, 1);
            bench_waiter_signal(&b->w);
        }
    }
    json_decref(j);
}

static size_t on_watch_data(char *d, size_t sz, size_t nm, void *arg)
{
    bench *b = arg;
    if (buf_add(&b->wbuf, d, sz * nm) != 0)
        return 0;
    char *start = b->wbuf.p, *nl;
    while ((nl = memchr(start, '\n', b->wbuf.n - (size_t)(start - b->wbuf.p)))) {
        if (nl > start)
            on_watch_line(b, start, (size_t)(nl - start));
        start = nl + 1;
    }
    size_t rest = b->wbuf.n - (size_t)(start - b->wbuf.p);
    memmove(b->wbuf.p, start, rest);
    b->wbuf.n = rest;
    b->wbuf.p[rest] = '\0';
    return sz * nm;
}

static int on_watch_progress(void *arg, curl_off_t a, curl_off_t b2, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b2, (void)c, (void)d;
    return atomic_load(&((bench *)arg)->watch_stop) ? 1 : 0;
}

static void *watch_thread(void *arg)
{
    bench *b = arg;
    CURL *h = curl_easy_init();
    kb_buf unused = {0};
    char url[KB_URL_MAX];
    snprintf(url, sizeof(url),
             "%s/api/v1/namespaces/" KB_LAT_NS "/configmaps?watch=true&resourceVersion=%s",
             b->base, b->watch_rv);
    if (!h || easy_setup(b, h, &unused) != 0 || easy_request(b, h, "GET", url, NULL) != 0) {
        bench_waiter_fail(&b->w, "watch: cannot set up the request");
        if (h)
            curl_easy_cleanup(h);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 0L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_watch_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, b);
    b->watch_rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &b->watch_code);
    if (!atomic_load(&b->watch_stop))
        bench_waiter_fail(&b->w, "watch ended: %s, HTTP %ld", curl_easy_strerror(b->watch_rc),
                          b->watch_code);
    curl_easy_cleanup(h);
    return NULL;
}

static int phase_watch(bench *b)
{
    CURL *h = curl_easy_init();
    kb_buf resp = {0};
    char url[KB_URL_MAX], body[256];
    int rc = h ? easy_setup(b, h, &resp) : -1;
    snprintf(url, sizeof(url), "%s/api/v1/namespaces", b->base);
    if (rc == 0)
        rc = do_request(b, h, &resp, "POST", url,
                        "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"" KB_LAT_NS
                        "\"}}");
    snprintf(url, sizeof(url), "%s/api/v1/namespaces/" KB_LAT_NS "/configmaps", b->base);
    if (rc == 0)
        rc = do_request(b, h, &resp, "POST", url,
                        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"" KB_LAT_CM
                        "\"},\"data\":{\"seq\":\"-1\",\"sent\":\"0\"}}");
    if (rc == 0) {
        json_error_t je;
        json_t *j = json_loadb(resp.p, resp.n, 0, &je);
        const char *rv = json_string_value(
            json_object_get(json_object_get(j, "metadata"), "resourceVersion"));
        snprintf(b->watch_rv, sizeof(b->watch_rv), "%s", rv ? rv : "");
        json_decref(j);
        if (!b->watch_rv[0]) {
            note_error(b, "POST %s: no metadata.resourceVersion in the answer", url);
            rc = -1;
        }
    }
    /* patch 0 warms the watch connection up and is not counted */
    b->ev_want = b->watch_events + 1;
    b->ev_lat = calloc((size_t)b->ev_want, sizeof(int64_t));
    pthread_t th;
    int started = 0;
    if (rc == 0 && b->ev_lat && pthread_create(&th, NULL, watch_thread, b) == 0)
        started = 1;
    else
        rc = -1;
    snprintf(url, sizeof(url), "%s/api/v1/namespaces/" KB_LAT_NS "/configmaps/" KB_LAT_CM,
             b->base);
    for (long i = 0; rc == 0 && i < b->ev_want; i++) {
        int64_t t = bench_now_ns();
        snprintf(body, sizeof(body), "{\"data\":{\"seq\":\"%ld\",\"sent\":\"%lld\"}}", i,
                 (long long)t);
        if (do_request(b, h, &resp, "PATCH", url, body) != 0 ||
            bench_waiter_wait(&b->w, &b->events, i + 1, "watch events") != 0)
            rc = -1;
    }
    if (started) {
        atomic_store(&b->watch_stop, 1);
        pthread_join(th, NULL);
    }
    if (rc == 0 && atomic_load(&b->events) != b->ev_want) {
        note_error(b, "watch: %ld events, want %ld", atomic_load(&b->events), b->ev_want);
        rc = -1;
    }
    if (rc == 0) {
        int64_t *l = b->ev_lat + 1;
        size_t n = (size_t)b->watch_events;
        bench_sort_i64(l, n);
        printf("| patch → watch MODIFIED event, %zu patches one at a time | p50 %.2f ms, p99 "
               "%.2f ms, max %.2f ms |\n",
               n, ms(bench_pct_i64(l, n, 50)), ms(bench_pct_i64(l, n, 99)),
               ms(bench_pct_i64(l, n, 100)));
    } else if (atomic_load(&b->w.failed)) {
        note_error(b, "%s", b->w.first_error);
    }
    fflush(stdout);
    free(resp.p);
    free(b->wbuf.p);
    if (h)
        curl_easy_cleanup(h);
    return rc;
}

/* ---- main ---- */

static const char USAGE[] =
    "usage: ke-bench-kubeapi [--pods N] [--conns C] [--seconds S] [--watch-events M]\n"
    "                        [--kubectl PATH] [--keep]\n"
    "  --pods N          pods created in namespace bench, 10..999999 (default 10000)\n"
    "  --conns C         concurrent connections, 1..128 (default 8)\n"
    "  --seconds S       length of each get/list/patch load, 1..600 (default 5)\n"
    "  --watch-events M  patches timed through a watch, 1..100000 (default 200)\n"
    "  --kubectl PATH    kubectl (default " KB_KUBECTL_DEFAULT ", else kubectl on PATH)\n"
    "  --keep            leave the temporary directory (PKI, database)\n";

static int parse_long(const char *flag, const char *arg, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "kubeapi_bench: --%s must be %ld..%ld\n", flag, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* find_kubectl: the default path, else kubectl on PATH. */
static int find_kubectl(bench *b)
{
    if (access(KB_KUBECTL_DEFAULT, X_OK) == 0) {
        snprintf(b->kubectl, sizeof(b->kubectl), "%s", KB_KUBECTL_DEFAULT);
        return 0;
    }
    const char *path = getenv("PATH");
    char dir[PATH_MAX];
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
        snprintf(b->kubectl, sizeof(b->kubectl), "%s/kubectl", dir);
        if (n && access(b->kubectl, X_OK) == 0)
            return 0;
        path += n + (path[n] == ':');
    }
    fprintf(stderr, "kubeapi_bench: no kubectl (" KB_KUBECTL_DEFAULT " or on PATH): --kubectl\n");
    return -1;
}

static int parse_args(bench *b, int argc, char **argv)
{
    static const struct option opts[] = {
        {"pods", required_argument, NULL, 'p'},   {"conns", required_argument, NULL, 'c'},
        {"seconds", required_argument, NULL, 's'}, {"watch-events", required_argument, NULL, 'm'},
        {"kubectl", required_argument, NULL, 'k'}, {"keep", no_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    b->pods = KB_DEFAULT_PODS;
    b->conns = KB_DEFAULT_CONNS;
    b->seconds = KB_DEFAULT_SECONDS;
    b->watch_events = KB_DEFAULT_WATCH_EVENTS;
    bench_sibling_path(b->cloudcore, sizeof(b->cloudcore), BENCH_REL_CLOUDCORE);
    bench_sibling_path(b->keadm, sizeof(b->keadm), BENCH_REL_KEADM);
    int c, bad = 0;
    while (!bad && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': bad = parse_long("pods", optarg, 10, KB_MAX_PODS, &b->pods); break;
        case 'c': bad = parse_long("conns", optarg, 1, KB_MAX_CONNS, &b->conns); break;
        case 's': bad = parse_long("seconds", optarg, 1, KB_MAX_SECONDS, &b->seconds); break;
        case 'm':
            bad = parse_long("watch-events", optarg, 1, KB_MAX_WATCH_EVENTS, &b->watch_events);
            break;
        case 'k': snprintf(b->kubectl, sizeof(b->kubectl), "%s", optarg); break;
        case 'K': b->keep = 1; break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: fputs(USAGE, stderr); return 2;
        }
    }
    if (bad)
        return 2;
    if (optind < argc) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (!b->kubectl[0] && find_kubectl(b) != 0)
        return 2;
    return 0;
}

static int setup_curl(bench *b)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    b->multi = curl_multi_init();
    b->json_hdr = curl_slist_append(NULL, "Content-Type: application/json");
    b->merge_hdr = curl_slist_append(NULL, "Content-Type: application/merge-patch+json");
    b->slots = calloc((size_t)b->conns, sizeof(slot));
    if (!b->multi || !b->json_hdr || !b->merge_hdr || !b->slots)
        return -1;
    curl_multi_setopt(b->multi, CURLMOPT_MAXCONNECTS, b->conns + 4);
    for (long i = 0; i < b->conns; i++) {
        slot *s = &b->slots[i];
        s->b = b;
        s->h = curl_easy_init();
        if (!s->h || easy_setup(b, s->h, &s->resp) != 0 ||
            curl_easy_setopt(s->h, CURLOPT_PRIVATE, s) != CURLE_OK)
            return -1;
    }
    return 0;
}

static void free_curl(bench *b)
{
    for (long i = 0; b->slots && i < b->conns; i++) {
        if (b->slots[i].h)
            curl_easy_cleanup(b->slots[i].h);
        free(b->slots[i].resp.p);
    }
    free(b->slots);
    if (b->multi)
        curl_multi_cleanup(b->multi);
    curl_slist_free_all(b->json_hdr);
    curl_slist_free_all(b->merge_hdr);
    curl_global_cleanup();
}

int main(int argc, char **argv)
{
    static bench bench_ctx;
    bench *b = &bench_ctx;
    int rc = parse_args(b, argc, argv);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    bench_main_init("kubeapi_bench", &b->w, KB_STALL_S); /* before any thread exists */
    b->rng = 0x9e3779b97f4a7c15ULL;
    int status = 1;
    kb_lat lat = {0};
    long long cpu = 0;

    printf("command: ke-bench-kubeapi --pods %ld --conns %ld --seconds %ld --watch-events %ld "
           "--kubectl %s\n",
           b->pods, b->conns, b->seconds, b->watch_events, b->kubectl);
    printf("Kubernetes API: %ld pods, %ld connections, %ld s loads, %ld watch events; %ld CPUs\n",
           b->pods, b->conns, b->seconds, b->watch_events, sysconf(_SC_NPROCESSORS_ONLN));
    if (bench_make_tmp(b->tmp, sizeof(b->tmp), "ke-kubeapibench") != 0)
        goto out;
    if (snprintf(b->dir, sizeof(b->dir), "%s/cloud", b->tmp) >= (int)sizeof(b->dir) ||
        snprintf(b->ca, sizeof(b->ca), "%s/ca.crt", b->dir) >= (int)sizeof(b->ca) ||
        snprintf(b->crt, sizeof(b->crt), "%s/admin.crt", b->dir) >= (int)sizeof(b->crt) ||
        snprintf(b->key, sizeof(b->key), "%s/admin.key", b->dir) >= (int)sizeof(b->key) ||
        snprintf(b->kubeconfig, sizeof(b->kubeconfig), "%s/admin.kubeconfig", b->dir) >=
            (int)sizeof(b->kubeconfig)) {
        fprintf(stderr, "kubeapi_bench: the temporary directory's path is too long\n");
        goto out;
    }
    if (start_cloudcore(b) != 0)
        goto out;
    if (setenv("KUBECONFIG", b->kubeconfig, 1) != 0 || setup_curl(b) != 0) {
        fprintf(stderr, "kubeapi_bench: cannot set up libcurl\n");
        goto out;
    }
    long rss_idle = bench_rss_kib(b->cc);
    cpu = bench_cpu_ms(b->cc);
    printf("cloudcore pid %d, Kubernetes API on %s; RSS idle %.1f MiB\n\n", (int)b->cc, b->base,
           (double)rss_idle / 1024);
    printf("| figure | value |\n|---|---|\n");
    fflush(stdout);

    /* the namespace, then the pods */
    {
        CURL *h = curl_easy_init();
        kb_buf resp = {0};
        char url[KB_URL_MAX];
        snprintf(url, sizeof(url), "%s/api/v1/namespaces", b->base);
        int r = h ? easy_setup(b, h, &resp) : -1;
        if (r == 0)
            r = do_request(b, h, &resp, "POST", url,
                           "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":"
                           "\"" KB_NS "\"}}");
        if (r == 0)
            r = do_request(b, h, &resp, "POST", url,
                           "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":"
                           "\"" KB_SMALL_NS "\"}}");
        free(resp.p);
        if (h)
            curl_easy_cleanup(h);
        if (r != 0)
            goto out;
    }
    b->connects = 0;
    int64_t t0 = bench_now_ns();
    long done = run_load(b, gen_create, b->pods, 0, &lat);
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (done != b->pods || b->errors) {
        fprintf(stderr, "kubeapi_bench: %ld of %ld creates done\n", done, b->pods);
        goto out;
    }
    bench_sort_i64(lat.v, lat.n);
    printf("| create pods (POST), %ld connections | %.0f/s (%ld in %.2f s; p50 %.2f ms, p99 %.2f "
           "ms; %ld new connections) |\n",
           b->conns, (double)done / secs, done, secs, ms(bench_pct_i64(lat.v, lat.n, 50)),
           ms(bench_pct_i64(lat.v, lat.n, 99)), b->connects);
    lat.n = 0;
    if (run_load(b, gen_create_small, KB_SMALL_PODS, 0, &lat) != KB_SMALL_PODS || b->errors) {
        fprintf(stderr, "kubeapi_bench: cannot create the pods of namespace " KB_SMALL_NS "\n");
        goto out;
    }
    long rss_loaded = bench_rss_kib(b->cc);
    cpu_mark(b, &cpu, "the creates");

    if (phase_kubectl(b) != 0)
        goto out;
    cpu_mark(b, &cpu, "kubectl");
    if (phase_python(b) != 0 || phase_curl_pages(b) != 0)
        goto out;
    cpu_mark(b, &cpu, "the paginated lists");

    struct {
        const char *what;
        kb_gen gen;
    } loads[] = {
        {"get pod (random of N)", gen_get},
        {"list, labelSelector=i=3 in bench (N/10 of N pods match)", gen_list},
        {"list, labelSelector=i=3 in small (10 of 100 pods match)", gen_list_small},
        {"merge patch, a label on a random pod", gen_patch},
    };
    for (size_t i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
        lat.n = 0;
        b->connects = 0;
        t0 = bench_now_ns();
        done = run_load(b, loads[i].gen, 0, (double)b->seconds, &lat);
        secs = (double)(bench_now_ns() - t0) / 1e9;
        if (done < 0)
            goto out;
        print_load(loads[i].what, done, secs, &lat, b->connects);
        cpu_mark(b, &cpu, loads[i].what);
    }
    if (phase_watch(b) != 0)
        goto out;
    long rss_after = bench_rss_kib(b->cc);
    printf("| cloudcore RSS idle → %ld (+%d) pods → after the load | %.1f → %.1f → %.1f MiB |\n",
           b->pods, KB_SMALL_PODS, (double)rss_idle / 1024, (double)rss_loaded / 1024, (double)rss_after / 1024);
    printf("| cloudcore CPU time, whole run | %.2f s |\n", (double)bench_cpu_ms(b->cc) / 1000);
    status = b->errors ? 1 : 0;
out:
    fflush(stdout);
    if (b->errors) {
        fprintf(stderr, "kubeapi_bench: %ld error(s); the first:\n", b->errors);
        for (long i = 0; i < b->errors && i < KB_ERRORS_KEPT; i++)
            fprintf(stderr, "  %s\n", b->err[i]);
        status = 1;
    }
    free_curl(b);
    free(lat.v);
    free(b->ev_lat);
    if (bench_cloudcore_stop(b->cc, KB_STOP_S) != 0)
        status = 1;
    bench_tmp_done(b->tmp, b->keep);
    bench_waiter_destroy(&b->w);
    return status;
}
