/*
 * test_bus.c — unit tests for lib/bus (ke_bus): routing by group and by
 * name, FIFO order, the queue bound and its drop counter and metric,
 * receive timeouts, close waking a blocked receiver, and freeing a bus that
 * still holds messages (leak-checked under ASan). Threads synchronise on
 * observable bus state, never on sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_bus.h"
#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"

/* make_msg builds a heap message the way the bus expects (unpacked, so
 * ke__v1__message__free_unpacked frees it). */
static Ke__V1__Message *make_msg(const char *group, const char *id)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.id = (char *)id;
    r.source = (char *)"test";
    r.group = (char *)group;
    r.operation = KE__V1__OPERATION__OPERATION_INSERT;
    r.resource = (char *)"node/edge-1/default/pod/nginx";
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)"{\"kind\":\"Pod\"}";
    m.content.len = strlen((const char *)m.content.data);
    size_t n = ke__v1__message__get_packed_size(&m);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    ke__v1__message__pack(&m, buf);
    Ke__V1__Message *out = ke__v1__message__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static int setup(void **state)
{
    ke_metrics_reset();
    ke_bus *bus = NULL;
    if (ke_bus_new(&bus) != 0)
        return -1;
    *state = bus;
    return 0;
}

static int teardown(void **state)
{
    ke_bus_free(*state);
    ke_metrics_reset();
    return 0;
}

static void test_bus_send_routes_by_group(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "metamanager", "meta", 0), 0);
    assert_int_equal(ke_bus_register(bus, "devicetwin", "twin", 0), 0);
    assert_int_equal(ke_bus_send(bus, make_msg("twin", "m1")), 0);

    Ke__V1__Message *got = NULL;
    assert_int_equal(ke_bus_recv(bus, "metamanager", 0, &got), KE_ETIMEDOUT);
    assert_null(got);
    assert_int_equal(ke_bus_recv(bus, "devicetwin", 0, &got), 0);
    assert_string_equal(got->header->id, "m1");
    assert_string_equal(got->route->group, "twin");
    ke__v1__message__free_unpacked(got, NULL);
}

static void test_bus_send_unknown_group_returns_enotfound_and_caller_keeps_message(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "metamanager", "meta", 0), 0);
    Ke__V1__Message *msg = make_msg("nobody", "m1");
    assert_int_equal(ke_bus_send(bus, msg), KE_ENOTFOUND);
    assert_int_equal(ke_bus_send_to(bus, "nobody", msg), KE_ENOTFOUND);
    ke__v1__message__free_unpacked(msg, NULL);
    Ke__V1__Message noroute = KE__V1__MESSAGE__INIT; /* no route at all */
    assert_int_equal(ke_bus_send(bus, &noroute), KE_EINVAL);
}

static void test_bus_send_to_delivers_by_module_name(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 0), 0);
    assert_int_equal(ke_bus_register(bus, "edgehub", NULL, 0), 0); /* by name only */
    assert_int_equal(ke_bus_send_to(bus, "edgehub", make_msg("resource", "up1")), 0);
    Ke__V1__Message *got = NULL;
    assert_int_equal(ke_bus_recv(bus, "edged", 0, &got), KE_ETIMEDOUT);
    assert_int_equal(ke_bus_recv(bus, "edgehub", 0, &got), 0);
    assert_string_equal(got->header->id, "up1");
    ke__v1__message__free_unpacked(got, NULL);
}

static void test_bus_recv_returns_messages_in_fifo_order(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 16), 0);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        assert_int_equal(ke_bus_send(bus, make_msg("resource", id)), 0);
    }
    for (int i = 0; i < 10; i++) {
        Ke__V1__Message *got = NULL;
        assert_int_equal(ke_bus_recv(bus, "edged", 0, &got), 0);
        snprintf(id, sizeof(id), "m%d", i);
        assert_string_equal(got->header->id, id);
        ke__v1__message__free_unpacked(got, NULL);
    }
    ke_bus_stats st;
    assert_int_equal(ke_bus_stats_get(bus, "edged", &st), 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.delivered, 10);
}

static void test_bus_full_queue_returns_efull_and_counts(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 2), 0);
    assert_int_equal(ke_bus_send(bus, make_msg("resource", "a")), 0);
    assert_int_equal(ke_bus_send(bus, make_msg("resource", "b")), 0);
    ke_log_level lvl = ke_log_get_level();
    ke_log_set_level(KE_LOG_ERROR); /* the drop is logged as a warning */
    Ke__V1__Message *c = make_msg("resource", "c");
    assert_int_equal(ke_bus_send(bus, c), KE_EFULL);
    assert_int_equal(ke_bus_send_to(bus, "edged", c), KE_EFULL);
    ke_log_set_level(lvl);
    ke__v1__message__free_unpacked(c, NULL); /* refused: still ours */

    ke_bus_stats st;
    assert_int_equal(ke_bus_stats_get(bus, "edged", &st), 0);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.capacity, 2);
    assert_int_equal(st.dropped, 2);
    assert_int_equal(ke_bus_dropped(bus), 2);

    ke_metric *metric = NULL;
    const char *const labels[] = {"module", "edged", NULL};
    assert_int_equal(ke_metrics_counter_new("ke_bus_dropped_total", "", labels, &metric), 0);
    assert_int_equal(ke_metric_get(metric), 2);
}

static void test_bus_recv_times_out_on_empty_queue(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 0), 0);
    Ke__V1__Message *got = NULL;
    assert_int_equal(ke_bus_recv(bus, "edged", 20, &got), KE_ETIMEDOUT);
    assert_null(got);
    assert_int_equal(ke_bus_recv(bus, "edged", 0, &got), KE_ETIMEDOUT);
    assert_int_equal(ke_bus_recv(bus, "nosuch", 0, &got), KE_ENOTFOUND);
}

typedef struct {
    ke_bus *bus;
    int rv;
} recv_args;

static void *blocked_receiver(void *p)
{
    recv_args *a = p;
    Ke__V1__Message *got = NULL;
    a->rv = ke_bus_recv(a->bus, "edged", -1, &got);
    if (got)
        ke__v1__message__free_unpacked(got, NULL);
    return NULL;
}

static void test_bus_close_wakes_blocked_receiver(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 0), 0);
    recv_args a = {.bus = bus, .rv = 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocked_receiver, &a), 0);
    /* wait until the receiver is really parked in ke_bus_recv */
    ke_bus_stats st = {0};
    do {
        sched_yield();
        assert_int_equal(ke_bus_stats_get(bus, "edged", &st), 0);
    } while (st.receivers_waiting != 1);
    ke_bus_close(bus);
    pthread_join(t, NULL);
    assert_int_equal(a.rv, KE_ECLOSED);
}

static void test_bus_after_close_send_and_recv_return_eclosed(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 0), 0);
    assert_int_equal(ke_bus_send(bus, make_msg("resource", "queued")), 0);
    ke_bus_close(bus);
    ke_bus_close(bus); /* idempotent */
    Ke__V1__Message *msg = make_msg("resource", "late");
    assert_int_equal(ke_bus_send(bus, msg), KE_ECLOSED);
    assert_int_equal(ke_bus_send_to(bus, "edged", msg), KE_ECLOSED);
    ke__v1__message__free_unpacked(msg, NULL);
    Ke__V1__Message *got = NULL;
    assert_int_equal(ke_bus_recv(bus, "edged", -1, &got), KE_ECLOSED);
    assert_int_equal(ke_bus_register(bus, "devicetwin", "twin", 0), KE_ECLOSED);
    /* "queued" is freed by ke_bus_free in teardown */
}

static void test_bus_free_with_queued_messages_frees_them(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 8), 0);
    assert_int_equal(ke_bus_register(bus, "devicetwin", "twin", 8), 0);
    for (int i = 0; i < 8; i++) { /* wraps the ring once on edged */
        assert_int_equal(ke_bus_send(bus, make_msg("resource", "x")), 0);
        if (i < 3) {
            Ke__V1__Message *got = NULL;
            assert_int_equal(ke_bus_recv(bus, "edged", 0, &got), 0);
            ke__v1__message__free_unpacked(got, NULL);
        }
    }
    assert_int_equal(ke_bus_send(bus, make_msg("twin", "y")), 0);
    ke_bus_free(bus); /* LeakSanitizer fails the run if anything stays */
    *state = NULL;
}

static void test_bus_register_refuses_duplicates_and_bounds(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", 0), 0);
    assert_int_equal(ke_bus_register(bus, "edged", "other", 0), KE_EEXIST);
    assert_int_equal(ke_bus_register(bus, "edged2", "resource", 0), KE_EEXIST);
    assert_int_equal(ke_bus_register(bus, "big", "big", KE_BUS_MAX_QUEUE_LEN + 1), KE_EINVAL);
    assert_int_equal(ke_bus_register(bus, "", "g", 0), KE_EINVAL);
    char name[16];
    for (int i = 1; i < KE_BUS_MAX_MODULES; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        assert_int_equal(ke_bus_register(bus, name, name, 1), 0);
    }
    assert_int_equal(ke_bus_register(bus, "onetoomany", NULL, 1), KE_EFULL);
}

#define PRODUCERS 4
#define PER_PRODUCER 1000

typedef struct {
    ke_bus *bus;
    int idx;
} producer_args;

static void *producer(void *p)
{
    producer_args *a = p;
    char id[32];
    for (int i = 0; i < PER_PRODUCER; i++) {
        snprintf(id, sizeof(id), "%d:%d", a->idx, i);
        Ke__V1__Message *m = make_msg("resource", id);
        if (ke_bus_send(a->bus, m) != 0) {
            ke__v1__message__free_unpacked(m, NULL);
            return (void *)1;
        }
    }
    return NULL;
}

static void test_bus_concurrent_senders_keep_per_sender_order(void **state)
{
    ke_bus *bus = *state;
    assert_int_equal(ke_bus_register(bus, "edged", "resource", PRODUCERS * PER_PRODUCER), 0);
    pthread_t t[PRODUCERS];
    producer_args args[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (producer_args){.bus = bus, .idx = i};
        assert_int_equal(pthread_create(&t[i], NULL, producer, &args[i]), 0);
    }
    int next[PRODUCERS] = {0};
    for (int n = 0; n < PRODUCERS * PER_PRODUCER; n++) {
        Ke__V1__Message *got = NULL;
        assert_int_equal(ke_bus_recv(bus, "edged", -1, &got), 0);
        int p = -1, i = -1;
        assert_int_equal(sscanf(got->header->id, "%d:%d", &p, &i), 2);
        assert_true(p >= 0 && p < PRODUCERS);
        assert_int_equal(i, next[p]);
        next[p]++;
        ke__v1__message__free_unpacked(got, NULL);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        void *res = NULL;
        pthread_join(t[i], &res);
        assert_null(res);
    }
}

static void test_bus_free_null_is_noop(void **state)
{
    (void)state;
    ke_bus_free(NULL);
    ke_bus_close(NULL);
    assert_int_equal(ke_bus_dropped(NULL), 0);
}

int main(void)
{
    ke_log_set_level(KE_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bus_send_routes_by_group, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_bus_send_unknown_group_returns_enotfound_and_caller_keeps_message, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_bus_send_to_delivers_by_module_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_recv_returns_messages_in_fifo_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_full_queue_returns_efull_and_counts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_recv_times_out_on_empty_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bus_close_wakes_blocked_receiver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bus_after_close_send_and_recv_return_eclosed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_free_with_queued_messages_frees_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_register_refuses_duplicates_and_bounds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bus_concurrent_senders_keep_per_sender_order, setup,
                                        teardown),
        cmocka_unit_test(test_bus_free_null_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
