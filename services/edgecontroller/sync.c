/*
 * sync.c — downstream: every pod bound to a node goes to that node, with
 * exactly the ConfigMaps and Secrets it references.
 *
 * Per pod the controller remembers its node and references; per node, a
 * count of references per "ns/Kind/name". A pod change publishes the pod,
 * publishes objects it newly references on its node, and deletes from the
 * node objects nothing there references any more; a ConfigMap/Secret
 * change goes to every node that references it. Store watches deliver
 * changes one at a time, in order, on the store's dispatcher thread.
 * References: volumes[].configMap.name, volumes[].secret.secretName,
 * containers[].env[].valueFrom.{configMapKeyRef,secretKeyRef}.name and
 * containers[].envFrom[].{configMapRef,secretRef}.name.
 */
#include "ec_internal.h"

#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_k8s.h"
#include "ke_log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EC_MAX_REFS 64

typedef struct ec_pod {
    char node[64];
    char *refs[EC_MAX_REFS]; /* "ns/Kind/name" */
    size_t n_refs;
} ec_pod;

static void add_ref(char **refs, size_t *n, const char *ns, const char *kind, const char *name)
{
    if (!name || !*name || *n >= EC_MAX_REFS)
        return;
    char buf[400];
    snprintf(buf, sizeof(buf), "%s/%s/%s", ns, kind, name);
    for (size_t i = 0; i < *n; i++)
        if (strcmp(refs[i], buf) == 0)
            return;
    char *copy = strdup(buf);
    if (copy)
        refs[(*n)++] = copy;
}

static void container_refs(const json_t *c, const char *ns, char **refs, size_t *n)
{
    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(c, "env"), i, e) {
        add_ref(refs, n, ns, "ConfigMap", ke_k8s_str(e, "valueFrom.configMapKeyRef.name"));
        add_ref(refs, n, ns, "Secret", ke_k8s_str(e, "valueFrom.secretKeyRef.name"));
    }
    json_array_foreach(json_object_get(c, "envFrom"), i, e) {
        add_ref(refs, n, ns, "ConfigMap", ke_k8s_str(e, "configMapRef.name"));
        add_ref(refs, n, ns, "Secret", ke_k8s_str(e, "secretRef.name"));
    }
}

static void pod_refs(const json_t *pod, char **refs, size_t *n)
{
    const char *ns = ke_k8s_str(pod, "metadata.namespace");
    const json_t *spec = json_object_get(pod, "spec");
    size_t i;
    const json_t *v;
    *n = 0;
    ns = ns ? ns : "default";
    json_array_foreach(json_object_get(spec, "volumes"), i, v) {
        add_ref(refs, n, ns, "ConfigMap", ke_k8s_str(v, "configMap.name"));
        add_ref(refs, n, ns, "Secret", ke_k8s_str(v, "secret.secretName"));
    }
    json_array_foreach(json_object_get(spec, "containers"), i, v)
        container_refs(v, ns, refs, n);
    json_array_foreach(json_object_get(spec, "initContainers"), i, v)
        container_refs(v, ns, refs, n);
}

int ec_publish_object(edgecontroller *ec, const char *node, const json_t *obj)
{
    char key[512];
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    ke_hub_resource_key(key, sizeof(key), node, ns ? ns : "", ke_k8s_str(obj, "kind"),
                        ke_k8s_str(obj, "metadata.name"));
    char *json = json_dumps(obj, JSON_COMPACT);
    if (!json)
        return KE_ENOMEM;
    int rc = ke_hub_publish(ec->hub, node, key, KE__V1__OPERATION__OPERATION_UPDATE,
                            "resource", json, strlen(json));
    free(json);
    return rc;
}

/* ref_key splits "ns/Kind/name" into a node resource key. */
static void ref_resource_key(char *key, size_t len, const char *node, const char *ref)
{
    char ns[128], kind[32], name[256];
    if (sscanf(ref, "%127[^/]/%31[^/]/%255s", ns, kind, name) == 3)
        ke_hub_resource_key(key, len, node, ns, kind, name);
    else
        snprintf(key, len, "node/%s/invalid", node);
}

/* ref_inc / ref_dec adjust a node's reference count; they publish the
 * referenced object on 0 -> 1 and delete it from the node on 1 -> 0. */
static void ref_inc(edgecontroller *ec, const char *node, const char *ref)
{
    ke_map *m = ke_map_get(ec->node_refs, node);
    if (!m) {
        m = ke_map_new();
        if (!m || ke_map_put(ec->node_refs, node, m, NULL) != 0) {
            ke_map_free(m);
            return;
        }
    }
    intptr_t n = (intptr_t)ke_map_get(m, ref);
    ke_map_put(m, ref, (void *)(n + 1), NULL);
    if (n > 0)
        return;
    char ns[128], kind[32], name[256];
    json_t *obj = NULL;
    if (sscanf(ref, "%127[^/]/%31[^/]/%255s", ns, kind, name) == 3 &&
        ke_store_get(ec->cfg.store, kind, ns, name, &obj) == 0) {
        ec_publish_object(ec, node, obj);
        json_decref(obj);
    }
    /* Not created yet: the ConfigMap/Secret watch sends it when it is. */
}

static void ref_dec(edgecontroller *ec, const char *node, const char *ref)
{
    ke_map *m = ke_map_get(ec->node_refs, node);
    intptr_t n = m ? (intptr_t)ke_map_get(m, ref) : 0;
    if (n > 1) {
        ke_map_put(m, ref, (void *)(n - 1), NULL);
        return;
    }
    if (m)
        ke_map_del(m, ref);
    char key[512];
    ref_resource_key(key, sizeof(key), node, ref);
    ke_hub_publish(ec->hub, node, key, KE__V1__OPERATION__OPERATION_DELETE, "resource",
                   NULL, 0);
}

static void pod_free(ec_pod *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_refs; i++)
        free(p->refs[i]);
    free(p);
}

static int has_ref(char *const *refs, size_t n, const char *ref)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(refs[i], ref) == 0)
            return 1;
    return 0;
}

/* pod_changed handles a pod's ADDED/MODIFIED (deleted = 0) or DELETED. */
static void pod_changed(edgecontroller *ec, const json_t *pod, int deleted)
{
    const char *ns = ke_k8s_str(pod, "metadata.namespace");
    const char *name = ke_k8s_str(pod, "metadata.name");
    const char *node = ke_k8s_str(pod, "spec.nodeName");
    char id[400];
    snprintf(id, sizeof(id), "%s/%s", ns ? ns : "", name ? name : "");
    pthread_mutex_lock(&ec->mu);
    ec_pod *old = ke_map_get(ec->pods, id);
    ec_pod *cur = NULL;
    if (!deleted && node && *node && (cur = calloc(1, sizeof(*cur))) != NULL) {
        snprintf(cur->node, sizeof(cur->node), "%s", node);
        pod_refs(pod, cur->refs, &cur->n_refs);
    }
    if (cur)
        ke_map_put(ec->pods, id, cur, NULL);
    else
        ke_map_del(ec->pods, id);
    pthread_mutex_unlock(&ec->mu);

    if (cur) {
        ec_publish_object(ec, cur->node, pod);
        for (size_t i = 0; i < cur->n_refs; i++)
            if (!old || strcmp(old->node, cur->node) != 0 ||
                !has_ref(old->refs, old->n_refs, cur->refs[i]))
                ref_inc(ec, cur->node, cur->refs[i]);
    }
    if (old) {
        int moved = !cur || strcmp(old->node, cur->node) != 0;
        if (moved) {
            char key[512];
            ke_hub_resource_key(key, sizeof(key), old->node, ns ? ns : "", "Pod", name);
            ke_hub_publish(ec->hub, old->node, key, KE__V1__OPERATION__OPERATION_DELETE,
                           "resource", NULL, 0);
        }
        for (size_t i = 0; i < old->n_refs; i++)
            if (moved || !has_ref(cur->refs, cur->n_refs, old->refs[i]))
                ref_dec(ec, old->node, old->refs[i]);
        pod_free(old);
    }
}

static void on_pod(int type, const json_t *obj, uint64_t rev, void *ud)
{
    (void)rev;
    if (type == KE_STORE_GONE) {
        ke_log_error(EC_MOD, "pod watch fell behind the store history; restart to resync");
        return;
    }
    pod_changed(ud, obj, type == KE_STORE_DELETED);
}

typedef struct ref_fan {
    edgecontroller *ec;
    const char *ref;
    const json_t *obj;
    int deleted;
    char (*nodes)[64];
    size_t n, cap;
} ref_fan;

static int collect_node(const char *node, void *value, void *arg)
{
    ref_fan *f = arg;
    if (ke_map_get(value, f->ref) && f->n < f->cap)
        snprintf(f->nodes[f->n++], 64, "%s", node);
    return 0;
}

/* on_ref: a ConfigMap or Secret changed; send it to every node that has a
 * pod referencing it. */
static void on_ref(int type, const json_t *obj, uint64_t rev, void *ud)
{
    (void)rev;
    edgecontroller *ec = ud;
    if (type == KE_STORE_GONE || !obj)
        return;
    char ref[400];
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    snprintf(ref, sizeof(ref), "%s/%s/%s", ns ? ns : "", ke_k8s_str(obj, "kind"),
             ke_k8s_str(obj, "metadata.name"));
    pthread_mutex_lock(&ec->mu);
    size_t cap = ke_map_len(ec->node_refs) + 1;
    ref_fan f = {ec, ref, obj, type == KE_STORE_DELETED, calloc(cap, 64), 0, cap};
    if (f.nodes)
        ke_map_each(ec->node_refs, collect_node, &f);
    pthread_mutex_unlock(&ec->mu);
    for (size_t i = 0; i < f.n; i++) {
        if (f.deleted) {
            char key[512];
            ref_resource_key(key, sizeof(key), f.nodes[i], ref);
            ke_hub_publish(ec->hub, f.nodes[i], key, KE__V1__OPERATION__OPERATION_DELETE,
                           "resource", NULL, 0);
        } else {
            ec_publish_object(ec, f.nodes[i], obj);
        }
    }
    free(f.nodes);
}

int ec_sync_referenced(edgecontroller *ec, const char *node, const char *ref)
{
    pthread_mutex_lock(&ec->mu);
    ke_map *m = ke_map_get(ec->node_refs, node);
    int yes = m && ke_map_get(m, ref) != NULL;
    pthread_mutex_unlock(&ec->mu);
    return yes;
}

int ec_sync_start(edgecontroller *ec)
{
    json_t *items = NULL;
    uint64_t rev = 0;
    int rc = ke_store_list(ec->cfg.store, "Pod", "", NULL, NULL, &items, &rev);
    if (rc != 0)
        return rc;
    size_t i;
    json_t *pod;
    json_array_foreach(items, i, pod)
        pod_changed(ec, pod, 0);
    json_decref(items);
    rc = ke_store_watch_start(ec->cfg.store, "Pod", "", NULL, NULL, rev, on_pod, ec, &ec->w_pods);
    if (rc == 0)
        rc = ke_store_watch_start(ec->cfg.store, "ConfigMap", "", NULL, NULL, rev, on_ref, ec,
                            &ec->w_cms);
    if (rc == 0)
        rc = ke_store_watch_start(ec->cfg.store, "Secret", "", NULL, NULL, rev, on_ref, ec,
                            &ec->w_secrets);
    return rc;
}

static int free_pod_rec(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    pod_free(value);
    return 0;
}

static int free_ref_map(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    ke_map_free(value);
    return 0;
}

void ec_sync_stop(edgecontroller *ec)
{
    ke_store_watch_stop(ec->w_pods);
    ke_store_watch_stop(ec->w_cms);
    ke_store_watch_stop(ec->w_secrets);
    ec->w_pods = ec->w_cms = ec->w_secrets = NULL;
    if (ec->pods)
        ke_map_each(ec->pods, free_pod_rec, NULL);
    if (ec->node_refs)
        ke_map_each(ec->node_refs, free_ref_map, NULL);
}
