/*
 * catalog.c - courses' catalog handlers: courses (create, edit, publish,
 * list, get), lessons (ordered: create, edit, reorder, delete) and learning
 * paths. Input is validated at the edge; a request that fails validation
 * changes nothing.
 */
#include "services/courses/courses.h"
#include "bus/outbox.h"
#include "core/json.h"
#include "core/uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TITLE_MAX 200
#define DESCRIPTION_MAX 5000
#define TAGS_MAX 10
#define TAG_MAX 32
#define LESSON_CONTENT_MAX 100000
#define PRICE_MAX 100000000LL
#define CAPACITY_MAX 1000000LL
#define PATH_COURSES_MAX 50
#define PAGE_MAX 100

/* ---- request plumbing ---------------------------------------------------------------- */

static void body_end(jv *v, json_t *body)
{
    jv_free(v);
    json_decref(body);
}

/* limit and cursor (an id from the previous page) of a list. */
static int page_args(http_req *req, long *limit, const char **cursor)
{
    const char *ls = http_query(req, "limit");
    char *end;
    *limit = 20;
    *cursor = NULL;
    if (ls) {
        *limit = strtol(ls, &end, 10);
        if (!*ls || *end || *limit < 1 || *limit > PAGE_MAX)
            return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 100"), "invalid query");
    }
    return courses_cursor_arg(req, cursor);
}

/* Runs a read transaction's course lookup: 1 found and visible, or <0 recorded on req. */
static int find_course(http_req *req, sql_tx *tx, const char *id, const principal *p, course *c)
{
    pl_error err = {0};
    if (!courses_id_ok(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such course");
    int rc = course_load(tx, req->arena, id, c, &err);
    if (rc < 0)
        return courses_store_fail(req, rc, &err);
    if (rc == 0 || !course_can_see(p, c))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such course");
    return 1;
}

/* The same for a change: found, visible, and the caller may manage it. */
static int lock_course(sql_tx *tx, const char *id, pl_error *err);

static int find_managed(http_req *req, sql_tx *tx, const char *id, course *c)
{
    int rc = find_course(req, tx, id, req->principal, c);
    if (rc == 1 && !course_can_manage(req->principal, c))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the course's teacher and admins change it");
    return rc;
}

static bool is_teacher_or_admin(const principal *p)
{
    return strcmp(p->role, "teacher") == 0 || strcmp(p->role, "admin") == 0;
}

/* ---- courses ---------------------------------------------------------------------------- */

static bool currency_ok(const char *s)
{
    return strlen(s) == 3 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]) &&
           isupper((unsigned char)s[2]);
}

static bool tag_ok(const char *s, size_t len)
{
    if (strlen(s) != len || utf8_len(s) < 1 || utf8_len(s) > TAG_MAX || s[0] == ' ' || s[len - 1] == ' ')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Validates the body's course fields onto c (a default or the stored course)
 * and *tags (new array when given). */
static void course_fields(jv *v, course *c, json_t **tags, arena *a)
{
    const char *s;
    long long n;
    bool b;
    json_t *body = v->obj;
    if ((s = jv_str(v, "title", false, 1, TITLE_MAX)))
        c->title = arena_strdup(a, s);
    if ((s = jv_str(v, "description", false, 0, DESCRIPTION_MAX)))
        c->description = arena_strdup(a, s);
    if ((s = jv_str(v, "level", false, 1, 16))) {
        if (strcmp(s, "beginner") && strcmp(s, "intermediate") && strcmp(s, "advanced"))
            jv_fail(v, "level", "must be beginner, intermediate or advanced");
        else
            c->level = arena_strdup(a, s);
    }
    if (json_is_null(json_object_get(body, "level")) || json_is_null(json_object_get(body, "title")) ||
        json_is_null(json_object_get(body, "description")))
        jv_fail(v, json_is_null(json_object_get(body, "level")) ? "level"
                   : json_is_null(json_object_get(body, "title")) ? "title" : "description",
                "must not be null");
    json_t *t = json_object_get(body, "tags");
    if (t) {
        bool ok = json_is_array(t) && json_array_size(t) <= TAGS_MAX;
        size_t i, j;
        json_t *x, *y;
        json_array_foreach(t, i, x) {
            ok = ok && json_is_string(x) && tag_ok(json_string_value(x), json_string_length(x));
            json_array_foreach(t, j, y) if (ok && j < i && json_equal(x, y)) ok = false;
        }
        if (!ok)
            jv_fail(v, "tags", "must be an array of at most 10 distinct tags of 1 to 32 characters");
        else
            *tags = json_deep_copy(t);
    }
    if (jv_bool(v, "premium", false, &b))
        c->premium = b;
    else if (json_is_null(json_object_get(body, "premium")))
        jv_fail(v, "premium", "must be true or false");
    if (jv_bool(v, "published", false, &b))
        c->published = b;
    else if (json_is_null(json_object_get(body, "published")))
        jv_fail(v, "published", "must be true or false");
    json_t *pc = json_object_get(body, "price_cents"), *cur = json_object_get(body, "currency"),
           *cap = json_object_get(body, "capacity");
    if (pc && json_is_null(pc))
        c->has_price = false;
    else if (jv_int(v, "price_cents", false, 1, PRICE_MAX, &n))
        c->has_price = true, c->price_cents = n;
    if (cur && json_is_null(cur))
        c->currency = NULL;
    else if ((s = jv_str(v, "currency", false, 3, 3))) {
        if (!currency_ok(s))
            jv_fail(v, "currency", "must be an ISO 4217 code: 3 upper-case letters");
        else
            c->currency = arena_strdup(a, s);
    }
    if (cap && json_is_null(cap))
        c->has_capacity = false;
    else if (jv_int(v, "capacity", false, 1, CAPACITY_MAX, &n))
        c->has_capacity = true, c->capacity = n;
    if (!jv_ok(v))
        return;
    /* the whole, as it would be stored */
    if (c->premium && (!c->has_price || !c->currency))
        jv_fail(v, c->has_price ? "currency" : "price_cents", "is required for a premium course");
    if (!c->premium && (c->has_price || c->currency))
        jv_fail(v, c->has_price ? "price_cents" : "currency", "must be absent or null for a free course");
}

static int course_write(sql_tx *tx, const course *c, const json_t *tags, bool insert, pl_error *err)
{
    char *tags_text = json_compact(tags);
    int rc;
    if (insert)
        rc = sql_exec(tx,
                      "INSERT INTO courses (id, teacher_id, title, description, tags, level, premium, price_cents,"
                      " currency, capacity, seats_used, published, fail_access_grant, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, 0, $12, $12)",
                      SQL_ARGS(SQL_TEXT(c->id), SQL_TEXT(c->teacher_id), SQL_TEXT(c->title), SQL_TEXT(c->description),
                               SQL_TEXT(tags_text), SQL_TEXT(c->level), SQL_INT(c->premium),
                               c->has_price ? SQL_INT(c->price_cents) : SQL_NULL, SQL_TEXT_OR_NULL(c->currency),
                               c->has_capacity ? SQL_INT(c->capacity) : SQL_NULL, SQL_INT(c->published),
                               SQL_TEXT(c->created_at)),
                      NULL, err);
    else
        rc = sql_exec(tx,
                      "UPDATE courses SET title = $2, description = $3, tags = $4, level = $5, premium = $6,"
                      " price_cents = $7, currency = $8, capacity = $9, published = $10, updated_at = $11 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(c->id), SQL_TEXT(c->title), SQL_TEXT(c->description), SQL_TEXT(tags_text),
                               SQL_TEXT(c->level), SQL_INT(c->premium),
                               c->has_price ? SQL_INT(c->price_cents) : SQL_NULL, SQL_TEXT_OR_NULL(c->currency),
                               c->has_capacity ? SQL_INT(c->capacity) : SQL_NULL, SQL_INT(c->published),
                               SQL_TEXT(c->updated_at)),
                      NULL, err);
    free(tags_text);
    if (!rc && !insert)
        rc = sql_exec(tx, "DELETE FROM course_tags WHERE course_id = $1", SQL_ARGS(SQL_TEXT(c->id)), NULL, err);
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t) {
        if (rc)
            break;
        rc = sql_exec(tx, "INSERT INTO course_tags (course_id, tag) VALUES ($1, $2)",
                      SQL_ARGS(SQL_TEXT(c->id), SQL_TEXT(json_string_value(t))), NULL, err);
    }
    return rc;
}

int course_insert(sql_tx *tx, course *c, const json_t *tags, pl_error *err)
{
    int rc = course_write(tx, c, tags, true, err);
    if (!rc)
        rc = outbox_emit(tx, "courses", "pl.courses.course_created.v1", c->id, NULL, course_event_data(c), NULL, err);
    if (!rc && c->published)
        rc = outbox_emit(tx, "courses", "pl.courses.course_published.v1", c->id, NULL, course_event_data(c), NULL, err);
    return rc;
}

int courses_create(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    if (!is_teacher_or_admin(req->principal))
        return http_fail(req, PL_EFORBIDDEN, NULL, "only teachers and admins create courses");
    static const char *const allowed[] = {"title", "description", "tags", "level", "premium", "price_cents",
                                          "currency", "capacity", "published", NULL};
    json_t *body, *tags = NULL;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    course c = {.teacher_id = req->principal->user_id, .description = ""};
    jv_str(&v, "title", true, 1, TITLE_MAX);
    jv_str(&v, "level", true, 1, 16);
    course_fields(&v, &c, &tags, req->arena);
    if (!jv_ok(&v)) {
        json_decref(tags);
        return http_fail_fields(req, &v, body);
    }
    body_end(&v, body);
    if (!tags)
        tags = json_array();
    uuid7_new(c.id);
    char now[32];
    courses_now(now);
    c.created_at = c.updated_at = arena_strdup(req->arena, now);
    c.tags = "[]";
    pl_error err = {0};
    sql_tx *tx;
    if (!(rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, &tx, &err))) {
        rc = course_insert(tx, &c, tags, &err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    if (rc) {
        json_decref(tags);
        return courses_store_fail(req, rc, &err);
    }
    char *tt = json_compact(tags);
    c.tags = arena_strdup(req->arena, tt);
    free(tt);
    json_decref(tags);
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/courses/%s", c.id));
    http_json(res, 201, course_json(&c));
    return 0;
}

int courses_patch(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"title", "description", "tags", "level", "premium", "price_cents",
                                          "currency", "capacity", "published", NULL};
    json_t *body, *tags = NULL;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    pl_error err = {0};
    sql_tx *tx;
    course c;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, &tx, &err))) {
        body_end(&v, body);
        return courses_store_fail(req, rc, &err);
    }
    /* locked before it is read: the write below rewrites every column from
     * this read, so a concurrent PATCH or enrollment must wait, not be undone */
    if ((rc = lock_course(tx, http_param(req, "id"), &err))) {
        sql_rollback(tx);
        body_end(&v, body);
        return courses_store_fail(req, rc, &err);
    }
    if ((rc = find_managed(req, tx, http_param(req, "id"), &c)) != 1) {
        sql_rollback(tx);
        body_end(&v, body);
        return rc;
    }
    bool was_published = c.published;
    course_fields(&v, &c, &tags, req->arena);
    if (jv_ok(&v) && c.has_capacity && c.capacity < c.seats_used)
        jv_fail(&v, "capacity", "is below the seats already taken");
    if (!jv_ok(&v)) {
        sql_rollback(tx);
        json_decref(tags);
        return http_fail_fields(req, &v, body);
    }
    body_end(&v, body);
    if (!tags)
        tags = json_loads(c.tags, 0, NULL);
    if (!tags)
        tags = json_array();
    char now[32], *tt = json_compact(tags);
    courses_now(now);
    c.updated_at = arena_strdup(req->arena, now);
    c.tags = arena_strdup(req->arena, tt);
    free(tt);
    rc = course_write(tx, &c, tags, false, &err);
    if (!rc)
        rc = outbox_emit(tx, "courses", "pl.courses.course_updated.v1", c.id, NULL, course_event_data(&c), NULL, &err);
    if (!rc && c.published && !was_published)
        rc = outbox_emit(tx, "courses", "pl.courses.course_published.v1", c.id, NULL, course_event_data(&c), NULL,
                         &err);
    json_decref(tags);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    http_json(res, 200, course_json(&c));
    return 0;
}

int courses_get(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const principal *p;
    int rc = courses_principal(req, &p);
    if (rc)
        return rc;
    pl_error err = {0};
    sql_tx *tx;
    course c;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    rc = find_course(req, tx, http_param(req, "id"), p, &c);
    json_t *j = NULL;
    if (rc == 1) {
        j = course_json(&c);
        int64_t n = 0;
        sql_rows *r;
        if (!(rc = sql_query(tx, "SELECT count(*) FROM lessons WHERE course_id = $1", SQL_ARGS(SQL_TEXT(c.id)), &r,
                             &err))) {
            if ((rc = sql_next(r, &err)) == 1)
                n = sql_int(r, 0);
            sql_rows_close(r);
        }
        json_object_set_new(j, "lesson_count", json_integer(n));
        /* the teacher's name, from the read model of identity's events (null until it arrives) */
        json_t *t = json_null();
        if (rc >= 0 && !(rc = sql_query(tx, "SELECT username, display_name FROM course_users WHERE user_id = $1",
                                        SQL_ARGS(SQL_TEXT(c.teacher_id)), &r, &err))) {
            if ((rc = sql_next(r, &err)) == 1)
                t = json_pack("{s:s, s:s, s:s}", "id", c.teacher_id, "username", sql_text(r, 0), "display_name",
                              sql_text(r, 1));
            sql_rows_close(r);
        }
        json_object_set_new(j, "teacher", t);
        if (rc >= 0 && p) {
            char eid[40] = "";
            rc = courses_enrollment(tx, c.id, p->user_id, eid, &err);
            json_object_set_new(j, "enrolled", json_boolean(rc == 1));
        }
        if (rc < 0) {
            json_decref(j);
            rc = courses_store_fail(req, rc, &err);
        } else {
            rc = 1;
        }
    }
    sql_rollback(tx);
    if (rc != 1)
        return rc;
    http_json(res, 200, j);
    return 0;
}

int courses_list(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    long limit;
    const char *cursor;
    int rc = page_args(req, &limit, &cursor);
    if (rc)
        return rc;
    const char *tag = http_query(req, "tag"), *level = http_query(req, "level"), *prem = http_query(req, "premium"),
               *teacher = http_query(req, "teacher");
    json_t *f = json_object();
    if (tag && !tag_ok(tag, strlen(tag)))
        json_object_set_new(f, "tag", json_string("must be a tag of 1 to 32 characters"));
    if (level && strcmp(level, "beginner") && strcmp(level, "intermediate") && strcmp(level, "advanced"))
        json_object_set_new(f, "level", json_string("must be beginner, intermediate or advanced"));
    if (prem && strcmp(prem, "true") && strcmp(prem, "false"))
        json_object_set_new(f, "premium", json_string("must be true or false"));
    if (teacher && !courses_id_ok(teacher))
        json_object_set_new(f, "teacher", json_string("must be a user id"));
    if (json_object_size(f))
        return http_fail(req, PL_EINVAL, f, "invalid query");
    json_decref(f);

    char sql[1024] = "SELECT " COURSE_COLS " FROM courses c WHERE published = 1";
    sql_arg args[6];
    size_t n = 0;
#define ADD(cond, arg)                                                                                              \
    do {                                                                                                            \
        args[n++] = arg;                                                                                            \
        snprintf(sql + strlen(sql), sizeof sql - strlen(sql), cond, (int)n);                                        \
    } while (0)
    if (tag)
        ADD(" AND EXISTS (SELECT 1 FROM course_tags t WHERE t.course_id = c.id AND t.tag = $%d)", SQL_TEXT(tag));
    if (level)
        ADD(" AND level = $%d", SQL_TEXT(level));
    if (prem)
        ADD(" AND premium = $%d", SQL_INT(strcmp(prem, "true") == 0));
    if (teacher)
        ADD(" AND teacher_id = $%d", SQL_TEXT(teacher));
    if (cursor)
        ADD(" AND id < $%d", SQL_TEXT(cursor));
    ADD(" ORDER BY id DESC LIMIT $%d", SQL_INT(limit));
#undef ADD
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    json_t *items = json_array();
    char last[40] = "";
    if (!(rc = sql_query(tx, sql, args, n, &r, &err))) {
        while ((rc = sql_next(r, &err)) == 1) {
            course c;
            course_read(req->arena, r, &c);
            snprintf(last, sizeof last, "%s", c.id);
            json_array_append_new(items, course_json(&c));
        }
        sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return courses_store_fail(req, rc, &err);
    }
    bool more = (long)json_array_size(items) == limit;
    http_json(res, 200,
              json_pack("{s:o, s:o}", "items", items, "next_cursor", courses_next_cursor(more ? last : NULL)));
    return 0;
}

int courses_faults(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    if (!cs->fault_injection)
        return http_fail(req, PL_ENOTFOUND, NULL, "fault injection is off (service.courses.fault_injection)");
    if (strcmp(req->principal->role, "admin") != 0)
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins inject faults");
    static const char *const allowed[] = {"fail_access_grant", NULL};
    json_t *body;
    jv v;
    bool fail = false;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    jv_bool(&v, "fail_access_grant", true, &fail);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    body_end(&v, body);
    pl_error err = {0};
    sql_tx *tx;
    course c;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    if ((rc = find_managed(req, tx, http_param(req, "id"), &c)) != 1) {
        sql_rollback(tx);
        return rc;
    }
    rc = sql_exec(tx, "UPDATE courses SET fail_access_grant = $2 WHERE id = $1",
                  SQL_ARGS(SQL_TEXT(c.id), SQL_INT(fail)), NULL, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    http_json(res, 200, json_pack("{s:s, s:b}", "course_id", c.id, "fail_access_grant", fail));
    return 0;
}

/* ---- lessons ------------------------------------------------------------------------------ */

int lesson_insert(sql_tx *tx, const char *course_id, const char *title, const char *content, char id[40],
                  int64_t *position, pl_error *err)
{
    char now[32];
    courses_now(now);
    uuid7_new(id);
    *position = 0;
    sql_rows *r;
    /* the course row is locked by the caller: positions cannot collide */
    int rc = sql_query(tx, "SELECT COALESCE(MAX(position), 0) FROM lessons WHERE course_id = $1",
                       SQL_ARGS(SQL_TEXT(course_id)), &r, err);
    if (rc)
        return rc;
    if ((rc = sql_next(r, err)) == 1)
        *position = sql_int(r, 0) + 1;
    sql_rows_close(r);
    if (rc < 0)
        return rc;
    return sql_exec(tx,
                    "INSERT INTO lessons (id, course_id, position, title, content, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    SQL_ARGS(SQL_TEXT(id), SQL_TEXT(course_id), SQL_INT(*position), SQL_TEXT(title),
                             SQL_TEXT(content), SQL_TEXT(now)),
                    NULL, err);
}

static int lock_course(sql_tx *tx, const char *id, pl_error *err)
{
    char now[32];
    courses_now(now);
    return sql_exec(tx, "UPDATE courses SET updated_at = $2 WHERE id = $1", SQL_ARGS(SQL_TEXT(id), SQL_TEXT(now)),
                    NULL, err);
}

/* Begins a write transaction, finds the course the caller manages and locks it. 1, or <0 recorded. */
static int begin_managed(http_req *req, sql_tx **tx, course *c)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    int rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    /* lock first, then read: what is checked is what stays true until commit */
    if ((rc = lock_course(*tx, http_param(req, "id"), &err))) {
        sql_rollback(*tx);
        return courses_store_fail(req, rc, &err);
    }
    if ((rc = find_managed(req, *tx, http_param(req, "id"), c)) != 1) {
        sql_rollback(*tx);
        return rc;
    }
    return 1;
}

static json_t *lesson_row_json(sql_rows *r, bool content)
{
    json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:s}", "id", sql_text(r, 0), "position", (json_int_t)sql_int(r, 1),
                          "title", sql_text(r, 2), "created_at", sql_text(r, 4), "updated_at", sql_text(r, 5));
    if (content)
        json_object_set_new(j, "content", json_string(sql_text(r, 3)));
    return j;
}

int lessons_list(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const principal *p;
    int rc = courses_principal(req, &p);
    if (rc)
        return rc;
    pl_error err = {0};
    sql_tx *tx;
    course c;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    if ((rc = find_course(req, tx, http_param(req, "id"), p, &c)) != 1) {
        sql_rollback(tx);
        return rc;
    }
    bool content = course_can_manage(p, &c);
    if (!content && p && (rc = courses_enrollment(tx, c.id, p->user_id, NULL, &err)) < 0) {
        sql_rollback(tx);
        return courses_store_fail(req, rc, &err);
    }
    content = content || (p && rc == 1);
    sql_rows *r;
    json_t *items = json_array();
    if (!(rc = sql_query(tx,
                         "SELECT id, position, title, content, created_at, updated_at FROM lessons"
                         " WHERE course_id = $1 ORDER BY position, id",
                         SQL_ARGS(SQL_TEXT(c.id)), &r, &err))) {
        while ((rc = sql_next(r, &err)) == 1)
            json_array_append_new(items, lesson_row_json(r, content));
        sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return courses_store_fail(req, rc, &err);
    }
    http_json(res, 200, json_pack("{s:s, s:b, s:o}", "course_id", c.id, "content_included", content, "items", items));
    return 0;
}

int lessons_create(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"title", "content", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *title = jv_str(&v, "title", true, 1, TITLE_MAX);
    const char *content = jv_str(&v, "content", false, 0, LESSON_CONTENT_MAX);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    title = arena_strdup(req->arena, title);
    content = arena_strdup(req->arena, content ? content : "");
    body_end(&v, body);
    sql_tx *tx;
    course c;
    if ((rc = begin_managed(req, &tx, &c)) != 1)
        return rc;
    pl_error err = {0};
    char id[40];
    int64_t pos;
    rc = lesson_insert(tx, c.id, title, content, id, &pos, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    char now[32];
    courses_now(now);
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/courses/%s/lessons/%s", c.id, id));
    http_json(res, 201, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "id", id, "course_id", c.id, "position",
                                  (json_int_t)pos, "title", title, "content", content, "created_at", now,
                                  "updated_at", now));
    return 0;
}

/* The lesson of the managed course: 1, or <0 recorded (tx rolled back). */
static int find_lesson(http_req *req, sql_tx *tx, const course *c, int64_t *position)
{
    const char *lid = http_param(req, "lesson");
    pl_error err = {0};
    sql_rows *r;
    int rc;
    if (!courses_id_ok(lid)) {
        rc = 0;
    } else if (!(rc = sql_query(tx, "SELECT position FROM lessons WHERE id = $1 AND course_id = $2",
                                SQL_ARGS(SQL_TEXT(lid), SQL_TEXT(c->id)), &r, &err))) {
        if ((rc = sql_next(r, &err)) == 1)
            *position = sql_int(r, 0);
        sql_rows_close(r);
    }
    if (rc != 1)
        sql_rollback(tx);
    if (rc < 0)
        return courses_store_fail(req, rc, &err);
    return rc == 1 ? 1 : http_fail(req, PL_ENOTFOUND, NULL, "no such lesson in this course");
}

int lessons_patch(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"title", "content", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *title = jv_str(&v, "title", false, 1, TITLE_MAX);
    const char *content = jv_str(&v, "content", false, 0, LESSON_CONTENT_MAX);
    if (json_is_null(json_object_get(body, "title")) || json_is_null(json_object_get(body, "content")))
        jv_fail(&v, json_is_null(json_object_get(body, "title")) ? "title" : "content", "must not be null");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    title = title ? arena_strdup(req->arena, title) : NULL;
    content = content ? arena_strdup(req->arena, content) : NULL;
    body_end(&v, body);
    sql_tx *tx;
    course c;
    int64_t pos = 0;
    if ((rc = begin_managed(req, &tx, &c)) != 1 || (rc = find_lesson(req, tx, &c, &pos)) != 1)
        return rc;
    pl_error err = {0};
    char now[32];
    courses_now(now);
    const char *lid = http_param(req, "lesson");
    rc = sql_exec(tx,
                  "UPDATE lessons SET title = COALESCE($2, title), content = COALESCE($3, content), updated_at = $4"
                  " WHERE id = $1",
                  SQL_ARGS(SQL_TEXT(lid), SQL_TEXT_OR_NULL(title), SQL_TEXT_OR_NULL(content), SQL_TEXT(now)), NULL,
                  &err);
    sql_rows *r;
    json_t *j = NULL;
    if (!rc && !(rc = sql_query(tx, "SELECT id, position, title, content, created_at, updated_at FROM lessons WHERE id = $1",
                                SQL_ARGS(SQL_TEXT(lid)), &r, &err))) {
        if ((rc = sql_next(r, &err)) == 1)
            j = lesson_row_json(r, true);
        sql_rows_close(r);
        rc = rc < 0 ? rc : 0;
    }
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc) {
        json_decref(j);
        return courses_store_fail(req, rc, &err);
    }
    json_object_set_new(j, "course_id", json_string(c.id));
    http_json(res, 200, j);
    return 0;
}

int lessons_delete(http_req *req, http_res *res)
{
    sql_tx *tx;
    course c;
    int64_t pos = 0;
    int rc;
    if ((rc = begin_managed(req, &tx, &c)) != 1 || (rc = find_lesson(req, tx, &c, &pos)) != 1)
        return rc;
    pl_error err = {0};
    const char *lid = http_param(req, "lesson");
    rc = sql_exec(tx, "DELETE FROM lesson_completions WHERE lesson_id = $1", SQL_ARGS(SQL_TEXT(lid)), NULL, &err);
    if (!rc)
        rc = sql_exec(tx, "DELETE FROM lessons WHERE id = $1", SQL_ARGS(SQL_TEXT(lid)), NULL, &err);
    if (!rc) /* keep positions dense */
        rc = sql_exec(tx, "UPDATE lessons SET position = position - 1 WHERE course_id = $1 AND position > $2",
                      SQL_ARGS(SQL_TEXT(c.id), SQL_INT(pos)), NULL, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}

int lessons_reorder(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"lesson_ids", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    json_t *ids = json_object_get(body, "lesson_ids");
    bool ok = json_is_array(ids) && json_array_size(ids) <= 1000;
    size_t i, j;
    json_t *x, *y;
    json_array_foreach(ids, i, x) {
        ok = ok && json_is_string(x) && courses_id_ok(json_string_value(x));
        json_array_foreach(ids, j, y) if (ok && j < i && json_equal(x, y)) ok = false;
    }
    if (!ok)
        jv_fail(&v, "lesson_ids", "must be an array of distinct lesson ids");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    jv_free(&v);
    sql_tx *tx;
    course c;
    if ((rc = begin_managed(req, &tx, &c)) != 1) {
        json_decref(body);
        return rc;
    }
    pl_error err = {0};
    int64_t total = -1;
    sql_rows *r;
    if (!(rc = sql_query(tx, "SELECT count(*) FROM lessons WHERE course_id = $1", SQL_ARGS(SQL_TEXT(c.id)), &r,
                         &err))) {
        if ((rc = sql_next(r, &err)) == 1)
            total = sql_int(r, 0);
        sql_rows_close(r);
        rc = rc < 0 ? rc : 0;
    }
    int64_t changed = 0, all = 0;
    json_array_foreach(ids, i, x) {
        if (rc || total != (int64_t)json_array_size(ids))
            break;
        rc = sql_exec(tx, "UPDATE lessons SET position = $3 WHERE id = $1 AND course_id = $2",
                      SQL_ARGS(SQL_TEXT(json_string_value(x)), SQL_TEXT(c.id), SQL_INT(i + 1)), &changed, &err);
        all += changed;
    }
    if (!rc && (total != (int64_t)json_array_size(ids) || all != total)) {
        sql_rollback(tx);
        json_decref(body);
        return http_fail(req, PL_EINVAL,
                         json_pack("{s:s}", "lesson_ids", "must list every lesson of the course exactly once"),
                         "the request has invalid fields");
    }
    json_decref(body);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    return lessons_list(req, res);
}
