/*
 * kv_log.c - the embedded kv engine's durability (kv_store.h): the log's
 * record format, opening and loading a store (kv_data, then the log
 * replayed), checkpoints that fold the log into kv_data, and the background
 * thread that runs them and sweeps expired keys. Why it is built this way:
 * the top of kv_local.c.
 */
#include "store/kvlocal/kv_store.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT_VERSION 1
#define TICK_MS 100
#define SWEEP_SLOTS 4096                /* hash slots the sweeper visits per tick */
#define CKPT_CHUNK_BYTES (1u << 20)     /* keys serialised per lock hold / transaction */
#define CKPT_CHUNK_KEYS 2048
#define WAL_CKPT_PAGES 1000             /* WAL pages that trigger a background WAL checkpoint */
#define DROP_CHUNK_BYTES (2u << 20)     /* folded log deleted per transaction... */
#define DROP_CHUNK_ROWS 4096            /* ...at most */

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

/* ---- records ---------------------------------------------------------------------------- */

void kvl_buf_put(buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = b->cap ? b->cap : 256;
        while (b->n + n > b->cap)
            b->cap *= 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void buf_u8(buf *b, uint8_t v) { kvl_buf_put(b, &v, 1); }
static void buf_i64(buf *b, int64_t v) { kvl_buf_put(b, &v, 8); }
static void buf_f64(buf *b, double v) { kvl_buf_put(b, &v, 8); }
static void buf_str(buf *b, const char *p, size_t n)
{
    uint32_t l = (uint32_t)n;
    kvl_buf_put(b, &l, 4);
    kvl_buf_put(b, p, n);
}

/* Reading records back: a short or malformed buffer sets `bad`. */
typedef struct rd {
    const char *p;
    size_t n, i;
    bool bad;
} rd;

static const char *rd_get(rd *r, size_t n)
{
    if (r->bad || r->n - r->i < n) {
        r->bad = true;
        return NULL;
    }
    const char *p = r->p + r->i;
    r->i += n;
    return p;
}

static uint8_t rd_u8(rd *r)
{
    const char *p = rd_get(r, 1);
    return p ? (uint8_t)*p : 0;
}

static int64_t rd_i64(rd *r)
{
    int64_t v = 0;
    const char *p = rd_get(r, 8);
    if (p)
        memcpy(&v, p, 8);
    return v;
}

static double rd_f64(rd *r)
{
    double v = 0;
    const char *p = rd_get(r, 8);
    if (p)
        memcpy(&v, p, 8);
    return v;
}

static const char *rd_str(rd *r, size_t *n)
{
    uint32_t l = 0;
    const char *p = rd_get(r, 4);
    if (p)
        memcpy(&l, p, 4);
    *n = l;
    return rd_get(r, l);
}

/* ---- the log ------------------------------------------------------------------------------ */

static int map_sqlite(sqlite3 *db, int rc, pl_error *err, const char *what)
{
    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = PL_EUNAVAILABLE;
        break;
    case SQLITE_NOMEM:
        code = PL_ENOMEM;
        break;
    default:
        code = PL_EIO;
    }
    return err_set(err, code, NULL, "kv: sqlite %s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

int kvl_log_append(lstore *st, const buf *b, pl_error *err)
{
    pthread_mutex_lock(&st->dbmu);
    sqlite3_bind_blob64(st->st_log, 1, b->p, b->n, SQLITE_STATIC);
    int s = sqlite3_step(st->st_log);
    int rc = 0;
    if (s != SQLITE_DONE)
        rc = map_sqlite(st->db, s, err, "log append");
    sqlite3_reset(st->st_log);
    sqlite3_clear_bindings(st->st_log);
    if (!rc) {
        st->last_seq = sqlite3_last_insert_rowid(st->db);
        st->log_bytes += b->n;
    }
    pthread_mutex_unlock(&st->dbmu);
    return rc;
}

void kvl_rec_set(lstore *st, const kobj *o)
{
    buf_u8(&st->wrec, R_SET);
    buf_str(&st->wrec, o->key, o->he.n);
    buf_str(&st->wrec, o->val, o->len);
    buf_i64(&st->wrec, o->exp);
}

void kvl_rec_key(lstore *st, uint8_t kind, const kobj *o)
{
    buf_u8(&st->wrec, kind);
    buf_str(&st->wrec, o->key, o->he.n);
}

void kvl_rec_zadd(lstore *st, const kobj *o, const zent *e)
{
    kvl_rec_key(st, R_ZADD, o);
    buf_str(&st->wrec, e->m, e->he.n);
    buf_f64(&st->wrec, e->score);
}

void kvl_rec_zrem(lstore *st, const kobj *o, const zent *e)
{
    kvl_rec_key(st, R_ZREM, o);
    buf_str(&st->wrec, e->m, e->he.n);
}

/* ---- persistence: replay ---------------------------------------------------------------- */

/* Replay applies a record whatever the state: it may run over a checkpoint
 * that already holds it, or later changes of the same key (see the top). */
static kobj *replay_take(lstore *st, const char *key, size_t kl, uint64_t h)
{
    kobj *o = kvl_find(st, key, kl, h);
    if (o) {
        kvl_mark_dirty(st, o);
        htab_del(&st->keys, &o->he);
    }
    return o;
}

static void replay_put(lstore *st, kobj *old, kobj *n)
{
    if (old)
        n->epoch = old->epoch;
    htab_put(&st->keys, &n->he);
    kvl_mark_dirty(st, n);
    kvl_obj_free(old);
}

static int replay(lstore *st, const char *p, size_t n)
{
    rd r = {.p = p, .n = n};
    while (r.i < r.n && !r.bad) {
        uint8_t kind = rd_u8(&r);
        size_t kl, ml = 0, vl;
        const char *key = rd_str(&r, &kl), *m = NULL, *v;
        if (r.bad)
            break;
        uint64_t h = kvl_hash(key, kl);
        if (kind == R_SET) {
            v = rd_str(&r, &vl);
            int64_t exp = rd_i64(&r);
            if (!r.bad)
                replay_put(st, replay_take(st, key, kl, h), kvl_str_new(key, kl, h, v, vl, exp));
        } else if (kind == R_DEL) {
            kvl_obj_free(replay_take(st, key, kl, h));
        } else if (kind == R_ZADD || kind == R_ZREM) {
            m = rd_str(&r, &ml);
            double score = kind == R_ZADD ? rd_f64(&r) : 0;
            if (r.bad)
                break;
            kobj *o = kvl_find(st, key, kl, h);
            if (kind == R_ZREM) {
                zent *e = o && o->type == T_ZSET ? zset_find(o->z, m, ml) : NULL;
                if (e) {
                    zset_remove(o->z, e);
                    free(e);
                    kvl_mark_dirty(st, o);
                    if (o->z->n == 0)
                        kvl_obj_free(replay_take(st, key, kl, h));
                }
                continue;
            }
            if (!o || o->type != T_ZSET) {
                kobj *old = replay_take(st, key, kl, h);
                o = kvl_obj_new(key, kl, h, T_ZSET);
                replay_put(st, old, o);
            }
            zent *e = zset_find(o->z, m, ml);
            if (e)
                zset_rescore(o->z, e, score);
            else
                zset_insert(o->z, zent_new(m, ml, score));
            kvl_mark_dirty(st, o);
        } else {
            r.bad = true;
        }
    }
    return r.bad ? -1 : 0;
}

/* ---- opening and loading ----------------------------------------------------------------------- */

static int wal_hook(void *ud, sqlite3 *db, const char *name, int pages)
{
    __atomic_store_n(&((lstore *)ud)->wal_pages, pages, __ATOMIC_RELAXED);
    return SQLITE_OK;
}

static int db_open(lstore *st, sqlite3 **out, pl_error *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(st->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc) {
        rc = map_sqlite(db, rc, err, "open");
        sqlite3_close(db);
        return rc;
    }
    sqlite3_busy_timeout(db, 5000);
    char *emsg = NULL;
    /* Checkpoints are the background thread's (wal_hook below replaces the
     * automatic ones, which would run inside a writer's commit). */
    rc = sqlite3_exec(db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=67108864;"
                      " PRAGMA temp_store=MEMORY;",
                      NULL, NULL, &emsg);
    if (rc) {
        err_set(err, PL_EIO, NULL, "kv: sqlite setup of %s: %s", st->path, emsg ? emsg : "?");
        sqlite3_free(emsg);
        sqlite3_close(db);
        return PL_EIO;
    }
    *out = db;
    return 0;
}

static int load_data(lstore *st, pl_error *err)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(st->db, "SELECT key, type, expires_at, val FROM kv_data", -1, &q, NULL);
    if (rc)
        return map_sqlite(st->db, rc, err, "load");
    int64_t now = time_now_ms();
    int s;
    while ((s = sqlite3_step(q)) == SQLITE_ROW) {
        const char *key = sqlite3_column_blob(q, 0);
        size_t kl = (size_t)sqlite3_column_bytes(q, 0);
        int type = sqlite3_column_int(q, 1);
        int64_t exp = sqlite3_column_int64(q, 2);
        const char *val = sqlite3_column_blob(q, 3);
        size_t vl = (size_t)sqlite3_column_bytes(q, 3);
        if (!key)
            key = "";
        if (!val)
            val = "";
        uint64_t h = kvl_hash(key, kl);
        if (kvl_find(st, key, kl, h))
            continue;
        if (type == T_STR) {
            if (!(exp && exp <= now))
                htab_put(&st->keys, &kvl_str_new(key, kl, h, val, vl, exp)->he);
        } else if (type == T_ZSET) {
            kobj *o = kvl_obj_new(key, kl, h, T_ZSET);
            rd r = {.p = val, .n = vl};
            while (r.i < r.n && !r.bad) {
                double score = rd_f64(&r);
                size_t ml;
                const char *m = rd_str(&r, &ml);
                if (!r.bad && !zset_find(o->z, m, ml))
                    zset_insert(o->z, zent_new(m, ml, score));
            }
            if (r.bad || o->z->n == 0) {
                log_warn("kv: %s: the stored sorted set %.*s is damaged; kept %zu members", st->path, (int)kl, key,
                         o->z->n);
                if (o->z->n == 0) {
                    kvl_obj_free(o);
                    continue;
                }
            }
            htab_put(&st->keys, &o->he);
        }
    }
    if (s != SQLITE_DONE)
        rc = map_sqlite(st->db, s, err, "load");
    sqlite3_finalize(q);
    if (rc)
        return rc;

    rc = sqlite3_prepare_v2(st->db, "SELECT seq, rec FROM kv_log ORDER BY seq", -1, &q, NULL);
    if (rc)
        return map_sqlite(st->db, rc, err, "load log");
    while ((s = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(q, 0);
        const char *p = sqlite3_column_blob(q, 1);
        size_t n = (size_t)sqlite3_column_bytes(q, 1);
        if (replay(st, p ? p : "", n)) {
            sqlite3_finalize(q);
            return err_set(err, PL_EIO, NULL, "kv: %s: log row %lld is damaged", st->path, (long long)seq);
        }
        st->last_seq = seq;
        st->log_bytes += n;
    }
    if (s != SQLITE_DONE)
        rc = map_sqlite(st->db, s, err, "load log");
    sqlite3_finalize(q);
    return rc;
}

static int schema(lstore *st, pl_error *err)
{
    char *emsg = NULL;
    int rc = sqlite3_exec(st->db,
                          "CREATE TABLE IF NOT EXISTS kv_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                          "INSERT OR IGNORE INTO kv_meta (name, value) VALUES ('format', 1);"
                          "CREATE TABLE IF NOT EXISTS kv_data (key BLOB PRIMARY KEY, type INTEGER NOT NULL,"
                          " expires_at INTEGER NOT NULL, val BLOB NOT NULL);"
                          "CREATE TABLE IF NOT EXISTS kv_log (seq INTEGER PRIMARY KEY, rec BLOB NOT NULL);",
                          NULL, NULL, &emsg);
    if (rc) {
        err_set(err, PL_EIO, NULL, "kv: schema of %s: %s", st->path, emsg ? emsg : "?");
        sqlite3_free(emsg);
        return PL_EIO;
    }
    sqlite3_stmt *q;
    if ((rc = sqlite3_prepare_v2(st->db, "SELECT value FROM kv_meta WHERE name = 'format'", -1, &q, NULL)))
        return map_sqlite(st->db, rc, err, "schema");
    int64_t v = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_finalize(q);
    if (v != FORMAT_VERSION)
        return err_set(err, PL_ECONFIG, "kv", "kv: %s has format %lld; this build reads format %d", st->path,
                       (long long)v, FORMAT_VERSION);
    return 0;
}

static void *maint(void *arg);

/* A PASSIVE WAL checkpoint once the WAL holds WAL_CKPT_PAGES, on the
 * background thread's own connection: it never blocks a writer's commit, and
 * kept small it keeps short the fsync that a WAL append can stall behind
 * (measured: a 50 MB WAL checkpointed at once stalled an append for 220 ms). */
static void wal_checkpoint(lstore *st)
{
    if (__atomic_load_n(&st->wal_pages, __ATOMIC_RELAXED) >= WAL_CKPT_PAGES) {
        __atomic_store_n(&st->wal_pages, 0, __ATOMIC_RELAXED);
        sqlite3_wal_checkpoint_v2(st->ckdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
}

/* ---- background: sweep, checkpoint ---------------------------------------------------------- */

static void sweep(lstore *st)
{
    int64_t now = time_now_ms();
    pthread_mutex_lock(&st->wmu);
    pthread_rwlock_wrlock(&st->rw);
    size_t cap = st->keys.cap;
    if (st->sweep_at >= cap)
        st->sweep_at = 0;
    for (size_t seen = 0; seen < SWEEP_SLOTS && seen < cap && st->keys.cap == cap; seen++) {
        kobj *o = (kobj *)st->keys.slot[st->sweep_at];
        if (o && kvl_expired(o, now)) {
            /* Deleting shifts a later entry into this slot: look at it again. */
            kvl_mark_dirty(st, o);
            htab_del(&st->keys, &o->he);
            kvl_obj_free(o);
            continue;
        }
        st->sweep_at = (st->sweep_at + 1) & (cap - 1);
    }
    pthread_rwlock_unlock(&st->rw);
    pthread_mutex_unlock(&st->wmu);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void serialize(const kobj *o, buf *b)
{
    if (o->type == T_STR) {
        kvl_buf_put(b, o->val, o->len);
        return;
    }
    for (size_t i = 0; i < o->z->n; i++) {
        buf_f64(b, o->z->v[i]->score);
        buf_str(b, o->z->v[i]->m, o->z->v[i]->he.n);
    }
}

typedef struct ckitem {
    const char *key;
    int type; /* 0: delete the row */
    int64_t exp;
    size_t off, len;
} ckitem;

static int ck_write(lstore *st, const ckitem *it, size_t n, const buf *b)
{
    sqlite3_stmt *put = NULL, *del = NULL;
    int rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (!rc)
        rc = sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO kv_data (key, type, expires_at, val) VALUES (?1, ?2, ?3, ?4)",
                                -1, &put, NULL);
    if (!rc)
        rc = sqlite3_prepare_v2(st->db, "DELETE FROM kv_data WHERE key = ?1", -1, &del, NULL);
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_stmt *q = it[i].type ? put : del;
        sqlite3_bind_blob64(q, 1, it[i].key, strlen(it[i].key), SQLITE_STATIC);
        if (it[i].type) {
            sqlite3_bind_int(q, 2, it[i].type);
            sqlite3_bind_int64(q, 3, it[i].exp);
            sqlite3_bind_blob64(q, 4, b->p ? b->p + it[i].off : "", it[i].len, SQLITE_STATIC);
        }
        int s = sqlite3_step(q);
        rc = s == SQLITE_DONE ? 0 : s;
        sqlite3_reset(q);
    }
    sqlite3_finalize(put);
    sqlite3_finalize(del);
    if (!rc)
        rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (rc) {
        log_warn("kv: checkpoint of %s: %s", st->path, sqlite3_errmsg(st->db));
        if (!sqlite3_get_autocommit(st->db))
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* Deletes the folded log rows up to `upto`, about DROP_CHUNK_BYTES per
 * transaction: freeing a fan-out's megabyte rows costs milliseconds per
 * megabyte (measured: 220 ms for 64 MB in one statement, every writer waiting
 * for dbmu meanwhile), so writers get the connection back in between. */
static int drop_folded(lstore *st, int64_t upto)
{
    sqlite3_stmt *sel = NULL, *del = NULL;
    int rc = 0;
    for (bool more = true; more && !rc;) {
        pthread_mutex_lock(&st->dbmu);
        if (!sel && ((rc = sqlite3_prepare_v2(st->db, "SELECT seq, length(rec) FROM kv_log WHERE seq <= ?1 ORDER BY seq",
                                              -1, &sel, NULL)) ||
                     (rc = sqlite3_prepare_v2(st->db, "DELETE FROM kv_log WHERE seq <= ?1", -1, &del, NULL)))) {
            pthread_mutex_unlock(&st->dbmu);
            break;
        }
        int64_t cut = -1;
        uint64_t bytes = 0;
        int rows = 0, s;
        sqlite3_bind_int64(sel, 1, upto);
        while ((s = sqlite3_step(sel)) == SQLITE_ROW) {
            cut = sqlite3_column_int64(sel, 0);
            bytes += (uint64_t)sqlite3_column_int64(sel, 1);
            if (bytes >= DROP_CHUNK_BYTES || ++rows >= DROP_CHUNK_ROWS)
                break;
        }
        sqlite3_reset(sel);
        if (s != SQLITE_ROW && s != SQLITE_DONE)
            rc = s;
        more = cut >= 0;
        if (!rc && more) {
            sqlite3_bind_int64(del, 1, cut);
            s = sqlite3_step(del);
            sqlite3_reset(del);
            rc = s == SQLITE_DONE ? 0 : s;
        }
        if (rc)
            log_warn("kv: checkpoint of %s: deleting the folded log: %s", st->path, sqlite3_errmsg(st->db));
        pthread_mutex_unlock(&st->dbmu);
    }
    pthread_mutex_lock(&st->dbmu);
    sqlite3_finalize(sel);
    sqlite3_finalize(del);
    pthread_mutex_unlock(&st->dbmu);
    return rc;
}

/* Folds the log into kv_data: every key changed since the last checkpoint is
 * written as it is now, a chunk at a time, then the log rows up to the start
 * of this checkpoint go. Writers continue meanwhile (see the top). */
static void checkpoint(lstore *st)
{
    pthread_mutex_lock(&st->wmu);
    pthread_rwlock_wrlock(&st->rw);
    char **keys = st->dirty;
    size_t nkeys = st->ndirty;
    st->dirty = NULL;
    st->ndirty = st->capdirty = 0;
    st->epoch++;
    if (st->epoch == 0)
        st->epoch = 1;
    pthread_mutex_lock(&st->dbmu);
    int64_t upto = st->last_seq;
    uint64_t folded = st->log_bytes;
    pthread_mutex_unlock(&st->dbmu);
    pthread_rwlock_unlock(&st->rw);
    pthread_mutex_unlock(&st->wmu);

    qsort(keys, nkeys, sizeof *keys, cmp_str);
    size_t uniq = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (uniq && strcmp(keys[uniq - 1], keys[i]) == 0)
            free(keys[i]);
        else
            keys[uniq++] = keys[i];
    }
    nkeys = uniq;

    buf b = {0};
    ckitem *it = xmalloc(CKPT_CHUNK_KEYS * sizeof *it);
    int rc = 0;
    uint64_t folded_bytes = 0;
    for (size_t i = 0; i < nkeys && !rc;) {
        size_t n = 0;
        b.n = 0;
        int64_t now = time_now_ms();
        pthread_rwlock_rdlock(&st->rw);
        for (; i < nkeys && n < CKPT_CHUNK_KEYS && b.n < CKPT_CHUNK_BYTES; i++, n++) {
            size_t kl = strlen(keys[i]);
            const kobj *o = kvl_find(st, keys[i], kl, kvl_hash(keys[i], kl));
            it[n] = (ckitem){.key = keys[i], .off = b.n};
            if (o && !kvl_expired(o, now)) {
                it[n].type = o->type;
                it[n].exp = o->exp;
                serialize(o, &b);
                it[n].len = b.n - it[n].off;
            }
        }
        pthread_rwlock_unlock(&st->rw);
        pthread_mutex_lock(&st->dbmu);
        rc = ck_write(st, it, n, &b);
        pthread_mutex_unlock(&st->dbmu);
        folded_bytes += b.n;
        wal_checkpoint(st);
    }
    free(it);
    free(b.p);

    if (!rc && !(rc = drop_folded(st, upto))) {
        pthread_mutex_lock(&st->dbmu);
        st->log_bytes -= folded;
        pthread_mutex_unlock(&st->dbmu);
        st->last_fold_bytes = folded_bytes;
    }
    if (rc) {
        /* Try again at the next checkpoint: the keys go back to the list. */
        pthread_mutex_lock(&st->wmu);
        pthread_rwlock_wrlock(&st->rw);
        for (size_t i = 0; i < nkeys; i++) {
            if (st->ndirty == st->capdirty) {
                st->capdirty = st->capdirty ? st->capdirty * 2 : 64;
                st->dirty = xrealloc(st->dirty, st->capdirty * sizeof *st->dirty);
            }
            st->dirty[st->ndirty++] = keys[i];
        }
        pthread_rwlock_unlock(&st->rw);
        pthread_mutex_unlock(&st->wmu);
        free(keys);
    } else {
        for (size_t i = 0; i < nkeys; i++)
            free(keys[i]);
        free(keys);
    }
    st->last_ckpt_ms = time_now_ms();
}

static bool checkpoint_due(lstore *st, int64_t now)
{
    pthread_mutex_lock(&st->dbmu);
    uint64_t bytes = st->log_bytes;
    pthread_mutex_unlock(&st->dbmu);
    /* Folding rewrites every changed key whole: wait until the log is at least
     * as large as what the last fold wrote, so that rewriting stays at most
     * about as much as the log itself (Redis rewrites its AOF at 100% growth). */
    if (bytes >= st->ckpt_bytes && bytes >= st->last_fold_bytes)
        return true;
    if (now - st->last_ckpt_ms < st->ckpt_ms)
        return false;
    /* Swept keys change nothing in the log but still have rows to delete. */
    pthread_rwlock_rdlock(&st->rw);
    bool dirty = st->ndirty > 0;
    pthread_rwlock_unlock(&st->rw);
    return bytes > 0 || dirty;
}

static void *maint(void *arg)
{
    lstore *st = arg;
    pthread_mutex_lock(&st->mmu);
    while (!st->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&st->mcv, &st->mmu, &ts);
        if (st->stop)
            break;
        pthread_mutex_unlock(&st->mmu);
        sweep(st);
        if (checkpoint_due(st, time_now_ms()))
            checkpoint(st);
        wal_checkpoint(st);
        pthread_mutex_lock(&st->mmu);
    }
    pthread_mutex_unlock(&st->mmu);
    return NULL;
}

/* ---- open, close ---------------------------------------------------------------------------- */

int kvl_log_open(lstore *st, pl_error *err)
{
    int rc;
    if ((rc = db_open(st, &st->db, err)) || (rc = schema(st, err)) || (rc = load_data(st, err)) ||
        (rc = db_open(st, &st->ckdb, err)))
        return rc;
    rc = sqlite3_prepare_v3(st->db, "INSERT INTO kv_log (rec) VALUES (?1)", -1, SQLITE_PREPARE_PERSISTENT,
                            &st->st_log, NULL);
    if (rc)
        return map_sqlite(st->db, rc, err, "prepare");
    sqlite3_wal_hook(st->db, wal_hook, st);
    return 0;
}

int kvl_bg_start(lstore *st, pl_error *err)
{
    st->last_ckpt_ms = time_now_ms();
    int rc = pthread_create(&st->th, NULL, maint, st);
    if (rc)
        return err_set(err, PL_EINTERNAL, NULL, "kv: cannot start the background thread: %s", strerror(rc));
    return 0;
}

void kvl_bg_stop(lstore *st)
{
    pthread_mutex_lock(&st->mmu);
    st->stop = true;
    pthread_cond_signal(&st->mcv);
    pthread_mutex_unlock(&st->mmu);
    pthread_join(st->th, NULL);
}

void kvl_log_finish(lstore *st)
{
    /* Fold the log so that the next open loads rows instead of replaying. */
    if (st->log_bytes)
        checkpoint(st);
    sqlite3_wal_checkpoint_v2(st->ckdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

void kvl_log_free(lstore *st)
{
    if (st->ckdb)
        sqlite3_close(st->ckdb);
    sqlite3_finalize(st->st_log);
    if (st->db)
        sqlite3_close(st->db);
}

int kvl_log_ping(lstore *st, pl_error *err)
{
    pthread_mutex_lock(&st->dbmu);
    int rc = sqlite3_exec(st->db, "SELECT 1", NULL, NULL, NULL);
    if (rc)
        rc = map_sqlite(st->db, rc, err, "ping");
    pthread_mutex_unlock(&st->dbmu);
    return rc;
}
