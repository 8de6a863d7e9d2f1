/* store_cache.c - unit tests of the layered cache (src/store/cache.c) over the
 * embedded kv engine as L2. */
#include "store/cache.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static kv *l2;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/pulse-cache-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    kv_options o = {.data_dir = dir, .service = "unit"};
    pl_error err = {0};
    cr_assert_eq(kv_open("", &o, &l2, &err), 0, "%s", err.msg);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    kv_close(l2);
    l2 = NULL;
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(cache, .init = setup, .fini = teardown);

/* The owner: counts loads, answers "v:<key>:<version>", knows "missing". */
typedef struct owner {
    int loads;
    int version;
    cache *invalidate_during_load; /* simulates a write racing the load */
} owner;

static int load(void *ud, const char *key, char **val, size_t *len, pl_error *err)
{
    (void)err;
    owner *o = ud;
    o->loads++;
    if (strcmp(key, "missing") == 0)
        return 0;
    if (strcmp(key, "broken") == 0)
        return PL_EUNAVAILABLE;
    char buf[128];
    snprintf(buf, sizeof buf, "v:%s:%d", key, o->version);
    if (o->invalidate_during_load)
        cache_invalidate(o->invalidate_during_load, key);
    *val = strdup(buf);
    *len = strlen(buf);
    return 1;
}

static char *get(cache *c, owner *o, const char *key, int want_rc)
{
    char *v = NULL;
    size_t len = 0;
    pl_error err = {0};
    int rc = cache_get(c, key, load, o, &v, &len, &err);
    cr_assert_eq(rc, want_rc, "cache_get(%s) = %d: %s", key, rc, err.msg);
    if (rc == 1)
        cr_assert_eq(strlen(v), len);
    return v;
}

Test(cache, second_read_is_an_l1_hit_and_invalidation_reloads)
{
    cache *c;
    pl_error err = {0};
    cr_assert_eq(cache_create("t1", l2, 1 << 20, 60000, &c, &err), 0, "%s", err.msg);
    owner o = {0};
    char *v = get(c, &o, "a", 1);
    cr_assert_str_eq(v, "v:a:0");
    free(v);
    v = get(c, &o, "a", 1);
    cr_assert_str_eq(v, "v:a:0");
    free(v);
    cr_assert_eq(o.loads, 1, "the second read must not reach the owner");

    o.version = 1;
    cache_invalidate(c, "a");
    v = get(c, &o, "a", 1);
    cr_assert_str_eq(v, "v:a:1", "an invalidated key must be reloaded");
    free(v);
    cr_assert_eq(o.loads, 2);

    cache_stats st;
    cache_get_stats(c, &st);
    cr_assert_eq(st.l1_hits, 1);
    cr_assert_eq(st.misses, 2);
    cr_assert_eq(st.invalidations, 1);
    cache_destroy(c);
    cache_destroy(NULL);
}

Test(cache, not_found_and_errors_are_not_cached)
{
    cache *c;
    cr_assert_eq(cache_create("t2", l2, 1 << 20, 60000, &c, NULL), 0);
    owner o = {0};
    get(c, &o, "missing", 0);
    get(c, &o, "missing", 0);
    cr_assert_eq(o.loads, 2);
    get(c, &o, "broken", PL_EUNAVAILABLE);
    cr_assert_eq(o.loads, 3);
    cache_destroy(c);
}

Test(cache, a_value_loaded_across_an_invalidation_is_not_kept)
{
    cache *c;
    cr_assert_eq(cache_create("t3", l2, 1 << 20, 60000, &c, NULL), 0);
    owner o = {.invalidate_during_load = c};
    free(get(c, &o, "k", 1));
    o.invalidate_during_load = NULL;
    free(get(c, &o, "k", 1));
    cr_assert_eq(o.loads, 2, "the racing load must not have been cached");
    free(get(c, &o, "k", 1));
    cr_assert_eq(o.loads, 2, "a clean load is cached");
    cache_destroy(c);
}

Test(cache, l2_serves_another_process_and_invalidation_reaches_its_l1)
{
    /* two caches of one name over one kv stand for two processes sharing Redis */
    cache *a, *b;
    cr_assert_eq(cache_create("shared", l2, 1 << 20, 60000, &a, NULL), 0);
    cr_assert_eq(cache_create("shared", l2, 1 << 20, 60000, &b, NULL), 0);
    owner oa = {0}, ob = {0};
    free(get(a, &oa, "u1", 1));
    char *v = get(b, &ob, "u1", 1);
    cr_assert_str_eq(v, "v:u1:0");
    free(v);
    cr_assert_eq(ob.loads, 0, "b must be served from L2");
    cache_stats st;
    cache_get_stats(b, &st);
    cr_assert_eq(st.l2_hits, 1);

    oa.version = ob.version = 7;
    cache_invalidate(a, "u1");
    /* the announcement reaches b's L1 through the kv channel (asynchronously) */
    for (int i = 0; i < 200; i++) {
        v = get(b, &ob, "u1", 1);
        bool fresh = strcmp(v, "v:u1:7") == 0;
        free(v);
        if (fresh)
            break;
        usleep(10000);
    }
    cr_assert_geq(ob.loads, 1, "b kept serving the old value after the invalidation");
    cache_destroy(a);
    cache_destroy(b);
}

Test(cache, l1_is_bounded_in_bytes_and_evicts_the_least_recent)
{
    cache *c;
    cr_assert_eq(cache_create("t5", NULL, 2048, 60000, &c, NULL), 0); /* 200 entries of 18 bytes do not fit */
    owner o = {0};
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "key-%03d", i);
        free(get(c, &o, key, 1));
    }
    cache_stats st;
    cache_get_stats(c, &st);
    cr_assert_leq(st.l1_bytes, 2048);
    cr_assert_lt(st.l1_entries, 200);
    int before = o.loads;
    free(get(c, &o, "key-199", 1)); /* the most recent one stayed */
    cr_assert_eq(o.loads, before);
    free(get(c, &o, "key-000", 1)); /* the oldest one went */
    cr_assert_eq(o.loads, before + 1);
    cache_destroy(c);
}

Test(cache, entries_expire_after_the_ttl)
{
    cache *c;
    cr_assert_eq(cache_create("t6", NULL, 1 << 20, 1, &c, NULL), 0); /* 1 ms */
    owner o = {0};
    free(get(c, &o, "x", 1));
    usleep(20000);
    free(get(c, &o, "x", 1));
    cr_assert_eq(o.loads, 2, "an expired entry must be reloaded");
    cache_destroy(c);
}
