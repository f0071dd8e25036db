/*
 * fuzz_selector.c — libFuzzer harness for label and field selectors
 * (lib/store, `kectl get -l ... --field-selector ...`, List and Watch
 * requests): the bytes are split at the first NUL into a label selector
 * and a field selector (no NUL: all of it is the label selector and the
 * field selector is NULL), checked by ke_store_selector_check and, when
 * accepted, used by ke_store_list against a small in-memory store, which
 * runs the matcher over objects with labels, nested fields, numbers,
 * booleans and nulls.
 *
 * Contracts checked (abort when broken): the check returns 0, or KE_EINVAL
 * with one line starting "label_selector: " or "field_selector: ";
 * ke_store_list accepts what the check accepted and refuses what it
 * refused.
 * Seeds: tests/fuzz/corpus/selector/ (files hold a NUL between the two).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_err.h"
#include "ke_log.h"
#include "ke_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The store the accepted selectors are listed against, made once per
 * process and closed at exit. */
static ke_store *fz_store;

static const char *const fz_objects[] = {
    "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\","
    "\"labels\":{\"app\":\"web\",\"tier\":\"front\",\"kubernetes.io/os\":\"linux\"}},"
    "\"spec\":{\"nodeName\":\"edge-1\",\"hostNetwork\":true,\"priority\":10},"
    "\"status\":{\"phase\":\"Running\",\"podIP\":null}}",
    "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"db\",\"namespace\":\"prod\","
    "\"labels\":{\"app\":\"db\"}},"
    "\"spec\":{\"nodeName\":\"edge-2\",\"note\":\"a,b=c\\\\d\",\"containers\":[{\"name\":\"db\"}]},"
    "\"status\":{\"phase\":\"Pending\"}}",
    "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"bare\"},\"spec\":{}}",
};

static void fz_store_close(void)
{
    ke_store_close(fz_store);
    fz_store = NULL;
}

/* fz_store_get opens the store and fills it on first use. */
static ke_store *fz_store_get(void)
{
    if (fz_store)
        return fz_store;
    ke_log_set_level(KE_LOG_ERROR);
    if (ke_store_open(":memory:", &fz_store) != 0)
        abort();
    for (size_t i = 0; i < sizeof(fz_objects) / sizeof(fz_objects[0]); i++) {
        json_error_t je;
        json_t *o = json_loads(fz_objects[i], 0, &je);
        if (!o || ke_store_create(fz_store, o, NULL) != 0) {
            fprintf(stderr, "fuzz_selector: cannot store seed object %zu\n", i);
            abort();
        }
        json_decref(o);
    }
    atexit(fz_store_close);
    return fz_store;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ke_store *s = fz_store_get();
    /* one copy with a NUL at the end: label = [0, first NUL), field after it */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *label = buf;
    const char *nul = memchr(buf, '\0', size);
    const char *field = nul ? nul + 1 : NULL;

    char why[512] = "";
    int rc = ke_store_selector_check(label, field, why, sizeof(why));
    if (rc != 0 && rc != KE_EINVAL && rc != KE_ENOMEM)
        abort();
    if (rc == KE_EINVAL &&
        ((strncmp(why, "label_selector: ", 16) != 0 && strncmp(why, "field_selector: ", 16) != 0) ||
         strchr(why, '\n') != NULL)) {
        fprintf(stderr, "fuzz_selector: reason is not one prefixed line: \"%s\"\n", why);
        abort();
    }

    if (rc != KE_ENOMEM) {
        json_t *items = NULL;
        int lrc = ke_store_list(s, "Pod", NULL, label, field, &items, NULL);
        if (lrc != KE_ENOMEM && (lrc == 0) != (rc == 0)) {
            fprintf(stderr, "fuzz_selector: check said %d (%s), list said %d\n", rc, why, lrc);
            abort();
        }
        if (lrc == 0 && json_array_size(items) > sizeof(fz_objects) / sizeof(fz_objects[0]))
            abort();
        json_decref(items);
    }
    free(buf);
    return 0;
}
