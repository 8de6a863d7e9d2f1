/* handlers.c - notify's HTTP API: a user's own notifications and preferences only. */
#include "core/json.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/notify/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static doc_store *store_of(http_req *req) { return ((service_ctx *)req->ctx)->doc; }

static int store_fail(http_req *req, int rc, const pl_error *err)
{
    if (rc == PL_EINVAL || rc == PL_ENOTFOUND || rc == PL_ECONFLICT)
        rc = PL_EINTERNAL; /* never the client's fault here */
    return http_fail(req, rc, NULL, "%s", err->msg[0] ? err->msg : err_message(rc));
}

static int query_fail(http_req *req, const char *field, const char *why)
{
    return http_fail(req, PL_EINVAL, json_pack("{s:s}", field, why), "invalid query");
}

/* GET /api/v1/notifications?limit=&cursor=&unread=true
 * Newest activity first; the cursor is the sort key of the last item sent. */
int notify_list(http_req *req, http_res *res)
{
    const char *ls = http_query(req, "limit"), *cs = http_query(req, "cursor"), *us = http_query(req, "unread");
    char *end, after[37] = "";
    long limit = ls ? strtol(ls, &end, 10) : 20;
    if (ls && (!*ls || *end || limit < 1 || limit > 100))
        return query_fail(req, "limit", "must be 1 to 100");
    if (cs && notify_cursor_decode(cs, after))
        return query_fail(req, "cursor", "is not a cursor from this list");
    if (us && strcmp(us, "true") != 0 && strcmp(us, "false") != 0)
        return query_fail(req, "unread", "must be true or false");
    bool unread = us && strcmp(us, "true") == 0;

    json_t *uid = json_string(req->principal->user_id), *cur = json_string(after);
    doc_cond w[3] = {{"user_id", DOC_EQ, uid}};
    size_t nw = 1;
    if (unread)
        w[nw++] = (doc_cond){"read", DOC_EQ, json_false()};
    if (after[0])
        w[nw++] = (doc_cond){"sort", DOC_LT, cur};
    doc_query q = {.where = w, .nwhere = nw, .order_by = "sort", .desc = true, .limit = (size_t)limit + 1};
    pl_error err = {0};
    sql_tx *tx;
    char **ids = NULL;
    json_t **docs = NULL;
    size_t n = 0;
    int rc = sql_begin(doc_sql(store_of(req)), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = doc_find(tx, store_of(req), NOTIFY_COLL, &q, &ids, &docs, &n, &err);
        /* names as they are now: a rename shows at once, and an actor the
         * users projection had not seen when the notification was made
         * gets their name */
        for (size_t i = 0; i < n && i < (size_t)limit && !rc; i++)
            rc = notify_render_doc(tx, store_of(req), docs[i], &err);
        sql_rollback(tx);
    }
    json_decref(uid);
    json_decref(cur);
    if (rc)
        return store_fail(req, rc, &err);
    json_t *items = json_array();
    size_t shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(items, notify_item_json(ids[i], docs[i]));
    json_t *next = json_null();
    if (n > shown) {
        char token[NOTIFY_CURSOR_MAX];
        notify_cursor_encode(json_string_value(json_object_get(docs[shown - 1], "sort")), token, sizeof token);
        next = json_string(token);
    }
    doc_results_free(ids, docs, n);
    http_json(res, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
    return 0;
}

int notify_unread_count(http_req *req, http_res *res)
{
    json_t *uid = json_string(req->principal->user_id);
    doc_cond w[] = {{"user_id", DOC_EQ, uid}, {"read", DOC_EQ, json_false()}};
    pl_error err = {0};
    sql_tx *tx;
    int64_t n = 0;
    int rc = sql_begin(doc_sql(store_of(req)), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = doc_count(tx, store_of(req), NOTIFY_COLL, w, 2, &n, &err);
        sql_rollback(tx);
    }
    json_decref(uid);
    if (rc)
        return store_fail(req, rc, &err);
    http_json(res, 200, json_pack("{s:I}", "count", (json_int_t)n));
    return 0;
}

/* POST /api/v1/notifications/{id}/read: another user's id is as missing as a
 * made-up one (404), so ids cannot be probed. */
int notify_mark_read(http_req *req, http_res *res)
{
    const char *id = http_param(req, "id");
    if (!uuid_valid(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such notification");
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *doc = NULL;
    int rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    rc = doc_get(tx, d, NOTIFY_COLL, id, &doc, &err);
    if (rc == PL_ENOTFOUND || (!rc && strcmp(json_string_value(json_object_get(doc, "user_id")),
                                             req->principal->user_id) != 0)) {
        sql_rollback(tx);
        json_decref(doc);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such notification");
    }
    if (!rc && !json_is_true(json_object_get(doc, "read"))) {
        char now[32];
        time_rfc3339(time_now_ms(), now, sizeof now);
        json_t *patch = json_pack("{s:b, s:s}", "read", 1, "read_at", now), *after = NULL;
        rc = doc_patch(tx, d, NOTIFY_COLL, id, patch, &after, &err);
        json_decref(patch);
        if (!rc) {
            json_decref(doc);
            doc = after;
        }
    }
    if (!rc)
        rc = notify_render_doc(tx, d, doc, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(doc);
        return store_fail(req, rc, &err);
    }
    http_json(res, 200, notify_item_json(id, doc));
    json_decref(doc);
    return 0;
}

int notify_mark_all_read(http_req *req, http_res *res)
{
    doc_store *d = store_of(req);
    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    json_t *uid = json_string(req->principal->user_id), *patch = json_pack("{s:b, s:s}", "read", 1, "read_at", now);
    doc_cond w[] = {{"user_id", DOC_EQ, uid}, {"read", DOC_EQ, json_false()}};
    pl_error err = {0};
    sql_tx *tx;
    int64_t changed = 0;
    int rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (!rc) {
        rc = doc_patch_where(tx, d, NOTIFY_COLL, w, 2, patch, &changed, &err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    json_decref(uid);
    json_decref(patch);
    if (rc)
        return store_fail(req, rc, &err);
    http_json(res, 200, json_pack("{s:I}", "marked", (json_int_t)changed));
    return 0;
}

/* ---- preferences ---------------------------------------------------------------------- */

static int prefs_read(sql_tx *tx, doc_store *d, const char *uid, json_t **out, pl_error *err)
{
    json_t *in_app = json_object();
    for (const char *const *k = notify_kinds; *k; k++) {
        bool on;
        int rc = notify_pref_on(tx, d, uid, *k, &on, err);
        if (rc) {
            json_decref(in_app);
            return rc;
        }
        json_object_set_new(in_app, *k, json_boolean(on));
    }
    *out = json_pack("{s:o}", "in_app", in_app);
    return 0;
}

int notify_prefs_get(http_req *req, http_res *res)
{
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *out = NULL;
    int rc = sql_begin(doc_sql(d), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = prefs_read(tx, d, req->principal->user_id, &out, &err);
        sql_rollback(tx);
    }
    if (rc)
        return store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}

/* PUT /api/v1/me/notification-preferences {"in_app": {"like": false, ...}}:
 * the kinds named are set, the others keep their setting. */
int notify_prefs_put(http_req *req, http_res *res)
{
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    static const char *const allowed[] = {"in_app", NULL};
    jv_only(&v, allowed);
    json_t *in_app = json_object_get(body, "in_app");
    if (!in_app)
        jv_fail(&v, "in_app", "is required");
    else if (!json_is_object(in_app))
        jv_fail(&v, "in_app", "must be an object of kind: true|false");
    else {
        const char *k;
        json_t *val;
        json_object_foreach(in_app, k, val) {
            char field[96];
            snprintf(field, sizeof field, "in_app.%.80s", k);
            if (!notify_kind_valid(k))
                jv_fail(&v, field, "is not a notification kind (like, comment, reply, follow, rsvp, badge, order)");
            else if (!json_is_boolean(val))
                jv_fail(&v, field, "must be true or false");
        }
    }
    if (!jv_ok(&v)) {
        rc = http_fail(req, PL_EINVAL, jv_take_fields(&v), "the request has invalid fields");
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    jv_free(&v);
    doc_store *d = store_of(req);
    const char *uid = req->principal->user_id;
    pl_error err = {0};
    sql_tx *tx;
    json_t *out = NULL, *patch = json_pack("{s:O}", "in_app", in_app);
    json_decref(body);
    rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (!rc) {
        rc = doc_patch(tx, d, NOTIFY_PREFS_COLL, uid, patch, NULL, &err);
        if (rc == PL_ENOTFOUND)
            rc = doc_put(tx, d, NOTIFY_PREFS_COLL, uid, patch, NULL, &err);
        if (!rc)
            rc = prefs_read(tx, d, uid, &out, &err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    json_decref(patch);
    if (rc) {
        json_decref(out);
        return store_fail(req, rc, &err);
    }
    http_json(res, 200, out);
    return 0;
}
