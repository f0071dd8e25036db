/*
 * stream.c — what a streamed answer (a watch, a followed log) is made of:
 * bytes queued by a producer thread (the store's dispatcher, the rpc loop)
 * and taken by the connection's own thread in libmicrohttpd's content
 * reader, which waits on a monotonic condition variable. The reader ends
 * the answer when the producer says so, when the server stops, when the
 * client hangs up (checked every KA_STREAM_POLL_MS) or when the owner's
 * idle callback says so (a watch's deadline); it wakes at least every
 * second.
 */
#include "kubeapi_internal.h"

#include "ke_err.h"
#include "ke_time.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define KA_STREAM_POLL_MS 5000

struct ka_chunk {
    struct ka_chunk *next;
    size_t len, off;
    char data[];
};

void ka_stream_init(ka_stream *s, kubeapi *ka, struct MHD_Connection *c, size_t bound)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    ke_time_cond_init(&s->cv);
    s->ka = ka;
    s->conn = c;
    s->bound = bound;
    s->next_poll_ms = ke_time_mono_ms() + KA_STREAM_POLL_MS;
}

void ka_stream_destroy(ka_stream *s)
{
    while (s->head) {
        struct ka_chunk *c = s->head;
        s->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

int ka_stream_push_locked(ka_stream *s, const void *data, size_t n, int counted)
{
    if (counted && s->bound && s->bytes + n > s->bound)
        return KE_EFULL;
    struct ka_chunk *c = malloc(sizeof(*c) + n);
    if (!c)
        return KE_ENOMEM;
    memcpy(c->data, data, n);
    c->len = n;
    c->off = 0;
    c->next = NULL;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    s->bytes += n;
    pthread_cond_signal(&s->cv);
    return 0;
}

void ka_stream_end_locked(ka_stream *s)
{
    s->ended = 1;
    pthread_cond_signal(&s->cv);
}

/* client_gone: the peer hung up (polled without waiting). */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

ssize_t ka_stream_read(ka_stream *s, char *buf, size_t max, ka_stream_idle_fn idle, void *ud)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->head) {
            struct ka_chunk *c = s->head;
            size_t n = c->len - c->off < max ? c->len - c->off : max;
            memcpy(buf, c->data + c->off, n);
            c->off += n;
            if (c->off == c->len) {
                s->head = c->next;
                if (!s->head)
                    s->tail = NULL;
                s->bytes -= c->len;
                free(c);
            }
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (s->ended)
            break;
        /* read without ka->mu: the stop takes ka->mu, then this s->mu */
        int stopping = atomic_load(&s->ka->stopping);
        int64_t now = ke_time_mono_ms();
        if (stopping)
            break;
        if (now >= s->next_poll_ms) {
            s->next_poll_ms = now + KA_STREAM_POLL_MS;
            if (client_gone(s->conn))
                break;
        }
        int64_t wake = now + 1000 < s->next_poll_ms ? now + 1000 : s->next_poll_ms;
        if (idle) {
            int r = idle(ud, now, &wake);
            if (r > 0)
                break;
            if (r < 0)
                continue; /* it queued something */
        }
        struct timespec ts = ke_time_deadline(wake > now ? wake - now : 0);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
}
