/*
 * kectl_yaml.h — kectl's manifest formats: YAML or JSON text to jansson
 * values (for `apply -f`), and jansson values back to YAML (for `-o yaml`).
 *
 * The conversion follows what kubectl does (go-yaml v2 under
 * sigs.k8s.io/yaml), so a manifest means the same thing to both:
 *   - plain scalars resolve by YAML 1.1-ish rules: null/Null/NULL/~/empty
 *     are null; true/false, yes/no, on/off (in lower, Title and UPPER case)
 *     are booleans (the one-letter y/n are left strings); integers in
 *     decimal, 0x hex, 0o or leading-0 octal (`defaultMode: 0644` is 420),
 *     0b binary, `_` separators allowed; floats like 1.5, .5, 1e3;
 *   - a float with an integral value is sent as a JSON integer (kubectl
 *     sends 3.0 as 3, which an int32 field accepts);
 *   - quoted and block scalars, and `!!str` ones, are strings; `!!int`,
 *     `!!float`, `!!bool`, `!!null` must resolve to their type;
 *   - .inf and .nan are errors (JSON has no such numbers);
 *   - anchors and aliases are expanded (bounded, see below), merge keys
 *     (`<<`) are supported, duplicate keys are errors, mapping keys must
 *     be scalars;
 *   - empty documents (`---` with nothing after it) are skipped.
 * Errors read "NAME:LINE:COL: message", lines and columns from 1.
 */
#ifndef KECTL_YAML_H
#define KECTL_YAML_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Nesting bound of one document (a deeper one is refused). */
#define KECTL_YAML_MAX_DEPTH 100
/* Bound on the values of one stream, counting alias expansions: a
 * "billion laughs" document is refused instead of eating the memory. */
#define KECTL_YAML_MAX_NODES (1u << 20)
/* A good size for the err buffers below. */
#define KECTL_YAML_ERR_MAX 512

/* kectl_yaml_to_json parses `len` bytes of YAML (a stream of zero or more
 * documents) into *docs, a new JSON array with one value per non-empty
 * document, in order; the caller owns it (json_decref). `name` prefixes
 * error messages (a file name, or "STDIN"). Returns 0, or KE_EINVAL with
 * "NAME:LINE:COL: message" in err (*docs is then NULL), or KE_ENOMEM. */
int kectl_yaml_to_json(const char *name, const char *buf, size_t len, json_t **docs, char *err,
                       size_t errlen);

/* kectl_json_to_docs parses `len` bytes holding zero or more JSON values
 * (concatenated, whitespace between them allowed) into *docs, a new JSON
 * array, in order. Duplicate keys are errors. Returns as
 * kectl_yaml_to_json. */
int kectl_json_to_docs(const char *name, const char *buf, size_t len, json_t **docs, char *err,
                       size_t errlen);

/* kectl_yaml_emit writes `v` to `out` as one YAML document in block style,
 * the way kubectl prints `-o yaml`: keys sorted, two-space indentation,
 * sequences under a key not indented, strings that would read back as
 * something else (or that contain special characters) double-quoted.
 * Returns 0, or KE_EIO when writing failed. */
int kectl_yaml_emit(FILE *out, const json_t *v);

/* kectl_yaml_plain_is_string tells whether the `len` bytes of `s`, written
 * as a plain (unquoted) YAML scalar, would read back as a string. */
int kectl_yaml_plain_is_string(const char *s, size_t len);

#endif
