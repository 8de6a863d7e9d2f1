/*
 * messaging.c - the messaging service: direct (two members, one per pair)
 * and group conversations, messages, membership and per-member read markers,
 * in the doc store. Member ids are checked against a read model of users
 * built from identity's events. Every change and the event it emits commit
 * in one transaction.
 */
#include "services/messaging/messaging.h"
#include "bus/outbox.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"

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

json_t *msg_preview(const char *id, const char *sender, const char *text, const char *at)
{
    size_t bytes = 0, cps = 0;
    while (text[bytes] && cps < 140) {
        bytes++;
        while (((unsigned char)text[bytes] & 0xC0) == 0x80)
            bytes++;
        cps++;
    }
    return json_pack("{s:s, s:s, s:s%, s:b, s:s}", "id", id, "sender_id", sender, "text", text, bytes, "truncated",
                     text[bytes] != '\0', "sent_at", at);
}

/* ---- demo data: seeded once the projection knows identity's demo users ------------------- */

#define MSG_DEMO "demo"

/* 1 and out filled when the users projection has (username, display name). */
static int demo_user(sql_tx *tx, doc_store *d, const char *username, const char *display, char out[40], pl_error *err)
{
    json_t *u = json_string(username), *n = json_string(display);
    doc_cond w[] = {{"username", DOC_EQ, u}, {"display_name", DOC_EQ, n}};
    doc_query q = {.where = w, .nwhere = 2, .limit = 1};
    char **ids = NULL;
    size_t k = 0;
    int rc = doc_find(tx, d, MSG_USERS, &q, &ids, NULL, &k, err);
    json_decref(u);
    json_decref(n);
    if (!rc && k == 1)
        snprintf(out, 40, "%s", ids[0]);
    doc_results_free(ids, NULL, k);
    return rc < 0 ? rc : k == 1;
}

/* One conversation with its messages (sender index, text), written as the
 * API would: documents, markers and events. */
static int demo_conversation(sql_tx *tx, doc_store *d, const char *kind, const char *title, char (*members)[40],
                             size_t nmembers, const int *senders, const char *const *texts, size_t n, pl_error *err)
{
    char id[UUID_STR_LEN], now[32], activity[UUID_STR_LEN], mid[UUID_STR_LEN] = "", key[96];
    uuid7_new(id);
    time_rfc3339(time_now_ms(), now, sizeof now);
    json_t *ids = json_array();
    for (size_t i = 0; i < nmembers; i++)
        json_array_append_new(ids, json_string(members[i]));
    json_t *conv = json_pack("{s:s, s:s?, s:O, s:s, s:s, s:I, s:n, s:s}", "kind", kind, "title", title, "member_ids",
                             ids, "created_by", members[0], "created_at", now, "seq", (json_int_t)n, "last_message",
                             "activity", id);
    if (!title)
        json_object_set_new(conv, "title", json_null());
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uuid7_new(mid);
        const char *from = members[senders[i]];
        json_t *m = json_pack("{s:s, s:I, s:s, s:s, s:s}", "conversation_id", id, "seq", (json_int_t)(i + 1),
                              "sender_id", from, "text", texts[i], "sent_at", now);
        rc = doc_insert(tx, d, MSG_MESSAGES, mid, m, err);
        json_decref(m);
        if (!rc && i + 1 == n)
            json_object_set_new(conv, "last_message", msg_preview(mid, from, texts[i], now));
    }
    uuid7_new(activity);
    json_object_set_new(conv, "activity", json_string(activity));
    if (!rc)
        rc = doc_insert(tx, d, MSG_CONVS, id, conv, err);
    if (!rc && strcmp(kind, "direct") == 0) {
        msg_direct_key(members[0], members[1], key, sizeof key);
        json_t *p = json_pack("{s:s}", "conversation_id", id);
        rc = doc_insert(tx, d, MSG_PAIRS, key, p, err);
        json_decref(p);
    }
    if (!rc)
        rc = outbox_emit(tx, "messaging", "pl.messaging.conversation_created.v1", id, NULL,
                         json_pack("{s:s, s:s, s:O, s:O, s:s, s:s}", "conversation_id", id, "kind", kind, "title",
                                   json_object_get(conv, "title"), "member_ids", ids, "created_by", members[0],
                                   "created_at", now),
                         NULL, err);
    for (size_t i = 0; i < nmembers && !rc; i++) {
        /* each member has read up to their own last message */
        int64_t read = 0;
        for (size_t k = 0; k < n; k++)
            if ((size_t)senders[k] == i)
                read = (int64_t)k + 1;
        snprintf(key, sizeof key, "%s|%s", id, members[i]);
        json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:I, s:n, s:n}", "conversation_id", id, "user_id", members[i],
                              "joined_at", now, "activity", activity, "last_read_seq", (json_int_t)read,
                              "last_read_id", "last_read_at");
        rc = doc_insert(tx, d, MSG_MEMBERS, key, m, err);
        json_decref(m);
    }
    /* the message events, in order, for the realtime gateway */
    if (!rc) {
        json_t *c = json_string(id);
        doc_cond w[] = {{"conversation_id", DOC_EQ, c}};
        doc_query q = {.where = w, .nwhere = 1, .order_by = "seq"};
        char **mids = NULL;
        json_t **docs = NULL;
        size_t k = 0;
        rc = doc_find(tx, d, MSG_MESSAGES, &q, &mids, &docs, &k, err);
        for (size_t i = 0; i < k && !rc; i++)
            rc = outbox_emit(tx, "messaging", "pl.messaging.message_sent.v1", id, NULL,
                             json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "conversation_id", id, "message_id", mids[i],
                                       "sender_id", json_string_value(json_object_get(docs[i], "sender_id")), "text",
                                       json_string_value(json_object_get(docs[i], "text")), "sent_at", now,
                                       "recipient_ids", ids),
                             NULL, err);
        doc_results_free(mids, docs, k);
        json_decref(c);
    }
    json_decref(conv);
    json_decref(ids);
    return rc;
}

/* Runs in the users consumer's transaction (and at `--demo`): seeds when
 * the demo was asked for and ada, sam and lin are all known here. */
static int demo_seed(sql_tx *tx, doc_store *d, pl_error *err)
{
    json_t *state = NULL;
    int rc = doc_get(tx, d, MSG_DEMO, "state", &state, err);
    if (rc == PL_ENOTFOUND)
        return 0;
    bool pending = !rc && strcmp(json_string_value(json_object_get(state, "state")), "pending") == 0;
    json_decref(state);
    if (rc || !pending)
        return rc;
    char who[3][40];
    static const char *const want[][2] = {{"ada", "Ada Lovelace"}, {"sam", "Sam Student"}, {"lin", "Lin Learner"}};
    for (int i = 0; i < 3; i++)
        if ((rc = demo_user(tx, d, want[i][0], want[i][1], who[i], err)) <= 0)
            return rc; /* not all here yet: a later registration tries again */
    static const int g_from[] = {0, 1, 2, 0};
    static const char *const g_text[] = {
        "Welcome to the Intro to Algorithms study group! Questions about this week's problem set go here.",
        "Is the graph search exercise due Friday or Monday?",
        "Friday, I think. Shall we meet in the library on Thursday?",
        "Friday 23:59. Thursday in the library sounds good: I can drop by at 16:00."};
    static const int d_from[] = {0, 1};
    static const char *const d_text[] = {"Did you finish quiz 2 already?", "Yes! The last question was tricky ð"};
    char pair[2][40];
    memcpy(pair[0], who[1], 40);
    memcpy(pair[1], who[2], 40);
    json_t *done = json_pack("{s:s}", "state", "done");
    if (!(rc = demo_conversation(tx, d, "group", "Intro to Algorithms study group", who, 3, g_from, g_text, 4, err)) &&
        !(rc = demo_conversation(tx, d, "direct", NULL, pair, 2, d_from, d_text, 2, err)))
        rc = doc_put(tx, d, MSG_DEMO, "state", done, NULL, err);
    json_decref(done);
    return rc;
}

static int messaging_demo(service_ctx *ctx, void (*out)(const char *line), pl_error *err)
{
    doc_store *d = ctx->doc;
    sql_tx *tx;
    int64_t n = 0;
    int rc = sql_begin(doc_sql(d), SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    json_t *state = NULL;
    rc = doc_get(tx, d, MSG_DEMO, "state", &state, err);
    if (rc == PL_ENOTFOUND && !(rc = doc_count(tx, d, MSG_CONVS, NULL, 0, &n, err)) && n == 0) {
        json_t *p = json_pack("{s:s}", "state", "pending");
        if (!(rc = doc_put(tx, d, MSG_DEMO, "state", p, NULL, err)))
            rc = demo_seed(tx, d, err); /* the users may be known already (a restart) */
        json_decref(p);
    }
    json_decref(state);
    rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, err);
    if (!rc)
        out("Demo conversations: a study group (ada, sam, lin) and a direct chat (sam, lin); "
            "GET /api/v1/conversations as sam");
    return rc;
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
    return rc ? rc : demo_seed(tx, d, err);
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
    {MSG_IDEM, NULL},      {MSG_USERS, NULL},    {MSG_DEMO, NULL},
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
    .demo = messaging_demo,
    .consumers = messaging_consumers,
    .nconsumers = sizeof messaging_consumers / sizeof messaging_consumers[0],
};
