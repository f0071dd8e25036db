/*
 * ke_diag.h — the Diagnostics service (api/diag.proto) that every
 * kubeedge-c server exposes beside its own: Ping (optionally delayed, for
 * deadline checks), Echo (bidirectional) and Ticks (server streaming).
 * It counts the calls it saw cancelled by their clients and the streams
 * open, and reports both in PingReply.
 */
#ifndef KE_DIAG_H
#define KE_DIAG_H

#include "ke_rpc.h"

#include <stdint.h>

typedef struct ke_diag ke_diag;

/* ke_diag_new creates the service; `server` and `version` are copied and
 * reported in PingReply. Starts one timer thread for delayed pings.
 * Returns 0 or KE_ENOMEM. */
int ke_diag_new(const char *server, const char *version, ke_diag **out);

/* ke_diag_register adds the Diagnostics methods to srv (before start).
 * The service must outlive the server (free it after ke_rpc_server_free). */
int ke_diag_register(ke_diag *d, ke_rpc_server *srv);

/* ke_diag_cancelled returns how many calls were seen cancelled. */
uint64_t ke_diag_cancelled(const ke_diag *d);

/* ke_diag_free stops the timer thread and frees the service. Delayed pings
 * still waiting are finished with UNAVAILABLE. NULL is a no-op. */
void ke_diag_free(ke_diag *d);

#endif
