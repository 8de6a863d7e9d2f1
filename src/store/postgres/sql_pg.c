/*
 * sql_pg.c - the distributed sql engine: PostgreSQL through libpq.
 *
 * One schema per service on a shared database: every connection runs with
 * search_path set to the service's schema only, so services cannot see each
 * other's tables. A pool of connections per sql_db (and a second one for the
 * optional read replica); each connection caches its prepared statements by
 * SQL text. Design notes and invariants: src/store/postgres/README.md.
 *
 * Round trips are what a transaction costs here (each is a wake-up of both
 * processes), so the driver sends nothing it can send later with something
 * else: a write transaction's BEGIN goes out in one pipeline with its first
 * statement (or not at all when none comes), SAVEPOINT / RELEASE / ROLLBACK TO
 * with the statement after them, and a read transaction on the primary sends
 * no BEGIN at all: sessions run with default_transaction_read_only, so each of
 * its statements is a read-only transaction of its own, which under READ
 * COMMITTED (the default; checked per connection, else reads BEGIN READ ONLY
 * as well) sees exactly what it would have seen inside BEGIN ... ROLLBACK.
 */
#include "store/sql.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Catalog OIDs of the built-in types we look at (fixed since PostgreSQL 7). */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_TEXT = 25,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
};

#define STMT_SLOTS 256 /* prepared statements per connection (open addressing) */
#define STMT_PROBE 8
#define REPLICA_BACKOFF_MS 5000 /* reads skip a replica that just failed for this long */
#define DEFER_MAX 8             /* savepoint commands waiting for the next statement */

typedef struct stmt {
    char *sql;    /* NULL: free slot */
    char *sig;    /* one char per argument: 'b' bytea, '.' anything else */
    unsigned hash;
    int nparams;  /* highest $N used */
    unsigned char *used; /* used[i]: $(i+1) occurs in sql */
    char name[16];
} stmt;

struct pool;

typedef struct pconn {
    PGconn *pg;
    struct pool *pool;
    stmt cache[STMT_SLOTS];
    unsigned nnames;      /* statement names handed out ("p<n>") */
    uint64_t gen;         /* the db's DDL generation the cache is valid for */
    bool stale_cache;     /* the server may hold statements we forgot: DEALLOCATE ALL */
    bool rc_reads;        /* default isolation is READ COMMITTED: reads need no BEGIN */
    int64_t idle_since;   /* monotonic ms, while in the idle list */
    struct pconn *next;
} pconn;

typedef struct pool {
    struct pgdb *db;
    char *url;
    const char *role;     /* "primary", "replica": for messages */
    int max, nopen;
    pconn *idle;          /* most recently used first */
    pthread_cond_t freed;
} pool;

typedef struct pgdb {
    pool primary, replica;
    bool has_replica;
    int64_t replica_retry_at; /* monotonic ms; before it, reads go straight to the primary */
    char *service;
    char *schema;         /* quoted identifier */
    char *app_name;
    int connect_ms, statement_ms, idle_ms, wait_ms;
    bool schema_ready;
    uint64_t ddl_gen;
    pthread_mutex_t lock; /* guards both pools, schema_ready, ddl_gen, closing */
    pthread_cond_t reaper_cv;
    pthread_t reaper;
    bool closing;
} pgdb;

typedef struct ptx {
    pgdb *db;
    pconn *c;
    pool *pool;           /* where c came from (a retry takes another from it) */
    bool fresh;           /* c was opened for this transaction */
    bool failed;          /* a statement failed: only rollback is valid */
    bool solo;            /* a read without a transaction block: each statement stands alone */
    const char *begin;    /* BEGIN not sent yet (goes with the first statement); NULL once sent */
    char *defer[DEFER_MAX]; /* SAVEPOINT / RELEASE / ROLLBACK TO, sent before the next statement */
    int ndefer;
} ptx;

typedef struct prows {
    PGresult *res;
    int row, nrows, ncols;
    unsigned char **bytea; /* per column: decoded bytea of the current row, lazily */
    size_t *bytea_len;
} prows;

/* ---- small helpers ------------------------------------------------------ */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec mono_deadline(int64_t at_ms)
{
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (long)(at_ms % 1000) * 1000000};
    return ts;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static unsigned fnv(unsigned h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* libpq's messages end with a newline; ours do not. */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* Notices (CREATE ... IF NOT EXISTS, ...) would go to stderr by default. */
static void quiet_notices(void *arg, const char *message) {}

/* ---- error mapping -------------------------------------------------------- */

/* "Key (a, b)=(x, y) already exists." -> "a, b": the columns without the values (which may be private). */
static void detail_columns(const char *detail, char *out, size_t size)
{
    out[0] = '\0';
    const char *p = detail ? strstr(detail, "Key (") : NULL;
    if (!p)
        return;
    p += 5;
    const char *e = strstr(p, ")=(");
    if (!e)
        return;
    snprintf(out, size, "%.*s", (int)(e - p), p);
}

/* Maps a failed result (or a NULL result / a broken connection) to a PL_E* code and message. */
static int map_error(PGconn *pg, const PGresult *r, pl_error *err, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char connmsg[200];
    snprintf(connmsg, sizeof connmsg, "%s", pg ? PQerrorMessage(pg) : "no connection");
    chomp(connmsg);
    const char *msg = primary ? primary : connmsg;

    if (!pg || PQstatus(pg) != CONNECTION_OK)
        return err_set(err, PL_EUNAVAILABLE, NULL, "postgres %s: connection lost: %s", what, msg);
    if (!state) { /* refused by libpq itself, before the server saw it */
        if (r) {
            snprintf(connmsg, sizeof connmsg, "%s", PQresultErrorMessage(r));
            chomp(connmsg);
        }
        return err_set(err, PL_EINTERNAL, NULL, "postgres %s: %s", what, connmsg);
    }
    if (strcmp(state, "23505") == 0) {
        const char *table = PQresultErrorField(r, PG_DIAG_TABLE_NAME);
        const char *cons = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
        char cols[128];
        detail_columns(PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL), cols, sizeof cols);
        /* Worded like SQLite's "UNIQUE constraint failed: users.email" so callers can look for the column. */
        return err_set(err, PL_ECONFLICT, NULL, "postgres: UNIQUE constraint failed: %s.%s (%s)",
                       table ? table : "?", cols[0] ? cols : "?", cons ? cons : "?");
    }
    if (strncmp(state, "23", 2) == 0) {
        const char *cons = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
        return err_set(err, PL_EUNPROCESSABLE, NULL, "postgres: constraint %s failed: %s", cons ? cons : "?", msg);
    }
    if (strcmp(state, "57014") == 0)
        return err_set(err, PL_ETIMEOUT, NULL, "postgres %s: %s", what, msg);
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 || strcmp(state, "55P03") == 0)
        return err_set(err, PL_EUNAVAILABLE, NULL, "postgres %s: %s (SQLSTATE %s)", what, msg, state);
    if (strncmp(state, "22", 2) == 0) /* data exception: a value the column type cannot hold */
        return err_set(err, PL_EINVAL, NULL, "postgres %s: %s", what, msg);
    return err_set(err, PL_EINTERNAL, NULL, "postgres %s: %s (SQLSTATE %s)", what, msg, state);
}

static bool result_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Runs a parameterless command of our own (BEGIN, SET, ...); 0 or mapped error. */
static int simple(PGconn *pg, const char *sql, pl_error *err, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    int rc = result_ok(r) ? 0 : map_error(pg, r, err, what);
    PQclear(r);
    return rc;
}

/* ---- connections ---------------------------------------------------------- */

/* Connects without blocking past connect_ms: libpq's own connect_timeout
 * counts whole seconds (at least 2) per host, so we poll ourselves. */
static int connect_pg(pool *p, PGconn **out, pl_error *err)
{
    pgdb *db = p->db;
    /* Ours first, the URL last: whatever the operator wrote in the URL wins. */
    const char *kw[] = {"fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
                        "keepalives_count", "dbname", NULL};
    const char *val[] = {db->app_name, "1", "10", "3", "3", p->url, NULL};
    PGconn *pg = PQconnectStartParams(kw, val, 1);
    if (!pg)
        abort(); /* libpq could not allocate */
    int64_t deadline = mono_ms() + db->connect_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(pg) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            PQfinish(pg);
            return err_set(err, PL_EUNAVAILABLE, NULL, "postgres %s: connect timed out after %d ms", p->role,
                           db->connect_ms);
        }
        struct pollfd pfd = {.fd = PQsocket(pg), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(pg);
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
        chomp(msg);
        PQfinish(pg);
        return err_set(err, PL_EUNAVAILABLE, NULL, "postgres %s: cannot connect: %s", p->role, msg);
    }
    PQsetNoticeProcessor(pg, quiet_notices, NULL);
    *out = pg;
    return 0;
}

/* Creates the service's schema the first time any connection of this db gets through. */
static int ensure_schema(pgdb *db, PGconn *pg, pl_error *err)
{
    pthread_mutex_lock(&db->lock);
    bool ready = db->schema_ready;
    pthread_mutex_unlock(&db->lock);
    if (ready)
        return 0;
    /* Look first: CREATE SCHEMA checks the CREATE privilege even when the schema exists. */
    const char *vals[1] = {db->service};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL, vals, NULL, NULL, 0);
    if (!result_ok(r)) {
        int rc = map_error(pg, r, err, "schema lookup");
        PQclear(r);
        return rc;
    }
    bool exists = PQntuples(r) > 0;
    PQclear(r);
    if (!exists) {
        char sql[256];
        snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", db->schema);
        r = PQexec(pg, sql);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* Two connections creating it at once: the loser gets a unique violation on pg_namespace. */
        if (!result_ok(r) && !(state && strcmp(state, "23505") == 0)) {
            int rc = map_error(pg, r, err, "create schema");
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    pthread_mutex_lock(&db->lock);
    db->schema_ready = true;
    pthread_mutex_unlock(&db->lock);
    return 0;
}

static int conn_open(pool *p, pconn **out, pl_error *err)
{
    pgdb *db = p->db;
    PGconn *pg = NULL;
    int rc = connect_pg(p, &pg, err);
    if (rc)
        return rc;
    /* The replica is read-only: the primary creates the schema (and replication brings it). */
    if (p == &db->primary && (rc = ensure_schema(db, pg, err))) {
        PQfinish(pg);
        return rc;
    }
    /* Outside BEGIN READ WRITE everything is read-only: the statements of a read transaction run
     * without a transaction block (see the top of this file) and still cannot write. */
    char sql[400];
    snprintf(sql, sizeof sql,
             "SET search_path TO %s; SET statement_timeout = %d; SET default_transaction_read_only = on;"
             " SHOW default_transaction_isolation",
             db->schema, db->statement_ms);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = map_error(pg, r, err, "session setup");
        PQclear(r);
        PQfinish(pg);
        return rc;
    }
    bool rc_reads = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "read committed") == 0;
    PQclear(r);
    pconn *c = xcalloc(1, sizeof *c);
    c->pg = pg;
    c->pool = p;
    c->rc_reads = rc_reads;
    pthread_mutex_lock(&db->lock);
    c->gen = db->ddl_gen;
    pthread_mutex_unlock(&db->lock);
    *out = c;
    return 0;
}

static void cache_clear(pconn *c)
{
    for (int i = 0; i < STMT_SLOTS; i++) {
        free(c->cache[i].sql);
        free(c->cache[i].sig);
        free(c->cache[i].used);
    }
    memset(c->cache, 0, sizeof c->cache);
}

static void conn_close(pconn *c)
{
    if (!c)
        return;
    cache_clear(c);
    PQfinish(c->pg);
    free(c);
}

/* Takes every idle connection of p off the list (caller holds the lock);
 * returns them for closing outside the lock. */
static pconn *take_idle(pool *p)
{
    pconn *all = p->idle;
    for (pconn *c = all; c; c = c->next)
        p->nopen--;
    p->idle = NULL;
    pthread_cond_broadcast(&p->freed);
    return all;
}

static void close_list(pconn *c)
{
    while (c) {
        pconn *n = c->next;
        conn_close(c);
        c = n;
    }
}

/* Gets a connection: an idle one, else a new one while under pool_max, else
 * waits up to wait_ms for one to be released. *fresh tells a new connection. */
static int acquire(pool *p, pconn **out, bool *fresh, pl_error *err)
{
    pgdb *db = p->db;
    int64_t deadline = mono_ms() + db->wait_ms;
    pthread_mutex_lock(&db->lock);
    while (!p->idle && p->nopen >= p->max) {
        struct timespec ts = mono_deadline(deadline);
        if (pthread_cond_timedwait(&p->freed, &db->lock, &ts) == ETIMEDOUT && !p->idle && p->nopen >= p->max) {
            pthread_mutex_unlock(&db->lock);
            return err_set(err, PL_EUNAVAILABLE, NULL, "postgres %s: all %d connections busy for %d ms", p->role,
                           p->max, db->wait_ms);
        }
    }
    pconn *c = p->idle;
    if (c) {
        p->idle = c->next;
        c->next = NULL;
        bool stale = c->gen != db->ddl_gen || c->stale_cache;
        uint64_t gen = db->ddl_gen;
        pthread_mutex_unlock(&db->lock);
        /* After DDL, cached plans of a changed table may no longer fit (result type changed). */
        if (stale) {
            cache_clear(c);
            c->stale_cache = false;
            c->gen = gen;
            PQclear(PQexec(c->pg, "DEALLOCATE ALL")); /* a broken connection is caught by the caller's BEGIN */
        }
        *fresh = false;
        *out = c;
        return 0;
    }
    p->nopen++;
    pthread_mutex_unlock(&db->lock);
    int rc = conn_open(p, out, err);
    if (rc) {
        pthread_mutex_lock(&db->lock);
        p->nopen--;
        pthread_cond_signal(&p->freed);
        pthread_mutex_unlock(&db->lock);
        return rc;
    }
    *fresh = true;
    return 0;
}

/* Returns c to its pool, or closes it when it is broken or not cleanly idle
 * (a connection mid-transaction must never be handed to someone else). */
static void release(pconn *c)
{
    pool *p = c->pool;
    pgdb *db = p->db;
    bool keep = PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) == PQTRANS_IDLE &&
                PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF;
    pthread_mutex_lock(&db->lock);
    keep = keep && !db->closing;
    if (keep) {
        c->idle_since = mono_ms();
        c->next = p->idle;
        p->idle = c;
    } else {
        p->nopen--;
    }
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&db->lock);
    if (!keep)
        conn_close(c);
}

/* Closes a connection found broken, and every idle one of its pool with it:
 * a broken connection usually means the server restarted, and then all the
 * others are dead too; trying them one by one would only cost round trips. */
static void discard_broken(pconn *c)
{
    pool *p = c->pool;
    pthread_mutex_lock(&p->db->lock);
    p->nopen--;
    pconn *idle = take_idle(p);
    pthread_mutex_unlock(&p->db->lock);
    conn_close(c);
    close_list(idle);
}

/* Gets a connection on which `sql` (BEGIN, SELECT 1) succeeded. A pooled
 * connection that turns out broken is discarded and the command retried on a
 * new one: nothing has happened on it yet, so the retry is invisible. A new
 * connection failing is the answer (PL_EUNAVAILABLE when the server is down). */
static int acquire_with(pool *p, const char *sql, pconn **out, pl_error *err)
{
    for (;;) {
        pconn *c;
        bool fresh;
        int rc = acquire(p, &c, &fresh, err);
        if (rc)
            return rc;
        if (!(rc = simple(c->pg, sql, err, sql))) {
            *out = c;
            return 0;
        }
        if (PQstatus(c->pg) != CONNECTION_OK) {
            discard_broken(c);
            if (!fresh)
                continue;
        } else {
            release(c);
        }
        return rc;
    }
}

/* False when an idle pooled connection has heard from its server: a backend
 * that was terminated (server shutdown or restart, pg_terminate_backend) sends
 * its error and closes the socket. Nothing else arrives on an idle connection
 * of ours. No round trip: one poll with a zero timeout. */
static bool idle_conn_ok(pconn *c)
{
    struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN | POLLRDHUP};
    if (pfd.fd < 0 || PQstatus(c->pg) != CONNECTION_OK)
        return false;
    int n = poll(&pfd, 1, 0);
    if (n <= 0)
        return true;
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return false;
    return PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK;
}

/* Gets a connection for a transaction that sends nothing yet (its BEGIN, if
 * any, goes with its first statement): a pooled one that shows it is dead is
 * discarded, with every idle one of its pool, and another taken. */
static int acquire_live(pool *p, pconn **out, bool *fresh, pl_error *err)
{
    for (;;) {
        int rc = acquire(p, out, fresh, err);
        if (rc || *fresh || idle_conn_ok(*out))
            return rc;
        discard_broken(*out);
    }
}

/* Closes idle connections older than idle_ms, every quarter of it. */
static void *reaper_main(void *arg)
{
    pgdb *db = arg;
    int64_t period = db->idle_ms / 4 > 50 ? db->idle_ms / 4 : 50;
    pthread_mutex_lock(&db->lock);
    while (!db->closing) {
        struct timespec ts = mono_deadline(mono_ms() + period);
        pthread_cond_timedwait(&db->reaper_cv, &db->lock, &ts);
        if (db->closing)
            break;
        int64_t now = mono_ms();
        pconn *old = NULL;
        pool *pools[2] = {&db->primary, &db->replica};
        for (int i = 0; i < 2; i++) {
            for (pconn **pp = &pools[i]->idle; *pp;) {
                pconn *c = *pp;
                if (now - c->idle_since >= db->idle_ms) {
                    *pp = c->next;
                    c->next = old;
                    old = c;
                    pools[i]->nopen--;
                    pthread_cond_signal(&pools[i]->freed);
                } else {
                    pp = &c->next;
                }
            }
        }
        pthread_mutex_unlock(&db->lock);
        close_list(old); /* PQfinish talks to the server: not under the lock */
        pthread_mutex_lock(&db->lock);
    }
    pthread_mutex_unlock(&db->lock);
    return NULL;
}

/* ---- open / close / ping ------------------------------------------------------ */

static int check_url(const char *url, const char *what, pl_error *err)
{
    char *emsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &emsg);
    if (!opts) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s", emsg ? emsg : "out of memory");
        chomp(msg);
        PQfreemem(emsg);
        return err_set(err, PL_ECONFIG, "sql", "invalid PostgreSQL %s URL: %s", what, msg);
    }
    PQconninfoFree(opts);
    return 0;
}

static void pool_init(pgdb *db, pool *p, const char *url, const char *role, int max)
{
    p->db = db;
    p->url = url ? xstrdup(url) : NULL;
    p->role = role;
    p->max = max;
    cond_init_mono(&p->freed);
}

static void db_free(pgdb *db)
{
    pthread_cond_destroy(&db->primary.freed);
    pthread_cond_destroy(&db->replica.freed);
    pthread_cond_destroy(&db->reaper_cv);
    pthread_mutex_destroy(&db->lock);
    free(db->primary.url);
    free(db->replica.url);
    free(db->service);
    free(db->schema);
    free(db->app_name);
    free(db);
}

static int x_open(const char *url, const sql_options *o, void **out, pl_error *err)
{
    static const sql_options none;
    if (!o)
        o = &none;
    int rc = check_url(url, "sql", err);
    if (!rc && o->replica_url && *o->replica_url)
        rc = check_url(o->replica_url, "replica", err);
    if (rc)
        return rc;
    if (!PQisthreadsafe())
        return err_set(err, PL_ECONFIG, "sql", "this libpq is not thread-safe");

    pgdb *db = xcalloc(1, sizeof *db);
    db->service = xstrdup(o->service && *o->service ? o->service : "public");
    /* Quoting by hand (PQescapeIdentifier needs a connection): double any '"'. */
    size_t n = strlen(db->service);
    db->schema = xcalloc(2 * n + 3, 1);
    char *q = db->schema;
    *q++ = '"';
    for (const char *s = db->service; *s; s++) {
        if (*s == '"')
            *q++ = '"';
        *q++ = *s;
    }
    *q = '"';
    char app[64];
    snprintf(app, sizeof app, "pulse-%s", db->service);
    db->app_name = xstrdup(app);
    db->connect_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
    db->statement_ms = o->statement_timeout_ms > 0 ? o->statement_timeout_ms : 2000;
    db->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 30000;
    db->wait_ms = o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 5000;
    int max = o->pool_max > 0 ? o->pool_max : 20;
    pthread_mutex_init(&db->lock, NULL);
    cond_init_mono(&db->reaper_cv);
    pool_init(db, &db->primary, url, "primary", max);
    db->has_replica = o->replica_url && *o->replica_url;
    pool_init(db, &db->replica, db->has_replica ? o->replica_url : NULL, "replica", max);

    /* Fail at open, not at first use: connect once (this also creates the schema). */
    pconn *c;
    bool fresh;
    if ((rc = acquire(&db->primary, &c, &fresh, err))) {
        db_free(db);
        return rc;
    }
    release(c);
    if (pthread_create(&db->reaper, NULL, reaper_main, db)) {
        pthread_mutex_lock(&db->lock);
        pconn *idle = take_idle(&db->primary);
        pthread_mutex_unlock(&db->lock);
        close_list(idle);
        db_free(db);
        return err_set(err, PL_EINTERNAL, NULL, "postgres: cannot start the pool reaper thread");
    }
    *out = db;
    return 0;
}

static void x_close(void *h)
{
    pgdb *db = h;
    pthread_mutex_lock(&db->lock);
    db->closing = true;
    pthread_cond_signal(&db->reaper_cv);
    pconn *a = take_idle(&db->primary), *b = take_idle(&db->replica);
    pthread_mutex_unlock(&db->lock);
    pthread_join(db->reaper, NULL);
    close_list(a);
    close_list(b);
    db_free(db);
}

static int x_ping(void *h, pl_error *err)
{
    pgdb *db = h;
    pconn *c;
    int rc = acquire_with(&db->primary, "SELECT 1", &c, err);
    if (rc)
        return rc;
    release(c);
    return 0;
}

/* ---- transactions ------------------------------------------------------------------ */

static int x_begin(void *h, int flags, void **out, pl_error *err)
{
    pgdb *db = h;
    bool write = flags & SQL_TX_WRITE;
    pconn *c = NULL;
    int rc = -1;
    /* Reads go to the replica when there is one, and to the primary when it is down; a replica
     * that failed is left alone for a while, so that reads do not each wait for it. */
    if (!write && db->has_replica) {
        pthread_mutex_lock(&db->lock);
        bool try_replica = mono_ms() >= db->replica_retry_at;
        pthread_mutex_unlock(&db->lock);
        if (try_replica && (rc = acquire_with(&db->replica, "BEGIN READ ONLY", &c, NULL)) == PL_EUNAVAILABLE) {
            pthread_mutex_lock(&db->lock);
            db->replica_retry_at = mono_ms() + REPLICA_BACKOFF_MS;
            pthread_mutex_unlock(&db->lock);
        }
    }
    ptx *tx = xcalloc(1, sizeof *tx);
    tx->db = db;
    if (!rc) { /* on the replica, begun */
        tx->c = c;
        tx->pool = &db->replica;
        *out = tx;
        return 0;
    }
    /* On the primary nothing is sent yet: the BEGIN of a write goes with its first statement, and
     * a read needs none (each statement is a read-only transaction of its own, see the top). */
    bool fresh;
    if ((rc = acquire_live(&db->primary, &c, &fresh, err))) {
        free(tx);
        return rc;
    }
    tx->c = c;
    tx->pool = &db->primary;
    tx->fresh = fresh;
    if (write)
        tx->begin = "BEGIN READ WRITE";
    else if (c->rc_reads)
        tx->solo = true;
    else
        tx->begin = "BEGIN READ ONLY";
    *out = tx;
    return 0;
}

static void drop_deferred(ptx *tx)
{
    for (int i = 0; i < tx->ndefer; i++)
        free(tx->defer[i]);
    tx->ndefer = 0;
}

static void x_rollback(void *h)
{
    ptx *tx = h;
    if (tx->c) { /* NULL: its connection died and no other could be had */
        PGTransactionStatusType ts = PQtransactionStatus(tx->c->pg);
        if (PQstatus(tx->c->pg) == CONNECTION_OK && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR))
            PQclear(PQexec(tx->c->pg, "ROLLBACK")); /* on failure release() sees the state and closes it */
        release(tx->c);
    }
    drop_deferred(tx);
    free(tx);
}

static int run(ptx *tx, const char *sql, const sql_arg *args, size_t n, PGresult **out, pl_error *err);

static int x_commit(void *h, pl_error *err)
{
    ptx *tx = h;
    if (tx->failed) {
        x_rollback(tx);
        return err_set(err, PL_EINTERNAL, NULL, "postgres commit: a statement of this transaction failed;"
                                                " it was rolled back");
    }
    /* Nothing was sent (no statement), or every statement stood alone: nothing to commit. */
    if (tx->begin || tx->solo) {
        x_rollback(tx);
        return 0;
    }
    PGresult *r = NULL;
    int rc = 0;
    if (tx->ndefer) { /* savepoint commands still waiting: they go in one pipeline with the COMMIT */
        rc = run(tx, "COMMIT", NULL, 0, &r, err);
    } else {
        r = PQexec(tx->c->pg, "COMMIT");
        if (!result_ok(r))
            rc = map_error(tx->c->pg, r, err, "commit");
    }
    if (!rc && strcmp(PQcmdStatus(r), "ROLLBACK") == 0) /* the server had aborted the transaction */
        rc = err_set(err, PL_EINTERNAL, NULL, "postgres commit: the transaction was aborted; rolled back");
    PQclear(r);
    if (rc && PQstatus(tx->c->pg) != CONNECTION_OK && err)
        snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg), " (outcome unknown)");
    x_rollback(tx); /* releases; a no-op ROLLBACK when COMMIT ended the transaction */
    return rc;
}

/* ---- statements -------------------------------------------------------------------- */

static bool ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || (unsigned char)ch >= 0x80;
}

/* Finds the $N placeholders of sql, skipping literals, quoted identifiers,
 * comments and dollar-quoted bodies. Marks used[N-1] (N <= n) and returns the
 * highest N, or PL_EINVAL when some $N has no argument. */
static int scan_params(const char *sql, size_t n, unsigned char *used, pl_error *err)
{
    int max = 0;
    for (const char *s = sql; *s;) {
        char ch = *s;
        if (ch == '\'' || ch == '"') {
            bool esc = ch == '\'' && s > sql && (s[-1] == 'E' || s[-1] == 'e') && (s - 1 == sql || !ident_char(s[-2]));
            for (s++; *s; s++) {
                if (esc && *s == '\\' && s[1]) {
                    s++;
                } else if (*s == ch) {
                    if (s[1] == ch)
                        s++;
                    else
                        break;
                }
            }
            if (*s)
                s++;
        } else if (ch == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
        } else if (ch == '/' && s[1] == '*') {
            int depth = 1;
            for (s += 2; *s && depth; s++) {
                if (*s == '/' && s[1] == '*')
                    depth++, s++;
                else if (*s == '*' && s[1] == '/')
                    depth--, s++;
            }
        } else if (ch == '$' && (s == sql || !ident_char(s[-1]))) {
            if (s[1] >= '0' && s[1] <= '9') {
                char *end;
                long k = strtol(s + 1, &end, 10);
                if (k < 1 || (size_t)k > n)
                    return err_set(err, PL_EINVAL, NULL, "postgres: placeholder $%ld has no argument (%zu given)", k, n);
                used[k - 1] = 1;
                if (k > max)
                    max = (int)k;
                s = end;
                continue;
            }
            /* $tag$ ... $tag$, the tag possibly empty: skip to the same tag */
            const char *t = s + 1;
            while (*t && *t != '$' && ident_char(*t))
                t++;
            if (*t != '$') {
                s++;
                continue;
            }
            size_t taglen = (size_t)(t - s) + 1;
            const char *close = t + 1;
            while (*close && strncmp(close, s, taglen) != 0)
                close++;
            s = *close ? close + taglen : close;
        } else if (ident_char(ch)) {
            while (*s && ident_char(*s))
                s++;
        } else {
            s++;
        }
    }
    return max;
}

/* Statements worth keeping prepared: DML and queries, not one-off DDL. */
static bool cacheable(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r' || *sql == '(')
        sql++;
    static const char *const kw[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", NULL};
    for (const char *const *k = kw; *k; k++) {
        size_t n = strlen(*k);
        if (strncasecmp(sql, *k, n) == 0 && !ident_char(sql[n]))
            return true;
    }
    return false;
}

/* The per-call facts about args that decide the statement's parameter types. */
static void arg_signature(const sql_arg *args, size_t n, char *sig)
{
    for (size_t i = 0; i < n; i++)
        sig[i] = args[i].type == SQL_T_BLOB ? 'b' : '.';
    sig[n] = '\0';
}

/* Parameter types: bytea for blobs (sent binary); "unknown" (0) for the rest,
 * sent as text, so the server infers the type from the context exactly as it
 * does for a quoted literal ('42' fits int2..int8, numeric, text, bool);
 * text for a $N that the statement never uses (sent as NULL). */
static Oid *param_types(const char *sig, const unsigned char *used, int nparams)
{
    Oid *t = xcalloc((size_t)nparams, sizeof *t);
    for (int i = 0; i < nparams; i++)
        t[i] = !used[i] ? OID_TEXT : sig[i] == 'b' ? OID_BYTEA : 0;
    return t;
}

/* Finds or makes the prepared statement for (sql, sig) on c. Sets *slot to
 * the cache entry, or to `tmp` filled in (name "") when the statement is not
 * cached: then the caller runs it with PQexecParams. */
static int prepare(ptx *tx, const char *sql, const sql_arg *args, size_t n, stmt **slot, stmt *tmp, pl_error *err)
{
    pconn *c = tx->c;
    char sigbuf[64];
    char *sig = n < sizeof sigbuf ? sigbuf : xcalloc(n + 1, 1);
    arg_signature(args, n, sig);
    unsigned h = fnv(fnv(2166136261u, sql), sig);
    stmt *free_slot = NULL;
    for (int i = 0; i < STMT_PROBE; i++) {
        stmt *e = &c->cache[(h + (unsigned)i) % STMT_SLOTS];
        if (!e->sql) {
            if (!free_slot)
                free_slot = e;
            continue;
        }
        if (e->hash == h && strcmp(e->sql, sql) == 0 && strcmp(e->sig, sig) == 0) {
            if (sig != sigbuf)
                free(sig);
            *slot = e;
            return 0;
        }
    }
    unsigned char *used = xcalloc(n, 1);
    int rc = scan_params(sql, n, used, err);
    if (rc < 0) {
        free(used);
        if (sig != sigbuf)
            free(sig);
        return rc;
    }
    memset(tmp, 0, sizeof *tmp);
    tmp->nparams = rc;
    tmp->used = used;
    tmp->sig = sig != sigbuf ? sig : xstrdup(sig);
    tmp->hash = h;
    if (!free_slot || !cacheable(sql)) {
        *slot = tmp; /* unnamed: name "" */
        return 0;
    }
    snprintf(tmp->name, sizeof tmp->name, "p%u", ++c->nnames);
    Oid *types = param_types(tmp->sig, used, tmp->nparams);
    PGresult *r = PQprepare(c->pg, tmp->name, sql, tmp->nparams, types);
    free(types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = map_error(c->pg, r, err, "prepare");
        PQclear(r);
        free(tmp->sig);
        free(tmp->used);
        return rc;
    }
    PQclear(r);
    tmp->sql = xstrdup(sql);
    *free_slot = *tmp;
    *slot = free_slot;
    return 0;
}

static void format_real(double d, char *buf, size_t size)
{
    if (isnan(d)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(d)) {
        snprintf(buf, size, d > 0 ? "Infinity" : "-Infinity");
    } else {
        /* The shortest form that reads back as the same double. */
        snprintf(buf, size, "%.15g", d);
        if (strtod(buf, NULL) != d)
            snprintf(buf, size, "%.17g", d);
    }
}

/* Checks a statement's result: 0, or the mapped error (noting a cached plan that no longer fits). */
static int check_result(ptx *tx, const PGresult *r, bool cached, pl_error *err)
{
    if (PQresultStatus(r) == PGRES_EMPTY_QUERY)
        return err_set(err, PL_EINVAL, NULL, "postgres: empty statement");
    if (result_ok(r))
        return 0;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* A cached plan that no longer fits its table (DDL since): prepare again next time. */
    if (state && (strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0) && cached)
        tx->c->stale_cache = true;
    return map_error(tx->c->pg, r, err, "statement");
}

/* Sends what waits (the BEGIN, savepoint commands) and the statement (sql NULL: none) in one
 * pipeline, one round trip, and reads every result. *out gets the statement's; the first
 * failure is the answer (what follows it in the pipeline is skipped by the server). */
static int send_pipeline(ptx *tx, const char *sql, const stmt *st, int np, const char *const *vals, const int *lens,
                         const int *fmts, PGresult **out, pl_error *err)
{
    PGconn *pg = tx->c->pg;
    const char *cmds[DEFER_MAX + 1];
    int ncmd = 0;
    if (tx->begin)
        cmds[ncmd++] = tx->begin;
    for (int i = 0; i < tx->ndefer; i++)
        cmds[ncmd++] = tx->defer[i];
    if (!PQenterPipelineMode(pg))
        return map_error(pg, NULL, err, "pipeline");
    bool sent = true;
    for (int i = 0; i < ncmd && sent; i++)
        sent = PQsendQueryParams(pg, cmds[i], 0, NULL, NULL, NULL, NULL, 0);
    if (sent && sql) {
        if (st->name[0]) {
            sent = PQsendQueryPrepared(pg, st->name, np, vals, lens, fmts, 0);
        } else {
            Oid *types = param_types(st->sig, st->used, np);
            sent = PQsendQueryParams(pg, sql, np, types, vals, lens, fmts, 0);
            free(types);
        }
    }
    sent = sent && PQpipelineSync(pg);
    int rc = 0, nq = ncmd + (sql ? 1 : 0);
    PGresult *res = NULL;
    if (!sent)
        rc = map_error(pg, NULL, err, "statement");
    for (int q = 0; q < nq && sent; q++) {
        PGresult *r;
        int got = 0;
        while ((r = PQgetResult(pg))) {
            got++;
            ExecStatusType s = PQresultStatus(r);
            bool mine = sql && q == nq - 1;
            if (s == PGRES_PIPELINE_ABORTED) {
                PQclear(r);
            } else if (mine && !rc && !(rc = check_result(tx, r, st->name[0] != '\0', err))) {
                PQclear(res);
                res = r;
            } else {
                if (!mine && !rc && !result_ok(r))
                    rc = map_error(pg, r, err, "statement");
                PQclear(r);
            }
            if (PQstatus(pg) != CONNECTION_OK || got > 16)
                break;
        }
        if (PQstatus(pg) != CONNECTION_OK) {
            if (!rc)
                rc = map_error(pg, NULL, err, "statement");
            break;
        }
    }
    if (PQstatus(pg) == CONNECTION_OK && sent) {
        PGresult *r = PQgetResult(pg);
        if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && !rc)
            rc = err_set(err, PL_EINTERNAL, NULL, "postgres: pipeline out of step");
        PQclear(r);
    }
    if (PQstatus(pg) == CONNECTION_OK && !PQexitPipelineMode(pg) && !rc)
        rc = err_set(err, PL_EINTERNAL, NULL, "postgres: pipeline out of step");
    if (rc) {
        PQclear(res);
        return rc;
    }
    *out = res;
    return 0;
}

/* After a pooled connection turned out dead before this transaction did
 * anything on it: discards it (and the idle ones of its pool) and takes
 * another, as acquire_with does for a BEGIN. */
static int switch_conn(ptx *tx, pl_error *err)
{
    discard_broken(tx->c);
    tx->c = NULL;
    pconn *c;
    bool fresh;
    int rc = acquire_live(tx->pool, &c, &fresh, err);
    if (rc)
        return rc;
    tx->c = c;
    tx->fresh = fresh;
    if (tx->solo && !c->rc_reads) {
        tx->solo = false;
        tx->begin = "BEGIN READ ONLY";
    }
    return 0;
}

/* Runs sql (NULL: only what waits) with args on the transaction's connection; *out gets the result. */
static int run(ptx *tx, const char *sql, const sql_arg *args, size_t n, PGresult **out, pl_error *err)
{
    if (tx->failed)
        return err_set(err, PL_EINTERNAL, NULL, "postgres: a statement of this transaction failed; only rollback is valid");
    for (int attempt = 0;; attempt++) {
        /* Nothing of this transaction has happened yet on a pooled connection: if it is dead,
         * another one can take over unseen (a read that stands alone is as good as unsent). */
        bool retry = attempt == 0 && !tx->fresh && (tx->begin || tx->solo);
        stmt tmp = {0}, *st = &tmp;
        int rc = sql ? prepare(tx, sql, args, n, &st, &tmp, err) : 0;
        if (rc) {
            if (retry && PQstatus(tx->c->pg) != CONNECTION_OK && !(rc = switch_conn(tx, err)))
                continue;
            tx->failed = true;
            return rc;
        }
        int np = sql ? st->nparams : 0;
        const char *vals_s[16];
        int lens_s[16], fmts_s[16];
        char nums_s[16][32];
        const char **vals = np <= 16 ? vals_s : xcalloc((size_t)np, sizeof *vals);
        int *lens = np <= 16 ? lens_s : xcalloc((size_t)np, sizeof *lens);
        int *fmts = np <= 16 ? fmts_s : xcalloc((size_t)np, sizeof *fmts);
        char(*nums)[32] = np <= 16 ? nums_s : xcalloc((size_t)np, sizeof *nums);
        for (int i = 0; i < np; i++) {
            const sql_arg *a = &args[i];
            vals[i] = NULL;
            lens[i] = 0;
            fmts[i] = 0;
            if (!st->used[i])
                continue;
            switch (a->type) {
            case SQL_T_INT:
                snprintf(nums[i], sizeof nums[i], "%" PRId64, a->i);
                vals[i] = nums[i];
                break;
            case SQL_T_REAL:
                format_real(a->d, nums[i], sizeof nums[i]);
                vals[i] = nums[i];
                break;
            case SQL_T_TEXT:
                vals[i] = a->p;
                break;
            case SQL_T_BLOB:
                vals[i] = a->p ? a->p : "";
                lens[i] = (int)a->n;
                fmts[i] = 1;
                break;
            default:
                break;
            }
        }
        PGresult *r = NULL;
        if (tx->begin || tx->ndefer || !sql) {
            rc = send_pipeline(tx, sql, st, np, vals, lens, fmts, &r, err);
        } else {
            if (st->name[0]) {
                r = PQexecPrepared(tx->c->pg, st->name, np, vals, lens, fmts, 0);
            } else {
                Oid *types = param_types(st->sig, st->used, np);
                r = PQexecParams(tx->c->pg, sql, np, types, vals, lens, fmts, 0);
                free(types);
            }
            if ((rc = check_result(tx, r, st != &tmp, err))) {
                PQclear(r);
                r = NULL;
            }
        }
        if (np > 16) {
            free(vals);
            free(lens);
            free(fmts);
            free(nums);
        }
        if (st == &tmp) {
            free(tmp.sig);
            free(tmp.used);
        }
        if (rc && retry && PQstatus(tx->c->pg) != CONNECTION_OK) {
            int rc2 = switch_conn(tx, err);
            if (!rc2)
                continue;
            rc = rc2;
        }
        /* Sent: the BEGIN and the savepoint commands are behind us, whatever the result. */
        tx->begin = NULL;
        drop_deferred(tx);
        if (rc) {
            tx->failed = true;
            return rc;
        }
        *out = r;
        return 0;
    }
}

/* SAVEPOINT x, RELEASE [SAVEPOINT] x, ROLLBACK TO [SAVEPOINT] x: nothing comes
 * back from them but success (or an error that the transaction's next
 * statement reports as well), so they wait for the next statement and go in
 * its round trip. */
static bool deferrable(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r')
        sql++;
    static const char *const kw[] = {"SAVEPOINT", "RELEASE", "ROLLBACK TO", NULL};
    bool hit = false;
    for (const char *const *k = kw; *k && !hit; k++) {
        size_t len = strlen(*k);
        hit = strncasecmp(sql, *k, len) == 0 && (sql[len] == ' ' || sql[len] == '\t' || sql[len] == '\n');
    }
    return hit && !strpbrk(sql, ";'\"$-/");
}

static bool rollback_to(const char *sql)
{
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r')
        sql++;
    return strncasecmp(sql, "ROLLBACK TO", 11) == 0;
}

static int x_exec(void *h, const char *sql, const sql_arg *args, size_t n, int64_t *changes, pl_error *err)
{
    ptx *tx = h;
    if (tx->failed && n == 0 && rollback_to(sql)) {
        /* After a failure PostgreSQL accepts ROLLBACK, or ROLLBACK TO a savepoint
         * taken before it, which makes the transaction usable again, as a failed
         * statement leaves it on SQLite (sql.h); the consumer runtime undoes a
         * failed handler this way. */
        int rc = simple(tx->c->pg, sql, err, "rollback to savepoint");
        if (!rc)
            tx->failed = false;
        *changes = 0;
        return rc;
    }
    if (n == 0 && !tx->failed && deferrable(sql)) {
        if (tx->solo) { /* a savepoint needs a transaction block: reads from here on are in one */
            tx->solo = false;
            tx->begin = "BEGIN READ ONLY";
        }
        if (tx->ndefer == DEFER_MAX) {
            PGresult *r = NULL;
            int rc = run(tx, NULL, NULL, 0, &r, err);
            PQclear(r);
            if (rc)
                return rc;
        }
        tx->defer[tx->ndefer++] = xstrdup(sql);
        *changes = 0;
        return 0;
    }
    PGresult *r;
    int rc = run(h, sql, args, n, &r, err);
    if (rc)
        return rc;
    /* Only DML counts, as with SQLite's changes(). */
    const char *cmd = PQcmdStatus(r);
    bool dml = strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 || strncmp(cmd, "DELETE", 6) == 0 ||
               strncmp(cmd, "MERGE", 5) == 0;
    *changes = dml ? strtoll(PQcmdTuples(r), NULL, 10) : 0;
    PQclear(r);
    return 0;
}

static int x_query(void *h, const char *sql, const sql_arg *args, size_t n, void **out, pl_error *err)
{
    PGresult *r;
    int rc = run(h, sql, args, n, &r, err);
    if (rc)
        return rc;
    prows *rows = xcalloc(1, sizeof *rows);
    rows->res = r;
    rows->row = -1;
    rows->nrows = PQntuples(r);
    rows->ncols = PQnfields(r);
    rows->bytea = xcalloc((size_t)rows->ncols, sizeof *rows->bytea);
    rows->bytea_len = xcalloc((size_t)rows->ncols, sizeof *rows->bytea_len);
    *out = rows;
    return 0;
}

static int x_exec_script(void *h, const char *script, pl_error *err)
{
    ptx *tx = h;
    if (tx->failed)
        return err_set(err, PL_EINTERNAL, NULL, "postgres: a statement of this transaction failed; only rollback is valid");
    if (tx->begin || tx->ndefer || tx->solo) { /* the BEGIN first (a script is no pipeline's part) */
        if (tx->solo) {
            tx->solo = false;
            tx->begin = "BEGIN READ ONLY";
        }
        PGresult *r = NULL;
        int rc = run(tx, NULL, NULL, 0, &r, err);
        PQclear(r);
        if (rc)
            return rc;
    }
    /* Our own migration files: the simple protocol runs several statements in one go. */
    int rc = simple(tx->c->pg, script, err, "script");
    if (rc) {
        tx->failed = true;
        return rc;
    }
    pthread_mutex_lock(&tx->db->lock);
    tx->db->ddl_gen++;
    pthread_mutex_unlock(&tx->db->lock);
    return 0;
}

/* ---- rows --------------------------------------------------------------------------- */

static void rows_drop_bytea(prows *r)
{
    for (int i = 0; i < r->ncols; i++) {
        free(r->bytea[i]);
        r->bytea[i] = NULL;
    }
}

static int x_next(void *h, pl_error *err)
{
    prows *r = h;
    rows_drop_bytea(r);
    if (r->row + 1 >= r->nrows) {
        r->row = r->nrows;
        return 0;
    }
    r->row++;
    return 1;
}

static void x_rows_close(void *h)
{
    prows *r = h;
    rows_drop_bytea(r);
    PQclear(r->res);
    free(r->bytea);
    free(r->bytea_len);
    free(r);
}

static int x_ncols(void *h) { return ((prows *)h)->ncols; }

static bool cell_null(prows *r, int col)
{
    return col < 0 || col >= r->ncols || r->row < 0 || r->row >= r->nrows || PQgetisnull(r->res, r->row, col);
}

static sql_type x_coltype(void *h, int col)
{
    prows *r = h;
    if (cell_null(r, col))
        return SQL_T_NULL;
    switch (PQftype(r->res, col)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
    case OID_BOOL:
        return SQL_T_INT;
    case OID_FLOAT4:
    case OID_FLOAT8:
        return SQL_T_REAL;
    case OID_NUMERIC: /* sum(bigint) is numeric: integral values read as INT, as in SQLite */
        return strpbrk(PQgetvalue(r->res, r->row, col), ".eENI") ? SQL_T_REAL : SQL_T_INT;
    case OID_BYTEA:
        return SQL_T_BLOB;
    default:
        return SQL_T_TEXT;
    }
}

static unsigned hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? (unsigned)(ch - '0') : ((unsigned)(ch | 0x20) - 'a' + 10) & 15;
}

/* The decoded bytes of a bytea cell, NUL-terminated (so that it can also be
 * read as text, as SQLite allows), kept until the next row. */
static const unsigned char *cell_bytea(prows *r, int col, size_t *n)
{
    if (!r->bytea[col]) {
        const char *v = PQgetvalue(r->res, r->row, col);
        size_t len = (size_t)PQgetlength(r->res, r->row, col), k = 0;
        unsigned char *b;
        if (len >= 2 && v[0] == '\\' && v[1] == 'x') { /* hex, the default bytea_output */
            b = xcalloc((len - 2) / 2 + 1, 1);
            for (size_t i = 2; i + 1 < len; i += 2)
                b[k++] = (unsigned char)(hexval(v[i]) << 4 | hexval(v[i + 1]));
        } else { /* bytea_output = escape */
            unsigned char *u = PQunescapeBytea((const unsigned char *)v, &k);
            if (!u)
                abort();
            b = xcalloc(k + 1, 1);
            memcpy(b, u, k);
            PQfreemem(u);
        }
        r->bytea[col] = b;
        r->bytea_len[col] = k;
    }
    *n = r->bytea_len[col];
    return r->bytea[col];
}

static int64_t x_colint(void *h, int col)
{
    prows *r = h;
    if (cell_null(r, col))
        return 0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == OID_BOOL)
        return v[0] == 't';
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E' || errno == ERANGE) /* a real: truncate like SQLite */
        return (int64_t)strtod(v, NULL);
    return i;
}

static double x_colreal(void *h, int col)
{
    prows *r = h;
    if (cell_null(r, col))
        return 0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == OID_BOOL)
        return v[0] == 't';
    return strtod(v, NULL);
}

static const char *x_coltext(void *h, int col)
{
    prows *r = h;
    if (cell_null(r, col))
        return NULL;
    Oid t = PQftype(r->res, col);
    const char *v = PQgetvalue(r->res, r->row, col);
    if (t == OID_BOOL) /* an INT column's text is its decimal form */
        return v[0] == 't' ? "1" : "0";
    if (t == OID_BYTEA) {
        size_t n;
        return (const char *)cell_bytea(r, col, &n);
    }
    return v;
}

static const void *x_colblob(void *h, int col, size_t *n)
{
    prows *r = h;
    *n = 0;
    if (cell_null(r, col))
        return NULL;
    if (PQftype(r->res, col) == OID_BYTEA)
        return cell_bytea(r, col, n);
    *n = (size_t)PQgetlength(r->res, r->row, col);
    return PQgetvalue(r->res, r->row, col);
}

static const char *const pg_schemes[] = {"postgres://", "postgresql://", NULL};

const sql_driver sql_pg_driver = {
    .version = 1,
    .name = "postgres",
    .schemes = pg_schemes,
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
