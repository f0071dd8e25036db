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
 * which scripts and tests wait for. SIGTERM/SIGINT stop it cleanly.
 */
#include "ke_config.h"
#include "ke_diag.h"
#include "ke_err.h"
#include "ke_http.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_rpc.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define CLOUDCORE_VERSION "0.1.0"

struct cloudcore_config {
    char *log_level;
    char *grpc_listen;
    int64_t grpc_threads;
    int64_t grpc_max_message;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_client_auth;
    char *http_listen;
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
    {"grpc.tls.ca", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_ca), NULL,
     "CA certificate (PEM) that verifies client certificates"},
    {"grpc.tls.cert", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_cert), NULL,
     "server certificate (PEM); empty = plaintext"},
    {"grpc.tls.key", KE_CONFIG_STRING, offsetof(struct cloudcore_config, tls_key), NULL,
     "server private key (PEM)"},
    {"grpc.tls.client_auth", KE_CONFIG_STRING,
     offsetof(struct cloudcore_config, tls_client_auth), "require",
     "client certificates: require, request or none"},
    {"http.listen", KE_CONFIG_STRING, offsetof(struct cloudcore_config, http_listen),
     "127.0.0.1:10550", "address of /metrics and /healthz"},
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

static int wait_for_signal(void)
{
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigwait(&set, &sig);
    return sig;
}

int main(int argc, char **argv)
{
    struct cloudcore_config cfg = {0};
    char err[KE_CONFIG_ERR_MAX];
    int rc = ke_config_parse_args(cloudcore_fields, KE_CONFIG_NFIELDS(cloudcore_fields), &cfg,
                                  argc, argv, err, sizeof(err));
    if (rc == KE_CONFIG_HELP)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "cloudcore: %s\n", err);
        return 2;
    }
    int status = 1;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_diag *diag = NULL;
    ke_http *http = NULL;
    ke_log_level level;
    ke_rpc_tls tls = {0};

    if (ke_log_parse_level(cfg.log_level, &level) != 0) {
        fprintf(stderr, "cloudcore: key \"log_level\": expected debug, info, warn or error, "
                        "got \"%s\"\n", cfg.log_level);
        status = 2;
        goto out;
    }
    ke_log_set_level(level);
    if (cfg.grpc_threads < 1 || cfg.grpc_threads > 64 || cfg.grpc_max_message < 1024 ||
        cfg.grpc_max_message > (1 << 30)) {
        fprintf(stderr, "cloudcore: grpc.threads must be 1..64 and grpc.max_message_bytes "
                        "1 KiB..1 GiB\n");
        status = 2;
        goto out;
    }
    if (parse_client_auth(cfg.tls_client_auth, &tls.client_auth) != 0) {
        fprintf(stderr, "cloudcore: key \"grpc.tls.client_auth\": expected require, request "
                        "or none, got \"%s\"\n", cfg.tls_client_auth);
        status = 2;
        goto out;
    }
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

    if ((rc = ke_rpc_loop_new((int)cfg.grpc_threads, &loop)) != 0 ||
        (rc = ke_diag_new("cloudcore", CLOUDCORE_VERSION, &diag)) != 0)
        goto fail;
    ke_rpc_server_opts sopts = {
        .listen = cfg.grpc_listen,
        .tls = use_tls ? &tls : NULL,
        .max_message_bytes = (uint32_t)cfg.grpc_max_message,
    };
    if ((rc = ke_rpc_server_new(loop, &sopts, &srv)) != 0 ||
        (rc = ke_diag_register(diag, srv)) != 0 || (rc = ke_rpc_server_start(srv)) != 0)
        goto fail;
    ke_http_config hc = {.listen = cfg.http_listen};
    if ((rc = ke_http_start(&hc, &http)) != 0)
        goto fail;

    ke_log_info("cloudcore", "serving version=%s grpc=%s port=%d tls=%s http_port=%d",
                CLOUDCORE_VERSION, cfg.grpc_listen, ke_rpc_server_port(srv),
                use_tls ? cfg.tls_client_auth : "off", ke_http_port(http));
    printf("ready grpc=%d http=%d\n", ke_rpc_server_port(srv), ke_http_port(http));
    fflush(stdout);

    int sig = wait_for_signal();
    ke_log_info("cloudcore", "stopping signal=%d", sig);
    status = 0;
    goto out;
fail:
    ke_log_error("cloudcore", "cannot start: %s", ke_strerror(rc));
out:
    ke_http_stop(http);
    ke_rpc_server_free(srv);
    ke_diag_free(diag);
    ke_rpc_loop_free(loop);
    ke_config_free(cloudcore_fields, KE_CONFIG_NFIELDS(cloudcore_fields), &cfg);
    return status;
}
