/*
 * eventbus.h — the EventBus module: bridges MQTT topics on a broker
 * (mosquitto) and the cloud. It serves group "eventbus".
 *
 * libmosquitto runs on the edge loop, never on a thread of its own: the
 * broker's socket is a uv_poll (readable always, writable while
 * mosquitto_want_write), a 1 s uv timer runs mosquitto_loop_misc
 * (keepalives), so every libmosquitto callback runs on the loop. The
 * connection is made with mosquitto_connect_async, whose name lookup
 * blocks: give the broker as a numeric address (or a name resolved from
 * /etc/hosts).
 *
 *   MQTT -> cloud   a message on a subscribed topic (QoS 1) becomes a
 *                   report to "metamanager": group "eventbus", UPLOAD,
 *                   resource "node/<node>//EventBus/<topic>@<boot>.<n>"
 *                   (topic percent-encoded, see eventbus_topic_encode;
 *                   <boot> random per start, <n> counting), content the
 *                   payload, header.sync set.
 *   cloud -> MQTT   a message whose resource is "eventbus/publish/<topic>"
 *                   (from a module), or a change of an EVENTBUS_KIND
 *                   object (from the cloud, through MetaManager): its
 *                   content is published on <topic> with QoS 1; while
 *                   the broker is away it waits in a bounded queue
 *                   (eventbus_config.queue_max / queue_bytes), sent in
 *                   order on reconnect; past the bound it is refused and
 *                   counted.
 *   routes          messages on topics matching a route's filter
 *                   (eventbus_config.routes, known before the first
 *                   connect, so a message the session kept is never
 *                   taken for another's) go to the route's module instead
 *                   of the cloud, as PUBLISH with resource = the topic and
 *                   content = the payload (DeviceTwin's device topics).
 *                   Subscribed with QoS 1 at every connect.
 *   RESPONSE        MetaManager's answer to a report ({"seq":N} once it is
 *                   in the outbox): counted as forwarded.
 */
#ifndef EVENTBUS_H
#define EVENTBUS_H

#include "ke_rt.h"

#include <stddef.h>
#include <stdint.h>

#define EVENTBUS_PUBLISH_PREFIX "eventbus/publish/"
/* The kind of the cloud's objects published on the broker: a change of
 * "node/<node>/<ns>/MQTTMessage/<percent-encoded topic>" sent to group
 * "eventbus" (MetaManager passes it on once stored) publishes its content. */
#define EVENTBUS_KIND "MQTTMessage"

/* A route: MQTT messages on topics matching filter go to module. */
typedef struct eventbus_route {
    const char *filter;
    const char *module;
} eventbus_route;

typedef struct eventbus_config {
    const char *node_name;
    const char *broker;    /* "host:port" (numeric host: no DNS on the loop) */
    const char *client_id; /* NULL or "": "edgecore-<node>" */
    const char *username, *password; /* optional */
    const char *ca_file;   /* optional: TLS to the broker, verified with this CA */
    const char *subscribe; /* comma-separated topic filters forwarded to the cloud */
    int64_t backoff_initial_ms, backoff_max_ms;
    uint32_t queue_max;    /* publishes waiting for the broker; 0: 10,000 */
    size_t queue_bytes;    /* their payload bytes; 0: 4 MiB */
    const eventbus_route *routes; /* borrowed; at most 32 */
    size_t n_routes;
    /* modules.eventbus.mode: internal: EventBus starts and supervises the
     * broker itself (broker.h), listening on `broker` */
    int internal;
    const char *broker_binary; /* mosquitto */
    const char *broker_dir;    /* its config, persistence and log */
} eventbus_config;

extern const ke_module_ops eventbus_module;

/* eventbus_topic_encode percent-encodes topic into out (cap bytes): every
 * byte but [A-Za-z0-9._-] becomes %XX, so "/" never splits the key and "@"
 * never appears. Returns 0, or KE_EFULL when it does not fit. */
int eventbus_topic_encode(const char *topic, char *out, size_t cap);

#endif
