/*
 * doc.h - the doc store kind: JSON documents in named collections, with
 * declared secondary indexes, queries by field equality and range with sort
 * and limit, and partial updates.
 *
 * The kind is built on the sql kind: a doc store owns one sql_db opened from
 * the doc URL ("" or "sqlite:" embedded: SQLite JSON1 with expression
 * indexes; "postgres://": JSONB with expression and GIN indexes, one schema
 * per service) and speaks the engine's JSON dialect itself. That is what lets
 * a doc service keep the platform's guarantees: every doc call takes an
 * sql_tx of doc_sql(), so a service's documents, its outbox (outbox_emit) and
 * its consumers' inbox commit in one local transaction.
 *
 * Documents: a JSON object per (collection, id). The id is text (1..128
 * bytes), stored beside the document; the document itself never needs an
 * "id" member, though callers may keep one. Field paths are dotted member
 * names ("user_id", "meta.kind"): [a-z0-9_] segments, at most 4 deep; a path
 * that does not match is PL_EINVAL. Values compared are JSON strings,
 * integers, reals or booleans; a document missing the field never matches a
 * condition on it and sorts last.
 *
 * Indexes are declared per collection (doc_ensure) with the type of the
 * field, which is how the engine can use them: DOC_TEXT, DOC_INT, DOC_REAL,
 * DOC_BOOL. Queries may name any field; undeclared fields are scanned.
 *
 * Threads and errors as in sql.h: the store is shared by all threads; every
 * call returns 0 or a negative PL_E* code and fills err when given.
 * PL_ENOTFOUND for a missing id, PL_ECONFLICT for doc_insert of an existing
 * id, PL_EINVAL for a bad collection name, field path or value.
 */
#ifndef PULSE_STORE_DOC_H
#define PULSE_STORE_DOC_H

#include "core/err.h"
#include "store/sql.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct doc_store doc_store;

typedef enum { DOC_TEXT, DOC_INT, DOC_REAL, DOC_BOOL } doc_type;

typedef struct doc_index {
    const char *field;   /* dotted path */
    doc_type type;
} doc_index;

/* A compound index serves equality on the leading fields and order/range on
 * the last one (for example user_id, created_at). */
typedef struct doc_collection_def {
    const char *name;            /* [a-z][a-z0-9_]{0,47} */
    const doc_index *const *indexes; /* NULL-terminated list of NULL-terminated field lists */
} doc_collection_def;

/* Opens the store named by url for the service in o->service (its file name
 * or schema, as in sql_open). "" means embedded, in o->data_dir. */
int  doc_open(const char *url, const sql_options *o, doc_store **out, pl_error *err);
void doc_close(doc_store *d);            /* NULL is a no-op */
const char *doc_engine(const doc_store *d); /* "sqlite", "postgres" */
/* The sql store under the documents: begin transactions on it for every doc
 * call; the host applies the outbox/inbox migrations to it. Owned by d. */
sql_db *doc_sql(doc_store *d);

/* Creates the collections and their indexes when missing (idempotent; run at
 * service start). Indexes are only ever added. */
int doc_ensure(doc_store *d, const doc_collection_def *defs, size_t n, pl_error *err);

/* ---- documents --------------------------------------------------------------- */

/* Inserts a new document; PL_ECONFLICT when the id exists. doc is borrowed. */
int doc_insert(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *doc, pl_error *err);
/* Inserts or replaces. *created (may be NULL) tells which. */
int doc_put(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *doc, bool *created,
            pl_error *err);
/* *out gets a new reference to the document; PL_ENOTFOUND when missing. In a
 * write transaction the row is locked until the transaction ends. */
int doc_get(sql_tx *tx, doc_store *d, const char *coll, const char *id, json_t **out, pl_error *err);
/* Applies a JSON merge patch (RFC 7396: members set, null removes) to one
 * document; *out (may be NULL) gets the result. PL_ENOTFOUND when missing. */
int doc_patch(sql_tx *tx, doc_store *d, const char *coll, const char *id, const json_t *patch, json_t **out,
              pl_error *err);
/* Adds `by` to the integer at `field` (missing counts as 0) and returns the
 * new value in *value (may be NULL). PL_ENOTFOUND when the document is missing. */
int doc_incr(sql_tx *tx, doc_store *d, const char *coll, const char *id, const char *field, int64_t by,
             int64_t *value, pl_error *err);
int doc_delete(sql_tx *tx, doc_store *d, const char *coll, const char *id, pl_error *err); /* PL_ENOTFOUND */

/* ---- queries ------------------------------------------------------------------ */

typedef enum { DOC_EQ, DOC_NE, DOC_LT, DOC_LE, DOC_GT, DOC_GE } doc_op;

typedef struct doc_cond {
    const char *field;
    doc_op op;
    const json_t *value;   /* string, integer, real or boolean; borrowed */
} doc_cond;

typedef struct doc_query {
    const doc_cond *where; /* ANDed */
    size_t nwhere;
    const char *order_by;  /* NULL: by id */
    bool desc;
    size_t limit;          /* 0: no limit */
    size_t offset;
} doc_query;

/* Runs the query; ties in order_by are broken by id in the same direction.
 * *ids and *docs are arrays of *n entries (either may be NULL when not
 * wanted); free with doc_results_free. */
int  doc_find(sql_tx *tx, doc_store *d, const char *coll, const doc_query *q, char ***ids, json_t ***docs,
              size_t *n, pl_error *err);
void doc_results_free(char **ids, json_t **docs, size_t n);
int  doc_count(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere, int64_t *n,
               pl_error *err);
/* Merge-patches every matching document; *changed (may be NULL) gets how many. */
int  doc_patch_where(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere,
                     const json_t *patch, int64_t *changed, pl_error *err);
int  doc_delete_where(sql_tx *tx, doc_store *d, const char *coll, const doc_cond *where, size_t nwhere,
                      int64_t *changed, pl_error *err);

/* ---- validation (also what every call above checks) ---------------------------- */

bool doc_name_valid(const char *name); /* a collection name: [a-z][a-z0-9_]{0,47} */
bool doc_path_valid(const char *path); /* a field path: 1-4 dot-separated [a-z0-9_]+ segments, <= 255 bytes */
bool doc_id_valid(const char *id);     /* 1..128 bytes of UTF-8, no control characters */

#endif
