/*
 * ke_bus.c — see ke_bus.h.
 *
 * A bus is a fixed table of modules behind one mutex (held only to look a
 * module up, register one or close); each module is a ring buffer of
 * message pointers with its own mutex and a "not empty" condition variable
 * on CLOCK_MONOTONIC, so receive timeouts ignore wall-clock jumps. Lock
 * order is bus, then module; a send takes the bus lock only for the lookup
 * and releases it before touching the module. Modules are never removed
 * before ke_bus_free, so a looked-up module pointer stays valid.
 */
#include "ke_bus.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_MOD "bus"

typedef struct {
    char name[KE_BUS_MAX_NAME];
    char group[KE_BUS_MAX_NAME]; /* "" when reached by name only */
    pthread_mutex_t lock;
    pthread_cond_t nonempty;
    Ke__V1__Message **ring; /* cap slots; count messages from head */
    size_t cap, head, count;
    uint64_t dropped, delivered;
    int waiting;
    int closed;
    ke_metric *dropped_total; /* owned by the metrics registry; may be NULL */
} bus_module;

struct ke_bus {
    pthread_mutex_t lock; /* modules[], nmodules, closed */
    bus_module *modules[KE_BUS_MAX_MODULES];
    size_t nmodules;
    int closed;
};

static int valid_name(const char *s)
{
    return s && s[0] && strlen(s) < KE_BUS_MAX_NAME;
}

int ke_bus_new(ke_bus **out)
{
    if (!out)
        return KE_EINVAL;
    *out = NULL;
    ke_bus *bus = calloc(1, sizeof(*bus));
    if (!bus)
        return KE_ENOMEM;
    if (pthread_mutex_init(&bus->lock, NULL) != 0) {
        free(bus);
        return KE_ENOMEM;
    }
    *out = bus;
    return 0;
}

static void module_free(bus_module *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->count; i++)
        ke__v1__message__free_unpacked(m->ring[(m->head + i) % m->cap], NULL);
    pthread_cond_destroy(&m->nonempty);
    pthread_mutex_destroy(&m->lock);
    free(m->ring);
    free(m);
}

void ke_bus_free(ke_bus *bus)
{
    if (!bus)
        return;
    for (size_t i = 0; i < bus->nmodules; i++)
        module_free(bus->modules[i]);
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

/* module_new allocates a module with an empty queue of `cap` slots. */
static int module_new(const char *name, const char *group, size_t cap, bus_module **out)
{
    int rv = KE_ENOMEM;
    int have_lock = 0, have_cond = 0;
    pthread_condattr_t ca;
    int have_attr = 0;
    bus_module *m = calloc(1, sizeof(*m));
    if (!m)
        goto out;
    snprintf(m->name, sizeof(m->name), "%s", name); /* lengths checked by the caller */
    snprintf(m->group, sizeof(m->group), "%s", group ? group : "");
    m->cap = cap;
    if (!(m->ring = calloc(cap, sizeof(m->ring[0]))))
        goto out;
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        goto out;
    have_lock = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto out;
    have_attr = 1;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&m->nonempty, &ca) != 0)
        goto out;
    have_cond = 1;
    const char *const labels[] = {"module", name, NULL};
    if (ke_metrics_counter_new("ke_bus_dropped_total",
                               "Messages refused because the receiving module's queue was full.",
                               labels, &m->dropped_total) != 0)
        ke_log_warn(LOG_MOD, "drop metric not registered module=%s", name);
    *out = m;
    m = NULL;
    rv = 0;
out:
    if (have_attr)
        pthread_condattr_destroy(&ca);
    if (m) {
        if (have_cond)
            pthread_cond_destroy(&m->nonempty);
        if (have_lock)
            pthread_mutex_destroy(&m->lock);
        free(m->ring);
        free(m);
    }
    return rv;
}

int ke_bus_register(ke_bus *bus, const char *module, const char *group, size_t queue_len)
{
    if (!bus || !valid_name(module) || (group && group[0] && !valid_name(group)) ||
        queue_len > KE_BUS_MAX_QUEUE_LEN)
        return KE_EINVAL;
    if (queue_len == 0)
        queue_len = KE_BUS_DEFAULT_QUEUE_LEN;
    int has_group = group && group[0];
    bus_module *m = NULL;
    int rv = 0;
    pthread_mutex_lock(&bus->lock);
    if (bus->closed) {
        rv = KE_ECLOSED;
        goto out;
    }
    for (size_t i = 0; i < bus->nmodules; i++) {
        const bus_module *o = bus->modules[i];
        if (strcmp(o->name, module) == 0 || (has_group && strcmp(o->group, group) == 0)) {
            ke_log_error(LOG_MOD, "module or group already registered module=%s group=%s",
                         module, has_group ? group : "");
            rv = KE_EEXIST;
            goto out;
        }
    }
    if (bus->nmodules == KE_BUS_MAX_MODULES) {
        ke_log_error(LOG_MOD, "too many modules module=%s max=%d", module, KE_BUS_MAX_MODULES);
        rv = KE_EFULL;
        goto out;
    }
    if ((rv = module_new(module, group, queue_len, &m)) != 0)
        goto out;
    bus->modules[bus->nmodules++] = m;
    ke_log_debug(LOG_MOD, "module registered module=%s group=%s queue_len=%zu", module,
                 has_group ? group : "", queue_len);
out:
    pthread_mutex_unlock(&bus->lock);
    return rv;
}

/* find looks a module up by name (by_group 0) or by group (by_group 1). */
static bus_module *find(ke_bus *bus, const char *key, int by_group)
{
    bus_module *found = NULL;
    pthread_mutex_lock(&bus->lock);
    for (size_t i = 0; i < bus->nmodules && !found; i++) {
        bus_module *m = bus->modules[i];
        if (strcmp(by_group ? m->group : m->name, key) == 0)
            found = m;
    }
    pthread_mutex_unlock(&bus->lock);
    return found;
}

/* enqueue appends msg to m's queue, or counts the drop when it is full. */
static int enqueue(bus_module *m, Ke__V1__Message *msg)
{
    pthread_mutex_lock(&m->lock);
    if (m->closed) {
        pthread_mutex_unlock(&m->lock);
        return KE_ECLOSED;
    }
    if (m->count == m->cap) {
        uint64_t dropped = ++m->dropped;
        pthread_mutex_unlock(&m->lock);
        ke_metric_add(m->dropped_total, 1);
        if ((dropped & (dropped - 1)) == 0) /* 1, 2, 4, 8...: visible, not a flood */
            ke_log_warn(LOG_MOD, "queue full, message refused module=%s capacity=%zu dropped=%llu",
                        m->name, m->cap, (unsigned long long)dropped);
        return KE_EFULL;
    }
    m->ring[(m->head + m->count) % m->cap] = msg;
    m->count++;
    pthread_cond_signal(&m->nonempty);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

int ke_bus_send(ke_bus *bus, Ke__V1__Message *msg)
{
    if (!bus || !msg || !msg->route || !msg->route->group || !msg->route->group[0])
        return KE_EINVAL;
    bus_module *m = find(bus, msg->route->group, 1);
    if (!m) {
        pthread_mutex_lock(&bus->lock);
        int closed = bus->closed;
        pthread_mutex_unlock(&bus->lock);
        return closed ? KE_ECLOSED : KE_ENOTFOUND;
    }
    return enqueue(m, msg);
}

int ke_bus_send_to(ke_bus *bus, const char *module, Ke__V1__Message *msg)
{
    if (!bus || !module || !msg)
        return KE_EINVAL;
    bus_module *m = find(bus, module, 0);
    if (!m) {
        pthread_mutex_lock(&bus->lock);
        int closed = bus->closed;
        pthread_mutex_unlock(&bus->lock);
        return closed ? KE_ECLOSED : KE_ENOTFOUND;
    }
    return enqueue(m, msg);
}

/* deadline_after returns CLOCK_MONOTONIC now + ms. */
static struct timespec deadline_after(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int ke_bus_recv(ke_bus *bus, const char *module, int timeout_ms, Ke__V1__Message **out)
{
    if (!bus || !module || !out)
        return KE_EINVAL;
    *out = NULL;
    bus_module *m = find(bus, module, 0);
    if (!m)
        return KE_ENOTFOUND;
    struct timespec deadline = {0};
    if (timeout_ms > 0)
        deadline = deadline_after(timeout_ms);
    int rv = 0;
    pthread_mutex_lock(&m->lock);
    while (!m->closed && m->count == 0) {
        if (timeout_ms == 0) {
            rv = KE_ETIMEDOUT;
            goto out;
        }
        int rc = 0;
        m->waiting++;
        if (timeout_ms < 0)
            pthread_cond_wait(&m->nonempty, &m->lock);
        else
            rc = pthread_cond_timedwait(&m->nonempty, &m->lock, &deadline);
        m->waiting--;
        if (rc == ETIMEDOUT && !m->closed && m->count == 0) {
            rv = KE_ETIMEDOUT;
            goto out;
        }
    }
    if (m->closed) {
        rv = KE_ECLOSED;
        goto out;
    }
    *out = m->ring[m->head];
    m->ring[m->head] = NULL;
    m->head = (m->head + 1) % m->cap;
    m->count--;
    m->delivered++;
out:
    pthread_mutex_unlock(&m->lock);
    return rv;
}

void ke_bus_close(ke_bus *bus)
{
    if (!bus)
        return;
    pthread_mutex_lock(&bus->lock);
    bus->closed = 1;
    for (size_t i = 0; i < bus->nmodules; i++) {
        bus_module *m = bus->modules[i];
        pthread_mutex_lock(&m->lock);
        m->closed = 1;
        pthread_cond_broadcast(&m->nonempty);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&bus->lock);
}

int ke_bus_stats_get(ke_bus *bus, const char *module, ke_bus_stats *out)
{
    if (!bus || !module || !out)
        return KE_EINVAL;
    bus_module *m = find(bus, module, 0);
    if (!m)
        return KE_ENOTFOUND;
    pthread_mutex_lock(&m->lock);
    out->queued = m->count;
    out->capacity = m->cap;
    out->dropped = m->dropped;
    out->delivered = m->delivered;
    out->receivers_waiting = m->waiting;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

uint64_t ke_bus_dropped(ke_bus *bus)
{
    if (!bus)
        return 0;
    uint64_t total = 0;
    pthread_mutex_lock(&bus->lock);
    for (size_t i = 0; i < bus->nmodules; i++) {
        bus_module *m = bus->modules[i];
        pthread_mutex_lock(&m->lock);
        total += m->dropped;
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    return total;
}
