/*
 * bus_bench.c - the event backbone, embedded, end to end:
 *
 *   producer store --outbox_emit--> pulse_outbox --relay--> bus.db log
 *       --consumer (inbox + handler, one tx per batch)--> consumer store
 *
 * Linked with the platform's release objects, so it measures the real
 * outbox.c, bus_local.c and consumer.c against the real SQLite store. Every
 * run gets a fresh data directory (mkdtemp under $TMPDIR, same disk as the
 * raw SQLite run) that is removed at the end.
 *
 *   bus_bench throughput N PER_TXN   N events, PER_TXN per producer transaction;
 *                                    events/s from the first emit to the start
 *                                    of the last handler
 *   bus_bench raw N                  the same rows (same bodies) into a plain
 *                                    table: raw SQLite, 1,000 rows/txn, WAL,
 *                                    synchronous=NORMAL
 *   bus_bench latency RATE SECS      paced producer, 1 event per transaction;
 *                                    commit -> handler start p50/p99/p99.9
 *   bus_bench ladder SECS R1 R2 ...  latency steps at rising rates in one set-up,
 *                                    stopping after the first unsustainable one
 *
 * Each run prints one line of key=value pairs on stdout (bench/bus.sh parses
 * them); progress and errors go to stderr.
 *
 * Latency method: the producer takes CLOCK_MONOTONIC right after sql_commit
 * returns (commit_ns[n]); the handler takes it first thing (start_ns[n]),
 * where n is the event's index, carried in its data. Both live in arrays in
 * this process, written once each, and are subtracted after the run, so the
 * handler adds only one stamp (under an uncontended mutex) to the real path.
 * The relay is woken by an after-commit hook that runs inside sql_commit,
 * just before commit_ns is taken, so the figure starts at the point the
 * caller (an HTTP handler) sees the commit done (a handler that starts even
 * earlier counts as 0, "hook_first"); the commit call itself is reported
 * separately (commit_p50_us).
 */
#include "bus/bus.h"
#include "bus/consumer.h"
#include "bus/outbox.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "store/sql.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TYPE "pl.bench.ticked.v1"
#define KEYS 1024   /* distinct partition keys (subjects) */
#define PAD 120     /* bytes of text in each event's data */

static const char *const patterns[] = {"pl.bench.*", NULL};

/* ---- per-event timestamps ------------------------------------------------------------- */

static int64_t *commit_ns, *start_ns; /* by event index; 0 = not yet */
static int64_t cap;
static pthread_mutex_t stamps = PTHREAD_MUTEX_INITIALIZER; /* start_ns and cap against arrays() */
static atomic_llong seen;             /* distinct events whose handler started */

static void arrays(int64_t n)
{
    pthread_mutex_lock(&stamps);
    free(commit_ns);
    free(start_ns);
    commit_ns = calloc((size_t)n, sizeof *commit_ns);
    start_ns = calloc((size_t)n, sizeof *start_ns);
    if (!commit_ns || !start_ns)
        abort();
    cap = n;
    atomic_store(&seen, 0);
    pthread_mutex_unlock(&stamps);
}

static int handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    int64_t t = time_mono_ns();
    int64_t n = json_integer_value(json_object_get(ev->data, "n"));
    pthread_mutex_lock(&stamps);
    if (n >= 0 && n < cap && !start_ns[n]) { /* the first run only (a redelivery after a failed batch runs it again) */
        start_ns[n] = t;
        atomic_fetch_add(&seen, 1);
    }
    pthread_mutex_unlock(&stamps);
    return sql_exec(tx, "INSERT INTO bench_sink (n, event_id) VALUES ($1, $2)", SQL_ARGS(SQL_INT(n), SQL_TEXT(ev->id)),
                    NULL, err);
}

static const consumer_def sink = {.name = "sink", .types = patterns, .handle = handle};

/* ---- set-up ----------------------------------------------------------------------------- */

/* The process's threads in creation order after env_open: the producer (main),
 * the bus's watcher, the relay, the consumer. */
enum { T_PRODUCER, T_WATCHER, T_RELAY, T_CONSUMER, T_COUNT };
static const char *const thread_names[T_COUNT] = {"producer", "watcher", "relay", "consumer"};

typedef struct env {
    char dir[PATH_MAX];
    int tid[T_COUNT];
    sql_db *prod, *cons;
    bus *bus;
    outbox_relay *relay;
    consumer *consumer;
} env;

static void die(const char *what, const pl_error *e)
{
    fprintf(stderr, "bus_bench: %s: %s\n", what, e && e->msg[0] ? e->msg : "failed");
    exit(1);
}

static void make_dir(env *e)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof e->dir, "%s/pulse-busbench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(e->dir)) {
        fprintf(stderr, "bus_bench: mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_dir(env *e) { nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void find_threads(env *e)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0, tids[64];
    struct dirent *de;
    while (d && (de = readdir(d)) && n < 64)
        if (de->d_name[0] != '.')
            tids[n++] = atoi(de->d_name);
    if (d)
        closedir(d);
    qsort(tids, (size_t)n, sizeof *tids, cmp_int);
    for (int i = 0; i < T_COUNT; i++)
        e->tid[i] = n == T_COUNT ? tids[i] : 0;
}

/* CPU seconds (user + system) of one thread of this process. */
static double thread_cpu(int tid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Voluntary context switches (sleeps, i.e. wake-ups) of one thread of this process. */
static double thread_sleeps(int tid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE *f = fopen(path, "r");
    double n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
            n = atof(line + 24);
    if (f)
        fclose(f);
    return n;
}

typedef struct tsample {
    double cpu[T_COUNT], sleeps[T_COUNT];
} tsample;

static void threads_cpu(const env *e, tsample *out)
{
    for (int i = 0; i < T_COUNT; i++) {
        out->cpu[i] = e->tid[i] ? thread_cpu(e->tid[i]) : 0;
        out->sleeps[i] = e->tid[i] ? thread_sleeps(e->tid[i]) : 0;
    }
}

/* Per event between two samples: " producer_us=.. ... consumer_us=.." (CPU) and
 * " producer_wakes=.. ..." (voluntary context switches). */
static void print_threads(const tsample *a, const tsample *b, int64_t n)
{
    for (int i = 0; i < T_COUNT; i++)
        printf(" %s_us=%.2f", thread_names[i], (b->cpu[i] - a->cpu[i]) * 1e6 / (double)n);
    for (int i = 0; i < T_COUNT; i++)
        printf(" %s_wakes=%.2f", thread_names[i], (b->sleeps[i] - a->sleeps[i]) / (double)n);
}

static sql_db *open_store(env *e, const char *service)
{
    pl_error err = {0};
    sql_db *db;
    sql_options o = {.data_dir = e->dir, .service = service};
    if (sql_open("", &o, &db, &err))
        die("sql_open", &err);
    if (sql_migrate(db, "bus", sql_builtin_migrations, sql_builtin_nmigrations, &err) < 0)
        die("sql_migrate bus", &err);
    return db;
}

static void exec_one(sql_db *db, const char *sql)
{
    pl_error err = {0};
    sql_tx *tx;
    if (sql_begin(db, SQL_TX_WRITE, &tx, &err) || sql_exec(tx, sql, SQL_NOARGS, NULL, &err) ||
        sql_commit(tx, &err))
        die(sql, &err);
}

static void env_open(env *e)
{
    pl_error err = {0};
    memset(e, 0, sizeof *e);
    make_dir(e);
    e->prod = open_store(e, "benchprod");
    e->cons = open_store(e, "benchcons");
    exec_one(e->cons, "CREATE TABLE bench_sink (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, event_id TEXT NOT NULL)");
    bus_options bo = {.data_dir = e->dir};
    if (bus_open("", &bo, &e->bus, &err))
        die("bus_open", &err);
    if (outbox_relay_start(e->prod, "benchprod", e->bus, &e->relay, &err))
        die("outbox_relay_start", &err);
    if (consumer_start(e->bus, e->cons, "benchcons", &sink, NULL, NULL, &e->consumer, &err))
        die("consumer_start", &err);
    find_threads(e);
}

static void env_close(env *e)
{
    consumer_stop(e->consumer);
    outbox_relay_stop(e->relay);
    bus_close(e->bus);
    sql_close(e->prod);
    sql_close(e->cons);
    remove_dir(e);
}

/* ---- producing ------------------------------------------------------------------------- */

static char pad[PAD + 1];

static json_t *data_for(int64_t n)
{
    return json_pack("{s:I, s:s}", "n", (json_int_t)n, "text", pad);
}

static void subject_for(int64_t n, char *buf, size_t sz) { snprintf(buf, sz, "user-%04d", (int)(n % KEYS)); }

/* Emits events [from, from + k) in one transaction; returns the commit call's duration. */
static int64_t emit_txn(env *e, int64_t from, int k)
{
    pl_error err = {0};
    sql_tx *tx;
    if (sql_begin(e->prod, SQL_TX_WRITE, &tx, &err))
        die("sql_begin", &err);
    for (int i = 0; i < k; i++) {
        char subject[32];
        subject_for(from + i, subject, sizeof subject);
        if (outbox_emit(tx, "benchprod", TYPE, subject, NULL, data_for(from + i), NULL, &err))
            die("outbox_emit", &err);
    }
    int64_t t0 = time_mono_ns();
    if (sql_commit(tx, &err))
        die("sql_commit", &err);
    int64_t t1 = time_mono_ns();
    for (int i = 0; i < k; i++)
        commit_ns[from + i] = t1;
    return t1 - t0;
}

/* Waits until `want` handlers have started (or timeout_s passes); returns the count. */
static int64_t wait_seen(int64_t want, double timeout_s)
{
    int64_t deadline = time_mono_ns() + (int64_t)(timeout_s * 1e9);
    while (atomic_load(&seen) < want && time_mono_ns() < deadline)
        usleep(500);
    return atomic_load(&seen);
}

/* A few events through the whole path first: the consumer takes its leases,
 * statement caches fill. They use indices past the measured range. */
static void warm_up(env *e, int64_t n)
{
    arrays(n + 20);
    for (int i = 0; i < 20; i++)
        emit_txn(e, n + i, 1);
    if (wait_seen(20, 30) < 20) {
        fprintf(stderr, "bus_bench: warm-up events were not consumed within 30 s\n");
        exit(1);
    }
    arrays(n);
}

/* ---- statistics --------------------------------------------------------------------------- */

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *sorted, size_t n, double p) /* nearest rank, in ms */
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    k = k < 1 ? 1 : (k > n ? n : k);
    return (double)sorted[k - 1] / 1e6;
}

typedef struct lat {
    double p50, p99, p999, max;
    double q1_p50, q4_p50; /* p50 of the first and of the last quarter of the events */
    size_t n, negative;
} lat;

/* p50 latency of events [from, to), in ms; v is scratch space. */
static double quarter_p50(int64_t from, int64_t to, int64_t *v)
{
    size_t k = 0;
    for (int64_t i = from; i < to; i++)
        if (start_ns[i] && commit_ns[i])
            v[k++] = start_ns[i] > commit_ns[i] ? start_ns[i] - commit_ns[i] : 0;
    qsort(v, k, sizeof *v, cmp64);
    return pct(v, k, 0.50);
}

/* Latencies of events [0, n): all, and the p50 of the first and last quarters
 * (a queue that builds up shows as a rising median; a stall does not move it). */
static lat latencies(int64_t n)
{
    lat l = {0};
    int64_t *v = malloc((size_t)n * sizeof *v);
    if (!v)
        abort();
    size_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!start_ns[i] || !commit_ns[i])
            continue;
        int64_t d = start_ns[i] - commit_ns[i];
        if (d < 0) { /* the handler started before commit_ns was taken (the after-commit hook ran first) */
            l.negative++;
            d = 0;
        }
        v[k++] = d;
    }
    qsort(v, k, sizeof *v, cmp64);
    l.n = k;
    l.p50 = pct(v, k, 0.50);
    l.p99 = pct(v, k, 0.99);
    l.p999 = pct(v, k, 0.999);
    l.max = k ? (double)v[k - 1] / 1e6 : 0;
    l.q1_p50 = quarter_p50(0, n / 4, v);
    l.q4_p50 = quarter_p50(n - n / 4, n, v);
    free(v);
    return l;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* The size of one event body as outbox_emit encodes it. */
static double body_bytes(void)
{
    pl_error err = {0};
    cloudevent ev;
    char subject[32];
    subject_for(1, subject, sizeof subject);
    if (ce_new(&ev, "benchprod", TYPE, subject, NULL, data_for(123456), &err))
        return 0;
    char *body = ce_encode(&ev);
    double n = (double)strlen(body);
    free(body);
    ce_clear(&ev);
    return n;
}

/* ---- modes ---------------------------------------------------------------------------------- */

static int run_throughput(int64_t n, int per_txn)
{
    env e;
    env_open(&e);
    warm_up(&e, n);
    double cpu0 = cpu_s();
    tsample tc0, tc1;
    threads_cpu(&e, &tc0);
    int64_t t0 = time_mono_ns(), commit_sum = 0, published_at = 0;
    int64_t pub0 = outbox_relay_published(e.relay);
    for (int64_t i = 0; i < n; i += per_txn)
        commit_sum += emit_txn(&e, i, (int)(n - i < per_txn ? n - i : per_txn));
    int64_t t_emitted = time_mono_ns();
    /* until every handler has started; note when the relay has published everything */
    int64_t deadline = t_emitted + 120 * (int64_t)1000000000;
    while (atomic_load(&seen) < n && time_mono_ns() < deadline) {
        if (!published_at && outbox_relay_published(e.relay) - pub0 >= n)
            published_at = time_mono_ns();
        usleep(200);
    }
    if (!published_at)
        published_at = time_mono_ns();
    double cpu = cpu_s() - cpu0;
    threads_cpu(&e, &tc1);
    int64_t got = atomic_load(&seen);
    if (got < n) {
        fprintf(stderr, "bus_bench: only %lld of %lld events consumed within 120 s\n", (long long)got, (long long)n);
        return 1;
    }
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++)
        last = start_ns[i] > last ? start_ns[i] : last;
    double secs = (double)(last - t0) / 1e9;
    lat l = latencies(n);
    printf("mode=throughput events=%lld per_txn=%d events_per_s=%.0f seconds=%.3f produce_per_s=%.0f"
           " relay_done_s=%.3f cpu_us_per_event=%.2f commit_avg_us=%.1f lat_p50_ms=%.2f lat_p99_ms=%.2f"
           " body_bytes=%.0f",
           (long long)n, per_txn, (double)n / secs, secs, (double)n / ((double)(t_emitted - t0) / 1e9),
           (double)(published_at - t0) / 1e9, cpu * 1e6 / (double)n,
           (double)commit_sum / 1e3 / (double)((n + per_txn - 1) / per_txn), l.p50, l.p99, body_bytes());
    print_threads(&tc0, &tc1, n);
    printf("\n");
    fflush(stdout);
    env_close(&e);
    return 0;
}

static int run_raw(int64_t n)
{
    /* The same rows as the outbox gets: encoded CloudEvents of the same data. */
    char **body = calloc((size_t)n, sizeof *body);
    char (*ids)[40] = calloc((size_t)n, sizeof *ids);
    char (*keys)[32] = calloc((size_t)n, sizeof *keys);
    if (!body || !ids || !keys)
        abort();
    double bytes = 0;
    for (int64_t i = 0; i < n; i++) {
        pl_error err = {0};
        cloudevent ev;
        subject_for(i, keys[i], sizeof keys[i]);
        if (ce_new(&ev, "benchprod", TYPE, keys[i], NULL, data_for(i), &err))
            die("ce_new", &err);
        body[i] = ce_encode(&ev);
        memcpy(ids[i], ev.id, sizeof ev.id);
        bytes += (double)strlen(body[i]);
        ce_clear(&ev);
    }
    env e;
    memset(&e, 0, sizeof e);
    make_dir(&e);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/raw.db", e.dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(path, &db) ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE raw (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, type TEXT NOT NULL,"
                     " partitionkey TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL)",
                     NULL, NULL, NULL) ||
        sqlite3_prepare_v2(db, "INSERT INTO raw (id, type, partitionkey, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &st, NULL)) {
        fprintf(stderr, "bus_bench: raw sqlite set-up: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    double cpu0 = cpu_s();
    int64_t t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i += 1000) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int64_t j = i; j < n && j < i + 1000; j++) {
            sqlite3_bind_text(st, 1, ids[j], -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, TYPE, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, keys[j], -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, body[j], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, time_now_ms());
            if (sqlite3_step(st) != SQLITE_DONE) {
                fprintf(stderr, "bus_bench: raw insert: %s\n", sqlite3_errmsg(db));
                return 1;
            }
            sqlite3_reset(st);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) {
            fprintf(stderr, "bus_bench: raw commit: %s\n", sqlite3_errmsg(db));
            return 1;
        }
    }
    double secs = (double)(time_mono_ns() - t0) / 1e9, cpu = cpu_s() - cpu0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    remove_dir(&e);
    printf("mode=raw rows=%lld rows_per_s=%.0f seconds=%.3f cpu_us_per_row=%.2f body_bytes=%.0f\n", (long long)n,
           (double)n / secs, secs, cpu * 1e6 / (double)n, bytes / (double)n);
    for (int64_t i = 0; i < n; i++)
        free(body[i]);
    free(body);
    free(ids);
    free(keys);
    return 0;
}

/* One paced step: `rate` events/s, one per transaction, for `secs`; prints its line.
 * Sustainable: the producer held >= 97% of the rate and the consumer kept up: no
 * queue built up over the step, i.e. the median latency of the last quarter of the
 * events is at most twice that of the first quarter plus 10 ms. (Even 1% over
 * capacity for 5 s raises it by ~40 ms; a stall on a busy machine lifts the tail,
 * not the median.) */
static bool step(env *e, double rate, double secs)
{
    int64_t n = (int64_t)(rate * secs);
    warm_up(e, n);
    int64_t interval = (int64_t)(1e9 / rate);
    double cpu0 = cpu_s();
    tsample tc0, tc1;
    threads_cpu(e, &tc0);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t *cd = malloc((size_t)n * sizeof *cd);
    if (!cd)
        abort();
    for (int64_t i = 0; i < n; i++) {
        int64_t due = t0 + i * interval;
        struct timespec d = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL) == EINTR)
            ;
        cd[i] = emit_txn(e, i, 1);
    }
    int64_t t_end = time_mono_ns();
    int64_t backlog_end = n - atomic_load(&seen);
    int64_t got = wait_seen(n, 60);
    double cpu = cpu_s() - cpu0;
    threads_cpu(e, &tc1);
    qsort(cd, (size_t)n, sizeof *cd, cmp64);
    double achieved = (double)n / ((double)(t_end - t0) / 1e9);
    lat l = latencies(n);
    const char *dump = getenv("BUS_BENCH_DUMP"); /* "commit_ns latency_ns" per event, for plots */
    FILE *df = dump && *dump ? fopen(dump, "w") : NULL;
    for (int64_t i = 0; df && i < n; i++)
        fprintf(df, "%lld %lld\n", (long long)(commit_ns[i] - t0), (long long)(start_ns[i] - commit_ns[i]));
    if (df)
        fclose(df);
    bool ok = got == n && achieved >= 0.97 * rate && l.q4_p50 <= 2 * l.q1_p50 + 10;
    printf("mode=latency rate=%.0f seconds=%.1f events=%lld achieved_per_s=%.0f consumed=%lld backlog_end=%lld"
           " p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f q1_p50_ms=%.3f q4_p50_ms=%.3f commit_p50_us=%.1f"
           " commit_max_ms=%.2f cpu_us_per_event=%.2f hook_first=%zu sustainable=%d",
           rate, secs, (long long)n, achieved, (long long)got, (long long)backlog_end, l.p50, l.p99, l.p999, l.max,
           l.q1_p50, l.q4_p50, (double)cd[n / 2] / 1e3, (double)cd[n - 1] / 1e6, cpu * 1e6 / (double)n, l.negative, ok);
    print_threads(&tc0, &tc1, n);
    printf("\n");
    fflush(stdout);
    free(cd);
    return ok;
}

static int run_latency(double rate, double secs)
{
    env e;
    env_open(&e);
    step(&e, rate, secs);
    env_close(&e);
    return 0;
}

static int run_ladder(double secs, int nrates, char **rates)
{
    env e;
    env_open(&e);
    for (int i = 0; i < nrates; i++)
        if (!step(&e, atof(rates[i]), secs))
            break;
    env_close(&e);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bus_bench throughput N PER_TXN | raw N | latency RATE SECS | ladder SECS RATE...\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    log_set_level(LOG_WARN);
    memset(pad, 'x', PAD);
    if (argc == 4 && strcmp(argv[1], "throughput") == 0)
        return run_throughput(atoll(argv[2]), atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
    if (argc == 3 && strcmp(argv[1], "raw") == 0)
        return run_raw(atoll(argv[2]));
    if (argc == 4 && strcmp(argv[1], "latency") == 0)
        return run_latency(atof(argv[2]), atof(argv[3]));
    if (argc >= 4 && strcmp(argv[1], "ladder") == 0)
        return run_ladder(atof(argv[2]), argc - 3, argv + 3);
    return usage();
}
