/*
 * test_workqueue.c — ke_workqueue: a key waits once however often it is
 * added; a key added while it runs runs once more afterwards and never on
 * two threads; a failing key is retried with growing delays until it
 * succeeds; add_after waits; stop drops what waits; max_keys bounds it.
 * Synchronisation is by condition variables on what the work function
 * saw, never by sleeping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_time.h"
#include "ke_workqueue.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int runs_a, runs_b, running, max_running;
    int fail_a; /* fail this many runs of "a" */
    int64_t at[16];  /* monotonic time of each run of "a" */
    int gate;        /* "a" waits here while gate is 1 */
    int in_a;
} probe;

static int work(const char *key, void *ud)
{
    probe *p = ud;
    pthread_mutex_lock(&p->mu);
    p->running++;
    if (p->running > p->max_running)
        p->max_running = p->running;
    int rc = 0;
    if (strcmp(key, "a") == 0) {
        if (p->runs_a < 16)
            p->at[p->runs_a] = ke_time_mono_ms();
        p->in_a = 1;
        pthread_cond_broadcast(&p->cv);
        while (p->gate)
            pthread_cond_wait(&p->cv, &p->mu);
        p->in_a = 0;
        p->runs_a++;
        if (p->fail_a > 0) {
            p->fail_a--;
            rc = -1;
        }
    } else {
        p->runs_b++;
    }
    p->running--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void wait_for(probe *p, const int *v, int want)
{
    pthread_mutex_lock(&p->mu);
    struct timespec until = ke_time_deadline(10000);
    while (*v < want)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0)
            break;
    int got = *v;
    pthread_mutex_unlock(&p->mu);
    assert_int_equal(got, want);
}

static void probe_init(probe *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    ke_time_cond_init(&p->cv);
}

static void test_workqueue_dedups_waiting_keys(void **state)
{
    (void)state;
    probe p;
    probe_init(&p);
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("t", NULL, work, &p, &q), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(ke_wq_add(q, "a"), 0);
    assert_int_equal(ke_wq_add(q, "b"), 0);
    assert_int_equal(ke_wq_len(q), 2);
    assert_int_equal(ke_wq_start(q), 0);
    wait_for(&p, &p.runs_b, 1);
    wait_for(&p, &p.runs_a, 1);
    ke_wq_stop(q);
    assert_int_equal(p.runs_a, 1); /* 100 adds while waiting: one run */
    ke_wq_free(q);
}

static void test_workqueue_add_while_running_runs_again_once(void **state)
{
    (void)state;
    probe p;
    probe_init(&p);
    p.gate = 1;
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("t", NULL, work, &p, &q), 0);
    assert_int_equal(ke_wq_start(q), 0);
    assert_int_equal(ke_wq_add(q, "a"), 0);
    wait_for(&p, &p.in_a, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ke_wq_add(q, "a"), 0); /* while it runs */
    pthread_mutex_lock(&p.mu);
    p.gate = 0;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    wait_for(&p, &p.runs_a, 2);
    assert_int_equal(ke_wq_add(q, "b"), 0); /* b runs after a's second run */
    wait_for(&p, &p.runs_b, 1);
    ke_wq_stop(q);
    assert_int_equal(p.runs_a, 2);
    assert_int_equal(p.max_running, 1);
    ke_wq_free(q);
}

static void test_workqueue_retries_failures_with_growing_delay(void **state)
{
    (void)state;
    probe p;
    probe_init(&p);
    p.fail_a = 3;
    ke_wq_opts o = {.base_ms = 20, .max_ms = 1000};
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("t", &o, work, &p, &q), 0);
    assert_int_equal(ke_wq_start(q), 0);
    assert_int_equal(ke_wq_add(q, "a"), 0);
    wait_for(&p, &p.runs_a, 4); /* three failures, then success */
    /* The delays before retries 1, 2, 3 are at least 20, 40, 80 ms. */
    assert_true(p.at[1] - p.at[0] >= 20);
    assert_true(p.at[2] - p.at[1] >= 40);
    assert_true(p.at[3] - p.at[2] >= 80);
    /* A success ends it: the key leaves once the worker is back from it. */
    int64_t until = ke_time_mono_ms() + 10000;
    while (ke_wq_len(q) != 0 && ke_time_mono_ms() < until)
        ;
    assert_int_equal(ke_wq_len(q), 0);
    ke_wq_stop(q);
    assert_int_equal(p.runs_a, 4);
    ke_wq_free(q);
}

static void test_workqueue_add_after_waits(void **state)
{
    (void)state;
    probe p;
    probe_init(&p);
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("t", NULL, work, &p, &q), 0);
    assert_int_equal(ke_wq_start(q), 0);
    int64_t t0 = ke_time_mono_ms();
    assert_int_equal(ke_wq_add_after(q, "a", 50), 0);
    assert_int_equal(ke_wq_add(q, "a"), 0); /* already waiting: stays delayed */
    wait_for(&p, &p.runs_a, 1);
    assert_true(p.at[0] - t0 >= 50);
    ke_wq_stop(q);
    ke_wq_free(q);
}

/* A key that schedules itself again from its own run (a periodic job)
 * runs again after the delay, not at once. */
typedef struct periodic {
    ke_wq *q;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int runs;
    int64_t at[4];
} periodic;

static int periodic_work(const char *key, void *ud)
{
    periodic *p = ud;
    pthread_mutex_lock(&p->mu);
    if (p->runs < 4)
        p->at[p->runs] = ke_time_mono_ms();
    p->runs++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return ke_wq_add_after(p->q, key, 100) == 0 ? 0 : -1;
}

static void test_workqueue_add_after_from_its_own_run_waits(void **state)
{
    (void)state;
    periodic p = {0};
    pthread_mutex_init(&p.mu, NULL);
    ke_time_cond_init(&p.cv);
    assert_int_equal(ke_wq_new("t", NULL, periodic_work, &p, &p.q), 0);
    assert_int_equal(ke_wq_add(p.q, "tick"), 0);
    assert_int_equal(ke_wq_start(p.q), 0);
    pthread_mutex_lock(&p.mu);
    struct timespec until = ke_time_deadline(10000);
    while (p.runs < 3 && pthread_cond_timedwait(&p.cv, &p.mu, &until) == 0)
        ;
    pthread_mutex_unlock(&p.mu);
    ke_wq_stop(p.q);
    assert_true(p.runs >= 3);
    assert_true(p.at[1] - p.at[0] >= 100);
    assert_true(p.at[2] - p.at[1] >= 100);
    ke_wq_free(p.q);
}

static void test_workqueue_bounded_and_stopped(void **state)
{
    (void)state;
    probe p;
    probe_init(&p);
    ke_wq_opts o = {.max_keys = 3};
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("t", &o, work, &p, &q), 0);
    assert_int_equal(ke_wq_add(q, "k1"), 0);
    assert_int_equal(ke_wq_add(q, "k2"), 0);
    assert_int_equal(ke_wq_add(q, "k3"), 0);
    assert_int_equal(ke_wq_add(q, "k4"), KE_EFULL);
    assert_int_equal(ke_wq_add(q, "k1"), 0); /* waiting already: fine */
    ke_wq_stop(q);                           /* never started: drops them */
    assert_int_equal(ke_wq_len(q), 0);
    assert_int_equal(ke_wq_add(q, "k1"), KE_ECLOSED);
    ke_wq_free(q);
    ke_wq_free(NULL);
    assert_int_equal(p.runs_b, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workqueue_dedups_waiting_keys),
        cmocka_unit_test(test_workqueue_add_while_running_runs_again_once),
        cmocka_unit_test(test_workqueue_retries_failures_with_growing_delay),
        cmocka_unit_test(test_workqueue_add_after_waits),
        cmocka_unit_test(test_workqueue_add_after_from_its_own_run_waits),
        cmocka_unit_test(test_workqueue_bounded_and_stopped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
