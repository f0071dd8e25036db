/*
 * probe.c — liveness and readiness probes: exec through CRI ExecSync,
 * httpGet with a small HTTP/1.0 client on the loop.
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
    return json_object_get(ed_spec_container(p, c->name), live ? "livenessProbe" : "readinessProbe");
}

/* probe_result: a probe's verdict comes back (on the loop) */
static void probe_result(probe_run *r, int success)
{
    ed *d = r->d;
    epod *p = d->stopping ? NULL : ed_pod_by_uid(d, r->uid);
    ectr *c = p ? ed_ctr_named(p, r->cname) : NULL;
    if (!c || !c->probe_id || strcmp(c->probe_id, r->cid) != 0)
        return; /* the instance it was for is gone */
    const json_t *pr = probe_spec(p, c, r->live);
    int64_t period = probe_int(pr, "periodSeconds", 10, 1) * 1000;
    int64_t fail_th = probe_int(pr, "failureThreshold", 3, 1);
    int64_t succ_th = probe_int(pr, "successThreshold", 1, 1);
    int64_t now = ke_time_mono_ms();
    if (r->live) {
        c->live_busy = 0;
        c->live_at = now + period;
        c->live_fails = success ? 0 : c->live_fails + 1;
        if (c->live_fails >= fail_th && !c->kill) {
            c->kill = 1;
            c->live_fails = 0;
            ed_pod_sync(d, p);
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
        ed_report_status(d, p);
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
            json_array_foreach(json_object_get(ed_spec_container(p, c->name), "ports"), i, cp)
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
void ed_probes_tick(ed *d)
{
    int64_t now = ke_time_mono_ms();
    for (epod *p = d->pods; p; p = p->next) {
        if (!p->obj || ed_deleting(p))
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

void ed_probes_stop(ed *d)
{
    for (probe_run *r = d->http_probes; r; r = r->next)
        http_finish(r, 0);
}
