/* store_sqlite.c - unit tests of the sql store kind on its SQLite engine
 * (src/store/sql.c, src/store/sqlite/sql_sqlite.c). */
#include "store/sql.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static sql_db *db;

static void open_db(void)
{
    snprintf(dir, sizeof dir, "/tmp/pulse-sql-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    sql_options o = {.data_dir = dir, .service = "unit"};
    pl_error err = {0};
    int rc = sql_open("", &o, &db, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void close_db(void)
{
    sql_close(db);
    db = NULL;
    if (dir[0])
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(sql, .init = open_db, .fini = close_db);

/* Runs one statement in its own write transaction. */
static int exec1(const char *sql, const sql_arg *args, size_t n, pl_error *err)
{
    sql_tx *tx;
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

static void must(const char *sql)
{
    pl_error err = {0};
    int rc = exec1(sql, SQL_NOARGS, &err);
    cr_assert_eq(rc, 0, "%s: %s", sql, err.msg);
}

static void count_row(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

static int64_t count(const char *sql)
{
    sql_tx *tx;
    pl_error err = {0};
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0, "%s", err.msg);
    int64_t n = -1;
    int rc = sql_one(tx, sql, SQL_NOARGS, count_row, &n, &err);
    cr_assert_eq(rc, 1, "%s: rc %d %s", sql, rc, err.msg);
    sql_rollback(tx);
    return n;
}

Test(sql, one_file_per_service_in_the_data_dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/unit.db", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s was not created", path);
    cr_assert_str_eq(sql_engine(db), "sqlite");
    pl_error err = {0};
    cr_assert_eq(sql_ping(db, &err), 0, "%s", err.msg);

    /* a second service gets a second file; a nested data dir is created */
    char sub[128];
    snprintf(sub, sizeof sub, "%s/nested/deeper", dir);
    sql_options o = {.data_dir = sub, .service = "other"};
    sql_db *db2;
    cr_assert_eq(sql_open("sqlite:", &o, &db2, &err), 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/other.db", sub);
    cr_assert_eq(stat(path, &st), 0, "%s was not created", path);
    sql_close(db2);
    sql_close(NULL);
}

Test(sql, explicit_file_url_and_failures)
{
    char path[128];
    snprintf(path, sizeof path, "sqlite:%s/explicit.db", dir);
    sql_options o = {.data_dir = "/nonexistent-not-used", .service = "x"};
    sql_db *db2;
    pl_error err = {0};
    cr_assert_eq(sql_open(path, &o, &db2, &err), 0, "%s", err.msg);
    struct stat st;
    cr_assert_eq(stat(path + 7, &st), 0);
    sql_close(db2);

    cr_assert_eq(sql_open("sqlite:/nonexistent/dir/x.db", &o, &db2, &err), PL_EIO);
    cr_assert_eq(sql_open("mysql://db/x", &o, &db2, &err), PL_ECONFIG, "no engine serves this scheme");
    cr_assert_not_null(strstr(err.msg, "mysql://db/x"), "%s", err.msg);
}

static void all_types_row(void *ud, sql_rows *r)
{
    int *seen = ud;
    *seen = 1;
    cr_assert_eq(sql_ncols(r), 5);
    cr_assert(sql_isnull(r, 0));
    cr_assert_null(sql_text(r, 0), "NULL text is NULL");
    cr_assert_eq(sql_int(r, 1), -9223372036854775807LL - 1);
    cr_assert_float_eq(sql_real(r, 2), 3.25, 1e-12);
    cr_assert_str_eq(sql_text(r, 3), "Zoë");
    size_t n = 0;
    const unsigned char *b = sql_blob(r, 4, &n);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(b, "\x00\x01\xff\x00", 4), 0);
    cr_assert_not(sql_isnull(r, 4));
}

Test(sql, every_argument_type_round_trips)
{
    must("CREATE TABLE t (n, i INTEGER, r REAL, s TEXT, b BLOB)");
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
    int64_t changes = -1;
    int rc = sql_exec(tx, "INSERT INTO t (n, i, r, s, b) VALUES ($1, $2, $3, $4, $5)",
                      SQL_ARGS(SQL_NULL, SQL_INT(INT64_MIN), SQL_REAL(3.25), SQL_TEXT("Zoë"),
                               SQL_BLOB("\x00\x01\xff\x00", 4)),
                      &changes, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(changes, 1);
    int seen = 0;
    rc = sql_one(tx, "SELECT n, i, r, s, b FROM t", SQL_NOARGS, all_types_row, &seen, &err);
    cr_assert_eq(rc, 1, "%s", err.msg);
    cr_assert(seen);
    cr_assert_eq(sql_commit(tx, &err), 0, "%s", err.msg);
    cr_assert_eq(count("SELECT typeof(i) = 'integer' AND typeof(r) = 'real' AND typeof(b) = 'blob' FROM t"), 1);
}

static void text_row(void *ud, sql_rows *r) { snprintf(ud, 64, "%s", sql_text(r, 0)); }

Test(sql, placeholders_by_number_repeated_and_out_of_order)
{
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0);
    char out[64] = "";
    int rc = sql_one(tx, "SELECT $2 || '-' || $1 || '-' || $2 || '-' || $3", SQL_ARGS(SQL_TEXT("a"), SQL_TEXT("b"),
                     SQL_INT(7)), text_row, out, &err);
    cr_assert_eq(rc, 1, "%s", err.msg);
    cr_assert_str_eq(out, "b-a-b-7");
    /* more arguments than placeholders is fine */
    rc = sql_one(tx, "SELECT $1", SQL_ARGS(SQL_TEXT("x"), SQL_INT(1)), text_row, out, &err);
    cr_assert_eq(rc, 1, "%s", err.msg);
    cr_assert_str_eq(out, "x");
    sql_rollback(tx);
}

Test(sql, placeholder_without_argument_is_an_error)
{
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0);
    sql_rows *r;
    int rc = sql_query(tx, "SELECT $1, $3", SQL_ARGS(SQL_INT(1), SQL_INT(2)), &r, &err);
    cr_assert_eq(rc, PL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "$3"), "%s", err.msg);
    rc = sql_query(tx, "SELECT ?", SQL_ARGS(SQL_INT(1)), &r, &err);
    cr_assert_eq(rc, PL_EINVAL, "only $N placeholders are bound");
    rc = sql_exec(tx, "SELECT $1", SQL_NOARGS, NULL, &err);
    cr_assert_eq(rc, PL_EINVAL);
    /* the statement cache is still usable after a failed bind */
    char out[64] = "";
    rc = sql_one(tx, "SELECT $1, $3", SQL_ARGS(SQL_TEXT("ok"), SQL_INT(2), SQL_INT(3)), text_row, out, &err);
    cr_assert_eq(rc, 1, "%s", err.msg);
    cr_assert_str_eq(out, "ok");
    sql_rollback(tx);
}

Test(sql, syntax_error_and_empty_statement)
{
    pl_error err = {0};
    cr_assert_lt(exec1("SELEC 1", SQL_NOARGS, &err), 0);
    cr_assert_not_null(strstr(err.msg, "syntax"), "%s", err.msg);
    cr_assert_eq(exec1("   ", SQL_NOARGS, &err), PL_EINVAL);
}

Test(sql, commit_is_visible_and_rollback_is_not)
{
    must("CREATE TABLE t (v INTEGER)");
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
    cr_assert_eq(sql_exec(tx, "INSERT INTO t VALUES (1)", SQL_NOARGS, NULL, &err), 0);
    sql_rollback(tx);
    cr_assert_eq(count("SELECT count(*) FROM t"), 0, "rolled back rows are visible");

    cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
    cr_assert_eq(sql_exec(tx, "INSERT INTO t VALUES (2)", SQL_NOARGS, NULL, &err), 0);
    /* not visible to another connection before the commit */
    cr_assert_eq(count("SELECT count(*) FROM t"), 0, "uncommitted rows are visible to a reader");
    cr_assert_eq(sql_commit(tx, &err), 0, "%s", err.msg);
    cr_assert_eq(count("SELECT count(*) FROM t"), 1);
    cr_assert_eq(count("SELECT v FROM t"), 2);
    sql_rollback(NULL);
}

Test(sql, unique_violation_is_conflict)
{
    must("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)");
    pl_error err = {0};
    cr_assert_eq(exec1("INSERT INTO users (id, email) VALUES ($1, $2)", SQL_ARGS(SQL_INT(1), SQL_TEXT("a@x.io")),
                       &err), 0);
    int rc = exec1("INSERT INTO users (id, email) VALUES ($1, $2)", SQL_ARGS(SQL_INT(2), SQL_TEXT("a@x.io")), &err);
    cr_assert_eq(rc, PL_ECONFLICT, "got %s: %s", err_name(rc), err.msg);
    cr_assert_not_null(strstr(err.msg, "email"), "the message names the column: %s", err.msg);
    rc = exec1("INSERT INTO users (id, email) VALUES ($1, $2)", SQL_ARGS(SQL_INT(1), SQL_TEXT("b@x.io")), &err);
    cr_assert_eq(rc, PL_ECONFLICT, "primary key: got %s", err_name(rc));
    cr_assert_eq(count("SELECT count(*) FROM users"), 1);
}

Test(sql, check_and_not_null_violations_are_unprocessable)
{
    must("CREATE TABLE t (role TEXT NOT NULL CHECK (role IN ('student', 'admin')))");
    pl_error err = {0};
    int rc = exec1("INSERT INTO t VALUES ($1)", SQL_ARGS(SQL_TEXT("pirate")), &err);
    cr_assert_eq(rc, PL_EUNPROCESSABLE, "got %s: %s", err_name(rc), err.msg);
    rc = exec1("INSERT INTO t VALUES ($1)", SQL_ARGS(SQL_NULL), &err);
    cr_assert_eq(rc, PL_EUNPROCESSABLE, "got %s: %s", err_name(rc), err.msg);
    cr_assert_eq(exec1("INSERT INTO t VALUES ($1)", SQL_ARGS(SQL_TEXT("admin")), &err), 0);
}

Test(sql, nested_cursors_on_the_same_statement)
{
    must("CREATE TABLE t (v INTEGER)");
    must("INSERT INTO t VALUES (1), (2), (3)");
    const char *q = "SELECT v FROM t WHERE v >= $1 ORDER BY v";
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0);
    for (int round = 0; round < 3; round++) { /* later rounds reuse the cached statement */
        sql_rows *outer;
        cr_assert_eq(sql_query(tx, q, SQL_ARGS(SQL_INT(1)), &outer, &err), 0, "%s", err.msg);
        int64_t pairs = 0, outer_sum = 0;
        int rc;
        while ((rc = sql_next(outer, &err)) == 1) {
            int64_t v = sql_int(outer, 0);
            outer_sum += v;
            sql_rows *inner; /* same SQL while the outer cursor is open */
            cr_assert_eq(sql_query(tx, q, SQL_ARGS(SQL_INT(v)), &inner, &err), 0, "%s", err.msg);
            int64_t n = 0;
            while (sql_next(inner, &err) == 1) {
                cr_assert_geq(sql_int(inner, 0), v);
                n++;
            }
            sql_rows_close(inner);
            pairs += n;
            cr_assert_eq(sql_int(outer, 0), v, "the inner query disturbed the outer cursor");
        }
        cr_assert_eq(rc, 0, "%s", err.msg);
        cr_assert_eq(outer_sum, 6);
        cr_assert_eq(pairs, 3 + 2 + 1);
        cr_assert_eq(sql_next(outer, &err), 0, "a finished cursor stays finished");
        sql_rows_close(outer);
    }
    sql_rows_close(NULL);
    sql_rollback(tx);
}

Test(sql, query_arguments_are_copied_at_the_call)
{
    /* sql.h: arguments are borrowed for the call; sql_next steps later */
    must("CREATE TABLE t (s TEXT)");
    must("INSERT INTO t VALUES ('wanted'), ('other')");
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0);
    char *arg = strdup("wanted");
    sql_rows *r;
    cr_assert_eq(sql_query(tx, "SELECT count(*) FROM t WHERE s = $1", SQL_ARGS(SQL_TEXT(arg)), &r, &err), 0);
    memcpy(arg, "xxxxxx", 6);
    free(arg); /* ASan reports a use after free if the driver kept the pointer */
    cr_assert_eq(sql_next(r, &err), 1, "%s", err.msg);
    cr_assert_eq(sql_int(r, 0), 1);
    sql_rows_close(r);
    sql_rollback(tx);
}

Test(sql, many_distinct_statements_cycle_the_cache)
{
    must("CREATE TABLE t (v INTEGER)");
    pl_error err = {0};
    sql_tx *tx;
    cr_assert_eq(sql_begin(db, SQL_TX_WRITE, &tx, &err), 0);
    for (int i = 0; i < 300; i++) {
        char q[64];
        snprintf(q, sizeof q, "INSERT INTO t VALUES (%d + $1)", i);
        cr_assert_eq(sql_exec(tx, q, SQL_ARGS(SQL_INT(1000)), NULL, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(sql_commit(tx, &err), 0);
    cr_assert_eq(count("SELECT count(*) FROM t"), 300);
    cr_assert_eq(count("SELECT sum(v) FROM t"), 300 * 1000 + 299 * 300 / 2);
}

typedef struct {
    int id;
    int failures;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *a = p;
    for (int i = 0; i < 500; i++) {
        pl_error err = {0};
        if (exec1("INSERT INTO t (w, i) VALUES ($1, $2)", SQL_ARGS(SQL_INT(a->id), SQL_INT(i)), &err))
            a->failures++;
    }
    return NULL;
}

Test(sql, concurrent_writers_all_land, .timeout = 120)
{
    must("CREATE TABLE t (w INTEGER, i INTEGER, PRIMARY KEY (w, i))");
    enum { T = 4 };
    pthread_t th[T];
    writer_arg a[T];
    for (int t = 0; t < T; t++) {
        a[t] = (writer_arg){t, 0};
        cr_assert_eq(pthread_create(&th[t], NULL, writer, &a[t]), 0);
    }
    /* a reader running alongside sees a growing, consistent count */
    int64_t last = 0;
    for (int k = 0; k < 20; k++) {
        int64_t n = count("SELECT count(*) FROM t");
        cr_assert_geq(n, last);
        last = n;
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(a[t].failures, 0, "writer %d had %d failed inserts", t, a[t].failures);
    }
    cr_assert_eq(count("SELECT count(*) FROM t"), T * 500);
    for (int t = 0; t < T; t++) {
        char q[96];
        snprintf(q, sizeof q, "SELECT count(DISTINCT i) FROM t WHERE w = %d", t);
        cr_assert_eq(count(q), 500);
    }
}

static const sql_migration migs[] = {
    {"unit", "sqlite", 2, "add_index", "CREATE INDEX notes_body ON notes (body);"},
    {"unit", "sqlite", 1, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
                                   "INSERT INTO notes (body) VALUES ('seed');"},
    {"other", "sqlite", 1, "not_mine", "CREATE TABLE other_table (x);"},
    {"unit", "postgres", 1, "pg_only", "CREATE TABLE pg_table (x SERIAL);"},
};

Test(sql, migrations_apply_once_in_version_order)
{
    pl_error err = {0};
    int rc = sql_migrate(db, "unit", migs, 4, &err);
    cr_assert_eq(rc, 2, "applied %d: %s", rc, err.msg);
    cr_assert_eq(count("SELECT count(*) FROM notes"), 1);
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name = 'notes_body'"), 1);
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name IN ('other_table', 'pg_table')"), 0,
                 "another service's or engine's migrations ran");
    cr_assert_eq(count("SELECT max(version) FROM pulse_migrations WHERE service = 'unit'"), 2);

    rc = sql_migrate(db, "unit", migs, 4, &err);
    cr_assert_eq(rc, 0, "second run applied %d", rc);
    cr_assert_eq(count("SELECT count(*) FROM notes"), 1, "the seed insert ran twice");
    cr_assert_eq(count("SELECT count(*) FROM pulse_migrations"), 2);

    /* a new migration later applies alone */
    sql_migration more[5];
    memcpy(more, migs, sizeof migs);
    more[4] = (sql_migration){"unit", "sqlite", 3, "more", "ALTER TABLE notes ADD COLUMN tag TEXT;"};
    cr_assert_eq(sql_migrate(db, "unit", more, 5, &err), 1, "%s", err.msg);
    cr_assert_eq(sql_migrate(db, "unit", NULL, 0, &err), 0);
}

Test(sql, failing_migration_rolls_back_and_names_itself)
{
    static const sql_migration bad[] = {
        {"unit", "sqlite", 1, "good", "CREATE TABLE a (x);"},
        {"unit", "sqlite", 2, "broken", "CREATE TABLE b (x); INSERT INTO nowhere VALUES (1);"},
        {"unit", "sqlite", 3, "after", "CREATE TABLE c (x);"},
    };
    pl_error err = {0};
    int rc = sql_migrate(db, "unit", bad, 3, &err);
    cr_assert_lt(rc, 0);
    cr_assert_not_null(strstr(err.msg, "002_broken"), "the message names the migration: %s", err.msg);
    cr_assert_not_null(strstr(err.msg, "nowhere"), "and says why: %s", err.msg);
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name = 'a'"), 1, "the good one stays");
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name = 'b'"), 0, "partial DDL was kept");
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name = 'c'"), 0, "later ones must not run");
    cr_assert_eq(count("SELECT max(version) FROM pulse_migrations"), 1);
}

Test(sql, builtin_migrations_apply)
{
    pl_error err = {0};
    int rc = sql_migrate(db, "identity", sql_builtin_migrations, sql_builtin_nmigrations, &err);
    cr_assert_geq(rc, 1, "%s", err.msg);
    cr_assert_eq(count("SELECT count(*) FROM sqlite_master WHERE name = 'users'"), 1);
}
