/*
 * yamljson.c — YAML and JSON manifests to jansson values, and jansson
 * values to YAML (kectl_yaml.h has the rules and the contracts).
 *
 * YAML is read with libyaml's event parser rather than its document loader:
 * only events still tell a plain `123` from an explicitly tagged
 * `!!str 123`, and building values from events lets an anchor be known
 * only once its node is complete, so a self-referencing alias is an
 * "unknown anchor" error instead of an endless expansion. One stack frame
 * per open mapping or sequence; a mapping frame holds the pending key.
 */
#include "kectl_yaml.h"

#include "ke_err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define TAG_PREFIX "tag:yaml.org,2002:"
/* plain scalars longer than this are never numbers */
#define NUMBER_TEXT_MAX 128

/* ---- plain scalar resolution ---- */

typedef enum {
    RES_STRING = 0,
    RES_NULL,
    RES_BOOL,
    RES_INT,
    RES_FLOAT,
    RES_NONFINITE, /* .inf, .nan: a float JSON cannot hold */
} res_kind;

static int word_in(const char *s, size_t len, const char *const *words)
{
    for (; *words; words++)
        if (strlen(*words) == len && memcmp(*words, s, len) == 0)
            return 1;
    return 0;
}

static const char *const null_words[] = {"~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", "yes", "Yes",
                                         "YES",  "on",   "On",   "ON",  NULL};
static const char *const false_words[] = {"false", "False", "FALSE", "no", "No",
                                          "NO",    "off",   "Off",   "OFF", NULL};
static const char *const nonfinite_words[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                              "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                              ".NaN",  ".NAN",  NULL};

/* parse_int reads an integer the way Go's strconv.ParseInt(s, 0, 64) does
 * (sign, then 0x / 0o / 0b / leading-0 octal / decimal). Sets *neg and
 * *mag; returns 0 or -1 when the text is not such an integer or overflows
 * uint64. */
static int parse_int(const char *s, int *neg, unsigned long long *mag)
{
    *neg = 0;
    if (*s == '+' || *s == '-')
        *neg = *s++ == '-';
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    } else if (s[0] == '0' && (s[1] == 'o' || s[1] == 'O')) {
        base = 8;
        s += 2;
    } else if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) {
        base = 2;
        s += 2;
    } else if (s[0] == '0' && s[1] != '\0') {
        base = 8;
        s += 1;
    }
    if (*s == '\0')
        return -1;
    for (const char *p = s; *p; p++) {
        int d = (*p >= '0' && *p <= '9')   ? *p - '0'
                : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                                           : 99;
        if (d >= base)
            return -1;
    }
    errno = 0;
    char *end = NULL;
    *mag = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0')
        return -1;
    return 0;
}

/* is_float_text matches [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int is_float_text(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    size_t lead = 0, frac = 0;
    while (*s >= '0' && *s <= '9') {
        s++;
        lead++;
    }
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            s++;
            frac++;
        }
        if (lead == 0 && frac == 0)
            return 0;
    } else if (lead == 0) {
        return 0;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        size_t exp = 0;
        while (*s >= '0' && *s <= '9') {
            s++;
            exp++;
        }
        if (exp == 0)
            return 0;
    }
    return *s == '\0';
}

/* resolve_plain classifies a plain scalar and, when out is not NULL and the
 * kind is not RES_NONFINITE, makes its JSON value (NULL on ENOMEM). */
static res_kind resolve_plain(const char *s, size_t len, json_t **out)
{
    if (out)
        *out = NULL;
    if (len == 0 || word_in(s, len, null_words)) {
        if (out)
            *out = json_null();
        return RES_NULL;
    }
    if (word_in(s, len, true_words) || word_in(s, len, false_words)) {
        if (out)
            *out = json_boolean(word_in(s, len, true_words));
        return RES_BOOL;
    }
    if (word_in(s, len, nonfinite_words))
        return RES_NONFINITE;
    if (!strchr("+-.0123456789", s[0]) || len > NUMBER_TEXT_MAX)
        goto string;
    char num[NUMBER_TEXT_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0')
            goto string;
        if (s[i] != '_')
            num[n++] = s[i];
    }
    num[n] = '\0';
    int neg;
    unsigned long long mag;
    if (parse_int(num, &neg, &mag) == 0) {
        if (!neg && mag <= (unsigned long long)INT64_MAX) {
            if (out)
                *out = json_integer((json_int_t)mag);
            return RES_INT;
        }
        if (neg && mag <= (unsigned long long)INT64_MAX + 1ull) {
            if (out)
                *out = json_integer(mag == (unsigned long long)INT64_MAX + 1ull
                                        ? (json_int_t)INT64_MIN
                                        : -(json_int_t)mag);
            return RES_INT;
        }
        if (!neg) { /* beyond int64: Go takes it as uint64, jansson only as a real */
            if (out)
                *out = json_real((double)mag);
            return RES_INT;
        }
        /* a negative beyond int64 is tried as a float, as Go does */
    }
    if (is_float_text(num)) {
        errno = 0;
        double d = strtod(num, NULL);
        if (errno == ERANGE && (d > 1.0 || d < -1.0))
            goto string; /* 1e999: Go's ParseFloat fails, the scalar stays a string */
        if (out) {
            /* integral values go out as integers, as Go's JSON encoder writes them */
            if (d > -9.2e18 && d < 9.2e18 && d == (double)(long long)d)
                *out = json_integer((json_int_t)(long long)d);
            else
                *out = json_real(d);
        }
        return RES_FLOAT;
    }
string:
    if (out)
        *out = json_stringn(s, len);
    return RES_STRING;
}

int kectl_yaml_plain_is_string(const char *s, size_t len)
{
    return resolve_plain(s, len, NULL) == RES_STRING;
}

/* ---- YAML to JSON ---- */

typedef struct yframe {
    json_t *v;             /* the object or array being filled (owned) */
    int is_map;
    char *key;             /* mapping: pending key (malloc'd); NULL while a key is expected */
    int key_is_merge;      /* the pending key is the merge key << */
    yaml_mark_t key_mark;  /* where the pending key starts */
    json_t *merged;        /* mapping: keys that came from a merge; later keys override them */
    char *anchor;          /* anchor to register when the node ends, or NULL */
    size_t nodes_at_start; /* ld->nodes when the node started: its weight at the end */
} yframe;

typedef struct yanchor {
    char *name;
    json_t *v;
    size_t weight; /* values in it, counting nested expansions */
} yanchor;

typedef struct yload {
    const char *name;
    char *err;
    size_t errlen;
    yframe stack[KECTL_YAML_MAX_DEPTH];
    size_t depth;
    yanchor *anchors; /* of the current document */
    size_t n_anchors, cap_anchors;
    size_t nodes; /* values produced so far, the bound of KECTL_YAML_MAX_NODES */
    json_t *root; /* the current document's root, once complete */
} yload;

static int yfail(yload *ld, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int yfail(yload *ld, yaml_mark_t m, const char *fmt, ...)
{
    int n = snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->name, m.line + 1, m.column + 1);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return KE_EINVAL;
}

/* parser_fail reports libyaml's own error with its position. */
static int parser_fail(yload *ld, const yaml_parser_t *p, const char *buf, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR) {
        snprintf(ld->err, ld->errlen, "%s: out of memory while parsing YAML", ld->name);
        return KE_ENOMEM;
    }
    yaml_mark_t m = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* the reader (e.g. invalid UTF-8) gives only a byte offset */
        memset(&m, 0, sizeof(m));
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (buf[i] == '\n') {
                m.line++;
                m.column = 0;
            } else {
                m.column++;
            }
        }
    }
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->context)
        return yfail(ld, m, "%s (%s at line %zu)", problem, p->context,
                     p->context_mark.line + 1);
    return yfail(ld, m, "%s", problem);
}

static void anchors_clear(yload *ld)
{
    for (size_t i = 0; i < ld->n_anchors; i++) {
        free(ld->anchors[i].name);
        json_decref(ld->anchors[i].v);
    }
    ld->n_anchors = 0;
}

/* anchor_add registers `name` for `v` (a reference is taken). A later
 * anchor of the same name hides the earlier one, as YAML says. */
static int anchor_add(yload *ld, const char *name, json_t *v, size_t weight)
{
    if (ld->n_anchors == ld->cap_anchors) {
        size_t cap = ld->cap_anchors ? ld->cap_anchors * 2 : 16;
        yanchor *a = realloc(ld->anchors, cap * sizeof(*a));
        if (!a)
            return KE_ENOMEM;
        ld->anchors = a;
        ld->cap_anchors = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return KE_ENOMEM;
    ld->anchors[ld->n_anchors++] = (yanchor){copy, json_incref(v), weight};
    return 0;
}

static const yanchor *anchor_find(const yload *ld, const char *name)
{
    for (size_t i = ld->n_anchors; i > 0; i--)
        if (strcmp(ld->anchors[i - 1].name, name) == 0)
            return &ld->anchors[i - 1];
    return NULL;
}

static int count_nodes(yload *ld, size_t n, yaml_mark_t m)
{
    if (n > KECTL_YAML_MAX_NODES - ld->nodes)
        return yfail(ld, m, "more than %u values (counting alias expansions)",
                     KECTL_YAML_MAX_NODES);
    ld->nodes += n;
    return 0;
}

static yframe *top(yload *ld)
{
    return ld->depth ? &ld->stack[ld->depth - 1] : NULL;
}

static int expecting_key(yload *ld)
{
    yframe *f = top(ld);
    return f && f->is_map && f->key == NULL;
}

/* map_set stores v (stolen) under key in mapping frame f. */
static int map_set(yload *ld, yframe *f, const char *key, json_t *v, yaml_mark_t m)
{
    if (json_object_get(f->v, key)) {
        if (!f->merged || !json_object_get(f->merged, key)) {
            json_decref(v);
            return yfail(ld, m, "mapping key \"%s\" already defined", key);
        }
        json_object_del(f->merged, key); /* an explicit key overrides a merged one */
    }
    return json_object_set_new(f->v, key, v) == 0 ? 0 : KE_ENOMEM;
}

/* merge_one adds the keys of src that f's mapping does not have yet. */
static int merge_one(yload *ld, yframe *f, const json_t *src, yaml_mark_t m)
{
    if (!json_is_object(src))
        return yfail(ld, m, "map merge requires a map or a sequence of maps as the value");
    if (!f->merged && !(f->merged = json_object()))
        return KE_ENOMEM;
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)src, k, val) {
        if (json_object_get(f->v, k))
            continue;
        if (json_object_set_new(f->v, k, json_deep_copy(val)) != 0 ||
            json_object_set_new(f->merged, k, json_true()) != 0)
            return KE_ENOMEM;
    }
    return 0;
}

/* add_value hands a complete value (stolen) to its parent, or makes it the
 * document's root. */
static int add_value(yload *ld, json_t *v, yaml_mark_t m)
{
    if (!v)
        return KE_ENOMEM;
    yframe *f = top(ld);
    if (!f) {
        json_decref(ld->root);
        ld->root = v;
        return 0;
    }
    if (!f->is_map)
        return json_array_append_new(f->v, v) == 0 ? 0 : KE_ENOMEM;
    int rc;
    if (f->key_is_merge) {
        rc = 0;
        if (json_is_array(v)) {
            size_t i;
            json_t *item;
            json_array_foreach(v, i, item) {
                if (rc == 0)
                    rc = merge_one(ld, f, item, m);
            }
        } else {
            rc = merge_one(ld, f, v, m);
        }
        json_decref(v);
    } else {
        rc = map_set(ld, f, f->key, v, f->key_mark);
    }
    free(f->key);
    f->key = NULL;
    f->key_is_merge = 0;
    return rc;
}

static int tag_is(const char *tag, const char *name)
{
    size_t n = sizeof(TAG_PREFIX) - 1;
    return strncmp(tag, TAG_PREFIX, n) == 0 && strcmp(tag + n, name) == 0;
}

/* scalar_value makes the JSON value of a scalar event (into *out). */
static int scalar_value(yload *ld, const yaml_event_t *ev, json_t **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    int plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (tag && strcmp(tag, "!") != 0) {
        if (tag_is(tag, "str") || tag_is(tag, "binary") || tag_is(tag, "timestamp")) {
            *out = json_stringn(s, len);
            return *out ? 0 : KE_ENOMEM;
        }
        static const struct {
            const char *name;
            res_kind kind;
        } typed[] = {{"null", RES_NULL}, {"bool", RES_BOOL}, {"int", RES_INT}, {"float", RES_FLOAT}};
        for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
            if (!tag_is(tag, typed[i].name))
                continue;
            res_kind k = resolve_plain(s, len, out);
            if (k == typed[i].kind || (typed[i].kind == RES_FLOAT && k == RES_INT))
                return *out ? 0 : KE_ENOMEM;
            json_decref(*out);
            *out = NULL;
            return yfail(ld, ev->start_mark, "cannot read \"%.*s\" as !!%s", (int)(len > 64 ? 64 : len),
                         s, typed[i].name);
        }
        /* another tag (a local !thing): read the scalar as if untagged */
    } else if (!ev->data.scalar.plain_implicit) {
        plain = 0;
    }
    if (!plain) {
        *out = json_stringn(s, len);
        return *out ? 0 : KE_ENOMEM;
    }
    if (resolve_plain(s, len, out) == RES_NONFINITE)
        return yfail(ld, ev->start_mark, "%.*s cannot be represented in JSON", (int)len, s);
    return *out ? 0 : KE_ENOMEM;
}

static int on_scalar(yload *ld, const yaml_event_t *ev)
{
    int rc = count_nodes(ld, 1, ev->start_mark);
    if (rc != 0)
        return rc;
    const char *anchor = (const char *)ev->data.scalar.anchor;
    if (expecting_key(ld)) {
        yframe *f = top(ld);
        const char *s = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        if (memchr(s, '\0', len))
            return yfail(ld, ev->start_mark, "a mapping key contains a NUL character");
        if (!(f->key = strndup(s, len)))
            return KE_ENOMEM;
        f->key_mark = ev->start_mark;
        f->key_is_merge = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                          ev->data.scalar.plain_implicit && strcmp(f->key, "<<") == 0;
        if (anchor) {
            json_t *k = json_string(f->key);
            rc = k ? anchor_add(ld, anchor, k, 1) : KE_ENOMEM;
            json_decref(k);
        }
        return rc;
    }
    json_t *v = NULL;
    if ((rc = scalar_value(ld, ev, &v)) != 0)
        return rc;
    if (anchor && (rc = anchor_add(ld, anchor, v, 1)) != 0) {
        json_decref(v);
        return rc;
    }
    return add_value(ld, v, ev->start_mark);
}

static int on_alias(yload *ld, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const yanchor *a = anchor_find(ld, name);
    if (!a)
        return yfail(ld, ev->start_mark, "unknown anchor '%s' referenced", name);
    int rc = count_nodes(ld, a->weight, ev->start_mark);
    if (rc != 0)
        return rc;
    if (expecting_key(ld)) {
        yframe *f = top(ld);
        if (!json_is_string(a->v))
            return yfail(ld, ev->start_mark, "alias '%s' used as a mapping key is not a string",
                         name);
        if (!(f->key = strdup(json_string_value(a->v))))
            return KE_ENOMEM;
        f->key_mark = ev->start_mark;
        return 0;
    }
    /* a copy, so that changing one place (apply sets metadata.namespace)
     * does not change the others */
    return add_value(ld, json_deep_copy(a->v), ev->start_mark);
}

static int on_start(yload *ld, const yaml_event_t *ev, int is_map)
{
    if (expecting_key(ld))
        return yfail(ld, ev->start_mark, "a mapping key must be a scalar, not a %s",
                     is_map ? "mapping" : "sequence");
    if (ld->depth == KECTL_YAML_MAX_DEPTH)
        return yfail(ld, ev->start_mark, "nested deeper than %d levels", KECTL_YAML_MAX_DEPTH);
    int rc = count_nodes(ld, 1, ev->start_mark);
    if (rc != 0)
        return rc;
    const yaml_char_t *anchor =
        is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    yframe *f = &ld->stack[ld->depth];
    memset(f, 0, sizeof(*f));
    f->is_map = is_map;
    f->nodes_at_start = ld->nodes - 1;
    f->v = is_map ? json_object() : json_array();
    if (anchor && !(f->anchor = strdup((const char *)anchor))) {
        json_decref(f->v);
        f->v = NULL;
    }
    if (!f->v)
        return KE_ENOMEM;
    ld->depth++;
    return 0;
}

static void frame_clear(yframe *f)
{
    json_decref(f->v);
    json_decref(f->merged);
    free(f->key);
    free(f->anchor);
    memset(f, 0, sizeof(*f));
}

static int on_end(yload *ld, const yaml_event_t *ev)
{
    yframe f = ld->stack[--ld->depth];
    memset(&ld->stack[ld->depth], 0, sizeof(yframe));
    json_t *v = f.v;
    f.v = NULL;
    int rc = 0;
    if (f.anchor)
        rc = anchor_add(ld, f.anchor, v, ld->nodes - f.nodes_at_start);
    frame_clear(&f);
    if (rc != 0) {
        json_decref(v);
        return rc;
    }
    return add_value(ld, v, ev->start_mark);
}

int kectl_yaml_to_json(const char *name, const char *buf, size_t len, json_t **docs, char *err,
                       size_t errlen)
{
    *docs = NULL;
    if (errlen)
        err[0] = '\0';
    yload *ld = calloc(1, sizeof(*ld));
    json_t *out = json_array();
    yaml_parser_t p;
    int parser_ok = 0, rc = 0;
    if (!ld || !out) {
        rc = KE_ENOMEM;
        goto out;
    }
    ld->name = name;
    ld->err = err;
    ld->errlen = errlen;
    if (!yaml_parser_initialize(&p)) {
        rc = KE_ENOMEM;
        goto out;
    }
    parser_ok = 1;
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    for (int done = 0; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = parser_fail(ld, &p, buf, len);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_END_EVENT:
            if (ld->root && !json_is_null(ld->root))
                rc = json_array_append(out, ld->root) == 0 ? 0 : KE_ENOMEM;
            json_decref(ld->root);
            ld->root = NULL;
            anchors_clear(ld); /* anchors are per document */
            break;
        case YAML_SCALAR_EVENT:
            rc = on_scalar(ld, &ev);
            break;
        case YAML_ALIAS_EVENT:
            rc = on_alias(ld, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = on_start(ld, &ev, 0);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = on_start(ld, &ev, 1);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = on_end(ld, &ev);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    if (rc == 0) {
        *docs = out;
        out = NULL;
    } else if (rc == KE_ENOMEM && errlen && !err[0]) {
        snprintf(err, errlen, "%s: out of memory", name);
    }
out:
    if (parser_ok)
        yaml_parser_delete(&p);
    if (ld) {
        while (ld->depth)
            frame_clear(&ld->stack[--ld->depth]);
        anchors_clear(ld);
        free(ld->anchors);
        json_decref(ld->root);
        free(ld);
    }
    json_decref(out);
    return rc;
}

/* ---- JSON stream to JSON values ---- */

int kectl_json_to_docs(const char *name, const char *buf, size_t len, json_t **docs, char *err,
                       size_t errlen)
{
    *docs = NULL;
    if (errlen)
        err[0] = '\0';
    json_t *out = json_array();
    if (!out)
        return KE_ENOMEM;
    size_t off = 0, line = 1, col = 1; /* position of buf[off] */
    for (;;) {
        while (off < len && strchr(" \t\r\n", buf[off]) && buf[off] != '\0') {
            if (buf[off] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
            off++;
        }
        if (off == len)
            break;
        json_error_t je;
        json_t *v = json_loadb(buf + off, len - off,
                               JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES,
                               &je);
        if (!v) {
            /* jansson counts from the start of the slice it was given */
            size_t l = je.line > 0 ? line + (size_t)je.line - 1 : line;
            size_t c = je.column > 0 ? (size_t)je.column : 1;
            if (je.line == 1)
                c += col - 1;
            snprintf(err, errlen, "%s:%zu:%zu: %s", name, l, c, je.text);
            json_decref(out);
            return KE_EINVAL;
        }
        if (json_array_append_new(out, v) != 0) {
            json_decref(out);
            return KE_ENOMEM;
        }
        size_t used = (size_t)je.position;
        if (used == 0 || used > len - off)
            used = len - off;
        for (size_t i = off; i < off + used; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
                col++;
            }
        }
        off += used;
    }
    *docs = out;
    return 0;
}

/* ---- JSON to YAML ---- */

/* unprintable_at tells whether s[i] starts a non-ASCII character YAML does
 * not allow raw, or reads as a line break: C1 controls (NEL among them),
 * LS, PS, the BOM, U+FFFE/U+FFFF. Returns its byte length (its code point
 * in *cp), or 0. */
static size_t unprintable_at(const char *str, size_t len, size_t i, unsigned *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f) {
        *cp = s[i + 1];
        return 2;
    }
    if (i + 2 < len && ((s[i] == 0xe2 && s[i + 1] == 0x80 && (s[i + 2] & 0xfe) == 0xa8) ||
                        (s[i] == 0xef && s[i + 1] == 0xbb && s[i + 2] == 0xbf) ||
                        (s[i] == 0xef && s[i + 1] == 0xbf && (s[i + 2] & 0xfe) == 0xbe))) {
        *cp = ((unsigned)(s[i] & 0x0f) << 12) | ((unsigned)(s[i + 1] & 0x3f) << 6) |
              (s[i + 2] & 0x3f);
        return 3;
    }
    return 0;
}

/* needs_quotes tells whether a string cannot be written as a plain
 * scalar: it would read back as another type, or holds characters that
 * mean something in YAML where they stand. */
static int needs_quotes(const char *s, size_t len)
{
    if (len == 0 || !kectl_yaml_plain_is_string(s, len))
        return 1;
    static const char *const yaml11_words[] = {"y", "Y", "n", "N", "<<", "=", NULL};
    if (word_in(s, len, yaml11_words))
        return 1;
    if (strchr("?:,[]{}#&*!|>'\"%@`", s[0]))
        return 1;
    if (s[0] == '-' && (len == 1 || s[1] == ' ' || (len >= 3 && memcmp(s, "---", 3) == 0)))
        return 1;
    if (len >= 3 && memcmp(s, "...", 3) == 0)
        return 1;
    if (s[0] == ' ' || s[len - 1] == ' ' || s[len - 1] == ':')
        return 1;
    /* timestamps (kubectl quotes creationTimestamp) and other dates */
    if (len >= 5 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
        s[2] <= '9' && s[3] >= '0' && s[3] <= '9' && s[4] == '-')
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
        unsigned cp;
        if (unprintable_at(s, len, i, &cp))
            return 1;
        if (c == ':' && i + 1 < len && s[i + 1] == ' ')
            return 1;
        if (c == '#' && i > 0 && s[i - 1] == ' ')
            return 1;
    }
    return 0;
}

static void emit_string(FILE *out, const char *s, size_t len)
{
    if (!needs_quotes(s, len)) {
        fwrite(s, 1, len, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp;
        size_t n = unprintable_at(s, len, i, &cp);
        if (n) {
            fprintf(out, "\\u%04X", cp);
            i += n - 1;
            continue;
        }
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\x%02x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
}

static void emit_scalar(FILE *out, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: fputs("{}", out); break;
    case JSON_ARRAY: fputs("[]", out); break;
    case JSON_STRING: emit_string(out, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        fputs(s ? s : "0", out);
        free(s);
        break;
    }
    case JSON_TRUE: fputs("true", out); break;
    case JSON_FALSE: fputs("false", out); break;
    case JSON_NULL: fputs("null", out); break;
    }
}

static int is_block(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v) > 0) ||
           (json_is_array(v) && json_array_size(v) > 0);
}

static void indent_to(FILE *out, int n)
{
    for (int i = 0; i < n; i++)
        fputc(' ', out);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int emit_seq(FILE *out, const json_t *a, int indent, int inline_first);

/* emit_map writes a non-empty mapping at `indent`; with inline_first the
 * first key follows what is already on the line ("- "). */
static int emit_map(FILE *out, const json_t *o, int indent, int inline_first)
{
    size_t n = json_object_size(o), i = 0;
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return KE_ENOMEM;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_key);
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        v = json_object_get(o, keys[i]);
        if (i > 0 || !inline_first)
            indent_to(out, indent);
        emit_string(out, keys[i], strlen(keys[i]));
        fputc(':', out);
        if (json_is_object(v) && is_block(v)) {
            fputc('\n', out);
            rc = emit_map(out, v, indent + 2, 0);
        } else if (json_is_array(v) && is_block(v)) {
            fputc('\n', out);
            rc = emit_seq(out, v, indent, 0);
        } else {
            fputc(' ', out);
            emit_scalar(out, v);
            fputc('\n', out);
        }
    }
    free(keys);
    return rc;
}

static int emit_seq(FILE *out, const json_t *a, int indent, int inline_first)
{
    size_t i;
    json_t *v;
    int rc = 0;
    json_array_foreach(a, i, v) {
        if (rc != 0)
            break;
        if (i > 0 || !inline_first)
            indent_to(out, indent);
        fputs("- ", out);
        if (json_is_object(v) && is_block(v)) {
            rc = emit_map(out, v, indent + 2, 1);
        } else if (json_is_array(v) && is_block(v)) {
            rc = emit_seq(out, v, indent + 2, 1);
        } else {
            emit_scalar(out, v);
            fputc('\n', out);
        }
    }
    return rc;
}

int kectl_yaml_emit(FILE *out, const json_t *v)
{
    int rc = 0;
    if (json_is_object(v) && is_block(v)) {
        rc = emit_map(out, v, 0, 0);
    } else if (json_is_array(v) && is_block(v)) {
        rc = emit_seq(out, v, 0, 0);
    } else {
        emit_scalar(out, v);
        fputc('\n', out);
    }
    if (rc == 0 && ferror(out))
        rc = KE_EIO;
    return rc;
}
