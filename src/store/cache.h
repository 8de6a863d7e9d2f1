/*
 * cache.h - layered cache-aside reads for hot data (profiles, courses, posts):
 *
 *   L1  an LRU in this process, bounded in bytes, entries living at most ttl;
 *   L2  the kv store kind (Redis when distributed), shared by processes;
 *   L3  the owning store, through the caller's loader.
 *
 * A read tries L1, then L2 (filling L1), then the loader (filling L2 and L1).
 * The owner invalidates a key when it changes: from the consumer of its own
 * events (so every change, whoever made it, is seen), and right after its own
 * write for read-your-writes in this process. cache_invalidate() drops the key
 * from L1 and L2 and announces it on the kv channel "pulse.cache.<name>", so
 * the L1 of every process sharing the kv drops it too.
 *
 * A value loaded while an invalidation of the same cache happened is returned
 * but not stored (it may be older than the change). TTLs bound staleness when
 * an announcement is lost (a process was disconnected from Redis).
 *
 * Thread-safe. Values are opaque bytes (callers store JSON).
 */
#ifndef PULSE_STORE_CACHE_H
#define PULSE_STORE_CACHE_H

#include "core/err.h"
#include "store/kv.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cache cache;

/* Loads key from the owning store: 1 and *val (malloc'd) / *len when found,
 * 0 when there is no such thing (not cached), <0 on error. */
typedef int (*cache_loader)(void *ud, const char *key, char **val, size_t *len, pl_error *err);

typedef struct cache_stats {
    uint64_t l1_hits, l2_hits, misses, invalidations;
    size_t l1_bytes, l1_entries;
} cache_stats;

/* l2 may be NULL (L1 + L3 only). name is used in metrics, L2 keys and the channel. */
int  cache_create(const char *name, kv *l2, size_t l1_max_bytes, int64_t ttl_ms, cache **out, pl_error *err);
void cache_destroy(cache *c); /* NULL is a no-op */

/* 1 found (*val malloc'd, NUL-terminated), 0 not found, <0 error (L1/L2
 * failures fall through to the loader: a down Redis slows reads, never fails them). */
int  cache_get(cache *c, const char *key, cache_loader load, void *ud, char **val, size_t *len, pl_error *err);
void cache_invalidate(cache *c, const char *key);
void cache_get_stats(cache *c, cache_stats *out);
const char *cache_name(const cache *c);

/* Calls fn for every live cache (for metrics). */
void cache_for_each(void (*fn)(void *ud, cache *c), void *ud);

#endif
