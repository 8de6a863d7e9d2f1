/* metrics.c - per-route status slots claimed by CAS; histograms of atomics. */
#include "http/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,   0.1,   0.25,   0.5,   1.0,  2.5, 5.0};
#define NBUCKETS (sizeof bucket_le / sizeof bucket_le[0])
#define NSTATUS 12 /* distinct statuses tracked per route; more fold into the last */

typedef struct {
    atomic_int status; /* 0 = free */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
    atomic_uint_fast64_t bucket[NBUCKETS]; /* non-cumulative; summed at render */
} status_slot;

typedef struct {
    const char *method, *pattern;
    status_slot slot[NSTATUS];
} route_slot;

typedef struct collector {
    metrics_collector fn;
    void *ud;
} collector;

struct metrics {
    size_t nroutes;
    route_slot *routes; /* nroutes + 1 */
    pthread_mutex_t lock; /* guards collectors */
    collector *collectors;
    size_t ncollectors;
};

struct metrics_buf {
    char *p;
    size_t n, cap;
};

void metrics_printf(metrics_buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap * 2 + (size_t)k;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
}

metrics *metrics_create(size_t nroutes)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->nroutes = nroutes;
    m->routes = calloc(nroutes + 1, sizeof *m->routes);
    if (!m->routes)
        abort();
    for (size_t i = 0; i < nroutes; i++) { /* a route never named still renders */
        m->routes[i].method = "";
        m->routes[i].pattern = "";
    }
    m->routes[nroutes].method = "";
    m->routes[nroutes].pattern = "unmatched";
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_destroy(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m->collectors);
    free(m->routes);
    free(m);
}

void metrics_set_route(metrics *m, size_t index, const char *method, const char *pattern)
{
    if (index < m->nroutes) {
        m->routes[index].method = method;
        m->routes[index].pattern = pattern;
    }
}

static status_slot *claim(route_slot *r, int status)
{
    for (int i = 0; i < NSTATUS; i++) {
        int cur = atomic_load_explicit(&r->slot[i].status, memory_order_acquire);
        if (cur == status)
            return &r->slot[i];
        if (cur == 0) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&r->slot[i].status, &expect, status) || expect == status)
                return &r->slot[i];
        }
    }
    return &r->slot[NSTATUS - 1];
}

void metrics_observe(metrics *m, int route_index, int status, double seconds)
{
    size_t idx = route_index < 0 || (size_t)route_index >= m->nroutes ? m->nroutes : (size_t)route_index;
    if (!(seconds > 0)) /* a wall-clock step backwards (or NaN): converting it to unsigned is undefined */
        seconds = 0;
    status_slot *s = claim(&m->routes[idx], status);
    size_t b = 0;
    while (b < NBUCKETS && seconds > bucket_le[b])
        b++;
    if (b < NBUCKETS)
        atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint64_t)(seconds * 1e9), memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

void metrics_add_collector(metrics *m, metrics_collector fn, void *ud)
{
    pthread_mutex_lock(&m->lock);
    m->collectors = realloc(m->collectors, (m->ncollectors + 1) * sizeof *m->collectors);
    if (!m->collectors)
        abort();
    m->collectors[m->ncollectors++] = (collector){fn, ud};
    pthread_mutex_unlock(&m->lock);
}

void metrics_render(metrics *m, char **out, size_t *len)
{
    metrics_buf b = {malloc(16384), 0, 16384};
    if (!b.p)
        abort();
    metrics_printf(&b, "# HELP pulse_http_requests_total HTTP requests by route and status.\n"
                       "# TYPE pulse_http_requests_total counter\n");
    for (size_t r = 0; r <= m->nroutes; r++) {
        route_slot *rs = &m->routes[r];
        for (int i = 0; i < NSTATUS; i++) {
            int st = atomic_load(&rs->slot[i].status);
            if (st)
                metrics_printf(&b, "pulse_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
                               rs->method, rs->pattern, st,
                               (unsigned long long)atomic_load(&rs->slot[i].count));
        }
    }
    metrics_printf(&b, "# HELP pulse_http_request_duration_seconds HTTP request latency by route and status.\n"
                       "# TYPE pulse_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= m->nroutes; r++) {
        route_slot *rs = &m->routes[r];
        for (int i = 0; i < NSTATUS; i++) {
            status_slot *s = &rs->slot[i];
            int st = atomic_load(&s->status);
            if (!st)
                continue;
            char labels[512];
            snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\",status=\"%d\"", rs->method,
                     rs->pattern, st);
            unsigned long long cum = 0, count = atomic_load(&s->count);
            for (size_t k = 0; k < NBUCKETS; k++) {
                cum += atomic_load(&s->bucket[k]);
                metrics_printf(&b, "pulse_http_request_duration_seconds_bucket{%s,le=\"%g\"} %llu\n", labels,
                               bucket_le[k], cum);
            }
            metrics_printf(&b, "pulse_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %llu\n", labels, count);
            metrics_printf(&b, "pulse_http_request_duration_seconds_sum{%s} %.6f\n", labels,
                           (double)atomic_load(&s->sum_ns) / 1e9);
            metrics_printf(&b, "pulse_http_request_duration_seconds_count{%s} %llu\n", labels, count);
        }
    }
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->ncollectors; i++)
        m->collectors[i].fn(m->collectors[i].ud, &b);
    pthread_mutex_unlock(&m->lock);
    *out = b.p;
    *len = b.n;
}
