/*
 * ke_config.c — schema-driven configuration from YAML and flags (see
 * ke_config.h).
 *
 * The map: a load (cfg_load) holds one temporary value per schema field.
 * ld_init validates the schema and fills the temporaries from the
 * defaults; load_yaml walks the libyaml document tree and overwrites them
 * from the file; parse_args overwrites them from flags; ld_commit moves
 * them into the caller's struct only once everything has succeeded. Every
 * text value — default, YAML scalar, flag — goes through val_from_text, so
 * the three sources accept exactly the same spellings.
 */
#include "ke_config.h"

#include "ke_err.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* One parsed value, held until the whole load has succeeded. */
typedef struct cfg_val {
    union {
        char *s;
        int64_t i;
        bool b;
        ke_config_strlist l;
    } u;
    int line; /* line of the file that set it; 0 = not set by the file */
} cfg_val;

typedef struct cfg_load {
    const ke_config_field *fields;
    size_t n;
    cfg_val *vals;    /* n temporaries, owned */
    const char *path; /* file being read, for messages */
    char *err;
    size_t errlen;
} cfg_load;

enum { FLAG_FIELD, FLAG_CONFIG, FLAG_HELP };

static int fail(cfg_load *ld, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fail writes one line into the caller's err buffer and returns rc. */
static int fail(cfg_load *ld, int rc, const char *fmt, ...)
{
    if (ld->err != NULL && ld->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
        ke_err_oneline(ld->err);
    }
    return rc;
}

static const char *type_noun(ke_config_type t)
{
    switch (t) {
    case KE_CONFIG_STRING: return "a string";
    case KE_CONFIG_INT64: return "an integer";
    case KE_CONFIG_BOOL: return "a boolean (true/false)";
    case KE_CONFIG_DURATION: return "a duration (e.g. 500ms, 30s, 2m)";
    case KE_CONFIG_STRLIST: return "a list of strings";
    }
    return "a value";
}

static const char *type_metavar(ke_config_type t)
{
    switch (t) {
    case KE_CONFIG_STRING: return "STRING";
    case KE_CONFIG_INT64: return "INT";
    case KE_CONFIG_BOOL: return "BOOL";
    case KE_CONFIG_DURATION: return "DURATION";
    case KE_CONFIG_STRLIST: return "A,B,...";
    }
    return "VALUE";
}

static void strlist_clear(ke_config_strlist *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->len = 0;
}

/* strlist_push appends a copy of s[0..len). Returns 0, KE_EFULL or
 * KE_ENOMEM. */
static int strlist_push(ke_config_strlist *l, const char *s, size_t len)
{
    if (l->len >= KE_CONFIG_LIST_MAX)
        return KE_EFULL;
    char **items = realloc(l->items, (l->len + 1) * sizeof(*items));
    if (items == NULL)
        return KE_ENOMEM;
    l->items = items;
    if ((l->items[l->len] = strndup(s, len)) == NULL)
        return KE_ENOMEM;
    l->len++;
    return KE_OK;
}

static void val_clear(ke_config_type type, cfg_val *v)
{
    if (type == KE_CONFIG_STRING) {
        free(v->u.s);
        v->u.s = NULL;
    } else if (type == KE_CONFIG_STRLIST) {
        strlist_clear(&v->u.l);
    }
}

/* parse_int64 accepts a whole base-10 integer and nothing else. */
static bool parse_int64(const char *s, int64_t *out)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* parse_duration accepts milliseconds as a bare integer ("1500") or one or
 * more <digits><unit> groups with unit ms, s, m or h ("1m30s"). Negative
 * durations and overflow are rejected. */
static bool parse_duration(const char *s, int64_t *out)
{
    int64_t total;
    if (parse_int64(s, &total)) {
        if (total < 0)
            return false;
        *out = total;
        return true;
    }
    if (*s == '\0')
        return false;
    total = 0;
    const char *p = s;
    while (*p != '\0') {
        if (!isdigit((unsigned char)*p))
            return false;
        int64_t num = 0;
        for (; isdigit((unsigned char)*p); p++) {
            if (num > (INT64_MAX - 9) / 10)
                return false;
            num = num * 10 + (*p - '0');
        }
        int64_t scale;
        if (strncmp(p, "ms", 2) == 0) {
            scale = 1;
            p += 2;
        } else if (*p == 's') {
            scale = 1000;
            p++;
        } else if (*p == 'm') {
            scale = 60 * 1000;
            p++;
        } else if (*p == 'h') {
            scale = 60 * 60 * 1000;
            p++;
        } else {
            return false;
        }
        if (num > (INT64_MAX - total) / scale)
            return false;
        total += num * scale;
    }
    *out = total;
    return true;
}

/* val_from_text converts `text` for field f into *out (which must be
 * empty). Returns 0, KE_ENOMEM, or KE_EINVAL with the reason written to
 * `why` ("expected an integer, got \"abc\""). */
static int val_from_text(const ke_config_field *f, const char *text,
                         cfg_val *out, char *why, size_t whylen)
{
    bool ok = true;
    switch (f->type) {
    case KE_CONFIG_STRING:
        if ((out->u.s = strdup(text)) == NULL)
            return KE_ENOMEM;
        return KE_OK;
    case KE_CONFIG_INT64: ok = parse_int64(text, &out->u.i); break;
    case KE_CONFIG_BOOL: ok = parse_bool(text, &out->u.b); break;
    case KE_CONFIG_DURATION: ok = parse_duration(text, &out->u.i); break;
    case KE_CONFIG_STRLIST: {
        /* comma-separated; the empty string is the empty list */
        const char *p = text;
        while (*text != '\0') {
            size_t len = strcspn(p, ",");
            int rc = strlist_push(&out->u.l, p, len);
            if (rc == KE_EFULL) {
                snprintf(why, whylen, "more than %d items", KE_CONFIG_LIST_MAX);
                rc = KE_EINVAL;
            }
            if (rc != KE_OK) {
                strlist_clear(&out->u.l);
                return rc;
            }
            if (p[len] == '\0')
                break;
            p += len + 1;
        }
        return KE_OK;
    }
    }
    if (!ok) {
        snprintf(why, whylen, "expected %s, got \"%.64s%s\"", type_noun(f->type),
                 text, strlen(text) > 64 ? "..." : "");
        return KE_EINVAL;
    }
    return KE_OK;
}

/* ld_set replaces field idx's temporary with *nv (taking its contents). */
static void ld_set(cfg_load *ld, size_t idx, cfg_val *nv, int line)
{
    val_clear(ld->fields[idx].type, &ld->vals[idx]);
    ld->vals[idx] = *nv;
    ld->vals[idx].line = line;
}

static int find_field(const cfg_load *ld, const char *key)
{
    for (size_t i = 0; i < ld->n; i++)
        if (strcmp(ld->fields[i].key, key) == 0)
            return (int)i;
    return -1;
}

/* is_prefix is true when some key continues `key` with a dot, i.e. `key`
 * names a mapping in the schema. */
static bool is_prefix(const cfg_load *ld, const char *key)
{
    size_t len = strlen(key);
    for (size_t i = 0; i < ld->n; i++)
        if (strncmp(ld->fields[i].key, key, len) == 0 && ld->fields[i].key[len] == '.')
            return true;
    return false;
}

static void ld_free(cfg_load *ld)
{
    if (ld->vals == NULL)
        return;
    for (size_t i = 0; i < ld->n; i++)
        val_clear(ld->fields[i].type, &ld->vals[i]);
    free(ld->vals);
    ld->vals = NULL;
}

/* check_schema rejects tables that cannot work: missing or overlong keys,
 * the reserved flag names, a key given twice, or a key that is also a
 * mapping ("a" and "a.b"). */
static int check_schema(cfg_load *ld)
{
    for (size_t i = 0; i < ld->n; i++) {
        const char *k = ld->fields[i].key;
        if (k == NULL || k[0] == '\0' || strlen(k) >= KE_CONFIG_KEY_MAX)
            return fail(ld, KE_EINVAL, "schema: field %zu: key is missing or longer than %d",
                        i, KE_CONFIG_KEY_MAX - 1);
        if (strcmp(k, "config") == 0 || strcmp(k, "help") == 0)
            return fail(ld, KE_EINVAL, "schema: key \"%s\" is reserved for a flag", k);
        if ((unsigned)ld->fields[i].type > KE_CONFIG_STRLIST)
            return fail(ld, KE_EINVAL, "schema: key \"%s\": unknown type", k);
        for (size_t j = 0; j < i; j++) {
            const char *o = ld->fields[j].key;
            size_t lo = strlen(o), lk = strlen(k);
            if (strcmp(o, k) == 0)
                return fail(ld, KE_EINVAL, "schema: key \"%s\" appears twice", k);
            if ((lo < lk && strncmp(o, k, lo) == 0 && k[lo] == '.') ||
                (lk < lo && strncmp(o, k, lk) == 0 && o[lk] == '.'))
                return fail(ld, KE_EINVAL, "schema: key \"%s\" conflicts with \"%s\"", k, o);
        }
    }
    return KE_OK;
}

/* ld_init validates the schema and fills the temporaries from defaults. */
static int ld_init(cfg_load *ld, const ke_config_field *fields, size_t n,
                   void *target, char *err, size_t errlen)
{
    memset(ld, 0, sizeof(*ld));
    ld->fields = fields;
    ld->n = n;
    ld->err = err;
    ld->errlen = errlen;
    if ((fields == NULL && n > 0) || target == NULL)
        return fail(ld, KE_EINVAL, "config: no schema or no target");
    int rc = check_schema(ld);
    if (rc != KE_OK)
        return rc;
    if (n > 0 && (ld->vals = calloc(n, sizeof(*ld->vals))) == NULL)
        return fail(ld, KE_ENOMEM, "config: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (fields[i].def == NULL)
            continue;
        cfg_val nv = { 0 };
        char why[160];
        rc = val_from_text(&fields[i], fields[i].def, &nv, why, sizeof why);
        if (rc == KE_EINVAL)
            rc = fail(ld, rc, "schema: key \"%s\": default: %s", fields[i].key, why);
        else if (rc != KE_OK)
            rc = fail(ld, rc, "config: out of memory");
        if (rc != KE_OK) {
            ld_free(ld);
            return rc;
        }
        ld_set(ld, i, &nv, 0);
    }
    return KE_OK;
}

/* ld_commit moves every temporary into the target, freeing what the target
 * held. Cannot fail. */
static void ld_commit(cfg_load *ld, void *target)
{
    for (size_t i = 0; i < ld->n; i++) {
        void *slot = (char *)target + ld->fields[i].offset;
        cfg_val *v = &ld->vals[i];
        switch (ld->fields[i].type) {
        case KE_CONFIG_STRING:
            free(*(char **)slot);
            *(char **)slot = v->u.s;
            v->u.s = NULL;
            break;
        case KE_CONFIG_INT64:
        case KE_CONFIG_DURATION: *(int64_t *)slot = v->u.i; break;
        case KE_CONFIG_BOOL: *(bool *)slot = v->u.b; break;
        case KE_CONFIG_STRLIST:
            strlist_clear((ke_config_strlist *)slot);
            *(ke_config_strlist *)slot = v->u.l;
            v->u.l.items = NULL;
            v->u.l.len = 0;
            break;
        }
    }
}

/* ---- YAML ---------------------------------------------------------------- */

static int node_line(const yaml_node_t *node)
{
    return (int)node->start_mark.line + 1;
}

/* describe writes how a node looks, for "got ..." in messages. */
static const char *describe(const yaml_node_t *node, char *buf, size_t len)
{
    if (node->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (node->type == YAML_SEQUENCE_NODE)
        return "a list";
    snprintf(buf, len, "\"%.64s%s\"", (const char *)node->data.scalar.value,
             node->data.scalar.length > 64 ? "..." : "");
    return buf;
}

/* is_null: an unquoted empty value, "~" or "null" — "nothing set here". */
static bool is_null(const yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)node->data.scalar.value;
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

/* scalar_text returns a scalar's text, or NULL (with err set) when it
 * holds a NUL byte or is longer than KE_CONFIG_VALUE_MAX. */
static const char *scalar_text(cfg_load *ld, const yaml_node_t *node, int line,
                               const char *key)
{
    const char *s = (const char *)node->data.scalar.value;
    if (node->data.scalar.length > KE_CONFIG_VALUE_MAX) {
        fail(ld, KE_EINVAL, "%s:%d: key \"%s\": value longer than %d bytes", ld->path,
             line, key, KE_CONFIG_VALUE_MAX);
        return NULL;
    }
    if (strlen(s) != node->data.scalar.length) {
        fail(ld, KE_EINVAL, "%s:%d: key \"%s\": value contains a NUL byte", ld->path,
             line, key);
        return NULL;
    }
    return s;
}

/* set_from_seq fills a string list from a YAML sequence of scalars. */
static int set_from_seq(cfg_load *ld, yaml_document_t *doc, const yaml_node_t *seq,
                        const char *key, cfg_val *nv)
{
    char got[80];
    for (yaml_node_item_t *it = seq->data.sequence.items.start;
         it < seq->data.sequence.items.top; it++) {
        const yaml_node_t *item = yaml_document_get_node(doc, *it);
        int line = node_line(item);
        if (item->type != YAML_SCALAR_NODE)
            return fail(ld, KE_EINVAL, "%s:%d: key \"%s\": list item must be a string, got %s",
                        ld->path, line, key, describe(item, got, sizeof got));
        const char *s = scalar_text(ld, item, line, key);
        if (s == NULL)
            return KE_EINVAL;
        int rc = strlist_push(&nv->u.l, s, strlen(s));
        if (rc == KE_EFULL)
            return fail(ld, KE_EINVAL, "%s:%d: key \"%s\": more than %d items", ld->path,
                        line, key, KE_CONFIG_LIST_MAX);
        if (rc != KE_OK)
            return fail(ld, rc, "%s: out of memory", ld->path);
    }
    return KE_OK;
}

/* set_from_node stores the value node `val` of field idx, set at `line`. */
static int set_from_node(cfg_load *ld, yaml_document_t *doc, size_t idx,
                         const yaml_node_t *val, int line)
{
    const ke_config_field *f = &ld->fields[idx];
    char got[80], why[160];
    cfg_val nv = { 0 };
    int rc = KE_OK;

    if (ld->vals[idx].line != 0)
        return fail(ld, KE_EINVAL, "%s:%d: duplicate key \"%s\" (first at line %d)",
                    ld->path, line, f->key, ld->vals[idx].line);
    if (is_null(val)) {
        ld->vals[idx].line = line; /* keeps the default, still counts as set */
        return KE_OK;
    }
    if (f->type == KE_CONFIG_STRLIST) {
        if (val->type != YAML_SEQUENCE_NODE)
            return fail(ld, KE_EINVAL, "%s:%d: key \"%s\": expected %s, got %s", ld->path,
                        line, f->key, type_noun(f->type), describe(val, got, sizeof got));
        rc = set_from_seq(ld, doc, val, f->key, &nv);
    } else {
        if (val->type != YAML_SCALAR_NODE)
            return fail(ld, KE_EINVAL, "%s:%d: key \"%s\": expected %s, got %s", ld->path,
                        line, f->key, type_noun(f->type), describe(val, got, sizeof got));
        const char *s = scalar_text(ld, val, line, f->key);
        if (s == NULL)
            return KE_EINVAL;
        rc = val_from_text(f, s, &nv, why, sizeof why);
        if (rc == KE_EINVAL)
            rc = fail(ld, rc, "%s:%d: key \"%s\": %s", ld->path, line, f->key, why);
        else if (rc != KE_OK)
            rc = fail(ld, rc, "%s: out of memory", ld->path);
    }
    if (rc != KE_OK) {
        val_clear(f->type, &nv);
        return rc;
    }
    ld_set(ld, idx, &nv, line);
    return KE_OK;
}

/* walk_mapping applies every pair of `map`, whose keys sit under `prefix`
 * ("" at the top). Recursion depth is bounded by the schema: it only
 * descends into keys that are prefixes of schema keys. */
static int walk_mapping(cfg_load *ld, yaml_document_t *doc, const yaml_node_t *map,
                        const char *prefix)
{
    char got[80];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        const yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        int line = node_line(kn);
        if (kn->type != YAML_SCALAR_NODE)
            return fail(ld, KE_EINVAL, "%s:%d: %s%s%skeys must be strings, got %s",
                        ld->path, line, *prefix ? "under \"" : "", prefix,
                        *prefix ? "\": " : "", describe(kn, got, sizeof got));

        const char *name = (const char *)kn->data.scalar.value;
        char key[KE_CONFIG_KEY_MAX];
        int kl = snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", name);
        if (kl < 0 || (size_t)kl >= sizeof key || strlen(name) != kn->data.scalar.length)
            return fail(ld, KE_EINVAL, "%s:%d: unknown key \"%s...\"", ld->path, line, key);

        /* duplicates inside this mapping, including whole sub-mappings */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            const yaml_node_t *qk = yaml_document_get_node(doc, q->key);
            if (qk->type == YAML_SCALAR_NODE && qk->data.scalar.length == kn->data.scalar.length &&
                memcmp(qk->data.scalar.value, name, kn->data.scalar.length) == 0)
                return fail(ld, KE_EINVAL, "%s:%d: duplicate key \"%s\" (first at line %d)",
                            ld->path, line, key, node_line(qk));
        }

        int idx = find_field(ld, key);
        int rc;
        if (idx >= 0) {
            rc = set_from_node(ld, doc, (size_t)idx, vn, line);
        } else if (is_prefix(ld, key)) {
            if (is_null(vn))
                continue;
            if (vn->type != YAML_MAPPING_NODE)
                return fail(ld, KE_EINVAL, "%s:%d: key \"%s\": expected a mapping, got %s",
                            ld->path, line, key, describe(vn, got, sizeof got));
            rc = walk_mapping(ld, doc, vn, key);
        } else {
            return fail(ld, KE_EINVAL, "%s:%d: unknown key \"%s\"", ld->path, line, key);
        }
        if (rc != KE_OK)
            return rc;
    }
    return KE_OK;
}

/* yaml_fail reports a libyaml error as "file:line:col: YAML syntax error:
 * problem (context at line N)". */
static int yaml_fail(cfg_load *ld, const yaml_parser_t *parser, const char *buf)
{
    if (parser->error == YAML_MEMORY_ERROR)
        return fail(ld, KE_ENOMEM, "%s: out of memory while parsing YAML", ld->path);
    const char *problem = parser->problem ? parser->problem : "unknown error";
    size_t line, col;
    if (parser->error == YAML_READER_ERROR) {
        /* the reader gives only a byte offset (e.g. invalid UTF-8) */
        line = 1;
        col = 1;
        for (size_t i = 0; i < parser->problem_offset && buf[i] != '\0'; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
    } else {
        line = parser->problem_mark.line + 1;
        col = parser->problem_mark.column + 1;
    }
    if (parser->context != NULL)
        return fail(ld, KE_EINVAL, "%s:%zu:%zu: YAML syntax error: %s (%s at line %zu)",
                    ld->path, line, col, problem, parser->context,
                    parser->context_mark.line + 1);
    return fail(ld, KE_EINVAL, "%s:%zu:%zu: YAML syntax error: %s", ld->path, line, col,
                problem);
}

/* read_file reads at most KE_CONFIG_FILE_MAX bytes of `path`, NUL-terminated
 * into a malloc'd *out. */
static int read_file(cfg_load *ld, char **out, size_t *outlen)
{
    int rc = KE_OK;
    char *buf = NULL;
    FILE *fp = fopen(ld->path, "rb");
    if (fp == NULL)
        return fail(ld, KE_EIO, "%s: cannot open: %s", ld->path, strerror(errno));
    if ((buf = malloc(KE_CONFIG_FILE_MAX + 2)) == NULL) {
        rc = fail(ld, KE_ENOMEM, "%s: out of memory", ld->path);
        goto out;
    }
    size_t len = fread(buf, 1, KE_CONFIG_FILE_MAX + 1, fp);
    if (ferror(fp)) {
        rc = fail(ld, KE_EIO, "%s: cannot read: %s", ld->path, strerror(errno));
        goto out;
    }
    if (len > KE_CONFIG_FILE_MAX) {
        rc = fail(ld, KE_EIO, "%s: file larger than %d bytes", ld->path, KE_CONFIG_FILE_MAX);
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
out:
    free(buf);
    fclose(fp);
    return rc;
}

/* load_yaml applies the file at `path` to the temporaries. */
static int load_yaml(cfg_load *ld, const char *path)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_parser = false, have_doc = false;
    char *buf = NULL;
    size_t len = 0;
    char got[80];

    ld->path = path;
    int rc = read_file(ld, &buf, &len);
    if (rc != KE_OK)
        goto out;
    if (!yaml_parser_initialize(&parser)) {
        rc = fail(ld, KE_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_fail(ld, &parser, buf);
        goto out;
    }
    have_doc = true;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL)
        goto out; /* empty file: defaults only */
    if (root->type != YAML_MAPPING_NODE && !is_null(root)) {
        rc = fail(ld, KE_EINVAL, "%s:%d: expected a mapping of keys at the top level, got %s",
                  path, node_line(root), describe(root, got, sizeof got));
        goto out;
    }
    if (root->type == YAML_MAPPING_NODE && (rc = walk_mapping(ld, &doc, root, "")) != KE_OK)
        goto out;

    /* a second document ("---") would be silently ignored: refuse it */
    yaml_document_delete(&doc);
    have_doc = false;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_fail(ld, &parser, buf);
        goto out;
    }
    have_doc = true;
    if ((root = yaml_document_get_root_node(&doc)) != NULL)
        rc = fail(ld, KE_EINVAL, "%s:%d: more than one YAML document", path, node_line(root));
out:
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    free(buf);
    return rc;
}

/* ---- public -------------------------------------------------------------- */

int ke_config_load_file(const ke_config_field *fields, size_t n, void *target,
                        const char *path, char *err, size_t errlen)
{
    cfg_load ld;
    int rc = ld_init(&ld, fields, n, target, err, errlen);
    if (rc != KE_OK)
        return rc;
    if (path == NULL)
        rc = fail(&ld, KE_EINVAL, "config: no file name");
    else
        rc = load_yaml(&ld, path);
    if (rc == KE_OK)
        ld_commit(&ld, target);
    ld_free(&ld);
    return rc;
}

/* next_flag reads the flag at argv[*i] and its value, and advances *i past
 * both. Sets *kind, and *idx / *value for FLAG_FIELD and FLAG_CONFIG. */
static int next_flag(cfg_load *ld, int argc, char **argv, int *i, int *kind, int *idx,
                     const char **value)
{
    const char *arg = argv[*i];
    (*i)++;
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        *kind = FLAG_HELP;
        return KE_OK;
    }
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return fail(ld, KE_EINVAL, "unexpected argument \"%.64s\" (see --help)", arg);

    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    char key[KE_CONFIG_KEY_MAX];
    if (nlen >= sizeof key)
        return fail(ld, KE_EINVAL, "unknown flag --%.*s... (see --help)", 64, name);
    memcpy(key, name, nlen);
    key[nlen] = '\0';

    bool is_bool = false;
    if (strcmp(key, "config") == 0) {
        *kind = FLAG_CONFIG;
    } else if ((*idx = find_field(ld, key)) >= 0) {
        *kind = FLAG_FIELD;
        is_bool = ld->fields[*idx].type == KE_CONFIG_BOOL;
    } else {
        return fail(ld, KE_EINVAL, "unknown flag --%s (see --help)", key);
    }

    if (eq != NULL)
        *value = eq + 1;
    else if (is_bool)
        *value = "true";
    else if (*i < argc)
        *value = argv[(*i)++];
    else
        return fail(ld, KE_EINVAL, "flag --%s needs a value", key);
    if (strlen(*value) > KE_CONFIG_VALUE_MAX)
        return fail(ld, KE_EINVAL, "flag --%s: value longer than %d bytes", key,
                    KE_CONFIG_VALUE_MAX);
    return KE_OK;
}

int ke_config_parse_args(const ke_config_field *fields, size_t n, void *target,
                         int argc, char **argv, char *err, size_t errlen)
{
    cfg_load ld;
    const char *config = NULL, *value = NULL;
    int kind = FLAG_HELP, idx = -1;
    int rc = ld_init(&ld, fields, n, target, err, errlen);
    if (rc != KE_OK)
        return rc;

    /* pass 1: check every flag's name, find --help and --config */
    for (int i = 1; i < argc;) {
        if ((rc = next_flag(&ld, argc, argv, &i, &kind, &idx, &value)) != KE_OK)
            goto out;
        if (kind == FLAG_HELP) {
            const char *prog = argc > 0 && argv[0] != NULL ? argv[0] : "program";
            const char *slash = strrchr(prog, '/');
            ke_config_usage(fields, n, slash != NULL ? slash + 1 : prog, stdout);
            rc = KE_CONFIG_HELP;
            goto out;
        }
        if (kind == FLAG_CONFIG)
            config = value;
    }
    if (config != NULL && (rc = load_yaml(&ld, config)) != KE_OK)
        goto out;

    /* pass 2: flags override the file */
    for (int i = 1; i < argc;) {
        if ((rc = next_flag(&ld, argc, argv, &i, &kind, &idx, &value)) != KE_OK)
            goto out;
        if (kind != FLAG_FIELD)
            continue;
        cfg_val nv = { 0 };
        char why[160];
        rc = val_from_text(&fields[idx], value, &nv, why, sizeof why);
        if (rc == KE_EINVAL)
            rc = fail(&ld, rc, "flag --%s: %s", fields[idx].key, why);
        else if (rc != KE_OK)
            rc = fail(&ld, rc, "config: out of memory");
        if (rc != KE_OK) {
            val_clear(fields[idx].type, &nv);
            goto out;
        }
        ld_set(&ld, (size_t)idx, &nv, ld.vals[idx].line);
    }
    ld_commit(&ld, target);
out:
    ld_free(&ld);
    return rc;
}

void ke_config_usage(const ke_config_field *fields, size_t n, const char *prog,
                     FILE *out)
{
    enum { MAX_WIDTH = 40 };
    int width = (int)strlen("--config=FILE");
    for (size_t i = 0; i < n; i++) {
        int w = (int)(strlen(fields[i].key) + 3 + strlen(type_metavar(fields[i].type)));
        if (w > width)
            width = w < MAX_WIDTH ? w : MAX_WIDTH;
    }
    fprintf(out, "Usage: %s [--config FILE] [--KEY=VALUE ...]\n\n", prog);
    fprintf(out, "Settings come from the defaults, then the YAML file given by --config,\n"
                 "then flags. Every flag is also a YAML key; the dots are nested mappings.\n"
                 "A bare --KEY sets a BOOL to true.\n\n");
    fprintf(out, "  %-*s  %s\n", width, "--config=FILE", "YAML configuration file to load");
    fprintf(out, "  %-*s  %s\n", width, "--help", "print this help and exit");
    for (size_t i = 0; i < n; i++) {
        const ke_config_field *f = &fields[i];
        char flag[KE_CONFIG_KEY_MAX + 16];
        snprintf(flag, sizeof flag, "--%s=%s", f->key, type_metavar(f->type));
        fprintf(out, "  %-*s  %s", width, flag, f->help != NULL ? f->help : "");
        if (f->def != NULL && (f->type == KE_CONFIG_STRING || f->type == KE_CONFIG_STRLIST))
            fprintf(out, " (default \"%s\")", f->def);
        else if (f->def != NULL)
            fprintf(out, " (default %s)", f->def);
        fputc('\n', out);
    }
}

void ke_config_free(const ke_config_field *fields, size_t n, void *target)
{
    if (target == NULL || fields == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        void *slot = (char *)target + fields[i].offset;
        if (fields[i].type == KE_CONFIG_STRING) {
            free(*(char **)slot);
            *(char **)slot = NULL;
        } else if (fields[i].type == KE_CONFIG_STRLIST) {
            strlist_clear((ke_config_strlist *)slot);
        }
    }
}
