/*
 * ke_proxy.c — see ke_proxy.h. Requests (cut, freeze, stop) reach the
 * proxy thread through a pipe; the thread acknowledges each by bumping a
 * generation counter under the mutex.
 */
#include "ke_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROXY_MAX_PAIRS 64

typedef struct pair {
    int a, b; /* client side, target side */
} pair;

struct ke_proxy {
    int listen_fd, port, target_port;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pair pairs[PROXY_MAX_PAIRS];
    int npairs;
    int frozen, accepted, last_cut;
    unsigned req_gen, done_gen;
    int want_cut, want_stop;
};

static void close_pair(ke_proxy *p, int i)
{
    struct linger lg = {1, 0}; /* reset, like a dropped link */
    setsockopt(p->pairs[i].a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    setsockopt(p->pairs[i].b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(p->pairs[i].a);
    close(p->pairs[i].b);
    p->pairs[i] = p->pairs[--p->npairs];
}

static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* forward copies what is readable on from to to; returns -1 on EOF/error. */
static int forward(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return -1;
    for (ssize_t off = 0; off < n;) {
        /* MSG_NOSIGNAL: a peer that already closed must not SIGPIPE the test */
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

static void *proxy_main(void *arg)
{
    ke_proxy *p = arg;
    for (;;) {
        struct pollfd fds[2 + 2 * PROXY_MAX_PAIRS];
        int n = 0;
        fds[n++] = (struct pollfd){p->wake[0], POLLIN, 0};
        fds[n++] = (struct pollfd){p->listen_fd, POLLIN, 0};
        pthread_mutex_lock(&p->mu);
        int frozen = p->frozen, np = p->npairs;
        for (int i = 0; i < np; i++) {
            fds[n++] = (struct pollfd){p->pairs[i].a, frozen ? 0 : POLLIN, 0};
            fds[n++] = (struct pollfd){p->pairs[i].b, frozen ? 0 : POLLIN, 0};
        }
        pthread_mutex_unlock(&p->mu);
        if (poll(fds, (nfds_t)n, -1) < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&p->mu);
        if (fds[0].revents) {
            char c[64];
            if (read(p->wake[0], c, sizeof(c)) < 0) {
            }
            if (p->want_cut) {
                p->last_cut = p->npairs;
                while (p->npairs)
                    close_pair(p, 0);
                p->want_cut = 0;
            }
            int stop = p->want_stop;
            p->done_gen = p->req_gen;
            pthread_cond_broadcast(&p->cv);
            if (stop) {
                pthread_mutex_unlock(&p->mu);
                break;
            }
            pthread_mutex_unlock(&p->mu);
            continue; /* pair indices changed: poll again */
        }
        if (fds[1].revents & POLLIN) {
            int c = accept(p->listen_fd, NULL, NULL);
            if (c >= 0) {
                int t = connect_target(p->target_port);
                if (t < 0 || p->npairs == PROXY_MAX_PAIRS) {
                    close(c);
                    if (t >= 0)
                        close(t);
                } else {
                    p->pairs[p->npairs++] = (pair){c, t};
                    p->accepted++;
                }
            }
        }
        for (int i = np - 1; i >= 0; i--) {
            short ra = fds[2 + 2 * i].revents, rb = fds[3 + 2 * i].revents;
            int bad = 0;
            if (ra & (POLLIN | POLLHUP | POLLERR))
                bad |= forward(p->pairs[i].a, p->pairs[i].b) != 0;
            if (!bad && (rb & (POLLIN | POLLHUP | POLLERR)))
                bad |= forward(p->pairs[i].b, p->pairs[i].a) != 0;
            if (bad)
                close_pair(p, i);
        }
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

int ke_proxy_start(int target_port, ke_proxy **out)
{
    ke_proxy *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    p->target_port = target_port;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(p->listen_fd, 64) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&sa, &sl) != 0 || pipe(p->wake) != 0) {
        free(p);
        return -1;
    }
    p->port = ntohs(sa.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

int ke_proxy_port(const ke_proxy *p) { return p->port; }

/* request wakes the thread and waits until it has handled the request. */
static void request(ke_proxy *p)
{
    unsigned gen = ++p->req_gen;
    if (write(p->wake[1], "x", 1) < 0) {
    }
    while ((int)(p->done_gen - gen) < 0)
        pthread_cond_wait(&p->cv, &p->mu);
}

int ke_proxy_cut(ke_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->want_cut = 1;
    request(p);
    int n = p->last_cut;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void ke_proxy_freeze(ke_proxy *p, int on)
{
    pthread_mutex_lock(&p->mu);
    p->frozen = on;
    request(p);
    pthread_mutex_unlock(&p->mu);
}

int ke_proxy_accepted(ke_proxy *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->accepted;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void ke_proxy_stop(ke_proxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->want_stop = 1;
    p->want_cut = 1;
    request(p);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
