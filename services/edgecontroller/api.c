/*
 * api.c — EdgeController's user API (api/edgecontroller.proto).
 *
 * Apply validates the object (lib/k8s: errors name the field path), fills
 * the namespace, checks references (a pod's spec.nodeName and a device's
 * node must be existing nodes; a device's model must exist), places a pod
 * by its nodeSelector onto a Ready edge node when it names no node, then
 * creates or updates it; with metadata.resourceVersion set, only at that
 * version (ABORTED otherwise). Status in an applied object is ignored:
 * status comes from the edge; so is its deletion mark: an object marked
 * for deletion keeps metadata.deletionTimestamp (and
 * deletionGracePeriodSeconds) through any Apply, as in Kubernetes.
 * List answers page by page (limit, continue_token; ke_k8s_serve_list).
 * Delete of a pod bound to a node is graceful: metadata.deletionTimestamp
 * is set, the node is told, and the pod leaves the store when the edge
 * confirms; force with grace_period_seconds 0 removes it at once (a node
 * that is gone never confirms). Watch streams every change after a
 * resourceVersion.
 *
 * Every call follows docs/api.md: kinds by any name of the kind table,
 * the one namespace rule (ke_k8s_resolve_ns), INVALID_ARGUMENT messages
 * that start with the field path, store errors through ke_k8s_status_of
 * (never UNAVAILABLE). A Secret's stringData is folded into data.
 */
#include "ec_internal.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_api.h"
#include "ke_log.h"
#include "ke_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* store_why writes what a store error means for (k, ns, name) into why,
 * kubectl-style. An object that does not decrypt is INTERNAL, as
 * Kubernetes' 500 "unable to transform", naming the key it needs (never any
 * of its content). */
static void store_why(edgecontroller *ec, int rc, const ke_k8s_kind *k, const char *ns,
                      const char *name, char *why, size_t len)
{
    const char *plural = k ? k->plural : "objects";
    char key[256] = "";
    switch (rc) {
    case KE_ECRYPT:
        if (k && name && *name)
            ke_store_crypt_check(ec->cfg.store, k->kind, ns, name, key, sizeof(key));
        snprintf(why, len, "%s \"%s\": stored object does not decrypt: %s", plural, name,
                 key[0] ? key : "its encryption key is not in store.encryption_key_file");
        break;
    case KE_ENOTFOUND:
        snprintf(why, len, "%s \"%s\" not found", plural, name);
        break;
    case KE_EEXIST:
        snprintf(why, len, "%s \"%s\" already exists", plural, name);
        break;
    case KE_ECONFLICT:
        snprintf(why, len, "metadata.resourceVersion: the object has been modified; apply again "
                           "to the latest version of %s \"%s\"", plural, name);
        break;
    case KE_EINVAL: /* what the store refuses that the checks before it let through */
        snprintf(why, len, "object: %s \"%s\" refused by the store (too large, or a key part "
                           "too long)", plural, name);
        break;
    case KE_EGONE:
        snprintf(why, len, "resource_version: too old; list again and watch from the list's "
                           "version");
        break;
    case KE_EFULL:
        snprintf(why, len, "too many open watches; close some and watch again");
        break;
    default:
        snprintf(why, len, "store error: %s", ke_strerror(rc));
        break;
    }
}

/* store_error finishes call with a store error. Never UNAVAILABLE:
 * retrying the same call would not help. */
static void store_error(edgecontroller *ec, ke_rpc_call *call, int rc, const ke_k8s_kind *k,
                        const char *ns, const char *name)
{
    char why[512];
    store_why(ec, rc, k, ns, name, why, sizeof(why));
    ke_rpc_call_finishf(call, rc == KE_ECRYPT ? KE_RPC_INTERNAL : ke_k8s_status_of(rc), "%s", why);
}

int ec_place(edgecontroller *ec, const json_t *pod, char *node, size_t len)
{
    char sel[1024] = "";
    const char *k;
    const json_t *v;
    json_object_foreach(json_object_get(json_object_get(pod, "spec"), "nodeSelector"), k, v) {
        size_t used = strlen(sel);
        snprintf(sel + used, sizeof(sel) - used, "%s%s=%s", used ? "," : "", k,
                 json_string_value(v));
    }
    json_t *nodes = NULL;
    if (ke_store_list(ec->cfg.store, "Node", "", sel, NULL, &nodes, NULL) != 0)
        return KE_ENOTFOUND;
    int rc = KE_ENOTFOUND;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n) {
        const json_t *labels = json_object_get(json_object_get(n, "metadata"), "labels");
        if (json_object_get(labels, "node-role.kubernetes.io/edge") && ec_node_ready(n)) {
            snprintf(node, len, "%s", ke_k8s_str(n, "metadata.name"));
            rc = 0;
            break;
        }
    }
    json_decref(nodes);
    return rc;
}

static int exists(edgecontroller *ec, const char *kind, const char *ns, const char *name)
{
    json_t *o = NULL;
    int rc = ke_store_get(ec->cfg.store, kind, ns, name, &o);
    json_decref(o);
    return rc == 0;
}

/* check_refs verifies what the object points at exists: 0, or KE_EINVAL
 * with the field path in why. */
static int check_refs(edgecontroller *ec, json_t *obj, const char *kind, const char *ns,
                      char *why, size_t len)
{
    const char *node = ke_k8s_str(obj, "spec.nodeName");
    if ((strcmp(kind, "Pod") == 0 || strcmp(kind, "Device") == 0) && node && *node &&
        !exists(ec, "Node", "", node)) {
        snprintf(why, len, "spec.nodeName: node \"%s\" not found", node);
        return KE_EINVAL;
    }
    if (strcmp(kind, "Device") == 0) {
        const char *model = ke_k8s_str(obj, "spec.deviceModelRef.name");
        if (!exists(ec, "DeviceModel", ns, model)) {
            snprintf(why, len,
                     "spec.deviceModelRef.name: devicemodel \"%s\" not found in namespace %s",
                     model, ns);
            return KE_EINVAL;
        }
    }
    return 0;
}

/* keep_deletion_mark gives obj the deletion mark of the stored object cur
 * (NULL on create), as Kubernetes' API server does on every write but
 * Delete: metadata.deletionTimestamp and deletionGracePeriodSeconds are
 * the stored ones (none on create), whatever the applied object says, so
 * an Apply can neither remove the mark of an object being deleted nor set
 * one. Returns 0 or KE_ENOMEM. */
static int keep_deletion_mark(json_t *obj, const json_t *cur)
{
    static const char *const mark[] = {"deletionTimestamp", "deletionGracePeriodSeconds"};
    json_t *md = json_object_get(obj, "metadata");
    const json_t *cmd = json_object_get(cur, "metadata");
    for (size_t i = 0; i < sizeof(mark) / sizeof(mark[0]); i++) {
        json_t *v = json_object_get(cmd, mark[i]);
        if (!v)
            json_object_del(md, mark[i]); /* absent already is fine */
        else if (json_object_set(md, mark[i], v) != 0)
            return KE_ENOMEM;
    }
    return 0;
}

int edgecontroller_write(edgecontroller *ec, json_t *obj, int mode, int dry_run, json_t **out,
                         char *why, size_t len)
{
    *out = NULL;
    if (ke_k8s_validate(obj, why, len) != 0)
        return KE_EINVAL;
    const ke_k8s_kind *k = ke_k8s_kind_find(ke_k8s_str(obj, "kind"));
    if (strcmp(k->kind, "Secret") == 0) {
        int mrc = ke_k8s_secret_merge(obj); /* stringData into data, as Kubernetes */
        if (mrc != 0) {
            snprintf(why, len, "stringData: %s",
                     mrc == KE_EINVAL ? "a value is too large" : "out of memory");
            return mrc;
        }
    }
    json_t *md = json_object_get(obj, "metadata");
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    if (k->namespaced && (!ns || !*ns))
        json_object_set_new(md, "namespace", json_string("default"));
    if (!k->namespaced)
        json_object_del(md, "namespace");
    ns = k->namespaced ? ke_k8s_str(obj, "metadata.namespace") : "";
    const char *name = ke_k8s_str(obj, "metadata.name");
    json_object_del(obj, "status");
    if (ke_store_object_check(obj, why, len) != 0) /* label syntax, size */
        return KE_EINVAL;
    int rc = check_refs(ec, obj, k->kind, ns, why, len);
    if (rc != 0)
        return rc;
    json_t *cur = NULL;
    rc = ke_store_get(ec->cfg.store, k->kind, ns, name, &cur);
    if (rc == 0 && mode == EC_WRITE_CREATE)
        rc = KE_EEXIST;
    else if (rc == KE_ENOTFOUND && mode == EC_WRITE_UPDATE)
        rc = KE_ENOTFOUND;
    else if (rc == 0 && strcmp(k->kind, "Pod") == 0) {
        const char *was = ke_k8s_str(cur, "spec.nodeName"), *now = ke_k8s_str(obj, "spec.nodeName");
        if (was && *was && (!now || strcmp(was, now) != 0)) {
            snprintf(why, len, "spec.nodeName: a bound pod cannot move (bound to \"%s\")", was);
            json_decref(cur);
            return KE_EINVAL;
        }
    }
    if (rc == KE_ENOTFOUND && mode != EC_WRITE_UPDATE && strcmp(k->kind, "Pod") == 0 &&
        !ke_k8s_str(obj, "spec.nodeName")) {
        char node[64];
        if (ec_place(ec, obj, node, sizeof(node)) == 0)
            json_object_set_new(json_object_get(obj, "spec"), "nodeName", json_string(node));
    }
    int exists_now = rc == 0;
    if ((rc == 0 || (rc == KE_ENOTFOUND && mode != EC_WRITE_UPDATE)) &&
        keep_deletion_mark(obj, exists_now ? cur : NULL) != 0)
        rc = KE_ENOMEM;
    else if (dry_run && (rc == 0 || (rc == KE_ENOTFOUND && mode != EC_WRITE_UPDATE)))
        rc = (*out = json_incref(obj)) ? 0 : KE_ENOMEM; /* checked, nothing written */
    else if (rc == 0)
        rc = ke_store_update(ec->cfg.store, obj, out);
    else if (rc == KE_ENOTFOUND && mode != EC_WRITE_UPDATE)
        rc = ke_store_create(ec->cfg.store, obj, out);
    if (rc != 0) {
        store_why(ec, rc, k, ns, name, why, len);
    } else if (!dry_run) {
        ke_log_info(EC_MOD, "%s %s %s/%s rv=%s", exists_now ? "updated" : "created", k->kind, ns,
                    name, ke_k8s_str(*out, "metadata.resourceVersion"));
    }
    json_decref(cur);
    return rc;
}

static void apply_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__ApplyRequest *req = (const Ke__V1__ApplyRequest *)m;
    json_error_t je;
    json_t *obj = json_loadb((const char *)req->object_json.data, req->object_json.len, 0, &je);
    if (!obj) {
        ke_err_oneline(je.text);
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "object_json: not valid JSON: %s (line %d)",
                   je.text, je.line);
        return;
    }
    char why[512];
    json_t *out = NULL;
    int rc = edgecontroller_write(ec, obj, EC_WRITE_APPLY, 0, &out, why, sizeof(why));
    if (rc == 0)
        ke_k8s_reply_object(call, out);
    else
        ke_rpc_call_finishf(call, rc == KE_ECRYPT ? KE_RPC_INTERNAL : ke_k8s_status_of(rc), "%s",
                            why);
    json_decref(out);
    json_decref(obj);
}

/* ref_or_refuse resolves what a request names: its kind (any of the
 * kind table's names), its namespace by the one rule (ke_k8s_resolve_ns;
 * `one`: about one object) and, when `name` is not NULL, checks the name.
 * `prefix` is the field path of the ObjectRef ("" or "ref."). Finishes the
 * call and returns NULL when one is wrong. */
static const ke_k8s_kind *ref_or_refuse(ke_rpc_call *call, const char *prefix, const char *kind,
                                        const char *ns, int one, const char **ns_out,
                                        const char *name)
{
    char why[320], path[32];
    const ke_k8s_kind *k = ke_k8s_kind_find(kind);
    if (!k) {
        char known[256];
        ke_k8s_kind_list(known, sizeof(known));
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                   "%skind: the server doesn't have a resource type \"%.64s\" (known: %s)",
                   prefix, kind ? kind : "", known);
        return NULL;
    }
    snprintf(path, sizeof(path), "%sname", prefix);
    if (ke_k8s_resolve_ns(k, ns, one, ns_out, why, sizeof(why)) != 0 ||
        (name && ke_k8s_check_name(name, path, why, sizeof(why)) != 0)) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s%s", strncmp(why, "namespace", 9) == 0 ?
                                                          prefix : "", why);
        return NULL;
    }
    return k;
}

static void get_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__ObjectRef *ref = (const Ke__V1__ObjectRef *)m;
    const char *ns;
    const ke_k8s_kind *k = ref_or_refuse(call, "", ref->kind, ref->namespace_, 1, &ns, ref->name);
    if (!k)
        return;
    json_t *obj = NULL;
    int rc = ke_store_get(ec->cfg.store, k->kind, ns, ref->name, &obj);
    if (rc != 0)
        store_error(ec, call, rc, k, ns, ref->name);
    else
        ke_k8s_reply_object(call, obj);
    json_decref(obj);
}

static void list_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__ListRequest *req = (const Ke__V1__ListRequest *)m;
    const char *ns;
    const ke_k8s_kind *k = ref_or_refuse(call, "", req->kind, req->namespace_, 0, &ns, NULL);
    if (!k)
        return;
    /* one page (limit/continue_token), bounded in count and bytes */
    ke_k8s_serve_list(call, ec->cfg.store, k->kind, ns, req);
}

/* deletion_mark marks obj (a pod) for deletion as Kubernetes does:
 * metadata.deletionTimestamp now and, when given, the grace period. */
static void deletion_mark(json_t *obj, int64_t grace)
{
    char ts[32];
    ke_time_rfc3339(ts, sizeof(ts), ke_time_wall_ms());
    json_t *md = json_object_get(obj, "metadata");
    json_object_set_new(md, "deletionTimestamp", json_string(ts));
    if (grace > 0)
        json_object_set_new(md, "deletionGracePeriodSeconds", json_integer(grace));
}

int edgecontroller_delete(edgecontroller *ec, const ke_k8s_kind *k, const char *ns,
                          const char *name, int64_t grace, int force, uint64_t precondition_rv,
                          const char *precondition_uid, int dry_run, json_t **out, char *why,
                          size_t len)
{
    *out = NULL;
    json_t *obj = NULL;
    int rc = ke_store_get(ec->cfg.store, k->kind, ns, name, &obj);
    const char *node = rc == 0 ? ke_k8s_str(obj, "spec.nodeName") : NULL;
    int force_now = force && grace == 0;
    if (rc == 0 && precondition_uid && *precondition_uid) {
        const char *uid = ke_k8s_str(obj, "metadata.uid");
        if (!uid || strcmp(uid, precondition_uid) != 0) {
            snprintf(why, len, "Precondition failed: UID in precondition: %s, UID in object meta: "
                               "%s", precondition_uid, uid ? uid : "");
            json_decref(obj);
            return KE_ECONFLICT;
        }
    }
    if (rc == 0 && dry_run) {
        *out = json_incref(obj);
    } else if (rc == 0 && strcmp(k->kind, "Pod") == 0 && node && *node && !force_now) {
        /* Graceful: mark it; the pod leaves once its node confirms. */
        if (!json_object_get(json_object_get(obj, "metadata"), "deletionTimestamp")) {
            deletion_mark(obj, grace);
            if (precondition_rv)
                json_object_set_new(json_object_get(obj, "metadata"), "resourceVersion",
                                    json_sprintf("%llu", (unsigned long long)precondition_rv));
            rc = ke_store_update(ec->cfg.store, obj, out);
        } else {
            *out = json_incref(obj);
        }
    } else if (rc == 0) {
        /* Not bound, not a pod, or forced: gone from the store now. A node
         * still holding a forced pod drops it when it next resyncs. */
        rc = ke_store_delete(ec->cfg.store, k->kind, ns, name, precondition_rv, out);
        if (rc == 0 && force_now && node && *node)
            ke_log_warn(EC_MOD, "force-deleted pod %s/%s bound to node %s without its "
                                "confirmation", ns, name, node);
    }
    if (rc != 0)
        store_why(ec, rc, k, ns, name, why, len);
    json_decref(obj);
    return rc;
}

static void delete_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__DeleteRequest *req = (const Ke__V1__DeleteRequest *)m;
    if (!req->ref) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "ref: required");
        return;
    }
    if (req->grace_period_seconds < 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "grace_period_seconds: must not be negative");
        return;
    }
    const char *ns, *name = req->ref->name;
    const ke_k8s_kind *k = ref_or_refuse(call, "ref.", req->ref->kind, req->ref->namespace_, 1,
                                         &ns, name);
    if (!k)
        return;
    json_t *out = NULL;
    char why[512];
    int rc = edgecontroller_delete(ec, k, ns, name, req->grace_period_seconds, req->force,
                                   req->resource_version, NULL, 0, &out, why, sizeof(why));
    if (rc != 0)
        ke_rpc_call_finishf(call, rc == KE_ECRYPT ? KE_RPC_INTERNAL : ke_k8s_status_of(rc), "%s",
                            why);
    else
        ke_k8s_reply_object(call, out);
    json_decref(out);
}

/* ---- Watch ---- */

typedef struct watch_ctx {
    ke_store_watch *w;
    ke_rpc_call *call; /* a reference */
    pthread_mutex_t mu;
    int closed;
} watch_ctx;

static void watch_event(int type, const json_t *obj, uint64_t rev, void *ud)
{
    ke_k8s_send_watch_event(((watch_ctx *)ud)->call, type, obj, rev);
}

static void watch_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__WatchRequest *req = (const Ke__V1__WatchRequest *)m;
    const char *ns;
    const ke_k8s_kind *k = ref_or_refuse(call, "", req->kind, req->namespace_, 0, &ns, NULL);
    if (!k)
        return;
    char why[256];
    if (ke_store_selector_check(req->label_selector, req->field_selector, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    watch_ctx *w = calloc(1, sizeof(*w));
    if (!w) {
        ke_rpc_call_finishf(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    ke_rpc_call_ref(call);
    w->call = call;
    int rc = ke_store_watch_start(ec->cfg.store, k->kind, ns, req->label_selector,
                                  req->field_selector, req->resource_version, watch_event, w,
                                  &w->w);
    if (rc == KE_EINVAL) /* selectors were checked: the version is ahead of the store */
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                   "resource_version: %llu is after the store's revision %llu",
                   (unsigned long long)req->resource_version,
                   (unsigned long long)ke_store_revision(ec->cfg.store));
    else if (rc != 0)
        store_error(ec, call, rc, k, "", "");
    if (rc != 0) {
        ke_rpc_call_unref(call);
        free(w);
        return;
    }
    ke_rpc_call_set_data(call, w);
}

static void watch_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    (void)ud;
    watch_ctx *w = ke_rpc_call_get_data(call);
    if (!w)
        return;
    ke_store_watch_stop(w->w); /* no callback runs after this */
    ke_rpc_call_unref(w->call);
    free(w);
}

int ec_api_register(edgecontroller *ec, ke_rpc_server *srv)
{
    static const ke_rpc_method_def methods[] = {
        {"Apply", KE_RPC_UNARY, {.on_message = apply_on_message}},
        {"Get", KE_RPC_UNARY, {.on_message = get_on_message}},
        {"List", KE_RPC_UNARY, {.on_message = list_on_message}},
        {"Delete", KE_RPC_UNARY, {.on_message = delete_on_message}},
        {"Watch", KE_RPC_SERVER_STREAM,
         {.on_message = watch_on_message, .on_close = watch_on_close}},
        {"Logs", KE_RPC_SERVER_STREAM,
         {.on_message = ec_logs_on_message, .on_close = ec_relay_on_close}},
        {"ProxyHTTP", KE_RPC_UNARY,
         {.on_message = ec_proxy_on_message, .on_close = ec_relay_on_close}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__edge_controller__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), ec);
}
