/*
 * test_edgehub_digest.c — EdgeHub's side of the chunked digest, against a
 * fake CloudHub Tunnel (mutual TLS on loopback, the test PKI): a node
 * holding 25,000 objects sends a Hello with 10,000 entries and
 * digest_follows, then DigestChunks of 10,000 and 5,000 (the last with
 * last = true), every key once and in order; at the fake cloud's
 * ResyncDone the tombstones that predate the Hello are collected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "edgehub.h"
#include "ke_err.h"
#include "ke_rpc.h"
#include "ke_testproc.h"
#include "ke_time.h"
#include "ke_edgetest.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOBJ 25000
#define NTOMB 100
#define KEYFMT "node/edge-1/default/ConfigMap/cm-%06d"

/* What the fake cloud saw. */
typedef struct cloud {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int frames, hellos, chunks, done, out_of_order;
    size_t sizes[8];
    int flags[8]; /* Hello: digest_follows; DigestChunk: last */
    int entries;  /* digest entries seen, in order */
} cloud;

static void cloud_entries(cloud *c, Ke__V1__DigestEntry **e, size_t n)
{
    char want[96];
    for (size_t i = 0; i < n; i++, c->entries++) {
        snprintf(want, sizeof(want), KEYFMT, c->entries);
        if (strcmp(e[i]->key, want) != 0)
            c->out_of_order++;
    }
}

/* cloud_answer: the digest is complete; answer as CloudHub does. */
static void cloud_answer(cloud *c, ke_rpc_call *call)
{
    Ke__V1__HelloAck a = KE__V1__HELLO_ACK__INIT;
    Ke__V1__ResyncDone rd = KE__V1__RESYNC_DONE__INIT;
    Ke__V1__CloudFrame f = KE__V1__CLOUD_FRAME__INIT;
    a.next_edge_seq = 1;
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK;
    f.hello_ack = &a;
    int rc = ke_rpc_call_send(call, &f.base);
    f.frame_case = KE__V1__CLOUD_FRAME__FRAME_RESYNC_DONE;
    f.resync_done = &rd;
    if (rc == 0)
        rc = ke_rpc_call_send(call, &f.base);
    c->done = rc == 0 ? 1 : -1;
}

static void cloud_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloud *c = ud;
    const Ke__V1__EdgeFrame *f = (const Ke__V1__EdgeFrame *)m;
    pthread_mutex_lock(&c->mu);
    if (f->frame_case == KE__V1__EDGE_FRAME__FRAME_HELLO ||
        f->frame_case == KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK) {
        int i = c->frames++ % 8;
        if (f->frame_case == KE__V1__EDGE_FRAME__FRAME_HELLO) {
            c->hellos++;
            c->sizes[i] = f->hello->n_digest;
            c->flags[i] = f->hello->digest_follows;
            cloud_entries(c, f->hello->digest, f->hello->n_digest);
            if (!f->hello->digest_follows)
                cloud_answer(c, call);
        } else {
            c->chunks++;
            c->sizes[i] = f->digest_chunk->n_entries;
            c->flags[i] = f->digest_chunk->last;
            cloud_entries(c, f->digest_chunk->entries, f->digest_chunk->n_entries);
            if (f->digest_chunk->last)
                cloud_answer(c, call);
        }
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

static long long count_rows(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* seed writes NOBJ objects and NTOMB tombstones (keys sorting after them)
 * into a fresh edge store. */
static void seed(const char *path)
{
    edge_store *mm = NULL;
    edge_store_opts o = {.path = path};
    assert_int_equal(edge_store_open(&o, &mm), 0); /* the schema */
    edge_store_close(mm);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO meta(key, rv, deleted, cseq) VALUES (?,?,?,?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    char key[96];
    for (int i = 0; i < NOBJ + NTOMB; i++) {
        if (i < NOBJ)
            snprintf(key, sizeof(key), KEYFMT, i);
        else
            snprintf(key, sizeof(key), "node/edge-1/default/Secret/gone-%03d", i - NOBJ);
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, i + 1);
        sqlite3_bind_int(st, 3, i >= NOBJ);
        sqlite3_bind_int64(st, 4, i + 1);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_edgehub_sends_digest_in_chunks_and_collects_tombstones(void **state)
{
    (void)state;
    char dir[64], path[128], ca[128], scrt[128], skey[128], ccrt[128], ckey[128], server[64];
    assert_int_equal(ke_tp_tmpdir(dir), 0);
    assert_int_equal(ke_tp_sh("%s/tests/support/gen-certs.sh %s", ke_tp_env("KE_SOURCE_DIR"), dir),
                     0);
    snprintf(path, sizeof(path), "%s/edge.db", dir);
    snprintf(ca, sizeof(ca), "%s/ca1.crt", dir);
    snprintf(scrt, sizeof(scrt), "%s/server.crt", dir);
    snprintf(skey, sizeof(skey), "%s/server.key", dir);
    snprintf(ccrt, sizeof(ccrt), "%s/client1.crt", dir);
    snprintf(ckey, sizeof(ckey), "%s/client1.key", dir);
    seed(path);

    cloud c = {0};
    pthread_mutex_init(&c.mu, NULL);
    assert_int_equal(ke_time_cond_init(&c.cv), 0);
    ke_rpc_loop *loop = NULL;
    ke_rpc_server *srv = NULL;
    assert_int_equal(ke_rpc_loop_new(2, &loop), 0);
    ke_rpc_tls stls = {.ca_file = ca,
                       .cert_file = scrt,
                       .key_file = skey,
                       .client_auth = KE_RPC_CLIENT_AUTH_REQUIRE};
    ke_rpc_server_opts so = {.listen = "127.0.0.1:0", .tls = &stls};
    static const ke_rpc_handler h = {.on_message = cloud_on_message};
    assert_int_equal(ke_rpc_server_new(loop, &so, &srv), 0);
    assert_int_equal(
        ke_rpc_server_add(srv, &ke__v1__cloud_hub__descriptor, "Tunnel", KE_RPC_BIDI_STREAM, &h, &c),
        0);
    assert_int_equal(ke_rpc_server_start(srv), 0);
    snprintf(server, sizeof(server), "127.0.0.1:%d", ke_rpc_server_port(srv));

    edgehub_config hc = {.node_name = "edge-1",
                         .server = server,
                         .ca_file = ca,
                         .cert_file = ccrt,
                         .key_file = ckey,
                         .agent_version = "test",
                         .renew_before_ms = 1000}; /* the test PKI lives 30 days */
    ke_edgetest edge;
    ke_edgetest_start(&edge, path, loop, &hc, NULL, NULL);

    pthread_mutex_lock(&c.mu);
    struct timespec until = ke_time_deadline(20000);
    while (!c.done && pthread_cond_timedwait(&c.cv, &c.mu, &until) == 0)
        ;
    int done = c.done;
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(done, 1);
    assert_int_equal(c.hellos, 1);
    assert_int_equal(c.chunks, 2);
    assert_int_equal(c.sizes[0], 10000);
    assert_int_equal(c.flags[0], 1); /* digest_follows */
    assert_int_equal(c.sizes[1], 10000);
    assert_int_equal(c.flags[1], 0); /* not last */
    assert_int_equal(c.sizes[2], 5000);
    assert_int_equal(c.flags[2], 1); /* last */
    assert_int_equal(c.entries, NOBJ);
    assert_int_equal(c.out_of_order, 0);

    /* ResyncDone: the tombstones that predate the Hello go. */
    long long tombs = -1;
    for (int i = 0; i < 100 && tombs != 0; i++) {
        tombs = count_rows(path, "SELECT count(*) FROM meta WHERE deleted = 1");
        if (tombs != 0)
            ke_tp_sh("sleep 0.05");
    }
    assert_int_equal(tombs, 0);
    assert_int_equal(count_rows(path, "SELECT count(*) FROM meta"), NOBJ);

    ke_edgetest_stop(&edge);
    ke_rpc_server_free(srv);
    ke_rpc_loop_free(loop);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    ke_tp_sh("rm -rf %s", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edgehub_sends_digest_in_chunks_and_collects_tombstones),
    };
    return cmocka_run_group_tests_name("edge/edgehub", tests, NULL, NULL);
}
