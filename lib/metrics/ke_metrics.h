/*
 * ke_metrics.h — the process-wide metrics registry: counters and gauges,
 * rendered in the Prometheus text exposition format (version 0.0.4) for
 * GET /metrics (served by ke_http.h).
 *
 * A metric is one series: a name, HELP text, a type (counter or gauge), a
 * value kind (int64 or double) and an optional constant label set fixed at
 * registration (`node="edge-1",module="edged"`). Several series may share a
 * name (same type and help) with different label sets; they render as one
 * family. Registering a series that already exists returns the existing one,
 * so independent code paths can register the same metric without
 * coordinating.
 *
 * The registry is one of the two pieces of global mutable state libke keeps
 * (with the log level). Registration takes a lock; updates are lock-free
 * atomics, safe from any thread. Metric pointers live until
 * ke_metrics_reset (tests only) — the registry owns every metric.
 */
#ifndef KE_METRICS_H
#define KE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Bounds: series in the registry, label pairs per series, name length,
 * label value and help length (bytes). */
#define KE_METRICS_MAX_SERIES 1024
#define KE_METRICS_MAX_LABELS 8
#define KE_METRICS_MAX_NAME 128
#define KE_METRICS_MAX_VALUE 256
#define KE_METRICS_MAX_HELP 512

typedef struct ke_metric ke_metric;

typedef enum {
    KE_METRIC_COUNTER = 0, /* only goes up (resets when the process restarts) */
    KE_METRIC_GAUGE = 1,   /* goes up and down */
} ke_metric_type;

typedef enum {
    KE_METRIC_INT64 = 0,
    KE_METRIC_DOUBLE = 1,
} ke_metric_kind;

/* ke_metrics_register finds or creates the series (name, labels).
 * `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*, at most KE_METRICS_MAX_NAME
 * bytes. `help` is free text (escaped when rendered). `labels` is NULL or a
 * NULL-terminated array of name, value pairs: {"node", "edge-1", NULL};
 * label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__";
 * values are any text (escaped when rendered); pair order does not matter.
 * Strings are copied. On success *out points at the series, owned by the
 * registry. Returns 0; KE_EINVAL for a bad name, label or length;
 * KE_EEXIST when the name is registered with another type or kind;
 * KE_EFULL when KE_METRICS_MAX_SERIES series exist (counted, see
 * ke_metrics_rejected; logged); KE_ENOMEM. */
int ke_metrics_register(ke_metric_type type, ke_metric_kind kind, const char *name,
                        const char *help, const char *const *labels, ke_metric **out);

/* ke_metrics_counter_new registers an int64 counter (ke_metrics_register). */
int ke_metrics_counter_new(const char *name, const char *help, const char *const *labels,
                           ke_metric **out);

/* ke_metrics_gauge_new registers an int64 gauge (ke_metrics_register). */
int ke_metrics_gauge_new(const char *name, const char *help, const char *const *labels,
                         ke_metric **out);

/* ke_metric_add adds `delta`. On a counter a negative delta is ignored
 * (counters never go down). A NULL metric is ignored, so a failed
 * registration never crashes the code that updates it. On a double metric
 * the delta is converted. */
void ke_metric_add(ke_metric *m, int64_t delta);

/* ke_metric_set stores `v` (gauges; on a counter the caller keeps it
 * monotonic, e.g. mirroring a count kept elsewhere). NULL is ignored. */
void ke_metric_set(ke_metric *m, int64_t v);

/* ke_metric_add_double / ke_metric_set_double: as above for double values;
 * on an int64 metric the value is rounded to the nearest integer. */
void ke_metric_add_double(ke_metric *m, double delta);
void ke_metric_set_double(ke_metric *m, double v);

/* ke_metric_get returns the current value (a double metric is rounded);
 * 0 for NULL. */
int64_t ke_metric_get(const ke_metric *m);

/* ke_metric_get_double returns the current value as a double; 0 for NULL. */
double ke_metric_get_double(const ke_metric *m);

/* ke_metrics_render writes every series in the Prometheus text format:
 * families sorted by name, each with one "# HELP" and one "# TYPE" line,
 * then its series sorted by label set — stable output for a given state.
 * On success *out is a NUL-terminated malloc'd buffer the caller frees
 * with free(), and *len (if not NULL) its length without the NUL.
 * Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_metrics_render(char **out, size_t *len);

/* ke_metrics_rejected returns how many registrations were refused because
 * the registry was full. */
uint64_t ke_metrics_rejected(void);

/* ke_metrics_reset drops every series and the rejected count. For tests,
 * between cases: every ke_metric pointer becomes invalid, so no other
 * thread (and no live object holding one) may exist. */
void ke_metrics_reset(void);

#endif
