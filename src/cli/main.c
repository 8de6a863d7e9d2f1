/*
 * main.c - the pulse command: serve, migrate, demo, config.
 *
 *   pulse serve   [--listen HOST:PORT] [--data DIR] [--config FILE] [--services a,b] [--demo]
 *   pulse migrate [--data DIR] [--config FILE] [--services a,b]
 *   pulse demo    [--data DIR] [--config FILE]
 *   pulse config  [--config FILE] ...      prints every key, its value and where it came from
 */
#include "cli/cli.h"
#include "core/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static void usage(FILE *f)
{
    fputs("usage: pulse <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve     serve the HTTP API (default 127.0.0.1:8080, data in ./data)\n"
          "  migrate   apply pending store migrations and exit\n"
          "  demo      seed demo data into empty stores and exit\n"
          "  config    print the effective configuration and exit\n"
          "  events tail [pattern] [--from-start]\n"
          "            print events as they are committed, one CloudEvent per line\n"
          "  dlq ls | retry <id|--all> | drop <id>\n"
          "            list, re-drive or drop dead-lettered events\n"
          "  replay <projection>\n"
          "            rebuild a projection's read model from the start of the log\n"
          "  audit verify\n"
          "            check the audit trail's hash chain (exit 3 when broken)\n"
          "\n"
          "options (every command):\n"
          "  --config FILE      read pulse.ini-style configuration from FILE\n"
          "  --data DIR         data directory of the embedded engines (server.data)\n"
          "  --listen HOST:PORT address to serve on (server.listen)\n"
          "  --services a,b     host only these services (server.services)\n"
          "  --demo             seed demo data at start when stores are empty (server.demo)\n"
          "\n"
          "Every key can also be set as PULSE_<SECTION>_<KEY>, e.g. PULSE_SERVER_LISTEN.\n",
          f);
}

/* Loads defaults, the file, the environment and flags, in that order.
 * Arguments that are not flags are collected into pos (when pos is given). */
static int load_config(int argc, char **argv, config **out, char **pos, int *npos)
{
    config *c = host_config_create();
    pl_error err = {0};
    const char *file = NULL;
    static const struct { const char *flag, *section, *key; bool takes_value; } flags[] = {
        {"--data", "server", "data", true},
        {"--listen", "server", "listen", true},
        {"--services", "server", "services", true},
        {"--demo", "server", "demo", false},
    };
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
    int rc = file ? config_load_file(c, file, &err) : 0;
    if (!rc)
        rc = config_load_env(c, environ, &err);
    for (int i = 2; i < argc && !rc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                rc = err_set(&err, PL_ECONFIG, "config", "--config needs a file");
            i++;
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0] && !rc; k++) {
            if (strcmp(argv[i], flags[k].flag) != 0)
                continue;
            known = true;
            if (flags[k].takes_value && i + 1 >= argc)
                rc = err_set(&err, PL_ECONFIG, flags[k].key, "%s needs a value", flags[k].flag);
            else
                rc = config_set(c, flags[k].section, flags[k].key, flags[k].takes_value ? argv[++i] : "true", &err);
        }
        if (!known && !rc && pos && (argv[i][0] != '-' || strcmp(argv[i], "--from-start") == 0 ||
                                     strcmp(argv[i], "--all") == 0)) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (!known && !rc)
            rc = err_set(&err, PL_ECONFIG, argv[i], "unknown option %s (see pulse --help)", argv[i]);
    }
    if (rc) {
        fprintf(stderr, "pulse: configuration error: %s\n", err.msg);
        config_destroy(c);
        return 2;
    }
    log_set_level((int)config_int(c, "log", "level"));
    *out = c;
    return 0;
}

static void print_line(void *ud, const char *text)
{
    fprintf(ud, "%s\n", text);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (sodium_init() < 0) {
        fputs("pulse: libsodium failed to initialise\n", stderr);
        return 1;
    }
    static const struct { const char *name; int (*fn)(const config *c); } commands[] = {
        {"serve", cli_serve},
        {"migrate", cli_migrate},
        {"demo", cli_demo},
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        config *c;
        int rc = load_config(argc, argv, &c, NULL, NULL);
        if (rc)
            return rc;
        rc = commands[i].fn(c);
        config_destroy(c);
        return rc;
    }
    static const struct { const char *name; int (*fn)(const config *c, int argc, char **argv); } with_args[] = {
        {"events", cli_events},
        {"dlq", cli_dlq},
        {"replay", cli_replay},
    };
    for (size_t i = 0; i < sizeof with_args / sizeof with_args[0]; i++) {
        if (strcmp(argv[1], with_args[i].name) != 0)
            continue;
        char **pos = calloc((size_t)argc, sizeof *pos);
        int npos = 0;
        config *c;
        int rc = load_config(argc, argv, &c, pos, &npos);
        if (!rc) {
            rc = with_args[i].fn(c, npos, pos);
            config_destroy(c);
        }
        free(pos);
        return rc;
    }
    if (strcmp(argv[1], "config") == 0) {
        config *c;
        int rc = load_config(argc, argv, &c, NULL, NULL);
        if (rc)
            return rc;
        config_dump(c, print_line, stdout);
        config_destroy(c);
        return 0;
    }
    const service_def *svc = service_find(argv[1]);
    if (svc && svc->ncommands) {
        char **pos = calloc((size_t)argc, sizeof *pos);
        int npos = 0;
        config *c;
        int rc = load_config(argc, argv, &c, pos, &npos);
        if (!rc) {
            rc = cli_service_command(c, svc->name, npos, pos);
            config_destroy(c);
        }
        free(pos);
        return rc;
    }
    fprintf(stderr, "pulse: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
