/*
 * ke_authz.h — who may call what (DESIGN.md §10; docs/security.md).
 *
 * One decision per call, in one place: ke_authz_rpc is the authorizer a
 * server installs with ke_rpc_server_set_authorizer, so it runs on the
 * first request of every call of every service, before the handler does
 * any work. It maps the method (full path) and its request to what the call
 * asks — verb, resource (a Kubernetes plural), namespace, name — with one
 * table entry per method; a method not in the table is denied.
 *
 * Identities (ke_rpc_call_identity): the client certificate's CN is the
 * user and its O entries the groups. In-process calls are system:cloudcore
 * in system:masters. Nodes are "system:node:<name>" in "system:nodes"; a
 * certificate issued before that naming (CN = the bare node name, no O) is
 * the node when the node_cert callback says it is the certificate
 * registered for that node. With a node_cert callback, every node call on
 * the object APIs is also checked against the registration (a removed
 * node, or a replaced certificate, is refused); Tunnel and Renew make that
 * check in their handlers.
 *
 * The decision, in order:
 *   - CloudHub.Bootstrap and CloudHub.Join: anyone, anonymous included;
 *   - anonymous (no verified certificate): Diagnostics.* when the server
 *     cannot authenticate (anonymous_diagnostics: plaintext, or TLS without
 *     client certificates), else UNAUTHENTICATED;
 *   - group system:masters: everything;
 *   - Diagnostics.*: any authenticated identity;
 *   - Hub.*: system:masters only (nodes never);
 *   - CloudHub.Tunnel and Renew: nodes only (the handlers then check the
 *     certificate against the node's registration, as before);
 *   - nodes on the object APIs (the node rule): get their own Node; get the
 *     pods, ConfigMaps, Secrets, devices, device models and twins the
 *     holders say they should hold (ke_authz_add_holder); watch one held
 *     device's twin; nothing else — no list or watch across objects, no
 *     write;
 *   - everyone else: RBAC (Role, ClusterRole, RoleBinding,
 *     ClusterRoleBinding in rbac.authorization.k8s.io/v1 shape), read from
 *     the store by watches and kept in memory: a ClusterRoleBinding grants
 *     its ClusterRole everywhere; a RoleBinding grants its Role or
 *     ClusterRole in its own namespace only. "*" matches any verb,
 *     resource or API group; resourceNames limits a rule to requests that
 *     name one of those objects.
 *
 * Verbs: Get get, List list, Watch watch, Delete delete, Apply create AND
 * update (only update when the object carries metadata.resourceVersion:
 * such an Apply can only update), GetDevice get, ListDevices list,
 * WatchDevices watch; twins are the subresource "devices/twin": GetTwin get,
 * WatchTwins watch, SetDesired update; a pod's log is the subresource
 * "pods/log" (as Kubernetes): EdgeController.Logs get, in the pod's
 * namespace, naming the pod (a node never: the node rule has no logs); a
 * request to a service on a node's host is the subresource "nodes/proxy"
 * (as Kubernetes): EdgeController.ProxyHTTP create, naming the node (a
 * node never).
 *
 * A denial is PERMISSION_DENIED (UNAUTHENTICATED with no identity) whose
 * message names identity, verb and resource —
 *   user "alice" (groups: dev) cannot delete pods in namespace "prod"
 * — logged once, at warn, with peer strings' control characters replaced.
 *
 * Threads: ke_authz_rpc and ke_authz_decide are thread-safe and never
 * block on I/O (the RBAC cache is under a mutex; holders and node_cert are
 * the caller's callbacks and must not block either).
 */
#ifndef KE_AUTHZ_H
#define KE_AUTHZ_H

#include "ke_rpc.h"
#include "ke_store.h"

#include <stddef.h>

/* Bounds: RBAC objects kept per kind (more are ignored, which only ever
 * grants less, and logged), holder callbacks, a denial message. */
#define KE_AUTHZ_OBJECTS_MAX 4096
#define KE_AUTHZ_HOLDERS_MAX 4
#define KE_AUTHZ_WHY_MAX 256

#define KE_AUTHZ_GROUP_MASTERS "system:masters"
#define KE_AUTHZ_GROUP_NODES "system:nodes"
#define KE_AUTHZ_NODE_PREFIX "system:node:"

typedef struct ke_authz ke_authz;

/* Whether `node` should hold object (kind, ns, name) — e.g.
 * ke_nodesync_wants through a controller. 1 yes, 0 no. Must not block. */
typedef int (*ke_authz_holds_fn)(void *ud, const char *node, const char *kind, const char *ns,
                                 const char *name);

/* Whether the certificate with SHA-256 `fingerprint` is the one registered
 * for `node` (CloudHub's registry): 1 yes, 0 no (or no such node), < 0 the
 * registry cannot tell (the call is refused INTERNAL). */
typedef int (*ke_authz_node_cert_fn)(void *ud, const char *node, const char *fingerprint);

typedef struct ke_authz_config {
    ke_store *store;           /* RBAC objects; NULL: masters and the node rule only */
    int anonymous_diagnostics; /* anonymous callers may use Diagnostics.* */
    ke_authz_node_cert_fn node_cert; /* NULL: node certificates are not checked against a
                                        registry, and bare-name (pre-naming) ones are users */
    void *node_cert_ud;
} ke_authz_config;

/* ke_authz_new prepares an authorizer (nothing read yet). cfg is copied;
 * the store is borrowed and must outlive it. Returns 0, KE_EINVAL, KE_ENOMEM. */
int ke_authz_new(const ke_authz_config *cfg, ke_authz **out);

/* ke_authz_add_holder adds a "what a node should hold" callback (before
 * start; at most KE_AUTHZ_HOLDERS_MAX). A node may read an object when any
 * holder says yes. Returns 0, KE_EINVAL or KE_EFULL. */
int ke_authz_add_holder(ke_authz *az, ke_authz_holds_fn fn, void *ud);

/* ke_authz_start lists the RBAC kinds into memory and watches them (a
 * watch that falls off the store's history relists). Until it returns,
 * RBAC grants nothing. Blocks on the store. Returns 0 or a store error. */
int ke_authz_start(ke_authz *az);

/* ke_authz_stop stops the watches. Idempotent. Blocks. */
void ke_authz_stop(ke_authz *az);

/* ke_authz_free stops and frees. NULL: no-op. */
void ke_authz_free(ke_authz *az);

/* ke_authz_rpc is the ke_rpc_authorize_fn to install (ud: the ke_authz):
 * the caller's identity, then ke_authz_decide, and one warn line per
 * refusal. */
int ke_authz_rpc(ke_rpc_call *call, const ProtobufCMessage *req, char *why, size_t len,
                 void *ud);

/* ke_authz_decide decides for identity id calling `method`
 * ("/ke.v1.EdgeController/Delete") with request req (borrowed; NULL when a
 * stream sent none). Returns KE_RPC_OK, or the status to refuse with and
 * the reason in why[0..len): PERMISSION_DENIED, UNAUTHENTICATED,
 * INVALID_ARGUMENT (a request that does not say what it asks for),
 * INTERNAL (node registry). */
int ke_authz_decide(ke_authz *az, const ke_rpc_identity *id, const char *method,
                    const ProtobufCMessage *req, char *why, size_t len);

/* ke_authz_decide_request decides a request that is not a gRPC method —
 * the Kubernetes REST gateway's — by the same rules: anonymous is
 * UNAUTHENTICATED, system:masters may do anything, a node follows the node
 * rule (plus list and watch of pods whose field_sel is exactly
 * "spec.nodeName=<itself>", as a kubelet lists), everyone else RBAC.
 * verb is Kubernetes' (get, list, watch, create, update, patch, delete,
 * deletecollection); kind any name of the kind table; sub a subresource
 * ("status", "log") or NULL; ns "" all namespaces (or cluster-scoped);
 * name "" none. Returns KE_RPC_OK or the refusal as ke_authz_decide. */
int ke_authz_decide_request(ke_authz *az, const ke_rpc_identity *id, const char *verb,
                            const char *kind, const char *sub, const char *ns, const char *name,
                            const char *field_sel, char *why, size_t len);

/* ke_authz_rbac_allows reports (1/0) whether the RBAC objects in memory
 * let user (in groups[0..n_groups)) do verb on resource (a plural, or
 * "devices/twin") in API group `group` ("" core) in namespace ns ("" all
 * namespaces, or a cluster-scoped resource) on object `name` ("" none). */
int ke_authz_rbac_allows(ke_authz *az, const char *user, const char *const *groups,
                         size_t n_groups, const char *verb, const char *group,
                         const char *resource, const char *ns, const char *name);

/* ke_authz_put / ke_authz_remove feed one RBAC object (Role, ClusterRole,
 * RoleBinding, ClusterRoleBinding; borrowed, copied) as the store watches
 * do: for tests of the rules without a store. Return 0, KE_EINVAL (not an
 * RBAC kind, no name), KE_EFULL (KE_AUTHZ_OBJECTS_MAX), KE_ENOMEM. */
int ke_authz_put(ke_authz *az, const json_t *obj);
int ke_authz_remove(ke_authz *az, const char *kind, const char *ns, const char *name);

#endif
