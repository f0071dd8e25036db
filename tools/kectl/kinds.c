/*
 * kinds.c — the kinds of objects kectl knows, with the names kubectl users
 * type for them: plural, singular, short form, Kind, any case, and
 * NAME.GROUP (devices.devices.kubeedge.io). Unknown names are refused
 * before connecting (cli.c), with kubectl's "the server doesn't have a
 * resource type".
 */
#include "kectl.h"

#include <string.h>
#include <strings.h>

static const kectl_kind kinds[] = {
    {"Pod", "pods", "pod", "po", "v1", 1, 0},
    {"ConfigMap", "configmaps", "configmap", "cm", "v1", 1, 0},
    {"Secret", "secrets", "secret", NULL, "v1", 1, 0},
    {"Node", "nodes", "node", "no", "v1", 0, 0},
    {"Device", "devices", "device", NULL, "devices.kubeedge.io/v1beta1", 1, 1},
    {"DeviceModel", "devicemodels", "devicemodel", NULL, "devices.kubeedge.io/v1beta1", 1, 0},
    {"Role", "roles", "role", NULL, "rbac.authorization.k8s.io/v1", 1, 0},
    {"ClusterRole", "clusterroles", "clusterrole", NULL, "rbac.authorization.k8s.io/v1", 0, 0},
    {"RoleBinding", "rolebindings", "rolebinding", NULL, "rbac.authorization.k8s.io/v1", 1, 0},
    {"ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", NULL,
     "rbac.authorization.k8s.io/v1", 0, 0},
};

#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

/* group_of writes the API group of an apiVersion ("" for the core group). */
static void group_of(const char *api_version, char *buf, size_t len)
{
    const char *slash = strchr(api_version, '/');
    if (!slash)
        snprintf(buf, len, "%s", "");
    else
        snprintf(buf, len, "%.*s", (int)(slash - api_version), api_version);
}

const kectl_kind *kectl_kind_lookup(const char *resource)
{
    char name[128], group[128];
    const char *dot = strchr(resource, '.');
    if (dot) {
        snprintf(name, sizeof(name), "%.*s", (int)(dot - resource), resource);
        snprintf(group, sizeof(group), "%s", dot + 1);
    } else {
        snprintf(name, sizeof(name), "%s", resource);
        group[0] = '\0';
    }
    for (size_t i = 0; i < N_KINDS; i++) {
        const kectl_kind *k = &kinds[i];
        if (strcasecmp(name, k->plural) != 0 && strcasecmp(name, k->singular) != 0 &&
            strcasecmp(name, k->kind) != 0 &&
            !(k->short_name && strcasecmp(name, k->short_name) == 0))
            continue;
        if (dot) {
            char kg[128];
            group_of(k->api_version, kg, sizeof(kg));
            if (strcasecmp(kg, group) != 0)
                continue;
        }
        return k;
    }
    return NULL;
}

const kectl_kind *kectl_kind_of(const char *kind)
{
    for (size_t i = 0; kind && i < N_KINDS; i++)
        if (strcmp(kind, kinds[i].kind) == 0)
            return &kinds[i];
    return NULL;
}

int kectl_kind_api_matches(const kectl_kind *kind, const char *api_version)
{
    char a[128], b[128];
    group_of(api_version, a, sizeof(a));
    group_of(kind->api_version, b, sizeof(b));
    if (strcmp(a, b) != 0)
        return 0;
    /* the core group has one version */
    return b[0] != '\0' || strcmp(api_version, "v1") == 0;
}

const char *kectl_kind_request_ns(const kectl *k, const kectl_kind *kind)
{
    if (!kind->namespaced || k->all_ns)
        return "";
    return k->ns;
}
