/* http_metrics.c - unit tests of the Prometheus exposition (src/http/metrics.c). */
#include "http/metrics.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render(metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    metrics_render(m, &text, &len);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len, "len must be the text's length");
    return text;
}

/* The value on the line that starts with `prefix`, or -1 when there is none. */
static long long value_of(const char *text, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, prefix, pl) == 0 && line[pl] == ' ')
            return strtoll(line + pl + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

#define LBL "method=\"GET\",route=\"/api/v1/users/{id}\",status=\"200\""

Test(metrics, counter_and_cumulative_histogram)
{
    metrics *m = metrics_create(2);
    metrics_set_route(m, 0, "GET", "/healthz");
    metrics_set_route(m, 1, "GET", "/api/v1/users/{id}");
    metrics_observe(m, 1, 200, 0.0003); /* <= 0.0005 */
    metrics_observe(m, 1, 200, 0.0007); /* <= 0.001 */
    metrics_observe(m, 1, 200, 0.001);  /* exactly on a bound: counted in it */
    metrics_observe(m, 1, 200, 0.2);    /* <= 0.25 */
    metrics_observe(m, 1, 200, 30.0);   /* only in +Inf */
    metrics_observe(m, 1, 404, 0.002);
    char *t = render(m);

    cr_assert_not_null(strstr(t, "# TYPE pulse_http_requests_total counter\n"));
    cr_assert_not_null(strstr(t, "# TYPE pulse_http_request_duration_seconds histogram\n"));
    cr_assert_eq(value_of(t, "pulse_http_requests_total{" LBL "}"), 5, "%s", t);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"404\"}"),
                 1);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"), -1,
                 "a route without requests has no series");

    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"0.0005\"}"), 1);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"0.001\"}"), 3);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"0.1\"}"), 3);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"0.25\"}"), 4);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"5\"}"), 4);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"+Inf\"}"), 5);
    cr_assert_eq(value_of(t, "pulse_http_request_duration_seconds_count{" LBL "}"), 5);
    const char *sum = strstr(t, "pulse_http_request_duration_seconds_sum{" LBL "} ");
    cr_assert_not_null(sum);
    double s = strtod(sum + strlen("pulse_http_request_duration_seconds_sum{" LBL "} "), NULL);
    cr_assert_float_eq(s, 0.0003 + 0.0007 + 0.001 + 0.2 + 30.0, 1e-6);

    /* buckets never decrease */
    long long prev = 0;
    static const char *const les[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                      "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",    "+Inf"};
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, "pulse_http_request_duration_seconds_bucket{" LBL ",le=\"%s\"}", les[i]);
        long long v = value_of(t, name);
        cr_assert_geq(v, prev, "bucket le=%s has %lld < %lld", les[i], v, prev);
        prev = v;
    }
    free(t);
    metrics_destroy(m);
}

Test(metrics, unmatched_requests_have_their_own_series)
{
    metrics *m = metrics_create(1);
    metrics_set_route(m, 0, "GET", "/healthz");
    metrics_observe(m, -1, 404, 0.001);
    metrics_observe(m, 7, 404, 0.001); /* out of range: unmatched too */
    char *t = render(m);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"\",route=\"unmatched\",status=\"404\"}"), 2, "%s", t);
    free(t);
    metrics_destroy(m);
}

Test(metrics, odd_observations_do_not_break_the_exposition)
{
    metrics *m = metrics_create(2); /* route 1 never named */
    metrics_set_route(m, 0, "GET", "/a");
    metrics_set_route(m, 5, "GET", "/ignored"); /* out of range: ignored */
    metrics_observe(m, 0, 200, -0.5);           /* a clock step backwards */
    metrics_observe(m, 1, 200, 0.001);
    char *t = render(m);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"GET\",route=\"/a\",status=\"200\"}"), 1, "%s", t);
    cr_assert_null(strstr(t, "(null)"), "unnamed routes must not print (null): %s", t);
    cr_assert_null(strstr(t, "/ignored"));
    const char *sum = strstr(t, "pulse_http_request_duration_seconds_sum{method=\"GET\",route=\"/a\",status=\"200\"} ");
    cr_assert_not_null(sum);
    cr_assert_eq(sum[strlen("pulse_http_request_duration_seconds_sum{method=\"GET\",route=\"/a\",status=\"200\"} ")],
                 '0', "a negative duration is counted as 0: %s", sum);
    free(t);
    metrics_destroy(m);
}

Test(metrics, many_statuses_fold_into_the_last_slot)
{
    metrics *m = metrics_create(1);
    metrics_set_route(m, 0, "GET", "/x");
    long long total = 0;
    for (int st = 200; st < 230; st++, total++)
        metrics_observe(m, 0, st, 0.001);
    char *t = render(m);
    long long sum = 0;
    for (int st = 200; st < 230; st++) {
        char name[128];
        snprintf(name, sizeof name, "pulse_http_requests_total{method=\"GET\",route=\"/x\",status=\"%d\"}", st);
        long long v = value_of(t, name);
        if (v > 0)
            sum += v;
    }
    cr_assert_eq(sum, total, "every request is counted somewhere");
    free(t);
    metrics_destroy(m);
}

static void collector_a(void *ud, metrics_buf *b)
{
    int *calls = ud;
    (*calls)++;
    metrics_printf(b, "# HELP pulse_test_a A test family.\n# TYPE pulse_test_a gauge\npulse_test_a %d\n", *calls);
}

static void collector_big(void *ud, metrics_buf *b)
{
    (void)ud;
    /* more than the initial buffer, to exercise growth */
    for (int i = 0; i < 2000; i++)
        metrics_printf(b, "pulse_test_big{i=\"%d\"} %d\n", i, i);
}

Test(metrics, collectors_are_called_on_every_render)
{
    metrics *m = metrics_create(0);
    int calls = 0;
    metrics_add_collector(m, collector_a, &calls);
    metrics_add_collector(m, collector_big, NULL);
    char *t = render(m);
    cr_assert_eq(calls, 1);
    cr_assert_eq(value_of(t, "pulse_test_a"), 1);
    cr_assert_eq(value_of(t, "pulse_test_big{i=\"1999\"}"), 1999);
    cr_assert_lt(strstr(t, "pulse_test_a"), strstr(t, "pulse_test_big"), "collectors run in order");
    free(t);
    t = render(m);
    cr_assert_eq(calls, 2);
    cr_assert_eq(value_of(t, "pulse_test_a"), 2);
    free(t);
    metrics_destroy(m);
    metrics_destroy(NULL);
}

typedef struct {
    metrics *m;
    int route;
} worker_arg;

static void *observe_many(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < 10000; i++)
        metrics_observe(a->m, a->route, i % 2 ? 200 : 500, 0.0001 * (i % 100));
    return NULL;
}

Test(metrics, concurrent_observations_are_all_counted)
{
    metrics *m = metrics_create(1);
    metrics_set_route(m, 0, "POST", "/x");
    pthread_t th[4];
    worker_arg a = {m, 0};
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, observe_many, &a);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *t = render(m);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"POST\",route=\"/x\",status=\"200\"}"), 20000);
    cr_assert_eq(value_of(t, "pulse_http_requests_total{method=\"POST\",route=\"/x\",status=\"500\"}"), 20000);
    free(t);
    metrics_destroy(m);
}
