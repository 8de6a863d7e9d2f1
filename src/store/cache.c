/* cache.c - L1 LRU (hash + list) over an optional kv L2 and the caller's loader. */
#include "store/cache.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *key, *val;
    size_t len;
    int64_t expires_ms;
    struct entry *prev, *next; /* LRU: head is the most recent */
    struct entry *hnext;
} entry;

struct cache {
    char name[64];
    char channel[96];
    kv *l2;
    kv_sub *sub;
    size_t max_bytes, bytes, count;
    int64_t ttl_ms;
    pthread_mutex_t lock;
    entry **buckets;
    size_t nbuckets;
    entry *head, *tail;
    atomic_uint_fast64_t epoch; /* bumped by every invalidation */
    atomic_uint_fast64_t l1_hits, l2_hits, misses, invalidations;
    struct cache *next_live;
};

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static cache *live;

static size_t hash(const char *k)
{
    size_t h = 1469598103934665603ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

static void unlink_lru(cache *c, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(cache *c, entry *e)
{
    e->next = c->head;
    e->prev = NULL;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Removes e from the table and the list and frees it; lock held. */
static void drop(cache *c, entry *e)
{
    entry **pp = &c->buckets[hash(e->key) % c->nbuckets];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    unlink_lru(c, e);
    c->bytes -= e->len + strlen(e->key);
    c->count--;
    free(e->key);
    free(e->val);
    free(e);
}

static entry *find(cache *c, const char *key)
{
    for (entry *e = c->buckets[hash(key) % c->nbuckets]; e; e = e->hnext)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static bool l1_get(cache *c, const char *key, char **val, size_t *len)
{
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    entry *e = find(c, key);
    if (e && e->expires_ms <= time_now_ms()) {
        drop(c, e);
        e = NULL;
    }
    if (e) {
        unlink_lru(c, e);
        push_front(c, e);
        *val = malloc(e->len + 1);
        if (!*val)
            abort();
        memcpy(*val, e->val, e->len + 1);
        *len = e->len;
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void l1_put(cache *c, const char *key, const char *val, size_t len, uint64_t epoch)
{
    size_t need = len + strlen(key);
    if (need > c->max_bytes / 4) /* one entry may not push out a quarter of the cache */
        return;
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->epoch) != epoch) { /* changed while we loaded: do not keep it */
        pthread_mutex_unlock(&c->lock);
        return;
    }
    entry *old = find(c, key);
    if (old)
        drop(c, old);
    while (c->bytes + need > c->max_bytes && c->tail)
        drop(c, c->tail);
    entry *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    e->key = strdup(key);
    e->val = malloc(len + 1);
    if (!e->key || !e->val)
        abort();
    memcpy(e->val, val, len);
    e->val[len] = '\0';
    e->len = len;
    e->expires_ms = time_now_ms() + c->ttl_ms;
    size_t b = hash(key) % c->nbuckets;
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    push_front(c, e);
    c->bytes += need;
    c->count++;
    pthread_mutex_unlock(&c->lock);
}

static void l1_drop(cache *c, const char *key)
{
    pthread_mutex_lock(&c->lock);
    atomic_fetch_add(&c->epoch, 1);
    entry *e = find(c, key);
    if (e)
        drop(c, e);
    pthread_mutex_unlock(&c->lock);
}

static void on_invalidation(void *ud, const char *channel, const char *msg, size_t len)
{
    (void)channel;
    cache *c = ud;
    char key[512];
    snprintf(key, sizeof key, "%.*s", (int)(len < sizeof key ? len : sizeof key - 1), msg);
    l1_drop(c, key);
}

int cache_create(const char *name, kv *l2, size_t l1_max_bytes, int64_t ttl_ms, cache **out, pl_error *err)
{
    cache *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->channel, sizeof c->channel, "pulse.cache.%s", name);
    c->l2 = l2;
    c->max_bytes = l1_max_bytes ? l1_max_bytes : 8u << 20;
    c->ttl_ms = ttl_ms > 0 ? ttl_ms : 60000;
    c->nbuckets = 4096;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets)
        abort();
    pthread_mutex_init(&c->lock, NULL);
    if (l2) {
        int rc = kv_subscribe(l2, c->channel, on_invalidation, c, &c->sub, err);
        if (rc) {
            free(c->buckets);
            pthread_mutex_destroy(&c->lock);
            free(c);
            return rc;
        }
    }
    pthread_mutex_lock(&live_lock);
    c->next_live = live;
    live = c;
    pthread_mutex_unlock(&live_lock);
    *out = c;
    return 0;
}

void cache_destroy(cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&live_lock);
    for (cache **pp = &live; *pp; pp = &(*pp)->next_live)
        if (*pp == c) {
            *pp = c->next_live;
            break;
        }
    pthread_mutex_unlock(&live_lock);
    kv_unsubscribe(c->sub);
    while (c->head)
        drop(c, c->head);
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void l2_key(const cache *c, const char *key, char *out, size_t size)
{
    snprintf(out, size, "cache:%s:%s", c->name, key);
}

int cache_get(cache *c, const char *key, cache_loader load, void *ud, char **val, size_t *len, pl_error *err)
{
    if (l1_get(c, key, val, len)) {
        atomic_fetch_add(&c->l1_hits, 1);
        return 1;
    }
    uint64_t epoch = atomic_load(&c->epoch);
    char k2[600];
    l2_key(c, key, k2, sizeof k2);
    if (c->l2) {
        pl_error e2 = {0};
        int rc = kv_get(c->l2, k2, val, len, &e2);
        if (rc == 1) {
            atomic_fetch_add(&c->l2_hits, 1);
            l1_put(c, key, *val, *len, epoch);
            return 1;
        }
        if (rc < 0) /* L2 down: serve from the owner, just slower */
            log_with(LOG_DEBUG, "cache L2 unavailable", LF_STR("cache", c->name), LF_STR("detail", e2.msg));
    }
    atomic_fetch_add(&c->misses, 1);
    int rc = load(ud, key, val, len, err);
    if (rc != 1)
        return rc;
    if (atomic_load(&c->epoch) == epoch) {
        if (c->l2)
            kv_set(c->l2, k2, *val, *len, c->ttl_ms, NULL);
        l1_put(c, key, *val, *len, epoch);
    }
    return 1;
}

void cache_invalidate(cache *c, const char *key)
{
    atomic_fetch_add(&c->invalidations, 1);
    l1_drop(c, key);
    if (c->l2) {
        char k2[600];
        l2_key(c, key, k2, sizeof k2);
        pl_error err = {0};
        if (kv_del(c->l2, k2, &err) < 0 || kv_publish(c->l2, c->channel, key, strlen(key), &err) < 0)
            log_with(LOG_WARN, "cache invalidation not shared", LF_STR("cache", c->name), LF_STR("key", key),
                     LF_STR("detail", err.msg));
    }
}

void cache_get_stats(cache *c, cache_stats *out)
{
    out->l1_hits = atomic_load(&c->l1_hits);
    out->l2_hits = atomic_load(&c->l2_hits);
    out->misses = atomic_load(&c->misses);
    out->invalidations = atomic_load(&c->invalidations);
    pthread_mutex_lock(&c->lock);
    out->l1_bytes = c->bytes;
    out->l1_entries = c->count;
    pthread_mutex_unlock(&c->lock);
}

const char *cache_name(const cache *c) { return c->name; }

void cache_for_each(void (*fn)(void *ud, cache *c), void *ud)
{
    pthread_mutex_lock(&live_lock);
    for (cache *c = live; c; c = c->next_live)
        fn(ud, c);
    pthread_mutex_unlock(&live_lock);
}
