/*
 * test_metrics.c — unit tests for lib/metrics: the registry and its
 * Prometheus text rendering (ke_metrics), and the /metrics + /healthz HTTP
 * server (ke_http) on a real loopback socket with an ephemeral port, spoken
 * to by a plain-socket HTTP/1.0 client.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ke_err.h"
#include "ke_http.h"
#include "ke_log.h"
#include "ke_metrics.h"

static int reset_registry(void **state)
{
    (void)state;
    ke_metrics_reset();
    return 0;
}

/* ---- registry and rendering ------------------------------------------ */

static void test_metrics_render_counter_and_gauge_with_labels_exact(void **state)
{
    (void)state;
    ke_metric *a = NULL, *b = NULL, *t = NULL, *d = NULL;
    const char *const edged[] = {"node", "edge-1", "module", "edged", NULL};
    const char *const twin[] = {"node", "edge-1", "module", "devicetwin", NULL};
    const char *const sensor[] = {"sensor", "line\n\"2\"\\", "node", "edge-1", NULL};
    assert_int_equal(ke_metrics_counter_new("ke_test_messages_total", "Messages handled.",
                                            edged, &a), 0);
    assert_int_equal(ke_metrics_counter_new("ke_test_messages_total", "Messages handled.",
                                            twin, &b), 0);
    assert_int_equal(ke_metrics_register(KE_METRIC_GAUGE, KE_METRIC_DOUBLE,
                                         "ke_test_temperature_celsius",
                                         "Temperature\\reported\nby the mapper.", sensor, &t),
                     0);
    assert_int_equal(ke_metrics_gauge_new("ke_test_queue_depth", "Messages waiting.", NULL, &d),
                     0);
    ke_metric_add(a, 3);
    ke_metric_add(a, 4);
    ke_metric_add(b, 1);
    ke_metric_set_double(t, 21.5);
    ke_metric_add_double(t, 0.1);
    ke_metric_set(d, -2);

    char *text = NULL;
    size_t len = 0;
    assert_int_equal(ke_metrics_render(&text, &len), 0);
    const char *want =
        "# HELP ke_test_messages_total Messages handled.\n"
        "# TYPE ke_test_messages_total counter\n"
        "ke_test_messages_total{module=\"devicetwin\",node=\"edge-1\"} 1\n"
        "ke_test_messages_total{module=\"edged\",node=\"edge-1\"} 7\n"
        "# HELP ke_test_queue_depth Messages waiting.\n"
        "# TYPE ke_test_queue_depth gauge\n"
        "ke_test_queue_depth -2\n"
        "# HELP ke_test_temperature_celsius Temperature\\\\reported\\nby the mapper.\n"
        "# TYPE ke_test_temperature_celsius gauge\n"
        "ke_test_temperature_celsius{node=\"edge-1\",sensor=\"line\\n\\\"2\\\"\\\\\"} 21.6\n";
    assert_string_equal(text, want);
    assert_int_equal(len, strlen(want));
    free(text);
}

static void test_metrics_render_empty_registry_is_empty_text(void **state)
{
    (void)state;
    char *text = NULL;
    assert_int_equal(ke_metrics_render(&text, NULL), 0);
    assert_string_equal(text, "");
    free(text);
}

static void test_metrics_register_same_series_returns_existing(void **state)
{
    (void)state;
    const char *const l1[] = {"a", "1", "b", "2", NULL};
    const char *const l2[] = {"b", "2", "a", "1", NULL}; /* same set, other order */
    ke_metric *x = NULL, *y = NULL;
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", l1, &x), 0);
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", l2, &y), 0);
    assert_ptr_equal(x, y);
}

static void test_metrics_register_other_type_same_name_returns_eexist(void **state)
{
    (void)state;
    const char *const l1[] = {"a", "1", NULL};
    const char *const l2[] = {"a", "2", NULL};
    ke_metric *x = NULL, *y = (ke_metric *)1;
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", l1, &x), 0);
    assert_int_equal(ke_metrics_gauge_new("ke_test_total", "h", l1, &y), KE_EEXIST);
    assert_null(y);
    assert_int_equal(ke_metrics_gauge_new("ke_test_total", "h", l2, &y), KE_EEXIST);
    assert_int_equal(ke_metrics_register(KE_METRIC_COUNTER, KE_METRIC_DOUBLE, "ke_test_total",
                                         "h", l2, &y), KE_EEXIST);
}

static void test_metrics_register_bad_name_or_labels_returns_einval(void **state)
{
    (void)state;
    ke_metric *m = NULL;
    const char *const reserved[] = {"__name__", "x", NULL};
    const char *const dup[] = {"a", "1", "a", "2", NULL};
    const char *const novalue[] = {"a", NULL};
    assert_int_equal(ke_metrics_counter_new("9starts_with_digit", "h", NULL, &m), KE_EINVAL);
    assert_int_equal(ke_metrics_counter_new("has-dash", "h", NULL, &m), KE_EINVAL);
    assert_int_equal(ke_metrics_counter_new("", "h", NULL, &m), KE_EINVAL);
    assert_int_equal(ke_metrics_counter_new("ok_total", "h", reserved, &m), KE_EINVAL);
    assert_int_equal(ke_metrics_counter_new("ok_total", "h", dup, &m), KE_EINVAL);
    assert_int_equal(ke_metrics_counter_new("ok_total", "h", novalue, &m), KE_EINVAL);
    char *text = NULL;
    assert_int_equal(ke_metrics_render(&text, NULL), 0);
    assert_string_equal(text, "");
    free(text);
}

static void test_metrics_counter_ignores_negative_add(void **state)
{
    (void)state;
    ke_metric *c = NULL, *g = NULL;
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", NULL, &c), 0);
    assert_int_equal(ke_metrics_gauge_new("ke_test_gauge", "h", NULL, &g), 0);
    ke_metric_add(c, 5);
    ke_metric_add(c, -3);
    ke_metric_add_double(c, -1.0);
    ke_metric_add(g, 5);
    ke_metric_add(g, -3);
    assert_int_equal(ke_metric_get(c), 5);
    assert_int_equal(ke_metric_get(g), 2);
    ke_metric_add(NULL, 1); /* a failed registration must not crash updaters */
    assert_int_equal(ke_metric_get(NULL), 0);
}

static void test_metrics_registry_full_returns_efull_and_counts(void **state)
{
    (void)state;
    char id[16];
    ke_metric *m = NULL;
    for (int i = 0; i < KE_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof(id), "%d", i);
        const char *const l[] = {"id", id, NULL};
        assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", l, &m), 0);
    }
    ke_log_level lvl = ke_log_get_level();
    ke_log_set_level(KE_LOG_ERROR); /* the refusal is a warning */
    const char *const over[] = {"id", "over", NULL};
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", over, &m), KE_EFULL);
    ke_log_set_level(lvl);
    assert_null(m);
    assert_int_equal(ke_metrics_rejected(), 1);
    /* an existing series is still found at the bound */
    const char *const first[] = {"id", "0", NULL};
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", first, &m), 0);
}

#define ADD_THREADS 4
#define ADDS_PER_THREAD 20000

typedef struct {
    ke_metric *counter;
    ke_metric *dgauge;
} add_args;

static void *adder(void *p)
{
    add_args *a = p;
    for (int i = 0; i < ADDS_PER_THREAD; i++) {
        ke_metric_add(a->counter, 1);
        ke_metric_add_double(a->dgauge, 0.5);
    }
    return NULL;
}

static void test_metrics_concurrent_adds_are_not_lost(void **state)
{
    (void)state;
    add_args a = {0};
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "h", NULL, &a.counter), 0);
    assert_int_equal(ke_metrics_register(KE_METRIC_GAUGE, KE_METRIC_DOUBLE, "ke_test_d", "h",
                                         NULL, &a.dgauge), 0);
    pthread_t t[ADD_THREADS];
    for (int i = 0; i < ADD_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adder, &a), 0);
    for (int i = 0; i < ADD_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(ke_metric_get(a.counter), ADD_THREADS * ADDS_PER_THREAD);
    assert_true(ke_metric_get_double(a.dgauge) == ADD_THREADS * ADDS_PER_THREAD * 0.5);
}

/* ---- HTTP server ----------------------------------------------------- */

typedef struct {
    _Atomic int healthy;
    ke_http *http;
} http_fixture;

static int health_cb(void *arg, char *reason, size_t cap)
{
    http_fixture *f = arg;
    if (atomic_load(&f->healthy))
        return 0;
    snprintf(reason, cap, "edgehub: not connected to cloud");
    return 1;
}

static int http_setup(void **state)
{
    ke_metrics_reset();
    http_fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    atomic_init(&f->healthy, 1);
    ke_http_config cfg = {.listen = "127.0.0.1:0", .health = health_cb, .health_arg = f};
    if (ke_http_start(&cfg, &f->http) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int http_teardown(void **state)
{
    http_fixture *f = *state;
    ke_http_stop(f->http);
    free(f);
    ke_metrics_reset();
    return 0;
}

typedef struct {
    int status;
    char content_type[128];
    char body[8192];
} http_resp;

/* http_do sends one HTTP/1.0 request and reads the answer until the server
 * closes. The receive timeout only bounds a broken server; it is not used
 * to wait for anything. */
static void http_do(int port, const char *method, const char *path, http_resp *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);

    static char raw[16384];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof(raw) - 1 && (k = recv(fd, raw + got, sizeof(raw) - 1 - got, 0)) > 0)
        got += (size_t)k;
    raw[got] = '\0';
    close(fd);

    assert_int_equal(sscanf(raw, "HTTP/1.%*d %d", &r->status), 1);
    char *end = strstr(raw, "\r\n\r\n");
    assert_non_null(end);
    *end = '\0';
    char *ct = strcasestr(raw, "\r\nContent-Type: ");
    if (ct) {
        ct += strlen("\r\nContent-Type: ");
        size_t cl = strcspn(ct, "\r\n");
        if (cl >= sizeof(r->content_type))
            cl = sizeof(r->content_type) - 1;
        memcpy(r->content_type, ct, cl);
    }
    snprintf(r->body, sizeof(r->body), "%s", end + 4);
}

static void test_http_metrics_answers_200_with_exposition_text(void **state)
{
    http_fixture *f = *state;
    ke_metric *m = NULL;
    const char *const l[] = {"node", "edge-1", NULL};
    assert_int_equal(ke_metrics_counter_new("ke_test_total", "Things.", l, &m), 0);
    ke_metric_add(m, 42);
    assert_true(ke_http_port(f->http) > 0);
    http_resp r;
    http_do(ke_http_port(f->http), "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(r.body, "# HELP ke_test_total Things.\n"
                                "# TYPE ke_test_total counter\n"
                                "ke_test_total{node=\"edge-1\"} 42\n");
}

static void test_http_healthz_answers_200_ok_when_healthy(void **state)
{
    http_fixture *f = *state;
    http_resp r;
    http_do(ke_http_port(f->http), "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
}

static void test_http_healthz_answers_503_with_reason_when_unhealthy(void **state)
{
    http_fixture *f = *state;
    atomic_store(&f->healthy, 0);
    http_resp r;
    http_do(ke_http_port(f->http), "GET", "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "edgehub: not connected to cloud");
}

static void test_http_unknown_path_answers_404(void **state)
{
    http_fixture *f = *state;
    http_resp r;
    http_do(ke_http_port(f->http), "GET", "/nope", &r);
    assert_int_equal(r.status, 404);
}

static void test_http_non_get_answers_405(void **state)
{
    http_fixture *f = *state;
    http_resp r;
    http_do(ke_http_port(f->http), "POST", "/metrics", &r);
    assert_int_equal(r.status, 405);
    http_do(ke_http_port(f->http), "DELETE", "/healthz", &r);
    assert_int_equal(r.status, 405);
}

static void test_http_bad_listen_address_returns_einval(void **state)
{
    (void)state;
    ke_http *h = NULL;
    const char *bad[] = {"127.0.0.1", "127.0.0.1:99999", "127.0.0.1:x", "[::1:80", NULL};
    for (int i = 0; bad[i]; i++) {
        ke_http_config cfg = {.listen = bad[i]};
        assert_int_equal(ke_http_start(&cfg, &h), KE_EINVAL);
        assert_null(h);
    }
}

static void test_http_port_in_use_returns_eio(void **state)
{
    http_fixture *f = *state;
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", ke_http_port(f->http));
    ke_http_config cfg = {.listen = listen};
    ke_http *second = NULL;
    assert_int_equal(ke_http_start(&cfg, &second), KE_EIO);
    assert_null(second);
}

static void test_http_stop_null_is_noop(void **state)
{
    (void)state;
    ke_http_stop(NULL);
    assert_int_equal(ke_http_port(NULL), 0);
}

int main(void)
{
    ke_log_set_level(KE_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_metrics_render_counter_and_gauge_with_labels_exact,
                               reset_registry),
        cmocka_unit_test_setup(test_metrics_render_empty_registry_is_empty_text, reset_registry),
        cmocka_unit_test_setup(test_metrics_register_same_series_returns_existing,
                               reset_registry),
        cmocka_unit_test_setup(test_metrics_register_other_type_same_name_returns_eexist,
                               reset_registry),
        cmocka_unit_test_setup(test_metrics_register_bad_name_or_labels_returns_einval,
                               reset_registry),
        cmocka_unit_test_setup(test_metrics_counter_ignores_negative_add, reset_registry),
        cmocka_unit_test_setup(test_metrics_registry_full_returns_efull_and_counts,
                               reset_registry),
        cmocka_unit_test_setup(test_metrics_concurrent_adds_are_not_lost, reset_registry),
        cmocka_unit_test_setup_teardown(test_http_metrics_answers_200_with_exposition_text,
                                        http_setup, http_teardown),
        cmocka_unit_test_setup_teardown(test_http_healthz_answers_200_ok_when_healthy,
                                        http_setup, http_teardown),
        cmocka_unit_test_setup_teardown(test_http_healthz_answers_503_with_reason_when_unhealthy,
                                        http_setup, http_teardown),
        cmocka_unit_test_setup_teardown(test_http_unknown_path_answers_404, http_setup,
                                        http_teardown),
        cmocka_unit_test_setup_teardown(test_http_non_get_answers_405, http_setup, http_teardown),
        cmocka_unit_test_setup_teardown(test_http_port_in_use_returns_eio, http_setup,
                                        http_teardown),
        cmocka_unit_test(test_http_bad_listen_address_returns_einval),
        cmocka_unit_test(test_http_stop_null_is_noop),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    ke_metrics_reset();
    return rv;
}
