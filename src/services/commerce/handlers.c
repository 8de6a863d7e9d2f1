/*
 * handlers.c - commerce's HTTP API: purchase, orders, invoices, refunds and
 * the admin views of sagas and of the payment simulator's ledger.
 *
 * Reads are authorised by ownership: an order or invoice is visible to its
 * buyer and to admins; to anyone else it does not exist (404).
 */
#include "bus/outbox.h"
#include "core/cursor.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/commerce/commerce.h"
#include "services/commerce/invoice.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER_COLS                                                                                                 \
    "id, buyer_id, course_id, course_title, currency, net_cents, tax_rate_bp, tax_cents, amount_cents, state, step," \
    " reason, payment_id, refund_id, invoice_id, credit_note_id, created_at, updated_at, idem_key"

static bool is_admin(const http_req *req) { return strcmp(req->principal->role, "admin") == 0; }

/* Ids in paths: what our ids and courses' ids look like; anything else cannot exist. */
static bool plausible_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return false;
    return true;
}

static json_t *order_json(sql_rows *r)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:s, s:s}",
                     "id", sql_text(r, 0), "buyer_id", sql_text(r, 1), "course_id", sql_text(r, 2), "course_title",
                     sql_text(r, 3), "currency", sql_text(r, 4), "net_cents", (json_int_t)sql_int(r, 5), "tax_rate_bp",
                     (json_int_t)sql_int(r, 6), "tax_cents", (json_int_t)sql_int(r, 7), "amount_cents",
                     (json_int_t)sql_int(r, 8), "state", sql_text(r, 9), "step", sql_text(r, 10), "reason",
                     sql_text(r, 11), "payment_id", sql_text(r, 12), "refund_id", sql_text(r, 13), "invoice_id",
                     sql_text(r, 14), "credit_note_id", sql_text(r, 15), "created_at", sql_text(r, 16), "updated_at",
                     sql_text(r, 17));
}

typedef struct order_read {
    json_t *order;
    char idem[256];
} order_read;

static void read_order_row(void *ud, sql_rows *r)
{
    order_read *o = ud;
    o->order = order_json(r);
    snprintf(o->idem, sizeof o->idem, "%s", sql_text(r, 18));
}

/* The order with its step history: 1 found (*out set), 0 none, <0 error. */
static int load_order(sql_tx *tx, const char *id, bool with_history, json_t **out, pl_error *err)
{
    order_read o = {0};
    int rc = sql_one(tx, "SELECT " ORDER_COLS " FROM commerce_orders WHERE id = $1", SQL_ARGS(SQL_TEXT(id)),
                     read_order_row, &o, err);
    if (rc <= 0)
        return rc;
    if (with_history) {
        sql_rows *r;
        json_t *h = json_array();
        rc = sql_query(tx,
                       "SELECT step, outcome, attempt, at, detail FROM commerce_saga_steps WHERE order_id = $1"
                       " ORDER BY seq",
                       SQL_ARGS(SQL_TEXT(id)), &r, err);
        bool open = rc == 0;
        while (open && (rc = sql_next(r, err)) == 1)
            json_array_append_new(h, json_pack("{s:s, s:s, s:I, s:s, s:s?}", "step", sql_text(r, 0), "outcome",
                                               sql_text(r, 1), "attempt", (json_int_t)sql_int(r, 2), "at",
                                               sql_text(r, 3), "detail", sql_text(r, 4)));
        if (open)
            sql_rows_close(r);
        if (rc < 0) {
            json_decref(h);
            json_decref(o.order);
            return rc;
        }
        json_object_set_new(o.order, "history", h);
    }
    *out = o.order;
    return 1;
}

/* ---- POST /api/v1/courses/{id}/purchase -------------------------------------------------------- */

typedef struct catalog_row {
    bool found, premium, published, priced;
    int64_t price;
    char currency[16], title[512];
} catalog_row;

static void read_catalog(void *ud, sql_rows *r)
{
    catalog_row *c = ud;
    c->found = true;
    snprintf(c->title, sizeof c->title, "%s", sql_text(r, 0));
    c->premium = sql_int(r, 1) != 0;
    c->priced = !sql_isnull(r, 2);
    c->price = sql_int(r, 2);
    snprintf(c->currency, sizeof c->currency, "%s", sql_text(r, 3) ? sql_text(r, 3) : "");
    c->published = sql_int(r, 4) != 0;
}

static void read_text40(void *ud, sql_rows *r) { snprintf(ud, 40, "%s", sql_text(r, 0)); }

static bool currency_ok(const char *s)
{
    return strlen(s) == 3 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]) &&
           isupper((unsigned char)s[2]);
}

static int key_invalid(http_req *req, const char *why)
{
    return http_fail(req, PL_EINVAL, json_pack("{s:s}", "Idempotency-Key", why), "invalid Idempotency-Key header");
}

/* One attempt; PL_EDONE asks the caller to try again (lost an insert race). */
static int purchase_tx(http_req *req, commerce *c, const char *course_id, const char *key, json_t **order,
                       int *status)
{
    pl_error err = {0};
    sql_tx *tx = NULL;
    const char *buyer = req->principal->user_id;
    int rc = sql_begin(c->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc)
        return http_fail(req, rc, NULL, "%s", err.msg);
    order_read prev = {0};
    rc = sql_one(tx, "SELECT " ORDER_COLS " FROM commerce_orders WHERE buyer_id = $1 AND idem_key = $2",
                 SQL_ARGS(SQL_TEXT(buyer), SQL_TEXT(key)), read_order_row, &prev, &err);
    if (rc == 1) { /* a retry of the same purchase: the same order, no new charge */
        sql_rollback(tx);
        if (strcmp(json_string_value(json_object_get(prev.order, "course_id")), course_id) != 0) {
            json_decref(prev.order);
            return http_fail(req, PL_ECONFLICT,
                             json_pack("{s:s}", "Idempotency-Key", "was already used for another purchase"),
                             "this Idempotency-Key belongs to another request");
        }
        *order = prev.order;
        *status = 202;
        return 0;
    }
    catalog_row cat = {0};
    char active[40] = "";
    if (rc == 0)
        rc = sql_one(tx, "SELECT title, premium, price_cents, currency, published FROM commerce_catalog WHERE course_id = $1",
                     SQL_ARGS(SQL_TEXT(course_id)), read_catalog, &cat, &err);
    if (rc >= 0 && cat.found)
        rc = sql_one(tx,
                     "SELECT id FROM commerce_orders WHERE buyer_id = $1 AND course_id = $2 AND state IN ('pending',"
                     " 'compensating', 'completed', 'needs_attention', 'refunding') LIMIT 1",
                     SQL_ARGS(SQL_TEXT(buyer), SQL_TEXT(course_id)), read_text40, active, &err);
    if (rc < 0) {
        sql_rollback(tx);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    if (!cat.found) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such course for sale");
    }
    if (!cat.premium || !cat.published || !cat.priced || cat.price <= 0 || !currency_ok(cat.currency)) {
        sql_rollback(tx);
        return http_fail(req, PL_EUNPROCESSABLE,
                         json_pack("{s:s}", "course_id", "is not for sale (free, unpublished or without a price)"),
                         "this course cannot be bought");
    }
    if (active[0]) {
        sql_rollback(tx);
        return http_fail(req, PL_ECONFLICT,
                         json_pack("{s:s}", "course_id", "is already bought or being bought by you"),
                         "order %s already covers this course", active);
    }
    char id[UUID_STR_LEN], now[32];
    uuid7_new(id);
    int64_t now_ms = time_now_ms();
    time_rfc3339(now_ms, now, sizeof now);
    int64_t tax = invoice_tax_cents(cat.price, c->tax_rate_bp), amount = cat.price + tax;
    rc = sql_exec(tx,
                  "INSERT INTO commerce_orders (id, buyer_id, course_id, course_title, currency, net_cents,"
                  " tax_rate_bp, tax_cents, amount_cents, state, step, idem_key, created_at, updated_at)"
                  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 'reserving_seat', $10, $11, $11)",
                  SQL_ARGS(SQL_TEXT(id), SQL_TEXT(buyer), SQL_TEXT(course_id), SQL_TEXT(cat.title),
                           SQL_TEXT(cat.currency), SQL_INT(cat.price), SQL_INT(c->tax_rate_bp), SQL_INT(tax),
                           SQL_INT(amount), SQL_TEXT(key), SQL_TEXT(now)),
                  NULL, &err);
    if (rc == PL_ECONFLICT) { /* the same key, concurrently: answer with that order */
        sql_rollback(tx);
        return PL_EDONE;
    }
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO commerce_sagas (order_id, state, attempt, next_at_ms, ver, updated_at)"
                      " VALUES ($1, 'reserving_seat', 1, $2, 1, $3)",
                      SQL_ARGS(SQL_TEXT(id), SQL_INT(now_ms + c->step_timeout_ms), SQL_TEXT(now)), NULL, &err);
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO commerce_saga_steps (order_id, step, outcome, attempt, at, detail)"
                      " VALUES ($1, 'order', 'created', 1, $2, $3)",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(now), SQL_TEXT("seat reservation requested")), NULL, &err);
    if (!rc)
        rc = outbox_emit(tx, "commerce", "pl.commerce.seat_reserve_requested.v1", id, NULL,
                         json_pack("{s:s, s:s, s:s}", "order_id", id, "course_id", course_id, "user_id", buyer), NULL,
                         &err);
    if (!rc)
        rc = outbox_emit(tx, "commerce", "pl.commerce.order_updated.v1", id, NULL,
                         json_pack("{s:s, s:s, s:s, s:s, s:s, s:n, s:s}", "order_id", id, "buyer_id", buyer,
                                   "course_id", course_id, "state", "pending", "step", "reserving_seat", "reason",
                                   "updated_at", now),
                         NULL, &err);
    if (!rc)
        rc = load_order(tx, id, true, order, &err) == 1 ? 0 : PL_EINTERNAL;
    if (rc) {
        sql_rollback(tx);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    if ((rc = sql_commit(tx, &err))) {
        json_decref(*order);
        *order = NULL;
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    *status = 202;
    return 0;
}

int commerce_purchase(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    commerce *c = ctx->state;
    const char *course_id = http_param(req, "id");
    const char *key = http_header_get(req, "Idempotency-Key");
    if (!key)
        return key_invalid(req, "is required: a unique value per purchase, reused only to retry it");
    size_t kl = strlen(key);
    if (kl < 1 || kl > 200)
        return key_invalid(req, "must be 1 to 200 characters");
    for (const char *p = key; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return key_invalid(req, "must be printable ASCII without spaces");
    if (req->body_len > 0) {
        json_t *body;
        int rc = http_json_body(req, &body);
        if (rc)
            return rc;
        jv v;
        jv_init(&v, body);
        static const char *const none[] = {NULL};
        jv_only(&v, none);
        json_t *fields = jv_take_fields(&v);
        jv_free(&v);
        json_decref(body);
        if (fields)
            return http_fail(req, PL_EINVAL, fields, "a purchase takes no body members");
    }
    if (!plausible_id(course_id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such course for sale");
    json_t *order = NULL;
    int status = 0, rc = PL_EDONE;
    for (int i = 0; i < 3 && rc == PL_EDONE; i++)
        rc = purchase_tx(req, c, course_id, key, &order, &status);
    if (rc == PL_EDONE)
        return http_fail(req, PL_ECONFLICT, NULL, "a concurrent request with this Idempotency-Key is in progress");
    if (rc)
        return rc;
    char loc[96];
    snprintf(loc, sizeof loc, "/api/v1/orders/%s", json_string_value(json_object_get(order, "id")));
    http_header_add(req, res, "Location", loc);
    http_json(res, status, order);
    return 0;
}

/* ---- orders ------------------------------------------------------------------------------------ */

int commerce_order_get(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    const char *id = http_param(req, "id");
    if (!plausible_id(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such order");
    pl_error err = {0};
    sql_tx *tx = NULL;
    json_t *order = NULL;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (!rc)
        rc = load_order(tx, id, true, &order, &err);
    sql_rollback(tx);
    if (rc < 0)
        return http_fail(req, rc, NULL, "%s", err.msg);
    if (rc == 0 || (!is_admin(req) &&
                    strcmp(json_string_value(json_object_get(order, "buyer_id")), req->principal->user_id) != 0)) {
        json_decref(order);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such order");
    }
    http_json(res, 200, order);
    return 0;
}

static int parse_limit(http_req *req, long *limit)
{
    const char *ls = http_query(req, "limit");
    char *end;
    *limit = ls ? strtol(ls, &end, 10) : 50;
    if (ls && (!*ls || *end || *limit < 1 || *limit > 200))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 200"), "invalid query");
    return 0;
}

/* ?cursor=: the id an opaque cursor (core/cursor.h) carries, or NULL when absent. */
static int parse_cursor(http_req *req, const char **cursor)
{
    const char *cs = http_query(req, "cursor");
    *cursor = NULL;
    if (!cs || !*cs)
        return 0;
    char *pos = arena_alloc(req->arena, CURSOR_BODY_MAX + 1);
    if (cursor_open(cs, pos) || !plausible_id(pos))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "cursor", "is not a cursor from this list"),
                         "invalid query");
    *cursor = pos;
    return 0;
}

/* The next_cursor of a full page: its last item's `key`, sealed; JSON null otherwise. */
static json_t *next_cursor(json_t *items, long limit, const char *key)
{
    size_t n = json_array_size(items);
    const char *last = (long)n == limit ? json_string_value(json_object_get(json_array_get(items, n - 1), key)) : NULL;
    if (!last)
        return json_null();
    char token[CURSOR_TOKEN_MAX];
    cursor_seal(last, token);
    return json_string(token);
}

int commerce_my_orders(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    long limit;
    const char *cursor;
    int rc = parse_limit(req, &limit);
    if (rc || (rc = parse_cursor(req, &cursor)))
        return rc;
    pl_error err = {0};
    sql_tx *tx = NULL;
    sql_rows *r;
    json_t *items = json_array();
    if ((rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err)) == 0) {
        rc = sql_query(tx,
                       "SELECT " ORDER_COLS " FROM commerce_orders WHERE buyer_id = $1 AND ($2 = '' OR id < $2)"
                       " ORDER BY id DESC LIMIT $3",
                       SQL_ARGS(SQL_TEXT(req->principal->user_id), SQL_TEXT(cursor ? cursor : ""), SQL_INT(limit)),
                       &r, &err);
        bool open = rc == 0;
        while (open && (rc = sql_next(r, &err)) == 1)
            json_array_append_new(items, order_json(r));
        if (open)
            sql_rows_close(r);
        sql_rollback(tx);
    }
    if (rc < 0) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    json_t *next = next_cursor(items, limit, "id");
    http_json(res, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
    return 0;
}

int commerce_order_refund(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    commerce *c = ctx->state;
    if (!is_admin(req))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins refund orders");
    const char *id = http_param(req, "id");
    if (!plausible_id(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such order");
    if (req->body_len > 0) { /* optional; a whole refund takes no members (a partial one would be a new field) */
        static const char *const none[] = {NULL};
        json_t *body;
        jv v;
        int rc = http_json_fields(req, &v, &body, none);
        if (rc)
            return rc;
        if (!jv_ok(&v))
            return http_fail_fields(req, &v, body);
        jv_free(&v);
        json_decref(body);
    }
    pl_error err = {0};
    sql_tx *tx = NULL;
    saga_row s = {0};
    json_t *order = NULL;
    int rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (!rc)
        rc = commerce_saga_load(tx, id, &s, &err);
    if (rc == 0) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such order");
    }
    if (rc == 1) {
        if (s.state == SAGA_COMPLETED) {
            saga_facts f = {.detail = "refund requested by an admin"};
            rc = commerce_saga_apply(c, tx, &s, SAGA_EV_ADMIN_REFUND, &f, &err);
        } else if (s.state != SAGA_REVERSING && s.state != SAGA_REFUNDED) {
            sql_rollback(tx);
            return http_fail(req, PL_ECONFLICT, json_pack("{s:s}", "state", saga_order_state(s.state)),
                             "only completed orders can be refunded");
        } else {
            rc = 0; /* already being refunded: the same answer again */
        }
    }
    if (rc >= 0)
        rc = load_order(tx, id, true, &order, &err) == 1 ? 0 : PL_EINTERNAL;
    if (rc >= 0)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(order);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    http_json(res, 202, order);
    return 0;
}

/* ---- invoices --------------------------------------------------------------------------------- */

int commerce_invoice_get(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    const char *id = http_param(req, "id"), *fmt = http_query(req, "format");
    if (fmt && strcmp(fmt, "html") != 0 && strcmp(fmt, "json") != 0)
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "format", "must be json or html"), "invalid query");
    if (!plausible_id(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such invoice");
    pl_error err = {0};
    sql_tx *tx = NULL;
    json_t *inv = NULL;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (!rc)
        rc = invoice_load(tx, id, &inv, &err);
    sql_rollback(tx);
    if (rc < 0)
        return http_fail(req, rc, NULL, "%s", err.msg);
    if (!inv || (!is_admin(req) &&
                 strcmp(json_string_value(json_object_get(inv, "buyer_id")), req->principal->user_id) != 0)) {
        json_decref(inv);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such invoice");
    }
    const char *accept = http_header_get(req, "Accept");
    bool html = fmt ? strcmp(fmt, "html") == 0 : accept && strstr(accept, "text/html") != NULL;
    if (html) {
        char *page = invoice_html(inv);
        json_decref(inv);
        http_text(res, 200, "text/html; charset=utf-8", page, strlen(page));
        free(page);
        return 0;
    }
    http_json(res, 200, inv);
    return 0;
}

/* ---- admin --------------------------------------------------------------------------------------- */

int commerce_admin_sagas(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    if (!is_admin(req))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins list sagas");
    const char *state = http_query(req, "state");
    if (state && saga_state_parse(state) < 0)
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "state", "is not a saga state"), "invalid query");
    long limit;
    const char *cursor;
    int rc = parse_limit(req, &limit);
    if (rc || (rc = parse_cursor(req, &cursor)))
        return rc;
    pl_error err = {0};
    sql_tx *tx = NULL;
    sql_rows *r;
    json_t *items = json_array();
    if ((rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err)) == 0) {
        rc = sql_query(tx,
                       "SELECT s.order_id, s.state, s.attempt, s.next_at_ms, s.parked_state, s.reason, s.updated_at,"
                       " o.buyer_id, o.course_id, o.amount_cents, o.currency, o.created_at FROM commerce_sagas s"
                       " JOIN commerce_orders o ON o.id = s.order_id"
                       " WHERE ($1 = '' OR s.state = $1) AND ($2 = '' OR s.order_id < $2)"
                       " ORDER BY s.order_id DESC LIMIT $3",
                       SQL_ARGS(SQL_TEXT(state ? state : ""), SQL_TEXT(cursor ? cursor : ""), SQL_INT(limit)), &r,
                       &err);
        bool open = rc == 0;
        while (open && (rc = sql_next(r, &err)) == 1) {
            char next[32] = "";
            if (sql_int(r, 3) > 0)
                time_rfc3339(sql_int(r, 3), next, sizeof next);
            json_array_append_new(
                items, json_pack("{s:s, s:s, s:I, s:s?, s:s?, s:s?, s:s, s:s, s:s, s:I, s:s, s:s}", "order_id",
                                 sql_text(r, 0), "state", sql_text(r, 1), "attempt", (json_int_t)sql_int(r, 2),
                                 "next_at", next[0] ? next : NULL, "parked_step", sql_text(r, 4), "reason",
                                 sql_text(r, 5), "updated_at", sql_text(r, 6), "buyer_id", sql_text(r, 7), "course_id",
                                 sql_text(r, 8), "amount_cents", (json_int_t)sql_int(r, 9), "currency",
                                 sql_text(r, 10), "created_at", sql_text(r, 11)));
        }
        if (open)
            sql_rows_close(r);
        sql_rollback(tx);
    }
    if (rc < 0) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    json_t *next = next_cursor(items, limit, "order_id");
    http_json(res, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
    return 0;
}

/* Puts a parked saga back at the step it stopped at, with fresh attempts. */
int commerce_admin_saga_retry(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    commerce *c = ctx->state;
    if (!is_admin(req))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins resume sagas");
    const char *id = http_param(req, "id");
    if (!plausible_id(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such saga");
    pl_error err = {0};
    sql_tx *tx = NULL;
    saga_row s = {0};
    json_t *order = NULL;
    int rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (!rc)
        rc = commerce_saga_load(tx, id, &s, &err);
    if (rc == 0) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such saga");
    }
    int parked = saga_state_parse(s.parked);
    if (rc == 1 && (s.state != SAGA_NEEDS_ATTENTION || parked < 0)) {
        sql_rollback(tx);
        return http_fail(req, PL_ECONFLICT, json_pack("{s:s}", "state", saga_state_name(s.state)),
                         "only sagas in needs_attention can be resumed");
    }
    char now[32];
    int64_t now_ms = time_now_ms();
    time_rfc3339(now_ms, now, sizeof now);
    bool waiting = saga_is_waiting((saga_state)parked);
    if (rc == 1)
        rc = sql_exec(tx,
                      "UPDATE commerce_sagas SET state = $2, attempt = $3, next_at_ms = $4, ver = ver + 1,"
                      " updated_at = $5 WHERE order_id = $1",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(s.parked), SQL_INT(waiting ? 1 : 0),
                               SQL_INT(waiting ? now_ms + c->step_timeout_ms : now_ms), SQL_TEXT(now)),
                      NULL, &err);
    if (!rc)
        rc = sql_exec(tx, "UPDATE commerce_orders SET state = $2, step = $3, updated_at = $4 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(saga_order_state((saga_state)parked)), SQL_TEXT(s.parked),
                               SQL_TEXT(now)),
                      NULL, &err);
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO commerce_saga_steps (order_id, step, outcome, attempt, at, detail)"
                      " VALUES ($1, 'needs_attention', 'resumed_by_admin', 1, $2, $3)",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(now), SQL_TEXT(req->principal->user_id)), NULL, &err);
    if (!rc)
        rc = load_order(tx, id, false, &order, &err) == 1 ? 0 : PL_EINTERNAL;
    if (!rc && parked == SAGA_RELEASING)
        rc = outbox_emit(tx, "commerce", "pl.commerce.seat_release_requested.v1", id, NULL,
                         json_pack("{s:s, s:O, s:O}", "order_id", id, "course_id", json_object_get(order, "course_id"),
                                   "user_id", json_object_get(order, "buyer_id")),
                         NULL, &err);
    if (!rc)
        rc = outbox_emit(tx, "commerce", "pl.commerce.order_updated.v1", id, NULL,
                         json_pack("{s:s, s:O, s:O, s:s, s:s, s:O, s:s}", "order_id", id, "buyer_id",
                                   json_object_get(order, "buyer_id"), "course_id", json_object_get(order, "course_id"),
                                   "state", saga_order_state((saga_state)parked), "step", s.parked, "reason",
                                   json_object_get(order, "reason"), "updated_at", now),
                         NULL, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(order);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    commerce_poke(c);
    json_object_set_new(order, "state", json_string(saga_order_state((saga_state)parked)));
    json_object_set_new(order, "step", json_string(s.parked));
    http_json(res, 202, order);
    return 0;
}

/* GET /api/v1/admin/payments/ledger?order_id= : what the simulator holds for an order. */
int commerce_admin_ledger(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    if (!is_admin(req))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins read the payment ledger");
    const char *oid = http_query(req, "order_id");
    if (!oid || !plausible_id(oid))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "order_id", "is required"), "invalid query");
    char key[80];
    snprintf(key, sizeof key, "%s:capture", oid);
    pl_error err = {0};
    sql_tx *tx = NULL;
    sql_rows *r;
    json_t *charges = json_array(), *refunds = json_array();
    int64_t captured = 0, refunded = 0;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = sql_query(tx,
                       "SELECT key, payment_id, amount_cents, currency, refunded_cents, created_at FROM paysim_charges"
                       " WHERE key = $1",
                       SQL_ARGS(SQL_TEXT(key)), &r, &err);
        bool open = rc == 0;
        while (open && (rc = sql_next(r, &err)) == 1) {
            captured += sql_int(r, 2);
            json_array_append_new(charges, json_pack("{s:s, s:s, s:I, s:s, s:I, s:s}", "key", sql_text(r, 0),
                                                     "payment_id", sql_text(r, 1), "amount_cents",
                                                     (json_int_t)sql_int(r, 2), "currency", sql_text(r, 3),
                                                     "refunded_cents", (json_int_t)sql_int(r, 4), "created_at",
                                                     sql_text(r, 5)));
        }
        if (open)
            sql_rows_close(r);
    }
    if (rc >= 0) {
        rc = sql_query(tx, "SELECT key, refund_id, amount_cents, created_at FROM paysim_refunds WHERE charge_key = $1",
                       SQL_ARGS(SQL_TEXT(key)), &r, &err);
        bool open = rc == 0;
        while (open && (rc = sql_next(r, &err)) == 1) {
            refunded += sql_int(r, 2);
            json_array_append_new(refunds, json_pack("{s:s, s:s, s:I, s:s}", "key", sql_text(r, 0), "refund_id",
                                                     sql_text(r, 1), "amount_cents", (json_int_t)sql_int(r, 2),
                                                     "created_at", sql_text(r, 3)));
        }
        if (open)
            sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(charges);
        json_decref(refunds);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    http_json(res, 200,
              json_pack("{s:s, s:o, s:o, s:I, s:I, s:I}", "order_id", oid, "charges", charges, "refunds", refunds,
                        "captured_cents", (json_int_t)captured, "refunded_cents", (json_int_t)refunded,
                        "net_cents", (json_int_t)(captured - refunded)));
    return 0;
}
