/*
 * metaserver.h — the MetaServer module: a read-only Kubernetes API on
 * loopback for applications on the edge host (KubeEdge's MetaServer),
 * answered from MetaManager's store, also while the cloud is unreachable.
 *
 *   serves   -> plain HTTP/1.1 on a loopback address only (no TLS, no
 *               authentication, as KubeEdge's): get, list and watch of this
 *               node's pods, configmaps, secrets, services (core v1) and
 *               devices (devices.kubeedge.io/v1beta1); discovery (/version,
 *               /api, /api/v1, /apis, /apis/devices.kubeedge.io[/v1beta1])
 *   refuses  -> writes (405 MethodNotAllowed: write through the cloud),
 *               unknown paths (404), bad queries (400), each a Status
 *   threads  -> libmicrohttpd, a thread per connection (at most
 *               METASERVER_CONNECTIONS_MAX): each request reads the store
 *               through its own read-only SQLite connection (WAL readers
 *               run beside the loop's writer); watches get the store's
 *               changes from the loop through a queue each, bounded in
 *               bytes (a watcher that does not read is closed)
 *   versions -> resourceVersion is the edge store's change counter (cseq):
 *               an object's is the counter of its last write, a list's the
 *               store's counter at the snapshot; a watch from a version
 *               below the collected tombstones' floor gets 410 Expired
 *
 * edge-agent/README.md, "MetaServer", tells the rest.
 */
#ifndef METASERVER_H
#define METASERVER_H

#include "ke_rt.h"

#include <stddef.h>

#define METASERVER_LISTEN_DEFAULT "127.0.0.1:10550"
#define METASERVER_CONNECTIONS_MAX 64
#define METASERVER_WATCHES_MAX 32
#define METASERVER_WATCH_QUEUE_BYTES (1024 * 1024) /* per watcher */
#define METASERVER_WATCH_QUEUE_EVENTS 4096          /* per watcher */
#define METASERVER_WATCH_TIMEOUT_S 1800             /* a watch's longest life */
#define METASERVER_TIMEOUT_S 30                     /* idle connection, not a watch */

typedef struct metaserver_config {
    const char *node_name; /* this node: its objects are node/<node>/... */
    const char *listen;    /* "127.0.0.1:10550", "[::1]:10550", "localhost:0" */
    const char *db_path;   /* the edge store's file (not ":memory:") */
} metaserver_config;

/* metaserver_check_listen checks a listen address: host:port, the host a
 * loopback address (127.0.0.0/8, ::1) or "localhost", the port 0..65535.
 * Returns 0, or KE_EINVAL with the reason in why. */
int metaserver_check_listen(const char *listen, char *why, size_t len);

/* The module; its config is a metaserver_config (borrowed for its life). */
extern const ke_module_ops metaserver_module;

#endif
