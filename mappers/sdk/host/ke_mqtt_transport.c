/*
 * ke_mqtt_transport.c — MapperFrames over MQTT with libmosquitto
 * (ke_mqtt_transport.h). Host only: libc I/O, time and libmosquitto are
 * allowed here and nowhere else in mappers/sdk.
 */
#include "ke_mqtt_transport.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *msg)
{
    (void)mosq;
    ke_mqtt_transport *t = ctx;
    if (strcmp(msg->topic, t->down) != 0)
        return;
    if (t->q_len == KE_MQTT_QUEUE) {
        t->dropped++;
        return;
    }
    ke_mqtt_msg *m = &t->q[(t->q_head + t->q_len) % KE_MQTT_QUEUE];
    t->q_len++;
    m->len = (size_t)msg->payloadlen;
    if (m->len > KE_FRAME_MAX) {
        t->oversized++;
        return; /* kept as a marker: recv reports it as an error */
    }
    memcpy(m->data, msg->payload, m->len);
}

static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int n, const int *qos)
{
    (void)mosq;
    (void)mid;
    ke_mqtt_transport *t = ctx;
    t->subscribed = n > 0 && qos[0] <= 2;
}

/* on_connect subscribes, at the first connection and after each reconnect
 * (the session is persistent, but a broker that lost its state has
 * forgotten it; subscribing again is harmless). */
static void on_connect(struct mosquitto *mosq, void *ctx, int rc)
{
    ke_mqtt_transport *t = ctx;
    if (rc != 0)
        return;
    int s = mosquitto_subscribe(mosq, NULL, t->down, 1);
    if (s != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "ke_mqtt_transport: subscribe %s: %s\n", t->down, mosquitto_strerror(s));
}

static int mqtt_send(void *ctx, const uint8_t *buf, size_t len)
{
    ke_mqtt_transport *t = ctx;
    int rc = mosquitto_publish(t->mosq, NULL, t->up, (int)len, buf, 1, false);
    if (rc != MOSQ_ERR_SUCCESS)
        return -1;
    return 0;
}

static int mqtt_recv(void *ctx, uint8_t *buf, size_t cap)
{
    ke_mqtt_transport *t = ctx;
    if (t->q_len == 0) {
        int rc = mosquitto_loop(t->mosq, 0, 1);
        if (rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_NO_CONN) {
            /* once a second at most; the link retransmits what was lost
             * meanwhile and on_connect subscribes again */
            long long now = mono_ms();
            if (now < t->next_reconnect_ms)
                return 0;
            t->next_reconnect_ms = now + KE_MQTT_RECONNECT_MS;
            t->reconnects++;
            rc = mosquitto_reconnect(t->mosq);
        }
        if (rc != MOSQ_ERR_SUCCESS)
            return -1;
        if (t->q_len == 0)
            return 0;
    }
    ke_mqtt_msg *m = &t->q[t->q_head];
    t->q_head = (t->q_head + 1) % KE_MQTT_QUEUE;
    t->q_len--;
    if (m->len > KE_FRAME_MAX || m->len > cap)
        return -1;
    memcpy(buf, m->data, m->len);
    return (int)m->len;
}

int ke_mqtt_transport_open(ke_mqtt_transport *t, const char *host, int port, const char *device,
                           int timeout_ms)
{
    memset(t, 0, sizeof(*t));
    char id[96];
    if (!device || !device[0] || strlen(device) > 63 || strchr(device, '/') ||
        strchr(device, '+') || strchr(device, '#')) {
        fprintf(stderr, "ke_mqtt_transport: bad device name\n");
        return -1;
    }
    snprintf(t->up, sizeof(t->up), "ke/mapper/%s/up", device);
    snprintf(t->down, sizeof(t->down), "ke/mapper/%s/down", device);
    snprintf(id, sizeof(id), "ke-mapper-%s", device);
    /* reference-counted by libmosquitto 2.0: one init per open, one
     * cleanup per close */
    mosquitto_lib_init();
    t->lib_init = true;
    /* a persistent session (fixed id, clean_session false): the broker
     * keeps the subscription and what arrives on the down topic while the
     * mapper reconnects, so an ack published before on_connect has
     * subscribed again is not lost */
    t->mosq = mosquitto_new(id, false, t);
    if (!t->mosq) {
        fprintf(stderr, "ke_mqtt_transport: mosquitto_new failed\n");
        return -1;
    }
    mosquitto_message_callback_set(t->mosq, on_message);
    mosquitto_subscribe_callback_set(t->mosq, on_subscribe);
    mosquitto_connect_callback_set(t->mosq, on_connect);
    int rc = mosquitto_connect(t->mosq, host, port, 30);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "ke_mqtt_transport: connect %s:%d: %s\n", host, port,
                mosquitto_strerror(rc));
        return -1;
    }
    long long end = mono_ms() + timeout_ms;
    while (!t->subscribed && mono_ms() < end) {
        rc = mosquitto_loop(t->mosq, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "ke_mqtt_transport: %s\n", mosquitto_strerror(rc));
            return -1;
        }
    }
    if (!t->subscribed) {
        fprintf(stderr, "ke_mqtt_transport: no SUBACK for %s within %d ms\n", t->down,
                timeout_ms);
        return -1;
    }
    t->tr.send = mqtt_send;
    t->tr.recv = mqtt_recv;
    t->tr.ctx = t;
    t->tr.framed = false;
    return 0;
}

void ke_mqtt_transport_close(ke_mqtt_transport *t)
{
    if (!t)
        return;
    if (t->mosq) {
        mosquitto_disconnect(t->mosq);
        mosquitto_destroy(t->mosq);
        t->mosq = NULL;
    }
    if (t->lib_init) {
        mosquitto_lib_cleanup();
        t->lib_init = false;
    }
}
