/*
 * client.c — kectl's side of the wire: the channel (opened on the first
 * call, so that local checks come first), unary calls, kubectl-style error
 * reports, and Get/List of objects as JSON. A List follows the server's
 * continue tokens page by page and hands back the whole list.
 *
 * Every kind goes through EdgeController (Get, List). A Device is also
 * served by DeviceController (GetDevice, ListDevices); when EdgeController
 * answers UNIMPLEMENTED or INVALID_ARGUMENT for a Device, the call is made
 * there instead, so kectl works whichever of the two a server routes
 * devices through.
 */
#include "kectl.h"

#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int kectl_connect(kectl *k)
{
    if (k->ch)
        return 0;
    int rc = kectl_kubeconfig_apply(k);
    if (rc != 0)
        return rc;
    rc = ke_rpc_loop_new(1, &k->loop);
    ke_rpc_channel_opts co = {.tls = k->use_tls ? &k->tls : NULL};
    if (rc == 0)
        rc = ke_rpc_channel_new(k->loop, k->server, &co, &k->ch);
    if (rc != 0) {
        fprintf(stderr, "error: cannot set up a channel to %s: %s\n", k->server,
                ke_strerror(rc));
        if (rc == KE_ETLS)
            fprintf(stderr, "hint: check that --ca, --cert and --key name readable PEM files\n");
        kectl_disconnect(k);
        return rc;
    }
    return 0;
}

void kectl_disconnect(kectl *k)
{
    ke_rpc_channel_free(k->ch);
    k->ch = NULL;
    ke_rpc_loop_free(k->loop);
    k->loop = NULL;
    json_decref(k->kcfg);
    k->kcfg = NULL;
}

int kectl_call(kectl *k, const ProtobufCServiceDescriptor *svc, const char *method,
               const ProtobufCMessage *req, ProtobufCMessage **reply, ke_rpc_status *st)
{
    *reply = NULL;
    memset(st, 0, sizeof(*st));
    int rc = kectl_connect(k);
    if (rc != 0)
        return rc;
    ke_rpc_stub stub = {k->ch, svc};
    ke_rpc_call_opts o = {.timeout_ms = k->timeout_ms};
    rc = ke_rpc_stub_unary(&stub, method, req, &o, reply, st);
    if (rc != 0) {
        fprintf(stderr, "error: %s/%s: %s\n", svc->name, method, ke_strerror(rc));
        return rc;
    }
    return 0;
}

int kectl_unreachable(const ke_rpc_status *st)
{
    return st->code == KE_RPC_UNAVAILABLE || st->code == KE_RPC_DEADLINE_EXCEEDED;
}

const char *kectl_reason(int code)
{
    switch (code) {
    case KE_RPC_NOT_FOUND: return "NotFound";
    case KE_RPC_ALREADY_EXISTS: return "AlreadyExists";
    case KE_RPC_ABORTED: return "Conflict";
    case KE_RPC_FAILED_PRECONDITION: return "Conflict";
    case KE_RPC_INVALID_ARGUMENT: return "Invalid";
    case KE_RPC_PERMISSION_DENIED: return "Forbidden";
    case KE_RPC_UNAUTHENTICATED: return "Unauthorized";
    case KE_RPC_DEADLINE_EXCEEDED: return "Timeout";
    case KE_RPC_RESOURCE_EXHAUSTED: return "TooManyRequests";
    case KE_RPC_OUT_OF_RANGE: return "Expired";
    case KE_RPC_UNIMPLEMENTED: return "MethodNotAllowed";
    case KE_RPC_CANCELLED: return "Cancelled";
    case KE_RPC_UNAVAILABLE: return "ServiceUnavailable";
    default: return "InternalError";
    }
}

void kectl_report(const kectl *k, const ke_rpc_status *st, const char *context,
                  const kectl_kind *kind, const char *name)
{
    if (st->code == KE_RPC_UNAVAILABLE) {
        fprintf(stderr, "error: unable to connect to the server %s: %s\n", k->server,
                st->message[0] ? st->message : "UNAVAILABLE");
        if (k->use_tls)
            fprintf(stderr, "hint: a refused TLS handshake looks like this: check that --ca "
                            "signed the server's certificate and that the server trusts the CA "
                            "of --cert\n");
        return;
    }
    if (st->code == KE_RPC_DEADLINE_EXCEEDED) {
        fprintf(stderr, "error: no answer from the server %s within %lld ms (see --timeout)\n",
                k->server, (long long)k->timeout_ms);
        return;
    }
    if (st->code == KE_RPC_NOT_FOUND && kind && name) {
        fprintf(stderr, "Error from server (NotFound): %s%s \"%s\" not found\n", context,
                kind->plural, name);
        return;
    }
    fprintf(stderr, "Error from server (%s): %s%s\n", kectl_reason(st->code), context,
            st->message[0] ? st->message : ke_rpc_status_name(st->code));
}

/* parse_object reads one object's JSON from a reply. */
static int parse_object(const ProtobufCBinaryData *b, json_t **obj)
{
    json_error_t je;
    *obj = json_loadb((const char *)b->data, b->len, 0, &je);
    if (!*obj || !json_is_object(*obj)) {
        fprintf(stderr, "error: the server sent an object that is not JSON: %s\n",
                *obj ? "not an object" : je.text);
        json_decref(*obj);
        *obj = NULL;
        return KE_EPROTO;
    }
    return 0;
}

static int device_fallback(const kectl_kind *kind, const ke_rpc_status *st)
{
    return kectl_kind_is_device(kind) &&
           (st->code == KE_RPC_UNIMPLEMENTED || st->code == KE_RPC_INVALID_ARGUMENT);
}

int kectl_fetch(kectl *k, const kectl_kind *kind, const char *ns, const char *name, json_t **obj,
                ke_rpc_status *st)
{
    *obj = NULL;
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind->kind;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    ProtobufCMessage *reply = NULL;
    int rc = kectl_call(k, &ke__v1__edge_controller__descriptor, "Get", &ref.base, &reply, st);
    if (rc == 0 && device_fallback(kind, st)) {
        Ke__V1__DeviceRef dref = KE__V1__DEVICE_REF__INIT;
        dref.namespace_ = (char *)ns;
        dref.name = (char *)name;
        rc = kectl_call(k, &ke__v1__device_controller__descriptor, "GetDevice", &dref.base,
                        &reply, st);
    }
    if (rc != 0 || st->code != KE_RPC_OK)
        return rc;
    rc = parse_object(&((Ke__V1__ObjectReply *)reply)->object_json, obj);
    protobuf_c_message_free_unpacked(reply, NULL);
    return rc;
}

/* list_page asks for one page (after `token`, "" first) and appends its
 * objects to arr. *svc is the service that answers: EdgeController first;
 * DeviceController for devices when EdgeController does not serve them,
 * and then for the following pages. next gets the reply's continue token. */
static int list_page(kectl *k, const kectl_kind *kind, Ke__V1__ListRequest *req,
                     const ProtobufCServiceDescriptor **svc, json_t *arr, uint64_t *rv,
                     char *next, size_t next_len, ke_rpc_status *st)
{
    ProtobufCMessage *reply = NULL;
    int rc = kectl_call(k, *svc, *svc == &ke__v1__edge_controller__descriptor ? "List"
                                                                             : "ListDevices",
                        &req->base, &reply, st);
    if (rc == 0 && *svc == &ke__v1__edge_controller__descriptor && device_fallback(kind, st)) {
        *svc = &ke__v1__device_controller__descriptor;
        rc = kectl_call(k, *svc, "ListDevices", &req->base, &reply, st);
    }
    if (rc != 0 || st->code != KE_RPC_OK)
        return rc;
    Ke__V1__ListReply *r = (Ke__V1__ListReply *)reply;
    if (json_array_size(arr) + r->n_items_json > KECTL_LIST_MAX_ITEMS) {
        fprintf(stderr, "error: the list has more than %d objects; narrow it with -n, -l or "
                        "--field-selector\n", KECTL_LIST_MAX_ITEMS);
        rc = KE_EFULL;
    }
    for (size_t i = 0; rc == 0 && i < r->n_items_json; i++) {
        json_t *o = NULL;
        rc = parse_object(&r->items_json[i], &o);
        if (rc == 0 && json_array_append_new(arr, o) != 0)
            rc = KE_ENOMEM;
    }
    const char *tok = r->continue_token ? r->continue_token : "";
    if (rc == 0 && (strlen(tok) >= next_len || (*tok && strcmp(tok, req->continue_token) == 0))) {
        fprintf(stderr, "error: the server sent an unusable continue token\n");
        rc = KE_EPROTO;
    }
    if (rc == 0) {
        snprintf(next, next_len, "%s", tok);
        *rv = r->resource_version;
    }
    protobuf_c_message_free_unpacked(reply, NULL);
    return rc;
}

int kectl_list(kectl *k, const kectl_kind *kind, const char *ns, const char *labels,
               const char *fields, json_t **items, uint64_t *rv, ke_rpc_status *st)
{
    *items = NULL;
    *rv = 0;
    char token[2][KECTL_CONTINUE_MAX];
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = (char *)kind->kind;
    req.namespace_ = (char *)ns;
    req.label_selector = (char *)(labels ? labels : "");
    req.field_selector = (char *)(fields ? fields : "");
    req.limit = k->chunk ? k->chunk : KECTL_CHUNK_DEFAULT;
    const ProtobufCServiceDescriptor *svc = &ke__v1__edge_controller__descriptor;
    json_t *arr = NULL;
    int rc = 0;
    for (int attempt = 0; attempt <= KECTL_LIST_RESTARTS; attempt++) {
        json_decref(arr);
        if (!(arr = json_array()))
            return KE_ENOMEM;
        token[0][0] = '\0';
        int cur = 0;
        do { /* each page's token names the next; the first is "" */
            req.continue_token = token[cur];
            rc = list_page(k, kind, &req, &svc, arr, rv, token[!cur], sizeof(token[0]), st);
            cur = !cur;
        } while (rc == 0 && st->code == KE_RPC_OK && token[cur][0]);
        if (rc != 0 || st->code != KE_RPC_OUT_OF_RANGE || !req.continue_token[0])
            break;
        /* the token of a later page expired (compaction): from the start */
    }
    if (rc != 0 || st->code != KE_RPC_OK) {
        json_decref(arr);
        return rc;
    }
    *items = arr;
    return 0;
}

/* ---- the wake pipe of streaming commands ---- */

static volatile sig_atomic_t wake_fd = -1; /* its write end, for the signal handler */

static void on_signal(int sig)
{
    (void)sig;
    int fd = wake_fd;
    if (fd >= 0) {
        char c = 'i';
        ssize_t n = write(fd, &c, 1);
        (void)n; /* a full pipe already holds a wake-up */
    }
}

int kectl_wake_open(kectl_wake *w)
{
    if (pipe2(w->fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "error: pipe: %s\n", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    wake_fd = w->fds[1];
    sigaction(SIGINT, &sa, &w->old_int);
    sigaction(SIGTERM, &sa, &w->old_term);
    return 0;
}

void kectl_wake_close(kectl_wake *w)
{
    sigaction(SIGINT, &w->old_int, NULL);
    sigaction(SIGTERM, &w->old_term, NULL);
    wake_fd = -1;
    close(w->fds[0]);
    close(w->fds[1]);
}
