/*
 * describe.c — `kectl describe KIND [NAME...]`: a readable multi-line view
 * of objects, in kubectl's layout ("Name:         web", sections with
 * indented tables). One function per kind; a device's twins come from
 * DeviceController.GetTwin. Without NAME every object of the kind (in -n's
 * namespace, or all with -A) is described, separated by blank lines.
 */
#include "kectl.h"

#include "ke_err.h"

#include <stdlib.h>
#include <string.h>

#define LABEL_WIDTH 14 /* "Annotations:  " */

typedef struct describe_opts {
    const char *labels;
} describe_opts;

void kectl_help_describe(FILE *out)
{
    fputs("Show details of objects: names, labels and annotations, node, status, the\n"
          "conditions table, containers; for a device its model, node, state and twins.\n"
          "\n"
          "Usage:\n"
          "  kectl describe KIND [NAME...] [flags]\n"
          "  kectl describe KIND/NAME [KIND/NAME...] [flags]\n"
          "\n"
          "Without NAME, every object of KIND in the namespace (with -A, everywhere).\n"
          "\n"
          "Flags:\n"
          "  -l, --selector SELECTOR   without NAME: only objects with these labels\n"
          "\n"
          "Examples:\n"
          "  kectl describe pod web\n"
          "  kectl describe node edge-1\n"
          "  kectl describe device thermometer -n plant-3\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int describe_opt(void *ud, int c, const char *arg)
{
    describe_opts *o = ud;
    if (c == 'l')
        o->labels = arg;
    return 0;
}

/* field prints "Label:        value" at the given indentation. */
static void field(int indent, const char *label, const char *value)
{
    char l[64];
    snprintf(l, sizeof(l), "%s:", label);
    int w = LABEL_WIDTH - indent;
    printf("%*s%-*s%s%s\n", indent, "", w > 0 ? w : 0, l,
           (int)strlen(l) >= w ? " " : "", value && value[0] ? value : "<none>");
}

/* map_field prints a labels-like map, one "k=v" per line, aligned. */
static void map_field(const char *label, const json_t *map, const char *sep)
{
    size_t n = json_is_object(map) ? json_object_size(map) : 0;
    if (n == 0) {
        field(0, label, NULL);
        return;
    }
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return;
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v) keys[i++] = k;
    for (size_t a = 1; a < n; a++) /* insertion sort: maps are small */
        for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *t = keys[b];
            keys[b] = keys[b - 1];
            keys[b - 1] = t;
        }
    for (i = 0; i < n; i++) {
        const char *val = json_string_value(json_object_get(map, keys[i]));
        char line[KECTL_CELL_MAX * 2];
        snprintf(line, sizeof(line), "%s%s%s", keys[i], sep, val ? val : "");
        if (i == 0)
            field(0, label, line);
        else
            printf("%*s%s\n", LABEL_WIDTH, "", line);
    }
    free(keys);
}

static void common_header(const json_t *o, const kectl_kind *kind)
{
    field(0, "Name", kectl_jstr(o, "metadata.name"));
    if (kind->namespaced)
        field(0, "Namespace", kectl_jstr(o, "metadata.namespace"));
}

static void common_meta(const json_t *o)
{
    map_field("Labels", kectl_jget(o, "metadata.labels"), "=");
    map_field("Annotations", kectl_jget(o, "metadata.annotations"), ": ");
}

/* conditions prints status.conditions as an indented table of the given
 * columns (JSON field names, headers in capitals as kubectl has them). */
static void conditions(const json_t *o, const char *const *cols, const char *const *heads,
                       size_t n)
{
    json_t *conds = kectl_jget(o, "status.conditions");
    if (!json_is_array(conds) || json_array_size(conds) == 0) {
        field(0, "Conditions", NULL);
        return;
    }
    printf("Conditions:\n");
    kectl_table t;
    if (kectl_table_init(&t, heads, n) != 0)
        return;
    t.indent = "  ";
    size_t i;
    json_t *c;
    json_array_foreach(conds, i, c) {
        kectl_row r = {.n = 0};
        for (size_t j = 0; j < n; j++) {
            const char *v = kectl_jstr(c, cols[j]);
            kectl_row_add(&r, "%s", v ? v : "");
        }
        kectl_table_add_row(&t, &r);
    }
    kectl_table_print(&t, stdout, 0);
    kectl_table_free(&t);
}

static void container_state(const json_t *cs)
{
    json_t *state = json_object_get(cs, "state");
    const char *k;
    json_t *v;
    if (!json_is_object(state) || json_object_size(state) == 0) {
        field(4, "State", "Waiting");
        return;
    }
    json_object_foreach(state, k, v) {
        char name[32];
        snprintf(name, sizeof(name), "%c%s", k[0] >= 'a' && k[0] <= 'z' ? k[0] - 32 : k[0], k + 1);
        field(4, "State", name);
        const char *reason = kectl_jstr(v, "reason");
        if (reason)
            field(6, "Reason", reason);
        const char *started = kectl_jstr(v, "startedAt");
        if (started)
            field(6, "Started", started);
        json_t *code = json_object_get(v, "exitCode");
        if (json_is_integer(code)) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(code));
            field(6, "Exit Code", buf);
        }
        break;
    }
}

static json_t *status_of_container(const json_t *o, const char *name)
{
    json_t *all = kectl_jget(o, "status.containerStatuses"), *cs;
    size_t i;
    json_array_foreach(all, i, cs) {
        const char *n = kectl_jstr(cs, "name");
        if (n && name && strcmp(n, name) == 0)
            return cs;
    }
    return NULL;
}

static void describe_pod(const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    const char *node = kectl_jstr(o, "spec.nodeName");
    const char *host_ip = kectl_jstr(o, "status.hostIP");
    char buf[KECTL_CELL_MAX];
    snprintf(buf, sizeof(buf), "%s%s%s", node ? node : "<none>", host_ip ? "/" : "",
             host_ip ? host_ip : "");
    field(0, "Node", buf);
    field(0, "Start Time", kectl_jstr(o, "status.startTime"));
    common_meta(o);
    kectl_table t;
    if (kectl_table_init_kind(&t, kind, 0, 0) == 0) {
        kectl_table_add_object(&t, o);
        /* STATUS is column 2 of the pods table: the same words as kectl get */
        field(0, "Status", t.nrows > 1 ? t.cells[t.ncols + 2] : NULL);
        kectl_table_free(&t);
    }
    field(0, "IP", kectl_jstr(o, "status.podIP"));
    json_t *containers = kectl_jget(o, "spec.containers"), *c;
    size_t i;
    printf("Containers:\n");
    json_array_foreach(containers, i, c) {
        const char *name = kectl_jstr(c, "name");
        printf("  %s:\n", name ? name : "<unnamed>");
        field(4, "Image", kectl_jstr(c, "image"));
        json_t *ports = json_object_get(c, "ports"), *p;
        size_t j, used = 0;
        buf[0] = '\0';
        json_array_foreach(ports, j, p) {
            const char *proto = kectl_jstr(p, "protocol");
            int w = snprintf(buf + used, sizeof(buf) - used, "%s%" JSON_INTEGER_FORMAT "/%s",
                             used ? ", " : "", json_integer_value(json_object_get(p, "containerPort")),
                             proto ? proto : "TCP");
            if (w < 0 || (size_t)w >= sizeof(buf) - used)
                break;
            used += (size_t)w;
        }
        field(4, "Ports", buf);
        json_t *cmd = json_object_get(c, "command");
        if (json_is_array(cmd) && json_array_size(cmd) > 0) {
            printf("    Command:\n");
            json_t *a;
            json_array_foreach(cmd, j, a) printf("      %s\n", json_string_value(a) ? json_string_value(a) : "");
        }
        json_t *cs = status_of_container(o, name);
        if (cs) {
            container_state(cs);
            field(4, "Ready", json_is_true(json_object_get(cs, "ready")) ? "True" : "False");
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(cs, "restartCount")));
            field(4, "Restart Count", buf);
        } else {
            field(4, "State", "Waiting");
        }
        json_t *env = json_object_get(c, "env"), *e;
        if (json_is_array(env) && json_array_size(env) > 0) {
            printf("    Environment:\n");
            json_array_foreach(env, j, e) {
                const char *v = kectl_jstr(e, "value");
                printf("      %s:  %s\n", kectl_jstr(e, "name") ? kectl_jstr(e, "name") : "",
                       v ? v : "<set from a reference>");
            }
        }
    }
    static const char *const cols[] = {"type", "status"};
    static const char *const heads[] = {"Type", "Status"};
    conditions(o, cols, heads, 2);
}

static void describe_node(const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    kectl_table t;
    if (kectl_table_init_kind(&t, kind, 0, 0) == 0) {
        kectl_table_add_object(&t, o);
        /* ROLES is column 2 of the nodes table */
        field(0, "Roles", t.nrows > 1 ? t.cells[t.ncols + 2] : NULL);
        kectl_table_free(&t);
    }
    common_meta(o);
    field(0, "CreationTimestamp", kectl_jstr(o, "metadata.creationTimestamp"));
    field(0, "Unschedulable",
          json_is_true(kectl_jget(o, "spec.unschedulable")) ? "true" : "false");
    static const char *const cols[] = {"type", "status", "lastHeartbeatTime", "reason",
                                       "message"};
    static const char *const heads[] = {"Type", "Status", "LastHeartbeatTime", "Reason",
                                        "Message"};
    conditions(o, cols, heads, 5);
    json_t *addrs = kectl_jget(o, "status.addresses"), *a;
    size_t i;
    printf("Addresses:\n");
    json_array_foreach(addrs, i, a) {
        const char *type = kectl_jstr(a, "type");
        field(2, type ? type : "?", kectl_jstr(a, "address"));
    }
    json_t *info = kectl_jget(o, "status.nodeInfo");
    if (json_is_object(info)) {
        static const struct {
            const char *key, *label;
        } rows[] = {{"machineID", "Machine ID"},
                    {"systemUUID", "System UUID"},
                    {"bootID", "Boot ID"},
                    {"kernelVersion", "Kernel Version"},
                    {"osImage", "OS Image"},
                    {"operatingSystem", "Operating System"},
                    {"architecture", "Architecture"},
                    {"containerRuntimeVersion", "Container Runtime Version"},
                    {"kubeletVersion", "Kubelet Version"}};
        printf("System Info:\n");
        for (size_t j = 0; j < sizeof(rows) / sizeof(rows[0]); j++) {
            const char *v = kectl_jstr(info, rows[j].key);
            if (v)
                printf("  %-26s%s\n", rows[j].label, v);
        }
    }
}

static void describe_configmap(const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    common_meta(o);
    printf("\nData\n====\n");
    json_t *data = json_object_get(o, "data");
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v) {
        const char *s = json_string_value(v);
        printf("%s:\n----\n%s\n\n", k, s ? s : "");
    }
    json_t *bin = json_object_get(o, "binaryData");
    if (json_is_object(bin) && json_object_size(bin) > 0) {
        printf("\nBinaryData\n====\n");
        json_object_foreach(bin, k, v) {
            size_t n = json_string_length(v);
            printf("%s: %zu bytes\n", k, n / 4 * 3);
        }
    }
}

static void describe_secret(const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    common_meta(o);
    const char *type = kectl_jstr(o, "type");
    printf("\n");
    field(0, "Type", type && type[0] ? type : "Opaque");
    printf("\nData\n====\n");
    json_t *data = json_object_get(o, "data");
    const char *k;
    json_t *v;
    json_object_foreach(data, k, v) {
        /* base64: the decoded length, never the content */
        size_t n = json_string_length(v), pad = 0;
        const char *s = json_string_value(v);
        if (s && n >= 1 && s[n - 1] == '=')
            pad++;
        if (s && n >= 2 && s[n - 2] == '=')
            pad++;
        size_t bytes = n / 4 * 3;
        printf("%s:  %zu bytes\n", k, bytes >= pad ? bytes - pad : 0);
    }
}

static void describe_device(kectl *k, const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    common_meta(o);
    field(0, "Model", kectl_jstr(o, "spec.deviceModelRef.name"));
    field(0, "Node", kectl_jstr(o, "spec.nodeName"));
    const char *state = kectl_jstr(o, "status.state");
    field(0, "State", state && state[0] ? state : "Unknown");
    const char *last = kectl_jstr(o, "status.lastOnlineTime");
    if (last)
        field(0, "Last Online", last);
    const char *proto = NULL;
    json_t *p = kectl_jget(o, "spec.protocol");
    if (json_is_object(p))
        proto = kectl_jstr(p, "protocolName");
    if (proto)
        field(0, "Protocol", proto);
    const char *ns = kectl_jstr(o, "metadata.namespace");
    const char *name = kectl_jstr(o, "metadata.name");
    Ke__V1__TwinReply *r = NULL;
    ke_rpc_status st;
    if (kectl_twin_fetch(k, ns ? ns : k->ns, name ? name : "", &r, &st) != 0)
        return;
    if (st.code != KE_RPC_OK) {
        char why[320];
        snprintf(why, sizeof(why), "<unavailable: %s%s%s>", ke_rpc_status_name(st.code),
                 st.message[0] ? ": " : "", st.message);
        field(0, "Twins", why);
        return;
    }
    if (r->n_twins == 0) {
        field(0, "Twins", NULL);
    } else {
        printf("Twins:\n");
        kectl_twin_table(stdout, r, "  ");
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void describe_devicemodel(const json_t *o, const kectl_kind *kind)
{
    common_header(o, kind);
    common_meta(o);
    const char *proto = kectl_jstr(o, "spec.protocol");
    if (proto)
        field(0, "Protocol", proto);
    json_t *props = kectl_jget(o, "spec.properties"), *p;
    if (!json_is_array(props) || json_array_size(props) == 0) {
        field(0, "Properties", NULL);
        return;
    }
    printf("Properties:\n");
    static const char *const heads[] = {"NAME", "TYPE", "ACCESS MODE", "UNIT", "DESCRIPTION"};
    static const char *const keys[] = {"name", "type", "accessMode", "unit", "description"};
    kectl_table t;
    if (kectl_table_init(&t, heads, 5) != 0)
        return;
    t.indent = "  ";
    size_t i;
    json_array_foreach(props, i, p) {
        kectl_row r = {.n = 0};
        for (size_t j = 0; j < 5; j++) {
            const char *v = kectl_jstr(p, keys[j]);
            kectl_row_add(&r, "%s", v && v[0] ? v : "-");
        }
        kectl_table_add_row(&t, &r);
    }
    kectl_table_print(&t, stdout, 0);
    kectl_table_free(&t);
}

static void describe_one(kectl *k, const kectl_kind *kind, const json_t *o)
{
    if (strcmp(kind->kind, "Pod") == 0)
        describe_pod(o, kind);
    else if (strcmp(kind->kind, "Node") == 0)
        describe_node(o, kind);
    else if (strcmp(kind->kind, "ConfigMap") == 0)
        describe_configmap(o, kind);
    else if (strcmp(kind->kind, "Secret") == 0)
        describe_secret(o, kind);
    else if (strcmp(kind->kind, "Device") == 0)
        describe_device(k, o, kind);
    else if (strcmp(kind->kind, "DeviceModel") == 0)
        describe_devicemodel(o, kind);
    fflush(stdout);
}

int kectl_cmd_describe(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"selector", required_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"describe", opts, "l:", describe_opt,
                                       kectl_help_describe};
    describe_opts o = {.labels = NULL};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    const kectl_kind *kind;
    kectl_target t[KECTL_MAX_ARGS];
    size_t n_t;
    if ((rc = kectl_targets("describe", pos, n_pos, &kind, t, &n_t)) != 0)
        return rc;
    if (n_t > 0 && o.labels)
        return kectl_usage_error("describe", "name cannot be provided when a selector is "
                                             "specified");
    int status = KECTL_EXIT_OK;
    ke_rpc_status st;
    if (n_t == 0) {
        json_t *items = NULL;
        uint64_t rv;
        rc = kectl_list(k, kind, kectl_kind_request_ns(k, kind), o.labels, NULL, &items, &rv, &st);
        if (rc != 0 || st.code != KE_RPC_OK) {
            if (rc == 0)
                kectl_report(k, &st, "", NULL, NULL);
            return KECTL_EXIT_ERROR;
        }
        if (json_array_size(items) == 0) {
            if (kind->namespaced && !k->all_ns)
                fprintf(stderr, "No resources found in %s namespace.\n", k->ns);
            else
                fprintf(stderr, "No resources found\n");
        }
        size_t i;
        json_t *obj;
        json_array_foreach(items, i, obj) {
            if (i > 0)
                printf("\n\n");
            describe_one(k, kind, obj);
        }
        json_decref(items);
        return status;
    }
    for (size_t i = 0; i < n_t; i++) {
        json_t *obj = NULL;
        const char *ns = t[i].kind->namespaced ? k->ns : "";
        if (kectl_fetch(k, t[i].kind, ns, t[i].name, &obj, &st) != 0) {
            status = KECTL_EXIT_ERROR;
            if (!k->ch)
                break;
            continue;
        }
        if (st.code != KE_RPC_OK) {
            kectl_report(k, &st, "", t[i].kind, t[i].name);
            status = KECTL_EXIT_ERROR;
            if (kectl_unreachable(&st))
                break;
            continue;
        }
        if (i > 0)
            printf("\n\n");
        describe_one(k, t[i].kind, obj);
        json_decref(obj);
    }
    return status;
}
