/*
 * test_rpc_inproc.c — libke rpc inside one process: a server and a client
 * on grpc's in-process transport (no socket), as cloudcore's services call
 * each other. Also checks lifecycles: a server stopped with streams still
 * open closes each of them exactly once, and everything frees cleanly
 * (run under ASan in the sanitizer build).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "diag.pb-c.h"
#include "ke_diag.h"
#include "ke_err.h"
#include "ke_rpc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    ke_rpc_loop *loop;
    ke_rpc_server *srv;
    ke_diag *diag;
    ke_rpc_channel *ch;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    ke_rpc_server_opts o = {.listen = NULL}; /* in-process only */
    assert_int_equal(ke_rpc_loop_new(2, &f->loop), 0);
    assert_int_equal(ke_diag_new("test", "0", &f->diag), 0);
    assert_int_equal(ke_rpc_server_new(f->loop, &o, &f->srv), 0);
    assert_int_equal(ke_diag_register(f->diag, f->srv), 0);
    assert_int_equal(ke_rpc_server_start(f->srv), 0);
    assert_int_equal(ke_rpc_server_port(f->srv), 0);
    assert_int_equal(ke_rpc_channel_new_inproc(f->loop, f->srv, &f->ch), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ke_rpc_channel_free(f->ch);
    ke_rpc_server_free(f->srv);
    ke_diag_free(f->diag);
    ke_rpc_loop_free(f->loop);
    free(f);
    return 0;
}

static void test_rpc_inproc_unary_ping(void **state)
{
    fixture *f = *state;
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    req.payload.data = (uint8_t *)"inproc";
    req.payload.len = 6;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_unary(f->ch, "/ke.v1.Diagnostics/Ping", &req.base,
                                  &ke__v1__ping_reply__descriptor, NULL, &reply, &st),
                     0);
    assert_int_equal(st.code, KE_RPC_OK);
    Ke__V1__PingReply *r = (Ke__V1__PingReply *)reply;
    assert_memory_equal(r->payload.data, "inproc", 6);
    assert_string_equal(r->server, "test");
    protobuf_c_message_free_unpacked(reply, NULL);
}

typedef struct closes {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int received, closed, code;
} closes;

static void c_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    (void)m;
    closes *c = ud;
    pthread_mutex_lock(&c->mu);
    c->received++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void c_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    closes *c = ud;
    pthread_mutex_lock(&c->mu);
    c->closed++;
    c->code = st->code;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void test_rpc_inproc_bidi_echo(void **state)
{
    fixture *f = *state;
    closes c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, -1};
    ke_rpc_handler h = {.on_message = c_on_message, .on_close = c_on_close};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_call_start(f->ch, "/ke.v1.Diagnostics/Echo",
                                       &ke__v1__echo_frame__descriptor, &h, &c, NULL, &call),
                     0);
    Ke__V1__EchoFrame fr = KE__V1__ECHO_FRAME__INIT;
    for (int i = 1; i <= 20; i++) {
        fr.seq = (uint64_t)i;
        assert_int_equal(ke_rpc_call_send(call, &fr.base), 0);
    }
    assert_int_equal(ke_rpc_call_close_send(call), 0);
    assert_int_equal(ke_rpc_call_close_send(call), KE_ECLOSED); /* only once */
    pthread_mutex_lock(&c.mu);
    while (!c.closed)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(c.received, 20);
    assert_int_equal(c.code, KE_RPC_OK);
    assert_int_equal(c.closed, 1);
    ke_rpc_call_unref(call);
}

static void test_rpc_server_stop_closes_open_streams_once(void **state)
{
    fixture *f = *state;
    enum { N = 10 };
    closes c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, -1};
    ke_rpc_handler h = {.on_message = c_on_message, .on_close = c_on_close};
    ke_rpc_call *calls[N];
    Ke__V1__EchoFrame fr = KE__V1__ECHO_FRAME__INIT;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ke_rpc_call_start(f->ch, "/ke.v1.Diagnostics/Echo",
                                           &ke__v1__echo_frame__descriptor, &h, &c, NULL,
                                           &calls[i]),
                         0);
        assert_int_equal(ke_rpc_call_send(calls[i], &fr.base), 0);
    }
    pthread_mutex_lock(&c.mu);
    while (c.received < N)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    ke_rpc_server_stop(f->srv); /* returns once every server call saw on_close */
    pthread_mutex_lock(&c.mu);
    while (c.closed < N)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(c.closed, N);
    assert_int_not_equal(c.code, KE_RPC_OK);
    for (int i = 0; i < N; i++)
        ke_rpc_call_unref(calls[i]);
}

/* A handler that answers with request metadata and peer identity, to show
 * what the server side of a call sees. */
static void meta_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)msg;
    (void)ud;
    char value[64] = "", cn[64] = "", tiny[4];
    Ke__V1__PingReply r = KE__V1__PING_REPLY__INIT;
    if (ke_rpc_call_metadata(call, "x-ke-node", value, sizeof(value)) != 0 ||
        ke_rpc_call_metadata(call, "x-ke-absent", value + 32, 32) != KE_ENOTFOUND ||
        ke_rpc_call_metadata(call, "x-ke-node", tiny, sizeof(tiny)) != KE_EFULL) {
        ke_rpc_call_finish(call, KE_RPC_INTERNAL, "metadata lookup misbehaved", NULL);
        return;
    }
    r.server = value;
    r.peer_identity = ke_rpc_call_peer_cn(call, cn, sizeof(cn)) == KE_ENOTFOUND ? "none" : cn;
    r.version = (char *)ke_rpc_call_method(call);
    r.streams_open = (uint64_t)ke_rpc_call_is_inproc(call);
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
}

static void test_rpc_metadata_reaches_the_handler_and_stubs_check_types(void **state)
{
    (void)state;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_rpc_channel *ch = NULL;
    ke_rpc_server_opts o = {.listen = NULL};
    ke_rpc_handler h = {.on_message = meta_on_message};
    assert_int_equal(ke_rpc_loop_new(1, &loop), 0);
    assert_int_equal(ke_rpc_server_new(loop, &o, &srv), 0);
    assert_int_equal(ke_rpc_server_add(srv, &ke__v1__diagnostics__descriptor, "Nope",
                                       KE_RPC_UNARY, &h, NULL),
                     KE_ENOTFOUND);
    assert_int_equal(ke_rpc_server_add(srv, &ke__v1__diagnostics__descriptor, "Ping",
                                       KE_RPC_UNARY, &h, NULL),
                     0);
    assert_int_equal(ke_rpc_server_start(srv), 0);
    assert_int_equal(ke_rpc_channel_new_inproc(loop, srv, &ch), 0);

    ke_rpc_stub stub = {ch, &ke__v1__diagnostics__descriptor};
    ke_rpc_md md[] = {{"x-ke-node", "edge-7"}};
    ke_rpc_call_opts co = {.timeout_ms = 5000, .md = md, .n_md = 1};
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Ping", &req.base, &co, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    Ke__V1__PingReply *r = (Ke__V1__PingReply *)reply;
    assert_string_equal(r->server, "edge-7");
    assert_string_equal(r->peer_identity, "none");
    assert_string_equal(r->version, "/ke.v1.Diagnostics/Ping");
    assert_int_equal(r->streams_open, 1); /* seen as an in-process caller */
    protobuf_c_message_free_unpacked(reply, NULL);

    /* A request of the wrong type, or an unknown method, never leaves. */
    Ke__V1__EchoFrame wrong = KE__V1__ECHO_FRAME__INIT;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Ping", &wrong.base, &co, &reply, &st), KE_EINVAL);
    assert_int_equal(ke_rpc_stub_unary(&stub, "Pong", &req.base, &co, &reply, &st),
                     KE_ENOTFOUND);

    ke_rpc_channel_free(ch);
    ke_rpc_server_free(srv);
    ke_rpc_loop_free(loop);
}

static void test_rpc_bad_arguments_are_refused(void **state)
{
    (void)state;
    ke_rpc_loop *loop = NULL;
    assert_int_equal(ke_rpc_loop_new(0, &loop), KE_EINVAL);
    assert_int_equal(ke_rpc_loop_new(1, &loop), 0);
    ke_rpc_server *srv = NULL;
    ke_rpc_tls tls = {.cert_file = "/nonexistent.crt", .key_file = "/nonexistent.key"};
    ke_rpc_server_opts o = {.listen = "127.0.0.1:0", .tls = &tls};
    assert_int_equal(ke_rpc_server_new(loop, &o, &srv), KE_ETLS);
    o.tls = NULL;
    o.listen = "256.1.1.1:1";
    assert_int_equal(ke_rpc_server_new(loop, &o, &srv), 0);
    assert_int_equal(ke_rpc_server_start(srv), KE_EIO);
    ke_rpc_server_free(srv);
    ke_rpc_server_free(NULL);
    ke_rpc_channel_free(NULL);
    ke_rpc_loop_free(loop);
    ke_rpc_loop_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rpc_inproc_unary_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rpc_inproc_bidi_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rpc_server_stop_closes_open_streams_once, setup,
                                        teardown),
        cmocka_unit_test(test_rpc_metadata_reaches_the_handler_and_stubs_check_types),
        cmocka_unit_test(test_rpc_bad_arguments_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
