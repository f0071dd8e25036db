/*
 * test_large_node.c — a node with 100,000 objects connects and resyncs,
 * with real processes: cloudcore (CloudHub alone: no controller converges
 * the node, so what is published stays as published), edgecore, the Hub
 * API as system:admin.
 *
 *   1. 100,000 small ConfigMap objects are published for edge-1 through
 *      Hub.Publish (asynchronously, at most PUBLISH_WINDOW in flight) and
 *      reach edgecore's store: EdgeLocal.List by prefix, 1,000 keys a
 *      page, finds every one at its version with its content.
 *   2. edgecore restarts: it sends its 100,000-entry digest (a Hello and
 *      DigestChunks) and CloudHub answers with nothing but ResyncDone
 *      (`node connected node=edge-1 ... digest=100000 updates=0
 *      deletes=0`).
 *   3. 1,000 of the objects are deleted while edgecore is stopped; it
 *      starts again, CloudHub answers exactly those 1,000 deletes, and the
 *      edge's store ends with the other 99,000 intact.
 * Each phase's time is printed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_cluster.h"
#include "ke_time.h"
#include "message.pb-c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"
#define NOBJ 100000
#define PAGE 1000          /* keys per EdgeLocal.List prefix */
#define DELETE_EVERY 100   /* every 100th object is deleted: 1,000 */
#define PUBLISH_WINDOW 256 /* Hub.Publish calls in flight */
#define WAIT_MS 90000

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void key_of(char *buf, size_t len, int i)
{
    snprintf(buf, len, "node/" NODE "/default/ConfigMap/cm-%06d", i);
}

static int content_of(char *buf, size_t len, int i)
{
    return snprintf(buf, len,
                    "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                    "\"cm-%06d\",\"namespace\":\"default\",\"resourceVersion\":\"1\"},\"data\":"
                    "{\"k\":\"v%d\"}}",
                    i, i);
}

/* ---- publishing many, PUBLISH_WINDOW at a time ---- */

typedef struct pub_window {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight, failed, done;
    int first_code;
} pub_window;

static void pub_done(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud)
{
    (void)reply;
    pub_window *w = ud;
    pthread_mutex_lock(&w->mu);
    w->in_flight--;
    w->done++;
    if (st->code != KE_RPC_OK && w->failed++ == 0)
        w->first_code = st->code;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* publish_many publishes every object i in [0, NOBJ) with i % every == 0,
 * at version rv: an UPDATE with its content, or a DELETE. Fails the test
 * unless every Publish returned OK. Returns the seconds it took. */
static double publish_many(ke_cluster *c, int every, uint64_t rv, int del)
{
    int64_t t0 = ke_time_mono_ms();
    pub_window w;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int sent = 0;
    for (int i = 0; i < NOBJ; i += every) {
        char key[96], content[256];
        int len = del ? 0 : content_of(content, sizeof(content), i);
        key_of(key, sizeof(key), i);
        Ke__V1__Message m = KE__V1__MESSAGE__INIT;
        Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
        Ke__V1__Route r = KE__V1__ROUTE__INIT;
        h.resource_version = rv;
        r.source = "test";
        r.group = "resource";
        r.operation = del ? KE__V1__OPERATION__OPERATION_DELETE
                          : KE__V1__OPERATION__OPERATION_UPDATE;
        r.resource = key;
        m.header = &h;
        m.route = &r;
        m.content.data = (uint8_t *)content;
        m.content.len = (size_t)len;
        Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
        req.node_name = NODE;
        req.message = &m;
        pthread_mutex_lock(&w.mu);
        while (w.in_flight >= PUBLISH_WINDOW)
            pthread_cond_wait(&w.cv, &w.mu);
        w.in_flight++;
        pthread_mutex_unlock(&w.mu);
        ke_rpc_call_opts o = {.timeout_ms = 60000};
        int rc = ke_rpc_unary_async(c->admin, "/ke.v1.Hub/Publish", &req.base,
                                    &ke__v1__publish_reply__descriptor, &o, pub_done, &w);
        if (rc != 0)
            fail_msg("ke_rpc_unary_async: %d", rc);
        sent++;
    }
    pthread_mutex_lock(&w.mu);
    while (w.done < sent)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (w.failed)
        fail_msg("%d of %d publishes failed, the first with %s", w.failed, sent,
                 ke_rpc_status_name(w.first_code));
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return (ke_time_mono_ms() - t0) / 1000.0;
}

/* ---- the edge's store ---- */

/* edge_check lists the edge's store by prefix, PAGE keys at a time, and
 * counts the objects; *bad counts those that should not be there (deleted
 * when `deleted` is set) or differ in version or content. Returns the count
 * of objects, or -1 when a List failed. */
static long edge_check(ke_edge *e, int deleted, long *bad, int verbose)
{
    long n = 0;
    *bad = 0;
    for (int p = 0; p < NOBJ / PAGE; p++) {
        char prefix[96];
        snprintf(prefix, sizeof(prefix), "node/" NODE "/default/ConfigMap/cm-%03d", p);
        Ke__V1__EdgeListRequest req = KE__V1__EDGE_LIST_REQUEST__INIT;
        req.prefix = prefix;
        ke_rpc_stub local = {e->local, &ke__v1__edge_local__descriptor};
        ke_rpc_call_opts o = {.timeout_ms = 30000};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st;
        if (ke_rpc_stub_unary(&local, "List", &req.base, &o, &reply, &st) != 0 ||
            st.code != KE_RPC_OK) {
            if (reply)
                protobuf_c_message_free_unpacked(reply, NULL);
            return -1;
        }
        Ke__V1__EdgeListReply *r = (Ke__V1__EdgeListReply *)reply;
        for (size_t j = 0; j < r->n_objects; j++) {
            const Ke__V1__EdgeObject *obj = r->objects[j];
            int i = -1;
            char content[256];
            if (sscanf(obj->key, "node/" NODE "/default/ConfigMap/cm-%d", &i) != 1 || i < 0 ||
                i >= NOBJ) {
                (*bad)++;
                continue;
            }
            int len = content_of(content, sizeof(content), i);
            if ((deleted && i % DELETE_EVERY == 0) || obj->resource_version != 1 ||
                obj->content.len != (size_t)len || memcmp(obj->content.data, content, len) != 0) {
                if (verbose && *bad < 10)
                    fprintf(stderr, "large_node: the edge holds %s at rv %llu%s\n", obj->key,
                            (unsigned long long)obj->resource_version,
                            deleted && i % DELETE_EVERY == 0 ? " (deleted)" : "");
                (*bad)++;
            }
            n++;
        }
        protobuf_c_message_free_unpacked(reply, NULL);
    }
    return n;
}

/* wait_edge waits until the edge holds exactly `want` objects, none bad. */
static void wait_edge(ke_edge *e, long want, int deleted)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    long n, bad;
    for (;;) {
        int late = ke_time_mono_ms() > until;
        n = edge_check(e, deleted, &bad, late);
        if ((n == want && bad == 0) || late)
            break;
        pause_ms(500);
    }
    if (n != want || bad != 0)
        fail_msg("the edge holds %ld objects (%ld wrong), want %ld", n, bad, want);
}

/* wait_acked waits until CloudHub counts at least n messages acked by the
 * edge (each ack follows the edge's commit): a cheap gate before the full
 * List of the edge's store. */
static void wait_acked(ke_cluster *c, long long n)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    long long acked;
    while ((acked = ke_cluster_metric(c, "ke_cloudhub_messages_acked_total")) < n &&
           ke_time_mono_ms() < until)
        pause_ms(200);
    if (acked < n)
        fail_msg("CloudHub counts %lld messages acked by the edge, want at least %lld", acked, n);
}

/* ---- CloudHub's connect line ---- */

typedef struct connect_line {
    int count; /* connect lines for NODE so far */
    unsigned long digest, updates, deletes;
} connect_line;

/* last_connect reads the cloud log's `node connected node=edge-1` lines:
 * how many, and the figures of the last. */
static connect_line last_connect(const char *path)
{
    connect_line cl = {0, 0, 0, 0};
    FILE *f = fopen(path, "r");
    if (!f)
        return cl;
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        const char *d;
        if (!strstr(line, "node connected node=" NODE " ") || !(d = strstr(line, " digest=")))
            continue;
        if (sscanf(d, " digest=%lu updates=%lu deletes=%lu", &cl.digest, &cl.updates,
                   &cl.deletes) == 3)
            cl.count++;
    }
    fclose(f);
    return cl;
}

/* restart_edge starts edgecore and waits for CloudHub's next connect line
 * for the node; returns it, and the seconds from start to it. */
static connect_line restart_edge(ke_cluster *c, ke_edge *e, double *secs)
{
    int before = last_connect(c->cloud_log).count;
    int64_t t0 = ke_time_mono_ms(), until = t0 + WAIT_MS;
    ke_edge_start(c, e, NODE, c->grpc_port, NULL);
    connect_line cl;
    while ((cl = last_connect(c->cloud_log)).count == before && ke_time_mono_ms() < until)
        pause_ms(50);
    if (cl.count == before)
        fail_msg("edge-1 did not connect within %d s of its start", WAIT_MS / 1000);
    *secs = (ke_time_mono_ms() - t0) / 1000.0;
    return cl;
}

static void test_large_node_connects_and_resyncs(void **state)
{
    (void)state;
    int64_t t0 = ke_time_mono_ms();
    static const char *const hub_only[] = {"--edgecontroller.enable=false", NULL};
    ke_cluster c;
    ke_edge e = {0};
    ke_cluster_start(&c, hub_only);
    assert_int_equal(ke_cluster_join(&c, NODE, ke_cluster_token(&c)), 0);
    ke_edge_start(&c, &e, NODE, c.grpc_port, NULL);

    /* 1. 100,000 objects reach the edge. */
    double t_pub = publish_many(&c, 1, 1, 0);
    int64_t t1 = ke_time_mono_ms();
    wait_acked(&c, NOBJ);
    wait_edge(&e, NOBJ, 0);
    double t_deliver = (ke_time_mono_ms() - t1) / 1000.0;

    /* 2. A restart: the whole digest goes up, nothing comes down. */
    ke_edge_stop(&e);
    double t_connect;
    connect_line cl = restart_edge(&c, &e, &t_connect);
    if (cl.digest != NOBJ || cl.updates != 0 || cl.deletes != 0)
        fail_msg("connect after the restart: digest=%lu updates=%lu deletes=%lu, want "
                 "digest=%d updates=0 deletes=0",
                 cl.digest, cl.updates, cl.deletes, NOBJ);
    wait_edge(&e, NOBJ, 0);

    /* 3. 1,000 deleted while the edge is away: exactly those go. */
    ke_edge_stop(&e);
    double t_del = publish_many(&c, DELETE_EVERY, 2, 1);
    double t_connect2;
    cl = restart_edge(&c, &e, &t_connect2);
    if (cl.digest != NOBJ || cl.updates != 0 || cl.deletes != NOBJ / DELETE_EVERY)
        fail_msg("connect after the deletes: digest=%lu updates=%lu deletes=%lu, want "
                 "digest=%d updates=0 deletes=%d",
                 cl.digest, cl.updates, cl.deletes, NOBJ, NOBJ / DELETE_EVERY);
    int64_t t2 = ke_time_mono_ms();
    wait_edge(&e, NOBJ - NOBJ / DELETE_EVERY, 1);
    double t_applied = (ke_time_mono_ms() - t2) / 1000.0;

    fprintf(stderr,
            "large_node: objects=%d publish=%.1fs (%.0f/s) delivered+listed=%.1fs "
            "restart->connected(digest=%d, 0 updates)=%.1fs deletes=%d publish=%.1fs "
            "restart->connected=%.1fs deletes-applied=%.1fs total=%.1fs\n",
            NOBJ, t_pub, NOBJ / t_pub, t_deliver, NOBJ, t_connect, NOBJ / DELETE_EVERY, t_del,
            t_connect2, t_applied, (ke_time_mono_ms() - t0) / 1000.0);
    ke_edge_stop(&e);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_node_connects_and_resyncs),
    };
    return cmocka_run_group_tests_name("large_node", tests, NULL, NULL);
}
