/*
 * logs.c — EdgeController.Logs (kectl logs): a pod's container log, read
 * on the pod's node and relayed through CloudHub (Hub.Logs, which rides the
 * node's tunnel). Nothing is kept in the cloud: each chunk goes from the
 * Hub call's callback straight into the user's send queue.
 *
 * Before the Hub call: the pod exists (NOT_FOUND), is bound to a node
 * (FAILED_PRECONDITION), and the container is one of its own (INVALID_
 * ARGUMENT, as kubectl says it; the only container when none is named).
 * Authorization (RBAC get on pods/log) happened in lib/authz already.
 *
 * Two calls, one context (relay.c): the user's (server side) and the
 * Hub's (client side, on the same rpc loop, never waited for). The Hub
 * call's end is the
 * user's end (its code and message: UNAVAILABLE "node X is not connected",
 * FAILED_PRECONDITION with the edge's error, OK after eof); the user going
 * away (cancel, deadline) cancels the Hub call, and CloudHub tells the
 * edge. A user that does not read is closed RESOURCE_EXHAUSTED when its
 * send queue (bounded in messages and bytes) is full, as Watch does.
 */
#include "ec_internal.h"

#include "cloudhub.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_api.h"
#include "ke_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct logs_ctx {
    ec_relay rel; /* first: the user's call and the Hub's (relay.c) */
} logs_ctx;

static void hub_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    logs_ctx *c = ud;
    const Ke__V1__LogChunk *in = (const Ke__V1__LogChunk *)m;
    if (in->data.len == 0)
        return;
    Ke__V1__PodLogChunk out = KE__V1__POD_LOG_CHUNK__INIT;
    out.data = in->data;
    int rc = ke_rpc_call_send(c->rel.user, &out.base);
    if (rc == KE_EFULL)
        ke_rpc_call_close_slow(c->rel.user, "log reader is not reading (its send queue is at "
                                            "its bound)");
    if (rc != 0)
        ke_rpc_call_cancel(call); /* CloudHub tells the edge to stop */
}

static void hub_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    logs_ctx *c = ud;
    /* The Hub's end is the user's (a user already gone: ECLOSED, fine). */
    ke_rpc_call_finish(c->rel.user, st->code, st->code == KE_RPC_OK ? NULL : st->message, NULL);
    ec_relay_unref(&c->rel);
}

static const ke_rpc_handler hub_handler = {.on_message = hub_on_message,
                                           .on_close = hub_on_close};

/* pick_container checks the container the request names against the pod's
 * (spec.containers and spec.initContainers), or picks the only one of
 * spec.containers. Returns the name (borrowed from the pod or the request),
 * or NULL after finishing the call. */
static const char *pick_container(ke_rpc_call *call, const json_t *pod, const char *pod_name,
                                  const char *want)
{
    const json_t *spec = json_object_get(pod, "spec");
    const json_t *lists[2] = {json_object_get(spec, "containers"),
                              json_object_get(spec, "initContainers")};
    char names[512] = "";
    size_t n_main = json_array_size(lists[0]);
    const char *only = NULL;
    for (int l = 0; l < 2; l++) {
        size_t i;
        const json_t *ct;
        json_array_foreach(lists[l], i, ct) {
            const char *name = json_string_value(json_object_get(ct, "name"));
            if (!name)
                continue;
            if (*want && strcmp(want, name) == 0)
                return want;
            if (l == 0 && n_main == 1)
                only = name;
            size_t used = strlen(names);
            snprintf(names + used, sizeof(names) - used, "%s%s", used ? " " : "", name);
        }
    }
    if (*want)
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                   "container: container %.253s is not valid for pod %s, choose one of: [%s]",
                   want, pod_name, names);
    else if (only)
        return only;
    else if (n_main == 0)
        ke_rpc_call_finishf(call, KE_RPC_FAILED_PRECONDITION, "pod %s has no containers", pod_name);
    else
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                   "container: a container name must be specified for pod %s, choose one of: "
                   "[%s]",
                   pod_name, names);
    return NULL;
}

void ec_logs_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__PodLogRequest *req = (const Ke__V1__PodLogRequest *)m;
    const char *ns = req->namespace_[0] ? req->namespace_ : "default";
    char why[320];
    if (ke_k8s_check_name(req->pod, "pod", why, sizeof(why)) != 0 ||
        ke_k8s_check_name(ns, "namespace", why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (req->tail_lines < 0 || req->limit_bytes < 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s: must not be negative",
                   req->tail_lines < 0 ? "tail_lines" : "limit_bytes");
        return;
    }
    json_t *pod = NULL;
    int rc = ke_store_get(ec->cfg.store, "Pod", ns, req->pod, &pod);
    if (rc == KE_ENOTFOUND) {
        ke_rpc_call_finishf(call, KE_RPC_NOT_FOUND, "pods \"%s\" not found", req->pod);
        return;
    }
    if (rc != 0) {
        ke_rpc_call_finishf(call, ke_k8s_status_of(rc), "store error: %s", ke_strerror(rc));
        return;
    }
    const char *node = ke_k8s_str(pod, "spec.nodeName");
    const char *container = NULL;
    if (!node || !*node)
        ke_rpc_call_finishf(call, KE_RPC_FAILED_PRECONDITION, "pod %s is not bound to a node", req->pod);
    else
        container = pick_container(call, pod, req->pod, req->container);
    logs_ctx *c = container ? ec_relay_new(ec, call, sizeof(*c)) : NULL;
    if (!c) {
        json_decref(pod);
        return;
    }
    Ke__V1__LogsRequest hr = KE__V1__LOGS_REQUEST__INIT;
    hr.node_name = (char *)node;
    hr.namespace_ = (char *)ns;
    hr.pod = req->pod;
    hr.container = (char *)container;
    hr.follow = req->follow;
    hr.tail_lines = req->tail_lines;
    hr.limit_bytes = req->limit_bytes;
    ke_rpc_call_opts o = {.timeout_ms = 0}; /* -f has no deadline; the user's ends it */
    rc = ec_relay_start(&c->rel, call, "/ke.v1.Hub/Logs", &ke__v1__log_chunk__descriptor,
                        &hub_handler, &o, &hr.base);
    if (rc == 0) {
        char ec_[KE_LOG_ESC_SIZE(64)];
        ke_log_debug(EC_MOD, "logs pod=%s/%s container=%s node=%s follow=%d", ns, req->pod,
                     ke_log_esc(container, ec_, sizeof(ec_)), node, req->follow);
    }
    json_decref(pod);
}
