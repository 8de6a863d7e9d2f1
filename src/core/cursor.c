/* cursor.c - opaque page cursors (see cursor.h): base64url("<body>.<8 hex of a keyed hash of body>"). */
#include "core/cursor.h"
#include "core/err.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define CHECK_HEX 8

static void check_of(const char *s, size_t n, char hex[CHECK_HEX + 1])
{
    static const unsigned char key[] = "pulse.cursor.v1";
    unsigned char h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, (const unsigned char *)s, n, key, sizeof key - 1);
    sodium_bin2hex(hex, CHECK_HEX + 1, h, CHECK_HEX / 2);
}

void cursor_seal(const char *body, char out[CURSOR_TOKEN_MAX])
{
    char raw[CURSOR_BODY_MAX + 1 + CHECK_HEX + 1], hex[CHECK_HEX + 1];
    size_t n = strnlen(body, CURSOR_BODY_MAX);
    check_of(body, n, hex);
    int len = snprintf(raw, sizeof raw, "%.*s.%s", (int)n, body, hex);
    sodium_bin2base64(out, CURSOR_TOKEN_MAX, (const unsigned char *)raw, (size_t)len,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int cursor_open(const char *token, char body[CURSOR_BODY_MAX + 1])
{
    unsigned char raw[CURSOR_BODY_MAX + 1 + CHECK_HEX + 1];
    size_t n = 0, tl = strnlen(token, CURSOR_TOKEN_MAX);
    if (tl == 0 || tl >= CURSOR_TOKEN_MAX ||
        sodium_base642bin(raw, sizeof raw - 1, token, tl, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        n < CHECK_HEX + 1)
        return PL_EINVAL;
    raw[n] = '\0';
    size_t bn = n - CHECK_HEX - 1;
    if (raw[bn] != '.' || memchr(raw, '\0', n) || bn > CURSOR_BODY_MAX)
        return PL_EINVAL;
    char hex[CHECK_HEX + 1];
    check_of((const char *)raw, bn, hex);
    if (sodium_memcmp(hex, raw + bn + 1, CHECK_HEX) != 0)
        return PL_EINVAL;
    memcpy(body, raw, bn);
    body[bn] = '\0';
    return 0;
}
