/*
 * ke_sqlite.c — see ke_sqlite.h.
 *
 * Map: open/close and the connection settings first, then exec and the
 * error logging every path shares, then transactions, migrations, and last
 * the per-connection statement cache (a small array searched by SQL text,
 * least-recently-used eviction among statements not lent out).
 */
#include "ke_sqlite.h"

#include "ke_err.h"
#include "ke_log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MOD "sqlite"
/* SQL text quoted in a log line is cut here and flattened to one line. */
#define SQL_EXCERPT_MAX 256

typedef struct {
    char *sql;          /* owned copy of the key */
    sqlite3_stmt *stmt; /* owned */
    int in_use;         /* lent out by ke_sqlite_prepare, not yet released */
    uint64_t last_used; /* db->tick at the last prepare, for LRU */
} stmt_entry;

struct ke_sqlite {
    sqlite3 *h;
    stmt_entry cache[KE_SQLITE_STMT_CACHE_MAX];
    size_t ncache;
    uint64_t tick;
    ke_sqlite_cache_stats stats;
};

/* sql_excerpt copies `sql` into buf as one line (whitespace runs become one
 * space), cut at the buffer size with "..." so log lines stay lines. */
static const char *sql_excerpt(const char *sql, char *buf, size_t cap)
{
    size_t n = 0;
    int space = 0;
    const char *p = sql ? sql : "";
    for (; *p && n + 5 < cap; p++) { /* room for ' ', "..." and NUL */
        if (isspace((unsigned char)*p)) {
            space = n > 0;
            continue;
        }
        if (space)
            buf[n++] = ' ';
        space = 0;
        buf[n++] = *p;
    }
    if (*p)
        memcpy(buf + n, "...", 3), n += 3;
    buf[n] = '\0';
    return buf;
}

/* db_fail logs the connection's current error once, with the SQL, and
 * returns KE_EDB. */
static int db_fail(ke_sqlite *db, const char *what, const char *sql)
{
    char ex[SQL_EXCERPT_MAX];
    const char *file = sqlite3_db_filename(db->h, "main");
    ke_log_error(LOG_MOD, "%s failed: %s file=%s rc=%d sql=\"%s\"", what, sqlite3_errmsg(db->h),
                 (file && *file) ? file : ":memory:", sqlite3_extended_errcode(db->h),
                 sql_excerpt(sql, ex, sizeof(ex)));
    return KE_EDB;
}

int ke_sqlite_exec(ke_sqlite *db, const char *sql)
{
    if (!db || !sql)
        return KE_EINVAL;
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, "exec", sql);
    return 0;
}

/* enable_wal switches the journal to WAL and checks that it took: the pragma
 * answers with the mode in force, which stays "delete" on file systems
 * without shared memory and is "memory" for in-memory databases. */
static int enable_wal(ke_sqlite *db)
{
    static const char sql[] = "PRAGMA journal_mode=WAL";
    sqlite3_stmt *st = NULL;
    int rv = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", sql);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rv = db_fail(db, "step", sql);
        goto out;
    }
    const char *mode = (const char *)sqlite3_column_text(st, 0);
    if (mode && strcmp(mode, "wal") == 0)
        goto out;
    if (mode && strcmp(mode, "memory") == 0) {
        ke_log_warn(LOG_MOD, "in-memory database: WAL not available, journal_mode=memory");
        goto out;
    }
    ke_log_error(LOG_MOD, "cannot enable WAL journal file=%s journal_mode=%s",
                 sqlite3_db_filename(db->h, "main"), mode ? mode : "?");
    rv = KE_EDB;
out:
    sqlite3_finalize(st);
    return rv;
}

int ke_sqlite_open(const char *path, ke_sqlite **out)
{
    if (!path || !out)
        return KE_EINVAL;
    *out = NULL;
    ke_sqlite *db = calloc(1, sizeof(*db));
    if (!db)
        return KE_ENOMEM;
    int rv = 0;
    int rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        ke_log_error(LOG_MOD, "cannot open database file=%s: %s rc=%d", path,
                     db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc), rc);
        rv = rc == SQLITE_NOMEM ? KE_ENOMEM : KE_EDB;
        goto out;
    }
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, KE_SQLITE_BUSY_TIMEOUT_MS);
    if ((rv = enable_wal(db)) != 0)
        goto out;
    /*
     * synchronous=NORMAL: in WAL mode this fsyncs the WAL only at checkpoints,
     * not at every commit. The database can never be corrupted by a crash or
     * power loss and an application crash loses nothing; a power loss can
     * only roll back the last few commits, atomically (each logical change
     * is one transaction, so state and the outbox row recording it vanish
     * together). The protocol tolerates that: sync is level-based, the
     * edge's hello re-announces what it really holds and the cloud resends
     * the difference, and unacked upstream reports stay in the sender's
     * outbox. FULL would cost an fsync per commit, which the edge's flash
     * storage pays dearly for. A caller that needs FULL can set it itself.
     */
    if ((rv = ke_sqlite_exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")) != 0)
        goto out;
    *out = db;
    db = NULL;
out:
    ke_sqlite_close(db);
    return rv;
}

void ke_sqlite_close(ke_sqlite *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < db->ncache; i++) {
        stmt_entry *e = &db->cache[i];
        if (e->in_use)
            ke_log_warn(LOG_MOD, "closing with a statement not released sql=\"%.80s\"", e->sql);
        sqlite3_finalize(e->stmt);
        free(e->sql);
    }
    if (db->h) {
        if (!sqlite3_get_autocommit(db->h))
            ke_sqlite_rollback(db);
        if (sqlite3_close(db->h) == SQLITE_BUSY) {
            /* Uncached statements the caller never released: finalize them
             * so the connection (and its memory) really goes. */
            sqlite3_stmt *st;
            int leaked = 0;
            while ((st = sqlite3_next_stmt(db->h, NULL)) != NULL) {
                sqlite3_finalize(st);
                leaked++;
            }
            ke_log_warn(LOG_MOD, "closing with unreleased statements count=%d", leaked);
            sqlite3_close(db->h);
        }
    }
    free(db);
}

sqlite3 *ke_sqlite_handle(ke_sqlite *db) { return db ? db->h : NULL; }

int ke_sqlite_user_version(ke_sqlite *db, int *out)
{
    static const char sql[] = "PRAGMA user_version";
    if (!db || !out)
        return KE_EINVAL;
    sqlite3_stmt *st = NULL;
    int rv = 0;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, "prepare", sql);
    if (sqlite3_step(st) != SQLITE_ROW)
        rv = db_fail(db, "step", sql);
    else
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rv;
}

/* ---- transactions ---------------------------------------------------- */

int ke_sqlite_begin(ke_sqlite *db)
{
    if (!db)
        return KE_EINVAL;
    if (!sqlite3_get_autocommit(db->h)) {
        ke_log_error(LOG_MOD, "begin: a transaction is already open (transactions do not nest)");
        return KE_EINVAL;
    }
    return ke_sqlite_exec(db, "BEGIN IMMEDIATE");
}

int ke_sqlite_commit(ke_sqlite *db)
{
    if (!db)
        return KE_EINVAL;
    if (sqlite3_get_autocommit(db->h)) {
        ke_log_error(LOG_MOD, "commit: no transaction is open");
        return KE_EINVAL;
    }
    int rv = ke_sqlite_exec(db, "COMMIT");
    if (rv != 0)
        ke_sqlite_rollback(db);
    return rv;
}

int ke_sqlite_rollback(ke_sqlite *db)
{
    if (!db)
        return KE_EINVAL;
    if (sqlite3_get_autocommit(db->h))
        return 0; /* nothing open, or SQLite already rolled back */
    return ke_sqlite_exec(db, "ROLLBACK");
}

int ke_sqlite_tx(ke_sqlite *db, ke_sqlite_tx_fn fn, void *arg)
{
    if (!db || !fn)
        return KE_EINVAL;
    int rv = ke_sqlite_begin(db);
    if (rv != 0)
        return rv;
    rv = fn(db, arg);
    if (rv != 0) {
        ke_sqlite_rollback(db);
        return rv;
    }
    return ke_sqlite_commit(db);
}

/* ---- migrations ------------------------------------------------------ */

int ke_sqlite_migrate(ke_sqlite *db, const char *const *scripts, int n)
{
    if (!db || n < 0 || (n > 0 && !scripts))
        return KE_EINVAL;
    if (!sqlite3_get_autocommit(db->h)) {
        ke_log_error(LOG_MOD, "migrate: called inside a transaction");
        return KE_EINVAL;
    }
    const char *file = sqlite3_db_filename(db->h, "main");
    if (!file || !*file)
        file = ":memory:";
    for (;;) {
        /* Read the version inside the write transaction: a process that
         * migrated meanwhile is seen, and no step is applied twice. */
        int rv = ke_sqlite_begin(db);
        if (rv != 0)
            return rv;
        int v = 0;
        if ((rv = ke_sqlite_user_version(db, &v)) != 0)
            goto fail;
        if (v > n || v < 0) {
            ke_log_error(LOG_MOD,
                         "database schema is newer than this program: refusing to use it "
                         "(upgrade the program, or restore a backup made by this version) "
                         "file=%s db_version=%d program_version=%d",
                         file, v, n);
            rv = KE_EDB;
            goto fail;
        }
        if (v == n)
            return ke_sqlite_rollback(db); /* nothing written: just unlock */
        if (!scripts[v]) {
            ke_log_error(LOG_MOD, "migrate: script %d is NULL", v);
            rv = KE_EINVAL;
            goto fail;
        }
        if ((rv = ke_sqlite_exec(db, scripts[v])) != 0)
            goto fail;
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version=%d", v + 1);
        if ((rv = ke_sqlite_exec(db, bump)) != 0)
            goto fail;
        if ((rv = ke_sqlite_commit(db)) != 0)
            return rv;
        ke_log_info(LOG_MOD, "schema migrated file=%s from=%d to=%d", file, v, v + 1);
        continue;
    fail:
        ke_sqlite_rollback(db);
        return rv;
    }
}

/* ---- statement cache ------------------------------------------------- */

/* only_trailing_space: true when nothing but whitespace and ';' follows the
 * first statement, i.e. `sql` held exactly one statement. */
static int only_trailing_space(const char *tail)
{
    for (; tail && *tail; tail++)
        if (!isspace((unsigned char)*tail) && *tail != ';')
            return 0;
    return 1;
}

/* cache_slot returns a free slot, evicting the least recently used entry
 * not lent out when the cache is full, or NULL when every entry is lent. */
static stmt_entry *cache_slot(ke_sqlite *db)
{
    if (db->ncache < KE_SQLITE_STMT_CACHE_MAX)
        return &db->cache[db->ncache++];
    stmt_entry *lru = NULL;
    for (size_t i = 0; i < db->ncache; i++) {
        stmt_entry *e = &db->cache[i];
        if (!e->in_use && (!lru || e->last_used < lru->last_used))
            lru = e;
    }
    if (!lru)
        return NULL;
    sqlite3_finalize(lru->stmt);
    free(lru->sql);
    memset(lru, 0, sizeof(*lru));
    db->stats.evictions++;
    return lru;
}

int ke_sqlite_prepare(ke_sqlite *db, const char *sql, sqlite3_stmt **out)
{
    if (!db || !sql || !out)
        return KE_EINVAL;
    *out = NULL;
    int busy_same = 0;
    for (size_t i = 0; i < db->ncache; i++) {
        stmt_entry *e = &db->cache[i];
        if (strcmp(e->sql, sql) != 0)
            continue;
        if (e->in_use) {
            busy_same = 1; /* nested use of the same SQL: lend a fresh copy */
            break;
        }
        e->in_use = 1;
        e->last_used = ++db->tick;
        db->stats.hits++;
        *out = e->stmt;
        return 0;
    }

    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail) != SQLITE_OK)
        return db_fail(db, "prepare", sql);
    if (!st || !only_trailing_space(tail)) {
        char ex[SQL_EXCERPT_MAX];
        ke_log_error(LOG_MOD, "prepare: expected exactly one statement sql=\"%s\"",
                     sql_excerpt(sql, ex, sizeof(ex)));
        sqlite3_finalize(st);
        return KE_EINVAL;
    }
    db->stats.misses++;

    char *key = busy_same ? NULL : strdup(sql);
    if (!busy_same && !key) {
        sqlite3_finalize(st);
        return KE_ENOMEM;
    }
    stmt_entry *e = key ? cache_slot(db) : NULL;
    if (!e) {
        free(key);
        db->stats.bypasses++;
        *out = st; /* uncached: ke_sqlite_release finalizes it */
        return 0;
    }
    e->sql = key;
    e->stmt = st;
    e->in_use = 1;
    e->last_used = ++db->tick;
    *out = st;
    return 0;
}

void ke_sqlite_release(ke_sqlite *db, sqlite3_stmt *stmt)
{
    if (!db || !stmt)
        return;
    for (size_t i = 0; i < db->ncache; i++) {
        stmt_entry *e = &db->cache[i];
        if (e->stmt == stmt) {
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
            e->in_use = 0;
            return;
        }
    }
    sqlite3_finalize(stmt);
}

int ke_sqlite_step(ke_sqlite *db, sqlite3_stmt *stmt)
{
    if (!db || !stmt)
        return KE_EINVAL;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return db_fail(db, "step", sqlite3_sql(stmt));
}

void ke_sqlite_cache_stats_get(const ke_sqlite *db, ke_sqlite_cache_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!db)
        return;
    *out = db->stats;
    out->entries = db->ncache;
}
