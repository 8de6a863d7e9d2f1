/*
 * posts.c - posts, likes, comments and follows: their HTTP handlers and the
 * transactional writes behind them. Every write changes its rows, its
 * counters and its outbox event in one transaction, and emits only when
 * something changed (a repeated like or follow writes nothing).
 *
 * Visibility: a followers-only post is answered 404 (not 403) to whoever may
 * not see it, so its existence is not revealed; writes to it (like, comment)
 * get the same 404.
 */
#include "bus/outbox.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/social/social.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SVC "social"

/* $1 is the viewer (for liked_by_me). */
#define POST_SELECT                                                                                               \
    "SELECT p.id, p.author_id, p.text, p.course_id, p.visibility, p.like_count, p.comment_count, p.created_at,"  \
    " p.updated_at, (SELECT COUNT(*) FROM social_likes l WHERE l.post_id = p.id AND l.user_id = $1), u.username" \
    " FROM social_posts p LEFT JOIN social_users u ON u.user_id = p.author_id"

/* A newest-first page of posts matching `where` (over social_posts p); a format
 * for arena_sprintf taking the page size. The size is written into the
 * statement, not bound: a generic plan that knows "LIMIT 20" walks the
 * (author_id, id) index backwards, one that sees "LIMIT $n" may sort them all. */
#define POST_PAGE(where)                                                                                          \
    "SELECT p.id, p.author_id, p.text, p.course_id, p.visibility, p.like_count, p.comment_count, p.created_at,"  \
    " p.updated_at, (SELECT COUNT(*) FROM social_likes l WHERE l.post_id = p.id AND l.user_id = $1), u.username" \
    " FROM (SELECT * FROM social_posts p WHERE " where " ORDER BY p.id DESC LIMIT %ld) p"                        \
    " LEFT JOIN social_users u ON u.user_id = p.author_id ORDER BY p.id DESC"

static json_t *post_row(sql_rows *r, void *ud)
{
    (void)ud;
    json_t *j = json_pack("{s:s, s:s, s:s?, s:s, s:s, s:s?, s:I, s:I, s:b, s:s, s:s}", "id", sql_text(r, 0),
                          "author_id", sql_text(r, 1), "author_username", sql_text(r, 10), "text", sql_text(r, 2),
                          "visibility", sql_text(r, 4), "course_id", sql_text(r, 3), "like_count",
                          (json_int_t)sql_int(r, 5), "comment_count", (json_int_t)sql_int(r, 6), "liked_by_me",
                          sql_int(r, 9) > 0, "created_at", sql_text(r, 7), "updated_at", sql_text(r, 8));
    if (!json_object_get(j, "course_id"))
        json_object_set_new(j, "course_id", json_null());
    if (!json_object_get(j, "author_username"))
        json_object_set_new(j, "author_username", json_null());
    return j;
}

static const char *jstr(const json_t *j, const char *key) { return json_string_value(json_object_get(j, key)); }

/* Loads a post as the viewer may see it: 1 (*out set), 0 absent or not
 * visible to the viewer, <0 error. */
static int post_load(sql_tx *tx, const http_req *req, const char *id, json_t **out, pl_error *err)
{
    const char *viewer = req->principal->user_id;
    json_t *p = NULL;
    int rc = social_get(tx, POST_SELECT " WHERE p.id = $2", SQL_ARGS(SQL_TEXT(viewer), SQL_TEXT(id)), post_row, NULL,
                        &p, err);
    if (rc != 1)
        return rc;
    const char *author = jstr(p, "author_id");
    bool is_author = strcmp(author, viewer) == 0, admin = social_is_admin(req), follows = false;
    if (!is_author && !admin && strcmp(jstr(p, "visibility"), "public") != 0) {
        int f = social_follows(tx, viewer, author, err);
        if (f < 0) {
            json_decref(p);
            return f;
        }
        follows = f == 1;
    }
    if (!social_can_see(jstr(p, "visibility"), is_author, admin, follows)) {
        json_decref(p);
        return 0;
    }
    *out = p;
    return 1;
}

/* ---- writes ------------------------------------------------------------------------------ */

static json_t *post_event_data(const char *id, const char *author, const char *text, const char *course,
                               const char *visibility, const char *at_key, const char *at)
{
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", "post_id", id, "author_id", author, "text", text, "visibility",
                          visibility, at_key, at);
    json_object_set_new(d, "course_id", course ? json_string(course) : json_null());
    return d;
}

int social_post_insert(sql_tx *tx, social_post *p, pl_error *err)
{
    uuid7_new(p->id);
    social_now(p->created_at);
    int rc = sql_exec(tx,
                      "INSERT INTO social_posts (id, author_id, text, course_id, visibility, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $6)",
                      SQL_ARGS(SQL_TEXT(p->id), SQL_TEXT(p->author_id), SQL_TEXT(p->text),
                               SQL_TEXT_OR_NULL(p->course_id), SQL_TEXT(p->visibility), SQL_TEXT(p->created_at)),
                      NULL, err);
    if (rc)
        return rc;
    return outbox_emit(tx, SVC, "pl.social.post_created.v1", p->id, p->author_id,
                       post_event_data(p->id, p->author_id, p->text, p->course_id, p->visibility, "created_at",
                                       p->created_at),
                       NULL, err);
}

int social_like_put(sql_tx *tx, const char *post_id, const char *post_author, const char *user_id, pl_error *err)
{
    char now[32];
    social_now(now);
    int64_t n = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO social_likes (post_id, user_id, created_at) VALUES ($1, $2, $3)"
                      " ON CONFLICT (post_id, user_id) DO NOTHING",
                      SQL_ARGS(SQL_TEXT(post_id), SQL_TEXT(user_id), SQL_TEXT(now)), &n, err);
    if (rc || n == 0)
        return rc;
    /* the count moves in the same transaction; no row: the post was deleted meanwhile */
    if ((rc = sql_exec(tx, "UPDATE social_posts SET like_count = like_count + 1 WHERE id = $1",
                       SQL_ARGS(SQL_TEXT(post_id)), &n, err)))
        return rc;
    if (n == 0)
        return err_set(err, PL_ENOTFOUND, NULL, "no such post");
    rc = outbox_emit(tx, SVC, "pl.social.post_liked.v1", post_id, post_id,
                     json_pack("{s:s, s:s, s:s, s:s}", "post_id", post_id, "post_author_id", post_author, "user_id",
                               user_id, "liked_at", now),
                     NULL, err);
    return rc ? rc : 1;
}

int social_follow_put(sql_tx *tx, const char *follower, const char *followee, pl_error *err)
{
    char now[32], id[UUID_STR_LEN];
    social_now(now);
    uuid7_new(id);
    int64_t n = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO social_follows (id, follower_id, followee_id, created_at) VALUES ($1, $2, $3, $4)"
                      " ON CONFLICT (follower_id, followee_id) DO NOTHING",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(follower), SQL_TEXT(followee), SQL_TEXT(now)), &n, err);
    if (rc || n == 0)
        return rc;
    rc = outbox_emit(tx, SVC, "pl.social.user_followed.v1", followee, follower,
                     json_pack("{s:s, s:s, s:s}", "follower_id", follower, "followee_id", followee, "followed_at", now),
                     NULL, err);
    return rc ? rc : 1;
}

int social_comment_insert(sql_tx *tx, const char *post_id, const char *post_author, const char *author,
                          const char *parent_id, const char *parent_author, const char *text, bool peer_review,
                          char id_out[40], pl_error *err)
{
    char now[32];
    social_now(now);
    uuid7_new(id_out);
    int64_t n = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO social_comments (id, post_id, author_id, parent_id, text, peer_review, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                      SQL_ARGS(SQL_TEXT(id_out), SQL_TEXT(post_id), SQL_TEXT(author), SQL_TEXT_OR_NULL(parent_id),
                               SQL_TEXT(text), SQL_INT(peer_review ? 1 : 0), SQL_TEXT(now)),
                      NULL, err);
    if (!rc)
        rc = sql_exec(tx, "UPDATE social_posts SET comment_count = comment_count + 1 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(post_id)), &n, err);
    if (!rc && n == 0)
        rc = err_set(err, PL_ENOTFOUND, NULL, "no such post");
    if (rc)
        return rc;
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s}", "comment_id", id_out, "post_id", post_id,
                          "post_author_id", post_author, "author_id", author, "text", text, "peer_review",
                          peer_review, "created_at", now);
    json_object_set_new(d, "parent_id", parent_id ? json_string(parent_id) : json_null());
    json_object_set_new(d, "parent_author_id", parent_author ? json_string(parent_author) : json_null());
    return outbox_emit(tx, SVC, "pl.social.comment_created.v1", id_out, post_id, d, NULL, err);
}

/* ---- posts -------------------------------------------------------------------------------- */

/* The post as the caller sees it after a write in the same transaction. */
static int respond_post(http_req *req, http_res *res, sql_tx *tx, const char *id, int status)
{
    pl_error err = {0};
    json_t *p = NULL;
    int rc = social_get(tx, POST_SELECT " WHERE p.id = $2", SQL_ARGS(SQL_TEXT(req->principal->user_id), SQL_TEXT(id)),
                        post_row, NULL, &p, &err);
    if (rc < 0) {
        sql_rollback(tx);
        return social_store_fail(req, rc, &err);
    }
    if (rc == 0) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such post");
    }
    if ((rc = sql_commit(tx, &err))) {
        json_decref(p);
        return social_store_fail(req, rc, &err);
    }
    http_json(res, status, p);
    return 0;
}

/* A key's fingerprint of the request: a reuse of the key with another body is refused. */
static void request_hash(const char *text, const char *course, const char *vis, char out[65])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    const char *parts[] = {text, course ? course : "", vis};
    for (size_t i = 0; i < 3; i++)
        crypto_hash_sha256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof h);
}

typedef struct idem_row {
    char request[65], post_id[40];
} idem_row;

static void read_idem(void *ud, sql_rows *r)
{
    idem_row *k = ud;
    snprintf(k->request, sizeof k->request, "%s", sql_text(r, 0));
    snprintf(k->post_id, sizeof k->post_id, "%s", sql_text(r, 1));
}

static bool idem_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 200)
        return false;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return false;
    return true;
}

int social_posts_create(http_req *req, http_res *res)
{
    social *s = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"text", "course_id", "visibility", NULL};
    const char *key = http_header_get(req, "Idempotency-Key");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *text = jv_str(&v, "text", true, 0, SOCIAL_POST_MAX * 8);
    const char *course = jv_str(&v, "course_id", false, 0, 64);
    const char *vis = jv_str(&v, "visibility", false, 0, 32);
    const char *why;
    if (text && (why = social_check_text(text, SOCIAL_POST_MAX)))
        jv_fail(&v, "text", why);
    if (course && !uuid_valid(course))
        jv_fail(&v, "course_id", "must be a course id (UUID) or null");
    if (vis && (why = social_check_visibility(vis)))
        jv_fail(&v, "visibility", why);
    if (key && !idem_key_ok(key))
        jv_fail(&v, "Idempotency-Key", "must be 1 to 200 printable ASCII characters");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    social_post p = {.author_id = req->principal->user_id,
                     .text = arena_strdup(req->arena, text),
                     .course_id = course ? arena_strdup(req->arena, course) : NULL,
                     .visibility = arena_strdup(req->arena, vis ? vis : "public")};
    jv_free(&v);
    json_decref(body);
    if (p.course_id)
        for (char *c = (char *)p.course_id; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    char hash[65];
    request_hash(p.text, p.course_id, p.visibility, hash);
    int64_t now_ms = time_now_ms();

    pl_error err = {0};
    /* Two tries: on PostgreSQL a concurrent retry with the same key loses the
     * insert race (conflict) and the second try finds the winner's post. */
    for (int attempt = 0; attempt < 2; attempt++) {
        sql_tx *tx;
        if ((rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, &tx, &err)))
            return social_store_fail(req, rc, &err);
        if (key) {
            idem_row k = {0};
            rc = sql_one(tx,
                         "SELECT request, post_id FROM social_idempotency WHERE user_id = $1 AND key = $2"
                         " AND created_ms > $3",
                         SQL_ARGS(SQL_TEXT(p.author_id), SQL_TEXT(key), SQL_INT(now_ms - s->idem_ttl_ms)), read_idem,
                         &k, &err);
            if (rc < 0) {
                sql_rollback(tx);
                return social_store_fail(req, rc, &err);
            }
            if (rc == 1) {
                if (strcmp(k.request, hash) != 0) {
                    sql_rollback(tx);
                    return http_fail(req, PL_EUNPROCESSABLE,
                                     json_pack("{s:s}", "Idempotency-Key", "was used for a different request"),
                                     "this Idempotency-Key was already used with another body");
                }
                rc = respond_post(req, res, tx, k.post_id, 200);
                if (rc == PL_ENOTFOUND)
                    return http_fail(req, PL_ECONFLICT,
                                     json_pack("{s:s}", "Idempotency-Key", "its post has since been deleted"),
                                     "the post created with this Idempotency-Key has been deleted");
                return rc;
            }
            /* an expired key may be reused */
            rc = sql_exec(tx, "DELETE FROM social_idempotency WHERE user_id = $1 AND key = $2",
                          SQL_ARGS(SQL_TEXT(p.author_id), SQL_TEXT(key)), NULL, &err);
        }
        if (!rc)
            rc = social_post_insert(tx, &p, &err);
        if (!rc && key)
            rc = sql_exec(tx,
                          "INSERT INTO social_idempotency (user_id, key, request, post_id, created_ms)"
                          " VALUES ($1, $2, $3, $4, $5)",
                          SQL_ARGS(SQL_TEXT(p.author_id), SQL_TEXT(key), SQL_TEXT(hash), SQL_TEXT(p.id),
                                   SQL_INT(now_ms)),
                          NULL, &err);
        if (!rc && (atomic_fetch_add(&s->creates, 1) & 63) == 0)
            rc = sql_exec(tx, "DELETE FROM social_idempotency WHERE created_ms <= $1",
                          SQL_ARGS(SQL_INT(now_ms - s->idem_ttl_ms)), NULL, &err);
        if (rc == PL_ECONFLICT && key && attempt == 0) {
            sql_rollback(tx);
            continue;
        }
        if (rc) {
            sql_rollback(tx);
            return social_store_fail(req, rc, &err);
        }
        http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/posts/%s", p.id));
        return respond_post(req, res, tx, p.id, 201);
    }
    return http_fail(req, PL_ECONFLICT, NULL, "a concurrent request with this Idempotency-Key is in progress");
}

int social_post_get(http_req *req, http_res *res)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *id = social_id_param(req, "id", "post");
    if (!id)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    json_t *p = NULL;
    int rc = sql_begin(s->ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    rc = post_load(tx, req, id, &p, &err);
    sql_rollback(tx);
    if (rc < 0)
        return social_store_fail(req, rc, &err);
    if (rc == 0)
        return http_fail(req, PL_ENOTFOUND, NULL, "no such post");
    http_json(res, 200, p);
    return 0;
}

/* Opens a write transaction on a post the caller may change (author or
 * admin): 0 with *tx and *post set, or the recorded error (404 when the
 * caller may not even see it, 403 when they may see but not change it). */
static int post_for_write(http_req *req, const char *id, sql_tx **tx, json_t **post)
{
    social *s = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    int rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    /* lock the row first (PostgreSQL) so the checks below hold until commit */
    rc = sql_exec(*tx, "UPDATE social_posts SET like_count = like_count WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), NULL,
                  &err);
    if (!rc)
        rc = post_load(*tx, req, id, post, &err);
    if (rc <= 0) {
        sql_rollback(*tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such post");
    }
    if (strcmp(jstr(*post, "author_id"), req->principal->user_id) != 0 && !social_is_admin(req)) {
        sql_rollback(*tx);
        json_decref(*post);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the author or an admin may change this post");
    }
    return 0;
}

int social_post_patch(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"text", "course_id", "visibility", NULL};
    const char *id = social_id_param(req, "id", "post");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *text = jv_str(&v, "text", false, 0, SOCIAL_POST_MAX * 8);
    const char *course = jv_str(&v, "course_id", false, 0, 64);
    bool course_given = json_object_get(body, "course_id") != NULL; /* null clears it */
    const char *vis = jv_str(&v, "visibility", false, 0, 32);
    const char *why;
    if (text && (why = social_check_text(text, SOCIAL_POST_MAX)))
        jv_fail(&v, "text", why);
    if (course && !uuid_valid(course))
        jv_fail(&v, "course_id", "must be a course id (UUID) or null");
    if (vis && (why = social_check_visibility(vis)))
        jv_fail(&v, "visibility", why);
    /* only course_id may be null (it clears the tag): a post always has text and a visibility */
    if (json_is_null(json_object_get(body, "text")))
        jv_fail(&v, "text", "cannot be null");
    if (json_is_null(json_object_get(body, "visibility")))
        jv_fail(&v, "visibility", "cannot be null");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    text = text ? arena_strdup(req->arena, text) : NULL;
    char *course_l = course ? arena_strdup(req->arena, course) : NULL;
    for (char *c = course_l; c && *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    vis = vis ? arena_strdup(req->arena, vis) : NULL;
    jv_free(&v);
    json_decref(body);
    if (!id)
        return PL_ENOTFOUND;

    sql_tx *tx;
    json_t *post;
    if ((rc = post_for_write(req, id, &tx, &post)))
        return rc;
    const char *old_course = jstr(post, "course_id");
    const char *n_text = text ? text : arena_strdup(req->arena, jstr(post, "text"));
    const char *n_course = course_given ? course_l : (old_course ? arena_strdup(req->arena, old_course) : NULL);
    const char *n_vis = vis ? vis : arena_strdup(req->arena, jstr(post, "visibility"));
    const char *author = arena_strdup(req->arena, jstr(post, "author_id"));
    bool changed = strcmp(n_text, jstr(post, "text")) != 0 || strcmp(n_vis, jstr(post, "visibility")) != 0 ||
                   (n_course == NULL) != (old_course == NULL) || (n_course && strcmp(n_course, old_course) != 0);
    json_decref(post);
    pl_error err = {0};
    if (changed) {
        char now[32];
        social_now(now);
        rc = sql_exec(tx, "UPDATE social_posts SET text = $2, course_id = $3, visibility = $4, updated_at = $5 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(n_text), SQL_TEXT_OR_NULL(n_course), SQL_TEXT(n_vis),
                               SQL_TEXT(now)),
                      NULL, &err);
        if (!rc)
            rc = outbox_emit(tx, SVC, "pl.social.post_updated.v1", id, author,
                             post_event_data(id, author, n_text, n_course, n_vis, "updated_at", now), NULL, &err);
        if (rc) {
            sql_rollback(tx);
            return social_store_fail(req, rc, &err);
        }
    }
    return respond_post(req, res, tx, id, 200);
}

int social_post_delete(http_req *req, http_res *res)
{
    const char *id = social_id_param(req, "id", "post");
    if (!id)
        return PL_ENOTFOUND;
    sql_tx *tx;
    json_t *post;
    int rc = post_for_write(req, id, &tx, &post);
    if (rc)
        return rc;
    char now[32];
    social_now(now);
    pl_error err = {0};
    const char *author = arena_strdup(req->arena, jstr(post, "author_id"));
    json_decref(post);
    /* hard delete; its comments and likes go with it (keys stay: a retry of
     * the create answers 409 instead of creating the post again) */
    rc = sql_exec(tx, "DELETE FROM social_comments WHERE post_id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = sql_exec(tx, "DELETE FROM social_likes WHERE post_id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = sql_exec(tx, "DELETE FROM social_posts WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = outbox_emit(tx, SVC, "pl.social.post_deleted.v1", id, author,
                         json_pack("{s:s, s:s, s:s, s:s}", "post_id", id, "author_id", author, "deleted_by",
                                   req->principal->user_id, "deleted_at", now),
                         NULL, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}

int social_user_posts(http_req *req, http_res *res)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *uid = social_id_param(req, "id", "user");
    long limit;
    const char *cursor;
    int rc = social_page(req, &limit, &cursor);
    if (rc)
        return rc;
    if (!uid)
        return PL_ENOTFOUND;
    const char *viewer = req->principal->user_id;
    pl_error err = {0};
    sql_tx *tx;
    if ((rc = sql_begin(s->ctx->sql, SQL_TX_READ, &tx, &err)))
        return social_store_fail(req, rc, &err);
    if ((rc = social_user_known(tx, uid, &err)) <= 0) {
        sql_rollback(tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    }
    int all = strcmp(uid, viewer) == 0 || social_is_admin(req);
    if (!all && (all = social_follows(tx, viewer, uid, &err)) < 0) {
        sql_rollback(tx);
        return social_store_fail(req, all, &err);
    }
    json_t *out = NULL;
    /* One statement per shape, no "$n = '' OR ..." tricks: a prepared statement's
     * generic plan on PostgreSQL must still walk (author_id, id) backwards. */
    const char *vis = all ? "followers" : "public";
    /* The page is chosen first (inner query) and only its rows get liked_by_me and
     * the author's name: whatever plan the engine picks, the per-row subquery
     * runs `limit` times, not once per post of the author. */
    if (*cursor)
        rc = social_list(tx,
                         arena_sprintf(req->arena,
                                       POST_PAGE("p.author_id = $2 AND p.visibility IN ('public', $3) AND p.id < $4"),
                                       limit),
                         SQL_ARGS(SQL_TEXT(viewer), SQL_TEXT(uid), SQL_TEXT(vis), SQL_TEXT(cursor)), limit, 0,
                         post_row, NULL, &out, &err);
    else
        rc = social_list(tx,
                         arena_sprintf(req->arena, POST_PAGE("p.author_id = $2 AND p.visibility IN ('public', $3)"),
                                       limit),
                         SQL_ARGS(SQL_TEXT(viewer), SQL_TEXT(uid), SQL_TEXT(vis)), limit, 0, post_row, NULL, &out,
                         &err);
    sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}

/* ---- likes -------------------------------------------------------------------------------- */

static int like_change(http_req *req, http_res *res, bool like)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *id = social_id_param(req, "id", "post");
    if (!id)
        return PL_ENOTFOUND;
    const char *me = req->principal->user_id;
    pl_error err = {0};
    sql_tx *tx;
    json_t *post = NULL;
    int rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    rc = post_load(tx, req, id, &post, &err);
    if (rc <= 0) {
        sql_rollback(tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such post");
    }
    const char *author = arena_strdup(req->arena, jstr(post, "author_id"));
    json_decref(post);
    if (like) {
        rc = social_like_put(tx, id, author, me, &err);
    } else {
        int64_t n = 0;
        char now[32];
        social_now(now);
        rc = sql_exec(tx, "DELETE FROM social_likes WHERE post_id = $1 AND user_id = $2",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(me)), &n, &err);
        if (!rc && n > 0)
            rc = sql_exec(tx, "UPDATE social_posts SET like_count = like_count - 1 WHERE id = $1",
                          SQL_ARGS(SQL_TEXT(id)), NULL, &err);
        if (!rc && n > 0)
            rc = outbox_emit(tx, SVC, "pl.social.post_unliked.v1", id, id,
                             json_pack("{s:s, s:s, s:s, s:s}", "post_id", id, "post_author_id", author, "user_id", me,
                                       "unliked_at", now),
                             NULL, &err);
    }
    if (rc < 0) {
        sql_rollback(tx);
        return rc == PL_ENOTFOUND ? http_fail(req, rc, NULL, "no such post") : social_store_fail(req, rc, &err);
    }
    return respond_post(req, res, tx, id, 200);
}

int social_like(http_req *req, http_res *res) { return like_change(req, res, true); }
int social_unlike(http_req *req, http_res *res) { return like_change(req, res, false); }

/* ---- comments ------------------------------------------------------------------------------- */

#define COMMENT_SELECT                                                                                      \
    "SELECT c.id, c.post_id, c.author_id, c.parent_id, c.text, c.peer_review, c.created_at, c.updated_at," \
    " u.username FROM social_comments c LEFT JOIN social_users u ON u.user_id = c.author_id"

static json_t *comment_row(sql_rows *r, void *ud)
{
    (void)ud;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s}", "id", sql_text(r, 0), "post_id", sql_text(r, 1),
                          "author_id", sql_text(r, 2), "text", sql_text(r, 4), "peer_review", sql_int(r, 5) != 0,
                          "created_at", sql_text(r, 6), "updated_at", sql_text(r, 7));
    json_object_set_new(j, "parent_id", sql_text(r, 3) ? json_string(sql_text(r, 3)) : json_null());
    json_object_set_new(j, "author_username", sql_text(r, 8) ? json_string(sql_text(r, 8)) : json_null());
    return j;
}

int social_comments_list(http_req *req, http_res *res)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *id = social_id_param(req, "id", "post");
    long limit;
    const char *cursor;
    int rc = social_page(req, &limit, &cursor);
    if (rc)
        return rc;
    if (!id)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    json_t *post = NULL, *out = NULL;
    if ((rc = sql_begin(s->ctx->sql, SQL_TX_READ, &tx, &err)))
        return social_store_fail(req, rc, &err);
    rc = post_load(tx, req, id, &post, &err);
    json_decref(post);
    if (rc == 1 && *cursor)
        rc = social_list(tx, COMMENT_SELECT " WHERE c.post_id = $1 AND c.id > $2 ORDER BY c.id LIMIT $3",
                         SQL_ARGS(SQL_TEXT(id), SQL_TEXT(cursor), SQL_INT(limit)), limit, 0, comment_row, NULL, &out,
                         &err);
    else if (rc == 1)
        rc = social_list(tx, COMMENT_SELECT " WHERE c.post_id = $1 ORDER BY c.id LIMIT $2",
                         SQL_ARGS(SQL_TEXT(id), SQL_INT(limit)), limit, 0, comment_row, NULL, &out, &err);
    else if (rc == 0)
        rc = PL_ENOTFOUND;
    sql_rollback(tx);
    if (rc == PL_ENOTFOUND)
        return http_fail(req, rc, NULL, "no such post");
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}

int social_comments_create(http_req *req, http_res *res)
{
    social *s = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"text", "parent_id", "peer_review", NULL};
    const char *id = social_id_param(req, "id", "post");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *text = jv_str(&v, "text", true, 0, SOCIAL_COMMENT_MAX * 8);
    const char *parent = jv_str(&v, "parent_id", false, 0, 64);
    bool peer = false;
    jv_bool(&v, "peer_review", false, &peer);
    const char *why;
    if (text && (why = social_check_text(text, SOCIAL_COMMENT_MAX)))
        jv_fail(&v, "text", strcmp(why, "is too long") == 0 ? "must be at most 2000 characters" : why);
    if (parent && !uuid_valid(parent))
        jv_fail(&v, "parent_id", "must be a comment id (UUID) or null");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    text = arena_strdup(req->arena, text);
    char *parent_l = parent ? arena_strdup(req->arena, parent) : NULL;
    for (char *c = parent_l; c && *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    jv_free(&v);
    json_decref(body);
    if (!id)
        return PL_ENOTFOUND;

    pl_error err = {0};
    sql_tx *tx;
    json_t *post = NULL, *par = NULL;
    if ((rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return social_store_fail(req, rc, &err);
    /* Lock the post's row first (PostgreSQL): a concurrent delete of the
     * parent comment (which locks it too) then cannot leave this reply behind. */
    rc = sql_exec(tx, "UPDATE social_posts SET comment_count = comment_count WHERE id = $1", SQL_ARGS(SQL_TEXT(id)),
                  NULL, &err);
    if (!rc)
        rc = post_load(tx, req, id, &post, &err);
    if (rc <= 0) {
        sql_rollback(tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such post");
    }
    const char *post_author = arena_strdup(req->arena, jstr(post, "author_id"));
    json_decref(post);
    const char *parent_author = NULL;
    if (parent_l) {
        rc = social_get(tx, COMMENT_SELECT " WHERE c.id = $1", SQL_ARGS(SQL_TEXT(parent_l)), comment_row, NULL, &par,
                        &err);
        if (rc < 0) {
            sql_rollback(tx);
            return social_store_fail(req, rc, &err);
        }
        const char *fail = rc == 0 || strcmp(jstr(par, "post_id"), id) != 0 ? "is not a comment of this post"
                           : !json_is_null(json_object_get(par, "parent_id"))
                               ? "is a reply; replies go to top-level comments only"
                               : NULL;
        if (fail) {
            json_decref(par);
            sql_rollback(tx);
            return http_fail(req, PL_EUNPROCESSABLE, json_pack("{s:s}", "parent_id", fail), "invalid parent comment");
        }
        parent_author = arena_strdup(req->arena, jstr(par, "author_id"));
        json_decref(par);
    }
    char cid[40];
    rc = social_comment_insert(tx, id, post_author, req->principal->user_id, parent_l, parent_author, text, peer, cid,
                               &err);
    json_t *c = NULL;
    if (!rc && (rc = social_get(tx, COMMENT_SELECT " WHERE c.id = $1", SQL_ARGS(SQL_TEXT(cid)), comment_row, NULL, &c,
                                &err)) == 1)
        rc = 0;
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(c);
        return rc == PL_ENOTFOUND ? http_fail(req, rc, NULL, "no such post") : social_store_fail(req, rc, &err);
    }
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/comments/%s", cid));
    http_json(res, 201, c);
    return 0;
}

/* Opens a write transaction on a comment: *c the comment, *post_author its
 * post's author; 404 when the caller cannot see the post; 0 or the recorded error. */
static int comment_for_write(http_req *req, const char *id, sql_tx **tx, json_t **c, const char **post_author)
{
    social *s = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    json_t *post = NULL;
    int rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    /* the post's row lock orders this against replies being added (see comments_create) */
    rc = sql_exec(*tx,
                  "UPDATE social_posts SET comment_count = comment_count"
                  " WHERE id = (SELECT post_id FROM social_comments WHERE id = $1)",
                  SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = social_get(*tx, COMMENT_SELECT " WHERE c.id = $1", SQL_ARGS(SQL_TEXT(id)), comment_row, NULL, c, &err);
    if (rc == 1) {
        rc = post_load(*tx, req, jstr(*c, "post_id"), &post, &err);
        if (rc != 1)
            json_decref(*c);
    }
    if (rc <= 0) {
        sql_rollback(*tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such comment");
    }
    *post_author = arena_strdup(req->arena, jstr(post, "author_id"));
    json_decref(post);
    return 0;
}

int social_comment_patch(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"text", "peer_review", NULL};
    const char *id = social_id_param(req, "id", "comment");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *text = jv_str(&v, "text", false, 0, SOCIAL_COMMENT_MAX * 8);
    bool peer = false, peer_given = jv_bool(&v, "peer_review", false, &peer);
    const char *why;
    if (text && (why = social_check_text(text, SOCIAL_COMMENT_MAX)))
        jv_fail(&v, "text", strcmp(why, "is too long") == 0 ? "must be at most 2000 characters" : why);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    text = text ? arena_strdup(req->arena, text) : NULL;
    jv_free(&v);
    json_decref(body);
    if (!id)
        return PL_ENOTFOUND;
    sql_tx *tx;
    json_t *c;
    const char *post_author;
    if ((rc = comment_for_write(req, id, &tx, &c, &post_author)))
        return rc;
    if (strcmp(jstr(c, "author_id"), req->principal->user_id) != 0 && !social_is_admin(req)) {
        json_decref(c);
        sql_rollback(tx);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the author or an admin may edit this comment");
    }
    const char *n_text = text ? text : arena_strdup(req->arena, jstr(c, "text"));
    bool old_peer = json_is_true(json_object_get(c, "peer_review")), n_peer = peer_given ? peer : old_peer;
    bool changed = strcmp(n_text, jstr(c, "text")) != 0 || n_peer != old_peer;
    const char *post_id = arena_strdup(req->arena, jstr(c, "post_id"));
    const char *author = arena_strdup(req->arena, jstr(c, "author_id"));
    json_decref(c);
    c = NULL;
    pl_error err = {0};
    if (changed) {
        char now[32];
        social_now(now);
        rc = sql_exec(tx, "UPDATE social_comments SET text = $2, peer_review = $3, updated_at = $4 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(n_text), SQL_INT(n_peer ? 1 : 0), SQL_TEXT(now)), NULL, &err);
        if (!rc)
            rc = outbox_emit(tx, SVC, "pl.social.comment_updated.v1", id, post_id,
                             json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "comment_id", id, "post_id", post_id,
                                       "author_id", author, "text", n_text, "peer_review", n_peer, "updated_at", now),
                             NULL, &err);
    }
    if (!rc && (rc = social_get(tx, COMMENT_SELECT " WHERE c.id = $1", SQL_ARGS(SQL_TEXT(id)), comment_row, NULL, &c,
                                &err)) == 1)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(c);
        return social_store_fail(req, rc, &err);
    }
    http_json(res, 200, c);
    return 0;
}

int social_comment_delete(http_req *req, http_res *res)
{
    const char *id = social_id_param(req, "id", "comment");
    if (!id)
        return PL_ENOTFOUND;
    sql_tx *tx;
    json_t *c;
    const char *post_author;
    int rc = comment_for_write(req, id, &tx, &c, &post_author);
    if (rc)
        return rc;
    const char *me = req->principal->user_id;
    /* the post's author moderates the comments under it */
    if (strcmp(jstr(c, "author_id"), me) != 0 && strcmp(post_author, me) != 0 && !social_is_admin(req)) {
        json_decref(c);
        sql_rollback(tx);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the author, the post's author or an admin may delete this comment");
    }
    const char *post_id = arena_strdup(req->arena, jstr(c, "post_id"));
    json_decref(c);
    char now[32];
    social_now(now);
    pl_error err = {0};
    /* the comment and its replies: one event each, so every reader drops each */
    sql_rows *r;
    typedef struct { char id[40], author[40]; } gone;
    gone *g = NULL;
    size_t n = 0, cap = 0;
    rc = sql_query(tx, "SELECT id, author_id FROM social_comments WHERE id = $1 OR parent_id = $1 ORDER BY id",
                   SQL_ARGS(SQL_TEXT(id)), &r, &err);
    if (!rc) {
        int more;
        while ((more = sql_next(r, &err)) == 1) {
            if (n == cap) { /* a comment has few replies: doubling in the arena is fine */
                cap = cap ? cap * 2 : 8;
                gone *bigger = arena_alloc(req->arena, cap * sizeof *g);
                if (n)
                    memcpy(bigger, g, n * sizeof *g);
                g = bigger;
            }
            snprintf(g[n].id, sizeof g[n].id, "%s", sql_text(r, 0));
            snprintf(g[n].author, sizeof g[n].author, "%s", sql_text(r, 1));
            n++;
        }
        rc = more < 0 ? more : 0;
        sql_rows_close(r);
    }
    if (!rc)
        rc = sql_exec(tx, "DELETE FROM social_comments WHERE id = $1 OR parent_id = $1", SQL_ARGS(SQL_TEXT(id)), NULL,
                      &err);
    if (!rc)
        rc = sql_exec(tx, "UPDATE social_posts SET comment_count = comment_count - $2 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(post_id), SQL_INT(n)), NULL, &err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = outbox_emit(tx, SVC, "pl.social.comment_deleted.v1", g[i].id, post_id,
                         json_pack("{s:s, s:s, s:s, s:s, s:s}", "comment_id", g[i].id, "post_id", post_id, "author_id",
                                   g[i].author, "deleted_by", me, "deleted_at", now),
                         NULL, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}

/* ---- follows ---------------------------------------------------------------------------------- */

static int follow_change(http_req *req, http_res *res, bool follow)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *uid = social_id_param(req, "id", "user");
    if (!uid)
        return PL_ENOTFOUND;
    const char *me = req->principal->user_id;
    if (strcmp(uid, me) == 0)
        return http_fail(req, PL_EUNPROCESSABLE, json_pack("{s:s}", "id", "is yourself"), "you cannot follow yourself");
    pl_error err = {0};
    sql_tx *tx;
    int rc = sql_begin(s->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    /* Users are known from identity's events: one registered a moment ago
     * is 404 until the projection has applied its user_registered. */
    rc = social_user_known(tx, uid, &err);
    if (rc == 0) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    }
    bool now_following = follow;
    if (rc == 1 && follow) {
        rc = social_follow_put(tx, me, uid, &err);
    } else if (rc == 1) {
        int64_t n = 0;
        char now[32];
        social_now(now);
        rc = sql_exec(tx, "DELETE FROM social_follows WHERE follower_id = $1 AND followee_id = $2",
                      SQL_ARGS(SQL_TEXT(me), SQL_TEXT(uid)), &n, &err);
        if (!rc && n > 0)
            rc = outbox_emit(tx, SVC, "pl.social.user_unfollowed.v1", uid, me,
                             json_pack("{s:s, s:s, s:s}", "follower_id", me, "followee_id", uid, "unfollowed_at", now),
                             NULL, &err);
    }
    if (rc >= 0)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, json_pack("{s:s, s:s, s:b}", "follower_id", me, "followee_id", uid, "following", now_following));
    return 0;
}

int social_follow(http_req *req, http_res *res) { return follow_change(req, res, true); }
int social_unfollow(http_req *req, http_res *res) { return follow_change(req, res, false); }

static json_t *follow_row(sql_rows *r, void *ud)
{
    (void)ud;
    json_t *j = json_pack("{s:s, s:s}", "user_id", sql_text(r, 1), "followed_at", sql_text(r, 2));
    json_object_set_new(j, "username", sql_text(r, 3) ? json_string(sql_text(r, 3)) : json_null());
    json_object_set_new(j, "display_name", sql_text(r, 4) ? json_string(sql_text(r, 4)) : json_null());
    return j;
}

static int follow_list(http_req *req, http_res *res, bool followers)
{
    social *s = ((service_ctx *)req->ctx)->state;
    const char *uid = social_id_param(req, "id", "user");
    long limit;
    const char *cursor;
    int rc = social_page(req, &limit, &cursor);
    if (rc)
        return rc;
    if (!uid)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    json_t *out = NULL;
    if ((rc = sql_begin(s->ctx->sql, SQL_TX_READ, &tx, &err)))
        return social_store_fail(req, rc, &err);
    if ((rc = social_user_known(tx, uid, &err)) <= 0) {
        sql_rollback(tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    }
    /* who: the other side of the follow; me: the user whose list it is */
    const char *who = followers ? "follower_id" : "followee_id", *me = followers ? "followee_id" : "follower_id";
    if (*cursor)
        rc = social_list(tx,
                         arena_sprintf(req->arena,
                                       "SELECT f.id, f.%s, f.created_at, u.username, u.display_name FROM social_follows f"
                                       " LEFT JOIN social_users u ON u.user_id = f.%s WHERE f.%s = $1 AND f.id < $2"
                                       " ORDER BY f.id DESC LIMIT $3",
                                       who, who, me),
                         SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(cursor), SQL_INT(limit)), limit, 0, follow_row, NULL, &out,
                         &err);
    else
        rc = social_list(tx,
                         arena_sprintf(req->arena,
                                       "SELECT f.id, f.%s, f.created_at, u.username, u.display_name FROM social_follows f"
                                       " LEFT JOIN social_users u ON u.user_id = f.%s WHERE f.%s = $1"
                                       " ORDER BY f.id DESC LIMIT $2",
                                       who, who, me),
                         SQL_ARGS(SQL_TEXT(uid), SQL_INT(limit)), limit, 0, follow_row, NULL, &out, &err);
    sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}

int social_followers(http_req *req, http_res *res) { return follow_list(req, res, true); }
int social_following(http_req *req, http_res *res) { return follow_list(req, res, false); }
