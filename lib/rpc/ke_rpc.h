/*
 * ke_rpc.h — a small API over the grpc core C API, for servers and clients.
 *
 * Messages are protobuf-c messages: a method is registered with the
 * descriptor of its request type, and the library decodes every incoming
 * frame with it. A frame that is not a valid message of that type ends the
 * call with INVALID_ARGUMENT, as does a request with a string field holding
 * a NUL byte ("<field path>: holds a NUL byte"), which C handlers would
 * otherwise see cut short; the server goes on serving.
 *
 * Threading model
 * ---------------
 * A ke_rpc_loop owns one grpc completion queue and N threads that drain it
 * (N given at ke_rpc_loop_new). Every callback of every server and client
 * attached to the loop runs on one of those threads. For one call:
 *   - on_open, on_message, on_half_close and on_close never run concurrently,
 *     and on_close runs exactly once, last;
 *   - on_drain may run concurrently with on_message (it is about the send
 *     side only).
 * The rule: no blocking call runs on an rpc loop thread. Callbacks must
 * not block: a handler that needs time keeps the call (with ke_rpc_call_ref)
 * and finishes it later from any thread, and work that waits (an rpc to
 * another service, even in-process; a wait on a thread that itself waits for
 * an rpc callback) goes to the component's own thread or work queue.
 * ke_rpc_unary(), ke_rpc_stub_unary() and ke_rpc_server_stop() block: on a
 * loop thread they log an error, and builds with KE_RPC_ASSERT_NONBLOCKING
 * (the sanitizer and Debug builds the tests run) abort, so a violation
 * fails the tests instead of deadlocking with grpc.threads: 1.
 * ke_rpc_call_send/send_control/finish/abort/close_slow/close_send/cancel
 * are thread-safe.
 * Each loop thread has a watchdog heartbeat named "rpc-<loop>-<thread>"
 * (loops numbered from 0 in the order this process made them): a callback
 * that blocks past the stall limit turns /healthz to 503 (ke_watchdog.h).
 *
 * Lifetimes
 * ---------
 * A call is valid from on_open (server) or ke_rpc_call_start (client) until
 * on_close returns. To use it after that, or from another thread that might
 * race with on_close, hold a reference (ke_rpc_call_ref/unref); calls on a
 * closed call return KE_ECLOSED. Messages passed to on_message are borrowed
 * for the duration of the callback.
 *
 * Free servers and channels before the loop they are attached to.
 */
#ifndef KE_RPC_H
#define KE_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ke_rpc_loop ke_rpc_loop;
typedef struct ke_rpc_server ke_rpc_server;
typedef struct ke_rpc_channel ke_rpc_channel;
typedef struct ke_rpc_call ke_rpc_call;

/* gRPC status codes (the same numbers as grpc_status_code). */
enum {
    KE_RPC_OK = 0,
    KE_RPC_CANCELLED = 1,
    KE_RPC_UNKNOWN = 2,
    KE_RPC_INVALID_ARGUMENT = 3,
    KE_RPC_DEADLINE_EXCEEDED = 4,
    KE_RPC_NOT_FOUND = 5,
    KE_RPC_ALREADY_EXISTS = 6,
    KE_RPC_PERMISSION_DENIED = 7,
    KE_RPC_RESOURCE_EXHAUSTED = 8,
    KE_RPC_FAILED_PRECONDITION = 9,
    KE_RPC_ABORTED = 10,
    KE_RPC_OUT_OF_RANGE = 11,
    KE_RPC_UNIMPLEMENTED = 12,
    KE_RPC_INTERNAL = 13,
    KE_RPC_UNAVAILABLE = 14,
    KE_RPC_DATA_LOSS = 15,
    KE_RPC_UNAUTHENTICATED = 16,
};

/* Default bound on one message, either direction (grpc's default too). */
#define KE_RPC_DEFAULT_MAX_MESSAGE (4u * 1024u * 1024u)
/* Default bound on messages queued for sending on one call. */
#define KE_RPC_DEFAULT_SEND_QUEUE 1024u
/* Default bound on the bytes queued (and in flight) for sending on one
 * call. One message larger than the bound still goes when nothing else is
 * queued, so any message up to the message bound can be sent. */
#define KE_RPC_DEFAULT_SEND_QUEUE_BYTES (4u * 1024u * 1024u)

/* ke_rpc_status: the outcome of a call. */
typedef struct ke_rpc_status {
    int code;          /* KE_RPC_* */
    char message[256]; /* status message, truncated to fit */
} ke_rpc_status;

/* ke_rpc_on_loop_thread returns 1 when called on a thread of any
 * ke_rpc_loop (inside a callback), else 0. */
int ke_rpc_on_loop_thread(void);

/* ke_rpc_status_name returns "OK", "DEADLINE_EXCEEDED", ... for a code. */
const char *ke_rpc_status_name(int code);

/* ---- loop ---- */

/* ke_rpc_loop_new starts a completion queue with `threads` threads (>= 1)
 * and initialises grpc. Returns 0 or KE_ENOMEM/KE_EINVAL. */
int ke_rpc_loop_new(int threads, ke_rpc_loop **out);

/* ke_rpc_listener_failed returns 1 once grpc has stopped accepting
 * connections on a listening port, with grpc's reason ("Failed accept4:
 * Too many open files") in why (cap bytes); else 0. grpc 1.51 gives a port
 * up after one accept error such as EMFILE and does not retry: the process
 * must be restarted (with a higher open-files limit). Logged by grpc as
 * module "grpc"; any thread. */
int ke_rpc_listener_failed(char *why, size_t cap);

/* ke_rpc_loop_free shuts the queue down, joins its threads and frees it.
 * Every server and channel on it must have been freed. NULL is a no-op. */
void ke_rpc_loop_free(ke_rpc_loop *loop);

/* ---- credentials ---- */

typedef enum {
    KE_RPC_CLIENT_AUTH_NONE = 0,    /* server: do not ask for a client certificate */
    KE_RPC_CLIENT_AUTH_REQUEST = 1, /* server: verify a client certificate if sent */
    KE_RPC_CLIENT_AUTH_REQUIRE = 2, /* server: refuse clients without a valid one */
} ke_rpc_client_auth;

/* ke_rpc_tls: PEM file paths. For a server, cert/key are its own and ca
 * verifies clients; for a client, ca verifies the server and cert/key (both
 * or neither) are the client's. */
typedef struct ke_rpc_tls {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    ke_rpc_client_auth client_auth; /* server side only */
    const char *server_name;        /* client: name to verify instead of the target host */
    int skip_server_verify;         /* client: accept any server certificate. Only for
                                       bootstrapping trust (keadm join fetches the CA
                                       this way and checks its hash against the token);
                                       never send secrets on such a channel. */
} ke_rpc_tls;

/* ---- server ---- */

typedef enum {
    KE_RPC_UNARY = 0,         /* one request, one reply */
    KE_RPC_SERVER_STREAM = 1, /* one request, a stream of replies */
    KE_RPC_CLIENT_STREAM = 2, /* a stream of requests, one reply */
    KE_RPC_BIDI_STREAM = 3,   /* streams both ways */
} ke_rpc_kind;

/* ke_rpc_handler: callbacks of one method (server) or one call (client).
 * Every member may be NULL. `ud` is the pointer given at registration or
 * call start. */
typedef struct ke_rpc_handler {
    /* server: a call arrived, before its first message */
    void (*on_open)(ke_rpc_call *call, void *ud);
    /* a message arrived (borrowed for the callback's duration) */
    void (*on_message)(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud);
    /* the peer will send no more messages */
    void (*on_half_close)(ke_rpc_call *call, void *ud);
    /* the send queue became empty: room to send more */
    void (*on_drain)(ke_rpc_call *call, void *ud);
    /* the call ended: server side, st->code is the code sent, or CANCELLED
     * when the client cancelled or its deadline passed; client side, the
     * status the server sent (or the transport's). Runs exactly once. */
    void (*on_close)(ke_rpc_call *call, const ke_rpc_status *st, void *ud);
} ke_rpc_handler;

typedef struct ke_rpc_server_opts {
    const char *listen;          /* "host:port"; port 0 picks a free one; NULL: in-process only */
    const ke_rpc_tls *tls;       /* NULL: plaintext */
    uint32_t max_message_bytes;  /* 0: KE_RPC_DEFAULT_MAX_MESSAGE */
    uint32_t send_queue;         /* per-call send queue bound; 0: default */
    uint32_t send_queue_bytes;   /* per-call send queue bound in bytes; 0: default */
    uint32_t max_streams_per_identity; /* open streaming calls per caller identity
                                          (certificate user; every anonymous caller
                                          together); in-process calls are exempt;
                                          0: no cap */
    uint32_t max_concurrent_streams;   /* per HTTP/2 connection; 0: grpc's default */
    uint32_t tls_max_frame_size;       /* largest TLS record grpc's TSI layer writes, and
                                          the size of the buffer each connection keeps
                                          for it; 0: KE_RPC_DEFAULT_TLS_MAX_FRAME */
} ke_rpc_server_opts;
/* KE_RPC_DEFAULT_TLS_MAX_FRAME: grpc's own default is 16 KiB, and every TLS
 * connection keeps a frame buffer that large for as long as it lives. At
 * 4 KiB a server with thousands of connected nodes keeps ~7 KiB less
 * resident per connection (ke-bench-edgesim); a large message is cut into
 * more TLS records, which costs a little CPU per message, not throughput
 * worth measuring at the bench's rates. grpc accepts 1 KiB..16 KiB. */
#define KE_RPC_DEFAULT_TLS_MAX_FRAME 4096u
#define KE_RPC_TLS_MAX_FRAME_MIN 1024u
#define KE_RPC_TLS_MAX_FRAME_MAX 16384u
/* With max_streams_per_identity, a streaming call (server, client or bidi
 * streaming) is counted from the moment it is accepted — before the
 * authorizer, so streams that never send their first request count too —
 * until it closes. One past the cap is finished at once with
 * RESOURCE_EXHAUSTED naming the identity and the cap; its handler sees
 * nothing. Counted in ke_rpc_server_streams_refused_total. */

/* ke_rpc_server_new creates a server on `loop`. Nothing listens until
 * ke_rpc_server_start. Returns 0, KE_ETLS when a PEM file cannot be read,
 * KE_ENOMEM. */
int ke_rpc_server_new(ke_rpc_loop *loop, const ke_rpc_server_opts *opts, ke_rpc_server **out);

/* ke_rpc_server_add_method registers `path` ("/pkg.Service/Method") before
 * start. `req` is the request message type; `h` is copied; `ud` is passed to
 * every callback. Unregistered methods get UNIMPLEMENTED. */
int ke_rpc_server_add_method(ke_rpc_server *srv, const char *path, ke_rpc_kind kind,
                             const ProtobufCMessageDescriptor *req, const ke_rpc_handler *h,
                             void *ud);

/* ke_rpc_authorize_fn decides whether a call may reach its handler. It
 * runs once per call, on a loop thread, after the first request message
 * has been decoded (req, borrowed for the callback) and before any handler
 * callback; for a client- or bidi-streaming call whose client half-closes
 * without sending anything, req is NULL. It returns KE_RPC_OK to let the
 * call through, or the status to end it with (PERMISSION_DENIED,
 * UNAUTHENTICATED, INVALID_ARGUMENT, ...) with a one-line reason in
 * why[0..len). It must not block (see the threading model). */
typedef int (*ke_rpc_authorize_fn)(ke_rpc_call *call, const ProtobufCMessage *req, char *why,
                                   size_t len, void *ud);

/* ke_rpc_server_set_authorizer makes every call of every method of srv wait
 * for fn's verdict (before start). With an authorizer, a method's on_open
 * runs when fn says yes, just before the first on_message (or on_half_close);
 * a refused call is finished with fn's status and its handler sees nothing
 * at all, not even on_close. Returns 0 or KE_EINVAL (started, NULL fn). */
int ke_rpc_server_set_authorizer(ke_rpc_server *srv, ke_rpc_authorize_fn fn, void *ud);

/* ke_rpc_server_set_open_timeout closes calls of method `path` that have
 * not received their first request message within ms of being accepted
 * (a stream opened and left silent), with DEADLINE_EXCEEDED; the handler
 * sees nothing of such a call when an authorizer is set (it never opened),
 * else its on_close. Counted in
 * ke_rpc_server_open_timeouts_total{method}. The loop's threads check about
 * every KE_RPC_SWEEP_MS (monotonic clock). Before start; ms 0 turns it
 * off. Returns 0, KE_ENOTFOUND (no such method) or KE_EINVAL. */
#define KE_RPC_SWEEP_MS 250
int ke_rpc_server_set_open_timeout(ke_rpc_server *srv, const char *path, int64_t ms);

/* ke_rpc_server_start binds and starts serving. Returns 0, or KE_EIO when
 * the address cannot be bound. */
int ke_rpc_server_start(ke_rpc_server *srv);

/* ke_rpc_server_port returns the bound TCP port (after start), or 0. */
int ke_rpc_server_port(const ke_rpc_server *srv);

/* ke_rpc_server_stop stops accepting, cancels every open call and waits
 * until each has seen on_close. Idempotent. Blocks: not from a callback. */
void ke_rpc_server_stop(ke_rpc_server *srv);

/* ke_rpc_server_free stops the server if needed and frees it. NULL: no-op. */
void ke_rpc_server_free(ke_rpc_server *srv);

/* ---- server-side call ---- */

/* ke_rpc_call_send queues `msg` (packed at once; the caller keeps msg).
 * Returns 0, KE_EFULL when the send queue is at its bound in messages, or
 * when msg would take the bytes queued and in flight past the byte bound
 * (a message is always accepted when nothing is queued or in flight) —
 * wait for on_drain —, KE_ECLOSED when the call ended or was finished.
 * Thread-safe. */
int ke_rpc_call_send(ke_rpc_call *call, const ProtobufCMessage *msg);

/* ke_rpc_call_send_raw queues bytes that are sent as they are. */
int ke_rpc_call_send_raw(ke_rpc_call *call, const void *data, size_t len);

/* ke_rpc_call_send_control queues a small control message (an ack, a
 * keepalive) that is bounded by its sender's design (coalesced slots): it
 * counts against the queue's message bound only, not its byte bound, so
 * data filling the byte bound does not hold it back. Returns as
 * ke_rpc_call_send. */
int ke_rpc_call_send_control(ke_rpc_call *call, const ProtobufCMessage *msg);

/* ke_rpc_call_finish (server) ends the call with `code` and `message`
 * (may be NULL) after every queued message; `reply` (may be NULL) is sent
 * last, as the unary reply. Returns 0 or KE_ECLOSED. Thread-safe. */
int ke_rpc_call_finish(ke_rpc_call *call, int code, const char *message,
                       const ProtobufCMessage *reply);

/* ke_rpc_call_finishf (server) ends the call with `code`, no reply, and a
 * message formatted as printf (truncated to 512 bytes). Returns as
 * ke_rpc_call_finish. */
int ke_rpc_call_finishf(ke_rpc_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ke_rpc_call_abort ends the call at once with `code` and `message`:
 * messages still queued are dropped and freed now, and the stream is reset
 * with that status (the peer sees it without reading what was queued). For
 * a peer that does not read, where ke_rpc_call_finish would wait behind
 * the queue. on_close runs with `code`. Returns 0, or KE_ECLOSED when the
 * call already ended or was aborted. Thread-safe. */
int ke_rpc_call_abort(ke_rpc_call *call, int code, const char *message);

/* ke_rpc_call_close_slow (server) is ke_rpc_call_abort with
 * RESOURCE_EXHAUSTED for a stream whose client does not read (its send
 * queue hit a bound), counted in
 * ke_rpc_slow_streams_closed_total{method}. Returns as ke_rpc_call_abort. */
int ke_rpc_call_close_slow(ke_rpc_call *call, const char *message);

/* ke_rpc_call_method returns the method path of the call. */
const char *ke_rpc_call_method(const ke_rpc_call *call);

/* ke_rpc_call_metadata copies the first value of request metadata `key`
 * (lowercase) into buf. Returns 0, KE_ENOTFOUND, or KE_EFULL if it does
 * not fit. Server side only. */
int ke_rpc_call_metadata(const ke_rpc_call *call, const char *key, char *buf, size_t len);

/* ke_rpc_call_peer_cn copies the peer certificate's common name into buf.
 * Returns 0, or KE_ENOTFOUND when the peer sent no verified certificate. */
int ke_rpc_call_peer_cn(const ke_rpc_call *call, char *buf, size_t len);

/* ke_rpc_call_peer_cert returns the peer's verified certificate as a
 * malloc'd PEM string in *pem (caller frees). Returns 0 or KE_ENOTFOUND. */
int ke_rpc_call_peer_cert(const ke_rpc_call *call, char **pem);

/* ke_rpc_call_tls_resumed tells whether the call's TLS session was resumed
 * (1) or a full handshake (0); KE_ENOTFOUND without TLS. */
int ke_rpc_call_tls_resumed(const ke_rpc_call *call);

/* Who called: ke_rpc_call_identity. Users and groups are the verified
 * client certificate's CN and O entries, as Kubernetes reads them. */
#define KE_RPC_ID_NAME_MAX 65  /* a CN or O of at most 64 bytes, with its NUL */
#define KE_RPC_ID_GROUPS_MAX 16
/* The identity of calls from this process (the controllers inside
 * cloudcore calling the Hub API through ke_rpc_channel_new_inproc). */
#define KE_RPC_INPROC_USER "system:cloudcore"
#define KE_RPC_INPROC_GROUP "system:masters"

typedef enum {
    KE_RPC_ID_ANONYMOUS = 0, /* no verified client certificate (plaintext, or none sent) */
    KE_RPC_ID_CERT = 1,      /* a client certificate the server's TLS verified */
    KE_RPC_ID_INPROC = 2,    /* this process: KE_RPC_INPROC_USER in KE_RPC_INPROC_GROUP */
} ke_rpc_id_kind;

typedef struct ke_rpc_identity {
    ke_rpc_id_kind kind;
    char user[KE_RPC_ID_NAME_MAX];                           /* "" when anonymous */
    char groups[KE_RPC_ID_GROUPS_MAX][KE_RPC_ID_NAME_MAX];
    size_t n_groups;
    char fingerprint[65]; /* KE_RPC_ID_CERT: SHA-256 of the certificate (lowercase hex) */
} ke_rpc_identity;

/* ke_rpc_call_identity fills *id with the caller's identity (server side).
 * Returns 0; KE_ETLS when the peer's certificate has no CN, several, an
 * unreadable or more than KE_RPC_ID_GROUPS_MAX O entries (treat as not
 * authenticated); KE_ENOMEM. *id is zeroed (anonymous) on error. */
int ke_rpc_call_identity(const ke_rpc_call *call, ke_rpc_identity *id);

/* ke_rpc_call_is_inproc returns 1 when the call came through an in-process
 * channel (ke_rpc_channel_new_inproc): its caller is this process. */
int ke_rpc_call_is_inproc(const ke_rpc_call *call);

/* ke_rpc_call_set_data / get_data attach one pointer of the caller's. */
void ke_rpc_call_set_data(ke_rpc_call *call, void *data);
void *ke_rpc_call_get_data(const ke_rpc_call *call);

/* ke_rpc_call_ref / unref keep a call alive past on_close. */
void ke_rpc_call_ref(ke_rpc_call *call);
void ke_rpc_call_unref(ke_rpc_call *call);

/* ---- client ---- */

/* A client-side TLS session cache (LRU of session tickets by server name):
 * a channel created with it resumes the TLS session of an earlier channel
 * to the same server (an abbreviated handshake) when the server accepts
 * the ticket. Share one between channels; it must outlive every channel
 * created with it (grpc holds a reference per channel, so freeing it
 * first is safe but ends resumption). */
typedef struct ke_rpc_session_cache ke_rpc_session_cache;

/* ke_rpc_session_cache_new creates a cache of up to `capacity` sessions
 * (0: grpc's default). Returns NULL out of memory. */
ke_rpc_session_cache *ke_rpc_session_cache_new(size_t capacity);
/* ke_rpc_session_cache_free releases the cache. NULL: no-op. */
void ke_rpc_session_cache_free(ke_rpc_session_cache *cache);

typedef struct ke_rpc_channel_opts {
    const ke_rpc_tls *tls;      /* NULL: plaintext */
    uint32_t max_message_bytes; /* receive bound; 0: default */
    ke_rpc_session_cache *session_cache; /* TLS session resumption; NULL: none */
} ke_rpc_channel_opts;

/* ke_rpc_channel_new connects (lazily) to `target` ("host:port"). Returns 0,
 * KE_ETLS when a PEM file cannot be read, KE_ENOMEM. */
int ke_rpc_channel_new(ke_rpc_loop *loop, const char *target, const ke_rpc_channel_opts *opts,
                       ke_rpc_channel **out);

/* ke_rpc_channel_new_inproc connects to `srv` inside this process, without
 * a socket (grpc's in-process transport). srv must be started. */
int ke_rpc_channel_new_inproc(ke_rpc_loop *loop, ke_rpc_server *srv, ke_rpc_channel **out);

/* ke_rpc_channel_free closes the channel; open calls on it are cancelled.
 * NULL: no-op. */
void ke_rpc_channel_free(ke_rpc_channel *ch);

typedef struct ke_rpc_md {
    const char *key; /* lowercase ASCII */
    const char *value;
} ke_rpc_md;

typedef struct ke_rpc_call_opts {
    int64_t timeout_ms;   /* deadline from now; 0: none */
    const ke_rpc_md *md;  /* request metadata */
    size_t n_md;
    uint32_t send_queue;  /* 0: default */
    uint32_t send_queue_bytes; /* 0: default */
} ke_rpc_call_opts;

/* ke_rpc_call_start opens a streaming call. Replies are decoded as `resp`
 * and handed to h->on_message; h->on_close gets the final status. On 0 the
 * call holds a reference for the caller: release it with ke_rpc_call_unref
 * when done (after on_close is fine). */
int ke_rpc_call_start(ke_rpc_channel *ch, const char *path, const ProtobufCMessageDescriptor *resp,
                      const ke_rpc_handler *h, void *ud, const ke_rpc_call_opts *opts,
                      ke_rpc_call **out);

/* ke_rpc_call_close_send (client) half-closes: no more messages follow. */
int ke_rpc_call_close_send(ke_rpc_call *call);

/* ke_rpc_call_cancel ends the call at once with CANCELLED, either side. */
void ke_rpc_call_cancel(ke_rpc_call *call);

/* ke_rpc_unary calls a unary method and waits. On return st holds the
 * status; when st->code is OK, *reply holds the decoded reply (free it with
 * protobuf_c_message_free_unpacked(*reply, NULL)). Returns 0 when a status
 * was obtained (whatever its code), KE_EINVAL/KE_ENOMEM otherwise. */
int ke_rpc_unary(ke_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp, const ke_rpc_call_opts *opts,
                 ProtobufCMessage **reply, ke_rpc_status *st);

/* ke_rpc_unary_cb: completion of ke_rpc_unary_async; reply is borrowed
 * (NULL unless st->code is OK). Runs on a loop thread. */
typedef void (*ke_rpc_unary_cb)(const ProtobufCMessage *reply, const ke_rpc_status *st, void *ud);

/* ke_rpc_unary_async starts a unary call; cb runs once when it ends. */
int ke_rpc_unary_async(ke_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, const ke_rpc_call_opts *opts,
                       ke_rpc_unary_cb cb, void *ud);

/* ---- typed helpers over protoc-c service descriptors ---- */

/* ke_rpc_server_add registers method `name` of service `svc` (a protoc-c
 * descriptor such as ke__v1__diagnostics__descriptor): the path
 * "/<package>.<Service>/<name>" and the request type come from the
 * descriptor. Returns as ke_rpc_server_add_method, or KE_ENOTFOUND when
 * the service has no such method. */
int ke_rpc_server_add(ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc, const char *name,
                      ke_rpc_kind kind, const ke_rpc_handler *h, void *ud);

/* ke_rpc_method_def: one method of a service, for ke_rpc_server_add_all. */
typedef struct ke_rpc_method_def {
    const char *name;      /* method name in the service descriptor: "Ping" */
    ke_rpc_kind kind;
    ke_rpc_handler handler;
} ke_rpc_method_def;

/* ke_rpc_server_add_all registers n methods of svc with the same ud, as
 * ke_rpc_server_add does one. Stops at the first error and returns it. */
int ke_rpc_server_add_all(ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                          const ke_rpc_method_def *defs, size_t n, void *ud);

/* ke_rpc_stub: a client for one service on one channel (both borrowed). */
typedef struct ke_rpc_stub {
    ke_rpc_channel *ch;
    const ProtobufCServiceDescriptor *svc;
} ke_rpc_stub;

/* ke_rpc_stub_unary calls unary method `name` (ke_rpc_unary); `req` must be
 * of the method's input type and *reply is of its output type. Returns
 * KE_ENOTFOUND for an unknown method, KE_EINVAL for a request of the wrong
 * type, else as ke_rpc_unary. */
int ke_rpc_stub_unary(const ke_rpc_stub *stub, const char *name, const ProtobufCMessage *req,
                      const ke_rpc_call_opts *opts, ProtobufCMessage **reply, ke_rpc_status *st);

/* ke_rpc_stub_start opens streaming method `name` (ke_rpc_call_start);
 * replies are decoded as the method's output type. */
int ke_rpc_stub_start(const ke_rpc_stub *stub, const char *name, const ke_rpc_handler *h,
                      void *ud, const ke_rpc_call_opts *opts, ke_rpc_call **out);

#endif
