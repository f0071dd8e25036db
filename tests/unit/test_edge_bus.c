/*
 * test_edge_bus.c — edgecore's module runtime (edge-agent/runtime/ke_rt.h)
 * with test modules and nothing else: routing by group and by name, FIFO
 * per receiver, the queue bounds (messages and bytes) refusing with
 * KE_EFULL and counting it, delivery never inside the sender's call,
 * closures posted from other threads run on the loop in order, modules
 * stopped in reverse order and destroyed after, what the bus holds at a
 * stop delivered before any module stops, and a module that fails to
 * start ending the run with the ones before it stopped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_metrics.h"
#include "ke_rt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the modules saw, written on the loop, read after ke_rt_run returns
 * (the join orders it). */
typedef struct seen {
    int received[3];        /* per module index */
    int out_of_order;       /* FIFO broken */
    int last[3];
    int inside_send;        /* a delivery ran inside a send */
    int sending;
    char events[128];       /* "start a", "stop b", ... as letters: S/T/D + name */
    size_t n_events;
    int send_rc[8];         /* results of the sends a test asked for */
    int fail_start;         /* index of the module whose start fails; -1: none */
    int posts_seen;
    int posts_out_of_order;
} seen;

static seen S;
static ke_rt *RT;

static int index_of(ke_module *m) { return ke_module_name(m)[0] - 'a'; }

static void note(char what, ke_module *m)
{
    if (S.n_events + 2 < sizeof(S.events)) {
        S.events[S.n_events++] = what;
        S.events[S.n_events++] = ke_module_name(m)[0];
    }
}

static Ke__V1__Message *msg(const char *group, int n, size_t pad)
{
    char res[32];
    snprintf(res, sizeof(res), "n/%d", n);
    char *content = pad ? calloc(1, pad) : NULL;
    Ke__V1__Message *m = ke_rt_message_new("test", group, KE__V1__OPERATION__OPERATION_UPDATE,
                                           res, content, pad);
    free(content);
    return m;
}

static void on_message(ke_module *m, Ke__V1__Message *mm)
{
    int i = index_of(m), n = -1;
    if (S.sending)
        S.inside_send++;
    sscanf(mm->route->resource, "n/%d", &n);
    if (n != S.last[i] + 1)
        S.out_of_order++;
    S.last[i] = n;
    S.received[i]++;
    ke__v1__message__free_unpacked(mm, NULL);
}

static int mod_start(ke_module *m)
{
    note('S', m);
    return index_of(m) == S.fail_start ? KE_EIO : 0;
}
static void mod_stop(ke_module *m) { note('T', m); }
static void mod_destroy(ke_module *m) { note('D', m); }

static const ke_module_ops mod_a = {.name = "a", .group = "ga", .start = mod_start,
                                    .on_message = on_message, .stop = mod_stop,
                                    .destroy = mod_destroy};
static const ke_module_ops mod_b = {.name = "b", .group = "gb", .start = mod_start,
                                    .on_message = on_message, .stop = mod_stop,
                                    .destroy = mod_destroy};
static const ke_module_ops mod_c = {.name = "c", .start = mod_start, .on_message = on_message,
                                    .stop = mod_stop, .destroy = mod_destroy};

typedef struct fixture {
    edge_store *store;
    ke_rpc_loop *rpc;
    pthread_t thread;
    int run_rc;
} fixture;

static void *run(void *arg)
{
    fixture *f = arg;
    f->run_rc = ke_rt_run(RT);
    return NULL;
}

static void start(fixture *f)
{
    memset(f, 0, sizeof(*f));
    edge_store_opts o = {.path = ":memory:"};
    assert_int_equal(edge_store_open(&o, &f->store), 0);
    assert_int_equal(ke_rpc_loop_new(1, &f->rpc), 0);
    ke_rt_config c = {.store = f->store, .rpc = f->rpc};
    assert_int_equal(ke_rt_new(&c, &RT), 0);
    assert_int_equal(ke_rt_add(RT, &mod_a, NULL), 0);
    assert_int_equal(ke_rt_add(RT, &mod_b, NULL), 0);
    assert_int_equal(ke_rt_add(RT, &mod_c, NULL), 0);
    assert_int_equal(ke_rt_add(RT, &mod_a, NULL), KE_EEXIST); /* one name, one group */
    assert_int_equal(pthread_create(&f->thread, NULL, run, f), 0);
}

static int finish(fixture *f)
{
    ke_rt_stop(RT);
    pthread_join(f->thread, NULL);
    ke_rt_free(RT);
    RT = NULL;
    ke_rpc_loop_free(f->rpc);
    edge_store_close(f->store);
    return f->run_rc;
}

static void reset(void)
{
    memset(&S, 0, sizeof(S));
    S.fail_start = -1;
}

/* ---- routing, order, asynchronous delivery ---- */

static void send_many(void *arg)
{
    (void)arg;
    S.sending = 1;
    for (int n = 1; n <= 1000; n++) {
        Ke__V1__Message *m = msg("gb", n, 0); /* by group to b */
        int rc = ke_rt_send(RT, m);
        if (rc != 0) {
            S.send_rc[0] = rc;
            ke__v1__message__free_unpacked(m, NULL);
        }
        m = msg("", n, 0); /* by name to c, whatever the route says */
        rc = ke_rt_send_to(RT, "c", m);
        if (rc != 0) {
            S.send_rc[1] = rc;
            ke__v1__message__free_unpacked(m, NULL);
        }
    }
    Ke__V1__Message *m = msg("nobody", 0, 0);
    S.send_rc[2] = ke_rt_send(RT, m);
    ke__v1__message__free_unpacked(m, NULL);
    m = msg("", 0, 0);
    S.send_rc[3] = ke_rt_send(RT, m); /* no group */
    ke__v1__message__free_unpacked(m, NULL);
    S.sending = 0;
}

static void count_b_and_c(void *arg)
{
    int *got = arg;
    *got = S.received[1] + S.received[2];
}

static void test_bus_routes_by_group_and_name_in_order_after_the_send(void **state)
{
    (void)state;
    reset();
    fixture f;
    start(&f);
    assert_int_equal(ke_rt_call_sync(RT, send_many, NULL), 0);
    int got = 0;
    for (int i = 0; i < 1000 && got < 2000; i++)
        assert_int_equal(ke_rt_call_sync(RT, count_b_and_c, &got), 0);
    assert_int_equal(finish(&f), 0);
    assert_int_equal(S.send_rc[0], 0);
    assert_int_equal(S.send_rc[1], 0);
    assert_int_equal(S.send_rc[2], KE_ENOTFOUND);
    assert_int_equal(S.send_rc[3], KE_EINVAL);
    assert_int_equal(S.received[0], 0);
    assert_int_equal(S.received[1], 1000);
    assert_int_equal(S.received[2], 1000);
    assert_int_equal(S.out_of_order, 0);
    assert_int_equal(S.inside_send, 0);
}

/* ---- bounds ---- */

static long long dropped(const char *module)
{
    char *text = NULL, series[96];
    size_t len = 0;
    assert_int_equal(ke_metrics_render(&text, &len), 0);
    snprintf(series, sizeof(series), "\nke_bus_dropped_total{module=\"%s\"} ", module);
    const char *p = strstr(text, series);
    long long v = p ? atoll(p + strlen(series)) : -1;
    free(text);
    return v;
}

static void fill(void *arg)
{
    (void)arg;
    /* By count: the queue takes KE_RT_QUEUE_LEN, the next is refused. */
    int rc = 0, n = 0;
    while (rc == 0 && n <= KE_RT_QUEUE_LEN) {
        Ke__V1__Message *m = msg("gb", ++n, 0);
        if ((rc = ke_rt_send(RT, m)) != 0)
            ke__v1__message__free_unpacked(m, NULL);
    }
    S.send_rc[0] = rc;
    S.send_rc[1] = n - 1; /* taken */
}

static void fill_bytes(void *arg)
{
    (void)arg;
    /* By bytes: 1 MiB messages; the first always goes, then up to the
     * byte bound. */
    int rc = 0, n = 0;
    while (rc == 0 && n < 64) {
        Ke__V1__Message *m = msg("", ++n, 1u << 20);
        if ((rc = ke_rt_send_to(RT, "c", m)) != 0)
            ke__v1__message__free_unpacked(m, NULL);
    }
    S.send_rc[2] = rc;
    S.send_rc[3] = n - 1;
}

static void test_bus_queues_are_bounded_in_messages_and_bytes(void **state)
{
    (void)state;
    reset();
    long long b0 = dropped("b"), c0 = dropped("c");
    fixture f;
    start(&f);
    assert_int_equal(ke_rt_call_sync(RT, fill, NULL), 0);
    assert_int_equal(ke_rt_call_sync(RT, fill_bytes, NULL), 0);
    assert_int_equal(S.send_rc[0], KE_EFULL);
    assert_int_equal(S.send_rc[1], KE_RT_QUEUE_LEN);
    assert_int_equal(S.send_rc[2], KE_EFULL);
    assert_true(S.send_rc[3] >= 1 && S.send_rc[3] <= (int)(KE_RT_QUEUE_BYTES >> 20));
    assert_int_equal(dropped("b") - (b0 < 0 ? 0 : b0), 1);
    assert_int_equal(dropped("c") - (c0 < 0 ? 0 : c0), 1);
    assert_int_equal(finish(&f), 0);
    /* Everything taken was delivered, in order, before the stop. */
    assert_true(S.received[1] <= KE_RT_QUEUE_LEN);
    assert_int_equal(S.out_of_order, 0);
}

/* ---- posts from other threads ---- */

typedef struct poster {
    int from, n;
} poster;

static void post_one(void *arg)
{
    intptr_t v = (intptr_t)arg;
    int who = (int)(v >> 20), n = (int)(v & 0xfffff);
    if (n != S.last[who] + 1)
        S.posts_out_of_order++;
    S.last[who] = n;
    S.posts_seen++;
}

static void *post_thread(void *arg)
{
    poster *p = arg;
    for (int n = 1; n <= p->n; n++)
        while (ke_rt_post(RT, post_one, (void *)(((intptr_t)p->from << 20) | n), 0) == KE_EFULL)
            ;
    return NULL;
}

static void read_posts(void *arg) { *(int *)arg = S.posts_seen; }

static void test_posts_from_threads_run_on_the_loop_in_order(void **state)
{
    (void)state;
    reset();
    fixture f;
    start(&f);
    poster p[2] = {{0, 5000}, {1, 5000}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, post_thread, &p[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    int seen_posts = 0;
    assert_int_equal(ke_rt_call_sync(RT, read_posts, &seen_posts), 0);
    assert_int_equal(seen_posts, 10000); /* the sync one ran after all of them */
    assert_int_equal(finish(&f), 0);
    assert_int_equal(S.posts_out_of_order, 0);
}

/* ---- lifetime ---- */

static void test_modules_stop_in_reverse_order_then_are_destroyed(void **state)
{
    (void)state;
    reset();
    fixture f;
    start(&f);
    assert_int_equal(finish(&f), 0);
    S.events[S.n_events] = '\0';
    assert_string_equal(S.events, "SaSbScTcTbTaDcDbDa");
}

/* send_then_stop, on the loop: 500 messages to b, then a stop in the same
 * turn, before the bus has delivered any of them. */
static void send_then_stop(void *arg)
{
    (void)arg;
    for (int n = 1; n <= 500; n++) {
        Ke__V1__Message *m = msg("gb", n, 0);
        int rc = ke_rt_send(RT, m);
        if (rc != 0) {
            S.send_rc[0] = rc;
            ke__v1__message__free_unpacked(m, NULL);
        }
    }
    ke_rt_stop(RT);
}

static void test_a_stop_delivers_what_the_bus_holds_first(void **state)
{
    (void)state;
    reset();
    fixture f;
    start(&f);
    assert_int_equal(ke_rt_post(RT, send_then_stop, NULL, 0), 0);
    pthread_join(f.thread, NULL); /* the stop ends the run */
    assert_int_equal(f.run_rc, 0);
    ke_rt_free(RT);
    RT = NULL;
    ke_rpc_loop_free(f.rpc);
    edge_store_close(f.store);
    assert_int_equal(S.send_rc[0], 0);
    assert_int_equal(S.received[1], 500); /* accepted once, so delivered */
    assert_int_equal(S.out_of_order, 0);
    S.events[S.n_events] = '\0';
    assert_string_equal(S.events, "SaSbScTcTbTaDcDbDa"); /* delivered before any stop */
}

static void test_a_module_that_fails_to_start_ends_the_run(void **state)
{
    (void)state;
    reset();
    S.fail_start = 1; /* b */
    fixture f;
    start(&f);
    pthread_join(f.thread, NULL); /* ends by itself */
    assert_int_equal(f.run_rc, KE_EIO);
    ke_rt_free(RT);
    RT = NULL;
    ke_rpc_loop_free(f.rpc);
    edge_store_close(f.store);
    S.events[S.n_events] = '\0';
    /* c never started; a, which had, is stopped and destroyed. */
    assert_string_equal(S.events, "SaSbTaDa");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus_routes_by_group_and_name_in_order_after_the_send),
        cmocka_unit_test(test_bus_queues_are_bounded_in_messages_and_bytes),
        cmocka_unit_test(test_posts_from_threads_run_on_the_loop_in_order),
        cmocka_unit_test(test_modules_stop_in_reverse_order_then_are_destroyed),
        cmocka_unit_test(test_a_stop_delivers_what_the_bus_holds_first),
        cmocka_unit_test(test_a_module_that_fails_to_start_ends_the_run),
    };
    return cmocka_run_group_tests_name("edge/runtime bus", tests, NULL, NULL);
}
