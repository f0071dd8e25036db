/*
 * mapper_link_bench.c — ke-bench-mapperlink: the mapper SDK's framed link
 * (mappers/sdk: MapperFrame, nanopb, COBS + CRC-16) over a byte stream:
 *
 *   uart   the board bring-up firmware (mappers/boards/demo/echo.c) in
 *          qemu-system-arm, its UART (configured for 115200 baud) on a
 *          TCP socket; the firmware echoes every byte, so a frame sent
 *          comes back whole through the emulated UART's receive interrupt,
 *          ring buffer and transmit path.
 *   tcp    the same frames to an echo peer on a loopback TCP socket (a
 *          serial line reached over the network, as the bridge's tcp:
 *          lines are).
 *
 * For each: round-trip latency of one frame at a time (send, wait for it
 * back, decode; p50/p99/max over --frames N) and frames per second with
 * --window W frames in flight. QEMU does not pace its UART to the baud
 * rate, so the line rate a real 115200-baud wire allows is printed beside
 * the measured figures (10 bits a byte).
 *
 *   ke-bench-mapperlink [--frames N] [--window W] [--board B]...
 */
#include "bench_util.h"
#include "ke_frame.h"
#include "ke_link.h"
#include "ke_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LB_NAME "ke-bench-mapperlink"
#define LB_WAIT_MS 10000

static long n_frames = 2000, window = 8;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, LB_NAME ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* one frame as the SDK puts it on the wire: a ReportedUpdate of one
 * property, numbered by seq */
static size_t wire_frame(uint32_t seq, uint8_t *out, size_t cap)
{
    ke_mapper_v1_MapperFrame f;
    memset(&f, 0, sizeof(f));
    f.seq = seq;
    f.which_body = ke_mapper_v1_MapperFrame_reported_tag;
    snprintf(f.body.reported.device, sizeof(f.body.reported.device), "sensor-1");
    f.body.reported.properties_count = 1;
    snprintf(f.body.reported.properties[0].name, sizeof(f.body.reported.properties[0].name),
             "temperature");
    snprintf(f.body.reported.properties[0].value, sizeof(f.body.reported.properties[0].value),
             "21.5");
    f.body.reported.properties[0].timestamp_ms = 1764500000000 + seq;
    uint8_t pb[KE_FRAME_MAX];
    long n = ke_link_encode_frame(&f, pb, sizeof(pb));
    size_t len = 0;
    if (n <= 0 || ke_frame_encode(pb, (size_t)n, out, cap, &len) != 0)
        die("cannot encode a frame");
    return len;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* read_frame reads until the decoder completes a frame and returns its seq. */
static uint32_t read_frame(int fd, ke_frame_decoder *d)
{
    static uint8_t buf[4096];
    static size_t have, at;
    int64_t until = ke_time_mono_ms() + LB_WAIT_MS;
    for (;;) {
        while (at < have) {
            const uint8_t *payload;
            size_t len;
            if (ke_frame_decoder_push(d, buf[at++], &payload, &len) == 1) {
                ke_mapper_v1_MapperFrame f;
                if (ke_link_decode_frame(payload, len, &f) != 0)
                    die("an echoed frame does not decode");
                return f.seq;
            }
        }
        struct pollfd p = {fd, POLLIN, 0};
        int left = (int)(until - ke_time_mono_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            die("no frame back within %d ms", LB_WAIT_MS);
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0)
            die("read: %s", r == 0 ? "closed" : strerror(errno));
        have = (size_t)r;
        at = 0;
    }
}

typedef struct figures {
    double p50, p99, max, fps;
    size_t frame_bytes;
} figures;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* measure: round trips one at a time, then a window in flight. */
static figures measure(int fd)
{
    figures r;
    memset(&r, 0, sizeof(r));
    ke_frame_decoder d;
    ke_frame_decoder_init(&d);
    uint8_t wire[KE_FRAME_WIRE_MAX];
    double *rtt = calloc((size_t)n_frames, sizeof(double));
    if (!rtt)
        die("out of memory");
    uint32_t seq = 0;
    for (long i = 0; i < n_frames; i++) {
        size_t n = wire_frame(++seq, wire, sizeof(wire));
        r.frame_bytes = n;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        write_all(fd, wire, n);
        uint32_t got = read_frame(fd, &d);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (got != seq)
            die("frame %u came back as %u", seq, got);
        rtt[i] = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    }
    qsort(rtt, (size_t)n_frames, sizeof(double), cmp_double);
    r.p50 = rtt[n_frames / 2];
    r.p99 = rtt[(n_frames * 99) / 100];
    r.max = rtt[n_frames - 1];
    free(rtt);
    /* pipelined: `window` frames in flight */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long sent = 0, back = 0;
    uint32_t first = seq + 1;
    while (back < n_frames) {
        while (sent < n_frames && sent - back < window) {
            size_t n = wire_frame(first + (uint32_t)sent, wire, sizeof(wire));
            write_all(fd, wire, n);
            sent++;
        }
        uint32_t got = read_frame(fd, &d);
        if (got != first + (uint32_t)back)
            die("frame %u came back as %u (out of order)", first + (uint32_t)back, got);
        back++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    r.fps = (double)n_frames / s;
    if (d.rejected[0] || d.frames != (uint32_t)(2 * n_frames))
        die("the decoder rejected frames or lost some (%u good of %ld)", d.frames, 2 * n_frames);
    return r;
}

static void print_row(const char *what, const figures *f)
{
    printf("%-34s %6zu %9.3f %9.3f %9.3f %10.0f\n", what, f->frame_bytes, f->p50, f->p99, f->max,
           f->fps);
}

/* ---- tcp: an echo peer on loopback ---- */

static void *echo_peer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        write_all(fd, buf, (size_t)r);
    close(fd);
    return NULL;
}

static int tcp_pair(pthread_t *th)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0)
        die("listen: %s", strerror(errno));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("connect: %s", strerror(errno));
    int s = accept(ls, NULL, NULL);
    if (s < 0)
        die("accept: %s", strerror(errno));
    close(ls);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (pthread_create(th, NULL, echo_peer, (void *)(intptr_t)s) != 0)
        die("thread");
    return c;
}

/* ---- uart: the echo firmware in QEMU ---- */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &al) != 0)
        die("no free port: %s", strerror(errno));
    close(s);
    return ntohs(a.sin_port);
}

/* ok_line: the firmware's whole "nanopb OK ..." line is in text[0..n). */
static int ok_line(const char *text, size_t n)
{
    const char *ok = memmem(text, n, "nanopb OK", 9);
    return ok && memchr(ok, '\n', n - (size_t)(ok - text)) != NULL;
}

/* qemu_start runs the image and returns the connected UART socket once the
 * firmware has printed its "nanopb OK" line. */
static int qemu_start(const char *board, const char *elf, pid_t *pid)
{
    int port = free_port();
    char serial[96];
    snprintf(serial, sizeof(serial), "tcp:127.0.0.1:%d,server=on,wait=on,nodelay=on", port);
    char *argv[] = {"qemu-system-arm", "-M", (char *)board, "-nographic", "-monitor", "none",
                    "-kernel", (char *)elf, "-semihosting-config", "enable=on,target=native",
                    "-serial", serial, NULL};
    *pid = fork();
    if (*pid < 0)
        die("fork: %s", strerror(errno));
    if (*pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    int64_t until = ke_time_mono_ms() + LB_WAIT_MS;
    int fd = -1;
    while (ke_time_mono_ms() < until) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            break;
        close(fd);
        fd = -1;
        struct timespec ts = {0, 20 * 1000000L}; /* QEMU opening its socket */
        nanosleep(&ts, NULL);
    }
    if (fd < 0)
        die("%s: QEMU's UART socket never opened", board);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char text[512];
    size_t have = 0;
    while (!ok_line(text, have)) {
        struct pollfd p = {fd, POLLIN, 0};
        int left = (int)(until - ke_time_mono_ms());
        ssize_t r;
        if (left <= 0 || poll(&p, 1, left) <= 0 ||
            (r = read(fd, text + have, sizeof(text) - have)) <= 0 || have + (size_t)r >= sizeof(text))
            die("%s: no \"nanopb OK\" line from the firmware", board);
        have += (size_t)r;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *boards[4] = {0};
    int nb = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--frames") == 0 && i + 1 < argc)
            n_frames = atol(argv[++i]);
        else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc)
            window = atol(argv[++i]);
        else if (strcmp(argv[i], "--board") == 0 && i + 1 < argc && nb < 4)
            boards[nb++] = argv[++i];
        else
            die("usage: " LB_NAME " [--frames N] [--window W] [--board lm3s6965evb|netduinoplus2]...");
    }
    if (n_frames < 100 || window < 1 || window > 64)
        die("--frames at least 100, --window 1..64");
    if (nb == 0) {
        boards[nb++] = "lm3s6965evb";
        boards[nb++] = "netduinoplus2";
    }
    signal(SIGPIPE, SIG_IGN);
    printf(LB_NAME ": %ld frames each way (a ReportedUpdate of one property), window %ld\n",
           n_frames, window);
    printf("%-34s %6s %9s %9s %9s %10s\n", "path", "bytes", "p50 ms", "p99 ms", "max ms",
           "frames/s");
    pthread_t th;
    int c = tcp_pair(&th);
    figures tcp = measure(c);
    shutdown(c, SHUT_WR);
    close(c);
    pthread_join(th, NULL);
    print_row("tcp loopback, echo peer", &tcp);
    for (int b = 0; b < nb; b++) {
        char elf[4096], rel[128];
        snprintf(rel, sizeof(rel), "../../firmware/%s/echo.elf", boards[b]);
        bench_sibling_path(elf, sizeof(elf), rel);
        if (access(elf, R_OK) != 0) {
            printf("%-34s (no image %s: build with arm-none-eabi-gcc installed)\n", boards[b], elf);
            continue;
        }
        pid_t pid;
        int fd = qemu_start(boards[b], elf, &pid);
        figures u = measure(fd);
        close(fd);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        char what[80];
        snprintf(what, sizeof(what), "qemu %s UART (115200 set)", boards[b]);
        print_row(what, &u);
        double line_fps = 11520.0 / (double)u.frame_bytes;
        printf("%-34s %6zu %9.3f %9s %9s %10.0f\n", "  a real 115200-baud wire, each way",
               u.frame_bytes, 2 * 1e3 / line_fps, "-", "-", line_fps);
    }
    return 0;
}
