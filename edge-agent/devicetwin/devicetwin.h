/*
 * devicetwin.h — the DeviceTwin module: the devices bound to this node,
 * their models and twins, and the MQTT topics mappers speak. It serves
 * group "devicetwin" on edgecore's one loop.
 *
 *   from MetaManager  a Device or DeviceModel of this node changed (the
 *                     store holds it): membership/updated when a device
 *                     comes or goes, a delta when a desired value changed.
 *   from EventBus     a message on one of its topics (devicetwin_filters,
 *                     EventBus's routes): KubeEdge's JSON topics
 *                       $hw/events/device/<id>/twin/update      -> .../result, .../document
 *                       $hw/events/device/<id>/twin/get         -> .../result
 *                       $hw/events/device/<id>/state/update     -> .../result
 *                       $hw/events/node/<node>/membership/get   -> .../result
 *                     and to the mapper .../twin/update/delta and
 *                     $hw/events/node/<node>/membership/updated; and the
 *                     protobuf topics ke/mapper/<id>/up (MapperFrame from
 *                     the mapper) and ke/mapper/<id>/down (to it). <id> is
 *                     the device's name, or <namespace>/<name>.
 *
 * Reported values and device state are the edge's own: each accepted
 * report is written to the store's local table (devicetwin/<ns>/<name>)
 * and queued in the outbox in one transaction, one report per message
 * (resource node/<node>/<ns>/Device/<name>, group "twin"), so readings
 * taken offline reach the cloud in order. edge-agent/README.md,
 * "DeviceTwin", has the shapes and the checks.
 */
#ifndef DEVICETWIN_H
#define DEVICETWIN_H

#include "ke_rt.h"

typedef struct devicetwin_config {
    const char *node_name;
} devicetwin_config;

extern const ke_module_ops devicetwin_module;

/* The MQTT topic filters DeviceTwin answers, for EventBus's routes
 * (eventbus_config.routes): devicetwin_filters writes at most cap of them
 * for node_name into out and returns how many (DEVICETWIN_FILTERS_N). */
#define DEVICETWIN_FILTER_MAX 256
#define DEVICETWIN_FILTERS_N 9
size_t devicetwin_filters(const char *node_name, char (*out)[DEVICETWIN_FILTER_MAX], size_t cap);

#endif
