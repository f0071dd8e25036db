/*
 * host_main.c — the virtual sensor as a host process: the same sensor
 * (vsensor.c) and SDK, over the SDK's MQTT transport straight to
 * DeviceTwin's protobuf topics (ke/mapper/<device>/up|down).
 *
 *   ke-virtual-sensor --broker 127.0.0.1:1883 --device vsensor-1
 *
 * Runs until SIGINT or SIGTERM. One thread: ke_mapper_poll drives MQTT
 * (the transport's recv runs mosquitto's loop without blocking), every
 * KE_VSENSOR_POLL_MS.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ke_mapper.h"
#include "ke_mqtt_transport.h"
#include "vsensor.h"

#define KE_VSENSOR_POLL_MS 10
#define KE_VSENSOR_CONNECT_MS 5000

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ke-virtual-sensor --broker HOST:PORT --device NAME\n"
               "  a simulated temperature/humidity sensor (mappers/README.md)\n"
               "  --broker HOST:PORT  the edge's MQTT broker (EventBus)\n"
               "  --device NAME       the Device's name (at most %d bytes)\n",
            KE_MAPPER_TEXT_MAX);
}

int main(int argc, char **argv)
{
    const char *broker = NULL, *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--broker") == 0 && i + 1 < argc)
            broker = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
            device = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    char host[256];
    const char *colon = broker ? strrchr(broker, ':') : NULL;
    if (!device || !colon || (size_t)(colon - broker) >= sizeof(host)) {
        usage(stderr);
        return 2;
    }
    memcpy(host, broker, (size_t)(colon - broker));
    host[colon - broker] = '\0';
    int port = atoi(colon + 1);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    static ke_mqtt_transport mqtt;
    if (ke_mqtt_transport_open(&mqtt, host, port, device, KE_VSENSOR_CONNECT_MS) != 0) {
        fprintf(stderr, "ke-virtual-sensor: cannot reach the broker at %s as %s\n", broker, device);
        return 1;
    }
    static vsensor sensor;
    static ke_mapper mapper;
    uint32_t now = now_ms();
    vsensor_init(&sensor, now, NULL);
    ke_mapper_config cfg = {
        .device = device,
        .props = vsensor_props,
        .n_props = VSENSOR_NPROPS,
        .read = vsensor_read,
        .write = vsensor_write,
        .user = &sensor,
        .transport = &mqtt.tr,
        .seq_start = (uint32_t)time(NULL), /* differs per start */
    };
    if (ke_mapper_start(&mapper, &cfg, now) != 0) {
        fprintf(stderr, "ke-virtual-sensor: device name \"%s\" refused (1..%d bytes)\n", device,
                KE_MAPPER_TEXT_MAX);
        ke_mqtt_transport_close(&mqtt);
        return 2;
    }
    printf("ready device=%s broker=%s\n", device, broker);
    fflush(stdout);
    const struct timespec tick = {0, KE_VSENSOR_POLL_MS * 1000000L};
    while (!stop) {
        now = now_ms();
        vsensor_step(&sensor, now);
        ke_mapper_poll(&mapper, now);
        nanosleep(&tick, NULL);
    }
    fprintf(stderr, "ke-virtual-sensor: stopping: reports=%u writes=%u lost=%u refused=%u\n",
            mapper.stats.reports, mapper.stats.writes, mapper.stats.frames_lost,
            mapper.stats.frames_refused);
    ke_mqtt_transport_close(&mqtt);
    return 0;
}
