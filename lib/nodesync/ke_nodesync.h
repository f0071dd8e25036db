/*
 * ke_nodesync.h — level-based downstream convergence for a controller
 * (DESIGN.md §4.2): every node holds exactly the objects of a primary kind
 * bound to it (spec.nodeName) and the objects those reference.
 * EdgeController runs one for Pod → ConfigMap/Secret, DeviceController one
 * for Device → DeviceModel.
 *
 *   cache      what the store says, kept by one store watch per kind: per
 *              primary object its node, version and references; per
 *              referenced object its version; per node its primaries; per
 *              reference the nodes that use it. A watch callback only edits
 *              the cache and queues the nodes the change touches (it never
 *              calls CloudHub: the store's dispatcher must not wait on rpc).
 *   reconcile  on a work queue (lib/workqueue), per node: the desired set
 *              from the cache against what CloudHub holds for the node
 *              (ke_hub_converge). A failure retries the node with back-off;
 *              a lost publish, a crash between a store commit and a publish,
 *              a CloudHub restart all heal at the next reconcile. Every
 *              resync period every node (CloudHub's and the cache's) is
 *              reconciled again.
 *   relist     a watch that fell off the store's history (KE_STORE_GONE)
 *              rebuilds the cache from lists and reconciles every node.
 *
 * Versions are store revisions (see ke_hub_converge), never a clock.
 * Threads: the cache is under the nodesync's mutex; queue/wants/rev calls
 * are thread-safe and never block on CloudHub.
 */
#ifndef KE_NODESYNC_H
#define KE_NODESYNC_H

#include "ke_rpc.h"
#include "ke_store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* References one primary object may have at most; "ns/Kind/name" each. */
#define KE_NODESYNC_REFS_MAX 64

typedef struct ke_nodesync ke_nodesync;

/* Fills refs[0..cap) with malloc'd "ns/Kind/name" strings of the objects
 * obj references (no duplicates); returns how many. */
typedef size_t (*ke_nodesync_refs_fn)(const json_t *obj, char **refs, size_t cap);

typedef struct ke_nodesync_config {
    const char *name;                /* for logs and the thread name */
    ke_store *store;                 /* borrowed */
    ke_rpc_channel *hub;             /* borrowed */
    const char *primary;             /* e.g. "Pod" */
    const char *const *ref_kinds;    /* e.g. {"ConfigMap", "Secret"}; at most 4 */
    size_t n_ref_kinds;
    ke_nodesync_refs_fn refs;
    uint32_t qps;                    /* reconciliations per second; 0: 500 */
    uint32_t resync_ms;              /* every node reconciled this often; 0: 60 s */
} ke_nodesync_config;

/* ke_nodesync_new prepares it (cfg's strings and arrays must outlive it).
 * Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_nodesync_new(const ke_nodesync_config *cfg, ke_nodesync **out);

/* ke_nodesync_start lists the kinds into the cache, watches them and starts
 * the work queue (which reconciles the nodes found). Blocks. */
int ke_nodesync_start(ke_nodesync *s);

/* ke_nodesync_stop stops the queue and the watches. Idempotent. Blocks. */
void ke_nodesync_stop(ke_nodesync *s);

/* ke_nodesync_free stops and frees. NULL: no-op. */
void ke_nodesync_free(ke_nodesync *s);

/* ke_nodesync_queue_node queues node for reconciliation;
 * ke_nodesync_queue_all queues every node some primary is bound to. */
void ke_nodesync_queue_node(ke_nodesync *s, const char *node);
void ke_nodesync_queue_all(ke_nodesync *s);

/* ke_nodesync_wants reports whether node should hold (kind, ns, name). */
int ke_nodesync_wants(ke_nodesync *s, const char *node, const char *kind, const char *ns,
                      const char *name);

/* ke_nodesync_rev returns the store revision the cache reflects. */
uint64_t ke_nodesync_rev(ke_nodesync *s);

#endif
