/*
 * executor.c - the saga executor: executor_threads threads per commerce
 * instance, each owning the orders whose id ends in its share of the hex
 * digits (so slow payment calls overlap and no two threads of one process
 * drive the same saga), that pick due sagas from commerce_sagas (state +
 * next_at_ms, indexed) and drive them:
 *
 *  - active steps (capturing_payment, refunding_payment, refunding_order): it
 *    calls the payment provider OUTSIDE any transaction (a consumer's
 *    transaction holds SQLite's write lock; an HTTP thread must not wait on a
 *    gateway), with the idempotency key "<order_id>:capture" or
 *    "<order_id>:refund", then records the answer and the next command in one
 *    transaction;
 *  - waiting steps whose deadline passed (no reply from courses): the
 *    DEADLINE event, which sends the command again or compensates.
 *
 * Every record is guarded by the saga's version: if a reply or another
 * instance moved the saga meanwhile, the result is dropped (the provider call
 * was idempotent, so repeating it later is harmless). Nothing lives only in
 * memory: after a crash, the due rows are found again on start.
 */
#include "core/log.h"
#include "core/timeutil.h"
#include "services/commerce/commerce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct due {
    char order_id[40];
    saga_state state;
    int64_t ver, amount;
    char currency[8];
} due;

typedef struct due_list {
    due *v;
    int n, cap;
} due_list;

typedef struct worker {
    commerce *c;
    char digits[80]; /* SQL list of the last hex digits this thread owns: '0', '4', ... */
} worker;

static int pick_due(commerce *c, const worker *w, due_list *out, pl_error *err)
{
    out->n = 0;
    sql_tx *tx = NULL;
    sql_rows *r;
    int rc = sql_begin(c->ctx->sql, SQL_TX_READ, &tx, err);
    if (rc)
        return rc;
    char q[768];
    snprintf(q, sizeof q,
             "SELECT s.order_id, s.state, s.ver, o.amount_cents, o.currency FROM commerce_sagas s"
             " JOIN commerce_orders o ON o.id = s.order_id"
             " WHERE s.state IN ('reserving_seat', 'capturing_payment', 'granting_access', 'refunding_payment',"
             " 'releasing_seat', 'refunding_order') AND s.next_at_ms <= $1%s%s%s"
             " ORDER BY s.next_at_ms LIMIT $2",
             w->digits[0] ? " AND substr(s.order_id, 36, 1) IN (" : "", w->digits, w->digits[0] ? ")" : "");
    rc = sql_query(tx, q, SQL_ARGS(SQL_INT(time_now_ms()), SQL_INT(out->cap)), &r, err);
    if (rc) {
        sql_rollback(tx);
        return rc;
    }
    while (out->n < out->cap && (rc = sql_next(r, err)) == 1) {
        due *d = &out->v[out->n];
        int st = saga_state_parse(sql_text(r, 1));
        if (st < 0)
            continue;
        snprintf(d->order_id, sizeof d->order_id, "%s", sql_text(r, 0));
        d->state = (saga_state)st;
        d->ver = sql_int(r, 2);
        d->amount = sql_int(r, 3);
        snprintf(d->currency, sizeof d->currency, "%s", sql_text(r, 4));
        out->n++;
    }
    sql_rows_close(r);
    sql_rollback(tx);
    return rc < 0 ? rc : 0;
}

/* Records ev for the saga if it is still at version d->ver. */
static void record(commerce *c, const due *d, saga_event ev, const saga_facts *f)
{
    pl_error err = {0};
    sql_tx *tx = NULL;
    saga_row s;
    int rc = sql_begin(c->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc) {
        log_with(LOG_WARN, "saga executor: cannot record", LF_STR("order_id", d->order_id), LF_STR("error", err.msg));
        return;
    }
    rc = commerce_saga_load(tx, d->order_id, &s, &err);
    if (rc == 1 && s.ver == d->ver && s.state == d->state) {
        rc = commerce_saga_apply(c, tx, &s, ev, f, &err);
        if (!rc)
            rc = sql_commit(tx, &err);
        else
            sql_rollback(tx);
        if (rc && rc != PL_ECONFLICT)
            log_with(LOG_WARN, "saga executor: recording failed (retried when due)", LF_STR("order_id", d->order_id),
                     LF_STR("error", err.msg));
        return;
    }
    sql_rollback(tx); /* moved meanwhile: its new state decides */
}

static void run_one(commerce *c, const due *d)
{
    if (saga_is_waiting(d->state)) {
        saga_facts f = {.detail = "no reply before the step's deadline"};
        record(c, d, SAGA_EV_DEADLINE, &f);
        return;
    }
    char key[64], capture_key[64], detail[256];
    snprintf(capture_key, sizeof capture_key, "%s:capture", d->order_id);
    pay_result r;
    saga_event ev;
    if (d->state == SAGA_CAPTURING) {
        commerce_crash_point(c, "before_capture");
        c->pay->xCapture(c->pay_self, capture_key, d->amount, d->currency, &r);
        commerce_crash_point(c, "after_capture");
        ev = r.status == PAY_OK ? SAGA_EV_CAPTURE_OK
             : r.status == PAY_DECLINED ? SAGA_EV_CAPTURE_DECLINED
                                        : SAGA_EV_CAPTURE_FAILED;
    } else {
        snprintf(key, sizeof key, "%s:refund", d->order_id);
        commerce_crash_point(c, "before_refund");
        c->pay->xRefund(c->pay_self, key, capture_key, d->amount, &r);
        commerce_crash_point(c, "after_refund");
        ev = r.status == PAY_OK ? SAGA_EV_REFUND_OK : SAGA_EV_REFUND_FAILED;
    }
    if (r.status == PAY_OK)
        snprintf(detail, sizeof detail, "provider %s: ok %s (%lld %s)", c->pay->name, r.id,
                 (long long)r.amount_cents, d->currency);
    else
        snprintf(detail, sizeof detail, "provider %s: %s (%s)", c->pay->name, pay_status_name(r.status), r.message);
    if (r.status != PAY_OK && r.status != PAY_DECLINED)
        atomic_fetch_add(&c->provider_failures, 1);
    saga_facts f = {.detail = detail, .pay = &r, .reason = r.status == PAY_OK ? NULL : r.message};
    if (ev == SAGA_EV_CAPTURE_DECLINED || ev == SAGA_EV_CAPTURE_FAILED)
        f.reason = NULL; /* the saga's own reason names it (payment_declined, payment_unavailable) */
    record(c, d, ev, &f);
}

static void *executor_main(void *arg)
{
    worker *w = arg;
    commerce *c = w->c;
    due_list list = {.cap = c->executor_batch};
    list.v = calloc((size_t)list.cap, sizeof *list.v);
    if (!list.v)
        abort();
    for (;;) {
        pthread_mutex_lock(&c->lock);
        bool stop = c->stopping;
        uint64_t seen = c->poke_gen;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;
        pl_error err = {0};
        int rc = pick_due(c, w, &list, &err);
        if (rc)
            log_with(LOG_WARN, "saga executor: cannot read due sagas", LF_STR("error", err.msg));
        for (int i = 0; !rc && i < list.n; i++)
            run_one(c, &list.v[i]);
        if (!rc && list.n == list.cap)
            continue; /* more may be due */
        pthread_mutex_lock(&c->lock);
        if (!c->stopping && c->poke_gen == seen) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (c->executor_poll_ms % 1000) * 1000000LL;
            ts.tv_sec += (time_t)(c->executor_poll_ms / 1000 + ns / 1000000000LL);
            ts.tv_nsec = (long)(ns % 1000000000LL);
            while (!c->stopping && c->poke_gen == seen && pthread_cond_timedwait(&c->wake, &c->lock, &ts) != ETIMEDOUT) {
            }
        }
        pthread_mutex_unlock(&c->lock);
    }
    free(list.v);
    free(w);
    return NULL;
}

int commerce_executor_start(commerce *c, pl_error *err)
{
    c->stopping = false;
    int n = c->executor_threads;
    for (int k = 0; k < n; k++) {
        worker *w = calloc(1, sizeof *w);
        if (!w)
            abort();
        w->c = c;
        size_t len = 0;
        for (int d = 0; n > 1 && d < 16; d++)
            if (d % n == k)
                len += (size_t)snprintf(w->digits + len, sizeof w->digits - len, "%s'%x'", len ? ", " : "", d);
        if (pthread_create(&c->executor[k], NULL, executor_main, w) != 0) {
            free(w);
            commerce_executor_stop(c);
            return err_set(err, PL_EINTERNAL, NULL, "cannot start the saga executor threads");
        }
        c->executor_running = k + 1;
    }
    return 0;
}

void commerce_executor_stop(commerce *c)
{
    if (!c->executor_running)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    for (int k = 0; k < c->executor_running; k++)
        pthread_join(c->executor[k], NULL);
    c->executor_running = 0;
}
