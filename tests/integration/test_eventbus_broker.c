/*
 * test_eventbus_broker.c — EventBus and the broker it talks to, beyond
 * test_eventbus's plain external broker: the internal broker that edgecore
 * starts, restarts and stops itself (modules.eventbus.mode: internal), and
 * an external broker that asks for a user name and password, or speaks
 * TLS. One cloudcore and one durable consumer of CloudHub's upstream log
 * (group "eventbus") serve every case; each case starts its own broker
 * (or none) and its own edgecore, and stops them.
 *
 * Skipped (exit 77) when mosquitto, mosquitto_pub, mosquitto_passwd or
 * openssl is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_consumer.h"
#include "ke_mqtt.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"
#define WAIT_MS 30000
#define TOPIC "$hw/events/upload/x"

static ke_cluster C;
static ke_edge E;
static ke_mqtt B;
static ke_consumer K;
static int consumer_on;
static char certs[200];

static pthread_mutex_t got_mu = PTHREAD_MUTEX_INITIALIZER;
static char got[256][128]; /* payloads received, in order */
static size_t ngot;

static void on_entry(const Ke__V1__UpstreamMessage *m, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&got_mu);
    if (ngot < sizeof(got) / sizeof(got[0]) && m->message) {
        size_t n = m->message->content.len < sizeof(got[0]) - 1 ? m->message->content.len
                                                                : sizeof(got[0]) - 1;
        memcpy(got[ngot], m->message->content.data, n);
        got[ngot++][n] = '\0';
    }
    pthread_mutex_unlock(&got_mu);
}

static int received(const char *payload)
{
    int n = 0;
    pthread_mutex_lock(&got_mu);
    for (size_t i = 0; i < ngot; i++)
        n += strcmp(got[i], payload) == 0;
    pthread_mutex_unlock(&got_mu);
    return n;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void expect_payload(const char *payload)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (!received(payload)) {
        if (ke_time_mono_ms() > until) {
            ke_tp_sh("tail -30 %s >&2", E.log);
            fail_msg("\"%s\" did not reach the consumer", payload);
        }
        pause_ms(20);
    }
}

/* health_wait polls /healthz (200 expected: a broker away is not
 * unhealthy) until it holds every text given (NULL-terminated); returns
 * the body (the caller frees). */
static char *health_wait(const char *a, const char *b)
{
    char *body = NULL;
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        int st = ke_tp_http_get(E.http_port, "/healthz", &body);
        if (st == 200 && strstr(body, a) && (!b || strstr(body, b)))
            return body;
        if (ke_time_mono_ms() > until) {
            ke_tp_sh("tail -30 %s >&2", E.log);
            fail_msg("no \"%s\"%s%s in /healthz (status %d):\n%s", a, b ? " and " : "",
                     b ? b : "", st, body ? body : "");
        }
        free(body);
        body = NULL;
        pause_ms(50);
    }
}

static long long metric(const char *series)
{
    char *body = NULL;
    assert_int_equal(ke_tp_http_get(E.http_port, "/metrics", &body), 200);
    long long v = ke_tp_metric_value(body, series);
    free(body);
    return v;
}

static int count_in_file(const char *path, const char *text)
{
    char out[32];
    if (ke_tp_capture(out, sizeof(out), "grep -cF -- '%s' %s", text, path) < 0)
        return -1;
    return atoi(out);
}

static void wait_count_in_file(const char *path, const char *text, int n)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (count_in_file(path, text) < n) {
        if (ke_time_mono_ms() > until) {
            ke_tp_sh("tail -30 %s >&2", path);
            fail_msg("fewer than %d \"%s\" in %s", n, text, path);
        }
        pause_ms(20);
    }
}

/* start_edge starts edgecore with EventBus on, fast broker back-off, the
 * health port, and extra (NULL-terminated, up to 6). */
static void start_edge(const char *broker, const char *const *extra)
{
    static char broker_arg[96];
    const char *args[16];
    size_t n = 0;
    snprintf(broker_arg, sizeof(broker_arg), "--eventbus.broker=%s", broker);
    args[n++] = "--modules.eventbus.enable=true";
    args[n++] = broker_arg;
    args[n++] = "--eventbus.backoff_initial=100ms";
    args[n++] = "--eventbus.backoff_max=1s";
    args[n++] = "--http.listen=127.0.0.1:0";
    for (size_t i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    ke_edge_start(&C, &E, NODE, C.grpc_port, args);
}

static void stop_everything(void)
{
    if (E.running)
        ke_tp_stop(&E.proc);
    E.running = 0;
    ke_mqtt_stop(&B);
}

static int setup(void **state)
{
    (void)state;
    if (!ke_mqtt_available() || ke_tp_sh("command -v mosquitto_passwd openssl >/dev/null") != 0) {
        fprintf(stderr, "mosquitto, mosquitto_pub, mosquitto_passwd or openssl missing: "
                        "skipping\n");
        exit(77);
    }
    ke_cluster_start(&C, NULL);
    atexit(stop_everything); /* a failed case leaves no process behind */
    assert_int_equal(ke_cluster_join(&C, NODE, ke_cluster_token(&C)), 0);
    snprintf(certs, sizeof(certs), "%s/mqtt-certs", C.dir);
    assert_int_equal(ke_tp_sh("sh %s/tests/support/gen-certs.sh %s", ke_tp_env("KE_SOURCE_DIR"),
                              certs),
                     0);
    const char *groups[] = {"eventbus", NULL};
    ke_consumer_start(&K, C.admin, "eventbus-broker-test", groups, 0, 1, on_entry, NULL);
    consumer_on = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int edge_status = E.running ? ke_tp_stop(&E.proc) : 0;
    E.running = 0;
    ke_mqtt_stop(&B);
    if (consumer_on)
        ke_consumer_stop(&K);
    consumer_on = 0;
    ke_cluster_stop(&C);
    assert_int_equal(edge_status, 0);
    return 0;
}

/* case_cleanup: after each case, passed or failed (cmocka leaves a failed
 * case mid-way): what it left running is stopped, so the next case starts
 * clean and nothing is left behind. */
static int is_broker_of(int pid, const char *conf);

static int case_cleanup(void **state)
{
    (void)state;
    if (E.running) {
        ke_tp_stop(&E.proc);
        E.running = 0;
    }
    /* an internal broker left by a killed edgecore (a failed case) */
    char pidfile[300], conf[300], out[32];
    snprintf(pidfile, sizeof(pidfile), "%s/" NODE "/mosquitto/broker.pid", C.dir);
    snprintf(conf, sizeof(conf), "%s/" NODE "/mosquitto/mosquitto.conf", C.dir);
    if (ke_tp_capture(out, sizeof(out), "cat %s 2>/dev/null", pidfile) == 0 && atoi(out) > 1 &&
        is_broker_of(atoi(out), conf))
        kill(atoi(out), SIGKILL);
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    ke_mqtt_stop(&B);
    return 0;
}

/* stop_edge: SIGTERM; edgecore exits 0. */
static void stop_edge(void)
{
    int st = ke_tp_stop(&E.proc);
    E.running = 0;
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    if (st != 0) {
        ke_tp_sh("tail -30 %s >&2", E.log);
        fail_msg("edgecore exited with status %d", st);
    }
}

/* broker_pid: the pid /healthz gives for the internal broker. */
static int broker_pid(const char *health)
{
    const char *p = strstr(health, "broker pid=");
    return p ? atoi(p + strlen("broker pid=")) : 0;
}

/* ---- internal broker ---- */

static void test_internal_broker_is_started_restarted_and_stopped(void **state)
{
    (void)state;
    int port = ke_mqtt_free_port();
    assert_true(port > 0);
    char broker[64], conf[300];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", port);
    snprintf(conf, sizeof(conf), "%s/" NODE "/mosquitto/mosquitto.conf", C.dir);
    const char *extra[] = {"--modules.eventbus.mode=internal", NULL};
    start_edge(broker, extra);
    char *h = health_wait("eventbus: ok connected broker=", " broker pid=");
    int pid1 = broker_pid(h);
    free(h);
    assert_true(pid1 > 0);
    /* the process is the broker with edgecore's generated config */
    char out[64];
    /* "[/]": the pattern does not match the shell running pgrep */
    assert_int_equal(ke_tp_capture(out, sizeof(out), "pgrep -f -- '-c [/]%s'", conf + 1), 0);
    assert_int_equal(atoi(out), pid1);

    /* a publisher on that port reaches the cloud */
    ke_mqtt P;
    memset(&P, 0, sizeof(P));
    snprintf(P.dir, sizeof(P.dir), "%s", C.dir);
    P.port = port;
    assert_int_equal(ke_mqtt_pub(&P, TOPIC, "internal-1"), 0);
    expect_payload("internal-1");
    assert_int_equal(metric("ke_eventbus_broker_restarts_total"), 0);

    /* the broker killed: edgecore starts it again and reconnects */
    int connects = count_in_file(E.log, "connected to the broker");
    assert_int_equal(kill(pid1, SIGKILL), 0);
    h = health_wait("restarts=1", "eventbus: ok connected broker=");
    int pid2 = broker_pid(h);
    free(h);
    assert_true(pid2 > 0 && pid2 != pid1);
    assert_int_equal(metric("ke_eventbus_broker_restarts_total"), 1);
    assert_true(ke_file_wait_contains(E.log, "killed by signal 9", WAIT_MS));
    wait_count_in_file(E.log, "connected to the broker", connects + 1);
    assert_int_equal(ke_mqtt_pub(&P, TOPIC, "internal-2"), 0);
    expect_payload("internal-2");

    /* SIGTERM: edgecore stops its broker before it exits, with status 0 */
    stop_edge();
    assert_int_equal(ke_tp_sh("pgrep -f -- '-c [/]%s' >/dev/null", conf + 1), 1);
    assert_int_equal(kill(pid2, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_true(ke_file_wait_contains(E.log, "internal broker stopped pid=", 1));
}

/* is_broker_of: is pid alive and running the broker with config conf? (A
 * zombie's cmdline is empty: not.) */
static int is_broker_of(int pid, const char *conf)
{
    char out[16];
    return ke_tp_capture(out, sizeof(out), "tr '\\0' '\\n' </proc/%d/cmdline | grep -qxF -- '%s'",
                         pid, conf) == 0;
}

/* edgecore SIGKILLed leaves its broker running; the next edgecore stops
 * that one and starts its own */
static void test_internal_broker_left_by_a_killed_edgecore_is_replaced(void **state)
{
    (void)state;
    int port = ke_mqtt_free_port();
    assert_true(port > 0);
    char broker[64], conf[300];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", port);
    snprintf(conf, sizeof(conf), "%s/" NODE "/mosquitto/mosquitto.conf", C.dir);
    /* the same health port for both edgecores: the broker left behind
     * must not hold the first one's listener (close-on-exec) */
    char http[64];
    snprintf(http, sizeof(http), "--http.listen=127.0.0.1:%d", ke_mqtt_free_port());
    const char *extra[] = {"--modules.eventbus.mode=internal", http, NULL};
    start_edge(broker, extra);
    char *h = health_wait("eventbus: ok connected broker=", " broker pid=");
    int pid1 = broker_pid(h);
    free(h);
    assert_true(pid1 > 0);
    ke_edge_kill(&E);
    ke_rpc_channel_free(E.local);
    E.local = NULL;
    assert_true(is_broker_of(pid1, conf));
    int left = count_in_file(E.log, "left by an earlier edgecore has stopped pid=");
    start_edge(broker, extra);
    h = health_wait("eventbus: ok connected broker=", " broker pid=");
    int pid2 = broker_pid(h);
    free(h);
    assert_true(pid2 > 0 && pid2 != pid1);
    assert_false(is_broker_of(pid1, conf));
    assert_int_equal(count_in_file(E.log, "left by an earlier edgecore has stopped pid="),
                     left + 1);
    ke_mqtt P;
    memset(&P, 0, sizeof(P));
    snprintf(P.dir, sizeof(P.dir), "%s", C.dir);
    P.port = port;
    assert_int_equal(ke_mqtt_pub(&P, TOPIC, "internal-3"), 0);
    expect_payload("internal-3");
    stop_edge();
    assert_false(is_broker_of(pid2, conf));
}

/* a broker that ignores SIGTERM is SIGKILLed after 5 s; edgecore still
 * exits 0, within its shutdown deadline */
static void test_internal_broker_ignoring_sigterm_is_killed(void **state)
{
    (void)state;
    char fake[300];
    snprintf(fake, sizeof(fake), "%s/fake-broker.sh", C.dir);
    FILE *f = fopen(fake, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n");
    assert_int_equal(fclose(f), 0);
    assert_int_equal(ke_tp_sh("chmod +x %s", fake), 0);
    char broker[64], bin[340];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", ke_mqtt_free_port());
    snprintf(bin, sizeof(bin), "--eventbus.internal.binary=%s", fake);
    const char *extra[] = {"--modules.eventbus.mode=internal", bin, NULL};
    int killed = count_in_file(E.log, "after SIGTERM: SIGKILL");
    start_edge(broker, extra);
    char *h = health_wait(" broker pid=", NULL);
    int pid = broker_pid(h);
    free(h);
    assert_true(pid > 0);
    int64_t t0 = ke_time_mono_ms();
    stop_edge();
    int64_t took = ke_time_mono_ms() - t0;
    assert_int_equal(count_in_file(E.log, "after SIGTERM: SIGKILL"), killed + 1);
    char stopped[96];
    snprintf(stopped, sizeof(stopped), "internal broker stopped: pid %d killed by signal 9", pid);
    assert_int_equal(count_in_file(E.log, stopped), 1);
    assert_int_equal(kill(pid, 0), -1);
    print_message("edgecore stopped in %lld ms with a broker ignoring SIGTERM\n", (long long)took);
}

/* bad configuration of the internal broker: exit 2 with the reason */
static void test_internal_broker_bad_config_is_refused(void **state)
{
    (void)state;
    char cfgpath[300], out[600];
    snprintf(cfgpath, sizeof(cfgpath), "%s/" NODE "/edgecore.yaml", C.dir);
    const char *ec = ke_tp_env("KE_EDGECORE");
    const char *common = "--modules.eventbus.enable=true --modules.eventbus.mode=internal "
                         "--http.listen= --modules.edged.enable=false";
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --config %s %s "
                                   "--eventbus.broker=broker.example:1883", ec, cfgpath, common),
                     2);
    if (!strstr(out, "must be a numeric address"))
        fail_msg("%s", out);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --config %s %s --eventbus.username=u "
                                   "--eventbus.broker=127.0.0.1:1883", ec, cfgpath, common),
                     2);
    if (!strstr(out, "eventbus.username and eventbus.tls.ca are for an external broker"))
        fail_msg("%s", out);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --config %s %s "
                                   "--eventbus.internal.binary=/nonexistent/mosquitto", ec,
                                   cfgpath, common),
                     2);
    if (!strstr(out, "is not an executable program"))
        fail_msg("%s", out);
    assert_int_equal(ke_tp_capture(out, sizeof(out), "%s --config %s "
                                   "--modules.eventbus.mode=embedded", ec, cfgpath),
                     2);
    if (!strstr(out, "modules.eventbus.mode must be external or internal"))
        fail_msg("%s", out);
}

/* ---- user name and password ---- */

static void start_auth_broker(const char *name)
{
    char dir[260];
    snprintf(dir, sizeof(dir), "%s/%s", C.dir, name);
    ke_mqtt_opts o = {.user = "edge", .password = "s3cret"};
    ke_mqtt_start_opts(&B, dir, 0, &o);
}

static void test_password_right_forwards(void **state)
{
    (void)state;
    start_auth_broker("mqtt-auth-ok");
    char broker[64];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    const char *extra[] = {"--eventbus.username=edge", "--eventbus.password=s3cret", NULL};
    start_edge(broker, extra);
    free(health_wait("eventbus: ok connected broker=", NULL));
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "auth-1"), 0);
    expect_payload("auth-1");
    stop_edge();
    assert_int_equal(ke_mqtt_stop(&B), 0);
}

static void test_password_wrong_is_refused_and_said(void **state)
{
    (void)state;
    start_auth_broker("mqtt-auth-bad");
    char broker[64];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    const char *extra[] = {"--eventbus.username=edge", "--eventbus.password=wrong", NULL};
    int connects = count_in_file(E.log, "connected to the broker"); /* the log is appended */
    start_edge(broker, extra);
    /* healthy, disconnected, and why */
    free(health_wait("eventbus: ok disconnected: broker refused: ", "not authorised"));
    assert_int_equal(metric("ke_eventbus_connected"), 0);
    assert_int_equal(count_in_file(E.log, "connected to the broker"), connects);
    /* it keeps trying (and keeps being refused) */
    long long r0 = metric("ke_eventbus_reconnects_total");
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (metric("ke_eventbus_reconnects_total") < r0 + 2) {
        if (ke_time_mono_ms() > until)
            fail_msg("edgecore stopped trying the broker");
        pause_ms(50);
    }
    free(health_wait("eventbus: ok disconnected: broker refused: ", "not authorised"));
    assert_int_equal(count_in_file(E.log, "connected to the broker"), connects);
    stop_edge();
    assert_int_equal(ke_mqtt_stop(&B), 0);
}

/* ---- TLS ---- */

static void start_tls_broker(const char *name)
{
    char dir[260], ca[300], crt[300], key[300];
    snprintf(dir, sizeof(dir), "%s/%s", C.dir, name);
    snprintf(ca, sizeof(ca), "%s/ca1.crt", certs);
    snprintf(crt, sizeof(crt), "%s/server.crt", certs);
    snprintf(key, sizeof(key), "%s/server.key", certs);
    ke_mqtt_opts o = {.cafile = ca, .certfile = crt, .keyfile = key};
    ke_mqtt_start_opts(&B, dir, 0, &o);
}

static void test_tls_right_ca_forwards(void **state)
{
    (void)state;
    start_tls_broker("mqtt-tls-ok");
    char broker[64], ca[300];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    snprintf(ca, sizeof(ca), "--eventbus.tls.ca=%s/ca1.crt", certs);
    const char *extra[] = {ca, NULL};
    start_edge(broker, extra);
    free(health_wait("eventbus: ok connected broker=", NULL));
    assert_int_equal(ke_mqtt_pub(&B, TOPIC, "tls-1"), 0);
    expect_payload("tls-1");
    stop_edge();
    assert_int_equal(ke_mqtt_stop(&B), 0);
}

static void test_tls_other_ca_is_refused_and_said(void **state)
{
    (void)state;
    start_tls_broker("mqtt-tls-bad");
    char broker[64], ca[300];
    snprintf(broker, sizeof(broker), "127.0.0.1:%d", B.port);
    snprintf(ca, sizeof(ca), "--eventbus.tls.ca=%s/ca2.crt", certs);
    const char *extra[] = {ca, NULL};
    int connects = count_in_file(E.log, "connected to the broker"); /* the log is appended */
    start_edge(broker, extra);
    free(health_wait("eventbus: ok disconnected: TLS: ", "certificate verify failed"));
    assert_int_equal(metric("ke_eventbus_connected"), 0);
    assert_int_equal(count_in_file(E.log, "connected to the broker"), connects);
    stop_edge();
    assert_int_equal(ke_mqtt_stop(&B), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_internal_broker_is_started_restarted_and_stopped, case_cleanup),
        cmocka_unit_test_teardown(test_internal_broker_left_by_a_killed_edgecore_is_replaced, case_cleanup),
        cmocka_unit_test_teardown(test_internal_broker_ignoring_sigterm_is_killed, case_cleanup),
        cmocka_unit_test_teardown(test_internal_broker_bad_config_is_refused, case_cleanup),
        cmocka_unit_test_teardown(test_password_right_forwards, case_cleanup),
        cmocka_unit_test_teardown(test_password_wrong_is_refused_and_said, case_cleanup),
        cmocka_unit_test_teardown(test_tls_right_ca_forwards, case_cleanup),
        cmocka_unit_test_teardown(test_tls_other_ca_is_refused_and_said, case_cleanup),
    };
    return cmocka_run_group_tests_name("eventbus_broker", tests, setup, teardown);
}
