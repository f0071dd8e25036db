/*
 * ke_mqtt_transport.h — a ke_transport over MQTT for host builds of a
 * mapper (libmosquitto): it publishes each encoded MapperFrame whole (no
 * COBS, no CRC: MQTT frames and checks messages) on ke/mapper/<device>/up
 * and receives those on ke/mapper/<device>/down, the topics edgecore's
 * DeviceTwin serves. DeviceTwin acks accepted frames by seq and answers
 * the others with Refusal{seq}, which ke_link settles as "done, not
 * accepted".
 *
 * Single-threaded: recv runs libmosquitto's network loop without waiting
 * (mosquitto_loop with timeout 0), so the mapper's poll loop drives MQTT
 * too. Received messages wait in a fixed queue (KE_MQTT_QUEUE); when it is
 * full a message is dropped and counted, and the sender's retransmission
 * brings it again. A lost connection is tried again at most once a second
 * (KE_MQTT_RECONNECT_MS), from recv; the subscription is renewed on each
 * connection.
 */
#ifndef KE_MQTT_TRANSPORT_H
#define KE_MQTT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_link.h"

#define KE_MQTT_QUEUE 16
#define KE_MQTT_TOPIC_MAX 160
#define KE_MQTT_RECONNECT_MS 1000 /* at most one reconnection attempt per */

struct mosquitto;

typedef struct ke_mqtt_msg {
    size_t len;  /* > KE_FRAME_MAX: the message was too long (dropped) */
    uint8_t data[KE_FRAME_MAX];
} ke_mqtt_msg;

typedef struct ke_mqtt_transport {
    struct mosquitto *mosq;
    char up[KE_MQTT_TOPIC_MAX], down[KE_MQTT_TOPIC_MAX];
    ke_mqtt_msg q[KE_MQTT_QUEUE];
    size_t q_head, q_len;
    bool lib_init, subscribed;
    long long next_reconnect_ms;
    uint32_t reconnects; /* reconnection attempts */
    uint32_t dropped;   /* messages dropped: queue full */
    uint32_t oversized; /* messages longer than KE_FRAME_MAX */
    ke_transport tr;    /* what the link uses (framed = false) */
} ke_mqtt_transport;

/* ke_mqtt_transport_open connects to the broker at host:port as client id
 * "ke-mapper-<device>", subscribes to the device's down topic (QoS 1) and
 * waits up to timeout_ms for the broker to confirm both. On success t->tr
 * is the transport to hand to ke_mapper_config. Returns 0, or -1 (logged
 * to stderr); t needs ke_mqtt_transport_close either way. */
int ke_mqtt_transport_open(ke_mqtt_transport *t, const char *host, int port, const char *device,
                           int timeout_ms);

/* ke_mqtt_transport_close disconnects and frees what open took. Safe on a
 * transport whose open failed, and twice. */
void ke_mqtt_transport_close(ke_mqtt_transport *t);

#endif
