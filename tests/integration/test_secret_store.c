/*
 * test_secret_store.c — Secrets at rest with a real cloudcore: encryption
 * on through store.encryption_key_file, a Secret with a recognizable value
 * applied, updated, read, listed, watched and deleted over the API, then
 * the value looked for in cloudcore's log (at debug level) and in the
 * store's SQLite file and WAL: it must be in neither, while Get returns
 * it. Then a rotation (new key first, restart, `cloudcore
 * --reencrypt-secrets` while cloudcore runs, old key removed, restart) and
 * a missing key (INTERNAL naming the key; other objects unaffected).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_crypt.h"
#include "ke_err.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PLAIN "pLaInTeXt-SeCrEt-7731"
#define PLAIN_B64 "cExhSW5UZVh0LVNlQ3JFdC03NzMx" /* base64(PLAIN) */
#define SECRET(name, app)                                                                     \
    "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"" name "\","      \
    "\"labels\":{\"app\":\"" app "\"},\"annotations\":{\"note\":\"" PLAIN "-note\"}},"        \
    "\"type\":\"Opaque\",\"data\":{\"password\":\"" PLAIN_B64 "\"},"                          \
    "\"stringData\":{\"token\":\"" PLAIN "\"}}"

static ke_cluster C;
static char keydir[64], keyfile[128], keyflag[160], lines[3][KE_CRYPT_LINE_MAX];

/* keys_write writes the key file: the lines of the given key indexes, in order. */
static void keys_write(int a, int b)
{
    FILE *f = fopen(keyfile, "w");
    assert_non_null(f);
    assert_int_equal(chmod(keyfile, 0600), 0);
    fputs(lines[a], f);
    if (b >= 0)
        fputs(lines[b], f);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(ke_tp_tmpdir(keydir), 0);
    snprintf(keyfile, sizeof(keyfile), "%s/encryption.keys", keydir);
    snprintf(keyflag, sizeof(keyflag), "--store.encryption_key_file=%s", keyfile);
    static const char *const names[] = {"key-a", "key-b", "key-c"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ke_crypt_key_line(names[i], lines[i], sizeof(lines[i])), 0);
    keys_write(0, -1);
    const char *extra[] = {keyflag, "--log_level=debug", NULL};
    ke_cluster_start(&C, extra);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    OPENSSL_cleanse(lines, sizeof(lines));
    ke_tp_sh("rm -rf %s", keydir);
    return 0;
}

static int apply(const char *json, char *msg, size_t len)
{
    ke_rpc_status st;
    int code = ke_ec_apply(C.api, json, &st);
    if (msg)
        snprintf(msg, len, "%s", st.message);
    return code;
}

/* get returns the object as text (free it), or NULL with *code and msg. */
static char *get(const char *kind, const char *name, int *code, char *msg, size_t len)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = "default";
    ref.name = (char *)name;
    ke_rpc_stub ec = {C.api, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&ec, "Get", &ref.base, NULL, &reply, &st), 0);
    *code = st.code;
    if (msg)
        snprintf(msg, len, "%s", st.message);
    if (st.code != KE_RPC_OK)
        return NULL;
    Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
    char *text = strndup((const char *)r->object_json.data, r->object_json.len);
    protobuf_c_message_free_unpacked(reply, NULL);
    return text;
}

static int list_secrets(char *all, size_t len, char *msg, size_t mlen)
{
    Ke__V1__ListRequest req = KE__V1__LIST_REQUEST__INIT;
    req.kind = "Secret";
    req.namespace_ = "default";
    ke_rpc_stub ec = {C.api, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&ec, "List", &req.base, NULL, &reply, &st), 0);
    snprintf(msg, mlen, "%s", st.message);
    all[0] = '\0';
    if (st.code == KE_RPC_OK) {
        Ke__V1__ListReply *r = (Ke__V1__ListReply *)reply;
        for (size_t i = 0; i < r->n_items_json; i++)
            strncat(all, (const char *)r->items_json[i].data,
                    len - strlen(all) - 1 < r->items_json[i].len ? len - strlen(all) - 1
                                                                 : r->items_json[i].len);
    }
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

static int delete_secret(const char *name)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = "Secret";
    ref.namespace_ = "default";
    ref.name = (char *)name;
    Ke__V1__DeleteRequest req = KE__V1__DELETE_REQUEST__INIT;
    req.ref = &ref;
    ke_rpc_stub ec = {C.api, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&ec, "Delete", &req.base, NULL, &reply, &st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

/* ---- a Watch on Secrets, keeping whether each event carried the value ---- */

typedef struct watch_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, closed, with_value;
} watch_rec;

static void watch_msg(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    watch_rec *w = ud;
    const Ke__V1__WatchEvent *ev = (const Ke__V1__WatchEvent *)m;
    char *t = strndup((const char *)ev->object_json.data, ev->object_json.len);
    pthread_mutex_lock(&w->mu);
    w->n++;
    w->with_value += t && strstr(t, PLAIN) != NULL;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(t);
}

static void watch_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    (void)st;
    watch_rec *w = ud;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int watch_wait(watch_rec *w, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 15;
    pthread_mutex_lock(&w->mu);
    while (w->n < n && !w->closed && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
    }
    int got = w->n;
    pthread_mutex_unlock(&w->mu);
    return got;
}

/* file_has: whether the file at path holds text (read whole, bounded). */
static int file_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t cap = 64u << 20, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    n = fread(buf, 1, cap, f);
    fclose(f);
    int found = memmem(buf, n, text, strlen(text)) != NULL;
    free(buf);
    return found;
}

/* nowhere_at_rest asserts the value is in neither the log nor the store files. */
static void nowhere_at_rest(void)
{
    char db[160], wal[170];
    snprintf(db, sizeof(db), "%s/cloud/store.db", C.dir);
    snprintf(wal, sizeof(wal), "%s-wal", db);
    static const char *const forms[] = {PLAIN, PLAIN_B64};
    for (int i = 0; i < 2; i++) {
        assert_false(file_has(C.cloud_log, forms[i]));
        assert_false(file_has(db, forms[i]));
        assert_false(file_has(wal, forms[i]));
    }
    assert_true(file_has(C.cloud_log, "store: encryption at rest on kind=Secret"));
    assert_true(file_has(db, "Secret") || file_has(wal, "Secret")); /* the rows are there */
}

static void test_secret_value_reaches_neither_log_nor_store_file(void **state)
{
    (void)state;
    char msg[512], all[65536];
    int code;
    watch_rec w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    static const ke_rpc_handler h = {.on_message = watch_msg, .on_close = watch_close};
    ke_rpc_stub ec = {C.api, &ke__v1__edge_controller__descriptor};
    ke_rpc_call *call = NULL;
    assert_int_equal(ke_rpc_stub_start(&ec, "Watch", &h, &w, NULL, &call), 0);
    /* watch from a known version, so that no event is missed however
     * late the stream starts */
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                           "\"marker\"},\"data\":{\"k\":\"v\"}}", msg, sizeof(msg)),
                     KE_RPC_OK);
    char *marker = get("ConfigMap", "marker", &code, NULL, 0);
    json_t *mo = json_loads(marker, 0, NULL);
    Ke__V1__WatchRequest req = KE__V1__WATCH_REQUEST__INIT;
    req.kind = "Secret";
    req.namespace_ = "default";
    req.resource_version = strtoull(
        json_string_value(json_object_get(json_object_get(mo, "metadata"), "resourceVersion")),
        NULL, 10);
    assert_true(req.resource_version > 0);
    json_decref(mo);
    free(marker);
    assert_int_equal(ke_rpc_call_send(call, &req.base), 0);
    ke_rpc_call_close_send(call);

    assert_int_equal(apply(SECRET("db-pass", "web"), msg, sizeof(msg)), KE_RPC_OK);
    assert_int_equal(apply(SECRET("db-pass", "api"), msg, sizeof(msg)), KE_RPC_OK); /* update */
    assert_int_equal(apply(SECRET("gone", "web"), msg, sizeof(msg)), KE_RPC_OK);
    assert_int_equal(delete_secret("gone"), KE_RPC_OK);
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
                           "\"bad\"},\"data\":{\"k\":7}}", msg, sizeof(msg)),
                     KE_RPC_INVALID_ARGUMENT); /* refusals name fields, not values */
    char *text = get("Secret", "db-pass", &code, NULL, 0);
    assert_int_equal(code, KE_RPC_OK);
    assert_non_null(strstr(text, PLAIN));
    assert_non_null(strstr(text, PLAIN_B64));
    free(text);
    assert_int_equal(list_secrets(all, sizeof(all), msg, sizeof(msg)), KE_RPC_OK);
    assert_non_null(strstr(all, PLAIN));
    assert_int_equal(watch_wait(&w, 4), 4); /* ADDED, MODIFIED, ADDED, DELETED */
    assert_int_equal(w.with_value, 4);
    ke_rpc_call_cancel(call);
    pthread_mutex_lock(&w.mu);
    while (!w.closed)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    ke_rpc_call_unref(call);
    nowhere_at_rest();
}

static void test_rotation_reencrypts_while_cloudcore_runs(void **state)
{
    (void)state;
    char db[160], cmd[1024], out[512] = "", config[160];
    int code;
    snprintf(db, sizeof(db), "%s/cloud/store.db", C.dir);
    snprintf(config, sizeof(config), "%s/cloud/cloudcore.yaml", C.dir);
    const char *extra[] = {keyflag, "--log_level=debug", NULL};
    keys_write(1, 0); /* key-b first: it encrypts; key-a still decrypts */
    ke_cluster_restart_cloud(&C, extra);
    char *text = get("Secret", "db-pass", &code, NULL, 0);
    assert_int_equal(code, KE_RPC_OK);
    free(text);
    snprintf(cmd, sizeof(cmd), "%s --config %s %s --reencrypt-secrets 2>>%s > %s/reenc.out",
             ke_tp_env("KE_CLOUDCORE"), config, keyflag, C.cloud_log, keydir);
    assert_int_equal(ke_tp_sh("%s", cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s/reenc.out", keydir);
    FILE *f = fopen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(out, sizeof(out), f));
    fclose(f);
    assert_non_null(strstr(out, "objects rewritten=1 current=0 failed=0"));
    keys_write(1, -1); /* key-a removed */
    ke_cluster_restart_cloud(&C, extra);
    text = get("Secret", "db-pass", &code, NULL, 0);
    assert_int_equal(code, KE_RPC_OK);
    assert_non_null(strstr(text, PLAIN));
    free(text);
    nowhere_at_rest();
}

static void test_missing_key_is_internal_naming_the_key(void **state)
{
    (void)state;
    char msg[512], all[4096];
    int code;
    const char *extra[] = {keyflag, "--log_level=debug", NULL};
    assert_int_equal(apply("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                           "\"plain\"},\"data\":{\"k\":\"v\"}}", msg, sizeof(msg)),
                     KE_RPC_OK);
    keys_write(2, -1); /* key-b lost */
    ke_cluster_restart_cloud(&C, extra);
    assert_null(get("Secret", "db-pass", &code, msg, sizeof(msg)));
    assert_int_equal(code, KE_RPC_INTERNAL);
    assert_non_null(strstr(msg, "\"key-b\""));
    assert_int_equal(list_secrets(all, sizeof(all), msg, sizeof(msg)), KE_RPC_INTERNAL);
    char *text = get("ConfigMap", "plain", &code, NULL, 0); /* the rest works */
    assert_int_equal(code, KE_RPC_OK);
    free(text);
    keys_write(2, 1); /* the key comes back: everything reads again */
    ke_cluster_restart_cloud(&C, extra);
    text = get("Secret", "db-pass", &code, NULL, 0);
    assert_int_equal(code, KE_RPC_OK);
    free(text);
    nowhere_at_rest();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_value_reaches_neither_log_nor_store_file),
        cmocka_unit_test(test_rotation_reencrypts_while_cloudcore_runs),
        cmocka_unit_test(test_missing_key_is_internal_naming_the_key),
    };
    return cmocka_run_group_tests_name("secret_store", tests, setup, teardown);
}
