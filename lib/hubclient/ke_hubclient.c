/*
 * ke_hubclient.c — see ke_hubclient.h.
 *
 * The consumer: the rpc callbacks of its Subscribe stream only copy each
 * UpstreamMessage into a FIFO (bounded: CloudHub sends at most the window
 * ahead of our acks; more than twice that is a broken peer, and the stream
 * is dropped and resubscribed) and wake the consumer's thread. The thread
 * hands entries to the controller in order, skips entries it handled
 * before (a resubscribe resends from the durable cursor, which may trail
 * what was handled), and acks the newest handled id — at once when the
 * FIFO runs dry, else every half window. Acks are cumulative, so one that
 * cannot be queued (stream closing) is simply sent later or superseded.
 */
#include "ke_hubclient.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"
#include "ke_watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HC_MOD "hubclient"
#define HC_BACKOFF_MIN_MS 100
#define HC_BACKOFF_MAX_MS 10000
#define HC_PAGE 1000

void ke_hub_resource_key(char *buf, size_t len, const char *node, const char *ns,
                         const char *kind, const char *name)
{
    snprintf(buf, len, "node/%s/%s/%s/%s", node, ns ? ns : "", kind, name);
}

int ke_hub_publish(ke_rpc_channel *hub, const char *node, const char *key, Ke__V1__Operation op,
                   const char *group, const void *content, size_t len, uint64_t version,
                   int resend)
{
    Ke__V1__MessageHeader h = KE__V1__MESSAGE_HEADER__INIT;
    Ke__V1__Route r = KE__V1__ROUTE__INIT;
    Ke__V1__Message m = KE__V1__MESSAGE__INIT;
    Ke__V1__PublishRequest req = KE__V1__PUBLISH_REQUEST__INIT;
    h.resource_version = version;
    h.timestamp_ms = ke_time_wall_ms();
    r.source = "controller";
    r.group = (char *)group;
    r.operation = op;
    r.resource = (char *)key;
    m.header = &h;
    m.route = &r;
    m.content.data = (uint8_t *)content;
    m.content.len = content ? len : 0;
    req.node_name = (char *)node;
    req.message = &m;
    req.resend = resend != 0;
    ke_rpc_stub stub = {hub, &ke__v1__hub__descriptor};
    ke_rpc_call_opts o = {.timeout_ms = 10000};
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st = {0};
    int rc = ke_rpc_stub_unary(&stub, "Publish", &req.base, &o, &reply, &st);
    if (reply)
        protobuf_c_message_free_unpacked(reply, NULL);
    if (rc == 0 && st.code == KE_RPC_OK)
        return 0;
    if (rc == 0 && st.code == KE_RPC_FAILED_PRECONDITION)
        return KE_ECONFLICT;
    char em[KE_LOG_ESC_SIZE(sizeof(st.message))];
    ke_log_warn(HC_MOD, "publish failed node=%s key=%s rv=%llu code=%s reason=\"%s\"", node, key,
                (unsigned long long)version, rc ? "LOCAL" : ke_rpc_status_name(st.code),
                rc ? ke_strerror(rc) : ke_log_esc(st.message, em, sizeof(em)));
    return KE_EIO;
}

int ke_hub_node_objects(ke_rpc_channel *hub, const char *node, const char *const *kinds,
                        size_t n_kinds,
                        int (*fn)(const char *key, uint64_t version, int deleted, void *arg),
                        void *arg)
{
    ke_rpc_stub stub = {hub, &ke__v1__hub__descriptor};
    char token[1024] = "";
    for (;;) {
        Ke__V1__ListNodeObjectsRequest req = KE__V1__LIST_NODE_OBJECTS_REQUEST__INIT;
        req.node_name = (char *)node;
        req.kinds = (char **)kinds;
        req.n_kinds = n_kinds;
        req.limit = HC_PAGE;
        req.continue_token = token;
        ke_rpc_call_opts o = {.timeout_ms = 10000};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st = {0};
        int rc = ke_rpc_stub_unary(&stub, "ListNodeObjects", &req.base, &o, &reply, &st);
        if (rc != 0 || st.code != KE_RPC_OK) {
            if (reply)
                protobuf_c_message_free_unpacked(reply, NULL);
            if (rc == 0 && st.code == KE_RPC_NOT_FOUND)
                return KE_ENOTFOUND;
            char em[KE_LOG_ESC_SIZE(sizeof(st.message))];
            ke_log_warn(HC_MOD, "ListNodeObjects failed node=%s code=%s reason=\"%s\"", node,
                        rc ? "LOCAL" : ke_rpc_status_name(st.code),
                        rc ? ke_strerror(rc) : ke_log_esc(st.message, em, sizeof(em)));
            return KE_EIO;
        }
        Ke__V1__ListNodeObjectsReply *r = (Ke__V1__ListNodeObjectsReply *)reply;
        int stop = 0;
        for (size_t i = 0; i < r->n_objects && !stop; i++)
            stop = fn(r->objects[i]->key, r->objects[i]->resource_version,
                      r->objects[i]->deleted, arg);
        int more = !stop && r->continue_token && r->continue_token[0] &&
                   strlen(r->continue_token) < sizeof(token);
        if (more)
            snprintf(token, sizeof(token), "%s", r->continue_token);
        protobuf_c_message_free_unpacked(reply, NULL);
        if (!more)
            return 0;
    }
}

int ke_hub_nodes(ke_rpc_channel *hub, int (*fn)(const Ke__V1__NodeInfo *info, void *arg),
                 void *arg)
{
    ke_rpc_stub stub = {hub, &ke__v1__hub__descriptor};
    char token[256] = "";
    for (;;) {
        Ke__V1__ListNodesRequest req = KE__V1__LIST_NODES_REQUEST__INIT;
        req.limit = HC_PAGE;
        req.continue_token = token;
        ke_rpc_call_opts o = {.timeout_ms = 10000};
        ProtobufCMessage *reply = NULL;
        ke_rpc_status st = {0};
        int rc = ke_rpc_stub_unary(&stub, "ListNodes", &req.base, &o, &reply, &st);
        if (rc != 0 || st.code != KE_RPC_OK) {
            if (reply)
                protobuf_c_message_free_unpacked(reply, NULL);
            char em[KE_LOG_ESC_SIZE(sizeof(st.message))];
            ke_log_warn(HC_MOD, "ListNodes failed code=%s reason=\"%s\"",
                        rc ? "LOCAL" : ke_rpc_status_name(st.code),
                        rc ? ke_strerror(rc) : ke_log_esc(st.message, em, sizeof(em)));
            return KE_EIO;
        }
        Ke__V1__ListNodesReply *r = (Ke__V1__ListNodesReply *)reply;
        int stop = 0;
        for (size_t i = 0; i < r->n_nodes && !stop; i++)
            stop = fn(r->nodes[i], arg);
        int more = !stop && r->continue_token && r->continue_token[0] &&
                   strlen(r->continue_token) < sizeof(token);
        if (more)
            snprintf(token, sizeof(token), "%s", r->continue_token);
        protobuf_c_message_free_unpacked(reply, NULL);
        if (!more)
            return 0;
    }
}

/* ---- the durable consumer ---- */

typedef struct hc_entry {
    struct hc_entry *next;
    size_t len;
    uint8_t data[]; /* a packed UpstreamMessage */
} hc_entry;

/* One Subscribe stream: its callbacks know which stream they belong to. */
typedef struct hc_stream {
    ke_hub_consumer *c;
    uint64_t gen;
} hc_stream;

struct ke_hub_consumer {
    ke_rpc_channel *hub;
    char name[64];
    char **groups;
    size_t n_groups;
    ke_hub_consumer_fn fn;
    void *ud;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    ke_watchdog_hb *hb; /* the consumer thread's heartbeat, "up-<name>" */
    int started, stopping;
    /* the current stream, under mu */
    ke_rpc_call *call;
    uint64_t gen;
    int closed;     /* the current stream ended */
    int streams;    /* streams whose on_close has not run */
    hc_entry *head, *tail;
    uint32_t queued;
    uint64_t handled, acked;
};

static void entries_clear(ke_hub_consumer *c)
{
    for (hc_entry *e = c->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    c->head = c->tail = NULL;
    c->queued = 0;
}

static void sub_on_message(ke_rpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    hc_stream *s = ud;
    ke_hub_consumer *c = s->c;
    size_t len = protobuf_c_message_get_packed_size(msg);
    hc_entry *e = malloc(sizeof(*e) + (len ? len : 1));
    pthread_mutex_lock(&c->mu);
    if (s->gen != c->gen || c->closed) {
        pthread_mutex_unlock(&c->mu);
        free(e);
        return;
    }
    if (!e || c->queued >= 2 * KE_HUB_CONSUMER_WINDOW) {
        /* Nothing is lost: the entries are resent from the cursor. */
        ke_log_warn(HC_MOD, "consumer=%s %s: dropping the stream to resubscribe", c->name,
                    e ? "CloudHub sent past the window" : "out of memory");
        pthread_mutex_unlock(&c->mu);
        free(e);
        ke_rpc_call_cancel(call);
        return;
    }
    e->next = NULL;
    e->len = protobuf_c_message_pack(msg, e->data);
    if (c->tail)
        c->tail->next = e;
    else
        c->head = e;
    c->tail = e;
    c->queued++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void sub_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)call;
    hc_stream *s = ud;
    ke_hub_consumer *c = s->c;
    pthread_mutex_lock(&c->mu);
    if (s->gen == c->gen) {
        c->closed = 1;
        if (!c->stopping) {
            char em[KE_LOG_ESC_SIZE(sizeof(st->message))];
            ke_log_warn(HC_MOD, "consumer=%s upstream stream ended: %s \"%s\"; subscribing again",
                        c->name, ke_rpc_status_name(st->code),
                        ke_log_esc(st->message, em, sizeof(em)));
        }
    }
    c->streams--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    free(s);
}

/* subscribe opens a new stream (mu held). Returns 0 or a KE_E* code. */
static int subscribe(ke_hub_consumer *c)
{
    static const ke_rpc_handler h = {.on_message = sub_on_message, .on_close = sub_on_close};
    hc_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return KE_ENOMEM;
    if (c->call) {
        ke_rpc_call_cancel(c->call);
        ke_rpc_call_unref(c->call);
        c->call = NULL;
    }
    entries_clear(c);
    s->c = c;
    s->gen = ++c->gen;
    c->closed = 0;
    ke_rpc_stub stub = {c->hub, &ke__v1__hub__descriptor};
    ke_rpc_call *call = NULL;
    int rc = ke_rpc_stub_start(&stub, "Subscribe", &h, s, NULL, &call);
    if (rc != 0) {
        free(s);
        c->closed = 1;
        return rc;
    }
    c->streams++;
    c->call = call;
    Ke__V1__SubscribeRequest req = KE__V1__SUBSCRIBE_REQUEST__INIT;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    req.consumer = c->name;
    req.groups = c->groups;
    req.n_groups = c->n_groups;
    req.window = KE_HUB_CONSUMER_WINDOW;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_START;
    f.start = &req;
    rc = ke_rpc_call_send(call, &f.base);
    if (rc != 0) {
        ke_rpc_call_cancel(call); /* on_close marks it closed: resubscribe */
        return rc;
    }
    c->acked = 0; /* this stream has acked nothing yet */
    return 0;
}

/* send_ack acks everything handled (mu held). A failed send is retried
 * with the next ack: acks are cumulative. */
static void send_ack(ke_hub_consumer *c)
{
    if (!c->call || c->closed || c->handled <= c->acked)
        return;
    Ke__V1__SubscribeAck a = KE__V1__SUBSCRIBE_ACK__INIT;
    Ke__V1__SubscribeFrame f = KE__V1__SUBSCRIBE_FRAME__INIT;
    a.log_id = c->handled;
    f.frame_case = KE__V1__SUBSCRIBE_FRAME__FRAME_ACK;
    f.ack = &a;
    if (ke_rpc_call_send(c->call, &f.base) == 0)
        c->acked = c->handled;
}

static void *consumer_thread(void *arg)
{
    ke_hub_consumer *c = arg;
    int64_t backoff = HC_BACKOFF_MIN_MS, retry_at = 0;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        ke_watchdog_beat(c->hb);
        int64_t now = ke_time_mono_ms();
        if (c->closed && now >= retry_at) {
            int rc = subscribe(c);
            if (rc != 0)
                ke_log_warn(HC_MOD, "consumer=%s cannot subscribe: %s", c->name, ke_strerror(rc));
            retry_at = now + backoff;
            backoff = backoff * 2 > HC_BACKOFF_MAX_MS ? HC_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (!c->head || now < retry_at) {
            if (!c->head)
                send_ack(c);
            int64_t wait = c->closed || now < retry_at ? retry_at - now : -1;
            /* idle or backing off: wake within the watchdog's tick to beat */
            int64_t tick = ke_watchdog_tick_ms(c->hb);
            struct timespec until = ke_time_deadline(wait < 0 || wait > tick ? tick : wait);
            pthread_cond_timedwait(&c->cv, &c->mu, &until);
            continue;
        }
        hc_entry *e = c->head;
        uint64_t gen = c->gen;
        pthread_mutex_unlock(&c->mu);
        Ke__V1__UpstreamMessage *up = ke__v1__upstream_message__unpack(NULL, e->len, e->data);
        int rc = 0;
        uint64_t id = up ? up->log_id : 0;
        if (up && id > c->handled)
            rc = c->fn(up, c->ud);
        if (up)
            ke__v1__upstream_message__free_unpacked(up, NULL);
        pthread_mutex_lock(&c->mu);
        if (rc != 0) {
            /* Not committed: hand the same entry again after a back-off. */
            retry_at = ke_time_mono_ms() + backoff;
            backoff = backoff * 2 > HC_BACKOFF_MAX_MS ? HC_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = HC_BACKOFF_MIN_MS;
        retry_at = 0;
        if (id > c->handled)
            c->handled = id;
        if (gen == c->gen && c->head == e) { /* not cleared by a resubscribe meanwhile */
            c->head = e->next;
            if (!c->head)
                c->tail = NULL;
            c->queued--;
            free(e);
        }
        if (!c->head || c->handled - c->acked >= KE_HUB_CONSUMER_WINDOW / 2)
            send_ack(c);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int ke_hub_consumer_new(ke_rpc_channel *hub, const char *name, const char *const *groups,
                        size_t n_groups, ke_hub_consumer_fn fn, void *ud,
                        ke_hub_consumer **out)
{
    if (!hub || !name || !*name || strlen(name) >= 64 || !fn || !out)
        return KE_EINVAL;
    ke_hub_consumer *c = calloc(1, sizeof(*c));
    if (!c)
        return KE_ENOMEM;
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->hub = hub;
    c->fn = fn;
    c->ud = ud;
    c->closed = 1;
    pthread_mutex_init(&c->mu, NULL);
    if (ke_time_cond_init(&c->cv) != 0 ||
        (n_groups && !(c->groups = calloc(n_groups, sizeof(char *))))) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return KE_ENOMEM;
    }
    for (size_t i = 0; i < n_groups; i++) {
        if (!(c->groups[c->n_groups] = strdup(groups[i]))) {
            ke_hub_consumer_free(c);
            return KE_ENOMEM;
        }
        c->n_groups++;
    }
    *out = c;
    return 0;
}

int ke_hub_consumer_start(ke_hub_consumer *c)
{
    char tname[16], hbname[KE_WATCHDOG_NAME_MAX];
    snprintf(hbname, sizeof(hbname), "up-%.40s", c->name);
    int rc = ke_watchdog_register(hbname, 0, &c->hb);
    if (rc != 0) /* the consumer still works, unwatched */
        ke_log_warn(HC_MOD, "consumer not watched name=%s: %s", hbname, ke_strerror(rc));
    if (pthread_create(&c->thread, NULL, consumer_thread, c) != 0) {
        ke_watchdog_unregister(c->hb);
        c->hb = NULL;
        return KE_EIO;
    }
    snprintf(tname, sizeof(tname), "ke-up-%.9s", c->name);
    pthread_setname_np(c->thread, tname);
    c->started = 1;
    return 0;
}

uint64_t ke_hub_consumer_handled(ke_hub_consumer *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t h = c->handled;
    pthread_mutex_unlock(&c->mu);
    return h;
}

void ke_hub_consumer_stop(ke_hub_consumer *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    int was = c->stopping;
    c->stopping = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (was)
        return;
    if (c->started)
        pthread_join(c->thread, NULL);
    ke_watchdog_unregister(c->hb);
    c->hb = NULL;
    pthread_mutex_lock(&c->mu);
    send_ack(c); /* best effort: an unacked entry is only handed again */
    if (c->call) {
        ke_rpc_call_cancel(c->call);
        ke_rpc_call_unref(c->call);
        c->call = NULL;
    }
    while (c->streams > 0) /* their on_close touches c */
        pthread_cond_wait(&c->cv, &c->mu);
    entries_clear(c);
    pthread_mutex_unlock(&c->mu);
}

void ke_hub_consumer_free(ke_hub_consumer *c)
{
    if (!c)
        return;
    ke_hub_consumer_stop(c);
    for (size_t i = 0; i < c->n_groups; i++)
        free(c->groups[i]);
    free(c->groups);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}
