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
#include <sys/random.h>

struct ch_svccall {
    uint64_t id;
    char key[24];             /* id in decimal: the table's key */
    ke_rpc_call *call;        /* the ProxyHTTP call (valid until its on_close) */
    ch_node *n;               /* while active */
    struct ch_svccall *prev, *next; /* n->svc */
    int active;
    char node[CH_NODE_NAME_MAX];
};

int ch_service_init(cloudhub *ch)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint64_t)ke_map_len(ch->nodes) + 1; /* ids stay unique in this process */
    ch->svc_next_id = (r & ((1ull << 62) - 1)) | 1;
    ch->svccalls = ke_map_new();
    return ch->svccalls ? 0 : KE_ENOMEM;
}

void ch_service_free(cloudhub *ch)
{
    ke_map_free(ch->svccalls); /* empty: every ProxyHTTP call has closed */
    ch->svccalls = NULL;
}

/* unlink_call takes sc out of the table and its node's list. ch->mu held. */
static void unlink_call(cloudhub *ch, ch_svccall *sc)
{
    if (!sc->active)
        return;
    ke_map_del(ch->svccalls, sc->key);
    ch_node *n = sc->n;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        n->svc = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    n->n_svc--;
    sc->prev = sc->next = NULL;
    sc->n = NULL;
    sc->active = 0;
}

/* link_call gives sc an id and links it to n. ch->mu held. 0 or KE_ENOMEM. */
static int link_call(cloudhub *ch, ch_node *n, ch_svccall *sc)
{
    sc->id = ch->svc_next_id++;
    if (ch->svc_next_id == 0)
        ch->svc_next_id = 1;
    snprintf(sc->key, sizeof(sc->key), "%" PRIu64, sc->id);
    if (ke_map_put(ch->svccalls, sc->key, sc, NULL) != 0)
        return KE_ENOMEM;
    sc->n = n;
    sc->active = 1;
    sc->next = n->svc;
    if (n->svc)
        n->svc->prev = sc;
    n->svc = sc;
    n->n_svc++;
    return 0;
}

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
    ch_svccall *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    sc->call = call;
    snprintf(sc->node, sizeof(sc->node), "%s", req->node_name);
    ke_rpc_call_set_data(call, sc); /* freed in on_close */
    int code = KE_RPC_OK;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, req->node_name);
    if (!n || !n->stream || !n->hello_done) {
        snprintf(why, sizeof(why), "node %s is not connected", req->node_name);
        code = KE_RPC_UNAVAILABLE;
    } else if (n->n_svc >= KE_SERVICEBUS_NODE_CALLS_MAX) {
        snprintf(why, sizeof(why), "node %s has %u service calls in flight already; try again",
                 req->node_name, KE_SERVICEBUS_NODE_CALLS_MAX);
        code = KE_RPC_RESOURCE_EXHAUSTED;
    } else if (link_call(ch, n, sc) != 0) {
        snprintf(why, sizeof(why), "out of memory");
        code = KE_RPC_RESOURCE_EXHAUSTED;
    }
    if (code == KE_RPC_OK) {
        Ke__V1__ServiceRequest sr = *req->request; /* borrowed fields */
        Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
        sr.request_id = sc->id;
        f.frame_case = KE__V1__CLOUD_FRAME__FRAME_SERVICE_REQUEST;
        f.service_request = &sr;
        int rc = ke_rpc_call_send(n->stream, &f.base);
        if (rc != 0) {
            unlink_call(ch, sc);
            snprintf(why, sizeof(why), "node %s is not connected (its tunnel is %s)",
                     req->node_name, rc == KE_EFULL ? "at its send bound; try again" : "ending");
            code = KE_RPC_UNAVAILABLE;
        }
    }
    uint64_t id = sc->id;
    pthread_mutex_unlock(&ch->mu);
    if (code != KE_RPC_OK) {
        ke_rpc_call_finish(call, code, why, NULL);
        return;
    }
    char et[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(CH_MOD, "service call sent node=%s request=%" PRIu64 " target=%s method=%s "
                         "body=%zu",
                 req->node_name, id, ke_log_esc(req->request->target, et, sizeof(et)),
                 req->request->method, req->request->body.len);
}

static void proxy_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    cloudhub *ch = ud;
    ch_svccall *sc = ke_rpc_call_get_data(call);
    if (!sc)
        return;
    pthread_mutex_lock(&ch->mu);
    if (sc->active) {
        /* The caller went away (deadline, cancel) before the edge's
         * answer: forget the call; its answer will find no one. */
        ke_log_debug(CH_MOD, "service call abandoned by its caller node=%s request=%" PRIu64,
                     sc->node, sc->id);
        unlink_call(ch, sc);
    }
    pthread_mutex_unlock(&ch->mu);
    free(sc);
}

const ke_rpc_handler ch_service_handler = {.on_message = proxy_on_message,
                                           .on_close = proxy_on_close};

void ch_service_tunnel_gone(cloudhub *ch, ch_node *n, const char *why)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "node %s is not connected (%s)", n->name, why);
    while (n->svc) {
        ch_svccall *sc = n->svc;
        unlink_call(ch, sc);
        ke_rpc_call_finish(sc->call, KE_RPC_UNAVAILABLE, msg, NULL);
    }
}

void ch_service_on_response(cloudhub *ch, const char *node, ke_rpc_call *tunnel,
                            const Ke__V1__ServiceResponse *r)
{
    char key[24];
    snprintf(key, sizeof(key), "%" PRIu64, r->request_id);
    pthread_mutex_lock(&ch->mu);
    ch_svccall *sc = ke_map_get(ch->svccalls, key);
    if (!sc || strcmp(sc->node, node) != 0 || sc->n->stream != tunnel) {
        /* Not a call of this node's tunnel: its caller went away, or never was. */
        pthread_mutex_unlock(&ch->mu);
        ke_log_debug(CH_MOD, "service response for no call node=%s request=%" PRIu64 " (its "
                             "caller went away)",
                     node, r->request_id);
        return;
    }
    unlink_call(ch, sc);
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
