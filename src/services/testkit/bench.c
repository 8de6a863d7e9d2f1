/*
 * bench.c - the testkit routes the WebSocket benchmark (bench/ws.sh) needs.
 * Part of the hidden testkit service: hosted only when named in --services,
 * never in a default deployment.
 *
 *   POST /api/v1/testkit/sessions  {"count": 1..10000, "ttl_s"?: 60..604800}
 *        mints `count` principals (fresh UUIDv7 user ids, role student) and
 *        one bearer token each, written with sessions_create() into identity's
 *        kv exactly as a login writes them: 201 {"items":[{"user_id","token"}]}.
 *        No password hashing and no identity user row: the tokens authenticate
 *        (every process reads sessions from identity's kv), which is all a
 *        WebSocket session needs. With the embedded kv this works only in the
 *        process that owns identity's kv file; use Redis for several processes.
 *
 *   POST /api/v1/testkit/pushes  {"pushes":[{"user_ids":[...1..1000], "payload"?:{}}, ...1..500],
 *                                 "transaction"?: "each" | "one"}
 *        emits one pl.testkit.push.v1 per item. "each" (the default): every
 *        item in its own transaction, as one API write per event would: BEGIN;
 *        sent_at_ns = CLOCK_REALTIME; outbox insert; COMMIT. "one": all items
 *        in one transaction (a group commit): BEGIN; sent_at_ns; every insert;
 *        COMMIT, the same sent_at_ns in every item. Either way sent_at_ns is
 *        taken inside the transaction right before its inserts and its commit,
 *        so a latency measured from it includes the commit itself.
 *        201 {"committed", "commit_us_sum", "commit_us_max"} (per event: the
 *        time from its sent_at_ns to the end of its COMMIT). With "each", stops
 *        at the first failure (earlier items stay committed) and answers the
 *        error with fields.committed saying how many were; with "one", nothing
 *        is committed on a failure.
 */
#include "services/testkit/bench.h"
#include "bus/outbox.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/service.h"
#include "services/sessions.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* identity's kv, opened on first use (a process hosting testkit for other
 * tests never touches it). */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static sessions *g_sessions;

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int sessions_get(const config *cfg, sessions **out, pl_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    if (!g_sessions)
        rc = sessions_open(cfg, &g_sessions, err);
    *out = g_sessions;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void testkit_bench_stop(void)
{
    pthread_mutex_lock(&g_lock);
    sessions_close(g_sessions);
    g_sessions = NULL;
    pthread_mutex_unlock(&g_lock);
}

/* The same shape identity's login hands out: "plt_" + 32 random bytes in
 * base64url (43 characters). */
static void token_new(char out[48])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, "plt_", 4);
    sodium_bin2base64(out + 4, 44, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

int testkit_mint_sessions(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    static const char *const allowed[] = {"count", "ttl_s", NULL};
    jv_only(&v, allowed);
    long long count = 0, ttl_s = 86400;
    jv_int(&v, "count", true, 1, 10000, &count);
    jv_int(&v, "ttl_s", false, 60, 7 * 86400, &ttl_s);
    if (!jv_ok(&v)) {
        rc = http_fail(req, PL_EINVAL, jv_take_fields(&v), "invalid session request");
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    jv_free(&v);
    json_decref(body);

    pl_error err = {0};
    sessions *s;
    if ((rc = sessions_get(ctx->cfg, &s, &err)))
        return http_fail(req, PL_EUNAVAILABLE, NULL, "identity's kv cannot be opened here: %s", err.msg);
    json_t *items = json_array();
    int64_t expires = time_now_ms() + ttl_s * 1000;
    for (long long i = 0; i < count && !rc; i++) {
        principal p = {0};
        char token[48], hash[65];
        uuid7_new(p.user_id);
        uuid7_new(p.session_id);
        snprintf(p.role, sizeof p.role, "student");
        token_new(token);
        sessions_token_hash(token, hash);
        if (!(rc = sessions_create(s, hash, &p, expires, &err)))
            json_array_append_new(items, json_pack("{s:s, s:s}", "user_id", p.user_id, "token", token));
        sodium_memzero(token, sizeof token);
    }
    if (rc) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    http_json(res, 201, json_pack("{s:o}", "items", items));
    return 0;
}

/* Checks one item of "pushes"; appends its problems to v under "pushes[i]". */
static bool push_valid(jv *v, size_t i, json_t *item)
{
    char f[48];
    snprintf(f, sizeof f, "pushes[%zu]", i);
    if (!json_is_object(item)) {
        jv_fail(v, f, "must be an object");
        return false;
    }
    const char *key;
    json_t *val;
    json_object_foreach(item, key, val) {
        if (strcmp(key, "user_ids") != 0 && strcmp(key, "payload") != 0) {
            snprintf(f, sizeof f, "pushes[%zu].%.16s", i, key);
            jv_fail(v, f, "is not a known field");
            return false;
        }
    }
    json_t *ids = json_object_get(item, "user_ids");
    size_t n = json_array_size(ids);
    snprintf(f, sizeof f, "pushes[%zu].user_ids", i);
    if (!json_is_array(ids) || n < 1 || n > 1000) {
        jv_fail(v, f, "must be an array of 1 to 1000 user ids");
        return false;
    }
    for (size_t k = 0; k < n; k++) {
        const char *u = json_string_value(json_array_get(ids, k));
        if (!u || !uuid_valid(u)) {
            jv_fail(v, f, "every item must be a user id (UUID)");
            return false;
        }
    }
    json_t *payload = json_object_get(item, "payload");
    if (payload && !json_is_object(payload)) {
        snprintf(f, sizeof f, "pushes[%zu].payload", i);
        jv_fail(v, f, "must be an object");
        return false;
    }
    return true;
}

/* Emits items [from, to) of pushes in one transaction; adds each one's
 * sent_at_ns -> end of COMMIT to *sum_ns / *max_ns. */
static int emit_pushes(service_ctx *ctx, json_t *pushes, size_t from, size_t to, int64_t *sum_ns, int64_t *max_ns,
                       pl_error *err)
{
    sql_tx *tx;
    int rc = sql_begin(ctx->sql, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    int64_t t0 = realtime_ns();
    for (size_t i = from; i < to && !rc; i++) {
        json_t *item = json_array_get(pushes, i);
        json_t *ids = json_object_get(item, "user_ids");
        json_t *payload = json_object_get(item, "payload");
        json_t *d = json_pack("{s:O, s:I, s:o}", "user_ids", ids, "sent_at_ns", (json_int_t)t0, "payload",
                              payload ? json_incref(payload) : json_object());
        rc = outbox_emit(tx, "testkit", "pl.testkit.push.v1", json_string_value(json_array_get(ids, 0)), NULL, d,
                         NULL, err);
        json_decref(d);
    }
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, err);
    if (rc)
        return rc;
    int64_t dt = realtime_ns() - t0;
    *sum_ns += dt * (int64_t)(to - from);
    if (dt > *max_ns)
        *max_ns = dt;
    return 0;
}

int testkit_pushes(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    json_t *body;
    int rc = http_json_body(req, &body);
    if (rc)
        return rc;
    jv v;
    jv_init(&v, body);
    static const char *const allowed[] = {"pushes", "transaction", NULL};
    jv_only(&v, allowed);
    const char *mode = jv_str(&v, "transaction", false, 1, 8);
    if (mode && strcmp(mode, "each") != 0 && strcmp(mode, "one") != 0)
        jv_fail(&v, "transaction", "must be \"each\" or \"one\"");
    bool one = mode && strcmp(mode, "one") == 0;
    json_t *pushes = json_object_get(body, "pushes");
    size_t n = json_array_size(pushes);
    if (!json_is_array(pushes) || n < 1 || n > 500)
        jv_fail(&v, "pushes", "must be an array of 1 to 500 pushes");
    else
        for (size_t i = 0; i < n; i++)
            if (!push_valid(&v, i, json_array_get(pushes, i)))
                break;
    if (!jv_ok(&v)) {
        rc = http_fail(req, PL_EINVAL, jv_take_fields(&v), "invalid pushes");
        jv_free(&v);
        json_decref(body);
        return rc;
    }
    jv_free(&v);

    pl_error err = {0};
    size_t done = 0;
    int64_t sum_ns = 0, max_ns = 0;
    if (one) {
        if (!(rc = emit_pushes(ctx, pushes, 0, n, &sum_ns, &max_ns, &err)))
            done = n;
    } else {
        for (; done < n; done++)
            if ((rc = emit_pushes(ctx, pushes, done, done + 1, &sum_ns, &max_ns, &err)))
                break;
    }
    json_decref(body);
    if (rc) {
        char msg[64];
        snprintf(msg, sizeof msg, "%zu pushes were committed before this failure", done);
        return http_fail(req, rc, json_pack("{s:s}", "committed", msg), "%s", err.msg);
    }
    http_json(res, 201,
              json_pack("{s:I, s:I, s:I}", "committed", (json_int_t)done, "commit_us_sum", (json_int_t)(sum_ns / 1000),
                        "commit_us_max", (json_int_t)(max_ns / 1000)));
    return 0;
}
