/*
 * test_split_services.c — the cloud services as separate processes, as in
 * a cluster deployment: the `cloudhub` program (CloudHub alone) and the
 * `edgecontroller` program (EdgeController + DeviceController) reaching
 * it over mutual TLS as system:admin. A pod applied to the controllers
 * reaches an edge node connected to the hub, and its Node object appears.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_controllers_in_their_own_process_drive_a_remote_cloudhub(void **state)
{
    (void)state;
    char hub_bin[512], ec_bin[512];
    snprintf(hub_bin, sizeof(hub_bin), "%s/services/cloudcore/cloudhub", ke_tp_env("KE_BIN_DIR"));
    snprintf(ec_bin, sizeof(ec_bin), "%s/services/cloudcore/edgecontroller",
             ke_tp_env("KE_BIN_DIR"));
    setenv("KE_CLOUDCORE", hub_bin, 1); /* the cluster's cloud process: CloudHub alone */
    ke_cluster c;
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, "edge-1", ke_cluster_token(&c)), 0);
    ke_edge e = {0};
    ke_edge_start(&c, &e, "edge-1", c.grpc_port, NULL);

    char hub[64], ca[128], cert[128], key[128], admin_cert[128], admin_key[128], db[128],
        log[128];
    snprintf(hub, sizeof(hub), "--hub.server=127.0.0.1:%d", c.grpc_port);
    snprintf(ca, sizeof(ca), "--hub.tls.ca=%s/cloud/ca.crt", c.dir);
    snprintf(cert, sizeof(cert), "--hub.tls.cert=%s/cloud/admin.crt", c.dir);
    snprintf(key, sizeof(key), "--hub.tls.key=%s/cloud/admin.key", c.dir);
    snprintf(admin_cert, sizeof(admin_cert), "--grpc.tls.cert=%s/cloud/server.crt", c.dir);
    snprintf(admin_key, sizeof(admin_key), "--grpc.tls.key=%s/cloud/server.key", c.dir);
    snprintf(db, sizeof(db), "--store.db=%s/controllers.db", c.dir);
    snprintf(log, sizeof(log), "%s/edgecontroller.log", c.dir);
    char tca[128];
    snprintf(tca, sizeof(tca), "--grpc.tls.ca=%s/cloud/ca.crt", c.dir);
    char *argv[] = {ec_bin, "--grpc.listen=127.0.0.1:0", "--http.listen=127.0.0.1:0",
                    "--kubeapi.listen=127.0.0.1:0", tca,
                    admin_cert, admin_key, db, hub, ca, cert, key, NULL};
    ke_tp ecp;
    assert_int_equal(ke_tp_start_log(&ecp, argv, log), 0);
    char line[128];
    int port = 0;
    assert_int_equal(ke_tp_wait_line(&ecp, "ready ", 20000, line, sizeof(line)), 0);
    assert_int_equal(sscanf(line, "ready grpc=%d", &port), 1);

    char target[64], cap[128], cp[128], kp[128];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    snprintf(cap, sizeof(cap), "%s/cloud/ca.crt", c.dir);
    snprintf(cp, sizeof(cp), "%s/cloud/admin.crt", c.dir);
    snprintf(kp, sizeof(kp), "%s/cloud/admin.key", c.dir);
    ke_rpc_tls tls = {.ca_file = cap, .cert_file = cp, .key_file = kp};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(c.loop, target, &o, &ch), 0);
    ke_rpc_stub ec = {ch, &ke__v1__edge_controller__descriptor};

    /* The Node object appears from the remote hub's node list. */
    int found = 0;
    for (int i = 0; i < 300 && !found; i++) {
        Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
        ref.kind = "Node";
        ref.name = "edge-1";
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        assert_int_equal(ke_rpc_stub_unary(&ec, "Get", &ref.base, NULL, &reply, &st), 0);
        found = st.code == KE_RPC_OK;
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        if (!found)
            pause_ms(100);
    }
    assert_true(found);
    const char *pod = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"split\"},"
                      "\"spec\":{\"nodeName\":\"edge-1\",\"containers\":[{\"name\":\"c\","
                      "\"image\":\"busybox\"}]}}";
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)pod;
    req.object_json.len = strlen(pod);
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&ec, "Apply", &req.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);

    int at_edge = 0;
    for (int i = 0; i < 300 && !at_edge; i++) {
        Ke__V1__EdgeListReply *r = ke_edge_list(&e);
        for (size_t k = 0; r && k < r->n_objects; k++)
            at_edge |= strcmp(r->objects[k]->key, "node/edge-1/default/Pod/split") == 0;
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        if (!at_edge)
            pause_ms(100);
    }
    assert_true(at_edge);

    ke_rpc_channel_free(ch);
    assert_int_equal(ke_tp_stop(&ecp), 0);
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controllers_in_their_own_process_drive_a_remote_cloudhub),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
