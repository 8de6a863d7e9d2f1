/*
 * kv.h - the kv store kind: keys with TTL, atomic counters, sorted sets and
 * publish/subscribe. Used for sessions, rate limits, caches (L2), timelines
 * (sorted feeds) and cross-instance fan-out (pub/sub).
 *
 * Engines, chosen by URL like every store kind (sql.h explains the shape):
 *   ""/"embedded:"  SQLite-backed, one file per service in the data
 *                   directory (<data>/<service>.kv.db); pub/sub reaches
 *                   subscribers in this process only.
 *   "redis://host:port/db"  Redis via hiredis, pooled, pipelined for batches;
 *                   pub/sub reaches every process subscribed on that server.
 *
 * Keys: every key is prefixed with "<service>:" by the wrappers, so services
 * sharing one Redis never see each other's keys. Channels are NOT prefixed
 * (they are how processes and services meet); name them "pulse.<purpose>...".
 *
 * Threads: a kv handle is shared by all threads. Subscription callbacks run on
 * a thread owned by the kv engine; they must not block.
 *
 * Errors: 0 or negative PL_E* codes; PL_EUNAVAILABLE / PL_ETIMEOUT when the
 * engine cannot be reached within its timeouts (never a hang), PL_EINVAL for
 * an operation on a key of the wrong type.
 */
#ifndef PULSE_STORE_KV_H
#define PULSE_STORE_KV_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv kv;
typedef struct kv_sub kv_sub;

typedef struct kv_options {
    const char *data_dir;      /* embedded engine's files */
    const char *service;       /* key prefix and file name */
    int pool_max;              /* connections; default 20 */
    int connect_timeout_ms;    /* default 2000 */
    int command_timeout_ms;    /* default 2000 */
    int idle_timeout_ms;       /* default 30000 */
} kv_options;

typedef struct kv_zitem {
    char *member;   /* malloc'd; kv_zitems_free releases */
    double score;
} kv_zitem;

/* One ZADD of a batch (kv_zadd_batch): several keys in one round trip. */
typedef struct kv_zop {
    const char *key;
    const char *member;
    double score;
    size_t trim_to;  /* > 0: afterwards keep only the trim_to highest scores */
} kv_zop;

typedef void (*kv_message_fn)(void *ud, const char *channel, const char *msg, size_t len);

int  kv_open(const char *url, const kv_options *o, kv **out, pl_error *err);
void kv_close(kv *k); /* NULL is a no-op; every subscription must be gone */
const char *kv_engine(const kv *k); /* "embedded", "redis" */
int  kv_ping(kv *k, pl_error *err);

/* ---- strings ------------------------------------------------------------------ */
/* ttl_ms 0: no expiry. */
int kv_set(kv *k, const char *key, const void *val, size_t len, int64_t ttl_ms, pl_error *err);
/* Sets only when absent: 1 set, 0 it existed. */
int kv_set_nx(kv *k, const char *key, const void *val, size_t len, int64_t ttl_ms, pl_error *err);
/* 1 found (*val malloc'd and NUL-terminated, *len its length), 0 missing/expired. */
int kv_get(kv *k, const char *key, char **val, size_t *len, pl_error *err);
/* 1 deleted, 0 there was nothing. Works on every key type. */
int kv_del(kv *k, const char *key, pl_error *err);
/* Remaining lifetime: 1 and *ttl_ms (-1: no expiry), or 0 when missing. */
int kv_ttl(kv *k, const char *key, int64_t *ttl_ms, pl_error *err);

/* ---- counters ------------------------------------------------------------------ */
/* Adds `by` atomically and returns the new value; a key created by this call
 * gets ttl_ms (0: none) — the fixed-window rate limit in one call. */
int kv_incr(kv *k, const char *key, int64_t by, int64_t ttl_ms, int64_t *value, pl_error *err);

/* ---- sorted sets ------------------------------------------------------------------ */
int kv_zadd(kv *k, const char *key, const char *member, double score, pl_error *err);
/* Applies every op (and its trim) in one round trip / one transaction. */
int kv_zadd_batch(kv *k, const kv_zop *ops, size_t n, pl_error *err);
/* 1 removed, 0 absent. */
int kv_zrem(kv *k, const char *key, const char *member, pl_error *err);
/* Members with min <= score <= max, highest first when `desc`, after skipping
 * `offset`, at most `limit`. *items is malloc'd (free with kv_zitems_free). */
int kv_zrange_score(kv *k, const char *key, double min, double max, bool desc, size_t offset, size_t limit,
                    kv_zitem **items, size_t *n, pl_error *err);
/* By rank: ranks start..stop inclusive (negative count from the end), in
 * ascending score order, or descending when `desc`. */
int kv_zrange_rank(kv *k, const char *key, int64_t start, int64_t stop, bool desc, kv_zitem **items, size_t *n,
                   pl_error *err);
int kv_zcard(kv *k, const char *key, int64_t *n, pl_error *err);
/* 1 and *score when the member is there, 0 when not. */
int kv_zscore(kv *k, const char *key, const char *member, double *score, pl_error *err);
/* Keeps only the `keep` highest-scored members. */
int kv_ztrim(kv *k, const char *key, size_t keep, pl_error *err);
void kv_zitems_free(kv_zitem *items, size_t n);

/* ---- publish / subscribe ----------------------------------------------------------- */
/* Returns the number of receivers when the engine knows it (>= 0). */
int  kv_publish(kv *k, const char *channel, const void *msg, size_t len, pl_error *err);
/* Subscribes to a channel, or a pattern when it contains '*'. Messages
 * published after this returns are delivered, in publish order per channel. */
int  kv_subscribe(kv *k, const char *channel, kv_message_fn fn, void *ud, kv_sub **out, pl_error *err);
void kv_unsubscribe(kv_sub *s); /* no callback runs after it returns; NULL is a no-op */

/* ---- the engine interface (kv.c registers the built-in ones) --------------------------- */
typedef struct kv_driver {
    int version; /* 1; fields are only ever appended */
    const char *name;
    const char *const *schemes;
    int  (*xOpen)(const char *url, const kv_options *o, void **h, pl_error *err);
    void (*xClose)(void *h);
    int  (*xPing)(void *h, pl_error *err);
    int  (*xSet)(void *h, const char *key, const void *val, size_t len, int64_t ttl_ms, bool nx, pl_error *err);
    int  (*xGet)(void *h, const char *key, char **val, size_t *len, pl_error *err);
    int  (*xDel)(void *h, const char *key, pl_error *err);
    int  (*xTtl)(void *h, const char *key, int64_t *ttl_ms, pl_error *err);
    int  (*xIncr)(void *h, const char *key, int64_t by, int64_t ttl_ms, int64_t *value, pl_error *err);
    int  (*xZaddBatch)(void *h, const kv_zop *ops, size_t n, pl_error *err);
    int  (*xZrem)(void *h, const char *key, const char *member, pl_error *err);
    int  (*xZrangeScore)(void *h, const char *key, double min, double max, bool desc, size_t offset, size_t limit,
                         kv_zitem **items, size_t *n, pl_error *err);
    int  (*xZrangeRank)(void *h, const char *key, int64_t start, int64_t stop, bool desc, kv_zitem **items,
                        size_t *n, pl_error *err);
    int  (*xZcard)(void *h, const char *key, int64_t *n, pl_error *err);
    int  (*xZscore)(void *h, const char *key, const char *member, double *score, pl_error *err);
    int  (*xZtrim)(void *h, const char *key, size_t keep, pl_error *err);
    int  (*xPublish)(void *h, const char *channel, const void *msg, size_t len, pl_error *err);
    int  (*xSubscribe)(void *h, const char *channel, kv_message_fn fn, void *ud, void **sub, pl_error *err);
    void (*xUnsubscribe)(void *sub);
} kv_driver;

void kv_register(const kv_driver *d);

#endif
