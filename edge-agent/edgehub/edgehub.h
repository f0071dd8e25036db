/*
 * edgehub.h — the EdgeHub module: the edge end of the tunnel. It keeps one
 * bidirectional Tunnel stream to CloudHub over mutual TLS, on the loop:
 *
 *   connect  -> a barrier through MetaManager (every change of an older
 *               stream is applied before it), then Hello with the store's
 *               digest; the cloud answers HelloAck, the resync difference,
 *               ResyncDone, live changes
 *   receive  -> each change goes to MetaManager on the bus; acked to the
 *               cloud once MetaManager answers that it is durable
 *   send     -> the outbox, in order, from the seq the cloud expects,
 *               at most `window` unacknowledged
 *   liveness -> a keepalive every keepalive period; a cloud silent for
 *               dead_peer is dropped
 *   lost     -> reconnect after a jittered exponential backoff
 *   rotation -> before the certificate expires (or when sent a message
 *               with resource "edgehub/rotate"), a new key and certificate
 *               through Renew, then a reconnect with them
 */
#ifndef EDGEHUB_H
#define EDGEHUB_H

#include "ke_rt.h"

#include <stdint.h>

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

/* The module; its config is an edgehub_config (borrowed for its life). It
 * needs the metamanager module. */
extern const ke_module_ops edgehub_module;

/* The resource of the message that asks for a rotation now. */
#define EDGEHUB_ROTATE "edgehub/rotate"

#endif
