/*
 * call.c — `kectl call NODE URL [-X METHOD] [-H 'Name: value']... [-d DATA]
 * [-i] [--fail]`: one HTTP request to a service on an edge node's host,
 * through the node's tunnel (EdgeController.ProxyHTTP, ServiceBus). The URL
 * names the target as the node sees it (http://127.0.0.1:8080/path?q); the
 * node must list host:port in its modules.servicebus.allow. The response
 * body goes to stdout (with -i, the status line and headers first).
 *
 * --timeout is the request's timeout on the edge; the rpc's deadline is
 * that plus CALL_GRACE_MS, so the edge's own DEADLINE_EXCEEDED (with its
 * reason) arrives first.
 */
#include "kectl.h"

#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_servicebus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_GRACE_MS 10000

enum { OPT_FAIL = KECTL_OPT_VERB + 1 };

typedef struct call_opts {
    const char *method;
    const char *headers[KE_SERVICEBUS_HEADERS_MAX + 1];
    size_t n_headers;
    const char *data;
    int include, fail;
} call_opts;

void kectl_help_call(FILE *out)
{
    fputs("Send one HTTP request to a service on an edge node's host, through the node's\n"
          "tunnel (ServiceBus), and print the response body.\n"
          "\n"
          "Usage: kectl call NODE URL [-X METHOD] [-H 'Name: value']... [-d DATA] [-i] [flags]\n"
          "\n"
          "URL is http://HOST:PORT/PATH?QUERY as the node sees it; HOST:PORT must be listed\n"
          "in the node's modules.servicebus.allow (a port left out is 80).\n"
          "\n"
          "Flags:\n"
          "  -X, --request METHOD  the method (default GET; POST with -d)\n"
          "  -H, --header 'N: V'   a request header (repeatable, at most 64)\n"
          "  -d, --data DATA       the request body; @FILE reads it from FILE (at most 1 MiB)\n"
          "  -i, --include         print the status line and the headers before the body\n"
          "      --fail            exit 1 when the status is 400 or more\n"
          "\n"
          "--timeout is the request's timeout on the edge (DeadlineExceeded past it).\n"
          "Needs RBAC create on nodes/proxy naming the node. Exit 0 on any HTTP status\n"
          "(unless --fail), 1 when there is no response (the reason is printed).\n"
          "\n"
          "Examples:\n"
          "  kectl call edge-1 http://127.0.0.1:8080/healthz\n"
          "  kectl call edge-1 http://127.0.0.1:8080/api -X PUT -H 'Content-Type: text/plain' "
          "-d hi\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int call_opt(void *ud, int c, const char *arg)
{
    call_opts *o = ud;
    switch (c) {
    case 'X':
        o->method = arg;
        return 0;
    case 'H':
        if (o->n_headers == KE_SERVICEBUS_HEADERS_MAX)
            return kectl_usage_error("call", "at most %d headers", KE_SERVICEBUS_HEADERS_MAX);
        if (!strchr(arg, ':'))
            return kectl_usage_error("call", "-H wants 'Name: value', not \"%s\"", arg);
        o->headers[o->n_headers++] = arg;
        return 0;
    case 'd':
        o->data = arg;
        return 0;
    case 'i':
        o->include = 1;
        return 0;
    case OPT_FAIL:
        o->fail = 1;
        return 0;
    default:
        return 0;
    }
}

/* parse_url splits http://HOST[:PORT][/PATH] into target (HOST:PORT) and
 * path. Returns 0 or 2 after a usage error. */
static int parse_url(const char *url, char *target, size_t tlen, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return kectl_usage_error("call", "URL must start with http:// (the service is reached "
                                         "over plain HTTP on the node), not \"%s\"",
                                 url);
    const char *host = url + 7;
    size_t hl = strcspn(host, "/?");
    const char *p = host + hl;
    const char *colon = NULL;
    for (size_t i = hl; i > 0; i--)
        if (host[i - 1] == ':' || host[i - 1] == ']') {
            colon = host[i - 1] == ':' ? host + i - 1 : NULL;
            break;
        }
    int n = colon ? snprintf(target, tlen, "%.*s", (int)hl, host)
                  : snprintf(target, tlen, "%.*s:80", (int)hl, host);
    if (hl == 0 || n < 0 || (size_t)n >= tlen)
        return kectl_usage_error("call", "URL \"%s\" names no host", url);
    *path = *p == '/' ? p : NULL; /* "?q" alone: "/" + query, built by the caller */
    return 0;
}

/* read_body reads DATA or @FILE into buf (malloc'd). 0 or 1 after an error. */
static int read_body(const char *data, uint8_t **buf, size_t *len)
{
    if (data[0] != '@') {
        *len = strlen(data);
        *buf = (uint8_t *)strdup(data);
        return *buf ? 0 : 1;
    }
    FILE *f = fopen(data + 1, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot read %s: %s\n", data + 1, strerror(errno));
        return 1;
    }
    *buf = malloc(KE_SERVICEBUS_BODY_MAX + 1);
    *len = *buf ? fread(*buf, 1, KE_SERVICEBUS_BODY_MAX + 1, f) : 0;
    int bad = !*buf || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "error: cannot read %s\n", data + 1);
        return 1;
    }
    if (*len > KE_SERVICEBUS_BODY_MAX) {
        fprintf(stderr, "error: %s: the body may be at most %u bytes\n", data + 1,
                KE_SERVICEBUS_BODY_MAX);
        return 1;
    }
    return 0;
}

int kectl_cmd_call(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"request", required_argument, NULL, 'X'},
        {"header", required_argument, NULL, 'H'},
        {"data", required_argument, NULL, 'd'},
        {"include", no_argument, NULL, 'i'},
        {"fail", no_argument, NULL, OPT_FAIL},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"call", opts, "X:H:d:i", call_opt, kectl_help_call};
    call_opts o = {0};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos != 2)
        return kectl_usage_error("call", "expected a node name and a URL, got %zu arguments",
                                 n_pos);
    char target[KE_SERVICEBUS_TARGET_MAX + 8], path[KE_SERVICEBUS_PATH_MAX + 2];
    const char *p = NULL;
    if ((rc = parse_url(pos[1], target, sizeof(target), &p)) != 0)
        return rc;
    const char *q = strchr(pos[1] + 7, '?');
    if (p)
        snprintf(path, sizeof(path), "%s", p);
    else
        snprintf(path, sizeof(path), "/%s", q ? q : "");
    Ke__V1__HTTPHeader hs[KE_SERVICEBUS_HEADERS_MAX], *hp[KE_SERVICEBUS_HEADERS_MAX];
    char *names[KE_SERVICEBUS_HEADERS_MAX] = {0};
    for (size_t i = 0; i < o.n_headers; i++) {
        const char *colon = strchr(o.headers[i], ':');
        names[i] = strndup(o.headers[i], (size_t)(colon - o.headers[i]));
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        ke__v1__httpheader__init(&hs[i]);
        hs[i].name = names[i] ? names[i] : "";
        hs[i].value = (char *)v;
        hp[i] = &hs[i];
    }
    uint8_t *body = NULL;
    size_t body_len = 0;
    int status = KECTL_EXIT_ERROR;
    ProtobufCMessage *reply = NULL;
    if (o.data && read_body(o.data, &body, &body_len) != 0)
        goto out;
    Ke__V1__NodeHTTPRequest req = KE__V1__NODE_HTTPREQUEST__INIT;
    req.node_name = (char *)pos[0];
    req.target = target;
    req.method = (char *)(o.method ? o.method : o.data ? "POST" : "GET");
    req.path = path;
    req.n_headers = o.n_headers;
    req.headers = hp;
    req.body.data = body;
    req.body.len = body_len;
    req.timeout_ms = k->timeout_ms < KE_SERVICEBUS_TIMEOUT_MAX_MS ? k->timeout_ms
                                                                  : KE_SERVICEBUS_TIMEOUT_MAX_MS;
    if (kectl_connect(k) != 0)
        goto out;
    ke_rpc_stub stub = {k->ch, &ke__v1__edge_controller__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = req.timeout_ms + CALL_GRACE_MS};
    ke_rpc_status st;
    rc = ke_rpc_stub_unary(&stub, "ProxyHTTP", &req.base, &co, &reply, &st);
    if (rc != 0) {
        fprintf(stderr, "error: EdgeController/ProxyHTTP: %s\n", ke_strerror(rc));
        goto out;
    }
    if (st.code != KE_RPC_OK) {
        if ((st.code == KE_RPC_UNAVAILABLE || st.code == KE_RPC_DEADLINE_EXCEEDED) &&
            strncmp(st.message, "node ", 5) == 0) /* the server answered: the node's side */
            fprintf(stderr, "Error from server (%s): %s\n", kectl_reason(st.code), st.message);
        else
            kectl_report(k, &st, "", kectl_kind_lookup("nodes"), pos[0]);
        goto out;
    }
    const Ke__V1__NodeHTTPResponse *r = (const Ke__V1__NodeHTTPResponse *)reply;
    if (o.include) {
        printf("HTTP/1.1 %d\r\n", r->status);
        for (size_t i = 0; i < r->n_headers; i++)
            printf("%s: %s\r\n", r->headers[i]->name, r->headers[i]->value);
        printf("\r\n");
    }
    if (fwrite(r->body.data, 1, r->body.len, stdout) != r->body.len || fflush(stdout) != 0) {
        fprintf(stderr, "error: cannot write the body to stdout: %s\n", strerror(errno));
        goto out;
    }
    if (o.fail && r->status >= 400) {
        fprintf(stderr, "error: the service answered %d\n", r->status);
        goto out;
    }
    status = KECTL_EXIT_OK;
out:
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    free(body);
    for (size_t i = 0; i < o.n_headers; i++)
        free(names[i]);
    return status;
}
