/*
 * fuzz_continue_token.c — libFuzzer harness for List continue tokens
 * (ListRequest.continue_token of EdgeController.List and ListDevices,
 * parsed by lib/store): the bytes, cut at the first NUL, are a token given
 * to ke_store_continue_check and ke_store_list_page for a list of pods in
 * all namespaces of a small in-memory store (three pods over two
 * namespaces, a write after the first, and a compaction).
 *
 * Contracts checked (abort when broken): the check returns 0, KE_EINVAL or
 * KE_EGONE, with one line starting "continue_token: " when it refuses;
 * ke_store_list_page returns what the check returned; an accepted token
 * gives at most the store's pods, and a next token that is accepted too.
 * Seeds: tests/fuzz/corpus/continue_token/.
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

#define FZ_PODS 3

static ke_store *fz_store;

static void fz_store_close(void)
{
    ke_store_close(fz_store);
    fz_store = NULL;
}

/* fz_store_get opens and fills the store on first use: revisions 1..3 are
 * the pods, 4 changes one, and everything up to 2 is compacted away. */
static ke_store *fz_store_get(void)
{
    static const char *const objs[] = {
        "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\",\"namespace\":\"default\"}}",
        "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"b\",\"namespace\":\"default\"}}",
        "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"c\",\"namespace\":\"prod\"}}",
        "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"b\",\"namespace\":\"default\","
        "\"labels\":{\"v\":\"2\"}}}",
    };
    if (fz_store)
        return fz_store;
    ke_log_set_level(KE_LOG_ERROR);
    if (ke_store_open(":memory:", &fz_store) != 0)
        abort();
    for (size_t i = 0; i < sizeof(objs) / sizeof(objs[0]); i++) {
        json_t *o = json_loads(objs[i], 0, NULL);
        if (!o || (i < FZ_PODS ? ke_store_create(fz_store, o, NULL)
                               : ke_store_update(fz_store, o, NULL)) != 0)
            abort();
        json_decref(o);
    }
    if (ke_store_compact(fz_store, 2) != 0)
        abort();
    atexit(fz_store_close);
    return fz_store;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ke_store *s = fz_store_get();
    char *tok = malloc(size + 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    tok[size] = '\0';

    char why[512] = "", next[KE_STORE_CONTINUE_MAX];
    int rc = ke_store_continue_check(s, "Pod", "", tok, why, sizeof(why));
    if (rc != 0 && rc != KE_EINVAL && rc != KE_EGONE)
        abort();
    if (rc != 0 && (strncmp(why, "continue_token: ", 16) != 0 || strchr(why, '\n'))) {
        fprintf(stderr, "fuzz_continue_token: reason is not one prefixed line: \"%s\"\n", why);
        abort();
    }
    json_t *items = NULL;
    int lrc = ke_store_list_page(s, "Pod", "", NULL, NULL, 1, tok, &items, NULL, next,
                                 sizeof(next));
    if (lrc != KE_ENOMEM && lrc != rc) {
        fprintf(stderr, "fuzz_continue_token: check said %d (%s), list said %d\n", rc, why, lrc);
        abort();
    }
    if (lrc == 0 && (json_array_size(items) > 1 ||
                     ke_store_continue_check(s, "Pod", "", next, NULL, 0) != 0))
        abort();
    json_decref(items);
    free(tok);
    return 0;
}
