/* router.c - a linear table of pre-split patterns; the most literal match wins. */
#include "http/router.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define MAX_SEGS 16

typedef struct {
    const http_route *route;
    void *ctx;
    int nsegs, nliterals;
    char *segs[MAX_SEGS]; /* "{id}" is stored as NULL name + param name below */
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
        size_t l = strlen(e.segs[i]);
        if (e.segs[i][0] == '{') {
            if (l < 3 || e.segs[i][l - 1] != '}' || ++nparams > HTTP_MAX_PARAMS)
                goto bad;
            e.segs[i][l - 1] = '\0';
            e.segs[i]++;
            e.is_param[i] = true;
        } else {
            e.nliterals++;
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].route->method, route->method) == 0 &&
            strcmp(r->v[i].route->pattern, route->pattern) == 0) {
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
        if (strcmp(e->route->method, want) == 0 && (!best || e->nliterals > best->nliterals))
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
