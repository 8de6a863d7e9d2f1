/* http_router.c - unit tests of method + path routing (src/http/router.c). */
#include "http/router.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static int h(http_req *req, http_res *res)
{
    (void)req;
    (void)res;
    return 0;
}

static const http_route routes[] = {
    {"GET", "/", h, 0, "root"},
    {"GET", "/healthz", h, 0, "health"},
    {"POST", "/api/v1/auth/register", h, 0, "register"},
    {"GET", "/api/v1/users/{id}", h, 0, "user"},
    {"GET", "/api/v1/users/me", h, 0, "literal beats param"},
    {"PATCH", "/api/v1/users/{id}/role", h, 0, "role"},
    {"DELETE", "/api/v1/users/{id}", h, 0, "delete"},
    {"GET", "/api/v1/courses/{course}/lessons/{lesson}", h, 0, "two params"},
    {"PUT", "/api/v1/me", h, 0, "put me"},
    {"PATCH", "/api/v1/me", h, 0, "patch me"},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static router *make(void)
{
    router *r = router_create();
    for (size_t i = 0; i < NROUTES; i++)
        cr_assert_eq(router_add(r, &routes[i], (void *)&routes[i]), 0, "adding %s %s", routes[i].method,
                     routes[i].pattern);
    cr_assert_eq(router_count(r), NROUTES);
    return r;
}

/* Matches a copy of path (router_match splits it in place). */
static int match(const router *r, const char *method, const char *path, route_match *m, char *buf, size_t size)
{
    snprintf(buf, size, "%s", path);
    memset(m, 0x5a, sizeof *m);
    return router_match(r, method, buf, m);
}

static const char *param(const route_match *m, const char *name)
{
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->param_name[i], name) == 0)
            return m->param_value[i];
    return NULL;
}

Test(router, literal_routes)
{
    router *r = make();
    route_match m;
    char buf[256];
    cr_assert_eq(match(r, "GET", "/healthz", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "health");
    cr_assert_eq(m.ctx, &routes[1]);
    cr_assert_eq(m.nparams, 0);
    cr_assert_eq(m.index, 1, "index is the dense route number");
    cr_assert_eq(router_route(r, (size_t)m.index), m.route);
    cr_assert_eq(match(r, "GET", "/", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "root");
    cr_assert_eq(match(r, "POST", "/api/v1/auth/register", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "register");
    router_destroy(r);
}

Test(router, params_are_captured)
{
    router *r = make();
    route_match m;
    char buf[256];
    cr_assert_eq(match(r, "GET", "/api/v1/users/0190f2a4-7b1c", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "user");
    cr_assert_eq(m.nparams, 1);
    cr_assert_str_eq(param(&m, "id"), "0190f2a4-7b1c");

    cr_assert_eq(match(r, "GET", "/api/v1/courses/c1/lessons/l-22", &m, buf, sizeof buf), 0);
    cr_assert_eq(m.nparams, 2);
    cr_assert_str_eq(m.param_name[0], "course");
    cr_assert_str_eq(m.param_value[0], "c1");
    cr_assert_str_eq(m.param_name[1], "lesson");
    cr_assert_str_eq(m.param_value[1], "l-22");

    cr_assert_eq(match(r, "PATCH", "/api/v1/users/42/role", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "role");
    cr_assert_str_eq(param(&m, "id"), "42");
    router_destroy(r);
}

Test(router, literal_beats_param_whatever_the_order)
{
    router *r = make(); /* the param route was added before the literal one */
    route_match m;
    char buf[256];
    cr_assert_eq(match(r, "GET", "/api/v1/users/me", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "literal beats param");
    cr_assert_eq(m.nparams, 0);
    router_destroy(r);

    static const http_route lit_first[] = {
        {"GET", "/x/static", h, 0, "literal"},
        {"GET", "/x/{p}", h, 0, "param"},
    };
    r = router_create();
    cr_assert_eq(router_add(r, &lit_first[0], NULL), 0);
    cr_assert_eq(router_add(r, &lit_first[1], NULL), 0);
    cr_assert_eq(match(r, "GET", "/x/static", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "literal");
    cr_assert_eq(match(r, "GET", "/x/dynamic", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "param");
    router_destroy(r);
}

Test(router, literal_wins_at_the_first_depth_where_patterns_differ)
{
    /* both have two literals; at depth 2 only the second has one */
    static const http_route rs[] = {
        {"GET", "/a/{x}/c", h, 0, "param at depth 2"},
        {"GET", "/a/b/{y}", h, 0, "literal at depth 2"},
        {"GET", "/{p}/b/c", h, 0, "param at depth 1"},
    };
    router *r = router_create();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(router_add(r, &rs[i], NULL), 0);
    route_match m;
    char buf[64];
    cr_assert_eq(match(r, "GET", "/a/b/c", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "literal at depth 2");
    cr_assert_str_eq(param(&m, "y"), "c");
    cr_assert_eq(match(r, "GET", "/a/z/c", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "param at depth 2");
    cr_assert_eq(match(r, "GET", "/q/b/c", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "param at depth 1");
    router_destroy(r);
}

Test(router, unknown_paths_are_404)
{
    router *r = make();
    route_match m;
    char buf[256];
    static const char *const paths[] = {
        "/nope", "/api/v1/users", "/api/v1/users/1/role/extra", "/api/v1/users/", "/healthz/", "//healthz",
        "/api//v1/me", "", "healthz", "/api/v1/users//role", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        cr_assert_eq(match(r, "GET", paths[i], &m, buf, sizeof buf), PL_ENOTFOUND, "\"%s\" matched", paths[i]);
        cr_assert_null(m.route);
        cr_assert_str_eq(m.allow, "");
    }
    router_destroy(r);
}

Test(router, wrong_method_is_405_with_allow)
{
    router *r = make();
    route_match m;
    char buf[256];
    cr_assert_eq(match(r, "POST", "/healthz", &m, buf, sizeof buf), PL_EMETHOD);
    cr_assert_null(m.route);
    cr_assert_str_eq(m.allow, "GET, HEAD");

    cr_assert_eq(match(r, "GET", "/api/v1/me", &m, buf, sizeof buf), PL_EMETHOD);
    cr_assert_str_eq(m.allow, "PUT, PATCH");

    cr_assert_eq(match(r, "POST", "/api/v1/users/7", &m, buf, sizeof buf), PL_EMETHOD);
    cr_assert_str_eq(m.allow, "GET, HEAD, DELETE");

    cr_assert_eq(match(r, "get", "/healthz", &m, buf, sizeof buf), PL_EMETHOD, "methods are case-sensitive");
    router_destroy(r);
}

Test(router, head_matches_get)
{
    router *r = make();
    route_match m;
    char buf[256];
    cr_assert_eq(match(r, "HEAD", "/api/v1/users/9", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->method, "GET");
    cr_assert_str_eq(param(&m, "id"), "9");
    cr_assert_eq(match(r, "HEAD", "/api/v1/me", &m, buf, sizeof buf), PL_EMETHOD, "no GET, so no HEAD");
    router_destroy(r);
}

Test(router, duplicate_routes_conflict)
{
    router *r = make();
    static const http_route dup[] = {
        {"GET", "/healthz", h, 0, "same literal"},
        {"GET", "/api/v1/users/{id}", h, 0, "same pattern"},
        {"GET", "/api/v1/users/{uid}", h, 0, "same shape, other param name"},
        {"PATCH", "/api/v1/users/{user}/role", h, 0, "same shape, other param name"},
    };
    for (size_t i = 0; i < sizeof dup / sizeof dup[0]; i++)
        cr_assert_eq(router_add(r, &dup[i], NULL), PL_ECONFLICT, "%s %s", dup[i].method, dup[i].pattern);
    cr_assert_eq(router_count(r), NROUTES, "a rejected route is not added");
    static const http_route fine[] = {
        {"POST", "/healthz", h, 0, "other method"},
        {"GET", "/api/v1/users/{id}/role", h, 0, "other depth"},
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++)
        cr_assert_eq(router_add(r, &fine[i], NULL), 0, "%s %s", fine[i].method, fine[i].pattern);
    router_destroy(r);
}

Test(router, bad_patterns_are_rejected)
{
    static const char *const bad[] = {
        "", "healthz", "/a//b", "/a/", "//", "/{}", "/{id", "/id}", "/a/{x}/{x}", "/{a}{b}", "/{a b}",
        "/a/{x}/b/{y}/c/{z}/d/{w}/e/{v}/f/{u}/g/{t}/h/{s}/{r}", /* more params than HTTP_MAX_PARAMS */
        "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17",          /* more segments than the router keeps */
    };
    router *r = router_create();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_route rt = {"GET", bad[i], h, 0, NULL};
        cr_assert_eq(router_add(r, &rt, NULL), PL_EINVAL, "pattern \"%s\" accepted", bad[i]);
    }
    cr_assert_eq(router_count(r), 0);
    cr_assert_null(router_route(r, 0));
    router_destroy(r);
    router_destroy(NULL);
}

Test(router, max_params_and_segments)
{
    static const http_route ok[] = {
        {"GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", h, 0, "eight params"},
        {"GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", h, 0, "sixteen segments"},
    };
    router *r = router_create();
    cr_assert_eq(router_add(r, &ok[0], NULL), 0);
    cr_assert_eq(router_add(r, &ok[1], NULL), 0);
    route_match m;
    char buf[128];
    cr_assert_eq(match(r, "GET", "/1/2/3/4/5/6/7/8", &m, buf, sizeof buf), 0);
    cr_assert_eq(m.nparams, 8);
    cr_assert_str_eq(param(&m, "h"), "8");
    cr_assert_eq(match(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", &m, buf, sizeof buf), 0);
    cr_assert_str_eq(m.route->summary, "sixteen segments");
    router_destroy(r);
}

Test(router, empty_router)
{
    router *r = router_create();
    route_match m;
    char buf[16];
    cr_assert_eq(match(r, "GET", "/", &m, buf, sizeof buf), PL_ENOTFOUND);
    cr_assert_eq(router_count(r), 0);
    router_destroy(r);
}
