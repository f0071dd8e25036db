/*
 * ke_watchdog.h — liveness that tells the truth: named heartbeats of the
 * long-lived workers, the stall check behind /healthz, and the deadline
 * that ends a shutdown which does not finish.
 *
 * Heartbeats
 * ----------
 * Every long-lived worker thread (each rpc loop thread, the store's watch
 * dispatcher, each work queue and upstream consumer, CloudHub's reaper)
 * registers one heartbeat with a stall limit and beats whenever it makes
 * progress and on every wake-up. An idle worker must not look stalled, so
 * a worker never waits longer than ke_watchdog_tick_ms() without waking to
 * beat (a timed wait, or a grpc completion-queue deadline): a worker that
 * stops beating is stuck in its work (a deadlock, a call that never
 * returns), never merely idle. A heartbeat is stalled when its last beat
 * is older than its limit; ke_http's /healthz then answers 503 naming it
 * and for how long, and the monitor thread (ke_watchdog_start) logs the
 * stall once and exports ke_watchdog_stalled{name="..."} (1 or 0).
 *
 * The registry is process-wide, as the metrics registry it feeds: the
 * workers live in libke modules that know nothing of each other, and
 * /healthz must see all of them. Beats are lock-free (atomic stores);
 * registration takes a short lock. Everything is on the monotonic clock.
 *
 * Shutdown deadline
 * -----------------
 * A program arms ke_watchdog_shutdown_arm() when it starts an orderly
 * shutdown (SIGTERM), names each component as it stops it
 * (ke_watchdog_shutdown_step) and calls ke_watchdog_shutdown_done() at the
 * end. If the deadline passes first, a dedicated thread — not one of the
 * possibly stuck workers — logs the component being stopped and the
 * heartbeats still registered (the workers that had not stopped), then
 * calls _exit(KE_WATCHDOG_EXIT_DEADLINE).
 *
 * Test hook
 * ---------
 * In builds with KE_TEST_HOOKS (CMake option KE_TEST_HOOKS, ON unless
 * CMAKE_BUILD_TYPE is Release), a heartbeat whose name equals the
 * environment variable KE_TEST_STALL blocks its thread forever on its first
 * beat, so tests can show a stalled worker turning /healthz to 503 and a
 * SIGTERM still ending the process. Release builds do not contain it.
 */
#ifndef KE_WATCHDOG_H
#define KE_WATCHDOG_H

#include <stddef.h>
#include <stdint.h>

/* Bounds: heartbeats registered at once, name length (bytes, with NUL). */
#define KE_WATCHDOG_MAX 128
#define KE_WATCHDOG_NAME_MAX 48
/* Defaults: stall limit (health.stall_timeout), shutdown deadline
 * (shutdown.timeout). */
#define KE_WATCHDOG_STALL_DEFAULT_MS 30000
#define KE_WATCHDOG_SHUTDOWN_DEFAULT_MS 10000
/* The longest a worker waits between beats: a quarter of its limit, at most
 * this, at least KE_WATCHDOG_TICK_MIN_MS. */
#define KE_WATCHDOG_TICK_MAX_MS 1000
#define KE_WATCHDOG_TICK_MIN_MS 10
/* The exit status of a process whose shutdown missed its deadline. */
#define KE_WATCHDOG_EXIT_DEADLINE 1

typedef struct ke_watchdog_hb ke_watchdog_hb;

/* ke_watchdog_register adds a heartbeat named `name` (copied; at most
 * KE_WATCHDOG_NAME_MAX - 1 bytes; names need not be unique) with stall
 * limit stall_ms (0: the process default, ke_watchdog_set_default_stall,
 * read at each check). It counts as beaten now. On success *out is the
 * heartbeat, owned by the registry until ke_watchdog_unregister. Returns 0,
 * KE_EINVAL (bad name or negative limit), KE_EFULL (KE_WATCHDOG_MAX
 * registered; logged). Thread-safe. */
int ke_watchdog_register(const char *name, int64_t stall_ms, ke_watchdog_hb **out);

/* ke_watchdog_unregister removes hb; it must not be beaten afterwards.
 * Call it when the worker has stopped (after joining its thread). NULL is
 * a no-op. Thread-safe. */
void ke_watchdog_unregister(ke_watchdog_hb *hb);

/* ke_watchdog_beat records progress now. Lock-free; call it from the
 * worker's own thread. NULL is a no-op (a worker whose registration failed
 * still runs, unwatched). */
void ke_watchdog_beat(ke_watchdog_hb *hb);

/* ke_watchdog_tick_ms returns the longest a worker should wait before
 * waking to beat: a quarter of hb's limit, within
 * [KE_WATCHDOG_TICK_MIN_MS, KE_WATCHDOG_TICK_MAX_MS]. NULL: the max. */
int64_t ke_watchdog_tick_ms(const ke_watchdog_hb *hb);

/* ke_watchdog_set_default_stall sets the limit of heartbeats registered
 * with 0 (health.stall_timeout); ms <= 0 restores
 * KE_WATCHDOG_STALL_DEFAULT_MS. Thread-safe. */
void ke_watchdog_set_default_stall(int64_t ms);

/* ke_watchdog_default_stall returns the current default limit. */
int64_t ke_watchdog_default_stall(void);

/* ke_watchdog_check counts the stalled heartbeats now. When reason is not
 * NULL it receives a one-line, NUL-terminated account, truncated to cap:
 * "stalled: rpc-0-1 for 12.3s (limit 10.0s), store-watch for ..." or ""
 * when none is. Thread-safe, never blocks on a worker. */
int ke_watchdog_check(char *reason, size_t cap);

/* ke_watchdog_count returns the number of registered heartbeats. */
int ke_watchdog_count(void);

/* ke_watchdog_start starts the monitor thread ("ke-watchdog"): every tick
 * it logs a heartbeat that became stalled (error, once) or recovered
 * (info) and sets the gauge ke_watchdog_stalled{name}. Programs call it
 * once; without it /healthz still checks. Returns 0, KE_EEXIST when
 * running, KE_EIO. */
int ke_watchdog_start(void);

/* ke_watchdog_stop stops and joins the monitor. Idempotent. */
void ke_watchdog_stop(void);

/* ke_watchdog_shutdown_arm starts the shutdown deadline: unless
 * ke_watchdog_shutdown_done is called within timeout_ms (<= 0: the
 * default), the process logs what had not stopped and _exits with
 * KE_WATCHDOG_EXIT_DEADLINE. Returns 0, KE_EEXIST when armed, KE_EIO. */
int ke_watchdog_shutdown_arm(int64_t timeout_ms);

/* ke_watchdog_shutdown_step names the component the orderly shutdown is
 * stopping now ("rpc server"), for the deadline's log line. Copied,
 * truncated to KE_WATCHDOG_NAME_MAX - 1 bytes. Thread-safe. */
void ke_watchdog_shutdown_step(const char *what);

/* ke_watchdog_shutdown_done disarms the deadline and joins its thread.
 * A no-op when not armed. */
void ke_watchdog_shutdown_done(void);

#endif
