/*
 * test_tunnel_overflow.c — what happens when a node's downstream queue is
 * at its bound: CloudHub counts it and keeps only (key, version) for
 * further messages, reading them back from its store when their turn
 * comes; nothing is refused and nothing is lost. cloudcore runs with a
 * 16-message bound and a window of 1, the link to the edge is frozen while
 * 60 keys are published, then a resync larger than the bound (edgecore
 * restarted with an empty store) goes through too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* wait_objects polls the edge's store until it holds n objects (30 s). */
static int wait_objects(ke_edge *e, size_t n)
{
    for (int i = 0; i < 300; i++) {
        Ke__V1__EdgeListReply *r = ke_edge_list(e);
        int ok = r && r->n_objects == n;
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (ok)
            return 1;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_tunnel_full_queue_forces_a_resync_and_loses_nothing(void **state)
{
    (void)state;
    ke_cluster c;
    ke_edge e = {0};
    ke_proxy *p = NULL;
    const char *flags[] = {"--cloudhub.queue_max=16", "--cloudhub.window=1", NULL};
    const char *edge_flags[] = {"--edgehub.dead_peer=60s", NULL};
    ke_cluster_start(&c, flags);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    assert_int_equal(ke_proxy_start(c.grpc_port, &p), 0);
    ke_edge_start(&c, &e, "edge-1", ke_proxy_port(p), edge_flags);
    for (int i = 0; i < 100 && ke_cluster_node_connected(&c, "edge-1") != 1; i++) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(ke_cluster_node_connected(&c, "edge-1"), 1);

    ke_proxy_freeze(p, 1); /* acks stop coming back: the queue only grows */
    char key[96], content[32];
    for (int k = 0; k < 60; k++) {
        snprintf(key, sizeof(key), "node/edge-1/default/ConfigMap/q-%02d", k);
        snprintf(content, sizeof(content), "{\"k\":%d}", k);
        assert_int_equal(ke_cluster_publish(&c, "edge-1", key, 1,
                                            KE__V1__OPERATION__OPERATION_INSERT, content),
                         KE_RPC_OK); /* the publish itself never fails: the store has it */
    }
    assert_true(ke_cluster_metric(&c, "ke_cloudhub_queue_overflows_total") >= 1);
    assert_true(ke_file_contains(c.cloud_log, "downstream queue at its bound node=edge-1"));
    ke_proxy_freeze(p, 0);

    /* The queue drains once the link flows again: all 60 arrive. */
    assert_true(wait_objects(&e, 60));

    /* A resync larger than the bound: the edge comes back with an empty
     * store and gets all 60 again. */
    ke_edge_stop(&e);
    assert_int_equal(ke_tp_sh("rm -f %s/edge.db*", e.dir), 0);
    ke_edge_start(&c, &e, "edge-1", ke_proxy_port(p), edge_flags);
    assert_true(wait_objects(&e, 60));
    /* The cloud ends the resync once the edge has acked what its bounded
     * queue held: the last objects can be in the store just before. */
    assert_true(ke_file_wait_contains(e.log, "resync done updates=60 deletes=0", 10000));
    ke_edge_stop(&e);
    ke_proxy_stop(p);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tunnel_full_queue_forces_a_resync_and_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
