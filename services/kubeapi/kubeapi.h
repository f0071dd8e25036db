/*
 * kubeapi.h — the Kubernetes REST API gateway: the real kubectl and
 * Kubernetes client libraries work against cloudcore.
 *
 * It serves the Kubernetes API over HTTPS (libmicrohttpd with GnuTLS) on
 * the same store and the same write rules as the gRPC object APIs
 * (EdgeController's edgecontroller_write/delete), and authorizes every
 * request with the same authorizer (lib/authz: system:masters, the node
 * rule, RBAC). Clients authenticate with a certificate of the cluster CA,
 * as on the gRPC port: CN the user, O the groups; only /version,
 * /healthz, /readyz and /livez are open to anonymous callers.
 *
 * Served: discovery (/api, /api/v1, /apis, each group-version), the
 * OpenAPI documents (/openapi/v2, /openapi/v3), and for every kind of the
 * kind table get, list (limit/continue, label and field selectors,
 * resourceVersion), watch (with bookmarks; 410 Expired as an ERROR event
 * when too old), create, update (409 on a stale resourceVersion), patch
 * (JSON merge, JSON patch, strategic merge for the built-in kinds), delete
 * (preconditions, graceful pod deletion), deletecollection, the status
 * subresource, and server-side printing (Table). Errors are Status
 * objects with Kubernetes' codes and reasons. docs/kubeapi.md has the
 * details.
 *
 * Threads: one thread per connection (bounded by max_connections);
 * watches block their own connection's thread only.
 */
#ifndef KUBEAPI_H
#define KUBEAPI_H

#include "edgecontroller.h"
#include "ke_authz.h"
#include "ke_rpc.h"
#include "ke_store.h"

#include <stddef.h>
#include <stdint.h>

/* Bounds: a request body (as the API server's 3 MiB), connections, bytes
 * of watch events queued for one client that does not read (it is then
 * closed), the longest watch (a client asks for less with timeoutSeconds;
 * it watches again from its last resourceVersion), an idle connection. */
#define KUBEAPI_BODY_MAX (3 * 1024 * 1024)
#define KUBEAPI_CONNECTIONS_DEFAULT 256
#define KUBEAPI_WATCH_QUEUE_BYTES (8 * 1024 * 1024)
#define KUBEAPI_WATCH_MAX_S 1800
#define KUBEAPI_IDLE_TIMEOUT_S 60
/* Watches one identity (certificate user) holds open at a time: past it,
 * 429, so that one client cannot take every connection. */
#define KUBEAPI_WATCHES_PER_USER 64

typedef struct kubeapi kubeapi;

typedef struct kubeapi_config {
    const char *listen;   /* "host:port"; port 0 picks one */
    const char *ca_file;  /* PEM: the cluster CA, verifies client certificates */
    const char *cert_file; /* PEM: the server certificate */
    const char *key_file;  /* PEM: its key */
    ke_store *store;      /* borrowed */
    edgecontroller *ec;   /* borrowed: the write rules */
    ke_authz *authz;      /* borrowed */
    ke_rpc_channel *self; /* borrowed: an in-process channel to the server holding
                             EdgeController, for pod logs; NULL: no pods/log */
    unsigned max_connections; /* 0: KUBEAPI_CONNECTIONS_DEFAULT */
    int64_t bookmark_ms;      /* BOOKMARK events of watches that ask, this often; 0: 15 s */
} kubeapi_config;

/* kubeapi_start reads the TLS files, makes sure the namespaces every
 * cluster has exist (default, kube-system, kube-public, kube-node-lease),
 * binds and serves. Returns 0 and *out; KE_EINVAL (bad address), KE_ETLS
 * (a file that does not read), KE_EIO (cannot bind), KE_ENOMEM. */
int kubeapi_start(const kubeapi_config *cfg, kubeapi **out);

/* kubeapi_port returns the bound port. */
int kubeapi_port(const kubeapi *k);

/* kubeapi_stop ends every watch, stops serving and frees. NULL: no-op. */
void kubeapi_stop(kubeapi *k);

#endif
