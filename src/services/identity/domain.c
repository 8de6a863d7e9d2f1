/* domain.c - identity's pure rules. */
#include "services/identity/domain.h"
#include "core/json.h"

#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *identity_check_email(const char *e)
{
    size_t n = strlen(e);
    if (n < 3 || n > IDENTITY_EMAIL_MAX)
        return "must be a valid email address";
    const char *at = strchr(e, '@');
    if (!at || at == e || strchr(at + 1, '@'))
        return "must be a valid email address";
    const char *domain = at + 1;
    const char *dot = strrchr(domain, '.');
    if (!dot || dot == domain || dot[1] == '\0' || strstr(domain, ".."))
        return "must be a valid email address";
    for (const char *p = e; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || strchr("()<>,;:\\\"[]", c))
            return "must be a valid email address";
    }
    if (domain[0] == '.' || domain[0] == '-')
        return "must be a valid email address";
    return NULL;
}

const char *identity_check_username(const char *u)
{
    size_t n = strlen(u);
    if (n < IDENTITY_USERNAME_MIN || n > IDENTITY_USERNAME_MAX)
        return "must be 3 to 30 characters";
    for (const char *p = u; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
            return "may contain only a-z, 0-9 and _";
    return NULL;
}

const char *identity_check_password(const char *pw, size_t min_len, const char *username, const char *email)
{
    size_t n = strlen(pw);
    if (utf8_len(pw) < min_len)
        return "is too short";
    if (n > IDENTITY_PASSWORD_MAX)
        return "must be at most 128 bytes";
    bool letter = false, other = false;
    for (const unsigned char *p = (const unsigned char *)pw; *p; p++) {
        if (isalpha(*p))
            letter = true;
        else
            other = true; /* digits, symbols and non-ASCII letters all count */
    }
    if (!letter || !other)
        return "must mix letters with digits or symbols";
    if ((username && strcasecmp(pw, username) == 0) || (email && strcasecmp(pw, email) == 0))
        return "must differ from the username and email";
    return NULL;
}

const char *identity_check_display_name(const char *name)
{
    size_t n = utf8_len(name);
    if (n < IDENTITY_DISPLAY_MIN || n > IDENTITY_DISPLAY_MAX)
        return "must be 1 to 80 characters";
    bool visible = false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
        visible |= *p != ' ';
    }
    return visible ? NULL : "must not be blank";
}

void identity_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

bool identity_role_valid(const char *r)
{
    return r && (!strcmp(r, "student") || !strcmp(r, "teacher") || !strcmp(r, "admin"));
}

void identity_token_new(char out[IDENTITY_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, "plt_", 4);
    sodium_bin2base64(out + 4, IDENTITY_TOKEN_LEN + 1 - 4, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}
