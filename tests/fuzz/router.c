/*
 * router.c - libFuzzer driver for routing (src/http/router.c).
 *
 * First byte < 0x80: match the rest of the input, as "METHOD path", against
 * a fixed table like the server's. Otherwise: add the rest as a pattern to
 * a fresh router and, when accepted, route the pattern itself as a path,
 * which must find it.
 *
 * Checks: no crash, leak or undefined behaviour; every result is 0,
 * PL_ENOTFOUND or PL_EMETHOD with the fields router.h promises.
 */
#include "http/router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int h(http_req *req, http_res *res)
{
    (void)req;
    (void)res;
    return 0;
}

static const http_route routes[] = {
    {"GET", "/", h, 0, NULL},
    {"GET", "/healthz", h, 0, NULL},
    {"GET", "/metrics", h, 0, NULL},
    {"POST", "/api/v1/auth/register", h, 0, NULL},
    {"POST", "/api/v1/auth/login", h, 0, NULL},
    {"GET", "/api/v1/me", h, 0, NULL},
    {"PATCH", "/api/v1/me", h, 0, NULL},
    {"GET", "/api/v1/users/{id}", h, 0, NULL},
    {"GET", "/api/v1/users/me", h, 0, NULL},
    {"PATCH", "/api/v1/users/{id}/role", h, 0, NULL},
    {"GET", "/api/v1/courses/{course}/lessons/{lesson}", h, 0, NULL},
    {"DELETE", "/api/v1/courses/{course}/lessons/{lesson}", h, 0, NULL},
    {"GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", h, 0, NULL},
};

static router *table;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    table = router_create();
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (router_add(table, &routes[i], NULL))
            abort();
    return 0;
}

static void check(int rc, const route_match *m, const char *method)
{
    if (rc == 0) {
        if (!m->route || m->nparams < 0 || m->nparams > HTTP_MAX_PARAMS)
            abort();
        if (strcmp(m->route->method, method) != 0 && !(strcmp(method, "HEAD") == 0 &&
                                                       strcmp(m->route->method, "GET") == 0))
            abort();
        for (int i = 0; i < m->nparams; i++)
            if (!m->param_value[i][0] || strchr(m->param_value[i], '/') || !m->param_name[i][0])
                abort();
    } else if (rc == PL_EMETHOD) {
        if (m->route || !m->allow[0])
            abort();
    } else if (rc == PL_ENOTFOUND) {
        if (m->route || m->allow[0])
            abort();
    } else {
        abort();
    }
}

static void match_table(const char *in, size_t n)
{
    char *buf = malloc(n + 1);
    memcpy(buf, in, n);
    buf[n] = '\0';
    char *sp = strchr(buf, ' ');
    const char *method = "GET";
    char *path = buf;
    if (sp) {
        *sp = '\0';
        method = buf;
        path = sp + 1;
    }
    route_match m;
    check(router_match(table, method, path, &m), &m, method);
    free(buf);
}

static void add_pattern(const char *in, size_t n)
{
    char *pattern = malloc(n + 1);
    memcpy(pattern, in, n);
    pattern[n] = '\0';
    router *r = router_create();
    http_route rt = {"GET", pattern, h, 0, NULL};
    int rc = router_add(r, &rt, NULL);
    if (rc != 0 && rc != PL_EINVAL)
        abort();
    if (rc == 0) {
        if (router_add(r, &rt, NULL) != PL_ECONFLICT)
            abort();
        char *path = strdup(pattern);
        route_match m;
        if (router_match(r, "HEAD", path, &m) != 0 || m.route != &rt)
            abort();
        free(path);
    }
    router_destroy(r);
    free(pattern);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(in, 0, n);
    if (nul)
        n = (size_t)(nul - in);
    if (data[0] < 0x80)
        match_table(in, n);
    else
        add_pattern(in, n);
    return 0;
}
