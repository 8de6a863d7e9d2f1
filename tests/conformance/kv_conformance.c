/*
 * kv_conformance.c - the kv store kind's contract (src/store/kv.h), held
 * against every engine by the same cases.
 *
 * Every KV_CASE runs twice: suite kv_embedded (always, in a temporary data
 * directory) and suite kv_redis (when PULSE_TEST_REDIS_URL names a server;
 * skipped with a message otherwise). Each case works as a service of its own
 * ("c_<case>_<pid>", so its keys carry that prefix) and uses channels named
 * after it, so cases run in parallel on one Redis; a Redis case deletes its
 * keys at the end.
 *
 * Suite kv_embedded_only holds what only the embedded engine promises
 * (durability across close and crash, one process per file). Suite
 * kv_redis_restart starts a private redis-server of its own on a free
 * loopback port, stops and restarts it, so it never disturbs the shared one.
 */
#include "store/kv.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Criterion 2.4's runner leaks 48 bytes (a calloc inside libcriterion) when
 * a test forks a child while another test runs in parallel; the cases below
 * that need a second process or a private redis-server do. Not Pulse's
 * memory, so LeakSanitizer is told to ignore that library's allocations (this
 * hook is read by LSan in every process of this binary, the runner included). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcriterion.so\n"; }

/* ---- fixture ------------------------------------------------------------------------ */

static struct {
    bool redis;
    char dir[64];     /* embedded: the temporary data directory */
    char service[64];
    char chan[96];    /* a channel prefix of this case: "pulse.conf.<case>.<pid>" */
    kv *k;
    kv *extra[4];     /* other stores a case opened (closed at the end) */
} fx;

static const char *redis_url(void)
{
    const char *u = getenv("PULSE_TEST_REDIS_URL");
    return u && *u ? u : NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts))
        ;
}

static void make_dir(void)
{
    if (!fx.dir[0]) {
        snprintf(fx.dir, sizeof fx.dir, "/tmp/pulse-kvconf-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
    }
}

/* Opens the case's engine as service svc. */
static int open_as(bool redis, const char *svc, kv **out, pl_error *err)
{
    kv_options o = {.service = svc};
    if (redis)
        return kv_open(redis_url(), &o, out, err);
    make_dir();
    o.data_dir = fx.dir;
    return kv_open("", &o, out, err);
}

static void fx_open(bool redis, const char *name)
{
    if (redis && !redis_url())
        cr_skip_test("PULSE_TEST_REDIS_URL is not set: Redis cases skipped "
                     "(make test-conformance starts a server and sets it)");
    fx.redis = redis;
    snprintf(fx.service, sizeof fx.service, "c_%.40s_%d", name, (int)getpid());
    snprintf(fx.chan, sizeof fx.chan, "pulse.conf.%.40s.%d", name, (int)getpid());
    pl_error err = {0};
    int rc = open_as(redis, fx.service, &fx.k, &err);
    cr_assert_eq(rc, 0, "open %s: %s", redis ? "redis" : "embedded", err.msg);
    cr_assert_str_eq(kv_engine(fx.k), redis ? "redis" : "embedded");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

/* Deletes every key of services whose names start with the case's service. */
static void redis_cleanup(void)
{
    int port = 6379, db = 0;
    char host[128] = "127.0.0.1";
    const char *u = redis_url();
    if (!u || sscanf(u, "redis://%127[^:/]:%d/%d", host, &port, &db) < 2)
        return;
    redisContext *c = redisConnect(host, port);
    if (c && !c->err) {
        char pat[96];
        snprintf(pat, sizeof pat, "%s*", fx.service);
        freeReplyObject(redisCommand(c, "SELECT %d", db));
        freeReplyObject(redisCommand(c, "EVAL %s 0 %s",
                                     "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
                                     pat));
    }
    if (c)
        redisFree(c);
}

static void fx_close(void)
{
    for (size_t i = 0; i < sizeof fx.extra / sizeof fx.extra[0]; i++) {
        kv_close(fx.extra[i]);
        fx.extra[i] = NULL;
    }
    kv_close(fx.k);
    fx.k = NULL;
    if (fx.redis)
        redis_cleanup();
    if (fx.dir[0])
        nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    fx.dir[0] = '\0';
}

/* One case, two engines. */
#define KV_CASE(name)                                                                                        \
    static void case_##name(kv *k);                                                                          \
    Test(kv_embedded, name, .fini = fx_close, .timeout = 60) { fx_open(false, #name); case_##name(fx.k); }  \
    Test(kv_redis, name, .fini = fx_close, .timeout = 60) { fx_open(true, #name); case_##name(fx.k); }      \
    static void case_##name(kv *k)

/* ---- helpers ------------------------------------------------------------------------------ */

static void set_ok(kv *k, const char *key, const char *val, int64_t ttl)
{
    pl_error err = {0};
    int rc = kv_set(k, key, val, strlen(val), ttl, &err);
    cr_assert_eq(rc, 0, "set %s: %d %s", key, rc, err.msg);
}

/* The value of key, or NULL when missing (caller frees). */
static char *get_str(kv *k, const char *key)
{
    char *v = NULL;
    size_t n = 0;
    pl_error err = {0};
    int rc = kv_get(k, key, &v, &n, &err);
    cr_assert(rc == 0 || rc == 1, "get %s: %d %s", key, rc, err.msg);
    if (rc == 0) {
        cr_assert_null(v);
        return NULL;
    }
    cr_assert_eq(strlen(v), n, "get %s: length %zu for \"%s\"", key, n, v);
    return v;
}

static void expect_val(kv *k, const char *key, const char *want)
{
    char *v = get_str(k, key);
    if (!want)
        cr_assert_null(v, "%s: expected missing, got \"%s\"", key, v ? v : "");
    else {
        cr_assert_not_null(v, "%s: expected \"%s\", got nothing", key, want);
        cr_assert_str_eq(v, want, "%s", key);
    }
    free(v);
}

static void zadd_ok(kv *k, const char *key, const char *member, double score)
{
    pl_error err = {0};
    int rc = kv_zadd(k, key, member, score, &err);
    cr_assert_eq(rc, 0, "zadd %s %s: %d %s", key, member, rc, err.msg);
}

static int64_t zcard(kv *k, const char *key)
{
    int64_t n = -1;
    pl_error err = {0};
    int rc = kv_zcard(k, key, &n, &err);
    cr_assert_eq(rc, 0, "zcard %s: %d %s", key, rc, err.msg);
    return n;
}

/* Asserts that items are exactly the space-separated members of want. */
static void expect_members(kv_zitem *it, size_t n, const char *want, const char *what)
{
    char got[1024] = "";
    size_t at = 0;
    for (size_t i = 0; i < n && at < sizeof got; i++)
        at += (size_t)snprintf(got + at, sizeof got - at, "%s%s", i ? " " : "", it[i].member);
    cr_assert_str_eq(got, want, "%s", what);
    kv_zitems_free(it, n);
}

static void range_score(kv *k, const char *key, double min, double max, bool desc, size_t off, size_t lim,
                        const char *want)
{
    kv_zitem *it = NULL;
    size_t n = 0;
    pl_error err = {0};
    int rc = kv_zrange_score(k, key, min, max, desc, off, lim, &it, &n, &err);
    cr_assert_eq(rc, 0, "zrange_score: %d %s", rc, err.msg);
    char what[160];
    snprintf(what, sizeof what, "zrange_score %s [%g, %g] %s offset %zu limit %zu", key, min, max,
             desc ? "desc" : "asc", off, lim);
    expect_members(it, n, want, what);
}

static void range_rank(kv *k, const char *key, int64_t start, int64_t stop, bool desc, const char *want)
{
    kv_zitem *it = NULL;
    size_t n = 0;
    pl_error err = {0};
    int rc = kv_zrange_rank(k, key, start, stop, desc, &it, &n, &err);
    cr_assert_eq(rc, 0, "zrange_rank: %d %s", rc, err.msg);
    char what[160];
    snprintf(what, sizeof what, "zrange_rank %s %" PRId64 "..%" PRId64 " %s", key, start, stop, desc ? "desc" : "asc");
    expect_members(it, n, want, what);
}

/* ---- strings ---------------------------------------------------------------------------------- */

KV_CASE(set_get_del)
{
    expect_val(k, "a", NULL);
    set_ok(k, "a", "one", 0);
    expect_val(k, "a", "one");
    set_ok(k, "a", "two", 0);
    expect_val(k, "a", "two");
    set_ok(k, "with space:and/odd\tchars", "x", 0);
    expect_val(k, "with space:and/odd\tchars", "x");
    set_ok(k, "empty", "", 0);
    expect_val(k, "empty", "");

    pl_error err = {0};
    cr_assert_eq(kv_del(k, "a", &err), 1);
    cr_assert_eq(kv_del(k, "a", &err), 0);
    cr_assert_eq(kv_del(k, "never", &err), 0);
    expect_val(k, "a", NULL);
}

KV_CASE(binary_values)
{
    static const char bin[] = {'a', 0, 'b', '\r', '\n', (char)0xff, 0, 'z'};
    pl_error err = {0};
    cr_assert_eq(kv_set(k, "bin", bin, sizeof bin, 0, &err), 0, "%s", err.msg);
    char *v = NULL;
    size_t n = 0;
    cr_assert_eq(kv_get(k, "bin", &v, &n, &err), 1);
    cr_assert_eq(n, sizeof bin);
    cr_assert_eq(memcmp(v, bin, n), 0);
    cr_assert_eq(v[n], '\0', "the value is NUL-terminated");
    free(v);

    /* A value of 1 MiB round-trips. */
    size_t big = 1 << 20;
    char *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (char)(i * 31 + 7);
    cr_assert_eq(kv_set(k, "big", b, big, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(kv_get(k, "big", &v, &n, &err), 1);
    cr_assert_eq(n, big);
    cr_assert_eq(memcmp(v, b, big), 0);
    free(v);
    free(b);
}

KV_CASE(set_nx)
{
    pl_error err = {0};
    cr_assert_eq(kv_set_nx(k, "n", "first", 5, 0, &err), 1, "%s", err.msg);
    cr_assert_eq(kv_set_nx(k, "n", "second", 6, 0, &err), 0);
    expect_val(k, "n", "first");
    /* With a TTL: absent again once it expired. */
    cr_assert_eq(kv_set_nx(k, "t", "1", 1, 150, &err), 1);
    cr_assert_eq(kv_set_nx(k, "t", "2", 1, 150, &err), 0);
    sleep_ms(500);
    cr_assert_eq(kv_set_nx(k, "t", "3", 1, 0, &err), 1);
    expect_val(k, "t", "3");
}

KV_CASE(ttl_expiry)
{
    pl_error err = {0};
    int64_t ttl = 0;
    set_ok(k, "forever", "x", 0);
    cr_assert_eq(kv_ttl(k, "forever", &ttl, &err), 1);
    cr_assert_eq(ttl, -1);
    cr_assert_eq(kv_ttl(k, "missing", &ttl, &err), 0);

    set_ok(k, "short", "x", 200);
    cr_assert_eq(kv_ttl(k, "short", &ttl, &err), 1);
    cr_assert(ttl > 0 && ttl <= 200, "ttl %" PRId64, ttl);
    expect_val(k, "short", "x");
    sleep_ms(600);
    expect_val(k, "short", NULL);
    cr_assert_eq(kv_ttl(k, "short", &ttl, &err), 0);
    cr_assert_eq(kv_del(k, "short", &err), 0, "an expired key is gone for del too");

    /* SET without a TTL clears the old one; with one replaces it. */
    set_ok(k, "re", "x", 200);
    set_ok(k, "re", "y", 0);
    cr_assert_eq(kv_ttl(k, "re", &ttl, &err), 1);
    cr_assert_eq(ttl, -1);
    set_ok(k, "re", "z", 60000);
    cr_assert_eq(kv_ttl(k, "re", &ttl, &err), 1);
    cr_assert(ttl > 59000 && ttl <= 60000, "ttl %" PRId64, ttl);

    /* Many short-lived keys all vanish (lazily or by the sweep). */
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof key, "many:%d", i);
        set_ok(k, key, "v", 100 + i % 50);
    }
    sleep_ms(500);
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof key, "many:%d", i);
        expect_val(k, key, NULL);
    }
}

/* ---- counters ------------------------------------------------------------------------------ */

KV_CASE(incr)
{
    pl_error err = {0};
    int64_t v = 0, ttl = 0;
    cr_assert_eq(kv_incr(k, "c", 1, 0, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v, 1);
    cr_assert_eq(kv_incr(k, "c", 41, 0, &v, &err), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(kv_incr(k, "c", -50, 0, &v, &err), 0);
    cr_assert_eq(v, -8);
    expect_val(k, "c", "-8");
    cr_assert_eq(kv_ttl(k, "c", &ttl, &err), 1);
    cr_assert_eq(ttl, -1);

    /* A counter over a value set as a string. */
    set_ok(k, "s", "100", 0);
    cr_assert_eq(kv_incr(k, "s", 1, 0, &v, &err), 0);
    cr_assert_eq(v, 101);

    /* Not an integer, or one that would overflow: PL_EINVAL, value kept. */
    set_ok(k, "word", "abc", 0);
    cr_assert_eq(kv_incr(k, "word", 1, 0, &v, &err), PL_EINVAL);
    set_ok(k, "float", "1.5", 0);
    cr_assert_eq(kv_incr(k, "float", 1, 0, &v, &err), PL_EINVAL);
    set_ok(k, "big", "9223372036854775807", 0);
    cr_assert_eq(kv_incr(k, "big", 1, 0, &v, &err), PL_EINVAL);
    expect_val(k, "big", "9223372036854775807");
    cr_assert_eq(kv_incr(k, "big", -1, 0, &v, &err), 0);
    cr_assert_eq(v, INT64_MAX - 1);
}

KV_CASE(incr_ttl_on_create)
{
    pl_error err = {0};
    int64_t v = 0, ttl = 0, first = 0;
    cr_assert_eq(kv_incr(k, "rl", 1, 1000, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v, 1);
    cr_assert_eq(kv_ttl(k, "rl", &first, &err), 1);
    cr_assert(first > 0 && first <= 1000, "ttl %" PRId64, first);
    sleep_ms(300);
    /* A later incr neither resets nor removes the window's TTL. */
    cr_assert_eq(kv_incr(k, "rl", 1, 1000, &v, &err), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(kv_ttl(k, "rl", &ttl, &err), 1);
    cr_assert(ttl > 0 && ttl <= first - 200, "ttl %" PRId64 " after 300 ms (first %" PRId64 ")", ttl, first);
    cr_assert_eq(kv_incr(k, "rl", 1, 0, &v, &err), 0);
    cr_assert_eq(kv_ttl(k, "rl", &ttl, &err), 1);
    cr_assert(ttl > 0, "an incr with ttl 0 keeps the existing TTL (%" PRId64 ")", ttl);

    /* The window ends: the next incr starts a new one. */
    sleep_ms(1200);
    expect_val(k, "rl", NULL);
    cr_assert_eq(kv_incr(k, "rl", 1, 300, &v, &err), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(kv_ttl(k, "rl", &ttl, &err), 1);
    cr_assert(ttl > 0 && ttl <= 300, "ttl %" PRId64, ttl);

    /* A counter that exists without TTL does not get one from incr. */
    cr_assert_eq(kv_incr(k, "plain", 1, 0, &v, &err), 0);
    cr_assert_eq(kv_incr(k, "plain", 1, 500, &v, &err), 0);
    cr_assert_eq(kv_ttl(k, "plain", &ttl, &err), 1);
    cr_assert_eq(ttl, -1);
}

typedef struct incr_arg {
    kv *k;
    const char *key;
    int n;
    int errors;
} incr_arg;

static void *incr_thread(void *p)
{
    incr_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        int64_t v;
        if (kv_incr(a->k, a->key, 1, 60000, &v, NULL))
            a->errors++;
    }
    return NULL;
}

KV_CASE(concurrent_incr)
{
    pthread_t t[4];
    incr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (incr_arg){.k = k, .key = "shared", .n = 1000};
        cr_assert_eq(pthread_create(&t[i], NULL, incr_thread, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(a[i].errors, 0, "thread %d: %d errors", i, a[i].errors);
    }
    expect_val(k, "shared", "4000");
}

/* ---- wrong types --------------------------------------------------------------------------- */

KV_CASE(wrong_type)
{
    pl_error err = {0};
    int64_t n = 0, v = 0;
    double score;
    kv_zitem *it = NULL;
    size_t cnt = 0;
    set_ok(k, "str", "x", 0);
    zadd_ok(k, "zs", "m", 1);

    cr_assert_eq(kv_zadd(k, "str", "m", 1, &err), PL_EINVAL);
    cr_assert_eq(kv_zcard(k, "str", &n, &err), PL_EINVAL);
    cr_assert_eq(kv_zscore(k, "str", "m", &score, &err), PL_EINVAL);
    cr_assert_eq(kv_zrem(k, "str", "m", &err), PL_EINVAL);
    cr_assert_eq(kv_ztrim(k, "str", 1, &err), PL_EINVAL);
    cr_assert_eq(kv_zrange_score(k, "str", 0, 10, false, 0, 10, &it, &cnt, &err), PL_EINVAL);
    cr_assert_eq(kv_zrange_rank(k, "str", 0, -1, false, &it, &cnt, &err), PL_EINVAL);
    cr_assert_null(it);
    cr_assert_eq(cnt, 0);

    char *val = NULL;
    size_t len;
    cr_assert_eq(kv_get(k, "zs", &val, &len, &err), PL_EINVAL);
    cr_assert_null(val);
    cr_assert_eq(kv_incr(k, "zs", 1, 0, &v, &err), PL_EINVAL);
    cr_assert_eq(kv_set_nx(k, "zs", "x", 1, 0, &err), 0, "set_nx sees any kind of key");
    int64_t ttl = 0;
    cr_assert_eq(kv_ttl(k, "zs", &ttl, &err), 1);
    cr_assert_eq(ttl, -1);

    /* Nothing changed on either key. */
    expect_val(k, "str", "x");
    cr_assert_eq(zcard(k, "zs"), 1);

    /* SET replaces a key of any kind; DEL removes any kind. */
    set_ok(k, "zs", "now a string", 0);
    expect_val(k, "zs", "now a string");
    zadd_ok(k, "zs2", "m", 1);
    cr_assert_eq(kv_del(k, "zs2", &err), 1);
    cr_assert_eq(zcard(k, "zs2"), 0);
}

/* ---- sorted sets ------------------------------------------------------------------------------ */

KV_CASE(zset_add_update_remove)
{
    pl_error err = {0};
    double score = 0;
    cr_assert_eq(zcard(k, "z"), 0);
    zadd_ok(k, "z", "a", 1);
    zadd_ok(k, "z", "b", 2);
    zadd_ok(k, "z", "c", 3);
    cr_assert_eq(zcard(k, "z"), 3);
    cr_assert_eq(kv_zscore(k, "z", "b", &score, &err), 1);
    cr_assert_float_eq(score, 2.0, 1e-12);
    cr_assert_eq(kv_zscore(k, "z", "nope", &score, &err), 0);
    cr_assert_eq(kv_zscore(k, "missing", "a", &score, &err), 0);

    zadd_ok(k, "z", "b", 5); /* update: same card, new place */
    cr_assert_eq(zcard(k, "z"), 3);
    cr_assert_eq(kv_zscore(k, "z", "b", &score, &err), 1);
    cr_assert_float_eq(score, 5.0, 1e-12);
    range_rank(k, "z", 0, -1, false, "a c b");

    zadd_ok(k, "z", "frac", -2.25);
    cr_assert_eq(kv_zscore(k, "z", "frac", &score, &err), 1);
    cr_assert_float_eq(score, -2.25, 1e-12);
    zadd_ok(k, "z", "precise", 1700000000123.456);
    cr_assert_eq(kv_zscore(k, "z", "precise", &score, &err), 1);
    cr_assert_eq(score, 1700000000123.456, "scores keep full double precision");

    cr_assert_eq(kv_zrem(k, "z", "c", &err), 1);
    cr_assert_eq(kv_zrem(k, "z", "c", &err), 0);
    cr_assert_eq(kv_zrem(k, "missing", "c", &err), 0);
    range_rank(k, "z", 0, -1, false, "frac a b precise");

    /* The last member gone, the key is gone. */
    cr_assert_eq(kv_zrem(k, "z", "a", &err), 1);
    cr_assert_eq(kv_zrem(k, "z", "b", &err), 1);
    cr_assert_eq(kv_zrem(k, "z", "frac", &err), 1);
    cr_assert_eq(kv_zrem(k, "z", "precise", &err), 1);
    cr_assert_eq(zcard(k, "z"), 0);
    int64_t ttl;
    cr_assert_eq(kv_ttl(k, "z", &ttl, &err), 0);
    cr_assert_eq(kv_set_nx(k, "z", "s", 1, 0, &err), 1);
}

/* Ten members m0..m9 with scores 0..9 under key. */
static void ten(kv *k, const char *key)
{
    kv_zop ops[10];
    char names[10][8];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        ops[i] = (kv_zop){.key = key, .member = names[i], .score = i};
    }
    pl_error err = {0};
    cr_assert_eq(kv_zadd_batch(k, ops, 10, &err), 0, "%s", err.msg);
}

KV_CASE(zrange_by_score)
{
    ten(k, "r");
    range_score(k, "r", 2, 5, false, 0, 100, "m2 m3 m4 m5");
    range_score(k, "r", 2, 5, true, 0, 100, "m5 m4 m3 m2");
    range_score(k, "r", 2, 5, false, 1, 2, "m3 m4");
    range_score(k, "r", 2, 5, true, 1, 2, "m4 m3");
    range_score(k, "r", 2, 5, false, 3, 10, "m5");
    range_score(k, "r", 2, 5, false, 4, 10, "");
    range_score(k, "r", 2, 5, true, 10, 10, "");
    range_score(k, "r", 2, 5, false, 0, 0, "");
    range_score(k, "r", 2.5, 4.5, false, 0, 100, "m3 m4");
    range_score(k, "r", 5, 2, false, 0, 100, "");
    range_score(k, "r", 9, 9, false, 0, 100, "m9");
    range_score(k, "r", -INFINITY, INFINITY, true, 0, 3, "m9 m8 m7");
    range_score(k, "r", -INFINITY, 1, false, 0, SIZE_MAX, "m0 m1");
    range_score(k, "r", 10, INFINITY, false, 0, 100, "");
    range_score(k, "missing", -INFINITY, INFINITY, false, 0, 100, "");

    /* Equal scores order by member bytes, reversed when descending. */
    zadd_ok(k, "tie", "b", 1);
    zadd_ok(k, "tie", "a", 1);
    zadd_ok(k, "tie", "ab", 1);
    zadd_ok(k, "tie", "c", 0);
    range_score(k, "tie", 1, 1, false, 0, 10, "a ab b");
    range_score(k, "tie", 1, 1, true, 0, 10, "b ab a");
    range_score(k, "tie", -1, 1, false, 0, 10, "c a ab b");

    /* Scores come back with the items. */
    kv_zitem *it = NULL;
    size_t n = 0;
    pl_error err = {0};
    cr_assert_eq(kv_zrange_score(k, "r", 7, 8, false, 0, 10, &it, &n, &err), 0);
    cr_assert_eq(n, 2);
    cr_assert_float_eq(it[0].score, 7.0, 1e-12);
    cr_assert_float_eq(it[1].score, 8.0, 1e-12);
    kv_zitems_free(it, n);
    kv_zitems_free(NULL, 0);
}

KV_CASE(zrange_by_rank)
{
    ten(k, "r");
    range_rank(k, "r", 0, 2, false, "m0 m1 m2");
    range_rank(k, "r", 0, 2, true, "m9 m8 m7");
    range_rank(k, "r", -3, -1, false, "m7 m8 m9");
    range_rank(k, "r", -3, -1, true, "m2 m1 m0");
    range_rank(k, "r", 0, -1, false, "m0 m1 m2 m3 m4 m5 m6 m7 m8 m9");
    range_rank(k, "r", 0, 0, true, "m9");
    range_rank(k, "r", 8, 100, false, "m8 m9");
    range_rank(k, "r", -100, 1, false, "m0 m1");
    range_rank(k, "r", -100, -100, false, "");
    range_rank(k, "r", 5, 4, false, "");
    range_rank(k, "r", 10, 20, false, "");
    range_rank(k, "r", -1, -2, false, "");
    range_rank(k, "missing", 0, -1, false, "");
}

KV_CASE(ztrim)
{
    pl_error err = {0};
    ten(k, "t");
    cr_assert_eq(kv_ztrim(k, "t", 3, &err), 0, "%s", err.msg);
    range_rank(k, "t", 0, -1, false, "m7 m8 m9");
    cr_assert_eq(kv_ztrim(k, "t", 5, &err), 0);
    cr_assert_eq(zcard(k, "t"), 3);
    cr_assert_eq(kv_ztrim(k, "missing", 5, &err), 0);
    cr_assert_eq(kv_ztrim(k, "t", 0, &err), 0);
    cr_assert_eq(zcard(k, "t"), 0);
    int64_t ttl;
    cr_assert_eq(kv_ttl(k, "t", &ttl, &err), 0, "trimmed to nothing, the key is gone");
}

KV_CASE(batch_many_keys_with_trim)
{
    /* 500 feeds get 8 entries each over 4 batches, trimmed to the 5 newest. */
    enum { FEEDS = 500, PER = 8, KEEP = 5 };
    static char keys[FEEDS][24], members[PER][24];
    for (int f = 0; f < FEEDS; f++)
        snprintf(keys[f], sizeof keys[f], "feed:%d", f);
    for (int m = 0; m < PER; m++)
        snprintf(members[m], sizeof members[m], "post:%d", m);
    pl_error err = {0};
    kv_zop *ops = calloc(FEEDS * 2, sizeof *ops);
    for (int round = 0; round < PER / 2; round++) {
        size_t n = 0;
        for (int f = 0; f < FEEDS; f++)
            for (int j = 0; j < 2; j++) {
                int m = round * 2 + j;
                ops[n++] = (kv_zop){.key = keys[f], .member = members[m], .score = 1000 + m, .trim_to = KEEP};
            }
        cr_assert_eq(kv_zadd_batch(k, ops, n, &err), 0, "%s", err.msg);
    }
    for (int f = 0; f < FEEDS; f += 37) {
        cr_assert_eq(zcard(k, keys[f]), KEEP, "%s", keys[f]);
        range_rank(k, keys[f], 0, -1, true, "post:7 post:6 post:5 post:4 post:3");
    }

    /* Ops on one key apply in order within a batch: the later score wins,
     * and a member added below the trim line goes at once. */
    kv_zop seq[] = {
        {.key = "o", .member = "x", .score = 1},
        {.key = "o", .member = "y", .score = 2},
        {.key = "o", .member = "x", .score = 3},
        {.key = "o", .member = "low", .score = 0, .trim_to = 2},
    };
    cr_assert_eq(kv_zadd_batch(k, seq, 4, &err), 0);
    range_rank(k, "o", 0, -1, false, "y x");

    /* A wrong-type op fails alone: the call says PL_EINVAL, the rest apply. */
    set_ok(k, "str", "x", 0);
    kv_zop mixed[] = {
        {.key = "m1", .member = "a", .score = 1},
        {.key = "str", .member = "a", .score = 1},
        {.key = "m2", .member = "a", .score = 1},
    };
    cr_assert_eq(kv_zadd_batch(k, mixed, 3, &err), PL_EINVAL);
    cr_assert_eq(zcard(k, "m1"), 1);
    cr_assert_eq(zcard(k, "m2"), 1);
    expect_val(k, "str", "x");
    cr_assert_eq(kv_zadd_batch(k, NULL, 0, &err), 0, "an empty batch is a no-op");
    free(ops);
}

KV_CASE(fan_out_10k)
{
    /* The timeline's shape at full size: one post into 10,000 feeds, trimmed. */
    enum { FEEDS = 10000 };
    char (*keys)[24] = malloc(FEEDS * sizeof *keys);
    kv_zop *ops = malloc(FEEDS * sizeof *ops);
    pl_error err = {0};
    for (int round = 0; round < 3; round++) {
        char member[32];
        snprintf(member, sizeof member, "post:%d", round);
        for (int f = 0; f < FEEDS; f++) {
            snprintf(keys[f], sizeof keys[f], "home:%d", f);
            ops[f] = (kv_zop){.key = keys[f], .member = member, .score = round, .trim_to = 2};
        }
        cr_assert_eq(kv_zadd_batch(k, ops, FEEDS, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(zcard(k, "home:0"), 2);
    cr_assert_eq(zcard(k, "home:9999"), 2);
    range_rank(k, "home:4242", 0, -1, true, "post:2 post:1");
    free(keys);
    free(ops);
}

/* ---- key prefixes ------------------------------------------------------------------------------ */

KV_CASE(prefix_isolation)
{
    char other[80];
    snprintf(other, sizeof other, "%s_other", fx.service);
    kv *k2 = NULL;
    pl_error err = {0};
    cr_assert_eq(open_as(fx.redis, other, &k2, &err), 0, "%s", err.msg);
    fx.extra[0] = k2;

    set_ok(k, "same", "mine", 0);
    set_ok(k2, "same", "theirs", 0);
    expect_val(k, "same", "mine");
    expect_val(k2, "same", "theirs");
    cr_assert_eq(kv_del(k2, "same", &err), 1);
    expect_val(k, "same", "mine");
    expect_val(k2, "same", NULL);

    zadd_ok(k, "z", "a", 1);
    cr_assert_eq(zcard(k2, "z"), 0);
    set_ok(k2, "z", "string here", 0);
    cr_assert_eq(zcard(k, "z"), 1);

    /* A key that looks like another service's prefixed key stays ours. */
    char spoof[128];
    snprintf(spoof, sizeof spoof, "%s:same", other);
    expect_val(k, spoof, NULL);
    int64_t v;
    cr_assert_eq(kv_incr(k2, "n", 5, 0, &v, &err), 0);
    cr_assert_eq(kv_incr(k, "n", 1, 0, &v, &err), 0);
    cr_assert_eq(v, 1);
}

/* ---- publish / subscribe ------------------------------------------------------------------------ */

typedef struct inbox {
    pthread_mutex_t mu;
    int n;
    char channel[64][96];
    char msg[1024][16];
    atomic_bool closed;     /* set right after kv_unsubscribe returned */
    atomic_int after_close; /* callbacks seen after that */
    int delay_ms;
} inbox;

static void inbox_init(inbox *b) { memset(b, 0, sizeof *b), pthread_mutex_init(&b->mu, NULL); }

static void on_msg(void *ud, const char *channel, const char *msg, size_t len)
{
    inbox *b = ud;
    if (atomic_load(&b->closed))
        atomic_fetch_add(&b->after_close, 1);
    if (b->delay_ms)
        sleep_ms(b->delay_ms);
    pthread_mutex_lock(&b->mu);
    if (b->n < 1024) {
        snprintf(b->msg[b->n], sizeof b->msg[b->n], "%.*s", (int)(len < 15 ? len : 15), msg);
        if (b->n < 64)
            snprintf(b->channel[b->n], sizeof b->channel[b->n], "%s", channel);
    }
    b->n++;
    pthread_mutex_unlock(&b->mu);
}

static int inbox_count(inbox *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->n;
    pthread_mutex_unlock(&b->mu);
    return n;
}

static bool wait_count(inbox *b, int n, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (inbox_count(b) < n && now_ms() < end)
        sleep_ms(5);
    return inbox_count(b) >= n;
}

static kv_sub *sub_ok(kv *k, const char *channel, inbox *b)
{
    kv_sub *s = NULL;
    pl_error err = {0};
    int rc = kv_subscribe(k, channel, on_msg, b, &s, &err);
    cr_assert_eq(rc, 0, "subscribe %s: %d %s", channel, rc, err.msg);
    return s;
}

static int pub(kv *k, const char *channel, const char *msg)
{
    pl_error err = {0};
    int rc = kv_publish(k, channel, msg, strlen(msg), &err);
    cr_assert(rc >= 0, "publish %s: %d %s", channel, rc, err.msg);
    return rc;
}

KV_CASE(pubsub_order)
{
    char ch[128];
    snprintf(ch, sizeof ch, "%s.order", fx.chan);
    cr_assert_eq(pub(k, ch, "nobody listens"), 0);
    static inbox b;
    inbox_init(&b);
    kv_sub *s = sub_ok(k, ch, &b);
    cr_assert(pub(k, ch, "0") >= 1, "a subscribed channel has a receiver");
    for (int i = 1; i < 500; i++) {
        char m[16];
        snprintf(m, sizeof m, "%d", i);
        pub(k, ch, m);
    }
    cr_assert(wait_count(&b, 500, 10000), "got %d of 500 messages", inbox_count(&b));
    for (int i = 0; i < 500; i++) {
        char m[16];
        snprintf(m, sizeof m, "%d", i);
        cr_assert_str_eq(b.msg[i], m, "message %d out of order", i);
    }
    cr_assert_str_eq(b.channel[0], ch);

    /* Binary payloads arrive whole. */
    static inbox bin;
    inbox_init(&bin);
    char ch2[128];
    snprintf(ch2, sizeof ch2, "%s.bin", fx.chan);
    kv_sub *s2 = sub_ok(k, ch2, &bin);
    pl_error err = {0};
    cr_assert(kv_publish(k, ch2, "a\0b", 3, &err) >= 1);
    cr_assert(wait_count(&bin, 1, 5000));
    kv_unsubscribe(s2);
    kv_unsubscribe(s);
}

KV_CASE(pubsub_patterns)
{
    static inbox b, exact;
    inbox_init(&b);
    inbox_init(&exact);
    char pat[128], a[128], c[128], other[128];
    snprintf(pat, sizeof pat, "%s.user.*", fx.chan);
    snprintf(a, sizeof a, "%s.user.a", fx.chan);
    snprintf(c, sizeof c, "%s.user.b.deep", fx.chan);
    snprintf(other, sizeof other, "%s.group.a", fx.chan);
    kv_sub *s = sub_ok(k, pat, &b);
    kv_sub *e = sub_ok(k, a, &exact);
    pub(k, a, "1");
    pub(k, other, "x");
    pub(k, c, "2");
    cr_assert(wait_count(&b, 2, 5000), "pattern got %d", inbox_count(&b));
    cr_assert(wait_count(&exact, 1, 5000));
    sleep_ms(200);
    cr_assert_eq(inbox_count(&b), 2, "the pattern matched only its channels");
    cr_assert_eq(inbox_count(&exact), 1);
    cr_assert_str_eq(b.msg[0], "1");
    cr_assert_str_eq(b.channel[0], a, "the callback gets the channel, not the pattern");
    cr_assert_str_eq(b.msg[1], "2");
    cr_assert_str_eq(b.channel[1], c);
    kv_unsubscribe(s);
    kv_unsubscribe(e);
}

KV_CASE(pubsub_unsubscribe)
{
    static inbox b, keep;
    inbox_init(&b);
    inbox_init(&keep);
    char ch[128];
    snprintf(ch, sizeof ch, "%s.unsub", fx.chan);
    kv_sub *s = sub_ok(k, ch, &b);
    kv_sub *s2 = sub_ok(k, ch, &keep); /* a second subscriber to the same channel */
    pub(k, ch, "1");
    cr_assert(wait_count(&b, 1, 5000));
    kv_unsubscribe(s);
    int n = inbox_count(&b);
    pub(k, ch, "2");
    cr_assert(wait_count(&keep, 2, 5000), "the other subscription still receives");
    sleep_ms(200);
    cr_assert_eq(inbox_count(&b), n, "nothing after unsubscribe");
    kv_unsubscribe(s2);
    kv_unsubscribe(NULL);

    /* No callback after kv_unsubscribe returns, even with messages queued and
     * a callback running at that moment. */
    static inbox slow;
    inbox_init(&slow);
    slow.delay_ms = 20;
    kv_sub *s3 = sub_ok(k, ch, &slow);
    for (int i = 0; i < 20; i++)
        pub(k, ch, "q");
    cr_assert(wait_count(&slow, 1, 5000));
    kv_unsubscribe(s3);
    atomic_store(&slow.closed, true);
    sleep_ms(300);
    cr_assert_eq(atomic_load(&slow.after_close), 0, "a callback ran after kv_unsubscribe returned");
    cr_assert(inbox_count(&slow) < 20, "unsubscribing dropped the queued messages");
}

static kv_sub *self_sub;
static atomic_int self_calls;

static void self_unsubscribe(void *ud, const char *channel, const char *msg, size_t len)
{
    atomic_fetch_add(&self_calls, 1);
    kv_unsubscribe(self_sub); /* from inside its own callback: must not deadlock */
    self_sub = NULL;
}

KV_CASE(pubsub_unsubscribe_in_callback)
{
    char ch[128];
    snprintf(ch, sizeof ch, "%s.self", fx.chan);
    pl_error err = {0};
    cr_assert_eq(kv_subscribe(k, ch, self_unsubscribe, NULL, &self_sub, &err), 0, "%s", err.msg);
    pub(k, ch, "1");
    int64_t end = now_ms() + 5000;
    while (atomic_load(&self_calls) == 0 && now_ms() < end)
        sleep_ms(5);
    cr_assert_eq(atomic_load(&self_calls), 1);
    pub(k, ch, "2");
    sleep_ms(200);
    cr_assert_eq(atomic_load(&self_calls), 1);
}

static struct {
    kv *k;
    char inner[128];
    kv_sub *sub;
    int rc;
    inbox box;
} nest;

static void subscribe_inside(void *ud, const char *channel, const char *msg, size_t len)
{
    if (!nest.sub) /* a callback may subscribe, on every engine */
        nest.rc = kv_subscribe(nest.k, nest.inner, on_msg, &nest.box, &nest.sub, NULL);
}

KV_CASE(pubsub_subscribe_in_callback)
{
    char outer[128];
    snprintf(outer, sizeof outer, "%s.outer", fx.chan);
    snprintf(nest.inner, sizeof nest.inner, "%s.inner", fx.chan);
    nest.k = k;
    inbox_init(&nest.box);
    kv_sub *s = NULL;
    pl_error err = {0};
    cr_assert_eq(kv_subscribe(k, outer, subscribe_inside, NULL, &s, &err), 0, "%s", err.msg);
    pub(k, outer, "go");
    int64_t end = now_ms() + 5000;
    while (!nest.sub && now_ms() < end)
        sleep_ms(5);
    cr_assert_not_null(nest.sub, "the callback did not subscribe");
    cr_assert_eq(nest.rc, 0);
    /* It starts receiving shortly after (on Redis: once the SUBSCRIBE got there). */
    while (inbox_count(&nest.box) == 0 && now_ms() < end) {
        pub(k, nest.inner, "x");
        sleep_ms(20);
    }
    cr_assert(inbox_count(&nest.box) > 0, "the subscription made in a callback never received");
    kv_unsubscribe(s);
    kv_unsubscribe(nest.sub);
}

KV_CASE(pubsub_across_stores)
{
    /* Channels are not prefixed: services meet there. */
    char other[80];
    snprintf(other, sizeof other, "%s_pub", fx.service);
    kv *k2 = NULL;
    pl_error err = {0};
    cr_assert_eq(open_as(fx.redis, other, &k2, &err), 0, "%s", err.msg);
    fx.extra[0] = k2;
    static inbox b;
    inbox_init(&b);
    char ch[128];
    snprintf(ch, sizeof ch, "%s.cross", fx.chan);
    kv_sub *s = sub_ok(k, ch, &b);
    cr_assert(pub(k2, ch, "hello") >= 1);
    cr_assert(wait_count(&b, 1, 5000));
    cr_assert_str_eq(b.msg[0], "hello");
    kv_unsubscribe(s);
}

KV_CASE(arguments)
{
    pl_error err = {0};
    kv_sub *s = NULL;
    cr_assert_eq(kv_set(k, NULL, "x", 1, 0, &err), PL_EINVAL);
    cr_assert_eq(kv_set(k, "k", "x", 1, -5, &err), PL_EINVAL);
    cr_assert_eq(kv_zadd(k, "z", NULL, 1, &err), PL_EINVAL);
    cr_assert_eq(kv_zadd(k, "z", "m", NAN, &err), PL_EINVAL);
    cr_assert_eq(kv_subscribe(k, "", on_msg, NULL, &s, &err), PL_EINVAL);
    cr_assert_eq(kv_publish(k, NULL, "x", 1, &err), PL_EINVAL);
    cr_assert_eq(kv_ping(k, &err), 0, "%s", err.msg);
    cr_assert_eq(zcard(k, "z"), 0);
}

/* ---- the embedded engine only --------------------------------------------------------------------- */

static kv *open_embedded(const char *svc)
{
    kv *k = NULL;
    pl_error err = {0};
    kv_options o = {.service = svc, .data_dir = fx.dir};
    cr_assert_eq(kv_open("", &o, &k, &err), 0, "open: %s", err.msg);
    return k;
}

/* A mix of every kind of write, with a known outcome (check_state). */
static void write_state(kv *k)
{
    pl_error err = {0};
    set_ok(k, "s1", "v1", 0);
    set_ok(k, "s2", "v2", 60000);
    set_ok(k, "gone", "x", 0);
    cr_assert_eq(kv_del(k, "gone", &err), 1);
    set_ok(k, "expires", "x", 100);
    int64_t v;
    for (int i = 0; i < 7; i++)
        cr_assert_eq(kv_incr(k, "ctr", 2, 60000, &v, &err), 0);
    ten(k, "z");
    cr_assert_eq(kv_ztrim(k, "z", 6, &err), 0);
    cr_assert_eq(kv_zrem(k, "z", "m5", &err), 1);
    zadd_ok(k, "z", "m9", -1);
    kv_zop ops[] = {{.key = "feed", .member = "a", .score = 1, .trim_to = 2},
                    {.key = "feed", .member = "b", .score = 2, .trim_to = 2},
                    {.key = "feed", .member = "c", .score = 3, .trim_to = 2}};
    cr_assert_eq(kv_zadd_batch(k, ops, 3, &err), 0);
    zadd_ok(k, "emptied", "x", 1);
    cr_assert_eq(kv_zrem(k, "emptied", "x", &err), 1);
    zadd_ok(k, "retyped", "x", 1);
    set_ok(k, "retyped", "string", 0);
}

static void check_state(kv *k)
{
    pl_error err = {0};
    expect_val(k, "s1", "v1");
    expect_val(k, "s2", "v2");
    int64_t ttl;
    cr_assert_eq(kv_ttl(k, "s2", &ttl, &err), 1);
    cr_assert(ttl > 0 && ttl <= 60000);
    expect_val(k, "gone", NULL);
    expect_val(k, "expires", NULL);
    expect_val(k, "ctr", "14");
    cr_assert_eq(kv_ttl(k, "ctr", &ttl, &err), 1);
    cr_assert(ttl > 0 && ttl <= 60000);
    range_rank(k, "z", 0, -1, false, "m9 m4 m6 m7 m8");
    range_rank(k, "feed", 0, -1, false, "b c");
    cr_assert_eq(zcard(k, "emptied"), 0);
    expect_val(k, "retyped", "string");
}

Test(kv_embedded_only, durable_across_close, .fini = fx_close, .timeout = 60)
{
    make_dir();
    kv *k = open_embedded("dur");
    write_state(k);
    sleep_ms(300);
    check_state(k);
    kv_close(k);
    char path[128];
    snprintf(path, sizeof path, "%s/dur.kv.db", fx.dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "the store is the file <data>/<service>.kv.db");
    k = open_embedded("dur");
    check_state(k);
    /* Twice more: a store reopened from its checkpoint keeps changing right. */
    set_ok(k, "after", "reopen", 0);
    kv_close(k);
    k = open_embedded("dur");
    check_state(k);
    expect_val(k, "after", "reopen");
    kv_close(k);
}

Test(kv_embedded_only, durable_across_crash, .fini = fx_close, .timeout = 60)
{
    /* A child writes and dies without closing (no checkpoint, no clean
     * shutdown): everything it was told succeeded is there on reopen. */
    make_dir();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        kv *k = open_embedded("crash");
        write_state(k);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %d)", status);
    sleep_ms(300);
    kv *k = open_embedded("crash");
    check_state(k);
    kv_close(k);
    k = open_embedded("crash"); /* and again, from the checkpoint the close wrote */
    check_state(k);
    kv_close(k);
}

Test(kv_embedded_only, one_process_per_file, .fini = fx_close, .timeout = 60)
{
    /* Another process holds the store: refused. (The child opens it, not this
     * process, so that fork() copies no store and no engine thread.) */
    make_dir();
    int ready[2], done[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(done), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        kv *c = open_embedded("excl");
        char x = 1;
        if (write(ready[1], &x, 1) != 1 || read(done[0], &x, 1) != 1)
            _exit(2);
        kv_close(c);
        _exit(0);
    }
    char x;
    cr_assert_eq(read(ready[0], &x, 1), 1);
    kv *k = NULL;
    pl_error err = {0};
    kv_options o = {.service = "excl", .data_dir = fx.dir};
    int rc = kv_open("", &o, &k, &err);
    cr_assert_eq(rc, PL_EUNAVAILABLE, "a second process could open the store (%d %s)", rc, err.msg);
    cr_assert_eq(write(done[1], &x, 1), 1);
    int status = 0;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %d)", status);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(done[i]);
    }

    /* Once it is gone, this process may; opened twice here, it is shared. */
    kv *a = open_embedded("excl");
    kv *b = open_embedded("excl");
    set_ok(a, "x", "1", 0);
    expect_val(b, "x", "1");
    kv_close(b);
    expect_val(a, "x", "1");
    kv_close(a);
}

Test(kv_embedded_only, many_keys_survive_checkpoint, .fini = fx_close, .timeout = 120)
{
    make_dir();
    kv *k = open_embedded("many");
    enum { N = 20000 };
    kv_zop *ops = malloc(N * sizeof *ops);
    char (*keys)[16] = malloc(N * sizeof *keys);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        ops[i] = (kv_zop){.key = keys[i], .member = "m", .score = i};
    }
    pl_error err = {0};
    cr_assert_eq(kv_zadd_batch(k, ops, N, &err), 0);
    for (int i = 0; i < N; i += 2)
        set_ok(k, keys[i], "now a string", 0);
    kv_close(k);
    k = open_embedded("many");
    for (int i = 0; i < N; i += 999) {
        if (i % 2)
            cr_assert_eq(zcard(k, keys[i]), 1);
        else
            expect_val(k, keys[i], "now a string");
    }
    kv_close(k);
    free(ops);
    free(keys);
}

/* A deterministic mix of every kind of write over 60 keys (wrong-kind calls
 * included: they fail the same way every time); one seed, one history. */
static void random_ops(kv *k, unsigned seed, int n)
{
    char key[16], key2[16], key3[16], member[16], val[24];
    for (int i = 0; i < n; i++) {
        unsigned r = (unsigned)rand_r(&seed);
        snprintf(key, sizeof key, "k%u", r % 60);
        snprintf(member, sizeof member, "m%u", (r >> 6) % 20);
        int64_t v;
        switch ((r >> 11) % 8) {
        case 0:
            snprintf(val, sizeof val, "v%d", i);
            kv_set(k, key, val, strlen(val), 0, NULL);
            break;
        case 1:
            kv_del(k, key, NULL);
            break;
        case 2:
            kv_incr(k, key, 1, 600000, &v, NULL);
            break;
        case 3:
        case 4: {
            snprintf(key2, sizeof key2, "k%u", (r + 7) % 60);
            snprintf(key3, sizeof key3, "k%u", (r + 13) % 60);
            double score = (double)((r >> 16) % 100);
            kv_zop ops[] = {{.key = key, .member = member, .score = score, .trim_to = 5},
                            {.key = key2, .member = member, .score = score + 0.5, .trim_to = 5},
                            {.key = key3, .member = member, .score = -score, .trim_to = 5}};
            kv_zadd_batch(k, ops, 3, NULL);
            break;
        }
        case 5:
            kv_zrem(k, key, member, NULL);
            break;
        case 6:
            kv_ztrim(k, key, 3, NULL);
            break;
        default:
            kv_set_nx(k, key, "nx", 2, 0, NULL);
        }
    }
}

/* Everything the 60 keys hold, as text. */
static char *dump_state(kv *k)
{
    size_t cap = 1 << 16, at = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    for (int i = 0; i < 60; i++) {
        char key[16], *v = NULL;
        size_t n;
        snprintf(key, sizeof key, "k%d", i);
        int64_t ttl = 0;
        int has = kv_ttl(k, key, &ttl, NULL);
        int rc = kv_get(k, key, &v, &n, NULL);
        if (at + 512 > cap)
            out = realloc(out, cap *= 2);
        if (rc == 1) {
            at += (size_t)snprintf(out + at, cap - at, "%s=S:%s%s\n", key, v, ttl > 0 ? " (ttl)" : "");
            free(v);
        } else if (rc == PL_EINVAL) {
            kv_zitem *it = NULL;
            size_t cnt = 0;
            kv_zrange_rank(k, key, 0, -1, false, &it, &cnt, NULL);
            at += (size_t)snprintf(out + at, cap - at, "%s=Z:", key);
            for (size_t j = 0; j < cnt; j++)
                at += (size_t)snprintf(out + at, cap - at, "%s@%g ", it[j].member, it[j].score);
            at += (size_t)snprintf(out + at, cap - at, "\n");
            kv_zitems_free(it, cnt);
        } else {
            at += (size_t)snprintf(out + at, cap - at, "%s=-%s\n", key, has ? "?" : "");
        }
    }
    return out;
}

static kv *open_url(const char *file, const char *opts)
{
    char url[256];
    snprintf(url, sizeof url, "embedded:%s/%s%s", fx.dir, file, opts);
    kv *k = NULL;
    pl_error err = {0};
    kv_options o = {.service = "ignored"};
    cr_assert_eq(kv_open(url, &o, &k, &err), 0, "open %s: %s", url, err.msg);
    return k;
}

Test(kv_embedded_only, crash_during_checkpoints, .fini = fx_close, .timeout = 120)
{
    /* A child folds its log every few ms (URL options) while it writes a long
     * random history, then dies without closing: the store it left, reopened,
     * equals a store that went through the same history undisturbed. */
    make_dir();
    enum { OPS = 20000 };
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        kv *k = open_url("crash.kv.db", "?checkpoint_bytes=2048&checkpoint_ms=5");
        random_ops(k, 4242, OPS);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (status %d)", status);

    /* The child did fold while it wrote: rows in kv_data, most log rows gone
     * (every one of its writes appended one). */
    char path[160];
    snprintf(path, sizeof path, "%s/crash.kv.db", fx.dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM kv_data), (SELECT count(*) FROM kv_log)", -1, &q,
                                    NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
    int64_t data_rows = sqlite3_column_int64(q, 0), log_rows = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
    cr_assert_gt(data_rows, 0, "no checkpoint ran in the child");
    cr_assert_lt(log_rows, OPS / 2, "the log was not folded (%" PRId64 " rows left)", log_rows);

    kv *ref = open_url("ref.kv.db", "");
    random_ops(ref, 4242, OPS);
    char *want = dump_state(ref);
    kv_close(ref);
    ref = open_url("ref.kv.db", "");
    char *again = dump_state(ref);
    cr_assert_str_eq(again, want, "a clean close and reopen changed the store");
    kv_close(ref);

    kv *k = open_url("crash.kv.db", "");
    char *got = dump_state(k);
    cr_assert_str_eq(got, want, "after the crash");
    kv_close(k);
    k = open_url("crash.kv.db", "");
    char *got2 = dump_state(k);
    cr_assert_str_eq(got2, want, "after the crash, closed and reopened");
    kv_close(k);
    free(want);
    free(again);
    free(got);
    free(got2);
}

Test(kv_embedded_only, url_options, .fini = fx_close, .timeout = 60)
{
    make_dir();
    kv *k = NULL;
    pl_error err = {0};
    kv_options o = {.service = "opts", .data_dir = fx.dir};
    cr_assert_eq(kv_open("embedded:?checkpoint_ms=0", &o, &k, &err), PL_ECONFIG);
    cr_assert_eq(kv_open("embedded:?bogus=1", &o, &k, &err), PL_ECONFIG);
    cr_assert_eq(kv_open("embedded:?checkpoint_ms=100", &o, &k, &err), 0, "%s", err.msg);
    set_ok(k, "a", "1", 0);
    kv_close(k);
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/opts.kv.db", fx.dir);
    cr_assert_eq(stat(path, &st), 0, "options alone keep the default file");
    cr_assert_eq(kv_open("nosuch://x", &o, &k, &err), PL_ECONFIG);
    kv_options none = {0};
    cr_assert_eq(kv_open("", &none, &k, &err), PL_ECONFIG, "a store needs its service");
}

/* ---- Redis restarts (a private server) ----------------------------------------------------------- */

static struct {
    pid_t pid;
    int port;
    char dir[64];
} rs;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool redis_answers(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rs.port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

static void redis_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", rs.port);
    rs.pid = fork();
    cr_assert(rs.pid >= 0);
    if (rs.pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "",
               "--appendonly", "no", "--dir", rs.dir, "--logfile", "", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    int64_t end = now_ms() + 10000;
    while (!redis_answers() && now_ms() < end)
        sleep_ms(20);
    cr_assert(redis_answers(), "the private redis-server did not start on port %d", rs.port);
}

static void redis_stop(void)
{
    if (rs.pid > 0) {
        kill(rs.pid, SIGTERM);
        waitpid(rs.pid, NULL, 0);
        rs.pid = 0;
    }
}

static void rs_fini(void)
{
    fx_close();
    redis_stop();
    if (rs.dir[0])
        nftw(rs.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

Test(kv_redis_restart, recovers_after_restart, .fini = rs_fini, .timeout = 120)
{
    if (!redis_url())
        cr_skip_test("PULSE_TEST_REDIS_URL is not set: Redis cases skipped");
    snprintf(rs.dir, sizeof rs.dir, "/tmp/pulse-kvredis-XXXXXX");
    cr_assert_not_null(mkdtemp(rs.dir));
    rs.port = free_port();
    redis_start();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", rs.port);
    kv_options o = {.service = "restart", .connect_timeout_ms = 500, .command_timeout_ms = 500, .pool_max = 4};
    pl_error err = {0};
    cr_assert_eq(kv_open(url, &o, &fx.k, &err), 0, "%s", err.msg);
    kv *k = fx.k;
    static inbox b;
    inbox_init(&b);
    kv_sub *s = sub_ok(k, "pulse.conf.restart", &b);
    set_ok(k, "a", "1", 0);
    pub(k, "pulse.conf.restart", "before");
    cr_assert(wait_count(&b, 1, 5000));

    redis_stop();
    /* Down: clear errors, quickly. */
    for (int i = 0; i < 5; i++) {
        int64_t t0 = now_ms();
        char *v = NULL;
        size_t n;
        int rc = kv_get(k, "a", &v, &n, &err);
        int64_t took = now_ms() - t0;
        cr_assert(rc == PL_EUNAVAILABLE || rc == PL_ETIMEOUT, "get while down: %d %s", rc, err.msg);
        cr_assert(took < 1500, "a failing call took %" PRId64 " ms", took);
    }
    int64_t v;
    cr_assert(kv_incr(k, "c", 1, 0, &v, &err) < 0);
    kv_zop op = {.key = "z", .member = "m", .score = 1};
    cr_assert(kv_zadd_batch(k, &op, 1, &err) < 0);

    /* Back: the next calls work, without reopening anything. */
    redis_start();
    int64_t t0 = now_ms();
    int rc;
    while ((rc = kv_set(k, "a", "2", 1, 0, &err)) != 0 && now_ms() - t0 < 5000)
        sleep_ms(50);
    cr_assert_eq(rc, 0, "no recovery within 5 s: %s", err.msg);
    expect_val(k, "a", "2");
    cr_assert_eq(kv_incr(k, "c", 1, 1000, &v, &err), 0, "%s", err.msg); /* MULTI/EXEC on a new connection */
    cr_assert_eq(v, 1);
    cr_assert_eq(kv_zadd_batch(k, &op, 1, &err), 0, "%s", err.msg);

    /* The subscription comes back by itself. */
    int64_t end = now_ms() + 10000;
    while (inbox_count(&b) < 2 && now_ms() < end) {
        pub(k, "pulse.conf.restart", "after");
        sleep_ms(100);
    }
    cr_assert(inbox_count(&b) >= 2, "no message after the restart");
    kv_unsubscribe(s);
}
