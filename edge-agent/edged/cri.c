/*
 * cri.c — see cri.h. A unary CRI call is a client call through the
 * runtime (ke_rt_call_start): the request is sent and half-closed at once,
 * the reply kept, and done runs at on_close with the status.
 */
#include "cri.h"

#include "ke_err.h"
#include "ke_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRI_DEFAULT_TIMEOUT_MS 120000

typedef struct cri_op cri_op;
struct cri_client {
    ke_rt *e;
    ke_rpc_channel *ch;
    cri_op *open; /* doubly linked list of open calls (cancelled at stop) */
};

struct cri_op {
    cri_client *c;
    ke_rpc_call *call;
    ProtobufCMessage *reply;
    cri_done done;
    void *ud;
    cri_op *prev, *next;
};

int cri_client_new(ke_rt *e, const char *endpoint, cri_client **out)
{
    if (!e || !endpoint || !*endpoint || !out)
        return KE_EINVAL;
    cri_client *c = calloc(1, sizeof(*c));
    if (!c)
        return KE_ENOMEM;
    char target[1024];
    int n = snprintf(target, sizeof(target), "%s%s", endpoint[0] == '/' ? "unix:" : "", endpoint);
    if (n < 0 || (size_t)n >= sizeof(target)) {
        free(c);
        return KE_EINVAL;
    }
    ke_rpc_channel_opts o = {.max_message_bytes = 16u << 20};
    int rc = ke_rpc_channel_new(ke_rt_rpc(e), target, &o, &c->ch);
    if (rc != 0) {
        free(c);
        return rc;
    }
    c->e = e;
    *out = c;
    return 0;
}

static void op_on_message(ke_rpc_call *call, ProtobufCMessage *msg, void *ud)
{
    (void)call;
    cri_op *op = ud;
    if (op->reply) /* unary: a second reply would be the runtime's error */
        protobuf_c_message_free_unpacked(op->reply, NULL);
    op->reply = msg;
}

static void op_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    cri_op *op = ud;
    cri_client *c = op->c;
    if (op->prev)
        op->prev->next = op->next;
    else
        c->open = op->next;
    if (op->next)
        op->next->prev = op->prev;
    ke_rpc_status ok = *st;
    if (st->code != KE_RPC_OK)
        ke_log_debug("edged", "CRI call ended code=%d: %s", (int)st->code, st->message);
    if (st->code == KE_RPC_OK && !op->reply) {
        ok.code = KE_RPC_INTERNAL;
        snprintf(ok.message, sizeof(ok.message), "the runtime sent no reply");
    }
    op->done(ok.code == KE_RPC_OK ? op->reply : NULL, &ok, op->ud);
    if (op->reply)
        protobuf_c_message_free_unpacked(op->reply, NULL);
    ke_rpc_call_unref(call);
    free(op);
}

int cri_call(cri_client *c, cri_service svc, const char *method, const ProtobufCMessage *req,
             int64_t timeout_ms, cri_done done, void *ud)
{
    static const ke_rt_rpc_handler h = {.on_message = op_on_message, .on_close = op_on_close};
    cri_op *op = calloc(1, sizeof(*op));
    if (!op)
        return KE_ENOMEM;
    op->c = c;
    op->done = done;
    op->ud = ud;
    ke_rpc_call_opts o = {.timeout_ms = timeout_ms > 0 ? timeout_ms : CRI_DEFAULT_TIMEOUT_MS};
    const ProtobufCServiceDescriptor *d = svc == CRI_IMAGE ? &runtime__v1__image_service__descriptor
                                                           : &runtime__v1__runtime_service__descriptor;
    int rc = ke_rt_call_start(c->e, c->ch, d, method, &h, op, &o, &op->call);
    if (rc != 0) {
        free(op);
        return rc;
    }
    op->next = c->open;
    if (c->open)
        c->open->prev = op;
    c->open = op;
    if ((rc = ke_rpc_call_send(op->call, req)) != 0 ||
        (rc = ke_rpc_call_close_send(op->call)) != 0) {
        /* KE_ECLOSED: the call already ended (the runtime refused it);
         * on_close brings its status. Otherwise end it now. */
        if (rc != KE_ECLOSED) {
            ke_log_warn("edged", "CRI %s not sent: %s", method, ke_strerror(rc));
            ke_rpc_call_cancel(op->call); /* on_close runs done with CANCELLED */
        }
    }
    return 0;
}

void cri_client_cancel(cri_client *c)
{
    if (!c)
        return;
    for (cri_op *op = c->open; op; op = op->next)
        ke_rpc_call_cancel(op->call);
}

void cri_client_free(cri_client *c)
{
    if (!c)
        return;
    ke_rpc_channel_free(c->ch);
    free(c);
}
