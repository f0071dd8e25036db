/*
 * ke_hubclient.h — what cloud controllers need from CloudHub's Hub API
 * (api/cloudhub.proto), on a channel they own (in-process in cloudcore):
 * publish an object to a node, and the version clock they publish with.
 *
 * Versions: the object's own resourceVersion travels inside its JSON; the
 * transport version (Message.header.resource_version) must grow per
 * resource key, across derived publishes (a ConfigMap sent to a node, then
 * removed from it, then sent again) and controller restarts. ke_hub_clock
 * gives one: strictly increasing within the process and above anything
 * before a restart, as it follows the wall clock in microseconds.
 */
#ifndef KE_HUBCLIENT_H
#define KE_HUBCLIENT_H

#include "ke_rpc.h"
#include "message.pb-c.h"

#include <stddef.h>
#include <stdint.h>

/* ke_hub_clock returns the next publish version. Thread-safe. */
uint64_t ke_hub_clock(void);

/* ke_hub_resource_key writes "node/<node>/<ns>/<kind>/<name>" into buf. */
void ke_hub_resource_key(char *buf, size_t len, const char *node, const char *ns,
                         const char *kind, const char *name);

/* ke_hub_publish sends one message to node through Hub.Publish and waits:
 * key, operation, content (may be NULL), group ("resource", "twin", ...),
 * version from ke_hub_clock. Blocks: not from an rpc callback. Returns 0,
 * or KE_EIO with the status logged. */
int ke_hub_publish(ke_rpc_channel *hub, const char *node, const char *key, Ke__V1__Operation op,
                   const char *group, const void *content, size_t len);

#endif
