/* domain.c - messaging's pure rules (domain.h). */
#include "services/messaging/domain.h"
#include "core/cursor.h"
#include "core/json.h"
#include "core/uuid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *msg_check_text(const char *text)
{
    size_t n = utf8_len(text);
    if (n == 0 || n > MSG_TEXT_MAX)
        return "must be 1 to 4000 characters";
    if (strspn(text, " \t\r\n") == strlen(text))
        return "must not be only white space";
    return NULL;
}

const char *msg_check_idem_key(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > MSG_IDEM_KEY_MAX)
        return "must be 1 to 200 characters";
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return "must be printable ASCII without spaces";
    return NULL;
}

void msg_direct_key(const char *a, const char *b, char *out, size_t size)
{
    if (strcmp(a, b) > 0) {
        const char *t = a;
        a = b;
        b = t;
    }
    snprintf(out, size, "%s|%s", a, b);
}

/* ---- cursors (core/cursor.h), with a tag per list: "c1:<activity>", "m1:<f|b>:<seq>" ---------- */

static void wrap(const char *body, char *out, size_t size)
{
    char token[CURSOR_TOKEN_MAX];
    cursor_seal(body, token);
    snprintf(out, size, "%s", token);
}

/* The body of a token (NUL-terminated in body) or -1. */
static int unwrap(const char *token, char *body, size_t size)
{
    char b[CURSOR_BODY_MAX + 1];
    if (cursor_open(token, b) || strlen(b) >= size)
        return -1;
    memcpy(body, b, strlen(b) + 1);
    return 0;
}

void msg_conv_cursor_encode(const char *activity, char *out, size_t size)
{
    char body[48];
    snprintf(body, sizeof body, "c1:%.36s", activity);
    wrap(body, out, size);
}

int msg_conv_cursor_decode(const char *token, char activity[37])
{
    char body[64];
    if (unwrap(token, body, sizeof body) || strncmp(body, "c1:", 3) != 0 || strlen(body) != 39)
        return -1;
    memcpy(activity, body + 3, 37);
    return uuid_valid(activity) ? 0 : -1;
}

void msg_cursor_encode(int64_t seq, bool forward, char *out, size_t size)
{
    char body[48];
    snprintf(body, sizeof body, "m1:%c:%" PRId64, forward ? 'f' : 'b', seq);
    wrap(body, out, size);
}

int msg_cursor_decode(const char *token, int64_t *seq, bool *forward)
{
    char body[64];
    if (unwrap(token, body, sizeof body) || strncmp(body, "m1:", 3) != 0 || (body[3] != 'f' && body[3] != 'b') ||
        body[4] != ':' || body[5] < '0' || body[5] > '9')
        return -1;
    char *end;
    long long v = strtoll(body + 5, &end, 10);
    if (*end || v < 0)
        return -1;
    *seq = v;
    *forward = body[3] == 'f';
    return 0;
}
