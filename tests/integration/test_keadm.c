/*
 * test_keadm.c — the keadm program, run as a user would run it.
 *
 * Local verbs (one fresh temp dir per test, removed by teardown): init
 * writes the files with their modes and a cloudcore.yaml, refuses a second
 * time; gettoken prints one token the files verify, honouring --ttl and
 * --uses; init --kubernetes writes a private Secret manifest whose values
 * are the files and whose server certificate names the Services; reset
 * removes everything and refuses a directory keadm did not make; join with
 * a malformed token fails before touching the network and writes nothing.
 *
 * Join against a real cloudcore (one group: keadm init, then cloudcore
 * --config DIR/cloudcore.yaml): a good token yields node.crt/node.key/
 * ca.crt/edgecore.yaml; a token of another cluster or a forged one is
 * refused and leaves no file behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_crypt.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_testproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];     /* the test's temp dir */
    char out[8192];   /* stdout of the last keadm run */
    char err[8192];   /* stderr of the last keadm run */
    ke_tp cloudcore;  /* join group only */
    int port;         /* cloudcore's gRPC port, join group only */
} fixture;

static void slurp(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* keadm runs "keadm ARGS" (printf-style) with stdout and stderr captured
 * in f->out / f->err; returns the exit code. */
static int keadm(fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int keadm(fixture *f, const char *fmt, ...)
{
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    int rc = ke_tp_sh("%s/tools/keadm %s >%s/.out 2>%s/.err", ke_tp_env("KE_BIN_DIR"), args,
                      f->dir, f->dir);
    char path[128];
    snprintf(path, sizeof(path), "%s/.out", f->dir);
    slurp(path, f->out, sizeof(f->out));
    unlink(path);
    snprintf(path, sizeof(path), "%s/.err", f->dir);
    slurp(path, f->err, sizeof(f->err));
    unlink(path);
    return rc;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || ke_tp_tmpdir(f->dir) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ke_tp_sh("rm -rf '%s'", f->dir);
    free(f);
    return 0;
}

static int mode_of(const char *dir, const char *name)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static char *read_in(const char *dir, const char *name)
{
    char path[256], *data = NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(ke_pki_read_file(path, &data, NULL), 0);
    return data;
}

/* token_from_stdout checks that gettoken printed exactly one line. */
static void token_from_stdout(fixture *f, char *token, size_t len)
{
    char *nl = strchr(f->out, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
    *nl = '\0';
    assert_true(strlen(f->out) < len);
    snprintf(token, len, "%s", f->out);
}

/* verify_token checks token against the files in cloud, at time now. */
static int verify_token(const char *cloud, const char *token, int64_t now, char *why)
{
    char *ca = read_in(cloud, "ca.crt"), path[256];
    uint8_t secret[KE_PKI_SECRET_MAX];
    size_t n = 0;
    snprintf(path, sizeof(path), "%s/token.secret", cloud);
    assert_int_equal(ke_pki_secret_read(path, secret, sizeof(secret), &n), 0);
    int rc = ke_pki_token_verify(token, ca, secret, n, now, why, 128);
    free(ca);
    return rc;
}

/* ---- init ---- */

static void test_keadm_init_creates_files_with_modes_and_config(void **state)
{
    fixture *f = *state;
    char cloud[128];
    snprintf(cloud, sizeof(cloud), "%s/pki/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s --advertise-address 10.9.8.7,cloud.example.com",
                           cloud),
                     0);
    assert_non_null(strstr(f->out, "keadm gettoken --dir"));
    assert_int_equal(mode_of(cloud, "."), 0700);
    assert_int_equal(mode_of(cloud, "ca.key"), 0600);
    assert_int_equal(mode_of(cloud, "server.key"), 0600);
    assert_int_equal(mode_of(cloud, "admin.key"), 0600);
    assert_int_equal(mode_of(cloud, "token.secret"), 0600);
    assert_int_equal(mode_of(cloud, "ca.crt"), 0644);
    assert_int_equal(mode_of(cloud, "server.crt"), 0644);
    assert_int_equal(mode_of(cloud, "admin.crt"), 0644);

    char *ca = read_in(cloud, "ca.crt"), *server = read_in(cloud, "server.crt");
    char *admin = read_in(cloud, "admin.crt"), *admin_key = read_in(cloud, "admin.key");
    char *ca_key = read_in(cloud, "ca.key"), cn[64];
    assert_int_equal(ke_pki_cert_matches_key(ca, ca_key), 0);
    assert_int_equal(ke_pki_verify_chain(ca, server), 0);
    assert_int_equal(ke_pki_cert_info(server, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "cloudhub");
    assert_int_equal(ke_pki_verify_chain(ca, admin), 0);
    assert_int_equal(ke_pki_cert_matches_key(admin, admin_key), 0);
    assert_int_equal(ke_pki_cert_info(admin, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "system:admin");
    assert_non_null(strstr(f->out, "10.9.8.7, cloud.example.com, localhost, 127.0.0.1"));

    char *yaml = read_in(cloud, "cloudcore.yaml"), want[2048];
    snprintf(want, sizeof(want),
             "grpc:\n"
             "  listen: \"0.0.0.0:10000\"\n"
             "  tls:\n"
             "    ca: %1$s/ca.crt\n"
             "    cert: %1$s/server.crt\n"
             "    key: %1$s/server.key\n"
             "    client_auth: request\n"
             "cloudhub:\n"
             "  db: %1$s/cloudhub.db\n"
             "  ca_key: %1$s/ca.key\n"
             "  token_secret: %1$s/token.secret\n"
             "store:\n"
             "  db: %1$s/store.db\n"
             "http:\n"
             "  listen: \"127.0.0.1:10550\"\n",
             cloud);
    assert_non_null(strstr(yaml, want));
    free(yaml);
    free(ca);
    free(ca_key);
    free(server);
    free(admin);
    free(admin_key);
}

static void test_keadm_init_encrypt_secrets_writes_a_private_key_file(void **state)
{
    fixture *f = *state;
    char cloud[128], path[256], why[256];
    snprintf(cloud, sizeof(cloud), "%s/enc/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s --encrypt-secrets", cloud), 0);
    assert_non_null(strstr(f->out, "encryption.keys"));
    assert_int_equal(mode_of(cloud, "encryption.keys"), 0600);
    snprintf(path, sizeof(path), "%s/encryption.keys", cloud);
    ke_crypt *kr = NULL;
    assert_int_equal(ke_crypt_load(path, &kr, why, sizeof(why)), 0);
    assert_string_equal(ke_crypt_primary(kr), "key1");
    ke_crypt_free(kr);
    char *yaml = read_in(cloud, "cloudcore.yaml"), want[512];
    snprintf(want, sizeof(want), "store:\n  db: %1$s/store.db\n  encryption_key_file: %1$s/"
                                 "encryption.keys\n", cloud);
    assert_non_null(strstr(yaml, want));
    free(yaml);
    assert_int_equal(keadm(f, "reset --dir %s", cloud), 0);
    assert_int_equal(mode_of(cloud, "encryption.keys"), -1);
}

/* secret_value finds "  KEY: BASE64" in the Secret manifest and decodes it
 * into out (NUL-terminated). */
static void secret_value(const char *yaml, const char *key, char *out, size_t len)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\n  %s: ", key);
    const char *p = strstr(yaml, pat);
    assert_non_null(p);
    p += strlen(pat);
    size_t n = strcspn(p, "\n");
    assert_true(n > 0 && n % 4 == 0 && n / 4 * 3 < len);
    int got = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)p, (int)n);
    assert_true(got >= 0);
    got -= (p[n - 1] == '=') + (p[n - 2] == '='); /* DecodeBlock counts the padding */
    out[got] = '\0';
}

static void test_keadm_init_kubernetes_writes_the_secret_manifest(void **state)
{
    fixture *f = *state;
    char cloud[128];
    snprintf(cloud, sizeof(cloud), "%s/k8s", f->dir);
    assert_int_equal(keadm(f, "init --dir %s --kubernetes --namespace edge-sys --service-name cc "
                              "--external-address 192.0.2.10,cloud.example.com --encrypt-secrets",
                           cloud),
                     0);
    assert_non_null(strstr(f->out, "cloudcore-secret.yaml"));
    assert_int_equal(mode_of(cloud, "cloudcore-secret.yaml"), 0600);

    static char yaml[16384];
    char path[256];
    snprintf(path, sizeof(path), "%s/cloudcore-secret.yaml", cloud);
    slurp(path, yaml, sizeof(yaml));
    assert_non_null(strstr(yaml, "\napiVersion: v1\nkind: Secret\nmetadata:\n"
                                 "  name: cloudcore-tls\n  namespace: edge-sys\n"));
    assert_non_null(strstr(yaml, "\ntype: Opaque\ndata:\n"));
    static const char *const keys[] = {"ca.crt",       "ca.key",    "tls.crt",   "tls.key",
                                       "token.secret", "admin.crt", "admin.key", "encryption.keys"};
    static const char *const files[] = {"ca.crt",       "ca.key",    "server.crt", "server.key",
                                        "token.secret", "admin.crt", "admin.key",
                                        "encryption.keys"};
    static char got[16384];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        secret_value(yaml, keys[i], got, sizeof(got));
        char *want = read_in(cloud, files[i]);
        assert_string_equal(got, want);
        free(want);
    }

    /* the server certificate names the Services and the external addresses */
    char sans[4096];
    assert_int_equal(ke_tp_capture(sans, sizeof(sans),
                                   "openssl x509 -in %s/server.crt -noout -ext subjectAltName",
                                   cloud),
                     0);
    static const char *const want_sans[] = {
        "DNS:cc,",
        "DNS:cc.edge-sys,",
        "DNS:cc.edge-sys.svc,",
        "DNS:cc.edge-sys.svc.cluster.local,",
        "DNS:cloudhub.edge-sys.svc,",
        "DNS:cloudhub.edge-sys.svc.cluster.local,",
        "DNS:edgecontroller.edge-sys.svc,",
        "DNS:edgecontroller.edge-sys.svc.cluster.local,",
        "IP Address:192.0.2.10,",
        "DNS:cloud.example.com,",
        "DNS:localhost,",
        "IP Address:127.0.0.1",
    };
    for (size_t i = 0; i < sizeof(want_sans) / sizeof(want_sans[0]); i++)
        if (!strstr(sans, want_sans[i]))
            fail_msg("no %s in %s", want_sans[i], sans);

    /* the defaults, and reset takes the manifest away */
    assert_int_equal(keadm(f, "reset --dir %s", cloud), 0);
    assert_int_equal(mode_of(cloud, "."), -1);
    assert_int_equal(keadm(f, "init --dir %s --kubernetes", cloud), 0);
    slurp(path, yaml, sizeof(yaml));
    assert_non_null(strstr(yaml, "  namespace: kubeedge\n"));
    assert_null(strstr(yaml, "encryption.keys:"));
    assert_int_equal(ke_tp_capture(sans, sizeof(sans),
                                   "openssl x509 -in %s/server.crt -noout -ext subjectAltName",
                                   cloud),
                     0);
    assert_non_null(strstr(sans, "DNS:cloudcore.kubeedge.svc.cluster.local,"));
    assert_int_equal(keadm(f, "reset --dir %s", cloud), 0);
    assert_int_equal(mode_of(cloud, "."), -1);

    /* the Kubernetes flags go with --kubernetes, and names are DNS labels */
    assert_int_equal(keadm(f, "init --dir %s --namespace x", cloud), 2);
    assert_non_null(strstr(f->err, "go with --kubernetes"));
    assert_int_equal(keadm(f, "init --dir %s --kubernetes --service-name Bad_Name", cloud), 2);
    assert_non_null(strstr(f->err, "Bad_Name"));
    assert_int_equal(keadm(f, "init --dir %s --kubernetes --external-address 'a b'", cloud), 2);
    assert_non_null(strstr(f->err, "--external-address"));
    assert_int_equal(mode_of(cloud, "."), -1);
}

static void test_keadm_second_init_refuses_and_keeps_the_ca(void **state)
{
    fixture *f = *state;
    assert_int_equal(keadm(f, "init --dir %s/c", f->dir), 0);
    char c[128];
    snprintf(c, sizeof(c), "%s/c", f->dir);
    char *before = read_in(c, "ca.crt");
    assert_int_equal(keadm(f, "init --dir %s", c), 1);
    assert_non_null(strstr(f->err, "already initialised"));
    char want[256];
    snprintf(want, sizeof(want), "run keadm reset --dir %s first", c);
    assert_non_null(strstr(f->err, want));
    char *after = read_in(c, "ca.crt");
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_keadm_init_bad_address_is_usage_error_and_writes_nothing(void **state)
{
    fixture *f = *state;
    assert_int_equal(keadm(f, "init --dir %s/c --advertise-address 'bad host'", f->dir), 2);
    assert_non_null(strstr(f->err, "bad host"));
    assert_int_equal(mode_of(f->dir, "c"), -1);
}

/* ---- gettoken ---- */

static void test_keadm_gettoken_prints_a_token_the_files_verify(void **state)
{
    fixture *f = *state;
    char cloud[128], token[KE_PKI_TOKEN_MAX], why[128];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s", cloud), 0);
    int64_t t0 = (int64_t)time(NULL);
    assert_int_equal(keadm(f, "gettoken --dir %s", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(verify_token(cloud, token, t0, why), 0);
    int64_t exp = 0;
    assert_int_equal(ke_pki_token_parse(token, NULL, &exp), 0);
    assert_true(exp >= t0 + 24 * 3600 && exp <= t0 + 24 * 3600 + 5);
    assert_int_equal(verify_token(cloud, token, exp, why), KE_EPERM);
    assert_non_null(strstr(why, "token expired at"));
}

static void test_keadm_gettoken_ttl_sets_expiry(void **state)
{
    fixture *f = *state;
    char cloud[128], token[KE_PKI_TOKEN_MAX];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s", cloud), 0);
    int64_t t0 = (int64_t)time(NULL), exp = 0;
    assert_int_equal(keadm(f, "gettoken --dir %s --ttl 10m", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(ke_pki_token_parse(token, NULL, &exp), 0);
    assert_true(exp >= t0 + 600 && exp <= t0 + 605);
    assert_int_equal(keadm(f, "gettoken --dir %s --ttl 30s", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(ke_pki_token_parse(token, NULL, &exp), 0);
    assert_true(exp >= t0 + 30 && exp <= t0 + 35);
    assert_int_equal(keadm(f, "gettoken --dir %s --ttl soon", cloud), 2);
    assert_string_equal(f->out, "");
}

static void test_keadm_gettoken_uses_puts_the_limit_in_the_token(void **state)
{
    fixture *f = *state;
    char cloud[128], token[KE_PKI_TOKEN_MAX], why[128];
    uint32_t uses = 99;
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s", cloud), 0);
    assert_int_equal(keadm(f, "gettoken --dir %s --uses 3", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(verify_token(cloud, token, (int64_t)time(NULL), why), 0);
    assert_int_equal(ke_pki_token_uses(token, NULL, &uses), 0);
    assert_int_equal(uses, 3);
    /* without --uses: today's unlimited token */
    assert_int_equal(keadm(f, "gettoken --dir %s", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(ke_pki_token_uses(token, NULL, &uses), 0);
    assert_int_equal(uses, 0);
    const char *bad[] = {"0", "-1", "1000001", "2x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(keadm(f, "gettoken --dir %s --uses '%s'", cloud, bad[i]), 2);
        assert_non_null(strstr(f->err, "--uses"));
        assert_string_equal(f->out, "");
    }
}

static void test_keadm_gettoken_without_init_says_to_init(void **state)
{
    fixture *f = *state;
    assert_int_equal(keadm(f, "gettoken --dir %s", f->dir), 1);
    assert_non_null(strstr(f->err, "keadm init --dir"));
    assert_string_equal(f->out, "");
}

/* ---- reset ---- */

static void test_keadm_reset_removes_everything(void **state)
{
    fixture *f = *state;
    char cloud[128];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    assert_int_equal(keadm(f, "init --dir %s", cloud), 0);
    /* what cloudcore would have added */
    assert_int_equal(ke_tp_sh("touch %1$s/cloudhub.db %1$s/cloudhub.db-wal %1$s/cloudhub.db-shm",
                              cloud),
                     0);
    assert_int_equal(keadm(f, "reset --dir %s", cloud), 0);
    assert_int_equal(mode_of(cloud, "."), -1);
}

static void test_keadm_reset_of_a_random_dir_refuses(void **state)
{
    fixture *f = *state;
    char other[128];
    snprintf(other, sizeof(other), "%s/other", f->dir);
    assert_int_equal(ke_tp_sh("mkdir %1$s && touch %1$s/notes.txt %1$s/ca.key", other), 0);
    assert_int_equal(keadm(f, "reset --dir %s", other), 1);
    assert_non_null(strstr(f->err, "--force"));
    assert_true(mode_of(other, "ca.key") >= 0);
    assert_true(mode_of(other, "notes.txt") >= 0);
    /* --force removes keadm's names only */
    assert_int_equal(keadm(f, "reset --dir %s --force", other), 0);
    assert_int_equal(mode_of(other, "ca.key"), -1);
    assert_true(mode_of(other, "notes.txt") >= 0);
}

/* ---- join without a cloud ---- */

static void test_keadm_join_malformed_token_fails_without_network_or_files(void **state)
{
    fixture *f = *state;
    /* A listener nobody else knows about: any connection attempt would be
     * queued on it. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s, 4), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    int port = ntohs(a.sin_port);
    const char *bad[] = {"abc", "x.y.z.w", "0000.1.2.3", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token '%s' --node-name edge-1 "
                                  "--dir %s/edge",
                               port, bad[i], f->dir),
                         2);
        assert_non_null(strstr(f->err, "not a join token"));
    }
    int c = accept(s, NULL, NULL);
    assert_int_equal(c, -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(s);
    assert_int_equal(mode_of(f->dir, "edge"), -1);
}

static void test_keadm_join_bad_node_name_is_usage_error(void **state)
{
    fixture *f = *state;
    char tok[200];
    memset(tok, 'a', 64);
    snprintf(tok + 64, sizeof(tok) - 64, ".%d.%s.%.64s", 2000000000, "0123456789abcdef",
             "0000000000000000000000000000000000000000000000000000000000000000");
    const char *bad[] = {"Edge-1", "-edge", "edge_1", "", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:1 --token %s --node-name '%s' "
                                  "--dir %s/edge",
                               tok, bad[i], f->dir),
                         2);
        assert_non_null(strstr(f->err, "node"));
    }
    assert_int_equal(mode_of(f->dir, "edge"), -1);
}

static void test_keadm_join_bad_pod_subnet_is_usage_error(void **state)
{
    fixture *f = *state;
    const char *bad[] = {"10.88.0.0", "10.88.0.0/33", "10.88.0.0/4", "fe80::/64", "x/16", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:1 --token t --node-name e "
                                  "--pod-subnet '%s' --cni-conf-dir %s/cni --dir %s/edge",
                               bad[i], f->dir, f->dir),
                         2);
        assert_non_null(strstr(f->err, "--pod-subnet"));
    }
    assert_int_equal(mode_of(f->dir, "cni"), -1);
    assert_int_equal(mode_of(f->dir, "edge"), -1);
}

/* ---- join against a real cloudcore ---- */

static int group_cloud_setup(void **state)
{
    if (setup(state) != 0)
        return -1;
    fixture *f = *state;
    char cloud[128], cfg[160];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    if (keadm(f, "init --dir %s", cloud) != 0)
        return -1;
    snprintf(cfg, sizeof(cfg), "%s/cloudcore.yaml", cloud);
    char *argv[] = {(char *)ke_tp_env("KE_CLOUDCORE"), "--config", cfg,
                    "--grpc.listen=127.0.0.1:0", "--http.listen=127.0.0.1:0",
                    "--kubeapi.listen=127.0.0.1:0",
                    "--log_level=warn", NULL};
    if (ke_tp_start(&f->cloudcore, argv) != 0)
        return -1;
    char line[256];
    int http = 0;
    if (ke_tp_wait_line(&f->cloudcore, "ready ", 20000, line, sizeof(line)) != 0 ||
        sscanf(line, "ready grpc=%d http=%d", &f->port, &http) != 2) {
        ke_tp_stop(&f->cloudcore);
        return -1;
    }
    return 0;
}

static int group_cloud_teardown(void **state)
{
    fixture *f = *state;
    int st = ke_tp_stop(&f->cloudcore);
    teardown(state);
    return st == 0 ? 0 : -1;
}

static void test_keadm_join_writes_node_files_and_edgecore_config(void **state)
{
    fixture *f = *state;
    char cloud[128], edge[128], token[KE_PKI_TOKEN_MAX];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    snprintf(edge, sizeof(edge), "%s/edge-ok", f->dir);
    assert_int_equal(keadm(f, "gettoken --dir %s", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token %s --node-name edge-ok "
                              "--dir %s",
                           f->port, token, edge),
                     0);
    assert_int_equal(mode_of(edge, "node.key"), 0600);
    char *ca = read_in(edge, "ca.crt"), *cloud_ca = read_in(cloud, "ca.crt");
    char *crt = read_in(edge, "node.crt"), *key = read_in(edge, "node.key"), cn[64];
    assert_string_equal(ca, cloud_ca);
    assert_int_equal(ke_pki_verify_chain(ca, crt), 0);
    assert_int_equal(ke_pki_cert_matches_key(crt, key), 0);
    assert_int_equal(ke_pki_cert_info(crt, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "system:node:edge-ok"); /* node naming: docs/security.md */
    char *yaml = read_in(edge, "edgecore.yaml"), want[2048];
    snprintf(want, sizeof(want),
             "node_name: edge-ok\n"
             "edgehub:\n"
             "  server: 127.0.0.1:%2$d\n"
             "  tls:\n"
             "    ca: %1$s/ca.crt\n"
             "    cert: %1$s/node.crt\n"
             "    key: %1$s/node.key\n"
             "metamanager:\n"
             "  db: %1$s/edge.db\n"
             "local:\n"
             "  listen: \"unix:%1$s/edgecore.sock\"\n"
             "edged:\n"
             "  runtime_endpoint: /run/containerd/containerd.sock\n"
             "  root_dir: %1$s/edged\n",
             edge, f->port);
    assert_non_null(strstr(yaml, want));
    /* with a pod subnet, the CNI config for containerd names it */
    char edge2[160], cni[160];
    snprintf(edge2, sizeof(edge2), "%s/edge-net", f->dir);
    snprintf(cni, sizeof(cni), "%s/cni", f->dir);
    assert_int_equal(keadm(f, "gettoken --dir %s", cloud), 0);
    char token2[KE_PKI_TOKEN_MAX];
    token_from_stdout(f, token2, sizeof(token2));
    assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token %s --node-name edge-net "
                              "--dir %s --pod-subnet 10.99.0.0/16 --cni-conf-dir %s "
                              "--runtime-endpoint /tmp/cri.sock",
                           f->port, token2, edge2, cni),
                     0);
    char *conf = read_in(cni, "10-kubeedge-c.conflist");
    assert_non_null(strstr(conf, "\"subnet\": \"10.99.0.0/16\""));
    assert_non_null(strstr(conf, "\"type\": \"bridge\""));
    free(conf);
    char *yaml2 = read_in(edge2, "edgecore.yaml");
    assert_non_null(strstr(yaml2, "runtime_endpoint: /tmp/cri.sock\n"));
    free(yaml2);
    /* a second join into the same dir refuses */
    assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token %s --node-name edge-ok "
                              "--dir %s",
                           f->port, token, edge),
                     1);
    assert_non_null(strstr(f->err, "keadm reset --dir"));
    assert_int_equal(keadm(f, "reset --dir %s", edge), 0);
    assert_int_equal(mode_of(edge, "."), -1);
    free(yaml);
    free(ca);
    free(cloud_ca);
    free(crt);
    free(key);
}

static void test_keadm_join_with_token_of_other_cluster_writes_nothing(void **state)
{
    fixture *f = *state;
    char other[128], edge[128], token[KE_PKI_TOKEN_MAX];
    snprintf(other, sizeof(other), "%s/other-cloud", f->dir);
    snprintf(edge, sizeof(edge), "%s/edge-other", f->dir);
    assert_int_equal(keadm(f, "init --dir %s", other), 0);
    assert_int_equal(keadm(f, "gettoken --dir %s", other), 0);
    token_from_stdout(f, token, sizeof(token));
    assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token %s --node-name edge-x "
                              "--dir %s",
                           f->port, token, edge),
                     1);
    char want[256];
    snprintf(want, sizeof(want), "the CA presented by 127.0.0.1:%d does not match the token",
             f->port);
    assert_non_null(strstr(f->err, want));
    assert_non_null(strstr(f->err, "wrong cloudhub address or token"));
    assert_int_equal(mode_of(edge, "."), -1);
}

static void test_keadm_join_refused_by_cloudhub_prints_status_and_writes_nothing(void **state)
{
    fixture *f = *state;
    char cloud[128], edge[128], token[KE_PKI_TOKEN_MAX];
    snprintf(cloud, sizeof(cloud), "%s/cloud", f->dir);
    snprintf(edge, sizeof(edge), "%s/edge-forged", f->dir);
    assert_int_equal(keadm(f, "gettoken --dir %s", cloud), 0);
    token_from_stdout(f, token, sizeof(token));
    size_t n = strlen(token);
    token[n - 1] = token[n - 1] == '0' ? '1' : '0'; /* forge the signature */
    assert_int_equal(keadm(f, "join --cloudhub 127.0.0.1:%d --token %s --node-name edge-f "
                              "--dir %s",
                           f->port, token, edge),
                     1);
    assert_non_null(strstr(f->err, "PERMISSION_DENIED"));
    assert_int_equal(mode_of(edge, "."), -1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    ke_log_set_level(KE_LOG_ERROR);
    const struct CMUnitTest local[] = {
        T(test_keadm_init_creates_files_with_modes_and_config),
        T(test_keadm_init_encrypt_secrets_writes_a_private_key_file),
        T(test_keadm_init_kubernetes_writes_the_secret_manifest),
        T(test_keadm_second_init_refuses_and_keeps_the_ca),
        T(test_keadm_init_bad_address_is_usage_error_and_writes_nothing),
        T(test_keadm_gettoken_prints_a_token_the_files_verify),
        T(test_keadm_gettoken_ttl_sets_expiry),
        T(test_keadm_gettoken_uses_puts_the_limit_in_the_token),
        T(test_keadm_gettoken_without_init_says_to_init),
        T(test_keadm_reset_removes_everything),
        T(test_keadm_reset_of_a_random_dir_refuses),
        T(test_keadm_join_malformed_token_fails_without_network_or_files),
        T(test_keadm_join_bad_node_name_is_usage_error),
        T(test_keadm_join_bad_pod_subnet_is_usage_error),
    };
    const struct CMUnitTest cloud[] = {
        cmocka_unit_test(test_keadm_join_writes_node_files_and_edgecore_config),
        cmocka_unit_test(test_keadm_join_with_token_of_other_cluster_writes_nothing),
        cmocka_unit_test(test_keadm_join_refused_by_cloudhub_prints_status_and_writes_nothing),
    };
    int failed = cmocka_run_group_tests_name("keadm/local", local, NULL, NULL);
    failed += cmocka_run_group_tests_name("keadm/join", cloud, group_cloud_setup,
                                          group_cloud_teardown);
    return failed;
}
