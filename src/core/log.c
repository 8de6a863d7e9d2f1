/* log.c - JSON-lines logger with a per-thread request context. */
#include "core/log.h"
#include "core/timeutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_min_level = LOG_INFO;
static atomic_int log_out_fd = 2;

static _Thread_local const char *ctx_request_id;
static _Thread_local const char *ctx_trace_id;
static _Thread_local const char *ctx_service;
static _Thread_local const char *ctx_traceparent;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_set_level(int level) { atomic_store(&log_min_level, level); }
void log_set_fd(int fd) { atomic_store(&log_out_fd, fd); }

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void log_ctx_set(const char *request_id, const char *trace_id)
{
    ctx_request_id = request_id;
    ctx_trace_id = trace_id;
}
void log_ctx_service(const char *service) { ctx_service = service; }
void log_ctx_clear(void) { ctx_request_id = ctx_trace_id = ctx_service = ctx_traceparent = NULL; }
void log_ctx_traceparent(const char *traceparent) { ctx_traceparent = traceparent; }
const char *log_ctx_get_traceparent(void) { return ctx_traceparent; }
const char *log_ctx_trace_id(void) { return ctx_trace_id; }

/* A line is built in a fixed buffer. Whatever the input, it stays one JSON
 * object: a string value that does not fit is cut (on a character boundary,
 * never inside an escape), a field that does not fit at all is left out, and
 * the line then says "truncated":true. LINE_RESERVE keeps room for that
 * marker and the final "}\n". */
#define LINE_RESERVE 24
#define CLIP_RETRY 512 /* per-string budget of the second try, so that more fields fit */

typedef struct {
    char buf[4096];
    size_t n;
    bool clipped; /* something was cut or left out */
} line;

static size_t room(const line *l) { return sizeof l->buf - LINE_RESERVE - l->n; }

/* Appends all n bytes or nothing. */
static bool put(line *l, const char *s, size_t n)
{
    if (n > room(l)) {
        l->clipped = true;
        return false;
    }
    memcpy(l->buf + l->n, s, n);
    l->n += n;
    return true;
}

/* Length of the UTF-8 sequence at p, or 1 for a byte that starts none
 * (passed through as is: the logger does not validate). */
static size_t seq_len(const unsigned char *p)
{
    size_t len = *p >= 0xf0 && *p < 0xf8 ? 4 : *p >= 0xe0 && *p < 0xf0 ? 3 : *p >= 0xc0 && *p < 0xe0 ? 2 : 1;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 1;
    return len;
}

/* Appends s as a JSON string of at most max output bytes, quotes included.
 * Returns 1 when all of s went in, 0 when it was cut, -1 when not even ""
 * fitted (nothing appended). */
static int put_str(line *l, const char *s, size_t max)
{
    size_t r = room(l);
    if (max > r)
        max = r;
    if (max < 2) {
        l->clipped = true;
        return -1;
    }
    size_t limit = l->n + max - 1; /* the closing quote always fits */
    l->buf[l->n++] = '"';
    int whole = 1;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char esc[8];
        const char *out = esc;
        size_t in = 1, k;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            k = 2;
        } else if (*p < 0x20) {
            k = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
        } else {
            out = (const char *)p;
            k = in = seq_len(p);
        }
        if (l->n + k > limit) {
            l->clipped = true;
            whole = 0;
            break;
        }
        memcpy(l->buf + l->n, out, k);
        l->n += k;
        p += in;
    }
    l->buf[l->n++] = '"';
    return whole;
}

/* Appends ,"key": whole, or nothing (false). */
static bool put_key(line *l, const char *key)
{
    size_t save = l->n;
    if (put(l, ",", 1) && put_str(l, key, SIZE_MAX) == 1 && put(l, ":", 1))
        return true;
    l->n = save;
    l->clipped = true;
    return false;
}

/* Appends a whole field ,"key":"value" with the value cut to clip bytes,
 * or nothing. */
static void put_str_field(line *l, const char *key, const char *value, size_t clip)
{
    size_t save = l->n;
    if (!put_key(l, key))
        return;
    if (put_str(l, value, clip) < 0)
        l->n = save;
}

static void render(line *l, int level, const char *msg, const log_field *fields, size_t n, size_t clip)
{
    l->n = 0;
    l->clipped = false;
    char ts[32];
    time_rfc3339(time_now_ms(), ts, sizeof ts);
    put(l, "{\"ts\":\"", 7);
    put(l, ts, strlen(ts));
    put(l, "\",\"level\":\"", 11);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\"", 1);
    put_str_field(l, "msg", msg, clip);
    if (ctx_service)
        put_str_field(l, "service", ctx_service, clip);
    if (ctx_request_id)
        put_str_field(l, "request_id", ctx_request_id, clip);
    if (ctx_trace_id)
        put_str_field(l, "trace_id", ctx_trace_id, clip);
    for (size_t i = 0; i < n; i++) {
        char num[48];
        size_t save = l->n;
        switch (fields[i].kind) {
        case 2:
            if (put_key(l, fields[i].key) &&
                !put(l, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)fields[i].i)))
                l->n = save;
            break;
        case 3: /* JSON has no NaN or infinity */
            if (isfinite(fields[i].d))
                snprintf(num, sizeof num, "%.3f", fields[i].d);
            else
                snprintf(num, sizeof num, "null");
            if (put_key(l, fields[i].key) && !put(l, num, strlen(num)))
                l->n = save;
            break;
        default:
            put_str_field(l, fields[i].key, fields[i].s ? fields[i].s : "", clip);
        }
    }
    if (l->clipped) { /* LINE_RESERVE keeps room for this and the end */
        memcpy(l->buf + l->n, ",\"truncated\":true", 17);
        l->n += 17;
    }
    l->buf[l->n++] = '}';
    l->buf[l->n++] = '\n';
}

void log_fields(int level, const char *msg, const log_field *fields, size_t n)
{
    if (level < atomic_load(&log_min_level) || level >= LOG_OFF)
        return;
    line l;
    render(&l, level, msg, fields, n, SIZE_MAX);
    if (l.clipped) /* one long value took the room of all later fields: share it out */
        render(&l, level, msg, fields, n, CLIP_RETRY);
    ssize_t w = write(atomic_load(&log_out_fd), l.buf, l.n);
    (void)w; /* nothing sensible to do when the log itself fails */
}

void log_printf(int level, const char *fmt, ...)
{
    if (level < atomic_load(&log_min_level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fields(level, msg, NULL, 0);
}
