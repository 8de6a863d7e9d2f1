/*
 * courses.h - internal to the courses service: its state, the course record,
 * helpers shared by its handlers and the saga participant. Nothing outside
 * src/services/courses includes it.
 */
#ifndef PULSE_COURSES_COURSES_H
#define PULSE_COURSES_COURSES_H

#include "core/arena.h"
#include "services/service.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct courses {
    service_ctx *ctx;
    int quiz_max_attempts;   /* service.courses.quiz_max_attempts */
    bool fault_injection;    /* service.courses.fault_injection: PUT courses/{id}/faults exists */
} courses;

typedef struct course {
    char id[40];
    const char *teacher_id, *title, *description, *tags /* JSON text */, *level, *currency, *created_at,
        *updated_at;
    bool premium, published, fail_access_grant;
    bool has_price, has_capacity;
    int64_t price_cents, capacity, seats_used;
} course;

#define COURSE_COLS                                                                                                 \
    "id, teacher_id, title, description, tags, level, premium, price_cents, currency, capacity, seats_used,"    \
    " published, fail_access_grant, created_at, updated_at"

/* ---- courses.c: shared helpers ---- */
/* 1 found, 0 none, <0 error; strings live in a. */
int course_load(sql_tx *tx, arena *a, const char *id, course *out, pl_error *err);
void course_read(arena *a, sql_rows *r, course *out); /* a row of COURSE_COLS */
json_t *course_json(const course *c);
/* The data of course_created/updated events. */
json_t *course_event_data(const course *c);
bool course_can_manage(const principal *p, const course *c);
bool course_can_see(const principal *p, const course *c);
/* The caller when a token was sent (NULL when none); <0 (recorded on req) for a bad token. */
int courses_principal(http_req *req, const principal **out);
/* Writes the error shape with an API code of the service's own (402 purchase_required, ...). */
int courses_error(http_res *res, int status, const char *code, const char *message, json_t *fields);
int courses_store_fail(http_req *req, int rc, const pl_error *err);
void courses_now(char out[32]);
bool courses_id_ok(const char *s); /* a UUID as ids here are */
/* ?cursor= of a list: *id gets the id an opaque cursor (core/cursor.h) carries,
 * NULL when there is none. 0, or the recorded 400 for anything else. */
int courses_cursor_arg(http_req *req, const char **id);
/* The next_cursor of a page ending at id; JSON null when id is NULL (no more). */
json_t *courses_next_cursor(const char *id);
/* 1 when user is enrolled in course (enrollment id to out, may be NULL), 0 not, <0 error */
int courses_enrollment(sql_tx *tx, const char *course_id, const char *user_id, char out[40], pl_error *err);
/* Takes one seat when capacity allows: 1 taken, 0 sold out, <0 error. */
int courses_take_seat(sql_tx *tx, const char *course_id, pl_error *err);
int courses_free_seat(sql_tx *tx, const char *course_id, pl_error *err);
/* Inserts an enrollment and emits enrolled.v1; id to out. */
int courses_enroll(sql_tx *tx, const char *course_id, const char *user_id, const char *via, const char *order_id,
                   char out[40], pl_error *err);

/* ---- catalog.c ---- */
/* Inserts a course (c->id, timestamps set) with its tags; emits course_created (and course_published). */
int course_insert(sql_tx *tx, course *c, const json_t *tags, pl_error *err);
/* Appends a lesson to a course the caller has locked. */
int lesson_insert(sql_tx *tx, const char *course_id, const char *title, const char *content, char id[40],
                  int64_t *position, pl_error *err);
int courses_create(http_req *req, http_res *res);
int courses_list(http_req *req, http_res *res);
int courses_get(http_req *req, http_res *res);
int courses_patch(http_req *req, http_res *res);
int courses_faults(http_req *req, http_res *res);
int lessons_list(http_req *req, http_res *res);
int lessons_create(http_req *req, http_res *res);
int lessons_patch(http_req *req, http_res *res);
int lessons_delete(http_req *req, http_res *res);
int lessons_reorder(http_req *req, http_res *res);
int paths_create(http_req *req, http_res *res);
int paths_list(http_req *req, http_res *res);
int paths_get(http_req *req, http_res *res);
int paths_patch(http_req *req, http_res *res);
int paths_delete(http_req *req, http_res *res);

/* ---- learning.c ---- */
int courses_enroll_post(http_req *req, http_res *res);
int lessons_complete(http_req *req, http_res *res);
int me_enrollments(http_req *req, http_res *res);
int quizzes_create(http_req *req, http_res *res);
int quizzes_list(http_req *req, http_res *res);
int quizzes_get(http_req *req, http_res *res);
int quizzes_submit(http_req *req, http_res *res);

/* Inserts a quiz whose questions grading_check_questions accepted. */
int quiz_insert(sql_tx *tx, const char *course_id, const char *title, int pass_mark, int max_attempts /* 0: default */,
                const json_t *questions, char id[40], pl_error *err);

/* ---- demo.c ---- */
/* Seeds the demo courses for teacher_id and marks the demo done. */
int demo_seed(sql_tx *tx, const char *teacher_id, pl_error *err);

/* ---- saga.c ---- */
int saga_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err);

#endif
