/*
 * ke_wheel.c — the hashed timer wheel (see ke_wheel.h).
 *
 * A tick is processed once it has wholly passed: advancing to now_ms
 * processes the ticks up to now_ms / tick_ms - 1, so every timer of a
 * processed tick has expired, and a timer fires at most one tick late. A
 * timer armed for a tick already processed goes into the next one's slot.
 */
#include "ke_wheel.h"

#include "ke_err.h"

#include <stdlib.h>

int ke_wheel_init(ke_wheel *w, uint32_t n_slots, int64_t tick_ms, int64_t now_ms)
{
    if (n_slots == 0 || tick_ms <= 0)
        return KE_EINVAL;
    w->slots = calloc(n_slots, sizeof(*w->slots));
    if (!w->slots)
        return KE_ENOMEM;
    w->n_slots = n_slots;
    w->tick_ms = tick_ms;
    w->tick = now_ms / tick_ms - 1;
    w->armed = 0;
    return 0;
}

void ke_wheel_free(ke_wheel *w)
{
    free(w->slots);
    w->slots = NULL;
    w->armed = 0;
}

void ke_wheel_disarm(ke_wheel *w, ke_wheel_timer *t)
{
    if (!t->armed)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        w->slots[t->slot] = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->armed = 0;
    w->armed--;
}

void ke_wheel_arm(ke_wheel *w, ke_wheel_timer *t, int64_t at_ms)
{
    ke_wheel_disarm(w, t);
    int64_t tick = at_ms / w->tick_ms;
    if (tick <= w->tick)
        tick = w->tick + 1; /* its tick was processed: the next one */
    t->at = at_ms;
    t->slot = (uint32_t)(tick % w->n_slots);
    t->prev = NULL;
    t->next = w->slots[t->slot];
    if (t->next)
        t->next->prev = t;
    w->slots[t->slot] = t;
    t->armed = 1;
    w->armed++;
}

size_t ke_wheel_advance(ke_wheel *w, int64_t now_ms, void (*fire)(ke_wheel_timer *t, void *arg),
                        void *arg)
{
    int64_t target = now_ms / w->tick_ms - 1;
    if (target <= w->tick)
        return 0;
    /* After a gap of a whole turn or more every slot is due once. */
    int64_t from = target - w->tick > (int64_t)w->n_slots ? target - w->n_slots + 1 : w->tick + 1;
    w->tick = target; /* timers armed by fire land after the processed ticks */
    size_t fired = 0;
    for (int64_t tk = from; tk <= target; tk++) {
        uint32_t s = (uint32_t)(tk % w->n_slots);
        /* fire may arm and disarm anything: after each, scan from the head
         * again. The timers left in the slot are of a later turn. */
        ke_wheel_timer *t = w->slots[s];
        while (t) {
            if (t->at > now_ms) {
                t = t->next;
                continue;
            }
            ke_wheel_disarm(w, t);
            fire(t, arg);
            fired++;
            t = w->slots[s];
        }
    }
    return fired;
}
