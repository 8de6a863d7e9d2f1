/* social_domain.c - unit tests of social's pure rules (src/services/social/domain.c):
 * text length in code points, visibility, event times and the RSVP state machine. */
#include "services/social/domain.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* n copies of the UTF-8 sequence u */
static char *repeat(const char *u, size_t n)
{
    size_t len = strlen(u);
    char *s = malloc(len * n + 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * len, u, len);
    s[len * n] = '\0';
    return s;
}

Test(social, text_counts_code_points_not_bytes)
{
    static const char *const units[] = {"a", "\xC3\xA9" /* é */, "\xE2\x82\xAC" /* € */,
                                        "\xF0\x9F\x8E\x93" /* 🎓 */};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        char *ok = repeat(units[i], SOCIAL_POST_MAX), *over = repeat(units[i], SOCIAL_POST_MAX + 1);
        cr_assert_null(social_check_text(ok, SOCIAL_POST_MAX), "5000 x %zu-byte character refused", strlen(units[i]));
        cr_assert_not_null(social_check_text(over, SOCIAL_POST_MAX), "5001 x %zu-byte character accepted",
                           strlen(units[i]));
        free(ok);
        free(over);
    }
    cr_assert_null(social_check_text("x", SOCIAL_POST_MAX));
    cr_assert_str_eq(social_check_text("", SOCIAL_POST_MAX), "must not be empty");
    cr_assert_str_eq(social_check_text(" \t\r\n ", SOCIAL_POST_MAX), "must not be only white space");
    cr_assert_null(social_check_text("  hi  ", SOCIAL_POST_MAX));
    cr_assert_str_eq(social_check_text("abc", 2), "is too long");
}

Test(social, visibility)
{
    cr_assert_null(social_check_visibility("public"));
    cr_assert_null(social_check_visibility("followers"));
    cr_assert_not_null(social_check_visibility("Public"));
    cr_assert_not_null(social_check_visibility(""));
    cr_assert_not_null(social_check_visibility("private"));
}

Test(social, who_sees_a_post)
{
    /* public: everyone */
    cr_assert(social_can_see("public", false, false, false));
    /* followers-only: the author, admins, followers; nobody else */
    cr_assert(social_can_see("followers", true, false, false));
    cr_assert(social_can_see("followers", false, true, false));
    cr_assert(social_can_see("followers", false, false, true));
    cr_assert_not(social_can_see("followers", false, false, false));
    /* an unknown visibility is shown to nobody but the author and admins */
    cr_assert_not(social_can_see("secret", false, false, true));
}

Test(social, event_times)
{
    int64_t s = 0, e = 0;
    const char *ws, *we;
    social_check_times("2026-12-01T18:00:00Z", "2026-12-01T20:00:00+01:00", &s, &e, &ws, &we);
    cr_assert_null(ws);
    cr_assert_null(we);
    cr_assert_eq(e - s, 3600000, "offsets are honoured: %lld", (long long)(e - s));
    social_check_times("2026-12-01T18:00:00Z", "2026-12-01T18:00:00Z", &s, &e, &ws, &we);
    cr_assert_str_eq(we, "must be after starts_at", "starts_at == ends_at is refused");
    social_check_times("tomorrow", "2026-12-01T18:00:00Z", &s, &e, &ws, &we);
    cr_assert_not_null(ws);
    cr_assert_null(we);
    social_check_times(NULL, "2026-13-01T18:00:00Z", &s, &e, &ws, &we);
    cr_assert_null(ws);
    cr_assert_not_null(we);
}

Test(social, rsvp_parsing)
{
    cr_assert_eq(rsvp_parse_request("going"), RSVP_GOING);
    cr_assert_eq(rsvp_parse_request("interested"), RSVP_INTERESTED);
    cr_assert_eq(rsvp_parse_request("cancel"), RSVP_CANCELLED);
    cr_assert_eq(rsvp_parse_request("cancelled"), -1, "the request verb is cancel");
    cr_assert_eq(rsvp_parse_request("GOING"), -1);
    cr_assert_eq(rsvp_parse_request(NULL), -1);
    cr_assert_eq(rsvp_parse_stored(NULL), RSVP_NONE);
    cr_assert_str_eq(rsvp_name(RSVP_CANCELLED), "cancelled");
    cr_assert_null(rsvp_name(RSVP_NONE));
}

/* every transition, with seats left, unlimited and full */
Test(social, rsvp_state_machine)
{
    static const struct {
        rsvp_status cur, want;
        int64_t cap, going;
        rsvp_outcome out;
        int dg, di;
    } cases[] = {
        {RSVP_NONE, RSVP_GOING, 10, 3, RSVP_OK, +1, 0},
        {RSVP_NONE, RSVP_GOING, -1, 1000000, RSVP_OK, +1, 0},   /* unlimited */
        {RSVP_NONE, RSVP_GOING, 10, 10, RSVP_FULL, 0, 0},
        {RSVP_NONE, RSVP_INTERESTED, 10, 10, RSVP_OK, 0, +1},   /* interest needs no seat */
        {RSVP_NONE, RSVP_CANCELLED, 10, 0, RSVP_UNCHANGED, 0, 0}, /* nothing to cancel */
        {RSVP_GOING, RSVP_GOING, 10, 10, RSVP_UNCHANGED, 0, 0},  /* a repeat is not "full" */
        {RSVP_GOING, RSVP_INTERESTED, 10, 10, RSVP_OK, -1, +1},
        {RSVP_GOING, RSVP_CANCELLED, 10, 10, RSVP_OK, -1, 0},
        {RSVP_INTERESTED, RSVP_GOING, 10, 9, RSVP_OK, +1, -1},
        {RSVP_INTERESTED, RSVP_GOING, 10, 10, RSVP_FULL, 0, 0},
        {RSVP_INTERESTED, RSVP_INTERESTED, 10, 0, RSVP_UNCHANGED, 0, 0},
        {RSVP_INTERESTED, RSVP_CANCELLED, 10, 0, RSVP_OK, 0, -1},
        {RSVP_CANCELLED, RSVP_GOING, 1, 0, RSVP_OK, +1, 0},
        {RSVP_CANCELLED, RSVP_GOING, 1, 1, RSVP_FULL, 0, 0},
        {RSVP_CANCELLED, RSVP_CANCELLED, 1, 0, RSVP_UNCHANGED, 0, 0},
        {RSVP_CANCELLED, RSVP_INTERESTED, 1, 1, RSVP_OK, 0, +1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int dg = 99, di = 99;
        rsvp_outcome o = rsvp_decide(cases[i].cur, cases[i].want, cases[i].cap, cases[i].going, &dg, &di);
        cr_assert_eq(o, cases[i].out, "case %zu: outcome %d, want %d", i, o, cases[i].out);
        cr_assert_eq(dg, cases[i].dg, "case %zu: going delta %d", i, dg);
        cr_assert_eq(di, cases[i].di, "case %zu: interested delta %d", i, di);
    }
}
