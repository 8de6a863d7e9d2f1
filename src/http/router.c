/* router.c - a linear table of pre-split patterns; among the patterns that
 * match a path, the one with a literal at the first depth where they differ
 * wins. */
#include "http/router.h"

#include <ctype.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define MAX_SEGS 16

typedef struct {
    const http_route *route;
    void *ctx;
    int nsegs;
    unsigned literals;    /* bit (MAX_SEGS - 1 - i) set when segment i is literal */
    char *segs[MAX_SEGS]; /* the literal, or the capture's name ("id" for "{id}") */
    bool is_param[MAX_SEGS];
    char *copy;           /* owns the segment strings */
} entry;

struct router {
    entry *v;
    size_t n, cap;
};

router *router_create(void)
{
    router *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    return r;
}

void router_destroy(router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].copy);
    free(r->v);
    free(r);
}

/* Splits "/a/b/c" in place into segments; -1 for empty segments or too many. */
static int split(char *path, char **segs)
{
    if (path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0;
    int n = 0;
    for (char *p = path + 1;;) {
        if (n == MAX_SEGS)
            return -1;
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        if (*p == '\0')
            return -1;
        segs[n++] = p;
        if (!slash)
            return n;
        p = slash + 1;
    }
}

int router_add(router *r, const http_route *route, void *ctx)
{
    entry e = {.route = route, .ctx = ctx, .copy = strdup(route->pattern)};
    if (!e.copy)
        abort();
    e.nsegs = split(e.copy, e.segs);
    if (e.nsegs < 0)
        goto bad;
    int nparams = 0;
    for (int i = 0; i < e.nsegs; i++) {
        char *seg = e.segs[i];
        size_t l = strlen(seg);
        if (seg[0] == '{') {
            if (l < 3 || seg[l - 1] != '}' || ++nparams > HTTP_MAX_PARAMS)
                goto bad;
            seg[l - 1] = '\0';
            e.segs[i] = ++seg;
            e.is_param[i] = true;
            for (const char *c = seg; *c; c++) /* a name handlers can ask for */
                if (!isalnum((unsigned char)*c) && *c != '_')
                    goto bad;
            for (int k = 0; k < i; k++)
                if (e.is_param[k] && strcmp(e.segs[k], seg) == 0)
                    goto bad;
        } else {
            if (strpbrk(seg, "{}")) /* a typo'd capture such as "id}" */
                goto bad;
            e.literals |= 1u << (MAX_SEGS - 1 - i);
        }
    }
    /* Same method and same shape (param names aside) would match the same
     * paths, and only one of them could ever be reached. */
    for (size_t i = 0; i < r->n; i++) {
        const entry *o = &r->v[i];
        if (strcmp(o->route->method, route->method) != 0 || o->nsegs != e.nsegs || o->literals != e.literals)
            continue;
        bool same = true;
        for (int k = 0; k < e.nsegs && same; k++)
            same = e.is_param[k] || strcmp(o->segs[k], e.segs[k]) == 0;
        if (same) {
            free(e.copy);
            return PL_ECONFLICT;
        }
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 32;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v)
            abort();
    }
    r->v[r->n++] = e;
    return 0;
bad:
    free(e.copy);
    return PL_EINVAL;
}

static bool segs_match(const entry *e, int n, char **segs)
{
    if (e->nsegs != n)
        return false;
    for (int i = 0; i < n; i++)
        if (!e->is_param[i] && strcmp(e->segs[i], segs[i]) != 0)
            return false;
    return true;
}

static void append_allow(char *allow, size_t size, const char *method)
{
    if (strstr(allow, method)) /* methods are distinct words; substring is enough here */
        return;
    size_t l = strlen(allow);
    snprintf(allow + l, size - l, "%s%s", l ? ", " : "", method);
}

int router_match(const router *r, const char *method, char *path, route_match *m)
{
    char *segs[MAX_SEGS];
    int n = split(path, segs);
    m->route = NULL;
    m->allow[0] = '\0';
    if (n < 0)
        return PL_ENOTFOUND;
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
    const entry *best = NULL;
    bool path_known = false;
    for (size_t i = 0; i < r->n; i++) {
        const entry *e = &r->v[i];
        if (!segs_match(e, n, segs))
            continue;
        path_known = true;
        append_allow(m->allow, sizeof m->allow, e->route->method);
        if (strcmp(e->route->method, "GET") == 0)
            append_allow(m->allow, sizeof m->allow, "HEAD");
        /* Every candidate matches the path, so the literal segments they
         * share are equal: the larger mask has a literal where the other
         * has a capture, at the first depth where they differ. */
        if (strcmp(e->route->method, want) == 0 && (!best || e->literals > best->literals))
            best = e;
    }
    if (!best)
        return path_known ? PL_EMETHOD : PL_ENOTFOUND;
    m->route = best->route;
    m->ctx = best->ctx;
    m->index = (int)(best - r->v);
    m->nparams = 0;
    for (int i = 0; i < n; i++) {
        if (best->is_param[i]) {
            m->param_name[m->nparams] = best->segs[i];
            m->param_value[m->nparams++] = segs[i];
        }
    }
    return 0;
}

size_t router_count(const router *r) { return r->n; }
const http_route *router_route(const router *r, size_t i) { return i < r->n ? r->v[i].route : NULL; }
