/*
 * feed.h - the timeline's pure feed logic, without I/O (unit-tested in
 * tests/unit/timeline_feed.c): the opaque page cursor and the merge of
 * several score-ordered sources (the reader's own feed and the recent-post
 * sets of the celebrity authors it follows) into one page.
 *
 * Order: newest first, by (score desc, id desc). A score is a post's creation
 * time in ms since the epoch; the id breaks ties, so the order is total and a
 * cursor (score, id) names one position: a page after it holds exactly the
 * entries ordered after it, whatever was added before it meanwhile.
 */
#ifndef PULSE_SERVICES_TIMELINE_FEED_H
#define PULSE_SERVICES_TIMELINE_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TL_ID_MAX 64       /* longest post id kept in a cursor */
#define TL_CURSOR_MAX 128  /* room for an encoded cursor, NUL included */

typedef struct tl_entry {
    const char *id; /* borrowed */
    double score;
} tl_entry;

typedef struct tl_cursor {
    int64_t score;
    char id[TL_ID_MAX + 1];
} tl_cursor;

/* True for an id that can be a feed member and sit in a cursor: 1..64 of
 * [A-Za-z0-9_-] (UUIDs are). */
bool tl_id_valid(const char *id);

/* Encodes (score, id) as an opaque URL-safe token into out (TL_CURSOR_MAX).
 * Returns 0, or -1 when the id is not valid or score is negative. */
int tl_cursor_encode(int64_t score, const char *id, char out[TL_CURSOR_MAX]);

/* Decodes a token made by tl_cursor_encode: 0 and *c, or -1 for anything
 * else (wrong alphabet, wrong version, bad number, bad id, trailing bytes). */
int tl_cursor_decode(const char *token, tl_cursor *c);

/* <0 when a comes before b (is newer), >0 after, 0 the same position. */
int tl_entry_cmp(const tl_entry *a, const tl_entry *b);

/* True when e comes strictly after the cursor (is on a later page). A NULL
 * cursor is the head: everything comes after it. */
bool tl_after(const tl_entry *e, const tl_cursor *c);

/* Merges nsrc sources (each any order) into out: the first `max` entries in
 * feed order that come after `after` (NULL: from the head), each id once.
 * Returns how many were written. out's ids are borrowed from the sources. */
size_t tl_merge(const tl_entry *const *srcs, const size_t *ns, size_t nsrc, const tl_cursor *after, tl_entry *out,
                size_t max);

#endif
