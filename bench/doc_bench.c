/*
 * doc_bench.c - the doc store kind at a paced rate, next to the raw engine
 * on the same table shape in the same run (run by bench/doc.sh).
 *
 *   doc_bench <pg-url|""> <rate> <seconds> <seed-docs>
 *
 * With a PostgreSQL URL: the doc store on JSONB (collection "posts", index
 * (user_id text, created int)) and raw libpq on a table of the same shape
 * (id text COLLATE "C" PRIMARY KEY, doc jsonb) with the same expression index,
 * prepared statements: BEGIN; INSERT; COMMIT for a write (what a doc write in
 * a transaction costs), and the same SELECT for a read. With "": the doc
 * store on SQLite (JSON1) and raw sqlite3 statements likewise, in a
 * temporary directory.
 *
 * Each run is open loop: operation i is due at start + i/rate and its
 * latency is measured from when it was due (so a stall counts for every
 * operation it delays). DOC_CLIENTS threads (default 8; each with its own
 * connection on the raw side) take the operations in turn, as concurrent
 * requests would: a commit's fsync then holds up one client, not the rate. Reads are "the newest 10 posts of a user" (equality
 * on user_id, order by created desc, limit 10: one index range scan). Rounds
 * alternate doc and raw. Prints one line per run:
 *   engine=pg side=doc op=write n=5000 rate=999.8 p50_us=.. p99_us=.. max_us=.. cpu_us_per_op=..
 */
#include "store/doc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define USERS 1000

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "doc_bench: %s: %s\n", what, msg);
    exit(1);
}

/* ---- the two sides ------------------------------------------------------------- */

#define MAXC 32

typedef struct rawconn {
    PGconn *pg;
    sqlite3 *lite;
    sqlite3_stmt *ins, *sel, *begin, *commit;
} rawconn;

typedef struct side {
    const char *name;
    int (*write)(struct side *s, int w, const char *id, const char *json);
    int (*read)(struct side *s, int w, const char *user);
    doc_store *d;
    rawconn c[MAXC];
} side;

static int doc_write(side *s, int w, const char *id, const char *json)
{
    json_t *j = json_loads(json, 0, NULL);
    sql_tx *tx;
    pl_error err = {0};
    int rc = sql_begin(doc_sql(s->d), SQL_TX_WRITE, &tx, &err);
    if (!rc) {
        rc = doc_insert(tx, s->d, "posts", id, j, &err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    json_decref(j);
    if (rc)
        die("doc write", err.msg);
    return 0;
}

static int doc_read(side *s, int w, const char *user)
{
    json_t *u = json_string(user);
    doc_cond c = {"user_id", DOC_EQ, u};
    doc_query q = {.where = &c, .nwhere = 1, .order_by = "created", .desc = true, .limit = 10};
    sql_tx *tx;
    pl_error err = {0};
    char **ids;
    json_t **docs;
    size_t n = 0;
    int rc = sql_begin(doc_sql(s->d), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = doc_find(tx, s->d, "posts", &q, &ids, &docs, &n, &err);
        sql_rollback(tx);
    }
    json_decref(u);
    if (rc)
        die("doc read", err.msg);
    if (n == 0)
        die("doc read", "no rows");
    doc_results_free(ids, docs, n);
    return 0;
}

static void pg_ok(PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want)
        die(what, PQresultErrorMessage(r));
    PQclear(r);
}

static int pg_write(side *s, int w, const char *id, const char *json)
{
    const char *v[2] = {id, json};
    PGconn *pg = s->c[w].pg;
    pg_ok(PQexec(pg, "BEGIN"), PGRES_COMMAND_OK, "raw begin");
    pg_ok(PQexecPrepared(pg, "ins", 2, v, NULL, NULL, 0), PGRES_COMMAND_OK, "raw insert");
    pg_ok(PQexec(pg, "COMMIT"), PGRES_COMMAND_OK, "raw commit");
    return 0;
}

static int pg_read(side *s, int w, const char *user)
{
    const char *v[1] = {user};
    PGresult *r = PQexecPrepared(s->c[w].pg, "sel", 1, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) == 0)
        die("raw read", PQresultErrorMessage(r));
    PQclear(r);
    return 0;
}

static void lite_step(sqlite3_stmt *st, int want, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc != want)
        die(what, sqlite3_errstr(rc));
    sqlite3_reset(st);
}

static int lite_write(side *s, int w, const char *id, const char *json)
{
    rawconn *c = &s->c[w];
    lite_step(c->begin, SQLITE_DONE, "raw begin");
    sqlite3_bind_text(c->ins, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(c->ins, 2, json, -1, SQLITE_STATIC);
    lite_step(c->ins, SQLITE_DONE, "raw insert");
    lite_step(c->commit, SQLITE_DONE, "raw commit");
    return 0;
}

static int lite_read(side *s, int w, const char *user)
{
    sqlite3_stmt *sel = s->c[w].sel;
    sqlite3_bind_text(sel, 1, user, -1, SQLITE_STATIC);
    int n = 0, rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW)
        n += sqlite3_column_bytes(sel, 1) > 0;
    sqlite3_reset(sel);
    if (rc != SQLITE_DONE || n == 0)
        die("raw read", rc != SQLITE_DONE ? sqlite3_errstr(rc) : "no rows");
    return 0;
}

/* ---- the workload -------------------------------------------------------------- */

static char body[257];
static atomic_long seq;

static void make_doc(char *id, size_t idn, char *json, size_t jn, const char *prefix)
{
    long k = atomic_fetch_add(&seq, 1);
    snprintf(id, idn, "%s%08ld", prefix, k);
    snprintf(json, jn, "{\"user_id\":\"user%04ld\",\"created\":%ld,\"title\":\"post %ld\",\"likes\":0,\"body\":\"%s\"}",
             k % USERS, 1700000000000L + k, k, body);
}

static int nclients = 8;

typedef struct runner {
    side *s;
    bool write;
    const char *prefix;
    long n;
    int64_t t0, period;
    atomic_long next;
    int64_t *lat;
} runner;

typedef struct worker {
    runner *r;
    int w;
} worker;

static void *work(void *p)
{
    worker *wk = p;
    runner *r = wk->r;
    char id[64], json[512], user[16];
    for (;;) {
        long i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n)
            break;
        int64_t due = r->t0 + i * r->period, t;
        while ((t = now_ns()) < due) {
            int64_t wait = due - t;
            struct timespec ts = {0, (long)(wait > 200000 ? wait - 100000 : wait / 2)};
            nanosleep(&ts, NULL);
        }
        if (r->write) {
            make_doc(id, sizeof id, json, sizeof json, r->prefix);
            r->s->write(r->s, wk->w, id, json);
        } else {
            snprintf(user, sizeof user, "user%04ld", (i * 7919) % USERS);
            r->s->read(r->s, wk->w, user);
        }
        r->lat[i] = now_ns() - due;
    }
    return NULL;
}

static void run(const char *engine, side *s, const char *op, double rate, double secs, const char *prefix)
{
    runner r = {.s = s, .write = op[0] == 'w', .prefix = prefix, .n = (long)(rate * secs), .period = (int64_t)(1e9 / rate)};
    r.lat = malloc((size_t)r.n * sizeof *r.lat);
    pthread_t th[MAXC];
    worker wk[MAXC];
    int64_t c0 = cpu_us();
    r.t0 = now_ns() + 1000000;
    for (int w = 0; w < nclients; w++) {
        wk[w] = (worker){&r, w};
        pthread_create(&th[w], NULL, work, &wk[w]);
    }
    for (int w = 0; w < nclients; w++)
        pthread_join(th[w], NULL);
    int64_t wall = now_ns() - r.t0, cpu = cpu_us() - c0;
    long n = r.n;
    int64_t *lat = r.lat;
    qsort(lat, (size_t)n, sizeof *lat, cmp64);
    printf("engine=%s side=%s op=%s clients=%d n=%ld rate=%.1f p50_us=%.0f p99_us=%.0f max_us=%.0f cpu_us_per_op=%.1f\n",
           engine, s->name, op, nclients, n, (double)n * 1e9 / (double)wall, (double)lat[n / 2] / 1e3,
           (double)lat[n * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3, (double)cpu / (double)n);
    fflush(stdout);
    free(lat);
}

/* Seeds in transactions of 500 (one fsync each), so seeding does not take minutes. */
static void seed(side *s, long count, const char *prefix)
{
    char id[64], json[512];
    for (long i = 0; i < count;) {
        sql_tx *tx = NULL;
        pl_error err = {0};
        if (s->d && sql_begin(doc_sql(s->d), SQL_TX_WRITE, &tx, &err))
            die("seed begin", err.msg);
        if (s->c[0].pg)
            pg_ok(PQexec(s->c[0].pg, "BEGIN"), PGRES_COMMAND_OK, "seed begin");
        if (s->c[0].lite)
            lite_step(s->c[0].begin, SQLITE_DONE, "seed begin");
        for (long k = 0; k < 500 && i < count; k++, i++) {
            make_doc(id, sizeof id, json, sizeof json, prefix);
            if (s->d) {
                json_t *j = json_loads(json, 0, NULL);
                if (doc_insert(tx, s->d, "posts", id, j, &err))
                    die("seed", err.msg);
                json_decref(j);
            } else if (s->c[0].pg) {
                const char *v[2] = {id, json};
                pg_ok(PQexecPrepared(s->c[0].pg, "ins", 2, v, NULL, NULL, 0), PGRES_COMMAND_OK, "seed insert");
            } else {
                sqlite3_bind_text(s->c[0].ins, 1, id, -1, SQLITE_STATIC);
                sqlite3_bind_text(s->c[0].ins, 2, json, -1, SQLITE_STATIC);
                lite_step(s->c[0].ins, SQLITE_DONE, "seed insert");
            }
        }
        if (s->d && sql_commit(tx, &err))
            die("seed commit", err.msg);
        if (s->c[0].pg)
            pg_ok(PQexec(s->c[0].pg, "COMMIT"), PGRES_COMMAND_OK, "seed commit");
        if (s->c[0].lite)
            lite_step(s->c[0].commit, SQLITE_DONE, "seed commit");
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: doc_bench <pg-url|\"\"> <rate> <seconds> <seed-docs>\n");
        return 2;
    }
    const char *url = argv[1];
    double rate = atof(argv[2]), secs = atof(argv[3]);
    long nseed = atol(argv[4]);
    int rounds = getenv("DOC_ROUNDS") ? atoi(getenv("DOC_ROUNDS")) : 2;
    bool pg = *url != '\0';
    for (size_t i = 0; i < sizeof body - 1; i++)
        body[i] = (char)('a' + i % 26);

    char dir[64] = "";
    sql_options o = {.service = "docbench"};
    if (!pg) {
        snprintf(dir, sizeof dir, "/tmp/pulse-docbench-XXXXXX");
        if (!mkdtemp(dir))
            die("mkdtemp", dir);
        o.data_dir = dir;
    }
    side doc = {.name = "doc", .write = doc_write, .read = doc_read};
    pl_error err = {0};
    if (doc_open(url, &o, &doc.d, &err))
        die("doc_open", err.msg);
    static const doc_index ix[] = {{"user_id", DOC_TEXT}, {"created", DOC_INT}, {NULL, 0}};
    static const doc_index *const ixs[] = {ix, NULL};
    doc_collection_def def = {"posts", ixs};
    if (doc_ensure(doc.d, &def, 1, &err))
        die("doc_ensure", err.msg);

    side raw = {.name = "raw"};
    if (getenv("DOC_CLIENTS"))
        nclients = atoi(getenv("DOC_CLIENTS"));
    if (nclients < 1 || nclients > MAXC)
        die("DOC_CLIENTS", "1..32");
    if (pg) {
        raw.write = pg_write;
        raw.read = pg_read;
        for (int w = 0; w < nclients; w++) {
            PGconn *c = raw.c[w].pg = PQconnectdb(url);
            if (PQstatus(c) != CONNECTION_OK)
                die("connect", PQerrorMessage(c));
            pg_ok(PQexec(c, "SET search_path TO docbench"), PGRES_COMMAND_OK, "search_path");
            if (w == 0) {
                pg_ok(PQexec(c, "DROP TABLE IF EXISTS raw_posts"), PGRES_COMMAND_OK, "drop");
                pg_ok(PQexec(c, "CREATE TABLE raw_posts (id text COLLATE \"C\" PRIMARY KEY, doc jsonb NOT NULL)"),
                      PGRES_COMMAND_OK, "create");
                pg_ok(PQexec(c, "CREATE INDEX raw_posts_uc ON raw_posts ((doc->>'user_id'), ((doc->>'created')::bigint) DESC)"),
                      PGRES_COMMAND_OK, "index");
            }
            pg_ok(PQprepare(c, "ins", "INSERT INTO raw_posts (id, doc) VALUES ($1, $2::jsonb)", 2, NULL),
                  PGRES_COMMAND_OK, "prepare");
            pg_ok(PQprepare(c, "sel",
                            "SELECT id, doc FROM raw_posts WHERE doc->>'user_id' = $1 ORDER BY (doc->>'created')::bigint DESC"
                            " LIMIT 10",
                            1, NULL),
                  PGRES_COMMAND_OK, "prepare");
        }
    } else {
        raw.write = lite_write;
        raw.read = lite_read;
        char path[128];
        snprintf(path, sizeof path, "%s/raw.db", dir);
        for (int w = 0; w < nclients; w++) {
            rawconn *c = &raw.c[w];
            if (sqlite3_open(path, &c->lite) != SQLITE_OK)
                die("sqlite3_open", path);
            sqlite3_busy_timeout(c->lite, 5000);
            sqlite3_exec(c->lite, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
            if (w == 0)
                sqlite3_exec(c->lite,
                             "CREATE TABLE raw_posts (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL);"
                             "CREATE INDEX raw_posts_uc ON raw_posts (json_extract(doc,'$.user_id'), json_extract(doc,'$.created'));",
                             NULL, NULL, NULL);
            sqlite3_prepare_v2(c->lite, "INSERT INTO raw_posts (id, doc) VALUES (?1, ?2)", -1, &c->ins, NULL);
            sqlite3_prepare_v2(c->lite,
                               "SELECT id, doc FROM raw_posts WHERE json_extract(doc,'$.user_id') = ?1"
                               " ORDER BY json_extract(doc,'$.created') DESC LIMIT 10",
                               -1, &c->sel, NULL);
            sqlite3_prepare_v2(c->lite, "BEGIN IMMEDIATE", -1, &c->begin, NULL);
            sqlite3_prepare_v2(c->lite, "COMMIT", -1, &c->commit, NULL);
            if (!c->ins || !c->sel || !c->begin || !c->commit)
                die("sqlite prepare", sqlite3_errmsg(c->lite));
        }
    }
    const char *engine = pg ? "pg" : "sqlite";
    fprintf(stderr, "[doc-bench] %s: seeding %ld documents on each side\n", engine, nseed);
    seed(&doc, nseed, "d");
    seed(&raw, nseed, "r");
    if (pg) {
        pg_ok(PQexec(raw.c[0].pg, "ANALYZE raw_posts"), PGRES_COMMAND_OK, "analyze");
        pg_ok(PQexec(raw.c[0].pg, "ANALYZE doc_posts"), PGRES_COMMAND_OK, "analyze");
    }
    /* warm both sides (connections, prepared statements, caches) */
    run(engine, &doc, "read", rate, 0.5, "d");
    run(engine, &raw, "read", rate, 0.5, "r");
    fprintf(stderr, "[doc-bench] %s: measuring (%d clients)\n", engine, nclients);
    for (int r = 0; r < rounds; r++) {
        run(engine, &doc, "write", rate, secs, "d");
        run(engine, &raw, "write", rate, secs, "r");
        run(engine, &doc, "read", rate, secs, "d");
        run(engine, &raw, "read", rate, secs, "r");
    }
    if (pg)
        pg_ok(PQexec(raw.c[0].pg, "DROP SCHEMA docbench CASCADE"), PGRES_COMMAND_OK, "drop schema");
    for (int w = 0; w < nclients; w++) {
        rawconn *c = &raw.c[w];
        PQfinish(c->pg);
        sqlite3_finalize(c->ins);
        sqlite3_finalize(c->sel);
        sqlite3_finalize(c->begin);
        sqlite3_finalize(c->commit);
        sqlite3_close(c->lite);
    }
    doc_close(doc.d);
    if (!pg) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "doc_bench: could not remove %s\n", dir);
    }
    return 0;
}
