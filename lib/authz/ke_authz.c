/*
 * ke_authz.c — see ke_authz.h. Map of this file:
 *
 *   method table   one entry per method of every cloud service: its class
 *                  (public, diagnostics, hub, node tunnel, object API) and,
 *                  for the object APIs, the function that reads what the
 *                  request asks (ask: verbs, resource, group, ns, name)
 *   identity       masters, nodes (new and pre-naming certificates), users
 *   node rule      own Node, what the holders say the node should hold
 *   RBAC           four maps of the RBAC objects in memory (deep copies,
 *                  under az->mu), fed by store watches; rule evaluation
 *   decision       ke_authz_decide, the message of a denial, ke_authz_rpc
 */
#include "ke_authz.h"

#include "cloudhub.pb-c.h"
#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_log.h"
#include "ke_map.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MOD "authz"

/* ------------------------------------------------------------- state */

enum { K_ROLE, K_CLUSTERROLE, K_ROLEBINDING, K_CLUSTERROLEBINDING, K_N };
static const char *const rbac_kinds[K_N] = {"Role", "ClusterRole", "RoleBinding",
                                            "ClusterRoleBinding"};

typedef struct rbac_watch {
    ke_authz *az;
    int kind; /* K_* */
    ke_store_watch *w;
} rbac_watch;

struct ke_authz {
    ke_authz_config cfg;
    struct {
        ke_authz_holds_fn fn;
        void *ud;
    } holders[KE_AUTHZ_HOLDERS_MAX];
    size_t n_holders;
    pthread_mutex_t mu;     /* guards objs and full_logged */
    ke_map *objs[K_N];      /* "ns/name" -> json_t* (owned deep copy) */
    int full_logged[K_N];
    rbac_watch watches[K_N];
    int started;
};

/* -------------------------------------------------------- what is asked */

typedef struct ask {
    const char *verbs[2];   /* verbs[1]: a second verb also needed, or NULL */
    char resource[64];      /* "pods", "devices/twin" */
    char group[64];         /* API group: "" core */
    const char *kind;       /* the object's Kind, for the node rule */
    char ns[KE_STORE_NS_MAX + 1];    /* "" all namespaces / cluster-scoped */
    char name[KE_STORE_NAME_MAX + 1]; /* "" no single object */
} ask;

typedef int (*extract_fn)(const ProtobufCMessage *req, ask *a, char *why, size_t len);

static void group_of(const char *api_version, char *buf, size_t len)
{
    const char *slash = strchr(api_version, '/');
    snprintf(buf, len, "%.*s", slash ? (int)(slash - api_version) : 0, api_version);
}

/* ask_kind fills resource, group and kind from a kind name, and the
 * namespace (defaulted to "default" for a namespaced kind when `dflt`,
 * "" for cluster-scoped ones) and name. */
static int ask_kind(ask *a, const char *kind, const char *ns, int dflt, const char *name,
                    char *why, size_t len)
{
    const ke_k8s_kind *k = ke_k8s_kind_find(kind);
    if (!k) {
        snprintf(why, len, "kind: the server doesn't have a resource type \"%.64s\"",
                 kind ? kind : "");
        return KE_RPC_INVALID_ARGUMENT;
    }
    snprintf(a->resource, sizeof(a->resource), "%s", k->plural);
    group_of(k->api_version, a->group, sizeof(a->group));
    a->kind = k->kind;
    if (!k->namespaced)
        ns = "";
    else if (dflt && (!ns || !*ns))
        ns = "default";
    if (!ns)
        ns = "";
    if (!name)
        name = "";
    if (strlen(ns) >= sizeof(a->ns) || strlen(name) >= sizeof(a->name)) {
        snprintf(why, len, "%s: too long", strlen(ns) >= sizeof(a->ns) ? "namespace" : "name");
        return KE_RPC_INVALID_ARGUMENT;
    }
    memcpy(a->ns, ns, strlen(ns) + 1);
    memcpy(a->name, name, strlen(name) + 1);
    return KE_RPC_OK;
}

static int ex_apply(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__ApplyRequest *r = (const Ke__V1__ApplyRequest *)m;
    json_error_t je;
    json_t *obj = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, &je);
    if (!json_is_object(obj)) {
        json_decref(obj);
        snprintf(why, len, "object_json: not a valid JSON object");
        return KE_RPC_INVALID_ARGUMENT;
    }
    int code = ask_kind(a, ke_k8s_str(obj, "kind"), ke_k8s_str(obj, "metadata.namespace"), 1,
                        ke_k8s_str(obj, "metadata.name"), why, len);
    /* With a resourceVersion the Apply can only update (ABORTED otherwise);
     * without one it creates or updates, which we cannot tell apart without
     * reading the store: both are needed. */
    const json_t *rv = json_object_get(json_object_get(obj, "metadata"), "resourceVersion");
    if (rv && json_is_string(rv) && *json_string_value(rv)) {
        a->verbs[0] = "update";
    } else {
        a->verbs[0] = "create";
        a->verbs[1] = "update";
    }
    json_decref(obj);
    return code;
}

static int ex_get(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__ObjectRef *r = (const Ke__V1__ObjectRef *)m;
    a->verbs[0] = "get";
    return ask_kind(a, r->kind, r->namespace_, 1, r->name, why, len);
}

static int ex_list(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__ListRequest *r = (const Ke__V1__ListRequest *)m;
    a->verbs[0] = "list";
    return ask_kind(a, r->kind, r->namespace_, 0, "", why, len);
}

static int ex_delete(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__DeleteRequest *r = (const Ke__V1__DeleteRequest *)m;
    if (!r->ref) {
        snprintf(why, len, "ref: required");
        return KE_RPC_INVALID_ARGUMENT;
    }
    a->verbs[0] = "delete";
    return ask_kind(a, r->ref->kind, r->ref->namespace_, 1, r->ref->name, why, len);
}

static int ex_watch(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__WatchRequest *r = (const Ke__V1__WatchRequest *)m;
    a->verbs[0] = "watch";
    return ask_kind(a, r->kind, r->namespace_, 0, "", why, len);
}

static int ex_get_device(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__DeviceRef *r = (const Ke__V1__DeviceRef *)m;
    a->verbs[0] = "get";
    return ask_kind(a, "Device", r->namespace_, 1, r->name, why, len);
}

static int ex_list_devices(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__ListRequest *r = (const Ke__V1__ListRequest *)m;
    a->verbs[0] = "list";
    return ask_kind(a, r->kind && *r->kind ? r->kind : "Device", r->namespace_, 0, "", why, len);
}

static int ex_watch_devices(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__WatchRequest *r = (const Ke__V1__WatchRequest *)m;
    a->verbs[0] = "watch";
    return ask_kind(a, r->kind && *r->kind ? r->kind : "Device", r->namespace_, 0, "", why, len);
}

/* twin fills the devices/twin subresource of device ns/name. */
static int twin(ask *a, const char *verb, const char *ns, int dflt, const char *name, char *why,
                size_t len)
{
    a->verbs[0] = verb;
    int code = ask_kind(a, "Device", ns, dflt, name, why, len);
    snprintf(a->resource, sizeof(a->resource), "devices/twin");
    return code;
}

static int ex_set_desired(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__SetDesiredRequest *r = (const Ke__V1__SetDesiredRequest *)m;
    if (!r->device) {
        snprintf(why, len, "device: required");
        return KE_RPC_INVALID_ARGUMENT;
    }
    return twin(a, "update", r->device->namespace_, 1, r->device->name, why, len);
}

static int ex_get_twin(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__DeviceRef *r = (const Ke__V1__DeviceRef *)m;
    return twin(a, "get", r->namespace_, 1, r->name, why, len);
}

static int ex_watch_twins(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__WatchTwinsRequest *r = (const Ke__V1__WatchTwinsRequest *)m;
    return twin(a, "watch", r->namespace_, 0, r->name, why, len);
}

/* ex_logs: a pod's log is the subresource "pods/log" (as Kubernetes):
 * get in the pod's namespace, naming the pod. The node rule knows no such
 * resource: a node never reads logs. */
static int ex_logs(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__PodLogRequest *r = (const Ke__V1__PodLogRequest *)m;
    a->verbs[0] = "get";
    int code = ask_kind(a, "Pod", r->namespace_, 1, r->pod, why, len);
    snprintf(a->resource, sizeof(a->resource), "pods/log");
    return code;
}

/* ex_proxy: a request to a service on a node's host is the subresource
 * "nodes/proxy" (as Kubernetes names it), verb create, naming the node.
 * The node rule knows no such resource: a node never proxies. */
static int ex_proxy(const ProtobufCMessage *m, ask *a, char *why, size_t len)
{
    const Ke__V1__NodeHTTPRequest *r = (const Ke__V1__NodeHTTPRequest *)m;
    a->verbs[0] = "create";
    int code = ask_kind(a, "Node", "", 0, r->node_name, why, len);
    snprintf(a->resource, sizeof(a->resource), "nodes/proxy");
    return code;
}

/* --------------------------------------------------------- method table */

typedef enum {
    M_PUBLIC,    /* anyone, anonymous included */
    M_DIAG,      /* any authenticated identity (anonymous: see anonymous_diagnostics) */
    M_HUB,       /* system:masters only */
    M_NODE_SELF, /* nodes (the handler checks the node is the certificate's) */
    M_API,       /* object APIs: the node rule or RBAC on what `ex` reads */
} method_class;

typedef struct method_rule {
    const char *path;
    method_class cls;
    const char *verb; /* M_HUB / M_NODE_SELF: the verb, for messages */
    extract_fn ex;    /* M_API */
} method_rule;

static const method_rule methods[] = {
    {"/ke.v1.CloudHub/Bootstrap", M_PUBLIC, "bootstrap", NULL},
    {"/ke.v1.CloudHub/Join", M_PUBLIC, "join", NULL},
    {"/ke.v1.CloudHub/Renew", M_NODE_SELF, "renew", NULL},
    {"/ke.v1.CloudHub/Tunnel", M_NODE_SELF, "open", NULL},
    {"/ke.v1.Hub/Publish", M_HUB, "publish", NULL},
    {"/ke.v1.Hub/PublishBatch", M_HUB, "publish", NULL},
    {"/ke.v1.Hub/Subscribe", M_HUB, "subscribe", NULL},
    {"/ke.v1.Hub/ListNodes", M_HUB, "list", NULL},
    {"/ke.v1.Hub/ListNodeObjects", M_HUB, "list", NULL},
    {"/ke.v1.Hub/RemoveNode", M_HUB, "delete", NULL},
    {"/ke.v1.Hub/Logs", M_HUB, "read logs through", NULL},
    {"/ke.v1.Hub/ProxyHTTP", M_HUB, "proxy through", NULL},
    {"/ke.v1.EdgeController/Apply", M_API, NULL, ex_apply},
    {"/ke.v1.EdgeController/Get", M_API, NULL, ex_get},
    {"/ke.v1.EdgeController/List", M_API, NULL, ex_list},
    {"/ke.v1.EdgeController/Delete", M_API, NULL, ex_delete},
    {"/ke.v1.EdgeController/Watch", M_API, NULL, ex_watch},
    {"/ke.v1.EdgeController/Logs", M_API, NULL, ex_logs},
    {"/ke.v1.EdgeController/ProxyHTTP", M_API, NULL, ex_proxy},
    {"/ke.v1.DeviceController/GetDevice", M_API, NULL, ex_get_device},
    {"/ke.v1.DeviceController/ListDevices", M_API, NULL, ex_list_devices},
    {"/ke.v1.DeviceController/WatchDevices", M_API, NULL, ex_watch_devices},
    {"/ke.v1.DeviceController/SetDesired", M_API, NULL, ex_set_desired},
    {"/ke.v1.DeviceController/GetTwin", M_API, NULL, ex_get_twin},
    {"/ke.v1.DeviceController/WatchTwins", M_API, NULL, ex_watch_twins},
    {"/ke.v1.Diagnostics/Ping", M_DIAG, "ping", NULL},
    {"/ke.v1.Diagnostics/Echo", M_DIAG, "echo", NULL},
    {"/ke.v1.Diagnostics/Ticks", M_DIAG, "ticks", NULL},
};

static const method_rule *method_find(const char *path)
{
    for (size_t i = 0; path && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].path, path) == 0)
            return &methods[i];
    return NULL;
}

/* ---------------------------------------------------------------- RBAC */

static int str_in(const json_t *list, const char *s)
{
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return 1;
    }
    return 0;
}

/* rule_allows: one rule of a role against the request. */
static int rule_allows(const json_t *rule, const char *verb, const char *group,
                       const char *resource, const char *name)
{
    const json_t *verbs = json_object_get(rule, "verbs"),
                 *groups = json_object_get(rule, "apiGroups"),
                 *res = json_object_get(rule, "resources"),
                 *names = json_object_get(rule, "resourceNames");
    if (!(str_in(verbs, "*") || str_in(verbs, verb)))
        return 0;
    if (!(str_in(groups, "*") || str_in(groups, group)))
        return 0;
    if (!(str_in(res, "*") || str_in(res, resource)))
        return 0;
    /* resourceNames: only requests that name one of them (never a list,
     * a watch of everything, or an unnamed request) */
    if (json_array_size(names) > 0 && (!*name || !str_in(names, name)))
        return 0;
    return 1;
}

static int role_allows(const json_t *role, const char *verb, const char *group,
                       const char *resource, const char *name)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(role, "rules"), i, r) {
        if (json_is_object(r) && rule_allows(r, verb, group, resource, name))
            return 1;
    }
    return 0;
}

static int subject_matches(const json_t *binding, const char *user, const char *const *groups,
                           size_t n_groups)
{
    size_t i;
    const json_t *s;
    json_array_foreach(json_object_get(binding, "subjects"), i, s) {
        const char *k = ke_k8s_str(s, "kind"), *n = ke_k8s_str(s, "name");
        if (!k || !n)
            continue;
        if (strcmp(k, "User") == 0 && strcmp(n, user) == 0)
            return 1;
        for (size_t g = 0; strcmp(k, "Group") == 0 && g < n_groups; g++)
            if (strcmp(n, groups[g]) == 0)
                return 1;
    }
    return 0;
}

typedef struct rbac_q {
    ke_authz *az;
    const char *user;
    const char *const *groups;
    size_t n_groups;
    const char *verb, *group, *resource, *ns, *name;
    int allowed;
} rbac_q;

/* binding_check: ke_map_each over one binding map (az->mu held). */
static int binding_check(const char *key, void *value, void *arg)
{
    (void)key;
    rbac_q *q = arg;
    const json_t *b = value;
    int cluster = strcmp(ke_k8s_str(b, "kind") ? ke_k8s_str(b, "kind") : "",
                         "ClusterRoleBinding") == 0;
    const char *bns = ke_k8s_str(b, "metadata.namespace");
    if (!cluster && (!bns || !*q->ns || strcmp(bns, q->ns) != 0))
        return 0; /* a RoleBinding grants in its own namespace only */
    if (!subject_matches(b, q->user, q->groups, q->n_groups))
        return 0;
    const char *rk = ke_k8s_str(b, "roleRef.kind"), *rn = ke_k8s_str(b, "roleRef.name");
    if (!rk || !rn)
        return 0;
    char key2[KE_STORE_NS_MAX + KE_STORE_NAME_MAX + 2];
    const json_t *role = NULL;
    if (strcmp(rk, "ClusterRole") == 0) {
        snprintf(key2, sizeof(key2), "/%s", rn);
        role = ke_map_get(q->az->objs[K_CLUSTERROLE], key2);
    } else if (strcmp(rk, "Role") == 0 && !cluster) {
        snprintf(key2, sizeof(key2), "%s/%s", bns, rn);
        role = ke_map_get(q->az->objs[K_ROLE], key2);
    }
    if (role && role_allows(role, q->verb, q->group, q->resource, q->name)) {
        q->allowed = 1;
        return 1;
    }
    return 0;
}

int ke_authz_rbac_allows(ke_authz *az, const char *user, const char *const *groups,
                         size_t n_groups, const char *verb, const char *group,
                         const char *resource, const char *ns, const char *name)
{
    rbac_q q = {az, user, groups, n_groups, verb, group, resource, ns ? ns : "", name ? name : "",
                0};
    pthread_mutex_lock(&az->mu);
    ke_map_each(az->objs[K_CLUSTERROLEBINDING], binding_check, &q);
    if (!q.allowed)
        ke_map_each(az->objs[K_ROLEBINDING], binding_check, &q);
    pthread_mutex_unlock(&az->mu);
    return q.allowed;
}

static int kind_index(const char *kind)
{
    for (int i = 0; kind && i < K_N; i++)
        if (strcmp(kind, rbac_kinds[i]) == 0)
            return i;
    return -1;
}

static int obj_key(int k, const char *ns, const char *name, char *key, size_t len)
{
    if (!name || !*name)
        return KE_EINVAL;
    int cluster = k == K_CLUSTERROLE || k == K_CLUSTERROLEBINDING;
    int n = snprintf(key, len, "%s/%s", cluster || !ns ? "" : ns, name);
    return n < 0 || (size_t)n >= len ? KE_EINVAL : 0;
}

int ke_authz_put(ke_authz *az, const json_t *obj)
{
    int k = kind_index(ke_k8s_str(obj, "kind"));
    char key[KE_STORE_NS_MAX + KE_STORE_NAME_MAX + 2];
    if (k < 0 || obj_key(k, ke_k8s_str(obj, "metadata.namespace"), ke_k8s_str(obj, "metadata.name"),
                         key, sizeof(key)) != 0)
        return KE_EINVAL;
    json_t *copy = json_deep_copy(obj);
    if (!copy)
        return KE_ENOMEM;
    pthread_mutex_lock(&az->mu);
    int rc = 0;
    void *old = NULL;
    if (!ke_map_get(az->objs[k], key) && ke_map_len(az->objs[k]) >= KE_AUTHZ_OBJECTS_MAX) {
        rc = KE_EFULL;
        if (!az->full_logged[k]) {
            az->full_logged[k] = 1;
            ke_log_error(LOG_MOD, "too many %s objects: keeping %d, ignoring more (they grant "
                                  "nothing) kind=%s",
                         rbac_kinds[k], KE_AUTHZ_OBJECTS_MAX, rbac_kinds[k]);
        }
    } else {
        rc = ke_map_put(az->objs[k], key, copy, &old);
    }
    pthread_mutex_unlock(&az->mu);
    json_decref(old);
    if (rc != 0)
        json_decref(copy);
    return rc;
}

int ke_authz_remove(ke_authz *az, const char *kind, const char *ns, const char *name)
{
    int k = kind_index(kind);
    char key[KE_STORE_NS_MAX + KE_STORE_NAME_MAX + 2];
    if (k < 0 || obj_key(k, ns, name, key, sizeof(key)) != 0)
        return KE_EINVAL;
    pthread_mutex_lock(&az->mu);
    json_t *old = ke_map_del(az->objs[k], key);
    pthread_mutex_unlock(&az->mu);
    json_decref(old);
    return 0;
}

static int free_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    json_decref(value);
    return 0;
}

/* kind_clear empties one kind's map (a relist follows). */
static void kind_clear(ke_authz *az, int k)
{
    pthread_mutex_lock(&az->mu);
    ke_map *old = az->objs[k], *fresh = ke_map_new();
    if (fresh)
        az->objs[k] = fresh;
    pthread_mutex_unlock(&az->mu);
    if (fresh) {
        ke_map_each(old, free_value, NULL);
        ke_map_free(old);
    }
}

static void rbac_event(int type, const json_t *obj, uint64_t rev, void *ud);

/* kind_load lists one RBAC kind into memory and watches it from the list's
 * revision. */
static int kind_load(ke_authz *az, int k)
{
    json_t *items = NULL;
    uint64_t rev = 0;
    int rc = ke_store_list(az->cfg.store, rbac_kinds[k], "", NULL, NULL, &items, &rev);
    if (rc != 0) {
        ke_log_error(LOG_MOD, "cannot list kind=%s: %s", rbac_kinds[k], ke_strerror(rc));
        return rc;
    }
    kind_clear(az, k);
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o) {
        int prc = ke_authz_put(az, o);
        if (prc != 0 && prc != KE_EFULL)
            ke_log_warn(LOG_MOD, "ignored kind=%s name=%s: %s", rbac_kinds[k],
                        ke_k8s_str(o, "metadata.name"), ke_strerror(prc));
    }
    json_decref(items);
    rbac_watch *w = &az->watches[k];
    w->az = az;
    w->kind = k;
    rc = ke_store_watch_start(az->cfg.store, rbac_kinds[k], "", NULL, NULL, rev, rbac_event, w,
                              &w->w);
    if (rc != 0) {
        w->w = NULL;
        ke_log_error(LOG_MOD, "cannot watch kind=%s: %s", rbac_kinds[k], ke_strerror(rc));
    }
    return rc;
}

static void rbac_event(int type, const json_t *obj, uint64_t rev, void *ud)
{
    rbac_watch *w = ud;
    ke_authz *az = w->az;
    int rc = 0;
    switch (type) {
    case KE_STORE_ADDED:
    case KE_STORE_MODIFIED:
        rc = ke_authz_put(az, obj);
        break;
    case KE_STORE_DELETED:
        rc = ke_authz_remove(az, rbac_kinds[w->kind], ke_k8s_str(obj, "metadata.namespace"),
                             ke_k8s_str(obj, "metadata.name"));
        break;
    case KE_STORE_GONE:
        /* Fell off the history: relist and watch again (allowed from a
         * callback; no callback of the old watch follows). */
        ke_log_warn(LOG_MOD, "watch fell behind kind=%s rev=%llu: relisting",
                    rbac_kinds[w->kind], (unsigned long long)rev);
        ke_store_watch_stop(w->w);
        w->w = NULL;
        rc = kind_load(az, w->kind);
        break;
    default:
        break;
    }
    if (rc != 0 && rc != KE_EFULL)
        ke_log_error(LOG_MOD, "RBAC cache not updated kind=%s rev=%llu: %s",
                     rbac_kinds[w->kind], (unsigned long long)rev, ke_strerror(rc));
}

/* ----------------------------------------------------------- lifecycle */

int ke_authz_new(const ke_authz_config *cfg, ke_authz **out)
{
    if (!cfg || !out)
        return KE_EINVAL;
    ke_authz *az = calloc(1, sizeof(*az));
    if (!az)
        return KE_ENOMEM;
    az->cfg = *cfg;
    pthread_mutex_init(&az->mu, NULL);
    for (int k = 0; k < K_N; k++)
        if (!(az->objs[k] = ke_map_new())) {
            ke_authz_free(az);
            return KE_ENOMEM;
        }
    *out = az;
    return 0;
}

int ke_authz_add_holder(ke_authz *az, ke_authz_holds_fn fn, void *ud)
{
    if (!az || !fn || az->started)
        return KE_EINVAL;
    if (az->n_holders == KE_AUTHZ_HOLDERS_MAX)
        return KE_EFULL;
    az->holders[az->n_holders].fn = fn;
    az->holders[az->n_holders++].ud = ud;
    return 0;
}

int ke_authz_start(ke_authz *az)
{
    if (!az || az->started)
        return KE_EINVAL;
    az->started = 1;
    for (int k = 0; az->cfg.store && k < K_N; k++) {
        int rc = kind_load(az, k);
        if (rc != 0) {
            ke_authz_stop(az);
            return rc;
        }
    }
    return 0;
}

void ke_authz_stop(ke_authz *az)
{
    if (!az)
        return;
    for (int k = 0; k < K_N; k++) {
        ke_store_watch_stop(az->watches[k].w);
        az->watches[k].w = NULL;
    }
}

void ke_authz_free(ke_authz *az)
{
    if (!az)
        return;
    ke_authz_stop(az);
    for (int k = 0; k < K_N; k++) {
        ke_map_each(az->objs[k], free_value, NULL);
        ke_map_free(az->objs[k]);
    }
    pthread_mutex_destroy(&az->mu);
    free(az);
}

/* ------------------------------------------------------------ identity */

static int in_group(const ke_rpc_identity *id, const char *g)
{
    for (size_t i = 0; i < id->n_groups; i++)
        if (strcmp(id->groups[i], g) == 0)
            return 1;
    return 0;
}

/* node_of: the node an identity is, into node[len] (1), or not a node (0).
 * A certificate from before node naming (CN = bare node name, no O) is a
 * node only when the registry says it is that node's certificate. */
static int node_of(const ke_authz *az, const ke_rpc_identity *id, char *node, size_t len,
                   int *legacy)
{
    size_t pl = strlen(KE_AUTHZ_NODE_PREFIX);
    *legacy = 0;
    if (id->kind != KE_RPC_ID_CERT)
        return 0;
    if (in_group(id, KE_AUTHZ_GROUP_NODES) && strncmp(id->user, KE_AUTHZ_NODE_PREFIX, pl) == 0 &&
        id->user[pl]) {
        snprintf(node, len, "%s", id->user + pl);
        return 1;
    }
    if (az->cfg.node_cert && id->n_groups == 0 && !strchr(id->user, ':') && id->user[0] &&
        az->cfg.node_cert(az->cfg.node_cert_ud, id->user, id->fingerprint) == 1) {
        snprintf(node, len, "%s", id->user);
        *legacy = 1;
        return 1;
    }
    return 0;
}

/* printable copies s into buf with control characters replaced by '?'
 * (and '"' too when quotes: inside a quoted field), so that peer-chosen
 * strings can forge neither log lines nor the fields of a message. */
static void printable_q(const char *s, char *buf, size_t len, int quotes)
{
    size_t j = 0;
    for (size_t i = 0; s && s[i] && j + 1 < len; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[j++] = c < 0x20 || c == 0x7f || (quotes && c == '"') ? '?' : (char)c;
    }
    buf[j] = '\0';
}

static void printable(const char *s, char *buf, size_t len) { printable_q(s, buf, len, 1); }

/* who writes `user "alice" (groups: a, b)` into buf. */
static void who(const ke_rpc_identity *id, char *buf, size_t len)
{
    char u[KE_RPC_ID_NAME_MAX], gs[256] = "";
    printable(id->user, u, sizeof(u));
    for (size_t i = 0; i < id->n_groups; i++) {
        char g[KE_RPC_ID_NAME_MAX];
        printable(id->groups[i], g, sizeof(g));
        size_t used = strlen(gs);
        snprintf(gs + used, sizeof(gs) - used, "%s%s", i ? ", " : "", g);
    }
    snprintf(buf, len, "user \"%s\" (groups: %s)", u, id->n_groups ? gs : "none");
}

/* deny_ask writes the denial of `a` for id: "... cannot delete pods in
 * namespace "prod"" (the name follows when the request names one). */
static int deny_ask(const ke_rpc_identity *id, const char *verb, const ask *a, const char *extra,
                    char *why, size_t len)
{
    char w[400], where[128], nm[300] = "", ns[KE_STORE_NS_MAX + 1], name[KE_STORE_NAME_MAX + 1];
    who(id, w, sizeof(w));
    printable(a->ns, ns, sizeof(ns));
    printable(a->name, name, sizeof(name));
    if (a->ns[0])
        snprintf(where, sizeof(where), "in namespace \"%s\"", ns);
    else if (a->kind && ke_k8s_kind_find(a->kind) && ke_k8s_kind_find(a->kind)->namespaced)
        snprintf(where, sizeof(where), "in all namespaces");
    else
        snprintf(where, sizeof(where), "at the cluster scope");
    if (a->name[0])
        snprintf(nm, sizeof(nm), " (name \"%s\")", name);
    snprintf(why, len, "%s cannot %s %s %s%s%s", w, verb, a->resource, where, nm,
             extra ? extra : "");
    return KE_RPC_PERMISSION_DENIED;
}

/* ------------------------------------------------------------ node rule */

static int holds(ke_authz *az, const char *node, const ask *a)
{
    for (size_t i = 0; i < az->n_holders; i++)
        if (az->holders[i].fn(az->holders[i].ud, node, a->kind, a->ns, a->name) == 1)
            return 1;
    return 0;
}

/* node_allows: the Node-authorizer semantics (see ke_authz.h). */
static int node_allows(ke_authz *az, const char *node, const ask *a)
{
    if (a->verbs[1] || !a->name[0])
        return 0; /* writes that may create, lists, watches of everything */
    const char *v = a->verbs[0];
    if (strcmp(a->resource, "nodes") == 0)
        return strcmp(v, "get") == 0 && strcmp(a->name, node) == 0;
    if (strcmp(a->resource, "devices/twin") == 0)
        return (strcmp(v, "get") == 0 || strcmp(v, "watch") == 0) && a->ns[0] &&
               holds(az, node, a);
    if (strcmp(v, "get") != 0)
        return 0;
    if (strcmp(a->resource, "pods") == 0 || strcmp(a->resource, "configmaps") == 0 ||
        strcmp(a->resource, "secrets") == 0 || strcmp(a->resource, "devices") == 0 ||
        strcmp(a->resource, "devicemodels") == 0)
        return holds(az, node, a);
    return 0;
}

static int node_lists_own_pods(const char *node, const ask *a, const char *field_sel);

/* decide_ask: the node rule for a node (node set), RBAC for everyone else.
 * node_list_ok: a node may list and watch pods whose field selector pins
 * spec.nodeName to itself (the REST gateway's kubelet-style list). */
static int decide_ask(ke_authz *az, const ke_rpc_identity *id, const char *node, const ask *a,
                      const char *field_sel, char *why, size_t len)
{
    if (node) {
        if (node_allows(az, node, a) || node_lists_own_pods(node, a, field_sel))
            return KE_RPC_OK;
        return deny_ask(id, a->verbs[0], a,
                        ": a node reaches only its own Node and what is bound to it", why, len);
    }
    const char *groups[KE_RPC_ID_GROUPS_MAX];
    for (size_t i = 0; i < id->n_groups; i++)
        groups[i] = id->groups[i];
    for (int i = 0; i < 2 && a->verbs[i]; i++)
        if (!ke_authz_rbac_allows(az, id->user, groups, id->n_groups, a->verbs[i], a->group,
                                  a->resource, a->ns, a->name))
            return deny_ask(id, a->verbs[i], a, NULL, why, len);
    return KE_RPC_OK;
}

/* node_lists_own_pods: list or watch of pods with the field selector
 * exactly "spec.nodeName=<node>" (or "=="). */
static int node_lists_own_pods(const char *node, const ask *a, const char *field_sel)
{
    if (!field_sel || strcmp(a->resource, "pods") != 0 || a->verbs[1] ||
        (strcmp(a->verbs[0], "list") != 0 && strcmp(a->verbs[0], "watch") != 0))
        return 0;
    static const char key[] = "spec.nodeName=";
    if (strncmp(field_sel, key, sizeof(key) - 1) != 0)
        return 0;
    const char *v = field_sel + sizeof(key) - 1;
    if (*v == '=')
        v++;
    return strcmp(v, node) == 0;
}

/* ------------------------------------------------------------- decision */

int ke_authz_decide(ke_authz *az, const ke_rpc_identity *id, const char *method,
                    const ProtobufCMessage *req, char *why, size_t len)
{
    const method_rule *m = method_find(method);
    char w[400];
    if (!m) {
        char p[128];
        printable(method, p, sizeof(p));
        snprintf(why, len, "method %s: no authorization rule (denied)", p);
        return KE_RPC_PERMISSION_DENIED;
    }
    if (m->cls == M_PUBLIC)
        return KE_RPC_OK;
    if (id->kind == KE_RPC_ID_ANONYMOUS) {
        if (m->cls == M_DIAG && az->cfg.anonymous_diagnostics)
            return KE_RPC_OK;
        snprintf(why, len, "%s needs a client certificate of the cluster CA "
                           "(anonymous callers may only Bootstrap and Join)", m->path);
        return KE_RPC_UNAUTHENTICATED;
    }
    if (in_group(id, KE_AUTHZ_GROUP_MASTERS))
        return KE_RPC_OK;
    char node[KE_RPC_ID_NAME_MAX] = "";
    int legacy = 0, is_node = node_of(az, id, node, sizeof(node), &legacy);
    /* Tunnel and Renew check the registration themselves (and say so in
     * their own refusal); the object APIs are checked here. */
    if (is_node && !legacy && az->cfg.node_cert && m->cls == M_API) {
        int r = az->cfg.node_cert(az->cfg.node_cert_ud, node, id->fingerprint);
        if (r < 0) {
            snprintf(why, len, "node registry unavailable");
            return KE_RPC_INTERNAL;
        }
        if (r == 0) {
            who(id, w, sizeof(w));
            snprintf(why, len, "%s: node %s is not registered with this certificate (never "
                               "joined, removed, or replaced): run keadm join again", w, node);
            return KE_RPC_PERMISSION_DENIED;
        }
    }
    switch (m->cls) {
    case M_DIAG:
        return KE_RPC_OK;
    case M_HUB:
        who(id, w, sizeof(w));
        snprintf(why, len, "%s cannot %s hub (the Hub API is for system:masters)", w, m->verb);
        return KE_RPC_PERMISSION_DENIED;
    case M_NODE_SELF:
        if (is_node)
            return KE_RPC_OK;
        who(id, w, sizeof(w));
        snprintf(why, len, "%s cannot %s tunnel (node certificates only)", w, m->verb);
        return KE_RPC_PERMISSION_DENIED;
    case M_API:
        break;
    default:
        snprintf(why, len, "internal: unknown method class");
        return KE_RPC_PERMISSION_DENIED;
    }
    if (!req) {
        snprintf(why, len, "missing request message");
        return KE_RPC_INVALID_ARGUMENT;
    }
    ask a;
    memset(&a, 0, sizeof(a));
    int code = m->ex(req, &a, why, len);
    if (code != KE_RPC_OK)
        return code;
    return decide_ask(az, id, is_node ? node : NULL, &a, NULL, why, len);
}

int ke_authz_rpc(ke_rpc_call *call, const ProtobufCMessage *req, char *why, size_t len, void *ud)
{
    ke_authz *az = ud;
    ke_rpc_identity id;
    const char *method = ke_rpc_call_method(call);
    int rc = ke_rpc_call_identity(call, &id), code;
    if (rc != 0) {
        snprintf(why, len, "unreadable client certificate identity: %s", ke_strerror(rc));
        code = KE_RPC_UNAUTHENTICATED;
    } else {
        code = ke_authz_decide(az, &id, method, req, why, len);
    }
    if (code != KE_RPC_OK) {
        char u[KE_LOG_ESC_SIZE(KE_RPC_ID_NAME_MAX)], p[KE_LOG_ESC_SIZE(128)],
            r[KE_LOG_ESC_SIZE(KE_AUTHZ_WHY_MAX)];
        ke_log_warn(LOG_MOD, "denied method=%s user=\"%s\" groups=%zu code=%s reason=\"%s\"",
                    ke_log_esc(method, p, sizeof(p)), ke_log_esc(id.user, u, sizeof(u)),
                    id.n_groups, ke_rpc_status_name(code), ke_log_esc(why, r, sizeof(r)));
    }
    return code;
}

int ke_authz_decide_request(ke_authz *az, const ke_rpc_identity *id, const char *verb,
                            const char *kind, const char *sub, const char *ns, const char *name,
                            const char *field_sel, char *why, size_t len)
{
    if (id->kind == KE_RPC_ID_ANONYMOUS) {
        snprintf(why, len, "a client certificate of the cluster CA is required");
        return KE_RPC_UNAUTHENTICATED;
    }
    if (in_group(id, KE_AUTHZ_GROUP_MASTERS))
        return KE_RPC_OK;
    ask a;
    memset(&a, 0, sizeof(a));
    int code = ask_kind(&a, kind, ns, 0, name, why, len);
    if (code != KE_RPC_OK)
        return code;
    if (sub && *sub) {
        size_t used = strlen(a.resource);
        if (used + 1 + strlen(sub) >= sizeof(a.resource)) {
            snprintf(why, len, "subresource: too long");
            return KE_RPC_INVALID_ARGUMENT;
        }
        snprintf(a.resource + used, sizeof(a.resource) - used, "/%s", sub);
    }
    a.verbs[0] = verb;
    char node[KE_RPC_ID_NAME_MAX] = "";
    int legacy = 0, is_node = node_of(az, id, node, sizeof(node), &legacy);
    if (is_node && !legacy && az->cfg.node_cert) {
        int r = az->cfg.node_cert(az->cfg.node_cert_ud, node, id->fingerprint);
        if (r < 0) {
            snprintf(why, len, "node registry unavailable");
            return KE_RPC_INTERNAL;
        }
        if (r == 0) {
            char w[400];
            who(id, w, sizeof(w));
            snprintf(why, len, "%s: node %s is not registered with this certificate (never "
                               "joined, removed, or replaced): run keadm join again", w, node);
            return KE_RPC_PERMISSION_DENIED;
        }
    }
    return decide_ask(az, id, is_node ? node : NULL, &a, field_sel, why, len);
}
