/*
 * ke_k8s.h — what kubeedge-c knows about the Kubernetes object kinds it
 * serves: the kind table (apiVersion, plural and short names, scope) and
 * validation of an object's shape, with errors that name the field path
 * ("spec.containers[0].image: required"), as the API server does.
 *
 * Kinds: Pod, ConfigMap, Secret, Node, Namespace, Service, Event (core
 * v1; Node and Namespace cluster-scoped), Device, DeviceModel
 * (devices.kubeedge.io/v1beta1, KubeEdge's shape) and Role, ClusterRole,
 * RoleBinding, ClusterRoleBinding (rbac.authorization.k8s.io/v1, the
 * policy lib/authz reads; ClusterRole and ClusterRoleBinding are
 * cluster-scoped, as Node).
 */
#ifndef KE_K8S_H
#define KE_K8S_H

#include <jansson.h>
#include <stddef.h>

/* Bounds of RBAC objects (validation refuses larger ones; lib/authz relies
 * on them): rules per role, subjects per binding, entries of one rule's
 * verbs/apiGroups/resources/resourceNames list, bytes of one string. */
#define KE_K8S_RBAC_RULES_MAX 64
#define KE_K8S_RBAC_SUBJECTS_MAX 64
#define KE_K8S_RBAC_LIST_MAX 64
#define KE_K8S_RBAC_STR_MAX 253

/* Deepest nesting of objects and arrays accepted in any JSON the APIs take
 * (an object's top level is depth 1). Deeper JSON is INVALID_ARGUMENT
 * naming the path where the bound is passed. */
#define KE_K8S_JSON_DEPTH_MAX 64

typedef struct ke_k8s_kind {
    const char *kind;        /* "Pod" */
    const char *api_version; /* "v1" */
    const char *plural;      /* "pods" */
    const char *singular;    /* "pod" */
    const char *short_name;  /* "po", or NULL */
    int namespaced;
} ke_k8s_kind;

/* ke_k8s_kind_find looks a kind up by kind, plural, singular or short
 * name, case-insensitively; NULL when unknown. */
const ke_k8s_kind *ke_k8s_kind_find(const char *name);

/* ke_k8s_kind_list writes the Kind names of the table, ", "-separated,
 * into buf (for "known: ..." in errors). */
void ke_k8s_kind_list(char *buf, size_t len);

/* ke_k8s_kinds returns the table and its length. */
const ke_k8s_kind *ke_k8s_kinds(size_t *n);

/* ke_k8s_validate checks obj (borrowed). Returns 0, or KE_EINVAL with one
 * line in why: "<field path>: <what is wrong>". */
int ke_k8s_validate(const json_t *obj, char *why, size_t len);

/* Largest stringData value of a Secret (bytes; the object as a whole is
 * bounded by the store, KE_STORE_OBJECT_MAX). */
#define KE_K8S_SECRET_VALUE_MAX (1024 * 1024)

/* ke_k8s_secret_merge folds a Secret's stringData into its data, as the
 * Kubernetes API server does on write: each stringData value is base64-
 * encoded into data under its key (replacing a data entry of the same
 * key), and stringData is removed; a missing or empty type is defaulted to
 * "Opaque", as the API server does. obj must have passed ke_k8s_validate.
 * Returns 0, KE_EINVAL (a value larger than KE_K8S_SECRET_VALUE_MAX) or
 * KE_ENOMEM (obj is then partly merged). */
int ke_k8s_secret_merge(json_t *obj);

/* ke_k8s_parse_number reads a finite number from a JSON number or a
 * string holding one entirely ("12", "-3.5", "1e3"; no spaces). NaN,
 * infinities and out-of-range values ("nan", "inf", "1e999") are refused.
 * Returns 0 and *out, or KE_EINVAL. */
int ke_k8s_parse_number(const json_t *v, double *out);

/* ke_k8s_twin_value_check checks a twin value (text) against prop, a
 * DeviceModel's spec.properties[] entry: its type (int: a whole decimal
 * number; float/double: a finite number, so "nan", "inf" and "1e999" are
 * refused; boolean: true or false; string and bytes: anything) and, when
 * `range` is set, a number's minimum and maximum (desired values; a
 * reading outside them is still a reading). The cloud checks desired
 * values with it, the edge reported ones. Returns 0, or KE_EINVAL with
 * "value: ..." naming the property in why. */
int ke_k8s_twin_value_check(const json_t *prop, const char *value, int range, char *why,
                            size_t len);

/* ke_k8s_find_by returns the element of the array arr whose string field
 * `field` equals value (a model's property by "name", a twin by
 * "propertyName"), or NULL. Borrowed from arr. */
json_t *ke_k8s_find_by(const json_t *arr, const char *field, const char *value);

/* ke_k8s_str returns the string at a dotted path ("metadata.name",
 * "spec.nodeName") of obj, or NULL. Borrowed from obj. */
const char *ke_k8s_str(const json_t *obj, const char *path);

/* ke_k8s_json_depth_check reports whether v nests objects and arrays at
 * most `max` deep (v itself is depth 1). Returns 0, or KE_EINVAL with
 * "<path>: nested deeper than <max> levels" in why, the path naming the
 * first container past the bound from v ("spec.a[0].b"; cut short with
 * "..." when long). Recursion is bounded by max, not by the input. */
int ke_k8s_json_depth_check(const json_t *v, int max, char *why, size_t len);

/* ke_k8s_resolve_ns gives the namespace a request names for kind k, by the
 * one rule of every API (docs/api.md): for a namespaced kind, "" (or NULL)
 * is "default" when the call is about one object (`one`) and every
 * namespace otherwise (list, watch); for a cluster-scoped kind the
 * namespace must be empty. On 0, *out is ns, "default" or "" (borrowed from
 * ns or static). Returns KE_EINVAL with "namespace: <why>" in why for a
 * namespace given to a cluster-scoped kind or not a DNS-1123 label. */
int ke_k8s_resolve_ns(const ke_k8s_kind *k, const char *ns, int one, const char **out, char *why,
                      size_t len);

/* ke_k8s_check_name checks the name of a request (field path `path`,
 * "name" or "device.name"): required and a DNS-1123 subdomain. Returns 0,
 * or KE_EINVAL with "<path>: <why>" in why. */
int ke_k8s_check_name(const char *name, const char *path, char *why, size_t len);

/* ke_k8s_valid_label reports whether s is a DNS-1123 label (lowercase
 * letters, digits, '-'; at most 63; alphanumeric ends): namespaces. */
int ke_k8s_valid_label(const char *s);

/* ke_k8s_valid_name reports whether s is a DNS-1123 subdomain
 * (lowercase letters, digits, '-', '.'; at most 253; alphanumeric ends). */
int ke_k8s_valid_name(const char *s);

#endif
