/*
 * bus_conformance.c - the event bus contract (src/bus/bus.h), held against
 * every engine by the same cases.
 *
 * Every BUS_CASE runs twice: suite bus_embedded (always, on a temporary data
 * directory) and suite bus_nats (when PULSE_TEST_NATS_URL names a NATS server
 * with JetStream; skipped with a message otherwise). Each case publishes into
 * a context of its own ("pl.t<random>.…"), and on NATS also works in a
 * server.namespace of its own, so cases run in parallel on one server and
 * see only their own dead letters; its streams and bucket are deleted at the
 * end. A second "instance" of a group is a second bus handle, as a second
 * process would have; a killed instance is a forked process killed with
 * SIGKILL in the middle of a batch.
 *
 * Suite bus_nats_only holds what only the JetStream engine promises
 * (namespaces on a shared server). Suite bus_nats_fault stops and starts the
 * server itself, so it runs only when PULSE_TEST_NATS_FAULTS=1 and
 * PULSE_TEST_ENGINES_DIR name engines started by scripts/engines.sh, alone
 * (make test-conformance runs it after the others).
 *
 * The consumer framework's batching (src/bus/consumer.h: flush, and
 * CONSUMER_NO_INBOX) is held here too, on both buses, with an SQLite inbox.
 */
#include "bus/bus.h"
#include "bus/cloudevent.h"
#include "bus/consumer.h"
#include "store/sql.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- fixture ---------------------------------------------------------------- */

static struct {
    bool nats;
    char dir[64];
    char ctx[32];
    char ns[32];      /* NATS: server.namespace of the case (its context) */
    char type[96], type2[96], dlq_pattern[96], all_pattern[96];
    bus *b;
} fx;

static const char *nats_url(void)
{
    const char *u = getenv("PULSE_TEST_NATS_URL");
    return u && *u ? u : NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bus *open_ns(const char *ns)
{
    bus_options o = {.data_dir = fx.dir, .partitions = 4, .ns = ns};
    bus *b = NULL;
    pl_error err = {0};
    int rc = bus_open(fx.nats ? nats_url() : "", &o, &b, &err);
    cr_assert_eq(rc, 0, "bus_open: %d %s", rc, err.msg);
    return b;
}

static bus *open_handle(void) { return open_ns(fx.ns); }

/* Names for the case; opens nothing (a case that forks opens after the fork). */
static void fx_prepare(bool nats)
{
    memset(&fx, 0, sizeof fx);
    fx.nats = nats;
    if (nats && !nats_url())
        cr_skip_test("PULSE_TEST_NATS_URL is not set: NATS JetStream cases skipped "
                     "(make test-conformance starts a server and sets it)");
    if (!nats) {
        snprintf(fx.dir, sizeof fx.dir, "/tmp/pulse-busconf-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir));
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    snprintf(fx.ctx, sizeof fx.ctx, "t%04x%06x", (unsigned)getpid() & 0xffff, (unsigned)rand() & 0xffffff);
    if (nats)
        snprintf(fx.ns, sizeof fx.ns, "%s", fx.ctx);
    snprintf(fx.type, sizeof fx.type, "pl.%s.happened.v1", fx.ctx);
    snprintf(fx.type2, sizeof fx.type2, "pl.%s.other_thing.v1", fx.ctx);
    snprintf(fx.dlq_pattern, sizeof fx.dlq_pattern, "pl.%s.*.dlq", fx.ctx);
    snprintf(fx.all_pattern, sizeof fx.all_pattern, "pl.%s.*", fx.ctx);
}

static void fx_open(bool nats)
{
    fx_prepare(nats);
    fx.b = open_handle();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* NATS: everything a namespace created goes (streams, consumers, the lease bucket). */
static void nats_drop_ns(const char *ns)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (natsConnection_ConnectTo(&nc, nats_url()) != NATS_OK)
        return;
    if (natsConnection_JetStream(&js, nc, NULL) == NATS_OK) {
        char pre[48], kv[64];
        snprintf(pre, sizeof pre, "%s%s", ns, *ns ? "-" : "");
        snprintf(kv, sizeof kv, "KV_%sPULSE_LEASES", pre);
        jsStreamNamesList *list = NULL;
        if (js_StreamNames(&list, js, NULL, NULL) == NATS_OK) {
            for (int i = 0; i < list->Count; i++) {
                const char *n = list->List[i];
                char own[96];
                snprintf(own, sizeof own, "%sPL_%s", pre, fx.ctx);
                bool mine = *ns ? strncmp(n, pre, strlen(pre)) == 0 || strcmp(n, kv) == 0
                                : strcasecmp(n, own) == 0; /* without a namespace: only the case's own stream */
                if (mine)
                    js_DeleteStream(js, n, NULL, NULL);
            }
            jsStreamNamesList_Destroy(list);
        }
        jsCtx_Destroy(js);
    }
    natsConnection_Destroy(nc);
}

static void fx_close(void)
{
    bus_close(fx.b);
    fx.b = NULL;
    if (fx.nats && nats_url() && fx.ns[0])
        nats_drop_ns(fx.ns);
    if (fx.dir[0])
        nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#define BUS_CASE(name)                                                                                     \
    static void case_##name(void);                                                                         \
    Test(bus_embedded, name, .fini = fx_close, .timeout = 120) { fx_open(false); case_##name(); }           \
    Test(bus_nats, name, .fini = fx_close, .timeout = 120) { fx_open(true); case_##name(); }                \
    static void case_##name(void)

/* ---- helpers ------------------------------------------------------------------ */

/* Group names start with the case's context (NATS cleanup finds them by it). */
static const char *group(const char *suffix)
{
    static __thread char g[4][96];
    static __thread int k;
    char *out = g[k++ % 4];
    snprintf(out, 96, "%s.%s", fx.ctx, suffix);
    return out;
}

/* Publishes events n = from .. from+count-1 of `type`, key "k<n % nkeys>", in one batch. */
static void publish_on(bus *b, const char *type, int from, int count, int nkeys, char (*ids)[40])
{
    bus_out *out = calloc((size_t)count, sizeof *out);
    char **bodies = calloc((size_t)count, sizeof *bodies);
    cloudevent *evs = calloc((size_t)count, sizeof *evs);
    cr_assert(out && bodies && evs);
    for (int i = 0; i < count; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", (from + i) % nkeys);
        pl_error err = {0};
        int rc = ce_new(&evs[i], "conf", type, key, key, json_pack("{s:i, s:s}", "n", from + i, "key", key), &err);
        cr_assert_eq(rc, 0, "ce_new: %s", err.msg);
        bodies[i] = ce_encode(&evs[i]);
        out[i] = (bus_out){evs[i].id, evs[i].type, evs[i].partitionkey, bodies[i], strlen(bodies[i])};
        if (ids)
            memcpy(ids[i], evs[i].id, 40);
    }
    pl_error err = {0};
    int rc = bus_publish(b, out, (size_t)count, &err);
    cr_assert_eq(rc, 0, "bus_publish: %d %s", rc, err.msg);
    for (int i = 0; i < count; i++) {
        free(bodies[i]);
        ce_clear(&evs[i]);
    }
    free(out);
    free(bodies);
    free(evs);
}

static void publish(int from, int count, int nkeys) { publish_on(fx.b, fx.type, from, count, nkeys, NULL); }

static bus_sub *subscribe_on(bus *b, const char *grp, const char *const *patterns, int max_deliver, int64_t lease_ms)
{
    bus_sub_options o = {.group = grp, .patterns = patterns, .max_deliver = max_deliver, .lease_ms = lease_ms};
    bus_sub *s = NULL;
    pl_error err = {0};
    int rc = bus_subscribe(b, &o, &s, &err);
    cr_assert_eq(rc, 0, "bus_subscribe %s: %d %s", grp, rc, err.msg);
    return s;
}

static bus_sub *subscribe(const char *grp)
{
    const char *patterns[] = {fx.all_pattern, NULL};
    return subscribe_on(fx.b, grp, patterns, 0, 0);
}

typedef struct got {
    uint64_t seq;
    int n, deliveries, partition;
    int64_t redrive_id;
    char key[16], id[40], type[CE_TYPE_MAX + 8];
    json_t *data; /* data of the event (owned) */
} got;

static void got_from(got *g, const bus_msg *m)
{
    memset(g, 0, sizeof *g);
    g->seq = m->seq;
    g->deliveries = m->deliveries;
    g->partition = m->partition;
    g->redrive_id = m->redrive_id;
    snprintf(g->id, sizeof g->id, "%s", m->id);
    snprintf(g->type, sizeof g->type, "%s", m->type);
    json_error_t je;
    json_t *ev = json_loadb(m->body, m->body_len, 0, &je);
    cr_assert_not_null(ev, "body is not JSON: %.*s", (int)m->body_len, m->body);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "id")), m->id, "bus_msg.id is the event's id");
    g->data = json_incref(json_object_get(ev, "data"));
    g->n = (int)json_integer_value(json_object_get(g->data, "n"));
    const char *k = json_string_value(json_object_get(g->data, "key"));
    snprintf(g->key, sizeof g->key, "%s", k ? k : "");
    json_decref(ev);
}

static void got_free(got *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(g[i].data);
}

/* Fetches (acking everything) until `want` messages or timeout_ms; returns how many. */
static size_t drain(bus_sub *s, got *out, size_t want, int timeout_ms)
{
    size_t have = 0;
    int64_t deadline = now_ms() + timeout_ms;
    bus_msg msgs[64];
    while (have < want && now_ms() < deadline) {
        size_t n = 0;
        pl_error err = {0};
        /* never more than still wanted: whatever is fetched is acked */
        int rc = bus_fetch(s, msgs, want - have < 64 ? want - have : 64, 200, &n, &err);
        cr_assert_eq(rc, 0, "bus_fetch: %d %s", rc, err.msg);
        for (size_t i = 0; i < n; i++) {
            got_from(&out[have++], &msgs[i]);
            rc = bus_ack(s, &msgs[i], &err);
            cr_assert_eq(rc, 0, "bus_ack: %d %s", rc, err.msg);
        }
    }
    return have;
}

/* Fetches once (up to timeout_ms for the first message), settling nothing. */
static size_t fetch(bus_sub *s, bus_msg *msgs, size_t max, int timeout_ms)
{
    size_t n = 0;
    pl_error err = {0};
    int rc = bus_fetch(s, msgs, max, timeout_ms, &n, &err);
    cr_assert_eq(rc, 0, "bus_fetch: %d %s", rc, err.msg);
    return n;
}

/* Fetches until a message comes or timeout_ms passes. */
static size_t fetch_some(bus_sub *s, bus_msg *msgs, size_t max, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t n = 0;
    while (!n && now_ms() < deadline)
        n = fetch(s, msgs, max, 200);
    return n;
}

/* Every key's events arrive in increasing n. */
static void assert_key_order(const got *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(g[i].key, g[j].key) == 0)
                cr_assert_lt(g[i].n, g[j].n, "key %s: event %d came before %d", g[i].key, g[i].n, g[j].n);
}

static bus_dead *find_dead(const char *grp, const char *event_id, size_t *count)
{
    bus_dead *d = NULL;
    size_t n = 0;
    pl_error err = {0};
    int rc = bus_dead_list(fx.b, &d, &n, &err);
    cr_assert_eq(rc, 0, "bus_dead_list: %s", err.msg);
    static bus_dead found;
    bool ok = false;
    if (count)
        *count = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d[i].group, grp) != 0)
            continue;
        if (count)
            (*count)++;
        if (!ok && (!event_id || strcmp(d[i].event_id, event_id) == 0)) {
            found = d[i];
            ok = true;
        }
    }
    free(d);
    return ok ? &found : NULL;
}

/* ---- cases ------------------------------------------------------------------------ */

/* A batch comes back whole, in publish order, once, to a group created afterwards. */
BUS_CASE(publish_batch_fetch_all_in_order)
{
    char ids[200][40];
    publish_on(fx.b, fx.type, 0, 200, 1, ids); /* one key: one partition, total order */
    bus_sub *s = subscribe(group("g"));
    got g[200];
    size_t n = drain(s, g, 200, 10000);
    cr_assert_eq(n, 200, "got %zu of 200", n);
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(g[i].n, i, "position %d holds event %d", i, g[i].n);
        cr_assert_str_eq(g[i].id, ids[i]);
        cr_assert_str_eq(g[i].type, fx.type);
        cr_assert_eq(g[i].deliveries, 1);
        if (i)
            cr_assert_gt(g[i].seq, g[i - 1].seq, "seq grows with publish order");
    }
    bus_msg extra[4];
    cr_assert_eq(fetch(s, extra, 4, 300), 0, "nothing more");
    got_free(g, n);

    /* many keys: every key in order, nothing lost or doubled */
    publish(1000, 300, 7);
    got h[300];
    n = drain(s, h, 300, 10000);
    cr_assert_eq(n, 300);
    assert_key_order(h, n);
    bool seen[300] = {0};
    for (size_t i = 0; i < n; i++) {
        cr_assert(h[i].n >= 1000 && h[i].n < 1300);
        cr_assert_not(seen[h[i].n - 1000], "event %d twice", h[i].n);
        seen[h[i].n - 1000] = true;
    }
    cr_assert_eq(fetch(s, extra, 4, 300), 0);
    got_free(h, n);
    bus_unsubscribe(s);
}

BUS_CASE(duplicate_ids_are_dropped)
{
    char ids[10][40];
    publish_on(fx.b, fx.type, 0, 10, 3, ids);
    /* the same events again (a relay retrying a batch), plus one new */
    bus_out out[11];
    char *bodies[11];
    for (int i = 0; i < 11; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/pulse/conf\",\"type\":\"%s\",\"subject\":\"k\","
                 "\"time\":\"2024-01-01T00:00:00Z\",\"datacontenttype\":\"application/json\",\"data\":{\"n\":%d,"
                 "\"key\":\"k%d\"},\"partitionkey\":\"k%d\"}",
                 i < 10 ? ids[i] : "01890000-0000-7000-8000-000000000001", fx.type, i < 10 ? i : 10, i % 3, i % 3);
        bodies[i] = strdup(body);
        out[i] = (bus_out){i < 10 ? ids[i] : "01890000-0000-7000-8000-000000000001", fx.type, "k", bodies[i],
                           strlen(bodies[i])};
    }
    pl_error err = {0};
    cr_assert_eq(bus_publish(fx.b, out, 11, &err), 0, "%s", err.msg);
    cr_assert_eq(bus_publish(fx.b, out, 11, &err), 0, "%s", err.msg);
    for (int i = 0; i < 11; i++)
        free(bodies[i]);
    bus_sub *s = subscribe(group("g"));
    got g[32];
    size_t n = drain(s, g, 32, 3000);
    cr_assert_eq(n, 11, "each id once: got %zu", n);
    got_free(g, n);
    bus_unsubscribe(s);
}

BUS_CASE(two_groups_each_get_everything)
{
    bus_sub *a = subscribe(group("a")), *b = subscribe(group("b"));
    publish(0, 120, 5);
    got ga[120], gb[120];
    size_t na = drain(a, ga, 120, 10000), nb = drain(b, gb, 120, 10000);
    cr_assert_eq(na, 120);
    cr_assert_eq(nb, 120);
    assert_key_order(ga, na);
    assert_key_order(gb, nb);
    got_free(ga, na);
    got_free(gb, nb);
    bus_unsubscribe(a);
    bus_unsubscribe(b);
}

/* ---- two instances of one group ---- */

typedef struct shared_log {
    pthread_mutex_t mu;
    int total, cap;
    int *n, *who;
    char (*key)[16];
} shared_log;

typedef struct inst {
    bus_sub *s;
    int id;
    shared_log *log;
    atomic_int handled;
    atomic_bool stop;
} inst;

/* n and key of an event, without asserting (this runs on the instances' threads) */
static void n_key(const bus_msg *m, int *n, char key[16])
{
    json_error_t je;
    json_t *ev = json_loadb(m->body, m->body_len, 0, &je);
    json_t *data = json_object_get(ev, "data");
    *n = (int)json_integer_value(json_object_get(data, "n"));
    const char *k = json_string_value(json_object_get(data, "key"));
    snprintf(key, 16, "%s", k ? k : "?");
    json_decref(ev);
}

static void *run_instance(void *arg)
{
    inst *in = arg;
    bus_msg msgs[16];
    while (!atomic_load(&in->stop)) {
        size_t n = 0;
        pl_error err = {0};
        if (bus_fetch(in->s, msgs, 16, 100, &n, &err)) {
            usleep(20000);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            int en;
            char key[16];
            n_key(&msgs[i], &en, key);
            pthread_mutex_lock(&in->log->mu);
            if (in->log->total < in->log->cap) {
                in->log->n[in->log->total] = en;
                in->log->who[in->log->total] = in->id;
                snprintf(in->log->key[in->log->total], 16, "%s", key);
                in->log->total++;
            }
            pthread_mutex_unlock(&in->log->mu);
            usleep(200); /* a little work, so the other instance gets a chance */
            bus_ack(in->s, &msgs[i], &err);
            atomic_fetch_add(&in->handled, 1);
        }
    }
    return NULL;
}

static void log_init(shared_log *l, int cap)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    l->cap = cap;
    l->n = calloc((size_t)cap, sizeof *l->n);
    l->who = calloc((size_t)cap, sizeof *l->who);
    l->key = calloc((size_t)cap, sizeof *l->key);
}

/* Every event 0..count-1 in the log once, each key in order (processing order across instances). */
static void log_check(shared_log *l, int count, bool once)
{
    int *seen = calloc((size_t)count, sizeof *seen);
    for (int i = 0; i < l->total; i++) {
        cr_assert(l->n[i] >= 0 && l->n[i] < count);
        seen[l->n[i]]++;
    }
    for (int i = 0; i < count; i++) {
        cr_assert_geq(seen[i], 1, "event %d was skipped", i);
        if (once)
            cr_assert_eq(seen[i], 1, "event %d was seen %d times", i, seen[i]);
    }
    /* per key: the last occurrence of each event in processing order must be increasing once
     * duplicates (redeliveries of unsettled work) are set aside */
    for (int i = 0; i < l->total; i++)
        for (int j = i + 1; j < l->total; j++)
            if (strcmp(l->key[i], l->key[j]) == 0 && l->n[i] > l->n[j])
                cr_assert_fail("key %s: event %d (instance %d) was applied after %d (instance %d)", l->key[i], l->n[j],
                               l->who[j], l->n[i], l->who[i]);
    free(seen);
}

static void log_free(shared_log *l)
{
    free(l->n);
    free(l->who);
    free(l->key);
    pthread_mutex_destroy(&l->mu);
}

BUS_CASE(instances_share_work_in_key_order)
{
    const char *patterns[] = {fx.all_pattern, NULL};
    bus *b2 = open_handle();
    shared_log log;
    log_init(&log, 4000);
    inst a = {.s = subscribe_on(fx.b, group("g"), patterns, 0, 900), .id = 1, .log = &log};
    inst b = {.s = subscribe_on(b2, group("g"), patterns, 0, 900), .id = 2, .log = &log};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run_instance, &a);
    pthread_create(&tb, NULL, run_instance, &b);
    usleep(2500 * 1000); /* both join and divide the partitions */
    const int count = 800;
    for (int i = 0; i < count; i += 100) {
        publish(i, 100, 16);
        usleep(100 * 1000);
    }
    int64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        pthread_mutex_lock(&log.mu);
        int t = log.total;
        pthread_mutex_unlock(&log.mu);
        if (t >= count)
            break;
        usleep(20000);
    }
    usleep(500 * 1000); /* anything doubled would show up now */
    atomic_store(&a.stop, true);
    atomic_store(&b.stop, true);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_log_info("instance 1 handled %d, instance 2 handled %d", atomic_load(&a.handled), atomic_load(&b.handled));
    log_check(&log, count, true);
    cr_assert_gt(atomic_load(&a.handled), 0, "instance 1 got no work");
    cr_assert_gt(atomic_load(&b.handled), 0, "instance 2 got no work");
    bus_unsubscribe(a.s);
    bus_unsubscribe(b.s);
    bus_close(b2);
    log_free(&log);
}

BUS_CASE(unsubscribed_instance_hands_over_without_skipping)
{
    const char *patterns[] = {fx.all_pattern, NULL};
    bus *b2 = open_handle();
    const int count = 300;
    publish(0, count, 8);
    shared_log log;
    log_init(&log, 4000);
    inst a = {.s = subscribe_on(fx.b, group("g"), patterns, 0, 900), .id = 1, .log = &log};
    pthread_t ta;
    pthread_create(&ta, NULL, run_instance, &a);
    while (atomic_load(&a.handled) < 60)
        usleep(1000);
    /* the second instance joins while the first is mid-stream, then the first leaves */
    inst b = {.s = subscribe_on(b2, group("g"), patterns, 0, 900), .id = 2, .log = &log};
    pthread_t tb;
    pthread_create(&tb, NULL, run_instance, &b);
    usleep(50 * 1000);
    atomic_store(&a.stop, true);
    pthread_join(ta, NULL);
    bus_unsubscribe(a.s);
    int64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        pthread_mutex_lock(&log.mu);
        int t = log.total;
        pthread_mutex_unlock(&log.mu);
        if (t >= count)
            break;
        usleep(20000);
    }
    usleep(300 * 1000);
    atomic_store(&b.stop, true);
    pthread_join(tb, NULL);
    cr_log_info("instance 1 handled %d before leaving, instance 2 %d", atomic_load(&a.handled),
                atomic_load(&b.handled));
    log_check(&log, count, false);
    bus_unsubscribe(b.s);
    bus_close(b2);
    log_free(&log);
}

/* ---- retries and dead letters ---- */

BUS_CASE(nak_with_delay_redelivers_after_the_delay)
{
    bus_sub *s = subscribe(group("g"));
    publish(0, 3, 1); /* one key: 0, 1, 2 in order */
    bus_msg m[8];
    size_t n = fetch_some(s, m, 8, 5000);
    cr_assert_geq(n, 1);
    got first;
    got_from(&first, &m[0]);
    cr_assert_eq(first.n, 0);
    cr_assert_eq(first.deliveries, 1);
    pl_error err = {0};
    int64_t t0 = now_ms();
    cr_assert_eq(bus_nak(s, &m[0], 600, "not yet", &err), 0, "%s", err.msg);
    for (size_t i = 1; i < n; i++) /* settling the partition's later messages after a nak is a no-op */
        cr_assert_eq(bus_ack(s, &m[i], &err), 0);
    /* the partition is paused: nothing of it before the delay */
    n = fetch(s, m, 8, 300);
    cr_assert_eq(n, 0, "the partition was paused, yet %zu came", n);
    got g[3];
    size_t k = 0;
    int64_t deadline = now_ms() + 10000;
    while (k < 3 && now_ms() < deadline) {
        n = fetch(s, m, 8, 200);
        for (size_t i = 0; i < n; i++) {
            if (k == 0)
                cr_assert_geq(now_ms() - t0, 590, "redelivered after %lld ms, before the 600 ms delay",
                              (long long)(now_ms() - t0));
            got_from(&g[k++], &m[i]);
            cr_assert_eq(bus_ack(s, &m[i], &err), 0);
        }
    }
    cr_assert_eq(k, 3, "got %zu of 3 after the delay", k);
    cr_assert_eq(g[0].n, 0, "the nak'd event comes first");
    cr_assert_str_eq(g[0].id, first.id);
    cr_assert_eq(g[0].deliveries, 2);
    cr_assert_eq(g[1].n, 1);
    cr_assert_eq(g[2].n, 2);
    json_decref(first.data);
    got_free(g, k);
    bus_unsubscribe(s);
}

BUS_CASE(max_deliver_dead_letters_and_the_stream_flows_on)
{
    const char *patterns[] = {fx.all_pattern, NULL}, *dlq[] = {fx.dlq_pattern, NULL};
    const char *g = group("failing");
    bus_sub *s = subscribe_on(fx.b, g, patterns, 2, 0);
    bus_sub *w = subscribe_on(fx.b, group("watch"), dlq, 0, 0);
    int64_t dead0 = 0;
    pl_error err = {0};
    cr_assert_eq(bus_dead_count(fx.b, &dead0, &err), 0, "%s", err.msg);
    char ids[2][40];
    publish_on(fx.b, fx.type, 0, 2, 1, ids);
    bus_msg m[8];
    for (int attempt = 1; attempt <= 2; attempt++) {
        size_t n = fetch_some(s, m, 8, 5000);
        cr_assert_geq(n, 1, "delivery %d did not come", attempt);
        got x;
        got_from(&x, &m[0]);
        cr_assert_eq(x.n, 0);
        cr_assert_eq(x.deliveries, attempt);
        json_decref(x.data);
        char why[32];
        snprintf(why, sizeof why, "boom %d", attempt);
        cr_assert_eq(bus_nak(s, &m[0], 0, why, &err), 0, "%s", err.msg);
    }
    /* the partition moves on */
    got next[1];
    cr_assert_eq(drain(s, next, 1, 5000), 1, "the event after the dead one did not come");
    cr_assert_eq(next[0].n, 1);
    got_free(next, 1);
    /* parking lot */
    bus_dead *d = find_dead(g, ids[0], NULL);
    cr_assert_not_null(d, "no dead letter listed for %s", ids[0]);
    cr_assert_str_eq(d->type, fx.type);
    cr_assert_eq(d->deliveries, 2);
    cr_assert_str_eq(d->error, "boom 2");
    cr_assert_gt(d->id, 0);
    cr_assert(d->dead_at[0]);
    int64_t dead1 = 0;
    cr_assert_eq(bus_dead_count(fx.b, &dead1, &err), 0);
    cr_assert_geq(dead1, dead0 + 1);
    /* "<type>.dlq" was published, for the patterns that ask for dead letters only */
    got dl[1];
    cr_assert_eq(drain(w, dl, 1, 5000), 1, "no .dlq event");
    char want[128];
    snprintf(want, sizeof want, "%s.dlq", fx.type);
    cr_assert_str_eq(dl[0].type, want);
    json_t *data = dl[0].data;
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(data, "event"), "id")), ids[0]);
    cr_assert_str_eq(json_string_value(json_object_get(data, "error")), "boom 2");
    cr_assert_str_eq(json_string_value(json_object_get(data, "consumer")), g);
    cr_assert_eq(json_integer_value(json_object_get(data, "deliveries")), 2);
    got_free(dl, 1);
    bus_msg extra[2];
    cr_assert_eq(fetch(s, extra, 2, 300), 0, "the dead letter is not delivered to its own group again");
    cr_assert_eq(bus_dead_drop(fx.b, d->id, &err), 0);
    bus_unsubscribe(s);
    bus_unsubscribe(w);
}

BUS_CASE(term_dead_letters_at_once_and_retry_redrives_to_that_group_only)
{
    const char *g = group("failing"), *h = group("healthy");
    bus_sub *s = subscribe(g), *o = subscribe(h);
    char ids[1][40];
    publish_on(fx.b, fx.type, 0, 1, 1, ids);
    got x[1];
    cr_assert_eq(drain(o, x, 1, 5000), 1);
    got_free(x, 1);
    bus_msg m[4];
    cr_assert_geq(fetch_some(s, m, 4, 5000), 1);
    pl_error err = {0};
    cr_assert_eq(bus_term(s, &m[0], "cannot apply", &err), 0, "%s", err.msg);
    bus_dead *d = find_dead(g, ids[0], NULL);
    cr_assert_not_null(d);
    cr_assert_eq(d->deliveries, 1);
    cr_assert_str_eq(d->error, "cannot apply");
    int64_t id = d->id;

    int count = 0;
    cr_assert_eq(bus_dead_retry(fx.b, id, &count, &err), 0, "%s", err.msg);
    cr_assert_eq(count, 1);
    cr_assert_null(find_dead(g, ids[0], NULL), "a re-driven dead letter leaves the parking lot");
    size_t n = fetch_some(s, m, 4, 5000);
    cr_assert_eq(n, 1, "the re-drive did not come to the failing group");
    cr_assert_gt(m[0].redrive_id, 0);
    cr_assert_str_eq(m[0].id, ids[0]);
    cr_assert_eq(fetch(o, m + 1, 3, 500), 0, "a re-drive must not reach other groups");
    /* it fails again: dead again, a new record */
    cr_assert_eq(bus_nak(s, &m[0], 100, "still broken", &err), 0, "%s", err.msg);
    d = find_dead(g, ids[0], NULL);
    cr_assert_not_null(d, "a failing re-drive is dead-lettered again");
    cr_assert_str_eq(d->error, "still broken");
    cr_assert_neq(d->id, id);
    /* this time it works */
    cr_assert_eq(bus_dead_retry(fx.b, d->id, &count, &err), 0, "%s", err.msg);
    n = fetch_some(s, m, 4, 5000);
    cr_assert_eq(n, 1);
    cr_assert_eq(bus_ack(s, &m[0], &err), 0);
    cr_assert_eq(fetch(s, m, 4, 300), 0);
    cr_assert_null(find_dead(g, NULL, NULL));
    cr_assert_eq(bus_dead_retry(fx.b, 999999999, &count, &err), PL_ENOTFOUND);
    bus_unsubscribe(s);
    bus_unsubscribe(o);
}

BUS_CASE(dead_letters_can_be_dropped)
{
    const char *g = group("g");
    bus_sub *s = subscribe(g);
    char ids[1][40];
    publish_on(fx.b, fx.type, 0, 1, 1, ids);
    bus_msg m[4];
    cr_assert_geq(fetch_some(s, m, 4, 5000), 1);
    pl_error err = {0};
    cr_assert_eq(bus_term(s, &m[0], "poison", &err), 0, "%s", err.msg);
    bus_dead *d = find_dead(g, ids[0], NULL);
    cr_assert_not_null(d);
    int64_t id = d->id;
    cr_assert_eq(bus_dead_drop(fx.b, id, &err), 0, "%s", err.msg);
    cr_assert_null(find_dead(g, ids[0], NULL));
    cr_assert_eq(bus_dead_drop(fx.b, id, &err), PL_ENOTFOUND);
    bus_unsubscribe(s);
}

/* ---- replay, lag, tail ---- */

BUS_CASE(reset_replays_from_the_start)
{
    const char *g = group("proj");
    bus_sub *s = subscribe(g);
    publish(0, 40, 4);
    got a[40];
    cr_assert_eq(drain(s, a, 40, 10000), 40);
    got_free(a, 40);
    bus_msg m[4];
    cr_assert_eq(fetch(s, m, 4, 300), 0);
    pl_error err = {0};
    /* a running instance notices */
    cr_assert_eq(bus_reset(fx.b, g, &err), 0, "%s", err.msg);
    got b[40];
    size_t n = drain(s, b, 40, 10000);
    cr_assert_eq(n, 40, "replay to a running instance: got %zu of 40", n);
    assert_key_order(b, n);
    got_free(b, n);
    bus_unsubscribe(s);
    /* and so does a new one */
    cr_assert_eq(bus_reset(fx.b, g, &err), 0, "%s", err.msg);
    s = subscribe(g);
    got c[40];
    n = drain(s, c, 40, 10000);
    cr_assert_eq(n, 40, "replay after resubscribing: got %zu of 40", n);
    assert_key_order(c, n);
    bool seen[40] = {0};
    for (size_t i = 0; i < n; i++)
        seen[c[i].n] = true;
    for (int i = 0; i < 40; i++)
        cr_assert(seen[i], "event %d missing from the replay", i);
    got_free(c, n);
    bus_unsubscribe(s);
}

BUS_CASE(lag_counts_and_falls_to_zero)
{
    const char *g = group("g");
    bus_sub *s = subscribe(g);
    publish(0, 50, 5);
    pl_error err = {0};
    int64_t lag = -1;
    cr_assert_eq(bus_lag(fx.b, g, &lag, &err), 0, "%s", err.msg);
    cr_assert_geq(lag, 50, "lag %lld before consuming 50", (long long)lag);
    got x[50];
    cr_assert_eq(drain(s, x, 50, 10000), 50);
    got_free(x, 50);
    int64_t deadline = now_ms() + 5000;
    bus_msg m[4];
    do {
        fetch(s, m, 4, 50);
        cr_assert_eq(bus_lag(fx.b, g, &lag, &err), 0);
    } while (lag > 0 && now_ms() < deadline);
    cr_assert_eq(lag, 0, "lag stays %lld", (long long)lag);
    bus_unsubscribe(s);
}

typedef struct {
    int count;
    char types[16][CE_TYPE_MAX + 8];
    int n[16];
} tail_ctx;

static int on_tail(void *ud, uint64_t seq, const char *type, const char *body, size_t len)
{
    (void)seq;
    tail_ctx *t = ud;
    if (strncmp(type, fx.type, strlen("pl.") + strlen(fx.ctx)) != 0 || t->count >= 16)
        return 0; /* other cases' events on a shared server */
    json_error_t je;
    json_t *ev = json_loadb(body, len, 0, &je);
    cr_assert_not_null(ev);
    snprintf(t->types[t->count], sizeof t->types[0], "%s", type);
    t->n[t->count++] = (int)json_integer_value(json_object_get(json_object_get(ev, "data"), "n"));
    json_decref(ev);
    return 0;
}

BUS_CASE(raw_read_after_the_head_sees_new_events_in_order)
{
    publish(0, 3, 1);
    pl_error err = {0};
    uint64_t head = 0, pos;
    cr_assert_eq(bus_head(fx.b, &head, &err), 0, "%s", err.msg);
    cr_assert_gt(head, 0);
    publish(100, 5, 1);
    tail_ctx t = {0};
    pos = head;
    int64_t deadline = now_ms() + 5000;
    while (t.count < 5 && now_ms() < deadline)
        cr_assert_eq(bus_read(fx.b, pos, 512, 200, on_tail, &t, &pos, &err), 0, "%s", err.msg);
    cr_assert_eq(t.count, 5, "read %d of the 5 events after the head", t.count);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(t.n[i], 100 + i);
        cr_assert_str_eq(t.types[i], fx.type);
    }
    cr_assert_geq(pos, head);
    /* from the start */
    tail_ctx all = {0};
    pos = 0;
    deadline = now_ms() + 5000;
    while (all.count < 8 && now_ms() < deadline)
        cr_assert_eq(bus_read(fx.b, pos, 512, 200, on_tail, &all, &pos, &err), 0, "%s", err.msg);
    cr_assert_eq(all.count, 8);
    cr_assert_eq(all.n[0], 0);
    cr_assert_eq(all.n[7], 104);
    /* nothing new: the read waits, returns nothing, and the position stays */
    uint64_t before = pos;
    int64_t t0 = now_ms();
    cr_assert_eq(bus_read(fx.b, pos, 512, 300, on_tail, &all, &pos, &err), 0, "%s", err.msg);
    cr_assert_eq(all.count, 8);
    cr_assert_eq(pos, before);
    cr_assert_geq(now_ms() - t0, 250, "an empty read waits for its timeout");
    /* a fresh reader that finds nothing (as `pulse events tail` at the head) */
    bus *b2 = open_handle();
    uint64_t h = 0, p2;
    cr_assert_eq(bus_head(b2, &h, &err), 0);
    tail_ctx none = {0};
    cr_assert_eq(bus_read(b2, h, 512, 200, on_tail, &none, &p2, &err), 0, "%s", err.msg);
    cr_assert_eq(none.count, 0);
    cr_assert_eq(p2, h);
    bus_close(b2);
}

BUS_CASE(patterns_select_types)
{
    const char *only2[] = {fx.type2, NULL};
    bus_sub *s = subscribe_on(fx.b, group("g"), only2, 0, 0);
    for (int i = 0; i < 10; i++)
        publish_on(fx.b, (i % 2) ? fx.type2 : fx.type, i, 1, 2, NULL);
    got g[10];
    size_t n = drain(s, g, 10, 3000);
    cr_assert_eq(n, 5, "got %zu events of the one type asked for", n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(g[i].type, fx.type2);
        cr_assert_eq(g[i].n % 2, 1);
    }
    assert_key_order(g, n);
    got_free(g, n);
    bus_unsubscribe(s);
}

/* ---- a killed instance ---- */

/* The child publishes, takes the group's partitions, fetches a batch, acks part
 * of it and reports what it acked; then it is killed with SIGKILL with the rest
 * of the batch unsettled. The parent, a new instance of the same group, must
 * take over and get every event the child did not ack, each key in order. */
static void killed_instance_case(void)
{
    const int count = 300;
    const char *patterns[] = {fx.all_pattern, NULL};
    const char *g = group("g");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        bus *b = open_handle();
        publish_on(b, fx.type, 0, count, 16, NULL);
        bus_sub *s = subscribe_on(b, g, patterns, 0, 800);
        bus_msg m[64];
        size_t n = 0;
        pl_error err = {0};
        while (n < 40) {
            size_t k = 0;
            if (bus_fetch(s, m, 64, 200, &k, &err))
                _exit(3);
            n = k;
        }
        for (size_t i = 0; i < 25; i++) {
            int en;
            char key[16];
            n_key(&m[i], &en, key);
            if (bus_ack(s, &m[i], &err))
                _exit(4);
            if (write(fds[1], &en, sizeof en) != sizeof en)
                _exit(5);
        }
        size_t k = 0;
        bus_fetch(s, m, 64, 0, &k, &err); /* the acks are out; more is fetched and left unsettled */
        int end = -1;
        if (write(fds[1], &end, sizeof end) != sizeof end)
            _exit(5);
        for (;;)
            pause();
    }
    close(fds[1]);
    bool acked[300] = {0};
    int nacked = 0;
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        cr_assert_gt(poll(&pfd, 1, 60000), 0, "the child instance did not report");
        int v;
        ssize_t r = read(fds[0], &v, sizeof v);
        cr_assert_eq(r, (ssize_t)sizeof v, "the child instance died early");
        if (v < 0)
            break;
        cr_assert(v >= 0 && v < count);
        acked[v] = true;
        nacked++;
    }
    close(fds[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    fx.b = open_handle();
    bus_sub *s = subscribe_on(fx.b, g, patterns, 0, 800);
    got *seen = calloc(400, sizeof *seen);
    bool have[300] = {0};
    size_t n = 0;
    int missing = count - nacked;
    int64_t t0 = now_ms(), deadline = t0 + 40000;
    while (missing > 0 && now_ms() < deadline) {
        got one[32];
        size_t k = drain(s, one, 32, 200);
        for (size_t i = 0; i < k; i++) {
            cr_assert(one[i].n >= 0 && one[i].n < count);
            if (!acked[one[i].n] && !have[one[i].n])
                missing--;
            have[one[i].n] = true;
            if (n < 400)
                seen[n++] = one[i];
            else
                json_decref(one[i].data);
        }
    }
    cr_log_info("the killed instance acked %d; the new one had the rest after %lld ms (%zu deliveries)", nacked,
                (long long)(now_ms() - t0), n);
    for (int i = 0; i < count; i++)
        cr_assert(acked[i] || have[i], "event %d was skipped after the instance was killed", i);
    assert_key_order(seen, n);
    got_free(seen, n);
    free(seen);
    bus_unsubscribe(s);
}

/* ---- consumer batching: flush and CONSUMER_NO_INBOX ------------------------------------------ */

#define FL_EVENTS 60

typedef struct flusher {
    pthread_mutex_t lock;
    int staged[FL_EVENTS];   /* handler calls since the last flush, by n */
    int done[FL_EVENTS];     /* flushed (performed), by n */
    int handled, flushes, failed_flushes, fail_left, fail_code, tx_seen, tx_null;
} flusher;

static int fl_handle(void *ud, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)err;
    flusher *f = ud;
    int n = (int)json_integer_value(json_object_get(ev->data, "n"));
    pthread_mutex_lock(&f->lock);
    f->handled++;
    if (tx)
        f->tx_seen++;
    else
        f->tx_null++;
    if (n >= 0 && n < FL_EVENTS)
        f->staged[n]++;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fl_flush(void *ud, sql_tx *tx, pl_error *err)
{
    (void)tx;
    flusher *f = ud;
    pthread_mutex_lock(&f->lock);
    f->flushes++;
    bool fail = f->fail_left > 0;
    if (fail) {
        f->fail_left--;
        f->failed_flushes++;
    }
    for (int i = 0; i < FL_EVENTS; i++) {
        if (!fail)
            f->done[i] += f->staged[i];
        f->staged[i] = 0; /* performed or discarded: nothing stays staged */
    }
    pthread_mutex_unlock(&f->lock);
    return fail ? err_set(err, f->fail_code, NULL, "flush refused by the test") : 0;
}

static int64_t inbox_rows(sql_db *db, const char *grp)
{
    sql_tx *tx;
    pl_error err = {0};
    cr_assert_eq(sql_begin(db, SQL_TX_READ, &tx, &err), 0, "%s", err.msg);
    sql_rows *r;
    cr_assert_eq(sql_query(tx, "SELECT count(*) FROM pulse_inbox WHERE consumer = $1", SQL_ARGS(SQL_TEXT(grp)), &r,
                           &err), 0, "%s", err.msg);
    cr_assert_eq(sql_next(r, &err), 1);
    int64_t n = sql_int(r, 0);
    sql_rows_close(r);
    sql_rollback(tx);
    return n;
}

/* Runs FL_EVENTS events through a consumer (max_deliver 5) with a flush that fails its first
 * `fail` calls with `code`; returns once every event was flushed at least once (or 60 s passed). */
static void flush_case(unsigned flags, int fail, int code, flusher *f, int64_t *inbox)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/pulse-consumerconf-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    sql_options so = {.data_dir = dir, .service = "conf"};
    sql_db *db = NULL;
    pl_error err = {0};
    cr_assert_eq(sql_open("", &so, &db, &err), 0, "%s", err.msg);
    cr_assert_geq(sql_migrate(db, "bus", sql_builtin_migrations, sql_builtin_nmigrations, &err), 0, "%s", err.msg);
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    f->fail_left = fail;
    f->fail_code = code;
    const char *types[] = {fx.type, NULL};
    consumer_def def = {.name = "flush", .types = types, .handle = fl_handle, .flags = flags, .flush = fl_flush};
    consumer_opts o = {.batch = 16, .retry_base_ms = 10, .retry_max_ms = 50, .max_deliver = 5};
    publish(0, FL_EVENTS, 5);
    consumer *c = NULL;
    cr_assert_eq(consumer_start(fx.b, db, fx.ctx, &def, f, &o, &c, &err), 0, "%s", err.msg);
    int64_t deadline = now_ms() + 60000;
    for (;;) {
        int missing = 0;
        pthread_mutex_lock(&f->lock);
        for (int i = 0; i < FL_EVENTS; i++)
            missing += f->done[i] == 0;
        pthread_mutex_unlock(&f->lock);
        if (!missing || now_ms() > deadline)
            break;
        usleep(20000);
    }
    usleep(300000); /* anything redelivered wrongly would show up now */
    char grp[160];
    snprintf(grp, sizeof grp, "%s", consumer_group(c));
    consumer_stop(c);
    *inbox = inbox_rows(db, grp);
    sql_close(db);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    pthread_mutex_destroy(&f->lock);
}


/* Inbox mode with a flush: every event performed exactly once, by flushes of whole batches (fewer
 * flushes than events), the handler inside the transaction, the inbox recorded. */
BUS_CASE(consumer_flush_performs_the_batch)
{
    flusher f;
    int64_t inbox = 0;
    flush_case(0, 0, 0, &f, &inbox);
    for (int i = 0; i < FL_EVENTS; i++)
        cr_assert_eq(f.done[i], 1, "event %d performed %d times", i, f.done[i]);
    cr_assert_eq(f.handled, FL_EVENTS);
    cr_assert_eq(f.tx_null, 0, "the handler ran without a transaction");
    cr_assert_lt(f.flushes, FL_EVENTS, "a flush per event: %d flushes", f.flushes);
    cr_assert_geq(f.flushes, FL_EVENTS / 16);
    cr_assert_eq(inbox, FL_EVENTS, "inbox rows: %" PRId64, inbox);
}

/* A failed flush: its batch counts as not applied (inbox rolled back), every event of it comes
 * again and is then performed exactly once. */
BUS_CASE(consumer_flush_failure_redelivers_the_batch)
{
    flusher f;
    int64_t inbox = 0;
    flush_case(0, 2, PL_EINTERNAL, &f, &inbox);
    cr_assert_eq(f.failed_flushes, 2);
    for (int i = 0; i < FL_EVENTS; i++)
        cr_assert_eq(f.done[i], 1, "event %d performed %d times", i, f.done[i]);
    cr_assert_gt(f.handled, FL_EVENTS, "nothing was handled again after the failed flushes");
    cr_assert_eq(inbox, FL_EVENTS, "inbox rows: %" PRId64, inbox);
}

/* A flush whose engine is away (PL_EUNAVAILABLE), for longer than max_deliver deliveries: the same
 * batch is tried again without counting deliveries, so nothing is dead-lettered and every event is
 * performed exactly once when the engine is back. */
BUS_CASE(consumer_flush_engine_away_is_not_the_events_fault)
{
    flusher f;
    int64_t inbox = 0;
    flush_case(0, 8, PL_EUNAVAILABLE, &f, &inbox);
    cr_assert_eq(f.failed_flushes, 8);
    for (int i = 0; i < FL_EVENTS; i++)
        cr_assert_eq(f.done[i], 1, "event %d performed %d times (0: dead-lettered)", i, f.done[i]);
    cr_assert_eq(inbox, FL_EVENTS, "inbox rows: %" PRId64, inbox);
}

/* CONSUMER_NO_INBOX: the handler gets no transaction, nothing is written to the inbox, a failed
 * flush redelivers (at least once), and every event is performed. */
BUS_CASE(consumer_no_inbox)
{
    flusher f;
    int64_t inbox = 0;
    flush_case(CONSUMER_NO_INBOX, 1, PL_EINTERNAL, &f, &inbox);
    cr_assert_eq(f.tx_seen, 0, "the handler got a transaction");
    cr_assert_eq(f.failed_flushes, 1);
    int total = 0;
    for (int i = 0; i < FL_EVENTS; i++) {
        cr_assert_geq(f.done[i], 1, "event %d never performed", i);
        total += f.done[i];
    }
    cr_assert_eq(total, FL_EVENTS, "an event performed twice although only a failed flush's batch came again");
    cr_assert_gt(f.handled, FL_EVENTS);
    cr_assert_eq(inbox, 0, "a no-inbox consumer wrote %" PRId64 " inbox rows", inbox);
}

Test(bus_embedded, killed_instance_is_taken_over, .fini = fx_close, .timeout = 120)
{
    fx_prepare(false);
    killed_instance_case();
}

Test(bus_nats, killed_instance_is_taken_over, .fini = fx_close, .timeout = 120)
{
    fx_prepare(true);
    killed_instance_case();
}

/* ---- JetStream only ---- */

Test(bus_nats_only, namespaces_keep_deployments_apart, .fini = fx_close, .timeout = 120)
{
    fx_open(true);
    char other[40];
    snprintf(other, sizeof other, "%sb", fx.ns);
    bus *b2 = open_ns(other), *b3 = open_ns(NULL);
    const char *patterns[] = {fx.all_pattern, NULL};
    bus_sub *s1 = subscribe_on(fx.b, group("g"), patterns, 0, 0);
    bus_sub *s2 = subscribe_on(b2, group("g"), patterns, 0, 0);
    bus_sub *s3 = subscribe_on(b3, group("g"), patterns, 0, 0);
    publish(0, 20, 4);
    got g[20];
    cr_assert_eq(drain(s1, g, 20, 5000), 20);
    got_free(g, 20);
    bus_msg m[4];
    cr_assert_eq(fetch(s2, m, 4, 500), 0, "another namespace saw the events");
    cr_assert_eq(fetch(s3, m, 4, 300), 0, "no namespace saw the events");
    /* dead letters too */
    publish(100, 1, 1);
    size_t k = fetch_some(s1, m, 4, 5000);
    cr_assert_geq(k, 1);
    pl_error err = {0};
    cr_assert_eq(bus_term(s1, &m[0], "x", &err), 0, "%s", err.msg);
    int64_t d1 = 0, d2 = 0;
    cr_assert_eq(bus_dead_count(fx.b, &d1, &err), 0);
    cr_assert_eq(bus_dead_count(b2, &d2, &err), 0);
    cr_assert_eq(d1, 1);
    cr_assert_eq(d2, 0);
    uint64_t head2 = 0;
    cr_assert_eq(bus_head(b2, &head2, &err), 0);
    cr_assert_eq(head2, 0, "the other namespace's log is empty");
    bus_unsubscribe(s1);
    bus_unsubscribe(s2);
    bus_unsubscribe(s3);
    bus_close(b2);
    bus_close(b3);
    nats_drop_ns(other);
    nats_drop_ns("");
}

/* ---- NATS stopped and started (suite bus_nats_fault: alone, on engines of scripts/engines.sh) ---- */

static void nats_engine(const char *verb)
{
    const char *dir = getenv("PULSE_TEST_ENGINES_DIR");
    const char *sh = getenv("PULSE_TEST_ENGINES_SH");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s %s nats %s >/dev/null", sh && *sh ? sh : "scripts/engines.sh", verb, dir);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
}

Test(bus_nats_fault, outage_fails_fast_then_recovers, .fini = fx_close, .timeout = 120)
{
    const char *on = getenv("PULSE_TEST_NATS_FAULTS");
    const char *dir = getenv("PULSE_TEST_ENGINES_DIR");
    if (!on || strcmp(on, "1") != 0 || !dir || !*dir)
        cr_skip_test("NATS outage cases need PULSE_TEST_NATS_FAULTS=1 and PULSE_TEST_ENGINES_DIR "
                     "(make test-conformance runs them alone)");
    fx_open(true);
    bus_sub *s = subscribe(group("g"));
    publish(0, 20, 4);
    got g[40];
    cr_assert_eq(drain(s, g, 20, 5000), 20);
    got_free(g, 20);
    nats_engine("down");

    /* during the outage every call answers PL_EUNAVAILABLE quickly */
    pl_error err = {0};
    bus_out out = {"01890000-0000-7000-8000-0000000000aa", fx.type, "k", "{}", 2};
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ms();
        int rc = bus_publish(fx.b, &out, 1, &err);
        int64_t took = now_ms() - t0;
        cr_assert_eq(rc, PL_EUNAVAILABLE, "publish during the outage: %d %s", rc, err.msg);
        cr_assert_lt(took, 3500, "publish answered in %" PRId64 " ms", took);
        size_t n = 0;
        bus_msg m[4];
        t0 = now_ms();
        rc = bus_fetch(s, m, 4, 200, &n, &err);
        cr_assert_eq(rc, PL_EUNAVAILABLE, "fetch during the outage: %d %s", rc, err.msg);
        cr_assert_lt(now_ms() - t0, 2500);
        t0 = now_ms();
        cr_assert_eq(bus_ping(fx.b, &err), PL_EUNAVAILABLE);
        int64_t lag;
        cr_assert_eq(bus_lag(fx.b, group("g"), &lag, &err), PL_EUNAVAILABLE);
        cr_assert_lt(now_ms() - t0, 2500);
    }

    nats_engine("up");
    /* back by itself within seconds: publishing, and the group goes on where it was */
    int64_t t0 = now_ms(), back = -1;
    while (now_ms() - t0 < 15000) {
        if (bus_ping(fx.b, &err) == 0) {
            back = now_ms() - t0;
            break;
        }
        usleep(100 * 1000);
    }
    cr_assert_geq(back, 0, "not reconnected: %s", err.msg);
    cr_log_info("reconnected %" PRId64 " ms after the server came back", back);
    t0 = now_ms();
    publish(20, 20, 4);
    size_t n = drain(s, g, 20, 15000);
    cr_log_info("the 20 events published after the outage were consumed in %" PRId64 " ms", now_ms() - t0);
    cr_assert_eq(n, 20, "after the outage: got %zu of the 20 new events", n);
    bus_msg extra[4];
    cr_assert_eq(fetch(s, extra, 4, 300), 0, "something came twice after the outage");
    for (size_t i = 0; i < n; i++)
        cr_assert_geq(g[i].n, 20, "event %d came again after the outage", g[i].n);
    assert_key_order(g, n);
    got_free(g, n);
    bus_unsubscribe(s);
}
