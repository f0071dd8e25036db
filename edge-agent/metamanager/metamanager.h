/*
 * metamanager.h — the edge's SQLite store: every object the cloud sent
 * (the edge's side of the resync digest), and the upstream outbox.
 *
 * Apply is idempotent by resource_version: an insert/update/patch is
 * applied only when newer than what is held, a delete when at least as new
 * (deletes leave a tombstone that remembers the version). The outbox holds
 * reports until the cloud acknowledges them; a report whose
 * (resource, resource_version) was reported before is a duplicate and is
 * not queued again. Each change is one transaction with what it records.
 * Thread-safe (one mutex around the connection).
 */
#ifndef METAMANAGER_H
#define METAMANAGER_H

#include "cloudhub.pb-c.h"
#include "message.pb-c.h"

#include <stddef.h>
#include <stdint.h>

typedef struct metamanager metamanager;

/* metamanager_open opens (creating/migrating) the store. With audit set,
 * every applied change is also recorded in the audit table (key, rv, op),
 * in the same transaction. outbox_max bounds the outbox. Returns 0 or
 * KE_EDB/KE_ENOMEM. */
int metamanager_open(const char *path, int audit, uint32_t outbox_max, metamanager **out);

/* metamanager_close closes the store. NULL is a no-op. */
void metamanager_close(metamanager *mm);

/* metamanager_apply applies a downstream message. Returns 1 when applied,
 * 0 when ignored as stale, KE_EINVAL for a message without route/header/
 * resource, KE_EDB. */
int metamanager_apply(metamanager *mm, const Ke__V1__Message *msg);

/* metamanager_digest returns every live object as DigestEntry array (key,
 * rv), malloc'd; free with metamanager_digest_free. */
int metamanager_digest(metamanager *mm, Ke__V1__DigestEntry ***out, size_t *n);
void metamanager_digest_free(Ke__V1__DigestEntry **d, size_t n);

/* metamanager_get copies the live object at key: *rv and a malloc'd
 * *content (may be NULL when empty). KE_ENOTFOUND when absent or deleted. */
int metamanager_get(metamanager *mm, const char *key, uint64_t *rv, uint8_t **content,
                    size_t *len);

/* metamanager_list calls fn for each live object whose key starts with
 * prefix ("" for all), in key order. */
int metamanager_list(metamanager *mm, const char *prefix,
                     int (*fn)(const char *key, uint64_t rv, const void *content, size_t len,
                               void *arg),
                     void *arg);

/* metamanager_report queues an upstream message. *seq gets its outbox
 * sequence number; *duplicate is set (and nothing queued) when this
 * (resource, resource_version) or a newer one was reported before.
 * KE_EINVAL for a message without resource or version, KE_EFULL when the
 * outbox is at its bound, KE_EDB. */
int metamanager_report(metamanager *mm, const Ke__V1__Message *msg, uint64_t *seq,
                       int *duplicate);

/* metamanager_outbox_scan calls fn for queued reports with seq >= from,
 * in order, at most max of them. fn gets the packed message. */
int metamanager_outbox_scan(metamanager *mm, uint64_t from, size_t max,
                            int (*fn)(uint64_t seq, const uint8_t *msg, size_t len, void *arg),
                            void *arg);

/* metamanager_outbox_ack drops every report with seq <= upto. */
int metamanager_outbox_ack(metamanager *mm, uint64_t upto);

/* metamanager_outbox_pending returns the number of queued reports. */
uint64_t metamanager_outbox_pending(metamanager *mm);

#endif
