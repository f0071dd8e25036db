/*
 * kectl — the command-line client of kubeedge-c's cloud services, in the
 * manner of kubectl. This first version talks to the Diagnostics service:
 *
 *   kectl [global flags] version        client and server versions
 *   kectl [global flags] ping [-n N]    round trips to the server, with timings
 *   kectl [global flags] get nodes      edge nodes known to CloudHub (needs an
 *                                       admin certificate, see keadm init)
 *
 * Global flags: --server HOST:PORT (default $KECTL_SERVER or 127.0.0.1:10000),
 * --ca, --cert, --key (TLS / mutual TLS), --timeout DURATION_MS.
 * Exit codes: 0 success, 1 the server said no or could not be reached,
 * 2 bad usage.
 */
#include "cloudhub.pb-c.h"
#include "diag.pb-c.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_rpc.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KECTL_VERSION "0.1.0"

typedef struct kectl {
    const char *server;
    ke_rpc_tls tls;
    int use_tls;
    int64_t timeout_ms;
    ke_rpc_loop *loop;
    ke_rpc_channel *ch;
} kectl;

static void usage(FILE *out)
{
    fputs("Usage: kectl [flags] COMMAND [args]\n"
          "\n"
          "Commands:\n"
          "  version            print the client and server versions\n"
          "  ping [-n N] [-s B] send N pings with B payload bytes; print round-trip times\n"
          "  get nodes          list edge nodes: connection state, last seen, queue depth\n"
          "\n"
          "Flags:\n"
          "  --server HOST:PORT cloudcore gRPC address (default $KECTL_SERVER or 127.0.0.1:10000)\n"
          "  --ca FILE          CA certificate that signed the server's (enables TLS)\n"
          "  --cert FILE        client certificate, for mutual TLS\n"
          "  --key FILE         client private key, for mutual TLS\n"
          "  --timeout MS       deadline of each call in milliseconds (default 10000)\n"
          "  -h, --help         print this help\n",
          out);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ping_once runs one Ping; returns 0 or 1 after printing the error. */
static int ping_once(kectl *k, size_t size, Ke__V1__PingReply **out)
{
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    uint8_t *buf = calloc(1, size + 1);
    req.payload.data = buf;
    req.payload.len = size;
    ke_rpc_call_opts o = {.timeout_ms = k->timeout_ms};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_stub diag = {k->ch, &ke__v1__diagnostics__descriptor};
    int rc = ke_rpc_stub_unary(&diag, "Ping", &req.base, &o, &reply, &st);
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", ke_strerror(rc));
        return 1;
    }
    if (st.code != KE_RPC_OK) {
        fprintf(stderr, "error: server %s: %s: %s\n", k->server, ke_rpc_status_name(st.code),
                st.message);
        if (st.code == KE_RPC_UNAVAILABLE && k->use_tls)
            fprintf(stderr, "hint: a refused TLS handshake looks like this: check that --ca "
                            "signed the server's certificate and that the server trusts the CA "
                            "of --cert\n");
        return 1;
    }
    *out = (Ke__V1__PingReply *)reply;
    return 0;
}

static int cmd_version(kectl *k)
{
    printf("Client Version: %s\n", KECTL_VERSION);
    fflush(stdout);
    Ke__V1__PingReply *r = NULL;
    if (ping_once(k, 0, &r) != 0)
        return 1;
    printf("Server Version: %s (%s at %s)\n", r->version, r->server, k->server);
    if (r->peer_identity[0])
        printf("Authenticated As: %s\n", r->peer_identity);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static void age(char *buf, size_t len, int64_t then_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t s = ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - then_ms) / 1000;
    if (then_ms <= 0)
        snprintf(buf, len, "<never>");
    else if (s < 120)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 7200)
        snprintf(buf, len, "%lldm", (long long)(s / 60));
    else
        snprintf(buf, len, "%lldh", (long long)(s / 3600));
}

static int cmd_get_nodes(kectl *k)
{
    Ke__V1__ListNodesRequest req = KE__V1__LIST_NODES_REQUEST__INIT;
    ke_rpc_stub hub = {k->ch, &ke__v1__hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = k->timeout_ms};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    if (ke_rpc_stub_unary(&hub, "ListNodes", &req.base, &o, &reply, &st) != 0 ||
        st.code != KE_RPC_OK) {
        fprintf(stderr, "error: server %s: %s: %s\n", k->server, ke_rpc_status_name(st.code),
                st.message);
        return 1;
    }
    Ke__V1__ListNodesReply *r = (Ke__V1__ListNodesReply *)reply;
    printf("%-24s %-12s %-10s %-8s %s\n", "NAME", "STATUS", "LAST-SEEN", "QUEUE", "VERSION");
    for (size_t i = 0; i < r->n_nodes; i++) {
        char seen[32];
        age(seen, sizeof(seen), r->nodes[i]->last_seen_ms);
        printf("%-24s %-12s %-10s %-8u %s\n", r->nodes[i]->name,
               r->nodes[i]->connected ? "Connected" : "Offline", seen, r->nodes[i]->queue_depth,
               r->nodes[i]->agent_version[0] ? r->nodes[i]->agent_version : "-");
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_ping(kectl *k, int argc, char **argv)
{
    long n = 5, size = 0;
    int c;
    optind = 1;
    while ((c = getopt(argc, argv, "n:s:")) != -1) {
        if (c == 'n')
            n = strtol(optarg, NULL, 10);
        else if (c == 's')
            size = strtol(optarg, NULL, 10);
        else
            return 2;
    }
    if (n < 1 || n > 1000000 || size < 0 || size > 1 << 20) {
        fprintf(stderr, "error: -n must be 1..1000000 and -s 0..1048576\n");
        return 2;
    }
    double *rtt = calloc((size_t)n, sizeof(double));
    for (long i = 0; i < n; i++) {
        Ke__V1__PingReply *r = NULL;
        double t0 = now_us();
        if (ping_once(k, (size_t)size, &r) != 0) {
            free(rtt);
            return 1;
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
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 'S'}, {"ca", required_argument, NULL, 'C'},
        {"cert", required_argument, NULL, 'c'},   {"key", required_argument, NULL, 'k'},
        {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kectl k = {.server = getenv("KECTL_SERVER"), .timeout_ms = 10000};
    if (!k.server)
        k.server = "127.0.0.1:10000";
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'S': k.server = optarg; break;
        case 'C': k.tls.ca_file = optarg; k.use_tls = 1; break;
        case 'c': k.tls.cert_file = optarg; k.use_tls = 1; break;
        case 'k': k.tls.key_file = optarg; k.use_tls = 1; break;
        case 't': k.timeout_ms = strtoll(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    int get_nodes = strcmp(cmd, "get") == 0 && optind + 1 < argc &&
                    (strcmp(argv[optind + 1], "nodes") == 0 || strcmp(argv[optind + 1], "node") == 0 ||
                     strcmp(argv[optind + 1], "no") == 0);
    if (strcmp(cmd, "get") == 0 && !get_nodes) {
        fprintf(stderr, "error: kectl get: only \"nodes\" is known so far\n");
        return 2;
    }
    if (!get_nodes && strcmp(cmd, "version") != 0 && strcmp(cmd, "ping") != 0) {
        fprintf(stderr, "error: unknown command \"%s\" for \"kectl\" (see kectl --help)\n", cmd);
        return 2;
    }
    ke_log_set_level(KE_LOG_ERROR);
    int rc = ke_rpc_loop_new(1, &k.loop);
    ke_rpc_channel_opts co = {.tls = k.use_tls ? &k.tls : NULL};
    if (rc == 0)
        rc = ke_rpc_channel_new(k.loop, k.server, &co, &k.ch);
    if (rc != 0) {
        fprintf(stderr, "error: cannot set up a channel to %s: %s\n", k.server, ke_strerror(rc));
        ke_rpc_loop_free(k.loop);
        return 1;
    }
    int status = get_nodes                       ? cmd_get_nodes(&k)
                 : strcmp(cmd, "version") == 0 ? cmd_version(&k)
                                               : cmd_ping(&k, argc - optind, argv + optind);
    ke_rpc_channel_free(k.ch);
    ke_rpc_loop_free(k.loop);
    return status;
}
