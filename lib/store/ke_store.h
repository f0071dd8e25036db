/*
 * ke_store.h — the cloud's resource store: Kubernetes-shaped JSON objects
 * (apiVersion, kind, metadata, spec, status) with get, list, watch from a
 * resource version, create/update/delete under optimistic concurrency and a
 * separate status update. This is the one interface the controllers use;
 * the backend here is embedded SQLite (cloudcore, one process), and the
 * calls are shaped so that a Kubernetes API server backend fits behind the
 * same declarations (DESIGN.md §5).
 *
 * Revisions: one store revision (uint64) counts every write of every kind.
 * A write takes the next revision and sets metadata.resourceVersion to it as
 * a decimal string, as Kubernetes does. Writes that change nothing (an
 * update equal to the stored object) take no revision.
 *
 * Keys: (kind, namespace, name). Namespaced kinds default to namespace
 * "default"; cluster-scoped kinds (Node and Namespace, plus any added with
 * ke_store_set_cluster_scoped) are kept under namespace "" and ignore the
 * namespace arguments.
 *
 * Storage: objects(kind, ns, name, rv, json) holds each object as compact
 * JSON text, returned byte-exact (json_dumps(out, JSON_COMPACT) gives back
 * the stored text). events(rev, kind, ns, name, type, json, prev) is the
 * change history, written in the same transaction as the change; it keeps
 * the last KE_STORE_HISTORY_DEFAULT events (ke_store_set_history) and is
 * what watches replay and what paginated lists read older revisions from
 * (prev holds the content before a MODIFIED or DELETED). One process opens a given file: the revision counter
 * lives in the ke_store.
 *
 * Threads: every call is thread-safe (one mutex around the connection).
 * Watch callbacks run on one dispatcher thread per store
 * ("ke-store-watch"); see ke_store_watch_start for what a callback may do.
 *
 * Errors: negative KE_E* codes (ke_err.h). KE_EINVAL for a malformed
 * object, key or selector (ke_store_object_check and ke_store_selector_check
 * give the reason as text), KE_ENOTFOUND, KE_EEXIST, KE_ECONFLICT for a
 * failed precondition, KE_EGONE for a revision older than the history,
 * KE_EDB for SQLite failures (logged by ke_sqlite), KE_ECRYPT for an
 * encrypted object that does not decrypt (logged with the key it needs).
 *
 * Encryption at rest (ke_store_set_crypt): with a key ring set, every
 * object of kind KE_STORE_ENCRYPTED_KIND is stored as a ke_crypt envelope
 * (AES-256-GCM, the whole object's JSON, "kind/ns/name" authenticated),
 * in `objects` and in both texts of its `events`; every call reads and
 * returns plaintext objects as before. Rows written before encryption was
 * on stay readable and are sealed by their next write or by
 * ke_store_reencrypt. An object whose key is missing fails its reads and
 * list pages with KE_ECRYPT; other objects are unaffected, ke_store_list
 * leaves it out and a watch skips its events (each logged).
 */
#ifndef KE_STORE_H
#define KE_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Largest object accepted, as compact JSON text (Kubernetes: ~1.5 MiB). */
#define KE_STORE_OBJECT_MAX (1024 * 1024)
/* Length limits of the key parts (Kubernetes: DNS label / subdomain). */
#define KE_STORE_KIND_MAX 63
#define KE_STORE_NS_MAX 63
#define KE_STORE_NAME_MAX 253
/* Events kept for watches by default, and the bound on ke_store_set_history. */
#define KE_STORE_HISTORY_DEFAULT 10000
#define KE_STORE_HISTORY_MAX 10000000
/* Cluster-scoped kinds a store can know (Node and Namespace included). */
#define KE_STORE_SCOPED_MAX 32
/* Open watches per store; one more is refused with KE_EFULL. */
#define KE_STORE_WATCH_MAX 4096
/* Selector text length, requirements per selector, values per in/notin set. */
#define KE_STORE_SELECTOR_MAX 4096
#define KE_STORE_SELECTOR_REQS_MAX 64
#define KE_STORE_SELECTOR_VALUES_MAX 64

/* Lists by page (ke_store_list_page): the page size when none is asked
 * (limit 0), the largest page (larger limits are cut to it), the bound on a
 * page's objects as JSON text (at least one object is always returned; it
 * keeps a page under the rpc layer's 4 MiB message bound), and the room a
 * continue token needs, its terminating NUL included. */
#define KE_STORE_LIST_LIMIT_DEFAULT 500
#define KE_STORE_LIST_LIMIT_MAX 5000
#define KE_STORE_LIST_PAGE_BYTES (3 * 1024 * 1024)
#define KE_STORE_CONTINUE_MAX 512
/* The kind encrypted at rest, and the rows ke_store_reencrypt rewrites in
 * one transaction (writers wait at most one batch). */
#define KE_STORE_ENCRYPTED_KIND "Secret"
#define KE_STORE_REENCRYPT_BATCH 100
_Static_assert(KE_STORE_LIST_PAGE_BYTES >= KE_STORE_OBJECT_MAX, "one object fits a page");

typedef struct ke_store ke_store;
typedef struct ke_crypt ke_crypt;
typedef struct ke_store_watch ke_store_watch;

/* Watch event types (the values of `type` in ke_store_watch_fn). */
typedef enum {
    KE_STORE_ADDED = 1,
    KE_STORE_MODIFIED = 2,
    KE_STORE_DELETED = 3,
    /* The watch fell further behind than the history kept (compaction ran
     * past events it had not seen yet): obj is NULL, rev is the compacted
     * revision, and no callback follows. Relist and watch again, as a
     * Kubernetes client does on 410 Gone. */
    KE_STORE_GONE = 4,
} ke_store_event_type;

/* ke_store_event_name returns "ADDED", "MODIFIED", "DELETED", "GONE" or
 * "UNKNOWN" (static strings). */
const char *ke_store_event_name(int type);

/* ke_store_open opens (creating if needed) the store in the SQLite file at
 * `path` (":memory:" works, for tests), brings its schema forward, reloads
 * the store revision and starts the watch dispatcher thread. On success *out
 * owns the store; release it with ke_store_close.
 * Returns 0, KE_EINVAL, KE_ENOMEM, KE_EIO (thread) or KE_EDB. */
int ke_store_open(const char *path, ke_store **out);

/* ke_store_close stops the dispatcher thread and closes the file.
 * Stop every watch first: watches still open are released here (a warning
 * is logged) and their handles must not be used afterwards. Must not be
 * called from a watch callback. ke_store_close(NULL) is a no-op. */
void ke_store_close(ke_store *s);

/* ke_store_set_cluster_scoped records `kind` as cluster-scoped (its objects
 * have no namespace). Node and Namespace are known already. Set kinds up
 * before writing objects of them. Returns 0, KE_EINVAL (bad kind name) or
 * KE_EFULL (KE_STORE_SCOPED_MAX kinds known). */
int ke_store_set_cluster_scoped(ke_store *s, const char *kind);

/* ke_store_set_history sets how many of the most recent events are kept for
 * watches (1..KE_STORE_HISTORY_MAX, default KE_STORE_HISTORY_DEFAULT); each
 * write then compacts older ones in its own transaction. A watch that falls
 * more than `n` events behind receives KE_STORE_GONE. Returns 0 or
 * KE_EINVAL. */
int ke_store_set_history(ke_store *s, uint64_t n);

/* ke_store_revision returns the store revision: the revision of the last
 * write (0 for an empty new store). */
uint64_t ke_store_revision(ke_store *s);

/* ke_store_object_check tells whether `obj` is acceptable to create/update:
 * an object with a non-empty string kind, a metadata object with a valid
 * name (and namespace, when given), labels an object of strings with valid
 * keys and values, and at most KE_STORE_OBJECT_MAX bytes as compact JSON.
 * Returns 0, or KE_EINVAL with a one-line reason in why[0..len) (why may be
 * NULL). Borrows obj. */
int ke_store_object_check(const json_t *obj, char *why, size_t len);

/* ke_store_selector_check parses a label selector and a field selector
 * (either may be NULL or "", which select everything) without using them.
 * Label selectors use Kubernetes syntax, requirements separated by ',' and
 * all required: `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1,v2)`,
 * `k` (has the label), `!k` (does not). `!=` and `notin` also match objects
 * without the label. Field selectors are `path=value`, `path==value` or
 * `path!=value` separated by ',', where path is any dotted path into the
 * object (metadata.name, metadata.namespace, spec.nodeName, status.phase);
 * a missing field reads as "", numbers and booleans as their JSON text;
 * '\' escapes ',', '=' and '\' in values. A control byte (below 0x20, or
 * 0x7f) anywhere is refused. Returns 0, or KE_EINVAL with a reason starting
 * "label_selector: " or "field_selector: " in why. */
int ke_store_selector_check(const char *label_sel, const char *field_sel, char *why,
                            size_t len);

/* A compiled pair of selectors (the syntax of ke_store_selector_check),
 * for servers that match objects they read elsewhere (edgecore's
 * MetaServer). Immutable once made: any number of threads may match with
 * one at once. */
typedef struct ke_store_selector ke_store_selector;

/* ke_store_selector_new compiles label_sel and field_sel (NULL or "":
 * everything) into *out. Returns 0, KE_EINVAL (the reason in why, as
 * ke_store_selector_check gives it) or KE_ENOMEM. */
int ke_store_selector_new(const char *label_sel, const char *field_sel, ke_store_selector **out,
                          char *why, size_t len);

/* ke_store_selector_match: does obj (borrowed) match both selectors? */
int ke_store_selector_match(const ke_store_selector *s, const json_t *obj);

/* ke_store_selector_free frees s; NULL is a no-op. */
void ke_store_selector_free(ke_store_selector *s);

/* ke_store_create stores a new object. `obj` is borrowed and not modified;
 * the stored copy gets metadata.uid (a random UUID), creationTimestamp
 * (RFC 3339, UTC, now) and resourceVersion (the next revision), replacing
 * any given; a namespaced kind without a namespace gets "default", a
 * cluster-scoped one loses its namespace. On success, when out is not NULL,
 * *out is the stored object (new reference: json_decref it).
 * Returns 0, KE_EINVAL (see ke_store_object_check), KE_EEXIST, KE_EDB. */
int ke_store_create(ke_store *s, const json_t *obj, json_t **out);

/* ke_store_update replaces an object's content except its status and its
 * metadata.uid and creationTimestamp, which are kept from the stored object
 * (spec and status are written apart, as in Kubernetes). Preconditions:
 * when obj's metadata.resourceVersion is set it must equal the stored one,
 * and when metadata.uid is set it must equal the stored one, otherwise
 * KE_ECONFLICT and nothing is written. An update that changes nothing takes
 * no revision and returns the stored object. `obj` is borrowed; on success,
 * when out is not NULL, *out is the stored object (new reference).
 * Returns 0, KE_EINVAL, KE_ENOTFOUND, KE_ECONFLICT, KE_EDB. */
int ke_store_update(ke_store *s, const json_t *obj, json_t **out);

/* ke_store_update_status replaces only the stored object's status with
 * obj's (removing it when obj has none); obj's kind and metadata name and
 * namespace pick the object, and the preconditions are those of
 * ke_store_update. Ownership and results as ke_store_update. */
int ke_store_update_status(ke_store *s, const json_t *obj, json_t **out);

/* ke_store_delete removes the object (kind, ns, name). When precondition_rv
 * is not 0 the stored resourceVersion must equal it, otherwise KE_ECONFLICT.
 * On success, when out is not NULL, *out is the deleted object carrying the
 * deletion's revision as its resourceVersion, as watches see it (new
 * reference). Returns 0, KE_EINVAL, KE_ENOTFOUND, KE_ECONFLICT, KE_EDB. */
int ke_store_delete(ke_store *s, const char *kind, const char *ns, const char *name,
                    uint64_t precondition_rv, json_t **out);

/* ke_store_get reads one object into *out (new reference). ns is ignored
 * for cluster-scoped kinds and required for the others.
 * Returns 0, KE_EINVAL, KE_ENOTFOUND, KE_EDB. */
int ke_store_get(ke_store *s, const char *kind, const char *ns, const char *name,
                 json_t **out);

/* ke_store_list reads the objects of `kind` in namespace `ns` ("" or NULL:
 * all namespaces) that match both selectors (see ke_store_selector_check;
 * NULL or "" selects all), ordered by namespace and name. *items is a new
 * JSON array (json_decref it); *rev, when rev is not NULL, is the store
 * revision the list reflects: watch from it to follow on without a gap.
 * The whole list is built in memory: for the store's own controllers; an
 * API that answers clients pages with ke_store_list_page. An object that
 * does not decrypt (its key is missing) is left out, logged, so that the
 * controllers go on with the others; ke_store_list_page fails instead.
 * Returns 0, KE_EINVAL (malformed selector: reason logged), KE_ENOMEM,
 * KE_EDB. */
int ke_store_list(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                  const char *field_sel, json_t **items, uint64_t *rev);

/* ke_store_list_page reads one page of the list ke_store_list would give,
 * as a Kubernetes API server does with limit and continue.
 *
 * The first page (continue_token NULL or "") is taken at the current store
 * revision. At most `limit` objects come back (0: KE_STORE_LIST_LIMIT_DEFAULT;
 * above KE_STORE_LIST_LIMIT_MAX: cut to it), and no more than
 * KE_STORE_LIST_PAGE_BYTES of JSON text (but always one object when any is
 * left). When more matching objects remain, next[0..next_len) gets a
 * continue token (next_len must be at least KE_STORE_CONTINUE_MAX);
 * otherwise next is "". Passing the token back, with the same kind and
 * namespace (and normally the same selectors), gives the next page.
 *
 * Consistency: every page of one list is read at the revision of its first
 * page, which *rev reports on every page: an object created, changed or
 * deleted after the first page does not show up on later pages (its state
 * at that revision does), so walking all pages gives each object of that
 * revision exactly once, ordered by namespace then name, with no gap or
 * duplicate. Watch from *rev to see what changed since. Older revisions are
 * read back from the event history; when the history no longer reaches the
 * token's revision (compaction), the call fails with KE_EGONE and the
 * client must start the list again (Kubernetes: 410 Gone, "continue token
 * expired").
 *
 * The token is opaque to callers (today "1:KIND:REV:NS:NAME", the revision
 * and the last key returned). *items is a new JSON array (json_decref it).
 * Returns 0; KE_EINVAL (bad kind, malformed selector, or a continue token
 * that is malformed, of another kind or namespace, or from a revision after
 * the store's: ke_store_continue_check gives the reason); KE_EGONE;
 * KE_ENOMEM; KE_EDB. */
int ke_store_list_page(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                       const char *field_sel, size_t limit, const char *continue_token,
                       json_t **items, uint64_t *rev, char *next, size_t next_len);

/* ke_store_continue_check tells whether ke_store_list_page would accept
 * `token` for a list of kind in ns (NULL or "" token: always). Returns 0,
 * KE_EINVAL with a reason starting "continue_token: " in why (why may be
 * NULL), or KE_EGONE with the same kind of reason when the token's revision
 * has been compacted away. */
int ke_store_continue_check(ke_store *s, const char *kind, const char *ns, const char *token,
                            char *why, size_t len);

/* A watch callback. obj is borrowed for the duration of the call (copy it
 * with json_deep_copy to keep it); rev is the event's revision, equal to
 * obj's resourceVersion. ud is the pointer given to ke_store_watch_start. */
typedef void (*ke_store_watch_fn)(int type, const json_t *obj, uint64_t rev, void *ud);

/* ke_store_watch_start follows changes to objects of `kind` in `ns` ("" or NULL:
 * all namespaces) matching the selectors. Every matching change with a
 * revision strictly after from_rev (0: after the current revision) is
 * delivered once, in revision order, with no gap: first from the history,
 * then live. With selectors, a change that makes an object match is
 * delivered as ADDED and one that makes it stop matching as DELETED (with
 * the object's previous content and the change's revision), as Kubernetes
 * does.
 *
 * Callbacks run on the store's dispatcher thread, one at a time for all of
 * the store's watches, and never under a store lock: a callback may call
 * any ke_store function (read, write, start a watch, stop any watch,
 * including its own: no callback of that watch follows its return), except
 * ke_store_close, and it must not wait for a thread that is stopping a
 * watch of this store. A slow callback delays every watch of the store.
 *
 * On success *out is the watch; release it with ke_store_watch_stop.
 * Returns 0; KE_EINVAL (bad kind, malformed selector, from_rev after the
 * store revision); KE_EGONE (from_rev older than the history kept:
 * relist); KE_EFULL (KE_STORE_WATCH_MAX watches open); KE_ENOMEM. */
int ke_store_watch_start(ke_store *s, const char *kind, const char *ns, const char *label_sel,
                         const char *field_sel, uint64_t from_rev, ke_store_watch_fn fn,
                         void *ud, ke_store_watch **out);

/* ke_store_watch_stop ends a watch and frees it. From any thread but the
 * dispatcher it waits for a running callback of the watch to return, so
 * that no callback runs after it returns; from a callback it returns at
 * once and the watch is freed after the callback returns.
 * ke_store_watch_stop(NULL) is a no-op. */
void ke_store_watch_stop(ke_store_watch *w);

/* ke_store_compact drops all but the `keep` most recent events (keep may be
 * 0). Watches from an older revision then get KE_EGONE, and open watches
 * that had not reached the dropped events receive KE_STORE_GONE.
 * Returns 0 or KE_EDB. */
int ke_store_compact(ke_store *s, uint64_t keep);

/* ke_store_set_crypt turns encryption at rest on with key ring c (see
 * ke_crypt.h; the store takes ownership and frees it at close or at the
 * next call), or off with NULL (sealed rows then fail with KE_ECRYPT). Set
 * it right after ke_store_open, before serving. Returns 0, or KE_EINVAL
 * (s NULL; c is freed). */
int ke_store_set_crypt(ke_store *s, ke_crypt *c);

/* ke_store_crypt_check tells whether the stored object (kind, ns, name)
 * decrypts: 0 (it does, or is not encrypted), KE_ECRYPT with a one-line
 * reason naming the key it needs in why (may be NULL), KE_ENOTFOUND,
 * KE_EINVAL, KE_EDB. For error messages; reads need not call it. */
int ke_store_crypt_check(ke_store *s, const char *kind, const char *ns, const char *name,
                         char *why, size_t len);

/* What ke_store_reencrypt did to rows of one table. */
typedef struct {
    uint64_t rewritten; /* sealed again with the primary key (or sealed for the first time) */
    uint64_t current;   /* sealed with the primary key already */
    uint64_t failed;    /* do not decrypt (key missing, damaged): left as they are */
} ke_store_reencrypt_count;
typedef struct {
    ke_store_reencrypt_count objects, events;
} ke_store_reencrypt_stats;

/* ke_store_reencrypt rewrites every row of kind KE_STORE_ENCRYPTED_KIND,
 * in `objects` and in the `events` history, that is not sealed with the
 * key ring's primary key: plaintext rows and rows of older keys. Key
 * rotation: put the new key first in the key file, restart, run this,
 * then remove the old key. It takes no revision and changes no object (no
 * watch event); it works in transactions of KE_STORE_REENCRYPT_BATCH rows,
 * letting writers in between (their writes use the primary key already).
 * *st (may be NULL) counts what was done. Returns 0; KE_EINVAL (no key
 * ring set); KE_ECRYPT when some rows do not decrypt (counted as failed,
 * logged, the others rewritten); KE_ENOMEM; KE_EDB. */
int ke_store_reencrypt(ke_store *s, ke_store_reencrypt_stats *st);

/* ke_store_compacted returns the newest dropped revision (0 if none): a
 * watch needs from_rev >= this. */
uint64_t ke_store_compacted(ke_store *s);

#endif
