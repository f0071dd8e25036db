/*
 * kectl — the command-line client of kubeedge-c's cloud services, in the
 * manner of kubectl:
 *
 *   kectl [global flags] apply -f FILE|DIR|-     create or update objects
 *   kectl [global flags] get KIND [NAME] [-o wide|json|yaml|name] [-l] [-w]
 *   kectl [global flags] delete KIND NAME | -f FILE
 *   kectl [global flags] describe KIND [NAME]
 *   kectl [global flags] logs POD [-c CONTAINER] [-f] [--tail N]
 *   kectl [global flags] twin get DEVICE | twin set DEVICE PROPERTY VALUE
 *   kectl [global flags] version | ping [-n N] [-s B]
 *
 * Objects go through EdgeController (api/edgecontroller.proto), twins
 * through DeviceController, version and ping through Diagnostics.
 * Global flags: --server HOST:PORT (default $KECTL_SERVER or
 * 127.0.0.1:10000), --ca, --cert, --key (TLS / mutual TLS), --timeout MS,
 * -n NS, -A. Exit codes: 0 success, 1 an error (from the server or local),
 * 2 bad usage. kectl.h has the map of the other files.
 */
#include "kectl.h"

#include "diag.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help_version(FILE *out);
static void help_ping(FILE *out);

typedef struct verb {
    const char *name;
    const char *summary;
    int (*run)(kectl *k, int argc, char **argv);
    void (*help)(FILE *out);
} verb;

static int cmd_version(kectl *k, int argc, char **argv);
static int cmd_ping(kectl *k, int argc, char **argv);

static const verb verbs[] = {
    {"apply", "create or update objects from YAML or JSON files", kectl_cmd_apply,
     kectl_help_apply},
    {"get", "list objects, or watch them change", kectl_cmd_get, kectl_help_get},
    {"describe", "show the details of objects", kectl_cmd_describe, kectl_help_describe},
    {"delete", "delete objects by name or from files", kectl_cmd_delete, kectl_help_delete},
    {"logs", "print (or follow) a container's log, read on its edge node", kectl_cmd_logs,
     kectl_help_logs},
    {"call", "send an HTTP request to a service on an edge node's host", kectl_cmd_call,
     kectl_help_call},
    {"twin", "read or set device twins (desired and reported values)", kectl_cmd_twin,
     kectl_help_twin},
    {"version", "print the client and server versions", cmd_version, help_version},
    {"ping", "measure round trips to the server", cmd_ping, help_ping},
};

#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static void usage(FILE *out)
{
    fputs("kectl controls kubeedge-c: apps, config and devices on edge nodes.\n"
          "\n"
          "Usage: kectl [global flags] COMMAND [args] [flags]\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < N_VERBS; i++)
        fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
    fputs("  help       help about a command: kectl help COMMAND\n"
          "\n"
          "Kinds: pods (po), configmaps (cm), secrets, nodes (no), devices, devicemodels.\n"
          "\n",
          out);
    kectl_global_help(out);
    fputs("\nExit codes: 0 success, 1 error, 2 bad usage.\n"
          "Use \"kectl COMMAND --help\" for the flags of a command.\n",
          out);
}

static const verb *find_verb(const char *name)
{
    for (size_t i = 0; i < N_VERBS; i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

/* ---- version and ping: the Diagnostics service ---- */

static void help_version(FILE *out)
{
    fputs("Print the client version, then the server's (Diagnostics.Ping): its version,\n"
          "its name, and the identity the server saw in the client certificate.\n"
          "\n"
          "Usage: kectl version [flags]\n"
          "\n",
          out);
    kectl_global_help(out);
}

static void help_ping(FILE *out)
{
    fputs("Send pings (Diagnostics.Ping) one after the other and print round-trip times.\n"
          "\n"
          "Usage: kectl ping [-n N] [-s BYTES] [flags]\n"
          "\n"
          "Flags:\n"
          "  -n, -c, --count N   number of pings, 1..1000000 (default 5); here -n is the\n"
          "                      count, not the namespace\n"
          "  -s, --size BYTES    payload bytes of each ping, 0..1048576 (default 0)\n"
          "\n",
          out);
    kectl_global_help(out);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ping_once runs one Ping; returns 0, or 1 after printing the error. */
static int ping_once(kectl *k, size_t size, Ke__V1__PingReply **out)
{
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    uint8_t *buf = calloc(1, size + 1);
    if (!buf) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    req.payload.data = buf;
    req.payload.len = size;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int rc = kectl_call(k, &ke__v1__diagnostics__descriptor, "Ping", &req.base, &reply, &st);
    free(buf);
    if (rc != 0)
        return 1;
    if (st.code != KE_RPC_OK) {
        kectl_report(k, &st, "", NULL, NULL);
        return 1;
    }
    *out = (Ke__V1__PingReply *)reply;
    return 0;
}

static int version_opt(void *ud, int c, const char *arg)
{
    (void)ud;
    (void)c;
    (void)arg;
    return 0;
}

static int cmd_version(kectl *k, int argc, char **argv)
{
    static const kectl_verb_def def = {"version", NULL, "", version_opt, help_version};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, NULL, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos > 0)
        return kectl_usage_error("version", "unexpected argument \"%s\"", pos[0]);
    printf("Client Version: %s\n", KECTL_VERSION);
    fflush(stdout);
    Ke__V1__PingReply *r = NULL;
    if (ping_once(k, 0, &r) != 0)
        return KECTL_EXIT_ERROR;
    printf("Server Version: %s (%s at %s)\n", r->version, r->server, k->server);
    if (r->peer_identity[0])
        printf("Authenticated As: %s\n", r->peer_identity);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return KECTL_EXIT_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct ping_opts {
    long n, size;
} ping_opts;

static int ping_opt(void *ud, int c, const char *arg)
{
    ping_opts *o = ud;
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end != '\0')
        return kectl_usage_error("ping", "-%c wants a number, not \"%s\"", c, arg);
    if (c == 's')
        o->size = v;
    else
        o->n = v;
    return 0;
}

static int cmd_ping(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"ping", opts, "n:c:s:", ping_opt, help_ping};
    ping_opts o = {.n = 5, .size = 0};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos > 0)
        return kectl_usage_error("ping", "unexpected argument \"%s\"", pos[0]);
    long n = o.n, size = o.size;
    if (n < 1 || n > 1000000 || size < 0 || size > 1 << 20)
        return kectl_usage_error("ping", "-n must be 1..1000000 and -s 0..1048576");
    double *rtt = calloc((size_t)n, sizeof(double));
    if (!rtt) {
        fprintf(stderr, "error: out of memory\n");
        return KECTL_EXIT_ERROR;
    }
    for (long i = 0; i < n; i++) {
        Ke__V1__PingReply *r = NULL;
        double t0 = now_us();
        if (ping_once(k, (size_t)size, &r) != 0) {
            free(rtt);
            return KECTL_EXIT_ERROR;
        }
        rtt[i] = now_us() - t0;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    qsort(rtt, (size_t)n, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += rtt[i];
    printf("%ld pings to %s, %ld payload bytes: min %.0f us, avg %.0f us, p50 %.0f us, "
           "p99 %.0f us, max %.0f us\n",
           n, k->server, size, rtt[0], sum / (double)n, rtt[n / 2], rtt[(n * 99) / 100],
           rtt[n - 1]);
    free(rtt);
    return KECTL_EXIT_OK;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    kectl k = {.server = getenv("KECTL_SERVER"),
               .kubeconfig = getenv("KECTL_KUBECONFIG"),
               .timeout_ms = KECTL_DEFAULT_TIMEOUT_MS,
               .ns = "default"};
    if (!k.server || !k.server[0])
        k.server = "127.0.0.1:10000";
    ke_log_set_level(KE_LOG_ERROR);

    /* global flags before the verb; "+": stop at the verb */
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:n:Ah", kectl_global_options, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return KECTL_EXIT_OK;
        }
        if (c == '?')
            return kectl_usage_error(NULL, "unknown flag: %s", argv[optind - 1]);
        if (c == ':')
            return kectl_usage_error(NULL, "flag needs an argument: %s", argv[optind - 1]);
        if (kectl_global_flag(&k, c, optarg) != 1)
            return KECTL_EXIT_USAGE;
    }
    if (optind >= argc) {
        usage(stderr);
        return KECTL_EXIT_USAGE;
    }
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        if (optind + 1 >= argc) {
            usage(stdout);
            return KECTL_EXIT_OK;
        }
        const verb *v = find_verb(argv[optind + 1]);
        if (!v)
            return kectl_usage_error(NULL, "unknown command \"%s\" for \"kectl\"",
                                     argv[optind + 1]);
        v->help(stdout);
        return KECTL_EXIT_OK;
    }
    const verb *v = find_verb(name);
    if (!v)
        return kectl_usage_error(NULL, "unknown command \"%s\" for \"kectl\"", name);
    int status = v->run(&k, argc - optind, argv + optind);
    fflush(stdout);
    kectl_disconnect(&k);
    return status;
}
