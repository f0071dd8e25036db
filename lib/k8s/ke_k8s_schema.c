/*
 * ke_k8s_schema.c — the embedded OpenAPI schema: strict field validation,
 * strategic merge patch facts and the /openapi/v2 and /openapi/v3
 * documents (ke_k8s_schema.h).
 *
 * The schema's bytes come from a C source the build writes from
 * api/openapi/schema.json (lib/CMakeLists.txt). It is parsed once and
 * never freed: every borrowed string handed out stays valid.
 */
#include "ke_k8s_schema.h"

#include "ke_err.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char ke_k8s_schema_json[];
extern const size_t ke_k8s_schema_json_len;

#define DEFS_REF "#/definitions/"
#define V3_REF "#/components/schemas/"
#define CORE_DEF "io.k8s.api.core.v1."
#define DEV_DEF "io.kubeedge.devices.v1beta1."
#define META_DEF "io.k8s.apimachinery.pkg.apis.meta.v1."
#define INTSTR_DEF "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
#define QUANTITY_DEF "io.k8s.apimachinery.pkg.api.resource.Quantity"
#define DEV_GROUP "devices.kubeedge.io"

/* Deepest value nesting walked (the kinds served nest far less). */
#define SCHEMA_DEPTH_MAX 64
/* Longest field path reported; longer ones end in "...". */
#define PATH_MAX_LEN 512

typedef struct resource {
    const char *group;
    const char *version;
    const char *kind;
    const char *plural;
    int namespaced;
} resource;

static const resource resources[] = {
    {"", "v1", "Namespace", "namespaces", 0},
    {"", "v1", "Node", "nodes", 0},
    {"", "v1", "Pod", "pods", 1},
    {"", "v1", "ConfigMap", "configmaps", 1},
    {"", "v1", "Secret", "secrets", 1},
    {"", "v1", "Event", "events", 1},
    {"", "v1", "Service", "services", 1},
    {DEV_GROUP, "v1beta1", "Device", "devices", 1},
    {DEV_GROUP, "v1beta1", "DeviceModel", "devicemodels", 1},
};
#define N_RESOURCES (sizeof(resources) / sizeof(resources[0]))

/* The group-versions of /openapi/v3: its path key, group and version. */
typedef struct gv_entry {
    const char *path;
    const char *group;
    const char *version;
} gv_entry;

static const gv_entry group_versions[] = {
    {"api/v1", "", "v1"},
    {"apis/" DEV_GROUP "/v1beta1", DEV_GROUP, "v1beta1"},
};
#define N_GROUP_VERSIONS (sizeof(group_versions) / sizeof(group_versions[0]))

/* Meta schemas every document carries (delete bodies, statuses, watch). */
static const char *const meta_defs[] = {META_DEF "Status", META_DEF "DeleteOptions",
                                        META_DEF "WatchEvent"};

static pthread_once_t load_once_ctl = PTHREAD_ONCE_INIT;
static json_t *schema_root;
static const json_t *schema_defs;
static int schema_rc;

static void load_once(void)
{
    json_error_t je;
    schema_root = json_loadb((const char *)ke_k8s_schema_json, ke_k8s_schema_json_len, 0, &je);
    if (!schema_root) {
        schema_rc = json_error_code(&je) == json_error_out_of_memory ? KE_ENOMEM : KE_EINVAL;
        return;
    }
    schema_defs = json_object_get(schema_root, "definitions");
    if (!json_is_object(schema_defs)) {
        json_decref(schema_root);
        schema_root = NULL;
        schema_defs = NULL;
        schema_rc = KE_EINVAL;
    }
}

int ke_k8s_schema_load(void)
{
    if (pthread_once(&load_once_ctl, load_once) != 0)
        return KE_EINVAL;
    return schema_rc;
}

/* def_name writes the definition name of a served kind (kind_suffix "" or
 * "List") into buf. */
static void def_name(const resource *r, const char *suffix, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", r->group[0] ? DEV_DEF : CORE_DEF, r->kind, suffix);
}

/* deref follows $ref to the schema it names; *name gets the last name
 * followed (or keeps its value). NULL for a dangling ref. */
static const json_t *deref(const json_t *s, const char **name)
{
    for (int hops = 0; s && hops < 8; hops++) {
        const char *ref = json_string_value(json_object_get(s, "$ref"));
        if (!ref)
            return s;
        if (strncmp(ref, DEFS_REF, strlen(DEFS_REF)) != 0)
            return NULL;
        ref += strlen(DEFS_REF);
        if (name)
            *name = ref;
        s = json_object_get(schema_defs, ref);
    }
    return NULL;
}

/* kind_schema finds the definition whose x-kubernetes-group-version-kind
 * names (apiVersion, kind); NULL when none does. */
static const json_t *kind_schema(const char *api_version, const char *kind)
{
    const char *slash = strchr(api_version, '/');
    size_t glen = slash ? (size_t)(slash - api_version) : 0;
    const char *version = slash ? slash + 1 : api_version;
    const char *key;
    const json_t *d;
    json_object_foreach((json_t *)schema_defs, key, d) {
        size_t i;
        const json_t *g;
        json_array_foreach(json_object_get(d, "x-kubernetes-group-version-kind"), i, g) {
            const char *gg = json_string_value(json_object_get(g, "group"));
            const char *gv = json_string_value(json_object_get(g, "version"));
            const char *gk = json_string_value(json_object_get(g, "kind"));
            if (gg && gv && gk && strlen(gg) == glen && strncmp(gg, api_version, glen) == 0 &&
                strcmp(gv, version) == 0 && strcmp(gk, kind) == 0)
                return d;
        }
    }
    return NULL;
}

/* ---- strict field validation ------------------------------------------ */

typedef struct checker {
    char path[PATH_MAX_LEN];
    size_t plen;
    char type_err[PATH_MAX_LEN + 128];
    int has_type_err;
    char *why; /* the unknown fields, as found */
    size_t len;
    size_t used;
    int unknown;
    int full;
} checker;

/* path_push appends ".key" (or "key" at the top) or "[i]" (key NULL) to
 * the path; returns the length to restore. */
static size_t path_push(checker *c, const char *key, size_t index)
{
    size_t mark = c->plen;
    size_t room = sizeof(c->path) - c->plen;
    int n;
    if (key)
        n = snprintf(c->path + c->plen, room, "%s%s", c->plen ? "." : "", key);
    else
        n = snprintf(c->path + c->plen, room, "[%zu]", index);
    if (n < 0 || (size_t)n >= room) {
        memcpy(c->path + sizeof(c->path) - 4, "...", 4);
        c->plen = sizeof(c->path) - 1;
    } else {
        c->plen += (size_t)n;
    }
    return mark;
}

static void path_pop(checker *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static void mismatch(checker *c, const char *want, const json_t *v)
{
    if (c->has_type_err)
        return;
    c->has_type_err = 1;
    snprintf(c->type_err, sizeof(c->type_err), "%s: expected %s, got %s",
             c->plen ? c->path : "<object>", want, json_kind(v));
}

static void unknown_field(checker *c)
{
    c->unknown++;
    if (c->full || !c->why || c->len == 0)
        return;
    size_t room = c->len - c->used;
    int n = snprintf(c->why + c->used, room, "%sunknown field \"%s\"",
                     c->unknown == 1 ? "strict decoding error: " : ", ", c->path);
    if (n < 0 || (size_t)n >= room) {
        if (c->used > 0)
            c->why[c->used] = '\0'; /* whole entries only, after the first */
        c->full = 1;
        return;
    }
    c->used += (size_t)n;
}

static int is_whole(const json_t *v)
{
    if (json_is_integer(v))
        return 1;
    if (!json_is_real(v))
        return 0;
    double d = json_real_value(v);
    return d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(long long)d;
}

static void walk(checker *c, const json_t *schema, const json_t *v, int depth)
{
    if (json_is_null(v))
        return;
    if (depth > SCHEMA_DEPTH_MAX) {
        mismatch(c, "less nesting", v);
        return;
    }
    const char *ref = NULL;
    const json_t *s = deref(schema, &ref);
    if (!s)
        return;
    if (ref && strcmp(ref, INTSTR_DEF) == 0) {
        if (!json_is_string(v) && !json_is_integer(v))
            mismatch(c, "string or integer", v);
        return;
    }
    if (ref && strcmp(ref, QUANTITY_DEF) == 0) {
        if (!json_is_string(v) && !json_is_number(v))
            mismatch(c, "string or number", v);
        return;
    }
    const json_t *props = json_object_get(s, "properties");
    if (!props && json_is_true(json_object_get(s, "x-kubernetes-preserve-unknown-fields")))
        return;
    const char *type = json_string_value(json_object_get(s, "type"));
    if (!type)
        return;
    if (strcmp(type, "object") == 0) {
        if (!json_is_object(v)) {
            mismatch(c, "object", v);
            return;
        }
        const json_t *addl = json_object_get(s, "additionalProperties");
        if (!props && !json_is_object(addl))
            return; /* free-form */
        const char *key;
        const json_t *sub;
        json_object_foreach((json_t *)v, key, sub) {
            const json_t *ps = props ? json_object_get(props, key) : NULL;
            if (!ps && json_is_true(addl))
                continue;
            if (!ps && json_is_object(addl))
                ps = addl;
            size_t mark = path_push(c, key, 0);
            if (ps)
                walk(c, ps, sub, depth + 1);
            else
                unknown_field(c);
            path_pop(c, mark);
        }
    } else if (strcmp(type, "array") == 0) {
        if (!json_is_array(v)) {
            mismatch(c, "array", v);
            return;
        }
        const json_t *items = json_object_get(s, "items");
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            size_t mark = path_push(c, NULL, i);
            if (items)
                walk(c, items, e, depth + 1);
            path_pop(c, mark);
        }
    } else if (strcmp(type, "string") == 0) {
        if (!json_is_string(v))
            mismatch(c, "string", v);
    } else if (strcmp(type, "integer") == 0) {
        if (!is_whole(v))
            mismatch(c, "integer", v);
    } else if (strcmp(type, "number") == 0) {
        if (!json_is_number(v))
            mismatch(c, "number", v);
    } else if (strcmp(type, "boolean") == 0) {
        if (!json_is_boolean(v))
            mismatch(c, "boolean", v);
    }
}

int ke_k8s_schema_check(const json_t *obj, char *why, size_t len)
{
    if (why && len)
        why[0] = '\0';
    int rc = ke_k8s_schema_load();
    if (rc != 0)
        return ke_err_why(rc, why, len, "the embedded OpenAPI schema did not load");
    if (!json_is_object(obj))
        return ke_err_why(KE_EINVAL, why, len, "expected object, got %s",
                    obj ? json_kind(obj) : "nothing");
    const char *av = json_string_value(json_object_get(obj, "apiVersion"));
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    if (!av || !*av || !kind || !*kind)
        return ke_err_why(KE_EINVAL, why, len, "apiVersion and kind: required, strings");
    const json_t *s = kind_schema(av, kind);
    if (!s)
        return ke_err_why(KE_ENOTFOUND, why, len, "no schema for kind \"%s\" in version \"%s\"",
                          kind, av);
    checker *c = calloc(1, sizeof(*c));
    if (!c)
        return ke_err_why(KE_ENOMEM, why, len, "out of memory");
    c->why = why;
    c->len = len;
    walk(c, s, obj, 1);
    rc = 0;
    if (c->has_type_err) {
        ke_err_why(0, why, len, "%s", c->type_err);
        rc = KE_EINVAL;
    } else if (c->unknown) {
        rc = KE_EINVAL;
    }
    free(c);
    return rc;
}

/* ---- strategic merge patch facts --------------------------------------- */

int ke_k8s_schema_patch_meta(void *ud, const char *kind, const char *path,
                             ke_k8s_patch_meta *meta)
{
    (void)ud;
    if (!kind || !path || !*path || !meta || ke_k8s_schema_load() != 0)
        return 0;
    const json_t *s = NULL;
    for (size_t i = 0; i < N_RESOURCES && !s; i++) {
        if (strcmp(resources[i].kind, kind) == 0) {
            char name[128];
            def_name(&resources[i], "", name, sizeof(name));
            s = json_object_get(schema_defs, name);
        }
    }
    const json_t *field = NULL;
    const char *p = path;
    while (s && *p) {
        const char *end = p + strcspn(p, ".[");
        char seg[128];
        size_t n = (size_t)(end - p);
        if (n == 0 || n >= sizeof(seg))
            return 0;
        memcpy(seg, p, n);
        seg[n] = '\0';
        s = deref(s, NULL);
        const json_t *props = json_object_get(s, "properties");
        const json_t *addl = json_object_get(s, "additionalProperties");
        field = props ? json_object_get(props, seg) : NULL;
        if (!field && json_is_object(addl))
            field = addl;
        if (!field)
            return 0;
        s = field;
        p = end;
        while (strncmp(p, "[]", 2) == 0) { /* into the entries of a list */
            s = json_object_get(deref(s, NULL), "items");
            if (!s)
                return 0;
            p += 2;
        }
        if (*p == '.')
            p++;
        else if (*p)
            return 0;
    }
    const char *strategy = json_string_value(json_object_get(field, "x-kubernetes-patch-strategy"));
    if (!s || !strategy)
        return 0;
    meta->strategy = strategy;
    meta->merge_key = json_string_value(json_object_get(field, "x-kubernetes-patch-merge-key"));
    return 1;
}

/* ---- documents ----------------------------------------------------------- */

/* set_new adds v (stolen) under key; -1 when v is NULL or on failure. */
static int set_new(json_t *o, const char *key, json_t *v)
{
    if (!v)
        return -1;
    return json_object_set_new(o, key, v);
}

static int append_new(json_t *a, json_t *v)
{
    if (!v)
        return -1;
    return json_array_append_new(a, v);
}

static json_t *ref_to(int v3, const char *def)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s%s", v3 ? V3_REF : DEFS_REF, def);
    return json_pack("{s:s}", "$ref", buf);
}

static json_t *string_param(int v3, const char *name, const char *in, int required)
{
    json_t *p = v3 ? json_pack("{s:s,s:s,s:{s:s,s:b}}", "name", name, "in", in, "schema", "type",
                               "string", "uniqueItems", 1)
                   : json_pack("{s:s,s:s,s:s,s:b}", "name", name, "in", in, "type", "string",
                               "uniqueItems", 1);
    if (p && required && json_object_set_new(p, "required", json_true()) != 0) {
        json_decref(p);
        return NULL;
    }
    return p;
}

/* response: {"description":"OK", schema} for status code */
static json_t *responses(int v3, const char *code, json_t *schema)
{
    if (!schema)
        return NULL;
    if (v3)
        return json_pack("{s:{s:s,s:{s:{s:o}}}}", code, "description", "OK", "content",
                         "application/json", "schema", schema);
    return json_pack("{s:{s:s,s:o}}", code, "description", "OK", "schema", schema);
}

static const char *const patch_types[] = {
    "application/json-patch+json", "application/merge-patch+json",
    "application/strategic-merge-patch+json", "application/apply-patch+yaml"};

/* operation builds one operation of resource r. action: list, post, get,
 * put, patch or delete. */
static json_t *operation(int v3, const resource *r, const char *action)
{
    static const struct {
        const char *action, *verb, *suffix, *code;
        int write, body;
    } ops[] = {
        {"list", "list", "List", "200", 0, 0},   {"post", "create", "", "201", 1, 1},
        {"get", "read", "", "200", 0, 0},        {"put", "replace", "", "200", 1, 1},
        {"patch", "patch", "", "200", 1, 2},     {"delete", "delete", "", "200", 0, 3},
    };
    size_t k = 0;
    while (k < sizeof(ops) / sizeof(ops[0]) && strcmp(ops[k].action, action) != 0)
        k++;
    if (k == sizeof(ops) / sizeof(ops[0]))
        return NULL;
    char def[128], opid[160], kdef[128];
    def_name(r, ops[k].suffix, def, sizeof(def));
    def_name(r, "", kdef, sizeof(kdef));
    snprintf(opid, sizeof(opid), "%s%s%s", ops[k].verb, r->namespaced ? "Namespaced" : "",
             r->kind);
    json_t *resp_schema = ops[k].body == 3 ? ref_to(v3, META_DEF "Status") : ref_to(v3, def);
    json_t *op = json_pack("{s:s,s:s,s:{s:s,s:s,s:s},s:o,s:[]}", "operationId", opid,
                           "x-kubernetes-action", action, "x-kubernetes-group-version-kind",
                           "group", r->group, "version", r->version, "kind", r->kind,
                           "responses", responses(v3, ops[k].code, resp_schema), "parameters");
    if (!op)
        return NULL;
    json_t *params = json_object_get(op, "parameters");
    int bad = 0;
    if (ops[k].write) {
        bad |= append_new(params, string_param(v3, "dryRun", "query", 0));
        bad |= append_new(params, string_param(v3, "fieldManager", "query", 0));
        bad |= append_new(params, string_param(v3, "fieldValidation", "query", 0));
    }
    if (ops[k].body == 2 && !v3)
        bad |= set_new(op, "consumes", json_pack("[s,s,s,s]", patch_types[0], patch_types[1],
                                                 patch_types[2], patch_types[3]));
    if (ops[k].body) {
        json_t *schema = ops[k].body == 1   ? ref_to(v3, kdef)
                         : ops[k].body == 3 ? ref_to(v3, META_DEF "DeleteOptions")
                                            : json_pack("{s:s}", "type", "object");
        if (!schema) {
            bad = -1;
        } else if (!v3) {
            bad |= append_new(params, json_pack("{s:s,s:s,s:b,s:o}", "name", "body", "in", "body",
                                                "required", ops[k].body != 3, "schema", schema));
        } else {
            json_t *content = json_object();
            int n = ops[k].body == 2 ? 4 : 1;
            for (int i = 0; i < n; i++)
                bad |= set_new(content, n == 4 ? patch_types[i] : "application/json",
                               json_pack("{s:O}", "schema", schema));
            json_decref(schema);
            if (!content)
                bad = -1;
            else
                bad |= set_new(op, "requestBody", json_pack("{s:b,s:o}", "required",
                                                            ops[k].body != 3, "content", content));
        }
    }
    if (!v3)
        bad |= set_new(op, "produces", json_pack("[s]", "application/json"));
    if (bad) {
        json_decref(op);
        return NULL;
    }
    return op;
}

/* path_item builds a path with its path parameters and the operations
 * named in actions (NULL-terminated). */
static json_t *path_item(int v3, const resource *r, int named, int namespaced,
                         const char *const *actions)
{
    json_t *item = json_pack("{s:[]}", "parameters");
    if (!item)
        return NULL;
    json_t *params = json_object_get(item, "parameters");
    int bad = 0;
    if (named)
        bad |= append_new(params, string_param(v3, "name", "path", 1));
    if (namespaced)
        bad |= append_new(params, string_param(v3, "namespace", "path", 1));
    for (size_t i = 0; actions[i] && !bad; i++)
        bad |= set_new(item, strcmp(actions[i], "list") == 0 ? "get"
                             : strcmp(actions[i], "post") == 0 ? "post"
                                                               : actions[i],
                       operation(v3, r, actions[i]));
    if (bad) {
        json_decref(item);
        return NULL;
    }
    return item;
}

/* add_paths adds the paths of resource r to paths. */
static int add_paths(int v3, const resource *r, json_t *paths)
{
    static const char *const coll[] = {"list", "post", NULL};
    static const char *const one[] = {"get", "put", "patch", "delete", NULL};
    static const char *const all[] = {"list", NULL};
    char prefix[128], p[256];
    if (r->group[0])
        snprintf(prefix, sizeof(prefix), "/apis/%s/%s", r->group, r->version);
    else
        snprintf(prefix, sizeof(prefix), "/api/%s", r->version);
    snprintf(p, sizeof(p), "%s%s/%s", prefix, r->namespaced ? "/namespaces/{namespace}" : "",
             r->plural);
    if (set_new(paths, p, path_item(v3, r, 0, r->namespaced, coll)) != 0)
        return KE_ENOMEM;
    snprintf(p, sizeof(p), "%s%s/%s/{name}", prefix,
             r->namespaced ? "/namespaces/{namespace}" : "", r->plural);
    if (set_new(paths, p, path_item(v3, r, 1, r->namespaced, one)) != 0)
        return KE_ENOMEM;
    if (r->namespaced) {
        snprintf(p, sizeof(p), "%s/%s", prefix, r->plural);
        if (set_new(paths, p, path_item(v3, r, 0, 0, all)) != 0)
            return KE_ENOMEM;
    }
    return 0;
}

json_t *ke_k8s_openapi_v2(void)
{
    if (ke_k8s_schema_load() != 0)
        return NULL;
    json_t *doc = json_pack("{s:s,s:{s:s,s:s},s:{}}", "swagger", "2.0", "info", "title",
                            "kubeedge-c", "version", "v1", "paths");
    if (!doc)
        return NULL;
    /* a copy: the loaded schema is shared by every thread */
    if (set_new(doc, "definitions", json_deep_copy(schema_defs)) != 0) {
        json_decref(doc);
        return NULL;
    }
    json_t *paths = json_object_get(doc, "paths");
    for (size_t i = 0; i < N_RESOURCES; i++) {
        if (add_paths(0, &resources[i], paths) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* v3_copy deep-copies a schema, its refs made "#/components/schemas/...";
 * the names referred to are appended to todo. */
static json_t *v3_copy(const json_t *src, json_t *todo)
{
    if (json_is_object(src)) {
        json_t *o = json_object();
        if (!o)
            return NULL;
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)src, key, v) {
            const char *ref = strcmp(key, "$ref") == 0 ? json_string_value(v) : NULL;
            json_t *c;
            if (ref && strncmp(ref, DEFS_REF, strlen(DEFS_REF)) == 0) {
                char buf[256];
                snprintf(buf, sizeof(buf), V3_REF "%s", ref + strlen(DEFS_REF));
                c = json_string(buf);
                if (append_new(todo, json_string(ref + strlen(DEFS_REF))) != 0) {
                    json_decref(c);
                    c = NULL;
                }
            } else {
                c = v3_copy(v, todo);
            }
            if (set_new(o, key, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (json_is_array(src)) {
        json_t *a = json_array();
        if (!a)
            return NULL;
        size_t i;
        const json_t *v;
        json_array_foreach(src, i, v) {
            if (append_new(a, v3_copy(v, todo)) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    return json_deep_copy(src);
}

static const gv_entry *find_gv(const char *group_version)
{
    if (!group_version)
        return NULL;
    while (*group_version == '/')
        group_version++;
    size_t n = strcspn(group_version, "?");
    while (n > 0 && group_version[n - 1] == '/')
        n--;
    for (size_t i = 0; i < N_GROUP_VERSIONS; i++)
        if (strlen(group_versions[i].path) == n &&
            strncmp(group_versions[i].path, group_version, n) == 0)
            return &group_versions[i];
    return NULL;
}

/* add_schemas copies the named definitions and every one they refer to
 * into schemas. */
static int add_schemas(json_t *schemas, json_t *todo)
{
    for (size_t i = 0; i < json_array_size(todo); i++) {
        const char *name = json_string_value(json_array_get(todo, i));
        if (json_object_get(schemas, name))
            continue;
        const json_t *d = json_object_get(schema_defs, name);
        if (!d)
            return KE_EINVAL;
        if (set_new(schemas, name, v3_copy(d, todo)) != 0)
            return KE_ENOMEM;
    }
    return 0;
}

json_t *ke_k8s_openapi_v3(const char *group_version)
{
    const gv_entry *gv = find_gv(group_version);
    if (!gv || ke_k8s_schema_load() != 0)
        return NULL;
    json_t *doc = json_pack("{s:s,s:{s:s,s:s},s:{},s:{s:{}}}", "openapi", "3.0.0", "info", "title",
                            "kubeedge-c", "version", "v1", "paths", "components", "schemas");
    json_t *todo = json_array();
    if (!doc || !todo)
        goto fail;
    json_t *paths = json_object_get(doc, "paths");
    for (size_t i = 0; i < N_RESOURCES; i++) {
        const resource *r = &resources[i];
        if (strcmp(r->group, gv->group) != 0 || strcmp(r->version, gv->version) != 0)
            continue;
        char name[128];
        if (add_paths(1, r, paths) != 0)
            goto fail;
        def_name(r, "", name, sizeof(name));
        if (append_new(todo, json_string(name)) != 0)
            goto fail;
        def_name(r, "List", name, sizeof(name));
        if (append_new(todo, json_string(name)) != 0)
            goto fail;
    }
    for (size_t i = 0; i < sizeof(meta_defs) / sizeof(meta_defs[0]); i++)
        if (json_object_get(schema_defs, meta_defs[i]) &&
            append_new(todo, json_string(meta_defs[i])) != 0)
            goto fail;
    if (add_schemas(json_object_get(json_object_get(doc, "components"), "schemas"), todo) != 0)
        goto fail;
    json_decref(todo);
    return doc;
fail:
    json_decref(todo);
    json_decref(doc);
    return NULL;
}

/* doc_hash writes the SHA-256 (upper-case hex) of doc's canonical JSON. */
static int doc_hash(const json_t *doc, char hex[2 * EVP_MAX_MD_SIZE + 1])
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return KE_ENOMEM;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
    free(text);
    if (ok != 1)
        return KE_ENOMEM;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02X", md[i]);
    hex[2 * mdlen] = '\0';
    return 0;
}

json_t *ke_k8s_openapi_v3_index(const char *hash_query)
{
    const char *q = hash_query && *hash_query ? hash_query : "hash";
    json_t *index = json_pack("{s:{}}", "paths");
    if (!index)
        return NULL;
    json_t *paths = json_object_get(index, "paths");
    for (size_t i = 0; i < N_GROUP_VERSIONS; i++) {
        json_t *doc = ke_k8s_openapi_v3(group_versions[i].path);
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        int rc = doc ? doc_hash(doc, hex) : KE_ENOMEM;
        json_decref(doc);
        char url[512];
        snprintf(url, sizeof(url), "/openapi/v3/%s?%s=%s", group_versions[i].path, q,
                 rc == 0 ? hex : "");
        if (rc != 0 || set_new(paths, group_versions[i].path,
                               json_pack("{s:s}", "serverRelativeURL", url)) != 0) {
            json_decref(index);
            return NULL;
        }
    }
    return index;
}

/* ---- /openapi/v2 in protobuf ---------------------------------------------
 * kubectl asks for /openapi/v2 only in protobuf: the gnostic openapi.v2
 * Document message (field numbers below are that message's). Only what the
 * document above uses is encoded; vendor extensions carry their value as
 * JSON text in Any.yaml (JSON is YAML). */

typedef struct pbuf {
    unsigned char *b;
    size_t n, cap;
    int err;
} pbuf;

static void pb_raw(pbuf *p, const void *d, size_t n)
{
    if (p->err || n == 0)
        return;
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->n + n)
            cap *= 2;
        unsigned char *nb = realloc(p->b, cap);
        if (!nb) {
            p->err = 1;
            return;
        }
        p->b = nb;
        p->cap = cap;
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void pb_varint(pbuf *p, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    pb_raw(p, tmp, n);
}

static void pb_bytes(pbuf *p, unsigned field, const void *d, size_t n)
{
    pb_varint(p, (uint64_t)field << 3 | 2);
    pb_varint(p, n);
    pb_raw(p, d, n);
}

static void pb_str(pbuf *p, unsigned field, const char *s)
{
    if (s)
        pb_bytes(p, field, s, strlen(s));
}

static void pb_bool(pbuf *p, unsigned field, int v)
{
    if (v) {
        pb_varint(p, (uint64_t)field << 3);
        pb_varint(p, 1);
    }
}

/* pb_msg embeds child (consumed) as field. */
static void pb_msg(pbuf *p, unsigned field, pbuf *child)
{
    if (child->err)
        p->err = 1;
    else
        pb_bytes(p, field, child->b ? (const void *)child->b : "", child->n);
    free(child->b);
    *child = (pbuf){0};
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* pb_ext encodes the x-... keys of o as NamedAny entries of field. */
static void pb_ext(pbuf *p, unsigned field, const json_t *o)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        if (strncmp(key, "x-", 2) != 0)
            continue;
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            p->err = 1;
            return;
        }
        pbuf any = {0}, named = {0};
        pb_str(&any, 2, text);
        free(text);
        pb_str(&named, 1, key);
        pb_msg(&named, 2, &any);
        pb_msg(p, field, &named);
    }
}

static void pb_schema(pbuf *p, const json_t *s, int depth)
{
    if (depth > SCHEMA_DEPTH_MAX) {
        p->err = 1;
        return;
    }
    pb_str(p, 1, jstr(s, "$ref"));
    pb_str(p, 2, jstr(s, "format"));
    pb_str(p, 4, jstr(s, "description"));
    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(s, "required"), i, e) pb_str(p, 19, json_string_value(e));
    const json_t *addl = json_object_get(s, "additionalProperties");
    if (addl) {
        pbuf item = {0}, sub = {0};
        if (json_is_object(addl)) {
            pb_schema(&sub, addl, depth + 1);
            pb_msg(&item, 1, &sub);
        } else {
            pb_varint(&item, 2 << 3);
            pb_varint(&item, json_is_true(addl));
        }
        pb_msg(p, 21, &item);
    }
    if (jstr(s, "type")) {
        pbuf t = {0};
        pb_str(&t, 1, jstr(s, "type"));
        pb_msg(p, 22, &t);
    }
    const json_t *items = json_object_get(s, "items");
    if (json_is_object(items)) {
        pbuf it = {0}, sub = {0};
        pb_schema(&sub, items, depth + 1);
        pb_msg(&it, 1, &sub);
        pb_msg(p, 23, &it);
    }
    const json_t *props = json_object_get(s, "properties");
    if (json_is_object(props)) {
        pbuf ps = {0};
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)props, key, v) {
            pbuf named = {0}, sub = {0};
            pb_str(&named, 1, key);
            pb_schema(&sub, v, depth + 1);
            pb_msg(&named, 2, &sub);
            pb_msg(&ps, 1, &named);
        }
        pb_msg(p, 25, &ps);
    }
    pb_ext(p, 31, s);
}

/* pb_param encodes one parameter as a ParametersItem of field. */
static void pb_param(pbuf *p, unsigned field, const json_t *prm)
{
    const char *in = jstr(prm, "in");
    int required = json_is_true(json_object_get(prm, "required"));
    int unique = json_is_true(json_object_get(prm, "uniqueItems"));
    pbuf sub = {0}, param = {0}, item = {0};
    if (in && strcmp(in, "body") == 0) {
        pbuf body = {0}, schema = {0};
        pb_str(&body, 2, jstr(prm, "name"));
        pb_str(&body, 3, in);
        pb_bool(&body, 4, required);
        pb_schema(&schema, json_object_get(prm, "schema"), 1);
        pb_msg(&body, 5, &schema);
        pb_msg(&param, 1, &body);
    } else {
        int query = in && strcmp(in, "query") == 0;
        pb_bool(&sub, 1, required);
        pb_str(&sub, 2, in);
        pb_str(&sub, 4, jstr(prm, "name"));
        pb_str(&sub, query ? 6 : 5, jstr(prm, "type"));
        pb_bool(&sub, query ? 20 : 19, unique);
        pbuf nonbody = {0};
        pb_msg(&nonbody, query ? 3 : 4, &sub);
        pb_msg(&param, 2, &nonbody);
    }
    pb_msg(&item, 1, &param);
    pb_msg(p, field, &item);
}

static void pb_operation(pbuf *p, const json_t *op)
{
    size_t i;
    const json_t *e;
    pb_str(p, 5, jstr(op, "operationId"));
    json_array_foreach(json_object_get(op, "produces"), i, e) pb_str(p, 6, json_string_value(e));
    json_array_foreach(json_object_get(op, "consumes"), i, e) pb_str(p, 7, json_string_value(e));
    json_array_foreach(json_object_get(op, "parameters"), i, e) pb_param(p, 8, e);
    pbuf resps = {0};
    const char *code;
    const json_t *r;
    json_object_foreach(json_object_get(op, "responses"), code, r) {
        pbuf resp = {0}, value = {0}, named = {0};
        pb_str(&resp, 1, jstr(r, "description"));
        if (json_object_get(r, "schema")) {
            pbuf item = {0}, schema = {0};
            pb_schema(&schema, json_object_get(r, "schema"), 1);
            pb_msg(&item, 1, &schema);
            pb_msg(&resp, 2, &item);
        }
        pb_msg(&value, 1, &resp);
        pb_str(&named, 1, code);
        pb_msg(&named, 2, &value);
        pb_msg(&resps, 1, &named);
    }
    pb_msg(p, 9, &resps);
    pb_ext(p, 13, op);
}

int ke_k8s_openapi_v2_pb(unsigned char **out, size_t *len)
{
    static const struct {
        const char *method;
        unsigned field;
    } methods[] = {{"get", 2}, {"put", 3}, {"post", 4}, {"delete", 5}, {"patch", 8}};
    *out = NULL;
    *len = 0;
    json_t *doc = ke_k8s_openapi_v2();
    if (!doc)
        return KE_ENOMEM;
    pbuf p = {0}, info = {0}, paths = {0}, defs = {0};
    pb_str(&p, 1, jstr(doc, "swagger"));
    pb_str(&info, 1, jstr(json_object_get(doc, "info"), "title"));
    pb_str(&info, 2, jstr(json_object_get(doc, "info"), "version"));
    pb_msg(&p, 2, &info);
    const char *key;
    const json_t *v;
    json_object_foreach(json_object_get(doc, "paths"), key, v) {
        pbuf item = {0}, named = {0};
        for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
            const json_t *op = json_object_get(v, methods[m].method);
            if (op) {
                pbuf o = {0};
                pb_operation(&o, op);
                pb_msg(&item, methods[m].field, &o);
            }
        }
        size_t i;
        const json_t *e;
        json_array_foreach(json_object_get(v, "parameters"), i, e) pb_param(&item, 9, e);
        pb_str(&named, 1, key);
        pb_msg(&named, 2, &item);
        pb_msg(&paths, 2, &named);
    }
    pb_msg(&p, 8, &paths);
    json_object_foreach(json_object_get(doc, "definitions"), key, v) {
        pbuf named = {0}, schema = {0};
        pb_str(&named, 1, key);
        pb_schema(&schema, v, 1);
        pb_msg(&named, 2, &schema);
        pb_msg(&defs, 1, &named);
    }
    pb_msg(&p, 9, &defs);
    json_decref(doc);
    if (p.err) {
        free(p.b);
        return KE_ENOMEM;
    }
    *out = p.b;
    *len = p.n;
    return 0;
}
