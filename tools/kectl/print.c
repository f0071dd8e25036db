/*
 * print.c — how kectl shows objects: kubectl's tables (one row function
 * per kind, columns aligned like kubectl's tabwriter), kubectl's AGE
 * format, and -o json (4-space indent, as kubectl), -o yaml (kectl_yaml_emit)
 * and -o name.
 */
#include "kectl.h"

#include "kectl_yaml.h"
#include "ke_err.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* kubectl's tabwriter: padding 3, minimum cell width 6 */
#define TABLE_PADDING 3
#define TABLE_MIN_WIDTH 6

/* ---- JSON helpers ---- */

json_t *kectl_jget(const json_t *obj, const char *path)
{
    char key[128];
    const json_t *v = obj;
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key) || !json_is_object(v))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (dot ? 1 : 0);
    }
    return (json_t *)v;
}

const char *kectl_jstr(const json_t *obj, const char *path)
{
    return json_string_value(kectl_jget(obj, path));
}

static const char *or_none(const char *s)
{
    return s && s[0] ? s : "<none>";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void kectl_join_map(char *buf, size_t len, const json_t *map, const char *sep)
{
    size_t n = json_is_object(map) ? json_object_size(map) : 0;
    snprintf(buf, len, "<none>");
    if (n == 0)
        return;
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return;
    size_t i = 0, used = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_str);
    buf[0] = '\0';
    for (i = 0; i < n && used < len; i++) {
        const char *val = json_string_value(json_object_get(map, keys[i]));
        int w = snprintf(buf + used, len - used, "%s%s=%s", i ? sep : "", keys[i],
                         val ? val : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    free(keys);
}

/* ---- time ---- */

int kectl_parse_time(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return KE_EINVAL;
    const char *p = s + n;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++) {
        }
    long offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &m) != 2)
            return KE_EINVAL;
        offset = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
        p += 1 + m;
    } else {
        return KE_EINVAL;
    }
    if (*p != '\0')
        return KE_EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return KE_EINVAL;
    *out = (int64_t)t - offset;
    return 0;
}

void kectl_human_duration(char *buf, size_t len, int64_t s)
{
    /* k8s.io/apimachinery/pkg/util/duration.HumanDuration */
    if (s < -1) {
        snprintf(buf, len, "<invalid>");
        return;
    }
    if (s < 0)
        s = 0;
    long long sec = s, min = s / 60, h = s / 3600, d = h / 24;
    if (sec < 120)
        snprintf(buf, len, "%llds", sec);
    else if (min < 10)
        snprintf(buf, len, sec % 60 ? "%lldm%llds" : "%lldm", min, sec % 60);
    else if (min < 180)
        snprintf(buf, len, "%lldm", min);
    else if (h < 8)
        snprintf(buf, len, min % 60 ? "%lldh%lldm" : "%lldh", h, min % 60);
    else if (h < 48)
        snprintf(buf, len, "%lldh", h);
    else if (h < 24 * 8)
        snprintf(buf, len, h % 24 ? "%lldd%lldh" : "%lldd", d, h % 24);
    else if (h < 24 * 365 * 2)
        snprintf(buf, len, "%lldd", d);
    else if (h < 24 * 365 * 8)
        snprintf(buf, len, d % 365 ? "%lldy%lldd" : "%lldy", d / 365, d % 365);
    else
        snprintf(buf, len, "%lldy", d / 365);
}

static int64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

void kectl_age(char *buf, size_t len, const char *timestamp)
{
    int64_t t;
    if (kectl_parse_time(timestamp, &t) != 0) {
        snprintf(buf, len, "<unknown>");
        return;
    }
    kectl_human_duration(buf, len, now_s() - t);
}

void kectl_age_ms(char *buf, size_t len, int64_t ms)
{
    if (ms <= 0) {
        snprintf(buf, len, "<never>");
        return;
    }
    kectl_human_duration(buf, len, now_s() - ms / 1000);
}

/* ---- rows ---- */

void kectl_row_add(kectl_row *r, const char *fmt, ...)
{
    if (r->n >= KECTL_TABLE_MAX_COLS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->cell[r->n++], KECTL_CELL_MAX, fmt, ap);
    va_end(ap);
}

static size_t count_keys(const json_t *o)
{
    return json_is_object(o) ? json_object_size(o) : 0;
}

static void add_age(kectl_row *r, const json_t *o)
{
    char age[32];
    kectl_age(age, sizeof(age), kectl_jstr(o, "metadata.creationTimestamp"));
    kectl_row_add(r, "%s", age);
}

/* pod_status is kubectl's STATUS column: the phase, or the pod's reason,
 * or the reason a container waits or terminated, or Terminating. */
static void pod_status(const json_t *o, char *buf, size_t len, int *ready, int *total,
                       long long *restarts)
{
    const char *reason = kectl_jstr(o, "status.phase");
    if (!reason || !reason[0])
        reason = "Pending"; /* what the API server defaults a new pod's phase to */
    const char *r = kectl_jstr(o, "status.reason");
    if (r && r[0])
        reason = r;
    json_t *cs = kectl_jget(o, "status.containerStatuses");
    size_t n = json_is_array(cs) ? json_array_size(cs) : 0;
    json_t *spec_c = kectl_jget(o, "spec.containers");
    *total = json_is_array(spec_c) ? (int)json_array_size(spec_c) : (int)n;
    *ready = 0;
    *restarts = 0;
    int running = 0;
    char exitbuf[48];
    for (size_t i = n; i > 0; i--) {
        json_t *c = json_array_get(cs, i - 1);
        *restarts += json_integer_value(json_object_get(c, "restartCount"));
        const char *wr = kectl_jstr(c, "state.waiting.reason");
        json_t *term = kectl_jget(c, "state.terminated");
        if (json_is_true(json_object_get(c, "ready")))
            (*ready)++;
        if (wr && wr[0]) {
            reason = wr;
        } else if (json_is_object(term)) {
            const char *tr = kectl_jstr(term, "reason");
            if (tr && tr[0]) {
                reason = tr;
            } else {
                long long sig = json_integer_value(json_object_get(term, "signal"));
                snprintf(exitbuf, sizeof(exitbuf), sig ? "Signal:%lld" : "ExitCode:%lld",
                         sig ? sig : json_integer_value(json_object_get(term, "exitCode")));
                reason = exitbuf;
            }
        } else if (json_is_object(kectl_jget(c, "state.running"))) {
            running = 1;
        }
    }
    if (strcmp(reason, "Completed") == 0 && running)
        reason = "Running";
    if (kectl_jget(o, "metadata.deletionTimestamp"))
        reason = r && strcmp(r, "NodeLost") == 0 ? "Unknown" : "Terminating";
    snprintf(buf, len, "%s", reason);
}

static void pod_row(kectl_row *row, const json_t *o, int wide)
{
    char status[64];
    int ready, total;
    long long restarts;
    pod_status(o, status, sizeof(status), &ready, &total, &restarts);
    kectl_row_add(row, "%d/%d", ready, total);
    kectl_row_add(row, "%s", status);
    kectl_row_add(row, "%lld", restarts);
    add_age(row, o);
    if (wide) {
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "status.podIP")));
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "spec.nodeName")));
    }
}

/* node_roles: the suffixes of node-role.kubernetes.io/ labels (and
 * kubernetes.io/role), sorted; an edge node is an agent too, as KubeEdge
 * labels it. */
static void node_roles(const json_t *o, char *buf, size_t len)
{
    static const char prefix[] = "node-role.kubernetes.io/";
    const char *roles[32];
    size_t n = 0;
    int has_edge = 0, has_agent = 0;
    const char *k;
    json_t *v;
    json_t *labels = kectl_jget(o, "metadata.labels");
    if (json_is_object(labels)) {
        json_object_foreach(labels, k, v) {
            const char *role = NULL;
            if (strncmp(k, prefix, sizeof(prefix) - 1) == 0 && k[sizeof(prefix) - 1])
                role = k + sizeof(prefix) - 1;
            else if (strcmp(k, "kubernetes.io/role") == 0 && json_string_value(v))
                role = json_string_value(v);
            if (!role || n == sizeof(roles) / sizeof(roles[0]) - 1)
                continue;
            has_edge |= strcmp(role, "edge") == 0;
            has_agent |= strcmp(role, "agent") == 0;
            roles[n++] = role;
        }
    }
    if (has_edge && !has_agent)
        roles[n++] = "agent";
    qsort(roles, n, sizeof(roles[0]), cmp_str);
    snprintf(buf, len, "<none>");
    size_t used = 0;
    for (size_t i = 0; i < n && used < len; i++) {
        if (i > 0 && strcmp(roles[i], roles[i - 1]) == 0)
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? "," : "", roles[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static const char *node_address(const json_t *o, const char *type)
{
    json_t *addrs = kectl_jget(o, "status.addresses"), *a;
    size_t i;
    json_array_foreach(addrs, i, a) {
        const char *t = kectl_jstr(a, "type");
        if (t && strcmp(t, type) == 0)
            return kectl_jstr(a, "address");
    }
    return NULL;
}

static void node_row(kectl_row *row, const json_t *o, int wide)
{
    const char *status = "NotReady";
    json_t *conds = kectl_jget(o, "status.conditions"), *c;
    size_t i;
    json_array_foreach(conds, i, c) {
        const char *t = kectl_jstr(c, "type");
        const char *s = kectl_jstr(c, "status");
        if (t && strcmp(t, "Ready") == 0)
            status = s && strcmp(s, "True") == 0 ? "Ready" : "NotReady";
    }
    char roles[KECTL_CELL_MAX];
    node_roles(o, roles, sizeof(roles));
    kectl_row_add(row, "%s%s", status,
                  json_is_true(kectl_jget(o, "spec.unschedulable")) ? ",SchedulingDisabled" : "");
    kectl_row_add(row, "%s", roles);
    add_age(row, o);
    kectl_row_add(row, "%s", or_none(kectl_jstr(o, "status.nodeInfo.kubeletVersion")));
    if (wide) {
        kectl_row_add(row, "%s", or_none(node_address(o, "InternalIP")));
        kectl_row_add(row, "%s", or_none(node_address(o, "ExternalIP")));
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "status.nodeInfo.osImage")));
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "status.nodeInfo.kernelVersion")));
        kectl_row_add(row, "%s",
                      or_none(kectl_jstr(o, "status.nodeInfo.containerRuntimeVersion")));
    }
}

static void configmap_row(kectl_row *row, const json_t *o)
{
    kectl_row_add(row, "%zu",
                  count_keys(kectl_jget(o, "data")) + count_keys(kectl_jget(o, "binaryData")));
    add_age(row, o);
}

static void secret_row(kectl_row *row, const json_t *o)
{
    const char *type = kectl_jstr(o, "type");
    kectl_row_add(row, "%s", type && type[0] ? type : "Opaque");
    kectl_row_add(row, "%zu",
                  count_keys(kectl_jget(o, "data")) + count_keys(kectl_jget(o, "stringData")));
    add_age(row, o);
}

static void device_row(kectl_row *row, const json_t *o)
{
    const char *state = kectl_jstr(o, "status.state");
    kectl_row_add(row, "%s", or_none(kectl_jstr(o, "spec.deviceModelRef.name")));
    kectl_row_add(row, "%s", or_none(kectl_jstr(o, "spec.nodeName")));
    kectl_row_add(row, "%s", state && state[0] ? state : "Unknown");
    add_age(row, o);
}

static void devicemodel_row(kectl_row *row, const json_t *o)
{
    json_t *props = kectl_jget(o, "spec.properties");
    kectl_row_add(row, "%zu", json_is_array(props) ? json_array_size(props) : 0);
    add_age(row, o);
}

/* object_row fills the row of obj for a table of its kind. */
static void object_row(const kectl_table *t, const json_t *o, kectl_row *row)
{
    row->n = 0;
    if (t->ns_col)
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "metadata.namespace")));
    kectl_row_add(row, "%s", or_none(kectl_jstr(o, "metadata.name")));
    const char *kind = t->kind->kind;
    if (strcmp(kind, "Pod") == 0)
        pod_row(row, o, t->wide);
    else if (strcmp(kind, "Node") == 0)
        node_row(row, o, t->wide);
    else if (strcmp(kind, "ConfigMap") == 0)
        configmap_row(row, o);
    else if (strcmp(kind, "Secret") == 0)
        secret_row(row, o);
    else if (strcmp(kind, "Device") == 0)
        device_row(row, o);
    else if (strcmp(kind, "DeviceModel") == 0)
        devicemodel_row(row, o);
    else
        add_age(row, o);
}

/* ---- tables ---- */

int kectl_table_init(kectl_table *t, const char *const *headers, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->indent = "";
    t->ncols = ncols > KECTL_TABLE_MAX_COLS ? KECTL_TABLE_MAX_COLS : ncols;
    kectl_row r = {.n = 0};
    for (size_t i = 0; i < t->ncols; i++)
        kectl_row_add(&r, "%s", headers[i]);
    return kectl_table_add_row(t, &r);
}

int kectl_table_init_kind(kectl_table *t, const kectl_kind *kind, int wide, int ns_col)
{
    const char *h[KECTL_TABLE_MAX_COLS];
    size_t n = 0;
    ns_col = ns_col && kind->namespaced;
    if (ns_col)
        h[n++] = "NAMESPACE";
    h[n++] = "NAME";
    const char *k = kind->kind;
    if (strcmp(k, "Pod") == 0) {
        static const char *const c[] = {"READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"};
        for (size_t i = 0; i < (wide ? 6u : 4u); i++)
            h[n++] = c[i];
    } else if (strcmp(k, "Node") == 0) {
        static const char *const c[] = {"STATUS",      "ROLES",    "AGE",
                                        "VERSION",     "INTERNAL-IP", "EXTERNAL-IP",
                                        "OS-IMAGE",    "KERNEL-VERSION", "CONTAINER-RUNTIME"};
        for (size_t i = 0; i < (wide ? 9u : 4u); i++)
            h[n++] = c[i];
    } else if (strcmp(k, "ConfigMap") == 0) {
        h[n++] = "DATA";
        h[n++] = "AGE";
    } else if (strcmp(k, "Secret") == 0) {
        h[n++] = "TYPE";
        h[n++] = "DATA";
        h[n++] = "AGE";
    } else if (strcmp(k, "Device") == 0) {
        h[n++] = "MODEL";
        h[n++] = "NODE";
        h[n++] = "STATE";
        h[n++] = "AGE";
    } else if (strcmp(k, "DeviceModel") == 0) {
        h[n++] = "PROPERTIES";
        h[n++] = "AGE";
    } else {
        h[n++] = "AGE";
    }
    int rc = kectl_table_init(t, h, n);
    t->kind = kind;
    t->wide = wide;
    t->ns_col = ns_col;
    return rc;
}

int kectl_table_add_row(kectl_table *t, const kectl_row *r)
{
    if (t->nrows >= KECTL_TABLE_MAX_ROWS)
        return KE_EFULL;
    if (t->nrows == t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
        char **cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));
        if (!cells)
            return KE_ENOMEM;
        t->cells = cells;
        t->cap_rows = cap;
    }
    char **row = &t->cells[t->nrows * t->ncols];
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(i < r->n ? r->cell[i] : "");
        if (!row[i]) {
            while (i > 0)
                free(row[--i]);
            return KE_ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

int kectl_table_add_object(kectl_table *t, const json_t *obj)
{
    kectl_row r;
    object_row(t, obj, &r);
    return kectl_table_add_row(t, &r);
}

static void widen(kectl_table *t, char *const *row)
{
    for (size_t i = 0; i < t->ncols; i++) {
        size_t w = strlen(row[i]) + TABLE_PADDING;
        if (w < TABLE_MIN_WIDTH)
            w = TABLE_MIN_WIDTH;
        if (w > t->width[i])
            t->width[i] = w;
    }
}

static void print_row(const kectl_table *t, FILE *out, char *const *row)
{
    /* trailing empty cells are not padded: no spaces at the end of lines */
    size_t last = 0;
    for (size_t i = 0; i < t->ncols; i++)
        if (row[i][0])
            last = i;
    fputs(t->indent, out);
    for (size_t i = 0; i < last; i++)
        fprintf(out, "%-*s", (int)t->width[i], row[i]);
    fputs(row[last], out);
    fputc('\n', out);
}

void kectl_table_print(kectl_table *t, FILE *out, int no_headers)
{
    for (size_t r = no_headers ? 1 : 0; r < t->nrows; r++)
        widen(t, &t->cells[r * t->ncols]);
    for (size_t r = no_headers ? 1 : 0; r < t->nrows; r++)
        print_row(t, out, &t->cells[r * t->ncols]);
}

void kectl_table_print_object(kectl_table *t, FILE *out, const json_t *obj)
{
    kectl_row r;
    object_row(t, obj, &r);
    char *cells[KECTL_TABLE_MAX_COLS];
    for (size_t i = 0; i < t->ncols; i++)
        cells[i] = i < r.n ? r.cell[i] : (char *)"";
    widen(t, cells);
    print_row(t, out, cells);
}

void kectl_table_free(kectl_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
    t->indent = "";
}

/* ---- -o json|yaml|name ---- */

int kectl_output_parse(const char *s, kectl_output *out)
{
    static const struct {
        const char *name;
        kectl_output o;
    } names[] = {{"wide", KECTL_OUT_WIDE},
                 {"json", KECTL_OUT_JSON},
                 {"yaml", KECTL_OUT_YAML},
                 {"name", KECTL_OUT_NAME}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].o;
            return 0;
        }
    }
    return KE_EINVAL;
}

int kectl_print_object(FILE *out, const kectl_kind *kind, const json_t *obj, kectl_output o)
{
    switch (o) {
    case KECTL_OUT_JSON:
        if (json_dumpf(obj, out, JSON_INDENT(4)) != 0)
            return KE_EIO;
        fputc('\n', out);
        return 0;
    case KECTL_OUT_YAML:
        return kectl_yaml_emit(out, obj);
    case KECTL_OUT_NAME: {
        const char *kname = kectl_jstr(obj, "kind");
        const kectl_kind *k = kname ? kectl_kind_of(kname) : NULL;
        if (!k)
            k = kind;
        fprintf(out, "%s/%s\n", k ? k->singular : "object",
                or_none(kectl_jstr(obj, "metadata.name")));
        return 0;
    }
    default:
        return KE_EINVAL;
    }
}

int kectl_print_list(FILE *out, const kectl_kind *kind, const json_t *items, kectl_output o)
{
    if (o == KECTL_OUT_NAME) {
        size_t i;
        json_t *v;
        json_array_foreach(items, i, v) {
            int rc = kectl_print_object(out, kind, v, o);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    json_t *list = json_pack("{s:s, s:s, s:O}", "apiVersion", "v1", "kind", "List", "items", items);
    if (!list)
        return KE_ENOMEM;
    int rc = kectl_print_object(out, kind, list, o);
    json_decref(list);
    return rc;
}
