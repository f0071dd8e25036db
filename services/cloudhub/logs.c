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
#include <sys/random.h>

struct ch_logstream {
    uint64_t id;
    char key[24];             /* id in decimal: the table's key */
    ke_rpc_call *call;        /* the Logs call (valid until its on_close) */
    ch_node *n;               /* while active */
    struct ch_logstream *prev, *next; /* n->logs */
    int active;
    char node[CH_NODE_NAME_MAX];
};

int ch_logs_init(cloudhub *ch)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint64_t)ke_map_len(ch->nodes) + 1; /* ids stay unique in this process */
    ch->log_next_id = (r & ((1ull << 62) - 1)) | 1;
    ch->logstreams = ke_map_new();
    return ch->logstreams ? 0 : KE_ENOMEM;
}

void ch_logs_free(cloudhub *ch)
{
    ke_map_free(ch->logstreams); /* empty: every Logs call has closed */
    ch->logstreams = NULL;
}

/* unlink_stream takes ls out of the table and its node's list. ch->mu held. */
static void unlink_stream(cloudhub *ch, ch_logstream *ls)
{
    if (!ls->active)
        return;
    ke_map_del(ch->logstreams, ls->key);
    ch_node *n = ls->n;
    if (ls->prev)
        ls->prev->next = ls->next;
    else
        n->logs = ls->next;
    if (ls->next)
        ls->next->prev = ls->prev;
    n->n_logs--;
    ls->prev = ls->next = NULL;
    ls->n = NULL;
    ls->active = 0;
}

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

static void logs_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__LogsRequest *req = (const Ke__V1__LogsRequest *)m;
    const char *bad = logs_check(req);
    if (bad) {
        ke_rpc_call_finish(call, KE_RPC_INVALID_ARGUMENT, bad, NULL);
        return;
    }
    ch_logstream *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    ls->call = call;
    snprintf(ls->node, sizeof(ls->node), "%s", req->node_name);
    ke_rpc_call_set_data(call, ls); /* freed in on_close */
    char why[160];
    int code = KE_RPC_OK;
    pthread_mutex_lock(&ch->mu);
    ch_node *n = ke_map_get(ch->nodes, req->node_name);
    if (!n || !n->stream || !n->hello_done) {
        snprintf(why, sizeof(why), "node %s is not connected", req->node_name);
        code = KE_RPC_UNAVAILABLE;
    } else if (n->n_logs >= CH_LOGS_NODE_MAX) {
        snprintf(why, sizeof(why), "node %s has %u log streams open already; close one",
                 req->node_name, CH_LOGS_NODE_MAX);
        code = KE_RPC_RESOURCE_EXHAUSTED;
    } else {
        ls->id = ch->log_next_id++;
        if (ch->log_next_id == 0)
            ch->log_next_id = 1;
        snprintf(ls->key, sizeof(ls->key), "%" PRIu64, ls->id);
        if (ke_map_put(ch->logstreams, ls->key, ls, NULL) != 0) {
            snprintf(why, sizeof(why), "out of memory");
            code = KE_RPC_RESOURCE_EXHAUSTED;
        }
    }
    if (code == KE_RPC_OK) {
        ls->n = n;
        ls->active = 1;
        ls->next = n->logs;
        if (n->logs)
            n->logs->prev = ls;
        n->logs = ls;
        n->n_logs++;
        Ke__V1__LogRequest lr = KE__V1__LOG_REQUEST__INIT;
        Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
        lr.stream_id = ls->id;
        lr.namespace_ = req->namespace_;
        lr.pod = req->pod;
        lr.container = req->container;
        lr.follow = req->follow;
        lr.tail_lines = req->tail_lines;
        lr.limit_bytes = req->limit_bytes;
        f.frame_case = KE__V1__CLOUD_FRAME__FRAME_LOG_REQUEST;
        f.log_request = &lr;
        int rc = ke_rpc_call_send_control(n->stream, &f.base);
        if (rc != 0) {
            unlink_stream(ch, ls);
            snprintf(why, sizeof(why), "node %s is not connected (its tunnel is %s)",
                     req->node_name, rc == KE_EFULL ? "at its send bound" : "ending");
            code = KE_RPC_UNAVAILABLE;
        }
    }
    uint64_t id = ls->id;
    pthread_mutex_unlock(&ch->mu);
    if (code != KE_RPC_OK) {
        ke_rpc_call_finish(call, code, why, NULL);
        return;
    }
    char ens[KE_LOG_ESC_SIZE(64)], epod[KE_LOG_ESC_SIZE(64)];
    ke_log_debug(CH_MOD, "log stream opened node=%s stream=%" PRIu64 " pod=%s/%s follow=%d",
                 req->node_name, id, ke_log_esc(req->namespace_, ens, sizeof(ens)),
                 ke_log_esc(req->pod, epod, sizeof(epod)), req->follow);
}

static void logs_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    cloudhub *ch = ud;
    ch_logstream *ls = ke_rpc_call_get_data(call);
    if (!ls)
        return;
    pthread_mutex_lock(&ch->mu);
    if (ls->active) {
        /* The caller went away (cancelled, deadline, closed as slow)
         * before the edge's eof: the edge stops. */
        ch_node *n = ls->n;
        uint64_t id = ls->id;
        unlink_stream(ch, ls);
        if (n->stream)
            send_cancel(n->stream, id);
        ke_log_debug(CH_MOD, "log stream cancelled node=%s stream=%" PRIu64, ls->node, id);
    }
    pthread_mutex_unlock(&ch->mu);
    free(ls);
}

const ke_rpc_handler ch_logs_handler = {.on_message = logs_on_message, .on_close = logs_on_close};

void ch_logs_tunnel_gone(cloudhub *ch, ch_node *n, const char *why)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "node %s is not connected (%s)", n->name, why);
    while (n->logs) {
        ch_logstream *ls = n->logs;
        unlink_stream(ch, ls);
        ke_rpc_call_finish(ls->call, KE_RPC_UNAVAILABLE, msg, NULL);
    }
}

void ch_logs_on_chunk(cloudhub *ch, const char *node, ke_rpc_call *tunnel,
                      const Ke__V1__LogChunk *chunk)
{
    char key[24];
    snprintf(key, sizeof(key), "%" PRIu64, chunk->stream_id);
    pthread_mutex_lock(&ch->mu);
    ch_logstream *ls = ke_map_get(ch->logstreams, key);
    if (!ls || strcmp(ls->node, node) != 0 || ls->n->stream != tunnel) {
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
            unlink_stream(ch, ls);
            send_cancel(tunnel, chunk->stream_id);
            if (rc == KE_EFULL)
                ke_rpc_call_close_slow(ls->call, "log reader is not reading (its send queue is "
                                                 "at its bound)");
            pthread_mutex_unlock(&ch->mu);
            return;
        }
    }
    if (chunk->eof) {
        unlink_stream(ch, ls);
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
