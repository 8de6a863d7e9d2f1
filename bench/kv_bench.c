/*
 * kv_bench.c - kv operation rates through the adapter (src/store/kv.h), and
 * the timeline's fan-out next to the same pipeline sent raw with hiredis.
 *
 *   kv_bench ops    [--url URL] [--dir DIR] [--threads T] [--n N] [--value BYTES]
 *                   [--keyspace K] [--only set,get,incr,zadd]
 *   kv_bench fanout [--url URL] [--dir DIR] [--feeds F] [--fill M] [--rounds R]
 *
 * URL "" (the default) is the embedded engine in DIR (a temporary directory
 * when not given, removed at the end); redis://host:port/db is Redis.
 *
 * ops: T threads share N operations of each kind, on random keys of a space of
 * K, as redis-benchmark does (-r K -d BYTES): SET key:<r>, GET key:<r>
 * (after the SETs), INCR counter:<r>, ZADD myzset <r> element:<r>.
 *
 * fanout: F feeds are filled with M members each, then R rounds each add one
 * new member to every feed with trim_to = M (the steady state of a home
 * timeline: one in, the oldest out) in one kv_zadd_batch. On Redis every round
 * is also sent raw (hiredis, the same ZADD + ZREMRANGEBYRANK pipeline, one
 * round trip) to other keys, interleaved with the adapter's rounds so that
 * both see the same machine.
 *
 * Output: one line per measure, "key=value" pairs, for bench/kv.sh.
 */
#include "store/kv.h"

#include <ftw.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *url = "";
static char dir[256];
static int threads = 1, value_size = 100, feeds = 10000, fill = 100, rounds = 30;
static long n_ops = 100000, keyspace = 100000;
static const char *only = "set,get,incr,zadd";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const pl_error *err)
{
    fprintf(stderr, "kv_bench: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static kv *open_kv(const char *service, int pool)
{
    kv *k = NULL;
    pl_error err = {0};
    kv_options o = {.service = service, .data_dir = dir, .pool_max = pool};
    if (kv_open(url, &o, &k, &err))
        die("open", &err);
    return k;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- ops ----------------------------------------------------------------------------------- */

typedef struct worker {
    kv *k;
    const char *op;
    long n;
    unsigned seed;
    double *lat; /* µs per op */
    long errors;
} worker;

static const char *value;

static void *work(void *p)
{
    worker *w = p;
    char key[64], member[64];
    pl_error err = {0};
    for (long i = 0; i < w->n; i++) {
        long r = rand_r(&w->seed) % keyspace;
        double t0 = now_s();
        int rc = 0;
        if (!strcmp(w->op, "set")) {
            snprintf(key, sizeof key, "key:%ld", r);
            rc = kv_set(w->k, key, value, (size_t)value_size, 0, &err);
        } else if (!strcmp(w->op, "get")) {
            snprintf(key, sizeof key, "key:%ld", r);
            char *v = NULL;
            size_t len;
            rc = kv_get(w->k, key, &v, &len, &err);
            free(v);
            rc = rc < 0 ? rc : 0;
        } else if (!strcmp(w->op, "incr")) {
            snprintf(key, sizeof key, "counter:%ld", r);
            int64_t v;
            rc = kv_incr(w->k, key, 1, 0, &v, &err);
        } else {
            snprintf(member, sizeof member, "element:%ld", r);
            rc = kv_zadd(w->k, "myzset", member, (double)r, &err);
        }
        w->lat[i] = (now_s() - t0) * 1e6;
        if (rc && w->errors++ == 0)
            fprintf(stderr, "kv_bench: %s: %s\n", w->op, err.msg);
    }
    return NULL;
}

static void run_ops(void)
{
    kv *k = open_kv("bench", threads > 20 ? threads : 20);
    char *v = malloc((size_t)value_size + 1);
    memset(v, 'x', (size_t)value_size);
    v[value_size] = '\0';
    value = v;
    char list[64];
    snprintf(list, sizeof list, "%s", only);
    for (char *save = NULL, *op = strtok_r(list, ",", &save); op; op = strtok_r(NULL, ",", &save)) {
        worker *w = calloc((size_t)threads, sizeof *w);
        pthread_t *t = calloc((size_t)threads, sizeof *t);
        double *lat = malloc((size_t)n_ops * sizeof *lat);
        long per = n_ops / threads, total = per * threads;
        double c0 = cpu_s(), t0 = now_s();
        for (int i = 0; i < threads; i++) {
            w[i] = (worker){.k = k, .op = op, .n = per, .seed = (unsigned)(i * 7919 + 1), .lat = lat + i * per};
            pthread_create(&t[i], NULL, work, &w[i]);
        }
        long errors = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(t[i], NULL);
            errors += w[i].errors;
        }
        double secs = now_s() - t0, cpu = cpu_s() - c0;
        qsort(lat, (size_t)total, sizeof *lat, cmp_double);
        printf("op=%s engine=%s threads=%d n=%ld secs=%.3f rate=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
               "cpu_us_per_op=%.2f errors=%ld\n",
               op, kv_engine(k), threads, total, secs, (double)total / secs, pct(lat, (size_t)total, 0.5),
               pct(lat, (size_t)total, 0.99), lat[total - 1], cpu * 1e6 / (double)total, errors);
        fflush(stdout);
        free(lat);
        free(t);
        free(w);
    }
    free(v);
    kv_close(k);
}

/* ---- fan-out ----------------------------------------------------------------------------------- */

static char (*feed_keys)[32];

/* The same pipeline kv_redis.c sends, straight through hiredis. */
static double raw_round(redisContext *c, const char *member, double score)
{
    char sc[32], stop[32];
    snprintf(sc, sizeof sc, "%.17g", score);
    snprintf(stop, sizeof stop, "%d", -fill - 1);
    double t0 = now_s();
    for (int f = 0; f < feeds; f++) {
        char key[48];
        snprintf(key, sizeof key, "raw:%s", feed_keys[f]);
        redisAppendCommand(c, "ZADD %s %s %s", key, sc, member);
        redisAppendCommand(c, "ZREMRANGEBYRANK %s 0 %s", key, stop);
    }
    for (int i = 0; i < 2 * feeds; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "kv_bench: raw pipeline: %s\n", r ? r->str : c->errstr);
            exit(1);
        }
        freeReplyObject(r);
    }
    return (now_s() - t0) * 1e3;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static void run_fanout(void)
{
    kv *k = open_kv("bench", 4);
    bool redis = !strncmp(url, "redis://", 8);
    redisContext *raw = NULL;
    if (redis) {
        char host[128] = "127.0.0.1";
        int port = 6379, db = 0;
        sscanf(url, "redis://%127[^:/]:%d/%d", host, &port, &db);
        raw = redisConnect(host, port);
        if (!raw || raw->err)
            die("raw connect", NULL);
        freeReplyObject(redisCommand(raw, "SELECT %d", db));
    }
    feed_keys = malloc((size_t)feeds * sizeof *feed_keys);
    kv_zop *ops = malloc((size_t)feeds * sizeof *ops);
    for (int f = 0; f < feeds; f++)
        snprintf(feed_keys[f], sizeof feed_keys[f], "home:%d", f);

    /* Fill every feed with `fill` members: the steady state. */
    pl_error err = {0};
    long rss0 = rss_kb();
    double t0 = now_s();
    char member[48];
    for (int j = 0; j < fill; j++) {
        snprintf(member, sizeof member, "01900000-0000-7000-8000-%012d", j);
        for (int f = 0; f < feeds; f++)
            ops[f] = (kv_zop){.key = feed_keys[f], .member = member, .score = j, .trim_to = (size_t)fill};
        if (kv_zadd_batch(k, ops, (size_t)feeds, &err))
            die("fill", &err);
        if (raw)
            raw_round(raw, member, j);
    }
    double fill_s = now_s() - t0;
    printf("fill engine=%s feeds=%d members=%d secs=%.2f zadds_per_s=%.0f rss_mb=%.1f\n", kv_engine(k), feeds, fill,
           fill_s, (double)feeds * fill / fill_s / (raw ? 2 : 1), (double)(rss_kb() - rss0) / 1024);

    double *lat = malloc((size_t)rounds * sizeof *lat), *rawlat = malloc((size_t)rounds * sizeof *rawlat);
    double cpu = 0;
    for (int r = 0; r < rounds; r++) {
        snprintf(member, sizeof member, "01910000-0000-7000-8000-%012d", r);
        for (int f = 0; f < feeds; f++)
            ops[f] = (kv_zop){.key = feed_keys[f], .member = member, .score = fill + r, .trim_to = (size_t)fill};
        if (raw)
            rawlat[r] = raw_round(raw, member, fill + r);
        double c0 = cpu_s();
        t0 = now_s();
        if (kv_zadd_batch(k, ops, (size_t)feeds, &err))
            die("fan-out", &err);
        lat[r] = (now_s() - t0) * 1e3;
        cpu += cpu_s() - c0;
    }
    /* Correctness at the end: every feed holds `fill`, the newest first. */
    int64_t card = 0;
    kv_zcard(k, feed_keys[feeds / 2], &card, &err);
    if (card != fill)
        die("fan-out left a feed at the wrong size", NULL);
    qsort(lat, (size_t)rounds, sizeof *lat, cmp_double);
    printf("fanout engine=%s feeds=%d fill=%d rounds=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f min_ms=%.1f "
           "cpu_ms_per_round=%.1f\n",
           kv_engine(k), feeds, fill, rounds, pct(lat, (size_t)rounds, 0.5), pct(lat, (size_t)rounds, 0.9),
           pct(lat, (size_t)rounds, 0.99),
           lat[rounds - 1], lat[0], cpu * 1e3 / rounds);
    if (raw) {
        qsort(rawlat, (size_t)rounds, sizeof *rawlat, cmp_double);
        printf("fanout engine=raw-hiredis feeds=%d fill=%d rounds=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f "
               "min_ms=%.1f\n",
               feeds, fill, rounds, pct(rawlat, (size_t)rounds, 0.5), pct(rawlat, (size_t)rounds, 0.9),
               pct(rawlat, (size_t)rounds, 0.99),
               rawlat[rounds - 1], rawlat[0]);
        redisFree(raw);
    }
    fflush(stdout);
    free(lat);
    free(rawlat);
    free(ops);
    free(feed_keys);
    t0 = now_s();
    kv_close(k);
    printf("close engine=%s secs=%.2f\n", redis ? "redis" : "embedded", now_s() - t0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "ops") && strcmp(argv[1], "fanout"))) {
        fprintf(stderr, "usage: kv_bench ops|fanout [--url URL] [--dir DIR] [--threads T] [--n N] [--value B]\n"
                        "       [--keyspace K] [--only set,get,incr,zadd] [--feeds F] [--fill M] [--rounds R]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--url"))
            url = v;
        else if (!strcmp(o, "--dir"))
            snprintf(dir, sizeof dir, "%s", v);
        else if (!strcmp(o, "--threads"))
            threads = atoi(v);
        else if (!strcmp(o, "--n"))
            n_ops = atol(v);
        else if (!strcmp(o, "--value"))
            value_size = atoi(v);
        else if (!strcmp(o, "--keyspace"))
            keyspace = atol(v);
        else if (!strcmp(o, "--only"))
            only = v;
        else if (!strcmp(o, "--feeds"))
            feeds = atoi(v);
        else if (!strcmp(o, "--fill"))
            fill = atoi(v);
        else if (!strcmp(o, "--rounds"))
            rounds = atoi(v);
        else {
            fprintf(stderr, "kv_bench: unknown option %s\n", o);
            return 2;
        }
    }
    if (threads < 1 || n_ops < threads || keyspace < 1 || feeds < 1 || fill < 1 || rounds < 1 || value_size < 0)
        return 2;
    bool tmp = false;
    if (!*url && !dir[0]) {
        snprintf(dir, sizeof dir, "%s/pulse-kvbench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir))
            die("mkdtemp", NULL);
        tmp = true;
    }
    if (!strcmp(argv[1], "ops"))
        run_ops();
    else
        run_fanout();
    if (tmp)
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
