/*
 * eventbus.c — the EventBus module (eventbus.h): libmosquitto on the edge
 * loop, reports upstream through MetaManager, publishes downstream.
 *
 * The connection's life:
 *   idle --timer--> connecting (mosquitto_connect_async / reconnect_async,
 *   a uv_poll on its socket) --CONNACK 0--> connected (subscribe, flush the
 *   queue) --error, keepalive, refusal--> idle with a jittered, doubling
 *   back-off (reset by a CONNACK). A connection not accepted within
 *   EB_CONNECT_TIMEOUT_MS is given up.
 *
 * Session: a fixed client id with clean_session false and QoS 1
 * subscriptions, so the broker keeps what arrives on our topics while we
 * are away (and across its own restarts when it persists). libmosquitto
 * 2.0 acks a QoS 1 message itself, before on_message runs (it has no
 * manual ack): delivery to the outbox is at least once from the broker's
 * retries up to that PUBACK, and a crash between the PUBACK and
 * MetaManager's commit (the same or next loop turn) loses that message.
 */
#include "eventbus.h"

#include "broker.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"
#include "ke_time.h"

#include <inttypes.h>
#include <mosquitto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EB_MOD "eventbus"
#define EB_CONNECT_TIMEOUT_MS 10000
#define EB_KEEPALIVE_S 30
#define EB_MAX_TOPICS 32
/* Publishes handed to libmosquitto and not yet acknowledged by the broker.
 * libmosquitto's own queue has no bound: past this, publishes wait in
 * ours (queue_max / queue_bytes), where a full queue refuses them. */
#define EB_INFLIGHT_MAX 1024

typedef struct eb_pub {
    struct eb_pub *next;
    char *topic;
    void *payload;
    size_t len;
} eb_pub;


typedef enum { EB_IDLE, EB_CONNECTING, EB_CONNECTED, EB_STOPPED } eb_phase;

typedef struct eb {
    ke_module *m;
    ke_rt *e;
    eventbus_config cfg;
    char host[256];
    int port;
    char client_id[256];
    char *topics[EB_MAX_TOPICS];
    size_t ntopics;
    struct mosquitto *mosq;
    int ever_connected; /* connect_async done once: reconnect_async after */
    eb_phase phase;
    uv_poll_t *poll;     /* the broker's socket while connecting/connected */
    int poll_events;
    uv_timer_t misc;     /* every second: loop_misc, connect deadline */
    uv_timer_t retry;    /* the back-off */
    int64_t attempt_at;  /* monotonic ms of the current attempt */
    int64_t backoff_ms, retry_at;
    unsigned seed;
    char reason[160];
    /* reports */
    uint64_t boot;       /* random per start: keys never repeat */
    uint64_t n;          /* reports made since start */
    uint64_t last_rv;
    int closing;         /* timers being closed */
    int destroyed;       /* destroy ran: free at the last close */
    /* publishes waiting for the broker */
    eb_pub *qhead, *qtail;
    uint32_t qlen;
    uint32_t inflight; /* handed to libmosquitto, no PUBACK yet */
    size_t qbytes;
    eventbus_broker *broker; /* mode internal: the broker we supervise */
    char tls_err[160];       /* libmosquitto's last error log line (OpenSSL's reason) */
    ke_metric *m_received, *m_forwarded, *m_published, *m_dropped, *m_reconnects, *m_connected;
} eb;

int eventbus_topic_encode(const char *topic, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)topic; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-';
        size_t need = plain ? 1 : 3;
        if (o + need >= cap)
            return KE_EFULL;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (o >= cap)
        return KE_EFULL;
    out[o] = '\0';
    return 0;
}

/* topic_decode: the percent-encoded name of an MQTTMessage key back to a
 * topic (malloc'd), or NULL when malformed. */
static char *topic_decode(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        int v = 0;
        for (int k = 1; k <= 2; k++) {
            char c = p[k];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) {
                free(out);
                return NULL;
            }
            v = v * 16 + d;
        }
        if (v == 0) {
            free(out);
            return NULL;
        }
        *o++ = (char)v;
        p += 2;
    }
    *o = '\0';
    return out;
}

/* publish_topic: the topic a downstream message names (malloc'd), or NULL:
 * "eventbus/publish/<topic>", or the cloud's object
 * "node/<node>/<ns>/MQTTMessage/<percent-encoded topic>". */
static char *publish_topic(const char *res)
{
    size_t pl = strlen(EVENTBUS_PUBLISH_PREFIX);
    if (strncmp(res, EVENTBUS_PUBLISH_PREFIX, pl) == 0)
        return strdup(res + pl);
    if (strncmp(res, "node/", 5) != 0)
        return NULL;
    const char *p = strchr(res + 5, '/'); /* after the node */
    p = p ? strchr(p + 1, '/') : NULL;    /* after the namespace */
    if (!p || strncmp(p + 1, EVENTBUS_KIND "/", strlen(EVENTBUS_KIND) + 1) != 0)
        return NULL;
    return topic_decode(p + 1 + strlen(EVENTBUS_KIND) + 1);
}

static void schedule_retry(eb *b, const char *why);
static void update_poll(eb *b);

static void poll_closed(uv_handle_t *h) { free(h); }

static void poll_close(eb *b)
{
    if (b->poll) {
        uv_close((uv_handle_t *)b->poll, poll_closed);
        b->poll = NULL;
        b->poll_events = 0;
    }
}

/* lost: the connection ended (or never came up): close the poll before
 * libmosquitto closes or reuses the socket, then back off. */
static void lost(eb *b, const char *why)
{
    if (b->phase == EB_STOPPED)
        return;
    int was = b->phase == EB_CONNECTED;
    poll_close(b);
    b->phase = EB_IDLE;
    ke_metric_set(b->m_connected, 0);
    if (was)
        ke_log_warn(EB_MOD, "broker connection lost broker=%s:%d: %s", b->host, b->port, why);
    schedule_retry(b, why);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    eb *b = h->data;
    int rc = MOSQ_ERR_SUCCESS;
    if (status < 0) {
        lost(b, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE)
        rc = mosquitto_loop_write(b->mosq, 1);
    if (rc == MOSQ_ERR_SUCCESS && b->poll == h && (events & UV_READABLE))
        rc = mosquitto_loop_read(b->mosq, 1);
    if (b->poll != h) /* a callback ended this connection */
        return;
    if (rc != MOSQ_ERR_SUCCESS) {
        char why[128];
        if (rc == MOSQ_ERR_TLS && b->tls_err[0])
            snprintf(why, sizeof(why), "TLS: %.120s", b->tls_err);
        else
            snprintf(why, sizeof(why), "%s",
                     rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        lost(b, why);
        return;
    }
    update_poll(b);
}

static void update_poll(eb *b)
{
    if (b->phase != EB_CONNECTING && b->phase != EB_CONNECTED)
        return;
    int fd = mosquitto_socket(b->mosq);
    if (fd < 0) {
        lost(b, "no socket");
        return;
    }
    if (!b->poll) {
        b->poll = malloc(sizeof(*b->poll));
        if (!b->poll || uv_poll_init(ke_rt_loop(b->e), b->poll, fd) != 0) {
            free(b->poll);
            b->poll = NULL;
            lost(b, "cannot poll the broker's socket");
            return;
        }
        b->poll->data = b;
        b->poll_events = 0;
    }
    int ev = UV_READABLE | (mosquitto_want_write(b->mosq) ? UV_WRITABLE : 0);
    if (ev != b->poll_events) {
        uv_poll_start(b->poll, ev, on_poll);
        b->poll_events = ev;
    }
}

static void attempt(eb *b)
{
    b->attempt_at = ke_time_mono_ms();
    b->retry_at = 0;
    b->tls_err[0] = '\0'; /* only this attempt's */
    int rc = b->ever_connected ? mosquitto_reconnect_async(b->mosq)
                               : mosquitto_connect_async(b->mosq, b->host, b->port,
                                                         EB_KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        char why[160];
        if (rc == MOSQ_ERR_TLS && b->tls_err[0])
            snprintf(why, sizeof(why), "TLS: %.120s", b->tls_err);
        else
            snprintf(why, sizeof(why), "connect: %s",
                     rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        /* a socket may have been made: nothing polls it, libmosquitto
         * closes it at the next attempt */
        b->phase = EB_IDLE;
        schedule_retry(b, why);
        return;
    }
    b->ever_connected = 1;
    b->phase = EB_CONNECTING;
    update_poll(b);
}

static void on_retry(uv_timer_t *t)
{
    eb *b = t->data;
    if (b->phase == EB_IDLE) {
        ke_metric_add(b->m_reconnects, 1);
        attempt(b);
    }
}

static void schedule_retry(eb *b, const char *why)
{
    snprintf(b->reason, sizeof(b->reason), "%s", why);
    int64_t base = b->backoff_ms;
    int64_t delay = base / 2 + (int64_t)(rand_r(&b->seed) % (unsigned)(base / 2 + 1));
    b->backoff_ms = base * 2 > b->cfg.backoff_max_ms ? b->cfg.backoff_max_ms : base * 2;
    b->retry_at = ke_time_mono_ms() + delay;
    uv_timer_start(&b->retry, on_retry, (uint64_t)delay, 0);
}

static void on_misc(uv_timer_t *t)
{
    eb *b = t->data;
    if (b->phase == EB_CONNECTING &&
        ke_time_mono_ms() - b->attempt_at > EB_CONNECT_TIMEOUT_MS) {
        lost(b, "no CONNACK in time");
        return;
    }
    if (b->phase != EB_CONNECTED)
        return;
    int rc = mosquitto_loop_misc(b->mosq); /* may end the connection: on_disconnect */
    if (rc != MOSQ_ERR_SUCCESS && b->phase == EB_CONNECTED)
        lost(b, mosquitto_strerror(rc));
    else
        update_poll(b);
}

static void pub_free(eb_pub *p)
{
    free(p->topic);
    free(p->payload);
    free(p);
}

/* flush: send the waiting publishes, in order, while connected. */
static void flush(eb *b)
{
    while (b->qhead && b->phase == EB_CONNECTED && b->inflight < EB_INFLIGHT_MAX) {
        eb_pub *p = b->qhead;
        int rc = mosquitto_publish(b->mosq, NULL, p->topic, (int)p->len, p->payload, 1, false);
        if (rc == MOSQ_ERR_NO_CONN) /* libmosquitto keeps a QoS 1 message itself then */
            rc = MOSQ_ERR_SUCCESS;
        if (rc != MOSQ_ERR_SUCCESS) {
            char et[KE_LOG_ESC_SIZE(128)];
            ke_log_warn(EB_MOD, "publish refused topic=%s: %s",
                        ke_log_esc(p->topic, et, sizeof(et)), mosquitto_strerror(rc));
            ke_metric_add(b->m_dropped, 1);
        } else {
            b->inflight++;
        }
        b->qhead = p->next;
        if (!b->qhead)
            b->qtail = NULL;
        b->qlen--;
        b->qbytes -= p->len;
        pub_free(p);
    }
    update_poll(b);
}

static void subscribe(eb *b, const char *filter)
{
    int rc = mosquitto_subscribe(b->mosq, NULL, filter, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
        char et[KE_LOG_ESC_SIZE(128)];
        ke_log_warn(EB_MOD, "cannot subscribe topic=%s: %s", ke_log_esc(filter, et, sizeof(et)),
                    mosquitto_strerror(rc));
    }
}

/* to_module hands a message on a module's topic to that module; 1 when
 * the topic is a module's (handed over or dropped), 0 otherwise. */
static int to_module(eb *b, const struct mosquitto_message *mm)
{
    for (size_t i = 0; i < b->cfg.n_routes; i++) {
        const eventbus_route *r = &b->cfg.routes[i];
        bool match = false;
        if (mosquitto_topic_matches_sub(r->filter, mm->topic, &match) !=
                MOSQ_ERR_SUCCESS ||
            !match)
            continue;
        Ke__V1__Message *msg = ke_rt_message_new(
            EB_MOD, "", KE__V1__OPERATION__OPERATION_PUBLISH, mm->topic, mm->payload,
            mm->payloadlen > 0 ? (size_t)mm->payloadlen : 0);
        int rc = msg ? ke_rt_send_to(b->e, r->module, msg) : KE_ENOMEM;
        if (rc != 0) {
            char et[KE_LOG_ESC_SIZE(128)];
            ke_log_warn(EB_MOD, "message dropped topic=%s module=%s: %s",
                        ke_log_esc(mm->topic, et, sizeof(et)), r->module,
                        ke_strerror(rc));
            ke_metric_add(b->m_dropped, 1);
            if (msg)
                ke__v1__message__free_unpacked(msg, NULL);
        }
        return 1;
    }
    return 0;
}

/* cb_publish: the broker acknowledged a publish (libmosquitto resends
 * unacknowledged ones itself after a reconnect). */
static void cb_publish(struct mosquitto *mosq, void *ud, int mid)
{
    (void)mosq;
    (void)mid;
    eb *b = ud;
    if (b->inflight)
        b->inflight--;
    ke_metric_add(b->m_published, 1);
    if (b->phase == EB_CONNECTED)
        flush(b);
}

static void cb_connect(struct mosquitto *mosq, void *ud, int rc)
{
    (void)mosq;
    eb *b = ud;
    if (b->phase == EB_STOPPED)
        return;
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "broker refused: %s", mosquitto_connack_string(rc));
        lost(b, why);
        return;
    }
    b->phase = EB_CONNECTED;
    b->backoff_ms = b->cfg.backoff_initial_ms;
    b->reason[0] = '\0';
    ke_metric_set(b->m_connected, 1);
    ke_log_info(EB_MOD, "connected to the broker broker=%s:%d client_id=%s", b->host, b->port,
                b->client_id);
    for (size_t i = 0; i < b->ntopics; i++)
        subscribe(b, b->topics[i]);
    for (size_t i = 0; i < b->cfg.n_routes; i++)
        subscribe(b, b->cfg.routes[i].filter);
    flush(b);
}

static void cb_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
    (void)mosq;
    eb *b = ud;
    if (b->phase == EB_IDLE) /* already lost (a refused CONNACK): keep its reason */
        return;
    char why[128];
    snprintf(why, sizeof(why), "disconnected: %s", mosquitto_strerror(rc));
    lost(b, why);
}

/* cb_log keeps libmosquitto's last error line: a failed TLS handshake is
 * only MOSQ_ERR_TLS to the caller, the reason (OpenSSL's) is logged. */
static void cb_log(struct mosquitto *mosq, void *ud, int level, const char *str)
{
    (void)mosq;
    eb *b = ud;
    if (level == MOSQ_LOG_ERR && str) {
        snprintf(b->tls_err, sizeof(b->tls_err), "%s", str);
        ke_log_debug(EB_MOD, "libmosquitto: %s", str);
    }
}

static void cb_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *mm)
{
    (void)mosq;
    eb *b = ud;
    ke_metric_add(b->m_received, 1);
    if (to_module(b, mm))
        return;
    char enc[1024], key[1400];
    if (eventbus_topic_encode(mm->topic, enc, sizeof(enc)) != 0) {
        ke_log_warn(EB_MOD, "message dropped: topic too long (%zu bytes)", strlen(mm->topic));
        ke_metric_add(b->m_dropped, 1);
        return;
    }
    b->n++;
    snprintf(key, sizeof(key), "node/%s//EventBus/%s@%016" PRIx64 ".%" PRIu64, b->cfg.node_name,
             enc, b->boot, b->n);
    Ke__V1__Message *msg =
        ke_rt_message_new(EB_MOD, EB_MOD, KE__V1__OPERATION__OPERATION_UPLOAD, key, mm->payload,
                          mm->payloadlen > 0 ? (size_t)mm->payloadlen : 0);
    int rc = KE_ENOMEM;
    if (msg) {
        int64_t wall = ke_time_wall_ms();
        uint64_t rv = wall > 0 && (uint64_t)wall > b->last_rv ? (uint64_t)wall : b->last_rv + 1;
        b->last_rv = rv;
        msg->header->resource_version = rv;
        msg->header->timestamp_ms = wall;
        msg->header->sync = 1;
        char id[32];
        snprintf(id, sizeof(id), "%" PRIu64, b->n);
        rc = ke_rt_message_set_id(msg, id);
        if (rc == 0)
            rc = ke_rt_send_to(b->e, "metamanager", msg);
        if (rc != 0)
            ke__v1__message__free_unpacked(msg, NULL);
    }
    if (rc != 0) {
        char et[KE_LOG_ESC_SIZE(128)];
        ke_log_warn(EB_MOD, "message dropped topic=%s: %s", ke_log_esc(mm->topic, et, sizeof(et)),
                    ke_strerror(rc));
        ke_metric_add(b->m_dropped, 1);
    }
}

static void eb_on_message(ke_module *m, Ke__V1__Message *msg)
{
    eb *b = ke_module_data(m);
    const char *res = msg->route && msg->route->resource ? msg->route->resource : "";
    if (msg->route && msg->route->operation == KE__V1__OPERATION__OPERATION_RESPONSE) {
        /* MetaManager's answer to a report */
        const char *c = (const char *)msg->content.data;
        if (msg->content.len && c && memmem(c, msg->content.len, "\"error\"", 7)) {
            ke_log_warn(EB_MOD, "report not queued resource=%s: %.*s", res,
                        (int)(msg->content.len > 200 ? 200 : msg->content.len), c);
            ke_metric_add(b->m_dropped, 1);
        } else {
            ke_metric_add(b->m_forwarded, 1);
        }
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    if (msg->route && msg->route->operation == KE__V1__OPERATION__OPERATION_DELETE) {
        ke__v1__message__free_unpacked(msg, NULL); /* the cloud dropped the object: nothing */
        return;
    }
    char *topic = publish_topic(res);
    if (!topic || !*topic || mosquitto_pub_topic_check(topic) != MOSQ_ERR_SUCCESS) {
        char er[KE_LOG_ESC_SIZE(128)];
        ke_log_warn(EB_MOD, "message ignored resource=%s: not eventbus/publish/<topic> or an "
                    EVENTBUS_KIND " object", ke_log_esc(res, er, sizeof(er)));
        free(topic);
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    size_t len = msg->content.len;
    if (b->qlen >= b->cfg.queue_max || b->qbytes + len > b->cfg.queue_bytes) {
        char et[KE_LOG_ESC_SIZE(128)];
        ke_log_warn(EB_MOD, "publish refused topic=%s: queue full (%" PRIu32 " messages, %zu "
                    "bytes)", ke_log_esc(topic, et, sizeof(et)), b->qlen, b->qbytes);
        ke_metric_add(b->m_dropped, 1);
        free(topic);
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    eb_pub *p = calloc(1, sizeof(*p));
    if (!p)
        free(topic);
    if (p) {
        p->topic = topic;
        p->payload = msg->content.data; /* taken */
        p->len = len;
        msg->content.data = NULL;
        msg->content.len = 0;
    }
    ke__v1__message__free_unpacked(msg, NULL);
    if (!p || !p->topic) {
        if (p)
            pub_free(p);
        ke_metric_add(b->m_dropped, 1);
        return;
    }
    if (b->qtail)
        b->qtail->next = p;
    else
        b->qhead = p;
    b->qtail = p;
    b->qlen++;
    b->qbytes += len;
    flush(b);
}

static int parse_broker(eb *b, const char *broker)
{
    const char *colon = strrchr(broker, ':');
    if (!colon || colon == broker || (size_t)(colon - broker) >= sizeof(b->host))
        return KE_EINVAL;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (!end || *end || port < 1 || port > 65535)
        return KE_EINVAL;
    memcpy(b->host, broker, (size_t)(colon - broker));
    b->host[colon - broker] = '\0';
    b->port = (int)port;
    return 0;
}

static int parse_topics(eb *b, const char *list)
{
    const char *p = list ? list : "";
    while (*p) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        while (n && (*p == ' ')) {
            p++;
            n--;
        }
        while (n && p[n - 1] == ' ')
            n--;
        if (n) {
            if (b->ntopics == EB_MAX_TOPICS)
                return KE_EFULL;
            char *t = strndup(p, n);
            if (!t)
                return KE_ENOMEM;
            b->topics[b->ntopics++] = t;
            if (mosquitto_sub_topic_check(t) != MOSQ_ERR_SUCCESS)
                return KE_EINVAL;
        }
        p += n;
        while (*p == ' ')
            p++;
        if (*p == ',')
            p++;
    }
    return 0;
}

static void eb_free(eb *b)
{
    if (!b)
        return;
    if (b->mosq)
        mosquitto_destroy(b->mosq);
    eventbus_broker_free(b->broker);
    for (size_t i = 0; i < b->ntopics; i++)
        free(b->topics[i]);
    while (b->qhead) {
        eb_pub *p = b->qhead;
        b->qhead = p->next;
        pub_free(p);
    }
    free(b);
}

static int eb_start(ke_module *m)
{
    const eventbus_config *cfg = ke_module_config(m);
    static int lib_ready;
    if (!lib_ready) {
        mosquitto_lib_init();
        lib_ready = 1;
    }
    eb *b = calloc(1, sizeof(*b));
    if (!b)
        return KE_ENOMEM;
    b->m = m;
    b->e = ke_module_rt(m);
    b->cfg = *cfg;
    if (!b->cfg.queue_max)
        b->cfg.queue_max = 10000;
    if (!b->cfg.queue_bytes)
        b->cfg.queue_bytes = 4u << 20;
    if (b->cfg.backoff_initial_ms < 1)
        b->cfg.backoff_initial_ms = 500;
    if (b->cfg.backoff_max_ms < b->cfg.backoff_initial_ms)
        b->cfg.backoff_max_ms = b->cfg.backoff_initial_ms;
    b->backoff_ms = b->cfg.backoff_initial_ms;
    if (!cfg->node_name || parse_broker(b, cfg->broker ? cfg->broker : "") != 0) {
        ke_log_error(EB_MOD, "eventbus.broker must be host:port (got \"%s\")",
                     cfg->broker ? cfg->broker : "");
        eb_free(b);
        return KE_EINVAL;
    }
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->n_routes > EB_MAX_TOPICS ||
            mosquitto_sub_topic_check(cfg->routes[i].filter) != MOSQ_ERR_SUCCESS) {
            ke_log_error(EB_MOD, "route %zu: not a topic filter, or more than %d routes", i,
                         EB_MAX_TOPICS);
            eb_free(b);
            return KE_EINVAL;
        }
    int rc = parse_topics(b, cfg->subscribe);
    if (rc != 0) {
        ke_log_error(EB_MOD, "eventbus.subscribe: not a list of topic filters (at most %d): %s",
                     EB_MAX_TOPICS, ke_strerror(rc));
        eb_free(b);
        return rc;
    }
    if (cfg->client_id && *cfg->client_id)
        snprintf(b->client_id, sizeof(b->client_id), "%s", cfg->client_id);
    else
        snprintf(b->client_id, sizeof(b->client_id), "edgecore-%s", cfg->node_name);
    b->seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)ke_time_mono_ms();
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&b->boot, sizeof(b->boot), 1, ur) != 1)
        b->boot = ((uint64_t)rand_r(&b->seed) << 32) ^ (uint64_t)ke_time_wall_ms();
    if (ur)
        fclose(ur);
    b->mosq = mosquitto_new(b->client_id, false, b);
    if (!b->mosq) {
        ke_log_error(EB_MOD, "cannot make the MQTT client: %s", strerror(errno));
        eb_free(b);
        return KE_ENOMEM;
    }
    mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    /* as many on the wire as we hand over (its default, 20, paces a busy
     * edge to one broker round trip per 20 publishes) */
    mosquitto_max_inflight_messages_set(b->mosq, EB_INFLIGHT_MAX);
    if (cfg->username && *cfg->username &&
        mosquitto_username_pw_set(b->mosq, cfg->username,
                                  cfg->password && *cfg->password ? cfg->password : NULL) !=
            MOSQ_ERR_SUCCESS) {
        eb_free(b);
        return KE_ENOMEM;
    }
    if (cfg->ca_file && *cfg->ca_file &&
        (rc = mosquitto_tls_set(b->mosq, cfg->ca_file, NULL, NULL, NULL, NULL)) !=
            MOSQ_ERR_SUCCESS) {
        ke_log_error(EB_MOD, "eventbus.tls.ca=%s: %s", cfg->ca_file, mosquitto_strerror(rc));
        eb_free(b);
        return KE_ETLS;
    }
    mosquitto_connect_callback_set(b->mosq, cb_connect);
    mosquitto_disconnect_callback_set(b->mosq, cb_disconnect);
    mosquitto_message_callback_set(b->mosq, cb_message);
    mosquitto_publish_callback_set(b->mosq, cb_publish);
    mosquitto_log_callback_set(b->mosq, cb_log);
    if (cfg->internal) {
        eventbus_broker_config bcfg = {.binary = cfg->broker_binary,
                                       .dir = cfg->broker_dir,
                                       .host = b->host,
                                       .port = b->port,
                                       .backoff_max_ms = b->cfg.backoff_max_ms};
        rc = eventbus_broker_new(ke_rt_loop(b->e), &bcfg, &b->broker);
        if (rc == 0)
            rc = eventbus_broker_start(b->broker);
        if (rc != 0) {
            ke_log_error(EB_MOD, "cannot start the internal broker (binary=%s dir=%s): %s",
                         cfg->broker_binary ? cfg->broker_binary : "",
                         cfg->broker_dir ? cfg->broker_dir : "", ke_strerror(rc));
            eb_free(b);
            return rc;
        }
    }
    uv_timer_init(ke_rt_loop(b->e), &b->misc);
    uv_timer_init(ke_rt_loop(b->e), &b->retry);
    b->misc.data = b;
    b->retry.data = b;
    ke_metrics_counter_new("ke_eventbus_received_total", "MQTT messages received", NULL,
                           &b->m_received);
    ke_metrics_counter_new("ke_eventbus_forwarded_total", "MQTT messages queued for the cloud",
                           NULL, &b->m_forwarded);
    ke_metrics_counter_new("ke_eventbus_published_total",
                           "messages published to the broker and acknowledged by it",
                           NULL, &b->m_published);
    ke_metrics_counter_new("ke_eventbus_dropped_total",
                           "messages dropped (queue full, refused, outbox error)", NULL,
                           &b->m_dropped);
    ke_metrics_counter_new("ke_eventbus_reconnects_total", "broker reconnect attempts", NULL,
                           &b->m_reconnects);
    ke_metrics_gauge_new("ke_eventbus_connected", "1 while connected to the broker", NULL,
                         &b->m_connected);
    ke_module_set_data(m, b);
    ke_log_info(EB_MOD, "starting broker=%s:%d client_id=%s topics=%zu mode=%s", b->host,
                b->port, b->client_id, b->ntopics, b->broker ? "internal" : "external");
    uv_timer_start(&b->misc, on_misc, 1000, 1000);
    b->phase = EB_IDLE;
    attempt(b);
    return 0;
}

static int eb_health(ke_module *m, char *detail, size_t cap)
{
    eb *b = ke_module_data(m);
    if (!b)
        return 0;
    char br[128] = "";
    if (b->broker) {
        br[0] = ' ';
        eventbus_broker_detail(b->broker, br + 1, sizeof(br) - 1);
    }
    if (b->phase == EB_CONNECTED)
        snprintf(detail, cap, "connected broker=%s:%d queued=%" PRIu32 " inflight=%" PRIu32 "%s",
                 b->host, b->port, b->qlen, b->inflight, br);
    else if (b->phase == EB_CONNECTING)
        snprintf(detail, cap, "connecting broker=%s:%d%s", b->host, b->port, br);
    else {
        int64_t left = b->retry_at ? b->retry_at - ke_time_mono_ms() : 0;
        snprintf(detail, cap, "disconnected: %s, retry in %llds, queued=%" PRIu32 "%s",
                 b->reason[0] ? b->reason : "-", (long long)(left > 0 ? (left + 999) / 1000 : 0),
                 b->qlen, br);
    }
    return 0; /* a broker away is reported, not fatal */
}

static void eb_free(eb *b);

static void timer_closed(uv_handle_t *h)
{
    eb *b = h->data;
    if (--b->closing == 0 && b->destroyed)
        eb_free(b);
}

/* broker_stopped: the internal broker has exited and its handles closed. */
static void broker_stopped(void *arg)
{
    eb *b = arg;
    if (--b->closing == 0 && b->destroyed)
        eb_free(b);
}

static void eb_stop(ke_module *m)
{
    eb *b = ke_module_data(m);
    if (!b)
        return;
    if (b->phase == EB_CONNECTED) {
        b->phase = EB_STOPPED;
        mosquitto_disconnect(b->mosq); /* best effort: DISCONNECT keeps the session */
    }
    b->phase = EB_STOPPED;
    poll_close(b);
    uv_timer_stop(&b->misc);
    uv_timer_stop(&b->retry);
    b->closing = 2;
    uv_close((uv_handle_t *)&b->misc, timer_closed);
    uv_close((uv_handle_t *)&b->retry, timer_closed);
    /* the broker goes after the client's DISCONNECT; the loop runs until
     * it has exited (its process handle keeps uv_run going), so edgecore
     * never leaves it behind */
    if (b->broker) {
        b->closing++;
        eventbus_broker_stop(b->broker, broker_stopped, b);
    }
    if (b->qlen)
        ke_log_warn(EB_MOD, "stopping with %" PRIu32 " publishes not sent", b->qlen);
}

static void eb_destroy(ke_module *m)
{
    eb *b = ke_module_data(m);
    ke_module_set_data(m, NULL);
    if (!b)
        return;
    b->destroyed = 1;
    if (b->closing == 0) /* stop never ran, or its closes are done */
        eb_free(b);
}

const ke_module_ops eventbus_module = {
    .name = "eventbus",
    .group = "eventbus",
    .start = eb_start,
    .on_message = eb_on_message,
    .health = eb_health,
    .stop = eb_stop,
    .destroy = eb_destroy,
};
