/*
 * ec_internal.h — EdgeController's private state, shared by its files:
 *   edgecontroller.c  lifecycle, the node loop (Node objects, Ready,
 *                     placement), upstream reports (pod and node status,
 *                     deletion confirmations, queries)
 *   sync.c            downstream: pods and the ConfigMaps/Secrets they
 *                     reference, to their nodes (store watches -> Hub.Publish)
 *   api.c             the user API (Apply, Get, List, Delete, Watch)
 *   logs.c            the user API's Logs: a pod's log through Hub.Logs
 *   proxy.c           the user API's ProxyHTTP: an HTTP request to a service
 *                     on a node's host through Hub.ProxyHTTP (ServiceBus)
 *   relay.c           what logs.c and proxy.c share: a user call relayed
 *                     through one Hub call
 */
#ifndef EC_INTERNAL_H
#define EC_INTERNAL_H

#include "edgecontroller.h"
#include "ke_hubclient.h"
#include "ke_map.h"
#include "ke_nodesync.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#define EC_MOD "edgecontroller"

struct edgecontroller {
    edgecontroller_config cfg;
    ke_rpc_channel *hub;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping, started;
    pthread_t node_thread;
    ke_hub_consumer *up; /* the durable upstream consumer "edgecontroller" */
    ke_nodesync *sync;   /* sync.c: pods and what they reference, to their nodes */
    ke_nodesync *_Atomic started_sync; /* sync once started: what the authorizer asks */
};

/* sync.c: ec_sync_start creates and starts ec->sync (Pod → ConfigMap,
 * Secret); the rest goes through ke_nodesync_*. */
int ec_sync_start(edgecontroller *ec);

/* api.c */
int ec_api_register(edgecontroller *ec, ke_rpc_server *srv);
/* ec_place picks a Ready edge node whose labels match the pod's
 * spec.nodeSelector; returns 0 and the name, or KE_ENOTFOUND. */
int ec_place(edgecontroller *ec, const json_t *pod, char *node, size_t len);

/* relay.c: a user call relayed through one Hub call. An ec_relay is the
 * first member of its kind's context (logs_ctx, proxy_ctx), which holds no
 * other resource: the last unref frees it with free(). */
typedef struct ec_relay {
    atomic_int refs;       /* the user call's on_close and the Hub call's */
    ke_rpc_call *user;     /* a reference */
    ke_rpc_channel *chan;  /* ec->hub, borrowed */
    pthread_mutex_t mu;
    ke_rpc_call *hub;      /* a reference, once started */
} ec_relay;
/* ec_relay_new allocates a zeroed context of size bytes (an ec_relay
 * first) for user; NULL after finishing user (UNAVAILABLE when
 * edgecontroller has no CloudHub channel yet, RESOURCE_EXHAUSTED). */
void *ec_relay_new(edgecontroller *ec, ke_rpc_call *user, size_t size);
/* ec_relay_start makes r user's data, starts the Hub call method (h's ud:
 * r) and sends req on it, then closes its send side. 0, or an error after
 * finishing user UNAVAILABLE; either way r belongs to the calls now (user's
 * on_close, ec_relay_on_close, releases it). */
int ec_relay_start(ec_relay *r, ke_rpc_call *user, const char *method,
                   const ProtobufCMessageDescriptor *reply, const ke_rpc_handler *h,
                   const ke_rpc_call_opts *o, const ProtobufCMessage *req);
/* ec_relay_unref drops one of the two references (the Hub call's on_close
 * calls it; the user's is ec_relay_on_close's). */
void ec_relay_unref(ec_relay *r);
/* ec_relay_on_close: the user call's on_close: cancels the Hub call. */
void ec_relay_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud);

/* logs.c: the Logs method's on_message (ud: the controller); on_close is
 * ec_relay_on_close. */
void ec_logs_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud);

/* proxy.c: the ProxyHTTP method's on_message (ud: the controller); on_close
 * is ec_relay_on_close. */
void ec_proxy_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud);

/* ec_node_ready reports whether the Node object says Ready=True. */
int ec_node_ready(const json_t *node);

#endif
