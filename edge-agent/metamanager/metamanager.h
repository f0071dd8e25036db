/*
 * metamanager.h — the MetaManager module: the bus's door to the edge store
 * (edge_store.h). It serves group "meta".
 *
 *   from edgehub          a change from the cloud (INSERT/UPDATE/DELETE/
 *                         PATCH): applied to the store (idempotent by
 *                         version); answered {"applied":true|false} or
 *                         {"error":"..."}; an applied change is then passed
 *                         on by its kind: Pod, ConfigMap, Secret to group
 *                         "edged"; Device, DeviceModel to "devicetwin"
 *                         (route.group becomes that group); another kind
 *                         to the module serving its route.group (not
 *                         "resource"); no such module: kept in the store.
 *   QUERY "meta/barrier"  answered {"mark":N}: the store's tombstone mark,
 *                         taken after every message sent before the query
 *                         (EdgeHub's barrier before a new stream's Hello).
 *   "meta/outbox"         a module queued reports in the store itself
 *                         (edge_store_local_put): EdgeHub is told, as below.
 *   anything else         a report for the cloud (a QUERY of another
 *                         resource included: the edge asking the cloud):
 *                         queued in the outbox
 *                         (resource and header.resource_version required);
 *                         answered {"seq":N,"duplicate":b} when header.sync
 *                         or {"error":"...","rc":N}; EdgeHub is told the
 *                         outbox grew (at most once per loop turn).
 */
#ifndef METAMANAGER_H
#define METAMANAGER_H

#include "ke_rt.h"

/* The module; its config is NULL (the store is the runtime's). */
extern const ke_module_ops metamanager_module;

#endif
