/*
 * ke_k8s_patch.c — merge patch, JSON patch and strategic merge patch over
 * jansson values. See ke_k8s_patch.h.
 *
 * Every entry point first checks the depth of the document and the patch,
 * then works on a deep copy of the document, which it swaps in on success.
 * Recursion follows the patch (strategic and merge patch) or the document
 * (copies, comparisons), both bounded by KE_K8S_JSON_DEPTH_MAX; a JSON patch
 * checks that every value it places keeps the document within the bound.
 */
#include "ke_k8s_patch.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_err.h"
#include "ke_k8s.h"

/* failc: code with the reason (ke_err_why). */
#define failc(why, len, code, ...) ke_err_why(code, why, len, __VA_ARGS__)

static int oom(char *why, size_t len)
{
    return failc(why, len, KE_ENOMEM, "out of memory");
}

/* depth_both checks doc and patch against KE_K8S_JSON_DEPTH_MAX, naming
 * which one is too deep. */
static int depth_both(const json_t *doc, const json_t *patch, char *why, size_t len)
{
    char tmp[200];
    if (ke_k8s_json_depth_check(doc, KE_K8S_JSON_DEPTH_MAX, tmp, sizeof(tmp)))
        return failc(why, len, KE_EINVAL, "object: %s", tmp);
    if (ke_k8s_json_depth_check(patch, KE_K8S_JSON_DEPTH_MAX, tmp, sizeof(tmp)))
        return failc(why, len, KE_EINVAL, "patch: %s", tmp);
    return 0;
}

/* ------------------------------------------------------------------ */
/* RFC 7386 merge patch                                                */

/* mp merges patch into target (a reference the call consumes; NULL when
 * absent) and returns the result (a new reference), NULL on ENOMEM. */
static json_t *mp(json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_deep_copy(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
        if (!target)
            return NULL;
    }
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach((json_t *)patch, k, kl, v) {
        if (json_is_null(v)) {
            json_object_deln(target, k, kl);
            continue;
        }
        json_t *cur = json_incref(json_object_getn(target, k, kl));
        json_t *nv = mp(cur, v);
        if (!nv || json_object_setn_new(target, k, kl, nv)) {
            json_decref(target);
            return NULL;
        }
    }
    return target;
}

int ke_k8s_merge_patch(json_t **doc, const json_t *patch, char *why, size_t len)
{
    if (!doc || !*doc || !patch)
        return failc(why, len, KE_EINVAL, "patch: missing document or patch");
    int rc = depth_both(*doc, patch, why, len);
    if (rc)
        return rc;
    json_t *work = json_deep_copy(*doc);
    if (!work)
        return oom(why, len);
    json_t *out = mp(work, patch);
    if (!out)
        return oom(why, len);
    json_decref(*doc);
    *doc = out;
    return 0;
}

/* ------------------------------------------------------------------ */
/* RFC 6902 JSON patch                                                 */

/* json_eq: JSON equality with numbers compared by value. */
static int json_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        size_t kl;
        json_t *v;
        json_object_keylen_foreach((json_t *)a, k, kl, v) {
            const json_t *w = json_object_getn(b, k, kl);
            if (!w || !json_eq(v, w))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_string(a))
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    return 1; /* true, false, null */
}

/* json_size adds to *acc the rough compact-JSON size of v, stopping once
 * *acc passes cap. */
static void json_size(const json_t *v, size_t *acc, size_t cap)
{
    if (*acc > cap)
        return;
    if (json_is_object(v)) {
        *acc += 2;
        const char *k;
        size_t kl;
        json_t *e;
        json_object_keylen_foreach((json_t *)v, k, kl, e) {
            (void)k;
            *acc += kl + 4;
            json_size(e, acc, cap);
            if (*acc > cap)
                return;
        }
    } else if (json_is_array(v)) {
        *acc += 2;
        for (size_t i = 0; i < json_array_size(v) && *acc <= cap; i++) {
            *acc += 1;
            json_size(json_array_get(v, i), acc, cap);
        }
    } else if (json_is_string(v)) {
        *acc += json_string_length(v) + 2;
    } else {
        *acc += 8;
    }
}

/* A parsed RFC 6901 pointer: the unescaped tokens. */
typedef struct jptr {
    char **tok;
    size_t n;
} jptr;

static void jptr_free(jptr *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->tok[i]);
    free(p->tok);
    p->tok = NULL;
    p->n = 0;
}

/* jptr_parse parses s (NUL-terminated, length sl). Returns 0, KE_EINVAL
 * (why holds the reason, without the path) or KE_ENOMEM. */
static int jptr_parse(const char *s, size_t sl, jptr *p, char *why, size_t len)
{
    p->tok = NULL;
    p->n = 0;
    if (strlen(s) != sl)
        return failc(why, len, KE_EINVAL, "contains a NUL character");
    if (sl == 0)
        return 0;
    if (s[0] != '/')
        return failc(why, len, KE_EINVAL, "\"%s\": a JSON pointer starts with '/'", s);
    size_t count = 0;
    for (size_t i = 0; i < sl; i++)
        count += s[i] == '/';
    p->tok = calloc(count, sizeof(*p->tok));
    if (!p->tok)
        return oom(why, len);
    const char *c = s + 1;
    for (;;) {
        const char *end = strchr(c, '/');
        size_t tl = end ? (size_t)(end - c) : strlen(c);
        char *t = malloc(tl + 1);
        if (!t) {
            jptr_free(p);
            return oom(why, len);
        }
        p->tok[p->n++] = t;
        size_t o = 0;
        for (size_t i = 0; i < tl; i++) {
            if (c[i] != '~') {
                t[o++] = c[i];
                continue;
            }
            if (i + 1 < tl && (c[i + 1] == '0' || c[i + 1] == '1')) {
                t[o++] = c[i + 1] == '0' ? '~' : '/';
                i++;
                continue;
            }
            jptr_free(p);
            return failc(why, len, KE_EINVAL, "\"%s\": '~' must be followed by 0 or 1", s);
        }
        t[o] = '\0';
        if (!end)
            break;
        c = end + 1;
    }
    return 0;
}

/* arr_index parses an array index token: "0" or digits without a leading
 * zero, below `bound`; "-" (when dash_ok) is `size`. Returns 0 or -1. */
static int arr_index(const char *t, size_t size, int dash_ok, size_t *out)
{
    if (dash_ok && strcmp(t, "-") == 0) {
        *out = size;
        return 0;
    }
    if (!t[0] || (t[0] == '0' && t[1]))
        return -1;
    size_t v = 0;
    for (const char *c = t; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        if (v > (SIZE_MAX - 9) / 10)
            return -1;
        v = v * 10 + (size_t)(*c - '0');
    }
    *out = v;
    return 0;
}

/* The state of one JSON patch: the working document and where to report. */
typedef struct jp {
    json_t *doc;
    size_t op;
    const char *field; /* "path" or "from" */
    const char *ptr;   /* the pointer text, for messages */
    size_t copied;
    char *why;
    size_t len;
} jp;

static int jp_fail(jp *c, int code, const char *what)
{
    return failc(c->why, c->len, code, "ops[%zu].%s: \"%s\": %s", c->op, c->field, c->ptr, what);
}

/* jp_parent resolves all but the last token of p: *parent is the container
 * the last token indexes. Root pointers have no parent. */
static int jp_parent(jp *c, const jptr *p, json_t **parent)
{
    json_t *cur = c->doc;
    for (size_t i = 0; i + 1 < p->n; i++) {
        if (json_is_object(cur)) {
            cur = json_object_get(cur, p->tok[i]);
        } else if (json_is_array(cur)) {
            size_t ix;
            if (arr_index(p->tok[i], 0, 0, &ix) || ix >= json_array_size(cur))
                return jp_fail(c, KE_EINVAL, "path does not exist");
            cur = json_array_get(cur, ix);
        } else {
            cur = NULL;
        }
        if (!cur)
            return jp_fail(c, KE_EINVAL, "path does not exist");
    }
    *parent = cur;
    return 0;
}

/* jp_get finds the value p names (borrowed). */
static int jp_get(jp *c, const jptr *p, json_t **out)
{
    if (p->n == 0) {
        *out = c->doc;
        return 0;
    }
    json_t *parent;
    int rc = jp_parent(c, p, &parent);
    if (rc)
        return rc;
    const char *t = p->tok[p->n - 1];
    json_t *v = NULL;
    if (json_is_object(parent)) {
        v = json_object_get(parent, t);
    } else if (json_is_array(parent)) {
        size_t ix;
        if (!arr_index(t, 0, 0, &ix) && ix < json_array_size(parent))
            v = json_array_get(parent, ix);
    }
    if (!v)
        return jp_fail(c, KE_EINVAL, "path does not exist");
    *out = v;
    return 0;
}

/* jp_add places v (a reference the call consumes) at p: RFC 6902 "add". */
static int jp_add(jp *c, const jptr *p, json_t *v)
{
    char tmp[200];
    if (ke_k8s_json_depth_check(v, KE_K8S_JSON_DEPTH_MAX - (int)p->n, tmp, sizeof(tmp))) {
        json_decref(v);
        return jp_fail(c, KE_EINVAL, "the value would nest the object too deep");
    }
    if (p->n == 0) {
        json_decref(c->doc);
        c->doc = v;
        return 0;
    }
    json_t *parent;
    int rc = jp_parent(c, p, &parent);
    if (rc) {
        json_decref(v);
        return rc;
    }
    const char *t = p->tok[p->n - 1];
    if (json_is_object(parent)) {
        if (json_object_set_new(parent, t, v))
            return oom(c->why, c->len);
        return 0;
    }
    if (json_is_array(parent)) {
        size_t ix, n = json_array_size(parent);
        if (arr_index(t, n, 1, &ix) || ix > n) {
            json_decref(v);
            return jp_fail(c, KE_EINVAL, "array index out of range");
        }
        if (json_array_insert_new(parent, ix, v))
            return oom(c->why, c->len);
        return 0;
    }
    json_decref(v);
    return jp_fail(c, KE_EINVAL, "parent is not an object or array");
}

/* jp_remove removes the value at p; *out (when not NULL) gets a reference
 * to it. */
static int jp_remove(jp *c, const jptr *p, json_t **out)
{
    if (p->n == 0)
        return jp_fail(c, KE_EINVAL, "cannot remove the whole document");
    json_t *parent;
    int rc = jp_parent(c, p, &parent);
    if (rc)
        return rc;
    const char *t = p->tok[p->n - 1];
    json_t *v = NULL;
    if (json_is_object(parent)) {
        v = json_object_get(parent, t);
        if (v) {
            json_incref(v);
            json_object_del(parent, t);
        }
    } else if (json_is_array(parent)) {
        size_t ix;
        if (!arr_index(t, 0, 0, &ix) && ix < json_array_size(parent)) {
            v = json_incref(json_array_get(parent, ix));
            json_array_remove(parent, ix);
        }
    }
    if (!v)
        return jp_fail(c, KE_EINVAL, "path does not exist");
    if (out)
        *out = v;
    else
        json_decref(v);
    return 0;
}

/* jp_ptr reads the pointer member `field` of op into *p. */
static int jp_ptr(jp *c, const json_t *op, const char *field, jptr *p)
{
    const json_t *s = json_object_get(op, field);
    c->field = field;
    c->ptr = "";
    if (!json_is_string(s))
        return failc(c->why, c->len, KE_EINVAL, "ops[%zu].%s: required, a string", c->op, field);
    c->ptr = json_string_value(s);
    char tmp[200];
    int rc = jptr_parse(json_string_value(s), json_string_length(s), p, tmp, sizeof(tmp));
    if (rc == KE_ENOMEM)
        return oom(c->why, c->len);
    if (rc)
        return failc(c->why, c->len, rc, "ops[%zu].%s: %s", c->op, field, tmp);
    return 0;
}

/* is_prefix: whether pointer a is a proper prefix of pointer b. */
static int is_prefix(const jptr *a, const jptr *b)
{
    if (a->n >= b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->tok[i], b->tok[i]) != 0)
            return 0;
    return 1;
}

static int jp_op(jp *c, const json_t *op)
{
    if (!json_is_object(op))
        return failc(c->why, c->len, KE_EINVAL, "ops[%zu]: must be an object", c->op);
    const json_t *o = json_object_get(op, "op");
    if (!json_is_string(o))
        return failc(c->why, c->len, KE_EINVAL, "ops[%zu].op: required, a string", c->op);
    const char *name = json_string_value(o);
    int add = !strcmp(name, "add"), rem = !strcmp(name, "remove"),
        rep = !strcmp(name, "replace"), mov = !strcmp(name, "move"), cpy = !strcmp(name, "copy"),
        tst = !strcmp(name, "test");
    if (!(add || rem || rep || mov || cpy || tst))
        return failc(c->why, c->len, KE_EINVAL,
                     "ops[%zu].op: unknown operation \"%s\" "
                     "(add, remove, replace, move, copy, test)",
                     c->op, name);
    const json_t *value = json_object_get(op, "value");
    if ((add || rep || tst) && !value)
        return failc(c->why, c->len, KE_EINVAL, "ops[%zu].value: required for \"%s\"", c->op,
                     name);
    jptr path, from = {0};
    int rc = jp_ptr(c, op, "path", &path);
    if (rc)
        return rc;
    if (mov || cpy) {
        rc = jp_ptr(c, op, "from", &from);
        if (rc) {
            jptr_free(&path);
            return rc;
        }
    }
    json_t *v = NULL;
    if (add) {
        v = json_deep_copy(value);
        rc = v ? jp_add(c, &path, v) : oom(c->why, c->len);
    } else if (rem) {
        rc = jp_remove(c, &path, NULL);
    } else if (rep) {
        rc = jp_get(c, &path, &v);
        if (!rc) {
            json_t *nv = json_deep_copy(value);
            if (!nv) {
                rc = oom(c->why, c->len);
            } else if (path.n == 0) {
                rc = jp_add(c, &path, nv);
            } else {
                rc = jp_remove(c, &path, NULL);
                if (!rc)
                    rc = jp_add(c, &path, nv);
                else
                    json_decref(nv);
            }
        }
    } else if (mov) {
        /* from is c->field for errors until the source is found */
        rc = jp_get(c, &from, &v);
        if (!rc && is_prefix(&from, &path)) {
            rc = jp_fail(c, KE_EINVAL, "cannot move a value into itself");
        } else if (!rc) {
            rc = jp_remove(c, &from, &v);
            c->field = "path";
            c->ptr = json_string_value(json_object_get(op, "path"));
            if (!rc)
                rc = jp_add(c, &path, v);
        }
    } else if (cpy) {
        rc = jp_get(c, &from, &v);
        if (!rc) {
            json_size(v, &c->copied, KE_K8S_JSON_PATCH_COPY_MAX);
            if (c->copied > KE_K8S_JSON_PATCH_COPY_MAX) {
                rc = failc(c->why, c->len, KE_EINVAL,
                           "ops[%zu]: copies exceed %d bytes in all", c->op,
                           KE_K8S_JSON_PATCH_COPY_MAX);
            } else {
                c->field = "path";
                c->ptr = json_string_value(json_object_get(op, "path"));
                json_t *nv = json_deep_copy(v);
                rc = nv ? jp_add(c, &path, nv) : oom(c->why, c->len);
            }
        }
    } else { /* test */
        json_t *cur = NULL;
        char tmp[8];
        char *w = c->why;
        size_t wl = c->len;
        c->why = tmp; /* a missing path fails the test: a conflict */
        c->len = sizeof(tmp);
        rc = jp_get(c, &path, &cur);
        c->why = w;
        c->len = wl;
        if (rc == KE_ENOMEM)
            rc = oom(c->why, c->len);
        else if (rc)
            rc = jp_fail(c, KE_ECONFLICT, "test failed: path does not exist");
        else if (!json_eq(cur, value))
            rc = jp_fail(c, KE_ECONFLICT, "test failed: value differs");
    }
    jptr_free(&path);
    jptr_free(&from);
    return rc;
}

int ke_k8s_json_patch(json_t **doc, const json_t *ops, char *why, size_t len)
{
    if (!doc || !*doc || !ops)
        return failc(why, len, KE_EINVAL, "patch: missing document or patch");
    if (!json_is_array(ops))
        return failc(why, len, KE_EINVAL, "patch: a JSON patch must be an array of operations");
    if (json_array_size(ops) > KE_K8S_JSON_PATCH_OPS_MAX)
        return failc(why, len, KE_EINVAL, "patch: %zu operations, at most %d", json_array_size(ops),
                     KE_K8S_JSON_PATCH_OPS_MAX);
    int rc = depth_both(*doc, ops, why, len);
    if (rc)
        return rc;
    jp c = {.doc = json_deep_copy(*doc), .why = why, .len = len};
    if (!c.doc)
        return oom(why, len);
    for (c.op = 0; c.op < json_array_size(ops); c.op++) {
        rc = jp_op(&c, json_array_get(ops, c.op));
        if (rc) {
            json_decref(c.doc);
            return rc;
        }
    }
    json_decref(*doc);
    *doc = c.doc;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Strategic merge patch                                               */

#define DIR_PATCH "$patch"
#define DIR_RETAIN "$retainKeys"
#define DIR_ORDER "$setElementOrder/"
#define DIR_DELPRIM "$deleteFromPrimitiveList/"

/* A growable path: "spec.containers[].env" (meta) or "spec.containers[0]"
 * (display). */
typedef struct pbuf {
    char *s;
    size_t n, cap;
    int oom;
} pbuf;

static size_t pb_add(pbuf *b, const char *sep, const char *s, size_t sl)
{
    size_t old = b->n, need = b->n + strlen(sep) + sl + 1;
    if (b->oom)
        return old;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return old;
        }
        b->s = ns;
        b->cap = cap;
    }
    size_t sepl = strlen(sep);
    memcpy(b->s + b->n, sep, sepl);
    memcpy(b->s + b->n + sepl, s, sl);
    b->n += sepl + sl;
    b->s[b->n] = '\0';
    return old;
}

static void pb_cut(pbuf *b, size_t n)
{
    if (b->s && n <= b->n) {
        b->n = n;
        b->s[n] = '\0';
    }
}

static const char *pb_str(const pbuf *b)
{
    return b->s && b->n ? b->s : "";
}

typedef struct smp {
    const char *kind;
    ke_k8s_patch_meta_fn meta;
    void *ud;
    pbuf mpath; /* the field path for meta, elements as "[]" */
    pbuf dpath; /* the path for messages, elements as "[i]" (the patch's) */
    char *why;
    size_t len;
} smp;

/* Mark of both paths, to restore. */
typedef struct pmark {
    size_t m, d;
} pmark;

static pmark push_key(smp *c, const char *k)
{
    pmark mk;
    size_t kl = strlen(k);
    mk.m = pb_add(&c->mpath, c->mpath.n ? "." : "", k, kl);
    mk.d = pb_add(&c->dpath, c->dpath.n ? "." : "", k, kl);
    return mk;
}

static pmark push_index(smp *c, size_t i)
{
    pmark mk;
    char ix[32];
    int n = snprintf(ix, sizeof(ix), "[%zu]", i);
    mk.m = pb_add(&c->mpath, "", "[]", 2);
    mk.d = pb_add(&c->dpath, "", ix, (size_t)n);
    return mk;
}

static void pop(smp *c, pmark mk)
{
    pb_cut(&c->mpath, mk.m);
    pb_cut(&c->dpath, mk.d);
}

static int sfail(smp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sfail(smp *c, const char *fmt, ...)
{
    if (c->why && c->len) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        const char *p = pb_str(&c->dpath);
        snprintf(c->why, c->len, "%s: %s", *p ? p : "patch", msg);
        ke_err_oneline(c->why);
    }
    return KE_EINVAL;
}

static int soom(smp *c)
{
    return oom(c->why, c->len);
}

/* Metadata of the field at c->mpath, parsed. */
typedef struct fmeta {
    int merge;
    const char *key; /* merge key, or NULL */
} fmeta;

static fmeta lookup(smp *c)
{
    fmeta f = {0, NULL};
    ke_k8s_patch_meta m = {NULL, NULL};
    if (!c->meta || c->mpath.oom || c->meta(c->ud, c->kind, pb_str(&c->mpath), &m) != 1)
        return f;
    const char *s = m.strategy ? m.strategy : "";
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n == 5 && strncmp(s, "merge", 5) == 0)
            f.merge = 1;
        s += n;
        if (*s == ',')
            s++;
    }
    f.key = m.merge_key && m.merge_key[0] ? m.merge_key : NULL;
    return f;
}

static int is_primitive(const json_t *v)
{
    return v && !json_is_object(v) && !json_is_array(v);
}

/* keystr gives a primitive its identity text (malloc'd): numbers by value
 * (80 and 80.0 alike), strings as JSON text. NULL for a non-primitive or
 * on ENOMEM (*nomem set). */
static char *keystr(const json_t *v, int *nomem)
{
    char buf[64];
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18)
            snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)d);
        else
            snprintf(buf, sizeof(buf), "%.17g", d);
    } else if (json_is_true(v)) {
        strcpy(buf, "true");
    } else if (json_is_false(v)) {
        strcpy(buf, "false");
    } else if (json_is_null(v)) {
        strcpy(buf, "null");
    } else if (json_is_string(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!s)
            *nomem = 1;
        return s;
    } else {
        return NULL;
    }
    char *s = strdup(buf);
    if (!s)
        *nomem = 1;
    return s;
}

/* elem_key: the identity of a list element: its merge-key value's (key
 * set) or its own (primitives). NULL when it has none. */
static char *elem_key(const json_t *e, const char *key, int *nomem)
{
    if (key)
        return json_is_object(e) ? keystr(json_object_get(e, key), nomem) : NULL;
    return keystr(e, nomem);
}

/* An identity → position table (a jansson object used as a hash). */
static int idx_put(json_t *idx, const char *ks, size_t pos, int keep_first)
{
    if (keep_first && json_object_get(idx, ks))
        return 0;
    return json_object_set_new(idx, ks, json_integer((json_int_t)pos));
}

static long idx_get(const json_t *idx, const char *ks)
{
    const json_t *v = ks ? json_object_get(idx, ks) : NULL;
    return v ? (long)json_integer_value(v) : -1;
}

static int smp_map(smp *c, json_t *orig, const json_t *patch, int *del);
static int smp_list(smp *c, const json_t *orig, const json_t *patch, json_t **out);

/* smp_fresh makes the value a patch value v gives where there is nothing
 * to merge into: v merged into an empty value of its type (so nulls and
 * directives are interpreted, not copied). *out is NULL when v deletes
 * itself ({"$patch": "delete"}). */
static int smp_fresh(smp *c, const json_t *v, json_t **out)
{
    *out = NULL;
    if (json_is_object(v)) {
        json_t *o = json_object();
        if (!o)
            return soom(c);
        int del = 0, rc = smp_map(c, o, v, &del);
        if (rc || del) {
            json_decref(o);
            return rc;
        }
        *out = o;
        return 0;
    }
    if (json_is_array(v))
        return smp_list(c, NULL, v, out);
    *out = json_deep_copy(v);
    return *out ? 0 : soom(c);
}

/* smp_list_replace: a list without merge strategy is the patch's. */
static int smp_list_replace(smp *c, const json_t *patch, json_t **out)
{
    json_t *res = json_array();
    if (!res)
        return soom(c);
    for (size_t i = 0; i < json_array_size(patch); i++) {
        pmark mk = push_index(c, i);
        json_t *e;
        int rc = smp_fresh(c, json_array_get(patch, i), &e);
        pop(c, mk);
        if (!rc && e && json_array_append_new(res, e))
            rc = soom(c);
        if (rc) {
            json_decref(res);
            return rc;
        }
    }
    *out = res;
    return 0;
}

/* list_directive reads the "$patch" of a list element (an object), NULL
 * when none. */
static int list_directive(smp *c, const json_t *e, size_t i, const char **d)
{
    *d = NULL;
    const json_t *p = json_is_object(e) ? json_object_get(e, DIR_PATCH) : NULL;
    if (!p)
        return 0;
    pmark mk = push_index(c, i);
    int rc = 0;
    if (!json_is_string(p))
        rc = sfail(c, "$patch: must be a string");
    else if (strcmp(json_string_value(p), "replace") && strcmp(json_string_value(p), "delete") &&
             strcmp(json_string_value(p), "merge"))
        rc = sfail(c, "$patch: unknown directive \"%s\" (replace, delete or merge)",
                   json_string_value(p));
    pop(c, mk);
    *d = rc ? NULL : json_string_value(p);
    return rc;
}

/* smp_list_keyed merges a list of objects by merge key. */
static int smp_list_keyed(smp *c, const json_t *orig, const json_t *patch, const char *key,
                          json_t **out)
{
    int rc = 0, nomem = 0, replace = 0;
    json_t *dels = json_object(), *idx = json_object(), *res = json_array();
    char *ks = NULL;
    if (!dels || !idx || !res) {
        rc = soom(c);
        goto done;
    }
    /* Directive elements first: replace and delete. */
    for (size_t i = 0; i < json_array_size(patch); i++) {
        const json_t *e = json_array_get(patch, i);
        const char *d;
        if ((rc = list_directive(c, e, i, &d)))
            goto done;
        pmark mk = push_index(c, i);
        if (!json_is_object(e)) {
            rc = sfail(c, "must be an object (list merges by key \"%s\")", key);
        } else if (d && !strcmp(d, "replace")) {
            replace = 1;
        } else if (!json_object_get(e, key)) {
            if (!(d && !strcmp(d, "merge") && json_object_size(e) == 1))
                rc = sfail(c, "missing merge key \"%s\"", key);
        } else if (!(ks = elem_key(e, key, &nomem))) {
            rc = nomem ? soom(c)
                       : sfail(c, "%s: a merge key must be a string, number or boolean", key);
        } else if (d && !strcmp(d, "delete") && json_object_set_new(dels, ks, json_true())) {
            rc = soom(c);
        }
        pop(c, mk);
        free(ks);
        ks = NULL;
        if (rc)
            goto done;
    }
    /* The original's elements, less deleted ones (none when replaced). */
    for (size_t i = 0; !replace && orig && i < json_array_size(orig); i++) {
        json_t *e = json_array_get(orig, i);
        ks = elem_key(e, key, &nomem);
        if (nomem) {
            rc = soom(c);
            goto done;
        }
        if (!ks || !json_object_get(dels, ks)) {
            if ((ks && idx_put(idx, ks, json_array_size(res), 1)) || json_array_append(res, e)) {
                rc = soom(c);
                goto done;
            }
        }
        free(ks);
        ks = NULL;
    }
    /* The patch's elements merge in or append. */
    for (size_t i = 0; i < json_array_size(patch); i++) {
        const json_t *e = json_array_get(patch, i);
        const json_t *d = json_object_get(e, DIR_PATCH);
        if (d && strcmp(json_string_value(d), "merge"))
            continue; /* replace or delete: done above */
        if (!json_object_get(e, key))
            continue; /* a bare {"$patch": "merge"} */
        ks = elem_key(e, key, &nomem);
        if (!ks) {
            rc = soom(c);
            goto done;
        }
        long at = idx_get(idx, ks);
        pmark mk = push_index(c, i);
        if (at >= 0) {
            int del = 0;
            rc = smp_map(c, json_array_get(res, (size_t)at), e, &del);
        } else {
            json_t *ne;
            rc = smp_fresh(c, e, &ne);
            if (!rc && ne) {
                if (idx_put(idx, ks, json_array_size(res), 1) || json_array_append_new(res, ne))
                    rc = soom(c);
            }
        }
        pop(c, mk);
        free(ks);
        ks = NULL;
        if (rc)
            goto done;
    }
done:
    free(ks);
    json_decref(dels);
    json_decref(idx);
    if (rc) {
        json_decref(res);
        return rc;
    }
    *out = res;
    return 0;
}

/* smp_list_set merges a list of primitives as a set. */
static int smp_list_set(smp *c, const json_t *orig, const json_t *patch, json_t **out)
{
    int rc = 0, nomem = 0, replace = 0;
    json_t *seen = json_object(), *res = json_array();
    char *ks = NULL;
    if (!seen || !res) {
        rc = soom(c);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(patch); i++) {
        const json_t *e = json_array_get(patch, i);
        const char *d;
        if ((rc = list_directive(c, e, i, &d)))
            goto done;
        if (d && !strcmp(d, "replace")) {
            replace = 1;
        } else if (d && !strcmp(d, "delete")) {
            pmark mk = push_index(c, i);
            rc = sfail(c, "$patch delete needs a merge key; use " DIR_DELPRIM "<field>");
            pop(c, mk);
            goto done;
        } else if (!d && !is_primitive(e)) {
            pmark mk = push_index(c, i);
            rc = sfail(c, "must be a string, number, boolean or null (list merges as a set)");
            pop(c, mk);
            goto done;
        }
    }
    for (int pass = replace ? 1 : 0; pass < 2; pass++) {
        const json_t *src = pass ? patch : orig;
        for (size_t i = 0; src && i < json_array_size(src); i++) {
            json_t *e = json_array_get(src, i);
            if (!is_primitive(e)) {
                if (pass == 0 && json_array_append(res, e)) /* kept as is */
                    rc = soom(c);
                if (rc)
                    goto done;
                continue;
            }
            ks = keystr(e, &nomem);
            if (!ks) {
                rc = soom(c);
                goto done;
            }
            if (!json_object_get(seen, ks)) {
                json_t *ne = pass ? json_deep_copy(e) : json_incref(e);
                if (!ne || json_object_set_new(seen, ks, json_true()) ||
                    json_array_append_new(res, ne))
                    rc = soom(c);
            }
            free(ks);
            ks = NULL;
            if (rc)
                goto done;
        }
    }
done:
    free(ks);
    json_decref(seen);
    if (rc) {
        json_decref(res);
        return rc;
    }
    *out = res;
    return 0;
}

/* smp_list merges patch (an array) into orig (an array, or NULL: none) at
 * the field c->mpath names; *out is the new list. */
static int smp_list(smp *c, const json_t *orig, const json_t *patch, json_t **out)
{
    *out = NULL;
    fmeta m = lookup(c);
    if (!m.merge)
        return smp_list_replace(c, patch, out);
    if (m.key)
        return smp_list_keyed(c, orig, patch, m.key, out);
    return smp_list_set(c, orig, patch, out);
}

/* An element being ordered: its sort key and original position. */
typedef struct oitem {
    json_t *v;
    long key; /* index in the order list or in the original; -1: none */
    size_t pos;
} oitem;

static int oitem_cmp(const void *a, const void *b)
{
    const oitem *x = a, *y = b;
    /* keyless last, otherwise by key; ties by position (a stable sort) */
    if ((x->key < 0) != (y->key < 0))
        return x->key < 0 ? 1 : -1;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* smp_order applies "$setElementOrder/<f>" (order) to orig[f], merged from
 * before (the list before the patch; may be NULL) and plist (the patch's
 * f; may be NULL). c->paths name f. */
static int smp_order(smp *c, json_t *orig, const char *f, const json_t *order,
                     const json_t *before, const json_t *plist)
{
    fmeta m = lookup(c);
    json_t *cur = json_object_get(orig, f);
    if (!m.merge || !json_is_array(cur))
        return 0;
    size_t n = json_array_size(cur);
    int rc = 0, nomem = 0;
    char *ks = NULL;
    json_t *oidx = json_object(), *bidx = json_object(), *res = json_array();
    oitem *pit = calloc(n + 1, sizeof(*pit)), *sit = calloc(n + 1, sizeof(*sit));
    size_t np = 0, ns = 0;
    if (!oidx || !bidx || !res || !pit || !sit) {
        rc = soom(c);
        goto done;
    }
    /* The directive's elements and their positions. */
    for (size_t j = 0; j < json_array_size(order); j++) {
        const json_t *e = json_array_get(order, j);
        ks = elem_key(e, m.key, &nomem);
        if (!ks) {
            if (nomem) {
                rc = soom(c);
            } else if (m.key) {
                if (json_is_object(e) && !json_object_get(e, m.key))
                    rc = sfail(c, "$setElementOrder: element %zu: missing merge key \"%s\"", j,
                               m.key);
                else
                    rc = sfail(c, "$setElementOrder: element %zu: must be {\"%s\": value}", j,
                               m.key);
            } else {
                rc = sfail(c, "$setElementOrder: element %zu: must be a string, number, boolean "
                              "or null", j);
            }
            goto done;
        }
        if (idx_put(oidx, ks, j, 1)) {
            rc = soom(c);
            goto done;
        }
        free(ks);
        ks = NULL;
    }
    /* The patch's list must follow the directive's order. */
    long last = -1;
    for (size_t i = 0; plist && i < json_array_size(plist); i++) {
        const json_t *e = json_array_get(plist, i);
        if (json_is_object(e) && json_object_get(e, DIR_PATCH))
            continue;
        ks = elem_key(e, m.key, &nomem);
        if (nomem) {
            rc = soom(c);
            goto done;
        }
        long at = idx_get(oidx, ks);
        free(ks);
        ks = NULL;
        if (at < last || at < 0) {
            rc = sfail(c, "$setElementOrder: element %zu of the patch's list is %s", i,
                       at < 0 ? "not in it" : "out of its order");
            goto done;
        }
        last = at;
    }
    /* Positions in the list before the patch. */
    for (size_t i = 0; before && i < json_array_size(before); i++) {
        ks = elem_key(json_array_get(before, i), m.key, &nomem);
        if (nomem || (ks && idx_put(bidx, ks, i, 1))) {
            rc = soom(c);
            goto done;
        }
        free(ks);
        ks = NULL;
    }
    /* Split: elements the directive names, the others (the server's). */
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(cur, i);
        ks = elem_key(e, m.key, &nomem);
        if (nomem) {
            rc = soom(c);
            goto done;
        }
        long at = idx_get(oidx, ks);
        if (at >= 0)
            pit[np++] = (oitem){e, at, i};
        else
            sit[ns++] = (oitem){e, idx_get(bidx, ks), i};
        free(ks);
        ks = NULL;
    }
    qsort(pit, np, sizeof(*pit), oitem_cmp);
    qsort(sit, ns, sizeof(*sit), oitem_cmp);
    /* Interleave: a server element goes before a named one when it came
     * before it in the original list. */
    size_t i = 0, j = 0;
    while (i < ns || j < np) {
        json_t *take;
        if (j >= np) {
            take = sit[i++].v;
        } else if (i >= ns) {
            take = pit[j++].v;
        } else {
            ks = elem_key(pit[j].v, m.key, &nomem);
            if (nomem) {
                rc = soom(c);
                goto done;
            }
            long pb = idx_get(bidx, ks);
            free(ks);
            ks = NULL;
            if (sit[i].key >= 0 && pb >= 0 && sit[i].key < pb)
                take = sit[i++].v;
            else
                take = pit[j++].v;
        }
        if (json_array_append(res, take)) {
            rc = soom(c);
            goto done;
        }
    }
    if (json_object_set(orig, f, res))
        rc = soom(c);
done:
    free(ks);
    free(pit);
    free(sit);
    json_decref(oidx);
    json_decref(bidx);
    json_decref(res);
    return rc;
}

/* smp_delprim applies "$deleteFromPrimitiveList/<f>" (vals) to orig[f]. */
static int smp_delprim(smp *c, json_t *orig, const char *f, const json_t *vals)
{
    if (!json_is_array(vals))
        return sfail(c, DIR_DELPRIM "%s: must be a list", f);
    json_t *cur = json_object_get(orig, f);
    if (!cur)
        return 0;
    if (!json_is_array(cur))
        return sfail(c, DIR_DELPRIM "%s: the field is not a list", f);
    int rc = 0, nomem = 0;
    char *ks = NULL;
    json_t *drop = json_object(), *res = json_array();
    if (!drop || !res) {
        rc = soom(c);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(vals); i++) {
        ks = keystr(json_array_get(vals, i), &nomem);
        if (!ks) {
            rc = nomem ? soom(c)
                       : sfail(c, DIR_DELPRIM "%s[%zu]: must be a string, number, boolean or null",
                               f, i);
            goto done;
        }
        if (json_object_set_new(drop, ks, json_true())) {
            rc = soom(c);
            goto done;
        }
        free(ks);
        ks = NULL;
    }
    for (size_t i = 0; i < json_array_size(cur); i++) {
        json_t *e = json_array_get(cur, i);
        ks = keystr(e, &nomem);
        if (nomem) {
            rc = soom(c);
            goto done;
        }
        if ((!ks || !json_object_get(drop, ks)) && json_array_append(res, e)) {
            rc = soom(c);
            goto done;
        }
        free(ks);
        ks = NULL;
    }
    if (json_object_set(orig, f, res))
        rc = soom(c);
done:
    free(ks);
    json_decref(drop);
    json_decref(res);
    return rc;
}

/* directive_key builds "<prefix><f>" (malloc'd). */
static char *directive_key(const char *prefix, const char *f)
{
    size_t a = strlen(prefix), b = strlen(f);
    char *s = malloc(a + b + 1);
    if (s) {
        memcpy(s, prefix, a);
        memcpy(s + a, f, b + 1);
    }
    return s;
}

/* smp_field applies everything the patch map says about field f of orig:
 * its $deleteFromPrimitiveList, its value, its $setElementOrder. */
static int smp_field(smp *c, json_t *orig, const json_t *patch, const char *f)
{
    char *kd = directive_key(DIR_DELPRIM, f), *ko = directive_key(DIR_ORDER, f);
    if (!kd || !ko) {
        free(kd);
        free(ko);
        return soom(c);
    }
    const json_t *delv = json_object_get(patch, kd), *ordv = json_object_get(patch, ko);
    const json_t *v = json_object_get(patch, f);
    free(kd);
    free(ko);
    json_t *before = json_incref(json_object_get(orig, f));
    int rc = 0;
    if (delv)
        rc = smp_delprim(c, orig, f, delv);
    pmark mk = push_key(c, f);
    if (c->mpath.oom || c->dpath.oom)
        rc = rc ? rc : soom(c);
    if (!rc && v) {
        json_t *o = json_object_get(orig, f);
        if (json_is_null(v)) {
            json_object_del(orig, f);
        } else if (json_is_object(v) && json_is_object(o)) {
            int del = 0;
            rc = smp_map(c, o, v, &del);
            if (!rc && del)
                json_object_del(orig, f);
        } else {
            json_t *nv;
            if (json_is_array(v) && json_is_array(o))
                rc = smp_list(c, o, v, &nv);
            else
                rc = smp_fresh(c, v, &nv);
            if (!rc) {
                if (!nv)
                    json_object_del(orig, f);
                else if (json_object_set_new(orig, f, nv))
                    rc = soom(c);
            }
        }
    }
    if (!rc && ordv) {
        if (!json_is_array(ordv)) {
            pop(c, mk);
            rc = sfail(c, DIR_ORDER "%s: must be a list", f);
            json_decref(before);
            return rc;
        }
        rc = smp_order(c, orig, f, ordv, json_is_array(before) ? before : NULL,
                       json_is_array(v) ? v : NULL);
    }
    pop(c, mk);
    json_decref(before);
    return rc;
}

/* smp_retain applies "$retainKeys" (rk) of patch to orig. */
static int smp_retain(smp *c, json_t *orig, const json_t *patch, const json_t *rk)
{
    if (!json_is_array(rk))
        return sfail(c, DIR_RETAIN ": must be a list of strings");
    json_t *keep = json_object();
    if (!keep)
        return soom(c);
    int rc = 0;
    for (size_t i = 0; i < json_array_size(rk) && !rc; i++) {
        const json_t *e = json_array_get(rk, i);
        if (!json_is_string(e))
            rc = sfail(c, DIR_RETAIN "[%zu]: must be a string", i);
        else if (json_object_setn_new(keep, json_string_value(e), json_string_length(e),
                                      json_true()))
            rc = soom(c);
    }
    const char *k;
    size_t kl;
    json_t *v, *tmp;
    if (!rc) {
        json_object_keylen_foreach((json_t *)patch, k, kl, v) {
            if (k[0] == '$' || json_is_null(v) || json_object_getn(keep, k, kl))
                continue;
            rc = sfail(c, DIR_RETAIN ": does not list \"%s\", which the patch sets", k);
            break;
        }
    }
    if (!rc) {
        json_object_keylen_foreach_safe(orig, tmp, k, kl, v) {
            if (!json_object_getn(keep, k, kl))
                json_object_deln(orig, k, kl);
        }
    }
    json_decref(keep);
    return rc;
}

static int has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* smp_map merges patch (an object) into orig (an object of the working
 * copy, changed in place); c's paths name orig. *del is set when the patch
 * deletes the map. */
static int smp_map(smp *c, json_t *orig, const json_t *patch, int *del)
{
    *del = 0;
    const json_t *d = json_object_get(patch, DIR_PATCH);
    if (d) {
        const char *s = json_is_string(d) ? json_string_value(d) : NULL;
        if (!s)
            return sfail(c, DIR_PATCH ": must be a string");
        if (!strcmp(s, "delete")) {
            *del = 1;
            return 0;
        }
        if (!strcmp(s, "replace"))
            json_object_clear(orig);
        else if (strcmp(s, "merge"))
            return sfail(c, DIR_PATCH ": unknown directive \"%s\" (replace, delete or merge)", s);
    }
    const json_t *rk = json_object_get(patch, DIR_RETAIN);
    int rc;
    if (rk && (rc = smp_retain(c, orig, patch, rk)))
        return rc;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v) {
        const char *f = k;
        if (!strcmp(k, DIR_PATCH) || !strcmp(k, DIR_RETAIN))
            continue;
        int is_del = has_prefix(k, DIR_DELPRIM), is_ord = has_prefix(k, DIR_ORDER);
        if (is_del || is_ord) {
            f = k + strlen(is_del ? DIR_DELPRIM : DIR_ORDER);
            if (!*f)
                return sfail(c, "%s: names no field", k);
            if (json_object_get(patch, f))
                continue; /* handled with the field */
            if (is_ord) {
                char *kd = directive_key(DIR_DELPRIM, f);
                if (!kd)
                    return soom(c);
                int both = json_object_get(patch, kd) != NULL;
                free(kd);
                if (both)
                    continue; /* handled with the $deleteFromPrimitiveList */
            }
        }
        if ((rc = smp_field(c, orig, patch, f)))
            return rc;
    }
    return 0;
}

int ke_k8s_strategic_patch(json_t **doc, const json_t *patch, const char *kind,
                           ke_k8s_patch_meta_fn meta, void *ud, char *why, size_t len)
{
    if (!doc || !json_is_object(*doc))
        return failc(why, len, KE_EINVAL, "object: must be a JSON object");
    if (!json_is_object(patch))
        return failc(why, len, KE_EINVAL, "patch: a strategic merge patch must be a JSON object");
    int rc = depth_both(*doc, patch, why, len);
    if (rc)
        return rc;
    smp c = {.kind = kind ? kind : "", .meta = meta, .ud = ud, .why = why, .len = len};
    json_t *work = json_deep_copy(*doc);
    if (!work)
        return oom(why, len);
    int del = 0;
    rc = smp_map(&c, work, patch, &del);
    if (!rc && (c.mpath.oom || c.dpath.oom))
        rc = oom(why, len);
    if (!rc && del)
        json_object_clear(work);
    free(c.mpath.s);
    free(c.dpath.s);
    if (rc) {
        json_decref(work);
        return rc;
    }
    json_decref(*doc);
    *doc = work;
    return 0;
}
