/*
 * metamanager.c — see metamanager.h.
 *
 *   meta      key -> rv, deleted, content, the packed message as received
 *   outbox    seq -> packed upstream message (AUTOINCREMENT: never reused)
 *   reported  key -> highest rv reported (duplicate detection)
 *   audit     optional record of every applied change, for tests and
 *             forensics
 */
#include "metamanager.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_sqlite.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MM_MOD "metamanager"

struct metamanager {
    pthread_mutex_t mu;
    ke_sqlite *db;
    int audit;
    uint32_t outbox_max;
    uint64_t pending;
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
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_outbox(metamanager *mm)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(mm->db, "SELECT count(*) FROM outbox", &st);
    if (rc)
        return rc;
    if ((rc = ke_sqlite_step(mm->db, st)) == 1)
        mm->pending = (uint64_t)sqlite3_column_int64(st, 0);
    ke_sqlite_release(mm->db, st);
    return rc < 0 ? rc : 0;
}

int metamanager_open(const char *path, int audit, uint32_t outbox_max, metamanager **out)
{
    metamanager *mm = calloc(1, sizeof(*mm));
    if (!mm)
        return KE_ENOMEM;
    pthread_mutex_init(&mm->mu, NULL);
    mm->audit = audit;
    mm->outbox_max = outbox_max ? outbox_max : 100000;
    int rc = ke_sqlite_open(path, &mm->db);
    if (rc == 0)
        rc = ke_sqlite_migrate(mm->db, mm_migrations, 1);
    if (rc == 0)
        rc = count_outbox(mm);
    if (rc != 0) {
        metamanager_close(mm);
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

void metamanager_close(metamanager *mm)
{
    if (!mm)
        return;
    ke_sqlite_close(mm->db);
    pthread_mutex_destroy(&mm->mu);
    free(mm);
}

static int apply_locked(metamanager *mm, const Ke__V1__Message *msg, const char *key,
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
                           "INSERT INTO meta(key, rv, deleted, content, msg) VALUES (?,?,?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET rv = excluded.rv, "
                           "deleted = excluded.deleted, content = excluded.content, "
                           "msg = excluded.msg",
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
            sqlite3_bind_int64(st, 4, now_ms());
            rc = ke_sqlite_step(mm->db, st);
            ke_sqlite_release(mm->db, st);
            rc = rc < 0 ? rc : 0;
        }
    }
    return rc == 0 ? 1 : rc;
}

int metamanager_apply(metamanager *mm, const Ke__V1__Message *msg)
{
    if (!msg || !msg->route || !msg->header || !msg->route->resource[0])
        return KE_EINVAL;
    int is_delete = msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE;
    pthread_mutex_lock(&mm->mu);
    int rc = ke_sqlite_begin(mm->db);
    if (rc == 0) {
        rc = apply_locked(mm, msg, msg->route->resource, msg->header->resource_version,
                          is_delete);
        if (rc >= 0 && ke_sqlite_commit(mm->db) != 0)
            rc = KE_EDB;
        else if (rc < 0)
            ke_sqlite_rollback(mm->db);
    }
    pthread_mutex_unlock(&mm->mu);
    if (rc == 1)
        ke_metric_add(mm->applied, 1);
    else if (rc == 0)
        ke_metric_add(mm->stale, 1);
    return rc;
}

typedef struct digest_ctx {
    Ke__V1__DigestEntry **v;
    size_t n, cap;
    int failed;
} digest_ctx;

static int digest_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    (void)content;
    (void)len;
    digest_ctx *d = arg;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        Ke__V1__DigestEntry **v = realloc(d->v, cap * sizeof(*v));
        if (!v) {
            d->failed = 1;
            return 1;
        }
        d->v = v;
        d->cap = cap;
    }
    Ke__V1__DigestEntry *e = malloc(sizeof(*e));
    if (!e || !(key = strdup(key))) {
        free(e);
        d->failed = 1;
        return 1;
    }
    ke__v1__digest_entry__init(e);
    e->key = (char *)key;
    e->resource_version = rv;
    d->v[d->n++] = e;
    return 0;
}

int metamanager_digest(metamanager *mm, Ke__V1__DigestEntry ***out, size_t *n)
{
    digest_ctx d = {0};
    int rc = metamanager_list(mm, "", digest_one, &d);
    if (rc == 0 && d.failed)
        rc = KE_ENOMEM;
    if (rc != 0) {
        metamanager_digest_free(d.v, d.n);
        return rc;
    }
    *out = d.v;
    *n = d.n;
    return 0;
}

void metamanager_digest_free(Ke__V1__DigestEntry **d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i]->key);
        free(d[i]);
    }
    free(d);
}

int metamanager_get(metamanager *mm, const char *key, uint64_t *rv, uint8_t **content,
                    size_t *len)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&mm->mu);
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
    pthread_mutex_unlock(&mm->mu);
    return rc;
}

int metamanager_list(metamanager *mm, const char *prefix,
                     int (*fn)(const char *key, uint64_t rv, const void *content, size_t len,
                               void *arg),
                     void *arg)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&mm->mu);
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
    pthread_mutex_unlock(&mm->mu);
    return rc < 0 ? rc : 0;
}

int metamanager_report(metamanager *mm, const Ke__V1__Message *msg, uint64_t *seq,
                       int *duplicate)
{
    if (!msg || !msg->route || !msg->header || !msg->route->resource[0] ||
        msg->header->resource_version == 0)
        return KE_EINVAL;
    const char *key = msg->route->resource;
    uint64_t rv = msg->header->resource_version;
    *seq = 0;
    *duplicate = 0;
    size_t len = protobuf_c_message_get_packed_size(&msg->base);
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed)
        return KE_ENOMEM;
    protobuf_c_message_pack(&msg->base, packed);
    sqlite3_stmt *st;
    pthread_mutex_lock(&mm->mu);
    int rc = ke_sqlite_begin(mm->db);
    if (rc == 0)
        rc = ke_sqlite_prepare(mm->db, "SELECT rv FROM reported WHERE key = ?", &st);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = ke_sqlite_step(mm->db, st);
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
                                   "INSERT INTO reported(key, rv) VALUES (?,?) "
                                   "ON CONFLICT(key) DO UPDATE SET rv = excluded.rv",
                                   &st);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)rv);
            rc = ke_sqlite_step(mm->db, st);
            ke_sqlite_release(mm->db, st);
            rc = rc < 0 ? rc : 0;
        }
    }
    if (rc == 0 && ke_sqlite_commit(mm->db) == 0) {
        if (!*duplicate)
            mm->pending++;
    } else {
        ke_sqlite_rollback(mm->db);
        if (rc == 0)
            rc = KE_EDB;
        *seq = 0;
    }
    uint64_t pending = mm->pending;
    pthread_mutex_unlock(&mm->mu);
    free(packed);
    ke_metric_set(mm->outbox, (int64_t)pending);
    return rc;
}

int metamanager_outbox_scan(metamanager *mm, uint64_t from, size_t max,
                            int (*fn)(uint64_t seq, const uint8_t *msg, size_t len, void *arg),
                            void *arg)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&mm->mu);
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
    pthread_mutex_unlock(&mm->mu);
    return rc < 0 ? rc : 0;
}

int metamanager_outbox_ack(metamanager *mm, uint64_t upto)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&mm->mu);
    int rc = ke_sqlite_prepare(mm->db, "DELETE FROM outbox WHERE seq <= ?", &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (int64_t)upto);
        rc = ke_sqlite_step(mm->db, st);
        ke_sqlite_release(mm->db, st);
        rc = rc < 0 ? rc : 0;
        if (rc == 0)
            mm->pending -= (uint64_t)sqlite3_changes(ke_sqlite_handle(mm->db));
    }
    uint64_t pending = mm->pending;
    pthread_mutex_unlock(&mm->mu);
    ke_metric_set(mm->outbox, (int64_t)pending);
    return rc;
}

uint64_t metamanager_outbox_pending(metamanager *mm)
{
    pthread_mutex_lock(&mm->mu);
    uint64_t p = mm->pending;
    pthread_mutex_unlock(&mm->mu);
    return p;
}
