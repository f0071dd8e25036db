/*
 * ke_rpc.c — ke_rpc.h over the grpc core C API.
 *
 * Map of this file:
 *   loop      one completion queue drained by N threads; every grpc tag is a
 *             ke_rpc_tag whose fn runs on completion. Each thread has a
 *             watchdog heartbeat "rpc-<loop>-<thread>" (loops numbered from
 *             0 in the order made) and beats on every completion and on a
 *             completion-queue deadline tick when idle.
 *   codec     protobuf-c <-> grpc_byte_buffer.
 *   call      the state shared by server and client calls: a send queue
 *             (one SEND batch in flight at a time, as grpc requires), a
 *             receive loop (one RECV_MESSAGE in flight), and the end batch
 *             (RECV_CLOSE_ON_SERVER or RECV_STATUS_ON_CLIENT).
 *             `pending` counts batches in flight; on_close runs when the end
 *             batch has completed and pending drops to zero, so it is
 *             always the last callback of a call.
 *   server    registered methods, one accept request outstanding per method,
 *             a generic accept that answers UNIMPLEMENTED, stop = shutdown +
 *             cancel all + wait for every call's on_close.
 *   client    channels (TCP, TLS, in-process), streaming calls, and unary
 *             calls as one six-op batch.
 */
#include "ke_rpc.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_map.h"
#include "ke_pki.h"
#include "ke_time.h"
#include "ke_watchdog.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* grpc_inproc_channel_create has C++ linkage in this grpc; ke_rpc_inproc.cc
 * exposes it to C. */
grpc_channel *ke_rpc_inproc_channel_create(grpc_server *server, const grpc_channel_args *args);
void ke_rpc_absl_tune(void); /* ke_rpc_inproc.cc */

/* What grpc does between a batch's start and its completion is invisible
 * to ThreadSanitizer (Debian's grpc is not built with it): the completion
 * queue hands a tag from the thread that started the batch to the one that
 * runs it. Tell it so: a release when a tag goes in, an acquire when it
 * comes out. Nothing in other builds. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define TAG_RELEASE(t) __tsan_release(t)
#define TAG_ACQUIRE(t) __tsan_acquire(t)
#else
#define TAG_RELEASE(t) ((void)(t))
#define TAG_ACQUIRE(t) ((void)(t))
#endif

#define LOG_MOD "rpc"

_Static_assert(KE_RPC_ID_NAME_MAX == KE_PKI_CN_MAX + 1, "a group is an O entry of a certificate");

typedef struct ke_rpc_tag {
    void (*fn)(struct ke_rpc_tag *tag, int ok);
} ke_rpc_tag;

/* ------------------------------------------------------------------ loop */

/* One loop thread and its heartbeat "rpc-<loop>-<thread>" (ke_watchdog.h). */
typedef struct loop_thread {
    struct ke_rpc_loop *loop;
    pthread_t tid;
    ke_watchdog_hb *hb;
} loop_thread;

struct ke_rpc_loop {
    grpc_completion_queue *cq;
    loop_thread *threads;
    int nthreads;
    /* servers on this loop, for the open-timeout sweep (loop_sweep) */
    pthread_mutex_t mu;
    struct ke_rpc_server *servers;
    _Atomic int64_t next_sweep_ms;
};

static void loop_sweep(struct ke_rpc_loop *loop);

/* Loops made in this process, numbering their heartbeats. */
static _Atomic int loop_seq;

/* Set on the loop's own threads: the blocking calls check it (see
 * ke_rpc_on_loop_thread and the threading rule in ke_rpc.h). */
static _Thread_local int tl_on_loop;

int ke_rpc_on_loop_thread(void) { return tl_on_loop; }

/* blocking_call_check enforces "no blocking call on an rpc loop thread":
 * logged always, fatal in builds with KE_RPC_ASSERT_NONBLOCKING (the
 * sanitizer and debug builds), where the tests run. */
static void blocking_call_check(const char *what)
{
    if (!tl_on_loop)
        return;
    ke_log_error(LOG_MOD, "%s called on an rpc loop thread: it can deadlock the loop", what);
#ifdef KE_RPC_ASSERT_NONBLOCKING
    abort();
#endif
}

/* loop_main drains the queue. It never waits longer than its heartbeat's
 * tick: the completion queue's deadline wakes it to beat when idle, so a
 * beat missing for the stall limit means the thread is stuck in a callback
 * (or in grpc), never that it had nothing to do. */
static void *loop_main(void *arg)
{
    loop_thread *lt = arg;
    tl_on_loop = 1;
    for (;;) {
        gpr_timespec until =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(ke_watchdog_tick_ms(lt->hb), GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(lt->loop->cq, until, NULL);
        ke_watchdog_beat(lt->hb);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            ke_rpc_tag *t = ev.tag;
            TAG_ACQUIRE(t);
            t->fn(t, ev.success);
        }
        loop_sweep(lt->loop);
    }
    return NULL;
}

/* ---- grpc's own log ---- */

/* Set once when grpc's listener gave up (see ke_rpc_listener_failed). */
static atomic_int listener_state; /* 0 fine, 1 being written, 2 failed */
static char listener_why[256];

/* grpc_log takes grpc's log lines into ours (module "grpc", its level;
 * grpc logs errors only unless GRPC_VERBOSITY says more). grpc 1.51 stops
 * accepting on a listening port for good after one accept4 error other
 * than EAGAIN or ECONNABORTED ("Failed accept4: Too many open files"):
 * that is recorded for ke_rpc_listener_failed. */
static void grpc_log(gpr_log_func_args *a)
{
    ke_log_level lv = a->severity == GPR_LOG_SEVERITY_ERROR  ? KE_LOG_ERROR
                      : a->severity == GPR_LOG_SEVERITY_INFO ? KE_LOG_INFO
                                                             : KE_LOG_DEBUG;
    const char *msg = a->message ? a->message : "";
    ke_log_write(lv, "grpc", "%s (%s:%d)", msg, a->file ? a->file : "?", a->line);
    int fine = 0;
    if (strncmp(msg, "Failed accept4", 14) == 0 &&
        atomic_compare_exchange_strong(&listener_state, &fine, 1)) {
        snprintf(listener_why, sizeof(listener_why), "%s", msg);
        atomic_store(&listener_state, 2);
    }
}

int ke_rpc_listener_failed(char *why, size_t cap)
{
    if (atomic_load(&listener_state) != 2)
        return 0;
    if (why && cap)
        snprintf(why, cap, "%s", listener_why);
    return 1;
}

int ke_rpc_loop_new(int threads, ke_rpc_loop **out)
{
    if (threads < 1 || !out)
        return KE_EINVAL;
    ke_rpc_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return KE_ENOMEM;
    loop->threads = calloc((size_t)threads, sizeof(loop_thread));
    if (!loop->threads) {
        free(loop);
        return KE_ENOMEM;
    }
    pthread_mutex_init(&loop->mu, NULL);
    ke_rpc_absl_tune();
    gpr_set_log_function(grpc_log);
    grpc_init();
    loop->cq = grpc_completion_queue_create_for_next(NULL);
    int seq = atomic_fetch_add(&loop_seq, 1);
    for (int i = 0; i < threads; i++) {
        loop_thread *lt = &loop->threads[i];
        char name[KE_WATCHDOG_NAME_MAX];
        snprintf(name, sizeof(name), "rpc-%d-%d", seq, i);
        lt->loop = loop;
        int rc = ke_watchdog_register(name, 0, &lt->hb);
        if (rc != 0) /* the thread still serves, unwatched */
            ke_log_warn(LOG_MOD, "loop thread not watched name=%s: %s", name, ke_strerror(rc));
        if (pthread_create(&lt->tid, NULL, loop_main, lt) != 0) {
            ke_watchdog_unregister(lt->hb);
            lt->hb = NULL;
            break;
        }
        snprintf(name, sizeof(name), "ke-rpc-%d", i & 0xff);
        pthread_setname_np(lt->tid, name);
        loop->nthreads++;
    }
    if (loop->nthreads == 0) {
        ke_rpc_loop_free(loop);
        return KE_ENOMEM;
    }
    *out = loop;
    return 0;
}

void ke_rpc_loop_free(ke_rpc_loop *loop)
{
    if (!loop)
        return;
    grpc_completion_queue_shutdown(loop->cq);
    for (int i = 0; i < loop->nthreads; i++) {
        pthread_join(loop->threads[i].tid, NULL);
        ke_watchdog_unregister(loop->threads[i].hb);
    }
    grpc_completion_queue_destroy(loop->cq);
    pthread_mutex_destroy(&loop->mu);
    free(loop->threads);
    free(loop);
    grpc_shutdown();
}

/* ----------------------------------------------------------------- codec */

static grpc_byte_buffer *bb_from_bytes(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_malloc(len);
    if (len)
        memcpy(GRPC_SLICE_START_PTR(s), data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static grpc_byte_buffer *bb_from_msg(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Nesting of messages string_nul looks into (the decoder took them all). */
#define STRING_NUL_DEPTH 16

static size_t read_varint(const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

/* string_nul looks for a string field holding a NUL byte in p[0..n), an
 * encoded message of type d that protobuf-c decoded already. protobuf-c
 * hands strings to C as NUL-terminated, so such a value would silently
 * reach the handler cut short ("app=web\0x" as "app=web"): it is refused
 * instead. On 1, path[0..cap) holds the field path ("ref.name"). */
static int string_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth,
                      char *path, size_t cap)
{
    size_t at = 0, used = strlen(path);
    while (at < n) {
        uint64_t key, v;
        size_t k = read_varint(p + at, n - at, &key);
        if (!k)
            return 0;
        at += k;
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!(k = read_varint(p + at, n - at, &v)))
                return 0;
            at += k;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT: at += 8; break;
        case PROTOBUF_C_WIRE_TYPE_32BIT: at += 4; break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!(k = read_varint(p + at, n - at, &v)) || v > n - at - k)
                return 0;
            at += k;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
            int nested = f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < STRING_NUL_DEPTH;
            if (f && (nested || (f->type == PROTOBUF_C_TYPE_STRING && memchr(p + at, 0, v))))
                snprintf(path + used, cap - used, "%s%s", used ? "." : "", f->name);
            if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + at, 0, v))
                return 1;
            if (nested && string_nul(f->descriptor, p + at, v, depth + 1, path, cap))
                return 1;
            path[used] = '\0';
            at += v;
            break;
        }
        default: return 0;
        }
    }
    return 0;
}

/* bb_decode unpacks bb as `d`. Returns 0 and *out (caller frees), or
 * KE_EINVAL. With why (requests a server takes), a string field holding a
 * NUL byte is refused too, and why then names it; without (replies), it is
 * not looked for. */
static int bb_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d,
                     ProtobufCMessage **out, char *why, size_t len)
{
    grpc_byte_buffer_reader r;
    if (why && len)
        why[0] = '\0';
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return KE_EINVAL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *out = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    char path[128] = "";
    if (*out && why && string_nul(d, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), 0, path,
                                  sizeof(path))) {
        protobuf_c_message_free_unpacked(*out, NULL);
        *out = NULL;
        if (why && len)
            snprintf(why, len, "%s: holds a NUL byte (strings must not)", path);
    }
    grpc_slice_unref(s);
    return *out ? 0 : KE_EINVAL;
}

static void status_set(ke_rpc_status *st, int code, const char *msg, size_t len)
{
    st->code = code;
    if (!msg)
        len = 0;
    if (len >= sizeof(st->message))
        len = sizeof(st->message) - 1;
    if (len)
        memcpy(st->message, msg, len);
    st->message[len] = '\0';
}

static gpr_timespec deadline_from(int64_t timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

const char *ke_rpc_status_name(int code)
{
    static const char *const names[] = {
        "OK",         "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",   "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",        "UNAVAILABLE",    "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0])))
        return "UNKNOWN";
    return names[code];
}

/* --------------------------------------------------------------- metrics */

/* Per-method server metrics; the registry owns the series (NULL-safe). */
typedef struct method_metrics {
    ke_metric *calls;     /* ke_rpc_server_calls_total{method} */
    ke_metric *cancelled; /* ke_rpc_server_calls_cancelled_total{method} */
    ke_metric *invalid;   /* ke_rpc_server_invalid_messages_total{method} */
    ke_metric *failed;    /* ke_rpc_server_calls_failed_total{method}: non-OK status sent */
    ke_metric *active;    /* ke_rpc_server_calls_active{method} */
    ke_metric *slow;      /* ke_rpc_slow_streams_closed_total{method} */
    ke_metric *open_timeouts; /* ke_rpc_server_open_timeouts_total{method} */
} method_metrics;

static void method_metrics_init(method_metrics *mm, const char *path)
{
    const char *labels[] = {"method", path, NULL};
    ke_metrics_counter_new("ke_rpc_server_calls_total", "gRPC calls accepted", labels,
                           &mm->calls);
    ke_metrics_counter_new("ke_rpc_server_calls_cancelled_total",
                           "gRPC calls cancelled by the client or its deadline", labels,
                           &mm->cancelled);
    ke_metrics_counter_new("ke_rpc_server_invalid_messages_total",
                           "gRPC calls refused because a message did not decode", labels,
                           &mm->invalid);
    ke_metrics_counter_new("ke_rpc_server_calls_failed_total",
                           "gRPC calls that ended with a non-OK status", labels, &mm->failed);
    ke_metrics_gauge_new("ke_rpc_server_calls_active", "gRPC calls open now", labels,
                         &mm->active);
    ke_metrics_counter_new("ke_rpc_slow_streams_closed_total",
                           "streams closed with RESOURCE_EXHAUSTED because the client did not "
                           "read (send queue at its bound); their queue freed at once",
                           labels, &mm->slow);
    ke_metrics_counter_new("ke_rpc_server_open_timeouts_total",
                           "calls closed because no request message came within the method's "
                           "open timeout", labels, &mm->open_timeouts);
}

/* ------------------------------------------------------------------ call */

enum send_kind { SEND_MSG, SEND_STATUS, SEND_CLOSE };

typedef struct send_item {
    struct send_item *next;
    enum send_kind kind;
    grpc_byte_buffer *bb; /* may be NULL for STATUS/CLOSE */
    size_t len;           /* bytes of bb counted against the byte bound */
} send_item;

/* How enqueue bounds an item: not at all (status, half-close), by the
 * message count (control messages), or by count and bytes (data). */
enum send_bound { BOUND_NONE, BOUND_COUNT, BOUND_BYTES };

typedef struct call_tag {
    ke_rpc_tag tag;
    struct ke_rpc_call *call;
} call_tag;

struct ke_rpc_call {
    grpc_call *gc;
    int is_server;
    ke_rpc_kind kind;
    const ProtobufCMessageDescriptor *in_desc; /* what we receive */
    ke_rpc_handler h;
    void *ud;
    void *data;
    char *method;
    ke_rpc_server *srv; /* server side: the owning server */
    struct method_metrics *mm; /* server side: the method's metrics */

    pthread_mutex_t mu;
    int refs;
    int pending;      /* batches in flight (+1 during setup) */
    int ended;        /* the end batch completed */
    int closed;       /* on_close has been (or is being) delivered */
    int finishing;    /* finish/close_send queued: no more sends */
    int dead;         /* a send failed: the call is going away */
    int got_message;  /* server: a request message arrived */
    int gated;        /* server: the handler waits for the authorizer's yes */
    ke_rpc_authorize_fn authz; /* server: the server's authorizer (gated calls) */
    void *authz_ud;
    int initial_md_sent;
    send_item *qhead, *qtail, *inflight;
    uint32_t qlen, qmax;
    size_t qbytes, qmax_bytes; /* bytes queued (not counting inflight), bound */
    int aborted;      /* ke_rpc_call_abort: c->final holds the code sent */

    /* server: per-identity stream count and the open timeout */
    char *id_key;     /* counted under this identity (srv->id_streams), or NULL */
    int refused;      /* finished at accept: nothing reaches the handler */
    int64_t open_deadline_ms; /* monotonic; 0: none, or a first message came */
    struct ke_rpc_call *wprev, *wnext; /* srv->waiting: no first message yet */
    int waiting;      /* in srv->waiting (srv->mu) */
    int first_seen;   /* a message or the half-close came (recv callbacks only) */

    grpc_byte_buffer *recv_bb;
    call_tag recv_tag, send_tag, end_tag, start_tag;
    ke_rpc_status final;

    /* server */
    grpc_metadata_array req_md;
    int cancelled;
    grpc_slice status_details;
    int have_status_details;

    /* client */
    grpc_metadata_array init_md, trailing_md;
    grpc_status_code status;
    grpc_slice recv_details;
    grpc_metadata *send_md;
    size_t n_send_md;
};

int ke_rpc_call_is_inproc(const ke_rpc_call *c)
{
    /* Socket transports name the peer by address ("ipv4:…", "ipv6:…",
     * "unix:…"); grpc 1.51's in-process transport says "unknown". */
    static const char *const socket_peers[] = {"ipv4:", "ipv6:", "unix:", "unix-abstract:"};
    char *peer = grpc_call_get_peer(c->gc);
    int inproc = peer != NULL;
    for (size_t i = 0; peer && i < sizeof(socket_peers) / sizeof(socket_peers[0]); i++)
        if (strncmp(peer, socket_peers[i], strlen(socket_peers[i])) == 0)
            inproc = 0;
    gpr_free(peer);
    return inproc;
}

/* The identity cache: what was read from recently seen client
 * certificates, so that a connection's calls read its certificate once and
 * not once per call (decoding the PEM and the X.509 subject costs more than
 * a unary call's whole grpc path; at a fan-out of thousands of publishes a
 * second it was a quarter of the server's CPU). TLS verifies each
 * connection's chain; the cache only saves re-reading a verified
 * certificate, keyed by its whole PEM (compared byte for byte, so a
 * collision of the hash costs a miss, never a wrong identity).
 * Direct-mapped, ID_CACHE_SLOTS slots, one mutex held only to copy. */
#define ID_CACHE_SLOTS 128u /* power of two; ~2.3 KiB each when full */

typedef struct id_slot {
    uint64_t hash;
    char *pem; /* NULL: empty */
    size_t len;
    ke_rpc_identity id;
} id_slot;

static id_slot id_cache[ID_CACHE_SLOTS];
static pthread_mutex_t id_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t pem_hash(const char *p, size_t len)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ULL;
    return h;
}

static int id_cache_get(const char *pem, size_t len, uint64_t h, ke_rpc_identity *id)
{
    id_slot *s = &id_cache[h & (ID_CACHE_SLOTS - 1)];
    int hit = 0;
    pthread_mutex_lock(&id_cache_mu);
    if (s->pem && s->hash == h && s->len == len && memcmp(s->pem, pem, len) == 0) {
        *id = s->id;
        hit = 1;
    }
    pthread_mutex_unlock(&id_cache_mu);
    return hit;
}

/* id_cache_put keeps a copy; without memory it keeps nothing (the next
 * call reads the certificate again). */
static void id_cache_put(const char *pem, size_t len, uint64_t h, const ke_rpc_identity *id)
{
    char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, pem, len);
    id_slot *s = &id_cache[h & (ID_CACHE_SLOTS - 1)];
    pthread_mutex_lock(&id_cache_mu);
    char *old = s->pem;
    s->pem = copy;
    s->len = len;
    s->hash = h;
    s->id = *id;
    pthread_mutex_unlock(&id_cache_mu);
    free(old);
}

int ke_rpc_call_identity(const ke_rpc_call *c, ke_rpc_identity *id)
{
    memset(id, 0, sizeof(*id));
    if (ke_rpc_call_is_inproc(c)) {
        id->kind = KE_RPC_ID_INPROC;
        snprintf(id->user, sizeof(id->user), "%s", KE_RPC_INPROC_USER);
        snprintf(id->groups[0], sizeof(id->groups[0]), "%s", KE_RPC_INPROC_GROUP);
        id->n_groups = 1;
        return 0;
    }
    char *pem = NULL;
    int rc = ke_rpc_call_peer_cert(c, &pem);
    if (rc == KE_ENOTFOUND) {
        id->kind = KE_RPC_ID_ANONYMOUS;
        return 0;
    }
    if (rc != 0)
        return rc;
    size_t len = strlen(pem);
    uint64_t h = pem_hash(pem, len);
    if (id_cache_get(pem, len, h, id)) {
        free(pem);
        return 0;
    }
    /* TLS verified the chain already; here only the subject is read. */
    rc = ke_pki_cert_subject(pem, id->user, sizeof(id->user), id->groups, KE_RPC_ID_GROUPS_MAX,
                             &id->n_groups);
    if (rc == 0)
        rc = ke_pki_cert_fingerprint(pem, id->fingerprint);
    if (rc != 0) {
        free(pem);
        memset(id, 0, sizeof(*id));
        return rc == KE_ENOMEM ? rc : KE_ETLS;
    }
    id->kind = KE_RPC_ID_CERT;
    id_cache_put(pem, len, h, id);
    free(pem);
    return 0;
}

/* peer_property copies the first value of the call's auth property name
 * into a malloc'd, NUL-terminated string. 0, KE_ENOTFOUND or KE_ENOMEM. */
static int peer_property(const ke_rpc_call *c, const char *name, char **out)
{
    *out = NULL;
    grpc_auth_context *ctx = grpc_call_auth_context(c->gc);
    if (!ctx)
        return KE_ENOTFOUND;
    int rc = KE_ENOTFOUND;
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (p && (*out = malloc(p->value_length + 1)) != NULL) {
        memcpy(*out, p->value, p->value_length);
        (*out)[p->value_length] = '\0';
        rc = 0;
    } else if (p) {
        rc = KE_ENOMEM;
    }
    grpc_auth_context_release(ctx);
    return rc;
}

int ke_rpc_call_peer_cert(const ke_rpc_call *c, char **pem)
{
    return peer_property(c, GRPC_X509_PEM_CERT_PROPERTY_NAME, pem);
}

int ke_rpc_call_tls_resumed(const ke_rpc_call *c)
{
    char *v = NULL;
    int rc = peer_property(c, GRPC_SSL_SESSION_REUSED_PROPERTY, &v);
    if (rc == 0)
        rc = strcmp(v, "true") == 0;
    free(v);
    return rc == KE_ENOMEM ? KE_ENOTFOUND : rc;
}

ke_rpc_session_cache *ke_rpc_session_cache_new(size_t capacity)
{
    return (ke_rpc_session_cache *)grpc_ssl_session_cache_create_lru(capacity);
}

void ke_rpc_session_cache_free(ke_rpc_session_cache *cache)
{
    if (cache)
        grpc_ssl_session_cache_destroy((grpc_ssl_session_cache *)cache);
}

static void call_on_recv(ke_rpc_tag *t, int ok);
static void call_on_send(ke_rpc_tag *t, int ok);
static void call_on_end(ke_rpc_tag *t, int ok);
static void call_on_start(ke_rpc_tag *t, int ok);
static void server_call_closed(ke_rpc_server *srv);

static ke_rpc_call *call_new(grpc_call *gc, int is_server, ke_rpc_kind kind,
                             const ProtobufCMessageDescriptor *in_desc, const ke_rpc_handler *h,
                             void *ud, const char *method, uint32_t qmax, uint32_t qmax_bytes)
{
    ke_rpc_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->method = strdup(method);
    if (!c->method) {
        free(c);
        return NULL;
    }
    c->gc = gc;
    c->is_server = is_server;
    c->kind = kind;
    c->in_desc = in_desc;
    if (h)
        c->h = *h;
    c->ud = ud;
    c->qmax = qmax ? qmax : KE_RPC_DEFAULT_SEND_QUEUE;
    c->qmax_bytes = qmax_bytes ? qmax_bytes : KE_RPC_DEFAULT_SEND_QUEUE_BYTES;
    c->refs = 1; /* the lifetime reference, dropped after on_close */
    pthread_mutex_init(&c->mu, NULL);
    c->recv_tag = (call_tag){{call_on_recv}, c};
    c->send_tag = (call_tag){{call_on_send}, c};
    c->end_tag = (call_tag){{call_on_end}, c};
    c->start_tag = (call_tag){{call_on_start}, c};
    grpc_metadata_array_init(&c->req_md);
    grpc_metadata_array_init(&c->init_md);
    grpc_metadata_array_init(&c->trailing_md);
    c->recv_details = grpc_empty_slice();
    return c;
}

static void queue_free(send_item *it)
{
    while (it) {
        send_item *next = it->next;
        if (it->bb)
            grpc_byte_buffer_destroy(it->bb);
        free(it);
        it = next;
    }
}

static void call_destroy(ke_rpc_call *c)
{
    queue_free(c->qhead);
    queue_free(c->inflight);
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->gc)
        grpc_call_unref(c->gc);
    grpc_metadata_array_destroy(&c->req_md);
    grpc_metadata_array_destroy(&c->init_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_slice_unref(c->recv_details);
    if (c->have_status_details)
        grpc_slice_unref(c->status_details);
    for (size_t i = 0; i < c->n_send_md; i++) {
        grpc_slice_unref(c->send_md[i].key);
        grpc_slice_unref(c->send_md[i].value);
    }
    free(c->send_md);
    pthread_mutex_destroy(&c->mu);
    free(c->id_key);
    free(c->method);
    free(c);
}

void ke_rpc_call_ref(ke_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void ke_rpc_call_unref(ke_rpc_call *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        call_destroy(c);
}

/* start_batch runs with c->mu held: every batch holds a ref and a pending
 * count until its completion has been handled. */
static int start_batch(ke_rpc_call *c, const grpc_op *ops, size_t n, call_tag *tag)
{
    c->pending++;
    c->refs++;
    grpc_call *gc = c->gc; /* read before the release: see TAG_RELEASE */
    TAG_RELEASE(&tag->tag);
    grpc_call_error err = grpc_call_start_batch(gc, ops, n, &tag->tag, NULL);
    if (err != GRPC_CALL_OK) {
        ke_log_error(LOG_MOD, "start batch failed method=%s err=%d", c->method, (int)err);
        c->pending--;
        c->refs--;
        return KE_EPROTO;
    }
    return 0;
}

static void server_call_release(ke_rpc_server *srv, ke_rpc_call *c);

static void deliver_close(ke_rpc_call *c)
{
    if (c->mm) {
        ke_metric_add(c->mm->active, -1);
        if (c->final.code == KE_RPC_CANCELLED)
            ke_metric_add(c->mm->cancelled, 1);
        else if (c->final.code != KE_RPC_OK)
            ke_metric_add(c->mm->failed, 1);
    }
    if (c->h.on_close && !c->gated)
        c->h.on_close(c, &c->final, c->ud);
    ke_rpc_server *srv = c->srv;
    if (srv)
        server_call_release(srv, c);
    ke_rpc_call_unref(c); /* the lifetime reference */
    if (srv)
        server_call_closed(srv);
}

/* op_done ends the handling of one completed batch (see start_batch). */
static void op_done(ke_rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->pending--;
    int fire = c->ended && c->pending == 0 && !c->closed;
    if (fire) {
        c->closed = 1;
        queue_free(c->qhead);
        c->qhead = c->qtail = NULL;
        c->qlen = 0;
        c->qbytes = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (fire)
        deliver_close(c);
    ke_rpc_call_unref(c);
}

static void start_recv(ke_rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    start_batch(c, &op, 1, &c->recv_tag);
}

/* pump_send starts the next queued send if none is in flight. mu held. */
static void pump_send(ke_rpc_call *c)
{
    if (c->inflight || !c->qhead || c->dead || c->ended)
        return;
    send_item *it = c->qhead;
    c->qhead = it->next;
    if (!c->qhead)
        c->qtail = NULL;
    it->next = NULL;
    c->qlen--;
    c->qbytes -= it->len;

    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!c->initial_md_sent) {
        /* The server's initial metadata goes out with its first send. */
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = 1;
    }
    switch (it->kind) {
    case SEND_MSG:
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = it->bb;
        break;
    case SEND_STATUS:
        if (it->bb) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = it->bb;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)c->final.code;
        ops[n++].data.send_status_from_server.status_details =
            c->have_status_details ? &c->status_details : NULL;
        break;
    case SEND_CLOSE:
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        break;
    }
    c->inflight = it;
    if (start_batch(c, ops, n, &c->send_tag) != 0) {
        c->inflight = NULL;
        c->dead = 1;
        queue_free(it);
    }
}

/* call_open_locked: may more be queued on this call? mu held. */
static int call_open_locked(const ke_rpc_call *c)
{
    return !(c->closed || c->ended || c->dead || c->finishing);
}

/* enqueue_locked appends `it` and starts it if nothing is in flight; a
 * STATUS or CLOSE item ends the sending side. mu held, call open. */
static void enqueue_locked(ke_rpc_call *c, send_item *it)
{
    if (c->qtail)
        c->qtail->next = it;
    else
        c->qhead = it;
    c->qtail = it;
    c->qlen++;
    c->qbytes += it->len;
    if (it->kind != SEND_MSG)
        c->finishing = 1;
    pump_send(c);
}

/* over_bytes_locked: would `len` more bytes take the queue past its byte
 * bound? Never when nothing is queued or in flight (one large message may
 * always go). mu held. */
static int over_bytes_locked(const ke_rpc_call *c, size_t len)
{
    size_t inflight = c->inflight ? c->inflight->len : 0;
    if (!c->qhead && !c->inflight)
        return 0;
    return c->qbytes + inflight + len > c->qmax_bytes;
}

static int enqueue(ke_rpc_call *c, send_item *it, enum send_bound bound)
{
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (!call_open_locked(c))
        rc = KE_ECLOSED;
    else if (bound != BOUND_NONE && c->qlen >= c->qmax)
        rc = KE_EFULL;
    else if (bound == BOUND_BYTES && over_bytes_locked(c, it->len))
        rc = KE_EFULL;
    else
        enqueue_locked(c, it);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int send_bb(ke_rpc_call *c, grpc_byte_buffer *bb, enum send_bound bound)
{
    send_item *it = calloc(1, sizeof(*it));
    if (!it) {
        grpc_byte_buffer_destroy(bb);
        return KE_ENOMEM;
    }
    it->kind = SEND_MSG;
    it->bb = bb;
    it->len = grpc_byte_buffer_length(bb);
    int rc = enqueue(c, it, bound);
    if (rc != 0)
        queue_free(it);
    return rc;
}

int ke_rpc_call_send(ke_rpc_call *c, const ProtobufCMessage *msg)
{
    if (!c || !msg)
        return KE_EINVAL;
    return send_bb(c, bb_from_msg(msg), BOUND_BYTES);
}

int ke_rpc_call_send_control(ke_rpc_call *c, const ProtobufCMessage *msg)
{
    if (!c || !msg)
        return KE_EINVAL;
    return send_bb(c, bb_from_msg(msg), BOUND_COUNT);
}

int ke_rpc_call_send_raw(ke_rpc_call *c, const void *data, size_t len)
{
    if (!c || (!data && len))
        return KE_EINVAL;
    return send_bb(c, bb_from_bytes(data, len), BOUND_BYTES);
}

int ke_rpc_call_finishf(ke_rpc_call *call, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ke_rpc_call_finish(call, code, msg, NULL);
}

int ke_rpc_call_finish(ke_rpc_call *c, int code, const char *message,
                       const ProtobufCMessage *reply)
{
    if (!c || !c->is_server)
        return KE_EINVAL;
    send_item *it = calloc(1, sizeof(*it));
    if (!it)
        return KE_ENOMEM;
    it->kind = SEND_STATUS;
    it->bb = reply ? bb_from_msg(reply) : NULL;
    int rc = KE_ECLOSED;
    pthread_mutex_lock(&c->mu);
    if (call_open_locked(c)) {
        status_set(&c->final, code, message, message ? strlen(message) : 0);
        if (message && *message) {
            c->status_details = grpc_slice_from_copied_string(c->final.message);
            c->have_status_details = 1;
        }
        enqueue_locked(c, it);
        rc = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != 0)
        queue_free(it);
    return rc;
}

int ke_rpc_call_close_send(ke_rpc_call *c)
{
    if (!c || c->is_server)
        return KE_EINVAL;
    send_item *it = calloc(1, sizeof(*it));
    if (!it)
        return KE_ENOMEM;
    it->kind = SEND_CLOSE;
    int rc = enqueue(c, it, BOUND_NONE);
    if (rc != 0)
        queue_free(it);
    return rc;
}

void ke_rpc_call_cancel(ke_rpc_call *c)
{
    if (c)
        grpc_call_cancel(c->gc, NULL);
}

int ke_rpc_call_abort(ke_rpc_call *c, int code, const char *message)
{
    if (!c || code <= KE_RPC_OK || code > KE_RPC_UNAUTHENTICATED)
        return KE_EINVAL;
    char why[sizeof(c->final.message)];
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->ended || c->aborted) {
        pthread_mutex_unlock(&c->mu);
        return KE_ECLOSED;
    }
    c->aborted = 1;
    c->finishing = 1;
    status_set(&c->final, code, message, message ? strlen(message) : 0);
    snprintf(why, sizeof(why), "%s", c->final.message);
    send_item *q = c->qhead;
    c->qhead = c->qtail = NULL;
    c->qlen = 0;
    c->qbytes = 0;
    pthread_mutex_unlock(&c->mu);
    queue_free(q); /* the memory a non-reading peer pinned, freed now */
    grpc_call_cancel_with_status(c->gc, (grpc_status_code)code, why, NULL);
    return 0;
}

int ke_rpc_call_close_slow(ke_rpc_call *c, const char *message)
{
    int rc = ke_rpc_call_abort(c, KE_RPC_RESOURCE_EXHAUSTED, message);
    if (rc == 0 && c->mm)
        ke_metric_add(c->mm->slow, 1);
    return rc;
}

const char *ke_rpc_call_method(const ke_rpc_call *c) { return c->method; }

void ke_rpc_call_set_data(ke_rpc_call *c, void *data) { c->data = data; }

void *ke_rpc_call_get_data(const ke_rpc_call *c) { return c->data; }

int ke_rpc_call_metadata(const ke_rpc_call *c, const char *key, char *buf, size_t len)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->req_md.count; i++) {
        const grpc_metadata *m = &c->req_md.metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) != klen ||
            memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) != 0)
            continue;
        size_t vlen = GRPC_SLICE_LENGTH(m->value);
        if (vlen + 1 > len)
            return KE_EFULL;
        memcpy(buf, GRPC_SLICE_START_PTR(m->value), vlen);
        buf[vlen] = '\0';
        return 0;
    }
    return KE_ENOTFOUND;
}

int ke_rpc_call_peer_cn(const ke_rpc_call *c, char *buf, size_t len)
{
    grpc_auth_context *ctx = grpc_call_auth_context(c->gc);
    if (!ctx)
        return KE_ENOTFOUND;
    int rc = KE_ENOTFOUND;
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (p && p->value_length + 1 <= len) {
        memcpy(buf, p->value, p->value_length);
        buf[p->value_length] = '\0';
        rc = 0;
    } else if (p) {
        rc = KE_EFULL;
    }
    grpc_auth_context_release(ctx);
    return rc;
}

/* server_call_admit asks the server's authorizer about a gated call's
 * first request (msg, or NULL when the client half-closed a stream without
 * one). On yes the handler starts: on_open runs, and the caller goes on to
 * on_message / on_half_close; returns 1. On no the call is finished with
 * the authorizer's code and reason and the handler never runs (not even
 * on_close); returns 0. Runs on the loop thread that received the message,
 * before any handler callback of the call. */
static int server_call_admit(ke_rpc_call *c, const ProtobufCMessage *msg)
{
    char why[256] = "";
    int code = c->authz(c, msg, why, sizeof(why), c->authz_ud);
    if (code != KE_RPC_OK) {
        if (code < 0 || code > KE_RPC_UNAUTHENTICATED)
            code = KE_RPC_PERMISSION_DENIED; /* never let a bad code read as success */
        ke_rpc_call_finish(c, code, why[0] ? why : "not authorized", NULL);
        return 0;
    }
    c->gated = 0;
    if (c->h.on_open)
        c->h.on_open(c, c->ud);
    return 1;
}

static void server_call_opened(ke_rpc_server *srv, ke_rpc_call *c);

static void call_on_recv(ke_rpc_tag *t, int ok)
{
    ke_rpc_call *c = ((call_tag *)t)->call;
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (c->srv && c->open_deadline_ms && !c->first_seen) {
        c->first_seen = 1; /* recv callbacks of a call never run concurrently */
        server_call_opened(c->srv, c);
    }
    if (c->refused) {
        if (bb) /* finished at accept: nothing more is read */
            grpc_byte_buffer_destroy(bb);
    } else if (ok && bb) {
        ProtobufCMessage *msg = NULL;
        char why[200] = "";
        int rc = bb_decode(bb, c->in_desc, &msg, c->is_server ? why : NULL, sizeof(why));
        grpc_byte_buffer_destroy(bb);
        if (rc != 0) {
            if (!why[0])
                snprintf(why, sizeof(why), "%s is not a valid %s message",
                         c->is_server ? "request" : "reply", c->in_desc->name);
            ke_log_warn(LOG_MOD, "refused frame method=%s reason=\"%s\"", c->method, why);
            if (c->mm)
                ke_metric_add(c->mm->invalid, 1);
            if (c->is_server)
                ke_rpc_call_finish(c, KE_RPC_INVALID_ARGUMENT, why, NULL);
            else
                grpc_call_cancel_with_status(c->gc, GRPC_STATUS_INTERNAL, why, NULL);
        } else if (c->gated && !server_call_admit(c, msg)) {
            protobuf_c_message_free_unpacked(msg, NULL); /* refused: the call is finished */
        } else {
            c->got_message = 1;
            if (c->h.on_message)
                c->h.on_message(c, msg, c->ud);
            protobuf_c_message_free_unpacked(msg, NULL);
            int more = !c->is_server || c->kind == KE_RPC_CLIENT_STREAM ||
                       c->kind == KE_RPC_BIDI_STREAM;
            if (more) {
                pthread_mutex_lock(&c->mu);
                if (!c->ended)
                    start_recv(c);
                pthread_mutex_unlock(&c->mu);
            }
        }
    } else if (ok) {
        /* The peer half-closed. A unary-request method that got no request
         * cannot be served. */
        if (c->is_server && !c->got_message &&
            (c->kind == KE_RPC_UNARY || c->kind == KE_RPC_SERVER_STREAM))
            ke_rpc_call_finish(c, KE_RPC_INVALID_ARGUMENT, "missing request message", NULL);
        else if (c->gated && !server_call_admit(c, NULL))
            ; /* refused: the call is finished */
        else if (c->h.on_half_close)
            c->h.on_half_close(c, c->ud);
    }
    op_done(c);
}

static void call_on_send(ke_rpc_tag *t, int ok)
{
    ke_rpc_call *c = ((call_tag *)t)->call;
    pthread_mutex_lock(&c->mu);
    send_item *it = c->inflight;
    c->inflight = NULL;
    if (!ok)
        c->dead = 1;
    else
        pump_send(c);
    int drained = ok && it && it->kind == SEND_MSG && !c->qhead && !c->inflight &&
                  !c->finishing && !c->gated && c->h.on_drain;
    pthread_mutex_unlock(&c->mu);
    queue_free(it);
    if (drained)
        c->h.on_drain(c, c->ud);
    op_done(c);
}

static void call_on_end(ke_rpc_tag *t, int ok)
{
    ke_rpc_call *c = ((call_tag *)t)->call;
    (void)ok;
    pthread_mutex_lock(&c->mu);
    c->ended = 1;
    if (c->is_server) {
        if (c->cancelled && !c->aborted)
            status_set(&c->final, KE_RPC_CANCELLED, "cancelled", 9);
    } else {
        status_set(&c->final, (int)c->status, (const char *)GRPC_SLICE_START_PTR(c->recv_details),
                   GRPC_SLICE_LENGTH(c->recv_details));
    }
    pthread_mutex_unlock(&c->mu);
    op_done(c);
}

static void call_on_start(ke_rpc_tag *t, int ok)
{
    (void)ok;
    op_done(((call_tag *)t)->call);
}

/* ---------------------------------------------------------------- server */

typedef struct method {
    struct method *next;
    char *path;
    ke_rpc_kind kind;
    const ProtobufCMessageDescriptor *req;
    ke_rpc_handler h;
    void *ud;
    void *handle;
    ke_rpc_server *srv;
    method_metrics mm;
    int64_t open_timeout_ms; /* 0: none (ke_rpc_server_set_open_timeout) */
} method;

typedef struct accept_req {
    ke_rpc_tag tag;
    method *m; /* NULL: the generic accept for unregistered methods */
    ke_rpc_server *srv;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
} accept_req;

/* A call to an unregistered method, answered UNIMPLEMENTED. */
typedef struct unimpl_call {
    ke_rpc_tag tag;
    ke_rpc_server *srv;
    grpc_call *call;
    int cancelled;
    grpc_slice details;
} unimpl_call;

struct ke_rpc_server {
    ke_rpc_loop *loop;
    grpc_server *gs;
    char *listen;
    grpc_server_credentials *creds;
    uint32_t send_queue, send_queue_bytes;
    uint32_t max_streams_per_identity; /* 0: no cap */
    ke_map *id_streams;        /* identity key -> open streams (uintptr_t), under mu */
    ke_rpc_call *waiting;      /* calls with an open deadline and no first message; mu */
    struct ke_rpc_server *next_on_loop; /* loop->servers, under loop->mu */
    int port;
    method *methods;
    ke_rpc_authorize_fn authz; /* NULL: every call goes to its handler */
    void *authz_ud;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stopping, stopped, shutdown_done;
    int active;  /* calls accepted and not yet closed, incl. unimplemented ones */
    int accepts; /* accept requests outstanding */
    ke_rpc_tag shutdown_tag;
};

static void server_on_accept(ke_rpc_tag *t, int ok);

static ke_metric *streams_refused; /* ke_rpc_server_streams_refused_total */
static pthread_once_t streams_refused_once = PTHREAD_ONCE_INIT;

static void streams_refused_init(void)
{
    ke_metrics_counter_new("ke_rpc_server_streams_refused_total",
                           "streaming calls refused because their identity had "
                           "max_streams_per_identity open",
                           NULL, &streams_refused);
}

/* waiting_unlink takes c off srv->waiting. srv->mu held. */
static void waiting_unlink(ke_rpc_server *srv, ke_rpc_call *c)
{
    if (!c->waiting)
        return;
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        srv->waiting = c->wnext;
    if (c->wnext)
        c->wnext->wprev = c->wprev;
    c->wprev = c->wnext = NULL;
    c->waiting = 0;
}

/* server_call_opened: c's first message (or half-close) came, so its open
 * deadline no longer applies. */
static void server_call_opened(ke_rpc_server *srv, ke_rpc_call *c)
{
    pthread_mutex_lock(&srv->mu);
    waiting_unlink(srv, c);
    pthread_mutex_unlock(&srv->mu);
}

/* server_call_release undoes what accept counted for c: its identity's
 * stream and its place among the waiting calls. */
static void server_call_release(ke_rpc_server *srv, ke_rpc_call *c)
{
    pthread_mutex_lock(&srv->mu);
    waiting_unlink(srv, c);
    if (c->id_key) {
        uintptr_t n = (uintptr_t)ke_map_get(srv->id_streams, c->id_key);
        if (n <= 1)
            ke_map_del(srv->id_streams, c->id_key);
        else if (ke_map_put(srv->id_streams, c->id_key, (void *)(n - 1), NULL) != 0)
            ke_log_error(LOG_MOD, "cannot update the stream count identity=%s", c->id_key);
        free(c->id_key);
        c->id_key = NULL;
    }
    pthread_mutex_unlock(&srv->mu);
}

/* server_sweep closes srv's calls whose open deadline passed. Runs on a
 * loop thread (loop_sweep); cancels only, never blocks. */
static void server_sweep(ke_rpc_server *srv, int64_t now)
{
    pthread_mutex_lock(&srv->mu);
    for (ke_rpc_call *c = srv->waiting, *next; c; c = next) {
        next = c->wnext;
        if (c->open_deadline_ms > now)
            continue;
        waiting_unlink(srv, c); /* the call stays alive: on_close is still ahead */
        char why[200];
        snprintf(why, sizeof(why), "no request message within the open timeout of %s",
                 c->method);
        ke_log_warn(LOG_MOD, "closing a call that sent nothing method=%s", c->method);
        if (ke_rpc_call_abort(c, KE_RPC_DEADLINE_EXCEEDED, why) == 0 && c->mm)
            ke_metric_add(c->mm->open_timeouts, 1);
    }
    pthread_mutex_unlock(&srv->mu);
}

/* loop_sweep runs server_sweep on the loop's servers about every
 * KE_RPC_SWEEP_MS: the first loop thread past the time does it. */
static void loop_sweep(ke_rpc_loop *loop)
{
    int64_t now = ke_time_mono_ms();
    int64_t due = atomic_load(&loop->next_sweep_ms);
    if (now < due || !atomic_compare_exchange_strong(&loop->next_sweep_ms, &due,
                                                     now + KE_RPC_SWEEP_MS))
        return;
    pthread_mutex_lock(&loop->mu);
    for (ke_rpc_server *srv = loop->servers; srv; srv = srv->next_on_loop)
        server_sweep(srv, now);
    pthread_mutex_unlock(&loop->mu);
}

/* server_count_stream counts a streaming call under its caller's identity.
 * Returns 0, or KE_EFULL with the refusal in why when the identity has
 * the cap open already. In-process calls are not counted. */
static int server_count_stream(ke_rpc_server *srv, ke_rpc_call *c, char *why, size_t len)
{
    ke_rpc_identity id;
    int rc = ke_rpc_call_identity(c, &id);
    if (rc == 0 && id.kind == KE_RPC_ID_INPROC)
        return 0;
    /* Anonymous callers, and certificates the authorizer will refuse, share
     * one count: they cannot be told apart. */
    const char *key = rc == 0 && id.kind == KE_RPC_ID_CERT ? id.user : "";
    int out = 0;
    pthread_mutex_lock(&srv->mu);
    uintptr_t n = (uintptr_t)ke_map_get(srv->id_streams, key);
    if (n >= srv->max_streams_per_identity) {
        snprintf(why, len, "too many streams: %s%s%s has %u open (grpc.max_streams_per_identity"
                           "=%u); close some first",
                 *key ? "user \"" : "anonymous callers", key, *key ? "\"" : "", (unsigned)n,
                 srv->max_streams_per_identity);
        out = KE_EFULL;
    } else if (!(c->id_key = strdup(key)) ||
               ke_map_put(srv->id_streams, key, (void *)(n + 1), NULL) != 0) {
        free(c->id_key);
        c->id_key = NULL;
        snprintf(why, len, "out of memory");
        out = KE_ENOMEM;
    }
    pthread_mutex_unlock(&srv->mu);
    return out;
}

static void server_call_closed(ke_rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->active--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Accept requests posted per registered method at once (server start). */
#define KE_RPC_ACCEPTS_PER_METHOD 4

/* request_accept asks grpc for the next call of a->m. srv->mu held. */
static void request_accept(accept_req *a)
{
    ke_rpc_server *srv = a->srv;
    grpc_metadata_array_init(&a->md);
    a->call = NULL;
    grpc_call_error err;
    /* read before the release: see TAG_RELEASE */
    void *handle = a->m ? a->m->handle : NULL;
    grpc_server *gs = srv->gs;
    grpc_completion_queue *cq = srv->loop->cq;
    if (!handle)
        grpc_call_details_init(&a->details);
    TAG_RELEASE(&a->tag);
    if (handle)
        err = grpc_server_request_registered_call(gs, handle, &a->call, &a->deadline, &a->md,
                                                  NULL, cq, cq, &a->tag);
    else
        err = grpc_server_request_call(gs, &a->call, &a->details, &a->md, cq, cq, &a->tag);
    if (err == GRPC_CALL_OK) {
        srv->accepts++;
    } else {
        ke_log_error(LOG_MOD, "request call failed err=%d", (int)err);
        grpc_metadata_array_destroy(&a->md);
        if (!handle)
            grpc_call_details_destroy(&a->details);
        free(a);
    }
}

static void unimpl_on_done(ke_rpc_tag *t, int ok)
{
    unimpl_call *u = (unimpl_call *)t;
    (void)ok;
    grpc_call_unref(u->call);
    grpc_slice_unref(u->details);
    server_call_closed(u->srv);
    free(u);
}

static void server_answer_unimplemented(ke_rpc_server *srv, grpc_call *gc)
{
    unimpl_call *u = calloc(1, sizeof(*u));
    if (!u) {
        grpc_call_cancel(gc, NULL);
        grpc_call_unref(gc);
        server_call_closed(srv);
        return;
    }
    u->tag.fn = unimpl_on_done;
    u->srv = srv;
    u->call = gc;
    u->details = grpc_slice_from_static_string("method not implemented by this server");
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &u->details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
    TAG_RELEASE(&u->tag);
    if (grpc_call_start_batch(gc, ops, 3, &u->tag, NULL) != GRPC_CALL_OK)
        unimpl_on_done(&u->tag, 0);
}

static void server_on_accept(ke_rpc_tag *t, int ok)
{
    accept_req *a = (accept_req *)t;
    ke_rpc_server *srv = a->srv;
    method *m = a->m;
    grpc_call *gc = a->call;
    grpc_metadata_array md = a->md;
    char path[256] = "";
    if (!m && ok) {
        size_t n = GRPC_SLICE_LENGTH(a->details.method);
        if (n >= sizeof(path))
            n = sizeof(path) - 1;
        memcpy(path, GRPC_SLICE_START_PTR(a->details.method), n);
        path[n] = '\0';
        grpc_call_details_destroy(&a->details);
    } else if (!m) {
        grpc_call_details_destroy(&a->details);
    }

    pthread_mutex_lock(&srv->mu);
    srv->accepts--;
    if (ok)
        srv->active++;
    if (ok && !srv->stopping)
        request_accept(a); /* re-arm with the same request object */
    else
        free(a);
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);

    if (!ok) {
        grpc_metadata_array_destroy(&md);
        return;
    }
    if (!m) {
        char ep[KE_LOG_ESC_SIZE(sizeof(path))];
        ke_log_warn(LOG_MOD, "unimplemented method=\"%s\"", ke_log_esc(path, ep, sizeof(ep)));
        grpc_metadata_array_destroy(&md);
        server_answer_unimplemented(srv, gc);
        return;
    }

    ke_rpc_call *c = call_new(gc, 1, m->kind, m->req, &m->h, m->ud, m->path, srv->send_queue,
                              srv->send_queue_bytes);
    if (!c) {
        grpc_metadata_array_destroy(&md);
        grpc_call_cancel(gc, NULL);
        grpc_call_unref(gc);
        server_call_closed(srv);
        return;
    }
    c->srv = srv;
    c->mm = &m->mm;
    c->req_md = md;
    c->gated = srv->authz != NULL; /* on_open waits for the first request's verdict */
    c->authz = srv->authz;
    c->authz_ud = srv->authz_ud;
    ke_metric_add(m->mm.calls, 1);
    ke_metric_add(m->mm.active, 1);
    char why[256];
    int count_rc = 0;
    if (srv->max_streams_per_identity && m->kind != KE_RPC_UNARY)
        count_rc = server_count_stream(srv, c, why, sizeof(why));
    if (count_rc != 0) {
        /* Refused before anything: the handler never sees the call. */
        c->refused = 1;
        c->gated = 1;
        pthread_once(&streams_refused_once, streams_refused_init);
        ke_metric_add(streams_refused, 1);
        ke_log_warn(LOG_MOD, "refused stream method=%s reason=\"%s\"", m->path, why);
    } else if (m->open_timeout_ms > 0) {
        c->open_deadline_ms = ke_time_mono_ms() + m->open_timeout_ms;
        pthread_mutex_lock(&srv->mu);
        c->wnext = srv->waiting;
        if (srv->waiting)
            srv->waiting->wprev = c;
        srv->waiting = c;
        c->waiting = 1;
        pthread_mutex_unlock(&srv->mu);
    }

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    pthread_mutex_lock(&c->mu);
    c->pending++; /* setup guard: no on_close before on_open returns */
    c->refs++;
    start_batch(c, &op, 1, &c->end_tag);
    pthread_mutex_unlock(&c->mu);

    if (c->refused)
        ke_rpc_call_finish(c, KE_RPC_RESOURCE_EXHAUSTED, why, NULL);
    else if (!c->gated && c->h.on_open)
        c->h.on_open(c, c->ud);

    pthread_mutex_lock(&c->mu);
    if (!c->ended)
        start_recv(c);
    pthread_mutex_unlock(&c->mu);
    op_done(c);
}

static void server_on_shutdown(ke_rpc_tag *t, int ok)
{
    ke_rpc_server *srv = (ke_rpc_server *)((char *)t - offsetof(ke_rpc_server, shutdown_tag));
    (void)ok;
    pthread_mutex_lock(&srv->mu);
    srv->shutdown_done = 1;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* tls_load reads the PEM files named in tls. Returns 0 or KE_ETLS. */
static int tls_load(const ke_rpc_tls *tls, char **ca, char **cert, char **key)
{
    *ca = *cert = *key = NULL;
    const char *bad = NULL;
    if (tls->ca_file && !(*ca = read_file(tls->ca_file)))
        bad = tls->ca_file;
    else if (tls->cert_file && !(*cert = read_file(tls->cert_file)))
        bad = tls->cert_file;
    else if (tls->key_file && !(*key = read_file(tls->key_file)))
        bad = tls->key_file;
    else if (!tls->cert_file != !tls->key_file)
        bad = "cert_file and key_file must be given together";
    if (bad) {
        ke_log_error(LOG_MOD, "cannot load TLS material: %s", bad);
        free(*ca);
        free(*cert);
        free(*key);
        *ca = *cert = *key = NULL;
        return KE_ETLS;
    }
    return 0;
}

static void args_fill(grpc_arg *a, size_t *n, uint32_t max_msg)
{
    a[*n].type = GRPC_ARG_INTEGER;
    a[*n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    a[(*n)++].value.integer = (int)(max_msg ? max_msg : KE_RPC_DEFAULT_MAX_MESSAGE);
}

int ke_rpc_server_new(ke_rpc_loop *loop, const ke_rpc_server_opts *opts, ke_rpc_server **out)
{
    if (!loop || !opts || !out)
        return KE_EINVAL;
    ke_rpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return KE_ENOMEM;
    srv->loop = loop;
    srv->send_queue = opts->send_queue;
    srv->send_queue_bytes = opts->send_queue_bytes;
    srv->max_streams_per_identity = opts->max_streams_per_identity;
    srv->shutdown_tag.fn = server_on_shutdown;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (opts->listen && !(srv->listen = strdup(opts->listen)))
        goto nomem;
    if (!(srv->id_streams = ke_map_new()))
        goto nomem;

    if (opts->tls) {
        char *ca, *cert, *key;
        if (tls_load(opts->tls, &ca, &cert, &key) != 0 || !cert) {
            free(ca);
            free(cert);
            free(key);
            ke_rpc_server_free(srv);
            return KE_ETLS;
        }
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        grpc_ssl_client_certificate_request_type req =
            opts->tls->client_auth == KE_RPC_CLIENT_AUTH_REQUIRE
                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : opts->tls->client_auth == KE_RPC_CLIENT_AUTH_REQUEST
                ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
        srv->creds = grpc_ssl_server_credentials_create_ex(ca, &pair, 1, req, NULL);
        free(ca);
        free(cert);
        free(key);
        if (!srv->creds) {
            ke_rpc_server_free(srv);
            return KE_ETLS;
        }
    } else {
        srv->creds = grpc_insecure_server_credentials_create();
    }

    grpc_arg args[3];
    size_t nargs = 0;
    args_fill(args, &nargs, opts->max_message_bytes);
    if (opts->max_concurrent_streams) {
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
        args[nargs++].value.integer = (int)opts->max_concurrent_streams;
    }
    if (opts->tls) {
        uint32_t fs = opts->tls_max_frame_size ? opts->tls_max_frame_size
                                               : KE_RPC_DEFAULT_TLS_MAX_FRAME;
        if (fs < KE_RPC_TLS_MAX_FRAME_MIN || fs > KE_RPC_TLS_MAX_FRAME_MAX) {
            /* grpc would clamp it silently: refuse instead */
            ke_log_error(LOG_MOD, "TLS max frame size %u is outside %u..%u", (unsigned)fs,
                         KE_RPC_TLS_MAX_FRAME_MIN, KE_RPC_TLS_MAX_FRAME_MAX);
            ke_rpc_server_free(srv);
            return KE_EINVAL;
        }
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = (char *)GRPC_ARG_TSI_MAX_FRAME_SIZE;
        args[nargs++].value.integer = (int)fs;
    }
    grpc_channel_args ca = {nargs, args};
    srv->gs = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(srv->gs, loop->cq, NULL);
    pthread_mutex_lock(&loop->mu);
    srv->next_on_loop = loop->servers;
    loop->servers = srv;
    pthread_mutex_unlock(&loop->mu);
    *out = srv;
    return 0;
nomem:
    ke_rpc_server_free(srv);
    return KE_ENOMEM;
}

int ke_rpc_server_add_method(ke_rpc_server *srv, const char *path, ke_rpc_kind kind,
                             const ProtobufCMessageDescriptor *req, const ke_rpc_handler *h,
                             void *ud)
{
    if (!srv || !path || !req || !h || srv->started)
        return KE_EINVAL;
    method *m = calloc(1, sizeof(*m));
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return KE_ENOMEM;
    }
    m->kind = kind;
    m->req = req;
    m->h = *h;
    m->ud = ud;
    m->srv = srv;
    m->handle = grpc_server_register_method(srv->gs, path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    if (!m->handle) {
        free(m->path);
        free(m);
        return KE_EEXIST;
    }
    method_metrics_init(&m->mm, path);
    m->next = srv->methods;
    srv->methods = m;
    return 0;
}

int ke_rpc_server_set_open_timeout(ke_rpc_server *srv, const char *path, int64_t ms)
{
    if (!srv || !path || ms < 0 || srv->started)
        return KE_EINVAL;
    for (method *m = srv->methods; m; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            m->open_timeout_ms = ms;
            return 0;
        }
    }
    return KE_ENOTFOUND;
}

int ke_rpc_server_set_authorizer(ke_rpc_server *srv, ke_rpc_authorize_fn fn, void *ud)
{
    if (!srv || !fn || srv->started)
        return KE_EINVAL;
    srv->authz = fn;
    srv->authz_ud = ud;
    return 0;
}

int ke_rpc_server_start(ke_rpc_server *srv)
{
    if (!srv || srv->started)
        return KE_EINVAL;
    if (srv->listen) {
        srv->port = grpc_server_add_http2_port(srv->gs, srv->listen, srv->creds);
        if (srv->port == 0) {
            ke_log_error(LOG_MOD, "cannot listen addr=%s", srv->listen);
            return KE_EIO;
        }
    }
    grpc_server_start(srv->gs);
    srv->started = 1;
    pthread_mutex_lock(&srv->mu);
    /* Several outstanding accepts per method: grpc hands a new call only
     * to a posted request, and each is re-armed after its call is set up,
     * so with one a storm of Tunnel opens would be taken one at a time by
     * one loop thread. Every loop thread can take one now. */
    for (method *m = srv->methods; m; m = m->next) {
        for (int k = 0; k < KE_RPC_ACCEPTS_PER_METHOD; k++) {
            accept_req *a = calloc(1, sizeof(*a));
            if (!a)
                break; /* fewer outstanding: slower, still served */
            a->tag.fn = server_on_accept;
            a->m = m;
            a->srv = srv;
            request_accept(a);
        }
    }
    accept_req *g = calloc(1, sizeof(*g));
    if (g) {
        g->tag.fn = server_on_accept;
        g->srv = srv;
        request_accept(g);
    }
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

int ke_rpc_server_port(const ke_rpc_server *srv) { return srv ? srv->port : 0; }

void ke_rpc_server_stop(ke_rpc_server *srv)
{
    if (!srv || !srv->started)
        return;
    blocking_call_check("ke_rpc_server_stop");
    pthread_mutex_lock(&srv->mu);
    if (srv->stopping) {
        while (!srv->stopped)
            pthread_cond_wait(&srv->cv, &srv->mu);
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->stopping = 1;
    pthread_mutex_unlock(&srv->mu);

    grpc_server *gs = srv->gs; /* read before the release: see TAG_RELEASE */
    grpc_completion_queue *cq = srv->loop->cq;
    TAG_RELEASE(&srv->shutdown_tag);
    grpc_server_shutdown_and_notify(gs, cq, &srv->shutdown_tag);
    grpc_server_cancel_all_calls(srv->gs);

    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done || srv->accepts > 0 || srv->active > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    srv->stopped = 1;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

void ke_rpc_server_free(ke_rpc_server *srv)
{
    if (!srv)
        return;
    ke_rpc_server_stop(srv);
    pthread_mutex_lock(&srv->loop->mu);
    for (ke_rpc_server **pp = &srv->loop->servers; *pp; pp = &(*pp)->next_on_loop) {
        if (*pp == srv) {
            *pp = srv->next_on_loop;
            break;
        }
    }
    pthread_mutex_unlock(&srv->loop->mu);
    if (srv->gs)
        grpc_server_destroy(srv->gs);
    if (srv->creds)
        grpc_server_credentials_release(srv->creds);
    while (srv->methods) {
        method *m = srv->methods;
        srv->methods = m->next;
        free(m->path);
        free(m);
    }
    ke_map_free(srv->id_streams);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv->listen);
    free(srv);
}

/* ---------------------------------------------------------------- client */

struct ke_rpc_channel {
    ke_rpc_loop *loop;
    grpc_channel *gch;
};

int ke_rpc_channel_new(ke_rpc_loop *loop, const char *target, const ke_rpc_channel_opts *opts,
                       ke_rpc_channel **out)
{
    if (!loop || !target || !out)
        return KE_EINVAL;
    ke_rpc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return KE_ENOMEM;
    ch->loop = loop;
    grpc_channel_credentials *creds;
    grpc_arg args[4];
    size_t nargs = 0;
    args_fill(args, &nargs, opts ? opts->max_message_bytes : 0);
    const ke_rpc_tls *tls = opts ? opts->tls : NULL;
    if (tls && opts->session_cache) /* grpc takes its own reference */
        args[nargs++] = grpc_ssl_session_cache_create_channel_arg(
            (grpc_ssl_session_cache *)opts->session_cache);
    if (tls && tls->skip_server_verify) {
        grpc_tls_credentials_options *to = grpc_tls_credentials_options_create();
        grpc_tls_credentials_options_set_verify_server_cert(to, 0);
        grpc_tls_credentials_options_set_check_call_host(to, 0);
        creds = grpc_tls_credentials_create(to);
    } else if (tls) {
        char *ca, *cert, *key;
        if (tls_load(tls, &ca, &cert, &key) != 0) {
            free(ch);
            return KE_ETLS;
        }
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        free(ca);
        free(cert);
        free(key);
        if (tls->server_name) {
            args[nargs].type = GRPC_ARG_STRING;
            args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            args[nargs++].value.string = (char *)tls->server_name;
        }
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_channel_args ca = {nargs, args};
    ch->gch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    *out = ch;
    return 0;
}

int ke_rpc_channel_new_inproc(ke_rpc_loop *loop, ke_rpc_server *srv, ke_rpc_channel **out)
{
    if (!loop || !srv || !srv->started || !out)
        return KE_EINVAL;
    ke_rpc_channel *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return KE_ENOMEM;
    ch->loop = loop;
    ch->gch = ke_rpc_inproc_channel_create(srv->gs, NULL);
    *out = ch;
    return 0;
}

void ke_rpc_channel_free(ke_rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->gch);
    free(ch);
}

static grpc_call *channel_call(ke_rpc_channel *ch, const char *path, int64_t timeout_ms)
{
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_call *gc = grpc_channel_create_call(ch->gch, NULL, GRPC_PROPAGATE_DEFAULTS, ch->loop->cq,
                                             method, NULL, deadline_from(timeout_ms), NULL);
    grpc_slice_unref(method);
    return gc;
}

static int md_fill(const ke_rpc_call_opts *opts, grpc_metadata **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!opts || !opts->n_md)
        return 0;
    grpc_metadata *md = calloc(opts->n_md, sizeof(*md));
    if (!md)
        return KE_ENOMEM;
    for (size_t i = 0; i < opts->n_md; i++) {
        md[i].key = grpc_slice_from_copied_string(opts->md[i].key);
        md[i].value = grpc_slice_from_copied_string(opts->md[i].value);
    }
    *out = md;
    *n = opts->n_md;
    return 0;
}

int ke_rpc_call_start(ke_rpc_channel *ch, const char *path, const ProtobufCMessageDescriptor *resp,
                      const ke_rpc_handler *h, void *ud, const ke_rpc_call_opts *opts,
                      ke_rpc_call **out)
{
    if (!ch || !path || !resp || !h || !out)
        return KE_EINVAL;
    grpc_call *gc = channel_call(ch, path, opts ? opts->timeout_ms : 0);
    if (!gc)
        return KE_EIO;
    ke_rpc_call *c = call_new(gc, 0, KE_RPC_BIDI_STREAM, resp, h, ud, path,
                              opts ? opts->send_queue : 0, opts ? opts->send_queue_bytes : 0);
    if (!c) {
        grpc_call_unref(gc);
        return KE_ENOMEM;
    }
    if (md_fill(opts, &c->send_md, &c->n_send_md) != 0) {
        call_destroy(c);
        return KE_ENOMEM;
    }
    c->refs++; /* the caller's reference */
    c->initial_md_sent = 1; /* sent by the start batch below */

    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->n_send_md;
    ops[0].data.send_initial_metadata.metadata = c->send_md;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
    grpc_op end;
    memset(&end, 0, sizeof(end));
    end.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    end.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
    end.data.recv_status_on_client.status = &c->status;
    end.data.recv_status_on_client.status_details = &c->recv_details;

    pthread_mutex_lock(&c->mu);
    int rc = start_batch(c, ops, 2, &c->start_tag);
    if (rc == 0)
        rc = start_batch(c, &end, 1, &c->end_tag);
    if (rc == 0)
        start_recv(c);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0) {
        /* Nothing can complete the call normally: cancel it; the batches
         * already started still complete and deliver on_close. */
        grpc_call_cancel(gc, NULL);
        ke_rpc_call_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* A unary call: one batch of six ops. */
typedef struct unary_req {
    ke_rpc_tag tag;
    grpc_call *gc;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata *md;
    size_t n_md;
    grpc_metadata_array init_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const ProtobufCMessageDescriptor *resp;
    ke_rpc_unary_cb cb;
    void *ud;
    /* blocking mode: the waiter takes the reply */
    struct unary_sync *sync;
} unary_req;

typedef struct unary_sync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    ProtobufCMessage *reply;
    ke_rpc_status st;
} unary_sync;

static void unary_free(unary_req *u)
{
    if (u->gc)
        grpc_call_unref(u->gc);
    if (u->send_bb)
        grpc_byte_buffer_destroy(u->send_bb);
    if (u->recv_bb)
        grpc_byte_buffer_destroy(u->recv_bb);
    for (size_t i = 0; i < u->n_md; i++) {
        grpc_slice_unref(u->md[i].key);
        grpc_slice_unref(u->md[i].value);
    }
    free(u->md);
    grpc_metadata_array_destroy(&u->init_md);
    grpc_metadata_array_destroy(&u->trailing_md);
    grpc_slice_unref(u->details);
    free(u);
}

static void unary_on_done(ke_rpc_tag *t, int ok)
{
    unary_req *u = (unary_req *)t;
    ke_rpc_status st;
    ProtobufCMessage *reply = NULL;
    status_set(&st, (int)u->status, (const char *)GRPC_SLICE_START_PTR(u->details),
               GRPC_SLICE_LENGTH(u->details));
    if (!ok) {
        status_set(&st, KE_RPC_INTERNAL, "call failed", 11);
    } else if (st.code == KE_RPC_OK) {
        if (!u->recv_bb) {
            status_set(&st, KE_RPC_INTERNAL, "server sent no reply", 20);
        } else if (bb_decode(u->recv_bb, u->resp, &reply, NULL, 0) != 0) {
            char why[160];
            int n = snprintf(why, sizeof(why), "reply is not a valid %s message", u->resp->name);
            status_set(&st, KE_RPC_INTERNAL, why, (size_t)n);
        }
    }
    if (u->sync) {
        unary_sync *s = u->sync;
        pthread_mutex_lock(&s->mu);
        s->reply = reply;
        s->st = st;
        s->done = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    } else {
        u->cb(reply, &st, u->ud);
        if (reply)
            protobuf_c_message_free_unpacked(reply, NULL);
    }
    unary_free(u);
}

static int unary_start(ke_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, const ke_rpc_call_opts *opts,
                       ke_rpc_unary_cb cb, void *ud, unary_sync *sync)
{
    if (!ch || !path || !req || !resp)
        return KE_EINVAL;
    unary_req *u = calloc(1, sizeof(*u));
    if (!u)
        return KE_ENOMEM;
    u->tag.fn = unary_on_done;
    u->resp = resp;
    u->cb = cb;
    u->ud = ud;
    u->sync = sync;
    u->details = grpc_empty_slice();
    grpc_metadata_array_init(&u->init_md);
    grpc_metadata_array_init(&u->trailing_md);
    if (md_fill(opts, &u->md, &u->n_md) != 0) {
        unary_free(u);
        return KE_ENOMEM;
    }
    u->gc = channel_call(ch, path, opts ? opts->timeout_ms : 0);
    if (!u->gc) {
        unary_free(u);
        return KE_EIO;
    }
    u->send_bb = bb_from_msg(req);

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = u->n_md;
    ops[0].data.send_initial_metadata.metadata = u->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->trailing_md;
    ops[5].data.recv_status_on_client.status = &u->status;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    grpc_call *gc = u->gc; /* read before the release: see TAG_RELEASE */
    TAG_RELEASE(&u->tag);
    if (grpc_call_start_batch(gc, ops, 6, &u->tag, NULL) != GRPC_CALL_OK) {
        unary_free(u);
        return KE_EIO;
    }
    return 0;
}

int ke_rpc_unary_async(ke_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, const ke_rpc_call_opts *opts,
                       ke_rpc_unary_cb cb, void *ud)
{
    if (!cb)
        return KE_EINVAL;
    return unary_start(ch, path, req, resp, opts, cb, ud, NULL);
}

int ke_rpc_unary(ke_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp, const ke_rpc_call_opts *opts,
                 ProtobufCMessage **reply, ke_rpc_status *st)
{
    if (!reply || !st)
        return KE_EINVAL;
    blocking_call_check("ke_rpc_unary");
    unary_sync s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    int rc = unary_start(ch, path, req, resp, opts, NULL, NULL, &s);
    if (rc == 0) {
        pthread_mutex_lock(&s.mu);
        while (!s.done)
            pthread_cond_wait(&s.cv, &s.mu);
        pthread_mutex_unlock(&s.mu);
        *reply = s.reply;
        *st = s.st;
    }
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    return rc;
}

/* ----------------------------------------------------------------- typed */

/* method_path finds `name` in svc and writes "/<svc>/<name>" into path. */
static const ProtobufCMethodDescriptor *method_path(const ProtobufCServiceDescriptor *svc,
                                                    const char *name, char *path, size_t len)
{
    const ProtobufCMethodDescriptor *md =
        svc && name ? protobuf_c_service_descriptor_get_method_by_name(svc, name) : NULL;
    if (!md)
        return NULL;
    int n = snprintf(path, len, "/%s/%s", svc->name, md->name);
    return n > 0 && (size_t)n < len ? md : NULL;
}

int ke_rpc_server_add(ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc, const char *name,
                      ke_rpc_kind kind, const ke_rpc_handler *h, void *ud)
{
    char path[256];
    const ProtobufCMethodDescriptor *md = method_path(svc, name, path, sizeof(path));
    if (!md)
        return KE_ENOTFOUND;
    return ke_rpc_server_add_method(srv, path, kind, md->input, h, ud);
}

int ke_rpc_server_add_all(ke_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                          const ke_rpc_method_def *defs, size_t n, void *ud)
{
    for (size_t i = 0; i < n; i++) {
        int rc = ke_rpc_server_add(srv, svc, defs[i].name, defs[i].kind, &defs[i].handler, ud);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int ke_rpc_stub_unary(const ke_rpc_stub *stub, const char *name, const ProtobufCMessage *req,
                      const ke_rpc_call_opts *opts, ProtobufCMessage **reply, ke_rpc_status *st)
{
    char path[256];
    const ProtobufCMethodDescriptor *md = method_path(stub->svc, name, path, sizeof(path));
    if (!md)
        return KE_ENOTFOUND;
    if (!req || req->descriptor != md->input)
        return KE_EINVAL;
    return ke_rpc_unary(stub->ch, path, req, md->output, opts, reply, st);
}

int ke_rpc_stub_start(const ke_rpc_stub *stub, const char *name, const ke_rpc_handler *h,
                      void *ud, const ke_rpc_call_opts *opts, ke_rpc_call **out)
{
    char path[256];
    const ProtobufCMethodDescriptor *md = method_path(stub->svc, name, path, sizeof(path));
    if (!md)
        return KE_ENOTFOUND;
    return ke_rpc_call_start(stub->ch, path, md->output, h, ud, opts, out);
}
