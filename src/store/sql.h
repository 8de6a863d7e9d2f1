/*
 * sql.h - the sql store kind: relational tables of one service.
 *
 * One interface, several engines, in the manner of SQLite's VFS: an engine is
 * a const struct of x-prefixed callbacks (sql_driver) registered by URL
 * scheme; service code calls only the sql_* wrappers below and never sees the
 * engine. Embedded: "sqlite:" (one database file per service in the data
 * directory). Distributed: "postgres://" (one schema per service), added by a
 * later driver without changing any caller.
 *
 * SQL dialect: statements use $1, $2, ... placeholders (PostgreSQL's native
 * form; the SQLite driver binds them by name) and the common subset of
 * SQLite and PostgreSQL. Migrations are per engine, so DDL may differ.
 *
 * Threads: an sql_db is shared by all threads; each transaction holds one
 * pooled connection and belongs to the thread that began it until commit or
 * rollback. Rows returned by sql_query are valid until the next
 * sql_rows_next() or sql_rows_close().
 *
 * Errors: every call returns 0 or a negative PL_E* code; on failure the
 * pl_error (when given) says why. A unique-constraint violation is
 * PL_ECONFLICT (the error's msg names the constraint's columns), a busy or
 * unreachable engine PL_EUNAVAILABLE, a statement timeout PL_ETIMEOUT.
 * After an error inside a transaction the only valid calls are rollback and
 * sql_exec of "ROLLBACK TO SAVEPOINT <name>" for a savepoint taken before the
 * error, which makes the transaction usable again (what PostgreSQL allows).
 */
#ifndef PULSE_STORE_SQL_H
#define PULSE_STORE_SQL_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sql_db sql_db;
typedef struct sql_tx sql_tx;
typedef struct sql_rows sql_rows;

/* ---- typed arguments ------------------------------------------------------ */

typedef enum { SQL_T_NULL, SQL_T_INT, SQL_T_REAL, SQL_T_TEXT, SQL_T_BLOB } sql_type;

typedef struct sql_arg {
    sql_type type;
    int64_t i;
    double d;
    const void *p; /* TEXT (NUL-terminated) or BLOB; borrowed for the call */
    size_t n;      /* BLOB length */
} sql_arg;

#define SQL_NULL      ((sql_arg){.type = SQL_T_NULL})
#define SQL_INT(v)    ((sql_arg){.type = SQL_T_INT, .i = (int64_t)(v)})
#define SQL_REAL(v)   ((sql_arg){.type = SQL_T_REAL, .d = (double)(v)})
#define SQL_TEXT(v)   ((sql_arg){.type = SQL_T_TEXT, .p = (v)})
#define SQL_BLOB(v, len) ((sql_arg){.type = SQL_T_BLOB, .p = (v), .n = (len)})
/* A text argument that is NULL when v is NULL. */
#define SQL_TEXT_OR_NULL(v) ((v) ? SQL_TEXT(v) : SQL_NULL)

/* SQL_ARGS(a, b, c) expands to the array and count arguments of the calls below. */
#define SQL_ARGS(...) (const sql_arg[]){__VA_ARGS__}, (sizeof((const sql_arg[]){__VA_ARGS__}) / sizeof(sql_arg))
#define SQL_NOARGS NULL, 0

/* ---- options --------------------------------------------------------------- */

typedef struct sql_options {
    const char *data_dir;      /* embedded engines put their files here */
    const char *service;       /* owner: file name (SQLite) or schema (PostgreSQL) */
    int pool_max;              /* connections; default 20 */
    int busy_timeout_ms;       /* wait for locks; default 5000 */
    int statement_timeout_ms;  /* default 2000 (engines that support it) */
    int connect_timeout_ms;    /* default 2000 */
    int idle_timeout_ms;       /* default 30000 */
    const char *replica_url;   /* optional read replica (PostgreSQL) */
} sql_options;

enum {
    SQL_TX_READ = 0,       /* read-only: may go to a replica; no writes */
    SQL_TX_WRITE = 1,      /* takes the write lock up front (SQLite BEGIN IMMEDIATE) */
};

/* ---- the engine interface ---------------------------------------------------- */

typedef struct sql_driver {
    int version;          /* 1; fields are only ever appended */
    const char *name;     /* "sqlite", "postgres" */
    const char *const *schemes; /* URL prefixes it serves, NULL-terminated */
    int  (*xOpen)(const char *url, const sql_options *o, void **db, pl_error *err);
    void (*xClose)(void *db);
    int  (*xPing)(void *db, pl_error *err);
    int  (*xBegin)(void *db, int flags, void **tx, pl_error *err);
    int  (*xCommit)(void *tx, pl_error *err);  /* ends the tx whatever the result */
    void (*xRollback)(void *tx);
    int  (*xExec)(void *tx, const char *sql, const sql_arg *args, size_t n, int64_t *changes, pl_error *err);
    int  (*xQuery)(void *tx, const char *sql, const sql_arg *args, size_t n, void **rows, pl_error *err);
    int  (*xNext)(void *rows, pl_error *err);  /* 1 row, 0 end, <0 error */
    int  (*xColumnCount)(void *rows);
    sql_type (*xColumnType)(void *rows, int col);
    int64_t (*xColumnInt)(void *rows, int col);
    double (*xColumnReal)(void *rows, int col);
    const char *(*xColumnText)(void *rows, int col);       /* NULL for SQL NULL */
    const void *(*xColumnBlob)(void *rows, int col, size_t *n);
    void (*xRowsClose)(void *rows);
    int  (*xExecScript)(void *tx, const char *script, pl_error *err); /* DDL, several statements */
} sql_driver;

/* Registers an engine (borrowed; must be static). The built-in ones are
 * registered on first use of sql_open. */
void sql_register(const sql_driver *d);

/* ---- the interface services use ------------------------------------------------ */

/* Opens the service's database at `url` ("" or "sqlite:" = the embedded file
 * <data_dir>/<service>.db; "sqlite:/path/x.db" = that file). */
int  sql_open(const char *url, const sql_options *o, sql_db **out, pl_error *err);
void sql_close(sql_db *db); /* NULL is a no-op; no transaction may be open */
const char *sql_engine(const sql_db *db); /* "sqlite", "postgres" */
int  sql_ping(sql_db *db, pl_error *err);

int  sql_begin(sql_db *db, int flags, sql_tx **out, pl_error *err);
int  sql_commit(sql_tx *tx, pl_error *err);   /* frees tx whatever the result */
void sql_rollback(sql_tx *tx);                /* frees tx; NULL is a no-op */

/* The flags tx was begun with (SQL_TX_WRITE or SQL_TX_READ): lets a layer on
 * top (the doc kind) lock what it reads only in a write transaction. */
int sql_tx_flags(const sql_tx *tx);

/* Registers fn(ud) to run on this thread right after tx commits successfully
 * (not after a rollback or a failed commit). At most 8 per transaction;
 * registering the same fn/ud pair twice runs it once. */
void sql_after_commit(sql_tx *tx, void (*fn)(void *ud), void *ud);

/* Runs a statement that returns no rows; *changes (may be NULL) gets the
 * number of rows it inserted, updated or deleted. */
int sql_exec(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, int64_t *changes, pl_error *err);

/* Runs a query; iterate with sql_next, then sql_rows_close. */
int  sql_query(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, sql_rows **out, pl_error *err);
int  sql_next(sql_rows *r, pl_error *err); /* 1 row, 0 end, <0 error */
void sql_rows_close(sql_rows *r);          /* NULL is a no-op */
int  sql_ncols(sql_rows *r);
bool sql_isnull(sql_rows *r, int col);
int64_t sql_int(sql_rows *r, int col);
double sql_real(sql_rows *r, int col);
const char *sql_text(sql_rows *r, int col); /* NULL for SQL NULL; valid until next/close */
const void *sql_blob(sql_rows *r, int col, size_t *n);

/* Convenience: runs a query expected to return at most one row and hands
 * that row to `row` (not called when there is none). Returns 1 when a row
 * was found, 0 when none, <0 on error. */
int sql_one(sql_tx *tx, const char *sql, const sql_arg *args, size_t n,
            void (*row)(void *ud, sql_rows *r), void *ud, pl_error *err);

/* ---- migrations ---------------------------------------------------------------- */

typedef struct sql_migration {
    const char *service;
    const char *engine;   /* "sqlite", "postgres" */
    int version;          /* 1, 2, ... from the file name NNN_name.sql */
    const char *name;
    const char *sql;
} sql_migration;

/* Applies, in version order, the migrations of db's service and engine that
 * are newer than the recorded version, each in its own transaction that also
 * records it in pulse_migrations. Returns the number applied (>= 0) or <0. */
int sql_migrate(sql_db *db, const char *service, const sql_migration *migs, size_t n, pl_error *err);

/* The migrations compiled into this binary (generated from
 * src/services/<name>/migrations/<engine>/NNN_name.sql). */
extern const sql_migration sql_builtin_migrations[];
extern const size_t sql_builtin_nmigrations;

#endif
