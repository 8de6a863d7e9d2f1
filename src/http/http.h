/*
 * http.h - what a route handler sees: the request, the response it fills,
 * and the helpers to read JSON in and write JSON out.
 *
 * A handler runs on one of the server's worker threads, once per request,
 * after routing, body reading (bounded by server.body_limit) and, for routes
 * flagged HTTP_AUTH, authentication. Everything it allocates from req->arena
 * lives until the response has been sent.
 *
 * A handler returns 0 after filling `res`, or a negative PL_E* code: the
 * server then answers with the error shape
 *     {"error":{"code":"<api code>","message":"...","fields":{...}}}
 * using the status mapped in core/err.h, the message and fields set with
 * http_fail() (or the code's default message).
 */
#ifndef PULSE_HTTP_HTTP_H
#define PULSE_HTTP_HTTP_H

#include "core/arena.h"
#include "core/err.h"
#include "core/json.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_req http_req;
typedef struct http_res http_res;
typedef int (*http_handler)(http_req *req, http_res *res);

enum {
    HTTP_AUTH = 1u << 0,   /* requires a valid bearer token (401 otherwise) */
    HTTP_NOLOG = 1u << 1,  /* no access log line (health checks, metrics scrapes) */
};

/* A route: a method, a pattern whose {name} segments capture one path segment,
 * and the handler. `ctx` is handed to the handler as req->ctx (the service). */
typedef struct http_route {
    const char *method;
    const char *pattern;
    http_handler handler;
    unsigned flags;
    const char *summary; /* one line for the OpenAPI document */
} http_route;

/* The authenticated caller of an HTTP_AUTH route. */
typedef struct principal {
    char user_id[40];
    char role[16];       /* "student", "teacher" or "admin" */
    char session_id[40];
} principal;

#define HTTP_MAX_PARAMS 8

struct http_req {
    const char *method;
    const char *path;
    const char *route;     /* the matched pattern, or "unmatched" */
    void *ctx;             /* the owning service's context */
    arena *arena;
    const char *body;      /* NUL-terminated copy of the body (may contain NULs) */
    size_t body_len;
    const char *client_ip;
    char request_id[40];
    char trace_id[33];     /* W3C trace-id, 32 hex */
    char span_id[17];      /* this server span's id, 16 hex */
    unsigned char trace_flags;
    char traceparent[56];  /* "00-<trace_id>-<span_id>-<flags>": this request's context */
    const principal *principal; /* set for HTTP_AUTH routes */
    const char *bearer;         /* the raw bearer token, when one was sent */
    int nparams;
    const char *param_name[HTTP_MAX_PARAMS];
    const char *param_value[HTTP_MAX_PARAMS];
    /* set by http_fail() */
    const char *error_message;
    json_t *error_fields;
    void *conn;            /* the server's connection handle (opaque) */
};

typedef struct http_header {
    const char *name, *value;
    struct http_header *next;
} http_header;

struct http_res {
    int status;
    const char *content_type;
    char *body;        /* owned: malloc'd, freed by the server */
    size_t body_len;
    http_header *headers; /* arena-allocated */
    /* Set by ws_upgrade (http/ws.h): the response is a 101 and, once it is
     * sent, the socket is handed to upgrade(arg, fd, bytes read past the
     * headers, MHD's upgrade handle); fd < 0 when it never was. */
    void (*upgrade)(void *arg, int fd, const char *extra, size_t extra_len, void *urh);
    void *upgrade_arg;
};

/* Path parameter by name, or NULL. */
const char *http_param(const http_req *req, const char *name);
/* Request header (case-insensitive) or query argument, or NULL. Borrowed. */
const char *http_header_get(const http_req *req, const char *name);
const char *http_query(const http_req *req, const char *name);

/* Parses the body as a JSON object. On failure records the message on req
 * and returns PL_EBADJSON (or PL_EMEDIATYPE when Content-Type is not JSON).
 * *out is a new reference the caller must decref. */
int http_json_body(http_req *req, json_t **out);

/* The start of every handler that takes a JSON body: http_json_body, then a
 * validator over it (core/json.h) that allows only the `allowed` members.
 * 0, or the http_json_body error (already recorded on req; *body NULL). */
int http_json_fields(http_req *req, jv *v, json_t **body, const char *const *allowed);
/* Answers 400 validation_failed with the validator's field errors, frees v
 * and body (a reference the caller owned), and returns the code. */
int http_fail_fields(http_req *req, jv *v, json_t *body);

/* Records an error for the server to render and returns code.
 * `fields` is stolen (may be NULL); `fmt` may be NULL for the default message. */
int http_fail(http_req *req, int code, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fills res with status and a JSON body; `body` is stolen (NULL: no body). */
void http_json(http_res *res, int status, json_t *body);
void http_text(http_res *res, int status, const char *content_type, const char *text, size_t len);
void http_header_add(http_req *req, http_res *res, const char *name, const char *value);

/* Runs fn(req, res, arg) on the server's worker pool instead of this HTTP
 * thread, for work that blocks for long (password hashing): the connection
 * is suspended meanwhile and the HTTP thread serves other connections. A
 * handler returns what this returns; fn's return value is then treated as
 * the handler's. The log context (request id, trace) is carried over. When
 * the pool's queue is full, returns PL_EUNAVAILABLE with Retry-After: 1
 * without running fn. `arg` must live until fn returns (use req->arena). */
int http_offload(http_req *req, http_res *res, int (*fn)(http_req *req, http_res *res, void *arg), void *arg);

/* Client address key for rate limits ("127.0.0.1"). */
const char *http_client_ip(const http_req *req);

#endif
