/*
 * err.h - the one table of Pulse error codes.
 *
 * Functions return int: 0 on success or a negative PL_E* code from the table
 * below. Each code carries a stable name, a default human message, the HTTP
 * status it maps to at the API edge and the API error code string that
 * clients see in {"error":{"code": ...}}. Detail beyond the code travels in
 * an optional pl_error out-parameter.
 */
#ifndef PULSE_CORE_ERR_H
#define PULSE_CORE_ERR_H

#include <stddef.h>

/*      name              value  http  api code              message */
#define PL_ERRNO_MAP(X)                                                                      \
    X(PL_EINVAL,           -1,  400, "validation_failed",  "the request is not valid")     \
    X(PL_EBADJSON,         -2,  400, "malformed_json",     "the body is not valid JSON")    \
    X(PL_EUNAUTHORIZED,    -3,  401, "unauthorized",       "authentication is required")    \
    X(PL_EFORBIDDEN,       -4,  403, "forbidden",          "you may not do this")           \
    X(PL_ENOTFOUND,        -5,  404, "not_found",          "no such resource")              \
    X(PL_EMETHOD,          -6,  405, "method_not_allowed", "method not allowed here")       \
    X(PL_ECONFLICT,        -7,  409, "conflict",           "the resource already exists or changed") \
    X(PL_ETOOLARGE,        -8,  413, "payload_too_large",  "the request body is too large") \
    X(PL_EMEDIATYPE,       -9,  415, "unsupported_media_type", "the body must be application/json") \
    X(PL_EUNPROCESSABLE,  -10,  422, "unprocessable",      "the request cannot be applied") \
    X(PL_ERATELIMIT,      -11,  429, "rate_limited",       "too many requests, retry later") \
    X(PL_EHEADERS,        -12,  431, "headers_too_large",  "the request headers are too large") \
    X(PL_EUNAVAILABLE,    -13,  503, "unavailable",        "a backing service is unavailable") \
    X(PL_ETIMEOUT,        -14,  503, "timeout",            "a backing service timed out")   \
    X(PL_ENOMEM,          -15,  500, "internal",           "out of memory")                 \
    X(PL_EIO,             -16,  500, "internal",           "input/output error")            \
    X(PL_EINTERNAL,       -17,  500, "internal",           "internal error")                \
    X(PL_ECONFIG,         -18,  500, "internal",           "invalid configuration")         \
    X(PL_EDONE,           -19,  500, "internal",           "no more rows")                  \
    X(PL_EBADREQUEST,     -20,  400, "bad_request",        "the request is malformed")

enum {
    PL_OK = 0,
#define PL_ERR_ENUM(name, val, http, api, msg) name = (val),
    PL_ERRNO_MAP(PL_ERR_ENUM)
#undef PL_ERR_ENUM
};

/* Optional detail of a failure. `field` names the offending input when there
 * is one (a config key, a request field); `msg` is a human sentence. */
typedef struct pl_error {
    int  code;
    char field[64];
    char msg[256];
} pl_error;

/* Names and mappings for a code; unknown codes map to PL_EINTERNAL's. */
const char *err_name(int code);
const char *err_message(int code);
int         err_http_status(int code);
const char *err_api_code(int code);

/* Fills *e (which may be NULL) and returns code, for `return err_set(...)`. */
int err_set(pl_error *e, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
