/*
 * ke_mqtt.h — a private MQTT broker for tests: Debian's mosquitto on a free
 * loopback port, with its own config, persistence directory (QoS 1 state
 * and persistent sessions survive a restart) and log, started and stopped
 * by the test; and a publisher (mosquitto_pub). Optionally the broker asks
 * for a user name and password (a password file made with
 * mosquitto_passwd) and/or listens with TLS (the test's certificates).
 */
#ifndef KE_MQTT_H
#define KE_MQTT_H

#include "ke_testproc.h"

#define KE_MQTT_BROKER "/usr/sbin/mosquitto"

/* What the broker asks of its clients; every member may be NULL. */
typedef struct ke_mqtt_opts {
    const char *user, *password; /* both: allow_anonymous false, a password file */
    const char *cafile;          /* TLS listener with certfile and keyfile; also what */
    const char *certfile;        /*   ke_mqtt_pub trusts */
    const char *keyfile;
} ke_mqtt_opts;

typedef struct ke_mqtt {
    char dir[200];  /* config, persistence and log live here */
    char user[64], password[64], cafile[300]; /* what ke_mqtt_pub presents */
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

/* ke_mqtt_start_opts is ke_mqtt_start with what the broker asks of its
 * clients (opts may be NULL). */
void ke_mqtt_start_opts(ke_mqtt *b, const char *dir, int port, const ke_mqtt_opts *opts);

/* ke_mqtt_free_port returns a loopback TCP port free right now (0 on error). */
int ke_mqtt_free_port(void);

/* ke_mqtt_restart starts a stopped broker again on the same port and files. */
void ke_mqtt_restart(ke_mqtt *b);

/* ke_mqtt_stop stops the broker (SIGTERM: it writes its persistence file)
 * and returns its exit status; 0 when it was not running. */
int ke_mqtt_stop(ke_mqtt *b);

/* ke_mqtt_pub publishes payload on topic with QoS 1 (mosquitto_pub waits
 * for the broker's PUBACK), with the broker's user, password and CA when it
 * has them; returns mosquitto_pub's exit code. */
int ke_mqtt_pub(const ke_mqtt *b, const char *topic, const char *payload);

#endif
