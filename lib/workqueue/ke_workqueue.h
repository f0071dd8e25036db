/*
 * ke_workqueue.h — a rate-limited work queue of keys with retries, the
 * engine of the controllers' level-based convergence (DESIGN.md §4.2).
 *
 * A key (a node name, say) is queued at most once: adding a key that is
 * already waiting does nothing, and adding one that is being processed
 * marks it to run once more afterwards, so the latest state is always seen
 * and no key is processed by two threads at once. One worker thread calls
 * the work function for each key in turn; a function that fails (returns
 * non-zero) has its key retried after an exponential back-off (base_ms
 * doubling to max_ms), reset by the next success. A token bucket (qps,
 * burst) bounds the overall rate. Every timer is on the monotonic clock.
 *
 * Bounds: at most max_keys distinct keys wait at once; ke_wq_add past that
 * returns KE_EFULL (the caller's periodic resync adds the key again later).
 *
 * Threads: ke_wq_add is thread-safe and never blocks on the worker (it may
 * be called from a store watch callback or an rpc callback). The work
 * function runs on the queue's thread ("ke-wq-<name>") and may block, but
 * not past the watchdog's stall limit: the worker's heartbeat "wq-<name>"
 * (ke_watchdog.h) beats between keys and while idle, so a work function
 * stuck longer turns /healthz to 503.
 */
#ifndef KE_WORKQUEUE_H
#define KE_WORKQUEUE_H

#include <stdint.h>

typedef struct ke_wq ke_wq;

/* The work function: 0 when the key is done, non-zero to retry it later. */
typedef int (*ke_wq_fn)(const char *key, void *ud);

typedef struct ke_wq_opts {
    uint32_t qps;        /* keys per second on average (0: 500) */
    uint32_t burst;      /* tokens the bucket holds (0: 2 * qps) */
    uint32_t base_ms;    /* first retry delay (0: 100) */
    uint32_t max_ms;     /* longest retry delay (0: 30,000) */
    uint32_t max_keys;   /* distinct keys waiting at most (0: 1,000,000) */
} ke_wq_opts;

/* ke_wq_new creates a stopped queue named `name` (at most 10 bytes are used
 * in the thread name); opts may be NULL for the defaults. fn(key, ud) does
 * the work. Returns 0, KE_EINVAL or KE_ENOMEM; *out owns the queue. */
int ke_wq_new(const char *name, const ke_wq_opts *opts, ke_wq_fn fn, void *ud, ke_wq **out);

/* ke_wq_start starts the worker thread. Returns 0 or KE_EIO. */
int ke_wq_start(ke_wq *q);

/* ke_wq_add queues key (copied) to run as soon as the rate allows, unless
 * it already waits (then nothing changes: a key in retry back-off keeps its
 * delay). Returns 0, KE_EFULL (max_keys waiting), KE_ENOMEM, KE_ECLOSED
 * (stopped). */
int ke_wq_add(ke_wq *q, const char *key);

/* ke_wq_add_after queues key to run once delay_ms have passed, unless it
 * already waits (then nothing changes); a key that is running (a periodic
 * job scheduling its next run from its own) runs again once delay_ms have
 * passed, or at once if a plain ke_wq_add came meanwhile. Returns as
 * ke_wq_add. */
int ke_wq_add_after(ke_wq *q, const char *key, uint32_t delay_ms);

/* ke_wq_len returns the number of keys waiting or running. */
uint32_t ke_wq_len(ke_wq *q);

/* ke_wq_stop stops the worker after the key it is running (if any) and
 * drops the keys waiting. Idempotent. Blocks: not from the work function. */
void ke_wq_stop(ke_wq *q);

/* ke_wq_free stops the queue if needed and frees it. NULL: no-op. */
void ke_wq_free(ke_wq *q);

#endif
