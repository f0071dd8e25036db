/*
 * test_pki.c — unit tests for lib/pki (ke_pki): keys, the CA, server and
 * client certificates, CSRs (including forged and over-asking ones, and the
 * key policy against keys made here with OpenSSL), chain
 * checks, join tokens (round trip, use limits, and every refusal), and the atomic file
 * helpers. Certificates are inspected with OpenSSL directly, so the tests
 * check what a TLS peer would see rather than what ke_pki says about itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_testproc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY (24 * 3600)

static const uint8_t SECRET[32] = "0123456789abcdef0123456789abcdef";

typedef struct fixture {
    char *ca;     /* CA certificate PEM */
    char *ca_key; /* CA key PEM */
    char dir[64]; /* scratch directory, removed by teardown */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || ke_pki_ca_create("kubeedge-c test CA", 30 * DAY, &f->ca, &f->ca_key) != 0 ||
        ke_tp_tmpdir(f->dir) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ke_tp_sh("rm -rf '%s'", f->dir);
    free(f->ca);
    free(f->ca_key);
    free(f);
    return 0;
}

/* ---- OpenSSL-side helpers ---- */

static X509 *x509_of(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static EVP_PKEY *pkey_of(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(k);
    return k;
}

static char *pem_of_req(X509_REQ *req)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509_REQ(b, req), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

static int64_t now_ms(void)
{
    return (int64_t)time(NULL) * 1000;
}

/* leaf_for signs a fresh node key's CSR for cn; returns the cert PEM and,
 * if key_out, the key PEM. */
static char *leaf_for(fixture *f, const char *cn, int64_t secs, char **key_out)
{
    char *key = NULL, *csr = NULL, *cert = NULL;
    assert_int_equal(ke_pki_key_create(&key), 0);
    assert_int_equal(ke_pki_csr_create(key, cn, &csr), 0);
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, secs, &cert, NULL), 0);
    free(csr);
    if (key_out)
        *key_out = key;
    else
        free(key);
    return cert;
}

/* ---- keys and the CA ---- */

static void test_pki_key_create_makes_pkcs8_ec_p256(void **state)
{
    (void)state;
    char *pem = NULL;
    assert_int_equal(ke_pki_key_create(&pem), 0);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    EVP_PKEY *k = pkey_of(pem);
    char group[64];
    assert_int_equal(EVP_PKEY_get_group_name(k, group, sizeof(group), NULL), 1);
    assert_string_equal(group, "prime256v1");
    EVP_PKEY_free(k);
    free(pem);
}

static void test_pki_ca_is_self_signed_ca_with_key_usage_and_ski(void **state)
{
    fixture *f = *state;
    X509 *x = x509_of(f->ca);
    assert_true(X509_get_extension_flags(x) & EXFLAG_CA);
    assert_true(X509_get_extension_flags(x) & EXFLAG_SS);
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_true(bc->ca);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(x));
    assert_int_equal(ke_pki_verify_chain(f->ca, f->ca), 0);
    assert_int_equal(ke_pki_cert_matches_key(f->ca, f->ca_key), 0);
    X509_free(x);
}

static void test_pki_serials_are_random_128_bit(void **state)
{
    fixture *f = *state;
    char *c1 = leaf_for(f, "a", DAY, NULL), *c2 = leaf_for(f, "a", DAY, NULL);
    X509 *x1 = x509_of(c1), *x2 = x509_of(c2);
    BIGNUM *b1 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x1), NULL);
    BIGNUM *b2 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x2), NULL);
    assert_int_not_equal(BN_cmp(b1, b2), 0);
    assert_false(BN_is_negative(b1));
    assert_true(BN_num_bits(b1) > 96 && BN_num_bits(b1) <= 128); /* odds of failing: 2^-32 */
    BN_free(b1);
    BN_free(b2);
    X509_free(x1);
    X509_free(x2);
    free(c1);
    free(c2);
}

static void test_pki_ca_create_refuses_bad_arguments(void **state)
{
    (void)state;
    char *ca = (char *)1, *key = (char *)1;
    assert_int_equal(ke_pki_ca_create("", DAY, &ca, &key), KE_EINVAL);
    assert_null(ca);
    assert_null(key);
    assert_int_equal(ke_pki_ca_create("ca", 0, &ca, &key), KE_EINVAL);
    assert_int_equal(ke_pki_ca_create("bad\nname", DAY, &ca, &key), KE_EINVAL);
    char longcn[80];
    memset(longcn, 'a', sizeof(longcn) - 1);
    longcn[sizeof(longcn) - 1] = '\0';
    assert_int_equal(ke_pki_ca_create(longcn, DAY, &ca, &key), KE_EINVAL);
}

/* ---- server and client certificates ---- */

static void test_pki_server_cert_has_sans_and_server_auth_only(void **state)
{
    fixture *f = *state;
    const char *sans[] = {"DNS:cloud.example.com", "IP:10.0.0.7", "localhost", "127.0.0.1",
                          "::1", NULL};
    char *cert = NULL, *key = NULL;
    assert_int_equal(
        ke_pki_server_cert_create(f->ca, f->ca_key, "cloudhub", sans, DAY, &cert, &key), 0);
    X509 *x = x509_of(cert);
    assert_int_equal(X509_check_host(x, "cloud.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.example.com", 0, 0, NULL), 0);
    assert_int_equal(X509_check_ip_asc(x, "10.0.0.7", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "10.0.0.8", 0), 0);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    assert_int_equal(X509_check_ca(x), 0);
    assert_int_equal(ke_pki_verify_chain(f->ca, cert), 0);
    assert_int_equal(ke_pki_cert_matches_key(cert, key), 0);
    char cn[64];
    assert_int_equal(ke_pki_cert_info(cert, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "cloudhub");
    X509_free(x);
    free(cert);
    free(key);
}

static void test_pki_server_cert_bad_san_is_refused(void **state)
{
    fixture *f = *state;
    const char *bad_ip[] = {"IP:not-an-address", NULL};
    const char *bad_dns[] = {"DNS:has space", NULL};
    const char *bad_bare[] = {"a,b", NULL};
    char *cert = NULL, *key = NULL;
    assert_int_equal(
        ke_pki_server_cert_create(f->ca, f->ca_key, "cloudhub", bad_ip, DAY, &cert, &key),
        KE_EINVAL);
    assert_int_equal(
        ke_pki_server_cert_create(f->ca, f->ca_key, "cloudhub", bad_dns, DAY, &cert, &key),
        KE_EINVAL);
    assert_int_equal(
        ke_pki_server_cert_create(f->ca, f->ca_key, "cloudhub", bad_bare, DAY, &cert, &key),
        KE_EINVAL);
    assert_null(cert);
    assert_null(key);
}

static void test_pki_issuing_with_a_key_that_is_not_the_cas_is_refused(void **state)
{
    fixture *f = *state;
    char *other_key = NULL, *cert = NULL, *key = NULL;
    assert_int_equal(ke_pki_key_create(&other_key), 0);
    assert_int_equal(
        ke_pki_client_cert_create(f->ca, other_key, "system:admin", DAY, &cert, &key), KE_ETLS);
    assert_null(cert);
    assert_null(key);
    free(other_key);
}

static void test_pki_client_cert_has_cn_and_client_auth_only(void **state)
{
    fixture *f = *state;
    char *cert = NULL, *key = NULL;
    assert_int_equal(
        ke_pki_client_cert_create(f->ca, f->ca_key, "system:admin", DAY, &cert, &key), 0);
    X509 *x = x509_of(cert);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
    assert_int_equal(X509_check_ca(x), 0);
    char cn[64];
    assert_int_equal(ke_pki_cert_info(cert, cn, sizeof(cn), NULL, NULL), 0);
    assert_string_equal(cn, "system:admin");
    assert_int_equal(ke_pki_verify_chain(f->ca, cert), 0);
    X509_free(x);
    free(cert);
    free(key);
}

/* ---- CSRs ---- */

static void test_pki_csr_cn_returns_the_requested_cn(void **state)
{
    (void)state;
    char *key = NULL, *csr = NULL, cn[64];
    assert_int_equal(ke_pki_key_create(&key), 0);
    assert_int_equal(ke_pki_csr_create(key, "edge-1", &csr), 0);
    assert_non_null(strstr(csr, "-----BEGIN CERTIFICATE REQUEST-----"));
    assert_int_equal(ke_pki_csr_cn(csr, cn, sizeof(cn)), 0);
    assert_string_equal(cn, "edge-1");
    assert_int_equal(ke_pki_csr_cn(csr, cn, 4), KE_EFULL);
    free(key);
    free(csr);
}

/* forged_csr: a CSR for cn carrying the public key of `victim` but signed
 * with another key, as a node would make to obtain a certificate for a key
 * it does not hold. */
static char *forged_csr(const char *cn)
{
    char *k1 = NULL, *k2 = NULL;
    assert_int_equal(ke_pki_key_create(&k1), 0);
    assert_int_equal(ke_pki_key_create(&k2), 0);
    EVP_PKEY *victim = pkey_of(k1), *signer = pkey_of(k2);
    X509_REQ *req = X509_REQ_new();
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_REQ_set_pubkey(req, victim);
    assert_true(X509_REQ_sign(req, signer, EVP_sha256()) > 0);
    char *pem = pem_of_req(req);
    X509_REQ_free(req);
    EVP_PKEY_free(victim);
    EVP_PKEY_free(signer);
    free(k1);
    free(k2);
    return pem;
}

static void test_pki_csr_with_bad_signature_is_refused(void **state)
{
    fixture *f = *state;
    char *csr = forged_csr("edge-1"), *cert = NULL, cn[64];
    assert_int_equal(ke_pki_csr_cn(csr, cn, sizeof(cn)), KE_ETLS);
    assert_string_equal(cn, "");
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, DAY, &cert, NULL), KE_ETLS);
    assert_null(cert);
    free(csr);
}

static void test_pki_csr_malformed_is_refused(void **state)
{
    (void)state;
    char cn[64];
    assert_int_equal(ke_pki_csr_cn("not a csr", cn, sizeof(cn)), KE_ETLS);
    assert_int_equal(ke_pki_csr_cn("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                   "-----END CERTIFICATE REQUEST-----\n",
                                   cn, sizeof(cn)),
                     KE_ETLS);
}

static void test_pki_sign_csr_keeps_cn_and_chains_to_ca(void **state)
{
    fixture *f = *state;
    char *key = NULL, *csr = NULL, *cert = NULL, cn[64];
    int64_t not_after = 0, nb = 0, na = 0;
    assert_int_equal(ke_pki_key_create(&key), 0);
    assert_int_equal(ke_pki_csr_create(key, "edge-1", &csr), 0);
    int64_t t0 = now_ms();
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, DAY, &cert, &not_after), 0);
    assert_int_equal(ke_pki_cert_info(cert, cn, sizeof(cn), &nb, &na), 0);
    assert_string_equal(cn, "edge-1");
    assert_int_equal(na, not_after);
    assert_true(na >= t0 + DAY * 1000LL - 2000 && na <= t0 + DAY * 1000LL + 2000);
    assert_int_equal(ke_pki_verify_chain(f->ca, cert), 0);
    assert_int_equal(ke_pki_cert_matches_key(cert, key), 0);
    X509 *x = x509_of(cert);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
    assert_non_null(X509_get0_authority_key_id(x));
    X509_free(x);
    free(key);
    free(csr);
    free(cert);
}

static void test_pki_sign_csr_backdates_not_before_for_clock_skew(void **state)
{
    fixture *f = *state;
    int64_t nb = 0, t0 = now_ms();
    char *cert = leaf_for(f, "edge-1", DAY, NULL);
    assert_int_equal(ke_pki_cert_info(cert, NULL, 0, &nb, NULL), 0);
    int64_t want = t0 - KE_PKI_CLOCK_SKEW_SECONDS * 1000LL;
    assert_true(nb >= want - 2000 && nb <= want + 2000);
    free(cert);
}

static void test_pki_sign_csr_ignores_requested_extensions_and_subject(void **state)
{
    fixture *f = *state;
    char *k = NULL;
    assert_int_equal(ke_pki_key_create(&k), 0);
    EVP_PKEY *key = pkey_of(k);
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_REQ_get_subject_name(req);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"system:masters",
                               -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"edge-1", -1,
                               -1, 0);
    X509_REQ_set_pubkey(req, key);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(exts,
                           X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "CA:TRUE"));
    sk_X509_EXTENSION_push(exts,
                           X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:evil"));
    sk_X509_EXTENSION_push(exts,
                           X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, "serverAuth"));
    assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    char *csr = pem_of_req(req), *cert = NULL;
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, DAY, &cert, NULL), 0);
    X509 *x = x509_of(cert);
    assert_int_equal(X509_check_ca(x), 0);
    assert_true(X509_get_ext_by_NID(x, NID_subject_alt_name, -1) < 0);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_CLIENT);
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
    X509_free(x);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    free(k);
    free(csr);
    free(cert);
}

static void test_pki_leaf_never_outlives_its_ca(void **state)
{
    (void)state;
    char *ca = NULL, *ca_key = NULL, *key = NULL, *csr = NULL, *cert = NULL;
    int64_t ca_na = 0, na = 0;
    assert_int_equal(ke_pki_ca_create("short CA", 3600, &ca, &ca_key), 0);
    assert_int_equal(ke_pki_key_create(&key), 0);
    assert_int_equal(ke_pki_csr_create(key, "edge-1", &csr), 0);
    assert_int_equal(ke_pki_sign_csr(ca, ca_key, csr, 365 * DAY, &cert, &na), 0);
    assert_int_equal(ke_pki_cert_info(ca, NULL, 0, NULL, &ca_na), 0);
    assert_int_equal(na, ca_na);
    free(ca);
    free(ca_key);
    free(key);
    free(csr);
    free(cert);
}

/* ---- the CSR key policy ---- */

/* rsa_key makes an RSA key of `bits` with public exponent e. */
static EVP_PKEY *rsa_key(unsigned bits, unsigned long e)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    BIGNUM *bn = BN_new();
    EVP_PKEY *k = NULL;
    assert_non_null(ctx);
    assert_non_null(bn);
    assert_int_equal(BN_set_word(bn, e), 1);
    assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits), 1);
    assert_int_equal(EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, bn), 1);
    assert_int_equal(EVP_PKEY_generate(ctx, &k), 1);
    BN_free(bn);
    EVP_PKEY_CTX_free(ctx);
    return k;
}

/* csr_of makes a CSR for CN edge-1 carrying and signed with key (which it
 * frees). */
static char *csr_of(EVP_PKEY *key)
{
    assert_non_null(key);
    X509_REQ *req = X509_REQ_new();
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                               (const unsigned char *)"edge-1", -1, -1, 0);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    /* Ed25519 signs without a separate digest. */
    const EVP_MD *md = EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256();
    assert_true(X509_REQ_sign(req, key, md) > 0);
    char *pem = pem_of_req(req);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return pem;
}

/* assert_key_refused: the policy refuses csr with a reason holding `says`,
 * and signing it fails with KE_EINVAL and issues nothing. */
static void assert_key_refused(fixture *f, char *csr, const char *says)
{
    char why[160], *cert = NULL;
    assert_int_equal(ke_pki_csr_key_check(csr, why, sizeof(why)), KE_EINVAL);
    if (!strstr(why, says))
        fail_msg("reason \"%s\" does not say \"%s\"", why, says);
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, DAY, &cert, NULL), KE_EINVAL);
    assert_null(cert);
    free(csr);
}

/* assert_key_accepted: the policy accepts csr and the CA signs it. */
static void assert_key_accepted(fixture *f, char *csr)
{
    char why[160], *cert = NULL;
    assert_int_equal(ke_pki_csr_key_check(csr, why, sizeof(why)), 0);
    assert_string_equal(why, "");
    assert_int_equal(ke_pki_sign_csr(f->ca, f->ca_key, csr, DAY, &cert, NULL), 0);
    assert_int_equal(ke_pki_verify_chain(f->ca, cert), 0);
    free(cert);
    free(csr);
}

static void test_pki_csr_with_rsa_exponent_3_is_refused(void **state)
{
    assert_key_refused(*state, csr_of(rsa_key(2048, 3)), "exponent must be 65537");
}

static void test_pki_csr_with_rsa_1024_is_refused(void **state)
{
    assert_key_refused(*state, csr_of(rsa_key(1024, 65537)),
                       "RSA key of 1024 bits; at least 2048 are required");
}

static void test_pki_csr_with_other_curves_is_refused(void **state)
{
    assert_key_refused(*state, csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1")),
                       "curve secp256k1");
    assert_key_refused(*state, csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521")),
                       "only P-256 and P-384");
}

static void test_pki_csr_with_ed25519_is_refused(void **state)
{
    assert_key_refused(*state, csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")), "ED25519 key");
}

static void test_pki_csr_with_rsa_2048_or_p256_or_p384_is_signed(void **state)
{
    assert_key_accepted(*state, csr_of(rsa_key(2048, 65537)));
    assert_key_accepted(*state, csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")));
    assert_key_accepted(*state, csr_of(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384")));
}

static void test_pki_csr_key_check_of_garbage_is_etls(void **state)
{
    (void)state;
    char why[64];
    assert_int_equal(ke_pki_csr_key_check("not a csr", why, sizeof(why)), KE_ETLS);
    assert_int_equal(ke_pki_csr_key_check(NULL, NULL, 0), KE_ETLS);
}

/* ---- chains and hashes ---- */

static void test_pki_cert_from_other_ca_fails_chain(void **state)
{
    fixture *f = *state;
    char *ca2 = NULL, *ca2_key = NULL, *cert = NULL, *key = NULL;
    assert_int_equal(ke_pki_ca_create("other CA", DAY, &ca2, &ca2_key), 0);
    assert_int_equal(ke_pki_client_cert_create(ca2, ca2_key, "edge-1", DAY, &cert, &key), 0);
    assert_int_equal(ke_pki_verify_chain(ca2, cert), 0);
    assert_int_equal(ke_pki_verify_chain(f->ca, cert), KE_ETLS);
    assert_int_equal(ke_pki_verify_chain(f->ca, "garbage"), KE_ETLS);
    free(ca2);
    free(ca2_key);
    free(cert);
    free(key);
}

static void test_pki_ca_hash_is_sha256_of_der(void **state)
{
    fixture *f = *state;
    char hex[KE_PKI_HASH_HEX], want[KE_PKI_HASH_HEX];
    assert_int_equal(ke_pki_ca_hash(f->ca, hex), 0);
    X509 *x = x509_of(f->ca);
    unsigned char *der = NULL, md[32];
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    assert_int_equal(EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(hex, want);
    OPENSSL_free(der);
    X509_free(x);
    assert_int_equal(ke_pki_ca_hash("nope", hex), KE_ETLS);
}

static void test_pki_cert_info_reports_validity_of_ca(void **state)
{
    (void)state;
    char *ca = NULL, *key = NULL, cn[64];
    int64_t nb = 0, na = 0;
    assert_int_equal(ke_pki_ca_create("my CA", 3600, &ca, &key), 0);
    assert_int_equal(ke_pki_cert_info(ca, cn, sizeof(cn), &nb, &na), 0);
    assert_string_equal(cn, "my CA");
    assert_int_equal(na - nb, (3600 + KE_PKI_CLOCK_SKEW_SECONDS) * 1000LL);
    assert_int_equal(ke_pki_cert_info(ca, cn, 3, NULL, NULL), KE_EFULL);
    free(ca);
    free(key);
}

/* ---- tokens ---- */

static char *token_for(fixture *f, int64_t expires)
{
    char *tok = NULL;
    assert_int_equal(ke_pki_token_create(f->ca, SECRET, sizeof(SECRET), expires, &tok), 0);
    return tok;
}

static void test_pki_token_roundtrip(void **state)
{
    fixture *f = *state;
    int64_t exp = (int64_t)time(NULL) + 3600, got = 0;
    char *tok = token_for(f, exp), hash[KE_PKI_HASH_HEX], cahash[KE_PKI_HASH_HEX], why[128];
    assert_true(strlen(tok) < KE_PKI_TOKEN_MAX);
    assert_int_equal(ke_pki_token_parse(tok, hash, &got), 0);
    assert_int_equal(ke_pki_ca_hash(f->ca, cahash), 0);
    assert_string_equal(hash, cahash);
    assert_int_equal(got, exp);
    assert_int_equal(ke_pki_token_verify(tok, f->ca, SECRET, sizeof(SECRET), exp - 1, why,
                                         sizeof(why)),
                     0);
    assert_string_equal(why, "");
    char *tok2 = token_for(f, exp);
    assert_string_not_equal(tok, tok2); /* fresh nonce each time */
    free(tok);
    free(tok2);
}

static void test_pki_token_with_uses_carries_limit_and_id(void **state)
{
    fixture *f = *state;
    int64_t exp = (int64_t)time(NULL) + 3600, got = 0;
    char *tok = NULL, *old = token_for(f, exp), id[KE_PKI_TOKEN_ID_HEX], why[128];
    uint32_t uses = 99;
    assert_int_equal(ke_pki_token_create_uses(f->ca, SECRET, sizeof(SECRET), exp, 3, &tok), 0);
    assert_true(strlen(tok) < KE_PKI_TOKEN_MAX);
    assert_int_equal(ke_pki_token_parse(tok, NULL, &got), 0);
    assert_int_equal(got, exp);
    assert_int_equal(ke_pki_token_uses(tok, id, &uses), 0);
    assert_int_equal(uses, 3);
    assert_int_equal(strlen(id), 16);
    assert_non_null(strstr(tok, id)); /* the id is the token's nonce */
    assert_int_equal(ke_pki_token_verify(tok, f->ca, SECRET, sizeof(SECRET), exp - 1, why,
                                         sizeof(why)),
                     0);
    /* the four-field form made before limits: no limit, still verifies */
    assert_int_equal(ke_pki_token_uses(old, id, &uses), 0);
    assert_int_equal(uses, 0);
    assert_int_equal(ke_pki_token_verify(old, f->ca, SECRET, sizeof(SECRET), exp - 1, why,
                                         sizeof(why)),
                     0);
    /* the limit is signed: raising it breaks the signature */
    char forged[KE_PKI_TOKEN_MAX];
    snprintf(forged, sizeof(forged), "%s", tok);
    char *u = strstr(forged, ".3.");
    assert_non_null(u);
    u[1] = '9';
    assert_int_equal(ke_pki_token_verify(forged, f->ca, SECRET, sizeof(SECRET), exp - 1, why,
                                         sizeof(why)),
                     KE_EPERM);
    assert_string_equal(why, "token signature does not match");
    /* a zero, a leading zero or a limit past the bound is malformed */
    const char *bad[] = {".0.", ".03.", ".1000001."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char t[KE_PKI_TOKEN_MAX + 8];
        snprintf(t, sizeof(t), "%.*s%s%s", (int)(u - forged), forged, bad[i], u + 3);
        assert_int_equal(ke_pki_token_uses(t, NULL, NULL), KE_EINVAL);
        assert_int_equal(ke_pki_token_parse(t, NULL, NULL), KE_EINVAL);
    }
    char *t2 = NULL;
    assert_int_equal(ke_pki_token_create_uses(f->ca, SECRET, sizeof(SECRET), exp,
                                              KE_PKI_TOKEN_USES_MAX + 1, &t2),
                     KE_EINVAL);
    assert_null(t2);
    assert_int_equal(ke_pki_token_create_uses(f->ca, SECRET, sizeof(SECRET), exp,
                                              KE_PKI_TOKEN_USES_MAX, &t2),
                     0);
    assert_true(strlen(t2) < KE_PKI_TOKEN_MAX);
    free(t2);
    free(tok);
    free(old);
}

static void test_pki_token_expired_is_refused(void **state)
{
    fixture *f = *state;
    char *tok = token_for(f, 1000000000), why[128];
    assert_int_equal(ke_pki_token_verify(tok, f->ca, SECRET, sizeof(SECRET), 1000000000, why,
                                         sizeof(why)),
                     KE_EPERM);
    assert_string_equal(why, "token expired at 2001-09-09T01:46:40Z");
    free(tok);
}

static void test_pki_token_for_other_ca_is_refused(void **state)
{
    fixture *f = *state;
    char *ca2 = NULL, *ca2_key = NULL, why[128];
    assert_int_equal(ke_pki_ca_create("other CA", DAY, &ca2, &ca2_key), 0);
    char *tok = token_for(f, (int64_t)time(NULL) + 3600);
    assert_int_equal(
        ke_pki_token_verify(tok, ca2, SECRET, sizeof(SECRET), time(NULL), why, sizeof(why)),
        KE_EPERM);
    assert_string_equal(why, "token is for another CA");
    free(tok);
    free(ca2);
    free(ca2_key);
}

/* expect_refusal verifies `tok` now and checks the reason. */
static void expect_refusal(fixture *f, const char *tok, const char *reason)
{
    char why[128];
    assert_int_equal(
        ke_pki_token_verify(tok, f->ca, SECRET, sizeof(SECRET), time(NULL), why, sizeof(why)),
        KE_EPERM);
    assert_string_equal(why, reason);
}

static void test_pki_token_tampered_is_refused(void **state)
{
    fixture *f = *state;
    char *tok = token_for(f, (int64_t)time(NULL) + 3600);
    size_t n = strlen(tok);
    char t[KE_PKI_TOKEN_MAX];
    /* a later expiry: bump the first digit of the expiry */
    snprintf(t, sizeof(t), "%s", tok);
    t[65] = t[65] == '9' ? '8' : (char)(t[65] + 1);
    expect_refusal(f, t, "token signature does not match");
    /* another nonce */
    snprintf(t, sizeof(t), "%s", tok);
    char *nonce = strchr(t + 65, '.') + 1;
    nonce[0] = nonce[0] == 'a' ? 'b' : 'a';
    expect_refusal(f, t, "token signature does not match");
    /* another MAC */
    snprintf(t, sizeof(t), "%s", tok);
    t[n - 1] = t[n - 1] == '0' ? '1' : '0';
    expect_refusal(f, t, "token signature does not match");
    free(tok);
}

static void test_pki_token_with_other_secret_is_refused(void **state)
{
    fixture *f = *state;
    uint8_t other[32];
    memset(other, 7, sizeof(other));
    char *tok = NULL, why[128];
    assert_int_equal(
        ke_pki_token_create(f->ca, other, sizeof(other), (int64_t)time(NULL) + 60, &tok), 0);
    assert_int_equal(
        ke_pki_token_verify(tok, f->ca, SECRET, sizeof(SECRET), time(NULL), why, sizeof(why)),
        KE_EPERM);
    assert_string_equal(why, "token signature does not match");
    free(tok);
}

static void test_pki_token_malformed_is_refused(void **state)
{
    fixture *f = *state;
    char *tok = token_for(f, (int64_t)time(NULL) + 3600);
    char t[2 * KE_PKI_TOKEN_MAX];
    const char *bad[] = {"", "abc", "a.b.c.d", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(ke_pki_token_parse(bad[i], NULL, NULL), KE_EINVAL);
        expect_refusal(f, bad[i], "malformed token");
    }
    /* upper-case hex */
    snprintf(t, sizeof(t), "%s", tok);
    for (char *p = t; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(ke_pki_token_parse(t, NULL, NULL), KE_EINVAL);
    /* a fifth part */
    snprintf(t, sizeof(t), "%s.00", tok);
    assert_int_equal(ke_pki_token_parse(t, NULL, NULL), KE_EINVAL);
    /* a leading zero in the expiry */
    snprintf(t, sizeof(t), "%.65s0%s", tok, tok + 65);
    assert_int_equal(ke_pki_token_parse(t, NULL, NULL), KE_EINVAL);
    /* a short CA hash */
    assert_int_equal(ke_pki_token_parse(tok + 1, NULL, NULL), KE_EINVAL);
    /* trailing newline, as from a careless copy */
    snprintf(t, sizeof(t), "%s\n", tok);
    assert_int_equal(ke_pki_token_parse(t, NULL, NULL), KE_EINVAL);
    assert_int_equal(ke_pki_token_parse(tok, NULL, NULL), 0);
    free(tok);
}

static void test_pki_token_create_refuses_short_secret(void **state)
{
    fixture *f = *state;
    char *tok = (char *)1;
    assert_int_equal(ke_pki_token_create(f->ca, SECRET, 8, time(NULL) + 60, &tok), KE_EINVAL);
    assert_null(tok);
    assert_int_equal(ke_pki_token_create(f->ca, SECRET, sizeof(SECRET), 0, &tok), KE_EINVAL);
}

static void test_pki_secret_read_decodes_hex_file(void **state)
{
    fixture *f = *state;
    char path[128], hex[65];
    uint8_t buf[KE_PKI_SECRET_MAX];
    size_t n = 0;
    snprintf(path, sizeof(path), "%s/token.secret", f->dir);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", SECRET[i]);
    char content[80];
    snprintf(content, sizeof(content), "%s\n", hex);
    assert_int_equal(ke_pki_write_file(path, content, strlen(content), 0600), 0);
    assert_int_equal(ke_pki_secret_read(path, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 32);
    assert_memory_equal(buf, SECRET, 32);
    assert_int_equal(ke_pki_write_file(path, "zz", 2, 0600), 0);
    assert_int_equal(ke_pki_secret_read(path, buf, sizeof(buf), &n), KE_EINVAL);
    snprintf(path, sizeof(path), "%s/missing", f->dir);
    assert_int_equal(ke_pki_secret_read(path, buf, sizeof(buf), &n), KE_ENOTFOUND);
}

/* ---- files and randomness ---- */

/* dir_entries counts the entries of dir other than . and .. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_pki_write_file_is_atomic_and_mode(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/ca.key", f->dir);
    mode_t old = umask(0077); /* the mode given wins over the umask */
    assert_int_equal(ke_pki_write_file(path, "first version", 13, 0644), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(ke_pki_write_file(path, "second", 6, 0600), 0);
    umask(old);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *data = NULL;
    size_t n = 0;
    assert_int_equal(ke_pki_read_file(path, &data, &n), 0);
    assert_int_equal(n, 6);
    assert_string_equal(data, "second");
    free(data);
    assert_int_equal(dir_entries(f->dir), 1); /* no temporary file left behind */
}

static void test_pki_write_file_failure_leaves_target_and_no_temp(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/busy", f->dir);
    assert_int_equal(mkdir(path, 0700), 0); /* rename over a directory fails */
    assert_int_equal(ke_pki_write_file(path, "x", 1, 0600), KE_EIO);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(dir_entries(f->dir), 1);
    snprintf(path, sizeof(path), "%s/no/such/dir/file", f->dir);
    assert_int_equal(ke_pki_write_file(path, "x", 1, 0600), KE_EIO);
}

static void test_pki_read_file_is_bounded_to_1_mib(void **state)
{
    fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/big", f->dir);
    char *big = calloc(1, KE_PKI_FILE_MAX + 1);
    memset(big, 'x', KE_PKI_FILE_MAX + 1);
    assert_int_equal(ke_pki_write_file(path, big, KE_PKI_FILE_MAX, 0600), 0);
    char *data = NULL;
    size_t n = 0;
    assert_int_equal(ke_pki_read_file(path, &data, &n), 0);
    assert_int_equal(n, KE_PKI_FILE_MAX);
    assert_int_equal(data[n], '\0');
    free(data);
    FILE *fp = fopen(path, "a");
    fputc('x', fp);
    fclose(fp);
    assert_int_equal(ke_pki_read_file(path, &data, &n), KE_EFULL);
    assert_null(data);
    free(big);
    snprintf(path, sizeof(path), "%s/missing", f->dir);
    assert_int_equal(ke_pki_read_file(path, &data, &n), KE_ENOTFOUND);
}

static void test_pki_random_hex_is_lowercase_distinct_and_bounded(void **state)
{
    (void)state;
    char a[33], b[33], big[2 * KE_PKI_RANDOM_MAX + 3];
    assert_int_equal(ke_pki_random_hex(16, a), 0);
    assert_int_equal(ke_pki_random_hex(16, b), 0);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
    assert_int_equal(ke_pki_random_hex(0, a), KE_EINVAL);
    assert_int_equal(ke_pki_random_hex(KE_PKI_RANDOM_MAX + 1, big), KE_EINVAL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static void test_pki_fingerprint_matches_the_parsed_hash(void **state)
{
    (void)state;
    char *ca = NULL, *key = NULL, a[KE_PKI_HASH_HEX], b[KE_PKI_HASH_HEX];
    assert_int_equal(ke_pki_ca_create("fp", 3600, &ca, &key), 0);
    assert_int_equal(ke_pki_ca_hash(ca, a), 0);
    assert_int_equal(ke_pki_cert_fingerprint(ca, b), 0);
    assert_string_equal(a, b);
    assert_int_equal(ke_pki_cert_fingerprint(key, b), KE_ETLS); /* a key is not a certificate */
    assert_int_equal(ke_pki_cert_fingerprint("not pem", b), KE_ETLS);
    free(ca);
    free(key);
}

int main(void)
{
    ke_log_set_level(KE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pki_fingerprint_matches_the_parsed_hash),
        T(test_pki_key_create_makes_pkcs8_ec_p256),
        T(test_pki_ca_is_self_signed_ca_with_key_usage_and_ski),
        T(test_pki_serials_are_random_128_bit),
        T(test_pki_ca_create_refuses_bad_arguments),
        T(test_pki_server_cert_has_sans_and_server_auth_only),
        T(test_pki_server_cert_bad_san_is_refused),
        T(test_pki_issuing_with_a_key_that_is_not_the_cas_is_refused),
        T(test_pki_client_cert_has_cn_and_client_auth_only),
        T(test_pki_csr_cn_returns_the_requested_cn),
        T(test_pki_csr_with_bad_signature_is_refused),
        T(test_pki_csr_malformed_is_refused),
        T(test_pki_sign_csr_keeps_cn_and_chains_to_ca),
        T(test_pki_sign_csr_backdates_not_before_for_clock_skew),
        T(test_pki_sign_csr_ignores_requested_extensions_and_subject),
        T(test_pki_leaf_never_outlives_its_ca),
        T(test_pki_csr_with_rsa_exponent_3_is_refused),
        T(test_pki_csr_with_rsa_1024_is_refused),
        T(test_pki_csr_with_other_curves_is_refused),
        T(test_pki_csr_with_ed25519_is_refused),
        T(test_pki_csr_with_rsa_2048_or_p256_or_p384_is_signed),
        T(test_pki_csr_key_check_of_garbage_is_etls),
        T(test_pki_cert_from_other_ca_fails_chain),
        T(test_pki_ca_hash_is_sha256_of_der),
        T(test_pki_cert_info_reports_validity_of_ca),
        T(test_pki_token_roundtrip),
        T(test_pki_token_with_uses_carries_limit_and_id),
        T(test_pki_token_expired_is_refused),
        T(test_pki_token_for_other_ca_is_refused),
        T(test_pki_token_tampered_is_refused),
        T(test_pki_token_with_other_secret_is_refused),
        T(test_pki_token_malformed_is_refused),
        T(test_pki_token_create_refuses_short_secret),
        T(test_pki_secret_read_decodes_hex_file),
        T(test_pki_write_file_is_atomic_and_mode),
        T(test_pki_write_file_failure_leaves_target_and_no_temp),
        T(test_pki_read_file_is_bounded_to_1_mib),
        T(test_pki_random_hex_is_lowercase_distinct_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
