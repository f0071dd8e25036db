/*
 * edgecontroller.c — lifecycle, the node loop and upstream reports.
 *
 * Node loop (every node_poll): one Node object per node CloudHub knows,
 * created on first sight (labels node-role.kubernetes.io/edge and
 * kubernetes.io/hostname); its Ready condition is True while the node's
 * tunnel is up, stays as it was for node_grace after the tunnel goes (timed
 * by CloudHub's monotonic idle time, so clock steps change nothing), then
 * turns False (reason NodeStatusUnknown). Pending pods with a nodeSelector
 * are placed when a matching node is Ready.
 *
 * Upstream: the durable consumer "edgecontroller" of CloudHub's upstream
 * log (groups podstatus, nodestatus, resource) on its own thread; a report
 * is acked only after its effect is in the store, and a report whose effect
 * is there already (the same status) writes nothing:
 *   podstatus UPLOAD/UPDATE  the pod's status, written apart from its spec
 *   podstatus DELETE         the edge confirms a pod is gone: it leaves the
 *                            store (and so the node)
 *   nodestatus               addresses, capacity, nodeInfo of the Node
 *   resource QUERY           the edge asks for an object it may hold: sent
 *                            again if it is the node's
 * A report about a pod not bound to the reporting node is ignored (CloudHub
 * already refuses resources of other nodes).
 */
#include "ec_internal.h"

#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_k8s.h"
#include "ke_log.h"

#include "ke_time.h"
#include "ke_watchdog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ec_node_ready(const json_t *node)
{
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(json_object_get(node, "status"), "conditions"), i, c) {
        const char *type = ke_k8s_str(c, "type"), *st = ke_k8s_str(c, "status");
        if (type && st && strcmp(type, "Ready") == 0)
            return strcmp(st, "True") == 0;
    }
    return 0;
}

/* status_edit changes an object's status with optimistic concurrency: it
 * reads the object, lets fn edit it (fn returns 1 to leave it as it is),
 * and writes the status at the version it read, again on a conflict. So
 * the node loop (conditions) and the edge's reports (addresses, capacity)
 * never overwrite each other. Returns 0, or a KE_E* code. */
static int status_edit(edgecontroller *ec, const char *kind, const char *ns, const char *name,
                       int (*fn)(json_t *obj, void *arg), void *arg)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        json_t *obj = NULL;
        int rc = ke_store_get(ec->cfg.store, kind, ns, name, &obj);
        if (rc != 0)
            return rc;
        if (!json_is_object(json_object_get(obj, "status")))
            json_object_set_new(obj, "status", json_object());
        rc = fn(obj, arg) ? 0 : ke_store_update_status(ec->cfg.store, obj, NULL);
        json_decref(obj);
        if (rc != KE_ECONFLICT)
            return rc;
    }
    return KE_ECONFLICT;
}

typedef struct ready_edit {
    int ready;
    int64_t last_seen; /* wall ms, for display */
    int changed;
} ready_edit;

static int edit_ready(json_t *node, void *arg)
{
    ready_edit *r = arg;
    json_t *conds = json_object_get(json_object_get(node, "status"), "conditions");
    if (json_is_array(conds) && json_array_size(conds) > 0 && ec_node_ready(node) == r->ready)
        return 1;
    char now[32], seen[32];
    ke_time_rfc3339(now, sizeof(now), ke_time_wall_ms());
    ke_time_rfc3339(seen, sizeof(seen), r->last_seen > 0 ? r->last_seen : ke_time_wall_ms());
    json_t *cond = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "Ready", "status",
                             r->ready ? "True" : "False", "reason",
                             r->ready ? "EdgeReady" : "NodeStatusUnknown", "message",
                             r->ready ? "edgecore is connected"
                                      : "the node's tunnel has been down longer than the grace "
                                        "period",
                             "lastHeartbeatTime", seen, "lastTransitionTime", now);
    json_object_set_new(json_object_get(node, "status"), "conditions", json_pack("[o]", cond));
    r->changed = 1;
    return 0;
}

/* set_ready writes the Ready condition of node when it changes. */
static void set_ready(edgecontroller *ec, const char *name, int ready, int64_t last_seen)
{
    ready_edit r = {ready, last_seen, 0};
    if (status_edit(ec, "Node", "", name, edit_ready, &r) == 0 && r.changed)
        ke_log_info(EC_MOD, "node %s node=%s", ready ? "Ready" : "NotReady", name);
}

/* node_get_or_create returns the Node object of a joined node, creating
 * it on first sight (new reference in *out). */
static int node_get_or_create(edgecontroller *ec, const char *name, json_t **out)
{
    int rc = ke_store_get(ec->cfg.store, "Node", "", name, out);
    if (rc != KE_ENOTFOUND)
        return rc;
    json_t *obj = json_pack("{s:s,s:s,s:{s:s,s:{s:s,s:s}}}", "apiVersion", "v1", "kind", "Node",
                            "metadata", "name", name, "labels", "node-role.kubernetes.io/edge",
                            "", "kubernetes.io/hostname", name);
    rc = ke_store_create(ec->cfg.store, obj, out);
    if (rc == 0)
        ke_log_info(EC_MOD, "node registered node=%s", name);
    else if (rc == KE_EEXIST) /* created meanwhile by the other path */
        rc = ke_store_get(ec->cfg.store, "Node", "", name, out);
    json_decref(obj);
    return rc;
}

static int ensure_node(const Ke__V1__NodeInfo *info, void *arg)
{
    edgecontroller *ec = arg;
    json_t *node = NULL;
    if (node_get_or_create(ec, info->name, &node) != 0)
        return 0;
    int ready;
    if (info->connected)
        ready = 1;
    else if (info->last_seen_ms > 0 && info->idle_ms <= ec->cfg.node_grace_ms)
        ready = ec_node_ready(node); /* within the grace period: unchanged */
    else
        ready = 0;
    json_decref(node);
    set_ready(ec, info->name, ready, info->last_seen_ms);
    return 0;
}

/* place_pending binds unscheduled pods that have a nodeSelector. */
static void place_pending(edgecontroller *ec)
{
    json_t *pods = NULL;
    if (ke_store_list(ec->cfg.store, "Pod", "", NULL, NULL, &pods, NULL) != 0)
        return;
    size_t i;
    json_t *pod;
    json_array_foreach(pods, i, pod) {
        const char *node = ke_k8s_str(pod, "spec.nodeName");
        char chosen[64];
        if ((node && *node) || !json_object_get(json_object_get(pod, "spec"), "nodeSelector") ||
            ec_place(ec, pod, chosen, sizeof(chosen)) != 0)
            continue;
        json_t *upd = json_deep_copy(pod);
        json_object_set_new(json_object_get(upd, "spec"), "nodeName", json_string(chosen));
        if (ke_store_update(ec->cfg.store, upd, NULL) == 0)
            ke_log_info(EC_MOD, "pod placed pod=%s/%s node=%s",
                        ke_k8s_str(pod, "metadata.namespace"), ke_k8s_str(pod, "metadata.name"),
                        chosen);
        json_decref(upd);
    }
    json_decref(pods);
}

/* ---- upstream ---- */

/* edit_pod_status sets the reported status; the same status again is no
 * change (a report handed twice has no second effect). */
static int edit_pod_status(json_t *pod, void *arg)
{
    if (json_equal(json_object_get(pod, "status"), arg))
        return 1;
    json_object_set(pod, "status", arg);
    return 0;
}

/* settled maps a store outcome to the consumer's: a missing object can
 * never take the report (done), any other error is retried. */
static int settled(int rc)
{
    return rc == 0 || rc == KE_ENOTFOUND ? 0 : rc;
}

static int on_pod_status(edgecontroller *ec, const char *node, const char *ns, const char *name,
                         const Ke__V1__Message *m)
{
    json_t *pod = NULL;
    int rc = ke_store_get(ec->cfg.store, "Pod", ns, name, &pod);
    if (rc != 0)
        return settled(rc);
    const char *bound = ke_k8s_str(pod, "spec.nodeName");
    if (!bound || strcmp(bound, node) != 0) {
        ke_log_warn(EC_MOD, "ignoring status of pod %s/%s from node %s: bound to %s", ns, name,
                    node, bound ? bound : "none");
        json_decref(pod);
        return 0;
    }
    if (m->route->operation == KE__V1__OPERATION__OPERATION_DELETE) {
        rc = 0;
        if (json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp")) {
            rc = settled(ke_store_delete(ec->cfg.store, "Pod", ns, name, 0, NULL));
            if (rc == 0)
                ke_log_info(EC_MOD, "pod deleted pod=%s/%s node=%s", ns, name, node);
        }
        json_decref(pod);
        return rc;
    }
    json_decref(pod);
    json_error_t je;
    json_t *status = json_loadb((const char *)m->content.data, m->content.len, 0, &je);
    char why[256];
    if (!json_is_object(status)) {
        char ej[KE_LOG_ESC_SIZE(sizeof(je.text))];
        ke_log_warn(EC_MOD, "ignoring pod status that is not a JSON object pod=%s/%s node=%s: %s",
                    ns, name, node, ke_log_esc(je.text, ej, sizeof(ej)));
        json_decref(status);
        return 0;
    }
    if (ke_k8s_json_depth_check(status, KE_K8S_JSON_DEPTH_MAX, why, sizeof(why)) != 0) {
        char ew[KE_LOG_ESC_SIZE(sizeof(why))];
        ke_log_warn(EC_MOD, "ignoring pod status pod=%s/%s node=%s: %s", ns, name, node,
                    ke_log_esc(why, ew, sizeof(ew)));
        json_decref(status);
        return 0;
    }
    rc = status_edit(ec, "Pod", ns, name, edit_pod_status, status);
    json_decref(status);
    return settled(rc);
}

static int edit_node_status(json_t *obj, void *arg)
{
    const json_t *rep = arg;
    json_t *st = json_object_get(obj, "status");
    json_t *before = json_deep_copy(st);
    static const char *const fields[] = {"addresses", "capacity", "allocatable", "nodeInfo"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(rep, fields[i]);
        if (v)
            json_object_set(st, fields[i], v);
    }
    if (!json_object_get(rep, "allocatable") && json_object_get(rep, "capacity"))
        json_object_set(st, "allocatable", json_object_get(rep, "capacity"));
    int same = json_equal(before, st);
    json_decref(before);
    return same;
}

static int on_node_status(edgecontroller *ec, const char *node, const Ke__V1__Message *m)
{
    json_t *obj = NULL;
    json_error_t je;
    json_t *rep = json_loadb((const char *)m->content.data, m->content.len, 0, &je);
    int rc = 0;
    char why[256], ew[KE_LOG_ESC_SIZE(sizeof(why))];
    if (!json_is_object(rep))
        ke_log_warn(EC_MOD, "ignoring node status that is not a JSON object node=%s", node);
    else if (ke_k8s_json_depth_check(rep, KE_K8S_JSON_DEPTH_MAX, why, sizeof(why)) != 0)
        ke_log_warn(EC_MOD, "ignoring node status node=%s: %s", node,
                    ke_log_esc(why, ew, sizeof(ew)));
    else if ((rc = node_get_or_create(ec, node, &obj)) == 0)
        rc = status_edit(ec, "Node", "", node, edit_node_status, rep);
    json_decref(obj);
    json_decref(rep);
    return settled(rc);
}

/* on_query: the edge asks again for an object it should hold; it is sent
 * again (resend) if the node should hold it. */
static int on_query(edgecontroller *ec, const char *node, const char *ns, const char *kind,
                    const char *name)
{
    if (!ke_nodesync_wants(ec->sync, node, kind, ns, name)) {
        char ens[KE_LOG_ESC_SIZE(128)], ek[KE_LOG_ESC_SIZE(64)], ena[KE_LOG_ESC_SIZE(256)];
        ke_log_warn(EC_MOD, "query refused node=%s resource=%s/%s/%s: not the node's", node,
                    ke_log_esc(ns, ens, sizeof(ens)), ke_log_esc(kind, ek, sizeof(ek)),
                    ke_log_esc(name, ena, sizeof(ena)));
        return 0;
    }
    json_t *obj = NULL;
    int rc = ke_store_get(ec->cfg.store, kind, ns, name, &obj);
    if (rc != 0)
        return settled(rc);
    char key[512], *json = json_dumps(obj, JSON_COMPACT);
    const char *rvs = ke_k8s_str(obj, "metadata.resourceVersion");
    uint64_t rv = rvs ? strtoull(rvs, NULL, 10) : 0, cache = ke_nodesync_rev(ec->sync);
    json_decref(obj);
    if (!json)
        return KE_ENOMEM;
    ke_hub_resource_key(key, sizeof(key), node, ns, kind, name);
    rc = ke_hub_publish(ec->hub, node, key, KE__V1__OPERATION__OPERATION_UPDATE, "resource", json,
                        strlen(json), rv > cache ? rv : cache, 1);
    free(json);
    if (rc == KE_ECONFLICT) { /* CloudHub holds newer: converge the node instead */
        ke_nodesync_queue_node(ec->sync, node);
        rc = 0;
    }
    return rc;
}

static int on_upstream(const Ke__V1__UpstreamMessage *up, void *ud)
{
    edgecontroller *ec = ud;
    const Ke__V1__Message *m = up->message;
    char node[64], ns[128], kind[64], name[256];
    if (!m || !m->route ||
        sscanf(m->route->resource, "node/%63[^/]/%127[^/]/%63[^/]/%255s", node, ns, kind, name) !=
            4) {
        /* cluster-scoped keys have an empty namespace: node/<n>//<Kind>/<name> */
        if (!m || !m->route ||
            sscanf(m->route->resource, "node/%63[^/]//%63[^/]/%255s", node, kind, name) != 3)
            return 0;
        ns[0] = '\0';
    }
    if (strcmp(node, up->node_name) != 0)
        return 0;
    const char *group = m->route->group;
    if (strcmp(group, "podstatus") == 0 && strcmp(kind, "Pod") == 0)
        return on_pod_status(ec, node, ns, name, m);
    if (strcmp(group, "nodestatus") == 0)
        return on_node_status(ec, node, m);
    if (strcmp(group, "resource") == 0 &&
        m->route->operation == KE__V1__OPERATION__OPERATION_QUERY)
        return on_query(ec, node, ns, kind, name);
    return 0;
}

/* node_loop polls CloudHub's nodes every node_poll_ms. It beats the
 * watchdog heartbeat "ec-nodes" after each poll and, between polls, at
 * least every watchdog tick, so only a poll stuck past the stall limit
 * shows as stalled. */
static void *node_loop(void *arg)
{
    edgecontroller *ec = arg;
    ke_watchdog_hb *hb = NULL;
    int rc = ke_watchdog_register("ec-nodes", 0, &hb);
    if (rc != 0) /* it still polls, unwatched */
        ke_log_warn(EC_MOD, "the node poller is not watched: %s", ke_strerror(rc));
    pthread_mutex_lock(&ec->mu);
    while (!ec->stopping) {
        pthread_mutex_unlock(&ec->mu);
        if (ke_hub_nodes(ec->hub, ensure_node, ec) != 0)
            ke_log_warn(EC_MOD, "cannot list nodes from CloudHub: trying again");
        place_pending(ec);
        int64_t due = ke_time_mono_ms() + ec->cfg.node_poll_ms;
        pthread_mutex_lock(&ec->mu);
        for (int64_t left; !ec->stopping && (left = due - ke_time_mono_ms()) > 0;) {
            ke_watchdog_beat(hb);
            int64_t tick = ke_watchdog_tick_ms(hb);
            struct timespec until = ke_time_deadline(left < tick ? left : tick);
            pthread_cond_timedwait(&ec->cv, &ec->mu, &until);
        }
        ke_watchdog_beat(hb);
    }
    pthread_mutex_unlock(&ec->mu);
    ke_watchdog_unregister(hb);
    return NULL;
}

int edgecontroller_new(const edgecontroller_config *cfg, edgecontroller **out)
{
    edgecontroller *ec = calloc(1, sizeof(*ec));
    if (!ec)
        return KE_ENOMEM;
    ec->cfg = *cfg;
    if (ec->cfg.node_grace_ms <= 0)
        ec->cfg.node_grace_ms = 40000;
    if (ec->cfg.node_poll_ms <= 0)
        ec->cfg.node_poll_ms = 1000;
    if (ec->cfg.resync_ms <= 0)
        ec->cfg.resync_ms = 60000;
    /* the object API keeps cluster-scoped kinds (Node, ClusterRole,
     * ClusterRoleBinding) without a namespace */
    size_t nk;
    const ke_k8s_kind *kinds = ke_k8s_kinds(&nk);
    for (size_t i = 0; i < nk; i++) {
        int rc = kinds[i].namespaced ? 0 : ke_store_set_cluster_scoped(cfg->store, kinds[i].kind);
        if (rc != 0) {
            ke_log_error(EC_MOD, "cannot mark kind=%s cluster-scoped: %s", kinds[i].kind,
                         ke_strerror(rc));
            free(ec);
            return rc;
        }
    }
    pthread_mutex_init(&ec->mu, NULL);
    ke_time_cond_init(&ec->cv);
    *out = ec;
    return 0;
}

int edgecontroller_register(edgecontroller *ec, ke_rpc_server *srv)
{
    return ec_api_register(ec, srv);
}

int edgecontroller_start(edgecontroller *ec, ke_rpc_channel *hub)
{
    static const char *const groups[] = {"podstatus", "nodestatus", "resource"};
    ec->hub = hub;
    int rc = ke_hub_consumer_new(hub, "edgecontroller", groups, 3, on_upstream, ec, &ec->up);
    if (rc == 0)
        rc = ke_hub_consumer_start(ec->up);
    if (rc == 0)
        rc = ec_sync_start(ec);
    if (rc == 0 && pthread_create(&ec->node_thread, NULL, node_loop, ec) != 0)
        rc = KE_ENOMEM;
    if (rc == 0) {
        pthread_setname_np(ec->node_thread, "ke-ec-nodes");
        ec->started = 1;
    }
    return rc;
}

void edgecontroller_stop(edgecontroller *ec)
{
    if (!ec)
        return;
    pthread_mutex_lock(&ec->mu);
    int was = ec->stopping;
    ec->stopping = 1;
    pthread_cond_broadcast(&ec->cv);
    pthread_mutex_unlock(&ec->mu);
    if (was)
        return;
    if (ec->started)
        pthread_join(ec->node_thread, NULL);
    ke_hub_consumer_stop(ec->up);
    ke_nodesync_stop(ec->sync);
}

void edgecontroller_free(edgecontroller *ec)
{
    if (!ec)
        return;
    edgecontroller_stop(ec);
    ke_hub_consumer_free(ec->up);
    ke_nodesync_free(ec->sync);
    pthread_mutex_destroy(&ec->mu);
    pthread_cond_destroy(&ec->cv);
    free(ec);
}
