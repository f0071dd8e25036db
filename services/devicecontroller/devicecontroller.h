/*
 * devicecontroller.h — DeviceController: devices and their twins
 * (KubeEdge v1beta1 Device and DeviceModel), over the resource store and
 * CloudHub's Hub API.
 *
 *   users       GetDevice, ListDevices, WatchDevices, SetDesired, GetTwin,
 *               WatchTwins (api/devicecontroller.proto); devices and models
 *               are created with EdgeController.Apply like any object
 *   downstream  a device (with its desired values) and its model go to the
 *               device's node; every change follows
 *   upstream    reported values and device state (group "twin") land in the
 *               device's status: status.twins[].reported, status.state,
 *               status.lastOnlineTime
 */
#ifndef DEVICECONTROLLER_H
#define DEVICECONTROLLER_H

#include "ke_rpc.h"
#include "ke_store.h"

typedef struct devicecontroller devicecontroller;

/* devicecontroller_new prepares the controller over store (borrowed).
 * Returns 0 or KE_ENOMEM. */
int devicecontroller_new(ke_store *store, devicecontroller **out);

/* devicecontroller_register adds the DeviceController service to srv. */
int devicecontroller_register(devicecontroller *dc, ke_rpc_server *srv);

/* devicecontroller_start starts the device/model watches and the twin
 * subscription, using the Hub API on hub (borrowed). */
int devicecontroller_start(devicecontroller *dc, ke_rpc_channel *hub);

/* devicecontroller_stop ends the watches and the subscription (before the
 * rpc server stops). Idempotent. */
void devicecontroller_stop(devicecontroller *dc);

/* devicecontroller_node_holds tells lib/authz's node rule whether `node`
 * should hold the Device or DeviceModel (kind, ns, name): a device bound
 * to it, or its model (the sync cache, no store read). 1 yes, 0 no (always
 * 0 before devicecontroller_start). Thread-safe; a ke_authz_holds_fn with
 * ud = the devicecontroller. */
int devicecontroller_node_holds(void *dc, const char *node, const char *kind, const char *ns,
                                const char *name);

/* devicecontroller_free stops (if needed) and frees. NULL: no-op. */
void devicecontroller_free(devicecontroller *dc);

#endif
