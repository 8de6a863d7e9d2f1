/*
 * doc.c - the doc store kind on the sql kind: one table per collection
 * (id, doc), the engine's JSON functions for field access, expression indexes
 * for the declared fields.
 *
 * Typing is what keeps the engines alike. Every field access is one of three
 * typed expressions (text, number, boolean) that is NULL when the field is
 * missing, JSON null or of another type:
 *
 *   SQLite  CASE WHEN json_type(doc,'$.a.b') = 'text' THEN json_extract(doc,'$.a.b') END
 *   PG      ((CASE WHEN jsonb_typeof(doc->'a'->'b') = 'string' THEN doc->'a'->>'b' END) COLLATE "C")
 *
 * A condition uses the expression of its value's type, so a type mismatch is
 * a NULL comparison (never true) on both engines, and an index declared with
 * that type is the same expression, which is how the planners find it.
 * Text compares by bytes (SQLite BINARY, PostgreSQL COLLATE "C", also on the
 * id column); integers and reals are one numeric type (PostgreSQL numeric).
 * Field paths are validated and then spliced into the SQL as literals (an
 * index only matches a query whose expression is textually the same);
 * values are always bound.
 */
#include "store/doc.h"
#include "core/fsutil.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 48
#define PATH_MAX_LEN 255 /* doc_check.c holds the validators themselves */

typedef enum { TC_TEXT, TC_NUM, TC_BOOL } tclass;

typedef struct field_decl {
    char *field;
    tclass t;
} field_decl;

typedef struct collection {
    char name[NAME_MAX_LEN + 1];
    field_decl *fields; /* every field named by a declared index, with its type */
    size_t nfields;
} collection;

struct doc_store {
    sql_db *db;
    bool pg;
    pthread_rwlock_t lock; /* guards colls and merge_ready */
    collection *colls;
    size_t ncolls;
    bool merge_ready;
};

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
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

/* ---- validation ------------------------------------------------------------------ */

static int check_coll(doc_store *d, const char *name, pl_error *err)
{
    if (!doc_name_valid(name))
        return err_set(err, PL_EINVAL, "collection", "collection names are [a-z][a-z0-9_]{0,47}, got \"%.60s\"",
                       name ? name : "(null)");
    pthread_rwlock_rdlock(&d->lock);
    bool known = false;
    for (size_t i = 0; i < d->ncolls && !known; i++)
        known = strcmp(d->colls[i].name, name) == 0;
    pthread_rwlock_unlock(&d->lock);
    if (!known)
        return err_set(err, PL_EINVAL, "collection", "collection \"%s\" was not declared with doc_ensure", name);
    return 0;
}

static int check_id(const char *id, pl_error *err)
{
    if (!doc_id_valid(id))
        return err_set(err, PL_EINVAL, "id", "document ids are 1..128 bytes of UTF-8 without control characters");
    return 0;
}

/* PostgreSQL's jsonb cannot hold U+0000, so no engine takes it: looks for an
 * unescaped "\u0000" in the serialized text. */
static bool has_nul_escape(const char *s)
{
    for (const char *p = s; (p = strstr(p, "\\u0000")); p++) {
        size_t bs = 0;
        for (const char *q = p; q > s && q[-1] == '\\'; q--)
            bs++;
        if (bs % 2 == 0)
            return true;
    }
    return false;
}

/* For PostgreSQL: jansson writes reals of 1e17 and more with an exponent
 * ("1e+17"), which jsonb keeps as numeric scale 0 and prints as an integer,
 * so the real would come back an integer. Writes each such number as the
 * exact decimal of its double with ".0" instead (jsonb keeps the scale).
 * Documents, patches and query values all pass through here, so a value
 * compares equal to itself. Returns a new text, or NULL when nothing changed. */
static char *expand_reals(const char *text)
{
    char *out = NULL;
    size_t on = 0, cap = 0;
    const char *copied = text;
    bool in_str = false;
    for (const char *s = text; *s; s++) {
        if (in_str) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                in_str = false;
            continue;
        }
        if (*s == '"') {
            in_str = true;
            continue;
        }
        if (*s != '-' && !(*s >= '0' && *s <= '9'))
            continue;
        const char *e = s + (*s == '-'), *exp = NULL;
        while ((*e >= '0' && *e <= '9') || *e == '.' || *e == 'e' || *e == 'E' || *e == '+' || *e == '-') {
            if (*e == 'e' || *e == 'E')
                exp = e;
            e++;
        }
        if (exp && exp[1] != '-') {
            char num[400];
            int k = snprintf(num, sizeof num, "%.1f", strtod(s, NULL));
            size_t chunk = (size_t)(s - copied);
            if (on + chunk + (size_t)k + 1 > cap) {
                cap = (on + chunk + (size_t)k + 1) * 2 + strlen(e);
                out = xrealloc(out, cap);
            }
            memcpy(out + on, copied, chunk);
            on += chunk;
            memcpy(out + on, num, (size_t)k);
            on += (size_t)k;
            copied = e;
        }
        s = e - 1;
    }
    if (!out)
        return NULL;
    size_t rest = strlen(copied);
    out = xrealloc(out, on + rest + 1);
    memcpy(out + on, copied, rest + 1);
    return out;
}

/* The text an engine stores for a JSON value (jansson's, reals expanded on PostgreSQL). */
static char *dump_for(bool pg, const json_t *v, size_t flags)
{
    char *s = json_dumps(v, flags);
    if (!s)
        return NULL;
    char *x = pg ? expand_reals(s) : NULL;
    if (x) {
        free(s);
        s = x;
    }
    return s;
}

/* Serializes an object for storage, or fails with PL_EINVAL. */
static int dump_object(bool pg, const json_t *doc, const char *what, char **out, pl_error *err)
{
    if (!json_is_object(doc))
        return err_set(err, PL_EINVAL, what, "a %s must be a JSON object", what);
    char *s = dump_for(pg, doc, JSON_COMPACT);
    if (!s)
        return err_set(err, PL_EINVAL, what, "the %s cannot be serialized", what);
    if (has_nul_escape(s)) {
        free(s);
        return err_set(err, PL_EINVAL, what, "a %s may not contain the character U+0000", what);
    }
    *out = s;
    return 0;
}

/* PostgreSQL prints a jsonb number without its exponent (1e300 comes back as
 * 1 and 300 zeros). Documents only hold integers that fit in 64 bits (what
 * jansson writes), so an integer token that does not fit was a real: returns
 * a copy of text with ".0" after each such token, or NULL when there is none. */
static char *reals_back(const char *text)
{
    char *out = NULL;
    size_t on = 0, cap = 0;
    const char *copied = text;
    bool in_str = false;
    for (const char *s = text; *s; s++) {
        if (in_str) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                in_str = false;
            continue;
        }
        if (*s == '"') {
            in_str = true;
            continue;
        }
        if (*s != '-' && !(*s >= '0' && *s <= '9'))
            continue;
        const char *e = s + (*s == '-');
        bool plain = true;
        while ((*e >= '0' && *e <= '9') || *e == '.' || *e == 'e' || *e == 'E' || *e == '+' || *e == '-') {
            if (!(*e >= '0' && *e <= '9'))
                plain = false;
            e++;
        }
        size_t digits = (size_t)(e - s) - (*s == '-');
        bool fits = digits < 19 || (digits == 19 && strncmp(s + (*s == '-'), *s == '-' ? "9223372036854775808"
                                                                                      : "9223372036854775807", 19) <= 0);
        if (plain && !fits) {
            size_t chunk = (size_t)(e - copied);
            if (on + chunk + 3 > cap) {
                cap = (on + chunk + 3) * 2 + strlen(e);
                out = xrealloc(out, cap);
            }
            memcpy(out + on, copied, chunk);
            on += chunk;
            memcpy(out + on, ".0", 2);
            on += 2;
            copied = e;
        }
        s = e - 1;
    }
    if (!out)
        return NULL;
    size_t rest = strlen(copied);
    out = xrealloc(out, on + rest + 1);
    memcpy(out + on, copied, rest + 1);
    return out;
}

static int parse_doc(const char *text, json_t **out, pl_error *err)
{
    json_error_t je;
    char *fixed = text ? reals_back(text) : NULL;
    json_t *j = text ? json_loads(fixed ? fixed : text, 0, &je) : NULL;
    free(fixed);
    if (!j)
        return err_set(err, PL_EINTERNAL, NULL, "doc: a stored document does not parse: %s", text ? je.text : "NULL");
    *out = j;
    return 0;
}

/* ---- SQL text ----------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0)
            abort();
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
        if (b->n == 0)
            b->p[0] = '\0';
    }
}

/* The field access of one type (see the top). */
static void sb_expr(sbuf *b, bool pg, const char *path, tclass t)
{
    if (!pg) {
        switch (t) {
        case TC_TEXT:
            sb_add(b, "(CASE WHEN json_type(doc,'$.%s')='text' THEN json_extract(doc,'$.%s') END)", path, path);
            break;
        case TC_NUM:
            sb_add(b, "(CASE WHEN json_type(doc,'$.%s') IN ('integer','real') THEN json_extract(doc,'$.%s') END)",
                   path, path);
            break;
        case TC_BOOL:
            sb_add(b, "(CASE json_type(doc,'$.%s') WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)", path);
            break;
        }
        return;
    }
    /* doc->'a'->'b' (jsonb) and doc->'a'->>'b' (text): -> with a text key never indexes an array */
    char j[PATH_MAX_LEN * 2 + 64], tx[PATH_MAX_LEN * 2 + 64];
    size_t jn = (size_t)snprintf(j, sizeof j, "doc");
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        int len = dot ? (int)(dot - seg) : (int)strlen(seg);
        if (!dot) {
            snprintf(tx, sizeof tx, "%s->>'%.*s'", j, len, seg);
            snprintf(j + jn, sizeof j - jn, "->'%.*s'", len, seg);
            break;
        }
        jn += (size_t)snprintf(j + jn, sizeof j - jn, "->'%.*s'", len, seg);
        seg = dot + 1;
    }
    switch (t) {
    case TC_TEXT:
        sb_add(b, "((CASE WHEN jsonb_typeof(%s)='string' THEN %s END) COLLATE \"C\")", j, tx);
        break;
    case TC_NUM:
        sb_add(b, "(CASE WHEN jsonb_typeof(%s)='number' THEN (%s)::numeric END)", j, tx);
        break;
    case TC_BOOL:
        sb_add(b, "(CASE WHEN jsonb_typeof(%s)='boolean' THEN (%s)::boolean END)", j, tx);
        break;
    }
}

static tclass class_of(doc_type t) { return t == DOC_TEXT ? TC_TEXT : t == DOC_BOOL ? TC_BOOL : TC_NUM; }

/* Bound parameters of one statement. */
typedef struct params {
    sql_arg *a;
    size_t n, cap;
    char **owned; /* texts made for the statement (reals on PostgreSQL) */
    size_t nowned;
} params;

static void params_free(params *p)
{
    for (size_t i = 0; i < p->nowned; i++)
        free(p->owned[i]);
    free(p->owned);
    free(p->a);
}

static int param_add(params *p, sql_arg a)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        p->a = xrealloc(p->a, p->cap * sizeof *p->a);
    }
    p->a[p->n++] = a;
    return (int)p->n;
}

static int value_class(const json_t *v, tclass *t)
{
    if (json_is_string(v))
        *t = TC_TEXT;
    else if (json_is_integer(v) || json_is_real(v))
        *t = TC_NUM;
    else if (json_is_boolean(v))
        *t = TC_BOOL;
    else
        return -1;
    return 0;
}

static int check_conds(const doc_cond *where, size_t n, pl_error *err)
{
    if (n && !where)
        return err_set(err, PL_EINVAL, "where", "nwhere is %zu but where is NULL", n);
    for (size_t i = 0; i < n; i++) {
        tclass t;
        if (!doc_path_valid(where[i].field))
            return err_set(err, PL_EINVAL, "field",
                           "field paths are up to 4 dotted segments of [a-z0-9_], got \"%.60s\"",
                           where[i].field ? where[i].field : "(null)");
        if ((unsigned)where[i].op > DOC_GE)
            return err_set(err, PL_EINVAL, "op", "unknown operator %d", (int)where[i].op);
        if (!where[i].value || value_class(where[i].value, &t))
            return err_set(err, PL_EINVAL, where[i].field, "a condition's value is a string, number or boolean");
        if (json_is_string(where[i].value) && strlen(json_string_value(where[i].value)) != json_string_length(where[i].value))
            return err_set(err, PL_EINVAL, where[i].field, "a condition's value may not contain U+0000");
    }
    return 0;
}

/* Appends " WHERE ..." for the conditions (already checked). */
static void sb_where(sbuf *b, params *p, bool pg, const doc_cond *where, size_t n, const char *lead)
{
    static const char *const ops[] = {"=", "<>", "<", "<=", ">", ">="};
    for (size_t i = 0; i < n; i++) {
        const json_t *v = where[i].value;
        tclass t = TC_TEXT;
        value_class(v, &t);
        sb_add(b, "%s", i == 0 ? lead : " AND ");
        sb_expr(b, pg, where[i].field, t);
        int k;
        const char *cast = "";
        switch (t) {
        case TC_TEXT:
            k = param_add(p, SQL_TEXT(json_string_value(v)));
            cast = pg ? "::text" : "";
            break;
        case TC_NUM:
            if (pg && json_is_real(v)) {
                /* numeric from the text jansson writes into documents: a double as a float8 would
                 * become numeric 0.1000000000000000055..., never equal to the stored 0.10000000000000001 */
                char *txt = dump_for(true, v, JSON_ENCODE_ANY);
                if (!txt)
                    abort();
                p->owned = xrealloc(p->owned, (p->nowned + 1) * sizeof *p->owned);
                p->owned[p->nowned++] = txt;
                k = param_add(p, SQL_TEXT(txt));
            } else {
                k = param_add(p, json_is_integer(v) ? SQL_INT(json_integer_value(v)) : SQL_REAL(json_real_value(v)));
            }
            cast = pg ? "::numeric" : "";
            break;
        default:
            k = pg ? param_add(p, SQL_TEXT(json_is_true(v) ? "true" : "false"))
                   : param_add(p, SQL_INT(json_is_true(v) ? 1 : 0));
            cast = pg ? "::boolean" : "";
            break;
        }
        sb_add(b, " %s $%d%s", ops[where[i].op], k, cast);
    }
}

/* ---- open, close, ensure ---------------------------------------------------------------- */

int doc_open(const char *url, const sql_options *o, doc_store **out, pl_error *err)
{
    url = url ? url : "";
    char path[4096];
    /* Embedded: its own file, <data_dir>/<service>.doc.db, so that a service with an sql store
     * as well never shares (or collides with) that one's <service>.db. */
    if (!*url || strcmp(url, "sqlite:") == 0) {
        if (!o || !o->data_dir || !o->service)
            return err_set(err, PL_ECONFIG, "doc", "the embedded doc store needs a data directory and a service");
        if (fs_mkdir_p(o->data_dir))
            return err_set(err, PL_EIO, "data", "cannot create data directory %s: %s", o->data_dir, strerror(errno));
        snprintf(path, sizeof path, "sqlite:%s/%s.doc.db", o->data_dir, o->service);
        url = path;
    }
    sql_db *db = NULL;
    int rc = sql_open(url, o, &db, err);
    if (rc)
        return rc;
    const char *eng = sql_engine(db);
    if (strcmp(eng, "sqlite") != 0 && strcmp(eng, "postgres") != 0) {
        sql_close(db);
        return err_set(err, PL_ECONFIG, "doc", "the doc kind does not speak the JSON of sql engine \"%s\"", eng);
    }
    doc_store *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->db = db;
    d->pg = strcmp(eng, "postgres") == 0;
    pthread_rwlock_init(&d->lock, NULL);
    *out = d;
    return 0;
}

void doc_close(doc_store *d)
{
    if (!d)
        return;
    sql_close(d->db);
    for (size_t i = 0; i < d->ncolls; i++) {
        for (size_t k = 0; k < d->colls[i].nfields; k++)
            free(d->colls[i].fields[k].field);
        free(d->colls[i].fields);
    }
    free(d->colls);
    pthread_rwlock_destroy(&d->lock);
    free(d);
}

const char *doc_engine(const doc_store *d) { return sql_engine(d->db); }
sql_db *doc_sql(doc_store *d) { return d->db; }

/* RFC 7396 on jsonb (|| alone is shallow): a patch member null removes, an
 * object member merges into the target's member recursively, anything else replaces. */
static const char merge_fn[] =
    "CREATE FUNCTION pulse_doc_merge(target jsonb, patch jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $f$\n"
    "DECLARE k text; v jsonb; r jsonb;\n"
    "BEGIN\n"
    "  IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN RETURN patch; END IF;\n"
    "  IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN r := '{}'::jsonb; ELSE r := target; END IF;\n"
    "  FOR k, v IN SELECT e.key, e.value FROM jsonb_each(patch) e LOOP\n"
    "    IF jsonb_typeof(v) = 'null' THEN r := r - k;\n"
    "    ELSE r := r || jsonb_build_object(k, pulse_doc_merge(r -> k, v));\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "  RETURN r;\n"
    "END $f$";

static void one_int(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

static int ensure_merge(doc_store *d, pl_error *err)
{
    pthread_rwlock_rdlock(&d->lock);
    bool ready = d->merge_ready;
    pthread_rwlock_unlock(&d->lock);
    if (ready || !d->pg)
        return 0;
    int rc = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        sql_tx *tx = NULL;
        if ((rc = sql_begin(d->db, SQL_TX_WRITE, &tx, err)))
            return rc;
        int64_t have = 0;
        rc = sql_one(tx,
                     "SELECT count(*) FROM pg_proc WHERE proname = 'pulse_doc_merge'"
                     " AND pronamespace = current_schema()::regnamespace",
                     SQL_NOARGS, one_int, &have, err);
        if (rc < 0) {
            sql_rollback(tx);
            return rc;
        }
        rc = have ? 0 : sql_exec(tx, merge_fn, SQL_NOARGS, NULL, err);
        if (rc) {
            sql_rollback(tx); /* another process made it first: look again */
            continue;
        }
        if ((rc = sql_commit(tx, err)) == 0)
            break;
    }
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&d->lock);
    d->merge_ready = true;
    pthread_rwlock_unlock(&d->lock);
    return 0;
}

static uint32_t fnv1a(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int ensure_one(doc_store *d, const doc_collection_def *def, pl_error *err)
{
    sql_tx *tx = NULL;
    int rc = sql_begin(d->db, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    /* building an index over a large collection may take longer than the statement timeout; and
     * CREATE ... IF NOT EXISTS is not safe against itself in another session (two creators both
     * pass the check, and one fails on the catalog's row type: "type ... already exists"), so
     * the schema's DDL is serialised by a transaction-scoped advisory lock keyed by the schema */
    if (d->pg && ((rc = sql_exec(tx, "SET LOCAL statement_timeout = 0", SQL_NOARGS, NULL, err)) ||
                  (rc = sql_exec(tx, "SELECT pg_advisory_xact_lock(hashtext('pulse.doc.ddl.' || current_schema()))",
                                 SQL_NOARGS, NULL, err)))) {
        sql_rollback(tx);
        return rc;
    }
    sbuf b = {0};
    sb_add(&b, d->pg ? "CREATE TABLE IF NOT EXISTS doc_%s (id text COLLATE \"C\" PRIMARY KEY, doc jsonb NOT NULL)"
                     : "CREATE TABLE IF NOT EXISTS doc_%s (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)",
           def->name);
    rc = sql_exec(tx, b.p, SQL_NOARGS, NULL, err);
    for (const doc_index *const *ix = def->indexes; !rc && ix && *ix; ix++) {
        /* the name is a hash of the fields and their types: the same declaration is the same index */
        uint32_t h = 2166136261u;
        for (const doc_index *f = *ix; f->field; f++) {
            char t[4] = {(char)('0' + class_of(f->type)), '/', 0};
            h = fnv1a(fnv1a(h, f->field), t);
        }
        b.n = 0;
        sb_add(&b, "CREATE INDEX IF NOT EXISTS doc_%s_x%08x ON doc_%s (", def->name, h, def->name);
        /* PostgreSQL: the last field DESC NULLS LAST, then id DESC, so that a scan gives what
         * doc_find asks for most (newest first, missing last) and, backwards, ASC with a condition
         * on the field; SQLite's planner serves both directions from a plain index */
        for (const doc_index *f = *ix; f->field; f++) {
            sb_expr(&b, d->pg, f->field, class_of(f->type));
            sb_add(&b, "%s, ", d->pg && !f[1].field ? " DESC NULLS LAST" : "");
        }
        sb_add(&b, d->pg ? "id DESC)" : "id)");
        rc = sql_exec(tx, b.p, SQL_NOARGS, NULL, err);
    }
    free(b.p);
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    return sql_commit(tx, err);
}

static void remember(doc_store *d, const doc_collection_def *def)
{
    pthread_rwlock_wrlock(&d->lock);
    collection *c = NULL;
    for (size_t i = 0; i < d->ncolls && !c; i++)
        if (strcmp(d->colls[i].name, def->name) == 0)
            c = &d->colls[i];
    if (!c) {
        d->colls = xrealloc(d->colls, (d->ncolls + 1) * sizeof *d->colls);
        c = &d->colls[d->ncolls++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", def->name);
    }
    for (const doc_index *const *ix = def->indexes; ix && *ix; ix++) {
        for (const doc_index *f = *ix; f->field; f++) {
            bool have = false;
            for (size_t k = 0; k < c->nfields && !have; k++)
                have = strcmp(c->fields[k].field, f->field) == 0;
            if (have)
                continue;
            c->fields = xrealloc(c->fields, (c->nfields + 1) * sizeof *c->fields);
            c->fields[c->nfields++] = (field_decl){xstrdup(f->field), class_of(f->type)};
        }
    }
    pthread_rwlock_unlock(&d->lock);
}

int doc_ensure(doc_store *d, const doc_collection_def *defs, size_t n, pl_error *err)
{
    if (n && !defs)
        return err_set(err, PL_EINVAL, "collection", "n is %zu but defs is NULL", n);
    for (size_t i = 0; i < n; i++) {
        if (!doc_name_valid(defs[i].name))
            return err_set(err, PL_EINVAL, "collection", "collection names are [a-z][a-z0-9_]{0,47}, got \"%.60s\"",
                           defs[i].name ? defs[i].name : "(null)");
        for (const doc_index *const *ix = defs[i].indexes; ix && *ix; ix++) {
            if (!(*ix)->field)
                return err_set(err, PL_EINVAL, "index", "collection %s: an index names no field", defs[i].name);
            int nf = 0;
            for (const doc_index *f = *ix; f->field; f++, nf++)
                if (!doc_path_valid(f->field) || (unsigned)f->type > DOC_BOOL || nf >= 8)
                    return err_set(err, PL_EINVAL, "index",
                                   "collection %s: index field \"%.60s\" is not a valid path and type (at most 8 fields)",
                                   defs[i].name, f->field);
        }
    }
    int rc = ensure_merge(d, err);
    for (size_t i = 0; i < n && !rc; i++) {
        /* two processes starting at once may race on CREATE ... IF NOT EXISTS (PostgreSQL): try again */
        for (int attempt = 0; attempt < 3; attempt++)
            if ((rc = ensure_one(d, &defs[i], err)) != PL_ECONFLICT)
                break;
        if (!rc)
            remember(d, &defs[i]);
    }
    return rc;
}

/* ---- documents ---------------------------------------------------------------------- */

static bool writing(sql_tx *tx) { return sql_tx_flags(tx) & SQL_TX_WRITE; }

int doc_insert(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *doc, pl_error *err)
{
    char *text = NULL;
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)) || (rc = dump_object(d->pg, doc, "document", &text, err)))
        return rc;
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO doc_%s (id, doc) VALUES ($1, $2%s) ON CONFLICT (id) DO NOTHING", coll,
             d->pg ? "::jsonb" : "");
    int64_t changes = 0;
    rc = sql_exec(tx, sql, SQL_ARGS(SQL_TEXT(id), SQL_TEXT(text)), &changes, err);
    free(text);
    if (!rc && changes == 0)
        rc = err_set(err, PL_ECONFLICT, "id", "%s/%s already exists", coll, id);
    return rc;
}

int doc_put(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *doc, bool *created,
            pl_error *err)
{
    char *text = NULL;
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)) || (rc = dump_object(d->pg, doc, "document", &text, err)))
        return rc;
    char sql[200];
    int64_t made = 0;
    if (d->pg) {
        /* one statement; xmax is 0 on a row this statement inserted */
        snprintf(sql, sizeof sql,
                 "INSERT INTO doc_%s (id, doc) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
                 " RETURNING (xmax::text = '0')::int",
                 coll);
        rc = sql_one(tx, sql, SQL_ARGS(SQL_TEXT(id), SQL_TEXT(text)), one_int, &made, err);
        rc = rc == 1 ? 0 : rc < 0 ? rc : err_set(err, PL_EINTERNAL, NULL, "doc: upsert returned no row");
    } else {
        /* the write transaction holds SQLite's lock, so nothing comes between the two */
        int64_t changes = 0;
        snprintf(sql, sizeof sql, "UPDATE doc_%s SET doc = $2 WHERE id = $1", coll);
        rc = sql_exec(tx, sql, SQL_ARGS(SQL_TEXT(id), SQL_TEXT(text)), &changes, err);
        if (!rc && changes == 0) {
            snprintf(sql, sizeof sql, "INSERT INTO doc_%s (id, doc) VALUES ($1, $2)", coll);
            rc = sql_exec(tx, sql, SQL_ARGS(SQL_TEXT(id), SQL_TEXT(text)), NULL, err);
            made = 1;
        }
    }
    free(text);
    if (!rc && created)
        *created = made != 0;
    return rc;
}

typedef struct got {
    int rc;
    json_t *doc;
    pl_error *err;
} got;

static void got_doc(void *ud, sql_rows *r)
{
    got *g = ud;
    g->rc = parse_doc(sql_text(r, 0), &g->doc, g->err);
}

/* The stored document, locked when tx writes (PostgreSQL; SQLite's write transaction holds the database). */
static int load(sql_tx *tx, doc_store *d, const char *coll, const char *id, json_t **out, pl_error *err)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT doc FROM doc_%s WHERE id = $1%s", coll,
             d->pg && writing(tx) ? " FOR UPDATE" : "");
    got g = {0, NULL, err};
    int rc = sql_one(tx, sql, SQL_ARGS(SQL_TEXT(id)), got_doc, &g, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return err_set(err, PL_ENOTFOUND, "id", "%s/%s does not exist", coll, id);
    if (g.rc)
        return g.rc;
    *out = g.doc;
    return 0;
}

int doc_get(sql_tx *tx, doc_store *d, const char *coll, const char *id, json_t **out, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)))
        return rc;
    if (!out)
        return err_set(err, PL_EINVAL, NULL, "doc_get needs out");
    return load(tx, d, coll, id, out, err);
}

static int patch_sql(doc_store *d, sbuf *b, params *p, const char *coll, const json_t *patch, char **text,
                     pl_error *err)
{
    int rc = dump_object(d->pg, patch, "patch", text, err);
    if (rc)
        return rc;
    int k = param_add(p, SQL_TEXT(*text));
    sb_add(b, d->pg ? "UPDATE doc_%s SET doc = pulse_doc_merge(doc, $%d::jsonb)" : "UPDATE doc_%s SET doc = json_patch(doc, $%d)",
           coll, k);
    return 0;
}

int doc_patch(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *patch, json_t **out,
              pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)))
        return rc;
    sbuf b = {0};
    params p = {0};
    char *text = NULL;
    if ((rc = patch_sql(d, &b, &p, coll, patch, &text, err)))
        goto out;
    sb_add(&b, " WHERE id = $%d", param_add(&p, SQL_TEXT(id)));
    if (out) {
        sb_add(&b, " RETURNING doc");
        got g = {0, NULL, err};
        rc = sql_one(tx, b.p, p.a, p.n, got_doc, &g, err);
        if (rc == 1 && !(rc = g.rc))
            *out = g.doc;
        else if (rc == 0)
            rc = err_set(err, PL_ENOTFOUND, "id", "%s/%s does not exist", coll, id);
    } else {
        int64_t changes = 0;
        rc = sql_exec(tx, b.p, p.a, p.n, &changes, err);
        if (!rc && changes == 0)
            rc = err_set(err, PL_ENOTFOUND, "id", "%s/%s does not exist", coll, id);
    }
out:
    free(b.p);
    params_free(&p);
    free(text);
    return rc;
}

int doc_incr(sql_tx *tx, doc_store *d, const char *coll, const char *id, const char *field, int64_t by,
             int64_t *value, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)))
        return rc;
    if (!doc_path_valid(field))
        return err_set(err, PL_EINVAL, "field", "field paths are up to 4 dotted segments of [a-z0-9_], got \"%.60s\"",
                       field ? field : "(null)");
    /* read, add, write on the locked row: atomic, and the same on both engines (missing parents are made) */
    json_t *doc = NULL;
    if ((rc = load(tx, d, coll, id, &doc, err)))
        return rc;
    char path[PATH_MAX_LEN + 1];
    snprintf(path, sizeof path, "%s", field);
    json_t *obj = doc;
    char *save = NULL, *seg = strtok_r(path, ".", &save);
    for (char *next; (next = strtok_r(NULL, ".", &save)); seg = next) {
        json_t *child = json_object_get(obj, seg);
        if (!child || json_is_null(child)) {
            child = json_object();
            json_object_set_new(obj, seg, child);
        } else if (!json_is_object(child)) {
            json_decref(doc);
            return err_set(err, PL_EINVAL, "field", "%s: \"%s\" is not an object", field, seg);
        }
        obj = child;
    }
    json_t *cur = json_object_get(obj, seg);
    int64_t v = 0;
    if (cur && !json_is_null(cur)) {
        if (!json_is_integer(cur)) {
            json_decref(doc);
            return err_set(err, PL_EINVAL, "field", "%s is not an integer", field);
        }
        v = json_integer_value(cur);
    }
    if ((by > 0 && v > INT64_MAX - by) || (by < 0 && v < INT64_MIN - by)) {
        json_decref(doc);
        return err_set(err, PL_EINVAL, "field", "%s would overflow", field);
    }
    v += by;
    json_object_set_new(obj, seg, json_integer(v));
    char *text = dump_for(d->pg, doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        abort();
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE doc_%s SET doc = $2%s WHERE id = $1", coll, d->pg ? "::jsonb" : "");
    rc = sql_exec(tx, sql, SQL_ARGS(SQL_TEXT(id), SQL_TEXT(text)), NULL, err);
    free(text);
    if (!rc && value)
        *value = v;
    return rc;
}

int doc_delete(sql_tx *tx, doc_store *d, const char *coll, const char *id, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_id(id, err)))
        return rc;
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM doc_%s WHERE id = $1", coll);
    int64_t changes = 0;
    rc = sql_exec(tx, sql, SQL_ARGS(SQL_TEXT(id)), &changes, err);
    if (!rc && changes == 0)
        rc = err_set(err, PL_ENOTFOUND, "id", "%s/%s does not exist", coll, id);
    return rc;
}

/* ---- queries ------------------------------------------------------------------------ */

/* The type an order_by field sorts as: a condition's, else its index's; -1 when neither. */
static int sort_class(doc_store *d, const char *coll, const doc_query *q, bool *conditioned)
{
    *conditioned = false;
    for (size_t i = 0; i < q->nwhere; i++) {
        tclass t;
        if (strcmp(q->where[i].field, q->order_by) == 0 && !value_class(q->where[i].value, &t)) {
            *conditioned = true;
            return (int)t;
        }
    }
    int t = -1;
    pthread_rwlock_rdlock(&d->lock);
    for (size_t i = 0; i < d->ncolls && t < 0; i++)
        if (strcmp(d->colls[i].name, coll) == 0)
            for (size_t k = 0; k < d->colls[i].nfields && t < 0; k++)
                if (strcmp(d->colls[i].fields[k].field, q->order_by) == 0)
                    t = (int)d->colls[i].fields[k].t;
    pthread_rwlock_unlock(&d->lock);
    return t;
}

static void sb_order(sbuf *b, doc_store *d, const char *coll, const doc_query *q)
{
    const char *dir = q->desc ? "DESC" : "ASC";
    sb_add(b, " ORDER BY ");
    if (q->order_by) {
        bool conditioned;
        int t = sort_class(d, coll, q, &conditioned);
        if (t >= 0) {
            /* missing sorts last; a condition on the field leaves none, so ascending may then say
             * NULLS FIRST, which is what a backward scan of the index (see ensure_one) gives */
            sb_expr(b, d->pg, q->order_by, (tclass)t);
            sb_add(b, " %s%s, ", dir, !q->desc && conditioned ? " NULLS FIRST" : " NULLS LAST");
        } else {
            /* undeclared: numbers, then strings, then booleans, then the rest, each by value */
            for (tclass k = TC_NUM;; k = k == TC_NUM ? TC_TEXT : TC_BOOL) {
                sb_expr(b, d->pg, q->order_by, k);
                sb_add(b, " %s NULLS LAST, ", dir);
                if (k == TC_BOOL)
                    break;
            }
        }
    }
    sb_add(b, "id %s", dir);
}

int doc_find(sql_tx *tx, doc_store *d, const char *coll, const doc_query *q, char ***ids, json_t ***docs,
             size_t *n, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)))
        return rc;
    if (!q || !n)
        return err_set(err, PL_EINVAL, NULL, "doc_find needs a query and n");
    if ((rc = check_conds(q->where, q->nwhere, err)))
        return rc;
    if (q->order_by && !doc_path_valid(q->order_by))
        return err_set(err, PL_EINVAL, "order_by", "field paths are up to 4 dotted segments of [a-z0-9_], got \"%.60s\"",
                       q->order_by);
    if (q->limit > INT64_MAX || q->offset > INT64_MAX)
        return err_set(err, PL_EINVAL, "limit", "limit and offset are at most 2^63-1");
    sbuf b = {0};
    params p = {0};
    sb_add(&b, "SELECT id%s FROM doc_%s", docs ? ", doc" : "", coll);
    sb_where(&b, &p, d->pg, q->where, q->nwhere, " WHERE ");
    sb_order(&b, d, coll, q);
    if (q->limit)
        sb_add(&b, " LIMIT %zu", q->limit);
    else if (q->offset && !d->pg)
        sb_add(&b, " LIMIT -1");
    if (q->offset)
        sb_add(&b, " OFFSET %zu", q->offset);
    sql_rows *r = NULL;
    rc = sql_query(tx, b.p, p.a, p.n, &r, err);
    free(b.p);
    params_free(&p);
    if (rc)
        return rc;
    char **iv = NULL;
    json_t **dv = NULL;
    size_t k = 0, cap = 0;
    while ((rc = sql_next(r, err)) == 1) {
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            iv = xrealloc(iv, cap * sizeof *iv);
            dv = xrealloc(dv, cap * sizeof *dv);
        }
        json_t *j = NULL;
        if (docs && (rc = parse_doc(sql_text(r, 1), &j, err)))
            break;
        iv[k] = xstrdup(sql_text(r, 0));
        dv[k++] = j;
    }
    sql_rows_close(r);
    if (rc < 0) {
        doc_results_free(iv, dv, k);
        return rc;
    }
    if (ids)
        *ids = iv;
    else
        doc_results_free(iv, NULL, k);
    if (docs)
        *docs = dv;
    else
        free(dv); /* holds only NULLs */
    *n = k;
    return 0;
}

void doc_results_free(char **ids, json_t **docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ids)
            free(ids[i]);
        if (docs)
            json_decref(docs[i]);
    }
    free(ids);
    free(docs);
}

int doc_count(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere, int64_t *n,
              pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_conds(where, nwhere, err)))
        return rc;
    sbuf b = {0};
    params p = {0};
    sb_add(&b, "SELECT count(*) FROM doc_%s", coll);
    sb_where(&b, &p, d->pg, where, nwhere, " WHERE ");
    int64_t v = 0;
    rc = sql_one(tx, b.p, p.a, p.n, one_int, &v, err);
    free(b.p);
    params_free(&p);
    if (rc < 0)
        return rc;
    if (n)
        *n = v;
    return 0;
}

int doc_patch_where(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere,
                    const json_t *patch, int64_t *changed, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_conds(where, nwhere, err)))
        return rc;
    sbuf b = {0};
    params p = {0};
    char *text = NULL;
    int64_t ch = 0;
    if (!(rc = patch_sql(d, &b, &p, coll, patch, &text, err))) {
        sb_where(&b, &p, d->pg, where, nwhere, " WHERE ");
        rc = sql_exec(tx, b.p, p.a, p.n, &ch, err);
    }
    free(b.p);
    params_free(&p);
    free(text);
    if (!rc && changed)
        *changed = ch;
    return rc;
}

int doc_delete_where(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere,
                     int64_t *changed, pl_error *err)
{
    int rc;
    if ((rc = check_coll(d, coll, err)) || (rc = check_conds(where, nwhere, err)))
        return rc;
    sbuf b = {0};
    params p = {0};
    sb_add(&b, "DELETE FROM doc_%s", coll);
    sb_where(&b, &p, d->pg, where, nwhere, " WHERE ");
    int64_t ch = 0;
    rc = sql_exec(tx, b.p, p.a, p.n, &ch, err);
    free(b.p);
    params_free(&p);
    if (!rc && changed)
        *changed = ch;
    return rc;
}
