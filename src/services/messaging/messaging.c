/*
 * messaging.c - the messaging service: direct (two members, one per pair)
 * and group conversations, messages, membership and per-member read markers,
 * in the doc store. Member ids are checked against a read model of users
 * built from identity's events. Every change and the event it emits commit
 * in one transaction.
 */
#include "services/messaging/messaging.h"
#include "core/json.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

int msg_member_get(sql_tx *tx, doc_store *d, const char *conv_id, const char *user_id, json_t **member,
                   pl_error *err)
{
    char key[96];
    snprintf(key, sizeof key, "%s|%s", conv_id, user_id);
    json_t *m = NULL;
    int rc = doc_get(tx, d, MSG_MEMBERS, key, &m, err);
    if (rc)
        return rc;
    if (member)
        *member = m;
    else
        json_decref(m);
    return 0;
}

int msg_unread(sql_tx *tx, doc_store *d, const char *conv_id, const char *user_id, const json_t *member,
               int64_t *n, pl_error *err)
{
    json_t *c = json_string(conv_id), *u = json_string(user_id),
           *s = json_integer(json_integer_value(json_object_get(member, "last_read_seq")));
    doc_cond w[] = {{"conversation_id", DOC_EQ, c}, {"seq", DOC_GT, s}, {"sender_id", DOC_NE, u}};
    int rc = doc_count(tx, d, MSG_MESSAGES, w, 3, n, err);
    json_decref(c);
    json_decref(u);
    json_decref(s);
    return rc;
}

json_t *msg_message_json(const char *id, const json_t *doc)
{
    return json_pack("{s:s, s:s?, s:I, s:s?, s:s?, s:s?}", "id", id, "conversation_id", str(doc, "conversation_id"),
                     "seq", (json_int_t)json_integer_value(json_object_get(doc, "seq")), "sender_id",
                     str(doc, "sender_id"), "text", str(doc, "text"), "sent_at", str(doc, "sent_at"));
}

int msg_conv_view(sql_tx *tx, doc_store *d, const char *conv_id, const json_t *conv, const char *user_id,
                  const json_t *member, json_t **out, pl_error *err)
{
    int64_t unread = 0;
    int rc = msg_unread(tx, d, conv_id, user_id, member, &unread, err);
    if (rc)
        return rc;
    json_t *last = json_object_get(conv, "last_message"), *title = json_object_get(conv, "title");
    json_t *lr = json_object_get(member, "last_read_id");
    *out = json_pack("{s:s, s:s?, s:O, s:O, s:s?, s:s?, s:O, s:I, s:O, s:s?}", "id", conv_id, "kind",
                     str(conv, "kind"), "title", title ? title : json_null(), "member_ids",
                     json_object_get(conv, "member_ids"), "created_by", str(conv, "created_by"), "created_at",
                     str(conv, "created_at"), "last_message", last ? last : json_null(), "unread_count",
                     (json_int_t)unread, "last_read_message_id", lr ? lr : json_null(), "joined_at",
                     str(member, "joined_at"));
    return 0;
}

/* ---- the users read model -------------------------------------------------------------- */

static int users_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    doc_store *d = ((service_ctx *)ctx)->doc;
    const char *uid = str(ev->data, "user_id"), *name = str(ev->data, "display_name");
    if (!uid)
        return err_set(err, PL_EINVAL, "data", "%s without data.user_id", ev->type);
    json_t *patch = json_pack("{s:s?, s:s?}", "display_name", name, "username", str(ev->data, "username"));
    int rc = doc_patch(tx, d, MSG_USERS, uid, patch, NULL, err);
    if (rc == PL_ENOTFOUND)
        rc = doc_put(tx, d, MSG_USERS, uid, patch, NULL, err);
    json_decref(patch);
    return rc;
}

static int users_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    return doc_delete_where(tx, ((service_ctx *)ctx)->doc, MSG_USERS, NULL, 0, NULL, err);
}

static const char *const user_types[] = {"pl.identity.user_registered.v1", "pl.identity.profile_updated.v1", NULL};

static const consumer_def messaging_consumers[] = {
    {.name = "users", .types = user_types, .handle = users_handle, .reset = users_reset, .flags = CONSUMER_PROJECTION},
};

/* ---- lifecycle ------------------------------------------------------------------------- */

static const doc_index i_member_activity[] = {{"user_id", DOC_TEXT}, {"activity", DOC_TEXT}, {0}};
static const doc_index i_member_conv[] = {{"conversation_id", DOC_TEXT}, {0}};
static const doc_index *const member_indexes[] = {i_member_activity, i_member_conv, NULL};
static const doc_index i_msg_seq[] = {{"conversation_id", DOC_TEXT}, {"seq", DOC_INT}, {0}};
static const doc_index *const message_indexes[] = {i_msg_seq, NULL};

static const doc_collection_def messaging_collections[] = {
    {MSG_CONVS, NULL},     {MSG_PAIRS, NULL}, {MSG_MEMBERS, member_indexes}, {MSG_MESSAGES, message_indexes},
    {MSG_IDEM, NULL},      {MSG_USERS, NULL},
};

static int messaging_start(service_ctx *ctx, pl_error *err)
{
    return doc_ensure(ctx->doc, messaging_collections,
                      sizeof messaging_collections / sizeof messaging_collections[0], err);
}

static const http_route messaging_routes[] = {
    {"POST", "/api/v1/conversations", msg_conv_create, HTTP_AUTH, "start a direct or group conversation"},
    {"GET", "/api/v1/conversations", msg_conv_list, HTTP_AUTH, "my conversations, newest activity first"},
    {"GET", "/api/v1/conversations/{id}", msg_conv_get, HTTP_AUTH, "one of my conversations"},
    {"POST", "/api/v1/conversations/{id}/messages", msg_send, HTTP_AUTH, "send a message (Idempotency-Key)"},
    {"GET", "/api/v1/conversations/{id}/messages", msg_list, HTTP_AUTH, "messages, newest first or ?after="},
    {"POST", "/api/v1/conversations/{id}/members", msg_member_add, HTTP_AUTH, "add a member (group creator)"},
    {"DELETE", "/api/v1/conversations/{id}/members/{user_id}", msg_member_remove, HTTP_AUTH,
     "remove a member (creator) or leave (oneself)"},
    {"POST", "/api/v1/conversations/{id}/read", msg_mark_read, HTTP_AUTH, "move my read marker"},
};

const service_def messaging_service = {
    .version = 1,
    .name = "messaging",
    .summary = "direct and group conversations, messages and read markers",
    .stores = SERVICE_USES_DOC,
    .routes = messaging_routes,
    .nroutes = sizeof messaging_routes / sizeof messaging_routes[0],
    .start = messaging_start,
    .consumers = messaging_consumers,
    .nconsumers = sizeof messaging_consumers / sizeof messaging_consumers[0],
};
