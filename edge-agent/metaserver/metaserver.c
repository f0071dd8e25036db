/*
 * metaserver.c — see metaserver.h.
 *
 * Two sides:
 *   the loop     learns of the store's changes (MetaManager's "meta/changed"
 *                notice after each applied change, and a 1 s timer as a
 *                safety net), reads them from the store in change order
 *                (edge_store_scan, its own loop connection), renders each
 *                once as a watch event line and appends it to the queue of
 *                every watcher it concerns — under the hub's lock, never
 *                waiting for anything else. A queue past its bound closes
 *                its watcher (the loop shuts the socket down).
 *   MHD threads  one per connection: parse, open a read-only connection to
 *                the store file, answer get/list from one snapshot; a watch
 *                replays from its version, then blocks in libmicrohttpd's
 *                content callback on its condition variable (monotonic
 *                clock) for the loop's events.
 * The hub's mutex guards the watcher list, every queue and the stop flag;
 * nothing else is shared between the two sides.
 */
#include "metaserver.h"

#include "edge_store.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_rest.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_store.h"
#include "ke_time.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MS_MOD "metaserver"
#define MS_BATCH 512        /* changes fanned out per loop turn */
#define MS_WAIT_SLICE_MS 2000 /* a waiting watch checks its peer this often */
#define MS_BLOCK 32768

static const char *const served_kinds[] = {"Pod", "ConfigMap", "Secret", "Service", "Device"};
#define MS_NKINDS (sizeof(served_kinds) / sizeof(served_kinds[0]))

typedef struct ev {
    struct ev *next;
    uint64_t cseq;
    size_t len;
    char line[]; /* one JSON event and '\n' */
} ev;

typedef struct ms ms;

typedef struct watcher {
    struct watcher *next, *prev; /* the hub's list */
    ms *s;
    /* set before registration, read-only after */
    const ke_k8s_kind *kind;
    char ns[KE_STORE_NS_MAX + 1]; /* "" every namespace */
    ke_store_selector *sel;  /* both selectors, or NULL */
    ke_store_selector *fsel; /* the field selector alone (for deletes), or NULL */
    int64_t deadline_ms;     /* monotonic */
    /* under the hub's lock */
    ev *head, *tail;
    size_t bytes, count;
    int overflow; /* closed for not reading */
    int fd;       /* the connection's socket; -1 once MHD has let it go */
    pthread_cond_t cv;
    /* the connection's thread only */
    ev *replay, *replay_tail; /* the replay, sent first */
    uint64_t mark;            /* the replay's snapshot: live events at or below it are in it */
    ev *cur;                  /* being sent */
    size_t off;
} watcher;

struct ms {
    ke_rt *e;
    const metaserver_config *cfg;
    char prefix[KE_STORE_NAME_MAX + 16]; /* node/<node>/ */
    struct MHD_Daemon *d;
    int port;
    uv_timer_t tick;
    int tick_init;
    uint64_t last; /* the loop: changes up to here are fanned out */
    size_t batch;  /* the loop: rows of the current fan-out */
    pthread_mutex_t mu;
    watcher *watchers;
    int nwatch;
    int stopping;
    atomic_ullong requests, refused, watches_closed;
    ke_metric *m_requests, *m_watchers, *m_closed;
};

/* ---- the listen address ------------------------------------------------ */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, char *why, size_t len)
{
    memset(ss, 0, sizeof(*ss));
    if (!listen || !*listen) {
        snprintf(why, len, "empty (want host:port on loopback, e.g. %s)",
                 METASERVER_LISTEN_DEFAULT);
        return KE_EINVAL;
    }
    char host[64];
    const char *port;
    if (listen[0] == '[') {
        const char *e = strchr(listen, ']');
        if (!e || e[1] != ':' || (size_t)(e - listen - 1) >= sizeof(host)) {
            snprintf(why, len, "\"%.80s\": want [v6-address]:port", listen);
            return KE_EINVAL;
        }
        memcpy(host, listen + 1, (size_t)(e - listen - 1));
        host[e - listen - 1] = '\0';
        port = e + 2;
    } else {
        const char *c = strrchr(listen, ':');
        if (!c || (size_t)(c - listen) >= sizeof(host)) {
            snprintf(why, len, "\"%.80s\": want host:port", listen);
            return KE_EINVAL;
        }
        memcpy(host, listen, (size_t)(c - listen));
        host[c - listen] = '\0';
        port = c + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535) {
        snprintf(why, len, "\"%.80s\": the port must be 0..65535", listen);
        return KE_EINVAL;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "localhost") == 0 ||
        inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        if (strcmp(host, "localhost") == 0)
            v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p);
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
            goto not_loopback;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p);
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
            goto not_loopback;
        return 0;
    }
    snprintf(why, len, "\"%.80s\": the host must be a numeric loopback address or localhost",
             listen);
    return KE_EINVAL;
not_loopback:
    snprintf(why, len,
             "\"%.80s\" is not a loopback address: MetaServer serves without TLS or "
             "authentication and listens on loopback only (127.0.0.1, ::1)",
             listen);
    return KE_EINVAL;
}

int metaserver_check_listen(const char *listen, char *why, size_t len)
{
    struct sockaddr_storage ss;
    return parse_listen(listen, &ss, why, len);
}

/* ---- objects ----------------------------------------------------------- */

static const ke_k8s_kind *served(const char *kind, size_t n)
{
    for (size_t i = 0; i < MS_NKINDS; i++)
        if (strlen(served_kinds[i]) == n && strncmp(served_kinds[i], kind, n) == 0)
            return ke_k8s_kind_find(served_kinds[i]);
    return NULL;
}

/* key_split reads "<ns>/<Kind>/<name>" after the node prefix. */
static int key_split(const char *rest, char *ns, size_t nslen, const ke_k8s_kind **k,
                     const char **name)
{
    const char *a = strchr(rest, '/');
    const char *b = a ? strchr(a + 1, '/') : NULL;
    if (!a || !b || (size_t)(a - rest) >= nslen || !b[1])
        return -1;
    memcpy(ns, rest, (size_t)(a - rest));
    ns[a - rest] = '\0';
    *k = served(a + 1, (size_t)(b - a - 1));
    *name = b + 1;
    return *k ? 0 : -1;
}

/* object_of renders a stored row as the object served: the stored JSON
 * with apiVersion and kind filled in when missing and
 * metadata.resourceVersion the row's change counter; a tombstone as the
 * object's identity only. NULL when out of memory or unreadable. */
static json_t *object_of(const edge_store_change *c, const ke_k8s_kind *k, const char *ns,
                         const char *name)
{
    json_t *o = NULL;
    if (!c->deleted && c->content && c->len) {
        json_error_t jerr;
        o = json_loadb(c->content, c->len, 0, &jerr);
        if (o && !json_is_object(o)) {
            json_decref(o);
            o = NULL;
        }
        if (!o) {
            ke_log_warn(MS_MOD, "object %s/%s/%s in the store is not a JSON object; not served",
                        k->kind, ns, name);
            return NULL;
        }
    } else {
        o = json_object();
    }
    if (!o)
        return NULL;
    json_t *md = json_object_get(o, "metadata");
    if (!json_is_object(md)) {
        md = json_object();
        if (!md || json_object_set_new(o, "metadata", md) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    int rc = 0;
    if (!json_object_get(o, "apiVersion"))
        rc |= json_object_set_new(o, "apiVersion", json_string(k->api_version));
    if (!json_object_get(o, "kind"))
        rc |= json_object_set_new(o, "kind", json_string(k->kind));
    if (!json_object_get(md, "name"))
        rc |= json_object_set_new(md, "name", json_string(name));
    if (!json_object_get(md, "namespace"))
        rc |= json_object_set_new(md, "namespace", json_string(ns));
    rc |= json_object_set_new(md, "resourceVersion",
                              json_sprintf("%llu", (unsigned long long)c->cseq));
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int event_type(const edge_store_change *c, int initial)
{
    if (c->deleted)
        return KE_STORE_DELETED;
    if (initial || c->op == KE__V1__OPERATION__OPERATION_INSERT)
        return KE_STORE_ADDED;
    return KE_STORE_MODIFIED;
}

/* ev_of renders one event as a line. NULL when out of memory. */
static ev *ev_of(const json_t *event, uint64_t cseq)
{
    char *text = json_dumps(event, JSON_COMPACT);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    ev *e = malloc(sizeof(*e) + n + 1);
    if (e) {
        e->next = NULL;
        e->cseq = cseq;
        e->len = n + 1;
        memcpy(e->line, text, n);
        e->line[n] = '\n';
    }
    free(text);
    return e;
}

static void ev_free_all(ev *e)
{
    while (e) {
        ev *n = e->next;
        free(e);
        e = n;
    }
}

/* ---- the loop: fan-out ------------------------------------------------- */

/* selected: does obj pass the request's selectors? A tombstone holds only
 * the object's identity (the cloud's deletes carry no object): it is
 * matched by the field selector alone — metadata.name, metadata.namespace,
 * and a pod's spec.nodeName, which is this node's for everything in the
 * store — so a label-selecting watcher may see the delete of an object it
 * never had (as a client may after a relist). */
static int selected(const ke_store_selector *sel, const ke_store_selector *fsel,
                    const json_t *obj, int deleted, const char *node)
{
    if (!deleted)
        return !sel || ke_store_selector_match(sel, obj);
    if (!fsel)
        return 1;
    json_t *view = json_deep_copy(obj);
    int ok = view && json_object_set_new(view, "spec", json_pack("{s:s}", "nodeName", node)) == 0 &&
             ke_store_selector_match(fsel, view);
    json_decref(view);
    return ok;
}

/* wants: does watcher w take this object (kind, namespace, selectors)? */
static int wants(const watcher *w, const ke_k8s_kind *k, const char *ns, const json_t *obj,
                 int deleted)
{
    return w->kind == k && (!w->ns[0] || strcmp(w->ns, ns) == 0) &&
           selected(w->sel, w->fsel, obj, deleted, w->s->cfg->node_name);
}

/* watcher_close_locked ends a watcher that does not read: its queue goes,
 * its socket is shut down (libmicrohttpd then closes the connection; the
 * descriptor stays open until the response is freed, which clears fd
 * under this lock first). */
static void watcher_close_locked(watcher *w)
{
    w->overflow = 1;
    ev_free_all(w->head);
    w->head = w->tail = NULL;
    w->bytes = w->count = 0;
    if (w->fd >= 0 && shutdown(w->fd, SHUT_RDWR) != 0)
        ke_log_debug(MS_MOD, "shutdown of a watcher's socket: %s", strerror(errno));
    pthread_cond_signal(&w->cv);
}

static void on_tick(uv_timer_t *t);

static int fan_one(const edge_store_change *c, void *arg)
{
    ms *s = arg;
    s->last = c->cseq;
    s->batch++;
    char ns[KE_STORE_NS_MAX + 1];
    const ke_k8s_kind *k;
    const char *name;
    if (strncmp(c->key, s->prefix, strlen(s->prefix)) != 0 ||
        key_split(c->key + strlen(s->prefix), ns, sizeof(ns), &k, &name) != 0)
        return 0; /* not a kind served */
    json_t *obj = object_of(c, k, ns, name);
    if (!obj)
        return 0;
    json_t *event = ke_k8s_watch_event(event_type(c, 0), obj);
    ev *proto = event ? ev_of(event, c->cseq) : NULL;
    json_decref(event);
    pthread_mutex_lock(&s->mu);
    for (watcher *w = s->watchers; w; w = w->next) {
        if (w->overflow || !wants(w, k, ns, obj, c->deleted))
            continue;
        if (!proto || w->bytes + proto->len > METASERVER_WATCH_QUEUE_BYTES ||
            w->count >= METASERVER_WATCH_QUEUE_EVENTS) {
            ke_log_warn(MS_MOD, "closing a watch of %s: %s", k->plural,
                        proto ? "it does not read (its queue is full)" : "out of memory");
            atomic_fetch_add(&s->watches_closed, 1);
            ke_metric_add(s->m_closed, 1);
            watcher_close_locked(w);
            continue;
        }
        ev *e = malloc(sizeof(*e) + proto->len);
        if (!e) {
            watcher_close_locked(w);
            continue;
        }
        memcpy(e, proto, sizeof(*e) + proto->len);
        e->next = NULL;
        if (w->tail)
            w->tail->next = e;
        else
            w->head = e;
        w->tail = e;
        w->bytes += e->len;
        w->count++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&s->mu);
    free(proto);
    json_decref(obj);
    return 0;
}

static int count_row(const edge_store_change *c, void *arg)
{
    (void)c;
    (*(size_t *)arg)++;
    return 0;
}

/* fanout passes the store's changes since the last turn to the watchers,
 * at most MS_BATCH a turn (the rest at once in a later turn). */
static void fanout(ms *s)
{
    pthread_mutex_lock(&s->mu);
    int any = s->nwatch > 0;
    pthread_mutex_unlock(&s->mu);
    uint64_t mark = 0, floor = 0;
    size_t n = 0;
    int rc;
    /* With no watcher only move on: the loop is the store's only writer,
     * so nothing changes under this turn, and a watcher registering now
     * replays up to this same mark. */
    s->batch = 0;
    rc = edge_store_scan(ke_rt_store(s->e), s->prefix, 1, s->last, any ? MS_BATCH : 1,
                         any ? fan_one : count_row, any ? (void *)s : (void *)&n, &mark, &floor);
    if (rc != 0) {
        ke_log_warn(MS_MOD, "cannot read the store's changes: %s (retried in 1 s)",
                    ke_strerror(rc));
        return;
    }
    if (any && s->batch == MS_BATCH) {
        uv_timer_start(&s->tick, on_tick, 0, 1000); /* the rest in the next turn */
        return;
    }
    s->last = mark;
}

static void on_tick(uv_timer_t *t)
{
    fanout(t->data);
}

/* ---- HTTP: replies ----------------------------------------------------- */

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                  "application/json");
    if (ret == MHD_YES && code == MHD_HTTP_METHOD_NOT_ALLOWED)
        ret = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ret == MHD_YES)
        ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_status(ms *s, struct MHD_Connection *c, unsigned code,
                                   const char *reason, const char *msg, const ke_k8s_kind *k,
                                   const char *name)
{
    if (code >= 400)
        atomic_fetch_add(&s->refused, 1);
    return send_json(c, code, ke_k8s_status((int)code, reason, msg, k, name));
}

static enum MHD_Result send_error(ms *s, struct MHD_Connection *c, int err, const char *msg)
{
    const char *reason;
    int code = ke_k8s_http_of(err, &reason);
    return send_status(s, c, (unsigned)code, reason, msg, NULL, NULL);
}

/* ---- HTTP: discovery --------------------------------------------------- */

static json_t *resource_list(const char *group_version)
{
    json_t *res = json_array();
    if (!res)
        return NULL;
    for (size_t i = 0; i < MS_NKINDS; i++) {
        const ke_k8s_kind *k = ke_k8s_kind_find(served_kinds[i]);
        if (!k || strcmp(k->api_version, group_version) != 0)
            continue;
        json_t *r = json_pack("{s:s, s:s, s:b, s:s, s:[sss]}", "name", k->plural,
                              "singularName", k->singular, "namespaced", k->namespaced,
                              "kind", k->kind, "verbs", "get", "list", "watch");
        if (r && k->short_name)
            json_object_set_new(r, "shortNames", json_pack("[s]", k->short_name));
        if (!r || json_array_append_new(res, r) != 0) {
            json_decref(res);
            return NULL;
        }
    }
    return json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                     "groupVersion", group_version, "resources", res);
}

static json_t *device_group(void)
{
    return json_pack("{s:s, s:s, s:[{s:s, s:s}], s:{s:s, s:s}}", "name", "devices.kubeedge.io",
                     "kind", "APIGroup", "versions", "groupVersion",
                     "devices.kubeedge.io/v1beta1", "version", "v1beta1", "preferredVersion",
                     "groupVersion", "devices.kubeedge.io/v1beta1", "version", "v1beta1");
}

/* discovery answers the discovery paths; MHD_NO + *handled 0 when url is
 * none of them. */
static enum MHD_Result discovery(ms *s, struct MHD_Connection *c, const char *url, int *handled)
{
    *handled = 1;
    json_t *body = NULL;
    if (strcmp(url, "/version") == 0) {
        body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "major", "1", "minor", "29",
                         "gitVersion", "v1.29.0-kubeedge-c", "goVersion", "none", "compiler",
                         "c", "platform", "linux");
    } else if (strcmp(url, "/api") == 0 || strcmp(url, "/api/") == 0) {
        body = json_pack("{s:s, s:[s], s:[{s:s, s:s}]}", "kind", "APIVersions", "versions", "v1",
                         "serverAddressByClientCIDRs", "clientCIDR", "0.0.0.0/0",
                         "serverAddress", s->cfg->listen);
    } else if (strcmp(url, "/api/v1") == 0 || strcmp(url, "/api/v1/") == 0) {
        body = resource_list("v1");
    } else if (strcmp(url, "/apis") == 0 || strcmp(url, "/apis/") == 0) {
        json_t *g = device_group();
        body = g ? json_pack("{s:s, s:s, s:[o]}", "kind", "APIGroupList", "apiVersion", "v1",
                             "groups", g)
                 : NULL;
    } else if (strcmp(url, "/apis/devices.kubeedge.io") == 0 ||
               strcmp(url, "/apis/devices.kubeedge.io/") == 0) {
        body = device_group();
        if (body)
            json_object_set_new(body, "apiVersion", json_string("v1"));
    } else if (strcmp(url, "/apis/devices.kubeedge.io/v1beta1") == 0 ||
               strcmp(url, "/apis/devices.kubeedge.io/v1beta1/") == 0) {
        body = resource_list("devices.kubeedge.io/v1beta1");
    } else {
        *handled = 0;
        return MHD_NO;
    }
    if (!body)
        return send_error(s, c, KE_ENOMEM, "out of memory");
    return send_json(c, MHD_HTTP_OK, body);
}

/* ---- HTTP: get and list ------------------------------------------------ */

typedef struct collect {
    ms *s;
    const ke_k8s_kind *k;
    const char *ns;   /* "" every namespace */
    const char *name; /* "" every name */
    const ke_store_selector *sel, *fsel;
    json_t *items;
    int initial;   /* watch replay from nothing: every object ADDED */
    watcher *w;    /* replay into w, else items */
    int rc;
} collect;

static int collect_one(const edge_store_change *c, void *arg)
{
    collect *cl = arg;
    const char *prefix = cl->s->prefix;
    char ns[KE_STORE_NS_MAX + 1];
    const ke_k8s_kind *k;
    const char *name;
    if (strncmp(c->key, prefix, strlen(prefix)) != 0 ||
        key_split(c->key + strlen(prefix), ns, sizeof(ns), &k, &name) != 0 || k != cl->k ||
        (cl->ns[0] && strcmp(ns, cl->ns) != 0) || (cl->name[0] && strcmp(name, cl->name) != 0))
        return 0;
    json_t *obj = object_of(c, k, ns, name);
    if (!obj)
        return 0;
    if (!selected(cl->sel, cl->fsel, obj, c->deleted, cl->s->cfg->node_name)) {
        json_decref(obj);
        return 0;
    }
    if (cl->w) {
        json_t *event = ke_k8s_watch_event(event_type(c, cl->initial), obj);
        ev *e = event ? ev_of(event, c->cseq) : NULL;
        json_decref(event);
        json_decref(obj);
        if (!e)
            return cl->rc = KE_ENOMEM;
        if (cl->w->replay_tail)
            cl->w->replay_tail->next = e;
        else
            cl->w->replay = e;
        cl->w->replay_tail = e;
        return 0;
    }
    if (json_array_append_new(cl->items, obj) != 0)
        return cl->rc = KE_ENOMEM;
    return 0;
}

/* scan_prefix: the narrowest key prefix of a request. */
static void scan_prefix(const ms *s, const ke_k8s_kind *k, const char *ns, const char *name,
                        char *buf, size_t len)
{
    if (ns[0] && name[0])
        snprintf(buf, len, "%s%s/%s/%s", s->prefix, ns, k->kind, name);
    else if (ns[0])
        snprintf(buf, len, "%s%s/%s/", s->prefix, ns, k->kind);
    else
        snprintf(buf, len, "%s", s->prefix);
}

static enum MHD_Result get_or_list(ms *s, struct MHD_Connection *c, edge_store *rd,
                                   const ke_k8s_path *p, const char *ns,
                                   const ke_store_selector *sel, const ke_k8s_query *q)
{
    collect cl = {.s = s, .k = p->kind, .ns = ns, .name = p->name, .sel = sel,
                  .items = json_array()}; /* no tombstones in a list */
    if (!cl.items)
        return send_error(s, c, KE_ENOMEM, "out of memory");
    char prefix[KE_STORE_NAME_MAX * 2 + 64];
    scan_prefix(s, p->kind, ns, p->name, prefix, sizeof(prefix));
    uint64_t mark = 0, floor = 0;
    int rc = edge_store_scan(rd, prefix, 0, 0, 0, collect_one, &cl, &mark, &floor);
    if (rc == 0)
        rc = cl.rc;
    if (rc != 0) {
        json_decref(cl.items);
        return send_error(s, c, rc == KE_ENOMEM ? rc : KE_EDB, "cannot read the edge store");
    }
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    int table = ke_k8s_accepts_table(accept);
    if (p->name[0]) {
        if (json_array_size(cl.items) == 0) {
            json_decref(cl.items);
            char msg[KE_STORE_NAME_MAX + 96];
            snprintf(msg, sizeof(msg), "%s \"%s\" not found", p->kind->plural, p->name);
            return send_status(s, c, MHD_HTTP_NOT_FOUND, "NotFound", msg, p->kind, p->name);
        }
        if (table) {
            json_t *t = ke_k8s_table(p->kind, table == 2 ? "v1beta1" : "v1", cl.items,
                                     q->include_object, mark, NULL, ke_time_wall_ms());
            json_decref(cl.items);
            return t ? send_json(c, MHD_HTTP_OK, t) : send_error(s, c, KE_ENOMEM, "out of memory");
        }
        json_t *one = json_incref(json_array_get(cl.items, 0));
        json_decref(cl.items);
        return send_json(c, MHD_HTTP_OK, one);
    }
    /* limit is accepted and checked, and the whole list returned as one
     * page: a server may ignore limit (the API's contract); the list is
     * this node's objects only */
    json_t *body;
    if (table) {
        body = ke_k8s_table(p->kind, table == 2 ? "v1beta1" : "v1", cl.items, q->include_object,
                            mark, NULL, ke_time_wall_ms());
        json_decref(cl.items);
    } else {
        body = ke_k8s_list(p->kind, cl.items, mark, NULL);
    }
    return body ? send_json(c, MHD_HTTP_OK, body) : send_error(s, c, KE_ENOMEM, "out of memory");
}

/* ---- HTTP: watch ------------------------------------------------------- */

static void watcher_free(watcher *w)
{
    ev_free_all(w->head);
    ev_free_all(w->replay);
    free(w->cur);
    ke_store_selector_free(w->sel);
    ke_store_selector_free(w->fsel);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* watch_done: libmicrohttpd lets the response go (the connection ends;
 * the socket is still open, closed after this). */
static void watch_done(void *cls)
{
    watcher *w = cls;
    ms *s = w->s;
    pthread_mutex_lock(&s->mu);
    if (w->prev)
        w->prev->next = w->next;
    else
        s->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    s->nwatch--;
    w->fd = -1;
    ke_metric_set(s->m_watchers, s->nwatch);
    pthread_mutex_unlock(&s->mu);
    watcher_free(w);
}

/* peer_gone: has the client closed its side (or the socket failed)? */
static int peer_gone(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
    return fd >= 0 && poll(&pfd, 1, 0) > 0 &&
           (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    watcher *w = cls;
    ms *s = w->s;
    for (;;) {
        if (w->cur) {
            size_t n = w->cur->len - w->off;
            if (n > max)
                n = max;
            memcpy(buf, w->cur->line + w->off, n);
            w->off += n;
            if (w->off == w->cur->len) {
                free(w->cur);
                w->cur = NULL;
                w->off = 0;
            }
            return (ssize_t)n;
        }
        if (w->replay) {
            w->cur = w->replay;
            w->replay = w->replay->next;
            if (!w->replay)
                w->replay_tail = NULL;
            w->cur->next = NULL;
            continue;
        }
        int end = 0, err = 0, fd;
        pthread_mutex_lock(&s->mu);
        for (;;) {
            if (w->head) {
                ev *e = w->head;
                w->head = e->next;
                if (!w->head)
                    w->tail = NULL;
                w->bytes -= e->len;
                w->count--;
                if (e->cseq <= w->mark) { /* in the replay already */
                    free(e);
                    continue;
                }
                w->cur = e;
                break;
            }
            if (w->overflow) {
                err = 1;
                break;
            }
            int64_t left = w->deadline_ms - ke_time_mono_ms();
            if (s->stopping || left <= 0) {
                end = 1;
                break;
            }
            fd = w->fd;
            if (peer_gone(fd)) {
                err = 1;
                break;
            }
            struct timespec ts =
                ke_time_deadline(left < MS_WAIT_SLICE_MS ? left : MS_WAIT_SLICE_MS);
            int wrc = pthread_cond_timedwait(&w->cv, &s->mu, &ts);
            if (wrc != 0 && wrc != ETIMEDOUT) {
                ke_log_error(MS_MOD, "watch wait failed: %s", strerror(wrc));
                err = 1;
                break;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (err)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (end)
            return MHD_CONTENT_READER_END_OF_STREAM;
    }
}

static enum MHD_Result send_watch_error(ms *s, struct MHD_Connection *c, int code,
                                        const char *reason, const char *msg)
{
    atomic_fetch_add(&s->refused, 1);
    json_t *e = ke_k8s_watch_error(code, reason, msg);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return MHD_NO;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    struct MHD_Response *r = MHD_create_response_from_buffer(n + 1, line, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(line);
        return MHD_NO;
    }
    enum MHD_Result ret =
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (ret == MHD_YES)
        ret = MHD_queue_response(c, MHD_HTTP_OK, r); /* as the API server: 200, then ERROR */
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result watch(ms *s, struct MHD_Connection *c, edge_store *rd,
                             const ke_k8s_path *p, const char *ns, ke_store_selector **sel,
                             ke_store_selector **fsel, const ke_k8s_query *q)
{
    watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return send_error(s, c, KE_ENOMEM, "out of memory");
    int prc = ke_time_cond_init(&w->cv);
    if (prc != 0) {
        free(w);
        return send_error(s, c, KE_ENOMEM, "cannot make a condition variable");
    }
    w->s = s;
    w->kind = p->kind;
    snprintf(w->ns, sizeof(w->ns), "%s", ns);
    w->sel = *sel;
    *sel = NULL;
    w->fsel = *fsel;
    *fsel = NULL;
    int64_t life = q->timeout_s > 0 && q->timeout_s < METASERVER_WATCH_TIMEOUT_S
                       ? q->timeout_s
                       : METASERVER_WATCH_TIMEOUT_S;
    w->deadline_ms = ke_time_mono_ms() + life * 1000;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    w->fd = ci ? ci->connect_fd : -1;
    /* register first, then take the snapshot: every change after the
     * snapshot reaches the queue, those at or below it are skipped */
    pthread_mutex_lock(&s->mu);
    int full = s->nwatch >= METASERVER_WATCHES_MAX, stopping = s->stopping;
    if (!full && !stopping) {
        w->next = s->watchers;
        if (s->watchers)
            s->watchers->prev = w;
        s->watchers = w;
        s->nwatch++;
        ke_metric_set(s->m_watchers, s->nwatch);
    }
    pthread_mutex_unlock(&s->mu);
    if (full || stopping) {
        w->fd = -1;
        watcher_free(w);
        return full ? send_status(s, c, 429, "TooManyRequests",
                                  "too many watches on this MetaServer", NULL, NULL)
                    : send_error(s, c, KE_ECLOSED, "metaserver is stopping");
    }
    collect cl = {.s = s, .k = p->kind, .ns = ns, .name = p->name, .sel = w->sel,
                  .fsel = w->fsel, .w = w,
                  .initial = q->rv == 0};
    char prefix[KE_STORE_NAME_MAX * 2 + 64];
    scan_prefix(s, p->kind, ns, p->name, prefix, sizeof(prefix));
    uint64_t floor = 0;
    int rc = edge_store_scan(rd, prefix, q->rv != 0, q->rv, 0, collect_one, &cl, &w->mark,
                             &floor);
    if (rc == 0)
        rc = cl.rc;
    struct MHD_Response *r = NULL;
    if (rc == 0 && q->rv != 0 && q->rv < floor) {
        watch_done(w);
        char msg[160];
        snprintf(msg, sizeof(msg), "too old resource version: %llu (%llu)",
                 (unsigned long long)q->rv, (unsigned long long)floor);
        return send_watch_error(s, c, 410, "Expired", msg);
    }
    if (rc == 0)
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, MS_BLOCK, watch_read, w,
                                              watch_done);
    if (!r) {
        watch_done(w);
        return send_error(s, c, rc == 0 || rc == KE_ENOMEM ? KE_ENOMEM : KE_EDB,
                          "cannot start the watch");
    }
    /* a watch is quiet as long as the store is: no idle timeout (it ends
     * at its deadline, when its peer goes, or when it does not read) */
    enum MHD_Result ret = MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0);
    if (ret == MHD_YES)
        ret = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (ret == MHD_YES)
        ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* watch_done runs when the connection lets it go */
    return ret;
}

/* ---- HTTP: requests ---------------------------------------------------- */

typedef struct qstate {
    ke_k8s_query q;
    char why[256];
    int rc;
} qstate;

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    (void)kind;
    qstate *st = cls;
    st->rc = ke_k8s_query_set(&st->q, key, value, st->why, sizeof(st->why));
    return st->rc == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    ms *s = cls;
    atomic_fetch_add(&s->requests, 1);
    ke_metric_add(s->m_requests, 1);
    ke_k8s_path p;
    char why[256];
    int prc = ke_k8s_path_parse(url, &p, why, sizeof(why));
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return send_status(s, c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                           "metaserver is read-only: write through the cloud",
                           prc == 0 ? p.kind : NULL, prc == 0 ? p.name : NULL);
    int handled;
    enum MHD_Result dr = discovery(s, c, url, &handled);
    if (handled)
        return dr;
    if (prc == KE_EINVAL)
        return send_status(s, c, MHD_HTTP_BAD_REQUEST, "BadRequest", why, NULL, NULL);
    int ok = prc == 0 && !p.sub[0];
    for (size_t i = 0; ok && i < MS_NKINDS; i++)
        if (strcmp(p.kind->kind, served_kinds[i]) == 0)
            break;
        else if (i + 1 == MS_NKINDS)
            ok = 0;
    if (!ok)
        return send_status(s, c, MHD_HTTP_NOT_FOUND, "NotFound",
                           "the server could not find the requested resource", NULL, NULL);
    qstate st = {.rc = 0};
    ke_k8s_query_init(&st.q);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_arg, &st);
    if (st.rc != 0)
        return send_status(s, c, MHD_HTTP_BAD_REQUEST, "BadRequest", st.why, NULL, NULL);
    const char *ns;
    if (ke_k8s_resolve_ns(p.kind, p.ns, p.name[0] != '\0', &ns, why, sizeof(why)) != 0)
        return send_status(s, c, MHD_HTTP_BAD_REQUEST, "BadRequest", why, NULL, NULL);
    ke_store_selector *sel = NULL, *fsel = NULL;
    int has_f = st.q.field_selector && *st.q.field_selector;
    if ((st.q.label_selector && *st.q.label_selector) || has_f) {
        int src = ke_store_selector_new(st.q.label_selector, st.q.field_selector, &sel, why,
                                        sizeof(why));
        if (src == 0 && has_f && st.q.watch)
            src = ke_store_selector_new(NULL, st.q.field_selector, &fsel, why, sizeof(why));
        if (src != 0) {
            ke_store_selector_free(sel);
            return src == KE_ENOMEM
                       ? send_error(s, c, KE_ENOMEM, "out of memory")
                       : send_status(s, c, MHD_HTTP_BAD_REQUEST, "BadRequest", why, NULL, NULL);
        }
    }
    edge_store *rd = NULL;
    int rc = edge_store_open_reader(s->cfg->db_path, &rd);
    enum MHD_Result ret;
    if (rc != 0)
        ret = send_error(s, c, KE_ECLOSED, "cannot read the edge store");
    else if (st.q.watch)
        ret = watch(s, c, rd, &p, ns, &sel, &fsel, &st.q);
    else
        ret = get_or_list(s, c, rd, &p, ns, sel, &st.q);
    edge_store_close(rd);
    ke_store_selector_free(sel);
    ke_store_selector_free(fsel);
    return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    ke_log_warn(MS_MOD, "libmicrohttpd: %s", line);
}

/* ---- the module -------------------------------------------------------- */

static void free_after_close(uv_handle_t *h)
{
    ms *s = h->data;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* start_failed undoes a start that did not finish (the runtime destroys
 * only modules that started). */
static int start_failed(ms *s, int rc)
{
    if (s->tick_init) {
        uv_timer_stop(&s->tick);
        uv_close((uv_handle_t *)&s->tick, free_after_close); /* frees s */
    } else {
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return rc;
}

static int ms_start(ke_module *m)
{
    const metaserver_config *cfg = ke_module_config(m);
    char why[256];
    struct sockaddr_storage ss;
    if (!cfg || !cfg->node_name || !cfg->db_path) {
        ke_log_error(MS_MOD, "no configuration");
        return KE_EINVAL;
    }
    if (parse_listen(cfg->listen, &ss, why, sizeof(why)) != 0) {
        ke_log_error(MS_MOD, "modules.metaserver.listen: %s", why);
        return KE_EINVAL;
    }
    if (strcmp(cfg->db_path, ":memory:") == 0) {
        ke_log_error(MS_MOD, "the edge store is :memory:, which no other connection can read; "
                             "give metamanager.db a file or set modules.metaserver.enable: "
                             "false");
        return KE_EINVAL;
    }
    ms *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    s->e = ke_module_rt(m);
    s->cfg = cfg;
    snprintf(s->prefix, sizeof(s->prefix), "node/%s/", cfg->node_name);
    int rc = pthread_mutex_init(&s->mu, NULL);
    if (rc != 0) {
        free(s);
        return KE_ENOMEM;
    }
    ke_metrics_counter_new("ke_metaserver_requests_total", "requests MetaServer answered", NULL,
                           &s->m_requests);
    ke_metrics_gauge_new("ke_metaserver_watches", "watches open on MetaServer", NULL,
                         &s->m_watchers);
    ke_metrics_counter_new("ke_metaserver_watches_closed_total",
                           "watches MetaServer closed because they did not read", NULL,
                           &s->m_closed);
    /* where the fan-out starts: the store as it is now */
    uint64_t floor = 0;
    size_t n = 0;
    rc = edge_store_scan(ke_rt_store(s->e), s->prefix, 1, UINT64_MAX >> 1, 1, count_row, &n,
                         &s->last, &floor);
    if (rc != 0) {
        ke_log_error(MS_MOD, "cannot read the edge store: %s", ke_strerror(rc));
        return start_failed(s, rc);
    }
    if (uv_timer_init(ke_rt_loop(s->e), &s->tick) != 0)
        return start_failed(s, KE_EIO);
    s->tick_init = 1;
    s->tick.data = s;
    if (uv_timer_start(&s->tick, on_tick, 1000, 1000) != 0)
        return start_failed(s, KE_EIO);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port;
    s->d = MHD_start_daemon(flags, ntohs(port), NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)METASERVER_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)METASERVER_TIMEOUT_S, MHD_OPTION_END);
    if (!s->d) {
        ke_log_error(MS_MOD, "cannot listen on %s (address in use?)", cfg->listen);
        return start_failed(s, KE_EIO);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    ke_module_set_data(m, s);
    ke_log_info(MS_MOD, "serving the read-only Kubernetes API on %s (port %d), node %s",
                cfg->listen, s->port, cfg->node_name);
    return 0;
}

static void ms_on_message(ke_module *m, Ke__V1__Message *msg)
{
    ms *s = ke_module_data(m);
    ke__v1__message__free_unpacked(msg, NULL); /* MetaManager's notice: the store changed */
    if (s && s->d)
        fanout(s);
}

static int ms_health(ke_module *m, char *detail, size_t cap)
{
    ms *s = ke_module_data(m);
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    int nw = s->nwatch;
    pthread_mutex_unlock(&s->mu);
    snprintf(detail, cap, "port=%d watches=%d requests=%llu refused=%llu closed=%llu rev=%llu",
             s->port, nw, (unsigned long long)atomic_load(&s->requests),
             (unsigned long long)atomic_load(&s->refused),
             (unsigned long long)atomic_load(&s->watches_closed), (unsigned long long)s->last);
    return 0;
}

static void ms_stop(ke_module *m)
{
    ms *s = ke_module_data(m);
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    for (watcher *w = s->watchers; w; w = w->next)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&s->mu);
    /* joins the connection threads: each watch ends at once (stopping),
     * a get or list when its snapshot is read */
    if (s->d)
        MHD_stop_daemon(s->d);
    s->d = NULL;
    if (s->tick_init)
        uv_timer_stop(&s->tick);
}

static void ms_destroy(ke_module *m)
{
    ms *s = ke_module_data(m);
    ke_module_set_data(m, NULL);
    if (!s)
        return;
    uv_close((uv_handle_t *)&s->tick, free_after_close); /* frees s */
}

const ke_module_ops metaserver_module = {
    .name = MS_MOD,
    .group = NULL,
    .start = ms_start,
    .on_message = ms_on_message,
    .health = ms_health,
    .stop = ms_stop,
    .destroy = ms_destroy,
};
