/*
 * ke_consumer.h — a Hub.Subscribe consumer for tests: opens the bidi
 * stream as a named consumer, records every UpstreamMessage it receives
 * (node, seq, key, group, version, log id), and acks either by itself
 * (auto_ack: each entry as it arrives) or when the test says so. Waits are
 * on conditions with a monotonic deadline, never sleeps.
 */
#ifndef KE_CONSUMER_H
#define KE_CONSUMER_H

#include "cloudhub.pb-c.h"
#include "ke_rpc.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ke_consumer_entry {
    uint64_t log_id, seq, rv;
    char node[64];
    char key[200];
    char group[64];
} ke_consumer_entry;

typedef struct ke_consumer ke_consumer;

/* ke_consumer_fn, when set, runs for each entry on an rpc thread (under the
 * consumer's lock: do not call back into it). */
typedef void (*ke_consumer_fn)(const Ke__V1__UpstreamMessage *m, void *ud);

/* The fields are the helper's: the rpc thread writes them under mu; a test
 * reads them through the functions below. */
struct ke_consumer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ke_rpc_call *call;
    int auto_ack;
    uint64_t ack_owed;   /* newest log id to ack, not yet sent (client queue full) */
    ke_consumer_entry *v;
    size_t n, cap;
    int closed;
    ke_rpc_status st;
    ke_consumer_fn fn;
    void *ud;
};

/* ke_consumer_start subscribes as `name` to groups (NULL-terminated; NULL:
 * every group) with window (0: the default) on the Hub API channel ch.
 * Fails the test on error. fn/ud may be NULL. */
void ke_consumer_start(ke_consumer *c, ke_rpc_channel *ch, const char *name,
                       const char *const *groups, uint32_t window, int auto_ack,
                       ke_consumer_fn fn, void *ud);

/* ke_consumer_wait waits until at least n entries were received (or the
 * stream closed); returns 1 when they were. */
int ke_consumer_wait(ke_consumer *c, size_t n, int timeout_ms);

/* ke_consumer_wait_closed waits for the stream's end; returns 1 if it ended. */
int ke_consumer_wait_closed(ke_consumer *c, int timeout_ms);

/* ke_consumer_ack acks everything up to log_id. Returns ke_rpc_call_send's code. */
int ke_consumer_ack(ke_consumer *c, uint64_t log_id);

/* ke_consumer_count returns the entries received so far. */
size_t ke_consumer_count(ke_consumer *c);

/* ke_consumer_get returns a copy of entry i, read under the consumer's
 * lock (the rpc thread may be appending); fails the test if there is no
 * entry i yet. */
ke_consumer_entry ke_consumer_get(ke_consumer *c, size_t i);

/* ke_consumer_closed returns 1 if the stream has ended, copying its status
 * to *st when st is not NULL; 0 while it is open. */
int ke_consumer_closed(ke_consumer *c, ke_rpc_status *st);

/* ke_consumer_status returns the status the stream ended with; fails the
 * test if it is still open. */
ke_rpc_status ke_consumer_status(ke_consumer *c);

/* ke_consumer_stop cancels the stream, waits for its end and frees
 * everything (the entries too). */
void ke_consumer_stop(ke_consumer *c);

#endif
