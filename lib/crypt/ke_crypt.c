/*
 * ke_crypt.c — see ke_crypt.h.
 *
 * Map: names and base64 (OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock, with
 * the padding counted back out), the key file parser, then seal and open
 * (EVP AES-256-GCM, 12-byte nonce from RAND_bytes, 16-byte tag), then the
 * key line keadm writes. Every buffer that held key material is zeroed
 * with OPENSSL_cleanse before it is released.
 */
#include "ke_crypt.h"

#include "ke_err.h"
#include "ke_log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_MOD "crypt"

struct ke_crypt {
    size_t n;
    struct {
        char name[KE_CRYPT_NAME_MAX + 1];
        unsigned char key[KE_CRYPT_KEY_BYTES];
    } k[KE_CRYPT_KEYS_MAX];
};

/* fail: rc with the reason (ke_err_why). */
#define fail(rc, why, len, ...) ke_err_why(rc, why, len, __VA_ARGS__)

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > KE_CRYPT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* b64_decode decodes in[0..n) (padded base64) into out (room for
 * 3 * n / 4 bytes). Returns the decoded length, or -1 when malformed. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
    if (n == 0 || n % 4 != 0 || n > (size_t)KE_CRYPT_DATA_MAX * 2)
        return -1;
    int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (got < 0)
        return -1;
    size_t pad = in[n - 1] == '=' ? (in[n - 2] == '=' ? 2 : 1) : 0;
    return (long)got - (long)pad;
}

/* ---- key file ----------------------------------------------------------- */

/* parse_line reads one "name: base64" line into c (line[0..n), no '\n'). */
static int parse_line(ke_crypt *c, const char *line, size_t n, int lineno, char *why,
                      size_t len)
{
    while (n && (*line == ' ' || *line == '\t'))
        line++, n--;
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
        n--;
    if (n == 0 || line[0] == '#')
        return 0;
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return fail(KE_EINVAL, why, len, "line %d: expected \"name: base64-of-32-bytes\"",
                    lineno);
    size_t nn = (size_t)(colon - line);
    while (nn && (line[nn - 1] == ' ' || line[nn - 1] == '\t'))
        nn--;
    if (!name_ok(line, nn))
        return fail(KE_EINVAL, why, len, "line %d: key names are 1-%d of [A-Za-z0-9._-]",
                    lineno, KE_CRYPT_NAME_MAX);
    char name[KE_CRYPT_NAME_MAX + 1];
    memcpy(name, line, nn);
    name[nn] = '\0';
    const char *v = colon + 1;
    size_t vn = n - (size_t)(v - line);
    while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
    if (vn >= 2 && (v[0] == '"' || v[0] == '\'') && v[vn - 1] == v[0])
        v++, vn -= 2;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->k[i].name, name) == 0)
            return fail(KE_EINVAL, why, len, "line %d: key \"%s\" listed twice", lineno, name);
    if (c->n == KE_CRYPT_KEYS_MAX)
        return fail(KE_EINVAL, why, len, "line %d: more than %d keys", lineno,
                    KE_CRYPT_KEYS_MAX);
    unsigned char raw[64];
    long got = vn <= 64 ? b64_decode(v, vn, raw) : -1;
    int rc = 0;
    if (got != KE_CRYPT_KEY_BYTES) {
        rc = fail(KE_EINVAL, why, len, "line %d: key \"%s\": the value must be %d bytes in "
                                       "base64 (head -c 32 /dev/urandom | base64)",
                  lineno, name, KE_CRYPT_KEY_BYTES);
    } else {
        snprintf(c->k[c->n].name, sizeof(c->k[c->n].name), "%s", name);
        memcpy(c->k[c->n].key, raw, KE_CRYPT_KEY_BYTES);
        c->n++;
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

int ke_crypt_parse(const char *text, size_t n, ke_crypt **out, char *why, size_t len)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!text || n > KE_CRYPT_FILE_MAX)
        return fail(KE_EINVAL, why, len, "key file larger than %d bytes", KE_CRYPT_FILE_MAX);
    ke_crypt *c = OPENSSL_zalloc(sizeof(*c));
    if (!c)
        return KE_ENOMEM;
    int rc = 0, lineno = 0;
    for (size_t at = 0; at < n && !rc;) {
        const char *nl = memchr(text + at, '\n', n - at);
        size_t ln = nl ? (size_t)(nl - (text + at)) : n - at;
        rc = parse_line(c, text + at, ln, ++lineno, why, len);
        at += ln + 1;
    }
    if (!rc && c->n == 0)
        rc = fail(KE_EINVAL, why, len, "no key (lines \"name: base64-of-32-bytes\")");
    if (rc) {
        ke_crypt_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int ke_crypt_load(const char *path, ke_crypt **out, char *why, size_t len)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!path || !*path)
        return fail(KE_EINVAL, why, len, "no key file named");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(KE_EIO, why, len, "%s: %s", path, strerror(errno));
    char *buf = OPENSSL_malloc(KE_CRYPT_FILE_MAX + 1);
    if (!buf) {
        close(fd);
        return KE_ENOMEM;
    }
    size_t n = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, KE_CRYPT_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = fail(KE_EIO, why, len, "%s: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > KE_CRYPT_FILE_MAX) {
            rc = fail(KE_EIO, why, len, "%s: larger than %d bytes", path, KE_CRYPT_FILE_MAX);
            break;
        }
    }
    close(fd);
    if (!rc) {
        char msg[256] = "";
        rc = ke_crypt_parse(buf, n, out, msg, sizeof(msg));
        if (rc)
            fail(rc, why, len, "%s: %s", path, msg);
    }
    OPENSSL_cleanse(buf, KE_CRYPT_FILE_MAX + 1);
    OPENSSL_free(buf);
    return rc;
}

int ke_crypt_file_private(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) == 0;
}

void ke_crypt_free(ke_crypt *c)
{
    if (c)
        OPENSSL_clear_free(c, sizeof(*c));
}

const char *ke_crypt_primary(const ke_crypt *c)
{
    return c && c->n ? c->k[0].name : "";
}

/* ---- envelopes ---------------------------------------------------------- */

int ke_crypt_sealed(const char *text, size_t n)
{
    size_t p = sizeof(KE_CRYPT_PREFIX) - 1;
    return text && n >= p && memcmp(text, KE_CRYPT_PREFIX, p) == 0;
}

/* envelope_split finds the key name and the base64 part of an envelope. */
static int envelope_split(const char *text, size_t n, const char **name, size_t *name_n,
                          const char **b64, size_t *b64_n)
{
    if (!ke_crypt_sealed(text, n))
        return KE_ECRYPT;
    size_t p = sizeof(KE_CRYPT_PREFIX) - 1;
    const char *colon = memchr(text + p, ':', n - p);
    if (!colon || !name_ok(text + p, (size_t)(colon - (text + p))))
        return KE_ECRYPT;
    *name = text + p;
    *name_n = (size_t)(colon - *name);
    *b64 = colon + 1;
    *b64_n = n - (size_t)(*b64 - text);
    return 0;
}

int ke_crypt_key_of(const char *text, size_t n, char *name, size_t len)
{
    const char *nm, *b;
    size_t nn, bn;
    if (!name || len < KE_CRYPT_NAME_MAX + 1 || envelope_split(text, n, &nm, &nn, &b, &bn))
        return KE_ECRYPT;
    memcpy(name, nm, nn);
    name[nn] = '\0';
    return 0;
}

int ke_crypt_seal(const ke_crypt *c, const char *aad, const char *plain, size_t n, char **out,
                  size_t *out_len)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    if (!c || !c->n || !aad || (!plain && n) || n > KE_CRYPT_DATA_MAX)
        return KE_EINVAL;
    size_t raw_n = KE_CRYPT_NONCE_BYTES + n + KE_CRYPT_TAG_BYTES;
    unsigned char *raw = malloc(raw_n);
    size_t head = sizeof(KE_CRYPT_PREFIX) - 1 + strlen(c->k[0].name) + 1;
    size_t total = head + 4 * ((raw_n + 2) / 3);
    char *env = malloc(total + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int rc = KE_ECRYPT, l = 0, l2 = 0;
    if (!raw || !env || !ctx) {
        rc = KE_ENOMEM;
        goto out;
    }
    unsigned char *nonce = raw, *ct = raw + KE_CRYPT_NONCE_BYTES, *tag = ct + n;
    if (RAND_bytes(nonce, KE_CRYPT_NONCE_BYTES) != 1 ||
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, c->k[0].key, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &l, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, ct, &l, (const unsigned char *)plain, (int)n) != 1 ||
        EVP_EncryptFinal_ex(ctx, ct + l, &l2) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KE_CRYPT_TAG_BYTES, tag) != 1) {
        ke_log_error(LOG_MOD, "AES-GCM seal failed key=%s", c->k[0].name);
        goto out;
    }
    snprintf(env, head + 1, "%s%s:", KE_CRYPT_PREFIX, c->k[0].name);
    int b = EVP_EncodeBlock((unsigned char *)env + head, raw, (int)raw_n);
    env[head + (size_t)b] = '\0';
    if (out_len)
        *out_len = head + (size_t)b;
    *out = env;
    env = NULL;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (raw)
        OPENSSL_cleanse(raw, raw_n);
    free(raw);
    free(env);
    return rc;
}

int ke_crypt_open(const ke_crypt *c, const char *aad, const char *text, size_t n, char **plain,
                  size_t *plain_len, char *why, size_t len)
{
    if (!plain)
        return KE_EINVAL;
    *plain = NULL;
    const char *nm, *b;
    size_t nn, bn;
    if (!aad || envelope_split(text, n, &nm, &nn, &b, &bn))
        return fail(KE_ECRYPT, why, len, "not an envelope (malformed prefix or key name)");
    const unsigned char *key = NULL;
    for (size_t i = 0; c && i < c->n && !key; i++)
        if (strlen(c->k[i].name) == nn && memcmp(c->k[i].name, nm, nn) == 0)
            key = c->k[i].key;
    if (!key)
        return fail(KE_ECRYPT, why, len, "sealed with key \"%.*s\", which is not in the key file",
                    (int)nn, nm);
    if (bn > (size_t)KE_CRYPT_DATA_MAX * 2)
        return fail(KE_ECRYPT, why, len, "envelope larger than %d bytes", KE_CRYPT_DATA_MAX * 2);
    size_t cap = 3 * (bn / 4) + 3;
    unsigned char *raw = malloc(cap);
    char *out = NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int rc = KE_ECRYPT, l = 0, l2 = 0;
    if (!raw || !ctx) {
        rc = KE_ENOMEM;
        goto out;
    }
    long got = b64_decode(b, bn, raw);
    if (got < KE_CRYPT_NONCE_BYTES + KE_CRYPT_TAG_BYTES) {
        fail(rc, why, len, "envelope sealed with key \"%.*s\" is malformed", (int)nn, nm);
        goto out;
    }
    size_t ct_n = (size_t)got - KE_CRYPT_NONCE_BYTES - KE_CRYPT_TAG_BYTES;
    unsigned char *nonce = raw, *ct = raw + KE_CRYPT_NONCE_BYTES, *tag = ct + ct_n;
    if (!(out = malloc(ct_n + 1))) {
        rc = KE_ENOMEM;
        goto out;
    }
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &l, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, (unsigned char *)out, &l, ct, (int)ct_n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KE_CRYPT_TAG_BYTES, tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, (unsigned char *)out + l, &l2) != 1) {
        fail(rc, why, len, "authentication failed with key \"%.*s\" (damaged, or sealed for "
                           "another object)", (int)nn, nm);
        OPENSSL_cleanse(out, ct_n + 1);
        goto out;
    }
    out[ct_n] = '\0';
    if (plain_len)
        *plain_len = ct_n;
    *plain = out;
    out = NULL;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    free(raw);
    free(out);
    return rc;
}

/* ---- new keys ----------------------------------------------------------- */

int ke_crypt_key_line(const char *name, char *line, size_t len)
{
    if (!name || !name_ok(name, strlen(name)) || !line || len < KE_CRYPT_LINE_MAX)
        return KE_EINVAL;
    unsigned char raw[KE_CRYPT_KEY_BYTES];
    char b64[48];
    int rc = 0;
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        rc = KE_ECRYPT;
    } else {
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)sizeof(raw));
        snprintf(line, len, "%s: %s\n", name, b64);
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(b64, sizeof(b64));
    return rc;
}
