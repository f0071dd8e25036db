/*
 * ke_k8s_print.c — see ke_k8s_print.h.
 */
#include "ke_k8s_print.h"

#include "ke_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COL(n, t, ty, p) {n, t, ty, p}
#define NAME_COL COL("NAME", "Name", "string", 0)
#define AGE_COL COL("AGE", "Age", "string", 0)

static const ke_k8s_column pod_cols[] = {
    NAME_COL,
    COL("READY", "Ready", "string", 0),
    COL("STATUS", "Status", "string", 0),
    COL("RESTARTS", "Restarts", "integer", 0),
    AGE_COL,
    COL("IP", "IP", "string", 1),
    COL("NODE", "Node", "string", 1),
    COL("NOMINATED NODE", "Nominated Node", "string", 1),
    COL("READINESS GATES", "Readiness Gates", "string", 1),
};
static const ke_k8s_column node_cols[] = {
    NAME_COL,
    COL("STATUS", "Status", "string", 0),
    COL("ROLES", "Roles", "string", 0),
    AGE_COL,
    COL("VERSION", "Version", "string", 0),
    COL("INTERNAL-IP", "Internal-IP", "string", 1),
    COL("EXTERNAL-IP", "External-IP", "string", 1),
    COL("OS-IMAGE", "OS-Image", "string", 1),
    COL("KERNEL-VERSION", "Kernel-Version", "string", 1),
    COL("CONTAINER-RUNTIME", "Container-Runtime", "string", 1),
};
static const ke_k8s_column configmap_cols[] = {NAME_COL, COL("DATA", "Data", "integer", 0),
                                               AGE_COL};
static const ke_k8s_column secret_cols[] = {NAME_COL, COL("TYPE", "Type", "string", 0),
                                            COL("DATA", "Data", "integer", 0), AGE_COL};
static const ke_k8s_column device_cols[] = {NAME_COL, COL("MODEL", "Model", "string", 0),
                                            COL("NODE", "Node", "string", 0),
                                            COL("STATE", "State", "string", 0), AGE_COL};
static const ke_k8s_column devicemodel_cols[] = {NAME_COL,
                                                 COL("PROPERTIES", "Properties", "integer", 0),
                                                 AGE_COL};
static const ke_k8s_column namespace_cols[] = {NAME_COL, COL("STATUS", "Status", "string", 0),
                                               AGE_COL};
static const ke_k8s_column service_cols[] = {
    NAME_COL,
    COL("TYPE", "Type", "string", 0),
    COL("CLUSTER-IP", "Cluster-IP", "string", 0),
    COL("EXTERNAL-IP", "External-IP", "string", 0),
    COL("PORT(S)", "Port(s)", "string", 0),
    AGE_COL,
    COL("SELECTOR", "Selector", "string", 1),
};
static const ke_k8s_column event_cols[] = {
    NAME_COL,
    COL("LAST SEEN", "Last Seen", "string", 0),
    COL("TYPE", "Type", "string", 0),
    COL("REASON", "Reason", "string", 0),
    COL("OBJECT", "Object", "string", 0),
    COL("MESSAGE", "Message", "string", 0),
};
static const ke_k8s_column default_cols[] = {NAME_COL, AGE_COL};

#define N(a) (sizeof(a) / sizeof((a)[0]))

const ke_k8s_column *ke_k8s_print_columns(const ke_k8s_kind *k, size_t *n)
{
    static const struct {
        const char *kind;
        const ke_k8s_column *cols;
        size_t n;
    } t[] = {
        {"Pod", pod_cols, N(pod_cols)},
        {"Node", node_cols, N(node_cols)},
        {"ConfigMap", configmap_cols, N(configmap_cols)},
        {"Secret", secret_cols, N(secret_cols)},
        {"Device", device_cols, N(device_cols)},
        {"DeviceModel", devicemodel_cols, N(devicemodel_cols)},
        {"Namespace", namespace_cols, N(namespace_cols)},
        {"Service", service_cols, N(service_cols)},
        {"Event", event_cols, N(event_cols)},
    };
    for (size_t i = 0; k && i < N(t); i++)
        if (strcmp(k->kind, t[i].kind) == 0) {
            *n = t[i].n;
            return t[i].cols;
        }
    *n = N(default_cols);
    return default_cols;
}

/* ---- cells ---- */

typedef struct row {
    char (*cells)[KE_K8S_PRINT_CELL_MAX];
    size_t n;
} row;

static void add(row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(row *r, const char *fmt, ...)
{
    if (r->n >= KE_K8S_PRINT_COLS_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->cells[r->n++], KE_K8S_PRINT_CELL_MAX, fmt, ap);
    va_end(ap);
}

static const json_t *jget(const json_t *o, const char *path)
{
    char key[128];
    while (o && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key) || !json_is_object(o))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        o = json_object_get(o, key);
        path += n + (dot ? 1 : 0);
    }
    return o;
}

static const char *jstr(const json_t *o, const char *path)
{
    return json_string_value(jget(o, path));
}

static const char *or_none(const char *s)
{
    return s && s[0] ? s : "<none>";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static size_t count_keys(const json_t *o)
{
    return json_is_object(o) ? json_object_size(o) : 0;
}

void ke_k8s_human_duration(char *buf, size_t len, int64_t s)
{
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

void ke_k8s_age(char *buf, size_t len, const char *timestamp, int64_t now_ms)
{
    int64_t t;
    if (ke_time_rfc3339_parse(timestamp, &t) != 0) {
        snprintf(buf, len, "<unknown>");
        return;
    }
    ke_k8s_human_duration(buf, len, now_ms / 1000 - t / 1000);
}

static void add_age(row *r, const json_t *o, int64_t now_ms)
{
    char age[32];
    ke_k8s_age(age, sizeof(age), jstr(o, "metadata.creationTimestamp"), now_ms);
    add(r, "%s", age);
}

/* pod_status is kubectl's STATUS column: the phase, or the pod's reason,
 * or the reason a container waits or terminated, or Terminating. */
static void pod_status(const json_t *o, char *buf, size_t len, int *ready, int *total,
                       long long *restarts)
{
    const char *reason = jstr(o, "status.phase");
    if (!reason || !reason[0])
        reason = "Pending"; /* what the API server defaults a new pod's phase to */
    const char *r = jstr(o, "status.reason");
    if (r && r[0])
        reason = r;
    const json_t *cs = jget(o, "status.containerStatuses");
    size_t n = json_is_array(cs) ? json_array_size(cs) : 0;
    const json_t *spec_c = jget(o, "spec.containers");
    *total = json_is_array(spec_c) ? (int)json_array_size(spec_c) : (int)n;
    *ready = 0;
    *restarts = 0;
    int running = 0;
    char exitbuf[48];
    for (size_t i = n; i > 0; i--) {
        const json_t *c = json_array_get(cs, i - 1);
        *restarts += json_integer_value(json_object_get(c, "restartCount"));
        const char *wr = jstr(c, "state.waiting.reason");
        const json_t *term = jget(c, "state.terminated");
        if (json_is_true(json_object_get(c, "ready")))
            (*ready)++;
        if (wr && wr[0]) {
            reason = wr;
        } else if (json_is_object(term)) {
            const char *tr = jstr(term, "reason");
            if (tr && tr[0]) {
                reason = tr;
            } else {
                long long sig = json_integer_value(json_object_get(term, "signal"));
                snprintf(exitbuf, sizeof(exitbuf), sig ? "Signal:%lld" : "ExitCode:%lld",
                         sig ? sig : json_integer_value(json_object_get(term, "exitCode")));
                reason = exitbuf;
            }
        } else if (json_is_object(jget(c, "state.running"))) {
            running = 1;
        }
    }
    if (strcmp(reason, "Completed") == 0 && running)
        reason = "Running";
    if (jget(o, "metadata.deletionTimestamp"))
        reason = r && strcmp(r, "NodeLost") == 0 ? "Unknown" : "Terminating";
    snprintf(buf, len, "%s", reason);
}

static void pod_row(row *r, const json_t *o, int64_t now_ms)
{
    char status[64];
    int ready, total;
    long long restarts;
    pod_status(o, status, sizeof(status), &ready, &total, &restarts);
    add(r, "%d/%d", ready, total);
    add(r, "%s", status);
    add(r, "%lld", restarts);
    add_age(r, o, now_ms);
    add(r, "%s", or_none(jstr(o, "status.podIP")));
    add(r, "%s", or_none(jstr(o, "spec.nodeName")));
    add(r, "%s", or_none(jstr(o, "status.nominatedNodeName")));
    add(r, "<none>");
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
    const json_t *labels = jget(o, "metadata.labels");
    if (json_is_object(labels)) {
        json_object_foreach((json_t *)labels, k, v) {
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
    const json_t *addrs = jget(o, "status.addresses");
    json_t *a;
    size_t i;
    json_array_foreach((json_t *)addrs, i, a) {
        const char *t = jstr(a, "type");
        if (t && strcmp(t, type) == 0)
            return jstr(a, "address");
    }
    return NULL;
}

static void node_row(row *r, const json_t *o, int64_t now_ms)
{
    const char *status = "NotReady";
    const json_t *conds = jget(o, "status.conditions");
    json_t *c;
    size_t i;
    json_array_foreach((json_t *)conds, i, c) {
        const char *t = jstr(c, "type");
        const char *s = jstr(c, "status");
        if (t && strcmp(t, "Ready") == 0)
            status = s && strcmp(s, "True") == 0 ? "Ready" : "NotReady";
    }
    char roles[KE_K8S_PRINT_CELL_MAX];
    node_roles(o, roles, sizeof(roles));
    add(r, "%s%s", status, json_is_true(jget(o, "spec.unschedulable")) ? ",SchedulingDisabled" : "");
    add(r, "%s", roles);
    add_age(r, o, now_ms);
    add(r, "%s", or_none(jstr(o, "status.nodeInfo.kubeletVersion")));
    add(r, "%s", or_none(node_address(o, "InternalIP")));
    add(r, "%s", or_none(node_address(o, "ExternalIP")));
    add(r, "%s", or_none(jstr(o, "status.nodeInfo.osImage")));
    add(r, "%s", or_none(jstr(o, "status.nodeInfo.kernelVersion")));
    add(r, "%s", or_none(jstr(o, "status.nodeInfo.containerRuntimeVersion")));
}

static void service_row(row *r, const json_t *o, int64_t now_ms)
{
    const char *type = jstr(o, "spec.type");
    add(r, "%s", type && type[0] ? type : "ClusterIP");
    add(r, "%s", or_none(jstr(o, "spec.clusterIP")));
    add(r, "<none>");
    char ports[KE_K8S_PRINT_CELL_MAX] = "";
    size_t used = 0, i;
    json_t *p;
    json_array_foreach((json_t *)jget(o, "spec.ports"), i, p) {
        const char *proto = jstr(p, "protocol");
        long long np = json_integer_value(json_object_get(p, "nodePort"));
        char one[64];
        if (np)
            snprintf(one, sizeof(one), "%lld:%lld/%s", json_integer_value(json_object_get(p, "port")),
                     np, proto ? proto : "TCP");
        else
            snprintf(one, sizeof(one), "%lld/%s", json_integer_value(json_object_get(p, "port")),
                     proto ? proto : "TCP");
        int w = snprintf(ports + used, sizeof(ports) - used, "%s%s", used ? "," : "", one);
        if (w < 0 || (size_t)w >= sizeof(ports) - used)
            break;
        used += (size_t)w;
    }
    add(r, "%s", or_none(ports));
    add_age(r, o, now_ms);
    char sel[KE_K8S_PRINT_CELL_MAX] = "";
    used = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)jget(o, "spec.selector"), k, v) {
        int w = snprintf(sel + used, sizeof(sel) - used, "%s%s=%s", used ? "," : "", k,
                         json_string_value(v) ? json_string_value(v) : "");
        if (w < 0 || (size_t)w >= sizeof(sel) - used)
            break;
        used += (size_t)w;
    }
    add(r, "%s", or_none(sel));
}

static void event_row(row *r, const json_t *o, int64_t now_ms)
{
    const char *last = jstr(o, "lastTimestamp");
    if (!last || !last[0])
        last = jstr(o, "eventTime");
    if (!last || !last[0])
        last = jstr(o, "metadata.creationTimestamp");
    char age[32];
    ke_k8s_age(age, sizeof(age), last, now_ms);
    add(r, "%s", age);
    add(r, "%s", or_none(jstr(o, "type")));
    add(r, "%s", or_none(jstr(o, "reason")));
    const char *ik = jstr(o, "involvedObject.kind"), *in = jstr(o, "involvedObject.name");
    char kl[64] = "";
    for (size_t i = 0; ik && ik[i] && i + 1 < sizeof(kl); i++)
        kl[i] = (char)(ik[i] >= 'A' && ik[i] <= 'Z' ? ik[i] + 32 : ik[i]);
    add(r, "%s/%s", kl, in ? in : "");
    add(r, "%s", jstr(o, "message") ? jstr(o, "message") : "");
}

size_t ke_k8s_print_row(const ke_k8s_kind *k, const json_t *o, int64_t now_ms,
                        char cells[][KE_K8S_PRINT_CELL_MAX])
{
    row r = {cells, 0};
    add(&r, "%s", or_none(jstr(o, "metadata.name")));
    const char *kind = k ? k->kind : "";
    if (strcmp(kind, "Pod") == 0) {
        pod_row(&r, o, now_ms);
    } else if (strcmp(kind, "Node") == 0) {
        node_row(&r, o, now_ms);
    } else if (strcmp(kind, "ConfigMap") == 0) {
        add(&r, "%zu", count_keys(jget(o, "data")) + count_keys(jget(o, "binaryData")));
        add_age(&r, o, now_ms);
    } else if (strcmp(kind, "Secret") == 0) {
        const char *type = jstr(o, "type");
        add(&r, "%s", type && type[0] ? type : "Opaque");
        add(&r, "%zu", count_keys(jget(o, "data")) + count_keys(jget(o, "stringData")));
        add_age(&r, o, now_ms);
    } else if (strcmp(kind, "Device") == 0) {
        const char *state = jstr(o, "status.state");
        add(&r, "%s", or_none(jstr(o, "spec.deviceModelRef.name")));
        add(&r, "%s", or_none(jstr(o, "spec.nodeName")));
        add(&r, "%s", state && state[0] ? state : "Unknown");
        add_age(&r, o, now_ms);
    } else if (strcmp(kind, "DeviceModel") == 0) {
        const json_t *props = jget(o, "spec.properties");
        add(&r, "%zu", json_is_array(props) ? json_array_size(props) : 0);
        add_age(&r, o, now_ms);
    } else if (strcmp(kind, "Namespace") == 0) {
        const char *phase = jstr(o, "status.phase");
        add(&r, "%s", jget(o, "metadata.deletionTimestamp") ? "Terminating"
                      : phase && phase[0]                  ? phase
                                                           : "Active");
        add_age(&r, o, now_ms);
    } else if (strcmp(kind, "Service") == 0) {
        service_row(&r, o, now_ms);
    } else if (strcmp(kind, "Event") == 0) {
        event_row(&r, o, now_ms);
    } else {
        add_age(&r, o, now_ms);
    }
    return r.n;
}
