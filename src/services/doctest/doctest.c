/*
 * doctest.c - a test fixture service for the doc store kind, hosted only when
 * named (`--services doctest`); never part of a default deployment. It has a
 * doc store and no sql store, so it exercises what the host does for such a
 * service: the doc store opened from defaults.doc / service.doctest.doc, the
 * outbox and the consumers' inbox on doc_sql(), readiness, closing.
 *
 *   PUT  /api/v1/doctest/notes/{id}   body: a JSON object with "owner" (string)
 *        and "n" (integer); doc_put and one pl.doctest.note_put.v1 event in
 *        one transaction; 201 created / 200 replaced
 *   GET  /api/v1/doctest/notes/{id}   the document
 *   GET  /api/v1/doctest/notes?owner=X&limit=N   X's notes, n descending
 *   GET  /api/v1/doctest/seen         how many note_put events the "seen"
 *        consumer applied (a doc_incr in the consumer's inbox transaction)
 */
#include "bus/outbox.h"
#include "core/json.h"
#include "services/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const doc_index ix_owner_n[] = {{"owner", DOC_TEXT}, {"n", DOC_INT}, {NULL, 0}};
static const doc_index *const notes_ix[] = {ix_owner_n, NULL};
static const doc_index *const no_ix[] = {NULL};
static const doc_collection_def collections[] = {{"notes", notes_ix}, {"counters", no_ix}};

static int fail(http_req *req, int rc, const pl_error *err)
{
    return http_fail(req, rc, err->field[0] ? json_pack("{s:s}", err->field, err->msg) : NULL, "%s", err->msg);
}

static int note_put(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    const char *id = http_param(req, "id");
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    const char *owner = jv_str(&v, "owner", true, 1, 64);
    long long n = 0;
    jv_int(&v, "n", true, -1000000000, 1000000000, &n);
    if (!doc_id_valid(id))
        jv_fail(&v, "id", "1..128 bytes of UTF-8 without control characters");
    if (!jv_ok(&v)) {
        rc = http_fail(req, PL_EINVAL, jv_take_fields(&v), "invalid note");
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    pl_error err = {0};
    sql_tx *tx;
    bool created = false;
    if (!(rc = sql_begin(doc_sql(ctx->doc), SQL_TX_WRITE, &tx, &err))) {
        if (!(rc = doc_put(tx, ctx->doc, "notes", id, body, &created, &err)))
            rc = outbox_emit(tx, "doctest", "pl.doctest.note_put.v1", id, NULL,
                             json_pack("{s:s,s:s,s:b}", "id", id, "owner", owner, "created", created), NULL, &err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    jv_free(&v);
    json_decref(body);
    if (rc)
        return fail(req, rc, &err);
    http_json(res, created ? 201 : 200, json_pack("{s:s,s:b}", "id", id, "created", created));
    return 0;
}

static int note_get(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    pl_error err = {0};
    sql_tx *tx;
    json_t *doc = NULL;
    int rc = sql_begin(doc_sql(ctx->doc), SQL_TX_READ, &tx, &err);
    if (rc)
        return fail(req, rc, &err);
    rc = doc_get(tx, ctx->doc, "notes", http_param(req, "id"), &doc, &err);
    sql_rollback(tx);
    if (rc)
        return fail(req, rc, &err);
    http_json(res, 200, doc);
    return 0;
}

static int note_list(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    const char *owner = http_query(req, "owner");
    const char *lim = http_query(req, "limit");
    long limit = lim ? strtol(lim, NULL, 10) : 20;
    if (!owner || !*owner || limit < 1 || limit > 100)
        return http_fail(req, PL_EINVAL, NULL, "owner is required and limit is 1..100");
    json_t *ov = json_string(owner);
    if (!ov)
        return http_fail(req, PL_EINVAL, NULL, "owner must be UTF-8");
    doc_cond c = {"owner", DOC_EQ, ov};
    doc_query q = {.where = &c, .nwhere = 1, .order_by = "n", .desc = true, .limit = (size_t)limit};
    pl_error err = {0};
    sql_tx *tx;
    char **ids = NULL;
    json_t **docs = NULL;
    size_t n = 0;
    int rc = sql_begin(doc_sql(ctx->doc), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = doc_find(tx, ctx->doc, "notes", &q, &ids, &docs, &n, &err);
        sql_rollback(tx);
    }
    json_decref(ov);
    if (rc)
        return fail(req, rc, &err);
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, json_pack("{s:s,s:O}", "id", ids[i], "doc", docs[i]));
    doc_results_free(ids, docs, n);
    http_json(res, 200, json_pack("{s:o}", "items", items));
    return 0;
}

static int seen_get(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    pl_error err = {0};
    sql_tx *tx;
    json_t *doc = NULL;
    int rc = sql_begin(doc_sql(ctx->doc), SQL_TX_READ, &tx, &err);
    if (rc)
        return fail(req, rc, &err);
    rc = doc_get(tx, ctx->doc, "counters", "seen", &doc, &err);
    sql_rollback(tx);
    if (rc == PL_ENOTFOUND)
        doc = json_pack("{s:i}", "puts", 0);
    else if (rc)
        return fail(req, rc, &err);
    http_json(res, 200, doc);
    return 0;
}

/* The consumer's tx is a transaction of ctx->sql, which is doc_sql(ctx->doc): doc calls take it. */
static int seen_handle(void *vctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    service_ctx *ctx = vctx;
    json_t *zero = json_object();
    bool created;
    int rc = 0;
    json_t *cur = NULL;
    if (doc_get(tx, ctx->doc, "counters", "seen", &cur, NULL) == PL_ENOTFOUND)
        rc = doc_put(tx, ctx->doc, "counters", "seen", zero, &created, err);
    json_decref(cur);
    json_decref(zero);
    return rc ? rc : doc_incr(tx, ctx->doc, "counters", "seen", "puts", 1, NULL, err);
}

static int doctest_start(service_ctx *ctx, pl_error *err)
{
    return doc_ensure(ctx->doc, collections, sizeof collections / sizeof *collections, err);
}

static const http_route doctest_routes[] = {
    {"PUT", "/api/v1/doctest/notes/{id}", note_put, 0, "test fixture: put a note (doc store)"},
    {"GET", "/api/v1/doctest/notes/{id}", note_get, 0, "test fixture: a note"},
    {"GET", "/api/v1/doctest/notes", note_list, 0, "test fixture: an owner's notes, n descending"},
    {"GET", "/api/v1/doctest/seen", seen_get, 0, "test fixture: note_put events the consumer applied"},
};

static const char *const doctest_types[] = {"pl.doctest.*", NULL};

static const consumer_def doctest_consumers[] = {
    {.name = "seen", .types = doctest_types, .handle = seen_handle},
};

const service_def doctest_service = {
    .version = 1,
    .name = "doctest",
    .summary = "test fixture for the doc store kind (hosted only when named)",
    .stores = SERVICE_USES_DOC,
    .routes = doctest_routes,
    .nroutes = sizeof doctest_routes / sizeof doctest_routes[0],
    .start = doctest_start,
    .consumers = doctest_consumers,
    .nconsumers = sizeof doctest_consumers / sizeof doctest_consumers[0],
    .hidden = true,
};
