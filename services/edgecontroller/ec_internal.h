/*
 * ec_internal.h — EdgeController's private state, shared by its files:
 *   edgecontroller.c  lifecycle, the node loop (Node objects, Ready,
 *                     placement), upstream reports (pod and node status,
 *                     deletion confirmations, queries)
 *   sync.c            downstream: pods and the ConfigMaps/Secrets they
 *                     reference, to their nodes (store watches -> Hub.Publish)
 *   api.c             the user API (Apply, Get, List, Delete, Watch)
 */
#ifndef EC_INTERNAL_H
#define EC_INTERNAL_H

#include "edgecontroller.h"
#include "ke_map.h"

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
    ke_store_watch *w_pods, *w_cms, *w_secrets;
    ke_rpc_call *sub; /* Hub.Subscribe for upstream reports */
    int sub_closed;
    /* sync.c, under mu */
    ke_map *pods;     /* "ns/name" -> ec_pod */
    ke_map *node_refs; /* node -> ke_map("ns/Kind/name" -> count) */
};

/* sync.c */
int ec_sync_start(edgecontroller *ec);
void ec_sync_stop(edgecontroller *ec);
/* ec_sync_referenced reports whether "ns/Kind/name" is referenced by a pod
 * on node (for edge queries). */
int ec_sync_referenced(edgecontroller *ec, const char *node, const char *ref);
/* ec_publish_object sends obj to node (UPDATE, its JSON). */
int ec_publish_object(edgecontroller *ec, const char *node, const json_t *obj);

/* api.c */
int ec_api_register(edgecontroller *ec, ke_rpc_server *srv);
/* ec_place picks a Ready edge node whose labels match the pod's
 * spec.nodeSelector; returns 0 and the name, or KE_ENOTFOUND. */
int ec_place(edgecontroller *ec, const json_t *pod, char *node, size_t len);

/* ec_node_ready reports whether the Node object says Ready=True. */
int ec_node_ready(const json_t *node);

#endif
