/*
 * messaging.h - internal to the messaging service: its collections, shared
 * store helpers and the HTTP handlers. Nothing outside src/services/messaging
 * includes it.
 */
#ifndef PULSE_MESSAGING_MESSAGING_H
#define PULSE_MESSAGING_MESSAGING_H

#include "services/messaging/domain.h"
#include "services/service.h"
#include "store/doc.h"

/* Collections (doc store):
 *   conversations  uuid7 -> {kind, title|null, member_ids, created_by, created_at, seq, last_message|null, activity}
 *   direct_pairs   msg_direct_key -> {conversation_id}: at most one direct conversation per pair
 *   members        "<conversation id>|<user id>" -> {conversation_id, user_id, joined_at, activity,
 *                  last_read_seq, last_read_id|null, last_read_at|null}
 *   messages       uuid7 -> {conversation_id, seq, sender_id, text, sent_at}
 *   idempotency    "<sender>|<conversation>|<sha256 of the key>" -> {message_id, text_hash}
 *   users          user id -> {username, display_name} (from identity's events) */
#define MSG_CONVS "conversations"
#define MSG_PAIRS "direct_pairs"
#define MSG_MEMBERS "members"
#define MSG_MESSAGES "messages"
#define MSG_IDEM "idempotency"
#define MSG_USERS "users"

/* The caller's membership of a conversation: 0 and *member (may be NULL),
 * PL_ENOTFOUND when conv_id is not a conversation the user is in. */
int msg_member_get(sql_tx *tx, doc_store *d, const char *conv_id, const char *user_id, json_t **member,
                   pl_error *err);
/* Messages after the member's read marker that others sent. */
int msg_unread(sql_tx *tx, doc_store *d, const char *conv_id, const char *user_id, const json_t *member,
               int64_t *n, pl_error *err);
/* The conversation as user_id sees it (new reference). */
int msg_conv_view(sql_tx *tx, doc_store *d, const char *conv_id, const json_t *conv, const char *user_id,
                  const json_t *member, json_t **out, pl_error *err);
json_t *msg_message_json(const char *id, const json_t *doc);
/* The last_message preview: the text cut to 140 code points (new reference). */
json_t *msg_preview(const char *id, const char *sender, const char *text, const char *at);

/* handlers.c */
int msg_conv_create(http_req *req, http_res *res);
int msg_conv_list(http_req *req, http_res *res);
int msg_conv_get(http_req *req, http_res *res);
int msg_send(http_req *req, http_res *res);
int msg_list(http_req *req, http_res *res);
int msg_member_add(http_req *req, http_res *res);
int msg_member_remove(http_req *req, http_res *res);
int msg_mark_read(http_req *req, http_res *res);

#endif
