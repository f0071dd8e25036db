/*
 * get.c — `kectl get KIND [NAME...] [-o wide|json|yaml|name] [-l SEL]
 * [--field-selector SEL] [--chunk-size N] [-w]`: EdgeController.List (page
 * by page, every page gathered before printing, so the output is that of
 * one list) or Get, printed as kubectl prints them (print.c), then with -w EdgeController.Watch from the
 * list's resource version, one row per event, until Ctrl-C.
 *
 * The watch's threads: the event callbacks run on the rpc loop's thread
 * and print from there; the main thread only waits on a self-pipe, which
 * the loop's on_close and the SIGINT/SIGTERM handler write to. On a
 * signal the main thread cancels the call and waits for its on_close.
 */
#include "kectl.h"

#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { OPT_FIELD_SELECTOR = KECTL_OPT_VERB, OPT_NO_HEADERS, OPT_WATCH_ONLY, OPT_CHUNK_SIZE };

#define SELECTOR_MAX 1024

typedef struct get_opts {
    kectl_output out;
    const char *labels;
    const char *fields;
    int watch;      /* -w: list, then watch */
    int watch_only; /* --watch-only: watch without listing first */
    int no_headers;
    uint32_t chunk; /* --chunk-size; 0: KECTL_CHUNK_DEFAULT */
} get_opts;

void kectl_help_get(FILE *out)
{
    fputs("Display one or many objects.\n"
          "\n"
          "Usage:\n"
          "  kectl get KIND [NAME...] [flags]\n"
          "  kectl get KIND/NAME [KIND/NAME...] [flags]\n"
          "\n"
          "KIND: pods (pod, po), configmaps (configmap, cm), secrets (secret), nodes (node,\n"
          "no), devices (device), devicemodels (devicemodel).\n"
          "\n"
          "Columns:\n"
          "  pods          NAME READY STATUS RESTARTS AGE (wide: IP NODE)\n"
          "  nodes         NAME STATUS ROLES AGE VERSION (wide: INTERNAL-IP EXTERNAL-IP\n"
          "                OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME)\n"
          "  configmaps    NAME DATA AGE\n"
          "  secrets       NAME TYPE DATA AGE\n"
          "  devices       NAME MODEL NODE STATE AGE\n"
          "  devicemodels  NAME PROPERTIES AGE\n"
          "With -A a NAMESPACE column comes first.\n"
          "\n"
          "Flags:\n"
          "  -o, --output FORMAT       wide, json, yaml or name; a list prints as\n"
          "                            {\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[...]}\n"
          "  -l, --selector SELECTOR   label selector: app=web,tier!=db\n"
          "      --field-selector SEL  field selector: spec.nodeName=edge-1\n"
          "  -w, --watch               after listing, print a row per change until Ctrl-C\n"
          "      --watch-only          print changes only, without listing first\n"
          "      --no-headers          do not print the header row\n"
          "      --chunk-size N        list N objects per request, following the server's\n"
          "                            continue tokens until all are printed (default 500,\n"
          "                            at most 5000)\n"
          "\n"
          "Examples:\n"
          "  kectl get pods -o wide\n"
          "  kectl get po web -o yaml\n"
          "  kectl get devices -A -l site=plant-3\n"
          "  kectl get pods -w --field-selector spec.nodeName=edge-1\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int get_opt(void *ud, int c, const char *arg)
{
    get_opts *o = ud;
    switch (c) {
    case 'o':
        if (kectl_output_parse(arg, &o->out) != 0)
            return kectl_usage_error("get", "-o wants wide, json, yaml or name, not \"%s\"", arg);
        return 0;
    case 'l':
        if (strlen(arg) >= SELECTOR_MAX)
            return kectl_usage_error("get", "-l is longer than %d bytes", SELECTOR_MAX);
        o->labels = arg;
        return 0;
    case OPT_FIELD_SELECTOR:
        if (strlen(arg) >= SELECTOR_MAX)
            return kectl_usage_error("get", "--field-selector is longer than %d bytes",
                                     SELECTOR_MAX);
        o->fields = arg;
        return 0;
    case 'w':
        o->watch = 1;
        return 0;
    case OPT_WATCH_ONLY:
        o->watch = o->watch_only = 1;
        return 0;
    case OPT_NO_HEADERS:
        o->no_headers = 1;
        return 0;
    case OPT_CHUNK_SIZE: {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(arg, &end, 10);
        if (!*arg || *end || errno || arg[0] == '-' || v < 1 || v > KECTL_CHUNK_MAX)
            return kectl_usage_error("get", "--chunk-size wants a number from 1 to %d, not "
                                            "\"%s\"", KECTL_CHUNK_MAX, arg);
        o->chunk = (uint32_t)v;
        return 0;
    }
    }
    return 0;
}

static int is_table(kectl_output o)
{
    return o == KECTL_OUT_TABLE || o == KECTL_OUT_WIDE;
}

/* ---- watch ---- */

typedef struct watch_ctx {
    kectl_table *t;
    const kectl_kind *kind;
    kectl_output out;
    int header_pending; /* table mode and nothing printed yet: headers first */
    int wake;           /* self-pipe write end */
    size_t events;
    ke_rpc_status st;
} watch_ctx;

static void watch_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    watch_ctx *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)msg;
    json_error_t je;
    json_t *obj = json_loadb((const char *)ev->object_json.data, ev->object_json.len, 0, &je);
    if (!json_is_object(obj)) {
        fprintf(stderr, "error: a watch event's object is not JSON: %s\n", je.text);
        json_decref(obj);
        return;
    }
    if (is_table(w->out)) {
        if (w->header_pending) {
            /* the first row and the headers together, aligned to each other */
            kectl_table_add_object(w->t, obj);
            kectl_table_print(w->t, stdout, 0);
            w->header_pending = 0;
        } else {
            kectl_table_print_object(w->t, stdout, obj);
        }
    } else {
        if (w->out == KECTL_OUT_YAML && w->events > 0)
            fputs("---\n", stdout);
        kectl_print_object(stdout, w->kind, obj, w->out);
    }
    w->events++;
    fflush(stdout);
    json_decref(obj);
}

static void watch_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    watch_ctx *w = ud;
    w->st = *st;
    char c = 'c';
    ssize_t n = write(w->wake, &c, 1);
    (void)n;
}

/* watch_once runs one Watch call until it ends or a signal comes.
 * Returns 0 when interrupted, else 1 with w->st holding the end status. */
static int watch_once(kectl *k, const ProtobufCServiceDescriptor *svc, const char *method,
                      const Ke__V1__WatchRequest *req, watch_ctx *w, int rfd)
{
    static const ke_rpc_handler h = {.on_message = watch_message, .on_close = watch_close};
    ke_rpc_stub stub = {k->ch, svc};
    ke_rpc_call_opts co = {.timeout_ms = 0}; /* a watch has no deadline */
    ke_rpc_call *call = NULL;
    int rc = ke_rpc_stub_start(&stub, method, &h, w, &co, &call);
    if (rc != 0) {
        w->st.code = KE_RPC_INTERNAL;
        snprintf(w->st.message, sizeof(w->st.message), "cannot start the watch: %s",
                 ke_strerror(rc));
        return 1;
    }
    ke_rpc_call_send(call, &req->base);
    ke_rpc_call_close_send(call);
    int interrupted = 0;
    for (;;) {
        char c;
        ssize_t n = read(rfd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || c == 'c')
            break;
        if (c == 'i' && !interrupted) {
            interrupted = 1;
            ke_rpc_call_cancel(call); /* on_close follows */
        }
    }
    ke_rpc_call_unref(call);
    return interrupted ? 0 : 1;
}

static int run_watch(kectl *k, const kectl_kind *kind, const char *ns, const char *labels,
                     const char *fields, uint64_t rv, kectl_table *t, kectl_output out,
                     int header_pending)
{
    if (kectl_connect(k) != 0)
        return KECTL_EXIT_ERROR;
    kectl_wake wk;
    if (kectl_wake_open(&wk) != 0)
        return KECTL_EXIT_ERROR;
    int *fds = wk.fds;
    watch_ctx w = {.t = t, .kind = kind, .out = out, .header_pending = header_pending,
                   .wake = fds[1]};

    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = (char *)kind->kind;
    req.namespace_ = (char *)ns;
    req.label_selector = (char *)(labels ? labels : "");
    req.field_selector = (char *)(fields ? fields : "");
    req.resource_version = rv;
    int ended = watch_once(k, &ke__v1__edge_controller__descriptor, "Watch", &req, &w, fds[0]);
    if (ended && w.events == 0 && kectl_kind_is_device(kind) &&
        (w.st.code == KE_RPC_UNIMPLEMENTED || w.st.code == KE_RPC_INVALID_ARGUMENT)) {
        /* as in client.c: DeviceController also serves devices */
        ended = watch_once(k, &ke__v1__device_controller__descriptor, "WatchDevices", &req, &w,
                           fds[0]);
    }

    kectl_wake_close(&wk);
    if (!ended || w.st.code == KE_RPC_OK)
        return KECTL_EXIT_OK;
    if (w.st.code == KE_RPC_OUT_OF_RANGE) {
        fprintf(stderr, "error: the watch started at resource version %llu, which the server no "
                        "longer has (%s); run kectl get -w again\n",
                (unsigned long long)rv, w.st.message);
        return KECTL_EXIT_ERROR;
    }
    kectl_report(k, &w.st, "", NULL, NULL);
    return KECTL_EXIT_ERROR;
}

/* ---- get ---- */

static void no_resources(const kectl *k, const kectl_kind *kind)
{
    if (kind->namespaced && !k->all_ns)
        fprintf(stderr, "No resources found in %s namespace.\n", k->ns);
    else
        fprintf(stderr, "No resources found\n");
}

/* get_named prints the named objects of one kind (targets t[0..n)).
 * Objects that cannot be fetched are reported; returns the exit code. */
static int get_named(kectl *k, const get_opts *o, const kectl_target *t, size_t n, int *printed)
{
    const kectl_kind *kind = t[0].kind;
    int status = KECTL_EXIT_OK;
    json_t *found = json_array();
    if (!found)
        return KECTL_EXIT_ERROR;
    for (size_t i = 0; i < n; i++) {
        json_t *obj = NULL;
        ke_rpc_status st;
        int rc = kectl_fetch(k, kind, kectl_kind_request_ns(k, kind), t[i].name, &obj, &st);
        if (rc != 0) {
            status = KECTL_EXIT_ERROR;
            if (!k->ch)
                break;
            continue;
        }
        if (st.code != KE_RPC_OK) {
            kectl_report(k, &st, "", kind, t[i].name);
            status = KECTL_EXIT_ERROR;
            if (kectl_unreachable(&st))
                break;
            continue;
        }
        json_array_append_new(found, obj);
    }
    if (json_array_size(found) > 0) {
        if (is_table(o->out)) {
            kectl_table tb;
            kectl_table_init_kind(&tb, kind, o->out == KECTL_OUT_WIDE, k->all_ns);
            size_t i;
            json_t *obj;
            json_array_foreach(found, i, obj) kectl_table_add_object(&tb, obj);
            if (*printed)
                putchar('\n');
            kectl_table_print(&tb, stdout, o->no_headers);
            kectl_table_free(&tb);
        } else if (n == 1) {
            kectl_print_object(stdout, kind, json_array_get(found, 0), o->out);
        } else {
            kectl_print_list(stdout, kind, found, o->out);
        }
        *printed = 1;
    }
    json_decref(found);
    return status;
}

int kectl_cmd_get(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"selector", required_argument, NULL, 'l'},
        {"field-selector", required_argument, NULL, OPT_FIELD_SELECTOR},
        {"watch", no_argument, NULL, 'w'},
        {"watch-only", no_argument, NULL, OPT_WATCH_ONLY},
        {"no-headers", no_argument, NULL, OPT_NO_HEADERS},
        {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"get", opts, "o:l:w", get_opt, kectl_help_get};
    get_opts o = {.out = KECTL_OUT_TABLE};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    k->chunk = o.chunk;
    const kectl_kind *kind;
    kectl_target t[KECTL_MAX_ARGS];
    size_t n_t;
    if ((rc = kectl_targets("get", pos, n_pos, &kind, t, &n_t)) != 0)
        return rc;
    if (n_t > 0 && o.labels)
        return kectl_usage_error("get", "name cannot be provided when a selector is specified");
    if (n_t > 0 && k->all_ns)
        return kectl_usage_error("get", "a resource cannot be retrieved by name across all "
                                        "namespaces");
    char fields[SELECTOR_MAX + KECTL_NAME_MAX + 32];
    snprintf(fields, sizeof(fields), "%s", o.fields ? o.fields : "");
    if (o.watch && n_t > 0) {
        if (n_t > 1)
            return kectl_usage_error("get", "watch is only supported on individual resources "
                                            "and resource collections, but %zu resources were "
                                            "found",
                                     n_t);
        /* like kubectl: one object is listed and watched through a field
         * selector on its name, which gives the list's resource version */
        snprintf(fields, sizeof(fields), "%s%smetadata.name=%s", o.fields ? o.fields : "",
                 o.fields ? "," : "", t[0].name);
        n_t = 0;
    }
    const char *ns = kectl_kind_request_ns(k, kind);
    int ns_col = k->all_ns && kind->namespaced;
    int status = KECTL_EXIT_OK;

    if (n_t > 0) {
        /* named objects, grouped by kind in order of first appearance */
        int printed = 0, done[KECTL_MAX_ARGS] = {0};
        for (size_t i = 0; i < n_t; i++) {
            if (done[i])
                continue;
            kectl_target group[KECTL_MAX_ARGS];
            size_t ng = 1;
            group[0] = t[i];
            done[i] = 1;
            for (size_t j = i + 1; j < n_t; j++) {
                if (!done[j] && t[j].kind == t[i].kind) {
                    group[ng++] = t[j];
                    done[j] = 1;
                }
            }
            if (get_named(k, &o, group, ng, &printed) != 0)
                status = KECTL_EXIT_ERROR;
            if (!k->ch)
                break;
        }
        return status;
    }

    kectl_table tb;
    kectl_table_init_kind(&tb, kind, o.out == KECTL_OUT_WIDE, ns_col);
    uint64_t rv = 0;
    int header_pending = is_table(o.out) && !o.no_headers;
    if (!o.watch_only) {
        json_t *items = NULL;
        ke_rpc_status st;
        rc = kectl_list(k, kind, ns, o.labels, fields, &items, &rv, &st);
        if (rc != 0 || st.code != KE_RPC_OK) {
            if (rc == 0)
                kectl_report(k, &st, "", NULL, NULL);
            kectl_table_free(&tb);
            return KECTL_EXIT_ERROR;
        }
        if (!is_table(o.out)) {
            if (o.watch) { /* -w -o json: one object after the other, as kubectl */
                size_t i;
                json_t *obj;
                json_array_foreach(items, i, obj) {
                    if (o.out == KECTL_OUT_YAML && i > 0)
                        fputs("---\n", stdout);
                    kectl_print_object(stdout, kind, obj, o.out);
                }
            } else {
                kectl_print_list(stdout, kind, items, o.out);
            }
        } else if (json_array_size(items) == 0) {
            if (!o.watch)
                no_resources(k, kind);
        } else {
            size_t i;
            json_t *obj;
            json_array_foreach(items, i, obj) kectl_table_add_object(&tb, obj);
            kectl_table_print(&tb, stdout, o.no_headers);
            header_pending = 0;
        }
        json_decref(items);
        fflush(stdout);
    }
    if (o.watch)
        status = run_watch(k, kind, ns, o.labels, fields, rv, &tb, o.out, header_pending);
    kectl_table_free(&tb);
    return status;
}
