/*
 * test_tunnel_admission.c — CloudHub's admission control of Tunnel Hellos
 * (cloudhub.hello_concurrency) and TLS session resumption on reconnects:
 *   - with the bound at 1 and one stream holding the slot (a Hello whose
 *     digest never ends), another node's Hello gets a fatal Refusal with a
 *     retry_after_ms and the stream ends RESOURCE_EXHAUSTED, counted in
 *     ke_cloudhub_hello_refused_total;
 *   - edgecores started meanwhile are refused, wait at least the
 *     retry_after they were given (their log says so), and all connect once
 *     the slot is free; the slot count returns to 0;
 *   - their reconnects resume the TLS session of the refused connection
 *     (ke_cloudhub_tls_resumed_total), and a resumed session still carries
 *     the node's client certificate: the node is identified and connected;
 *   - cloudcore raises its open-files soft limit to the hard one at start
 *     and says it; when connections exhaust the limit anyway, grpc stops
 *     accepting for good (grpc 1.51 does not retry an EMFILE accept) and
 *     /healthz turns 503 naming it, so a supervisor restarts cloudcore.
 * Real processes: keadm, cloudcore, edgecore; the raw tunnels are libke rpc.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cloudhub.pb-c.h"
#include "ke_cluster.h"
#include "ke_err.h"
#include "ke_pki.h"
#include "ke_time.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define N_EDGES 3
#define WAIT_MS 30000

static ke_cluster C;

static int setup(void **state)
{
    (void)state;
    static const char *const extra[] = {"--cloudhub.hello_concurrency=1", NULL};
    ke_cluster_start(&C, extra);
    assert_int_equal(ke_cluster_join(&C, "holder", ke_cluster_token(&C)), 0);
    for (int i = 1; i <= N_EDGES; i++) {
        char node[32];
        snprintf(node, sizeof(node), "edge-%d", i);
        assert_int_equal(ke_cluster_join(&C, node, ke_cluster_token(&C)), 0);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ke_cluster_stop(&C);
    return 0;
}

/* ---- a raw tunnel ---- */

typedef struct tunnel {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hello_ack, closed, refusals, fatal;
    uint32_t retry_after_ms;
    char reason[256];
    ke_rpc_status st;
    ke_rpc_channel *ch;
    ke_rpc_call *call;
} tunnel;

static void t_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    (void)call;
    tunnel *t = ud;
    const Ke__V1__CloudFrame *f = (const Ke__V1__CloudFrame *)m;
    pthread_mutex_lock(&t->mu);
    if (f->frame_case == KE__V1__CLOUD_FRAME__FRAME_HELLO_ACK)
        t->hello_ack = 1;
    if (f->frame_case == KE__V1__CLOUD_FRAME__FRAME_REFUSAL) {
        t->refusals++;
        t->fatal = f->refusal->fatal;
        t->retry_after_ms = f->refusal->retry_after_ms;
        snprintf(t->reason, sizeof(t->reason), "%s", f->refusal->reason);
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void t_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    tunnel *t = ud;
    pthread_mutex_lock(&t->mu);
    t->st = *st;
    t->closed = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* t_wait waits (at most 15 s) until *flag is set or the stream closed. */
static int t_wait(tunnel *t, int *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 15;
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    while (!*flag && !t->closed && rc == 0)
        rc = pthread_cond_timedwait(&t->cv, &t->mu, &until);
    int got = *flag;
    pthread_mutex_unlock(&t->mu);
    return got;
}

/* t_open connects as node (its own certificate) and sends a Hello; with
 * digest_follows and no chunk after it, the Hello never completes. */
static void t_open(tunnel *t, const char *node, int digest_follows)
{
    static const ke_rpc_handler h = {.on_message = t_message, .on_close = t_close};
    char ca[128], cert[160], key[160], target[64];
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    snprintf(ca, sizeof(ca), "%s/cloud/ca.crt", C.dir);
    snprintf(cert, sizeof(cert), "%s/%s/node.crt", C.dir, node);
    snprintf(key, sizeof(key), "%s/%s/node.key", C.dir, node);
    snprintf(target, sizeof(target), "127.0.0.1:%d", C.grpc_port);
    ke_rpc_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    ke_rpc_channel_opts o = {.tls = &tls};
    assert_int_equal(ke_rpc_channel_new(C.loop, target, &o, &t->ch), 0);
    ke_rpc_stub stub = {t->ch, &ke__v1__cloud_hub__descriptor};
    ke_rpc_call_opts co = {.timeout_ms = 60000};
    assert_int_equal(ke_rpc_stub_start(&stub, "Tunnel", &h, t, &co, &t->call), 0);
    Ke__V1__Hello hello = KE__V1__HELLO__INIT;
    Ke__V1__EdgeFrame f = KE__V1__EDGE_FRAME__INIT;
    hello.node_name = (char *)node;
    hello.agent_version = "test";
    hello.digest_follows = digest_follows;
    f.frame_case = KE__V1__EDGE_FRAME__FRAME_HELLO;
    f.hello = &hello;
    assert_int_equal(ke_rpc_call_send(t->call, &f.base), 0);
}

static void t_free(tunnel *t)
{
    ke_rpc_call_cancel(t->call);
    t_wait(t, &t->closed);
    ke_rpc_call_unref(t->call);
    ke_rpc_channel_free(t->ch);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* metric_wait polls cloudcore's /metrics until series reaches (op '>')
 * more than, or (op '=') exactly, want; returns its last value. */
static long long metric_wait(const char *series, char op, long long want)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    long long v;
    for (;;) {
        v = ke_cluster_metric(&C, series);
        if ((op == '>' && v > want) || (op == '=' && v == want) || ke_time_mono_ms() > until)
            return v;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* a poll of an effect, bounded by the deadline */
    }
}

static int connected_wait(const char *node)
{
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (ke_cluster_node_connected(&C, node) != 1) {
        if (ke_time_mono_ms() > until)
            return 0;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* ---- the test ---- */

static void test_hellos_past_the_bound_are_refused_with_retry_after_and_all_connect(void **state)
{
    (void)state;
    /* "holder" takes the only slot: its digest never ends. */
    tunnel holder;
    t_open(&holder, "holder", 1);
    assert_int_equal(metric_wait("ke_cloudhub_hello_admitting", '=', 1), 1);

    /* Another node's Hello is refused: fatal, with a retry_after. */
    tunnel late;
    t_open(&late, "edge-1", 0);
    assert_true(t_wait(&late, &late.closed));
    assert_int_equal(late.hello_ack, 0);
    assert_int_equal(late.refusals, 1);
    assert_true(late.fatal);
    assert_true(late.retry_after_ms >= 100 && late.retry_after_ms <= 60000);
    assert_non_null(strstr(late.reason, "cloudhub.hello_concurrency=1"));
    assert_int_equal(late.st.code, KE_RPC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(late.st.message, "retry after"));
    t_free(&late);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_hello_refused_total") >= 1);

    /* Edgecores started now are refused while the slot is held, and wait
     * at least what they were told. */
    static ke_edge E[N_EDGES];
    for (int i = 0; i < N_EDGES; i++) {
        char node[32];
        snprintf(node, sizeof(node), "edge-%d", i + 1);
        ke_edge_start(&C, &E[i], node, C.grpc_port, NULL);
    }
    for (int i = 0; i < N_EDGES; i++)
        assert_true(ke_file_wait_contains(E[i].log, "cloudhub asked retry_after_ms=", WAIT_MS));
    assert_int_equal(ke_cluster_node_connected(&C, "edge-1"), 0);
    long long refused = ke_cluster_metric(&C, "ke_cloudhub_hello_refused_total");
    assert_true(refused >= 1 + N_EDGES);

    /* The slot frees: every edge connects. */
    t_free(&holder);
    for (int i = 0; i < N_EDGES; i++)
        assert_true(connected_wait(E[i].node));
    assert_int_equal(metric_wait("ke_cloudhub_hello_admitting", '=', 0), 0);

    /* Each edge waited no less than it was asked to: its log line reads
     * "reconnecting after D ms (cloudhub asked retry_after_ms=R)". */
    for (int i = 0; i < N_EDGES; i++) {
        char *log = NULL;
        assert_int_equal(ke_pki_read_file(E[i].log, &log, NULL), 0);
        int lines = 0;
        for (const char *p = log; (p = strstr(p, "reconnecting after ")) != NULL; p++) {
            long long d = -1;
            unsigned r = 0;
            if (sscanf(p, "reconnecting after %lld ms (cloudhub asked retry_after_ms=%u)", &d,
                       &r) == 2) {
                assert_true(r >= 100);
                assert_true(d >= (long long)r);
                lines++;
            }
        }
        assert_true(lines >= 1);
        free(log);
    }

    /* The reconnects after a refusal resumed the refused connection's TLS
     * session, and a resumed session still identified the node (it is
     * connected as itself, through the same certificate checks). */
    print_message("refused %lld hellos; TLS: %lld resumed, %lld full handshakes\n",
                  ke_cluster_metric(&C, "ke_cloudhub_hello_refused_total"),
                  ke_cluster_metric(&C, "ke_cloudhub_tls_resumed_total"),
                  ke_cluster_metric(&C, "ke_cloudhub_tls_full_handshakes_total"));
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_tls_resumed_total") >= 1);
    assert_true(ke_cluster_metric(&C, "ke_cloudhub_tls_full_handshakes_total") >= 1);

    for (int i = 0; i < N_EDGES; i++)
        ke_edge_stop(&E[i]);
}

#define FD_LIMIT 96
#define FD_CONNS 160

static void test_an_exhausted_open_files_limit_turns_healthz_to_503(void **state)
{
    (void)state;
    /* cloudcore again, under a hard limit of FD_LIMIT open files. */
    static const char *const extra[] = {"--cloudhub.hello_concurrency=1", NULL};
    char wrapper[128], real[512];
    snprintf(wrapper, sizeof(wrapper), "%s/cloudcore-limited.sh", C.dir);
    snprintf(real, sizeof(real), "%s", C.cloud_bin);
    FILE *f = fopen(wrapper, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\nulimit -Sn 32 && ulimit -Hn %d || exit 97\nexec %s \"$@\"\n", FD_LIMIT,
            real);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(wrapper, 0755), 0);
    ke_cluster_stop_cloud(&C);
    snprintf(C.cloud_bin, sizeof(C.cloud_bin), "%s", wrapper);
    ke_cluster_start_cloud(&C, extra);
    snprintf(C.cloud_bin, sizeof(C.cloud_bin), "%s", real);
    char said[64];
    snprintf(said, sizeof(said), "open files limit %d (was 32)", FD_LIMIT);
    assert_true(ke_file_contains(C.cloud_log, said)); /* soft raised to hard */
    char *body = NULL;
    assert_int_equal(ke_tp_http_get(C.http_port, "/healthz", &body), 200);
    free(body);

    /* More TCP connections than the limit leaves: one accept fails EMFILE. */
    int fds[FD_CONNS], n = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)C.grpc_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (; n < FD_CONNS; n++) {
        fds[n] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[n] >= 0);
        assert_int_equal(connect(fds[n], (struct sockaddr *)&a, sizeof(a)), 0);
    }
    int64_t until = ke_time_mono_ms() + WAIT_MS;
    while (!ke_file_contains(C.cloud_log, "Failed accept4")) {
        if (ke_time_mono_ms() > until)
            fail_msg("no accept failure in %s with %d connections under %d open files",
                     C.cloud_log, FD_CONNS, FD_LIMIT);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    /* The connections are gone, the port is not served again: /healthz
     * says so (once cloudcore has closed them and can answer). */
    until = ke_time_mono_ms() + WAIT_MS;
    for (;;) {
        body = NULL;
        int code = ke_tp_http_get(C.http_port, "/healthz", &body);
        int named = body && strstr(body, "grpc stopped accepting connections") &&
                    strstr(body, "Too many open files");
        free(body);
        if (code == 503 && named)
            break;
        if (ke_time_mono_ms() > until)
            fail_msg("/healthz still %d without the listener's failure", code);
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* A restart under the default limit serves again. */
    ke_cluster_stop_cloud(&C);
    ke_cluster_start_cloud(&C, extra);
    body = NULL;
    assert_int_equal(ke_tp_http_get(C.http_port, "/healthz", &body), 200);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hellos_past_the_bound_are_refused_with_retry_after_and_all_connect),
        cmocka_unit_test(test_an_exhausted_open_files_limit_turns_healthz_to_503),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
