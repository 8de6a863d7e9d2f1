/*
 * nats_bench.c - the event bus on NATS JetStream, next to bare libnats on the
 * same server in the same run.
 *
 *   nats_bench raw N             bare libnats: N async publishes (js_PublishAsync
 *                                with Nats-Msg-Id, 4,096 in flight, then
 *                                js_PublishAsyncComplete) of the same bodies into a
 *                                file stream like Pulse's; then a durable pull
 *                                consumer fetching 256 at a time and acking each
 *   nats_bench relay N           N events already committed in a service's outbox
 *                                (SQLite), then the outbox relay publishes them
 *                                through bus_publish: events/s until all published
 *   nats_bench consume N         N events published with bus_publish (512 a batch),
 *                                then one bus subscription fetches (256) and acks
 *                                them: the driver's consumer rate
 *   nats_bench pipeline N PER_TXN  producer -> outbox -> relay -> JetStream ->
 *                                consumer with inbox + handler (SQLite stores)
 *   nats_bench latency RATE SECS paced producer, 1 event per transaction;
 *                                commit -> handler start p50/p99/p99.9
 *   nats_bench buslat RATE SECS  the bus alone: bus_publish of 1 event at a time,
 *                                paced, and a subscription on another thread;
 *                                publish call -> fetch returned, p50/p99/p99.9
 *
 * The server is $NATS_URL (bench/nats.sh starts one). Each run uses a context
 * of its own and deletes its streams at the end. One line of key=value pairs
 * on stdout per run (bench/nats.sh parses it); progress and errors on stderr.
 * Latency method as bench/bus_bench.c: CLOCK_MONOTONIC right after sql_commit
 * returns and first thing in the handler, per event, subtracted after the run.
 */
#include "bus/bus.h"
#include "bus/consumer.h"
#include "bus/outbox.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "store/sql.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <nats/nats.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEYS 1024
#define PAD 120

static char ctx[32], type[96], pattern[96], stream[64];
static const char *url;
static char pad[PAD + 1];

static void die(const char *what, const pl_error *e)
{
    fprintf(stderr, "nats_bench: %s: %s\n", what, e && e->msg[0] ? e->msg : "failed");
    exit(1);
}

static void ndie(const char *what, natsStatus s)
{
    fprintf(stderr, "nats_bench: %s: %s (%s)\n", what, natsStatus_GetText(s), nats_GetLastError(NULL));
    exit(1);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static json_t *data_for(int64_t n) { return json_pack("{s:I, s:s}", "n", (json_int_t)n, "text", pad); }
static void key_for(int64_t n, char *buf, size_t sz) { snprintf(buf, sz, "user-%04d", (int)(n % KEYS)); }

/* N encoded events (ids, keys, bodies) as outbox_emit would make them. */
typedef struct evset {
    int64_t n;
    char (*ids)[40], (*keys)[32], **bodies;
    double bytes;
} evset;

static void evset_make(evset *s, int64_t n)
{
    s->n = n;
    s->ids = calloc((size_t)n, sizeof *s->ids);
    s->keys = calloc((size_t)n, sizeof *s->keys);
    s->bodies = calloc((size_t)n, sizeof *s->bodies);
    if (!s->ids || !s->keys || !s->bodies)
        abort();
    s->bytes = 0;
    for (int64_t i = 0; i < n; i++) {
        pl_error err = {0};
        cloudevent ev;
        key_for(i, s->keys[i], sizeof s->keys[i]);
        if (ce_new(&ev, "benchprod", type, s->keys[i], NULL, data_for(i), &err))
            die("ce_new", &err);
        s->bodies[i] = ce_encode(&ev);
        memcpy(s->ids[i], ev.id, sizeof ev.id);
        s->bytes += (double)strlen(s->bodies[i]);
        ce_clear(&ev);
    }
}

static void evset_free(evset *s)
{
    for (int64_t i = 0; i < s->n; i++)
        free(s->bodies[i]);
    free(s->bodies);
    free(s->ids);
    free(s->keys);
}

/* ---- raw libnats ------------------------------------------------------------------- */

static void raw_delete(const char *name)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (natsConnection_ConnectTo(&nc, url) != NATS_OK)
        return;
    if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK)
        js_DeleteStream(js, name, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

static int run_raw(int64_t n)
{
    evset ev;
    evset_make(&ev, n);
    char name[64], subj[64], filter[64];
    snprintf(name, sizeof name, "RAWBENCH_%d", (int)getpid());
    snprintf(subj, sizeof subj, "rawbench%d.>", (int)getpid());
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    if (s != NATS_OK)
        ndie("connect", s);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK)
        ndie("jetstream", s);
    const char *subjects[] = {subj};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = 120LL * 1000000000;
    jsStreamInfo *si = NULL;
    if ((s = js_AddStream(&si, js, &cfg, NULL, NULL)) != NATS_OK)
        ndie("add stream", s);
    jsStreamInfo_Destroy(si);

    double c0 = cpu_s();
    int64_t t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i++) {
        char ps[64];
        snprintf(ps, sizeof ps, "rawbench%d.ticked.%d", (int)getpid(), (int)(i % 4));
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = ev.ids[i];
        if ((s = js_PublishAsync(js, ps, ev.bodies[i], (int)strlen(ev.bodies[i]), &po)) != NATS_OK)
            ndie("publish", s);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK)
        ndie("publish complete", s);
    double pub_secs = (double)(time_mono_ns() - t0) / 1e9, pub_cpu = cpu_s() - c0;

    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = name;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.MaxAckPending = 4096;
    snprintf(filter, sizeof filter, "rawbench%d.>", (int)getpid());
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    if ((s = js_PullSubscribe(&sub, js, filter, "rawbench", &jo, &so, &jerr)) != NATS_OK)
        ndie("pull subscribe", s);
    c0 = cpu_s();
    t0 = time_mono_ns();
    int64_t got = 0;
    while (got < n) {
        natsMsgList list = {0};
        s = natsSubscription_Fetch(&list, sub, 256, 5000, &jerr);
        if (s != NATS_OK && s != NATS_TIMEOUT)
            ndie("fetch", s);
        for (int i = 0; i < list.Count; i++)
            natsMsg_Ack(list.Msgs[i], NULL);
        got += list.Count;
        natsMsgList_Destroy(&list);
        if (s == NATS_TIMEOUT)
            break;
    }
    double sub_secs = (double)(time_mono_ns() - t0) / 1e9, sub_cpu = cpu_s() - c0;
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    js_DeleteStream(js, name, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    printf("mode=raw events=%lld pub_per_s=%.0f pub_cpu_us=%.2f consume_per_s=%.0f consume_cpu_us=%.2f consumed=%lld"
           " body_bytes=%.0f\n",
           (long long)n, (double)n / pub_secs, pub_cpu * 1e6 / (double)n, (double)got / sub_secs,
           sub_cpu * 1e6 / (double)(got ? got : 1), (long long)got, ev.bytes / (double)n);
    evset_free(&ev);
    return got == n ? 0 : 1;
}

/* ---- Pulse: stores, outbox, relay, consumer ---------------------------------------------- */

static int64_t *commit_ns, *start_ns, cap;
static atomic_llong seen;

static void arrays(int64_t n)
{
    free(commit_ns);
    free(start_ns);
    commit_ns = calloc((size_t)n, sizeof *commit_ns);
    start_ns = calloc((size_t)n, sizeof *start_ns);
    if (!commit_ns || !start_ns)
        abort();
    cap = n;
    atomic_store(&seen, 0);
}

static int handle(void *c, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)c;
    int64_t t = time_mono_ns();
    int64_t n = json_integer_value(json_object_get(ev->data, "n"));
    if (n >= 0 && n < cap && !__atomic_load_n(&start_ns[n], __ATOMIC_RELAXED)) {
        __atomic_store_n(&start_ns[n], t, __ATOMIC_RELAXED);
        atomic_fetch_add(&seen, 1);
    }
    return sql_exec(tx, "INSERT INTO bench_sink (n, event_id) VALUES ($1, $2)", SQL_ARGS(SQL_INT(n), SQL_TEXT(ev->id)),
                    NULL, err);
}

static const char *patterns[2];
static consumer_def sink = {.name = "sink", .handle = handle};

typedef struct env {
    char dir[PATH_MAX];
    sql_db *prod, *cons;
    bus *bus;
    outbox_relay *relay;
    consumer *consumer;
} env;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
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
    if (sql_begin(db, SQL_TX_WRITE, &tx, &err) || sql_exec(tx, sql, SQL_NOARGS, NULL, &err) || sql_commit(tx, &err))
        die(sql, &err);
}

static void env_open(env *e, bool relay, bool cons)
{
    pl_error err = {0};
    memset(e, 0, sizeof *e);
    const char *tmp = getenv("TMPDIR");
    snprintf(e->dir, sizeof e->dir, "%s/pulse-natsbench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(e->dir)) {
        fprintf(stderr, "nats_bench: mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
    e->prod = open_store(e, "benchprod");
    e->cons = open_store(e, "benchcons");
    exec_one(e->cons, "CREATE TABLE bench_sink (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, event_id TEXT NOT NULL)");
    bus_options bo = {.data_dir = e->dir, .partitions = 4};
    if (bus_open(url, &bo, &e->bus, &err))
        die("bus_open", &err);
    if (relay && outbox_relay_start(e->prod, "benchprod", e->bus, &e->relay, &err))
        die("outbox_relay_start", &err);
    if (cons && consumer_start(e->bus, e->cons, "benchcons", &sink, NULL, NULL, &e->consumer, &err))
        die("consumer_start", &err);
}

static void env_close(env *e)
{
    consumer_stop(e->consumer);
    outbox_relay_stop(e->relay);
    bus_close(e->bus);
    sql_close(e->prod);
    sql_close(e->cons);
    nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int64_t emit_txn(env *e, int64_t from, int k, bool stamp)
{
    pl_error err = {0};
    sql_tx *tx;
    if (sql_begin(e->prod, SQL_TX_WRITE, &tx, &err))
        die("sql_begin", &err);
    for (int i = 0; i < k; i++) {
        char key[32];
        key_for(from + i, key, sizeof key);
        if (outbox_emit(tx, "benchprod", type, key, NULL, data_for(from + i), NULL, &err))
            die("outbox_emit", &err);
    }
    int64_t t0 = time_mono_ns();
    if (sql_commit(tx, &err))
        die("sql_commit", &err);
    int64_t t1 = time_mono_ns();
    for (int i = 0; stamp && i < k; i++)
        commit_ns[from + i] = t1;
    return t1 - t0;
}

static int64_t wait_seen(int64_t want, double timeout_s)
{
    int64_t deadline = time_mono_ns() + (int64_t)(timeout_s * 1e9);
    while (atomic_load(&seen) < want && time_mono_ns() < deadline)
        usleep(200);
    return atomic_load(&seen);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    k = k < 1 ? 1 : (k > n ? n : k);
    return (double)v[k - 1] / 1e6;
}

typedef struct lat {
    double p50, p99, p999, max, tail_p99;
} lat;

static lat latencies(int64_t n)
{
    lat l = {0};
    int64_t *v = malloc((size_t)n * sizeof *v);
    if (!v)
        abort();
    size_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (start_ns[i] && commit_ns[i])
            v[k++] = start_ns[i] > commit_ns[i] ? start_ns[i] - commit_ns[i] : 0;
    qsort(v, k, sizeof *v, cmp64);
    l.p50 = pct(v, k, 0.5);
    l.p99 = pct(v, k, 0.99);
    l.p999 = pct(v, k, 0.999);
    l.max = k ? (double)v[k - 1] / 1e6 : 0;
    size_t kt = 0;
    for (int64_t i = n - n / 4; i < n; i++)
        if (start_ns[i] && commit_ns[i])
            v[kt++] = start_ns[i] > commit_ns[i] ? start_ns[i] - commit_ns[i] : 0;
    qsort(v, kt, sizeof *v, cmp64);
    l.tail_p99 = pct(v, kt, 0.99);
    free(v);
    return l;
}

/* ---- modes ------------------------------------------------------------------------------- */

static int run_relay(int64_t n)
{
    env e;
    env_open(&e, false, false);
    for (int64_t i = 0; i < n; i += 1000)
        emit_txn(&e, i, (int)(n - i < 1000 ? n - i : 1000), false);
    pl_error err = {0};
    double c0 = cpu_s();
    int64_t t0 = time_mono_ns();
    if (outbox_relay_start(e.prod, "benchprod", e.bus, &e.relay, &err))
        die("outbox_relay_start", &err);
    int64_t deadline = t0 + 120 * (int64_t)1000000000;
    while (outbox_relay_published(e.relay) < n && time_mono_ns() < deadline)
        usleep(200);
    double secs = (double)(time_mono_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    int64_t pub = outbox_relay_published(e.relay);
    printf("mode=relay events=%lld published=%lld events_per_s=%.0f seconds=%.3f cpu_us_per_event=%.2f\n",
           (long long)n, (long long)pub, (double)pub / secs, secs, cpu * 1e6 / (double)n);
    env_close(&e);
    return pub == n ? 0 : 1;
}

static int run_consume(int64_t n)
{
    evset ev;
    evset_make(&ev, n);
    env e;
    env_open(&e, false, false);
    pl_error err = {0};
    int64_t t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i += 512) {
        bus_out out[512];
        int k = (int)(n - i < 512 ? n - i : 512);
        for (int j = 0; j < k; j++)
            out[j] = (bus_out){ev.ids[i + j], type, ev.keys[i + j], ev.bodies[i + j], strlen(ev.bodies[i + j])};
        if (bus_publish(e.bus, out, (size_t)k, &err))
            die("bus_publish", &err);
    }
    double pub_secs = (double)(time_mono_ns() - t0) / 1e9;
    bus_sub_options so = {.group = "bench.consume", .patterns = patterns};
    bus_sub *sub;
    if (bus_subscribe(e.bus, &so, &sub, &err))
        die("bus_subscribe", &err);
    bus_msg msgs[256];
    int64_t got = 0;
    double c0 = cpu_s();
    t0 = time_mono_ns();
    int64_t deadline = t0 + 120 * (int64_t)1000000000;
    while (got < n && time_mono_ns() < deadline) {
        size_t k = 0;
        if (bus_fetch(sub, msgs, 256, 500, &k, &err))
            die("bus_fetch", &err);
        for (size_t j = 0; j < k; j++)
            if (bus_ack(sub, &msgs[j], &err))
                die("bus_ack", &err);
        got += (int64_t)k;
    }
    double secs = (double)(time_mono_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    bus_unsubscribe(sub);
    printf("mode=consume events=%lld consumed=%lld events_per_s=%.0f cpu_us_per_event=%.2f publish_per_s=%.0f\n",
           (long long)n, (long long)got, (double)got / secs, cpu * 1e6 / (double)(got ? got : 1),
           (double)n / pub_secs);
    env_close(&e);
    evset_free(&ev);
    return got == n ? 0 : 1;
}

static void warm_up(env *e, int64_t n)
{
    arrays(n + 20);
    for (int i = 0; i < 20; i++)
        emit_txn(e, n + i, 1, true);
    if (wait_seen(20, 30) < 20) {
        fprintf(stderr, "nats_bench: warm-up events were not consumed within 30 s\n");
        exit(1);
    }
    arrays(n);
}

static int run_pipeline(int64_t n, int per_txn)
{
    env e;
    env_open(&e, true, true);
    warm_up(&e, n);
    double c0 = cpu_s();
    int64_t t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i += per_txn)
        emit_txn(&e, i, (int)(n - i < per_txn ? n - i : per_txn), true);
    int64_t t_emit = time_mono_ns();
    int64_t got = wait_seen(n, 120);
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++)
        last = start_ns[i] > last ? start_ns[i] : last;
    double secs = (double)(last - t0) / 1e9, cpu = cpu_s() - c0;
    lat l = latencies(n);
    printf("mode=pipeline events=%lld per_txn=%d consumed=%lld events_per_s=%.0f produce_per_s=%.0f"
           " cpu_us_per_event=%.2f lat_p50_ms=%.2f lat_p99_ms=%.2f\n",
           (long long)n, per_txn, (long long)got, (double)got / secs, (double)n / ((double)(t_emit - t0) / 1e9),
           cpu * 1e6 / (double)n, l.p50, l.p99);
    env_close(&e);
    return got == n ? 0 : 1;
}

static int run_latency(double rate, double secs)
{
    env e;
    env_open(&e, true, true);
    int64_t n = (int64_t)(rate * secs);
    warm_up(&e, n);
    int64_t interval = (int64_t)(1e9 / rate);
    double c0 = cpu_s();
    int64_t t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i++) {
        int64_t due = t0 + i * interval;
        struct timespec d = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL) == EINTR)
            ;
        emit_txn(&e, i, 1, true);
    }
    int64_t t_end = time_mono_ns();
    int64_t got = wait_seen(n, 60);
    double cpu = cpu_s() - c0, achieved = (double)n / ((double)(t_end - t0) / 1e9);
    lat l = latencies(n);
    const char *dump = getenv("NATS_BENCH_DUMP"); /* "commit_ns latency_ns" per event, for plots */
    FILE *df = dump && *dump ? fopen(dump, "w") : NULL;
    for (int64_t i = 0; df && i < n; i++)
        fprintf(df, "%lld %lld\n", (long long)(commit_ns[i] - t0), (long long)(start_ns[i] - commit_ns[i]));
    if (df)
        fclose(df);
    bool ok = got == n && achieved >= 0.97 * rate && l.tail_p99 < 50;
    printf("mode=latency rate=%.0f seconds=%.1f events=%lld achieved_per_s=%.0f consumed=%lld p50_ms=%.3f"
           " p99_ms=%.3f p999_ms=%.3f max_ms=%.3f tail_p99_ms=%.3f cpu_us_per_event=%.2f sustainable=%d\n",
           rate, secs, (long long)n, achieved, (long long)got, l.p50, l.p99, l.p999, l.max, l.tail_p99,
           cpu * 1e6 / (double)n, ok);
    env_close(&e);
    return 0;
}

typedef struct buslat {
    bus *b;
    int64_t n, *recv;
    atomic_bool stop;
    atomic_llong got;
} buslat;

static void *buslat_consumer(void *arg)
{
    buslat *x = arg;
    bus_sub_options so = {.group = "bench.buslat", .patterns = patterns};
    bus_sub *sub;
    pl_error err = {0};
    if (bus_subscribe(x->b, &so, &sub, &err))
        die("bus_subscribe", &err);
    bus_msg msgs[256];
    while (!atomic_load(&x->stop)) {
        size_t k = 0;
        if (bus_fetch(sub, msgs, 256, 200, &k, &err))
            continue;
        int64_t t = time_mono_ns();
        for (size_t j = 0; j < k; j++) {
            json_error_t je;
            json_t *ev = json_loadb(msgs[j].body, msgs[j].body_len, 0, &je);
            int64_t i = json_integer_value(json_object_get(json_object_get(ev, "data"), "n"));
            json_decref(ev);
            if (i >= 0 && i < x->n && !x->recv[i]) {
                x->recv[i] = t;
                atomic_fetch_add(&x->got, 1);
            }
            bus_ack(sub, &msgs[j], &err);
        }
    }
    bus_unsubscribe(sub);
    return NULL;
}

static int run_buslat(double rate, double secs)
{
    int64_t n = (int64_t)(rate * secs);
    evset ev;
    evset_make(&ev, n);
    env e;
    env_open(&e, false, false);
    arrays(n);
    buslat x = {.b = e.bus, .n = n, .recv = start_ns};
    pthread_t th;
    pthread_create(&th, NULL, buslat_consumer, &x);
    usleep(1000000); /* the subscription takes its partitions */
    int64_t interval = (int64_t)(1e9 / rate), t0 = time_mono_ns();
    for (int64_t i = 0; i < n; i++) {
        int64_t due = t0 + i * interval;
        struct timespec d = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL) == EINTR)
            ;
        bus_out o = {ev.ids[i], type, ev.keys[i], ev.bodies[i], strlen(ev.bodies[i])};
        pl_error err = {0};
        commit_ns[i] = time_mono_ns();
        if (bus_publish(e.bus, &o, 1, &err))
            die("bus_publish", &err);
    }
    int64_t deadline = time_mono_ns() + 60 * (int64_t)1000000000;
    while (atomic_load(&x.got) < n && time_mono_ns() < deadline)
        usleep(1000);
    atomic_store(&x.stop, true);
    pthread_join(th, NULL);
    lat l = latencies(n);
    printf("mode=buslat rate=%.0f events=%lld consumed=%lld p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n", rate,
           (long long)n, (long long)atomic_load(&x.got), l.p50, l.p99, l.p999, l.max);
    env_close(&e);
    evset_free(&ev);
    return atomic_load(&x.got) == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    log_set_level(LOG_WARN);
    memset(pad, 'x', PAD);
    url = getenv("NATS_URL");
    if (!url || !*url) {
        fprintf(stderr, "nats_bench: set NATS_URL (bench/nats.sh starts a server)\n");
        return 2;
    }
    snprintf(ctx, sizeof ctx, "nb%x%04x", (unsigned)getpid(), (unsigned)(time_mono_ns() & 0xffff));
    snprintf(type, sizeof type, "pl.%s.ticked.v1", ctx);
    snprintf(pattern, sizeof pattern, "pl.%s.*", ctx);
    snprintf(stream, sizeof stream, "PL_");
    for (const char *p = ctx; *p; p++)
        snprintf(stream + strlen(stream), sizeof stream - strlen(stream), "%c", *p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    patterns[0] = pattern;
    sink.types = patterns;
    int rc = 2;
    if (argc == 3 && strcmp(argv[1], "raw") == 0)
        rc = run_raw(atoll(argv[2]));
    else if (argc == 3 && strcmp(argv[1], "relay") == 0)
        rc = run_relay(atoll(argv[2]));
    else if (argc == 3 && strcmp(argv[1], "consume") == 0)
        rc = run_consume(atoll(argv[2]));
    else if (argc == 4 && strcmp(argv[1], "pipeline") == 0)
        rc = run_pipeline(atoll(argv[2]), atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
    else if (argc == 4 && strcmp(argv[1], "buslat") == 0)
        rc = run_buslat(atof(argv[2]), atof(argv[3]));
    else if (argc == 4 && strcmp(argv[1], "latency") == 0)
        rc = run_latency(atof(argv[2]), atof(argv[3]));
    else
        fprintf(stderr, "usage: nats_bench raw N | relay N | consume N | pipeline N PER_TXN | latency RATE SECS |"
                        " buslat RATE SECS\n");
    if (rc != 2)
        raw_delete(stream);
    return rc;
}
