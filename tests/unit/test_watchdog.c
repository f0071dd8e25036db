/*
 * test_watchdog.c — ke_watchdog: a heartbeat that beats is not stalled and
 * one that stops is, named with its age and limit; the default limit and
 * the tick follow the configuration; unregistering forgets; the registry
 * is bounded; an idle work queue keeps beating while a stuck work function
 * stalls it; the shutdown deadline ends a stuck process with status 1 and
 * lets a finished one exit normally.
 * Waits poll the watchdog with a deadline, never sleep-and-assert.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_time.h"
#include "ke_watchdog.h"
#include "ke_workqueue.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* wait_stalled polls ke_watchdog_check until it reports `want` stalled
 * heartbeats; returns 0, or -1 at the deadline. */
static int wait_stalled(int want, char *reason, size_t cap, int64_t timeout_ms)
{
    int64_t end = ke_time_mono_ms() + timeout_ms;
    do {
        if (ke_watchdog_check(reason, cap) == want)
            return 0;
        nap_ms(5);
    } while (ke_time_mono_ms() < end);
    return -1;
}

static void test_watchdog_silent_heartbeat_is_stalled_and_named(void **state)
{
    (void)state;
    ke_watchdog_hb *a = NULL, *b = NULL;
    char reason[256];
    assert_int_equal(ke_watchdog_register("worker-a", 50, &a), 0);
    assert_int_equal(ke_watchdog_register("worker-b", 60000, &b), 0);
    assert_int_equal(ke_watchdog_count(), 2);
    assert_int_equal(ke_watchdog_check(reason, sizeof(reason)), 0);
    assert_string_equal(reason, "");

    assert_int_equal(wait_stalled(1, reason, sizeof(reason), 5000), 0);
    assert_non_null(strstr(reason, "stalled: worker-a for "));
    assert_non_null(strstr(reason, " (limit "));
    assert_null(strstr(reason, "worker-b"));

    ke_watchdog_beat(a); /* progress again: healthy at once */
    assert_int_equal(ke_watchdog_check(NULL, 0), 0);

    ke_watchdog_unregister(a);
    ke_watchdog_unregister(b);
    ke_watchdog_unregister(NULL);
    assert_int_equal(ke_watchdog_count(), 0);
}

static void test_watchdog_beating_heartbeat_never_stalls(void **state)
{
    (void)state;
    ke_watchdog_hb *hb = NULL;
    assert_int_equal(ke_watchdog_register("beater", 200, &hb), 0);
    int64_t end = ke_time_mono_ms() + 1000; /* five limits */
    while (ke_time_mono_ms() < end) {
        ke_watchdog_beat(hb);
        assert_int_equal(ke_watchdog_check(NULL, 0), 0);
        nap_ms(ke_watchdog_tick_ms(hb));
    }
    ke_watchdog_unregister(hb);
}

static void test_watchdog_default_limit_and_tick(void **state)
{
    (void)state;
    assert_int_equal(ke_watchdog_default_stall(), KE_WATCHDOG_STALL_DEFAULT_MS);
    ke_watchdog_hb *hb = NULL;
    assert_int_equal(ke_watchdog_register("defaulted", 0, &hb), 0);
    assert_int_equal(ke_watchdog_tick_ms(hb), KE_WATCHDOG_TICK_MAX_MS); /* 30 s / 4, capped */
    ke_watchdog_set_default_stall(200);
    assert_int_equal(ke_watchdog_tick_ms(hb), 50);
    char reason[256];
    assert_int_equal(wait_stalled(1, reason, sizeof(reason), 5000), 0);
    assert_non_null(strstr(reason, "defaulted"));
    ke_watchdog_set_default_stall(0); /* back to the default: healthy again */
    assert_int_equal(ke_watchdog_default_stall(), KE_WATCHDOG_STALL_DEFAULT_MS);
    assert_int_equal(ke_watchdog_check(NULL, 0), 0);
    ke_watchdog_unregister(hb);

    assert_int_equal(ke_watchdog_register("tiny", 1, &hb), 0);
    assert_int_equal(ke_watchdog_tick_ms(hb), KE_WATCHDOG_TICK_MIN_MS);
    ke_watchdog_unregister(hb);
    assert_int_equal(ke_watchdog_tick_ms(NULL), KE_WATCHDOG_TICK_MAX_MS);
}

static void test_watchdog_registry_is_bounded_and_checks_names(void **state)
{
    (void)state;
    static ke_watchdog_hb *hbs[KE_WATCHDOG_MAX];
    ke_watchdog_hb *extra = NULL;
    char name[KE_WATCHDOG_NAME_MAX + 8];
    for (int i = 0; i < KE_WATCHDOG_MAX; i++) {
        snprintf(name, sizeof(name), "w%d", i);
        assert_int_equal(ke_watchdog_register(name, 0, &hbs[i]), 0);
    }
    assert_int_equal(ke_watchdog_register("one-too-many", 0, &extra), KE_EFULL);
    assert_null(extra);
    ke_watchdog_unregister(hbs[7]);
    assert_int_equal(ke_watchdog_register("one-too-many", 0, &extra), 0);
    hbs[7] = extra;
    for (int i = 0; i < KE_WATCHDOG_MAX; i++)
        ke_watchdog_unregister(hbs[i]);
    assert_int_equal(ke_watchdog_count(), 0);

    memset(name, 'x', sizeof(name) - 1);
    name[KE_WATCHDOG_NAME_MAX] = '\0'; /* one byte too long */
    assert_int_equal(ke_watchdog_register(name, 0, &extra), KE_EINVAL);
    assert_int_equal(ke_watchdog_register("", 0, &extra), KE_EINVAL);
    assert_int_equal(ke_watchdog_register(NULL, 0, &extra), KE_EINVAL);
    assert_int_equal(ke_watchdog_register("neg", -1, &extra), KE_EINVAL);
}

/* A work queue's worker: idle, it keeps beating; stuck in its work
 * function, it stalls, named "wq-<name>". */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in, open;
} gate;

static int gated_work(const char *key, void *ud)
{
    (void)key;
    gate *g = ud;
    pthread_mutex_lock(&g->mu);
    g->in = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void test_watchdog_idle_workqueue_beats_and_stuck_one_stalls(void **state)
{
    (void)state;
    ke_watchdog_set_default_stall(500);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    ke_wq *q = NULL;
    assert_int_equal(ke_wq_new("probe", NULL, gated_work, &g, &q), 0);
    assert_int_equal(ke_wq_start(q), 0);
    assert_int_equal(ke_watchdog_count(), 1);

    /* idle for four limits: never stalled */
    int64_t end = ke_time_mono_ms() + 2000;
    while (ke_time_mono_ms() < end) {
        assert_int_equal(ke_watchdog_check(NULL, 0), 0);
        nap_ms(20);
    }

    assert_int_equal(ke_wq_add(q, "k"), 0);
    pthread_mutex_lock(&g.mu);
    while (!g.in)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    char reason[256];
    assert_int_equal(wait_stalled(1, reason, sizeof(reason), 5000), 0);
    assert_non_null(strstr(reason, "stalled: wq-probe for "));

    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(wait_stalled(0, reason, sizeof(reason), 5000), 0);

    ke_wq_free(q);
    assert_int_equal(ke_watchdog_count(), 0); /* stop unregisters */
    ke_watchdog_set_default_stall(0);
}

static void test_watchdog_monitor_starts_once_and_stops(void **state)
{
    (void)state;
    assert_int_equal(ke_watchdog_start(), 0);
    assert_int_equal(ke_watchdog_start(), KE_EEXIST);
    ke_watchdog_stop();
    ke_watchdog_stop(); /* idempotent */
}

static void test_watchdog_shutdown_deadline_exits_1_when_stuck(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ke_watchdog_hb *hb = NULL;
        if (ke_watchdog_register("stuck-worker", 0, &hb) != 0 ||
            ke_watchdog_shutdown_arm(200) != 0)
            _exit(3);
        ke_watchdog_shutdown_step("stuck component");
        for (;;) /* an orderly shutdown that never finishes */
            pause();
    }
    int st = 0;
    int64_t t0 = ke_time_mono_ms();
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), KE_WATCHDOG_EXIT_DEADLINE);
    assert_true(ke_time_mono_ms() - t0 >= 150); /* not before its deadline */
}

static void test_watchdog_shutdown_done_in_time_exits_normally(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (ke_watchdog_shutdown_arm(60000) != 0)
            _exit(3);
        if (ke_watchdog_shutdown_arm(60000) != KE_EEXIST)
            _exit(4);
        ke_watchdog_shutdown_step("quick component");
        ke_watchdog_shutdown_done();
        ke_watchdog_shutdown_done(); /* no-op */
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watchdog_silent_heartbeat_is_stalled_and_named),
        cmocka_unit_test(test_watchdog_beating_heartbeat_never_stalls),
        cmocka_unit_test(test_watchdog_default_limit_and_tick),
        cmocka_unit_test(test_watchdog_registry_is_bounded_and_checks_names),
        cmocka_unit_test(test_watchdog_idle_workqueue_beats_and_stuck_one_stalls),
        cmocka_unit_test(test_watchdog_monitor_starts_once_and_stops),
        cmocka_unit_test(test_watchdog_shutdown_deadline_exits_1_when_stuck),
        cmocka_unit_test(test_watchdog_shutdown_done_in_time_exits_normally),
    };
    return cmocka_run_group_tests_name("watchdog", tests, NULL, NULL);
}
