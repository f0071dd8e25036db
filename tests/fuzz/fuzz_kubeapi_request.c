/*
 * fuzz_kubeapi_request.c — libFuzzer harness for what a Kubernetes API
 * client controls before any object is read (services/kubeapi, MetaServer):
 * the request path (ke_k8s_path_parse), query parameters
 * (ke_k8s_query_set) and a protobuf request body (ka_pb_to_json, the
 * bodies of kubectl create configmap|secret|namespace).
 *
 * The first byte picks the decoder: 0 path, 1 query ("key=value" pairs
 * split at '&', the first '=' ending the key), 2 protobuf body (the rest of
 * the bytes).
 *
 * Contracts checked (abort when broken): the path parser returns 0 with a
 * kind and a resource of the kind's plural, KE_ENOTFOUND or KE_EINVAL, and
 * a reason that is one line; the query parser returns 0 or KE_EINVAL with
 * a reason starting with the key; the body decoder returns 0 with an
 * object whose apiVersion is "v1" and whose kind is ConfigMap, Secret or
 * Namespace, or KE_EINVAL / KE_EPROTO with a reason.
 * Seeds: tests/fuzz/corpus/kubeapi_request/.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_k8s_rest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int ka_pb_to_json(const void *body, size_t len, json_t **out, char *why, size_t wlen);

static void check_line(const char *why)
{
    if (strchr(why, '\n'))
        abort();
}

static void fuzz_path(const char *s)
{
    ke_k8s_path p;
    char why[256] = "";
    int rc = ke_k8s_path_parse(s, &p, why, sizeof(why));
    if (rc == 0) {
        if (!p.kind || strcmp(p.kind->plural, p.resource) != 0)
            abort();
    } else if (rc != KE_ENOTFOUND && rc != KE_EINVAL) {
        abort();
    } else {
        check_line(why);
    }
}

static void fuzz_query(char *s)
{
    ke_k8s_query q;
    ke_k8s_query_init(&q);
    for (char *save = NULL, *kv = strtok_r(s, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        const char *v = NULL;
        if (eq) {
            *eq = '\0';
            v = eq + 1;
        }
        char why[256] = "";
        int rc = ke_k8s_query_set(&q, kv, v, why, sizeof(why));
        if (rc != 0 && (rc != KE_EINVAL || strncmp(why, kv, strlen(kv)) != 0))
            abort();
    }
}

static void fuzz_body(const uint8_t *data, size_t size)
{
    json_t *o = NULL;
    char why[300] = "";
    int rc = ka_pb_to_json(data, size, &o, why, sizeof(why));
    if (rc == 0) {
        const char *av = json_string_value(json_object_get(o, "apiVersion"));
        const char *k = json_string_value(json_object_get(o, "kind"));
        if (!av || strcmp(av, "v1") != 0 || !k ||
            (strcmp(k, "ConfigMap") != 0 && strcmp(k, "Secret") != 0 &&
             strcmp(k, "Namespace") != 0))
            abort();
        char *text = json_dumps(o, JSON_COMPACT);
        free(text);
    } else if ((rc != KE_EINVAL && rc != KE_EPROTO) || o || !why[0]) {
        abort();
    }
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (data[0] == 2) {
        fuzz_body(data + 1, size - 1);
        return 0;
    }
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] == 0)
        fuzz_path(s);
    else if (data[0] == 1)
        fuzz_query(s);
    free(s);
    return 0;
}
