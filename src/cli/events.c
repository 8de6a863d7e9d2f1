/*
 * events.c - the event backbone's command line:
 *   pulse events tail [pattern] [--from-start]
 *   pulse dlq ls | retry <id|--all> | drop <id>
 *   pulse replay <projection>
 * Each takes the same --config/--data as `pulse serve`, and works whether a
 * server is running on the same data or not.
 */
#include "cli/cli.h"
#include "bus/bus.h"
#include "core/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int open_bus(const config *c, bus **b)
{
    bus_options o = {
        .data_dir = config_str(c, "server", "data"),
        .partitions = (int)config_int(c, "bus", "partitions"),
        .retention_age_ms = config_int(c, "bus", "retention_age"),
        .retention_max = config_int(c, "bus", "retention_max"),
        .ns = config_str(c, "server", "namespace"),
    };
    pl_error err = {0};
    if (bus_open(config_str(c, "bus", "url"), &o, b, &err)) {
        fprintf(stderr, "pulse: cannot open the event bus: %s\n", err.msg);
        return 1;
    }
    return 0;
}

typedef struct {
    const char *pattern;
} tail_ctx;

static int print_event(void *ud, uint64_t seq, const char *type, const char *body, size_t len)
{
    (void)seq;
    tail_ctx *t = ud;
    if (ce_type_matches(t->pattern, type)) {
        fwrite(body, 1, len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    return interrupted;
}

int cli_events(const config *c, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "tail") != 0) {
        fputs("usage: pulse events tail [pattern] [--from-start]\n", stderr);
        return 2;
    }
    tail_ctx t = {.pattern = "*"};
    bool from_start = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from-start") == 0)
            from_start = true;
        else if (argv[i][0] != '-')
            t.pattern = argv[i];
    }
    bus *b;
    if (open_bus(c, &b))
        return 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, on_signal);
    pl_error err = {0};
    uint64_t pos = 0;
    int rc = from_start ? 0 : bus_head(b, &pos, &err);
    while (!rc && !interrupted)
        rc = bus_read(b, pos, 512, 200, print_event, &t, &pos, &err);
    if (rc)
        fprintf(stderr, "pulse: reading the log failed: %s\n", err.msg);
    bus_close(b);
    return rc ? 1 : 0;
}

int cli_dlq(const config *c, int argc, char **argv)
{
    if (argc < 1) {
        fputs("usage: pulse dlq ls | retry <id|--all> | drop <id>\n", stderr);
        return 2;
    }
    bus *b;
    if (open_bus(c, &b))
        return 1;
    pl_error err = {0};
    int rc = 0;
    if (strcmp(argv[0], "ls") == 0) {
        bus_dead *d = NULL;
        size_t n = 0;
        if (!(rc = bus_dead_list(b, &d, &n, &err))) {
            for (size_t i = 0; i < n; i++) {
                json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:I, s:i, s:s, s:s}", "id", (json_int_t)d[i].id,
                                      "consumer", d[i].group, "type", d[i].type, "event_id", d[i].event_id, "seq",
                                      (json_int_t)d[i].seq, "deliveries", d[i].deliveries, "error", d[i].error,
                                      "dead_at", d[i].dead_at);
                char *s = json_dumps(j, JSON_COMPACT);
                puts(s);
                free(s);
                json_decref(j);
            }
            free(d);
        }
    } else if (strcmp(argv[0], "retry") == 0 && argc == 2) {
        int64_t id = strcmp(argv[1], "--all") == 0 ? 0 : strtoll(argv[1], NULL, 10);
        int count = 0;
        if (id < 0 || (id == 0 && strcmp(argv[1], "--all") != 0))
            rc = err_set(&err, PL_EINVAL, "id", "retry takes a dead letter id or --all");
        else if (!(rc = bus_dead_retry(b, id, &count, &err)))
            printf("re-driven: %d\n", count);
    } else if (strcmp(argv[0], "drop") == 0 && argc == 2) {
        int64_t id = strtoll(argv[1], NULL, 10);
        if (id <= 0)
            rc = err_set(&err, PL_EINVAL, "id", "drop takes a dead letter id");
        else if (!(rc = bus_dead_drop(b, id, &err)))
            printf("dropped: %lld\n", (long long)id);
    } else {
        fputs("usage: pulse dlq ls | retry <id|--all> | drop <id>\n", stderr);
        bus_close(b);
        return 2;
    }
    if (rc)
        fprintf(stderr, "pulse: %s\n", err.msg);
    bus_close(b);
    return rc ? 1 : 0;
}

int cli_replay(const config *c, int argc, char **argv)
{
    if (argc != 1) {
        fputs("usage: pulse replay <projection>   (e.g. audit.directory)\n", stderr);
        return 2;
    }
    host *h;
    pl_error err = {0};
    int rc = host_open(c, config_str(c, "server", "services"), &h, &err);
    if (rc) {
        fprintf(stderr, "pulse: %s\n", err.msg);
        return 1;
    }
    router *r = router_create();
    rc = host_start(h, r, false, &err);
    if (!rc)
        rc = host_replay(h, argv[0], &err);
    router_destroy(r);
    if (rc)
        fprintf(stderr, "pulse: replay failed: %s\n", err.msg);
    else
        printf("replayed %s\n", argv[0]);
    host_close(h);
    return rc ? 1 : 0;
}

int cli_service_command(const config *c, const char *service, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: pulse %s <command> [args]\n", service);
        return 2;
    }
    host *h;
    pl_error err = {0};
    if (host_open(c, service, &h, &err)) {
        fprintf(stderr, "pulse: %s\n", err.msg);
        return 1;
    }
    router *r = router_create();
    int rc = host_start(h, r, false, &err);
    if (rc)
        fprintf(stderr, "pulse: %s\n", err.msg);
    else
        rc = host_command(h, service, argv[0], argc - 1, argv + 1);
    router_destroy(r);
    host_close(h);
    return rc;
}
