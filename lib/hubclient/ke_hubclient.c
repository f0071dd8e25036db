/*
 * ke_hubclient.c — see ke_hubclient.h.
 */
#include "ke_hubclient.h"

#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic uint64_t g_last;

uint64_t ke_hub_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint64_t last = atomic_load(&g_last), next;
    do {
        next = now > last ? now : last + 1;
    } while (!atomic_compare_exchange_weak(&g_last, &last, next));
    return next;
}

void ke_hub_resource_key(char *buf, size_t len, const char *node, const char *ns,
                         const char *kind, const char *name)
{
    snprintf(buf, len, "node/%s/%s/%s/%s", node, ns ? ns : "", kind, name);
}

int ke_hub_publish(ke_rpc_channel *hub, const char *node, const char *key, Ke__V1__Operation op,
                   const char *group, const void *content, size_t len)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
    h.resource_version = ke_hub_clock();
    h.timestamp_ms = (int64_t)(h.resource_version / 1000);
    r.source = "controller";
    r.group = (char *)group;
    r.operation = op;
    r.resource = (char *)key;
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)content;
    m.content.len = content ? len : 0;
    req.node_name = (char *)node;
    req.message = &m;
    ke_rpc_stub stub = {hub, &ke__v1__hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = ke_rpc_stub_unary(&stub, "Publish", &req.base, &o, &reply, &st);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (rc != 0 || st.code != KE_RPC_OK) {
        ke_log_warn("hubclient", "publish failed node=%s key=%s code=%s reason=\"%s\"", node, key,
                    ke_rpc_status_name(rc ? KE_RPC_INTERNAL : st.code), st.message);
        return KE_EIO;
    }
    return 0;
}
