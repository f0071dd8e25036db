/*
 * ke_config.h — schema-driven configuration: a YAML file plus command-line
 * flags.
 *
 * A program describes its settings once, as a static array of
 * ke_config_field rows: a dotted key, a type, where the value lives in the
 * program's own config struct, a default (as text) and one line of help.
 * From that one table this module
 *   - loads a YAML file, where nested mappings spell the dots
 *     ("cloudhub:\n  listen: x" sets "cloudhub.listen"; a literal
 *     "cloudhub.listen: x" works too),
 *   - parses argv: --config FILE is loaded first, then every --KEY=VALUE or
 *     --KEY VALUE flag overrides it, whatever the order on the line,
 *   - prints --help generated from the same table.
 * Precedence is default < file < flag.
 *
 * Every problem comes back as a negative KE_E* code and ONE line of text in
 * the caller's buffer naming the file, line and key, e.g.
 *   cloudcore.yaml:7: unknown key "cloudhub.lisen"
 *   cloudcore.yaml:3: key "cloudhub.port": expected an integer, got "abc"
 *   cloudcore.yaml:4:7: YAML syntax error: <libyaml's problem text>
 *   unknown flag --foo (see --help)
 * Values are parsed into temporaries and written to the target only when
 * the whole load succeeded, so a failed load leaves the target untouched.
 *
 * Usage:
 *   struct cc_config { char *listen; int64_t port; int64_t timeout_ms; };
 *   static const ke_config_field cc_fields[] = {
 *       { "cloudhub.listen", KE_CONFIG_STRING,
 *         offsetof(struct cc_config, listen), "0.0.0.0:10000",
 *         "address the hub listens on" },
 *       ...
 *   };
 *   struct cc_config cfg = {0};
 *   char err[KE_CONFIG_ERR_MAX];
 *   int rc = ke_config_parse_args(cc_fields, KE_CONFIG_NFIELDS(cc_fields),
 *                                 &cfg, argc, argv, err, sizeof err);
 *   if (rc == KE_CONFIG_HELP) return 0;
 *   if (rc < 0) { fprintf(stderr, "%s\n", err); return 2; }
 *   ...
 *   ke_config_free(cc_fields, KE_CONFIG_NFIELDS(cc_fields), &cfg);
 *
 * No global state; every function is safe to call from any thread on
 * distinct targets.
 */
#ifndef KE_CONFIG_H
#define KE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ke_config_parse_args returns this (positive) after printing --help, so
 * main can exit 0. */
#define KE_CONFIG_HELP 1

#define KE_CONFIG_ERR_MAX 512            /* an err buffer this big never truncates a key */
#define KE_CONFIG_KEY_MAX 128            /* longest dotted key, including the NUL */
#define KE_CONFIG_VALUE_MAX 4096         /* longest scalar value, from file or flag */
#define KE_CONFIG_LIST_MAX 256           /* most items in one string list */
#define KE_CONFIG_FILE_MAX (1024 * 1024) /* largest YAML file read */

#define KE_CONFIG_NFIELDS(arr) (sizeof(arr) / sizeof((arr)[0]))

/* The type of a setting, and the C type of the member it is stored in. */
typedef enum {
    KE_CONFIG_STRING,   /* char *, malloc'd by the loader (NULL if no default) */
    KE_CONFIG_INT64,    /* int64_t, base 10 */
    KE_CONFIG_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 */
    KE_CONFIG_DURATION, /* int64_t milliseconds: "1500", "500ms", "30s", "2m", "1h", "1m30s" */
    KE_CONFIG_STRLIST,  /* ke_config_strlist: a YAML sequence of scalars, or "a,b,c" as flag/default */
} ke_config_type;

/* A list of strings; items and every item are malloc'd by the loader. */
typedef struct ke_config_strlist {
    char **items;
    size_t len;
} ke_config_strlist;

/* One row of a program's configuration schema. */
typedef struct ke_config_field {
    const char *key;    /* dotted key, also the flag name: "cloudhub.listen" */
    ke_config_type type;
    size_t offset;      /* offsetof(<config struct>, <member of the matching C type>) */
    const char *def;    /* default as text, parsed like a flag value; NULL = zero/NULL/empty */
    const char *help;   /* one line for --help */
} ke_config_field;

/* ke_config_load_file sets every field of `target` from its default, then
 * from the YAML file at `path`. Keys not in the schema, values of the wrong
 * type or shape, duplicate keys and malformed YAML are errors. A null value
 * ("key:" with nothing after it, "~" or "null", unquoted) leaves the
 * default in place.
 * `target` must be zero-initialised or hold the result of an earlier
 * successful load: on success the strings and lists it held are freed and
 * replaced. On error nothing is written to `target`, and one line (no
 * newline) describing the problem is written to `err` (if errlen > 0).
 * Returns 0, KE_EINVAL (bad file contents or bad schema), KE_EIO (cannot
 * open or read the file, or it is larger than KE_CONFIG_FILE_MAX) or
 * KE_ENOMEM. Free the result with ke_config_free. */
int ke_config_load_file(const ke_config_field *fields, size_t n, void *target,
                        const char *path, char *err, size_t errlen);

/* ke_config_parse_args sets every field of `target` from its default, then
 * from the file named by --config FILE (if given; the last one wins), then
 * from flags: --KEY=VALUE or --KEY VALUE for every key in the schema (the
 * last occurrence wins). A bool flag given bare (--KEY) means true and never
 * takes the next argument. --help or -h prints ke_config_usage to stdout
 * and returns KE_CONFIG_HELP without touching `target`. argv[0] is the
 * program name; positional arguments are not accepted.
 * Same contract as ke_config_load_file for `target`, `err` and the error
 * codes; flag errors read "unknown flag --foo (see --help)" or
 * "flag --cloudhub.port: expected an integer, got \"x\"". */
int ke_config_parse_args(const ke_config_field *fields, size_t n, void *target,
                         int argc, char **argv, char *err, size_t errlen);

/* ke_config_usage writes the --help text for `prog` to `out`: one line per
 * key with its type, help text and default. */
void ke_config_usage(const ke_config_field *fields, size_t n, const char *prog,
                     FILE *out);

/* ke_config_free frees the strings and lists the loader stored in `target`
 * and sets them to NULL/empty; other members are left as they are.
 * A NULL target is a no-op, and so is a second call. */
void ke_config_free(const ke_config_field *fields, size_t n, void *target);

#endif
