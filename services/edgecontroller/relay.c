/*
 * relay.c — a user call relayed through one CloudHub call: what Logs
 * (logs.c) and ProxyHTTP (proxy.c) share. Two calls, one context: the
 * user's (server side) and the Hub's (client side, on the same rpc loop,
 * never waited for). The context is counted by both calls' on_close and
 * freed by the last; the user going away cancels the Hub call, whose own
 * on_close then ends the user's call as its kind says.
 *
 * Locking: r->mu orders the Hub call's start against the user's on_close,
 * so that a user gone mid-start still cancels it. No other lock is taken
 * under it.
 */
#include "ec_internal.h"

#include "ke_err.h"

#include <stdlib.h>

void *ec_relay_new(edgecontroller *ec, ke_rpc_call *user, size_t size)
{
    ke_rpc_channel *hub = ec->hub;
    if (!hub) {
        ke_rpc_call_finishf(user, KE_RPC_UNAVAILABLE,
                            "edgecontroller is not connected to cloudhub yet");
        return NULL;
    }
    ec_relay *r = calloc(1, size);
    if (!r) {
        ke_rpc_call_finishf(user, KE_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->chan = hub;
    return r;
}

int ec_relay_start(ec_relay *r, ke_rpc_call *user, const char *method,
                   const ProtobufCMessageDescriptor *reply, const ke_rpc_handler *h,
                   const ke_rpc_call_opts *o, const ProtobufCMessage *req)
{
    atomic_init(&r->refs, 2);
    pthread_mutex_init(&r->mu, NULL);
    ke_rpc_call_ref(user);
    r->user = user;
    ke_rpc_call_set_data(user, r);
    ke_rpc_call *hc = NULL;
    pthread_mutex_lock(&r->mu);
    int rc = ke_rpc_call_start(r->chan, method, reply, h, r, o, &hc);
    if (rc == 0) {
        r->hub = hc;
        if (ke_rpc_call_send(hc, req) != 0 || ke_rpc_call_close_send(hc) != 0)
            ke_rpc_call_cancel(hc); /* its on_close ends the user's call */
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != 0) {
        atomic_fetch_sub(&r->refs, 1); /* no Hub call: its on_close never runs */
        ke_rpc_call_finishf(user, KE_RPC_UNAVAILABLE, "cannot reach cloudhub: %s",
                            ke_strerror(rc));
    }
    return rc;
}

void ec_relay_unref(ec_relay *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->hub)
        ke_rpc_call_unref(r->hub);
    ke_rpc_call_unref(r->user);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void ec_relay_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    (void)ud;
    ec_relay *r = ke_rpc_call_get_data(call);
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    ke_rpc_call *hc = r->hub;
    pthread_mutex_unlock(&r->mu);
    if (hc)
        ke_rpc_call_cancel(hc); /* a no-op when it has ended already */
    ec_relay_unref(r);
}
