/*
 * print.c — how kectl shows objects: kubectl's tables (one row function
 * per kind, columns aligned like kubectl's tabwriter), kubectl's AGE
 * format, and -o json (4-space indent, as kubectl), -o yaml (kectl_yaml_emit)
 * and -o name.
 */
#include "kectl.h"

#include "kectl_yaml.h"
#include "ke_err.h"
#include "ke_k8s_print.h"
#include "ke_time.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* kubectl's tabwriter: padding 3, minimum cell width 6 */
#define TABLE_PADDING 3
#define TABLE_MIN_WIDTH 6

/* ---- JSON helpers ---- */

json_t *kectl_jget(const json_t *obj, const char *path)
{
    char key[128];
    const json_t *v = obj;
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof(key) || !json_is_object(v))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        path += n + (dot ? 1 : 0);
    }
    return (json_t *)v;
}

const char *kectl_jstr(const json_t *obj, const char *path)
{
    return json_string_value(kectl_jget(obj, path));
}

static const char *or_none(const char *s)
{
    return s && s[0] ? s : "<none>";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void kectl_join_map(char *buf, size_t len, const json_t *map, const char *sep)
{
    size_t n = json_is_object(map) ? json_object_size(map) : 0;
    snprintf(buf, len, "<none>");
    if (n == 0)
        return;
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return;
    size_t i = 0, used = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v) keys[i++] = k;
    qsort(keys, n, sizeof(*keys), cmp_str);
    buf[0] = '\0';
    for (i = 0; i < n && used < len; i++) {
        const char *val = json_string_value(json_object_get(map, keys[i]));
        int w = snprintf(buf + used, len - used, "%s%s=%s", i ? sep : "", keys[i],
                         val ? val : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    free(keys);
}

/* ---- time ---- */

int kectl_parse_time(const char *s, int64_t *out)
{
    int64_t ms;
    int rc = ke_time_rfc3339_parse(s, &ms);
    if (rc == 0)
        *out = ms / 1000;
    return rc;
}

void kectl_human_duration(char *buf, size_t len, int64_t s)
{
    ke_k8s_human_duration(buf, len, s);
}

void kectl_age(char *buf, size_t len, const char *timestamp)
{
    ke_k8s_age(buf, len, timestamp, ke_time_wall_ms());
}

void kectl_age_ms(char *buf, size_t len, int64_t ms)
{
    if (ms <= 0) {
        snprintf(buf, len, "<never>");
        return;
    }
    kectl_human_duration(buf, len, ke_time_wall_ms() / 1000 - ms / 1000);
}

/* ---- rows ---- */

void kectl_row_add(kectl_row *r, const char *fmt, ...)
{
    if (r->n >= KECTL_TABLE_MAX_COLS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->cell[r->n++], KECTL_CELL_MAX, fmt, ap);
    va_end(ap);
}

/* object_row fills the row of obj for a table of its kind: the cells of
 * the columns shown (lib/k8s's printing; priority 1 only when wide). */
static void object_row(const kectl_table *t, const json_t *o, kectl_row *row)
{
    row->n = 0;
    if (t->ns_col)
        kectl_row_add(row, "%s", or_none(kectl_jstr(o, "metadata.namespace")));
    const ke_k8s_kind *k = ke_k8s_kind_find(t->kind->kind);
    size_t ncols;
    const ke_k8s_column *cols = ke_k8s_print_columns(k, &ncols);
    char cells[KE_K8S_PRINT_COLS_MAX][KE_K8S_PRINT_CELL_MAX];
    size_t n = ke_k8s_print_row(k, o, ke_time_wall_ms(), cells);
    for (size_t i = 0; i < n && i < ncols; i++)
        if (cols[i].priority == 0 || t->wide)
            kectl_row_add(row, "%s", cells[i]);
}

/* ---- tables ---- */

int kectl_table_init(kectl_table *t, const char *const *headers, size_t ncols)
{
    memset(t, 0, sizeof(*t));
    t->indent = "";
    t->ncols = ncols > KECTL_TABLE_MAX_COLS ? KECTL_TABLE_MAX_COLS : ncols;
    kectl_row r = {.n = 0};
    for (size_t i = 0; i < t->ncols; i++)
        kectl_row_add(&r, "%s", headers[i]);
    return kectl_table_add_row(t, &r);
}

int kectl_table_init_kind(kectl_table *t, const kectl_kind *kind, int wide, int ns_col)
{
    const char *h[KECTL_TABLE_MAX_COLS];
    size_t n = 0;
    ns_col = ns_col && kind->namespaced;
    if (ns_col)
        h[n++] = "NAMESPACE";
    size_t ncols;
    const ke_k8s_column *cols = ke_k8s_print_columns(ke_k8s_kind_find(kind->kind), &ncols);
    for (size_t i = 0; i < ncols && n < KECTL_TABLE_MAX_COLS; i++)
        if (cols[i].priority == 0 || wide)
            h[n++] = cols[i].name;
    int rc = kectl_table_init(t, h, n);
    t->kind = kind;
    t->wide = wide;
    t->ns_col = ns_col;
    return rc;
}

int kectl_table_add_row(kectl_table *t, const kectl_row *r)
{
    if (t->nrows >= KECTL_TABLE_MAX_ROWS)
        return KE_EFULL;
    if (t->nrows == t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
        char **cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));
        if (!cells)
            return KE_ENOMEM;
        t->cells = cells;
        t->cap_rows = cap;
    }
    char **row = &t->cells[t->nrows * t->ncols];
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(i < r->n ? r->cell[i] : "");
        if (!row[i]) {
            while (i > 0)
                free(row[--i]);
            return KE_ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

int kectl_table_add_object(kectl_table *t, const json_t *obj)
{
    kectl_row r;
    object_row(t, obj, &r);
    return kectl_table_add_row(t, &r);
}

static void widen(kectl_table *t, char *const *row)
{
    for (size_t i = 0; i < t->ncols; i++) {
        size_t w = strlen(row[i]) + TABLE_PADDING;
        if (w < TABLE_MIN_WIDTH)
            w = TABLE_MIN_WIDTH;
        if (w > t->width[i])
            t->width[i] = w;
    }
}

static void print_row(const kectl_table *t, FILE *out, char *const *row)
{
    /* trailing empty cells are not padded: no spaces at the end of lines */
    size_t last = 0;
    for (size_t i = 0; i < t->ncols; i++)
        if (row[i][0])
            last = i;
    fputs(t->indent, out);
    for (size_t i = 0; i < last; i++)
        fprintf(out, "%-*s", (int)t->width[i], row[i]);
    fputs(row[last], out);
    fputc('\n', out);
}

void kectl_table_print(kectl_table *t, FILE *out, int no_headers)
{
    for (size_t r = no_headers ? 1 : 0; r < t->nrows; r++)
        widen(t, &t->cells[r * t->ncols]);
    for (size_t r = no_headers ? 1 : 0; r < t->nrows; r++)
        print_row(t, out, &t->cells[r * t->ncols]);
}

void kectl_table_print_object(kectl_table *t, FILE *out, const json_t *obj)
{
    kectl_row r;
    object_row(t, obj, &r);
    char *cells[KECTL_TABLE_MAX_COLS];
    for (size_t i = 0; i < t->ncols; i++)
        cells[i] = i < r.n ? r.cell[i] : (char *)"";
    widen(t, cells);
    print_row(t, out, cells);
}

void kectl_table_free(kectl_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
    t->indent = "";
}

/* ---- -o json|yaml|name ---- */

int kectl_output_parse(const char *s, kectl_output *out)
{
    static const struct {
        const char *name;
        kectl_output o;
    } names[] = {{"wide", KECTL_OUT_WIDE},
                 {"json", KECTL_OUT_JSON},
                 {"yaml", KECTL_OUT_YAML},
                 {"name", KECTL_OUT_NAME}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].o;
            return 0;
        }
    }
    return KE_EINVAL;
}

int kectl_print_object(FILE *out, const kectl_kind *kind, const json_t *obj, kectl_output o)
{
    switch (o) {
    case KECTL_OUT_JSON:
        if (json_dumpf(obj, out, JSON_INDENT(4)) != 0)
            return KE_EIO;
        fputc('\n', out);
        return 0;
    case KECTL_OUT_YAML:
        return kectl_yaml_emit(out, obj);
    case KECTL_OUT_NAME: {
        const char *kname = kectl_jstr(obj, "kind");
        const kectl_kind *k = kname ? kectl_kind_of(kname) : NULL;
        if (!k)
            k = kind;
        fprintf(out, "%s/%s\n", k ? k->singular : "object",
                or_none(kectl_jstr(obj, "metadata.name")));
        return 0;
    }
    default:
        return KE_EINVAL;
    }
}

int kectl_print_list(FILE *out, const kectl_kind *kind, const json_t *items, kectl_output o)
{
    if (o == KECTL_OUT_NAME) {
        size_t i;
        json_t *v;
        json_array_foreach(items, i, v) {
            int rc = kectl_print_object(out, kind, v, o);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    json_t *list = json_pack("{s:s, s:s, s:O}", "apiVersion", "v1", "kind", "List", "items", items);
    if (!list)
        return KE_ENOMEM;
    int rc = kectl_print_object(out, kind, list, o);
    json_decref(list);
    return rc;
}
