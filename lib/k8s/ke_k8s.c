/*
 * ke_k8s.c — see ke_k8s.h. Validation checks the fields kubeedge-c uses
 * and their types; unknown fields pass through untouched (objects travel
 * as their JSON, byte for byte).
 */
#include "ke_k8s.h"

#include "ke_err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const ke_k8s_kind kinds[] = {
    {"Pod", "v1", "pods", "pod", "po", 1},
    {"ConfigMap", "v1", "configmaps", "configmap", "cm", 1},
    {"Secret", "v1", "secrets", "secret", NULL, 1},
    {"Node", "v1", "nodes", "node", "no", 0},
    {"Namespace", "v1", "namespaces", "namespace", "ns", 0},
    {"Service", "v1", "services", "service", "svc", 1},
    {"Event", "v1", "events", "event", "ev", 1},
    {"Device", "devices.kubeedge.io/v1beta1", "devices", "device", NULL, 1},
    {"DeviceModel", "devices.kubeedge.io/v1beta1", "devicemodels", "devicemodel", NULL, 1},
    {"Role", "rbac.authorization.k8s.io/v1", "roles", "role", NULL, 1},
    {"ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", "clusterrole", NULL, 0},
    {"RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings", "rolebinding", NULL, 1},
    {"ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings",
     "clusterrolebinding", NULL, 0},
};

const ke_k8s_kind *ke_k8s_kinds(size_t *n)
{
    *n = sizeof(kinds) / sizeof(kinds[0]);
    return kinds;
}

const ke_k8s_kind *ke_k8s_kind_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const ke_k8s_kind *k = &kinds[i];
        if (strcasecmp(name, k->kind) == 0 || strcasecmp(name, k->plural) == 0 ||
            strcasecmp(name, k->singular) == 0 ||
            (k->short_name && strcasecmp(name, k->short_name) == 0))
            return k;
    }
    return NULL;
}

void ke_k8s_kind_list(char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", kinds[i].kind);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

const char *ke_k8s_str(const json_t *obj, const char *path)
{
    char part[128];
    const json_t *cur = obj;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(part))
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, part) : NULL;
        path += n + (dot ? 1 : 0);
    }
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

int ke_k8s_valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 253 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              s[i] == '.'))
            return 0;
    return 1;
}

int ke_k8s_valid_label(const char *s)
{
    return ke_k8s_valid_name(s) && strlen(s) <= 63 && !strchr(s, '.');
}

/* fail: KE_EINVAL with the reason (ke_err_why). */
#define fail(why, len, ...) ke_err_why(KE_EINVAL, why, len, __VA_ARGS__)

int ke_k8s_resolve_ns(const ke_k8s_kind *k, const char *ns, int one, const char **out, char *why,
                      size_t len)
{
    if (!ns)
        ns = "";
    if (!k->namespaced) {
        if (*ns)
            return fail(why, len, "namespace: must be empty: %s is cluster-scoped (got \"%.64s\")",
                        k->kind, ns);
        *out = "";
        return 0;
    }
    if (*ns && !ke_k8s_valid_label(ns))
        return fail(why, len, "namespace: \"%.64s\" is not a DNS-1123 label (lowercase letters, "
                              "digits and '-', at most 63)", ns);
    *out = *ns ? ns : one ? "default" : "";
    return 0;
}

int ke_k8s_check_name(const char *name, const char *path, char *why, size_t len)
{
    if (!name || !*name)
        return fail(why, len, "%s: required", path);
    if (!ke_k8s_valid_name(name))
        return fail(why, len, "%s: \"%.64s\" is not a DNS-1123 subdomain (lowercase letters, "
                              "digits, '-' and '.', at most 253)", path, name);
    return 0;
}

/* depth_walk: see ke_k8s_json_depth_check. path[0..used) is v's path. */
static int depth_walk(const json_t *v, int depth, int max, char *path, size_t cap, size_t used,
                      char *why, size_t len)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (depth > max)
        return fail(why, len, "%s: nested deeper than %d levels", used ? path : "(top level)",
                    max);
    if (json_is_object(v)) {
        const char *k;
        const json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            int n = snprintf(path + used, cap - used, "%s%s", used ? "." : "", k);
            size_t u = n < 0 || (size_t)n >= cap - used ? cap - 1 : used + (size_t)n;
            if (u == cap - 1 && cap > 4)
                memcpy(path + cap - 4, "...", 4);
            if (depth_walk(e, depth + 1, max, path, cap, u, why, len))
                return KE_EINVAL;
            path[used] = '\0';
        }
        return 0;
    }
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        int n = snprintf(path + used, cap - used, "[%zu]", i);
        size_t u = n < 0 || (size_t)n >= cap - used ? cap - 1 : used + (size_t)n;
        if (u == cap - 1 && cap > 4)
            memcpy(path + cap - 4, "...", 4);
        if (depth_walk(e, depth + 1, max, path, cap, u, why, len))
            return KE_EINVAL;
        path[used] = '\0';
    }
    return 0;
}

int ke_k8s_json_depth_check(const json_t *v, int max, char *why, size_t len)
{
    char path[200] = "";
    return depth_walk(v, 1, max, path, sizeof(path), 0, why, len);
}

/* valid_base64 reports whether s is standard padded base64, as a Secret's
 * data values must be (Kubernetes decodes them with Go's StdEncoding). */
static int valid_base64(const char *s, size_t n)
{
    if (n % 4 != 0)
        return 0;
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '=') {
            if (i < n - 2)
                return 0;
            pad++;
        } else if (pad || !(isalnum((unsigned char)c) || c == '+' || c == '/')) {
            return 0;
        }
    }
    return 1;
}

/* secret_data: a Secret's data (values base64) and stringData (values
 * strings). */
static int secret_data(const json_t *obj, char *why, size_t len)
{
    const json_t *t = json_object_get(obj, "type");
    if (t && !json_is_string(t))
        return fail(why, len, "type: must be a string");
    const json_t *data = json_object_get(obj, "data");
    if (data && !json_is_object(data))
        return fail(why, len, "data: must be an object of base64 strings");
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)data, k, v) {
        if (!json_is_string(v))
            return fail(why, len, "data.%.200s: must be a string (base64)", k);
        if (!valid_base64(json_string_value(v), json_string_length(v)))
            return fail(why, len, "data.%.200s: not base64 (standard alphabet, padded); put "
                                  "plain text in stringData", k);
    }
    const json_t *sd = json_object_get(obj, "stringData");
    if (sd && !json_is_object(sd))
        return fail(why, len, "stringData: must be an object of strings");
    json_object_foreach((json_t *)sd, k, v) {
        if (!json_is_string(v))
            return fail(why, len, "stringData.%.200s: must be a string", k);
    }
    return 0;
}

int ke_k8s_secret_merge(json_t *obj)
{
    const char *type = json_string_value(json_object_get(obj, "type"));
    if ((!type || !*type) && json_object_set_new(obj, "type", json_string("Opaque")) != 0)
        return KE_ENOMEM;
    json_t *sd = json_object_get(obj, "stringData");
    if (!sd)
        return 0;
    json_t *data = json_object_get(obj, "data");
    if (!data) {
        if (json_object_set_new(obj, "data", data = json_object()) != 0)
            return KE_ENOMEM;
    }
    const char *k;
    json_t *v;
    json_object_foreach(sd, k, v) {
        size_t n = json_string_length(v);
        if (n > KE_K8S_SECRET_VALUE_MAX)
            return KE_EINVAL;
        char *enc = malloc(4 * ((n + 2) / 3) + 1);
        if (!enc)
            return KE_ENOMEM;
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)json_string_value(v), (int)n);
        int rc = json_object_set_new(data, k, json_string(enc));
        free(enc);
        if (rc != 0)
            return KE_ENOMEM;
    }
    json_object_del(obj, "stringData");
    return 0;
}

/* string_map: an optional object whose values are all strings. */
static int string_map(const json_t *m, const char *path, char *why, size_t len)
{
    if (!m)
        return 0;
    if (!json_is_object(m))
        return fail(why, len, "%s: must be an object of strings", path);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_string(v))
            return fail(why, len, "%s.%s: must be a string", path, k);
    }
    return 0;
}

static int opt_string(const json_t *o, const char *field, const char *path, char *why, size_t len)
{
    const json_t *v = json_object_get(o, field);
    if (v && !json_is_string(v))
        return fail(why, len, "%s.%s: must be a string", path, field);
    return 0;
}

static int req_string(const json_t *o, const char *field, const char *path, char *why, size_t len)
{
    const json_t *v = json_object_get(o, field);
    if (!v || (json_is_string(v) && !*json_string_value(v)))
        return fail(why, len, "%s.%s: required", path, field);
    if (!json_is_string(v))
        return fail(why, len, "%s.%s: must be a string", path, field);
    return 0;
}

static int validate_pod(const json_t *obj, char *why, size_t len)
{
    const json_t *spec = json_object_get(obj, "spec");
    if (!json_is_object(spec))
        return fail(why, len, "spec: required, an object");
    const json_t *cs = json_object_get(spec, "containers");
    if (!json_is_array(cs) || json_array_size(cs) == 0)
        return fail(why, len, "spec.containers: required, a non-empty list");
    size_t i;
    const json_t *c;
    json_array_foreach(cs, i, c) {
        char path[64];
        snprintf(path, sizeof(path), "spec.containers[%zu]", i);
        if (!json_is_object(c))
            return fail(why, len, "%s: must be an object", path);
        if (req_string(c, "name", path, why, len) || req_string(c, "image", path, why, len))
            return KE_EINVAL;
        const json_t *cmd = json_object_get(c, "command");
        if (cmd && !json_is_array(cmd))
            return fail(why, len, "%s.command: must be a list of strings", path);
    }
    if (opt_string(spec, "nodeName", "spec", why, len) ||
        string_map(json_object_get(spec, "nodeSelector"), "spec.nodeSelector", why, len))
        return KE_EINVAL;
    const char *rp = ke_k8s_str(obj, "spec.restartPolicy");
    if (json_object_get(spec, "restartPolicy") && (!rp || (strcmp(rp, "Always") != 0 &&
                                                           strcmp(rp, "OnFailure") != 0 &&
                                                           strcmp(rp, "Never") != 0)))
        return fail(why, len, "spec.restartPolicy: must be Always, OnFailure or Never");
    const json_t *vols = json_object_get(spec, "volumes");
    if (vols && !json_is_array(vols))
        return fail(why, len, "spec.volumes: must be a list");
    return 0;
}

int ke_k8s_parse_number(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return isfinite(*out) ? 0 : KE_EINVAL;
    }
    const char *s = json_string_value(v);
    if (!s || !*s || isspace((unsigned char)*s))
        return KE_EINVAL;
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno || !isfinite(d))
        return KE_EINVAL;
    *out = d;
    return 0;
}

/* model_bound: a property's optional minimum or maximum, a finite number
 * (KubeEdge writes them as strings; JSON numbers are taken too). */
static int model_bound(const json_t *p, const char *field, const char *path, char *why,
                       size_t len)
{
    const json_t *v = json_object_get(p, field);
    double d;
    if (v && ke_k8s_parse_number(v, &d) != 0)
        return fail(why, len, "%s.%s: must be a finite number", path, field);
    return 0;
}

static int validate_device_model(const json_t *obj, char *why, size_t len)
{
    static const char *const types[] = {"int", "float", "double", "string", "boolean", "bytes"};
    const json_t *props = json_object_get(json_object_get(obj, "spec"), "properties");
    if (!json_is_array(props))
        return fail(why, len, "spec.properties: required, a list");
    size_t i;
    const json_t *p;
    json_array_foreach(props, i, p) {
        char path[64];
        snprintf(path, sizeof(path), "spec.properties[%zu]", i);
        if (!json_is_object(p))
            return fail(why, len, "%s: must be an object", path);
        if (req_string(p, "name", path, why, len) || req_string(p, "type", path, why, len))
            return KE_EINVAL;
        const char *t = json_string_value(json_object_get(p, "type"));
        int known = 0;
        for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++)
            known |= strcasecmp(t, types[k]) == 0;
        if (!known)
            return fail(why, len, "%s.type: must be INT, FLOAT, DOUBLE, STRING, BOOLEAN or BYTES",
                        path);
        if (model_bound(p, "minimum", path, why, len) || model_bound(p, "maximum", path, why, len))
            return KE_EINVAL;
        const char *am = ke_k8s_str(p, "accessMode");
        if (json_object_get(p, "accessMode") &&
            (!am || (strcmp(am, "ReadWrite") != 0 && strcmp(am, "ReadOnly") != 0)))
            return fail(why, len, "%s.accessMode: must be ReadWrite or ReadOnly", path);
    }
    return 0;
}

static int validate_device(const json_t *obj, char *why, size_t len)
{
    const json_t *spec = json_object_get(obj, "spec");
    if (!json_is_object(spec))
        return fail(why, len, "spec: required, an object");
    if (!ke_k8s_str(obj, "spec.deviceModelRef.name"))
        return fail(why, len, "spec.deviceModelRef.name: required");
    if (req_string(spec, "nodeName", "spec", why, len))
        return KE_EINVAL;
    const json_t *props = json_object_get(spec, "properties");
    if (props && !json_is_array(props))
        return fail(why, len, "spec.properties: must be a list");
    size_t i;
    const json_t *p;
    json_array_foreach(props, i, p) {
        char path[64];
        snprintf(path, sizeof(path), "spec.properties[%zu]", i);
        if (!json_is_object(p) || req_string(p, "name", path, why, len))
            return json_is_object(p) ? KE_EINVAL : fail(why, len, "%s: must be an object", path);
        const json_t *d = json_object_get(p, "desired");
        if (d && (!json_is_object(d) || (json_object_get(d, "value") &&
                                          !json_is_string(json_object_get(d, "value")))))
            return fail(why, len, "%s.desired.value: must be a string", path);
    }
    return 0;
}

/* string_list: a list of 1..KE_K8S_RBAC_LIST_MAX non-empty strings of at
 * most KE_K8S_RBAC_STR_MAX bytes (required) or absent (optional). */
static int string_list(const json_t *o, const char *field, const char *path, int required,
                       char *why, size_t len)
{
    const json_t *l = json_object_get(o, field);
    if (!l)
        return required ? fail(why, len, "%s.%s: required, a list of strings", path, field) : 0;
    if (!json_is_array(l) || (required && json_array_size(l) == 0))
        return fail(why, len, "%s.%s: must be a%s list of strings", path, field,
                    required ? " non-empty" : "");
    if (json_array_size(l) > KE_K8S_RBAC_LIST_MAX)
        return fail(why, len, "%s.%s: at most %d entries", path, field, KE_K8S_RBAC_LIST_MAX);
    size_t i;
    const json_t *v;
    json_array_foreach(l, i, v) {
        if (!json_is_string(v) || json_string_length(v) > KE_K8S_RBAC_STR_MAX ||
            (json_string_length(v) == 0 && strcmp(field, "apiGroups") != 0))
            return fail(why, len, "%s.%s[%zu]: must be a non-empty string of at most %d bytes",
                        path, field, i, KE_K8S_RBAC_STR_MAX);
    }
    return 0;
}

/* validate_role: Role and ClusterRole (rbac.authorization.k8s.io/v1). */
static int validate_role(const json_t *obj, char *why, size_t len)
{
    const json_t *rules = json_object_get(obj, "rules");
    if (rules && !json_is_array(rules))
        return fail(why, len, "rules: must be a list");
    if (json_array_size(rules) > KE_K8S_RBAC_RULES_MAX)
        return fail(why, len, "rules: at most %d rules", KE_K8S_RBAC_RULES_MAX);
    size_t i;
    const json_t *r;
    json_array_foreach(rules, i, r) {
        char path[32];
        snprintf(path, sizeof(path), "rules[%zu]", i);
        if (!json_is_object(r))
            return fail(why, len, "%s: must be an object", path);
        if (json_object_get(r, "nonResourceURLs"))
            return fail(why, len, "%s.nonResourceURLs: not supported", path);
        if (string_list(r, "verbs", path, 1, why, len) ||
            string_list(r, "apiGroups", path, 1, why, len) ||
            string_list(r, "resources", path, 1, why, len) ||
            string_list(r, "resourceNames", path, 0, why, len))
            return KE_EINVAL;
    }
    return 0;
}

/* validate_binding: RoleBinding and ClusterRoleBinding. */
static int validate_binding(const json_t *obj, int cluster, char *why, size_t len)
{
    const json_t *ref = json_object_get(obj, "roleRef");
    if (!json_is_object(ref))
        return fail(why, len, "roleRef: required, an object");
    const char *rk = ke_k8s_str(obj, "roleRef.kind"), *rn = ke_k8s_str(obj, "roleRef.name");
    if (!rk || (strcmp(rk, "ClusterRole") != 0 && (cluster || strcmp(rk, "Role") != 0)))
        return fail(why, len, "roleRef.kind: must be %s", cluster ? "ClusterRole"
                                                                  : "Role or ClusterRole");
    if (!rn || !ke_k8s_valid_name(rn))
        return fail(why, len, "roleRef.name: required, a valid name");
    const json_t *subs = json_object_get(obj, "subjects");
    if (subs && !json_is_array(subs))
        return fail(why, len, "subjects: must be a list");
    if (json_array_size(subs) > KE_K8S_RBAC_SUBJECTS_MAX)
        return fail(why, len, "subjects: at most %d subjects", KE_K8S_RBAC_SUBJECTS_MAX);
    size_t i;
    const json_t *sj;
    json_array_foreach(subs, i, sj) {
        char path[32];
        snprintf(path, sizeof(path), "subjects[%zu]", i);
        if (!json_is_object(sj))
            return fail(why, len, "%s: must be an object", path);
        const char *k = ke_k8s_str(sj, "kind"), *n = ke_k8s_str(sj, "name");
        if (!k || (strcmp(k, "User") != 0 && strcmp(k, "Group") != 0))
            return fail(why, len, "%s.kind: must be User or Group", path);
        if (!n || !*n || strlen(n) > KE_K8S_RBAC_STR_MAX)
            return fail(why, len, "%s.name: required, at most %d bytes", path,
                        KE_K8S_RBAC_STR_MAX);
    }
    return 0;
}

int ke_k8s_validate(const json_t *obj, char *why, size_t len)
{
    if (!json_is_object(obj))
        return fail(why, len, "object: must be a JSON object");
    if (ke_k8s_json_depth_check(obj, KE_K8S_JSON_DEPTH_MAX, why, len) != 0)
        return KE_EINVAL;
    const json_t *kv = json_object_get(obj, "kind");
    if (!kv)
        return fail(why, len, "kind: required");
    if (!json_is_string(kv))
        return fail(why, len, "kind: must be a string");
    const ke_k8s_kind *k = ke_k8s_kind_find(json_string_value(kv));
    if (k && strcmp(k->kind, json_string_value(kv)) != 0)
        return fail(why, len, "kind: \"%.64s\" names a resource; an object's kind is \"%s\"",
                    json_string_value(kv), k->kind);
    if (!k) {
        char known[256];
        ke_k8s_kind_list(known, sizeof(known));
        return fail(why, len, "kind: unknown kind \"%.64s\" (known: %s)", json_string_value(kv),
                    known);
    }
    const char *av = ke_k8s_str(obj, "apiVersion");
    if (!av || strcmp(av, k->api_version) != 0)
        return fail(why, len, "apiVersion: must be \"%s\" for %s", k->api_version, k->kind);
    const json_t *md = json_object_get(obj, "metadata");
    if (!json_is_object(md))
        return fail(why, len, "metadata: required, an object");
    if (req_string(md, "name", "metadata", why, len))
        return KE_EINVAL;
    if (!ke_k8s_valid_name(json_string_value(json_object_get(md, "name"))))
        return fail(why, len, "metadata.name: must be lowercase letters, digits, '-' or '.', "
                              "start and end alphanumeric, at most 253");
    if (opt_string(md, "namespace", "metadata", why, len) ||
        string_map(json_object_get(md, "labels"), "metadata.labels", why, len) ||
        string_map(json_object_get(md, "annotations"), "metadata.annotations", why, len))
        return KE_EINVAL;
    const char *ns = ke_k8s_str(obj, "metadata.namespace");
    if (ns && *ns && !ke_k8s_valid_label(ns))
        return fail(why, len, "metadata.namespace: must be a DNS-1123 label");
    if (strcmp(k->kind, "Pod") == 0)
        return validate_pod(obj, why, len);
    if (strcmp(k->kind, "ConfigMap") == 0)
        return string_map(json_object_get(obj, "data"), "data", why, len);
    if (strcmp(k->kind, "Secret") == 0)
        return secret_data(obj, why, len);
    if (strcmp(k->kind, "DeviceModel") == 0)
        return validate_device_model(obj, why, len);
    if (strcmp(k->kind, "Device") == 0)
        return validate_device(obj, why, len);
    if (strcmp(k->kind, "Role") == 0 || strcmp(k->kind, "ClusterRole") == 0)
        return validate_role(obj, why, len);
    if (strcmp(k->kind, "RoleBinding") == 0 || strcmp(k->kind, "ClusterRoleBinding") == 0)
        return validate_binding(obj, strcmp(k->kind, "ClusterRoleBinding") == 0, why, len);
    return 0;
}

int ke_k8s_twin_value_check(const json_t *prop, const char *value, int range, char *why,
                            size_t len)
{
    const char *type = ke_k8s_str(prop, "type"), *pname = ke_k8s_str(prop, "name");
    char shown[72];
    snprintf(shown, sizeof(shown), "%s", value);
    ke_err_oneline(shown);
    int is_int = type && strcasecmp(type, "int") == 0;
    int is_float = type && (strcasecmp(type, "float") == 0 || strcasecmp(type, "double") == 0);
    if (type && strcasecmp(type, "boolean") == 0 && strcmp(value, "true") != 0 &&
        strcmp(value, "false") != 0)
        goto bad;
    if (!is_int && !is_float)
        return 0;
    double d;
    json_t *jv = json_string(value);
    int rc = jv ? ke_k8s_parse_number(jv, &d) : KE_ENOMEM;
    json_decref(jv);
    if (rc != 0)
        goto bad;
    if (is_int) {
        char *end = NULL;
        errno = 0;
        long long ll = strtoll(value, &end, 10);
        if (*end || errno)
            goto bad;
        d = (double)ll;
    }
    if (!range)
        return 0;
    double lim;
    const json_t *min = json_object_get(prop, "minimum"), *max = json_object_get(prop, "maximum");
    if (min && ke_k8s_parse_number(min, &lim) == 0 && d < lim) {
        snprintf(why, len, "value: %s is below the minimum %g of property \"%s\"", shown, lim,
                 pname);
        return KE_EINVAL;
    }
    if (max && ke_k8s_parse_number(max, &lim) == 0 && d > lim) {
        snprintf(why, len, "value: %s is above the maximum %g of property \"%s\"", shown, lim,
                 pname);
        return KE_EINVAL;
    }
    return 0;
bad:
    snprintf(why, len, "value: \"%s\" is not a valid %s for property \"%s\"%s", shown, type,
             pname, is_float ? " (a finite number)" : "");
    return KE_EINVAL;
}

json_t *ke_k8s_find_by(const json_t *arr, const char *field, const char *value)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *v = ke_k8s_str(e, field);
        if (v && strcmp(v, value) == 0)
            return e;
    }
    return NULL;
}
