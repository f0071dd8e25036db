/*
 * ke_map.h — a string-keyed hash map (chained, power-of-two buckets,
 * grows at load 1). Keys are copied; values are borrowed pointers the
 * caller owns. Not thread-safe: the owner serialises access.
 */
#ifndef KE_MAP_H
#define KE_MAP_H

#include <stddef.h>

typedef struct ke_map ke_map;

/* ke_map_new returns an empty map, or NULL when out of memory. */
ke_map *ke_map_new(void);

/* ke_map_free frees the map and its key copies (not the values). NULL: no-op. */
void ke_map_free(ke_map *m);

/* ke_map_get returns the value stored under key, or NULL. */
void *ke_map_get(const ke_map *m, const char *key);

/* ke_map_put stores value under key, replacing (and returning through
 * *old, if old is not NULL) any previous value. Returns 0 or KE_ENOMEM. */
int ke_map_put(ke_map *m, const char *key, void *value, void **old);

/* ke_map_del removes key and returns its value, or NULL if absent. */
void *ke_map_del(ke_map *m, const char *key);

/* ke_map_len returns the number of keys. */
size_t ke_map_len(const ke_map *m);

/* ke_map_each calls fn for every entry, in no particular order; fn must
 * not change the map. Stops early when fn returns non-zero. */
void ke_map_each(const ke_map *m, int (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
