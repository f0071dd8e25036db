/*
 * edged.h — the Edged module: runs this node's pods as containers through
 * the container runtime's CRI (containerd), from the pods MetaManager holds,
 * and reports their status upstream. It serves group "edged".
 *
 *   from metamanager   a change of a Pod, ConfigMap or Secret of this node
 *                      (the store already holds it): the pod is synced;
 *                      configMap/secret volumes using it are rewritten.
 *   QUERY logs/<id>    from EdgeHub: a container's log, streamed back to
 *                      "edgehub" as UPLOAD logs/<id> messages (at most
 *                      64 KiB each) and a last RESPONSE {"eof":true} or
 *                      {"error":"..."} (edge-agent/README.md, "Log streams").
 *   DELETE logs/<id>   the reader went away: stop that stream (id "*": all).
 *
 * How pods are run (edge-agent/README.md, "Edged"): one sandbox per pod,
 * then its containers in order; every sandbox and container carries the
 * pod's UID and this node's name as labels, so after a restart Edged lists
 * what the runtime runs, adopts it (never starting a second copy) and
 * removes what the store no longer holds. Nothing is started before that
 * first list has succeeded.
 */
#ifndef EDGED_H
#define EDGED_H

#include "ke_rt.h"

#include <stdint.h>

typedef struct edged_config {
    const char *node_name;
    const char *runtime_endpoint; /* CRI socket path or grpc target */
    const char *root_dir;         /* pods' volumes and logs live under it */
    int64_t relist_ms;            /* how often the runtime is listed (status, exits) */
    int64_t backoff_initial_ms;   /* first restart delay after the first one */
    int64_t backoff_max_ms;       /* longest restart delay */
} edged_config;

extern const ke_module_ops edged_module;

#endif
