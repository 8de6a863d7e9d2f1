/*
 * serve.c - `pulse serve`, `pulse migrate`, `pulse demo`, and the platform's
 * own routes: /healthz, /readyz, /metrics and /api/v1/openapi.json.
 */
#include "cli/cli.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "http/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct platform {
    host *host;
    router *router;
    metrics *metrics;
    int64_t started_ms;
} platform;

static int healthz(http_req *req, http_res *res)
{
    (void)req;
    http_json(res, 200, json_pack("{s:s}", "status", "ok"));
    return 0;
}

static int readyz(http_req *req, http_res *res)
{
    platform *p = req->ctx;
    json_t *report;
    int rc = host_ready(p->host, &report);
    http_json(res, rc ? 503 : 200, json_pack("{s:s, s:o}", "status", rc ? "unavailable" : "ready", "checks", report));
    return 0;
}

static int metrics_get(http_req *req, http_res *res)
{
    platform *p = req->ctx;
    char *text;
    size_t len;
    metrics_render(p->metrics, &text, &len);
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4";
    free(res->body);
    res->body = text;
    res->body_len = len;
    return 0;
}

/* OpenAPI 3.1 built from the routing table: every path, method and summary. */
static int openapi(http_req *req, http_res *res)
{
    platform *p = req->ctx;
    json_t *paths = json_object();
    for (size_t i = 0; i < router_count(p->router); i++) {
        const http_route *r = router_route(p->router, i);
        json_t *item = json_object_get(paths, r->pattern);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, r->pattern, item);
        }
        char method[16];
        size_t k = 0;
        for (; r->method[k] && k < sizeof method - 1; k++)
            method[k] = (char)(r->method[k] | 0x20);
        method[k] = '\0';
        json_t *op = json_pack("{s:s, s:{s:{s:s}}}", "summary", r->summary ? r->summary : "", "responses", "default",
                               "description", "JSON; errors as {\"error\":{\"code\",\"message\",\"fields\"}}");
        if (r->flags & HTTP_AUTH)
            json_object_set_new(op, "security", json_pack("[{s:[]}]", "bearer"));
        json_object_set_new(item, method, op);
    }
    http_json(res, 200,
              json_pack("{s:s, s:{s:s, s:s}, s:o, s:{s:{s:{s:s, s:s}}}}", "openapi", "3.1.0", "info", "title",
                        "Pulse — PulseLearn Campus Hub API", "version", "1", "paths", paths, "components",
                        "securitySchemes", "bearer", "type", "http", "scheme", "bearer"));
    (void)req;
    return 0;
}

static const http_route platform_routes[] = {
    {"GET", "/healthz", healthz, HTTP_NOLOG, "liveness"},
    {"GET", "/readyz", readyz, HTTP_NOLOG, "readiness: every hosted store reachable"},
    {"GET", "/metrics", metrics_get, HTTP_NOLOG, "Prometheus metrics"},
    {"GET", "/api/v1/openapi.json", openapi, 0, "this document"},
};

static void print_demo_line(const char *line)
{
    fprintf(stdout, "%s\n", line);
    fflush(stdout);
}

static int open_host(const config *c, host **h)
{
    pl_error err = {0};
    int rc = host_open(c, config_str(c, "server", "services"), h, &err);
    if (rc)
        log_with(LOG_ERROR, "cannot open stores", LF_STR("error", err_name(rc)), LF_STR("detail", err.msg));
    return rc;
}

int cli_migrate(const config *c)
{
    host *h;
    if (open_host(c, &h)) /* opening migrates */
        return 1;
    log_with(LOG_INFO, "migrations applied", LF_STR("services", host_services(h)));
    host_close(h);
    return 0;
}

int cli_demo(const config *c)
{
    host *h;
    if (open_host(c, &h))
        return 1;
    router *r = router_create();
    pl_error err = {0};
    int rc = host_start(h, r, true, &err);
    if (!rc)
        rc = host_demo(h, print_demo_line, &err);
    if (rc)
        log_with(LOG_ERROR, "demo failed", LF_STR("detail", err.msg));
    host_close(h);
    router_destroy(r);
    return rc ? 1 : 0;
}

int cli_serve(const config *c)
{
    int64_t t0 = time_mono_ns();
    /* Signals are taken by this thread alone, with sigwait, after the servers start. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    platform p = {.started_ms = time_now_ms()};
    pl_error err = {0};
    int rc = open_host(c, &p.host);
    if (rc)
        return 1;
    p.router = router_create();
    for (size_t i = 0; i < sizeof platform_routes / sizeof platform_routes[0]; i++)
        router_add(p.router, &platform_routes[i], &p);
    if ((rc = host_start(p.host, p.router, true, &err))) {
        log_with(LOG_ERROR, "cannot start services", LF_STR("detail", err.msg));
        goto out;
    }
    if (config_bool(c, "server", "demo") && (rc = host_demo(p.host, print_demo_line, &err))) {
        log_with(LOG_ERROR, "demo data failed", LF_STR("detail", err.msg));
        goto out;
    }
    p.metrics = metrics_create(router_count(p.router));
    for (size_t i = 0; i < router_count(p.router); i++)
        metrics_set_route(p.metrics, i, router_route(p.router, i)->method, router_route(p.router, i)->pattern);
    host_metrics(p.host, p.metrics);

    char listen_host[256];
    int port;
    config_parse_listen(config_str(c, "server", "listen"), listen_host, sizeof listen_host, &port);
    http_server_opts o = {
        .host = listen_host,
        .port = port,
        .threads = (int)config_int(c, "server", "threads"),
        .body_limit = (size_t)config_int(c, "server", "body_limit"),
        .header_limit = (size_t)config_int(c, "server", "header_limit"),
        .connection_memory = (size_t)config_int(c, "server", "connection_memory"),
        .idle_timeout_s = (unsigned)((config_int(c, "server", "idle_timeout") + 999) / 1000),
        .connection_limit = (unsigned)config_int(c, "server", "connection_limit"),
        .access_log = config_bool(c, "log", "access"),
        .workers = (int)config_int(c, "server", "workers"),
        .worker_queue = (int)config_int(c, "server", "worker_queue"),
    };
    http_server *srv;
    if ((rc = http_server_start(p.router, p.metrics, &o, &srv, &err))) {
        log_with(LOG_ERROR, "cannot serve", LF_STR("detail", err.msg));
        goto out;
    }
    log_with(LOG_INFO, "listening", LF_STR("host", listen_host), LF_INT("port", http_server_port(srv)),
             LF_STR("services", host_services(p.host)), LF_STR("data", config_str(c, "server", "data")),
             LF_DBL("startup_ms", (double)(time_mono_ns() - t0) / 1e6));

    int sig = 0;
    sigwait(&stop, &sig);
    log_with(LOG_INFO, "stopping", LF_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    int left = http_server_stop(srv, (unsigned)config_int(c, "server", "shutdown_timeout"));
    if (left)
        log_with(LOG_WARN, "stopped with requests still in flight", LF_INT("requests", left));
    rc = 0;
out:
    host_close(p.host);
    metrics_destroy(p.metrics);
    router_destroy(p.router);
    if (!rc)
        log_with(LOG_INFO, "stopped");
    return rc ? 1 : 0;
}
