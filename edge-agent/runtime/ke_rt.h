/*
 * ke_rt.h — edgecore's module runtime: one libuv loop, the modules that
 * live on it, the bus between them, the edge store they share, and the
 * hand-over from the threads that are not the loop's (grpc's completion
 * queues, the HTTP server).
 *
 * Threading rule
 * --------------
 * Everything a module does runs on the loop thread: its start, stop,
 * on_message and health callbacks, its libuv timers and polls, the rpc
 * events of the calls it makes or serves through ke_rt_call_start /
 * ke_rt_serve, and closures posted with ke_rt_post. A module therefore
 * holds no lock of its own and touches the edge store (edge_store.h)
 * directly. Only ke_rt_post, ke_rt_call_sync and ke_rt_stop may be
 * called from another thread.
 *
 * The bus
 * -------
 * Modules exchange ke.v1.Messages (KubeEdge's beehive model). ke_rt_send
 * routes by route.group to the module serving that group; ke_rt_send_to
 * names the module. Delivery is asynchronous (a later turn of the loop,
 * never inside the sender's call), FIFO per receiving module, and bounded:
 * each module's queue holds at most KE_RT_QUEUE_BYTES of packed messages
 * and KE_RT_QUEUE_LEN messages; past either the send is refused with
 * KE_EFULL and counted (ke_rt_bus_dropped_total{module}). A message sent
 * successfully belongs to the bus, then to the receiver, which frees it
 * with ke__v1__message__free_unpacked(msg, NULL): build messages that way
 * (unpacked, or with malloc'd parts; ke_rt_message_new helps).
 *
 * Answers: a module that asks something of another sets header.id and
 * route.source to its own name; the answer (ke_rt_respond) goes back to
 * the module named by route.source with operation RESPONSE and
 * header.parent_id = the request's id, its content a JSON object
 * ({"error": "..."} on failure).
 *
 * Lifetime
 * --------
 * ke_rt_add registers modules before ke_rt_run; they start in that
 * order, each on the loop. ke_rt_stop (any thread: edgecore's signal
 * thread calls it on SIGTERM, after arming the shutdown deadline, so a
 * stuck loop cannot keep the process) stops them in reverse order; the runtime then keeps the loop running
 * until every rpc call started through it has delivered its on_close, calls
 * each module's destroy (reverse order), closes what is left and returns.
 */
#ifndef KE_RT_H
#define KE_RT_H

#include "edge_store.h"
#include "ke_rpc.h"
#include "message.pb-c.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Bounds of each module's bus queue, and of closures posted from other
 * threads waiting for the loop. */
#define KE_RT_QUEUE_LEN 65536
#define KE_RT_QUEUE_BYTES (16u << 20)
#define KE_RT_POST_BYTES (64u << 20)
#define KE_RT_MAX_MODULES 16
#define KE_RT_HEALTH_MAX 256

typedef struct ke_rt ke_rt;
typedef struct ke_module ke_module;

/* A module: a static table of callbacks. Every member but name may be NULL. */
typedef struct ke_module_ops {
    const char *name;  /* "edgehub": logs, metrics, modules.<name>.enable */
    const char *group; /* the bus group it serves; NULL: reached by name only */
    /* start: the runtime is up, earlier modules have started. Non-zero ends
     * edgecore (said in the log by the module). */
    int (*start)(ke_module *m);
    /* on_message: a message for this module; it owns msg. */
    void (*on_message)(ke_module *m, Ke__V1__Message *msg);
    /* health: 0 when healthy; else a one-line reason in detail. Either way
     * detail may hold a short state ("connected", "3 pending"). Called on
     * the loop once a second; /healthz shows the latest answers. */
    int (*health)(ke_module *m, char *detail, size_t cap);
    /* stop: stop working: cancel calls, stop timers, close handles. Later
     * modules have stopped. Events of calls it cancelled still arrive. */
    void (*stop)(ke_module *m);
    /* destroy: every call it made has closed; free its state. */
    void (*destroy)(ke_module *m);
} ke_module_ops;

typedef struct ke_rt_config {
    edge_store *store;      /* the edge store (owned by the caller, outlives the runtime) */
    ke_rpc_loop *rpc;       /* grpc's threads (owned by the caller) */
    const char *http_listen; /* /metrics and /healthz; NULL or "": none */
    /* on_started: every module has started (loop thread); NULL: none */
    void (*on_started)(ke_rt *e, void *arg);
    void *started_arg;
} ke_rt_config;

/* ke_rt_new makes the runtime (its loop, bus and health server). Returns
 * 0, KE_EINVAL, KE_ENOMEM, KE_EIO (the HTTP address cannot be bound). */
int ke_rt_new(const ke_rt_config *cfg, ke_rt **out);

/* ke_rt_add registers a module before ke_rt_run; config is the
 * module's own (borrowed for its life). Returns 0, KE_EEXIST (name or
 * group taken), KE_EFULL, KE_EINVAL. */
int ke_rt_add(ke_rt *e, const ke_module_ops *ops, void *config);

/* ke_rt_run starts the modules and runs the loop until ke_rt_stop (or
 * a module failed to start: KE_EIO). Returns 0 after an orderly stop. */
int ke_rt_run(ke_rt *e);

/* ke_rt_stop asks the runtime to stop. Any thread; idempotent. */
void ke_rt_stop(ke_rt *e);

/* ke_rt_http_port returns the bound health/metrics port, or 0. */
int ke_rt_http_port(const ke_rt *e);

/* ke_rt_free frees a runtime that is not running. NULL: no-op. */
void ke_rt_free(ke_rt *e);

/* ---- for modules (loop thread) ---- */

uv_loop_t *ke_rt_loop(ke_rt *e);
edge_store *ke_rt_store(ke_rt *e);
ke_rpc_loop *ke_rt_rpc(ke_rt *e);
ke_rt *ke_module_rt(ke_module *m);
const char *ke_module_name(const ke_module *m);
void *ke_module_config(ke_module *m);
void ke_module_set_data(ke_module *m, void *data);
void *ke_module_data(ke_module *m);
/* ke_rt_has_module: is a module of that name registered? */
int ke_rt_has_module(ke_rt *e, const char *name);

/* ke_rt_send routes msg by route.group. On 0 the bus owns msg; on error
 * the caller still does: KE_EINVAL (no route or group), KE_ENOTFOUND (no
 * module serves the group), KE_EFULL (queue at its bound; counted),
 * KE_ECLOSED (stopping). */
int ke_rt_send(ke_rt *e, Ke__V1__Message *msg);

/* ke_rt_send_to: to the module named `module`, whatever the route says. */
int ke_rt_send_to(ke_rt *e, const char *module, Ke__V1__Message *msg);

/* ke_rt_message_new builds a message the bus can own: source, group,
 * resource and content are copied (content may be NULL). NULL when out of
 * memory. */
Ke__V1__Message *ke_rt_message_new(const char *source, const char *group,
                                     Ke__V1__Operation op, const char *resource,
                                     const void *content, size_t len);

/* ke_rt_message_set_id sets header.id (copied). Returns 0 or KE_ENOMEM. */
int ke_rt_message_set_id(Ke__V1__Message *msg, const char *id);

/* ke_rt_respond answers req (which names its sender in route.source and
 * carries header.id) with a RESPONSE whose content is json (a JSON object
 * text). from: the answering module. Returns what ke_rt_send_to does,
 * KE_EINVAL when req names no sender. */
int ke_rt_respond(ke_rt *e, const char *from, const Ke__V1__Message *req,
                    const char *json);

/* ---- rpc on the loop ---- */

/* Callbacks of one rpc call, run on the loop. on_message owns msg (free it
 * with protobuf_c_message_free_unpacked(msg, NULL)). on_close runs once,
 * last. The call stays valid during each callback. */
typedef struct ke_rt_rpc_handler {
    void (*on_message)(ke_rpc_call *call, ProtobufCMessage *msg, void *ud);
    void (*on_drain)(ke_rpc_call *call, void *ud);
    void (*on_close)(ke_rpc_call *call, const ke_rpc_status *st, void *ud);
} ke_rt_rpc_handler;

/* ke_rt_call_start starts a streaming client call whose events run on the
 * loop (ke_rpc_call_start otherwise). *out: the caller's reference, released
 * with ke_rpc_call_unref. */
int ke_rt_call_start(ke_rt *e, ke_rpc_channel *ch, const ProtobufCServiceDescriptor *svc,
                       const char *method, const ke_rt_rpc_handler *h, void *ud,
                       const ke_rpc_call_opts *opts, ke_rpc_call **out);

/* ke_rt_serve registers a server method whose events run on the loop
 * (before ke_rpc_server_start). A refused hand-over (the loop is KE_RT_POST_BYTES
 * behind) ends the call with RESOURCE_EXHAUSTED. */
int ke_rt_serve(ke_rt *e, ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                  const char *method, ke_rpc_kind kind, const ke_rt_rpc_handler *h, void *ud);

/* ---- other threads ---- */

/* ke_rt_post runs fn(arg) on the loop, in post order. Any thread. 0, or
 * KE_EFULL (KE_RT_POST_BYTES of closures waiting; `bytes` is what this
 * one holds), KE_ECLOSED (the runtime has finished), KE_ENOMEM. */
int ke_rt_post(ke_rt *e, void (*fn)(void *arg), void *arg, size_t bytes);

/* ke_rt_call_sync runs fn(arg) on the loop and waits for it (not from
 * the loop thread): for tests and tools. Returns 0 or ke_rt_post's error. */
int ke_rt_call_sync(ke_rt *e, void (*fn)(void *arg), void *arg);

#endif
