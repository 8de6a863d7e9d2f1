/*
 * learning.c - what students do: free enrollment (capacity enforced by one
 * conditional UPDATE of the course's seat count), lesson completion with
 * progress and a once-only course completion, and quizzes graded on submit
 * with a per-quiz attempt limit.
 */
#include "services/courses/courses.h"
#include "services/courses/grading.h"
#include "bus/outbox.h"
#include "core/json.h"
#include "core/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Begins tx and loads the course visible to the caller: 1, or <0 recorded (tx ended). */
static int begin_course(http_req *req, int flags, sql_tx **tx, course *c)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    const char *id = http_param(req, "id");
    int rc = sql_begin(cs->ctx->sql, flags, tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    rc = courses_id_ok(id) ? course_load(*tx, req->arena, id, c, &err) : 0;
    if (rc == 1 && course_can_see(req->principal, c))
        return 1;
    sql_rollback(*tx);
    return rc < 0 ? courses_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such course");
}

/* count(*) of a query over one or two text arguments (b may be NULL); 0 when *rc is already set. */
static int64_t count1(sql_tx *tx, const char *sql, const char *a, const char *b, int *rc, pl_error *err)
{
    sql_rows *r;
    int64_t n = 0;
    if (*rc)
        return 0;
    const sql_arg args[2] = {SQL_TEXT(a), SQL_TEXT_OR_NULL(b)};
    if ((*rc = sql_query(tx, sql, args, b ? 2 : 1, &r, err)))
        return 0;
    if ((*rc = sql_next(r, err)) == 1)
        n = sql_int(r, 0);
    sql_rows_close(r);
    *rc = *rc < 0 ? *rc : 0;
    return n;
}

/* ---- enrollment ---------------------------------------------------------------------------- */

int courses_enroll_post(http_req *req, http_res *res)
{
    if (req->body_len) { /* nothing to send; something sent is a mistake worth a 400 */
        json_t *body;
        int rc = http_json_body(req, &body);
        if (rc)
            return rc;
        size_t n = json_object_size(body);
        json_decref(body);
        if (n)
            return http_fail(req, PL_EINVAL, NULL, "enrollment takes no fields");
    }
    sql_tx *tx;
    course c;
    int rc = begin_course(req, SQL_TX_WRITE, &tx, &c);
    if (rc != 1)
        return rc;
    if (!c.published) {
        sql_rollback(tx);
        return courses_error(res, 409, "not_published", "a draft course takes no enrollments", NULL);
    }
    if (c.premium) {
        sql_rollback(tx);
        return courses_error(res, 402, "purchase_required",
                             "this course is premium: buy it with POST /api/v1/courses/{id}/purchase",
                             json_pack("{s:s}", "purchase", arena_sprintf(req->arena, "/api/v1/courses/%s/purchase", c.id)));
    }
    pl_error err = {0};
    char eid[40];
    rc = courses_enrollment(tx, c.id, req->principal->user_id, eid, &err);
    if (rc == 1) {
        sql_rollback(tx);
        return courses_error(res, 409, "already_enrolled", "you are already enrolled in this course",
                             json_pack("{s:s}", "enrollment_id", eid));
    }
    if (rc == 0 && (rc = courses_take_seat(tx, c.id, &err)) == 0) {
        sql_rollback(tx);
        return courses_error(res, 409, "sold_out", "every seat of this course is taken", NULL);
    }
    if (rc == 1)
        rc = courses_enroll(tx, c.id, req->principal->user_id, "free", NULL, eid, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc == PL_ECONFLICT) /* a concurrent enrollment of the same user won */
        return courses_error(res, 409, "already_enrolled", "you are already enrolled in this course", NULL);
    if (rc)
        return courses_store_fail(req, rc, &err);
    char now[32];
    courses_now(now);
    http_json(res, 201, json_pack("{s:s, s:s, s:s, s:s, s:n, s:s}", "id", eid, "course_id", c.id, "user_id",
                                  req->principal->user_id, "via", "free", "order_id", "enrolled_at", now));
    return 0;
}

int lessons_complete(http_req *req, http_res *res)
{
    if (req->body_len) {
        json_t *body;
        int rc = http_json_body(req, &body);
        if (rc)
            return rc;
        size_t n = json_object_size(body);
        json_decref(body);
        if (n)
            return http_fail(req, PL_EINVAL, NULL, "completing a lesson takes no fields");
    }
    const char *lid = http_param(req, "lesson"), *uid = req->principal->user_id;
    sql_tx *tx;
    course c;
    int rc = begin_course(req, SQL_TX_WRITE, &tx, &c);
    if (rc != 1)
        return rc;
    pl_error err = {0};
    char now[32];
    courses_now(now);
    /* Lock the enrollment row: completions of one student's lessons then
     * count one after the other, so the last one sees all the others. */
    int64_t enrolled = 0;
    rc = sql_exec(tx, "UPDATE enrollments SET user_id = user_id WHERE course_id = $1 AND user_id = $2",
                  SQL_ARGS(SQL_TEXT(c.id), SQL_TEXT(uid)), &enrolled, &err);
    if (!rc && !enrolled) {
        sql_rollback(tx);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only students enrolled in the course complete its lessons");
    }
    int64_t found = courses_id_ok(lid) ? count1(tx, "SELECT count(*) FROM lessons WHERE id = $1 AND course_id = $2",
                                                lid, c.id, &rc, &err)
                                       : 0;
    if (!rc && !found) {
        sql_rollback(tx);
        return http_fail(req, PL_ENOTFOUND, NULL, "no such lesson in this course");
    }
    int64_t added = 0;
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO lesson_completions (lesson_id, user_id, course_id, completed_at)"
                      " VALUES ($1, $2, $3, $4) ON CONFLICT (lesson_id, user_id) DO NOTHING",
                      SQL_ARGS(SQL_TEXT(lid), SQL_TEXT(uid), SQL_TEXT(c.id), SQL_TEXT(now)), &added, &err);
    int64_t done = count1(tx, "SELECT count(*) FROM lesson_completions WHERE course_id = $1 AND user_id = $2", c.id,
                          uid, &rc, &err);
    int64_t total = count1(tx, "SELECT count(*) FROM lessons WHERE course_id = $1", c.id, NULL, &rc, &err);
    if (!rc && added)
        rc = outbox_emit(tx, "courses", "pl.courses.lesson_completed.v1", c.id, uid,
                         json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "course_id", c.id, "lesson_id", lid, "user_id",
                                   uid, "completed_lessons", (json_int_t)done, "total_lessons", (json_int_t)total,
                                   "completed_at", now),
                         NULL, &err);
    int64_t completed_now = 0;
    if (!rc && total > 0 && done >= total)
        rc = sql_exec(tx,
                      "UPDATE enrollments SET completed_at = $3 WHERE course_id = $1 AND user_id = $2"
                      " AND completed_at IS NULL",
                      SQL_ARGS(SQL_TEXT(c.id), SQL_TEXT(uid), SQL_TEXT(now)), &completed_now, &err);
    if (!rc && completed_now) /* once: completed_at is set only here, only while NULL */
        rc = outbox_emit(tx, "courses", "pl.courses.course_completed.v1", c.id, uid,
                         json_pack("{s:s, s:s, s:s}", "course_id", c.id, "user_id", uid, "completed_at", now), NULL,
                         &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    http_json(res, 200,
              json_pack("{s:s, s:s, s:I, s:I, s:f, s:b}", "course_id", c.id, "lesson_id", lid, "completed_lessons",
                        (json_int_t)done, "total_lessons", (json_int_t)total, "progress",
                        total ? (double)done / (double)total : 0.0, "course_completed", total > 0 && done >= total));
    return 0;
}

int me_enrollments(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const char *ls = http_query(req, "limit"), *cursor;
    char *end;
    long limit = ls ? strtol(ls, &end, 10) : 50;
    if (ls && (!*ls || *end || limit < 1 || limit > 100))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 100"), "invalid query");
    if (courses_cursor_arg(req, &cursor))
        return PL_EINVAL;
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(cs->ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return courses_store_fail(req, rc, &err);
    json_t *items = json_array();
    char last[40] = "";
    rc = sql_query(tx,
                   "SELECT e.id, e.course_id, c.title, e.via, e.order_id, e.enrolled_at, e.completed_at,"
                   " (SELECT count(*) FROM lessons l WHERE l.course_id = e.course_id),"
                   " (SELECT count(*) FROM lesson_completions lc WHERE lc.course_id = e.course_id"
                   "  AND lc.user_id = e.user_id)"
                   " FROM enrollments e JOIN courses c ON c.id = e.course_id"
                   " WHERE e.user_id = $1 AND ($2 = '' OR e.id < $2) ORDER BY e.id DESC LIMIT $3",
                   SQL_ARGS(SQL_TEXT(req->principal->user_id), SQL_TEXT(cursor ? cursor : ""), SQL_INT(limit)), &r,
                   &err);
    if (!rc) {
        while ((rc = sql_next(r, &err)) == 1) {
            int64_t total = sql_int(r, 7), done = sql_int(r, 8);
            snprintf(last, sizeof last, "%s", sql_text(r, 0));
            json_array_append_new(
                items, json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:s?, s:I, s:I, s:f, s:b}", "id", sql_text(r, 0),
                                 "course_id", sql_text(r, 1), "course_title", sql_text(r, 2), "via", sql_text(r, 3),
                                 "order_id", sql_text(r, 4), "enrolled_at", sql_text(r, 5), "completed_at",
                                 sql_text(r, 6), "completed_lessons", (json_int_t)done, "total_lessons",
                                 (json_int_t)total, "progress", total ? (double)done / (double)total : 0.0,
                                 "completed", !sql_isnull(r, 6)));
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

/* ---- quizzes ------------------------------------------------------------------------------------ */

int quiz_insert(sql_tx *tx, const char *course_id, const char *title, int pass_mark, int max_attempts,
                const json_t *questions, char id[40], pl_error *err)
{
    char now[32], *q = json_compact(questions);
    courses_now(now);
    uuid7_new(id);
    int rc = sql_exec(tx,
                      "INSERT INTO quizzes (id, course_id, title, pass_mark, max_attempts, questions, created_at,"
                      " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(course_id), SQL_TEXT(title), SQL_INT(pass_mark),
                               max_attempts ? SQL_INT(max_attempts) : SQL_NULL, SQL_TEXT(q), SQL_TEXT(now)),
                      NULL, err);
    free(q);
    return rc;
}

typedef struct quiz {
    char id[40];
    const char *title, *created_at;
    int pass_mark, max_attempts; /* max_attempts resolved against the default */
    bool default_attempts;
    json_t *questions;           /* owned */
} quiz;

static void read_quiz(courses *cs, arena *a, sql_rows *r, quiz *q)
{
    snprintf(q->id, sizeof q->id, "%s", sql_text(r, 0));
    q->title = arena_strdup(a, sql_text(r, 1));
    q->pass_mark = (int)sql_int(r, 2);
    q->default_attempts = sql_isnull(r, 3);
    q->max_attempts = q->default_attempts ? cs->quiz_max_attempts : (int)sql_int(r, 3);
    q->questions = json_loads(sql_text(r, 4), 0, NULL);
    if (!q->questions)
        q->questions = json_array();
    q->created_at = arena_strdup(a, sql_text(r, 5));
}

#define QUIZ_COLS "id, title, pass_mark, max_attempts, questions, created_at"

static json_t *quiz_json(const quiz *q, bool with_answers, const char *course_id)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:o, s:s}", "id", q->id, "course_id", course_id, "title",
                     q->title, "pass_mark", q->pass_mark, "max_attempts", q->max_attempts, "question_count",
                     (json_int_t)json_array_size(q->questions), "questions",
                     with_answers ? json_incref(q->questions) : grading_public_questions(q->questions), "created_at",
                     q->created_at);
}

int quizzes_create(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"title", "pass_mark", "max_attempts", "questions", NULL};
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    jv_only(&v, allowed);
    const char *title = jv_str(&v, "title", true, 1, 200);
    long long pass = 60, attempts = 0;
    jv_int(&v, "pass_mark", false, 0, 100, &pass);
    jv_int(&v, "max_attempts", false, 1, 1000, &attempts);
    json_t *fields = json_object();
    grading_check_questions(json_object_get(body, "questions"), fields);
    const char *k;
    json_t *m;
    json_object_foreach(fields, k, m) jv_fail(&v, k, json_string_value(m));
    json_decref(fields);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    sql_tx *tx;
    course c;
    if ((rc = begin_course(req, SQL_TX_WRITE, &tx, &c)) != 1) {
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    if (!course_can_manage(req->principal, &c)) {
        sql_rollback(tx);
        jv_free(&v);
        json_decref(body);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the course's teacher and admins add quizzes");
    }
    pl_error err = {0};
    quiz q = {.title = arena_strdup(req->arena, title), .pass_mark = (int)pass,
              .max_attempts = attempts ? (int)attempts : ((courses *)((service_ctx *)req->ctx)->state)->quiz_max_attempts,
              .questions = json_incref(json_object_get(body, "questions"))};
    rc = quiz_insert(tx, c.id, q.title, q.pass_mark, (int)attempts, q.questions, q.id, &err);
    jv_free(&v);
    json_decref(body);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc) {
        json_decref(q.questions);
        return courses_store_fail(req, rc, &err);
    }
    char now[32];
    courses_now(now);
    q.created_at = now;
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/courses/%s/quizzes/%s", c.id, q.id));
    http_json(res, 201, quiz_json(&q, true, c.id));
    json_decref(q.questions);
    return 0;
}

/* Who may read a course's quizzes: managers (with answers) and enrolled students. 1 ok, <0 recorded. */
static int quiz_reader(http_req *req, sql_tx *tx, const course *c, bool *manager)
{
    pl_error err = {0};
    *manager = course_can_manage(req->principal, c);
    if (*manager)
        return 1;
    int rc = courses_enrollment(tx, c->id, req->principal->user_id, NULL, &err);
    if (rc < 0)
        return courses_store_fail(req, rc, &err);
    return rc == 1 ? 1 : http_fail(req, PL_EFORBIDDEN, NULL, "quizzes are for students enrolled in the course");
}

int quizzes_list(http_req *req, http_res *res)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    sql_tx *tx;
    course c;
    bool manager;
    int rc = begin_course(req, SQL_TX_READ, &tx, &c);
    if (rc != 1)
        return rc;
    if ((rc = quiz_reader(req, tx, &c, &manager)) != 1) {
        sql_rollback(tx);
        return rc;
    }
    pl_error err = {0};
    sql_rows *r;
    json_t *items = json_array();
    if (!(rc = sql_query(tx, "SELECT " QUIZ_COLS " FROM quizzes WHERE course_id = $1 ORDER BY id",
                         SQL_ARGS(SQL_TEXT(c.id)), &r, &err))) {
        while ((rc = sql_next(r, &err)) == 1) {
            quiz q;
            read_quiz(cs, req->arena, r, &q);
            json_t *j = quiz_json(&q, manager, c.id);
            json_object_del(j, "questions");
            json_array_append_new(items, j);
            json_decref(q.questions);
        }
        sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return courses_store_fail(req, rc, &err);
    }
    http_json(res, 200, json_pack("{s:o}", "items", items));
    return 0;
}

/* Loads quiz {q} of course c: 1, or <0 recorded (tx rolled back). */
static int find_quiz(http_req *req, sql_tx *tx, const course *c, quiz *q)
{
    courses *cs = ((service_ctx *)req->ctx)->state;
    const char *qid = http_param(req, "q");
    pl_error err = {0};
    sql_rows *r;
    int rc = 0;
    if (courses_id_ok(qid) && !(rc = sql_query(tx, "SELECT " QUIZ_COLS " FROM quizzes WHERE id = $1 AND course_id = $2",
                                               SQL_ARGS(SQL_TEXT(qid), SQL_TEXT(c->id)), &r, &err))) {
        if ((rc = sql_next(r, &err)) == 1)
            read_quiz(cs, req->arena, r, q);
        sql_rows_close(r);
    }
    if (rc == 1)
        return 1;
    sql_rollback(tx);
    return rc < 0 ? courses_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such quiz");
}

int quizzes_get(http_req *req, http_res *res)
{
    sql_tx *tx;
    course c;
    bool manager;
    quiz q;
    int rc = begin_course(req, SQL_TX_READ, &tx, &c);
    if (rc != 1)
        return rc;
    if ((rc = quiz_reader(req, tx, &c, &manager)) != 1) {
        sql_rollback(tx);
        return rc;
    }
    if ((rc = find_quiz(req, tx, &c, &q)) != 1)
        return rc;
    pl_error err = {0};
    rc = 0;
    int used = (int)count1(tx, "SELECT count(*) FROM quiz_submissions WHERE quiz_id = $1 AND user_id = $2", q.id,
                           req->principal->user_id, &rc, &err);
    sql_rollback(tx);
    if (rc) {
        json_decref(q.questions);
        return courses_store_fail(req, rc, &err);
    }
    json_t *j = quiz_json(&q, manager, c.id);
    json_object_set_new(j, "attempts_used", json_integer(used));
    json_object_set_new(j, "attempts_left", json_integer(q.max_attempts > used ? q.max_attempts - used : 0));
    json_decref(q.questions);
    http_json(res, 200, j);
    return 0;
}

int quizzes_submit(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"answers", NULL};
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    jv_only(&v, allowed);
    if (!json_object_get(body, "answers"))
        jv_fail(&v, "answers", "is required");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    const char *uid = req->principal->user_id;
    sql_tx *tx;
    course c;
    quiz q;
    if ((rc = begin_course(req, SQL_TX_WRITE, &tx, &c)) != 1) {
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    pl_error err = {0};
    /* lock the enrollment: one student's submissions are numbered one after the other */
    int64_t enrolled = 0;
    rc = sql_exec(tx, "UPDATE enrollments SET user_id = user_id WHERE course_id = $1 AND user_id = $2",
                  SQL_ARGS(SQL_TEXT(c.id), SQL_TEXT(uid)), &enrolled, &err);
    if (rc || !enrolled) {
        sql_rollback(tx);
        jv_free(&v);
        json_decref(body);
        return rc ? courses_store_fail(req, rc, &err)
                  : http_fail(req, PL_EFORBIDDEN, NULL, "only students enrolled in the course submit its quizzes");
    }
    if ((rc = find_quiz(req, tx, &c, &q)) != 1) {
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    int score = 0;
    json_t *results = NULL, *fields = json_object();
    if (grading_grade(q.questions, json_object_get(body, "answers"), &score, &results, fields)) {
        sql_rollback(tx);
        json_decref(q.questions);
        const char *k;
        json_t *m;
        json_object_foreach(fields, k, m) jv_fail(&v, k, json_string_value(m));
        json_decref(fields);
        return http_fail_fields(req, &v, body);
    }
    json_decref(fields);
    rc = 0;
    int used = (int)count1(tx, "SELECT count(*) FROM quiz_submissions WHERE quiz_id = $1 AND user_id = $2", q.id, uid,
                           &rc, &err);
    if (!rc && used >= q.max_attempts) {
        sql_rollback(tx);
        json_decref(q.questions);
        json_decref(results);
        jv_free(&v);
        json_decref(body);
        return courses_error(res, 409, "attempts_exhausted",
                             arena_sprintf(req->arena, "this quiz allows %d attempts and all were used", q.max_attempts),
                             json_pack("{s:i}", "max_attempts", q.max_attempts));
    }
    char id[40], now[32];
    uuid7_new(id);
    courses_now(now);
    bool passed = score >= q.pass_mark;
    int attempt = used + 1;
    char *answers = json_compact(json_object_get(body, "answers")), *res_text = json_compact(results);
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO quiz_submissions (id, quiz_id, course_id, user_id, attempt, score, passed, answers,"
                      " results, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(q.id), SQL_TEXT(c.id), SQL_TEXT(uid), SQL_INT(attempt),
                               SQL_INT(score), SQL_INT(passed), SQL_TEXT(answers), SQL_TEXT(res_text), SQL_TEXT(now)),
                      NULL, &err);
    free(answers);
    free(res_text);
    jv_free(&v);
    json_decref(body);
    json_decref(q.questions);
    if (!rc)
        rc = outbox_emit(tx, "courses", "pl.courses.quiz_completed.v1", q.id, uid,
                         json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:i, s:s}", "course_id", c.id, "quiz_id", q.id,
                                   "user_id", uid, "submission_id", id, "score", score, "passed", passed, "attempt",
                                   attempt, "completed_at", now),
                         NULL, &err);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    if (rc) {
        json_decref(results);
        return courses_store_fail(req, rc, &err);
    }
    http_header_add(req, res, "Location",
                    arena_sprintf(req->arena, "/api/v1/courses/%s/quizzes/%s/submissions/%s", c.id, q.id, id));
    http_json(res, 201,
              json_pack("{s:s, s:s, s:s, s:i, s:i, s:b, s:i, s:o, s:i, s:s}", "id", id, "quiz_id", q.id, "course_id",
                        c.id, "attempt", attempt, "score", score, "passed", passed, "pass_mark", q.pass_mark, "results",
                        results, "attempts_left", q.max_attempts - attempt, "submitted_at", now));
    return 0;
}
