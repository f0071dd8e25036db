/*
 * ke_pki.h — the cluster's certificates and join tokens (OpenSSL 3).
 *
 * Everything here speaks PEM strings, not OpenSSL objects, so callers never
 * free an X509 or an EVP_PKEY:
 *   - keys are EC P-256, PEM PKCS#8 ("BEGIN PRIVATE KEY"), unencrypted;
 *   - the CA is self-signed (CA:TRUE critical, keyCertSign+cRLSign, SKI);
 *   - leaves carry CA:FALSE, digitalSignature, one extended key usage
 *     (serverAuth for CloudHub, clientAuth for nodes and "system:admin"),
 *     SKI and AKI, a random 128-bit serial, and notBefore = now - 5 minutes
 *     so that a peer whose clock is a little behind accepts them; their
 *     notAfter is clamped to the CA's (a leaf never outlives its CA);
 *   - a CSR's self-signature is always verified before it is used, and of
 *     a CSR only the CN and the public key are taken: extensions it asks for
 *     are ignored, the CA sets its own;
 *   - the keys a CSR may carry (the key policy, ke_pki_csr_key_check): RSA
 *     of at least KE_PKI_RSA_MIN_BITS bits with public exponent 65537, or EC
 *     on the named curves P-256 or P-384. Everything else is refused: small
 *     or small-exponent RSA, other curves, explicit curve parameters, and
 *     Ed25519/Ed448 (not accepted by every TLS stack a client of ours may
 *     use, and nothing here makes them).
 *
 * Join tokens (`keadm gettoken`, checked by CloudHub's Join):
 *
 *   <cahash>.<expiry>.<nonce>.<hmac>            any number of joins
 *   <cahash>.<expiry>.<nonce>.<uses>.<hmac>     at most <uses> joins
 *
 * cahash is the lowercase hex SHA-256 of the CA certificate's DER (64
 * chars), expiry the Unix time in decimal seconds, nonce 16 hex chars (also
 * the token's id, under which CloudHub counts its uses), uses a decimal
 * 1..KE_PKI_TOKEN_USES_MAX, and hmac the lowercase hex HMAC-SHA256, keyed
 * by the cluster's token secret, of everything before the last '.'. The
 * first form is the one made before use limits existed; it stays valid and
 * is still what gettoken prints without --uses. The edge needs only the
 * cahash part (to trust the CA it fetches over an unverified channel); the
 * cloud checks the whole token. The secret lives in a file of hex (ke_pki_secret_read);
 * its decoded bytes are the HMAC key.
 *
 * Every string a function allocates is the caller's, freed with free(); on
 * error every such out-pointer is set to NULL. Failures are returned, not
 * logged above debug level: the caller decides what to tell the user.
 * Thread-safe (no state of its own; OpenSSL 3 is thread-safe).
 */
#ifndef KE_PKI_H
#define KE_PKI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bounds. */
#define KE_PKI_PEM_MAX (64u * 1024u)        /* one PEM input (certificate, key or CSR) */
#define KE_PKI_FILE_MAX (1024u * 1024u)     /* ke_pki_read_file */
#define KE_PKI_CN_MAX 64                    /* X.509 upper bound of a common name */
#define KE_PKI_ORGS_MAX 16                  /* O= entries (groups) of a client cert */
#define KE_PKI_MAX_SANS 64                  /* subjectAltName entries of a server cert */
#define KE_PKI_MAX_VALID_SECONDS (100LL * 366 * 24 * 3600) /* longest validity */
#define KE_PKI_CLOCK_SKEW_SECONDS 300       /* notBefore is backdated by this */
#define KE_PKI_HASH_HEX 65                  /* 64 hex chars + NUL */
#define KE_PKI_TOKEN_MAX 192                /* a token's length, with NUL, is below this */
#define KE_PKI_TOKEN_USES_MAX 1000000u      /* largest use limit a token can carry */
#define KE_PKI_TOKEN_ID_HEX 17              /* a token id: 16 hex chars + NUL */
#define KE_PKI_SECRET_BYTES 32              /* token secret made by keadm init */
#define KE_PKI_SECRET_MIN 16                /* shortest secret accepted */
#define KE_PKI_SECRET_MAX 128               /* longest secret accepted */
#define KE_PKI_RANDOM_MAX 256               /* ke_pki_random_hex bytes bound */
#define KE_PKI_RSA_MIN_BITS 2048            /* smallest RSA key a CSR may carry */
#define KE_PKI_RSA_EXPONENT 65537UL         /* the one RSA public exponent accepted */

/* ---- keys and certificates ---- */

/* ke_pki_key_create makes a fresh EC P-256 private key. On 0 *key_pem is a
 * PEM PKCS#8 string owned by the caller (free()). KE_ETLS if OpenSSL fails,
 * KE_ENOMEM. */
int ke_pki_key_create(char **key_pem);

/* ke_pki_ca_create makes a self-signed CA certificate and its key, valid
 * from now - 5 min for valid_seconds (1..KE_PKI_MAX_VALID_SECONDS). cn:
 * 1..64 bytes, no control characters. On 0 *ca_pem and *ca_key_pem are the
 * caller's. KE_EINVAL for bad arguments, KE_ETLS, KE_ENOMEM. */
int ke_pki_ca_create(const char *cn, int64_t valid_seconds, char **ca_pem, char **ca_key_pem);

/* ke_pki_server_cert_create issues a serverAuth certificate with a fresh
 * key, signed by the CA (ca_pem/ca_key_pem must belong together, and the
 * certificate must be a CA). sans is NULL-terminated (may be NULL) with at
 * most KE_PKI_MAX_SANS entries: "DNS:name", "IP:addr", or a bare string that
 * is an IP SAN when it parses as an IPv4/IPv6 address and a DNS SAN
 * otherwise (DNS names: 1..253 of [A-Za-z0-9.-_*]). On 0 *cert_pem and
 * *key_pem are the caller's. KE_EINVAL (bad cn, SAN or validity), KE_ETLS
 * (unreadable CA, key not the CA's, not a CA), KE_ENOMEM. */
int ke_pki_server_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                              const char *const *sans, int64_t valid_seconds, char **cert_pem,
                              char **key_pem);

/* ke_pki_client_cert_create issues a clientAuth certificate for `cn` with a
 * fresh key (e.g. "system:admin"). Ownership and errors as
 * ke_pki_server_cert_create. */
int ke_pki_client_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                              int64_t valid_seconds, char **cert_pem, char **key_pem);

/* ke_pki_user_cert_create issues a clientAuth certificate for user `cn`
 * in groups `orgs` (NULL-terminated, may be NULL; at most KE_PKI_ORGS_MAX,
 * each 1..64 bytes without control characters; one O= entry each, as
 * Kubernetes reads groups), with a fresh key. Ownership and errors as
 * ke_pki_server_cert_create. */
int ke_pki_user_cert_create(const char *ca_pem, const char *ca_key_pem, const char *cn,
                            const char *const *orgs, int64_t valid_seconds, char **cert_pem,
                            char **key_pem);

/* ke_pki_csr_create makes a PKCS#10 request for `cn`, signed with key_pem.
 * On 0 *csr_pem is the caller's. KE_EINVAL (bad cn), KE_ETLS (unreadable
 * key), KE_ENOMEM. */
int ke_pki_csr_create(const char *key_pem, const char *cn, char **csr_pem);

/* ke_pki_csr_cn parses csr_pem, VERIFIES its self-signature, and copies its
 * subject CN (UTF-8) into cn[len]. KE_ETLS when the CSR does not parse, its
 * signature does not verify, or it has no CN or several; KE_EFULL when the CN does not
 * fit in len; KE_EINVAL for NULL arguments. */
int ke_pki_csr_cn(const char *csr_pem, char *cn, size_t len);

/* ke_pki_csr_key_check applies the key policy (above) to the public key of
 * csr_pem, without verifying its signature. Returns 0; KE_EINVAL when the
 * key is refused, with why (may be NULL; truncated to whylen) saying what
 * was found and what is accepted, e.g. "RSA key of 1024 bits; at least 2048
 * are required"; KE_ETLS when the CSR or its key does not parse. */
int ke_pki_csr_key_check(const char *csr_pem, char *why, size_t whylen);

/* ke_pki_sign_csr issues a clientAuth certificate, valid for valid_seconds
 * from now - 5 min, whose subject is only the CSR's CN and whose key is the
 * CSR's (which must pass the key policy, then verify). The CSR's
 * requested extensions are ignored. On 0 *cert_pem is the caller's and, if
 * not_after_ms is not NULL, *not_after_ms is the expiry in ms since the
 * epoch. KE_EINVAL (key refused by the policy, or bad arguments), KE_ETLS
 * (bad CSR or CA), KE_ENOMEM. */
int ke_pki_sign_csr(const char *ca_pem, const char *ca_key_pem, const char *csr_pem,
                    int64_t valid_seconds, char **cert_pem, int64_t *not_after_ms);

/* ke_pki_sign_csr_as is ke_pki_sign_csr with the subject chosen by the
 * signer: CN=cn_as (NULL: the CSR's CN) and one O= per entry of orgs
 * (NULL-terminated, may be NULL; bounds as ke_pki_user_cert_create). Only
 * the CSR's key (verified as ke_pki_sign_csr does) is taken from it. */
int ke_pki_sign_csr_as(const char *ca_pem, const char *ca_key_pem, const char *csr_pem,
                       const char *cn_as, const char *const *orgs, int64_t valid_seconds,
                       char **cert_pem, int64_t *not_after_ms);

/* ke_pki_cert_subject reads the first certificate of cert_pem: its one CN
 * into cn[cnlen] and its O= entries, in order, into orgs[0..max_orgs)
 * (*n_orgs of them). Returns 0; KE_ENOTFOUND when it has no CN; KE_ETLS
 * when it does not parse, has several CNs, or an O that is empty, longer
 * than KE_PKI_CN_MAX or holds a NUL; KE_EFULL when the CN does not fit or
 * there are more than max_orgs O entries (refused rather than cut: a
 * partial identity is not the certificate's). */
int ke_pki_cert_subject(const char *cert_pem, char *cn, size_t cnlen,
                        char orgs[][KE_PKI_CN_MAX + 1], size_t max_orgs, size_t *n_orgs);

/* ke_pki_cert_info reads the first certificate of cert_pem: its subject CN
 * into cn[cnlen] ("" when it has none) and its validity in ms since the
 * epoch. Every out-parameter may be NULL. KE_ETLS when it does not parse or
 * its subject has several CNs, KE_EFULL when the CN does not fit. */
int ke_pki_cert_info(const char *cert_pem, char *cn, size_t cnlen, int64_t *not_before_ms,
                     int64_t *not_after_ms);

/* ke_pki_ca_hash writes the lowercase hex SHA-256 of the DER of the first
 * certificate in ca_pem into hex (64 chars + NUL). KE_ETLS if it does not
 * parse. */
int ke_pki_ca_hash(const char *ca_pem, char hex[KE_PKI_HASH_HEX]);

/* ke_pki_cert_fingerprint writes the same hash as ke_pki_ca_hash (SHA-256
 * of the first certificate's DER) without parsing the certificate: it only
 * decodes the PEM. For certificates the TLS stack has already verified,
 * on hot paths (CloudHub checks one per tunnel). KE_ETLS if the PEM holds
 * no CERTIFICATE block. */
int ke_pki_cert_fingerprint(const char *cert_pem, char hex[KE_PKI_HASH_HEX]);

/* ke_pki_verify_chain returns 0 when cert_pem is signed by the CA in ca_pem
 * and both are valid now; KE_ETLS otherwise (or when either does not
 * parse). */
int ke_pki_verify_chain(const char *ca_pem, const char *cert_pem);

/* ke_pki_cert_matches_key returns 0 when key_pem is the private key of the
 * certificate in cert_pem, KE_ETLS otherwise. */
int ke_pki_cert_matches_key(const char *cert_pem, const char *key_pem);

/* ---- join tokens ---- */

/* ke_pki_token_create makes a token for the CA in ca_pem that expires at
 * expires_unix (> 0), keyed by secret (KE_PKI_SECRET_MIN..MAX bytes). On 0
 * *token (shorter than KE_PKI_TOKEN_MAX) is the caller's. KE_EINVAL, KE_ETLS
 * (CA does not parse), KE_ENOMEM. */
int ke_pki_token_create(const char *ca_pem, const uint8_t *secret, size_t secret_len,
                        int64_t expires_unix, char **token);

/* ke_pki_token_create_uses is ke_pki_token_create for a token that allows
 * at most `uses` joins (1..KE_PKI_TOKEN_USES_MAX; 0 makes the unlimited,
 * four-field form). Counting is the verifier's job (CloudHub's store). */
int ke_pki_token_create_uses(const char *ca_pem, const uint8_t *secret, size_t secret_len,
                             int64_t expires_unix, uint32_t uses, char **token);

/* ke_pki_token_uses checks the token's format only and returns its id
 * (16 hex chars + NUL) and its use limit (0: unlimited); either may be
 * NULL. Only meaningful for a token ke_pki_token_verify accepted. KE_EINVAL
 * when malformed. */
int ke_pki_token_uses(const char *token, char id[KE_PKI_TOKEN_ID_HEX], uint32_t *uses);

/* ke_pki_token_parse checks the token's format only (no secret needed) and
 * returns its CA hash and expiry (either may be NULL). KE_EINVAL when
 * malformed. */
int ke_pki_token_parse(const char *token, char cahash[KE_PKI_HASH_HEX], int64_t *expires_unix);

/* ke_pki_token_verify checks a token against the CA and the secret at time
 * now_unix. Returns 0, or KE_EPERM with why (may be NULL; truncated to
 * whylen) one of "malformed token", "token is for another CA", "token
 * signature does not match", "token expired at 2026-11-25T14:03:11Z".
 * Checked in that order; the HMAC is compared in constant time. KE_ETLS when
 * ca_pem does not parse, KE_EINVAL for a bad secret. */
int ke_pki_token_verify(const char *token, const char *ca_pem, const uint8_t *secret,
                        size_t secret_len, int64_t now_unix, char *why, size_t whylen);

/* ke_pki_secret_read reads a token secret file (hex, surrounding whitespace
 * ignored) and decodes it into secret[cap]; *len gets the byte count.
 * KE_ENOTFOUND (no file), KE_EIO, KE_EINVAL (not hex, or fewer than
 * KE_PKI_SECRET_MIN bytes, or more than cap / KE_PKI_SECRET_MAX). */
int ke_pki_secret_read(const char *path, uint8_t *secret, size_t cap, size_t *len);

/* ---- files and randomness ---- */

/* ke_pki_write_file replaces path atomically with data[len] and the given
 * mode (umask does not apply): a temporary file "<path>.tmp.XXXXXX" in the
 * same directory is written, fsynced, chmodded and renamed over path, and the
 * directory is fsynced. On failure path is untouched and the temporary file
 * removed. KE_EINVAL, KE_EIO. */
int ke_pki_write_file(const char *path, const void *data, size_t len, mode_t mode);

/* ke_pki_read_file reads a whole file of at most KE_PKI_FILE_MAX bytes into
 * a NUL-terminated buffer the caller frees; *len (may be NULL) excludes the
 * NUL. KE_ENOTFOUND, KE_EFULL (too large), KE_EIO, KE_ENOMEM. */
int ke_pki_read_file(const char *path, char **data, size_t *len);

/* ke_pki_random_hex writes 2*bytes lowercase hex chars of cryptographic
 * randomness plus a NUL into out. bytes: 1..KE_PKI_RANDOM_MAX. KE_EINVAL,
 * KE_ETLS (no randomness). */
int ke_pki_random_hex(size_t bytes, char *out);

#endif
