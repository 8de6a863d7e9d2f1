/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 *   {"ts":"2026-11-22T03:11:58.123Z","level":"info","msg":"...",
 *    "service":"identity","request_id":"...","trace_id":"...", <fields>}
 *
 * The request id, trace id and service come from a per-thread context that
 * the HTTP layer (and later the event consumers) set around each unit of work.
 * Thread-safe: every line is written with one write(2).
 */
#ifndef PULSE_CORE_LOG_H
#define PULSE_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

typedef struct log_field {
    const char *key;
    int kind; /* 1 string, 2 integer, 3 double */
    const char *s;
    int64_t i;
    double d;
} log_field;

#define LF_STR(k, v) ((log_field){.key = (k), .kind = 1, .s = (v)})
#define LF_INT(k, v) ((log_field){.key = (k), .kind = 2, .i = (int64_t)(v)})
#define LF_DBL(k, v) ((log_field){.key = (k), .kind = 3, .d = (double)(v)})

void log_set_level(int level);
int  log_level_parse(const char *name); /* "debug".."off" -> LOG_*, or -1 */
void log_set_fd(int fd);                /* default 2; tests may redirect */

/* Per-thread context; pointers are borrowed and must outlive their use. */
void log_ctx_set(const char *request_id, const char *trace_id);
void log_ctx_service(const char *service);
void log_ctx_clear(void);
const char *log_ctx_trace_id(void);
/* The W3C traceparent of the work in progress ("00-<trace>-<span>-<flags>"),
 * which events emitted by that work carry; NULL when none. Borrowed. */
void log_ctx_traceparent(const char *traceparent);
const char *log_ctx_get_traceparent(void);

void log_fields(int level, const char *msg, const log_field *fields, size_t n);
void log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_with(level, msg, ...) \
    log_fields((level), (msg), (log_field[]){__VA_ARGS__}, \
               sizeof((log_field[]){__VA_ARGS__}) / sizeof(log_field))
#define log_debug(...) log_printf(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_printf(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_printf(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_printf(LOG_ERROR, __VA_ARGS__)

#endif
