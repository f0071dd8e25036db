/*
 * servicebus.h — the ServiceBus module: cloud callers reach HTTP services
 * on the edge host (EdgeController.ProxyHTTP, carried by the tunnel).
 *
 *   request  -> from EdgeHub on the bus (group "servicebus", operation
 *               QUERY, resource "servicebus/<id>", content a packed
 *               ke.v1.ServiceRequest; edge-agent/README.md, "Service calls")
 *   check    -> the request's bounds (lib/servicebus), then its target
 *               against modules.servicebus.allow: PERMISSION_DENIED when it
 *               is not listed (nothing is sent anywhere)
 *   call     -> HTTP/1.1 through libcurl's multi-socket API on edgecore's
 *               loop (a uv_poll per socket, one uv_timer): no thread, no
 *               blocking call; the call's timeout, no redirects followed,
 *               no proxy from the environment, the response capped
 *   answer   -> one RESPONSE to the asking module, content a packed
 *               ke.v1.ServiceResponse: OK with status, headers and body (a
 *               4xx or 5xx too); DEADLINE_EXCEEDED at the timeout;
 *               UNAVAILABLE when the target refused or failed (curl's
 *               reason); RESOURCE_EXHAUSTED past the response's bounds or
 *               KE_SERVICEBUS_NODE_CALLS_MAX calls in flight
 */
#ifndef SERVICEBUS_H
#define SERVICEBUS_H

#include "ke_rt.h"

typedef struct servicebus_config {
    const char *node_name; /* for messages */
    /* allow: the reachable targets, comma-separated "host:port" entries
     * (ke_servicebus_check_allow); "" or NULL: nothing is reachable. */
    const char *allow;
} servicebus_config;

/* The module; its config is a servicebus_config (borrowed for its life). */
extern const ke_module_ops servicebus_module;

#endif
