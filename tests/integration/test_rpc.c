/*
 * test_rpc.c — libke rpc against a real cloudcore process on loopback.
 *
 * Each group starts cloudcore (plaintext, small message limit, or mutual
 * TLS), waits for its "ready" line, and drives the Diagnostics service with
 * the C client: unary and 100 concurrent bidirectional streams, deadlines,
 * cancellation seen by the handler, the message size bound, invalid
 * protobuf, unimplemented methods, and certificate checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "diag.pb-c.h"
#include "ke_err.h"
#include "ke_rpc.h"
#include "ke_testproc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PING "/ke.v1.Diagnostics/Ping"
#define ECHO "/ke.v1.Diagnostics/Echo"
#define TICKS "/ke.v1.Diagnostics/Ticks"

typedef struct server {
    ke_tp proc;
    int port;
    int http_port;
    ke_rpc_loop *loop;
    ke_rpc_channel *ch;
    char pki[64];
} server;

static void server_start(server *s, const char *const *extra)
{
    char *argv[24];
    int n = 0;
    argv[n++] = (char *)ke_tp_env("KE_CLOUDCORE");
    argv[n++] = "--grpc.listen=127.0.0.1:0";
    argv[n++] = "--http.listen=127.0.0.1:0";
    argv[n++] = "--kubeapi.listen=127.0.0.1:0";
    argv[n++] = "--log_level=warn";
    argv[n++] = "--cloudhub.enable=false";
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    assert_int_equal(ke_tp_start(&s->proc, argv), 0);
    char line[256];
    assert_int_equal(ke_tp_wait_line(&s->proc, "ready ", 20000, line, sizeof(line)), 0);
    assert_int_equal(sscanf(line, "ready grpc=%d http=%d", &s->port, &s->http_port), 2);
    assert_int_equal(ke_rpc_loop_new(2, &s->loop), 0);
}

static ke_rpc_channel *channel_to(server *s, const ke_rpc_tls *tls)
{
    char target[64];
    snprintf(target, sizeof(target), "%s:%d", tls ? "localhost" : "127.0.0.1", s->port);
    ke_rpc_channel_opts o = {.tls = tls, .max_message_bytes = 16u << 20};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(s->loop, target, &o, &ch), 0);
    return ch;
}

static void server_stop(server *s)
{
    ke_rpc_channel_free(s->ch);
    ke_rpc_loop_free(s->loop);
    assert_int_equal(ke_tp_stop(&s->proc), 0); /* clean exit on SIGTERM */
    if (s->pki[0])
        ke_tp_sh("rm -rf %s", s->pki);
}

static int group_plain_setup(void **state)
{
    server *s = calloc(1, sizeof(*s));
    server_start(s, NULL);
    s->ch = channel_to(s, NULL);
    *state = s;
    return 0;
}

static int group_teardown(void **state)
{
    server *s = *state;
    server_stop(s);
    free(s);
    return 0;
}

/* ping runs one Ping and returns its status; *out gets the reply if OK. */
static int ping(ke_rpc_channel *ch, const void *payload, size_t len, uint32_t delay_ms,
                int64_t timeout_ms, Ke__V1__PingReply **out, ke_rpc_status *st)
{
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    req.payload.data = (uint8_t *)payload;
    req.payload.len = len;
    req.delay_ms = delay_ms;
    ke_rpc_call_opts o = {.timeout_ms = timeout_ms};
    ProtobufCMessage *reply = NULL;
    assert_int_equal(ke_rpc_unary(ch, PING, &req.base, &ke__v1__ping_reply__descriptor, &o,
                                  &reply, st),
                     0);
    if (out)
        *out = (Ke__V1__PingReply *)reply;
    else if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st->code;
}

/* wait_cancelled_at_least polls the server's count of cancelled calls until
 * it reaches n (the cancel travels on its own; there is no event to wait
 * on from here). Gives up after 10 s. */
static uint64_t wait_cancelled_at_least(ke_rpc_channel *ch, uint64_t n)
{
    uint64_t seen = 0;
    for (int i = 0; i < 1000; i++) {
        Ke__V1__PingReply *r = NULL;
        ke_rpc_status st;
        assert_int_equal(ping(ch, "", 0, 0, 5000, &r, &st), KE_RPC_OK);
        seen = r->calls_cancelled;
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (seen >= n)
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return seen;
}

/* ---- a streaming client that records what it gets ---- */

typedef struct stream_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t expect_seq; /* next seq expected */
    uint64_t received;
    int out_of_order;
    int closed;
    ke_rpc_status st;
    ke_rpc_call *call;
} stream_rec;

static void rec_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)call;
    stream_rec *r = ud;
    const Ke__V1__EchoFrame *f = (const Ke__V1__EchoFrame *)msg;
    pthread_mutex_lock(&r->mu);
    if (f->seq != r->expect_seq)
        r->out_of_order++;
    r->expect_seq++;
    r->received++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    stream_rec *r = ud;
    pthread_mutex_lock(&r->mu);
    r->st = *st;
    r->closed = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static const ke_rpc_handler rec_handler = {.on_message = rec_on_message,
                                           .on_close = rec_on_close};

static void rec_init(stream_rec *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->expect_seq = 1;
}

static int rec_wait(stream_rec *r, uint64_t received, int closed, int timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_s;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    while ((r->received < received || (closed && !r->closed)) && rc == 0)
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &until);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void rec_destroy(stream_rec *r)
{
    ke_rpc_call_unref(r->call);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void send_frame(ke_rpc_call *call, uint64_t seq, size_t size)
{
    uint8_t buf[256];
    memset(buf, (int)(seq & 0xff), sizeof(buf));
    Ke__V1__EchoFrame f = KE__V1__ECHO_FRAME__INIT;
    f.seq = seq;
    f.payload.data = buf;
    f.payload.len = size;
    assert_int_equal(ke_rpc_call_send(call, &f.base), 0);
}

/* ---- tests ---- */

static void test_rpc_unary_ping_returns_payload(void **state)
{
    server *s = *state;
    Ke__V1__PingReply *r = NULL;
    ke_rpc_status st;
    assert_int_equal(ping(s->ch, "hello", 5, 0, 5000, &r, &st), KE_RPC_OK);
    assert_int_equal(r->payload.len, 5);
    assert_memory_equal(r->payload.data, "hello", 5);
    assert_string_equal(r->server, "cloudcore");
    assert_string_equal(r->peer_identity, "");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

typedef struct unary_many {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok;
} unary_many;

static void unary_many_cb(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    unary_many *u = ud;
    const Ke__V1__PingReply *r = (const Ke__V1__PingReply *)reply;
    pthread_mutex_lock(&u->mu);
    if (st->code == KE_RPC_OK && r && r->payload.len == 8)
        u->ok++;
    u->done++;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

static void test_rpc_100_concurrent_unary_calls_all_answered(void **state)
{
    server *s = *state;
    unary_many u = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    req.payload.data = (uint8_t *)"12345678";
    req.payload.len = 8;
    req.delay_ms = 50; /* keeps all 100 open on the server at once */
    ke_rpc_call_opts o = {.timeout_ms = 20000};
    for (int i = 0; i < 100; i++)
        assert_int_equal(ke_rpc_unary_async(s->ch, PING, &req.base,
                                            &ke__v1__ping_reply__descriptor, &o, unary_many_cb,
                                            &u),
                         0);
    pthread_mutex_lock(&u.mu);
    while (u.done < 100)
        pthread_cond_wait(&u.cv, &u.mu);
    pthread_mutex_unlock(&u.mu);
    assert_int_equal(u.ok, 100);
}

static void test_rpc_100_concurrent_bidi_streams_echo_in_order(void **state)
{
    server *s = *state;
    enum { STREAMS = 100, FRAMES = 50 };
    stream_rec *recs = calloc(STREAMS, sizeof(*recs));
    ke_rpc_call_opts o = {.timeout_ms = 60000};
    for (int i = 0; i < STREAMS; i++) {
        rec_init(&recs[i]);
        assert_int_equal(ke_rpc_call_start(s->ch, ECHO, &ke__v1__echo_frame__descriptor,
                                           &rec_handler, &recs[i], &o, &recs[i].call),
                         0);
    }
    /* Every stream is open before any finishes: the first frame of each is
     * echoed while all 100 are live. */
    for (int i = 0; i < STREAMS; i++)
        send_frame(recs[i].call, 1, 100);
    for (int i = 0; i < STREAMS; i++)
        assert_int_equal(rec_wait(&recs[i], 1, 0, 30), 0);
    Ke__V1__PingReply *r = NULL;
    ke_rpc_status st;
    assert_int_equal(ping(s->ch, "", 0, 0, 5000, &r, &st), KE_RPC_OK);
    assert_true(r->streams_open >= STREAMS);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    for (uint64_t seq = 2; seq <= FRAMES; seq++)
        for (int i = 0; i < STREAMS; i++)
            send_frame(recs[i].call, seq, 100);
    for (int i = 0; i < STREAMS; i++)
        assert_int_equal(ke_rpc_call_close_send(recs[i].call), 0);
    for (int i = 0; i < STREAMS; i++) {
        assert_int_equal(rec_wait(&recs[i], FRAMES, 1, 30), 0);
        assert_int_equal(recs[i].received, FRAMES);
        assert_int_equal(recs[i].out_of_order, 0);
        assert_int_equal(recs[i].st.code, KE_RPC_OK);
        rec_destroy(&recs[i]);
    }
    free(recs);
}

static void test_rpc_server_stream_ticks_delivers_count(void **state)
{
    server *s = *state;
    stream_rec r;
    rec_init(&r);
    ke_rpc_call_opts o = {.timeout_ms = 30000};
    assert_int_equal(ke_rpc_call_start(s->ch, TICKS, &ke__v1__echo_frame__descriptor,
                                       &rec_handler, &r, &o, &r.call),
                     0);
    Ke__V1__TicksRequest req = KE__V1__TICKS_REQUEST__INIT;
    req.count = 5000; /* more than the send queue holds: exercises on_drain */
    req.payload_size = 100;
    assert_int_equal(ke_rpc_call_send(r.call, &req.base), 0);
    assert_int_equal(ke_rpc_call_close_send(r.call), 0);
    assert_int_equal(rec_wait(&r, 5000, 1, 30), 0);
    assert_int_equal(r.st.code, KE_RPC_OK);
    assert_int_equal(r.received, 5000);
    assert_int_equal(r.out_of_order, 0);
    rec_destroy(&r);
}

static void test_rpc_deadline_expired_gives_deadline_exceeded(void **state)
{
    server *s = *state;
    uint64_t before = wait_cancelled_at_least(s->ch, 0);
    ke_rpc_status st;
    assert_int_equal(ping(s->ch, "", 0, 10000, 200, NULL, &st), KE_RPC_DEADLINE_EXCEEDED);
    /* The server's handler saw the call end without a reply. */
    assert_true(wait_cancelled_at_least(s->ch, before + 1) >= before + 1);
}

static void test_rpc_client_cancel_is_seen_by_handler(void **state)
{
    server *s = *state;
    uint64_t before = wait_cancelled_at_least(s->ch, 0);
    stream_rec r;
    rec_init(&r);
    assert_int_equal(ke_rpc_call_start(s->ch, ECHO, &ke__v1__echo_frame__descriptor,
                                       &rec_handler, &r, NULL, &r.call),
                     0);
    send_frame(r.call, 1, 10);
    assert_int_equal(rec_wait(&r, 1, 0, 10), 0); /* the handler is live */
    ke_rpc_call_cancel(r.call);
    assert_int_equal(rec_wait(&r, 1, 1, 10), 0);
    assert_int_equal(r.st.code, KE_RPC_CANCELLED);
    Ke__V1__EchoFrame late = KE__V1__ECHO_FRAME__INIT;
    assert_int_equal(ke_rpc_call_send(r.call, &late.base), KE_ECLOSED);
    rec_destroy(&r);
    assert_true(wait_cancelled_at_least(s->ch, before + 1) >= before + 1);
}

static void test_rpc_unregistered_method_is_unimplemented(void **state)
{
    server *s = *state;
    Ke__V1__PingRequest req = KE__V1__PING_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    ke_rpc_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(ke_rpc_unary(s->ch, "/ke.v1.Diagnostics/Nope", &req.base,
                                  &ke__v1__ping_reply__descriptor, &o, &reply, &st),
                     0);
    assert_int_equal(st.code, KE_RPC_UNIMPLEMENTED);
    assert_null(reply);
}

/* raw_call sends `len` raw bytes to `path` and returns the final status. */
static int raw_call(ke_rpc_channel *ch, const char *path, const void *data, size_t len,
                    ke_rpc_status *st)
{
    stream_rec r;
    rec_init(&r);
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    assert_int_equal(ke_rpc_call_start(ch, path, &ke__v1__echo_frame__descriptor, &rec_handler,
                                       &r, &o, &r.call),
                     0);
    assert_int_equal(ke_rpc_call_send_raw(r.call, data, len), 0);
    ke_rpc_call_close_send(r.call);
    assert_int_equal(rec_wait(&r, 0, 1, 15), 0);
    *st = r.st;
    rec_destroy(&r);
    return st->code;
}

static void test_rpc_invalid_protobuf_gives_invalid_argument_and_server_serves_on(void **state)
{
    server *s = *state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    ke_rpc_status st;
    assert_int_equal(raw_call(s->ch, PING, junk, sizeof(junk), &st), KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "ke.v1.PingRequest"));
    /* Truncated length-delimited field: a payload that claims 100 bytes. */
    static const uint8_t truncated[] = {0x0a, 0x64, 'a', 'b'};
    assert_int_equal(raw_call(s->ch, PING, truncated, sizeof(truncated), &st),
                     KE_RPC_INVALID_ARGUMENT);
    /* Mid-stream on a bidi call: a good frame, then junk. */
    stream_rec r;
    rec_init(&r);
    assert_int_equal(ke_rpc_call_start(s->ch, ECHO, &ke__v1__echo_frame__descriptor,
                                       &rec_handler, &r, NULL, &r.call),
                     0);
    send_frame(r.call, 1, 10);
    assert_int_equal(ke_rpc_call_send_raw(r.call, junk, sizeof(junk)), 0);
    assert_int_equal(rec_wait(&r, 1, 1, 10), 0);
    assert_int_equal(r.received, 1);
    assert_int_equal(r.st.code, KE_RPC_INVALID_ARGUMENT);
    rec_destroy(&r);
    /* and the server keeps serving */
    assert_int_equal(ping(s->ch, "x", 1, 0, 5000, NULL, &st), KE_RPC_OK);
}

static void test_cloudcore_metrics_count_calls_and_refusals(void **state)
{
    server *s = *state;
    char *body = NULL;
    assert_int_equal(ke_tp_http_get(s->http_port, "/healthz", &body), 200);
    assert_string_equal(body, "ok");
    free(body);
    assert_int_equal(ke_tp_http_get(s->http_port, "/metrics", &body), 200);
    /* The tests above made hundreds of pings and two invalid ones. */
    assert_true(ke_tp_metric_value(body, "ke_rpc_server_calls_total{method=\"/ke.v1.Diagnostics/Ping\"}") >= 100);
    assert_true(ke_tp_metric_value(body, "ke_rpc_server_invalid_messages_total{method=\"/ke.v1.Diagnostics/Ping\"}") >= 2);
    assert_true(ke_tp_metric_value(body, "ke_rpc_server_calls_cancelled_total{method=\"/ke.v1.Diagnostics/Echo\"}") >= 1);
    assert_true(ke_tp_metric_value(body, "ke_rpc_server_calls_active{method=\"/ke.v1.Diagnostics/Echo\"}") >= 0);
    free(body);
    assert_int_equal(ke_tp_http_get(s->http_port, "/nope", &body), 404);
    free(body);
}

/* ---- message size bound: a server started with a 64 KiB limit ---- */

static int group_small_setup(void **state)
{
    server *s = calloc(1, sizeof(*s));
    const char *extra[] = {"--grpc.max_message_bytes=65536", NULL};
    server_start(s, extra);
    s->ch = channel_to(s, NULL);
    *state = s;
    return 0;
}

static void test_rpc_oversized_message_gives_resource_exhausted(void **state)
{
    server *s = *state;
    size_t big = 100 * 1024;
    char *payload = calloc(1, big);
    ke_rpc_status st;
    assert_int_equal(ping(s->ch, payload, big, 0, 10000, NULL, &st), KE_RPC_RESOURCE_EXHAUSTED);
    /* Just under the bound passes, and the server serves on. */
    assert_int_equal(ping(s->ch, payload, 60 * 1024, 0, 10000, NULL, &st), KE_RPC_OK);
    free(payload);
}

/* ---- mutual TLS: server certificate and client CA from CA 1 ---- */

static int group_mtls_setup(void **state)
{
    server *s = calloc(1, sizeof(*s));
    assert_int_equal(ke_tp_tmpdir(s->pki), 0);
    assert_int_equal(ke_tp_sh("%s/tests/support/gen-certs.sh %s", ke_tp_env("KE_SOURCE_DIR"),
                              s->pki),
                     0);
    static char ca[128], cert[128], key[128];
    snprintf(ca, sizeof(ca), "--grpc.tls.ca=%s/ca1.crt", s->pki);
    snprintf(cert, sizeof(cert), "--grpc.tls.cert=%s/server.crt", s->pki);
    snprintf(key, sizeof(key), "--grpc.tls.key=%s/server.key", s->pki);
    const char *extra[] = {ca, cert, key, "--grpc.tls.client_auth=require", NULL};
    server_start(s, extra);
    *state = s;
    return 0;
}

static int tls_ping(server *s, const char *client, Ke__V1__PingReply **out)
{
    char ca[128], cert[128], key[128];
    snprintf(ca, sizeof(ca), "%s/ca1.crt", s->pki);
    snprintf(cert, sizeof(cert), "%s/%s.crt", s->pki, client ? client : "");
    snprintf(key, sizeof(key), "%s/%s.key", s->pki, client ? client : "");
    ke_rpc_tls tls = {.ca_file = ca,
                      .cert_file = client ? cert : NULL,
                      .key_file = client ? key : NULL};
    ke_rpc_channel *ch = channel_to(s, &tls);
    ke_rpc_status st;
    int code = ping(ch, "t", 1, 0, 5000, out, &st);
    ke_rpc_channel_free(ch);
    return code;
}

static void test_rpc_mtls_client_from_same_ca_is_served_with_its_cn(void **state)
{
    Ke__V1__PingReply *r = NULL;
    assert_int_equal(tls_ping(*state, "client1", &r), KE_RPC_OK);
    assert_string_equal(r->peer_identity, "edge-1");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_rpc_mtls_client_from_other_ca_is_refused(void **state)
{
    assert_int_equal(tls_ping(*state, "client2", NULL), KE_RPC_UNAVAILABLE);
}

static void test_rpc_mtls_client_without_certificate_is_refused(void **state)
{
    assert_int_equal(tls_ping(*state, NULL, NULL), KE_RPC_UNAVAILABLE);
}

static void test_rpc_mtls_plaintext_client_is_refused(void **state)
{
    server *s = *state;
    ke_rpc_channel *ch = channel_to(s, NULL);
    ke_rpc_status st;
    assert_int_not_equal(ping(ch, "t", 1, 0, 5000, NULL, &st), KE_RPC_OK);
    ke_rpc_channel_free(ch);
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_rpc_unary_ping_returns_payload),
        cmocka_unit_test(test_rpc_100_concurrent_unary_calls_all_answered),
        cmocka_unit_test(test_rpc_100_concurrent_bidi_streams_echo_in_order),
        cmocka_unit_test(test_rpc_server_stream_ticks_delivers_count),
        cmocka_unit_test(test_rpc_deadline_expired_gives_deadline_exceeded),
        cmocka_unit_test(test_rpc_client_cancel_is_seen_by_handler),
        cmocka_unit_test(test_rpc_unregistered_method_is_unimplemented),
        cmocka_unit_test(test_rpc_invalid_protobuf_gives_invalid_argument_and_server_serves_on),
        cmocka_unit_test(test_cloudcore_metrics_count_calls_and_refusals),
    };
    const struct CMUnitTest small[] = {
        cmocka_unit_test(test_rpc_oversized_message_gives_resource_exhausted),
    };
    const struct CMUnitTest mtls[] = {
        cmocka_unit_test(test_rpc_mtls_client_from_same_ca_is_served_with_its_cn),
        cmocka_unit_test(test_rpc_mtls_client_from_other_ca_is_refused),
        cmocka_unit_test(test_rpc_mtls_client_without_certificate_is_refused),
        cmocka_unit_test(test_rpc_mtls_plaintext_client_is_refused),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("rpc/plain", plain, group_plain_setup, group_teardown);
    failed += cmocka_run_group_tests_name("rpc/limits", small, group_small_setup, group_teardown);
    failed += cmocka_run_group_tests_name("rpc/mtls", mtls, group_mtls_setup, group_teardown);
    return failed ? 1 : 0;
}
