/* achievements_rules.c - unit tests of the badge rules (src/services/achievements/rules.c). */
#include "services/achievements/rules.h"

#include <criterion/criterion.h>

static rule_outcome apply(const char *type, const char *data_json, int *rc)
{
    json_error_t je;
    json_t *data = json_loads(data_json, 0, &je);
    cr_assert_not_null(data, "bad test JSON: %s", je.text);
    rule_outcome o;
    *rc = rules_apply(type, data, &o);
    /* the outcome borrows from data: copy what the asserts need before freeing */
    static char user[64];
    snprintf(user, sizeof user, "%s", o.user_id ? o.user_id : "");
    o.user_id = o.user_id ? user : NULL;
    json_decref(data);
    return o;
}

Test(achievements, first_post_and_peer_review)
{
    int rc;
    rule_outcome o = apply("pl.social.post_created.v1", "{\"author_id\":\"u1\",\"post_id\":\"p\"}", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(o.user_id, "u1");
    cr_assert_str_eq(o.badge, "first_post");
    cr_assert(o.activity);

    o = apply("pl.social.comment_created.v1", "{\"author_id\":\"u2\",\"peer_review\":false}", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_null(o.badge, "a plain comment earns no badge");
    cr_assert(o.activity);
    o = apply("pl.social.comment_created.v1", "{\"author_id\":\"u2\",\"peer_review\":true}", &rc);
    cr_assert_str_eq(o.badge, "first_peer_review");
}

Test(achievements, quiz_ace_needs_a_pass_and_90)
{
    int rc;
    rule_outcome o = apply("pl.courses.quiz_completed.v1", "{\"user_id\":\"u\",\"score\":90,\"passed\":true}", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(o.badge, "quiz_ace");
    o = apply("pl.courses.quiz_completed.v1", "{\"user_id\":\"u\",\"score\":89.5,\"passed\":true}", &rc);
    cr_assert_null(o.badge);
    o = apply("pl.courses.quiz_completed.v1", "{\"user_id\":\"u\",\"score\":95,\"passed\":false}", &rc);
    cr_assert_null(o.badge, "a failed attempt (pass mark above 95) is no ace");
    o = apply("pl.courses.quiz_completed.v1", "{\"user_id\":\"u\",\"passed\":true}", &rc);
    cr_assert_eq(rc, -1, "a quiz result without a score is malformed");
}

Test(achievements, course_and_lesson)
{
    int rc;
    rule_outcome o = apply("pl.courses.course_completed.v1", "{\"user_id\":\"u\",\"course_id\":\"c\"}", &rc);
    cr_assert_str_eq(o.badge, "first_course_completed");
    o = apply("pl.courses.lesson_completed.v1", "{\"user_id\":\"u\"}", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_null(o.badge);
    cr_assert(o.activity);
}

Test(achievements, malformed_and_unknown)
{
    int rc;
    apply("pl.social.post_created.v1", "{\"post_id\":\"p\"}", &rc);
    cr_assert_eq(rc, -1, "no author");
    apply("pl.social.post_created.v1", "{\"author_id\":42}", &rc);
    cr_assert_eq(rc, -1, "author not a string");
    apply("pl.social.post_liked.v1", "{\"user_id\":\"u\"}", &rc);
    cr_assert_eq(rc, -1, "not a type the rules know");
    cr_assert_not_null(badge_find("streak_7"));
    cr_assert_null(badge_find("streak_8"));
}

Test(achievements, days)
{
    cr_assert_eq(rules_day("1970-01-01T00:00:00Z"), 0);
    cr_assert_eq(rules_day("1970-01-02T00:00:00.000Z"), 1);
    cr_assert_eq(rules_day("2026-11-22T23:59:59.999Z"), rules_day("2026-11-22T00:00:00Z"));
    cr_assert_eq(rules_day("2026-11-23T00:30:00+01:00"), rules_day("2026-11-22T12:00:00Z"), "offsets count in UTC");
    cr_assert_eq(rules_day("yesterday"), -1);
    cr_assert_eq(rules_day(NULL), -1);
}

Test(achievements, runs)
{
    int64_t seven[] = {10, 11, 12, 13, 14, 15, 16};
    cr_assert_eq(rules_run_length(seven, 7, 13), 7);
    int64_t gap[] = {10, 11, 12, 14, 15, 16, 17};
    cr_assert_eq(rules_run_length(gap, 7, 12), 3);
    cr_assert_eq(rules_run_length(gap, 7, 15), 4);
    cr_assert_eq(rules_run_length(gap, 7, 13), 0, "a day not in the set has no run");
    /* out of order, with duplicates: the day that fills the gap completes the run */
    int64_t filled[] = {16, 10, 14, 11, 13, 13, 12, 15};
    cr_assert_eq(rules_run_length(filled, 8, 13), 7);
}
