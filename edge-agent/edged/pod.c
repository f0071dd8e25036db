/*
 * pod.c — each pod's state machine: ed_pod_sync takes the one next CRI
 * step; its completion (step_done) records what happened and syncs again.
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

int64_t ed_grace_seconds(const epod *p)
{
    const json_t *g = json_object_get(json_object_get(p->obj, "metadata"),
                                      "deletionGracePeriodSeconds");
    if (!json_is_integer(g))
        g = json_object_get(json_object_get(p->obj, "spec"), "terminationGracePeriodSeconds");
    if (json_is_integer(g) && json_integer_value(g) >= 0)
        return json_integer_value(g);
    return p->obj ? 30 : 0; /* gone from the store (forced): no grace */
}

static void ed_backoff_next(ed *d, int64_t *backoff)
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
    int64_t grace = ed_grace_seconds(p);
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
    ed_pod_dir(d, p, dir, sizeof(dir));
    if (podspec_remove_tree(dir) != 0)
        ke_log_warn(ED_MOD, "cannot remove %s: %s", dir, strerror(errno));
    ed_log_dir(d, p, dir, sizeof(dir));
    if (podspec_remove_tree(dir) != 0)
        ke_log_warn(ED_MOD, "cannot remove %s: %s", dir, strerror(errno));
    if (p->obj) {
        ed_send_report(d, p, KE__V1__OPERATION__OPERATION_DELETE, NULL);
        ke_log_info(ED_MOD, "pod stopped and removed pod=%s/%s: deletion confirmed", p->ns,
                    p->name);
    } else {
        ke_log_info(ED_MOD, "pod removed pod=%s/%s uid=%s (no longer in the store)", p->ns,
                    p->name, p->uid);
    }
    ed_pod_unlink(d, p);
    ed_pod_free(p);
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
    const char *img = ed_str_at(sc, "image");
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
    const json_t *sc = ed_spec_container(p, c->name);
    int64_t now = ke_time_mono_ms();
    if (!sc)
        return 0;
    if (c->kill && c->cur.id && c->cur.state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING &&
        !c->stopping) {
        Runtime__V1__StopContainerRequest r = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
        r.container_id = c->cur.id;
        r.timeout = ed_grace_seconds(p);
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
        if (!ed_will_restart(p, c))
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
            ed_backoff_next(d, &c->backoff_ms);
        }
        if (now < c->retry_at)
            return 0;
        if (c->prev.id && strcmp(c->prev.id, ED_REMOVED) == 0)
            ed_inst_clear(&c->prev);
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
        is.image = (char *)ed_str_at(sc, "image");
        r.image = &is;
        return start_op(d, p, OP_IMG_STATUS, i, CRI_IMAGE, "ImageStatus", &r.base, 0) == 0;
    }
    char pd[PATH_MAX], ld[PATH_MAX], why[512];
    podspec_ctx ctx;
    ed_ctx_of(d, p, &ctx, pd, sizeof(pd), ld, sizeof(ld));
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
        ed_backoff_next(d, &c->backoff_ms);
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
    if (ed_deleting(p))
        return step_teardown(d, p);
    int64_t now = ke_time_mono_ms();
    char pd[PATH_MAX], ld[PATH_MAX], why[512];
    podspec_ctx ctx;
    ed_ctx_of(d, p, &ctx, pd, sizeof(pd), ld, sizeof(ld));
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

void ed_pod_sync(ed *d, epod *p)
{
    if (d->stopping || !d->listed)
        return;
    if (p->busy)
        return; /* the call in flight syncs it again when it completes */
    int rc = pod_step(d, p);
    if (rc == 0)
        ed_report_status(d, p);
    else if (rc > 0 && p->busy == 0) /* a call could not be made */
        ed_report_status(d, p);
}

static void ed_fail_msg(char *buf, size_t cap, const char *what, const ke_rpc_status *st)
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
    int64_t now = ke_time_mono_ms();
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
            ed_fail_msg(p->sb_msg, sizeof(p->sb_msg), "failed to create the pod sandbox", st);
            ed_backoff_next(d, &p->sb_backoff_ms);
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
                    ed_inst_clear(&x->prev);
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
        const json_t *sc = ed_spec_container(p, c->name);
        const char *policy = pull_policy(sc);
        int present = ok && r->image;
        if (!ok) {
            char msg[512];
            ed_fail_msg(msg, sizeof(msg), "image status", st);
            wait_set(c, "ErrImagePull", msg);
            c->retry_at = now + d->cfg->backoff_initial_ms;
        } else if (strcmp(policy, "Never") == 0 || (present && strcmp(policy, "Always") != 0)) {
            if (present) {
                c->image_ok = 1;
            } else {
                char msg[512];
                snprintf(msg, sizeof(msg), "Container image \"%s\" is not present with pull "
                         "policy of Never", ed_str_at(sc, "image"));
                wait_set(c, "ErrImageNeverPull", msg);
                c->retry_at = now + d->cfg->backoff_initial_ms;
            }
        } else {
            /* pull: Always, or IfNotPresent and absent */
            Runtime__V1__ImageSpec is = RUNTIME__V1__IMAGE_SPEC__INIT;
            Runtime__V1__PullImageRequest pr = RUNTIME__V1__PULL_IMAGE_REQUEST__INIT;
            is.image = (char *)ed_str_at(sc, "image");
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
            ed_fail_msg(msg, sizeof(msg), "failed to pull the image", st);
            wait_set(c, c->backoff_ms ? "ImagePullBackOff" : "ErrImagePull", msg);
            ed_backoff_next(d, &c->backoff_ms);
            c->retry_at = now + c->backoff_ms;
        }
        break;
    case OP_CREATE: {
        const Runtime__V1__CreateContainerResponse *r = (const void *)reply;
        if (ok) {
            ed_inst_clear(&c->cur);
            c->cur.id = strdup(r->container_id);
            c->cur.attempt = c->prev.id ? c->prev.attempt + 1 : 0;
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
        } else {
            char msg[512];
            ed_fail_msg(msg, sizeof(msg), "failed to create the container", st);
            wait_set(c, "CreateContainerError", msg);
            ed_backoff_next(d, &c->backoff_ms);
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
            ed_fail_msg(msg, sizeof(msg), "failed to start the container", st);
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
            c->cur.image_ref = ed_dupstr(r->status->image_ref);
        } else if (st->code == KE_RPC_NOT_FOUND) {
            ed_inst_clear(&c->cur);
        }
        break;
    }
    case OP_REMOVE_PREV:
        if (ok || st->code == KE_RPC_NOT_FOUND)
            ed_inst_clear(&c->prev);
        else
            ke_log_warn(ED_MOD, "pod %s/%s: removing an old container failed: %s", p->ns,
                        p->name, st->message);
        break;
    case OP_STOP_CTR:
        if (ok || st->code == KE_RPC_NOT_FOUND) {
            c->cur.state = RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
            c->cur.details = 0;
            c->kill = 0;
            if (!ed_deleting(p))
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
        ed_report_status(d, p);
        return; /* retried at the next list */
    }
    free(o);
    if (p->busy == 0) {
        ed_report_status(d, p);
        ed_pod_sync(d, p);
    }
}
