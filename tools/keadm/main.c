/*
 * keadm — sets up kubeedge-c's trust, in the manner of KubeEdge's keadm:
 *
 *   keadm init --dir DIR        cloud side: CA, CloudHub server certificate,
 *                               "system:admin" client certificate, token
 *                               secret and a cloudcore.yaml using them
 *                               (--encrypt-secrets: and a key file that
 *                               encrypts Secrets at rest)
 *   keadm gettoken --dir DIR    a join token (CA hash + signed expiry;
 *                               --uses N: at most N joins)
 *   keadm join ...              edge side: fetch the CA, check it against
 *                               the token, send a CSR over CloudHub.Join,
 *                               write the node's certificate and edgecore.yaml
 *   keadm reset --dir DIR       remove what init or join wrote
 *   keadm certs user NAME ...   a user's client certificate (CN NAME, O per
 *                               --group) and kubeconfig for kectl
 *
 * Every verb takes --help. Exit codes: 0 done, 1 failed (nothing half
 * written: a failing init or join removes what it wrote), 2 bad usage.
 * Progress goes to stdout, errors to stderr with what to do next; gettoken
 * prints only the token, so that TOKEN=$(keadm gettoken ...) works.
 *
 * The files are made with lib/pki (ke_pki.h); see DESIGN.md §3 (Join).
 */
#include "cloudhub.pb-c.h"
#include "ke_crypt.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_rpc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEADM_EDGE_DIR "/etc/kubeedge/edge"
#define KEADM_CA_CN "kubeedge-c CA"
#define KEADM_SERVER_CN "cloudhub"
#define KEADM_ADMIN_CN "system:admin"
#define KEADM_ADMIN_GROUP "system:masters" /* allowed everything (docs/security.md) */
#define KEADM_USER_NAME_MAX 64          /* a user certificate's CN */
#define KEADM_DEFAULT_SERVER "localhost:10000"
#define KEADM_DEFAULT_KUBEAPI "127.0.0.1:6443" /* cloudcore's kubeapi.listen default */
#define KEADM_CA_DAYS 3650              /* default CA lifetime */
#define KEADM_CA_DAYS_MAX 36500
/* init --kubernetes: the Secret deploy/kubernetes mounts, and the Services
 * whose DNS names the server certificate carries besides --service-name
 * (the split variant's, deploy/kubernetes/split). */
#define KEADM_K8S_SECRET "cloudcore-tls"
#define KEADM_K8S_SECRET_FILE "cloudcore-secret.yaml"
#define KEADM_K8S_NAMESPACE "kubeedge"
#define KEADM_K8S_SERVICE "cloudcore"
#define KEADM_LEAF_DAYS 365             /* server and admin certificates (never past the CA) */
#define KEADM_TOKEN_TTL (24 * 3600)     /* default token lifetime, seconds */
#define KEADM_TOKEN_TTL_MAX (365LL * 24 * 3600)
#define KEADM_CERT_TTL_MAX (10LL * 365 * 24 * 3600)
#define KEADM_RPC_TIMEOUT_MS 15000      /* each Bootstrap / Join call */
#define KEADM_MAX_SANS (KE_PKI_MAX_SANS - 2)
#define KEADM_MAX_FILES 16              /* files one verb writes */
#define KEADM_DIR_MAX (PATH_MAX - 64)   /* --dir, leaving room for a file name */
#define KEADM_PATH_MAX (PATH_MAX + 64)  /* a buffer for "<dir>/<file name>" */
/* The metadata key under which join passes --cert-ttl (decimal seconds) to
 * CloudHub, which may honour it up to its own limit. */
#define KEADM_CERT_TTL_MD "ke-cert-ttl-seconds"

/* The files keadm writes, for reset. The databases and socket belong to
 * cloudcore / edgecore, which put them where keadm's configs say. */
static const char *const CLOUD_FILES[] = {
    "ca.crt",         "ca.key",       "server.crt",      "server.key",
    "token.secret",   "admin.crt",    "admin.key",       "cloudcore.yaml", "admin.kubeconfig",
    "cloudhub.db",    "cloudhub.db-wal", "cloudhub.db-shm", "cloudhub.db-journal",
    "store.db",       "store.db-wal",    "store.db-shm",    "store.db-journal",
    "encryption.keys", KEADM_K8S_SECRET_FILE,
    NULL,
};
static const char *const EDGE_FILES[] = {
    "node.key", "node.crt", "edgecore.yaml", "edge.db", "edge.db-wal", "edge.db-shm",
    "edge.db-journal", "edgecore.sock", "node.kubeconfig", NULL, /* ca.crt is in CLOUD_FILES */
};

/* ---- help ---- */

static const char USAGE_MAIN[] =
    "keadm: set up kubeedge-c's certificates and join edge nodes.\n"
    "\n"
    "Usage: keadm COMMAND [flags]\n"
    "\n"
    "Commands:\n"
    "  init      create the cloud side's CA, certificates, token secret and cloudcore.yaml\n"
    "  gettoken  print a token that lets an edge node join\n"
    "  join      join this host to a cloud as an edge node\n"
    "  reset     remove the files init or join created\n"
    "  certs     issue a user's client certificate and kectl config (certs user)\n"
    "\n"
    "Run 'keadm COMMAND --help' for the flags of a command.\n";

static const char USAGE_INIT[] =
    "Usage: keadm init --dir DIR [--advertise-address HOST[,HOST...]] [--ca-days N]\n"
    "                  [--encrypt-secrets] [--kubernetes [--namespace NS]\n"
    "                  [--service-name SVC] [--external-address HOST[,HOST...]]]\n"
    "\n"
    "Creates DIR (mode 0700) with a new cluster CA (ca.crt, ca.key), CloudHub's server\n"
    "certificate (server.crt, server.key; CN cloudhub), the \"system:admin\" client\n"
    "certificate in group system:masters, used by the controllers and kectl\n"
    "(admin.crt, admin.key), the join\n"
    "token secret (token.secret), DIR/cloudcore.yaml pointing at them and\n"
    "DIR/admin.kubeconfig, for kubectl as system:admin.\n"
    "\n"
    "Flags:\n"
    "  --dir DIR                   where to put the files (required)\n"
    "  --advertise-address HOSTS   addresses or DNS names edge nodes use to reach\n"
    "                              CloudHub, comma-separated, repeatable; the server\n"
    "                              certificate names them plus localhost and 127.0.0.1\n"
    "  --ca-days N                 CA validity in days (default 3650); the server and\n"
    "                              admin certificates last 365 days, never past the CA\n"
    "  --kubeapi-server HOST:PORT  the Kubernetes API address admin.kubeconfig names\n"
    "                              (default " KEADM_DEFAULT_KUBEAPI "; cloudcore's kubeapi.listen)\n"
    "  --encrypt-secrets           also write encryption.keys (mode 0600; one random\n"
    "                              AES-256 key) and name it as store.encryption_key_file:\n"
    "                              Secrets are encrypted at rest in the store\n"
    "  --kubernetes                also write " KEADM_K8S_SECRET_FILE " (mode 0600): the\n"
    "                              Secret \"" KEADM_K8S_SECRET "\" deploy/kubernetes mounts (ca.crt,\n"
    "                              ca.key, tls.crt, tls.key, token.secret, admin.crt,\n"
    "                              admin.key, encryption.keys); the server certificate\n"
    "                              also names the Services SVC, cloudhub and\n"
    "                              edgecontroller as SVC, SVC.NS, SVC.NS.svc and\n"
    "                              SVC.NS.svc.cluster.local\n"
    "  --namespace NS              the Secret's and Services' namespace (default\n"
    "                              " KEADM_K8S_NAMESPACE "; with --kubernetes)\n"
    "  --service-name SVC          cloudcore's Service (default " KEADM_K8S_SERVICE "; with\n"
    "                              --kubernetes)\n"
    "  --external-address HOSTS    addresses or DNS names outside the cluster (node\n"
    "                              IPs of the NodePort, the load balancer's address):\n"
    "                              added to the server certificate like\n"
    "                              --advertise-address (with --kubernetes)\n"
    "  -h, --help                  print this help\n";

static const char USAGE_GETTOKEN[] =
    "Usage: keadm gettoken --dir DIR [--ttl DURATION] [--uses N]\n"
    "\n"
    "Prints a join token for the cluster in DIR (made by keadm init) on stdout, alone\n"
    "on one line. The token names the CA by its SHA-256 and is signed with\n"
    "DIR/token.secret; anyone holding it can join a node until it expires, as many\n"
    "nodes as they like unless --uses limits it.\n"
    "\n"
    "Flags:\n"
    "  --dir DIR        the directory keadm init made (required)\n"
    "  --ttl DURATION   lifetime: 30s, 10m, 24h, 1h30m, 7d (default 24h, at most 365d)\n"
    "  --uses N         at most N nodes can join with this token, 1..1000000 (default:\n"
    "                   no limit); CloudHub counts the joins in its database and\n"
    "                   refuses the next with PERMISSION_DENIED\n"
    "  -h, --help       print this help\n";

static const char USAGE_JOIN[] =
    "Usage: keadm join --cloudhub HOST:PORT --token TOKEN --node-name NAME\n"
    "                  [--dir DIR] [--cert-ttl DURATION] [--runtime-endpoint PATH]\n"
    "                  [--pod-subnet CIDR [--cni-conf-dir DIR]]\n"
    "\n"
    "Fetches the cluster CA from CloudHub, checks it against the CA hash in the token\n"
    "(so nothing is trusted or sent before that check), then sends the token and a\n"
    "certificate request for NAME over TLS verified with that CA. On success writes\n"
    "DIR/ca.crt, DIR/node.key (0600), DIR/node.crt and DIR/edgecore.yaml; on failure\n"
    "writes nothing.\n"
    "\n"
    "Flags:\n"
    "  --cloudhub HOST:PORT   CloudHub's gRPC address (cloudcore's grpc.listen) (required)\n"
    "  --token TOKEN          from 'keadm gettoken' on the cloud side (required)\n"
    "  --node-name NAME       this node's name: 1-63 of a-z, 0-9 and '-', starting\n"
    "                         and ending with a letter or digit (required)\n"
    "  --dir DIR              where to put the files (default " KEADM_EDGE_DIR ")\n"
    "  --cert-ttl DURATION    certificate lifetime to ask for (CloudHub decides)\n"
    "  --runtime-endpoint PATH  the container runtime's CRI socket for Edged\n"
    "                         (default /run/containerd/containerd.sock)\n"
    "  --pod-subnet CIDR      give pods not on the host network their own network\n"
    "                         namespace and an address from CIDR: writes a CNI\n"
    "                         config (bridge + host-local, Debian's\n"
    "                         containernetworking-plugins) for containerd\n"
    "  --cni-conf-dir DIR     where containerd reads CNI configs (default\n"
    "                         /etc/cni/net.d)\n"
    "  --kubeapi-server HOST:PORT  also write node.kubeconfig: kubectl as this node\n"
    "                         (user system:node:NAME) on the Kubernetes API there\n"
    "  -h, --help             print this help\n";

static const char USAGE_CERTS[] =
    "Usage: keadm certs user NAME --dir DIR [--group GROUP]... [--days N]\n"
    "                            [--server HOST:PORT]\n"
    "\n"
    "Issues a client certificate for user NAME (its CN) in the given groups (one O\n"
    "each, as Kubernetes reads them), signed by the cluster CA in DIR/ca.crt and\n"
    "DIR/ca.key (from keadm init). Writes DIR/NAME.crt and DIR/NAME.key (0600) and\n"
    "DIR/NAME.kubeconfig, a kubeconfig-style file for kectl --kubeconfig naming the\n"
    "server, the CA and the two files. The user may do what RBAC grants NAME and its\n"
    "groups (a RoleBinding or ClusterRoleBinding; docs/security.md); the group\n"
    "system:masters may do everything. Refuses to overwrite an existing NAME.crt.\n"
    "\n"
    "Flags:\n"
    "  --dir DIR             the directory keadm init made (required)\n"
    "  --group GROUP         a group of the user; repeatable, at most 16\n"
    "  --days N              validity in days (default 365, never past the CA)\n"
    "  --server HOST:PORT    cloudcore's address for the kubeconfig (default " KEADM_DEFAULT_SERVER ")\n"
    "  -h, --help            print this help\n";

static const char USAGE_RESET[] =
    "Usage: keadm reset --dir DIR [--force]\n"
    "\n"
    "Removes the files keadm init or keadm join wrote in DIR (certificates, keys,\n"
    "token secret, configs) and the databases and socket cloudcore or edgecore made\n"
    "there, then DIR itself if it is empty. Other files are left alone. Stop\n"
    "cloudcore / edgecore first.\n"
    "\n"
    "Flags:\n"
    "  --dir DIR    the directory to clean (required)\n"
    "  --force      clean DIR even if it holds no ca.crt, cloudcore.yaml or edgecore.yaml\n"
    "  -h, --help   print this help\n";

/* ---- small helpers ---- */

/* flag_error reports a getopt failure for `verb`; returns the usage exit code. */
static int flag_error(const char *verb, int c, char **argv)
{
    const char *flag = argv[optind - 1];
    if (c == ':')
        fprintf(stderr, "error: flag %s needs a value\n", flag);
    else
        fprintf(stderr, "error: unknown flag %s for \"keadm %s\"\n", flag, verb);
    fprintf(stderr, "Run 'keadm %s --help' for usage.\n", verb);
    return 2;
}

static int usage_error(const char *verb, const char *fmt, const char *arg)
{
    fputs("error: ", stderr);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'keadm %s --help' for usage.\n", verb);
    return 2;
}

/* dir_check validates a --dir value for `verb`: 0, or the usage exit code
 * after printing the error. */
static int dir_check(const char *verb, const char *dir)
{
    if (!dir || !*dir)
        return usage_error(verb, "%s", "--dir is required");
    if (strlen(dir) >= KEADM_DIR_MAX)
        return usage_error(verb, "--dir is longer than %s bytes", "4031");
    return 0;
}

/* parse_duration reads "30s", "10m", "24h", "7d" or sums like "1h30m"
 * into seconds. Returns 0 or -1. */
static int parse_duration(const char *s, int64_t max, int64_t *out)
{
    int64_t total = 0;
    if (!s || !*s)
        return -1;
    while (*s) {
        int64_t n = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            if (digits >= 12)
                return -1;
            n = n * 10 + (*s - '0');
        }
        int64_t unit = *s == 's' ? 1 : *s == 'm' ? 60 : *s == 'h' ? 3600 : *s == 'd' ? 86400 : 0;
        if (digits == 0 || unit == 0)
            return -1;
        s++;
        total += n * unit;
        if (total > max)
            return -1;
    }
    if (total <= 0)
        return -1;
    *out = total;
    return 0;
}

/* node_name_ok: a DNS-1123 label. */
static int node_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* host_ok: an IPv4/IPv6 address or a DNS name. */
static int host_ok(const char *s)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1)
        return 1;
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return 0;
    return 1;
}

/* hostport_ok: "host:port" or "[v6]:port", port 1..65535. */
static int hostport_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || strlen(colon + 1) == 0 || strlen(colon + 1) > 5)
        return 0;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    long port = strtol(colon + 1, NULL, 10);
    if (port < 1 || port > 65535)
        return 0;
    char host[256];
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']')
            return 0;
        s++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return 0;
    memcpy(host, s, hl);
    host[hl] = '\0';
    return host_ok(host);
}

/* yaml_scalar writes s as a YAML scalar: plain when that is unambiguous,
 * double-quoted otherwise. */
static void yaml_scalar(FILE *f, const char *s)
{
    int plain = s[0] && ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
                         (s[0] >= '0' && s[0] <= '9') || s[0] == '/');
    for (const char *p = s; plain && *p; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                (*p >= '0' && *p <= '9') || strchr("/._:-", *p);
    if (plain && s[strlen(s) - 1] != ':') {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* fmt_utc formats ms since the epoch as 2026-11-25T14:03:11Z. */
static const char *fmt_utc(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld ms", (long long)ms);
    return buf;
}

static int file_exists(const char *dir, const char *name)
{
    char path[KEADM_PATH_MAX];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return lstat(path, &st) == 0;
}

/* dir_prepare makes dir (mode 0700, parents 0755) unless it exists, and
 * resolves it to an absolute path in abs. *made says whether dir was made
 * here. Returns 0, or 1 after printing the error. */
static int dir_prepare(const char *dir, char abs[PATH_MAX], int *made)
{
    *made = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp)) {
            fprintf(stderr, "error: --dir is too long\n");
            return 1;
        }
        for (char *p = tmp + 1; *p; p++) {
            if (*p != '/')
                continue;
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                fprintf(stderr, "error: cannot create %s: %s\n", tmp, strerror(errno));
                return 1;
            }
            *p = '/';
        }
        if (mkdir(dir, 0700) != 0) {
            fprintf(stderr, "error: cannot create %s: %s\n", dir, strerror(errno));
            return 1;
        }
        *made = 1;
    } else if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s exists and is not a directory\n", dir);
        return 1;
    }
    if (!realpath(dir, abs)) {
        fprintf(stderr, "error: cannot resolve %s: %s\n", dir, strerror(errno));
        if (*made)
            rmdir(dir);
        return 1;
    }
    return 0;
}

/* ---- the files one verb writes, undone together on failure ---- */

typedef struct written {
    char dir[PATH_MAX];
    int made_dir;
    const char *names[KEADM_MAX_FILES];
    int n;
} written;

/* written_put writes dir/name atomically and remembers it. Returns 0, or
 * 1 after printing the error. */
static int written_put(written *w, const char *name, const char *data, size_t len, mode_t mode)
{
    char path[KEADM_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    errno = 0;
    int rc = ke_pki_write_file(path, data, len, mode);
    if (rc != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path,
                errno ? strerror(errno) : ke_strerror(rc));
        return 1;
    }
    if (w->n < KEADM_MAX_FILES)
        w->names[w->n++] = name;
    return 0;
}

/* written_undo removes every file written (and the dir if made here). */
static void written_undo(written *w)
{
    char path[KEADM_PATH_MAX];
    for (int i = w->n - 1; i >= 0; i--) {
        snprintf(path, sizeof(path), "%s/%s", w->dir, w->names[i]);
        unlink(path);
    }
    w->n = 0;
    if (w->made_dir)
        rmdir(w->dir);
}

/* config_write renders a config with `render` into memory and writes it. */
static int config_write(written *w, const char *name, void (*render)(FILE *, const void *),
                        const void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    render(f, arg);
    fclose(f);
    int rc = written_put(w, name, buf, len, 0644);
    free(buf);
    return rc;
}

/* yaml_path writes "<dir>/<name>" as a YAML scalar. */
static void yaml_path(FILE *f, const char *dir, const char *name)
{
    char path[KEADM_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    yaml_scalar(f, path);
    fputc('\n', f);
}

typedef struct kubeconfig_render {
    const char *dir, *user, *server;
    const char *crt, *key; /* file names in dir; NULL: USER.crt, USER.key */
    const char *comment;   /* the first line, without "# " */
} kubeconfig_render;

/* render_kubeconfig writes a kubeconfig (one cluster, one user, one
 * context): kectl's (server HOST:PORT, the gRPC port) or kubectl's (server
 * https://HOST:PORT, the Kubernetes API gateway). */
static void render_kubeconfig(FILE *f, const void *arg)
{
    const kubeconfig_render *k = arg;
    char crt[KEADM_USER_NAME_MAX + 8], key[KEADM_USER_NAME_MAX + 8];
    snprintf(crt, sizeof(crt), "%s", k->crt ? k->crt : k->user);
    snprintf(key, sizeof(key), "%s", k->key ? k->key : k->user);
    if (!k->crt)
        strcat(crt, ".crt");
    if (!k->key)
        strcat(key, ".key");
    fprintf(f, "# %s\n", k->comment ? k->comment : "kectl client config written by keadm certs user.");
    fputs("apiVersion: v1\n"
          "kind: Config\n"
          "clusters:\n"
          "- name: kubeedge-c\n"
          "  cluster:\n"
          "    server: ", f);
    yaml_scalar(f, k->server);
    fputs("\n    certificate-authority: ", f);
    yaml_path(f, k->dir, "ca.crt");
    fputs("users:\n- name: ", f);
    yaml_scalar(f, k->user);
    fputs("\n  user:\n    client-certificate: ", f);
    yaml_path(f, k->dir, crt);
    fputs("    client-key: ", f);
    yaml_path(f, k->dir, key);
    fputs("contexts:\n- name: default\n  context:\n    cluster: kubeedge-c\n    user: ", f);
    yaml_scalar(f, k->user);
    fputs("\ncurrent-context: default\n", f);
}

/* ---- init ---- */

/* What cloudcore.yaml is rendered from. */
typedef struct cloudcore_yaml {
    const char *dir;
    int encrypt; /* name DIR/encryption.keys as store.encryption_key_file */
} cloudcore_yaml;

static void render_cloudcore(FILE *f, const void *arg)
{
    const cloudcore_yaml *y = arg;
    const char *d = y->dir;
    fputs("# cloudcore configuration written by keadm init.\n"
          "grpc:\n"
          "  listen: \"0.0.0.0:10000\"\n"
          "  tls:\n",
          f);
    fputs("    ca: ", f);
    yaml_path(f, d, "ca.crt");
    fputs("    cert: ", f);
    yaml_path(f, d, "server.crt");
    fputs("    key: ", f);
    yaml_path(f, d, "server.key");
    fputs("    client_auth: request\n"
          "cloudhub:\n"
          "  db: ",
          f);
    yaml_path(f, d, "cloudhub.db");
    fputs("  ca_key: ", f);
    yaml_path(f, d, "ca.key");
    fputs("  token_secret: ", f);
    yaml_path(f, d, "token.secret");
    fputs("store:\n"
          "  db: ",
          f);
    yaml_path(f, d, "store.db");
    if (y->encrypt) {
        fputs("  encryption_key_file: ", f);
        yaml_path(f, d, "encryption.keys");
    }
    fputs("http:\n"
          "  listen: \"127.0.0.1:10550\"\n",
          f);
}

/* sans_add splits a comma list into sans[], skipping duplicates. Returns
 * 0, or 2 after printing a usage error. */
static int sans_add(const char *flag, char *list, const char **sans, int *n)
{
    for (char *save = NULL, *h = strtok_r(list, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        while (*h == ' ')
            h++;
        for (size_t l = strlen(h); l > 0 && h[l - 1] == ' '; l--)
            h[l - 1] = '\0';
        if (!*h)
            continue;
        if (!host_ok(h))
        {
            fprintf(stderr, "error: %s: \"%s\" is neither an IP address nor a DNS name\n",
                    flag, h);
            fprintf(stderr, "Run 'keadm init --help' for usage.\n");
            return 2;
        }
        int dup = 0;
        for (int i = 0; i < *n && !dup; i++)
            dup = strcmp(sans[i], h) == 0;
        if (dup)
            continue;
        if (*n >= KEADM_MAX_SANS)
            return usage_error("init", "more than %s addresses in --advertise-address, "
                                       "--external-address and --kubernetes' Service names", "62");
        sans[(*n)++] = h;
    }
    return 0;
}

typedef struct init_material {
    char *ca, *ca_key, *server, *server_key, *admin, *admin_key;
    char secret[2 * KE_PKI_SECRET_BYTES + 2];
    char keys[KE_CRYPT_LINE_MAX + 512]; /* encryption.keys, with --encrypt-secrets */
} init_material;

static void init_material_free(init_material *m)
{
    free(m->ca);
    free(m->ca_key);
    free(m->server);
    free(m->server_key);
    free(m->admin);
    free(m->admin_key);
    OPENSSL_cleanse(m, sizeof(*m)); /* the token secret and the encryption key */
}

/* yaml_base64 writes len bytes of data as one base64 scalar and a newline. */
static int yaml_base64(FILE *f, const char *data, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *b = malloc(cap);
    if (!b)
        return 1;
    EVP_EncodeBlock(b, (const unsigned char *)data, (int)len);
    fprintf(f, "%s\n", (const char *)b);
    OPENSSL_clear_free(b, cap); /* base64 of private keys */
    return 0;
}

/* What cloudcore-secret.yaml is rendered from. */
typedef struct secret_yaml {
    const char *ns;
    const init_material *m;
    int encrypt;
} secret_yaml;

/* render_secret writes the Secret deploy/kubernetes mounts at
 * /etc/kubeedge/tls: the names its ConfigMaps use (tls.crt and tls.key are
 * server.crt and server.key). */
static int render_secret(FILE *f, const secret_yaml *y)
{
    const init_material *m = y->m;
    const struct {
        const char *key, *val;
    } items[] = {
        {"ca.crt", m->ca},           {"ca.key", m->ca_key},       {"tls.crt", m->server},
        {"tls.key", m->server_key},  {"token.secret", m->secret}, {"admin.crt", m->admin},
        {"admin.key", m->admin_key}, {"encryption.keys", y->encrypt ? m->keys : NULL},
    };
    fputs("# The Secret " KEADM_K8S_SECRET " that deploy/kubernetes mounts at /etc/kubeedge/tls,\n"
          "# written by keadm init --kubernetes. It holds the cluster CA's private key\n"
          "# and the join token secret: keep this file as private as ca.key.\n"
          "#   kubectl apply -f " KEADM_K8S_SECRET_FILE "\n"
          "apiVersion: v1\n"
          "kind: Secret\n"
          "metadata:\n"
          "  name: " KEADM_K8S_SECRET "\n"
          "  namespace: ",
          f);
    yaml_scalar(f, y->ns);
    fputs("\n  labels:\n"
          "    app.kubernetes.io/part-of: kubeedge-c\n"
          "type: Opaque\n"
          "data:\n",
          f);
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        if (!items[i].val)
            continue;
        fprintf(f, "  %s: ", items[i].key);
        if (yaml_base64(f, items[i].val, strlen(items[i].val)) != 0)
            return 1;
    }
    return 0;
}

/* secret_write renders the Secret in memory and writes it with mode 0600. */
static int secret_write(written *w, const secret_yaml *y)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    int bad = render_secret(f, y);
    fclose(f);
    int rc = bad ? 1 : written_put(w, KEADM_K8S_SECRET_FILE, buf, len, 0600);
    if (bad)
        fprintf(stderr, "error: out of memory\n");
    if (buf)
        OPENSSL_clear_free(buf, len);
    return rc;
}

/* k8s_sans adds the in-cluster DNS names of Service svc in namespace ns:
 * svc, svc.ns, svc.ns.svc and svc.ns.svc.cluster.local. names holds them. */
static int k8s_sans(const char *svc, const char *ns, char names[4][256], const char **sans,
                    int *n)
{
    snprintf(names[0], 256, "%s", svc);
    snprintf(names[1], 256, "%s.%s", svc, ns);
    snprintf(names[2], 256, "%s.%s.svc", svc, ns);
    snprintf(names[3], 256, "%s.%s.svc.cluster.local", svc, ns);
    for (int i = 0; i < 4; i++) {
        int dup = 0;
        for (int j = 0; j < *n && !dup; j++)
            dup = strcmp(sans[j], names[i]) == 0;
        if (dup)
            continue;
        if (*n >= KEADM_MAX_SANS)
            return usage_error("init", "more than %s addresses in --advertise-address, "
                                       "--external-address and --kubernetes' Service names", "62");
        sans[(*n)++] = names[i];
    }
    return 0;
}

static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"advertise-address", required_argument, NULL, 'a'},
        {"ca-days", required_argument, NULL, 'c'},
        {"encrypt-secrets", no_argument, NULL, 'e'},
        {"kubeapi-server", required_argument, NULL, 'k'},
        {"kubernetes", no_argument, NULL, 'K'},
        {"namespace", required_argument, NULL, 'n'},
        {"service-name", required_argument, NULL, 's'},
        {"external-address", required_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *kubeapi = KEADM_DEFAULT_KUBEAPI;
    const char *ns = NULL, *svc = NULL;
    int encrypt = 0, kubernetes = 0, external = 0;
    static char svc_names[3][4][256]; /* --kubernetes' Service DNS names, as SANs */
    const char *sans[KE_PKI_MAX_SANS + 1];
    int nsans = 0, rc;
    long ca_days = KEADM_CA_DAYS;
    char *end;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'a':
            if ((rc = sans_add("--advertise-address", optarg, sans, &nsans)) != 0)
                return rc;
            break;
        case 'c':
            errno = 0;
            ca_days = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || ca_days < 1 || ca_days > KEADM_CA_DAYS_MAX)
                return usage_error("init", "--ca-days must be a number of days, 1..36500, not "
                                           "\"%s\"",
                                   optarg);
            break;
        case 'e': encrypt = 1; break;
        case 'K': kubernetes = 1; break;
        case 'n':
        case 's':
            if (!node_name_ok(optarg))
                return usage_error("init", c == 'n' ? "--namespace: \"%s\" is not a DNS-1123 label"
                                                    : "--service-name: \"%s\" is not a DNS-1123 "
                                                      "label",
                                   optarg);
            *(c == 'n' ? &ns : &svc) = optarg;
            break;
        case 'x':
            external = 1;
            if ((rc = sans_add("--external-address", optarg, sans, &nsans)) != 0)
                return rc;
            break;
        case 'k':
            if (!hostport_ok(optarg))
                return usage_error("init", "--kubeapi-server: \"%s\" is not HOST:PORT", optarg);
            kubeapi = optarg;
            break;
        case 'h': fputs(USAGE_INIT, stdout); return 0;
        default: return flag_error("init", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("init", "unexpected argument \"%s\"", argv[optind]);
    if ((rc = dir_check("init", dir)) != 0)
        return rc;
    if (!kubernetes && (ns || svc || external))
        return usage_error("init", "%s", "--namespace, --service-name and --external-address "
                                         "go with --kubernetes");
    if (kubernetes) {
        const char *names[] = {svc ? svc : KEADM_K8S_SERVICE, "cloudhub", "edgecontroller"};
        ns = ns ? ns : KEADM_K8S_NAMESPACE;
        for (int i = 0; i < 3; i++)
            if ((rc = k8s_sans(names[i], ns, svc_names[i], sans, &nsans)) != 0)
                return rc;
    }
    const char *local[] = {"localhost", "127.0.0.1"};
    for (int i = 0; i < 2; i++) {
        int dup = 0;
        for (int j = 0; j < nsans && !dup; j++)
            dup = strcmp(sans[j], local[i]) == 0;
        if (!dup)
            sans[nsans++] = local[i];
    }
    sans[nsans] = NULL;
    if (file_exists(dir, "ca.crt")) {
        fprintf(stderr, "error: %s is already initialised (it holds ca.crt); run keadm reset "
                        "--dir %s first\n",
                dir, dir);
        return 1;
    }

    /* Everything is made in memory first: a bad input fails before any
     * file exists. */
    init_material m;
    memset(&m, 0, sizeof(m));
    int64_t leaf = (int64_t)KEADM_LEAF_DAYS * 86400;
    static const char *const admin_groups[] = {KEADM_ADMIN_GROUP, NULL};
    if ((rc = ke_pki_ca_create(KEADM_CA_CN, (int64_t)ca_days * 86400, &m.ca, &m.ca_key)) != 0 ||
        (rc = ke_pki_server_cert_create(m.ca, m.ca_key, KEADM_SERVER_CN, sans, leaf, &m.server,
                                        &m.server_key)) != 0 ||
        (rc = ke_pki_user_cert_create(m.ca, m.ca_key, KEADM_ADMIN_CN, admin_groups, leaf,
                                      &m.admin, &m.admin_key)) != 0 ||
        (rc = ke_pki_random_hex(KE_PKI_SECRET_BYTES, m.secret)) != 0) {
        fprintf(stderr, "error: cannot create the certificates: %s\n", ke_strerror(rc));
        init_material_free(&m);
        return 1;
    }
    strcat(m.secret, "\n");
    char line[KE_CRYPT_LINE_MAX];
    if (encrypt) {
        if ((rc = ke_crypt_key_line("key1", line, sizeof(line))) != 0) {
            fprintf(stderr, "error: cannot create the encryption key: %s\n", ke_strerror(rc));
            init_material_free(&m);
            return 1;
        }
        snprintf(m.keys, sizeof(m.keys),
                 "# Keys encrypting Secrets at rest (docs/security.md). The first encrypts,\n"
                 "# every one decrypts. Rotate: add a new key first, restart cloudcore, run\n"
                 "# cloudcore --reencrypt-secrets, then remove the old key.\n%s",
                 line);
        OPENSSL_cleanse(line, sizeof(line));
    }
    cloudcore_yaml y = {.dir = NULL, .encrypt = encrypt};
    secret_yaml sy = {.ns = ns, .m = &m, .encrypt = encrypt};

    written w;
    memset(&w, 0, sizeof(w));
    if (dir_prepare(dir, w.dir, &w.made_dir) != 0) {
        init_material_free(&m);
        return 1;
    }
    y.dir = w.dir;
    char kubeapi_url[300];
    snprintf(kubeapi_url, sizeof(kubeapi_url), "https://%s", kubeapi);
    kubeconfig_render kr = {w.dir, KEADM_ADMIN_CN, kubeapi_url, "admin.crt", "admin.key",
                            "kubectl config for the Kubernetes API, written by keadm init."};
    int failed = written_put(&w, "ca.key", m.ca_key, strlen(m.ca_key), 0600) ||
                 written_put(&w, "ca.crt", m.ca, strlen(m.ca), 0644) ||
                 written_put(&w, "server.key", m.server_key, strlen(m.server_key), 0600) ||
                 written_put(&w, "server.crt", m.server, strlen(m.server), 0644) ||
                 written_put(&w, "admin.key", m.admin_key, strlen(m.admin_key), 0600) ||
                 written_put(&w, "admin.crt", m.admin, strlen(m.admin), 0644) ||
                 written_put(&w, "token.secret", m.secret, strlen(m.secret), 0600) ||
                 (encrypt && written_put(&w, "encryption.keys", m.keys, strlen(m.keys), 0600)) ||
                 config_write(&w, "cloudcore.yaml", render_cloudcore, &y) ||
                 config_write(&w, "admin.kubeconfig", render_kubeconfig, &kr) ||
                 (kubernetes && secret_write(&w, &sy));
    if (failed) {
        written_undo(&w);
        init_material_free(&m);
        fprintf(stderr, "keadm init wrote nothing.\n");
        return 1;
    }

    char hash[KE_PKI_HASH_HEX], t1[32], t2[32];
    int64_t ca_until = 0, leaf_until = 0;
    ke_pki_ca_hash(m.ca, hash);
    ke_pki_cert_info(m.ca, NULL, 0, NULL, &ca_until);
    ke_pki_cert_info(m.server, NULL, 0, NULL, &leaf_until);
    printf("[init] %s %s (mode 0700)\n", w.made_dir ? "created" : "using", w.dir);
    printf("[init] ca.crt, ca.key          cluster CA \"%s\", valid until %s\n", KEADM_CA_CN,
           fmt_utc(ca_until, t1, sizeof(t1)));
    printf("[init]                         sha256:%s\n", hash);
    printf("[init] server.crt, server.key  CloudHub server certificate, valid until %s, for",
           fmt_utc(leaf_until, t2, sizeof(t2)));
    for (int i = 0; sans[i]; i++)
        printf("%s %s", i ? "," : "", sans[i]);
    printf("\n[init] admin.crt, admin.key    client certificate \"%s\" for the controllers "
           "and kectl\n",
           KEADM_ADMIN_CN);
    printf("[init] token.secret            signs join tokens (keep it secret)\n");
    if (encrypt)
        printf("[init] encryption.keys         AES-256 key encrypting Secrets at rest (keep it "
               "secret)\n");
    printf("[init] cloudcore.yaml          cloudcore configuration using the files above\n");
    printf("[init] admin.kubeconfig        for kubectl (server %s)\n", kubeapi_url);
    if (kubernetes)
        printf("[init] " KEADM_K8S_SECRET_FILE "   the Secret \"" KEADM_K8S_SECRET "\" in namespace %s "
               "for deploy/kubernetes (keep it secret)\n"
               "\nNext steps (Kubernetes):\n"
               "  kubectl apply -f %s/" KEADM_K8S_SECRET_FILE "\n"
               "  kubectl apply -k deploy/kubernetes        (or deploy/kubernetes/split)\n",
               ns, w.dir);
    printf("\nNext steps:\n"
           "  cloudcore --config %s/cloudcore.yaml\n"
           "  keadm gettoken --dir %s\n"
           "  kubectl --kubeconfig %s/admin.kubeconfig get nodes\n",
           w.dir, w.dir, w.dir);
    init_material_free(&m);
    return 0;
}

/* ---- gettoken ---- */

static int cmd_gettoken(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"ttl", required_argument, NULL, 't'},
        {"uses", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    int64_t ttl = KEADM_TOKEN_TTL;
    uint32_t uses = 0; /* no limit */
    char *end = NULL;
    unsigned long long u;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 't':
            if (parse_duration(optarg, KEADM_TOKEN_TTL_MAX, &ttl) != 0)
                return usage_error("gettoken",
                                   "--ttl: \"%s\" is not a duration like 30s, 10m or 24h "
                                   "(at most 365d)",
                                   optarg);
            break;
        case 'u':
            errno = 0;
            u = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-' || u == 0 ||
                u > KE_PKI_TOKEN_USES_MAX)
                return usage_error("gettoken",
                                   "--uses: \"%s\" is not a number of joins, 1..1000000", optarg);
            uses = (uint32_t)u;
            break;
        case 'h': fputs(USAGE_GETTOKEN, stdout); return 0;
        default: return flag_error("gettoken", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("gettoken", "unexpected argument \"%s\"", argv[optind]);
    if ((rc = dir_check("gettoken", dir)) != 0)
        return rc;

    char path[KEADM_PATH_MAX], *ca = NULL, *token = NULL;
    uint8_t secret[KE_PKI_SECRET_MAX];
    size_t secret_len = 0;
    int status = 1;
    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    rc = ke_pki_read_file(path, &ca, NULL);
    if (rc != 0) {
        fprintf(stderr, "error: cannot read %s: %s; run keadm init --dir %s first\n", path,
                ke_strerror(rc), dir);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/token.secret", dir);
    if ((rc = ke_pki_secret_read(path, secret, sizeof(secret), &secret_len)) != 0) {
        fprintf(stderr, "error: cannot read the token secret %s: %s\n", path,
                rc == KE_EINVAL ? "not a hex secret of 16..128 bytes" : ke_strerror(rc));
        goto out;
    }
    int64_t ca_until = 0, expires = (int64_t)time(NULL) + ttl;
    char when[32];
    if (ke_pki_cert_info(ca, NULL, 0, NULL, &ca_until) == 0 && expires * 1000 > ca_until)
        fprintf(stderr, "warning: the CA expires at %s, before this token does\n",
                fmt_utc(ca_until, when, sizeof(when)));
    rc = ke_pki_token_create_uses(ca, secret, secret_len, expires, uses, &token);
    if (rc != 0) {
        fprintf(stderr, "error: cannot create a token from %s/ca.crt: %s\n", dir,
                ke_strerror(rc));
        goto out;
    }
    printf("%s\n", token);
    status = 0;
out:
    memset(secret, 0, sizeof(secret));
    free(ca);
    free(token);
    return status;
}

/* ---- join ---- */

typedef struct join_args {
    const char *cloudhub;
    const char *token;
    const char *node;
    const char *dir;
    int64_t cert_ttl; /* 0: CloudHub's default */
    const char *runtime_endpoint;
    const char *pod_subnet; /* NULL: no CNI config written */
    const char *cni_dir;
    const char *kubeapi; /* NULL: no node.kubeconfig */
} join_args;

/* node_kubeconfig writes node.kubeconfig: kubectl as the node's own
 * identity (what the node rule lets it read) on the Kubernetes API. */
static int node_kubeconfig(written *w, const join_args *a)
{
    char user[128], url[300];
    snprintf(user, sizeof(user), "system:node:%s", a->node);
    snprintf(url, sizeof(url), "https://%s", a->kubeapi);
    kubeconfig_render kr = {w->dir, user, url, "node.crt", "node.key",
                            "kubectl config for this node's identity, written by keadm join."};
    return config_write(w, "node.kubeconfig", render_kubeconfig, &kr);
}

typedef struct edge_render {
    const join_args *a;
    const char *dir;
} edge_render;

static void render_edgecore(FILE *f, const void *arg)
{
    const edge_render *r = arg;
    char sock[KEADM_PATH_MAX];
    fputs("# edgecore configuration written by keadm join.\nnode_name: ", f);
    yaml_scalar(f, r->a->node);
    fputs("\nedgehub:\n  server: ", f);
    yaml_scalar(f, r->a->cloudhub);
    fputs("\n  tls:\n    ca: ", f);
    yaml_path(f, r->dir, "ca.crt");
    fputs("    cert: ", f);
    yaml_path(f, r->dir, "node.crt");
    fputs("    key: ", f);
    yaml_path(f, r->dir, "node.key");
    fputs("metamanager:\n  db: ", f);
    yaml_path(f, r->dir, "edge.db");
    snprintf(sock, sizeof(sock), "unix:%s/edgecore.sock", r->dir);
    fputs("local:\n  listen: \"", f);
    for (const char *p = sock; *p; p++) { /* always quoted, as the cloud side's listen */
        if (*p == '"' || *p == '\\')
            fputc('\\', f);
        fputc(*p, f);
    }
    fputs("\"\n", f);
    fputs("edged:\n  runtime_endpoint: ", f);
    yaml_scalar(f, r->a->runtime_endpoint);
    fputs("\n  root_dir: ", f);
    yaml_path(f, r->dir, "edged");
}

/* subnet_ok: an IPv4 CIDR with a prefix of 8 to 28 bits. */
static int subnet_ok(const char *cidr)
{
    char addr[32];
    const char *slash = strchr(cidr, '/');
    if (!slash || (size_t)(slash - cidr) >= sizeof(addr))
        return 0;
    memcpy(addr, cidr, (size_t)(slash - cidr));
    addr[slash - cidr] = '\0';
    struct in_addr in;
    char *end = NULL;
    long bits = strtol(slash + 1, &end, 10);
    return inet_pton(AF_INET, addr, &in) == 1 && end && !*end && bits >= 8 && bits <= 28;
}

/* cni_write writes the pod network's CNI config for containerd. */
static int cni_write(const join_args *a)
{
    char path[KEADM_PATH_MAX], tmp[KEADM_PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/10-kubeedge-c.conflist", a->cni_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (mkdir(a->cni_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: cannot create %s: %s\n", a->cni_dir, strerror(errno));
        return 1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "error: cannot write %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    fprintf(f,
            "{\"cniVersion\": \"0.4.0\", \"name\": \"kubeedge-c\",\n"
            " \"plugins\": [{\"type\": \"bridge\", \"bridge\": \"kec0\", \"isGateway\": true,\n"
            "              \"ipMasq\": true, \"hairpinMode\": true,\n"
            "              \"ipam\": {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"%s\"}]],\n"
            "                       \"routes\": [{\"dst\": \"0.0.0.0/0\"}]}},\n"
            "             {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}\n",
            a->pod_subnet);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    printf("[join] wrote %s (pods get addresses from %s)\n", path, a->pod_subnet);
    return 0;
}

/* rpc_error prints a failed call's status with a hint for the usual causes. */
static void rpc_error(const char *what, const join_args *a, int rc, const ke_rpc_status *st)
{
    if (rc != 0) {
        fprintf(stderr, "error: %s %s: %s\n", what, a->cloudhub, ke_strerror(rc));
        return;
    }
    fprintf(stderr, "error: %s %s: %s: %s\n", what, a->cloudhub, ke_rpc_status_name(st->code),
            st->message[0] ? st->message : "(no message)");
    if (st->code == KE_RPC_UNAVAILABLE || st->code == KE_RPC_DEADLINE_EXCEEDED)
        fprintf(stderr, "hint: check that cloudcore is running and that %s is its grpc.listen "
                        "address, reachable from here\n",
                a->cloudhub);
}

/* bootstrap_ca fetches the CA over unverified TLS and checks it against
 * the token's hash. On 0 *ca_pem is the caller's. Returns 0 or 1 (printed). */
static int bootstrap_ca(ke_rpc_loop *loop, const join_args *a, const char *want_hash,
                        char **ca_pem)
{
    *ca_pem = NULL;
    ke_rpc_tls tls = {.skip_server_verify = 1};
    ke_rpc_channel_opts co = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int status = 1;
    int rc = ke_rpc_channel_new(loop, a->cloudhub, &co, &ch);
    if (rc != 0) {
        fprintf(stderr, "error: cannot set up a channel to %s: %s\n", a->cloudhub,
                ke_strerror(rc));
        goto out;
    }
    Ke__V1__BootstrapRequest req = KE__V1__BOOTSTRAP_REQUEST__INIT;
    ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = KEADM_RPC_TIMEOUT_MS};
    rc = ke_rpc_stub_unary(&stub, "Bootstrap", &req.base, &o, &reply, &st);
    if (rc != 0 || st.code != KE_RPC_OK) {
        rpc_error("cannot fetch the CA from cloudhub", a, rc, &st);
        goto out;
    }
    const Ke__V1__BootstrapReply *r = (const Ke__V1__BootstrapReply *)reply;
    char got[KE_PKI_HASH_HEX] = "";
    if (r->ca_pem.len == 0 || r->ca_pem.len > KE_PKI_PEM_MAX ||
        memchr(r->ca_pem.data, '\0', r->ca_pem.len) ||
        !(*ca_pem = strndup((const char *)r->ca_pem.data, r->ca_pem.len)) ||
        ke_pki_ca_hash(*ca_pem, got) != 0) {
        fprintf(stderr, "error: %s did not send a readable CA certificate: is it a kubeedge-c "
                        "cloudhub?\n",
                a->cloudhub);
        goto out;
    }
    if (strcmp(got, want_hash) != 0) {
        fprintf(stderr, "error: the CA presented by %s does not match the token (expected %s, "
                        "got %s): wrong cloudhub address or token\n",
                a->cloudhub, want_hash, got);
        goto out;
    }
    status = 0;
out:
    if (status != 0) {
        free(*ca_pem);
        *ca_pem = NULL;
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    ke_rpc_channel_free(ch);
    return status;
}


/* node_cn_ok: the CN CloudHub gives node `node`: "system:node:<node>", or
 * the bare name from servers that predate node naming. */
static int node_cn_ok(const char *cn, const char *node)
{
    static const char prefix[] = "system:node:";
    if (strncmp(cn, prefix, sizeof(prefix) - 1) == 0)
        cn += sizeof(prefix) - 1;
    return strcmp(cn, node) == 0;
}

/* join_call sends the token and CSR over TLS verified with ca_file. On 0
 * *cert_pem is the caller's. Returns 0 or 1 (printed). */
static int join_call(ke_rpc_loop *loop, const join_args *a, const char *ca_file,
                     const char *ca_pem, const char *csr, char **cert_pem, int64_t *not_after_ms)
{
    *cert_pem = NULL;
    ke_rpc_tls tls = {.ca_file = ca_file};
    ke_rpc_channel_opts co = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    int status = 1;
    int rc = ke_rpc_channel_new(loop, a->cloudhub, &co, &ch);
    if (rc != 0) {
        fprintf(stderr, "error: cannot set up a TLS channel to %s: %s\n", a->cloudhub,
                ke_strerror(rc));
        goto out;
    }
    Ke__V1__JoinRequest req = KE__V1__JOIN_REQUEST__INIT;
    req.token = (char *)a->token;
    req.node_name = (char *)a->node;
    req.csr_pem.data = (uint8_t *)csr;
    req.csr_pem.len = strlen(csr);
    char ttl[24];
    ke_rpc_md md = {KEADM_CERT_TTL_MD, ttl};
    snprintf(ttl, sizeof(ttl), "%lld", (long long)a->cert_ttl);
    ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = KEADM_RPC_TIMEOUT_MS,
                          .md = a->cert_ttl ? &md : NULL,
                          .n_md = a->cert_ttl ? 1 : 0};
    rc = ke_rpc_stub_unary(&stub, "Join", &req.base, &o, &reply, &st);
    if (rc != 0 || st.code != KE_RPC_OK) {
        rpc_error("cloudhub refused the join at", a, rc, &st);
        if (rc == 0 && st.code == KE_RPC_UNAVAILABLE)
            fprintf(stderr, "hint: if the TLS handshake failed, the server certificate does "
                            "not name the host in --cloudhub (keadm init --advertise-address)\n");
        goto out;
    }
    const Ke__V1__JoinResponse *r = (const Ke__V1__JoinResponse *)reply;
    char cn[KE_PKI_CN_MAX + 1] = "";
    if (r->certificate_pem.len == 0 || r->certificate_pem.len > KE_PKI_PEM_MAX ||
        memchr(r->certificate_pem.data, '\0', r->certificate_pem.len) ||
        !(*cert_pem = strndup((const char *)r->certificate_pem.data, r->certificate_pem.len)) ||
        ke_pki_cert_info(*cert_pem, cn, sizeof(cn), NULL, not_after_ms) != 0 ||
        !node_cn_ok(cn, a->node) || ke_pki_verify_chain(ca_pem, *cert_pem) != 0) {
        fprintf(stderr, "error: %s returned a certificate that is not a valid one for node "
                        "\"%s\" from the token's CA%s%s%s\n",
                a->cloudhub, a->node, cn[0] ? " (its CN is \"" : "", cn, cn[0] ? "\")" : "");
        goto out;
    }
    status = 0;
out:
    if (status != 0) {
        free(*cert_pem);
        *cert_pem = NULL;
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    ke_rpc_channel_free(ch);
    return status;
}

static int cmd_join(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cloudhub", required_argument, NULL, 'c'},
        {"token", required_argument, NULL, 't'},
        {"node-name", required_argument, NULL, 'n'},
        {"dir", required_argument, NULL, 'd'},
        {"cert-ttl", required_argument, NULL, 'T'},
        {"runtime-endpoint", required_argument, NULL, 'R'},
        {"pod-subnet", required_argument, NULL, 'P'},
        {"cni-conf-dir", required_argument, NULL, 'C'},
        {"kubeapi-server", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    join_args a = {.dir = KEADM_EDGE_DIR,
                   .runtime_endpoint = "/run/containerd/containerd.sock",
                   .cni_dir = "/etc/cni/net.d"};
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a.cloudhub = optarg; break;
        case 't': a.token = optarg; break;
        case 'n': a.node = optarg; break;
        case 'd': a.dir = optarg; break;
        case 'T':
            if (parse_duration(optarg, KEADM_CERT_TTL_MAX, &a.cert_ttl) != 0)
                return usage_error("join",
                                   "--cert-ttl: \"%s\" is not a duration like 24h or 365d", optarg);
            break;
        case 'R': a.runtime_endpoint = optarg; break;
        case 'P': a.pod_subnet = optarg; break;
        case 'C': a.cni_dir = optarg; break;
        case 'k':
            if (!hostport_ok(optarg))
                return usage_error("join", "--kubeapi-server: \"%s\" is not HOST:PORT", optarg);
            a.kubeapi = optarg;
            break;
        case 'h': fputs(USAGE_JOIN, stdout); return 0;
        default: return flag_error("join", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("join", "unexpected argument \"%s\"", argv[optind]);
    if (!*a.runtime_endpoint || strlen(a.runtime_endpoint) >= KEADM_PATH_MAX / 2)
        return usage_error("join", "%s", "--runtime-endpoint: a socket path is required");
    if (a.pod_subnet && !subnet_ok(a.pod_subnet))
        return usage_error("join", "--pod-subnet: \"%s\" is not an IPv4 CIDR with a prefix of 8 to 28 bits",
                           a.pod_subnet);
    if (!a.cloudhub)
        return usage_error("join", "%s", "--cloudhub is required");
    if (!a.token)
        return usage_error("join", "%s", "--token is required (run keadm gettoken on the cloud side)");
    if (!a.node)
        return usage_error("join", "%s", "--node-name is required");
    int rc = dir_check("join", a.dir);
    if (rc != 0)
        return rc;
    if (!hostport_ok(a.cloudhub))
        return usage_error("join", "--cloudhub: \"%s\" is not HOST:PORT", a.cloudhub);
    if (!node_name_ok(a.node))
        return usage_error("join",
                           "--node-name: \"%s\" is not a valid node name (1-63 of a-z, 0-9 and "
                           "'-', starting and ending with a letter or digit)",
                           a.node);
    char want_hash[KE_PKI_HASH_HEX];
    int64_t expires = 0;
    if (ke_pki_token_parse(a.token, want_hash, &expires) != 0)
        return usage_error("join",
                           "--token: \"%.20s...\" is not a join token (expected "
                           "<cahash>.<expiry>.<nonce>.<signature>, as printed by keadm gettoken)",
                           a.token);
    static const char *const edge_markers[] = {"ca.crt", "node.crt", "node.key", "edgecore.yaml",
                                               NULL};
    for (int i = 0; edge_markers[i]; i++) {
        if (file_exists(a.dir, edge_markers[i])) {
            fprintf(stderr, "error: %s already holds %s; run keadm reset --dir %s first\n",
                    a.dir, edge_markers[i], a.dir);
            return 1;
        }
    }
    if (expires <= (int64_t)time(NULL)) {
        char when[32];
        fprintf(stderr, "warning: the token expired at %s by this host's clock; cloudhub will "
                        "refuse it unless this clock is wrong\n",
                fmt_utc(expires * 1000, when, sizeof(when)));
    }

    ke_log_set_level(KE_LOG_ERROR);
    int status = 1;
    ke_rpc_loop *loop = NULL;
    char *ca = NULL, *key = NULL, *csr = NULL, *cert = NULL;
    char ca_file[KEADM_PATH_MAX], when[32];
    int64_t not_after = 0;
    written w;
    memset(&w, 0, sizeof(w));
    rc = ke_rpc_loop_new(1, &loop);
    if (rc != 0) {
        fprintf(stderr, "error: cannot start the rpc loop: %s\n", ke_strerror(rc));
        goto out;
    }
    printf("[join] fetching the cluster CA from %s (not yet trusted)\n", a.cloudhub);
    fflush(stdout);
    if (bootstrap_ca(loop, &a, want_hash, &ca) != 0)
        goto out;
    printf("[join] the CA matches the token: sha256:%s\n", want_hash);
    if ((rc = ke_pki_key_create(&key)) != 0 || (rc = ke_pki_csr_create(key, a.node, &csr)) != 0) {
        fprintf(stderr, "error: cannot create the node key and request: %s\n", ke_strerror(rc));
        goto out;
    }
    if (dir_prepare(a.dir, w.dir, &w.made_dir) != 0)
        goto out;
    edge_render er = {&a, w.dir};
    /* ke_rpc_tls takes file paths: the CA goes in place first, and is
     * removed again if the join fails. */
    snprintf(ca_file, sizeof(ca_file), "%s/ca.crt", w.dir);
    if (written_put(&w, "ca.crt", ca, strlen(ca), 0644) != 0)
        goto out;
    printf("[join] asking %s for a certificate for node \"%s\"\n", a.cloudhub, a.node);
    fflush(stdout);
    if (join_call(loop, &a, ca_file, ca, csr, &cert, &not_after) != 0)
        goto out;
    if (ke_pki_cert_matches_key(cert, key) != 0) {
        fprintf(stderr, "error: %s returned a certificate for another key\n", a.cloudhub);
        goto out;
    }
    if (written_put(&w, "node.key", key, strlen(key), 0600) != 0 ||
        written_put(&w, "node.crt", cert, strlen(cert), 0644) != 0 ||
        config_write(&w, "edgecore.yaml", render_edgecore, &er) != 0 ||
        (a.kubeapi && node_kubeconfig(&w, &a) != 0) ||
        (a.pod_subnet && cni_write(&a) != 0))
        goto out;
    printf("[join] node \"%s\" joined; its certificate is valid until %s\n", a.node,
           fmt_utc(not_after, when, sizeof(when)));
    printf("[join] wrote %s/ca.crt, node.key, node.crt, edgecore.yaml%s\n", w.dir,
           a.kubeapi ? ", node.kubeconfig" : "");
    printf("\nNext step:\n  edgecore --config %s/edgecore.yaml\n", w.dir);
    status = 0;
out:
    if (status != 0) {
        written_undo(&w);
        if (loop)
            fprintf(stderr, "keadm join wrote nothing.\n");
    }
    free(ca);
    free(key);
    free(csr);
    free(cert);
    ke_rpc_loop_free(loop);
    return status;
}

/* ---- reset ---- */

/* remove_named removes dir/name and any temporary "name.tmp.XXXXXX" left
 * by an interrupted write. Returns how many entries were removed, or -1 on
 * an error (printed). */
static int remove_named(const char *dir, const char *name)
{
    char path[KEADM_PATH_MAX];
    int n = 0, failed = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (unlink(path) == 0) {
        printf("[reset] removed %s\n", path);
        n++;
    } else if (errno != ENOENT) {
        fprintf(stderr, "error: cannot remove %s: %s\n", path, strerror(errno));
        failed = 1;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t nl = strlen(name);
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, name, nl) != 0 || strncmp(e->d_name + nl, ".tmp.", 5) != 0 ||
            strlen(e->d_name + nl + 5) != 6)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) {
            printf("[reset] removed %s\n", path);
            n++;
        }
    }
    if (d)
        closedir(d);
    return failed ? -1 : n;
}

static int cmd_reset(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    int force = 0, c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'f': force = 1; break;
        case 'h': fputs(USAGE_RESET, stdout); return 0;
        default: return flag_error("reset", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("reset", "unexpected argument \"%s\"", argv[optind]);
    if ((rc = dir_check("reset", dir)) != 0)
        return rc;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) {
            printf("[reset] nothing to do: %s does not exist\n", dir);
            return 0;
        }
        fprintf(stderr, "error: cannot inspect %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s is not a directory\n", dir);
        return 1;
    }
    if (!force && !file_exists(dir, "ca.crt") && !file_exists(dir, "cloudcore.yaml") &&
        !file_exists(dir, "edgecore.yaml")) {
        fprintf(stderr, "error: %s does not look like a keadm directory (no ca.crt, "
                        "cloudcore.yaml or edgecore.yaml); nothing removed. Use --force to "
                        "remove keadm's files from it anyway\n",
                dir);
        return 1;
    }
    int removed = 0, failed = 0;
    const char *const *lists[] = {CLOUD_FILES, EDGE_FILES};
    for (int l = 0; l < 2; l++) {
        for (int i = 0; lists[l][i]; i++) {
            int n = remove_named(dir, lists[l][i]);
            if (n < 0)
                failed = 1;
            else
                removed += n;
        }
    }
    if (removed == 0 && !failed)
        printf("[reset] no keadm files were found in %s\n", dir);
    if (rmdir(dir) == 0)
        printf("[reset] removed %s\n", dir);
    else if (errno == ENOTEMPTY || errno == EEXIST)
        printf("[reset] kept %s: it holds files keadm did not create\n", dir);
    else
        fprintf(stderr, "warning: cannot remove %s: %s\n", dir, strerror(errno));
    return failed;
}

/* ---- certs ---- */

/* user_name_ok: 1..64 of [A-Za-z0-9:._@-], not starting with '.' or '-':
 * a CN that is also a safe file name. */
static int user_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KEADM_USER_NAME_MAX || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr(":._@-", s[i])))
            return 0;
    return 1;
}

static int cmd_certs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"group", required_argument, NULL, 'g'},
        {"days", required_argument, NULL, 'n'},
        {"server", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *server = KEADM_DEFAULT_SERVER;
    const char *groups[KE_PKI_ORGS_MAX + 1];
    size_t ngroups = 0;
    long days = KEADM_LEAF_DAYS;
    char *end;
    int c, rc;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'g':
            if (ngroups == KE_PKI_ORGS_MAX)
                return usage_error("certs", "--group: at most %s groups", "16");
            if (!user_name_ok(optarg))
                return usage_error("certs", "--group \"%s\": 1-64 of A-Z a-z 0-9 : . _ @ -",
                                   optarg);
            groups[ngroups++] = optarg;
            break;
        case 'n':
            errno = 0;
            days = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || days < 1 || days > KEADM_CA_DAYS_MAX)
                return usage_error("certs", "--days must be 1..36500, not \"%s\"", optarg);
            break;
        case 's':
            if (!hostport_ok(optarg))
                return usage_error("certs", "--server: \"%s\" is not HOST:PORT", optarg);
            server = optarg;
            break;
        case 'h': fputs(USAGE_CERTS, stdout); return 0;
        default: return flag_error("certs", c, argv);
        }
    }
    groups[ngroups] = NULL;
    if (optind >= argc || strcmp(argv[optind], "user") != 0)
        return usage_error("certs", "%s", "expected \"user NAME\"");
    if (optind + 1 >= argc)
        return usage_error("certs", "%s", "user: NAME is required");
    const char *name = argv[optind + 1];
    if (optind + 2 < argc)
        return usage_error("certs", "unexpected argument \"%s\"", argv[optind + 2]);
    if (!user_name_ok(name))
        return usage_error("certs", "user \"%s\": NAME must be 1-64 of A-Z a-z 0-9 : . _ @ -",
                           name);
    if ((rc = dir_check("certs", dir)) != 0)
        return rc;
    char crt[KEADM_USER_NAME_MAX + 16], key[KEADM_USER_NAME_MAX + 16],
        kcfg[KEADM_USER_NAME_MAX + 16];
    snprintf(crt, sizeof(crt), "%s.crt", name);
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(kcfg, sizeof(kcfg), "%s.kubeconfig", name);
    if (file_exists(dir, crt) || file_exists(dir, key)) {
        fprintf(stderr, "error: %s/%s already exists; remove it first to issue a new one\n", dir,
                crt);
        return 1;
    }
    char path[KEADM_PATH_MAX];
    char *ca = NULL, *ca_key = NULL, *cert = NULL, *cert_key = NULL;
    size_t len;
    int status = 1;
    snprintf(path, sizeof(path), "%s/ca.crt", dir);
    if ((rc = ke_pki_read_file(path, &ca, &len)) == 0) {
        snprintf(path, sizeof(path), "%s/ca.key", dir);
        rc = ke_pki_read_file(path, &ca_key, &len);
    }
    if (rc != 0) {
        fprintf(stderr, "error: cannot read %s: %s (run keadm init --dir %s first)\n", path,
                ke_strerror(rc), dir);
        goto out;
    }
    if ((rc = ke_pki_user_cert_create(ca, ca_key, name, groups, (int64_t)days * 86400, &cert,
                                      &cert_key)) != 0) {
        fprintf(stderr, "error: cannot issue the certificate: %s\n", ke_strerror(rc));
        goto out;
    }
    written w;
    memset(&w, 0, sizeof(w));
    if (dir_prepare(dir, w.dir, &w.made_dir) != 0)
        goto out;
    kubeconfig_render kr = {w.dir, name, server, NULL, NULL, NULL};
    if (written_put(&w, key, cert_key, strlen(cert_key), 0600) ||
        written_put(&w, crt, cert, strlen(cert), 0600) ||
        config_write(&w, kcfg, render_kubeconfig, &kr)) {
        written_undo(&w);
        fprintf(stderr, "keadm certs wrote nothing.\n");
        goto out;
    }
    int64_t until = 0;
    char t[32];
    if (ke_pki_cert_info(cert, NULL, 0, NULL, &until) != 0)
        until = 0;
    printf("[certs] %s/%s, %s  user \"%s\", groups:", w.dir, crt, key, name);
    for (size_t i = 0; i < ngroups; i++)
        printf("%s %s", i ? "," : "", groups[i]);
    printf("%s; valid until %s\n", ngroups ? "" : " none", fmt_utc(until, t, sizeof(t)));
    printf("[certs] %s/%s  for kectl --kubeconfig (server %s)\n", w.dir, kcfg, server);
    printf("\nGrant it something, e.g. (as an admin):\n"
           "  kectl apply -f rolebinding.yaml   # see docs/security.md\n");
    status = 0;
out:
    free(ca);
    free(ca_key);
    free(cert);
    free(cert_key);
    return status;
}

/* ---- main ---- */

typedef struct verb {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} verb;

static const verb VERBS[] = {
    {"init", cmd_init, USAGE_INIT},
    {"gettoken", cmd_gettoken, USAGE_GETTOKEN},
    {"join", cmd_join, USAGE_JOIN},
    {"reset", cmd_reset, USAGE_RESET},
    {"certs", cmd_certs, USAGE_CERTS},
};

static const verb *verb_find(const char *name)
{
    for (size_t i = 0; i < sizeof(VERBS) / sizeof(VERBS[0]); i++)
        if (strcmp(VERBS[i].name, name) == 0)
            return &VERBS[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(USAGE_MAIN, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        fputs(USAGE_MAIN, stdout);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        const verb *v = argc > 2 ? verb_find(argv[2]) : NULL;
        fputs(v ? v->usage : USAGE_MAIN, stdout);
        return 0;
    }
    const verb *v = verb_find(cmd);
    if (!v) {
        fprintf(stderr, "error: unknown command \"%s\" for \"keadm\"\n"
                        "Run 'keadm --help' for usage.\n",
                cmd);
        return 2;
    }
    ke_log_set_level(KE_LOG_ERROR);
    opterr = 0; /* flag_error prints our own messages */
    optind = 1;
    return v->run(argc - 1, argv + 1);
}
