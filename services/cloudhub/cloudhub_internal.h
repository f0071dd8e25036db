/*
 * cloudhub_internal.h — CloudHub's private state, shared by its files:
 *   cloudhub.c  lifecycle, node table, reaper, metrics
 *   store.c     the SQLite schema and queries
 *   queue.c     per-node downstream queue (coalesced by key, bounded)
 *   tunnel.c    the Tunnel stream, one function per frame type
 *   hub.c       the Hub API for controllers
 *   join.c      Bootstrap, Join, Renew
 *
 * Locking: one mutex (ch->mu) guards all of it, SQLite included. It may be
 * held while calling into libke rpc (send/finish/cancel), never the reverse.
 */
#ifndef CLOUDHUB_INTERNAL_H
#define CLOUDHUB_INTERNAL_H

#include "cloudhub.h"
#include "cloudhub.pb-c.h"
#include "ke_map.h"
#include "ke_metrics.h"
#include "ke_sqlite.h"

#include <pthread.h>
#include <stdint.h>

#define CH_NODE_NAME_MAX 64
#define CH_MOD "cloudhub"

/* One queued downstream message; at most one per key (coalesced). Past
 * the node's bound the entry holds no bytes (msg NULL): the message is read
 * back from the store when its turn comes. */
typedef struct ch_entry {
    struct ch_entry *next;
    char *key;         /* NULL for the resync-done marker */
    uint64_t rv;
    uint8_t *msg;      /* packed ke.v1.Message, or NULL (spilled) */
    size_t len;
    int synth_delete;  /* spilled delete of a key the cloud never had */
    uint32_t updates, deletes; /* marker only: resync counts */
} ch_entry;

typedef struct ch_node {
    char name[CH_NODE_NAME_MAX];
    ke_rpc_call *stream;     /* the live Tunnel call (a reference), or NULL */
    int hello_done;
    int64_t last_seen_ms;
    uint64_t next_edge_seq;  /* upstream seq expected next (persisted) */
    char agent_version[64];
    /* downstream queue */
    ke_map *pending;         /* key -> ch_entry in the FIFO */
    ch_entry *head, *tail;
    uint32_t depth;          /* entries queued */
    uint32_t held;           /* entries holding their message bytes (<= queue_max) */
    int spilling;            /* past the bound since the queue was last empty */
    uint64_t sent_seq, acked_seq; /* per stream */
} ch_node;

typedef struct ch_metrics {
    ke_metric *connected, *known, *queue_depth;
    ke_metric *sent, *acked, *coalesced, *overflows, *resyncs;
    ke_metric *up_received, *up_duplicates, *refused, *joins, *join_refused, *renewals;
} ch_metrics;

typedef struct ch_subscriber {
    struct ch_subscriber *next;
    ke_rpc_call *call; /* a reference */
    char **groups;
    size_t n_groups;
} ch_subscriber;

struct cloudhub {
    cloudhub_config cfg;
    char *ca_pem, *ca_key_pem;
    uint8_t *secret;
    size_t secret_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ke_sqlite *db;
    ke_map *nodes;            /* name -> ch_node, registered nodes */
    ch_subscriber *subs;
    int stopping;
    pthread_t reaper;
    ch_metrics m;
    uint32_t total_depth;
    uint32_t connected;
    uint64_t pub_seq;
};

int64_t ch_now_ms(void);

/* store.c — every function runs with ch->mu held. */
int ch_store_open(cloudhub *ch);
int ch_store_load_nodes(cloudhub *ch);
/* A node row: cert fingerprints (current, previous), upstream seq. */
int ch_store_node_get(cloudhub *ch, const char *name, char *fp, char *prev_fp, uint64_t *next_seq);
int ch_store_node_insert(cloudhub *ch, const char *name, const char *fp);
int ch_store_node_rotate(cloudhub *ch, const char *name, const char *fp);
int ch_store_node_delete(cloudhub *ch, const char *name);
int ch_store_node_set_seq(cloudhub *ch, const char *name, uint64_t next_seq);
/* ch_store_object_put records msg for key unless rv is not newer than the
 * stored one: returns 0 (stored), KE_EEXIST (same rv: a retry), or
 * KE_ECONFLICT (older rv). */
int ch_store_object_put(cloudhub *ch, const char *node, const char *key, uint64_t rv,
                        int deleted, const uint8_t *msg, size_t len);
/* ch_store_node_objects calls fn for each object row of node. */
int ch_store_node_objects(cloudhub *ch, const char *node,
                          int (*fn)(const char *key, uint64_t rv, int deleted,
                                    const void *msg, size_t len, void *arg),
                          void *arg);
int ch_store_node_drop_objects(cloudhub *ch, const char *node);
/* ch_store_object_get copies the stored message of key (malloc'd). */
int ch_store_object_get(cloudhub *ch, const char *key, uint64_t *rv, uint8_t **msg, size_t *len);

/* queue.c — ch->mu held. */
/* ch_queue_push queues (or coalesces) a message for a connected node,
 * keeping a copy of msg while the node holds fewer than queue_max messages
 * and only (key, rv) beyond that ("spilled", counted). msg NULL with
 * synth_delete queues a delete of a key the store does not have. Returns 0
 * or KE_ENOMEM. */
int ch_queue_push(cloudhub *ch, ch_node *n, const char *key, uint64_t rv, const uint8_t *msg,
                  size_t len, int synth_delete);
int ch_queue_push_marker(cloudhub *ch, ch_node *n, uint32_t updates, uint32_t deletes);
/* ch_queue_pump sends queued entries while the window allows. */
void ch_queue_pump(cloudhub *ch, ch_node *n);
void ch_queue_clear(cloudhub *ch, ch_node *n);

/* tunnel.c */
int ch_tunnel_register(cloudhub *ch, ke_rpc_server *srv);
/* ch_auth_node identifies the node calling on `call` from its verified
 * client certificate: the CN must be a registered node and the certificate
 * the one issued to it (or the one it replaced at the last rotation).
 * Returns KE_RPC_OK and the name, or a status code and the reason. */
int ch_auth_node(cloudhub *ch, ke_rpc_call *call, char *node, size_t len, char *why,
                 size_t whylen);
/* ch_node_disconnect ends the node's stream (if any) with code/why. */
void ch_node_disconnect(cloudhub *ch, ch_node *n, int code, const char *why);

/* hub.c */
int ch_hub_register(cloudhub *ch, ke_rpc_server *srv);
void ch_hub_fanout(cloudhub *ch, const char *node, uint64_t seq, Ke__V1__Message *msg);

/* join.c */
int ch_join_register(cloudhub *ch, ke_rpc_server *srv);

/* ch_resource_node extracts <node> from "node/<node>/..." into buf;
 * returns 0 or KE_EINVAL. */
int ch_resource_node(const char *resource, char *buf, size_t len);

#endif
