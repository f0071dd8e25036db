/*
 * edged_internal.h — what the files of the Edged module share (edged.h is
 * its public face): the pod table, and each file's entry points.
 *
 *   edged.c    the module: messages, start/stop, the pod table, the store
 *   status.c   pod status, and reports upstream through the outbox
 *   pod.c      each pod's state machine: one CRI step at a time
 *   relist.c   listing the runtime: exits, adoption, what no pod owns
 *   probe.c    liveness and readiness probes (exec, httpGet)
 *   logs.c     container logs for kectl logs
 *
 * Everything here runs on the edge loop (edge-agent/README.md, "Edged").
 */
#ifndef EDGED_INTERNAL_H
#define EDGED_INTERNAL_H

#include "edged.h"

#include "cri.h"
#include "podspec.h"

#include <jansson.h>
#include <stdint.h>

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
    int64_t start_wall_ms;
    char *reported;
    uint64_t last_rv;
    int64_t cond_time; /* wall ms ContainersReady/Ready last changed */
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

/* ---- edged.c: the pod table, the store ---- */
void ed_inst_clear(inst *i);
char *ed_dupstr(const char *s);
const char *ed_str_at(const json_t *obj, const char *path); /* "" when absent */
const char *ed_label(size_t n, Runtime__V1__PodSandbox__LabelsEntry **l, const char *k);
void ed_pod_dir(const ed *d, const epod *p, char *buf, size_t cap);
void ed_log_dir(const ed *d, const epod *p, char *buf, size_t cap);
int ed_deleting(const epod *p); /* marked for deletion, or gone from the store */
const char *ed_restart_policy(const epod *p);
const json_t *ed_spec_container(const epod *p, const char *name);
ectr *ed_ctr_named(epod *p, const char *name);
void ed_pod_free(epod *p);
epod *ed_pod_by_uid(ed *d, const char *uid);
epod *ed_pod_by_key(ed *d, const char *key);
epod *ed_pod_by_name(ed *d, const char *ns, const char *name);
void ed_pod_unlink(ed *d, epod *p);
json_t *ed_lookup(const char *kind, const char *ns, const char *name, void *arg);
void ed_ctx_of(ed *d, epod *p, podspec_ctx *c, char *pd, size_t pdcap, char *ld, size_t ldcap);
void ed_pod_update(ed *d, const char *key, json_t *obj); /* takes obj; NULL: gone */
void ed_config_changed(ed *d, const char *kind, const char *ns, const char *name);

/* ---- status.c ---- */
void ed_send_report(ed *d, epod *p, Ke__V1__Operation op, const char *content);
int ed_will_restart(const epod *p, const ectr *c);
void ed_report_status(ed *d, epod *p); /* when it differs from the last one sent */

/* ---- pod.c ---- */
int64_t ed_grace_seconds(const epod *p);
void ed_pod_sync(ed *d, epod *p); /* may free p (a deleted pod's last step) */

/* ---- relist.c ---- */
void ed_relist(uv_timer_t *t);

/* ---- probe.c ---- */
void ed_probes_tick(ed *d);
void ed_probes_stop(ed *d); /* ends the httpGet probes in flight (module stop) */

/* ---- logs.c ---- */
void ed_log_request(ed *d, const char *id, const Ke__V1__Message *msg);
void ed_log_cancel(ed *d, const char *id); /* id "*": every stream */

#endif
