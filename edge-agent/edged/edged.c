/*
 * edged.c — see edged.h; the files of the module: edged_internal.h.
 *
 * Each pod is a small state machine driven by pod_sync: it looks at what
 * the runtime was last seen running for the pod (the sandbox, each
 * container's current and previous instance) and at the pod object, takes
 * the one next step (a CRI call), and runs again when that call completes.
 * A pod has at most one step in flight (stopping its containers, done in
 * parallel, counts as one). The relist timer lists the runtime every
 * relist_ms, notes exits, and syncs every pod: restarts wait there for
 * their back-off.
 */
#include "edged_internal.h"

#include "ke_err.h"
#include "ke_host.h"
#include "ke_k8s.h"
#include "ke_log.h"
#include "ke_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers ---- */

void ed_inst_clear(inst *i)
{
    free(i->id);
    free(i->image_ref);
    memset(i, 0, sizeof(*i));
    i->state = -1;
}

char *ed_dupstr(const char *s) { return s ? strdup(s) : NULL; }

const char *ed_str_at(const json_t *obj, const char *path)
{
    const char *s = ke_k8s_str(obj, path);
    return s ? s : "";
}

const char *ed_label(size_t n, Runtime__V1__PodSandbox__LabelsEntry **l, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i]->key, k) == 0)
            return l[i]->value;
    return NULL;
}

void ed_pod_dir(const ed *d, const epod *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/pods/%s", d->cfg->root_dir, p->uid);
}

void ed_log_dir(const ed *d, const epod *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/logs/%s_%s_%s", d->cfg->root_dir, p->ns, p->name, p->uid);
}

int ed_deleting(const epod *p)
{
    return !p->obj || json_object_get(json_object_get(p->obj, "metadata"), "deletionTimestamp");
}

const char *ed_restart_policy(const epod *p)
{
    const char *r = ke_k8s_str(p->obj, "spec.restartPolicy");
    return r && *r ? r : "Always";
}

const json_t *ed_spec_container(const epod *p, const char *name)
{
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(json_object_get(p->obj, "spec"), "containers"), i, c) {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

ectr *ed_ctr_named(epod *p, const char *name)
{
    for (size_t i = 0; i < p->nc; i++)
        if (strcmp(p->c[i].name, name) == 0)
            return &p->c[i];
    return NULL;
}

/* set_containers makes p->c follow spec.containers (kept across updates by name) */
static int set_containers(epod *p)
{
    const json_t *cs = json_object_get(json_object_get(p->obj, "spec"), "containers");
    size_t n = json_array_size(cs);
    if (p->nc)
        return 0; /* a pod's containers do not change once it runs */
    p->c = calloc(n ? n : 1, sizeof(ectr));
    if (!p->c)
        return KE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(cs, i), "name"));
        p->c[i].name = strdup(name ? name : "");
        p->c[i].cur.state = p->c[i].prev.state = -1;
        p->nc++;
    }
    return 0;
}

void ed_pod_free(epod *p)
{
    for (size_t i = 0; i < p->nc; i++) {
        free(p->c[i].name);
        free(p->c[i].probe_id);
        ed_inst_clear(&p->c[i].cur);
        ed_inst_clear(&p->c[i].prev);
    }
    free(p->c);
    json_decref(p->obj);
    free(p->key);
    free(p->ns);
    free(p->name);
    free(p->uid);
    free(p->sb_id);
    free(p->reported);
    free(p);
}

epod *ed_pod_by_uid(ed *d, const char *uid)
{
    for (epod *p = d->pods; p; p = p->next)
        if (strcmp(p->uid, uid) == 0)
            return p;
    return NULL;
}

epod *ed_pod_by_key(ed *d, const char *key)
{
    for (epod *p = d->pods; p; p = p->next)
        if (p->key && strcmp(p->key, key) == 0 && p->obj)
            return p;
    return NULL;
}

epod *ed_pod_by_name(ed *d, const char *ns, const char *name)
{
    for (epod *p = d->pods; p; p = p->next)
        if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0 && p->obj)
            return p;
    return NULL;
}

void ed_pod_unlink(ed *d, epod *p)
{
    for (epod **pp = &d->pods; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* ---- the store ---- */

json_t *ed_lookup(const char *kind, const char *ns, const char *name, void *arg)
{
    ed *d = arg;
    char key[640];
    snprintf(key, sizeof(key), "node/%s/%s/%s/%s", d->cfg->node_name, ns, kind, name);
    uint64_t rv;
    uint8_t *content = NULL;
    size_t len = 0;
    if (edge_store_get(ke_rt_store(d->e), key, &rv, &content, &len) != 0)
        return NULL;
    json_t *o = json_loadb((const char *)content, len, 0, NULL);
    free(content);
    return o;
}

void ed_ctx_of(ed *d, epod *p, podspec_ctx *c, char *pd, size_t pdcap, char *ld, size_t ldcap)
{
    ed_pod_dir(d, p, pd, pdcap);
    ed_log_dir(d, p, ld, ldcap);
    c->node = d->cfg->node_name;
    c->pod_dir = pd;
    c->log_dir = ld;
    c->pod_ip = p->ip_known ? p->ip : NULL;
    c->lookup = ed_lookup;
    c->lookup_arg = d;
}

/* pod_update takes the store's version of the pod at key (NULL: gone). */
void ed_pod_update(ed *d, const char *key, json_t *obj)
{
    epod *p = ed_pod_by_key(d, key);
    if (!obj) {
        if (p) {
            json_decref(p->obj);
            p->obj = NULL; /* torn down without a confirmation */
            ed_pod_sync(d, p);
        }
        return;
    }
    const char *uid = ke_k8s_str(obj, "metadata.uid");
    const char *node = ke_k8s_str(obj, "spec.nodeName");
    if (!uid || !*uid || !node || strcmp(node, d->cfg->node_name) != 0) {
        json_decref(obj);
        return;
    }
    if (p && strcmp(p->uid, uid) != 0) { /* the same name, a new pod: the old one goes */
        json_decref(p->obj);
        p->obj = NULL;
        ed_pod_sync(d, p);
        p = NULL;
    }
    if (!p) {
        epod *o = ed_pod_by_uid(d, uid); /* an orphan adopted before the store said */
        if (o && !o->obj && !o->busy) {
            ed_pod_unlink(d, o);
            ed_pod_free(o);
        }
        p = calloc(1, sizeof(*p));
        if (!p) {
            json_decref(obj);
            return;
        }
        p->key = strdup(key);
        p->ns = strdup(ed_str_at(obj, "metadata.namespace"));
        p->name = strdup(ed_str_at(obj, "metadata.name"));
        p->uid = strdup(uid);
        p->sb_state = -1;
        p->start_wall_ms = ke_time_wall_ms();
        p->obj = obj;
        if (!p->key || !p->ns || !p->name || !p->uid || set_containers(p) != 0) {
            ed_pod_free(p);
            return;
        }
        p->next = d->pods;
        d->pods = p;
    } else {
        json_decref(p->obj);
        p->obj = obj;
    }
    ed_pod_sync(d, p);
}

static int load_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    (void)rv;
    ed *d = arg;
    if (!strstr(key, "/Pod/"))
        return 0;
    json_t *o = json_loadb(content, len, 0, NULL);
    if (o)
        ed_pod_update(d, key, o);
    return 0;
}

/* ---- ConfigMap / Secret changes ---- */

void ed_config_changed(ed *d, const char *kind, const char *ns, const char *name)
{
    for (epod *p = d->pods; p; p = p->next) {
        if (!p->obj || ed_deleting(p) || strcmp(p->ns, ns) != 0)
            continue;
        int refers = podspec_volume_refers(p->obj, kind, name);
        int waiting = 0;
        for (size_t i = 0; i < p->nc; i++)
            if (strcmp(p->c[i].wait_reason, "CreateContainerConfigError") == 0) {
                p->c[i].retry_at = 0;
                waiting = 1;
            }
        if (refers) {
            p->volumes_done = 0;
            p->vol_retry_at = 0;
        }
        if (refers || waiting)
            ed_pod_sync(d, p);
    }
}

/* ---- the module ---- */

static void ed_on_message(ke_module *m, Ke__V1__Message *msg)
{
    ed *d = ke_module_data(m);
    const char *res = msg->route ? msg->route->resource : NULL;
    if (!res || d->stopping) {
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    if (strncmp(res, "logs/", 5) == 0) {
        if (msg->route->operation == KE__V1__OPERATION__OPERATION_QUERY)
            ed_log_request(d, res + 5, msg);
        else if (msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE)
            ed_log_cancel(d, res + 5);
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    char node[64], ns[128], kind[64], name[256];
    if (sscanf(res, "node/%63[^/]/%127[^/]/%63[^/]/%255s", node, ns, kind, name) != 4 ||
        strcmp(node, d->cfg->node_name) != 0) {
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    if (strcmp(kind, "Pod") == 0) {
        uint64_t rv;
        uint8_t *content = NULL;
        size_t len = 0;
        json_t *o = NULL;
        if (edge_store_get(ke_rt_store(d->e), res, &rv, &content, &len) == 0)
            o = json_loadb((const char *)content, len, 0, NULL);
        free(content);
        ed_pod_update(d, res, o);
    } else if (strcmp(kind, "ConfigMap") == 0 || strcmp(kind, "Secret") == 0) {
        ed_config_changed(d, kind, ns, name);
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static int ed_start(ke_module *m)
{
    const edged_config *cfg = ke_module_config(m);
    if (!cfg || !cfg->node_name || !cfg->runtime_endpoint || !cfg->root_dir)
        return KE_EINVAL;
    ed *d = calloc(1, sizeof(*d));
    if (!d)
        return KE_ENOMEM;
    d->e = ke_module_rt(m);
    d->cfg = cfg;
    d->runtime_ok = 1;
    ke_host_ipv4(d->host_ip, sizeof(d->host_ip));
    char dir[PATH_MAX];
    static const char *const sub[] = {"", "/pods", "/logs"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(dir, sizeof(dir), "%s%s", cfg->root_dir, sub[i]);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            ke_log_error(ED_MOD, "cannot create %s: %s", dir, strerror(errno));
            free(d);
            return KE_EIO;
        }
    }
    int rc = cri_client_new(d->e, cfg->runtime_endpoint, &d->cri);
    if (rc != 0) {
        ke_log_error(ED_MOD, "cannot use the container runtime at %s: %s", cfg->runtime_endpoint,
                     ke_strerror(rc));
        free(d);
        return rc;
    }
    uv_timer_init(ke_rt_loop(d->e), &d->relist);
    uv_timer_init(ke_rt_loop(d->e), &d->log_timer);
    d->relist.data = d->log_timer.data = d;
    ke_module_set_data(m, d);
    rc = edge_store_list(ke_rt_store(d->e), "node/", load_one, d);
    if (rc != 0)
        ke_log_warn(ED_MOD, "cannot read pods from the store: %s (they come with the next change)",
                    ke_strerror(rc));
    uv_timer_start(&d->relist, ed_relist, 0, (uint64_t)cfg->relist_ms);
    ke_log_info(ED_MOD, "started runtime=%s root=%s", cfg->runtime_endpoint, cfg->root_dir);
    return 0;
}

static int ed_health(ke_module *m, char *detail, size_t cap)
{
    ed *d = ke_module_data(m);
    size_t n = 0, running = 0;
    for (epod *p = d->pods; p; p = p->next) {
        n++;
        for (size_t i = 0; i < p->nc; i++)
            running += p->c[i].cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
    }
    snprintf(detail, cap, "pods=%zu containers_running=%zu runtime=%s", n, running,
             d->runtime_ok && d->listed ? "ok" : "unreachable");
    return 0; /* the runtime being away is reported, not fatal: pods keep running */
}

static void ed_stop(ke_module *m)
{
    ed *d = ke_module_data(m);
    d->stopping = 1;
    uv_timer_stop(&d->relist);
    uv_timer_stop(&d->log_timer);
    ed_log_cancel(d, "*");
    ed_probes_stop(d); /* their handles close before the module is destroyed */
    cri_client_cancel(d->cri);
}

/* close_free: each of the module's two timers closed; the last frees it
 * (libuv runs close callbacks in no promised order) */
static void close_free(uv_handle_t *h)
{
    ed *d = h->data;
    if (--d->closing > 0)
        return;
    while (d->pods) {
        epod *p = d->pods;
        d->pods = p->next;
        ed_pod_free(p);
    }
    cri_client_free(d->cri);
    free(d);
}

static void ed_destroy(ke_module *m)
{
    ed *d = ke_module_data(m);
    ke_module_set_data(m, NULL);
    if (d->sandboxes)
        protobuf_c_message_free_unpacked(&d->sandboxes->base, NULL);
    d->sandboxes = NULL;
    d->closing = 2;
    uv_close((uv_handle_t *)&d->relist, close_free);
    uv_close((uv_handle_t *)&d->log_timer, close_free);
}

const ke_module_ops edged_module = {
    .name = ED_MOD,
    .group = "edged",
    .start = ed_start,
    .on_message = ed_on_message,
    .health = ed_health,
    .stop = ed_stop,
    .destroy = ed_destroy,
};
