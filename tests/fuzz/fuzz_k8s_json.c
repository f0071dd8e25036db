/*
 * fuzz_k8s_json.c — libFuzzer harness for the checks every object from a
 * client goes through before it is stored (EdgeController's Apply,
 * services/edgecontroller/api.c): the bytes are parsed by json_loadb with
 * the flags the services use, then ke_k8s_validate (lib/k8s) and
 * ke_store_object_check (lib/store) judge the value, and ke_k8s_str reads
 * the paths the controllers read.
 *
 * Contracts checked (abort when broken): both checks return 0 or KE_EINVAL,
 * and on KE_EINVAL write one non-empty line (no newline) to why.
 * Seeds: tests/fuzz/corpus/k8s_json/.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_why aborts unless rc is 0, or KE_EINVAL with a one-line reason. */
static void check_why(int rc, const char *why)
{
    if (rc == 0)
        return;
    if (rc != KE_EINVAL || why[0] == '\0' || strchr(why, '\n') != NULL) {
        fprintf(stderr, "fuzz_k8s_json: rc=%d why is not one line: \"%s\"\n", rc, why);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *obj = json_loadb((const char *)data, size, 0, &je);
    if (!obj)
        return 0;

    char why[512] = "";
    check_why(ke_k8s_validate(obj, why, sizeof(why)), why);
    why[0] = '\0';
    check_why(ke_store_object_check(obj, why, sizeof(why)), why);

    static const char *const paths[] = {
        "kind", "apiVersion", "metadata.name", "metadata.namespace",
        "metadata.resourceVersion", "spec.nodeName", "status.phase", "", ".", "metadata.",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        (void)ke_k8s_str(obj, paths[i]);

    /* kind lookups take client text too (kectl get <kind>) */
    const char *kind = ke_k8s_str(obj, "kind");
    if (kind)
        (void)ke_k8s_kind_find(kind);

    json_decref(obj);
    return 0;
}
