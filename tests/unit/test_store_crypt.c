/*
 * test_store_crypt.c — encryption at rest: lib/crypt (ke_crypt: the key
 * file, seal and open, refusals) and the store with a key ring set (Secret
 * rows and history sealed on disk, reads, lists, pages and watches giving
 * plaintext, legacy plaintext rows, re-encryption and key rotation, a
 * missing key failing only its objects), each against a real file in a
 * fresh temporary directory, inspected with SQLite directly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ke_crypt.h"
#include "ke_err.h"
#include "ke_store.h"

/* Two fixed keys (base64 of 32 bytes) and a value to look for on disk. */
#define K1 "k1: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"
#define K2 "k2: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eX2A=\n"
#define PLAIN "tOpSeCrEt-42-VALUE"
#define PLAIN_B64 "dE9wU2VDckV0LTQyLVZBTFVF" /* base64(PLAIN) */
#define WAIT_SECS 20

static ke_crypt *ring(const char *text)
{
    ke_crypt *c = NULL;
    char why[256];
    int rc = ke_crypt_parse(text, strlen(text), &c, why, sizeof(why));
    if (rc)
        fail_msg("key file refused: %s", why);
    return c;
}

/* ---- ke_crypt ----------------------------------------------------------- */

static void test_crypt_round_trip(void **state)
{
    (void)state;
    ke_crypt *c = ring(K1);
    assert_string_equal(ke_crypt_primary(c), "k1");
    char *e1 = NULL, *e2 = NULL, *p = NULL;
    size_t n1 = 0, pn = 0;
    assert_int_equal(ke_crypt_seal(c, "Secret/default/a", PLAIN, strlen(PLAIN), &e1, &n1), 0);
    assert_int_equal(ke_crypt_seal(c, "Secret/default/a", PLAIN, strlen(PLAIN), &e2, NULL), 0);
    assert_int_equal(strlen(e1), n1);
    assert_true(strncmp(e1, KE_CRYPT_PREFIX "k1:", strlen(KE_CRYPT_PREFIX "k1:")) == 0);
    assert_true(ke_crypt_sealed(e1, n1));
    assert_false(ke_crypt_sealed("{\"kind\":\"Secret\"}", 17));
    assert_null(strstr(e1, PLAIN));
    assert_string_not_equal(e1, e2); /* a fresh nonce each time */
    char key[KE_CRYPT_NAME_MAX + 1];
    assert_int_equal(ke_crypt_key_of(e1, n1, key, sizeof(key)), 0);
    assert_string_equal(key, "k1");
    assert_int_equal(ke_crypt_open(c, "Secret/default/a", e1, n1, &p, &pn, NULL, 0), 0);
    assert_int_equal(pn, strlen(PLAIN));
    assert_string_equal(p, PLAIN);
    free(p);
    free(e1);
    free(e2);
    /* empty plaintext works too */
    assert_int_equal(ke_crypt_seal(c, "x", "", 0, &e1, &n1), 0);
    assert_int_equal(ke_crypt_open(c, "x", e1, n1, &p, &pn, NULL, 0), 0);
    assert_int_equal(pn, 0);
    free(p);
    free(e1);
    ke_crypt_free(c);
}

static void test_crypt_tamper_refused(void **state)
{
    (void)state;
    ke_crypt *c = ring(K1);
    char *e = NULL, *p = NULL, why[256];
    size_t n = 0;
    assert_int_equal(ke_crypt_seal(c, "a", PLAIN, strlen(PLAIN), &e, &n), 0);
    size_t body = strlen(KE_CRYPT_PREFIX "k1:");
    for (size_t i = body; i < n - 2; i += 5) { /* every few characters of nonce|ct|tag */
        char saved = e[i];
        e[i] = e[i] == 'A' ? 'B' : 'A';
        assert_int_equal(ke_crypt_open(c, "a", e, n, &p, NULL, why, sizeof(why)), KE_ECRYPT);
        assert_null(p);
        e[i] = saved;
    }
    assert_int_equal(ke_crypt_open(c, "a", e, n - 4, &p, NULL, why, sizeof(why)), KE_ECRYPT);
    assert_int_equal(ke_crypt_open(c, "a", e, body + 8, &p, NULL, why, sizeof(why)), KE_ECRYPT);
    assert_non_null(strstr(why, "malformed"));
    assert_int_equal(ke_crypt_open(c, "a", e, n, &p, NULL, why, sizeof(why)), 0);
    free(p);
    free(e);
    ke_crypt_free(c);
}

static void test_crypt_wrong_aad_refused(void **state)
{
    (void)state;
    ke_crypt *c = ring(K1);
    char *e = NULL, *p = NULL, why[256];
    size_t n = 0;
    assert_int_equal(ke_crypt_seal(c, "Secret/default/a", PLAIN, strlen(PLAIN), &e, &n), 0);
    assert_int_equal(ke_crypt_open(c, "Secret/default/b", e, n, &p, NULL, why, sizeof(why)),
                     KE_ECRYPT);
    assert_non_null(strstr(why, "authentication failed"));
    assert_non_null(strstr(why, "\"k1\""));
    assert_int_equal(ke_crypt_open(c, "Secret/other/a", e, n, &p, NULL, why, sizeof(why)),
                     KE_ECRYPT);
    assert_null(p);
    free(e);
    ke_crypt_free(c);
}

static void test_crypt_unknown_key_names_it(void **state)
{
    (void)state;
    ke_crypt *c1 = ring(K1), *c2 = ring(K2);
    char *e = NULL, *p = NULL, why[256];
    size_t n = 0;
    assert_int_equal(ke_crypt_seal(c1, "a", PLAIN, strlen(PLAIN), &e, &n), 0);
    assert_int_equal(ke_crypt_open(c2, "a", e, n, &p, NULL, why, sizeof(why)), KE_ECRYPT);
    assert_non_null(strstr(why, "key \"k1\""));
    assert_non_null(strstr(why, "not in the key file"));
    assert_int_equal(ke_crypt_open(NULL, "a", e, n, &p, NULL, why, sizeof(why)), KE_ECRYPT);
    assert_non_null(strstr(why, "\"k1\""));
    assert_null(p);
    free(e);
    ke_crypt_free(c1);
    ke_crypt_free(c2);
}

static void test_crypt_rotation_through_a_second_key(void **state)
{
    (void)state;
    ke_crypt *old = ring(K1), *both = ring(K2 K1), *fresh = ring(K2);
    assert_string_equal(ke_crypt_primary(both), "k2");
    char *e1 = NULL, *e2 = NULL, *p = NULL, key[KE_CRYPT_NAME_MAX + 1];
    size_t n1 = 0, n2 = 0;
    assert_int_equal(ke_crypt_seal(old, "a", PLAIN, strlen(PLAIN), &e1, &n1), 0);
    assert_int_equal(ke_crypt_open(both, "a", e1, n1, &p, NULL, NULL, 0), 0); /* old opens */
    assert_int_equal(ke_crypt_seal(both, "a", p, strlen(p), &e2, &n2), 0);    /* new seals */
    free(p);
    assert_int_equal(ke_crypt_key_of(e2, n2, key, sizeof(key)), 0);
    assert_string_equal(key, "k2");
    assert_int_equal(ke_crypt_open(fresh, "a", e2, n2, &p, NULL, NULL, 0), 0);
    assert_string_equal(p, PLAIN);
    free(p);
    assert_int_equal(ke_crypt_open(fresh, "a", e1, n1, &p, NULL, NULL, 0), KE_ECRYPT);
    assert_int_equal(ke_crypt_open(old, "a", e2, n2, &p, NULL, NULL, 0), KE_ECRYPT);
    free(e1);
    free(e2);
    ke_crypt_free(old);
    ke_crypt_free(both);
    ke_crypt_free(fresh);
}

static void test_crypt_key_file_refusals_never_quote_keys(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                                                   /* no key */
        "# only a comment\n",                                 /* no key */
        "k1 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",   /* no colon */
        "k1: MDEyMzQ1Njc4OWFiY2RlZg==\n",                     /* 16 bytes */
        "k1: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\n",   /* not padded */
        "k/1: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", /* bad name */
        K1 K1,                                                /* twice */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ke_crypt *c = NULL;
        char why[256] = "";
        assert_int_equal(ke_crypt_parse(bad[i], strlen(bad[i]), &c, why, sizeof(why)), KE_EINVAL);
        assert_null(c);
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "MDEyMzQ1"));
    }
    ke_crypt *c = ring("# comment\n\n  k1 : \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\r\n" K2);
    assert_string_equal(ke_crypt_primary(c), "k1");
    ke_crypt_free(c);
}

static void test_crypt_key_line_and_file(void **state)
{
    (void)state;
    char line[KE_CRYPT_LINE_MAX], path[] = "/tmp/ke_crypt_keys.XXXXXX", why[256];
    assert_int_equal(ke_crypt_key_line("gen-1", line, sizeof(line)), 0);
    assert_int_equal(ke_crypt_key_line("bad:name", line, sizeof(line)), KE_EINVAL);
    assert_int_equal(ke_crypt_key_line("gen-1", line, sizeof(line)), 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    close(fd);
    assert_int_equal(chmod(path, 0600), 0);
    assert_true(ke_crypt_file_private(path));
    ke_crypt *c = NULL;
    assert_int_equal(ke_crypt_load(path, &c, why, sizeof(why)), 0);
    assert_string_equal(ke_crypt_primary(c), "gen-1");
    ke_crypt_free(c);
    assert_int_equal(chmod(path, 0644), 0);
    assert_false(ke_crypt_file_private(path));
    unlink(path);
    assert_int_equal(ke_crypt_load(path, &c, why, sizeof(why)), KE_EIO);
    assert_non_null(strstr(why, path));
    ke_crypt_free(NULL);
}

/* ---- the store ---------------------------------------------------------- */

typedef struct {
    char dir[256];
    char path[300];
    ke_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/ke_store_crypt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
    if (ke_store_open(f->path, &f->s) != 0 || ke_store_set_crypt(f->s, ring(K1)) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ke_store_close(f->s);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static json_t *secret(const char *name, const char *extra_label)
{
    json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s}}, s:{s:s}, s:{s:s}}", "apiVersion",
                          "v1", "kind", "Secret", "metadata", "name", name, "namespace",
                          "default", "labels", "app", extra_label, "data", "password", PLAIN_B64,
                          "stringData", "token", PLAIN);
    assert_non_null(o);
    return o;
}

static json_t *configmap(const char *name)
{
    json_t *o = json_pack("{s:s, s:s, s:{s:s}, s:{s:s}}", "apiVersion", "v1", "kind",
                          "ConfigMap", "metadata", "name", name, "data", "k", "visible-value");
    assert_non_null(o);
    return o;
}

/* count_rows runs a COUNT(*) query on the file with its own connection. */
static long long count_rows(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* file_has: whether the file holds the bytes of text. */
static int file_has(const char *path, const char *text)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    size_t tn = strlen(text), cap = 1 << 20, have = 0;
    char *buf = malloc(cap + tn);
    int found = 0;
    assert_non_null(buf);
    for (;;) {
        size_t r = fread(buf + have, 1, cap, fp);
        if (r == 0)
            break;
        have += r;
        if (memmem(buf, have, text, tn)) {
            found = 1;
            break;
        }
        if (have >= tn) { /* keep the tail: a match may straddle reads */
            memmove(buf, buf + have - (tn - 1), tn - 1);
            have = tn - 1;
        }
    }
    fclose(fp);
    free(buf);
    return found;
}

static int store_files_have(const fixture *f, const char *text)
{
    char p[320];
    int found = file_has(f->path, text);
    snprintf(p, sizeof(p), "%s-wal", f->path);
    return found || file_has(p, text);
}

static void test_store_secret_rows_sealed_on_disk(void **state)
{
    fixture *f = *state;
    json_t *a = secret("a", "web"), *out = NULL;
    assert_int_equal(ke_store_create(f->s, a, &out), 0);
    json_decref(out);
    json_object_set_new(json_object_get(a, "metadata"), "annotations",
                        json_pack("{s:s}", "note", PLAIN "-in-annotation"));
    assert_int_equal(ke_store_update(f->s, a, NULL), 0); /* MODIFIED: json and prev */
    json_t *b = secret("b", "web");
    assert_int_equal(ke_store_create(f->s, b, NULL), 0);
    assert_int_equal(ke_store_delete(f->s, "Secret", "default", "b", 0, NULL), 0); /* DELETED */
    json_t *cm = configmap("cm");
    assert_int_equal(ke_store_create(f->s, cm, NULL), 0);

    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM objects WHERE kind='Secret' AND "
                                          "json LIKE 'k8s:enc:aesgcm:v1:k1:%'"), 1);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE kind='Secret'"), 4);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE kind='Secret' AND "
                                          "json LIKE 'k8s:enc:aesgcm:v1:k1:%' AND (prev IS NULL "
                                          "OR prev LIKE 'k8s:enc:aesgcm:v1:k1:%')"), 4);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE kind='Secret' AND "
                                          "prev IS NOT NULL"), 2);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM objects WHERE kind='ConfigMap' "
                                          "AND json LIKE '{%'"), 1); /* other kinds: as before */
    ke_store_close(f->s);
    f->s = NULL;
    assert_false(store_files_have(f, PLAIN));
    assert_false(store_files_have(f, PLAIN_B64));
    assert_true(store_files_have(f, "visible-value")); /* the search does find plaintext */
    assert_int_equal(ke_store_open(f->path, &f->s), 0);
    assert_int_equal(ke_store_set_crypt(f->s, ring(K1)), 0);
    json_t *got = NULL;
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "a", &got), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "stringData"),
                                                          "token")), PLAIN);
    json_decref(got);
    json_decref(a);
    json_decref(b);
    json_decref(cm);
}

/* A watch that records events. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int types[16];
    char tokens[16][64];
} rec;

static void rec_fn(int type, const json_t *obj, uint64_t rev, void *ud)
{
    (void)rev;
    rec *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->n < 16) {
        const char *t = obj ? json_string_value(json_object_get(json_object_get(obj, "stringData"),
                                                                "token")) : NULL;
        r->types[r->n] = type;
        snprintf(r->tokens[r->n], sizeof(r->tokens[0]), "%s", t ? t : "");
        r->n++;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_wait(rec *r, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_SECS;
    pthread_mutex_lock(&r->mu);
    while (r->n < n)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
            break;
    int got = r->n;
    pthread_mutex_unlock(&r->mu);
    assert_int_equal(got, n);
}

static void test_store_secret_reads_lists_watches_plaintext(void **state)
{
    fixture *f = *state;
    rec r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    ke_store_watch *w = NULL;
    json_t *a = secret("a", "web"), *b = secret("b", "db"), *items = NULL;
    json_t *cm = configmap("cm");
    assert_int_equal(ke_store_create(f->s, cm, NULL), 0);
    json_decref(cm);
    uint64_t rev1 = ke_store_revision(f->s);
    assert_int_equal(ke_store_create(f->s, a, NULL), 0);
    assert_int_equal(ke_store_create(f->s, b, NULL), 0);
    /* from the history (both creations are after rev1) ... */
    assert_int_equal(ke_store_watch_start(f->s, "Secret", "default", "app in (web,db)", NULL,
                                          rev1, rec_fn, &r, &w), 0);
    rec_wait(&r, 2);
    /* ... then live, with a selector change turning into DELETED */
    json_object_set_new(json_object_get(json_object_get(b, "metadata"), "labels"), "app",
                        json_string("other"));
    assert_int_equal(ke_store_update(f->s, b, NULL), 0);
    assert_int_equal(ke_store_delete(f->s, "Secret", "default", "a", 0, NULL), 0);
    rec_wait(&r, 4);
    ke_store_watch_stop(w);
    int want[] = {KE_STORE_ADDED, KE_STORE_ADDED, KE_STORE_DELETED, KE_STORE_DELETED};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r.types[i], want[i]);
        assert_string_equal(r.tokens[i], PLAIN);
    }
    assert_int_equal(ke_store_create(f->s, a, NULL), 0);
    assert_int_equal(ke_store_list(f->s, "Secret", "", "app=web", NULL, &items, NULL), 0);
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(items, 0), "data"), "password")),
                        PLAIN_B64);
    json_decref(items);
    /* a page at an older revision reads a's state back from the sealed history */
    char next[KE_STORE_CONTINUE_MAX];
    uint64_t at = 0;
    assert_int_equal(ke_store_list_page(f->s, "Secret", "default", NULL, NULL, 1, NULL, &items,
                                        &at, next, sizeof(next)), 0);
    assert_int_equal(json_array_size(items), 1);
    json_decref(items);
    assert_true(next[0] != '\0');
    assert_int_equal(ke_store_delete(f->s, "Secret", "default", "b", 0, NULL), 0);
    assert_int_equal(ke_store_list_page(f->s, "Secret", "default", NULL, NULL, 1, next, &items,
                                        NULL, next, sizeof(next)), 0);
    assert_int_equal(json_array_size(items), 1); /* b, as it was at the first page */
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(items, 0),
                                                                          "stringData"), "token")),
                        PLAIN);
    json_decref(items);
    json_decref(a);
    json_decref(b);
}

static void test_store_plaintext_legacy_rows_readable_and_sealed_by_reencrypt(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_store_set_crypt(f->s, NULL), 0); /* as before encryption was on */
    json_t *a = secret("a", "web"), *got = NULL;
    assert_int_equal(ke_store_create(f->s, a, NULL), 0);
    json_t *a2 = secret("a", "db");
    assert_int_equal(ke_store_update(f->s, a2, NULL), 0);
    json_decref(a2);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM objects WHERE json LIKE '{%'"), 1);
    assert_int_equal(ke_store_set_crypt(f->s, ring(K1)), 0);
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "a", &got), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(got, "stringData"),
                                                          "token")), PLAIN);
    json_decref(got);
    ke_store_reencrypt_stats st;
    assert_int_equal(ke_store_reencrypt(f->s, &st), 0);
    assert_int_equal(st.objects.rewritten, 1);
    assert_int_equal(st.events.rewritten, 2);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM objects WHERE json LIKE '{%'"), 0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE json LIKE '{%' OR "
                                          "prev LIKE '{%'"), 0);
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "a", &got), 0);
    json_decref(got);
    assert_int_equal(ke_store_reencrypt(f->s, &st), 0); /* nothing left to do */
    assert_int_equal(st.objects.rewritten, 0);
    assert_int_equal(st.objects.current, 1);
    assert_int_equal(st.events.current, 2);
    json_decref(a);
}

static void test_store_reencrypt_rotates_every_secret(void **state)
{
    fixture *f = *state;
    const int N = 2 * KE_STORE_REENCRYPT_BATCH + 17; /* several transactions */
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "s-%03d", i);
        json_t *o = secret(name, "web");
        assert_int_equal(ke_store_create(f->s, o, NULL), 0);
        json_decref(o);
    }
    json_t *cm0 = configmap("cm");
    assert_int_equal(ke_store_create(f->s, cm0, NULL), 0);
    json_decref(cm0);
    uint64_t rev = ke_store_revision(f->s);
    assert_int_equal(ke_store_set_crypt(f->s, ring(K2 K1)), 0);
    ke_store_reencrypt_stats st;
    assert_int_equal(ke_store_reencrypt(f->s, &st), 0);
    assert_int_equal(st.objects.rewritten, N);
    assert_int_equal(st.events.rewritten, N);
    assert_int_equal(st.objects.failed + st.events.failed, 0);
    assert_int_equal(ke_store_revision(f->s), rev); /* no revision, no watch event */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM objects WHERE kind='Secret' AND "
                                          "json LIKE 'k8s:enc:aesgcm:v1:k2:%'"), N);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE kind='Secret' AND "
                                          "json LIKE 'k8s:enc:aesgcm:v1:k2:%'"), N);
    /* the old key can go now */
    assert_int_equal(ke_store_set_crypt(f->s, ring(K2)), 0);
    json_t *items = NULL, *got = NULL;
    assert_int_equal(ke_store_list(f->s, "Secret", "default", NULL, NULL, &items, NULL), 0);
    assert_int_equal(json_array_size(items), N);
    json_decref(items);
    assert_int_equal(ke_store_get(f->s, "ConfigMap", "default", "cm", &got), 0);
    json_decref(got);
}

static void test_store_missing_key_fails_only_its_objects(void **state)
{
    fixture *f = *state;
    json_t *a = secret("a", "web"), *got = NULL, *items = NULL;
    assert_int_equal(ke_store_create(f->s, a, NULL), 0);
    json_t *cm0 = configmap("cm");
    assert_int_equal(ke_store_create(f->s, cm0, NULL), 0);
    json_decref(cm0);
    assert_int_equal(ke_store_set_crypt(f->s, ring(K2)), 0); /* k1 lost */
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "a", &got), KE_ECRYPT);
    assert_null(got);
    char why[256];
    assert_int_equal(ke_store_crypt_check(f->s, "Secret", "default", "a", why, sizeof(why)),
                     KE_ECRYPT);
    assert_non_null(strstr(why, "\"k1\""));
    char next[KE_STORE_CONTINUE_MAX];
    assert_int_equal(ke_store_list_page(f->s, "Secret", "", NULL, NULL, 0, NULL, &items, NULL,
                                        next, sizeof(next)), KE_ECRYPT); /* the API: refused */
    assert_null(items);
    assert_int_equal(ke_store_list(f->s, "Secret", "", NULL, NULL, &items, NULL), 0);
    assert_int_equal(json_array_size(items), 0); /* the controllers: go on without it */
    json_decref(items);
    assert_int_equal(ke_store_update(f->s, a, NULL), KE_ECRYPT);
    assert_int_equal(ke_store_get(f->s, "ConfigMap", "default", "cm", &got), 0);
    json_decref(got);
    json_t *b = secret("b", "web");
    assert_int_equal(ke_store_create(f->s, b, NULL), 0); /* new Secrets go on */
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "b", &got), 0);
    json_decref(got);
    ke_store_reencrypt_stats st;
    assert_int_equal(ke_store_reencrypt(f->s, &st), KE_ECRYPT);
    assert_int_equal(st.objects.failed, 1);
    assert_int_equal(st.objects.current, 1);
    assert_int_equal(ke_store_set_crypt(f->s, NULL), 0); /* no key file at all */
    assert_int_equal(ke_store_crypt_check(f->s, "Secret", "default", "b", why, sizeof(why)),
                     KE_ECRYPT);
    assert_non_null(strstr(why, "encryption_key_file"));
    assert_int_equal(ke_store_reencrypt(f->s, &st), KE_EINVAL);
    json_decref(a);
    json_decref(b);
}

static void test_store_moved_ciphertext_refused(void **state)
{
    fixture *f = *state;
    json_t *a = secret("a", "web"), *b = secret("b", "web"), *got = NULL;
    assert_int_equal(ke_store_create(f->s, a, NULL), 0);
    assert_int_equal(ke_store_create(f->s, b, NULL), 0);
    exec_sql(f->path, "UPDATE objects SET json=(SELECT json FROM objects WHERE name='a') "
                      "WHERE name='b'");
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "b", &got), KE_ECRYPT);
    assert_int_equal(ke_store_get(f->s, "Secret", "default", "a", &got), 0);
    json_decref(got);
    json_decref(a);
    json_decref(b);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crypt_round_trip),
        cmocka_unit_test(test_crypt_tamper_refused),
        cmocka_unit_test(test_crypt_wrong_aad_refused),
        cmocka_unit_test(test_crypt_unknown_key_names_it),
        cmocka_unit_test(test_crypt_rotation_through_a_second_key),
        cmocka_unit_test(test_crypt_key_file_refusals_never_quote_keys),
        cmocka_unit_test(test_crypt_key_line_and_file),
        T(test_store_secret_rows_sealed_on_disk),
        T(test_store_secret_reads_lists_watches_plaintext),
        T(test_store_plaintext_legacy_rows_readable_and_sealed_by_reencrypt),
        T(test_store_reencrypt_rotates_every_secret),
        T(test_store_missing_key_fails_only_its_objects),
        T(test_store_moved_ciphertext_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
