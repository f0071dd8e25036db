/*
 * ke_bus.h — the edge's internal message bus (KubeEdge's beehive): how
 * edgecore's modules (edgehub, metamanager, edged, eventbus, servicebus,
 * devicetwin) hand Messages to each other inside one process.
 *
 * Each module registers a name and a group and gets one bounded FIFO queue.
 * ke_bus_send routes a message by msg->route->group to the module that owns
 * that group; ke_bus_send_to names the module directly. Senders never
 * block: a full queue refuses the message with KE_EFULL, and the refusal is
 * counted (ke_bus_stats, and the metric
 * ke_bus_dropped_total{module="<name>"}) and logged at 1, 2, 4, 8, ... drops.
 * Each module's loop blocks in ke_bus_recv. ke_bus_close wakes every
 * receiver for shutdown.
 *
 * Message ownership: a message handed to ke_bus_send/ke_bus_send_to on
 * success belongs to the bus and then to the receiver. The bus frees the
 * messages it still holds (at ke_bus_free) with
 * ke__v1__message__free_unpacked(msg, NULL), and receivers free theirs the
 * same way — so a sender must build every message as that function expects:
 * obtained from ke__v1__message__unpack, or built with malloc'd
 * sub-messages, strings and content bytes (string fields may stay at the
 * generated default, protobuf_c_empty_string).
 *
 * Threads: every function is thread-safe. Registration may happen while
 * other threads send and receive; modules are never unregistered.
 */
#ifndef KE_BUS_H
#define KE_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "message.pb-c.h"

/* Bounds: modules per bus, queue length per module, module/group names. */
#define KE_BUS_MAX_MODULES 32
#define KE_BUS_MAX_QUEUE_LEN 65536
#define KE_BUS_DEFAULT_QUEUE_LEN 1024
#define KE_BUS_MAX_NAME 64

typedef struct ke_bus ke_bus;

typedef struct {
    size_t queued;      /* messages waiting now */
    size_t capacity;    /* queue bound */
    uint64_t dropped;   /* sends refused with KE_EFULL, ever */
    uint64_t delivered; /* messages handed to ke_bus_recv, ever */
    int receivers_waiting; /* threads blocked in ke_bus_recv right now */
} ke_bus_stats;

/* ke_bus_new creates an empty, open bus; *out owns it (ke_bus_free).
 * Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_bus_new(ke_bus **out);

/* ke_bus_free frees the bus and every message still queued. No thread may
 * be using the bus any more (close it and join the module threads first).
 * ke_bus_free(NULL) is a no-op. */
void ke_bus_free(ke_bus *bus);

/* ke_bus_register adds module `module` serving group `group` (NULL or ""
 * for a module reached only by name) with a FIFO of `queue_len` messages
 * (0 means KE_BUS_DEFAULT_QUEUE_LEN; at most KE_BUS_MAX_QUEUE_LEN). Names are
 * copied, at most KE_BUS_MAX_NAME-1 bytes. Registers the module's
 * ke_bus_dropped_total series. Returns 0; KE_EINVAL (bad name or length);
 * KE_EEXIST (module name or group already taken); KE_EFULL
 * (KE_BUS_MAX_MODULES reached); KE_ECLOSED; KE_ENOMEM. */
int ke_bus_register(ke_bus *bus, const char *module, const char *group, size_t queue_len);

/* ke_bus_send appends `msg` to the queue of the module serving
 * msg->route->group. On 0 the bus owns msg. On any error the caller still
 * owns it: KE_EINVAL (no route or empty group), KE_ENOTFOUND (no module
 * serves the group), KE_EFULL (queue full; counted), KE_ECLOSED. */
int ke_bus_send(ke_bus *bus, Ke__V1__Message *msg);

/* ke_bus_send_to appends `msg` to the queue of module `module`, whatever
 * its route says. Ownership and errors as ke_bus_send. */
int ke_bus_send_to(ke_bus *bus, const char *module, Ke__V1__Message *msg);

/* ke_bus_recv takes the oldest message from `module`'s queue, waiting up to
 * `timeout_ms` (0: do not wait; negative: wait until a message or close).
 * On 0 *out is the caller's (free with ke__v1__message__free_unpacked).
 * Returns KE_ETIMEDOUT when nothing came in time, KE_ECLOSED once the bus
 * is closed (messages still queued then stay for ke_bus_free),
 * KE_ENOTFOUND for an unknown module, KE_EINVAL. */
int ke_bus_recv(ke_bus *bus, const char *module, int timeout_ms, Ke__V1__Message **out);

/* ke_bus_close shuts the bus: wakes every blocked ke_bus_recv with
 * KE_ECLOSED; later sends, receives and registrations return KE_ECLOSED.
 * Idempotent. The bus must still be freed with ke_bus_free. */
void ke_bus_close(ke_bus *bus);

/* ke_bus_stats_get fills *out for module `module`. Returns 0, KE_EINVAL or
 * KE_ENOTFOUND. */
int ke_bus_stats_get(ke_bus *bus, const char *module, ke_bus_stats *out);

/* ke_bus_dropped returns the sends refused with KE_EFULL, all modules
 * together; 0 for NULL. */
uint64_t ke_bus_dropped(ke_bus *bus);

#endif
