/* courses_grading.c - unit tests of the courses service's quiz rules:
 * question validation, the student's view (no answers), text normalisation
 * and grading of each kind (src/services/courses/grading.c). */
#include "services/courses/grading.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    cr_assert_not_null(j, "bad test JSON: %s", e.text);
    return j;
}

static const char QUIZ[] =
    "[{\"kind\":\"single\",\"prompt\":\"2+2?\",\"options\":[\"3\",\"4\",\"5\"],\"correct\":1},"
    " {\"kind\":\"multiple\",\"prompt\":\"primes?\",\"options\":[\"2\",\"4\",\"5\",\"9\"],\"correct\":[2,0]},"
    " {\"kind\":\"text\",\"prompt\":\"capital of France?\",\"accepted\":[\"Paris\",\"  ville  de PARIS \"]}]";

static int grade(const char *answers, json_t **results, json_t **fields)
{
    json_t *q = parse(QUIZ), *a = parse(answers);
    *fields = json_object();
    int score = -1;
    int rc = grading_grade(q, a, &score, results, *fields);
    json_decref(q);
    json_decref(a);
    return rc ? -1 : score;
}

Test(courses_grading, normalize)
{
    char out[64];
    grading_normalize("  Hello \t  World\n", out, sizeof out);
    cr_assert_str_eq(out, "hello world");
    grading_normalize("", out, sizeof out);
    cr_assert_str_eq(out, "");
    grading_normalize(" \t\n ", out, sizeof out);
    cr_assert_str_eq(out, "");
    grading_normalize("ÄBC Straße", out, sizeof out); /* ASCII folding only: UTF-8 bytes pass unchanged */
    cr_assert_str_eq(out, "Äbc straße");
    char small[4];
    grading_normalize("abcdef", small, sizeof small);
    cr_assert_str_eq(small, "abc");
}

Test(courses_grading, all_right_all_wrong_and_partial)
{
    json_t *r, *f;
    cr_assert_eq(grade("[1, [0, 2], \"paris\"]", &r, &f), 100);
    cr_assert(json_is_true(json_array_get(r, 0)) && json_is_true(json_array_get(r, 1)) &&
              json_is_true(json_array_get(r, 2)));
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[0, [0], \"London\"]", &r, &f), 0);
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[1, null, null]", &r, &f), 33);
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[1, [2, 0], null]", &r, &f), 67);
    cr_assert(json_is_false(json_array_get(r, 2)));
    json_decref(r);
    json_decref(f);
}

Test(courses_grading, multiple_is_an_exact_set)
{
    json_t *r, *f;
    cr_assert_eq(grade("[null, [0, 2, 1], null]", &r, &f), 0, "a superset is wrong");
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[null, [2], null]", &r, &f), 0, "a subset is wrong");
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[null, [], null]", &r, &f), 0, "nothing chosen is wrong");
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[null, [2, 0], null]", &r, &f), 33, "order does not matter");
    json_decref(r);
    json_decref(f);
}

Test(courses_grading, text_is_normalised)
{
    json_t *r, *f;
    cr_assert_eq(grade("[null, null, \"  PARIS\"]", &r, &f), 33);
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[null, null, \"Ville De   Paris\"]", &r, &f), 33, "spaces collapse, case folds");
    json_decref(r);
    json_decref(f);
    cr_assert_eq(grade("[null, null, \"Pari s\"]", &r, &f), 0);
    json_decref(r);
    json_decref(f);
}

Test(courses_grading, answers_that_do_not_fit)
{
    static const char *const bad[] = {"[1, [0, 2]]",        "[1, [0, 2], \"x\", 3]", "{}",
                                      "[7, null, null]",    "[\"1\", null, null]",   "[null, [0, 0], null]",
                                      "[null, [9], null]",  "[null, 2, null]",       "[null, null, 5]",
                                      "[-1, null, null]",   "[true, null, null]",    "[1.0, null, null]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *r = NULL, *f;
        cr_assert_eq(grade(bad[i], &r, &f), -1, "%s was graded", bad[i]);
        cr_assert_null(r);
        cr_assert_gt(json_object_size(f), 0, "%s: no field named", bad[i]);
        json_decref(f);
    }
}

Test(courses_grading, question_validation)
{
    json_t *f = json_object(), *q = parse(QUIZ);
    cr_assert(grading_check_questions(q, f));
    cr_assert_eq(json_object_size(f), 0);
    json_decref(q);
    static const char *const bad[] = {
        "[]",
        "{}",
        "[1]",
        "[{\"kind\":\"essay\",\"prompt\":\"x\"}]",
        "[{\"kind\":\"single\",\"prompt\":\"x\",\"options\":[\"a\"],\"correct\":0}]",
        "[{\"kind\":\"single\",\"prompt\":\"x\",\"options\":[\"a\",\"b\"],\"correct\":2}]",
        "[{\"kind\":\"single\",\"prompt\":\"x\",\"options\":[\"a\",\"b\"]}]",
        "[{\"kind\":\"single\",\"prompt\":\"\",\"options\":[\"a\",\"b\"],\"correct\":0}]",
        "[{\"kind\":\"multiple\",\"prompt\":\"x\",\"options\":[\"a\",\"b\"],\"correct\":[]}]",
        "[{\"kind\":\"multiple\",\"prompt\":\"x\",\"options\":[\"a\",\"b\"],\"correct\":[1,1]}]",
        "[{\"kind\":\"multiple\",\"prompt\":\"x\",\"options\":[\"a\",\"\"],\"correct\":[1]}]",
        "[{\"kind\":\"text\",\"prompt\":\"x\",\"accepted\":[]}]",
        "[{\"kind\":\"text\",\"prompt\":\"x\",\"accepted\":[\"a\"],\"correct\":0}]",
        "[{\"kind\":\"text\",\"prompt\":\"x\",\"accepted\":[\"a\"],\"extra\":1}]",
        "[{\"kind\":\"single\",\"prompt\":\"x\",\"options\":[\"a\",\"b\"],\"correct\":0,\"accepted\":[\"a\"]}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *fields = json_object(), *b = parse(bad[i]);
        cr_assert_not(grading_check_questions(b, fields), "%s accepted", bad[i]);
        cr_assert_gt(json_object_size(fields), 0);
        json_decref(fields);
        json_decref(b);
    }
    json_decref(f);
}

Test(courses_grading, the_student_view_has_no_answers)
{
    json_t *q = parse(QUIZ), *p = grading_public_questions(q);
    cr_assert_eq(json_array_size(p), 3);
    size_t i;
    json_t *x;
    json_array_foreach(p, i, x) {
        cr_assert_null(json_object_get(x, "correct"));
        cr_assert_null(json_object_get(x, "accepted"));
        cr_assert_eq(json_integer_value(json_object_get(x, "index")), (json_int_t)i);
    }
    char *s = json_dumps(p, 0);
    cr_assert_null(strstr(s, "Paris"), "an accepted answer leaked: %s", s);
    free(s);
    cr_assert_eq(json_array_size(json_object_get(json_array_get(p, 1), "options")), 4);
    json_decref(p);
    json_decref(q);
}
