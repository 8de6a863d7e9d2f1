/*
 * saga.h - the purchase saga's transition table, as a pure function.
 *
 * The saga is a persisted state machine (commerce_sagas): one row per order.
 * saga_next() says, for a state and what just happened, which state comes
 * next and what must be done in the same transaction (emit a command to
 * courses, mark the seat reserved, issue the invoice, ...). It touches
 * nothing; commerce.c applies the result. Unit-tested in
 * tests/unit/commerce_saga.c.
 *
 * Steps are of two kinds:
 *  - waiting steps (reserving_seat, granting_access, releasing_seat): a command
 *    was emitted to courses; the reply arrives through the consumer, or the
 *    step's deadline passes (SAGA_EV_DEADLINE) and the command is sent again.
 *  - active steps (capturing_payment, refunding_payment, refunding_order): the
 *    executor thread calls the payment provider outside any transaction and
 *    then reports the result.
 *
 * `attempt` is the number of attempts of the current step already made,
 * including the one that just failed or timed out; a step is retried while
 * attempt < max_attempts, then the saga compensates (forward steps) or parks
 * in needs_attention (compensations).
 */
#ifndef PULSE_SERVICES_COMMERCE_SAGA_H
#define PULSE_SERVICES_COMMERCE_SAGA_H

#include <stdbool.h>

typedef enum {
    SAGA_RESERVING,       /* "reserving_seat": waiting for courses */
    SAGA_CAPTURING,       /* "capturing_payment": executor calls the provider */
    SAGA_GRANTING,        /* "granting_access": waiting for courses */
    SAGA_COMPLETED,       /* "completed": terminal unless refunded by an admin */
    SAGA_REFUNDING,       /* "refunding_payment": compensation, executor */
    SAGA_RELEASING,       /* "releasing_seat": compensation, waiting for courses */
    SAGA_FAILED,          /* "failed": terminal, everything compensated */
    SAGA_NEEDS_ATTENTION, /* "needs_attention": a compensation kept failing */
    SAGA_REVERSING,       /* "refunding_order": admin refund of a completed order, executor */
    SAGA_REFUNDED,        /* "refunded": terminal */
    SAGA_NSTATES
} saga_state;

typedef enum {
    SAGA_EV_SEAT_RESERVED,
    SAGA_EV_SEAT_REJECTED,
    SAGA_EV_SEAT_RELEASED,
    SAGA_EV_ACCESS_GRANTED,
    SAGA_EV_ACCESS_GRANT_FAILED,
    SAGA_EV_CAPTURE_OK,
    SAGA_EV_CAPTURE_DECLINED,
    SAGA_EV_CAPTURE_FAILED,   /* timeout or provider error: the charge may or may not exist */
    SAGA_EV_REFUND_OK,
    SAGA_EV_REFUND_FAILED,
    SAGA_EV_DEADLINE,         /* a waiting step's deadline passed */
    SAGA_EV_ADMIN_REFUND,
    SAGA_NEVENTS
} saga_event;

enum {
    SAGA_ACT_EMIT_RESERVE = 1u << 0,    /* pl.commerce.seat_reserve_requested.v1 */
    SAGA_ACT_EMIT_RELEASE = 1u << 1,    /* pl.commerce.seat_release_requested.v1 */
    SAGA_ACT_EMIT_GRANT = 1u << 2,      /* pl.commerce.access_grant_requested.v1 */
    SAGA_ACT_MARK_RESERVED = 1u << 3,
    SAGA_ACT_MARK_RELEASED = 1u << 4,
    SAGA_ACT_RECORD_CAPTURE = 1u << 5,  /* store the payment, emit payment_captured */
    SAGA_ACT_RECORD_REFUND = 1u << 6,   /* store the refund, emit payment_refunded (when money moved) */
    SAGA_ACT_ISSUE_INVOICE = 1u << 7,   /* invoice + order_completed */
    SAGA_ACT_CREDIT_NOTE = 1u << 8,     /* credit note for an admin refund */
    SAGA_ACT_EMIT_FAILED = 1u << 9,     /* order_failed */
    SAGA_ACT_NEEDS_ATTENTION = 1u << 10,/* saga_needs_attention, parked_state = the step */
    SAGA_ACT_SET_REASON = 1u << 11,     /* remember why the saga compensates (first reason wins) */
};

typedef struct saga_step {
    bool ignored;         /* the event means nothing in this state (a late or duplicate reply) */
    bool retry;           /* same state, one more attempt */
    saga_state next;
    unsigned actions;     /* SAGA_ACT_* */
    const char *outcome;  /* history line: what happened */
    const char *reason;   /* for SAGA_ACT_SET_REASON when the event brings none */
} saga_step;

saga_step saga_next(saga_state s, saga_event ev, int attempt, int max_attempts);

/* Waiting steps have a deadline; active steps are run by the executor. */
bool saga_is_waiting(saga_state s);
bool saga_is_active(saga_state s);
bool saga_is_terminal(saga_state s);
/* The order's coarse state for a saga state: pending, compensating,
 * completed, failed, needs_attention, refunding, refunded. */
const char *saga_order_state(saga_state s);

const char *saga_state_name(saga_state s);
int saga_state_parse(const char *name); /* the state, or -1 */
const char *saga_event_name(saga_event e);

#endif
