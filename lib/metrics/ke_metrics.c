/*
 * ke_metrics.c — see ke_metrics.h.
 *
 * The registry is a sorted array of series pointers, ordered by (name,
 * canonical label string), behind one mutex: registration inserts in order,
 * rendering walks the array, so output is sorted and stable with no sort at
 * scrape time. Each series keeps its labels pre-rendered (`k="v",...`,
 * pairs sorted by label name, values escaped) — that string is also its
 * identity. Values are C11 atomics; a double is kept as its bit pattern in
 * an atomic uint64 and added to with a compare-and-swap loop, so no
 * libatomic or libm is needed.
 */
#include "ke_metrics.h"

#include "ke_err.h"
#include "ke_log.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MOD "metrics"

struct ke_metric {
    ke_metric_type type;
    ke_metric_kind kind;
    char *name;
    char *help;
    char *labels; /* canonical, rendered, without braces; "" for none */
    _Atomic int64_t ival;
    _Atomic uint64_t dbits; /* bit pattern of the double value */
};

/* The registry: the process-wide state the style guide allows. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static ke_metric *g_series[KE_METRICS_MAX_SERIES];
static size_t g_nseries;
static _Atomic uint64_t g_rejected;

/* ---- growable text buffer -------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

/* sb_escaped appends `s` escaped as the exposition format wants: backslash
 * and newline always, double quote inside label values only. */
static void sb_escaped(sbuf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_puts(b, "\\\\");
        else if (*s == '\n')
            sb_puts(b, "\\n");
        else if (*s == '"' && quote)
            sb_puts(b, "\\\"");
        else
            sb_putn(b, s, 1);
    }
}

/* ---- values ---------------------------------------------------------- */

static double bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

/* to_i64 rounds half away from zero, clamping to the int64 range; NaN is 0. */
static int64_t to_i64(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9223372036854775807.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)(v < 0 ? v - 0.5 : v + 0.5);
}

void ke_metric_add(ke_metric *m, int64_t delta)
{
    if (!m)
        return;
    if (m->kind == KE_METRIC_DOUBLE) {
        ke_metric_add_double(m, (double)delta);
        return;
    }
    if (m->type == KE_METRIC_COUNTER && delta < 0)
        return;
    atomic_fetch_add_explicit(&m->ival, delta, memory_order_relaxed);
}

void ke_metric_set(ke_metric *m, int64_t v)
{
    if (!m)
        return;
    if (m->kind == KE_METRIC_DOUBLE)
        atomic_store_explicit(&m->dbits, double_to_bits((double)v), memory_order_relaxed);
    else
        atomic_store_explicit(&m->ival, v, memory_order_relaxed);
}

void ke_metric_add_double(ke_metric *m, double delta)
{
    if (!m)
        return;
    if (m->type == KE_METRIC_COUNTER && !(delta >= 0))
        return; /* negative or NaN: counters never go down */
    if (m->kind == KE_METRIC_INT64) {
        ke_metric_add(m, to_i64(delta));
        return;
    }
    uint64_t old = atomic_load_explicit(&m->dbits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&m->dbits, &old,
                                                  double_to_bits(bits_to_double(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void ke_metric_set_double(ke_metric *m, double v)
{
    if (!m)
        return;
    if (m->kind == KE_METRIC_INT64)
        atomic_store_explicit(&m->ival, to_i64(v), memory_order_relaxed);
    else
        atomic_store_explicit(&m->dbits, double_to_bits(v), memory_order_relaxed);
}

int64_t ke_metric_get(const ke_metric *m)
{
    if (!m)
        return 0;
    if (m->kind == KE_METRIC_DOUBLE)
        return to_i64(ke_metric_get_double(m));
    return atomic_load_explicit(&((ke_metric *)m)->ival, memory_order_relaxed);
}

double ke_metric_get_double(const ke_metric *m)
{
    if (!m)
        return 0;
    ke_metric *w = (ke_metric *)m; /* atomic loads take non-const in C11 */
    if (m->kind == KE_METRIC_INT64)
        return (double)atomic_load_explicit(&w->ival, memory_order_relaxed);
    return bits_to_double(atomic_load_explicit(&w->dbits, memory_order_relaxed));
}

/* ---- registration ---------------------------------------------------- */

static int valid_name(const char *s, int colon_ok)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > KE_METRICS_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* canon_labels validates `labels` and renders them sorted by label name into
 * a malloc'd string (*out, "" when there are none). */
static int canon_labels(const char *const *labels, char **out)
{
    const char *const *pair[KE_METRICS_MAX_LABELS];
    size_t n = 0;
    for (size_t i = 0; labels && labels[i]; i += 2) {
        if (n == KE_METRICS_MAX_LABELS || !valid_name(labels[i], 0) ||
            strncmp(labels[i], "__", 2) == 0 || !labels[i + 1] ||
            strlen(labels[i + 1]) > KE_METRICS_MAX_VALUE)
            return KE_EINVAL;
        /* insertion sort by label name; equal names are a caller error */
        size_t j = n;
        while (j > 0) {
            int c = strcmp((*pair[j - 1]), labels[i]);
            if (c == 0)
                return KE_EINVAL;
            if (c < 0)
                break;
            pair[j] = pair[j - 1];
            j--;
        }
        pair[j] = &labels[i];
        n++;
    }
    sbuf b = {0};
    sb_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_puts(&b, ",");
        sb_puts(&b, pair[i][0]);
        sb_puts(&b, "=\"");
        sb_escaped(&b, pair[i][1], 1);
        sb_puts(&b, "\"");
    }
    if (b.oom) {
        free(b.p);
        return KE_ENOMEM;
    }
    *out = b.p;
    return 0;
}

static int series_cmp(const char *name, const char *labels, const ke_metric *m)
{
    int c = strcmp(name, m->name);
    return c ? c : strcmp(labels, m->labels);
}

/* find_pos binary-searches the registry (lock held): returns the index of
 * (name, labels) and sets *found, or the index to insert it at. */
static size_t find_pos(const char *name, const char *labels, int *found)
{
    size_t lo = 0, hi = g_nseries;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = series_cmp(name, labels, g_series[mid]);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void metric_free(ke_metric *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->help);
    free(m->labels);
    free(m);
}

int ke_metrics_register(ke_metric_type type, ke_metric_kind kind, const char *name,
                        const char *help, const char *const *labels, ke_metric **out)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!help)
        help = "";
    if ((type != KE_METRIC_COUNTER && type != KE_METRIC_GAUGE) ||
        (kind != KE_METRIC_INT64 && kind != KE_METRIC_DOUBLE) || !valid_name(name, 1) ||
        strlen(help) > KE_METRICS_MAX_HELP) {
        ke_log_error(LOG_MOD, "bad metric registration name=%s", name ? name : "(null)");
        return KE_EINVAL;
    }
    char *canon = NULL;
    int rv = canon_labels(labels, &canon);
    if (rv != 0) {
        ke_log_error(LOG_MOD, "bad label set name=%s rv=%d", name, rv);
        return rv;
    }
    ke_metric *m = NULL;
    pthread_mutex_lock(&g_lock);
    int found = 0;
    size_t pos = find_pos(name, canon, &found);
    if (found) {
        ke_metric *have = g_series[pos];
        if (have->type != type || have->kind != kind) {
            rv = KE_EEXIST;
            goto conflict;
        }
        *out = have;
        goto out;
    }
    /* a family has one type: its other series sit next to pos */
    ke_metric *near = pos < g_nseries ? g_series[pos] : NULL;
    if (!near || strcmp(near->name, name) != 0)
        near = pos > 0 ? g_series[pos - 1] : NULL;
    if (near && strcmp(near->name, name) == 0 && (near->type != type || near->kind != kind)) {
        rv = KE_EEXIST;
        goto conflict;
    }
    if (g_nseries == KE_METRICS_MAX_SERIES) {
        atomic_fetch_add(&g_rejected, 1);
        ke_log_warn(LOG_MOD, "registry full, series not registered name=%s labels={%s} max=%d",
                    name, canon, KE_METRICS_MAX_SERIES);
        rv = KE_EFULL;
        goto out;
    }
    m = calloc(1, sizeof(*m));
    if (!m || !(m->name = strdup(name)) || !(m->help = strdup(help))) {
        metric_free(m);
        rv = KE_ENOMEM;
        goto out;
    }
    m->type = type;
    m->kind = kind;
    m->labels = canon;
    canon = NULL;
    atomic_init(&m->ival, 0);
    atomic_init(&m->dbits, double_to_bits(0.0));
    memmove(&g_series[pos + 1], &g_series[pos], (g_nseries - pos) * sizeof(g_series[0]));
    g_series[pos] = m;
    g_nseries++;
    *out = m;
    goto out;
conflict:
    ke_log_error(LOG_MOD, "metric already registered with another type or kind name=%s", name);
out:
    pthread_mutex_unlock(&g_lock);
    free(canon);
    return rv;
}

int ke_metrics_counter_new(const char *name, const char *help, const char *const *labels,
                           ke_metric **out)
{
    return ke_metrics_register(KE_METRIC_COUNTER, KE_METRIC_INT64, name, help, labels, out);
}

int ke_metrics_gauge_new(const char *name, const char *help, const char *const *labels,
                         ke_metric **out)
{
    return ke_metrics_register(KE_METRIC_GAUGE, KE_METRIC_INT64, name, help, labels, out);
}

uint64_t ke_metrics_rejected(void) { return atomic_load(&g_rejected); }

void ke_metrics_reset(void)
{
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_nseries; i++) {
        metric_free(g_series[i]);
        g_series[i] = NULL;
    }
    g_nseries = 0;
    atomic_store(&g_rejected, 0);
    pthread_mutex_unlock(&g_lock);
}

/* ---- rendering ------------------------------------------------------- */

/* format_double writes the shortest of %.15g..%.17g that reads back as the
 * same value, and the exposition format's spellings of infinities and NaN. */
static void format_double(double v, char *buf, size_t cap)
{
    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

int ke_metrics_render(char **out, size_t *len)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    sbuf b = {0};
    sb_puts(&b, "");
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_nseries; i++) {
        const ke_metric *m = g_series[i];
        if (i == 0 || strcmp(g_series[i - 1]->name, m->name) != 0) {
            sb_puts(&b, "# HELP ");
            sb_puts(&b, m->name);
            sb_puts(&b, " ");
            sb_escaped(&b, m->help, 0);
            sb_puts(&b, "\n# TYPE ");
            sb_puts(&b, m->name);
            sb_puts(&b, m->type == KE_METRIC_COUNTER ? " counter\n" : " gauge\n");
        }
        sb_puts(&b, m->name);
        if (m->labels[0]) {
            sb_puts(&b, "{");
            sb_puts(&b, m->labels);
            sb_puts(&b, "}");
        }
        char num[40];
        if (m->kind == KE_METRIC_INT64)
            snprintf(num, sizeof(num), "%" PRId64, ke_metric_get(m));
        else
            format_double(ke_metric_get_double(m), num, sizeof(num));
        sb_puts(&b, " ");
        sb_puts(&b, num);
        sb_puts(&b, "\n");
    }
    pthread_mutex_unlock(&g_lock);
    if (b.oom) {
        free(b.p);
        return KE_ENOMEM;
    }
    *out = b.p;
    if (len)
        *len = b.len;
    return 0;
}
