/* grading.c - quiz validation, the student's view and grading (see grading.h). */
#include "services/courses/grading.h"
#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(json_t *fields, const char *prefix, size_t i, const char *field, const char *msg)
{
    char key[96];
    if (field)
        snprintf(key, sizeof key, "%s[%zu].%s", prefix, i, field);
    else
        snprintf(key, sizeof key, "%s[%zu]", prefix, i);
    if (!json_object_get(fields, key))
        json_object_set_new(fields, key, json_string(msg));
}

static bool text_ok(const json_t *s, size_t min, size_t max)
{
    if (!json_is_string(s))
        return false;
    size_t n = utf8_len(json_string_value(s));
    return n >= min && n <= max && strlen(json_string_value(s)) == json_string_length(s);
}

static bool is_index(const json_t *v, size_t n)
{
    return json_is_integer(v) && json_integer_value(v) >= 0 && (size_t)json_integer_value(v) < n;
}

/* True when arr is an array of 1..n distinct indexes below n. */
static bool index_set_ok(const json_t *arr, size_t n, bool allow_empty)
{
    if (!json_is_array(arr) || json_array_size(arr) > n || (!allow_empty && json_array_size(arr) == 0))
        return false;
    bool seen[COURSES_QUIZ_MAX_OPTIONS] = {false};
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!is_index(v, n) || seen[json_integer_value(v)])
            return false;
        seen[json_integer_value(v)] = true;
    }
    return true;
}

static const char *const question_keys[] = {"kind", "prompt", "options", "correct", "accepted", NULL};

static void check_question(const json_t *q, size_t i, json_t *fields)
{
    if (!json_is_object(q)) {
        fail(fields, "questions", i, NULL, "must be an object");
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)q, k, v) {
        bool known = false;
        for (const char *const *a = question_keys; *a && !known; a++)
            known = strcmp(*a, k) == 0;
        if (!known)
            fail(fields, "questions", i, k, "is not a known field");
    }
    const char *kind = json_string_value(json_object_get(q, "kind"));
    if (!text_ok(json_object_get(q, "prompt"), 1, 2000))
        fail(fields, "questions", i, "prompt", "must be a string of 1 to 2000 characters");
    if (!kind || (strcmp(kind, "single") && strcmp(kind, "multiple") && strcmp(kind, "text"))) {
        fail(fields, "questions", i, "kind", "must be single, multiple or text");
        return;
    }
    const json_t *options = json_object_get(q, "options"), *correct = json_object_get(q, "correct"),
                 *accepted = json_object_get(q, "accepted");
    if (strcmp(kind, "text") == 0) {
        if (options || correct)
            fail(fields, "questions", i, options ? "options" : "correct", "is not used by text questions");
        size_t n = json_array_size(accepted), j;
        json_t *a;
        bool ok = json_is_array(accepted) && n >= 1 && n <= COURSES_QUIZ_MAX_ACCEPTED;
        json_array_foreach(accepted, j, a) ok = ok && text_ok(a, 1, COURSES_TEXT_ANSWER_MAX);
        if (!ok)
            fail(fields, "questions", i, "accepted", "must be 1 to 20 strings of 1 to 500 characters");
        return;
    }
    if (accepted)
        fail(fields, "questions", i, "accepted", "is only used by text questions");
    size_t n = json_array_size(options), j;
    json_t *o;
    bool ok = json_is_array(options) && n >= 2 && n <= COURSES_QUIZ_MAX_OPTIONS;
    json_array_foreach(options, j, o) ok = ok && text_ok(o, 1, 200);
    if (!ok) {
        fail(fields, "questions", i, "options", "must be 2 to 10 strings of 1 to 200 characters");
        return;
    }
    if (strcmp(kind, "single") == 0 ? !is_index(correct, n) : !index_set_ok(correct, n, false))
        fail(fields, "questions", i, "correct",
             strcmp(kind, "single") == 0 ? "must be the index of an option"
                                         : "must be a non-empty array of distinct option indexes");
}

bool grading_check_questions(const json_t *questions, json_t *fields)
{
    size_t before = json_object_size(fields);
    if (!json_is_array(questions) || json_array_size(questions) < 1 ||
        json_array_size(questions) > COURSES_QUIZ_MAX_QUESTIONS) {
        json_object_set_new(fields, "questions", json_string("must be an array of 1 to 50 questions"));
        return false;
    }
    size_t i;
    json_t *q;
    json_array_foreach(questions, i, q) check_question(q, i, fields);
    return json_object_size(fields) == before;
}

json_t *grading_public_questions(const json_t *questions)
{
    json_t *out = json_array();
    size_t i;
    json_t *q;
    json_array_foreach(questions, i, q) {
        json_t *p = json_pack("{s:I, s:O, s:O}", "index", (json_int_t)i, "kind", json_object_get(q, "kind"), "prompt",
                              json_object_get(q, "prompt"));
        if (json_object_get(q, "options"))
            json_object_set(p, "options", json_object_get(q, "options"));
        json_array_append_new(out, p);
    }
    return out;
}

void grading_normalize(const char *in, char *out, size_t size)
{
    size_t o = 0;
    bool space = false;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            space = o > 0; /* leading white space is dropped */
            continue;
        }
        if (space && o + 1 < size)
            out[o++] = ' ';
        space = false;
        if (o + 1 < size)
            out[o++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + ('a' - 'A') : *p);
    }
    out[o < size ? o : size - 1] = '\0'; /* trailing white space was never written */
}

static bool text_matches(const json_t *accepted, const char *answer)
{
    char a[COURSES_TEXT_ANSWER_MAX * 4 + 1], b[COURSES_TEXT_ANSWER_MAX * 4 + 1];
    grading_normalize(answer, a, sizeof a);
    size_t i;
    json_t *v;
    json_array_foreach(accepted, i, v) {
        grading_normalize(json_string_value(v), b, sizeof b);
        if (strcmp(a, b) == 0)
            return true;
    }
    return false;
}

static bool same_set(const json_t *x, const json_t *y)
{
    if (json_array_size(x) != json_array_size(y))
        return false;
    bool in_x[COURSES_QUIZ_MAX_OPTIONS] = {false};
    size_t i;
    json_t *v;
    json_array_foreach(x, i, v) in_x[json_integer_value(v)] = true;
    json_array_foreach(y, i, v) if (!in_x[json_integer_value(v)]) return false;
    return true;
}

int grading_grade(const json_t *questions, const json_t *answers, int *score, json_t **results, json_t *fields)
{
    size_t nq = json_array_size(questions);
    *results = NULL;
    if (!json_is_array(answers) || json_array_size(answers) != nq) {
        json_object_set_new(fields, "answers",
                            json_string("must be an array with one answer (or null) per question, in order"));
        return -1;
    }
    size_t before = json_object_size(fields), right = 0, i;
    json_t *res = json_array(), *a;
    json_array_foreach(answers, i, a) {
        const json_t *q = json_array_get(questions, i);
        const char *kind = json_string_value(json_object_get(q, "kind"));
        size_t nopt = json_array_size(json_object_get(q, "options"));
        bool ok = false;
        if (json_is_null(a)) {
            ok = false;
        } else if (strcmp(kind, "single") == 0) {
            if (!is_index(a, nopt))
                fail(fields, "answers", i, NULL, "must be the index of an option, or null");
            else
                ok = json_integer_value(a) == json_integer_value(json_object_get(q, "correct"));
        } else if (strcmp(kind, "multiple") == 0) {
            if (!index_set_ok(a, nopt, true))
                fail(fields, "answers", i, NULL, "must be an array of distinct option indexes, or null");
            else
                ok = same_set(a, json_object_get(q, "correct"));
        } else {
            if (!text_ok(a, 0, COURSES_TEXT_ANSWER_MAX))
                fail(fields, "answers", i, NULL, "must be a string of at most 500 characters, or null");
            else
                ok = text_matches(json_object_get(q, "accepted"), json_string_value(a));
        }
        right += ok;
        json_array_append_new(res, json_boolean(ok));
    }
    if (json_object_size(fields) != before) {
        json_decref(res);
        return -1;
    }
    *score = nq ? (int)((right * 100 + nq / 2) / nq) : 0;
    *results = res;
    return 0;
}
