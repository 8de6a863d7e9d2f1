/* core_arena.c - unit tests of the per-request bump allocator (src/core/arena.c). */
#include "core/arena.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

Test(arena, allocations_are_16_byte_aligned)
{
    arena *a = arena_create(256);
    /* odd sizes so that a plain bump without rounding would misalign */
    static const size_t sizes[] = {1, 3, 7, 15, 16, 17, 31, 33, 100, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = arena_alloc(a, sizes[i]);
        cr_assert(aligned16(p), "allocation %zu of %zu bytes at %p is not 16-byte aligned", i, sizes[i], (void *)p);
        memset(p, 0xab, sizes[i]); /* ASan catches an allocation shorter than asked */
    }
    arena_destroy(a);
}

Test(arena, zero_sized_allocations_are_distinct)
{
    arena *a = arena_create(64);
    void *p = arena_alloc(a, 0), *q = arena_alloc(a, 0);
    cr_assert_not_null(p);
    cr_assert_neq(p, q, "two zero-sized allocations share an address");
    arena_destroy(a);
}

Test(arena, allocations_do_not_overlap_and_used_counts_them)
{
    arena *a = arena_create(128);
    cr_assert_eq(arena_used(a), 0);
    char *p[64];
    for (int i = 0; i < 64; i++) {
        p[i] = arena_alloc(a, 24);
        memset(p[i], i, 24);
    }
    for (int i = 0; i < 64; i++)
        for (int k = 0; k < 24; k++)
            cr_assert_eq((unsigned char)p[i][k], i, "allocation %d was overwritten by a later one", i);
    cr_assert_geq(arena_used(a), 64 * 24);
    cr_assert_leq(arena_used(a), 64 * 32, "used %zu: rounding wastes more than 16-byte alignment", arena_used(a));
    arena_destroy(a);
}

Test(arena, grows_past_the_first_block)
{
    arena *a = arena_create(64); /* tiny first block: almost everything below needs a new one */
    char *strs[1000];
    for (int i = 0; i < 1000; i++)
        strs[i] = arena_sprintf(a, "string number %d", i);
    for (int i = 0; i < 1000; i++) {
        char want[32];
        snprintf(want, sizeof want, "string number %d", i);
        cr_assert_str_eq(strs[i], want);
    }
    arena_destroy(a);
}

Test(arena, big_allocation_gets_room_and_small_ones_still_work)
{
    arena *a = arena_create(1024);
    char *small1 = arena_strdup(a, "before");
    size_t big_n = 4 * 1024 * 1024;
    unsigned char *big = arena_alloc(a, big_n);
    cr_assert(aligned16(big));
    memset(big, 0x5a, big_n); /* the whole block must be usable */
    char *small2 = arena_strdup(a, "after");
    cr_assert_str_eq(small1, "before");
    cr_assert_str_eq(small2, "after");
    cr_assert_eq(big[0], 0x5a);
    cr_assert_eq(big[big_n - 1], 0x5a);
    cr_assert_geq(arena_used(a), big_n);
    arena_destroy(a);
}

Test(arena, big_allocation_does_not_displace_the_current_block)
{
    arena *a = arena_create(4096);
    char *s1 = arena_alloc(a, 16);
    arena_alloc(a, 1 << 20);
    char *s2 = arena_alloc(a, 16);
    /* the small ones stay neighbours in the first block: the big one did
     * not make the arena abandon it for a new, twice-as-big block */
    cr_assert_eq(s2, s1 + 16, "small allocation moved to a new block after a big one");
    arena_destroy(a);
}

Test(arena, impossible_size_aborts, .signal = SIGABRT)
{
    arena *a = arena_create(64);
    cr_assert_not_null(freopen("/dev/null", "w", stderr)); /* the expected "out of memory" line */
    arena_alloc(a, SIZE_MAX - 3); /* must not round to a tiny block */
}

Test(arena, reset_releases_and_memory_is_reusable)
{
    arena *a = arena_create(256);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 100; i++)
            memset(arena_alloc(a, 200), round, 200);
        memset(arena_alloc(a, 1 << 20), round, 1 << 20);
        cr_assert_geq(arena_used(a), 100 * 200 + (1 << 20));
        arena_reset(a);
        cr_assert_eq(arena_used(a), 0, "reset leaves %zu bytes counted", arena_used(a));
    }
    /* after reset the first block serves small allocations again */
    char *s = arena_strdup(a, "fresh");
    cr_assert_str_eq(s, "fresh");
    arena_destroy(a); /* LeakSanitizer checks that no block is lost across resets */
}

Test(arena, calloc_zeroes_even_reused_memory)
{
    arena *a = arena_create(4096);
    memset(arena_alloc(a, 1000), 0xff, 1000);
    arena_reset(a);
    unsigned char *p = arena_calloc(a, 1000);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(p[i], 0, "byte %d not zeroed", i);
    arena_destroy(a);
}

Test(arena, strdup_and_strndup_copy)
{
    arena *a = arena_create(0); /* 0 selects the default first block */
    char src[] = "hello, world";
    char *d = arena_strdup(a, src);
    src[0] = 'J';
    cr_assert_str_eq(d, "hello, world", "strdup must copy, not alias");
    char *n = arena_strndup(a, "abcdef", 3);
    cr_assert_str_eq(n, "abc");
    char *e = arena_strndup(a, "", 0);
    cr_assert_str_eq(e, "");
    arena_destroy(a);
}

Test(arena, sprintf_formats_short_and_long_strings)
{
    arena *a = arena_create(64);
    cr_assert_str_eq(arena_sprintf(a, "%s-%d-%05.1f", "x", 42, 3.14159), "x-42-003.1");
    cr_assert_str_eq(arena_sprintf(a, "%s", ""), "");
    /* longer than the first block: must size the result exactly, not truncate */
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char *s = arena_sprintf(a, "<%s>", big);
    cr_assert_eq(strlen(s), sizeof big + 1);
    cr_assert_eq(s[0], '<');
    cr_assert_eq(s[sizeof big], '>');
    arena_destroy(a);
}

Test(arena, destroy_null_is_a_noop)
{
    arena_destroy(NULL);
}
