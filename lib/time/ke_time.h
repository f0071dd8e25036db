/*
 * ke_time.h — the one clock vocabulary of libke.
 *
 * Two clocks, never mixed:
 *   monotonic  every timeout, keepalive, reaper, back-off and "how long
 *              since" (ke_time_mono_ms, ke_time_cond_init, ke_time_deadline);
 *              a step of the wall clock does not move it.
 *   wall       only for values a person or another host reads: timestamps
 *              in objects (creationTimestamp, twin metadata), log lines,
 *              certificate validity (ke_time_wall_ms).
 *
 * Tests step the wall clock without root through ke_time_set_wall_offset:
 * every wall reading in the process moves by that offset, so a test can
 * show that nothing timed by the monotonic clock notices.
 */
#ifndef KE_TIME_H
#define KE_TIME_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ke_time_mono_ms returns CLOCK_MONOTONIC in milliseconds. */
int64_t ke_time_mono_ms(void);

/* ke_time_mono_ns returns CLOCK_MONOTONIC in nanoseconds (short
 * durations: lock waits, per-call costs). */
int64_t ke_time_mono_ns(void);

/* ke_time_wall_ms returns CLOCK_REALTIME in milliseconds since the Unix
 * epoch, plus the test offset (0 unless a test set one). */
int64_t ke_time_wall_ms(void);

/* ke_time_set_wall_offset moves every later ke_time_wall_ms reading by
 * offset_ms (a fake clock step, for tests). Thread-safe. */
void ke_time_set_wall_offset(int64_t offset_ms);

/* ke_time_cond_init initialises cv to time its waits on CLOCK_MONOTONIC, so
 * pthread_cond_timedwait with a ke_time_deadline is immune to clock steps.
 * Returns 0 or a pthread error number. */
int ke_time_cond_init(pthread_cond_t *cv);

/* ke_time_deadline returns the CLOCK_MONOTONIC time ms milliseconds from
 * now, for pthread_cond_timedwait on a ke_time_cond_init condition. */
struct timespec ke_time_deadline(int64_t ms);

/* ke_time_rfc3339 writes the wall time ms (since the epoch) as
 * "YYYY-MM-DDTHH:MM:SSZ" (UTC) into buf (at least 21 bytes). */
void ke_time_rfc3339(char *buf, size_t len, int64_t ms);

/* ke_time_rfc3339_parse reads an RFC 3339 time ("2024-05-01T10:00:00Z",
 * fractional seconds and a "+hh:mm"/"-hh:mm" offset accepted) into ms since
 * the epoch (the fraction is dropped). Returns 0 or KE_EINVAL. */
int ke_time_rfc3339_parse(const char *s, int64_t *ms);

#endif
