/*
 * kubeapi_internal.h — the gateway's private state, shared by its files:
 *   kubeapi.c    the server: TLS, client identity, bodies, routing
 *   discovery.c  /version, /api, /apis, group-versions, the OpenAPI documents
 *   resources.c  get, list, create, update, patch, delete, deletecollection
 *   watch.c      watch streams
 *   logs.c       pod logs through EdgeController.Logs
 *   stream.c     the queue of a streamed answer (watch, log)
 *   pb.c         protobuf request bodies (kubectl create configmap|secret|namespace)
 */
#ifndef KUBEAPI_INTERNAL_H
#define KUBEAPI_INTERNAL_H

#include "kubeapi.h"
#include "ke_k8s_rest.h"
#include "ke_rpc.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#define KA_MOD "kubeapi"

typedef struct ka_watch ka_watch;

struct kubeapi {
    kubeapi_config cfg;
    struct MHD_Daemon *d;
    char *ca, *cert, *key;
    atomic_int port; /* set once serving: requests may read it already */
    pthread_mutex_t mu; /* guards watches; taken before a stream's mu, never after */
    int mu_init;
    atomic_int stopping; /* read by stream readers holding their own mu */
    ka_watch *watches; /* open watches (a list through ka_watch.next) */
};

/* One request: its body (bounded by KUBEAPI_BODY_MAX), caller and query. */
typedef struct ka_req {
    char *body;
    size_t len, cap;
    int too_large;
    ke_rpc_identity id;
    ke_k8s_query q;
    int query_rc;
    char query_why[256];
    const char *method, *url, *accept, *content_type;
} ka_req;

/* Replies. ka_send_json sends body (stolen; NULL: out of memory → 500)
 * with a Warning header when warning is set. */
enum MHD_Result ka_send_json(struct MHD_Connection *c, unsigned code, json_t *body,
                             const char *warning);
enum MHD_Result ka_send_status(struct MHD_Connection *c, unsigned code, const char *reason,
                               const char *message, const ke_k8s_kind *k, const char *name);
/* ka_send_error answers a KE_E* error (ke_k8s_http_of) with why. */
enum MHD_Result ka_send_error(struct MHD_Connection *c, int rc, const char *why,
                              const ke_k8s_kind *k, const char *name);

enum MHD_Result ka_serve_discovery(kubeapi *ka, struct MHD_Connection *c, ka_req *r);
enum MHD_Result ka_serve_other(kubeapi *ka, struct MHD_Connection *c, ka_req *r);
enum MHD_Result ka_serve_resource(kubeapi *ka, struct MHD_Connection *c, ka_req *r);
/* ka_serve_group_version answers GET /api/v1 or /apis/G/V (an
 * APIResourceList), or /apis/G (an APIGroup); 0 when the path is not one. */
int ka_is_group_path(const char *url);
enum MHD_Result ka_serve_group(kubeapi *ka, struct MHD_Connection *c, ka_req *r);

/* The read-only CustomResourceDefinitions of the kinds of API groups of
 * their own (kubectl looks kinds up there). */
int ka_is_crd_path(const char *url);
enum MHD_Result ka_serve_crds(kubeapi *ka, struct MHD_Connection *c, ka_req *r);

/* pb.c: a body in Kubernetes' protobuf encoding into the JSON object (v1
 * ConfigMap, Secret, Namespace: what kubectl create sends). 0 and *out;
 * KE_EINVAL (not a valid body, 400) or KE_EPROTO (another kind, 415) with
 * why. */
int ka_pb_to_json(const void *body, size_t len, json_t **out, char *why, size_t wlen);

/* stream.c: a streamed answer's queue (watch.c, logs.c). The producer
 * pushes under mu; the connection's thread reads. */
struct ka_chunk;
typedef struct ka_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* monotonic */
    struct ka_chunk *head, *tail; /* under mu */
    size_t bytes, bound;          /* queued; the bound of counted pushes (0: none) */
    int ended;                    /* the producer has no more */
    kubeapi *ka;
    struct MHD_Connection *conn;
    int64_t next_poll_ms; /* the next check that the client is still there */
} ka_stream;
void ka_stream_init(ka_stream *s, kubeapi *ka, struct MHD_Connection *c, size_t bound);
void ka_stream_destroy(ka_stream *s);
/* ka_stream_push_locked queues a copy of data[0..n) (counted: against the
 * bound). 0, KE_EFULL past the bound, KE_ENOMEM. Under s->mu. */
int ka_stream_push_locked(ka_stream *s, const void *data, size_t n, int counted);
/* ka_stream_end_locked: nothing more will be pushed. Under s->mu. */
void ka_stream_end_locked(ka_stream *s);
/* The owner's say while nothing is queued, under s->mu: 1 ends the
 * answer, -1 means it pushed something, 0 waits (until *wake_ms at the
 * latest, which it may bring forward). */
typedef int (*ka_stream_idle_fn)(void *ud, int64_t now_ms, int64_t *wake_ms);
/* ka_stream_read is the content reader's body: the next bytes, or
 * MHD_CONTENT_READER_END_OF_STREAM. */
ssize_t ka_stream_read(ka_stream *s, char *buf, size_t max, ka_stream_idle_fn idle, void *ud);

/* logs.c: GET pods/NAME/log (authorized as get pods/log) */
enum MHD_Result ka_serve_log(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                             const ke_k8s_path *p, const char *ns);

/* watch.c */
enum MHD_Result ka_serve_watch(kubeapi *ka, struct MHD_Connection *c, ka_req *r,
                               const ke_k8s_path *p, const char *ns, int table);
void ka_watches_stop(kubeapi *ka);

#endif
