/*
 * paths.c - learning paths: an ordered list of courses with a title and a
 * description, made by a teacher or an admin. A path shows each reader only
 * the courses that reader may see (drafts are left out for others).
 */
#include "services/courses/courses.h"
#include "core/json.h"
#include "core/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_TITLE_MAX 200
#define PATH_DESCRIPTION_MAX 5000
#define PATH_COURSES_MAX 50

typedef struct path {
    char id[40];
    const char *owner_id, *title, *description, *created_at, *updated_at;
} path;

static void read_path(arena *a, sql_rows *r, path *p)
{
    snprintf(p->id, sizeof p->id, "%s", sql_text(r, 0));
    p->owner_id = arena_strdup(a, sql_text(r, 1));
    p->title = arena_strdup(a, sql_text(r, 2));
    p->description = arena_strdup(a, sql_text(r, 3));
    p->created_at = arena_strdup(a, sql_text(r, 4));
    p->updated_at = arena_strdup(a, sql_text(r, 5));
}

#define PATH_COLS "id, owner_id, title, description, created_at, updated_at"

/* 1 found, 0 none, <0 error */
static int path_load(sql_tx *tx, arena *a, const char *id, path *p, pl_error *err)
{
    sql_rows *r;
    int rc = sql_query(tx, "SELECT " PATH_COLS " FROM paths WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), &r, err);
    if (rc)
        return rc;
    if ((rc = sql_next(r, err)) == 1)
        read_path(a, r, p);
    sql_rows_close(r);
    return rc;
}

/* The path's courses in order, those `viewer` may see; as ids (full=false) or course objects. */
static int path_courses(sql_tx *tx, arena *a, const char *path_id, const principal *viewer, bool full, json_t **out,
                        pl_error *err)
{
    sql_rows *r;
    *out = json_array();
    int rc = sql_query(tx,
                       "SELECT c.id, c.teacher_id, c.title, c.description, c.tags, c.level, c.premium, c.price_cents,"
                       " c.currency, c.capacity, c.seats_used, c.published, c.fail_access_grant, c.created_at,"
                       " c.updated_at FROM path_courses pc JOIN courses c ON c.id = pc.course_id"
                       " WHERE pc.path_id = $1 ORDER BY pc.position",
                       SQL_ARGS(SQL_TEXT(path_id)), &r, err);
    if (rc)
        return rc;
    while ((rc = sql_next(r, err)) == 1) {
        course c;
        course_read(a, r, &c);
        if (course_can_see(viewer, &c))
            json_array_append_new(*out, full ? course_json(&c) : json_string(c.id));
    }
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

static json_t *path_json(const path *p, json_t *courses_or_ids, bool full)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "id", p->id, "owner_id", p->owner_id, "title", p->title,
                     "description", p->description, full ? "courses" : "course_ids", courses_or_ids, "created_at",
                     p->created_at, "updated_at", p->updated_at);
}

/* Checks course_ids (shape, and that each is a course the caller may see). */
static void check_course_ids(jv *v, sql_tx *tx, arena *a, const principal *p, int *store_rc, pl_error *err)
{
    json_t *ids = json_object_get(v->obj, "course_ids");
    if (!ids)
        return;
    size_t i, j;
    json_t *x, *y;
    bool ok = json_is_array(ids) && json_array_size(ids) <= PATH_COURSES_MAX;
    json_array_foreach(ids, i, x) {
        ok = ok && json_is_string(x) && courses_id_ok(json_string_value(x));
        json_array_foreach(ids, j, y) if (ok && j < i && json_equal(x, y)) ok = false;
    }
    if (!ok) {
        jv_fail(v, "course_ids", "must be an array of at most 50 distinct course ids");
        return;
    }
    json_array_foreach(ids, i, x) {
        course c;
        int rc = course_load(tx, a, json_string_value(x), &c, err);
        if (rc < 0) {
            *store_rc = rc;
            return;
        }
        if (rc == 0 || !course_can_see(p, &c)) {
            char key[32];
            snprintf(key, sizeof key, "course_ids[%zu]", i);
            jv_fail(v, key, "no such course");
        }
    }
}

static int write_course_ids(sql_tx *tx, const char *path_id, const json_t *ids, pl_error *err)
{
    int rc = sql_exec(tx, "DELETE FROM path_courses WHERE path_id = $1", SQL_ARGS(SQL_TEXT(path_id)), NULL, err);
    size_t i;
    json_t *x;
    json_array_foreach(ids, i, x) {
        if (rc)
            break;
        rc = sql_exec(tx, "INSERT INTO path_courses (path_id, position, course_id) VALUES ($1, $2, $3)",
                      SQL_ARGS(SQL_TEXT(path_id), SQL_INT(i + 1), SQL_TEXT(json_string_value(x))), NULL, err);
    }
    return rc;
}

static const char *const path_fields[] = {"title", "description", "course_ids", NULL};

/* Shared by create and patch: validates, writes, answers. p_in NULL: create. */
static int path_save(http_req *req, http_res *res, const char *id_param)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const principal *me = req->principal;
    if (!id_param && strcmp(me->role, "teacher") != 0 && strcmp(me->role, "admin") != 0)
        return http_fail(req, PL_EFORBIDDEN, NULL, "only teachers and admins create learning paths");
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    jv_only(&v, path_fields);
    const char *title = jv_str(&v, "title", !id_param, 1, PATH_TITLE_MAX);
    const char *desc = jv_str(&v, "description", false, 0, PATH_DESCRIPTION_MAX);
    if (id_param && (json_is_null(json_object_get(body, "title")) || json_is_null(json_object_get(body, "description"))))
        jv_fail(&v, json_is_null(json_object_get(body, "title")) ? "title" : "description", "must not be null");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    pl_error err = {0};
    sql_tx *tx;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, &tx, &err))) {
        jv_free(&v);
        json_decref(body);
        return courses_store_fail(req, rc, &err);
    }
    path p = {.owner_id = me->user_id};
    if (id_param) {
        rc = courses_id_ok(id_param) ? path_load(tx, req->arena, id_param, &p, &err) : 0;
        if (rc <= 0 || (strcmp(p.owner_id, me->user_id) != 0 && strcmp(me->role, "admin") != 0)) {
            sql_rollback(tx);
            jv_free(&v);
            json_decref(body);
            if (rc < 0)
                return courses_store_fail(req, rc, &err);
            return rc == 0 ? http_fail(req, PL_ENOTFOUND, NULL, "no such learning path")
                           : http_fail(req, PL_EFORBIDDEN, NULL, "only the path's owner and admins change it");
        }
    }
    int store_rc = 0;
    check_course_ids(&v, tx, req->arena, me, &store_rc, &err);
    if (store_rc || !jv_ok(&v)) {
        sql_rollback(tx);
        if (store_rc) {
            jv_free(&v);
            json_decref(body);
            return courses_store_fail(req, store_rc, &err);
        }
        return http_fail_fields(req, &v, body);
    }
    char now[32];
    courses_now(now);
    if (title)
        p.title = arena_strdup(req->arena, title);
    if (desc)
        p.description = arena_strdup(req->arena, desc);
    if (!p.description)
        p.description = "";
    p.updated_at = arena_strdup(req->arena, now);
    if (!id_param) {
        uuid7_new(p.id);
        p.created_at = p.updated_at;
        rc = sql_exec(tx,
                      "INSERT INTO paths (id, owner_id, title, description, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $5)",
                      SQL_ARGS(SQL_TEXT(p.id), SQL_TEXT(p.owner_id), SQL_TEXT(p.title), SQL_TEXT(p.description),
                               SQL_TEXT(now)),
                      NULL, &err);
    } else {
        rc = sql_exec(tx, "UPDATE paths SET title = $2, description = $3, updated_at = $4 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(p.id), SQL_TEXT(p.title), SQL_TEXT(p.description), SQL_TEXT(now)), NULL,
                      &err);
    }
    json_t *ids = json_object_get(body, "course_ids");
    if (!rc && (ids || !id_param))
        rc = write_course_ids(tx, p.id, ids ? ids : json_array(), &err);
    jv_free(&v);
    json_decref(body);
    json_t *list = NULL;
    if (!rc)
        rc = path_courses(tx, req->arena, p.id, me, false, &list, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc) {
        json_decref(list);
        return courses_store_fail(req, rc, &err);
    }
    if (!id_param)
        http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/paths/%s", p.id));
    http_json(res, id_param ? 200 : 201, path_json(&p, list, false));
    return 0;
}

int paths_create(http_req *req, http_res *res) { return path_save(req, res, NULL); }

int paths_patch(http_req *req, http_res *res) { return path_save(req, res, http_param(req, "id")); }

int paths_get(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const principal *me;
    int rc = courses_principal(req, &me);
    if (rc)
        return rc;
    const char *id = http_param(req, "id");
    if (!courses_id_ok(id))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such learning path");
    pl_error err = {0};
    sql_tx *tx;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    path p;
    json_t *list = NULL;
    rc = path_load(tx, req->arena, id, &p, &err);
    if (rc == 1 && (rc = path_courses(tx, req->arena, id, me, true, &list, &err)) == 0)
        rc = 1;
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(list);
        return courses_store_fail(req, rc, &err);
    }
    if (rc == 0)
        return http_fail(req, PL_ENOTFOUND, NULL, "no such learning path");
    http_json(res, 200, path_json(&p, list, true));
    return 0;
}

int paths_list(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const principal *me;
    int rc = courses_principal(req, &me);
    if (rc)
        return rc;
    const char *ls = http_query(req, "limit"), *cursor;
    char *end;
    long limit = ls ? strtol(ls, &end, 10) : 20;
    if (ls && (!*ls || *end || limit < 1 || limit > 100))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 100"), "invalid query");
    if (courses_cursor_arg(req, &cursor))
        return PL_EINVAL;
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    if ((rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err)))
        return courses_store_fail(req, rc, &err);
    size_t np = 0;
    path *ps = arena_alloc(req->arena, sizeof *ps * (size_t)limit);
    rc = sql_query(tx, "SELECT " PATH_COLS " FROM paths WHERE ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $1",
                   SQL_ARGS(SQL_INT(limit), SQL_TEXT(cursor ? cursor : "")), &r, &err);
    if (!rc) {
        while ((rc = sql_next(r, &err)) == 1 && np < (size_t)limit)
            read_path(req->arena, r, &ps[np++]);
        sql_rows_close(r);
    }
    json_t *items = json_array();
    for (size_t i = 0; i < np && rc >= 0; i++) {
        json_t *ids;
        if (!(rc = path_courses(tx, req->arena, ps[i].id, me, false, &ids, &err)))
            json_array_append_new(items, path_json(&ps[i], ids, false));
        else
            json_decref(ids);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return courses_store_fail(req, rc, &err);
    }
    bool more = np == (size_t)limit;
    http_json(res, 200,
              json_pack("{s:o, s:o}", "items", items, "next_cursor",
                        courses_next_cursor(more ? ps[np - 1].id : NULL)));
    return 0;
}

int paths_delete(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const char *id = http_param(req, "id");
    pl_error err = {0};
    sql_tx *tx;
    int rc = sql_begin(cs->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    path p;
    rc = courses_id_ok(id) ? path_load(tx, req->arena, id, &p, &err) : 0;
    if (rc == 1 && strcmp(p.owner_id, req->principal->user_id) != 0 && strcmp(req->principal->role, "admin") != 0) {
        sql_rollback(tx);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the path's owner and admins delete it");
    }
    if (rc == 1 && !(rc = sql_exec(tx, "DELETE FROM path_courses WHERE path_id = $1", SQL_ARGS(SQL_TEXT(id)), NULL,
                                   &err)))
        rc = sql_exec(tx, "DELETE FROM paths WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err) ?: 1;
    if (rc != 1) {
        sql_rollback(tx);
        return rc < 0 ? courses_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such learning path");
    }
    if ((rc = sql_commit(tx, &err)))
        return courses_store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}
