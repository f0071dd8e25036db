/*
 * ke_k8s_rest.c — see ke_k8s_rest.h.
 */
#include "ke_k8s_rest.h"

#include "ke_err.h"
#include "ke_k8s_print.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* fail: rc with the reason (ke_err_why). */
#define fail(why, len, rc, ...) ke_err_why(rc, why, len, __VA_ARGS__)

/* next_seg copies the next '/'-separated segment of *s into buf; 0, or
 * -1 when too long; "" at the end. */
static int next_seg(const char **s, char *buf, size_t len)
{
    while (**s == '/')
        (*s)++;
    const char *e = strchr(*s, '/');
    size_t n = e ? (size_t)(e - *s) : strlen(*s);
    if (n >= len)
        return -1;
    memcpy(buf, *s, n);
    buf[n] = '\0';
    *s += n;
    return 0;
}

/* kind_of finds the kind of group `g` and plural `res`. */
static const ke_k8s_kind *kind_of(const char *g, const char *ver, const char *res)
{
    size_t n;
    const ke_k8s_kind *t = ke_k8s_kinds(&n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].plural, res) != 0)
            continue;
        const char *slash = strchr(t[i].api_version, '/');
        size_t gl = slash ? (size_t)(slash - t[i].api_version) : 0;
        const char *v = slash ? slash + 1 : t[i].api_version;
        if (strlen(g) == gl && strncmp(g, t[i].api_version, gl) == 0 && strcmp(v, ver) == 0)
            return &t[i];
    }
    return NULL;
}

int ke_k8s_path_parse(const char *path, ke_k8s_path *p, char *why, size_t len)
{
    memset(p, 0, sizeof(*p));
    char seg[KE_STORE_NAME_MAX + 2];
    const char *s = path;
    if (next_seg(&s, seg, sizeof(seg)) != 0)
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    if (strcmp(seg, "api") == 0) {
        if (next_seg(&s, p->version, sizeof(p->version)) != 0 || strcmp(p->version, "v1") != 0)
            return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    } else if (strcmp(seg, "apis") == 0) {
        if (next_seg(&s, p->group, sizeof(p->group)) != 0 || !p->group[0] ||
            next_seg(&s, p->version, sizeof(p->version)) != 0 || !p->version[0])
            return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    } else {
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    }
    char a[KE_STORE_NAME_MAX + 2], b[KE_STORE_NAME_MAX + 2], c[KE_STORE_NAME_MAX + 2],
        d[KE_STORE_NAME_MAX + 2];
    if (next_seg(&s, a, sizeof(a)) || next_seg(&s, b, sizeof(b)) || next_seg(&s, c, sizeof(c)) ||
        next_seg(&s, d, sizeof(d)))
        return fail(why, len, KE_EINVAL, "path: a component is longer than %d bytes",
                    KE_STORE_NAME_MAX);
    while (*s == '/')
        s++;
    char e[64] = "";
    if (*s && next_seg(&s, e, sizeof(e)) != 0)
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    while (*s == '/')
        s++;
    if (*s)
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    const char *res, *name, *sub;
    if (strcmp(a, "namespaces") == 0 && b[0] && c[0] && kind_of(p->group, p->version, c) &&
        kind_of(p->group, p->version, c)->namespaced) {
        /* /namespaces/NS/RESOURCE[/NAME[/SUB]] */
        if (strlen(b) > KE_STORE_NS_MAX)
            return fail(why, len, KE_EINVAL, "namespace: longer than %d", KE_STORE_NS_MAX);
        snprintf(p->ns, sizeof(p->ns), "%s", b);
        p->ns_given = 1;
        res = c;
        name = d;
        sub = e;
    } else {
        if (e[0])
            return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
        res = a;
        name = b;
        sub = c;
        if (d[0])
            return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    }
    p->kind = res[0] ? kind_of(p->group, p->version, res) : NULL;
    if (!p->kind)
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    if (strlen(sub) >= sizeof(p->sub) || strlen(res) >= sizeof(p->resource) ||
        strlen(name) >= sizeof(p->name))
        return fail(why, len, KE_ENOTFOUND, "the server could not find the requested resource");
    memcpy(p->resource, res, strlen(res) + 1);
    memcpy(p->name, name, strlen(name) + 1);
    memcpy(p->sub, sub, strlen(sub) + 1);
    if (p->ns_given && !ke_k8s_valid_label(p->ns))
        return fail(why, len, KE_EINVAL, "namespace: \"%.64s\" is not a DNS-1123 label", p->ns);
    if (p->name[0] && !ke_k8s_valid_name(p->name))
        return fail(why, len, KE_EINVAL,
                    "name: \"%.64s\" is not a DNS-1123 subdomain (lowercase letters, digits, "
                    "'-' or '.', alphanumeric ends, at most 253)", p->name);
    return 0;
}

void ke_k8s_query_init(ke_k8s_query *q)
{
    memset(q, 0, sizeof(*q));
    q->grace = -1;
    q->include_object = 1;
}

/* parse_bool takes what the API server's (Go's strconv.ParseBool) does:
 * python3-kubernetes sends "True". */
static int parse_bool(const char *v, int *out)
{
    if (!v || !*v || strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
        strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0 || strcmp(v, "t") == 0 ||
        strcmp(v, "T") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "False") == 0 ||
        strcmp(v, "FALSE") == 0 || strcmp(v, "f") == 0 || strcmp(v, "F") == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

static int parse_int(const char *v, int64_t *out)
{
    if (!v || !*v)
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end)
        return -1;
    *out = x;
    return 0;
}

int ke_k8s_query_set(ke_k8s_query *q, const char *k, const char *v, char *why, size_t len)
{
    int64_t x;
    if (strcmp(k, "labelSelector") == 0) {
        q->label_selector = v;
    } else if (strcmp(k, "fieldSelector") == 0) {
        q->field_selector = v;
    } else if (strcmp(k, "continue") == 0) {
        q->cont = v;
    } else if (strcmp(k, "resourceVersion") == 0) {
        q->resource_version = v;
        q->rv = 0;
        if (v && *v && (parse_int(v, &x) != 0 || x < 0))
            return fail(why, len, KE_EINVAL, "resourceVersion: \"%.32s\" is not a revision of "
                                             "this server (a decimal number)", v);
        if (v && *v)
            q->rv = (uint64_t)x;
    } else if (strcmp(k, "resourceVersionMatch") == 0) {
        if (v && *v && strcmp(v, "NotOlderThan") != 0 && strcmp(v, "Exact") != 0)
            return fail(why, len, KE_EINVAL, "resourceVersionMatch: must be NotOlderThan or Exact");
        q->resource_version_match = v;
    } else if (strcmp(k, "limit") == 0) {
        if (parse_int(v, &x) != 0 || x < 0)
            return fail(why, len, KE_EINVAL, "limit: must be a non-negative integer");
        q->limit = (size_t)x;
    } else if (strcmp(k, "watch") == 0) {
        if (parse_bool(v, &q->watch) != 0)
            return fail(why, len, KE_EINVAL, "watch: must be true or false");
    } else if (strcmp(k, "allowWatchBookmarks") == 0) {
        if (parse_bool(v, &q->bookmarks) != 0)
            return fail(why, len, KE_EINVAL, "allowWatchBookmarks: must be true or false");
    } else if (strcmp(k, "timeoutSeconds") == 0) {
        if (parse_int(v, &x) != 0 || x < 0)
            return fail(why, len, KE_EINVAL, "timeoutSeconds: must be a non-negative integer");
        q->timeout_s = x;
    } else if (strcmp(k, "gracePeriodSeconds") == 0) {
        if (parse_int(v, &x) != 0 || x < 0)
            return fail(why, len, KE_EINVAL, "gracePeriodSeconds: must be a non-negative integer");
        q->grace = x;
    } else if (strcmp(k, "includeObject") == 0) {
        if (v && strcmp(v, "None") == 0)
            q->include_object = 0;
        else if (v && strcmp(v, "Metadata") == 0)
            q->include_object = 1;
        else if (v && strcmp(v, "Object") == 0)
            q->include_object = 2;
        else
            return fail(why, len, KE_EINVAL, "includeObject: must be None, Metadata or Object");
    } else if (strcmp(k, "fieldValidation") == 0) {
        if (v && *v && strcmp(v, "Ignore") != 0 && strcmp(v, "Warn") != 0 &&
            strcmp(v, "Strict") != 0)
            return fail(why, len, KE_EINVAL,
                        "fieldValidation: must be Ignore, Warn or Strict (got \"%.32s\")", v);
        q->field_validation = v;
    } else if (strcmp(k, "dryRun") == 0) {
        if (v && *v && strcmp(v, "All") != 0)
            return fail(why, len, KE_EINVAL, "dryRun: must be All (got \"%.32s\")", v);
        q->dry_run = v;
    } else if (strcmp(k, "fieldManager") == 0) {
        q->field_manager = v;
    } else if (strcmp(k, "propagationPolicy") == 0) {
        q->propagation_policy = v;
    } else if (strcmp(k, "pretty") == 0) {
        if (parse_bool(v, &q->pretty) != 0)
            q->pretty = 0;
    }
    return 0;
}

int ke_k8s_http_of(int err, const char **reason)
{
    switch (err) {
    case KE_ENOTFOUND: *reason = "NotFound"; return 404;
    case KE_EEXIST: *reason = "AlreadyExists"; return 409;
    case KE_ECONFLICT: *reason = "Conflict"; return 409;
    case KE_EINVAL: *reason = "Invalid"; return 422;
    case KE_EGONE: *reason = "Expired"; return 410;
    case KE_EPERM: *reason = "Forbidden"; return 403;
    case KE_EFULL: *reason = "TooManyRequests"; return 429;
    case KE_ETIMEDOUT: *reason = "Timeout"; return 504;
    case KE_ECLOSED: *reason = "ServiceUnavailable"; return 503;
    default: *reason = "InternalError"; return 500;
    }
}

json_t *ke_k8s_status(int code, const char *reason, const char *message, const ke_k8s_kind *k,
                      const char *name)
{
    json_t *st = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:i}", "kind", "Status",
                           "apiVersion", "v1", "metadata", "status",
                           code >= 400 ? "Failure" : "Success", "message",
                           message ? message : "", "reason", reason ? reason : "", "code", code);
    if (!st)
        return NULL;
    if (k || (name && *name)) {
        json_t *d = json_object();
        if (!d || json_object_set_new(st, "details", d) != 0) {
            json_decref(st);
            return NULL;
        }
        if (name && *name)
            json_object_set_new(d, "name", json_string(name));
        if (k) {
            const char *slash = strchr(k->api_version, '/');
            if (slash)
                json_object_set_new(d, "group",
                                    json_stringn(k->api_version, (size_t)(slash - k->api_version)));
            json_object_set_new(d, "kind", json_string(k->plural));
        }
    }
    return st;
}

json_t *ke_k8s_list(const ke_k8s_kind *k, json_t *items, uint64_t rev, const char *cont)
{
    char kind[80];
    snprintf(kind, sizeof(kind), "%sList", k->kind);
    json_t *l = json_pack("{s:s, s:s, s:{s:s%}, s:o}", "kind", kind, "apiVersion",
                          k->api_version, "metadata", "resourceVersion", "", (size_t)0, "items",
                          items);
    if (!l)
        return NULL;
    json_t *md = json_object_get(l, "metadata");
    json_object_set_new(md, "resourceVersion", json_sprintf("%llu", (unsigned long long)rev));
    if (cont && *cont)
        json_object_set_new(md, "continue", json_string(cont));
    return l;
}

json_t *ke_k8s_watch_event(int type, const json_t *obj)
{
    const char *t = type == KE_STORE_ADDED      ? "ADDED"
                    : type == KE_STORE_MODIFIED ? "MODIFIED"
                    : type == KE_STORE_DELETED  ? "DELETED"
                                                : "ERROR";
    return json_pack("{s:s, s:O}", "type", t, "object", (json_t *)obj);
}

json_t *ke_k8s_watch_bookmark(const ke_k8s_kind *k, uint64_t rev)
{
    json_t *e = json_pack("{s:s, s:{s:s, s:s, s:{}}}", "type", "BOOKMARK", "object", "kind",
                          k->kind, "apiVersion", k->api_version, "metadata");
    if (e)
        json_object_set_new(json_object_get(json_object_get(e, "object"), "metadata"),
                            "resourceVersion", json_sprintf("%llu", (unsigned long long)rev));
    return e;
}

json_t *ke_k8s_watch_error(int code, const char *reason, const char *message)
{
    json_t *st = ke_k8s_status(code, reason, message, NULL, NULL);
    if (!st)
        return NULL;
    return json_pack("{s:s, s:o}", "type", "ERROR", "object", st);
}

int ke_k8s_accepts_table(const char *accept)
{
    if (!accept)
        return 0;
    /* the first alternative that asks for a Table (kubectl lists v1, then
     * v1beta1, then plain JSON) */
    const char *s = accept;
    while (s && *s) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        char one[256];
        if (n < sizeof(one)) {
            memcpy(one, s, n);
            one[n] = '\0';
            if (strstr(one, "as=Table") && strstr(one, "g=meta.k8s.io")) {
                if (strstr(one, "v=v1beta1"))
                    return 2;
                if (strstr(one, "v=v1"))
                    return 1;
            }
        }
        s = end ? end + 1 : NULL;
    }
    return 0;
}

json_t *ke_k8s_table(const ke_k8s_kind *k, const char *version, const json_t *items,
                     int include_object, uint64_t rev, const char *cont, int64_t now_ms)
{
    char av[32];
    snprintf(av, sizeof(av), "meta.k8s.io/%s", version);
    json_t *t = json_pack("{s:s, s:s, s:{}, s:[], s:[]}", "kind", "Table", "apiVersion", av,
                          "metadata", "columnDefinitions", "rows");
    if (!t)
        return NULL;
    json_t *md = json_object_get(t, "metadata");
    json_object_set_new(md, "resourceVersion", json_sprintf("%llu", (unsigned long long)rev));
    if (cont && *cont)
        json_object_set_new(md, "continue", json_string(cont));
    size_t ncols;
    const ke_k8s_column *cols = ke_k8s_print_columns(k, &ncols);
    json_t *defs = json_object_get(t, "columnDefinitions"), *rows = json_object_get(t, "rows");
    int bad = 0;
    for (size_t i = 0; i < ncols; i++) {
        json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:i}", "name", cols[i].title, "type",
                              cols[i].type, "format", i == 0 ? "name" : "", "description", "",
                              "priority", cols[i].priority);
        bad |= !c || json_array_append_new(defs, c) != 0;
    }
    size_t i;
    json_t *o;
    char cells[KE_K8S_PRINT_COLS_MAX][KE_K8S_PRINT_CELL_MAX];
    json_array_foreach((json_t *)items, i, o) {
        size_t n = ke_k8s_print_row(k, o, now_ms, cells);
        json_t *cl = json_array(), *row = json_object();
        bad |= !cl || !row;
        for (size_t j = 0; cl && j < n && j < ncols; j++) {
            json_t *cell = strcmp(cols[j].type, "integer") == 0
                               ? json_integer(strtoll(cells[j], NULL, 10))
                               : json_string(cells[j]);
            bad |= !cell || json_array_append_new(cl, cell) != 0;
        }
        if (row) {
            bad |= json_object_set_new(row, "cells", cl) != 0;
            cl = NULL;
            if (include_object == 2) {
                bad |= json_object_set(row, "object", o) != 0;
            } else if (include_object == 1) {
                json_t *pm = json_pack("{s:s, s:s, s:O?}", "kind", "PartialObjectMetadata",
                                       "apiVersion", "meta.k8s.io/v1", "metadata",
                                       json_object_get(o, "metadata"));
                bad |= !pm || json_object_set_new(row, "object", pm) != 0;
            }
            bad |= json_array_append_new(rows, row) != 0;
        }
        json_decref(cl);
    }
    if (bad) {
        json_decref(t);
        return NULL;
    }
    return t;
}
