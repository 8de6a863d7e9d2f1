/* identity_domain.c - unit tests of identity's pure rules, tokens and the
 * session token hash (src/services/identity/domain.c, src/services/sessions.c). */
#include "services/identity/domain.h"
#include "services/sessions.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static void init_sodium(void) { cr_assert_geq(sodium_init(), 0); }

TestSuite(identity, .init = init_sodium);

static char *repeat(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

Test(identity, emails)
{
    static const char *const good[] = {"a@b.co", "zoe@campus.example.edu", "first.last+tag@sub.example.org",
                                       "UPPER@Example.COM", "x_y-z@a-b.io", "a@b.c"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert_null(identity_check_email(good[i]), "\"%s\" rejected", good[i]);
    static const char *const bad[] = {"", "a", "@b.co", "a@", "a@b", "a@b.", "a@.b.co", "a@b..co", "a@@b.co",
                                      "a@b@c.co", "a b@c.co", "a@b.co ", " a@b.co", "a\t@b.co", "a\"b@c.co",
                                      "a<b>@c.co", "a@b,c.co", "a@-b.co", "a@[1.2.3.4]", "zoë@campus.edu",
                                      "a@b.co\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not_null(identity_check_email(bad[i]), "\"%s\" accepted", bad[i]);
}

Test(identity, email_length_boundary)
{
    char e[300];
    /* 254 characters is the longest address there is */
    memset(e, 'a', 254);
    memcpy(e + 254 - 7, "@x.test", 7);
    e[254] = '\0';
    cr_assert_eq(strlen(e), IDENTITY_EMAIL_MAX);
    cr_assert_null(identity_check_email(e));
    memset(e, 'a', 255);
    memcpy(e + 255 - 7, "@x.test", 7);
    e[255] = '\0';
    cr_assert_not_null(identity_check_email(e));
}

Test(identity, usernames)
{
    char buf[64];
    cr_assert_null(identity_check_username("abc"));
    cr_assert_null(identity_check_username("zoe_2026"));
    cr_assert_null(identity_check_username("___"));
    cr_assert_null(identity_check_username(repeat(buf, 'a', IDENTITY_USERNAME_MAX)));
    cr_assert_str_eq(identity_check_username(repeat(buf, 'a', IDENTITY_USERNAME_MAX + 1)), "must be 3 to 30 characters");
    cr_assert_str_eq(identity_check_username("ab"), "must be 3 to 30 characters");
    cr_assert_str_eq(identity_check_username(""), "must be 3 to 30 characters");
    static const char *const bad[] = {"Zoe", "zoe-x", "zoe.x", "zoe x", "zoë", "日本語", "abc\n", "ab$"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not_null(identity_check_username(bad[i]), "\"%s\" accepted", bad[i]);
    cr_assert_str_eq(identity_check_username("Zoe"), "may contain only a-z, 0-9 and _");
}

Test(identity, passwords)
{
    cr_assert_null(identity_check_password("correct-horse-7", 10, "zoe", "zoe@x.io"));
    cr_assert_null(identity_check_password("abcdefghi1", 10, NULL, NULL), "exactly the minimum");
    cr_assert_str_eq(identity_check_password("abcdefgh1", 10, NULL, NULL), "is too short");
    cr_assert_str_eq(identity_check_password("abcdefghijkl", 10, NULL, NULL),
                     "must mix letters with digits or symbols");
    cr_assert_str_eq(identity_check_password("123456789012", 10, NULL, NULL),
                     "must mix letters with digits or symbols");
    cr_assert_str_eq(identity_check_password("!@#$%^&*()_+", 10, NULL, NULL),
                     "must mix letters with digits or symbols");
    cr_assert_null(identity_check_password("only letters and spaces", 10, NULL, NULL), "a space is a symbol");
    cr_assert_str_eq(identity_check_password("Zoe_Student1", 10, "zoe_student1", NULL),
                     "must differ from the username and email");
    cr_assert_str_eq(identity_check_password("ZOE@X.IO-99", 10, "zoe", "zoe@x.io-99"),
                     "must differ from the username and email");
}

Test(identity, password_length_counts_characters_and_caps_bytes)
{
    /* 10 characters, 20 bytes: long enough although each letter is 2 bytes */
    cr_assert_null(identity_check_password("éééééééé1a", 10, NULL, NULL));
    /* 9 characters but 17 bytes: too short whatever the byte count */
    cr_assert_str_eq(identity_check_password("éééééééa1", 10, NULL, NULL), "is too short");
    char buf[200];
    repeat(buf, 'a', IDENTITY_PASSWORD_MAX);
    buf[0] = '1';
    cr_assert_null(identity_check_password(buf, 10, NULL, NULL), "128 bytes is the maximum");
    repeat(buf, 'a', IDENTITY_PASSWORD_MAX + 1);
    buf[0] = '1';
    cr_assert_str_eq(identity_check_password(buf, 10, NULL, NULL), "must be at most 128 bytes");
    /* 65 two-byte characters: 130 bytes */
    char wide[256] = "";
    for (int i = 0; i < 65; i++)
        strcat(wide, "é");
    strcat(wide, "a");
    cr_assert_str_eq(identity_check_password(wide, 10, NULL, NULL), "must be at most 128 bytes");
}

Test(identity, display_names)
{
    char buf[512];
    cr_assert_null(identity_check_display_name("Zoë Ångström"));
    cr_assert_null(identity_check_display_name("日本語の名前"));
    cr_assert_null(identity_check_display_name("x"));
    cr_assert_null(identity_check_display_name(repeat(buf, 'n', IDENTITY_DISPLAY_MAX)));
    cr_assert_str_eq(identity_check_display_name(repeat(buf, 'n', IDENTITY_DISPLAY_MAX + 1)),
                     "must be 1 to 80 characters");
    /* 80 three-byte characters (240 bytes) is still 80 characters */
    buf[0] = '\0';
    for (int i = 0; i < IDENTITY_DISPLAY_MAX; i++)
        strcat(buf, "語");
    cr_assert_null(identity_check_display_name(buf));
    strcat(buf, "語");
    cr_assert_not_null(identity_check_display_name(buf));
    cr_assert_str_eq(identity_check_display_name(""), "must be 1 to 80 characters");
    cr_assert_str_eq(identity_check_display_name("   "), "must not be blank");
    cr_assert_str_eq(identity_check_display_name("Zoe\nSmith"), "must not contain control characters");
    cr_assert_str_eq(identity_check_display_name("Zoe\x7f"), "must not contain control characters");
    cr_assert_str_eq(identity_check_display_name("\t"), "must not contain control characters");
}

Test(identity, lower_and_roles)
{
    char s[] = "Zoë.SMITH@Example.COM";
    identity_lower(s);
    cr_assert_str_eq(s, "zoë.smith@example.com", "ASCII lowered, other bytes untouched");
    cr_assert(identity_role_valid("student"));
    cr_assert(identity_role_valid("teacher"));
    cr_assert(identity_role_valid("admin"));
    cr_assert_not(identity_role_valid("Admin"));
    cr_assert_not(identity_role_valid("root"));
    cr_assert_not(identity_role_valid(""));
    cr_assert_not(identity_role_valid(NULL));
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

Test(identity, tokens_have_the_format_and_differ)
{
    enum { N = 200 };
    static char toks[N][IDENTITY_TOKEN_LEN + 1];
    for (int i = 0; i < N; i++) {
        memset(toks[i], 0x7f, sizeof toks[i]);
        identity_token_new(toks[i]);
        cr_assert_eq(strlen(toks[i]), 47, "%s", toks[i]);
        cr_assert_eq(strncmp(toks[i], "plt_", 4), 0, "%s", toks[i]);
        for (int k = 4; k < 47; k++)
            cr_assert(is_b64url(toks[i][k]), "char %d of %s is not base64url", k, toks[i]);
        unsigned char raw[33];
        size_t len = 0;
        cr_assert_eq(sodium_base642bin(raw, sizeof raw, toks[i] + 4, 43, NULL, &len, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
        cr_assert_eq(len, 32, "a token carries 256 bits");
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(toks[i], toks[j], "tokens %d and %d are equal", i, j);
    }
}

Test(identity, token_hash_is_sha256_hex)
{
    char out[65];
    sessions_token_hash("abc", out);
    cr_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sessions_token_hash("", out);
    cr_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    char tok[IDENTITY_TOKEN_LEN + 1], h1[65], h2[65];
    identity_token_new(tok);
    sessions_token_hash(tok, h1);
    sessions_token_hash(tok, h2);
    cr_assert_str_eq(h1, h2, "hashing is deterministic");
    cr_assert_eq(strlen(h1), 64);
    cr_assert_eq(strspn(h1, "0123456789abcdef"), 64);
    cr_assert_null(strstr(h1, tok + 4));
}
