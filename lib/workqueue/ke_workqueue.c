/*
 * ke_workqueue.c — see ke_workqueue.h.
 *
 * State: a map key -> item. An item is in exactly one of: the ready FIFO,
 * the delayed list (sorted by due time), or running (taken by the worker;
 * `again` set when it was added meanwhile). Everything under q->mu; the
 * work function runs with the lock released.
 */
#include "ke_workqueue.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_map.h"
#include "ke_time.h"
#include "ke_watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wq_item {
    struct wq_item *next;
    char *key;
    int64_t due_ms;
    int64_t again_due_ms; /* added with a delay while running: run then */
    uint32_t failures;
    int running, again;
} wq_item;

struct ke_wq {
    char name[16];
    ke_wq_opts o;
    ke_wq_fn fn;
    void *ud;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    ke_watchdog_hb *hb; /* the worker's heartbeat, "wq-<name>" */
    int started, stopping;
    ke_map *items;
    wq_item *ready, *ready_tail, *delayed;
    double tokens;
    int64_t refill_ms;
};

int ke_wq_new(const char *name, const ke_wq_opts *opts, ke_wq_fn fn, void *ud, ke_wq **out)
{
    if (!name || !fn || !out)
        return KE_EINVAL;
    ke_wq *q = calloc(1, sizeof(*q));
    if (!q)
        return KE_ENOMEM;
    snprintf(q->name, sizeof(q->name), "%.10s", name);
    if (opts)
        q->o = *opts;
    if (!q->o.qps)
        q->o.qps = 500;
    if (!q->o.burst)
        q->o.burst = 2 * q->o.qps;
    if (!q->o.base_ms)
        q->o.base_ms = 100;
    if (!q->o.max_ms)
        q->o.max_ms = 30000;
    if (!q->o.max_keys)
        q->o.max_keys = 1000000;
    q->fn = fn;
    q->ud = ud;
    q->tokens = q->o.burst;
    q->refill_ms = ke_time_mono_ms();
    q->items = ke_map_new();
    if (!q->items || pthread_mutex_init(&q->mu, NULL) != 0) {
        ke_map_free(q->items);
        free(q);
        return KE_ENOMEM;
    }
    if (ke_time_cond_init(&q->cv) != 0) {
        pthread_mutex_destroy(&q->mu);
        ke_map_free(q->items);
        free(q);
        return KE_ENOMEM;
    }
    *out = q;
    return 0;
}

static void push_ready(ke_wq *q, wq_item *it)
{
    it->next = NULL;
    if (q->ready_tail)
        q->ready_tail->next = it;
    else
        q->ready = it;
    q->ready_tail = it;
}

static void push_delayed(ke_wq *q, wq_item *it)
{
    wq_item **pp = &q->delayed;
    while (*pp && (*pp)->due_ms <= it->due_ms)
        pp = &(*pp)->next;
    it->next = *pp;
    *pp = it;
}

static void item_free(ke_wq *q, wq_item *it)
{
    ke_map_del(q->items, it->key);
    free(it->key);
    free(it);
}

/* add puts key on the ready FIFO (delay_ms 0) or the delayed list. */
static int add(ke_wq *q, const char *key, uint32_t delay_ms)
{
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    wq_item *it = ke_map_get(q->items, key);
    if (q->stopping) {
        rc = KE_ECLOSED;
    } else if (it) {
        /* Waiting or in back-off: nothing to do. Running: once more after,
         * at once or (a delayed add) when the delay has passed. */
        if (it->running && delay_ms == 0)
            it->again = 1;
        else if (it->running && !it->again_due_ms)
            it->again_due_ms = ke_time_mono_ms() + delay_ms;
    } else if (ke_map_len(q->items) >= q->o.max_keys) {
        rc = KE_EFULL;
    } else if (!(it = calloc(1, sizeof(*it))) || !(it->key = strdup(key)) ||
               ke_map_put(q->items, it->key, it, NULL) != 0) {
        if (it)
            free(it->key);
        free(it);
        rc = KE_ENOMEM;
    } else if (delay_ms) {
        it->due_ms = ke_time_mono_ms() + delay_ms;
        push_delayed(q, it);
        pthread_cond_signal(&q->cv);
    } else {
        push_ready(q, it);
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int ke_wq_add(ke_wq *q, const char *key) { return add(q, key, 0); }

int ke_wq_add_after(ke_wq *q, const char *key, uint32_t delay_ms)
{
    return add(q, key, delay_ms);
}

uint32_t ke_wq_len(ke_wq *q)
{
    pthread_mutex_lock(&q->mu);
    uint32_t n = (uint32_t)ke_map_len(q->items);
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* take_token refills the bucket and takes one token; otherwise returns the
 * milliseconds until one is there. */
static int64_t take_token(ke_wq *q, int64_t now)
{
    q->tokens += (double)(now - q->refill_ms) * q->o.qps / 1000.0;
    q->refill_ms = now;
    if (q->tokens > q->o.burst)
        q->tokens = q->o.burst;
    if (q->tokens >= 1.0) {
        q->tokens -= 1.0;
        return 0;
    }
    int64_t wait = (int64_t)((1.0 - q->tokens) * 1000.0 / q->o.qps) + 1;
    return wait;
}

static void *worker(void *arg)
{
    ke_wq *q = arg;
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        ke_watchdog_beat(q->hb);
        int64_t now = ke_time_mono_ms();
        while (q->delayed && q->delayed->due_ms <= now) {
            wq_item *it = q->delayed;
            q->delayed = it->next;
            push_ready(q, it);
        }
        int64_t wait = -1;
        if (!q->ready)
            wait = q->delayed ? q->delayed->due_ms - now : -1;
        else
            wait = take_token(q, now);
        if (wait != 0) {
            /* idle or rate-limited: wake within the watchdog's tick to beat */
            int64_t tick = ke_watchdog_tick_ms(q->hb);
            struct timespec until = ke_time_deadline(wait < 0 || wait > tick ? tick : wait);
            pthread_cond_timedwait(&q->cv, &q->mu, &until);
            continue;
        }
        wq_item *it = q->ready;
        q->ready = it->next;
        if (!q->ready)
            q->ready_tail = NULL;
        it->running = 1;
        it->again = 0;
        it->again_due_ms = 0;
        pthread_mutex_unlock(&q->mu);
        int rc = q->fn(it->key, q->ud);
        pthread_mutex_lock(&q->mu);
        it->running = 0;
        if (rc != 0) {
            uint32_t shift = it->failures < 20 ? it->failures : 20;
            uint64_t delay = (uint64_t)q->o.base_ms << shift;
            if (delay > q->o.max_ms)
                delay = q->o.max_ms;
            it->failures++;
            it->due_ms = ke_time_mono_ms() + (int64_t)delay;
            push_delayed(q, it);
        } else if (it->again) {
            it->failures = 0;
            push_ready(q, it);
        } else if (it->again_due_ms) {
            it->failures = 0;
            it->due_ms = it->again_due_ms;
            push_delayed(q, it);
        } else {
            item_free(q, it);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int ke_wq_start(ke_wq *q)
{
    char tname[16], hbname[KE_WATCHDOG_NAME_MAX];
    snprintf(hbname, sizeof(hbname), "wq-%s", q->name);
    int rc = ke_watchdog_register(hbname, 0, &q->hb);
    if (rc != 0) /* the queue still works, unwatched */
        ke_log_warn("workqueue", "worker not watched name=%s: %s", hbname, ke_strerror(rc));
    if (pthread_create(&q->thread, NULL, worker, q) != 0) {
        ke_watchdog_unregister(q->hb);
        q->hb = NULL;
        return KE_EIO;
    }
    snprintf(tname, sizeof(tname), "ke-wq-%.9s", q->name);
    pthread_setname_np(q->thread, tname);
    q->started = 1;
    return 0;
}

void ke_wq_stop(ke_wq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    int was = q->stopping;
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (was)
        return;
    if (q->started)
        pthread_join(q->thread, NULL);
    ke_watchdog_unregister(q->hb);
    q->hb = NULL;
    pthread_mutex_lock(&q->mu);
    for (wq_item *it = q->ready, *next; it; it = next) {
        next = it->next;
        item_free(q, it);
    }
    for (wq_item *it = q->delayed, *next; it; it = next) {
        next = it->next;
        item_free(q, it);
    }
    q->ready = q->ready_tail = q->delayed = NULL;
    pthread_mutex_unlock(&q->mu);
}

void ke_wq_free(ke_wq *q)
{
    if (!q)
        return;
    ke_wq_stop(q);
    ke_map_free(q->items);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}
