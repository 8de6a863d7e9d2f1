/* core_log_err.c - unit tests of the error table (src/core/err.c) and the
 * JSON-lines logger (src/core/log.c). */
#include "core/err.h"
#include "core/log.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- err ------------------------------------------------------------------ */

Test(err, names_are_the_macro_names)
{
    cr_assert_str_eq(err_name(PL_OK), "PL_OK");
    cr_assert_str_eq(err_name(PL_EINVAL), "PL_EINVAL");
    cr_assert_str_eq(err_name(PL_ENOTFOUND), "PL_ENOTFOUND");
    cr_assert_str_eq(err_name(PL_ECONFLICT), "PL_ECONFLICT");
    cr_assert_str_eq(err_name(PL_EBADREQUEST), "PL_EBADREQUEST");
}

Test(err, http_status_mapping)
{
    static const struct { int code, http; const char *api; } want[] = {
        {PL_OK, 200, "ok"},
        {PL_EINVAL, 400, "validation_failed"},
        {PL_EBADJSON, 400, "malformed_json"},
        {PL_EUNAUTHORIZED, 401, "unauthorized"},
        {PL_EFORBIDDEN, 403, "forbidden"},
        {PL_ENOTFOUND, 404, "not_found"},
        {PL_EMETHOD, 405, "method_not_allowed"},
        {PL_ECONFLICT, 409, "conflict"},
        {PL_ETOOLARGE, 413, "payload_too_large"},
        {PL_EMEDIATYPE, 415, "unsupported_media_type"},
        {PL_EUNPROCESSABLE, 422, "unprocessable"},
        {PL_ERATELIMIT, 429, "rate_limited"},
        {PL_EHEADERS, 431, "headers_too_large"},
        {PL_EUNAVAILABLE, 503, "unavailable"},
        {PL_ETIMEOUT, 503, "timeout"},
        {PL_ENOMEM, 500, "internal"},
        {PL_EIO, 500, "internal"},
        {PL_EINTERNAL, 500, "internal"},
        {PL_ECONFIG, 500, "internal"},
        {PL_EBADREQUEST, 400, "bad_request"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(err_http_status(want[i].code), want[i].http, "%s maps to %d, want %d",
                     err_name(want[i].code), err_http_status(want[i].code), want[i].http);
        cr_assert_str_eq(err_api_code(want[i].code), want[i].api, "%s", err_name(want[i].code));
    }
}

Test(err, every_code_has_a_distinct_name_and_a_message)
{
    for (int code = -1; code >= -20; code--) {
        if (code != PL_EINTERNAL)
            cr_assert_str_neq(err_name(code), "PL_EINTERNAL", "code %d is missing from the table", code);
        cr_assert_gt(strlen(err_message(code)), 0);
        for (int other = code - 1; other >= -20; other--)
            cr_assert_str_neq(err_name(code), err_name(other));
    }
}

Test(err, unknown_codes_map_to_internal)
{
    cr_assert_str_eq(err_name(-999), "PL_EINTERNAL");
    cr_assert_eq(err_http_status(-999), 500);
    cr_assert_str_eq(err_api_code(12345), "internal");
    cr_assert_str_eq(err_message(-999), err_message(PL_EINTERNAL));
}

Test(err, err_set_fills_and_returns_the_code)
{
    pl_error e;
    memset(&e, 0x7f, sizeof e);
    int rc = err_set(&e, PL_ECONFLICT, "email", "email %s is taken (%d)", "a@b.c", 3);
    cr_assert_eq(rc, PL_ECONFLICT);
    cr_assert_eq(e.code, PL_ECONFLICT);
    cr_assert_str_eq(e.field, "email");
    cr_assert_str_eq(e.msg, "email a@b.c is taken (3)");

    rc = err_set(&e, PL_ENOTFOUND, NULL, NULL);
    cr_assert_eq(rc, PL_ENOTFOUND);
    cr_assert_str_eq(e.field, "");
    cr_assert_str_eq(e.msg, err_message(PL_ENOTFOUND), "a NULL format falls back to the code's message");
}

Test(err, err_set_null_and_truncation)
{
    cr_assert_eq(err_set(NULL, PL_EIO, "x", "ignored %d", 1), PL_EIO);
    pl_error e;
    char longfield[200], longmsg[600];
    memset(longfield, 'f', sizeof longfield - 1);
    longfield[sizeof longfield - 1] = '\0';
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    err_set(&e, PL_EINVAL, longfield, "%s", longmsg);
    cr_assert_eq(strlen(e.field), sizeof e.field - 1);
    cr_assert_eq(strlen(e.msg), sizeof e.msg - 1);
}

/* ---- log ------------------------------------------------------------------ */

static int log_pipe[2];

static void log_setup(void)
{
    cr_assert_eq(pipe(log_pipe), 0);
    log_set_fd(log_pipe[1]);
    log_set_level(LOG_DEBUG);
    log_ctx_clear();
}

static void log_teardown(void)
{
    log_set_fd(2);
    log_set_level(LOG_INFO);
    log_ctx_clear();
    close(log_pipe[0]);
    close(log_pipe[1]);
}

/* Reads what was logged so far (the pipe is far from full in these tests). */
static char *drain(void)
{
    static char buf[65536];
    close(log_pipe[1]);
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(log_pipe[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    close(log_pipe[0]);
    cr_assert_eq(pipe(log_pipe), 0); /* a fresh pipe for what follows and for teardown */
    log_set_fd(log_pipe[1]);
    return buf;
}

static json_t *parse_line(const char *line)
{
    json_error_t je;
    json_t *v = json_loads(line, 0, &je);
    cr_assert_not_null(v, "log line is not JSON (%s): %s", je.text, line);
    cr_assert(json_is_object(v));
    return v;
}

Test(log, one_json_object_per_line_with_fields, .init = log_setup, .fini = log_teardown)
{
    log_ctx_service("identity");
    log_ctx_set("req-1", "0123456789abcdef0123456789abcdef");
    log_with(LOG_WARN, "hello \"quoted\"\n\tand control", LF_STR("path", "/a\\b"), LF_INT("status", 404),
             LF_DBL("ms", 1.5));
    char *out = drain();
    size_t len = strlen(out);
    cr_assert_gt(len, 0);
    cr_assert_eq(out[len - 1], '\n');
    cr_assert_eq(strchr(out, '\n'), out + len - 1, "more than one line: %s", out);
    json_t *v = parse_line(out);
    cr_assert_str_eq(json_string_value(json_object_get(v, "level")), "warn");
    cr_assert_str_eq(json_string_value(json_object_get(v, "msg")), "hello \"quoted\"\n\tand control");
    cr_assert_str_eq(json_string_value(json_object_get(v, "service")), "identity");
    cr_assert_str_eq(json_string_value(json_object_get(v, "request_id")), "req-1");
    cr_assert_str_eq(json_string_value(json_object_get(v, "trace_id")), "0123456789abcdef0123456789abcdef");
    cr_assert_str_eq(json_string_value(json_object_get(v, "path")), "/a\\b");
    cr_assert_eq(json_integer_value(json_object_get(v, "status")), 404);
    cr_assert_float_eq(json_number_value(json_object_get(v, "ms")), 1.5, 1e-9);
    const char *ts = json_string_value(json_object_get(v, "ts"));
    cr_assert_not_null(ts);
    cr_assert_eq(strlen(ts), 24, "ts %s is not RFC 3339 with milliseconds", ts);
    cr_assert_eq(ts[23], 'Z');
    json_decref(v);
}

Test(log, level_filter_and_off, .init = log_setup, .fini = log_teardown)
{
    log_set_level(LOG_WARN);
    log_info("dropped %d", 1);
    log_debug("dropped too");
    log_error("kept %s", "error");
    log_set_level(LOG_OFF);
    log_error("dropped when off");
    char *out = drain();
    json_t *v = parse_line(out);
    cr_assert_str_eq(json_string_value(json_object_get(v, "msg")), "kept error");
    cr_assert_str_eq(json_string_value(json_object_get(v, "level")), "error");
    json_decref(v);
    cr_assert_null(strstr(out, "dropped"), "filtered lines were written: %s", out);
}

Test(log, context_cleared_and_long_lines_stay_json, .init = log_setup, .fini = log_teardown)
{
    log_ctx_set("r", "t");
    log_ctx_clear();
    cr_assert_null(log_ctx_trace_id());
    char big[10000];
    memset(big, '"', sizeof big - 1); /* every byte doubles when escaped */
    big[sizeof big - 1] = '\0';
    log_with(LOG_INFO, "big", LF_STR("value", big));
    char *out = drain();
    cr_assert_null(strstr(out, "request_id"));
    /* truncated to the line buffer, but still one line that ends the object */
    size_t len = strlen(out);
    cr_assert_gt(len, 2);
    cr_assert_eq(out[len - 1], '\n');
    cr_assert_eq(strchr(out, '\n'), out + len - 1, "more than one line");
    json_t *v = parse_line(out); /* clipped, yet still valid JSON */
    cr_assert_str_eq(json_string_value(json_object_get(v, "msg")), "big");
    const char *val = json_string_value(json_object_get(v, "value"));
    cr_assert_not_null(val, "the long field was dropped instead of clipped: %s", out);
    cr_assert_gt(strlen(val), 0);
    cr_assert_lt(strlen(val), sizeof big - 1);
    cr_assert_eq(strspn(val, "\""), strlen(val), "clipped value is not a prefix of the original");
    cr_assert(json_is_true(json_object_get(v, "truncated")), "a clipped line says so");
    json_decref(v);
}

Test(log, many_fields_overflowing_the_line_stay_json, .init = log_setup, .fini = log_teardown)
{
    char val[300];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    log_field f[40];
    for (int i = 0; i < 40; i++)
        f[i] = LF_STR("k", val);
    log_fields(LOG_INFO, "many", f, 40);
    json_t *v = parse_line(drain());
    cr_assert_str_eq(json_string_value(json_object_get(v, "msg")), "many");
    json_decref(v);
}

Test(log, non_finite_numbers_are_null, .init = log_setup, .fini = log_teardown)
{
    log_with(LOG_INFO, "nan", LF_DBL("a", NAN), LF_DBL("b", INFINITY), LF_INT("c", -5));
    json_t *v = parse_line(drain());
    cr_assert(json_is_null(json_object_get(v, "a")));
    cr_assert(json_is_null(json_object_get(v, "b")));
    cr_assert_eq(json_integer_value(json_object_get(v, "c")), -5);
    json_decref(v);
}

Test(log, level_names_parse)
{
    cr_assert_eq(log_level_parse("debug"), LOG_DEBUG);
    cr_assert_eq(log_level_parse("info"), LOG_INFO);
    cr_assert_eq(log_level_parse("warn"), LOG_WARN);
    cr_assert_eq(log_level_parse("error"), LOG_ERROR);
    cr_assert_eq(log_level_parse("off"), LOG_OFF);
    cr_assert_eq(log_level_parse("INFO"), -1);
    cr_assert_eq(log_level_parse(""), -1);
    cr_assert_eq(log_level_parse("warning"), -1);
}
