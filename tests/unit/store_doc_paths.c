/* store_doc_paths.c - unit tests of the doc kind's input checks (src/store/doc.c):
 * field paths, collection names and ids, before anything reaches SQL. */
#include "store/doc.h"

#include <criterion/criterion.h>
#include <string.h>

Test(doc_paths, valid)
{
    const char *ok[] = {"a", "user_id", "meta.kind", "a.b.c.d", "0", "a1.2b.c_3", "_", "x.y_z", NULL};
    for (int i = 0; ok[i]; i++)
        cr_assert(doc_path_valid(ok[i]), "%s", ok[i]);
    char longest[256];
    memset(longest, 'a', 255);
    longest[255] = '\0';
    cr_assert(doc_path_valid(longest));
}

Test(doc_paths, invalid)
{
    const char *bad[] = {"", ".", "a.", ".a", "a..b", "A", "userId", "a-b", "a b", "a.b.c.d.e", "$.a", "a[0]",
                         "a'", "a\"", "a;b", "a/*", "a\\b", "\xc3\xa9", "a\n", "a.b.", "a.B", "{a,b}", "a->b", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(doc_path_valid(bad[i]), "%s", bad[i]);
    cr_assert_not(doc_path_valid(NULL));
    char toolong[257];
    memset(toolong, 'a', 256);
    toolong[256] = '\0';
    cr_assert_not(doc_path_valid(toolong));
}

Test(doc_paths, collection_names)
{
    cr_assert(doc_name_valid("posts"));
    cr_assert(doc_name_valid("a"));
    cr_assert(doc_name_valid("feed_items_2"));
    char max[49];
    memset(max, 'c', 48);
    max[48] = '\0';
    cr_assert(doc_name_valid(max));
    const char *bad[] = {"", "_a", "1a", "Posts", "a-b", "a.b", "a b", "a;", "\xc3\xa9", NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(doc_name_valid(bad[i]), "%s", bad[i]);
    cr_assert_not(doc_name_valid(NULL));
    char over[50];
    memset(over, 'c', 49);
    over[49] = '\0';
    cr_assert_not(doc_name_valid(over));
}

Test(doc_paths, ids)
{
    const char *ok[] = {"a", "0193a7c2-5b6e-7d1f-9a4b-1c2d3e4f5a6b", "user:42", "\xc3\xa9t\xc3\xa9",
                        "\xf0\x9f\x98\x80", "with space", "quote'\"", NULL};
    for (int i = 0; ok[i]; i++)
        cr_assert(doc_id_valid(ok[i]), "%s", ok[i]);
    const char *bad[] = {"", "a\nb", "\t", "\x7f", "\xff", "\xc3", "\xc0\x80" /* overlong NUL */,
                         "\xe0\x80\xaf" /* overlong */, "\xed\xa0\x80" /* surrogate */, "\xf4\x90\x80\x80" /* > U+10FFFF */,
                         NULL};
    for (int i = 0; bad[i]; i++)
        cr_assert_not(doc_id_valid(bad[i]), "bad id %d", i);
    cr_assert_not(doc_id_valid(NULL));
    char id[130];
    memset(id, 'i', 129);
    id[129] = '\0';
    cr_assert_not(doc_id_valid(id));
    id[128] = '\0';
    cr_assert(doc_id_valid(id));
}
