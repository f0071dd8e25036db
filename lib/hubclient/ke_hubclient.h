/*
 * ke_hubclient.h — what the cloud controllers need from CloudHub's Hub API
 * (api/cloudhub.proto), on a channel they own (in-process in cloudcore, or
 * mutual TLS to a remote CloudHub):
 *
 *   ke_hub_publish       put an object's version on a node (blocking)
 *   ke_hub_node_objects  what CloudHub holds for a node, every page
 *   ke_hub_nodes         the nodes CloudHub knows, every page
 *   ke_hub_consumer      a durable consumer of the upstream log: a thread
 *                        that hands each report to the controller, in log
 *                        order, and acks it once the controller says its
 *                        effect is committed; it resubscribes with back-off
 *                        after any stream loss and resumes at its cursor.
 *
 * Versions: Message.header.resource_version is a store revision (DESIGN.md
 * §4.4), chosen by the controller; it must grow per resource key.
 *
 * Every function here blocks: call them from the controller's own threads
 * (work queue, consumer, node loop), never from an rpc or store-watch
 * callback.
 */
#ifndef KE_HUBCLIENT_H
#define KE_HUBCLIENT_H

#include "cloudhub.pb-c.h"
#include "ke_rpc.h"
#include "message.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* Upstream entries a consumer lets CloudHub send ahead of its acks. */
#define KE_HUB_CONSUMER_WINDOW 256

/* ke_hub_resource_key writes "node/<node>/<ns>/<kind>/<name>" into buf. */
void ke_hub_resource_key(char *buf, size_t len, const char *node, const char *ns,
                         const char *kind, const char *name);

/* ke_hub_publish sends one message to node through Hub.Publish and waits:
 * key, operation, content (may be NULL), group ("resource", ...), version
 * (the store revision it reflects); resend asks CloudHub to queue it to the
 * node even if it holds that version already. Returns 0; KE_ECONFLICT when
 * CloudHub holds a newer version of key (nothing changed); KE_EIO for any
 * other failure (status logged). */
int ke_hub_publish(ke_rpc_channel *hub, const char *node, const char *key, Ke__V1__Operation op,
                   const char *group, const void *content, size_t len, uint64_t version,
                   int resend);

/* ke_hub_node_objects calls fn(key, version, deleted, arg) for every object
 * CloudHub holds for node whose kind is in kinds[0..n_kinds) (all when
 * n_kinds is 0), in key order, fetching page by page. fn returns non-zero
 * to stop. Returns 0, KE_ENOTFOUND (no such node) or KE_EIO. */
int ke_hub_node_objects(ke_rpc_channel *hub, const char *node, const char *const *kinds,
                        size_t n_kinds,
                        int (*fn)(const char *key, uint64_t version, int deleted, void *arg),
                        void *arg);

/* ke_hub_nodes calls fn(info, arg) for every node CloudHub knows, page by
 * page (info is borrowed for the call). Returns 0 or KE_EIO. */
int ke_hub_nodes(ke_rpc_channel *hub, int (*fn)(const Ke__V1__NodeInfo *info, void *arg),
                 void *arg);

/* ---- converging a node (DESIGN.md §4.2) ---- */

#include "ke_map.h"
#include "ke_store.h"

/* An object a node should hold: its store key and the version the
 * controller's cache has seen. */
typedef struct ke_hub_want {
    uint64_t rv;
    char kind[64], ns[64], name[256];
} ke_hub_want;

typedef struct ke_hub_converge_stats {
    uint32_t published, deleted, skipped;
} ke_hub_converge_stats;

/* ke_hub_want_add records in want (resource key -> ke_hub_want) that node
 * should hold (kind, ns, name) at version rv or newer. Returns 0 or
 * KE_ENOMEM. */
int ke_hub_want_add(ke_map *want, const char *node, const char *kind, const char *ns,
                    const char *name, uint64_t rv);

/* ke_hub_want_free frees want and its entries. NULL: no-op. */
void ke_hub_want_free(ke_map *want);

/* ke_hub_converge makes what CloudHub holds for node, among the keys of
 * kinds[0..n_kinds), equal to want: each wanted object CloudHub lacks, or
 * holds older or deleted, is read from store and published (an object
 * whose spec.nodeName is no longer node is skipped: its move is a change
 * the caller is about to see); each key CloudHub holds and want lacks is
 * deleted. kinds[0] is the primary kind (Pod, Device): the objects it
 * references are published before it and deleted after it. Versions: the object's own, or ver (the store revision the
 * caller's cache reflects) when higher, so that a key removed and wanted
 * again goes out above its tombstone. Returns 0 when every step succeeded
 * (a node CloudHub does not know is not an error: nothing to do); KE_EIO or
 * KE_EDB when any failed (the caller retries the node later); stats may be
 * NULL. Blocks. */
int ke_hub_converge(ke_rpc_channel *hub, ke_store *store, const char *node,
                    const char *const *kinds, size_t n_kinds, ke_map *want, uint64_t ver,
                    ke_hub_converge_stats *stats);

typedef struct ke_hub_consumer ke_hub_consumer;

/* The consumer's handler: apply one upstream report (borrowed for the
 * call). Return 0 once its effect is committed, or when it can never have
 * one (malformed, not the node's: logged); non-zero to have the same entry
 * handed again after a back-off (a store error), nothing later being
 * handled before it. */
typedef int (*ke_hub_consumer_fn)(const Ke__V1__UpstreamMessage *up, void *ud);

/* ke_hub_consumer_new prepares the durable consumer `name` of groups
 * (copied) on hub. Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_hub_consumer_new(ke_rpc_channel *hub, const char *name, const char *const *groups,
                        size_t n_groups, ke_hub_consumer_fn fn, void *ud,
                        ke_hub_consumer **out);

/* ke_hub_consumer_start starts its thread ("ke-up-<name>"), which
 * subscribes and keeps subscribed, beating the watchdog heartbeat
 * "up-<name>" (ke_watchdog.h) between entries and while idle: a handler
 * stuck past the stall limit turns /healthz to 503. Returns 0 or KE_EIO. */
int ke_hub_consumer_start(ke_hub_consumer *c);

/* ke_hub_consumer_handled returns the log id of the last entry handled. */
uint64_t ke_hub_consumer_handled(ke_hub_consumer *c);

/* ke_hub_consumer_stop ends the stream and the thread and waits for both
 * (the handler is not running when it returns). Idempotent. Blocks. */
void ke_hub_consumer_stop(ke_hub_consumer *c);

/* ke_hub_consumer_free stops and frees. NULL: no-op. */
void ke_hub_consumer_free(ke_hub_consumer *c);

#endif
