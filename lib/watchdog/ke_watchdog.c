/*
 * ke_watchdog.c — see ke_watchdog.h.
 *
 * Map: a fixed table of KE_WATCHDOG_MAX slots (registry lock for
 * register/unregister/check; beats are atomic stores into a slot); the
 * stall check that /healthz and the monitor share; the monitor thread
 * (logs and gauges); the shutdown deadline thread; the KE_TEST_HOOKS
 * stall hook.
 */
#include "ke_watchdog.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_time.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_MOD "watchdog"

struct ke_watchdog_hb {
    int used;                /* under reg_mu */
    char name[KE_WATCHDOG_NAME_MAX];
    int64_t stall_ms;        /* 0: the default */
    _Atomic int64_t last_ms; /* monotonic time of the last beat */
    int reported;            /* monitor: the stall was logged (under reg_mu) */
    int stall_hook;          /* KE_TEST_HOOKS: block on the first beat */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ke_watchdog_hb slots[KE_WATCHDOG_MAX];
static int nused;
static _Atomic int64_t default_stall_ms = KE_WATCHDOG_STALL_DEFAULT_MS;

/* ---- heartbeats ----------------------------------------------------- */

int ke_watchdog_register(const char *name, int64_t stall_ms, ke_watchdog_hb **out)
{
    if (!name || !*name || strlen(name) >= KE_WATCHDOG_NAME_MAX || stall_ms < 0 || !out)
        return KE_EINVAL;
    *out = NULL;
    pthread_mutex_lock(&reg_mu);
    ke_watchdog_hb *hb = NULL;
    for (int i = 0; i < KE_WATCHDOG_MAX && !hb; i++)
        if (!slots[i].used)
            hb = &slots[i];
    if (!hb) {
        pthread_mutex_unlock(&reg_mu);
        ke_log_error(LOG_MOD, "too many heartbeats, this worker is not watched name=%s max=%d",
                     name, KE_WATCHDOG_MAX);
        return KE_EFULL;
    }
    memset(hb, 0, sizeof(*hb));
    snprintf(hb->name, sizeof(hb->name), "%s", name);
    hb->stall_ms = stall_ms;
    atomic_store(&hb->last_ms, ke_time_mono_ms());
#ifdef KE_TEST_HOOKS
    const char *hook = getenv("KE_TEST_STALL");
    hb->stall_hook = hook && strcmp(hook, name) == 0;
#endif
    hb->used = 1;
    nused++;
    pthread_mutex_unlock(&reg_mu);
    *out = hb;
    return 0;
}

void ke_watchdog_unregister(ke_watchdog_hb *hb)
{
    if (!hb)
        return;
    pthread_mutex_lock(&reg_mu);
    if (hb->used) {
        hb->used = 0;
        nused--;
    }
    pthread_mutex_unlock(&reg_mu);
}

#ifdef KE_TEST_HOOKS
/* stall_forever is the test hook: this thread stops here for good, as a
 * deadlocked worker would. Only a process exit ends it. */
static void stall_forever(const ke_watchdog_hb *hb)
{
    ke_log_warn(LOG_MOD, "test hook KE_TEST_STALL: blocking this worker forever name=%s",
                hb->name);
    for (;;)
        sleep(3600);
}
#endif

void ke_watchdog_beat(ke_watchdog_hb *hb)
{
    if (!hb)
        return;
#ifdef KE_TEST_HOOKS
    if (hb->stall_hook)
        stall_forever(hb);
#endif
    atomic_store_explicit(&hb->last_ms, ke_time_mono_ms(), memory_order_relaxed);
}

static int64_t limit_of(const ke_watchdog_hb *hb)
{
    return hb->stall_ms > 0 ? hb->stall_ms : atomic_load(&default_stall_ms);
}

int64_t ke_watchdog_tick_ms(const ke_watchdog_hb *hb)
{
    if (!hb)
        return KE_WATCHDOG_TICK_MAX_MS;
    int64_t t = limit_of(hb) / 4;
    if (t > KE_WATCHDOG_TICK_MAX_MS)
        t = KE_WATCHDOG_TICK_MAX_MS;
    if (t < KE_WATCHDOG_TICK_MIN_MS)
        t = KE_WATCHDOG_TICK_MIN_MS;
    return t;
}

void ke_watchdog_set_default_stall(int64_t ms)
{
    atomic_store(&default_stall_ms, ms > 0 ? ms : KE_WATCHDOG_STALL_DEFAULT_MS);
}

int64_t ke_watchdog_default_stall(void) { return atomic_load(&default_stall_ms); }

int ke_watchdog_count(void)
{
    pthread_mutex_lock(&reg_mu);
    int n = nused;
    pthread_mutex_unlock(&reg_mu);
    return n;
}

/* ---- the stall check ------------------------------------------------ */

/* append adds printf-style text at *off in buf, never past cap; once the
 * buffer is full the rest is dropped (the line stays NUL-terminated). */
static void append(char *buf, size_t cap, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t cap, size_t *off, const char *fmt, ...)
{
    if (!buf || *off + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (n > 0)
        *off = (size_t)n >= cap - *off ? cap - 1 : *off + (size_t)n;
}

int ke_watchdog_check(char *reason, size_t cap)
{
    size_t off = 0;
    if (reason && cap)
        reason[0] = '\0';
    int n = 0;
    int64_t now = ke_time_mono_ms();
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < KE_WATCHDOG_MAX; i++) {
        const ke_watchdog_hb *hb = &slots[i];
        if (!hb->used)
            continue;
        int64_t age = now - atomic_load_explicit(&hb->last_ms, memory_order_relaxed);
        int64_t limit = limit_of(hb);
        if (age <= limit)
            continue;
        append(reason, cap, &off, "%s%s for %.1fs (limit %.1fs)", n ? ", " : "stalled: ",
               hb->name, (double)age / 1000.0, (double)limit / 1000.0);
        n++;
    }
    pthread_mutex_unlock(&reg_mu);
    return n;
}

/* ---- monitor -------------------------------------------------------- */

static pthread_mutex_t mon_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mon_cv;
static pthread_t mon_thread;
static int mon_running, mon_quit;

/* One heartbeat as the monitor saw it in a round. */
typedef struct mon_view {
    char name[KE_WATCHDOG_NAME_MAX];
    int stalled;
    int changed; /* became stalled (1) or recovered (-1) this round */
    int64_t age, limit;
} mon_view;

/* Names whose gauge the monitor set to 1 and has not cleared yet. */
static char mon_stalled[KE_WATCHDOG_MAX][KE_WATCHDOG_NAME_MAX];
static int mon_nstalled;

static void gauge_set(const char *name, int64_t v)
{
    const char *labels[] = {"name", name, NULL};
    ke_metric *m = NULL;
    int rc = ke_metrics_gauge_new("ke_watchdog_stalled",
                                  "1 while the named worker's heartbeat is older than its stall "
                                  "limit (see /healthz)",
                                  labels, &m);
    if (rc != 0) {
        ke_log_debug(LOG_MOD, "cannot register ke_watchdog_stalled name=%s: %s", name,
                     ke_strerror(rc));
        return;
    }
    ke_metric_set(m, v);
}

/* mon_round logs transitions and sets the gauges. views is scratch space
 * for KE_WATCHDOG_MAX entries. */
static void mon_round(mon_view *views)
{
    int nv = 0;
    int64_t now = ke_time_mono_ms();
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < KE_WATCHDOG_MAX; i++) {
        ke_watchdog_hb *hb = &slots[i];
        if (!hb->used)
            continue;
        mon_view *v = &views[nv++];
        memcpy(v->name, hb->name, sizeof(v->name));
        v->age = now - atomic_load_explicit(&hb->last_ms, memory_order_relaxed);
        v->limit = limit_of(hb);
        v->stalled = v->age > v->limit;
        v->changed = v->stalled != hb->reported ? (v->stalled ? 1 : -1) : 0;
        hb->reported = v->stalled;
    }
    pthread_mutex_unlock(&reg_mu);

    for (int i = 0; i < nv; i++) {
        const mon_view *v = &views[i];
        if (v->changed > 0)
            ke_log_error(LOG_MOD, "worker stalled: no heartbeat name=%s since_ms=%lld "
                                  "limit_ms=%lld",
                         v->name, (long long)v->age, (long long)v->limit);
        else if (v->changed < 0)
            ke_log_info(LOG_MOD, "worker beats again name=%s", v->name);
    }
    /* Gauges: 1 for each stalled name; 0 for a name that was stalled and
     * no longer is (or went away), and for every other registered name,
     * so the series exist before anything stalls. */
    for (int j = 0; j < mon_nstalled;) {
        int still = 0;
        for (int i = 0; i < nv && !still; i++)
            still = views[i].stalled && strcmp(views[i].name, mon_stalled[j]) == 0;
        if (still) {
            j++;
            continue;
        }
        gauge_set(mon_stalled[j], 0);
        memcpy(mon_stalled[j], mon_stalled[--mon_nstalled], KE_WATCHDOG_NAME_MAX);
    }
    for (int i = 0; i < nv; i++) {
        if (!views[i].stalled) {
            int other = 0; /* a stalled heartbeat of the same name wins */
            for (int k = 0; k < nv && !other; k++)
                other = views[k].stalled && strcmp(views[k].name, views[i].name) == 0;
            if (!other)
                gauge_set(views[i].name, 0);
            continue;
        }
        gauge_set(views[i].name, 1);
        int known = 0;
        for (int j = 0; j < mon_nstalled && !known; j++)
            known = strcmp(mon_stalled[j], views[i].name) == 0;
        if (!known && mon_nstalled < KE_WATCHDOG_MAX)
            memcpy(mon_stalled[mon_nstalled++], views[i].name, KE_WATCHDOG_NAME_MAX);
    }
}

static void *mon_main(void *arg)
{
    (void)arg;
    mon_view *views = calloc(KE_WATCHDOG_MAX, sizeof(*views));
    if (!views) {
        ke_log_error(LOG_MOD, "monitor out of memory: stalls are not logged (healthz still "
                              "checks)");
        return NULL;
    }
    pthread_mutex_lock(&mon_mu);
    while (!mon_quit) {
        pthread_mutex_unlock(&mon_mu);
        mon_round(views);
        pthread_mutex_lock(&mon_mu);
        int64_t tick = atomic_load(&default_stall_ms) / 4;
        if (tick > KE_WATCHDOG_TICK_MAX_MS)
            tick = KE_WATCHDOG_TICK_MAX_MS;
        if (tick < KE_WATCHDOG_TICK_MIN_MS)
            tick = KE_WATCHDOG_TICK_MIN_MS;
        struct timespec until = ke_time_deadline(tick);
        if (!mon_quit)
            pthread_cond_timedwait(&mon_cv, &mon_mu, &until);
    }
    pthread_mutex_unlock(&mon_mu);
    free(views);
    return NULL;
}

int ke_watchdog_start(void)
{
    int rc = 0;
    pthread_mutex_lock(&mon_mu);
    if (mon_running) {
        rc = KE_EEXIST;
    } else if (ke_time_cond_init(&mon_cv) != 0) {
        rc = KE_EIO;
    } else {
        mon_quit = 0;
        if (pthread_create(&mon_thread, NULL, mon_main, NULL) != 0) {
            pthread_cond_destroy(&mon_cv);
            rc = KE_EIO;
        } else {
            pthread_setname_np(mon_thread, "ke-watchdog");
            mon_running = 1;
        }
    }
    pthread_mutex_unlock(&mon_mu);
    return rc;
}

void ke_watchdog_stop(void)
{
    pthread_mutex_lock(&mon_mu);
    if (!mon_running) {
        pthread_mutex_unlock(&mon_mu);
        return;
    }
    mon_quit = 1;
    pthread_cond_broadcast(&mon_cv);
    pthread_mutex_unlock(&mon_mu);
    pthread_join(mon_thread, NULL);
    pthread_mutex_lock(&mon_mu);
    mon_running = 0;
    pthread_cond_destroy(&mon_cv);
    pthread_mutex_unlock(&mon_mu);
}

/* ---- shutdown deadline ---------------------------------------------- */

static pthread_mutex_t sd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sd_cv;
static pthread_t sd_thread;
static int sd_armed, sd_done;
static int64_t sd_deadline_ms, sd_timeout_ms;
static char sd_step[KE_WATCHDOG_NAME_MAX] = "-";

/* sd_expire runs on the deadline thread once the deadline passed: it names
 * what had not stopped and ends the process without running anything a
 * stuck thread could hold (no atexit handlers, no stdio flush of others). */
static void sd_expire(const char *step)
{
    char left[1024];
    size_t off = 0;
    left[0] = '\0';
    /* The registry lock is only ever held for short loops; a bounded try
     * keeps this thread from joining a deadlock all the same. (Tries rather
     * than pthread_mutex_clocklock: ThreadSanitizer does not see that one
     * take the lock.) */
    int locked = 0;
    for (int64_t until = ke_time_mono_ms() + 1000; !locked;) {
        locked = pthread_mutex_trylock(&reg_mu) == 0;
        if (locked || ke_time_mono_ms() >= until)
            break;
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
    }
    if (locked) {
        int64_t now = ke_time_mono_ms();
        for (int i = 0; i < KE_WATCHDOG_MAX; i++) {
            const ke_watchdog_hb *hb = &slots[i];
            if (!hb->used)
                continue;
            int64_t age = now - atomic_load_explicit(&hb->last_ms, memory_order_relaxed);
            append(left, sizeof(left), &off, "%s%s%s", off ? "," : "", hb->name,
                   age > limit_of(hb) ? "(stalled)" : "");
        }
        pthread_mutex_unlock(&reg_mu);
    } else {
        snprintf(left, sizeof(left), "(registry locked)");
    }
    ke_log_error(LOG_MOD, "shutdown did not finish in time, exiting timeout_ms=%lld "
                          "stopping=%s not_stopped=%s exit=%d",
                 (long long)sd_timeout_ms, step, left[0] ? left : "-",
                 KE_WATCHDOG_EXIT_DEADLINE);
    _exit(KE_WATCHDOG_EXIT_DEADLINE);
}

static void *sd_main(void *arg)
{
    (void)arg;
    char step[KE_WATCHDOG_NAME_MAX];
    pthread_mutex_lock(&sd_mu);
    while (!sd_done) {
        int64_t left = sd_deadline_ms - ke_time_mono_ms();
        if (left <= 0)
            break;
        struct timespec until = ke_time_deadline(left);
        pthread_cond_timedwait(&sd_cv, &sd_mu, &until);
    }
    int done = sd_done;
    memcpy(step, sd_step, sizeof(step));
    pthread_mutex_unlock(&sd_mu);
    if (!done)
        sd_expire(step);
    return NULL;
}

int ke_watchdog_shutdown_arm(int64_t timeout_ms)
{
    if (timeout_ms <= 0)
        timeout_ms = KE_WATCHDOG_SHUTDOWN_DEFAULT_MS;
    int rc = 0;
    pthread_mutex_lock(&sd_mu);
    if (sd_armed) {
        rc = KE_EEXIST;
    } else if (ke_time_cond_init(&sd_cv) != 0) {
        rc = KE_EIO;
    } else {
        sd_done = 0;
        sd_timeout_ms = timeout_ms;
        sd_deadline_ms = ke_time_mono_ms() + timeout_ms;
        if (pthread_create(&sd_thread, NULL, sd_main, NULL) != 0) {
            pthread_cond_destroy(&sd_cv);
            rc = KE_EIO;
        } else {
            pthread_setname_np(sd_thread, "ke-shutdown");
            sd_armed = 1;
        }
    }
    pthread_mutex_unlock(&sd_mu);
    if (rc == 0)
        ke_log_info(LOG_MOD, "shutdown deadline armed timeout_ms=%lld", (long long)timeout_ms);
    return rc;
}

void ke_watchdog_shutdown_step(const char *what)
{
    pthread_mutex_lock(&sd_mu);
    snprintf(sd_step, sizeof(sd_step), "%s", what ? what : "-");
    pthread_mutex_unlock(&sd_mu);
}

void ke_watchdog_shutdown_done(void)
{
    pthread_mutex_lock(&sd_mu);
    if (!sd_armed) {
        pthread_mutex_unlock(&sd_mu);
        return;
    }
    sd_done = 1;
    pthread_cond_broadcast(&sd_cv);
    pthread_mutex_unlock(&sd_mu);
    pthread_join(sd_thread, NULL);
    pthread_mutex_lock(&sd_mu);
    sd_armed = 0;
    pthread_cond_destroy(&sd_cv);
    pthread_mutex_unlock(&sd_mu);
}
