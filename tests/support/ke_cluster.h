/*
 * ke_cluster.h — a real kubeedge-c cluster for integration tests, on
 * loopback: `keadm init` into a temp dir, cloudcore (CloudHub on), nodes
 * joined with `keadm gettoken` + `keadm join`, edgecore processes, and
 * clients: the Hub API as system:admin, EdgeLocal over each edge's socket.
 * Everything started is stopped and removed by ke_cluster_stop.
 */
#ifndef KE_CLUSTER_H
#define KE_CLUSTER_H

#include "cloudhub.pb-c.h"
#include "devicecontroller.pb-c.h"
#include "edge.pb-c.h"
#include "ke_rpc.h"
#include "ke_testproc.h"

#include <jansson.h>
#include <stdint.h>

typedef struct ke_cluster {
    char dir[64];
    char cloud_log[128];
    char cloud_bin[512]; /* the cloud program: KE_CLOUDCORE, or cloudhub when split */
    ke_tp cloud;
    int grpc_port, http_port;
    int kubeapi_port; /* the Kubernetes API gateway's port; 0 when not serving */
    ke_rpc_loop *loop;
    ke_rpc_channel *admin; /* Hub API (and, in one process, every API), as system:admin */
    /* split mode: the `edgecontroller` program beside the `cloudhub` one */
    int split, ctl_running;
    ke_tp ctl;
    int ctl_port, ctl_http_port;
    char ctl_log[128];
    ke_rpc_channel *ctl_admin;
    ke_rpc_channel *api; /* EdgeController/DeviceController API: admin or ctl_admin */
} ke_cluster;

typedef struct ke_edge {
    char node[64];
    char dir[160];
    char log[200];
    ke_tp proc;
    int running;
    int http_port;         /* /healthz and /metrics, when started with --http.listen; else 0 */
    ke_rpc_channel *local; /* EdgeLocal */
} ke_edge;

/* ke_cluster_start: keadm init + cloudcore with extra flags (NULL-terminated
 * or NULL), plus the flags in the environment variable KE_CLOUD_EXTRA
 * (space-separated; how a suite runs again with, say, --grpc.threads=1).
 * Fails the test on error. */
void ke_cluster_start(ke_cluster *c, const char *const *extra);

/* ke_cluster_start_split: the same cluster with the cloud split in two
 * processes, as deployed apart: `cloudhub` (CloudHub alone) and
 * `edgecontroller` (both controllers, their own store file, reaching the
 * hub over mutual TLS as system:admin). c->api reaches the controllers. */
void ke_cluster_start_split(ke_cluster *c, const char *const *extra);

/* ke_cluster_kill_cloud SIGKILLs the cloud process (cloudcore, or cloudhub
 * when split), keeping the admin channel (it reconnects); start it again
 * with ke_cluster_start_cloud. */
void ke_cluster_kill_cloud(ke_cluster *c);

/* Split mode: SIGKILL / start again the edgecontroller process. */
void ke_cluster_kill_controllers(ke_cluster *c);
void ke_cluster_start_controllers(ke_cluster *c);

/* ke_edge_outbox_pending returns how many reports the edge's outbox holds
 * unacknowledged (EdgeLocal.List), or -1. */
long long ke_edge_outbox_pending(ke_edge *e);

/* ke_cluster_restart_cloud stops cloudcore (SIGTERM) and starts it again on
 * the same port and database. */
void ke_cluster_restart_cloud(ke_cluster *c, const char *const *extra);

/* ke_cluster_kill_restart_cloud SIGKILLs cloudcore (no shutdown at all)
 * and starts it again on the same port and database. */
void ke_cluster_kill_restart_cloud(ke_cluster *c, const char *const *extra);

/* ke_cluster_stop_cloud stops cloudcore (SIGTERM, asserting exit 0) so a
 * test can open its database; ke_cluster_start_cloud starts it again on
 * the same port and files, with extra flags (and reopens the admin
 * channel when it was closed). */
void ke_cluster_stop_cloud(ke_cluster *c);
void ke_cluster_start_cloud(ke_cluster *c, const char *const *extra);

void ke_cluster_stop(ke_cluster *c);

/* ke_cluster_token returns a fresh join token (static buffer). */
const char *ke_cluster_token(ke_cluster *c);

/* ke_cluster_join runs keadm join for node into <dir>/<node>; returns
 * keadm's exit code; its stderr goes to <dir>/<node>.join.log. */
int ke_cluster_join(ke_cluster *c, const char *node, const char *token);

/* ke_edge_start starts edgecore for a joined node, connecting to
 * 127.0.0.1:server_port (the cloud or a proxy), with extra flags. Waits
 * for its ready line and opens an EdgeLocal channel. */
void ke_edge_start(ke_cluster *c, ke_edge *e, const char *node, int server_port,
                   const char *const *extra);

/* ke_edge_kill sends SIGKILL; ke_edge_stop SIGTERM (asserting exit 0). */
void ke_edge_kill(ke_edge *e);
void ke_edge_stop(ke_edge *e);

/* ke_cluster_publish publishes one message through Hub.Publish; returns the
 * status code. */
int ke_cluster_publish(ke_cluster *c, const char *node, const char *key, uint64_t rv,
                       Ke__V1__Operation op, const char *content);

/* ke_edge_report sends one report through EdgeLocal.Report; returns the
 * status code. */
int ke_edge_report(ke_edge *e, const char *key, uint64_t rv, const char *group,
                   const char *content);

/* ke_edge_report_op is ke_edge_report with another operation (a DELETE
 * confirms a pod is gone). */
int ke_edge_report_op(ke_edge *e, const char *key, uint64_t rv, const char *group,
                      Ke__V1__Operation op, const char *content);

/* ke_edge_list returns EdgeLocal.List (free with
 * protobuf_c_message_free_unpacked), or NULL. */
Ke__V1__EdgeListReply *ke_edge_list(ke_edge *e);

/* ke_dc_set_desired sets a desired value through DeviceController.SetDesired
 * on ch; fails the test when it is refused. */
void ke_dc_set_desired(ke_rpc_channel *ch, const char *ns, const char *name, const char *prop,
                       const char *value);

/* ke_dc_get_twin returns DeviceController.GetTwin of the device (free with
 * protobuf_c_message_free_unpacked), or NULL when the call fails. */
Ke__V1__TwinReply *ke_dc_get_twin(ke_rpc_channel *ch, const char *ns, const char *name);

/* ke_cluster_metric reads one series from cloudcore's /metrics; -1 if absent. */
long long ke_cluster_metric(ke_cluster *c, const char *series);

/* ke_cluster_node_connected asks Hub.ListNodes: 1 connected, 0 not, -1 unknown. */
int ke_cluster_node_connected(ke_cluster *c, const char *node);

/* ke_ec_apply applies an object (JSON text) through EdgeController.Apply on
 * ch (c->api: the cluster's administrator). Returns the status code; *st
 * (may be NULL) gets the whole status. */
int ke_ec_apply(ke_rpc_channel *ch, const char *json, ke_rpc_status *st);

/* ke_cluster_apply_ok applies an object through c->api, retrying for 30 s
 * while it is refused (a Node object it needs may not be there yet); fails
 * the test with the last status otherwise. */
void ke_cluster_apply_ok(ke_cluster *c, const char *json);

/* ke_cluster_channel opens a channel to c's gRPC port with the cluster's CA
 * and the client certificate cert/key (the caller frees it); fails the test
 * on error. */
ke_rpc_channel *ke_cluster_channel(ke_cluster *c, const char *cert, const char *key);

/* ke_cluster_kectl writes into buf the kectl command line (KE_BIN_DIR's)
 * that speaks to c as the administrator, for ke_tp_capture and the like. */
void ke_cluster_kectl(ke_cluster *c, char *buf, size_t len);

/* ke_ec_get reads one object through EdgeController.Get on ch: the object
 * (json_decref it), or NULL with the status in *st (may be NULL). */
json_t *ke_ec_get(ke_rpc_channel *ch, const char *kind, const char *ns, const char *name,
                  ke_rpc_status *st);

/* ke_file_contains returns 1 when the file holds the text. */
int ke_file_contains(const char *path, const char *text);

/* ke_file_wait_contains polls the file (a log being written) until it holds
 * the text or timeout_ms passes; returns 1 when it does. */
int ke_file_wait_contains(const char *path, const char *text, int64_t timeout_ms);

#endif
