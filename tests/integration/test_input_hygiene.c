/*
 * test_input_hygiene.c — what CloudHub does with input a peer chose
 * (issue #8, input hygiene), against a real cloudcore:
 *
 *   - a Join whose CSR carries a key the policy refuses (RSA with e = 3,
 *     RSA 1024, a curve other than P-256/P-384) is INVALID_ARGUMENT naming
 *     csr_pem, registers nothing and spends no use of its token;
 *   - a token made with `keadm gettoken --uses N` joins N nodes and then
 *     is refused with PERMISSION_DENIED, also after cloudcore restarts
 *     (the count is in cloudhub.db); a token without --uses (and one made
 *     in the four-field form) keeps joining;
 *   - a Hello whose agent_version holds a newline, a terminal escape and a
 *     forged log line reaches cloudcore's log escaped, on one line.
 *
 * Real processes: keadm and cloudcore; the Join client is libke rpc and
 * the tunnel client tests/support's raw edge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_rawedge.h"
#include "ke_time.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
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
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    return 0;
}

/* token_uses runs keadm gettoken with --uses (0: without) and returns the
 * token (static buffer). */
static const char *token_uses(unsigned uses)
{
    static char token[256];
    char cmd[512], flag[32] = "";
    if (uses)
        snprintf(flag, sizeof(flag), " --uses %u", uses);
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s/cloud%s", ke_tp_env("KE_KEADM"), C.dir,
             flag);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(token, sizeof(token), p));
    assert_int_equal(pclose(p), 0);
    token[strcspn(token, "\n")] = '\0';
    return token;
}

static int joined(const char *node)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s/node.crt", C.dir, node);
    return stat(path, &st) == 0;
}

/* assert_join_used_up: keadm join of node with token fails, saying why,
 * and leaves nothing registered or written. */
static void assert_join_used_up(const char *node, const char *token)
{
    char log[256];
    assert_int_equal(ke_cluster_join(&C, node, token), 1);
    snprintf(log, sizeof(log), "%s/%s.join.log", C.dir, node);
    assert_true(ke_file_contains(log, "PERMISSION_DENIED"));
    assert_true(ke_file_contains(log, "token: already used"));
    assert_false(joined(node));
    assert_int_equal(ke_cluster_node_connected(&C, node), -1);
}

/* ---- CSR key policy ---- */

static EVP_PKEY *rsa_key(unsigned bits, unsigned long e)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    BIGNUM *bn = BN_new();
    EVP_PKEY *k = NULL;
    assert_true(ctx && bn && BN_set_word(bn, e) == 1);
    assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits), 1);
    assert_int_equal(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, bn), 1);
    assert_int_equal(EVP_PKEY_generate(ctx, &k), 1);
    BN_free(bn);
    EVP_PKEY_CTX_free(ctx);
    return k;
}

/* csr_of makes a PEM CSR for cn with key (freed here). */
static char *csr_of(EVP_PKEY *key, const char *cn)
{
    assert_non_null(key);
    X509_REQ *req = X509_REQ_new();
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(b, req), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *pem = strndup(p, (size_t)n);
    BIO_free(b);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return pem;
}

/* join_rpc sends CloudHub.Join for node with token and csr (freed here). */
static void join_rpc(const char *node, const char *token, char *csr, ke_rpc_status *st)
{
    char ca[128], target[64];
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &ch), 0);
    Ke__V1__JoinRequest req = KE__V1__JOIN_REQUEST__INIT;
    req.token = (char *)token;
    req.node_name = (char *)node;
    req.csr_pem.data = (uint8_t *)csr;
    req.csr_pem.len = strlen(csr);
    ke_rpc_stub stub = {ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    assert_int_equal(ke_rpc_stub_unary(&stub, "Join", &req.base, &co, &reply, st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    free(csr);
    ke_rpc_channel_free(ch);
}

static void test_join_refuses_csr_keys_outside_the_policy_and_stores_nothing(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", token_uses(1));
    struct {
        EVP_PKEY *key;
        const char *says;
    } bad[] = {
        {rsa_key(2048, 3), "csr_pem: RSA public exponent must be 65537"},
        {rsa_key(1024, 65537), "csr_pem: RSA key of 1024 bits"},
        {EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"), "csr_pem: EC key on curve secp256k1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ke_rpc_status st;
        join_rpc("edge-weak", token, csr_of(bad[i].key, "system:node:edge-weak"), &st);
        assert_int_equal(st.code, KE_RPC_INVALID_ARGUMENT);
        if (!strstr(st.message, bad[i].says))
            fail_msg("Join said \"%s\", not \"%s\"", st.message, bad[i].says);
        assert_int_equal(ke_cluster_node_connected(&C, "edge-weak"), -1);
    }
    assert_true(ke_file_contains(C.cloud_log, "join refused node=edge-weak code=INVALID_ARGUMENT "
                                              "reason=\"csr_pem: RSA public exponent"));
    /* nothing was stored, not even a use of the single-use token: a good
     * key joins with it */
    ke_rpc_status st;
    join_rpc("edge-weak", token, csr_of(rsa_key(2048, 65537), "system:node:edge-weak"), &st);
    assert_int_equal(st.code, KE_RPC_OK);
    assert_int_equal(ke_cluster_node_connected(&C, "edge-weak"), 0);
}

/* ---- use-limited tokens ---- */

static void test_token_with_one_use_joins_once_also_after_a_restart(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", token_uses(1));
    assert_int_equal(ke_cluster_join(&C, "edge-once", token), 0);
    assert_true(joined("edge-once"));
    assert_join_used_up("edge-twice", token);
    assert_true(ke_file_contains(C.cloud_log, "join refused node=edge-twice "
                                              "code=PERMISSION_DENIED reason=\"token: already "
                                              "used for 1 join, all it allows"));
    ke_cluster_restart_cloud(&C, NULL);
    assert_join_used_up("edge-thrice", token);
    assert_int_equal(ke_cluster_node_connected(&C, "edge-once"), 0); /* still registered */
}

static void test_token_with_two_uses_joins_twice(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", token_uses(2));
    assert_int_equal(ke_cluster_join(&C, "edge-two-a", token), 0);
    assert_int_equal(ke_cluster_join(&C, "edge-two-b", token), 0);
    assert_join_used_up("edge-two-c", token);
}

static void test_a_refused_join_spends_no_use(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", token_uses(1));
    /* edge-two-a is taken: ALREADY_EXISTS, and the token keeps its one use */
    ke_rpc_status st;
    join_rpc("edge-two-a", token,
             csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), "system:node:edge-two-a"), &st);
    assert_int_equal(st.code, KE_RPC_ALREADY_EXISTS);
    assert_int_equal(ke_cluster_join(&C, "edge-spare", token), 0);
    assert_join_used_up("edge-spare-2", token);
}

static void test_token_without_uses_keeps_joining(void **state)
{
    (void)state;
    char token[256];
    snprintf(token, sizeof(token), "%s", token_uses(0));
    char id[KE_PKI_TOKEN_ID_HEX];
    uint32_t uses = 7;
    assert_int_equal(ke_pki_token_uses(token, id, &uses), 0);
    assert_int_equal(uses, 0); /* the four-field form of before */
    const char *nodes[] = {"edge-many-a", "edge-many-b", "edge-many-c"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(ke_cluster_join(&C, nodes[i], token), 0);
    ke_cluster_restart_cloud(&C, NULL);
    assert_int_equal(ke_cluster_join(&C, "edge-many-d", token), 0);
}

/* ---- peer strings in the log ---- */

#define FORGED "2026-01-01T00:00:00.000Z ERROR cloudhub: forged"

/* wait_log polls cloudcore's log for text until a monotonic deadline. */
static int wait_log(const char *text, int timeout_ms)
{
    int64_t until = ke_time_mono_ms() + timeout_ms;
    for (;;) {
        if (ke_file_contains(C.cloud_log, text))
            return 1;
        if (ke_time_mono_ms() >= until)
            return 0;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* between polls of the condition, not instead of one */
    }
}

static void test_agent_version_with_control_characters_is_logged_escaped(void **state)
{
    (void)state;
    assert_int_equal(ke_cluster_join(&C, "edge-log", token_uses(0)), 0);
    ke_rawedge e;
    ke_rawedge_open(&e, &C, "edge-log", 1);
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    hello.node_name = "edge-log";
    hello.agent_version = "x\n" FORGED "\x1b[31m";
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    int sent = ke_rawedge_send(&e, &f.base) == 0;
    int acked = sent && ke_rawedge_wait_hello_ack(&e, 10000);
    int logged =
        acked && wait_log("node connected node=edge-log agent=\"x\\n" FORGED "\\x1b[31m\"", 10000);
    ke_rawedge_close(&e); /* before any assertion: a failed test still stops cleanly */
    assert_true(sent);
    assert_true(acked);
    assert_true(logged);
    /* no raw control character anywhere in the file, and no forged line */
    char *log = NULL;
    size_t n = 0;
    assert_int_equal(ke_pki_read_file(C.cloud_log, &log, &n), 0);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)log[i] < 0x20 && log[i] != '\n')
            fail_msg("control byte 0x%02x at offset %zu of %s", (unsigned char)log[i], i,
                     C.cloud_log);
    assert_null(strstr(log, "\n" FORGED));
    assert_false(strncmp(log, FORGED, strlen(FORGED)) == 0);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_refuses_csr_keys_outside_the_policy_and_stores_nothing),
        cmocka_unit_test(test_token_with_one_use_joins_once_also_after_a_restart),
        cmocka_unit_test(test_token_with_two_uses_joins_twice),
        cmocka_unit_test(test_a_refused_join_spends_no_use),
        cmocka_unit_test(test_token_without_uses_keeps_joining),
        cmocka_unit_test(test_agent_version_with_control_characters_is_logged_escaped),
    };
    return cmocka_run_group_tests_name("input_hygiene", tests, setup, teardown);
}
