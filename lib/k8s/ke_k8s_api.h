/*
 * ke_k8s_api.h — the reply shapes of the object APIs that EdgeController
 * and DeviceController share (api/edgecontroller.proto): one object, a
 * list at a revision (served page by page), and a watch event from a store
 * event.
 */
#ifndef KE_K8S_API_H
#define KE_K8S_API_H

#include "ke_rpc.h"
#include "ke_store.h"

#include <jansson.h>
#include <stdint.h>

struct Ke__V1__ListRequest;

/* ke_k8s_status_of maps a KE_E* code to the gRPC status every API
 * answers it with (docs/api.md): ENOTFOUND NOT_FOUND, EEXIST
 * ALREADY_EXISTS, ECONFLICT ABORTED, EINVAL INVALID_ARGUMENT, EGONE
 * OUT_OF_RANGE, ENOMEM and EFULL RESOURCE_EXHAUSTED, EPERM
 * PERMISSION_DENIED, ETIMEDOUT DEADLINE_EXCEEDED, ECLOSED (shutting down)
 * UNAVAILABLE, anything else (SQLite, I/O, decryption) INTERNAL. Only
 * UNAVAILABLE tells a client to retry the same call. */
int ke_k8s_status_of(int err);

/* ke_k8s_reply_object finishes call OK with obj as an ObjectReply. */
void ke_k8s_reply_object(ke_rpc_call *call, const json_t *obj);

/* ke_k8s_reply_list finishes call OK with the JSON array items as a
 * ListReply taken at store revision rev. */
void ke_k8s_reply_list(ke_rpc_call *call, const json_t *items, uint64_t rev);

/* ke_k8s_serve_list answers a ListRequest (api/edgecontroller.proto) for
 * `kind` in `ns` ("" all namespaces; the caller resolves kind and scope)
 * with one page from the store (ke_store_list_page: req->limit 0 is the
 * default page, larger than KE_STORE_LIST_LIMIT_MAX is cut to it, and the
 * page's bytes are bounded), and finishes call: OK with a ListReply carrying
 * the page, the list's revision and the next continue token;
 * INVALID_ARGUMENT naming label_selector, field_selector or continue_token;
 * OUT_OF_RANGE for a continue token whose revision was compacted away;
 * RESOURCE_EXHAUSTED when out of memory; INTERNAL for a store failure.
 * req and store are borrowed. */
void ke_k8s_serve_list(ke_rpc_call *call, ke_store *store, const char *kind, const char *ns,
                       const struct Ke__V1__ListRequest *req);

/* ke_k8s_send_watch_event sends the store event (KE_STORE_ADDED/MODIFIED/
 * DELETED, obj, rev) as a WatchEvent on call. A client that does not read
 * (send queue full) has its call finished RESOURCE_EXHAUSTED; KE_STORE_GONE
 * finishes it OUT_OF_RANGE (watch again from a fresh list). */
void ke_k8s_send_watch_event(ke_rpc_call *call, int type, const json_t *obj, uint64_t rev);

#endif
