/*
 * test_edge_runtime.c — edgecore's runtime as an operator sees it:
 *
 *   health   /healthz answers 200 with each enabled module's state (and
 *            nothing of a module turned off with modules.<name>.enable);
 *            /metrics has each module's bus counters;
 *   stall    a loop that stops turning (the test hook KE_TEST_STALL blocks
 *            it) turns /healthz to 503 naming it within
 *            health.stall_timeout, and SIGTERM still ends edgecore, with
 *            status 1, by shutdown.timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_time.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* healthz_wait polls /healthz until its status is `code` and its body holds
 * `text`; returns the last body (free it). */
static char *healthz_wait(int port, int code, const char *text, int64_t timeout_ms)
{
    int64_t until = ke_time_mono_ms() + timeout_ms;
    char *body = NULL;
    int got = 0;
    for (;;) {
        got = ke_tp_http_get(port, "/healthz", &body);
        if ((got == code && strstr(body, text)) || ke_time_mono_ms() > until)
            break;
        free(body);
        body = NULL;
        pause_ms(50);
    }
    if (got != code || !strstr(body, text))
        fail_msg("/healthz answered %d \"%s\", want %d with \"%s\"", got, body, code, text);
    return body;
}

static void test_healthz_shows_each_module_and_metrics_count_the_bus(void **state)
{
    (void)state;
    ke_cluster c;
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, NODE, ke_cluster_token(&c)), 0);
    ke_edge e = {0};
    const char *flags[] = {"--http.listen=127.0.0.1:0", NULL};
    ke_edge_start(&c, &e, NODE, c.grpc_port, flags);
    assert_true(e.http_port > 0);
    char *body = healthz_wait(e.http_port, 200, "edgehub: ok connected", 20000);
    assert_true(strncmp(body, "ok\n", 3) == 0);
    assert_non_null(strstr(body, "metamanager: ok outbox="));
    assert_non_null(strstr(body, "edgelocal: ok"));
    free(body);
    assert_int_equal(ke_tp_http_get(e.http_port, "/metrics", &body), 200);
    /* EdgeHub's changes and answers went through the bus. */
    assert_true(ke_tp_metric_value(body, "ke_bus_delivered_total{module=\"metamanager\"}") > 0);
    assert_true(ke_tp_metric_value(body, "ke_bus_delivered_total{module=\"edgehub\"}") > 0);
    assert_int_equal(ke_tp_metric_value(body, "ke_bus_dropped_total{module=\"metamanager\"}"), 0);
    if (ke_tp_metric_value(body, "ke_edge_module_healthy{module=\"edgehub\"}") != 1)
        fail_msg("no ke_edge_module_healthy{module=\"edgehub\"} 1 in:\n%s", body);
    free(body);
    ke_edge_stop(&e); /* SIGTERM: exit 0, asserted */

    /* EdgeLocal turned off: not started, not shown. */
    const char *off[] = {"--http.listen=127.0.0.1:0", "--modules.edgelocal.enable=false", NULL};
    ke_edge_start(&c, &e, NODE, c.grpc_port, off);
    body = healthz_wait(e.http_port, 200, "edgehub: ok connected", 20000);
    assert_null(strstr(body, "edgelocal"));
    free(body);
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

static void test_a_stuck_loop_fails_healthz_and_sigterm_still_ends_edgecore(void **state)
{
    (void)state;
    if (!getenv("KE_TEST_HOOKS")) {
        print_message("built without KE_TEST_HOOKS: the stall hook is absent, skipped\n");
        skip();
    }
    ke_cluster c;
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, NODE, ke_cluster_token(&c)), 0);
    ke_edge e = {0};
    const char *flags[] = {"--http.listen=127.0.0.1:0", "--health.stall_timeout=1s",
                           "--shutdown.timeout=2s", NULL};
    assert_int_equal(setenv("KE_TEST_STALL", "edge-loop", 1), 0);
    ke_edge_start(&c, &e, NODE, c.grpc_port, flags); /* ready: then the loop blocks */
    unsetenv("KE_TEST_STALL");
    char *body = healthz_wait(e.http_port, 503, "stalled: edge-loop for ", 15000);
    free(body);

    int64_t t0 = ke_time_mono_ms();
    assert_int_equal(kill(e.proc.pid, SIGTERM), 0);
    assert_int_equal(ke_tp_wait_exit(&e.proc, 30000), 1);
    e.running = 0;
    print_message("stuck edgecore exited %lld ms after SIGTERM (deadline 2000 ms)\n",
                  (long long)(ke_time_mono_ms() - t0));
    assert_true(ke_file_contains(e.log, "shutdown did not finish in time"));
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_shows_each_module_and_metrics_count_the_bus),
        cmocka_unit_test(test_a_stuck_loop_fails_healthz_and_sigterm_still_ends_edgecore),
    };
    return cmocka_run_group_tests_name("edge/runtime", tests, NULL, NULL);
}
