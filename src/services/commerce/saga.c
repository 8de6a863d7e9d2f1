/* saga.c - the purchase saga's transition table (see saga.h). */
#include "services/commerce/saga.h"

#include <string.h>

static const char *const state_names[SAGA_NSTATES] = {
    "reserving_seat", "capturing_payment", "granting_access", "completed",       "refunding_payment",
    "releasing_seat", "failed",            "needs_attention", "refunding_order", "refunded",
};

static const char *const event_names[SAGA_NEVENTS] = {
    "seat_reserved",  "seat_reservation_rejected", "seat_released",  "access_granted",
    "access_grant_failed", "capture_ok",           "capture_declined", "capture_failed",
    "refund_ok",      "refund_failed",             "deadline",       "admin_refund",
};

const char *saga_state_name(saga_state s) { return (unsigned)s < SAGA_NSTATES ? state_names[s] : "unknown"; }
const char *saga_event_name(saga_event e) { return (unsigned)e < SAGA_NEVENTS ? event_names[e] : "unknown"; }

int saga_state_parse(const char *name)
{
    for (int i = 0; name && i < SAGA_NSTATES; i++)
        if (strcmp(state_names[i], name) == 0)
            return i;
    return -1;
}

bool saga_is_waiting(saga_state s) { return s == SAGA_RESERVING || s == SAGA_GRANTING || s == SAGA_RELEASING; }
bool saga_is_active(saga_state s) { return s == SAGA_CAPTURING || s == SAGA_REFUNDING || s == SAGA_REVERSING; }
bool saga_is_terminal(saga_state s) { return s == SAGA_COMPLETED || s == SAGA_FAILED || s == SAGA_REFUNDED; }

const char *saga_order_state(saga_state s)
{
    switch (s) {
    case SAGA_RESERVING:
    case SAGA_CAPTURING:
    case SAGA_GRANTING: return "pending";
    case SAGA_REFUNDING:
    case SAGA_RELEASING: return "compensating";
    case SAGA_COMPLETED: return "completed";
    case SAGA_FAILED: return "failed";
    case SAGA_NEEDS_ATTENTION: return "needs_attention";
    case SAGA_REVERSING: return "refunding";
    case SAGA_REFUNDED: return "refunded";
    default: return "unknown";
    }
}

static saga_step to(saga_state next, unsigned actions, const char *outcome)
{
    return (saga_step){.next = next, .actions = actions, .outcome = outcome};
}

static saga_step compensate(saga_state next, unsigned actions, const char *outcome, const char *reason)
{
    saga_step st = to(next, actions | SAGA_ACT_SET_REASON, outcome);
    st.reason = reason;
    return st;
}

/* A failed attempt: again while attempts remain, else `exhausted`. */
static saga_step retry_or(saga_state s, int attempt, int max, unsigned again, saga_step exhausted, const char *outcome)
{
    if (attempt < max) {
        saga_step st = to(s, again, outcome);
        st.retry = true;
        return st;
    }
    return exhausted;
}

saga_step saga_next(saga_state s, saga_event ev, int attempt, int max)
{
    switch (s) {
    case SAGA_RESERVING:
        if (ev == SAGA_EV_SEAT_RESERVED)
            return to(SAGA_CAPTURING, SAGA_ACT_MARK_RESERVED, "seat_reserved");
        if (ev == SAGA_EV_SEAT_REJECTED) /* nothing was taken: nothing to compensate */
            return compensate(SAGA_FAILED, SAGA_ACT_EMIT_FAILED, "seat_reservation_rejected", "seat_unavailable");
        if (ev == SAGA_EV_DEADLINE) /* the seat may have been reserved meanwhile: release is idempotent */
            return retry_or(s, attempt, max, SAGA_ACT_EMIT_RESERVE,
                            compensate(SAGA_RELEASING, SAGA_ACT_EMIT_RELEASE, "timed_out", "seat_reservation_timeout"),
                            "timed_out_retrying");
        break;
    case SAGA_CAPTURING:
        if (ev == SAGA_EV_CAPTURE_OK)
            return to(SAGA_GRANTING, SAGA_ACT_RECORD_CAPTURE | SAGA_ACT_EMIT_GRANT, "payment_captured");
        if (ev == SAGA_EV_CAPTURE_DECLINED)
            return compensate(SAGA_RELEASING, SAGA_ACT_EMIT_RELEASE, "payment_declined", "payment_declined");
        if (ev == SAGA_EV_CAPTURE_FAILED) /* maybe charged: refund by the capture's key voids it if so */
            return retry_or(s, attempt, max, 0,
                            compensate(SAGA_REFUNDING, 0, "payment_failed", "payment_unavailable"),
                            "payment_failed_retrying");
        break;
    case SAGA_GRANTING:
        if (ev == SAGA_EV_ACCESS_GRANTED)
            return to(SAGA_COMPLETED, SAGA_ACT_ISSUE_INVOICE, "access_granted");
        if (ev == SAGA_EV_ACCESS_GRANT_FAILED)
            return compensate(SAGA_REFUNDING, 0, "access_grant_failed", "access_grant_failed");
        if (ev == SAGA_EV_DEADLINE)
            return retry_or(s, attempt, max, SAGA_ACT_EMIT_GRANT,
                            compensate(SAGA_REFUNDING, 0, "timed_out", "access_grant_timeout"), "timed_out_retrying");
        break;
    case SAGA_REFUNDING:
        if (ev == SAGA_EV_REFUND_OK)
            return to(SAGA_RELEASING, SAGA_ACT_RECORD_REFUND | SAGA_ACT_EMIT_RELEASE, "payment_refunded");
        if (ev == SAGA_EV_REFUND_FAILED)
            return retry_or(s, attempt, max, 0, to(SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, "refund_failed"),
                            "refund_failed_retrying");
        break;
    case SAGA_RELEASING:
        if (ev == SAGA_EV_SEAT_RELEASED)
            return to(SAGA_FAILED, SAGA_ACT_MARK_RELEASED | SAGA_ACT_EMIT_FAILED, "seat_released");
        if (ev == SAGA_EV_DEADLINE)
            return retry_or(s, attempt, max, SAGA_ACT_EMIT_RELEASE,
                            to(SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, "timed_out"), "timed_out_retrying");
        break;
    case SAGA_COMPLETED:
        if (ev == SAGA_EV_ADMIN_REFUND)
            return compensate(SAGA_REVERSING, 0, "refund_requested", "refunded_by_admin");
        break;
    case SAGA_REVERSING:
        if (ev == SAGA_EV_REFUND_OK)
            return to(SAGA_REFUNDED, SAGA_ACT_RECORD_REFUND | SAGA_ACT_CREDIT_NOTE, "payment_refunded");
        if (ev == SAGA_EV_REFUND_FAILED)
            return retry_or(s, attempt, max, 0, to(SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, "refund_failed"),
                            "refund_failed_retrying");
        break;
    default:
        break;
    }
    saga_step st = to(s, 0, "ignored");
    st.ignored = true;
    return st;
}
