/*
 * campus.c - campus events and RSVPs.
 *
 * Capacity under concurrency: every RSVP change first locks its event's row
 * (a no-op UPDATE: a row lock on PostgreSQL, and SQLite's write transaction
 * holds the database lock anyway), then reads the seats and the caller's
 * current answer, so the check "going_count < capacity" and the increment
 * cannot interleave with another RSVP to the same event. The table's CHECK
 * (going_count <= capacity) is the last line of defence.
 */
#include "bus/outbox.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/social/social.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SVC "social"

/* $1 is the viewer (for my_status). Column 14 is the list's cursor. */
#define CAMPUS_SELECT                                                                                              \
    "SELECT e.id, e.organizer_id, e.title, e.description, e.location, e.starts_at, e.ends_at, e.capacity,"       \
    " e.going_count, e.interested_count, e.created_at, e.updated_at, e.starts_ms,"                                \
    " (SELECT r.status FROM social_rsvps r WHERE r.event_id = e.id AND r.user_id = $1), e.starts_ms || '_' || e.id" \
    " FROM social_campus_events e"

static json_t *campus_row(sql_rows *r, void *ud)
{
    (void)ud;
    bool unlimited = sql_isnull(r, 7);
    int64_t cap = unlimited ? 0 : sql_int(r, 7), going = sql_int(r, 8);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "id", sql_text(r, 0),
                          "organizer_id", sql_text(r, 1), "title", sql_text(r, 2), "description", sql_text(r, 3),
                          "location", sql_text(r, 4), "starts_at", sql_text(r, 5), "ends_at", sql_text(r, 6),
                          "going_count", (json_int_t)going, "interested_count", (json_int_t)sql_int(r, 9),
                          "created_at", sql_text(r, 10), "updated_at", sql_text(r, 11));
    json_object_set_new(j, "capacity", unlimited ? json_null() : json_integer(cap));
    json_object_set_new(j, "seats_left", unlimited ? json_null() : json_integer(cap - going));
    const char *mine = sql_text(r, 13);
    json_object_set_new(j, "my_status", mine ? json_string(mine) : json_null());
    return j;
}

static json_t *campus_event_data(const json_t *e)
{
    json_t *d = json_object();
    static const char *const keys[] = {"organizer_id", "title", "description", "location", "starts_at", "ends_at",
                                       "capacity"};
    json_object_set(d, "event_id", json_object_get(e, "id"));
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        json_object_set(d, keys[i], json_object_get(e, keys[i]));
    return d;
}

static int campus_load(sql_tx *tx, const char *viewer, const char *id, json_t **out, pl_error *err)
{
    return social_get(tx, CAMPUS_SELECT " WHERE e.id = $2", SQL_ARGS(SQL_TEXT(viewer), SQL_TEXT(id)), campus_row, NULL,
                      out, err);
}

int social_campus_insert(sql_tx *tx, const char *organizer, const char *title, const char *description,
                         const char *location, int64_t starts_ms, int64_t ends_ms, int64_t capacity, char id_out[40],
                         pl_error *err)
{
    char now[32], s[32], e[32];
    social_now(now);
    time_rfc3339(starts_ms, s, sizeof s);
    time_rfc3339(ends_ms, e, sizeof e);
    uuid7_new(id_out);
    int rc = sql_exec(tx,
                      "INSERT INTO social_campus_events (id, organizer_id, title, description, location, starts_at,"
                      " ends_at, starts_ms, ends_ms, capacity, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
                      SQL_ARGS(SQL_TEXT(id_out), SQL_TEXT(organizer), SQL_TEXT(title), SQL_TEXT(description),
                               SQL_TEXT(location), SQL_TEXT(s), SQL_TEXT(e), SQL_INT(starts_ms), SQL_INT(ends_ms),
                               capacity < 0 ? SQL_NULL : SQL_INT(capacity), SQL_TEXT(now)),
                      NULL, err);
    if (rc)
        return rc;
    json_t *ev = NULL;
    if ((rc = campus_load(tx, organizer, id_out, &ev, err)) != 1)
        return rc < 0 ? rc : err_set(err, PL_EINTERNAL, NULL, "the campus event vanished");
    rc = outbox_emit(tx, SVC, "pl.social.campus_event_created.v1", id_out, NULL, campus_event_data(ev), NULL, err);
    json_decref(ev);
    return rc;
}

typedef struct seats {
    bool found, unlimited;
    int64_t capacity, going, interested, ends_ms;
    char organizer[40];
} seats;

static void read_seats(void *ud, sql_rows *r)
{
    seats *s = ud;
    s->found = true;
    s->unlimited = sql_isnull(r, 0);
    s->capacity = s->unlimited ? -1 : sql_int(r, 0);
    s->going = sql_int(r, 1);
    s->ends_ms = sql_int(r, 2);
    snprintf(s->organizer, sizeof s->organizer, "%s", sql_text(r, 3));
    s->interested = sql_int(r, 4);
}

static void read_status(void *ud, sql_rows *r) { snprintf(ud, 16, "%s", sql_text(r, 0)); }

int social_rsvp_apply(sql_tx *tx, const char *event_id, const char *user_id, rsvp_status want, rsvp_outcome *outcome,
                      json_t **rsvp_out, pl_error *err)
{
    int64_t n = 0;
    /* the lock that serialises every RSVP of this event (see the file comment) */
    int rc = sql_exec(tx, "UPDATE social_campus_events SET going_count = going_count WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(event_id)), &n, err);
    if (rc)
        return rc;
    if (n == 0)
        return err_set(err, PL_ENOTFOUND, NULL, "no such campus event");
    seats st = {0};
    char cur_s[16] = "";
    if ((rc = sql_one(tx, "SELECT capacity, going_count, ends_ms, organizer_id, interested_count FROM social_campus_events WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(event_id)), read_seats, &st, err)) < 0 ||
        (rc = sql_one(tx, "SELECT status FROM social_rsvps WHERE event_id = $1 AND user_id = $2",
                      SQL_ARGS(SQL_TEXT(event_id), SQL_TEXT(user_id)), read_status, cur_s, err)) < 0)
        return rc;
    rsvp_status cur = rsvp_parse_stored(cur_s[0] ? cur_s : NULL);
    if (st.ends_ms <= time_now_ms() && want != RSVP_CANCELLED)
        return err_set(err, PL_EUNPROCESSABLE, "status", "the event is over");
    int dg, di;
    *outcome = rsvp_decide(cur, want, st.capacity, st.going, &dg, &di);
    if (*outcome == RSVP_FULL)
        return err_set(err, PL_ECONFLICT, "status", "the event is full: all %" PRId64 " seats are taken", st.capacity);
    char now[32];
    social_now(now);
    if (*outcome == RSVP_OK) {
        char rid[UUID_STR_LEN];
        uuid7_new(rid);
        rc = sql_exec(tx,
                      "INSERT INTO social_rsvps (event_id, user_id, id, status, updated_at) VALUES ($1, $2, $3, $4, $5)"
                      " ON CONFLICT (event_id, user_id) DO UPDATE SET status = excluded.status,"
                      " updated_at = excluded.updated_at",
                      SQL_ARGS(SQL_TEXT(event_id), SQL_TEXT(user_id), SQL_TEXT(rid), SQL_TEXT(rsvp_name(want)),
                               SQL_TEXT(now)),
                      NULL, err);
        if (!rc)
            rc = sql_exec(tx,
                          "UPDATE social_campus_events SET going_count = going_count + $2,"
                          " interested_count = interested_count + $3 WHERE id = $1",
                          SQL_ARGS(SQL_TEXT(event_id), SQL_INT(dg), SQL_INT(di)), NULL, err);
        if (rc)
            return rc;
        json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event_id", event_id, "organizer_id", st.organizer,
                              "user_id", user_id, "status", rsvp_name(want), "changed_at", now);
        json_object_set_new(d, "previous", cur == RSVP_NONE ? json_null() : json_string(rsvp_name(cur)));
        if ((rc = outbox_emit(tx, SVC, "pl.social.rsvp_changed.v1", event_id, event_id, d, NULL, err)))
            return rc;
    }
    rsvp_status now_st = *outcome == RSVP_OK ? want : cur;
    *rsvp_out = json_pack("{s:s, s:s, s:b, s:I, s:I}", "event_id", event_id, "user_id", user_id, "changed",
                          *outcome == RSVP_OK, "going_count", (json_int_t)(st.going + dg), "interested_count",
                          (json_int_t)(st.interested + di));
    json_object_set_new(*rsvp_out, "status", now_st == RSVP_NONE ? json_null() : json_string(rsvp_name(now_st)));
    return 0;
}

/* ---- handlers ---------------------------------------------------------------------------------- */

typedef struct campus_input {
    const char *title, *description, *location, *starts_at, *ends_at;
    bool capacity_given;
    int64_t capacity; /* -1: unlimited */
} campus_input;

/* Validates a create (all required but description, capacity) or a patch. */
static void campus_validate(jv *v, json_t *body, bool create, campus_input *in, http_req *req)
{
    memset(in, 0, sizeof *in);
    in->capacity = -1;
    const char *t = jv_str(v, "title", create, 0, SOCIAL_TITLE_MAX * 8);
    const char *d = jv_str(v, "description", false, 0, SOCIAL_DESCRIPTION_MAX * 8);
    const char *l = jv_str(v, "location", create, 0, SOCIAL_LOCATION_MAX * 8);
    const char *s = jv_str(v, "starts_at", create, 1, 64);
    const char *e = jv_str(v, "ends_at", create, 1, 64);
    const char *why;
    if (t && (why = social_check_text(t, SOCIAL_TITLE_MAX)))
        jv_fail(v, "title", strcmp(why, "is too long") == 0 ? "must be at most 200 characters" : why);
    if (d && utf8_len(d) > SOCIAL_DESCRIPTION_MAX)
        jv_fail(v, "description", "must be at most 5000 characters");
    if (l && (why = social_check_text(l, SOCIAL_LOCATION_MAX)))
        jv_fail(v, "location", strcmp(why, "is too long") == 0 ? "must be at most 200 characters" : why);
    /* capacity null means unlimited and description may be emptied; the rest can never be null */
    static const char *const required[] = {"title", "location", "starts_at", "ends_at", NULL};
    for (const char *const *k = required; *k; k++)
        if (json_is_null(json_object_get(body, *k)))
            jv_fail(v, *k, "cannot be null");
    json_t *cap = json_object_get(body, "capacity");
    if (cap) {
        in->capacity_given = true;
        if (!json_is_null(cap)) {
            long long c = 0;
            if (jv_int(v, "capacity", false, 1, SOCIAL_CAPACITY_MAX, &c))
                in->capacity = c;
        }
    }
    in->title = t ? arena_strdup(req->arena, t) : NULL;
    in->description = d ? arena_strdup(req->arena, d) : NULL;
    in->location = l ? arena_strdup(req->arena, l) : NULL;
    in->starts_at = s ? arena_strdup(req->arena, s) : NULL;
    in->ends_at = e ? arena_strdup(req->arena, e) : NULL;
}

int social_campus_create(http_req *req, http_res *res)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"title", "description", "location", "starts_at", "ends_at", "capacity", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    campus_input in;
    campus_validate(&v, body, true, &in, req);
    int64_t s_ms = 0, e_ms = 0;
    const char *ws, *we;
    social_check_times(in.starts_at, in.ends_at, &s_ms, &e_ms, &ws, &we);
    if (ws)
        jv_fail(&v, "starts_at", ws);
    if (we)
        jv_fail(&v, "ends_at", we);
    if (!ws && !we && in.ends_at && e_ms <= time_now_ms())
        jv_fail(&v, "ends_at", "must be in the future");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    jv_free(&v);
    json_decref(body);
    pl_error err = {0};
    sql_tx *tx;
    char id[40];
    json_t *ev = NULL;
    if ((rc = sql_begin(sv->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return social_store_fail(req, rc, &err);
    rc = social_campus_insert(tx, req->principal->user_id, in.title, in.description ? in.description : "", in.location,
                              s_ms, e_ms, in.capacity, id, &err);
    if (!rc && (rc = campus_load(tx, req->principal->user_id, id, &ev, &err)) == 1)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(ev);
        return social_store_fail(req, rc, &err);
    }
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/campus-events/%s", id));
    http_json(res, 201, ev);
    return 0;
}

int social_campus_get(http_req *req, http_res *res)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    const char *id = social_id_param(req, "id", "campus event");
    if (!id)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    json_t *ev = NULL;
    int rc = sql_begin(sv->ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    rc = campus_load(tx, req->principal->user_id, id, &ev, &err);
    sql_rollback(tx);
    if (rc < 0)
        return social_store_fail(req, rc, &err);
    if (rc == 0)
        return http_fail(req, PL_ENOTFOUND, NULL, "no such campus event");
    http_json(res, 200, ev);
    return 0;
}

int social_campus_list(http_req *req, http_res *res)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    long limit;
    const char *cursor;
    int rc = social_page(req, &limit, &cursor);
    if (rc)
        return rc;
    long long c_ms = 0;
    char c_id[40] = "";
    int used = 0;
    if (*cursor && (sscanf(cursor, "%lld_%36s%n", &c_ms, c_id, &used) != 2 || cursor[used] || !uuid_valid(c_id)))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "cursor", "is not a cursor from this list"), "invalid query");
    pl_error err = {0};
    sql_tx *tx;
    json_t *out = NULL;
    if ((rc = sql_begin(sv->ctx->sql, SQL_TX_READ, &tx, &err)))
        return social_store_fail(req, rc, &err);
    /* upcoming: not over yet; soonest first, ties by id (one statement per shape: see social_user_posts) */
    if (*cursor)
        rc = social_list(tx,
                         CAMPUS_SELECT " WHERE e.ends_ms > $2 AND e.starts_ms >= $3 AND (e.starts_ms > $3 OR e.id > $4)"
                                       " ORDER BY e.starts_ms, e.id LIMIT $5",
                         SQL_ARGS(SQL_TEXT(req->principal->user_id), SQL_INT(time_now_ms()), SQL_INT(c_ms),
                                  SQL_TEXT(c_id), SQL_INT(limit)),
                         limit, 14, campus_row, NULL, &out, &err);
    else
        rc = social_list(tx, CAMPUS_SELECT " WHERE e.ends_ms > $2 ORDER BY e.starts_ms, e.id LIMIT $3",
                         SQL_ARGS(SQL_TEXT(req->principal->user_id), SQL_INT(time_now_ms()), SQL_INT(limit)), limit,
                         14, campus_row, NULL, &out, &err);
    sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}

/* A write transaction on an event the caller organises (or, as admin, any). */
static int campus_for_write(http_req *req, const char *id, sql_tx **tx, json_t **ev)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    int rc = sql_begin(sv->ctx->sql, SQL_TX_WRITE, tx, &err);
    if (rc)
        return social_store_fail(req, rc, &err);
    rc = sql_exec(*tx, "UPDATE social_campus_events SET going_count = going_count WHERE id = $1", SQL_ARGS(SQL_TEXT(id)),
                  NULL, &err);
    if (!rc)
        rc = campus_load(*tx, req->principal->user_id, id, ev, &err);
    if (rc <= 0) {
        sql_rollback(*tx);
        return rc < 0 ? social_store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such campus event");
    }
    if (strcmp(json_string_value(json_object_get(*ev, "organizer_id")), req->principal->user_id) != 0 &&
        !social_is_admin(req)) {
        json_decref(*ev);
        sql_rollback(*tx);
        return http_fail(req, PL_EFORBIDDEN, NULL, "only the organizer or an admin may change this event");
    }
    return 0;
}

int social_campus_patch(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"title", "description", "location", "starts_at", "ends_at", "capacity", NULL};
    const char *id = social_id_param(req, "id", "campus event");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    campus_input in;
    campus_validate(&v, body, false, &in, req);
    int64_t s_ms = 0, e_ms = 0;
    const char *ws, *we;
    social_check_times(in.starts_at, in.ends_at, &s_ms, &e_ms, &ws, &we);
    if (ws)
        jv_fail(&v, "starts_at", ws);
    if (we)
        jv_fail(&v, "ends_at", we);
    /* as at creation: an event cannot be moved to have ended already (that would close its RSVPs) */
    if (!ws && !we && in.ends_at && e_ms <= time_now_ms())
        jv_fail(&v, "ends_at", "must be in the future");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    jv_free(&v);
    json_decref(body);
    if (!id)
        return PL_ENOTFOUND;
    sql_tx *tx;
    json_t *ev;
    if ((rc = campus_for_write(req, id, &tx, &ev)))
        return rc;
    /* the times as they will be, checked together */
    if (!in.starts_at)
        time_parse_rfc3339(json_string_value(json_object_get(ev, "starts_at")), &s_ms);
    if (!in.ends_at)
        time_parse_rfc3339(json_string_value(json_object_get(ev, "ends_at")), &e_ms);
    int64_t going = json_integer_value(json_object_get(ev, "going_count"));
    const char *why = NULL, *field = NULL;
    if (e_ms <= s_ms)
        field = in.ends_at ? "ends_at" : "starts_at", why = "ends_at must be after starts_at";
    else if (in.capacity_given && in.capacity >= 0 && in.capacity < going)
        field = "capacity", why = "is below the number of people going";
    if (why) {
        json_decref(ev);
        sql_rollback(tx);
        return http_fail(req, PL_EUNPROCESSABLE, json_pack("{s:s}", field, why), "the change cannot be applied");
    }
    json_t *old = campus_event_data(ev);
    json_decref(ev);
    char now[32], s[32], e[32];
    social_now(now);
    time_rfc3339(s_ms, s, sizeof s);
    time_rfc3339(e_ms, e, sizeof e);
    pl_error err = {0};
    rc = sql_exec(tx,
                  "UPDATE social_campus_events SET title = COALESCE($2, title), description = COALESCE($3, description),"
                  " location = COALESCE($4, location), starts_at = $5, ends_at = $6, starts_ms = $7, ends_ms = $8,"
                  " capacity = CASE WHEN $9 = 1 THEN $10 ELSE capacity END WHERE id = $1",
                  SQL_ARGS(SQL_TEXT(id), SQL_TEXT_OR_NULL(in.title), SQL_TEXT_OR_NULL(in.description),
                           SQL_TEXT_OR_NULL(in.location), SQL_TEXT(s), SQL_TEXT(e), SQL_INT(s_ms), SQL_INT(e_ms),
                           SQL_INT(in.capacity_given ? 1 : 0), in.capacity >= 0 ? SQL_INT(in.capacity) : SQL_NULL),
                  NULL, &err);
    json_t *nev = NULL;
    if (!rc && (rc = campus_load(tx, req->principal->user_id, id, &nev, &err)) == 1)
        rc = 0;
    json_t *data = nev ? campus_event_data(nev) : NULL;
    if (!rc && !json_equal(old, data)) {
        rc = sql_exec(tx, "UPDATE social_campus_events SET updated_at = $2 WHERE id = $1",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(now)), NULL, &err);
        json_object_set_new(nev, "updated_at", json_string(now));
        if (!rc)
            rc = outbox_emit(tx, SVC, "pl.social.campus_event_updated.v1", id, NULL, json_incref(data), NULL, &err);
    }
    json_decref(old);
    json_decref(data);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(nev);
        return social_store_fail(req, rc, &err);
    }
    http_json(res, 200, nev);
    return 0;
}

int social_campus_delete(http_req *req, http_res *res)
{
    const char *id = social_id_param(req, "id", "campus event");
    if (!id)
        return PL_ENOTFOUND;
    sql_tx *tx;
    json_t *ev;
    int rc = campus_for_write(req, id, &tx, &ev);
    if (rc)
        return rc;
    const char *organizer = arena_strdup(req->arena, json_string_value(json_object_get(ev, "organizer_id")));
    json_decref(ev);
    char now[32];
    social_now(now);
    pl_error err = {0};
    rc = sql_exec(tx, "DELETE FROM social_rsvps WHERE event_id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = sql_exec(tx, "DELETE FROM social_campus_events WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), NULL, &err);
    if (!rc)
        rc = outbox_emit(tx, SVC, "pl.social.campus_event_deleted.v1", id, NULL,
                         json_pack("{s:s, s:s, s:s}", "event_id", id, "organizer_id", organizer, "deleted_at", now),
                         NULL, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}

int social_rsvp(http_req *req, http_res *res)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"status", NULL};
    const char *id = social_id_param(req, "id", "campus event");
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *st = jv_str(&v, "status", true, 1, 32);
    int want = st ? rsvp_parse_request(st) : -1;
    if (st && want < 0)
        jv_fail(&v, "status", "must be going, interested or cancel");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    jv_free(&v);
    json_decref(body);
    if (!id)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    rsvp_outcome o;
    json_t *out = NULL;
    if ((rc = sql_begin(sv->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return social_store_fail(req, rc, &err);
    rc = social_rsvp_apply(tx, id, req->principal->user_id, (rsvp_status)want, &o, &out, &err);
    if (!rc)
        rc = sql_commit(tx, &err);
    else
        sql_rollback(tx);
    if (rc) {
        json_decref(out); /* set when only the commit failed */
        if (rc == PL_ECONFLICT && strcmp(err.field, "status") == 0)
            return http_fail(req, rc, json_pack("{s:s}", "status", "event_full"), "%s", err.msg);
        if (rc == PL_EUNPROCESSABLE)
            return http_fail(req, rc, json_pack("{s:s}", "status", err.msg), "%s", err.msg);
        return social_store_fail(req, rc, &err);
    }
    http_json(res, 200, out);
    return 0;
}

static json_t *attendee_row(sql_rows *r, void *ud)
{
    (void)ud;
    json_t *j = json_pack("{s:s, s:s, s:s}", "user_id", sql_text(r, 1), "status", sql_text(r, 2), "since",
                          sql_text(r, 3));
    json_object_set_new(j, "username", sql_text(r, 4) ? json_string(sql_text(r, 4)) : json_null());
    json_object_set_new(j, "display_name", sql_text(r, 5) ? json_string(sql_text(r, 5)) : json_null());
    return j;
}

int social_attendees(http_req *req, http_res *res)
{
    social *sv = ((service_ctx *)req->ctx)->state;
    const char *id = social_id_param(req, "id", "campus event");
    long limit;
    const char *cursor;
    int rc = social_page(req, &limit, &cursor);
    if (rc)
        return rc;
    const char *st = http_query(req, "status");
    if (st && strcmp(st, "going") != 0 && strcmp(st, "interested") != 0)
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "status", "must be going or interested"), "invalid query");
    if (!id)
        return PL_ENOTFOUND;
    pl_error err = {0};
    sql_tx *tx;
    json_t *ev = NULL, *out = NULL;
    if ((rc = sql_begin(sv->ctx->sql, SQL_TX_READ, &tx, &err)))
        return social_store_fail(req, rc, &err);
    rc = campus_load(tx, req->principal->user_id, id, &ev, &err);
    json_decref(ev);
#define ATTENDEES                                                                                         \
    "SELECT r.id, r.user_id, r.status, r.updated_at, u.username, u.display_name FROM social_rsvps r"      \
    " LEFT JOIN social_users u ON u.user_id = r.user_id WHERE r.event_id = $1 AND r.status = $2"
    if (rc == 1 && *cursor)
        rc = social_list(tx, ATTENDEES " AND r.id > $3 ORDER BY r.id LIMIT $4",
                         SQL_ARGS(SQL_TEXT(id), SQL_TEXT(st ? st : "going"), SQL_TEXT(cursor), SQL_INT(limit)), limit,
                         0, attendee_row, NULL, &out, &err);
    else if (rc == 1)
        rc = social_list(tx, ATTENDEES " ORDER BY r.id LIMIT $3",
                         SQL_ARGS(SQL_TEXT(id), SQL_TEXT(st ? st : "going"), SQL_INT(limit)), limit, 0, attendee_row,
                         NULL, &out, &err);
    else if (rc == 0)
        rc = PL_ENOTFOUND;
    sql_rollback(tx);
    if (rc == PL_ENOTFOUND)
        return http_fail(req, rc, NULL, "no such campus event");
    if (rc)
        return social_store_fail(req, rc, &err);
    http_json(res, 200, out);
    return 0;
}
