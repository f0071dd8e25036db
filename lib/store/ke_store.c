/*
 * ke_store.c — see ke_store.h.
 *
 * Map: names and small helpers (UUID, timestamps, revisions, name rules),
 * then selectors (parse into a `selector`, match against an object), then
 * object checks and keys, then open/close and the schema, then the write
 * path (one IMMEDIATE transaction per change: the object row, its event row
 * and any automatic compaction), then the calls (create, update,
 * update_status, delete, get), lists and their pages (a merge of the
 * current rows with the history, to read an older revision), compact, and
 * last the watches.
 *
 * Locks: `mu` guards the connection and the revision counters; `wmu` guards
 * the watch list and the dispatcher's state. Order is mu then wmu (a writer
 * publishes its revision under wmu while still holding mu); the dispatcher
 * never holds wmu while taking mu, and runs callbacks holding neither.
 *
 * Watches: the dispatcher thread reads the events table itself, in batches
 * starting after the furthest-behind watch, and hands each batch to every
 * watch in turn; a watch skips what it has already seen. History and live
 * changes are therefore the same path, which is what makes "no gap, no
 * duplicate" hold: an event is on disk before its revision is published.
 * Only the dispatcher unlinks watches (at the top of its loop, between
 * batches), so it can walk the list without a lock while a callback runs.
 *
 * Encryption at rest (ke_store_set_crypt): every text of an encrypted kind
 * goes through text_seal on its way into a row (write_change, the one
 * writer, and re-encryption) and every stored text through text_open on
 * its way out (row_load, the list scan, event_state, batch_read), so the
 * rest of this file sees plaintext JSON only. Whole objects are sealed, as
 * Kubernetes does: metadata (annotations) and stringData carry secrets too.
 */
#include "ke_store.h"

#include "ke_crypt.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_sqlite.h"
#include "ke_time.h"
#include "ke_watchdog.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LOG_MOD "store"
/* Events the dispatcher reads per batch, and the JSON bytes a batch holds
 * before it stops reading (at least one event is always read). */
#define BATCH_EVENTS 256
#define BATCH_BYTES (8u * 1024 * 1024)
/* Field selector values (after unescaping) and label keys are cut here. */
#define FIELD_VALUE_MAX 1024
#define LABEL_KEY_MAX (253 + 1 + 63)
#define LABEL_VALUE_MAX 63
/* Dispatcher back-off after a failed read of the events table. */
#define DISPATCH_RETRY_MS 1000
/* The additional data authenticated with a sealed text: "kind/ns/name". */
#define AAD_MAX (KE_STORE_KIND_MAX + KE_STORE_NS_MAX + KE_STORE_NAME_MAX + 3)

/* ---- small helpers ------------------------------------------------------ */

const char *ke_store_event_name(int type)
{
    switch (type) {
    case KE_STORE_ADDED: return "ADDED";
    case KE_STORE_MODIFIED: return "MODIFIED";
    case KE_STORE_DELETED: return "DELETED";
    case KE_STORE_GONE: return "GONE";
    }
    return "UNKNOWN";
}

static int type_parse(const char *t)
{
    if (t && strcmp(t, "ADDED") == 0)
        return KE_STORE_ADDED;
    if (t && strcmp(t, "MODIFIED") == 0)
        return KE_STORE_MODIFIED;
    if (t && strcmp(t, "DELETED") == 0)
        return KE_STORE_DELETED;
    return 0;
}

/* fail: KE_EINVAL with the reason (ke_err_why). */
#define fail(why, len, ...) ke_err_why(KE_EINVAL, why, len, __VA_ARGS__)

static int uuid_v4(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return KE_EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

static void rfc3339_now(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* rev_parse reads a decimal revision ("1".."18446744073709551615").
 * Returns 0 or KE_EINVAL. */
static int rev_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s)
        return KE_EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return KE_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return KE_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int set_rv(json_t *obj, uint64_t rev)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, rev);
    json_t *meta = json_object_get(obj, "metadata");
    return json_object_set_new(meta, "resourceVersion", json_string(buf)) == 0 ? 0 : KE_ENOMEM;
}

/* set_or_del sets obj[key] = v (a new reference is taken), or removes the
 * key when v is NULL. Returns 0 or KE_ENOMEM. */
static int set_or_del(json_t *obj, const char *key, json_t *v)
{
    if (!v) {
        json_object_del(obj, key); /* absent already is fine */
        return 0;
    }
    return json_object_set(obj, key, v) == 0 ? 0 : KE_ENOMEM;
}

static int is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_lower_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* DNS-1123 label (`dots` 0: namespaces) or subdomain (`dots` 1: names,
 * label-key prefixes): lowercase letters, digits, '-' (and '.'), starting
 * and ending with a letter or digit, 1..max bytes. */
static int is_dns_name(const char *s, size_t n, size_t max, int dots)
{
    if (n == 0 || n > max || !is_lower_alnum((unsigned char)s[0]) ||
        !is_lower_alnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (!is_lower_alnum(c) && c != '-' && !(dots && c == '.'))
            return 0;
    }
    return 1;
}

static int is_kind(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > KE_STORE_KIND_MAX || !isalpha((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_alnum((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A label name or value: [A-Za-z0-9._-], alphanumeric at both ends, at most
 * 63 bytes; `empty_ok` for values. */
static int is_label_word(const char *s, size_t n, int empty_ok)
{
    if (n == 0)
        return empty_ok;
    if (n > 63 || !is_alnum((unsigned char)s[0]) || !is_alnum((unsigned char)s[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '-' && c != '_' && c != '.')
            return 0;
    }
    return 1;
}

/* A label key: [prefix/]name, prefix a DNS subdomain. */
static int is_label_key(const char *k)
{
    const char *slash = strchr(k, '/');
    if (!slash)
        return is_label_word(k, strlen(k), 0);
    if (strchr(slash + 1, '/'))
        return 0;
    return is_dns_name(k, (size_t)(slash - k), 253, 1) &&
           is_label_word(slash + 1, strlen(slash + 1), 0);
}

/* ---- selectors ---------------------------------------------------------- */

enum { OP_EQ = 1, OP_NE, OP_IN, OP_NOTIN, OP_EXISTS, OP_NOTEXISTS };

typedef struct {
    int op;
    char *key;   /* label key or field path, owned */
    char **vals; /* owned, nvals entries (EQ/NE: 1) */
    size_t nvals;
} sel_req;

typedef struct {
    sel_req label[KE_STORE_SELECTOR_REQS_MAX];
    size_t nlabel;
    sel_req field[KE_STORE_SELECTOR_REQS_MAX];
    size_t nfield;
} selector;

static void sel_free(selector *sel)
{
    for (int f = 0; f < 2; f++) {
        sel_req *r = f ? sel->field : sel->label;
        size_t n = f ? sel->nfield : sel->nlabel;
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < r[i].nvals; j++)
                free(r[i].vals[j]);
            free(r[i].vals);
            free(r[i].key);
        }
    }
    sel->nlabel = sel->nfield = 0;
}

static void skip_ws(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* read_word copies the run of label characters (plus '/' when `slash`) at
 * *p into buf. Returns its length, or -1 when it does not fit. */
static int read_word(const char **p, int slash, char *buf, size_t cap)
{
    size_t n = 0;
    const char *q = *p;
    while (is_alnum((unsigned char)*q) || *q == '-' || *q == '_' || *q == '.' ||
           (slash && *q == '/')) {
        if (n + 1 >= cap)
            return -1;
        buf[n++] = *q++;
    }
    buf[n] = '\0';
    *p = q;
    return (int)n;
}

/* add_value appends a copy of v to r->vals (room for `cap` values). */
static int add_value(sel_req *r, size_t cap, const char *v)
{
    if (!r->vals && !(r->vals = calloc(cap, sizeof(char *))))
        return KE_ENOMEM;
    if (r->nvals >= cap)
        return KE_EFULL;
    if (!(r->vals[r->nvals] = strdup(v)))
        return KE_ENOMEM;
    r->nvals++;
    return 0;
}

/* label_value reads one label value at *p into r. */
static int label_value(const char **p, const char *in, sel_req *r, size_t cap, char *why,
                       size_t len)
{
    char v[LABEL_VALUE_MAX + 2];
    skip_ws(p);
    int n = read_word(p, 0, v, sizeof(v));
    if (n < 0 || !is_label_word(v, (size_t)n, 1))
        return fail(why, len, "invalid value for key '%s' at offset %zu (at most 63 of "
                              "[A-Za-z0-9._-], alphanumeric at both ends)",
                    r->key, (size_t)(*p - in));
    int rc = add_value(r, cap, v);
    if (rc == KE_EFULL)
        return fail(why, len, "too many values for key '%s' (max %d)", r->key,
                    KE_STORE_SELECTOR_VALUES_MAX);
    return rc;
}

/* label_parse compiles a Kubernetes label selector into sel->label. */
static int label_parse(const char *in, selector *sel, char *why, size_t len)
{
    const char *p = in;
    if (!p)
        return 0;
    if (strlen(p) > KE_STORE_SELECTOR_MAX)
        return fail(why, len, "longer than %d bytes", KE_STORE_SELECTOR_MAX);
    skip_ws(&p);
    if (!*p)
        return 0;
    for (;;) {
        if (sel->nlabel == KE_STORE_SELECTOR_REQS_MAX)
            return fail(why, len, "more than %d requirements", KE_STORE_SELECTOR_REQS_MAX);
        skip_ws(&p);
        int neg = 0;
        if (*p == '!') {
            neg = 1;
            p++;
            skip_ws(&p);
        }
        char key[LABEL_KEY_MAX + 2];
        size_t at = (size_t)(p - in);
        int n = read_word(&p, 1, key, sizeof(key));
        if (n == 0)
            return fail(why, len, "expected a label key at offset %zu", at);
        if (n < 0 || !is_label_key(key))
            return fail(why, len, "invalid label key at offset %zu (name: at most 63 of "
                                  "[A-Za-z0-9._-], optional DNS-subdomain prefix and '/')", at);
        sel_req *r = &sel->label[sel->nlabel];
        memset(r, 0, sizeof(*r));
        if (!(r->key = strdup(key)))
            return KE_ENOMEM;
        sel->nlabel++;
        skip_ws(&p);
        int rc = 0;
        if (neg) {
            r->op = OP_NOTEXISTS;
        } else if (*p == '\0' || *p == ',') {
            r->op = OP_EXISTS;
        } else if (p[0] == '!' && p[1] == '=') {
            r->op = OP_NE;
            p += 2;
            rc = label_value(&p, in, r, 1, why, len);
        } else if (p[0] == '=') {
            r->op = OP_EQ;
            p += p[1] == '=' ? 2 : 1;
            rc = label_value(&p, in, r, 1, why, len);
        } else {
            char word[8];
            at = (size_t)(p - in);
            n = read_word(&p, 0, word, sizeof(word));
            if (n > 0 && strcmp(word, "in") == 0)
                r->op = OP_IN;
            else if (n > 0 && strcmp(word, "notin") == 0)
                r->op = OP_NOTIN;
            else
                return fail(why, len, "expected =, ==, !=, in, notin, ',' or the end after "
                                      "key '%s' at offset %zu", key, at);
            skip_ws(&p);
            if (*p != '(')
                return fail(why, len, "expected '(' after '%s' at offset %zu", word,
                            (size_t)(p - in));
            p++;
            skip_ws(&p);
            if (*p == ')')
                return fail(why, len, "empty value set for key '%s'", key);
            for (;;) {
                rc = label_value(&p, in, r, KE_STORE_SELECTOR_VALUES_MAX, why, len);
                if (rc)
                    return rc;
                skip_ws(&p);
                if (*p == ',') {
                    p++;
                    continue;
                }
                if (*p == ')') {
                    p++;
                    break;
                }
                return fail(why, len, "expected ',' or ')' in the values of key '%s' at "
                                      "offset %zu", key, (size_t)(p - in));
            }
        }
        if (rc)
            return rc;
        skip_ws(&p);
        if (*p == '\0')
            return 0;
        if (*p != ',')
            return fail(why, len, "unexpected '%c' at offset %zu", *p, (size_t)(p - in));
        p++;
        skip_ws(&p);
        if (*p == '\0')
            return fail(why, len, "trailing ','");
    }
}

/* is_field_path: dot-separated segments of [A-Za-z0-9_-], at most 253. */
static int is_field_path(const char *s, size_t n)
{
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '.' && s[i + 1] == '.')
            return 0;
        if (!is_alnum(c) && c != '_' && c != '-' && c != '.')
            return 0;
    }
    return 1;
}

/* field_parse compiles a field selector into sel->field. */
static int field_parse(const char *in, selector *sel, char *why, size_t len)
{
    const char *p = in;
    if (!p)
        return 0;
    if (strlen(p) > KE_STORE_SELECTOR_MAX)
        return fail(why, len, "longer than %d bytes", KE_STORE_SELECTOR_MAX);
    const char *t = p;
    skip_ws(&t);
    if (!*t)
        return 0;
    for (;;) {
        if (sel->nfield == KE_STORE_SELECTOR_REQS_MAX)
            return fail(why, len, "more than %d requirements", KE_STORE_SELECTOR_REQS_MAX);
        const char *ps = p;
        while (*p && *p != '=' && *p != '!' && *p != ',')
            p++;
        const char *pe = p;
        while (ps < pe && (*ps == ' ' || *ps == '\t'))
            ps++;
        while (pe > ps && (pe[-1] == ' ' || pe[-1] == '\t'))
            pe--;
        size_t at = (size_t)(ps - in);
        if (*p == '\0' || *p == ',')
            return fail(why, len, "term at offset %zu has no operator (=, ==, !=)", at);
        if (!is_field_path(ps, (size_t)(pe - ps)))
            return fail(why, len, "invalid field path at offset %zu (dot-separated names "
                                  "like spec.nodeName)", at);
        int op;
        if (p[0] == '!') {
            if (p[1] != '=')
                return fail(why, len, "expected '!=' at offset %zu", (size_t)(p - in));
            op = OP_NE;
            p += 2;
        } else {
            op = OP_EQ;
            p += p[1] == '=' ? 2 : 1;
        }
        char val[FIELD_VALUE_MAX + 1];
        size_t n = 0;
        while (*p && *p != ',') {
            char c = *p++;
            if (c == '\\') {
                if (*p != '\\' && *p != ',' && *p != '=')
                    return fail(why, len, "invalid escape at offset %zu (only \\\\, \\, and "
                                          "\\= )", (size_t)(p - 1 - in));
                c = *p++;
            }
            if (n == FIELD_VALUE_MAX)
                return fail(why, len, "value longer than %d bytes", FIELD_VALUE_MAX);
            val[n++] = c;
        }
        val[n] = '\0';
        sel_req *r = &sel->field[sel->nfield];
        memset(r, 0, sizeof(*r));
        if (!(r->key = strndup(ps, (size_t)(pe - ps))))
            return KE_ENOMEM;
        sel->nfield++;
        r->op = op;
        int rc = add_value(r, 1, val);
        if (rc)
            return rc;
        if (*p == '\0')
            return 0;
        p++; /* ',' */
        if (*p == '\0')
            return fail(why, len, "trailing ','");
    }
}

/* sel_compile parses both selectors into *sel (zeroed by the caller).
 * On failure *sel is released and why holds the prefixed reason. */
/* control_at returns the offset of the first control byte (below 0x20, or
 * 0x7f) of s, or -1. A selector holding one matches nothing anyone meant
 * and would reach logs: it is refused. */
static long control_at(const char *s)
{
    for (long i = 0; s && s[i]; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return i;
    return -1;
}

static int sel_compile(const char *label, const char *field, selector *sel, char *why,
                       size_t len)
{
    char msg[256] = "";
    long at_l = control_at(label), at_f = control_at(field);
    if (at_l >= 0 || at_f >= 0) {
        if (why && len)
            snprintf(why, len, "%s: control character 0x%02x at byte %ld",
                     at_l >= 0 ? "label_selector" : "field_selector",
                     (unsigned char)(at_l >= 0 ? label[at_l] : field[at_f]),
                     at_l >= 0 ? at_l : at_f);
        return KE_EINVAL;
    }
    int rc = label_parse(label, sel, msg, sizeof(msg));
    if (rc) {
        if (why && len)
            snprintf(why, len, "label_selector: %s", rc == KE_ENOMEM ? "out of memory" : msg);
        goto out;
    }
    rc = field_parse(field, sel, msg, sizeof(msg));
    if (rc && why && len)
        snprintf(why, len, "field_selector: %s", rc == KE_ENOMEM ? "out of memory" : msg);
out:
    if (rc && why && len)
        ke_err_oneline(why); /* the message quotes the selector */
    if (rc)
        sel_free(sel);
    return rc;
}

int ke_store_selector_check(const char *label_sel, const char *field_sel, char *why,
                            size_t len)
{
    selector *sel = calloc(1, sizeof(*sel));
    if (!sel)
        return KE_ENOMEM;
    int rc = sel_compile(label_sel, field_sel, sel, why, len);
    sel_free(sel);
    free(sel);
    return rc;
}

static int value_in(const sel_req *r, const char *v)
{
    for (size_t i = 0; i < r->nvals; i++)
        if (strcmp(r->vals[i], v) == 0)
            return 1;
    return 0;
}

/* field_text gives the text a field selector compares: "" for a missing or
 * null field, strings as they are, numbers and booleans as JSON text;
 * returns NULL for objects and arrays (they equal nothing). */
static const char *field_text(const json_t *obj, const char *path, char *buf, size_t cap)
{
    const json_t *v = obj;
    const char *p = path;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        v = json_is_object(v) ? json_object_getn(v, p, n) : NULL;
        p += n + (dot ? 1 : 0);
    }
    if (!v || json_is_null(v))
        return "";
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_true(v))
        return "true";
    if (json_is_false(v))
        return "false";
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        size_t n = json_dumpb(v, buf, cap - 1, JSON_ENCODE_ANY);
        if (n > 0 && n < cap) {
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

static int sel_empty(const selector *sel)
{
    return sel->nlabel == 0 && sel->nfield == 0;
}

static int sel_match(const selector *sel, const json_t *obj)
{
    const json_t *labels = json_object_get(json_object_get(obj, "metadata"), "labels");
    for (size_t i = 0; i < sel->nlabel; i++) {
        const sel_req *r = &sel->label[i];
        const json_t *lv = json_is_object(labels) ? json_object_get(labels, r->key) : NULL;
        const char *v = json_string_value(lv);
        int ok = 0;
        switch (r->op) {
        case OP_EQ: ok = v && strcmp(v, r->vals[0]) == 0; break;
        case OP_NE: ok = !v || strcmp(v, r->vals[0]) != 0; break;
        case OP_IN: ok = v && value_in(r, v); break;
        case OP_NOTIN: ok = !v || !value_in(r, v); break;
        case OP_EXISTS: ok = lv != NULL; break;
        case OP_NOTEXISTS: ok = lv == NULL; break;
        }
        if (!ok)
            return 0;
    }
    for (size_t i = 0; i < sel->nfield; i++) {
        const sel_req *r = &sel->field[i];
        char buf[64];
        const char *v = field_text(obj, r->key, buf, sizeof(buf));
        int eq = v && strcmp(v, r->vals[0]) == 0;
        if (r->op == OP_EQ ? !eq : eq)
            return 0;
    }
    return 1;
}

struct ke_store_selector {
    selector sel;
};

int ke_store_selector_new(const char *label_sel, const char *field_sel, ke_store_selector **out,
                          char *why, size_t len)
{
    ke_store_selector *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    int rc = sel_compile(label_sel, field_sel, &s->sel, why, len);
    if (rc != 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int ke_store_selector_match(const ke_store_selector *s, const json_t *obj)
{
    return sel_match(&s->sel, obj);
}

void ke_store_selector_free(ke_store_selector *s)
{
    if (!s)
        return;
    sel_free(&s->sel);
    free(s);
}

/* ---- objects and keys --------------------------------------------------- */

typedef struct {
    char kind[KE_STORE_KIND_MAX + 1];
    char ns[KE_STORE_NS_MAX + 1];
    char name[KE_STORE_NAME_MAX + 1];
} obj_key;

int ke_store_object_check(const json_t *obj, char *why, size_t len)
{
    if (!json_is_object(obj))
        return fail(why, len, "not a JSON object");
    if (!is_kind(json_string_value(json_object_get(obj, "kind"))))
        return fail(why, len, "kind: must be 1-%d letters and digits starting with a letter",
                    KE_STORE_KIND_MAX);
    const json_t *meta = json_object_get(obj, "metadata");
    if (!json_is_object(meta))
        return fail(why, len, "metadata: missing or not an object");
    const char *name = json_string_value(json_object_get(meta, "name"));
    if (!name || !is_dns_name(name, strlen(name), KE_STORE_NAME_MAX, 1))
        return fail(why, len, "metadata.name: must be a DNS subdomain (lowercase letters, "
                              "digits, '-' and '.', at most %d)", KE_STORE_NAME_MAX);
    const json_t *ns = json_object_get(meta, "namespace");
    if (ns && !json_is_null(ns)) {
        const char *s = json_string_value(ns);
        if (!s || (*s && !is_dns_name(s, strlen(s), KE_STORE_NS_MAX, 0)))
            return fail(why, len, "metadata.namespace: must be a DNS label (lowercase "
                                  "letters, digits and '-', at most %d)", KE_STORE_NS_MAX);
    }
    const json_t *labels = json_object_get(meta, "labels");
    if (labels && !json_is_null(labels)) {
        if (!json_is_object(labels))
            return fail(why, len, "metadata.labels: not an object");
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)labels, k, v) {
            if (!is_label_key(k))
                return fail(why, len, "metadata.labels: invalid key '%.64s'", k);
            const char *s = json_string_value(v);
            if (!s || !is_label_word(s, strlen(s), 1))
                return fail(why, len, "metadata.labels: invalid value for '%.64s' (a string "
                                      "of at most 63 [A-Za-z0-9._-])", k);
        }
    }
    const json_t *rv = json_object_get(meta, "resourceVersion");
    if (rv && !json_is_null(rv)) {
        uint64_t r;
        const char *s = json_string_value(rv);
        if (!s || (*s && rev_parse(s, &r) != 0))
            return fail(why, len, "metadata.resourceVersion: not a decimal revision string");
    }
    const json_t *uid = json_object_get(meta, "uid");
    if (uid && !json_is_null(uid) && !json_is_string(uid))
        return fail(why, len, "metadata.uid: not a string");
    size_t size = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (size == 0 || size > KE_STORE_OBJECT_MAX)
        return fail(why, len, "object: too large: %zu bytes as JSON (max %d)", size,
                    KE_STORE_OBJECT_MAX);
    return 0;
}

/* ---- the store ---------------------------------------------------------- */

typedef struct {
    uint64_t rev;
    int type;
    char kind[KE_STORE_KIND_MAX + 1];
    char ns[KE_STORE_NS_MAX + 1];
    char *json;       /* owned */
    char *prev;       /* owned, MODIFIED only */
    json_t *obj;      /* parsed json, lazily */
    json_t *prev_obj; /* parsed prev carrying this event's revision, lazily */
    int parsed, prev_parsed;
} batch_ev;

typedef struct {
    batch_ev ev[BATCH_EVENTS];
    size_t n;
    uint64_t lo;        /* events after lo ... */
    uint64_t hi;        /* ... up to hi are all in ev[] */
    uint64_t compacted; /* the store's compacted revision when read */
} batch;

struct ke_store_watch {
    ke_store *s;
    ke_store_watch *next; /* under wmu; only the dispatcher unlinks */
    char kind[KE_STORE_KIND_MAX + 1];
    char ns[KE_STORE_NS_MAX + 1]; /* "" = all */
    selector sel;
    ke_store_watch_fn fn;
    void *ud;
    uint64_t last;       /* newest revision examined; dispatcher-owned once linked */
    int ended;           /* GONE delivered; dispatcher-owned */
    atomic_int stopping; /* ke_store_watch_stop was called */
    int self_free;       /* under wmu: stopped on the dispatcher, which frees it */
    int unlinked;        /* under wmu: off the list, the stopper may free it */
};

struct ke_store {
    pthread_mutex_t mu; /* the connection and everything down to `scoped` */
    ke_sqlite *db;
    uint64_t rev;       /* revision of the last write */
    uint64_t compacted; /* newest revision dropped from events */
    uint64_t history;   /* events kept by automatic compaction */
    char scoped[KE_STORE_SCOPED_MAX][KE_STORE_KIND_MAX + 1];
    size_t nscoped;
    ke_crypt *crypt; /* owned; NULL: encryption at rest off */

    pthread_mutex_t wmu; /* everything below */
    pthread_cond_t work; /* the dispatcher has something to do */
    pthread_cond_t done; /* a stopped watch was unlinked */
    ke_store_watch *watchers;
    size_t nwatchers;
    uint64_t pub_rev; /* == rev, published to the dispatcher */
    int quit;
    pthread_t thread;
    int thread_started;
    ke_watchdog_hb *hb; /* the dispatcher's heartbeat, "store-watch" */
    batch *batch; /* dispatcher-owned */
};

static const char *const schema[] = {
    /* 0 -> 1. The primary key (kind, ns, name) is also the index by kind. */
    "CREATE TABLE objects(kind TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,"
    "  rv INTEGER NOT NULL, json TEXT NOT NULL, PRIMARY KEY(kind, ns, name));"
    "CREATE TABLE events(rev INTEGER PRIMARY KEY, kind TEXT NOT NULL, ns TEXT NOT NULL,"
    "  name TEXT NOT NULL, type TEXT NOT NULL, json TEXT NOT NULL, prev TEXT);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
};

/* sql_run prepares `sql`, binds the arguments described by fmt ('t': const
 * char * text or NULL, 'u': uint64_t), and steps it to the end.
 * Returns 0 or KE_EDB (logged by ke_sqlite). Call with s->mu held. */
static int sql_run(ke_store *s, const char *sql, const char *fmt, ...)
{
    sqlite3_stmt *st = NULL;
    int rc = ke_sqlite_prepare(s->db, sql, &st);
    if (rc)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 'u')
            sqlite3_bind_int64(st, i + 1, (sqlite3_int64)va_arg(ap, uint64_t));
        else
            sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
    }
    va_end(ap);
    while ((rc = ke_sqlite_step(s->db, st)) == 1)
        ;
    ke_sqlite_release(s->db, st);
    return rc;
}

/* sql_u64 runs a one-value query (no arguments) into *out (0 for NULL). */
static int sql_u64(ke_store *s, const char *sql, uint64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = ke_sqlite_prepare(s->db, sql, &st);
    if (rc)
        return rc;
    *out = 0;
    rc = ke_sqlite_step(s->db, st);
    if (rc == 1)
        *out = (uint64_t)sqlite3_column_int64(st, 0);
    ke_sqlite_release(s->db, st);
    return rc < 0 ? rc : 0;
}

static int is_scoped(const ke_store *s, const char *kind)
{
    for (size_t i = 0; i < s->nscoped; i++)
        if (strcmp(s->scoped[i], kind) == 0)
            return 1;
    return 0;
}

/* ---- encryption at rest ------------------------------------------------ */

static void aad_make(char *aad, const char *kind, const char *ns, const char *name)
{
    snprintf(aad, AAD_MAX, "%s/%s/%s", kind, ns, name);
}

/* text_seal gives what is stored for `text` of object k (s->mu held): text
 * itself, or, for an encrypted kind while a key ring is set, its envelope
 * in *owned (free it). text NULL stays NULL. Returns 0 or a KE_E* code. */
static int text_seal(ke_store *s, const char *kind, const char *ns, const char *name,
                     const char *text, const char **stored, char **owned)
{
    *owned = NULL;
    *stored = text;
    if (!text || !s->crypt || strcmp(kind, KE_STORE_ENCRYPTED_KIND) != 0)
        return 0;
    char aad[AAD_MAX];
    aad_make(aad, kind, ns, name);
    int rc = ke_crypt_seal(s->crypt, aad, text, strlen(text), owned, NULL);
    if (rc)
        ke_log_error(LOG_MOD, "cannot encrypt kind=%s ns=%s name=%s: %s", kind, ns, name,
                     ke_strerror(rc));
    else
        *stored = *owned;
    return rc;
}

/* text_open gives the plaintext of a stored text (s->mu held): *t and *n
 * are left alone for plain JSON, or point at the decrypted text in *owned
 * (free it). A text that does not open is logged with the key it needs.
 * Returns 0, KE_ENOMEM or KE_ECRYPT. */
static int text_open(ke_store *s, const char *kind, const char *ns, const char *name,
                     const char **t, size_t *n, char **owned)
{
    *owned = NULL;
    if (!ke_crypt_sealed(*t, *n))
        return 0;
    char aad[AAD_MAX], why[160];
    aad_make(aad, kind, ns, name);
    int rc = ke_crypt_open(s->crypt, aad, *t, *n, owned, n, why, sizeof(why));
    if (rc == KE_ECRYPT)
        ke_log_error(LOG_MOD, "stored object does not decrypt kind=%s ns=%s name=%s: %s%s", kind,
                     ns, name, why, s->crypt ? "" : " (store.encryption_key_file is not set)");
    if (rc == 0)
        *t = *owned;
    return rc;
}

/* key_make fills k from call arguments (s->mu held): ns is dropped for
 * cluster-scoped kinds; `need_ns`: a namespaced kind must name one. */
static int key_make(ke_store *s, const char *kind, const char *ns, const char *name,
                    int need_ns, obj_key *k)
{
    memset(k, 0, sizeof(*k));
    if (!is_kind(kind))
        return KE_EINVAL;
    snprintf(k->kind, sizeof(k->kind), "%s", kind);
    if (name) {
        if (!is_dns_name(name, strlen(name), KE_STORE_NAME_MAX, 1))
            return KE_EINVAL;
        snprintf(k->name, sizeof(k->name), "%s", name);
    }
    if (is_scoped(s, kind))
        return 0;
    if (!ns || !*ns)
        return need_ns ? KE_EINVAL : 0;
    if (!is_dns_name(ns, strlen(ns), KE_STORE_NS_MAX, 0))
        return KE_EINVAL;
    snprintf(k->ns, sizeof(k->ns), "%s", ns);
    return 0;
}

/* obj_prepare checks `in` and returns a deep copy with its namespace
 * normalized (s->mu held), and its key. */
static int obj_prepare(ke_store *s, const json_t *in, json_t **copy, obj_key *k)
{
    char why[256];
    if (ke_store_object_check(in, why, sizeof(why)) != 0) {
        ke_log_warn(LOG_MOD, "object refused: %s", why);
        return KE_EINVAL;
    }
    json_t *c = json_deep_copy(in);
    if (!c)
        return KE_ENOMEM;
    json_t *meta = json_object_get(c, "metadata");
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *ns = json_string_value(json_object_get(meta, "namespace"));
    memset(k, 0, sizeof(*k));
    snprintf(k->kind, sizeof(k->kind), "%s", kind);
    snprintf(k->name, sizeof(k->name), "%s", json_string_value(json_object_get(meta, "name")));
    if (is_scoped(s, kind)) {
        json_object_del(meta, "namespace");
    } else if (ns && *ns) {
        snprintf(k->ns, sizeof(k->ns), "%s", ns);
    } else {
        snprintf(k->ns, sizeof(k->ns), "default");
        if (json_object_set_new(meta, "namespace", json_string("default")) != 0) {
            json_decref(c);
            return KE_ENOMEM;
        }
    }
    *copy = c;
    return 0;
}

/* row_load reads the stored object of k (s->mu held): its revision, the
 * parsed object and, when text is not NULL, its JSON text (malloc'd).
 * Returns 0, KE_ENOTFOUND, KE_ENOMEM or KE_EDB. */
static int row_load(ke_store *s, const obj_key *k, uint64_t *rv, json_t **obj, char **text)
{
    static const char sql[] = "SELECT rv, json FROM objects WHERE kind=?1 AND ns=?2 AND name=?3";
    sqlite3_stmt *st = NULL;
    char *plain = NULL;
    int rc = ke_sqlite_prepare(s->db, sql, &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, k->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(s->db, st);
    if (rc <= 0) {
        rc = rc == 0 ? KE_ENOTFOUND : rc;
        goto out;
    }
    const char *js = (const char *)sqlite3_column_text(st, 1);
    size_t n = (size_t)sqlite3_column_bytes(st, 1);
    json_error_t err;
    *rv = (uint64_t)sqlite3_column_int64(st, 0);
    js = js ? js : "";
    if ((rc = text_open(s, k->kind, k->ns, k->name, &js, &n, &plain)))
        goto out;
    *obj = json_loadb(js, n, 0, &err);
    if (!*obj) { /* err.text may quote the object: log only where */
        ke_log_error(LOG_MOD, "stored object unreadable kind=%s ns=%s name=%s: line %d column %d",
                     k->kind, k->ns, k->name, err.line, err.column);
        rc = KE_EDB;
        goto out;
    }
    rc = 0;
    if (text && !(*text = strndup(js, n))) {
        json_decref(*obj);
        *obj = NULL;
        rc = KE_ENOMEM;
    }
out:
    ke_sqlite_release(s->db, st);
    free(plain);
    return rc;
}

/* compact_to drops events up to and including rev `c` (inside a transaction). */
static int compact_to(ke_store *s, uint64_t c)
{
    int rc = sql_run(s, "DELETE FROM events WHERE rev <= ?1", "u", c);
    if (!rc)
        rc = sql_run(s, "INSERT INTO meta(key, value) VALUES ('compacted', ?1) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", "u", c);
    return rc;
}

/* publish tells the dispatcher about revision rev (s->mu held). */
static void publish(ke_store *s, uint64_t rev)
{
    pthread_mutex_lock(&s->wmu);
    s->pub_rev = rev;
    if (s->watchers)
        pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->wmu);
}

/* write_change records one change at revision `rev` = s->rev + 1 in one
 * transaction (s->mu held): the object row (ADDED: inserted, MODIFIED:
 * replaced by `text`, DELETED: removed), the event row (json = text, plus
 * the previous text for MODIFIED and DELETED: what a paginated list at an
 * older revision reads back) and automatic compaction. Then publishes
 * the revision. Returns 0 or KE_EDB (nothing written). */
static int write_change(ke_store *s, int type, const obj_key *k, uint64_t rev, const char *text,
                        const char *prev)
{
    uint64_t c = s->compacted;
    char *sealed_text = NULL, *sealed_prev = NULL;
    int rc = text_seal(s, k->kind, k->ns, k->name, text, &text, &sealed_text);
    if (rc || (rc = text_seal(s, k->kind, k->ns, k->name, prev, &prev, &sealed_prev))) {
        free(sealed_text);
        return rc;
    }
    if ((rc = ke_sqlite_begin(s->db))) {
        free(sealed_text);
        free(sealed_prev);
        return rc;
    }
    if (type == KE_STORE_ADDED)
        rc = sql_run(s, "INSERT INTO objects(kind, ns, name, rv, json) VALUES (?1,?2,?3,?4,?5)",
                     "tttut", k->kind, k->ns, k->name, rev, text);
    else if (type == KE_STORE_MODIFIED)
        rc = sql_run(s, "UPDATE objects SET rv=?4, json=?5 WHERE kind=?1 AND ns=?2 AND name=?3",
                     "tttut", k->kind, k->ns, k->name, rev, text);
    else
        rc = sql_run(s, "DELETE FROM objects WHERE kind=?1 AND ns=?2 AND name=?3", "ttt",
                     k->kind, k->ns, k->name);
    if (rc)
        goto out;
    rc = sql_run(s, "INSERT INTO events(rev, kind, ns, name, type, json, prev) "
                    "VALUES (?1,?2,?3,?4,?5,?6,?7)",
                 "utttttt", rev, k->kind, k->ns, k->name, ke_store_event_name(type), text,
                 prev);
    if (rc)
        goto out;
    if (rev - c > s->history) {
        c = rev - s->history;
        rc = compact_to(s, c);
        if (rc)
            goto out;
    }
    rc = ke_sqlite_commit(s->db);
out:
    free(sealed_text);
    free(sealed_prev);
    if (rc) {
        ke_sqlite_rollback(s->db);
        ke_log_error(LOG_MOD, "write failed kind=%s ns=%s name=%s rev=%" PRIu64 ": %s",
                     k->kind, k->ns, k->name, rev, ke_strerror(rc));
        return rc;
    }
    s->rev = rev;
    s->compacted = c;
    publish(s, rev);
    return 0;
}

/* dump_checked serializes obj (compact) and enforces the size bound. */
static int dump_checked(const json_t *obj, const obj_key *k, char **text)
{
    *text = json_dumps(obj, JSON_COMPACT);
    if (!*text)
        return KE_ENOMEM;
    size_t n = strlen(*text);
    if (n > KE_STORE_OBJECT_MAX) {
        ke_log_warn(LOG_MOD, "object refused: too large kind=%s ns=%s name=%s size=%zu max=%d",
                    k->kind, k->ns, k->name, n, KE_STORE_OBJECT_MAX);
        free(*text);
        *text = NULL;
        return KE_EINVAL;
    }
    return 0;
}

/* ---- open and close ----------------------------------------------------- */

static void *dispatch_main(void *arg);

int ke_store_open(const char *path, ke_store **out)
{
    if (!path || !out)
        return KE_EINVAL;
    *out = NULL;
    ke_store *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    s->batch = calloc(1, sizeof(*s->batch));
    if (!s->batch) {
        free(s);
        return KE_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    int cvrc = ke_time_cond_init(&s->work); /* monotonic: the dispatcher's waits */
    if (cvrc != 0)
        pthread_cond_init(&s->work, NULL); /* only so that close can destroy it */
    pthread_cond_init(&s->done, NULL);
    s->history = KE_STORE_HISTORY_DEFAULT;
    snprintf(s->scoped[s->nscoped++], KE_STORE_KIND_MAX + 1, "Node");
    snprintf(s->scoped[s->nscoped++], KE_STORE_KIND_MAX + 1, "Namespace");

    int rc = cvrc ? KE_EIO : ke_sqlite_open(path, &s->db);
    if (rc)
        goto out;
    rc = ke_sqlite_migrate(s->db, schema, (int)(sizeof(schema) / sizeof(schema[0])));
    if (rc)
        goto out;
    uint64_t ev = 0, obj = 0;
    if ((rc = sql_u64(s, "SELECT max(rev) FROM events", &ev)) ||
        (rc = sql_u64(s, "SELECT max(rv) FROM objects", &obj)) ||
        (rc = sql_u64(s, "SELECT value FROM meta WHERE key='compacted'", &s->compacted)))
        goto out;
    /* The revision survives compaction of every event: `compacted` is it. */
    s->rev = ev > s->compacted ? ev : s->compacted;
    s->rev = obj > s->rev ? obj : s->rev;
    s->pub_rev = s->rev;
    if ((rc = ke_watchdog_register("store-watch", 0, &s->hb)) != 0) {
        ke_log_warn(LOG_MOD, "the watch dispatcher is not watched: %s", ke_strerror(rc));
        rc = 0;
    }
    if (pthread_create(&s->thread, NULL, dispatch_main, s) != 0) {
        ke_log_error(LOG_MOD, "cannot start the watch dispatcher path=%s", path);
        rc = KE_EIO;
        goto out;
    }
    pthread_setname_np(s->thread, "ke-store-watch");
    s->thread_started = 1;
    ke_log_info(LOG_MOD, "store open path=%s rev=%" PRIu64 " compacted=%" PRIu64, path, s->rev,
                s->compacted);
    *out = s;
out:
    if (rc)
        ke_store_close(s);
    return rc;
}

static void watch_free(ke_store_watch *w)
{
    sel_free(&w->sel);
    free(w);
}

static void batch_clear(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->ev[i].json);
        free(b->ev[i].prev);
        json_decref(b->ev[i].obj);
        json_decref(b->ev[i].prev_obj);
    }
    memset(b, 0, sizeof(*b));
}

void ke_store_close(ke_store *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->wmu);
        s->quit = 1;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->wmu);
        pthread_join(s->thread, NULL);
    }
    ke_watchdog_unregister(s->hb);
    size_t left = 0;
    while (s->watchers) {
        ke_store_watch *w = s->watchers;
        s->watchers = w->next;
        watch_free(w);
        left++;
    }
    if (left)
        ke_log_warn(LOG_MOD, "store closed with watches open count=%zu", left);
    ke_sqlite_close(s->db);
    ke_crypt_free(s->crypt);
    batch_clear(s->batch);
    free(s->batch);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int ke_store_set_cluster_scoped(ke_store *s, const char *kind)
{
    if (!s || !is_kind(kind))
        return KE_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (!is_scoped(s, kind)) {
        if (s->nscoped == KE_STORE_SCOPED_MAX)
            rc = KE_EFULL;
        else
            snprintf(s->scoped[s->nscoped++], KE_STORE_KIND_MAX + 1, "%s", kind);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int ke_store_set_history(ke_store *s, uint64_t n)
{
    if (!s || n < 1 || n > KE_STORE_HISTORY_MAX)
        return KE_EINVAL;
    pthread_mutex_lock(&s->mu);
    s->history = n;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

uint64_t ke_store_revision(ke_store *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    uint64_t r = s->rev;
    pthread_mutex_unlock(&s->mu);
    return r;
}

uint64_t ke_store_compacted(ke_store *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    uint64_t r = s->compacted;
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* ---- writes ------------------------------------------------------------- */

int ke_store_create(ke_store *s, const json_t *obj, json_t **out)
{
    if (out)
        *out = NULL;
    if (!s || !obj)
        return KE_EINVAL;
    json_t *c = NULL, *old = NULL;
    char *text = NULL;
    obj_key k;
    char uid[37], ts[32];
    pthread_mutex_lock(&s->mu);
    int rc = obj_prepare(s, obj, &c, &k);
    if (rc)
        goto out;
    uint64_t orv;
    rc = row_load(s, &k, &orv, &old, NULL);
    if (rc != KE_ENOTFOUND) {
        rc = rc ? rc : KE_EEXIST;
        goto out;
    }
    uint64_t rev = s->rev + 1;
    if ((rc = uuid_v4(uid)))
        goto out;
    rfc3339_now(ts);
    json_t *meta = json_object_get(c, "metadata");
    if (json_object_set_new(meta, "uid", json_string(uid)) ||
        json_object_set_new(meta, "creationTimestamp", json_string(ts)) || set_rv(c, rev)) {
        rc = KE_ENOMEM;
        goto out;
    }
    if ((rc = dump_checked(c, &k, &text)) ||
        (rc = write_change(s, KE_STORE_ADDED, &k, rev, text, NULL)))
        goto out;
    ke_log_debug(LOG_MOD, "created kind=%s ns=%s name=%s rv=%" PRIu64, k.kind, k.ns, k.name, rev);
out:
    pthread_mutex_unlock(&s->mu);
    free(text);
    json_decref(old);
    if (rc == 0 && out)
        *out = c;
    else
        json_decref(c);
    return rc;
}

/* check_preconditions: the resourceVersion and uid `given` carries, when
 * set, must be the stored ones. Returns 0 or KE_ECONFLICT. */
static int check_preconditions(const json_t *given, uint64_t srv, const json_t *stored,
                               const obj_key *k)
{
    const json_t *meta = json_object_get(given, "metadata");
    const char *rvs = json_string_value(json_object_get(meta, "resourceVersion"));
    uint64_t want;
    if (rvs && *rvs && (rev_parse(rvs, &want) != 0 || want != srv)) {
        ke_log_debug(LOG_MOD, "conflict kind=%s ns=%s name=%s rv=%s stored=%" PRIu64, k->kind,
                     k->ns, k->name, rvs, srv);
        return KE_ECONFLICT;
    }
    const char *uid = json_string_value(json_object_get(meta, "uid"));
    const char *suid =
        json_string_value(json_object_get(json_object_get(stored, "metadata"), "uid"));
    if (uid && *uid && (!suid || strcmp(uid, suid) != 0)) {
        ke_log_debug(LOG_MOD, "conflict kind=%s ns=%s name=%s uid=%s stored=%s", k->kind, k->ns,
                     k->name, uid, suid ? suid : "");
        return KE_ECONFLICT;
    }
    return 0;
}

/* modify_finish writes `next` (the new content of the stored object `cur`,
 * whose text is cur_text) unless it equals cur; *res gets the stored
 * object either way (new reference). s->mu held. */
static int modify_finish(ke_store *s, const obj_key *k, json_t *next, json_t *cur,
                         const char *cur_text, uint64_t srv, json_t **res)
{
    char *text = NULL;
    int rc = set_rv(next, srv);
    if (rc)
        return rc;
    if (json_equal(next, cur)) {
        *res = json_incref(cur);
        return 0;
    }
    uint64_t rev = s->rev + 1;
    if ((rc = set_rv(next, rev)) || (rc = dump_checked(next, k, &text)) ||
        (rc = write_change(s, KE_STORE_MODIFIED, k, rev, text, cur_text)))
        goto out;
    ke_log_debug(LOG_MOD, "modified kind=%s ns=%s name=%s rv=%" PRIu64, k->kind, k->ns, k->name,
                 rev);
    *res = json_incref(next);
out:
    free(text);
    return rc;
}

int ke_store_update(ke_store *s, const json_t *obj, json_t **out)
{
    if (out)
        *out = NULL;
    if (!s || !obj)
        return KE_EINVAL;
    json_t *c = NULL, *cur = NULL, *res = NULL;
    char *cur_text = NULL;
    obj_key k;
    uint64_t srv = 0;
    pthread_mutex_lock(&s->mu);
    int rc = obj_prepare(s, obj, &c, &k);
    if (rc || (rc = row_load(s, &k, &srv, &cur, &cur_text)) ||
        (rc = check_preconditions(c, srv, cur, &k)))
        goto out;
    json_t *meta = json_object_get(c, "metadata");
    const json_t *smeta = json_object_get(cur, "metadata");
    static const char *const kept[] = {"uid", "creationTimestamp"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        if ((rc = set_or_del(meta, kept[i], json_object_get(smeta, kept[i]))))
            goto out;
    if ((rc = set_or_del(c, "status", json_object_get(cur, "status"))))
        goto out;
    rc = modify_finish(s, &k, c, cur, cur_text, srv, &res);
out:
    pthread_mutex_unlock(&s->mu);
    json_decref(c);
    json_decref(cur);
    free(cur_text);
    if (rc == 0 && out)
        *out = res;
    else
        json_decref(res);
    return rc;
}

int ke_store_update_status(ke_store *s, const json_t *obj, json_t **out)
{
    if (out)
        *out = NULL;
    if (!s || !obj)
        return KE_EINVAL;
    json_t *given = NULL, *cur = NULL, *next = NULL, *res = NULL;
    char *cur_text = NULL;
    obj_key k;
    uint64_t srv = 0;
    pthread_mutex_lock(&s->mu);
    int rc = obj_prepare(s, obj, &given, &k);
    if (rc || (rc = row_load(s, &k, &srv, &cur, &cur_text)) ||
        (rc = check_preconditions(given, srv, cur, &k)))
        goto out;
    if (!(next = json_deep_copy(cur))) {
        rc = KE_ENOMEM;
        goto out;
    }
    if ((rc = set_or_del(next, "status", json_object_get(given, "status"))))
        goto out;
    rc = modify_finish(s, &k, next, cur, cur_text, srv, &res);
out:
    pthread_mutex_unlock(&s->mu);
    json_decref(given);
    json_decref(next);
    json_decref(cur);
    free(cur_text);
    if (rc == 0 && out)
        *out = res;
    else
        json_decref(res);
    return rc;
}

int ke_store_delete(ke_store *s, const char *kind, const char *ns, const char *name,
                    uint64_t precondition_rv, json_t **out)
{
    if (out)
        *out = NULL;
    if (!s || !name)
        return KE_EINVAL;
    json_t *cur = NULL;
    char *text = NULL, *cur_text = NULL;
    obj_key k;
    uint64_t srv = 0;
    pthread_mutex_lock(&s->mu);
    int rc = key_make(s, kind, ns, name, 1, &k);
    if (rc || (rc = row_load(s, &k, &srv, &cur, &cur_text)))
        goto out;
    if (precondition_rv && precondition_rv != srv) {
        ke_log_debug(LOG_MOD, "conflict on delete kind=%s ns=%s name=%s rv=%" PRIu64
                              " stored=%" PRIu64, k.kind, k.ns, k.name, precondition_rv, srv);
        rc = KE_ECONFLICT;
        goto out;
    }
    uint64_t rev = s->rev + 1;
    if ((rc = set_rv(cur, rev)) || (rc = dump_checked(cur, &k, &text)) ||
        (rc = write_change(s, KE_STORE_DELETED, &k, rev, text, cur_text)))
        goto out;
    ke_log_debug(LOG_MOD, "deleted kind=%s ns=%s name=%s rv=%" PRIu64, k.kind, k.ns, k.name, rev);
out:
    pthread_mutex_unlock(&s->mu);
    free(text);
    free(cur_text);
    if (rc == 0 && out)
        *out = cur;
    else
        json_decref(cur);
    return rc;
}

/* ---- reads -------------------------------------------------------------- */

int ke_store_get(ke_store *s, const char *kind, const char *ns, const char *name, json_t **out)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!s || !name)
        return KE_EINVAL;
    obj_key k;
    uint64_t rv;
    pthread_mutex_lock(&s->mu);
    int rc = key_make(s, kind, ns, name, 1, &k);
    if (!rc)
        rc = row_load(s, &k, &rv, out, NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- lists and pages ---------------------------------------------------- */

/* A continue token, parsed: the list's revision and the last key returned. */
typedef struct {
    char kind[KE_STORE_KIND_MAX + 1];
    uint64_t rev;
    char ns[KE_STORE_NS_MAX + 1];
    char name[KE_STORE_NAME_MAX + 1];
} list_cursor;

/* token_field copies the ':'-terminated field at *p into buf (cap bytes
 * with the NUL) and moves *p past the ':' (or to the end when `last`).
 * Returns 0, or -1 when the field is missing or too long. */
static int token_field(const char **p, int last, char *buf, size_t cap)
{
    const char *end = last ? *p + strlen(*p) : strchr(*p, ':');
    if (!end || (size_t)(end - *p) >= cap)
        return -1;
    memcpy(buf, *p, (size_t)(end - *p));
    buf[end - *p] = '\0';
    *p = last ? end : end + 1;
    return 0;
}

/* cursor_parse reads a continue token ("1:KIND:REV:NS:NAME") and checks it
 * against the list (kind, ns as key_make leaves them) and the store's
 * revisions (s->mu held). Returns 0, KE_EINVAL or KE_EGONE with why set. */
static int cursor_parse(const ke_store *s, const obj_key *list, const char *tok,
                        list_cursor *c, char *why, size_t len)
{
    char ver[4], rev[24];
    const char *p = tok;
    memset(c, 0, sizeof(*c));
    if (strlen(tok) >= KE_STORE_CONTINUE_MAX)
        return fail(why, len, "continue_token: longer than %d bytes", KE_STORE_CONTINUE_MAX - 1);
    if (token_field(&p, 0, ver, sizeof(ver)) || strcmp(ver, "1") != 0 ||
        token_field(&p, 0, c->kind, sizeof(c->kind)) || !is_kind(c->kind) ||
        token_field(&p, 0, rev, sizeof(rev)) || rev_parse(rev, &c->rev) || c->rev == 0 ||
        token_field(&p, 0, c->ns, sizeof(c->ns)) ||
        (c->ns[0] && !is_dns_name(c->ns, strlen(c->ns), KE_STORE_NS_MAX, 0)) ||
        token_field(&p, 1, c->name, sizeof(c->name)) ||
        !is_dns_name(c->name, strlen(c->name), KE_STORE_NAME_MAX, 1))
        return fail(why, len, "continue_token: malformed; pass back the token of the previous "
                              "page unchanged, or \"\" to start the list");
    if (strcmp(c->kind, list->kind) != 0)
        return fail(why, len, "continue_token: belongs to a list of %s, not %s", c->kind,
                    list->kind);
    if ((is_scoped(s, list->kind) && c->ns[0]) || (list->ns[0] && strcmp(c->ns, list->ns) != 0))
        return fail(why, len, "continue_token: belongs to a list of another namespace (\"%s\")",
                    c->ns);
    if (c->rev > s->rev)
        return fail(why, len, "continue_token: revision %" PRIu64 " is after the store's "
                              "(%" PRIu64 "); start the list again", c->rev, s->rev);
    if (c->rev < s->compacted) {
        fail(why, len, "continue_token: expired (revision %" PRIu64 " was compacted, history "
                       "starts after %" PRIu64 "); start the list again", c->rev, s->compacted);
        return KE_EGONE;
    }
    return 0;
}

int ke_store_continue_check(ke_store *s, const char *kind, const char *ns, const char *token,
                            char *why, size_t len)
{
    if (!token || !*token)
        return 0;
    if (!s)
        return KE_EINVAL;
    obj_key k;
    list_cursor c;
    pthread_mutex_lock(&s->mu);
    int rc = key_make(s, kind, ns, NULL, 0, &k);
    if (rc)
        rc = fail(why, len, "continue_token: cannot belong to a list of kind \"%.63s\"",
                  kind ? kind : "");
    else
        rc = cursor_parse(s, &k, token, &c, why, len);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* One side of the merge in list_scan: the current row of a statement and
 * its key, copied (column text dies at the next step). */
typedef struct {
    sqlite3_stmt *st;
    int valid;
    char ns[KE_STORE_NS_MAX + 1];
    char name[KE_STORE_NAME_MAX + 1];
} scan_side;

/* side_next steps one side and copies its key (columns 0 and 1).
 * Returns 0 (valid tells whether a row is there) or KE_EDB. */
static int side_next(ke_store *s, scan_side *d)
{
    int rc = ke_sqlite_step(s->db, d->st);
    d->valid = rc == 1;
    if (rc < 0)
        return rc;
    if (d->valid) {
        snprintf(d->ns, sizeof(d->ns), "%s", (const char *)sqlite3_column_text(d->st, 0));
        snprintf(d->name, sizeof(d->name), "%s", (const char *)sqlite3_column_text(d->st, 1));
    }
    return 0;
}

static int key_cmp(const scan_side *a, const scan_side *b)
{
    int c = strcmp(a->ns, b->ns);
    return c ? c : strcmp(a->name, b->name);
}

/* A list in progress: what to read, and what has been gathered. */
typedef struct {
    const obj_key *k;     /* kind, and ns ("" = all) */
    const selector *sel;
    uint64_t at;          /* the revision the list reads */
    const char *after_ns; /* keys strictly after (after_ns, after_name) */
    const char *after_name;
    size_t limit;         /* objects per page (SIZE_MAX: all) */
    size_t bytes_max;     /* JSON bytes per page (0: no bound) */
    int skip_sealed;      /* leave out objects that do not decrypt (ke_store_list) */
    json_t *arr;          /* the page */
    size_t bytes;
    int more;             /* a further matching object exists */
    char last_ns[KE_STORE_NS_MAX + 1];
    char last_name[KE_STORE_NAME_MAX + 1];
} list_scan;

/* event_state reads the event at revision `rev` (the first change of its
 * key after the list's revision) and gives the object's text as it was at
 * the list's revision: NULL when the change created it (it did not exist),
 * else the content before the change (prev; for a delete written before
 * prev was kept, the deleted object). *text is malloc'd. */
static int event_state(ke_store *s, uint64_t rev, char **text, size_t *n)
{
    static const char sql[] = "SELECT type, json, prev, kind, ns, name FROM events WHERE rev=?1";
    sqlite3_stmt *st = NULL;
    *text = NULL;
    *n = 0;
    int rc = ke_sqlite_prepare(s->db, sql, &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)rev);
    rc = ke_sqlite_step(s->db, st);
    if (rc == 0) {
        ke_log_error(LOG_MOD, "list: event vanished rev=%" PRIu64, rev);
        rc = KE_EDB;
    } else if (rc == 1) {
        rc = 0;
        if (type_parse((const char *)sqlite3_column_text(st, 0)) != KE_STORE_ADDED) {
            int col = sqlite3_column_type(st, 2) == SQLITE_NULL ? 1 : 2;
            const char *t = (const char *)sqlite3_column_text(st, col);
            *n = (size_t)sqlite3_column_bytes(st, col);
            t = t ? t : "";
            char *plain = NULL;
            rc = text_open(s, (const char *)sqlite3_column_text(st, 3),
                           (const char *)sqlite3_column_text(st, 4),
                           (const char *)sqlite3_column_text(st, 5), &t, n, &plain);
            if (!rc && !(*text = plain ? plain : strndup(t, *n)))
                rc = KE_ENOMEM;
        }
    }
    ke_sqlite_release(s->db, st);
    return rc;
}

/* scan_take offers one object's text to the page: parsed, matched against
 * the selectors, appended unless the page is full (then `more` is set).
 * Returns 0 or a KE_E* code. */
static int scan_take(list_scan *l, const char *ns, const char *name, const char *text, size_t n)
{
    json_error_t err;
    json_t *o = json_loadb(text, n, 0, &err);
    if (!o) { /* err.text may quote the object: log only where */
        ke_log_error(LOG_MOD, "stored object unreadable kind=%s ns=%s name=%s: line %d column %d",
                     l->k->kind, ns, name, err.line, err.column);
        return KE_EDB;
    }
    if (!sel_match(l->sel, o)) {
        json_decref(o);
        return 0;
    }
    size_t got = json_array_size(l->arr);
    if (got >= l->limit || (l->bytes_max && got > 0 && l->bytes + n > l->bytes_max)) {
        json_decref(o);
        l->more = 1;
        return 0;
    }
    if (json_array_append_new(l->arr, o) != 0)
        return KE_ENOMEM;
    l->bytes += n;
    snprintf(l->last_ns, sizeof(l->last_ns), "%s", ns);
    snprintf(l->last_name, sizeof(l->last_name), "%s", name);
    return 0;
}

/* scan_run walks the keys after l's cursor in (ns, name) order, reading
 * each object as it was at revision l->at (s->mu held, l->at >= compacted):
 * the current row, unless the key changed after l->at, in which case its
 * first event after l->at tells its state then. The two statements are
 * merged on the key, so rows are read only as far as the page needs. */
static int scan_run(ke_store *s, list_scan *l)
{
    static const char objects_sql[] =
        "SELECT ns, name, json FROM objects WHERE kind=?1 AND (?2='' OR ns=?2) "
        "AND (ns, name) > (?3, ?4) ORDER BY ns, name";
    static const char events_sql[] =
        "SELECT ns, name, min(rev) FROM events WHERE rev > ?5 AND kind=?1 "
        "AND (?2='' OR ns=?2) AND (ns, name) > (?3, ?4) GROUP BY ns, name ORDER BY ns, name";
    scan_side o = {0}, e = {0};
    int rc = ke_sqlite_prepare(s->db, objects_sql, &o.st);
    if (rc || (rc = ke_sqlite_prepare(s->db, events_sql, &e.st)))
        goto out;
    sqlite3_stmt *both[2] = {o.st, e.st};
    for (int i = 0; i < 2; i++) {
        sqlite3_bind_text(both[i], 1, l->k->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(both[i], 2, l->k->ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(both[i], 3, l->after_ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(both[i], 4, l->after_name, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(e.st, 5, (sqlite3_int64)l->at);
    if ((rc = side_next(s, &o)) || (rc = side_next(s, &e)))
        goto out;
    while ((o.valid || e.valid) && !l->more) {
        int c = !o.valid ? 1 : !e.valid ? -1 : key_cmp(&o, &e);
        if (c < 0) { /* unchanged since l->at: the current row */
            const char *t = (const char *)sqlite3_column_text(o.st, 2);
            size_t n = (size_t)sqlite3_column_bytes(o.st, 2);
            char *plain = NULL;
            t = t ? t : "";
            rc = text_open(s, l->k->kind, o.ns, o.name, &t, &n, &plain);
            if (rc == KE_ECRYPT && l->skip_sealed)
                rc = 0; /* logged by text_open */
            else if (!rc)
                rc = scan_take(l, o.ns, o.name, t, n);
            free(plain);
            if (!rc)
                rc = side_next(s, &o);
        } else { /* changed since: as its first later event says */
            char *t = NULL;
            size_t n = 0;
            rc = event_state(s, (uint64_t)sqlite3_column_int64(e.st, 2), &t, &n);
            if (rc == KE_ECRYPT && l->skip_sealed)
                rc = 0; /* logged by text_open */
            else if (!rc && t)
                rc = scan_take(l, e.ns, e.name, t, n);
            free(t);
            if (!rc && c == 0)
                rc = side_next(s, &o);
            if (!rc)
                rc = side_next(s, &e);
        }
        if (rc)
            goto out;
    }
out:
    ke_sqlite_release(s->db, e.st);
    ke_sqlite_release(s->db, o.st);
    return rc;
}

/* list_do is ke_store_list and ke_store_list_page: limit SIZE_MAX and no
 * byte bound for the former. next is NULL for ke_store_list. */
static int list_do(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                   const char *field_sel, size_t limit, size_t bytes_max, const char *token,
                   json_t **items, uint64_t *rev, char *next, size_t next_len)
{
    if (!items)
        return KE_EINVAL;
    *items = NULL;
    if (next && next_len)
        next[0] = '\0';
    if (!s || (next && next_len < KE_STORE_CONTINUE_MAX))
        return KE_EINVAL;
    char why[320];
    selector *sel = calloc(1, sizeof(*sel));
    if (!sel)
        return KE_ENOMEM;
    int rc = sel_compile(label_sel, field_sel, sel, why, sizeof(why));
    if (rc) {
        if (rc == KE_EINVAL)
            ke_log_warn(LOG_MOD, "list refused kind=%s: %s", kind ? kind : "", why);
        free(sel);
        return rc;
    }
    list_scan l = {.sel = sel, .limit = limit, .bytes_max = bytes_max, .after_ns = "",
                   .after_name = "", .skip_sealed = next == NULL};
    list_cursor cur;
    obj_key k;
    if (!(l.arr = json_array()))
        rc = KE_ENOMEM;
    pthread_mutex_lock(&s->mu);
    if (rc || (rc = key_make(s, kind, ns, NULL, 0, &k)))
        goto out;
    l.k = &k;
    l.at = s->rev;
    if (token && *token) {
        if ((rc = cursor_parse(s, &k, token, &cur, why, sizeof(why)))) {
            ke_log_info(LOG_MOD, "list refused kind=%s: %s", k.kind, why);
            goto out;
        }
        l.at = cur.rev;
        l.after_ns = cur.ns;
        l.after_name = cur.name;
    }
    if ((rc = scan_run(s, &l)))
        goto out;
    if (rev)
        *rev = l.at;
    if (next && l.more)
        snprintf(next, next_len, "1:%s:%" PRIu64 ":%s:%s", k.kind, l.at, l.last_ns,
                 l.last_name);
out:
    pthread_mutex_unlock(&s->mu);
    sel_free(sel);
    free(sel);
    if (rc == 0)
        *items = l.arr;
    else
        json_decref(l.arr);
    return rc;
}

int ke_store_list(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                  const char *field_sel, json_t **items, uint64_t *rev)
{
    return list_do(s, kind, ns, label_sel, field_sel, SIZE_MAX, 0, NULL, items, rev, NULL, 0);
}

int ke_store_list_page(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                       const char *field_sel, size_t limit, const char *continue_token,
                       json_t **items, uint64_t *rev, char *next, size_t next_len)
{
    if (!next) {
        if (items)
            *items = NULL;
        return KE_EINVAL;
    }
    if (limit == 0)
        limit = KE_STORE_LIST_LIMIT_DEFAULT;
    if (limit > KE_STORE_LIST_LIMIT_MAX) {
        ke_log_debug(LOG_MOD, "list limit cut kind=%s limit=%zu max=%d", kind ? kind : "", limit,
                     KE_STORE_LIST_LIMIT_MAX);
        limit = KE_STORE_LIST_LIMIT_MAX;
    }
    return list_do(s, kind, ns, label_sel, field_sel, limit, KE_STORE_LIST_PAGE_BYTES,
                   continue_token, items, rev, next, next_len);
}

int ke_store_compact(ke_store *s, uint64_t keep)
{
    if (!s)
        return KE_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (s->rev > keep && s->rev - keep > s->compacted) {
        uint64_t c = s->rev - keep;
        if ((rc = ke_sqlite_begin(s->db)) == 0) {
            rc = compact_to(s, c);
            rc = rc ? (ke_sqlite_rollback(s->db), rc) : ke_sqlite_commit(s->db);
        }
        if (!rc) {
            s->compacted = c;
            ke_log_info(LOG_MOD, "compacted rev=%" PRIu64 " compacted=%" PRIu64, s->rev, c);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- watches ------------------------------------------------------------ */

int ke_store_watch_start(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                         const char *field_sel, uint64_t from_rev, ke_store_watch_fn fn,
                         void *ud, ke_store_watch **out)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!s || !fn)
        return KE_EINVAL;
    char why[320];
    ke_store_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return KE_ENOMEM;
    int rc = sel_compile(label_sel, field_sel, &w->sel, why, sizeof(why));
    if (rc) {
        if (rc == KE_EINVAL)
            ke_log_warn(LOG_MOD, "watch refused kind=%s: %s", kind ? kind : "", why);
        free(w);
        return rc;
    }
    w->s = s;
    w->fn = fn;
    w->ud = ud;
    atomic_init(&w->stopping, 0);
    obj_key k;
    pthread_mutex_lock(&s->mu);
    if ((rc = key_make(s, kind, ns, NULL, 0, &k)))
        goto out;
    memcpy(w->kind, k.kind, sizeof(w->kind));
    memcpy(w->ns, k.ns, sizeof(w->ns));
    if (from_rev && from_rev < s->compacted) {
        ke_log_info(LOG_MOD, "watch refused: too old kind=%s rv=%" PRIu64 " compacted=%" PRIu64,
                    k.kind, from_rev, s->compacted);
        rc = KE_EGONE;
        goto out;
    }
    if (from_rev > s->rev) {
        ke_log_warn(LOG_MOD, "watch refused: future revision kind=%s rv=%" PRIu64
                             " store=%" PRIu64, k.kind, from_rev, s->rev);
        rc = KE_EINVAL;
        goto out;
    }
    w->last = from_rev ? from_rev : s->rev;
    pthread_mutex_lock(&s->wmu);
    if (s->nwatchers >= KE_STORE_WATCH_MAX) {
        ke_log_warn(LOG_MOD, "watch refused: %d watches open", KE_STORE_WATCH_MAX);
        rc = KE_EFULL;
    } else {
        w->next = s->watchers;
        s->watchers = w;
        s->nwatchers++;
        if (w->last < s->pub_rev)
            pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->wmu);
out:
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        watch_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void ke_store_watch_stop(ke_store_watch *w)
{
    if (!w)
        return;
    ke_store *s = w->s;
    pthread_mutex_lock(&s->wmu);
    atomic_store(&w->stopping, 1);
    pthread_cond_signal(&s->work);
    if (pthread_equal(pthread_self(), s->thread)) {
        w->self_free = 1; /* from a callback: the dispatcher frees it later */
        pthread_mutex_unlock(&s->wmu);
        return;
    }
    while (!w->unlinked)
        pthread_cond_wait(&s->done, &s->wmu);
    pthread_mutex_unlock(&s->wmu);
    watch_free(w);
}

/* sweep unlinks stopped watches (wmu held, dispatcher only). */
static void sweep(ke_store *s)
{
    ke_store_watch **pp = &s->watchers;
    int woke = 0;
    while (*pp) {
        ke_store_watch *w = *pp;
        if (!atomic_load(&w->stopping)) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        s->nwatchers--;
        if (w->self_free) {
            watch_free(w);
        } else {
            w->unlinked = 1;
            woke = 1;
        }
    }
    if (woke)
        pthread_cond_broadcast(&s->done);
}

/* batch_read loads events after `lo` into b (takes s->mu). */
static int batch_read(ke_store *s, batch *b, uint64_t lo)
{
    static const char sql[] = "SELECT rev, kind, ns, type, json, prev, name FROM events "
                              "WHERE rev > ?1 ORDER BY rev LIMIT 256";
    _Static_assert(BATCH_EVENTS == 256, "keep the LIMIT in step");
    sqlite3_stmt *st = NULL;
    size_t bytes = 0;
    int full = 0;
    pthread_mutex_lock(&s->mu);
    b->lo = lo;
    b->compacted = s->compacted;
    int rc = ke_sqlite_prepare(s->db, sql, &st);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)lo);
    while ((rc = ke_sqlite_step(s->db, st)) == 1) {
        batch_ev *e = &b->ev[b->n];
        memset(e, 0, sizeof(*e));
        e->rev = (uint64_t)sqlite3_column_int64(st, 0);
        snprintf(e->kind, sizeof(e->kind), "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(e->ns, sizeof(e->ns), "%s", (const char *)sqlite3_column_text(st, 2));
        e->type = type_parse((const char *)sqlite3_column_text(st, 3));
        const char *js = (const char *)sqlite3_column_text(st, 4);
        const char *pv = (const char *)sqlite3_column_text(st, 5);
        const char *name = (const char *)sqlite3_column_text(st, 6);
        size_t jn = (size_t)sqlite3_column_bytes(st, 4), pn = (size_t)sqlite3_column_bytes(st, 5);
        char *jp = NULL, *pp = NULL;
        js = js ? js : "";
        int orc = text_open(s, e->kind, e->ns, name ? name : "", &js, &jn, &jp);
        if (!orc && pv)
            orc = text_open(s, e->kind, e->ns, name ? name : "", &pv, &pn, &pp);
        if (orc == KE_ECRYPT) { /* logged; watches skip it, as an unreadable event */
            e->type = 0;
            js = "";
            pv = NULL;
        } else if (orc) {
            rc = orc;
            free(jp);
            free(pp);
            break;
        }
        e->json = jp ? jp : strdup(js);
        e->prev = pp ? pp : pv ? strdup(pv) : NULL;
        b->n++;
        if (!e->json || (pv && !e->prev)) {
            rc = KE_ENOMEM;
            break;
        }
        bytes += (size_t)sqlite3_column_bytes(st, 4) + (size_t)sqlite3_column_bytes(st, 5);
        if (b->n == BATCH_EVENTS || bytes >= BATCH_BYTES) {
            full = 1;
            rc = 0;
            break;
        }
    }
    if (rc == 0)
        b->hi = full ? b->ev[b->n - 1].rev : s->rev;
out:
    ke_sqlite_release(s->db, st);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static json_t *ev_parse(const batch_ev *e, const char *text)
{
    json_error_t err;
    json_t *o = json_loads(text, 0, &err);
    if (!o) /* err.text may quote the object: log only where */
        ke_log_error(LOG_MOD, "event unreadable rev=%" PRIu64 ": line %d column %d", e->rev,
                     err.line, err.column);
    return o;
}

/* ev_for decides what watch w sees of event e: 0 (nothing) or an event
 * type, with *obj borrowed from e. Dispatcher only. */
static int ev_for(const ke_store_watch *w, batch_ev *e, const json_t **obj)
{
    if (strcmp(e->kind, w->kind) != 0 || (w->ns[0] && strcmp(e->ns, w->ns) != 0) || !e->type)
        return 0;
    if (!e->parsed) {
        e->parsed = 1;
        e->obj = ev_parse(e, e->json);
    }
    if (!e->obj)
        return 0;
    *obj = e->obj;
    if (sel_empty(&w->sel))
        return e->type;
    int cm = sel_match(&w->sel, e->obj);
    if (e->type != KE_STORE_MODIFIED)
        return cm ? e->type : 0;
    if (!e->prev_parsed) {
        e->prev_parsed = 1;
        e->prev_obj = e->prev ? ev_parse(e, e->prev) : NULL;
        if (e->prev_obj && set_rv(e->prev_obj, e->rev) != 0) {
            json_decref(e->prev_obj);
            e->prev_obj = NULL;
        }
    }
    int pm = e->prev_obj && sel_match(&w->sel, e->prev_obj);
    if (cm)
        return pm ? KE_STORE_MODIFIED : KE_STORE_ADDED;
    if (!pm)
        return 0;
    *obj = e->prev_obj; /* stopped matching: its last matching content */
    return KE_STORE_DELETED;
}

/* deliver hands batch b to every watch (no lock held; the list is only
 * unlinked by this thread, and new watches join at its head). */
static void deliver(ke_store *s, batch *b)
{
    pthread_mutex_lock(&s->wmu);
    ke_store_watch *w = s->watchers;
    pthread_mutex_unlock(&s->wmu);
    for (; w; w = w->next) {
        if (w->ended || atomic_load(&w->stopping))
            continue;
        if (w->last < b->compacted) {
            w->ended = 1;
            ke_log_warn(LOG_MOD, "watch too far behind kind=%s rv=%" PRIu64
                                 " compacted=%" PRIu64, w->kind, w->last, b->compacted);
            w->fn(KE_STORE_GONE, NULL, b->compacted, w->ud);
            continue;
        }
        if (w->last < b->lo)
            continue; /* joined after this batch was read: next round */
        for (size_t i = 0; i < b->n && !atomic_load(&w->stopping); i++) {
            batch_ev *e = &b->ev[i];
            if (e->rev <= w->last)
                continue;
            w->last = e->rev;
            const json_t *obj = NULL;
            int type = ev_for(w, e, &obj);
            if (type)
                w->fn(type, obj, e->rev, w->ud);
        }
        if (w->last < b->hi)
            w->last = b->hi;
    }
}

/* dispatch_main: the "ke-store-watch" thread. */
static void *dispatch_main(void *arg)
{
    ke_store *s = arg;
    pthread_mutex_lock(&s->wmu);
    while (!s->quit) {
        ke_watchdog_beat(s->hb);
        sweep(s);
        uint64_t lo = UINT64_MAX;
        for (ke_store_watch *w = s->watchers; w; w = w->next)
            if (!w->ended && w->last < s->pub_rev && w->last < lo)
                lo = w->last;
        if (lo == UINT64_MAX) {
            /* idle: wake within the watchdog's tick to beat */
            struct timespec tick = ke_time_deadline(ke_watchdog_tick_ms(s->hb));
            pthread_cond_timedwait(&s->work, &s->wmu, &tick);
            continue;
        }
        pthread_mutex_unlock(&s->wmu);
        int rc = batch_read(s, s->batch, lo);
        if (rc == 0)
            deliver(s, s->batch);
        batch_clear(s->batch);
        pthread_mutex_lock(&s->wmu);
        if (rc && !s->quit) {
            ke_log_error(LOG_MOD, "watch dispatcher cannot read events after rev=%" PRIu64
                                  ": %s; retrying", lo, ke_strerror(rc));
            struct timespec ts = ke_time_deadline(DISPATCH_RETRY_MS);
            pthread_cond_timedwait(&s->work, &s->wmu, &ts);
        }
    }
    sweep(s);
    pthread_mutex_unlock(&s->wmu);
    return NULL;
}

/* ---- encryption at rest: the calls -------------------------------------- */

int ke_store_set_crypt(ke_store *s, ke_crypt *c)
{
    if (!s) {
        ke_crypt_free(c);
        return KE_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    ke_crypt *old = s->crypt;
    s->crypt = c;
    pthread_mutex_unlock(&s->mu);
    ke_crypt_free(old);
    if (c)
        ke_log_info(LOG_MOD, "encryption at rest on kind=%s key=%s", KE_STORE_ENCRYPTED_KIND,
                    ke_crypt_primary(c));
    return 0;
}

int ke_store_crypt_check(ke_store *s, const char *kind, const char *ns, const char *name,
                         char *why, size_t len)
{
    static const char sql[] = "SELECT json FROM objects WHERE kind=?1 AND ns=?2 AND name=?3";
    if (why && len)
        why[0] = '\0';
    if (!s || !name)
        return KE_EINVAL;
    obj_key k;
    sqlite3_stmt *st = NULL;
    char *plain = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = key_make(s, kind, ns, name, 1, &k);
    if (rc || (rc = ke_sqlite_prepare(s->db, sql, &st)))
        goto out;
    sqlite3_bind_text(st, 1, k.kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k.ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k.name, -1, SQLITE_STATIC);
    if ((rc = ke_sqlite_step(s->db, st)) <= 0) {
        rc = rc == 0 ? KE_ENOTFOUND : rc;
        goto out;
    }
    const char *t = (const char *)sqlite3_column_text(st, 0);
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    char aad[AAD_MAX];
    aad_make(aad, k.kind, k.ns, k.name);
    rc = t && ke_crypt_sealed(t, n)
             ? ke_crypt_open(s->crypt, aad, t, n, &plain, NULL, why, len)
             : 0;
    if (rc == KE_ECRYPT && !s->crypt && why && len) {
        size_t used = strlen(why);
        snprintf(why + used, len - used, " (store.encryption_key_file is not set)");
    }
out:
    ke_sqlite_release(s->db, st);
    pthread_mutex_unlock(&s->mu);
    free(plain);
    return rc;
}

/* A row that re-encryption rewrites: its key and texts (malloc'd). */
typedef struct {
    uint64_t rev; /* events only */
    char ns[KE_STORE_NS_MAX + 1];
    char name[KE_STORE_NAME_MAX + 1];
    char *text[2]; /* json, prev (events; may be NULL) */
} reenc_row;

/* reenc_text replaces *text (a stored text of object ns/name) with its
 * envelope under the primary key, unless it is one already (s->mu held).
 * Returns 1 when rewritten, 0 when already current, or a KE_E* code. */
static int reenc_text(ke_store *s, const char *ns, const char *name, char **text)
{
    char key[KE_CRYPT_NAME_MAX + 1], *plain = NULL, *sealed = NULL;
    const char *t = *text;
    size_t n = strlen(t);
    if (ke_crypt_sealed(t, n) && ke_crypt_key_of(t, n, key, sizeof(key)) == 0 &&
        strcmp(key, ke_crypt_primary(s->crypt)) == 0)
        return 0;
    const char *stored;
    int rc = text_open(s, KE_STORE_ENCRYPTED_KIND, ns, name, &t, &n, &plain);
    if (!rc)
        rc = text_seal(s, KE_STORE_ENCRYPTED_KIND, ns, name, t, &stored, &sealed);
    free(plain);
    if (rc)
        return rc;
    free(*text);
    *text = sealed;
    return 1;
}

/* reenc_batch rewrites up to KE_STORE_REENCRYPT_BATCH rows of `events`
 * (0: objects) after the cursor in one transaction (takes s->mu).
 * *more tells whether rows may remain; the cursor moves past the batch. */
static int reenc_batch(ke_store *s, int events, uint64_t *rev, char *ns, char *name, int *more,
                       ke_store_reencrypt_count *st_out)
{
    static const char objects_sql[] =
        "SELECT 0, ns, name, json, NULL FROM objects WHERE kind=?1 AND (ns, name) > (?2, ?3) "
        "ORDER BY ns, name LIMIT ?4";
    static const char events_sql[] =
        "SELECT rev, ns, name, json, prev FROM events WHERE kind=?1 AND rev > ?5 "
        "ORDER BY rev LIMIT ?4";
    reenc_row *rows = calloc(KE_STORE_REENCRYPT_BATCH, sizeof(*rows));
    if (!rows)
        return KE_ENOMEM;
    size_t n = 0;
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->mu);
    int rc = ke_sqlite_begin(s->db);
    if (rc)
        goto out;
    if ((rc = ke_sqlite_prepare(s->db, events ? events_sql : objects_sql, &st)))
        goto done;
    sqlite3_bind_text(st, 1, KE_STORE_ENCRYPTED_KIND, -1, SQLITE_STATIC);
    if (!events) {
        sqlite3_bind_text(st, 2, ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_int64(st, 5, (sqlite3_int64)*rev);
    }
    sqlite3_bind_int64(st, 4, KE_STORE_REENCRYPT_BATCH);
    while ((rc = ke_sqlite_step(s->db, st)) == 1) {
        reenc_row *r = &rows[n++];
        r->rev = (uint64_t)sqlite3_column_int64(st, 0);
        snprintf(r->ns, sizeof(r->ns), "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(r->name, sizeof(r->name), "%s", (const char *)sqlite3_column_text(st, 2));
        for (int i = 0; i < 2; i++) {
            const char *t = (const char *)sqlite3_column_text(st, 3 + i);
            if (t && !(r->text[i] = strdup(t))) {
                rc = KE_ENOMEM;
                break;
            }
        }
        if (rc < 0)
            break;
    }
    ke_sqlite_release(s->db, st);
    if (rc < 0)
        goto done;
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        reenc_row *r = &rows[i];
        int changed = 0, bad = 0;
        for (int j = 0; j < 2 && r->text[j]; j++) {
            int x = reenc_text(s, r->ns, r->name, &r->text[j]);
            if (x == KE_ECRYPT)
                bad = 1;
            else if (x < 0)
                rc = x;
            else
                changed |= x;
        }
        if (rc)
            break;
        uint64_t *count = bad ? &st_out->failed : changed ? &st_out->rewritten : &st_out->current;
        (*count)++;
        if (bad || !changed)
            continue;
        if (events)
            rc = sql_run(s, "UPDATE events SET json=?2, prev=?3 WHERE rev=?1", "utt", r->rev,
                         r->text[0], r->text[1]);
        else
            rc = sql_run(s, "UPDATE objects SET json=?4 WHERE kind=?1 AND ns=?2 AND name=?3",
                         "tttt", KE_STORE_ENCRYPTED_KIND, r->ns, r->name, r->text[0]);
    }
done:
    rc = rc ? (ke_sqlite_rollback(s->db), rc) : ke_sqlite_commit(s->db);
out:
    pthread_mutex_unlock(&s->mu);
    *more = rc == 0 && n == KE_STORE_REENCRYPT_BATCH;
    if (n) {
        *rev = rows[n - 1].rev;
        snprintf(ns, KE_STORE_NS_MAX + 1, "%s", rows[n - 1].ns);
        snprintf(name, KE_STORE_NAME_MAX + 1, "%s", rows[n - 1].name);
    }
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 2; j++)
            free(rows[i].text[j]);
    free(rows);
    return rc;
}

int ke_store_reencrypt(ke_store *s, ke_store_reencrypt_stats *st)
{
    ke_store_reencrypt_stats none;
    if (!st)
        st = &none;
    memset(st, 0, sizeof(*st));
    if (!s)
        return KE_EINVAL;
    char primary[KE_CRYPT_NAME_MAX + 1];
    pthread_mutex_lock(&s->mu);
    int on = s->crypt != NULL;
    snprintf(primary, sizeof(primary), "%s", ke_crypt_primary(s->crypt));
    pthread_mutex_unlock(&s->mu);
    if (!on) {
        ke_log_error(LOG_MOD, "re-encryption needs a key file (store.encryption_key_file)");
        return KE_EINVAL;
    }
    int rc = 0;
    for (int events = 0; events < 2 && !rc; events++) {
        uint64_t rev = 0;
        char ns[KE_STORE_NS_MAX + 1] = "", name[KE_STORE_NAME_MAX + 1] = "";
        int more = 1;
        ke_store_reencrypt_count *part = events ? &st->events : &st->objects;
        while (more && !rc)
            rc = reenc_batch(s, events, &rev, ns, name, &more, part);
    }
    if (!rc && (st->objects.failed || st->events.failed))
        rc = KE_ECRYPT;
    ke_log_info(LOG_MOD, "re-encrypted kind=%s key=%s objects=%" PRIu64 " current=%" PRIu64
                         " failed=%" PRIu64 " events=%" PRIu64 " current=%" PRIu64
                         " failed=%" PRIu64 ": %s",
                KE_STORE_ENCRYPTED_KIND, primary, st->objects.rewritten,
                st->objects.current, st->objects.failed, st->events.rewritten, st->events.current,
                st->events.failed, ke_strerror(rc));
    return rc;
}
