/*
 * config.c - libFuzzer driver for configuration loading (src/core/config.c):
 * the input, up to its first NUL byte, is a pulse.ini written to a temporary
 * file; what follows the NUL is an environment, one NAME=value per line.
 *
 * Checks: no crash, leak or undefined behaviour; every failure is
 * PL_ECONFIG with a message; a file error names the file.
 */
#include "core/config.h"
#include "core/log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const config_key fuzz_keys[] = {
    {"t", "int", CFG_INT, "0", -1000, 1000, ""},
    {"t", "big", CFG_INT, "0", 0, 0, ""},
    {"t", "bool", CFG_BOOL, "no", 0, 0, ""},
    {"t", "dur", CFG_DURATION, "1s", 0, 0, ""},
    {"t", "size", CFG_SIZE, "1K", 0, 0, ""},
    {"t", "url", CFG_URL, "", 0, 0, ""},
    {"t", "listen", CFG_LISTEN, "h:1", 0, 0, ""},
    {"t", "level", CFG_LEVEL, "info", 0, 0, ""},
    {"t", "str", CFG_STRING, "", 0, 0, ""},
};

static char path[64];

static void remove_file(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_OFF); /* unknown PULSE_* variables are warned about */
    snprintf(path, sizeof path, "/tmp/pulse-fuzz-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    close(fd);
    atexit(remove_file);
    return 0;
}

static void ignore_line(void *ud, const char *text)
{
    (void)ud;
    if (!text)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t file_len = nul ? (size_t)(nul - data) : size;

    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    if (file_len && fwrite(data, 1, file_len, f) != file_len)
        abort();
    fclose(f);

    const config_key *tables[] = {config_platform_keys, fuzz_keys};
    const size_t counts[] = {config_platform_nkeys, sizeof fuzz_keys / sizeof fuzz_keys[0]};
    config *c = config_create(tables, counts, 2);
    config_add_service(c, "identity");

    pl_error err = {0};
    int rc = config_load_file(c, path, &err);
    if (rc && (rc != PL_ECONFIG || !err.msg[0] || strncmp(err.msg, path, strlen(path)) != 0))
        abort();

    if (nul) { /* the environment block */
        size_t n = size - file_len - 1;
        char *env_text = malloc(n + 1);
        memcpy(env_text, nul + 1, n);
        env_text[n] = '\0';
        char *envp[64];
        size_t k = 0;
        for (char *save = NULL, *tok = strtok_r(env_text, "\n", &save); tok && k < 63;
             tok = strtok_r(NULL, "\n", &save))
            envp[k++] = tok;
        envp[k] = NULL;
        pl_error eerr = {0};
        int erc = config_load_env(c, envp, &eerr);
        if (erc && (erc != PL_ECONFIG || !eerr.msg[0]))
            abort();
        free(env_text);
    }

    /* whatever was accepted must read back within its declared bounds */
    int64_t v = config_int(c, "t", "int");
    if (v < -1000 || v > 1000)
        abort();
    if (config_int(c, "server", "threads") < 1 || config_int(c, "server", "threads") > 256)
        abort();
    if (config_int(c, "t", "dur") < 0 || config_int(c, "t", "size") < 0)
        abort();
    (void)config_store_url(c, "identity", "sql");
    (void)config_store_url(c, "nobody", "kv");
    config_dump(c, ignore_line, NULL);
    config_destroy(c);
    return 0;
}
