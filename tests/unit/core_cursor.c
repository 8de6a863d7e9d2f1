/* core_cursor.c - unit tests of opaque page cursors (src/core/cursor.c). */
#include "core/cursor.h"
#include "core/err.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

static void init_sodium(void) { cr_assert_geq(sodium_init(), 0); }

TestSuite(cursor, .init = init_sodium);

Test(cursor, round_trips)
{
    static const char *const bodies[] = {"01a20216-6d34-778f-b1e5-cb7affccd9c7", "1790000000000_01a2", "x", "",
                                         "0123456789012345678901234567890123456789012345678901234567890123456789"
                                         "01234567890123456789012345"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char token[CURSOR_TOKEN_MAX], back[CURSOR_BODY_MAX + 1];
        cursor_seal(bodies[i], token);
        cr_assert_eq(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), strlen(token),
                     "not URL-safe: %s", token);
        cr_assert_eq(cursor_open(token, back), 0, "%s", bodies[i]);
        cr_assert_str_eq(back, bodies[i]);
    }
}

Test(cursor, edits_and_junk_are_refused)
{
    char token[CURSOR_TOKEN_MAX], back[CURSOR_BODY_MAX + 1];
    cursor_seal("01a20216-6d34-778f-b1e5-cb7affccd9c7", token);
    size_t n = strlen(token);
    for (size_t i = 0; i < n; i++) {
        char t[CURSOR_TOKEN_MAX];
        memcpy(t, token, n + 1);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        cr_assert_eq(cursor_open(t, back), PL_EINVAL, "edited at %zu accepted", i);
    }
    char cut[CURSOR_TOKEN_MAX];
    memcpy(cut, token, n - 1);
    cut[n - 1] = '\0';
    cr_assert_eq(cursor_open(cut, back), PL_EINVAL, "a cut token");
    static const char *const junk[] = {"", "01a20216-6d34-778f-b1e5-cb7affccd9c7", "' OR 1=1", "ZZZ", "====",
                                       "YQ", "%00"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        cr_assert_eq(cursor_open(junk[i], back), PL_EINVAL, "accepted \"%s\"", junk[i]);
    char big[400];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(cursor_open(big, back), PL_EINVAL, "an over-long token");
}
