/*
 * ke_k8s_print.h — the columns kubectl shows for each kind and the cells
 * of one object's row: one definition for the project's two printers,
 * kectl's client-side tables and the Kubernetes gateway's server-side
 * printing (Table objects that the real kubectl prints).
 *
 * Columns follow NAME (always first; a NAMESPACE column before it is the
 * printer's business). Priority 0 columns are shown by default, priority
 * 1 ones with -o wide, as kubectl does.
 */
#ifndef KE_K8S_PRINT_H
#define KE_K8S_PRINT_H

#include "ke_k8s.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define KE_K8S_PRINT_COLS_MAX 12
#define KE_K8S_PRINT_CELL_MAX 256

typedef struct ke_k8s_column {
    const char *name;   /* "READY": kubectl upper-cases the Table's "Ready" itself */
    const char *title;  /* the Table column name as the API server gives it: "Ready" */
    const char *type;   /* OpenAPI type of the cell: "string" or "integer" */
    int priority;       /* 0 default, 1 wide */
} ke_k8s_column;

/* ke_k8s_print_columns returns the columns of kind k (NAME first) and
 * their number in *n. */
const ke_k8s_column *ke_k8s_print_columns(const ke_k8s_kind *k, size_t *n);

/* ke_k8s_print_row writes the cells of obj's row (one per column of its
 * kind, NAME first) into cells; ages count to now_ms (wall clock, ms).
 * Returns the number of cells. Integer columns hold decimal text. */
size_t ke_k8s_print_row(const ke_k8s_kind *k, const json_t *obj, int64_t now_ms,
                        char cells[][KE_K8S_PRINT_CELL_MAX]);

/* ke_k8s_human_duration writes a duration in seconds as kubectl's AGE
 * column does ("45s", "3m20s", "12m", "3h4m", "5d", "2y34d"); "<invalid>"
 * for a time in the future by more than a second. */
void ke_k8s_human_duration(char *buf, size_t len, int64_t seconds);

/* ke_k8s_age writes the age at now_ms of an RFC 3339 time (a
 * creationTimestamp); "<unknown>" when it does not parse. */
void ke_k8s_age(char *buf, size_t len, const char *timestamp, int64_t now_ms);

#endif
