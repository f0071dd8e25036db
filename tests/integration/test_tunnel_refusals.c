/*
 * test_tunnel_refusals.c — CloudHub refuses what it must, with a clear
 * error on both sides and nothing written:
 *   join: a wrong token, an expired token, a CSR whose name differs from
 *         the node name, a name already joined;
 *   tunnel: no client certificate, a certificate from another CA, an
 *         expired certificate, a node that was removed, a frame about
 *         another node's resource.
 * Real processes: keadm, cloudcore; the tunnel client is libke rpc.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_cluster.h"
#include "ke_consumer.h"
#include "ke_err.h"
#include "ke_pki.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static ke_cluster C;

static int setup(void **state)
{
    (void)state;
    ke_cluster_start(&C, NULL);
    assert_int_equal(ke_cluster_join(&C, "edge-1", ke_cluster_token(&C)), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    return 0;
}

static int exists(const char *fmt, const char *a)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), fmt, C.dir, a);
    return stat(path, &st) == 0;
}

static char *slurp(const char *fmt, const char *a)
{
    char path[256];
    char *data = NULL;
    snprintf(path, sizeof(path), fmt, C.dir, a);
    assert_int_equal(ke_pki_read_file(path, &data, NULL), 0);
    return data;
}

/* ---- join refusals ---- */

static void assert_join_refused(const char *node, const char *token, const char *edge_says,
                                const char *cloud_says)
{
    char log[200];
    assert_int_equal(ke_cluster_join(&C, node, token), 1);
    snprintf(log, sizeof(log), "%s/%s.join.log", C.dir, node);
    assert_true(ke_file_contains(log, edge_says));
    if (cloud_says)
        assert_true(ke_file_contains(C.cloud_log, cloud_says));
    /* nothing written, on either side */
    assert_false(exists("%s/%s/node.crt", node));
    assert_false(exists("%s/%s/edgecore.yaml", node));
    assert_int_equal(ke_cluster_node_connected(&C, node), -1);
}

static void test_join_with_a_wrong_token_is_refused(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", ke_cluster_token(&C));
    size_t n = strlen(token);
    token[n - 1] = token[n - 1] == '0' ? '1' : '0'; /* the signature no longer matches */
    assert_join_refused("edge-wrong", token, "PERMISSION_DENIED",
                        "join refused node=edge-wrong");
}

static void test_join_with_an_expired_token_is_refused(void **state)
{
    (void)state;
    char *ca = slurp("%s/cloud/ca.crt%s", "");
    char path[128], *token = NULL;
    uint8_t secret[KE_PKI_SECRET_MAX];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/cloud/token.secret", C.dir);
    assert_int_equal(ke_pki_secret_read(path, secret, sizeof(secret), &len), 0);
    assert_int_equal(ke_pki_token_create(ca, secret, len, (int64_t)time(NULL) - 60, &token), 0);
    assert_join_refused("edge-late", token, "expired", "join refused node=edge-late");
    free(token);
    free(ca);
}

static void test_join_with_a_csr_for_another_name_is_refused(void **state)
{
    (void)state;
    char ca[128], target[64];
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &ch), 0);
    char *key = NULL, *csr = NULL;
    assert_int_equal(ke_pki_key_create(&key), 0);
    assert_int_equal(ke_pki_csr_create(key, "edge-other", &csr), 0);
    Ke__V1__JoinRequest req = KE__V1__JOIN_REQUEST__INIT;
    req.token = (char *)ke_cluster_token(&C);
    req.node_name = "edge-x";
    req.csr_pem.data = (uint8_t *)csr;
    req.csr_pem.len = strlen(csr);
    ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Join", &req.base, &co, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "differs from node name"));
    assert_null(reply);
    assert_true(ke_file_contains(C.cloud_log, "join refused node=edge-x"));
    assert_int_equal(ke_cluster_node_connected(&C, "edge-x"), -1);
    free(key);
    free(csr);
    ke_rpc_channel_free(ch);
}

static void test_join_with_a_name_already_joined_is_refused(void **state)
{
    (void)state;
    char log[200];
    /* edge-1 joined in setup; a second machine claims the name. */
    assert_int_equal(ke_tp_sh("%s join --cloudhub 127.0.0.1:%d --token %s --node-name edge-1 "
                              "--dir %s/edge-1-again >/dev/null 2>%s/again.log",
                              ke_tp_env("KE_KEADM"), C.grpc_port, ke_cluster_token(&C), C.dir,
                              C.dir),
                     1);
    snprintf(log, sizeof(log), "%s/again.log", C.dir);
    assert_true(ke_file_contains(log, "ALREADY_EXISTS"));
    assert_false(exists("%s/%s/node.crt", "edge-1-again"));
    /* the first edge-1's identity is untouched: its certificate still works below */
}

/* ---- tunnel refusals ---- */

typedef struct tunnel_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hello_ack, closed, refusals;
    uint64_t refused_seq;
    char reason[256];
    ke_rpc_status st;
} tunnel_rec;

static void rec_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    tunnel_rec *r = ud;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    pthread_mutex_lock(&r->mu);
    if (f->frame_case == KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK)
        r->hello_ack = 1;
    if (f->frame_case == KE__V1__CLOUD_FRAME__FRAME_REFUSAL) {
        r->refusals++;
        r->refused_seq = f->refusal->seq;
        snprintf(r->reason, sizeof(r->reason), "%s", f->refusal->reason);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    tunnel_rec *r = ud;
    pthread_mutex_lock(&r->mu);
    r->st = *st;
    r->closed = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int rec_wait(tunnel_rec *r, int *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 15;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    while (!*flag && !r->closed && rc == 0)
        rc = pthread_cond_timedwait(&r->cv, &r->mu, &until);
    int got = *flag;
    pthread_mutex_unlock(&r->mu);
    return got;
}

typedef struct tunnel {
    ke_rpc_channel *ch;
    ke_rpc_call *call;
    tunnel_rec rec;
} tunnel;

/* tunnel_open connects with the given PEM files (cert/key may be NULL) and
 * sends a hello as `node`. */
static void tunnel_open(tunnel *t, const char *cert, const char *key, const char *node)
{
    static const ke_rpc_handler h = {.on_message = rec_message, .on_close = rec_close};
    char ca[128], target[64];
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->rec.mu, NULL);
    pthread_cond_init(&t->rec.cv, NULL);
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &t->ch), 0);
    ke_rpc_stub stub = {t->ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 20000};
    assert_int_equal(ke_rpc_stub_start(&stub, "Tunnel", &h, &t->rec, &co, &t->call), 0);
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    hello.node_name = (char *)node;
    hello.agent_version = "test";
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    ke_rpc_call_send(t->call, &f.base);
}

static void tunnel_close(tunnel *t)
{
    ke_rpc_call_cancel(t->call);
    rec_wait(&t->rec, &t->rec.closed);
    ke_rpc_call_unref(t->call);
    ke_rpc_channel_free(t->ch);
}

/* tunnel_refused: opened with these files, the tunnel ends without a
 * HelloAck, with `code`. */
static void assert_tunnel_refused(const char *cert, const char *key, int code, const char *why)
{
    tunnel t;
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.closed));
    assert_int_equal(t.rec.hello_ack, 0);
    assert_int_equal(t.rec.st.code, code);
    if (why)
        assert_non_null(strstr(t.rec.st.message, why));
    tunnel_close(&t);
}

static void write_pem(const char *name, const char *pem, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", C.dir, name);
    assert_int_equal(ke_pki_write_file(path, pem, strlen(pem), 0600), 0);
}

static void test_tunnel_with_the_nodes_certificate_is_accepted(void **state)
{
    (void)state;
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    tunnel t;
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.hello_ack));
    tunnel_close(&t);
}

static void test_tunnel_without_a_client_certificate_is_refused(void **state)
{
    (void)state;
    assert_tunnel_refused(NULL, NULL, KE_RPC_UNAUTHENTICATED, "client certificate");
    /* refused by the server's authorizer, before the tunnel handler runs */
    assert_true(ke_file_contains(C.cloud_log, "denied method=/ke.v1.CloudHub/Tunnel user=\"\" "
                                              "groups=0 code=UNAUTHENTICATED"));
}

static void test_tunnel_with_a_certificate_from_another_ca_is_refused(void **state)
{
    (void)state;
    char *ca = NULL, *cakey = NULL, *cert = NULL, *key = NULL, cpath[128], kpath[128];
    assert_int_equal(ke_pki_ca_create("impostor CA", 3600, &ca, &cakey), 0);
    assert_int_equal(ke_pki_client_cert_create(ca, cakey, "edge-1", 3600, &cert, &key), 0);
    write_pem("impostor.crt", cert, cpath, sizeof(cpath));
    write_pem("impostor.key", key, kpath, sizeof(kpath));
    /* The TLS handshake fails: the call never reaches CloudHub. */
    assert_tunnel_refused(cpath, kpath, KE_RPC_UNAVAILABLE, NULL);
    free(ca);
    free(cakey);
    free(cert);
    free(key);
}

/* expired_cert issues, with the cluster CA, a certificate for cn that
 * expired an hour ago (ke_pki only issues certificates valid from now). */
static void expired_cert(const char *ca_pem, const char *ca_key_pem, const char *cn,
                         char **cert_pem, char **key_pem)
{
    assert_int_equal(ke_pki_key_create(key_pem), 0);
    BIO *b = BIO_new_mem_buf(ca_pem, -1);
    X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(ca_key_pem, -1);
    EVP_PKEY *cakey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(*key_pem, -1);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(ca);
    assert_non_null(cakey);
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    time_t now = time(NULL);
    ASN1_TIME_set(X509_getm_notBefore(x), now - 7200);
    ASN1_TIME_set(X509_getm_notAfter(x), now - 3600);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    *cert_pem = strndup(data, (size_t)len);
    BIO_free(b);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(key);
}

static void test_tunnel_with_an_expired_certificate_is_refused(void **state)
{
    (void)state;
    char *ca = slurp("%s/cloud/ca.crt%s", ""), *cakey = slurp("%s/cloud/ca.key%s", "");
    char *key = NULL, *cert = NULL, cpath[128], kpath[128];
    expired_cert(ca, cakey, "edge-1", &cert, &key);
    int64_t not_after = 0;
    assert_int_equal(ke_pki_cert_info(cert, NULL, 0, NULL, &not_after), 0);
    assert_true(not_after < (int64_t)time(NULL) * 1000);
    assert_int_equal(ke_pki_verify_chain(ca, cert) != 0, 1); /* signed by the CA, but expired */
    write_pem("expired.crt", cert, cpath, sizeof(cpath));
    write_pem("expired.key", key, kpath, sizeof(kpath));
    assert_tunnel_refused(cpath, kpath, KE_RPC_UNAVAILABLE, NULL);
    free(ca);
    free(cakey);
    free(key);
    free(cert);
}

static void test_tunnel_of_a_removed_node_is_refused(void **state)
{
    (void)state;
    assert_int_equal(ke_cluster_join(&C, "edge-gone", ke_cluster_token(&C)), 0);
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "%s/edge-gone/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-gone/node.key", C.dir);
    Ke__V1__RemoveNodeRequest req = KE__V1__REMOVE_NODE_REQUEST__INIT;
    req.node_name = "edge-gone";
    ke_rpc_stub hub = {C.admin, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&hub, "RemoveNode", &req.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    protobuf_c_message_free_unpacked(reply, NULL);

    tunnel t;
    tunnel_open(&t, cert, key, "edge-gone");
    assert_true(rec_wait(&t.rec, &t.rec.closed));
    assert_int_equal(t.rec.hello_ack, 0);
    assert_int_equal(t.rec.st.code, KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(t.rec.st.message, "not registered"));
    tunnel_close(&t);
    assert_true(ke_file_contains(C.cloud_log, "refused tunnel node=edge-gone"));
}

static void test_tunnel_hello_for_another_node_is_refused(void **state)
{
    (void)state;
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    tunnel t;
    tunnel_open(&t, cert, key, "edge-2");
    assert_true(rec_wait(&t.rec, &t.rec.closed));
    assert_int_equal(t.rec.st.code, KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(t.rec.st.message, "certificate is for \"edge-1\""));
    tunnel_close(&t);
}

/* Upstream frames: one about edge-2's resource is refused (and never
 * reaches a consumer); the next, about edge-1's own, is delivered. */
static void send_report(ke_rpc_call *call, uint64_t seq, const char *resource)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__SequencedMessage sm = KE__V1__SEQUENCED_MESSAGE__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    h.resource_version = 1;
    r.group = "status";
    r.operation = KE__V1__OPERATION__OPERATION_UPLOAD;
    r.resource = (char *)resource;
    m.header = &h;
    m.route = &r;
    sm.seq = seq;
    sm.message = &m;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_MESSAGE;
    f.message = &sm;
    assert_int_equal(ke_rpc_call_send(call, &f.base), 0);
}

static void test_frame_about_another_nodes_resource_is_refused(void **state)
{
    (void)state;
    static const char *const groups[] = {"status", NULL};
    ke_consumer con;
    ke_consumer_start(&con, C.admin, "test-refusals", groups, 0, 1, NULL, NULL);

    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    tunnel t;
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.hello_ack));
    long long refused_before = ke_cluster_metric(&C, "ke_cloudhub_refused_total");
    /* The bad frame first on the same ordered stream, then a good one. */
    uint64_t base = 1000; /* above anything earlier tests sent on edge-1 */
    send_report(t.call, base, "node/edge-2/default/PodStatus/stolen");
    assert_true(rec_wait(&t.rec, &t.rec.refusals));
    assert_int_equal(t.rec.refused_seq, base);
    assert_non_null(strstr(t.rec.reason, "does not belong to node edge-1"));
    assert_true(ke_file_contains(C.cloud_log, "refused upstream frame node=edge-1"));
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_refused_total") > refused_before);
    send_report(t.call, base + 1, "node/edge-1/default/PodStatus/mine");
    /* The durable log keeps the good report whenever the consumer
     * registered: it is the first (and only) thing the consumer gets. */
    assert_true(ke_consumer_wait(&con, 1, 15000));
    assert_string_equal(ke_consumer_get(&con, 0).key, "node/edge-1/default/PodStatus/mine");
    assert_int_equal(ke_consumer_get(&con, 0).seq, base + 1);
    tunnel_close(&t);
    ke_consumer_stop(&con);
}

static void test_malformed_tunnel_frames_end_the_stream_and_change_nothing(void **state)
{
    (void)state;
    char cert[160], key[160];
    snprintf(cert, sizeof(cert), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    long long refused = ke_cluster_metric(&C, "ke_cloudhub_refused_total");
    /* junk bytes where a frame belongs */
    tunnel t;
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.hello_ack));
    static const uint8_t junk[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_int_equal(ke_rpc_call_send_raw(t.call, junk, sizeof(junk)), 0);
    assert_true(rec_wait(&t.rec, &t.rec.closed));
    assert_int_equal(t.rec.st.code, KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(t.rec.st.message, "ke.v1.EdgeFrame"));
    tunnel_close(&t);
    /* an empty frame (no field set) */
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.hello_ack));
    assert_int_equal(ke_rpc_call_send_raw(t.call, "", 0), 0);
    assert_true(rec_wait(&t.rec, &t.rec.closed));
    assert_int_equal(t.rec.st.code, KE_RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(t.rec.st.message, "empty or unknown frame"));
    tunnel_close(&t);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_refused_total") > refused);
    /* the node's identity is intact: it connects again */
    tunnel_open(&t, cert, key, "edge-1");
    assert_true(rec_wait(&t.rec, &t.rec.hello_ack));
    tunnel_close(&t);
}

static void test_hub_api_refuses_a_node_certificate(void **state)
{
    (void)state;
    char ca[128], cert[160], key[160], target[64];
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(cert, sizeof(cert), "%s/edge-1/node.crt", C.dir);
    snprintf(key, sizeof(key), "%s/edge-1/node.key", C.dir);
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &ch), 0);
    Ke__V1__ListNodesRequest req = KE__V1__LIST_NODES_REQUEST__INIT;
    ke_rpc_stub hub = {ch, &ke__v1__hub__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&hub, "ListNodes", &req.base, NULL, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_PERMISSION_DENIED);
    ke_rpc_channel_free(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_with_a_wrong_token_is_refused),
        cmocka_unit_test(test_join_with_an_expired_token_is_refused),
        cmocka_unit_test(test_join_with_a_csr_for_another_name_is_refused),
        cmocka_unit_test(test_join_with_a_name_already_joined_is_refused),
        cmocka_unit_test(test_tunnel_with_the_nodes_certificate_is_accepted),
        cmocka_unit_test(test_tunnel_without_a_client_certificate_is_refused),
        cmocka_unit_test(test_tunnel_with_a_certificate_from_another_ca_is_refused),
        cmocka_unit_test(test_tunnel_with_an_expired_certificate_is_refused),
        cmocka_unit_test(test_tunnel_of_a_removed_node_is_refused),
        cmocka_unit_test(test_tunnel_hello_for_another_node_is_refused),
        cmocka_unit_test(test_frame_about_another_nodes_resource_is_refused),
        cmocka_unit_test(test_malformed_tunnel_frames_end_the_stream_and_change_nothing),
        cmocka_unit_test(test_hub_api_refuses_a_node_certificate),
    };
    return cmocka_run_group_tests_name("tunnel/refusals", tests, setup, teardown);
}
