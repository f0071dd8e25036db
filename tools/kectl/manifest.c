/*
 * manifest.c — the objects of `-f FILE|DIR|-` (apply, delete): read every
 * file, convert YAML or JSON, expand kind: List, check, default the
 * namespace. Everything is read and checked before anything is sent, so a
 * syntax error anywhere applies nothing.
 *
 * A file is JSON when it is named *.json, YAML when named *.yaml or *.yml;
 * stdin and other names are JSON when they start with '{' or '['.
 */
#include "kectl.h"

#include "kectl_yaml.h"
#include "ke_err.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* read_all reads a stream to its end, at most KECTL_FILE_MAX bytes,
 * NUL-terminated. */
static int read_all(FILE *f, const char *name, char **out, size_t *outlen)
{
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return KE_ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= KECTL_FILE_MAX) {
                fprintf(stderr, "error: %s: larger than %u bytes\n", name, KECTL_FILE_MAX);
                free(buf);
                return KE_EFULL;
            }
            cap = cap * 2 > KECTL_FILE_MAX ? KECTL_FILE_MAX : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                return KE_ENOMEM;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "error: %s: cannot read: %s\n", name, strerror(errno));
        free(buf);
        return KE_EIO;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

static int looks_like_json(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (strchr(" \t\r\n", buf[i]) && buf[i] != '\0')
            continue;
        return buf[i] == '{' || buf[i] == '[';
    }
    return 0;
}

static int push(kectl_manifest *m, const char *source, json_t *obj)
{
    if (m->n == KECTL_MANIFEST_MAX_OBJS) {
        fprintf(stderr, "error: more than %d objects\n", KECTL_MANIFEST_MAX_OBJS);
        return KE_EFULL;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        kectl_manifest_obj *v = realloc(m->v, cap * sizeof(*v));
        if (!v)
            return KE_ENOMEM;
        m->v = v;
        m->cap = cap;
    }
    char *src = strdup(source);
    if (!src)
        return KE_ENOMEM;
    m->v[m->n++] = (kectl_manifest_obj){src, json_incref(obj), NULL};
    return 0;
}

/* load_file converts one file's documents and appends them to m. */
static int load_file(const char *path, const char *display, kectl_manifest *m)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: cannot open: %s\n", display, strerror(errno));
        return KE_EIO;
    }
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(f, display, &buf, &len);
    if (f != stdin)
        fclose(f);
    if (rc != 0)
        return rc;
    int json = ends_with(path, ".json") ||
               (!ends_with(path, ".yaml") && !ends_with(path, ".yml") && looks_like_json(buf, len));
    char err[KECTL_YAML_ERR_MAX];
    json_t *docs = NULL;
    rc = json ? kectl_json_to_docs(display, buf, len, &docs, err, sizeof(err))
              : kectl_yaml_to_json(display, buf, len, &docs, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", err[0] ? err : ke_strerror(rc));
        return rc;
    }
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc) {
        /* kind: List (kubectl get -o yaml writes one) stands for its items */
        const char *kind = json_string_value(json_object_get(doc, "kind"));
        json_t *items = json_object_get(doc, "items");
        if (kind && ends_with(kind, "List") && json_is_array(items)) {
            size_t j;
            json_t *item;
            json_array_foreach(items, j, item) {
                if (rc == 0)
                    rc = push(m, display, item);
            }
        } else if (rc == 0) {
            rc = push(m, display, doc);
        }
    }
    json_decref(docs);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* load_dir loads the manifests of a folder (not its subfolders), sorted. */
static int load_dir(const char *path, kectl_manifest *m)
{
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "error: %s: cannot open: %s\n", path, strerror(errno));
        return KE_EIO;
    }
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !(ends_with(e->d_name, ".yaml") ||
                                     ends_with(e->d_name, ".yml") || ends_with(e->d_name, ".json")))
            continue;
        if (n == KECTL_DIR_MAX_FILES) {
            fprintf(stderr, "error: %s: more than %d manifest files\n", path, KECTL_DIR_MAX_FILES);
            rc = KE_EFULL;
            break;
        }
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn || !(nn[n] = malloc(strlen(path) + strlen(e->d_name) + 2))) {
            if (nn)
                names = nn;
            rc = KE_ENOMEM;
            break;
        }
        names = nn;
        sprintf(names[n], "%s%s%s", path, ends_with(path, "/") ? "" : "/", e->d_name);
        n++;
    }
    closedir(d);
    if (names)
        qsort(names, n, sizeof(*names), cmp_name);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            rc = load_file(names[i], names[i], m);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* check_object validates one object and defaults its namespace. */
static int check_object(const kectl *k, kectl_manifest_obj *mo)
{
    json_t *o = mo->obj;
    if (!json_is_object(o)) {
        fprintf(stderr, "error: error validating \"%s\": error validating data: a document is "
                        "not an object\n",
                mo->source);
        return KE_EINVAL;
    }
    const char *api = json_string_value(json_object_get(o, "apiVersion"));
    const char *kind = json_string_value(json_object_get(o, "kind"));
    const char *name = kectl_jstr(o, "metadata.name");
    if (!api || !kind) {
        fprintf(stderr, "error: error validating \"%s\": error validating data: %s\n",
                mo->source,
                !api && !kind ? "[apiVersion not set, kind not set]"
                : !api        ? "apiVersion not set"
                              : "kind not set");
        return KE_EINVAL;
    }
    json_t *meta = json_object_get(o, "metadata");
    const char *ns = json_string_value(json_object_get(meta, "namespace"));
    mo->kind = kectl_kind_of(kind);
    if (!mo->kind || !kectl_kind_api_matches(mo->kind, api)) {
        fprintf(stderr,
                "error: resource mapping not found for name: \"%s\" namespace: \"%s\" from "
                "\"%s\": no matches for kind \"%s\" in version \"%s\"\n",
                name ? name : "", ns ? ns : "", mo->source, kind, api);
        return KE_EINVAL;
    }
    if (!name || !name[0]) {
        fprintf(stderr, "error: error validating \"%s\": error validating data: metadata.name "
                        "not set\n",
                mo->source);
        return KE_EINVAL;
    }
    if (strlen(name) > KECTL_NAME_MAX) {
        fprintf(stderr, "error: error validating \"%s\": metadata.name longer than %d\n",
                mo->source, KECTL_NAME_MAX);
        return KE_EINVAL;
    }
    if (!mo->kind->namespaced)
        return 0;
    if (ns && ns[0]) {
        if (k->ns_explicit && strcmp(ns, k->ns) != 0) {
            fprintf(stderr,
                    "error: the namespace from the provided object \"%s\" does not match the "
                    "namespace \"%s\". You must pass '--namespace=%s' to perform this "
                    "operation.\n",
                    ns, k->ns, ns);
            return KE_EINVAL;
        }
        return 0;
    }
    if (json_object_set_new(meta, "namespace", json_string(k->ns)) != 0)
        return KE_ENOMEM;
    return 0;
}

int kectl_manifest_load(const kectl *k, const char *verb, const char *const *paths,
                        size_t n_paths, kectl_manifest *m)
{
    memset(m, 0, sizeof(*m));
    int rc = 0, used_stdin = 0;
    for (size_t i = 0; rc == 0 && i < n_paths; i++) {
        const char *p = paths[i];
        if (strcmp(p, "-") == 0) {
            if (used_stdin++)
                continue;
            rc = load_file("-", "STDIN", m);
            continue;
        }
        struct stat st;
        if (stat(p, &st) != 0) {
            fprintf(stderr, "error: the path \"%s\" does not exist\n", p);
            rc = KE_ENOTFOUND;
        } else if (S_ISDIR(st.st_mode)) {
            rc = load_dir(p, m);
        } else {
            rc = load_file(p, p, m);
        }
    }
    for (size_t i = 0; rc == 0 && i < m->n; i++)
        rc = check_object(k, &m->v[i]);
    if (rc == 0 && m->n == 0) {
        fprintf(stderr, "error: no objects passed to %s\n", verb);
        rc = KE_EINVAL;
    }
    if (rc != 0)
        kectl_manifest_free(m);
    return rc;
}

void kectl_manifest_free(kectl_manifest *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].source);
        json_decref(m->v[i].obj);
    }
    free(m->v);
    memset(m, 0, sizeof(*m));
}
