/*
 * doc_conformance.c - the doc store kind's contract (src/store/doc.h), held
 * against every engine by the same cases.
 *
 * Every DOC_CASE runs twice: suite doc_sqlite (always, in a temporary data
 * directory) and suite doc_postgres (when PULSE_TEST_PG_URL names a server;
 * skipped with a message otherwise). Each PostgreSQL case works in a schema
 * of its own (service "d_<case>_<pid>") that it drops at the end.
 */
#include "store/doc.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixture ---------------------------------------------------------------- */

static struct {
    bool pg;
    char dir[64];
    char service[64];
    doc_store *d;
} fx;

static const char *pg_url(void)
{
    const char *u = getenv("PULSE_TEST_PG_URL");
    return u && *u ? u : NULL;
}

static void fx_open(bool pg, const char *name)
{
    if (pg && !pg_url())
        cr_skip_test("PULSE_TEST_PG_URL is not set: PostgreSQL cases skipped "
                     "(make test-conformance starts a server and sets it)");
    fx.pg = pg;
    snprintf(fx.service, sizeof fx.service, "d_%.40s_%d", name, (int)getpid());
    sql_options o = {.service = fx.service};
    if (!pg) {
        snprintf(fx.dir, sizeof fx.dir, "/tmp/pulse-docconf-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
        o.data_dir = fx.dir;
    }
    pl_error err = {0};
    int rc = doc_open(pg ? pg_url() : "", &o, &fx.d, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    cr_assert_str_eq(doc_engine(fx.d), pg ? "postgres" : "sqlite");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void fx_close(void)
{
    if (fx.d && fx.pg) {
        sql_tx *tx;
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", fx.service);
        if (sql_begin(doc_sql(fx.d), SQL_TX_WRITE, &tx, NULL) == 0) {
            if (sql_exec(tx, sql, SQL_NOARGS, NULL, NULL) == 0)
                sql_commit(tx, NULL);
            else
                sql_rollback(tx);
        }
    }
    doc_close(fx.d);
    fx.d = NULL;
    if (fx.dir[0])
        nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    fx.dir[0] = '\0';
}

#define DOC_CASE(name)                                                                                           \
    static void case_##name(doc_store *d);                                                                      \
    Test(doc_sqlite, name, .fini = fx_close, .timeout = 120) { fx_open(false, #name); case_##name(fx.d); }      \
    Test(doc_postgres, name, .fini = fx_close, .timeout = 120) { fx_open(true, #name); case_##name(fx.d); }     \
    static void case_##name(doc_store *d)

/* ---- helpers ------------------------------------------------------------------ */

static sql_tx *begin(doc_store *d, int flags)
{
    sql_tx *tx = NULL;
    pl_error err = {0};
    int rc = sql_begin(doc_sql(d), flags, &tx, &err);
    cr_assert_eq(rc, 0, "begin: %d %s", rc, err.msg);
    return tx;
}

static void commit(sql_tx *tx)
{
    pl_error err = {0};
    int rc = sql_commit(tx, &err);
    cr_assert_eq(rc, 0, "commit: %d %s", rc, err.msg);
}

static json_t *J(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "bad JSON in test: %s: %s", text, je.text);
    return j;
}

/* Asserts that two JSON values are equal (jansson's equality: 1 and 1.0 differ). */
static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    cr_assert(json_equal(got, w), "got %s, want %s", g, want);
    free(g);
    json_decref(w);
}

static const doc_index *const no_indexes[] = {NULL};

static void ensure_plain(doc_store *d, const char *name)
{
    doc_collection_def def = {name, no_indexes};
    pl_error err = {0};
    int rc = doc_ensure(d, &def, 1, &err);
    cr_assert_eq(rc, 0, "ensure %s: %s", name, err.msg);
}

/* The "items" collection with indexes on user (text), n (int), score (real) and (user, n). */
static const doc_index ix_user[] = {{"user", DOC_TEXT}, {NULL, 0}};
static const doc_index ix_n[] = {{"n", DOC_INT}, {NULL, 0}};
static const doc_index ix_score[] = {{"score", DOC_REAL}, {NULL, 0}};
static const doc_index ix_user_n[] = {{"user", DOC_TEXT}, {"n", DOC_INT}, {NULL, 0}};
static const doc_index ix_flag[] = {{"meta.flag", DOC_BOOL}, {NULL, 0}};
static const doc_index *const items_ix[] = {ix_user, ix_n, ix_score, ix_user_n, ix_flag, NULL};

static void ensure_items(doc_store *d)
{
    doc_collection_def def = {"items", items_ix};
    pl_error err = {0};
    int rc = doc_ensure(d, &def, 1, &err);
    cr_assert_eq(rc, 0, "ensure items: %s", err.msg);
}

static void put_text(doc_store *d, const char *coll, const char *id, const char *json)
{
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    json_t *j = J(json);
    pl_error err = {0};
    int rc = doc_insert(tx, d, coll, id, j, &err);
    json_decref(j);
    cr_assert_eq(rc, 0, "insert %s: %d %s", id, rc, err.msg);
    commit(tx);
}

static json_t *get_doc(doc_store *d, const char *coll, const char *id, int *rc_out)
{
    sql_tx *tx = begin(d, SQL_TX_READ);
    json_t *j = NULL;
    pl_error err = {0};
    *rc_out = doc_get(tx, d, coll, id, &j, &err);
    sql_rollback(tx);
    return j;
}

/* Runs a find and returns the ids joined with ',' (caller frees). */
static char *find_ids(doc_store *d, const char *coll, const doc_query *q)
{
    sql_tx *tx = begin(d, SQL_TX_READ);
    char **ids = NULL;
    size_t n = 0;
    pl_error err = {0};
    int rc = doc_find(tx, d, coll, q, &ids, NULL, &n, &err);
    sql_rollback(tx);
    cr_assert_eq(rc, 0, "find: %d %s", rc, err.msg);
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(ids[i]) + 1;
    char *out = calloc(1, len);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, ids[i]);
    }
    doc_results_free(ids, NULL, n);
    return out;
}

static void expect_ids(doc_store *d, const char *coll, const doc_query *q, const char *want)
{
    char *got = find_ids(d, coll, q);
    cr_assert_str_eq(got, want, "got [%s], want [%s]", got, want);
    free(got);
}

/* One condition query: field op value (value as JSON text), ordered by id. */
static void expect_where(doc_store *d, const char *field, doc_op op, const char *value, const char *want)
{
    json_t *v = J(value);
    doc_cond c = {field, op, v};
    doc_query q = {.where = &c, .nwhere = 1};
    char *got = find_ids(d, "items", &q);
    cr_assert_str_eq(got, want, "%s op %d %s: got [%s], want [%s]", field, (int)op, value, got, want);
    free(got);
    /* count agrees with find */
    sql_tx *tx = begin(d, SQL_TX_READ);
    int64_t n = -1;
    cr_assert_eq(doc_count(tx, d, "items", &c, 1, &n, NULL), 0);
    sql_rollback(tx);
    size_t commas = 0;
    for (const char *s = want; *s; s++)
        commas += *s == ',';
    cr_assert_eq(n, *want ? (int64_t)commas + 1 : 0, "count %s: %" PRId64, field, n);
    json_decref(v);
}

static void seed_items(doc_store *d)
{
    ensure_items(d);
    put_text(d, "items", "a", "{\"user\":\"u1\",\"n\":1,\"score\":1.5,\"meta\":{\"flag\":true,\"kind\":\"x\"}}");
    put_text(d, "items", "b", "{\"user\":\"u1\",\"n\":2,\"score\":2.5,\"meta\":{\"flag\":false}}");
    put_text(d, "items", "c", "{\"user\":\"u2\",\"n\":3,\"score\":-1}");
    put_text(d, "items", "d", "{\"user\":\"u2\",\"n\":2,\"score\":2}");
    put_text(d, "items", "e", "{\"user\":\"U1\",\"n\":\"2\",\"score\":null}");       /* n is a string */
    put_text(d, "items", "f", "{\"other\":1}");                                     /* nothing */
    put_text(d, "items", "g", "{\"user\":7,\"n\":2.0,\"meta\":{\"flag\":\"true\"}}"); /* user a number, n a real */
}

/* ---- documents ------------------------------------------------------------------- */

DOC_CASE(insert_get_put)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "n1", "{\"title\":\"hello\",\"tags\":[\"a\",\"b\"],\"nested\":{\"x\":1.25,\"y\":null}}");
    int rc;
    json_t *j = get_doc(d, "notes", "n1", &rc);
    cr_assert_eq(rc, 0);
    assert_json(j, "{\"title\":\"hello\",\"tags\":[\"a\",\"b\"],\"nested\":{\"x\":1.25,\"y\":null}}");
    json_decref(j);

    /* insert of an existing id: conflict, and the transaction stays usable */
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    json_t *other = J("{\"title\":\"other\"}");
    pl_error err = {0};
    cr_assert_eq(doc_insert(tx, d, "notes", "n1", other, &err), PL_ECONFLICT);
    bool created = true;
    cr_assert_eq(doc_put(tx, d, "notes", "n1", other, &created, &err), 0, "%s", err.msg);
    cr_assert_not(created);
    cr_assert_eq(doc_put(tx, d, "notes", "n2", other, &created, &err), 0, "%s", err.msg);
    cr_assert(created);
    commit(tx);
    json_decref(other);
    j = get_doc(d, "notes", "n1", &rc);
    assert_json(j, "{\"title\":\"other\"}");
    json_decref(j);
    j = get_doc(d, "notes", "n2", &rc);
    cr_assert_eq(rc, 0);
    json_decref(j);
    j = get_doc(d, "notes", "nope", &rc);
    cr_assert_eq(rc, PL_ENOTFOUND);
    cr_assert_null(j);
}

DOC_CASE(delete_and_notfound)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "x", "{\"a\":1}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    cr_assert_eq(doc_delete(tx, d, "notes", "x", NULL), 0);
    cr_assert_eq(doc_delete(tx, d, "notes", "x", NULL), PL_ENOTFOUND);
    json_t *p = J("{\"a\":2}");
    cr_assert_eq(doc_patch(tx, d, "notes", "x", p, NULL, NULL), PL_ENOTFOUND);
    cr_assert_eq(doc_incr(tx, d, "notes", "x", "a", 1, NULL, NULL), PL_ENOTFOUND);
    json_decref(p);
    commit(tx);
    int rc;
    cr_assert_null(get_doc(d, "notes", "x", &rc));
    cr_assert_eq(rc, PL_ENOTFOUND);
}

DOC_CASE(patch_merge)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "p", "{\"a\":1,\"b\":{\"c\":2,\"d\":{\"e\":3,\"f\":4}},\"arr\":[1,2],\"s\":\"x\"}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    json_t *patch = J("{\"a\":null,\"b\":{\"d\":{\"e\":null,\"g\":[true]},\"h\":{\"i\":null,\"j\":1}},\"arr\":[3],"
                      "\"s\":{\"t\":\"u\"},\"new\":\"n\"}");
    json_t *out = NULL;
    pl_error err = {0};
    int rc = doc_patch(tx, d, "notes", "p", patch, &out, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    const char *want = "{\"b\":{\"c\":2,\"d\":{\"f\":4,\"g\":[true]},\"h\":{\"j\":1}},\"arr\":[3],\"s\":{\"t\":\"u\"},"
                       "\"new\":\"n\"}";
    assert_json(out, want);
    json_decref(out);
    json_decref(patch);
    /* patches that are not objects are refused */
    const char *bad[] = {"[1]", "\"x\"", "3", "null", "true"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *b = J(bad[i]);
        cr_assert_eq(doc_patch(tx, d, "notes", "p", b, NULL, NULL), PL_EINVAL, "patch %s", bad[i]);
        json_decref(b);
    }
    cr_assert_eq(doc_patch(tx, d, "notes", "p", NULL, NULL, NULL), PL_EINVAL);
    /* without out */
    patch = J("{\"z\":{}}");
    cr_assert_eq(doc_patch(tx, d, "notes", "p", patch, NULL, &err), 0, "%s", err.msg);
    json_decref(patch);
    commit(tx);
    json_t *j = get_doc(d, "notes", "p", &rc);
    cr_assert_eq(rc, 0);
    cr_assert(json_is_object(json_object_get(j, "z")));
    cr_assert_null(json_object_get(j, "a"));
    json_decref(j);
}

DOC_CASE(incr)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "c", "{\"n\":5,\"s\":\"x\",\"r\":1.5,\"deep\":7}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    int64_t v = 0;
    pl_error err = {0};
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "n", 3, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v, 8);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "missing", -2, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v, -2);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "a.b.c", 1, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v, 1);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "s", 1, &v, NULL), PL_EINVAL);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "r", 1, &v, NULL), PL_EINVAL);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "deep.x", 1, &v, NULL), PL_EINVAL);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "n", INT64_MAX, &v, NULL), PL_EINVAL);
    cr_assert_eq(doc_incr(tx, d, "notes", "c", "N", 1, &v, NULL), PL_EINVAL);
    commit(tx);
    int rc;
    json_t *j = get_doc(d, "notes", "c", &rc);
    assert_json(j, "{\"n\":8,\"s\":\"x\",\"r\":1.5,\"deep\":7,\"missing\":-2,\"a\":{\"b\":{\"c\":1}}}");
    json_decref(j);
}

typedef struct incr_arg {
    doc_store *d;
    int n;
    int failures;
} incr_arg;

static void *incr_thread(void *p)
{
    incr_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        for (int attempt = 0;; attempt++) {
            sql_tx *tx = NULL;
            pl_error err = {0};
            int rc = sql_begin(doc_sql(a->d), SQL_TX_WRITE, &tx, &err);
            if (!rc) {
                rc = doc_incr(tx, a->d, "notes", "ctr", "hits", 1, NULL, &err);
                if (rc)
                    sql_rollback(tx);
                else
                    rc = sql_commit(tx, &err);
            }
            if (!rc)
                break;
            if (attempt > 50) { /* busy past the timeout: count it, the total then shows it */
                a->failures++;
                break;
            }
        }
    }
    return NULL;
}

DOC_CASE(incr_concurrent)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "ctr", "{\"hits\":0}");
    enum { THREADS = 4, EACH = 50 };
    pthread_t t[THREADS];
    incr_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (incr_arg){d, EACH, 0};
        pthread_create(&t[i], NULL, incr_thread, &a[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failures += a[i].failures;
    }
    cr_assert_eq(failures, 0);
    int rc;
    json_t *j = get_doc(d, "notes", "ctr", &rc);
    cr_assert_eq(json_integer_value(json_object_get(j, "hits")), THREADS * EACH, "lost updates: %lld",
                 (long long)json_integer_value(json_object_get(j, "hits")));
    json_decref(j);
}

/* ---- queries ------------------------------------------------------------------------ */

DOC_CASE(find_ops)
{
    seed_items(d);
    /* text */
    expect_where(d, "user", DOC_EQ, "\"u1\"", "a,b");
    expect_where(d, "user", DOC_NE, "\"u1\"", "c,d,e"); /* g's user is a number, f has none */
    expect_where(d, "user", DOC_LT, "\"u2\"", "a,b,e");  /* bytes: "U1" < "u1" */
    expect_where(d, "user", DOC_LE, "\"u1\"", "a,b,e");
    expect_where(d, "user", DOC_GT, "\"u1\"", "c,d");
    expect_where(d, "user", DOC_GE, "\"U1\"", "a,b,c,d,e");
    /* numbers: integers and reals are one type; the string "2" is not a number */
    expect_where(d, "n", DOC_EQ, "2", "b,d,g");
    expect_where(d, "n", DOC_EQ, "2.0", "b,d,g");
    expect_where(d, "n", DOC_NE, "2", "a,c");
    expect_where(d, "n", DOC_LT, "2", "a");
    expect_where(d, "n", DOC_LE, "2", "a,b,d,g");
    expect_where(d, "n", DOC_GT, "1.5", "b,c,d,g");
    expect_where(d, "n", DOC_GE, "3", "c");
    expect_where(d, "n", DOC_EQ, "\"2\"", "e");
    expect_where(d, "score", DOC_LT, "2", "a,c");
    expect_where(d, "score", DOC_GE, "2", "b,d");
    expect_where(d, "score", DOC_NE, "2", "a,b,c"); /* e's score is null: missing */
    /* booleans, nested */
    expect_where(d, "meta.flag", DOC_EQ, "true", "a");
    expect_where(d, "meta.flag", DOC_EQ, "false", "b");
    expect_where(d, "meta.flag", DOC_NE, "true", "b");  /* g's flag is the string "true" */
    expect_where(d, "meta.flag", DOC_EQ, "\"true\"", "g");
    expect_where(d, "meta.flag", DOC_LT, "true", "b");
    expect_where(d, "meta.kind", DOC_EQ, "\"x\"", "a");
    /* missing fields never match, whatever the op */
    expect_where(d, "nothere", DOC_NE, "1", "");
    expect_where(d, "nothere", DOC_NE, "\"a\"", "");
    expect_where(d, "meta", DOC_NE, "1", ""); /* objects are not values */
    expect_where(d, "user", DOC_EQ, "7", "g");
}

DOC_CASE(find_compound_order_limit)
{
    seed_items(d);
    json_t *u1 = J("\"u1\""), *two = J("2"), *u2 = J("\"u2\"");
    doc_cond c1[] = {{"user", DOC_GE, u1}, {"n", DOC_GE, two}};
    doc_query q = {.where = c1, .nwhere = 2};
    expect_ids(d, "items", &q, "b,c,d");
    q.order_by = "n";
    expect_ids(d, "items", &q, "b,d,c");
    q.desc = true;
    expect_ids(d, "items", &q, "c,d,b"); /* ties by id in the same direction */
    q.limit = 2;
    expect_ids(d, "items", &q, "c,d");
    q.offset = 1;
    expect_ids(d, "items", &q, "d,b");
    q.offset = 3;
    expect_ids(d, "items", &q, "");
    q.limit = 0;
    q.offset = 2;
    expect_ids(d, "items", &q, "b");
    /* equality on the leading field, order on the second (the compound index's shape) */
    doc_cond c2[] = {{"user", DOC_EQ, u2}};
    doc_query q2 = {.where = c2, .nwhere = 1, .order_by = "n", .desc = true};
    expect_ids(d, "items", &q2, "c,d");
    q2.desc = false;
    expect_ids(d, "items", &q2, "d,c");

    /* order without a condition: missing (and other types) last in both directions */
    doc_query q3 = {.order_by = "n"};
    expect_ids(d, "items", &q3, "a,b,d,g,c,e,f"); /* n is declared int: "2" (a string) sorts as missing */
    q3.desc = true;
    expect_ids(d, "items", &q3, "c,g,d,b,a,f,e");
    doc_query q4 = {.order_by = "user"};
    expect_ids(d, "items", &q4, "e,a,b,c,d,f,g");
    q4.desc = true;
    expect_ids(d, "items", &q4, "d,c,b,a,e,g,f");
    /* undeclared field: numbers, then strings, then booleans, then missing */
    put_text(d, "items", "h", "{\"mixed\":\"b\"}");
    put_text(d, "items", "i", "{\"mixed\":true}");
    put_text(d, "items", "j", "{\"mixed\":10}");
    put_text(d, "items", "k", "{\"mixed\":\"a\"}");
    put_text(d, "items", "l", "{\"mixed\":-1.5}");
    put_text(d, "items", "m", "{\"mixed\":false}");
    doc_query q5 = {.order_by = "mixed", .limit = 6};
    expect_ids(d, "items", &q5, "l,j,k,h,m,i");
    q5.desc = true;
    expect_ids(d, "items", &q5, "j,l,h,k,i,m");
    q5.limit = 0;
    q5.offset = 6;
    expect_ids(d, "items", &q5, "g,f,e,d,c,b,a");
    /* by id */
    doc_query q6 = {.desc = true, .limit = 3};
    expect_ids(d, "items", &q6, "m,l,k");
    json_decref(u1);
    json_decref(two);
    json_decref(u2);
}

DOC_CASE(find_docs_and_ids)
{
    seed_items(d);
    json_t *u1 = J("\"u1\"");
    doc_cond c = {"user", DOC_EQ, u1};
    doc_query q = {.where = &c, .nwhere = 1, .order_by = "n", .desc = true};
    sql_tx *tx = begin(d, SQL_TX_READ);
    json_t **docs = NULL;
    char **ids = NULL;
    size_t n = 0;
    pl_error err = {0};
    cr_assert_eq(doc_find(tx, d, "items", &q, &ids, &docs, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ids[0], "b");
    cr_assert_eq(json_integer_value(json_object_get(docs[0], "n")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(docs[1], "user")), "u1");
    doc_results_free(ids, docs, n);
    cr_assert_eq(doc_find(tx, d, "items", &q, NULL, &docs, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    doc_results_free(NULL, docs, n);
    cr_assert_eq(doc_find(tx, d, "items", &q, NULL, NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    int64_t cnt = 0;
    cr_assert_eq(doc_count(tx, d, "items", NULL, 0, &cnt, &err), 0);
    cr_assert_eq(cnt, 7);
    sql_rollback(tx);
    json_decref(u1);
}

DOC_CASE(patch_and_delete_where)
{
    seed_items(d);
    json_t *u2 = J("\"u2\""), *two = J("2");
    doc_cond c = {"user", DOC_EQ, u2};
    json_t *patch = J("{\"seen\":true,\"n\":null}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    int64_t changed = -1;
    pl_error err = {0};
    cr_assert_eq(doc_patch_where(tx, d, "items", &c, 1, patch, &changed, &err), 0, "%s", err.msg);
    cr_assert_eq(changed, 2);
    json_t *bad = J("[1]");
    cr_assert_eq(doc_patch_where(tx, d, "items", &c, 1, bad, &changed, NULL), PL_EINVAL);
    json_decref(bad);
    commit(tx);
    expect_where(d, "seen", DOC_EQ, "true", "c,d");
    expect_where(d, "n", DOC_EQ, "2", "b,g"); /* d lost its n */
    doc_cond c2 = {"n", DOC_EQ, two};
    tx = begin(d, SQL_TX_WRITE);
    cr_assert_eq(doc_delete_where(tx, d, "items", &c2, 1, &changed, &err), 0, "%s", err.msg);
    cr_assert_eq(changed, 2);
    cr_assert_eq(doc_delete_where(tx, d, "items", &c2, 1, &changed, &err), 0, "%s", err.msg);
    cr_assert_eq(changed, 0);
    commit(tx);
    doc_query all = {0};
    expect_ids(d, "items", &all, "a,c,d,e,f");
    /* no conditions: every document */
    tx = begin(d, SQL_TX_WRITE);
    cr_assert_eq(doc_patch_where(tx, d, "items", NULL, 0, patch, &changed, &err), 0, "%s", err.msg);
    cr_assert_eq(changed, 5);
    cr_assert_eq(doc_delete_where(tx, d, "items", NULL, 0, &changed, &err), 0, "%s", err.msg);
    cr_assert_eq(changed, 5);
    commit(tx);
    expect_ids(d, "items", &all, "");
    json_decref(patch);
    json_decref(u2);
    json_decref(two);
}

/* ---- transactions ------------------------------------------------------------------- */

DOC_CASE(rollback_leaves_nothing)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "keep", "{\"v\":1}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    json_t *j = J("{\"v\":2}");
    cr_assert_eq(doc_insert(tx, d, "notes", "new", j, NULL), 0);
    cr_assert_eq(doc_put(tx, d, "notes", "keep", j, NULL, NULL), 0);
    cr_assert_eq(doc_incr(tx, d, "notes", "keep", "v", 5, NULL, NULL), 0);
    json_t *got = NULL;
    cr_assert_eq(doc_get(tx, d, "notes", "keep", &got, NULL), 0);
    assert_json(got, "{\"v\":7}"); /* the transaction sees its own writes */
    json_decref(got);
    sql_rollback(tx);
    json_decref(j);
    int rc;
    got = get_doc(d, "notes", "keep", &rc);
    assert_json(got, "{\"v\":1}");
    json_decref(got);
    cr_assert_null(get_doc(d, "notes", "new", &rc));
    cr_assert_eq(rc, PL_ENOTFOUND);
}

DOC_CASE(outbox_in_same_tx)
{
    ensure_plain(d, "notes");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    pl_error err = {0};
    cr_assert_eq(sql_exec(tx, "CREATE TABLE ob (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)", SQL_NOARGS, NULL, &err),
                 0, "%s", err.msg);
    commit(tx);
    /* rolled back: neither */
    tx = begin(d, SQL_TX_WRITE);
    json_t *j = J("{\"v\":1}");
    cr_assert_eq(doc_insert(tx, d, "notes", "n", j, NULL), 0);
    cr_assert_eq(sql_exec(tx, "INSERT INTO ob (seq, body) VALUES (1, $1)", SQL_ARGS(SQL_TEXT("e1")), NULL, &err), 0);
    sql_rollback(tx);
    /* committed: both */
    tx = begin(d, SQL_TX_WRITE);
    cr_assert_eq(doc_insert(tx, d, "notes", "n", j, NULL), 0);
    cr_assert_eq(sql_exec(tx, "INSERT INTO ob (seq, body) VALUES (2, $1)", SQL_ARGS(SQL_TEXT("e2")), NULL, &err), 0);
    commit(tx);
    json_decref(j);
    tx = begin(d, SQL_TX_READ);
    int64_t n = -1;
    sql_rows *r = NULL;
    cr_assert_eq(sql_query(tx, "SELECT count(*), min(seq) FROM ob", SQL_NOARGS, &r, &err), 0);
    cr_assert_eq(sql_next(r, NULL), 1);
    n = sql_int(r, 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(sql_int(r, 1), 2);
    sql_rows_close(r);
    int64_t cnt = 0;
    cr_assert_eq(doc_count(tx, d, "notes", NULL, 0, &cnt, NULL), 0);
    cr_assert_eq(cnt, 1);
    sql_rollback(tx);
}

/* ---- input checks ------------------------------------------------------------------ */

DOC_CASE(bad_input)
{
    ensure_plain(d, "notes");
    put_text(d, "notes", "x", "{\"a\":1}");
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    json_t *j = J("{\"a\":1}");
    const char *bad_colls[] = {"", "Notes", "1notes", "no-tes", "notes; DROP TABLE x", "undeclared",
                               "a123456789012345678901234567890123456789012345678", NULL};
    for (int i = 0; bad_colls[i]; i++)
        cr_assert_eq(doc_insert(tx, d, bad_colls[i], "y", j, NULL), PL_EINVAL, "%s", bad_colls[i]);
    cr_assert_eq(doc_insert(tx, d, NULL, "y", j, NULL), PL_EINVAL);
    char longid[130];
    memset(longid, 'i', 129);
    longid[129] = '\0';
    const char *bad_ids[] = {"", longid, "a\nb", "\xff\xfe", "\xc3", "\xed\xa0\x80", NULL};
    for (int i = 0; bad_ids[i]; i++) {
        cr_assert_eq(doc_insert(tx, d, "notes", bad_ids[i], j, NULL), PL_EINVAL, "id %d", i);
        cr_assert_eq(doc_delete(tx, d, "notes", bad_ids[i], NULL), PL_EINVAL, "id %d", i);
    }
    longid[128] = '\0';
    cr_assert_eq(doc_insert(tx, d, "notes", longid, j, NULL), 0); /* 128 bytes is fine */
    cr_assert_eq(doc_insert(tx, d, "notes", "y", NULL, NULL), PL_EINVAL);
    json_t *arr = J("[1,2]");
    cr_assert_eq(doc_insert(tx, d, "notes", "y", arr, NULL), PL_EINVAL);
    cr_assert_eq(doc_put(tx, d, "notes", "y", arr, NULL, NULL), PL_EINVAL);
    json_decref(arr);
    json_t *nul = json_pack("{s:s%}", "k", "a\0b", (size_t)3);
    cr_assert_eq(doc_insert(tx, d, "notes", "y", nul, NULL), PL_EINVAL);
    json_decref(nul);
    const char *bad_paths[] = {"", ".", "a.", ".a", "a..b", "A", "a-b", "a.b.c.d.e", "a b", "a'", "$.a", NULL};
    json_t *one = J("1");
    for (int i = 0; bad_paths[i]; i++) {
        doc_cond c = {bad_paths[i], DOC_EQ, one};
        doc_query q = {.where = &c, .nwhere = 1};
        size_t n;
        cr_assert_eq(doc_find(tx, d, "notes", &q, NULL, NULL, &n, NULL), PL_EINVAL, "path %s", bad_paths[i]);
        doc_query q2 = {.order_by = bad_paths[i]};
        cr_assert_eq(doc_find(tx, d, "notes", &q2, NULL, NULL, &n, NULL), PL_EINVAL, "order %s", bad_paths[i]);
        cr_assert_eq(doc_incr(tx, d, "notes", "x", bad_paths[i], 1, NULL, NULL), PL_EINVAL, "incr %s", bad_paths[i]);
        int64_t cnt;
        cr_assert_eq(doc_count(tx, d, "notes", &c, 1, &cnt, NULL), PL_EINVAL);
    }
    /* condition values: string, number, boolean only */
    const char *bad_vals[] = {"null", "[1]", "{\"a\":1}", NULL};
    for (int i = 0; bad_vals[i]; i++) {
        json_t *v = J(bad_vals[i]);
        doc_cond c = {"a", DOC_EQ, v};
        int64_t cnt;
        cr_assert_eq(doc_count(tx, d, "notes", &c, 1, &cnt, NULL), PL_EINVAL, "%s", bad_vals[i]);
        json_decref(v);
    }
    doc_cond cnull = {"a", DOC_EQ, NULL};
    int64_t cnt;
    cr_assert_eq(doc_count(tx, d, "notes", &cnull, 1, &cnt, NULL), PL_EINVAL);
    doc_cond cop = {"a", (doc_op)42, one};
    cr_assert_eq(doc_count(tx, d, "notes", &cop, 1, &cnt, NULL), PL_EINVAL);
    /* after all that, the transaction still works and commits */
    cr_assert_eq(doc_count(tx, d, "notes", NULL, 0, &cnt, NULL), 0);
    cr_assert_eq(cnt, 2);
    commit(tx);
    json_decref(one);
    json_decref(j);
    /* bad definitions */
    doc_collection_def bad = {"Bad", no_indexes};
    cr_assert_eq(doc_ensure(d, &bad, 1, NULL), PL_EINVAL);
    static const doc_index badf[] = {{"a..b", DOC_TEXT}, {NULL, 0}};
    static const doc_index *const badix[] = {badf, NULL};
    doc_collection_def bad2 = {"fine", badix};
    cr_assert_eq(doc_ensure(d, &bad2, 1, NULL), PL_EINVAL);
}

DOC_CASE(ensure_idempotent)
{
    ensure_items(d);
    put_text(d, "items", "a", "{\"user\":\"u\"}");
    ensure_items(d);
    /* another store on the same database declares the same, and more */
    static const doc_index extra[] = {{"added", DOC_INT}, {NULL, 0}};
    static const doc_index *const more[] = {ix_user, extra, NULL};
    doc_collection_def def[] = {{"items", more}, {"other", NULL}};
    pl_error err = {0};
    cr_assert_eq(doc_ensure(d, def, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(doc_ensure(d, def, 2, &err), 0, "%s", err.msg);
    int rc;
    json_t *j = get_doc(d, "items", "a", &rc);
    cr_assert_eq(rc, 0);
    json_decref(j);
    put_text(d, "other", "o", "{}");
    /* the indexes exist: the engine lists them */
    sql_tx *tx = begin(d, SQL_TX_READ);
    int64_t n = 0;
    sql_rows *r = NULL;
    cr_assert_eq(sql_query(tx,
                           fx.pg ? "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'doc_items'"
                                 : "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'doc_items'",
                           SQL_NOARGS, &r, &err),
                 0, "%s", err.msg);
    cr_assert_eq(sql_next(r, NULL), 1);
    n = sql_int(r, 0);
    sql_rows_close(r);
    sql_rollback(tx);
    cr_assert_eq(n, 7, "indexes: %lld", (long long)n); /* primary key + 5 declared + 1 added */
}

DOC_CASE(unicode_special_large)
{
    ensure_items(d);
    const char *tricky = "{\"user\":\"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 'q' \\\"dq\\\" \\\\ $1 -- /* */ \\n\\t\","
                         "\"k'ey\":\"v\",\"we\\\"ird\":{\"x\":[1,\"\\u00e9\"]},\"n\":12345678901234}";
    put_text(d, "items", "\xc3\xa9-id \xf0\x9f\x98\x80", tricky);
    int rc;
    json_t *j = get_doc(d, "items", "\xc3\xa9-id \xf0\x9f\x98\x80", &rc);
    cr_assert_eq(rc, 0);
    assert_json(j, tricky);
    /* found by its odd value */
    json_t *u = json_incref(json_object_get(j, "user"));
    doc_cond c = {"user", DOC_EQ, u};
    doc_query q = {.where = &c, .nwhere = 1};
    expect_ids(d, "items", &q, "\xc3\xa9-id \xf0\x9f\x98\x80");
    json_decref(u);
    json_decref(j);
    /* 1 MiB document */
    size_t big = 1u << 20;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        s[i] = (char)('a' + i % 26);
    s[big] = '\0';
    json_t *doc = json_pack("{s:s,s:i}", "blob", s, "n", 42);
    sql_tx *tx = begin(d, SQL_TX_WRITE);
    pl_error err = {0};
    cr_assert_eq(doc_insert(tx, d, "items", "big", doc, &err), 0, "%s", err.msg);
    json_t *p = J("{\"extra\":1}");
    cr_assert_eq(doc_patch(tx, d, "items", "big", p, NULL, &err), 0, "%s", err.msg);
    json_decref(p);
    commit(tx);
    j = get_doc(d, "items", "big", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(strlen(json_string_value(json_object_get(j, "blob"))), big);
    cr_assert_str_eq(json_string_value(json_object_get(j, "blob")), s);
    cr_assert_eq(json_integer_value(json_object_get(j, "extra")), 1);
    json_decref(j);
    json_decref(doc);
    free(s);
    json_t *fortytwo = J("42");
    doc_cond c2 = {"n", DOC_EQ, fortytwo};
    doc_query q2 = {.where = &c2, .nwhere = 1};
    expect_ids(d, "items", &q2, "big");
    json_decref(fortytwo);
}

DOC_CASE(reals_and_big_ints)
{
    ensure_items(d);
    put_text(d, "items", "a", "{\"score\":0.1,\"n\":9007199254740993}");
    put_text(d, "items", "b", "{\"score\":1e-300,\"n\":-9223372036854775808}");
    put_text(d, "items", "c", "{\"score\":1.7976931348623157e308,\"n\":9223372036854775807}");
    expect_where(d, "score", DOC_EQ, "0.1", "a");
    expect_where(d, "score", DOC_GT, "0", "a,b,c");
    expect_where(d, "n", DOC_EQ, "9007199254740993", "a");
    expect_where(d, "n", DOC_GT, "9007199254740992", "a,c");
    expect_where(d, "n", DOC_LT, "0", "b");
    int rc;
    json_t *j = get_doc(d, "items", "c", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "n")), INT64_MAX);
    cr_assert(json_is_real(json_object_get(j, "score")));
    cr_assert_eq(json_real_value(json_object_get(j, "score")), 1.7976931348623157e308);
    json_decref(j);
    /* reals stay reals, whatever the engine prints */
    put_text(d, "items", "d", "{\"score\":1e20,\"x\":[-1e25,\"1e25\",12345678901234567890.0,2.0,0.5e-5],\"n\":-0}");
    j = get_doc(d, "items", "d", &rc);
    cr_assert_eq(rc, 0);
    assert_json(j, "{\"score\":1e20,\"x\":[-1e25,\"1e25\",12345678901234567890.0,2.0,0.5e-5],\"n\":0}");
    json_decref(j);
    expect_where(d, "score", DOC_GT, "1e19", "c,d");
}

/* ---- several stores ------------------------------------------------------------------ */

typedef struct ensure_arg {
    doc_store *d;
    int rc;
    char msg[256];
} ensure_arg;

static void *ensure_thread(void *p)
{
    ensure_arg *a = p;
    doc_collection_def def[] = {{"items", items_ix}, {"notes", no_indexes}};
    pl_error err = {0};
    a->rc = doc_ensure(a->d, def, 2, &err);
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    return NULL;
}

/* Processes starting at once declare the same collections on one database. */
DOC_CASE(ensure_concurrent)
{
    enum { N = 4 };
    ensure_arg a[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        a[i] = (ensure_arg){.d = d};
        if (i) {
            sql_options o = {.service = fx.service, .data_dir = fx.pg ? NULL : fx.dir};
            pl_error err = {0};
            cr_assert_eq(doc_open(fx.pg ? pg_url() : "", &o, &a[i].d, &err), 0, "%s", err.msg);
        }
    }
    for (int i = 0; i < N; i++)
        pthread_create(&t[i], NULL, ensure_thread, &a[i]);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++)
        cr_assert_eq(a[i].rc, 0, "store %d: %s", i, a[i].msg);
    /* each store works, and sees what the others wrote */
    put_text(a[1].d, "items", "x", "{\"user\":\"u\",\"n\":1}");
    sql_tx *tx = begin(a[2].d, SQL_TX_WRITE);
    json_t *p = J("{\"n\":2,\"sub\":{\"k\":null}}");
    json_t *out = NULL;
    pl_error err = {0};
    cr_assert_eq(doc_patch(tx, a[2].d, "items", "x", p, &out, &err), 0, "%s", err.msg);
    assert_json(out, "{\"user\":\"u\",\"n\":2,\"sub\":{}}");
    json_decref(out);
    json_decref(p);
    commit(tx);
    json_t *two = J("2");
    doc_cond c = {"n", DOC_EQ, two};
    doc_query q = {.where = &c, .nwhere = 1};
    expect_ids(a[3].d, "items", &q, "x");
    json_decref(two);
    for (int i = 1; i < N; i++)
        doc_close(a[i].d);
}

/* Two services on one engine (two schemas, or two files) never see each other's documents. */
DOC_CASE(services_isolated)
{
    ensure_plain(d, "notes");
    char other[80];
    snprintf(other, sizeof other, "%s_b", fx.service);
    sql_options o = {.service = other, .data_dir = fx.pg ? NULL : fx.dir};
    doc_store *d2 = NULL;
    pl_error err = {0};
    cr_assert_eq(doc_open(fx.pg ? pg_url() : "", &o, &d2, &err), 0, "%s", err.msg);
    doc_collection_def def = {"notes", no_indexes};
    cr_assert_eq(doc_ensure(d2, &def, 1, &err), 0, "%s", err.msg);
    put_text(d, "notes", "mine", "{\"v\":1}");
    put_text(d2, "notes", "theirs", "{\"v\":2}");
    doc_query all = {0};
    expect_ids(d, "notes", &all, "mine");
    expect_ids(d2, "notes", &all, "theirs");
    if (fx.pg) {
        sql_tx *tx = begin(d2, SQL_TX_WRITE);
        char sql[160];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", other);
        cr_assert_eq(sql_exec(tx, sql, SQL_NOARGS, NULL, &err), 0, "%s", err.msg);
        commit(tx);
    } else {
        /* the embedded store is <data_dir>/<service>.doc.db */
        char path[160];
        snprintf(path, sizeof path, "%s/%s.doc.db", fx.dir, other);
        cr_assert_eq(access(path, F_OK), 0, "%s", path);
    }
    doc_close(d2);
}

/* A read transaction can read (and on PostgreSQL takes no row locks: FOR UPDATE would fail there). */
DOC_CASE(read_tx_reads)
{
    ensure_items(d);
    put_text(d, "items", "r", "{\"n\":1}");
    sql_tx *tx = begin(d, SQL_TX_READ);
    json_t *j = NULL;
    pl_error err = {0};
    cr_assert_eq(doc_get(tx, d, "items", "r", &j, &err), 0, "%s", err.msg);
    json_decref(j);
    sql_rollback(tx);
    /* a writer holding the row does not block a reader (PostgreSQL; SQLite readers see the last commit) */
    sql_tx *w = begin(d, SQL_TX_WRITE);
    cr_assert_eq(doc_incr(w, d, "items", "r", "n", 1, NULL, &err), 0, "%s", err.msg);
    tx = begin(d, SQL_TX_READ);
    cr_assert_eq(doc_get(tx, d, "items", "r", &j, &err), 0, "%s", err.msg);
    cr_assert_eq(json_integer_value(json_object_get(j, "n")), 1);
    json_decref(j);
    sql_rollback(tx);
    commit(w);
}
