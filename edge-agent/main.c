/*
 * edgecore — the edge side of kubeedge-c in one process, on one event loop
 * (runtime/ke_rt.h; edge-agent/README.md says how it works).
 *
 * The module registry is the table `modules` below: MetaManager (the bus's
 * door to the SQLite store), EdgeHub (the tunnel to CloudHub), EdgeLocal
 * (the local API, api/edge.proto, on a Unix socket or loopback for
 * programs on this host), Edged (pods through the container runtime's
 * CRI), EventBus (MQTT topics on a broker), DeviceTwin (devices and twins
 * on the mappers' topics) and ServiceBus (cloud callers to HTTP services on
 * this host), each turned on or off with
 * modules.<name>.enable. Configuration: YAML (--config, written by
 * `keadm join`) and flags; `edgecore --help` lists the keys.
 *
 * Prints "ready local=<address> http=<port>" on stdout once every module
 * has started, the local API included (before the cloud is reached: the
 * edge works offline).
 * SIGTERM/SIGINT stop it; SIGHUP rotates the node certificate now.
 */
#include "edge_store.h"
#include "edged.h"
#include "edgehub.h"
#include "edgelocal.h"
#include "devicetwin.h"
#include "eventbus.h"
#include "ke_config.h"
#include "ke_rt.h"
#include "ke_err.h"
#include "ke_host.h"
#include "ke_log.h"
#include "ke_rpc.h"
#include "ke_servicebus.h"
#include "ke_time.h"
#include "ke_watchdog.h"
#include "metamanager.h"
#include "servicebus.h"
#include "metaserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <sys/statvfs.h>
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
    bool en_metamanager, en_edgehub, en_edgelocal, en_edged, en_eventbus, en_devicetwin,
        en_servicebus, en_metaserver;
    char *ms_listen;
    char *cri_endpoint, *edged_root;
    int64_t relist, backoff_first, backoff_cap;
    int64_t stall_timeout, shutdown_timeout;
    char *eb_broker, *eb_client_id, *eb_user, *eb_password, *eb_ca, *eb_subscribe;
    int64_t eb_backoff_initial, eb_backoff_max;
    char *eb_mode, *eb_binary;
    char *sb_allow;
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
    F("health.stall_timeout", KE_CONFIG_DURATION, stall_timeout, "30s",
      "the loop (or an rpc thread) silent this long turns /healthz to 503"),
    F("shutdown.timeout", KE_CONFIG_DURATION, shutdown_timeout, "10s",
      "after SIGTERM, exit with status 1 if the modules have not stopped by then"),
    F("modules.metamanager.enable", KE_CONFIG_BOOL, en_metamanager, "true",
      "run MetaManager (the store's door on the bus; EdgeHub and EdgeLocal need it)"),
    F("modules.edgehub.enable", KE_CONFIG_BOOL, en_edgehub, "true",
      "run EdgeHub (the tunnel to CloudHub)"),
    F("modules.edgelocal.enable", KE_CONFIG_BOOL, en_edgelocal, "true",
      "run EdgeLocal (the local API on local.listen)"),
    F("modules.edged.enable", KE_CONFIG_BOOL, en_edged, "true",
      "run Edged (this node's pods, through the container runtime's CRI)"),
    F("edged.runtime_endpoint", KE_CONFIG_STRING, cri_endpoint, "/run/containerd/containerd.sock",
      "the container runtime's CRI socket"),
    F("edged.root_dir", KE_CONFIG_STRING, edged_root, "",
      "pods' volumes and logs; empty: edged/ beside metamanager.db"),
    F("edged.relist_period", KE_CONFIG_DURATION, relist, "1s",
      "how often the runtime is listed (exits, restarts, status)"),
    F("edged.backoff_initial", KE_CONFIG_DURATION, backoff_first, "10s",
      "restart delay of a failing container after its first restart (doubling)"),
    F("edged.backoff_max", KE_CONFIG_DURATION, backoff_cap, "5m", "longest restart delay"),
    F("modules.devicetwin.enable", KE_CONFIG_BOOL, en_devicetwin, "true",
      "DeviceTwin: devices and twins of this node, mappers' MQTT topics (through EventBus)"),
    F("modules.eventbus.enable", KE_CONFIG_BOOL, en_eventbus, "true",
      "run EventBus (MQTT topics on a broker to and from the cloud)"),
    F("modules.eventbus.mode", KE_CONFIG_STRING, eb_mode, "external",
      "external: connect to a broker run by someone else; internal: edgecore starts, "
      "restarts and stops mosquitto itself, listening on eventbus.broker"),
    F("eventbus.internal.binary", KE_CONFIG_STRING, eb_binary, "/usr/sbin/mosquitto",
      "mode internal: the mosquitto program (its files: mosquitto/ beside metamanager.db)"),
    F("eventbus.broker", KE_CONFIG_STRING, eb_broker, "127.0.0.1:1883",
      "MQTT broker host:port (a numeric address: no name lookup on the loop)"),
    F("eventbus.client_id", KE_CONFIG_STRING, eb_client_id, "",
      "MQTT client id (fixed: the broker keeps its session); empty: edgecore-<node_name>"),
    F("eventbus.username", KE_CONFIG_STRING, eb_user, "", "MQTT user name (optional)"),
    F("eventbus.password", KE_CONFIG_STRING, eb_password, "", "MQTT password (optional)"),
    F("eventbus.tls.ca", KE_CONFIG_STRING, eb_ca, "",
      "CA certificate (PEM) of the broker: TLS to the broker; empty: plain TCP"),
    F("eventbus.subscribe", KE_CONFIG_STRING, eb_subscribe, "$hw/events/upload/#",
      "comma-separated MQTT topic filters forwarded to the cloud (QoS 1)"),
    F("eventbus.backoff_initial", KE_CONFIG_DURATION, eb_backoff_initial, "500ms",
      "first broker reconnect delay (jittered, doubling)"),
    F("eventbus.backoff_max", KE_CONFIG_DURATION, eb_backoff_max, "30s",
      "longest broker reconnect delay"),
    F("modules.metaserver.enable", KE_CONFIG_BOOL, en_metaserver, "false",
      "run MetaServer: a read-only Kubernetes API of this node's objects, from the store "
      "(off by default, as KubeEdge's)"),
    F("modules.metaserver.listen", KE_CONFIG_STRING, ms_listen, METASERVER_LISTEN_DEFAULT,
      "MetaServer's address: host:port on loopback only (plain HTTP, no authentication)"),
    F("modules.servicebus.enable", KE_CONFIG_BOOL, en_servicebus, "true",
      "run ServiceBus (cloud callers reach HTTP services on this host)"),
    F("modules.servicebus.allow", KE_CONFIG_STRING, sb_allow, "",
      "comma-separated host:port targets cloud callers may reach; empty: none"),
};

/* first_line reads the first line of a file (a host fact: /etc/machine-id,
 * the boot id) into buf, or leaves "" when it cannot. */
static void first_line(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(buf, (int)len, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
}

/* os_image reads PRETTY_NAME from /etc/os-release ("Debian GNU/Linux 12
 * (bookworm)"), as a node reports its OS image; the kernel's name when
 * there is none. */
static void os_image(char *buf, size_t len, const char *fallback)
{
    snprintf(buf, len, "%s", fallback);
    FILE *f = fopen("/etc/os-release", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "PRETTY_NAME=", 12) != 0)
            continue;
        char *v = line + 12;
        v[strcspn(v, "\r\n")] = '\0';
        size_t n = strlen(v);
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v[n - 1] = '\0';
            v++;
        }
        if (*v)
            snprintf(buf, len, "%.*s", (int)(len - 1), v);
        break;
    }
    fclose(f);
}

/* report_node_status queues this host's addresses, capacity and system
 * info for the cloud's Node object (group "nodestatus"). The version must
 * grow at every start: one past the last one reported, or the wall clock
 * in ms when that is larger (a store wiped by a rejoin starts again above
 * what the cloud saw). A wall clock stepped back therefore never makes a
 * new status a "duplicate". timestamp_ms is wall time, for people. */
static void report_node_status(edge_store *store, const char *node, const char *data_dir)
{
    char host[256] = "localhost", ip[INET_ADDRSTRLEN];
    gethostname(host, sizeof(host) - 1);
    ke_host_ipv4(ip, sizeof(ip));
    if (!ip[0])
        snprintf(ip, sizeof(ip), "127.0.0.1");
    struct utsname u;
    uname(&u);
    struct sysinfo si;
    sysinfo(&si);
    char cpu[32], mem[32];
    snprintf(cpu, sizeof(cpu), "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    snprintf(mem, sizeof(mem), "%lluKi", (unsigned long long)si.totalram * si.mem_unit / 1024ULL);
    /* nodeInfo as a kubelet fills it (Kubernetes clients require every
     * field): the machine and boot ids from the host; the container runtime
     * is Edged's to tell, "" here */
    char machine[64], boot[64], uuid[64], image[128];
    first_line("/etc/machine-id", machine, sizeof(machine));
    first_line("/proc/sys/kernel/random/boot_id", boot, sizeof(boot));
    first_line("/sys/class/dmi/id/product_uuid", uuid, sizeof(uuid));
    if (!uuid[0])
        snprintf(uuid, sizeof(uuid), "%s", machine);
    os_image(image, sizeof(image), u.sysname);
    json_t *st = json_pack("{s:[{s:s,s:s},{s:s,s:s}], s:{s:s,s:s,s:s}, "
                           "s:{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}}",
                           "addresses", "type", "InternalIP", "address", ip, "type", "Hostname",
                           "address", host, "capacity", "cpu", cpu, "memory", mem, "pods", "110",
                           "nodeInfo", "kubeletVersion", "kubeedge-c/" EDGECORE_VERSION,
                           "operatingSystem", "linux", "architecture", u.machine,
                           "kernelVersion", u.release, "osImage", image, "machineID", machine,
                           "bootID", boot, "systemUUID", uuid, "kubeProxyVersion", "",
                           "containerRuntimeVersion", "");
    /* the disk of edgecore's data (pods' volumes and logs go beside it):
     * ephemeral-storage, as kubelet reports it */
    struct statvfs fs;
    if (statvfs(data_dir, &fs) == 0) {
        char eph[32];
        snprintf(eph, sizeof(eph), "%lluKi",
                 (unsigned long long)fs.f_blocks * fs.f_frsize / 1024ULL);
        json_object_set_new(json_object_get(st, "capacity"), "ephemeral-storage", json_string(eph));
    } else {
        ke_log_warn("edgecore", "no ephemeral-storage in the node status: statvfs %s: %s",
                    data_dir, strerror(errno));
    }
    /* nothing is reserved for the system: all of it can go to pods */
    json_object_set(st, "allocatable", json_object_get(st, "capacity"));
    char *content = json_dumps(st, JSON_COMPACT);
    json_decref(st);
    char key[160];
    snprintf(key, sizeof(key), "node/%s//NodeStatus/%s", node, node);
    uint64_t last = 0;
    int rc = edge_store_reported_rv(store, key, &last);
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
    else if ((rc = edge_store_report(store, &m, &seq, &dup)) != 0)
        ke_log_error("edgecore", "node status not queued: %s", ke_strerror(rc));
    else
        ke_log_info("edgecore", "node status queued ip=%s cpu=%s memory=%s rv=%llu", ip, cpu, mem,
                    (unsigned long long)h.resource_version);
    free(content);
}

/* check_internal_broker: what modules.eventbus.mode: internal needs, said
 * at start. The internal broker listens on eventbus.broker, which must be
 * a numeric address (or localhost): it is edgecore's own, on this host. */
static int check_internal_broker(const struct edgecore_config *cfg)
{
    const char *b = cfg->eb_broker ? cfg->eb_broker : "";
    const char *colon = strrchr(b, ':');
    char host[64];
    unsigned char addr[16];
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (!colon || (size_t)(colon - b) >= sizeof(host) || port < 1 || port > 65535) {
        fprintf(stderr, "edgecore: eventbus.broker must be host:port (got \"%s\")\n", b);
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - b), b);
    if (strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, addr) != 1 &&
        inet_pton(AF_INET6, host, addr) != 1) {
        fprintf(stderr, "edgecore: modules.eventbus.mode internal: eventbus.broker's host must be "
                        "a numeric address such as 127.0.0.1 (the internal broker's listener), "
                        "not \"%s\"\n", host);
        return -1;
    }
    if ((cfg->eb_user && *cfg->eb_user) || (cfg->eb_ca && *cfg->eb_ca)) {
        fprintf(stderr, "edgecore: modules.eventbus.mode internal runs an anonymous, plain-TCP "
                        "broker on this host: eventbus.username and eventbus.tls.ca are for an "
                        "external broker (unset them, or use mode external)\n");
        return -1;
    }
    if (!cfg->eb_binary || access(cfg->eb_binary, X_OK) != 0) {
        fprintf(stderr, "edgecore: modules.eventbus.mode internal: eventbus.internal.binary "
                        "\"%s\" is not an executable program (install mosquitto, or set the "
                        "key)\n", cfg->eb_binary ? cfg->eb_binary : "");
        return -1;
    }
    return 0;
}

static int require(const char *value, const char *key)
{
    if (value && *value)
        return 0;
    fprintf(stderr, "edgecore: key \"%s\" is required (keadm join writes it)\n", key);
    return -1;
}

/* One row per module, in start order (stopped in reverse). Adding a
 * module: its enable key above, its config, and a row here. */
typedef struct module_row {
    const ke_module_ops *ops;
    const bool *enable;
    void *config;
} module_row;

/* rotate_now: on the loop, SIGHUP's request to EdgeHub. */
static void rotate_now(void *arg)
{
    ke_rt *e = arg;
    if (!ke_rt_has_module(e, "edgehub"))
        return;
    Ke__V1__Message *m = ke_rt_message_new("edgecore", "", KE__V1__OPERATION__OPERATION_UPDATE,
                                           EDGEHUB_ROTATE, NULL, 0);
    int rc = m ? ke_rt_send_to(e, "edgehub", m) : KE_ENOMEM;
    if (rc != 0) {
        if (m)
            ke__v1__message__free_unpacked(m, NULL);
        ke_log_warn("edgecore", "rotation request not delivered: %s", ke_strerror(rc));
    }
}

/* Signals are taken by a thread of their own, not by the loop: a SIGTERM
 * must end edgecore even when the loop is stuck. It arms the shutdown
 * deadline first, then asks the runtime to stop. */
typedef struct sig_thread {
    ke_rt *rt;
    sigset_t set;
    int64_t shutdown_ms;
} sig_thread;

static void *signals_main(void *arg)
{
    sig_thread *t = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&t->set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            ke_log_info("edgecore", "SIGHUP: rotating the node certificate");
            int rc = ke_rt_post(t->rt, rotate_now, t->rt, 0);
            if (rc != 0)
                ke_log_warn("edgecore", "rotation request not delivered: %s", ke_strerror(rc));
            continue;
        }
        ke_log_info("edgecore", "stopping signal=%d", sig);
        int rc = ke_watchdog_shutdown_arm(t->shutdown_ms);
        if (rc != 0 && rc != KE_EEXIST)
            ke_log_error("edgecore", "cannot arm the shutdown deadline: %s", ke_strerror(rc));
        ke_rt_stop(t->rt);
        return NULL;
    }
}

typedef struct ready_line {
    const char *local;
} ready_line;

/* on_started: the line tests and supervisors wait for, once every module
 * (the local API's socket included) is up. */
static void on_started(ke_rt *e, void *arg)
{
    ready_line *r = arg;
    printf("ready local=%s http=%d\n", r->local, ke_rt_http_port(e));
    fflush(stdout);
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
    edge_store *store = NULL;
    ke_rpc_loop *loop = NULL;
    ke_rt *edge = NULL;
    ke_log_level level;
    if (ke_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr, "edgecore: key \"log_level\": expected debug, info, warn or error\n");
        goto out;
    }
    ke_log_set_level(level);
    if (require(cfg.node_name, "node_name"))
        goto out;
    if (cfg.en_edgehub && (require(cfg.server, "edgehub.server") ||
                           require(cfg.ca, "edgehub.tls.ca") || require(cfg.cert, "edgehub.tls.cert") ||
                           require(cfg.key, "edgehub.tls.key")))
        goto out;
    if ((cfg.en_edgehub || cfg.en_edgelocal || cfg.en_edged || cfg.en_eventbus ||
         cfg.en_devicetwin) &&
        !cfg.en_metamanager) {
        fprintf(stderr, "edgecore: modules.edgehub, modules.edgelocal, modules.edged, "
                        "modules.eventbus and modules.devicetwin need "
                        "modules.metamanager.enable: true\n");
        goto out;
    }
    if (cfg.window < 1 || cfg.window > 65536 || cfg.outbox_max < 1 ||
        cfg.outbox_max > UINT32_MAX || cfg.reported_max < 1 || cfg.reported_max > UINT32_MAX) {
        fprintf(stderr, "edgecore: edgehub.window must be 1..65536, metamanager.outbox_max and "
                        "metamanager.reported_max 1..4294967295\n");
        goto out;
    }
    if (cfg.relist < 100 || cfg.relist > 600000 || cfg.backoff_first < 0 ||
        cfg.backoff_cap < cfg.backoff_first || cfg.backoff_cap > 86400000) {
        fprintf(stderr, "edgecore: edged.relist_period must be between 100ms and 10m, and "
                        "edged.backoff_initial <= edged.backoff_max <= 24h\n");
        goto out;
    }
    if (cfg.stall_timeout < 1000 || cfg.stall_timeout > 3600000 ||
        cfg.shutdown_timeout < 1000 || cfg.shutdown_timeout > 3600000) {
        fprintf(stderr, "edgecore: health.stall_timeout and shutdown.timeout must be "
                        "between 1s and 1h\n");
        goto out;
    }
    if (cfg.eb_backoff_initial < 1 || cfg.eb_backoff_max < cfg.eb_backoff_initial ||
        cfg.eb_backoff_max > 3600000) {
        fprintf(stderr, "edgecore: eventbus.backoff_initial must be at least 1ms and at most "
                        "eventbus.backoff_max, which is at most 1h\n");
        goto out;
    }
    bool eb_internal = cfg.eb_mode && strcmp(cfg.eb_mode, "internal") == 0;
    if (!cfg.eb_mode || (!eb_internal && strcmp(cfg.eb_mode, "external") != 0)) {
        fprintf(stderr, "edgecore: modules.eventbus.mode must be external or internal (got "
                        "\"%s\")\n", cfg.eb_mode ? cfg.eb_mode : "");
        goto out;
    }
    if (eb_internal && cfg.en_eventbus && check_internal_broker(&cfg) != 0)
        goto out;
    char sb_why[300];
    if (ke_servicebus_check_allow(cfg.sb_allow, sb_why, sizeof(sb_why)) != 0) {
        fprintf(stderr, "edgecore: modules.servicebus.allow: %s\n", sb_why);
        goto out;
    }
    char ms_why[300];
    if (cfg.en_metaserver &&
        metaserver_check_listen(cfg.ms_listen, ms_why, sizeof(ms_why)) != 0) {
        fprintf(stderr, "edgecore: modules.metaserver.listen: %s\n", ms_why);
        goto out;
    }
    if (cfg.en_metaserver && strcmp(cfg.db, ":memory:") == 0) {
        fprintf(stderr, "edgecore: modules.metaserver needs the store in a file (metamanager.db "
                        "is :memory:); set modules.metaserver.enable: false\n");
        goto out;
    }
    status = 1;
    signal(SIGPIPE, SIG_IGN);
    /* Blocked here, before any thread exists, so every thread inherits it
     * and only the signal thread takes them. */
    sig_thread sigs = {.shutdown_ms = cfg.shutdown_timeout};
    sigemptyset(&sigs.set);
    sigaddset(&sigs.set, SIGTERM);
    sigaddset(&sigs.set, SIGINT);
    sigaddset(&sigs.set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs.set, NULL);
    ke_watchdog_set_default_stall(cfg.stall_timeout);
    if ((rc = ke_watchdog_start()) != 0) /* stall logs and gauges; /healthz checks anyway */
        ke_log_warn("edgecore", "watchdog monitor not started: %s", ke_strerror(rc));

    edge_store_opts mo = {.path = cfg.db,
                          .audit = cfg.audit,
                          .outbox_max = (uint32_t)cfg.outbox_max,
                          .reported_max = (uint32_t)cfg.reported_max};
    if ((rc = edge_store_open(&mo, &store)) != 0) {
        ke_log_error("edgecore", "cannot open the edge store db=%s: %s", cfg.db, ke_strerror(rc));
        goto out;
    }
    if ((rc = ke_rpc_loop_new(2, &loop)) != 0)
        goto out;
    ready_line ready = {cfg.en_edgelocal ? cfg.local_listen : "-"};
    ke_rt_config ec = {.store = store,
                         .rpc = loop,
                         .http_listen = cfg.http_listen,
                         .on_started = on_started,
                         .started_arg = &ready};
    if ((rc = ke_rt_new(&ec, &edge)) != 0) {
        ke_log_error("edgecore", "cannot start the runtime (http.listen=%s): %s",
                     cfg.http_listen ? cfg.http_listen : "", ke_strerror(rc));
        goto out;
    }
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
    edgelocal_config lc = {.listen = cfg.local_listen};
    /* edgecore's data directory: the store's; Edged's root defaults to
     * edged/ in it */
    char data_dir[4096], edged_root[4200];
    const char *db_slash = strrchr(cfg.db, '/');
    if (db_slash == cfg.db)
        snprintf(data_dir, sizeof(data_dir), "/");
    else
        snprintf(data_dir, sizeof(data_dir), "%.*s", db_slash ? (int)(db_slash - cfg.db) : 1,
                 db_slash ? cfg.db : ".");
    if (cfg.edged_root && *cfg.edged_root)
        snprintf(edged_root, sizeof(edged_root), "%s", cfg.edged_root);
    else
        snprintf(edged_root, sizeof(edged_root), "%s/edged", data_dir);
    char eb_dir[4200];
    snprintf(eb_dir, sizeof(eb_dir), "%s/mosquitto", data_dir);
    edged_config dc = {.node_name = cfg.node_name,
                       .runtime_endpoint = cfg.cri_endpoint,
                       .root_dir = edged_root,
                       .relist_ms = cfg.relist,
                       .backoff_initial_ms = cfg.backoff_first,
                       .backoff_max_ms = cfg.backoff_cap};
    eventbus_config bc = {.node_name = cfg.node_name,
                          .broker = cfg.eb_broker,
                          .client_id = cfg.eb_client_id,
                          .username = cfg.eb_user,
                          .password = cfg.eb_password,
                          .ca_file = cfg.eb_ca,
                          .subscribe = cfg.eb_subscribe,
                          .backoff_initial_ms = cfg.eb_backoff_initial,
                          .backoff_max_ms = cfg.eb_backoff_max,
                          .internal = eb_internal,
                          .broker_binary = cfg.eb_binary,
                          .broker_dir = eb_dir};
    devicetwin_config tc = {.node_name = cfg.node_name};
    /* DeviceTwin's topics reach it through EventBus */
    char dt_filters[DEVICETWIN_FILTERS_N][DEVICETWIN_FILTER_MAX];
    eventbus_route routes[DEVICETWIN_FILTERS_N];
    if (cfg.en_devicetwin) {
        bc.n_routes = devicetwin_filters(cfg.node_name, dt_filters, DEVICETWIN_FILTERS_N);
        for (size_t i = 0; i < bc.n_routes; i++)
            routes[i] = (eventbus_route){dt_filters[i], devicetwin_module.name};
        bc.routes = routes;
    }
    servicebus_config sc = {.node_name = cfg.node_name, .allow = cfg.sb_allow};
    metaserver_config msc = {.node_name = cfg.node_name, .listen = cfg.ms_listen,
                             .db_path = cfg.db};
    const module_row modules[] = {
        {&metamanager_module, &cfg.en_metamanager, NULL},
        {&edgehub_module, &cfg.en_edgehub, &hc},
        {&edgelocal_module, &cfg.en_edgelocal, &lc},
        {&edged_module, &cfg.en_edged, &dc},
        {&eventbus_module, &cfg.en_eventbus, &bc},
        {&devicetwin_module, &cfg.en_devicetwin, &tc},
        {&servicebus_module, &cfg.en_servicebus, &sc},
        {&metaserver_module, &cfg.en_metaserver, &msc},
    };
    for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
        if (*modules[i].enable && (rc = ke_rt_add(edge, modules[i].ops, modules[i].config)) != 0) {
            ke_log_error("edgecore", "cannot register module %s: %s", modules[i].ops->name,
                         ke_strerror(rc));
            goto out;
        }
    report_node_status(store, cfg.node_name, data_dir);
    ke_log_info("edgecore", "running version=%s node=%s server=%s local=%s", EDGECORE_VERSION,
                cfg.node_name, cfg.server ? cfg.server : "-", cfg.local_listen);
    /* The runtime arms the shutdown deadline (ke_watchdog.h) when it
     * starts stopping: a stuck module cannot keep edgecore alive. */
    sigs.rt = edge;
    pthread_t sig_tid;
    if (pthread_create(&sig_tid, NULL, signals_main, &sigs) != 0) {
        ke_log_error("edgecore", "cannot start the signal thread");
        goto out;
    }
    pthread_detach(sig_tid); /* it ends at the first SIGTERM, or with the process */
    rc = ke_rt_run(edge);
    if (rc == 0)
        status = 0;
out:
    if (status != 2 && (rc = ke_watchdog_shutdown_arm(0)) != 0 && rc != KE_EEXIST)
        ke_log_error("edgecore", "cannot arm the shutdown deadline: %s", ke_strerror(rc));
    ke_watchdog_shutdown_step("runtime");
    ke_rt_free(edge);
    ke_watchdog_shutdown_step("rpc loop");
    ke_rpc_loop_free(loop);
    edge_store_close(store);
    ke_watchdog_shutdown_done();
    ke_watchdog_stop();
    ke_config_free(edgecore_fields, KE_CONFIG_NFIELDS(edgecore_fields), &cfg);
    return status;
}
