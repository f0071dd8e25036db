/*
 * edged.c — see edged.h.
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
#include "edged.h"

#include "cri.h"
#include "podspec.h"

#include "ke_err.h"
#include "ke_host.h"
#include "ke_k8s.h"
#include "ke_log.h"
#include "ke_time.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ED_MOD "edged"
#define ED_HUB "edgehub"
#define ED_META "metamanager"
#define ED_LOG_CHUNK (64u * 1024u)
#define ED_LOG_STREAMS 16
#define ED_LOG_TAIL_READ (8u << 20) /* --tail reads at most the file's last 8 MiB */
#define ED_LOG_POLL_MS 200
/* the id kept for an instance removed with its sandbox: its attempt and
 * exit details stay (restartCount, lastState), nothing is left to remove */
#define ED_REMOVED "removed"
#define ED_RAN_LONG_NS (600LL * 1000000000LL) /* a container that ran 10 min resets back-off */

typedef struct inst {
    char *id;
    uint32_t attempt;
    int state; /* Runtime__V1__ContainerState, or -1 */
    int details; /* exit code etc. fetched (for an exited instance) */
    int32_t exit_code;
    int64_t started_ns, finished_ns;
    char reason[64];
    char message[256];
    char *image_ref;
} inst;

typedef struct ectr {
    char *name;
    inst cur, prev;        /* the latest instance, the one before it */
    int64_t backoff_ms;    /* next restart delay */
    int64_t retry_at;      /* monotonic ms; 0: not waiting */
    int image_ok;
    char wait_reason[64];
    char wait_msg[512];
    int stopping;
    /* probes of the current instance (probe_id: the instance they are for) */
    char *probe_id;
    int64_t live_at, ready_at;   /* monotonic ms of the next probe; 0: none */
    int live_fails, ready_fails, ready_succs;
    int live_busy, ready_busy;
    int ready;                   /* the readiness probe's verdict */
    int kill;                    /* liveness failed: stop it (then restart policy) */
} ectr;

typedef struct epod {
    char *key, *ns, *name, *uid;
    json_t *obj; /* the pod as the store holds it; NULL: gone from the store */
    char *sb_id;
    int sb_state; /* Runtime__V1__PodSandboxState, or -1 */
    uint32_t sb_attempt;
    int sb_any;   /* a sandbox was ever made/adopted (attempt numbering) */
    char ip[64];
    int ip_known;
    int64_t sb_retry_at, sb_backoff_ms;
    char sb_msg[512];
    ectr *c;
    size_t nc;
    int volumes_done;
    int64_t vol_retry_at;
    int busy; /* calls in flight for this pod */
    int again;
    int64_t start_wall_ms;
    char *reported;
    uint64_t last_rv;
    int64_t cond_time[2]; /* ContainersReady/Ready: when it last changed */
    int cond_val;
    struct epod *next;
} epod;

typedef struct logstream logstream;

typedef struct ed {
    ke_rt *e;
    const edged_config *cfg;
    cri_client *cri;
    epod *pods;
    int listed;     /* the first relist succeeded: pods may be acted on */
    int relisting;
    int stopping;
    int runtime_ok;
    char runtime_err[256];
    uv_timer_t relist;
    Runtime__V1__ListPodSandboxResponse *sandboxes; /* between the two list calls */
    logstream *logs;
    unsigned n_logs;
    uv_timer_t log_timer;
    struct probe_run *http_probes; /* httpGet probes in flight (ended at stop) */
    char host_ip[64]; /* status.hostIP, and podIP of host-network pods */
    int closing;      /* timers still to close at destroy */
} ed;

struct probe_run;
static void pod_sync(ed *d, epod *p);
static void report_status(ed *d, epod *p);
static void http_finish(struct probe_run *r, int success);
static void probes_tick(ed *d);

/* ---- small helpers ---- */

static int64_t now_ms(void) { return ke_time_mono_ms(); }

static void inst_clear(inst *i)
{
    free(i->id);
    free(i->image_ref);
    memset(i, 0, sizeof(*i));
    i->state = -1;
}

static char *dupstr(const char *s) { return s ? strdup(s) : NULL; }

static const char *str_at(const json_t *obj, const char *path)
{
    const char *s = ke_k8s_str(obj, path);
    return s ? s : "";
}

static const char *label(size_t n, Runtime__V1__PodSandbox__LabelsEntry **l, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i]->key, k) == 0)
            return l[i]->value;
    return NULL;
}

static void pod_dir(const ed *d, const epod *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/pods/%s", d->cfg->root_dir, p->uid);
}

static void log_dir(const ed *d, const epod *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/logs/%s_%s_%s", d->cfg->root_dir, p->ns, p->name, p->uid);
}

static int deleting(const epod *p)
{
    return !p->obj || json_object_get(json_object_get(p->obj, "metadata"), "deletionTimestamp");
}

static const char *restart_policy(const epod *p)
{
    const char *r = ke_k8s_str(p->obj, "spec.restartPolicy");
    return r && *r ? r : "Always";
}

static const json_t *spec_container(const epod *p, const char *name)
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

static ectr *ctr_named(epod *p, const char *name)
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

static void pod_free(epod *p)
{
    for (size_t i = 0; i < p->nc; i++) {
        free(p->c[i].name);
        free(p->c[i].probe_id);
        inst_clear(&p->c[i].cur);
        inst_clear(&p->c[i].prev);
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

static epod *pod_by_uid(ed *d, const char *uid)
{
    for (epod *p = d->pods; p; p = p->next)
        if (strcmp(p->uid, uid) == 0)
            return p;
    return NULL;
}

static epod *pod_by_key(ed *d, const char *key)
{
    for (epod *p = d->pods; p; p = p->next)
        if (p->key && strcmp(p->key, key) == 0 && p->obj)
            return p;
    return NULL;
}

static epod *pod_by_name(ed *d, const char *ns, const char *name)
{
    for (epod *p = d->pods; p; p = p->next)
        if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0 && p->obj)
            return p;
    return NULL;
}

static void pod_unlink(ed *d, epod *p)
{
    for (epod **pp = &d->pods; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* ---- reports upstream (through MetaManager's outbox) ---- */

static void send_report(ed *d, epod *p, Ke__V1__Operation op, const char *content)
{
    uint64_t stored = 0;
    int rc = edge_store_reported_rv(ke_rt_store(d->e), p->key, &stored);
    if (rc != 0)
        ke_log_warn(ED_MOD, "cannot read the last status version pod=%s/%s: %s", p->ns, p->name,
                    ke_strerror(rc));
    /* above everything reported before, also across restarts and a wiped
     * store (the wall clock), as the node status does */
    uint64_t rv = p->last_rv > stored ? p->last_rv : stored;
    int64_t wall = ke_time_wall_ms();
    rv = wall > 0 && (uint64_t)wall > rv ? (uint64_t)wall : rv + 1;
    p->last_rv = rv;
    Ke__V1__Message *m = ke_rt_message_new(ED_MOD, "podstatus", op, p->key, content,
                                           content ? strlen(content) : 0);
    if (!m) {
        ke_log_error(ED_MOD, "status of pod %s/%s not queued: out of memory", p->ns, p->name);
        return;
    }
    m->header->resource_version = rv;
    if ((rc = ke_rt_send_to(d->e, ED_META, m)) != 0) {
        ke__v1__message__free_unpacked(m, NULL);
        ke_log_error(ED_MOD, "status of pod %s/%s not queued: %s", p->ns, p->name,
                     ke_strerror(rc));
    }
}

static void rfc3339_ns(char *buf, size_t cap, int64_t ns)
{
    ke_time_rfc3339(buf, cap, ns / 1000000);
}

static int will_restart(const epod *p, const ectr *c)
{
    const char *rp = restart_policy(p);
    if (strcmp(rp, "Never") == 0)
        return 0;
    if (strcmp(rp, "OnFailure") == 0)
        return c->cur.exit_code != 0;
    return 1;
}

static json_t *terminated_json(const inst *i)
{
    char s[40], f[40], cid[160];
    rfc3339_ns(s, sizeof(s), i->started_ns);
    rfc3339_ns(f, sizeof(f), i->finished_ns);
    snprintf(cid, sizeof(cid), "containerd://%s", i->id ? i->id : "");
    json_t *t = json_pack("{s:i,s:s,s:s}", "exitCode", (int)i->exit_code, "reason",
                          i->reason[0] ? i->reason : (i->exit_code ? "Error" : "Completed"),
                          "finishedAt", f);
    if (i->id && strcmp(i->id, ED_REMOVED) != 0)
        json_object_set_new(t, "containerID", json_string(cid));
    if (i->started_ns)
        json_object_set_new(t, "startedAt", json_string(s));
    if (i->message[0])
        json_object_set_new(t, "message", json_string(i->message));
    return json_pack("{s:o}", "terminated", t);
}

static json_t *status_json(ed *d, epod *p)
{
    json_t *cs = json_array();
    int all_ready = p->nc > 0, any_running = 0, all_done = p->nc > 0, any_failed = 0;
    for (size_t i = 0; i < p->nc; i++) {
        ectr *c = &p->c[i];
        const json_t *sc = spec_container(p, c->name);
        json_t *st = NULL, *last = json_object();
        int running = c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        int exited = c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED &&
                     c->cur.details;
        int restarts = exited && will_restart(p, c);
        if (running) {
            char s[40];
            rfc3339_ns(s, sizeof(s), c->cur.started_ns);
            st = json_pack("{s:{s:s}}", "running", "startedAt", s);
            any_running = 1;
        } else if (exited && !restarts && !c->wait_reason[0]) {
            st = terminated_json(&c->cur);
        } else {
            const char *r = c->wait_reason[0] ? c->wait_reason : "ContainerCreating";
            st = json_pack("{s:{s:s}}", "waiting", "reason", r);
            if (c->wait_msg[0])
                json_object_set_new(json_object_get(st, "waiting"), "message",
                                    json_string(c->wait_msg));
        }
        if (exited && (restarts || c->wait_reason[0])) {
            json_decref(last);
            last = terminated_json(&c->cur);
        } else if (c->prev.id && c->prev.details) {
            json_decref(last);
            last = terminated_json(&c->prev);
        }
        int has_rp = json_object_get(sc, "readinessProbe") != NULL;
        int ready = running && (!has_rp || (c->probe_id && strcmp(c->probe_id, c->cur.id) == 0 &&
                                            c->ready));
        if (!ready)
            all_ready = 0;
        if (!(exited && !restarts))
            all_done = 0;
        else if (c->cur.exit_code != 0)
            any_failed = 1;
        uint32_t rc = c->cur.id ? c->cur.attempt : (c->prev.id ? c->prev.attempt + 1 : 0);
        if (!c->cur.id && !c->prev.id)
            rc = 0;
        json_t *o = json_pack("{s:s,s:o,s:o,s:b,s:i,s:s,s:b}", "name", c->name, "state", st,
                              "lastState", last, "ready", ready, "restartCount", (int)rc,
                              "image", str_at(sc, "image"), "started", running);
        if (c->cur.id) {
            char cid[160];
            snprintf(cid, sizeof(cid), "containerd://%s", c->cur.id);
            json_object_set_new(o, "containerID", json_string(cid));
            json_object_set_new(o, "imageID",
                                json_string(c->cur.image_ref ? c->cur.image_ref : ""));
        }
        json_array_append_new(cs, o);
    }
    const char *phase = "Pending";
    if (all_done)
        phase = any_failed ? "Failed" : "Succeeded";
    else if (any_running || (p->sb_state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY &&
                             p->nc && p->c[0].cur.id))
        phase = "Running";
    int ready = all_ready && !deleting(p);
    if (ready != p->cond_val || !p->cond_time[0]) {
        p->cond_val = ready;
        p->cond_time[0] = ke_time_wall_ms();
    }
    char since[40], start[40];
    ke_time_rfc3339(since, sizeof(since), p->cond_time[0]);
    ke_time_rfc3339(start, sizeof(start), p->start_wall_ms);
    const char *rs = ready ? "True" : "False";
    json_t *conds = json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s,s:s},{s:s,s:s,s:s}]", "type",
                              "PodScheduled", "status", "True", "type", "Initialized", "status",
                              "True", "type", "ContainersReady", "status", rs,
                              "lastTransitionTime", since, "type", "Ready", "status", rs,
                              "lastTransitionTime", since);
    json_t *s = json_pack("{s:s,s:o,s:o,s:s,s:s}", "phase", phase, "conditions", conds,
                          "containerStatuses", cs, "startTime", start, "qosClass", "BestEffort");
    if (d->host_ip[0])
        json_object_set_new(s, "hostIP", json_string(d->host_ip));
    if (p->ip_known && p->ip[0]) {
        json_object_set_new(s, "podIP", json_string(p->ip));
        json_object_set_new(s, "podIPs", json_pack("[{s:s}]", "ip", p->ip));
    }
    if (p->sb_msg[0]) {
        json_object_set_new(s, "reason", json_string("SandboxError"));
        json_object_set_new(s, "message", json_string(p->sb_msg));
    }
    return s;
}

static void report_status(ed *d, epod *p)
{
    if (!p->obj || !d->listed)
        return;
    json_t *s = status_json(d, p);
    char *js = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(s);
    if (!js)
        return;
    if (p->reported && strcmp(p->reported, js) == 0) {
        free(js);
        return;
    }
    send_report(d, p, KE__V1__OPERATION__OPERATION_UPDATE, js);
    free(p->reported);
    p->reported = js;
}

/* ---- the store ---- */

typedef struct lookup_arg {
    ed *d;
} lookup_arg;

static json_t *lookup(const char *kind, const char *ns, const char *name, void *arg)
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

static void ctx_of(ed *d, epod *p, podspec_ctx *c, char *pd, size_t pdcap, char *ld, size_t ldcap)
{
    pod_dir(d, p, pd, pdcap);
    log_dir(d, p, ld, ldcap);
    c->node = d->cfg->node_name;
    c->pod_dir = pd;
    c->log_dir = ld;
    c->pod_ip = p->ip_known ? p->ip : NULL;
    c->lookup = lookup;
    c->lookup_arg = d;
}

/* pod_update takes the store's version of the pod at key (NULL: gone). */
static void pod_update(ed *d, const char *key, json_t *obj)
{
    epod *p = pod_by_key(d, key);
    if (!obj) {
        if (p) {
            json_decref(p->obj);
            p->obj = NULL; /* torn down without a confirmation */
            pod_sync(d, p);
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
        pod_sync(d, p);
        p = NULL;
    }
    if (!p) {
        epod *o = pod_by_uid(d, uid); /* an orphan adopted before the store said */
        if (o && !o->obj && !o->busy) {
            pod_unlink(d, o);
            pod_free(o);
        }
        p = calloc(1, sizeof(*p));
        if (!p) {
            json_decref(obj);
            return;
        }
        p->key = strdup(key);
        p->ns = strdup(str_at(obj, "metadata.namespace"));
        p->name = strdup(str_at(obj, "metadata.name"));
        p->uid = strdup(uid);
        p->sb_state = -1;
        p->start_wall_ms = ke_time_wall_ms();
        p->obj = obj;
        if (!p->key || !p->ns || !p->name || !p->uid || set_containers(p) != 0) {
            pod_free(p);
            return;
        }
        p->next = d->pods;
        d->pods = p;
    } else {
        json_decref(p->obj);
        p->obj = obj;
    }
    pod_sync(d, p);
}

static int load_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    (void)rv;
    ed *d = arg;
    if (!strstr(key, "/Pod/"))
        return 0;
    json_t *o = json_loadb(content, len, 0, NULL);
    if (o)
        pod_update(d, key, o);
    return 0;
}

/* ---- CRI steps ---- */

typedef enum {
    OP_RUN_SB, OP_SB_STATUS, OP_STOP_SB, OP_REMOVE_SB, OP_IMG_STATUS, OP_PULL, OP_CREATE,
    OP_START, OP_CSTATUS, OP_REMOVE_PREV, OP_STOP_CTR
} op_kind;

typedef struct op {
    ed *d;
    epod *p;
    op_kind kind;
    size_t ci;
    uint32_t attempt;
    int present; /* OP_PULL after ImageStatus: the image is there already */
} op;

static void step_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud);

static int start_op(ed *d, epod *p, op_kind k, size_t ci, cri_service svc, const char *method,
                    const ProtobufCMessage *req, int64_t timeout_ms)
{
    op *o = calloc(1, sizeof(*o));
    if (!o)
        return KE_ENOMEM;
    o->d = d;
    o->p = p;
    o->kind = k;
    o->ci = ci;
    int rc = cri_call(d->cri, svc, method, req, timeout_ms, step_done, o);
    if (rc != 0) {
        free(o);
        return rc;
    }
    p->busy++;
    return 0;
}

static int64_t grace_seconds(const epod *p)
{
    const json_t *g = json_object_get(json_object_get(p->obj, "metadata"),
                                      "deletionGracePeriodSeconds");
    if (!json_is_integer(g))
        g = json_object_get(json_object_get(p->obj, "spec"), "terminationGracePeriodSeconds");
    if (json_is_integer(g) && json_integer_value(g) >= 0)
        return json_integer_value(g);
    return p->obj ? 30 : 0; /* gone from the store (forced): no grace */
}

static void backoff_next(ed *d, int64_t *backoff)
{
    if (*backoff == 0)
        *backoff = d->cfg->backoff_initial_ms;
    else if ((*backoff *= 2) > d->cfg->backoff_max_ms)
        *backoff = d->cfg->backoff_max_ms;
}

/* the teardown of a pod being deleted (or gone): 1 when a step started */
static int step_teardown(ed *d, epod *p)
{
    int started = 0;
    int64_t grace = grace_seconds(p);
    for (size_t i = 0; i < p->nc; i++) {
        ectr *c = &p->c[i];
        if (c->cur.id && !c->stopping &&
            c->cur.state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED) {
            Runtime__V1__StopContainerRequest r = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
            r.container_id = c->cur.id;
            r.timeout = grace;
            if (start_op(d, p, OP_STOP_CTR, i, CRI_RUNTIME, "StopContainer",
                         &r.base, (grace + 60) * 1000) == 0) {
                c->stopping = 1;
                started = 1;
            }
        }
    }
    if (started || p->busy)
        return 1;
    if (p->sb_id) {
        if (p->sb_state != -2) { /* -2: stopped, to be removed */
            Runtime__V1__StopPodSandboxRequest r = RUNTIME__V1__STOP_POD_SANDBOX_REQUEST__INIT;
            r.pod_sandbox_id = p->sb_id;
            return start_op(d, p, OP_STOP_SB, 0, CRI_RUNTIME, "StopPodSandbox", &r.base, 0) == 0;
        }
        Runtime__V1__RemovePodSandboxRequest r = RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
        r.pod_sandbox_id = p->sb_id;
        return start_op(d, p, OP_REMOVE_SB, 0, CRI_RUNTIME, "RemovePodSandbox", &r.base, 0) == 0;
    }
    /* nothing of the pod runs any more */
    char dir[PATH_MAX];
    pod_dir(d, p, dir, sizeof(dir));
    if (podspec_remove_tree(dir) != 0)
        ke_log_warn(ED_MOD, "cannot remove %s: %s", dir, strerror(errno));
    log_dir(d, p, dir, sizeof(dir));
    if (podspec_remove_tree(dir) != 0)
        ke_log_warn(ED_MOD, "cannot remove %s: %s", dir, strerror(errno));
    if (p->obj) {
        send_report(d, p, KE__V1__OPERATION__OPERATION_DELETE, NULL);
        ke_log_info(ED_MOD, "pod stopped and removed pod=%s/%s: deletion confirmed", p->ns,
                    p->name);
    } else {
        ke_log_info(ED_MOD, "pod removed pod=%s/%s uid=%s (no longer in the store)", p->ns,
                    p->name, p->uid);
    }
    pod_unlink(d, p);
    pod_free(p);
    return -1; /* p is gone */
}

static void wait_set(ectr *c, const char *reason, const char *msg)
{
    snprintf(c->wait_reason, sizeof(c->wait_reason), "%s", reason);
    snprintf(c->wait_msg, sizeof(c->wait_msg), "%s", msg ? msg : "");
}

static const char *pull_policy(const json_t *sc)
{
    const char *pp = json_string_value(json_object_get(sc, "imagePullPolicy"));
    if (pp && *pp)
        return pp;
    const char *img = str_at(sc, "image");
    const char *slash = strrchr(img, '/'), *colon = strrchr(img, ':');
    if (strchr(img, '@'))
        return "IfNotPresent";
    if (!colon || (slash && colon < slash) || strcmp(colon, ":latest") == 0)
        return "Always";
    return "IfNotPresent";
}

/* one container's next step: 1 started, 0 nothing to do now */
static int step_container(ed *d, epod *p, size_t i)
{
    ectr *c = &p->c[i];
    const json_t *sc = spec_container(p, c->name);
    int64_t now = now_ms();
    if (!sc)
        return 0;
    if (c->kill && c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING &&
        !c->stopping) {
        Runtime__V1__StopContainerRequest r = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
        r.container_id = c->cur.id;
        r.timeout = grace_seconds(p);
        ke_log_info(ED_MOD, "pod %s/%s container %s failed its liveness probe: restarting it",
                    p->ns, p->name, c->name);
        if (start_op(d, p, OP_STOP_CTR, i, CRI_RUNTIME, "StopContainer", &r.base,
                     (r.timeout + 60) * 1000) != 0)
            return 0;
        c->stopping = 1;
        return 1;
    }
    if (c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED) {
        Runtime__V1__StartContainerRequest r = RUNTIME__V1__START_CONTAINER_REQUEST__INIT;
        r.container_id = c->cur.id;
        return start_op(d, p, OP_START, i, CRI_RUNTIME, "StartContainer", &r.base, 0) == 0;
    }
    if (c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED &&
        !c->cur.details) {
        Runtime__V1__ContainerStatusRequest r = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
        r.container_id = c->cur.id;
        return start_op(d, p, OP_CSTATUS, i, CRI_RUNTIME, "ContainerStatus", &r.base, 0) == 0;
    }
    if (c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED) {
        if (!will_restart(p, c))
            return 0;
        if (c->retry_at == 0) {
            if (c->cur.started_ns > 0 && c->cur.finished_ns - c->cur.started_ns > ED_RAN_LONG_NS)
                c->backoff_ms = 0;
            c->retry_at = now + c->backoff_ms;
            if (c->backoff_ms > 0) {
                char msg[512];
                snprintf(msg, sizeof(msg), "back-off %" PRId64 "s restarting failed container=%s "
                         "pod=%s_%s(%s)", c->backoff_ms / 1000, c->name, p->name, p->ns, p->uid);
                wait_set(c, "CrashLoopBackOff", msg);
            }
            backoff_next(d, &c->backoff_ms);
        }
        if (now < c->retry_at)
            return 0;
        if (c->prev.id && strcmp(c->prev.id, ED_REMOVED) == 0)
            inst_clear(&c->prev);
        if (c->prev.id) { /* keep one exited instance: the one about to become prev */
            Runtime__V1__RemoveContainerRequest r = RUNTIME__V1__REMOVE_CONTAINER_REQUEST__INIT;
            r.container_id = c->prev.id;
            return start_op(d, p, OP_REMOVE_PREV, i, CRI_RUNTIME, "RemoveContainer", &r.base, 0) == 0;
        }
        c->prev = c->cur;
        memset(&c->cur, 0, sizeof(c->cur));
        c->cur.state = -1;
        c->retry_at = 0;
        /* fall through: create the next attempt */
    }
    if (c->cur.id)
        return 0; /* running (or unknown: the next list says) */
    if (c->retry_at && now < c->retry_at)
        return 0;
    if (!c->image_ok) {
        Runtime__V1__ImageSpec is = RUNTIME__V1__IMAGE_SPEC__INIT;
        Runtime__V1__ImageStatusRequest r = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
        is.image = (char *)str_at(sc, "image");
        r.image = &is;
        return start_op(d, p, OP_IMG_STATUS, i, CRI_IMAGE, "ImageStatus", &r.base, 0) == 0;
    }
    char pd[PATH_MAX], ld[PATH_MAX], why[512];
    podspec_ctx ctx;
    ctx_of(d, p, &ctx, pd, sizeof(pd), ld, sizeof(ld));
    uint32_t attempt = c->prev.id ? c->prev.attempt + 1 : 0;
    podspec_arena *a = podspec_arena_new();
    Runtime__V1__PodSandboxConfig *sbc = a ? podspec_sandbox(a, p->obj, &ctx, p->sb_attempt, why, sizeof(why)) : NULL;
    Runtime__V1__ContainerConfig *cc = sbc ? podspec_container(a, p->obj, sc, &ctx, attempt, why, sizeof(why)) : NULL;
    if (!cc) {
        podspec_arena_free(a);
        const char *colon = strchr(why, ':');
        char reason[64];
        snprintf(reason, sizeof(reason), "%.*s", colon ? (int)(colon - why) : 26,
                 colon ? why : "CreateContainerConfigError");
        wait_set(c, reason, colon ? colon + 2 : why);
        c->retry_at = now + (c->backoff_ms ? c->backoff_ms : d->cfg->backoff_initial_ms);
        backoff_next(d, &c->backoff_ms);
        return 0;
    }
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s/%s", ld, c->name) >= (int)sizeof(dir))
        dir[0] = '\0';
    if (mkdir(ld, 0755) != 0 && errno != EEXIST)
        ke_log_warn(ED_MOD, "cannot create %s: %s", ld, strerror(errno));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        ke_log_warn(ED_MOD, "cannot create %s: %s", dir, strerror(errno));
    Runtime__V1__CreateContainerRequest r = RUNTIME__V1__CREATE_CONTAINER_REQUEST__INIT;
    r.pod_sandbox_id = p->sb_id;
    r.config = cc;
    r.sandbox_config = sbc;
    int rc = start_op(d, p, OP_CREATE, i, CRI_RUNTIME, "CreateContainer", &r.base, 0);
    podspec_arena_free(a);
    return rc == 0;
}

/* pod_step: the pod's next step. 1: a call is in flight; 0: nothing to do
 * now; -1: the pod was removed. */
static int pod_step(ed *d, epod *p)
{
    if (deleting(p))
        return step_teardown(d, p);
    int64_t now = now_ms();
    char pd[PATH_MAX], ld[PATH_MAX], why[512];
    podspec_ctx ctx;
    ctx_of(d, p, &ctx, pd, sizeof(pd), ld, sizeof(ld));
    if (!p->volumes_done) {
        if (now < p->vol_retry_at)
            return 0;
        if (podspec_volumes(p->obj, &ctx, why, sizeof(why)) != 0) {
            const char *colon = strchr(why, ':');
            for (size_t i = 0; i < p->nc; i++)
                if (!p->c[i].cur.id)
                    wait_set(&p->c[i], "CreateContainerConfigError", colon ? colon + 2 : why);
            p->vol_retry_at = now + d->cfg->backoff_initial_ms;
            return 0;
        }
        p->volumes_done = 1;
        for (size_t i = 0; i < p->nc; i++)
            if (strcmp(p->c[i].wait_reason, "CreateContainerConfigError") == 0) {
                p->c[i].wait_reason[0] = '\0';
                p->c[i].retry_at = 0;
            }
    }
    if (p->sb_id && p->sb_state != RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY) {
        /* the sandbox died: it and its containers go, a new one is made */
        if (p->sb_state != -2) {
            Runtime__V1__StopPodSandboxRequest r = RUNTIME__V1__STOP_POD_SANDBOX_REQUEST__INIT;
            r.pod_sandbox_id = p->sb_id;
            return start_op(d, p, OP_STOP_SB, 0, CRI_RUNTIME, "StopPodSandbox", &r.base, 0) == 0;
        }
        Runtime__V1__RemovePodSandboxRequest r = RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
        r.pod_sandbox_id = p->sb_id;
        return start_op(d, p, OP_REMOVE_SB, 0, CRI_RUNTIME, "RemovePodSandbox", &r.base, 0) == 0;
    }
    if (!p->sb_id) {
        if (now < p->sb_retry_at)
            return 0;
        podspec_arena *a = podspec_arena_new();
        uint32_t attempt = p->sb_any ? p->sb_attempt + 1 : 0;
        Runtime__V1__PodSandboxConfig *sbc = a ? podspec_sandbox(a, p->obj, &ctx, attempt, why, sizeof(why)) : NULL;
        if (!sbc) {
            podspec_arena_free(a);
            snprintf(p->sb_msg, sizeof(p->sb_msg), "%s", why);
            p->sb_retry_at = now + d->cfg->backoff_max_ms;
            return 0;
        }
        if (mkdir(ld, 0755) != 0 && errno != EEXIST)
            ke_log_warn(ED_MOD, "cannot create %s: %s", ld, strerror(errno));
        Runtime__V1__RunPodSandboxRequest r = RUNTIME__V1__RUN_POD_SANDBOX_REQUEST__INIT;
        r.config = sbc;
        int rc = start_op(d, p, OP_RUN_SB, attempt, CRI_RUNTIME, "RunPodSandbox", &r.base, 0);
        podspec_arena_free(a);
        return rc == 0;
    }
    if (!p->ip_known) {
        Runtime__V1__PodSandboxStatusRequest r = RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
        r.pod_sandbox_id = p->sb_id;
        return start_op(d, p, OP_SB_STATUS, 0, CRI_RUNTIME, "PodSandboxStatus", &r.base, 0) == 0;
    }
    for (size_t i = 0; i < p->nc; i++) {
        int rc = step_container(d, p, i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void pod_sync(ed *d, epod *p)
{
    if (d->stopping || !d->listed)
        return;
    if (p->busy) {
        p->again = 1;
        return;
    }
    p->again = 0;
    int rc = pod_step(d, p);
    if (rc == 0)
        report_status(d, p);
    else if (rc > 0 && p->busy == 0) /* a call could not be made */
        report_status(d, p);
}

static void fail_msg(char *buf, size_t cap, const char *what, const ke_rpc_status *st)
{
    if (st->message[0])
        snprintf(buf, cap, "%s: %s", what, st->message);
    else
        snprintf(buf, cap, "%s: grpc status %d", what, (int)st->code);
}

static void step_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    op *o = ud;
    ed *d = o->d;
    epod *p = o->p;
    ectr *c = o->ci < p->nc ? &p->c[o->ci] : NULL;
    int ok = st->code == KE_RPC_OK;
    int64_t now = now_ms();
    p->busy--;
    if (st->code == KE_RPC_UNAVAILABLE || st->code == KE_RPC_CANCELLED) {
        if (c)
            c->stopping = 0;
        /* the runtime is away: nothing is known to have changed */
        if (!d->stopping && d->runtime_ok) {
            ke_log_warn(ED_MOD, "container runtime unreachable: %s", st->message);
            d->runtime_ok = 0;
        }
        free(o);
        return;
    }
    switch (o->kind) {
    case OP_RUN_SB: {
        const Runtime__V1__RunPodSandboxResponse *r = (const void *)reply;
        if (ok) {
            free(p->sb_id);
            p->sb_id = strdup(r->pod_sandbox_id);
            p->sb_state = RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY;
            p->sb_attempt = (uint32_t)o->ci;
            p->sb_any = 1;
            p->ip_known = 0;
            p->sb_msg[0] = '\0';
            p->sb_backoff_ms = 0;
            ke_log_info(ED_MOD, "sandbox running pod=%s/%s id=%.12s", p->ns, p->name, p->sb_id);
        } else {
            fail_msg(p->sb_msg, sizeof(p->sb_msg), "failed to create the pod sandbox", st);
            backoff_next(d, &p->sb_backoff_ms);
            p->sb_retry_at = now + p->sb_backoff_ms;
            ke_log_warn(ED_MOD, "pod %s/%s: %s", p->ns, p->name, p->sb_msg);
        }
        break;
    }
    case OP_SB_STATUS: {
        const Runtime__V1__PodSandboxStatusResponse *r = (const void *)reply;
        if (ok && r->status) {
            p->ip_known = 1;
            snprintf(p->ip, sizeof(p->ip), "%s",
                     r->status->network && r->status->network->ip ? r->status->network->ip : "");
            if (!p->ip[0] && json_is_true(json_object_get(json_object_get(p->obj, "spec"), "hostNetwork")))
                snprintf(p->ip, sizeof(p->ip), "%s", d->host_ip); /* as kubelet: the node's */
            if (r->status->state != RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY)
                p->sb_state = r->status->state;
        } else if (st->code == KE_RPC_NOT_FOUND) {
            free(p->sb_id);
            p->sb_id = NULL;
            p->sb_state = -1;
        }
        break;
    }
    case OP_STOP_SB:
        if (ok || st->code == KE_RPC_NOT_FOUND)
            p->sb_state = -2;
        else
            ke_log_warn(ED_MOD, "pod %s/%s: stopping the sandbox failed: %s", p->ns, p->name,
                        st->message);
        break;
    case OP_REMOVE_SB:
        if (ok || st->code == KE_RPC_NOT_FOUND) {
            free(p->sb_id);
            p->sb_id = NULL;
            p->sb_state = -1;
            p->ip_known = 0;
            for (size_t i = 0; i < p->nc; i++) { /* removed with the sandbox */
                ectr *x = &p->c[i];
                if (x->cur.id) {
                    inst_clear(&x->prev);
                    x->prev = x->cur;
                    memset(&x->cur, 0, sizeof(x->cur));
                    x->cur.state = -1;
                }
                if (x->prev.id) {
                    free(x->prev.id);
                    x->prev.id = strdup(ED_REMOVED);
                }
                x->stopping = 0;
            }
        } else {
            ke_log_warn(ED_MOD, "pod %s/%s: removing the sandbox failed: %s", p->ns, p->name,
                        st->message);
        }
        break;
    case OP_IMG_STATUS: {
        const Runtime__V1__ImageStatusResponse *r = (const void *)reply;
        const json_t *sc = spec_container(p, c->name);
        const char *policy = pull_policy(sc);
        int present = ok && r->image;
        if (!ok) {
            char msg[512];
            fail_msg(msg, sizeof(msg), "image status", st);
            wait_set(c, "ErrImagePull", msg);
            c->retry_at = now + d->cfg->backoff_initial_ms;
        } else if (strcmp(policy, "Never") == 0 || (present && strcmp(policy, "Always") != 0)) {
            if (present) {
                c->image_ok = 1;
            } else {
                char msg[512];
                snprintf(msg, sizeof(msg), "Container image \"%s\" is not present with pull "
                         "policy of Never", str_at(sc, "image"));
                wait_set(c, "ErrImageNeverPull", msg);
                c->retry_at = now + d->cfg->backoff_initial_ms;
            }
        } else {
            /* pull: Always, or IfNotPresent and absent */
            Runtime__V1__ImageSpec is = RUNTIME__V1__IMAGE_SPEC__INIT;
            Runtime__V1__PullImageRequest pr = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
            is.image = (char *)str_at(sc, "image");
            pr.image = &is;
            op *po = calloc(1, sizeof(*po));
            if (po) {
                *po = *o;
                po->kind = OP_PULL;
                po->present = present;
                if (cri_call(d->cri, CRI_IMAGE, "PullImage", &pr.base, 0, step_done, po) == 0) {
                    p->busy++;
                    wait_set(c, "ContainerCreating", "pulling image");
                    free(o);
                    return;
                }
                free(po);
            }
        }
        break;
    }
    case OP_PULL:
        if (ok) {
            c->image_ok = 1;
            c->wait_reason[0] = '\0';
        } else if (o->present) {
            /* Always, but no registry reachable: the host's copy is used (edge autonomy) */
            ke_log_info(ED_MOD, "pod %s/%s container %s: pull failed (%s); using the image the "
                        "host has", p->ns, p->name, c->name, st->message);
            c->image_ok = 1;
            c->wait_reason[0] = '\0';
        } else {
            char msg[512];
            fail_msg(msg, sizeof(msg), "failed to pull the image", st);
            wait_set(c, c->backoff_ms ? "ImagePullBackOff" : "ErrImagePull", msg);
            backoff_next(d, &c->backoff_ms);
            c->retry_at = now + c->backoff_ms;
        }
        break;
    case OP_CREATE: {
        const Runtime__V1__CreateContainerResponse *r = (const void *)reply;
        if (ok) {
            inst_clear(&c->cur);
            c->cur.id = strdup(r->container_id);
            c->cur.attempt = c->prev.id ? c->prev.attempt + 1 : 0;
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        } else {
            char msg[512];
            fail_msg(msg, sizeof(msg), "failed to create the container", st);
            wait_set(c, "CreateContainerError", msg);
            backoff_next(d, &c->backoff_ms);
            c->retry_at = now + c->backoff_ms;
        }
        break;
    }
    case OP_START:
        if (ok) {
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
            c->cur.started_ns = ke_time_wall_ms() * 1000000;
            c->wait_reason[0] = c->wait_msg[0] = '\0';
            ke_log_info(ED_MOD, "container started pod=%s/%s container=%s attempt=%u", p->ns,
                        p->name, c->name, c->cur.attempt);
        } else {
            /* the runtime keeps it as exited (StartError): restart policy applies */
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
            c->cur.details = 0;
            char msg[512];
            fail_msg(msg, sizeof(msg), "failed to start the container", st);
            ke_log_warn(ED_MOD, "pod %s/%s container %s: %s", p->ns, p->name, c->name, msg);
        }
        break;
    case OP_CSTATUS: {
        const Runtime__V1__ContainerStatusResponse *r = (const void *)reply;
        if (ok && r->status) {
            c->cur.state = r->status->state;
            if (r->status->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED) {
                c->cur.details = 1;
                c->cur.exit_code = r->status->exit_code;
                c->cur.started_ns = r->status->started_at;
                c->cur.finished_ns = r->status->finished_at;
                snprintf(c->cur.reason, sizeof(c->cur.reason), "%s", r->status->reason);
                snprintf(c->cur.message, sizeof(c->cur.message), "%s", r->status->message);
                if (strcmp(c->wait_reason, "CrashLoopBackOff") != 0)
                    c->wait_reason[0] = c->wait_msg[0] = '\0';
                ke_log_info(ED_MOD, "container exited pod=%s/%s container=%s exit=%d reason=%s",
                            p->ns, p->name, c->name, (int)c->cur.exit_code, c->cur.reason);
            }
            free(c->cur.image_ref);
            c->cur.image_ref = dupstr(r->status->image_ref);
        } else if (st->code == KE_RPC_NOT_FOUND) {
            inst_clear(&c->cur);
        }
        break;
    }
    case OP_REMOVE_PREV:
        if (ok || st->code == KE_RPC_NOT_FOUND)
            inst_clear(&c->prev);
        else
            ke_log_warn(ED_MOD, "pod %s/%s: removing an old container failed: %s", p->ns,
                        p->name, st->message);
        break;
    case OP_STOP_CTR:
        if (ok || st->code == KE_RPC_NOT_FOUND) {
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
            c->cur.details = 0;
            c->kill = 0;
            if (!deleting(p))
                c->stopping = 0;
        } else {
            c->stopping = 0;
            ke_log_warn(ED_MOD, "pod %s/%s: stopping container %s failed: %s", p->ns, p->name,
                        c->name, st->message);
        }
        break;
    }
    if (!ok && st->code != KE_RPC_NOT_FOUND && o->kind != OP_PULL && o->kind != OP_IMG_STATUS &&
        o->kind != OP_START && o->kind != OP_CREATE && o->kind != OP_RUN_SB) {
        free(o);
        report_status(d, p);
        return; /* retried at the next list */
    }
    free(o);
    if (p->busy == 0) {
        report_status(d, p);
        pod_sync(d, p);
    }
}

/* ---- relist ---- */

typedef struct cleanup {
    ed *d;
    char *id;
    int sandbox;
    int removing;
} cleanup;

static void cleanup_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    (void)reply;
    cleanup *cu = ud;
    if (st->code != KE_RPC_OK && st->code != KE_RPC_NOT_FOUND) {
        ke_log_warn(ED_MOD, "removing %s %.12s failed: %s", cu->sandbox ? "sandbox" : "container",
                    cu->id, st->message);
    } else if (!cu->removing && !cu->d->stopping) {
        cu->removing = 1;
        Runtime__V1__RemovePodSandboxRequest r = RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
        r.pod_sandbox_id = cu->id;
        if (cri_call(cu->d->cri, CRI_RUNTIME, "RemovePodSandbox", &r.base, 0, cleanup_done, cu) == 0)
            return;
    } else {
        ke_log_info(ED_MOD, "removed %s %.12s", cu->sandbox ? "sandbox" : "container", cu->id);
    }
    free(cu->id);
    free(cu);
}

/* discard removes what no pod owns: a sandbox (stopped, then removed,
 * with its containers) or one container (removed, running or not) */
static void discard(ed *d, const char *id, int sandbox)
{
    cleanup *cu = calloc(1, sizeof(*cu));
    if (!cu || !(cu->id = strdup(id))) {
        free(cu);
        return;
    }
    cu->d = d;
    cu->sandbox = sandbox;
    cu->removing = !sandbox;
    Runtime__V1__StopPodSandboxRequest sr = RUNTIME__V1__STOP_POD_SANDBOX_REQUEST__INIT;
    Runtime__V1__RemoveContainerRequest cr = RUNTIME__V1__REMOVE_CONTAINER_REQUEST__INIT;
    sr.pod_sandbox_id = cr.container_id = cu->id;
    int rc = sandbox ? cri_call(d->cri, CRI_RUNTIME, "StopPodSandbox", &sr.base, 0, cleanup_done, cu)
                     : cri_call(d->cri, CRI_RUNTIME, "RemoveContainer", &cr.base, 0, cleanup_done, cu);
    if (rc != 0) {
        free(cu->id);
        free(cu);
    }
}

static void adopt_inst(inst *i, const Runtime__V1__Container *x)
{
    if (!i->id || strcmp(i->id, x->id) != 0) {
        inst_clear(i);
        i->id = strdup(x->id);
        i->attempt = x->metadata ? x->metadata->attempt : 0;
        i->state = x->state;
        if (x->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING)
            i->started_ns = x->created_at;
        return;
    }
    if (i->state != (int)x->state && x->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED)
        i->details = 0;
    if (i->state != -2)
        i->state = x->state;
}

static void on_containers(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    ed *d = ud;
    Runtime__V1__ListPodSandboxResponse *sbs = d->sandboxes;
    d->sandboxes = NULL;
    d->relisting = 0;
    if (st->code != KE_RPC_OK || d->stopping) {
        if (st->code != KE_RPC_OK && d->runtime_ok) {
            ke_log_warn(ED_MOD, "cannot list containers: %s", st->message);
            d->runtime_ok = 0;
        }
        if (sbs)
            protobuf_c_message_free_unpacked(&sbs->base, NULL);
        return;
    }
    const Runtime__V1__ListContainersResponse *cl = (const void *)reply;
    /* sandboxes */
    for (size_t i = 0; i < sbs->n_items; i++) {
        Runtime__V1__PodSandbox *s = sbs->items[i];
        const char *uid = label(s->n_labels, s->labels, PODSPEC_LABEL_UID);
        epod *p = uid ? pod_by_uid(d, uid) : NULL;
        if (!p && uid) {
            /* the store no longer holds it: torn down as a pod that is gone */
            p = calloc(1, sizeof(*p));
            if (!p)
                continue;
            const char *n = label(s->n_labels, s->labels, PODSPEC_LABEL_NAME);
            const char *ns = label(s->n_labels, s->labels, PODSPEC_LABEL_NAMESPACE);
            p->uid = strdup(uid);
            p->name = strdup(n ? n : "?");
            p->ns = strdup(ns ? ns : "?");
            p->sb_state = -1;
            p->next = d->pods;
            d->pods = p;
            ke_log_info(ED_MOD, "found pod %s/%s uid=%s in the runtime that the store no longer "
                        "holds: removing it", p->ns, p->name, uid);
        }
        if (!p || p->busy)
            continue;
        if (p->sb_id && strcmp(p->sb_id, s->id) == 0) {
            if (p->sb_state != -2)
                p->sb_state = s->state;
            continue;
        }
        if (!p->sb_id) {
            p->sb_id = strdup(s->id);
            p->sb_state = s->state;
            p->sb_attempt = s->metadata ? s->metadata->attempt : 0;
            p->sb_any = 1;
            p->ip_known = 0;
            if (s->created_at > 0 && p->obj)
                p->start_wall_ms = s->created_at / 1000000;
            ke_log_info(ED_MOD, "adopted sandbox pod=%s/%s id=%.12s", p->ns, p->name, s->id);
            continue;
        }
        /* a second sandbox for the pod (a crash between run and record):
         * the newer ready one stays */
        discard(d, s->id, 1);
    }
    /* the pod's sandbox vanished from the runtime */
    for (epod *p = d->pods; p; p = p->next) {
        if (p->busy || !p->sb_id)
            continue;
        int seen = 0;
        for (size_t i = 0; i < sbs->n_items && !seen; i++)
            seen = strcmp(sbs->items[i]->id, p->sb_id) == 0;
        if (!seen) {
            free(p->sb_id);
            p->sb_id = NULL;
            p->sb_state = -1;
            for (size_t i = 0; i < p->nc; i++)
                inst_clear(&p->c[i].cur);
        }
    }
    /* containers: the latest attempt is current, the one before previous */
    for (size_t i = 0; i < cl->n_containers; i++) {
        Runtime__V1__Container *x = cl->containers[i];
        const char *uid = label(x->n_labels, (Runtime__V1__PodSandbox__LabelsEntry **)x->labels,
                                PODSPEC_LABEL_UID);
        const char *name = label(x->n_labels, (Runtime__V1__PodSandbox__LabelsEntry **)x->labels,
                                 PODSPEC_LABEL_CONTAINER);
        epod *p = uid ? pod_by_uid(d, uid) : NULL;
        if (!p || p->busy || !p->sb_id || strcmp(x->pod_sandbox_id, p->sb_id) != 0)
            continue; /* another sandbox's: goes with it */
        ectr *c = name ? ctr_named(p, name) : NULL;
        if (!c) {
            discard(d, x->id, 0);
            continue;
        }
        uint32_t at = x->metadata ? x->metadata->attempt : 0;
        if (c->cur.id && strcmp(c->cur.id, x->id) == 0) {
            adopt_inst(&c->cur, x);
        } else if (c->prev.id && strcmp(c->prev.id, x->id) == 0) {
            /* nothing changes for an exited previous instance */
        } else if (!c->cur.id || at > c->cur.attempt) {
            if (c->cur.id) {
                if (c->prev.id && strcmp(c->prev.id, ED_REMOVED) != 0)
                    discard(d, c->prev.id, 0);
                inst_clear(&c->prev);
                c->prev = c->cur;
                memset(&c->cur, 0, sizeof(c->cur));
            }
            adopt_inst(&c->cur, x);
            if (c->cur.attempt > 0 && !c->prev.id) {
                /* the previous attempt's details come from the runtime, if kept */
            }
        } else if (!c->prev.id || at > c->prev.attempt) {
            if (c->prev.id && strcmp(c->prev.id, ED_REMOVED) != 0)
                discard(d, c->prev.id, 0);
            inst_clear(&c->prev);
            c->prev.id = strdup(x->id);
            c->prev.attempt = at;
            c->prev.state = x->state;
        } else {
            discard(d, x->id, 0);
        }
    }
    protobuf_c_message_free_unpacked(&sbs->base, NULL);
    if (!d->runtime_ok)
        ke_log_info(ED_MOD, "container runtime reachable: %zu containers of this node",
                    cl->n_containers);
    d->runtime_ok = 1;
    if (!d->listed)
        ke_log_info(ED_MOD, "runtime listed: pods are now run");
    d->listed = 1;
    for (epod *p = d->pods, *next; p; p = next) {
        next = p->next;
        pod_sync(d, p); /* may free p */
    }
    probes_tick(d);
}

static void on_sandboxes(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    ed *d = ud;
    if (st->code != KE_RPC_OK || d->stopping) {
        d->relisting = 0;
        if (st->code != KE_RPC_OK && (d->runtime_ok || !d->runtime_err[0])) {
            ke_log_warn(ED_MOD, "container runtime %s unreachable: %s", d->cfg->runtime_endpoint,
                        st->message);
            d->runtime_ok = 0;
        }
        snprintf(d->runtime_err, sizeof(d->runtime_err), "%s", st->message);
        return;
    }
    /* keep the reply: unpack a copy the second callback frees */
    size_t n = protobuf_c_message_get_packed_size(reply);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        d->relisting = 0;
        return;
    }
    protobuf_c_message_pack(reply, buf);
    d->sandboxes = runtime__v1__list_pod_sandbox_response__unpack(NULL, n, buf);
    free(buf);
    if (!d->sandboxes) {
        d->relisting = 0;
        return;
    }
    Runtime__V1__ContainerFilter f = RUNTIME__V1__CONTAINER_FILTER__INIT;
    Runtime__V1__ContainerFilter__LabelSelectorEntry sel =
        RUNTIME__V1__CONTAINER_FILTER__LABEL_SELECTOR_ENTRY__INIT;
    Runtime__V1__ContainerFilter__LabelSelectorEntry *selp = &sel;
    sel.key = PODSPEC_LABEL_NODE;
    sel.value = (char *)d->cfg->node_name;
    f.label_selector = &selp;
    f.n_label_selector = 1;
    Runtime__V1__ListContainersRequest r = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
    r.filter = &f;
    if (cri_call(d->cri, CRI_RUNTIME, "ListContainers", &r.base, 30000, on_containers, d) != 0) {
        protobuf_c_message_free_unpacked(&d->sandboxes->base, NULL);
        d->sandboxes = NULL;
        d->relisting = 0;
    }
}

static void relist(uv_timer_t *t)
{
    ed *d = t->data;
    if (d->relisting || d->stopping)
        return;
    Runtime__V1__PodSandboxFilter f = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
    Runtime__V1__PodSandboxFilter__LabelSelectorEntry sel =
        RUNTIME__V1__POD_SANDBOX_FILTER__LABEL_SELECTOR_ENTRY__INIT;
    Runtime__V1__PodSandboxFilter__LabelSelectorEntry *selp = &sel;
    sel.key = PODSPEC_LABEL_NODE;
    sel.value = (char *)d->cfg->node_name;
    f.label_selector = &selp;
    f.n_label_selector = 1;
    Runtime__V1__ListPodSandboxRequest r = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
    r.filter = &f;
    if (cri_call(d->cri, CRI_RUNTIME, "ListPodSandbox", &r.base, 30000, on_sandboxes, d) == 0)
        d->relisting = 1;
}

/* ---- probes (liveness, readiness: exec and httpGet) ---- */

typedef struct probe_run {
    ed *d;
    char uid[128], cname[256], cid[160];
    int live; /* liveness, else readiness */
    /* httpGet */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t conn;
    uv_write_t wr;
    char req[1024];
    char resp[16];
    size_t rlen;
    int open_handles;
    int result; /* -1: not decided yet */
    struct probe_run *next; /* in ed.http_probes */
} probe_run;

static int64_t probe_int(const json_t *pr, const char *k, int64_t def, int64_t min)
{
    const json_t *v = json_object_get(pr, k);
    int64_t x = json_is_integer(v) ? json_integer_value(v) : def;
    return x < min ? min : x;
}

static const json_t *probe_spec(epod *p, ectr *c, int live)
{
    return json_object_get(spec_container(p, c->name), live ? "livenessProbe" : "readinessProbe");
}

/* probe_result: a probe's verdict comes back (on the loop) */
static void probe_result(probe_run *r, int success)
{
    ed *d = r->d;
    epod *p = d->stopping ? NULL : pod_by_uid(d, r->uid);
    ectr *c = p ? ctr_named(p, r->cname) : NULL;
    if (!c || !c->probe_id || strcmp(c->probe_id, r->cid) != 0)
        return; /* the instance it was for is gone */
    const json_t *pr = probe_spec(p, c, r->live);
    int64_t period = probe_int(pr, "periodSeconds", 10, 1) * 1000;
    int64_t fail_th = probe_int(pr, "failureThreshold", 3, 1);
    int64_t succ_th = probe_int(pr, "successThreshold", 1, 1);
    int64_t now = now_ms();
    if (r->live) {
        c->live_busy = 0;
        c->live_at = now + period;
        c->live_fails = success ? 0 : c->live_fails + 1;
        if (c->live_fails >= fail_th && !c->kill) {
            c->kill = 1;
            c->live_fails = 0;
            pod_sync(d, p);
        }
        return;
    }
    c->ready_busy = 0;
    c->ready_at = now + period;
    int was = c->ready;
    if (success) {
        c->ready_fails = 0;
        if (++c->ready_succs >= succ_th)
            c->ready = 1;
    } else {
        c->ready_succs = 0;
        if (++c->ready_fails >= fail_th)
            c->ready = 0;
    }
    if (was != c->ready)
        report_status(d, p);
}

static void exec_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    probe_run *r = ud;
    const Runtime__V1__ExecSyncResponse *x = (const void *)reply;
    probe_result(r, st->code == KE_RPC_OK && x && x->exit_code == 0);
    free(r);
}

static void http_closed(uv_handle_t *h)
{
    probe_run *r = h->data;
    if (--r->open_handles == 0) {
        for (probe_run **pp = &r->d->http_probes; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
        probe_result(r, r->result == 1);
        free(r);
    }
}

static void http_finish(probe_run *r, int success)
{
    if (r->result >= 0)
        return;
    r->result = success;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, http_closed);
    uv_close((uv_handle_t *)&r->tcp, http_closed);
}

static void http_timeout(uv_timer_t *t) { http_finish(t->data, 0); }

static void http_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    probe_run *r = h->data;
    buf->base = r->resp + r->rlen;
    buf->len = sizeof(r->resp) - 1 - r->rlen;
}

static void http_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    probe_run *r = s->data;
    if (n > 0)
        r->rlen += (size_t)n;
    if (r->rlen >= 12 || n < 0) { /* "HTTP/1.1 200" */
        r->resp[r->rlen] = '\0';
        int code = 0;
        int ok = sscanf(r->resp, "HTTP/%*d.%*d %d", &code) == 1;
        http_finish(r, ok && code >= 200 && code < 400);
    }
}

static void http_written(uv_write_t *w, int status)
{
    probe_run *r = w->data;
    if (status < 0 || uv_read_start((uv_stream_t *)&r->tcp, http_alloc, http_read) != 0)
        http_finish(r, 0);
}

static void http_connected(uv_connect_t *cr, int status)
{
    probe_run *r = cr->data;
    if (status < 0 || r->result >= 0) {
        http_finish(r, 0);
        return;
    }
    uv_buf_t b = uv_buf_init(r->req, (unsigned)strlen(r->req));
    r->wr.data = r;
    if (uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, http_written) != 0)
        http_finish(r, 0);
}

static void probe_start(ed *d, epod *p, ectr *c, int live)
{
    const json_t *pr = probe_spec(p, c, live);
    probe_run *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    r->d = d;
    r->live = live;
    r->result = -1;
    snprintf(r->uid, sizeof(r->uid), "%s", p->uid);
    snprintf(r->cname, sizeof(r->cname), "%s", c->name);
    snprintf(r->cid, sizeof(r->cid), "%s", c->cur.id);
    int64_t timeout = probe_int(pr, "timeoutSeconds", 1, 1);
    const json_t *ex = json_object_get(pr, "exec"), *hg = json_object_get(pr, "httpGet");
    int started = 0;
    if (ex) {
        const json_t *cmd = json_object_get(ex, "command");
        size_t n = json_array_size(cmd);
        char **argv = calloc(n ? n : 1, sizeof(char *));
        for (size_t i = 0; argv && i < n; i++)
            argv[i] = (char *)(json_string_value(json_array_get(cmd, i)) ? json_string_value(json_array_get(cmd, i)) : "");
        Runtime__V1__ExecSyncRequest q = RUNTIME__V1__EXEC_SYNC_REQUEST__INIT;
        q.container_id = c->cur.id;
        q.cmd = argv;
        q.n_cmd = argv ? n : 0;
        q.timeout = timeout;
        started = argv && n && cri_call(d->cri, CRI_RUNTIME, "ExecSync", &q.base,
                                        (timeout + 10) * 1000, exec_done, r) == 0;
        free(argv);
    } else if (hg) {
        const json_t *port = json_object_get(hg, "port");
        int portn = json_is_integer(port) ? (int)json_integer_value(port) : 0;
        if (json_is_string(port)) { /* a named port of the container */
            size_t i;
            const json_t *cp;
            json_array_foreach(json_object_get(spec_container(p, c->name), "ports"), i, cp)
                if (json_string_value(json_object_get(cp, "name")) &&
                    strcmp(json_string_value(json_object_get(cp, "name")), json_string_value(port)) == 0)
                    portn = (int)json_integer_value(json_object_get(cp, "containerPort"));
        }
        const char *host = json_string_value(json_object_get(hg, "host"));
        if (!host || !*host)
            host = p->ip[0] ? p->ip : "127.0.0.1";
        const char *path = json_string_value(json_object_get(hg, "path"));
        struct sockaddr_in sa;
        if (portn > 0 && portn < 65536 && uv_ip4_addr(host, portn, &sa) == 0 &&
            uv_tcp_init(ke_rt_loop(d->e), &r->tcp) == 0) {
            r->open_handles++;
            r->tcp.data = r;
            uv_timer_init(ke_rt_loop(d->e), &r->timer);
            r->open_handles++;
            r->timer.data = r;
            snprintf(r->req, sizeof(r->req),
                     "GET %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: kubeedge-c-probe\r\n"
                     "Connection: close\r\n\r\n",
                     path && *path ? path : "/", host, portn);
            r->conn.data = r;
            r->next = d->http_probes;
            d->http_probes = r;
            uv_timer_start(&r->timer, http_timeout, (uint64_t)timeout * 1000, 0);
            if (uv_tcp_connect(&r->conn, &r->tcp, (const struct sockaddr *)&sa, http_connected) != 0)
                http_finish(r, 0);
            started = 1;
        }
    }
    if (!started) {
        /* nothing to run (an unsupported or malformed probe): it fails */
        probe_result(r, 0);
        free(r);
        return;
    }
    if (live)
        c->live_busy = 1;
    else
        c->ready_busy = 1;
}

/* probes_tick starts the probes that are due */
static void probes_tick(ed *d)
{
    int64_t now = now_ms();
    for (epod *p = d->pods; p; p = p->next) {
        if (!p->obj || deleting(p))
            continue;
        for (size_t i = 0; i < p->nc; i++) {
            ectr *c = &p->c[i];
            if (!c->cur.id || c->cur.state != RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING ||
                c->kill)
                continue;
            const json_t *lp = probe_spec(p, c, 1), *rp = probe_spec(p, c, 0);
            if (!lp && !rp)
                continue;
            if (!c->probe_id || strcmp(c->probe_id, c->cur.id) != 0) { /* a new instance */
                free(c->probe_id);
                c->probe_id = strdup(c->cur.id);
                c->live_fails = c->ready_fails = c->ready_succs = 0;
                c->ready = 0;
                c->live_busy = c->ready_busy = 0;
                c->live_at = lp ? now + probe_int(lp, "initialDelaySeconds", 0, 0) * 1000 : 0;
                c->ready_at = rp ? now + probe_int(rp, "initialDelaySeconds", 0, 0) * 1000 : 0;
                if (!c->probe_id)
                    continue;
            }
            if (lp && !c->live_busy && now >= c->live_at)
                probe_start(d, p, c, 1);
            if (rp && !c->ready_busy && now >= c->ready_at)
                probe_start(d, p, c, 0);
        }
    }
}

/* ---- ConfigMap / Secret changes ---- */

static void config_changed(ed *d, const char *kind, const char *ns, const char *name)
{
    for (epod *p = d->pods; p; p = p->next) {
        if (!p->obj || deleting(p) || strcmp(p->ns, ns) != 0)
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
            pod_sync(d, p);
    }
}

/* ---- logs ---- */

struct logstream {
    ed *d;
    char id[64];
    char path[PATH_MAX];
    int fd;
    int follow;
    char *partial; /* a line not yet complete */
    size_t plen;
    int64_t limit, sent;
    char uid[128], cname[256];
    uint32_t attempt;
    logstream *next;
};

static int log_send(ed *d, const char *id, Ke__V1__Operation op, const void *data, size_t len)
{
    char res[96];
    snprintf(res, sizeof(res), "logs/%s", id);
    Ke__V1__Message *m = ke_rt_message_new(ED_MOD, "", op, res, data, len);
    if (!m)
        return KE_ENOMEM;
    int rc = ke_rt_send_to(d->e, ED_HUB, m);
    if (rc != 0)
        ke__v1__message__free_unpacked(m, NULL);
    return rc;
}

static void log_end(ed *d, const char *id, const char *error)
{
    char json[600];
    if (error) {
        json_t *o = json_pack("{s:s}", "error", error);
        char *s = json_dumps(o, JSON_COMPACT);
        snprintf(json, sizeof(json), "%s", s ? s : "{\"error\":\"out of memory\"}");
        free(s);
        json_decref(o);
    } else {
        snprintf(json, sizeof(json), "{\"eof\":true}");
    }
    int rc = log_send(d, id, KE__V1__OPERATION__OPERATION_RESPONSE, json, strlen(json));
    if (rc != 0 && rc != KE_ENOTFOUND)
        ke_log_warn(ED_MOD, "end of log stream %s not sent: %s", id, ke_strerror(rc));
}

/* cri_lines turns CRI log lines ("<time> <stream> <P|F> <text>") into the
 * text the container wrote; a trailing incomplete line stays in *rest. */
static size_t cri_lines(const char *in, size_t n, char *out, size_t *consumed)
{
    size_t o = 0, i = 0;
    while (i < n) {
        const char *nl = memchr(in + i, '\n', n - i);
        if (!nl)
            break;
        size_t end = (size_t)(nl - in);
        const char *s = in + i;
        size_t len = end - i;
        /* skip time, stream, tag */
        int sp = 0;
        size_t k = 0;
        char tag = 'F';
        for (; k < len && sp < 3; k++)
            if (s[k] == ' ') {
                sp++;
                if (sp == 3 && k >= 1)
                    tag = s[k - 1];
            }
        if (sp == 3) {
            memcpy(out + o, s + k, len - k);
            o += len - k;
            if (tag != 'P')
                out[o++] = '\n';
        }
        i = end + 1;
    }
    *consumed = i;
    return o;
}

/* log_pump sends what the file holds past the stream's offset. 1: more
 * may come (follow), 0: done. */
static int log_pump(logstream *ls)
{
    ed *d = ls->d;
    char buf[ED_LOG_CHUNK];
    for (;;) {
        size_t have = ls->plen;
        char in[ED_LOG_CHUNK + 8192];
        if (have)
            memcpy(in, ls->partial, have);
        ssize_t r = read(ls->fd, in + have, sizeof(in) - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return ls->follow;
        size_t used;
        size_t n = cri_lines(in, have + (size_t)r, buf, &used);
        free(ls->partial);
        ls->partial = NULL;
        ls->plen = have + (size_t)r - used;
        if (ls->plen) {
            ls->partial = malloc(ls->plen);
            if (!ls->partial)
                return 0;
            memcpy(ls->partial, in + used, ls->plen);
        }
        if (ls->limit > 0 && ls->sent + (int64_t)n > ls->limit)
            n = (size_t)(ls->limit - ls->sent);
        if (n && log_send(d, ls->id, KE__V1__OPERATION__OPERATION_UPLOAD, buf, n) != 0)
            return 0;
        ls->sent += (int64_t)n;
        if (ls->limit > 0 && ls->sent >= ls->limit)
            return 0;
    }
}

static void logstream_free(ed *d, logstream *ls)
{
    for (logstream **pp = &d->logs; *pp; pp = &(*pp)->next)
        if (*pp == ls) {
            *pp = ls->next;
            break;
        }
    d->n_logs--;
    if (ls->fd >= 0)
        close(ls->fd);
    free(ls->partial);
    free(ls);
    if (!d->logs)
        uv_timer_stop(&d->log_timer);
}

static void log_tick(uv_timer_t *t)
{
    ed *d = t->data;
    for (logstream *ls = d->logs, *next; ls; ls = next) {
        next = ls->next;
        int more = log_pump(ls);
        epod *p = pod_by_uid(d, ls->uid);
        ectr *c = p ? ctr_named(p, ls->cname) : NULL;
        int running = c && c->cur.id && c->cur.attempt == ls->attempt &&
                      c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        if (!more || !running) {
            if (more)
                log_pump(ls); /* what it wrote before it exited */
            log_end(d, ls->id, NULL);
            logstream_free(d, ls);
        }
    }
}

static void log_request(ed *d, const char *id, const Ke__V1__Message *msg)
{
    json_t *q = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    const char *ns = str_at(q, "namespace"), *pod = str_at(q, "pod");
    const char *cname = str_at(q, "container");
    int follow = json_is_true(json_object_get(q, "follow"));
    json_int_t tail = json_integer_value(json_object_get(q, "tailLines"));
    json_int_t limit = json_integer_value(json_object_get(q, "limitBytes"));
    char err[512] = "";
    epod *p = pod_by_name(d, *ns ? ns : "default", pod);
    ectr *c = NULL;
    if (!p)
        snprintf(err, sizeof(err), "pod %s/%s is not on this node", *ns ? ns : "default", pod);
    else if (!(c = *cname ? ctr_named(p, cname) : (p->nc == 1 ? &p->c[0] : NULL)))
        snprintf(err, sizeof(err), "container \"%s\" is not in pod %s/%s", cname, p->ns, p->name);
    else if (!c->cur.id && !c->prev.id)
        snprintf(err, sizeof(err), "container \"%s\" in pod %s/%s is waiting to start: %s",
                 c->name, p->ns, p->name, c->wait_reason[0] ? c->wait_reason : "ContainerCreating");
    else if (d->n_logs >= ED_LOG_STREAMS)
        snprintf(err, sizeof(err), "too many log streams on this node (at most %d)", ED_LOG_STREAMS);
    json_decref(q);
    if (err[0]) {
        log_end(d, id, err);
        return;
    }
    inst *in = c->cur.id ? &c->cur : &c->prev;
    char ld[PATH_MAX], lp[512];
    log_dir(d, p, ld, sizeof(ld));
    podspec_log_path(lp, sizeof(lp), c->name, in->attempt);
    logstream *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        log_end(d, id, "edgecore is out of memory");
        return;
    }
    ls->d = d;
    snprintf(ls->id, sizeof(ls->id), "%s", id);
    if (snprintf(ls->path, sizeof(ls->path), "%s/%s", ld, lp) >= (int)sizeof(ls->path))
        ls->path[0] = '\0';
    snprintf(ls->uid, sizeof(ls->uid), "%s", p->uid);
    snprintf(ls->cname, sizeof(ls->cname), "%s", c->name);
    ls->attempt = in->attempt;
    ls->follow = follow;
    ls->limit = limit > 0 ? limit : 0;
    ls->fd = open(ls->path, O_RDONLY | O_CLOEXEC);
    if (ls->fd < 0) {
        snprintf(err, sizeof(err), "cannot open the log of container \"%s\": %s", c->name,
                 strerror(errno));
        free(ls);
        log_end(d, id, err);
        return;
    }
    ls->next = d->logs;
    d->logs = ls;
    d->n_logs++;
    if (tail > 0) {
        /* the last `tail` lines: read the end of the file, count back */
        struct stat sb;
        off_t from = 0;
        if (fstat(ls->fd, &sb) == 0 && sb.st_size > (off_t)ED_LOG_TAIL_READ)
            from = sb.st_size - (off_t)ED_LOG_TAIL_READ;
        size_t n = fstat(ls->fd, &sb) == 0 ? (size_t)(sb.st_size - from) : 0;
        char *all = malloc(n + 1);
        ssize_t r = all ? pread(ls->fd, all, n, from) : -1;
        if (r > 0) {
            size_t end = (size_t)r;
            while (end > 0 && all[end - 1] != '\n') /* an unfinished line waits */
                end--;
            json_int_t lines = 0;
            size_t start = end;
            while (start > 0) {
                if (all[start - 1] == '\n' && start != end && ++lines == tail)
                    break;
                start--;
            }
            if (lseek(ls->fd, from + (off_t)start, SEEK_SET) < 0)
                ke_log_warn(ED_MOD, "log %s: seek failed: %s", ls->path, strerror(errno));
        }
        free(all);
    }
    int more = log_pump(ls);
    if (!more || !follow) {
        log_end(d, id, NULL);
        logstream_free(d, ls);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&d->log_timer))
        uv_timer_start(&d->log_timer, log_tick, ED_LOG_POLL_MS, ED_LOG_POLL_MS);
}

static void log_cancel(ed *d, const char *id)
{
    for (logstream *ls = d->logs, *next; ls; ls = next) {
        next = ls->next;
        if (strcmp(id, "*") == 0 || strcmp(ls->id, id) == 0)
            logstream_free(d, ls);
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
            log_request(d, res + 5, msg);
        else if (msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE)
            log_cancel(d, res + 5);
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
        pod_update(d, res, o);
    } else if (strcmp(kind, "ConfigMap") == 0 || strcmp(kind, "Secret") == 0) {
        config_changed(d, kind, ns, name);
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
    uv_timer_start(&d->relist, relist, 0, (uint64_t)cfg->relist_ms);
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
    log_cancel(d, "*");
    for (probe_run *r = d->http_probes; r; r = r->next)
        http_finish(r, 0); /* their handles close before the module is destroyed */
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
        pod_free(p);
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
