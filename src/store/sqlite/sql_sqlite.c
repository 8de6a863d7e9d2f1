/*
 * sql_sqlite.c - the embedded sql engine: one SQLite file per service.
 *
 * WAL journal, synchronous=NORMAL (a process crash loses nothing committed;
 * a power cut may lose the last transactions), a busy timeout for other
 * processes, and an in-process writer lock so that this process's write
 * transactions queue fairly instead of spinning in SQLite's busy handler.
 * Connections are pooled (readers run concurrently under WAL); each
 * connection caches its prepared statements by SQL text.
 */
#include "store/sql.h"
#include "core/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STMT_CACHE 64

typedef struct cached {
    char *sql;
    sqlite3_stmt *stmt;
    bool busy; /* handed out as an open rows cursor */
} cached;

enum { TXS_BEGIN, TXS_BEGIN_IMMEDIATE, TXS_COMMIT, TXS_ROLLBACK, TXS_N };
static const char *const tx_sql[TXS_N] = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};

typedef struct conn {
    sqlite3 *h;
    sqlite3_stmt *tx[TXS_N]; /* prepared once: sqlite3_exec would parse them on every request */
    cached cache[STMT_CACHE];
    struct conn *next_idle;
} conn;

/* Runs one of the transaction statements; returns an SQLite result code. */
static int tx_step(conn *c, int which)
{
    sqlite3_stmt *st = c->tx[which];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

typedef struct sdb {
    char path[PATH_MAX];
    int busy_ms;
    int pool_max, nopen;
    conn *idle;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    pthread_mutex_t writer; /* one write transaction at a time in this process */
} sdb;

typedef struct stx {
    sdb *db;
    conn *c;
    bool write;
} stx;

typedef struct srows {
    sqlite3_stmt *stmt;
    cached *slot; /* NULL: stmt is private and finalized on close */
    int end;      /* 0 while rows may follow, then what xNext returns for good (0 or an error) */
    bool ended;
} srows;

static int map_rc(sqlite3 *h, int rc, pl_error *err, const char *what)
{
    const char *msg = h ? sqlite3_errmsg(h) : sqlite3_errstr(rc);
    int code;
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        code = (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) ? PL_ECONFLICT
                                                                                      : PL_EUNPROCESSABLE;
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = PL_EUNAVAILABLE;
        break;
    case SQLITE_NOMEM:
        code = PL_ENOMEM;
        break;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_READONLY:
        code = PL_EIO;
        break;
    case SQLITE_RANGE:
    case SQLITE_MISMATCH:
        code = PL_EINVAL;
        break;
    default:
        code = PL_EINTERNAL;
    }
    return err_set(err, code, NULL, "sqlite %s: %s", what, msg);
}

static int conn_open(sdb *db, conn **out, pl_error *err)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    int rc = sqlite3_open_v2(db->path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc) {
        rc = map_rc(c->h, rc, err, "open");
        sqlite3_close(c->h);
        free(c);
        return rc;
    }
    sqlite3_busy_timeout(c->h, db->busy_ms);
    sqlite3_extended_result_codes(c->h, 1);
    char *emsg = NULL;
    rc = sqlite3_exec(c->h,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                      " PRAGMA temp_store=MEMORY; PRAGMA cache_size=-8000;",
                      NULL, NULL, &emsg);
    for (int i = 0; i < TXS_N && !rc; i++)
        rc = sqlite3_prepare_v3(c->h, tx_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->tx[i], NULL);
    if (rc) {
        err_set(err, PL_EIO, NULL, "sqlite setup of %s: %s", db->path, emsg ? emsg : sqlite3_errmsg(c->h));
        sqlite3_free(emsg);
        for (int i = 0; i < TXS_N; i++)
            sqlite3_finalize(c->tx[i]);
        sqlite3_close(c->h);
        free(c);
        return PL_EIO;
    }
    *out = c;
    return 0;
}

static void conn_close(conn *c)
{
    for (int i = 0; i < TXS_N; i++)
        sqlite3_finalize(c->tx[i]);
    for (int i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(c->cache[i].stmt);
        free(c->cache[i].sql);
    }
    sqlite3_close(c->h);
    free(c);
}

static int x_open(const char *url, const sql_options *o, void **out, pl_error *err)
{
    sdb *db = calloc(1, sizeof *db);
    if (!db)
        abort();
    const char *file = strncmp(url, "sqlite:", 7) == 0 ? url + 7 : url;
    if (*file) {
        snprintf(db->path, sizeof db->path, "%s", file);
    } else {
        if (fs_mkdir_p(o->data_dir)) {
            free(db);
            return err_set(err, PL_EIO, "data", "cannot create data directory %s: %s", o->data_dir, strerror(errno));
        }
        snprintf(db->path, sizeof db->path, "%s/%s.db", o->data_dir, o->service);
    }
    db->busy_ms = o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 5000;
    db->pool_max = o->pool_max > 0 ? o->pool_max : 20;
    pthread_mutex_init(&db->lock, NULL);
    pthread_cond_init(&db->freed, NULL);
    pthread_mutex_init(&db->writer, NULL);
    conn *c;
    int rc = conn_open(db, &c, err); /* fail at open, not at first use */
    if (rc) {
        free(db);
        return rc;
    }
    db->idle = c;
    db->nopen = 1;
    *out = db;
    return 0;
}

static void x_close(void *h)
{
    sdb *db = h;
    for (conn *c = db->idle, *n; c; c = n) {
        n = c->next_idle;
        conn_close(c);
    }
    pthread_mutex_destroy(&db->lock);
    pthread_cond_destroy(&db->freed);
    pthread_mutex_destroy(&db->writer);
    free(db);
}

static int acquire(sdb *db, conn **out, pl_error *err)
{
    pthread_mutex_lock(&db->lock);
    while (!db->idle && db->nopen >= db->pool_max)
        pthread_cond_wait(&db->freed, &db->lock);
    conn *c = db->idle;
    if (c) {
        db->idle = c->next_idle;
        pthread_mutex_unlock(&db->lock);
        *out = c;
        return 0;
    }
    db->nopen++;
    pthread_mutex_unlock(&db->lock);
    int rc = conn_open(db, out, err);
    if (rc) {
        pthread_mutex_lock(&db->lock);
        db->nopen--;
        pthread_cond_signal(&db->freed);
        pthread_mutex_unlock(&db->lock);
    }
    return rc;
}

static void release(sdb *db, conn *c)
{
    pthread_mutex_lock(&db->lock);
    c->next_idle = db->idle;
    db->idle = c;
    pthread_cond_signal(&db->freed);
    pthread_mutex_unlock(&db->lock);
}

static int x_ping(void *h, pl_error *err)
{
    sdb *db = h;
    conn *c;
    int rc = acquire(db, &c, err);
    if (rc)
        return rc;
    rc = sqlite3_exec(c->h, "SELECT 1", NULL, NULL, NULL);
    if (rc)
        rc = map_rc(c->h, rc, err, "ping");
    release(db, c);
    return rc;
}

static int x_begin(void *h, int flags, void **out, pl_error *err)
{
    sdb *db = h;
    stx *tx = calloc(1, sizeof *tx);
    if (!tx)
        abort();
    tx->db = db;
    tx->write = flags & SQL_TX_WRITE;
    /* Writer lock before the connection, so queued writers do not hold
     * connections that readers could use. */
    if (tx->write)
        pthread_mutex_lock(&db->writer);
    int rc = acquire(db, &tx->c, err);
    if (rc) {
        if (tx->write)
            pthread_mutex_unlock(&db->writer);
        free(tx);
        return rc;
    }
    rc = tx_step(tx->c, tx->write ? TXS_BEGIN_IMMEDIATE : TXS_BEGIN);
    if (rc) {
        rc = map_rc(tx->c->h, rc, err, "begin");
        if (tx->write)
            pthread_mutex_unlock(&db->writer);
        release(db, tx->c);
        free(tx);
        return rc;
    }
    *out = tx;
    return 0;
}

static void tx_end(stx *tx)
{
    if (tx->write)
        pthread_mutex_unlock(&tx->db->writer);
    release(tx->db, tx->c);
    free(tx);
}

static void x_rollback(void *h)
{
    stx *tx = h;
    if (!sqlite3_get_autocommit(tx->c->h))
        tx_step(tx->c, TXS_ROLLBACK);
    tx_end(tx);
}

static int x_commit(void *h, pl_error *err)
{
    stx *tx = h;
    int rc = tx_step(tx->c, TXS_COMMIT);
    if (rc) {
        rc = map_rc(tx->c->h, rc, err, "commit");
        x_rollback(tx);
        return rc;
    }
    tx_end(tx);
    return 0;
}

static unsigned hash_sql(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Gets a prepared statement for sql: the cached one when free, else a private one. */
static int prepare(conn *c, const char *sql, sqlite3_stmt **st, cached **slot, pl_error *err)
{
    cached *e = &c->cache[hash_sql(sql) % STMT_CACHE];
    if (e->stmt && !e->busy && strcmp(e->sql, sql) == 0) {
        *st = e->stmt;
        *slot = e;
        return 0;
    }
    int rc = sqlite3_prepare_v3(c->h, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc)
        return map_rc(c->h, rc, err, "prepare");
    if (!*st)
        return err_set(err, PL_EINVAL, NULL, "sqlite prepare: empty statement");
    if (e->busy) {
        *slot = NULL;
        return 0;
    }
    sqlite3_finalize(e->stmt);
    free(e->sql);
    e->sql = strdup(sql);
    if (!e->sql)
        abort();
    e->stmt = *st;
    *slot = e;
    return 0;
}

/* Binds $N placeholders by their number. Arguments are borrowed for the
 * call only (sql.h): a query steps after its call has returned, so it passes
 * SQLITE_TRANSIENT to have text and blobs copied; exec may bind in place. */
static int bind(conn *c, sqlite3_stmt *st, const sql_arg *args, size_t n, sqlite3_destructor_type keep,
                pl_error *err)
{
    int np = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= np; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        long k = name && name[0] == '$' ? strtol(name + 1, NULL, 10) : 0;
        if (k < 1 || (size_t)k > n)
            return err_set(err, PL_EINVAL, NULL, "sqlite bind: placeholder %s has no argument (%zu given)",
                           name ? name : "?", n);
        const sql_arg *a = &args[k - 1];
        int rc;
        switch (a->type) {
        case SQL_T_NULL: rc = sqlite3_bind_null(st, i); break;
        case SQL_T_INT: rc = sqlite3_bind_int64(st, i, a->i); break;
        case SQL_T_REAL: rc = sqlite3_bind_double(st, i, a->d); break;
        case SQL_T_TEXT: rc = sqlite3_bind_text(st, i, a->p, -1, keep); break;
        case SQL_T_BLOB: rc = sqlite3_bind_blob64(st, i, a->p, a->n, keep); break;
        default: rc = SQLITE_MISMATCH;
        }
        if (rc)
            return map_rc(c->h, rc, err, "bind");
    }
    return 0;
}

static void stmt_done(sqlite3_stmt *st, cached *slot)
{
    if (slot) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        slot->busy = false;
    } else {
        sqlite3_finalize(st);
    }
}

static int x_exec(void *h, const char *sql, const sql_arg *args, size_t n, int64_t *changes, pl_error *err)
{
    stx *tx = h;
    sqlite3_stmt *st;
    cached *slot;
    int rc = prepare(tx->c, sql, &st, &slot, err);
    if (rc)
        return rc;
    if (!(rc = bind(tx->c, st, args, n, SQLITE_STATIC, err))) {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW)
            ;
        if (s != SQLITE_DONE)
            rc = map_rc(tx->c->h, s, err, "exec");
        else
            *changes = sqlite3_changes64(tx->c->h);
    }
    stmt_done(st, slot);
    return rc;
}

static int x_query(void *h, const char *sql, const sql_arg *args, size_t n, void **out, pl_error *err)
{
    stx *tx = h;
    sqlite3_stmt *st;
    cached *slot;
    int rc = prepare(tx->c, sql, &st, &slot, err);
    if (rc)
        return rc;
    if ((rc = bind(tx->c, st, args, n, SQLITE_TRANSIENT, err))) {
        stmt_done(st, slot);
        return rc;
    }
    srows *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->stmt = st;
    r->slot = slot;
    if (slot)
        slot->busy = true;
    *out = r;
    return 0;
}

static int x_next(void *h, pl_error *err)
{
    srows *r = h;
    if (r->ended) /* stepping a finished statement would silently run it again */
        return r->end ? err_set(err, r->end, NULL, "sqlite step: the cursor failed earlier") : 0;
    int s = sqlite3_step(r->stmt);
    if (s == SQLITE_ROW)
        return 1;
    r->ended = true;
    if (s == SQLITE_DONE)
        return 0;
    return r->end = map_rc(sqlite3_db_handle(r->stmt), s, err, "step");
}

static void x_rows_close(void *h)
{
    srows *r = h;
    stmt_done(r->stmt, r->slot);
    free(r);
}

static int x_ncols(void *h) { return sqlite3_column_count(((srows *)h)->stmt); }

static sql_type x_coltype(void *h, int col)
{
    switch (sqlite3_column_type(((srows *)h)->stmt, col)) {
    case SQLITE_INTEGER: return SQL_T_INT;
    case SQLITE_FLOAT: return SQL_T_REAL;
    case SQLITE_TEXT: return SQL_T_TEXT;
    case SQLITE_BLOB: return SQL_T_BLOB;
    default: return SQL_T_NULL;
    }
}

static int64_t x_colint(void *h, int col) { return sqlite3_column_int64(((srows *)h)->stmt, col); }
static double x_colreal(void *h, int col) { return sqlite3_column_double(((srows *)h)->stmt, col); }
static const char *x_coltext(void *h, int col)
{
    return (const char *)sqlite3_column_text(((srows *)h)->stmt, col);
}
static const void *x_colblob(void *h, int col, size_t *n)
{
    srows *r = h;
    const void *p = sqlite3_column_blob(r->stmt, col);
    *n = (size_t)sqlite3_column_bytes(r->stmt, col);
    return p;
}

static int x_exec_script(void *h, const char *script, pl_error *err)
{
    stx *tx = h;
    char *emsg = NULL;
    int rc = sqlite3_exec(tx->c->h, script, NULL, NULL, &emsg);
    if (rc) {
        err_set(err, PL_EINTERNAL, NULL, "sqlite: %s", emsg ? emsg : sqlite3_errstr(rc));
        sqlite3_free(emsg);
        return PL_EINTERNAL;
    }
    return 0;
}

static const char *const sqlite_schemes[] = {"sqlite:", NULL};

const sql_driver sql_sqlite_driver = {
    .version = 1,
    .name = "sqlite",
    .schemes = sqlite_schemes,
    .xOpen = x_open,
    .xClose = x_close,
    .xPing = x_ping,
    .xBegin = x_begin,
    .xCommit = x_commit,
    .xRollback = x_rollback,
    .xExec = x_exec,
    .xQuery = x_query,
    .xNext = x_next,
    .xColumnCount = x_ncols,
    .xColumnType = x_coltype,
    .xColumnInt = x_colint,
    .xColumnReal = x_colreal,
    .xColumnText = x_coltext,
    .xColumnBlob = x_colblob,
    .xRowsClose = x_rows_close,
    .xExecScript = x_exec_script,
};
