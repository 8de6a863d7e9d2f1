/*
 * doc_check.c - libFuzzer driver for the doc kind's input checks
 * (src/store/doc_check.c): field paths, collection names and ids, which
 * decide what may be spliced into SQL text.
 *
 * The input, up to its first NUL, is the candidate. Checks, against
 * independent references: doc_path_valid agrees with the POSIX regex
 * ^[a-z0-9_]+(\.[a-z0-9_]+){0,3}$ and a 255-byte limit; doc_name_valid with
 * ^[a-z][a-z0-9_]{0,47}$; doc_id_valid with core's utf8_valid, 1..128 bytes
 * and no control characters. Whatever a path accepts contains no quote,
 * backslash, space or SQL punctuation.
 */
#include "core/json.h"
#include "store/doc.h"

#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static regex_t path_re, name_re;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (regcomp(&path_re, "^[a-z0-9_]+(\\.[a-z0-9_]+){0,3}$", REG_EXTENDED | REG_NOSUB) ||
        regcomp(&name_re, "^[a-z][a-z0-9_]{0,47}$", REG_EXTENDED | REG_NOSUB))
        abort();
    return 0;
}

static void fail(const char *what, const char *s)
{
    fprintf(stderr, "doc_check: %s disagrees on \"%s\"\n", what, s);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n = strlen(s);

    /* regexec runs in the C locale here: [a-z] is ASCII only */
    bool path_ref = n <= 255 && regexec(&path_re, s, 0, NULL, 0) == 0;
    if (doc_path_valid(s) != path_ref)
        fail("doc_path_valid", s);
    if (path_ref && strpbrk(s, "'\"\\ ;-()$[]{}/*\n\t"))
        fail("a valid path with SQL punctuation", s);

    bool name_ref = regexec(&name_re, s, 0, NULL, 0) == 0;
    if (doc_name_valid(s) != name_ref)
        fail("doc_name_valid", s);

    bool ctl = false;
    for (size_t i = 0; i < n; i++)
        ctl |= (unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f;
    bool id_ref = n >= 1 && n <= 128 && !ctl && utf8_valid(s, n);
    if (doc_id_valid(s) != id_ref)
        fail("doc_id_valid", s);
    free(s);
    return 0;
}
