/*
 * ke_nodesync.c — see ke_nodesync.h.
 *
 * Cache maps (under s->mu):
 *   objs       "ns/name" -> ns_obj (primary objects bound to a node)
 *   node_objs  node -> ke_map("ns/name" -> 1)
 *   ref_rv     "ns/Kind/name" -> uint64_t version (referenced objects that exist)
 *   ref_nodes  "ns/Kind/name" -> ke_map(node -> count of primaries referencing)
 */
#include "ke_nodesync.h"

#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_k8s.h"
#include "ke_log.h"
#include "ke_map.h"
#include "ke_workqueue.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_MOD "nodesync"
#define NS_KINDS_MAX 5
/* Work queue keys that are not node names ('@' is not allowed there). */
#define NS_RELIST_KEY "@relist"
#define NS_RESYNC_KEY "@resync"

typedef struct ns_obj {
    char node[64];
    uint64_t rv;
    char *refs[KE_NODESYNC_REFS_MAX]; /* "ns/Kind/name" */
    size_t n_refs;
} ns_obj;

static int queue_hub_node(const Ke__V1__NodeInfo *info, void *arg);

struct ke_nodesync {
    ke_nodesync_config cfg;
    const char *kinds[NS_KINDS_MAX]; /* the primary, then the referenced kinds */
    size_t n_kinds;
    pthread_mutex_t mu;
    ke_store_watch *w[NS_KINDS_MAX];
    ke_wq *wq;
    ke_map *objs, *node_objs, *ref_rv, *ref_nodes;
    uint64_t cache_rev;
};

static uint64_t obj_rv(const json_t *obj)
{
    const char *s = ke_k8s_str(obj, "metadata.resourceVersion");
    return s ? strtoull(s, NULL, 10) : 0;
}

static void obj_free(ns_obj *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_refs; i++)
        free(p->refs[i]);
    free(p);
}

/* ---- the cache (s->mu held) ---- */

static void queue_node(ke_nodesync *s, const char *node)
{
    int rc = ke_wq_add(s->wq, node);
    if (rc != 0 && rc != KE_ECLOSED)
        ke_log_warn(NS_MOD, "cannot queue node=%s for sync: %s (the periodic resync will)", node,
                    ke_strerror(rc));
}

/* set_count adds delta to map[outer][inner] (a count), creating/removing. */
static void set_count(ke_map *map, const char *outer, const char *inner, int delta)
{
    ke_map *m = ke_map_get(map, outer);
    if (!m && delta > 0) {
        if (!(m = ke_map_new()) || ke_map_put(map, outer, m, NULL) != 0) {
            ke_map_free(m);
            ke_log_error(NS_MOD, "out of memory indexing %s", outer);
            return;
        }
    }
    if (!m)
        return;
    intptr_t n = (intptr_t)ke_map_get(m, inner) + delta;
    if (n > 0) {
        if (ke_map_put(m, inner, (void *)n, NULL) != 0)
            ke_log_error(NS_MOD, "out of memory indexing %s", outer);
    } else {
        ke_map_del(m, inner);
    }
    if (ke_map_len(m) == 0) {
        ke_map_del(map, outer);
        ke_map_free(m);
    }
}

/* index_primary adds (delta 1) or removes (delta -1) p in node_objs and ref_nodes. */
static void index_primary(ke_nodesync *s, const char *id, const ns_obj *p, int delta)
{
    set_count(s->node_objs, p->node, id, delta);
    for (size_t i = 0; i < p->n_refs; i++)
        set_count(s->ref_nodes, p->refs[i], p->node, delta);
}

/* cache_primary records a primary object's ADDED/MODIFIED (obj) or DELETED
 * (obj NULL) and queues the nodes it leaves and joins. */
static void cache_primary(ke_nodesync *s, const char *id, const json_t *obj)
{
    ns_obj *old = ke_map_del(s->objs, id);
    if (old) {
        index_primary(s, id, old, -1);
        queue_node(s, old->node);
    }
    const char *node = obj ? ke_k8s_str(obj, "spec.nodeName") : NULL;
    ns_obj *cur = NULL;
    if (node && *node && strlen(node) < sizeof(cur->node) && (cur = calloc(1, sizeof(*cur)))) {
        snprintf(cur->node, sizeof(cur->node), "%s", node);
        cur->rv = obj_rv(obj);
        cur->n_refs = s->cfg.refs(obj, cur->refs, KE_NODESYNC_REFS_MAX);
        if (ke_map_put(s->objs, id, cur, NULL) != 0) {
            ke_log_error(NS_MOD, "out of memory caching %s", id);
            obj_free(cur);
            cur = NULL;
        } else {
            index_primary(s, id, cur, +1);
            if (!old || strcmp(old->node, cur->node) != 0)
                queue_node(s, cur->node);
        }
    }
    obj_free(old);
}

static int queue_each_node(const char *node, void *value, void *arg)
{
    (void)value;
    queue_node(arg, node);
    return 0;
}

/* cache_ref records a referenced object's version (0: deleted) and queues
 * the nodes whose primaries reference it. */
static void cache_ref(ke_nodesync *s, const char *ref, uint64_t rv)
{
    uint64_t *old = ke_map_del(s->ref_rv, ref);
    free(old);
    uint64_t *v = rv ? malloc(sizeof(*v)) : NULL;
    if (v) {
        *v = rv;
        if (ke_map_put(s->ref_rv, ref, v, NULL) != 0) {
            ke_log_error(NS_MOD, "out of memory caching %s", ref);
            free(v);
        }
    }
    ke_map *nodes = ke_map_get(s->ref_nodes, ref);
    if (nodes)
        ke_map_each(nodes, queue_each_node, s);
}

static void obj_id(char *buf, size_t len, const json_t *obj)
{
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    const char *name = ke_k8s_str(obj, "metadata.name");
    snprintf(buf, len, "%s/%s", ns ? ns : "", name ? name : "");
}

static void ref_id(char *buf, size_t len, const json_t *obj)
{
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    snprintf(buf, len, "%s/%s/%s", ns ? ns : "", ke_k8s_str(obj, "kind"),
             ke_k8s_str(obj, "metadata.name"));
}

static void fell_behind(ke_nodesync *s, const char *kind)
{
    ke_log_warn(NS_MOD, "%s watch fell behind the store history: relisting", kind);
    queue_node(s, NS_RELIST_KEY);
}

static void on_primary(int type, const json_t *obj, uint64_t rev, void *ud)
{
    ke_nodesync *s = ud;
    char id[400];
    pthread_mutex_lock(&s->mu);
    if (type == KE_STORE_GONE) {
        fell_behind(s, s->cfg.primary);
    } else if (obj) {
        obj_id(id, sizeof(id), obj);
        cache_primary(s, id, type == KE_STORE_DELETED ? NULL : obj);
        if (rev > s->cache_rev)
            s->cache_rev = rev;
    }
    pthread_mutex_unlock(&s->mu);
}

static void on_ref(int type, const json_t *obj, uint64_t rev, void *ud)
{
    ke_nodesync *s = ud;
    char ref[400];
    pthread_mutex_lock(&s->mu);
    if (type == KE_STORE_GONE) {
        fell_behind(s, "referenced kinds");
    } else if (obj) {
        ref_id(ref, sizeof(ref), obj);
        cache_ref(s, ref, type == KE_STORE_DELETED ? 0 : obj_rv(obj));
        if (rev > s->cache_rev)
            s->cache_rev = rev;
    }
    pthread_mutex_unlock(&s->mu);
}

static int free_obj_rec(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    obj_free(value);
    return 0;
}

static int free_map_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    ke_map_free(value);
    return 0;
}

static int free_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
    return 0;
}

/* cache_free frees the cache's maps and what they hold. */
static void cache_free(ke_nodesync *s)
{
    if (s->objs)
        ke_map_each(s->objs, free_obj_rec, NULL);
    if (s->node_objs)
        ke_map_each(s->node_objs, free_map_value, NULL);
    if (s->ref_nodes)
        ke_map_each(s->ref_nodes, free_map_value, NULL);
    if (s->ref_rv)
        ke_map_each(s->ref_rv, free_value, NULL);
    ke_map_free(s->objs);
    ke_map_free(s->node_objs);
    ke_map_free(s->ref_nodes);
    ke_map_free(s->ref_rv);
    s->objs = s->node_objs = s->ref_nodes = s->ref_rv = NULL;
}

/* cache_clear empties the cache (s->mu held). */
static void cache_clear(ke_nodesync *s)
{
    cache_free(s);
    s->objs = ke_map_new();
    s->node_objs = ke_map_new();
    s->ref_nodes = ke_map_new();
    s->ref_rv = ke_map_new();
}

static void watches_stop(ke_nodesync *s)
{
    for (size_t k = 0; k < NS_KINDS_MAX; k++) {
        ke_store_watch_stop(s->w[k]);
        s->w[k] = NULL;
    }
}

/* list_and_watch fills the cache from lists of every kind and watches
 * each from its list's revision (no gap). Not on the dispatcher thread. */
static int list_and_watch(ke_nodesync *s)
{
    for (size_t k = 0; k < s->n_kinds; k++) {
        json_t *items = NULL;
        uint64_t rev = 0;
        int rc = ke_store_list(s->cfg.store, s->kinds[k], "", NULL, NULL, &items, &rev);
        if (rc != 0)
            return rc;
        size_t i;
        json_t *obj;
        char id[400];
        pthread_mutex_lock(&s->mu);
        json_array_foreach(items, i, obj) {
            if (k == 0) {
                obj_id(id, sizeof(id), obj);
                cache_primary(s, id, obj);
            } else {
                ref_id(id, sizeof(id), obj);
                cache_ref(s, id, obj_rv(obj));
            }
        }
        if (rev > s->cache_rev)
            s->cache_rev = rev;
        pthread_mutex_unlock(&s->mu);
        json_decref(items);
        rc = ke_store_watch_start(s->cfg.store, s->kinds[k], "", NULL, NULL, rev,
                                  k == 0 ? on_primary : on_ref, s, &s->w[k]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int queue_hub_node(const Ke__V1__NodeInfo *info, void *arg)
{
    ke_nodesync *s = arg;
    pthread_mutex_lock(&s->mu);
    queue_node(s, info->name);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* relist rebuilds the cache after a watch fell behind (work queue thread). */
static int relist(ke_nodesync *s)
{
    watches_stop(s);
    pthread_mutex_lock(&s->mu);
    cache_clear(s);
    int ok = s->objs && s->node_objs && s->ref_nodes && s->ref_rv;
    pthread_mutex_unlock(&s->mu);
    int rc = ok ? list_and_watch(s) : KE_ENOMEM;
    if (rc != 0) {
        ke_log_error(NS_MOD, "relist failed: %s; retrying", ke_strerror(rc));
        watches_stop(s);
        return rc;
    }
    /* Every node: those with primaries now, and those CloudHub knows. */
    pthread_mutex_lock(&s->mu);
    ke_map_each(s->node_objs, queue_each_node, s);
    pthread_mutex_unlock(&s->mu);
    if (ke_hub_nodes(s->cfg.hub, queue_hub_node, s) != 0)
        return KE_EIO;
    ke_log_info(NS_MOD, "relisted the store rev=%llu", (unsigned long long)s->cache_rev);
    return 0;
}

/* ---- reconcile one node ---- */

typedef struct want_ctx {
    ke_nodesync *s;
    const char *node;
    ke_map *want; /* key -> ke_hub_want */
    int rc;
} want_ctx;

static int want_obj(const char *id, void *value, void *arg)
{
    (void)value;
    want_ctx *w = arg;
    ns_obj *p = ke_map_get(w->s->objs, id);
    char ns[128], name[256];
    if (!p || sscanf(id, "%127[^/]/%255s", ns, name) != 2)
        return 0;
    if (ke_hub_want_add(w->want, w->node, w->s->cfg.primary, ns, name, p->rv) != 0)
        w->rc = KE_ENOMEM;
    for (size_t i = 0; i < p->n_refs; i++) {
        uint64_t *rv = ke_map_get(w->s->ref_rv, p->refs[i]);
        char rns[128], kind[32], rname[256];
        if (rv && sscanf(p->refs[i], "%127[^/]/%31[^/]/%255s", rns, kind, rname) == 3 &&
            ke_hub_want_add(w->want, w->node, kind, rns, rname, *rv) != 0)
            w->rc = KE_ENOMEM;
    }
    return w->rc;
}

static int reconcile(ke_nodesync *s, const char *node)
{
    want_ctx w = {s, node, ke_map_new(), 0};
    if (!w.want)
        return KE_ENOMEM;
    pthread_mutex_lock(&s->mu);
    ke_map *objs = ke_map_get(s->node_objs, node);
    if (objs)
        ke_map_each(objs, want_obj, &w);
    uint64_t ver = s->cache_rev;
    pthread_mutex_unlock(&s->mu);
    int rc = w.rc;
    if (rc == 0)
        rc = ke_hub_converge(s->cfg.hub, s->cfg.store, node, s->kinds, s->n_kinds, w.want, ver,
                             NULL);
    ke_hub_want_free(w.want);
    return rc;
}

/* resync queues every node, and itself again after the period. */
static int resync(ke_nodesync *s)
{
    ke_nodesync_queue_all(s);
    int rc = ke_hub_nodes(s->cfg.hub, queue_hub_node, s);
    int again = ke_wq_add_after(s->wq, NS_RESYNC_KEY, s->cfg.resync_ms);
    if (again != 0 && again != KE_ECLOSED)
        ke_log_error(NS_MOD, "%s: cannot schedule the next resync: %s", s->cfg.name,
                     ke_strerror(again));
    if (rc != 0) /* logged by ke_hub_nodes; the next period lists again */
        ke_log_warn(NS_MOD, "%s: resync covered only the cached nodes", s->cfg.name);
    return 0;
}

static int work(const char *key, void *ud)
{
    ke_nodesync *s = ud;
    if (strcmp(key, NS_RELIST_KEY) == 0)
        return relist(s);
    if (strcmp(key, NS_RESYNC_KEY) == 0)
        return resync(s);
    return reconcile(s, key);
}

int ke_nodesync_new(const ke_nodesync_config *cfg, ke_nodesync **out)
{
    if (!cfg || !cfg->name || !cfg->store || !cfg->hub || !cfg->primary || !cfg->refs ||
        cfg->n_ref_kinds + 1 > NS_KINDS_MAX || !out)
        return KE_EINVAL;
    ke_nodesync *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.resync_ms)
        s->cfg.resync_ms = 60000;
    s->kinds[s->n_kinds++] = cfg->primary;
    for (size_t i = 0; i < cfg->n_ref_kinds; i++)
        s->kinds[s->n_kinds++] = cfg->ref_kinds[i];
    pthread_mutex_init(&s->mu, NULL);
    ke_wq_opts o = {.qps = cfg->qps};
    s->objs = ke_map_new();
    s->node_objs = ke_map_new();
    s->ref_rv = ke_map_new();
    s->ref_nodes = ke_map_new();
    if (!s->objs || !s->node_objs || !s->ref_rv || !s->ref_nodes ||
        ke_wq_new(cfg->name, &o, work, s, &s->wq) != 0) {
        ke_nodesync_free(s);
        return KE_ENOMEM;
    }
    *out = s;
    return 0;
}

int ke_nodesync_start(ke_nodesync *s)
{
    int rc = list_and_watch(s);
    if (rc == 0)
        rc = ke_wq_add(s->wq, NS_RESYNC_KEY); /* every node CloudHub knows, now */
    if (rc == 0)
        rc = ke_wq_start(s->wq);
    return rc;
}

void ke_nodesync_stop(ke_nodesync *s)
{
    if (!s)
        return;
    ke_wq_stop(s->wq);
    watches_stop(s);
}

void ke_nodesync_free(ke_nodesync *s)
{
    if (!s)
        return;
    ke_nodesync_stop(s);
    ke_wq_free(s->wq);
    cache_free(s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void ke_nodesync_queue_node(ke_nodesync *s, const char *node)
{
    pthread_mutex_lock(&s->mu);
    queue_node(s, node);
    pthread_mutex_unlock(&s->mu);
}

void ke_nodesync_queue_all(ke_nodesync *s)
{
    pthread_mutex_lock(&s->mu);
    ke_map_each(s->node_objs, queue_each_node, s);
    pthread_mutex_unlock(&s->mu);
}

int ke_nodesync_wants(ke_nodesync *s, const char *node, const char *kind, const char *ns,
                      const char *name)
{
    char id[400];
    int yes = 0;
    pthread_mutex_lock(&s->mu);
    if (strcmp(kind, s->cfg.primary) == 0) {
        snprintf(id, sizeof(id), "%s/%s", ns, name);
        ns_obj *p = ke_map_get(s->objs, id);
        yes = p && strcmp(p->node, node) == 0;
    } else {
        snprintf(id, sizeof(id), "%s/%s/%s", ns, kind, name);
        ke_map *nodes = ke_map_get(s->ref_nodes, id);
        yes = nodes && ke_map_get(nodes, node) != NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return yes;
}

uint64_t ke_nodesync_rev(ke_nodesync *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t rev = s->cache_rev;
    pthread_mutex_unlock(&s->mu);
    return rev;
}
