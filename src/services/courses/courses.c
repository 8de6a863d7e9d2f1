/*
 * courses.c - the courses service: catalog, lessons, learning paths, free
 * enrollment with progress, quizzes, and its part in the purchase saga.
 * Declares the service (store, config keys, routes, consumers), holds the
 * helpers its handlers share, keeps a read model of identity's users and
 * seeds demo courses for identity's demo teacher.
 */
#include "services/courses/courses.h"
#include "bus/outbox.h"
#include "core/cursor.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "http/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_key courses_keys[] = {
    {"service.courses", "quiz_max_attempts", CFG_INT, "3", 1, 1000,
     "submissions a student may make per quiz when the quiz sets no max_attempts"},
    {"service.courses", "fault_injection", CFG_BOOL, "false", 0, 0,
     "FAULT INJECTION for tests: enables PUT /api/v1/courses/{id}/faults (admins), whose fail_access_grant "
     "makes the purchase saga's access grant fail for that course"},
};

/* ---- shared helpers ------------------------------------------------------------------ */

void courses_now(char out[32]) { time_rfc3339(time_now_ms(), out, 32); }

bool courses_id_ok(const char *s) { return s && uuid_valid(s); }

int courses_cursor_arg(http_req *req, const char **id)
{
    const char *cs = http_query(req, "cursor");
    *id = NULL;
    if (!cs || !*cs)
        return 0;
    char *pos = arena_alloc(req->arena, CURSOR_BODY_MAX + 1);
    if (cursor_open(cs, pos) || !courses_id_ok(pos))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "cursor", "is not a cursor from this list"),
                         "invalid query");
    *id = pos;
    return 0;
}

json_t *courses_next_cursor(const char *id)
{
    if (!id)
        return json_null();
    char token[CURSOR_TOKEN_MAX];
    cursor_seal(id, token);
    return json_string(token);
}

void course_read(arena *a, sql_rows *r, course *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", sql_text(r, 0));
    c->teacher_id = arena_strdup(a, sql_text(r, 1));
    c->title = arena_strdup(a, sql_text(r, 2));
    c->description = arena_strdup(a, sql_text(r, 3));
    c->tags = arena_strdup(a, sql_text(r, 4));
    c->level = arena_strdup(a, sql_text(r, 5));
    c->premium = sql_int(r, 6) != 0;
    c->has_price = !sql_isnull(r, 7);
    c->price_cents = c->has_price ? sql_int(r, 7) : 0;
    c->currency = sql_isnull(r, 8) ? NULL : arena_strdup(a, sql_text(r, 8));
    c->has_capacity = !sql_isnull(r, 9);
    c->capacity = c->has_capacity ? sql_int(r, 9) : 0;
    c->seats_used = sql_int(r, 10);
    c->published = sql_int(r, 11) != 0;
    c->fail_access_grant = sql_int(r, 12) != 0;
    c->created_at = arena_strdup(a, sql_text(r, 13));
    c->updated_at = arena_strdup(a, sql_text(r, 14));
}

typedef struct {
    arena *a;
    course *c;
} course_row;

static void read_course_row(void *ud, sql_rows *r)
{
    course_row *cr = ud;
    course_read(cr->a, r, cr->c);
}

int course_load(sql_tx *tx, arena *a, const char *id, course *out, pl_error *err)
{
    course_row cr = {a, out};
    return sql_one(tx, "SELECT " COURSE_COLS " FROM courses WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), read_course_row,
                   &cr, err);
}

static json_t *tags_json(const char *text)
{
    json_t *t = json_loads(text, 0, NULL);
    if (!json_is_array(t)) {
        json_decref(t);
        t = json_array();
    }
    return t;
}

json_t *course_event_data(const course *c)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:b, s:o, s:o, s:o, s:b}", "course_id", c->id, "teacher_id",
                     c->teacher_id, "title", c->title, "description", c->description, "tags", tags_json(c->tags),
                     "level", c->level, "premium", c->premium, "price_cents",
                     c->has_price ? json_integer(c->price_cents) : json_null(), "currency",
                     c->currency ? json_string(c->currency) : json_null(), "capacity",
                     c->has_capacity ? json_integer(c->capacity) : json_null(), "published", c->published);
}

json_t *course_json(const course *c)
{
    json_t *d = course_event_data(c), *j = json_pack("{s:s}", "id", c->id);
    json_object_del(d, "course_id");
    json_object_update(j, d);
    json_decref(d);
    json_object_set_new(j, "seats_left",
                        c->has_capacity ? json_integer(c->capacity > c->seats_used ? c->capacity - c->seats_used : 0)
                                        : json_null());
    json_object_set_new(j, "created_at", json_string(c->created_at));
    json_object_set_new(j, "updated_at", json_string(c->updated_at));
    return j;
}

bool course_can_manage(const principal *p, const course *c)
{
    return p && (strcmp(p->role, "admin") == 0 || (strcmp(p->role, "teacher") == 0 && strcmp(p->user_id, c->teacher_id) == 0));
}

bool course_can_see(const principal *p, const course *c) { return c->published || course_can_manage(p, c); }

int courses_principal(http_req *req, const principal **out)
{
    *out = req->principal;
    if (*out || !req->bearer)
        return 0;
    principal *p = arena_calloc(req->arena, sizeof *p);
    int rc = auth_verify(req->bearer, p);
    if (rc)
        return http_fail(req, rc, NULL, rc == PL_EUNAUTHORIZED ? "the bearer token is not valid" : NULL);
    *out = p;
    return 0;
}

int courses_error(http_res *res, int status, const char *code, const char *message, json_t *fields)
{
    json_t *e = json_pack("{s:s, s:s, s:o}", "code", code, "message", message, "fields", fields ? fields : json_object());
    http_json(res, status, json_pack("{s:o}", "error", e));
    return 0;
}

int courses_store_fail(http_req *req, int rc, const pl_error *err)
{
    return http_fail(req, rc, NULL, "%s", err->msg[0] ? err->msg : err_message(rc));
}

static void read_text40(void *ud, sql_rows *r) { snprintf(ud, 40, "%s", sql_text(r, 0)); }

int courses_enrollment(sql_tx *tx, const char *course_id, const char *user_id, char out[40], pl_error *err)
{
    char id[40] = "";
    int rc = sql_one(tx, "SELECT id FROM enrollments WHERE course_id = $1 AND user_id = $2",
                     SQL_ARGS(SQL_TEXT(course_id), SQL_TEXT(user_id)), read_text40, id, err);
    if (out)
        snprintf(out, 40, "%s", id);
    return rc;
}

int courses_take_seat(sql_tx *tx, const char *course_id, pl_error *err)
{
    int64_t n = 0;
    /* one statement decides: on PostgreSQL the WHERE is re-checked on the
     * locked row, so concurrent takers of the last seat cannot both win */
    int rc = sql_exec(tx,
                      "UPDATE courses SET seats_used = seats_used + 1 WHERE id = $1 AND (capacity IS NULL OR"
                      " seats_used < capacity)",
                      SQL_ARGS(SQL_TEXT(course_id)), &n, err);
    return rc ? rc : n == 1;
}

int courses_free_seat(sql_tx *tx, const char *course_id, pl_error *err)
{
    return sql_exec(tx, "UPDATE courses SET seats_used = seats_used - 1 WHERE id = $1 AND seats_used > 0",
                    SQL_ARGS(SQL_TEXT(course_id)), NULL, err);
}

int courses_enroll(sql_tx *tx, const char *course_id, const char *user_id, const char *via, const char *order_id,
                   char out[40], pl_error *err)
{
    char now[32];
    courses_now(now);
    uuid7_new(out);
    int rc = sql_exec(tx,
                      "INSERT INTO enrollments (id, course_id, user_id, via, order_id, enrolled_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6)",
                      SQL_ARGS(SQL_TEXT(out), SQL_TEXT(course_id), SQL_TEXT(user_id), SQL_TEXT(via),
                               SQL_TEXT_OR_NULL(order_id), SQL_TEXT(now)),
                      NULL, err);
    if (rc)
        return rc;
    return outbox_emit(tx, "courses", "pl.courses.enrolled.v1", course_id, NULL,
                       json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "course_id", course_id, "user_id", user_id,
                                 "enrollment_id", out, "via", via, "order_id",
                                 order_id ? json_string(order_id) : json_null(), "enrolled_at", now),
                       NULL, err);
}

/* ---- identity's users: a read model (names of teachers) and the demo trigger --------- */

static int lock_demo(sql_tx *tx, char state[16], pl_error *err)
{
    int rc = sql_exec(tx, "UPDATE courses_demo SET state = state WHERE id = 1", SQL_NOARGS, NULL, err);
    sql_rows *r;
    if (rc || (rc = sql_query(tx, "SELECT state FROM courses_demo WHERE id = 1", SQL_NOARGS, &r, err)))
        return rc;
    state[0] = '\0';
    if ((rc = sql_next(r, err)) == 1)
        snprintf(state, 16, "%s", sql_text(r, 0));
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

static int users_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const json_t *d = ev->data;
    const char *uid = json_string_value(json_object_get(d, "user_id"));
    if (!uid)
        return err_set(err, PL_EINVAL, "data", "%s without data.user_id", ev->type);
    int rc = 0;
    const char *role = NULL;
    if (strcmp(ev->type, "pl.identity.user_registered.v1") == 0) {
        const char *username = json_string_value(json_object_get(d, "username")),
                   *name = json_string_value(json_object_get(d, "display_name"));
        role = json_string_value(json_object_get(d, "role"));
        if (!username || !name || !role)
            return err_set(err, PL_EINVAL, "data", "user_registered without username, display_name or role");
        rc = sql_exec(tx,
                      "INSERT INTO course_users (user_id, username, display_name, role, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,"
                      " display_name = excluded.display_name, role = excluded.role, updated_at = excluded.updated_at",
                      SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(username), SQL_TEXT(name), SQL_TEXT(role), SQL_TEXT(ev->time)),
                      NULL, err);
    } else if (strcmp(ev->type, "pl.identity.profile_updated.v1") == 0 && json_object_get(d, "display_name")) {
        rc = sql_exec(tx, "UPDATE course_users SET display_name = $2, updated_at = $3 WHERE user_id = $1",
                      SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(json_string_value(json_object_get(d, "display_name"))),
                               SQL_TEXT(ev->time)),
                      NULL, err);
    } else if (strcmp(ev->type, "pl.identity.role_changed.v1") == 0 && json_object_get(d, "new_role")) {
        role = json_string_value(json_object_get(d, "new_role"));
        rc = sql_exec(tx, "UPDATE course_users SET role = $2, updated_at = $3 WHERE user_id = $1",
                      SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(role), SQL_TEXT(ev->time)), NULL, err);
    }
    if (rc || !role || strcmp(role, "teacher") != 0)
        return rc;
    /* a teacher arrived: the demo waits for one */
    char state[16];
    if ((rc = lock_demo(tx, state, err)) || strcmp(state, "pending") != 0)
        return rc;
    return demo_seed(tx, uid, err);
}

static int users_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    (void)ctx;
    return sql_exec(tx, "DELETE FROM course_users", SQL_NOARGS, NULL, err);
}

/* Demo data belongs to identity's demo teacher, whose id courses learns
 * only from identity's events: when the teacher is already known the
 * courses are seeded now, otherwise the demo is marked pending and the
 * users consumer seeds it when a teacher's user_registered arrives. */
static int courses_demo(service_ctx *ctx, void (*out)(const char *line), pl_error *err)
{
    sql_tx *tx;
    int rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    char state[16], teacher[40] = "";
    if ((rc = lock_demo(tx, state, err)) || strcmp(state, "none") != 0) {
        sql_rollback(tx);
        return rc;
    }
    if ((rc = sql_one(tx, "SELECT 1 FROM courses", SQL_NOARGS, NULL, NULL, err)) != 0) {
        sql_rollback(tx);
        return rc < 0 ? rc : 0; /* not empty: no demo */
    }
    rc = sql_one(tx, "SELECT user_id FROM course_users WHERE role = 'teacher' ORDER BY user_id LIMIT 1", SQL_NOARGS,
                 read_text40, teacher, err);
    if (rc == 1)
        rc = demo_seed(tx, teacher, err);
    else if (rc == 0)
        rc = sql_exec(tx, "UPDATE courses_demo SET state = 'pending' WHERE id = 1", SQL_NOARGS, NULL, err);
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    if ((rc = sql_commit(tx, err)))
        return rc;
    out(teacher[0] ? "Demo courses: seeded for the demo teacher (GET /api/v1/courses)"
                   : "Demo courses: seeded as soon as identity's demo teacher reaches courses (GET /api/v1/courses)");
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int courses_start(service_ctx *ctx, pl_error *err)
{
    (void)err;
    courses *cs = calloc(1, sizeof *cs);
    if (!cs)
        abort();
    cs->ctx = ctx;
    cs->quiz_max_attempts = (int)config_int(ctx->cfg, "service.courses", "quiz_max_attempts");
    cs->fault_injection = config_bool(ctx->cfg, "service.courses", "fault_injection");
    if (cs->fault_injection)
        log_with(LOG_WARN, "courses: fault injection is on (PUT /api/v1/courses/{id}/faults); never in production");
    ctx->state = cs;
    return 0;
}

static void courses_stop(service_ctx *ctx)
{
    free(ctx->state);
    ctx->state = NULL;
}

static const http_route courses_routes[] = {
    {"POST", "/api/v1/courses", courses_create, HTTP_AUTH, "create a course (teachers, admins)"},
    {"GET", "/api/v1/courses", courses_list, 0, "the catalog: published courses (filters tag, level, premium, teacher)"},
    {"GET", "/api/v1/courses/{id}", courses_get, 0, "a course (drafts: its teacher and admins)"},
    {"PATCH", "/api/v1/courses/{id}", courses_patch, HTTP_AUTH, "edit or publish a course (its teacher, admins)"},
    {"PUT", "/api/v1/courses/{id}/faults", courses_faults, HTTP_AUTH,
     "fault injection for tests (admins; only with service.courses.fault_injection)"},
    {"GET", "/api/v1/courses/{id}/lessons", lessons_list, 0, "lessons in order (content: enrolled, teacher, admins)"},
    {"POST", "/api/v1/courses/{id}/lessons", lessons_create, HTTP_AUTH, "append a lesson"},
    {"PUT", "/api/v1/courses/{id}/lessons/order", lessons_reorder, HTTP_AUTH, "reorder every lesson"},
    {"PATCH", "/api/v1/courses/{id}/lessons/{lesson}", lessons_patch, HTTP_AUTH, "edit a lesson"},
    {"DELETE", "/api/v1/courses/{id}/lessons/{lesson}", lessons_delete, HTTP_AUTH, "delete a lesson"},
    {"POST", "/api/v1/courses/{id}/lessons/{lesson}/complete", lessons_complete, HTTP_AUTH,
     "mark a lesson completed (enrolled students)"},
    {"POST", "/api/v1/courses/{id}/enroll", courses_enroll_post, HTTP_AUTH, "enroll in a published free course"},
    {"GET", "/api/v1/me/enrollments", me_enrollments, HTTP_AUTH, "the caller's enrollments with progress"},
    {"POST", "/api/v1/courses/{id}/quizzes", quizzes_create, HTTP_AUTH, "add a quiz (the course's teacher, admins)"},
    {"GET", "/api/v1/courses/{id}/quizzes", quizzes_list, HTTP_AUTH, "a course's quizzes"},
    {"GET", "/api/v1/courses/{id}/quizzes/{q}", quizzes_get, HTTP_AUTH, "a quiz (answers only for its teacher)"},
    {"POST", "/api/v1/courses/{id}/quizzes/{q}/submissions", quizzes_submit, HTTP_AUTH,
     "submit answers; graded at once (enrolled students)"},
    {"POST", "/api/v1/paths", paths_create, HTTP_AUTH, "create a learning path (teachers, admins)"},
    {"GET", "/api/v1/paths", paths_list, 0, "learning paths"},
    {"GET", "/api/v1/paths/{id}", paths_get, 0, "a learning path with its courses in order"},
    {"PATCH", "/api/v1/paths/{id}", paths_patch, HTTP_AUTH, "edit a learning path (its owner, admins)"},
    {"DELETE", "/api/v1/paths/{id}", paths_delete, HTTP_AUTH, "delete a learning path (its owner, admins)"},
};

static const char *const saga_types[] = {"pl.commerce.seat_reserve_requested.v1",
                                         "pl.commerce.seat_release_requested.v1",
                                         "pl.commerce.access_grant_requested.v1", NULL};
static const char *const users_types[] = {"pl.identity.user_registered.v1", "pl.identity.profile_updated.v1",
                                          "pl.identity.role_changed.v1", NULL};

static const consumer_def courses_consumers[] = {
    {.name = "saga", .types = saga_types, .handle = saga_handle},
    {.name = "users", .types = users_types, .handle = users_handle, .reset = users_reset,
     .flags = CONSUMER_PROJECTION},
};

const service_def courses_service = {
    .version = 1,
    .name = "courses",
    .summary = "catalog, lessons, learning paths, enrollment with progress, quizzes; seats in the purchase saga",
    .stores = SERVICE_USES_SQL,
    .routes = courses_routes,
    .nroutes = sizeof courses_routes / sizeof courses_routes[0],
    .config_keys = courses_keys,
    .nconfig_keys = sizeof courses_keys / sizeof courses_keys[0],
    .start = courses_start,
    .stop = courses_stop,
    .demo = courses_demo,
    .consumers = courses_consumers,
    .nconsumers = sizeof courses_consumers / sizeof courses_consumers[0],
};
