/* feed.c - cursor codec and merge (feed.h). No I/O: every branch is unit-tested. */
#include "services/timeline/feed.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cursor's plain form, before base64url: "1:<score>:<id>". The version digit lets the format change
 * later without old tokens being misread. */
#define CURSOR_VERSION "1:"

bool tl_id_valid(const char *id)
{
    /* a loop over ranges: strspn with a 64-byte set was a visible share of a warm read's CPU */
    if (!id)
        return false;
    size_t n = 0;
    for (unsigned char c; (c = (unsigned char)id[n]); n++) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (c >= 'A' && c <= 'Z') || c == '_';
        if (!ok || n == TL_ID_MAX)
            return false;
    }
    return n > 0;
}

int tl_cursor_encode(int64_t score, const char *id, char out[TL_CURSOR_MAX])
{
    if (score < 0 || !tl_id_valid(id))
        return -1;
    char plain[96];
    int n = snprintf(plain, sizeof plain, CURSOR_VERSION "%lld:%s", (long long)score, id);
    if (n < 0 || (size_t)n >= sizeof plain)
        return -1;
    sodium_bin2base64(out, TL_CURSOR_MAX, (const unsigned char *)plain, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int tl_cursor_decode(const char *token, tl_cursor *c)
{
    if (!token || !*token || strlen(token) >= TL_CURSOR_MAX)
        return -1;
    unsigned char plain[96];
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(plain, sizeof plain - 1, token, strlen(token), NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        *end)
        return -1;
    plain[n] = '\0';
    if (memchr(plain, '\0', n) || strncmp((const char *)plain, CURSOR_VERSION, 2) != 0)
        return -1;
    const char *p = (const char *)plain + 2;
    /* the score: 1 to 16 decimal digits, no sign, no leading zero unless it is 0 */
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 16 || (digits > 1 && p[0] == '0') || p[digits] != ':')
        return -1;
    int64_t score = 0;
    for (size_t i = 0; i < digits; i++)
        score = score * 10 + (p[i] - '0');
    const char *id = p + digits + 1;
    if (!tl_id_valid(id))
        return -1;
    c->score = score;
    snprintf(c->id, sizeof c->id, "%s", id);
    return 0;
}

int tl_entry_cmp(const tl_entry *a, const tl_entry *b)
{
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    int s = strcmp(a->id, b->id);
    return s > 0 ? -1 : s < 0 ? 1 : 0;
}

bool tl_after(const tl_entry *e, const tl_cursor *c)
{
    if (!c)
        return true;
    tl_entry at = {.id = c->id, .score = (double)c->score};
    return tl_entry_cmp(e, &at) > 0;
}

static int cmp_qsort(const void *a, const void *b) { return tl_entry_cmp(a, b); }

size_t tl_merge(const tl_entry *const *srcs, const size_t *ns, size_t nsrc, const tl_cursor *after, tl_entry *out,
                size_t max)
{
    size_t total = 0;
    for (size_t s = 0; s < nsrc; s++)
        total += ns[s];
    if (total == 0 || max == 0)
        return 0;
    tl_entry *all = malloc(total * sizeof *all);
    if (!all)
        abort();
    size_t k = 0;
    for (size_t s = 0; s < nsrc; s++)
        for (size_t i = 0; i < ns[s]; i++)
            if (srcs[s][i].id && tl_after(&srcs[s][i], after))
                all[k++] = srcs[s][i];
    qsort(all, k, sizeof *all, cmp_qsort);
    size_t n = 0;
    for (size_t i = 0; i < k && n < max; i++) {
        /* the same post from two sources (a celebrity's post also fanned out before it crossed
         * the threshold, or backfilled on follow) is shown once; its score is the same in both,
         * so the copies are neighbours, but an id is checked against the whole page to be sure */
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(out[j].id, all[i].id) == 0;
        if (!dup)
            out[n++] = all[i];
    }
    free(all);
    return n;
}
