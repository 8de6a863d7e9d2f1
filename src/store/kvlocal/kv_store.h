/*
 * kv_store.h - the embedded kv engine's store, shared by kv_local.c (the
 * operations, the write path, open/close) and kv_log.c (durability: the log's
 * records, loading and replay, checkpoints, the background thread). Private
 * to src/store/kvlocal; kv_local.c's top comment explains the design and the
 * order of the locks.
 */
#ifndef PULSE_STORE_KV_STORE_H
#define PULSE_STORE_KV_STORE_H

#include "store/kvlocal/kvlocal.h"

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>

enum { T_STR = 1, T_ZSET = 2 };                  /* kv_data.type */
enum { R_SET = 1, R_DEL = 2, R_ZADD = 3, R_ZREM = 4 }; /* log record kinds */

#define CKPT_LOG_BYTES (64ull << 20)    /* fold the log once it holds this much... */
#define CKPT_INTERVAL_MS 60000          /* ...or this long after the last fold (both: URL options) */

typedef struct kobj {
    hent he;          /* he.k = key */
    uint8_t type;
    uint32_t epoch;   /* == store's epoch: already in the dirty list */
    int64_t exp;      /* absolute ms; 0: no expiry (strings only) */
    char *val;        /* T_STR, NUL-terminated */
    size_t len;
    zset *z;          /* T_ZSET */
    char key[];
} kobj;

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

/* What the write in progress took out of the memory: freed once readers
 * are let back in (the write itself still reads some of it). */
typedef struct garbage {
    kobj *o;
    zent *e;
} garbage;

typedef struct lstore {
    char path[PATH_MAX];
    int refs;
    struct lstore *next;
    int lockfd;

    pthread_mutex_t wmu;  /* one write (or sweep, or checkpoint swap) at a time */
    pthread_rwlock_t rw;
    htab keys;
    uint32_t epoch;
    char **dirty;     /* keys changed since the last checkpoint began (copies) */
    size_t ndirty, capdirty;
    buf wrec;         /* the log record of the write in progress */
    garbage *g;
    size_t ng, capg;

    /* Group commit: records applied to memory wait here for one leader to
     * append them all as one log row (gmu, gcv). */
    pthread_mutex_t gmu;
    pthread_cond_t gcv;
    buf pend;
    uint64_t tickets, durable; /* records queued so far / made durable so far */
    bool committing;
    int failed;       /* the log could not be written: no more writes */
    char failmsg[200];

    pthread_mutex_t dbmu;
    sqlite3 *db;
    sqlite3_stmt *st_log;
    int64_t last_seq;
    uint64_t log_bytes; /* appended since the last checkpoint began */
    int wal_pages;      /* set by the WAL hook, read by the background thread */

    sqlite3 *ckdb;      /* WAL checkpoints (background thread only) */
    uint64_t ckpt_bytes;
    int64_t ckpt_ms;
    uint64_t last_fold_bytes; /* what the last checkpoint wrote (background thread) */
    pthread_t th;
    pthread_mutex_t mmu;
    pthread_cond_t mcv;
    bool stop;
    size_t sweep_at;
    int64_t last_ckpt_ms;
} lstore;

/* ---- kv_local.c: objects ---------------------------------------------------------- */

kobj *kvl_obj_new(const char *key, size_t klen, uint64_t h, uint8_t type);
kobj *kvl_str_new(const char *key, size_t klen, uint64_t h, const void *val, size_t len, int64_t exp);
void  kvl_obj_free(kobj *o); /* NULL is a no-op */
kobj *kvl_find(const lstore *st, const char *key, size_t klen, uint64_t h);
void  kvl_mark_dirty(lstore *st, kobj *o); /* the next checkpoint writes o's key */

static inline bool kvl_expired(const kobj *o, int64_t now) { return o->exp && o->exp <= now; }

/* ---- kv_log.c: the log and everything durable ------------------------------------------ */

void kvl_buf_put(buf *b, const void *p, size_t n);
/* Records of the write in progress, into st->wrec (wmu and rw held). */
void kvl_rec_set(lstore *st, const kobj *o);
void kvl_rec_key(lstore *st, uint8_t kind, const kobj *o); /* R_DEL */
void kvl_rec_zadd(lstore *st, const kobj *o, const zent *e);
void kvl_rec_zrem(lstore *st, const kobj *o, const zent *e);
/* Appends b as one log row (dbmu taken inside). */
int  kvl_log_append(lstore *st, const buf *b, pl_error *err);

/* Opens st->path's SQLite connections, checks the format, loads kv_data and
 * replays the log into memory. On failure store_free's kvl_log_free closes
 * what it opened. */
int  kvl_log_open(lstore *st, pl_error *err);
int  kvl_bg_start(lstore *st, pl_error *err); /* the background thread: sweep, checkpoints */
void kvl_bg_stop(lstore *st);
void kvl_log_finish(lstore *st); /* after kvl_bg_stop: the last checkpoint, the WAL truncated */
void kvl_log_free(lstore *st);   /* closes the connections */
int  kvl_log_ping(lstore *st, pl_error *err);

#endif
