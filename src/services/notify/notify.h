/*
 * notify.h - internal to the notify service: its collections, the delivery
 * of one notification (create or coalesce) and the HTTP handlers. Nothing
 * outside src/services/notify includes it.
 */
#ifndef PULSE_NOTIFY_NOTIFY_H
#define PULSE_NOTIFY_NOTIFY_H

#include "services/notify/domain.h"
#include "services/service.h"
#include "store/doc.h"

/* Collections (doc store):
 *   notifications        uuid7 id -> {user_id, kind, object_type, object_id, group, actor_ids, actor_count,
 *                         text, detail, read, created_at, updated_at, sort}
 *   notification_actors  "<notification id>:<actor id>" -> {notification_id}: the distinct actors counted
 *   prefs                user id -> {in_app: {kind: bool}}
 *   users                user id -> {username, display_name} (from identity's events) */
#define NOTIFY_COLL "notifications"
#define NOTIFY_ACTORS_COLL "notification_actors"
#define NOTIFY_PREFS_COLL "prefs"
#define NOTIFY_USERS_COLL "users"

/* What happened, for one recipient. */
typedef struct notify_input {
    const char *user_id;      /* recipient */
    const char *kind;
    const char *object_type;  /* post, comment, user, campus_event, badge, order */
    const char *object_id;
    const char *actor_id;     /* NULL for system notifications (badge, order) */
    const char *detail;       /* see notify_render */
} notify_input;

/* Creates the notification, or merges it into the recipient's unread one of
 * the same kind and object when the kind coalesces; emits
 * notification_created / notification_updated in tx. Does nothing (returns
 * 0) for the actor's own action, a kind the recipient switched off, or an
 * actor already counted in the open notification. */
int notify_deliver(sql_tx *tx, doc_store *d, const notify_input *in, pl_error *err);

/* Sets doc's "text" from its kind, actors and detail with the actors'
 * current display names (the users projection; "Someone" when unknown). */
int notify_render_doc(sql_tx *tx, doc_store *d, json_t *doc, pl_error *err);

/* The API shape of a stored notification (new reference). */
json_t *notify_item_json(const char *id, const json_t *doc);

/* Whether the user wants kind in-app (true when never set). */
int notify_pref_on(sql_tx *tx, doc_store *d, const char *user_id, const char *kind, bool *on, pl_error *err);

/* handlers.c */
int notify_list(http_req *req, http_res *res);
int notify_unread_count(http_req *req, http_res *res);
int notify_mark_read(http_req *req, http_res *res);
int notify_mark_all_read(http_req *req, http_res *res);
int notify_prefs_get(http_req *req, http_res *res);
int notify_prefs_put(http_req *req, http_res *res);

#endif
