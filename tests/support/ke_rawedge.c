/*
 * ke_rawedge.c — see ke_rawedge.h.
 */
#include "ke_rawedge.h"

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

static void record_down(ke_rawedge *e, const Ke__V1__SequencedMessage *sm)
{
    if (e->n_down == e->cap_down) {
        size_t cap = e->cap_down ? e->cap_down * 2 : 1024;
        ke_rawedge_down *d = realloc(e->down, cap * sizeof(*d));
        if (!d)
            return;
        e->down = d;
        e->cap_down = cap;
    }
    ke_rawedge_down *d = &e->down[e->n_down++];
    memset(d, 0, sizeof(*d));
    d->seq = sm->seq;
    if (sm->message && sm->message->route) {
        snprintf(d->key, sizeof(d->key), "%s", sm->message->route->resource);
        d->del = sm->message->route->operation == KE__V1__OPERATION__OPERATION_DELETE;
    }
    if (sm->message && sm->message->header)
        d->rv = sm->message->header->resource_version;
}

static void on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    ke_rawedge *e = ud;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    pthread_mutex_lock(&e->mu);
    switch (f->frame_case) {
    case KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK:
        e->hello_ack = 1;
        e->next_edge_seq = f->hello_ack->next_edge_seq;
        break;
    case KE__V1__CLOUD_FRAME__FRAME_ACK:
        if (f->ack->seq > e->acked)
            e->acked = f->ack->seq;
        break;
    case KE__V1__CLOUD_FRAME__FRAME_MESSAGE:
        record_down(e, f->message);
        if (e->auto_ack) {
            Ke__V1__Ack a = KE__V1__ACK__INIT;
            Ke__V1__EdgeFrame ef = KE__V1__EDGE_FRAME__INIT;
            a.seq = f->message->seq;
            ef.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
            ef.ack = &a;
            /* A full client queue only delays the ack: a later one covers it. */
            if (ke_rpc_call_send(e->call, &ef.base) != 0)
                fprintf(stderr, "rawedge: ack %llu not queued\n",
                        (unsigned long long)a.seq);
        }
        break;
    case KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE:
        e->resync_done = 1;
        e->updates = f->resync_done->updates;
        e->deletes = f->resync_done->deletes;
        break;
    case KE__V1__CLOUD_FRAME__FRAME_REFUSAL:
        e->refusals++;
        e->refused_seq = f->refusal->seq;
        break;
    default:
        break;
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void on_drain(ke_rpc_call *call, void *ud)
{
    (void)call;
    ke_rawedge *e = ud;
    pthread_mutex_lock(&e->mu);
    e->drains++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    ke_rawedge *e = ud;
    pthread_mutex_lock(&e->mu);
    e->st = *st;
    e->closed = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void ke_rawedge_open(ke_rawedge *e, ke_cluster *c, const char *node, int auto_ack)
{
    static const ke_rpc_handler h = {
        .on_message = on_message, .on_drain = on_drain, .on_close = on_close};
    char ca[128], cert[200], key[200], target[64];
    memset(e, 0, sizeof(*e));
    pthread_mutex_init(&e->mu, NULL);
    assert_int_equal(ke_time_cond_init(&e->cv), 0);
    e->auto_ack = auto_ack;
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", c->dir);
    snprintf(cert, sizeof(cert), "%s/%s/node.crt", c->dir, node);
    snprintf(key, sizeof(key), "%s/%s/node.key", c->dir, node);
    snprintf(target, sizeof(target), "127.0.0.1:%d", c->grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    assert_int_equal(ke_rpc_channel_new(c->loop, target, &o, &e->ch), 0);
    ke_rpc_stub stub = {e->ch, &ke__v1__cloud_hub__descriptor};
    pthread_mutex_lock(&e->mu); /* callbacks use e->call */
    assert_int_equal(ke_rpc_stub_start(&stub, "Tunnel", &h, e, NULL, &e->call), 0);
    pthread_mutex_unlock(&e->mu);
}

int ke_rawedge_send(ke_rawedge *e, const ProtobufCMessage *frame)
{
    struct timespec until = ke_time_deadline(30000);
    pthread_mutex_lock(&e->mu);
    int rc;
    while ((rc = ke_rpc_call_send(e->call, frame)) == KE_EFULL) {
        uint64_t drains = e->drains;
        int w = 0;
        while (e->drains == drains && !e->closed && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&e->cv, &e->mu, &until);
        if (w == ETIMEDOUT || e->closed)
            break;
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void ke_rawedge_hello(ke_rawedge *e, const char *node, char *const *keys, const uint64_t *rvs,
                      size_t n, size_t chunk)
{
    Ke__V1__DigestEntry *ents = calloc(n ? n : 1, sizeof(*ents));
    Ke__V1__DigestEntry **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    assert_non_null(ents);
    assert_non_null(ptrs);
    for (size_t i = 0; i < n; i++) {
        ke__v1__digest_entry__init(&ents[i]);
        ents[i].key = keys[i];
        ents[i].resource_version = rvs[i];
        ptrs[i] = &ents[i];
    }
    size_t first = n < chunk ? n : chunk;
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    hello.node_name = (char *)node;
    hello.agent_version = "rawedge";
    hello.digest = ptrs;
    hello.n_digest = first;
    hello.digest_follows = first < n;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    assert_int_equal(ke_rawedge_send(e, &f.base), 0);
    for (size_t at = first; at < n; at += chunk) {
        Ke__V1__DigestChunk d = KE__V1__DIGEST_CHUNK__INIT;
        Ke__V1__EdgeFrame cf = KE__V1__EDGE_FRAME__INIT;
        d.entries = ptrs + at;
        d.n_entries = n - at < chunk ? n - at : chunk;
        d.last = at + d.n_entries == n;
        cf.frame_case = KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK;
        cf.digest_chunk = &d;
        assert_int_equal(ke_rawedge_send(e, &cf.base), 0);
    }
    free(ents);
    free(ptrs);
}

int ke_rawedge_report(ke_rawedge *e, uint64_t seq, const char *key, uint64_t rv,
                      const char *group)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__SequencedMessage sm = KE__V1__SEQUENCED_MESSAGE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.resource_version = rv;
    r.group = (char *)group;
    r.source = "rawedge";
    r.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    r.resource = (char *)key;
    m.header = &h;
    m.route = &r;
    sm.seq = seq;
    sm.message = &m;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_MESSAGE;
    f.message = &sm;
    return ke_rawedge_send(e, &f.base);
}

int ke_rawedge_ack(ke_rawedge *e, uint64_t seq)
{
    Ke__V1__Ack a = KE__V1__ACK__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    a.seq = seq;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_ACK;
    f.ack = &a;
    return ke_rawedge_send(e, &f.base);
}

/* wait_for waits until *field >= want (or the stream closed). */
static int wait_for(ke_rawedge *e, const void *field, int is_size, uint64_t want, int closed,
                    int timeout_ms)
{
    struct timespec until = ke_time_deadline(timeout_ms);
    int rc = 0, ok;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        uint64_t v = is_size == 2 ? (uint64_t)*(const size_t *)field
                     : is_size   ? (uint64_t)*(const int *)field
                                 : *(const uint64_t *)field;
        ok = closed ? e->closed : v >= want;
        if (ok || (!closed && e->closed) || rc == ETIMEDOUT)
            break;
        rc = pthread_cond_timedwait(&e->cv, &e->mu, &until);
    }
    pthread_mutex_unlock(&e->mu);
    return ok;
}

int ke_rawedge_wait_hello_ack(ke_rawedge *e, int timeout_ms)
{
    return wait_for(e, &e->hello_ack, 1, 1, 0, timeout_ms);
}

int ke_rawedge_wait_acked(ke_rawedge *e, uint64_t seq, int timeout_ms)
{
    return wait_for(e, &e->acked, 0, seq, 0, timeout_ms);
}

int ke_rawedge_wait_resync(ke_rawedge *e, int timeout_ms)
{
    return wait_for(e, &e->resync_done, 1, 1, 0, timeout_ms);
}

int ke_rawedge_wait_down(ke_rawedge *e, size_t n, int timeout_ms)
{
    return wait_for(e, &e->n_down, 2, n, 0, timeout_ms);
}

int ke_rawedge_wait_closed(ke_rawedge *e, int timeout_ms)
{
    return wait_for(e, &e->closed, 1, 1, 1, timeout_ms);
}

size_t ke_rawedge_n_down(ke_rawedge *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->n_down;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void ke_rawedge_close(ke_rawedge *e)
{
    if (!e->call)
        return;
    ke_rpc_call_cancel(e->call);
    ke_rawedge_wait_closed(e, 10000);
    ke_rpc_call_unref(e->call);
    ke_rpc_channel_free(e->ch);
    e->call = NULL;
    free(e->down);
    e->down = NULL;
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
}
