/*
 * config.h - Pulse configuration: defaults, then pulse.ini, then PULSE_*
 * environment variables, then command-line flags; later sources win.
 *
 * Every key is declared in a table (config_key) with its type, default and
 * help; the platform's keys live in config.c and each service declares its
 * own under "service.<name>". Unknown keys and bad values are errors that
 * name the key (and the file's line, or the environment variable); only
 * PULSE_TEST_* variables are left to the test harnesses.
 *
 * A config is read-only after loading and then safe to share between threads.
 */
#ifndef PULSE_CORE_CONFIG_H
#define PULSE_CORE_CONFIG_H

#include "core/err.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    CFG_STRING,   /* any text */
    CFG_INT,      /* decimal integer within [min, max] */
    CFG_BOOL,     /* true/false, yes/no, on/off, 1/0 */
    CFG_DURATION, /* "250ms", "30s", "15m", "2h", "1d"; a bare number is seconds; kept as ms */
    CFG_SIZE,     /* "512", "64KiB", "1MiB", "2GiB" (k/M/G accepted too); kept as bytes */
    CFG_URL,      /* engine URL "scheme:..." with a known scheme, or empty for embedded */
    CFG_LISTEN,   /* "host:port" with port 0..65535 */
    CFG_LEVEL,    /* log level: debug, info, warn, error, off */
} config_type;

typedef struct config_key {
    const char *section; /* "server", "bus", "defaults", "log", "service.identity", ... */
    const char *key;
    config_type type;
    const char *def;     /* default, as it would be written in the file */
    int64_t min, max;    /* bounds for INT, DURATION (ms) and SIZE; both 0 = unbounded */
    const char *help;
} config_key;

typedef struct config config;

/* The platform's own keys (server, log, bus, defaults). */
extern const config_key config_platform_keys[];
extern const size_t config_platform_nkeys;

/* The store kinds a service section may name an engine for. */
extern const char *const config_store_kinds[];

/* Creates a config knowing `keys` (copied by reference: the table must outlive
 * the config), every key at its default. Defaults must themselves be valid. */
config *config_create(const config_key *const *tables, const size_t *counts, size_t ntables);
void    config_destroy(config *c); /* NULL is a no-op */

/* Adds the per-kind engine keys of one service ("service.<name>.sql", ...). */
void config_add_service(config *c, const char *service);

int config_load_file(config *c, const char *path, pl_error *err); /* missing file: PL_ECONFIG */
int config_load_env(config *c, char **envp, pl_error *err);
int config_set(config *c, const char *section, const char *key, const char *value, pl_error *err);

/* Getters. Asking for an undeclared key is a programming error (abort). */
const char *config_str(const config *c, const char *section, const char *key);
int64_t     config_int(const config *c, const char *section, const char *key); /* INT, DURATION (ms), SIZE (bytes) */
bool        config_bool(const config *c, const char *section, const char *key);

/* Engine URL for a service's store kind: [service.<name>] kind, else
 * [defaults] kind; "" means the embedded engine. */
const char *config_store_url(const config *c, const char *service, const char *kind);

/* Prints every key with its value and source ("default", "file", "env", "flag"). */
void config_dump(const config *c, void (*line)(void *ud, const char *text), void *ud);

/* Parsers shared with the CLI and tests. 0 or PL_EINVAL. */
int config_parse_duration_ms(const char *s, int64_t *out);
int config_parse_size(const char *s, int64_t *out);
int config_parse_listen(const char *s, char *host, size_t hostsz, int *port);

#endif
