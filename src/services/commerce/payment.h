/*
 * payment.h - the payment provider interface commerce's saga calls, and the
 * built-in simulator.
 *
 * A provider is a const struct of callbacks (like the store drivers) over an
 * opaque instance. Calls block (they are "network" calls): commerce makes
 * them only from its saga executor thread, never inside a transaction and
 * never on an HTTP thread.
 *
 * Both calls are idempotent by key, as with a real gateway: a capture repeated
 * with the same key never charges twice (it answers the first charge), a
 * refund repeated with the same key never refunds twice. PAY_TIMEOUT means the
 * call's outcome is unknown (the charge may or may not exist): the caller
 * resolves it by retrying with the same key, or by refunding by the capture
 * key, which refunds the charge if it exists and answers PAY_OK with
 * amount_cents = 0 when there is none.
 *
 * The simulator ("simulator") keeps its ledger in commerce's sql store in its
 * own tables (paysim_*), each call in its own transaction, so its memory
 * survives restarts. Failure injection (see README.md):
 *   - rates in basis points (decline, timeout, error) and a latency;
 *   - magic amounts (amount_cents % 100), deterministic per order:
 *       01 capture declined              02 capture times out on every call (after charging)
 *       03 first capture call times out after charging, then ok
 *       04 capture errors on every call (no charge)
 *       05 refunds error on every call   06 first capture call errors (no charge), then ok
 */
#ifndef PULSE_SERVICES_COMMERCE_PAYMENT_H
#define PULSE_SERVICES_COMMERCE_PAYMENT_H

#include "core/err.h"
#include "store/sql.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { PAY_OK, PAY_DECLINED, PAY_TIMEOUT, PAY_ERROR } pay_status;

typedef struct pay_result {
    pay_status status;
    char id[40];            /* payment_id (capture) or refund_id (refund); "" when nothing happened */
    char payment_id[40];    /* refund: the refunded charge's payment_id ("" when there was none) */
    int64_t amount_cents;   /* what the call moved (refund: 0 when nothing was captured under the key) */
    char message[128];      /* why, for declines and failures */
} pay_result;

typedef struct payment_provider {
    int version;            /* 1 */
    const char *name;
    pay_status (*xCapture)(void *self, const char *key, int64_t amount_cents, const char *currency, pay_result *out);
    pay_status (*xRefund)(void *self, const char *key, const char *capture_key, int64_t amount_cents,
                          pay_result *out);
    void (*xDestroy)(void *self);
} payment_provider;

typedef struct paysim_opts {
    int64_t latency_ms;
    int decline_bp, timeout_bp, error_bp; /* basis points of calls */
    bool magic_amounts;
} paysim_opts;

extern const payment_provider paysim_provider;

/* Creates a simulator over db (borrowed). */
int paysim_create(sql_db *db, const paysim_opts *o, void **out, pl_error *err);

const char *pay_status_name(pay_status s);

#endif
