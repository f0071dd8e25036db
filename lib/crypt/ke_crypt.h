/*
 * ke_crypt.h — encryption at rest: a key ring of AES-256 keys and the
 * envelope the store writes for Secret objects (DESIGN.md §10,
 * docs/security.md "Secrets at rest").
 *
 * The envelope is text, so it fits the store's TEXT columns:
 *
 *   k8s:enc:aesgcm:v1:<keyname>:<base64(nonce[12] | ciphertext | tag[16])>
 *
 * AES-256-GCM (OpenSSL EVP) with a random 96-bit nonce per envelope; the
 * caller's additional data (the store passes "kind/namespace/name") is
 * authenticated, so an envelope copied onto another object does not open.
 * As Kubernetes' EncryptionConfiguration: the first key of the ring seals,
 * every key opens (rotation: put a new key first, re-encrypt, drop the old).
 *
 * Key file: one key per line, `name: base64-of-32-bytes`; blank lines and
 * lines starting with '#' are ignored. Names are 1..KE_CRYPT_NAME_MAX of
 * [A-Za-z0-9._-]. At most KE_CRYPT_KEYS_MAX keys, the file at most
 * KE_CRYPT_FILE_MAX bytes. Errors about the file name the line and the key
 * name, never key material.
 *
 * Key material lives only in the ke_crypt and is zeroed (OPENSSL_cleanse)
 * when it is freed, as is every buffer that held it on the way.
 *
 * Errors: KE_EINVAL (arguments, a malformed key file), KE_EIO (the file),
 * KE_ENOMEM, KE_ECRYPT (an envelope that does not open: its key is not in
 * the ring, it was damaged or moved, or it is malformed; the reason, naming
 * the key, goes to `why`).
 */
#ifndef KE_CRYPT_H
#define KE_CRYPT_H

#include <stddef.h>

#define KE_CRYPT_PREFIX "k8s:enc:aesgcm:v1:"
#define KE_CRYPT_KEY_BYTES 32
#define KE_CRYPT_NONCE_BYTES 12
#define KE_CRYPT_TAG_BYTES 16
#define KE_CRYPT_NAME_MAX 32
#define KE_CRYPT_KEYS_MAX 16
#define KE_CRYPT_FILE_MAX (64 * 1024)
/* Largest plaintext sealed or opened (the store's objects are 1 MiB). */
#define KE_CRYPT_DATA_MAX (4 * 1024 * 1024)
/* Room for one key file line: name, ": ", base64 of 32 bytes, '\n', NUL. */
#define KE_CRYPT_LINE_MAX (KE_CRYPT_NAME_MAX + 2 + 44 + 2)

typedef struct ke_crypt ke_crypt;

/* ke_crypt_parse builds a key ring from key file text[0..n). On success
 * *out owns the ring (ke_crypt_free). On failure KE_EINVAL with a one-line
 * reason in why (may be NULL), or KE_ENOMEM. text is not modified; the
 * caller zeroes it if it wants to. */
int ke_crypt_parse(const char *text, size_t n, ke_crypt **out, char *why, size_t len);

/* ke_crypt_load reads and parses the key file at path (ke_crypt_parse);
 * the bytes read are zeroed before returning. Returns 0, KE_EIO (cannot
 * read, or larger than KE_CRYPT_FILE_MAX), KE_EINVAL, KE_ENOMEM, with the
 * reason in why. A file readable by group or others is accepted (the
 * caller may warn: ke_crypt_file_private). */
int ke_crypt_load(const char *path, ke_crypt **out, char *why, size_t len);

/* ke_crypt_file_private returns 1 when path is a regular file no one but
 * its owner can read or write (mode & 077 == 0), else 0. */
int ke_crypt_file_private(const char *path);

/* ke_crypt_free zeroes the keys and frees the ring. NULL is a no-op. */
void ke_crypt_free(ke_crypt *c);

/* ke_crypt_primary returns the name of the key that seals (the first),
 * borrowed from c for its lifetime. */
const char *ke_crypt_primary(const ke_crypt *c);

/* ke_crypt_sealed returns 1 when text[0..n) is an envelope (starts with
 * KE_CRYPT_PREFIX), else 0. JSON text never does. */
int ke_crypt_sealed(const char *text, size_t n);

/* ke_crypt_key_of copies the key name of envelope text[0..n) into
 * name[0..len) (len >= KE_CRYPT_NAME_MAX + 1). Returns 0 or KE_ECRYPT (not
 * an envelope, or a malformed name). */
int ke_crypt_key_of(const char *text, size_t n, char *name, size_t len);

/* ke_crypt_seal encrypts plain[0..n) with the primary key, authenticating
 * aad (a NUL-terminated string). *out is the NUL-terminated envelope
 * (malloc'd; free it), *out_len its length (may be NULL).
 * Returns 0, KE_EINVAL (n > KE_CRYPT_DATA_MAX), KE_ENOMEM, KE_ECRYPT
 * (OpenSSL failed, logged). */
int ke_crypt_seal(const ke_crypt *c, const char *aad, const char *plain, size_t n, char **out,
                  size_t *out_len);

/* ke_crypt_open decrypts envelope text[0..n) sealed with aad. c may be NULL
 * (no key file: every envelope is refused). *plain is the NUL-terminated
 * plaintext (malloc'd; free it), *plain_len its length (may be NULL).
 * Returns 0, KE_ENOMEM, or KE_ECRYPT with a one-line reason in why (may be
 * NULL): the key named is not in the ring, the envelope is malformed, or
 * authentication failed (damaged, or sealed for another object). */
int ke_crypt_open(const ke_crypt *c, const char *aad, const char *text, size_t n, char **plain,
                  size_t *plain_len, char *why, size_t len);

/* ke_crypt_key_line makes a new random key named `name` and writes the key
 * file line "name: base64\n" into line[0..len) (len >= KE_CRYPT_LINE_MAX).
 * The caller should OPENSSL_cleanse the line once written. Returns 0,
 * KE_EINVAL (bad name or room) or KE_ECRYPT (no randomness). */
int ke_crypt_key_line(const char *name, char *line, size_t len);

#endif
