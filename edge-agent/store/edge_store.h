/*
 * edge_store.h — the edge's SQLite store: every object the cloud sent
 * (the edge's side of the resync digest), and the upstream outbox.
 *
 * Apply is idempotent by resource_version: an insert/update/patch is
 * applied only when newer than what is held, a delete when at least as new
 * (deletes leave a tombstone that remembers the version). The outbox holds
 * reports until the cloud acknowledges them; a report whose
 * (resource, resource_version) was reported before is a duplicate and is
 * not queued again. Each change is one transaction with what it records.
 * Not thread-safe: edgecore uses it from its loop thread only (one
 * connection, no lock; edge-agent/README.md, "Threading rule").
 *
 * What stays bounded, and how (docs/tunnel.md, "Edge store lifetime"):
 *   meta      live objects + tombstones; a tombstone lives until the first
 *             resync that started after it was written completes
 *             (edge_store_tombstone_mark at Hello, then
 *             edge_store_tombstones_collect at that stream's ResyncDone).
 *   reported  collected with its key's tombstone; above reported_max, the
 *             oldest rows of keys with no live object and nothing in the
 *             outbox are evicted.
 *   outbox    outbox_max; acked reports are deleted.
 *   local     what its owner writes (one row per device for DeviceTwin).
 *   audit     only with `audit` (tests, forensics): grows with every change.
 */
#ifndef EDGE_STORE_H
#define EDGE_STORE_H

#include "cloudhub.pb-c.h"
#include "message.pb-c.h"

#include <stddef.h>
#include <stdint.h>

typedef struct edge_store edge_store;

/* Entries per digest page: the Hello and each DigestChunk carry at most
 * this many (api/cloudhub.proto). */
#define EDGE_STORE_DIGEST_PAGE 10000u
/* Tombstones (and reported rows) deleted per transaction when collecting,
 * so a large collection never holds the store's lock for long. */
#define EDGE_STORE_GC_BATCH 1000u

typedef struct edge_store_opts {
    const char *path;      /* SQLite file (":memory:" for tests) */
    int audit;             /* record every applied change (key, rv, op) */
    uint32_t outbox_max;   /* reports queued at most; 0: 100,000 */
    uint32_t reported_max; /* reported rows kept for keys without a live
                            * object; 0: 100,000 */
} edge_store_opts;

/* edge_store_open opens (creating/migrating) the store described by o.
 * With o->audit set, every applied change is also recorded in the audit
 * table, in the same transaction. Returns 0 or KE_EINVAL/KE_EDB/KE_ENOMEM. */
int edge_store_open(const edge_store_opts *o, edge_store **out);

/* edge_store_close closes the store. NULL is a no-op. */
void edge_store_close(edge_store *mm);

/* edge_store_apply applies a downstream message. Returns 1 when applied,
 * 0 when ignored as stale, KE_EINVAL for a message without route/header/
 * resource, KE_EDB. */
int edge_store_apply(edge_store *mm, const Ke__V1__Message *msg);

/* edge_store_digest_page reads one page of the digest: the live objects
 * whose key sorts after `after` ("" or NULL: from the first), in key
 * order, at most max_entries of them and, past the first, at most
 * max_bytes of packed DigestEntry (so a page fits a message bound whatever
 * the keys' lengths). *out is a malloc'd array of *n entries (NULL when
 * none); free it with edge_store_digest_free. *more is set when objects
 * follow the page: read the next with after = the page's last key. Only
 * one page is ever in memory. Returns 0, KE_EINVAL, KE_ENOMEM, KE_EDB. */
int edge_store_digest_page(edge_store *mm, const char *after, size_t max_entries,
                            size_t max_bytes, Ke__V1__DigestEntry ***out, size_t *n,
                            int *more);

/* edge_store_digest_free frees a page from edge_store_digest_page.
 * NULL is a no-op. */
void edge_store_digest_free(Ke__V1__DigestEntry **d, size_t n);

/* edge_store_tombstone_mark returns the store's change mark: every
 * tombstone written so far is at or below it. EdgeHub takes it when it
 * sends a Hello. */
uint64_t edge_store_tombstone_mark(edge_store *mm);

/* edge_store_tombstones_collect deletes the tombstones at or below mark,
 * once the cloud has answered the Hello sent at that mark (ResyncDone): the
 * cloud then holds each of those deletes, and no older update of those
 * keys can arrive any more (the caller drops frames of older streams).
 * A key that still has a report in the outbox keeps its tombstone until a
 * later resync. Each collected key's reported row goes with it. Runs in
 * transactions of at most EDGE_STORE_GC_BATCH rows. *collected (may be
 * NULL) gets the number of tombstones deleted. Returns 0 or KE_EDB (what
 * was committed before the error stays collected). */
int edge_store_tombstones_collect(edge_store *mm, uint64_t mark, size_t *collected);

/* edge_store_get copies the live object at key: *rv and a malloc'd
 * *content (may be NULL when empty). KE_ENOTFOUND when absent or deleted. */
int edge_store_get(edge_store *mm, const char *key, uint64_t *rv, uint8_t **content,
                    size_t *len);

/* edge_store_list calls fn for each live object whose key starts with
 * prefix ("" for all), in key order. */
int edge_store_list(edge_store *mm, const char *prefix,
                     int (*fn)(const char *key, uint64_t rv, const void *content, size_t len,
                               void *arg),
                     void *arg);

/* edge_store_report queues an upstream message. *seq gets its outbox
 * sequence number; *duplicate is set (and nothing queued) when this
 * (resource, resource_version) or a newer one was reported before (as
 * long as the key's reported row is kept: see the file comment).
 * KE_EINVAL for a message without resource or version, KE_EFULL when the
 * outbox is at its bound, KE_EDB. */
int edge_store_report(edge_store *mm, const Ke__V1__Message *msg, uint64_t *seq,
                       int *duplicate);

/* edge_store_outbox_scan calls fn for queued reports with seq >= from,
 * in order, at most max of them. fn gets the packed message. */
int edge_store_outbox_scan(edge_store *mm, uint64_t from, size_t max,
                            int (*fn)(uint64_t seq, const uint8_t *msg, size_t len, void *arg),
                            void *arg);

/* edge_store_outbox_ack drops every report with seq <= upto. */
int edge_store_outbox_ack(edge_store *mm, uint64_t upto);

/* edge_store_reported_rv sets *rv to the highest version reported for key
 * (0 when none is remembered). Returns 0 or KE_EDB. */
int edge_store_reported_rv(edge_store *mm, const char *key, uint64_t *rv);

/* edge_store_local_put writes state the edge owns (DeviceTwin's reported
 * twins) at key in the local table: content (len bytes), or removes the
 * row when content is NULL. When report is not NULL it is queued as by
 * edge_store_report in the same transaction: both happen or neither (seq
 * and duplicate may be NULL). Returns 0, KE_EINVAL, KE_EFULL, KE_EDB. */
int edge_store_local_put(edge_store *mm, const char *key, const void *content, size_t len,
                         const Ke__V1__Message *report, uint64_t *seq, int *duplicate);

/* edge_store_local_get copies the local row at key (malloc'd *content).
 * KE_ENOTFOUND when absent. */
int edge_store_local_get(edge_store *mm, const char *key, uint8_t **content, size_t *len);

/* edge_store_local_list calls fn for each local row whose key starts with
 * prefix, in key order, until fn returns non-zero. */
int edge_store_local_list(edge_store *mm, const char *prefix,
                          int (*fn)(const char *key, const void *content, size_t len, void *arg),
                          void *arg);

/* edge_store_outbox_pending returns the number of queued reports. */
uint64_t edge_store_outbox_pending(edge_store *mm);

/* One row of the meta table as edge_store_scan gives it. Every write of a
 * row (an applied change, a delete leaving a tombstone) gives it the next
 * value of the store's change counter, cseq; a row shows its last change
 * only. */
typedef struct edge_store_change {
    const char *key;     /* node/<node>/<namespace>/<Kind>/<name> */
    uint64_t rv;         /* the cloud's version */
    uint64_t cseq;       /* the change counter of its last write */
    int deleted;         /* a tombstone: content NULL */
    int op;              /* Ke__V1__Operation of the change as received */
    const void *content; /* the object's JSON (len bytes) */
    size_t len;
} edge_store_change;

/* edge_store_open_reader opens a second connection to the store file at
 * path, for reading from another thread (edge_store_scan, edge_store_get,
 * edge_store_list; SQLite WAL: readers run beside the loop's writer). The
 * file must have been opened by edge_store_open (its schema is current).
 * One thread at a time; close with edge_store_close. KE_EINVAL for
 * ":memory:" or an older schema, KE_EDB, KE_ENOMEM. */
int edge_store_open_reader(const char *path, edge_store **out);

/* edge_store_scan reads in one snapshot (one read transaction) the rows
 * whose key starts with prefix: with changes 0, the live objects in key
 * order (after unused); with changes 1, every row whose last change is
 * after the counter `after`, tombstones included, in change order. At
 * most max rows (0: all); fn returning non-zero stops the scan (and is
 * returned). *mark gets the
 * snapshot's change counter (every change in it is at or below it), *floor
 * the highest counter of a tombstone collected so far: a scan from after <
 * floor may miss deletes. Returns 0, KE_EINVAL, KE_EDB or fn's value. */
int edge_store_scan(edge_store *mm, const char *prefix, int changes, uint64_t after,
                    size_t max, int (*fn)(const edge_store_change *c, void *arg), void *arg,
                    uint64_t *mark, uint64_t *floor);

#endif
