/* domain.c - notify's pure rules (domain.h). */
#include "services/notify/domain.h"
#include "core/cursor.h"
#include "core/uuid.h"

#include <stdio.h>
#include <string.h>

const char *const notify_kinds[] = {"like", "comment", "reply", "follow", "rsvp", "badge", "order", NULL};

bool notify_kind_valid(const char *kind)
{
    for (const char *const *k = notify_kinds; *k; k++)
        if (strcmp(*k, kind) == 0)
            return true;
    return false;
}

/* rsvp, badge and order are about one thing happening once; the rest are
 * the social bursts that would otherwise flood an inbox. */
bool notify_kind_coalesces(const char *kind)
{
    return strcmp(kind, "like") == 0 || strcmp(kind, "comment") == 0 || strcmp(kind, "reply") == 0 ||
           strcmp(kind, "follow") == 0;
}

static const char *name_or_someone(const char *const *names, size_t nnames, size_t i)
{
    return i < nnames && names[i] && names[i][0] ? names[i] : "Someone";
}

/* Cuts s to fit size bytes with its NUL, without splitting a UTF-8
 * sequence: when the first byte left out continues a character, the cut
 * moves back to that character's first byte. */
static void cut_utf8(char *s, size_t size)
{
    if (strlen(s) < size)
        return;
    size_t end = size - 1;
    while (end > 0 && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--;
    s[end] = '\0';
}

void notify_render(const char *kind, const char *const *names, size_t nnames, int64_t count, const char *detail,
                   char *out, size_t size)
{
    char who[512];
    if (count < (int64_t)nnames)
        count = (int64_t)nnames;
    const char *a = name_or_someone(names, nnames, 0), *b = name_or_someone(names, nnames, 1),
               *c = name_or_someone(names, nnames, 2);
    if (count <= 1)
        snprintf(who, sizeof who, "%s", a);
    else if (count == 2)
        snprintf(who, sizeof who, "%s and %s", a, b);
    else if (count == 3)
        snprintf(who, sizeof who, "%s, %s and %s", a, b, c);
    else
        snprintf(who, sizeof who, "%s, %s and %lld others", a, b, (long long)(count - 2));
    const char *d = detail ? detail : "";
    /* fits any buffer: formatted long, then cut on a character boundary */
    char buf[1024];
    if (strcmp(kind, "like") == 0)
        snprintf(buf, sizeof buf, "%s liked your post", who);
    else if (strcmp(kind, "comment") == 0)
        snprintf(buf, sizeof buf, "%s commented on your post", who);
    else if (strcmp(kind, "reply") == 0)
        snprintf(buf, sizeof buf, "%s replied to your comment", who);
    else if (strcmp(kind, "follow") == 0)
        snprintf(buf, sizeof buf, "%s started following you", who);
    else if (strcmp(kind, "rsvp") == 0)
        snprintf(buf, sizeof buf, "%s %s your event", who,
                 strcmp(d, "interested") == 0 ? (count > 1 ? "are interested in" : "is interested in")
                                              : (count > 1 ? "are going to" : "is going to"));
    else if (strcmp(kind, "badge") == 0)
        snprintf(buf, sizeof buf, "You earned the badge \"%s\"", *d ? d : "a badge");
    else if (strcmp(kind, "order") == 0 && strncmp(d, "completed:", 10) == 0)
        snprintf(buf, sizeof buf, "Your purchase is complete (invoice %s)", d + 10);
    else if (strcmp(kind, "order") == 0 && strncmp(d, "failed:", 7) == 0)
        snprintf(buf, sizeof buf, "Your purchase could not be completed (%s)", d + 7);
    else
        snprintf(buf, sizeof buf, "You have a new notification");
    if (size == 0)
        return;
    cut_utf8(buf, size);
    snprintf(out, size, "%s", buf);
}

/* ---- the cursor ------------------------------------------------------------------ */

#define CURSOR_TAG "n1."

void notify_cursor_encode(const char *sort_key, char *out, size_t size)
{
    char body[64], token[CURSOR_TOKEN_MAX];
    snprintf(body, sizeof body, CURSOR_TAG "%.36s", sort_key);
    cursor_seal(body, token);
    snprintf(out, size, "%s", token);
}

int notify_cursor_decode(const char *token, char key[37])
{
    char body[CURSOR_BODY_MAX + 1];
    if (cursor_open(token, body) || strlen(body) != 3 + 36 || memcmp(body, CURSOR_TAG, 3) != 0)
        return -1;
    memcpy(key, body + 3, 37);
    return uuid_valid(key) ? 0 : -1;
}
