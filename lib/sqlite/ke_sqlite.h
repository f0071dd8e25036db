/*
 * ke_sqlite.h — SQLite with intent: the one way kubeedge-c opens and uses a
 * database file (cloud embedded store, edge MetaManager, DeviceTwin, outbox).
 *
 * A ke_sqlite is one connection plus a small cache of prepared statements.
 * It opens the file in WAL mode with synchronous=NORMAL, foreign keys on and
 * a busy timeout; brings the schema forward with numbered migrations kept in
 * PRAGMA user_version; and runs logical changes in IMMEDIATE transactions.
 *
 * Threads: a connection (and its statement cache) is used by one thread at a
 * time. Open one connection per thread that needs the database; WAL lets
 * readers run alongside the single writer.
 *
 * Errors: every failing SQLite call returns KE_EDB and has already been
 * logged once here with sqlite3_errmsg and the SQL text, so callers only
 * decide what to do. The raw handle (ke_sqlite_handle) gives the extended
 * error code when a caller must tell, say, a constraint violation apart.
 */
#ifndef KE_SQLITE_H
#define KE_SQLITE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* How long a statement waits for another connection's write lock. */
#define KE_SQLITE_BUSY_TIMEOUT_MS 5000
/* Prepared statements kept per connection; least recently used goes first. */
#define KE_SQLITE_STMT_CACHE_MAX 32

typedef struct ke_sqlite ke_sqlite;

/* Counters of the statement cache (see ke_sqlite_prepare). */
typedef struct {
    uint64_t hits;      /* prepare answered from the cache */
    uint64_t misses;    /* prepare compiled the SQL */
    uint64_t evictions; /* a cached statement was finalized to make room */
    uint64_t bypasses;  /* cache full of in-use statements (or the same SQL
                           in use): compiled uncached, finalized on release */
    size_t entries;     /* statements currently cached */
} ke_sqlite_cache_stats;

/* ke_sqlite_open opens (creating if needed) the database file at `path`
 * and applies the connection settings: journal_mode=WAL, synchronous=NORMAL,
 * foreign_keys=ON, busy timeout KE_SQLITE_BUSY_TIMEOUT_MS. ":memory:" is
 * accepted (it cannot be WAL; a warning is logged). On success *out owns the
 * connection; release it with ke_sqlite_close. Returns 0, KE_EINVAL,
 * KE_ENOMEM, or KE_EDB (file cannot be opened, or WAL cannot be enabled). */
int ke_sqlite_open(const char *path, ke_sqlite **out);

/* ke_sqlite_close finalizes every statement of the connection, rolls back an
 * open transaction and closes it. ke_sqlite_close(NULL) is a no-op. Any
 * sqlite3_stmt obtained from ke_sqlite_prepare is invalid afterwards. */
void ke_sqlite_close(ke_sqlite *db);

/* ke_sqlite_handle returns the underlying connection, borrowed for the life
 * of `db`, for sqlite3_column_*, sqlite3_changes, sqlite3_last_insert_rowid,
 * sqlite3_extended_errcode. Do not close it. */
sqlite3 *ke_sqlite_handle(ke_sqlite *db);

/* ke_sqlite_exec runs `sql`, which may hold several statements separated by
 * ';', discarding any rows. Returns 0, KE_EINVAL or KE_EDB (logged). */
int ke_sqlite_exec(ke_sqlite *db, const char *sql);

/* ke_sqlite_user_version reads PRAGMA user_version into *out.
 * Returns 0 or KE_EDB. */
int ke_sqlite_user_version(ke_sqlite *db, int *out);

/* ke_sqlite_migrate brings the schema to version `n`. scripts[i] (SQL text,
 * may hold several statements) takes the schema from version i to i+1; the
 * version lives in PRAGMA user_version (0 for a new file). Each step runs
 * in its own IMMEDIATE transaction together with its version bump, so a
 * failed step leaves the previous version intact, and two processes
 * migrating the same file at once apply each step once. Already at `n`:
 * nothing happens. Must not be called inside a transaction.
 * Returns 0; KE_EINVAL for bad arguments or an open transaction; KE_EDB
 * when a script fails or when the file's version is newer than `n` (written
 * by a newer program: refused and logged, the file is left untouched). */
int ke_sqlite_migrate(ke_sqlite *db, const char *const *scripts, int n);

/* ke_sqlite_begin starts an IMMEDIATE transaction: the write lock is taken
 * now (waiting up to the busy timeout), so a transaction never fails half
 * way through on a lock upgrade. Transactions do not nest: beginning while
 * one is open returns KE_EINVAL. Returns 0, KE_EINVAL or KE_EDB. */
int ke_sqlite_begin(ke_sqlite *db);

/* ke_sqlite_commit commits the open transaction. On failure the transaction
 * is rolled back before returning KE_EDB, so the connection is always left
 * outside a transaction. Returns 0, KE_EINVAL (none open) or KE_EDB. */
int ke_sqlite_commit(ke_sqlite *db);

/* ke_sqlite_rollback abandons the open transaction, if any (SQLite may have
 * rolled back already after some errors; that is not an error here).
 * Returns 0 or KE_EDB. */
int ke_sqlite_rollback(ke_sqlite *db);

/* A unit of work for ke_sqlite_tx: return 0 to commit, anything else to roll
 * back. It may use `db` freely but must not begin/commit/rollback itself. */
typedef int (*ke_sqlite_tx_fn)(ke_sqlite *db, void *arg);

/* ke_sqlite_tx runs fn(db, arg) in one IMMEDIATE transaction: commits when fn
 * returns 0, rolls back otherwise. Returns fn's non-zero result unchanged,
 * or the begin/commit error (KE_EINVAL, KE_EDB), or 0 once committed. */
int ke_sqlite_tx(ke_sqlite *db, ke_sqlite_tx_fn fn, void *arg);

/* ke_sqlite_prepare hands out a prepared statement for `sql` (one statement),
 * from the connection's cache when the same SQL text was prepared before.
 * The statement is borrowed: it is reset and has no bindings, bind and step
 * it, then give it back with ke_sqlite_release (on every path) — until then
 * it is marked in use and never evicted. The cache holds at most
 * KE_SQLITE_STMT_CACHE_MAX statements and evicts the least recently used
 * one not in use; when none can go, the statement is compiled uncached and
 * finalized on release (counted as a bypass). Returns 0, KE_EINVAL,
 * KE_ENOMEM or KE_EDB (SQL does not compile; logged with the SQL). */
int ke_sqlite_prepare(ke_sqlite *db, const char *sql, sqlite3_stmt **out);

/* ke_sqlite_release gives back a statement from ke_sqlite_prepare: resets it
 * and clears its bindings (cached) or finalizes it (uncached).
 * ke_sqlite_release(db, NULL) is a no-op. */
void ke_sqlite_release(ke_sqlite *db, sqlite3_stmt *stmt);

/* ke_sqlite_step steps `stmt` once. Returns 1 when a row is ready, 0 when the
 * statement is done, KE_EDB on error (logged with the statement's SQL). */
int ke_sqlite_step(ke_sqlite *db, sqlite3_stmt *stmt);

/* ke_sqlite_cache_stats_get copies the statement cache counters into *out. */
void ke_sqlite_cache_stats_get(const ke_sqlite *db, ke_sqlite_cache_stats *out);

#endif
