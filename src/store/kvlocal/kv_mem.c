/* kv_mem.c - the embedded kv engine's in-memory structures (kvlocal.h). */
#include "store/kvlocal/kvlocal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* ---- hash -------------------------------------------------------------------------- */

/* Keys come from user input (ids, emails): a per-process random seed keeps
 * anyone from choosing keys that all land in one probe run. */
static uint64_t hash_seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    if (getrandom(&hash_seed, sizeof hash_seed, 0) != (ssize_t)sizeof hash_seed)
        hash_seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

uint64_t kvl_hash(const void *p, size_t n)
{
    pthread_once(&seed_once, seed_init);
    const unsigned char *s = p;
    uint64_t h = hash_seed ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ mix64(w)) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ mix64(w ^ 0xa5)) * 0x9E3779B97F4A7C15ull;
    return mix64(h);
}

/* ---- hash table -------------------------------------------------------------------- */

static void place(hent **slot, size_t cap, hent *e)
{
    size_t m = cap - 1;
    size_t i = e->h & m;
    while (slot[i])
        i = (i + 1) & m;
    slot[i] = e;
}

static void resize(htab *t, size_t cap)
{
    hent **ns = calloc(cap, sizeof *ns);
    if (!ns)
        abort();
    for (size_t i = 0; i < t->cap; i++)
        if (t->slot[i])
            place(ns, cap, t->slot[i]);
    free(t->slot);
    t->slot = ns;
    t->cap = cap;
}

hent *htab_find(const htab *t, const char *k, size_t n, uint64_t h)
{
    if (!t->cap)
        return NULL;
    size_t m = t->cap - 1;
    for (size_t i = h & m;; i = (i + 1) & m) {
        hent *e = t->slot[i];
        if (!e)
            return NULL;
        if (e->h == h && e->n == n && memcmp(e->k, k, n) == 0)
            return e;
    }
}

void htab_put(htab *t, hent *e)
{
    if ((t->n + 1) * 4 > t->cap * 3)
        resize(t, t->cap ? t->cap * 2 : 8);
    place(t->slot, t->cap, e);
    t->n++;
}

void htab_del(htab *t, hent *e)
{
    size_t m = t->cap - 1;
    size_t i = e->h & m;
    while (t->slot[i] != e)
        i = (i + 1) & m;
    /* Shift back every entry of the run that would no longer be reachable
     * from its home slot across the hole. */
    for (size_t j = (i + 1) & m; t->slot[j]; j = (j + 1) & m) {
        size_t home = t->slot[j]->h & m;
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slot[i] = t->slot[j];
            i = j;
        }
    }
    t->slot[i] = NULL;
    t->n--;
    if (t->n == 0) {
        free(t->slot);
        t->slot = NULL;
        t->cap = 0;
    } else if (t->cap > 64 && t->n * 8 < t->cap) {
        resize(t, t->cap / 2);
    }
}

void htab_free(htab *t)
{
    free(t->slot);
    t->slot = NULL;
    t->cap = t->n = 0;
}

/* ---- sorted set ---------------------------------------------------------------------- */

zent *zent_new(const char *m, size_t n, double score)
{
    zent *e = malloc(sizeof *e + n + 1);
    if (!e)
        abort();
    memcpy(e->m, m, n);
    e->m[n] = '\0';
    e->he.k = e->m;
    e->he.n = n;
    e->he.h = kvl_hash(m, n);
    e->score = score;
    return e;
}

zset *zset_new(void)
{
    zset *z = calloc(1, sizeof *z);
    if (!z)
        abort();
    return z;
}

void zset_free(zset *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->n; i++)
        free(z->v[i]);
    free(z->v);
    htab_free(&z->idx);
    free(z);
}

zent *zset_find(const zset *z, const char *m, size_t n)
{
    return (zent *)htab_find(&z->idx, m, n, kvl_hash(m, n));
}

/* (score, member) against an entry: <0, 0, >0. Members compare as bytes, the
 * shorter first on a common prefix (Redis's order for equal scores). */
static int zcmp(double s, const char *m, size_t n, const zent *e)
{
    if (s < e->score)
        return -1;
    if (s > e->score)
        return 1;
    size_t k = n < e->he.n ? n : e->he.n;
    int c = memcmp(m, e->m, k);
    if (c)
        return c;
    return (n > e->he.n) - (n < e->he.n);
}

/* First index whose entry is >= (s, m). */
static size_t zpos(const zset *z, double s, const char *m, size_t n)
{
    size_t lo = 0, hi = z->n;
    /* Feeds grow at the top: check the end first and skip the search. */
    if (hi && zcmp(s, m, n, z->v[hi - 1]) > 0)
        return hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (zcmp(s, m, n, z->v[mid]) > 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void zset_insert(zset *z, zent *e)
{
    size_t pos = zpos(z, e->score, e->m, e->he.n);
    if (z->n == z->cap) {
        z->cap = z->cap ? z->cap * 2 : 4;
        z->v = xrealloc(z->v, z->cap * sizeof *z->v);
    }
    memmove(z->v + pos + 1, z->v + pos, (z->n - pos) * sizeof *z->v);
    z->v[pos] = e;
    z->n++;
    htab_put(&z->idx, &e->he);
}

static void shrink(zset *z)
{
    if (z->cap > 64 && z->n * 4 < z->cap) {
        z->cap /= 2;
        z->v = xrealloc(z->v, z->cap * sizeof *z->v);
    }
}

void zset_remove(zset *z, zent *e)
{
    size_t pos = zpos(z, e->score, e->m, e->he.n);
    memmove(z->v + pos, z->v + pos + 1, (z->n - pos - 1) * sizeof *z->v);
    z->n--;
    htab_del(&z->idx, &e->he);
    shrink(z);
}

void zset_rescore(zset *z, zent *e, double score)
{
    zset_remove(z, e);
    e->score = score;
    zset_insert(z, e);
}

size_t zset_lower(const zset *z, double score)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->v[mid]->score < score)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t zset_upper(const zset *z, double score)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->v[mid]->score <= score)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void zset_pop_lowest(zset *z, size_t cnt, void (*fn)(void *ud, zent *e), void *ud)
{
    if (cnt > z->n)
        cnt = z->n;
    for (size_t i = 0; i < cnt; i++) {
        htab_del(&z->idx, &z->v[i]->he);
        fn(ud, z->v[i]);
    }
    memmove(z->v, z->v + cnt, (z->n - cnt) * sizeof *z->v);
    z->n -= cnt;
    shrink(z);
}
