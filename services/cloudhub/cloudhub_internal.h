/*
 * cloudhub_internal.h — CloudHub's private state, shared by its files:
 *   cloudhub.c  lifecycle, node table, reaper, metrics
 *   store.c     the SQLite schema and queries
 *   queue.c     per-node downstream queue (coalesced by key, bounded)
 *   tunnel.c    the Tunnel stream, one function per frame type
 *   hub.c       the Hub API for controllers: Publish, ListNodes,
 *               ListNodeObjects, RemoveNode
 *   subscribe.c Hub.Subscribe: named consumers reading the durable
 *               upstream log from their cursors
 *   join.c      Bootstrap, Join, Renew
 *   logs.c      Hub.Logs: container logs streamed from a node through its
 *               tunnel (LogRequest / LogChunk / LogCancel frames)
 *   service.c   Hub.ProxyHTTP: one HTTP request to a service on a node's
 *               host through its tunnel (ServiceRequest / ServiceResponse)
 *   tcall.c     tunnel calls: the id, table and per-node list that logs.c
 *               and service.c share for a call waiting on a node's tunnel
 *   writer.c    the group-commit writer: publishes stored in shared
 *               transactions by one thread, callers answered after commit
 *
 * Locking: one mutex (ch->mu) guards all of it, SQLite included. It may be
 * held while calling into libke rpc (send/finish/cancel), never the reverse.
 * The writer's queue has its own mutex (ch->wmu), never held with ch->mu.
 */
#ifndef CLOUDHUB_INTERNAL_H
#define CLOUDHUB_INTERNAL_H

#include "cloudhub.h"
#include "cloudhub.pb-c.h"
#include "ke_map.h"
#include "ke_metrics.h"
#include "ke_sqlite.h"
#include "ke_wheel.h"

#include <pthread.h>
#include <stdint.h>

#define CH_NODE_NAME_MAX 64
#define CH_MOD "cloudhub"

/* Frames a Tunnel call's rpc send queue keeps free for control frames
 * (acks, keepalives, ResyncDone, refusals): data in flight is capped at
 * cfg.window <= CH_WINDOW_MAX, so data alone never fills the queue. */
#define CH_CONTROL_RESERVE 64u
#define CH_WINDOW_MAX (KE_RPC_DEFAULT_SEND_QUEUE - CH_CONTROL_RESERVE)
_Static_assert(CH_WINDOW_MAX == CLOUDHUB_WINDOW_MAX, "cloudhub.h's window bound");
/* Default bound on one node's entries (distinct keys) in the upstream log. */
#define CH_UPLOG_NODE_MAX_DEFAULT 10000u
/* Default window of one node's entries in the upstream log at a time, and
 * the bounds on its reports held back meanwhile (one stream's). */
#define CH_UPLOG_NODE_WINDOW_DEFAULT 256u
#define CH_DEFER_MAX 16384u
#define CH_DEFER_BYTES_MAX (16u * 1024u * 1024u)
/* Digest bounds: one Hello + DigestChunk sequence, and every sequence in
 * progress together (memory a connecting node can pin). */
#define CH_DIGEST_MAX 2000000u
#define CH_DIGEST_HUB_MAX 4000000u
/* Admission control (tunnel.c): the default bound on Tunnel streams between
 * Hello and ResyncDone, the first estimate of how long one takes, the floor
 * of the per-admission interval (the TLS handshake a retry costs first) and
 * the bounds of a retry_after. */
#define CH_HELLO_CONCURRENCY_DEFAULT 256u
#define CH_HELLO_EST_MS_DEFAULT 50
#define CH_ADMIT_INTERVAL_MIN_US 5000
#define CH_RETRY_AFTER_MIN_MS 100
#define CH_RETRY_AFTER_MAX_MS 60000

typedef struct ch_node ch_node;

/* A resource key's bound ("node/<node>/<namespace>/<kind>/<name>"). */
#define CH_KEY_MAX 512u

/* The group-commit writer (writer.c): messages per transaction at most,
 * and the bounds of its queue (copied messages; past them RESOURCE_EXHAUSTED). */
#define CH_WRITE_BATCH_ITEMS 4096u
#define CH_WRITE_QUEUE_ITEMS 65536u
#define CH_WRITE_QUEUE_BYTES (64u * 1024u * 1024u)
/* Items of one Hub.PublishBatch call at most. */
#define CH_PUBLISH_BATCH_MAX 4096u

/* One message to store: an item of a writer job. A publish (stored, then
 * queued to its node) or an upstream report (logged, then acked to the
 * edge and handed to consumers). */
typedef struct ch_pub {
    char node[CH_NODE_NAME_MAX];
    const char *key;  /* in buf */
    const char *group; /* a report's route.group, in buf */
    uint64_t seq;     /* a report's upstream seq */
    uint64_t rv;
    int deleted, resend;
    const uint8_t *msg; /* the packed ke.v1.Message, in buf */
    size_t len;
    uint8_t *buf;     /* owns msg and key */
    int rc;           /* publish: the store's answer (0, KE_EEXIST, KE_ECONFLICT);
                         report: 0 logged, 1 nothing to do after the commit,
                         2 the stream ends unacked after the commit (stop_rc) */
    int stop_rc;
    uint64_t reply_seq; /* a publish's reply seq */
} ch_pub;

/* A writer job: one caller's publishes, answered together. */
typedef struct ch_wjob {
    struct ch_wjob *next;
    ke_rpc_call *call;  /* a reference, dropped once answered */
    int batch;          /* PublishBatch: one result per item */
    int report;         /* one upstream report; call is its Tunnel stream */
    int store_rc;       /* the writer's: 0 once committed, else the store error */
    /* a consumer's ack (subscribe.c): its subscriber (NULL once there is
     * nothing to do), the cursor to persist, the entries it collected */
    int cack;
    struct ch_subscriber *sub;
    uint64_t ack_to;
    int collected;
    size_t bytes;       /* counted against the queue's bound */
    size_t n;
    ch_pub items[];
} ch_wjob;

/* Tunnel calls (tcall.c): a caller's rpc call waiting on frames of a node's
 * tunnel, one table and one per-node list per kind. */
enum { CH_TCALL_LOGS, CH_TCALL_SERVICE, CH_TCALL_KINDS };

typedef struct ch_tcall {
    uint64_t id;
    char key[24];             /* id in decimal: the table's key */
    int kind;                 /* CH_TCALL_* */
    ke_rpc_call *call;        /* the caller's call (valid until its on_close) */
    ch_node *n;               /* while active */
    struct ch_tcall *prev, *next; /* n->tcalls[kind] */
    int active;
    char node[CH_NODE_NAME_MAX];
} ch_tcall;

typedef struct ch_tcall_list {
    ch_tcall *head;
    uint32_t len;
} ch_tcall_list;

typedef struct ch_tcall_table {
    ke_map *by_id;            /* id (decimal) -> ch_tcall */
    uint64_t next_id;         /* next id (random start) */
} ch_tcall_table;

/* What a kind of tunnel call is: its per-node bound and how it asks. */
typedef struct ch_tcall_kind {
    int kind;                 /* CH_TCALL_* */
    uint32_t node_max;        /* calls per node; RESOURCE_EXHAUSTED past it */
    const char *busy;         /* "node X has <node_max> <busy>" past the bound */
    const char *tunnel_full;  /* "node X is not connected (its tunnel is <...>)" */
    /* send puts the request with id on the node's tunnel (ch->mu held);
     * 0 or an rpc send error (KE_EFULL: at its bound). */
    int (*send)(ke_rpc_call *tunnel, uint64_t id, const void *arg);
} ch_tcall_kind;

/* Log streams (logs.c): at most CH_LOGS_NODE_MAX open per node. */
#define CH_LOGS_NODE_MAX 16u

/* One queued downstream message; at most one per key (coalesced). Past
 * the node's bound the entry holds no bytes (msg NULL): the message is read
 * back from the store when its turn comes. */
typedef struct ch_entry {
    struct ch_entry *next;
    char *key;         /* NULL for the resync-done marker */
    uint64_t rv;
    uint8_t *msg;      /* packed ke.v1.Message, or NULL (spilled) */
    size_t len;
    int deleted;       /* a tombstone of the objects table */
    int synth_delete;  /* spilled delete of a key the cloud never had */
    uint32_t updates, deletes; /* marker only: resync counts */
} ch_entry;

/* An upstream report held back while its node has cfg.uplog_node_window
 * entries in the log (not acked to the edge yet): logged, in seq order,
 * when consumers make room (ch_tunnel_undefer). */
typedef struct ch_deferred {
    struct ch_deferred *next;
    uint64_t seq;
    char *group, *key;
    uint8_t *msg;   /* the packed ke.v1.Message */
    size_t len;
} ch_deferred;

/* A tombstone sent to the node and not yet acked: once the edge acks seq,
 * the objects row (key, rv, deleted) is removed. */
typedef struct ch_sent_delete {
    uint64_t seq;
    uint64_t rv;
    char *key;
} ch_sent_delete;

struct ch_node {
    char name[CH_NODE_NAME_MAX];
    ke_rpc_call *stream;     /* the live Tunnel call (a reference), or NULL */
    int hello_done;
    int pump_owed;           /* on the writer's list of nodes to pump (writer.c) */
    int resyncing;           /* holds an admission slot until its resync is acked */
    uint64_t resync_end_seq; /* the last seq of the resync (ResyncDone sent); 0: not yet */
    int64_t resync_start_mono; /* when its Hello was admitted (monotonic ms) */
    int64_t last_seen_ms;    /* wall clock, for display (ListNodes) */
    int64_t last_seen_mono;  /* monotonic: the reaper and idle_ms */
    ke_wheel_timer dead_timer; /* on ch->dead_wheel while connected: due at
                                  last_seen_mono + dead_peer, re-armed lazily */
    uint64_t next_edge_seq;  /* upstream seq expected next (persisted) */
    char agent_version[64];
    /* control slots of the live stream: never dropped, coalesced, flushed
     * before data and on every drain */
    uint64_t ack_owed;       /* newest upstream seq to ack (0: none) */
    int keepalive_owed;      /* a keepalive reply is due */
    int upstream_stopped;    /* a report was not acked: ignore later ones on
                                this stream (the edge resends after reconnect) */
    int uplog_full;          /* in a backpressure episode (logged once) */
    /* reports held back for fairness, oldest first (this stream's) */
    ch_deferred *defer_head, *defer_tail;
    uint32_t defer_len;
    size_t defer_bytes;
    /* tombstones in flight, oldest first (at most cfg.window) */
    ch_sent_delete *dels;
    uint32_t dels_head, dels_len;
    /* downstream queue */
    ke_map *pending;         /* key -> ch_entry in the FIFO */
    ch_entry *head, *tail;
    uint32_t depth;          /* entries queued */
    uint32_t held;           /* entries holding their message bytes (<= queue_max) */
    int spilling;            /* past the bound since the queue was last empty */
    uint64_t sent_seq, acked_seq; /* per stream */
    /* Hub.Logs streams riding this node's tunnel, Hub.ProxyHTTP calls
     * waiting for its answer (tcall.c) */
    ch_tcall_list tcalls[CH_TCALL_KINDS];
};

typedef struct ch_metrics {
    ke_metric *hello_timeouts, *up_deferred;
    ke_metric *connected, *known, *queue_depth;
    ke_metric *sent, *acked, *coalesced, *overflows, *resyncs;
    ke_metric *up_received, *up_duplicates, *refused, *joins, *join_refused, *renewals;
    ke_metric *up_backpressure, *up_delivered, *tombstones_collected;
    ke_metric *write_commits, *write_items, *write_refused;
    ke_metric *lock_contended, *lock_wait, *write_lock_held;
    ke_metric *hello_refused, *hello_admitting, *tls_resumed, *tls_full;
} ch_metrics;

typedef struct ch_subscriber ch_subscriber; /* subscribe.c */

struct cloudhub {
    cloudhub_config cfg;
    char *ca_pem, *ca_key_pem;
    uint8_t *secret;
    size_t secret_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ke_sqlite *db;
    ke_map *nodes;            /* name -> ch_node, registered nodes */
    ch_subscriber *subs;      /* live Subscribe streams, one per consumer */
    /* Timers on the monotonic clock (the reaper advances both): the dead-peer
     * deadline of every connected node, the Hello deadline of every Tunnel
     * stream whose Hello is not complete (tunnel.c). */
    ke_wheel dead_wheel, hello_wheel;
    uint32_t deferring;       /* nodes with reports held back (tunnel.c) */
    uint64_t digest_held;     /* digest entries held by sequences in progress */
    /* admission control (tunnel.c) */
    uint32_t admitting;       /* streams between Hello and ResyncDone */
    int64_t admit_est_us;     /* moving average of Hello -> ResyncDone */
    int64_t retry_slot_us;    /* monotonic us: the next retry slot handed out */
    unsigned admit_seed;      /* jitter */
    int stopping;
    pthread_t reaper;
    ch_metrics m;
    uint32_t total_depth;
    uint32_t connected;
    uint64_t pub_seq;
    ch_tcall_table tcalls[CH_TCALL_KINDS]; /* log streams, service calls (tcall.c) */
    /* the group-commit writer (writer.c) */
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    ch_wjob *whead, *wtail;
    size_t wbytes;
    uint32_t witems;
    int wstop, writer_running;
    pthread_t writer;
    /* nodes a batch queued messages to, pumped after the batch releases
     * ch->mu (writer thread only; under ch->mu while filled; at most one
     * entry per node a batch of CH_WRITE_BATCH_ITEMS touched) */
    char (*wpump)[CH_NODE_NAME_MAX];
    size_t wpump_n, wpump_cap;
};

/* store.c — every function runs with ch->mu held. */
int ch_store_open(cloudhub *ch);
int ch_store_load_nodes(cloudhub *ch);
/* A node row: cert fingerprints (current, previous), upstream seq. */
int ch_store_node_get(cloudhub *ch, const char *name, char *fp, char *prev_fp, uint64_t *next_seq);
int ch_store_node_insert(cloudhub *ch, const char *name, const char *fp);
/* Join tokens with a use limit (join.c). ch_store_token_used returns how
 * many joins token `id` has made (0 when never seen), or a negative KE_E
 * code. ch_store_node_insert_token inserts the node and counts one use of
 * token `id` in one transaction: KE_EPERM, and nothing written, when the
 * token has made `max_uses` joins already. Rows of tokens past
 * `expires_unix` are dropped on the way (a token past its expiry is refused
 * before it is counted). */
int ch_store_token_used(cloudhub *ch, const char *id, int64_t *used);
int ch_store_node_insert_token(cloudhub *ch, const char *name, const char *fp, const char *id,
                               uint32_t max_uses, int64_t expires_unix);
int ch_store_node_rotate(cloudhub *ch, const char *name, const char *fp);
int ch_store_node_delete(cloudhub *ch, const char *name);
int ch_store_node_set_seq(cloudhub *ch, const char *name, uint64_t next_seq);
/* ch_store_node_page calls fn for up to limit node names greater than
 * after ("" for the first page), in name order. */
int ch_store_node_page(cloudhub *ch, const char *after, uint32_t limit,
                       int (*fn)(const char *name, void *arg), void *arg);
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
/* ch_store_object_page calls fn for the object rows of node with keys
 * greater than after (NULL: from the first), in key order, until fn returns
 * non-zero. */
int ch_store_object_page(cloudhub *ch, const char *node, const char *after,
                         int (*fn)(const char *key, uint64_t rv, int deleted, void *arg),
                         void *arg);
/* ch_store_tombstone_drop removes the row of key if it is still the
 * tombstone at rv (nothing newer was published since). */
int ch_store_tombstone_drop(cloudhub *ch, const char *key, uint64_t rv);

/* The durable upstream log. ch_store_uplog_append, in one transaction,
 * replaces any entry of (group, key) with a new one at the log's end and
 * sets the node's next_edge_seq to edge_seq + 1. A new key past node_max
 * entries of the node changes nothing and returns KE_EFULL. *id: the new
 * entry's log id. Returns 0, KE_EFULL, KE_EDB. */
int ch_store_uplog_append(cloudhub *ch, const char *node, const char *group, const char *key,
                          uint64_t edge_seq, const uint8_t *msg, size_t len, uint32_t node_max,
                          uint64_t *id);
/* ch_store_uplog_append_tx is the same inside the caller's transaction
 * (KE_EFULL writes nothing; another error leaves the transaction to be
 * rolled back). */
int ch_store_uplog_append_tx(cloudhub *ch, const char *node, const char *group, const char *key,
                             uint64_t edge_seq, const uint8_t *msg, size_t len, uint32_t node_max,
                             uint64_t *id);
/* ch_store_uplog_read calls fn for up to limit entries with id > after whose
 * group is in groups_json (a JSON array of strings; NULL: every group), in
 * id order. *max_id: the log's highest id when read (0 when empty). */
int ch_store_uplog_read(cloudhub *ch, uint64_t after, const char *groups_json, uint32_t limit,
                        int (*fn)(uint64_t id, const char *node, uint64_t edge_seq,
                                  const void *msg, size_t len, void *arg),
                        void *arg, uint64_t *max_id);
/* ch_store_consumer_register creates consumer name (cursor 0) or updates
 * its groups, returns its durable cursor and collects what the change made
 * collectable. */
int ch_store_consumer_register(cloudhub *ch, const char *name, const char *groups_json,
                               uint64_t *cursor);
/* ch_store_consumer_ack_tx is ch_store_consumer_ack inside the caller's
 * transaction. */
int ch_store_consumer_ack_tx(cloudhub *ch, const char *name, uint64_t old, uint64_t cursor,
                             int *collected);
/* ch_store_consumer_ack moves the cursor of name from old to cursor (in one
 * transaction) and removes the entries in (old, cursor] that every
 * consumer registered for their group has acked. *collected: how many. */
int ch_store_consumer_ack(cloudhub *ch, const char *name, uint64_t old, uint64_t cursor,
                          int *collected);
/* ch_store_object_get copies the stored message of key (malloc'd). */
int ch_store_object_get(cloudhub *ch, const char *key, uint64_t *rv, uint8_t **msg, size_t *len);

/* queue.c — ch->mu held. */
/* ch_queue_push queues (or coalesces) a message for a connected node,
 * keeping a copy of msg while the node holds fewer than queue_max messages
 * and only (key, rv) beyond that ("spilled", counted). msg NULL with
 * synth_delete queues a delete of a key the store does not have. Returns 0
 * or KE_ENOMEM. */
int ch_queue_push(cloudhub *ch, ch_node *n, const char *key, uint64_t rv, const uint8_t *msg,
                  size_t len, int deleted, int synth_delete);
int ch_queue_push_marker(cloudhub *ch, ch_node *n, uint32_t updates, uint32_t deletes);

/* ch_lock takes ch->mu, the one lock of CloudHub's state; a wait for it
 * is counted (ke_cloudhub_lock_contended_total, _lock_wait_seconds_total):
 * what a finer lock could win shows there. Unlock with
 * pthread_mutex_unlock(&ch->mu). */
void ch_lock(cloudhub *ch);

/* ch_queue_pump flushes the control slots, then sends queued entries while
 * the window and the rpc send queue allow (on_drain calls it again). */
void ch_queue_pump(cloudhub *ch, ch_node *n);

/* ch_writer_pump_later, on the writer thread with ch->mu held: pump node n
 * (its queued messages and control frames) once the batch has released
 * ch->mu (writer.c). */
void ch_writer_pump_later(cloudhub *ch, ch_node *n);
/* ch_queue_acked records the edge's ack of every downstream seq up to seq
 * (ignored unless in (acked, sent]) and removes the tombstones it covers. */
void ch_queue_acked(cloudhub *ch, ch_node *n, uint64_t seq);
/* ch_queue_clear forgets the queue and everything per stream (in-flight
 * tombstones stay in the store: the next resync sends them again). */
void ch_queue_clear(cloudhub *ch, ch_node *n);
/* ch_control_ack owes the edge an ack of seq (coalesced with any owed
 * one); ch_control_keepalive owes it a keepalive; both are sent at once
 * when the rpc queue has room, else at the next drain. Never dropped while
 * the stream lives. */
void ch_control_ack(ch_node *n, uint64_t seq);
void ch_control_keepalive(ch_node *n);
void ch_control_flush(cloudhub *ch, ch_node *n);

/* tunnel.c */
int ch_tunnel_register(cloudhub *ch, ke_rpc_server *srv);
/* ch_auth_node identifies the node calling on `call` from its verified
 * client certificate: the CN must be a registered node and the certificate
 * the one issued to it (or the one it replaced at the last rotation).
 * Returns KE_RPC_OK and the name, or a status code and the reason. */
int ch_auth_node(cloudhub *ch, ke_rpc_call *call, char *node, size_t len, char *why,
                 size_t whylen);
/* ch_tunnel_reap closes the Tunnel streams that have not completed their
 * Hello within cfg.hello_timeout_ms of being opened (now: monotonic ms; the
 * timers of ch->hello_wheel), counted in ke_cloudhub_hello_timeouts_total.
 * ch->mu held. */
void ch_tunnel_reap(cloudhub *ch, int64_t now);
/* ch_tunnel_undefer logs the reports held back for every node whose
 * entries in the upstream log dropped below cfg.uplog_node_window, in seq
 * order, acks them and wakes consumers. Call after consumers made room
 * (an ack that collected entries) and from the reaper. ch->mu held. */
void ch_tunnel_undefer(cloudhub *ch);
/* ch_tunnel_defer_clear forgets the node's held-back reports (its stream
 * ended: they were not acked, the edge sends them again). ch->mu held. */
void ch_tunnel_defer_clear(cloudhub *ch, ch_node *n);
/* ch_tunnel_report_log logs an upstream report inside the writer's
 * transaction (or holds it back behind the node's window, or stops the
 * stream past its bounds). Returns 0, or a store error that fails the whole
 * transaction. ch->mu held. */
int ch_tunnel_report_log(cloudhub *ch, ke_rpc_call *call, ch_pub *p);
/* ch_tunnel_report_done: after the writer's commit (store_rc 0) the logged
 * report is acked to the edge and consumers are woken; after a failed one
 * the stream is ended unacked. ch->mu held. */
void ch_tunnel_report_done(cloudhub *ch, ke_rpc_call *call, const ch_pub *p, int store_rc);
/* ch_tunnel_resync_end releases the admission slot n holds (if any): its
 * resync is done, ResyncDone sent and everything before it acked (sent !=
 * 0: its duration feeds the estimate), or its stream ended. ch->mu held. */
void ch_tunnel_resync_end(cloudhub *ch, ch_node *n, int sent);
/* ch_node_disconnect ends the node's stream (if any) with code/why. */
void ch_node_disconnect(cloudhub *ch, ch_node *n, int code, const char *why);

/* hub.c */
int ch_hub_register(cloudhub *ch, ke_rpc_server *srv);

/* writer.c — ch->mu NOT held. */
/* ch_writer_job_new allocates a job of n zeroed items for call (batch: a
 * PublishBatch); NULL without memory. */
ch_wjob *ch_writer_job_new(ke_rpc_call *call, int batch, size_t n);
void ch_writer_job_free(ch_wjob *j);
/* ch_writer_submit hands the job to the writer, which stores it, answers
 * its call and frees it. The job must hold a reference to its call.
 * KE_EFULL (queue at its bound) or KE_ECLOSED (stopping): not taken. */
int ch_writer_submit(cloudhub *ch, ch_wjob *j);
int ch_writer_start(cloudhub *ch);
/* ch_writer_stop stores and answers what is queued, then ends the thread. */
void ch_writer_stop(cloudhub *ch);

/* subscribe.c — ch->mu held unless said otherwise. */
/* ch_subscribe_handler: the Subscribe method's callbacks (ud: the hub). */
extern const ke_rpc_handler ch_subscribe_handler;
/* ch_subscribe_wake lets every live consumer of group send what the log
 * now holds for it. */
void ch_subscribe_wake(cloudhub *ch, const char *group);
/* ch_subscribe_ack_log moves the consumer's cursor of a writer job (cack)
 * to its newest ack inside the writer's transaction, or clears j->sub when
 * there is nothing left to do (a stream that closed or was refused first
 * made its ack durable itself). Returns 0 or a store error. ch->mu held. */
int ch_subscribe_ack_log(cloudhub *ch, ch_wjob *j, int *collected);
/* ch_subscribe_acked, after the commit (rc 0) or a failed one: moves the
 * in-memory cursor to log_id, opens the window and sends more, or ends the
 * stream INTERNAL. */
void ch_subscribe_acked(cloudhub *ch, ch_subscriber *s, uint64_t log_id, int collected, int rc);
/* ch_subscribe_free_all frees the subscribers left at shutdown. */
void ch_subscribe_free_all(cloudhub *ch);

/* join.c */
int ch_join_register(cloudhub *ch, ke_rpc_server *srv);

/* tcall.c */
/* ch_tcall_init prepares the tables (cloudhub_new). 0 or KE_ENOMEM. */
int ch_tcall_init(cloudhub *ch);
/* ch_tcall_free frees the tables (cloudhub_free; every call has closed). */
void ch_tcall_free(cloudhub *ch);
/* ch_tcall_open registers the caller's call for node as a tunnel call of
 * kind and sends its request (kind->send with arg) on the node's tunnel.
 * The ch_tcall becomes the call's data, freed by ch_tcall_close. Returns
 * its id, or 0 after finishing the call (not connected, past the bound,
 * out of memory, tunnel full). ch->mu NOT held. */
uint64_t ch_tcall_open(cloudhub *ch, const ch_tcall_kind *kind, ke_rpc_call *call,
                       const char *node, const void *arg);
/* ch_tcall_close is the caller's on_close: a call still linked is unlinked
 * and handed to abandoned (ch->mu held; n its node, whose stream may be
 * NULL), then its memory is freed. ch->mu NOT held. */
void ch_tcall_close(cloudhub *ch, ke_rpc_call *call,
                    void (*abandoned)(cloudhub *ch, ch_node *n, const ch_tcall *tc));
/* ch_tcall_find returns the active call of kind with id if it belongs to
 * node and rides tunnel, else NULL. ch->mu held. */
ch_tcall *ch_tcall_find(cloudhub *ch, int kind, uint64_t id, const char *node,
                        ke_rpc_call *tunnel);
/* ch_tcall_unlink takes tc out of its table and node list (its end);
 * a no-op when it is not linked. ch->mu held. */
void ch_tcall_unlink(cloudhub *ch, ch_tcall *tc);
/* ch_tcall_tunnel_gone ends every tunnel call of n, log streams first, with
 * UNAVAILABLE (its tunnel ended or was replaced, or the node was removed).
 * ch->mu held. */
void ch_tcall_tunnel_gone(cloudhub *ch, ch_node *n, const char *why);

/* logs.c */
/* ch_logs_handler: the Logs method's callbacks (ud: the hub). */
extern const ke_rpc_handler ch_logs_handler;
/* ch_logs_on_chunk relays a LogChunk frame of node `node` received on
 * tunnel `call` to its Logs caller. ch->mu NOT held. */
void ch_logs_on_chunk(cloudhub *ch, const char *node, ke_rpc_call *call,
                      const Ke__V1__LogChunk *chunk);

/* service.c */
/* ch_service_handler: the ProxyHTTP method's callbacks (ud: the hub). */
extern const ke_rpc_handler ch_service_handler;
/* ch_service_on_response ends the ProxyHTTP call a ServiceResponse frame of
 * node `node`, received on tunnel `call`, answers. ch->mu NOT held. */
void ch_service_on_response(cloudhub *ch, const char *node, ke_rpc_call *call,
                            const Ke__V1__ServiceResponse *r);

/* ch_resource_node extracts <node> from "node/<node>/..." into buf;
 * returns 0 or KE_EINVAL. */
int ch_resource_node(const char *resource, char *buf, size_t len);

#endif
