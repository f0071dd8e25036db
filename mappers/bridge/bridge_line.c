/*
 * bridge_line.c — serial lines for ke-mapper-bridge (bridge_line.h): a
 * tty in raw mode, or a non-blocking TCP connection; reopen with doubling
 * back-off; a bounded output buffer.
 */
#include "bridge_line.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

int br_line_init(br_line *l, const char *path)
{
    memset(l, 0, sizeof(*l));
    l->fd = -1;
    l->backoff_ms = BR_LINE_BACKOFF_MIN_MS;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(l->path))
        return -1;
    if (strncmp(path, "tcp:", 4) == 0 && !strrchr(path + 4, ':'))
        return -1;
    memcpy(l->path, path, n + 1);
    return 0;
}

static int open_tty(const char *path)
{
    int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        cfsetispeed(&t, B115200);
        cfsetospeed(&t, B115200);
        t.c_cflag |= CLOCAL | CREAD;
        if (tcsetattr(fd, TCSANOW, &t) != 0) {
            close(fd);
            return -1;
        }
    } /* not a tty (a pipe, a pty in a test): used as a byte stream as is */
    return fd;
}

/* open_tcp starts a non-blocking connect; *connecting says it is pending. */
static int open_tcp(const char *spec, bool *connecting)
{
    char host[BR_LINE_PATH_MAX];
    const char *colon = strrchr(spec, ':');
    size_t hl = (size_t)(colon - spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* latency only */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            *connecting = false;
        } else if (errno == EINPROGRESS) {
            *connecting = true;
        } else {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

void br_line_close(br_line *l, int64_t now_ms)
{
    if (l->fd >= 0) {
        close(l->fd);
        l->closes++;
    }
    l->fd = -1;
    l->state = BR_LINE_CLOSED;
    l->out_len = 0; /* half-written frames are resynchronised by the 0x00 */
    l->reopen_at_ms = now_ms + l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2 > BR_LINE_BACKOFF_MAX_MS ? BR_LINE_BACKOFF_MAX_MS
                                                                : l->backoff_ms * 2;
}

static int became_open(br_line *l)
{
    l->state = BR_LINE_OPEN;
    l->backoff_ms = BR_LINE_BACKOFF_MIN_MS;
    l->opens++;
    /* a frame the peer was receiving when the line went down ends here */
    static const uint8_t resync = 0;
    l->out[0] = resync;
    l->out_len = 1;
    return 1;
}

int br_line_tick(br_line *l, int64_t now_ms, short revents)
{
    if (l->state == BR_LINE_CLOSED && now_ms >= l->reopen_at_ms) {
        bool connecting = false;
        l->fd = strncmp(l->path, "tcp:", 4) == 0 ? open_tcp(l->path + 4, &connecting)
                                                  : open_tty(l->path);
        if (l->fd < 0) {
            br_line_close(l, now_ms);
            return 0;
        }
        if (!connecting)
            return became_open(l);
        l->state = BR_LINE_CONNECTING;
        return 0;
    }
    if (l->state == BR_LINE_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            br_line_close(l, now_ms);
            return 0;
        }
        return became_open(l);
    }
    return 0;
}

short br_line_events(const br_line *l)
{
    if (l->fd < 0)
        return 0;
    if (l->state == BR_LINE_CONNECTING)
        return POLLOUT;
    return (short)(POLLIN | (l->out_len ? POLLOUT : 0));
}

long br_line_read(br_line *l, uint8_t *buf, size_t cap, int64_t now_ms)
{
    if (l->state != BR_LINE_OPEN)
        return 0;
    ssize_t n = read(l->fd, buf, cap);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    br_line_close(l, now_ms); /* 0: the peer closed (QEMU exited) */
    return -1;
}

void br_line_flush(br_line *l, int64_t now_ms)
{
    while (l->state == BR_LINE_OPEN && l->out_len > 0) {
        ssize_t n = write(l->fd, l->out, l->out_len);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                br_line_close(l, now_ms);
            return;
        }
        memmove(l->out, l->out + n, l->out_len - (size_t)n);
        l->out_len -= (size_t)n;
    }
}

bool br_line_write(br_line *l, const uint8_t *buf, size_t len, int64_t now_ms)
{
    if (l->state != BR_LINE_OPEN || len > sizeof(l->out) - l->out_len) {
        l->out_dropped++;
        return false;
    }
    memcpy(l->out + l->out_len, buf, len);
    l->out_len += len;
    br_line_flush(l, now_ms);
    return true;
}
