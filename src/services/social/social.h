/*
 * social.h - the social service's internals shared by its files: posts,
 * comments, likes and follows (posts.c), campus events and RSVPs (campus.c),
 * the service declaration, users projection and demo data (social.c).
 * Not for other services (service.h rules).
 */
#ifndef PULSE_SOCIAL_SOCIAL_H
#define PULSE_SOCIAL_SOCIAL_H

#include "core/json.h"
#include "services/service.h"
#include "services/social/domain.h"

#include <stdatomic.h>

typedef struct social {
    service_ctx *ctx;
    int64_t idem_ttl_ms;       /* how long an Idempotency-Key is remembered */
    atomic_uint creates;       /* posts created since start: every 64th sweeps old keys */
} social;

/* ---- shared helpers (social.c) --------------------------------------------------------- */

/* A store failure as the HTTP error (conflict, unavailable pass through). */
int social_store_fail(http_req *req, int rc, const pl_error *err);
/* ?limit= (1..SOCIAL_PAGE_MAX) and ?cursor= (an id from the previous page, or
 * absent: *cursor ""). 0, or the recorded 400. */
int social_page(http_req *req, long *limit, const char **cursor);
/* A {id} path parameter that must be a UUID; NULL (404 recorded) otherwise. The
 * result is lower-cased in the request's arena. */
const char *social_id_param(http_req *req, const char *name, const char *what);
bool social_is_admin(const http_req *req);
/* 1 when the projection knows the user, 0 when not, <0 error. */
int social_user_known(sql_tx *tx, const char *uid, pl_error *err);
/* 1 when follower follows followee, 0 when not, <0 error. */
int social_follows(sql_tx *tx, const char *follower, const char *followee, pl_error *err);
/* Runs a paged query and turns each row into an item with `row`; sets
 * items and next_cursor (the cursor of the last row when the page is full).
 * `cursor_col` is the column holding each row's cursor. */
int social_list(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, long limit, int cursor_col,
                json_t *(*row)(sql_rows *r, void *ud), void *ud, json_t **body, pl_error *err);
/* Runs a query expected to return at most one row and makes it JSON with
 * `row`: 1 found (*out set), 0 none, <0 error. */
int social_get(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, json_t *(*row)(sql_rows *r, void *ud),
               void *ud, json_t **out, pl_error *err);
/* An "event time": now in RFC 3339 ms. */
void social_now(char out[32]);

/* ---- writes usable from handlers and the demo seeder (posts.c, campus.c) ------------------ */

typedef struct social_post {
    char id[40];
    const char *author_id, *text, *course_id, *visibility;
    char created_at[32];
} social_post;

int social_post_insert(sql_tx *tx, social_post *p, pl_error *err);
/* 1 new like, 0 already liked, <0 error (PL_ENOTFOUND: no such post). */
int social_like_put(sql_tx *tx, const char *post_id, const char *post_author, const char *user_id, pl_error *err);
/* 1 new follow, 0 already following, <0 error. */
int social_follow_put(sql_tx *tx, const char *follower, const char *followee, pl_error *err);
int social_comment_insert(sql_tx *tx, const char *post_id, const char *post_author, const char *author,
                          const char *parent_id, const char *parent_author, const char *text, bool peer_review,
                          char id_out[40], pl_error *err);
int social_campus_insert(sql_tx *tx, const char *organizer, const char *title, const char *description,
                         const char *location, int64_t starts_ms, int64_t ends_ms, int64_t capacity, char id_out[40],
                         pl_error *err);
/* Applies an RSVP: 0 changed or unchanged (*outcome says), <0 error. */
int social_rsvp_apply(sql_tx *tx, const char *event_id, const char *user_id, rsvp_status want, rsvp_outcome *outcome,
                      json_t **rsvp_out, pl_error *err);

/* ---- handlers -------------------------------------------------------------------------------- */

int social_posts_create(http_req *req, http_res *res);
int social_post_get(http_req *req, http_res *res);
int social_post_patch(http_req *req, http_res *res);
int social_post_delete(http_req *req, http_res *res);
int social_user_posts(http_req *req, http_res *res);
int social_like(http_req *req, http_res *res);
int social_unlike(http_req *req, http_res *res);
int social_comments_list(http_req *req, http_res *res);
int social_comments_create(http_req *req, http_res *res);
int social_comment_patch(http_req *req, http_res *res);
int social_comment_delete(http_req *req, http_res *res);
int social_follow(http_req *req, http_res *res);
int social_unfollow(http_req *req, http_res *res);
int social_followers(http_req *req, http_res *res);
int social_following(http_req *req, http_res *res);
int social_campus_list(http_req *req, http_res *res);
int social_campus_create(http_req *req, http_res *res);
int social_campus_get(http_req *req, http_res *res);
int social_campus_patch(http_req *req, http_res *res);
int social_campus_delete(http_req *req, http_res *res);
int social_rsvp(http_req *req, http_res *res);
int social_attendees(http_req *req, http_res *res);

#endif
