/*
 * commerce.c - the commerce service: premium course purchases through an
 * orchestrated saga (see README.md), payments through a provider (payment.h),
 * gapless invoices (invoice.h) and admin refunds.
 *
 * This file declares the service, applies saga transitions (the one place
 * that writes a saga, its order and its history), and holds the consumers:
 * the catalog projection of courses and the saga's inbox for courses'
 * replies. The executor thread is in executor.c, HTTP in handlers.c.
 */
#include "services/commerce/commerce.h"
#include "bus/outbox.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "http/metrics.h"
#include "services/commerce/invoice.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const config_key commerce_keys[] = {
    {"service.commerce", "step_timeout", CFG_DURATION, "10s", 50, 86400000,
     "how long the purchase saga waits for courses to answer a command before sending it again"},
    {"service.commerce", "max_attempts", CFG_INT, "3", 1, 100,
     "attempts per saga step (command or payment call) before compensating, or parking a compensation"},
    {"service.commerce", "retry_backoff", CFG_DURATION, "200ms", 1, 3600000,
     "delay before retrying a failed payment call; doubles per attempt"},
    {"service.commerce", "tax_rate_bp", CFG_INT, "0", 0, 10000,
     "tax added to course prices, in basis points (2000 = 20 %); rounded half up per invoice line"},
    {"service.commerce", "executor_batch", CFG_INT, "64", 1, 10000, "due sagas an executor thread picks per round"},
    {"service.commerce", "executor_threads", CFG_INT, "4", 1, 16,
     "saga executor threads (1, 2, 4, 8 or 16), so that slow payment calls overlap; each owns a share of the orders"},
    {"service.commerce", "executor_poll", CFG_DURATION, "100ms", 1, 60000,
     "how often the saga executor looks for due sagas when nothing woke it"},
    {"service.commerce", "payment_provider", CFG_STRING, "simulator", 0, 0,
     "payment provider: simulator (the only one built in)"},
    {"service.commerce", "payment_latency", CFG_DURATION, "0ms", 0, 60000, "simulator: delay of every call"},
    {"service.commerce", "payment_decline_bp", CFG_INT, "0", 0, 10000,
     "simulator: share of captures declined, in basis points"},
    {"service.commerce", "payment_timeout_bp", CFG_INT, "0", 0, 10000,
     "simulator: share of calls that time out (half of them after the charge or refund happened)"},
    {"service.commerce", "payment_error_bp", CFG_INT, "0", 0, 10000,
     "simulator: share of calls that fail with a provider error (nothing happened)"},
    {"service.commerce", "payment_magic_amounts", CFG_BOOL, "true", 0, 0,
     "simulator: amounts ending in 01..06 cents inject failures deterministically (see commerce/README.md)"},
};

/* ---- crash points (tests) -------------------------------------------------------------------- */

void commerce_crash_point(commerce *c, const char *point)
{
    if (c->crash_at && strcmp(c->crash_at, point) == 0) {
        log_with(LOG_WARN, "PULSE_TEST_CRASH_AT: exiting", LF_STR("point", point));
        _exit(137);
    }
}

static commerce *crash_owner; /* for the after-commit crash points (one commerce per process) */
static const char *const after_points[SAGA_NSTATES] = {
    "after_reserving_seat", "after_capturing_payment", "after_granting_access", "after_completed",
    "after_refunding_payment", "after_releasing_seat", "after_failed", "after_needs_attention",
    "after_refunding_order", "after_refunded",
};

static void crash_after_commit(void *ud)
{
    if (crash_owner)
        commerce_crash_point(crash_owner, ud);
}

/* ---- executor wake-up ---------------------------------------------------------------------- */

void commerce_poke(commerce *c)
{
    pthread_mutex_lock(&c->lock);
    c->poke_gen++;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
}

static void poke_after_commit(void *ud) { commerce_poke(ud); }

/* ---- the saga's writes ----------------------------------------------------------------------- */

static void read_saga(void *ud, sql_rows *r)
{
    saga_row *s = ud;
    snprintf(s->order_id, sizeof s->order_id, "%s", sql_text(r, 0));
    int st = saga_state_parse(sql_text(r, 1));
    s->state = st < 0 ? SAGA_NEEDS_ATTENTION : (saga_state)st;
    s->attempt = (int)sql_int(r, 2);
    s->ver = sql_int(r, 3);
    s->reserved = sql_int(r, 4) != 0;
    s->captured = sql_int(r, 5) != 0;
    snprintf(s->parked, sizeof s->parked, "%s", sql_text(r, 6) ? sql_text(r, 6) : "");
}

int commerce_saga_load(sql_tx *tx, const char *order_id, saga_row *out, pl_error *err)
{
    memset(out, 0, sizeof *out);
    return sql_one(tx,
                   "SELECT order_id, state, attempt, ver, reserved, captured, parked_state FROM commerce_sagas"
                   " WHERE order_id = $1",
                   SQL_ARGS(SQL_TEXT(order_id)), read_saga, out, err);
}

typedef struct order_facts {
    char buyer[40], course[136], currency[8], title[512], payment_id[40], reason[128];
    int64_t net, tax, amount;
    int rate_bp;
} order_facts;

static void read_order(void *ud, sql_rows *r)
{
    order_facts *o = ud;
    snprintf(o->buyer, sizeof o->buyer, "%s", sql_text(r, 0));
    snprintf(o->course, sizeof o->course, "%s", sql_text(r, 1));
    snprintf(o->currency, sizeof o->currency, "%s", sql_text(r, 2));
    snprintf(o->title, sizeof o->title, "%s", sql_text(r, 3));
    o->net = sql_int(r, 4);
    o->tax = sql_int(r, 5);
    o->amount = sql_int(r, 6);
    o->rate_bp = (int)sql_int(r, 7);
    snprintf(o->payment_id, sizeof o->payment_id, "%s", sql_text(r, 8) ? sql_text(r, 8) : "");
    snprintf(o->reason, sizeof o->reason, "%s", sql_text(r, 9) ? sql_text(r, 9) : "");
}

static int emit_command(sql_tx *tx, const char *type, const char *order_id, const order_facts *o, pl_error *err)
{
    return outbox_emit(tx, "commerce", type, order_id, NULL,
                       json_pack("{s:s, s:s, s:s}", "order_id", order_id, "course_id", o->course, "user_id", o->buyer),
                       NULL, err);
}

static int history(sql_tx *tx, const char *order_id, const char *step, const char *outcome, int attempt,
                   const char *at, const char *detail, pl_error *err)
{
    return sql_exec(tx,
                    "INSERT INTO commerce_saga_steps (order_id, step, outcome, attempt, at, detail)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    SQL_ARGS(SQL_TEXT(order_id), SQL_TEXT(step), SQL_TEXT(outcome), SQL_INT(attempt), SQL_TEXT(at),
                             SQL_TEXT_OR_NULL(detail)),
                    NULL, err);
}

int commerce_saga_apply(commerce *c, sql_tx *tx, saga_row *s, saga_event ev, const saga_facts *f, pl_error *err)
{
    static const saga_facts none = {0};
    if (!f)
        f = &none;
    bool failed_call = ev == SAGA_EV_CAPTURE_FAILED || ev == SAGA_EV_REFUND_FAILED;
    int done = failed_call ? s->attempt + 1 : s->attempt; /* attempts made, the one just reported included */
    saga_step st = saga_next(s->state, ev, done, c->max_attempts);
    int64_t now_ms = time_now_ms();
    char now[32];
    time_rfc3339(now_ms, now, sizeof now);
    const char *step = saga_state_name(s->state);
    if (st.ignored) {
        char outcome[64];
        snprintf(outcome, sizeof outcome, "ignored_%s", saga_event_name(ev));
        return history(tx, s->order_id, step, outcome, s->attempt, now, f->detail, err);
    }
    order_facts o = {0};
    int rc = sql_one(tx,
                     "SELECT buyer_id, course_id, currency, course_title, net_cents, tax_cents, amount_cents,"
                     " tax_rate_bp, payment_id, reason FROM commerce_orders WHERE id = $1",
                     SQL_ARGS(SQL_TEXT(s->order_id)), read_order, &o, err);
    if (rc <= 0)
        return rc < 0 ? rc : err_set(err, PL_EINTERNAL, NULL, "saga %s has no order", s->order_id);
    rc = 0;

    saga_state next = st.next;
    int attempt = st.retry ? s->attempt + 1 : saga_is_waiting(next) ? 1 : 0;
    int64_t next_at = 0;
    if (saga_is_waiting(next))
        next_at = now_ms + c->step_timeout_ms;
    else if (saga_is_active(next) && st.retry)
        next_at = now_ms + (c->retry_backoff_ms << (attempt - 1 < 10 ? attempt - 1 : 10));
    else if (saga_is_active(next))
        next_at = now_ms;
    bool reserved = s->reserved, captured = s->captured;
    const char *reason = o.reason[0] ? o.reason : NULL;
    if ((st.actions & SAGA_ACT_SET_REASON) && !reason)
        reason = f->reason ? f->reason : st.reason;
    const char *parked = NULL, *payment_id = NULL, *refund_id = NULL;
    char invoice_id[40] = "", invoice_no[32] = "", credit_id[40] = "";

    if (st.actions & SAGA_ACT_EMIT_RESERVE)
        rc = emit_command(tx, "pl.commerce.seat_reserve_requested.v1", s->order_id, &o, err);
    if (!rc && (st.actions & SAGA_ACT_EMIT_RELEASE))
        rc = emit_command(tx, "pl.commerce.seat_release_requested.v1", s->order_id, &o, err);
    if (!rc && (st.actions & SAGA_ACT_EMIT_GRANT))
        rc = emit_command(tx, "pl.commerce.access_grant_requested.v1", s->order_id, &o, err);
    if (st.actions & SAGA_ACT_MARK_RESERVED)
        reserved = true;
    if (st.actions & SAGA_ACT_MARK_RELEASED)
        reserved = false;
    if (!rc && (st.actions & SAGA_ACT_RECORD_CAPTURE) && f->pay) {
        captured = true;
        payment_id = f->pay->id;
        atomic_fetch_add(&c->captures, 1);
        rc = outbox_emit(tx, "commerce", "pl.commerce.payment_captured.v1", s->order_id, NULL,
                         json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "order_id", s->order_id, "payment_id",
                                   payment_id, "buyer_id", o.buyer, "amount_cents", (json_int_t)f->pay->amount_cents,
                                   "currency", o.currency, "captured_at", now),
                         NULL, err);
    }
    if (!rc && (st.actions & SAGA_ACT_RECORD_REFUND) && f->pay && f->pay->amount_cents > 0) {
        captured = false;
        refund_id = f->pay->id;
        atomic_fetch_add(&c->refunds, 1);
        if (!o.payment_id[0]) /* the capture's answer was lost: the refund names the charge */
            payment_id = f->pay->payment_id;
        rc = outbox_emit(tx, "commerce", "pl.commerce.payment_refunded.v1", s->order_id, NULL,
                         json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "order_id", s->order_id, "payment_id",
                                   o.payment_id[0] ? o.payment_id : f->pay->payment_id, "refund_id", refund_id,
                                   "buyer_id", o.buyer, "amount_cents", (json_int_t)f->pay->amount_cents, "currency",
                                   o.currency, "reason", reason ? reason : "refund", "refunded_at", now),
                         NULL, err);
    }
    if (!rc && (st.actions & (SAGA_ACT_ISSUE_INVOICE | SAGA_ACT_CREDIT_NOTE))) {
        bool credit = st.actions & SAGA_ACT_CREDIT_NOTE;
        if (!credit)
            commerce_crash_point(c, "before_invoice");
        invoice_input in = {.kind = credit ? "credit_note" : "invoice",
                            .order_id = s->order_id,
                            .buyer_id = o.buyer,
                            .currency = o.currency,
                            .description = o.title,
                            .net_cents = credit ? -o.net : o.net,
                            .tax_cents = credit ? -o.tax : o.tax,
                            .tax_rate_bp = o.rate_bp,
                            .now_ms = now_ms};
        char *id = credit ? credit_id : invoice_id;
        rc = invoice_issue(tx, &in, id, invoice_no, err);
        if (!rc)
            rc = outbox_emit(tx, "commerce", "pl.commerce.invoice_issued.v1", id, NULL,
                             json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "invoice_id", id, "number",
                                       invoice_no, "kind", in.kind, "order_id", s->order_id, "buyer_id", o.buyer,
                                       "total_cents", (json_int_t)(in.net_cents + in.tax_cents), "tax_cents",
                                       (json_int_t)in.tax_cents, "currency", o.currency, "issued_at", now),
                             NULL, err);
        if (!rc && !credit)
            rc = outbox_emit(tx, "commerce", "pl.commerce.order_completed.v1", s->order_id, NULL,
                             json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "order_id", s->order_id, "buyer_id",
                                       o.buyer, "course_id", o.course, "amount_cents", (json_int_t)o.amount,
                                       "currency", o.currency, "invoice_id", id, "invoice_number", invoice_no),
                             NULL, err);
    }
    if (!rc && (st.actions & SAGA_ACT_EMIT_FAILED))
        rc = outbox_emit(tx, "commerce", "pl.commerce.order_failed.v1", s->order_id, NULL,
                         json_pack("{s:s, s:s, s:s, s:s}", "order_id", s->order_id, "buyer_id", o.buyer, "course_id",
                                   o.course, "reason", reason ? reason : "failed"),
                         NULL, err);
    if (!rc && (st.actions & SAGA_ACT_NEEDS_ATTENTION)) {
        parked = step;
        log_with(LOG_WARN, "saga needs attention", LF_STR("order_id", s->order_id), LF_STR("step", step));
        rc = outbox_emit(tx, "commerce", "pl.commerce.saga_needs_attention.v1", s->order_id, NULL,
                         json_pack("{s:s, s:s, s:s, s:s, s:s}", "order_id", s->order_id, "buyer_id", o.buyer, "step",
                                   step, "reason", f->reason ? f->reason : st.outcome, "at", now),
                         NULL, err);
    }
    if (rc)
        return rc;

    int64_t changed = 0;
    rc = sql_exec(tx,
                  "UPDATE commerce_sagas SET state = $2, attempt = $3, next_at_ms = $4, ver = ver + 1, reserved = $5,"
                  " captured = $6, parked_state = COALESCE($7, parked_state), reason = $8, updated_at = $9"
                  " WHERE order_id = $1 AND ver = $10",
                  SQL_ARGS(SQL_TEXT(s->order_id), SQL_TEXT(saga_state_name(next)), SQL_INT(attempt), SQL_INT(next_at),
                           SQL_INT(reserved), SQL_INT(captured), SQL_TEXT_OR_NULL(parked), SQL_TEXT_OR_NULL(reason),
                           SQL_TEXT(now), SQL_INT(s->ver)),
                  &changed, err);
    if (!rc && changed == 0)
        return err_set(err, PL_ECONFLICT, NULL, "saga %s changed meanwhile", s->order_id);
    if (!rc)
        rc = sql_exec(tx,
                      "UPDATE commerce_orders SET state = $2, step = $3, reason = $4, updated_at = $5,"
                      " payment_id = COALESCE($6, payment_id), refund_id = COALESCE($7, refund_id),"
                      " invoice_id = COALESCE($8, invoice_id), credit_note_id = COALESCE($9, credit_note_id)"
                      " WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(s->order_id), SQL_TEXT(saga_order_state(next)),
                               SQL_TEXT(saga_state_name(next)), SQL_TEXT_OR_NULL(reason), SQL_TEXT(now),
                               SQL_TEXT_OR_NULL(payment_id && *payment_id ? payment_id : NULL),
                               SQL_TEXT_OR_NULL(refund_id), invoice_id[0] ? SQL_TEXT(invoice_id) : SQL_NULL,
                               credit_id[0] ? SQL_TEXT(credit_id) : SQL_NULL),
                      NULL, err);
    if (!rc)
        rc = history(tx, s->order_id, step, st.outcome, done ? done : 1, now, f->detail, err);
    if (!rc && next != s->state)
        rc = outbox_emit(tx, "commerce", "pl.commerce.order_updated.v1", s->order_id, NULL,
                         json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:s}", "order_id", s->order_id, "buyer_id",
                                   o.buyer, "course_id", o.course, "state", saga_order_state(next), "step",
                                   saga_state_name(next), "reason", reason, "updated_at", now),
                         NULL, err);
    if (rc)
        return rc;
    atomic_fetch_add(&c->transitions, 1);
    s->state = next;
    s->attempt = attempt;
    s->ver++;
    s->reserved = reserved;
    s->captured = captured;
    /* the crash point first: a poke would let the executor run the next step before the exit */
    if (c->crash_at)
        sql_after_commit(tx, crash_after_commit, (void *)after_points[next]);
    if (saga_is_active(next) && next_at <= now_ms)
        sql_after_commit(tx, poke_after_commit, c);
    return 0;
}

/* ---- consumers ------------------------------------------------------------------------------- */

static const char *str(const json_t *d, const char *k) { return json_string_value(json_object_get(d, k)); }

/* courses' replies to the saga's commands */
static int replies_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    commerce *c = ((service_ctx *)ctx)->state;
    static const struct { const char *type; saga_event ev; } map[] = {
        {"pl.courses.seat_reserved.v1", SAGA_EV_SEAT_RESERVED},
        {"pl.courses.seat_reservation_rejected.v1", SAGA_EV_SEAT_REJECTED},
        {"pl.courses.seat_released.v1", SAGA_EV_SEAT_RELEASED},
        {"pl.courses.access_granted.v1", SAGA_EV_ACCESS_GRANTED},
        {"pl.courses.access_grant_failed.v1", SAGA_EV_ACCESS_GRANT_FAILED},
    };
    int which = -1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(ev->type, map[i].type) == 0)
            which = (int)i;
    const char *order_id = str(ev->data, "order_id");
    if (which < 0 || !order_id)
        return err_set(err, PL_EINVAL, "data", "%s is not a saga reply with data.order_id", ev->type);
    saga_row s;
    int rc = commerce_saga_load(tx, order_id, &s, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        log_with(LOG_WARN, "saga reply for an unknown order", LF_STR("order_id", order_id), LF_STR("type", ev->type));
        return 0;
    }
    const char *reason = str(ev->data, "reason");
    char detail[256];
    snprintf(detail, sizeof detail, "%s%s%s", ev->type, reason ? ": " : "", reason ? reason : "");
    /* a rejection's reason is the order's (sold_out, ...); other replies keep theirs in the history */
    saga_facts f = {.reason = map[which].ev == SAGA_EV_SEAT_REJECTED ? reason : NULL, .detail = detail};
    rc = commerce_saga_apply(c, tx, &s, map[which].ev, &f, err);
    if (rc == PL_ECONFLICT) /* the executor moved it meanwhile: apply to the new state on redelivery */
        rc = err_set(err, PL_EUNAVAILABLE, NULL, "saga %s changed meanwhile", order_id);
    return rc;
}

/* the catalog projection: what commerce sells, from courses' events */
static int catalog_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const json_t *d = ev->data;
    const char *id = str(d, "course_id"), *title = str(d, "title");
    if (!id)
        return err_set(err, PL_EINVAL, "data", "%s without data.course_id", ev->type);
    if (!title) { /* a bare course_published */
        if (strcmp(ev->type, "pl.courses.course_published.v1") == 0)
            return sql_exec(tx, "UPDATE commerce_catalog SET published = 1, updated_at = $2 WHERE course_id = $1",
                            SQL_ARGS(SQL_TEXT(id), SQL_TEXT(ev->time)), NULL, err);
        return err_set(err, PL_EINVAL, "data", "%s without data.title", ev->type);
    }
    const json_t *price = json_object_get(d, "price_cents"), *pub = json_object_get(d, "published");
    bool published = json_is_true(pub) || strcmp(ev->type, "pl.courses.course_published.v1") == 0;
    return sql_exec(tx,
                    "INSERT INTO commerce_catalog (course_id, title, teacher_id, premium, price_cents, currency,"
                    " published, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (course_id) DO UPDATE SET title = excluded.title, teacher_id = excluded.teacher_id,"
                    " premium = excluded.premium, price_cents = excluded.price_cents, currency = excluded.currency,"
                    " published = excluded.published, updated_at = excluded.updated_at",
                    SQL_ARGS(SQL_TEXT(id), SQL_TEXT(title), SQL_TEXT_OR_NULL(str(d, "teacher_id")),
                             SQL_INT(json_is_true(json_object_get(d, "premium"))),
                             json_is_integer(price) ? SQL_INT(json_integer_value(price)) : SQL_NULL,
                             SQL_TEXT_OR_NULL(str(d, "currency")), SQL_INT(published), SQL_TEXT(ev->time)),
                    NULL, err);
}

static int catalog_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    (void)ctx;
    return sql_exec(tx, "DELETE FROM commerce_catalog", SQL_NOARGS, NULL, err);
}

static const char *const reply_types[] = {
    "pl.courses.seat_reserved.v1",  "pl.courses.seat_reservation_rejected.v1", "pl.courses.seat_released.v1",
    "pl.courses.access_granted.v1", "pl.courses.access_grant_failed.v1",       NULL,
};
static const char *const catalog_types[] = {"pl.courses.course_created.v1", "pl.courses.course_updated.v1",
                                            "pl.courses.course_published.v1", NULL};

static const consumer_def commerce_consumers[] = {
    {.name = "saga", .types = reply_types, .handle = replies_handle},
    {.name = "catalog", .types = catalog_types, .handle = catalog_handle, .reset = catalog_reset,
     .flags = CONSUMER_PROJECTION},
};

/* ---- metrics --------------------------------------------------------------------------------- */

static void commerce_metrics(service_ctx *ctx, metrics_buf *b)
{
    commerce *c = ctx->state;
    if (!c)
        return;
    int64_t n[SAGA_NSTATES] = {0};
    pl_error err = {0};
    sql_tx *tx = NULL;
    sql_rows *r;
    bool ok = false;
    if (sql_begin(ctx->sql, SQL_TX_READ, &tx, &err) == 0) {
        if (sql_query(tx,
                      "SELECT state, COUNT(*) FROM commerce_sagas WHERE state IN ('reserving_seat',"
                      " 'capturing_payment', 'granting_access', 'refunding_payment', 'releasing_seat',"
                      " 'needs_attention', 'refunding_order') GROUP BY state",
                      SQL_NOARGS, &r, &err) == 0) {
            ok = true;
            while (sql_next(r, &err) == 1) {
                int s = saga_state_parse(sql_text(r, 0));
                if (s >= 0)
                    n[s] = sql_int(r, 1);
            }
            sql_rows_close(r);
        }
        sql_rollback(tx);
    }
    if (ok) {
        metrics_printf(b, "# HELP pulse_commerce_sagas_needs_attention Purchase sagas parked for an admin.\n"
                          "# TYPE pulse_commerce_sagas_needs_attention gauge\n"
                          "pulse_commerce_sagas_needs_attention %lld\n",
                       (long long)n[SAGA_NEEDS_ATTENTION]);
        metrics_printf(b, "# HELP pulse_commerce_sagas_in_flight Purchase sagas in a non-terminal step.\n"
                          "# TYPE pulse_commerce_sagas_in_flight gauge\n");
        for (int s = 0; s < SAGA_NSTATES; s++)
            if (!saga_is_terminal((saga_state)s) && s != SAGA_NEEDS_ATTENTION)
                metrics_printf(b, "pulse_commerce_sagas_in_flight{step=\"%s\"} %lld\n", saga_state_name((saga_state)s),
                               (long long)n[s]);
    }
    metrics_printf(b,
                   "# HELP pulse_commerce_saga_transitions_total Saga transitions applied by this process.\n"
                   "# TYPE pulse_commerce_saga_transitions_total counter\npulse_commerce_saga_transitions_total %lld\n"
                   "# HELP pulse_commerce_payments_total Payment provider outcomes recorded by this process.\n"
                   "# TYPE pulse_commerce_payments_total counter\n"
                   "pulse_commerce_payments_total{result=\"captured\"} %lld\n"
                   "pulse_commerce_payments_total{result=\"refunded\"} %lld\n"
                   "pulse_commerce_payments_total{result=\"failed_call\"} %lld\n",
                   (long long)atomic_load(&c->transitions), (long long)atomic_load(&c->captures),
                   (long long)atomic_load(&c->refunds), (long long)atomic_load(&c->provider_failures));
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int commerce_start(service_ctx *ctx, pl_error *err)
{
    const char *sec = "service.commerce";
    if (strcmp(config_str(ctx->cfg, sec, "payment_provider"), "simulator") != 0)
        return err_set(err, PL_ECONFIG, "payment_provider",
                       "service.commerce.payment_provider must be \"simulator\" (the only provider built in)");
    int dec = (int)config_int(ctx->cfg, sec, "payment_decline_bp"), to = (int)config_int(ctx->cfg, sec, "payment_timeout_bp"),
        er = (int)config_int(ctx->cfg, sec, "payment_error_bp");
    if (dec + to + er > 10000)
        return err_set(err, PL_ECONFIG, "payment_decline_bp",
                       "service.commerce payment_decline_bp + payment_timeout_bp + payment_error_bp exceed 10000");
    commerce *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->ctx = ctx;
    c->step_timeout_ms = config_int(ctx->cfg, sec, "step_timeout");
    c->max_attempts = (int)config_int(ctx->cfg, sec, "max_attempts");
    c->retry_backoff_ms = config_int(ctx->cfg, sec, "retry_backoff");
    c->tax_rate_bp = (int)config_int(ctx->cfg, sec, "tax_rate_bp");
    c->executor_batch = (int)config_int(ctx->cfg, sec, "executor_batch");
    c->executor_poll_ms = config_int(ctx->cfg, sec, "executor_poll");
    c->executor_threads = (int)config_int(ctx->cfg, sec, "executor_threads");
    if (16 % c->executor_threads != 0) {
        free(c);
        return err_set(err, PL_ECONFIG, "executor_threads", "service.commerce.executor_threads must be 1, 2, 4, 8 or 16");
    }
    const char *crash = getenv("PULSE_TEST_CRASH_AT");
    c->crash_at = crash && *crash ? crash : NULL;
    crash_owner = c;
    paysim_opts po = {.latency_ms = config_int(ctx->cfg, sec, "payment_latency"),
                      .decline_bp = dec,
                      .timeout_bp = to,
                      .error_bp = er,
                      .magic_amounts = config_bool(ctx->cfg, sec, "payment_magic_amounts")};
    c->pay = &paysim_provider;
    int rc = paysim_create(ctx->sql, &po, &c->pay_self, err);
    if (rc) {
        free(c);
        return rc;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    ctx->state = c;
    if ((rc = commerce_executor_start(c, err))) {
        c->pay->xDestroy(c->pay_self);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->wake);
        free(c);
        ctx->state = NULL;
        return rc;
    }
    if (c->crash_at)
        log_with(LOG_WARN, "PULSE_TEST_CRASH_AT is set: this process exits at that saga step",
                 LF_STR("point", c->crash_at));
    return 0;
}

static void commerce_stop(service_ctx *ctx)
{
    commerce *c = ctx->state;
    if (!c)
        return;
    commerce_executor_stop(c);
    c->pay->xDestroy(c->pay_self);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    if (crash_owner == c)
        crash_owner = NULL;
    free(c);
    ctx->state = NULL;
}

static const http_route commerce_routes[] = {
    {"POST", "/api/v1/courses/{id}/purchase", commerce_purchase, HTTP_AUTH,
     "buy a premium course (Idempotency-Key required): 202 with the pending order"},
    {"GET", "/api/v1/orders/{id}", commerce_order_get, HTTP_AUTH, "an order, its saga state and step history"},
    {"GET", "/api/v1/me/orders", commerce_my_orders, HTTP_AUTH, "the caller's orders, newest first"},
    {"POST", "/api/v1/orders/{id}/refund", commerce_order_refund, HTTP_AUTH,
     "refund a completed order (admins): 202, credit note when done"},
    {"GET", "/api/v1/invoices/{id}", commerce_invoice_get, HTTP_AUTH,
     "an invoice or credit note (JSON, or printable HTML with Accept: text/html or ?format=html)"},
    {"GET", "/api/v1/admin/sagas", commerce_admin_sagas, HTTP_AUTH, "purchase sagas by state (admins)"},
    {"POST", "/api/v1/admin/sagas/{id}/retry", commerce_admin_saga_retry, HTTP_AUTH,
     "resume a saga parked in needs_attention at its step (admins)"},
    {"GET", "/api/v1/admin/payments/ledger", commerce_admin_ledger, HTTP_AUTH,
     "the payment simulator's ledger for an order (admins)"},
};

const service_def commerce_service = {
    .version = 1,
    .name = "commerce",
    .summary = "premium course purchases (saga orchestrator), payments, invoices, refunds",
    .stores = SERVICE_USES_SQL,
    .routes = commerce_routes,
    .nroutes = sizeof commerce_routes / sizeof commerce_routes[0],
    .config_keys = commerce_keys,
    .nconfig_keys = sizeof commerce_keys / sizeof commerce_keys[0],
    .start = commerce_start,
    .stop = commerce_stop,
    .consumers = commerce_consumers,
    .nconsumers = sizeof commerce_consumers / sizeof commerce_consumers[0],
    .metrics = commerce_metrics,
};
