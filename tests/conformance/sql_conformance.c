/*
 * sql_conformance.c - the sql store kind's contract (src/store/sql.h), held
 * against every engine by the same cases.
 *
 * Every SQL_CASE runs twice: suite sql_sqlite (always, in a temporary
 * directory) and suite sql_postgres (when PULSE_TEST_PG_URL names a server;
 * skipped with a message otherwise). Each PostgreSQL case works in a schema
 * of its own (service "c_<case>_<pid>") that it drops at the end, so cases
 * can run in parallel on one server.
 *
 * Suite sql_pg_only holds what only the PostgreSQL engine promises (statement
 * timeout, idle reaper, read replica routing, reconnect after a backend dies).
 * Suite sql_pg_fault restarts the server itself, so it runs only when
 * PULSE_TEST_PG_FAULTS=1 and PULSE_TEST_ENGINES_DIR name engines started by
 * scripts/engines.sh, alone (make test-conformance runs it after the others).
 */
#include "store/sql.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- fixture ---------------------------------------------------------------- */

static struct {
    bool pg;
    char dir[64];      /* SQLite: the temporary data directory */
    char service[64];
    sql_db *db;
} fx;

static const char *pg_url(void)
{
    const char *u = getenv("PULSE_TEST_PG_URL");
    return u && *u ? u : NULL;
}

static void skip_without_pg(void)
{
    if (!pg_url())
        cr_skip_test("PULSE_TEST_PG_URL is not set: PostgreSQL cases skipped "
                     "(make test-conformance starts a server and sets it)");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Opens the engine's database for service svc with options o (NULL: defaults). */
static int open_as(bool pg, const char *svc, const sql_options *o, sql_db **out, pl_error *err)
{
    sql_options opts = o ? *o : (sql_options){0};
    opts.service = svc;
    if (!pg) {
        if (!fx.dir[0]) {
            snprintf(fx.dir, sizeof fx.dir, "/tmp/pulse-conf-XXXXXX");
            cr_assert_not_null(mkdtemp(fx.dir));
        }
        opts.data_dir = fx.dir;
        return sql_open("", &opts, out, err);
    }
    return sql_open(pg_url(), &opts, out, err);
}

static void fx_open(bool pg, const char *name, const sql_options *o)
{
    if (pg)
        skip_without_pg();
    fx.pg = pg;
    snprintf(fx.service, sizeof fx.service, "c_%.40s_%d", name, (int)getpid());
    pl_error err = {0};
    int rc = open_as(pg, fx.service, o, &fx.db, &err);
    cr_assert_eq(rc, 0, "open %s: %s", pg ? "postgres" : "sqlite", err.msg);
    cr_assert_str_eq(sql_engine(fx.db), pg ? "postgres" : "sqlite");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void fx_close(void)
{
    if (fx.db && fx.pg) {
        sql_tx *tx;
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", fx.service);
        if (sql_begin(fx.db, SQL_TX_WRITE, &tx, NULL) == 0) {
            if (sql_exec(tx, sql, SQL_NOARGS, NULL, NULL) == 0)
                sql_commit(tx, NULL);
            else
                sql_rollback(tx);
        }
    }
    sql_close(fx.db);
    fx.db = NULL;
    if (fx.dir[0])
        nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    fx.dir[0] = '\0';
}

/* One case, two engines. */
#define SQL_CASE(name)                                                                                     \
    static void case_##name(sql_db *db);                                                                   \
    Test(sql_sqlite, name, .fini = fx_close, .timeout = 120) { fx_open(false, #name, NULL); case_##name(fx.db); } \
    Test(sql_postgres, name, .fini = fx_close, .timeout = 120) { fx_open(true, #name, NULL); case_##name(fx.db); } \
    static void case_##name(sql_db *db)

/* ---- helpers ------------------------------------------------------------------ */

static bool is_pg(sql_db *db) { return strcmp(sql_engine(db), "postgres") == 0; }

/* The statement for this engine: DDL differs (migrations are per engine), DML does not. */
static const char *dialect(sql_db *db, const char *sqlite, const char *pg) { return is_pg(db) ? pg : sqlite; }

static sql_tx *begin(sql_db *db, int flags)
{
    sql_tx *tx = NULL;
    pl_error err = {0};
    int rc = sql_begin(db, flags, &tx, &err);
    cr_assert_eq(rc, 0, "begin: %d %s", rc, err.msg);
    return tx;
}

static void commit(sql_tx *tx)
{
    pl_error err = {0};
    int rc = sql_commit(tx, &err);
    cr_assert_eq(rc, 0, "commit: %d %s", rc, err.msg);
}

static void exec_ok(sql_tx *tx, const char *sql, const sql_arg *args, size_t n)
{
    pl_error err = {0};
    int rc = sql_exec(tx, sql, args, n, NULL, &err);
    cr_assert_eq(rc, 0, "%s: %d %s", sql, rc, err.msg);
}

/* Runs one statement in its own write transaction; returns its result code. */
static int exec1(sql_db *db, const char *sql, const sql_arg *args, size_t n, pl_error *err)
{
    sql_tx *tx = NULL;
    int rc = sql_begin(db, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    rc = sql_exec(tx, sql, args, n, NULL, err);
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    return sql_commit(tx, err);
}

static void must(sql_db *db, const char *sql)
{
    pl_error err = {0};
    int rc = exec1(db, sql, SQL_NOARGS, &err);
    cr_assert_eq(rc, 0, "%s: %d %s", sql, rc, err.msg);
}

static void int_row(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

/* The single integer a query returns, in a read transaction. */
static int64_t scalar(sql_db *db, const char *sql, const sql_arg *args, size_t n)
{
    sql_tx *tx = begin(db, SQL_TX_READ);
    int64_t v = INT64_MIN;
    pl_error err = {0};
    int rc = sql_one(tx, sql, args, n, int_row, &v, &err);
    cr_assert_eq(rc, 1, "%s: rc %d %s", sql, rc, err.msg);
    sql_rollback(tx);
    return v;
}

static void make_kv(sql_db *db)
{
    must(db, "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)");
}

/* ---- typed values ---------------------------------------------------------------- */

SQL_CASE(typed_round_trip)
{
    must(db, dialect(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB)",
                     "CREATE TABLE t (id INTEGER PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA)"));
    static const unsigned char bytes[] = {0x00, 0xff, 0x01, 0x80, 'a', 0x00, '\\', 'x'};
    static const char *text = "h\xc3\xa9llo \xe2\x9c\x93 'single' \"double\" \\back $1 $$ -- not a comment";
    struct {
        int64_t i;
        double r;
        const char *s;
        const void *b;
        size_t n;
    } v[] = {
        {INT64_MAX, 3.141592653589793, text, bytes, sizeof bytes},
        {INT64_MIN, -0.5, "", "", 0},
        {0, 1e300, "x", bytes, 1},
        {-1, 5e-324, "$2", bytes + 1, 1},
        {42, 0.1, "0", bytes, 2},
    };
    size_t nv = sizeof v / sizeof v[0];
    sql_tx *tx = begin(db, SQL_TX_WRITE);
    for (size_t k = 0; k < nv; k++)
        exec_ok(tx, "INSERT INTO t (id, i, r, s, b) VALUES ($1, $2, $3, $4, $5)",
                SQL_ARGS(SQL_INT(k), SQL_INT(v[k].i), SQL_REAL(v[k].r), SQL_TEXT(v[k].s), SQL_BLOB(v[k].b, v[k].n)));
    commit(tx);

    /* A 1 MiB blob with every byte value. */
    size_t big_n = 1 << 20;
    unsigned char *big = malloc(big_n);
    for (size_t k = 0; k < big_n; k++)
        big[k] = (unsigned char)(k * 7 + k / 256);
    pl_error err = {0};
    cr_assert_eq(exec1(db, "INSERT INTO t (id, b) VALUES ($1, $2)", SQL_ARGS(SQL_INT(99), SQL_BLOB(big, big_n)), &err), 0,
                 "%s", err.msg);

    tx = begin(db, SQL_TX_READ);
    sql_rows *r;
    cr_assert_eq(sql_query(tx, "SELECT id, i, r, s, b FROM t WHERE id < $1 ORDER BY id", SQL_ARGS(SQL_INT(nv)), &r,
                           &err), 0, "%s", err.msg);
    cr_assert_eq(sql_ncols(r), 5);
    size_t k = 0;
    int rc;
    while ((rc = sql_next(r, &err)) == 1) {
        cr_assert_lt(k, nv);
        cr_assert_eq(sql_int(r, 0), (int64_t)k);
        cr_assert_eq(sql_int(r, 1), v[k].i, "row %zu: i %" PRId64 " != %" PRId64, k, sql_int(r, 1), v[k].i);
        cr_assert_eq(sql_real(r, 2), v[k].r, "row %zu: r %.17g != %.17g", k, sql_real(r, 2), v[k].r);
        cr_assert_str_eq(sql_text(r, 3), v[k].s, "row %zu", k);
        size_t n = 99;
        const void *b = sql_blob(r, 4, &n);
        cr_assert_eq(n, v[k].n, "row %zu: blob length %zu != %zu", k, n, v[k].n);
        if (n)
            cr_assert_eq(memcmp(b, v[k].b, n), 0, "row %zu: blob bytes differ", k);
        for (int c = 0; c < 5; c++)
            cr_assert_not(sql_isnull(r, c), "row %zu col %d: not null", k, c);
        k++;
    }
    cr_assert_eq(rc, 0, "next: %d %s", rc, err.msg);
    cr_assert_eq(k, nv);
    sql_rows_close(r);

    /* The kinds of values, as the engine reports them (through the driver's column type). */
    cr_assert_eq(sql_query(tx, "SELECT i, r, s, b, count(*) OVER (), sum(i) OVER () FROM t WHERE id = 2", SQL_NOARGS,
                           &r, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_next(r, &err), 1);
    cr_assert_eq(sql_int(r, 0), 0);
    cr_assert_eq(sql_real(r, 1), 1e300);
    cr_assert_str_eq(sql_text(r, 2), "x");
    cr_assert_eq(sql_int(r, 4), 1);
    cr_assert_eq(sql_int(r, 5), 0, "sum of integers reads as an integer");
    cr_assert_eq(sql_next(r, &err), 0);
    sql_rows_close(r);

    size_t n = 0;
    int found = 0;
    cr_assert_eq(sql_query(tx, "SELECT b FROM t WHERE id = $1", SQL_ARGS(SQL_INT(99)), &r, &err), 0, "%s", err.msg);
    while (sql_next(r, &err) == 1) {
        const unsigned char *b = sql_blob(r, 0, &n);
        cr_assert_eq(n, big_n);
        cr_assert_eq(memcmp(b, big, big_n), 0, "1 MiB blob differs");
        found++;
    }
    cr_assert_eq(found, 1);
    sql_rows_close(r);
    sql_rollback(tx);
    free(big);

    /* Integers and reals also work where the column says so: comparison, LIMIT, arithmetic. */
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE i > $1 AND r < $2", SQL_ARGS(SQL_INT(-2), SQL_REAL(1.0))), 2);
    cr_assert_eq(scalar(db, "SELECT id FROM t WHERE i IS NOT NULL ORDER BY id DESC LIMIT $1", SQL_ARGS(SQL_INT(1))), 4);
    cr_assert_eq(scalar(db, "SELECT i + $1 FROM t WHERE id = 4", SQL_ARGS(SQL_INT(3000000000))), 3000000042);
}

SQL_CASE(null_handling)
{
    must(db, dialect(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB)",
                     "CREATE TABLE t (id INTEGER PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA)"));
    const char *none = NULL;
    pl_error err = {0};
    cr_assert_eq(exec1(db, "INSERT INTO t (id, i, r, s, b) VALUES ($1, $2, $3, $4, $5)",
                       SQL_ARGS(SQL_INT(1), SQL_NULL, SQL_NULL, SQL_TEXT_OR_NULL(none), SQL_NULL), &err), 0, "%s",
                 err.msg);
    cr_assert_eq(exec1(db, "INSERT INTO t (id) VALUES ($1)", SQL_ARGS(SQL_INT(2)), &err), 0, "%s", err.msg);
    cr_assert_eq(exec1(db, "INSERT INTO t (id, s) VALUES ($1, $2)", SQL_ARGS(SQL_INT(3), SQL_TEXT("")), &err), 0, "%s",
                 err.msg);

    sql_tx *tx = begin(db, SQL_TX_READ);
    sql_rows *r;
    cr_assert_eq(sql_query(tx, "SELECT i, r, s, b FROM t WHERE id IN ($1, $2) ORDER BY id",
                           SQL_ARGS(SQL_INT(1), SQL_INT(2)), &r, &err), 0, "%s", err.msg);
    int rows = 0;
    while (sql_next(r, &err) == 1) {
        for (int c = 0; c < 4; c++)
            cr_assert(sql_isnull(r, c), "col %d is NULL", c);
        cr_assert_null(sql_text(r, 2), "text of NULL is NULL");
        cr_assert_null(sql_text(r, 0));
        cr_assert_eq(sql_int(r, 0), 0);
        cr_assert_eq(sql_real(r, 1), 0.0);
        size_t n = 7;
        cr_assert_null(sql_blob(r, 3, &n));
        cr_assert_eq(n, 0);
        rows++;
    }
    cr_assert_eq(rows, 2);
    sql_rows_close(r);
    sql_rollback(tx);

    /* The empty string is not NULL. */
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE s IS NULL", SQL_NOARGS), 2);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE s = $1", SQL_ARGS(SQL_TEXT(""))), 1);
    /* A NULL argument compares as unknown, and COALESCE picks the next. */
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE s = $1", SQL_ARGS(SQL_NULL)), 0);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE COALESCE(s, $1) = $1", SQL_ARGS(SQL_TEXT("-"))), 2);
    /* UPDATE ... = COALESCE($n, col) keeps the value when the argument is NULL (identity's profile update). */
    cr_assert_eq(exec1(db, "UPDATE t SET s = COALESCE($2, s) WHERE id = $1", SQL_ARGS(SQL_INT(3), SQL_NULL), &err), 0,
                 "%s", err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM t WHERE id = 3 AND s = ''", SQL_NOARGS), 1);
}

SQL_CASE(placeholders)
{
    must(db, "CREATE TABLE p (a BIGINT, b BIGINT, c TEXT)");
    pl_error err = {0};
    /* Out of order and repeated. */
    cr_assert_eq(exec1(db, "INSERT INTO p (c, b, a) VALUES ($3, $1, $1)",
                       SQL_ARGS(SQL_INT(7), SQL_INT(8), SQL_TEXT("seven")), &err), 0, "%s", err.msg);
    cr_assert_eq(exec1(db, "INSERT INTO p (a, b, c) VALUES ($2, $1, $3)",
                       SQL_ARGS(SQL_INT(1), SQL_INT(2), SQL_TEXT("two-one")), &err), 0, "%s", err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM p WHERE a = $1 AND b = $1", SQL_ARGS(SQL_INT(7))), 1);
    cr_assert_eq(scalar(db, "SELECT a FROM p WHERE b = $2 OR c = $1", SQL_ARGS(SQL_TEXT("none"), SQL_INT(1))), 2);

    /* "$1" inside a literal, a quoted identifier or a comment is not a placeholder. */
    sql_tx *tx = begin(db, SQL_TX_READ);
    sql_rows *r;
    cr_assert_eq(sql_query(tx,
                           "SELECT '$1' AS \"$2\", c /* $3 */ FROM p -- $4\n WHERE a = $1 AND c <> '$1'''",
                           SQL_ARGS(SQL_INT(7)), &r, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_next(r, &err), 1, "%s", err.msg);
    cr_assert_str_eq(sql_text(r, 0), "$1");
    cr_assert_str_eq(sql_text(r, 1), "seven");
    cr_assert_eq(sql_next(r, &err), 0);
    sql_rows_close(r);
    sql_rollback(tx);

    /* Arguments past the highest placeholder, or between, are ignored. */
    cr_assert_eq(scalar(db, "SELECT count(*) FROM p WHERE a = $1 OR a = $3",
                        SQL_ARGS(SQL_INT(7), SQL_TEXT("unused"), SQL_INT(2), SQL_BLOB("x", 1))), 2);

    /* A placeholder without its argument is the caller's bug: PL_EINVAL, and the tx is rolled back. */
    tx = begin(db, SQL_TX_READ);
    int rc = sql_query(tx, "SELECT a FROM p WHERE a = $2", SQL_ARGS(SQL_INT(7)), &r, &err);
    cr_assert_eq(rc, PL_EINVAL, "missing argument: %d %s", rc, err.msg);
    sql_rollback(tx);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM p", SQL_NOARGS), 2, "the db still works");
}

/* ---- transactions ------------------------------------------------------------------- */

SQL_CASE(commit_rollback_visibility)
{
    make_kv(db);
    sql_tx *tx = begin(db, SQL_TX_WRITE);
    exec_ok(tx, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT("gone"), SQL_INT(1)));
    cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), 0, "uncommitted rows are invisible to others");
    sql_rollback(tx);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), 0, "rolled back rows are gone");

    tx = begin(db, SQL_TX_WRITE);
    exec_ok(tx, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT("kept"), SQL_INT(2)));
    int64_t seen = -1;
    pl_error err = {0};
    cr_assert_eq(sql_one(tx, "SELECT v FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT("kept")), int_row, &seen, &err), 1);
    cr_assert_eq(seen, 2, "a transaction sees its own writes");
    commit(tx);
    cr_assert_eq(scalar(db, "SELECT v FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT("kept"))), 2);

    /* changes counts rows written. */
    tx = begin(db, SQL_TX_WRITE);
    exec_ok(tx, "INSERT INTO kv (k, v) VALUES ('a', 1), ('b', 1), ('c', 5)", SQL_NOARGS);
    int64_t changes = -1;
    cr_assert_eq(sql_exec(tx, "UPDATE kv SET v = v + 1 WHERE v = $1", SQL_ARGS(SQL_INT(1)), &changes, &err), 0);
    cr_assert_eq(changes, 2);
    cr_assert_eq(sql_exec(tx, "DELETE FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT("nope")), &changes, &err), 0);
    cr_assert_eq(changes, 0);
    commit(tx);

    /* sql_one: 0 without a row, and the callback is not called. */
    tx = begin(db, SQL_TX_READ);
    seen = -7;
    cr_assert_eq(sql_one(tx, "SELECT v FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT("none")), int_row, &seen, &err), 0);
    cr_assert_eq(seen, -7);
    sql_rollback(tx);
    cr_assert_eq(sql_ping(db, &err), 0, "%s", err.msg);
}

SQL_CASE(read_after_write_visible)
{
    make_kv(db);
    for (int k = 0; k < 20; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        sql_tx *tx = begin(db, SQL_TX_WRITE);
        exec_ok(tx, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(k)));
        commit(tx);
        /* Read right after the commit, in a read transaction (possibly another connection). */
        cr_assert_eq(scalar(db, "SELECT v FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT(key))), k);
        cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), k + 1);
    }
}

SQL_CASE(error_then_rollback_then_reuse)
{
    make_kv(db);
    sql_tx *tx = begin(db, SQL_TX_WRITE);
    exec_ok(tx, "INSERT INTO kv (k, v) VALUES ('a', 1)", SQL_NOARGS);
    pl_error err = {0};
    int rc = sql_exec(tx, "INSERT INTO no_such_table VALUES (1)", SQL_NOARGS, NULL, &err);
    cr_assert_lt(rc, 0);
    cr_assert(err.msg[0], "the error says why");
    sql_rollback(tx);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), 0, "the failed tx left nothing");
    /* Every pooled connection is usable afterwards. */
    for (int k = 0; k < 30; k++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        cr_assert_eq(exec1(db, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(k)), &err), 0,
                     "%s", err.msg);
    }
    cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), 30);
}

/* ---- constraints --------------------------------------------------------------------- */

SQL_CASE(unique_is_conflict)
{
    must(db, "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, username TEXT NOT NULL UNIQUE)");
    pl_error err = {0};
    cr_assert_eq(exec1(db, "INSERT INTO users (id, email, username) VALUES ($1, $2, $3)",
                       SQL_ARGS(SQL_TEXT("u1"), SQL_TEXT("a@x.io"), SQL_TEXT("ann")), &err), 0, "%s", err.msg);

    memset(&err, 0, sizeof err);
    int rc = exec1(db, "INSERT INTO users (id, email, username) VALUES ($1, $2, $3)",
                   SQL_ARGS(SQL_TEXT("u2"), SQL_TEXT("a@x.io"), SQL_TEXT("bob")), &err);
    cr_assert_eq(rc, PL_ECONFLICT, "duplicate email: %d %s", rc, err.msg);
    cr_assert_eq(err.code, PL_ECONFLICT);
    cr_assert_not_null(strstr(err.msg, "email"), "the message names the column: %s", err.msg);
    cr_assert_null(strstr(err.msg, "a@x.io"), "the message does not carry the value: %s", err.msg);

    memset(&err, 0, sizeof err);
    rc = exec1(db, "INSERT INTO users (id, email, username) VALUES ($1, $2, $3)",
               SQL_ARGS(SQL_TEXT("u3"), SQL_TEXT("c@x.io"), SQL_TEXT("ann")), &err);
    cr_assert_eq(rc, PL_ECONFLICT, "duplicate username: %d %s", rc, err.msg);
    cr_assert_not_null(strstr(err.msg, "username"), "%s", err.msg);
    cr_assert_null(strstr(err.msg, "email"), "names only the conflicting column: %s", err.msg);

    memset(&err, 0, sizeof err);
    rc = exec1(db, "INSERT INTO users (id, email, username) VALUES ($1, $2, $3)",
               SQL_ARGS(SQL_TEXT("u1"), SQL_TEXT("d@x.io"), SQL_TEXT("dan")), &err);
    cr_assert_eq(rc, PL_ECONFLICT, "duplicate primary key: %d %s", rc, err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users", SQL_NOARGS), 1);
}

SQL_CASE(check_is_unprocessable)
{
    must(db, "CREATE TABLE parent (id TEXT PRIMARY KEY)");
    must(db, "CREATE TABLE child (id TEXT PRIMARY KEY, parent TEXT REFERENCES parent (id),"
             " role TEXT NOT NULL CHECK (role IN ('student', 'teacher')))");
    must(db, "INSERT INTO parent (id) VALUES ('p')");
    pl_error err = {0};
    int rc = exec1(db, "INSERT INTO child (id, parent, role) VALUES ($1, $2, $3)",
                   SQL_ARGS(SQL_TEXT("c1"), SQL_TEXT("p"), SQL_TEXT("wizard")), &err);
    cr_assert_eq(rc, PL_EUNPROCESSABLE, "check: %d %s", rc, err.msg);
    rc = exec1(db, "INSERT INTO child (id, parent, role) VALUES ($1, $2, $3)",
               SQL_ARGS(SQL_TEXT("c2"), SQL_TEXT("p"), SQL_NULL), &err);
    cr_assert_eq(rc, PL_EUNPROCESSABLE, "not null: %d %s", rc, err.msg);
    rc = exec1(db, "INSERT INTO child (id, parent, role) VALUES ($1, $2, $3)",
               SQL_ARGS(SQL_TEXT("c3"), SQL_TEXT("nobody"), SQL_TEXT("student")), &err);
    cr_assert_eq(rc, PL_EUNPROCESSABLE, "foreign key: %d %s", rc, err.msg);
    cr_assert_eq(exec1(db, "INSERT INTO child (id, parent, role) VALUES ($1, $2, $3)",
                       SQL_ARGS(SQL_TEXT("c4"), SQL_TEXT("p"), SQL_TEXT("teacher")), &err), 0, "%s", err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM child", SQL_NOARGS), 1);
}

/* ---- migrations ----------------------------------------------------------------------- */

SQL_CASE(migrations_apply_once)
{
    const char *svc = fx.service;
    sql_migration migs[] = {
        /* out of order on purpose: the runner sorts by version */
        {svc, "sqlite", 2, "second", "ALTER TABLE m ADD COLUMN note TEXT; INSERT INTO m (id, note) VALUES (2, 'two');"},
        {svc, "sqlite", 1, "first", "CREATE TABLE m (id INTEGER PRIMARY KEY);\nINSERT INTO m (id) VALUES (1);"},
        {svc, "postgres", 2, "second", "ALTER TABLE m ADD COLUMN note TEXT; INSERT INTO m (id, note) VALUES (2, 'two');"},
        {svc, "postgres", 1, "first",
         "CREATE TABLE m (id BIGINT PRIMARY KEY);\n"
         "CREATE FUNCTION m_double(x BIGINT) RETURNS BIGINT LANGUAGE sql AS $$ SELECT x * 2 $$;\n"
         "INSERT INTO m (id) VALUES (m_double(1) - 1);"},
        {"other_service", "sqlite", 1, "not mine", "CREATE TABLE nope (x INTEGER);"},
        {"other_service", "postgres", 1, "not mine", "CREATE TABLE nope (x INTEGER);"},
    };
    size_t n = sizeof migs / sizeof migs[0];
    pl_error err = {0};
    int rc = sql_migrate(db, svc, migs, n, &err);
    cr_assert_eq(rc, 2, "first run applies both: %d %s", rc, err.msg);
    rc = sql_migrate(db, svc, migs, n, &err);
    cr_assert_eq(rc, 0, "second run applies none: %d %s", rc, err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM m", SQL_NOARGS), 2);
    cr_assert_eq(scalar(db, "SELECT max(version) FROM pulse_migrations WHERE service = $1", SQL_ARGS(SQL_TEXT(svc))), 2);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM pulse_migrations", SQL_NOARGS), 2, "only this service's");

    /* A failing migration leaves no trace: its DDL is rolled back with it and the version is not recorded. */
    sql_migration bad[] = {
        {svc, "sqlite", 3, "broken", "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);"},
        {svc, "postgres", 3, "broken", "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);"},
    };
    rc = sql_migrate(db, svc, bad, 2, &err);
    cr_assert_lt(rc, 0, "broken migration fails");
    cr_assert_not_null(strstr(err.msg, "003_broken"), "names the migration: %s", err.msg);
    cr_assert_eq(scalar(db, "SELECT max(version) FROM pulse_migrations WHERE service = $1", SQL_ARGS(SQL_TEXT(svc))), 2);
    rc = exec1(db, "INSERT INTO half (x) VALUES (1)", SQL_NOARGS, &err);
    cr_assert_lt(rc, 0, "the half-made table was rolled back");
}

/* Processes starting at once on a fresh schema migrate it together: each migration is applied
 * exactly once and none of them fails (on PostgreSQL, CREATE ... IF NOT EXISTS alone races). */
typedef struct mig_arg {
    bool pg;
    const sql_migration *migs;
    size_t n;
    int rc;
    char msg[256];
} mig_arg;

static void *mig_thread(void *p)
{
    mig_arg *a = p;
    sql_db *db = NULL;
    pl_error err = {0};
    a->rc = open_as(a->pg, fx.service, NULL, &db, &err);
    if (!a->rc)
        a->rc = sql_migrate(db, fx.service, a->migs, a->n, &err);
    sql_close(db);
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    return NULL;
}

SQL_CASE(migrations_concurrent)
{
    sql_migration mine[64];
    size_t k = 0;
    for (size_t i = 0; i < sql_builtin_nmigrations && k < 64; i++)
        if (strcmp(sql_builtin_migrations[i].service, "bus") == 0 &&
            strcmp(sql_builtin_migrations[i].engine, sql_engine(db)) == 0) {
            mine[k] = sql_builtin_migrations[i];
            mine[k].service = fx.service;
            k++;
        }
    cr_assert_gt(k, 0);
    enum { N = 4 };
    mig_arg a[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        a[i] = (mig_arg){.pg = strcmp(sql_engine(db), "postgres") == 0, .migs = mine, .n = k};
        pthread_create(&t[i], NULL, mig_thread, &a[i]);
    }
    int applied = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_geq(a[i].rc, 0, "process %d: %s", i, a[i].msg);
        applied += a[i].rc;
    }
    cr_assert_eq(applied, (int)k, "each migration applied once: %d of %zu", applied, k);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM pulse_migrations WHERE service = $1", SQL_ARGS(SQL_TEXT(fx.service))),
                 (int64_t)k);
}

/* The migrations compiled into pulse apply on this engine (identity's, the bus's, ...). */
SQL_CASE(builtin_migrations_apply)
{
    const char *services[] = {"identity", "bus"};
    for (size_t s = 0; s < 2; s++) {
        sql_migration mine[64];
        size_t k = 0;
        for (size_t i = 0; i < sql_builtin_nmigrations && k < 64; i++) {
            if (strcmp(sql_builtin_migrations[i].service, services[s]) == 0) {
                mine[k] = sql_builtin_migrations[i];
                mine[k].service = fx.service; /* into this case's own schema / file */
                k++;
            }
        }
        cr_assert_gt(k, 0, "%s has migrations", services[s]);
        pl_error err = {0};
        int rc = sql_migrate(db, fx.service, mine, k, &err);
        cr_assert_geq(rc, 1, "%s on %s: %d %s", services[s], sql_engine(db), rc, err.msg);
        /* Each engine has its own migrations: the same version exists for both. */
        must(db, "DELETE FROM pulse_migrations");
    }
    pl_error err = {0};
    cr_assert_eq(exec1(db, "INSERT INTO users (id, email, username, display_name, created_at, updated_at, password_hash)"
                           " VALUES ($1, $2, $3, $4, $5, $5, $6)",
                       SQL_ARGS(SQL_TEXT("u"), SQL_TEXT("e@x.io"), SQL_TEXT("u"), SQL_TEXT("U"),
                                SQL_TEXT("2026-01-01T00:00:00.000Z"), SQL_TEXT("h")), &err), 0, "%s", err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users WHERE role = 'student'", SQL_NOARGS), 1);
    /* migration 002 moved sessions to the kv store: the table is gone on every engine */
    cr_assert_lt(exec1(db, "INSERT INTO sessions (id) VALUES ('s')", SQL_NOARGS, &err), 0);
}

/* ---- concurrency ------------------------------------------------------------------------- */

#define WRITERS 4
#define PER_WRITER 200

typedef struct {
    sql_db *db;
    int id;
    int failures;
    char first_error[256];
} writer_arg;

static void *writer(void *p)
{
    writer_arg *a = p;
    for (int k = 0; k < PER_WRITER; k++) {
        char key[32];
        snprintf(key, sizeof key, "w%d-%d", a->id, k);
        pl_error err = {0};
        sql_tx *tx = NULL;
        int rc = sql_begin(a->db, SQL_TX_WRITE, &tx, &err);
        if (!rc) {
            rc = sql_exec(tx, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(a->id)), NULL, &err);
            if (!rc)
                rc = sql_exec(tx, "UPDATE counter SET n = n + 1 WHERE id = 1", SQL_NOARGS, NULL, &err);
            if (rc)
                sql_rollback(tx);
            else
                rc = sql_commit(tx, &err);
        }
        if (rc && !a->failures++)
            snprintf(a->first_error, sizeof a->first_error, "%d %s", rc, err.msg);
    }
    return NULL;
}

SQL_CASE(concurrent_writers)
{
    make_kv(db);
    must(db, "CREATE TABLE counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)");
    must(db, "INSERT INTO counter (id, n) VALUES (1, 0)");
    pthread_t t[WRITERS];
    writer_arg a[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        a[i] = (writer_arg){.db = db, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, writer, &a[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(a[i].failures, 0, "writer %d: %d failures, first: %s", i, a[i].failures, a[i].first_error);
    }
    cr_assert_eq(scalar(db, "SELECT count(*) FROM kv", SQL_NOARGS), WRITERS * PER_WRITER);
    cr_assert_eq(scalar(db, "SELECT n FROM counter WHERE id = 1", SQL_NOARGS), WRITERS * PER_WRITER,
                 "no lost update");
    for (int i = 0; i < WRITERS; i++)
        cr_assert_eq(scalar(db, "SELECT count(*) FROM kv WHERE v = $1", SQL_ARGS(SQL_INT(i))), PER_WRITER);
}

/* ---- cursors ------------------------------------------------------------------------------ */

SQL_CASE(rows_cursor_and_nested_query)
{
    make_kv(db);
    must(db, "CREATE TABLE detail (k TEXT NOT NULL, n BIGINT NOT NULL)");
    sql_tx *tx = begin(db, SQL_TX_WRITE);
    for (int k = 0; k < 50; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%02d", k);
        exec_ok(tx, "INSERT INTO kv (k, v) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(k)));
        for (int j = 0; j < k % 3; j++)
            exec_ok(tx, "INSERT INTO detail (k, n) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(j)));
    }
    commit(tx);

    /* While a cursor is open: a nested query (the same SQL too) and a write, in the same transaction. */
    tx = begin(db, SQL_TX_WRITE);
    sql_rows *r;
    pl_error err = {0};
    cr_assert_eq(sql_query(tx, "SELECT k, v FROM kv ORDER BY k", SQL_NOARGS, &r, &err), 0, "%s", err.msg);
    int rows = 0, rc;
    while ((rc = sql_next(r, &err)) == 1) {
        const char *key = sql_text(r, 0);
        int64_t v = sql_int(r, 1);
        char want[16];
        snprintf(want, sizeof want, "k%02d", rows);
        cr_assert_str_eq(key, want);
        cr_assert_eq(v, rows);
        int64_t nd = -1;
        cr_assert_eq(sql_one(tx, "SELECT count(*) FROM detail WHERE k = $1", SQL_ARGS(SQL_TEXT(key)), int_row, &nd, &err),
                     1, "%s", err.msg);
        cr_assert_eq(nd, rows % 3);
        int64_t again = -1;
        cr_assert_eq(sql_one(tx, "SELECT k, v FROM kv ORDER BY k", SQL_NOARGS, NULL, NULL, &err), 1, "%s", err.msg);
        cr_assert_eq(sql_one(tx, "SELECT v FROM kv WHERE k = $1", SQL_ARGS(SQL_TEXT(key)), int_row, &again, &err), 1);
        cr_assert_eq(again, v);
        exec_ok(tx, "INSERT INTO detail (k, n) VALUES ($1, $2)", SQL_ARGS(SQL_TEXT(key), SQL_INT(100)));
        cr_assert_str_eq(sql_text(r, 0), want, "the outer row is intact after nested calls");
        rows++;
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(rows, 50);
    cr_assert_eq(sql_next(r, &err), 0, "stays at the end");
    sql_rows_close(r);
    commit(tx);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM detail WHERE n = 100", SQL_NOARGS), 50);

    /* Closing a cursor early is fine, and an empty result ends at once. */
    tx = begin(db, SQL_TX_READ);
    cr_assert_eq(sql_query(tx, "SELECT k FROM kv", SQL_NOARGS, &r, &err), 0);
    cr_assert_eq(sql_next(r, &err), 1);
    sql_rows_close(r);
    cr_assert_eq(sql_query(tx, "SELECT k FROM kv WHERE v < 0", SQL_NOARGS, &r, &err), 0);
    cr_assert_eq(sql_next(r, &err), 0);
    sql_rows_close(r);
    sql_rows_close(NULL);
    sql_rollback(tx);
    sql_rollback(NULL);
}

/* ---- PostgreSQL only ------------------------------------------------------------------------ */

static void pg_open(const char *name, const sql_options *o)
{
    fx_open(true, name, o);
}

Test(sql_pg_only, statement_timeout, .fini = fx_close, .timeout = 60)
{
    pg_open("stmt_timeout", &(sql_options){.statement_timeout_ms = 300});
    sql_tx *tx = begin(fx.db, SQL_TX_READ);
    pl_error err = {0};
    int64_t t0 = now_ms();
    int rc = sql_exec(tx, "SELECT pg_sleep(5)", SQL_NOARGS, NULL, &err);
    int64_t took = now_ms() - t0;
    cr_assert_eq(rc, PL_ETIMEOUT, "%d %s", rc, err.msg);
    cr_assert_lt(took, 2000, "cancelled near 300 ms, took %" PRId64, took);
    sql_rollback(tx);
    cr_assert_eq(sql_ping(fx.db, &err), 0, "%s", err.msg);
}

static void str_row(void *ud, sql_rows *r) { snprintf(ud, 64, "%s", sql_text(r, 0) ? sql_text(r, 0) : "(null)"); }

/* The number of server sessions of an application name, seen from another handle. */
static int64_t sessions_of(sql_db *probe, const char *app)
{
    return scalar(probe, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", SQL_ARGS(SQL_TEXT(app)));
}

Test(sql_pg_only, pool_bounds_and_idle_reaper, .fini = fx_close, .timeout = 60)
{
    pg_open("pool", &(sql_options){.pool_max = 2, .idle_timeout_ms = 400, .busy_timeout_ms = 300});
    sql_db *probe;
    pl_error err = {0};
    char psvc[64];
    snprintf(psvc, sizeof psvc, "%s_probe", fx.service);
    cr_assert_eq(open_as(true, psvc, NULL, &probe, &err), 0, "%s", err.msg);
    char app[80];
    snprintf(app, sizeof app, "pulse-%s", fx.service);

    sql_tx *a = begin(fx.db, SQL_TX_WRITE), *b = begin(fx.db, SQL_TX_READ), *c = NULL;
    cr_assert_eq(sessions_of(probe, app), 2);
    int64_t t0 = now_ms();
    int rc = sql_begin(fx.db, SQL_TX_READ, &c, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "a third tx waits busy_timeout_ms, then gives up: %d %s", rc, err.msg);
    cr_assert_lt(now_ms() - t0, 2000);
    sql_rollback(b);
    c = begin(fx.db, SQL_TX_READ); /* the released connection is reused */
    cr_assert_eq(sessions_of(probe, app), 2);
    sql_rollback(c);
    sql_rollback(a);

    /* Idle connections close after idle_timeout_ms. */
    int64_t n = -1;
    for (int i = 0; i < 40 && n != 0; i++) {
        usleep(100 * 1000);
        n = sessions_of(probe, app);
    }
    cr_assert_eq(n, 0, "idle connections were closed");
    cr_assert_eq(sql_ping(fx.db, &err), 0, "and new ones are made on demand: %s", err.msg);
    sql_tx *tx = begin(probe, SQL_TX_WRITE);
    char sql[128];
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", psvc);
    exec_ok(tx, sql, SQL_NOARGS);
    commit(tx);
    sql_close(probe);
}

/* A backend killed under an idle pooled connection (what a server restart
 * does to all of them): the next transaction gets a new connection, unseen. */
Test(sql_pg_only, reconnect_after_backend_dies, .fini = fx_close, .timeout = 60)
{
    pg_open("backend_dies", NULL);
    make_kv(fx.db);
    sql_db *killer;
    pl_error err = {0};
    char ksvc[64];
    snprintf(ksvc, sizeof ksvc, "%s_k", fx.service);
    cr_assert_eq(open_as(true, ksvc, NULL, &killer, &err), 0, "%s", err.msg);
    for (int round = 0; round < 3; round++) {
        int64_t pid = scalar(fx.db, "SELECT pg_backend_pid()", SQL_NOARGS);
        cr_assert_eq(scalar(killer, "SELECT pg_terminate_backend($1)",
                            SQL_ARGS(SQL_INT(pid))), 1);
        for (int i = 0; i < 50 && scalar(killer, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                                         SQL_ARGS(SQL_INT(pid))) != 0; i++)
            usleep(20 * 1000);
        char key[8];
        snprintf(key, sizeof key, "r%d", round);
        int rc = exec1(fx.db, "INSERT INTO kv (k, v) VALUES ($1, 1)", SQL_ARGS(SQL_TEXT(key)), &err);
        cr_assert_eq(rc, 0, "round %d: the write after the backend died succeeds without a retry: %d %s", round, rc,
                     err.msg);
        cr_assert_neq(scalar(fx.db, "SELECT pg_backend_pid()", SQL_NOARGS), pid);
    }
    cr_assert_eq(scalar(fx.db, "SELECT count(*) FROM kv", SQL_NOARGS), 3);

    /* Inside a transaction the loss is reported (PL_EUNAVAILABLE), not hidden. */
    sql_tx *tx = begin(fx.db, SQL_TX_WRITE);
    int64_t pid = -1;
    cr_assert_eq(sql_one(tx, "SELECT pg_backend_pid()", SQL_NOARGS, int_row, &pid, &err), 1);
    cr_assert_eq(scalar(killer, "SELECT pg_terminate_backend($1)",
                        SQL_ARGS(SQL_INT(pid))), 1);
    usleep(200 * 1000);
    int rc = sql_exec(tx, "INSERT INTO kv (k, v) VALUES ('lost', 1)", SQL_NOARGS, NULL, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "%d %s", rc, err.msg);
    sql_rollback(tx);
    cr_assert_eq(exec1(fx.db, "INSERT INTO kv (k, v) VALUES ('after', 1)", SQL_NOARGS, &err), 0, "%s", err.msg);
    cr_assert_eq(scalar(fx.db, "SELECT count(*) FROM kv", SQL_NOARGS), 4);
    sql_close(killer);
}

/* The replica here is the primary under another application name, which
 * tells where each transaction ran. */
Test(sql_pg_only, read_replica_routing, .fini = fx_close, .timeout = 60)
{
    skip_without_pg();
    char replica[512];
    snprintf(replica, sizeof replica, "%s%sapplication_name=replica", pg_url(), strchr(pg_url(), '?') ? "&" : "?");
    pg_open("replica", &(sql_options){.replica_url = replica});
    char app[64];
    pl_error err = {0};
    sql_tx *tx = begin(fx.db, SQL_TX_READ);
    cr_assert_eq(sql_one(tx, "SELECT current_setting('application_name')", SQL_NOARGS, str_row, app, &err), 1);
    cr_assert_str_eq(app, "replica", "reads go to the replica");
    int rc = sql_exec(tx, "CREATE TABLE nope (x INTEGER)", SQL_NOARGS, NULL, &err);
    cr_assert_lt(rc, 0, "a read transaction cannot write");
    sql_rollback(tx);
    tx = begin(fx.db, SQL_TX_WRITE);
    cr_assert_eq(sql_one(tx, "SELECT current_setting('application_name')", SQL_NOARGS, str_row, app, &err), 1);
    cr_assert_neq(strcmp(app, "replica"), 0, "writes go to the primary (%s)", app);
    sql_rollback(tx);
    sql_close(fx.db);
    fx.db = NULL;

    /* A replica that is down (refusing, or not answering at all): reads fall back to the primary,
     * and after one failure they stop waiting for the replica. */
    const char *down[] = {"postgres://pulse@127.0.0.1:1/none", "postgres://pulse@10.255.255.1:5432/none"};
    for (int i = 0; i < 2; i++) {
        pg_open(i ? "replica_mute" : "replica_down", &(sql_options){.replica_url = down[i], .connect_timeout_ms = 500});
        for (int k = 0; k < 3; k++) {
            int64_t t0 = now_ms();
            tx = begin(fx.db, SQL_TX_READ);
            cr_assert_eq(sql_one(tx, "SELECT current_setting('application_name')", SQL_NOARGS, str_row, app, &err), 1);
            cr_assert_neq(strcmp(app, "replica"), 0);
            sql_rollback(tx);
            if (k > 0)
                cr_assert_lt(now_ms() - t0, 300, "read %d did not wait for the dead replica", k);
        }
        fx_close();
    }
}

Test(sql_pg_only, bad_urls, .timeout = 60)
{
    sql_db *db = NULL;
    pl_error err = {0};
    sql_options o = {.service = "x", .connect_timeout_ms = 300};
    int rc = sql_open("postgres://pulse@127.0.0.1/x?no_such_option=1", &o, &db, &err);
    cr_assert_eq(rc, PL_ECONFIG, "%d %s", rc, err.msg);
    int64_t t0 = now_ms();
    rc = sql_open("postgres://pulse@127.0.0.1:1/x", &o, &db, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "nobody listens: %d %s", rc, err.msg);
    cr_assert_lt(now_ms() - t0, 1000);
    /* A blackholed address: the connect timeout bounds the wait. */
    t0 = now_ms();
    rc = sql_open("postgres://pulse@10.255.255.1:5432/x", &o, &db, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "%d %s", rc, err.msg);
    cr_assert_lt(now_ms() - t0, 1500, "connect_timeout_ms = 300 holds");
}

/* ---- PostgreSQL restarts (suite sql_pg_fault: alone, on engines of scripts/engines.sh) ---- */

static void engines(const char *verb)
{
    const char *dir = getenv("PULSE_TEST_ENGINES_DIR");
    const char *sh = getenv("PULSE_TEST_ENGINES_SH");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s %s pg %s >/dev/null", sh && *sh ? sh : "scripts/engines.sh", verb, dir);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
}

static void fault_open(const char *name)
{
    const char *on = getenv("PULSE_TEST_PG_FAULTS");
    const char *dir = getenv("PULSE_TEST_ENGINES_DIR");
    if (!on || strcmp(on, "1") != 0 || !dir || !*dir)
        cr_skip_test("PostgreSQL restart cases need PULSE_TEST_PG_FAULTS=1 and PULSE_TEST_ENGINES_DIR "
                     "(make test-conformance runs them alone)");
    pg_open(name, &(sql_options){.connect_timeout_ms = 2000});
}

/* Retries a write once when the first attempt says PL_EUNAVAILABLE; returns the attempts used. */
static int write_with_one_retry(sql_db *db, const char *key)
{
    pl_error err = {0};
    int rc = exec1(db, "INSERT INTO kv (k, v) VALUES ($1, 1)", SQL_ARGS(SQL_TEXT(key)), &err);
    if (rc == PL_EUNAVAILABLE) {
        rc = exec1(db, "INSERT INTO kv (k, v) VALUES ($1, 1)", SQL_ARGS(SQL_TEXT(key)), &err);
        cr_assert_eq(rc, 0, "second attempt: %d %s", rc, err.msg);
        return 2;
    }
    cr_assert_eq(rc, 0, "%d %s", rc, err.msg);
    return 1;
}

Test(sql_pg_fault, restart_between_transactions, .fini = fx_close, .timeout = 120)
{
    fault_open("restart");
    make_kv(fx.db);
    /* Several pooled connections, all of which the restart kills. */
    sql_tx *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = begin(fx.db, SQL_TX_READ);
    for (int i = 0; i < 4; i++)
        sql_rollback(t[i]);
    cr_assert_eq(write_with_one_retry(fx.db, "before"), 1);
    engines("restart");
    int attempts = write_with_one_retry(fx.db, "after");
    cr_assert_leq(attempts, 2);
    cr_log_info("write after restart took %d attempt(s)", attempts);
    cr_assert_eq(scalar(fx.db, "SELECT count(*) FROM kv", SQL_NOARGS), 2);
}

Test(sql_pg_fault, outage_fails_fast_then_recovers, .fini = fx_close, .timeout = 120)
{
    fault_open("outage");
    make_kv(fx.db);
    sql_tx *idle[3]; /* pooled connections that the outage leaves dead */
    for (int i = 0; i < 3; i++)
        idle[i] = begin(fx.db, SQL_TX_READ);
    for (int i = 0; i < 3; i++)
        sql_rollback(idle[i]);
    sql_tx *open_tx = begin(fx.db, SQL_TX_WRITE);
    exec_ok(open_tx, "INSERT INTO kv (k, v) VALUES ('in-flight', 1)", SQL_NOARGS);
    engines("down");

    /* The transaction that was open when the server went away. */
    pl_error err = {0};
    int64_t t0 = now_ms();
    int rc = sql_exec(open_tx, "INSERT INTO kv (k, v) VALUES ('in-flight-2', 1)", SQL_NOARGS, NULL, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "%d %s", rc, err.msg);
    sql_rollback(open_tx);

    /* New work during the outage: refused quickly, never a hang past the connect timeout. */
    for (int i = 0; i < 5; i++) {
        sql_tx *tx = NULL;
        t0 = now_ms();
        rc = sql_begin(fx.db, SQL_TX_WRITE, &tx, &err);
        int64_t took = now_ms() - t0;
        cr_assert_eq(rc, PL_EUNAVAILABLE, "during the outage: %d %s", rc, err.msg);
        cr_assert_lt(took, 2500, "answered in %" PRId64 " ms", took);
    }
    t0 = now_ms();
    rc = sql_ping(fx.db, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE);
    cr_assert_lt(now_ms() - t0, 2500);

    engines("up");
    /* Back within seconds, by itself. */
    t0 = now_ms();
    int64_t back = -1;
    while (now_ms() - t0 < 10000) {
        if (exec1(fx.db, "INSERT INTO kv (k, v) VALUES ('after', 1)", SQL_NOARGS, &err) == 0) {
            back = now_ms() - t0;
            break;
        }
        usleep(100 * 1000);
    }
    cr_assert_geq(back, 0, "recovered: %s", err.msg);
    cr_log_info("first write after the server came back: %" PRId64 " ms", back);
    cr_assert_eq(scalar(fx.db, "SELECT count(*) FROM kv", SQL_NOARGS), 1, "the in-flight transaction was not committed");
}

/* The consumer runtime's pattern: each event under a savepoint; a failed
 * statement is undone by ROLLBACK TO, the transaction goes on, and what came
 * before it commits (PostgreSQL aborts the transaction on an error until
 * then; SQLite keeps it usable). */
SQL_CASE(rollback_to_savepoint_recovers_after_a_failed_statement)
{
    must(db, "CREATE TABLE sp (k TEXT PRIMARY KEY)");
    sql_tx *tx = begin(db, SQL_TX_WRITE);
    pl_error err = {0};
    cr_assert_eq(sql_exec(tx, "INSERT INTO sp (k) VALUES ($1)", SQL_ARGS(SQL_TEXT("a")), NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_exec(tx, "SAVEPOINT pulse_event", SQL_NOARGS, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_exec(tx, "INSERT INTO sp (k) VALUES ($1)", SQL_ARGS(SQL_TEXT("b")), NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_exec(tx, "INSERT INTO sp (k) VALUES ($1)", SQL_ARGS(SQL_TEXT("a")), NULL, &err), PL_ECONFLICT);
    cr_assert_eq(sql_exec(tx, "ROLLBACK TO SAVEPOINT pulse_event", SQL_NOARGS, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_exec(tx, "RELEASE SAVEPOINT pulse_event", SQL_NOARGS, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_exec(tx, "INSERT INTO sp (k) VALUES ($1)", SQL_ARGS(SQL_TEXT("c")), NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(sql_commit(tx, &err), 0, "%s", err.msg);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM sp WHERE k IN ('a', 'c')", SQL_NOARGS), 2);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM sp WHERE k = 'b'", SQL_NOARGS), 0, "the savepoint's work is undone");
}
