/*
 * test_rpc_watchdog.c — liveness that tells the truth, against real
 * cloudcore processes.
 *
 *   - an idle cloudcore (CloudHub, controllers, store) answers /healthz 200
 *     for several times its stall limit: idle workers are not stalled; its
 *     /metrics lists every worker's heartbeat at 0; SIGTERM exits 0;
 *   - with the test hook (KE_TEST_STALL=rpc-0-1, builds with KE_TEST_HOOKS)
 *     one rpc loop thread blocks forever: /healthz turns 503 naming it
 *     within the stall limit (polled with a deadline), the gauge says 1, and
 *     SIGTERM still ends the process, with status 1 (the shutdown deadline)
 *     and a log line naming what had not stopped.
 *
 * Every wait polls something the process says, with a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* wait_metric polls /metrics until `series` has value `want`; returns 0, or
 * -1 when the deadline passed. */
static int wait_metric(int port, const char *series, long long want, int64_t timeout_ms)
{
    int64_t end = ke_time_mono_ms() + timeout_ms;
    do {
        char *body = NULL;
        int code = ke_tp_http_get(port, "/metrics", &body);
        long long v = code == 200 ? ke_tp_metric_value(body, series) : -1;
        free(body);
        if (v == want)
            return 0;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL); /* poll interval, not a synchronisation */
    } while (ke_time_mono_ms() < end);
    return -1;
}

static void test_watchdog_idle_cloudcore_stays_healthy_past_stall_limit(void **state)
{
    (void)state;
    ke_cluster c;
    const char *extra[] = {"--health.stall_timeout=2s", NULL};
    ke_cluster_start(&c, extra);

    /* Every worker registered: its gauge is exported at 0 once the monitor
     * has made a round. */
    const char *workers[] = {
        "ke_watchdog_stalled{name=\"rpc-0-0\"}",       "ke_watchdog_stalled{name=\"rpc-0-1\"}",
        "ke_watchdog_stalled{name=\"store-watch\"}",   "ke_watchdog_stalled{name=\"cloudhub-reaper\"}",
        "ke_watchdog_stalled{name=\"ec-nodes\"}",
    };
    for (size_t i = 0; i < sizeof(workers) / sizeof(workers[0]); i++)
        assert_int_equal(wait_metric(c.http_port, workers[i], 0, 10000), 0);
    char *body = NULL;
    assert_int_equal(ke_tp_http_get(c.http_port, "/metrics", &body), 200);
    assert_non_null(strstr(body, "ke_watchdog_stalled{name=\"wq-"));
    assert_non_null(strstr(body, "ke_watchdog_stalled{name=\"up-"));
    free(body);

    /* Idle for three stall limits: every answer is 200 "ok". */
    int64_t end = ke_time_mono_ms() + 6000;
    int polls = 0;
    while (ke_time_mono_ms() < end) {
        int code = ke_tp_http_get(c.http_port, "/healthz", &body);
        if (code != 200)
            fail_msg("idle cloudcore answered /healthz %d: %s", code, body);
        assert_string_equal(body, "ok");
        free(body);
        polls++;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(polls >= 5);
    ke_cluster_stop(&c); /* asserts the orderly exit: status 0 */
}

static void test_watchdog_stalled_rpc_thread_fails_healthz_and_sigterm_still_exits(void **state)
{
    (void)state;
    if (!getenv("KE_TEST_HOOKS")) {
        print_message("built without KE_TEST_HOOKS: the stall hook is absent, skipped\n");
        skip();
    }
    char dir[64], log[128];
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    snprintf(log, sizeof(log), "%s/cloudcore.log", dir);
    char *argv[] = {(char *)ke_tp_env("KE_CLOUDCORE"), "--grpc.listen=127.0.0.1:0",
                    "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0", "--log_level=info", "--cloudhub.enable=false",
                    "--grpc.threads=2", "--health.stall_timeout=1s", "--shutdown.timeout=2s",
                    NULL};
    assert_int_equal(setenv("KE_TEST_STALL", "rpc-0-1", 1), 0);
    ke_tp p;
    int rc = ke_tp_start_log(&p, argv, log);
    unsetenv("KE_TEST_STALL");
    assert_int_equal(rc, 0);
    char line[256];
    int grpc_port = 0, http_port = 0;
    assert_int_equal(ke_tp_wait_line(&p, "ready ", 20000, line, sizeof(line)), 0);
    assert_int_equal(sscanf(line, "ready grpc=%d http=%d", &grpc_port, &http_port), 2);

    /* 503 naming the stalled thread, within the limit plus slack. */
    int64_t start = ke_time_mono_ms(), end = start + 10000;
    int code = 0;
    char *body = NULL;
    for (;;) {
        code = ke_tp_http_get(http_port, "/healthz", &body);
        if (code == 503 || ke_time_mono_ms() > end)
            break;
        free(body);
        body = NULL;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(code, 503);
    assert_non_null(strstr(body, "stalled: rpc-0-1 for "));
    assert_null(strstr(body, "rpc-0-0")); /* the other loop thread is fine */
    free(body);
    assert_int_equal(wait_metric(http_port, "ke_watchdog_stalled{name=\"rpc-0-1\"}", 1, 10000), 0);
    assert_int_equal(wait_metric(http_port, "ke_watchdog_stalled{name=\"rpc-0-0\"}", 0, 10000), 0);

    /* SIGTERM: the orderly shutdown waits on the stuck thread; the 2 s
     * deadline ends the process with status 1. */
    int64_t t0 = ke_time_mono_ms();
    assert_int_equal(kill(p.pid, SIGTERM), 0);
    assert_int_equal(ke_tp_wait_exit(&p, 30000), 1);
    int64_t took = ke_time_mono_ms() - t0;
    print_message("stalled cloudcore exited %lld ms after SIGTERM (deadline 2000 ms)\n",
                  (long long)took);
    assert_int_equal(ke_tp_sh("grep -q 'shutdown did not finish in time.*not_stopped=.*rpc-0-1' "
                              "%s",
                              log),
                     0);
    assert_int_equal(ke_tp_sh("grep -q 'worker stalled: no heartbeat name=rpc-0-1' %s", log), 0);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watchdog_idle_cloudcore_stays_healthy_past_stall_limit),
        cmocka_unit_test(test_watchdog_stalled_rpc_thread_fails_healthz_and_sigterm_still_exits),
    };
    return cmocka_run_group_tests_name("rpc/watchdog", tests, NULL, NULL);
}
