/*
 * ke_servicebus.c — see ke_servicebus.h.
 */
#include "ke_servicebus.h"

#include "ke_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* tchar of RFC 9110: the characters of a header name. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* check_target_n: target is the n bytes at t. */
static int check_target_n(const char *t, size_t n, char *why, size_t len)
{
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
        if (t[i - 1] == ':') {
            colon = t + i - 1;
            break;
        }
    if (n == 0 || n > KE_SERVICEBUS_TARGET_MAX || !colon || colon == t) {
        snprintf(why, len, "target \"%.*s\": must be host:port (e.g. 127.0.0.1:8080)",
                 (int)(n > 64 ? 64 : n), t);
        return KE_EINVAL;
    }
    const char *p = colon + 1, *end = t + n;
    long port = 0;
    if (p == end || end - p > 5)
        port = -1;
    for (; port >= 0 && p < end; p++)
        port = *p >= '0' && *p <= '9' ? port * 10 + (*p - '0') : -1;
    if (port < 1 || port > 65535) {
        snprintf(why, len, "target \"%.*s\": the port must be 1..65535",
                 (int)(n > 64 ? 64 : n), t);
        return KE_EINVAL;
    }
    size_t hl = (size_t)(colon - t);
    int ok = 1;
    if (t[0] == '[') {
        ok = hl > 2 && t[hl - 1] == ']';
        for (size_t i = 1; ok && i + 1 < hl; i++)
            ok = strchr("0123456789abcdefABCDEF:.", t[i]) != NULL;
    } else {
        for (size_t i = 0; ok && i < hl; i++)
            ok = (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
                 (t[i] >= '0' && t[i] <= '9') || t[i] == '.' || t[i] == '-';
    }
    if (!ok) {
        snprintf(why, len, "target \"%.*s\": the host must be a DNS name, an IPv4 address or "
                           "a bracketed IPv6 address",
                 (int)(n > 64 ? 64 : n), t);
        return KE_EINVAL;
    }
    return 0;
}

int ke_servicebus_check_target(const char *target, char *why, size_t len)
{
    if (!target)
        target = "";
    return check_target_n(target, strlen(target), why, len);
}

static int check_header(const Ke__V1__HTTPHeader *h, size_t i, char *why, size_t len)
{
    const char *name = h && h->name ? h->name : "";
    const char *value = h && h->value ? h->value : "";
    size_t nl = strlen(name);
    if (nl == 0) {
        snprintf(why, len, "headers[%zu].name: required", i);
        return KE_EINVAL;
    }
    if (nl + strlen(value) > KE_SERVICEBUS_HEADER_MAX) {
        snprintf(why, len, "headers[%zu]: name and value at most %u bytes", i,
                 KE_SERVICEBUS_HEADER_MAX);
        return KE_EINVAL;
    }
    for (const char *c = name; *c; c++)
        if (!is_tchar((unsigned char)*c)) {
            snprintf(why, len, "headers[%zu].name: \"%.64s\" is not an HTTP token", i, name);
            return KE_EINVAL;
        }
    for (const unsigned char *c = (const unsigned char *)value; *c; c++)
        if ((*c < 0x20 && *c != '\t') || *c == 0x7f) {
            snprintf(why, len, "headers[%zu].value: control characters are not allowed", i);
            return KE_EINVAL;
        }
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0) {
        snprintf(why, len, "headers[%zu]: %s is set from the body, not by the caller", i, name);
        return KE_EINVAL;
    }
    return 0;
}

int ke_servicebus_check_request(const Ke__V1__ServiceRequest *r, char *why, size_t len)
{
    if (ke_servicebus_check_target(r->target, why, len) != 0)
        return KE_EINVAL;
    size_t ml = r->method ? strlen(r->method) : 0;
    int ok = ml >= 1 && ml <= KE_SERVICEBUS_METHOD_MAX;
    for (size_t i = 0; ok && i < ml; i++)
        ok = r->method[i] >= 'A' && r->method[i] <= 'Z';
    if (!ok) {
        snprintf(why, len, "method: 1 to %d capital letters (GET, POST, ...)",
                 KE_SERVICEBUS_METHOD_MAX);
        return KE_EINVAL;
    }
    const char *path = r->path ? r->path : "";
    size_t pl = strlen(path);
    ok = pl >= 1 && pl <= KE_SERVICEBUS_PATH_MAX && path[0] == '/';
    for (size_t i = 0; ok && i < pl; i++)
        ok = path[i] > 0x20 && path[i] < 0x7f && path[i] != '#';
    if (!ok) {
        snprintf(why, len, "path: must start with \"/\", at most %d bytes of visible ASCII "
                           "(percent-encode the rest), no fragment",
                 KE_SERVICEBUS_PATH_MAX);
        return KE_EINVAL;
    }
    if (r->n_headers > KE_SERVICEBUS_HEADERS_MAX) {
        snprintf(why, len, "headers: at most %d (%zu given)", KE_SERVICEBUS_HEADERS_MAX,
                 r->n_headers);
        return KE_EINVAL;
    }
    for (size_t i = 0; i < r->n_headers; i++)
        if (check_header(r->headers[i], i, why, len) != 0)
            return KE_EINVAL;
    if (r->body.len > KE_SERVICEBUS_BODY_MAX) {
        snprintf(why, len, "body: at most %u bytes (%zu given)", KE_SERVICEBUS_BODY_MAX,
                 r->body.len);
        return KE_EINVAL;
    }
    if (r->timeout_ms < 1 || r->timeout_ms > KE_SERVICEBUS_TIMEOUT_MAX_MS) {
        snprintf(why, len, "timeout_ms: 1..%d", KE_SERVICEBUS_TIMEOUT_MAX_MS);
        return KE_EINVAL;
    }
    return 0;
}

/* next_entry: the entry of allow at *p (blanks trimmed) in [*s, *s + *n);
 * advances *p past its comma. 0 at the end of the list. */
static int next_entry(const char **p, const char **s, size_t *n)
{
    const char *c = *p;
    if (!c)
        return 0;
    const char *comma = strchr(c, ',');
    const char *end = comma ? comma : c + strlen(c);
    while (c < end && (*c == ' ' || *c == '\t'))
        c++;
    const char *e = end;
    while (e > c && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *s = c;
    *n = (size_t)(e - c);
    *p = comma ? comma + 1 : NULL;
    return 1;
}

int ke_servicebus_check_allow(const char *allow, char *why, size_t len)
{
    const char *p = allow, *s;
    size_t n;
    if (!allow || !*allow)
        return 0;
    for (size_t i = 0; next_entry(&p, &s, &n); i++) {
        char w[200];
        if (n == 0) {
            snprintf(why, len, "entry %zu is empty", i + 1);
            return KE_EINVAL;
        }
        if (check_target_n(s, n, w, sizeof(w)) != 0) {
            snprintf(why, len, "entry %zu: %s", i + 1, w);
            return KE_EINVAL;
        }
    }
    return 0;
}

int ke_servicebus_allowed(const char *allow, const char *target)
{
    const char *p = allow && *allow ? allow : NULL, *s;
    size_t n, tl = target ? strlen(target) : 0;
    if (tl == 0)
        return 0;
    while (next_entry(&p, &s, &n))
        if (n == tl && memcmp(s, target, n) == 0)
            return 1;
    return 0;
}
