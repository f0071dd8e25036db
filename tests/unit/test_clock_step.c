/*
 * test_clock_step.c — a step of the wall clock (+1 h, then −1 h) under a
 * running CloudHub and EdgeHub, both in this process (the step is
 * ke_time_set_wall_offset: every wall reading in the process moves): the
 * node stays connected on the same stream (no reap, no dead-peer drop, no
 * resync), keepalives keep flowing, and versions published before, during
 * and after the steps reach the edge store in order, none refused or
 * applied backwards. keadm makes the cluster's files and joins the node
 * through the in-process CloudHub, as in production.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.h"
#include "cloudhub.pb-c.h"
#include "edgehub.h"
#include "ke_err.h"
#include "ke_metrics.h"
#include "ke_rpc.h"
#include "ke_testproc.h"
#include "ke_time.h"
#include "ke_edgetest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOUR_MS (3600LL * 1000)

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* metric reads one series from this process's registry; -1 if absent. */
static long long metric(const char *series)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(ke_metrics_render(&text, &len), 0);
    long long v = -1;
    size_t n = strlen(series);
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = atoll(line + n + 1);
        line = end ? end + 1 : NULL;
    }
    free(text);
    return v;
}

static int publish(ke_rpc_channel *ch, const char *key, uint64_t rv)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
    char content[64];
    snprintf(content, sizeof(content), "{\"v\":%llu}", (unsigned long long)rv);
    h.resource_version = rv;
    h.timestamp_ms = ke_time_wall_ms();
    r.source = "test";
    r.group = "resource";
    r.operation = KE__V1__OPERATION__OPERATION_UPDATE;
    r.resource = (char *)key;
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)content;
    m.content.len = strlen(content);
    req.node_name = "edge-1";
    req.message = &m;
    ke_rpc_stub stub = {ch, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_stub_unary(&stub, "Publish", &req.base, &o, &reply, &st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

/* wait_rv waits until the edge store holds key at version rv. */
static void wait_rv(ke_edgetest *mm, const char *key, uint64_t want)
{
    int64_t until = ke_time_mono_ms() + 20000;
    uint64_t rv = 0;
    for (;;) {
        rv = ke_edgetest_get(mm, key);
        if (rv == want || ke_time_mono_ms() > until)
            break;
        pause_ms(10);
    }
    assert_int_equal(rv, want);
}

/* node_state returns connected (0/1) and idle_ms of edge-1 from ListNodes. */
static int node_state(ke_rpc_channel *ch, int64_t *idle_ms)
{
    Ke__V1__ListNodesRequest req = KE__V1__LIST_NODES_REQUEST__INIT;
    ke_rpc_stub stub = {ch, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&stub, "ListNodes", &req.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    Ke__V1__ListNodesReply *r = (Ke__V1__ListNodesReply *)reply;
    int connected = -1;
    for (size_t i = 0; i < r->n_nodes; i++)
        if (strcmp(r->nodes[i]->name, "edge-1") == 0) {
            connected = r->nodes[i]->connected;
            *idle_ms = r->nodes[i]->idle_ms;
        }
    protobuf_c_message_free_unpacked(reply, NULL);
    return connected;
}

/* hold_steady: for three dead-peer periods the node stays on its stream. */
static void hold_steady(ke_rpc_channel *ch, int64_t dead_peer_ms)
{
    long long resyncs = metric("ke_cloudhub_resyncs_total");
    long long keepalives = metric("ke_cloudhub_keepalives_total");
    int64_t until = ke_time_mono_ms() + 3 * dead_peer_ms;
    while (ke_time_mono_ms() < until) {
        int64_t idle = -1;
        assert_int_equal(node_state(ch, &idle), 1);
        assert_true(idle >= 0 && idle < dead_peer_ms); /* never counted an hour */
        assert_int_equal(ke_edgetest_connected(), 1);
        pause_ms(100);
    }
    assert_int_equal(metric("ke_cloudhub_resyncs_total"), resyncs); /* no reconnect */
    if (keepalives >= 0)
        assert_true(metric("ke_cloudhub_keepalives_total") > keepalives);
}

static void test_clock_step_changes_nothing(void **state)
{
    (void)state;
    char dir[64], cloud[128], path[6][160], edge_db[160], server[64];
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    snprintf(cloud, sizeof(cloud), "%s/cloud", dir);
    assert_int_equal(ke_tp_sh("%s init --dir %s >/dev/null", ke_tp_env("KE_KEADM"), cloud), 0);
    const char *names[] = {"ca.crt", "ca.key", "token.secret", "server.crt", "server.key",
                           "cloudhub.db"};
    for (int i = 0; i < 6; i++)
        snprintf(path[i], sizeof(path[i]), "%s/%s", cloud, names[i]);

    const int64_t keepalive_ms = 200, dead_peer_ms = 1000;
    cloudhub_config cfg = {.db_path = path[5],
                           .ca_cert_file = path[0],
                           .ca_key_file = path[1],
                           .token_secret_file = path[2],
                           .keepalive_ms = keepalive_ms,
                           .dead_peer_ms = dead_peer_ms};
    cloudhub *hub = NULL;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_rpc_channel *admin = NULL;
    ke_rpc_tls tls = {.ca_file = path[0],
                      .cert_file = path[3],
                      .key_file = path[4],
                      .client_auth = KE_RPC_CLIENT_AUTH_REQUEST};
    ke_rpc_server_opts so = {.listen = "127.0.0.1:0", .tls = &tls};
    assert_int_equal(cloudhub_new(&cfg, &hub), 0);
    assert_int_equal(ke_rpc_loop_new(2, &loop), 0);
    assert_int_equal(ke_rpc_server_new(loop, &so, &srv), 0);
    assert_int_equal(cloudhub_register(hub, srv), 0);
    assert_int_equal(ke_rpc_server_start(srv), 0);
    assert_int_equal(ke_rpc_channel_new_inproc(loop, srv, &admin), 0);
    snprintf(server, sizeof(server), "127.0.0.1:%d", ke_rpc_server_port(srv));

    /* keadm joins edge-1 through this process's CloudHub. */
    char token[256] = "";
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s", ke_tp_env("KE_KEADM"), cloud);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(token, sizeof(token), p));
    pclose(p);
    token[strcspn(token, "\n")] = '\0';
    assert_int_equal(ke_tp_sh("%s join --cloudhub %s --token %s --node-name edge-1 --dir %s/edge "
                              ">/dev/null",
                              ke_tp_env("KE_KEADM"), server, token, dir),
                     0);
    char eca[160], ecrt[160], ekey[160];
    snprintf(eca, sizeof(eca), "%s/edge/ca.crt", dir);
    snprintf(ecrt, sizeof(ecrt), "%s/edge/node.crt", dir);
    snprintf(ekey, sizeof(ekey), "%s/edge/node.key", dir);
    snprintf(edge_db, sizeof(edge_db), "%s/edge/clock.db", dir);

    edgehub_config hc = {.node_name = "edge-1",
                         .server = server,
                         .ca_file = eca,
                         .cert_file = ecrt,
                         .key_file = ekey,
                         .agent_version = "test",
                         .keepalive_ms = keepalive_ms,
                         .dead_peer_ms = dead_peer_ms,
                         .backoff_initial_ms = 50,
                         .backoff_max_ms = 200};
    ke_edgetest edge;
    ke_edgetest *mm = &edge;
    ke_edgetest_start(&edge, edge_db, loop, &hc, NULL, NULL);
    int64_t until = ke_time_mono_ms() + 20000;
    while (!ke_edgetest_connected() && ke_time_mono_ms() < until)
        pause_ms(10);
    assert_int_equal(ke_edgetest_connected(), 1);

    const char *key = "node/edge-1/default/ConfigMap/clock";
    uint64_t rv = 1;
    assert_int_equal(publish(admin, key, rv), KE_RPC_OK);
    wait_rv(mm, key, rv);

    const int64_t steps[] = {+HOUR_MS, -HOUR_MS, 0};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        ke_time_set_wall_offset(steps[s]);
        hold_steady(admin, dead_peer_ms);
        /* Versions keep going forward and are applied in order. */
        for (int i = 0; i < 5; i++) {
            rv++;
            assert_int_equal(publish(admin, key, rv), KE_RPC_OK);
        }
        wait_rv(mm, key, rv);
        assert_int_equal(publish(admin, key, rv - 1), KE_RPC_FAILED_PRECONDITION);
        wait_rv(mm, key, rv); /* nothing went back */
    }

    ke_edgetest_stop(&edge);
    ke_rpc_channel_free(admin);
    ke_rpc_server_free(srv);
    cloudhub_free(hub);
    ke_rpc_loop_free(loop);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_step_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
