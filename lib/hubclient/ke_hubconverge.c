/*
 * ke_hubconverge.c — converging one node's objects in CloudHub with what
 * a controller's cache says it should hold (see ke_hub_converge in
 * ke_hubclient.h). Shared by EdgeController (pods, ConfigMaps, Secrets)
 * and DeviceController (devices, device models).
 */
#include "ke_hubclient.h"

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CV_MOD "hubclient"

typedef struct cv_have {
    uint64_t rv;
    int deleted;
} cv_have;

typedef struct cv_ctx {
    const char *primary; /* kinds[0]: sent after, deleted before, what it references */
    int pass;            /* publish_want: 0 referenced kinds, 1 the primary */
    ke_rpc_channel *hub;
    ke_store *store;
    const char *node;
    ke_map *want, *have;
    uint64_t ver;
    int rc;
    ke_hub_converge_stats st;
} cv_ctx;

int ke_hub_want_add(ke_map *want, const char *node, const char *kind, const char *ns,
                    const char *name, uint64_t rv)
{
    char key[512];
    ke_hub_resource_key(key, sizeof(key), node, ns, kind, name);
    if (ke_map_get(want, key))
        return 0;
    ke_hub_want *w = calloc(1, sizeof(*w));
    if (!w || ke_map_put(want, key, w, NULL) != 0) {
        free(w);
        return KE_ENOMEM;
    }
    w->rv = rv;
    snprintf(w->kind, sizeof(w->kind), "%s", kind);
    snprintf(w->ns, sizeof(w->ns), "%s", ns ? ns : "");
    snprintf(w->name, sizeof(w->name), "%s", name);
    return 0;
}

static int free_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
    return 0;
}

void ke_hub_want_free(ke_map *want)
{
    if (!want)
        return;
    ke_map_each(want, free_value, NULL);
    ke_map_free(want);
}

static int have_add(const char *key, uint64_t version, int deleted, void *arg)
{
    cv_ctx *c = arg;
    cv_have *h = malloc(sizeof(*h));
    if (!h || ke_map_put(c->have, key, h, NULL) != 0) {
        free(h);
        c->rc = KE_ENOMEM;
        return 1;
    }
    h->rv = version;
    h->deleted = deleted;
    return 0;
}

static uint64_t obj_rv(const json_t *obj)
{
    const char *s = ke_k8s_str(obj, "metadata.resourceVersion");
    return s ? strtoull(s, NULL, 10) : 0;
}

static void fail(cv_ctx *c, int rc)
{
    if (c->rc == 0)
        c->rc = rc;
}

/* publish_want sends the store's current copy of one wanted object. */
static int publish_want(const char *key, void *value, void *arg)
{
    cv_ctx *c = arg;
    ke_hub_want *w = value;
    if ((strcmp(w->kind, c->primary) == 0) != (c->pass == 1))
        return 0; /* not this pass */
    cv_have *h = ke_map_get(c->have, key);
    if (h && !h->deleted && h->rv >= w->rv)
        return 0; /* CloudHub holds this version (or a newer one) */
    json_t *obj = NULL;
    int rc = ke_store_get(c->store, w->kind, w->ns, w->name, &obj);
    if (rc == KE_ENOTFOUND)
        return 0; /* deleted meanwhile: the caller's watch sees it */
    if (rc != 0) {
        fail(c, rc);
        return 0;
    }
    const char *bound = ke_k8s_str(obj, "spec.nodeName");
    if (bound && strcmp(bound, c->node) != 0) {
        json_decref(obj); /* moved meanwhile: the caller's watch sees it */
        return 0;
    }
    uint64_t version = obj_rv(obj) > c->ver ? obj_rv(obj) : c->ver;
    if (h && version <= h->rv) {
        ke_log_warn(CV_MOD, "CloudHub holds %s at version %llu, above the store's %llu: "
                            "left as it is",
                    key, (unsigned long long)h->rv, (unsigned long long)version);
        c->st.skipped++;
        json_decref(obj);
        return 0;
    }
    char *json = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!json) {
        fail(c, KE_ENOMEM);
        return 0;
    }
    rc = ke_hub_publish(c->hub, c->node, key, KE__V1__OPERATION__OPERATION_UPDATE, "resource",
                        json, strlen(json), version, 0);
    free(json);
    if (rc == 0)
        c->st.published++;
    else if (rc == KE_ECONFLICT)
        c->st.skipped++; /* a newer version got there first */
    else
        fail(c, rc);
    return 0;
}

/* delete_unwanted removes from the node what it should no longer hold. */
static int delete_unwanted(const char *key, void *value, void *arg)
{
    cv_ctx *c = arg;
    cv_have *h = value;
    if (h->deleted || ke_map_get(c->want, key))
        return 0;
    char kind[64] = "";
    const char *k = key;
    for (int slash = 0; *k && slash < 3; k++) /* node/<node>/<ns>/<kind>/<name> */
        slash += *k == '/';
    snprintf(kind, sizeof(kind), "%.*s", (int)strcspn(k, "/"), k);
    if ((strcmp(kind, c->primary) == 0) != (c->pass == 0))
        return 0; /* not this pass */
    if (c->ver <= h->rv) {
        /* Published from a newer view than the cache's: its events are
         * on their way; try again later. */
        fail(c, KE_EIO);
        return 0;
    }
    int rc = ke_hub_publish(c->hub, c->node, key, KE__V1__OPERATION__OPERATION_DELETE,
                            "resource", NULL, 0, c->ver, 0);
    if (rc == 0)
        c->st.deleted++;
    else if (rc == KE_ECONFLICT)
        c->st.skipped++;
    else
        fail(c, rc);
    return 0;
}

int ke_hub_converge(ke_rpc_channel *hub, ke_store *store, const char *node,
                    const char *const *kinds, size_t n_kinds, ke_map *want, uint64_t ver,
                    ke_hub_converge_stats *stats)
{
    cv_ctx c = {.primary = n_kinds ? kinds[0] : "",
                .hub = hub,
                .store = store,
                .node = node,
                .want = want,
                .ver = ver};
    if (!(c.have = ke_map_new()))
        return KE_ENOMEM;
    int rc = ke_hub_node_objects(hub, node, kinds, n_kinds, have_add, &c);
    if (rc == 0 && c.rc == 0) {
        /* What a pod or device references goes first and leaves last, so
         * the edge never holds one without what it needs. */
        for (c.pass = 0; c.pass < 2; c.pass++)
            ke_map_each(want, publish_want, &c);
        for (c.pass = 0; c.pass < 2; c.pass++)
            ke_map_each(c.have, delete_unwanted, &c);
        rc = c.rc;
        if (c.st.published || c.st.deleted)
            ke_log_info(CV_MOD, "node converged node=%s published=%u deleted=%u rev=%llu", node,
                        c.st.published, c.st.deleted, (unsigned long long)ver);
    } else if (rc == KE_ENOTFOUND) {
        rc = 0; /* not joined, or removed: nothing of it to converge */
    } else if (rc == 0) {
        rc = c.rc;
    }
    ke_map_each(c.have, free_value, NULL);
    ke_map_free(c.have);
    if (stats)
        *stats = c.st;
    return rc;
}
