/*
 * watch.c — watch streams: `?watch=true` answered with one JSON event per
 * line (chunked), as the API server does.
 *
 * A store watch (lib/store) feeds a per-client queue from the store's
 * dispatcher thread; the connection's own thread (libmicrohttpd's content
 * reader) takes lines from it, waiting on a monotonic condition variable.
 * The queue is bounded in bytes (KUBEAPI_WATCH_QUEUE_BYTES): a client that
 * does not read is cut off after what was queued, and watches again from
 * the last resourceVersion it saw, as from any API server.
 *
 * Without a resourceVersion (or "0") the stream starts with ADDED events for
 * what exists, then follows changes; from a resourceVersion it replays what
 * changed after it, or sends an ERROR event with a 410 Expired Status when
 * the store's history no longer reaches it. BOOKMARK events (when asked)
 * carry the latest revision every kubeapi.watch_bookmark_interval (15 s). A Table watch (kubectl
 * get -w) sends one-row Tables, with the column definitions in the first.
 * The stream ends at timeoutSeconds (at most KUBEAPI_WATCH_MAX_S), when the
 * client hangs up (checked every 5 s) or when the server stops.
 */
#include "kubeapi_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"

#include <stdlib.h>
#include <string.h>


struct ka_watch {
    ka_watch *next; /* in kubeapi.watches, under ka->mu */
    kubeapi *ka;
    char user[KE_RPC_ID_NAME_MAX]; /* whose watch it is (the per-user bound) */
    ka_stream s;     /* its mu guards the fields below too */
    ke_store_watch *w;
    const ke_k8s_kind *k;
    int table, include_object, bookmarks, defs_sent;
    uint64_t last_rev;
    int64_t deadline_ms, next_bookmark_ms;
};

/* push queues text (taken) as one line; 0, or -1 when the queue's bound
 * is passed or memory is short (the watch then ends after what is
 * queued). Under w->s.mu. */
static int push(ka_watch *w, char *text, int counted)
{
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps' terminating NUL becomes the line's end */
    int rc = ka_stream_push_locked(&w->s, text, n + 1, counted);
    free(text);
    return rc == 0 ? 0 : -1;
}

/* event_text builds the line of one event (a one-row Table for kubectl). */
static char *event_text(ka_watch *w, int type, const json_t *obj)
{
    json_t *e;
    if (w->table) {
        json_t *items = json_pack("[O]", (json_t *)obj);
        const char *rv = ke_k8s_str(obj, "metadata.resourceVersion");
        json_t *t = items ? ke_k8s_table(w->k, w->table == 1 ? "v1" : "v1beta1", items,
                                         w->include_object, rv ? strtoull(rv, NULL, 10) : 0,
                                         NULL, ke_time_wall_ms())
                          : NULL;
        json_decref(items);
        if (t && w->defs_sent)
            json_object_set_new(t, "columnDefinitions", json_array());
        w->defs_sent = 1;
        e = t ? ke_k8s_watch_event(type, t) : NULL;
        json_decref(t);
    } else {
        e = ke_k8s_watch_event(type, obj);
    }
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    return text;
}

static void on_event(int type, const json_t *obj, uint64_t rev, void *ud)
{
    ka_watch *w = ud;
    pthread_mutex_lock(&w->s.mu);
    if (w->s.ended) {
        pthread_mutex_unlock(&w->s.mu);
        return;
    }
    if (type == KE_STORE_GONE) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too old resource version: the history was compacted past %llu",
                 (unsigned long long)rev);
        json_t *e = ke_k8s_watch_error(410, "Expired", msg);
        char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (text)
            push(w, text, 0);
        ka_stream_end_locked(&w->s);
    } else {
        char *text = event_text(w, type, obj);
        if (!text || push(w, text, 1) != 0) {
            /* cut off: the client watches again from the last version it saw */
            ke_log_warn(KA_MOD, "watch of %s cut off: the client reads too slowly (%zu bytes "
                                "queued)", w->k->plural, w->s.bytes);
            ka_stream_end_locked(&w->s);
        } else {
            w->last_rev = rev;
        }
    }
    pthread_mutex_unlock(&w->s.mu);
}

/* idle: the deadline, and a BOOKMARK when it is time (under w->s.mu). */
static int idle(void *ud, int64_t now, int64_t *wake)
{
    ka_watch *w = ud;
    if (now >= w->deadline_ms)
        return 1;
    if (w->bookmarks && now >= w->next_bookmark_ms) {
        w->next_bookmark_ms = now + w->ka->cfg.bookmark_ms;
        json_t *e = ke_k8s_watch_bookmark(w->k, w->last_rev);
        char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        if (text && push(w, text, 1) == 0)
            return -1;
    }
    if (w->deadline_ms < *wake)
        *wake = w->deadline_ms;
    if (w->bookmarks && w->next_bookmark_ms < *wake)
        *wake = w->next_bookmark_ms;
    return 0;
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ka_watch *w = cls;
    return ka_stream_read(&w->s, buf, max, idle, w);
}

static void watch_free(void *cls)
{
    ka_watch *w = cls;
    ke_store_watch_stop(w->w); /* no callback after this */
    kubeapi *ka = w->ka;
    pthread_mutex_lock(&ka->mu);
    for (ka_watch **pp = &ka->watches; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    pthread_mutex_unlock(&ka->mu);
    ka_stream_destroy(&w->s);
    free(w);
}

void ka_watches_stop(kubeapi *ka)
{
    pthread_mutex_lock(&ka->mu);
    atomic_store(&ka->stopping, 1);
    for (ka_watch *w = ka->watches; w; w = w->next) {
        pthread_mutex_lock(&w->s.mu);
        pthread_cond_broadcast(&w->s.cv); /* its reader sees ka->stopping */
        pthread_mutex_unlock(&w->s.mu);
    }
    pthread_mutex_unlock(&ka->mu);
}

/* send_one_error answers a watch that cannot start with one ERROR event
 * (HTTP 200), as the API server does for a resourceVersion too old. */
static enum MHD_Result send_one_error(struct MHD_Connection *c, int code, const char *reason,
                                      const char *msg)
{
    json_t *e = ke_k8s_watch_error(code, reason, msg);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!text)
        return ka_send_json(c, 500, NULL, NULL);
    size_t n = strlen(text);
    char *body = realloc(text, n + 2);
    if (!body) {
        free(text);
        return ka_send_json(c, 500, NULL, NULL);
    }
    body[n] = '\n';
    body[n + 1] = '\0';
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n + 1, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result ka_serve_watch(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                               const ke_k8s_path *p, const char *ns, int table)
{
    ke_store *st = ka->cfg.store;
    char why[512];
    if (ke_store_selector_check(r->q.label_selector, r->q.field_selector, why, sizeof(why)) != 0)
        return ka_send_status(c, 400, "BadRequest", why, p->kind, NULL);
    ka_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return ka_send_json(c, 500, NULL, NULL);
    w->ka = ka;
    snprintf(w->user, sizeof(w->user), "%s", r->id.user);
    ka_stream_init(&w->s, ka, c, KUBEAPI_WATCH_QUEUE_BYTES);
    w->k = p->kind;
    w->table = table;
    w->include_object = r->q.include_object;
    w->bookmarks = r->q.bookmarks;
    int64_t timeout_s = r->q.timeout_s > 0 && r->q.timeout_s < KUBEAPI_WATCH_MAX_S
                            ? r->q.timeout_s
                            : KUBEAPI_WATCH_MAX_S;
    int64_t now = ke_time_mono_ms();
    w->deadline_ms = now + timeout_s * 1000;
    w->next_bookmark_ms = now + w->ka->cfg.bookmark_ms;
    uint64_t from = r->q.rv;
    int rc = 0;
    if (from == 0) {
        /* no version: what exists now as ADDED, then what changes */
        json_t *items = NULL;
        rc = ke_store_list(st, p->kind->kind, ns, r->q.label_selector, r->q.field_selector,
                           &items, &from);
        size_t i;
        json_t *o;
        pthread_mutex_lock(&w->s.mu);
        json_array_foreach(items, i, o) {
            char *text = event_text(w, KE_STORE_ADDED, o);
            if (!text || push(w, text, 0) != 0) /* bounded by the list, not the queue */
                rc = KE_ENOMEM;
        }
        w->last_rev = from;
        pthread_mutex_unlock(&w->s.mu);
        json_decref(items);
    } else {
        w->last_rev = from;
    }
    if (rc == 0)
        rc = ke_store_watch_start(st, p->kind->kind, ns, r->q.label_selector, r->q.field_selector,
                                  from, on_event, w, &w->w);
    if (rc != 0) {
        watch_free(w);
        if (rc == KE_EGONE) {
            snprintf(why, sizeof(why), "too old resource version: %llu (%llu)",
                     (unsigned long long)r->q.rv,
                     (unsigned long long)ke_store_compacted(st));
            return send_one_error(c, 410, "Expired", why);
        }
        if (rc == KE_EINVAL) {
            snprintf(why, sizeof(why), "Too large resource version: %llu, current: %llu",
                     (unsigned long long)r->q.rv, (unsigned long long)ke_store_revision(st));
            return ka_send_status(c, 504, "Timeout", why, p->kind, NULL);
        }
        snprintf(why, sizeof(why), "watch: %s", ke_strerror(rc));
        return ka_send_error(c, rc, why, p->kind, NULL);
    }
    pthread_mutex_lock(&ka->mu);
    int mine = 0;
    for (ka_watch *o = ka->watches; o; o = o->next)
        mine += strcmp(o->user, w->user) == 0;
    if (mine >= KUBEAPI_WATCHES_PER_USER) {
        pthread_mutex_unlock(&ka->mu);
        watch_free(w);
        snprintf(why, sizeof(why), "too many watches: user \"%s\" has %d open (at most %d); "
                                   "close some and watch again",
                 r->id.user, mine, KUBEAPI_WATCHES_PER_USER);
        return ka_send_status(c, 429, "TooManyRequests", why, p->kind, NULL);
    }
    w->next = ka->watches;
    ka->watches = w;
    pthread_mutex_unlock(&ka->mu);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, reader, w, watch_free);
    if (!resp) {
        watch_free(w);
        return MHD_NO;
    }
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0U);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-cache, private");
    enum MHD_Result res = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return res;
}
