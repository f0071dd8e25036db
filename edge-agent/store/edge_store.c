/*
 * edge_store.c — see edge_store.h.
 *
 *   meta      key -> rv, deleted, content, the packed message as received,
 *             cseq (the change counter when the row was last written: a
 *             tombstone at or below a Hello's mark is collectable once that
 *             stream's resync is done; partial index on tombstones)
 *   outbox    seq -> packed upstream message (AUTOINCREMENT: never reused)
 *   reported  key -> highest rv reported (duplicate detection), seq of the
 *             last report (eviction order)
 *   audit     optional record of every applied change, for tests and
 *             forensics
 *   local     key -> content: state the edge owns (not the cloud's objects)
 */
#include "edge_store.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_sqlite.h"
#include "ke_time.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define MM_MOD "edge-store"

struct edge_store {
    ke_sqlite *db;
    int reader; /* edge_store_open_reader: reads only, no metrics */
    int audit;
    uint32_t outbox_max, reported_max;
    uint64_t pending;  /* outbox rows */
    uint64_t reported; /* reported rows */
    uint64_t evict_at; /* no eviction tried below this many reported rows
                        * (reset by acks and collections) */
    uint64_t cseq;     /* last change counter given to a meta row */
    ke_metric *applied, *stale, *outbox;
};

static const char *const mm_migrations[] = {
    "CREATE TABLE meta (key TEXT PRIMARY KEY, rv INTEGER NOT NULL, deleted INTEGER NOT NULL,"
    "  content BLOB, msg BLOB);"
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
    "  rv INTEGER NOT NULL, msg BLOB NOT NULL);"
    "CREATE TABLE reported (key TEXT PRIMARY KEY, rv INTEGER NOT NULL);"
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, key TEXT NOT NULL, rv INTEGER NOT NULL,"
    "  op INTEGER NOT NULL, at_ms INTEGER NOT NULL);",
    /* 2: tombstone lifetime and bounded dedup rows. Rows written before
     * have cseq 0: collectable at the first resync. */
    "ALTER TABLE meta ADD COLUMN cseq INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX meta_tombstones ON meta(cseq) WHERE deleted = 1;"
    "ALTER TABLE reported ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX reported_seq ON reported(seq);"
    "CREATE INDEX outbox_key ON outbox(key);",
    /* 3: state the edge owns (DeviceTwin's reported twins), written in
     * one transaction with the report that carries it upstream */
    "CREATE TABLE local (key TEXT PRIMARY KEY, content BLOB NOT NULL);",
    /* 4: changes in order (MetaServer's watches): every row by its change
     * counter, and the floor — the highest counter of a collected
     * tombstone; a change after a version below it may be lost */
    "CREATE INDEX meta_cseq ON meta(cseq);"
    "CREATE TABLE meta_floor (id INTEGER PRIMARY KEY CHECK (id = 1), cseq INTEGER NOT NULL);"
    "INSERT INTO meta_floor(id, cseq) VALUES (1, 0);",
};
#define EDGE_STORE_SCHEMA 4

/* load_u64 runs a one-value query (count or max) into *out. */
static int load_u64(edge_store *mm, const char *sql, uint64_t *out)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, sql, &st);
    if (rc)
        return rc;
    if ((rc = ke_sqlite_step(mm->db, st)) == 1)
        *out = (uint64_t)sqlite3_column_int64(st, 0);
    ke_sqlite_release(mm->db, st);
    return rc < 0 ? rc : 0;
}

int edge_store_open(const edge_store_opts *o, edge_store **out)
{
    if (!o || !o->path || !out)
        return KE_EINVAL;
    edge_store *mm = calloc(1, sizeof(*mm));
    if (!mm)
        return KE_ENOMEM;
    mm->audit = o->audit;
    mm->outbox_max = o->outbox_max ? o->outbox_max : 100000;
    mm->reported_max = o->reported_max ? o->reported_max : 100000;
    int rc = ke_sqlite_open(o->path, &mm->db);
    if (rc == 0)
        rc = ke_sqlite_migrate(mm->db, mm_migrations, EDGE_STORE_SCHEMA);
    if (rc == 0)
        rc = load_u64(mm, "SELECT count(*) FROM outbox", &mm->pending);
    if (rc == 0)
        rc = load_u64(mm, "SELECT count(*) FROM reported", &mm->reported);
    if (rc == 0)
        /* never below the floor: the counter of a collected tombstone is
         * never given again */
        rc = load_u64(mm,
                      "SELECT max(coalesce((SELECT max(cseq) FROM meta), 0), "
                      "(SELECT cseq FROM meta_floor WHERE id = 1))",
                      &mm->cseq);
    if (rc != 0) {
        edge_store_close(mm);
        return rc;
    }
    ke_metrics_counter_new("ke_metamanager_applied_total", "downstream changes applied", NULL,
                           &mm->applied);
    ke_metrics_counter_new("ke_metamanager_stale_total",
                           "downstream changes ignored: not newer than the stored version", NULL,
                           &mm->stale);
    ke_metrics_gauge_new("ke_edgehub_outbox_pending", "upstream reports not yet acknowledged",
                         NULL, &mm->outbox);
    ke_metric_set(mm->outbox, (int64_t)mm->pending);
    *out = mm;
    return 0;
}

void edge_store_close(edge_store *mm)
{
    if (!mm)
        return;
    ke_sqlite_close(mm->db);
    free(mm);
}

static int apply_locked(edge_store *mm, const Ke__V1__Message *msg, const char *key,
                        uint64_t rv, int is_delete)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, "SELECT rv FROM meta WHERE key = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(mm->db, st);
    uint64_t have = rc == 1 ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    int exists = rc == 1;
    ke_sqlite_release(mm->db, st);
    if (rc < 0)
        return rc;
    if (exists && (is_delete ? rv < have : rv <= have))
        return 0; /* stale */
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed)
        return KE_ENOMEM;
    protobuf_c_message_pack(&msg->base, packed);
    rc = ke_sqlite_prepare(mm->db,
                           "INSERT INTO meta(key, rv, deleted, content, msg, cseq) "
                           "VALUES (?,?,?,?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET rv = excluded.rv, "
                           "deleted = excluded.deleted, content = excluded.content, "
                           "msg = excluded.msg, cseq = excluded.cseq",
                           &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)rv);
        sqlite3_bind_int(st, 3, is_delete);
        if (is_delete)
            sqlite3_bind_null(st, 4);
        else
            sqlite3_bind_blob(st, 4, msg->content.data, (int)msg->content.len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 5, packed, (int)len, SQLITE_STATIC);
        /* A rolled-back change leaves a gap in the counter: harmless, only
         * the order matters. */
        sqlite3_bind_int64(st, 6, (int64_t)++mm->cseq);
        rc = ke_sqlite_step(mm->db, st);
        ke_sqlite_release(mm->db, st);
        rc = rc < 0 ? rc : 0;
    }
    free(packed);
    if (rc == 0 && mm->audit) {
        rc = ke_sqlite_prepare(mm->db, "INSERT INTO audit(key, rv, op, at_ms) VALUES (?,?,?,?)",
                               &st);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)rv);
            sqlite3_bind_int(st, 3, (int)msg->route->operation);
            sqlite3_bind_int64(st, 4, ke_time_wall_ms());
            rc = ke_sqlite_step(mm->db, st);
            ke_sqlite_release(mm->db, st);
            rc = rc < 0 ? rc : 0;
        }
    }
    return rc == 0 ? 1 : rc;
}

int edge_store_apply(edge_store *mm, const Ke__V1__Message *msg)
{
    if (!msg || !msg->route || !msg->header || !msg->route->resource[0])
        return KE_EINVAL;
    int is_delete = msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE;
    int rc = ke_sqlite_begin(mm->db);
    if (rc == 0) {
        rc = apply_locked(mm, msg, msg->route->resource, msg->header->resource_version,
                          is_delete);
        if (rc >= 0 && ke_sqlite_commit(mm->db) != 0)
            rc = KE_EDB;
        else if (rc < 0)
            ke_sqlite_rollback(mm->db);
    }
    if (rc == 1)
        ke_metric_add(mm->applied, 1);
    else if (rc == 0)
        ke_metric_add(mm->stale, 1);
    return rc;
}

/* digest_entry_new copies one row into a DigestEntry; NULL when out of
 * memory. */
static Ke__V1__DigestEntry *digest_entry_new(const char *key, uint64_t rv)
{
    Ke__V1__DigestEntry *e = malloc(sizeof(*e));
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        return NULL;
    }
    ke__v1__digest_entry__init(e);
    e->key = k;
    e->resource_version = rv;
    return e;
}

int edge_store_digest_page(edge_store *mm, const char *after, size_t max_entries,
                            size_t max_bytes, Ke__V1__DigestEntry ***out, size_t *n,
                            int *more)
{
    if (!mm || !out || !n || !more || max_entries == 0 || max_bytes == 0)
        return KE_EINVAL;
    *out = NULL;
    *n = 0;
    *more = 0;
    Ke__V1__DigestEntry **v = calloc(max_entries, sizeof(*v));
    if (!v)
        return KE_ENOMEM;
    size_t got = 0, bytes = 0;
    sqlite3_stmt *st;
    /* One row past the page tells whether another page follows. */
    int rc = ke_sqlite_prepare(mm->db,
                               "SELECT key, rv FROM meta WHERE key > ?1 AND deleted = 0 "
                               "ORDER BY key LIMIT ?2",
                               &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, after ? after : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)max_entries + 1);
        while ((rc = ke_sqlite_step(mm->db, st)) == 1) {
            const char *key = (const char *)sqlite3_column_text(st, 0);
            uint64_t rv = (uint64_t)sqlite3_column_int64(st, 1);
            /* An upper bound of its packed size in the repeated field:
             * tag + length (4) + key tag + length (4) + key + rv tag +
             * varint (11). */
            size_t esize = strlen(key) + 19;
            if (got == max_entries || (got > 0 && bytes + esize > max_bytes)) {
                *more = 1;
                break;
            }
            if (!(v[got] = digest_entry_new(key, rv))) {
                rc = KE_ENOMEM;
                break;
            }
            got++;
            bytes += esize;
        }
        ke_sqlite_release(mm->db, st);
    }
    if (rc < 0) {
        edge_store_digest_free(v, got);
        *more = 0;
        return rc;
    }
    if (got == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = got;
    return 0;
}

void edge_store_digest_free(Ke__V1__DigestEntry **d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++) {
        free(d[i]->key);
        free(d[i]);
    }
    free(d);
}

int edge_store_get(edge_store *mm, const char *key, uint64_t *rv, uint8_t **content,
                    size_t *len)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, "SELECT rv, content FROM meta WHERE key = ? AND deleted = 0",
                               &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = ke_sqlite_step(mm->db, st);
        if (rc == 1) {
            *rv = (uint64_t)sqlite3_column_int64(st, 0);
            *len = (size_t)sqlite3_column_bytes(st, 1);
            *content = NULL;
            if (*len && (*content = malloc(*len)) != NULL)
                memcpy(*content, sqlite3_column_blob(st, 1), *len);
            rc = (*len && !*content) ? KE_ENOMEM : 0;
        } else if (rc == 0) {
            rc = KE_ENOTFOUND;
        }
        ke_sqlite_release(mm->db, st);
    }
    return rc;
}

int edge_store_list(edge_store *mm, const char *prefix,
                     int (*fn)(const char *key, uint64_t rv, const void *content, size_t len,
                               void *arg),
                     void *arg)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db,
                               "SELECT key, rv, content FROM meta WHERE deleted = 0 AND "
                               "substr(key, 1, length(?1)) = ?1 ORDER BY key",
                               &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        while ((rc = ke_sqlite_step(mm->db, st)) == 1)
            if (fn((const char *)sqlite3_column_text(st, 0),
                   (uint64_t)sqlite3_column_int64(st, 1), sqlite3_column_blob(st, 2),
                   (size_t)sqlite3_column_bytes(st, 2), arg))
                break;
        ke_sqlite_release(mm->db, st);
    }
    return rc < 0 ? rc : 0;
}

uint64_t edge_store_tombstone_mark(edge_store *mm)
{
    uint64_t mark = mm->cseq;
    return mark;
}

/* collect_batch deletes one batch of tombstones (and their reported rows)
 * in one transaction; *n gets the tombstones deleted. The batch: at or
 * below the mark, oldest first, none of a key that still has a report in
 * the outbox. The same selection picks the reported rows and then the meta
 * rows, in one transaction, so both see the same set.  */
static int collect_batch(edge_store *mm, uint64_t mark, size_t *n, uint64_t *reported)
{
    static const char *const sql[3] = {
        "UPDATE meta_floor SET cseq = max(cseq, coalesce((SELECT max(cseq) FROM (SELECT cseq "
        "FROM meta WHERE deleted = 1 AND cseq <= ?1 AND NOT EXISTS (SELECT 1 FROM outbox o "
        "WHERE o.key = meta.key) ORDER BY cseq LIMIT ?2)), 0)) WHERE id = 1",
        "DELETE FROM reported WHERE key IN (SELECT key FROM meta WHERE deleted = 1 AND "
        "cseq <= ?1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = meta.key) "
        "ORDER BY cseq LIMIT ?2)",
        "DELETE FROM meta WHERE rowid IN (SELECT rowid FROM meta WHERE deleted = 1 AND "
        "cseq <= ?1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = meta.key) "
        "ORDER BY cseq LIMIT ?2)",
    };
    int64_t changes[3] = {0, 0, 0};
    int rc = ke_sqlite_begin(mm->db);
    for (int i = 0; rc == 0 && i < 3; i++) {
        sqlite3_stmt *st;
        if ((rc = ke_sqlite_prepare(mm->db, sql[i], &st)) != 0)
            break;
        sqlite3_bind_int64(st, 1, (int64_t)mark);
        sqlite3_bind_int64(st, 2, EDGE_STORE_GC_BATCH);
        rc = ke_sqlite_step(mm->db, st);
        ke_sqlite_release(mm->db, st);
        rc = rc < 0 ? rc : 0;
        changes[i] = sqlite3_changes(ke_sqlite_handle(mm->db));
    }
    if (rc == 0)
        rc = ke_sqlite_commit(mm->db);
    else
        ke_sqlite_rollback(mm->db);
    if (rc != 0)
        return rc;
    *reported = (uint64_t)changes[1];
    *n = (size_t)changes[2];
    return 0;
}

int edge_store_tombstones_collect(edge_store *mm, uint64_t mark, size_t *collected)
{
    size_t total = 0, n = 0;
    int rc = 0;
    /* One short transaction per batch, the lock released in between, so
     * applies and reports interleave with a large collection. */
    do {
        uint64_t reported = 0;
        rc = collect_batch(mm, mark, &n, &reported);
        if (rc == 0)
            mm->reported -= reported <= mm->reported ? reported : mm->reported;
        mm->evict_at = 0;
        if (rc == 0)
            total += n;
    } while (rc == 0 && n == EDGE_STORE_GC_BATCH);
    if (collected)
        *collected = total;
    return rc;
}

/* evict_reported_locked keeps the reported table near reported_max: it
 * drops the rows reported longest ago whose key has no live object and no
 * report in the outbox, down to 90% of the bound (at most
 * EDGE_STORE_GC_BATCH at a time, so the cost is amortised). What is lost
 * is only the memory that such a (key, version) was reported: a module
 * reporting that very version again would send it once more. Rows of live
 * objects are never evicted. Inside the caller's transaction. */
static int evict_reported_locked(edge_store *mm, uint64_t *evicted)
{
    uint64_t target = mm->reported_max - mm->reported_max / 10;
    uint64_t want = mm->reported + 1 > target ? mm->reported + 1 - target : 1;
    if (want > EDGE_STORE_GC_BATCH)
        want = EDGE_STORE_GC_BATCH;
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(
        mm->db,
        "DELETE FROM reported WHERE rowid IN (SELECT r.rowid FROM reported r WHERE "
        "NOT EXISTS (SELECT 1 FROM meta m WHERE m.key = r.key AND m.deleted = 0) AND "
        "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key = r.key) ORDER BY r.seq LIMIT ?)",
        &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)want);
    rc = ke_sqlite_step(mm->db, st);
    ke_sqlite_release(mm->db, st);
    if (rc < 0)
        return rc;
    *evicted = (uint64_t)sqlite3_changes(ke_sqlite_handle(mm->db));
    /* Nothing evictable (every row is a live object's or still in the
     * outbox): do not rescan at every report, only a batch later. */
    mm->evict_at = *evicted ? 0 : mm->reported + EDGE_STORE_GC_BATCH;
    return 0;
}

int edge_store_reported_rv(edge_store *mm, const char *key, uint64_t *rv)
{
    sqlite3_stmt *st;
    *rv = 0;
    int rc = ke_sqlite_prepare(mm->db, "SELECT rv FROM reported WHERE key = ?", &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if ((rc = ke_sqlite_step(mm->db, st)) == 1)
            *rv = (uint64_t)sqlite3_column_int64(st, 0);
        ke_sqlite_release(mm->db, st);
    }
    return rc < 0 ? rc : 0;
}

/* report_locked queues msg inside the caller's transaction; *known says
 * whether its key had a reported row, *evicted how many rows eviction took.
 * The counters are the caller's to move once the transaction commits. */
static int report_locked(edge_store *mm, const Ke__V1__Message *msg, uint64_t *seq,
                         int *duplicate, int *known, uint64_t *evicted)
{
    const char *key = msg->route->resource;
    uint64_t rv = msg->header->resource_version;
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed)
        return KE_ENOMEM;
    protobuf_c_message_pack(&msg->base, packed);
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, "SELECT rv FROM reported WHERE key = ?", &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = ke_sqlite_step(mm->db, st);
        *known = rc == 1;
        if (rc == 1 && (uint64_t)sqlite3_column_int64(st, 0) >= rv)
            *duplicate = 1;
        ke_sqlite_release(mm->db, st);
        rc = rc < 0 ? rc : 0;
    }
    if (rc == 0 && !*duplicate && mm->pending >= mm->outbox_max)
        rc = KE_EFULL;
    if (rc == 0 && !*duplicate) {
        rc = ke_sqlite_prepare(mm->db, "INSERT INTO outbox(key, rv, msg) VALUES (?,?,?)", &st);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)rv);
            sqlite3_bind_blob(st, 3, packed, (int)len, SQLITE_STATIC);
            rc = ke_sqlite_step(mm->db, st);
            ke_sqlite_release(mm->db, st);
            rc = rc < 0 ? rc : 0;
            *seq = (uint64_t)sqlite3_last_insert_rowid(ke_sqlite_handle(mm->db));
        }
        if (rc == 0)
            rc = ke_sqlite_prepare(mm->db,
                                   "INSERT INTO reported(key, rv, seq) VALUES (?,?,?) "
                                   "ON CONFLICT(key) DO UPDATE SET rv = excluded.rv, "
                                   "seq = excluded.seq",
                                   &st);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)rv);
            sqlite3_bind_int64(st, 3, (int64_t)*seq);
            rc = ke_sqlite_step(mm->db, st);
            ke_sqlite_release(mm->db, st);
            rc = rc < 0 ? rc : 0;
        }
    }
    if (rc == 0 && !*duplicate && !*known && mm->reported + 1 > mm->reported_max &&
        mm->reported + 1 >= mm->evict_at)
        rc = evict_reported_locked(mm, evicted);
    free(packed);
    return rc;
}

static int report_valid(const Ke__V1__Message *msg)
{
    return msg && msg->route && msg->header && msg->route->resource[0] &&
           msg->header->resource_version != 0;
}

/* local_write_locked writes (content) or deletes (content NULL) a local row. */
static int local_write_locked(edge_store *mm, const char *key, const void *content, size_t len)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db,
                               content ? "INSERT INTO local(key, content) VALUES (?,?) ON "
                                         "CONFLICT(key) DO UPDATE SET content = excluded.content"
                                       : "DELETE FROM local WHERE key = ?",
                               &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (content)
        sqlite3_bind_blob(st, 2, len ? content : "", (int)len, SQLITE_STATIC);
    rc = ke_sqlite_step(mm->db, st);
    ke_sqlite_release(mm->db, st);
    return rc < 0 ? rc : 0;
}

/* write_and_report: the local write (key not NULL) and the report (msg not
 * NULL), one transaction. */
static int write_and_report(edge_store *mm, const char *key, const void *content, size_t len,
                            const Ke__V1__Message *msg, uint64_t *seq, int *duplicate)
{
    int known = 0;
    uint64_t evicted = 0;
    *seq = 0;
    *duplicate = 0;
    int rc = ke_sqlite_begin(mm->db);
    if (rc == 0 && key)
        rc = local_write_locked(mm, key, content, len);
    if (rc == 0 && msg)
        rc = report_locked(mm, msg, seq, duplicate, &known, &evicted);
    if (rc == 0 && ke_sqlite_commit(mm->db) == 0) {
        if (msg && !*duplicate) {
            mm->pending++;
            mm->reported += (known ? 0 : 1);
            mm->reported -= evicted;
        }
    } else {
        ke_sqlite_rollback(mm->db);
        if (rc == 0)
            rc = KE_EDB;
        *seq = 0;
    }
    ke_metric_set(mm->outbox, (int64_t)mm->pending);
    return rc;
}

int edge_store_report(edge_store *mm, const Ke__V1__Message *msg, uint64_t *seq,
                       int *duplicate)
{
    if (!report_valid(msg))
        return KE_EINVAL;
    return write_and_report(mm, NULL, NULL, 0, msg, seq, duplicate);
}

int edge_store_local_put(edge_store *mm, const char *key, const void *content, size_t len,
                         const Ke__V1__Message *report, uint64_t *seq, int *duplicate)
{
    uint64_t s;
    int d;
    if (!key || !*key || (report && !report_valid(report)))
        return KE_EINVAL;
    return write_and_report(mm, key, content, len, report, seq ? seq : &s,
                            duplicate ? duplicate : &d);
}

int edge_store_local_get(edge_store *mm, const char *key, uint8_t **content, size_t *len)
{
    sqlite3_stmt *st;
    *content = NULL;
    *len = 0;
    int rc = ke_sqlite_prepare(mm->db, "SELECT content FROM local WHERE key = ?", &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = ke_sqlite_step(mm->db, st);
        if (rc == 1) {
            *len = (size_t)sqlite3_column_bytes(st, 0);
            if (*len && (*content = malloc(*len)) != NULL)
                memcpy(*content, sqlite3_column_blob(st, 0), *len);
            rc = (*len && !*content) ? KE_ENOMEM : 0;
        } else if (rc == 0) {
            rc = KE_ENOTFOUND;
        }
        ke_sqlite_release(mm->db, st);
    }
    return rc;
}

int edge_store_local_list(edge_store *mm, const char *prefix,
                          int (*fn)(const char *key, const void *content, size_t len, void *arg),
                          void *arg)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db,
                               "SELECT key, content FROM local WHERE "
                               "substr(key, 1, length(?1)) = ?1 ORDER BY key",
                               &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        while ((rc = ke_sqlite_step(mm->db, st)) == 1)
            if (fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_blob(st, 1),
                   (size_t)sqlite3_column_bytes(st, 1), arg))
                break;
        ke_sqlite_release(mm->db, st);
    }
    return rc < 0 ? rc : 0;
}

int edge_store_outbox_scan(edge_store *mm, uint64_t from, size_t max,
                            int (*fn)(uint64_t seq, const uint8_t *msg, size_t len, void *arg),
                            void *arg)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db,
                               "SELECT seq, msg FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?",
                               &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (int64_t)from);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        while ((rc = ke_sqlite_step(mm->db, st)) == 1)
            if (fn((uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
                   (size_t)sqlite3_column_bytes(st, 1), arg))
                break;
        ke_sqlite_release(mm->db, st);
    }
    return rc < 0 ? rc : 0;
}

int edge_store_outbox_ack(edge_store *mm, uint64_t upto)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, "DELETE FROM outbox WHERE seq <= ?", &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (int64_t)upto);
        rc = ke_sqlite_step(mm->db, st);
        ke_sqlite_release(mm->db, st);
        rc = rc < 0 ? rc : 0;
        if (rc == 0) {
            mm->pending -= (uint64_t)sqlite3_changes(ke_sqlite_handle(mm->db));
            mm->evict_at = 0; /* acked reports' rows may be evictable now */
        }
    }
    uint64_t pending = mm->pending;
    ke_metric_set(mm->outbox, (int64_t)pending);
    return rc;
}

uint64_t edge_store_outbox_pending(edge_store *mm)
{
    uint64_t p = mm->pending;
    return p;
}

int edge_store_open_reader(const char *path, edge_store **out)
{
    if (!path || !out || strcmp(path, ":memory:") == 0)
        return KE_EINVAL; /* a second connection to :memory: is another database */
    edge_store *mm = calloc(1, sizeof(*mm));
    if (!mm)
        return KE_ENOMEM;
    mm->reader = 1;
    int v = 0;
    int rc = ke_sqlite_open(path, &mm->db);
    if (rc == 0)
        rc = ke_sqlite_user_version(mm->db, &v);
    if (rc == 0 && v < EDGE_STORE_SCHEMA) {
        ke_log_error(MM_MOD, "edge store %s is at schema %d, a reader needs %d (open it with "
                             "edge_store_open first)", path, v, EDGE_STORE_SCHEMA);
        rc = KE_EINVAL;
    }
    if (rc != 0) {
        edge_store_close(mm);
        return rc;
    }
    *out = mm;
    return 0;
}

/* change_op reads the operation of the stored message (packed as
 * received); OPERATION_UPDATE when it cannot be read. */
static int change_op(const void *msg, size_t len)
{
    Ke__V1__Message *m = ke__v1__message__unpack(NULL, len, msg);
    if (!m)
        return KE__V1__OPERATION__OPERATION_UPDATE;
    int op = m->route ? (int)m->route->operation : KE__V1__OPERATION__OPERATION_UPDATE;
    ke__v1__message__free_unpacked(m, NULL);
    return op;
}

static int scan_locked(edge_store *mm, const char *prefix, int changes, uint64_t after,
                       size_t max,
                       int (*fn)(const edge_store_change *c, void *arg), void *arg,
                       uint64_t *mark, uint64_t *floor)
{
    int rc = load_u64(mm,
                      "SELECT max(coalesce((SELECT max(cseq) FROM meta), 0), "
                      "(SELECT cseq FROM meta_floor WHERE id = 1))",
                      mark);
    if (rc == 0)
        rc = load_u64(mm, "SELECT cseq FROM meta_floor WHERE id = 1", floor);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st;
    /* the live objects in key order (a list), or every change after
     * `after` in change order, tombstones included (a replay) */
    rc = ke_sqlite_prepare(
        mm->db,
        !changes ? "SELECT key, rv, deleted, content, msg, cseq FROM meta WHERE deleted = 0 "
                     "AND substr(key, 1, length(?1)) = ?1 ORDER BY key LIMIT ?3"
                   : "SELECT key, rv, deleted, content, msg, cseq FROM meta WHERE cseq > ?2 "
                     "AND substr(key, 1, length(?1)) = ?1 ORDER BY cseq LIMIT ?3",
        &st);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, prefix ? prefix : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)after);
    sqlite3_bind_int64(st, 3, max ? (int64_t)max : -1);
    while ((rc = ke_sqlite_step(mm->db, st)) == 1) {
        edge_store_change c = {
            .key = (const char *)sqlite3_column_text(st, 0),
            .rv = (uint64_t)sqlite3_column_int64(st, 1),
            .deleted = sqlite3_column_int(st, 2),
            .content = sqlite3_column_blob(st, 3),
            .len = (size_t)sqlite3_column_bytes(st, 3),
            .cseq = (uint64_t)sqlite3_column_int64(st, 5),
        };
        c.op = c.deleted ? KE__V1__OPERATION__OPERATION_DELETE
                         : change_op(sqlite3_column_blob(st, 4),
                                     (size_t)sqlite3_column_bytes(st, 4));
        if (!c.key)
            continue;
        if ((rc = fn(&c, arg)) != 0)
            break;
    }
    ke_sqlite_release(mm->db, st);
    return rc < 0 ? rc : 0;
}

int edge_store_scan(edge_store *mm, const char *prefix, int changes, uint64_t after,
                    size_t max, int (*fn)(const edge_store_change *c, void *arg), void *arg,
                    uint64_t *mark, uint64_t *floor)
{
    if (!mm || !fn || !mark || !floor)
        return KE_EINVAL;
    /* one read transaction: the rows and the mark are one snapshot (a
     * deferred BEGIN takes no write lock; WAL readers never block the
     * writer) */
    int rc = ke_sqlite_exec(mm->db, "BEGIN");
    if (rc != 0)
        return rc;
    rc = scan_locked(mm, prefix, changes, after, max, fn, arg, mark, floor);
    int crc = ke_sqlite_exec(mm->db, rc == 0 ? "COMMIT" : "ROLLBACK");
    return rc != 0 ? rc : crc;
}
