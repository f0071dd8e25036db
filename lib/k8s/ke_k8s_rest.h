/*
 * ke_k8s_rest.h — the Kubernetes REST conventions shared by the servers
 * that speak them (cloudcore's Kubernetes API gateway, services/kubeapi,
 * and edgecore's read-only MetaServer): request paths, list query
 * parameters, and the JSON shapes of replies — Status objects for errors,
 * List objects, watch event lines and server-side printing (Table).
 *
 * Server-neutral: nothing here does I/O; the servers feed it the URL path
 * and query parameters they received and send what it builds.
 */
#ifndef KE_K8S_REST_H
#define KE_K8S_REST_H

#include "ke_k8s.h"
#include "ke_store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A parsed request path:
 *   /api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUB]]
 *   /apis/GROUP/VERSION[/namespaces/NS]/RESOURCE[/NAME[/SUB]]
 * (/api/v1/namespaces/NAME[/status] is the Namespace NAME itself). */
typedef struct ke_k8s_path {
    char group[64];                   /* "" core */
    char version[16];                 /* "v1" */
    char ns[KE_STORE_NS_MAX + 1];     /* "" none given */
    char resource[64];                /* plural: "pods" */
    char name[KE_STORE_NAME_MAX + 1]; /* "" the collection */
    char sub[32];                     /* "" or "status", "log", "proxy" */
    int ns_given;                     /* the path had /namespaces/NS/ */
    const ke_k8s_kind *kind;          /* from group and resource */
} ke_k8s_path;

/* ke_k8s_path_parse parses a request path (no query) into *p. Returns 0;
 * KE_ENOTFOUND (with the reason in why) when the path is not a resource
 * path of a known kind of this group-version (404 for the caller);
 * KE_EINVAL for a malformed part (a namespace that is not a DNS-1123
 * label, a name that is not a DNS-1123 subdomain, a component too long). */
int ke_k8s_path_parse(const char *path, ke_k8s_path *p, char *why, size_t len);

/* The query parameters of list, watch, get, write and delete requests
 * that the servers understand. Strings point into the caller's storage
 * (the server's parsed query) and live as long as it does. */
typedef struct ke_k8s_query {
    const char *label_selector, *field_selector, *cont;
    const char *resource_version;       /* as given, or NULL */
    const char *resource_version_match; /* "", "NotOlderThan", "Exact" */
    const char *field_validation;       /* "", "Ignore", "Warn", "Strict" */
    const char *dry_run;                /* "", "All" */
    const char *field_manager;
    const char *propagation_policy;
    uint64_t rv;        /* resource_version parsed (0: none or "0") */
    size_t limit;       /* 0: none */
    int watch;          /* watch=true|1 */
    int bookmarks;      /* allowWatchBookmarks=true */
    int64_t timeout_s;  /* timeoutSeconds (0: none) */
    int64_t grace;      /* gracePeriodSeconds (-1: none given) */
    int include_object; /* Table rows: 0 None, 1 Metadata (default), 2 Object */
    int pretty;
} ke_k8s_query;

/* ke_k8s_query_init sets the defaults (grace -1, include_object 1). */
void ke_k8s_query_init(ke_k8s_query *q);

/* ke_k8s_query_set takes one query parameter (key, value as received,
 * already percent-decoded; value may be NULL for "?watch"). Unknown keys
 * are ignored, as the API server does. Returns 0, or KE_EINVAL with
 * "<key>: <why>" in why for a value that does not parse (limit, watch,
 * timeoutSeconds, resourceVersion, gracePeriodSeconds, includeObject,
 * fieldValidation, dryRun). */
int ke_k8s_query_set(ke_k8s_query *q, const char *key, const char *value, char *why,
                     size_t len);

/* ke_k8s_http_of maps a KE_E* error to the HTTP code and the Kubernetes
 * reason a REST server answers with: ENOTFOUND 404 NotFound, EEXIST 409
 * AlreadyExists, ECONFLICT 409 Conflict, EINVAL 422 Invalid, EGONE 410
 * Expired, EPERM 403 Forbidden, EFULL 429 TooManyRequests, ETIMEDOUT 504
 * Timeout, ECLOSED 503 ServiceUnavailable, anything else 500
 * InternalError. *reason is static. */
int ke_k8s_http_of(int err, const char **reason);

/* ke_k8s_status builds a Kubernetes Status object: "Failure" for a code
 * of 400 and above ("Success" otherwise), the reason and message given,
 * and details {name, group, kind: the resource's plural} when k is set.
 * NULL only when out of memory. */
json_t *ke_k8s_status(int code, const char *reason, const char *message, const ke_k8s_kind *k,
                      const char *name);

/* ke_k8s_list builds the List object of kind k ("PodList") holding items
 * (a JSON array, stolen), at revision rev, with `cont` (NULL or "": last
 * page) as metadata.continue. NULL when out of memory (items released). */
json_t *ke_k8s_list(const ke_k8s_kind *k, json_t *items, uint64_t rev, const char *cont);

/* ke_k8s_watch_event builds one watch event {"type": T, "object": obj}
 * for a store event type (ADDED, MODIFIED, DELETED). obj is borrowed.
 * Servers send it as one line of JSON. NULL when out of memory. */
json_t *ke_k8s_watch_event(int type, const json_t *obj);

/* ke_k8s_watch_bookmark builds a BOOKMARK event for kind k at revision
 * rev (an object of kind k holding only metadata.resourceVersion). */
json_t *ke_k8s_watch_bookmark(const ke_k8s_kind *k, uint64_t rev);

/* ke_k8s_watch_error builds an ERROR event carrying a Status (a watch
 * from a revision older than the history: 410 Expired). */
json_t *ke_k8s_watch_error(int code, const char *reason, const char *message);

/* ke_k8s_accepts_table reports whether an Accept header asks for
 * server-side printing (application/json;as=Table;g=meta.k8s.io;v=v1 or
 * v1beta1), and which version: 1 v1, 2 v1beta1, 0 no. */
int ke_k8s_accepts_table(const char *accept);

/* ke_k8s_table builds the Table (meta.k8s.io, version "v1" or "v1beta1")
 * kubectl prints for the objects `items` (borrowed array) of kind k: the
 * columns kubectl shows for the kind (pods: NAME READY STATUS RESTARTS
 * AGE, and with priority 1 — shown by -o wide — IP NODE NOMINATED NODE
 * READINESS GATES), one row per object with the object as asked by
 * include_object (0 none, 1 its metadata as PartialObjectMetadata, 2 the
 * object), the list's resourceVersion and continue. now_ms is the wall
 * clock (ms) ages are counted to. NULL when out of memory. */
json_t *ke_k8s_table(const ke_k8s_kind *k, const char *version, const json_t *items,
                     int include_object, uint64_t rev, const char *cont, int64_t now_ms);

#endif
