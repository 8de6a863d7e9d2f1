/*
 * notify.c - the notify service: notifications built from other services'
 * events (likes, comments, replies, follows, RSVPs, badges, orders), with
 * bursts coalesced into one unread notification per kind and object, per-kind
 * preferences and a read model of users' display names. Everything lives in
 * the doc store; every write and the event it emits share one transaction.
 */
#include "services/notify/notify.h"
#include "bus/outbox.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

/* ---- delivery ------------------------------------------------------------------------ */

int notify_pref_on(sql_tx *tx, doc_store *d, const char *user_id, const char *kind, bool *on, pl_error *err)
{
    json_t *p = NULL;
    *on = true;
    int rc = doc_get(tx, d, NOTIFY_PREFS_COLL, user_id, &p, err);
    if (rc == PL_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    json_t *v = json_object_get(json_object_get(p, "in_app"), kind);
    if (json_is_boolean(v))
        *on = json_is_true(v);
    json_decref(p);
    return 0;
}

json_t *notify_item_json(const char *id, const json_t *doc)
{
    json_t *ids = json_object_get(doc, "actor_ids");
    return json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:O, s:I, s:s?, s:b, s:s?, s:s?}", "id", id, "user_id",
                     str(doc, "user_id"), "kind", str(doc, "kind"), "object_type", str(doc, "object_type"),
                     "object_id", str(doc, "object_id"), "actor_ids", ids ? ids : json_array(), "actor_count",
                     (json_int_t)json_integer_value(json_object_get(doc, "actor_count")), "text", str(doc, "text"),
                     "read", json_is_true(json_object_get(doc, "read")), "created_at", str(doc, "created_at"),
                     "updated_at", str(doc, "updated_at"));
}

int notify_render_doc(sql_tx *tx, doc_store *d, json_t *doc, pl_error *err)
{
    const char *names[NOTIFY_MAX_ACTORS] = {0};
    json_t *users[NOTIFY_MAX_ACTORS] = {0};
    json_t *ids = json_object_get(doc, "actor_ids");
    size_t n = json_array_size(ids);
    if (n > NOTIFY_MAX_ACTORS)
        n = NOTIFY_MAX_ACTORS;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = doc_get(tx, d, NOTIFY_USERS_COLL, json_string_value(json_array_get(ids, i)), &users[i], err);
        if (rc == PL_ENOTFOUND)
            rc = 0; /* not projected yet: "Someone" */
        else if (!rc)
            names[i] = str(users[i], "display_name");
    }
    if (!rc) {
        char text[512];
        notify_render(str(doc, "kind"), names, n, json_integer_value(json_object_get(doc, "actor_count")),
                      str(doc, "detail"), text, sizeof text);
        json_object_set_new(doc, "text", json_string(text));
    }
    for (size_t i = 0; i < n; i++)
        json_decref(users[i]);
    return rc;
}

static int emit(sql_tx *tx, const char *type, const char *id, const json_t *doc, pl_error *err)
{
    json_t *data = notify_item_json(id, doc);
    json_object_del(data, "id");
    json_object_set_new(data, "notification_id", json_string(id));
    return outbox_emit(tx, "notify", type, id, str(doc, "user_id"), data, NULL, err);
}

/* Adds the actor to an open notification: returns 1 when it grew, 0 when the
 * actor was already counted. */
static int coalesce(sql_tx *tx, doc_store *d, const char *id, json_t *doc, const char *actor, const char *now,
                    pl_error *err)
{
    char key[128];
    bool created = false;
    snprintf(key, sizeof key, "%s:%s", id, actor);
    json_t *member = json_pack("{s:s}", "notification_id", id);
    int rc = doc_put(tx, d, NOTIFY_ACTORS_COLL, key, member, &created, err);
    json_decref(member);
    if (rc || !created)
        return rc;
    json_t *old = json_object_get(doc, "actor_ids"), *ids = json_array();
    json_array_append_new(ids, json_string(actor));
    for (size_t i = 0; i < json_array_size(old) && json_array_size(ids) < NOTIFY_MAX_ACTORS; i++)
        if (strcmp(json_string_value(json_array_get(old, i)), actor) != 0)
            json_array_append(ids, json_array_get(old, i));
    char sort[UUID_STR_LEN];
    uuid7_new(sort);
    json_object_set_new(doc, "actor_ids", ids);
    json_object_set_new(doc, "actor_count",
                        json_integer(json_integer_value(json_object_get(doc, "actor_count")) + 1));
    json_object_set_new(doc, "updated_at", json_string(now));
    json_object_set_new(doc, "sort", json_string(sort));
    if ((rc = notify_render_doc(tx, d, doc, err)) || (rc = doc_put(tx, d, NOTIFY_COLL, id, doc, NULL, err)))
        return rc;
    return 1;
}

int notify_deliver(sql_tx *tx, doc_store *d, const notify_input *in, pl_error *err)
{
    if (in->actor_id && strcmp(in->actor_id, in->user_id) == 0)
        return 0; /* never about one's own action */
    bool on;
    int rc = notify_pref_on(tx, d, in->user_id, in->kind, &on, err);
    if (rc || !on)
        return rc;
    char now[32], group[256];
    time_rfc3339(time_now_ms(), now, sizeof now);
    snprintf(group, sizeof group, "%s:%s:%s", in->kind, in->object_type, in->object_id);
    if (in->actor_id && notify_kind_coalesces(in->kind)) {
        json_t *uid = json_string(in->user_id), *grp = json_string(group);
        doc_cond w[] = {{"user_id", DOC_EQ, uid}, {"group", DOC_EQ, grp}, {"read", DOC_EQ, json_false()}};
        doc_query q = {.where = w, .nwhere = 3, .order_by = "sort", .desc = true, .limit = 1};
        char **ids = NULL;
        json_t **docs = NULL;
        size_t n = 0;
        rc = doc_find(tx, d, NOTIFY_COLL, &q, &ids, &docs, &n, err);
        json_decref(uid);
        json_decref(grp);
        bool found = false;
        if (!rc && n == 1) {
            /* Read it again, locked: another instance may be growing it (follows of one
             * followee come on different partitions) or its owner marking it read. */
            json_t *cur = NULL;
            rc = doc_get(tx, d, NOTIFY_COLL, ids[0], &cur, err);
            found = !rc && !json_is_true(json_object_get(cur, "read"));
            if (found && (rc = coalesce(tx, d, ids[0], cur, in->actor_id, now, err)) == 1)
                rc = emit(tx, "pl.notify.notification_updated.v1", ids[0], cur, err);
            json_decref(cur);
        }
        doc_results_free(ids, docs, n);
        if (rc || found)
            return rc;
    }
    char id[UUID_STR_LEN];
    uuid7_new(id);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[], s:I, s:s?, s:b, s:s, s:s, s:s}", "user_id",
                            in->user_id, "kind", in->kind, "object_type", in->object_type, "object_id",
                            in->object_id, "group", group, "actor_ids", "actor_count", (json_int_t)(in->actor_id ? 1 : 0),
                            "detail", in->detail, "read", 0, "created_at", now, "updated_at", now, "sort", id);
    if (in->actor_id)
        json_array_append_new(json_object_get(doc, "actor_ids"), json_string(in->actor_id));
    rc = notify_render_doc(tx, d, doc, err);
    if (!rc)
        rc = doc_insert(tx, d, NOTIFY_COLL, id, doc, err);
    if (!rc && in->actor_id) {
        char key[128];
        snprintf(key, sizeof key, "%s:%s", id, in->actor_id);
        json_t *a = json_pack("{s:s}", "notification_id", id);
        rc = doc_put(tx, d, NOTIFY_ACTORS_COLL, key, a, NULL, err);
        json_decref(a);
    }
    if (!rc)
        rc = emit(tx, "pl.notify.notification_created.v1", id, doc, err);
    json_decref(doc);
    return rc;
}

/* ---- consumers ----------------------------------------------------------------------- */

static bool is_type(const cloudevent *ev, const char *t) { return strcmp(ev->type, t) == 0; }

/* Fields a handler needs: missing ones make the event impossible to apply. */
static int need(const json_t *data, const char *type, pl_error *err, const char *const *keys)
{
    for (; *keys; keys++)
        if (!str(data, *keys))
            return err_set(err, PL_EINVAL, "data", "%s without data.%s", type, *keys);
    return 0;
}

static int events_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    doc_store *d = ((service_ctx *)ctx)->doc;
    const json_t *x = ev->data;
    int rc;
    if (is_type(ev, "pl.social.post_liked.v1")) {
        static const char *const k[] = {"post_id", "post_author_id", "user_id", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        return notify_deliver(tx, d,
                              &(notify_input){str(x, "post_author_id"), "like", "post", str(x, "post_id"),
                                              str(x, "user_id"), NULL},
                              err);
    }
    if (is_type(ev, "pl.social.comment_created.v1")) {
        static const char *const k[] = {"comment_id", "post_id", "post_author_id", "author_id", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        const char *author = str(x, "author_id"), *post_author = str(x, "post_author_id");
        const char *parent = str(x, "parent_id"), *parent_author = str(x, "parent_author_id");
        /* A reply tells the parent's author; the post's author hears of it as
         * a comment unless that is the same person (one notification, not two). */
        if (parent && parent_author &&
            (rc = notify_deliver(tx, d, &(notify_input){parent_author, "reply", "comment", parent, author, NULL},
                                 err)))
            return rc;
        if (parent && parent_author && strcmp(parent_author, post_author) == 0)
            return 0;
        return notify_deliver(tx, d, &(notify_input){post_author, "comment", "post", str(x, "post_id"), author, NULL},
                              err);
    }
    if (is_type(ev, "pl.social.user_followed.v1")) {
        static const char *const k[] = {"follower_id", "followee_id", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        return notify_deliver(tx, d,
                              &(notify_input){str(x, "followee_id"), "follow", "user", str(x, "followee_id"),
                                              str(x, "follower_id"), NULL},
                              err);
    }
    if (is_type(ev, "pl.social.rsvp_changed.v1")) {
        static const char *const k[] = {"event_id", "organizer_id", "user_id", "status", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        const char *status = str(x, "status"), *prev = str(x, "previous");
        if (strcmp(status, "going") != 0 && strcmp(status, "interested") != 0)
            return 0; /* cancellations are not news */
        if (prev && strcmp(prev, status) == 0)
            return 0;
        return notify_deliver(tx, d,
                              &(notify_input){str(x, "organizer_id"), "rsvp", "campus_event", str(x, "event_id"),
                                              str(x, "user_id"), status},
                              err);
    }
    if (is_type(ev, "pl.achievements.badge_awarded.v1")) {
        static const char *const k[] = {"badge_id", "user_id", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        const char *title = str(x, "title") ? str(x, "title") : str(x, "badge");
        return notify_deliver(tx, d,
                              &(notify_input){str(x, "user_id"), "badge", "badge", str(x, "badge_id"), NULL, title},
                              err);
    }
    if (is_type(ev, "pl.commerce.order_completed.v1") || is_type(ev, "pl.commerce.order_failed.v1")) {
        static const char *const k[] = {"order_id", "buyer_id", NULL};
        if ((rc = need(x, ev->type, err, k)))
            return rc;
        char detail[256];
        if (is_type(ev, "pl.commerce.order_completed.v1")) {
            const char *num = str(x, "invoice_number");
            snprintf(detail, sizeof detail, "completed:%s", num ? num : "issued");
        } else {
            const char *why = str(x, "reason");
            snprintf(detail, sizeof detail, "failed:%s", why ? why : "unknown reason");
        }
        return notify_deliver(tx, d,
                              &(notify_input){str(x, "buyer_id"), "order", "order", str(x, "order_id"), NULL, detail},
                              err);
    }
    return 0; /* a type we subscribe to by pattern but do not act on */
}

/* users: display names for rendering, from identity's events. */
static int users_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    doc_store *d = ((service_ctx *)ctx)->doc;
    const char *uid = str(ev->data, "user_id"), *name = str(ev->data, "display_name");
    if (!uid)
        return err_set(err, PL_EINVAL, "data", "%s without data.user_id", ev->type);
    if (!name)
        return 0;
    json_t *patch = json_pack("{s:s, s:s?}", "display_name", name, "username", str(ev->data, "username"));
    int rc = doc_patch(tx, d, NOTIFY_USERS_COLL, uid, patch, NULL, err);
    if (rc == PL_ENOTFOUND)
        rc = doc_put(tx, d, NOTIFY_USERS_COLL, uid, patch, NULL, err);
    json_decref(patch);
    return rc;
}

static int users_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    return doc_delete_where(tx, ((service_ctx *)ctx)->doc, NOTIFY_USERS_COLL, NULL, 0, NULL, err);
}

static const char *const event_types[] = {
    "pl.social.post_liked.v1",        "pl.social.comment_created.v1",     "pl.social.user_followed.v1",
    "pl.social.rsvp_changed.v1",      "pl.achievements.badge_awarded.v1", "pl.commerce.order_completed.v1",
    "pl.commerce.order_failed.v1",    NULL};
static const char *const user_types[] = {"pl.identity.user_registered.v1", "pl.identity.profile_updated.v1", NULL};

static const consumer_def notify_consumers[] = {
    {.name = "events", .types = event_types, .handle = events_handle},
    {.name = "users", .types = user_types, .handle = users_handle, .reset = users_reset, .flags = CONSUMER_PROJECTION},
};

/* ---- lifecycle ----------------------------------------------------------------------- */

static const doc_index f_user_sort[] = {{"user_id", DOC_TEXT}, {"sort", DOC_TEXT}, {0}};
static const doc_index f_user_read_sort[] = {{"user_id", DOC_TEXT}, {"read", DOC_BOOL}, {"sort", DOC_TEXT}, {0}};
static const doc_index f_user_group[] = {{"user_id", DOC_TEXT}, {"group", DOC_TEXT}, {"read", DOC_BOOL}, {0}};
static const doc_index *const notif_indexes[] = {f_user_sort, f_user_read_sort, f_user_group, NULL};

static const doc_collection_def notify_collections[] = {
    {NOTIFY_COLL, notif_indexes},
    {NOTIFY_ACTORS_COLL, NULL},
    {NOTIFY_PREFS_COLL, NULL},
    {NOTIFY_USERS_COLL, NULL},
};

static int notify_start(service_ctx *ctx, pl_error *err)
{
    return doc_ensure(ctx->doc, notify_collections, sizeof notify_collections / sizeof notify_collections[0], err);
}

static const http_route notify_routes[] = {
    {"GET", "/api/v1/notifications", notify_list, HTTP_AUTH, "my notifications, newest activity first"},
    {"GET", "/api/v1/notifications/unread-count", notify_unread_count, HTTP_AUTH, "how many are unread"},
    {"POST", "/api/v1/notifications/{id}/read", notify_mark_read, HTTP_AUTH, "mark one notification read"},
    {"POST", "/api/v1/notifications/read-all", notify_mark_all_read, HTTP_AUTH, "mark all my notifications read"},
    {"GET", "/api/v1/me/notification-preferences", notify_prefs_get, HTTP_AUTH, "which kinds I receive in-app"},
    {"PUT", "/api/v1/me/notification-preferences", notify_prefs_put, HTTP_AUTH, "switch kinds on or off"},
};

const service_def notify_service = {
    .version = 1,
    .name = "notify",
    .summary = "notifications from likes, comments, follows, RSVPs, badges and orders, coalesced and read/unread",
    .stores = SERVICE_USES_DOC,
    .routes = notify_routes,
    .nroutes = sizeof notify_routes / sizeof notify_routes[0],
    .start = notify_start,
    .consumers = notify_consumers,
    .nconsumers = sizeof notify_consumers / sizeof notify_consumers[0],
};
