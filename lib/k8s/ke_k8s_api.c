/*
 * ke_k8s_api.c — see ke_k8s_api.h.
 */
#include "ke_k8s_api.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_store.h"

#include <stdlib.h>
#include <string.h>

void ke_k8s_reply_object(ke_rpc_call *call, const json_t *obj)
{
    char *json = json_dumps(obj, JSON_COMPACT);
    Ke__V1__ObjectReply r = KE__V1__OBJECT_REPLY__INIT;
    r.object_json.data = (uint8_t *)json;
    r.object_json.len = json ? strlen(json) : 0;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    free(json);
}

void ke_k8s_reply_list(ke_rpc_call *call, const json_t *items, uint64_t rev)
{
    size_t n = json_array_size(items);
    Ke__V1__ListReply r = KE__V1__LIST_REPLY__INIT;
    r.items_json = calloc(n + 1, sizeof(ProtobufCBinaryData));
    if (!r.items_json) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char *json = json_dumps(json_array_get(items, i), JSON_COMPACT);
        r.items_json[r.n_items_json].data = (uint8_t *)json;
        r.items_json[r.n_items_json++].len = json ? strlen(json) : 0;
    }
    r.resource_version = rev;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    for (size_t i = 0; i < r.n_items_json; i++)
        free(r.items_json[i].data);
    free(r.items_json);
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
    if (ke_rpc_call_send(call, &ev.base) == KE_EFULL)
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED,
                           "watch client is not reading; watch again from the last version seen",
                           NULL);
    free(json);
}
