/*
 * cloudhub.h — CloudHub: the cloud end of the cloud–edge tunnel.
 *
 * Serves, on a libke rpc server:
 *   ke.v1.CloudHub  Bootstrap, Join, Renew, Tunnel (edge nodes)
 *   ke.v1.Hub       Publish, Subscribe, ListNodes, ListNodeObjects,
 *                   RemoveNode (controllers)
 *
 * State lives in one SQLite file (cfg->db_path): registered nodes with
 * their certificate fingerprints and upstream sequence, and every object
 * published for every node (tombstones for deletes). A connected node gets
 * the difference between that table and its Hello digest, then live
 * changes; so pending downstream messages survive a CloudHub restart by
 * persistence: nothing is only in memory. Upstream reports go to a durable
 * log (in the same transaction as the node's sequence number, before the
 * edge's ack) that named consumers read from their durable cursors.
 */
#ifndef CLOUDHUB_H
#define CLOUDHUB_H

#include "ke_rpc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cloudhub cloudhub;

/* The largest cfg.window: the rpc layer's per-call send queue
 * (KE_RPC_DEFAULT_SEND_QUEUE) less the frames kept for control. */
#define CLOUDHUB_WINDOW_MAX 960u

typedef struct cloudhub_config {
    const char *db_path;           /* SQLite file */
    const char *ca_cert_file;      /* cluster CA (PEM) */
    const char *ca_key_file;       /* its key: signs node certificates */
    const char *token_secret_file; /* HMAC secret of join tokens */
    int64_t node_cert_ttl_ms;      /* validity of issued node certificates */
    int64_t keepalive_ms;          /* the edge sends a keepalive this often */
    int64_t dead_peer_ms;          /* a node silent this long is disconnected */
    uint32_t queue_max;            /* per-node downstream queue bound (keys) */
    uint32_t window;               /* downstream messages in flight unacked; at most
                                      CLOUDHUB_WINDOW_MAX (room for control frames) */
    uint32_t uplog_node_max;       /* a node's entries (keys) in the upstream log;
                                      0: 10,000 */
    uint32_t uplog_node_window;    /* a node's entries in the upstream log at a time
                                      (fairness): its later reports wait, unacked, in
                                      memory until consumers make room; 0: 256; at
                                      least uplog_node_max turns it off */
    int64_t hello_timeout_ms;      /* a Tunnel stream must send its first frame within
                                      this, and complete its Hello (digest included)
                                      within this of that frame; else it is closed with
                                      DEADLINE_EXCEEDED. 0: 30 s */
    uint32_t hello_concurrency;    /* admission control: Tunnel streams between their
                                      Hello and the end of their resync (ResyncDone
                                      sent, everything before it acked) at once; a
                                      Hello past it is refused (fatal Refusal with
                                      retry_after_ms, RESOURCE_EXHAUSTED). 0: 256 */
} cloudhub_config;

/* Node certificates: CN "system:node:<name>", O "system:nodes" (issued by
 * Join and Renew). Certificates issued before that naming have CN "<name>"
 * and no O; they keep working until they expire or the node renews (Renew
 * then issues the new naming). */
#define CLOUDHUB_NODE_CN_PREFIX "system:node:"
#define CLOUDHUB_NODE_GROUP "system:nodes"

/* cloudhub_node_cert_matches tells whether the certificate whose SHA-256 is
 * `fingerprint` is the current or previous one registered for `node`: 1
 * yes, 0 no (or no such node), KE_EDB when the registry cannot be read.
 * Thread-safe; a SQLite read under the hub's lock (no rpc): fit for
 * lib/authz's node_cert callback (ud: the cloudhub). */
int cloudhub_node_cert_matches(void *hub, const char *node, const char *fingerprint);

/* cloudhub_new opens the database (migrating it), loads the CA, key and
 * token secret, and starts the dead-peer reaper. Returns 0, KE_EINVAL for a
 * window above CLOUDHUB_WINDOW_MAX, KE_ETLS when a PEM or secret file is
 * unusable, KE_EDB, KE_ENOMEM. */
int cloudhub_new(const cloudhub_config *cfg, cloudhub **out);

/* cloudhub_register adds the CloudHub and Hub services to srv (before
 * start). The hub must outlive the server. */
int cloudhub_register(cloudhub *ch, ke_rpc_server *srv);

/* cloudhub_health is a ke_http health callback: 0 when the database
 * answers; else non-zero with the reason. */
int cloudhub_health(void *ch, char *reason, size_t cap);

/* cloudhub_free stops the reaper and frees the hub; free it after the
 * server it was registered on. NULL is a no-op. */
void cloudhub_free(cloudhub *ch);

#endif
