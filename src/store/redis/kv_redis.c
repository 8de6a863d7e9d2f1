/*
 * kv_redis.c - the kv store kind on Redis (hiredis): "redis://[user:pass@]host[:port][/db]".
 *
 * Commands go over a pool of blocking connections (at most pool_max; a caller
 * waits up to the command timeout for a free one). Each has the connect
 * timeout for connecting and the command timeout (redisSetTimeout: a socket
 * send/receive timeout) for every reply, so no call hangs on a dead server.
 * A connection that fails is closed, never reused: its protocol state is
 * unknown. When the failure says the server went away (EOF, reset), every idle
 * connection goes too, since they were to the same dead server; the next call
 * connects anew, which is how Pulse recovers by itself after a Redis restart.
 * A connection idle for a while is checked (poll, no round trip) before use,
 * so the first command after a restart usually does not even fail.
 *
 * kv_zadd_batch is one pipeline: every ZADD (and its ZREMRANGEBYRANK trim) is
 * appended, then all replies are read: one round trip, as the raw benchmark
 * does. Not MULTI/EXEC: kv.h promises one round trip, and Redis's MULTI does
 * not roll back a failing command either.
 *
 * kv_incr is MULTI/EXEC of SET NX PX and INCRBY so that a key it creates gets
 * its TTL in the same atomic step (a crash between INCRBY and PEXPIRE would
 * otherwise leave a rate-limit counter that never expires).
 *
 * Pub/sub: one dedicated connection and thread per store, started at the first
 * subscription. The thread owns that connection; callers ask it to
 * (un)subscribe through a queue and an eventfd, and kv_subscribe returns once
 * Redis has confirmed the subscription (so every later publish reaches it).
 * After a disconnect the thread reconnects with backoff and subscribes again
 * to everything (messages published while it was away are lost: Redis pub/sub
 * is at most once).
 */
#include "store/kv.h"
#include "core/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LIVENESS_CHECK_MS 1000 /* idle longer than this: poll the socket before use */

typedef struct rconn {
    redisContext *c;
    int64_t used_ms;
    struct rconn *next;
} rconn;

typedef struct rps rps;

typedef struct rds {
    char host[256];
    int port, db;
    char user[128], pass[256];
    struct timeval connect_tv, cmd_tv;
    int pool_max, cmd_ms, idle_ms;

    pthread_mutex_t mu;
    pthread_cond_t freed; /* CLOCK_MONOTONIC */
    rconn *idle;          /* most recently used first */
    int nopen;
    int64_t reaped_ms;

    rps *ps;              /* pub/sub, started at the first subscription */
} rds;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval tv_ms(int ms) { return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000}; }

/* ---- URL --------------------------------------------------------------------------------- */

static int parse_url(const char *url, rds *r, pl_error *err)
{
    const char *p = url + strlen("redis://");
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        snprintf(r->user, sizeof r->user, "%.*s", (int)(uend - p), p);
        if (colon)
            snprintf(r->pass, sizeof r->pass, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    const char *hend;
    if (*p == '[') { /* [IPv6] */
        hend = memchr(p, ']', (size_t)(end - p));
        if (!hend)
            return err_set(err, PL_ECONFIG, "kv", "kv: redis URL %s: unterminated [address]", url);
        snprintf(r->host, sizeof r->host, "%.*s", (int)(hend - p - 1), p + 1);
        hend++;
    } else {
        hend = p + strcspn(p, ":/?#");
        snprintf(r->host, sizeof r->host, "%.*s", (int)(hend - p), p);
    }
    if (!r->host[0])
        snprintf(r->host, sizeof r->host, "127.0.0.1");
    r->port = 6379;
    if (*hend == ':') {
        char *e;
        long port = strtol(hend + 1, &e, 10);
        if (e == hend + 1 || port < 1 || port > 65535 || (e != end && *e != '/'))
            return err_set(err, PL_ECONFIG, "kv", "kv: redis URL %s: bad port", url);
        r->port = (int)port;
    }
    r->db = 0;
    if (*end == '/' && end[1] && end[1] != '?') {
        char *e;
        long db = strtol(end + 1, &e, 10);
        if (e == end + 1 || db < 0 || db > 1000000 || (*e && *e != '?'))
            return err_set(err, PL_ECONFIG, "kv", "kv: redis URL %s: the database must be a number", url);
        r->db = (int)db;
    }
    return 0;
}

/* ---- replies and errors -------------------------------------------------------------------- */

static int reply_error(const redisReply *rep, pl_error *err)
{
    const char *m = rep->str ? rep->str : "";
    int code = PL_EINTERNAL;
    if (strstr(m, "WRONGTYPE") || strstr(m, "not an integer") || strstr(m, "overflow") ||
        strstr(m, "not a valid float"))
        code = PL_EINVAL;
    else if (!strncmp(m, "LOADING", 7) || !strncmp(m, "BUSY", 4) || !strncmp(m, "MASTERDOWN", 10) ||
             !strncmp(m, "READONLY", 8) || !strncmp(m, "OOM", 3) || !strncmp(m, "TRYAGAIN", 8) ||
             !strncmp(m, "CLUSTERDOWN", 11) || !strncmp(m, "NOAUTH", 6))
        code = PL_EUNAVAILABLE;
    return err_set(err, code, NULL, "kv: redis: %.200s", m);
}

/* ---- the pool ---------------------------------------------------------------------------------- */

static int simple(redisContext *c, int argc, const char **argv, pl_error *err)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    if (!rep)
        return err_set(err, PL_EUNAVAILABLE, NULL, "kv: redis %s: %s", argv[0], c->errstr);
    int rc = rep->type == REDIS_REPLY_ERROR ? reply_error(rep, err) : 0;
    if (rc && !strncmp(argv[0], "AUTH", 4))
        rc = err_set(err, PL_ECONFIG, "kv", "kv: redis refused the credentials of the URL: %.150s", rep->str);
    freeReplyObject(rep);
    return rc;
}

static int dial(rds *r, redisContext **out, pl_error *err)
{
    redisContext *c = redisConnectWithTimeout(r->host, r->port, r->connect_tv);
    if (!c)
        abort();
    if (c->err) {
        int rc = err_set(err, PL_EUNAVAILABLE, NULL, "kv: redis %s:%d: %s", r->host, r->port, c->errstr);
        redisFree(c);
        return rc;
    }
    redisSetTimeout(c, r->cmd_tv);
    redisEnableKeepAlive(c);
    int rc = 0;
    if (r->pass[0]) {
        const char *a[] = {"AUTH", r->user, r->pass};
        rc = r->user[0] ? simple(c, 3, a, err) : simple(c, 2, (const char *[]){"AUTH", r->pass}, err);
    }
    if (!rc && r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        rc = simple(c, 2, (const char *[]){"SELECT", db}, err);
    }
    if (rc) {
        redisFree(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Whether an idle connection still looks usable: nothing may be waiting to be
 * read on it (a closed peer reads as EOF, which poll reports as readable). */
static bool still_open(redisContext *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    return poll(&pfd, 1, 0) == 0;
}

static void close_conn(rds *r, rconn *c) /* r->mu held */
{
    redisFree(c->c);
    free(c);
    r->nopen--;
    pthread_cond_signal(&r->freed);
}

static void reap(rds *r, int64_t now) /* r->mu held */
{
    if (now - r->reaped_ms < 1000)
        return;
    r->reaped_ms = now;
    for (rconn **p = &r->idle; *p;) {
        if (now - (*p)->used_ms >= r->idle_ms) {
            rconn *c = *p;
            *p = c->next;
            close_conn(r, c);
        } else {
            p = &(*p)->next;
        }
    }
}

static int acquire(rds *r, rconn **out, pl_error *err)
{
    int64_t now = mono_ms(), deadline = now + r->cmd_ms;
    pthread_mutex_lock(&r->mu);
    reap(r, now);
    for (;;) {
        while (r->idle) {
            rconn *c = r->idle;
            r->idle = c->next;
            if (now - c->used_ms >= LIVENESS_CHECK_MS && !still_open(c->c)) {
                close_conn(r, c);
                continue;
            }
            pthread_mutex_unlock(&r->mu);
            *out = c;
            return 0;
        }
        if (r->nopen < r->pool_max) {
            r->nopen++;
            pthread_mutex_unlock(&r->mu);
            rconn *c = xmalloc(sizeof *c);
            int rc = dial(r, &c->c, err);
            if (rc) {
                free(c);
                pthread_mutex_lock(&r->mu);
                r->nopen--;
                pthread_cond_signal(&r->freed);
                pthread_mutex_unlock(&r->mu);
                return rc;
            }
            *out = c;
            return 0;
        }
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        if (pthread_cond_timedwait(&r->freed, &r->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&r->mu);
            return err_set(err, PL_ETIMEOUT, NULL, "kv: all %d redis connections stayed busy for %d ms",
                           r->pool_max, r->cmd_ms);
        }
        now = mono_ms();
    }
}

static void release(rds *r, rconn *c)
{
    pthread_mutex_lock(&r->mu);
    c->used_ms = mono_ms();
    c->next = r->idle;
    r->idle = c;
    pthread_cond_signal(&r->freed);
    pthread_mutex_unlock(&r->mu);
}

/* A command failed on the wire: the connection is dropped. When the server
 * went away, the idle ones go as well (same server, same fate). */
static int broken(rds *r, rconn *c, pl_error *err)
{
    /* hiredis reports a receive timeout as an I/O error with strerror(EAGAIN). */
    int e = errno;
    bool timeout = c->c->err == REDIS_ERR_IO &&
                   (e == EAGAIN || e == EWOULDBLOCK || strcmp(c->c->errstr, strerror(EAGAIN)) == 0);
    int rc = err_set(err, timeout ? PL_ETIMEOUT : PL_EUNAVAILABLE, NULL, "kv: redis %s:%d: %s", r->host, r->port,
                     timeout ? "no reply within the command timeout" : c->c->errstr);
    pthread_mutex_lock(&r->mu);
    close_conn(r, c);
    if (!timeout)
        while (r->idle) {
            rconn *i = r->idle;
            r->idle = i->next;
            close_conn(r, i);
        }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Runs one command; *out gets the reply (never an error reply) for the caller
 * to free. */
static int run(rds *r, int argc, const char **argv, const size_t *lens, redisReply **out, pl_error *err)
{
    rconn *c;
    int rc = acquire(r, &c, err);
    if (rc)
        return rc;
    redisReply *rep = redisCommandArgv(c->c, argc, argv, lens);
    if (!rep)
        return broken(r, c, err);
    release(r, c);
    if (rep->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rep, err);
        freeReplyObject(rep);
        return rc;
    }
    *out = rep;
    return 0;
}

static int unexpected(redisReply *rep, const char *cmd, pl_error *err)
{
    int rc = err_set(err, PL_EINTERNAL, NULL, "kv: redis %s answered with reply type %d", cmd, rep->type);
    freeReplyObject(rep);
    return rc;
}

/* Runs a command whose reply is an integer. */
static int run_int(rds *r, int argc, const char **argv, const size_t *lens, long long *v, pl_error *err)
{
    redisReply *rep;
    int rc = run(r, argc, argv, lens, &rep, err);
    if (rc)
        return rc;
    if (rep->type != REDIS_REPLY_INTEGER)
        return unexpected(rep, argv[0], err);
    *v = rep->integer;
    freeReplyObject(rep);
    return 0;
}

/* ---- open, close, ping ----------------------------------------------------------------------- */

static void ps_stop(rds *r);

static int x_open(const char *url, const kv_options *o, void **out, pl_error *err)
{
    rds *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    int rc = parse_url(url, r, err);
    if (rc) {
        free(r);
        return rc;
    }
    r->pool_max = o->pool_max > 0 ? o->pool_max : 20;
    int connect_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
    r->cmd_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : 2000;
    r->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 30000;
    r->connect_tv = tv_ms(connect_ms);
    r->cmd_tv = tv_ms(r->cmd_ms);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->freed, &ca);
    pthread_condattr_destroy(&ca);
    /* Fail at open (a wrong URL, port or password), not at the first use. */
    rconn *c;
    if ((rc = acquire(r, &c, err))) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->freed);
        free(r);
        return rc;
    }
    release(r, c);
    *out = r;
    return 0;
}

static void x_close(void *h)
{
    rds *r = h;
    ps_stop(r);
    pthread_mutex_lock(&r->mu);
    while (r->idle) {
        rconn *c = r->idle;
        r->idle = c->next;
        close_conn(r, c);
    }
    if (r->nopen)
        log_warn("kv: redis store closed with %d connections in use", r->nopen);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->freed);
    free(r);
}

static int x_ping(void *h, pl_error *err)
{
    redisReply *rep;
    int rc = run(h, 1, (const char *[]){"PING"}, NULL, &rep, err);
    if (!rc)
        freeReplyObject(rep);
    return rc;
}

/* ---- strings and counters ------------------------------------------------------------------ */

static int x_set(void *h, const char *key, const void *val, size_t len, int64_t ttl_ms, bool nx, pl_error *err)
{
    char px[24];
    const char *argv[6] = {"SET", key, val};
    size_t lens[6] = {3, strlen(key), len};
    int argc = 3;
    if (ttl_ms > 0) {
        snprintf(px, sizeof px, "%" PRId64, ttl_ms);
        argv[argc] = "PX";
        lens[argc++] = 2;
        argv[argc] = px;
        lens[argc++] = strlen(px);
    }
    if (nx) {
        argv[argc] = "NX";
        lens[argc++] = 2;
    }
    redisReply *rep;
    int rc = run(h, argc, argv, lens, &rep, err);
    if (rc)
        return rc;
    rc = rep->type == REDIS_REPLY_STATUS ? 1 : 0; /* nil: NX found the key */
    freeReplyObject(rep);
    return rc;
}

static int x_get(void *h, const char *key, char **val, size_t *len, pl_error *err)
{
    redisReply *rep;
    int rc = run(h, 2, (const char *[]){"GET", key}, NULL, &rep, err);
    if (rc)
        return rc;
    if (rep->type == REDIS_REPLY_NIL) {
        freeReplyObject(rep);
        return 0;
    }
    if (rep->type != REDIS_REPLY_STRING)
        return unexpected(rep, "GET", err);
    *val = xmalloc(rep->len + 1);
    memcpy(*val, rep->str, rep->len);
    (*val)[rep->len] = '\0';
    *len = rep->len;
    freeReplyObject(rep);
    return 1;
}

static int x_del(void *h, const char *key, pl_error *err)
{
    long long v = 0;
    int rc = run_int(h, 2, (const char *[]){"DEL", key}, NULL, &v, err);
    return rc ? rc : v > 0;
}

static int x_ttl(void *h, const char *key, int64_t *ttl_ms, pl_error *err)
{
    long long v = 0;
    int rc = run_int(h, 2, (const char *[]){"PTTL", key}, NULL, &v, err);
    if (rc)
        return rc;
    if (v == -2)
        return 0;
    *ttl_ms = v < 0 ? -1 : v;
    return 1;
}

/* MULTI; SET key 0 PX ttl NX; INCRBY key by; EXEC, pipelined: one round trip,
 * atomic, and exact over all of int64 (a Lua script would pass the value
 * through a Lua number, a double). A key the SET creates gets the TTL; an
 * existing one keeps its own. */
static int x_incr(void *h, const char *key, int64_t by, int64_t ttl_ms, int64_t *value, pl_error *err)
{
    rds *r = h;
    char sby[24], sttl[24];
    snprintf(sby, sizeof sby, "%" PRId64, by);
    snprintf(sttl, sizeof sttl, "%" PRId64, ttl_ms);
    if (ttl_ms == 0) { /* no TTL to give: INCRBY alone is atomic */
        long long v = 0;
        int rc = run_int(r, 3, (const char *[]){"INCRBY", key, sby}, NULL, &v, err);
        if (!rc)
            *value = v;
        return rc;
    }
    rconn *c;
    int rc = acquire(r, &c, err);
    if (rc)
        return rc;
    int n = 0;
    redisAppendCommandArgv(c->c, 1, (const char *[]){"MULTI"}, NULL), n++;
    redisAppendCommandArgv(c->c, 6, (const char *[]){"SET", key, "0", "PX", sttl, "NX"}, NULL), n++;
    redisAppendCommandArgv(c->c, 3, (const char *[]){"INCRBY", key, sby}, NULL), n++;
    redisAppendCommandArgv(c->c, 1, (const char *[]){"EXEC"}, NULL), n++;
    redisReply *rep = NULL;
    for (int i = 0; i < n; i++) {
        if (rep)
            freeReplyObject(rep);
        rep = NULL;
        if (redisGetReply(c->c, (void **)&rep) != REDIS_OK)
            return broken(r, c, err);
    }
    release(r, c);
    /* EXEC's reply: [SET's, INCRBY's]. */
    if (rep->type == REDIS_REPLY_ERROR) { /* EXECABORT */
        rc = reply_error(rep, err);
    } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
        return unexpected(rep, "EXEC", err);
    } else {
        const redisReply *v = rep->element[rep->elements - 1];
        if (v->type == REDIS_REPLY_ERROR)
            rc = reply_error(v, err);
        else if (v->type != REDIS_REPLY_INTEGER)
            return unexpected(rep, "INCRBY", err);
        else
            *value = v->integer;
    }
    freeReplyObject(rep);
    return rc;
}

/* ---- sorted sets ---------------------------------------------------------------------------- */

static void fmt_score(char *buf, size_t n, double s)
{
    if (isinf(s))
        snprintf(buf, n, "%s", s > 0 ? "+inf" : "-inf");
    else
        snprintf(buf, n, "%.17g", s);
}

static int x_zadd_batch(void *h, const kv_zop *ops, size_t n, pl_error *err)
{
    rds *r = h;
    rconn *c;
    int rc = acquire(r, &c, err);
    if (rc)
        return rc;
    size_t nreplies = 0;
    for (size_t i = 0; i < n; i++) {
        char score[32];
        fmt_score(score, sizeof score, ops[i].score);
        redisAppendCommandArgv(c->c, 4, (const char *[]){"ZADD", ops[i].key, score, ops[i].member}, NULL);
        nreplies++;
        if (ops[i].trim_to > 0) {
            char stop[32];
            snprintf(stop, sizeof stop, "%lld", -(long long)ops[i].trim_to - 1);
            redisAppendCommandArgv(c->c, 4, (const char *[]){"ZREMRANGEBYRANK", ops[i].key, "0", stop}, NULL);
            nreplies++;
        }
    }
    /* Every reply is read even after an error reply, or the connection would
     * be out of step; as in the embedded engine, a wrong-type op fails alone. */
    int first = 0;
    for (size_t i = 0; i < nreplies; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(c->c, (void **)&rep) != REDIS_OK)
            return broken(r, c, err);
        if (rep->type == REDIS_REPLY_ERROR && !first)
            first = reply_error(rep, err);
        freeReplyObject(rep);
    }
    release(r, c);
    return first;
}

static int x_zrem(void *h, const char *key, const char *member, pl_error *err)
{
    long long v = 0;
    int rc = run_int(h, 3, (const char *[]){"ZREM", key, member}, NULL, &v, err);
    return rc ? rc : v > 0;
}

/* Member/score pairs of a WITHSCORES reply. */
static int items_of(redisReply *rep, kv_zitem **items, size_t *n, pl_error *err)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2)
        return unexpected(rep, "ZRANGE", err);
    size_t cnt = rep->elements / 2;
    if (cnt) {
        kv_zitem *it = xmalloc(cnt * sizeof *it);
        for (size_t i = 0; i < cnt; i++) {
            const redisReply *m = rep->element[2 * i], *s = rep->element[2 * i + 1];
            it[i].member = xmalloc(m->len + 1);
            memcpy(it[i].member, m->str, m->len);
            it[i].member[m->len] = '\0';
            it[i].score = strtod(s->str, NULL);
        }
        *items = it;
        *n = cnt;
    }
    freeReplyObject(rep);
    return 0;
}

static int x_zrange_score(void *h, const char *key, double min, double max, bool desc, size_t offset, size_t limit,
                          kv_zitem **items, size_t *n, pl_error *err)
{
    if (limit == 0 || min > max)
        return 0;
    char smin[32], smax[32], soff[24], slim[24];
    fmt_score(smin, sizeof smin, min);
    fmt_score(smax, sizeof smax, max);
    snprintf(soff, sizeof soff, "%zu", offset > (size_t)LLONG_MAX ? (size_t)LLONG_MAX : offset);
    if (limit > (size_t)LLONG_MAX)
        snprintf(slim, sizeof slim, "-1");
    else
        snprintf(slim, sizeof slim, "%zu", limit);
    const char *argv[] = {desc ? "ZREVRANGEBYSCORE" : "ZRANGEBYSCORE", key, desc ? smax : smin, desc ? smin : smax,
                          "WITHSCORES", "LIMIT", soff, slim};
    redisReply *rep;
    int rc = run(h, 8, argv, NULL, &rep, err);
    return rc ? rc : items_of(rep, items, n, err);
}

static int x_zrange_rank(void *h, const char *key, int64_t start, int64_t stop, bool desc, kv_zitem **items,
                         size_t *n, pl_error *err)
{
    char s1[24], s2[24];
    snprintf(s1, sizeof s1, "%" PRId64, start);
    snprintf(s2, sizeof s2, "%" PRId64, stop);
    redisReply *rep;
    int rc = run(h, 5, (const char *[]){desc ? "ZREVRANGE" : "ZRANGE", key, s1, s2, "WITHSCORES"}, NULL, &rep, err);
    return rc ? rc : items_of(rep, items, n, err);
}

static int x_zcard(void *h, const char *key, int64_t *n, pl_error *err)
{
    long long v = 0;
    int rc = run_int(h, 2, (const char *[]){"ZCARD", key}, NULL, &v, err);
    if (!rc)
        *n = v;
    return rc;
}

static int x_zscore(void *h, const char *key, const char *member, double *score, pl_error *err)
{
    redisReply *rep;
    int rc = run(h, 3, (const char *[]){"ZSCORE", key, member}, NULL, &rep, err);
    if (rc)
        return rc;
    if (rep->type == REDIS_REPLY_NIL) {
        freeReplyObject(rep);
        return 0;
    }
    if (rep->type != REDIS_REPLY_STRING)
        return unexpected(rep, "ZSCORE", err);
    *score = strtod(rep->str, NULL);
    freeReplyObject(rep);
    return 1;
}

static int x_ztrim(void *h, const char *key, size_t keep, pl_error *err)
{
    char stop[32];
    snprintf(stop, sizeof stop, "%lld", -(long long)keep - 1);
    long long v = 0;
    int rc = run_int(h, 4, (const char *[]){"ZREMRANGEBYRANK", key, "0", stop}, NULL, &v, err);
    return rc ? rc : (int)(v > INT_MAX ? INT_MAX : v);
}

/* ---- publish ---------------------------------------------------------------------------------- */

static int x_publish(void *h, const char *channel, const void *msg, size_t len, pl_error *err)
{
    long long v = 0;
    int rc = run_int(h, 3, (const char *[]){"PUBLISH", channel, msg}, (const size_t[]){7, strlen(channel), len},
                     &v, err);
    return rc ? rc : (int)(v > INT_MAX ? INT_MAX : v);
}

/* ---- subscribe: the pub/sub thread ------------------------------------------------------------ */

typedef struct rchan {
    char *name;
    bool pattern;
    int nsubs;      /* local subscriptions */
    bool sent;      /* (P)SUBSCRIBE written on the current connection */
    bool confirmed; /* Redis answered it */
    struct rchan *next;
} rchan;

typedef struct rsub {
    rps *ps;
    rchan *ch;
    kv_message_fn fn;
    void *ud;
    bool dead;
    int refs;
    struct rsub *next;
} rsub;

struct rps {
    rds *r;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* confirmations; a callback returned */
    pthread_t th;
    bool stop;
    int evfd;
    rchan *chans;
    rsub *subs;
    rsub *current;      /* whose callback runs now */
};

static void ps_wake(rps *ps)
{
    uint64_t one = 1;
    ssize_t w = write(ps->evfd, &one, sizeof one);
    (void)w; /* a full counter still wakes the thread */
}

static void rsub_unref(rsub *s) /* ps->mu held */
{
    if (--s->refs == 0)
        free(s);
}

static void deliver(rps *ps, bool pattern, const char *name, const char *channel, const char *data, size_t len)
{
    pthread_mutex_lock(&ps->mu);
    size_t n = 0;
    for (rsub *s = ps->subs; s; s = s->next)
        n += s->ch->pattern == pattern && strcmp(s->ch->name, name) == 0;
    if (n == 0) {
        pthread_mutex_unlock(&ps->mu);
        return;
    }
    rsub **to = xmalloc(n * sizeof *to);
    size_t k = 0;
    for (rsub *s = ps->subs; s; s = s->next)
        if (s->ch->pattern == pattern && strcmp(s->ch->name, name) == 0) {
            s->refs++;
            to[k++] = s;
        }
    for (size_t i = k; i-- > 0;) { /* oldest subscription first */
        rsub *s = to[i];
        if (!s->dead) {
            ps->current = s;
            pthread_mutex_unlock(&ps->mu);
            s->fn(s->ud, channel, data, len);
            pthread_mutex_lock(&ps->mu);
            ps->current = NULL;
            pthread_cond_broadcast(&ps->cv);
        }
        rsub_unref(s);
    }
    pthread_mutex_unlock(&ps->mu);
    free(to);
}

static void on_reply(rps *ps, redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    redisReply **e = rep->element;
    if (!strcmp(kind, "message") && e[2]->type == REDIS_REPLY_STRING) {
        deliver(ps, false, e[1]->str, e[1]->str, e[2]->str, e[2]->len);
    } else if (!strcmp(kind, "pmessage") && rep->elements >= 4 && e[3]->type == REDIS_REPLY_STRING) {
        deliver(ps, true, e[1]->str, e[2]->str, e[3]->str, e[3]->len);
    } else if (!strcmp(kind, "subscribe") || !strcmp(kind, "psubscribe")) {
        bool pattern = kind[0] == 'p';
        pthread_mutex_lock(&ps->mu);
        for (rchan *c = ps->chans; c; c = c->next)
            if (c->pattern == pattern && c->sent && strcmp(c->name, e[1]->str) == 0)
                c->confirmed = true;
        pthread_cond_broadcast(&ps->cv);
        pthread_mutex_unlock(&ps->mu);
    }
}

/* Writes what the subscriptions need on this connection: SUBSCRIBE for new
 * channels, UNSUBSCRIBE for channels nobody wants any more. */
static void sync_subscriptions(rps *ps, redisContext *c)
{
    pthread_mutex_lock(&ps->mu);
    for (rchan **p = &ps->chans; *p;) {
        rchan *ch = *p;
        if (ch->nsubs > 0 && !ch->sent) {
            redisAppendCommandArgv(c, 2, (const char *[]){ch->pattern ? "PSUBSCRIBE" : "SUBSCRIBE", ch->name}, NULL);
            ch->sent = true;
        } else if (ch->nsubs == 0) {
            if (ch->sent)
                redisAppendCommandArgv(c, 2, (const char *[]){ch->pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", ch->name},
                                       NULL);
            *p = ch->next;
            free(ch->name);
            free(ch);
            continue;
        }
        p = &ch->next;
    }
    pthread_mutex_unlock(&ps->mu);
}

static void forget_connection(rps *ps)
{
    pthread_mutex_lock(&ps->mu);
    for (rchan *ch = ps->chans; ch; ch = ch->next)
        ch->sent = ch->confirmed = false;
    pthread_mutex_unlock(&ps->mu);
}

static bool flush_out(redisContext *c)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return false;
    return true;
}

static void *ps_main(void *arg)
{
    rps *ps = arg;
    redisContext *c = NULL;
    int backoff = 50;
    for (;;) {
        pthread_mutex_lock(&ps->mu);
        bool stop = ps->stop;
        pthread_mutex_unlock(&ps->mu);
        if (stop)
            break;
        if (!c) {
            pl_error e = {0};
            if (dial(ps->r, &c, &e)) {
                c = NULL;
                /* Sleep through the backoff, but wake for stop. */
                struct pollfd w = {.fd = ps->evfd, .events = POLLIN};
                if (poll(&w, 1, backoff) > 0) {
                    uint64_t v;
                    ssize_t rd = read(ps->evfd, &v, sizeof v);
                    (void)rd;
                }
                backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
                continue;
            }
            if (backoff > 50)
                log_info("kv: redis pub/sub connection to %s:%d is back", ps->r->host, ps->r->port);
            backoff = 50;
        }
        sync_subscriptions(ps, c);
        struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = ps->evfd, .events = POLLIN}};
        bool ok = flush_out(c);
        if (ok && poll(pfd, 2, 1000) < 0) {
            if (errno != EINTR)
                ok = false;
            pfd[0].revents = pfd[1].revents = 0;
        }
        if (ok && (pfd[1].revents & POLLIN)) {
            uint64_t v;
            ssize_t rd = read(ps->evfd, &v, sizeof v);
            (void)rd;
        }
        if (ok && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ok = redisBufferRead(c) == REDIS_OK;
            void *rep = NULL;
            while (ok && redisGetReplyFromReader(c, &rep) == REDIS_OK && rep) {
                on_reply(ps, rep);
                freeReplyObject(rep);
                rep = NULL;
            }
            ok = ok && !c->err;
        }
        if (!ok) {
            log_warn("kv: redis pub/sub connection to %s:%d lost (%s); reconnecting", ps->r->host, ps->r->port,
                     c->errstr[0] ? c->errstr : "poll failed");
            redisFree(c);
            c = NULL;
            forget_connection(ps);
            backoff = 100;
        }
    }
    if (c)
        redisFree(c);
    return NULL;
}

static int ps_start(rds *r, pl_error *err) /* r->mu held */
{
    rps *ps = calloc(1, sizeof *ps);
    if (!ps)
        abort();
    ps->r = r;
    ps->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ps->evfd < 0) {
        free(ps);
        return err_set(err, PL_EINTERNAL, NULL, "kv: eventfd: %s", strerror(errno));
    }
    pthread_mutex_init(&ps->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ps->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&ps->th, NULL, ps_main, ps);
    if (rc) {
        close(ps->evfd);
        pthread_mutex_destroy(&ps->mu);
        pthread_cond_destroy(&ps->cv);
        free(ps);
        return err_set(err, PL_EINTERNAL, NULL, "kv: cannot start the redis pub/sub thread: %s", strerror(rc));
    }
    r->ps = ps;
    return 0;
}

static void ps_stop(rds *r)
{
    rps *ps = r->ps;
    if (!ps)
        return;
    pthread_mutex_lock(&ps->mu);
    ps->stop = true;
    if (ps->subs)
        log_warn("kv: redis store closed with subscriptions left");
    pthread_mutex_unlock(&ps->mu);
    ps_wake(ps);
    pthread_join(ps->th, NULL);
    while (ps->chans) {
        rchan *ch = ps->chans;
        ps->chans = ch->next;
        free(ch->name);
        free(ch);
    }
    close(ps->evfd);
    pthread_mutex_destroy(&ps->mu);
    pthread_cond_destroy(&ps->cv);
    free(ps);
    r->ps = NULL;
}

static int x_subscribe(void *h, const char *channel, kv_message_fn fn, void *ud, void **out, pl_error *err)
{
    rds *r = h;
    pthread_mutex_lock(&r->mu);
    int rc = r->ps ? 0 : ps_start(r, err);
    rps *ps = r->ps;
    pthread_mutex_unlock(&r->mu);
    if (rc)
        return rc;

    bool pattern = strchr(channel, '*') != NULL;
    rsub *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->ps = ps;
    s->fn = fn;
    s->ud = ud;
    s->refs = 1;
    pthread_mutex_lock(&ps->mu);
    rchan *ch = ps->chans;
    while (ch && !(ch->pattern == pattern && strcmp(ch->name, channel) == 0))
        ch = ch->next;
    if (!ch) {
        ch = calloc(1, sizeof *ch);
        if (!ch || !(ch->name = strdup(channel)))
            abort();
        ch->pattern = pattern;
        ch->next = ps->chans;
        ps->chans = ch;
    }
    ch->nsubs++;
    s->ch = ch;
    /* From a callback, on the pub/sub thread itself, nobody could read the
     * confirmation while this waits for it: the subscription starts when
     * Redis gets the SUBSCRIBE, shortly after this returns. */
    if (!ch->confirmed && !pthread_equal(ps->th, pthread_self())) {
        ps_wake(ps);
        /* Long enough to connect and get an answer, never forever. */
        int64_t deadline = mono_ms() + (r->connect_tv.tv_sec * 1000 + r->connect_tv.tv_usec / 1000) + r->cmd_ms;
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        while (!ch->confirmed)
            if (pthread_cond_timedwait(&ps->cv, &ps->mu, &ts) == ETIMEDOUT)
                break;
        if (!ch->confirmed) {
            ch->nsubs--;
            pthread_mutex_unlock(&ps->mu);
            ps_wake(ps);
            free(s);
            return err_set(err, PL_EUNAVAILABLE, "channel", "kv: redis %s:%d did not confirm the subscription to %s",
                           r->host, r->port, channel);
        }
    }
    s->next = ps->subs;
    ps->subs = s;
    pthread_mutex_unlock(&ps->mu);
    *out = s;
    return 0;
}

static void x_unsubscribe(void *sub)
{
    rsub *s = sub;
    rps *ps = s->ps;
    pthread_mutex_lock(&ps->mu);
    s->dead = true;
    for (rsub **p = &ps->subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    bool last = --s->ch->nsubs == 0;
    /* kv.h: no callback after this returns; from inside its own callback
     * (the pub/sub thread) there is nothing to wait for. */
    if (!pthread_equal(ps->th, pthread_self()))
        while (ps->current == s)
            pthread_cond_wait(&ps->cv, &ps->mu);
    rsub_unref(s);
    pthread_mutex_unlock(&ps->mu);
    if (last)
        ps_wake(ps);
}

static const char *const redis_schemes[] = {"redis://", NULL};

const kv_driver kv_redis_driver = {
    .version = 1,
    .name = "redis",
    .schemes = redis_schemes,
    .xOpen = x_open,
    .xClose = x_close,
    .xPing = x_ping,
    .xSet = x_set,
    .xGet = x_get,
    .xDel = x_del,
    .xTtl = x_ttl,
    .xIncr = x_incr,
    .xZaddBatch = x_zadd_batch,
    .xZrem = x_zrem,
    .xZrangeScore = x_zrange_score,
    .xZrangeRank = x_zrange_rank,
    .xZcard = x_zcard,
    .xZscore = x_zscore,
    .xZtrim = x_ztrim,
    .xPublish = x_publish,
    .xSubscribe = x_subscribe,
    .xUnsubscribe = x_unsubscribe,
};
