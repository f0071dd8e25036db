/*
 * ke_edgetest.c — see ke_edgetest.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_edgetest.h"

#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_metrics.h"
#include "ke_time.h"
#include "metamanager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ke_edgetest_node {
    edgehub_config hc; /* EdgeHub keeps the pointer while it runs */
    char node[64], server[64], ca[160], crt[160], key[160];
};

static void *run(void *arg)
{
    ke_edgetest *t = arg;
    t->run_rc = ke_rt_run(t->edge);
    return NULL;
}

void ke_edgetest_start(ke_edgetest *t, const char *db, ke_rpc_loop *rpc,
                       const edgehub_config *hc, const ke_module_ops *extra, void *extra_cfg)
{
    memset(t, 0, sizeof(*t));
    edge_store_opts o = {.path = db};
    assert_int_equal(edge_store_open(&o, &t->store), 0);
    ke_rt_config c = {.store = t->store, .rpc = rpc};
    assert_int_equal(ke_rt_new(&c, &t->edge), 0);
    assert_int_equal(ke_rt_add(t->edge, &metamanager_module, NULL), 0);
    assert_int_equal(ke_rt_add(t->edge, &edgehub_module, (void *)hc), 0);
    if (extra)
        assert_int_equal(ke_rt_add(t->edge, extra, extra_cfg), 0);
    assert_int_equal(pthread_create(&t->thread, NULL, run, t), 0);
}

void ke_edgetest_start_node(ke_edgetest *t, struct ke_cluster *c, const char *node, const char *db_name,
                            const ke_module_ops *extra, void *extra_cfg)
{
    ke_edgetest_node *nc = calloc(1, sizeof(*nc));
    assert_non_null(nc);
    char db[160];
    snprintf(nc->node, sizeof(nc->node), "%s", node);
    snprintf(nc->ca, sizeof(nc->ca), "%s/%s/ca.crt", c->dir, node);
    snprintf(nc->crt, sizeof(nc->crt), "%s/%s/node.crt", c->dir, node);
    snprintf(nc->key, sizeof(nc->key), "%s/%s/node.key", c->dir, node);
    snprintf(db, sizeof(db), "%s/%s/%s", c->dir, node, db_name);
    snprintf(nc->server, sizeof(nc->server), "127.0.0.1:%d", c->grpc_port);
    nc->hc = (edgehub_config){.node_name = nc->node,
                              .server = nc->server,
                              .ca_file = nc->ca,
                              .cert_file = nc->crt,
                              .key_file = nc->key,
                              .agent_version = "test",
                              .keepalive_ms = 1000,
                              .backoff_initial_ms = 50,
                              .backoff_max_ms = 500};
    ke_edgetest_start(t, db, c->loop, &nc->hc, extra, extra_cfg);
    t->node = nc;
    int64_t until = ke_time_mono_ms() + 30000;
    while (ke_cluster_node_connected(c, node) != 1 && ke_time_mono_ms() < until) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(ke_cluster_node_connected(c, node), 1);
}

void ke_edgetest_stop(ke_edgetest *t)
{
    ke_rt_stop(t->edge);
    pthread_join(t->thread, NULL);
    assert_int_equal(t->run_rc, 0);
    ke_rt_free(t->edge);
    edge_store_close(t->store);
    free(t->node); /* after the runtime: EdgeHub held its config */
    t->edge = NULL;
    t->store = NULL;
    t->node = NULL;
}

typedef struct get_arg {
    ke_edgetest *t;
    const char *key;
    uint64_t rv;
} get_arg;

static void get_on_loop(void *arg)
{
    get_arg *g = arg;
    uint8_t *content = NULL;
    size_t len = 0;
    if (edge_store_get(g->t->store, g->key, &g->rv, &content, &len) != 0)
        g->rv = 0;
    free(content);
}

uint64_t ke_edgetest_get(ke_edgetest *t, const char *key)
{
    get_arg g = {t, key, 0};
    assert_int_equal(ke_rt_call_sync(t->edge, get_on_loop, &g), 0);
    return g.rv;
}

int ke_edgetest_connected(void)
{
    char *text = NULL;
    size_t len = 0;
    if (ke_metrics_render(&text, &len) != 0)
        return 0;
    const char *p = strstr(text, "\nke_edgehub_connected ");
    int up = p && p[sizeof("\nke_edgehub_connected ") - 1] == '1';
    free(text);
    return up;
}
