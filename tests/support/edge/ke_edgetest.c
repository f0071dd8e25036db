/*
 * ke_edgetest.c — see ke_edgetest.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_edgetest.h"

#include "ke_err.h"
#include "ke_metrics.h"
#include "metamanager.h"

#include <stdlib.h>
#include <string.h>

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

void ke_edgetest_stop(ke_edgetest *t)
{
    ke_rt_stop(t->edge);
    pthread_join(t->thread, NULL);
    assert_int_equal(t->run_rc, 0);
    ke_rt_free(t->edge);
    edge_store_close(t->store);
    t->edge = NULL;
    t->store = NULL;
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
