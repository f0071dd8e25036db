/*
 * ke_wheel.h — a hashed timer wheel on the monotonic clock (ms).
 *
 * Arming and disarming are O(1): a timer is linked into the slot of its
 * expiry tick (expiry / tick_ms modulo the slot count). ke_wheel_advance
 * visits only the slots of the ticks that passed since the last advance,
 * and in each only the timers linked there; one that belongs to a later
 * turn of the wheel stays where it is. So the owner of 100,000 idle
 * connections pays per tick for what expires in that tick, not for every
 * connection, as long as the wheel spans the usual timeout (slots *
 * tick_ms at least the longest common deadline).
 *
 * Not thread-safe: the owner serialises every call (CloudHub: its mutex).
 * The timers are the owner's memory (embedded in its structures); the
 * wheel only links them.
 */
#ifndef KE_WHEEL_H
#define KE_WHEEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ke_wheel_timer {
    struct ke_wheel_timer *prev, *next;
    int64_t at;    /* expiry, monotonic ms */
    uint32_t slot;
    int armed;
    void *data;    /* the owner's, for the fire callback */
} ke_wheel_timer;

typedef struct ke_wheel {
    ke_wheel_timer **slots; /* each a doubly linked list */
    uint32_t n_slots;
    int64_t tick_ms;
    int64_t tick;           /* the last tick advanced to */
    size_t armed;           /* timers linked */
} ke_wheel;

/* ke_wheel_init prepares a wheel of n_slots slots of tick_ms each, at the
 * monotonic time now_ms. Returns 0, KE_EINVAL (n_slots or tick_ms of 0)
 * or KE_ENOMEM. */
int ke_wheel_init(ke_wheel *w, uint32_t n_slots, int64_t tick_ms, int64_t now_ms);

/* ke_wheel_free frees the slots; armed timers are simply forgotten. */
void ke_wheel_free(ke_wheel *w);

/* ke_wheel_arm (re)arms t to expire at at_ms (disarming it first if armed).
 * A time already past fires at the next advance. */
void ke_wheel_arm(ke_wheel *w, ke_wheel_timer *t, int64_t at_ms);

/* ke_wheel_disarm unlinks t; a no-op when it is not armed. */
void ke_wheel_disarm(ke_wheel *w, ke_wheel_timer *t);

/* ke_wheel_advance moves the wheel to now_ms and calls fire for every timer
 * that expired (at <= now_ms), disarmed before the call, which may re-arm
 * it or any other timer, or disarm others. After a gap of a whole turn or
 * more, every slot is visited once. Returns how many fired. */
size_t ke_wheel_advance(ke_wheel *w, int64_t now_ms, void (*fire)(ke_wheel_timer *t, void *arg),
                        void *arg);

#endif
