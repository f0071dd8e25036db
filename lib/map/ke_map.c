/*
 * ke_map.c — see ke_map.h. FNV-1a hashing, chained buckets.
 */
#include "ke_map.h"

#include "ke_err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    char key[]; /* NUL-terminated copy */
} entry;

struct ke_map {
    entry **buckets;
    size_t nbuckets; /* power of two */
    size_t len;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

ke_map *ke_map_new(void)
{
    ke_map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nbuckets = 16;
    m->buckets = calloc(m->nbuckets, sizeof(entry *));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void ke_map_free(ke_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry *e = m->buckets[i];
        while (e) {
            entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->buckets);
    free(m);
}

static entry **find(const ke_map *m, const char *key, uint64_t h)
{
    entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *ke_map_get(const ke_map *m, const char *key)
{
    entry *e = *find(m, key, hash_str(key));
    return e ? e->value : NULL;
}

static void grow(ke_map *m)
{
    size_t nb = m->nbuckets * 2;
    entry **b = calloc(nb, sizeof(entry *));
    if (!b)
        return; /* keep working at a higher load */
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry *e = m->buckets[i];
        while (e) {
            entry *n = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = n;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

int ke_map_put(ke_map *m, const char *key, void *value, void **old)
{
    uint64_t h = hash_str(key);
    entry **pp = find(m, key, h);
    if (*pp) {
        if (old)
            *old = (*pp)->value;
        (*pp)->value = value;
        return 0;
    }
    if (old)
        *old = NULL;
    size_t kl = strlen(key);
    entry *e = malloc(sizeof(*e) + kl + 1);
    if (!e)
        return KE_ENOMEM;
    memcpy(e->key, key, kl + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *pp = e;
    if (++m->len > m->nbuckets)
        grow(m);
    return 0;
}

void *ke_map_del(ke_map *m, const char *key)
{
    entry **pp = find(m, key, hash_str(key));
    entry *e = *pp;
    if (!e)
        return NULL;
    *pp = e->next;
    void *v = e->value;
    free(e);
    m->len--;
    return v;
}

size_t ke_map_len(const ke_map *m) { return m->len; }

void ke_map_each(const ke_map *m, int (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry *e = m->buckets[i]; e; e = e->next)
            if (fn(e->key, e->value, arg))
                return;
}
