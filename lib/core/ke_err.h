/*
 * ke_err.h — the one error vocabulary of libke.
 *
 * Every libke function that can fail returns 0 on success or one of the
 * negative KE_E* codes below, and hands results back through out-parameters.
 * The human-readable detail is logged once, by the caller that decides what
 * to do about it.
 */
#ifndef KE_ERR_H
#define KE_ERR_H

#include <stddef.h>

enum {
    KE_OK = 0,
    KE_EINVAL = -1,     /* bad argument or malformed input */
    KE_ENOMEM = -2,     /* allocation failed */
    KE_EIO = -3,        /* system call, file or socket error */
    KE_ENOTFOUND = -4,  /* no such key/object */
    KE_EEXIST = -5,     /* already exists */
    KE_EFULL = -6,      /* a bounded queue or table is full */
    KE_ETIMEDOUT = -7,  /* a deadline passed */
    KE_ECLOSED = -8,    /* the object was closed or shut down */
    KE_ECONFLICT = -9,  /* optimistic-concurrency conflict */
    KE_EPROTO = -10,    /* peer broke the protocol */
    KE_EDB = -11,       /* SQLite error */
    KE_ETLS = -12,      /* certificate or key problem */
    KE_EPERM = -13,     /* not allowed */
    KE_EGONE = -14,     /* gone: the history asked for was compacted */
    KE_ECRYPT = -15,    /* encrypted data that does not open: key missing or data damaged */
};

/* ke_strerror returns a static, human-readable name for a KE_E* code. */
const char *ke_strerror(int err);

/* ke_err_oneline replaces every control character of s (NUL-terminated,
 * modified in place) with '?'. Error lines quote input (a YAML value, a
 * label key); this keeps them one line, so they cannot forge log lines. */
void ke_err_oneline(char *s);

/* ke_err_why writes the printf-style reason into why[0..len) as one line
 * (ke_err_oneline) when why is not NULL, and returns code: the one way a
 * function says why it fails ("spec.containers[0].image: required"). */
int ke_err_why(int code, char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
