/*
 * server.h - the HTTP server: libmicrohttpd with its internal epoll thread
 * pool, a router, per-request arenas, access log, metrics, tracing and a
 * graceful stop.
 *
 * Every response carries `traceparent` (the caller's trace continued, or a new
 * one) and `X-Request-Id`. Errors, including the server's own (404, 405, 413,
 * 431), use the JSON error shape of http.h.
 */
#ifndef PULSE_HTTP_SERVER_H
#define PULSE_HTTP_SERVER_H

#include "core/err.h"
#include "http/metrics.h"
#include "http/router.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct http_server http_server;

typedef struct http_server_opts {
    const char *host;       /* numeric IPv4/IPv6 address or "localhost" */
    int port;               /* 0 picks a free port: see http_server_port() */
    int threads;
    size_t body_limit;
    size_t header_limit;
    size_t connection_memory; /* MHD's pool per connection; 0: derived from header_limit */
    unsigned idle_timeout_s;
    unsigned connection_limit;
    bool access_log;
    int workers;            /* threads of the offload pool (http_offload) */
    int worker_queue;       /* offloaded requests waiting at most; beyond: 503 */
} http_server_opts;

/* Binds and starts serving. The router and metrics are borrowed and must
 * outlive the server. */
int http_server_start(router *r, metrics *m, const http_server_opts *o, http_server **out, pl_error *err);

int http_server_port(const http_server *s);

/* Graceful stop: stop accepting, wait up to timeout_ms for in-flight requests
 * to finish, then close every connection and free the server. Returns the
 * number of requests still in flight when it gave up (0 normally). NULL is a no-op. */
int http_server_stop(http_server *s, unsigned timeout_ms);

#endif
