/* rules.c - badge rules (see rules.h). */
#include "services/achievements/rules.h"
#include "core/timeutil.h"

#include <string.h>

const badge_info badges[] = {
    {"first_post", "First post", "Shared a first post with the campus"},
    {"first_course_completed", "Course finisher", "Completed a first course"},
    {"quiz_ace", "Quiz ace", "Passed a quiz with a score of 90% or more"},
    {"streak_7", "7-day streak", "Active on seven days in a row"},
    {"first_peer_review", "Peer reviewer", "Wrote a first peer review"},
};
const int nbadges = sizeof badges / sizeof badges[0];

const badge_info *badge_find(const char *badge)
{
    for (int i = 0; i < nbadges; i++)
        if (strcmp(badges[i].badge, badge) == 0)
            return &badges[i];
    return NULL;
}

static const char *member(const json_t *data, const char *key)
{
    return json_string_value(json_object_get(data, key));
}

int rules_apply(const char *type, const json_t *data, rule_outcome *out)
{
    *out = (rule_outcome){0};
    if (strcmp(type, "pl.social.post_created.v1") == 0) {
        out->user_id = member(data, "author_id");
        out->badge = "first_post";
        out->activity = true;
    } else if (strcmp(type, "pl.social.comment_created.v1") == 0) {
        out->user_id = member(data, "author_id");
        if (json_is_true(json_object_get(data, "peer_review")))
            out->badge = "first_peer_review";
        out->activity = true;
    } else if (strcmp(type, "pl.courses.course_completed.v1") == 0) {
        out->user_id = member(data, "user_id");
        out->badge = "first_course_completed";
        out->activity = true;
    } else if (strcmp(type, "pl.courses.quiz_completed.v1") == 0) {
        const json_t *score = json_object_get(data, "score");
        out->user_id = member(data, "user_id");
        if (!json_is_number(score))
            return -1;
        /* passed alone is not enough: a quiz with a pass mark under 90 can
         * be passed without being aced */
        if (json_is_true(json_object_get(data, "passed")) && json_number_value(score) >= QUIZ_ACE_SCORE)
            out->badge = "quiz_ace";
        out->activity = true;
    } else if (strcmp(type, "pl.courses.lesson_completed.v1") == 0) {
        out->user_id = member(data, "user_id");
        out->activity = true;
    } else {
        return -1;
    }
    return out->user_id ? 0 : -1;
}

int64_t rules_day(const char *rfc3339)
{
    int64_t ms;
    if (!rfc3339 || time_parse_rfc3339(rfc3339, &ms))
        return -1;
    /* floor division: times before 1970 are not expected, but stay correct */
    return ms >= 0 ? ms / 86400000 : -((-ms + 86400000 - 1) / 86400000);
}

static bool has_day(const int64_t *days, int n, int64_t d)
{
    for (int i = 0; i < n; i++)
        if (days[i] == d)
            return true;
    return false;
}

int rules_run_length(const int64_t *days, int n, int64_t day)
{
    if (!has_day(days, n, day))
        return 0;
    int run = 1;
    for (int64_t d = day - 1; has_day(days, n, d); d--)
        run++;
    for (int64_t d = day + 1; has_day(days, n, d); d++)
        run++;
    return run;
}
