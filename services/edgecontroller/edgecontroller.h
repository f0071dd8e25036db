/*
 * edgecontroller.h — EdgeController: Kubernetes-style objects for edge
 * nodes, over the resource store (lib/store) and CloudHub's Hub API.
 *
 *   users      Apply / Get / List / Delete / Watch (api/edgecontroller.proto)
 *              for Pod, ConfigMap, Secret, Node, Device, DeviceModel
 *   nodes      a Node object per joined node (from Hub.ListNodes), Ready
 *              while its tunnel is up, NotReady after node_grace without it;
 *              addresses, capacity and system info from the edge's reports
 *   pods       bound by spec.nodeName, or placed by spec.nodeSelector onto
 *              a Ready edge node; sent to their node with exactly the
 *              ConfigMaps and Secrets they reference (updates follow, and
 *              an object no pod on a node references any more is removed
 *              there); status from the edge; graceful deletion
 */
#ifndef EDGECONTROLLER_H
#define EDGECONTROLLER_H

#include "ke_k8s.h"
#include "ke_rpc.h"
#include "ke_store.h"

#include <stdint.h>

typedef struct edgecontroller edgecontroller;

typedef struct edgecontroller_config {
    ke_store *store;       /* borrowed */
    int64_t node_grace_ms; /* NotReady after this long without a tunnel; default 40 s */
    int64_t node_poll_ms;  /* how often nodes are checked; default 1 s */
    int64_t resync_ms;     /* every node reconciled at least this often; default 60 s */
    uint32_t sync_qps;     /* node reconciliations per second at most; default 500 */
} edgecontroller_config;

/* edgecontroller_new prepares the controller. Returns 0 or KE_ENOMEM. */
int edgecontroller_new(const edgecontroller_config *cfg, edgecontroller **out);

/* edgecontroller_register adds the EdgeController service to srv (before start). */
int edgecontroller_register(edgecontroller *ec, ke_rpc_server *srv);

/* edgecontroller_start starts the store watches, the upstream subscription
 * and the node loop, talking to CloudHub's Hub API on `hub` (borrowed; an
 * in-process channel in cloudcore); call it once the server serves. */
int edgecontroller_start(edgecontroller *ec, ke_rpc_channel *hub);

/* edgecontroller_stop ends everything the controller does on its own: the
 * node loop, the upstream subscription and the store watches, so it makes
 * no more calls. Call it before stopping the rpc server (its calls go
 * through it); the API handlers keep working until the server stops.
 * Idempotent. */
void edgecontroller_stop(edgecontroller *ec);

/* edgecontroller_node_holds tells lib/authz's node rule whether `node`
 * should hold the Pod, ConfigMap or Secret (kind, ns, name): a pod bound to
 * it, or what such a pod references (the sync cache, no store read).
 * 1 yes, 0 no (always 0 before edgecontroller_start). Thread-safe; a
 * ke_authz_holds_fn with ud = the edgecontroller. */
int edgecontroller_node_holds(void *ec, const char *node, const char *kind, const char *ns,
                              const char *name);

/* The object writes of the user APIs (EdgeController's Apply and Delete,
 * the Kubernetes gateway's create, update, patch and delete), one set of
 * rules for both: validation with field paths (lib/k8s), the namespace
 * rule, references that must exist (a pod's or device's node, a device's
 * model), placement of an unbound pod, a bound pod never moving, status
 * ignored (it comes from the edge), the deletion mark kept. */
typedef enum {
    EC_WRITE_APPLY = 0,  /* create or update */
    EC_WRITE_CREATE = 1, /* KE_EEXIST when it exists */
    EC_WRITE_UPDATE = 2, /* KE_ENOTFOUND when it does not */
} ec_write_mode;

/* edgecontroller_write writes obj (borrowed; completed in place: namespace,
 * node, Secret stringData folded into data). With metadata.resourceVersion
 * set, only at that version (KE_ECONFLICT). dry_run: every check, nothing
 * written, *out is obj. Returns 0 and *out (new reference), or a KE_E* code
 * with the reason in why: KE_EINVAL (invalid; why starts with the field
 * path), KE_EEXIST, KE_ENOTFOUND, KE_ECONFLICT, KE_ECRYPT, store errors. */
int edgecontroller_write(edgecontroller *ec, json_t *obj, int mode, int dry_run, json_t **out,
                         char *why, size_t len);

/* edgecontroller_delete deletes (k, ns, name): a pod bound to a node is
 * marked (metadata.deletionTimestamp, grace when > 0) and leaves the store
 * when its node confirms, unless force with grace 0; anything else leaves
 * at once. precondition_rv (0 none) and precondition_uid (NULL none) must
 * match the stored object (KE_ECONFLICT). *out is the object as deleted or
 * marked (new reference). Errors as edgecontroller_write. */
int edgecontroller_delete(edgecontroller *ec, const ke_k8s_kind *k, const char *ns,
                          const char *name, int64_t grace, int force, uint64_t precondition_rv,
                          const char *precondition_uid, int dry_run, json_t **out, char *why,
                          size_t len);

/* edgecontroller_free stops (if needed) and frees; call it after the rpc
 * server it is registered on has stopped. NULL: no-op. */
void edgecontroller_free(edgecontroller *ec);

#endif
