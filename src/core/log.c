/* log.c - JSON-lines logger with a per-thread request context. */
#include "core/log.h"
#include "core/timeutil.h"

#include <stdarg.h>
#include <stdatomic.h>
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

typedef struct {
    char buf[4096];
    size_t n;
} line;

static void put(line *l, const char *s, size_t n)
{
    if (n > sizeof l->buf - 2 - l->n) /* keep room for "}\n" */
        n = sizeof l->buf - 2 - l->n;
    memcpy(l->buf + l->n, s, n);
    l->n += n;
}

static void put_str(line *l, const char *s)
{
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20) {
            int k = snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, (size_t)k);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

static void put_key(line *l, const char *key)
{
    put(l, ",", 1);
    put_str(l, key);
    put(l, ":", 1);
}

void log_fields(int level, const char *msg, const log_field *fields, size_t n)
{
    if (level < atomic_load(&log_min_level) || level >= LOG_OFF)
        return;
    line l;
    l.n = 0;
    char ts[32];
    time_rfc3339(time_now_ms(), ts, sizeof ts);
    put(&l, "{\"ts\":\"", 7);
    put(&l, ts, strlen(ts));
    put(&l, "\",\"level\":\"", 11);
    put(&l, level_names[level], strlen(level_names[level]));
    put(&l, "\"", 1);
    put_key(&l, "msg");
    put_str(&l, msg);
    if (ctx_service) {
        put_key(&l, "service");
        put_str(&l, ctx_service);
    }
    if (ctx_request_id) {
        put_key(&l, "request_id");
        put_str(&l, ctx_request_id);
    }
    if (ctx_trace_id) {
        put_key(&l, "trace_id");
        put_str(&l, ctx_trace_id);
    }
    for (size_t i = 0; i < n; i++) {
        char num[48];
        put_key(&l, fields[i].key);
        switch (fields[i].kind) {
        case 2:
            put(&l, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)fields[i].i));
            break;
        case 3:
            put(&l, num, (size_t)snprintf(num, sizeof num, "%.3f", fields[i].d));
            break;
        default:
            put_str(&l, fields[i].s ? fields[i].s : "");
        }
    }
    l.buf[l.n++] = '}';
    l.buf[l.n++] = '\n';
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
