/*
 * router.h - method + path routing with {param} segments.
 *
 * Patterns are literal segments and {name} captures, e.g.
 * "/api/v1/users/{id}/role". A literal segment wins over a capture at the
 * same depth. Matching allocates nothing; captured values point into a copy
 * of the path made in the request arena.
 */
#ifndef PULSE_HTTP_ROUTER_H
#define PULSE_HTTP_ROUTER_H

#include "http/http.h"

typedef struct router router;

typedef struct route_match {
    const http_route *route;
    void *ctx;
    int index;               /* dense route index, for metrics */
    int nparams;
    const char *param_name[HTTP_MAX_PARAMS];
    const char *param_value[HTTP_MAX_PARAMS];
    char allow[128];         /* on PL_EMETHOD: the methods the path accepts */
} route_match;

router *router_create(void);
void    router_destroy(router *r); /* NULL is a no-op */

/* Adds a route (borrowed: it must outlive the router). PL_EINVAL for a bad
 * pattern, PL_ECONFLICT when method+pattern is already taken. */
int router_add(router *r, const http_route *route, void *ctx);

/* 0 and *m filled; PL_ENOTFOUND when no pattern matches the path;
 * PL_EMETHOD when patterns match but not the method (m->allow lists them).
 * HEAD matches GET routes. `path` is modified in place (split on '/'). */
int router_match(const router *r, const char *method, char *path, route_match *m);

size_t router_count(const router *r);
const http_route *router_route(const router *r, size_t i);

#endif
