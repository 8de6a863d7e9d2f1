/*
 * paysim.c - the payment provider simulator (see payment.h): a ledger of
 * charges and refunds by idempotency key in commerce's store, with injected
 * latency, declines, timeouts and errors.
 */
#include "services/commerce/payment.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct paysim {
    sql_db *db;
    paysim_opts o;
} paysim;

const char *pay_status_name(pay_status s)
{
    static const char *const n[] = {"ok", "declined", "timeout", "error"};
    return (unsigned)s < 4 ? n[s] : "unknown";
}

int paysim_create(sql_db *db, const paysim_opts *o, void **out, pl_error *err)
{
    (void)err;
    paysim *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->db = db;
    p->o = *o;
    *out = p;
    return 0;
}

static void paysim_destroy(void *self) { free(self); }

static void nap(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

typedef enum { INJ_NONE, INJ_DECLINE, INJ_TIMEOUT_CHARGED, INJ_TIMEOUT_UNCHARGED, INJ_ERROR } injection;

/* What the rates say for this call. */
static injection by_rate(const paysim *p)
{
    if (!p->o.decline_bp && !p->o.timeout_bp && !p->o.error_bp)
        return INJ_NONE;
    int r = (int)randombytes_uniform(10000);
    if (r < p->o.decline_bp)
        return INJ_DECLINE;
    r -= p->o.decline_bp;
    if (r < p->o.timeout_bp) /* a timeout: half of them after the charge was made */
        return randombytes_uniform(2) ? INJ_TIMEOUT_CHARGED : INJ_TIMEOUT_UNCHARGED;
    r -= p->o.timeout_bp;
    return r < p->o.error_bp ? INJ_ERROR : INJ_NONE;
}

static void read_int(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

/* Counts a call with this key (committed with the call's effect). */
static int count_call(sql_tx *tx, const char *key, int64_t *calls, pl_error *err)
{
    return sql_one(tx,
                   "INSERT INTO paysim_calls (key, calls) VALUES ($1, 1)"
                   " ON CONFLICT (key) DO UPDATE SET calls = paysim_calls.calls + 1 RETURNING calls",
                   SQL_ARGS(SQL_TEXT(key)), read_int, calls, err) == 1
               ? 0
               : PL_EINTERNAL;
}

static pay_status fail(pay_result *out, pay_status st, const char *msg)
{
    out->status = st;
    snprintf(out->message, sizeof out->message, "%s", msg);
    return st;
}

typedef struct charge {
    bool found;
    char payment_id[40];
    int64_t amount, refunded;
} charge;

static void read_charge(void *ud, sql_rows *r)
{
    charge *c = ud;
    c->found = true;
    snprintf(c->payment_id, sizeof c->payment_id, "%s", sql_text(r, 0));
    c->amount = sql_int(r, 1);
    c->refunded = sql_int(r, 2);
}

static pay_status paysim_capture(void *self, const char *key, int64_t amount, const char *currency, pay_result *out)
{
    paysim *p = self;
    memset(out, 0, sizeof *out);
    nap(p->o.latency_ms);
    pl_error err = {0};
    sql_tx *tx;
    if (sql_begin(p->db, SQL_TX_WRITE, &tx, &err))
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    int64_t calls = 0;
    charge c = {0};
    int rc = count_call(tx, key, &calls, &err);
    if (!rc)
        rc = sql_one(tx, "SELECT payment_id, amount_cents, refunded_cents FROM paysim_charges WHERE key = $1",
                     SQL_ARGS(SQL_TEXT(key)), read_charge, &c, &err) < 0 ? PL_EINTERNAL : 0;
    if (rc) {
        sql_rollback(tx);
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    }
    injection inj = INJ_NONE;
    int magic = p->o.magic_amounts ? (int)(amount % 100) : 0;
    switch (magic) {
    case 1: inj = INJ_DECLINE; break;
    case 2: inj = INJ_TIMEOUT_CHARGED; break;
    case 3: inj = calls == 1 ? INJ_TIMEOUT_CHARGED : INJ_NONE; break;
    case 4: inj = INJ_ERROR; break;
    case 6: inj = calls == 1 ? INJ_ERROR : INJ_NONE; break;
    default: inj = by_rate(p); break;
    }
    pay_status st = PAY_OK;
    if (c.found) {
        /* A repeated key answers the first charge, unless the "network" fails this call too. */
        if (c.amount != amount)
            st = fail(out, PAY_ERROR, "idempotency key reused with another amount");
        else if (inj == INJ_TIMEOUT_CHARGED || inj == INJ_TIMEOUT_UNCHARGED)
            st = fail(out, PAY_TIMEOUT, "gateway timeout");
        else if (inj == INJ_ERROR)
            st = fail(out, PAY_ERROR, "gateway error");
    } else if (inj == INJ_DECLINE) {
        st = fail(out, PAY_DECLINED, "card declined");
    } else if (inj == INJ_ERROR || inj == INJ_TIMEOUT_UNCHARGED) {
        st = fail(out, inj == INJ_ERROR ? PAY_ERROR : PAY_TIMEOUT,
                  inj == INJ_ERROR ? "gateway error" : "gateway timeout");
    } else {
        char now[32];
        time_rfc3339(time_now_ms(), now, sizeof now);
        uuid7_new(c.payment_id);
        c.amount = amount;
        rc = sql_exec(tx,
                      "INSERT INTO paysim_charges (key, payment_id, amount_cents, currency, calls, created_at)"
                      " VALUES ($1, $2, $3, $4, 1, $5)",
                      SQL_ARGS(SQL_TEXT(key), SQL_TEXT(c.payment_id), SQL_INT(amount), SQL_TEXT(currency),
                               SQL_TEXT(now)),
                      NULL, &err);
        if (rc) {
            sql_rollback(tx);
            return fail(out, PAY_ERROR, "the gateway is unavailable");
        }
        if (inj == INJ_TIMEOUT_CHARGED) /* charged, but the answer is lost */
            st = fail(out, PAY_TIMEOUT, "gateway timeout");
    }
    if (sql_commit(tx, &err))
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    if (st == PAY_OK) {
        out->status = PAY_OK;
        snprintf(out->id, sizeof out->id, "%s", c.payment_id);
        out->amount_cents = c.amount;
    }
    return st;
}

typedef struct refund_row {
    bool found;
    char id[40];
    int64_t amount;
} refund_row;

static void read_refund(void *ud, sql_rows *r)
{
    refund_row *f = ud;
    f->found = true;
    snprintf(f->id, sizeof f->id, "%s", sql_text(r, 0));
    f->amount = sql_int(r, 1);
}

static pay_status paysim_refund(void *self, const char *key, const char *capture_key, int64_t amount, pay_result *out)
{
    paysim *p = self;
    memset(out, 0, sizeof *out);
    nap(p->o.latency_ms);
    if (p->o.magic_amounts && amount % 100 == 5)
        return fail(out, PAY_ERROR, "gateway error (refunds of amounts ending in 05 always fail)");
    injection inj = by_rate(p);
    if (inj == INJ_ERROR || inj == INJ_TIMEOUT_UNCHARGED)
        return fail(out, inj == INJ_ERROR ? PAY_ERROR : PAY_TIMEOUT,
                    inj == INJ_ERROR ? "gateway error" : "gateway timeout");
    pl_error err = {0};
    sql_tx *tx;
    if (sql_begin(p->db, SQL_TX_WRITE, &tx, &err))
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    int64_t calls = 0;
    refund_row f = {0};
    charge c = {0};
    int rc = count_call(tx, key, &calls, &err);
    if (!rc && sql_one(tx, "SELECT refund_id, amount_cents FROM paysim_refunds WHERE key = $1",
                       SQL_ARGS(SQL_TEXT(key)), read_refund, &f, &err) < 0)
        rc = PL_EINTERNAL;
    if (!rc &&
        sql_one(tx, "SELECT payment_id, amount_cents, refunded_cents FROM paysim_charges WHERE key = $1",
                SQL_ARGS(SQL_TEXT(capture_key)), read_charge, &c, &err) < 0)
        rc = PL_EINTERNAL;
    if (!rc && !f.found && c.found) {
        int64_t left = c.amount - c.refunded;
        if (amount > left) {
            sql_rollback(tx);
            return fail(out, PAY_ERROR, "refund exceeds what is left of the charge");
        }
        char now[32];
        time_rfc3339(time_now_ms(), now, sizeof now);
        uuid7_new(f.id);
        f.amount = amount;
        f.found = true;
        rc = sql_exec(tx,
                      "INSERT INTO paysim_refunds (key, charge_key, refund_id, amount_cents, created_at)"
                      " VALUES ($1, $2, $3, $4, $5)",
                      SQL_ARGS(SQL_TEXT(key), SQL_TEXT(capture_key), SQL_TEXT(f.id), SQL_INT(amount), SQL_TEXT(now)),
                      NULL, &err);
        if (!rc)
            rc = sql_exec(tx, "UPDATE paysim_charges SET refunded_cents = refunded_cents + $2 WHERE key = $1",
                          SQL_ARGS(SQL_TEXT(capture_key), SQL_INT(amount)), NULL, &err);
    }
    if (rc) {
        sql_rollback(tx);
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    }
    if (sql_commit(tx, &err))
        return fail(out, PAY_ERROR, "the gateway is unavailable");
    if (inj == INJ_TIMEOUT_CHARGED) /* refunded, but the answer is lost */
        return fail(out, PAY_TIMEOUT, "gateway timeout");
    out->status = PAY_OK;
    snprintf(out->id, sizeof out->id, "%s", f.id);
    out->amount_cents = f.found ? f.amount : 0; /* no charge under capture_key: nothing to refund */
    snprintf(out->payment_id, sizeof out->payment_id, "%s", c.found ? c.payment_id : "");
    return PAY_OK;
}

const payment_provider paysim_provider = {
    .version = 1,
    .name = "simulator",
    .xCapture = paysim_capture,
    .xRefund = paysim_refund,
    .xDestroy = paysim_destroy,
};
