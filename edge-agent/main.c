/*
 * edgecore — the edge side of kubeedge-c in one process.
 *
 * Modules so far: MetaManager (SQLite store of what the cloud sent, and the
 * upstream outbox) and EdgeHub (the tunnel to CloudHub). EdgeLocal, the
 * local API (api/edge.proto), is served on a Unix socket or loopback for
 * programs on this host. Configuration: YAML (--config, written by
 * `keadm join`) and flags; `edgecore --help` lists the keys.
 *
 * Prints "ready local=<address> http=<port>" on stdout once the local API
 * is up (before the cloud is reached: the edge works offline).
 * SIGTERM/SIGINT stop it; SIGHUP rotates the node certificate now.
 */
#include "edge.pb-c.h"
#include "edgehub.h"
#include "ke_config.h"
#include "ke_err.h"
#include "ke_http.h"
#include "ke_watchdog.h"
#include "ke_log.h"
#include "ke_rpc.h"
#include "ke_time.h"
#include "metamanager.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <jansson.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EDGECORE_VERSION "0.1.0"

struct edgecore_config {
    char *log_level;
    char *node_name;
    char *server;
    char *ca, *cert, *key;
    int64_t keepalive, dead_peer, backoff_initial, backoff_max, renew_before, window;
    char *db;
    bool audit;
    int64_t outbox_max, reported_max;
    char *local_listen;
    char *http_listen;
};

#define F(k, t, m, d, h) {k, t, offsetof(struct edgecore_config, m), d, h}
static const ke_config_field edgecore_fields[] = {
    F("log_level", KE_CONFIG_STRING, log_level, "info", "debug, info, warn or error"),
    F("node_name", KE_CONFIG_STRING, node_name, NULL, "this node's name (its certificate CN)"),
    F("edgehub.server", KE_CONFIG_STRING, server, NULL, "CloudHub address host:port"),
    F("edgehub.tls.ca", KE_CONFIG_STRING, ca, NULL, "cluster CA certificate (PEM)"),
    F("edgehub.tls.cert", KE_CONFIG_STRING, cert, NULL, "node certificate (PEM)"),
    F("edgehub.tls.key", KE_CONFIG_STRING, key, NULL, "node private key (PEM)"),
    F("edgehub.keepalive", KE_CONFIG_DURATION, keepalive, "5s", "keepalive period"),
    F("edgehub.dead_peer", KE_CONFIG_DURATION, dead_peer, "15s",
      "reconnect when the cloud is silent this long"),
    F("edgehub.backoff_initial", KE_CONFIG_DURATION, backoff_initial, "500ms",
      "first reconnect delay (jittered, doubling)"),
    F("edgehub.backoff_max", KE_CONFIG_DURATION, backoff_max, "30s", "longest reconnect delay"),
    F("edgehub.renew_before", KE_CONFIG_DURATION, renew_before, "720h",
      "renew the node certificate when it has less validity left than this"),
    F("edgehub.window", KE_CONFIG_INT64, window, "256", "upstream reports in flight unacked"),
    F("metamanager.db", KE_CONFIG_STRING, db, "/var/lib/kubeedge/edge.db", "edge SQLite file"),
    F("metamanager.audit", KE_CONFIG_BOOL, audit, "false",
      "record every applied change in the audit table"),
    F("metamanager.outbox_max", KE_CONFIG_INT64, outbox_max, "100000",
      "bound on unacknowledged reports; beyond it Report fails with RESOURCE_EXHAUSTED"),
    F("metamanager.reported_max", KE_CONFIG_INT64, reported_max, "100000",
      "report-dedup rows kept for keys without a live object; the oldest beyond it are dropped"),
    F("local.listen", KE_CONFIG_STRING, local_listen, "unix:/var/run/kubeedge/edgecore.sock",
      "EdgeLocal API address (unix:PATH or 127.0.0.1:PORT)"),
    F("http.listen", KE_CONFIG_STRING, http_listen, "127.0.0.1:10551",
      "address of /metrics and /healthz; empty: off"),
};

typedef struct edgecore {
    metamanager *mm;
    edgehub *hub;
} edgecore;

/* ---- EdgeLocal ---- */

static void report_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecore *ec = ud;
    const Ke__V1__ReportRequest *req = (const Ke__V1__ReportRequest *)m;
    uint64_t seq = 0;
    int dup = 0;
    int rc = metamanager_report(ec->mm, req->message, &seq, &dup);
    if (rc == KE_EINVAL) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT,
                           "message: route.resource and header.resource_version are required",
                           NULL);
        return;
    }
    if (rc == KE_EFULL) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED,
                           "outbox full: the cloud has not acknowledged earlier reports", NULL);
        return;
    }
    if (rc != 0) {
        ke_rpc_call_finish(call, KE_RPC_UNAVAILABLE, "store error", NULL);
        return;
    }
    if (!dup)
        edgehub_notify(ec->hub);
    Ke__V1__ReportReply r = KE__V1__REPORT_REPLY__INIT;
    r.outbox_seq = seq;
    r.duplicate = dup;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
}

static void get_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecore *ec = ud;
    const Ke__V1__EdgeGetRequest *req = (const Ke__V1__EdgeGetRequest *)m;
    Ke__V1__EdgeObject o = KE__V1__EDGE_OBJECT__INIT;
    uint8_t *content = NULL;
    size_t len = 0;
    int rc = metamanager_get(ec->mm, req->key, &o.resource_version, &content, &len);
    if (rc == KE_ENOTFOUND) {
        ke_rpc_call_finish(call, KE_RPC_NOT_FOUND, "key: not held by this node", NULL);
        return;
    }
    if (rc != 0) {
        ke_rpc_call_finish(call, KE_RPC_UNAVAILABLE, "store error", NULL);
        return;
    }
    o.key = req->key;
    o.content.data = content;
    o.content.len = len;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &o.base);
    free(content);
}

typedef struct list_ctx {
    Ke__V1__EdgeObject **v;
    size_t n, cap;
} list_ctx;

static int list_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    list_ctx *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        Ke__V1__EdgeObject **v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    Ke__V1__EdgeObject *o = calloc(1, sizeof(*o) + len + strlen(key) + 1);
    if (!o)
        return 1;
    ke__v1__edge_object__init(o);
    uint8_t *buf = (uint8_t *)(o + 1);
    if (len)
        memcpy(buf, content, len);
    o->content.data = buf;
    o->content.len = len;
    o->key = (char *)buf + len;
    strcpy(o->key, key);
    o->resource_version = rv;
    l->v[l->n++] = o;
    return 0;
}

static void list_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    edgecore *ec = ud;
    const Ke__V1__EdgeListRequest *req = (const Ke__V1__EdgeListRequest *)m;
    list_ctx l = {0};
    int rc = metamanager_list(ec->mm, req->prefix, list_one, &l);
    if (rc != 0) {
        ke_rpc_call_finish(call, KE_RPC_UNAVAILABLE, "store error", NULL);
    } else {
        Ke__V1__EdgeListReply r = KE__V1__EDGE_LIST_REPLY__INIT;
        r.objects = l.v;
        r.n_objects = l.n;
        r.outbox_pending = metamanager_outbox_pending(ec->mm);
        ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
}

static int edgelocal_register(edgecore *ec, ke_rpc_server *srv)
{
    static const ke_rpc_method_def methods[] = {
        {"Report", KE_RPC_UNARY, {.on_message = report_on_message}},
        {"Get", KE_RPC_UNARY, {.on_message = get_on_message}},
        {"List", KE_RPC_UNARY, {.on_message = list_on_message}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__edge_local__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), ec);
}

/* report_node_status queues this host's addresses, capacity and system
 * info for the cloud's Node object (group "nodestatus"). The version must
 * grow at every start: one past the last one reported, or the wall clock
 * in ms when that is larger (a store wiped by a rejoin starts again above
 * what the cloud saw). A wall clock stepped back therefore never makes a
 * new status a "duplicate". timestamp_ms is wall time, for people. */
static void report_node_status(edgecore *ec, const char *node)
{
    char host[256] = "localhost", ip[INET_ADDRSTRLEN] = "127.0.0.1";
    gethostname(host, sizeof(host) - 1);
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK)) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof(ip));
                break;
            }
        freeifaddrs(ifs);
    }
    struct utsname u;
    uname(&u);
    struct sysinfo si;
    sysinfo(&si);
    char cpu[32], mem[32];
    snprintf(cpu, sizeof(cpu), "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    snprintf(mem, sizeof(mem), "%lluKi", (unsigned long long)si.totalram * si.mem_unit / 1024ULL);
    json_t *st = json_pack("{s:[{s:s,s:s},{s:s,s:s}], s:{s:s,s:s,s:s}, s:{s:s,s:s,s:s,s:s,s:s}}",
                           "addresses", "type", "InternalIP", "address", ip, "type", "Hostname",
                           "address", host, "capacity", "cpu", cpu, "memory", mem, "pods", "110",
                           "nodeInfo", "kubeletVersion", "kubeedge-c/" EDGECORE_VERSION,
                           "operatingSystem", "linux", "architecture", u.machine,
                           "kernelVersion", u.release, "osImage", u.sysname);
    char *content = json_dumps(st, JSON_COMPACT);
    json_decref(st);
    char key[160];
    snprintf(key, sizeof(key), "node/%s//NodeStatus/%s", node, node);
    uint64_t last = 0;
    int rc = metamanager_reported_rv(ec->mm, key, &last);
    if (rc != 0)
        ke_log_warn("edgecore", "cannot read the last node status version: %s", ke_strerror(rc));
    int64_t wall = ke_time_wall_ms();
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.resource_version = wall > 0 && (uint64_t)wall > last ? (uint64_t)wall : last + 1;
    h.timestamp_ms = wall;
    r.source = "edgecore";
    r.group = "nodestatus";
    r.operation = KE__V1__OPERATION__OPERATION_UPLOAD;
    r.resource = key;
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)content;
    m.content.len = content ? strlen(content) : 0;
    uint64_t seq;
    int dup;
    if (!content)
        ke_log_error("edgecore", "node status not queued: out of memory");
    else if ((rc = metamanager_report(ec->mm, &m, &seq, &dup)) != 0)
        ke_log_error("edgecore", "node status not queued: %s", ke_strerror(rc));
    else
        ke_log_info("edgecore", "node status queued ip=%s cpu=%s memory=%s rv=%llu", ip, cpu, mem,
                    (unsigned long long)h.resource_version);
    free(content);
}

static int require(const char *value, const char *key)
{
    if (value && *value)
        return 0;
    fprintf(stderr, "edgecore: key \"%s\" is required (keadm join writes it)\n", key);
    return -1;
}

int main(int argc, char **argv)
{
    struct edgecore_config cfg = {0};
    char err[KE_CONFIG_ERR_MAX];
    int rc = ke_config_parse_args(edgecore_fields, KE_CONFIG_NFIELDS(edgecore_fields), &cfg, argc,
                                  argv, err, sizeof(err));
    if (rc == KE_CONFIG_HELP)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "edgecore: %s\n", err);
        return 2;
    }
    int status = 2;
    edgecore ec = {0};
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *local = NULL;
    ke_http *http = NULL;
    ke_log_level level;
    if (ke_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr, "edgecore: key \"log_level\": expected debug, info, warn or error\n");
        goto out;
    }
    ke_log_set_level(level);
    if (require(cfg.node_name, "node_name") || require(cfg.server, "edgehub.server") ||
        require(cfg.ca, "edgehub.tls.ca") || require(cfg.cert, "edgehub.tls.cert") ||
        require(cfg.key, "edgehub.tls.key"))
        goto out;
    if (cfg.window < 1 || cfg.window > 65536 || cfg.outbox_max < 1 ||
        cfg.outbox_max > UINT32_MAX || cfg.reported_max < 1 || cfg.reported_max > UINT32_MAX) {
        fprintf(stderr, "edgecore: edgehub.window must be 1..65536, metamanager.outbox_max and "
                        "metamanager.reported_max 1..4294967295\n");
        goto out;
    }
    status = 1;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((rc = ke_watchdog_start()) != 0) /* stall logs and gauges; /healthz checks anyway */
        ke_log_warn("edgecore", "watchdog monitor not started: %s", ke_strerror(rc));

    metamanager_opts mo = {.path = cfg.db,
                           .audit = cfg.audit,
                           .outbox_max = (uint32_t)cfg.outbox_max,
                           .reported_max = (uint32_t)cfg.reported_max};
    if ((rc = metamanager_open(&mo, &ec.mm)) != 0) {
        ke_log_error("edgecore", "cannot open the edge store db=%s: %s", cfg.db, ke_strerror(rc));
        goto out;
    }
    if ((rc = ke_rpc_loop_new(2, &loop)) != 0)
        goto out;
    edgehub_config hc = {
        .node_name = cfg.node_name,
        .server = cfg.server,
        .ca_file = cfg.ca,
        .cert_file = cfg.cert,
        .key_file = cfg.key,
        .agent_version = EDGECORE_VERSION,
        .keepalive_ms = cfg.keepalive,
        .dead_peer_ms = cfg.dead_peer,
        .backoff_initial_ms = cfg.backoff_initial,
        .backoff_max_ms = cfg.backoff_max,
        .renew_before_ms = cfg.renew_before,
        .window = (uint32_t)cfg.window,
    };
    if ((rc = edgehub_new(&hc, loop, ec.mm, &ec.hub)) != 0)
        goto out;
    if (strncmp(cfg.local_listen, "unix:", 5) == 0)
        unlink(cfg.local_listen + 5); /* a socket left by a killed edgecore */
    ke_rpc_server_opts lo = {.listen = cfg.local_listen};
    if ((rc = ke_rpc_server_new(loop, &lo, &local)) != 0 ||
        (rc = edgelocal_register(&ec, local)) != 0 || (rc = ke_rpc_server_start(local)) != 0) {
        ke_log_error("edgecore", "cannot serve the local API listen=%s", cfg.local_listen);
        goto out;
    }
    if (cfg.http_listen && *cfg.http_listen) {
        ke_http_config htc = {.listen = cfg.http_listen};
        if ((rc = ke_http_start(&htc, &http)) != 0)
            goto out;
    }
    report_node_status(&ec, cfg.node_name);
    if ((rc = edgehub_start(ec.hub)) != 0)
        goto out;
    ke_log_info("edgecore", "running version=%s node=%s server=%s local=%s", EDGECORE_VERSION,
                cfg.node_name, cfg.server, cfg.local_listen);
    printf("ready local=%s http=%d\n", cfg.local_listen, http ? ke_http_port(http) : 0);
    fflush(stdout);

    for (;;) {
        int sig = 0;
        sigwait(&set, &sig);
        if (sig == SIGHUP) {
            ke_log_info("edgecore", "SIGHUP: rotating the node certificate");
            edgehub_rotate(ec.hub);
            continue;
        }
        ke_log_info("edgecore", "stopping signal=%d", sig);
        break;
    }
    status = 0;
out:
    /* Past startup, a stuck component cannot keep edgecore alive: the
     * default shutdown deadline (ke_watchdog.h) ends it with status 1. */
    if (status != 2 && (rc = ke_watchdog_shutdown_arm(0)) != 0)
        ke_log_error("edgecore", "cannot arm the shutdown deadline: %s", ke_strerror(rc));
    ke_watchdog_shutdown_step("edgehub");
    edgehub_free(ec.hub);
    ke_http_stop(http);
    ke_rpc_server_free(local);
    ke_watchdog_shutdown_step("rpc loop");
    ke_rpc_loop_free(loop);
    metamanager_close(ec.mm);
    ke_watchdog_shutdown_done();
    ke_watchdog_stop();
    ke_config_free(edgecore_fields, KE_CONFIG_NFIELDS(edgecore_fields), &cfg);
    return status;
}
