/*
 * test_store.c — unit tests for lib/store (ke_store): writes and their
 * errors, revisions, optimistic concurrency under two racing threads,
 * selectors, watches (history then live, selectors, deletes, compaction,
 * stopping), reopening, and lists by page (every object of the list's
 * revision once while writers run, limits, the byte bound, tokens refused),
 * each against a real file in a fresh temporary
 * directory. Watch tests synchronise on condition variables with deadlines,
 * never on sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ke_err.h"
#include "ke_log.h"
#include "ke_store.h"

/* How long a test waits for watch events before failing. */
#define WAIT_SECS 20
#define MAX_EVENTS 2048

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
    snprintf(f->dir, sizeof(f->dir), "%s/ke_store_test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
    if (ke_store_open(f->path, &f->s) != 0) {
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
    ke_store_close(f->s);
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

/* obj builds {"apiVersion":"v1","kind":kind,"metadata":{...},"spec":spec}
 * from JSON text fragments (labels and spec may be NULL). */
static json_t *obj(const char *kind, const char *ns, const char *name, const char *labels,
                   const char *spec)
{
    char buf[2048];
    char nsf[128] = "";
    if (ns)
        snprintf(nsf, sizeof(nsf), "\"namespace\":\"%s\",", ns);
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\":\"v1\",\"kind\":\"%s\",\"metadata\":{%s\"name\":\"%s\","
             "\"labels\":%s},\"spec\":%s}",
             kind, nsf, name, labels ? labels : "{}", spec ? spec : "{}");
    json_error_t err;
    json_t *o = json_loads(buf, 0, &err);
    assert_non_null(o);
    return o;
}

static const char *meta_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(json_object_get(o, "metadata"), key));
}

static uint64_t rv_of(const json_t *o)
{
    const char *s = meta_str(o, "resourceVersion");
    assert_non_null(s);
    return strtoull(s, NULL, 10);
}

/* create_rv creates the object (consumed) and returns its revision. */
static uint64_t create_rv(ke_store *s, json_t *o)
{
    json_t *out = NULL;
    assert_int_equal(ke_store_create(s, o, &out), 0);
    uint64_t rv = rv_of(out);
    json_decref(o);
    json_decref(out);
    return rv;
}

/* names lists kind/ns with selectors and joins the names with ','. */
static const char *names(ke_store *s, const char *kind, const char *ns, const char *label,
                         const char *field, char *buf, size_t cap)
{
    json_t *items = NULL;
    uint64_t rev = 0;
    assert_int_equal(ke_store_list(s, kind, ns, label, field, &items, &rev), 0);
    assert_int_equal(rev, ke_store_revision(s));
    size_t i, n = 0;
    json_t *it;
    buf[0] = '\0';
    json_array_foreach(items, i, it) {
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "," : "", meta_str(it, "name"));
    }
    json_decref(items);
    return buf;
}

/* ---- watch event collector ---------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    int type[MAX_EVENTS];
    uint64_t rev[MAX_EVENTS];
    char name[MAX_EVENTS][32];
    char node[MAX_EVENTS][32];
    int rv_mismatch;   /* obj's resourceVersion != rev */
    int gone;          /* KE_STORE_GONE seen */
    int after_gone;    /* callbacks after GONE */
    int block_first;   /* first callback waits for `release` */
    int in_callback;   /* the blocked callback has started */
    int release;
    int stopped;       /* set by the test once ke_store_watch_stop returned */
    int after_stop;    /* callbacks seen with `stopped` set */
    ke_store_watch *self_stop_w; /* stop this watch from its second callback */
} collector;

static void collector_init(collector *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void collector_destroy(collector *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

static void deadline(struct timespec *ts, int secs)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += secs;
}

static void collect(int type, const json_t *o, uint64_t rev, void *ud)
{
    collector *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->stopped)
        c->after_stop++;
    if (c->gone)
        c->after_gone++;
    if (type == KE_STORE_GONE) {
        c->gone = 1;
    } else if (c->n < MAX_EVENTS) {
        c->type[c->n] = type;
        c->rev[c->n] = rev;
        const char *rvs = meta_str(o, "resourceVersion");
        if (!rvs || strtoull(rvs, NULL, 10) != rev)
            c->rv_mismatch++;
        snprintf(c->name[c->n], sizeof(c->name[0]), "%s", meta_str(o, "name"));
        const char *node =
            json_string_value(json_object_get(json_object_get(o, "spec"), "nodeName"));
        snprintf(c->node[c->n], sizeof(c->node[0]), "%s", node ? node : "");
        c->n++;
    }
    if (c->block_first && !c->in_callback && c->n == 1) {
        struct timespec ts;
        deadline(&ts, WAIT_SECS);
        c->in_callback = 1;
        pthread_cond_broadcast(&c->cv);
        while (!c->release && pthread_cond_timedwait(&c->cv, &c->mu, &ts) != ETIMEDOUT)
            ;
    }
    ke_store_watch *self = c->n == 2 ? c->self_stop_w : NULL;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (self)
        ke_store_watch_stop(self);
}

/* wait_until waits for at least n events (or GONE when n == 0); returns the
 * number of events seen (or 1 for GONE). */
static size_t wait_until(collector *c, size_t n)
{
    struct timespec ts;
    deadline(&ts, WAIT_SECS);
    pthread_mutex_lock(&c->mu);
    while ((n ? c->n < n : !c->gone) && pthread_cond_timedwait(&c->cv, &c->mu, &ts) != ETIMEDOUT)
        ;
    size_t got = n ? c->n : (size_t)c->gone;
    pthread_mutex_unlock(&c->mu);
    return got;
}

/* ---- create, get, update, delete ---------------------------------------- */

static void test_store_create_sets_uid_timestamp_and_resource_version(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}");
    json_t *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, &out), 0);
    assert_null(meta_str(in, "uid")); /* the caller's object is untouched */
    const char *uid = meta_str(out, "uid");
    assert_non_null(uid);
    assert_int_equal(strlen(uid), 36);
    assert_int_equal(uid[14], '4'); /* UUID v4 */
    const char *ts = meta_str(out, "creationTimestamp");
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 20);
    assert_int_equal(ts[19], 'Z');
    assert_string_equal(meta_str(out, "resourceVersion"), "1");
    assert_int_equal(ke_store_revision(f->s), 1);

    json_t *got = NULL;
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "p1", &got), 0);
    assert_true(json_equal(got, out));
    json_decref(got);
    json_decref(out);
    json_decref(in);
}

static void test_store_get_returns_stored_json_byte_exact(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", "{\"z\":\"1\",\"a\":\"2\"}",
                     "{\"nodeName\":\"n1\",\"ratio\":0.1,\"n\":12345678901234,\"list\":[3,1,2]}");
    json_t *out = NULL, *got = NULL;
    assert_int_equal(ke_store_create(f->s, in, &out), 0);
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "p1", &got), 0);
    char *a = json_dumps(out, JSON_COMPACT), *b = json_dumps(got, JSON_COMPACT);
    assert_string_equal(a, b);
    assert_non_null(strstr(b, "\"labels\":{\"z\":\"1\",\"a\":\"2\"}")); /* key order kept */
    free(a);
    free(b);
    json_decref(got);
    json_decref(out);
    json_decref(in);
}

static void test_store_create_existing_object_is_eexist(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", NULL, NULL);
    json_t *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, NULL), 0);
    assert_int_equal(ke_store_create(f->s, in, &out), KE_EEXIST);
    assert_null(out);
    assert_int_equal(ke_store_revision(f->s), 1);
    json_decref(in);
}

static void test_store_get_missing_object_is_enotfound(void **state)
{
    fixture *f = *state;
    json_t *out = NULL;
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "nope", &out), KE_ENOTFOUND);
    assert_null(out);
    assert_int_equal(ke_store_get(f->s, "Pod", "", "nope", &out), KE_EINVAL); /* ns needed */
    assert_int_equal(ke_store_get(f->s, "bad kind", "default", "x", &out), KE_EINVAL);
}

static void test_store_create_refuses_malformed_and_oversized_objects(void **state)
{
    fixture *f = *state;
    char why[256];
    json_t *bad = json_loads("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"Bad_Name\"}}", 0, NULL);
    assert_int_equal(ke_store_create(f->s, bad, NULL), KE_EINVAL);
    assert_int_equal(ke_store_object_check(bad, why, sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "metadata.name"));
    json_decref(bad);

    bad = json_loads("{\"metadata\":{\"name\":\"x\"}}", 0, NULL);
    assert_int_equal(ke_store_create(f->s, bad, NULL), KE_EINVAL);
    json_decref(bad);

    bad = obj("Pod", "default", "x", "{\"app\":7}", NULL);
    assert_int_equal(ke_store_object_check(bad, why, sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "metadata.labels"));
    assert_int_equal(ke_store_create(f->s, bad, NULL), KE_EINVAL);
    json_decref(bad);

    char *big = malloc(KE_STORE_OBJECT_MAX + 1);
    assert_non_null(big);
    memset(big, 'x', KE_STORE_OBJECT_MAX);
    big[KE_STORE_OBJECT_MAX] = '\0';
    bad = obj("ConfigMap", "default", "big", NULL, NULL);
    json_object_set_new(bad, "data", json_pack("{s:s}", "blob", big));
    assert_int_equal(ke_store_object_check(bad, why, sizeof(why)), KE_EINVAL);
    assert_non_null(strstr(why, "too large"));
    assert_int_equal(ke_store_create(f->s, bad, NULL), KE_EINVAL);
    json_decref(bad);
    free(big);
    assert_int_equal(ke_store_revision(f->s), 0);
}

static void test_store_cluster_scoped_kinds_drop_the_namespace(void **state)
{
    fixture *f = *state;
    json_t *out = NULL;
    json_t *node = obj("Node", "ignored", "edge-1", NULL, NULL);
    assert_int_equal(ke_store_create(f->s, node, &out), 0);
    assert_null(meta_str(out, "namespace"));
    json_decref(out);
    assert_int_equal(ke_store_get(f->s, "Node", NULL, "edge-1", &out), 0);
    json_decref(out);
    assert_int_equal(ke_store_get(f->s, "Node", "anything", "edge-1", &out), 0);
    json_decref(out);
    json_decref(node);

    assert_int_equal(ke_store_set_cluster_scoped(f->s, "ClusterThing"), 0);
    json_t *t = obj("ClusterThing", "x", "t1", NULL, NULL);
    assert_int_equal(ke_store_create(f->s, t, NULL), 0);
    assert_int_equal(ke_store_get(f->s, "ClusterThing", "", "t1", &out), 0);
    json_decref(out);
    json_decref(t);
    assert_int_equal(ke_store_set_cluster_scoped(f->s, "not a kind"), KE_EINVAL);
}

static void test_store_namespaced_kind_defaults_to_default_namespace(void **state)
{
    fixture *f = *state;
    json_t *in = obj("DeviceModel", NULL, "thermo", NULL, NULL), *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, &out), 0);
    assert_string_equal(meta_str(out, "namespace"), "default");
    json_decref(out);
    assert_int_equal(ke_store_get(f->s, "DeviceModel", "default", "thermo", &out), 0);
    json_decref(out);
    json_decref(in);
}

static void test_store_update_keeps_status_uid_and_creation_timestamp(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", NULL, "{\"replicas\":1}"), *cur = NULL;
    assert_int_equal(ke_store_create(f->s, in, &cur), 0);
    json_object_set_new(in, "status", json_pack("{s:s}", "phase", "Running"));
    json_t *out = NULL;
    assert_int_equal(ke_store_update_status(f->s, in, &out), 0);
    json_decref(out);

    json_t *upd = obj("Pod", "default", "p1", "{\"v\":\"2\"}", "{\"replicas\":2}");
    json_object_set_new(upd, "status", json_pack("{s:s}", "phase", "Failed")); /* ignored */
    json_object_set_new(json_object_get(upd, "metadata"), "creationTimestamp",
                        json_string("1999-01-01T00:00:00Z")); /* ignored */
    assert_int_equal(ke_store_update(f->s, upd, &out), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(out, "spec"), "replicas")),
                     2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(out, "status"), "phase")),
                        "Running");
    assert_string_equal(meta_str(out, "uid"), meta_str(cur, "uid"));
    assert_string_equal(meta_str(out, "creationTimestamp"), meta_str(cur, "creationTimestamp"));
    assert_string_equal(meta_str(out, "resourceVersion"), "3");
    json_decref(out);
    json_decref(upd);
    json_decref(cur);
    json_decref(in);
}

static void test_store_update_status_keeps_spec(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Device", "default", "d1", NULL, "{\"desired\":\"on\"}");
    assert_int_equal(ke_store_create(f->s, in, NULL), 0);
    json_t *st = obj("Device", "default", "d1", NULL, "{\"desired\":\"IGNORED\"}");
    json_object_set_new(st, "status", json_pack("{s:s}", "reported", "off"));
    json_t *out = NULL;
    assert_int_equal(ke_store_update_status(f->s, st, &out), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(out, "spec"), "desired")),
                        "on");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(out, "status"), "reported")), "off");
    assert_int_equal(rv_of(out), 2);
    json_decref(out);
    json_decref(st);
    json_decref(in);
}

static void test_store_update_missing_object_is_enotfound(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "ghost", NULL, NULL), *out = NULL;
    assert_int_equal(ke_store_update(f->s, in, &out), KE_ENOTFOUND);
    assert_int_equal(ke_store_update_status(f->s, in, &out), KE_ENOTFOUND);
    assert_null(out);
    assert_int_equal(ke_store_revision(f->s), 0);
    json_decref(in);
}

static void test_store_update_with_stale_resource_version_conflicts_and_writes_nothing(
    void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", NULL, "{\"v\":1}"), *v1 = NULL, *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, &v1), 0);
    json_t *a = json_deep_copy(v1);
    json_object_set_new(a, "spec", json_pack("{s:i}", "v", 2));
    assert_int_equal(ke_store_update(f->s, a, NULL), 0);
    json_t *b = json_deep_copy(v1); /* still carries resourceVersion 1 */
    json_object_set_new(b, "spec", json_pack("{s:i}", "v", 3));
    assert_int_equal(ke_store_update(f->s, b, &out), KE_ECONFLICT);
    assert_null(out);
    assert_int_equal(ke_store_update_status(f->s, b, NULL), KE_ECONFLICT);
    json_object_set_new(json_object_get(b, "metadata"), "resourceVersion", json_string("2"));
    json_object_set_new(json_object_get(b, "metadata"), "uid", json_string("other-uid"));
    assert_int_equal(ke_store_update(f->s, b, NULL), KE_ECONFLICT); /* uid precondition */
    assert_int_equal(ke_store_revision(f->s), 2);
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "p1", &out), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(out, "spec"), "v")), 2);
    json_decref(out);
    json_decref(a);
    json_decref(b);
    json_decref(v1);
    json_decref(in);
}

static void test_store_update_without_change_keeps_resource_version(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", "{\"a\":\"b\"}", "{\"v\":1}"), *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, NULL), 0);
    assert_int_equal(ke_store_update(f->s, in, &out), 0); /* no rv: unconditional */
    assert_string_equal(meta_str(out, "resourceVersion"), "1");
    json_decref(out);
    assert_int_equal(ke_store_update_status(f->s, in, &out), 0); /* no status either way */
    assert_string_equal(meta_str(out, "resourceVersion"), "1");
    json_decref(out);
    assert_int_equal(ke_store_revision(f->s), 1);
    json_decref(in);
}

static void test_store_delete_returns_object_and_checks_preconditions(void **state)
{
    fixture *f = *state;
    json_t *in = obj("Pod", "default", "p1", NULL, NULL), *out = NULL;
    assert_int_equal(ke_store_create(f->s, in, NULL), 0);
    assert_int_equal(ke_store_delete(f->s, "Pod", "default", "p1", 7, &out), KE_ECONFLICT);
    assert_null(out);
    assert_int_equal(ke_store_delete(f->s, "Pod", "default", "p1", 1, &out), 0);
    assert_string_equal(meta_str(out, "name"), "p1");
    assert_string_equal(meta_str(out, "resourceVersion"), "2"); /* the deletion's revision */
    json_decref(out);
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "p1", &out), KE_ENOTFOUND);
    assert_int_equal(ke_store_delete(f->s, "Pod", "default", "p1", 0, NULL), KE_ENOTFOUND);
    assert_int_equal(ke_store_revision(f->s), 2);
    json_decref(in);
}

static void test_store_resource_version_increases_across_kinds(void **state)
{
    fixture *f = *state;
    uint64_t last = 0;
    static const char *const kinds[] = {"Pod", "Node", "ConfigMap", "Device"};
    for (int i = 0; i < 12; i++) {
        char name[16];
        snprintf(name, sizeof(name), "o%d", i);
        uint64_t rv = create_rv(f->s, obj(kinds[i % 4], "default", name, NULL, NULL));
        assert_int_equal(rv, last + 1);
        last = rv;
    }
    json_t *out = NULL;
    assert_int_equal(ke_store_delete(f->s, "Node", NULL, "o1", 0, &out), 0);
    assert_int_equal(rv_of(out), last + 1);
    json_decref(out);
    assert_int_equal(ke_store_revision(f->s), last + 1);
}

/* ---- optimistic concurrency under two writers --------------------------- */

#define RMW_ROUNDS 200

typedef struct {
    ke_store *s;
    pthread_barrier_t *barrier;
    int conflicts;
    int errors;
} rmw_arg;

/* rmw_thread adds 1 to spec.counter RMW_ROUNDS times by read-modify-write,
 * retrying on conflict. Both threads read before either writes on the first
 * round (the barrier), so at least one conflict is certain. */
static void *rmw_thread(void *p)
{
    rmw_arg *a = p;
    for (int i = 0; i < RMW_ROUNDS; i++) {
        for (int attempt = 0;; attempt++) {
            json_t *o = NULL;
            if (ke_store_get(a->s, "Counter", "default", "c", &o) != 0) {
                a->errors++;
                return NULL;
            }
            json_t *spec = json_object_get(o, "spec");
            json_int_t v = json_integer_value(json_object_get(spec, "counter"));
            json_object_set_new(spec, "counter", json_integer(v + 1));
            if (i == 0 && attempt == 0)
                pthread_barrier_wait(a->barrier);
            int rc = ke_store_update(a->s, o, NULL);
            json_decref(o);
            if (rc == 0)
                break;
            if (rc != KE_ECONFLICT) {
                a->errors++;
                return NULL;
            }
            a->conflicts++;
        }
    }
    return NULL;
}

static void test_store_concurrent_writers_conflict_and_lose_nothing(void **state)
{
    fixture *f = *state;
    create_rv(f->s, obj("Counter", "default", "c", NULL, "{\"counter\":0}"));
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    rmw_arg a[2] = {{f->s, &barrier, 0, 0}, {f->s, &barrier, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, rmw_thread, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    assert_int_equal(a[0].errors + a[1].errors, 0);
    assert_true(a[0].conflicts + a[1].conflicts > 0);
    json_t *o = NULL;
    assert_int_equal(ke_store_get(f->s, "Counter", "default", "c", &o), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "spec"), "counter")),
                     2 * RMW_ROUNDS);
    assert_int_equal(rv_of(o), 1 + 2 * RMW_ROUNDS);
    json_decref(o);
}

/* ---- selectors ----------------------------------------------------------- */

static void seed_labelled(ke_store *s)
{
    create_rv(s, obj("Pod", "default", "a", "{\"app\":\"web\",\"tier\":\"front\"}", NULL));
    create_rv(s, obj("Pod", "default", "b", "{\"app\":\"db\",\"tier\":\"back\"}", NULL));
    create_rv(s, obj("Pod", "default", "c", "{\"app\":\"cache\"}", NULL));
    create_rv(s, obj("Pod", "default", "d", NULL, NULL));
    create_rv(s, obj("ConfigMap", "default", "e", "{\"app\":\"web\"}", NULL));
}

static void test_store_list_label_selectors(void **state)
{
    fixture *f = *state;
    char b[256];
    seed_labelled(f->s);
    assert_string_equal(names(f->s, "Pod", "", NULL, NULL, b, sizeof(b)), "a,b,c,d");
    assert_string_equal(names(f->s, "Pod", "", "app=web", NULL, b, sizeof(b)), "a");
    assert_string_equal(names(f->s, "Pod", "", "app==web", NULL, b, sizeof(b)), "a");
    assert_string_equal(names(f->s, "Pod", "", "app!=web", NULL, b, sizeof(b)), "b,c,d");
    assert_string_equal(names(f->s, "Pod", "", "app in (web, db)", NULL, b, sizeof(b)), "a,b");
    assert_string_equal(names(f->s, "Pod", "", "app notin (web,db)", NULL, b, sizeof(b)), "c,d");
    assert_string_equal(names(f->s, "Pod", "", "tier", NULL, b, sizeof(b)), "a,b");
    assert_string_equal(names(f->s, "Pod", "", "!tier", NULL, b, sizeof(b)), "c,d");
    assert_string_equal(names(f->s, "Pod", "", " app , !tier ", NULL, b, sizeof(b)), "c");
    assert_string_equal(names(f->s, "Pod", "", "app in (web,cache),tier!=back", NULL, b, sizeof(b)),
                        "a,c");
    assert_string_equal(names(f->s, "Pod", "", "app=nothing", NULL, b, sizeof(b)), "");
}

static void test_store_list_field_selectors(void **state)
{
    fixture *f = *state;
    char b[256];
    create_rv(f->s, obj("Pod", "default", "p1", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}"));
    create_rv(f->s, obj("Pod", "default", "p2", NULL, "{\"nodeName\":\"n2\"}"));
    create_rv(f->s, obj("Pod", "default", "p3", NULL, NULL));
    create_rv(f->s, obj("Pod", "other", "p4", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}"));
    assert_string_equal(names(f->s, "Pod", "", NULL, "spec.nodeName=n1", b, sizeof(b)), "p1,p4");
    assert_string_equal(names(f->s, "Pod", "", NULL, "spec.nodeName==n2", b, sizeof(b)), "p2");
    assert_string_equal(names(f->s, "Pod", "", NULL, "spec.nodeName!=n1", b, sizeof(b)), "p2,p3");
    assert_string_equal(names(f->s, "Pod", "", NULL, "spec.nodeName=", b, sizeof(b)), "p3");
    assert_string_equal(names(f->s, "Pod", "", NULL, "metadata.name=p2", b, sizeof(b)), "p2");
    assert_string_equal(names(f->s, "Pod", "", NULL, "metadata.namespace=other", b, sizeof(b)),
                        "p4");
    assert_string_equal(
        names(f->s, "Pod", "", NULL, "spec.nodeName=n1,metadata.name!=p1", b, sizeof(b)), "p4");
    assert_string_equal(names(f->s, "Pod", "", "app=web", "spec.nodeName=n1", b, sizeof(b)),
                        "p1,p4");
    assert_string_equal(names(f->s, "Pod", "default", "app=web", "spec.nodeName=n1", b, sizeof(b)),
                        "p1");
}

static void test_store_malformed_selectors_are_refused(void **state)
{
    fixture *f = *state;
    static const char *const bad_labels[] = {
        "a in (x", "a=b,", "=b", "a in ()", "!", "a b", "a=b c", "a notin x", ",a", "a=(b)",
        "-a=b", "a=b-",
    };
    static const char *const bad_fields[] = {
        "spec.nodeName", "=x", "spec..nodeName=x", "a=b\\x", "a!x", "a=b,",
    };
    char why[256];
    json_t *items = NULL;
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
        assert_int_equal(ke_store_selector_check(bad_labels[i], NULL, why, sizeof(why)),
                         KE_EINVAL);
        assert_memory_equal(why, "label_selector: ", 16);
        assert_int_equal(ke_store_list(f->s, "Pod", "", bad_labels[i], NULL, &items, NULL),
                         KE_EINVAL);
        assert_null(items);
    }
    for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++) {
        assert_int_equal(ke_store_selector_check(NULL, bad_fields[i], why, sizeof(why)),
                         KE_EINVAL);
        assert_memory_equal(why, "field_selector: ", 16);
        assert_int_equal(ke_store_list(f->s, "Pod", "", NULL, bad_fields[i], &items, NULL),
                         KE_EINVAL);
    }
    assert_int_equal(ke_store_selector_check("app.kubernetes.io/name in (a,b),!x,y",
                                             "metadata.name=c\\=d\\,e", why, sizeof(why)),
                     0);
    /* the compiled matcher, for servers matching objects they read elsewhere */
    ke_store_selector *sel = NULL;
    assert_int_equal(ke_store_selector_new("a in (", NULL, &sel, why, sizeof(why)), KE_EINVAL);
    assert_null(sel);
    assert_int_equal(ke_store_selector_new("app=web", "spec.nodeName=edge-1", &sel, why,
                                           sizeof(why)),
                     0);
    json_t *pod = json_pack("{s:{s:s, s:{s:s}}, s:{s:s}}", "metadata", "name", "w", "labels",
                            "app", "web", "spec", "nodeName", "edge-1");
    assert_true(ke_store_selector_match(sel, pod));
    json_object_set_new(json_object_get(pod, "spec"), "nodeName", json_string("edge-2"));
    assert_false(ke_store_selector_match(sel, pod));
    json_decref(pod);
    ke_store_selector_free(sel);
    ke_store_selector_free(NULL);
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", "a in (", NULL, 0, collect, &c, &w),
                     KE_EINVAL);
    assert_null(w);
    collector_destroy(&c);
}

/* ---- watches -------------------------------------------------------------- */

#define LIVE_WRITES 150

typedef struct {
    ke_store *s;
    uint64_t revs[2 * LIVE_WRITES];
    size_t n;
    int errors;
} writer_arg;

/* writer_thread updates Pod p0 and creates ConfigMaps (another kind the
 * watch must not see), recording the Pod revisions. */
static void *writer_thread(void *p)
{
    writer_arg *a = p;
    for (int i = 0; i < LIVE_WRITES; i++) {
        json_t *o = obj("Pod", "default", "p0", NULL, NULL), *out = NULL;
        json_object_set_new(json_object_get(o, "spec"), "i", json_integer(i));
        if (ke_store_update(a->s, o, &out) != 0)
            a->errors++;
        else
            a->revs[a->n++] = rv_of(out);
        json_decref(out);
        json_decref(o);
        char name[16];
        snprintf(name, sizeof(name), "cm%d", i);
        o = obj("ConfigMap", "default", name, NULL, NULL);
        if (ke_store_create(a->s, o, NULL) != 0)
            a->errors++;
        json_decref(o);
    }
    return NULL;
}

static void test_store_watch_delivers_history_then_live_changes_in_order(void **state)
{
    fixture *f = *state;
    uint64_t expect[3 * LIVE_WRITES];
    size_t ne = 0;
    for (int i = 0; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        uint64_t rv = create_rv(f->s, obj("Pod", "default", name, NULL, NULL));
        create_rv(f->s, obj("Node", NULL, name, NULL, NULL));
        if (i >= 3)
            expect[ne++] = rv; /* after from_rev */
        if (i == 2)
            create_rv(f->s, obj("Secret", "default", "s", NULL, NULL));
    }
    uint64_t from = 6; /* p0 n0 p1 n1 p2 n2 */
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, from, collect, &c, &w), 0);
    writer_arg *a = calloc(1, sizeof(*a));
    a->s = f->s;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_thread, a), 0);
    pthread_join(t, NULL);
    assert_int_equal(a->errors, 0);
    for (size_t i = 0; i < a->n; i++)
        expect[ne++] = a->revs[i];
    assert_int_equal(wait_until(&c, ne), ne);
    ke_store_watch_stop(w);
    assert_int_equal(c.n, ne);
    for (size_t i = 0; i < ne; i++) {
        assert_int_equal(c.rev[i], expect[i]);
        assert_int_equal(c.type[i], i < 3 ? KE_STORE_ADDED : KE_STORE_MODIFIED);
    }
    assert_int_equal(c.rv_mismatch, 0);
    free(a);
    collector_destroy(&c);
}

static void test_store_watch_with_selector_adds_and_deletes_as_matches_change(void **state)
{
    fixture *f = *state;
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    create_rv(f->s, obj("Pod", "default", "before", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}"));
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "default", "app=web", "spec.nodeName=n1",
                                          0, collect, &c, &w), 0);
    json_t *p1 = obj("Pod", "default", "p1", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}");
    assert_int_equal(ke_store_create(f->s, p1, NULL), 0); /* ADDED */
    create_rv(f->s, obj("Pod", "default", "p2", "{\"app\":\"db\"}", "{\"nodeName\":\"n1\"}"));
    create_rv(f->s, obj("Pod", "other", "p9", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}"));
    json_object_set_new(json_object_get(p1, "spec"), "x", json_integer(1));
    assert_int_equal(ke_store_update(f->s, p1, NULL), 0); /* MODIFIED */
    json_object_set_new(json_object_get(p1, "spec"), "nodeName", json_string("n2"));
    json_t *moved = NULL;
    assert_int_equal(ke_store_update(f->s, p1, &moved), 0); /* DELETED */
    json_object_set_new(json_object_get(p1, "spec"), "x", json_integer(2));
    assert_int_equal(ke_store_update(f->s, p1, NULL), 0); /* nothing */
    json_object_set_new(json_object_get(p1, "spec"), "nodeName", json_string("n1"));
    assert_int_equal(ke_store_update(f->s, p1, NULL), 0); /* ADDED */
    assert_int_equal(ke_store_delete(f->s, "Pod", "default", "p1", 0, NULL), 0); /* DELETED */
    create_rv(f->s, obj("Pod", "default", "p3", "{\"app\":\"web\"}", "{\"nodeName\":\"n1\"}"));

    static const int want[] = {KE_STORE_ADDED, KE_STORE_MODIFIED, KE_STORE_DELETED,
                               KE_STORE_ADDED, KE_STORE_DELETED,  KE_STORE_ADDED};
    size_t nw = sizeof(want) / sizeof(want[0]);
    assert_int_equal(wait_until(&c, nw), nw);
    ke_store_watch_stop(w);
    assert_int_equal(c.n, nw);
    for (size_t i = 0; i < nw; i++)
        assert_int_equal(c.type[i], want[i]);
    assert_string_equal(c.name[5], "p3");
    /* Stopped matching: the previous content, with the change's revision. */
    assert_string_equal(c.node[2], "n1");
    assert_int_equal(c.rev[2], rv_of(moved));
    assert_int_equal(c.rv_mismatch, 0);
    json_decref(moved);
    json_decref(p1);
    collector_destroy(&c);
}

static void test_store_watch_delivers_deleted(void **state)
{
    fixture *f = *state;
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Node", NULL, NULL, NULL, 0, collect, &c, &w), 0);
    create_rv(f->s, obj("Node", NULL, "edge-1", NULL, NULL));
    json_t *gone = NULL;
    assert_int_equal(ke_store_delete(f->s, "Node", NULL, "edge-1", 0, &gone), 0);
    assert_int_equal(wait_until(&c, 2), 2);
    ke_store_watch_stop(w);
    assert_int_equal(c.type[0], KE_STORE_ADDED);
    assert_int_equal(c.type[1], KE_STORE_DELETED);
    assert_string_equal(c.name[1], "edge-1");
    assert_int_equal(c.rev[1], rv_of(gone));
    assert_int_equal(c.rv_mismatch, 0);
    json_decref(gone);
    collector_destroy(&c);
}

static void test_store_watch_from_compacted_revision_is_gone(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        create_rv(f->s, obj("Pod", "default", name, NULL, NULL));
    }
    assert_int_equal(ke_store_compact(f->s, 3), 0);
    assert_int_equal(ke_store_compacted(f->s), 7);
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 6, collect, &c, &w),
                     KE_EGONE);
    assert_null(w);
    assert_string_equal(ke_strerror(KE_EGONE), "gone: history compacted");
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 11, collect, &c, &w),
                     KE_EINVAL); /* from the future */
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 7, collect, &c, &w), 0);
    assert_int_equal(wait_until(&c, 3), 3);
    ke_store_watch_stop(w);
    assert_int_equal(c.rev[0], 8);
    assert_int_equal(c.rev[2], 10);
    collector_destroy(&c);
}

static void test_store_automatic_compaction_keeps_the_last_n_events(void **state)
{
    fixture *f = *state;
    assert_int_equal(ke_store_set_history(f->s, 0), KE_EINVAL);
    assert_int_equal(ke_store_set_history(f->s, 5), 0);
    json_t *o = obj("Pod", "default", "p", NULL, NULL);
    assert_int_equal(ke_store_create(f->s, o, NULL), 0);
    for (int i = 0; i < 19; i++) {
        json_object_set_new(json_object_get(o, "spec"), "i", json_integer(i));
        assert_int_equal(ke_store_update(f->s, o, NULL), 0);
    }
    json_decref(o);
    assert_int_equal(ke_store_revision(f->s), 20);
    assert_int_equal(ke_store_compacted(f->s), 15);
    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 14, collect, &c, &w),
                     KE_EGONE);
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 15, collect, &c, &w), 0);
    assert_int_equal(wait_until(&c, 5), 5);
    ke_store_watch_stop(w);
    assert_int_equal(c.rev[0], 16);
    assert_int_equal(c.rev[4], 20);
    collector_destroy(&c);
}

static void test_store_watch_behind_compaction_receives_gone(void **state)
{
    fixture *f = *state;
    collector c;
    collector_init(&c);
    c.block_first = 1;
    ke_store_watch *w = NULL;
    create_rv(f->s, obj("Pod", "default", "p0", NULL, NULL));
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 0, collect, &c, &w), 0);
    create_rv(f->s, obj("Pod", "default", "p1", NULL, NULL));
    /* The dispatcher is now inside the first callback, holding its batch. */
    struct timespec ts;
    deadline(&ts, WAIT_SECS);
    pthread_mutex_lock(&c.mu);
    while (!c.in_callback && pthread_cond_timedwait(&c.cv, &c.mu, &ts) != ETIMEDOUT)
        ;
    assert_true(c.in_callback);
    pthread_mutex_unlock(&c.mu);
    for (int i = 2; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        create_rv(f->s, obj("Pod", "default", name, NULL, NULL));
    }
    assert_int_equal(ke_store_compact(f->s, 0), 0);
    pthread_mutex_lock(&c.mu);
    c.release = 1;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(wait_until(&c, 0), 1);
    create_rv(f->s, obj("Pod", "default", "p6", NULL, NULL));
    ke_store_watch_stop(w);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.rev[0], 2);
    assert_int_equal(c.after_gone, 0);
    collector_destroy(&c);
}

static void test_store_watch_stop_inside_callback(void **state)
{
    fixture *f = *state;
    collector c, other;
    collector_init(&c);
    collector_init(&other);
    ke_store_watch *w = NULL, *w2 = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 0, collect, &c, &w), 0);
    pthread_mutex_lock(&c.mu);
    c.self_stop_w = w; /* before any event */
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 0, collect, &other, &w2), 0);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        create_rv(f->s, obj("Pod", "default", name, NULL, NULL));
    }
    /* Once `other` saw all five and its stop returned, the dispatcher is done
     * with the batch that held them: `c` was offered all five too, and had
     * stopped itself at the second. */
    assert_int_equal(wait_until(&other, 5), 5);
    ke_store_watch_stop(w2);
    assert_int_equal(c.n, 2);
    collector_destroy(&c);
    collector_destroy(&other);
}

typedef struct {
    ke_store *s;
    int stop;
    int errors;
} churn_arg;

static void *churn_thread(void *p)
{
    churn_arg *a = p;
    json_t *o = obj("Pod", "default", "churn", NULL, NULL);
    if (ke_store_create(a->s, o, NULL) != 0)
        a->errors++;
    for (int i = 0; i < 100000 && !__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE); i++) {
        json_object_set_new(json_object_get(o, "spec"), "i", json_integer(i));
        if (ke_store_update(a->s, o, NULL) != 0)
            a->errors++;
    }
    json_decref(o);
    return NULL;
}

static void test_store_watch_stop_returns_after_the_last_callback(void **state)
{
    fixture *f = *state;
    collector c, probe;
    collector_init(&c);
    collector_init(&probe);
    ke_store_watch *w = NULL, *wp = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 0, collect, &c, &w), 0);
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 0, collect, &probe, &wp),
                     0);
    churn_arg a = {f->s, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_thread, &a), 0);
    assert_true(wait_until(&c, 20) >= 20); /* mid-stream */
    ke_store_watch_stop(w);
    pthread_mutex_lock(&c.mu);
    c.stopped = 1;
    pthread_mutex_unlock(&c.mu);
    /* Writes go on: the probe sees 100 more while `c` must see none. */
    pthread_mutex_lock(&probe.mu);
    size_t seen = probe.n;
    pthread_mutex_unlock(&probe.mu);
    assert_true(wait_until(&probe, seen + 100) >= seen + 100);
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    ke_store_watch_stop(wp);
    assert_int_equal(a.errors, 0);
    assert_int_equal(c.after_stop, 0);
    collector_destroy(&c);
    collector_destroy(&probe);
}

/* ---- persistence ---------------------------------------------------------- */

static void test_store_reopen_keeps_objects_revision_and_history(void **state)
{
    fixture *f = *state;
    json_t *before = NULL;
    create_rv(f->s, obj("Pod", "default", "p1", NULL, "{\"v\":1}"));
    create_rv(f->s, obj("Node", NULL, "edge-1", NULL, NULL));
    json_t *p = obj("Pod", "default", "p2", NULL, NULL);
    assert_int_equal(ke_store_create(f->s, p, &before), 0);
    assert_int_equal(ke_store_delete(f->s, "Node", NULL, "edge-1", 0, NULL), 0);
    assert_int_equal(ke_store_compact(f->s, 1), 0);
    ke_store_close(f->s);
    f->s = NULL;

    assert_int_equal(ke_store_open(f->path, &f->s), 0);
    assert_int_equal(ke_store_revision(f->s), 4);
    assert_int_equal(ke_store_compacted(f->s), 3);
    json_t *after = NULL;
    assert_int_equal(ke_store_get(f->s, "Pod", "default", "p2", &after), 0);
    assert_true(json_equal(before, after));
    json_decref(after);
    assert_int_equal(ke_store_get(f->s, "Node", NULL, "edge-1", &after), KE_ENOTFOUND);
    assert_int_equal(create_rv(f->s, obj("Pod", "default", "p3", NULL, NULL)), 5);

    collector c;
    collector_init(&c);
    ke_store_watch *w = NULL;
    assert_int_equal(ke_store_watch_start(f->s, "Pod", "", NULL, NULL, 2, collect, &c, &w),
                     KE_EGONE);
    assert_int_equal(ke_store_watch_start(f->s, "Node", "", NULL, NULL, 3, collect, &c, &w), 0);
    assert_int_equal(wait_until(&c, 1), 1); /* the delete, rev 4, survived */
    ke_store_watch_stop(w);
    assert_int_equal(c.type[0], KE_STORE_DELETED);
    assert_int_equal(c.rev[0], 4);
    collector_destroy(&c);
    json_decref(before);
    json_decref(p);
}

/* ---- paginated lists ---- */

#define PAGE_WRITER_MAX 4000

typedef struct {
    ke_store *s;
    atomic_int stop;
    size_t n;                        /* creates done */
    uint64_t rv[PAGE_WRITER_MAX];    /* revision of w-<i> */
} page_writer;

/* page_writer_main creates pods w-0000, w-0001, ... in namespace "a" (the
 * middle of the key order) until told to stop. */
static void *page_writer_main(void *arg)
{
    page_writer *w = arg;
    while (!atomic_load(&w->stop) && w->n < PAGE_WRITER_MAX) {
        char name[32];
        snprintf(name, sizeof(name), "w-%04zu", w->n);
        json_t *out = NULL, *o = obj("Pod", "a", name, NULL, NULL);
        if (ke_store_create(w->s, o, &out) != 0) {
            json_decref(o);
            break;
        }
        w->rv[w->n] = rv_of(out);
        w->n++;
        json_decref(o);
        json_decref(out);
    }
    return NULL;
}

/* seen_add records ns/name in a set of at most cap keys; fails on a duplicate. */
static void seen_add(char (*seen)[80], size_t *n, size_t cap, const char *ns, const char *name)
{
    char key[80];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    for (size_t i = 0; i < *n; i++)
        if (strcmp(seen[i], key) == 0)
            fail_msg("%s listed twice", key);
    assert_true(*n < cap);
    snprintf(seen[(*n)++], sizeof(seen[0]), "%s", key);
}

static int seen_has(char (*seen)[80], size_t n, const char *ns, const char *name)
{
    char key[80];
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    for (size_t i = 0; i < n; i++)
        if (strcmp(seen[i], key) == 0)
            return 1;
    return 0;
}

static void test_store_list_pages_walk_every_object_once_while_objects_are_written(void **state)
{
    fixture *f = *state;
    static const char *const nss[] = {"a", "b", "c"};
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "p-%03d", i);
        create_rv(f->s, obj("Pod", nss[i % 3], name, "{\"gen\":\"one\"}", NULL));
    }
    create_rv(f->s, obj("ConfigMap", "a", "not-a-pod", NULL, NULL));
    page_writer *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->s = f->s;
    atomic_init(&w->stop, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, page_writer_main, w), 0);

    static char seen[PAGE_WRITER_MAX + 400][80];
    size_t nseen = 0, pages = 0;
    char tok[KE_STORE_CONTINUE_MAX] = "", next[KE_STORE_CONTINUE_MAX];
    char last[80] = "";
    uint64_t list_rev = 0;
    do {
        json_t *items = NULL;
        uint64_t rev = 0;
        assert_int_equal(ke_store_list_page(f->s, "Pod", "", NULL, NULL, 37, tok, &items, &rev,
                                            next, sizeof(next)),
                         0);
        if (pages == 0)
            list_rev = rev;
        assert_int_equal(rev, list_rev); /* every page at the first page's revision */
        assert_true(json_array_size(items) <= 37);
        if (next[0])
            assert_int_equal(json_array_size(items), 37);
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            char key[80];
            snprintf(key, sizeof(key), "%s/%s", meta_str(it, "namespace"), meta_str(it, "name"));
            assert_true(strcmp(last, key) < 0); /* ordered by namespace, name */
            snprintf(last, sizeof(last), "%s", key);
            assert_true(rv_of(it) <= list_rev);
            /* as it was at the list's revision, though changed since */
            const char *gen = json_string_value(json_object_get(
                json_object_get(json_object_get(it, "metadata"), "labels"), "gen"));
            if (strncmp(meta_str(it, "name"), "p-", 2) == 0)
                assert_string_equal(gen ? gen : "none", "one");
            seen_add(seen, &nseen, sizeof(seen) / sizeof(seen[0]), meta_str(it, "namespace"),
                     meta_str(it, "name"));
        }
        json_decref(items);
        /* between pages: change, delete and create objects on both sides of
         * the cursor */
        json_t *o = obj("Pod", nss[pages % 3], "p-000", "{\"gen\":\"two\"}", NULL);
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof(name), "p-%03zu", (pages * 7 + (size_t)k * 101) % 300);
            json_object_set_new(json_object_get(o, "metadata"), "name", json_string(name));
            json_object_set_new(json_object_get(o, "metadata"), "namespace",
                                json_string(nss[((pages * 7 + (size_t)k * 101) % 300) % 3]));
            json_t *cur = NULL;
            if (ke_store_get(f->s, "Pod", nss[((pages * 7 + (size_t)k * 101) % 300) % 3], name,
                             &cur) == 0) {
                if (k == 2)
                    assert_int_equal(ke_store_delete(f->s, "Pod", meta_str(cur, "namespace"),
                                                     name, 0, NULL),
                                     0);
                else
                    assert_int_equal(ke_store_update(f->s, o, NULL), 0);
            }
            json_decref(cur);
        }
        json_decref(o);
        snprintf(name, sizeof(name), "q-%03zu", pages);
        create_rv(f->s, obj("Pod", "a", name, NULL, NULL));
        create_rv(f->s, obj("Pod", "c", name, NULL, NULL));
        snprintf(tok, sizeof(tok), "%s", next);
        pages++;
    } while (tok[0]);
    atomic_store(&w->stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);

    /* exactly the pods of the list's revision: the 300, and the writer's
     * that came before it; nothing created after it */
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "p-%03d", i);
        assert_true(seen_has(seen, nseen, nss[i % 3], name));
    }
    size_t before = 0;
    for (size_t i = 0; i < w->n; i++) {
        snprintf(name, sizeof(name), "w-%04zu", i);
        assert_int_equal(seen_has(seen, nseen, "a", name), w->rv[i] <= list_rev);
        before += w->rv[i] <= list_rev;
    }
    assert_int_equal(nseen, 300 + before);
    assert_true(pages >= 300 / 37);
    free(w);
}

static void test_store_list_page_limit_defaults_to_500_and_is_capped_at_5000(void **state)
{
    fixture *f = *state;
    char name[32], next[KE_STORE_CONTINUE_MAX];
    for (int i = 0; i < KE_STORE_LIST_LIMIT_MAX + 10; i++) {
        snprintf(name, sizeof(name), "cm-%05d", i);
        create_rv(f->s, obj("ConfigMap", "default", name, NULL, NULL));
    }
    json_t *items = NULL;
    assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "default", NULL, NULL, 0, NULL,
                                        &items, NULL, next, sizeof(next)),
                     0);
    assert_int_equal(json_array_size(items), KE_STORE_LIST_LIMIT_DEFAULT);
    assert_int_equal(KE_STORE_LIST_LIMIT_DEFAULT, 500);
    assert_true(next[0]);
    json_decref(items);
    assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "default", NULL, NULL, 1000000, "",
                                        &items, NULL, next, sizeof(next)),
                     0);
    assert_int_equal(json_array_size(items), KE_STORE_LIST_LIMIT_MAX);
    assert_int_equal(KE_STORE_LIST_LIMIT_MAX, 5000);
    assert_true(next[0]);
    json_decref(items);
    /* the rest, and then no token */
    char tok[KE_STORE_CONTINUE_MAX];
    snprintf(tok, sizeof(tok), "%s", next);
    assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "default", NULL, NULL, 1000000, tok,
                                        &items, NULL, next, sizeof(next)),
                     0);
    assert_int_equal(json_array_size(items), 10);
    assert_string_equal(next, "");
    json_decref(items);
    /* a selector that matches few: one page, no token */
    assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "", NULL, "metadata.name=cm-00042",
                                        0, NULL, &items, NULL, next, sizeof(next)),
                     0);
    assert_int_equal(json_array_size(items), 1);
    assert_string_equal(next, "");
    json_decref(items);
    /* a token buffer that cannot hold a token is refused */
    assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "", NULL, NULL, 0, NULL, &items,
                                        NULL, next, 8),
                     KE_EINVAL);
    assert_null(items);
}

static void test_store_list_page_bytes_are_bounded(void **state)
{
    fixture *f = *state;
    /* objects of ~700 KiB: a page of 3 MiB holds 4 of them, whatever the limit */
    size_t big = 700 * 1024;
    char *blob = malloc(big + 1);
    assert_non_null(blob);
    memset(blob, 'x', big);
    blob[big] = '\0';
    char name[32], next[KE_STORE_CONTINUE_MAX], tok[KE_STORE_CONTINUE_MAX] = "";
    for (int i = 0; i < 9; i++) {
        snprintf(name, sizeof(name), "big-%d", i);
        json_t *o = obj("ConfigMap", "default", name, NULL, NULL);
        json_object_set_new(o, "data", json_pack("{ss}", "blob", blob));
        create_rv(f->s, o);
    }
    free(blob);
    size_t total = 0, pages = 0;
    do {
        json_t *items = NULL;
        assert_int_equal(ke_store_list_page(f->s, "ConfigMap", "default", NULL, NULL, 500, tok,
                                            &items, NULL, next, sizeof(next)),
                         0);
        assert_true(json_array_size(items) >= 1);
        size_t bytes = 0, i;
        json_t *it;
        json_array_foreach(items, i, it) bytes += json_dumpb(it, NULL, 0, JSON_COMPACT);
        assert_true(bytes <= KE_STORE_LIST_PAGE_BYTES);
        total += json_array_size(items);
        json_decref(items);
        snprintf(tok, sizeof(tok), "%s", next);
        pages++;
    } while (tok[0]);
    assert_int_equal(total, 9);
    assert_int_equal(pages, 3);
}

static void test_store_list_page_refuses_malformed_and_foreign_tokens(void **state)
{
    fixture *f = *state;
    char name[32], next[KE_STORE_CONTINUE_MAX], why[256];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "p-%d", i);
        create_rv(f->s, obj("Pod", "default", name, NULL, NULL));
    }
    json_t *items = NULL;
    assert_int_equal(ke_store_list_page(f->s, "Pod", "default", NULL, NULL, 2, NULL, &items,
                                        NULL, next, sizeof(next)),
                     0);
    json_decref(items);
    assert_true(next[0]);
    assert_int_equal(ke_store_continue_check(f->s, "Pod", "default", next, why, sizeof(why)), 0);
    assert_int_equal(ke_store_continue_check(f->s, "Pod", "", next, why, sizeof(why)), 0);
    char long_tok[KE_STORE_CONTINUE_MAX + 10];
    memset(long_tok, 'a', sizeof(long_tok) - 1);
    long_tok[sizeof(long_tok) - 1] = '\0';
    const char *bad[] = {"garbage", "1:Pod", "1:Pod:5:default", "2:Pod:5:default:p-1",
                         "1:Pod:x:default:p-1", "1:Pod:0:default:p-1", "1:Pod:5:Default:p-1",
                         "1:Pod:5:default:P_1", "1:Pod:5:default:p-1:extra",
                         "1:Pod:99999999999999999999:default:p-1", long_tok};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(ke_store_continue_check(f->s, "Pod", "default", bad[i], why, sizeof(why)),
                         KE_EINVAL);
        if (strncmp(why, "continue_token: ", 16) != 0)
            fail_msg("token \"%.40s\": reason \"%s\" does not name continue_token", bad[i], why);
        assert_int_equal(ke_store_list_page(f->s, "Pod", "default", NULL, NULL, 2, bad[i],
                                            &items, NULL, next, sizeof(next)),
                         KE_EINVAL);
        assert_null(items);
    }
    /* another kind's or namespace's token, and one from the future */
    assert_int_equal(ke_store_continue_check(f->s, "ConfigMap", "default", "1:Pod:3:default:p-1",
                                             why, sizeof(why)),
                     KE_EINVAL);
    assert_non_null(strstr(why, "continue_token"));
    assert_int_equal(ke_store_continue_check(f->s, "Pod", "other", "1:Pod:3:default:p-1", why,
                                             sizeof(why)),
                     KE_EINVAL);
    assert_int_equal(ke_store_continue_check(f->s, "Pod", "", "1:Pod:999:default:p-1", why,
                                             sizeof(why)),
                     KE_EINVAL);
    /* a token whose revision was compacted away: gone, start again */
    create_rv(f->s, obj("Pod", "default", "p-9", NULL, NULL));
    assert_int_equal(ke_store_compact(f->s, 0), 0);
    assert_int_equal(ke_store_continue_check(f->s, "Pod", "", "1:Pod:3:default:p-1", why,
                                             sizeof(why)),
                     KE_EGONE);
    assert_non_null(strstr(why, "continue_token"));
    assert_int_equal(ke_store_list_page(f->s, "Pod", "", NULL, NULL, 2, "1:Pod:3:default:p-1",
                                        &items, NULL, next, sizeof(next)),
                     KE_EGONE);
    /* ... while one at the current revision still reads */
    char tok[64];
    snprintf(tok, sizeof(tok), "1:Pod:%" PRIu64 ":default:p-1", ke_store_revision(f->s));
    assert_int_equal(ke_store_list_page(f->s, "Pod", "", NULL, NULL, 0, tok, &items, NULL, next,
                                        sizeof(next)),
                     0);
    assert_int_equal(json_array_size(items), 4); /* p-2, p-3, p-4, p-9 */
    json_decref(items);
}

static void test_store_close_null_is_noop(void **state)
{
    (void)state;
    ke_store_close(NULL);
    ke_store_watch_stop(NULL);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    ke_log_set_level(KE_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        T(test_store_create_sets_uid_timestamp_and_resource_version),
        T(test_store_get_returns_stored_json_byte_exact),
        T(test_store_create_existing_object_is_eexist),
        T(test_store_get_missing_object_is_enotfound),
        T(test_store_create_refuses_malformed_and_oversized_objects),
        T(test_store_cluster_scoped_kinds_drop_the_namespace),
        T(test_store_namespaced_kind_defaults_to_default_namespace),
        T(test_store_update_keeps_status_uid_and_creation_timestamp),
        T(test_store_update_status_keeps_spec),
        T(test_store_update_missing_object_is_enotfound),
        T(test_store_update_with_stale_resource_version_conflicts_and_writes_nothing),
        T(test_store_update_without_change_keeps_resource_version),
        T(test_store_delete_returns_object_and_checks_preconditions),
        T(test_store_resource_version_increases_across_kinds),
        T(test_store_concurrent_writers_conflict_and_lose_nothing),
        T(test_store_list_label_selectors),
        T(test_store_list_field_selectors),
        T(test_store_malformed_selectors_are_refused),
        T(test_store_watch_delivers_history_then_live_changes_in_order),
        T(test_store_watch_with_selector_adds_and_deletes_as_matches_change),
        T(test_store_watch_delivers_deleted),
        T(test_store_watch_from_compacted_revision_is_gone),
        T(test_store_automatic_compaction_keeps_the_last_n_events),
        T(test_store_watch_behind_compaction_receives_gone),
        T(test_store_watch_stop_inside_callback),
        T(test_store_watch_stop_returns_after_the_last_callback),
        T(test_store_reopen_keeps_objects_revision_and_history),
        T(test_store_list_pages_walk_every_object_once_while_objects_are_written),
        T(test_store_list_page_limit_defaults_to_500_and_is_capped_at_5000),
        T(test_store_list_page_bytes_are_bounded),
        T(test_store_list_page_refuses_malformed_and_foreign_tokens),
        cmocka_unit_test(test_store_close_null_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
