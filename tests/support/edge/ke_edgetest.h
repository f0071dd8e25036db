/*
 * ke_edgetest.h — edgecore's runtime inside a test process: an edge store,
 * the runtime's loop on its own thread, and the modules the test names
 * (MetaManager and EdgeHub, plus any test module). What the test reads of
 * the store it reads on the loop (ke_edgetest_get), as a module would.
 */
#ifndef KE_EDGETEST_H
#define KE_EDGETEST_H

#include "edgehub.h"
#include "ke_rt.h"

#include <pthread.h>
#include <stdint.h>

typedef struct ke_edgetest {
    edge_store *store;
    ke_rt *edge;
    pthread_t thread;
    int run_rc;
} ke_edgetest;

/* ke_edgetest_start opens the store at db and runs MetaManager, EdgeHub
 * (with hc) and, when extra is not NULL, that module (with extra_cfg) on
 * rpc's threads. Fails the test on error. */
void ke_edgetest_start(ke_edgetest *t, const char *db, ke_rpc_loop *rpc,
                       const edgehub_config *hc, const ke_module_ops *extra, void *extra_cfg);

/* ke_edgetest_stop stops the runtime (asserting an orderly stop), joins
 * its thread and closes the store. */
void ke_edgetest_stop(ke_edgetest *t);

/* ke_edgetest_get reads key's version from the store on the loop (0 when
 * absent). */
uint64_t ke_edgetest_get(ke_edgetest *t, const char *key);

/* ke_edgetest_connected: 1 while EdgeHub's stream is up (its gauge). */
int ke_edgetest_connected(void);

#endif
