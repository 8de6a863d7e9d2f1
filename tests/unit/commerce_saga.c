/* commerce_saga.c - the purchase saga's transition table (src/services/commerce/saga.c):
 * every forward step, every compensation in reverse order, bounded retries,
 * parking, and replies that must change nothing in the wrong state. */
#include "services/commerce/saga.h"

#include <criterion/criterion.h>
#include <string.h>

#define MAX 3

static saga_step go(saga_state s, saga_event e, int attempt) { return saga_next(s, e, attempt, MAX); }

static void expect(saga_state s, saga_event e, int attempt, saga_state next, unsigned must, unsigned must_not)
{
    saga_step st = go(s, e, attempt);
    cr_assert_not(st.ignored, "%s x %s ignored", saga_state_name(s), saga_event_name(e));
    cr_assert_eq(st.next, next, "%s x %s -> %s, expected %s", saga_state_name(s), saga_event_name(e),
                 saga_state_name(st.next), saga_state_name(next));
    cr_assert_eq(st.actions & must, must, "%s x %s lacks actions %#x", saga_state_name(s), saga_event_name(e), must);
    cr_assert_eq(st.actions & must_not, 0u, "%s x %s has forbidden actions", saga_state_name(s), saga_event_name(e));
    cr_assert_not_null(st.outcome);
}

Test(commerce_saga, happy_path)
{
    expect(SAGA_RESERVING, SAGA_EV_SEAT_RESERVED, 1, SAGA_CAPTURING, SAGA_ACT_MARK_RESERVED, SAGA_ACT_EMIT_FAILED);
    expect(SAGA_CAPTURING, SAGA_EV_CAPTURE_OK, 1, SAGA_GRANTING, SAGA_ACT_RECORD_CAPTURE | SAGA_ACT_EMIT_GRANT, 0);
    expect(SAGA_GRANTING, SAGA_EV_ACCESS_GRANTED, 1, SAGA_COMPLETED, SAGA_ACT_ISSUE_INVOICE, SAGA_ACT_RECORD_REFUND);
}

Test(commerce_saga, compensations_in_reverse_order)
{
    /* rejected seat: nothing taken, nothing to undo */
    expect(SAGA_RESERVING, SAGA_EV_SEAT_REJECTED, 1, SAGA_FAILED, SAGA_ACT_EMIT_FAILED | SAGA_ACT_SET_REASON,
           SAGA_ACT_EMIT_RELEASE);
    /* declined: the seat is released, no refund */
    expect(SAGA_CAPTURING, SAGA_EV_CAPTURE_DECLINED, 1, SAGA_RELEASING, SAGA_ACT_EMIT_RELEASE, SAGA_ACT_RECORD_REFUND);
    /* grant failed: refund first, then release, then failed */
    expect(SAGA_GRANTING, SAGA_EV_ACCESS_GRANT_FAILED, 1, SAGA_REFUNDING, SAGA_ACT_SET_REASON, SAGA_ACT_EMIT_RELEASE);
    expect(SAGA_REFUNDING, SAGA_EV_REFUND_OK, 1, SAGA_RELEASING, SAGA_ACT_RECORD_REFUND | SAGA_ACT_EMIT_RELEASE, 0);
    expect(SAGA_RELEASING, SAGA_EV_SEAT_RELEASED, 1, SAGA_FAILED, SAGA_ACT_MARK_RELEASED | SAGA_ACT_EMIT_FAILED, 0);
}

Test(commerce_saga, bounded_retries_then_compensate)
{
    /* a capture that fails (timeout/error) is retried while attempts remain ... */
    saga_step st = go(SAGA_CAPTURING, SAGA_EV_CAPTURE_FAILED, 1);
    cr_assert(st.retry);
    cr_assert_eq(st.next, SAGA_CAPTURING);
    cr_assert(go(SAGA_CAPTURING, SAGA_EV_CAPTURE_FAILED, MAX - 1).retry);
    /* ... then refunds by the capture key (the charge may exist) */
    st = go(SAGA_CAPTURING, SAGA_EV_CAPTURE_FAILED, MAX);
    cr_assert_not(st.retry);
    cr_assert_eq(st.next, SAGA_REFUNDING);
    cr_assert_str_eq(st.reason, "payment_unavailable");
    /* deadlines of waiting steps resend the command, then compensate */
    expect(SAGA_RESERVING, SAGA_EV_DEADLINE, 1, SAGA_RESERVING, SAGA_ACT_EMIT_RESERVE, 0);
    cr_assert(go(SAGA_RESERVING, SAGA_EV_DEADLINE, 1).retry);
    expect(SAGA_RESERVING, SAGA_EV_DEADLINE, MAX, SAGA_RELEASING, SAGA_ACT_EMIT_RELEASE, SAGA_ACT_EMIT_RESERVE);
    expect(SAGA_GRANTING, SAGA_EV_DEADLINE, 2, SAGA_GRANTING, SAGA_ACT_EMIT_GRANT, 0);
    expect(SAGA_GRANTING, SAGA_EV_DEADLINE, MAX, SAGA_REFUNDING, 0, SAGA_ACT_EMIT_GRANT);
}

Test(commerce_saga, failing_compensations_park)
{
    cr_assert(go(SAGA_REFUNDING, SAGA_EV_REFUND_FAILED, 1).retry);
    expect(SAGA_REFUNDING, SAGA_EV_REFUND_FAILED, MAX, SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, 0);
    expect(SAGA_RELEASING, SAGA_EV_DEADLINE, 1, SAGA_RELEASING, SAGA_ACT_EMIT_RELEASE, 0);
    expect(SAGA_RELEASING, SAGA_EV_DEADLINE, MAX, SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, 0);
    expect(SAGA_REVERSING, SAGA_EV_REFUND_FAILED, MAX, SAGA_NEEDS_ATTENTION, SAGA_ACT_NEEDS_ATTENTION, 0);
}

Test(commerce_saga, admin_refund)
{
    expect(SAGA_COMPLETED, SAGA_EV_ADMIN_REFUND, 0, SAGA_REVERSING, 0, 0);
    expect(SAGA_REVERSING, SAGA_EV_REFUND_OK, 1, SAGA_REFUNDED, SAGA_ACT_RECORD_REFUND | SAGA_ACT_CREDIT_NOTE, 0);
    cr_assert(go(SAGA_FAILED, SAGA_EV_ADMIN_REFUND, 0).ignored, "a failed order has nothing to refund");
}

Test(commerce_saga, late_and_duplicate_replies_change_nothing)
{
    /* every (state, event) pair not in the table is ignored and stays put */
    int handled = 0;
    for (int s = 0; s < SAGA_NSTATES; s++)
        for (int e = 0; e < SAGA_NEVENTS; e++) {
            saga_step st = go((saga_state)s, (saga_event)e, 1);
            if (st.ignored) {
                cr_assert_eq(st.next, (saga_state)s);
                cr_assert_eq(st.actions, 0u);
            } else {
                handled++;
            }
        }
    cr_assert_eq(handled, 16, "the table has %d transitions", handled);
    /* terminal states take no reply at all */
    for (int e = 0; e < SAGA_NEVENTS; e++) {
        cr_assert(go(SAGA_FAILED, (saga_event)e, 1).ignored);
        cr_assert(go(SAGA_REFUNDED, (saga_event)e, 1).ignored);
        cr_assert(go(SAGA_NEEDS_ATTENTION, (saga_event)e, 1).ignored);
    }
    /* a seat_reserved arriving after the reservation timed out does not restart the payment */
    cr_assert(go(SAGA_RELEASING, SAGA_EV_SEAT_RESERVED, 1).ignored);
    cr_assert(go(SAGA_CAPTURING, SAGA_EV_SEAT_RESERVED, 1).ignored);
}

Test(commerce_saga, names_and_kinds)
{
    for (int s = 0; s < SAGA_NSTATES; s++) {
        cr_assert_eq(saga_state_parse(saga_state_name((saga_state)s)), s);
        int kinds = saga_is_waiting((saga_state)s) + saga_is_active((saga_state)s) + saga_is_terminal((saga_state)s);
        cr_assert_leq(kinds, 1, "%s has one kind at most", saga_state_name((saga_state)s));
    }
    cr_assert_eq(saga_state_parse("bogus"), -1);
    cr_assert_eq(saga_state_parse(NULL), -1);
    cr_assert_str_eq(saga_order_state(SAGA_CAPTURING), "pending");
    cr_assert_str_eq(saga_order_state(SAGA_RELEASING), "compensating");
    cr_assert_str_eq(saga_order_state(SAGA_NEEDS_ATTENTION), "needs_attention");
}
