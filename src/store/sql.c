/* sql.c - engine registry, thin wrappers and the migration runner. */
#include "store/sql.h"
#include "core/engines.h"
#include "core/timeutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sql_db {
    const sql_driver *d;
    void *h;
};
#define MAX_HOOKS 8
struct sql_tx {
    const sql_driver *d;
    void *h;
    int flags;
    int nhooks;
    struct {
        void (*fn)(void *ud);
        void *ud;
    } hooks[MAX_HOOKS];
};
struct sql_rows {
    const sql_driver *d;
    void *h;
};

static engines drivers = ENGINES_INIT;

extern const sql_driver sql_sqlite_driver;
extern const sql_driver sql_pg_driver;

void sql_register(const sql_driver *d) { engines_add(&drivers, d, d->schemes); }

static const sql_driver *driver_for(const char *url)
{
    sql_register(&sql_sqlite_driver);
    sql_register(&sql_pg_driver);
    return *url ? engines_find(&drivers, url) : &sql_sqlite_driver;
}

static void *xcalloc(size_t n)
{
    void *p = calloc(1, n);
    if (!p)
        abort();
    return p;
}

int sql_open(const char *url, const sql_options *o, sql_db **out, pl_error *err)
{
    const sql_driver *d = driver_for(url ? url : "");
    if (!d)
        return err_set(err, PL_ECONFIG, "sql", "no sql engine serves the URL \"%s\" in this build", url);
    void *h = NULL;
    int rc = d->xOpen(url ? url : "", o, &h, err);
    if (rc)
        return rc;
    sql_db *db = xcalloc(sizeof *db);
    db->d = d;
    db->h = h;
    *out = db;
    return 0;
}

void sql_close(sql_db *db)
{
    if (!db)
        return;
    db->d->xClose(db->h);
    free(db);
}

const char *sql_engine(const sql_db *db) { return db->d->name; }
int sql_ping(sql_db *db, pl_error *err) { return db->d->xPing(db->h, err); }

int sql_begin(sql_db *db, int flags, sql_tx **out, pl_error *err)
{
    void *h = NULL;
    int rc = db->d->xBegin(db->h, flags, &h, err);
    if (rc)
        return rc;
    sql_tx *tx = xcalloc(sizeof *tx);
    tx->d = db->d;
    tx->h = h;
    tx->flags = flags;
    *out = tx;
    return 0;
}

int sql_commit(sql_tx *tx, pl_error *err)
{
    int rc = tx->d->xCommit(tx->h, err);
    for (int i = 0; !rc && i < tx->nhooks; i++)
        tx->hooks[i].fn(tx->hooks[i].ud);
    free(tx);
    return rc;
}

int sql_tx_flags(const sql_tx *tx) { return tx->flags; }

void sql_after_commit(sql_tx *tx, void (*fn)(void *ud), void *ud)
{
    for (int i = 0; i < tx->nhooks; i++)
        if (tx->hooks[i].fn == fn && tx->hooks[i].ud == ud)
            return;
    if (tx->nhooks < MAX_HOOKS) {
        tx->hooks[tx->nhooks].fn = fn;
        tx->hooks[tx->nhooks++].ud = ud;
    }
}

void sql_rollback(sql_tx *tx)
{
    if (!tx)
        return;
    tx->d->xRollback(tx->h);
    free(tx);
}

int sql_exec(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, int64_t *changes, pl_error *err)
{
    int64_t dummy;
    return tx->d->xExec(tx->h, sql, args, n, changes ? changes : &dummy, err);
}

int sql_query(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, sql_rows **out, pl_error *err)
{
    void *h = NULL;
    int rc = tx->d->xQuery(tx->h, sql, args, n, &h, err);
    if (rc)
        return rc;
    sql_rows *r = xcalloc(sizeof *r);
    r->d = tx->d;
    r->h = h;
    *out = r;
    return 0;
}

int sql_next(sql_rows *r, pl_error *err) { return r->d->xNext(r->h, err); }

void sql_rows_close(sql_rows *r)
{
    if (!r)
        return;
    r->d->xRowsClose(r->h);
    free(r);
}

int sql_ncols(sql_rows *r) { return r->d->xColumnCount(r->h); }
bool sql_isnull(sql_rows *r, int col) { return r->d->xColumnType(r->h, col) == SQL_T_NULL; }
int64_t sql_int(sql_rows *r, int col) { return r->d->xColumnInt(r->h, col); }
double sql_real(sql_rows *r, int col) { return r->d->xColumnReal(r->h, col); }
const char *sql_text(sql_rows *r, int col) { return r->d->xColumnText(r->h, col); }
const void *sql_blob(sql_rows *r, int col, size_t *n) { return r->d->xColumnBlob(r->h, col, n); }

int sql_one(sql_tx *tx, const char *sql, const sql_arg *args, size_t n,
            void (*row)(void *ud, sql_rows *r), void *ud, pl_error *err)
{
    sql_rows *r;
    int rc = sql_query(tx, sql, args, n, &r, err);
    if (rc)
        return rc;
    rc = sql_next(r, err);
    if (rc == 1 && row)
        row(ud, r);
    sql_rows_close(r);
    return rc;
}

/* ---- migrations ------------------------------------------------------------ */

static int cmp_version(const void *a, const void *b)
{
    const sql_migration *x = *(const sql_migration *const *)a, *y = *(const sql_migration *const *)b;
    return (x->version > y->version) - (x->version < y->version);
}

static void get_version(void *ud, sql_rows *r) { *(int64_t *)ud = sql_isnull(r, 0) ? 0 : sql_int(r, 0); }

/* Several processes may start on one schema at once. SQLite's write transactions already
 * serialise them; on PostgreSQL, CREATE ... IF NOT EXISTS is not safe against a concurrent
 * twin, and two processes could both find a version missing: every migration transaction
 * first takes an advisory lock keyed by the schema, held until it ends. */
static int migrate_lock(sql_tx *tx, pl_error *err)
{
    if (strcmp(tx->d->name, "postgres") != 0)
        return 0;
    return sql_exec(tx, "SELECT pg_advisory_xact_lock(hashtext('pulse.migrate.' || current_schema()))", SQL_NOARGS,
                    NULL, err);
}

int sql_migrate(sql_db *db, const char *service, const sql_migration *migs, size_t n, pl_error *err)
{
    const sql_migration **mine = malloc((n ? n : 1) * sizeof *mine);
    if (!mine)
        abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(migs[i].service, service) == 0 && strcmp(migs[i].engine, db->d->name) == 0)
            mine[k++] = &migs[i];
    qsort(mine, k, sizeof *mine, cmp_version);

    int applied = 0, rc = 0;
    sql_tx *tx = NULL;
    if ((rc = sql_begin(db, SQL_TX_WRITE, &tx, err)))
        goto out;
    rc = migrate_lock(tx, err);
    if (!rc)
        rc = sql_exec(tx,
                      "CREATE TABLE IF NOT EXISTS pulse_migrations (service TEXT NOT NULL, version INTEGER NOT NULL,"
                      " name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (service, version))",
                      SQL_NOARGS, NULL, err);
    if (rc) {
        sql_rollback(tx);
        goto out;
    }
    if ((rc = sql_commit(tx, err))) /* commit ends the transaction even when it fails */
        goto out;
    for (size_t i = 0; i < k; i++) {
        int64_t have = 0;
        if ((rc = sql_begin(db, SQL_TX_WRITE, &tx, err)))
            goto out;
        if ((rc = migrate_lock(tx, err)) == 0)
            rc = sql_one(tx, "SELECT max(version) FROM pulse_migrations WHERE service = $1",
                         SQL_ARGS(SQL_TEXT(service)), get_version, &have, err);
        if (rc < 0 || have >= mine[i]->version) {
            sql_rollback(tx);
            if (rc < 0)
                goto out;
            rc = 0;
            continue;
        }
        char now[32];
        time_rfc3339(time_now_ms(), now, sizeof now);
        if ((rc = tx->d->xExecScript(tx->h, mine[i]->sql, err)) ||
            (rc = sql_exec(tx, "INSERT INTO pulse_migrations (service, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                           SQL_ARGS(SQL_TEXT(service), SQL_INT(mine[i]->version), SQL_TEXT(mine[i]->name), SQL_TEXT(now)),
                           NULL, err))) {
            sql_rollback(tx);
            if (err) {
                char detail[sizeof err->msg];
                snprintf(detail, sizeof detail, "%s", err->msg);
                snprintf(err->msg, sizeof err->msg, "migration %s/%s/%03d_%s failed: %.180s", service,
                         mine[i]->engine, mine[i]->version, mine[i]->name, detail);
            }
            goto out;
        }
        if ((rc = sql_commit(tx, err)))
            goto out;
        applied++;
    }
out:
    free(mine);
    return rc ? rc : applied;
}
