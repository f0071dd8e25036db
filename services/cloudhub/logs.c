/*
 * logs.c — Hub.Logs: a container's log, read on the edge host and streamed
 * to the caller (EdgeController, for kectl logs) through the node's Tunnel,
 * on demand. Nothing is stored: the frames (LogRequest, LogCancel down,
 * LogChunk up) are not sequenced, not acked, and never enter the durable
 * upstream log or the edge's outbox.
 *
 *   Logs (caller)        a stream id (hub-unique; random start, so that a
 *                        restarted cloudcore does not reuse the ids of the
 *                        streams an edge may still be finishing), a
 *                        LogRequest on the node's current tunnel
 *   LogChunk (tunnel)    its data to the caller; eof ends the call OK, an
 *                        error FAILED_PRECONDITION "node X: <error>"
 *   caller cancels       LogCancel to the edge (on_close)
 *   tunnel ends          every stream of the node ends UNAVAILABLE
 *
 * Bounds: CH_LOGS_NODE_MAX streams per node (RESOURCE_EXHAUSTED past it);
 * the caller's send queue (the rpc server's bounds in messages and bytes):
 * a caller that does not read is closed RESOURCE_EXHAUSTED as a slow
 * stream (ke_rpc_call_close_slow) and the edge told to stop. LogRequest and
 * LogCancel go as control frames (ke_rpc_call_send_control): small, and at
 * most one of each per stream. A LogCancel that cannot be sent (the tunnel
 * is at its bound) is made up for later: a chunk of a stream CloudHub does
 * not know is answered with LogCancel.
 *
 * The stream's id, table, per-node list and end with its tunnel are a
 * tunnel call's (tcall.c, kind CH_TCALL_LOGS); this file keeps the frames.
 *
 * Locking: ch->mu guards the stream table and each node's list; a stream
 * is linked (active) from its request until its end (eof, error, tunnel
 * gone, caller gone). Its memory is the Logs call's data, freed in the
 * call's on_close.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* send_cancel tells the edge on tunnel to stop stream id (best effort). */
static void send_cancel(ke_rpc_call *tunnel, uint64_t id)
{
    Ke__V1__LogCancel lc = KE__V1__LOG_CANCEL__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    lc.stream_id = id;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_LOG_CANCEL;
    f.log_cancel = &lc;
    int rc = ke_rpc_call_send_control(tunnel, &f.base);
    if (rc != 0)
        ke_log_debug(CH_MOD, "log cancel not sent stream=%" PRIu64 ": %s (a later chunk of it "
                             "is answered with another)",
                     id, ke_strerror(rc));
}

static const char *logs_check(const Ke__V1__LogsRequest *r)
{
    if (!r->node_name[0] || strlen(r->node_name) >= CH_NODE_NAME_MAX)
        return "node_name: required, at most 63 bytes";
    if (!r->namespace_[0] || strlen(r->namespace_) > 253)
        return "namespace: required, at most 253 bytes";
    if (!r->pod[0] || strlen(r->pod) > 253)
        return "pod: required, at most 253 bytes";
    if (strlen(r->container) > 253)
        return "container: at most 253 bytes";
    if (r->tail_lines < 0)
        return "tail_lines: must not be negative (0: the whole log)";
    if (r->limit_bytes < 0)
        return "limit_bytes: must not be negative (0: no limit)";
    return NULL;
}

/* send_request puts the LogRequest of stream id on tunnel. ch->mu held. */
static int send_request(ke_rpc_call *tunnel, uint64_t id, const void *arg)
{
    const Ke__V1__LogsRequest *req = arg;
    Ke__V1__LogRequest lr = KE__V1__LOG_REQUEST__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    lr.stream_id = id;
    lr.namespace_ = req->namespace_;
    lr.pod = req->pod;
    lr.container = req->container;
    lr.follow = req->follow;
    lr.tail_lines = req->tail_lines;
    lr.limit_bytes = req->limit_bytes;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_LOG_REQUEST;
    f.log_request = &lr;
    return ke_rpc_call_send_control(tunnel, &f.base);
}

static const ch_tcall_kind logs_kind = {
    .kind = CH_TCALL_LOGS,
    .node_max = CH_LOGS_NODE_MAX,
    .busy = "log streams open already; close one",
    .tunnel_full = "at its send bound",
    .send = send_request,
};

static void logs_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__LogsRequest *req = (const Ke__V1__LogsRequest *)m;
    const char *bad = logs_check(req);
    if (bad) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, bad, NULL);
        return;
    }
    uint64_t id = ch_tcall_open(ch, &logs_kind, call, req->node_name, req);
    if (!id)
        return;
    char ens[KE_LOG_ESC_SIZE(64)], epod[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(CH_MOD, "log stream opened node=%s stream=%" PRIu64 " pod=%s/%s follow=%d",
                 req->node_name, id, ke_log_esc(req->namespace_, ens, sizeof(ens)),
                 ke_log_esc(req->pod, epod, sizeof(epod)), req->follow);
}

/* logs_abandoned: the caller went away (cancelled, deadline, closed as
 * slow) before the edge's eof: the edge stops. ch->mu held. */
static void logs_abandoned(cloudhub *ch, ch_node *n, const ch_tcall *ls)
{
    (void)ch;
    if (n->stream)
        send_cancel(n->stream, ls->id);
    ke_log_debug(CH_MOD, "log stream cancelled node=%s stream=%" PRIu64, ls->node, ls->id);
}

static void logs_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    ch_tcall_close(ud, call, logs_abandoned);
}

const ke_rpc_handler ch_logs_handler = {.on_message = logs_on_message, .on_close = logs_on_close};

void ch_logs_on_chunk(cloudhub *ch, const char *node, ke_rpc_call *tunnel,
                      const Ke__V1__LogChunk *chunk)
{
    ch_lock(ch);
    ch_tcall *ls = ch_tcall_find(ch, CH_TCALL_LOGS, chunk->stream_id, node, tunnel);
    if (!ls) {
        /* Not a stream of this node's tunnel (ended, cancelled, or never):
         * tell the edge to stop it, unless it just did. */
        if (!chunk->eof)
            send_cancel(tunnel, chunk->stream_id);
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    if (chunk->data.len > 0) {
        Ke__V1__LogChunk out = KE__V1__LOG_CHUNK__INIT;
        out.stream_id = chunk->stream_id;
        out.data = chunk->data;
        int rc = ke_rpc_call_send(ls->call, &out.base);
        if (rc != 0) {
            ch_tcall_unlink(ch, ls);
            send_cancel(tunnel, chunk->stream_id);
            if (rc == KE_EFULL)
                ke_rpc_call_close_slow(ls->call, "log reader is not reading (its send queue is "
                                                 "at its bound)");
            pthread_mutex_unlock(&ch->mu);
            return;
        }
    }
    if (chunk->eof) {
        ch_tcall_unlink(ch, ls);
        if (!chunk->error[0]) {
            ke_rpc_call_finish(ls->call, KE_RPC_OK, NULL, NULL);
        } else {
            char why[256], ee[KE_LOG_ESC_SIZE(200)];
            snprintf(why, sizeof(why), "node %s: %s", node, chunk->error);
            ke_log_info(CH_MOD, "log stream failed on the edge node=%s stream=%" PRIu64
                                " error=\"%s\"",
                        node, chunk->stream_id, ke_log_esc(chunk->error, ee, sizeof(ee)));
            ke_rpc_call_finish(ls->call, KE_RPC_FAILED_PRECONDITION, why, NULL);
        }
    }
    pthread_mutex_unlock(&ch->mu);
}
