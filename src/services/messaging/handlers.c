/*
 * handlers.c - messaging's HTTP API. Only members read or write a
 * conversation: to anyone else it does not exist (404), so ids cannot be
 * probed. Input is validated before anything is written.
 */
#include "bus/outbox.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/messaging/messaging.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static doc_store *store_of(http_req *req) { return ((service_ctx *)req->ctx)->doc; }
static const char *str(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static int store_fail(http_req *req, int rc, const pl_error *err)
{
    if (rc == PL_EINVAL || rc == PL_ENOTFOUND || rc == PL_ECONFLICT)
        rc = PL_EINTERNAL; /* a store answer the handler did not expect is ours, not the client's */
    return http_fail(req, rc, NULL, "%s", err->msg[0] ? err->msg : err_message(rc));
}

static int no_conversation(http_req *req) { return http_fail(req, PL_ENOTFOUND, NULL, "no such conversation"); }

static int field_fail(http_req *req, int code, const char *field, const char *why, const char *msg)
{
    return http_fail(req, code, json_pack("{s:s}", field, why), "%s", msg);
}

/* Ends tx: commits when rc is 0, else rolls back; returns the result. */
static int finish(sql_tx *tx, int rc, pl_error *err)
{
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    return sql_commit(tx, err);
}

/* Parses an optional JSON body limited to `allowed` keys. *body may be NULL
 * (no body) when optional. */
static int body_parse(http_req *req, jv *v, json_t **body, const char *const *allowed, bool optional)
{
    *body = NULL;
    if (optional && req->body_len == 0) {
        jv_init(v, NULL);
        return 0;
    }
    int rc = http_json_body(req, body);
    if (rc)
        return rc;
    jv_init(v, *body);
    jv_only(v, allowed);
    return 0;
}

static int limit_arg(http_req *req, long def, long *out)
{
    const char *ls = http_query(req, "limit");
    char *end;
    *out = ls ? strtol(ls, &end, 10) : def;
    if (ls && (!*ls || *end || *out < 1 || *out > 100))
        return field_fail(req, PL_EINVAL, "limit", "must be 1 to 100", "invalid query");
    return 0;
}

/* ---- conversations ---------------------------------------------------------------------- */

/* Fails with 422 naming the member ids that are not known users. */
static int check_known(http_req *req, sql_tx *tx, doc_store *d, json_t *ids, const char *field, bool *ok,
                       pl_error *err)
{
    json_t *unknown = json_array();
    size_t i;
    json_t *x;
    *ok = true;
    json_array_foreach(ids, i, x) {
        json_t *u = NULL;
        int rc = doc_get(tx, d, MSG_USERS, json_string_value(x), &u, err);
        json_decref(u);
        if (rc == PL_ENOTFOUND)
            json_array_append(unknown, x);
        else if (rc) {
            json_decref(unknown);
            return rc;
        }
    }
    if (json_array_size(unknown)) {
        char *list = json_compact(unknown);
        *ok = false;
        http_fail(req, PL_EUNPROCESSABLE,
                  json_pack("{s:s+}", field, "unknown users: ", list), "member ids must be existing users");
        free(list);
    }
    json_decref(unknown);
    return 0;
}

static int member_insert(sql_tx *tx, doc_store *d, const char *conv, const char *uid, const char *now,
                         const char *activity, int64_t read_seq, pl_error *err)
{
    char key[96];
    snprintf(key, sizeof key, "%s|%s", conv, uid);
    json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:I, s:n, s:n}", "conversation_id", conv, "user_id", uid, "joined_at",
                          now, "activity", activity, "last_read_seq", (json_int_t)read_seq, "last_read_id",
                          "last_read_at");
    int rc = doc_insert(tx, d, MSG_MEMBERS, key, m, err);
    json_decref(m);
    return rc;
}

/* Creates, or for a direct pair finds, the conversation; *status 201 or 200. */
static int conv_create_tx(http_req *req, doc_store *d, const char *kind, const char *title, json_t *members,
                          json_t **view, int *status, pl_error *err)
{
    const char *me = req->principal->user_id;
    sql_tx *tx;
    int rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    json_t *others = json_array();
    for (size_t i = 1; i < json_array_size(members); i++)
        json_array_append(others, json_array_get(members, i));
    bool ok;
    rc = check_known(req, tx, d, others, "member_ids", &ok, err);
    json_decref(others);
    if (rc || !ok) {
        sql_rollback(tx);
        return rc ? rc : PL_EUNPROCESSABLE;
    }
    char pair[96] = "", id[UUID_STR_LEN], now[32];
    json_t *conv = NULL, *member = NULL;
    if (strcmp(kind, "direct") == 0) {
        msg_direct_key(me, json_string_value(json_array_get(members, 1)), pair, sizeof pair);
        json_t *p = NULL;
        rc = doc_get(tx, d, MSG_PAIRS, pair, &p, err);
        if (!rc) {
            snprintf(id, sizeof id, "%s", str(p, "conversation_id"));
            json_decref(p);
            if (!(rc = doc_get(tx, d, MSG_CONVS, id, &conv, err)) && !(rc = msg_member_get(tx, d, id, me, &member, err)))
                rc = msg_conv_view(tx, d, id, conv, me, member, view, err);
            json_decref(conv);
            json_decref(member);
            sql_rollback(tx);
            *status = 200;
            return rc;
        }
        if (rc != PL_ENOTFOUND) {
            sql_rollback(tx);
            return rc;
        }
    }
    uuid7_new(id);
    time_rfc3339(time_now_ms(), now, sizeof now);
    conv = json_pack("{s:s, s:s?, s:O, s:s, s:s, s:i, s:n, s:s}", "kind", kind, "title", title, "member_ids", members,
                     "created_by", me, "created_at", now, "seq", 0, "last_message", "activity", id);
    if (!title)
        json_object_set_new(conv, "title", json_null());
    rc = doc_insert(tx, d, MSG_CONVS, id, conv, err);
    for (size_t i = 0; i < json_array_size(members) && !rc; i++)
        rc = member_insert(tx, d, id, json_string_value(json_array_get(members, i)), now, id, 0, err);
    if (!rc && pair[0]) {
        json_t *p = json_pack("{s:s}", "conversation_id", id);
        rc = doc_insert(tx, d, MSG_PAIRS, pair, p, err); /* PL_ECONFLICT: a concurrent twin won */
        json_decref(p);
    }
    if (!rc)
        rc = outbox_emit(tx, "messaging", "pl.messaging.conversation_created.v1", id, NULL,
                         json_pack("{s:s, s:s, s:O, s:O, s:s, s:s}", "conversation_id", id, "kind", kind, "title",
                                   json_object_get(conv, "title"), "member_ids", members, "created_by", me,
                                   "created_at", now),
                         NULL, err);
    if (!rc && !(rc = msg_member_get(tx, d, id, me, &member, err)))
        rc = msg_conv_view(tx, d, id, conv, me, member, view, err);
    json_decref(conv);
    json_decref(member);
    *status = 201;
    return finish(tx, rc, err);
}

/* POST /api/v1/conversations {kind: direct|group, member_ids: [...], title} */
int msg_conv_create(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"kind", "title", "member_ids", NULL};
    const char *me = req->principal->user_id;
    json_t *body;
    jv v;
    int rc = body_parse(req, &v, &body, allowed, false);
    if (rc)
        return rc;
    const char *kind = jv_str(&v, "kind", true, 1, 16);
    if (kind && strcmp(kind, "direct") != 0 && strcmp(kind, "group") != 0) {
        jv_fail(&v, "kind", "must be direct or group");
        kind = NULL;
    }
    const char *title = jv_str(&v, "title", false, 1, MSG_TITLE_MAX);
    if (title && strspn(title, " \t\r\n") == strlen(title))
        jv_fail(&v, "title", "must not be only white space");
    json_t *ids = json_object_get(body, "member_ids"), *members = json_array();
    json_array_append_new(members, json_string(me));
    if (!ids)
        jv_fail(&v, "member_ids", "is required");
    else if (!json_is_array(ids) || json_array_size(ids) > MSG_GROUP_MAX)
        jv_fail(&v, "member_ids", "must be an array of at most 100 user ids");
    else {
        size_t i, k;
        json_t *x;
        json_array_foreach(ids, i, x) {
            if (!json_is_string(x) || !uuid_valid(json_string_value(x))) {
                jv_fail(&v, "member_ids", "must hold user ids");
                break;
            }
            bool dup = false;
            for (k = 0; k < json_array_size(members) && !dup; k++)
                dup = strcasecmp(json_string_value(json_array_get(members, k)), json_string_value(x)) == 0;
            if (!dup) {
                char lower[37];
                snprintf(lower, sizeof lower, "%s", json_string_value(x));
                for (char *c = lower; *c; c++)
                    *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
                json_array_append_new(members, json_string(lower));
            }
        }
    }
    size_t n = json_array_size(members);
    if (jv_ok(&v) && kind && strcmp(kind, "direct") == 0) {
        if (title)
            jv_fail(&v, "title", "a direct conversation has no title");
        if (n != 2)
            jv_fail(&v, "member_ids", "a direct conversation is with exactly one other user");
    } else if (jv_ok(&v) && kind) {
        if (!title)
            jv_fail(&v, "title", "is required for a group");
        if (n < MSG_GROUP_MIN || n > MSG_GROUP_MAX)
            jv_fail(&v, "member_ids", "a group has 3 to 100 members, you included");
    }
    if (!jv_ok(&v)) {
        json_decref(members);
        return http_fail_fields(req, &v, body);
    }
    pl_error err = {0};
    json_t *view = NULL;
    int status = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = conv_create_tx(req, store_of(req), kind, title, members, &view, &status, &err);
        if (rc != PL_ECONFLICT)
            break;
        memset(&err, 0, sizeof err); /* lost a race for the direct pair: the next lookup finds it */
    }
    jv_free(&v);
    json_decref(body);
    json_decref(members);
    if (rc == PL_EUNPROCESSABLE)
        return rc; /* the response is already set */
    if (rc)
        return store_fail(req, rc, &err);
    if (status == 201)
        http_header_add(req, res, "Location",
                        arena_sprintf(req->arena, "/api/v1/conversations/%s", str(view, "id")));
    http_json(res, status, view);
    return 0;
}

/* GET /api/v1/conversations?limit=&cursor= */
int msg_conv_list(http_req *req, http_res *res)
{
    long limit;
    int rc = limit_arg(req, 20, &limit);
    if (rc)
        return rc;
    const char *cs = http_query(req, "cursor");
    char after[37] = "";
    if (cs && msg_conv_cursor_decode(cs, after))
        return field_fail(req, PL_EINVAL, "cursor", "is not a cursor from this list", "invalid query");
    doc_store *d = store_of(req);
    const char *me = req->principal->user_id;
    json_t *uid = json_string(me), *cur = json_string(after);
    doc_cond w[] = {{"user_id", DOC_EQ, uid}, {"activity", DOC_LT, cur}};
    doc_query q = {.where = w, .nwhere = after[0] ? 2 : 1, .order_by = "activity", .desc = true,
                   .limit = (size_t)limit + 1};
    pl_error err = {0};
    sql_tx *tx;
    char **ids = NULL;
    json_t **docs = NULL, *items = json_array();
    size_t n = 0, shown = 0;
    rc = sql_begin(doc_sql(d), SQL_TX_READ, &tx, &err);
    if (!rc) {
        rc = doc_find(tx, d, MSG_MEMBERS, &q, &ids, &docs, &n, &err);
        shown = n > (size_t)limit ? (size_t)limit : n;
        for (size_t i = 0; i < shown && !rc; i++) {
            const char *cid = str(docs[i], "conversation_id");
            json_t *conv = NULL, *view = NULL;
            if (!(rc = doc_get(tx, d, MSG_CONVS, cid, &conv, &err)) &&
                !(rc = msg_conv_view(tx, d, cid, conv, me, docs[i], &view, &err)))
                json_array_append_new(items, view);
            json_decref(conv);
        }
        sql_rollback(tx);
    }
    json_decref(uid);
    json_decref(cur);
    json_t *next = json_null();
    if (!rc && n > shown) {
        char token[MSG_CURSOR_MAX];
        msg_conv_cursor_encode(str(docs[shown - 1], "activity"), token, sizeof token);
        next = json_string(token);
    }
    doc_results_free(ids, docs, n);
    if (rc) {
        json_decref(items);
        return store_fail(req, rc, &err);
    }
    http_json(res, 200, json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
    return 0;
}

int msg_conv_get(http_req *req, http_res *res)
{
    const char *id = http_param(req, "id"), *me = req->principal->user_id;
    if (!uuid_valid(id))
        return no_conversation(req);
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *conv = NULL, *member = NULL, *view = NULL;
    int rc = sql_begin(doc_sql(d), SQL_TX_READ, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    if (!(rc = msg_member_get(tx, d, id, me, &member, &err)) && !(rc = doc_get(tx, d, MSG_CONVS, id, &conv, &err)))
        rc = msg_conv_view(tx, d, id, conv, me, member, &view, &err);
    /* the members with their names (the users projection), for a conversation header */
    json_t *people = json_array(), *x;
    size_t i;
    json_array_foreach(rc ? NULL : json_object_get(conv, "member_ids"), i, x) {
        json_t *u = NULL;
        int ur = doc_get(tx, d, MSG_USERS, json_string_value(x), &u, &err);
        if (ur && ur != PL_ENOTFOUND) {
            rc = ur;
            break;
        }
        json_array_append_new(people, json_pack("{s:O, s:s?, s:s?}", "user_id", x, "username", str(u, "username"),
                                                "display_name", str(u, "display_name")));
        json_decref(u);
    }
    if (!rc)
        json_object_set_new(view, "members", people);
    else {
        json_decref(people);
        json_decref(view);
    }
    sql_rollback(tx);
    json_decref(conv);
    json_decref(member);
    if (rc == PL_ENOTFOUND)
        return no_conversation(req);
    if (rc)
        return store_fail(req, rc, &err);
    http_json(res, 200, view);
    return 0;
}

/* ---- messages ------------------------------------------------------------------------------ */

/* The idempotency record's id: sender, conversation and a hash of the key
 * (keys are up to 200 bytes; doc ids up to 128). */
static void idem_id(const char *sender, const char *conv, const char *key, char *out, size_t size)
{
    unsigned char h[16];
    char hex[33];
    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(out, size, "%s|%s|%s", sender, conv, hex);
}

static void text_hash(const char *text, char hex[33])
{
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)text, strlen(text), NULL, 0);
    sodium_bin2hex(hex, 33, h, sizeof h);
}

/* POST /api/v1/conversations/{id}/messages {text}, Idempotency-Key optional:
 * the same key from the same sender in the same conversation gives back the
 * first message (201, Idempotent-Replayed: true); with other text, 409. */
int msg_send(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *me = req->principal->user_id;
    const char *key = http_header_get(req, "Idempotency-Key");
    static const char *const allowed[] = {"text", NULL};
    json_t *body;
    jv v;
    int rc = body_parse(req, &v, &body, allowed, false);
    if (rc)
        return rc;
    const char *text = jv_str(&v, "text", true, 0, (size_t)-1), *why;
    if (text && (why = msg_check_text(text)))
        jv_fail(&v, "text", why);
    if (key && (why = msg_check_idem_key(key)))
        jv_fail(&v, "Idempotency-Key", why);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    if (!uuid_valid(cid)) {
        jv_free(&v);
        json_decref(body);
        return no_conversation(req);
    }
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *conv = NULL, *out = NULL;
    int64_t seq = 0;
    bool replay = false, conflict = false;
    char th[33], ikey[160] = "", mid[UUID_STR_LEN], now[32], activity[UUID_STR_LEN];
    text_hash(text, th);
    rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (rc)
        goto done_notx;
    rc = msg_member_get(tx, d, cid, me, NULL, &err);
    /* the counter's row lock orders this conversation's senders (and same-key retries) */
    if (!rc)
        rc = doc_incr(tx, d, MSG_CONVS, cid, "seq", 1, &seq, &err);
    if (!rc && key) {
        json_t *rec = NULL, *m = NULL;
        idem_id(me, cid, key, ikey, sizeof ikey);
        rc = doc_get(tx, d, MSG_IDEM, ikey, &rec, &err);
        if (!rc) {
            conflict = strcmp(str(rec, "text_hash"), th) != 0;
            replay = !conflict;
            snprintf(mid, sizeof mid, "%s", str(rec, "message_id"));
            if (replay && !(rc = doc_get(tx, d, MSG_MESSAGES, mid, &m, &err)))
                out = msg_message_json(mid, m);
            json_decref(m);
            json_decref(rec);
            sql_rollback(tx); /* undoes the counter */
            goto done_notx;
        }
        if (rc == PL_ENOTFOUND)
            rc = 0;
    }
    if (!rc)
        rc = doc_get(tx, d, MSG_CONVS, cid, &conv, &err);
    if (!rc) {
        uuid7_new(mid);
        uuid7_new(activity);
        time_rfc3339(time_now_ms(), now, sizeof now);
        json_t *m = json_pack("{s:s, s:I, s:s, s:s, s:s}", "conversation_id", cid, "seq", (json_int_t)seq,
                              "sender_id", me, "text", text, "sent_at", now);
        rc = doc_insert(tx, d, MSG_MESSAGES, mid, m, &err);
        if (!rc)
            out = msg_message_json(mid, m);
        json_decref(m);
    }
    if (!rc) {
        json_t *p = json_pack("{s:o, s:s}", "last_message", msg_preview(mid, me, text, now), "activity", activity);
        rc = doc_patch(tx, d, MSG_CONVS, cid, p, NULL, &err);
        json_decref(p);
    }
    if (!rc) {
        json_t *c = json_string(cid), *p = json_pack("{s:s}", "activity", activity);
        doc_cond w[] = {{"conversation_id", DOC_EQ, c}};
        rc = doc_patch_where(tx, d, MSG_MEMBERS, w, 1, p, NULL, &err);
        json_decref(c);
        json_decref(p);
    }
    if (!rc) { /* sending reads everything before it */
        char mk[96];
        snprintf(mk, sizeof mk, "%s|%s", cid, me);
        json_t *p = json_pack("{s:I, s:s, s:s}", "last_read_seq", (json_int_t)seq, "last_read_id", mid, "last_read_at",
                              now);
        rc = doc_patch(tx, d, MSG_MEMBERS, mk, p, NULL, &err);
        json_decref(p);
    }
    if (!rc && key) {
        json_t *rec = json_pack("{s:s, s:s}", "message_id", mid, "text_hash", th);
        rc = doc_insert(tx, d, MSG_IDEM, ikey, rec, &err);
        json_decref(rec);
    }
    if (!rc)
        rc = outbox_emit(tx, "messaging", "pl.messaging.message_sent.v1", cid, NULL,
                         json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "conversation_id", cid, "message_id", mid,
                                   "sender_id", me, "text", text, "sent_at", now, "recipient_ids",
                                   json_object_get(conv, "member_ids")),
                         NULL, &err);
    rc = finish(tx, rc, &err);
done_notx:
    json_decref(conv);
    jv_free(&v);
    json_decref(body);
    if (conflict)
        return field_fail(req, PL_ECONFLICT, "Idempotency-Key", "was used for a different message",
                          "this Idempotency-Key was already used with other text");
    if (rc == PL_ENOTFOUND) {
        json_decref(out);
        return no_conversation(req);
    }
    if (rc) {
        json_decref(out);
        return store_fail(req, rc, &err);
    }
    if (replay)
        http_header_add(req, res, "Idempotent-Replayed", "true");
    http_header_add(req, res, "Location",
                    arena_sprintf(req->arena, "/api/v1/conversations/%s/messages/%s", cid, str(out, "id")));
    http_json(res, 201, out);
    return 0;
}

/* GET /api/v1/conversations/{id}/messages?limit=&cursor=  (newest first)
 *                                        ?after=<message id>&limit=  (oldest first, after it) */
int msg_list(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *me = req->principal->user_id;
    const char *cs = http_query(req, "cursor"), *as = http_query(req, "after");
    long limit;
    int rc = limit_arg(req, 50, &limit);
    if (rc)
        return rc;
    int64_t from = 0;
    bool forward = false, bounded = false;
    if (cs && as)
        return field_fail(req, PL_EINVAL, "after", "cannot be used with cursor", "invalid query");
    if (cs) {
        if (msg_cursor_decode(cs, &from, &forward))
            return field_fail(req, PL_EINVAL, "cursor", "is not a cursor from this list", "invalid query");
        bounded = true;
    }
    if (as && !uuid_valid(as))
        return field_fail(req, PL_EINVAL, "after", "must be a message id", "invalid query");
    if (!uuid_valid(cid))
        return no_conversation(req);
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    rc = sql_begin(doc_sql(d), SQL_TX_READ, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    rc = msg_member_get(tx, d, cid, me, NULL, &err);
    if (rc) {
        sql_rollback(tx);
        return rc == PL_ENOTFOUND ? no_conversation(req) : store_fail(req, rc, &err);
    }
    if (as) {
        json_t *m = NULL;
        rc = doc_get(tx, d, MSG_MESSAGES, as, &m, &err);
        if (rc == PL_ENOTFOUND || (!rc && strcmp(str(m, "conversation_id"), cid) != 0)) {
            json_decref(m);
            sql_rollback(tx);
            return field_fail(req, PL_EINVAL, "after", "is not a message of this conversation", "invalid query");
        }
        if (!rc)
            from = json_integer_value(json_object_get(m, "seq"));
        json_decref(m);
        forward = bounded = true;
    }
    json_t *c = json_string(cid), *s = json_integer(from);
    doc_cond w[] = {{"conversation_id", DOC_EQ, c}, {"seq", forward ? DOC_GT : DOC_LT, s}};
    doc_query q = {.where = w, .nwhere = bounded ? 2 : 1, .order_by = "seq", .desc = !forward,
                   .limit = (size_t)limit + 1};
    char **ids = NULL;
    json_t **docs = NULL;
    size_t n = 0;
    if (!rc)
        rc = doc_find(tx, d, MSG_MESSAGES, &q, &ids, &docs, &n, &err);
    sql_rollback(tx);
    json_decref(c);
    json_decref(s);
    if (rc)
        return store_fail(req, rc, &err);
    json_t *items = json_array(), *next = json_null();
    size_t shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(items, msg_message_json(ids[i], docs[i]));
    if (n > shown) {
        char token[MSG_CURSOR_MAX];
        msg_cursor_encode(json_integer_value(json_object_get(docs[shown - 1], "seq")), forward, token, sizeof token);
        next = json_string(token);
    }
    doc_results_free(ids, docs, n);
    http_json(res, 200, json_pack("{s:o, s:o, s:s}", "items", items, "next_cursor", next, "order",
                                  forward ? "oldest_first" : "newest_first"));
    return 0;
}

/* GET /api/v1/conversations/{id}/messages/{message_id} (the Location of a sent message) */
int msg_get(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *mid = http_param(req, "message_id");
    if (!uuid_valid(cid))
        return no_conversation(req);
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *m = NULL;
    int rc = sql_begin(doc_sql(d), SQL_TX_READ, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    rc = msg_member_get(tx, d, cid, req->principal->user_id, NULL, &err);
    if (rc == PL_ENOTFOUND) {
        sql_rollback(tx);
        return no_conversation(req);
    }
    if (!rc)
        rc = uuid_valid(mid) ? doc_get(tx, d, MSG_MESSAGES, mid, &m, &err) : PL_ENOTFOUND;
    sql_rollback(tx);
    if (rc == PL_ENOTFOUND || (!rc && strcmp(str(m, "conversation_id"), cid) != 0)) {
        json_decref(m);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such message in this conversation");
    }
    if (rc)
        return store_fail(req, rc, &err);
    http_json(res, 200, msg_message_json(mid, m));
    json_decref(m);
    return 0;
}

/* ---- membership ------------------------------------------------------------------------------ */

/* Loads the conversation for a membership change by `me`: PL_ENOTFOUND when
 * me is not a member; 422 for a direct conversation. */
static int group_for_change(http_req *req, sql_tx *tx, doc_store *d, const char *cid, json_t **conv, pl_error *err)
{
    int rc = msg_member_get(tx, d, cid, req->principal->user_id, NULL, err);
    if (!rc)
        rc = doc_get(tx, d, MSG_CONVS, cid, conv, err);
    if (rc == PL_ENOTFOUND)
        return no_conversation(req);
    if (rc)
        return store_fail(req, rc, err);
    if (strcmp(str(*conv, "kind"), "group") != 0)
        return http_fail(req, PL_EUNPROCESSABLE, NULL, "a direct conversation always has its two members");
    return 0;
}

/* POST /api/v1/conversations/{id}/members {user_id}: the group's creator adds. */
int msg_member_add(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *me = req->principal->user_id;
    static const char *const allowed[] = {"user_id", NULL};
    json_t *body;
    jv v;
    int rc = body_parse(req, &v, &body, allowed, false);
    if (rc)
        return rc;
    const char *uid = jv_str(&v, "user_id", true, 36, 36);
    if (uid && !uuid_valid(uid))
        jv_fail(&v, "user_id", "must be a user id");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    char target[37];
    snprintf(target, sizeof target, "%s", uid);
    for (char *c = target; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
    jv_free(&v);
    json_decref(body);
    if (!uuid_valid(cid))
        return no_conversation(req);
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *conv = NULL, *member = NULL, *view = NULL;
    int status = 201;
    if ((rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err)))
        return store_fail(req, rc, &err);
    if ((rc = group_for_change(req, tx, d, cid, &conv, &err)))
        goto out;
    if (strcmp(str(conv, "created_by"), me) != 0) {
        rc = http_fail(req, PL_EFORBIDDEN, NULL, "only the group's creator adds members");
        goto out;
    }
    bool ok;
    json_t *one = json_pack("[s]", target);
    rc = check_known(req, tx, d, one, "user_id", &ok, &err);
    json_decref(one);
    if (rc || !ok) {
        rc = rc ? store_fail(req, rc, &err) : PL_EUNPROCESSABLE;
        goto out;
    }
    rc = msg_member_get(tx, d, cid, target, NULL, &err);
    if (rc == 0) {
        status = 200; /* already a member: nothing changes */
    } else if (rc != PL_ENOTFOUND) {
        rc = store_fail(req, rc, &err);
        goto out;
    } else if (json_array_size(json_object_get(conv, "member_ids")) >= MSG_GROUP_MAX) {
        rc = http_fail(req, PL_EUNPROCESSABLE, json_pack("{s:s}", "user_id", "the group is full (100 members)"),
                       "the group is full");
        goto out;
    } else {
        char now[32];
        time_rfc3339(time_now_ms(), now, sizeof now);
        /* a newcomer starts with everything so far read */
        rc = member_insert(tx, d, cid, target, now, str(conv, "activity"),
                           json_integer_value(json_object_get(conv, "seq")), &err);
        json_t *ids = json_copy(json_object_get(conv, "member_ids"));
        json_array_append_new(ids, json_string(target));
        json_object_set_new(conv, "member_ids", ids);
        json_t *p = json_pack("{s:O}", "member_ids", ids);
        if (!rc)
            rc = doc_patch(tx, d, MSG_CONVS, cid, p, NULL, &err);
        json_decref(p);
        if (!rc)
            rc = outbox_emit(tx, "messaging", "pl.messaging.member_added.v1", cid, NULL,
                             json_pack("{s:s, s:s, s:s, s:s}", "conversation_id", cid, "user_id", target, "by", me,
                                       "at", now),
                             NULL, &err);
        if (rc) {
            rc = store_fail(req, rc, &err);
            goto out;
        }
    }
    rc = msg_member_get(tx, d, cid, me, &member, &err);
    if (!rc)
        rc = msg_conv_view(tx, d, cid, conv, me, member, &view, &err);
    rc = finish(tx, rc, &err);
    tx = NULL;
    if (rc)
        rc = store_fail(req, rc, &err);
out:
    if (tx)
        sql_rollback(tx);
    json_decref(conv);
    json_decref(member);
    if (rc) {
        json_decref(view);
        return rc;
    }
    http_json(res, status, view);
    return 0;
}

/* DELETE /api/v1/conversations/{id}/members/{user_id}: the creator removes
 * anyone; any member removes themselves (leaves). 204. */
int msg_member_remove(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *uid = http_param(req, "user_id"), *me = req->principal->user_id;
    if (!uuid_valid(cid))
        return no_conversation(req);
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *conv = NULL;
    int rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    if ((rc = group_for_change(req, tx, d, cid, &conv, &err)))
        goto out;
    bool self = strcasecmp(uid, me) == 0;
    if (!self && strcmp(str(conv, "created_by"), me) != 0) {
        rc = http_fail(req, PL_EFORBIDDEN, NULL, "only the group's creator removes other members");
        goto out;
    }
    char lower[40];
    snprintf(lower, sizeof lower, "%s", self ? me : uid);
    for (char *c = lower; *c; c++) /* ids are stored lower-case */
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
    const char *target = lower;
    char key[160];
    snprintf(key, sizeof key, "%s|%s", cid, target);
    rc = uuid_valid(target) ? doc_delete(tx, d, MSG_MEMBERS, key, &err) : PL_ENOTFOUND;
    if (rc == PL_ENOTFOUND) {
        rc = http_fail(req, PL_ENOTFOUND, NULL, "no such member");
        goto out;
    }
    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    json_t *ids = json_array(), *x;
    size_t i;
    json_array_foreach(json_object_get(conv, "member_ids"), i, x)
        if (strcmp(json_string_value(x), target) != 0)
            json_array_append(ids, x);
    json_t *p = json_pack("{s:o}", "member_ids", ids);
    if (!rc)
        rc = doc_patch(tx, d, MSG_CONVS, cid, p, NULL, &err);
    json_decref(p);
    if (!rc)
        rc = outbox_emit(tx, "messaging", "pl.messaging.member_removed.v1", cid, NULL,
                         json_pack("{s:s, s:s, s:s, s:s}", "conversation_id", cid, "user_id", target, "by", me, "at",
                                   now),
                         NULL, &err);
    rc = finish(tx, rc, &err);
    tx = NULL;
    if (rc)
        rc = store_fail(req, rc, &err);
out:
    if (tx)
        sql_rollback(tx);
    json_decref(conv);
    if (rc)
        return rc;
    http_json(res, 204, NULL);
    return 0;
}

/* POST /api/v1/conversations/{id}/read {message_id?}: moves my marker up to
 * that message (default: the latest); it never moves back. */
int msg_mark_read(http_req *req, http_res *res)
{
    const char *cid = http_param(req, "id"), *me = req->principal->user_id;
    static const char *const allowed[] = {"message_id", NULL};
    json_t *body;
    jv v;
    int rc = body_parse(req, &v, &body, allowed, true);
    if (rc)
        return rc;
    const char *mid = body ? jv_str(&v, "message_id", false, 36, 36) : NULL;
    if (mid && !uuid_valid(mid))
        jv_fail(&v, "message_id", "must be a message id");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    if (!uuid_valid(cid)) {
        jv_free(&v);
        json_decref(body);
        return no_conversation(req);
    }
    doc_store *d = store_of(req);
    pl_error err = {0};
    sql_tx *tx;
    json_t *member = NULL, *conv = NULL, *m = NULL;
    bool bad_message = false;
    int64_t unread = 0;
    rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, &err);
    if (rc)
        goto done;
    if ((rc = msg_member_get(tx, d, cid, me, &member, &err)) || (rc = doc_get(tx, d, MSG_CONVS, cid, &conv, &err))) {
        sql_rollback(tx);
        goto done;
    }
    int64_t seq;
    const char *target_id;
    if (mid) {
        rc = doc_get(tx, d, MSG_MESSAGES, mid, &m, &err);
        if (rc == PL_ENOTFOUND || (!rc && strcmp(str(m, "conversation_id"), cid) != 0)) {
            bad_message = true;
            rc = 0;
            sql_rollback(tx);
            goto done;
        }
        seq = json_integer_value(json_object_get(m, "seq"));
        target_id = mid;
    } else {
        seq = json_integer_value(json_object_get(conv, "seq"));
        target_id = str(json_object_get(conv, "last_message"), "id");
    }
    if (!rc && target_id && seq > json_integer_value(json_object_get(member, "last_read_seq"))) {
        char key[96], now[32];
        snprintf(key, sizeof key, "%s|%s", cid, me);
        time_rfc3339(time_now_ms(), now, sizeof now);
        json_t *p = json_pack("{s:I, s:s, s:s}", "last_read_seq", (json_int_t)seq, "last_read_id", target_id,
                              "last_read_at", now), *after = NULL;
        rc = doc_patch(tx, d, MSG_MEMBERS, key, p, &after, &err);
        json_decref(p);
        if (!rc) {
            json_decref(member);
            member = after;
        }
    }
    if (!rc)
        rc = msg_unread(tx, d, cid, me, member, &unread, &err);
    rc = finish(tx, rc, &err);
done:
    jv_free(&v);
    json_decref(body);
    json_decref(conv);
    json_decref(m);
    if (bad_message) {
        json_decref(member);
        return field_fail(req, PL_EUNPROCESSABLE, "message_id", "is not a message of this conversation",
                          "the message is not in this conversation");
    }
    if (rc) {
        json_decref(member);
        return rc == PL_ENOTFOUND ? no_conversation(req) : store_fail(req, rc, &err);
    }
    json_t *lr = json_object_get(member, "last_read_id"), *la = json_object_get(member, "last_read_at");
    http_json(res, 200, json_pack("{s:s, s:O, s:O, s:I}", "conversation_id", cid, "last_read_message_id",
                                  lr ? lr : json_null(), "last_read_at", la ? la : json_null(), "unread_count",
                                  (json_int_t)unread));
    json_decref(member);
    return 0;
}
