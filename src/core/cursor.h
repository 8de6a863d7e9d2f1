/*
 * cursor.h - opaque page cursors.
 *
 * A list hands out where its page ended (an id, "<time>_<id>", ...) as an
 * opaque token: base64url of the position and a keyed check of it. A token
 * that was cut, edited or made up fails the check, so the list answers 400
 * instead of serving a page from a position it never gave out. The check
 * detects tampering; it is not a secret (positions are not confidential).
 */
#ifndef PULSE_CORE_CURSOR_H
#define PULSE_CORE_CURSOR_H

#include <stddef.h>

/* The longest position a cursor carries, and the size of a token buffer. */
#define CURSOR_BODY_MAX 96
#define CURSOR_TOKEN_MAX 144

/* Writes the token for `body` (at most CURSOR_BODY_MAX bytes, no NUL) into
 * out (CURSOR_TOKEN_MAX bytes). */
void cursor_seal(const char *body, char out[CURSOR_TOKEN_MAX]);
/* Writes the position a token carries into body (CURSOR_BODY_MAX + 1 bytes);
 * 0, or PL_EINVAL for anything cursor_seal did not make. */
int cursor_open(const char *token, char body[CURSOR_BODY_MAX + 1]);

#endif
