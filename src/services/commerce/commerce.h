/*
 * commerce.h - the commerce service's internals shared by its files:
 * purchases, the purchase saga (orchestrator), payments, invoices, refunds.
 * Not for other services (they learn about commerce from its events).
 */
#ifndef PULSE_SERVICES_COMMERCE_COMMERCE_H
#define PULSE_SERVICES_COMMERCE_COMMERCE_H

#include "services/commerce/payment.h"
#include "services/commerce/saga.h"
#include "services/service.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct commerce {
    service_ctx *ctx;
    int64_t step_timeout_ms;  /* a waiting step's deadline */
    int max_attempts;         /* per step */
    int64_t retry_backoff_ms; /* first retry delay of a provider call; doubles */
    int tax_rate_bp;
    int executor_batch;
    int64_t executor_poll_ms;
    const payment_provider *pay;
    void *pay_self;
    const char *crash_at;     /* PULSE_TEST_CRASH_AT, or NULL */

    int executor_threads;     /* 1, 2, 4, 8 or 16: each owns the orders whose id ends in its hex digits */
    pthread_t executor[16];
    int executor_running;     /* threads started */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    uint64_t poke_gen;        /* bumped by every poke; each executor thread remembers the last it saw */

    atomic_llong captures, refunds, transitions, provider_failures;
} commerce;

/* A saga row as read for a transition. */
typedef struct saga_row {
    char order_id[40];
    saga_state state;
    int attempt;
    int64_t ver;
    bool reserved, captured;
    char parked[32];
} saga_row;

/* Loads the saga of an order inside tx: 1 found, 0 none, <0 error. */
int commerce_saga_load(sql_tx *tx, const char *order_id, saga_row *out, pl_error *err);

/* Extra facts a transition may record. */
typedef struct saga_facts {
    const char *reason;       /* why (courses' rejection reason, the provider's message) */
    const char *detail;       /* history detail */
    const pay_result *pay;    /* the provider's answer, for RECORD_CAPTURE / RECORD_REFUND */
} saga_facts;

/* Applies `ev` to the saga `s` inside tx: computes saga_next(), runs its
 * actions (events, invoice, flags), writes the saga, the order and a history
 * line. PL_ECONFLICT when the row changed since it was loaded (ver). An
 * ignored event writes only a history line. */
int commerce_saga_apply(commerce *c, sql_tx *tx, saga_row *s, saga_event ev, const saga_facts *f, pl_error *err);

/* Wakes the executor (after a commit that made a saga due now). */
void commerce_poke(commerce *c);

/* PULSE_TEST_CRASH_AT: exits the process at once (status 137, like kill -9)
 * when `point` is the configured crash point. */
void commerce_crash_point(commerce *c, const char *point);

/* The executor thread (executor.c). */
int  commerce_executor_start(commerce *c, pl_error *err);
void commerce_executor_stop(commerce *c);

/* HTTP handlers (handlers.c). */
int commerce_purchase(http_req *req, http_res *res);
int commerce_order_get(http_req *req, http_res *res);
int commerce_my_orders(http_req *req, http_res *res);
int commerce_order_refund(http_req *req, http_res *res);
int commerce_invoice_get(http_req *req, http_res *res);
int commerce_admin_sagas(http_req *req, http_res *res);
int commerce_admin_saga_retry(http_req *req, http_res *res);
int commerce_admin_ledger(http_req *req, http_res *res);

#endif
