/*
 * ke_err.c — names for the KE_E* error codes (see ke_err.h).
 */
#include "ke_err.h"

#include <stdarg.h>
#include <stdio.h>

const char *ke_strerror(int err)
{
    switch (err) {
    case KE_OK: return "ok";
    case KE_EINVAL: return "invalid argument";
    case KE_ENOMEM: return "out of memory";
    case KE_EIO: return "i/o error";
    case KE_ENOTFOUND: return "not found";
    case KE_EEXIST: return "already exists";
    case KE_EFULL: return "queue full";
    case KE_ETIMEDOUT: return "timed out";
    case KE_ECLOSED: return "closed";
    case KE_ECONFLICT: return "conflict";
    case KE_EPROTO: return "protocol error";
    case KE_EDB: return "database error";
    case KE_ETLS: return "tls error";
    case KE_EPERM: return "permission denied";
    case KE_EGONE: return "gone: history compacted";
    case KE_ECRYPT: return "cannot decrypt: key missing or data damaged";
    }
    return "unknown error";
}

void ke_err_oneline(char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

int ke_err_why(int code, char *why, size_t len, const char *fmt, ...)
{
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
        ke_err_oneline(why);
    }
    return code;
}
