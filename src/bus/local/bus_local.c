/*
 * bus_local.c - the embedded event bus: a durable log in SQLite (WAL).
 *
 * <data>/bus.db holds the log (events), per-group partition cursors with
 * ownership leases and the retry state of the one message a partition may be
 * waiting to redeliver, the dead letters and the re-drive queue.
 *
 * Wake-ups: a publish in this process broadcasts a condition variable;
 * publishes by other processes are seen through inotify on the WAL file. A
 * waiting consumer therefore sees a committed event at once, without a poll
 * interval (a 250 ms timed wait remains as a safety net).
 *
 * Cursor writes are batched: acks update memory and are flushed at the next
 * fetch (or on close). A crash can therefore redeliver a few settled
 * messages; consumers dedupe with their inbox, as at-least-once requires.
 */
#include "bus/bus.h"
#include "core/fsutil.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PARTS 64

/* The statements of the hot paths (publish, fetch, flush) stay prepared for
 * the life of their connection; the rest are prepared per use. */
enum { Q_APPEND, Q_FETCH, Q_REDRIVE, Q_FLUSH, NQ };
static const char *const hot_sql[NQ] = {
    [Q_APPEND] = "INSERT OR IGNORE INTO events (id, type, phash, time_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_FETCH] = "SELECT seq, id, type, phash, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    [Q_REDRIVE] = "SELECT r.id, e.seq, e.id, e.type, e.body, e.phash FROM redrive r JOIN events e ON e.seq = r.seq"
                  " WHERE r.grp = ?1 ORDER BY r.id LIMIT ?2",
    [Q_FLUSH] = "UPDATE cursors SET acked = ?3 WHERE grp = ?1 AND part = ?2 AND owner = ?4",
};

typedef struct hot {
    sqlite3_stmt *st[NQ];
} hot;

typedef struct lbus {
    char path[PATH_MAX];
    char dir[PATH_MAX];
    bus_options o;
    sqlite3 *w;                 /* publisher connection, under wlock */
    hot wq;                     /* its statements */
    pthread_mutex_t wlock;
    pthread_mutex_t lock;       /* guards version */
    pthread_cond_t changed;
    uint64_t version;           /* bumped on every commit seen */
    pthread_t watcher;
    int inotify_fd;
    atomic_bool stop;
} lbus;

typedef struct part {
    bool owned;
    uint64_t acked, fetched, last_delivered, retry_seq;
    int retry_deliveries;
    int64_t blocked_until;
    bool dirty;
} part;

typedef struct lsub {
    lbus *b;
    sqlite3 *c;
    hot q;                      /* c's statements */
    char group[96];
    char owner[40];
    char **patterns;
    int max_deliver;
    int64_t lease_ms, last_lease;
    bool hungry;                /* holds fewer partitions than its share: renews leases often */
    int nparts;
    int64_t generation;
    part p[MAX_PARTS];
    arena *a;                   /* strings of the last fetch */
} lsub;

static const char schema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
    " type TEXT NOT NULL, phash INTEGER NOT NULL, time_ms INTEGER NOT NULL, body TEXT NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (id);"
    "CREATE TABLE IF NOT EXISTS groups (grp TEXT PRIMARY KEY, partitions INTEGER NOT NULL,"
    " generation INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS cursors (grp TEXT NOT NULL, part INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0,"
    " owner TEXT, lease_until INTEGER NOT NULL DEFAULT 0, retry_seq INTEGER, retry_deliveries INTEGER,"
    " retry_after INTEGER, retry_error TEXT, PRIMARY KEY (grp, part));"
    "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, seq INTEGER NOT NULL,"
    " event_id TEXT NOT NULL, type TEXT NOT NULL, deliveries INTEGER NOT NULL, error TEXT NOT NULL,"
    " dead_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS redrive (id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL,"
    " seq INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS members (grp TEXT NOT NULL, owner TEXT NOT NULL, alive_until INTEGER NOT NULL,"
    " PRIMARY KEY (grp, owner));";

/* ---- small SQLite helpers ------------------------------------------------------ */

static int sq_err(sqlite3 *c, int rc, pl_error *err, const char *what)
{
    int code = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? PL_EUNAVAILABLE : PL_EIO;
    return err_set(err, code, NULL, "bus log %s: %s", what, c ? sqlite3_errmsg(c) : sqlite3_errstr(rc));
}

static int sq_exec(sqlite3 *c, const char *sql, pl_error *err)
{
    int rc = sqlite3_exec(c, sql, NULL, NULL, NULL);
    return rc ? sq_err(c, rc, err, sql) : 0;
}

static int sq_prepare(sqlite3 *c, const char *sql, sqlite3_stmt **st, pl_error *err)
{
    int rc = sqlite3_prepare_v2(c, sql, -1, st, NULL);
    return rc ? sq_err(c, rc, err, "prepare") : 0;
}

/* A hot statement of connection c, ready to bind; give it back with hot_put. */
static int hot_get(sqlite3 *c, hot *h, int q, sqlite3_stmt **st, pl_error *err)
{
    int rc = h->st[q] ? SQLITE_OK : sqlite3_prepare_v3(c, hot_sql[q], -1, SQLITE_PREPARE_PERSISTENT, &h->st[q], NULL);
    *st = h->st[q];
    return rc ? sq_err(c, rc, err, "prepare") : 0;
}

/* Ends a use: the statement's read or write is over and its bindings are dropped. */
static void hot_put(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void hot_free(hot *h) /* before the connection closes */
{
    for (int i = 0; i < NQ; i++) {
        sqlite3_finalize(h->st[i]);
        h->st[i] = NULL;
    }
}

/* Runs a statement to completion; binds are done by the caller. */
static int sq_done(sqlite3 *c, sqlite3_stmt *st, pl_error *err)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    int out = rc == SQLITE_DONE ? 0 : sq_err(c, rc, err, "step");
    sqlite3_finalize(st);
    return out;
}

static int sq_open(const char *path, sqlite3 **out, pl_error *err)
{
    sqlite3 *c;
    int rc = sqlite3_open_v2(path, &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc) {
        rc = sq_err(c, rc, err, "open");
        sqlite3_close(c);
        return rc;
    }
    sqlite3_busy_timeout(c, 5000);
    if ((rc = sq_exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err))) {
        sqlite3_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- wake-ups ------------------------------------------------------------------------ */

static void bump(lbus *b)
{
    pthread_mutex_lock(&b->lock);
    b->version++;
    pthread_cond_broadcast(&b->changed);
    pthread_mutex_unlock(&b->lock);
}

static uint64_t version_now(lbus *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t v = b->version;
    pthread_mutex_unlock(&b->lock);
    return v;
}

/* Waits until the version moves past `seen` or timeout_ms passes. */
static void wait_change(lbus *b, uint64_t seen, int timeout_ms)
{
    if (timeout_ms <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)timeout_ms * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&b->lock);
    while (b->version == seen && !atomic_load(&b->stop))
        if (pthread_cond_timedwait(&b->changed, &b->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&b->lock);
}

static void retention(lbus *b)
{
    int64_t cutoff = time_now_ms() - b->o.retention_age_ms;
    pthread_mutex_lock(&b->wlock);
    sqlite3_stmt *st;
    if (!sq_prepare(b->w,
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT 5000)"
                    " AND (time_ms < ?1 OR seq <= (SELECT max(seq) FROM events) - ?2)",
                    &st, NULL)) {
        sqlite3_bind_int64(st, 1, cutoff);
        sqlite3_bind_int64(st, 2, b->o.retention_max);
        if (!sq_done(b->w, st, NULL) && sqlite3_changes(b->w) > 0)
            log_with(LOG_INFO, "bus retention", LF_INT("deleted", sqlite3_changes(b->w)));
    }
    pthread_mutex_unlock(&b->wlock);
}

/* Sees commits of other processes (inotify on the WAL) and runs retention. */
static void *watch(void *arg)
{
    lbus *b = arg;
    int64_t next_retention = time_now_ms() + 1000;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (!atomic_load(&b->stop)) {
        struct pollfd pfd = {.fd = b->inotify_fd, .events = POLLIN};
        int n = b->inotify_fd >= 0 ? poll(&pfd, 1, 200) : (usleep(200000), 0);
        if (n > 0) {
            ssize_t len = read(b->inotify_fd, buf, sizeof buf);
            bool wal = false;
            for (char *p = buf; len > 0 && p < buf + len;) {
                struct inotify_event *e = (struct inotify_event *)p;
                if (!e->len || strcmp(e->name, "bus.db-wal") == 0) /* the WAL's own watch, or the directory's */
                    wal = true;
                p += sizeof *e + e->len;
            }
            if (wal)
                bump(b);
        } else {
            bump(b); /* safety net for missed notifications */
        }
        if (time_now_ms() >= next_retention) {
            retention(b);
            next_retention = time_now_ms() + 60000;
        }
    }
    return NULL;
}

/* ---- open / close ---------------------------------------------------------------------- */

static int x_open(const char *url, const bus_options *o, void **out, pl_error *err)
{
    (void)url;
    lbus *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    b->o = *o;
    if (b->o.partitions <= 0)
        b->o.partitions = 4;
    if (b->o.partitions > MAX_PARTS)
        b->o.partitions = MAX_PARTS;
    if (b->o.retention_age_ms <= 0)
        b->o.retention_age_ms = 7LL * 86400000;
    if (b->o.retention_max <= 0)
        b->o.retention_max = 10000000;
    snprintf(b->dir, sizeof b->dir, "%s", o->data_dir);
    snprintf(b->path, sizeof b->path, "%s/bus.db", o->data_dir);
    if (fs_mkdir_p(b->dir)) {
        free(b);
        return err_set(err, PL_EIO, "data", "cannot create %s: %s", o->data_dir, strerror(errno));
    }
    int rc = sq_open(b->path, &b->w, err);
    if (!rc && (rc = sq_exec(b->w, schema, err)))
        sqlite3_close(b->w);
    if (rc) {
        free(b);
        return rc;
    }
    pthread_mutex_init(&b->wlock, NULL);
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&b->changed, &ca);
    pthread_condattr_destroy(&ca);
    /* Watch the WAL itself (it exists from now on: b->w keeps it open), so that
     * writes to the other files of the data directory (the service stores) cost
     * nothing here; the directory is the fallback. */
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", b->path);
    b->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (b->inotify_fd >= 0 && inotify_add_watch(b->inotify_fd, wal, IN_MODIFY) < 0 &&
        inotify_add_watch(b->inotify_fd, b->dir, IN_MODIFY | IN_CREATE) < 0) {
        close(b->inotify_fd);
        b->inotify_fd = -1;
    }
    pthread_create(&b->watcher, NULL, watch, b);
    *out = b;
    return 0;
}

static void x_close(void *h)
{
    lbus *b = h;
    atomic_store(&b->stop, true);
    bump(b);
    pthread_join(b->watcher, NULL);
    if (b->inotify_fd >= 0)
        close(b->inotify_fd);
    hot_free(&b->wq);
    sqlite3_close(b->w);
    pthread_mutex_destroy(&b->wlock);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->changed);
    free(b);
}

static int x_ping(void *h, pl_error *err)
{
    lbus *b = h;
    pthread_mutex_lock(&b->wlock);
    int rc = sq_exec(b->w, "SELECT 1", err);
    pthread_mutex_unlock(&b->wlock);
    return rc;
}

/* ---- publish --------------------------------------------------------------------------- */

/* Appends within the caller's write transaction on connection c (statements h). */
static int append(sqlite3 *c, hot *h, const bus_out *m, size_t n, pl_error *err)
{
    sqlite3_stmt *st;
    int rc = hot_get(c, h, Q_APPEND, &st, err);
    if (rc)
        return rc;
    int64_t now = time_now_ms();
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_bind_text(st, 1, m[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m[i].type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, ce_partition_hash(m[i].partitionkey));
        sqlite3_bind_int64(st, 4, now);
        sqlite3_bind_text(st, 5, m[i].body, (int)m[i].body_len, SQLITE_STATIC);
        int s = sqlite3_step(st);
        if (s != SQLITE_DONE)
            rc = sq_err(c, s, err, "append");
        sqlite3_reset(st);
    }
    hot_put(st);
    return rc;
}

static int x_publish(void *h, const bus_out *m, size_t n, pl_error *err)
{
    lbus *b = h;
    pthread_mutex_lock(&b->wlock);
    int rc = sq_exec(b->w, "BEGIN IMMEDIATE", err);
    if (!rc) {
        rc = append(b->w, &b->wq, m, n, err);
        if (!rc)
            rc = sq_exec(b->w, "COMMIT", err);
        if (rc)
            sqlite3_exec(b->w, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&b->wlock);
    if (!rc)
        bump(b);
    return rc;
}

/* ---- subscriptions: partitions, leases, cursors ------------------------------------ */

static bool matches(const lsub *s, const char *type)
{
    for (char **p = s->patterns; *p; p++)
        if (ce_type_matches(*p, type))
            return true;
    return false;
}

/* Writes the cursors of owned partitions that changed since the last flush. */
static int flush(lsub *s, pl_error *err)
{
    bool any = false;
    for (int i = 0; i < s->nparts; i++)
        any |= s->p[i].owned && s->p[i].dirty;
    if (!any)
        return 0;
    int rc = sq_exec(s->c, "BEGIN IMMEDIATE", err);
    if (rc)
        return rc;
    sqlite3_stmt *st;
    if (!(rc = hot_get(s->c, &s->q, Q_FLUSH, &st, err))) {
        for (int i = 0; i < s->nparts && !rc; i++) {
            if (!s->p[i].owned || !s->p[i].dirty)
                continue;
            sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 2, i);
            sqlite3_bind_int64(st, 3, (int64_t)s->p[i].acked);
            sqlite3_bind_text(st, 4, s->owner, -1, SQLITE_STATIC);
            int r = sqlite3_step(st);
            if (r != SQLITE_DONE)
                rc = sq_err(s->c, r, err, "flush");
            sqlite3_reset(st);
            s->p[i].dirty = false;
        }
        hot_put(st);
    }
    if (!rc)
        rc = sq_exec(s->c, "COMMIT", err);
    if (rc)
        sqlite3_exec(s->c, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static void load_part(lsub *s, int i, sqlite3_stmt *row)
{
    part *p = &s->p[i];
    p->owned = true;
    p->acked = p->fetched = (uint64_t)sqlite3_column_int64(row, 1);
    p->last_delivered = 0;
    p->dirty = false;
    p->retry_seq = (uint64_t)sqlite3_column_int64(row, 4);
    p->retry_deliveries = sqlite3_column_int(row, 5);
    p->blocked_until = sqlite3_column_int64(row, 6);
    if (p->retry_seq && p->retry_seq - 1 < p->fetched) /* redeliver from the waiting message */
        p->acked = p->fetched = p->retry_seq - 1;
}

/* Our heartbeat in the group's membership (inside leases()' transaction).
 * A member counts for two thirds of a lease (two renewal periods): a
 * crashed instance stops counting before its partition leases expire, so
 * the survivors' shares already cover those partitions when they come
 * free. Counting only decides shares; the leases alone decide who may
 * deliver a partition. Rows of members gone silent are removed. */
static int member_beat(lsub *s, int64_t now, pl_error *err)
{
    sqlite3_stmt *st;
    int rc = sq_prepare(s->c,
                        "INSERT INTO members (grp, owner, alive_until) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (grp, owner) DO UPDATE SET alive_until = excluded.alive_until",
                        &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now + s->lease_ms * 2 / 3);
    if ((rc = sq_done(s->c, st, err)) ||
        (rc = sq_prepare(s->c, "DELETE FROM members WHERE grp = ?1 AND alive_until <= ?2", &st, err)))
        return rc;
    sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    return sq_done(s->c, st, err);
}

/* Leaves the group: the others count one member less at their next renewal. */
static void member_leave(lsub *s)
{
    sqlite3_stmt *st;
    if (sq_prepare(s->c, "DELETE FROM members WHERE grp = ?1 AND owner = ?2", &st, NULL))
        return;
    sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
    sq_done(s->c, st, NULL);
}

/* Renews our leases, takes free or expired partitions up to a fair share,
 * gives back extras, and reloads everything when the group was reset. */
static int leases(lsub *s, pl_error *err)
{
    int64_t now = time_now_ms();
    int rc = flush(s, err);
    if (rc || (rc = sq_exec(s->c, "BEGIN IMMEDIATE", err)))
        return rc;
    sqlite3_stmt *st = NULL;
    int64_t gen = 0;
    if (!(rc = sq_prepare(s->c, "SELECT generation FROM groups WHERE grp = ?1", &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            gen = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (!rc && gen != s->generation) { /* reset (replay): drop what we hold in memory */
        for (int i = 0; i < s->nparts; i++)
            s->p[i].owned = false;
        s->generation = gen;
    }
    /* Live members, counting us, each with a heartbeat row of its own. Counting
     * only the holders of leases (as before) never counted an instance that
     * holds nothing yet: a second instance of a group never got a share, and
     * the first kept every partition for as long as it lived. */
    int members = 0, rank = 0;
    if (!rc)
        rc = member_beat(s, now, err);
    if (!rc && !(rc = sq_prepare(s->c, "SELECT owner FROM members WHERE grp = ?1 AND alive_until > ?2 ORDER BY owner",
                                 &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (strcmp((const char *)sqlite3_column_text(st, 0), s->owner) == 0)
                rank = members;
            members++;
        }
        sqlite3_finalize(st);
    }
    if (members < 1)
        members = 1;
    /* Shares add up to the partition count exactly (rounding every share up
     * would starve the last member, e.g. 2+2+0 of 4 for 3 members): the
     * first nparts % members members by id take one more. */
    int share = s->nparts / members + (rank < s->nparts % members ? 1 : 0), have = 0;
    if (!rc && !(rc = sq_prepare(s->c,
                                 "SELECT part, acked, owner, lease_until, retry_seq, retry_deliveries, retry_after"
                                 " FROM cursors WHERE grp = ?1 ORDER BY part",
                                 &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        bool mine[MAX_PARTS] = {0}, free_[MAX_PARTS] = {0};
        while (sqlite3_step(st) == SQLITE_ROW) {
            int i = sqlite3_column_int(st, 0);
            if (i < 0 || i >= s->nparts)
                continue;
            const char *owner = (const char *)sqlite3_column_text(st, 2);
            bool ours = owner && strcmp(owner, s->owner) == 0 && sqlite3_column_int64(st, 3) > now;
            mine[i] = ours;
            free_[i] = !ours && (!owner || sqlite3_column_int64(st, 3) <= now);
            if (ours) {
                have++;
                if (!s->p[i].owned)
                    load_part(s, i, st);
            } else if (free_[i] && have < share) {
                /* claimed below; load its state now */
                load_part(s, i, st);
                s->p[i].owned = false;
            } else {
                s->p[i].owned = false;
            }
        }
        sqlite3_finalize(st);
        sqlite3_stmt *up;
        if (!(rc = sq_prepare(s->c, "UPDATE cursors SET owner = ?3, lease_until = ?4 WHERE grp = ?1 AND part = ?2",
                              &up, err))) {
            for (int i = 0; i < s->nparts && !rc; i++) {
                bool keep = mine[i] && have <= share, take = !mine[i] && free_[i] && have < share;
                bool give = mine[i] && have > share;
                if (!keep && !take && !give)
                    continue;
                if (take)
                    have++;
                if (give)
                    have--;
                s->p[i].owned = keep || take;
                sqlite3_bind_text(up, 1, s->group, -1, SQLITE_STATIC);
                sqlite3_bind_int(up, 2, i);
                if (give)
                    sqlite3_bind_null(up, 3);
                else
                    sqlite3_bind_text(up, 3, s->owner, -1, SQLITE_STATIC);
                sqlite3_bind_int64(up, 4, give ? 0 : now + s->lease_ms);
                int r = sqlite3_step(up);
                if (r != SQLITE_DONE)
                    rc = sq_err(s->c, r, err, "lease");
                sqlite3_reset(up);
            }
            sqlite3_finalize(up);
        }
    }
    if (!rc)
        rc = sq_exec(s->c, "COMMIT", err);
    if (rc)
        sqlite3_exec(s->c, "ROLLBACK", NULL, NULL, NULL);
    s->hungry = !rc && have < share;
    s->last_lease = now;
    return rc;
}

/* How often leases() runs: every third of the lease; every 250 ms while
 * this instance waits for the others to give back its share (they do at
 * their own next renewal), so that a rebalance takes one renewal period. */
static int64_t lease_every(const lsub *s)
{
    int64_t t = s->lease_ms / 3;
    return s->hungry && t > 250 ? 250 : t;
}

static int x_subscribe(void *h, const bus_sub_options *o, void **out, pl_error *err)
{
    lbus *b = h;
    lsub *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->b = b;
    snprintf(s->group, sizeof s->group, "%s", o->group);
    uuid7_new(s->owner);
    s->max_deliver = o->max_deliver > 0 ? o->max_deliver : 5;
    s->lease_ms = o->lease_ms > 0 ? o->lease_ms : 10000;
    size_t np = 0;
    while (o->patterns[np])
        np++;
    s->patterns = calloc(np + 1, sizeof *s->patterns);
    for (size_t i = 0; i < np; i++)
        s->patterns[i] = strdup(o->patterns[i]);
    s->a = arena_create(65536);
    s->generation = -1;
    int rc = sq_open(b->path, &s->c, err);
    if (rc)
        goto fail;
    /* The group and its partition rows exist once; the partition count is fixed then. */
    if ((rc = sq_exec(s->c, "BEGIN IMMEDIATE", err)))
        goto fail;
    sqlite3_stmt *st;
    if (!(rc = sq_prepare(s->c, "INSERT OR IGNORE INTO groups (grp, partitions) VALUES (?1, ?2)", &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, b->o.partitions);
        rc = sq_done(s->c, st, err);
    }
    if (!rc && !(rc = sq_prepare(s->c, "SELECT partitions FROM groups WHERE grp = ?1", &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        s->nparts = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : b->o.partitions;
        sqlite3_finalize(st);
        if (s->nparts < 1 || s->nparts > MAX_PARTS)
            s->nparts = b->o.partitions;
    }
    if (!rc && !(rc = sq_prepare(s->c, "INSERT OR IGNORE INTO cursors (grp, part) VALUES (?1, ?2)", &st, err))) {
        for (int i = 0; i < s->nparts && !rc; i++) {
            sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 2, i);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = sq_err(s->c, SQLITE_ERROR, err, "cursor rows");
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
    }
    rc = rc ? rc : sq_exec(s->c, "COMMIT", err);
    if (rc) {
        sqlite3_exec(s->c, "ROLLBACK", NULL, NULL, NULL);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    sqlite3_close(s->c);
    for (char **p = s->patterns; p && *p; p++)
        free(*p);
    free(s->patterns);
    arena_destroy(s->a);
    free(s);
    return rc;
}

static void x_unsubscribe(void *h)
{
    lsub *s = h;
    flush(s, NULL);
    member_leave(s);
    /* give the leases back so another instance takes over at once */
    sqlite3_stmt *st;
    if (!sq_prepare(s->c, "UPDATE cursors SET owner = NULL, lease_until = 0 WHERE grp = ?1 AND owner = ?2", &st,
                    NULL)) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
        sq_done(s->c, st, NULL);
    }
    hot_free(&s->q);
    sqlite3_close(s->c);
    for (char **p = s->patterns; *p; p++)
        free(*p);
    free(s->patterns);
    arena_destroy(s->a);
    free(s);
}

/* ---- fetch and settle -------------------------------------------------------------------- */

static int fetch_redrive(lsub *s, bus_msg *out, size_t max, size_t *n, pl_error *err)
{
    sqlite3_stmt *st;
    int rc = hot_get(s->c, &s->q, Q_REDRIVE, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)max);
    while (*n < max && sqlite3_step(st) == SQLITE_ROW) {
        bus_msg *m = &out[(*n)++];
        m->redrive_id = sqlite3_column_int64(st, 0);
        m->seq = (uint64_t)sqlite3_column_int64(st, 1);
        m->id = arena_strdup(s->a, (const char *)sqlite3_column_text(st, 2));
        m->type = arena_strdup(s->a, (const char *)sqlite3_column_text(st, 3));
        m->body_len = (size_t)sqlite3_column_bytes(st, 4);
        m->body = arena_strndup(s->a, (const char *)sqlite3_column_text(st, 4), m->body_len);
        m->deliveries = 1;
        m->partition = (int)((uint32_t)sqlite3_column_int64(st, 5) % (uint32_t)s->nparts);
    }
    hot_put(st);
    return 0;
}

/* One pass over the log for the partitions that may deliver now. */
static int fetch_log(lsub *s, bus_msg *out, size_t max, size_t *n, int64_t now, int64_t *next_due, pl_error *err)
{
    bool ready[MAX_PARTS];
    uint64_t low = UINT64_MAX;
    for (int i = 0; i < s->nparts; i++) {
        part *p = &s->p[i];
        ready[i] = p->owned && p->blocked_until <= now;
        if (p->owned && p->blocked_until > now && p->blocked_until < *next_due)
            *next_due = p->blocked_until;
        if (ready[i] && p->fetched < low)
            low = p->fetched;
    }
    if (low == UINT64_MAX)
        return 0;
    sqlite3_stmt *st;
    int rc = hot_get(s->c, &s->q, Q_FETCH, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)low);
    sqlite3_bind_int64(st, 2, (int64_t)(max * 4 < 4096 ? max * 4 : 4096));
    int r = SQLITE_ROW;
    uint64_t last_seen = low;
    while (*n < max && (r = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        last_seen = seq;
        int pi = (int)((uint32_t)sqlite3_column_int64(st, 3) % (uint32_t)s->nparts);
        part *p = &s->p[pi];
        if (!ready[pi] || seq <= p->fetched)
            continue;
        const char *type = (const char *)sqlite3_column_text(st, 2);
        p->fetched = seq;
        if (!matches(s, type)) {
            if (!p->last_delivered || p->last_delivered <= p->acked) { /* nothing outstanding: skip is settled */
                p->acked = seq;
                p->dirty = true;
            }
            continue;
        }
        bus_msg *m = &out[(*n)++];
        m->seq = seq;
        m->redrive_id = 0;
        m->id = arena_strdup(s->a, (const char *)sqlite3_column_text(st, 1));
        m->type = arena_strdup(s->a, type);
        m->body_len = (size_t)sqlite3_column_bytes(st, 4);
        m->body = arena_strndup(s->a, (const char *)sqlite3_column_text(st, 4), m->body_len);
        m->partition = pi;
        m->deliveries = seq == p->retry_seq ? p->retry_deliveries + 1 : 1;
        p->last_delivered = seq;
    }
    hot_put(st);
    if (r == SQLITE_DONE) {
        /* Reached the head: partitions with no events up to here are caught up too. */
        for (int i = 0; i < s->nparts; i++) {
            part *p = &s->p[i];
            if (!ready[i] || p->fetched >= last_seen)
                continue;
            p->fetched = last_seen;
            if (!p->last_delivered || p->last_delivered <= p->acked) {
                p->acked = last_seen;
                p->dirty = true;
            }
        }
    } else if (r != SQLITE_ROW) {
        return sq_err(s->c, r, err, "fetch");
    }
    return 0;
}

static int x_fetch(void *h, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err)
{
    lsub *s = h;
    *n = 0;
    int64_t deadline = time_now_ms() + timeout_ms;
    for (;;) {
        uint64_t seen = version_now(s->b);
        int64_t now = time_now_ms();
        arena_reset(s->a);
        int rc = now - s->last_lease >= lease_every(s) ? leases(s, err) : flush(s, err);
        if (rc)
            return rc;
        if ((rc = fetch_redrive(s, out, max, n, err)) || *n)
            return rc;
        int64_t next_due = INT64_MAX;
        bool progressed = false;
        do { /* passes that only skip other types still move the cursors: go on */
            uint64_t before = 0;
            for (int i = 0; i < s->nparts; i++)
                before += s->p[i].fetched;
            if ((rc = fetch_log(s, out, max, n, now, &next_due, err)))
                return rc;
            uint64_t after = 0;
            for (int i = 0; i < s->nparts; i++)
                after += s->p[i].fetched;
            progressed = after != before;
        } while (!*n && progressed);
        if (*n)
            return 0;
        now = time_now_ms();
        if (now >= deadline)
            return 0;
        int64_t wait = deadline - now;
        if (next_due != INT64_MAX && next_due - now < wait)
            wait = next_due - now > 0 ? next_due - now : 1;
        int64_t renew = lease_every(s) - (now - s->last_lease);
        if (renew < wait)
            wait = renew > 0 ? renew : 1;
        wait_change(s->b, seen, wait > 250 ? 250 : (int)wait);
    }
}

/* A settle call for a message the partition no longer expects is a no-op. */
static part *live_part(lsub *s, const bus_msg *m)
{
    if (m->partition < 0 || m->partition >= s->nparts)
        return NULL;
    part *p = &s->p[m->partition];
    if (!p->owned || m->seq <= p->acked || m->seq > p->fetched)
        return NULL;
    return p;
}

static int delete_redrive(lsub *s, int64_t id, pl_error *err)
{
    sqlite3_stmt *st;
    int rc = sq_prepare(s->c, "DELETE FROM redrive WHERE id = ?1", &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    return sq_done(s->c, st, err);
}

static int x_ack(void *h, const bus_msg *m, pl_error *err)
{
    lsub *s = h;
    if (m->redrive_id)
        return delete_redrive(s, m->redrive_id, err);
    part *p = live_part(s, m);
    if (!p)
        return 0;
    p->acked = m->seq == p->last_delivered ? p->fetched : m->seq;
    p->dirty = true;
    if (m->seq == p->retry_seq) {
        p->retry_seq = 0;
        p->retry_deliveries = 0;
        sqlite3_stmt *st;
        int rc = sq_prepare(s->c,
                            "UPDATE cursors SET acked = ?3, retry_seq = NULL, retry_deliveries = NULL,"
                            " retry_after = NULL, retry_error = NULL WHERE grp = ?1 AND part = ?2",
                            &st, err);
        if (rc)
            return rc;
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, m->partition);
        sqlite3_bind_int64(st, 3, (int64_t)p->acked);
        p->dirty = false;
        return sq_done(s->c, st, err);
    }
    return 0;
}

/* Records a dead letter, publishes "<type>.dlq", and moves the partition past m. */
static int dead_letter(lsub *s, const bus_msg *m, const char *error, pl_error *err)
{
    int64_t now = time_now_ms();
    json_error_t je;
    json_t *orig = json_loadb(m->body, m->body_len, 0, &je);
    cloudevent dlq;
    char dtype[CE_TYPE_MAX + 8];
    snprintf(dtype, sizeof dtype, "%s.dlq", m->type);
    memset(&dlq, 0, sizeof dlq);
    uuid7_new(dlq.id);
    snprintf(dlq.source, sizeof dlq.source, "/pulse/bus");
    snprintf(dlq.type, sizeof dlq.type, "%s", dtype);
    snprintf(dlq.subject, sizeof dlq.subject, "%s", m->id);
    snprintf(dlq.partitionkey, sizeof dlq.partitionkey, "%s", m->id);
    time_rfc3339(now, dlq.time, sizeof dlq.time);
    dlq.data = json_pack("{s:o, s:s, s:i, s:s, s:I}", "event", orig ? orig : json_null(), "error", error ? error : "",
                         "deliveries", m->deliveries, "consumer", s->group, "seq", (json_int_t)m->seq);
    char *body = ce_encode(&dlq);
    ce_clear(&dlq);
    bus_out out = {dlq.id, dtype, dlq.partitionkey, body, strlen(body)};

    int rc = sq_exec(s->c, "BEGIN IMMEDIATE", err);
    sqlite3_stmt *st;
    if (!rc && !(rc = sq_prepare(s->c,
                                 "INSERT INTO dead (grp, seq, event_id, type, deliveries, error, dead_ms)"
                                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                 &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)m->seq);
        sqlite3_bind_text(st, 3, m->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, m->type, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 5, m->deliveries);
        sqlite3_bind_text(st, 6, error ? error : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, now);
        rc = sq_done(s->c, st, err);
    }
    if (!rc)
        rc = append(s->c, &s->q, &out, 1, err);
    if (!rc && !m->redrive_id &&
        !(rc = sq_prepare(s->c,
                          "UPDATE cursors SET acked = ?3, retry_seq = NULL, retry_deliveries = NULL, retry_after = NULL,"
                          " retry_error = NULL WHERE grp = ?1 AND part = ?2",
                          &st, err))) {
        sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, m->partition);
        sqlite3_bind_int64(st, 3, (int64_t)m->seq);
        rc = sq_done(s->c, st, err);
    }
    if (!rc && m->redrive_id) {
        if (!(rc = sq_prepare(s->c, "DELETE FROM redrive WHERE id = ?1", &st, err))) {
            sqlite3_bind_int64(st, 1, m->redrive_id);
            rc = sq_done(s->c, st, err);
        }
    }
    rc = rc ? rc : sq_exec(s->c, "COMMIT", err);
    if (rc)
        sqlite3_exec(s->c, "ROLLBACK", NULL, NULL, NULL);
    free(body);
    if (rc)
        return rc;
    log_with(LOG_WARN, "dead-lettered", LF_STR("consumer", s->group), LF_STR("type", m->type),
             LF_STR("event_id", m->id), LF_INT("deliveries", m->deliveries), LF_STR("error", error ? error : ""));
    if (!m->redrive_id) {
        part *p = &s->p[m->partition];
        p->acked = p->fetched = m->seq; /* later fetched messages of the partition come again */
        p->last_delivered = 0;
        p->retry_seq = 0;
        p->retry_deliveries = 0;
        p->blocked_until = 0;
        p->dirty = false;
    }
    bump(s->b);
    return 0;
}

static int x_term(void *h, const bus_msg *m, const char *error, pl_error *err)
{
    lsub *s = h;
    if (!m->redrive_id && !live_part(s, m))
        return 0;
    return dead_letter(s, m, error, err);
}

static int x_nak(void *h, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err)
{
    lsub *s = h;
    if (m->redrive_id || m->deliveries >= s->max_deliver)
        return x_term(h, m, error, err);
    part *p = live_part(s, m);
    if (!p)
        return 0;
    int64_t until = time_now_ms() + (delay_ms > 0 ? delay_ms : 0);
    sqlite3_stmt *st;
    int rc = sq_prepare(s->c,
                        "UPDATE cursors SET acked = ?3, retry_seq = ?4, retry_deliveries = ?5, retry_after = ?6,"
                        " retry_error = ?7 WHERE grp = ?1 AND part = ?2",
                        &st, err);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, s->group, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, m->partition);
    sqlite3_bind_int64(st, 3, (int64_t)(m->seq - 1));
    sqlite3_bind_int64(st, 4, (int64_t)m->seq);
    sqlite3_bind_int(st, 5, m->deliveries);
    sqlite3_bind_int64(st, 6, until);
    sqlite3_bind_text(st, 7, error ? error : "", -1, SQLITE_STATIC);
    if ((rc = sq_done(s->c, st, err)))
        return rc;
    p->acked = p->fetched = m->seq - 1; /* rewind: the partition waits for this message */
    p->last_delivered = 0;
    p->retry_seq = m->seq;
    p->retry_deliveries = m->deliveries;
    p->blocked_until = until;
    p->dirty = false;
    return 0;
}

/* ---- replay, lag, reading, dead letters --------------------------------------------------- */

static int with_writer(lbus *b, const char *sql, const char *text, int64_t num, int64_t *changes, pl_error *err)
{
    pthread_mutex_lock(&b->wlock);
    sqlite3_stmt *st;
    int rc = sq_prepare(b->w, sql, &st, err);
    if (!rc) {
        if (text)
            sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, text ? 2 : 1, num);
        rc = sq_done(b->w, st, err);
        if (!rc && changes)
            *changes = sqlite3_changes(b->w);
    }
    pthread_mutex_unlock(&b->wlock);
    return rc;
}

static int x_reset(void *h, const char *group, pl_error *err)
{
    lbus *b = h;
    pthread_mutex_lock(&b->wlock);
    int rc = sq_exec(b->w, "BEGIN IMMEDIATE", err);
    static const char *const steps[] = {
        "UPDATE cursors SET acked = 0, owner = NULL, lease_until = 0, retry_seq = NULL, retry_deliveries = NULL,"
        " retry_after = NULL, retry_error = NULL WHERE grp = ?1",
        "UPDATE groups SET generation = generation + 1 WHERE grp = ?1",
        "DELETE FROM redrive WHERE grp = ?1",
        "DELETE FROM members WHERE grp = ?1", /* with the owners: a replay takes every partition at once */
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0] && !rc; i++) {
        sqlite3_stmt *st;
        if (!(rc = sq_prepare(b->w, steps[i], &st, err))) {
            sqlite3_bind_text(st, 1, group, -1, SQLITE_STATIC);
            rc = sq_done(b->w, st, err);
        }
    }
    rc = rc ? rc : sq_exec(b->w, "COMMIT", err);
    if (rc)
        sqlite3_exec(b->w, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&b->wlock);
    bump(b);
    return rc;
}

static int query_int(lbus *b, const char *sql, const char *text, int64_t *out, pl_error *err)
{
    pthread_mutex_lock(&b->wlock);
    sqlite3_stmt *st;
    int rc = sq_prepare(b->w, sql, &st, err);
    if (!rc) {
        if (text)
            sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            *out = sqlite3_column_int64(st, 0);
        else if (r != SQLITE_DONE)
            rc = sq_err(b->w, r, err, "query");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&b->wlock);
    return rc;
}

static int x_head(void *h, uint64_t *seq, pl_error *err)
{
    int64_t v = 0;
    int rc = query_int(h, "SELECT coalesce(max(seq), 0) FROM events", NULL, &v, err);
    *seq = (uint64_t)v;
    return rc;
}

static int x_lag(void *h, const char *group, int64_t *lag, pl_error *err)
{
    *lag = 0;
    return query_int(h,
                     "SELECT coalesce((SELECT max(seq) FROM events), 0) - coalesce((SELECT min(acked) FROM cursors"
                     " WHERE grp = ?1), 0)",
                     group, lag, err);
}

static int x_read(void *h, uint64_t after, size_t max, int timeout_ms,
                  int (*fn)(void *ud, uint64_t seq, const char *type, const char *body, size_t len), void *ud,
                  uint64_t *last, pl_error *err)
{
    lbus *b = h;
    *last = after;
    int64_t deadline = time_now_ms() + timeout_ms;
    sqlite3 *c;
    int rc = sq_open(b->path, &c, err);
    if (rc)
        return rc;
    for (;;) {
        uint64_t seen = version_now(b);
        sqlite3_stmt *st;
        if ((rc = sq_prepare(c, "SELECT seq, type, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2", &st, err)))
            break;
        sqlite3_bind_int64(st, 1, (int64_t)*last);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        size_t n = 0;
        int stop = 0;
        while (!stop && sqlite3_step(st) == SQLITE_ROW) {
            n++;
            *last = (uint64_t)sqlite3_column_int64(st, 0);
            stop = fn(ud, *last, (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                      (size_t)sqlite3_column_bytes(st, 2));
        }
        sqlite3_finalize(st);
        int64_t now = time_now_ms();
        if (n || stop || now >= deadline)
            break;
        wait_change(b, seen, deadline - now > 250 ? 250 : (int)(deadline - now));
    }
    sqlite3_close(c);
    return rc;
}

static int x_dead_list(void *h, bus_dead **out, size_t *n, pl_error *err)
{
    lbus *b = h;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&b->wlock);
    sqlite3_stmt *st;
    int rc = sq_prepare(b->w, "SELECT id, grp, type, event_id, seq, deliveries, error, dead_ms FROM dead ORDER BY id",
                        &st, err);
    size_t cap = 0;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, cap * sizeof **out);
            if (!*out)
                abort();
        }
        bus_dead *d = &(*out)[(*n)++];
        d->id = sqlite3_column_int64(st, 0);
        snprintf(d->group, sizeof d->group, "%s", sqlite3_column_text(st, 1));
        snprintf(d->type, sizeof d->type, "%s", sqlite3_column_text(st, 2));
        snprintf(d->event_id, sizeof d->event_id, "%s", sqlite3_column_text(st, 3));
        d->seq = (uint64_t)sqlite3_column_int64(st, 4);
        d->deliveries = sqlite3_column_int(st, 5);
        snprintf(d->error, sizeof d->error, "%s", sqlite3_column_text(st, 6));
        time_rfc3339(sqlite3_column_int64(st, 7), d->dead_at, sizeof d->dead_at);
    }
    if (!rc)
        sqlite3_finalize(st);
    pthread_mutex_unlock(&b->wlock);
    return rc;
}

static int x_dead_retry(void *h, int64_t id, int *count, pl_error *err)
{
    lbus *b = h;
    pthread_mutex_lock(&b->wlock);
    int rc = sq_exec(b->w, "BEGIN IMMEDIATE", err);
    sqlite3_stmt *st;
    int64_t moved = 0;
    if (!rc && !(rc = sq_prepare(b->w,
                                 "INSERT INTO redrive (grp, seq) SELECT grp, seq FROM dead WHERE ?1 = 0 OR id = ?1"
                                 " ORDER BY id",
                                 &st, err))) {
        sqlite3_bind_int64(st, 1, id);
        rc = sq_done(b->w, st, err);
        moved = sqlite3_changes(b->w);
    }
    if (!rc && !(rc = sq_prepare(b->w, "DELETE FROM dead WHERE ?1 = 0 OR id = ?1", &st, err))) {
        sqlite3_bind_int64(st, 1, id);
        rc = sq_done(b->w, st, err);
    }
    rc = rc ? rc : sq_exec(b->w, "COMMIT", err);
    if (rc)
        sqlite3_exec(b->w, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&b->wlock);
    if (!rc && id && moved == 0)
        rc = err_set(err, PL_ENOTFOUND, "id", "no dead letter %lld", (long long)id);
    *count = (int)moved;
    bump(b);
    return rc;
}

static int x_dead_drop(void *h, int64_t id, pl_error *err)
{
    int64_t changes = 0;
    int rc = with_writer(h, "DELETE FROM dead WHERE id = ?1", NULL, id, &changes, err);
    if (!rc && changes == 0)
        rc = err_set(err, PL_ENOTFOUND, "id", "no dead letter %lld", (long long)id);
    return rc;
}

static int x_dead_count(void *h, int64_t *n, pl_error *err)
{
    *n = 0;
    return query_int(h, "SELECT count(*) FROM dead", NULL, n, err);
}

static const char *const local_schemes[] = {"embedded:", NULL};

const bus_driver bus_local_driver = {
    .version = 1,
    .name = "embedded",
    .schemes = local_schemes,
    .xOpen = x_open,
    .xClose = x_close,
    .xPing = x_ping,
    .xPublish = x_publish,
    .xSubscribe = x_subscribe,
    .xUnsubscribe = x_unsubscribe,
    .xFetch = x_fetch,
    .xAck = x_ack,
    .xNak = x_nak,
    .xTerm = x_term,
    .xReset = x_reset,
    .xLag = x_lag,
    .xHead = x_head,
    .xRead = x_read,
    .xDeadList = x_dead_list,
    .xDeadRetry = x_dead_retry,
    .xDeadDrop = x_dead_drop,
    .xDeadCount = x_dead_count,
};
