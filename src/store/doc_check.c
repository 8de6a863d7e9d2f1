/*
 * doc_check.c - the doc kind's input checks (doc.h: doc_name_valid,
 * doc_path_valid, doc_id_valid). Apart from doc.c because they depend on
 * nothing, so the fuzz target (tests/fuzz/doc_check.c) links them alone.
 * Field paths end up in SQL text as literals (an expression index only
 * matches a literal path), so these checks are what keeps SQL out of them.
 */
#include "store/doc.h"

#include <stdint.h>
#include <string.h>

#define NAME_MAX_LEN 48
#define PATH_MAX_DEPTH 4
#define PATH_MAX_LEN 255
#define ID_MAX_LEN 128

bool doc_name_valid(const char *name)
{
    if (!name || !(*name >= 'a' && *name <= 'z'))
        return false;
    size_t n = strlen(name);
    return n <= NAME_MAX_LEN && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

bool doc_path_valid(const char *path)
{
    if (!path || !*path || strlen(path) > PATH_MAX_LEN)
        return false;
    int depth = 1;
    size_t seg = 0;
    for (const char *s = path; *s; s++) {
        if (*s == '.') {
            if (seg == 0 || ++depth > PATH_MAX_DEPTH)
                return false;
            seg = 0;
        } else if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_') {
            seg++;
        } else {
            return false;
        }
    }
    return seg > 0;
}

/* 1..128 bytes of UTF-8 without control characters (ids end up in URLs and logs). */
bool doc_id_valid(const char *id)
{
    if (!id || !*id)
        return false;
    const unsigned char *s = (const unsigned char *)id;
    size_t n = 0;
    while (s[n]) {
        unsigned char c = s[n];
        int extra;
        uint32_t cp;
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            n++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, cp = c & 0x07;
        } else {
            return false;
        }
        for (int k = 1; k <= extra; k++) {
            if ((s[n + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[n + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        n += (size_t)extra + 1;
    }
    return n <= ID_MAX_LEN;
}
