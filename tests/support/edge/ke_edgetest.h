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

struct ke_cluster;
typedef struct ke_edgetest_node ke_edgetest_node;

typedef struct ke_edgetest {
    edge_store *store;
    ke_rt *edge;
    pthread_t thread;
    int run_rc;
    ke_edgetest_node *node; /* ke_edgetest_start_node's EdgeHub config, freed by stop */
} ke_edgetest;

/* ke_edgetest_start opens the store at db and runs MetaManager, EdgeHub
 * (with hc) and, when extra is not NULL, that module (with extra_cfg) on
 * rpc's threads. Fails the test on error. */
void ke_edgetest_start(ke_edgetest *t, const char *db, ke_rpc_loop *rpc,
                       const edgehub_config *hc, const ke_module_ops *extra, void *extra_cfg);

/* ke_edgetest_start_node runs the edge of node, joined to cluster c
 * (ke_cluster_join), as ke_edgetest_start does: its store is the file
 * db_name in the node's directory, EdgeHub connects to c's CloudHub with
 * the node's certificate (keepalive 1 s, back-off 50..500 ms). Waits until
 * CloudHub lists the node connected (30 s at most); fails the test
 * otherwise. */
void ke_edgetest_start_node(ke_edgetest *t, struct ke_cluster *c, const char *node, const char *db_name,
                            const ke_module_ops *extra, void *extra_cfg);

/* ke_edgetest_stop stops the runtime (asserting an orderly stop), joins
 * its thread and closes the store. */
void ke_edgetest_stop(ke_edgetest *t);

/* ke_edgetest_get reads key's version from the store on the loop (0 when
 * absent). */
uint64_t ke_edgetest_get(ke_edgetest *t, const char *key);

/* ke_edgetest_connected: 1 while EdgeHub's stream is up (its gauge). */
int ke_edgetest_connected(void);

#endif
