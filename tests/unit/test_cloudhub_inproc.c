/*
 * test_cloudhub_inproc.c — CloudHub's Hub API called in-process, the way
 * controllers inside cloudcore call it: no socket, no client certificate,
 * (network callers are the server authorizer's business: lib/authz).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.h"
#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_testproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_file(const char *dir, const char *name, const char *data, char *path)
{
    snprintf(path, 128, "%s/%s", dir, name);
    assert_int_equal(ke_pki_write_file(path, data, strlen(data), 0600), 0);
}

static void test_cloudhub_hub_api_in_process(void **state)
{
    (void)state;
    char dir[64], ca_path[128], key_path[128], secret_path[128], db[128], hex[65];
    char *ca = NULL, *key = NULL;
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    assert_int_equal(ke_pki_ca_create("test CA", 3600, &ca, &key), 0);
    assert_int_equal(ke_pki_random_hex(32, hex), 0);
    write_file(dir, "ca.crt", ca, ca_path);
    write_file(dir, "ca.key", key, key_path);
    write_file(dir, "token.secret", hex, secret_path);
    snprintf(db, sizeof(db), "%s/cloudhub.db", dir);

    cloudhub_config cfg = {.db_path = db,
                           .ca_cert_file = ca_path,
                           .ca_key_file = key_path,
                           .token_secret_file = secret_path};
    cloudhub *hub = NULL;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_rpc_channel *ch = NULL;
    ke_rpc_server_opts so = {.listen = NULL};
    assert_int_equal(cloudhub_new(&cfg, &hub), 0);
    assert_int_equal(ke_rpc_loop_new(1, &loop), 0);
    assert_int_equal(ke_rpc_server_new(loop, &so, &srv), 0);
    assert_int_equal(cloudhub_register(hub, srv), 0);
    assert_int_equal(ke_rpc_server_start(srv), 0);
    assert_int_equal(ke_rpc_channel_new_inproc(loop, srv, &ch), 0);
    ke_rpc_stub stub = {ch, &ke__v1__hub__descriptor};

    /* Publish for a node that has not joined yet: kept for when it does. */
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__PublishRequest pub = KE__V1__PUBLISH_REQUEST__INIT;
    h.resource_version = 7;
    r.operation = KE__V1__OPERATION__OPERATION_INSERT;
    r.resource = "node/edge-9/default/ConfigMap/c";
    m.header = &h;
    m.route = &r;
    pub.node_name = "edge-9";
    pub.message = &m;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Publish", &pub.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);
    /* the same version again is a retry; an older one is stale */
    assert_int_equal(ke_rpc_stub_unary(&stub, "Publish", &pub.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);
    h.resource_version = 6;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Publish", &pub.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_FAILED_PRECONDITION);
    assert_non_null(strstr(st.message, "resource_version"));
    /* a resource of another node is refused, naming the field */
    h.resource_version = 8;
    r.resource = "node/edge-8/default/ConfigMap/c";
    assert_int_equal(ke_rpc_stub_unary(&stub, "Publish", &pub.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "message.route.resource"));

    Ke__V1__ListNodesRequest lr = KE__V1__LIST_NODES_REQUEST__INIT;
    assert_int_equal(ke_rpc_stub_unary(&stub, "ListNodes", &lr.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    assert_int_equal(((Ke__V1__ListNodesReply *)reply)->n_nodes, 0);
    protobuf_c_message_free_unpacked(reply, NULL);

    /* ListNodeObjects of a node CloudHub does not know: NOT_FOUND. */
    Ke__V1__ListNodeObjectsRequest lo = KE__V1__LIST_NODE_OBJECTS_REQUEST__INIT;
    lo.node_name = "edge-9";
    assert_int_equal(ke_rpc_stub_unary(&stub, "ListNodeObjects", &lo.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_NOT_FOUND);

    ke_rpc_channel_free(ch);
    ke_rpc_server_free(srv);
    cloudhub_free(hub);
    ke_rpc_loop_free(loop);

    /* A downstream window that would leave the stream's send queue no room
     * for acks and keepalives is refused. */
    cfg.window = CLOUDHUB_WINDOW_MAX + 1;
    assert_int_equal(cloudhub_new(&cfg, &hub), KE_EINVAL);
    cfg.window = CLOUDHUB_WINDOW_MAX;
    assert_int_equal(cloudhub_new(&cfg, &hub), 0);
    cloudhub_free(hub);
    free(ca);
    free(key);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cloudhub_hub_api_in_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
