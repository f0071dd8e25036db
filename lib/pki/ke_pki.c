/*
 * ke_pki.c — certificates, CSRs, join tokens and atomic key files with
 * OpenSSL 3 (see ke_pki.h for the formats and the contracts).
 *
 * Map of the file:
 *   PEM <-> OpenSSL objects   pem_* / *_load / *_to_pem helpers
 *   certificate building      cert_begin (serial, names, validity),
 *                             ext_add, sans_add, leaf_issue
 *   public functions          in the order of ke_pki.h
 *
 * Every OpenSSL failure goes through ossl_fail(), which logs the OpenSSL
 * error queue at debug level and empties it: a stale entry left on the
 * thread's queue would otherwise be reported later by an unrelated TLS
 * handshake in grpc.
 */
#include "ke_pki.h"

#include "ke_err.h"
#include "ke_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define LOG_MOD "pki"
#define SERIAL_BYTES 16 /* 128-bit random serial */

/* ---- small helpers ---- */

/* ossl_fail logs and clears OpenSSL's error queue; returns KE_ETLS. */
static int ossl_fail(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (e && ke_log_get_level() <= KE_LOG_DEBUG) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        ke_log_debug(LOG_MOD, "%s failed openssl=\"%s\"", what, buf);
    } else {
        ke_log_debug(LOG_MOD, "%s failed", what);
    }
    ERR_clear_error();
    return KE_ETLS;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* hex_decode decodes exactly n hex chars (n even) into out; -1 if not hex. */
static int hex_decode(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        int hi = hex_value(in[i]), lo = hex_value(in[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* is_lower_hex: s[0..n) are all of [0-9a-f]. */
static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* cn_ok: 1..KE_PKI_CN_MAX bytes, no ASCII control characters. */
static int cn_ok(const char *cn)
{
    if (!cn)
        return 0;
    size_t n = strnlen(cn, KE_PKI_CN_MAX + 1);
    if (n == 0 || n > KE_PKI_CN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)cn[i] < 0x20 || cn[i] == 0x7f)
            return 0;
    return 1;
}

/* orgs_ok: NULL, or at most KE_PKI_ORGS_MAX strings each as cn_ok. */
static int orgs_ok(const char *const *orgs)
{
    for (size_t i = 0; orgs && orgs[i]; i++)
        if (i >= KE_PKI_ORGS_MAX || !cn_ok(orgs[i]))
            return 0;
    return 1;
}

static int valid_seconds_ok(int64_t s)
{
    return s > 0 && s <= KE_PKI_MAX_VALID_SECONDS;
}

/* pem_ok: a non-NULL, NUL-terminated string within KE_PKI_PEM_MAX. */
static int pem_ok(const char *pem)
{
    return pem && strnlen(pem, KE_PKI_PEM_MAX + 1) <= KE_PKI_PEM_MAX;
}

/* no_passphrase stops OpenSSL from prompting on the terminal for an
 * encrypted key: we only handle unencrypted keys. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static X509 *cert_load(const char *pem)
{
    if (!pem_ok(pem))
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!x)
        ossl_fail("read certificate");
    return x;
}

static EVP_PKEY *key_load(const char *pem)
{
    if (!pem_ok(pem))
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!k)
        ossl_fail("read private key");
    return k;
}

static X509_REQ *csr_load(const char *pem)
{
    if (!pem_ok(pem))
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509_REQ *r = b ? PEM_read_bio_X509_REQ(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!r)
        ossl_fail("read certificate request");
    return r;
}

/* bio_take copies a memory BIO's contents into a fresh NUL-terminated
 * string. */
static int bio_take(BIO *b, char **out)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    if (n <= 0 || !p)
        return ossl_fail("PEM encode");
    char *s = malloc((size_t)n + 1);
    if (!s)
        return KE_ENOMEM;
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    *out = s;
    return 0;
}

static int cert_to_pem(X509 *x, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    int rc = b && PEM_write_bio_X509(b, x) == 1 ? bio_take(b, out) : ossl_fail("write certificate");
    BIO_free(b);
    return rc;
}

static int key_to_pem(EVP_PKEY *k, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY"). */
    int rc = b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1
                 ? bio_take(b, out)
                 : ossl_fail("write private key");
    BIO_free(b);
    return rc;
}

static EVP_PKEY *key_generate(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!k)
        ossl_fail("generate EC P-256 key");
    return k;
}

/* name_cn copies the one CN of `name` as UTF-8 into buf[len]. Returns 0,
 * KE_ENOTFOUND (no CN), KE_ETLS (several CNs, or one with a NUL in it, or
 * not convertible), KE_EFULL. */
static int name_cn(const X509_NAME *name, char *buf, size_t len)
{
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0)
        return KE_ENOTFOUND;
    if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
        return KE_ETLS; /* ambiguous identity: refuse rather than pick one */
    const ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0)
        return ossl_fail("decode common name");
    int rc = 0;
    if (memchr(utf8, '\0', (size_t)n))
        rc = KE_ETLS;
    else if ((size_t)n >= len)
        rc = KE_EFULL;
    else {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
    }
    OPENSSL_free(utf8);
    return rc;
}

/* asn1_ms converts an ASN1_TIME into ms since the epoch. */
static int asn1_ms(const ASN1_TIME *t, int64_t *ms)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return ossl_fail("read certificate time");
    *ms = (int64_t)timegm(&tm) * 1000;
    return 0;
}

/* ---- certificate building ---- */

/* cert_begin starts a v3 certificate for `pub` with a random serial,
 * subject CN=cn, and validity [now - skew, now + valid_seconds]. The issuer
 * name is left to the caller. */
static int cert_begin(EVP_PKEY *pub, const char *cn, int64_t valid_seconds, X509 **out)
{
    int rc = KE_ETLS;
    unsigned char serial[SERIAL_BYTES];
    BIGNUM *bn = NULL;
    X509 *x = X509_new();
    if (!x) {
        rc = KE_ENOMEM;
        goto out;
    }
    if (RAND_bytes(serial, sizeof(serial)) != 1) {
        rc = ossl_fail("random serial");
        goto out;
    }
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (bn && BN_is_zero(bn)) /* RFC 5280: positive; odds 2^-128, but be exact */
        BN_one(bn);
    time_t now = time(NULL);
    if (!bn || X509_set_version(x, X509_VERSION_3) != 1 ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_set_pubkey(x, pub) != 1 ||
        !ASN1_TIME_set(X509_getm_notBefore(x), now - KE_PKI_CLOCK_SKEW_SECONDS) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)valid_seconds)) {
        rc = ossl_fail("build certificate");
        goto out;
    }
    *out = x;
    x = NULL;
    rc = 0;
out:
    BN_free(bn);
    X509_free(x);
    return rc;
}

/* ext_add adds one extension given in openssl.cnf syntax ("critical,CA:TRUE"). */
static int ext_add(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    memset(&ctx, 0, sizeof(ctx));
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : ossl_fail("add certificate extension");
}

/* dns_ok: 1..253 chars of [A-Za-z0-9.-_*]. */
static int dns_ok(const char *s)
{
    size_t n = strnlen(s, 254);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == '*'))
            return 0;
    }
    return 1;
}

/* san_push appends one SAN (see ke_pki_server_cert_create for the forms). */
static int san_push(GENERAL_NAMES *gens, const char *san)
{
    int want_ip = -1; /* -1: guess, 0: DNS, 1: IP */
    if (strncmp(san, "DNS:", 4) == 0) {
        san += 4;
        want_ip = 0;
    } else if (strncmp(san, "IP:", 3) == 0) {
        san += 3;
        want_ip = 1;
    }
    unsigned char addr[16];
    int alen = 0;
    if (want_ip != 0) {
        if (inet_pton(AF_INET, san, addr) == 1)
            alen = 4;
        else if (inet_pton(AF_INET6, san, addr) == 1)
            alen = 16;
        else if (want_ip == 1)
            return KE_EINVAL;
    }
    if (!alen && !dns_ok(san))
        return KE_EINVAL;
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_STRING *v = alen ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    if (!g || !v || ASN1_STRING_set(v, alen ? (const void *)addr : (const void *)san,
                                    alen ? alen : (int)strlen(san)) != 1) {
        GENERAL_NAME_free(g);
        ASN1_STRING_free(v);
        return KE_ENOMEM;
    }
    GENERAL_NAME_set0_value(g, alen ? GEN_IPADD : GEN_DNS, v);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return KE_ENOMEM;
    }
    return 0;
}

/* sans_add adds the subjectAltName extension built from sans (may be NULL
 * or empty: then no extension). */
static int sans_add(X509 *x, const char *const *sans)
{
    if (!sans || !sans[0])
        return 0;
    int rc = 0;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    if (!gens)
        return KE_ENOMEM;
    size_t n = 0;
    for (; sans[n] && rc == 0; n++)
        rc = n >= KE_PKI_MAX_SANS ? KE_EINVAL : san_push(gens, sans[n]);
    if (rc == 0 && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
        rc = ossl_fail("add subjectAltName");
    GENERAL_NAMES_free(gens);
    return rc;
}

/* ca_load_pair reads the CA certificate and key and checks that they
 * belong together and that the certificate is a CA. */
static int ca_load_pair(const char *ca_pem, const char *ca_key_pem, X509 **ca, EVP_PKEY **key)
{
    *ca = cert_load(ca_pem);
    *key = key_load(ca_key_pem);
    if (*ca && *key && X509_check_private_key(*ca, *key) == 1 && X509_check_ca(*ca) >= 1)
        return 0;
    X509_free(*ca);
    EVP_PKEY_free(*key);
    *ca = NULL;
    *key = NULL;
    return ossl_fail("load CA certificate and key");
}

/* leaf_issue signs a leaf certificate for `pub` with the CA: CN=cn, the
 * extended key usage `eku`, optional SANs. Its notAfter never passes the
 * CA's. On 0 *out is the caller's. */
static int leaf_issue(const char *ca_pem, const char *ca_key_pem, EVP_PKEY *pub, const char *cn,
                      const char *const *orgs, const char *const *sans, const char *eku,
                      int64_t valid_seconds, X509 **out)
{
    if (!cn_ok(cn) || !valid_seconds_ok(valid_seconds) || !orgs_ok(orgs))
        return KE_EINVAL;
    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *cakey = NULL;
    int rc = ca_load_pair(ca_pem, ca_key_pem, &ca, &cakey);
    if (rc != 0)
        goto out;
    if ((rc = cert_begin(pub, cn, valid_seconds, &x)) != 0)
        goto out;
    for (size_t i = 0; orgs && orgs[i]; i++)
        if (X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_organizationName,
                                       MBSTRING_UTF8, (const unsigned char *)orgs[i], -1, -1,
                                       0) != 1) {
            rc = ossl_fail("add organization");
            goto out;
        }
    if (X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1) {
        rc = ossl_fail("set issuer");
        goto out;
    }
    if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
        X509_set1_notAfter(x, X509_get0_notAfter(ca)) != 1) {
        rc = ossl_fail("clamp notAfter");
        goto out;
    }
    /* keyEncipherment only means something for RSA keys. */
    const char *ku = EVP_PKEY_is_a(pub, "RSA") ? "critical,digitalSignature,keyEncipherment"
                                                : "critical,digitalSignature";
    if ((rc = ext_add(x, ca, NID_basic_constraints, "critical,CA:FALSE")) != 0 ||
        (rc = ext_add(x, ca, NID_key_usage, ku)) != 0 ||
        (rc = ext_add(x, ca, NID_ext_key_usage, eku)) != 0 ||
        (rc = ext_add(x, ca, NID_subject_key_identifier, "hash")) != 0 ||
        (rc = ext_add(x, ca, NID_authority_key_identifier, "keyid:always")) != 0 ||
        (rc = sans_add(x, sans)) != 0)
        goto out;
    if (X509_sign(x, cakey, EVP_sha256()) <= 0) {
        rc = ossl_fail("sign certificate");
        goto out;
    }
    *out = x;
    x = NULL;
out:
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    return rc;
}

/* leaf_with_new_key makes a key and a leaf for it, both as PEM. */
static int leaf_with_new_key(const char *ca_pem, const char *ca_key_pem, const char *cn,
                             const char *const *orgs, const char *const *sans, const char *eku, int64_t valid_seconds,
                             char **cert_pem, char **key_pem)
{
    if (!cert_pem || !key_pem)
        return KE_EINVAL;
    *cert_pem = *key_pem = NULL;
    X509 *x = NULL;
    int rc = KE_ETLS;
    EVP_PKEY *k = key_generate();
    if (!k)
        goto out;
    if ((rc = leaf_issue(ca_pem, ca_key_pem, k, cn, orgs, sans, eku, valid_seconds, &x)) != 0 ||
        (rc = cert_to_pem(x, cert_pem)) != 0 || (rc = key_to_pem(k, key_pem)) != 0)
        goto out;
out:
    if (rc != 0) {
        free(*cert_pem);
        *cert_pem = NULL;
    }
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

/* ---- keys and certificates ---- */

int ke_pki_key_create(char **key_pem)
{
    if (!key_pem)
        return KE_EINVAL;
    *key_pem = NULL;
    EVP_PKEY *k = key_generate();
    if (!k)
        return KE_ETLS;
    int rc = key_to_pem(k, key_pem);
    EVP_PKEY_free(k);
    return rc;
}

int ke_pki_ca_create(const char *cn, int64_t valid_seconds, char **ca_pem, char **ca_key_pem)
{
    if (!ca_pem || !ca_key_pem)
        return KE_EINVAL;
    *ca_pem = *ca_key_pem = NULL;
    if (!cn_ok(cn) || !valid_seconds_ok(valid_seconds))
        return KE_EINVAL;
    X509 *x = NULL;
    int rc = KE_ETLS;
    EVP_PKEY *k = key_generate();
    if (!k)
        goto out;
    if ((rc = cert_begin(k, cn, valid_seconds, &x)) != 0)
        goto out;
    if (X509_set_issuer_name(x, X509_get_subject_name(x)) != 1) {
        rc = ossl_fail("set issuer");
        goto out;
    }
    if ((rc = ext_add(x, x, NID_basic_constraints, "critical,CA:TRUE")) != 0 ||
        (rc = ext_add(x, x, NID_key_usage, "critical,keyCertSign,cRLSign")) != 0 ||
        (rc = ext_add(x, x, NID_subject_key_identifier, "hash")) != 0)
        goto out;
    if (X509_sign(x, k, EVP_sha256()) <= 0) {
        rc = ossl_fail("self-sign CA");
        goto out;
    }
    if ((rc = cert_to_pem(x, ca_pem)) != 0 || (rc = key_to_pem(k, ca_key_pem)) != 0)
        goto out;
out:
    if (rc != 0) {
        free(*ca_pem);
        *ca_pem = NULL;
    }
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

int ke_pki_server_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                              const char *const *sans, int64_t valid_seconds, char **cert_pem,
                              char **key_pem)
{
    return leaf_with_new_key(ca_pem, ca_key_pem, cn, NULL, sans, "serverAuth", valid_seconds, cert_pem,
                             key_pem);
}

int ke_pki_client_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                              int64_t valid_seconds, char **cert_pem, char **key_pem)
{
    return leaf_with_new_key(ca_pem, ca_key_pem, cn, NULL, NULL, "clientAuth", valid_seconds,
                             cert_pem, key_pem);
}

int ke_pki_user_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                            const char *const *orgs, int64_t valid_seconds, char **cert_pem,
                            char **key_pem)
{
    return leaf_with_new_key(ca_pem, ca_key_pem, cn, orgs, NULL, "clientAuth", valid_seconds,
                             cert_pem, key_pem);
}

int ke_pki_csr_create(const char *key_pem, const char *cn, char **csr_pem)
{
    if (!csr_pem)
        return KE_EINVAL;
    *csr_pem = NULL;
    if (!cn_ok(cn))
        return KE_EINVAL;
    int rc = KE_ETLS;
    BIO *b = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *k = key_load(key_pem);
    if (!k)
        goto out;
    req = X509_REQ_new();
    if (!req) {
        rc = KE_ENOMEM;
        goto out;
    }
    if (X509_REQ_set_version(req, 0) != 1 ||
        X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(req), NID_commonName, MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_REQ_set_pubkey(req, k) != 1 || X509_REQ_sign(req, k, EVP_sha256()) <= 0) {
        rc = ossl_fail("build certificate request");
        goto out;
    }
    b = BIO_new(BIO_s_mem());
    rc = b && PEM_write_bio_X509_REQ(b, req) == 1 ? bio_take(b, csr_pem)
                                                   : ossl_fail("write certificate request");
out:
    BIO_free(b);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return rc;
}

/* key_policy checks a CSR's public key against the keys this CA signs
 * (ke_pki.h): RSA of KE_PKI_RSA_MIN_BITS or more with e = 65537, or EC on
 * P-256 or P-384. Returns 0, or KE_EINVAL with the reason in why. */
static int key_policy(EVP_PKEY *pub, char *why, size_t whylen)
{
    if (EVP_PKEY_is_a(pub, "RSA")) {
        int bits = EVP_PKEY_get_bits(pub);
        BIGNUM *e = NULL;
        int e_ok = EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e) == 1 &&
                   BN_is_word(e, KE_PKI_RSA_EXPONENT);
        BN_free(e);
        ERR_clear_error();
        if (bits < KE_PKI_RSA_MIN_BITS) {
            snprintf(why, whylen, "RSA key of %d bits; at least %d are required", bits,
                     KE_PKI_RSA_MIN_BITS);
            return KE_EINVAL;
        }
        if (!e_ok) {
            snprintf(why, whylen, "RSA public exponent must be 65537");
            return KE_EINVAL;
        }
        return 0;
    }
    if (EVP_PKEY_is_a(pub, "EC")) {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                           sizeof(group), &glen) != 1)
            group[0] = '\0'; /* explicit curve parameters: no name, refused below */
        ERR_clear_error();
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0)
            return 0;
        snprintf(why, whylen, "EC key on curve %s; only P-256 and P-384 are accepted",
                 group[0] ? group : "(explicit parameters)");
        return KE_EINVAL;
    }
    const char *type = EVP_PKEY_get0_type_name(pub);
    snprintf(why, whylen, "%s key; only RSA (at least %d bits, e = 65537) and EC P-256/P-384 "
                          "are accepted",
             type ? type : "unknown", KE_PKI_RSA_MIN_BITS);
    return KE_EINVAL;
}

/* csr_load_verified parses a CSR and checks its self-signature. */
static X509_REQ *csr_load_verified(const char *csr_pem)
{
    X509_REQ *req = csr_load(csr_pem);
    if (!req)
        return NULL;
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req); /* borrowed */
    if (!pub || X509_REQ_verify(req, pub) != 1) {
        ossl_fail("verify certificate request signature");
        X509_REQ_free(req);
        return NULL;
    }
    return req;
}

int ke_pki_csr_cn(const char *csr_pem, char *cn, size_t len)
{
    if (!csr_pem || !cn || len == 0)
        return KE_EINVAL;
    cn[0] = '\0';
    X509_REQ *req = csr_load_verified(csr_pem);
    if (!req)
        return KE_ETLS;
    int rc = name_cn(X509_REQ_get_subject_name(req), cn, len);
    if (rc == KE_ENOTFOUND)
        rc = KE_ETLS;
    if (rc != 0)
        cn[0] = '\0';
    X509_REQ_free(req);
    return rc;
}

int ke_pki_csr_key_check(const char *csr_pem, char *why, size_t whylen)
{
    char dummy[1];
    if (!why || whylen == 0) {
        why = dummy;
        whylen = sizeof(dummy);
    }
    why[0] = '\0';
    X509_REQ *req = csr_load(csr_pem);
    if (!req) {
        snprintf(why, whylen, "not a PKCS#10 request");
        return KE_ETLS;
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req); /* borrowed from req */
    int rc = pub ? key_policy(pub, why, whylen) : KE_ETLS;
    if (!pub)
        snprintf(why, whylen, "no readable public key");
    ERR_clear_error();
    X509_REQ_free(req);
    return rc;
}

int ke_pki_sign_csr(const char *ca_pem, const char *ca_key_pem, const char *csr_pem,
                    int64_t valid_seconds, char **cert_pem, int64_t *not_after_ms)
{
    return ke_pki_sign_csr_as(ca_pem, ca_key_pem, csr_pem, NULL, NULL, valid_seconds, cert_pem,
                              not_after_ms);
}

int ke_pki_sign_csr_as(const char *ca_pem, const char *ca_key_pem, const char *csr_pem,
                       const char *cn_as, const char *const *orgs, int64_t valid_seconds,
                       char **cert_pem, int64_t *not_after_ms)
{
    if (!cert_pem)
        return KE_EINVAL;
    *cert_pem = NULL;
    if (!valid_seconds_ok(valid_seconds))
        return KE_EINVAL;
    char cn[KE_PKI_CN_MAX + 1];
    X509 *x = NULL;
    X509_REQ *req = NULL;
    int rc;
    /* The key policy first: it is cheap, and a refused key is not worth a
     * signature check. */
    char why[160];
    if ((rc = ke_pki_csr_key_check(csr_pem, why, sizeof(why))) != 0) {
        ke_log_debug(LOG_MOD, "refusing CSR key: %s", why);
        goto out;
    }
    rc = KE_ETLS;
    req = csr_load_verified(csr_pem);
    if (!req)
        goto out;
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req); /* borrowed from req */
    if (cn_as)
        snprintf(cn, sizeof(cn), "%s", cn_as);
    else if (name_cn(X509_REQ_get_subject_name(req), cn, sizeof(cn)) != 0 || !cn_ok(cn))
        goto out; /* no CN, or not one we would issue: KE_ETLS */
    if ((rc = leaf_issue(ca_pem, ca_key_pem, pub, cn, orgs, NULL, "clientAuth", valid_seconds,
                         &x)) != 0)
        goto out;
    if (not_after_ms && (rc = asn1_ms(X509_get0_notAfter(x), not_after_ms)) != 0)
        goto out;
    rc = cert_to_pem(x, cert_pem);
out:
    X509_free(x);
    X509_REQ_free(req);
    return rc;
}

int ke_pki_cert_info(const char *cert_pem, char *cn, size_t cnlen, int64_t *not_before_ms,
                     int64_t *not_after_ms)
{
    if (cn && cnlen)
        cn[0] = '\0';
    X509 *x = cert_load(cert_pem);
    if (!x)
        return KE_ETLS;
    int rc = 0;
    if (cn && cnlen) {
        rc = name_cn(X509_get_subject_name(x), cn, cnlen);
        if (rc == KE_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0 && not_before_ms)
        rc = asn1_ms(X509_get0_notBefore(x), not_before_ms);
    if (rc == 0 && not_after_ms)
        rc = asn1_ms(X509_get0_notAfter(x), not_after_ms);
    X509_free(x);
    return rc;
}

int ke_pki_cert_subject(const char *cert_pem, char *cn, size_t cnlen,
                        char orgs[][KE_PKI_CN_MAX + 1], size_t max_orgs, size_t *n_orgs)
{
    if (!cn || cnlen == 0 || !n_orgs || (max_orgs && !orgs))
        return KE_EINVAL;
    cn[0] = '\0';
    *n_orgs = 0;
    X509 *x = cert_load(cert_pem);
    if (!x)
        return KE_ETLS;
    const X509_NAME *name = X509_get_subject_name(x);
    int rc = name_cn(name, cn, cnlen);
    for (int idx = -1; rc == 0;) {
        idx = X509_NAME_get_index_by_NID(name, NID_organizationName, idx);
        if (idx < 0)
            break;
        if (*n_orgs == max_orgs) {
            rc = KE_EFULL;
            break;
        }
        const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, d);
        if (n < 0) {
            rc = ossl_fail("decode organization");
            break;
        }
        if (n == 0 || n > KE_PKI_CN_MAX || memchr(utf8, '\0', (size_t)n))
            rc = KE_ETLS; /* empty, too long or with a NUL: not a group we would issue */
        else {
            memcpy(orgs[*n_orgs], utf8, (size_t)n);
            orgs[(*n_orgs)++][n] = '\0';
        }
        OPENSSL_free(utf8);
    }
    if (rc != 0) {
        cn[0] = '\0';
        *n_orgs = 0;
    }
    X509_free(x);
    return rc;
}

int ke_pki_ca_hash(const char *ca_pem, char hex[KE_PKI_HASH_HEX])
{
    if (!hex)
        return KE_EINVAL;
    hex[0] = '\0';
    X509 *x = cert_load(ca_pem);
    if (!x)
        return KE_ETLS;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int rc = X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32 ? 0
                                                                   : ossl_fail("hash certificate");
    if (rc == 0)
        hex_encode(md, n, hex);
    X509_free(x);
    return rc;
}

int ke_pki_cert_fingerprint(const char *cert_pem, char hex[KE_PKI_HASH_HEX])
{
    if (!cert_pem || !hex)
        return KE_EINVAL;
    hex[0] = '\0';
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    int rc = KE_ETLS;
    if (b && PEM_read_bio(b, &name, &header, &der, &len) == 1 && strcmp(name, "CERTIFICATE") == 0) {
        unsigned char md[32];
        if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) == 1) {
            hex_encode(md, sizeof(md), hex);
            rc = 0;
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(b);
    return rc;
}

int ke_pki_verify_chain(const char *ca_pem, const char *cert_pem)
{
    int rc = KE_ETLS;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    X509 *ca = cert_load(ca_pem);
    X509 *leaf = cert_load(cert_pem);
    if (!ca || !leaf)
        goto out;
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    if (!store || !ctx) {
        rc = KE_ENOMEM;
        goto out;
    }
    if (X509_STORE_add_cert(store, ca) != 1 || X509_STORE_CTX_init(ctx, store, leaf, NULL) != 1) {
        rc = ossl_fail("set up verification");
        goto out;
    }
    if (X509_verify_cert(ctx) == 1) {
        rc = 0;
    } else {
        ke_log_debug(LOG_MOD, "certificate does not verify: %s",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        ERR_clear_error();
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(leaf);
    X509_free(ca);
    return rc;
}

int ke_pki_cert_matches_key(const char *cert_pem, const char *key_pem)
{
    X509 *x = cert_load(cert_pem);
    EVP_PKEY *k = key_load(key_pem);
    int rc = x && k && X509_check_private_key(x, k) == 1 ? 0 : ossl_fail("match key to certificate");
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

/* ---- join tokens ---- */

#define TOKEN_HASH_LEN 64
#define TOKEN_NONCE_BYTES 8
#define TOKEN_NONCE_LEN (2 * TOKEN_NONCE_BYTES)
#define TOKEN_MAC_LEN 64
#define TOKEN_EXPIRY_DIGITS 15 /* up to year ~33 million: plenty, and no overflow */
#define TOKEN_USES_DIGITS 7    /* KE_PKI_TOKEN_USES_MAX has 7 */

static int secret_ok(const uint8_t *secret, size_t len)
{
    return secret && len >= KE_PKI_SECRET_MIN && len <= KE_PKI_SECRET_MAX;
}

/* token_mac computes the hex HMAC-SHA256 of msg[len] under secret. */
static int token_mac(const uint8_t *secret, size_t secret_len, const char *msg, size_t len,
                     unsigned char mac[32])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, len, mac, &n) ||
        n != 32)
        return ossl_fail("HMAC-SHA256");
    return 0;
}

int ke_pki_token_create(const char *ca_pem, const uint8_t *secret, size_t secret_len,
                        int64_t expires_unix, char **token)
{
    return ke_pki_token_create_uses(ca_pem, secret, secret_len, expires_unix, 0, token);
}

int ke_pki_token_create_uses(const char *ca_pem, const uint8_t *secret, size_t secret_len,
                             int64_t expires_unix, uint32_t uses, char **token)
{
    if (!token)
        return KE_EINVAL;
    *token = NULL;
    if (!secret_ok(secret, secret_len) || expires_unix <= 0 || expires_unix > 999999999999999LL ||
        uses > KE_PKI_TOKEN_USES_MAX)
        return KE_EINVAL;
    char hash[KE_PKI_HASH_HEX], nonce[TOKEN_NONCE_LEN + 1], buf[KE_PKI_TOKEN_MAX];
    unsigned char mac[32];
    int rc = ke_pki_ca_hash(ca_pem, hash);
    if (rc != 0)
        return rc;
    if ((rc = ke_pki_random_hex(TOKEN_NONCE_BYTES, nonce)) != 0)
        return rc;
    int n = uses ? snprintf(buf, sizeof(buf), "%s.%lld.%s.%u", hash, (long long)expires_unix,
                            nonce, (unsigned)uses)
                 : snprintf(buf, sizeof(buf), "%s.%lld.%s", hash, (long long)expires_unix, nonce);
    if (n < 0 || (size_t)n + 1 + TOKEN_MAC_LEN >= sizeof(buf))
        return KE_EINVAL;
    if ((rc = token_mac(secret, secret_len, buf, (size_t)n, mac)) != 0)
        return rc;
    buf[n] = '.';
    hex_encode(mac, sizeof(mac), buf + n + 1);
    *token = strdup(buf);
    return *token ? 0 : KE_ENOMEM;
}

/* decimal_field parses p[0..n) as a decimal of 1..max_digits digits with
 * no sign and no leading zero (so > 0). Returns 0 or KE_EINVAL. */
static int decimal_field(const char *p, size_t n, size_t max_digits, int64_t *out)
{
    if (n == 0 || n > max_digits || p[0] == '0')
        return KE_EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return KE_EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* token_split checks a token's format and finds its fields: the CA hash
 * (token[0..64)), the expiry, the nonce (the token id) and the number of
 * uses (0 for a four-field token: no limit). */
static int token_split(const char *token, int64_t *expires, const char **nonce, uint32_t *uses)
{
    if (!token || strnlen(token, KE_PKI_TOKEN_MAX) >= KE_PKI_TOKEN_MAX)
        return KE_EINVAL;
    const char *p = token;
    /* CA hash */
    const char *dot = strchr(p, '.');
    if (!dot || dot - p != TOKEN_HASH_LEN || !is_lower_hex(p, TOKEN_HASH_LEN))
        return KE_EINVAL;
    /* expiry: decimal, no sign, no leading zero, > 0 */
    p = dot + 1;
    dot = strchr(p, '.');
    if (!dot || decimal_field(p, (size_t)(dot - p), TOKEN_EXPIRY_DIGITS, expires) != 0)
        return KE_EINVAL;
    /* nonce */
    p = dot + 1;
    dot = strchr(p, '.');
    if (!dot || dot - p != TOKEN_NONCE_LEN || !is_lower_hex(p, TOKEN_NONCE_LEN))
        return KE_EINVAL;
    *nonce = p;
    /* uses, only in the five-field form */
    p = dot + 1;
    dot = strchr(p, '.');
    *uses = 0;
    if (dot) {
        int64_t u = 0;
        if (decimal_field(p, (size_t)(dot - p), TOKEN_USES_DIGITS, &u) != 0 ||
            u > KE_PKI_TOKEN_USES_MAX)
            return KE_EINVAL;
        *uses = (uint32_t)u;
        p = dot + 1;
    }
    /* hmac, and nothing after it */
    if (strlen(p) != TOKEN_MAC_LEN || !is_lower_hex(p, TOKEN_MAC_LEN))
        return KE_EINVAL;
    return 0;
}

int ke_pki_token_parse(const char *token, char cahash[KE_PKI_HASH_HEX], int64_t *expires_unix)
{
    int64_t exp = 0;
    const char *nonce = NULL;
    uint32_t uses = 0;
    if (token_split(token, &exp, &nonce, &uses) != 0)
        return KE_EINVAL;
    if (cahash) {
        memcpy(cahash, token, TOKEN_HASH_LEN);
        cahash[TOKEN_HASH_LEN] = '\0';
    }
    if (expires_unix)
        *expires_unix = exp;
    return 0;
}

int ke_pki_token_uses(const char *token, char id[KE_PKI_TOKEN_ID_HEX], uint32_t *uses)
{
    int64_t exp = 0;
    const char *nonce = NULL;
    uint32_t u = 0;
    if (token_split(token, &exp, &nonce, &u) != 0)
        return KE_EINVAL;
    if (id) {
        memcpy(id, nonce, TOKEN_NONCE_LEN);
        id[TOKEN_NONCE_LEN] = '\0';
    }
    if (uses)
        *uses = u;
    return 0;
}

static int refuse(char *why, size_t whylen, const char *reason)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", reason);
    return KE_EPERM;
}

int ke_pki_token_verify(const char *token, const char *ca_pem, const uint8_t *secret,
                        size_t secret_len, int64_t now_unix, char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!secret_ok(secret, secret_len))
        return KE_EINVAL;
    char tok_hash[KE_PKI_HASH_HEX], ca_hash[KE_PKI_HASH_HEX];
    int64_t expires = 0;
    if (ke_pki_token_parse(token, tok_hash, &expires) != 0)
        return refuse(why, whylen, "malformed token");
    int rc = ke_pki_ca_hash(ca_pem, ca_hash);
    if (rc != 0)
        return rc;
    /* Both hashes are public: no need for a constant-time compare here. */
    if (strcmp(tok_hash, ca_hash) != 0)
        return refuse(why, whylen, "token is for another CA");
    const char *mac_hex = strrchr(token, '.') + 1; /* parse guaranteed 3 or 4 dots */
    unsigned char want[32], got[32];
    if ((rc = token_mac(secret, secret_len, token, (size_t)(mac_hex - 1 - token), want)) != 0)
        return rc;
    hex_decode(mac_hex, TOKEN_MAC_LEN, got); /* parse checked it is hex */
    if (CRYPTO_memcmp(want, got, sizeof(want)) != 0)
        return refuse(why, whylen, "token signature does not match");
    if (now_unix >= expires) {
        char when[32], msg[64];
        time_t t = (time_t)expires;
        struct tm tm;
        if (!gmtime_r(&t, &tm) || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
            snprintf(when, sizeof(when), "%lld", (long long)expires);
        snprintf(msg, sizeof(msg), "token expired at %s", when);
        return refuse(why, whylen, msg);
    }
    return 0;
}

int ke_pki_secret_read(const char *path, uint8_t *secret, size_t cap, size_t *len)
{
    if (!secret || !len)
        return KE_EINVAL;
    *len = 0;
    char *data = NULL;
    size_t n = 0;
    int rc = ke_pki_read_file(path, &data, &n);
    if (rc != 0)
        return rc == KE_EFULL ? KE_EINVAL : rc;
    char *s = data, *e = data + n;
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        e--;
    size_t hexlen = (size_t)(e - s), bytes = hexlen / 2;
    if (hexlen % 2 != 0 || bytes < KE_PKI_SECRET_MIN || bytes > KE_PKI_SECRET_MAX ||
        bytes > cap || hex_decode(s, hexlen, secret) != 0)
        rc = KE_EINVAL;
    else
        *len = bytes;
    OPENSSL_cleanse(data, n);
    free(data);
    return rc;
}

/* ---- files and randomness ---- */

int ke_pki_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    if (!path || !path[0] || (!data && len) || len > KE_PKI_FILE_MAX)
        return KE_EINVAL;
    char tmp[PATH_MAX], dir[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return KE_EINVAL;
    int rc = KE_EIO;
    int fd = mkostemp(tmp, O_CLOEXEC); /* same directory, so rename is atomic */
    if (fd < 0) {
        ke_log_debug(LOG_MOD, "create temporary file path=%s errno=%d", tmp, errno);
        return KE_EIO;
    }
    const char *p = data;
    size_t left = len;
    if (fchmod(fd, mode) != 0)
        goto out;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto out;
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0)
        goto out;
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0 || rename(tmp, path) != 0)
        goto out;
    tmp[0] = '\0'; /* renamed: nothing to remove */
    rc = 0;
    /* Make the rename itself durable. Best effort: some filesystems refuse
     * fsync on a directory, and the file is in place either way. */
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
out:
    if (rc != 0)
        ke_log_debug(LOG_MOD, "write file path=%s errno=%d", path, errno);
    if (fd >= 0)
        close(fd);
    if (tmp[0])
        unlink(tmp);
    return rc;
}

int ke_pki_read_file(const char *path, char **data, size_t *len)
{
    if (!path || !data)
        return KE_EINVAL;
    *data = NULL;
    if (len)
        *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? KE_ENOTFOUND : KE_EIO;
    int rc = KE_EIO;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto out;
    if (st.st_size > (off_t)KE_PKI_FILE_MAX) {
        rc = KE_EFULL;
        goto out;
    }
    /* Read up to one byte past the bound, in case the file grew. */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = KE_ENOMEM;
        goto out;
    }
    for (;;) {
        if (n == cap) {
            if (cap > KE_PKI_FILE_MAX) {
                rc = KE_EFULL;
                goto out;
            }
            size_t ncap = cap * 2 > KE_PKI_FILE_MAX + 1 ? KE_PKI_FILE_MAX + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = KE_ENOMEM;
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > KE_PKI_FILE_MAX) {
        rc = KE_EFULL;
        goto out;
    }
    buf[n] = '\0';
    *data = buf;
    buf = NULL;
    if (len)
        *len = n;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

int ke_pki_random_hex(size_t bytes, char *out)
{
    if (!out || bytes == 0 || bytes > KE_PKI_RANDOM_MAX)
        return KE_EINVAL;
    unsigned char buf[KE_PKI_RANDOM_MAX];
    if (RAND_bytes(buf, (int)bytes) != 1)
        return ossl_fail("random bytes");
    hex_encode(buf, bytes, out);
    OPENSSL_cleanse(buf, bytes);
    return 0;
}
