/*
 * ke_k8s_api.c — see ke_k8s_api.h.
 */
#include "ke_k8s_api.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ke_k8s_status_of(int err)
{
    switch (err) {
    case KE_OK: return KE_RPC_OK;
    case KE_ENOTFOUND: return KE_RPC_NOT_FOUND;
    case KE_EEXIST: return KE_RPC_ALREADY_EXISTS;
    case KE_ECONFLICT: return KE_RPC_ABORTED;
    case KE_EINVAL: return KE_RPC_INVALID_ARGUMENT;
    case KE_EGONE: return KE_RPC_OUT_OF_RANGE;
    case KE_ENOMEM:
    case KE_EFULL: return KE_RPC_RESOURCE_EXHAUSTED;
    case KE_EPERM: return KE_RPC_PERMISSION_DENIED;
    case KE_ETIMEDOUT: return KE_RPC_DEADLINE_EXCEEDED;
    case KE_ECLOSED: return KE_RPC_UNAVAILABLE;
    }
    return KE_RPC_INTERNAL;
}

void ke_k8s_reply_object(ke_rpc_call *call, const json_t *obj)
{
    char *json = json_dumps(obj, JSON_COMPACT);
    Ke__V1__ObjectReply r = KE__V1__OBJECT_REPLY__INIT;
    r.object_json.data = (uint8_t *)json;
    r.object_json.len = json ? strlen(json) : 0;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    free(json);
}

/* reply_list finishes call OK with items as a ListReply at revision rev
 * whose continue_token is next ("" on the last page). */
static void reply_list(ke_rpc_call *call, const json_t *items, uint64_t rev, const char *next)
{
    size_t n = json_array_size(items);
    Ke__V1__ListReply r = KE__V1__LIST_REPLY__INIT;
    r.items_json = calloc(n + 1, sizeof(ProtobufCBinaryData));
    int ok = r.items_json != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        char *json = json_dumps(json_array_get(items, i), JSON_COMPACT);
        if (!json) {
            ok = 0;
            break;
        }
        r.items_json[r.n_items_json].data = (uint8_t *)json;
        r.items_json[r.n_items_json++].len = strlen(json);
    }
    r.resource_version = rev;
    r.continue_token = (char *)next;
    if (ok)
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    else /* never a short list that looks whole */
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    for (size_t i = 0; i < r.n_items_json; i++)
        free(r.items_json[i].data);
    free(r.items_json);
}

void ke_k8s_reply_list(ke_rpc_call *call, const json_t *items, uint64_t rev)
{
    reply_list(call, items, rev, "");
}

void ke_k8s_serve_list(ke_rpc_call *call, ke_store *store, const char *kind, const char *ns,
                       const Ke__V1__ListRequest *req)
{
    char why[512], next[KE_STORE_CONTINUE_MAX];
    int rc = ke_store_selector_check(req->label_selector, req->field_selector, why, sizeof(why));
    if (rc == 0)
        rc = ke_store_continue_check(store, kind, ns, req->continue_token, why, sizeof(why));
    if (rc == KE_EINVAL || rc == KE_EGONE) {
        ke_rpc_call_finish(call, rc == KE_EGONE ? KE_RPC_OUT_OF_RANGE : KE_RPC_INVALID_ARGUMENT,
                           why, NULL);
        return;
    }
    json_t *items = NULL;
    uint64_t rev = 0;
    if (rc == 0)
        rc = ke_store_list_page(store, kind, ns, req->label_selector, req->field_selector,
                                req->limit, req->continue_token, &items, &rev, next,
                                sizeof(next));
    switch (rc) {
    case 0:
        reply_list(call, items, rev, next);
        break;
    case KE_EGONE: /* compacted between the check and the read */
        ke_rpc_call_finish(call, KE_RPC_OUT_OF_RANGE,
                           "continue_token: expired (its revision was compacted); start the "
                           "list again", NULL);
        break;
    case KE_EINVAL:
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, "continue_token: not valid for this "
                                                          "list", NULL);
        break;
    case KE_ENOMEM:
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        break;
    case KE_ECRYPT: /* as Kubernetes' 500 on a value that does not decrypt */
        snprintf(why, sizeof(why), "a stored %s does not decrypt: its encryption key is not in "
                                   "store.encryption_key_file (cloudcore's log names the object "
                                   "and the key)", kind);
        ke_rpc_call_finish(call, KE_RPC_INTERNAL, why, NULL);
        break;
    default:
        snprintf(why, sizeof(why), "store error: %s", ke_strerror(rc));
        ke_rpc_call_finish(call, ke_k8s_status_of(rc), why, NULL);
        break;
    }
    json_decref(items);
}

void ke_k8s_send_watch_event(ke_rpc_call *call, int type, const json_t *obj, uint64_t rev)
{
    if (type == KE_STORE_GONE) {
        ke_rpc_call_finish(call, KE_RPC_OUT_OF_RANGE,
                           "the watch fell behind the history kept; list and watch again", NULL);
        return;
    }
    char *json = json_dumps(obj, JSON_COMPACT);
    Ke__V1__WatchEvent ev = KE__V1__WATCH_EVENT__INIT;
    ev.type = type == KE_STORE_ADDED      ? KE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_TYPE_ADDED
              : type == KE_STORE_MODIFIED ? KE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_TYPE_MODIFIED
                                          : KE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_TYPE_DELETED;
    ev.object_json.data = (uint8_t *)json;
    ev.object_json.len = json ? strlen(json) : 0;
    ev.resource_version = rev;
    /* A client that does not read is closed at once and its queue freed
     * (counted in ke_rpc_slow_streams_closed_total): waiting behind the
     * queue for a finish would keep the memory it pins. */
    if (ke_rpc_call_send(call, &ev.base) == KE_EFULL)
        ke_rpc_call_close_slow(call, "watch client is not reading (its send queue is at "
                                     "grpc.send_queue_bytes or 1024 events); watch again from "
                                     "the last version seen");
    free(json);
}
