/*
 * metrics.h - Prometheus text exposition for /metrics.
 *
 * HTTP requests are counted per route (method + pattern) and status with a
 * latency histogram, lock-free on the request path. Other subsystems (the
 * bus, stores, caches) register collectors that append their own families
 * when /metrics is scraped.
 */
#ifndef PULSE_HTTP_METRICS_H
#define PULSE_HTTP_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;
typedef struct metrics_buf metrics_buf;

/* Appends printf-style text to the exposition being built. */
void metrics_printf(metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A collector appends whole metric families (with # HELP and # TYPE). It runs
 * on the scraping request's thread; it must not block for long. */
typedef void (*metrics_collector)(void *ud, metrics_buf *b);

/* nroutes: the dense route indexes 0..nroutes-1 of the router; one more slot
 * is kept for requests that matched no route. */
metrics *metrics_create(size_t nroutes);
void     metrics_destroy(metrics *m); /* NULL is a no-op */

void metrics_set_route(metrics *m, size_t index, const char *method, const char *pattern);
void metrics_observe(metrics *m, int route_index /* -1: unmatched */, int status, double seconds);
void metrics_add_collector(metrics *m, metrics_collector fn, void *ud);

/* Renders everything; the caller frees *out with free(). */
void metrics_render(metrics *m, char **out, size_t *len);

#endif
