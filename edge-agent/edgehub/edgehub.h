/*
 * edgehub.h — EdgeHub: the edge end of the tunnel. One thread keeps one
 * bidirectional Tunnel stream to CloudHub over mutual TLS:
 *
 *   connect  -> Hello with MetaManager's digest; the cloud answers
 *               HelloAck, the resync difference, ResyncDone, live changes
 *   receive  -> apply to MetaManager (idempotent), ack once durable
 *   send     -> the outbox, in order, from the seq the cloud expects,
 *               at most `window` unacknowledged
 *   liveness -> a keepalive every keepalive period; a cloud silent for
 *               dead_peer is dropped
 *   lost     -> reconnect after a jittered exponential backoff
 *   rotation -> before the certificate expires (or on request), a new key
 *               and certificate through Renew, then a reconnect with them
 */
#ifndef EDGEHUB_H
#define EDGEHUB_H

#include "ke_rpc.h"
#include "metamanager.h"

#include <stdint.h>

typedef struct edgehub edgehub;

typedef struct edgehub_config {
    const char *node_name;
    const char *server;     /* CloudHub host:port */
    const char *ca_file;    /* cluster CA */
    const char *cert_file;  /* node certificate (rewritten on rotation) */
    const char *key_file;   /* node key (rewritten on rotation) */
    const char *agent_version;
    int64_t keepalive_ms;   /* default 5 s (the cloud's HelloAck may lower it) */
    int64_t dead_peer_ms;   /* default 15 s */
    int64_t backoff_initial_ms; /* default 500 ms */
    int64_t backoff_max_ms;     /* default 30 s */
    int64_t renew_before_ms;    /* rotate when the certificate has less left; default 30 days */
    uint32_t window;            /* upstream messages in flight; default 256 */
} edgehub_config;

/* edgehub_new prepares the hub; strings are copied. Nothing connects until
 * edgehub_start. Returns 0, KE_EINVAL, KE_ENOMEM. */
int edgehub_new(const edgehub_config *cfg, ke_rpc_loop *loop, metamanager *mm, edgehub **out);

/* edgehub_start starts the connection thread. */
int edgehub_start(edgehub *eh);

/* edgehub_notify tells the hub that the outbox has new reports. Thread-safe. */
void edgehub_notify(edgehub *eh);

/* edgehub_rotate asks for a certificate rotation now. Thread-safe and
 * async-signal-unsafe: call it from a normal thread. */
void edgehub_rotate(edgehub *eh);

/* edgehub_connected returns 1 while a stream is established (HelloAck seen). */
int edgehub_connected(edgehub *eh);

/* edgehub_free stops the thread, closes the stream and frees. NULL: no-op. */
void edgehub_free(edgehub *eh);

#endif
