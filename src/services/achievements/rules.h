/*
 * rules.h - achievements' badge rules as pure functions of an event (no I/O),
 * so they can be tested alone and read in one place.
 *
 * A badge is awarded at most once per user: the store's unique key (user,
 * badge) makes a second award a no-op however often an event is delivered.
 */
#ifndef PULSE_ACHIEVEMENTS_RULES_H
#define PULSE_ACHIEVEMENTS_RULES_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct badge_info {
    const char *badge;        /* first_post, first_course_completed, quiz_ace, streak_7, first_peer_review */
    const char *title;
    const char *description;
} badge_info;

extern const badge_info badges[];
extern const int nbadges;
const badge_info *badge_find(const char *badge);

/* Days of activity in a row that earn streak_7. */
#define STREAK_DAYS 7
/* Lowest quiz score (0-100) that earns quiz_ace. */
#define QUIZ_ACE_SCORE 90

/* What an event means for achievements: the user it is about (borrowed from
 * data; NULL when the event carries none), the badge it earns outright (NULL:
 * none), and whether it counts as activity for the streak. */
typedef struct rule_outcome {
    const char *user_id;
    const char *badge;
    bool activity;
} rule_outcome;

/* 0, or -1 when the event's data lacks what its type promises. */
int rules_apply(const char *type, const json_t *data, rule_outcome *out);

/* Days since 1970-01-01 of the UTC date an RFC 3339 time falls on; -1 when
 * it does not parse. */
int64_t rules_day(const char *rfc3339);

/* The longest run of consecutive days that contains `day`, given the set of
 * active days (any order, duplicates allowed). */
int rules_run_length(const int64_t *days, int n, int64_t day);

#endif
