/*
 * service.c — Hub.ProxyHTTP: one HTTP request to a service on a node's
 * host (ServiceBus), through the node's Tunnel, answered by the edge's
 * ServiceBus module. Nothing is stored: the frames (ServiceRequest down,
 * ServiceResponse up) are not sequenced, not acked, and never enter the
 * durable upstream log or the edge's outbox.
 *
 *   ProxyHTTP (caller)        a request id (hub-unique; random start, so a
 *                             restarted cloudcore does not take an answer
 *                             meant for its predecessor), a ServiceRequest
 *                             on the node's current tunnel
 *   ServiceResponse (tunnel)  ends the call: OK with the upstream's answer,
 *                             or the edge's code and error
 *   caller gone (deadline,    the call is forgotten; the edge's request ends
 *   cancel)                   at its own timeout and its answer is dropped
 *   tunnel ends               every call of the node ends UNAVAILABLE
 *
 * Bounds: KE_SERVICEBUS_NODE_CALLS_MAX calls in flight per node
 * (RESOURCE_EXHAUSTED past it); the request's own bounds (lib/servicebus,
 * INVALID_ARGUMENT); a ServiceRequest is a data frame under the tunnel's
 * byte bound (a tunnel at its bound: UNAVAILABLE, try again).
 *
 * The call's id, table, per-node list and end with its tunnel are a tunnel
 * call's (tcall.c, kind CH_TCALL_SERVICE); this file keeps the frames.
 *
 * Locking: ch->mu guards the call table and each node's list, as logs.c.
 * A call's memory is the ProxyHTTP call's data, freed in its on_close.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_servicebus.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* send_request puts the ServiceRequest with id on tunnel. ch->mu held. */
static int send_request(ke_rpc_call *tunnel, uint64_t id, const void *arg)
{
    const Ke__V1__ProxyHTTPRequest *req = arg;
    Ke__V1__ServiceRequest sr = *req->request; /* borrowed fields */
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    sr.request_id = id;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_SERVICE_REQUEST;
    f.service_request = &sr;
    return ke_rpc_call_send(tunnel, &f.base);
}

static const ch_tcall_kind service_kind = {
    .kind = CH_TCALL_SERVICE,
    .node_max = KE_SERVICEBUS_NODE_CALLS_MAX,
    .busy = "service calls in flight already; try again",
    .tunnel_full = "at its send bound; try again",
    .send = send_request,
};

static void proxy_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__ProxyHTTPRequest *req = (const Ke__V1__ProxyHTTPRequest *)m;
    char why[320];
    if (!req->node_name[0] || strlen(req->node_name) >= CH_NODE_NAME_MAX) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "node_name: required, at most 63 bytes",
                           NULL);
        return;
    }
    if (!req->request) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "request: required", NULL);
        return;
    }
    if (ke_servicebus_check_request(req->request, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "request.%s", why);
        return;
    }
    uint64_t id = ch_tcall_open(ch, &service_kind, call, req->node_name, req);
    if (!id)
        return;
    char et[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(CH_MOD, "service call sent node=%s request=%" PRIu64 " target=%s method=%s "
                         "body=%zu",
                 req->node_name, id, ke_log_esc(req->request->target, et, sizeof(et)),
                 req->request->method, req->request->body.len);
}

/* proxy_abandoned: the caller went away (deadline, cancel) before the
 * edge's answer: the call is forgotten; its answer will find no one.
 * ch->mu held. */
static void proxy_abandoned(cloudhub *ch, ch_node *n, const ch_tcall *sc)
{
    (void)ch;
    (void)n;
    ke_log_debug(CH_MOD, "service call abandoned by its caller node=%s request=%" PRIu64,
                 sc->node, sc->id);
}

static void proxy_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    ch_tcall_close(ud, call, proxy_abandoned);
}

const ke_rpc_handler ch_service_handler = {.on_message = proxy_on_message,
                                           .on_close = proxy_on_close};

void ch_service_on_response(cloudhub *ch, const char *node, ke_rpc_call *tunnel,
                            const Ke__V1__ServiceResponse *r)
{
    ch_lock(ch);
    ch_tcall *sc = ch_tcall_find(ch, CH_TCALL_SERVICE, r->request_id, node, tunnel);
    if (!sc) {
        /* Not a call of this node's tunnel: its caller went away, or never was. */
        pthread_mutex_unlock(&ch->mu);
        ke_log_debug(CH_MOD, "service response for no call node=%s request=%" PRIu64 " (its "
                             "caller went away)",
                     node, r->request_id);
        return;
    }
    ch_tcall_unlink(ch, sc);
    if (r->code == KE_RPC_OK &&
        (r->body.len > KE_SERVICEBUS_BODY_MAX || r->n_headers > KE_SERVICEBUS_HEADERS_MAX)) {
        /* ServiceBus cuts an answer at these bounds: an edge that does not
         * is refused rather than passed on. */
        ke_log_warn(CH_MOD, "service response past its bounds node=%s request=%" PRIu64
                            " body=%zu headers=%zu",
                    node, r->request_id, r->body.len, r->n_headers);
        ke_rpc_call_finishf(sc->call, KE_RPC_RESOURCE_EXHAUSTED,
                            "node %s answered past the response bounds (body %u bytes, %d "
                            "headers)",
                            node, KE_SERVICEBUS_BODY_MAX, KE_SERVICEBUS_HEADERS_MAX);
    } else if (r->code == KE_RPC_OK) {
        Ke__V1__ServiceResponse out = *r; /* borrowed fields */
        out.request_id = 0;
        ke_rpc_call_finish(sc->call, KE_RPC_OK, NULL, &out.base);
    } else {
        /* The edge's code, when it is one a caller can act on. */
        int code = r->code > 0 && r->code <= KE_RPC_UNAUTHENTICATED ? r->code : KE_RPC_INTERNAL;
        char why[300], ee[KE_LOG_ESC_SIZE(200)];
        snprintf(why, sizeof(why), "node %s: %s", node,
                 r->error[0] ? r->error : "the edge gave no reason");
        ke_log_info(CH_MOD, "service call failed on the edge node=%s request=%" PRIu64
                            " code=%s error=\"%s\"",
                    node, r->request_id, ke_rpc_status_name(code),
                    ke_log_esc(r->error, ee, sizeof(ee)));
        ke_rpc_call_finish(sc->call, code, why, NULL);
    }
    pthread_mutex_unlock(&ch->mu);
}
