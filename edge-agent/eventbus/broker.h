/*
 * broker.h — EventBus's internal broker (modules.eventbus.mode: internal):
 * a mosquitto process that edgecore starts, restarts and stops, supervised
 * on the edge loop (no thread, no blocking wait).
 *
 * The broker's files live in one directory (by default mosquitto/ beside
 * metamanager.db): mosquitto.conf (written at every start: one listener on
 * host:port, anonymous clients, persistence in that directory, its log in
 * mosquitto.log, where its stdout and stderr go too).
 *
 *   start    uv_spawn of `<binary> -c <dir>/mosquitto.conf`
 *   exit     logged with its status or signal; spawned again after a
 *            jittered, doubling back-off (EVENTBUS_BROKER_BACKOFF_MS up to
 *            backoff_max_ms, monotonic clock; reset by a run of at least
 *            EVENTBUS_BROKER_STABLE_MS), counted in
 *            ke_eventbus_broker_restarts_total
 *   stop     SIGTERM (mosquitto then writes its persistence file), SIGKILL
 *            after EVENTBUS_BROKER_KILL_MS; on_stopped runs once the
 *            process has exited and every handle is closed
 *   log      checked every minute and at each spawn: past
 *            EVENTBUS_BROKER_LOG_MAX it becomes mosquitto.log.1 (SIGHUP:
 *            mosquitto reopens it)
 *
 * Used by EventBus only (eventbus.c); all calls on the loop thread.
 */
#ifndef EVENTBUS_BROKER_H
#define EVENTBUS_BROKER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define EVENTBUS_BROKER_BACKOFF_MS 200
#define EVENTBUS_BROKER_STABLE_MS 10000
#define EVENTBUS_BROKER_KILL_MS 5000
/* mosquitto.log is rotated past this (one previous file kept) */
#define EVENTBUS_BROKER_LOG_MAX (8 << 20)

typedef struct eventbus_broker eventbus_broker;

typedef struct eventbus_broker_config {
    const char *binary; /* mosquitto */
    const char *dir;    /* config, persistence, log; made if missing */
    const char *host;   /* listener address (numeric, or localhost) */
    int port;
    int64_t backoff_max_ms; /* longest restart delay; at least EVENTBUS_BROKER_BACKOFF_MS */
} eventbus_broker_config;

/* eventbus_broker_new makes a supervisor (nothing started); cfg's strings
 * are copied. Returns 0, KE_EINVAL (a path too long, a port out of range),
 * KE_ENOMEM. */
int eventbus_broker_new(uv_loop_t *loop, const eventbus_broker_config *cfg,
                        eventbus_broker **out);

/* eventbus_broker_start makes the directory, writes mosquitto.conf and
 * spawns the broker (a spawn that fails is retried like an exit). Returns
 * 0, or KE_EIO when the directory or the config cannot be written (logged). */
int eventbus_broker_start(eventbus_broker *b);

/* eventbus_broker_stop stops the broker (SIGTERM, SIGKILL after
 * EVENTBUS_BROKER_KILL_MS) and closes the supervisor's handles;
 * on_stopped(arg) runs on the loop when all that is done (never inside
 * this call). Call once. */
void eventbus_broker_stop(eventbus_broker *b, void (*on_stopped)(void *arg), void *arg);

/* eventbus_broker_free frees a supervisor that was never started, or
 * whose on_stopped has run. NULL: no-op. */
void eventbus_broker_free(eventbus_broker *b);

/* eventbus_broker_detail writes the broker's state for /healthz: "broker
 * pid=N restarts=M", or "broker down (<last exit>), restart in Ns
 * restarts=M". */
void eventbus_broker_detail(const eventbus_broker *b, char *out, size_t cap);

#endif
