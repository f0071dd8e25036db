/*
 * main.c — ke-modbus-mapper: one Modbus device (TCP or RTU, libmodbus)
 * served to edgecore's DeviceTwin through the mapper SDK over MQTT
 * (ke/mapper/<device>/up|down). mappers/README.md, "Modbus".
 *
 * Map: one thread, one loop (run). Each property is read from the device
 * on its collectCycle (collect) into a cache; the SDK's read callback
 * (prop_read) answers from that cache and ke_mapper_changed reports a
 * value that changed; the SDK's write callback (prop_write) encodes a
 * desired value, writes it and reads it back. The Modbus connection is
 * (re)made with a doubling back-off (link_connect); KE_MB_FAILS_OFFLINE
 * failures in a row (a read, then the reconnection) turn the device
 * OFFLINE (ke_mapper_set_online), the next successful read ONLINE again.
 *
 * OS and libmodbus calls live here, never in mappers/sdk.
 */
#include <errno.h>
#include <getopt.h>
#include <modbus.h>
#include <mosquitto.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ke_mapper.h"
#include "ke_modbus_config.h"
#include "ke_modbus_convert.h"
#include "ke_mqtt_transport.h"

#define KE_MB_FILE_MAX (256 * 1024)  /* bytes of a --config or --model file */
#define KE_MB_BACKOFF_MIN_MS 200     /* first reconnection delay */
#define KE_MB_BACKOFF_MAX_MS 5000    /* back-off ceiling */
#define KE_MB_RESPONSE_TIMEOUT_MS 500 /* a Modbus request's answer */
#define KE_MB_FAILS_OFFLINE 2        /* failures in a row that make the device offline */
#define KE_MB_TICK_MS 50             /* longest wait of the loop */
#define KE_MB_MQTT_TIMEOUT_MS 10000  /* first connection to the broker */
#define KE_MB_RESYNC_MIN_MS 500      /* first resync after a 404 Refusal */
#define KE_MB_RESYNC_MAX_MS 10000    /* resync back-off ceiling */
#define KE_MB_REFUSED_UNKNOWN 404    /* DeviceTwin: the device is not (yet) on this node */

typedef struct mb_point {
    char value[KE_MAPPER_TEXT_MAX + 1]; /* last value read */
    bool valid;                         /* value holds a reading of the current connection */
    bool failing;                       /* the last read failed (logged once) */
    uint32_t next_collect;
} mb_point;

typedef struct mb_mapper {
    ke_modbus_config cfg;
    ke_prop props[KE_MAPPER_PROPS_MAX];
    mb_point pts[KE_MAPPER_PROPS_MAX];
    modbus_t *ctx;
    bool connected, online;
    unsigned fails;       /* link failures in a row */
    uint32_t backoff_ms;  /* the next reconnection delay */
    uint32_t next_connect;
    uint32_t refused_seen;  /* m.stats.frames_refused already looked at */
    bool resync_due;        /* a resync waits for next_resync */
    uint32_t next_resync, resync_ms;
    ke_mqtt_transport mqtt;
    ke_mapper m;
} mb_mapper;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

static bool due(uint32_t now, uint32_t t)
{
    return (int32_t)(now - t) >= 0;
}

static const char *reg_name(ke_modbus_register r)
{
    switch (r) {
    case KE_MODBUS_COIL:
        return "CoilRegister";
    case KE_MODBUS_DISCRETE_INPUT:
        return "DiscreteInputRegister";
    case KE_MODBUS_HOLDING:
        return "HoldingRegister";
    case KE_MODBUS_INPUT:
        return "InputRegister";
    }
    return "?";
}

/* is_exception: the device answered with a Modbus exception (a bad
 * address, a refused value): the link is fine, the request was not. */
static bool is_exception(int err)
{
    return err >= EMBXILFUN && err <= EMBXGTAR;
}

static void set_online(mb_mapper *mb, bool online)
{
    if (mb->online == online)
        return;
    mb->online = online;
    fprintf(stderr, "ke-modbus-mapper: device=%s %s\n", mb->cfg.device,
            online ? "online" : "offline");
    if (ke_mapper_set_online(&mb->m, online) != 0)
        fprintf(stderr, "ke-modbus-mapper: device=%s: set_online failed\n", mb->cfg.device);
}

static void link_close(mb_mapper *mb)
{
    if (mb->ctx) {
        modbus_close(mb->ctx);
        modbus_free(mb->ctx);
        mb->ctx = NULL;
    }
    mb->connected = false;
    for (size_t i = 0; i < mb->cfg.n_points; i++)
        mb->pts[i].valid = false; /* a value of a device we cannot reach is not reported */
}

/* link_failed counts a failure of the connection, closes it and schedules
 * the next attempt after the back-off. */
static void link_failed(mb_mapper *mb, uint32_t now, const char *what, int err)
{
    const ke_modbus_link *l = &mb->cfg.link;
    if (mb->fails == 0 || mb->connected)
        fprintf(stderr, "ke-modbus-mapper: device=%s %s %s%s%d: %s (retry in %u ms)\n",
                mb->cfg.device, what, l->host, l->mode == KE_MODBUS_TCP ? ":" : " slave ",
                l->mode == KE_MODBUS_TCP ? l->port : l->slave, modbus_strerror(err),
                mb->backoff_ms);
    link_close(mb);
    mb->fails++;
    mb->next_connect = now + mb->backoff_ms;
    mb->backoff_ms = mb->backoff_ms * 2 > KE_MB_BACKOFF_MAX_MS ? KE_MB_BACKOFF_MAX_MS
                                                               : mb->backoff_ms * 2;
    if (mb->fails >= KE_MB_FAILS_OFFLINE)
        set_online(mb, false);
}

/* link_connect makes a new libmodbus context and connects it. */
static int link_connect(mb_mapper *mb, uint32_t now)
{
    const ke_modbus_link *l = &mb->cfg.link;
    char port[16];
    snprintf(port, sizeof(port), "%d", l->port);
    mb->ctx = l->mode == KE_MODBUS_TCP
                  ? modbus_new_tcp_pi(l->host, port)
                  : modbus_new_rtu(l->host, l->baud, l->parity, l->data_bits, l->stop_bits);
    if (!mb->ctx) {
        link_failed(mb, now, "new context", errno);
        return -1;
    }
    if (modbus_set_slave(mb->ctx, l->slave) != 0 ||
        modbus_set_response_timeout(mb->ctx, 0, KE_MB_RESPONSE_TIMEOUT_MS * 1000) != 0) {
        link_failed(mb, now, "set up", errno);
        return -1;
    }
    if (modbus_connect(mb->ctx) != 0) {
        link_failed(mb, now, "connect", errno);
        return -1;
    }
    mb->connected = true;
    fprintf(stderr, "ke-modbus-mapper: device=%s connected to %s\n", mb->cfg.device, l->host);
    return 0;
}

/* read_point reads point i from the device into text; returns 0, or -1
 * with errno set by libmodbus. */
static int read_point(mb_mapper *mb, size_t i, char *text)
{
    const ke_modbus_point *pt = &mb->cfg.points[i];
    const ke_modbus_visitor *v = &pt->visitor;
    uint16_t words[KE_MODBUS_REGS_MAX];
    uint8_t bits[KE_MODBUS_BITS_MAX];
    int n;
    switch (v->reg) {
    case KE_MODBUS_COIL:
        n = modbus_read_bits(mb->ctx, v->offset, v->limit, bits);
        break;
    case KE_MODBUS_DISCRETE_INPUT:
        n = modbus_read_input_bits(mb->ctx, v->offset, v->limit, bits);
        break;
    case KE_MODBUS_HOLDING:
        n = modbus_read_registers(mb->ctx, v->offset, v->limit, words);
        break;
    case KE_MODBUS_INPUT:
    default:
        n = modbus_read_input_registers(mb->ctx, v->offset, v->limit, words);
        break;
    }
    if (n != v->limit) {
        if (n >= 0)
            errno = EMBBADDATA;
        return -1;
    }
    if (ke_modbus_decode(v, pt->type, words, bits, text, KE_MAPPER_TEXT_MAX + 1) != 0) {
        errno = EMBBADDATA;
        return -1;
    }
    return 0;
}

/* collect reads point i now. A Modbus exception is the property's
 * problem (logged when it starts); any other failure is the link's. */
static int collect(mb_mapper *mb, size_t i, uint32_t now)
{
    mb_point *p = &mb->pts[i];
    const ke_modbus_point *pt = &mb->cfg.points[i];
    char text[KE_MAPPER_TEXT_MAX + 1];
    if (!mb->connected)
        return -1;
    if (read_point(mb, i, text) != 0) {
        int err = errno;
        if (err == EMBBADDATA || is_exception(err)) {
            if (!p->failing)
                fprintf(stderr, "ke-modbus-mapper: device=%s property=%s %s %u+%u: %s\n",
                        mb->cfg.device, pt->name, reg_name(pt->visitor.reg), pt->visitor.offset,
                        pt->visitor.limit, modbus_strerror(err));
            p->failing = true;
            p->valid = false;
            return -1;
        }
        link_failed(mb, now, "read from", err);
        return -1;
    }
    p->failing = false;
    mb->fails = 0;
    mb->backoff_ms = KE_MB_BACKOFF_MIN_MS;
    set_online(mb, true);
    if (!p->valid || strcmp(p->value, text) != 0) {
        memcpy(p->value, text, sizeof(text));
        p->valid = true;
        if (ke_mapper_changed(&mb->m, i) != 0)
            fprintf(stderr, "ke-modbus-mapper: property=%s: cannot mark changed\n", pt->name);
    }
    return 0;
}

static size_t prop_index(const mb_mapper *mb, const ke_prop *prop)
{
    return (size_t)(prop - mb->props);
}

/* prop_read: the SDK's read callback — the value collected last. */
static int prop_read(void *user, const ke_prop *prop, char *value, size_t size)
{
    mb_mapper *mb = user;
    const mb_point *p = &mb->pts[prop_index(mb, prop)];
    if (!p->valid || strlen(p->value) >= size)
        return -1;
    memcpy(value, p->value, strlen(p->value) + 1);
    return 0;
}

/* prop_write: the SDK's write callback — encode, write, read back (the
 * SDK then reports what the device holds). */
static int prop_write(void *user, const ke_prop *prop, const char *value)
{
    mb_mapper *mb = user;
    size_t i = prop_index(mb, prop);
    const ke_modbus_point *pt = &mb->cfg.points[i];
    const ke_modbus_visitor *v = &pt->visitor;
    uint16_t words[KE_MODBUS_REGS_MAX];
    uint8_t bits[KE_MODBUS_BITS_MAX];
    if (!ke_modbus_register_writable(v->reg)) {
        fprintf(stderr, "ke-modbus-mapper: property=%s: %s is read-only\n", pt->name,
                reg_name(v->reg));
        return -1;
    }
    if (ke_modbus_encode(v, pt->type, value, words, bits) != 0) {
        fprintf(stderr, "ke-modbus-mapper: property=%s: value \"%s\" does not fit %u %s(s)\n",
                pt->name, value, v->limit, reg_name(v->reg));
        return -1;
    }
    if (!mb->connected) {
        fprintf(stderr, "ke-modbus-mapper: property=%s: not written, device not connected\n",
                pt->name);
        return -1;
    }
    int n = v->reg == KE_MODBUS_COIL ? modbus_write_bits(mb->ctx, v->offset, v->limit, bits)
                                     : modbus_write_registers(mb->ctx, v->offset, v->limit, words);
    uint32_t now = now_ms();
    if (n != v->limit) {
        int err = n >= 0 ? EMBBADDATA : errno;
        fprintf(stderr, "ke-modbus-mapper: property=%s: write %s %u+%u: %s\n", pt->name,
                reg_name(v->reg), v->offset, v->limit, modbus_strerror(err));
        if (!is_exception(err) && err != EMBBADDATA)
            link_failed(mb, now, "write to", err);
        return -1;
    }
    fprintf(stderr, "ke-modbus-mapper: property=%s written: %s\n", pt->name, value);
    if (collect(mb, i, now) == 0)
        mb->pts[i].next_collect = now + pt->collect_ms;
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ke-modbus-mapper: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(KE_MB_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, KE_MB_FILE_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n > KE_MB_FILE_MAX) {
        fprintf(stderr, "ke-modbus-mapper: %s: %s\n", path,
                !buf ? "out of memory" : bad ? "read error" : "larger than 256 KiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ke-modbus-mapper --broker HOST:PORT --device NAME --config DEVICE.json\n"
            "                        [--model MODEL.json]\n"
            "  --broker  the MQTT broker edgecore's EventBus uses\n"
            "  --device  the device's name (must match metadata.name in --config)\n"
            "  --config  the Device object as JSON (kectl get device NAME -o json)\n"
            "  --model   its DeviceModel as JSON: property types and access modes\n"
            "            (without it: BOOLEAN for coils/discrete inputs, INT when the\n"
            "            scale is 1, else FLOAT; coils and holding registers writable)\n");
}

/* watch_refusals: DeviceTwin refuses frames of a device it does not know
 * yet (404: the Device has not reached the edge, e.g. the mapper started
 * first) and the SDK never sends a refused frame again; so after such a
 * refusal the state, a TwinGet and every value are sent again, with a
 * doubling delay while the refusals go on. */
static void watch_refusals(mb_mapper *mb, uint32_t now)
{
    if (mb->m.stats.frames_refused != mb->refused_seen) {
        mb->refused_seen = mb->m.stats.frames_refused;
        if (mb->m.stats.last_refusal_code == KE_MB_REFUSED_UNKNOWN && !mb->resync_due) {
            mb->resync_due = true;
            mb->next_resync = now + mb->resync_ms;
            fprintf(stderr, "ke-modbus-mapper: device=%s unknown to the edge; again in %u ms\n",
                    mb->cfg.device, mb->resync_ms);
            mb->resync_ms = mb->resync_ms * 2 > KE_MB_RESYNC_MAX_MS ? KE_MB_RESYNC_MAX_MS
                                                                    : mb->resync_ms * 2;
        }
    }
    if (mb->resync_due && due(now, mb->next_resync)) {
        mb->resync_due = false;
        if (ke_mapper_resync(&mb->m) != 0)
            fprintf(stderr, "ke-modbus-mapper: device=%s: resync failed\n", mb->cfg.device);
    }
}

/* run: the loop; returns when SIGTERM or SIGINT arrived. */
static void run(mb_mapper *mb)
{
    while (!stopping) {
        uint32_t now = now_ms();
        if (!mb->connected && due(now, mb->next_connect))
            (void)link_connect(mb, now); /* a failure is logged and counted in there */
        for (size_t i = 0; i < mb->cfg.n_points && mb->connected; i++) {
            mb_point *p = &mb->pts[i];
            if (!due(now, p->next_collect))
                continue;
            p->next_collect = now + mb->cfg.points[i].collect_ms;
            (void)collect(mb, i, now); /* failures are logged and acted on in there */
        }
        ke_mapper_poll(&mb->m, now_ms());
        watch_refusals(mb, now_ms());
        int fd = mosquitto_socket(mb->mqtt.mosq);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (fd < 0) {
            struct timespec ts = {0, KE_MB_TICK_MS * 1000000L}; /* broker away: recv reconnects */
            nanosleep(&ts, NULL);
        } else if (poll(&pfd, 1, KE_MB_TICK_MS) < 0 && errno != EINTR) {
            fprintf(stderr, "ke-modbus-mapper: poll: %s\n", strerror(errno));
            return;
        }
    }
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *device = NULL, *config = NULL, *model = NULL;
    static const struct option opts[] = {
        {"broker", required_argument, NULL, 'b'}, {"device", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'}, {"model", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'b': broker = optarg; break;
        case 'd': device = optarg; break;
        case 'c': config = optarg; break;
        case 'm': model = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *colon = broker ? strrchr(broker, ':') : NULL;
    if (!broker || !device || !config || !colon || optind != argc) {
        usage(stderr);
        return 2;
    }
    char host[256];
    int port = atoi(colon + 1);
    if ((size_t)(colon - broker) >= sizeof(host) || port <= 0 || port > 65535) {
        fprintf(stderr, "ke-modbus-mapper: --broker %s: HOST:PORT\n", broker);
        return 2;
    }
    memcpy(host, broker, (size_t)(colon - broker));
    host[colon - broker] = '\0';

    static mb_mapper mb; /* ~60 KB: static, not on the stack */
    int rc = 1;
    char err[KE_MODBUS_ERR_MAX];
    char *dev_json = slurp(config), *model_json = model ? slurp(model) : NULL;
    if (!dev_json || (model && !model_json))
        goto out;
    if (ke_modbus_config_parse(dev_json, model_json, &mb.cfg, err) != 0) {
        fprintf(stderr, "ke-modbus-mapper: %s: %s\n", config, err);
        goto out;
    }
    if (strcmp(mb.cfg.device, device) != 0) {
        fprintf(stderr, "ke-modbus-mapper: --device %s, but %s is device %s\n", device, config,
                mb.cfg.device);
        goto out;
    }
    for (size_t i = 0; i < mb.cfg.n_points; i++) {
        const ke_modbus_point *pt = &mb.cfg.points[i];
        mb.props[i] = (ke_prop){pt->name, pt->type, pt->access, pt->report_ms, 0};
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        fprintf(stderr, "ke-modbus-mapper: sigaction: %s\n", strerror(errno));
        goto out;
    }
    if (ke_mqtt_transport_open(&mb.mqtt, host, port, device, KE_MB_MQTT_TIMEOUT_MS) != 0)
        goto out; /* logged by the transport */

    /* one attempt before start, so the first StateReport is the truth */
    uint32_t now = now_ms();
    mb.backoff_ms = KE_MB_BACKOFF_MIN_MS;
    mb.resync_ms = KE_MB_RESYNC_MIN_MS;
    mb.online = true; /* what the SDK reports at start */
    mb.fails = KE_MB_FAILS_OFFLINE - 1; /* a failure now means offline at once */
    ke_mapper_config mc = {
        .device = mb.cfg.device,
        .props = mb.props,
        .n_props = mb.cfg.n_points,
        .read = prop_read,
        .write = prop_write,
        .user = &mb,
        .transport = &mb.mqtt.tr,
        .seq_start = (uint32_t)time(NULL) * 8u + 1u, /* new per start (ke_link) */
    };
    if (ke_mapper_start(&mb.m, &mc, now) != 0) {
        fprintf(stderr, "ke-modbus-mapper: the mapper SDK refused the property table\n");
        goto out;
    }
    if (link_connect(&mb, now) == 0)
        for (size_t i = 0; i < mb.cfg.n_points; i++) {
            (void)collect(&mb, i, now); /* logged and acted on in there */
            mb.pts[i].next_collect = now + mb.cfg.points[i].collect_ms;
        }
    printf("ready device=%s properties=%zu\n", mb.cfg.device, mb.cfg.n_points);
    fflush(stdout);
    run(&mb);
    fprintf(stderr, "ke-modbus-mapper: device=%s stopping\n", mb.cfg.device);
    rc = 0;
out:
    link_close(&mb);
    ke_mqtt_transport_close(&mb.mqtt);
    free(dev_json);
    free(model_json);
    return rc;
}
