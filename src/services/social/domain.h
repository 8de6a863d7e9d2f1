/*
 * domain.h - social's rules, free of I/O: what a valid post, comment and
 * campus event are, who may see a post, and the RSVP state machine.
 */
#ifndef PULSE_SOCIAL_DOMAIN_H
#define PULSE_SOCIAL_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOCIAL_POST_MAX 5000     /* code points */
#define SOCIAL_COMMENT_MAX 2000  /* code points */
#define SOCIAL_TITLE_MAX 200
#define SOCIAL_DESCRIPTION_MAX 5000
#define SOCIAL_LOCATION_MAX 200
#define SOCIAL_CAPACITY_MAX 100000
#define SOCIAL_PAGE_DEFAULT 20
#define SOCIAL_PAGE_MAX 100

/* Each returns NULL when valid, else a message for the field. Text is counted
 * in Unicode code points (s must be valid UTF-8, as jansson guarantees) and
 * must hold something other than white space. */
const char *social_check_text(const char *s, size_t max);
const char *social_check_visibility(const char *v);
/* starts/ends are RFC 3339; on success *s_ms, *e_ms get them in ms. Either
 * message may be set: *why_start for starts_at, *why_end for ends_at. */
void social_check_times(const char *starts, const char *ends, int64_t *s_ms, int64_t *e_ms, const char **why_start,
                        const char **why_end);

/* Who may see a post: its author, admins, anyone when public, the author's
 * followers when followers-only. */
bool social_can_see(const char *visibility, bool is_author, bool is_admin, bool follows_author);

/* ---- RSVP ---------------------------------------------------------------------------- */

typedef enum { RSVP_NONE = 0, RSVP_GOING, RSVP_INTERESTED, RSVP_CANCELLED } rsvp_status;

/* "going", "interested", "cancel" (the request's verb) -> status; -1 when unknown. */
int rsvp_parse_request(const char *s);
/* "going", "interested", "cancelled" (stored) -> status; RSVP_NONE for NULL. */
rsvp_status rsvp_parse_stored(const char *s);
const char *rsvp_name(rsvp_status s); /* NULL for RSVP_NONE */

typedef enum {
    RSVP_OK,        /* apply: the status changes */
    RSVP_UNCHANGED, /* already so: nothing to write, no event */
    RSVP_FULL,      /* going refused: no seat left */
} rsvp_outcome;

/* Decides an RSVP change from `cur` to `want` given the seats: capacity < 0 is
 * unlimited, going is how many are going now (cur included when cur is
 * going). Cancelling what was never set is UNCHANGED. *d_going and
 * *d_interested get the change of each count. */
rsvp_outcome rsvp_decide(rsvp_status cur, rsvp_status want, int64_t capacity, int64_t going, int *d_going,
                         int *d_interested);

#endif
