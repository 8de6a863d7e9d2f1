/*
 * kv_local.c - the embedded kv engine: the dataset in memory, made durable in
 * SQLite (<data_dir>/<service>.kv.db).
 *
 * Why not one SQLite row per sorted-set member, read and written in place:
 * measured on this machine, a fan-out of one member into each of 10,000 feeds
 * of 100 members (ZADD + trim, one transaction, table (key, member, score)
 * with an index on (key, score)) took 1.0-1.5 s, half of it the commit:
 * every feed lives on its own b-tree pages, so each op dirties two or three
 * random pages and the commit writes ~100 MB of WAL frames. The target is
 * 50 ms. So the layout is Redis's: every key lives in memory (sorted sets as
 * sorted arrays with a member index), and every write call's effects are
 * appended to a log (kv_log) before the call returns; the fan-out's whole
 * batch is one sequential blob. Concurrent writers share one append (group
 * commit, w_commit). A background thread folds the log into per-key rows
 * (kv_data) every so often and deletes the folded log rows; opening loads
 * kv_data and replays the log. Reads never touch SQLite.
 *
 * Log records are effects, not requests: a trim is logged as the members it
 * removed, an INCR as the SET of its result with its absolute expiry. Every
 * record is thus an assignment to one member or one key, and replaying any
 * suffix of the log over a newer state ends in the same state. That is what
 * lets a checkpoint write keys one chunk at a time while writers go on (the
 * "fuzzy" checkpoint), and survive a crash at any point.
 *
 * Durability: WAL with synchronous=NORMAL, as the sql engine: a process crash
 * loses nothing that returned; a power cut may lose the last commits. One
 * SQLite connection under a mutex writes (appends come from one group-commit
 * leader at a time, so a pool would have nothing to run in parallel); a
 * second one, used only by the background thread, runs the WAL checkpoints,
 * so that no writer's commit ever runs one.
 *
 * Locks, always taken in this order: `wmu` makes writers (and the sweeper,
 * and the checkpoint's bookkeeping) go one at a time; `rw` guards the memory
 * (readers share it; a writer holds it exclusively while it changes the
 * memory, not while its record is written: see w_commit); `gmu` the group
 * commit's queue; `dbmu` the SQLite connection.
 * Expired strings are invisible at once, removed by the next write that
 * touches them, and swept by the background thread a slice at a time.
 * One process per file: an flock on <file>.lock; inside a process, opening
 * the same file twice shares one store.
 */
#include "store/kvlocal/kv_store.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t stores_lock = PTHREAD_MUTEX_INITIALIZER;
static lstore *stores;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* ---- objects ------------------------------------------------------------------------ */

kobj *kvl_obj_new(const char *key, size_t klen, uint64_t h, uint8_t type)
{
    kobj *o = calloc(1, sizeof *o + klen + 1);
    if (!o)
        abort();
    memcpy(o->key, key, klen);
    o->he.k = o->key;
    o->he.n = klen;
    o->he.h = h;
    o->type = type;
    if (type == T_ZSET)
        o->z = zset_new();
    return o;
}

kobj *kvl_str_new(const char *key, size_t klen, uint64_t h, const void *val, size_t len, int64_t exp)
{
    kobj *o = kvl_obj_new(key, klen, h, T_STR);
    o->val = xmalloc(len + 1);
    memcpy(o->val, val, len);
    o->val[len] = '\0';
    o->len = len;
    o->exp = exp;
    return o;
}

void kvl_obj_free(kobj *o)
{
    if (!o)
        return;
    if (o->type == T_ZSET)
        zset_free(o->z);
    else
        free(o->val);
    free(o);
}

kobj *kvl_find(const lstore *st, const char *key, size_t klen, uint64_t h)
{
    return (kobj *)htab_find(&st->keys, key, klen, h);
}

void kvl_mark_dirty(lstore *st, kobj *o)
{
    if (o->epoch == st->epoch)
        return;
    o->epoch = st->epoch;
    if (st->ndirty == st->capdirty) {
        st->capdirty = st->capdirty ? st->capdirty * 2 : 64;
        st->dirty = xrealloc(st->dirty, st->capdirty * sizeof *st->dirty);
    }
    char *k = xmalloc(o->he.n + 1);
    memcpy(k, o->key, o->he.n + 1);
    st->dirty[st->ndirty++] = k;
}

static int wrongtype(pl_error *err, const char *key)
{
    return err_set(err, PL_EINVAL, "key", "kv: %.100s holds another kind of value than this operation works on", key);
}

/* ---- the write in progress ------------------------------------------------------------ */

static void trash(lstore *st, kobj *o, zent *e)
{
    if (st->ng == st->capg) {
        st->capg = st->capg ? st->capg * 2 : 64;
        st->g = xrealloc(st->g, st->capg * sizeof *st->g);
    }
    st->g[st->ng++] = (garbage){.o = o, .e = e};
}

/* A write: writers one at a time (wmu), the memory exclusively (rw) until
 * w_commit. Refused once the log could not be written. */
static int w_lock(lstore *st, pl_error *err)
{
    pthread_mutex_lock(&st->wmu);
    pthread_mutex_lock(&st->gmu);
    int failed = st->failed;
    if (failed)
        err_set(err, failed, NULL, "kv: %s refuses writes since its log failed (%s); reopen it", st->path,
                st->failmsg);
    pthread_mutex_unlock(&st->gmu);
    if (failed) {
        pthread_mutex_unlock(&st->wmu);
        return failed;
    }
    pthread_rwlock_wrlock(&st->rw);
    st->wrec.n = 0;
    st->ng = 0;
    return 0;
}

/* Replaces key's object `old` (NULL: none) by `cur` (NULL: the key goes). */
static void install(lstore *st, kobj *old, kobj *cur)
{
    if (old)
        htab_del(&st->keys, &old->he);
    if (cur) {
        if (old)
            cur->epoch = old->epoch;
        htab_put(&st->keys, &cur->he);
    }
    if (old)
        trash(st, old, NULL);
    kvl_mark_dirty(st, cur ? cur : old);
}

/* The key's object as a write sees it: an expired one is removed first (with
 * no log record: a replay sees its expiry as well). */
static kobj *w_live(lstore *st, const char *key, size_t klen, uint64_t h, int64_t now)
{
    kobj *o = kvl_find(st, key, klen, h);
    if (o && kvl_expired(o, now)) {
        install(st, o, NULL);
        o = NULL;
    }
    return o;
}

/* Waits until the record with this ticket is in the log. Whoever finds no
 * append under way appends everything queued, as one row: concurrent writers
 * share one commit (and one wait for the disk). */
static int group_commit(lstore *st, uint64_t ticket, pl_error *err)
{
    pthread_mutex_lock(&st->gmu);
    while (st->durable < ticket && !st->failed) {
        if (st->committing) {
            pthread_cond_wait(&st->gcv, &st->gmu);
            continue;
        }
        buf b = st->pend;
        uint64_t upto = st->tickets;
        st->pend = (buf){0};
        st->committing = true;
        pthread_mutex_unlock(&st->gmu);
        pl_error e = {0};
        int rc = kvl_log_append(st, &b, &e);
        pthread_mutex_lock(&st->gmu);
        st->committing = false;
        if (!st->pend.p && b.cap <= (16u << 20)) { /* keep the allocation for the next records */
            b.n = 0;
            st->pend = b;
        } else {
            free(b.p);
        }
        if (rc) {
            st->failed = rc;
            snprintf(st->failmsg, sizeof st->failmsg, "%s", e.msg);
            log_error("kv: %s: %s; the store refuses writes until it is reopened", st->path, e.msg);
        } else {
            st->durable = upto;
        }
        pthread_cond_broadcast(&st->gcv);
    }
    int rc = st->durable >= ticket ? 0 : st->failed;
    if (rc)
        err_set(err, rc, NULL, "kv: %s: the log could not be written: %s", st->path, st->failmsg);
    pthread_mutex_unlock(&st->gmu);
    return rc;
}

/* Ends a write: lets readers back in, queues its record in write order and
 * waits until the record is durable. Readers may thus see a write a moment
 * before it is durable, never one that is not applied; they never wait for the
 * disk (a WAL append can stall for tens of ms while a checkpoint's fsync
 * writes the same page back). If the log cannot be written (I/O error, full
 * disk) the writes waiting for it fail and the store takes no more writes, as
 * Redis stops accepting writes when its AOF cannot be written: the memory may
 * then hold changes the log does not. */
static int w_commit(lstore *st, pl_error *err)
{
    pthread_rwlock_unlock(&st->rw);
    for (size_t i = 0; i < st->ng; i++) {
        kvl_obj_free(st->g[i].o);
        free(st->g[i].e);
    }
    st->ng = 0;
    uint64_t ticket = 0;
    if (st->wrec.n) {
        pthread_mutex_lock(&st->gmu);
        if (st->pend.n == 0) { /* the usual case: hand the record over, no copy */
            buf t = st->pend;
            st->pend = st->wrec;
            st->wrec = t;
            st->wrec.n = 0;
        } else {
            kvl_buf_put(&st->pend, st->wrec.p, st->wrec.n);
        }
        ticket = ++st->tickets;
        pthread_mutex_unlock(&st->gmu);
    }
    if (st->wrec.cap > (16u << 20)) { /* after a huge batch: do not keep its buffer */
        free(st->wrec.p);
        st->wrec = (buf){0};
    }
    pthread_mutex_unlock(&st->wmu);
    return ticket ? group_commit(st, ticket, err) : 0;
}

/* ---- strings and counters ------------------------------------------------------------- */

static int x_set(void *h, const char *key, const void *val, size_t len, int64_t ttl_ms, bool nx, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int64_t now = time_now_ms();
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    kobj *o = w_live(st, key, kl, hh, now);
    int res = 0;
    if (!(nx && o)) {
        kobj *n = kvl_str_new(key, kl, hh, val, len, ttl_ms ? now + ttl_ms : 0);
        install(st, o, n);
        kvl_rec_set(st, n);
        res = 1;
    }
    int rc = w_commit(st, err);
    return rc ? rc : res;
}

static int x_get(void *h, const char *key, char **val, size_t *len, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int64_t now = time_now_ms();
    int rc = 0;
    pthread_rwlock_rdlock(&st->rw);
    kobj *o = kvl_find(st, key, kl, hh);
    if (o && !kvl_expired(o, now)) {
        if (o->type != T_STR) {
            rc = wrongtype(err, key);
        } else {
            *val = xmalloc(o->len + 1);
            memcpy(*val, o->val, o->len + 1);
            *len = o->len;
            rc = 1;
        }
    }
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

static int x_del(void *h, const char *key, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    kobj *o = w_live(st, key, kl, hh, time_now_ms());
    if (o) {
        install(st, o, NULL);
        kvl_rec_key(st, R_DEL, o);
    }
    int rc = w_commit(st, err);
    return rc ? rc : o != NULL;
}

static int x_ttl(void *h, const char *key, int64_t *ttl_ms, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int64_t now = time_now_ms();
    pthread_rwlock_rdlock(&st->rw);
    kobj *o = kvl_find(st, key, kl, hh);
    int rc = 0;
    if (o && !kvl_expired(o, now)) {
        *ttl_ms = o->exp ? o->exp - now : -1;
        rc = 1;
    }
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

/* Redis's rule for what INCR accepts: optional '-', digits, no leading zero,
 * within int64. */
static bool parse_i64(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return false;
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg && ++i == n)
        return false;
    if (s[i] == '0' && (n - i > 1 || neg))
        return false;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static int x_incr(void *h, const char *key, int64_t by, int64_t ttl_ms, int64_t *value, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int64_t now = time_now_ms();
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    kobj *o = w_live(st, key, kl, hh, now);
    int64_t cur = 0, v = 0;
    int bad = 0;
    if (o && o->type != T_STR)
        bad = wrongtype(err, key);
    else if (o && !parse_i64(o->val, o->len, &cur))
        bad = err_set(err, PL_EINVAL, "key", "kv: %.100s does not hold an integer", key);
    else if (__builtin_add_overflow(cur, by, &v))
        bad = err_set(err, PL_EINVAL, "by", "kv: incrementing %.100s would overflow", key);
    if (!bad) {
        char num[24];
        int nl = snprintf(num, sizeof num, "%lld", (long long)v);
        /* A key this call creates gets the TTL; an existing one keeps its own. */
        kobj *n = kvl_str_new(key, kl, hh, num, (size_t)nl, o ? o->exp : ttl_ms ? now + ttl_ms : 0);
        install(st, o, n);
        kvl_rec_set(st, n);
    }
    int rc = w_commit(st, err);
    if (!bad && !rc)
        *value = v;
    return bad ? bad : rc;
}

/* ---- sorted sets -------------------------------------------------------------------------- */

typedef struct trim_ctx {
    lstore *st;
    kobj *o;
} trim_ctx;

static void trimmed(void *ud, zent *e)
{
    trim_ctx *t = ud;
    kvl_rec_zrem(t->st, t->o, e);
    trash(t->st, NULL, e);
}

/* Removes the lowest members beyond `keep`; the key goes when it empties. */
static size_t w_trim(lstore *st, kobj *o, size_t keep)
{
    size_t n = o->z->n;
    if (n <= keep)
        return 0;
    trim_ctx t = {st, o};
    zset_pop_lowest(o->z, n - keep, trimmed, &t);
    kvl_mark_dirty(st, o);
    if (o->z->n == 0)
        install(st, o, NULL);
    return n - keep;
}

static int x_zadd_batch(void *h, const kv_zop *ops, size_t n, pl_error *err)
{
    lstore *st = h;
    int64_t now = time_now_ms();
    int first = 0;
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    for (size_t i = 0; i < n; i++) {
        const kv_zop *op = &ops[i];
        size_t kl = strlen(op->key), ml = strlen(op->member);
        uint64_t hh = kvl_hash(op->key, kl);
        kobj *o = w_live(st, op->key, kl, hh, now);
        if (o && o->type != T_ZSET) {
            /* As a pipeline to Redis: this op fails, the others apply. */
            if (!first)
                first = wrongtype(err, op->key);
            continue;
        }
        if (!o) {
            o = kvl_obj_new(op->key, kl, hh, T_ZSET);
            install(st, NULL, o);
        }
        zent *e = zset_find(o->z, op->member, ml);
        if (!e) {
            e = zent_new(op->member, ml, op->score);
            zset_insert(o->z, e);
            kvl_rec_zadd(st, o, e);
            kvl_mark_dirty(st, o);
        } else if (e->score != op->score) {
            zset_rescore(o->z, e, op->score);
            kvl_rec_zadd(st, o, e);
            kvl_mark_dirty(st, o);
        }
        if (op->trim_to > 0)
            w_trim(st, o, op->trim_to);
    }
    int rc = w_commit(st, err);
    return rc ? rc : first;
}

static int x_zrem(void *h, const char *key, const char *member, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    kobj *o = w_live(st, key, kl, hh, time_now_ms());
    int res = 0;
    if (o && o->type != T_ZSET) {
        res = wrongtype(err, key);
    } else if (o) {
        zent *e = zset_find(o->z, member, strlen(member));
        if (e) {
            zset_remove(o->z, e);
            kvl_rec_zrem(st, o, e);
            trash(st, NULL, e);
            kvl_mark_dirty(st, o);
            if (o->z->n == 0)
                install(st, o, NULL);
            res = 1;
        }
    }
    int rc = w_commit(st, err);
    return rc ? rc : res;
}

static int x_ztrim(void *h, const char *key, size_t keep, pl_error *err)
{
    lstore *st = h;
    size_t kl = strlen(key);
    uint64_t hh = kvl_hash(key, kl);
    int lrc = w_lock(st, err);
    if (lrc)
        return lrc;
    kobj *o = w_live(st, key, kl, hh, time_now_ms());
    int res = 0;
    if (o && o->type != T_ZSET)
        res = wrongtype(err, key);
    else if (o) {
        size_t removed = w_trim(st, o, keep);
        res = removed > INT32_MAX ? INT32_MAX : (int)removed;
    }
    int rc = w_commit(st, err);
    return rc ? rc : res;
}

/* The set of key for a read: NULL with *rc 0 when there is none, or with
 * *rc < 0 when the key holds a string. */
static const zset *r_zset(lstore *st, const char *key, int *rc, pl_error *err)
{
    size_t kl = strlen(key);
    kobj *o = kvl_find(st, key, kl, kvl_hash(key, kl));
    *rc = 0;
    if (!o || kvl_expired(o, time_now_ms()))
        return NULL;
    if (o->type != T_ZSET) {
        *rc = wrongtype(err, key);
        return NULL;
    }
    return o->z;
}

static kv_zitem *copy_items(const zset *z, size_t from, size_t cnt, bool down)
{
    kv_zitem *it = xmalloc(cnt * sizeof *it);
    for (size_t i = 0; i < cnt; i++) {
        const zent *e = z->v[down ? from - i : from + i];
        it[i].member = xmalloc(e->he.n + 1);
        memcpy(it[i].member, e->m, e->he.n + 1);
        it[i].score = e->score;
    }
    return it;
}

static int x_zrange_score(void *h, const char *key, double min, double max, bool desc, size_t offset, size_t limit,
                          kv_zitem **items, size_t *n, pl_error *err)
{
    lstore *st = h;
    int rc;
    pthread_rwlock_rdlock(&st->rw);
    const zset *z = r_zset(st, key, &rc, err);
    if (z) {
        size_t lo = zset_lower(z, min), hi = zset_upper(z, max);
        size_t cnt = hi > lo ? hi - lo : 0;
        if (offset < cnt) {
            size_t take = cnt - offset < limit ? cnt - offset : limit;
            if (take) {
                *items = copy_items(z, desc ? hi - 1 - offset : lo + offset, take, desc);
                *n = take;
            }
        }
    }
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

static int x_zrange_rank(void *h, const char *key, int64_t start, int64_t stop, bool desc, kv_zitem **items,
                         size_t *n, pl_error *err)
{
    lstore *st = h;
    int rc;
    pthread_rwlock_rdlock(&st->rw);
    const zset *z = r_zset(st, key, &rc, err);
    if (z) {
        int64_t card = (int64_t)z->n;
        if (start < 0)
            start += card;
        if (stop < 0)
            stop += card;
        if (start < 0)
            start = 0;
        if (stop >= card)
            stop = card - 1;
        if (start <= stop && start < card) {
            size_t take = (size_t)(stop - start + 1);
            *items = copy_items(z, desc ? (size_t)(card - 1 - start) : (size_t)start, take, desc);
            *n = take;
        }
    }
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

static int x_zcard(void *h, const char *key, int64_t *n, pl_error *err)
{
    lstore *st = h;
    int rc;
    pthread_rwlock_rdlock(&st->rw);
    const zset *z = r_zset(st, key, &rc, err);
    *n = z ? (int64_t)z->n : 0;
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

static int x_zscore(void *h, const char *key, const char *member, double *score, pl_error *err)
{
    lstore *st = h;
    int rc;
    pthread_rwlock_rdlock(&st->rw);
    const zset *z = r_zset(st, key, &rc, err);
    const zent *e = z ? zset_find(z, member, strlen(member)) : NULL;
    if (e) {
        *score = e->score;
        rc = 1;
    }
    pthread_rwlock_unlock(&st->rw);
    return rc;
}

/* ---- pub/sub: the process-wide hub (kv_hub.c) ------------------------------------------ */

static int x_publish(void *h, const char *channel, const void *msg, size_t len, pl_error *err)
{
    return hub_publish(channel, msg, len, err);
}

static int x_subscribe(void *h, const char *channel, kv_message_fn fn, void *ud, void **sub, pl_error *err)
{
    return hub_subscribe(channel, fn, ud, (hub_sub **)sub, err);
}

static void x_unsubscribe(void *sub) { hub_unsubscribe(sub); }

/* ---- open and close ----------------------------------------------------------------------- */


static void store_free(lstore *st)
{
    kvl_log_free(st);
    for (size_t i = 0; i < st->keys.cap; i++)
        if (st->keys.slot[i])
            kvl_obj_free((kobj *)st->keys.slot[i]);
    htab_free(&st->keys);
    for (size_t i = 0; i < st->ndirty; i++)
        free(st->dirty[i]);
    free(st->dirty);
    free(st->wrec.p);
    free(st->pend.p);
    free(st->g);
    pthread_rwlock_destroy(&st->rw);
    pthread_mutex_destroy(&st->wmu);
    pthread_mutex_destroy(&st->gmu);
    pthread_cond_destroy(&st->gcv);
    pthread_mutex_destroy(&st->dbmu);
    pthread_mutex_destroy(&st->mmu);
    pthread_cond_destroy(&st->mcv);
    if (st->lockfd >= 0)
        close(st->lockfd); /* releases the flock */
    free(st);
}

static int store_open(const char *path, uint64_t ckpt_bytes, int64_t ckpt_ms, lstore **out, pl_error *err)
{
    lstore *st = calloc(1, sizeof *st);
    if (!st)
        abort();
    snprintf(st->path, sizeof st->path, "%s", path);
    st->ckpt_bytes = ckpt_bytes;
    st->ckpt_ms = ckpt_ms;
    st->lockfd = -1;
    st->epoch = 1;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* Writers must not starve behind a steady stream of readers. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&st->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&st->wmu, NULL);
    pthread_mutex_init(&st->gmu, NULL);
    pthread_cond_init(&st->gcv, NULL);
    pthread_mutex_init(&st->dbmu, NULL);
    pthread_mutex_init(&st->mmu, NULL);
    pthread_cond_init(&st->mcv, NULL);

    char lockpath[PATH_MAX + 8];
    snprintf(lockpath, sizeof lockpath, "%s.lock", path);
    st->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    int rc = 0;
    if (st->lockfd < 0) {
        rc = err_set(err, PL_EIO, "data", "kv: cannot open %s: %s", lockpath, strerror(errno));
        goto fail;
    }
    if (flock(st->lockfd, LOCK_EX | LOCK_NB)) {
        rc = err_set(err, PL_EUNAVAILABLE, "data", "kv: %s is in use by another process", path);
        goto fail;
    }
    if ((rc = kvl_log_open(st, err)) || (rc = kvl_bg_start(st, err)))
        goto fail;
    *out = st;
    return 0;
fail:
    store_free(st);
    return rc;
}

/* "embedded:[file][?checkpoint_bytes=N&checkpoint_ms=N]": the file defaults to
 * <data_dir>/<service>.kv.db; the options tune when the log is folded (smaller:
 * faster opens after a crash, more rewriting; the tests use them to fold often). */
static int parse_url(const char *url, const kv_options *o, char *path, size_t size, uint64_t *ckpt_bytes,
                     int64_t *ckpt_ms, pl_error *err)
{
    const char *file = strncmp(url, "embedded:", 9) == 0 ? url + 9 : url;
    size_t flen = strcspn(file, "?");
    *ckpt_bytes = CKPT_LOG_BYTES;
    *ckpt_ms = CKPT_INTERVAL_MS;
    for (const char *q = file[flen] ? file + flen + 1 : ""; *q;) {
        size_t n = strcspn(q, "&");
        char *end = NULL;
        long long v = -1;
        const char *eq = memchr(q, '=', n);
        if (eq)
            v = strtoll(eq + 1, &end, 10);
        if (!eq || v < 1 || end != q + n)
            return err_set(err, PL_ECONFIG, "kv", "kv: embedded URL option \"%.*s\" (want name=positive number)",
                           (int)n, q);
        if ((size_t)(eq - q) == 16 && !strncmp(q, "checkpoint_bytes", 16))
            *ckpt_bytes = (uint64_t)v;
        else if ((size_t)(eq - q) == 13 && !strncmp(q, "checkpoint_ms", 13))
            *ckpt_ms = v;
        else
            return err_set(err, PL_ECONFIG, "kv", "kv: unknown embedded URL option \"%.*s\"", (int)n, q);
        q += n + (q[n] == '&');
    }
    if (flen) {
        snprintf(path, size, "%.*s", (int)flen, file);
        return 0;
    }
    const char *dir = o->data_dir && *o->data_dir ? o->data_dir : ".";
    if (fs_mkdir_p(dir))
        return err_set(err, PL_EIO, "data", "kv: cannot create data directory %s: %s", dir, strerror(errno));
    snprintf(path, size, "%s/%s.kv.db", dir, o->service);
    return 0;
}

static int x_open(const char *url, const kv_options *o, void **out, pl_error *err)
{
    char path[PATH_MAX];
    uint64_t ckpt_bytes;
    int64_t ckpt_ms;
    int rc = parse_url(url, o, path, sizeof path, &ckpt_bytes, &ckpt_ms, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&stores_lock);
    lstore *st = stores;
    while (st && strcmp(st->path, path) != 0)
        st = st->next;
    if (st) {
        st->refs++;
    } else if (!(rc = store_open(path, ckpt_bytes, ckpt_ms, &st, err))) {
        st->refs = 1;
        st->next = stores;
        stores = st;
        hub_ref();
    }
    pthread_mutex_unlock(&stores_lock);
    if (!rc)
        *out = st;
    return rc;
}

static void x_close(void *h)
{
    lstore *st = h;
    pthread_mutex_lock(&stores_lock);
    if (--st->refs > 0) {
        pthread_mutex_unlock(&stores_lock);
        return;
    }
    for (lstore **p = &stores; *p; p = &(*p)->next)
        if (*p == st) {
            *p = st->next;
            break;
        }
    pthread_mutex_unlock(&stores_lock);
    kvl_bg_stop(st);
    kvl_log_finish(st);
    store_free(st);
    hub_unref();
}

static int x_ping(void *h, pl_error *err) { return kvl_log_ping(h, err); }

static const char *const local_schemes[] = {"embedded:", NULL};

const kv_driver kv_local_driver = {
    .version = 1,
    .name = "embedded",
    .schemes = local_schemes,
    .xOpen = x_open,
    .xClose = x_close,
    .xPing = x_ping,
    .xSet = x_set,
    .xGet = x_get,
    .xDel = x_del,
    .xTtl = x_ttl,
    .xIncr = x_incr,
    .xZaddBatch = x_zadd_batch,
    .xZrem = x_zrem,
    .xZrangeScore = x_zrange_score,
    .xZrangeRank = x_zrange_rank,
    .xZcard = x_zcard,
    .xZscore = x_zscore,
    .xZtrim = x_ztrim,
    .xPublish = x_publish,
    .xSubscribe = x_subscribe,
    .xUnsubscribe = x_unsubscribe,
};
