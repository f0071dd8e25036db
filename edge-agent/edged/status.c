/*
 * status.c — a pod's status as Kubernetes shows it, and the reports that
 * carry it (and a deletion's confirmation) upstream through the outbox.
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

/* ---- reports upstream (through MetaManager's outbox) ---- */

void ed_send_report(ed *d, epod *p, Ke__V1__Operation op, const char *content)
{
    /* above everything reported before, also across restarts (the store,
     * read once per pod) and a wiped store (the wall clock), as the node
     * status does */
    if (p->last_rv == 0) {
        int rc = edge_store_reported_rv(ke_rt_store(d->e), p->key, &p->last_rv);
        if (rc != 0)
            ke_log_warn(ED_MOD, "cannot read the last status version pod=%s/%s: %s", p->ns,
                        p->name, ke_strerror(rc));
    }
    int64_t wall = ke_time_wall_ms();
    uint64_t rv = wall > 0 && (uint64_t)wall > p->last_rv ? (uint64_t)wall : p->last_rv + 1;
    p->last_rv = rv;
    Ke__V1__Message *m = ke_rt_message_new(ED_MOD, "podstatus", op, p->key, content,
                                           content ? strlen(content) : 0);
    if (!m) {
        ke_log_error(ED_MOD, "status of pod %s/%s not queued: out of memory", p->ns, p->name);
        return;
    }
    m->header->resource_version = rv;
    int rc = ke_rt_send_to(d->e, ED_META, m);
    if (rc != 0) {
        ke__v1__message__free_unpacked(m, NULL);
        ke_log_error(ED_MOD, "status of pod %s/%s not queued: %s", p->ns, p->name,
                     ke_strerror(rc));
    }
}

static void rfc3339_ns(char *buf, size_t cap, int64_t ns)
{
    ke_time_rfc3339(buf, cap, ns / 1000000);
}

int ed_will_restart(const epod *p, const ectr *c)
{
    const char *rp = ed_restart_policy(p);
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
        const json_t *sc = ed_spec_container(p, c->name);
        json_t *st = NULL, *last = json_object();
        int running = c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
        int exited = c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED &&
                     c->cur.details;
        int restarts = exited && ed_will_restart(p, c);
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
                              "image", ed_str_at(sc, "image"), "started", running);
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
    int ready = all_ready && !ed_deleting(p);
    if (ready != p->cond_val || !p->cond_time) {
        p->cond_val = ready;
        p->cond_time = ke_time_wall_ms();
    }
    char since[40], start[40];
    ke_time_rfc3339(since, sizeof(since), p->cond_time);
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

void ed_report_status(ed *d, epod *p)
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
    ed_send_report(d, p, KE__V1__OPERATION__OPERATION_UPDATE, js);
    free(p->reported);
    p->reported = js;
}
