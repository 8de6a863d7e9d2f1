/* notify_domain.c - unit tests of notify's pure rules: coalesced text and the
 * list cursor (src/services/notify/domain.c). */
#include "core/uuid.h"
#include "services/notify/domain.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

static void init_sodium(void) { cr_assert_geq(sodium_init(), 0); }

TestSuite(notify, .init = init_sodium);

static const char *render(const char *kind, const char *const *names, size_t n, int64_t count, const char *detail)
{
    static char out[512];
    notify_render(kind, names, n, count, detail, out, sizeof out);
    return out;
}

Test(notify, like_text_grows_with_the_burst)
{
    const char *names[] = {"Ada", "Bo", "Cy"};
    cr_assert_str_eq(render("like", names, 1, 1, NULL), "Ada liked your post");
    cr_assert_str_eq(render("like", names, 2, 2, NULL), "Ada and Bo liked your post");
    cr_assert_str_eq(render("like", names, 3, 3, NULL), "Ada, Bo and Cy liked your post");
    cr_assert_str_eq(render("like", names, 3, 4, NULL), "Ada, Bo and 2 others liked your post");
    cr_assert_str_eq(render("like", names, 3, 14, NULL), "Ada, Bo and 12 others liked your post");
    /* a count below the names given is raised to them */
    cr_assert_str_eq(render("like", names, 2, 0, NULL), "Ada and Bo liked your post");
}

Test(notify, every_kind_has_its_text)
{
    const char *one[] = {"Ada"}, *two[] = {"Ada", "Bo"};
    cr_assert_str_eq(render("comment", two, 2, 5, NULL), "Ada, Bo and 3 others commented on your post");
    cr_assert_str_eq(render("reply", one, 1, 1, NULL), "Ada replied to your comment");
    cr_assert_str_eq(render("follow", two, 2, 2, NULL), "Ada and Bo started following you");
    cr_assert_str_eq(render("rsvp", one, 1, 1, "going"), "Ada is going to your event");
    cr_assert_str_eq(render("rsvp", one, 1, 1, "interested"), "Ada is interested in your event");
    cr_assert_str_eq(render("badge", NULL, 0, 0, "First post"), "You earned the badge \"First post\"");
    cr_assert_str_eq(render("order", NULL, 0, 0, "completed:INV-2026-000042"),
                     "Your purchase is complete (invoice INV-2026-000042)");
    cr_assert_str_eq(render("order", NULL, 0, 0, "failed:sold_out"), "Your purchase could not be completed (sold_out)");
}

Test(notify, unknown_names_render_as_someone)
{
    const char *names[] = {NULL, ""};
    cr_assert_str_eq(render("like", names, 2, 2, NULL), "Someone and Someone liked your post");
    cr_assert_str_eq(render("follow", NULL, 0, 1, NULL), "Someone started following you");
}

Test(notify, text_is_cut_on_a_character_boundary)
{
    const char *names[] = {"Zoë Ëmilia"};
    char out[7];
    notify_render("like", names, 1, 1, NULL, out, sizeof out); /* 6 bytes fit: "Zoë " and half an Ë */
    cr_assert_str_eq(out, "Zoë ");
    cr_assert(strlen(out) < sizeof out);
}

Test(notify, kinds)
{
    cr_assert(notify_kind_valid("like"));
    cr_assert(notify_kind_valid("order"));
    cr_assert_not(notify_kind_valid("Like"));
    cr_assert_not(notify_kind_valid(""));
    cr_assert(notify_kind_coalesces("like"));
    cr_assert(notify_kind_coalesces("follow"));
    cr_assert_not(notify_kind_coalesces("badge"));
    cr_assert_not(notify_kind_coalesces("order"));
    cr_assert_not(notify_kind_coalesces("rsvp"));
}

Test(notify, cursor_round_trips)
{
    char key[UUID_STR_LEN], token[NOTIFY_CURSOR_MAX], back[37];
    for (int i = 0; i < 100; i++) {
        uuid7_new(key);
        notify_cursor_encode(key, token, sizeof token);
        cr_assert_eq(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), strlen(token),
                     "url-safe: %s", token);
        cr_assert_eq(notify_cursor_decode(token, back), 0);
        cr_assert_str_eq(back, key);
    }
}

Test(notify, cursor_refuses_what_it_did_not_make)
{
    char key[UUID_STR_LEN], token[NOTIFY_CURSOR_MAX], back[37];
    uuid7_new(key);
    notify_cursor_encode(key, token, sizeof token);
    /* every single-character edit is refused */
    for (size_t i = 0; i < strlen(token); i++) {
        char t[NOTIFY_CURSOR_MAX];
        strcpy(t, token);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        cr_assert_neq(notify_cursor_decode(t, back), 0, "edited at %zu: %s", i, t);
    }
    static const char *const junk[] = {"", "x", "abc", "====", "not a cursor", "0", "-1",
                                       "bjEuMDE5YTAwMDAtMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAwLjAwMDAwMDAw"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        cr_assert_neq(notify_cursor_decode(junk[i], back), 0, "accepted \"%s\"", junk[i]);
    char longer[300];
    memset(longer, 'A', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    cr_assert_neq(notify_cursor_decode(longer, back), 0);
    /* truncated */
    token[strlen(token) - 2] = '\0';
    cr_assert_neq(notify_cursor_decode(token, back), 0);
}
