/* http_ws.c - unit tests of the WebSocket hub's pure parts (src/http/ws.c):
 * the handshake's accept value and server frames encoded once for fan-out. */
#include "http/ws.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

Test(ws, accept_key_is_the_rfc_6455_example)
{
    char out[29];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out); /* RFC 6455 section 1.3 */
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out); /* checked against node:crypto */
    cr_assert_str_eq(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

/* The header for each payload length class: 7-bit, 16-bit and 64-bit. */
Test(ws, text_frames_have_unmasked_headers_for_every_length_class)
{
    static const size_t lens[] = {0, 1, 125, 126, 65535, 65536, 200000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        char *p = malloc(n + 1);
        memset(p, 'a' + (int)(i % 26), n);
        ws_frame *f = ws_frame_text(p, n, "tag");
        size_t len;
        const unsigned char *b = ws_frame_bytes(f, &len);
        size_t hl = n < 126 ? 2 : n <= 65535 ? 4 : 10;
        cr_assert_eq(len, hl + n, "length %zu: frame of %zu bytes", n, len);
        cr_assert_eq(b[0], 0x81, "FIN + text opcode");
        cr_assert_eq(b[1] & 0x80, 0, "server frames are not masked");
        if (hl == 2)
            cr_assert_eq(b[1], n);
        else if (hl == 4)
            cr_assert(b[1] == 126 && ((size_t)b[2] << 8 | b[3]) == n);
        else {
            cr_assert_eq(b[1], 127);
            size_t v = 0;
            for (int k = 0; k < 8; k++)
                v = v << 8 | b[2 + k];
            cr_assert_eq(v, n);
        }
        cr_assert(memcmp(b + hl, p, n) == 0, "the payload follows the header unchanged");
        cr_assert_str_eq(ws_frame_tag(f), "tag");
        ws_frame_unref(f);
        free(p);
    }
}

Test(ws, frames_are_shared_by_reference_and_tags_are_bounded)
{
    ws_frame *f = ws_frame_text("{}", 2, "0123456789012345678901234567890123456789-too-long");
    ws_frame_ref(f);
    ws_frame_unref(f); /* one reference left: still readable (ASan would object otherwise) */
    size_t len;
    cr_assert_eq(ws_frame_bytes(f, &len)[2], '{');
    cr_assert_eq(strlen(ws_frame_tag(f)), 39);
    ws_frame_unref(f);
    ws_frame_unref(NULL);
    ws_frame *u = ws_frame_text("x", 1, NULL);
    cr_assert_str_eq(ws_frame_tag(u), "");
    ws_frame_unref(u);
}
