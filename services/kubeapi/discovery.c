/*
 * discovery.c — what clients ask before anything else: /version, /api,
 * /apis, each group-version's resources, the OpenAPI documents
 * (lib/k8s/ke_k8s_schema: the one schema that strict field validation uses
 * too), and /healthz, /readyz, /livez.
 */
#include "kubeapi_internal.h"

#include "ke_k8s_schema.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Kubernetes version this API answers as: the kinds and behaviour
 * served follow v1.30's API (kubectl 1.29–1.31 are within its skew). */
#define KA_K8S_MAJOR "1"
#define KA_K8S_MINOR "30"
#define KA_GIT_VERSION "v1.30.0-kubeedge-c"

/* group_of splits an apiVersion into group ("" core) and version. */
static void split_gv(const char *api_version, char *g, size_t gl, char *v, size_t vl)
{
    const char *slash = strchr(api_version, '/');
    if (slash) {
        snprintf(g, gl, "%.*s", (int)(slash - api_version), api_version);
        snprintf(v, vl, "%s", slash + 1);
    } else {
        snprintf(g, gl, "%s", "");
        snprintf(v, vl, "%s", api_version);
    }
}

static json_t *verbs_all(void)
{
    return json_pack("[s,s,s,s,s,s,s,s]", "create", "delete", "deletecollection", "get", "list",
                     "patch", "update", "watch");
}

/* resource_list builds the APIResourceList of group g version v. */
static json_t *resource_list(const char *g, const char *v)
{
    char gv[96];
    snprintf(gv, sizeof(gv), "%s%s%s", g, *g ? "/" : "", v);
    json_t *l = json_pack("{s:s, s:s, s:s, s:[]}", "kind", "APIResourceList", "apiVersion", "v1",
                          "groupVersion", gv, "resources");
    if (!l)
        return NULL;
    json_t *rs = json_object_get(l, "resources");
    size_t n;
    const ke_k8s_kind *t = ke_k8s_kinds(&n);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        char kg[64], kv[16];
        split_gv(t[i].api_version, kg, sizeof(kg), kv, sizeof(kv));
        if (strcmp(kg, g) != 0 || strcmp(kv, v) != 0)
            continue;
        found = 1;
        json_t *r = json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", t[i].plural, "singularName",
                              t[i].singular, "namespaced", t[i].namespaced, "kind", t[i].kind,
                              "verbs", verbs_all());
        if (r && t[i].short_name)
            json_object_set_new(r, "shortNames", json_pack("[s]", t[i].short_name));
        if (r && (strcmp(t[i].kind, "Pod") == 0 || strcmp(t[i].kind, "Service") == 0))
            json_object_set_new(r, "categories", json_pack("[s]", "all"));
        json_array_append_new(rs, r);
        char sub[96];
        snprintf(sub, sizeof(sub), "%s/status", t[i].plural);
        json_array_append_new(rs, json_pack("{s:s, s:s, s:b, s:s, s:[s,s,s]}", "name", sub,
                                            "singularName", "", "namespaced", t[i].namespaced,
                                            "kind", t[i].kind, "verbs", "get", "patch",
                                            "update"));
    }
    if (!found) {
        json_decref(l);
        return NULL;
    }
    return l;
}

/* group_obj builds the APIGroup of g (every kind of it has one version). */
static json_t *group_obj(const char *g)
{
    size_t n;
    const ke_k8s_kind *t = ke_k8s_kinds(&n);
    for (size_t i = 0; i < n; i++) {
        char kg[64], kv[16];
        split_gv(t[i].api_version, kg, sizeof(kg), kv, sizeof(kv));
        if (strcmp(kg, g) == 0 && *g)
            return json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:{s:s, s:s}}", "kind", "APIGroup",
                             "apiVersion", "v1", "name", g, "versions", "groupVersion",
                             t[i].api_version, "version", kv, "preferredVersion",
                             "groupVersion", t[i].api_version, "version", kv);
    }
    return NULL;
}

/* The CustomResourceDefinitions of the kinds served under API groups of
 * their own (devices.kubeedge.io), read-only and made from the kind table:
 * kubectl looks them up when it meets a kind it does not know. */
#define CRD_GROUP "apiextensions.k8s.io"
#define CRD_GV CRD_GROUP "/v1"

static int is_crd_kind(const ke_k8s_kind *k)
{
    return strchr(k->api_version, '/') && strncmp(k->api_version, "rbac.", 5) != 0;
}

static json_t *crd_of(const ke_k8s_kind *k)
{
    char g[64], v[16], name[160], list[80];
    split_gv(k->api_version, g, sizeof(g), v, sizeof(v));
    snprintf(name, sizeof(name), "%s.%s", k->plural, g);
    snprintf(list, sizeof(list), "%sList", k->kind);
    return json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:{s:s, s:s, s:s, s:s}, s:s, "
                     "s:[{s:s, s:b, s:b}]}, s:{s:{s:s, s:s, s:s, s:s}}}",
                     "apiVersion", CRD_GV, "kind", "CustomResourceDefinition", "metadata",
                     "name", name, "spec", "group", g, "names", "kind", k->kind, "listKind",
                     list, "plural", k->plural, "singular", k->singular, "scope",
                     k->namespaced ? "Namespaced" : "Cluster", "versions", "name", v, "served",
                     1, "storage", 1, "status", "acceptedNames", "kind", k->kind, "listKind",
                     list, "plural", k->plural, "singular", k->singular);
}

int ka_is_crd_path(const char *url)
{
    return strncmp(url, "/apis/" CRD_GV "/customresourcedefinitions",
                   strlen("/apis/" CRD_GV "/customresourcedefinitions")) == 0;
}

enum MHD_Result ka_serve_crds(kubeapi *ka, struct MHD_Connection *c, ka_req *r)
{
    (void)ka;
    if (strcmp(r->method, "GET") != 0)
        return ka_send_status(c, 405, "MethodNotAllowed",
                              "customresourcedefinitions are read-only here: the kinds are built "
                              "in", NULL, NULL);
    const char *rest = r->url + strlen("/apis/" CRD_GV "/customresourcedefinitions");
    while (*rest == '/')
        rest++;
    size_t n;
    const ke_k8s_kind *t = ke_k8s_kinds(&n);
    json_t *items = json_array();
    for (size_t i = 0; items && i < n; i++) {
        if (!is_crd_kind(&t[i]))
            continue;
        json_t *crd = crd_of(&t[i]);
        if (*rest) {
            if (crd && strcmp(ke_k8s_str(crd, "metadata.name"), rest) == 0) {
                json_decref(items);
                return ka_send_json(c, 200, crd, NULL);
            }
            json_decref(crd);
            continue;
        }
        json_array_append_new(items, crd);
    }
    if (*rest) {
        json_decref(items);
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "customresourcedefinitions.apiextensions.k8s.io \"%.200s\" not found", rest);
        return ka_send_status(c, 404, "NotFound", msg, NULL, NULL);
    }
    return ka_send_json(c, 200,
                        json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind",
                                  "CustomResourceDefinitionList", "apiVersion", CRD_GV,
                                  "metadata", "resourceVersion", "0", "items", items),
                        NULL);
}

static json_t *group_list(void)
{
    json_t *l = json_pack("{s:s, s:s, s:[{s:s, s:[{s:s, s:s}], s:{s:s, s:s}}]}", "kind",
                          "APIGroupList", "apiVersion", "v1", "groups", "name", CRD_GROUP,
                          "versions", "groupVersion", CRD_GV, "version", "v1",
                          "preferredVersion", "groupVersion", CRD_GV, "version", "v1");
    if (!l)
        return NULL;
    json_t *gs = json_object_get(l, "groups");
    size_t n;
    const ke_k8s_kind *t = ke_k8s_kinds(&n);
    for (size_t i = 0; i < n; i++) {
        char kg[64], kv[16];
        split_gv(t[i].api_version, kg, sizeof(kg), kv, sizeof(kv));
        if (!*kg)
            continue;
        int seen = 0;
        size_t j;
        json_t *e;
        json_array_foreach(gs, j, e)
            seen |= strcmp(json_string_value(json_object_get(e, "name")), kg) == 0;
        if (!seen)
            json_array_append_new(gs, group_obj(kg));
    }
    return l;
}

int ka_is_group_path(const char *url)
{
    if (strcmp(url, "/api/v1") == 0 || strcmp(url, "/api/v1/") == 0)
        return 1;
    if (strncmp(url, "/apis/", 6) != 0)
        return 0;
    const char *s = url + 6, *slash = strchr(s, '/');
    if (!slash)
        return 1; /* /apis/G */
    if (slash - s >= 64) /* longer than a group name */
        return 0;
    const char *rest = slash + 1, *slash2 = strchr(rest, '/');
    return !*rest || !slash2 || !slash2[1];
}

enum MHD_Result ka_serve_group(kubeapi *ka, struct MHD_Connection *c, ka_req *r)
{
    (void)ka;
    if (strcmp(r->method, "GET") != 0)
        return ka_send_status(c, 405, "MethodNotAllowed", "the server does not allow this method "
                                                          "on the requested resource", NULL, NULL);
    char g[64] = "", v[16] = "";
    json_t *doc = NULL;
    if (strncmp(r->url, "/api/v1", 7) == 0) {
        doc = resource_list("", "v1");
    } else {
        const char *s = r->url + 6, *slash = strchr(s, '/');
        size_t gl = slash ? (size_t)(slash - s) : strlen(s);
        if (gl < sizeof(g)) {
            memcpy(g, s, gl);
            g[gl] = '\0';
        }
        const char *rest = slash ? slash + 1 : "";
        size_t vl = strcspn(rest, "/");
        if (vl < sizeof(v)) {
            memcpy(v, rest, vl);
            v[vl] = '\0';
        }
        if (strcmp(g, CRD_GROUP) == 0)
            doc = !*v ? json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:{s:s, s:s}}", "kind",
                                  "APIGroup", "apiVersion", "v1", "name", CRD_GROUP, "versions",
                                  "groupVersion", CRD_GV, "version", "v1", "preferredVersion",
                                  "groupVersion", CRD_GV, "version", "v1")
                : strcmp(v, "v1") == 0
                    ? json_pack("{s:s, s:s, s:s, s:[{s:s, s:s, s:b, s:s, s:[s,s], s:[s]}]}",
                                "kind", "APIResourceList", "apiVersion", "v1", "groupVersion",
                                CRD_GV, "resources", "name", "customresourcedefinitions",
                                "singularName", "customresourcedefinition", "namespaced", 0,
                                "kind", "CustomResourceDefinition", "verbs", "get", "list",
                                "shortNames", "crd")
                    : NULL;
        else
            doc = *v ? resource_list(g, v) : group_obj(g);
    }
    if (!doc)
        return ka_send_status(c, 404, "NotFound", "the server could not find the requested "
                                                  "resource", NULL, NULL);
    return ka_send_json(c, 200, doc, NULL);
}

enum MHD_Result ka_serve_discovery(kubeapi *ka, struct MHD_Connection *c, ka_req *r)
{
    (void)ka;
    if (strcmp(r->method, "GET") != 0)
        return ka_send_status(c, 405, "MethodNotAllowed", "the server does not allow this method "
                                                          "on the requested resource", NULL, NULL);
    if (strncmp(r->url, "/apis", 5) == 0)
        return ka_send_json(c, 200, group_list(), NULL);
    char addr[64];
    snprintf(addr, sizeof(addr), "0.0.0.0:%d", atomic_load(&ka->port));
    return ka_send_json(c, 200,
                        json_pack("{s:s, s:[s], s:[{s:s, s:s}]}", "kind", "APIVersions",
                                  "versions", "v1", "serverAddressByClientCIDRs", "clientCIDR",
                                  "0.0.0.0/0", "serverAddress", addr),
                        NULL);
}

/* v3_index: the index of the v3 documents, built once (it hashes them). */
static json_t *index_doc;
static void index_build(void) { index_doc = ke_k8s_openapi_v3_index(NULL); }
static json_t *v3_index(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, index_build);
    return index_doc;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, const char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                                MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result ka_serve_other(kubeapi *ka, struct MHD_Connection *c, ka_req *r)
{
    (void)ka;
    const char *u = r->url;
    if (strcmp(r->method, "GET") != 0)
        return ka_send_status(c, 405, "MethodNotAllowed", "the server does not allow this method "
                                                          "on the requested resource", NULL, NULL);
    if (strcmp(u, "/version") == 0 || strcmp(u, "/version/") == 0)
        return ka_send_json(c, 200,
                            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "major",
                                      KA_K8S_MAJOR, "minor", KA_K8S_MINOR, "gitVersion",
                                      KA_GIT_VERSION, "gitCommit", "", "gitTreeState", "clean",
                                      "buildDate", "", "goVersion", "", "compiler", "c",
                                      "platform", "linux/amd64"),
                            NULL);
    if (strcmp(u, "/healthz") == 0 || strcmp(u, "/readyz") == 0 || strcmp(u, "/livez") == 0)
        return send_text(c, 200, "ok");
    if (strcmp(u, "/openapi/v2") == 0) {
        /* kubectl asks for the protobuf encoding (gnostic's OpenAPI v2) */
        const char *acc = r->accept ? r->accept : "";
        if (strstr(acc, "protobuf")) {
            unsigned char *pb = NULL;
            size_t n = 0;
            if (ke_k8s_openapi_v2_pb(&pb, &n) != 0)
                return ka_send_status(c, 500, "InternalError", "cannot encode the OpenAPI v2 "
                                                               "document", NULL, NULL);
            struct MHD_Response *resp =
                MHD_create_response_from_buffer(n, pb, MHD_RESPMEM_MUST_FREE);
            if (!resp) {
                free(pb);
                return MHD_NO;
            }
            MHD_add_response_header(resp, "Content-Type", KE_K8S_OPENAPI_V2_PB_TYPE);
            enum MHD_Result rc = MHD_queue_response(c, 200, resp);
            MHD_destroy_response(resp);
            return rc;
        }
        return ka_send_json(c, 200, ke_k8s_openapi_v2(), NULL);
    }
    if (strcmp(u, "/openapi/v3") == 0 || strcmp(u, "/openapi/v3/") == 0)
        return ka_send_json(c, 200, json_incref(v3_index()), NULL);
    if (strncmp(u, "/openapi/v3/", 12) == 0) {
        json_t *doc = ke_k8s_openapi_v3(u + 12);
        if (!doc)
            return ka_send_status(c, 404, "NotFound", "no OpenAPI document for this group-version",
                                  NULL, NULL);
        return ka_send_json(c, 200, doc, NULL);
    }
    return ka_send_status(c, 404, "NotFound", "the server could not find the requested resource",
                          NULL, NULL);
}
