/*
 * ke_diag.c — see ke_diag.h.
 *
 * Delayed pings wait in a list ordered by due time, served by one timer
 * thread; a ping whose client cancels first is taken out of the list by
 * on_close. Whoever removes an entry from the list owns it.
 */
#include "ke_diag.h"
#include "ke_time.h"

#include "diag.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIAG_MAX_DELAY_MS 60000u
#define DIAG_MAX_TICKS 1000000u
#define DIAG_MAX_TICK_PAYLOAD 65536u

typedef struct delayed {
    struct delayed *next;
    ke_rpc_call *call; /* holds a reference */
    struct timespec due;
    ProtobufCBinaryData payload;
} delayed;

struct ke_diag {
    char *server;
    char *version;
    _Atomic uint64_t cancelled;
    _Atomic uint64_t streams;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    delayed *waiting; /* ordered by due */
    int stopping;
    pthread_t timer;
};

/* Ticks state for one call; on_message and on_drain may overlap. */
typedef struct ticks {
    pthread_mutex_t mu;
    uint32_t count, sent, size;
    uint8_t *payload;
    int done;
} ticks;

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void ping_reply(ke_diag *d, ke_rpc_call *call, ProtobufCBinaryData payload)
{
    Ke__V1__PingReply r = KE__V1__PING_REPLY__INIT;
    char cn[256] = "";
    r.payload = payload;
    r.server = d->server;
    r.version = d->version;
    r.time_ms = ke_time_wall_ms(); /* a timestamp for people, not a timer */
    r.calls_cancelled = atomic_load(&d->cancelled);
    r.streams_open = atomic_load(&d->streams);
    ke_rpc_call_peer_cn(call, cn, sizeof(cn));
    r.peer_identity = cn;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
}

static void ping_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    ke_diag *d = ud;
    const Ke__V1__PingRequest *req = (const Ke__V1__PingRequest *)msg;
    if (req->delay_ms == 0) {
        ping_reply(d, call, req->payload);
        return;
    }
    if (req->delay_ms > DIAG_MAX_DELAY_MS) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "delay_ms: at most 60000", NULL);
        return;
    }
    delayed *w = calloc(1, sizeof(*w));
    if (!w || (req->payload.len && !(w->payload.data = malloc(req->payload.len)))) {
        free(w);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    if (req->payload.len)
        memcpy(w->payload.data, req->payload.data, req->payload.len);
    w->payload.len = req->payload.len;
    ke_rpc_call_ref(call);
    w->call = call;
    clock_gettime(CLOCK_MONOTONIC, &w->due);
    w->due.tv_sec += req->delay_ms / 1000;
    w->due.tv_nsec += (long)(req->delay_ms % 1000) * 1000000L;
    if (w->due.tv_nsec >= 1000000000L) {
        w->due.tv_sec++;
        w->due.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    delayed **pp = &d->waiting;
    while (*pp && !ts_before(&w->due, &(*pp)->due))
        pp = &(*pp)->next;
    w->next = *pp;
    *pp = w;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void delayed_free(delayed *w)
{
    ke_rpc_call_unref(w->call);
    free(w->payload.data);
    free(w);
}

static void *timer_main(void *arg)
{
    ke_diag *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        if (!d->waiting) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ts_before(&now, &d->waiting->due)) {
            pthread_cond_timedwait(&d->cv, &d->mu, &d->waiting->due);
            continue;
        }
        delayed *w = d->waiting;
        d->waiting = w->next;
        pthread_mutex_unlock(&d->mu);
        ping_reply(d, w->call, w->payload);
        delayed_free(w);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void count_close(ke_diag *d, const ke_rpc_status *st)
{
    if (st->code == KE_RPC_CANCELLED)
        atomic_fetch_add(&d->cancelled, 1);
}

static void ping_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    ke_diag *d = ud;
    count_close(d, st);
    delayed *mine = NULL;
    pthread_mutex_lock(&d->mu);
    for (delayed **pp = &d->waiting; *pp; pp = &(*pp)->next) {
        if ((*pp)->call == call) {
            mine = *pp;
            *pp = mine->next;
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
    if (mine)
        delayed_free(mine);
}

static void stream_on_open(ke_rpc_call *call, void *ud)
{
    (void)call;
    atomic_fetch_add(&((ke_diag *)ud)->streams, 1);
}

static void echo_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    int rc = ke_rpc_call_send(call, msg);
    if (rc == KE_EFULL)
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED,
                           "echo send queue full: the client is not reading", NULL);
}

static void echo_on_half_close(ke_rpc_call *call, void *ud)
{
    (void)ud;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, NULL);
}

static void stream_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    ke_diag *d = ud;
    count_close(d, st);
    atomic_fetch_sub(&d->streams, 1);
    ticks *t = ke_rpc_call_get_data(call);
    if (t) {
        pthread_mutex_destroy(&t->mu);
        free(t->payload);
        free(t);
    }
}

static void ticks_fill(ke_rpc_call *call, ticks *t)
{
    pthread_mutex_lock(&t->mu);
    Ke__V1__EchoFrame f = KE__V1__ECHO_FRAME__INIT;
    f.payload.data = t->payload;
    f.payload.len = t->size;
    while (!t->done && t->sent < t->count) {
        f.seq = t->sent + 1;
        int rc = ke_rpc_call_send(call, &f.base);
        if (rc == KE_EFULL)
            break;
        if (rc != 0) {
            t->done = 1;
            break;
        }
        t->sent++;
    }
    if (!t->done && t->sent == t->count) {
        t->done = 1;
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, NULL);
    }
    pthread_mutex_unlock(&t->mu);
}

static void ticks_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Ke__V1__TicksRequest *req = (const Ke__V1__TicksRequest *)msg;
    if (req->count > DIAG_MAX_TICKS || req->payload_size > DIAG_MAX_TICK_PAYLOAD) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT,
                           "count: at most 1000000; payload_size: at most 65536", NULL);
        return;
    }
    ticks *t = calloc(1, sizeof(*t));
    if (!t || !(t->payload = calloc(1, req->payload_size + 1))) {
        free(t);
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    memset(t->payload, 'k', req->payload_size);
    t->count = req->count;
    t->size = req->payload_size;
    pthread_mutex_init(&t->mu, NULL);
    ke_rpc_call_set_data(call, t);
    ticks_fill(call, t);
}

static void ticks_on_drain(ke_rpc_call *call, void *ud)
{
    (void)ud;
    ticks *t = ke_rpc_call_get_data(call);
    if (t)
        ticks_fill(call, t);
}

int ke_diag_new(const char *server, const char *version, ke_diag **out)
{
    ke_diag *d = calloc(1, sizeof(*d));
    if (!d)
        return KE_ENOMEM;
    d->server = strdup(server ? server : "");
    d->version = strdup(version ? version : "");
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    if (!d->server || !d->version || pthread_create(&d->timer, NULL, timer_main, d) != 0) {
        free(d->server);
        free(d->version);
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
        free(d);
        return KE_ENOMEM;
    }
    pthread_setname_np(d->timer, "ke-diag-timer");
    *out = d;
    return 0;
}

int ke_diag_register(ke_diag *d, ke_rpc_server *srv)
{
    static const ke_rpc_method_def methods[] = {
        {"Ping", KE_RPC_UNARY, {.on_message = ping_on_message, .on_close = ping_on_close}},
        {"Echo", KE_RPC_BIDI_STREAM,
         {.on_open = stream_on_open, .on_message = echo_on_message,
          .on_half_close = echo_on_half_close, .on_close = stream_on_close}},
        {"Ticks", KE_RPC_SERVER_STREAM,
         {.on_open = stream_on_open, .on_message = ticks_on_message, .on_drain = ticks_on_drain,
          .on_close = stream_on_close}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__diagnostics__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), d);
}

uint64_t ke_diag_cancelled(const ke_diag *d) { return atomic_load(&d->cancelled); }

void ke_diag_free(ke_diag *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->timer, NULL);
    while (d->waiting) {
        delayed *w = d->waiting;
        d->waiting = w->next;
        ke_rpc_call_finish(w->call, KE_RPC_UNAVAILABLE, "server shutting down", NULL);
        delayed_free(w);
    }
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d->server);
    free(d->version);
    free(d);
}
