/*
 * testkit.c - a test fixture service for the event backbone, hosted only
 * when named (`--services identity,testkit`); never part of a default
 * deployment.
 *
 *   POST /api/v1/testkit/events  {"type","subject","partitionkey"?,"data"?,"count"?}
 *        emits `count` events (data.seq = 0..count-1) in one transaction
 *   GET  /api/v1/testkit/effects   every application of an event, in order
 *   GET  /api/v1/testkit/tally     the "tally" projection
 *   POST /api/v1/testkit/sessions  mint bearer tokens without argon2 (bench.c)
 *   POST /api/v1/testkit/pushes    pl.testkit.push.v1 events, one transaction each (bench.c)
 *
 * The "effects" consumer applies pl.testkit.* events: data.fail_times = N
 * makes the first N deliveries fail; data.poison = true makes every delivery
 * fail; data.malformed_ok is ignored. The "tally" projection counts events
 * per subject and can be replayed.
 */
#include "bus/outbox.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "services/service.h"
#include "services/testkit/bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTEMPT_SLOTS 4096

typedef struct testkit {
    pthread_mutex_t lock;
    struct {
        char id[40];
        int n;
    } attempts[ATTEMPT_SLOTS]; /* deliveries seen per event id (memory survives rollbacks) */
} testkit;

static int attempt(testkit *t, const char *id)
{
    unsigned h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    pthread_mutex_lock(&t->lock);
    int n = 0;
    for (unsigned i = 0; i < 64; i++) {
        unsigned k = (h + i) % ATTEMPT_SLOTS;
        if (!t->attempts[k].id[0] || strcmp(t->attempts[k].id, id) == 0) {
            snprintf(t->attempts[k].id, sizeof t->attempts[k].id, "%s", id);
            n = ++t->attempts[k].n;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* pl.testkit.push.v1 is the realtime gateway's (the WebSocket benchmark's
 * load): these consumers let it pass without work, so as not to compete with
 * the path being measured. */
static bool is_push(const cloudevent *ev) { return strcmp(ev->type, "pl.testkit.push.v1") == 0; }

static int effects_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    if (is_push(ev))
        return 0;
    testkit *t = ((service_ctx *)ctx)->state;
    int n = attempt(t, ev->id);
    if (json_is_true(json_object_get(ev->data, "poison")))
        return err_set(err, PL_EUNAVAILABLE, NULL, "poison event %s fails on every delivery", ev->id);
    json_t *ft = json_object_get(ev->data, "fail_times");
    if (json_is_integer(ft) && n <= json_integer_value(ft))
        return err_set(err, PL_EUNAVAILABLE, NULL, "planned failure %d of %lld", n, (long long)json_integer_value(ft));
    json_t *seq = json_object_get(ev->data, "seq");
    return sql_exec(tx,
                    "INSERT INTO testkit_effects (event_id, type, subject, seq_in_key, applied_ms) VALUES ($1, $2, $3, $4, $5)",
                    SQL_ARGS(SQL_TEXT(ev->id), SQL_TEXT(ev->type), SQL_TEXT(ev->subject),
                             json_is_integer(seq) ? SQL_INT(json_integer_value(seq)) : SQL_NULL, SQL_INT(time_now_ms())),
                    NULL, err);
}

static int tally_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    if (is_push(ev))
        return 0;
    return sql_exec(tx,
                    "INSERT INTO testkit_tally (subject, n) VALUES ($1, 1)"
                    " ON CONFLICT (subject) DO UPDATE SET n = testkit_tally.n + 1",
                    SQL_ARGS(SQL_TEXT(ev->subject)), NULL, err);
}

static int tally_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    (void)ctx;
    return sql_exec(tx, "DELETE FROM testkit_tally", SQL_NOARGS, NULL, err);
}

static int emit(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    static const char *const allowed[] = {"type", "subject", "partitionkey", "data", "count", NULL};
    jv_only(&v, allowed);
    const char *type = jv_str(&v, "type", true, 1, 200);
    const char *subject = jv_str(&v, "subject", true, 1, 128);
    const char *pkey = jv_str(&v, "partitionkey", false, 1, 128);
    long long count = 1;
    jv_int(&v, "count", false, 1, 10000, &count);
    json_t *data = json_object_get(body, "data");
    if (data && !json_is_object(data))
        jv_fail(&v, "data", "must be an object");
    if (!jv_ok(&v)) {
        rc = http_fail(req, PL_EINVAL, jv_take_fields(&v), "invalid event");
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    pl_error err = {0};
    sql_tx *tx;
    json_t *ids = json_array();
    if (!(rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, &err))) {
        for (long long i = 0; i < count && !rc; i++) {
            json_t *d = data ? json_deep_copy(data) : json_object();
            json_object_set_new(d, "seq", json_integer(i));
            char id[40];
            rc = outbox_emit(tx, "testkit", type, subject, pkey, d, id, &err);
            if (!rc)
                json_array_append_new(ids, json_string(id));
        }
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, &err);
    }
    jv_free(&v);
    json_decref(body);
    if (rc) {
        json_decref(ids);
        return http_fail(req, rc, err.field[0] ? json_pack("{s:s}", err.field, err.msg) : NULL, "%s", err.msg);
    }
    http_json(res, 201, json_pack("{s:o}", "ids", ids));
    return 0;
}

static int list(http_req *req, http_res *res, const char *sql, int ncols, const char *const *names)
{
    service_ctx *ctx = req->ctx;
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return http_fail(req, rc, NULL, "%s", err.msg);
    json_t *items = json_array();
    if (!(rc = sql_query(tx, sql, SQL_NOARGS, &r, &err))) {
        while ((rc = sql_next(r, &err)) == 1) {
            json_t *o = json_object();
            for (int i = 0; i < ncols; i++) /* names starting with '#' are integers */
                json_object_set_new(o, names[i] + (names[i][0] == '#'),
                                    sql_isnull(r, i)      ? json_null()
                                    : names[i][0] == '#' ? json_integer(sql_int(r, i))
                                                         : json_string(sql_text(r, i)));
            json_array_append_new(items, o);
        }
        sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    http_json(res, 200, json_pack("{s:o}", "items", items));
    return 0;
}

static int effects(http_req *req, http_res *res)
{
    static const char *const names[] = {"#n", "event_id", "type", "subject", "#seq"};
    return list(req, res, "SELECT n, event_id, type, subject, seq_in_key FROM testkit_effects ORDER BY n", 5, names);
}

static int tally(http_req *req, http_res *res)
{
    static const char *const names[] = {"subject", "#n"};
    return list(req, res, "SELECT subject, n FROM testkit_tally ORDER BY subject", 2, names);
}

static int testkit_start(service_ctx *ctx, pl_error *err)
{
    (void)err;
    testkit *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    pthread_mutex_init(&t->lock, NULL);
    ctx->state = t;
    return 0;
}

static void testkit_stop(service_ctx *ctx)
{
    testkit *t = ctx->state;
    testkit_bench_stop();
    if (t)
        pthread_mutex_destroy(&t->lock);
    free(t);
    ctx->state = NULL;
}

static const http_route testkit_routes[] = {
    {"POST", "/api/v1/testkit/events", emit, 0, "test fixture: emit events through the outbox"},
    {"GET", "/api/v1/testkit/effects", effects, 0, "test fixture: applications of events"},
    {"GET", "/api/v1/testkit/tally", tally, 0, "test fixture: the tally projection"},
    {"POST", "/api/v1/testkit/sessions", testkit_mint_sessions, 0, "test fixture: mint sessions (benchmarks)"},
    {"POST", "/api/v1/testkit/pushes", testkit_pushes, 0, "test fixture: pl.testkit.push.v1, one transaction each"},
};

static const char *const testkit_types[] = {"pl.testkit.*", NULL};

static const consumer_def testkit_consumers[] = {
    {.name = "effects", .types = testkit_types, .handle = effects_handle},
    {.name = "tally", .types = testkit_types, .handle = tally_handle, .reset = tally_reset,
     .flags = CONSUMER_PROJECTION},
};

const service_def testkit_service = {
    .version = 1,
    .name = "testkit",
    .summary = "test fixture for the event backbone (hosted only when named)",
    .stores = SERVICE_USES_SQL,
    .routes = testkit_routes,
    .nroutes = sizeof testkit_routes / sizeof testkit_routes[0],
    .start = testkit_start,
    .stop = testkit_stop,
    .consumers = testkit_consumers,
    .nconsumers = sizeof testkit_consumers / sizeof testkit_consumers[0],
    .hidden = true,
};
