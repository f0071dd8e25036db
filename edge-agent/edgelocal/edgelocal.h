/*
 * edgelocal.h — the EdgeLocal module: the edge's local API
 * (api/edge.proto, service EdgeLocal) for programs on this host, on a Unix
 * socket or loopback.
 *
 *   Report  a report for the cloud: handed to MetaManager on the bus
 *           (synchronous: answered with its outbox seq once queued)
 *   Get     one object of the edge store
 *   List    the objects under a key prefix, and the outbox's length
 *
 * Get and List read the store on the loop; they work with the cloud out
 * of reach.
 */
#ifndef EDGELOCAL_H
#define EDGELOCAL_H

#include "ke_rt.h"

typedef struct edgelocal_config {
    const char *listen; /* "unix:PATH" or "127.0.0.1:PORT" */
} edgelocal_config;

extern const ke_module_ops edgelocal_module;

#endif
