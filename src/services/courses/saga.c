/*
 * saga.c - courses' part in the purchase saga (commerce orchestrates):
 * seat reservation, release and access grant, each keyed by order_id in
 * seat_reservations so that a command delivered again (same event or a new
 * one for the same order) changes nothing more and is answered with the
 * same reply. Replies go through the outbox in the consumer's transaction.
 *
 *   reserve  no row: check the course (published, premium, user not
 *            enrolled, a seat free: courses.seats_used counts enrollments and
 *            live reservations, taken by one conditional UPDATE so the last
 *            seat goes to exactly one order) -> reserved | rejected(reason).
 *            Row there: the reply it got (reserved, granted and released rows
 *            were reserved; a release tombstone answers seat_released).
 *   release  reserved -> released (seat freed); granted -> released (the
 *            purchase enrollment is revoked and the seat freed: compensation
 *            after a grant); unknown order -> a released tombstone (so a late
 *            reserve cannot take a seat); always replies seat_released.
 *   grant    reserved -> granted (an enrollment via purchase, the seat it
 *            held becomes the enrollment's); granted -> the same reply;
 *            otherwise access_grant_failed. Fault injection: a course whose
 *            fail_access_grant flag an admin set (PUT courses/{id}/faults,
 *            only with service.courses.fault_injection on) fails every grant
 *            with reason "fault_injected", leaving the reservation reserved.
 */
#include "services/courses/courses.h"
#include "bus/outbox.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

typedef struct reservation {
    char course_id[130], user_id[130], state[16], reason[32], enrollment_id[40];
    bool holds_seat;
} reservation;

static void read_reservation(void *ud, sql_rows *r)
{
    reservation *v = ud;
    snprintf(v->course_id, sizeof v->course_id, "%s", sql_text(r, 0));
    snprintf(v->user_id, sizeof v->user_id, "%s", sql_text(r, 1));
    snprintf(v->state, sizeof v->state, "%s", sql_text(r, 2));
    snprintf(v->reason, sizeof v->reason, "%s", sql_isnull(r, 3) ? "" : sql_text(r, 3));
    snprintf(v->enrollment_id, sizeof v->enrollment_id, "%s", sql_isnull(r, 4) ? "" : sql_text(r, 4));
    v->holds_seat = sql_int(r, 5) != 0;
}

static int reservation_load(sql_tx *tx, const char *order_id, reservation *v, pl_error *err)
{
    memset(v, 0, sizeof *v);
    return sql_one(tx,
                   "SELECT course_id, user_id, state, reason, enrollment_id, holds_seat FROM seat_reservations"
                   " WHERE order_id = $1",
                   SQL_ARGS(SQL_TEXT(order_id)), read_reservation, v, err);
}

static int reservation_insert(sql_tx *tx, const char *order_id, const char *course_id, const char *user_id,
                              const char *state, const char *reason, bool holds_seat, pl_error *err)
{
    char now[32];
    courses_now(now);
    return sql_exec(tx,
                    "INSERT INTO seat_reservations (order_id, course_id, user_id, state, reason, holds_seat,"
                    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    SQL_ARGS(SQL_TEXT(order_id), SQL_TEXT(course_id), SQL_TEXT(user_id), SQL_TEXT(state),
                             SQL_TEXT_OR_NULL(reason), SQL_INT(holds_seat), SQL_TEXT(now)),
                    NULL, err);
}

static int reservation_set(sql_tx *tx, const char *order_id, const char *state, bool holds_seat,
                           const char *enrollment_id, pl_error *err)
{
    char now[32];
    courses_now(now);
    return sql_exec(tx,
                    "UPDATE seat_reservations SET state = $2, holds_seat = $3, enrollment_id = COALESCE($4,"
                    " enrollment_id), updated_at = $5 WHERE order_id = $1",
                    SQL_ARGS(SQL_TEXT(order_id), SQL_TEXT(state), SQL_INT(holds_seat),
                             SQL_TEXT_OR_NULL(enrollment_id), SQL_TEXT(now)),
                    NULL, err);
}

/* Emits pl.courses.<name>.v1 {order_id, course_id, user_id, [extra]} with subject and key order_id. */
static int reply(sql_tx *tx, const char *name, const char *order_id, const char *course_id, const char *user_id,
                 const char *extra_key, const char *extra, pl_error *err)
{
    char type[96];
    snprintf(type, sizeof type, "pl.courses.%s.v1", name);
    json_t *d = json_pack("{s:s, s:s, s:s}", "order_id", order_id, "course_id", course_id, "user_id", user_id);
    if (extra_key)
        json_object_set_new(d, extra_key, json_string(extra));
    log_with(LOG_INFO, "saga reply", LF_STR("type", type), LF_STR("order_id", order_id),
             LF_STR("detail", extra ? extra : ""));
    return outbox_emit(tx, "courses", type, order_id, order_id, d, NULL, err);
}

static int reject(sql_tx *tx, const char *order_id, const char *course_id, const char *user_id, const char *reason,
                  pl_error *err)
{
    int rc = reservation_insert(tx, order_id, course_id, user_id, "rejected", reason, false, err);
    return rc ? rc : reply(tx, "seat_reservation_rejected", order_id, course_id, user_id, "reason", reason, err);
}

static int reserve(sql_tx *tx, const char *order_id, const char *course_id, const char *user_id, pl_error *err)
{
    reservation v;
    int rc = reservation_load(tx, order_id, &v, err);
    if (rc < 0)
        return rc;
    if (rc == 1) { /* delivered again: the same answer */
        if (strcmp(v.state, "rejected") == 0)
            return reply(tx, "seat_reservation_rejected", order_id, v.course_id, v.user_id, "reason", v.reason, err);
        /* a release that came first left a tombstone: this order holds no seat */
        if (strcmp(v.state, "released") == 0 && strcmp(v.reason, "tombstone") == 0)
            return reply(tx, "seat_released", order_id, v.course_id, v.user_id, NULL, NULL, err);
        return reply(tx, "seat_reserved", order_id, v.course_id, v.user_id, NULL, NULL, err);
    }
    arena *a = arena_create(2048);
    course c;
    /* Lock the course row first (PostgreSQL): concurrent reservations and
     * enrollments of one course then decide one after the other. */
    rc = sql_exec(tx, "UPDATE courses SET seats_used = seats_used WHERE id = $1", SQL_ARGS(SQL_TEXT(course_id)), NULL,
                  err);
    if (!rc)
        rc = course_load(tx, a, course_id, &c, err);
    if (rc < 0)
        goto out;
    if (rc == 0 || !c.published) {
        rc = reject(tx, order_id, course_id, user_id, "not_found", err);
        goto out;
    }
    if (!c.premium) {
        rc = reject(tx, order_id, course_id, user_id, "not_for_sale", err);
        goto out;
    }
    if ((rc = courses_enrollment(tx, course_id, user_id, NULL, err)) < 0)
        goto out;
    if (rc == 1) {
        rc = reject(tx, order_id, course_id, user_id, "already_enrolled", err);
        goto out;
    }
    if ((rc = courses_take_seat(tx, course_id, err)) < 0)
        goto out;
    if (rc == 0) {
        rc = reject(tx, order_id, course_id, user_id, "sold_out", err);
        goto out;
    }
    rc = reservation_insert(tx, order_id, course_id, user_id, "reserved", NULL, true, err);
    if (!rc)
        rc = reply(tx, "seat_reserved", order_id, course_id, user_id, NULL, NULL, err);
out:
    arena_destroy(a);
    return rc;
}

static int release(sql_tx *tx, const char *order_id, const char *course_id, const char *user_id, pl_error *err)
{
    reservation v;
    int rc = reservation_load(tx, order_id, &v, err);
    if (rc < 0)
        return rc;
    if (rc == 0) { /* never reserved here: converge, and keep a late reserve from taking a seat */
        rc = reservation_insert(tx, order_id, course_id, user_id, "released", "tombstone", false, err);
        return rc ? rc : reply(tx, "seat_released", order_id, course_id, user_id, NULL, NULL, err);
    }
    rc = 0;
    if (strcmp(v.state, "granted") == 0) {
        /* compensation after the grant: the purchase's enrollment goes, with its seat */
        rc = sql_exec(tx, "DELETE FROM lesson_completions WHERE course_id = $1 AND user_id = $2",
                      SQL_ARGS(SQL_TEXT(v.course_id), SQL_TEXT(v.user_id)), NULL, err);
        if (!rc)
            rc = sql_exec(tx, "DELETE FROM enrollments WHERE id = $1", SQL_ARGS(SQL_TEXT(v.enrollment_id)), NULL,
                          err);
        if (!rc)
            rc = courses_free_seat(tx, v.course_id, err);
    } else if (v.holds_seat) {
        rc = courses_free_seat(tx, v.course_id, err);
    }
    if (!rc && (strcmp(v.state, "reserved") == 0 || strcmp(v.state, "granted") == 0))
        rc = reservation_set(tx, order_id, "released", false, NULL, err);
    return rc ? rc : reply(tx, "seat_released", order_id, v.course_id, v.user_id, NULL, NULL, err);
}

static int grant(sql_tx *tx, const char *order_id, const char *course_id, const char *user_id, pl_error *err)
{
    reservation v;
    int rc = reservation_load(tx, order_id, &v, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return reply(tx, "access_grant_failed", order_id, course_id, user_id, "reason", "no_reservation", err);
    if (strcmp(v.state, "granted") == 0)
        return reply(tx, "access_granted", order_id, v.course_id, v.user_id, "enrollment_id", v.enrollment_id, err);
    if (strcmp(v.state, "reserved") != 0)
        return reply(tx, "access_grant_failed", order_id, v.course_id, v.user_id, "reason",
                     strcmp(v.state, "rejected") == 0 ? "no_reservation" : "reservation_released", err);
    arena *a = arena_create(2048);
    course c;
    rc = course_load(tx, a, v.course_id, &c, err);
    if (rc == 1 && c.fail_access_grant) {
        rc = reply(tx, "access_grant_failed", order_id, v.course_id, v.user_id, "reason", "fault_injected", err);
    } else if (rc == 0) {
        rc = reply(tx, "access_grant_failed", order_id, v.course_id, v.user_id, "reason", "course_gone", err);
    } else if (rc == 1) {
        char enrollment[40];
        rc = courses_enrollment(tx, v.course_id, v.user_id, NULL, err);
        if (rc == 1) {
            rc = reply(tx, "access_grant_failed", order_id, v.course_id, v.user_id, "reason", "already_enrolled", err);
        } else if (rc == 0) {
            /* the reservation's seat becomes the enrollment's: seats_used stays */
            rc = courses_enroll(tx, v.course_id, v.user_id, "purchase", order_id, enrollment, err);
            if (!rc)
                rc = reservation_set(tx, order_id, "granted", false, enrollment, err);
            if (!rc)
                rc = reply(tx, "access_granted", order_id, v.course_id, v.user_id, "enrollment_id", enrollment, err);
        }
    }
    arena_destroy(a);
    return rc;
}

static const char *field(const cloudevent *ev, const char *key)
{
    const char *s = json_string_value(json_object_get(ev->data, key));
    return s && *s && strlen(s) <= 128 ? s : NULL;
}

int saga_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    const char *order_id = field(ev, "order_id"), *course_id = field(ev, "course_id"),
               *user_id = field(ev, "user_id");
    if (!order_id || !course_id || !user_id)
        return err_set(err, PL_EINVAL, "data", "%s needs order_id, course_id and user_id (strings of 1 to 128 bytes)",
                       ev->type);
    if (strcmp(ev->type, "pl.commerce.seat_reserve_requested.v1") == 0)
        return reserve(tx, order_id, course_id, user_id, err);
    if (strcmp(ev->type, "pl.commerce.seat_release_requested.v1") == 0)
        return release(tx, order_id, course_id, user_id, err);
    if (strcmp(ev->type, "pl.commerce.access_grant_requested.v1") == 0)
        return grant(tx, order_id, course_id, user_id, err);
    return err_set(err, PL_EINVAL, "type", "courses does not handle %s", ev->type);
}
