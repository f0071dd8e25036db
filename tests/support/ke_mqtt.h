/*
 * ke_mqtt.h — a private MQTT broker for tests: Debian's mosquitto on a free
 * loopback port, with its own config, persistence directory (QoS 1 state
 * and persistent sessions survive a restart) and log, started and stopped
 * by the test; and a publisher (mosquitto_pub).
 */
#ifndef KE_MQTT_H
#define KE_MQTT_H

#include "ke_testproc.h"

#define KE_MQTT_BROKER "/usr/sbin/mosquitto"

typedef struct ke_mqtt {
    char dir[200];  /* config, persistence and log live here */
    char conf[260];
    char log[260];
    int port;
    int running;
    ke_tp proc;
} ke_mqtt;

/* ke_mqtt_available: 1 when mosquitto and mosquitto_pub are installed. */
int ke_mqtt_available(void);

/* ke_mqtt_start starts the broker with its files in dir (made if missing)
 * on port (0: a free one, kept in b->port for restarts) and waits until
 * the port accepts connections. Fails the test on error. */
void ke_mqtt_start(ke_mqtt *b, const char *dir, int port);

/* ke_mqtt_restart starts a stopped broker again on the same port and files. */
void ke_mqtt_restart(ke_mqtt *b);

/* ke_mqtt_stop stops the broker (SIGTERM: it writes its persistence file)
 * and returns its exit status; 0 when it was not running. */
int ke_mqtt_stop(ke_mqtt *b);

/* ke_mqtt_pub publishes payload on topic with QoS 1 (mosquitto_pub waits
 * for the broker's PUBACK); returns mosquitto_pub's exit code. */
int ke_mqtt_pub(const ke_mqtt *b, const char *topic, const char *payload);

#endif
