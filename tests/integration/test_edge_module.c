/*
 * test_edge_module.c — a module written only against edgecore's public
 * module interface (runtime/ke_rt.h) is enough for a real module: it
 * receives the cloud's messages of its group and sends reports that reach
 * the cloud's store.
 *
 * cloudcore runs as its own process (ke_cluster); the edge runtime runs in
 * this process (tests/support/edge) with MetaManager, EdgeHub and the test
 * module "probe" (group "probe"). The cloud publishes one message of group
 * "probe" and one of group "resource"; the probe sees only its own, and
 * answers with a report of pod p-0's status carrying the value it was
 * sent, which EdgeController writes into its store: the test reads it
 * there, as a user would with kectl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "edgecontroller.pb-c.h"
#include "ke_cluster.h"
#include "ke_edgetest.h"
#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_time.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODE "edge-1"

/* ---- the probe module (this test's; not shipped) ---- */

static atomic_int probe_messages;   /* messages the probe received */
static atomic_int probe_foreign;    /* of them, not of its group */
static atomic_int probe_reports;    /* reports MetaManager queued for it */
static atomic_int probe_errors;     /* what went wrong on the loop (no cmocka
                                     * assertion there: not the test's thread) */

static void probe_on_message(ke_module *m, Ke__V1__Message *msg)
{
    ke_rt *e = ke_module_rt(m);
    if (msg->route->operation == KE__V1__OPERATION__OPERATION_RESPONSE) {
        json_t *a = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
        if (json_object_get(a, "seq") && !json_object_get(a, "error"))
            atomic_fetch_add(&probe_reports, 1);
        else
            atomic_fetch_add(&probe_errors, 1);
        json_decref(a);
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    atomic_fetch_add(&probe_messages, 1);
    if (strcmp(msg->route->group, "probe") != 0)
        atomic_fetch_add(&probe_foreign, 1);
    json_t *in = json_loadb((const char *)msg->content.data, msg->content.len, 0, NULL);
    long long n = json_integer_value(json_object_get(in, "n"));
    json_decref(in);
    char status[96];
    snprintf(status, sizeof(status), "{\"phase\":\"Running\",\"n\":%lld}", n);
    Ke__V1__Message *r =
        ke_rt_message_new("probe", "podstatus", KE__V1__OPERATION__OPERATION_UPLOAD,
                            "node/" NODE "/default/Pod/p-0", status, strlen(status));
    if (!r) {
        atomic_fetch_add(&probe_errors, 1);
    } else {
        r->header->resource_version = (uint64_t)n + 1;
        r->header->sync = 1;
        /* Reports go to MetaManager by name; route.group names the cloud's
         * consumers of it ("podstatus": EdgeController). */
        if (ke_rt_message_set_id(r, "probe-1") != 0 || ke_rt_send_to(e, "metamanager", r) != 0) {
            atomic_fetch_add(&probe_errors, 1);
            ke__v1__message__free_unpacked(r, NULL);
        }
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static const ke_module_ops probe_module = {
    .name = "probe",
    .group = "probe",
    .on_message = probe_on_message,
};

/* ---- the cloud side ---- */

/* pod_n reads status.n of pod p-0 from EdgeController's store (-1: none). */
static long long pod_n(ke_cluster *c)
{
    json_t *pod = ke_ec_get(c->api, "Pod", "default", "p-0", NULL);
    json_t *v = json_object_get(json_object_get(pod, "status"), "n");
    long long n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(pod);
    return n;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_a_module_on_the_public_interface_gets_its_group_and_reports(void **state)
{
    (void)state;
    ke_cluster c;
    ke_cluster_start(&c, NULL);
    assert_int_equal(ke_cluster_join(&c, NODE, ke_cluster_token(&c)), 0);

    char ca[160], crt[160], key[160], db[160], server[64];
    snprintf(ca, sizeof(ca), "%s/%s/ca.crt", c.dir, NODE);
    snprintf(crt, sizeof(crt), "%s/%s/node.crt", c.dir, NODE);
    snprintf(key, sizeof(key), "%s/%s/node.key", c.dir, NODE);
    snprintf(db, sizeof(db), "%s/%s/probe.db", c.dir, NODE);
    snprintf(server, sizeof(server), "127.0.0.1:%d", c.grpc_port);
    edgehub_config hc = {.node_name = NODE,
                         .server = server,
                         .ca_file = ca,
                         .cert_file = crt,
                         .key_file = key,
                         .agent_version = "test",
                         .keepalive_ms = 1000,
                         .backoff_initial_ms = 50,
                         .backoff_max_ms = 500};
    ke_edgetest edge;
    ke_edgetest_start(&edge, db, c.loop, &hc, &probe_module, NULL);
    /* A pod can be bound to the node once its Node object exists (edgecore
     * reports the node status that makes it; this runtime has only the
     * modules the test names, so the test makes it). */
    assert_int_equal(ke_ec_apply(c.api, "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":"
                               "{\"name\":\"" NODE "\"}}", NULL),
                     KE_RPC_OK);
    const char *pod = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p-0\","
                      "\"namespace\":\"default\"},\"spec\":{\"nodeName\":\"" NODE "\","
                      "\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}";
    int64_t until = ke_time_mono_ms() + 30000;
    int code;
    while ((code = ke_ec_apply(c.api, pod, NULL)) != KE_RPC_OK && ke_time_mono_ms() < until)
        pause_ms(20);
    assert_int_equal(code, KE_RPC_OK);

    /* One message of another group (MetaManager keeps it; nobody serves
     * "resource" here), then the probe's. */
    const char *cm = "{\"kind\":\"Widget\"}";
    assert_int_equal(ke_hub_publish(c.admin, NODE, "node/" NODE "/default/Widget/other",
                                    KE__V1__OPERATION__OPERATION_UPDATE, "resource", cm,
                                    strlen(cm), 1, 0),
                     0);
    const char *probe = "{\"n\":41}";
    assert_int_equal(ke_hub_publish(c.admin, NODE, "node/" NODE "/default/Probe/p",
                                    KE__V1__OPERATION__OPERATION_UPDATE, "probe", probe,
                                    strlen(probe), 1, 0),
                     0);

    /* The probe's report is in EdgeController's store: through MetaManager's
     * outbox, EdgeHub, CloudHub's log and the controller. */
    until = ke_time_mono_ms() + 30000;
    long long n = -1;
    while ((n = pod_n(&c)) != 41 && ke_time_mono_ms() < until)
        pause_ms(20);
    if (n != 41)
        fail_msg("pod p-0 status.n is %lld, want 41 (probe: %d messages, %d foreign, %d reports "
                 "queued, %d errors)",
                 n, atomic_load(&probe_messages), atomic_load(&probe_foreign),
                 atomic_load(&probe_reports), atomic_load(&probe_errors));
    assert_int_equal(atomic_load(&probe_errors), 0);
    assert_int_equal(atomic_load(&probe_messages), 1);
    assert_int_equal(atomic_load(&probe_foreign), 0);
    assert_int_equal(atomic_load(&probe_reports), 1);
    /* Both messages are in the edge store (MetaManager applied them). */
    assert_int_equal(ke_edgetest_get(&edge, "node/" NODE "/default/Probe/p"), 1);
    assert_int_equal(ke_edgetest_get(&edge, "node/" NODE "/default/Widget/other"), 1);

    ke_edgetest_stop(&edge);
    ke_cluster_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_module_on_the_public_interface_gets_its_group_and_reports),
    };
    return cmocka_run_group_tests_name("edge/module", tests, NULL, NULL);
}
