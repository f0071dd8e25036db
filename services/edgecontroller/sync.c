/*
 * sync.c — downstream: every node holds exactly the pods bound to it and
 * the ConfigMaps and Secrets those pods reference. The convergence itself
 * (cache from store watches, per-node reconcile against CloudHub in a work
 * queue, relist after falling behind, store revisions as versions) is
 * lib/nodesync; this file says what a pod references:
 * volumes[].configMap.name, volumes[].secret.secretName,
 * containers[].env[].valueFrom.{configMapKeyRef,secretKeyRef}.name and
 * containers[].envFrom[].{configMapRef,secretRef}.name (init containers too).
 */
#include "ec_internal.h"

#include <stdatomic.h>
#include <string.h>

#include "ke_k8s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EC_MAX_REFS KE_NODESYNC_REFS_MAX

/* ---- references ---- */

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

/* ---- interface for edgecontroller.c ---- */

static size_t pod_refs_fn(const json_t *pod, char **refs, size_t cap)
{
    (void)cap; /* pod_refs stops at EC_MAX_REFS == KE_NODESYNC_REFS_MAX */
    size_t n = 0;
    pod_refs(pod, refs, &n);
    return n;
}

int ec_sync_start(edgecontroller *ec)
{
    static const char *const refs[] = {"ConfigMap", "Secret"};
    ke_nodesync_config c = {.name = "ec-sync",
                            .store = ec->cfg.store,
                            .hub = ec->hub,
                            .primary = "Pod",
                            .ref_kinds = refs,
                            .n_ref_kinds = 2,
                            .refs = pod_refs_fn,
                            .qps = ec->cfg.sync_qps,
                            .resync_ms = (uint32_t)ec->cfg.resync_ms};
    int rc = ke_nodesync_new(&c, &ec->sync);
    if (rc == 0)
        rc = ke_nodesync_start(ec->sync);
    if (rc == 0)
        atomic_store(&ec->started_sync, ec->sync);
    return rc;
}

int edgecontroller_node_holds(void *ecp, const char *node, const char *kind, const char *ns,
                              const char *name)
{
    edgecontroller *ec = ecp;
    ke_nodesync *s = atomic_load(&ec->started_sync);
    if (!s || (strcmp(kind, "Pod") != 0 && strcmp(kind, "ConfigMap") != 0 &&
               strcmp(kind, "Secret") != 0))
        return 0;
    return ke_nodesync_wants(s, node, kind, ns, name) ? 1 : 0;
}
