/*
 * ke_servicebus.h — ServiceBus's request rules, in one place for the two
 * sides that check them: EdgeController (the caller's request, before it
 * leaves the cloud) and the edge's ServiceBus module (what arrives through
 * the tunnel, before anything is sent to a service).
 *
 * A request (api/cloudhub.proto, ServiceRequest) names a target
 * "host:port" that must be an entry of the node's modules.servicebus.allow
 * (a comma-separated list of such targets; empty: nothing is reachable),
 * a method, an origin-form path with its query, headers, a body and a
 * timeout. The bounds below are the contract (docs/tunnel.md, "Service
 * calls"): past them a request is refused INVALID_ARGUMENT, an answer
 * RESOURCE_EXHAUSTED.
 */
#ifndef KE_SERVICEBUS_H
#define KE_SERVICEBUS_H

#include "cloudhub.pb-c.h"

#include <stddef.h>

/* Bounds of a request and of its answer. */
#define KE_SERVICEBUS_BODY_MAX (1u << 20)        /* request body, response body */
#define KE_SERVICEBUS_HEADERS_MAX 64              /* headers, each way */
#define KE_SERVICEBUS_HEADER_MAX (8u << 10)       /* one header, name and value */
#define KE_SERVICEBUS_HEADER_BYTES_MAX (64u << 10) /* all response headers */
#define KE_SERVICEBUS_PATH_MAX 8192
#define KE_SERVICEBUS_METHOD_MAX 16
#define KE_SERVICEBUS_TARGET_MAX 262 /* "[" host "]:" port */
#define KE_SERVICEBUS_TIMEOUT_DEFAULT_MS 30000
#define KE_SERVICEBUS_TIMEOUT_MAX_MS 300000
/* Calls in flight at once: per node in CloudHub, on one edge's ServiceBus. */
#define KE_SERVICEBUS_NODE_CALLS_MAX 16u

/* ke_servicebus_check_target: target is "host:port" — host a DNS name or
 * IPv4 address ([A-Za-z0-9.-]) or a bracketed IPv6 address, port 1..65535.
 * Returns 0, or KE_EINVAL with the reason in why. */
int ke_servicebus_check_target(const char *target, char *why, size_t len);

/* ke_servicebus_check_request checks every field of r against the rules
 * above: the target; method 1..16 capital letters; path starting with "/",
 * visible ASCII only (percent-encode the rest), no fragment; at most
 * KE_SERVICEBUS_HEADERS_MAX headers, names HTTP tokens, values without
 * control characters (tab excepted), Content-Length and Transfer-Encoding
 * refused (the body sets them); body at most KE_SERVICEBUS_BODY_MAX;
 * timeout_ms 1..KE_SERVICEBUS_TIMEOUT_MAX_MS. Returns 0, or KE_EINVAL with
 * the reason (naming the field) in why. */
int ke_servicebus_check_request(const Ke__V1__ServiceRequest *r, char *why, size_t len);

/* ke_servicebus_check_allow checks an allow list: comma-separated targets,
 * blanks around entries ignored, empty entries refused; "" is valid (nothing
 * reachable). Returns 0, or KE_EINVAL with the reason in why. */
int ke_servicebus_check_allow(const char *allow, char *why, size_t len);

/* ke_servicebus_allowed: 1 when target is exactly one of allow's entries,
 * else 0. */
int ke_servicebus_allowed(const char *allow, const char *target);

#endif
