/*
 * kvlocal.h - pieces of the embedded kv engine (private to src/store/kvlocal).
 *
 *   kv_mem.c   the in-memory structures: a byte-string hash table and the
 *              sorted set (a sorted array of entries plus a member index).
 *   kv_hub.c   publish/subscribe inside this process: one dispatcher thread,
 *              FIFO, '*' patterns.
 *   kv_local.c the engine: the dataset in memory, the write path, open/close.
 *   kv_log.c   its durability: the log of effects in SQLite, loading and
 *              replay, background checkpoints (kv_store.h: what the two share).
 *
 * None of these lock anything themselves except the hub: kv_local.c holds
 * its store's lock around every use of kv_mem.c.
 */
#ifndef PULSE_STORE_KVLOCAL_H
#define PULSE_STORE_KVLOCAL_H

#include "store/kv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- hash table of byte strings ---------------------------------------------------- */

/* Embedded as the first member of every item a table holds; k/n are the item's
 * own bytes (the table never copies or frees them). */
typedef struct hent {
    uint64_t h;
    const char *k;
    size_t n;
} hent;

/* Open addressing with linear probing; deletion shifts back (no tombstones). */
typedef struct htab {
    hent **slot;
    size_t cap, n; /* cap is 0 or a power of two */
} htab;

uint64_t kvl_hash(const void *p, size_t n); /* seeded once per process */
hent *htab_find(const htab *t, const char *k, size_t n, uint64_t h);
void  htab_put(htab *t, hent *e);           /* e's bytes must not be present */
void  htab_del(htab *t, hent *e);           /* e must be present */
void  htab_free(htab *t);                   /* the slots only; items are the caller's */

/* ---- sorted set ---------------------------------------------------------------------- */

typedef struct zent {
    hent he; /* he.k points at m */
    double score;
    char m[]; /* NUL-terminated member */
} zent;

/* Entries sorted by (score, member bytes) ascending, as Redis orders them. A
 * sorted array keeps ranks O(1) and ranges cache-friendly; inserts move the
 * tail (feeds grow at their high end, so that tail is short). */
typedef struct zset {
    zent **v;
    size_t n, cap;
    htab idx; /* member -> entry */
} zset;

zent  *zent_new(const char *m, size_t n, double score);
zset  *zset_new(void);
void   zset_free(zset *z); /* frees every entry it holds */
zent  *zset_find(const zset *z, const char *m, size_t n);
void   zset_insert(zset *z, zent *e);            /* takes e; its member must be absent */
void   zset_remove(zset *z, zent *e);            /* detaches e (not freed) */
void   zset_rescore(zset *z, zent *e, double score);
size_t zset_lower(const zset *z, double score);  /* first index with score >= score */
size_t zset_upper(const zset *z, double score);  /* first index with score > score */
/* Detaches the `cnt` lowest entries, handing each to fn (which takes it). */
void   zset_pop_lowest(zset *z, size_t cnt, void (*fn)(void *ud, zent *e), void *ud);

/* ---- in-process publish/subscribe ------------------------------------------------------ */

typedef struct hub_sub hub_sub;

void hub_ref(void);   /* every open store holds the hub */
void hub_unref(void); /* the last one stops its dispatcher thread */
int  hub_publish(const char *channel, const void *msg, size_t len, pl_error *err);
int  hub_subscribe(const char *channel, kv_message_fn fn, void *ud, hub_sub **out, pl_error *err);
void hub_unsubscribe(hub_sub *s);

#endif
