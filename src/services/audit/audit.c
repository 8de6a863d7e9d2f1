/*
 * audit.c - the audit service: an append-only, hash-chained trail of
 * account, role, billing and privacy actions, built from events, and a
 * directory projection of users for reading it.
 *
 * Each entry's hash is SHA-256 over the previous entry's hash and this
 * entry's fields, so altering, removing or reordering any entry breaks every
 * hash after it (audit_verify). UPDATE and DELETE are refused by triggers.
 */
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/service.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* hash = hex(SHA-256(prev '\n' id '\n' event_id '\n' action '\n' actor '\n' subject '\n' at '\n' detail)) */
static void entry_hash(const char *prev, const char *id, const char *event_id, const char *action, const char *actor,
                       const char *subject, const char *at, const char *detail, char out[65])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    const char *parts[] = {prev, id, event_id, action, actor ? actor : "", subject, at, detail};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        crypto_hash_sha256_update(&st, (const unsigned char *)parts[i], strlen(parts[i]));
        crypto_hash_sha256_update(&st, (const unsigned char *)"\n", 1);
    }
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static void read_hash(void *ud, sql_rows *r) { snprintf(ud, 65, "%s", sql_text(r, 0)); }

static const char *str(const json_t *data, const char *key)
{
    const char *s = json_string_value(json_object_get(data, key));
    return s ? s : NULL;
}

/* ---- the trail consumer ------------------------------------------------------ */

/* What the trail records, as data: the event type, the action it is filed
 * under, and which data members name the actor (NULL: the system acted, or
 * the subject acted on itself when actor_is_subject) and the subject. */
static const struct trail_rule {
    const char *type, *action, *actor, *subject;
    bool actor_is_subject;
} trail_rules[] = {
    {"pl.identity.user_registered.v1", "account_created", NULL, "user_id", true},
    {"pl.identity.role_changed.v1", "role_changed", "changed_by", "user_id", false},
    {"pl.commerce.payment_captured.v1", "payment_captured", "buyer_id", "buyer_id", false},
    {"pl.commerce.payment_refunded.v1", "payment_refunded", NULL, "buyer_id", false},
    {"pl.commerce.invoice_issued.v1", "invoice_issued", NULL, "buyer_id", false},
    {"pl.commerce.order_failed.v1", "order_failed", NULL, "buyer_id", false},
    {"pl.commerce.saga_needs_attention.v1", "saga_needs_attention", NULL, "buyer_id", false},
};

static int trail_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const struct trail_rule *rule = NULL;
    for (size_t i = 0; i < sizeof trail_rules / sizeof trail_rules[0] && !rule; i++)
        if (strcmp(ev->type, trail_rules[i].type) == 0)
            rule = &trail_rules[i];
    if (!rule)
        return err_set(err, PL_EINVAL, "type", "audit does not record %s", ev->type);
    const char *action = rule->action, *subject = str(ev->data, rule->subject);
    const char *actor = rule->actor_is_subject ? subject : rule->actor ? str(ev->data, rule->actor) : NULL;
    if (!subject)
        return err_set(err, PL_EINVAL, "data", "%s without data.%s", ev->type, rule->subject);
    char prev[65] = ZERO_HASH, id[UUID_STR_LEN], hash[65], trace[33] = "";
    /* lock the chain head before reading it */
    int rc = sql_exec(tx, "UPDATE audit_chain SET hash = hash WHERE id = 1", SQL_NOARGS, NULL, err);
    if (rc || (rc = sql_one(tx, "SELECT hash FROM audit_chain WHERE id = 1", SQL_NOARGS, read_hash, prev, err)) < 0)
        return rc;
    uuid7_new(id);
    char *detail = json_compact(ev->data);
    if (ev->traceparent[0])
        snprintf(trace, sizeof trace, "%.32s", ev->traceparent + 3);
    entry_hash(prev, id, ev->id, action, actor, subject, ev->time, detail, hash);
    rc = sql_exec(tx,
                  "INSERT INTO audit_entries (id, event_id, event_type, action, actor_id, subject_id, detail, at,"
                  " trace_id, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                  SQL_ARGS(SQL_TEXT(id), SQL_TEXT(ev->id), SQL_TEXT(ev->type), SQL_TEXT(action),
                           SQL_TEXT_OR_NULL(actor), SQL_TEXT(subject), SQL_TEXT(detail), SQL_TEXT(ev->time),
                           trace[0] ? SQL_TEXT(trace) : SQL_NULL, SQL_TEXT(prev), SQL_TEXT(hash)),
                  NULL, err);
    free(detail);
    if (!rc)
        rc = sql_exec(tx, "UPDATE audit_chain SET hash = $1 WHERE id = 1", SQL_ARGS(SQL_TEXT(hash)), NULL, err);
    if (!rc)
        log_with(LOG_INFO, "audit entry", LF_STR("action", action), LF_STR("subject", subject),
                 LF_STR("event_id", ev->id));
    return rc;
}

/* ---- the directory projection ---------------------------------------------------- */

static int directory_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const json_t *d = ev->data;
    const char *uid = str(d, "user_id");
    if (!uid)
        return err_set(err, PL_EINVAL, "data", "%s without data.user_id", ev->type);
    if (strcmp(ev->type, "pl.identity.user_registered.v1") == 0) {
        const char *username = str(d, "username"), *name = str(d, "display_name"), *role = str(d, "role");
        if (!username || !name || !role)
            return err_set(err, PL_EINVAL, "data", "user_registered without username, display_name or role");
        return sql_exec(tx,
                        "INSERT INTO audit_users (user_id, username, display_name, role, updated_at)"
                        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,"
                        " display_name = excluded.display_name, role = excluded.role, updated_at = excluded.updated_at",
                        SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(username), SQL_TEXT(name), SQL_TEXT(role), SQL_TEXT(ev->time)),
                        NULL, err);
    }
    if (strcmp(ev->type, "pl.identity.profile_updated.v1") == 0 && str(d, "display_name"))
        return sql_exec(tx, "UPDATE audit_users SET display_name = $2, updated_at = $3 WHERE user_id = $1",
                        SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(str(d, "display_name")), SQL_TEXT(ev->time)), NULL, err);
    if (strcmp(ev->type, "pl.identity.role_changed.v1") == 0 && str(d, "new_role"))
        return sql_exec(tx, "UPDATE audit_users SET role = $2, updated_at = $3 WHERE user_id = $1",
                        SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(str(d, "new_role")), SQL_TEXT(ev->time)), NULL, err);
    return 0;
}

static int directory_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    (void)ctx;
    return sql_exec(tx, "DELETE FROM audit_users", SQL_NOARGS, NULL, err);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

/* GET /api/v1/admin/audit?limit=&cursor= : newest first; cursor is the last seq seen. */
static int audit_list(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    if (strcmp(req->principal->role, "admin") != 0)
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins read the audit trail");
    const char *ls = http_query(req, "limit"), *cs = http_query(req, "cursor");
    char *end;
    long limit = ls ? strtol(ls, &end, 10) : 50;
    if (ls && (*end || limit < 1 || limit > 500))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "limit", "must be 1 to 500"), "invalid query");
    long long cursor = cs ? strtoll(cs, &end, 10) : 0;
    if (cs && (*end || cursor < 1))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "cursor", "is not a cursor from this list"), "invalid query");
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return http_fail(req, rc, NULL, "%s", err.msg);
    rc = sql_query(tx,
                   "SELECT e.seq, e.id, e.event_id, e.event_type, e.action, e.actor_id, a.username, e.subject_id,"
                   " s.username, e.detail, e.at, e.trace_id, e.hash FROM audit_entries e"
                   " LEFT JOIN audit_users a ON a.user_id = e.actor_id LEFT JOIN audit_users s ON s.user_id = e.subject_id"
                   " WHERE ($1 = 0 OR e.seq < $1) ORDER BY e.seq DESC LIMIT $2",
                   SQL_ARGS(SQL_INT(cursor), SQL_INT(limit)), &r, &err);
    bool r_open = rc == 0;
    json_t *items = json_array();
    int64_t last = 0;
    /* sql_next returns 1 per row: the loop must not stop on rc == 1, or the
     * page holds only the first row (and next_cursor ends the paging). */
    while (!rc) {
        int more = sql_next(r, &err);
        if (more != 1) {
            rc = more;
            break;
        }
        json_error_t je;
        json_t *detail = json_loads(sql_text(r, 9), 0, &je);
        last = sql_int(r, 0);
        json_array_append_new(
            items, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s?, s:o, s:s, s:s?, s:s}", "seq",
                             (json_int_t)last, "id", sql_text(r, 1), "event_id", sql_text(r, 2), "event_type",
                             sql_text(r, 3), "action", sql_text(r, 4), "actor_id", sql_text(r, 5), "actor",
                             sql_text(r, 6), "subject_id", sql_text(r, 7), "subject", sql_text(r, 8), "detail",
                             detail ? detail : json_object(), "at", sql_text(r, 10), "trace_id", sql_text(r, 11),
                             "hash", sql_text(r, 12)));
    }
    if (r_open)
        sql_rows_close(r); /* also after a failed sql_next */
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    json_t *body = json_pack("{s:o}", "items", items);
    if ((long)json_array_size(items) == limit)
        json_object_set_new(body, "next_cursor", json_string(arena_sprintf(req->arena, "%lld", (long long)last)));
    else
        json_object_set_new(body, "next_cursor", json_null());
    http_json(res, 200, body);
    return 0;
}

/* ---- pulse audit verify ------------------------------------------------------------- */

/* Walks the trail in order, recomputing every hash; prints the first break. */
static int audit_verify(service_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc || (rc = sql_query(tx,
                              "SELECT seq, id, event_id, action, actor_id, subject_id, at, detail, prev_hash, hash"
                              " FROM audit_entries ORDER BY seq",
                              SQL_NOARGS, &r, &err))) {
        sql_rollback(tx);
        fprintf(stderr, "pulse: cannot read the audit trail: %s\n", err.msg);
        return 1;
    }
    char prev[65] = ZERO_HASH, head[65] = ZERO_HASH;
    long long n = 0, bad_seq = 0;
    const char *why = NULL;
    while (!why && (rc = sql_next(r, &err)) == 1) {
        char h[65];
        n++;
        bad_seq = sql_int(r, 0);
        if (strcmp(sql_text(r, 8), prev) != 0) {
            why = "its prev_hash is not the hash of the entry before it (an entry was removed, inserted or reordered)";
            break;
        }
        entry_hash(prev, sql_text(r, 1), sql_text(r, 2), sql_text(r, 3), sql_text(r, 4), sql_text(r, 5),
                   sql_text(r, 6), sql_text(r, 7), h);
        if (strcmp(h, sql_text(r, 9)) != 0) {
            why = "its content does not match its hash (the entry was altered)";
            break;
        }
        memcpy(prev, h, sizeof prev);
    }
    sql_rows_close(r);
    if (!why && rc == 0 && sql_one(tx, "SELECT hash FROM audit_chain WHERE id = 1", SQL_NOARGS, read_hash, head, &err) == 1 &&
        strcmp(head, prev) != 0) {
        why = "the chain head does not match the last entry (entries were removed from the end)";
        bad_seq = 0;
    }
    sql_rollback(tx);
    if (rc < 0) {
        fprintf(stderr, "pulse: reading the audit trail failed: %s\n", err.msg);
        return 1;
    }
    if (why) {
        if (bad_seq)
            printf("audit trail BROKEN at entry seq %lld: %s\n", bad_seq, why);
        else
            printf("audit trail BROKEN: %s\n", why);
        return 3;
    }
    printf("audit trail intact: %lld entries, head %s\n", n, prev);
    return 0;
}

static const struct service_command audit_commands[] = {
    {"verify", "check the hash chain of the audit trail", audit_verify},
};

static const http_route audit_routes[] = {
    {"GET", "/api/v1/admin/audit", audit_list, HTTP_AUTH, "the audit trail, newest first (admins)"},
};

static const char *const trail_types[] = {
    "pl.identity.role_changed.v1",     "pl.identity.user_registered.v1",  "pl.commerce.payment_captured.v1",
    "pl.commerce.payment_refunded.v1", "pl.commerce.invoice_issued.v1",   "pl.commerce.order_failed.v1",
    "pl.commerce.saga_needs_attention.v1", NULL};
static const char *const directory_types[] = {"pl.identity.user_registered.v1", "pl.identity.profile_updated.v1",
                                              "pl.identity.role_changed.v1", NULL};

static const consumer_def audit_consumers[] = {
    {.name = "trail", .types = trail_types, .handle = trail_handle},
    {.name = "directory", .types = directory_types, .handle = directory_handle, .reset = directory_reset,
     .flags = CONSUMER_PROJECTION},
};

const service_def audit_service = {
    .version = 1,
    .name = "audit",
    .summary = "append-only, hash-chained trail of account, role, billing and privacy actions",
    .stores = SERVICE_USES_SQL,
    .routes = audit_routes,
    .nroutes = sizeof audit_routes / sizeof audit_routes[0],
    .consumers = audit_consumers,
    .nconsumers = sizeof audit_consumers / sizeof audit_consumers[0],
    .commands = audit_commands,
    .ncommands = sizeof audit_commands / sizeof audit_commands[0],
};
