/*
 * domain.h - messaging's pure rules: message text, group sizes, the direct
 * pair key and the opaque cursors of its two lists. No I/O: unit-tested in
 * tests/unit/messaging_domain.c.
 */
#ifndef PULSE_MESSAGING_DOMAIN_H
#define PULSE_MESSAGING_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSG_TEXT_MAX 4000      /* code points */
#define MSG_TITLE_MAX 100      /* code points */
#define MSG_GROUP_MIN 3        /* members, the creator included */
#define MSG_GROUP_MAX 100
#define MSG_IDEM_KEY_MAX 200   /* bytes of an Idempotency-Key */

/* NULL when text is acceptable message text (1..MSG_TEXT_MAX code points,
 * not only white space), else why not. text is valid UTF-8 without NULs. */
const char *msg_check_text(const char *text);

/* NULL when an Idempotency-Key header value is acceptable (1..200 printable
 * ASCII characters), else why not. */
const char *msg_check_idem_key(const char *key);

/* The key of a direct conversation between a and b, the same for (b, a):
 * "<smaller id>|<larger id>". out needs 2 * 36 + 2 bytes. */
void msg_direct_key(const char *a, const char *b, char *out, size_t size);

/* Cursors: opaque tokens with a check value; an edited token is refused.
 * Conversations list: wraps the conversation's activity key (a UUIDv7
 * string). Messages list: wraps a sequence number and a direction
 * (forward = oldest first, after the message). decode returns 0, or -1 for
 * anything this codec did not make. out needs MSG_CURSOR_MAX bytes. */
#define MSG_CURSOR_MAX 96
void msg_conv_cursor_encode(const char *activity, char *out, size_t size);
int  msg_conv_cursor_decode(const char *token, char activity[37]);
void msg_cursor_encode(int64_t seq, bool forward, char *out, size_t size);
int  msg_cursor_decode(const char *token, int64_t *seq, bool *forward);

#endif
