/* timeline_feed.c - unit tests of the timeline's cursor codec and read-time merge
 * (src/services/timeline/feed.c). */
#include "services/timeline/feed.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static void b64(const char *plain, char *out, size_t size)
{
    sodium_bin2base64(out, size, (const unsigned char *)plain, strlen(plain), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* ---- cursor ------------------------------------------------------------------------------------------ */

Test(timeline_cursor, round_trips)
{
    static const struct { int64_t score; const char *id; } cases[] = {
        {0, "a"},
        {1763784000123, "0197a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"},
        {9007199254740991, "ABC_xyz-09"},
        {42, "0123456789012345678901234567890123456789012345678901234567890123"}, /* 64 bytes */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char tok[TL_CURSOR_MAX];
        cr_assert_eq(tl_cursor_encode(cases[i].score, cases[i].id, tok), 0);
        cr_assert_eq(strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"), strlen(tok),
                     "URL-safe: %s", tok);
        tl_cursor c;
        cr_assert_eq(tl_cursor_decode(tok, &c), 0, "%s", tok);
        cr_assert_eq(c.score, cases[i].score);
        cr_assert_str_eq(c.id, cases[i].id);
    }
}

Test(timeline_cursor, encode_refuses_what_it_could_not_decode)
{
    char tok[TL_CURSOR_MAX];
    cr_assert_eq(tl_cursor_encode(-1, "a", tok), -1);
    cr_assert_eq(tl_cursor_encode(1, "", tok), -1);
    cr_assert_eq(tl_cursor_encode(1, "has space", tok), -1);
    cr_assert_eq(tl_cursor_encode(1, "a:b", tok), -1);
    cr_assert_eq(tl_cursor_encode(1, "01234567890123456789012345678901234567890123456789012345678901234", tok), -1);
}

Test(timeline_cursor, decode_rejects_garbage)
{
    static const char *const plains[] = {
        "",            "1:",           "1:12",          "1:12:",        "2:12:abc",      "1:-5:abc",
        "1:+5:abc",    "1:05:abc",     "1:1.5:abc",     "1: 5:abc",     "1:5:ab c",      "1:5:a:b",
        "1:12345678901234567:abc", /* 17 digits */    "x1:5:abc",      "1:5:abc\n",
    };
    for (size_t i = 0; i < sizeof plains / sizeof plains[0]; i++) {
        char tok[256];
        b64(plains[i], tok, sizeof tok);
        tl_cursor c;
        cr_assert_eq(tl_cursor_decode(tok, &c), -1, "accepted \"%s\"", plains[i]);
    }
    static const char *const tokens[] = {"", "%%%", "MTo1OmFi=", "MTo1OmFi+", "MTo1OmFi/", "MTo1Om Fi", NULL};
    for (size_t i = 0; tokens[i]; i++) {
        tl_cursor c;
        cr_assert_eq(tl_cursor_decode(tokens[i], &c), -1, "accepted token \"%s\"", tokens[i]);
    }
    tl_cursor c;
    cr_assert_eq(tl_cursor_decode(NULL, &c), -1);
    char nul[64];
    sodium_bin2base64(nul, sizeof nul, (const unsigned char *)"1:5:a\0b", 7, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    cr_assert_eq(tl_cursor_decode(nul, &c), -1, "an embedded NUL");
    char long_tok[300];
    memset(long_tok, 'A', sizeof long_tok - 1);
    long_tok[sizeof long_tok - 1] = '\0';
    cr_assert_eq(tl_cursor_decode(long_tok, &c), -1);
    char ok[64];
    b64("1:0:z", ok, sizeof ok);
    cr_assert_eq(tl_cursor_decode(ok, &c), 0, "score 0 is fine");
}

/* ---- order and merge --------------------------------------------------------------------------------- */

Test(timeline_merge, order_is_score_then_id_descending)
{
    tl_entry a = {"b", 10}, b = {"a", 10}, c = {"z", 9};
    cr_assert_lt(tl_entry_cmp(&a, &b), 0, "same score: the larger id first");
    cr_assert_lt(tl_entry_cmp(&b, &c), 0, "the higher score first");
    cr_assert_eq(tl_entry_cmp(&a, &a), 0);
    tl_cursor cur = {.score = 10};
    snprintf(cur.id, sizeof cur.id, "b");
    cr_assert(!tl_after(&a, &cur), "the cursor's own entry is not after it");
    cr_assert(tl_after(&b, &cur));
    cr_assert(tl_after(&c, &cur));
    tl_entry newer = {"a", 11};
    cr_assert(!tl_after(&newer, &cur), "entries added at the head are before the cursor");
    cr_assert(tl_after(&newer, NULL));
}

Test(timeline_merge, merges_sources_dedups_and_limits)
{
    tl_entry feed[] = {{"p9", 90}, {"p7", 70}, {"p5", 50}, {"p1", 10}};
    tl_entry star[] = {{"s8", 80}, {"p7", 70}, {"s6", 60}}; /* p7 also fanned out before the author became a star */
    tl_entry other[] = {{"s4", 40}};
    const tl_entry *srcs[] = {feed, star, other};
    size_t ns[] = {4, 3, 1};
    tl_entry out[10];
    size_t n = tl_merge(srcs, ns, 3, NULL, out, 10);
    static const char *const want[] = {"p9", "s8", "p7", "s6", "p5", "s4", "p1"};
    cr_assert_eq(n, 7);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(out[i].id, want[i], "position %zu", i);
    cr_assert_eq(tl_merge(srcs, ns, 3, NULL, out, 3), 3, "limit");
    cr_assert_str_eq(out[2].id, "p7");
}

Test(timeline_merge, pages_after_a_cursor_have_no_duplicate_and_no_gap)
{
    /* ties on the score, unsorted sources: paging 2 at a time visits each entry exactly once */
    tl_entry a[] = {{"c", 5}, {"a", 5}, {"e", 3}, {"b", 5}};
    tl_entry b[] = {{"d", 5}, {"f", 1}, {"a", 5}};
    const tl_entry *srcs[] = {a, b};
    size_t ns[] = {4, 3};
    static const char *const want[] = {"d", "c", "b", "a", "e", "f"};
    tl_cursor cur, *cp = NULL;
    size_t seen = 0;
    for (int round = 0; round < 10; round++) {
        tl_entry out[2];
        size_t n = tl_merge(srcs, ns, 2, cp, out, 2);
        if (!n)
            break;
        for (size_t i = 0; i < n; i++, seen++) {
            cr_assert_lt(seen, 6);
            cr_assert_str_eq(out[i].id, want[seen]);
        }
        cur.score = (int64_t)out[n - 1].score;
        snprintf(cur.id, sizeof cur.id, "%s", out[n - 1].id);
        cp = &cur;
    }
    cr_assert_eq(seen, 6);
}

Test(timeline_merge, empty_inputs)
{
    tl_entry out[4];
    cr_assert_eq(tl_merge(NULL, NULL, 0, NULL, out, 4), 0);
    tl_entry one[] = {{"x", 1}};
    const tl_entry *srcs[] = {one};
    size_t ns[] = {1};
    cr_assert_eq(tl_merge(srcs, ns, 1, NULL, out, 0), 0);
    tl_cursor end = {.score = 0};
    snprintf(end.id, sizeof end.id, "a");
    cr_assert_eq(tl_merge(srcs, ns, 1, &end, out, 4), 0, "everything is before the cursor");
}

Test(timeline_id, validity)
{
    cr_assert(tl_id_valid("0197a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"));
    cr_assert(!tl_id_valid(NULL));
    cr_assert(!tl_id_valid(""));
    cr_assert(!tl_id_valid("a/b"));
    cr_assert(!tl_id_valid("feed:x"));
}
