/*
 * proxy.c — EdgeController.ProxyHTTP (ServiceBus): one HTTP request to a
 * service on an edge node's host, relayed through CloudHub (Hub.ProxyHTTP,
 * which rides the node's tunnel) to the node's ServiceBus module. Nothing
 * is kept in the cloud.
 *
 * Before the Hub call: the request is well formed and within its bounds
 * (lib/servicebus: INVALID_ARGUMENT naming the field), and the Node object
 * exists (NOT_FOUND). Authorization (RBAC create on nodes/proxy naming the
 * node) happened in lib/authz already. Whether the target is reachable is
 * the node's to say (modules.servicebus.allow): the cloud does not know it.
 *
 * Two calls, one context (relay.c), as logs.c: the user's (server side)
 * and the Hub's (client side, on the same rpc loop, never waited for). The Hub's
 * answer is the user's (OK with the upstream's status, headers and body;
 * else its code and message); the user going away cancels the Hub call.
 * The Hub call's deadline is the request's timeout plus
 * EC_PROXY_GRACE_MS, so that the edge's own DEADLINE_EXCEEDED (with its
 * reason) normally arrives first; an edge that never answers is ended by
 * that deadline.
 */
#include "ec_internal.h"

#include "cloudhub.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_api.h"
#include "ke_log.h"
#include "ke_servicebus.h"
#include "ke_time.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Time the edge has, past the request's timeout, to say it timed out. */
#define EC_PROXY_GRACE_MS 5000

typedef struct proxy_ctx {
    ec_relay rel; /* first: the user's call and the Hub's (relay.c) */
    char node[KE_STORE_NAME_MAX + 1];
    int64_t timeout_ms;
    int64_t hub_deadline_ms; /* monotonic: when the Hub call's deadline passes */
} proxy_ctx;

static void hub_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    proxy_ctx *c = ud;
    const Ke__V1__ServiceResponse *in = (const Ke__V1__ServiceResponse *)m;
    Ke__V1__NodeHTTPResponse out = KE__V1__NODE_HTTPRESPONSE__INIT;
    out.status = in->status;
    out.n_headers = in->n_headers;
    out.headers = in->headers; /* borrowed for the finish, which packs it */
    out.body = in->body;
    ke_rpc_call_finish(c->rel.user, KE_RPC_OK, NULL, &out.base);
}

static void hub_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    proxy_ctx *c = ud;
    /* After the reply the user's call is finished already (ECLOSED: fine).
     * A DEADLINE_EXCEEDED before the Hub call's own deadline is the edge's
     * (with its reason): passed on as it is. */
    if (st->code == KE_RPC_DEADLINE_EXCEEDED && ke_time_mono_ms() >= c->hub_deadline_ms)
        ke_rpc_call_finishf(c->rel.user, st->code, "node %s did not answer within %lld ms",
                            c->node, (long long)c->timeout_ms);
    else if (st->code != KE_RPC_OK)
        ke_rpc_call_finish(c->rel.user, st->code, st->message, NULL);
    ec_relay_unref(&c->rel);
}

static const ke_rpc_handler hub_handler = {.on_message = hub_on_message,
                                           .on_close = hub_on_close};

void ec_proxy_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__NodeHTTPRequest *req = (const Ke__V1__NodeHTTPRequest *)m;
    char why[320];
    if (ke_k8s_check_name(req->node_name, "node_name", why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (req->timeout_ms < 0 || req->timeout_ms > KE_SERVICEBUS_TIMEOUT_MAX_MS) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                            "timeout_ms: 0 (%d ms) or 1..%d", KE_SERVICEBUS_TIMEOUT_DEFAULT_MS,
                            KE_SERVICEBUS_TIMEOUT_MAX_MS);
        return;
    }
    Ke__V1__ServiceRequest sr = KE__V1__SERVICE_REQUEST__INIT;
    sr.target = req->target;
    sr.method = req->method[0] ? req->method : "GET";
    sr.path = req->path[0] ? req->path : "/";
    sr.n_headers = req->n_headers;
    sr.headers = req->headers;
    sr.body = req->body;
    sr.timeout_ms = req->timeout_ms ? req->timeout_ms : KE_SERVICEBUS_TIMEOUT_DEFAULT_MS;
    if (ke_servicebus_check_request(&sr, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    json_t *node = NULL;
    int rc = ke_store_get(ec->cfg.store, "Node", "", req->node_name, &node);
    json_decref(node);
    if (rc == KE_ENOTFOUND) {
        ke_rpc_call_finishf(call, KE_RPC_NOT_FOUND, "nodes \"%s\" not found", req->node_name);
        return;
    }
    if (rc != 0) {
        ke_rpc_call_finishf(call, ke_k8s_status_of(rc), "store error: %s", ke_strerror(rc));
        return;
    }
    proxy_ctx *c = ec_relay_new(ec, call, sizeof(*c));
    if (!c)
        return;
    Ke__V1__ProxyHTTPRequest hr = KE__V1__PROXY_HTTPREQUEST__INIT;
    hr.node_name = req->node_name;
    hr.request = &sr;
    snprintf(c->node, sizeof(c->node), "%s", req->node_name);
    c->timeout_ms = sr.timeout_ms;
    ke_rpc_call_opts o = {.timeout_ms = sr.timeout_ms + EC_PROXY_GRACE_MS};
    c->hub_deadline_ms = ke_time_mono_ms() + o.timeout_ms;
    if (ec_relay_start(&c->rel, call, "/ke.v1.Hub/ProxyHTTP",
                       &ke__v1__service_response__descriptor, &hub_handler, &o, &hr.base) != 0)
        return;
    char et[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(EC_MOD, "proxy node=%s target=%s method=%s body=%zu", req->node_name,
                 ke_log_esc(sr.target, et, sizeof(et)), sr.method, sr.body.len);
}
