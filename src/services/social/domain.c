/* domain.c - social's pure rules (see domain.h). */
#include "services/social/domain.h"
#include "core/json.h"
#include "core/timeutil.h"

#include <string.h>

const char *social_check_text(const char *s, size_t max)
{
    size_t n = utf8_len(s);
    if (n == 0)
        return "must not be empty";
    if (n > max)
        return max == SOCIAL_POST_MAX ? "must be at most 5000 characters" : "is too long";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return NULL;
    return "must not be only white space";
}

const char *social_check_visibility(const char *v)
{
    return strcmp(v, "public") == 0 || strcmp(v, "followers") == 0 ? NULL : "must be public or followers";
}

void social_check_times(const char *starts, const char *ends, int64_t *s_ms, int64_t *e_ms, const char **why_start,
                        const char **why_end)
{
    *why_start = *why_end = NULL;
    if (starts && time_parse_rfc3339(starts, s_ms))
        *why_start = "must be an RFC 3339 time such as 2026-12-01T18:00:00Z";
    if (ends && time_parse_rfc3339(ends, e_ms))
        *why_end = "must be an RFC 3339 time such as 2026-12-01T20:00:00Z";
    if (starts && ends && !*why_start && !*why_end && *e_ms <= *s_ms)
        *why_end = "must be after starts_at";
}

bool social_can_see(const char *visibility, bool is_author, bool is_admin, bool follows_author)
{
    if (is_author || is_admin || strcmp(visibility, "public") == 0)
        return true;
    return strcmp(visibility, "followers") == 0 && follows_author;
}

int rsvp_parse_request(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "going") == 0)
        return RSVP_GOING;
    if (strcmp(s, "interested") == 0)
        return RSVP_INTERESTED;
    if (strcmp(s, "cancel") == 0)
        return RSVP_CANCELLED;
    return -1;
}

rsvp_status rsvp_parse_stored(const char *s)
{
    if (!s)
        return RSVP_NONE;
    if (strcmp(s, "going") == 0)
        return RSVP_GOING;
    if (strcmp(s, "interested") == 0)
        return RSVP_INTERESTED;
    return RSVP_CANCELLED;
}

const char *rsvp_name(rsvp_status s)
{
    switch (s) {
    case RSVP_GOING: return "going";
    case RSVP_INTERESTED: return "interested";
    case RSVP_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

rsvp_outcome rsvp_decide(rsvp_status cur, rsvp_status want, int64_t capacity, int64_t going, int *d_going,
                         int *d_interested)
{
    *d_going = *d_interested = 0;
    /* never having answered and cancelling are the same state for counting */
    rsvp_status eff = cur == RSVP_NONE ? RSVP_CANCELLED : cur;
    if (eff == want)
        return RSVP_UNCHANGED;
    if (want == RSVP_GOING && capacity >= 0 && going >= capacity)
        return RSVP_FULL;
    *d_going = (want == RSVP_GOING) - (cur == RSVP_GOING);
    *d_interested = (want == RSVP_INTERESTED) - (cur == RSVP_INTERESTED);
    return RSVP_OK;
}
