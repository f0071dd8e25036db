/*
 * kectl.h — what kectl's files share: the invocation context (global
 * flags, the lazily opened channel), the kind table, the calls to the
 * cloud services with kubectl-style error reports, tables and output
 * formats, and one entry point per verb.
 *
 * Map of the files:
 *   main.c      global flags, verb dispatch, help, version, ping
 *   cli.c       flag parsing shared by every verb (verb flags + global flags)
 *   kinds.c     the kinds kectl knows: names, short forms, scope
 *   client.c    channel, unary calls, error reports, Get/List of objects
 *   manifest.c  -f FILE|DIR|-: read, convert, check, default namespaces
 *   yamljson.c  YAML/JSON to jansson and back (kectl_yaml.h)
 *   print.c     tables, ages, -o json|yaml|name
 *   get.c       get and get -w; apply.c, delete.c, describe.c, twin.c
 *   logs.c      logs (a pod's container log, streamed from its edge node)
 *
 * Errors inside are negative KE_E* codes; what the user sees is printed
 * once, where the verb decides, and verbs return the exit code:
 * 0 success, 1 error, 2 bad usage.
 */
#ifndef KECTL_H
#define KECTL_H

#include "devicecontroller.pb-c.h"
#include "ke_k8s.h"
#include "ke_rpc.h"

#include <getopt.h>
#include <signal.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#define KECTL_VERSION "0.2.0"

#define KECTL_EXIT_OK 0
#define KECTL_EXIT_ERROR 1
#define KECTL_EXIT_USAGE 2
/* kectl_parse's answer when it printed --help: the verb returns 0 */
#define KECTL_HELP_SHOWN (-1)

#define KECTL_MAX_ARGS 64      /* positional arguments of one verb */
#define KECTL_MAX_FILES 32     /* -f flags of one verb */
#define KECTL_MAX_OPTS 40      /* entries of one verb's option table, globals included */
#define KECTL_NAME_MAX 253     /* object and namespace names (DNS subdomain) */
#define KECTL_DEFAULT_TIMEOUT_MS 10000
/* Lists come page by page (limit/continue): objects asked per page by
 * default (get --chunk-size), the largest page the server serves, the
 * objects one kectl_list gathers at most, and how many times a list whose
 * continue token expired (OUT_OF_RANGE) is started again. */
#define KECTL_CHUNK_DEFAULT 500
#define KECTL_CHUNK_MAX 5000
#define KECTL_LIST_MAX_ITEMS 1000000
#define KECTL_LIST_RESTARTS 3
#define KECTL_CONTINUE_MAX 1024 /* a continue token, its NUL included */

/* Global option codes (short ones are their letters). */
enum {
    KECTL_OPT_SERVER = 0x100,
    KECTL_OPT_CA,
    KECTL_OPT_CERT,
    KECTL_OPT_KEY,
    KECTL_OPT_TIMEOUT,
    KECTL_OPT_KUBECONFIG,
    KECTL_OPT_VERB = 0x200, /* verbs number their long-only options from here */
};

/* kectl: one invocation. The channel opens on the first call, so that
 * everything that can be checked locally is checked before connecting. */
typedef struct kectl {
    const char *server;
    int server_flag;        /* --server was given (wins over --kubeconfig) */
    const char *kubeconfig; /* --kubeconfig, else $KECTL_KUBECONFIG; NULL: none */
    json_t *kcfg;           /* the parsed kubeconfig (owns strings server may borrow) */
    char kcfg_paths[3][PATH_MAX]; /* its CA, certificate and key, resolved */
    ke_rpc_tls tls;
    int use_tls;
    int64_t timeout_ms;
    const char *ns;  /* -n, "default" unless given */
    int ns_explicit; /* -n was given */
    int all_ns;      /* -A */
    uint32_t chunk;  /* objects per List page; 0: KECTL_CHUNK_DEFAULT */
    ke_rpc_loop *loop;
    ke_rpc_channel *ch;
} kectl;

/* ---- cli.c ---- */

/* kectl_global_flag applies global flag `c` (with arg). Returns 1 when c
 * is a global flag and was applied, 0 when it is not a global flag, 2
 * after printing an error for a bad value. */
int kectl_global_flag(kectl *k, int c, const char *arg);

/* The global long options, for main's own parse (ends with a zero entry). */
extern const struct option kectl_global_options[];

/* kectl_global_help prints the global flags' help. */
void kectl_global_help(FILE *out);

/* kectl_opt_fn: a verb's handler for one of its own flags; returns 0, or
 * 2 after printing a usage error. */
typedef int (*kectl_opt_fn)(void *ud, int c, const char *arg);

/* kectl_verb_def: how a verb parses: its own options (a verb flag wins
 * over a global one with the same letter, as ping's -n does) and help. */
typedef struct kectl_verb_def {
    const char *name;
    const struct option *opts; /* zero-terminated, or NULL */
    const char *shortopts;     /* getopt letters of the verb's own flags, or "" */
    kectl_opt_fn on_opt;
    void (*help)(FILE *out);
} kectl_verb_def;

/* kectl_parse parses argv (argv[0] is the verb) for verb `d`: verb flags
 * go to d->on_opt(ud, ...), global flags to k, positional arguments to
 * pos (at most KECTL_MAX_ARGS; argv's strings are borrowed). Flags may
 * come before or after positional arguments; "--" ends the flags.
 * Returns 0, KECTL_HELP_SHOWN after printing the help for -h/--help, or
 * 2 after printing a usage error. */
int kectl_parse(kectl *k, const kectl_verb_def *d, void *ud, int argc, char **argv,
                const char **pos, size_t *n_pos);

/* kectl_usage_error prints "error: MESSAGE" and the "See 'kectl VERB
 * --help'" line; returns 2. */
int kectl_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- kinds.c ---- */

/* kectl_kind: one kind of object kectl knows: an entry of the one kind
 * table, lib/k8s's (kind, plural, singular, short name, apiVersion,
 * scope), the table the servers resolve kind names with too. */
typedef ke_k8s_kind kectl_kind;

/* kectl_kind_is_device: Device, which DeviceController serves too and
 * which has twins. */
int kectl_kind_is_device(const kectl_kind *kind);

/* kectl_kind_lookup finds a kind by a kubectl resource name: plural,
 * singular, short form or kind, any case, optionally followed by ".GROUP".
 * Returns NULL when unknown. */
const kectl_kind *kectl_kind_lookup(const char *resource);

/* kectl_kind_of finds a kind by its JSON kind ("Pod"). NULL when unknown. */
const kectl_kind *kectl_kind_of(const char *kind);

/* kectl_kind_api_matches tells whether apiVersion belongs to the kind's
 * API group (any version of the group). */
int kectl_kind_api_matches(const kectl_kind *kind, const char *api_version);

/* kectl_kind_request_ns is the namespace to put in a request: "" for
 * cluster-scoped kinds and for -A lists, else -n's. */
const char *kectl_kind_request_ns(const kectl *k, const kectl_kind *kind);

/* ---- cli.c, on kinds ---- */

/* kectl_target: one object named on the command line. */
typedef struct kectl_target {
    const kectl_kind *kind;
    const char *name; /* borrowed from argv */
} kectl_target;

/* kectl_targets reads a verb's "KIND [NAME...]" or "KIND/NAME..."
 * arguments (at least one). On 0, *kind is the kind of the first argument
 * and targets[0..*n_targets) the named objects (none for a bare KIND).
 * Returns 1 after printing `error: the server doesn't have a resource
 * type "foo"` (checked here, before connecting), 2 after a usage error. */
int kectl_targets(const char *verb, const char *const *pos, size_t n_pos, const kectl_kind **kind,
                  kectl_target *targets, size_t *n_targets);

/* ---- client.c ---- */

/* kectl_kubeconfig_apply reads k->kubeconfig (once) and fills what no
 * flag set: server, CA, client certificate and key (kubeconfig.c). Returns
 * 0 (also without a kubeconfig), or an error after printing it. */
int kectl_kubeconfig_apply(kectl *k);

/* kectl_connect opens the channel if not yet open. Returns 0, or a
 * negative KE_E* code after printing the error. */
int kectl_connect(kectl *k);

/* kectl_disconnect frees the channel and the loop. */
void kectl_disconnect(kectl *k);

/* kectl_call calls unary method `method` of service `svc`. Returns 0 when
 * a status came back (whatever its code; on OK *reply is set and the
 * caller frees it with protobuf_c_message_free_unpacked), or a negative
 * KE_E* code after printing the error. */
int kectl_call(kectl *k, const ProtobufCServiceDescriptor *svc, const char *method,
               const ProtobufCMessage *req, ProtobufCMessage **reply, ke_rpc_status *st);

/* kectl_unreachable tells whether st means the server was not reached, so
 * that further calls are pointless. */
int kectl_unreachable(const ke_rpc_status *st);

/* kectl_wake: what a streaming command's main thread waits on. The rpc
 * callbacks write to fds[1] (a byte of their choosing); SIGINT and SIGTERM
 * write 'i' there while it is open, instead of killing kectl. */
typedef struct kectl_wake {
    int fds[2];
    struct sigaction old_int, old_term;
} kectl_wake;

/* kectl_wake_open makes the pipe and takes SIGINT/SIGTERM. Returns 0, or
 * -1 after saying why on stderr. One at a time. */
int kectl_wake_open(kectl_wake *w);

/* kectl_wake_close gives the signals back and closes the pipe. */
void kectl_wake_close(kectl_wake *w);

/* kectl_reason maps a gRPC status code to the Kubernetes reason kubectl
 * shows in "Error from server (Reason)": NotFound, AlreadyExists, ... */
const char *kectl_reason(int code);

/* kectl_report prints a failed status. A server that was not reached gets
 * "error: unable to connect to the server ..."; NOT_FOUND about kind/name
 * (both non-NULL) gets `Error from server (NotFound): CONTEXTpods "web" not
 * found`; anything else `Error from server (Reason): CONTEXTmessage`.
 * context ("error when applying \"x.yaml\": ") may be "". */
void kectl_report(const kectl *k, const ke_rpc_status *st, const char *context,
                  const kectl_kind *kind, const char *name);

/* kectl_fetch gets one object. Returns 0 when a status came back: on OK
 * *obj is the object (caller decrefs). Returns a negative KE_E* code after
 * printing the error (unreachable channel, a reply that is not JSON). */
int kectl_fetch(kectl *k, const kectl_kind *kind, const char *ns, const char *name, json_t **obj,
                ke_rpc_status *st);

/* kectl_list lists objects of a kind, following continue tokens page by
 * page (k->chunk objects per page) until the last, so that *items holds
 * the whole list, read at one resource version. A list whose token expires
 * midway is started again (at most KECTL_LIST_RESTARTS times). Returns as
 * kectl_fetch (st: the failing page's status); on OK *items is a new JSON
 * array and *rv the list's resource version. More than
 * KECTL_LIST_MAX_ITEMS objects, or a server that hands back the token it
 * was given, is an error (KE_EFULL, KE_EPROTO; printed). */
int kectl_list(kectl *k, const kectl_kind *kind, const char *ns, const char *labels,
               const char *fields, json_t **items, uint64_t *rv, ke_rpc_status *st);

/* ---- print.c ---- */

typedef enum {
    KECTL_OUT_TABLE = 0,
    KECTL_OUT_WIDE,
    KECTL_OUT_JSON,
    KECTL_OUT_YAML,
    KECTL_OUT_NAME,
} kectl_output;

/* kectl_output_parse reads -o's value; returns 0 or KE_EINVAL. */
int kectl_output_parse(const char *s, kectl_output *out);

#define KECTL_TABLE_MAX_COLS 12
#define KECTL_CELL_MAX 256 /* longer cells are cut */
#define KECTL_TABLE_MAX_ROWS 1000000

/* kectl_row: the cells of one table row, before they go into a table. */
typedef struct kectl_row {
    char cell[KECTL_TABLE_MAX_COLS][KECTL_CELL_MAX];
    size_t n;
} kectl_row;

/* kectl_row_add appends a printf-formatted cell (ignored past the bound). */
void kectl_row_add(kectl_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* kectl_table: rows of cells printed like kubectl's (tabwriter: 3 spaces
 * of padding, columns at least 6 wide, widths that only grow so that rows
 * printed later, by get -w, stay aligned). Row 0 holds the headers. */
typedef struct kectl_table {
    const kectl_kind *kind; /* NULL for tables that are not about objects */
    int wide, ns_col;
    const char *indent; /* printed before every row ("" by default) */
    size_t ncols;
    size_t width[KECTL_TABLE_MAX_COLS];
    char **cells; /* nrows * ncols malloc'd strings */
    size_t nrows, cap_rows;
} kectl_table;

/* kectl_table_init starts a table with the given headers (copied). */
int kectl_table_init(kectl_table *t, const char *const *headers, size_t ncols);

/* kectl_table_init_kind starts the table of a kind: its headers, wide
 * columns with `wide`, a NAMESPACE column first with `ns_col`. */
int kectl_table_init_kind(kectl_table *t, const kectl_kind *kind, int wide, int ns_col);

/* kectl_table_add_row appends a row (copied). */
int kectl_table_add_row(kectl_table *t, const kectl_row *r);

/* kectl_table_add_object appends the row of an object of the table's kind. */
int kectl_table_add_object(kectl_table *t, const json_t *obj);

/* kectl_table_print prints the rows (the header row too unless
 * no_headers) and widens the columns to fit them. */
void kectl_table_print(kectl_table *t, FILE *out, int no_headers);

/* kectl_table_print_object prints one object's row with the table's
 * widths (growing them if needed), without storing it: for get -w. */
void kectl_table_print_object(kectl_table *t, FILE *out, const json_t *obj);

/* kectl_table_free frees the cells; the table can be initialised again. */
void kectl_table_free(kectl_table *t);

/* kectl_print_object prints one object as -o json, yaml or name wants. */
int kectl_print_object(FILE *out, const kectl_kind *kind, const json_t *obj, kectl_output o);

/* kectl_print_list prints objects as -o json or yaml wants: a kind: List
 * with the items; for -o name one line per object. */
int kectl_print_list(FILE *out, const kectl_kind *kind, const json_t *items, kectl_output o);

/* kectl_jget follows a dotted path ("metadata.name") through objects;
 * returns the borrowed value or NULL. */
json_t *kectl_jget(const json_t *obj, const char *path);

/* kectl_jstr is kectl_jget for strings: the string, or NULL when absent or
 * not a string. */
const char *kectl_jstr(const json_t *obj, const char *path);

/* kectl_parse_time reads an RFC 3339 time ("2024-05-01T10:00:00Z",
 * fractions and offsets allowed) into seconds since the epoch. Returns 0
 * or KE_EINVAL. */
int kectl_parse_time(const char *s, int64_t *out);

/* kectl_human_duration writes a duration the way kubectl's AGE does:
 * 45s, 5m3s, 12m, 3h4m, 9h, 2d3h, 12d, 2y30d. */
void kectl_human_duration(char *buf, size_t len, int64_t seconds);

/* kectl_age writes the age of an RFC 3339 time, "<unknown>" when it is
 * missing or unreadable. */
void kectl_age(char *buf, size_t len, const char *timestamp);

/* kectl_age_ms is kectl_age for a time in ms since the epoch, "<never>"
 * when it is 0. */
void kectl_age_ms(char *buf, size_t len, int64_t ms);

/* kectl_join_map writes "k=v,k2=v2" (sorted) of a labels-like object into
 * buf, "<none>" when empty. */
void kectl_join_map(char *buf, size_t len, const json_t *map, const char *sep);

/* ---- manifest.c ---- */

/* kectl_manifest_obj: one object read from -f, with where it came from. */
typedef struct kectl_manifest_obj {
    char *source; /* the file, as named on the command line or found in a folder; "STDIN" */
    json_t *obj;
    const kectl_kind *kind;
} kectl_manifest_obj;

typedef struct kectl_manifest {
    kectl_manifest_obj *v;
    size_t n, cap;
} kectl_manifest;

#define KECTL_FILE_MAX (16u << 20)    /* bytes of one manifest file */
#define KECTL_DIR_MAX_FILES 4096      /* manifest files of one folder */
#define KECTL_MANIFEST_MAX_OBJS 10000 /* objects of one invocation */

/* kectl_manifest_load reads every path (a file, a folder: its *.yaml,
 * *.yml, *.json sorted by name, or "-" for stdin), converts the documents,
 * expands kind: List, checks that each object has apiVersion, kind and
 * metadata.name and a kind kectl knows, and sets metadata.namespace from
 * -n on namespaced objects that lack one. All or nothing: on any error it
 * prints "error: ..." and returns a negative KE_E* code with m empty. No
 * object at all is an error too ("no objects passed to VERB"). */
int kectl_manifest_load(const kectl *k, const char *verb, const char *const *paths,
                        size_t n_paths, kectl_manifest *m);

/* kectl_manifest_free frees the objects; m can be loaded again. */
void kectl_manifest_free(kectl_manifest *m);

/* ---- verbs (each returns the exit code) ---- */

int kectl_cmd_get(kectl *k, int argc, char **argv);
int kectl_cmd_apply(kectl *k, int argc, char **argv);
int kectl_cmd_delete(kectl *k, int argc, char **argv);
int kectl_cmd_describe(kectl *k, int argc, char **argv);
int kectl_cmd_twin(kectl *k, int argc, char **argv);
int kectl_cmd_logs(kectl *k, int argc, char **argv);
int kectl_cmd_call(kectl *k, int argc, char **argv);

void kectl_help_get(FILE *out);
void kectl_help_apply(FILE *out);
void kectl_help_delete(FILE *out);
void kectl_help_describe(FILE *out);
void kectl_help_twin(FILE *out);
void kectl_help_logs(FILE *out);
void kectl_help_call(FILE *out);

/* ---- twin.c, shared with describe ---- */

/* kectl_twin_fetch calls DeviceController.GetTwin. Returns as kectl_call;
 * on OK *out is the reply (caller frees with
 * protobuf_c_message_free_unpacked). */
int kectl_twin_fetch(kectl *k, const char *ns, const char *name, Ke__V1__TwinReply **out,
                     ke_rpc_status *st);

/* kectl_twin_table prints the twins as a PROPERTY DESIRED REPORTED UPDATED
 * table, every line prefixed with indent. */
void kectl_twin_table(FILE *out, const Ke__V1__TwinReply *r, const char *indent);

#endif
