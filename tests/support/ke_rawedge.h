/*
 * ke_rawedge.h — a hand-driven edge for tests of CloudHub's Tunnel: it
 * opens the stream with a joined node's certificate and lets the test send
 * exactly the frames it wants (a Hello with a digest in chunks, reports
 * with chosen sequence numbers), while it records what CloudHub answers
 * (HelloAck, acks, downstream messages, ResyncDone, refusals, the final
 * status). Downstream messages are acked as they arrive unless auto_ack is
 * off. Waits are on conditions with a monotonic deadline.
 */
#ifndef KE_RAWEDGE_H
#define KE_RAWEDGE_H

#include "cloudhub.pb-c.h"
#include "ke_cluster.h"
#include "ke_rpc.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ke_rawedge_down {
    uint64_t seq, rv;
    int del;
    char key[200];
} ke_rawedge_down;

typedef struct ke_rawedge {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ke_rpc_channel *ch;
    ke_rpc_call *call;
    int auto_ack;
    int hello_ack;
    uint64_t next_edge_seq;   /* from HelloAck */
    uint64_t acked;           /* highest upstream seq acked by the cloud */
    int resync_done;
    uint32_t updates, deletes;
    ke_rawedge_down *down;    /* downstream messages, in arrival order */
    size_t n_down, cap_down;
    int refusals;
    uint64_t refused_seq;
    uint64_t drains;
    int closed;
    ke_rpc_status st;
} ke_rawedge;

/* ke_rawedge_open opens a Tunnel as node (joined into <c->dir>/<node>).
 * Fails the test on error; sends nothing. */
void ke_rawedge_open(ke_rawedge *e, ke_cluster *c, const char *node, int auto_ack);

/* ke_rawedge_hello sends a Hello for node with n digest entries (keys[i]
 * at rvs[i]): the Hello carries the first `chunk` entries and, when more
 * remain, digest_follows and DigestChunks of `chunk` entries, the last one
 * marked last. Fails the test when a frame cannot be queued. */
void ke_rawedge_hello(ke_rawedge *e, const char *node, char *const *keys, const uint64_t *rvs,
                      size_t n, size_t chunk);

/* ke_rawedge_send queues one frame, waiting for the drain while the
 * client's send queue is full (30 s at most). Returns 0 or a KE_E code. */
int ke_rawedge_send(ke_rawedge *e, const ProtobufCMessage *frame);

/* ke_rawedge_report sends an upstream report of key at rv in group. */
int ke_rawedge_report(ke_rawedge *e, uint64_t seq, const char *key, uint64_t rv,
                      const char *group);

/* ke_rawedge_ack acks downstream messages up to seq. */
int ke_rawedge_ack(ke_rawedge *e, uint64_t seq);

/* Waits (1: happened; 0: timed out or the stream closed first). */
int ke_rawedge_wait_hello_ack(ke_rawedge *e, int timeout_ms);
int ke_rawedge_wait_acked(ke_rawedge *e, uint64_t seq, int timeout_ms);
int ke_rawedge_wait_resync(ke_rawedge *e, int timeout_ms);
int ke_rawedge_wait_down(ke_rawedge *e, size_t n, int timeout_ms);
int ke_rawedge_wait_closed(ke_rawedge *e, int timeout_ms);

/* ke_rawedge_close cancels the stream, waits for its end, frees it all. */
/* ke_rawedge_n_down returns how many downstream messages have arrived,
 * read under the lock (the rpc thread may be appending). */
size_t ke_rawedge_n_down(ke_rawedge *e);

void ke_rawedge_close(ke_rawedge *e);

#endif
