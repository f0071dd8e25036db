/*
 * logs.c — container logs for kectl logs: the runtime's log files read,
 * their CRI prefix stripped, streamed to EdgeHub (--tail, -f).
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
static size_t ed_cri_lines(const char *in, size_t n, char *out, size_t *consumed)
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
    /* the text of a record is never longer than the record: out fits in */
    char in[ED_LOG_CHUNK], out[ED_LOG_CHUNK];
    for (;;) {
        size_t have = ls->plen, n, used;
        if (have)
            memcpy(in, ls->partial, have);
        if (have == sizeof(in)) {
            /* a record longer than the buffer (containerd splits lines at
             * 16 KiB, so not one of its own): passed on as it is */
            memcpy(out, in, have);
            n = used = have;
        } else {
            ssize_t r = read(ls->fd, in + have, sizeof(in) - have);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                ke_log_warn(ED_MOD, "log %s: read failed: %s", ls->path, strerror(errno));
                return 0;
            }
            if (r == 0)
                return ls->follow;
            n = ed_cri_lines(in, have + (size_t)r, out, &used);
            have += (size_t)r;
        }
        free(ls->partial);
        ls->partial = NULL;
        ls->plen = have - used;
        if (ls->plen) {
            ls->partial = malloc(ls->plen);
            if (!ls->partial)
                return 0;
            memcpy(ls->partial, in + used, ls->plen);
        }
        if (ls->limit > 0 && ls->sent + (int64_t)n > ls->limit)
            n = (size_t)(ls->limit - ls->sent);
        if (n && log_send(d, ls->id, KE__V1__OPERATION__OPERATION_UPLOAD, out, n) != 0)
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
        epod *p = ed_pod_by_uid(d, ls->uid);
        ectr *c = p ? ed_ctr_named(p, ls->cname) : NULL;
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

void ed_log_request(ed *d, const char *id, const Ke__V1__Message *msg)
{
    json_t *q = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    const char *ns = ed_str_at(q, "namespace"), *pod = ed_str_at(q, "pod");
    const char *cname = ed_str_at(q, "container");
    int follow = json_is_true(json_object_get(q, "follow"));
    json_int_t tail = json_integer_value(json_object_get(q, "tailLines"));
    json_int_t limit = json_integer_value(json_object_get(q, "limitBytes"));
    char err[512] = "";
    epod *p = ed_pod_by_name(d, *ns ? ns : "default", pod);
    ectr *c = NULL;
    if (!p)
        snprintf(err, sizeof(err), "pod %s/%s is not on this node", *ns ? ns : "default", pod);
    else if (!(c = *cname ? ed_ctr_named(p, cname) : (p->nc == 1 ? &p->c[0] : NULL)))
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
    ed_log_dir(d, p, ld, sizeof(ld));
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

void ed_log_cancel(ed *d, const char *id)
{
    for (logstream *ls = d->logs, *next; ls; ls = next) {
        next = ls->next;
        if (strcmp(id, "*") == 0 || strcmp(ls->id, id) == 0)
            logstream_free(d, ls);
    }
}
