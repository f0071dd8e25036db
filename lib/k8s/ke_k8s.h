/*
 * ke_k8s.h — what kubeedge-c knows about the Kubernetes object kinds it
 * serves: the kind table (apiVersion, plural and short names, scope) and
 * validation of an object's shape, with errors that name the field path
 * ("spec.containers[0].image: required"), as the API server does.
 *
 * Kinds: Pod, ConfigMap, Secret, Node (core v1), Device, DeviceModel
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

/* ke_k8s_kinds returns the table and its length. */
const ke_k8s_kind *ke_k8s_kinds(size_t *n);

/* ke_k8s_validate checks obj (borrowed). Returns 0, or KE_EINVAL with one
 * line in why: "<field path>: <what is wrong>". */
int ke_k8s_validate(const json_t *obj, char *why, size_t len);

/* ke_k8s_str returns the string at a dotted path ("metadata.name",
 * "spec.nodeName") of obj, or NULL. Borrowed from obj. */
const char *ke_k8s_str(const json_t *obj, const char *path);

/* ke_k8s_valid_name reports whether s is a DNS-1123 subdomain
 * (lowercase letters, digits, '-', '.'; at most 253; alphanumeric ends). */
int ke_k8s_valid_name(const char *s);

#endif
