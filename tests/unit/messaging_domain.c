/* messaging_domain.c - unit tests of messaging's pure rules: text, keys and
 * the two cursors (src/services/messaging/domain.c). */
#include "core/uuid.h"
#include "services/messaging/domain.h"

#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static void init_sodium(void) { cr_assert_geq(sodium_init(), 0); }

TestSuite(messaging, .init = init_sodium);

Test(messaging, text_bounds_in_code_points)
{
    cr_assert_null(msg_check_text("hi"));
    cr_assert_null(msg_check_text("  padded  "));
    cr_assert_not_null(msg_check_text(""));
    cr_assert_not_null(msg_check_text(" \t\r\n "));
    char *s = malloc(4 * 4001 + 1);
    memset(s, 'a', 4000);
    s[4000] = '\0';
    cr_assert_null(msg_check_text(s));
    s[4000] = 'a';
    s[4001] = '\0';
    cr_assert_not_null(msg_check_text(s));
    /* 4000 four-byte characters are 16000 bytes and still fit */
    for (int i = 0; i < 4000; i++)
        memcpy(s + 4 * i, "\xF0\x9F\x98\x80", 4);
    s[16000] = '\0';
    cr_assert_null(msg_check_text(s));
    free(s);
}

Test(messaging, idempotency_keys)
{
    cr_assert_null(msg_check_idem_key("abc-123_XYZ:1"));
    cr_assert_not_null(msg_check_idem_key(""));
    cr_assert_not_null(msg_check_idem_key("has space"));
    cr_assert_not_null(msg_check_idem_key("tab\there"));
    cr_assert_not_null(msg_check_idem_key("caf\xC3\xA9"));
    char k[202];
    memset(k, 'k', 201);
    k[201] = '\0';
    cr_assert_not_null(msg_check_idem_key(k));
    k[200] = '\0';
    cr_assert_null(msg_check_idem_key(k));
}

Test(messaging, direct_key_is_symmetric)
{
    char a[UUID_STR_LEN], b[UUID_STR_LEN], k1[80], k2[80];
    uuid7_new(a);
    uuid7_new(b);
    msg_direct_key(a, b, k1, sizeof k1);
    msg_direct_key(b, a, k2, sizeof k2);
    cr_assert_str_eq(k1, k2);
    cr_assert_eq(strlen(k1), 73);
    cr_assert_eq(strncmp(k1, a, 36), 0, "the smaller id first");
}

Test(messaging, message_cursor_round_trips)
{
    static const int64_t seqs[] = {0, 1, 42, 999999, INT64_MAX};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++)
        for (int f = 0; f < 2; f++) {
            char t[MSG_CURSOR_MAX];
            int64_t seq = -1;
            bool fwd = !f;
            msg_cursor_encode(seqs[i], f, t, sizeof t);
            cr_assert_eq(msg_cursor_decode(t, &seq, &fwd), 0, "%s", t);
            cr_assert_eq(seq, seqs[i]);
            cr_assert_eq(fwd, (bool)f);
        }
}

Test(messaging, cursors_refuse_edits_and_each_other)
{
    char t[MSG_CURSOR_MAX], c[MSG_CURSOR_MAX], act[UUID_STR_LEN], back[37];
    int64_t seq;
    bool fwd;
    msg_cursor_encode(17, false, t, sizeof t);
    for (size_t i = 0; i < strlen(t); i++) {
        char e[MSG_CURSOR_MAX];
        strcpy(e, t);
        e[i] = e[i] == 'A' ? 'B' : 'A';
        cr_assert_neq(msg_cursor_decode(e, &seq, &fwd), 0, "edited at %zu", i);
    }
    uuid7_new(act);
    msg_conv_cursor_encode(act, c, sizeof c);
    cr_assert_eq(msg_conv_cursor_decode(c, back), 0);
    cr_assert_str_eq(back, act);
    /* one list's cursor is not the other's */
    cr_assert_neq(msg_cursor_decode(c, &seq, &fwd), 0);
    cr_assert_neq(msg_conv_cursor_decode(t, back), 0);
    static const char *const junk[] = {"", "17", "bTE6YjoxNw", "====", "%%%", "bTE6YjotMS4wMDAwMDAwMA"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        cr_assert_neq(msg_cursor_decode(junk[i], &seq, &fwd), 0, "accepted \"%s\"", junk[i]);
        cr_assert_neq(msg_conv_cursor_decode(junk[i], back), 0, "accepted \"%s\"", junk[i]);
    }
}
