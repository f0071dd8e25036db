/*
 * test_edge_store.c — the edge store's lifetimes (edge-agent/store):
 *
 *   digest pages   100,000 objects read as 10 pages of 10,000, every key
 *                  once, in order, tombstones left out, each page's Hello /
 *                  DigestChunk frame under the 4 MiB message bound; a byte
 *                  bound splits pages of long keys.
 *   tombstones     a stale older update after a delete is ignored until the
 *                  resync that follows it completes; then the tombstone is
 *                  collected; one written after the Hello's mark stays; a
 *                  key with a report in the outbox keeps its tombstone.
 *   churn          10,000 create+delete pairs over distinct keys, each key
 *                  also reported and acked: after ResyncDone, meta, reported
 *                  and outbox are empty (counted in SQLite directly); the
 *                  reported table stays under reported_max for keys that
 *                  never were objects.
 *   changes        (MetaServer) a reader connection scans the live objects
 *                  and the changes after a counter in one snapshot, in
 *                  change order with tombstones; the floor rises to the
 *                  highest collected tombstone, and the counter never goes
 *                  below it across a reopen, even when every row is gone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_err.h"
#include "ke_testproc.h"
#include "edge_store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_PREFIX "node/edge-1/default/ConfigMap/"
#define MESSAGE_BOUND (4u << 20)

typedef struct fixture {
    char dir[64];
    char path[128];
    edge_store *mm;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || ke_tp_tmpdir(f->dir) != 0)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/edge.db", f->dir);
    edge_store_opts o = {.path = f->path, .outbox_max = 100000, .reported_max = 100};
    if (edge_store_open(&o, &f->mm) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    edge_store_close(f->mm);
    ke_tp_sh("rm -rf %s", f->dir);
    free(f);
    return 0;
}

/* apply sends one downstream change through edge_store_apply. */
static int apply(edge_store *mm, const char *key, uint64_t rv, Ke__V1__Operation op)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.resource_version = rv;
    r.resource = (char *)key;
    r.operation = op;
    m.header = &h;
    m.route = &r;
    if (op != KE__V1__OPERATION__OPERATION_DELETE) {
        m.content.data = (uint8_t *)"{}";
        m.content.len = 2;
    }
    return edge_store_apply(mm, &m);
}

/* report queues one upstream report. */
static int report(edge_store *mm, const char *key, uint64_t rv, uint64_t *seq)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    h.resource_version = rv;
    r.resource = (char *)key;
    r.group = "podstatus";
    r.operation = KE__V1__OPERATION__OPERATION_UPLOAD;
    m.header = &h;
    m.route = &r;
    int dup = 0;
    int rc = edge_store_report(mm, &m, seq, &dup);
    return rc == 0 && dup ? KE_EEXIST : rc;
}

/* count_rows counts a table's rows through a connection of its own. */
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

/* bulk_load writes n objects (and a tombstone after every 1,000th) straight
 * into the file in one transaction: 100,000 separate applies would only
 * measure SQLite commits. */
static void bulk_load(fixture *f, int n)
{
    edge_store_close(f->mm);
    f->mm = NULL;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO meta(key, rv, deleted, content, msg, cseq) "
                                        "VALUES (?, ?, ?, NULL, NULL, ?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    char key[128];
    int64_t cseq = 0;
    for (int i = 0; i < n; i++) {
        for (int tomb = 0; tomb <= (i % 1000 == 0); tomb++) {
            snprintf(key, sizeof(key), NODE_PREFIX "cm-%06d%s", i, tomb ? "-gone" : "");
            sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 2, i + 1);
            sqlite3_bind_int(st, 3, tomb);
            sqlite3_bind_int64(st, 4, ++cseq);
            assert_int_equal(sqlite3_step(st), SQLITE_DONE);
            sqlite3_reset(st);
        }
    }
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    edge_store_opts o = {.path = f->path};
    assert_int_equal(edge_store_open(&o, &f->mm), 0);
}

static void test_edge_digest_pages_100000_objects_in_10_chunks(void **state)
{
    fixture *f = *state;
    enum { N = 100000 };
    bulk_load(f, N);

    char *after = NULL;
    int seen = 0, pages = 0, more = 1;
    while (more) {
        Ke__V1__DigestEntry **page = NULL;
        size_t n = 0;
        assert_int_equal(edge_store_digest_page(f->mm, after, EDGE_STORE_DIGEST_PAGE, 3u << 20,
                                                 &page, &n, &more),
                         0);
        pages++;
        assert_int_equal(n, EDGE_STORE_DIGEST_PAGE);
        /* Every key once, in order: the i-th entry is object i. */
        char want[128];
        for (size_t i = 0; i < n; i++, seen++) {
            snprintf(want, sizeof(want), NODE_PREFIX "cm-%06d", seen);
            assert_string_equal(page[i]->key, want);
            assert_int_equal(page[i]->resource_version, (uint64_t)seen + 1);
        }
        /* The frame this page becomes is under the message bound. */
        Ke__V1__EdgeFrame fr = KE__V1__EDGE_FRAME__INIT;
        Ke__V1__Hello h = KE__V1__HELLO__INIT;
        Ke__V1__DigestChunk c = KE__V1__DIGEST_CHUNK__INIT;
        if (pages == 1) {
            h.node_name = "edge-1";
            h.digest = page;
            h.n_digest = n;
            h.digest_follows = more;
            fr.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
            fr.hello = &h;
        } else {
            c.entries = page;
            c.n_entries = n;
            c.last = !more;
            fr.frame_case = KE__V1__EDGE_FRAME__FRAME_DIGEST_CHUNK;
            fr.digest_chunk = &c;
        }
        assert_true(protobuf_c_message_get_packed_size(&fr.base) < MESSAGE_BOUND);
        free(after);
        after = strdup(page[n - 1]->key);
        assert_non_null(after);
        edge_store_digest_free(page, n);
    }
    free(after);
    assert_int_equal(pages, 10);
    assert_int_equal(seen, N);
}

static void test_edge_digest_page_bounded_by_bytes(void **state)
{
    fixture *f = *state;
    char key[1100];
    memset(key, 'k', sizeof(key));
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), NODE_PREFIX "%02d-", i);
        key[strlen(key)] = 'k'; /* 1,000+ byte keys */
        key[1000] = '\0';
        assert_int_equal(apply(f->mm, key, 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    }
    /* About 3 keys per 3,100 bytes: 10 objects in 4 pages, none over. */
    char *after = NULL;
    int total = 0, pages = 0, more = 1;
    while (more) {
        Ke__V1__DigestEntry **page = NULL;
        size_t n = 0;
        assert_int_equal(
            edge_store_digest_page(f->mm, after, EDGE_STORE_DIGEST_PAGE, 3100, &page, &n, &more),
            0);
        assert_true(n >= 1 && n <= 3);
        total += (int)n;
        pages++;
        free(after);
        after = strdup(page[n - 1]->key);
        edge_store_digest_free(page, n);
    }
    free(after);
    assert_int_equal(total, 10);
    assert_int_equal(pages, 4);
}

static void test_edge_digest_empty_store_is_one_empty_page(void **state)
{
    fixture *f = *state;
    Ke__V1__DigestEntry **page = NULL;
    size_t n = 1;
    int more = 1;
    assert_int_equal(edge_store_digest_page(f->mm, NULL, EDGE_STORE_DIGEST_PAGE, 3u << 20, &page,
                                             &n, &more),
                     0);
    assert_null(page);
    assert_int_equal(n, 0);
    assert_int_equal(more, 0);
}

static void test_edge_tombstone_ignores_stale_until_resync_done(void **state)
{
    fixture *f = *state;
    const char *k = NODE_PREFIX "a", *late = NODE_PREFIX "late", *busy = NODE_PREFIX "busy";
    uint64_t seq = 0;
    assert_int_equal(apply(f->mm, k, 5, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(apply(f->mm, k, 7, KE__V1__OPERATION__OPERATION_DELETE), 1);
    assert_int_equal(apply(f->mm, busy, 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(report(f->mm, busy, 1, &seq), 0); /* still in the outbox */
    assert_int_equal(apply(f->mm, busy, 2, KE__V1__OPERATION__OPERATION_DELETE), 1);
    /* The stream's Hello. */
    uint64_t mark = edge_store_tombstone_mark(f->mm);
    /* An older update of the deleted key, after the delete, before the
     * resync is done (a late frame of an older stream): ignored. */
    assert_int_equal(apply(f->mm, k, 6, KE__V1__OPERATION__OPERATION_UPDATE), 0);
    uint64_t rv = 0;
    uint8_t *content = NULL;
    size_t len = 0;
    assert_int_equal(edge_store_get(f->mm, k, &rv, &content, &len), KE_ENOTFOUND);
    /* A delete after the Hello: its tombstone outlives this resync. */
    assert_int_equal(apply(f->mm, late, 3, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(apply(f->mm, late, 4, KE__V1__OPERATION__OPERATION_DELETE), 1);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta WHERE deleted = 1"), 3);

    /* ResyncDone of that stream. */
    size_t collected = 0;
    assert_int_equal(edge_store_tombstones_collect(f->mm, mark, &collected), 0);
    assert_int_equal(collected, 1);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta WHERE key = '" NODE_PREFIX
                                         "a'"),
                     0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta WHERE key = '" NODE_PREFIX
                                         "late' AND deleted = 1"),
                     1);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta WHERE key = '" NODE_PREFIX
                                         "busy' AND deleted = 1"),
                     1);
    /* The still-held tombstone keeps ignoring its stale update. */
    assert_int_equal(apply(f->mm, late, 3, KE__V1__OPERATION__OPERATION_UPDATE), 0);

    /* Next stream: the report was acked, the late delete predates its
     * Hello: both go, with busy's reported row. */
    assert_int_equal(edge_store_outbox_ack(f->mm, seq), 0);
    mark = edge_store_tombstone_mark(f->mm);
    assert_int_equal(edge_store_tombstones_collect(f->mm, mark, &collected), 0);
    assert_int_equal(collected, 2);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta"), 0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM reported"), 0);
}

static void test_edge_rows_bounded_under_churn(void **state)
{
    fixture *f = *state;
    enum { KEYS = 10000, ROUNDS = 5 };
    char key[128];
    uint64_t seq = 0;
    /* Five resyncs, each after 2,000 objects created, reported on (then
     * acked) and deleted: the table never holds more than one round. */
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = round * (KEYS / ROUNDS); i < (round + 1) * (KEYS / ROUNDS); i++) {
            snprintf(key, sizeof(key), NODE_PREFIX "churn-%05d", i);
            assert_int_equal(apply(f->mm, key, 10, KE__V1__OPERATION__OPERATION_INSERT), 1);
            assert_int_equal(report(f->mm, key, 10, &seq), 0);
            assert_int_equal(apply(f->mm, key, 11, KE__V1__OPERATION__OPERATION_DELETE), 1);
        }
        assert_int_equal(edge_store_outbox_ack(f->mm, seq), 0);
        assert_true(count_rows(f->path, "SELECT count(*) FROM meta") <= KEYS / ROUNDS);
        uint64_t mark = edge_store_tombstone_mark(f->mm);
        size_t collected = 0;
        assert_int_equal(edge_store_tombstones_collect(f->mm, mark, &collected), 0);
        assert_int_equal(collected, KEYS / ROUNDS);
        assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta"), 0);
        assert_int_equal(count_rows(f->path, "SELECT count(*) FROM reported"), 0);
        assert_int_equal(count_rows(f->path, "SELECT count(*) FROM outbox"), 0);
    }
    assert_int_equal(edge_store_outbox_pending(f->mm), 0);

    /* Reports about keys that never were objects: kept up to
     * reported_max (100 here), the oldest acked ones evicted. */
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "node/edge-1/default/Event/e-%04d", i);
        assert_int_equal(report(f->mm, key, 1, &seq), 0);
        assert_int_equal(edge_store_outbox_ack(f->mm, seq), 0);
        assert_true(count_rows(f->path, "SELECT count(*) FROM reported") <= 100);
    }
    /* The newest is still remembered: the same version is a duplicate. */
    assert_int_equal(report(f->mm, key, 1, &seq), KE_EEXIST);
}

typedef struct seen {
    char keys[8][64];
    uint64_t cseq[8];
    int deleted[8], op[8];
    int n;
} seen;

static int note(const edge_store_change *c, void *arg)
{
    seen *s = arg;
    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", c->key);
        s->cseq[s->n] = c->cseq;
        s->deleted[s->n] = c->deleted;
        s->op[s->n] = c->op;
    }
    s->n++;
    return 0;
}

static void test_edge_changes_scan_and_floor(void **state)
{
    fixture *f = *state;
    edge_store *rd = NULL;
    assert_int_equal(edge_store_open_reader(":memory:", &rd), KE_EINVAL);
    assert_int_equal(edge_store_open_reader(f->path, &rd), 0);
    uint64_t mark = 0, floor = 0;
    seen s = {.n = 0};
    assert_int_equal(edge_store_scan(rd, "", 1, 0, 0, note, &s, &mark, &floor), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(mark, 0);
    assert_int_equal(apply(f->mm, NODE_PREFIX "b", 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(apply(f->mm, NODE_PREFIX "a", 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(apply(f->mm, NODE_PREFIX "b", 2, KE__V1__OPERATION__OPERATION_UPDATE), 1);
    assert_int_equal(apply(f->mm, NODE_PREFIX "c", 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    assert_int_equal(apply(f->mm, NODE_PREFIX "c", 2, KE__V1__OPERATION__OPERATION_DELETE), 1);
    /* the live objects in key order, at the snapshot's mark */
    s.n = 0;
    assert_int_equal(edge_store_scan(rd, NODE_PREFIX, 0, 0, 0, note, &s, &mark, &floor), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[0], NODE_PREFIX "a");
    assert_string_equal(s.keys[1], NODE_PREFIX "b");
    assert_int_equal(mark, 5);
    assert_int_equal(floor, 0);
    /* the changes after 1, in change order: a (2), b (3), c's tombstone (5) */
    s.n = 0;
    assert_int_equal(edge_store_scan(rd, "", 1, 1, 0, note, &s, &mark, &floor), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.keys[0], NODE_PREFIX "a");
    assert_int_equal(s.cseq[0], 2);
    assert_int_equal(s.op[0], KE__V1__OPERATION__OPERATION_INSERT);
    assert_string_equal(s.keys[1], NODE_PREFIX "b");
    assert_int_equal(s.op[1], KE__V1__OPERATION__OPERATION_UPDATE);
    assert_string_equal(s.keys[2], NODE_PREFIX "c");
    assert_int_equal(s.deleted[2], 1);
    assert_int_equal(s.cseq[2], 5);
    /* at most max rows */
    s.n = 0;
    assert_int_equal(edge_store_scan(rd, "", 1, 1, 2, note, &s, &mark, &floor), 0);
    assert_int_equal(s.n, 2);
    /* collecting c's tombstone raises the floor to its counter */
    size_t collected = 0;
    assert_int_equal(edge_store_tombstones_collect(f->mm, edge_store_tombstone_mark(f->mm),
                                                   &collected), 0);
    assert_int_equal(collected, 1);
    assert_int_equal(edge_store_scan(rd, "", 1, 0, 0, note, &s, &mark, &floor), 0);
    assert_int_equal(floor, 5);
    assert_int_equal(mark, 5); /* the highest row is gone; the mark stays */
    /* every row gone, the store reopened: the counter goes on above 5 */
    assert_int_equal(apply(f->mm, NODE_PREFIX "a", 2, KE__V1__OPERATION__OPERATION_DELETE), 1);
    assert_int_equal(apply(f->mm, NODE_PREFIX "b", 3, KE__V1__OPERATION__OPERATION_DELETE), 1);
    assert_int_equal(edge_store_tombstones_collect(f->mm, edge_store_tombstone_mark(f->mm),
                                                   &collected), 0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM meta"), 0);
    edge_store_close(f->mm);
    edge_store_opts o = {.path = f->path};
    assert_int_equal(edge_store_open(&o, &f->mm), 0);
    assert_int_equal(apply(f->mm, NODE_PREFIX "d", 1, KE__V1__OPERATION__OPERATION_INSERT), 1);
    s.n = 0;
    assert_int_equal(edge_store_scan(rd, "", 1, 7, 0, note, &s, &mark, &floor), 0);
    assert_int_equal(floor, 7);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.cseq[0], 8);
    edge_store_close(rd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_edge_digest_pages_100000_objects_in_10_chunks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_edge_digest_page_bounded_by_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_digest_empty_store_is_one_empty_page, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_edge_tombstone_ignores_stale_until_resync_done, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_edge_rows_bounded_under_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_changes_scan_and_floor, setup, teardown),
    };
    return cmocka_run_group_tests_name("edge/store", tests, NULL, NULL);
}
