/*
 * bridge.c — ke-mapper-bridge: device firmware on serial lines (a tty, or
 * QEMU's UART as tcp:HOST:PORT) to edgecore's DeviceTwin on the broker.
 *
 *   ke-mapper-bridge --broker 127.0.0.1:1883 \
 *       --line vsensor-1=/dev/ttyUSB0 --line vsensor-2=tcp:127.0.0.1:5555
 *
 * Map:
 *   relay_up     a frame off a line (COBS + CRC checked by the SDK's
 *                ke_frame decoder) → ke/mapper/<device>/up, QoS 1
 *   relay_down   ke/mapper/<device>/down → framed onto the device's line
 *   report_state StateReport ONLINE/OFFLINE, the bridge's own frames, when
 *                a line speaks again / goes silent for --offline-after ms
 *   main         one poll() loop over the lines and the broker's socket
 *
 * Acknowledgement: the bridge relays, it does not terminate the link. A
 * device's frame is acked by DeviceTwin once it is stored at the edge, and
 * that ack travels down through the bridge. So an ack the device sees
 * always follows the broker's PUBACK of the publish (DeviceTwin only gets
 * the frame through the broker) and, beyond it, the edge's commit: a
 * reading the device saw acknowledged is durable at the edge even if the
 * bridge, the broker's delivery or edgecore dies next. What is not acked
 * the device retransmits (ke_link), so the bridge keeps no frame after it
 * has handed it over. The bridge's own StateReports carry seqs with the
 * top bit set; their acks and refusals are consumed here.
 *
 * Bounds: BR_LINES_MAX lines; at most BR_INFLIGHT_MAX publishes per line
 * awaiting PUBACK (beyond, frames are dropped and counted: the device
 * sends them again); BR_LINE_OUT_MAX bytes queued per line.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "bridge_line.h"
#include "ke_frame.h"
#include "ke_link.h"

#define BR_LINES_MAX 32
#define BR_INFLIGHT_MAX 16         /* publishes per line awaiting PUBACK */
#define BR_OFFLINE_AFTER_MS 5000   /* default silence before OFFLINE */
#define BR_BROKER_BACKOFF_MIN_MS 200
#define BR_BROKER_BACKOFF_MAX_MS 5000
#define BR_POLL_MS 50              /* loop period when nothing happens */
#define BR_TOPIC_MAX 160
#define BR_DEVICE_MAX 31           /* mapper.options: a device name */
#define BR_SEQ_OWN 0x80000000u     /* the bridge's own frames */

typedef enum { DEV_UNKNOWN, DEV_ONLINE, DEV_OFFLINE } dev_state;

typedef struct br_dev {
    char name[BR_DEVICE_MAX + 1];
    char up[BR_TOPIC_MAX], down[BR_TOPIC_MAX];
    br_line line;
    ke_frame_decoder dec;
    int64_t last_rx_ms; /* last good frame (or when the bridge started) */
    dev_state state;
    int inflight[BR_INFLIGHT_MAX]; /* mids awaiting PUBACK (0: free) */
    uint32_t up_frames, down_frames, up_dropped, down_dropped, bad_frames;
} br_dev;

typedef struct bridge {
    br_dev dev[BR_LINES_MAX];
    size_t n_dev;
    struct mosquitto *mosq;
    char host[128];
    int port;
    bool connected;
    int64_t reconnect_at_ms;
    uint32_t backoff_ms;
    int64_t offline_after_ms;
    uint32_t next_own_seq;
    bool verbose;
} bridge;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void br_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void br_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ke-mapper-bridge: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* describe writes a one-line summary of f (for --verbose and the tests:
 * "reported count=12 temperature=21.50", "ack 7", "state 1"). */
static void describe(const ke_mapper_v1_MapperFrame *f, char *out, size_t cap)
{
    size_t o = 0;
    switch (f->which_body) {
    case ke_mapper_v1_MapperFrame_reported_tag:
    case ke_mapper_v1_MapperFrame_desired_tag: {
        bool rep = f->which_body == ke_mapper_v1_MapperFrame_reported_tag;
        pb_size_t n = rep ? f->body.reported.properties_count : f->body.desired.properties_count;
        const ke_mapper_v1_PropertyValue *pv =
            rep ? f->body.reported.properties : f->body.desired.properties;
        o += (size_t)snprintf(out, cap, "%s", rep ? "reported" : "desired");
        for (pb_size_t i = 0; i < n && o < cap; i++)
            o += (size_t)snprintf(out + o, cap - o, " %s=%s", pv[i].name, pv[i].value);
        break;
    }
    case ke_mapper_v1_MapperFrame_get_tag:
        snprintf(out, cap, "get");
        break;
    case ke_mapper_v1_MapperFrame_state_tag:
        snprintf(out, cap, "state %d", (int)f->body.state.state);
        break;
    case ke_mapper_v1_MapperFrame_ack_tag:
        snprintf(out, cap, "ack %" PRIu32, f->body.ack);
        break;
    case ke_mapper_v1_MapperFrame_refused_tag:
        snprintf(out, cap, "refused %" PRIu32 " code=%" PRIu32 " %s", f->body.refused.seq,
                 f->body.refused.code, f->body.refused.reason);
        break;
    default:
        snprintf(out, cap, "body %d", (int)f->which_body);
    }
}

static br_dev *dev_by_down(bridge *b, const char *topic)
{
    for (size_t i = 0; i < b->n_dev; i++)
        if (strcmp(b->dev[i].down, topic) == 0)
            return &b->dev[i];
    return NULL;
}

/* publish sends payload on d's up topic at QoS 1, within d's in-flight
 * bound. Returns 0, or -1 (dropped and counted). */
static int publish(bridge *b, br_dev *d, const uint8_t *payload, size_t len)
{
    int slot = -1;
    for (int i = 0; i < BR_INFLIGHT_MAX && slot < 0; i++)
        if (d->inflight[i] == 0)
            slot = i;
    if (!b->connected || slot < 0) {
        d->up_dropped++;
        return -1;
    }
    int mid = 0;
    int rc = mosquitto_publish(b->mosq, &mid, d->up, (int)len, payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        d->up_dropped++;
        br_log("publish device=%s failed: %s (dropped; the device sends it again)", d->name,
               mosquitto_strerror(rc));
        return -1;
    }
    d->inflight[slot] = mid;
    return 0;
}

/* report_state publishes the bridge's own StateReport for d. */
static void report_state(bridge *b, br_dev *d, dev_state s)
{
    ke_mapper_v1_MapperFrame f = ke_mapper_v1_MapperFrame_init_zero;
    f.seq = BR_SEQ_OWN | (b->next_own_seq++ & ~BR_SEQ_OWN);
    if ((f.seq & ~BR_SEQ_OWN) == 0)
        f.seq = BR_SEQ_OWN | (b->next_own_seq++ & ~BR_SEQ_OWN);
    f.which_body = ke_mapper_v1_MapperFrame_state_tag;
    snprintf(f.body.state.device, sizeof(f.body.state.device), "%s", d->name);
    f.body.state.state = s == DEV_ONLINE ? ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE
                                         : ke_mapper_v1_DeviceState_DEVICE_STATE_OFFLINE;
    uint8_t buf[KE_FRAME_MAX];
    long n = ke_link_encode_frame(&f, buf, sizeof(buf));
    if (n > 0 && publish(b, d, buf, (size_t)n) == 0) {
        d->state = s;
        br_log("device=%s %s seq=%" PRIu32, d->name, s == DEV_ONLINE ? "online" : "offline",
               f.seq);
    } /* else: tried again at the next loop turn (the state is unchanged) */
}

/* relay_up hands one good frame from d's line to the broker. */
static void relay_up(bridge *b, br_dev *d, const uint8_t *payload, size_t len, int64_t now)
{
    static ke_mapper_v1_MapperFrame f;
    bool ok = ke_link_decode_frame(payload, len, &f) == 0;
    if (!ok)
        d->bad_frames++; /* relayed all the same: DeviceTwin refuses it by seq */
    d->last_rx_ms = now;
    if (d->state != DEV_ONLINE && b->connected)
        report_state(b, d, DEV_ONLINE);
    if (publish(b, d, payload, len) != 0)
        return;
    d->up_frames++;
    if (b->verbose) {
        char what[400];
        if (ok)
            describe(&f, what, sizeof(what));
        else
            snprintf(what, sizeof(what), "undecodable (%zu bytes)", len);
        br_log("up device=%s seq=%" PRIu32 " %s", d->name, ok ? f.seq : 0, what);
    }
}

/* relay_down frames a message from d's down topic onto its line. */
static void relay_down(bridge *b, br_dev *d, const uint8_t *payload, size_t len)
{
    static ke_mapper_v1_MapperFrame f;
    if (len == 0 || len > KE_FRAME_MAX || ke_link_decode_frame(payload, len, &f) != 0) {
        d->down_dropped++;
        br_log("down device=%s: %zu bytes that are not a MapperFrame within %d bytes: dropped",
               d->name, len, KE_FRAME_MAX);
        return;
    }
    uint32_t settles = f.which_body == ke_mapper_v1_MapperFrame_ack_tag       ? f.body.ack
                       : f.which_body == ke_mapper_v1_MapperFrame_refused_tag ? f.body.refused.seq
                                                                             : 0;
    char what[400];
    describe(&f, what, sizeof(what));
    if (settles & BR_SEQ_OWN) { /* the answer to one of the bridge's StateReports */
        if (f.which_body == ke_mapper_v1_MapperFrame_refused_tag)
            br_log("device=%s: DeviceTwin refused the bridge's %s", d->name, what);
        return;
    }
    uint8_t wire[KE_FRAME_WIRE_MAX];
    size_t wl = 0;
    int64_t now = mono_ms();
    if (ke_frame_encode(payload, len, wire, sizeof(wire), &wl) != 0 ||
        !br_line_write(&d->line, wire, wl, now)) {
        d->down_dropped++; /* the line is down or full: DeviceTwin's retry or TwinGet heals */
        if (b->verbose)
            br_log("down device=%s seq=%" PRIu32 " %s: dropped (line not ready)", d->name, f.seq,
                   what);
        return;
    }
    d->down_frames++;
    if (b->verbose)
        br_log("down device=%s seq=%" PRIu32 " %s", d->name, f.seq, what);
}

static void on_connect(struct mosquitto *m, void *ctx, int rc)
{
    bridge *b = ctx;
    if (rc != 0) {
        br_log("broker %s:%d refused the connection: %s", b->host, b->port,
               mosquitto_connack_string(rc));
        return;
    }
    b->connected = true;
    b->backoff_ms = BR_BROKER_BACKOFF_MIN_MS;
    /* A new connection: libmosquitto sends again what was in flight, and a
     * PUBACK lost with the old one would hold its slot for ever; free them
     * (the bound then holds per connection). */
    for (size_t i = 0; i < b->n_dev; i++)
        memset(b->dev[i].inflight, 0, sizeof(b->dev[i].inflight));
    for (size_t i = 0; i < b->n_dev; i++) {
        int src = mosquitto_subscribe(m, NULL, b->dev[i].down, 1);
        if (src != MOSQ_ERR_SUCCESS) /* the connection is going: on_disconnect retries */
            br_log("subscribe %s: %s", b->dev[i].down, mosquitto_strerror(src));
    }
    br_log("broker %s:%d connected", b->host, b->port);
}

static void on_disconnect(struct mosquitto *m, void *ctx, int rc)
{
    (void)m;
    bridge *b = ctx;
    if (b->connected)
        br_log("broker %s:%d lost (rc=%d)", b->host, b->port, rc);
    b->connected = false;
}

static void on_publish(struct mosquitto *m, void *ctx, int mid)
{
    (void)m;
    bridge *b = ctx;
    for (size_t i = 0; i < b->n_dev; i++)
        for (int j = 0; j < BR_INFLIGHT_MAX; j++)
            if (b->dev[i].inflight[j] == mid) {
                b->dev[i].inflight[j] = 0;
                return;
            }
}

static void on_message(struct mosquitto *m, void *ctx, const struct mosquitto_message *msg)
{
    (void)m;
    bridge *b = ctx;
    br_dev *d = dev_by_down(b, msg->topic);
    if (d && msg->payloadlen >= 0)
        relay_down(b, d, msg->payload, (size_t)msg->payloadlen);
}

/* broker_tick runs libmosquitto's I/O and reconnects with back-off. */
static void broker_tick(bridge *b, short revents, int64_t now)
{
    if (mosquitto_socket(b->mosq) < 0) {
        if (now < b->reconnect_at_ms)
            return;
        int rc = mosquitto_reconnect_async(b->mosq);
        b->reconnect_at_ms = now + b->backoff_ms;
        b->backoff_ms = b->backoff_ms * 2 > BR_BROKER_BACKOFF_MAX_MS ? BR_BROKER_BACKOFF_MAX_MS
                                                                      : b->backoff_ms * 2;
        if (rc != MOSQ_ERR_SUCCESS)
            return;
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (revents & (POLLIN | POLLERR | POLLHUP))
        rc = mosquitto_loop_read(b->mosq, 1);
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(b->mosq))
        rc = mosquitto_loop_write(b->mosq, 1);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_misc(b->mosq);
    if (rc != MOSQ_ERR_SUCCESS) {
        if (b->connected)
            br_log("broker %s:%d: %s", b->host, b->port, mosquitto_strerror(rc));
        b->connected = false;
        mosquitto_disconnect(b->mosq); /* closes the socket; reconnect above */
        if (b->reconnect_at_ms < now)
            b->reconnect_at_ms = now + b->backoff_ms;
    }
}

/* line_tick reads d's line and relays what it frames; checks silence. */
static void line_tick(bridge *b, br_dev *d, short revents, int64_t now)
{
    if (br_line_tick(&d->line, now, revents))
        br_log("line device=%s %s open", d->name, d->line.path);
    if (d->line.state == BR_LINE_OPEN && (revents & POLLOUT))
        br_line_flush(&d->line, now);
    uint8_t buf[512];
    for (int budget = 0; budget < 8 && (revents & (POLLIN | POLLHUP | POLLERR)); budget++) {
        long n = br_line_read(&d->line, buf, sizeof(buf), now);
        if (n < 0)
            br_log("line device=%s %s closed; reopening", d->name, d->line.path);
        if (n <= 0)
            break;
        for (long i = 0; i < n; i++) {
            const uint8_t *payload;
            size_t len;
            if (ke_frame_decoder_push(&d->dec, buf[i], &payload, &len) == 1)
                relay_up(b, d, payload, len, now);
        }
    }
    if (d->state != DEV_OFFLINE && b->connected && now - d->last_rx_ms >= b->offline_after_ms)
        report_state(b, d, DEV_OFFLINE);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ke-mapper-bridge --broker HOST:PORT --line DEVICE=PATH [--line ...]\n"
            "                        [--offline-after MS] [--client-id ID] [--verbose]\n"
            "  --broker HOST:PORT   the edge's MQTT broker (EventBus)\n"
            "  --line DEVICE=PATH   a serial line: a tty (/dev/ttyUSB0, raw 115200 8N1) or\n"
            "                       tcp:HOST:PORT (QEMU's -serial tcp:...); up to %d\n"
            "  --offline-after MS   report the device OFFLINE after MS of silence (%d)\n"
            "  --client-id ID       MQTT client id (ke-mapper-bridge); persistent session\n"
            "  --verbose            log every frame relayed\n",
            BR_LINES_MAX, BR_OFFLINE_AFTER_MS);
}

static int add_line(bridge *b, const char *arg, int64_t now)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) > BR_DEVICE_MAX || b->n_dev == BR_LINES_MAX)
        return -1;
    br_dev *d = &b->dev[b->n_dev];
    memcpy(d->name, arg, (size_t)(eq - arg));
    d->name[eq - arg] = '\0';
    if (strchr(d->name, '/') || strchr(d->name, '+') || strchr(d->name, '#') ||
        br_line_init(&d->line, eq + 1) != 0)
        return -1;
    for (size_t i = 0; i < b->n_dev; i++)
        if (strcmp(b->dev[i].name, d->name) == 0)
            return -1;
    char name[BR_DEVICE_MAX + 1];
    memcpy(name, d->name, sizeof(name));
    snprintf(d->up, sizeof(d->up), "ke/mapper/%s/up", name);
    snprintf(d->down, sizeof(d->down), "ke/mapper/%s/down", name);
    ke_frame_decoder_init(&d->dec);
    d->last_rx_ms = now;
    b->n_dev++;
    return 0;
}

int main(int argc, char **argv)
{
    static bridge b;
    const char *broker = NULL, *client_id = "ke-mapper-bridge";
    int64_t now = mono_ms();
    b.offline_after_ms = BR_OFFLINE_AFTER_MS;
    b.backoff_ms = BR_BROKER_BACKOFF_MIN_MS;
    b.next_own_seq = (uint32_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--broker") == 0 && v) {
            broker = v;
            i++;
        } else if (strcmp(a, "--line") == 0 && v) {
            if (add_line(&b, v, now) != 0) {
                fprintf(stderr, "ke-mapper-bridge: bad --line %s (DEVICE=PATH|tcp:HOST:PORT, "
                                "distinct devices of at most %d bytes, at most %d lines)\n",
                        v, BR_DEVICE_MAX, BR_LINES_MAX);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--offline-after") == 0 && v && atol(v) > 0) {
            b.offline_after_ms = atol(v);
            i++;
        } else if (strcmp(a, "--client-id") == 0 && v) {
            client_id = v;
            i++;
        } else if (strcmp(a, "--verbose") == 0) {
            b.verbose = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    const char *colon = broker ? strrchr(broker, ':') : NULL;
    if (!colon || b.n_dev == 0 || (size_t)(colon - broker) >= sizeof(b.host)) {
        usage(stderr);
        return 2;
    }
    memcpy(b.host, broker, (size_t)(colon - broker));
    b.port = atoi(colon + 1);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    mosquitto_lib_init();
    int ret = 1;
    /* a persistent session: what DeviceTwin sends while the bridge
     * restarts waits at the broker */
    b.mosq = mosquitto_new(client_id, false, &b);
    if (!b.mosq) {
        br_log("mosquitto_new: %s", strerror(errno));
        goto out;
    }
    mosquitto_connect_callback_set(b.mosq, on_connect);
    mosquitto_disconnect_callback_set(b.mosq, on_disconnect);
    mosquitto_publish_callback_set(b.mosq, on_publish);
    mosquitto_message_callback_set(b.mosq, on_message);
    if (mosquitto_connect_async(b.mosq, b.host, b.port, 30) != MOSQ_ERR_SUCCESS) {
        br_log("broker %s:%d not reachable yet; retrying", b.host, b.port);
        b.reconnect_at_ms = now + b.backoff_ms;
    }
    printf("ready lines=%zu broker=%s\n", b.n_dev, broker);
    fflush(stdout);

    struct pollfd pfd[BR_LINES_MAX + 1];
    while (!stopping) {
        for (size_t i = 0; i < b.n_dev; i++) {
            pfd[i].fd = b.dev[i].line.fd;
            pfd[i].events = br_line_events(&b.dev[i].line);
            pfd[i].revents = 0;
        }
        pfd[b.n_dev].fd = mosquitto_socket(b.mosq);
        pfd[b.n_dev].events =
            (short)(POLLIN | (mosquitto_want_write(b.mosq) ? POLLOUT : 0));
        pfd[b.n_dev].revents = 0;
        if (poll(pfd, b.n_dev + 1, BR_POLL_MS) < 0 && errno != EINTR) {
            br_log("poll: %s", strerror(errno));
            goto out;
        }
        now = mono_ms();
        broker_tick(&b, pfd[b.n_dev].revents, now);
        for (size_t i = 0; i < b.n_dev; i++)
            line_tick(&b, &b.dev[i], pfd[i].fd >= 0 ? pfd[i].revents : 0, now);
    }
    ret = 0;
out:
    for (size_t i = 0; i < b.n_dev; i++) {
        br_dev *d = &b.dev[i];
        br_log("device=%s up=%" PRIu32 " down=%" PRIu32 " up_dropped=%" PRIu32
               " down_dropped=%" PRIu32 " bad=%" PRIu32 " crc_rejected=%" PRIu32,
               d->name, d->up_frames, d->down_frames, d->up_dropped, d->down_dropped,
               d->bad_frames, d->dec.rejected[KE_FRAME_REJ_CRC]);
        br_line_close(&d->line, now);
    }
    if (b.mosq) {
        mosquitto_disconnect(b.mosq);
        mosquitto_destroy(b.mosq);
    }
    mosquitto_lib_cleanup();
    return ret;
}
