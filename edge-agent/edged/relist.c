/*
 * relist.c — the runtime listed every relist period: exits noticed,
 * sandboxes and containers adopted after a restart, what no pod owns
 * removed.
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
        ed_inst_clear(i);
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
        const char *uid = ed_label(s->n_labels, s->labels, PODSPEC_LABEL_UID);
        epod *p = uid ? ed_pod_by_uid(d, uid) : NULL;
        if (!p && uid) {
            /* the store no longer holds it: torn down as a pod that is gone */
            p = calloc(1, sizeof(*p));
            if (!p)
                continue;
            const char *n = ed_label(s->n_labels, s->labels, PODSPEC_LABEL_NAME);
            const char *ns = ed_label(s->n_labels, s->labels, PODSPEC_LABEL_NAMESPACE);
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
                ed_inst_clear(&p->c[i].cur);
        }
    }
    /* containers: the latest attempt is current, the one before previous */
    for (size_t i = 0; i < cl->n_containers; i++) {
        Runtime__V1__Container *x = cl->containers[i];
        const char *uid = ed_label(x->n_labels, (Runtime__V1__PodSandbox__LabelsEntry **)x->labels,
                                PODSPEC_LABEL_UID);
        const char *name = ed_label(x->n_labels, (Runtime__V1__PodSandbox__LabelsEntry **)x->labels,
                                 PODSPEC_LABEL_CONTAINER);
        epod *p = uid ? ed_pod_by_uid(d, uid) : NULL;
        if (!p || p->busy || !p->sb_id || strcmp(x->pod_sandbox_id, p->sb_id) != 0)
            continue; /* another sandbox's: goes with it */
        ectr *c = name ? ed_ctr_named(p, name) : NULL;
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
                ed_inst_clear(&c->prev);
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
            ed_inst_clear(&c->prev);
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
        ed_pod_sync(d, p); /* may free p */
    }
    ed_probes_tick(d);
}

static void on_sandboxes(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    ed *d = ud;
    if (st->code != KE_RPC_OK || d->stopping) {
        d->relisting = 0;
        if (st->code != KE_RPC_OK && d->runtime_ok) { /* said once per outage */
            ke_log_warn(ED_MOD, "container runtime %s unreachable: %s", d->cfg->runtime_endpoint,
                        st->message);
            d->runtime_ok = 0;
        }
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

void ed_relist(uv_timer_t *t)
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
