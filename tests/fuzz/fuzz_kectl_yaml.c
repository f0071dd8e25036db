/*
 * fuzz_kectl_yaml.c — libFuzzer harness for kectl's manifest converter
 * (tools/kectl/yamljson.c): the bytes are read both as a YAML stream
 * (kectl_yaml_to_json) and as a JSON stream (kectl_json_to_docs), the two
 * ways `kectl apply -f` reads a file, and every document read is written
 * back with kectl_yaml_emit (`-o yaml`).
 *
 * Contracts checked (abort when broken):
 *   - each reader returns 0 with an array, or KE_EINVAL with NULL and a
 *     non-empty message, or KE_ENOMEM;
 *   - a document read from YAML, emitted and read again is the same value
 *     (kectl_yaml.h: the emitter quotes every string that would read back
 *     as something else). Documents read from JSON are only emitted: JSON's
 *     1.0 reads back from YAML as 1, as kubectl has it.
 * Seeds: tests/fuzz/corpus/kectl_yaml/.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ke_err.h"
#include "kectl_yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*fz_reader)(const char *name, const char *buf, size_t len, json_t **docs,
                         char *err, size_t errlen);

/* read_docs runs one reader and checks its result contract; returns the
 * documents (new reference) or NULL. */
static json_t *read_docs(fz_reader rd, const char *buf, size_t len)
{
    char err[KECTL_YAML_ERR_MAX] = "";
    json_t *docs = json_true(); /* a sentinel the reader must overwrite */
    int rc = rd("fuzz", buf, len, &docs, err, sizeof(err));
    if (rc == 0) {
        if (!json_is_array(docs))
            abort();
        return docs;
    }
    if (docs != NULL || (rc != KE_EINVAL && rc != KE_ENOMEM) ||
        (rc == KE_EINVAL && err[0] == '\0'))
        abort();
    return NULL;
}

/* emit writes v as YAML into a new malloc'd buffer (*out, *len); 0 or -1. */
static int emit(const json_t *v, char **out, size_t *len)
{
    FILE *f = open_memstream(out, len);
    if (!f)
        return -1;
    int rc = kectl_yaml_emit(f, v);
    if (fclose(f) != 0 || rc != 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* round_trip emits every document of docs and, when check is set, reads
 * it back and compares. */
static void round_trip(const json_t *docs, int check)
{
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc) {
        char *text = NULL;
        size_t len = 0;
        if (emit(doc, &text, &len) != 0)
            continue;
        if (check) {
            char err[KECTL_YAML_ERR_MAX] = "";
            json_t *back = NULL;
            int rc = kectl_yaml_to_json("emitted", text, len, &back, err, sizeof(err));
            if (rc == KE_ENOMEM) {
                free(text);
                continue;
            }
            if (rc != 0 || json_array_size(back) != 1 ||
                !json_equal(json_array_get(back, 0), doc)) {
                fprintf(stderr, "round trip changed a document (rc=%d %s):\n%.*s\n", rc, err,
                        (int)len, text);
                abort();
            }
            json_decref(back);
        }
        free(text);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    json_t *docs = read_docs(kectl_yaml_to_json, buf, size);
    if (docs) {
        round_trip(docs, 1);
        json_decref(docs);
    }
    docs = read_docs(kectl_json_to_docs, buf, size);
    if (docs) {
        round_trip(docs, 0);
        json_decref(docs);
    }
    return 0;
}
