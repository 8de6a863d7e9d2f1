/* domain.c - messaging's pure rules (domain.h). */
#include "services/messaging/domain.h"
#include "core/json.h"
#include "core/uuid.h"

#include <inttypes.h>
#include <sodium.h>
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

/* ---- cursors: base64url("<tag><body>.<8 hex of a keyed hash of tag+body>") ---------- */

static void check_of(const char *s, size_t n, char hex[9])
{
    static const unsigned char key[] = "pulse.messaging.cursor.v1";
    unsigned char h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, (const unsigned char *)s, n, key, sizeof key - 1);
    sodium_bin2hex(hex, 9, h, 4);
}

static void wrap(const char *body, char *out, size_t size)
{
    char raw[80], hex[9];
    size_t n = strlen(body);
    check_of(body, n, hex);
    int len = snprintf(raw, sizeof raw, "%s.%s", body, hex);
    sodium_bin2base64(out, size, (const unsigned char *)raw, (size_t)len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* The body of a token (NUL-terminated in body) or -1. */
static int unwrap(const char *token, char *body, size_t size)
{
    unsigned char raw[80];
    size_t n = 0, tl = strlen(token);
    if (tl == 0 || tl > 100 ||
        sodium_base642bin(raw, sizeof raw - 1, token, tl, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        n < 10 || n - 9 >= size)
        return -1;
    raw[n] = '\0';
    if (raw[n - 9] != '.' || memchr(raw, '\0', n))
        return -1;
    char hex[9];
    check_of((const char *)raw, n - 9, hex);
    if (memcmp(hex, raw + n - 8, 8) != 0)
        return -1;
    memcpy(body, raw, n - 9);
    body[n - 9] = '\0';
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
