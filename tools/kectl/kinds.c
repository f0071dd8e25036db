/*
 * kinds.c — the kinds of objects kectl knows (lib/k8s's kind table, the
 * one the servers use), with the names kubectl users type for them:
 * plural, singular, short form, Kind, any case (ke_k8s_kind_find), and
 * NAME.GROUP (devices.devices.kubeedge.io). Unknown names are refused
 * before connecting (cli.c), with kubectl's "the server doesn't have a
 * resource type".
 */
#include "kectl.h"

#include <string.h>
#include <strings.h>

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
    if (!dot)
        return ke_k8s_kind_find(resource);
    snprintf(name, sizeof(name), "%.*s", (int)(dot - resource), resource);
    snprintf(group, sizeof(group), "%s", dot + 1);
    const kectl_kind *k = ke_k8s_kind_find(name);
    char kg[128];
    if (k)
        group_of(k->api_version, kg, sizeof(kg));
    return k && strcasecmp(kg, group) == 0 ? k : NULL;
}

const kectl_kind *kectl_kind_of(const char *kind)
{
    const kectl_kind *k = ke_k8s_kind_find(kind);
    return k && strcmp(k->kind, kind) == 0 ? k : NULL;
}

int kectl_kind_is_device(const kectl_kind *kind) { return strcmp(kind->kind, "Device") == 0; }

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
