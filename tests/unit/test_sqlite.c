/*
 * test_sqlite.c — unit tests for lib/sqlite (ke_sqlite): connection
 * settings, migrations, transactions and the statement cache, each against
 * a real database file in a fresh temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ke_err.h"
#include "ke_log.h"
#include "ke_sqlite.h"

typedef struct {
    char dir[256];
    char path[300];
    ke_sqlite *db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/ke_sqlite_test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/test.db", f->dir);
    if (ke_sqlite_open(f->path, &f->db) != 0) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ke_sqlite_close(f->db);
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        char p[320];
        snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* query_int runs a one-row, one-column query through the statement cache. */
static int query_int(ke_sqlite *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(ke_sqlite_prepare(db, sql, &st), 0);
    assert_int_equal(ke_sqlite_step(db, st), 1);
    int v = sqlite3_column_int(st, 0);
    ke_sqlite_release(db, st);
    return v;
}

static const char *query_text_dup(ke_sqlite *db, const char *sql, char *buf, size_t cap)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(ke_sqlite_prepare(db, sql, &st), 0);
    assert_int_equal(ke_sqlite_step(db, st), 1);
    snprintf(buf, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    ke_sqlite_release(db, st);
    return buf;
}

static const char *const schema[] = {
    /* 0 -> 1 */
    "CREATE TABLE pods(key TEXT PRIMARY KEY, rv INTEGER NOT NULL);"
    "INSERT INTO pods VALUES('node/e1/default/pod/a', 1);",
    /* 1 -> 2 */
    "CREATE TABLE outbox(id INTEGER PRIMARY KEY, pod TEXT NOT NULL REFERENCES pods(key));"
    "INSERT INTO outbox(pod) VALUES('node/e1/default/pod/a');",
};

static void test_sqlite_open_enables_wal_normal_sync_and_foreign_keys(void **state)
{
    fixture *f = *state;
    char mode[16];
    assert_string_equal(query_text_dup(f->db, "PRAGMA journal_mode", mode, sizeof(mode)), "wal");
    assert_int_equal(query_int(f->db, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_int(f->db, "PRAGMA busy_timeout"), KE_SQLITE_BUSY_TIMEOUT_MS);
}

static void test_sqlite_migrate_runs_each_script_once(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 2), 0);
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 2), 0);
    int v = -1;
    assert_int_equal(ke_sqlite_user_version(f->db, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM pods"), 1);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM outbox"), 1);
}

static void test_sqlite_migrate_after_reopen_applies_only_new_scripts(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 1), 0);
    ke_sqlite_close(f->db);
    f->db = NULL;
    assert_int_equal(ke_sqlite_open(f->path, &f->db), 0);
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 2), 0);
    assert_int_equal(query_int(f->db, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM pods"), 1);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM outbox"), 1);
}

static void test_sqlite_migrate_refuses_newer_database(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_exec(f->db, "PRAGMA user_version=7"), 0);
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 2), KE_EDB);
    assert_int_equal(query_int(f->db, "PRAGMA user_version"), 7);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sqlite_master"), 0);
}

static void test_sqlite_migrate_failed_script_keeps_previous_version(void **state)
{
    fixture *f = *state;
    const char *const broken[] = {
        schema[0],
        "CREATE TABLE half(x INTEGER); THIS IS NOT SQL;",
    };
    assert_int_equal(ke_sqlite_migrate(f->db, broken, 2), KE_EDB);
    assert_int_equal(query_int(f->db, "PRAGMA user_version"), 1);
    assert_int_equal(
        query_int(f->db, "SELECT count(*) FROM sqlite_master WHERE name='half'"), 0);
}

static int insert_then_fail(ke_sqlite *db, void *arg)
{
    (void)arg;
    assert_int_equal(ke_sqlite_exec(db, "INSERT INTO pods VALUES('node/e1/default/pod/b', 2)"), 0);
    return KE_ECONFLICT;
}

static int insert_ok(ke_sqlite *db, void *arg)
{
    (void)arg;
    return ke_sqlite_exec(db, "INSERT INTO pods VALUES('node/e1/default/pod/c', 3)");
}

static void test_sqlite_tx_rollback_leaves_nothing(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 1), 0);
    assert_int_equal(ke_sqlite_tx(f->db, insert_then_fail, NULL), KE_ECONFLICT);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM pods"), 1);
    assert_true(sqlite3_get_autocommit(ke_sqlite_handle(f->db)));
}

static void test_sqlite_tx_commits_when_fn_returns_zero(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_migrate(f->db, schema, 1), 0);
    assert_int_equal(ke_sqlite_tx(f->db, insert_ok, NULL), 0);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM pods"), 2);
}

static void test_sqlite_begin_refuses_nested_transaction(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_begin(f->db), 0);
    assert_int_equal(ke_sqlite_begin(f->db), KE_EINVAL);
    assert_int_equal(ke_sqlite_rollback(f->db), 0);
    assert_int_equal(ke_sqlite_commit(f->db), KE_EINVAL);
}

static void test_sqlite_exec_bad_sql_returns_edb(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_sqlite_exec(f->db, "SELEKT nothing"), KE_EDB);
    sqlite3_stmt *st = NULL;
    assert_int_equal(ke_sqlite_prepare(f->db, "SELECT * FROM no_such_table", &st), KE_EDB);
    assert_null(st);
}

static void test_sqlite_prepare_reuses_cached_statement(void **state)
{
    fixture *f = *state;
    const char *sql = "SELECT ?1 + 1";
    sqlite3_stmt *a = NULL, *b = NULL;
    assert_int_equal(ke_sqlite_prepare(f->db, sql, &a), 0);
    sqlite3_bind_int(a, 1, 41);
    assert_int_equal(ke_sqlite_step(f->db, a), 1);
    assert_int_equal(sqlite3_column_int(a, 0), 42);
    ke_sqlite_release(f->db, a);

    assert_int_equal(ke_sqlite_prepare(f->db, sql, &b), 0);
    assert_ptr_equal(a, b);
    /* handed back reset and with bindings cleared: ?1 is NULL now */
    assert_int_equal(ke_sqlite_step(f->db, b), 1);
    assert_int_equal(sqlite3_column_type(b, 0), SQLITE_NULL);
    ke_sqlite_release(f->db, b);

    ke_sqlite_cache_stats s;
    ke_sqlite_cache_stats_get(f->db, &s);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.entries, 1);
}

static void test_sqlite_prepare_same_sql_in_use_lends_uncached_copy(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *outer = NULL, *inner = NULL;
    assert_int_equal(ke_sqlite_prepare(f->db, "SELECT 1", &outer), 0);
    assert_int_equal(ke_sqlite_prepare(f->db, "SELECT 1", &inner), 0);
    assert_ptr_not_equal(outer, inner);
    ke_sqlite_release(f->db, inner); /* finalized */
    ke_sqlite_release(f->db, outer); /* back in the cache */
    ke_sqlite_cache_stats s;
    ke_sqlite_cache_stats_get(f->db, &s);
    assert_int_equal(s.bypasses, 1);
    assert_int_equal(s.entries, 1);
}

static void prepare_release(ke_sqlite *db, const char *sql, sqlite3_stmt **seen)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(ke_sqlite_prepare(db, sql, &st), 0);
    if (seen)
        *seen = st;
    ke_sqlite_release(db, st);
}

static void test_sqlite_prepare_cache_full_evicts_least_recently_used(void **state)
{
    fixture *f = *state;
    char sql[64];
    sqlite3_stmt *first = NULL, *again = NULL;
    for (int i = 0; i < KE_SQLITE_STMT_CACHE_MAX; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i);
        prepare_release(f->db, sql, i == 0 ? &first : NULL);
    }
    prepare_release(f->db, "SELECT 0", NULL); /* now "SELECT 1" is the oldest */
    snprintf(sql, sizeof(sql), "SELECT %d", KE_SQLITE_STMT_CACHE_MAX);
    prepare_release(f->db, sql, NULL); /* the bound: one must go */

    ke_sqlite_cache_stats s;
    ke_sqlite_cache_stats_get(f->db, &s);
    assert_int_equal(s.entries, KE_SQLITE_STMT_CACHE_MAX);
    assert_int_equal(s.evictions, 1);
    prepare_release(f->db, "SELECT 0", &again);
    assert_ptr_equal(again, first);
    uint64_t misses = s.misses;
    prepare_release(f->db, "SELECT 1", NULL);
    ke_sqlite_cache_stats_get(f->db, &s);
    assert_int_equal(s.misses, misses + 1);
}

static void test_sqlite_close_null_is_noop(void **state)
{
    (void)state;
    ke_sqlite_close(NULL);
    ke_sqlite_release(NULL, NULL);
}

int main(void)
{
    ke_log_set_level(KE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sqlite_open_enables_wal_normal_sync_and_foreign_keys,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migrate_runs_each_script_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migrate_after_reopen_applies_only_new_scripts,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migrate_refuses_newer_database, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_migrate_failed_script_keeps_previous_version,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_tx_rollback_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_tx_commits_when_fn_returns_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_begin_refuses_nested_transaction, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_exec_bad_sql_returns_edb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_prepare_reuses_cached_statement, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_prepare_same_sql_in_use_lends_uncached_copy,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_prepare_cache_full_evicts_least_recently_used,
                                        setup, teardown),
        cmocka_unit_test(test_sqlite_close_null_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
