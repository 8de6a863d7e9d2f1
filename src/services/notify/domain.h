/*
 * domain.h - notify's pure rules: the kinds of notification, which of them
 * coalesce, the server-side text of a notification, and the opaque list
 * cursor. No I/O: unit-tested in tests/unit/notify_domain.c.
 */
#ifndef PULSE_NOTIFY_DOMAIN_H
#define PULSE_NOTIFY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* like, comment, reply, follow, rsvp, badge, order: NULL-terminated. */
extern const char *const notify_kinds[];
bool notify_kind_valid(const char *kind);
/* Kinds whose bursts merge into one unread notification per object. */
bool notify_kind_coalesces(const char *kind);

/* The most actor ids a notification keeps (most recent first). */
#define NOTIFY_MAX_ACTORS 3

/* Renders the notification's text into out (always NUL-terminated, cut at a
 * UTF-8 boundary when it does not fit).
 *   names:  display names of the most recent actors, newest first (NULL or
 *           "" entries render as "Someone"); up to NOTIFY_MAX_ACTORS used.
 *   count:  distinct actors in total (>= nnames).
 *   detail: kind-specific: rsvp "going"|"interested"; badge its title;
 *           order "completed:<invoice number>" or "failed:<reason>".
 * Examples: "Ada liked your post", "Ada and Bo liked your post",
 * "Ada, Bo and Cy liked your post", "Ada, Bo and 12 others liked your post". */
void notify_render(const char *kind, const char *const *names, size_t nnames, int64_t count, const char *detail,
                   char *out, size_t size);

/* The list cursor: an opaque token wrapping a notification's sort key (a
 * UUIDv7 string) with a check value, so an edited token is refused.
 * encode: out needs NOTIFY_CURSOR_MAX bytes. decode: 0 and key filled (37
 * bytes), or -1 for anything that is not a token this codec made. */
#define NOTIFY_CURSOR_MAX 96
void notify_cursor_encode(const char *sort_key, char *out, size_t size);
int  notify_cursor_decode(const char *token, char key[37]);

#endif
