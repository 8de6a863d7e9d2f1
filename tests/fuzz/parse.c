/*
 * parse.c - libFuzzer driver for the configuration value parsers
 * (config_parse_duration_ms, config_parse_size, config_parse_listen in
 * src/core/config.c), which the CLI also uses on raw flags.
 *
 * Checks: no crash or undefined behaviour; rejected input leaves the outputs
 * alone; accepted values are in range and survive a round trip through
 * their canonical spelling.
 */
#include "core/config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void duration(const char *s)
{
    int64_t v = -42;
    int rc = config_parse_duration_ms(s, &v);
    if (rc != 0 && (rc != PL_EINVAL || v != -42))
        abort();
    if (rc == 0) {
        char again[32];
        int64_t back = -1;
        snprintf(again, sizeof again, "%" PRId64 "ms", v);
        if (v < 0 || config_parse_duration_ms(again, &back) != 0 || back != v)
            abort();
    }
}

static void size_value(const char *s)
{
    int64_t v = -42;
    int rc = config_parse_size(s, &v);
    if (rc != 0 && (rc != PL_EINVAL || v != -42))
        abort();
    if (rc == 0) {
        char again[32];
        int64_t back = -1;
        snprintf(again, sizeof again, "%" PRId64, v);
        if (v < 0 || config_parse_size(again, &back) != 0 || back != v)
            abort();
    }
}

static void listen_addr(const char *s)
{
    char host[16]; /* small, so that the length check is exercised */
    int port = -42;
    int rc = config_parse_listen(s, host, sizeof host, &port);
    if (rc != 0 && (rc != PL_EINVAL || port != -42))
        abort();
    if (rc == 0) {
        if (port < 0 || port > 65535 || strlen(host) >= sizeof host || strncmp(s, host, strlen(host)) != 0)
            abort();
        char again[64], host2[16];
        int port2 = -1;
        snprintf(again, sizeof again, "%s:%d", host, port);
        if (config_parse_listen(again, host2, sizeof host2, &port2) != 0 || port2 != port || strcmp(host, host2))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    duration(s);
    size_value(s);
    listen_addr(s);
    free(s);
    return 0;
}
