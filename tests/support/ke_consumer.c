/*
 * ke_consumer.c — see ke_consumer.h.
 */
#include "ke_consumer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* send_ack sends an ack of log_id; on a full client queue the newest owed
 * id waits for the next entry or the drain. mu held. */
static int send_ack(ke_consumer *c, uint64_t log_id)
{
    if (log_id > c->ack_owed)
        c->ack_owed = log_id;
    Ke__V1__SubscribeAck a = KE__V1__SUBSCRIBE_ACK__INIT;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    a.log_id = c->ack_owed;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_ACK;
    f.ack = &a;
    int rc = ke_rpc_call_send(c->call, &f.base);
    if (rc != KE_EFULL)
        c->ack_owed = 0;
    return rc;
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    ke_consumer *c = ud;
    const Ke__V1__UpstreamMessage *u = (const Ke__V1__UpstreamMessage *)m;
    pthread_mutex_lock(&c->mu);
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        ke_consumer_entry *v = realloc(c->v, cap * sizeof(*v));
        if (v) {
            c->v = v;
            c->cap = cap;
        }
    }
    if (c->n < c->cap) {
        ke_consumer_entry *e = &c->v[c->n++];
        memset(e, 0, sizeof(*e));
        e->log_id = u->log_id;
        e->seq = u->seq;
        snprintf(e->node, sizeof(e->node), "%s", u->node_name);
        if (u->message && u->message->route) {
            snprintf(e->key, sizeof(e->key), "%s", u->message->route->resource);
            snprintf(e->group, sizeof(e->group), "%s", u->message->route->group);
        }
        if (u->message && u->message->header)
            e->rv = u->message->header->resource_version;
    }
    if (c->fn)
        c->fn(u, c->ud);
    if (c->auto_ack)
        send_ack(c, u->log_id);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_drain(ke_rpc_call *call, void *ud)
{
    (void)call;
    ke_consumer *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->ack_owed)
        send_ack(c, c->ack_owed);
    pthread_mutex_unlock(&c->mu);
}

static void on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    ke_consumer *c = ud;
    pthread_mutex_lock(&c->mu);
    c->st = *st;
    c->closed = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void ke_consumer_start(ke_consumer *c, ke_rpc_channel *ch, const char *name,
                       const char *const *groups, uint32_t window, int auto_ack,
                       ke_consumer_fn fn, void *ud)
{
    static const ke_rpc_handler h = {
        .on_message = on_message, .on_drain = on_drain, .on_close = on_close};
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    assert_int_equal(ke_time_cond_init(&c->cv), 0);
    c->auto_ack = auto_ack;
    c->fn = fn;
    c->ud = ud;
    ke_rpc_stub hub = {ch, &ke__v1__hub__descriptor};
    pthread_mutex_lock(&c->mu);
    assert_int_equal(ke_rpc_stub_start(&hub, "Subscribe", &h, c, NULL, &c->call), 0);
    size_t n = 0;
    while (groups && groups[n])
        n++;
    Ke__V1__SubscribeRequest req = KE__V1__SUBSCRIBE_REQUEST__INIT;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    req.consumer = (char *)name;
    req.groups = (char **)groups;
    req.n_groups = n;
    req.window = window;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_START;
    f.start = &req;
    assert_int_equal(ke_rpc_call_send(c->call, &f.base), 0);
    pthread_mutex_unlock(&c->mu);
}

static int wait_until(ke_consumer *c, size_t n, int closed, int timeout_ms)
{
    struct timespec until = ke_time_deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    while (!(closed ? c->closed : (c->n >= n || c->closed)) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &until);
    int ok = closed ? c->closed : c->n >= n;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

int ke_consumer_wait(ke_consumer *c, size_t n, int timeout_ms)
{
    return wait_until(c, n, 0, timeout_ms);
}

int ke_consumer_wait_closed(ke_consumer *c, int timeout_ms)
{
    return wait_until(c, 0, 1, timeout_ms);
}

int ke_consumer_ack(ke_consumer *c, uint64_t log_id)
{
    pthread_mutex_lock(&c->mu);
    int rc = send_ack(c, log_id);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

size_t ke_consumer_count(ke_consumer *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

ke_consumer_entry ke_consumer_get(ke_consumer *c, size_t i)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    ke_consumer_entry e = {0};
    if (i < n)
        e = c->v[i];
    pthread_mutex_unlock(&c->mu);
    if (i >= n)
        fail_msg("consumer: entry %zu asked for, %zu received", i, n);
    return e;
}

int ke_consumer_closed(ke_consumer *c, ke_rpc_status *st)
{
    pthread_mutex_lock(&c->mu);
    int closed = c->closed;
    if (closed && st)
        *st = c->st;
    pthread_mutex_unlock(&c->mu);
    return closed;
}

ke_rpc_status ke_consumer_status(ke_consumer *c)
{
    ke_rpc_status st = {0};
    if (!ke_consumer_closed(c, &st))
        fail_msg("consumer: its stream has not ended");
    return st;
}

void ke_consumer_stop(ke_consumer *c)
{
    if (!c->call)
        return;
    ke_rpc_call_cancel(c->call);
    ke_consumer_wait_closed(c, 10000);
    ke_rpc_call_unref(c->call);
    c->call = NULL;
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}
