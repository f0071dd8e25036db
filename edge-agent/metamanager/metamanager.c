/*
 * metamanager.c — see metamanager.h.
 */
#include "metamanager.h"

#include "ke_err.h"
#include "ke_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MM_MOD "metamanager"
#define MM_HUB "edgehub" /* where downstream changes come from; told of new reports */
#define MM_WATCHER "metaserver" /* told that the store's objects changed */

typedef struct mm {
    ke_rt *e;
    uv_check_t notice; /* tells EdgeHub of new reports, MetaServer of applied
                        * changes, once per loop turn */
    int notice_due;
    int changed_due;
    int has_watcher; /* MetaServer runs here */
} mm;

static void respond(mm *s, const Ke__V1__Message *req, const char *json)
{
    int rc = ke_rt_respond(s->e, MM_MOD, req, json);
    if (rc != 0 && rc != KE_ENOTFOUND && rc != KE_ECLOSED)
        ke_log_warn(MM_MOD, "answer to %s not sent: %s", req->route->source, ke_strerror(rc));
}

static void respond_error(mm *s, const Ke__V1__Message *req, int rc)
{
    char json[160];
    snprintf(json, sizeof(json), "{\"error\":\"%s\",\"rc\":%d}", ke_strerror(rc), rc);
    respond(s, req, json);
}

/* tell sends a bodiless notice to module `to`; it may be absent. */
static void tell(mm *s, const char *to, const char *resource)
{
    Ke__V1__Message *n = ke_rt_message_new(MM_MOD, "", KE__V1__OPERATION__OPERATION_UPLOAD,
                                             resource, NULL, 0);
    if (!n)
        return; /* both also look on their own timers */
    int rc = ke_rt_send_to(s->e, to, n);
    if (rc != 0) {
        ke__v1__message__free_unpacked(n, NULL);
        if (rc != KE_ENOTFOUND && rc != KE_ECLOSED)
            ke_log_debug(MM_MOD, "%s notice not sent: %s", resource, ke_strerror(rc));
    }
}

static void on_notice(uv_check_t *h)
{
    mm *s = h->data;
    uv_check_stop(&s->notice);
    if (s->notice_due) {
        s->notice_due = 0;
        tell(s, MM_HUB, "meta/outbox");
    }
    if (s->changed_due) {
        s->changed_due = 0;
        tell(s, MM_WATCHER, "meta/changed");
    }
}

static void notice_soon(mm *s)
{
    uv_check_start(&s->notice, on_notice); /* a no-op when started already */
}

/* module_group: the bus group whose module acts on a change of the object
 * at key "node/<node>/<namespace>/<Kind>/<name>", or NULL (kept only). */
static const char *module_group(const char *key)
{
    static const struct {
        const char *kind, *group;
    } routes[] = {
        {"Pod", "edged"}, {"ConfigMap", "edged"}, {"Secret", "edged"},
        {"Device", "devicetwin"}, {"DeviceModel", "devicetwin"},
    };
    const char *p = key;
    for (int i = 0; i < 3 && p; i++) /* past node/<node>/<ns>/ */
        if ((p = strchr(p, '/')))
            p++;
    if (!p)
        return NULL;
    const char *end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : 0;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (n == strlen(routes[i].kind) && strncmp(p, routes[i].kind, n) == 0)
            return routes[i].group;
    return NULL;
}

static void downstream(mm *s, Ke__V1__Message *msg)
{
    int rc = edge_store_apply(ke_rt_store(s->e), msg);
    if (rc < 0) {
        char er[KE_LOG_ESC_SIZE(256)];
        ke_log_error(MM_MOD, "cannot apply resource=\"%s\": %s",
                     ke_log_esc(msg->route->resource ? msg->route->resource : "-", er, sizeof(er)),
                     ke_strerror(rc));
        respond_error(s, msg, rc);
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    respond(s, msg, rc == 1 ? "{\"applied\":true}" : "{\"applied\":false}");
    if (rc == 1 && s->has_watcher && !s->changed_due) {
        s->changed_due = 1;
        notice_soon(s);
    }
    const char *group = rc == 1 ? module_group(msg->route->resource) : NULL;
    const char *rg = msg->route->group;
    if (rc == 1 && !group && rg && *rg && strcmp(rg, "resource") != 0 &&
        strcmp(rg, metamanager_module.group) != 0) { /* another module's own group */
        int frc = ke_rt_send(s->e, msg);
        if (frc == 0)
            return;
        if (frc != KE_ENOTFOUND) {
            char eg[KE_LOG_ESC_SIZE(64)];
            ke_log_warn(MM_MOD, "change not passed to group \"%s\": %s (the module resyncs "
                                "from the store)", ke_log_esc(rg, eg, sizeof(eg)), ke_strerror(frc));
        }
    } else if (group) {
        char *was = msg->route->group;
        msg->route->group = strdup(group);
        if (!msg->route->group) {
            msg->route->group = was;
        } else {
            if (was != protobuf_c_empty_string)
                free(was);
            int frc = ke_rt_send(s->e, msg);
            if (frc == 0)
                return; /* the bus owns it */
            if (frc != KE_ENOTFOUND)
                ke_log_warn(MM_MOD, "change not passed to group \"%s\": %s (the module resyncs "
                                    "from the store)", group, ke_strerror(frc));
        }
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static void query(mm *s, Ke__V1__Message *msg)
{
    if (msg->route->resource && strcmp(msg->route->resource, "meta/barrier") == 0) {
        char json[64];
        snprintf(json, sizeof(json), "{\"mark\":%" PRIu64 "}",
                 edge_store_tombstone_mark(ke_rt_store(s->e)));
        respond(s, msg, json);
    } else {
        respond_error(s, msg, KE_ENOTFOUND);
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static void report(mm *s, Ke__V1__Message *msg)
{
    uint64_t seq = 0;
    int dup = 0;
    int rc = edge_store_report(ke_rt_store(s->e), msg, &seq, &dup);
    if (rc == 0 && !dup && !s->notice_due) {
        s->notice_due = 1;
        notice_soon(s);
    }
    if (msg->header && msg->header->sync) {
        if (rc != 0) {
            respond_error(s, msg, rc);
        } else {
            char json[96];
            snprintf(json, sizeof(json), "{\"seq\":%" PRIu64 ",\"duplicate\":%s}", seq,
                     dup ? "true" : "false");
            respond(s, msg, json);
        }
    } else if (rc != 0) {
        char es[KE_LOG_ESC_SIZE(64)], er[KE_LOG_ESC_SIZE(256)];
        ke_log_warn(MM_MOD, "report from \"%s\" not queued resource=\"%s\": %s",
                    ke_log_esc(msg->route->source ? msg->route->source : "-", es, sizeof(es)),
                    ke_log_esc(msg->route->resource ? msg->route->resource : "-", er, sizeof(er)),
                    ke_strerror(rc));
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static void mm_on_message(ke_module *m, Ke__V1__Message *msg)
{
    mm *s = ke_module_data(m);
    if (!msg->route) {
        ke_log_warn(MM_MOD, "dropping a message without a route");
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    if (msg->route->operation == KE__V1__OPERATION__OPERATION_QUERY && msg->route->resource &&
        strncmp(msg->route->resource, "meta/", 5) == 0) {
        query(s, msg); /* a question for MetaManager itself */
    } else if (msg->route->resource && strcmp(msg->route->resource, "meta/outbox") == 0) {
        /* a module queued reports in the store itself (DeviceTwin) */
        if (!s->notice_due) {
            s->notice_due = 1;
            notice_soon(s);
        }
        ke__v1__message__free_unpacked(msg, NULL);
    } else if (msg->route->source && strcmp(msg->route->source, MM_HUB) == 0) {
        downstream(s, msg);
    } else {
        report(s, msg);
    }
}

static int mm_start(ke_module *m)
{
    mm *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    s->e = ke_module_rt(m);
    if (uv_check_init(ke_rt_loop(s->e), &s->notice) != 0) {
        free(s);
        return KE_EIO;
    }
    s->notice.data = s;
    s->has_watcher = ke_rt_has_module(s->e, MM_WATCHER);
    ke_module_set_data(m, s);
    return 0;
}

static int mm_health(ke_module *m, char *detail, size_t cap)
{
    mm *s = ke_module_data(m);
    snprintf(detail, cap, "outbox=%" PRIu64, edge_store_outbox_pending(ke_rt_store(s->e)));
    return 0;
}

static void free_after_close(uv_handle_t *h) { free(h->data); }

static void mm_stop(ke_module *m)
{
    mm *s = ke_module_data(m);
    uv_check_stop(&s->notice);
}

static void mm_destroy(ke_module *m)
{
    mm *s = ke_module_data(m);
    ke_module_set_data(m, NULL);
    uv_close((uv_handle_t *)&s->notice, free_after_close); /* frees s */
}

const ke_module_ops metamanager_module = {
    .name = MM_MOD,
    .group = "meta",
    .start = mm_start,
    .on_message = mm_on_message,
    .health = mm_health,
    .stop = mm_stop,
    .destroy = mm_destroy,
};
