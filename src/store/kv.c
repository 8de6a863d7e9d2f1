/* kv.c - engine registry and the thin wrappers of the kv store kind: they
 * check arguments the same way for every engine and put "<service>:" in
 * front of every key, so engines never see an unprefixed key. */
#include "store/kv.h"
#include "core/engines.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kv {
    const kv_driver *d;
    void *h;
    char *prefix; /* "<service>:" */
    size_t plen;
};

struct kv_sub {
    const kv_driver *d;
    void *h;
};

static engines drivers = ENGINES_INIT;

extern const kv_driver kv_local_driver;
extern const kv_driver kv_redis_driver;

void kv_register(const kv_driver *d) { engines_add(&drivers, d, d->schemes); }

static const kv_driver *driver_for(const char *url)
{
    kv_register(&kv_local_driver);
    kv_register(&kv_redis_driver);
    return *url ? engines_find(&drivers, url) : &kv_local_driver;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

int kv_open(const char *url, const kv_options *o, kv **out, pl_error *err)
{
    if (!url)
        url = "";
    if (!o || !o->service || !*o->service)
        return err_set(err, PL_ECONFIG, "kv", "a kv store needs the name of the service that owns it");
    const kv_driver *d = driver_for(url);
    if (!d)
        return err_set(err, PL_ECONFIG, "kv", "no kv engine serves the URL \"%s\" in this build", url);
    void *h = NULL;
    int rc = d->xOpen(url, o, &h, err);
    if (rc)
        return rc;
    kv *k = xmalloc(sizeof *k);
    k->d = d;
    k->h = h;
    k->plen = strlen(o->service) + 1;
    k->prefix = xmalloc(k->plen + 1);
    snprintf(k->prefix, k->plen + 1, "%s:", o->service);
    *out = k;
    return 0;
}

void kv_close(kv *k)
{
    if (!k)
        return;
    k->d->xClose(k->h);
    free(k->prefix);
    free(k);
}

const char *kv_engine(const kv *k) { return k->d->name; }
int kv_ping(kv *k, pl_error *err) { return k->d->xPing(k->h, err); }

/* ---- key prefixing ------------------------------------------------------------ */

/* The prefixed key, in buf when it fits (the common case: no allocation on the
 * hot path), else malloc'd; release with unkey(). */
typedef struct pkey {
    char *s;
    char buf[192];
} pkey;

static const char *mkkey(const kv *k, const char *key, pkey *p)
{
    size_t n = strlen(key);
    p->s = k->plen + n + 1 <= sizeof p->buf ? p->buf : xmalloc(k->plen + n + 1);
    memcpy(p->s, k->prefix, k->plen);
    memcpy(p->s + k->plen, key, n + 1);
    return p->s;
}

static void unkey(pkey *p)
{
    if (p->s != p->buf)
        free(p->s);
}

#define KV_VALUE_MAX (512u << 20)

#define CHECK_KEY(key) \
    if (!(key))        \
        return err_set(err, PL_EINVAL, "key", "kv: a key is required")

/* ---- strings and counters -------------------------------------------------------- */

static int set_common(kv *k, const char *key, const void *val, size_t len, int64_t ttl_ms, bool nx, pl_error *err)
{
    CHECK_KEY(key);
    if (!val && len)
        return err_set(err, PL_EINVAL, "value", "kv: a value of %zu bytes at NULL", len);
    if (len > KV_VALUE_MAX) /* Redis's own limit (proto-max-bulk-len): the same on every engine */
        return err_set(err, PL_ETOOLARGE, "value", "kv: a value of %zu bytes (at most %u)", len, KV_VALUE_MAX);
    if (ttl_ms < 0)
        return err_set(err, PL_EINVAL, "ttl", "kv: a negative TTL (%lld ms)", (long long)ttl_ms);
    pkey p;
    int rc = k->d->xSet(k->h, mkkey(k, key, &p), val ? val : "", len, ttl_ms, nx, err);
    unkey(&p);
    return rc;
}

int kv_set(kv *k, const char *key, const void *val, size_t len, int64_t ttl_ms, pl_error *err)
{
    int rc = set_common(k, key, val, len, ttl_ms, false, err);
    return rc < 0 ? rc : 0;
}

int kv_set_nx(kv *k, const char *key, const void *val, size_t len, int64_t ttl_ms, pl_error *err)
{
    return set_common(k, key, val, len, ttl_ms, true, err);
}

int kv_get(kv *k, const char *key, char **val, size_t *len, pl_error *err)
{
    CHECK_KEY(key);
    pkey p;
    size_t dummy;
    *val = NULL;
    int rc = k->d->xGet(k->h, mkkey(k, key, &p), val, len ? len : &dummy, err);
    unkey(&p);
    return rc;
}

int kv_del(kv *k, const char *key, pl_error *err)
{
    CHECK_KEY(key);
    pkey p;
    int rc = k->d->xDel(k->h, mkkey(k, key, &p), err);
    unkey(&p);
    return rc;
}

int kv_ttl(kv *k, const char *key, int64_t *ttl_ms, pl_error *err)
{
    CHECK_KEY(key);
    pkey p;
    int64_t dummy;
    int rc = k->d->xTtl(k->h, mkkey(k, key, &p), ttl_ms ? ttl_ms : &dummy, err);
    unkey(&p);
    return rc;
}

int kv_incr(kv *k, const char *key, int64_t by, int64_t ttl_ms, int64_t *value, pl_error *err)
{
    CHECK_KEY(key);
    if (ttl_ms < 0)
        return err_set(err, PL_EINVAL, "ttl", "kv: a negative TTL (%lld ms)", (long long)ttl_ms);
    pkey p;
    int64_t dummy;
    int rc = k->d->xIncr(k->h, mkkey(k, key, &p), by, ttl_ms, value ? value : &dummy, err);
    unkey(&p);
    return rc;
}

/* ---- sorted sets ------------------------------------------------------------------ */

int kv_zadd(kv *k, const char *key, const char *member, double score, pl_error *err)
{
    kv_zop op = {.key = key, .member = member, .score = score};
    return kv_zadd_batch(k, &op, 1, err);
}

int kv_zadd_batch(kv *k, const kv_zop *ops, size_t n, pl_error *err)
{
    if (n == 0)
        return 0;
    if (!ops)
        return err_set(err, PL_EINVAL, "ops", "kv: %zu operations at NULL", n);
    /* One allocation holds the copied ops and all their prefixed keys. */
    size_t bytes = n * sizeof(kv_zop);
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].key || !ops[i].member)
            return err_set(err, PL_EINVAL, ops[i].key ? "member" : "key",
                           "kv: operation %zu of the batch has no %s", i, ops[i].key ? "member" : "key");
        if (isnan(ops[i].score))
            return err_set(err, PL_EINVAL, "score", "kv: operation %zu of the batch has a NaN score", i);
        bytes += k->plen + strlen(ops[i].key) + 1;
    }
    kv_zop *copy = xmalloc(bytes);
    char *keys = (char *)(copy + n);
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(ops[i].key);
        copy[i] = ops[i];
        copy[i].key = keys;
        memcpy(keys, k->prefix, k->plen);
        memcpy(keys + k->plen, ops[i].key, kl + 1);
        keys += k->plen + kl + 1;
    }
    int rc = k->d->xZaddBatch(k->h, copy, n, err);
    free(copy);
    return rc < 0 ? rc : 0;
}

int kv_zrem(kv *k, const char *key, const char *member, pl_error *err)
{
    CHECK_KEY(key);
    if (!member)
        return err_set(err, PL_EINVAL, "member", "kv: a member is required");
    pkey p;
    int rc = k->d->xZrem(k->h, mkkey(k, key, &p), member, err);
    unkey(&p);
    return rc;
}

int kv_zrange_score(kv *k, const char *key, double min, double max, bool desc, size_t offset, size_t limit,
                    kv_zitem **items, size_t *n, pl_error *err)
{
    *items = NULL;
    *n = 0;
    CHECK_KEY(key);
    if (isnan(min) || isnan(max))
        return err_set(err, PL_EINVAL, "score", "kv: a NaN score bound");
    pkey p;
    int rc = k->d->xZrangeScore(k->h, mkkey(k, key, &p), min, max, desc, offset, limit, items, n, err);
    unkey(&p);
    return rc;
}

int kv_zrange_rank(kv *k, const char *key, int64_t start, int64_t stop, bool desc, kv_zitem **items, size_t *n,
                   pl_error *err)
{
    *items = NULL;
    *n = 0;
    CHECK_KEY(key);
    pkey p;
    int rc = k->d->xZrangeRank(k->h, mkkey(k, key, &p), start, stop, desc, items, n, err);
    unkey(&p);
    return rc;
}

int kv_zcard(kv *k, const char *key, int64_t *n, pl_error *err)
{
    CHECK_KEY(key);
    pkey p;
    int64_t dummy;
    int rc = k->d->xZcard(k->h, mkkey(k, key, &p), n ? n : &dummy, err);
    unkey(&p);
    return rc;
}

int kv_zscore(kv *k, const char *key, const char *member, double *score, pl_error *err)
{
    CHECK_KEY(key);
    if (!member)
        return err_set(err, PL_EINVAL, "member", "kv: a member is required");
    pkey p;
    double dummy;
    int rc = k->d->xZscore(k->h, mkkey(k, key, &p), member, score ? score : &dummy, err);
    unkey(&p);
    return rc;
}

int kv_ztrim(kv *k, const char *key, size_t keep, pl_error *err)
{
    CHECK_KEY(key);
    pkey p;
    int rc = k->d->xZtrim(k->h, mkkey(k, key, &p), keep, err);
    unkey(&p);
    return rc < 0 ? rc : 0;
}

void kv_zitems_free(kv_zitem *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        free(items[i].member);
    free(items);
}

/* ---- publish / subscribe ----------------------------------------------------------- */

int kv_publish(kv *k, const char *channel, const void *msg, size_t len, pl_error *err)
{
    if (!channel || !*channel)
        return err_set(err, PL_EINVAL, "channel", "kv: a channel is required");
    if (!msg && len)
        return err_set(err, PL_EINVAL, "message", "kv: a message of %zu bytes at NULL", len);
    if (len > KV_VALUE_MAX)
        return err_set(err, PL_ETOOLARGE, "message", "kv: a message of %zu bytes (at most %u)", len, KV_VALUE_MAX);
    return k->d->xPublish(k->h, channel, msg ? msg : "", len, err);
}

int kv_subscribe(kv *k, const char *channel, kv_message_fn fn, void *ud, kv_sub **out, pl_error *err)
{
    if (!channel || !*channel)
        return err_set(err, PL_EINVAL, "channel", "kv: a channel is required");
    if (!fn)
        return err_set(err, PL_EINVAL, "callback", "kv: a subscription needs a callback");
    void *h = NULL;
    int rc = k->d->xSubscribe(k->h, channel, fn, ud, &h, err);
    if (rc)
        return rc;
    kv_sub *s = xmalloc(sizeof *s);
    s->d = k->d;
    s->h = h;
    *out = s;
    return 0;
}

void kv_unsubscribe(kv_sub *s)
{
    if (!s)
        return;
    s->d->xUnsubscribe(s->h);
    free(s);
}
