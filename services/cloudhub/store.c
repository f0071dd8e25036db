/*
 * store.c — CloudHub's SQLite schema and queries.
 *
 *   nodes    registered nodes: certificate fingerprints (current and the
 *            one it replaced, valid until it expires), the next upstream
 *            sequence number expected from the node.
 *   objects  the latest message published for every resource key of every
 *            node; a delete is kept as a tombstone with its version, so a
 *            node that was away learns of it at resync.
 *
 * Every function is called with ch->mu held.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ch_migrations[] = {
    "CREATE TABLE nodes ("
    "  name TEXT PRIMARY KEY,"
    "  cert_fp TEXT NOT NULL,"
    "  prev_cert_fp TEXT NOT NULL DEFAULT '',"
    "  joined_ms INTEGER NOT NULL,"
    "  next_edge_seq INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE objects ("
    "  key TEXT PRIMARY KEY,"
    "  node TEXT NOT NULL,"
    "  rv INTEGER NOT NULL,"
    "  deleted INTEGER NOT NULL,"
    "  msg BLOB NOT NULL);"
    "CREATE INDEX objects_by_node ON objects(node);",
};

int ch_store_open(cloudhub *ch)
{
    int rc = ke_sqlite_open(ch->cfg.db_path, &ch->db);
    if (rc == 0)
        rc = ke_sqlite_migrate(ch->db, ch_migrations,
                               (int)(sizeof(ch_migrations) / sizeof(ch_migrations[0])));
    return rc;
}

int ch_store_load_nodes(cloudhub *ch)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT name, next_edge_seq FROM nodes", &st);
    if (rc)
        return rc;
    while ((rc = ke_sqlite_step(ch->db, st)) == 1) {
        ch_node *n = calloc(1, sizeof(*n));
        if (!n) {
            rc = KE_ENOMEM;
            break;
        }
        snprintf(n->name, sizeof(n->name), "%s", (const char *)sqlite3_column_text(st, 0));
        n->next_edge_seq = (uint64_t)sqlite3_column_int64(st, 1);
        n->pending = ke_map_new();
        if (!n->pending || ke_map_put(ch->nodes, n->name, n, NULL) != 0) {
            ke_map_free(n->pending);
            free(n);
            rc = KE_ENOMEM;
            break;
        }
    }
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_node_get(cloudhub *ch, const char *name, char *fp, char *prev_fp, uint64_t *next_seq)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(
        ch->db, "SELECT cert_fp, prev_cert_fp, next_edge_seq FROM nodes WHERE name = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    if (rc == 1) {
        if (fp)
            snprintf(fp, 65, "%s", (const char *)sqlite3_column_text(st, 0));
        if (prev_fp)
            snprintf(prev_fp, 65, "%s", (const char *)sqlite3_column_text(st, 1));
        if (next_seq)
            *next_seq = (uint64_t)sqlite3_column_int64(st, 2);
        rc = 0;
    } else if (rc == 0) {
        rc = KE_ENOTFOUND;
    }
    ke_sqlite_release(ch->db, st);
    return rc;
}

static int exec_bind(cloudhub *ch, const char *sql, const char *a, const char *b, int64_t i)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, sql, &st);
    if (rc)
        return rc;
    int idx = 1;
    if (a)
        sqlite3_bind_text(st, idx++, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(st, idx++, b, -1, SQLITE_STATIC);
    if (i >= 0)
        sqlite3_bind_int64(st, idx++, i);
    rc = ke_sqlite_step(ch->db, st);
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_node_insert(cloudhub *ch, const char *name, const char *fp)
{
    return exec_bind(ch, "INSERT INTO nodes(name, cert_fp, joined_ms) VALUES (?, ?, ?)", name,
                     fp, ch_now_ms());
}

int ch_store_node_rotate(cloudhub *ch, const char *name, const char *fp)
{
    return exec_bind(ch,
                     "UPDATE nodes SET prev_cert_fp = cert_fp, cert_fp = ?2 WHERE name = ?1",
                     name, fp, -1);
}

int ch_store_node_delete(cloudhub *ch, const char *name)
{
    return exec_bind(ch, "DELETE FROM nodes WHERE name = ?", name, NULL, -1);
}

int ch_store_node_set_seq(cloudhub *ch, const char *name, uint64_t next_seq)
{
    return exec_bind(ch, "UPDATE nodes SET next_edge_seq = ?2 WHERE name = ?1", name, NULL,
                     (int64_t)next_seq);
}

int ch_store_object_put(cloudhub *ch, const char *node, const char *key, uint64_t rv,
                        int deleted, const uint8_t *msg, size_t len)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT rv FROM objects WHERE key = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    uint64_t have = rc == 1 ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    ke_sqlite_release(ch->db, st);
    if (rc < 0)
        return rc;
    if (rc == 1 && have == rv)
        return KE_EEXIST;
    if (rc == 1 && have > rv)
        return KE_ECONFLICT;
    rc = ke_sqlite_prepare(ch->db,
                           "INSERT INTO objects(key, node, rv, deleted, msg) VALUES (?,?,?,?,?) "
                           "ON CONFLICT(key) DO UPDATE SET rv = excluded.rv, "
                           "deleted = excluded.deleted, msg = excluded.msg",
                           &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (int64_t)rv);
    sqlite3_bind_int(st, 4, deleted);
    sqlite3_bind_blob(st, 5, msg, (int)len, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_node_objects(cloudhub *ch, const char *node,
                          int (*fn)(const char *key, uint64_t rv, int deleted, const void *msg,
                                    size_t len, void *arg),
                          void *arg)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db,
                               "SELECT key, rv, deleted, msg FROM objects WHERE node = ? "
                               "ORDER BY rowid",
                               &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, node, -1, SQLITE_STATIC);
    while ((rc = ke_sqlite_step(ch->db, st)) == 1) {
        rc = fn((const char *)sqlite3_column_text(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
                sqlite3_column_int(st, 2), sqlite3_column_blob(st, 3),
                (size_t)sqlite3_column_bytes(st, 3), arg);
        if (rc)
            break;
    }
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_node_drop_objects(cloudhub *ch, const char *node)
{
    return exec_bind(ch, "DELETE FROM objects WHERE node = ?", node, NULL, -1);
}

int ch_store_object_get(cloudhub *ch, const char *key, uint64_t *rv, uint8_t **msg, size_t *len)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT rv, msg FROM objects WHERE key = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    if (rc == 1) {
        *rv = (uint64_t)sqlite3_column_int64(st, 0);
        *len = (size_t)sqlite3_column_bytes(st, 1);
        *msg = malloc(*len ? *len : 1);
        if (*msg && *len)
            memcpy(*msg, sqlite3_column_blob(st, 1), *len);
        rc = *msg ? 0 : KE_ENOMEM;
    } else if (rc == 0) {
        rc = KE_ENOTFOUND;
    }
    ke_sqlite_release(ch->db, st);
    return rc;
}
