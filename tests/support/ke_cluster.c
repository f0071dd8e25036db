/*
 * ke_cluster.c — see ke_cluster.h.
 */
#include "ke_cluster.h"

#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_time.h"
#include "message.pb-c.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* add_env_extra appends the space-separated flags of KE_CLOUD_EXTRA to
 * argv[n..max) (buf holds their text and must outlive argv), ends argv
 * with NULL and returns the new count. */
static int add_env_extra(char **argv, int n, int max, char *buf, size_t len)
{
    const char *ex = getenv("KE_CLOUD_EXTRA");
    snprintf(buf, len, "%s", ex ? ex : "");
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && n < max;
         t = strtok_r(NULL, " ", &save))
        argv[n++] = t;
    argv[n] = NULL;
    return n;
}

static void start_cloud(ke_cluster *c, const char *listen, const char *const *extra)
{
    char config[128], grpc[64], env_extra[512];
    char *argv[48];
    int n = 0;
    snprintf(config, sizeof(config), "%s/cloud/cloudcore.yaml", c->dir);
    snprintf(grpc, sizeof(grpc), "--grpc.listen=%s", listen);
    argv[n++] = c->cloud_bin;
    argv[n++] = "--config";
    argv[n++] = config;
    argv[n++] = grpc;
    argv[n++] = "--http.listen=127.0.0.1:0";
    argv[n++] = "--kubeapi.listen=127.0.0.1:0";
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = (char *)extra[i];
    n = add_env_extra(argv, n, 46, env_extra, sizeof(env_extra));
    assert_int_equal(ke_tp_start_log(&c->cloud, argv, c->cloud_log), 0);
    char line[128];
    assert_int_equal(ke_tp_wait_line(&c->cloud, "ready ", 20000, line, sizeof(line)), 0);
    c->kubeapi_port = 0;
    assert_true(sscanf(line, "ready grpc=%d http=%d kubeapi=%d", &c->grpc_port, &c->http_port,
                       &c->kubeapi_port) >= 2);
}

static void open_admin(ke_cluster *c)
{
    char ca[128], cert[128], key[128], target[64];
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", c->dir);
    snprintf(cert, sizeof(cert), "%s/cloud/admin.crt", c->dir);
    snprintf(key, sizeof(key), "%s/cloud/admin.key", c->dir);
    snprintf(target, sizeof(target), "127.0.0.1:%d", c->grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    assert_int_equal(ke_rpc_channel_new(c->loop, target, &o, &c->admin), 0);
}

static void cluster_init(ke_cluster *c, const char *cloud_bin)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->cloud_bin, sizeof(c->cloud_bin), "%s", cloud_bin);
}

void ke_cluster_start(ke_cluster *c, const char *const *extra)
{
    cluster_init(c, ke_tp_env("KE_CLOUDCORE"));
    assert_int_equal(ke_tp_tmpdir(c->dir), 0);
    snprintf(c->cloud_log, sizeof(c->cloud_log), "%s/cloudcore.log", c->dir);
    assert_int_equal(ke_tp_sh("%s init --dir %s/cloud >/dev/null", ke_tp_env("KE_KEADM"), c->dir),
                     0);
    start_cloud(c, "127.0.0.1:0", extra);
    assert_int_equal(ke_rpc_loop_new(2, &c->loop), 0);
    open_admin(c);
    c->api = c->admin;
}

void ke_cluster_start_split(ke_cluster *c, const char *const *extra)
{
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/services/cloudcore/cloudhub", ke_tp_env("KE_BIN_DIR"));
    cluster_init(c, bin);
    c->split = 1;
    assert_int_equal(ke_tp_tmpdir(c->dir), 0);
    snprintf(c->cloud_log, sizeof(c->cloud_log), "%s/cloudhub.log", c->dir);
    snprintf(c->ctl_log, sizeof(c->ctl_log), "%s/edgecontroller.log", c->dir);
    assert_int_equal(ke_tp_sh("%s init --dir %s/cloud >/dev/null", ke_tp_env("KE_KEADM"), c->dir),
                     0);
    start_cloud(c, "127.0.0.1:0", extra);
    assert_int_equal(ke_rpc_loop_new(2, &c->loop), 0);
    open_admin(c);
    ke_cluster_start_controllers(c);
}

static void ctl_open(ke_cluster *c, const char *listen)
{
    char bin[512], hub[64], ca[128], cert[128], key[128], scert[128], skey[128], db[128],
        tca[128], grpc[64], env_extra[512];
    snprintf(bin, sizeof(bin), "%s/services/cloudcore/edgecontroller", ke_tp_env("KE_BIN_DIR"));
    snprintf(hub, sizeof(hub), "--hub.server=127.0.0.1:%d", c->grpc_port);
    snprintf(ca, sizeof(ca), "--hub.tls.ca=%s/cloud/ca.crt", c->dir);
    snprintf(cert, sizeof(cert), "--hub.tls.cert=%s/cloud/admin.crt", c->dir);
    snprintf(key, sizeof(key), "--hub.tls.key=%s/cloud/admin.key", c->dir);
    snprintf(scert, sizeof(scert), "--grpc.tls.cert=%s/cloud/server.crt", c->dir);
    snprintf(skey, sizeof(skey), "--grpc.tls.key=%s/cloud/server.key", c->dir);
    snprintf(tca, sizeof(tca), "--grpc.tls.ca=%s/cloud/ca.crt", c->dir);
    snprintf(db, sizeof(db), "--store.db=%s/controllers.db", c->dir);
    snprintf(grpc, sizeof(grpc), "--grpc.listen=%s", listen);
    char *argv[40] = {bin,  grpc, "--http.listen=127.0.0.1:0", "--kubeapi.listen=127.0.0.1:0",
                      tca,  scert, skey, db, hub, ca, cert, key};
    int n = 12;
    n = add_env_extra(argv, n, 38, env_extra, sizeof(env_extra));
    assert_int_equal(ke_tp_start_log(&c->ctl, argv, c->ctl_log), 0);
    char line[128];
    assert_int_equal(ke_tp_wait_line(&c->ctl, "ready ", 20000, line, sizeof(line)), 0);
    assert_true(sscanf(line, "ready grpc=%d http=%d", &c->ctl_port, &c->ctl_http_port) >= 2);
    c->ctl_running = 1;
}

void ke_cluster_start_controllers(ke_cluster *c)
{
    char listen[64] = "127.0.0.1:0";
    if (c->ctl_port)
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", c->ctl_port);
    ctl_open(c, listen);
    if (!c->ctl_admin) {
        char ca[128], cert[128], key[128], target[64];
        snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", c->dir);
        snprintf(cert, sizeof(cert), "%s/cloud/admin.crt", c->dir);
        snprintf(key, sizeof(key), "%s/cloud/admin.key", c->dir);
        snprintf(target, sizeof(target), "127.0.0.1:%d", c->ctl_port);
        ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
        ke_rpc_channel_opts o = {.tls = &tls};
        assert_int_equal(ke_rpc_channel_new(c->loop, target, &o, &c->ctl_admin), 0);
    }
    c->api = c->ctl_admin;
}

void ke_cluster_kill_controllers(ke_cluster *c)
{
    kill(c->ctl.pid, SIGKILL);
    assert_int_equal(ke_tp_wait_exit(&c->ctl, 10000), 128 + SIGKILL);
    c->ctl_running = 0;
}

void ke_cluster_kill_cloud(ke_cluster *c)
{
    kill(c->cloud.pid, SIGKILL);
    assert_int_equal(ke_tp_wait_exit(&c->cloud, 10000), 128 + SIGKILL);
}

long long ke_edge_outbox_pending(ke_edge *e)
{
    Ke__V1__EdgeListReply *r = ke_edge_list(e);
    if (!r)
        return -1;
    long long n = (long long)r->outbox_pending;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return n;
}

void ke_cluster_restart_cloud(ke_cluster *c, const char *const *extra)
{
    ke_rpc_channel_free(c->admin);
    assert_int_equal(ke_tp_stop(&c->cloud), 0);
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", c->grpc_port);
    start_cloud(c, listen, extra);
    open_admin(c);
    if (!c->split)
        c->api = c->admin;
}

void ke_cluster_kill_restart_cloud(ke_cluster *c, const char *const *extra)
{
    ke_rpc_channel_free(c->admin);
    c->admin = NULL;
    kill(c->cloud.pid, SIGKILL);
    assert_int_equal(ke_tp_wait_exit(&c->cloud, 10000), 128 + SIGKILL);
    ke_cluster_start_cloud(c, extra);
}

void ke_cluster_stop_cloud(ke_cluster *c)
{
    ke_rpc_channel_free(c->admin);
    c->admin = NULL;
    assert_int_equal(ke_tp_stop(&c->cloud), 0);
}

void ke_cluster_start_cloud(ke_cluster *c, const char *const *extra)
{
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", c->grpc_port);
    start_cloud(c, listen, extra);
    if (!c->admin)
        open_admin(c);
    if (!c->split)
        c->api = c->admin;
}

void ke_cluster_stop(ke_cluster *c)
{
    ke_rpc_channel_free(c->admin);
    ke_rpc_channel_free(c->ctl_admin);
    ke_rpc_loop_free(c->loop);
    int ctl_rc = c->ctl_running ? ke_tp_stop(&c->ctl) : 0;
    int rc = ke_tp_stop(&c->cloud);
    if (getenv("KE_KEEP_TMP") == NULL)
        ke_tp_sh("rm -rf %s", c->dir);
    assert_int_equal(rc, 0);
    assert_int_equal(ctl_rc, 0);
}

const char *ke_cluster_token(ke_cluster *c)
{
    static char token[256];
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s gettoken --dir %s/cloud", ke_tp_env("KE_KEADM"), c->dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(token, sizeof(token), p));
    pclose(p);
    token[strcspn(token, "\n")] = '\0';
    return token;
}

int ke_cluster_join(ke_cluster *c, const char *node, const char *token)
{
    return ke_tp_sh("%s join --cloudhub 127.0.0.1:%d --token %s --node-name %s --dir %s/%s "
                    ">/dev/null 2>%s/%s.join.log",
                    ke_tp_env("KE_KEADM"), c->grpc_port, token, node, c->dir, node, c->dir,
                    node);
}

void ke_edge_start(ke_cluster *c, ke_edge *e, const char *node, int server_port,
                   const char *const *extra)
{
    char config[200], server[64];
    char *argv[32];
    int n = 0;
    snprintf(e->node, sizeof(e->node), "%s", node);
    snprintf(e->dir, sizeof(e->dir), "%s/%s", c->dir, node);
    snprintf(e->log, sizeof(e->log), "%s/%s.edgecore.log", c->dir, node);
    snprintf(config, sizeof(config), "%s/edgecore.yaml", e->dir);
    snprintf(server, sizeof(server), "--edgehub.server=127.0.0.1:%d", server_port);
    argv[n++] = (char *)ke_tp_env("KE_EDGECORE");
    argv[n++] = "--config";
    argv[n++] = config;
    argv[n++] = server;
    argv[n++] = "--http.listen=";
    argv[n++] = "--metamanager.audit=true";
    argv[n++] = "--edgehub.backoff_initial=50ms";
    argv[n++] = "--edgehub.backoff_max=500ms";
    /* no container runtime unless a test brings one (and turns Edged on) */
    argv[n++] = "--modules.edged.enable=false";
    /* no MQTT broker unless a test brings one (and turns EventBus on) */
    argv[n++] = "--modules.eventbus.enable=false";
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    assert_int_equal(ke_tp_start_log(&e->proc, argv, e->log), 0);
    char line[256];
    assert_int_equal(ke_tp_wait_line(&e->proc, "ready ", 20000, line, sizeof(line)), 0);
    const char *hp = strstr(line, " http=");
    e->http_port = hp ? atoi(hp + 6) : 0;
    e->running = 1;
    if (!e->local) {
        char target[220];
        snprintf(target, sizeof(target), "unix:%s/edgecore.sock", e->dir);
        assert_int_equal(ke_rpc_channel_new(c->loop, target, NULL, &e->local), 0);
    }
}

void ke_edge_kill(ke_edge *e)
{
    kill(e->proc.pid, SIGKILL);
    assert_int_equal(ke_tp_wait_exit(&e->proc, 10000), 128 + SIGKILL);
    e->running = 0;
}

void ke_edge_stop(ke_edge *e)
{
    if (e->running)
        assert_int_equal(ke_tp_stop(&e->proc), 0);
    e->running = 0;
    ke_rpc_channel_free(e->local);
    e->local = NULL;
}

static Ke__V1__Message *build_msg(Ke__V1__Message *m, Ke__V1__MessageHeader *h, Ke__V1__Route *r,
                                  const char *key, uint64_t rv, Ke__V1__Operation op,
                                  const char *group, const char *content)
{
    ke__v1__message__init(m);
    ke__v1__message_header__init(h);
    ke__v1__route__init(r);
    h->resource_version = rv;
    r->source = "test";
    r->group = (char *)group;
    r->operation = op;
    r->resource = (char *)key;
    m->header = h;
    m->route = r;
    m->content.data = (uint8_t *)content;
    m->content.len = content ? strlen(content) : 0;
    return m;
}

int ke_cluster_publish(ke_cluster *c, const char *node, const char *key, uint64_t rv,
                       Ke__V1__Operation op, const char *content)
{
    Ke__V1__Message m;
    Ke__V1__MessageHeader h;
    Ke__V1__Route r;
    Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
    req.node_name = (char *)node;
    req.message = build_msg(&m, &h, &r, key, rv, op, "resource", content);
    ke_rpc_stub hub = {c->admin, &ke__v1__hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&hub, "Publish", &req.base, &o, &reply, &st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

int ke_edge_report(ke_edge *e, const char *key, uint64_t rv, const char *group,
                   const char *content)
{
    return ke_edge_report_op(e, key, rv, group, KE__V1__OPERATION__OPERATION_UPLOAD, content);
}

int ke_edge_report_op(ke_edge *e, const char *key, uint64_t rv, const char *group,
                      Ke__V1__Operation op, const char *content)
{
    Ke__V1__Message m;
    Ke__V1__MessageHeader h;
    Ke__V1__Route r;
    Ke__V1__ReportRequest req = KE__V1__REPORT_REQUEST__INIT;
    req.message = build_msg(&m, &h, &r, key, rv, op, group, content);
    ke_rpc_stub local = {e->local, &ke__v1__edge_local__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&local, "Report", &req.base, &o, &reply, &st), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    return st.code;
}

Ke__V1__EdgeListReply *ke_edge_list(ke_edge *e)
{
    Ke__V1__EdgeListRequest req = KE__V1__EDGE_LIST_REQUEST__INIT;
    req.prefix = "";
    ke_rpc_stub local = {e->local, &ke__v1__edge_local__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    if (ke_rpc_stub_unary(&local, "List", &req.base, &o, &reply, &st) != 0 ||
        st.code != KE_RPC_OK)
        return NULL;
    return (Ke__V1__EdgeListReply *)reply;
}

static long long metric_once(ke_cluster *c, const char *series);

long long ke_cluster_metric(ke_cluster *c, const char *series)
{
    /* A scrape that comes back empty (curl error) is retried, and said. */
    for (int i = 0; i < 3; i++) {
        long long v = metric_once(c, series);
        if (v >= 0)
            return v;
        fprintf(stderr, "ke_cluster_metric: %s absent from /metrics (attempt %d)\n", series,
                i + 1);
    }
    return -1;
}

static long long metric_once(ke_cluster *c, const char *series)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "curl -sS --max-time 10 http://127.0.0.1:%d/metrics", c->http_port);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[512];
    long long v = -1;
    size_t n = strlen(series);
    while (fgets(line, sizeof(line), p))
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = atoll(line + n + 1);
    pclose(p);
    return v;
}

int ke_cluster_node_connected(ke_cluster *c, const char *node)
{
    Ke__V1__ListNodesRequest req = KE__V1__LIST_NODES_REQUEST__INIT;
    ke_rpc_stub hub = {c->admin, &ke__v1__hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&hub, "ListNodes", &req.base, &o, &reply, &st), 0);
    assert_int_equal(st.code, KE_RPC_OK);
    Ke__V1__ListNodesReply *r = (Ke__V1__ListNodesReply *)reply;
    int found = -1;
    for (size_t i = 0; i < r->n_nodes; i++)
        if (strcmp(r->nodes[i]->name, node) == 0)
            found = r->nodes[i]->connected ? 1 : 0;
    protobuf_c_message_free_unpacked(reply, NULL);
    return found;
}

int ke_file_contains(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

int ke_file_wait_contains(const char *path, const char *text, int64_t timeout_ms)
{
    int64_t until = ke_time_mono_ms() + timeout_ms;
    while (!ke_file_contains(path, text)) {
        if (ke_time_mono_ms() > until)
            return 0;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 1;
}

int ke_ec_apply(ke_rpc_channel *ch, const char *json, ke_rpc_status *st)
{
    Ke__V1__ApplyRequest req = KE__V1__APPLY_REQUEST__INIT;
    req.object_json.data = (uint8_t *)json;
    req.object_json.len = strlen(json);
    ke_rpc_stub ec = {ch, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status s;
    ke_rpc_call_opts o = {.timeout_ms = 20000};
    assert_int_equal(ke_rpc_stub_unary(&ec, "Apply", &req.base, &o, &reply, &s), 0);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (st)
        *st = s;
    return s.code;
}

void ke_cluster_apply_ok(ke_cluster *c, const char *json)
{
    int64_t until = ke_time_mono_ms() + 30000;
    ke_rpc_status st;
    int code;
    while ((code = ke_ec_apply(c->api, json, &st)) != KE_RPC_OK && ke_time_mono_ms() < until) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL); /* a Node object may not be there yet */
    }
    if (code != KE_RPC_OK)
        fail_msg("apply %.80s: %s %s", json, ke_rpc_status_name(code), st.message);
}

ke_rpc_channel *ke_cluster_channel(ke_cluster *c, const char *cert, const char *key)
{
    char target[64], ca[160];
    snprintf(target, sizeof(target), "127.0.0.1:%d", c->grpc_port);
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", c->dir);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    ke_rpc_channel *ch = NULL;
    assert_int_equal(ke_rpc_channel_new(c->loop, target, &o, &ch), 0);
    return ch;
}

void ke_cluster_kectl(ke_cluster *c, char *buf, size_t len)
{
    snprintf(buf, len,
             "%s/tools/kectl --server 127.0.0.1:%d --ca %s/cloud/ca.crt --cert "
             "%s/cloud/admin.crt --key %s/cloud/admin.key",
             ke_tp_env("KE_BIN_DIR"), c->grpc_port, c->dir, c->dir, c->dir);
}

json_t *ke_ec_get(ke_rpc_channel *ch, const char *kind, const char *ns, const char *name,
                  ke_rpc_status *st)
{
    Ke__V1__ObjectRef ref = KE__V1__OBJECT_REF__INIT;
    ref.kind = (char *)kind;
    ref.namespace_ = (char *)(ns ? ns : "");
    ref.name = (char *)name;
    ke_rpc_stub ec = {ch, &ke__v1__edge_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status s;
    ke_rpc_call_opts o = {.timeout_ms = 20000};
    assert_int_equal(ke_rpc_stub_unary(&ec, "Get", &ref.base, &o, &reply, &s), 0);
    if (st)
        *st = s;
    if (s.code != KE_RPC_OK) {
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        return NULL;
    }
    Ke__V1__ObjectReply *r = (Ke__V1__ObjectReply *)reply;
    json_t *obj = json_loadb((const char *)r->object_json.data, r->object_json.len, 0, NULL);
    protobuf_c_message_free_unpacked(reply, NULL);
    return obj;
}

void ke_dc_set_desired(ke_rpc_channel *ch, const char *ns, const char *name, const char *prop,
                       const char *value)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    Ke__V1__SetDesiredRequest r = KE__V1__SET_DESIRED_REQUEST__INIT;
    r.device = &ref;
    r.property = (char *)prop;
    r.value = (char *)value;
    ke_rpc_stub stub = {ch, &ke__v1__device_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    assert_int_equal(ke_rpc_stub_unary(&stub, "SetDesired", &r.base, NULL, &reply, &st), 0);
    if (st.code != KE_RPC_OK)
        fail_msg("SetDesired %s=%s: %s", prop, value, st.message);
    protobuf_c_message_free_unpacked(reply, NULL);
}

Ke__V1__TwinReply *ke_dc_get_twin(ke_rpc_channel *ch, const char *ns, const char *name)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    ke_rpc_stub stub = {ch, &ke__v1__device_controller__descriptor};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    if (ke_rpc_stub_unary(&stub, "GetTwin", &ref.base, NULL, &reply, &st) != 0 ||
        st.code != KE_RPC_OK) {
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
        return NULL;
    }
    return (Ke__V1__TwinReply *)reply;
}
