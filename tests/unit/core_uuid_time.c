/* core_uuid_time.c - unit tests of UUIDv7 (src/core/uuid.c) and of clocks and
 * RFC 3339 timestamps (src/core/timeutil.c). */
#include "core/err.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- uuid ------------------------------------------------------------------------ */

static int hexval(char c) { return isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10; }

Test(uuid, format_version_and_variant)
{
    for (int i = 0; i < 200; i++) {
        char id[UUID_STR_LEN];
        memset(id, 'X', sizeof id);
        uuid7_new(id);
        cr_assert_eq(strlen(id), 36, "%s", id);
        for (int k = 0; k < 36; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                cr_assert_eq(id[k], '-', "%s", id);
            else
                cr_assert(isxdigit((unsigned char)id[k]) && !isupper((unsigned char)id[k]), "%s", id);
        }
        cr_assert_eq(id[14], '7', "version nibble of %s", id);
        cr_assert_eq(hexval(id[19]) & 0xc, 0x8, "variant bits of %s must be 10", id);
        cr_assert(uuid_valid(id));
    }
}

Test(uuid, time_prefix_is_now)
{
    int64_t before = time_now_ms();
    char id[UUID_STR_LEN];
    uuid7_new(id);
    int64_t after = time_now_ms();
    int64_t t = uuid7_time_ms(id);
    cr_assert_geq(t, before, "%s carries %lld, before %lld", id, (long long)t, (long long)before);
    /* ids made in a burst may borrow a millisecond or two ahead of the clock */
    cr_assert_leq(t, after + 1000);
}

Test(uuid, ten_thousand_ids_are_strictly_increasing)
{
    enum { N = 10000 };
    char (*ids)[UUID_STR_LEN] = malloc(N * sizeof *ids);
    for (int i = 0; i < N; i++)
        uuid7_new(ids[i]);
    for (int i = 1; i < N; i++)
        cr_assert_lt(strcmp(ids[i - 1], ids[i]), 0, "id %d (%s) does not sort after id %d (%s)", i, ids[i], i - 1,
                     ids[i - 1]);
    free(ids);
}

typedef struct {
    char ids[2000][UUID_STR_LEN];
} batch;

static void *make_batch(void *arg)
{
    batch *b = arg;
    for (int i = 0; i < 2000; i++)
        uuid7_new(b->ids[i]);
    return NULL;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

Test(uuid, unique_and_ordered_per_thread_across_threads)
{
    enum { T = 4 };
    batch *b = malloc(T * sizeof *b);
    pthread_t th[T];
    for (int t = 0; t < T; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, make_batch, &b[t]), 0);
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++)
        for (int i = 1; i < 2000; i++)
            cr_assert_lt(strcmp(b[t].ids[i - 1], b[t].ids[i]), 0);
    char (*all)[UUID_STR_LEN] = (void *)b; /* the batches are contiguous */
    qsort(all, T * 2000, UUID_STR_LEN, cmp_id);
    for (int i = 1; i < T * 2000; i++)
        cr_assert_str_neq(all[i - 1], all[i], "duplicate id");
    free(b);
}

Test(uuid, validation)
{
    cr_assert(uuid_valid("0190f2a4-7b1c-7d3e-9f00-0123456789ab"));
    cr_assert(uuid_valid("0190F2A4-7B1C-7D3E-9F00-0123456789AB"), "upper case is canonical too");
    cr_assert(uuid_valid("550e8400-e29b-41d4-a716-446655440000"), "any version");
    cr_assert_not(uuid_valid(NULL));
    cr_assert_not(uuid_valid(""));
    cr_assert_not(uuid_valid("0190f2a4-7b1c-7d3e-9f00-0123456789a"), "35 characters");
    cr_assert_not(uuid_valid("0190f2a4-7b1c-7d3e-9f00-0123456789abc"), "37 characters");
    cr_assert_not(uuid_valid("0190f2a47b1c-7d3e-9f00-0123456789ab-"), "dashes misplaced");
    cr_assert_not(uuid_valid("0190f2a4-7b1c-7d3e-9f00-0123456789ag"), "non-hex");
    cr_assert_not(uuid_valid("{190f2a4-7b1c-7d3e-9f00-0123456789ab"));
}

Test(uuid, time_of_a_v7_id)
{
    /* the first 48 bits are the milliseconds */
    cr_assert_eq(uuid7_time_ms("0190f2a4-7b1c-7d3e-9f00-0123456789ab"), 0x0190f2a47b1cLL);
    cr_assert_eq(uuid7_time_ms("0190F2A4-7B1C-7D3E-9F00-0123456789AB"), 0x0190f2a47b1cLL);
    cr_assert_eq(uuid7_time_ms("ffffffff-ffff-7fff-bfff-ffffffffffff"), 0xffffffffffffLL);
    cr_assert_eq(uuid7_time_ms("550e8400-e29b-41d4-a716-446655440000"), -1, "a v4 id carries no time");
    cr_assert_eq(uuid7_time_ms("not a uuid"), -1);
}

/* ---- time ---------------------------------------------------------------------------- */

Test(time, clocks_move_forward)
{
    int64_t a = time_mono_ns(), w = time_now_ms();
    int64_t b = time_mono_ns();
    cr_assert_geq(b, a);
    cr_assert_gt(w, 1700000000000LL, "wall clock is not in milliseconds since the epoch");
    cr_assert_lt(w, 4102444800000LL);
}

Test(time, format_rfc3339)
{
    char buf[32];
    time_rfc3339(1795317118123LL, buf, sizeof buf);
    cr_assert_str_eq(buf, "2026-11-22T03:11:58.123Z");
    time_rfc3339(0, buf, sizeof buf);
    cr_assert_str_eq(buf, "1970-01-01T00:00:00.000Z");
    time_rfc3339(1709208000007LL, buf, sizeof buf);
    cr_assert_str_eq(buf, "2024-02-29T12:00:00.007Z");
    time_rfc3339(253402300799999LL, buf, sizeof buf);
    cr_assert_str_eq(buf, "9999-12-31T23:59:59.999Z");
}

Test(time, format_before_the_epoch)
{
    char buf[32];
    time_rfc3339(-1, buf, sizeof buf);
    cr_assert_str_eq(buf, "1969-12-31T23:59:59.999Z");
    time_rfc3339(-1000, buf, sizeof buf);
    cr_assert_str_eq(buf, "1969-12-31T23:59:59.000Z");
    time_rfc3339(-1001, buf, sizeof buf);
    cr_assert_str_eq(buf, "1969-12-31T23:59:58.999Z");
}

Test(time, format_small_buffer_truncates_safely)
{
    char buf[8];
    memset(buf, 'x', sizeof buf);
    time_rfc3339(0, buf, sizeof buf);
    cr_assert_str_eq(buf, "1970-01");
}

static int64_t parse_ok(const char *s)
{
    int64_t ms = 0x7eadbeef;
    int rc = time_parse_rfc3339(s, &ms);
    cr_assert_eq(rc, 0, "\"%s\" rejected", s);
    return ms;
}

Test(time, parse_rfc3339)
{
    cr_assert_eq(parse_ok("2026-11-22T03:11:58.123Z"), 1795317118123LL);
    cr_assert_eq(parse_ok("2026-11-22t03:11:58.123z"), 1795317118123LL, "lower-case T and Z are allowed");
    cr_assert_eq(parse_ok("2026-11-22T03:11:58Z"), 1795317118000LL);
    cr_assert_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
    cr_assert_eq(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    cr_assert_eq(parse_ok("2024-02-29T12:00:00Z"), 1709208000000LL, "a leap day");
    cr_assert_eq(parse_ok("2000-02-29T00:00:00Z"), 951782400000LL, "2000 is a leap year");
}

Test(time, parse_fractions)
{
    cr_assert_eq(parse_ok("1970-01-01T00:00:00.5Z"), 500);
    cr_assert_eq(parse_ok("1970-01-01T00:00:00.05Z"), 50);
    cr_assert_eq(parse_ok("1970-01-01T00:00:00.123456789Z"), 123, "digits beyond the millisecond are cut");
    cr_assert_eq(parse_ok("1970-01-01T00:00:00.000000000000000001Z"), 0);
}

Test(time, parse_offsets)
{
    int64_t utc = parse_ok("2026-11-22T03:11:58.123Z");
    cr_assert_eq(parse_ok("2026-11-22T03:11:58.123+00:00"), utc);
    cr_assert_eq(parse_ok("2026-11-22T03:11:58.123-00:00"), utc);
    cr_assert_eq(parse_ok("2026-11-22T05:11:58.123+02:00"), utc);
    cr_assert_eq(parse_ok("2026-11-21T22:41:58.123-04:30"), utc);
    cr_assert_eq(parse_ok("2026-11-22T08:56:58.123+05:45"), utc);
    cr_assert_eq(parse_ok("2026-11-23T02:11:58.123+23:00"), utc, "offsets cross the day");
}

Test(time, format_then_parse_round_trips)
{
    static const int64_t samples[] = {0, 1, 999, 1000, 86399999, 951782400000LL, 1795317118123LL,
                                      253402300799999LL, -1, -86400000LL, -62135596800000LL};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char buf[32];
        time_rfc3339(samples[i], buf, sizeof buf);
        int64_t back = 0;
        cr_assert_eq(time_parse_rfc3339(buf, &back), 0, "%lld -> \"%s\" does not parse", (long long)samples[i], buf);
        cr_assert_eq(back, samples[i], "%lld -> \"%s\" -> %lld", (long long)samples[i], buf, (long long)back);
    }
}

Test(time, parse_rejects_invalid)
{
    static const char *const bad[] = {
        "",
        "2026-11-22",
        "2026-11-22T03:11:58",          /* no offset */
        "2026-11-22 03:11:58Z",          /* space instead of T */
        "2026-11-22T03:11:58.Z",         /* empty fraction */
        "2026-11-22T03:11:58,123Z",      /* comma fraction */
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-04-31T00:00:00Z",          /* April has 30 days */
        "2026-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",          /* not a leap year */
        "1900-02-29T00:00:00Z",          /* centuries are not leap years ... */
        "2026-11-22T24:00:00Z",
        "2026-11-22T23:60:00Z",
        "2026-11-22T23:59:61Z",
        "2026-11-22T03:11:58+24:00",
        "2026-11-22T03:11:58+01:60",
        "2026-11-22T03:11:58+0100",
        "2026-11-22T03:11:58+01",
        "2026-11-22T03:11:58+01:00x",
        "2026-11-22T03:11:58Zjunk",
        "2026-11-22T03:11:58ZZ",
        "26-11-22T03:11:58Z",
        "2026/11/22T03:11:58Z",
        "2026-1a-22T03:11:58Z",
        "+026-11-22T03:11:58Z",
        "2026-11-22T03:11:58-",
        "2026-11-22T03:11:58.123",
        "2026-11-22T3:11:58.123Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 4242;
        cr_assert_eq(time_parse_rfc3339(bad[i], &ms), PL_EINVAL, "\"%s\" accepted as %lld", bad[i], (long long)ms);
        cr_assert_eq(ms, 4242, "a rejected timestamp must not be written");
    }
    /* ... but 400-year centuries are */
    cr_assert_eq(parse_ok("2400-02-29T00:00:00Z"), 13574563200000LL);
}
