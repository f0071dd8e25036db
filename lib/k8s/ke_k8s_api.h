/*
 * ke_k8s_api.h — the reply shapes of the object APIs that EdgeController
 * and DeviceController share (api/edgecontroller.proto): one object, a
 * list at a revision, and a watch event from a store event.
 */
#ifndef KE_K8S_API_H
#define KE_K8S_API_H

#include "ke_rpc.h"

#include <jansson.h>
#include <stdint.h>

/* ke_k8s_reply_object finishes call OK with obj as an ObjectReply. */
void ke_k8s_reply_object(ke_rpc_call *call, const json_t *obj);

/* ke_k8s_reply_list finishes call OK with the JSON array items as a
 * ListReply taken at store revision rev. */
void ke_k8s_reply_list(ke_rpc_call *call, const json_t *items, uint64_t rev);

/* ke_k8s_send_watch_event sends the store event (KE_STORE_ADDED/MODIFIED/
 * DELETED, obj, rev) as a WatchEvent on call. A client that does not read
 * (send queue full) has its call finished RESOURCE_EXHAUSTED; KE_STORE_GONE
 * finishes it OUT_OF_RANGE (watch again from a fresh list). */
void ke_k8s_send_watch_event(ke_rpc_call *call, int type, const json_t *obj, uint64_t rev);

#endif
