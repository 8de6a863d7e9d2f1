/*
 * achievements.c - the achievements service: badges awarded from other
 * services' events (rules.h), each at most once per user, announced with
 * pl.achievements.badge_awarded.v1.
 *
 * The actions that earn badges never wait for this service: it only
 * consumes events, so when it is down, slow or failing, posts, comments and
 * quizzes go on and the badges follow once it catches up with the log.
 *
 * Exactly once: the award row (unique per user and badge), the activity day
 * and the outgoing event are written in the consumer's transaction, whose
 * inbox row makes a redelivered event a no-op.
 */
#include "bus/outbox.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "services/achievements/rules.h"
#include "services/service.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Awards `badge` to user unless they hold it; emits the event only for a new award. */
static int award(sql_tx *tx, const char *user, const char *badge, const cloudevent *ev, pl_error *err)
{
    const badge_info *b = badge_find(badge);
    char id[UUID_STR_LEN];
    uuid7_new(id);
    int64_t changed = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO ach_badges (badge_id, user_id, badge, event_id, awarded_at) VALUES ($1, $2, $3, $4, $5)"
                      " ON CONFLICT (user_id, badge) DO NOTHING",
                      SQL_ARGS(SQL_TEXT(id), SQL_TEXT(user), SQL_TEXT(badge), SQL_TEXT(ev->id), SQL_TEXT(ev->time)),
                      &changed, err);
    if (rc || changed == 0)
        return rc;
    json_t *data = json_pack("{s:s, s:s, s:s, s:s, s:s}", "badge_id", id, "user_id", user, "badge", badge, "title",
                             b->title, "awarded_at", ev->time);
    rc = outbox_emit(tx, "achievements", "pl.achievements.badge_awarded.v1", id, user, data, NULL, err);
    if (!rc)
        log_with(LOG_INFO, "badge awarded", LF_STR("user_id", user), LF_STR("badge", badge), LF_STR("event_id", ev->id));
    return rc;
}

/* Records the day as active and awards streak_7 when it completes a run of
 * STREAK_DAYS. Events may arrive out of order (partitions interleave), so
 * the run is looked for on both sides of the day. */
static int activity(sql_tx *tx, const char *user, const cloudevent *ev, pl_error *err)
{
    int64_t day = rules_day(ev->time);
    if (day < 0)
        return err_set(err, PL_EINVAL, "time", "event time %s does not parse", ev->time);
    int64_t changed = 0;
    int rc = sql_exec(tx, "INSERT INTO ach_activity (user_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                      SQL_ARGS(SQL_TEXT(user), SQL_INT(day)), &changed, err);
    if (rc || changed == 0)
        return rc; /* a day already seen cannot lengthen a run */
    int64_t days[2 * STREAK_DAYS - 1]; /* the window holds at most this many distinct days */
    int n = 0;
    sql_rows *r;
    if ((rc = sql_query(tx, "SELECT day FROM ach_activity WHERE user_id = $1 AND day BETWEEN $2 AND $3",
                        SQL_ARGS(SQL_TEXT(user), SQL_INT(day - (STREAK_DAYS - 1)), SQL_INT(day + (STREAK_DAYS - 1))),
                        &r, err)))
        return rc;
    while ((rc = sql_next(r, err)) == 1)
        if (n < (int)(sizeof days / sizeof days[0]))
            days[n++] = sql_int(r, 0);
    sql_rows_close(r);
    if (rc < 0)
        return rc;
    if (rules_run_length(days, n, day) >= STREAK_DAYS)
        return award(tx, user, "streak_7", ev, err);
    return 0;
}

static int earn_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)ctx;
    rule_outcome o;
    if (rules_apply(ev->type, ev->data, &o))
        return err_set(err, PL_EINVAL, "data", "%s lacks the members the badge rules need", ev->type);
    int rc = 0;
    if (o.badge)
        rc = award(tx, o.user_id, o.badge, ev, err);
    if (!rc && o.activity)
        rc = activity(tx, o.user_id, ev, err);
    return rc;
}

/* ---- HTTP ------------------------------------------------------------------------- */

static int list_badges(http_req *req, http_res *res, const char *user)
{
    service_ctx *ctx = req->ctx;
    pl_error err = {0};
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, &err);
    if (rc)
        return http_fail(req, rc, NULL, "%s", err.msg);
    json_t *items = json_array();
    if (!(rc = sql_query(tx,
                         "SELECT badge_id, badge, awarded_at FROM ach_badges WHERE user_id = $1"
                         " ORDER BY awarded_at, badge_id",
                         SQL_ARGS(SQL_TEXT(user)), &r, &err))) {
        while ((rc = sql_next(r, &err)) == 1) {
            const badge_info *b = badge_find(sql_text(r, 1));
            json_array_append_new(items, json_pack("{s:s, s:s, s:s?, s:s?, s:s}", "badge_id", sql_text(r, 0), "badge",
                                                   sql_text(r, 1), "title", b ? b->title : NULL, "description",
                                                   b ? b->description : NULL, "awarded_at", sql_text(r, 2)));
        }
        sql_rows_close(r);
    }
    sql_rollback(tx);
    if (rc < 0) {
        json_decref(items);
        return http_fail(req, rc, NULL, "%s", err.msg);
    }
    http_json(res, 200, json_pack("{s:o}", "items", items));
    return 0;
}

/* GET /api/v1/me/badges */
static int my_badges(http_req *req, http_res *res)
{
    return list_badges(req, res, req->principal->user_id);
}

/* GET /api/v1/users/{id}/badges: badges are public on a campus profile. */
static int user_badges(http_req *req, http_res *res)
{
    const char *id = http_param(req, "id");
    if (!uuid_valid(id))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "id", "must be a user id (UUID)"), "invalid user id");
    /* ids are stored as events carry them: lower case */
    char *lower = arena_sprintf(req->arena, "%s", id);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return list_badges(req, res, lower);
}

/* GET /api/v1/badges: the catalogue of badges and how each is earned. */
static int catalogue(http_req *req, http_res *res)
{
    json_t *items = json_array();
    for (int i = 0; i < nbadges; i++)
        json_array_append_new(items, json_pack("{s:s, s:s, s:s}", "badge", badges[i].badge, "title", badges[i].title,
                                               "description", badges[i].description));
    http_json(res, 200, json_pack("{s:o}", "items", items));
    return 0;
}

static const http_route achievements_routes[] = {
    {"GET", "/api/v1/me/badges", my_badges, HTTP_AUTH, "the caller's badges, oldest first"},
    {"GET", "/api/v1/users/{id}/badges", user_badges, HTTP_AUTH, "a user's badges"},
    {"GET", "/api/v1/badges", catalogue, HTTP_AUTH, "every badge and how it is earned"},
};

static const char *const earn_types[] = {"pl.social.post_created.v1",     "pl.social.comment_created.v1",
                                         "pl.courses.course_completed.v1", "pl.courses.quiz_completed.v1",
                                         "pl.courses.lesson_completed.v1", NULL};

static const consumer_def achievements_consumers[] = {
    {.name = "earn", .types = earn_types, .handle = earn_handle},
};

const service_def achievements_service = {
    .version = 1,
    .name = "achievements",
    .summary = "badges awarded from events, each once per user",
    .stores = SERVICE_USES_SQL,
    .routes = achievements_routes,
    .nroutes = sizeof achievements_routes / sizeof achievements_routes[0],
    .consumers = achievements_consumers,
    .nconsumers = sizeof achievements_consumers / sizeof achievements_consumers[0],
};
