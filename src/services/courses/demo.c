/*
 * demo.c - demo courses for identity's demo teacher: two free courses with
 * lessons (one with a quiz), a premium course with a few seats (for the
 * purchase saga), a draft, and a learning path through the free ones. Run
 * inside the transaction that found the teacher (the demo hook, or the users
 * consumer when the teacher arrived later), which also marks the demo done.
 */
#include "services/courses/courses.h"
#include "core/uuid.h"

#include <stdio.h>
#include <string.h>

static int demo_course(sql_tx *tx, const char *teacher, const char *title, const char *description,
                       const char *tags, const char *level, int64_t price_cents, int64_t capacity, bool published,
                       char id[40], pl_error *err)
{
    char now[32];
    courses_now(now);
    course c = {.teacher_id = teacher, .title = title, .description = description, .tags = tags, .level = level,
                .premium = price_cents > 0, .has_price = price_cents > 0, .price_cents = price_cents,
                .currency = price_cents > 0 ? "EUR" : NULL, .has_capacity = capacity > 0, .capacity = capacity,
                .published = published, .created_at = now, .updated_at = now};
    uuid7_new(c.id);
    snprintf(id, 40, "%s", c.id);
    json_t *t = json_loads(tags, 0, NULL);
    int rc = course_insert(tx, &c, t, err);
    json_decref(t);
    return rc;
}

static int demo_lessons(sql_tx *tx, const char *course_id, const char *const *lessons, pl_error *err)
{
    int rc = 0;
    for (size_t i = 0; lessons[i] && !rc; i += 2) {
        char id[40];
        int64_t pos;
        rc = lesson_insert(tx, course_id, lessons[i], lessons[i + 1], id, &pos, err);
    }
    return rc;
}

int demo_seed(sql_tx *tx, const char *teacher_id, pl_error *err)
{
    static const char *const c_lessons[] = {
        "Hello, world", "Compile and run your first program with gcc -Wall.",
        "Pointers", "An address, what it points to, and why NULL is not a string.",
        "Memory", "malloc, free, and who owns what: write it in the header.",
        NULL};
    static const char *const ds_lessons[] = {
        "Arrays and lists", "Contiguous memory against linked nodes: cache lines decide.",
        "Hash tables", "Open addressing, load factors and tombstones.",
        NULL};
    static const char *const sys_lessons[] = {
        "Processes", "fork, exec and wait.", "Threads", "Mutexes, condition variables and data races.", NULL};
    char c_id[40], ds_id[40], sys_id[40], draft_id[40], quiz_id[40];
    int rc = demo_course(tx, teacher_id, "C from scratch", "A first course in C for campus newcomers.",
                         "[\"c\",\"programming\"]", "beginner", 0, 0, true, c_id, err);
    if (!rc)
        rc = demo_lessons(tx, c_id, c_lessons, err);
    if (!rc) {
        json_t *q = json_loads(
            "[{\"kind\":\"single\",\"prompt\":\"Which operator takes an address?\",\"options\":[\"*\",\"&\",\"->\"],"
            "\"correct\":1},"
            "{\"kind\":\"multiple\",\"prompt\":\"Which of these free memory?\",\"options\":[\"free\",\"malloc\","
            "\"realloc(p, 0)\"],\"correct\":[0,2]},"
            "{\"kind\":\"text\",\"prompt\":\"What does a NUL byte end?\",\"accepted\":[\"a string\",\"string\"]}]",
            0, NULL);
        rc = quiz_insert(tx, c_id, "Pointers check", 60, 0, q, quiz_id, err);
        json_decref(q);
    }
    if (!rc)
        rc = demo_course(tx, teacher_id, "Data structures", "Arrays, lists and hash tables, measured.",
                         "[\"c\",\"algorithms\"]", "intermediate", 0, 30, true, ds_id, err);
    if (!rc)
        rc = demo_lessons(tx, ds_id, ds_lessons, err);
    if (!rc)
        rc = demo_course(tx, teacher_id, "Systems programming masterclass",
                         "Processes, threads and the kernel: a premium course with few seats.",
                         "[\"systems\",\"c\"]", "advanced", 4900, 5, true, sys_id, err);
    if (!rc)
        rc = demo_lessons(tx, sys_id, sys_lessons, err);
    if (!rc)
        rc = demo_course(tx, teacher_id, "Compilers (draft)", "Not published yet: only its teacher and admins see it.",
                         "[\"compilers\"]", "advanced", 0, 0, false, draft_id, err);
    char path_id[40], now[32];
    uuid7_new(path_id);
    courses_now(now);
    if (!rc)
        rc = sql_exec(tx,
                      "INSERT INTO paths (id, owner_id, title, description, created_at, updated_at)"
                      " VALUES ($1, $2, 'From C to data structures', 'Start with C, then build the structures.', $3, $3)",
                      SQL_ARGS(SQL_TEXT(path_id), SQL_TEXT(teacher_id), SQL_TEXT(now)), NULL, err);
    if (!rc)
        rc = sql_exec(tx, "INSERT INTO path_courses (path_id, position, course_id) VALUES ($1, 1, $2), ($1, 2, $3)",
                      SQL_ARGS(SQL_TEXT(path_id), SQL_TEXT(c_id), SQL_TEXT(ds_id)), NULL, err);
    if (!rc)
        rc = sql_exec(tx, "UPDATE courses_demo SET state = 'done' WHERE id = 1", SQL_NOARGS, NULL, err);
    return rc;
}
