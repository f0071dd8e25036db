/*
 * cloudcore — the cloud side of kubeedge-c in one process.
 *
 * Hosts the project's gRPC services on one server (plaintext or TLS, with
 * optional mutual TLS), Diagnostics beside them, and an HTTP endpoint with
 * /metrics and /healthz. Configuration: a YAML file (--config) and flags,
 * described by the table below (`cloudcore --help`).
 *
 * Once everything listens it prints one line on stdout:
 *   ready grpc=<port> http=<port>
 * which scripts and tests wait for. SIGTERM/SIGINT start an orderly
 * shutdown with a deadline (shutdown.timeout): if a stuck component keeps
 * it from finishing, the watchdog logs what had not stopped and the process
 * exits with status 1 (KE_WATCHDOG_EXIT_DEADLINE). /healthz is 503 while a
 * worker's heartbeat is older than health.stall_timeout (ke_watchdog.h).
 *
 * `--reencrypt-secrets` is an action, not a key: with the same config it
 * opens the store, rewrites every Secret with the first key of
 * store.encryption_key_file (ke_store_reencrypt), prints what it did and
 * exits, serving nothing (docs/security.md, "Secrets at rest").
 */
#include "cloudhub.h"
#include "devicecontroller.h"
#include "edgecontroller.h"
#include "kubeapi.h"
#include "ke_store.h"
#include "tls_buffers.h"
#include "ke_authz.h"
#include "ke_config.h"
#include "ke_crypt.h"
#include "ke_diag.h"
#include "ke_err.h"
#include "ke_http.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_rpc.h"
#include "ke_watchdog.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#define CLOUDCORE_VERSION "0.1.0"

/* The same program builds as cloudcore (every service), cloudhub (CloudHub
 * alone) and edgecontroller (EdgeController and DeviceController, which
 * share the store, reaching a CloudHub elsewhere through hub.server). */
#ifndef KE_PROGRAM
#define KE_PROGRAM "cloudcore"
#endif
#ifndef KE_DEFAULT_CLOUDHUB
#define KE_DEFAULT_CLOUDHUB "true"
#endif
#ifndef KE_DEFAULT_CONTROLLERS
#define KE_DEFAULT_CONTROLLERS "true"
#endif

struct cloudcore_config {
    char *log_level;
    char *grpc_listen;
    int64_t grpc_threads;
    int64_t grpc_max_message;
    int64_t grpc_send_queue_bytes;
    int64_t grpc_max_streams_id;
    int64_t grpc_max_conc_streams;
    int64_t tls_max_frame;
    bool tls_release_buffers;
    int64_t hub_hello_timeout;
    int64_t hub_hello_concurrency;
    int64_t hub_uplog_node_window;
    int64_t mem_trim_interval;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_client_auth;
    char *http_listen;
    bool hub_enable;
    char *hub_db;
    char *hub_ca_key;
    char *hub_token_secret;
    int64_t hub_cert_ttl;
    int64_t hub_keepalive;
    int64_t hub_dead_peer;
    int64_t hub_queue_max;
    int64_t hub_window;
    int64_t hub_uplog_node_max;
    char *store_db;
    char *store_key_file;
    int64_t store_history;
    bool ec_enable;
    int64_t ec_node_grace;
    int64_t ec_resync;
    int64_t ec_sync_qps;
    int64_t stall_timeout;
    int64_t shutdown_timeout;
    char *remote_hub, *remote_ca, *remote_cert, *remote_key;
    bool kubeapi_enable;
    char *kubeapi_listen;
    int64_t kubeapi_conns;
    int64_t kubeapi_bookmark;
};

static const ke_config_field cloudcore_fields[] = {
    {"log_level", KE_CONFIG_STRING, offsetof(struct cloudcore_config, log_level), "info",
     "debug, info, warn or error"},
    {"grpc.listen", KE_CONFIG_STRING, offsetof(struct cloudcore_config, grpc_listen),
     "0.0.0.0:10000", "gRPC address (host:port; port 0 picks one)"},
    {"grpc.threads", KE_CONFIG_INT64, offsetof(struct cloudcore_config, grpc_threads), "2",
     "threads serving gRPC completions"},
    {"grpc.max_message_bytes", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, grpc_max_message), "4194304",
     "largest message accepted; larger ones get RESOURCE_EXHAUSTED"},
    {"grpc.send_queue_bytes", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, grpc_send_queue_bytes), "4194304",
     "bytes queued for sending on one stream (one larger message still goes alone); a watcher "
     "that does not read past it is closed with RESOURCE_EXHAUSTED"},
    {"grpc.max_streams_per_identity", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, grpc_max_streams_id), "256",
     "open streaming calls per client identity (certificate user; all anonymous callers "
     "together); past it RESOURCE_EXHAUSTED; the controllers in-process are exempt"},
    {"grpc.max_concurrent_streams", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, grpc_max_conc_streams), "1024",
     "concurrent calls on one HTTP/2 connection (grpc's channel argument)"},
    {"memory.trim_interval", KE_CONFIG_DURATION,
     offsetof(struct cloudcore_config, mem_trim_interval), "10s",
     "how often freed heap is given back to the system (malloc_trim, off the rpc threads)"},
    {"grpc.tls.ca", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_ca), NULL,
     "CA certificate (PEM) that verifies client certificates"},
    {"grpc.tls.cert", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_cert), NULL,
     "server certificate (PEM); empty = plaintext"},
    {"grpc.tls.key", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_key), NULL,
     "server private key (PEM)"},
    {"grpc.tls.client_auth", KE_CONFIG_STRING,
     offsetof(struct cloudcore_config, tls_client_auth), "request",
     "client certificates: request (verify when sent; CloudHub checks per method), require or none"},
    {"grpc.tls.max_frame_size", KE_CONFIG_INT64, offsetof(struct cloudcore_config, tls_max_frame),
     "4096",
     "largest TLS record sent (1024..16384); each connection keeps a buffer this large, so "
     "smaller saves memory per connected node and larger saves CPU on large messages"},
    {"grpc.tls.release_buffers", KE_CONFIG_BOOL,
     offsetof(struct cloudcore_config, tls_release_buffers), "true",
     "free each TLS connection's OpenSSL record buffers while they are empty "
     "(SSL_MODE_RELEASE_BUFFERS): less memory per idle node, a malloc per record"},
    {"http.listen", KE_CONFIG_STRING, offsetof(struct cloudcore_config, http_listen),
     "127.0.0.1:10550", "address of /metrics and /healthz"},
    {"cloudhub.enable", KE_CONFIG_BOOL, offsetof(struct cloudcore_config, hub_enable),
     KE_DEFAULT_CLOUDHUB,
     "serve CloudHub (needs grpc.tls.* and the cloudhub.* files from keadm init)"},
    {"cloudhub.db", KE_CONFIG_STRING, offsetof(struct cloudcore_config, hub_db),
     "/var/lib/kubeedge/cloudhub.db", "CloudHub's SQLite file (nodes, objects per node)"},
    {"cloudhub.ca_key", KE_CONFIG_STRING, offsetof(struct cloudcore_config, hub_ca_key), NULL,
     "private key of grpc.tls.ca; signs node certificates"},
    {"cloudhub.token_secret", KE_CONFIG_STRING,
     offsetof(struct cloudcore_config, hub_token_secret), NULL,
     "file with the join token secret (hex)"},
    {"cloudhub.node_cert_ttl", KE_CONFIG_DURATION, offsetof(struct cloudcore_config, hub_cert_ttl),
     "8760h", "validity of node certificates issued at join and renewal"},
    {"cloudhub.keepalive", KE_CONFIG_DURATION, offsetof(struct cloudcore_config, hub_keepalive),
     "5s", "how often edge nodes send a keepalive"},
    {"cloudhub.dead_peer", KE_CONFIG_DURATION, offsetof(struct cloudcore_config, hub_dead_peer),
     "15s", "a node silent this long is disconnected"},
    {"cloudhub.queue_max", KE_CONFIG_INT64, offsetof(struct cloudcore_config, hub_queue_max),
     "65536", "message bodies a node's downstream queue holds in memory; past it, messages are re-read from the store when sent"},
    {"cloudhub.window", KE_CONFIG_INT64, offsetof(struct cloudcore_config, hub_window), "256",
     "downstream messages in flight per node before an ack (at most 960: the rest of the "
     "stream's send queue is kept for acks and keepalives)"},
    {"cloudhub.uplog_node_max", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, hub_uplog_node_max), "10000",
     "distinct resources of one node waiting in the durable upstream log for consumers; past "
     "it the node's reports are not acked (it retries from its outbox)"},
    {"cloudhub.uplog_node_window", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, hub_uplog_node_window), "256",
     "a node's entries in the upstream log at a time, so that one node's flood is at most this "
     "far ahead of another node's report; later reports wait unacked in memory (at most 16384 "
     "or 16 MiB per node) until consumers make room; >= uplog_node_max turns it off"},
    {"cloudhub.hello_timeout", KE_CONFIG_DURATION,
     offsetof(struct cloudcore_config, hub_hello_timeout), "30s",
     "a tunnel stream must send its first frame within this and complete its hello (digest "
     "included) within this of it; else it is closed with DEADLINE_EXCEEDED"},
    {"cloudhub.hello_concurrency", KE_CONFIG_INT64,
     offsetof(struct cloudcore_config, hub_hello_concurrency), "256",
     "admission control: tunnels between their hello and their resync's end at once (1..100000); "
     "a hello past it is refused with RESOURCE_EXHAUSTED and a retry_after that spreads a "
     "reconnect storm"},
    {"store.db", KE_CONFIG_STRING, offsetof(struct cloudcore_config, store_db),
     "/var/lib/kubeedge/store.db", "the resource store's SQLite file (embedded mode)"},
    {"store.history", KE_CONFIG_INT64, offsetof(struct cloudcore_config, store_history), "10000",
     "changes kept for watches and paginated lists; a watch or continue token older than them "
     "gets 410 Gone and lists again"},
    {"store.encryption_key_file", KE_CONFIG_STRING,
     offsetof(struct cloudcore_config, store_key_file), NULL,
     "key file encrypting Secrets at rest (lines \"name: base64 of 32 bytes\"; the first "
     "encrypts, all decrypt); empty: off"},
    {"edgecontroller.enable", KE_CONFIG_BOOL, offsetof(struct cloudcore_config, ec_enable),
     KE_DEFAULT_CONTROLLERS, "serve EdgeController and DeviceController"},
    {"hub.server", KE_CONFIG_STRING, offsetof(struct cloudcore_config, remote_hub), NULL,
     "CloudHub address for the controllers when CloudHub runs elsewhere (empty: in-process)"},
    {"hub.tls.ca", KE_CONFIG_STRING, offsetof(struct cloudcore_config, remote_ca), NULL,
     "CA of the remote CloudHub"},
    {"hub.tls.cert", KE_CONFIG_STRING, offsetof(struct cloudcore_config, remote_cert), NULL,
     "client certificate for the remote Hub API (CN system:*, e.g. keadm's admin.crt)"},
    {"hub.tls.key", KE_CONFIG_STRING, offsetof(struct cloudcore_config, remote_key), NULL,
     "its private key"},
    {"edgecontroller.node_grace", KE_CONFIG_DURATION,
     offsetof(struct cloudcore_config, ec_node_grace), "40s",
     "a node without its tunnel this long becomes NotReady"},
    {"edgecontroller.resync", KE_CONFIG_DURATION, offsetof(struct cloudcore_config, ec_resync),
     "60s", "every node's objects are checked against CloudHub at least this often"},
    {"edgecontroller.sync_qps", KE_CONFIG_INT64, offsetof(struct cloudcore_config, ec_sync_qps),
     "500", "node reconciliations per second at most (each controller)"},
    {"kubeapi.enable", KE_CONFIG_BOOL, offsetof(struct cloudcore_config, kubeapi_enable),
     KE_DEFAULT_CONTROLLERS,
     "serve the Kubernetes API (kubectl, client libraries) beside the controllers; HTTPS with "
     "grpc.tls.* (needs edgecontroller.enable and TLS)"},
    {"kubeapi.listen", KE_CONFIG_STRING, offsetof(struct cloudcore_config, kubeapi_listen),
     "0.0.0.0:6443", "address of the Kubernetes API (host:port; port 0 picks one)"},
    {"kubeapi.max_connections", KE_CONFIG_INT64, offsetof(struct cloudcore_config, kubeapi_conns),
     "256", "concurrent connections to the Kubernetes API (each watch holds one)"},
    {"kubeapi.watch_bookmark_interval", KE_CONFIG_DURATION,
     offsetof(struct cloudcore_config, kubeapi_bookmark), "15s",
     "how often a watch that allows bookmarks gets one (its latest resourceVersion)"},
    {"health.stall_timeout", KE_CONFIG_DURATION,
     offsetof(struct cloudcore_config, stall_timeout), "30s",
     "a worker thread (rpc loop, store watch, work queue, consumer, reaper) silent this long "
     "turns /healthz to 503"},
    {"shutdown.timeout", KE_CONFIG_DURATION, offsetof(struct cloudcore_config, shutdown_timeout),
     "10s", "after SIGTERM, exit with status 1 if the orderly shutdown has not finished by then"},
};

static int parse_client_auth(const char *s, ke_rpc_client_auth *out)
{
    if (strcmp(s, "require") == 0)
        *out = KE_RPC_CLIENT_AUTH_REQUIRE;
    else if (strcmp(s, "request") == 0)
        *out = KE_RPC_CLIENT_AUTH_REQUEST;
    else if (strcmp(s, "none") == 0)
        *out = KE_RPC_CLIENT_AUTH_NONE;
    else
        return KE_EINVAL;
    return 0;
}

/* store_open opens the store and, when a key file is named, turns
 * encryption at rest on. Returns 0, or a KE_E* code after logging why. */
static int store_open(const struct cloudcore_config *cfg, ke_store **out)
{
    ke_crypt *kr = NULL;
    char why[512];
    int rc;
    if (cfg->store_key_file && *cfg->store_key_file) {
        if ((rc = ke_crypt_load(cfg->store_key_file, &kr, why, sizeof(why))) != 0) {
            ke_log_error(KE_PROGRAM, "store.encryption_key_file: %s", why);
            return rc;
        }
        if (!ke_crypt_file_private(cfg->store_key_file))
            ke_log_warn(KE_PROGRAM, "store.encryption_key_file is readable by others: chmod 600 %s",
                        cfg->store_key_file);
    }
    if ((rc = ke_store_open(cfg->store_db, out)) != 0) {
        ke_log_error(KE_PROGRAM, "cannot open the store db=%s", cfg->store_db);
        ke_crypt_free(kr);
        return rc;
    }
    if ((rc = ke_store_set_history(*out, (uint64_t)cfg->store_history)) != 0) {
        ke_log_error(KE_PROGRAM, "store.history: must be 1..%d, not %lld", KE_STORE_HISTORY_MAX,
                     (long long)cfg->store_history);
        ke_store_close(*out);
        *out = NULL;
        ke_crypt_free(kr);
        return rc;
    }
    if (kr && (rc = ke_store_set_crypt(*out, kr)) != 0) {
        ke_store_close(*out);
        *out = NULL;
    }
    return rc;
}

/* reencrypt_secrets is `--reencrypt-secrets`: exit status 0 when every
 * Secret is sealed with the first key, 1 otherwise. */
static int reencrypt_secrets(const struct cloudcore_config *cfg)
{
    if (!cfg->store_key_file || !*cfg->store_key_file) {
        fprintf(stderr, KE_PROGRAM ": --reencrypt-secrets needs store.encryption_key_file\n");
        return 2;
    }
    ke_store *store = NULL;
    ke_store_reencrypt_stats st;
    memset(&st, 0, sizeof(st));
    int rc = store_open(cfg, &store);
    if (rc == 0)
        rc = ke_store_reencrypt(store, &st);
    ke_store_close(store);
    if (rc == 0 || rc == KE_ECRYPT)
        printf("reencrypted secrets: objects rewritten=%llu current=%llu failed=%llu; "
               "history events rewritten=%llu current=%llu failed=%llu\n",
               (unsigned long long)st.objects.rewritten, (unsigned long long)st.objects.current,
               (unsigned long long)st.objects.failed, (unsigned long long)st.events.rewritten,
               (unsigned long long)st.events.current, (unsigned long long)st.events.failed);
    if (rc != 0)
        fprintf(stderr, KE_PROGRAM ": --reencrypt-secrets: %s%s\n", ke_strerror(rc),
                rc == KE_ECRYPT ? " (rows whose key is missing were left as they are: keep "
                                  "their key in the file; the log names them)" : "");
    return rc == 0 ? 0 : 1;
}

/* memory_setup keeps large buffers (watch events of big objects, digests,
 * grpc's message slices) out of the heap: allocations from 256 KiB up are
 * mapped and unmapped on their own, so freeing them gives the memory back
 * at once. glibc's dynamic threshold would otherwise grow after the first
 * large free and keep later ones on the heap, where hostile clients' peaks
 * stay resident after they go. */
static void memory_setup(void)
{
    if (mallopt(M_MMAP_THRESHOLD, 256 * 1024) != 1 || mallopt(M_TRIM_THRESHOLD, 1024 * 1024) != 1)
        ke_log_warn(KE_PROGRAM, "cannot set malloc thresholds: freed memory may stay resident");
}

/* wait_for_signal waits for SIGTERM or SIGINT on the main thread, and
 * meanwhile gives freed heap back to the system every trim_ms
 * (malloc_trim walks every arena: here, never on an rpc thread). */
static int wait_for_signal(int64_t trim_ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    for (;;) {
        struct timespec ts = {.tv_sec = trim_ms / 1000, .tv_nsec = (trim_ms % 1000) * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno != EAGAIN && errno != EINTR) {
            ke_log_error(KE_PROGRAM, "sigtimedwait: %s", strerror(errno));
            int s = 0;
            sigwait(&set, &s);
            return s;
        }
        if (errno == EAGAIN)
            malloc_trim(0);
    }
}

/* raise_open_files takes the open-files soft limit up to the hard one:
 * every connected edge node holds a socket, and grpc stops accepting on a
 * port for good after one EMFILE (ke_rpc_listener_failed). Says the limit. */
static void raise_open_files(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        ke_log_warn(KE_PROGRAM, "cannot read the open-files limit: %s", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            ke_log_warn(KE_PROGRAM, "cannot raise the open-files limit from %llu to %llu: %s",
                        (unsigned long long)was, (unsigned long long)rl.rlim_max,
                        strerror(errno));
            rl.rlim_cur = was;
        }
    }
    ke_log_info(KE_PROGRAM, "open files limit %llu (was %llu): each connected edge node holds "
                            "one; past the limit grpc stops accepting until a restart",
                (unsigned long long)rl.rlim_cur, (unsigned long long)was);
}

int main(int argc, char **argv)
{
    struct cloudcore_config cfg = {0};
    char err[KE_CONFIG_ERR_MAX];
    /* --reencrypt-secrets is an action: taken out before the keys parse. */
    int reencrypt = 0, kept = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--reencrypt-secrets") == 0)
            reencrypt = 1;
        else
            argv[kept++] = argv[i];
    }
    argc = kept;
    int rc = ke_config_parse_args(cloudcore_fields, KE_CONFIG_NFIELDS(cloudcore_fields), &cfg,
                                  argc, argv, err, sizeof(err));
    if (rc == KE_CONFIG_HELP) {
        printf("\nAction:\n  --reencrypt-secrets  rewrite every Secret in the store with the first "
               "key of\n                       store.encryption_key_file, print counts and exit\n");
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, KE_PROGRAM ": %s\n", err);
        return 2;
    }
    int status = 1;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_diag *diag = NULL;
    ke_http *http = NULL;
    cloudhub *hub = NULL;
    ke_store *store = NULL;
    edgecontroller *ec = NULL;
    devicecontroller *dc = NULL;
    ke_rpc_channel *self = NULL;
    ke_authz *authz = NULL;
    kubeapi *kapi = NULL;
    ke_rpc_channel *kapi_self = NULL; /* the gateway's calls to EdgeController (pod logs) */
    ke_log_level level;
    ke_rpc_tls tls = {0};

    if (ke_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr, KE_PROGRAM ": key \"log_level\": expected debug, info, warn or error, "
                        "got \"%s\"\n", cfg.log_level);
        status = 2;
        goto out;
    }
    ke_log_set_level(level);
    if (reencrypt) {
        status = reencrypt_secrets(&cfg);
        goto out;
    }
    if (cfg.grpc_threads < 1 || cfg.grpc_threads > 64 || cfg.grpc_max_message < 1024 ||
        cfg.grpc_max_message > (1 << 30)) {
        fprintf(stderr, KE_PROGRAM ": grpc.threads must be 1..64 and grpc.max_message_bytes "
                        "1 KiB..1 GiB\n");
        status = 2;
        goto out;
    }
    if (parse_client_auth(cfg.tls_client_auth, &tls.client_auth) != 0) {
        fprintf(stderr, KE_PROGRAM ": key \"grpc.tls.client_auth\": expected require, request "
                        "or none, got \"%s\"\n", cfg.tls_client_auth);
        status = 2;
        goto out;
    }
    if (cfg.grpc_send_queue_bytes < 1024 || cfg.grpc_send_queue_bytes > (1 << 30) ||
        cfg.grpc_max_streams_id < 1 || cfg.grpc_max_streams_id > 1000000 ||
        cfg.grpc_max_conc_streams < 1 || cfg.grpc_max_conc_streams > 1000000 ||
        cfg.tls_max_frame < KE_RPC_TLS_MAX_FRAME_MIN || cfg.tls_max_frame > KE_RPC_TLS_MAX_FRAME_MAX ||
        cfg.hub_hello_timeout < 100 || cfg.hub_hello_timeout > 3600000 ||
        cfg.mem_trim_interval < 100 || cfg.mem_trim_interval > 3600000) {
        fprintf(stderr, KE_PROGRAM ": grpc.send_queue_bytes must be 1 KiB..1 GiB, "
                        "grpc.max_streams_per_identity and grpc.max_concurrent_streams "
                        "1..1000000, grpc.tls.max_frame_size 1024..16384, "
                        "cloudhub.hello_timeout and memory.trim_interval 100ms..1h\n");
        status = 2;
        goto out;
    }
    memory_setup();
    if (tls_buffers_setup(cfg.tls_release_buffers) != 0 && cfg.tls_release_buffers)
        ke_log_warn(KE_PROGRAM, "grpc.tls.release_buffers: OpenSSL's SSL_new is not this "
                                "program's (static libssl?): TLS buffers are kept while idle");
    if (cfg.stall_timeout < 1000 || cfg.stall_timeout > 3600000 ||
        cfg.shutdown_timeout < 1000 || cfg.shutdown_timeout > 3600000) {
        fprintf(stderr, KE_PROGRAM ": health.stall_timeout and shutdown.timeout must be "
                        "1s..1h\n");
        status = 2;
        goto out;
    }
    ke_watchdog_set_default_stall(cfg.stall_timeout);
    tls.ca_file = cfg.tls_ca && *cfg.tls_ca ? cfg.tls_ca : NULL;
    tls.cert_file = cfg.tls_cert;
    tls.key_file = cfg.tls_key;
    bool use_tls = cfg.tls_cert && *cfg.tls_cert;

    /* Signals are taken synchronously by the main thread only. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_open_files();
    if ((rc = ke_watchdog_start()) != 0)
        goto fail;

    if (cfg.hub_enable && (!use_tls || !tls.ca_file || !cfg.hub_ca_key || !*cfg.hub_ca_key ||
                           !cfg.hub_token_secret || !*cfg.hub_token_secret)) {
        fprintf(stderr, KE_PROGRAM ": CloudHub needs grpc.tls.ca, grpc.tls.cert, grpc.tls.key, "
                        "cloudhub.ca_key and cloudhub.token_secret: run `keadm init --dir DIR` "
                        "and start with --config DIR/cloudcore.yaml (or --cloudhub.enable=false)\n");
        status = 2;
        goto out;
    }
    if (cfg.hub_queue_max < 16 || cfg.hub_window < 1 || cfg.hub_window > CLOUDHUB_WINDOW_MAX ||
        cfg.hub_uplog_node_max < 1 || cfg.hub_uplog_node_max > 100000000 ||
        cfg.hub_uplog_node_window < 1 || cfg.hub_uplog_node_window > 100000000 ||
        cfg.hub_hello_concurrency < 1 || cfg.hub_hello_concurrency > 100000) {
        fprintf(stderr, KE_PROGRAM ": cloudhub.queue_max must be >= 16, cloudhub.window 1..%u "
                        "(the stream's send queue keeps room for acks and keepalives), "
                        "cloudhub.uplog_node_max and cloudhub.uplog_node_window 1..100000000 "
                        "and cloudhub.hello_concurrency 1..100000\n",
                CLOUDHUB_WINDOW_MAX);
        status = 2;
        goto out;
    }
    if (cfg.hub_enable) {
        cloudhub_config hc = {
            .db_path = cfg.hub_db,
            .ca_cert_file = tls.ca_file,
            .ca_key_file = cfg.hub_ca_key,
            .token_secret_file = cfg.hub_token_secret,
            .node_cert_ttl_ms = cfg.hub_cert_ttl,
            .keepalive_ms = cfg.hub_keepalive,
            .dead_peer_ms = cfg.hub_dead_peer,
            .queue_max = (uint32_t)cfg.hub_queue_max,
            .window = (uint32_t)cfg.hub_window,
            .uplog_node_max = (uint32_t)cfg.hub_uplog_node_max,
            .hello_timeout_ms = cfg.hub_hello_timeout,
            .uplog_node_window = (uint32_t)cfg.hub_uplog_node_window,
            .hello_concurrency = (uint32_t)cfg.hub_hello_concurrency,
        };
        if ((rc = cloudhub_new(&hc, &hub)) != 0)
            goto fail;
    }
    int remote = cfg.remote_hub && *cfg.remote_hub;
    if (cfg.ec_enable && !hub && !remote) {
        if (strcmp(KE_DEFAULT_CLOUDHUB, "false") == 0) {
            fprintf(stderr, KE_PROGRAM ": the controllers need a CloudHub: name it with "
                                       "hub.server (and hub.tls.*)\n");
            status = 2;
            goto out;
        }
        ke_log_info(KE_PROGRAM, "CloudHub is off here and hub.server is empty: "
                                "the controllers are off too");
        cfg.ec_enable = false;
    }
    if (cfg.ec_enable) {
        if (cfg.ec_resync < 1000 || cfg.ec_resync > 86400000 || cfg.ec_sync_qps < 1 ||
            cfg.ec_sync_qps > 100000) {
            fprintf(stderr, KE_PROGRAM ": edgecontroller.resync must be 1s..24h and "
                                       "edgecontroller.sync_qps 1..100000\n");
            status = 2;
            goto out;
        }
        edgecontroller_config ecc = {.node_grace_ms = cfg.ec_node_grace,
                                     .resync_ms = cfg.ec_resync,
                                     .sync_qps = (uint32_t)cfg.ec_sync_qps};
        if ((rc = store_open(&cfg, &store)) != 0)
            goto fail;
        ecc.store = store;
        if ((rc = edgecontroller_new(&ecc, &ec)) != 0 ||
            (rc = devicecontroller_new(store, &dc)) != 0)
            goto fail;
    }
    /* Every call of every service is authorized in one place before its
     * handler runs (lib/authz, docs/security.md). Anonymous callers may use
     * Diagnostics only where nobody can authenticate (plaintext, or TLS
     * without client certificates). */
    ke_authz_config azc = {
        .store = store,
        .anonymous_diagnostics = !use_tls || tls.client_auth == KE_RPC_CLIENT_AUTH_NONE,
        .node_cert = hub ? cloudhub_node_cert_matches : NULL,
        .node_cert_ud = hub,
    };
    if ((rc = ke_authz_new(&azc, &authz)) != 0 ||
        (ec && (rc = ke_authz_add_holder(authz, edgecontroller_node_holds, ec)) != 0) ||
        (dc && (rc = ke_authz_add_holder(authz, devicecontroller_node_holds, dc)) != 0) ||
        (rc = ke_authz_start(authz)) != 0)
        goto fail;
    if ((rc = ke_rpc_loop_new((int)cfg.grpc_threads, &loop)) != 0 ||
        (rc = ke_diag_new(KE_PROGRAM, CLOUDCORE_VERSION, &diag)) != 0)
        goto fail;
    ke_rpc_server_opts sopts = {
        .listen = cfg.grpc_listen,
        .tls = use_tls ? &tls : NULL,
        .max_message_bytes = (uint32_t)cfg.grpc_max_message,
        .send_queue_bytes = (uint32_t)cfg.grpc_send_queue_bytes,
        .max_streams_per_identity = (uint32_t)cfg.grpc_max_streams_id,
        .max_concurrent_streams = (uint32_t)cfg.grpc_max_conc_streams,
        .tls_max_frame_size = (uint32_t)cfg.tls_max_frame,
    };
    if ((rc = ke_rpc_server_new(loop, &sopts, &srv)) != 0 ||
        (rc = ke_rpc_server_set_authorizer(srv, ke_authz_rpc, authz)) != 0 ||
        (rc = ke_diag_register(diag, srv)) != 0 ||
        (hub && (rc = cloudhub_register(hub, srv)) != 0) ||
        (ec && (rc = edgecontroller_register(ec, srv)) != 0) ||
        (dc && (rc = devicecontroller_register(dc, srv)) != 0) || (rc = ke_rpc_server_start(srv)) != 0)
        goto fail;
    /* The controllers reach CloudHub's Hub API in-process, without a socket,
     * or over mutual TLS when CloudHub is another process. */
    ke_rpc_tls rtls = {.ca_file = cfg.remote_ca, .cert_file = cfg.remote_cert,
                       .key_file = cfg.remote_key};
    ke_rpc_channel_opts ropts = {.tls = &rtls};
    if (ec && remote && (rc = ke_rpc_channel_new(loop, cfg.remote_hub, &ropts, &self)) != 0)
        goto fail;
    if (ec && ((!self && (rc = ke_rpc_channel_new_inproc(loop, srv, &self)) != 0) ||
               (rc = edgecontroller_start(ec, self)) != 0 ||
               (rc = devicecontroller_start(dc, self)) != 0))
        goto fail;
    if (ec && cfg.kubeapi_enable && use_tls) {
        if ((rc = ke_rpc_channel_new_inproc(loop, srv, &kapi_self)) != 0)
            goto fail;
        kubeapi_config kc = {.listen = cfg.kubeapi_listen,
                             .self = kapi_self,
                             .ca_file = cfg.tls_ca,
                             .cert_file = cfg.tls_cert,
                             .key_file = cfg.tls_key,
                             .store = store,
                             .ec = ec,
                             .authz = authz,
                             .max_connections = (unsigned)cfg.kubeapi_conns,
                             .bookmark_ms = cfg.kubeapi_bookmark};
        if ((rc = kubeapi_start(&kc, &kapi)) != 0)
            goto fail;
    } else if (cfg.kubeapi_enable && ec) {
        ke_log_info(KE_PROGRAM, "not serving the Kubernetes API: it needs grpc.tls.* (HTTPS with "
                                "client certificates)");
    }
    ke_http_config hc = {.listen = cfg.http_listen,
                         .health = hub ? cloudhub_health : NULL,
                         .health_arg = hub};
    if ((rc = ke_http_start(&hc, &http)) != 0)
        goto fail;

    ke_log_info(KE_PROGRAM, "serving version=%s grpc=%s port=%d tls=%s cloudhub=%s controllers=%s "
                "http_port=%d",
                CLOUDCORE_VERSION, cfg.grpc_listen, ke_rpc_server_port(srv),
                use_tls ? cfg.tls_client_auth : "off", hub ? "on" : "off", ec ? "on" : "off",
                ke_http_port(http));
    if (kapi)
        printf("ready grpc=%d http=%d kubeapi=%d\n", ke_rpc_server_port(srv),
               ke_http_port(http), kubeapi_port(kapi));
    else
        printf("ready grpc=%d http=%d\n", ke_rpc_server_port(srv), ke_http_port(http));
    fflush(stdout);

    int sig = wait_for_signal(cfg.mem_trim_interval);
    ke_log_info(KE_PROGRAM, "stopping signal=%d", sig);
    status = 0;
    goto stop;
fail:
    ke_log_error(KE_PROGRAM, "cannot start: %s", ke_strerror(rc));
stop:
    /* From here on a stuck component cannot keep the process alive: the
     * deadline thread ends it (ke_watchdog_shutdown_arm). */
    if ((rc = ke_watchdog_shutdown_arm(cfg.shutdown_timeout)) != 0)
        ke_log_error(KE_PROGRAM, "cannot arm the shutdown deadline: %s", ke_strerror(rc));
out:
    ke_watchdog_shutdown_step("http");
    ke_http_stop(http);
    ke_watchdog_shutdown_step("kubeapi");
    kubeapi_stop(kapi);
    ke_rpc_channel_free(kapi_self);
    ke_watchdog_shutdown_step("controllers");
    edgecontroller_stop(ec); /* the controllers' own calls first: they go through srv */
    devicecontroller_stop(dc);
    ke_watchdog_shutdown_step("rpc server");
    ke_rpc_server_stop(srv); /* then no handler runs past this */
    edgecontroller_free(ec);
    devicecontroller_free(dc);
    ke_rpc_channel_free(self);
    ke_rpc_server_free(srv);
    ke_authz_free(authz); /* its watches, before the store */
    ke_watchdog_shutdown_step("cloudhub");
    cloudhub_free(hub);
    ke_watchdog_shutdown_step("store");
    ke_store_close(store);
    ke_diag_free(diag);
    ke_watchdog_shutdown_step("rpc loop");
    ke_rpc_loop_free(loop);
    ke_watchdog_shutdown_done();
    ke_watchdog_stop();
    ke_config_free(cloudcore_fields, KE_CONFIG_NFIELDS(cloudcore_fields), &cfg);
    return status;
}
