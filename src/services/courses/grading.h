/*
 * grading.h - courses' quiz rules, free of I/O: what a valid quiz question
 * is, what a student sees of it, and how a submission is graded.
 *
 * A question, as a teacher writes it (JSON):
 *   {"kind":"single",   "prompt":"…", "options":["a","b",…], "correct": 1}
 *   {"kind":"multiple", "prompt":"…", "options":[…],          "correct": [0, 2]}
 *   {"kind":"text",     "prompt":"…", "accepted": ["Paris", "paris, france"]}
 * Options: 2..10 strings of 1..200 characters; "correct" indexes them (a
 * multiple-choice set has 1..n distinct indexes); "accepted": 1..20 strings.
 *
 * A submission is {"answers": [a0, a1, …]}, one per question in order:
 * single → an option index, multiple → an array of distinct indexes (graded
 * as an exact set match, order ignored), text → a string (graded after
 * normalisation against every accepted answer); null means unanswered
 * (wrong). The score is round(100 * right / questions), 0..100.
 */
#ifndef PULSE_COURSES_GRADING_H
#define PULSE_COURSES_GRADING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define COURSES_QUIZ_MAX_QUESTIONS 50
#define COURSES_QUIZ_MAX_OPTIONS 10
#define COURSES_QUIZ_MAX_ACCEPTED 20
#define COURSES_TEXT_ANSWER_MAX 500 /* code points */

/* Checks a teacher's questions array. Returns true when valid; otherwise adds
 * "questions[i].field" -> message entries to `fields` (an object) and
 * returns false. */
bool grading_check_questions(const json_t *questions, json_t *fields);

/* The student's view: each question without "correct" / "accepted", with
 * its index. A new reference. */
json_t *grading_public_questions(const json_t *questions);

/* Trim, ASCII case-fold and collapse runs of white space to one space.
 * Writes at most size-1 bytes and a NUL to out (size >= 1). */
void grading_normalize(const char *in, char *out, size_t size);

/* Grades `answers` (the submission's array) against valid `questions`.
 * Returns 0 with *score (0..100) and *results (new array of booleans, one
 * per question), or -1 when the answers do not fit the questions, with
 * "answers" or "answers[i]" -> message added to `fields`. */
int grading_grade(const json_t *questions, const json_t *answers, int *score, json_t **results, json_t *fields);

#endif
