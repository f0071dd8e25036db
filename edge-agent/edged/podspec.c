/*
 * podspec.c — see podspec.h.
 */
#include "podspec.h"

#include "ke_err.h"

#include "ke_k8s.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* str_at: the string at a dotted path of obj, or "" */
static const char *str_at(const json_t *obj, const char *path)
{
    const char *s = ke_k8s_str(obj, path);
    return s ? s : "";
}

/* ---- arena ---- */

typedef struct block {
    struct block *next;
    max_align_t data[];
} block;

struct podspec_arena {
    block *head;
};

podspec_arena *podspec_arena_new(void) { return calloc(1, sizeof(podspec_arena)); }

void podspec_arena_free(podspec_arena *a)
{
    if (!a)
        return;
    for (block *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(a);
}

static void *ar_alloc(podspec_arena *a, size_t n)
{
    block *b = calloc(1, sizeof(block) + n);
    if (!b)
        return NULL;
    b->next = a->head;
    a->head = b;
    return b->data;
}

static char *ar_str(podspec_arena *a, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *d = ar_alloc(a, n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

/* a string→string map field of protoc-c: an array of entry pointers */
typedef struct kv_list {
    Runtime__V1__PodSandboxConfig__LabelsEntry **e; /* every map entry has this layout */
    size_t n, cap;
} kv_list;

static int kv_add(podspec_arena *a, kv_list *l, const ProtobufCMessageDescriptor *d, const char *k,
                  const char *v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        void **ne = ar_alloc(a, cap * sizeof(void *));
        if (!ne)
            return -1;
        if (l->n)
            memcpy(ne, l->e, l->n * sizeof(void *));
        l->e = (Runtime__V1__PodSandboxConfig__LabelsEntry **)ne;
        l->cap = cap;
    }
    Runtime__V1__PodSandboxConfig__LabelsEntry *e = ar_alloc(a, d->sizeof_message);
    if (!e)
        return -1;
    protobuf_c_message_init(d, e);
    e->key = ar_str(a, k);
    e->value = ar_str(a, v ? v : "");
    l->e[l->n++] = e;
    return e->key && e->value ? 0 : -1;
}

/* why_set: the reason, one line (ke_err_why; it returns the code it is
 * given, 0 here, so nothing is dropped). */
#define why_set(why, cap, ...) (void)ke_err_why(0, why, cap, __VA_ARGS__)

/* ---- quantities ---- */

int podspec_quantity(const char *s, int64_t *milli)
{
    if (!s || !*s)
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return -1;
    static const struct {
        const char *suf;
        double mul;
    } sufs[] = {{"", 1},          {"m", 1e-3},        {"k", 1e3},          {"M", 1e6},
                {"G", 1e9},       {"T", 1e12},        {"P", 1e15},         {"E", 1e18},
                {"Ki", 1024.0},   {"Mi", 1048576.0},  {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
                {"Pi", 1125899906842624.0}, {"Ei", 1152921504606846976.0}};
    for (size_t i = 0; i < sizeof(sufs) / sizeof(sufs[0]); i++)
        if (strcmp(end, sufs[i].suf) == 0) {
            double m = v * sufs[i].mul * 1000.0;
            if (m > 9.2e18)
                return -1;
            *milli = (int64_t)ceil(m - 1e-9);
            return 0;
        }
    return -1;
}

/* ---- helpers over the pod ---- */

static int host_network(const json_t *pod)
{
    return json_is_true(json_object_get(json_object_get(pod, "spec"), "hostNetwork"));
}

static const json_t *volume_named(const json_t *pod, const char *name)
{
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(json_object_get(pod, "spec"), "volumes"), i, v) {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && strcmp(n, name) == 0)
            return v;
    }
    return NULL;
}

void podspec_log_path(char *buf, size_t cap, const char *container, uint32_t attempt)
{
    snprintf(buf, cap, "%s/%u.log", container, attempt);
}

/* secret values are base64 in data; configMap values are plain */
static char *b64_decode(const char *in, size_t *outlen)
{
    size_t n = strlen(in);
    if (n % 4 != 0)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    int got = n ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)n) : 0;
    if (got < 0) {
        free(out);
        return NULL;
    }
    if (n >= 1 && in[n - 1] == '=')
        got--;
    if (n >= 2 && in[n - 2] == '=')
        got--;
    out[got] = '\0';
    *outlen = (size_t)got;
    return (char *)out;
}

/* value_of: the value of key in a ConfigMap (data, then binaryData) or a
 * Secret (data, base64), malloc'd; NULL when absent (*bad set when present
 * but undecodable). */
static char *value_of(const json_t *obj, const char *kind, const char *key, size_t *len, int *bad)
{
    *bad = 0;
    const char *v = json_string_value(json_object_get(json_object_get(obj, "data"), key));
    if (strcmp(kind, "ConfigMap") == 0) {
        if (v) {
            *len = strlen(v);
            return strdup(v);
        }
        v = json_string_value(json_object_get(json_object_get(obj, "binaryData"), key));
    }
    if (!v)
        return NULL;
    char *d = b64_decode(v, len);
    if (!d)
        *bad = 1;
    return d;
}

/* ---- env ---- */

typedef struct env_list {
    Runtime__V1__KeyValue **e;
    size_t n, cap;
} env_list;

static int env_set(podspec_arena *a, env_list *l, const char *k, const char *v)
{
    for (size_t i = 0; i < l->n; i++) /* later definitions win, as in Kubernetes */
        if (strcmp(l->e[i]->key, k) == 0) {
            l->e[i]->value = ar_str(a, v);
            return l->e[i]->value ? 0 : -1;
        }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        Runtime__V1__KeyValue **ne = ar_alloc(a, cap * sizeof(*ne));
        if (!ne)
            return -1;
        if (l->n)
            memcpy(ne, l->e, l->n * sizeof(*ne));
        l->e = ne;
        l->cap = cap;
    }
    Runtime__V1__KeyValue *kv = ar_alloc(a, sizeof(*kv));
    if (!kv)
        return -1;
    runtime__v1__key_value__init(kv);
    kv->key = ar_str(a, k);
    kv->value = ar_str(a, v);
    l->e[l->n++] = kv;
    return kv->key && kv->value ? 0 : -1;
}

static const char *field_ref(const json_t *pod, const podspec_ctx *c, const char *path)
{
    if (strcmp(path, "metadata.name") == 0 || strcmp(path, "metadata.namespace") == 0 ||
        strcmp(path, "metadata.uid") == 0 || strcmp(path, "spec.nodeName") == 0 ||
        strcmp(path, "spec.serviceAccountName") == 0)
        return str_at(pod, path);
    if (strcmp(path, "status.podIP") == 0)
        return c->pod_ip ? c->pod_ip : "";
    if (strcmp(path, "status.hostIP") == 0)
        return "";
    return NULL;
}

static int env_build(podspec_arena *a, const json_t *pod, const json_t *ctr, const podspec_ctx *c,
                     env_list *l, char *why, size_t cap)
{
    const char *ns = str_at(pod, "metadata.namespace");
    size_t i;
    const json_t *ef;
    json_array_foreach(json_object_get(ctr, "envFrom"), i, ef) {
        const json_t *ref = json_object_get(ef, "configMapRef");
        const char *kind = "ConfigMap";
        if (!ref) {
            ref = json_object_get(ef, "secretRef");
            kind = "Secret";
        }
        const char *name = json_string_value(json_object_get(ref, "name"));
        const char *prefix = json_string_value(json_object_get(ef, "prefix"));
        if (!name) {
            why_set(why, cap, "CreateContainerConfigError: envFrom[%zu] names no configMapRef or "
                              "secretRef", i);
            return -1;
        }
        json_t *obj = c->lookup(kind, ns, name, c->lookup_arg);
        if (!obj) {
            if (json_is_true(json_object_get(ref, "optional")))
                continue;
            why_set(why, cap, "CreateContainerConfigError: %s \"%s\" not found",
                    strcmp(kind, "Secret") == 0 ? "secret" : "configmap", name);
            return -1;
        }
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(obj, "data"), k, v) {
            size_t len;
            int bad;
            char *val = value_of(obj, kind, k, &len, &bad);
            char full[512];
            snprintf(full, sizeof(full), "%s%s", prefix ? prefix : "", k);
            int rc = val ? env_set(a, l, full, val) : 0;
            free(val);
            if (rc != 0 || bad) {
                why_set(why, cap, "CreateContainerConfigError: %s \"%s\" key \"%s\" cannot be used",
                        kind, name, k);
                json_decref(obj);
                return -1;
            }
        }
        json_decref(obj);
    }
    const json_t *e;
    json_array_foreach(json_object_get(ctr, "env"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name || !*name) {
            why_set(why, cap, "CreateContainerConfigError: env[%zu].name is required", i);
            return -1;
        }
        const json_t *from = json_object_get(e, "valueFrom");
        if (!from) {
            const char *v = json_string_value(json_object_get(e, "value"));
            if (env_set(a, l, name, v ? v : "") != 0)
                return -1;
            continue;
        }
        const json_t *fr = json_object_get(from, "fieldRef");
        if (fr) {
            const char *path = json_string_value(json_object_get(fr, "fieldPath"));
            const char *v = path ? field_ref(pod, c, path) : NULL;
            if (!v) {
                why_set(why, cap, "CreateContainerConfigError: env %s: unsupported fieldPath \"%s\"",
                        name, path ? path : "");
                return -1;
            }
            if (env_set(a, l, name, v) != 0)
                return -1;
            continue;
        }
        const json_t *ref = json_object_get(from, "configMapKeyRef");
        const char *kind = "ConfigMap";
        if (!ref) {
            ref = json_object_get(from, "secretKeyRef");
            kind = "Secret";
        }
        const char *rn = json_string_value(json_object_get(ref, "name"));
        const char *rk = json_string_value(json_object_get(ref, "key"));
        int optional = json_is_true(json_object_get(ref, "optional"));
        if (!rn || !rk) {
            why_set(why, cap, "CreateContainerConfigError: env %s: valueFrom needs a "
                              "configMapKeyRef, secretKeyRef or fieldRef with name and key", name);
            return -1;
        }
        json_t *obj = c->lookup(kind, ns, rn, c->lookup_arg);
        size_t len = 0;
        int bad = 0;
        char *val = obj ? value_of(obj, kind, rk, &len, &bad) : NULL;
        json_decref(obj);
        if (!val) {
            if (optional && !bad)
                continue;
            if (!obj)
                why_set(why, cap, "CreateContainerConfigError: %s \"%s\" not found",
                        strcmp(kind, "Secret") == 0 ? "secret" : "configmap", rn);
            else
                why_set(why, cap, "CreateContainerConfigError: couldn't find key %s in %s %s/%s", rk,
                        kind, ns, rn);
            return -1;
        }
        int rc = env_set(a, l, name, val);
        free(val);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- sandbox ---- */

Runtime__V1__PodSandboxConfig *podspec_sandbox(podspec_arena *a, const json_t *pod,
                                              const podspec_ctx *c, uint32_t attempt,
                                              char *why, size_t cap)
{
    const char *name = str_at(pod, "metadata.name");
    const char *ns = str_at(pod, "metadata.namespace");
    const char *uid = str_at(pod, "metadata.uid");
    if (!*name || !*uid) {
        why_set(why, cap, "the pod has no metadata.name or metadata.uid");
        return NULL;
    }
    Runtime__V1__PodSandboxConfig *sc = ar_alloc(a, sizeof(*sc));
    Runtime__V1__PodSandboxMetadata *md = ar_alloc(a, sizeof(*md));
    Runtime__V1__LinuxPodSandboxConfig *lx = ar_alloc(a, sizeof(*lx));
    Runtime__V1__LinuxSandboxSecurityContext *sec = ar_alloc(a, sizeof(*sec));
    Runtime__V1__NamespaceOption *nso = ar_alloc(a, sizeof(*nso));
    if (!sc || !md || !lx || !sec || !nso)
        return NULL;
    runtime__v1__pod_sandbox_config__init(sc);
    runtime__v1__pod_sandbox_metadata__init(md);
    runtime__v1__linux_pod_sandbox_config__init(lx);
    runtime__v1__linux_sandbox_security_context__init(sec);
    runtime__v1__namespace_option__init(nso);
    md->name = ar_str(a, name);
    md->namespace_ = ar_str(a, ns);
    md->uid = ar_str(a, uid);
    md->attempt = attempt;
    sc->metadata = md;
    sc->log_directory = ar_str(a, c->log_dir);
    int hostnet = host_network(pod);
    nso->network = hostnet ? RUNTIME__V1__NAMESPACE_MODE__NODE : RUNTIME__V1__NAMESPACE_MODE__POD;
    nso->pid = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
    nso->ipc = RUNTIME__V1__NAMESPACE_MODE__POD;
    sec->namespace_options = nso;
    lx->security_context = sec;
    sc->linux = lx;
    if (!hostnet) { /* a host-network pod keeps the host's name */
        const char *hn = str_at(pod, "spec.hostname");
        sc->hostname = ar_str(a, *hn ? hn : name);
    }
    kv_list labels = {0};
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(json_object_get(pod, "metadata"), "labels"), k, v)
        if (json_is_string(v) &&
            kv_add(a, &labels, &runtime__v1__pod_sandbox_config__labels_entry__descriptor, k,
                   json_string_value(v)) != 0)
            return NULL;
    if (kv_add(a, &labels, &runtime__v1__pod_sandbox_config__labels_entry__descriptor,
               PODSPEC_LABEL_UID, uid) ||
        kv_add(a, &labels, &runtime__v1__pod_sandbox_config__labels_entry__descriptor,
               PODSPEC_LABEL_NAME, name) ||
        kv_add(a, &labels, &runtime__v1__pod_sandbox_config__labels_entry__descriptor,
               PODSPEC_LABEL_NAMESPACE, ns) ||
        kv_add(a, &labels, &runtime__v1__pod_sandbox_config__labels_entry__descriptor,
               PODSPEC_LABEL_NODE, c->node))
        return NULL;
    sc->labels = labels.e;
    sc->n_labels = labels.n;
    /* ports: hostPort mappings for pods in their own network */
    size_t i, j;
    const json_t *ctr, *p;
    size_t np = 0;
    json_array_foreach(json_object_get(json_object_get(pod, "spec"), "containers"), i, ctr)
        np += json_array_size(json_object_get(ctr, "ports"));
    if (np && !hostnet) {
        sc->port_mappings = ar_alloc(a, np * sizeof(*sc->port_mappings));
        if (!sc->port_mappings)
            return NULL;
        json_array_foreach(json_object_get(json_object_get(pod, "spec"), "containers"), i, ctr)
            json_array_foreach(json_object_get(ctr, "ports"), j, p) {
                json_int_t hp = json_integer_value(json_object_get(p, "hostPort"));
                if (hp <= 0)
                    continue;
                Runtime__V1__PortMapping *pm = ar_alloc(a, sizeof(*pm));
                if (!pm)
                    return NULL;
                runtime__v1__port_mapping__init(pm);
                pm->container_port = (int32_t)json_integer_value(json_object_get(p, "containerPort"));
                pm->host_port = (int32_t)hp;
                const char *proto = json_string_value(json_object_get(p, "protocol"));
                pm->protocol = proto && strcmp(proto, "UDP") == 0 ? RUNTIME__V1__PROTOCOL__UDP
                                                                  : RUNTIME__V1__PROTOCOL__TCP;
                sc->port_mappings[sc->n_port_mappings++] = pm;
            }
    }
    return sc;
}

/* ---- volumes ---- */

static int mkdirs(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -1;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* write_atomic writes data to path through a temp file and rename, so a
 * container reading the file sees the old or the new content. */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.ke-tmp", path) >= (int)sizeof(tmp))
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* a projected path must stay inside the volume */
static int path_ok(const char *p)
{
    if (!p || !*p || p[0] == '/' || strlen(p) > 253)
        return 0;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s += n + (e ? 1 : 0);
    }
    return 1;
}

static int project(const json_t *pod, const json_t *src, const char *kind, const char *dir,
                   const podspec_ctx *c, char *why, size_t cap)
{
    const char *ns = str_at(pod, "metadata.namespace");
    const char *name = json_string_value(json_object_get(src, strcmp(kind, "Secret") == 0
                                                                  ? "secretName"
                                                                  : "name"));
    int optional = json_is_true(json_object_get(src, "optional"));
    json_int_t dm = json_integer_value(json_object_get(src, "defaultMode"));
    mode_t defmode = json_object_get(src, "defaultMode") ? (mode_t)(dm & 0777) : 0644;
    const json_t *fsgroup =
        json_object_get(json_object_get(json_object_get(pod, "spec"), "securityContext"), "fsGroup");
    if (!name) {
        why_set(why, cap, "CreateContainerConfigError: a %s volume names no %s", kind,
                strcmp(kind, "Secret") == 0 ? "secretName" : "name");
        return -1;
    }
    if (mkdirs(dir, 0755) != 0) {
        why_set(why, cap, "CreateContainerConfigError: cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    json_t *obj = c->lookup(kind, ns, name, c->lookup_arg);
    if (!obj && !optional) {
        why_set(why, cap, "CreateContainerConfigError: %s \"%s\" not found",
                strcmp(kind, "Secret") == 0 ? "secret" : "configmap", name);
        return -1;
    }
    /* wanted: path → (key, mode) */
    json_t *want = json_object();
    const json_t *items = json_object_get(src, "items");
    size_t i;
    const json_t *it;
    if (obj && json_array_size(items)) {
        json_array_foreach(items, i, it) {
            const char *k = json_string_value(json_object_get(it, "key"));
            const char *p = json_string_value(json_object_get(it, "path"));
            if (!k || !path_ok(p)) {
                why_set(why, cap, "CreateContainerConfigError: items[%zu] needs a key and a "
                                  "relative path without \"..\"", i);
                goto fail;
            }
            json_int_t m = json_object_get(it, "mode") ? json_integer_value(json_object_get(it, "mode")) & 0777
                                                      : (json_int_t)defmode;
            json_object_set_new(want, p, json_pack("{s:s,s:I}", "key", k, "mode", m));
        }
    } else if (obj) {
        const char *k;
        json_t *v;
        static const char *const fields[] = {"data", "binaryData"};
        for (size_t f = 0; f < 2; f++)
            json_object_foreach(json_object_get(obj, fields[f]), k, v)
                if (path_ok(k))
                    json_object_set_new(want, k, json_pack("{s:s,s:I}", "key", k, "mode",
                                                           (json_int_t)defmode));
    }
    const char *p;
    json_t *w;
    json_object_foreach(want, p, w) {
        const char *k = json_string_value(json_object_get(w, "key"));
        size_t len = 0;
        int bad = 0;
        char *val = value_of(obj, kind, k, &len, &bad);
        if (!val) {
            why_set(why, cap, "CreateContainerConfigError: couldn't find key %s in %s %s/%s", k,
                    kind, ns, name);
            goto fail;
        }
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, p);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        int rc = mkdirs(path, 0755);
        *slash = '/';
        if (rc == 0)
            rc = write_atomic(path, val, len, (mode_t)json_integer_value(json_object_get(w, "mode")));
        /* securityContext.fsGroup: the file's group, as the kubelet makes
         * it, so a non-root container of that group reads its keys */
        if (rc == 0 && json_is_integer(fsgroup))
            rc = chown(path, (uid_t)-1, (gid_t)json_integer_value(fsgroup));
        free(val);
        if (rc != 0) {
            why_set(why, cap, "CreateContainerConfigError: cannot write %s: %s", path,
                    strerror(errno));
            goto fail;
        }
    }
    /* files of keys no longer wanted (top level only) */
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.' && de->d_type == DT_REG && !json_object_get(want, de->d_name)) {
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                unlink(path);
            }
        closedir(d);
    }
    json_decref(want);
    json_decref(obj);
    return 0;
fail:
    json_decref(want);
    json_decref(obj);
    return -1;
}

int podspec_volumes(const json_t *pod, const podspec_ctx *c, char *why, size_t cap)
{
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(json_object_get(pod, "spec"), "volumes"), i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (!name || !path_ok(name) || strchr(name, '/')) {
            why_set(why, cap, "CreateContainerConfigError: spec.volumes[%zu].name is invalid", i);
            return -1;
        }
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/volumes/%s", c->pod_dir, name);
        const json_t *src;
        if ((src = json_object_get(v, "configMap"))) {
            if (project(pod, src, "ConfigMap", dir, c, why, cap) != 0)
                return -1;
        } else if ((src = json_object_get(v, "secret"))) {
            if (project(pod, src, "Secret", dir, c, why, cap) != 0)
                return -1;
        } else if (json_object_get(v, "emptyDir")) {
            if (mkdirs(dir, 0777) != 0 || chmod(dir, 0777) != 0) {
                why_set(why, cap, "CreateContainerConfigError: cannot create %s: %s", dir,
                        strerror(errno));
                return -1;
            }
        } else if ((src = json_object_get(v, "hostPath"))) {
            const char *path = json_string_value(json_object_get(src, "path"));
            const char *type = json_string_value(json_object_get(src, "type"));
            struct stat st;
            if (!path || path[0] != '/') {
                why_set(why, cap, "CreateContainerConfigError: volume %s: hostPath.path must be "
                                  "absolute", name);
                return -1;
            }
            if (type && strcmp(type, "DirectoryOrCreate") == 0 && mkdirs(path, 0755) != 0) {
                why_set(why, cap, "CreateContainerConfigError: volume %s: cannot create %s: %s",
                        name, path, strerror(errno));
                return -1;
            }
            if (type && *type && strcmp(type, "DirectoryOrCreate") != 0 && stat(path, &st) != 0) {
                why_set(why, cap, "CreateContainerConfigError: volume %s: hostPath %s: %s", name,
                        path, strerror(errno));
                return -1;
            }
        } else {
            why_set(why, cap, "CreateContainerConfigError: volume %s: only configMap, secret, "
                              "emptyDir and hostPath volumes are supported", name);
            return -1;
        }
    }
    return 0;
}

int podspec_volume_refers(const json_t *pod, const char *kind, const char *name)
{
    size_t i;
    const json_t *v;
    int secret = strcmp(kind, "Secret") == 0;
    json_array_foreach(json_object_get(json_object_get(pod, "spec"), "volumes"), i, v) {
        const char *n = secret ? json_string_value(json_object_get(json_object_get(v, "secret"), "secretName"))
                               : json_string_value(json_object_get(json_object_get(v, "configMap"), "name"));
        if (n && strcmp(n, name) == 0)
            return 1;
    }
    return 0;
}

/* ---- container ---- */

Runtime__V1__ContainerConfig *podspec_container(podspec_arena *a, const json_t *pod,
                                               const json_t *ctr, const podspec_ctx *c,
                                               uint32_t attempt, char *why, size_t cap)
{
    const char *cname = json_string_value(json_object_get(ctr, "name"));
    const char *image = json_string_value(json_object_get(ctr, "image"));
    if (!cname || !*cname || !image || !*image) {
        why_set(why, cap, "CreateContainerConfigError: a container needs a name and an image");
        return NULL;
    }
    Runtime__V1__ContainerConfig *cc = ar_alloc(a, sizeof(*cc));
    Runtime__V1__ContainerMetadata *md = ar_alloc(a, sizeof(*md));
    Runtime__V1__ImageSpec *is = ar_alloc(a, sizeof(*is));
    Runtime__V1__LinuxContainerConfig *lx = ar_alloc(a, sizeof(*lx));
    Runtime__V1__LinuxContainerResources *res = ar_alloc(a, sizeof(*res));
    Runtime__V1__LinuxContainerSecurityContext *sec = ar_alloc(a, sizeof(*sec));
    Runtime__V1__NamespaceOption *nso = ar_alloc(a, sizeof(*nso));
    if (!cc || !md || !is || !lx || !res || !sec || !nso)
        return NULL;
    runtime__v1__container_config__init(cc);
    runtime__v1__container_metadata__init(md);
    runtime__v1__image_spec__init(is);
    runtime__v1__linux_container_config__init(lx);
    runtime__v1__linux_container_resources__init(res);
    runtime__v1__linux_container_security_context__init(sec);
    runtime__v1__namespace_option__init(nso);
    md->name = ar_str(a, cname);
    md->attempt = attempt;
    cc->metadata = md;
    is->image = ar_str(a, image);
    cc->image = is;
    size_t i;
    const json_t *s;
    const json_t *cmd = json_object_get(ctr, "command"), *args = json_object_get(ctr, "args");
    if (json_array_size(cmd)) {
        cc->command = ar_alloc(a, json_array_size(cmd) * sizeof(char *));
        json_array_foreach(cmd, i, s) cc->command[cc->n_command++] = ar_str(a, json_string_value(s) ? json_string_value(s) : "");
    }
    if (json_array_size(args)) {
        cc->args = ar_alloc(a, json_array_size(args) * sizeof(char *));
        json_array_foreach(args, i, s) cc->args[cc->n_args++] = ar_str(a, json_string_value(s) ? json_string_value(s) : "");
    }
    const char *wd = json_string_value(json_object_get(ctr, "workingDir"));
    if (wd)
        cc->working_dir = ar_str(a, wd);
    env_list env = {0};
    if (env_build(a, pod, ctr, c, &env, why, cap) != 0)
        return NULL;
    cc->envs = env.e;
    cc->n_envs = env.n;
    /* mounts */
    const json_t *vms = json_object_get(ctr, "volumeMounts");
    if (json_array_size(vms)) {
        cc->mounts = ar_alloc(a, json_array_size(vms) * sizeof(*cc->mounts));
        if (!cc->mounts)
            return NULL;
    }
    const json_t *vm;
    json_array_foreach(vms, i, vm) {
        const char *vname = json_string_value(json_object_get(vm, "name"));
        const char *mp = json_string_value(json_object_get(vm, "mountPath"));
        const char *sub = json_string_value(json_object_get(vm, "subPath"));
        const json_t *vol = vname ? volume_named(pod, vname) : NULL;
        if (!vol) {
            why_set(why, cap, "CreateContainerConfigError: volumeMounts[%zu]: no volume named "
                              "\"%s\" in spec.volumes", i, vname ? vname : "");
            return NULL;
        }
        if (!mp || mp[0] != '/') {
            why_set(why, cap, "CreateContainerConfigError: volumeMounts[%zu].mountPath must be an "
                              "absolute path", i);
            return NULL;
        }
        if (sub && *sub && !path_ok(sub)) {
            why_set(why, cap, "CreateContainerConfigError: volumeMounts[%zu].subPath must be a "
                              "relative path without \"..\"", i);
            return NULL;
        }
        const json_t *hp = json_object_get(vol, "hostPath");
        char host[PATH_MAX];
        if (hp)
            snprintf(host, sizeof(host), "%s", str_at(hp, "path"));
        else
            snprintf(host, sizeof(host), "%s/volumes/%s", c->pod_dir, vname);
        if (sub && *sub) {
            size_t n = strlen(host);
            snprintf(host + n, sizeof(host) - n, "/%s", sub);
        }
        Runtime__V1__Mount *m = ar_alloc(a, sizeof(*m));
        if (!m)
            return NULL;
        runtime__v1__mount__init(m);
        m->container_path = ar_str(a, mp);
        m->host_path = ar_str(a, host);
        m->readonly = json_is_true(json_object_get(vm, "readOnly")) ||
                      json_object_get(vol, "configMap") || json_object_get(vol, "secret");
        cc->mounts[cc->n_mounts++] = m;
    }
    kv_list labels = {0};
    const ProtobufCMessageDescriptor *ld = &runtime__v1__container_config__labels_entry__descriptor;
    if (kv_add(a, &labels, ld, PODSPEC_LABEL_UID, str_at(pod, "metadata.uid")) ||
        kv_add(a, &labels, ld, PODSPEC_LABEL_NAME, str_at(pod, "metadata.name")) ||
        kv_add(a, &labels, ld, PODSPEC_LABEL_NAMESPACE, str_at(pod, "metadata.namespace")) ||
        kv_add(a, &labels, ld, PODSPEC_LABEL_CONTAINER, cname) ||
        kv_add(a, &labels, ld, PODSPEC_LABEL_NODE, c->node))
        return NULL;
    cc->labels = (Runtime__V1__ContainerConfig__LabelsEntry **)labels.e;
    cc->n_labels = labels.n;
    char lp[512];
    podspec_log_path(lp, sizeof(lp), cname, attempt);
    cc->log_path = ar_str(a, lp);
    cc->stdin = json_is_true(json_object_get(ctr, "stdin"));
    cc->tty = json_is_true(json_object_get(ctr, "tty"));
    /* resources: limits become the cgroup's, requests the CPU weight */
    const json_t *rs = json_object_get(ctr, "resources");
    const char *cpu_lim = str_at(json_object_get(rs, "limits"), "cpu");
    const char *mem_lim = str_at(json_object_get(rs, "limits"), "memory");
    const char *cpu_req = str_at(json_object_get(rs, "requests"), "cpu");
    int64_t q;
    if (*cpu_lim) {
        if (podspec_quantity(cpu_lim, &q) != 0) {
            why_set(why, cap, "CreateContainerConfigError: resources.limits.cpu \"%s\" is not a "
                              "quantity", cpu_lim);
            return NULL;
        }
        res->cpu_period = 100000;
        res->cpu_quota = q * 100000 / 1000;
        if (res->cpu_quota < 1000)
            res->cpu_quota = 1000;
    }
    if (*mem_lim) {
        if (podspec_quantity(mem_lim, &q) != 0 || q / 1000 < 4096) {
            why_set(why, cap, "CreateContainerConfigError: resources.limits.memory \"%s\" is not a "
                              "quantity of at least 4Ki", mem_lim);
            return NULL;
        }
        res->memory_limit_in_bytes = q / 1000;
    }
    const char *req = *cpu_req ? cpu_req : cpu_lim;
    if (*req && podspec_quantity(req, &q) == 0) {
        res->cpu_shares = q * 1024 / 1000;
        if (res->cpu_shares < 2)
            res->cpu_shares = 2;
    } else {
        res->cpu_shares = 2; /* best effort, as kubelet */
    }
    lx->resources = res;
    int hostnet = host_network(pod);
    nso->network = hostnet ? RUNTIME__V1__NAMESPACE_MODE__NODE : RUNTIME__V1__NAMESPACE_MODE__POD;
    nso->pid = RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
    nso->ipc = RUNTIME__V1__NAMESPACE_MODE__POD;
    sec->namespace_options = nso;
    const json_t *sc = json_object_get(ctr, "securityContext");
    const json_t *psc = json_object_get(json_object_get(pod, "spec"), "securityContext");
    const json_t *uid = json_object_get(sc, "runAsUser");
    if (!uid)
        uid = json_object_get(psc, "runAsUser");
    if (json_is_integer(uid)) {
        Runtime__V1__Int64Value *u = ar_alloc(a, sizeof(*u));
        runtime__v1__int64_value__init(u);
        u->value = json_integer_value(uid);
        sec->run_as_user = u;
    }
    const json_t *gid = json_object_get(sc, "runAsGroup");
    if (!gid)
        gid = json_object_get(psc, "runAsGroup");
    if (json_is_integer(gid)) {
        Runtime__V1__Int64Value *g = ar_alloc(a, sizeof(*g));
        runtime__v1__int64_value__init(g);
        g->value = json_integer_value(gid);
        sec->run_as_group = g;
    }
    /* fsGroup and supplementalGroups: the process's supplementary groups */
    size_t ng = json_array_size(json_object_get(psc, "supplementalGroups")) +
                (json_is_integer(json_object_get(psc, "fsGroup")) ? 1 : 0);
    if (ng && (sec->supplemental_groups = ar_alloc(a, ng * sizeof(int64_t)))) {
        size_t gi;
        const json_t *gv;
        json_array_foreach(json_object_get(psc, "supplementalGroups"), gi, gv)
            if (json_is_integer(gv))
                sec->supplemental_groups[sec->n_supplemental_groups++] = json_integer_value(gv);
        if (json_is_integer(json_object_get(psc, "fsGroup")))
            sec->supplemental_groups[sec->n_supplemental_groups++] =
                json_integer_value(json_object_get(psc, "fsGroup"));
    }
    sec->readonly_rootfs = json_is_true(json_object_get(sc, "readOnlyRootFilesystem"));
    sec->privileged = json_is_true(json_object_get(sc, "privileged"));
    lx->security_context = sec;
    cc->linux = lx;
    return cc;
}

/* ---- removal ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int podspec_remove_tree(const char *dir)
{
    if (nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return -1;
    return 0;
}
