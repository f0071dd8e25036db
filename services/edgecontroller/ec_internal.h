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
 */
#ifndef EC_INTERNAL_H
#define EC_INTERNAL_H

#include "edgecontroller.h"
#include "ke_hubclient.h"
#include "ke_map.h"
#include "ke_nodesync.h"

#include <jansson.h>
#include <pthread.h>

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

/* logs.c: the Logs method's callbacks (ud: the controller). */
void ec_logs_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud);
void ec_logs_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud);

/* proxy.c: the ProxyHTTP method's callbacks (ud: the controller). */
void ec_proxy_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud);
void ec_proxy_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud);

/* ec_node_ready reports whether the Node object says Ready=True. */
int ec_node_ready(const json_t *node);

#endif
