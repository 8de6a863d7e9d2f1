/*
 * social.c - the social service: posts, comments, likes, follows and campus
 * events with RSVPs. Declares the service (store, config keys, routes,
 * consumers), the helpers its handlers share, the users projection built
 * from identity's events, and the demo data.
 *
 * Social never reads identity's store: which users exist it learns from
 * pl.identity.user_registered.v1 through its own projection (social_users).
 */
#include "bus/outbox.h"
#include "core/cursor.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/social/social.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_key social_keys[] = {
    {"service.social", "idempotency_ttl", CFG_DURATION, "24h", 60000, 30LL * 86400000,
     "how long an Idempotency-Key of POST /posts is remembered"},
};

/* ---- shared helpers --------------------------------------------------------------------- */

void social_now(char out[32]) { time_rfc3339(time_now_ms(), out, 32); }

bool social_is_admin(const http_req *req) { return strcmp(req->principal->role, "admin") == 0; }

int social_store_fail(http_req *req, int rc, const pl_error *err)
{
    return http_fail(req, rc, NULL, "%s", err->msg[0] ? err->msg : err_message(rc));
}

int social_page(http_req *req, long *limit, const char **cursor)
{
    const char *ls = http_query(req, "limit"), *cs = http_query(req, "cursor");
    char *end;
    *limit = SOCIAL_PAGE_DEFAULT;
    *cursor = "";
    if (ls) {
        errno = 0;
        *limit = strtol(ls, &end, 10);
        if (!*ls || *end || errno || *limit < 1 || *limit > SOCIAL_PAGE_MAX)
            return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 100"), "invalid query");
    }
    if (cs && *cs) {
        /* positions are ids, or "<ms>_<id>" for the campus-event list, sealed by social_list */
        char *pos = arena_alloc(req->arena, CURSOR_BODY_MAX + 1);
        if (cursor_open(cs, pos))
            return http_fail(req, PL_EINVAL, json_pack("{s:s}", "cursor", "is not a cursor from this list"),
                             "invalid query");
        *cursor = pos;
    }
    return 0;
}

const char *social_id_param(http_req *req, const char *name, const char *what)
{
    const char *id = http_param(req, name);
    if (!id || !uuid_valid(id)) {
        http_fail(req, PL_ENOTFOUND, NULL, "no such %s", what);
        return NULL;
    }
    char *l = arena_strdup(req->arena, id);
    for (char *c = l; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
    return l;
}

static int count_rows(sql_tx *tx, const char *sql, const char *a, const char *b, pl_error *err)
{
    sql_rows *r;
    int rc = b ? sql_query(tx, sql, SQL_ARGS(SQL_TEXT(a), SQL_TEXT(b)), &r, err)
               : sql_query(tx, sql, SQL_ARGS(SQL_TEXT(a)), &r, err);
    if (rc)
        return rc;
    rc = sql_next(r, err);
    sql_rows_close(r);
    return rc;
}

int social_user_known(sql_tx *tx, const char *uid, pl_error *err)
{
    return count_rows(tx, "SELECT 1 FROM social_users WHERE user_id = $1", uid, NULL, err);
}

int social_follows(sql_tx *tx, const char *follower, const char *followee, pl_error *err)
{
    return count_rows(tx, "SELECT 1 FROM social_follows WHERE follower_id = $1 AND followee_id = $2", follower,
                      followee, err);
}

int social_list(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, long limit, int cursor_col,
                json_t *(*row)(sql_rows *r, void *ud), void *ud, json_t **body, pl_error *err)
{
    sql_rows *r;
    int rc = sql_query(tx, sql, args, n, &r, err);
    if (rc)
        return rc;
    json_t *items = json_array();
    char last[96] = "";
    int more;
    while ((more = sql_next(r, err)) == 1) {
        json_array_append_new(items, row(r, ud));
        snprintf(last, sizeof last, "%s", sql_text(r, cursor_col) ? sql_text(r, cursor_col) : "");
    }
    sql_rows_close(r);
    if (more < 0) {
        json_decref(items);
        return more;
    }
    /* a full page says there may be more; the next page starts after its last row */
    bool full = (long)json_array_size(items) == limit;
    char token[CURSOR_TOKEN_MAX];
    if (full)
        cursor_seal(last, token);
    *body = json_pack("{s:o, s:o}", "items", items, "next_cursor", full ? json_string(token) : json_null());
    return 0;
}

int social_get(sql_tx *tx, const char *sql, const sql_arg *args, size_t n, json_t *(*row)(sql_rows *r, void *ud),
               void *ud, json_t **out, pl_error *err)
{
    sql_rows *r;
    int rc = sql_query(tx, sql, args, n, &r, err);
    if (rc)
        return rc;
    rc = sql_next(r, err);
    if (rc == 1)
        *out = row(r, ud);
    sql_rows_close(r);
    return rc;
}

/* ---- the users projection (and the demo data waiting for it) ---------------------------- */

typedef struct demo_user {
    char id[40];
} demo_user;

static void read_id(void *ud, sql_rows *r) { snprintf(((demo_user *)ud)->id, sizeof((demo_user *)ud)->id, "%s", sql_text(r, 0)); }

static void read_text(void *ud, sql_rows *r) { snprintf(ud, 16, "%s", sql_text(r, 0)); }

/* Seeds the demo posts, follows, likes, comments and a campus event once the
 * projection knows identity's demo users (ada, sam, lin): `pulse serve
 * --demo` asked for them (social_demo 'pending') before the users existed
 * here. Runs in the consumer's transaction, so the events go out with it. */
static int demo_seed(sql_tx *tx, pl_error *err)
{
    char state[16] = "";
    int rc = sql_one(tx, "SELECT state FROM social_demo WHERE id = 1", SQL_NOARGS, read_text, state, err);
    if (rc <= 0 || strcmp(state, "pending") != 0)
        return rc < 0 ? rc : 0;
    demo_user ada = {{0}}, sam = {{0}}, lin = {{0}};
    /* username and display name as identity's demo makes them: a real
     * account that merely shares a username does not get demo posts */
    struct { const char *name, *display; demo_user *u; } want[] = {
        {"ada", "Ada Lovelace", &ada}, {"sam", "Sam Student", &sam}, {"lin", "Lin Learner", &lin}};
    for (size_t i = 0; i < 3; i++) {
        rc = sql_one(tx, "SELECT user_id FROM social_users WHERE username = $1 AND display_name = $2",
                     SQL_ARGS(SQL_TEXT(want[i].name), SQL_TEXT(want[i].display)), read_id, want[i].u, err);
        if (rc <= 0)
            return rc; /* not all here yet: a later registration event tries again */
    }
    social_post p1 = {.author_id = ada.id,
                      .text = "Welcome to PulseLearn! Office hours for Intro to Algorithms are Thursday 14:00 in B201.",
                      .visibility = "public"};
    social_post p2 = {.author_id = ada.id, .text = "Draft slides for next week are up for my followers: feedback welcome.",
                      .visibility = "followers"};
    social_post p3 = {.author_id = sam.id, .text = "Anyone up for a study group before the quiz? \xF0\x9F\x93\x9A",
                      .visibility = "public"};
    char c1[40], c2[40], ev[40];
    int64_t start = (time_now_ms() / 3600000 + 48) * 3600000;
    rsvp_outcome o;
    json_t *j = NULL;
    if ((rc = social_follow_put(tx, sam.id, ada.id, err)) < 0 || (rc = social_follow_put(tx, lin.id, ada.id, err)) < 0 ||
        (rc = social_follow_put(tx, ada.id, sam.id, err)) < 0 || (rc = social_post_insert(tx, &p1, err)) ||
        (rc = social_post_insert(tx, &p2, err)) || (rc = social_post_insert(tx, &p3, err)) ||
        (rc = social_like_put(tx, p1.id, ada.id, sam.id, err)) < 0 ||
        (rc = social_like_put(tx, p1.id, ada.id, lin.id, err)) < 0 ||
        (rc = social_like_put(tx, p3.id, sam.id, lin.id, err)) < 0 ||
        (rc = social_comment_insert(tx, p1.id, ada.id, sam.id, NULL, NULL, "Will the session be recorded?", false, c1,
                                    err)) ||
        (rc = social_comment_insert(tx, p1.id, ada.id, ada.id, c1, sam.id, "Yes, slides and recording go up after.",
                                    false, c2, err)) ||
        (rc = social_campus_insert(tx, ada.id, "Algorithms study night", "Bring your questions about graphs and DP.",
                                   "Library, room 3", start, start + 2 * 3600000, 10, ev, err)) ||
        (rc = social_rsvp_apply(tx, ev, sam.id, RSVP_GOING, &o, &j, err)) ||
        (json_decref(j), j = NULL, rc = social_rsvp_apply(tx, ev, lin.id, RSVP_INTERESTED, &o, &j, err)))
        return rc;
    json_decref(j);
    return sql_exec(tx, "UPDATE social_demo SET state = 'done' WHERE id = 1", SQL_NOARGS, NULL, err);
}

static int users_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const json_t *d = ev->data;
    const char *uid = json_string_value(json_object_get(d, "user_id"));
    const char *username = json_string_value(json_object_get(d, "username"));
    const char *name = json_string_value(json_object_get(d, "display_name"));
    if (!uid || !uuid_valid(uid))
        return err_set(err, PL_EINVAL, "data", "%s without a valid data.user_id", ev->type);
    if (strcmp(ev->type, "pl.identity.user_registered.v1") == 0) {
        if (!username || !name)
            return err_set(err, PL_EINVAL, "data", "user_registered without username or display_name");
        int rc = sql_exec(tx,
                          "INSERT INTO social_users (user_id, username, display_name, registered_at)"
                          " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,"
                          " display_name = excluded.display_name",
                          SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(username), SQL_TEXT(name), SQL_TEXT(ev->time)), NULL, err);
        return rc ? rc : demo_seed(tx, err);
    }
    if (name) /* profile_updated */
        return sql_exec(tx, "UPDATE social_users SET display_name = $2 WHERE user_id = $1",
                        SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(name)), NULL, err);
    return 0;
}

static int users_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    (void)ctx;
    return sql_exec(tx, "DELETE FROM social_users", SQL_NOARGS, NULL, err);
}

static const char *const users_types[] = {"pl.identity.user_registered.v1", "pl.identity.profile_updated.v1", NULL};

static const consumer_def social_consumers[] = {
    {.name = "users", .types = users_types, .handle = users_handle, .reset = users_reset,
     .flags = CONSUMER_PROJECTION},
};

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int social_start(service_ctx *ctx, pl_error *err)
{
    (void)err;
    social *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->ctx = ctx;
    s->idem_ttl_ms = config_int(ctx->cfg, "service.social", "idempotency_ttl");
    atomic_init(&s->creates, 0);
    ctx->state = s;
    return 0;
}

static void social_stop(service_ctx *ctx)
{
    free(ctx->state);
    ctx->state = NULL;
}

/* Marks the demo data pending when social is empty; the users consumer seeds
 * it when identity's demo users reach the projection (see demo_seed). */
static int social_demo(service_ctx *ctx, void (*out)(const char *line), pl_error *err)
{
    sql_tx *tx;
    int rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    int64_t n = 0;
    rc = sql_exec(tx,
                  "INSERT INTO social_demo (id, state) SELECT 1, 'pending' WHERE NOT EXISTS (SELECT 1 FROM social_posts)"
                  " ON CONFLICT (id) DO NOTHING",
                  SQL_NOARGS, &n, err);
    if (!rc)
        rc = demo_seed(tx, err); /* the users may be known already */
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    if ((rc = sql_commit(tx, err)))
        return rc;
    if (n > 0)
        out("Social demo: posts by ada and sam, follows, likes, comments and a campus event (seeded as the demo users "
            "reach social)");
    return 0;
}

static const http_route social_routes[] = {
    {"POST", "/api/v1/posts", social_posts_create, HTTP_AUTH, "create a post (Idempotency-Key honoured)"},
    {"GET", "/api/v1/posts/{id}", social_post_get, HTTP_AUTH, "a post with its counts and liked_by_me"},
    {"PATCH", "/api/v1/posts/{id}", social_post_patch, HTTP_AUTH, "edit a post (author or admin)"},
    {"DELETE", "/api/v1/posts/{id}", social_post_delete, HTTP_AUTH, "delete a post (author or admin)"},
    {"POST", "/api/v1/posts/{id}/like", social_like, HTTP_AUTH, "like a post (idempotent)"},
    {"PUT", "/api/v1/posts/{id}/like", social_like, HTTP_AUTH, "like a post (idempotent)"},
    {"DELETE", "/api/v1/posts/{id}/like", social_unlike, HTTP_AUTH, "unlike a post (idempotent)"},
    {"GET", "/api/v1/posts/{id}/comments", social_comments_list, HTTP_AUTH, "a post's comments, oldest first"},
    {"POST", "/api/v1/posts/{id}/comments", social_comments_create, HTTP_AUTH, "comment or reply on a post"},
    {"PATCH", "/api/v1/comments/{id}", social_comment_patch, HTTP_AUTH, "edit a comment (author or admin)"},
    {"DELETE", "/api/v1/comments/{id}", social_comment_delete, HTTP_AUTH,
     "delete a comment and its replies (author, post author or admin)"},
    {"GET", "/api/v1/users/{id}/posts", social_user_posts, HTTP_AUTH, "a user's posts the caller may see, newest first"},
    {"POST", "/api/v1/users/{id}/follow", social_follow, HTTP_AUTH, "follow a user (idempotent)"},
    {"PUT", "/api/v1/users/{id}/follow", social_follow, HTTP_AUTH, "follow a user (idempotent)"},
    {"DELETE", "/api/v1/users/{id}/follow", social_unfollow, HTTP_AUTH, "unfollow a user (idempotent)"},
    {"GET", "/api/v1/users/{id}/followers", social_followers, HTTP_AUTH, "who follows a user, newest first"},
    {"GET", "/api/v1/users/{id}/following", social_following, HTTP_AUTH, "whom a user follows, newest first"},
    {"GET", "/api/v1/campus-events", social_campus_list, HTTP_AUTH, "upcoming campus events, soonest first"},
    {"POST", "/api/v1/campus-events", social_campus_create, HTTP_AUTH, "create a campus event"},
    {"GET", "/api/v1/campus-events/{id}", social_campus_get, HTTP_AUTH, "a campus event with its counts and my RSVP"},
    {"PATCH", "/api/v1/campus-events/{id}", social_campus_patch, HTTP_AUTH, "edit a campus event (organizer or admin)"},
    {"DELETE", "/api/v1/campus-events/{id}", social_campus_delete, HTTP_AUTH,
     "delete a campus event (organizer or admin)"},
    {"PUT", "/api/v1/campus-events/{id}/rsvp", social_rsvp, HTTP_AUTH, "RSVP going, interested or cancel"},
    {"POST", "/api/v1/campus-events/{id}/rsvp", social_rsvp, HTTP_AUTH, "RSVP going, interested or cancel"},
    {"GET", "/api/v1/campus-events/{id}/attendees", social_attendees, HTTP_AUTH, "who is going (or ?status=interested)"},
};

const service_def social_service = {
    .version = 1,
    .name = "social",
    .summary = "posts, comments, likes, follows and campus events with RSVPs",
    .stores = SERVICE_USES_SQL,
    .routes = social_routes,
    .nroutes = sizeof social_routes / sizeof social_routes[0],
    .config_keys = social_keys,
    .nconfig_keys = sizeof social_keys / sizeof social_keys[0],
    .start = social_start,
    .stop = social_stop,
    .demo = social_demo,
    .consumers = social_consumers,
    .nconsumers = sizeof social_consumers / sizeof social_consumers[0],
};
