/*
 * test_wheel.c — the hashed timer wheel (lib/time/ke_wheel): timers fire
 * once, at most a tick late and never early; disarmed ones never fire;
 * timers of a later turn stay; re-arming from the callback works; a gap of
 * several turns fires everything due once; the work per advance is what
 * expires, not what is armed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_wheel.h"

#include <stdlib.h>
#include <string.h>

typedef struct rec {
    int64_t now;
    int fired[64];
    int64_t when[64];
    ke_wheel *w;
    int64_t rearm_ms; /* > 0: re-arm the fired timer this much later, once */
} rec;

static ke_wheel_timer T[64];

static void on_fire(ke_wheel_timer *t, void *arg)
{
    rec *r = arg;
    int i = (int)(t - T);
    r->fired[i]++;
    r->when[i] = r->now;
    if (r->rearm_ms > 0 && r->fired[i] == 1)
        ke_wheel_arm(r->w, t, r->now + r->rearm_ms);
}

static size_t advance(ke_wheel *w, rec *r, int64_t now)
{
    r->now = now;
    return ke_wheel_advance(w, now, on_fire, r);
}

static void test_timers_fire_once_never_early_at_most_a_tick_late(void **state)
{
    (void)state;
    ke_wheel w;
    rec r = {.w = &w};
    assert_int_equal(ke_wheel_init(&w, 16, 100, 1000), 0);
    for (int i = 0; i < 40; i++)
        ke_wheel_arm(&w, &T[i], 1000 + 37 * i); /* some past a whole turn (1.6 s) */
    assert_int_equal(w.armed, 40);
    for (int64_t now = 1000; now <= 4000; now += 10)
        advance(&w, &r, now);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(r.fired[i], 1);
        assert_true(r.when[i] >= 1000 + 37 * i);
        assert_true(r.when[i] <= 1000 + 37 * i + 2 * 100);
    }
    assert_int_equal(w.armed, 0);
    ke_wheel_free(&w);
}

static void test_disarmed_timers_never_fire_and_rearm_moves_them(void **state)
{
    (void)state;
    ke_wheel w;
    rec r = {.w = &w};
    assert_int_equal(ke_wheel_init(&w, 8, 10, 0), 0);
    ke_wheel_arm(&w, &T[0], 50);
    ke_wheel_arm(&w, &T[1], 50);
    ke_wheel_arm(&w, &T[2], 50);
    ke_wheel_disarm(&w, &T[1]);
    ke_wheel_disarm(&w, &T[1]); /* twice: a no-op */
    ke_wheel_arm(&w, &T[2], 500); /* moved beyond a turn (80 ms) */
    advance(&w, &r, 100);
    assert_int_equal(r.fired[0], 1);
    assert_int_equal(r.fired[1], 0);
    assert_int_equal(r.fired[2], 0);
    advance(&w, &r, 499);
    assert_int_equal(r.fired[2], 0); /* its slot came round twice: not yet */
    advance(&w, &r, 520);
    assert_int_equal(r.fired[2], 1);
    ke_wheel_free(&w);
}

static void test_the_callback_rearms_and_a_past_time_fires_next(void **state)
{
    (void)state;
    ke_wheel w;
    rec r = {.w = &w, .rearm_ms = 300};
    assert_int_equal(ke_wheel_init(&w, 4, 100, 0), 0);
    ke_wheel_arm(&w, &T[0], 150);
    assert_int_equal(advance(&w, &r, 300), 1); /* re-armed for 600 */
    assert_int_equal(advance(&w, &r, 600), 0);
    assert_int_equal(advance(&w, &r, 700), 1);
    assert_int_equal(r.fired[0], 2);
    /* Armed in the past: due at the next advance, not a turn later. */
    r.rearm_ms = 0;
    ke_wheel_arm(&w, &T[1], 10);
    assert_int_equal(advance(&w, &r, 800), 1);
    assert_int_equal(r.fired[1], 1);
    assert_int_equal(w.armed, 0);
    ke_wheel_free(&w);
}

static void test_a_gap_of_several_turns_fires_everything_due_once(void **state)
{
    (void)state;
    ke_wheel w;
    rec r = {.w = &w};
    assert_int_equal(ke_wheel_init(&w, 8, 10, 0), 0);
    for (int i = 0; i < 20; i++)
        ke_wheel_arm(&w, &T[i], 10 * i);
    ke_wheel_arm(&w, &T[20], 100000);
    assert_int_equal(advance(&w, &r, 10000), 20); /* 125 turns at once */
    for (int i = 0; i < 20; i++)
        assert_int_equal(r.fired[i], 1);
    assert_int_equal(r.fired[20], 0);
    assert_int_equal(w.armed, 1);
    ke_wheel_free(&w);
}

static int64_t visits;
static void count_fire(ke_wheel_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    visits++;
}

static void test_an_advance_costs_what_expires_not_what_is_armed(void **state)
{
    (void)state;
    enum { N = 100000 };
    ke_wheel w;
    ke_wheel_timer *ts = calloc(N, sizeof(*ts));
    assert_non_null(ts);
    assert_int_equal(ke_wheel_init(&w, 256, 100, 0), 0); /* spans 25.6 s */
    for (int i = 0; i < N; i++)
        ke_wheel_arm(&w, &ts[i], 15000 + (i % 1000)); /* all due within 15-16 s */
    /* Ten seconds of ticks: nothing due, nothing fired. */
    for (int64_t now = 100; now <= 10000; now += 100)
        assert_int_equal(ke_wheel_advance(&w, now, count_fire, NULL), 0);
    assert_int_equal(visits, 0);
    assert_int_equal(ke_wheel_advance(&w, 17000, count_fire, NULL), N);
    assert_int_equal(w.armed, 0);
    ke_wheel_free(&w);
    free(ts);
}

static void test_bad_arguments_are_refused(void **state)
{
    (void)state;
    ke_wheel w;
    assert_int_equal(ke_wheel_init(&w, 0, 100, 0), KE_EINVAL);
    assert_int_equal(ke_wheel_init(&w, 8, 0, 0), KE_EINVAL);
}

static int fresh_timers(void **state)
{
    (void)state;
    memset(T, 0, sizeof(T));
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_timers_fire_once_never_early_at_most_a_tick_late, fresh_timers),
        cmocka_unit_test_setup(test_disarmed_timers_never_fire_and_rearm_moves_them, fresh_timers),
        cmocka_unit_test_setup(test_the_callback_rearms_and_a_past_time_fires_next, fresh_timers),
        cmocka_unit_test_setup(test_a_gap_of_several_turns_fires_everything_due_once, fresh_timers),
        cmocka_unit_test_setup(test_an_advance_costs_what_expires_not_what_is_armed, fresh_timers),
        cmocka_unit_test_setup(test_bad_arguments_are_refused, fresh_timers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
