/*
 * test_nodesync.c — lib/nodesync's cache against a real store and an
 * in-process CloudHub: a pod bound to a node makes the node want the pod
 * and what it references; a watch that falls off the store's history
 * (its events compacted away while the store's dispatcher was busy) is
 * relisted, and the cache ends equal to the store — the change it missed
 * (a pod moved to another node, a pod deleted) is not lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.h"
#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_nodesync.h"
#include "ke_pki.h"
#include "ke_rpc.h"
#include "ke_store.h"
#include "ke_testproc.h"
#include "ke_time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t refs_fn(const json_t *pod, char **refs, size_t cap)
{
    const char *cm = ke_k8s_str(pod, "metadata.annotations.cm");
    char buf[300];
    if (!cm || cap == 0)
        return 0;
    snprintf(buf, sizeof(buf), "default/ConfigMap/%s", cm);
    return (refs[0] = strdup(buf)) != NULL;
}

static void put_pod(ke_store *s, const char *name, const char *node, const char *cm)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"default\",\"annotations\":{\"cm\":\"%s\"}},\"spec\":"
             "{\"nodeName\":\"%s\"}}",
             name, cm, node);
    json_t *obj = json_loads(json, 0, NULL);
    assert_non_null(obj);
    assert_int_equal(ke_store_create(s, obj, NULL), 0);
    json_decref(obj);
}

static void put_cm(ke_store *s, const char *name)
{
    char json[256];
    snprintf(json, sizeof(json),
             "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"%s\","
             "\"namespace\":\"default\"},\"data\":{\"k\":\"v\"}}",
             name);
    json_t *obj = json_loads(json, 0, NULL);
    assert_int_equal(ke_store_create(s, obj, NULL), 0);
    json_decref(obj);
}

/* wait_wants waits until ke_nodesync_wants gives want. */
static void wait_wants(ke_nodesync *ns, const char *node, const char *kind, const char *name,
                       int want)
{
    int64_t until = ke_time_mono_ms() + 10000;
    int got;
    while ((got = ke_nodesync_wants(ns, node, kind, "default", name)) != want &&
           ke_time_mono_ms() < until)
        pause_ms(5);
    if (got != want)
        fprintf(stderr, "node %s wants %s %s: %d, expected %d\n", node, kind, name, got, want);
    assert_int_equal(got, want);
}

/* A watch whose callback holds the store's dispatcher until released. */
typedef struct blocker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside, release;
} blocker;

static void block_cb(int type, const json_t *obj, uint64_t rev, void *ud)
{
    (void)type;
    (void)obj;
    (void)rev;
    blocker *b = ud;
    pthread_mutex_lock(&b->mu);
    b->inside = 1;
    pthread_cond_broadcast(&b->cv);
    while (!b->release)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void write_file(const char *dir, const char *name, const char *data, char *path)
{
    snprintf(path, 128, "%s/%s", dir, name);
    assert_int_equal(ke_pki_write_file(path, data, strlen(data), 0600), 0);
}

static void test_nodesync_relists_after_falling_off_the_history(void **state)
{
    (void)state;
    char dir[64], ca_path[128], key_path[128], secret_path[128], hubdb[128], storedb[128],
        hex[65];
    char *ca = NULL, *key = NULL;
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    assert_int_equal(ke_pki_ca_create("test CA", 3600, &ca, &key), 0);
    assert_int_equal(ke_pki_random_hex(32, hex), 0);
    write_file(dir, "ca.crt", ca, ca_path);
    write_file(dir, "ca.key", key, key_path);
    write_file(dir, "token.secret", hex, secret_path);
    snprintf(hubdb, sizeof(hubdb), "%s/cloudhub.db", dir);
    snprintf(storedb, sizeof(storedb), "%s/store.db", dir);

    cloudhub_config cfg = {.db_path = hubdb,
                           .ca_cert_file = ca_path,
                           .ca_key_file = key_path,
                           .token_secret_file = secret_path};
    cloudhub *hub = NULL;
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    ke_rpc_channel *ch = NULL;
    ke_rpc_server_opts so = {.listen = NULL};
    assert_int_equal(cloudhub_new(&cfg, &hub), 0);
    assert_int_equal(ke_rpc_loop_new(1, &loop), 0);
    assert_int_equal(ke_rpc_server_new(loop, &so, &srv), 0);
    assert_int_equal(cloudhub_register(hub, srv), 0);
    assert_int_equal(ke_rpc_server_start(srv), 0);
    assert_int_equal(ke_rpc_channel_new_inproc(loop, srv, &ch), 0);

    ke_store *s = NULL;
    assert_int_equal(ke_store_open(storedb, &s), 0);
    put_cm(s, "cm1");
    put_pod(s, "p1", "n1", "cm1");

    static const char *const refs[] = {"ConfigMap"};
    ke_nodesync_config nc = {.name = "test",
                             .store = s,
                             .hub = ch,
                             .primary = "Pod",
                             .ref_kinds = refs,
                             .n_ref_kinds = 1,
                             .refs = refs_fn};
    ke_nodesync *ns = NULL;
    assert_int_equal(ke_nodesync_new(&nc, &ns), 0);
    assert_int_equal(ke_nodesync_start(ns), 0);
    wait_wants(ns, "n1", "Pod", "p1", 1);
    wait_wants(ns, "n1", "ConfigMap", "cm1", 1);
    wait_wants(ns, "n2", "Pod", "p1", 0);

    /* Live changes follow. */
    put_pod(s, "p2", "n2", "cm1");
    wait_wants(ns, "n2", "Pod", "p2", 1);
    wait_wants(ns, "n2", "ConfigMap", "cm1", 1);

    /* Hold the dispatcher, change the store, compact the history past the
     * changes the nodesync has not seen: its watch falls behind. */
    blocker b = {0};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    ke_store_watch *bw = NULL;
    assert_int_equal(
        ke_store_watch_start(s, "ConfigMap", "", NULL, NULL, ke_store_revision(s), block_cb, &b,
                             &bw),
        0);
    put_cm(s, "blocker"); /* the dispatcher enters block_cb */
    pthread_mutex_lock(&b.mu);
    while (!b.inside)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    assert_int_equal(ke_store_delete(s, "Pod", "default", "p1", 0, NULL), 0);
    put_pod(s, "p3", "n3", "cm2");
    put_cm(s, "cm2");
    assert_int_equal(ke_store_compact(s, 0), 0);
    pthread_mutex_lock(&b.mu);
    b.release = 1;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);

    /* The relist brings the cache to what the store says. */
    wait_wants(ns, "n1", "Pod", "p1", 0);
    wait_wants(ns, "n1", "ConfigMap", "cm1", 0);
    wait_wants(ns, "n3", "Pod", "p3", 1);
    wait_wants(ns, "n3", "ConfigMap", "cm2", 1);
    wait_wants(ns, "n2", "Pod", "p2", 1);
    assert_true(ke_nodesync_rev(ns) >= ke_store_revision(s) - 1);
    /* And it keeps following live changes afterwards. */
    put_pod(s, "p4", "n1", "cm1");
    wait_wants(ns, "n1", "Pod", "p4", 1);
    wait_wants(ns, "n1", "ConfigMap", "cm1", 1);

    ke_store_watch_stop(bw);
    ke_nodesync_free(ns);
    ke_store_close(s);
    ke_rpc_channel_free(ch);
    ke_rpc_server_free(srv);
    cloudhub_free(hub);
    ke_rpc_loop_free(loop);
    free(ca);
    free(key);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nodesync_relists_after_falling_off_the_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
