/*
 * store.c — CloudHub's SQLite schema and queries.
 *
 *   nodes    registered nodes: certificate fingerprints (current and the
 *            one it replaced, valid until it expires), the next upstream
 *            sequence number expected from the node.
 *   objects  the latest message published for every resource key of every
 *            node; a delete is kept as a tombstone with its version, so a
 *            node that was away learns of it at resync, and removed once
 *            the node has acked it (or resyncs without the key).
 *   uplog    the durable upstream log: reports from nodes, at most one per
 *            (group, resource key) (reports are state: a newer one
 *            replaces the older and moves to the end), written in the same
 *            transaction as the node's next_edge_seq.
 *   consumers the named readers of uplog: their groups (a JSON array of
 *            strings, [] for all) and their durable cursor. An entry is
 *            removed once every consumer registered for its group has
 *            acked it; entries of groups nobody is registered for stay.
 *   join_tokens the joins made with each use-limited token (by token id),
 *            counted in the transaction that registers the node; a row
 *            goes once its token has expired.
 *
 * Every function is called with ch->mu held.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"

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
    "CREATE TABLE uplog ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  grp TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  node TEXT NOT NULL,"
    "  edge_seq INTEGER NOT NULL,"
    "  msg BLOB NOT NULL,"
    "  UNIQUE(grp, key));"
    "CREATE INDEX uplog_by_node ON uplog(node);"
    "CREATE TABLE consumers ("
    "  name TEXT PRIMARY KEY,"
    "  groups TEXT NOT NULL,"
    "  cursor INTEGER NOT NULL DEFAULT 0);",
    "CREATE TABLE join_tokens ("
    "  id TEXT PRIMARY KEY,"
    "  used INTEGER NOT NULL,"
    "  expires INTEGER NOT NULL);",
};

/* The GC rule, for the uplog row in scope: the lowest cursor of the
 * consumers registered for its group (NULL when there are none, and
 * `id <= NULL` keeps the row). */
#define CH_UPLOG_COLLECTABLE                                                                     \
    "id <= (SELECT MIN(c.cursor) FROM consumers c WHERE json_array_length(c.groups) = 0 "        \
    "OR EXISTS (SELECT 1 FROM json_each(c.groups) j WHERE j.value = uplog.grp))"


int ch_store_open(cloudhub *ch)
{
    int rc = ke_sqlite_open(ch->cfg.db_path, &ch->db);
    /* The file is CloudHub's alone (backups copy it stopped): it keeps its
     * locks for its life instead of taking and dropping them (fcntl calls)
     * in every transaction, and a second process on the same file is
     * refused instead of sharing it. */
    if (rc == 0)
        rc = ke_sqlite_exec(ch->db, "PRAGMA locking_mode=EXCLUSIVE");
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
        n->last_seen_mono = ke_time_mono_ms(); /* idle since CloudHub started */
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
                     fp, ke_time_wall_ms());
}

int ch_store_token_used(cloudhub *ch, const char *id, int64_t *used)
{
    sqlite3_stmt *st;
    *used = 0;
    int rc = ke_sqlite_prepare(ch->db, "SELECT used FROM join_tokens WHERE id = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    if (rc == 1)
        *used = sqlite3_column_int64(st, 0);
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_node_insert_token(cloudhub *ch, const char *name, const char *fp, const char *id,
                               uint32_t max_uses, int64_t expires_unix)
{
    int64_t used = 0;
    int rc = ke_sqlite_begin(ch->db);
    if (rc)
        return rc;
    if ((rc = exec_bind(ch, "DELETE FROM join_tokens WHERE expires <= ?", NULL, NULL,
                        ke_time_wall_ms() / 1000)) != 0 ||
        (rc = ch_store_token_used(ch, id, &used)) != 0)
        goto out;
    if (used >= (int64_t)max_uses) {
        rc = KE_EPERM;
        goto out;
    }
    if ((rc = exec_bind(ch,
                        "INSERT INTO join_tokens(id, used, expires) VALUES (?1, 1, ?2) "
                        "ON CONFLICT(id) DO UPDATE SET used = used + 1",
                        id, NULL, expires_unix)) != 0 ||
        (rc = ch_store_node_insert(ch, name, fp)) != 0)
        goto out;
out:
    if (rc == 0)
        return ke_sqlite_commit(ch->db);
    ke_sqlite_rollback(ch->db);
    return rc;
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

int ch_store_node_page(cloudhub *ch, const char *after, uint32_t limit,
                       int (*fn)(const char *name, void *arg), void *arg)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db,
                               "SELECT name FROM nodes WHERE name > ? ORDER BY name LIMIT ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit);
    while ((rc = ke_sqlite_step(ch->db, st)) == 1)
        if ((rc = fn((const char *)sqlite3_column_text(st, 0), arg)) != 0)
            break;
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_object_page(cloudhub *ch, const char *node, const char *after,
                         int (*fn)(const char *key, uint64_t rv, int deleted, void *arg),
                         void *arg)
{
    /* Every key of the node is in ["node/<node>/", "node/<node>0"): a
     * range of the primary key, already in order. */
    char lo[CH_NODE_NAME_MAX + 8], hi[CH_NODE_NAME_MAX + 8];
    snprintf(lo, sizeof(lo), "node/%s/", node);
    snprintf(hi, sizeof(hi), "node/%s0", node);
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db,
                               "SELECT key, rv, deleted FROM objects WHERE key > ?1 AND key >= ?2 "
                               "AND key < ?3 ORDER BY key",
                               &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, after ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, lo, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hi, -1, SQLITE_STATIC);
    while ((rc = ke_sqlite_step(ch->db, st)) == 1)
        if ((rc = fn((const char *)sqlite3_column_text(st, 0),
                     (uint64_t)sqlite3_column_int64(st, 1), sqlite3_column_int(st, 2), arg)) != 0)
            break;
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_tombstone_drop(cloudhub *ch, const char *key, uint64_t rv)
{
    return exec_bind(ch, "DELETE FROM objects WHERE key = ? AND rv = ? AND deleted = 1", key, NULL,
                     (int64_t)rv);
}

/* uplog_has: 1 when (group, key) has an entry, 0 when not, or an error. */
static int uplog_has(cloudhub *ch, const char *group, const char *key)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT 1 FROM uplog WHERE grp = ? AND key = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    ke_sqlite_release(ch->db, st);
    return rc;
}

/* uplog_node_count returns the node's entries, or an error. */
static int64_t uplog_node_count(cloudhub *ch, const char *node)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT COUNT(*) FROM uplog WHERE node = ?", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, node, -1, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    int64_t n = rc == 1 ? sqlite3_column_int64(st, 0) : (rc < 0 ? rc : KE_EDB);
    ke_sqlite_release(ch->db, st);
    return n;
}

static int uplog_insert(cloudhub *ch, const char *node, const char *group, const char *key,
                        uint64_t edge_seq, const uint8_t *msg, size_t len, uint64_t *id)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db,
                               "INSERT INTO uplog(grp, key, node, edge_seq, msg) "
                               "VALUES (?, ?, ?, ?, ?)",
                               &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, node, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)edge_seq);
    sqlite3_bind_blob(st, 5, msg, (int)len, SQLITE_STATIC);
    rc = ke_sqlite_step(ch->db, st);
    ke_sqlite_release(ch->db, st);
    if (rc < 0)
        return rc;
    *id = (uint64_t)sqlite3_last_insert_rowid(ke_sqlite_handle(ch->db));
    return 0;
}

int ch_store_uplog_append_tx(cloudhub *ch, const char *node, const char *group, const char *key,
                             uint64_t edge_seq, const uint8_t *msg, size_t len, uint32_t node_max,
                             uint64_t *id)
{
    int has = uplog_has(ch, group, key);
    if (has < 0)
        return has;
    int rc;
    if (has) {
        rc = exec_bind(ch, "DELETE FROM uplog WHERE grp = ? AND key = ?", group, key, -1);
    } else {
        /* Checked before anything is written: KE_EFULL changes nothing. */
        int64_t count = uplog_node_count(ch, node);
        rc = count < 0 ? (int)count : count >= (int64_t)node_max ? KE_EFULL : 0;
    }
    if (rc == 0)
        rc = uplog_insert(ch, node, group, key, edge_seq, msg, len, id);
    if (rc == 0)
        rc = ch_store_node_set_seq(ch, node, edge_seq + 1);
    return rc;
}

int ch_store_uplog_append(cloudhub *ch, const char *node, const char *group, const char *key,
                          uint64_t edge_seq, const uint8_t *msg, size_t len, uint32_t node_max,
                          uint64_t *id)
{
    int rc = ke_sqlite_begin(ch->db);
    if (rc)
        return rc;
    rc = ch_store_uplog_append_tx(ch, node, group, key, edge_seq, msg, len, node_max, id);
    if (rc == 0)
        return ke_sqlite_commit(ch->db);
    ke_sqlite_rollback(ch->db);
    return rc;
}

int ch_store_uplog_read(cloudhub *ch, uint64_t after, const char *groups_json, uint32_t limit,
                        int (*fn)(uint64_t id, const char *node, uint64_t edge_seq,
                                  const void *msg, size_t len, void *arg),
                        void *arg, uint64_t *max_id)
{
    sqlite3_stmt *st;
    int rc = ke_sqlite_prepare(ch->db, "SELECT IFNULL(MAX(id), 0) FROM uplog", &st);
    if (rc)
        return rc;
    rc = ke_sqlite_step(ch->db, st);
    *max_id = rc == 1 ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    ke_sqlite_release(ch->db, st);
    if (rc < 0)
        return rc;
    rc = ke_sqlite_prepare(ch->db,
                           "SELECT id, node, edge_seq, msg FROM uplog WHERE id > ?1 AND "
                           "(?2 IS NULL OR grp IN (SELECT value FROM json_each(?2))) "
                           "ORDER BY id LIMIT ?3",
                           &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)after);
    if (groups_json)
        sqlite3_bind_text(st, 2, groups_json, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, limit);
    while ((rc = ke_sqlite_step(ch->db, st)) == 1)
        if ((rc = fn((uint64_t)sqlite3_column_int64(st, 0),
                     (const char *)sqlite3_column_text(st, 1),
                     (uint64_t)sqlite3_column_int64(st, 2), sqlite3_column_blob(st, 3),
                     (size_t)sqlite3_column_bytes(st, 3), arg)) != 0)
            break;
    ke_sqlite_release(ch->db, st);
    return rc < 0 ? rc : 0;
}

int ch_store_consumer_register(cloudhub *ch, const char *name, const char *groups_json,
                               uint64_t *cursor)
{
    int rc = ke_sqlite_begin(ch->db);
    if (rc)
        return rc;
    rc = exec_bind(ch,
                   "INSERT INTO consumers(name, groups, cursor) VALUES (?1, ?2, 0) "
                   "ON CONFLICT(name) DO UPDATE SET groups = excluded.groups",
                   name, groups_json, -1);
    sqlite3_stmt *st;
    if (rc == 0 &&
        (rc = ke_sqlite_prepare(ch->db, "SELECT cursor FROM consumers WHERE name = ?", &st)) == 0) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        rc = ke_sqlite_step(ch->db, st);
        *cursor = rc == 1 ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        rc = rc == 1 ? 0 : rc < 0 ? rc : KE_EDB;
        ke_sqlite_release(ch->db, st);
    }
    /* A consumer that dropped a group no longer holds its entries back:
     * one pass over the whole log (registration is rare). */
    if (rc == 0)
        rc = ke_sqlite_exec(ch->db, "DELETE FROM uplog WHERE " CH_UPLOG_COLLECTABLE);
    if (rc == 0)
        return ke_sqlite_commit(ch->db);
    ke_sqlite_rollback(ch->db);
    return rc;
}

int ch_store_consumer_ack_tx(cloudhub *ch, const char *name, uint64_t old, uint64_t cursor,
                             int *collected)
{
    *collected = 0;
    int rc = exec_bind(ch, "UPDATE consumers SET cursor = MAX(cursor, ?2) WHERE name = ?1", name,
                       NULL, (int64_t)cursor);
    /* Only entries in (old, cursor] can have become collectable: below old
     * this consumer held nothing back. */
    sqlite3_stmt *st;
    if (rc == 0 &&
        (rc = ke_sqlite_prepare(ch->db,
                                "DELETE FROM uplog WHERE id > ?1 AND id <= ?2 AND "
                                CH_UPLOG_COLLECTABLE,
                                &st)) == 0) {
        sqlite3_bind_int64(st, 1, (int64_t)old);
        sqlite3_bind_int64(st, 2, (int64_t)cursor);
        rc = ke_sqlite_step(ch->db, st);
        ke_sqlite_release(ch->db, st);
        rc = rc < 0 ? rc : 0;
        *collected = sqlite3_changes(ke_sqlite_handle(ch->db));
    }
    return rc;
}

int ch_store_consumer_ack(cloudhub *ch, const char *name, uint64_t old, uint64_t cursor,
                          int *collected)
{
    int rc = ke_sqlite_begin(ch->db);
    if (rc)
        return rc;
    rc = ch_store_consumer_ack_tx(ch, name, old, cursor, collected);
    if (rc == 0)
        return ke_sqlite_commit(ch->db);
    ke_sqlite_rollback(ch->db);
    return rc;
}
