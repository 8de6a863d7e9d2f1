/* config.c - typed key table, inih file parsing, environment overrides. */
#include "core/config.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const config_store_kinds[] = {"sql", "kv", "doc", "search", "graph", "blob", "ts", NULL};

const config_key config_platform_keys[] = {
    {"server", "listen", CFG_LISTEN, "127.0.0.1:8080", 0, 0, "address and port to serve HTTP on"},
    {"server", "data", CFG_STRING, "./data", 0, 0, "directory of the embedded engines' files"},
    {"server", "services", CFG_STRING, "", 0, 0, "comma-separated services to host; empty hosts all"},
    {"server", "threads", CFG_INT, "4", 1, 256, "HTTP threads (each serves many connections)"},
    {"server", "workers", CFG_INT, "2", 1, 256, "threads for slow work taken off the HTTP threads (password hashing)"},
    {"server", "worker_queue", CFG_INT, "256", 1, 100000, "slow requests waiting for a worker at most (503 beyond)"},
    {"server", "body_limit", CFG_SIZE, "1MiB", 1024, (int64_t)1 << 30, "largest request body accepted (413 beyond)"},
    {"server", "header_limit", CFG_SIZE, "16KiB", 1024, 1 << 20, "largest total size of request headers (431 beyond)"},
    {"server", "idle_timeout", CFG_DURATION, "30s", 1000, 3600000, "close connections idle (or stalled mid-request) this long"},
    {"server", "connection_memory", CFG_SIZE, "0", 0, 16 << 20,
     "libmicrohttpd's memory pool per connection, kept by WebSocket sessions; 0: 3 x header_limit + 32KiB"},
    {"server", "connection_limit", CFG_INT, "10000", 1, 1000000, "concurrent connections accepted"},
    {"server", "shutdown_timeout", CFG_DURATION, "10s", 0, 600000, "how long a graceful stop waits for in-flight requests"},
    {"server", "demo", CFG_BOOL, "false", 0, 0, "seed demo data into empty stores at start"},
    {"server", "namespace", CFG_STRING, "", 0, 0,
     "prefix of every schema, key and stream on shared engines ([a-z0-9_], up to 24): deployments apart"},
    {"log", "level", CFG_LEVEL, "info", 0, 0, "debug, info, warn, error or off"},
    {"log", "access", CFG_BOOL, "true", 0, 0, "one log line per HTTP request"},
    {"bus", "url", CFG_URL, "", 0, 0, "event bus engine; empty: the embedded log in the data directory"},
    {"bus", "partitions", CFG_INT, "4", 1, 64, "partitions per consumer group (order is kept per partition key)"},
    {"bus", "max_deliver", CFG_INT, "5", 1, 1000, "deliveries before an event is dead-lettered"},
    {"bus", "batch", CFG_INT, "256", 1, 4096, "events a consumer applies per transaction"},
    {"bus", "retry_base", CFG_DURATION, "100ms", 1, 3600000, "first redelivery delay (doubles each time, with jitter)"},
    {"bus", "retry_max", CFG_DURATION, "30s", 1, 86400000, "longest redelivery delay"},
    {"bus", "lease", CFG_DURATION, "10s", 1000, 600000,
     "how long a consumer instance owns its partitions without renewing (a dead one's move after this)"},
    {"bus", "retention_age", CFG_DURATION, "7d", 60000, 3650LL * 86400000, "events older than this leave the embedded log"},
    {"bus", "retention_max", CFG_INT, "10000000", 1000, 2000000000, "events the embedded log keeps at most"},
    {"defaults", "sql", CFG_URL, "", 0, 0, "engine of every service's sql store; empty: SQLite in the data directory"},
    {"defaults", "kv", CFG_URL, "", 0, 0, "engine of every kv store; empty: embedded"},
    {"defaults", "doc", CFG_URL, "", 0, 0, "engine of every doc store; empty: embedded"},
    {"defaults", "search", CFG_URL, "", 0, 0, "engine of every search store; empty: embedded"},
    {"defaults", "graph", CFG_URL, "", 0, 0, "engine of every graph store; empty: embedded"},
    {"defaults", "blob", CFG_URL, "", 0, 0, "engine of every blob store; empty: embedded"},
    {"defaults", "ts", CFG_URL, "", 0, 0, "engine of every time-series store; empty: embedded"},
};
const size_t config_platform_nkeys = sizeof config_platform_keys / sizeof config_platform_keys[0];

static const char *const url_schemes[] = {"sqlite:", "postgres://", "postgresql://", "redis://",
                                          "nats://", "s3://", "file:", "embedded:", NULL};

enum { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };
static const char *const src_names[] = {"default", "file", "env", "flag"};

typedef struct {
    config_key key;      /* copied: service kind keys are made at run time */
    char *section_owned; /* set when key.section was allocated here */
    char *value;
    int64_t num;
    int source;
} entry;

struct config {
    entry *v;
    size_t n, cap;
    /* the parse in progress */
    const char *file; /* for messages */
    FILE *f;
    int line;         /* physical line being parsed, 1-based */
    pl_error *err;
    int rc;
};

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

/* ---- value parsers ---------------------------------------------------- */

static int parse_i64(const char *s, int64_t *out, char **end)
{
    if (!isdigit((unsigned char)*s) && *s != '-')
        return PL_EINVAL;
    errno = 0;
    long long v = strtoll(s, end, 10);
    if (errno || *end == s)
        return PL_EINVAL;
    *out = v;
    return 0;
}

int config_parse_duration_ms(const char *s, int64_t *out)
{
    char *end;
    int64_t v;
    if (parse_i64(s, &v, &end) || v < 0)
        return PL_EINVAL;
    static const struct { const char *unit; int64_t ms; } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > INT64_MAX / units[i].ms)
                return PL_EINVAL;
            *out = v * units[i].ms;
            return 0;
        }
    }
    return PL_EINVAL;
}

int config_parse_size(const char *s, int64_t *out)
{
    char *end;
    int64_t v;
    if (parse_i64(s, &v, &end) || v < 0)
        return PL_EINVAL;
    static const struct { const char *unit; int64_t mul; } units[] = {
        {"", 1}, {"B", 1}, {"k", 1024}, {"K", 1024}, {"KiB", 1024}, {"M", 1 << 20},
        {"MiB", 1 << 20}, {"G", 1 << 30}, {"GiB", 1 << 30}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > INT64_MAX / units[i].mul)
                return PL_EINVAL;
            *out = v * units[i].mul;
            return 0;
        }
    }
    return PL_EINVAL;
}

int config_parse_listen(const char *s, char *host, size_t hostsz, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return PL_EINVAL;
    size_t hl = (size_t)(colon - s);
    if (hl >= hostsz)
        return PL_EINVAL;
    char *end;
    int64_t p;
    if (parse_i64(colon + 1, &p, &end) || *end || p < 0 || p > 65535)
        return PL_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_value(const config_key *k, const char *s, int64_t *num, pl_error *err, const char *where)
{
    char *end;
    int rc = 0;
    const char *want = "";
    switch (k->type) {
    case CFG_STRING:
        return 0;
    case CFG_INT:
        rc = parse_i64(s, num, &end);
        if (!rc && *end)
            rc = PL_EINVAL;
        want = "an integer";
        break;
    case CFG_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on") || !strcmp(s, "1"))
            *num = 1;
        else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off") || !strcmp(s, "0"))
            *num = 0;
        else
            rc = PL_EINVAL;
        want = "true or false";
        break;
    case CFG_DURATION:
        rc = config_parse_duration_ms(s, num);
        want = "a duration such as 500ms, 30s, 15m or 2h";
        break;
    case CFG_SIZE:
        rc = config_parse_size(s, num);
        want = "a size such as 4096, 64KiB or 1MiB";
        break;
    case CFG_URL:
        rc = PL_EINVAL;
        if (!*s)
            rc = 0;
        for (int i = 0; url_schemes[i] && rc; i++)
            if (strncmp(s, url_schemes[i], strlen(url_schemes[i])) == 0)
                rc = 0;
        want = "an engine URL (sqlite:, postgres://, redis://, nats://, s3://, file:) or empty";
        break;
    case CFG_LISTEN: {
        char host[256];
        int port;
        rc = config_parse_listen(s, host, sizeof host, &port);
        want = "host:port";
        break;
    }
    case CFG_LEVEL:
        *num = log_level_parse(s);
        rc = *num < 0 ? PL_EINVAL : 0;
        want = "one of debug, info, warn, error, off";
        break;
    }
    if (!rc && (k->min || k->max) && k->type != CFG_BOOL && (*num < k->min || *num > k->max))
        return err_set(err, PL_ECONFIG, k->key, "%s: %s.%s = \"%s\" is out of range [%lld, %lld]", where,
                       k->section, k->key, s, (long long)k->min, (long long)k->max);
    if (rc)
        return err_set(err, PL_ECONFIG, k->key, "%s: %s.%s = \"%s\" is not valid: expected %s", where,
                       k->section, k->key, s, want);
    return 0;
}

/* ---- the table ---------------------------------------------------------- */

static void add_key(config *c, const config_key *k, char *section_owned)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
        if (!c->v)
            abort();
    }
    entry *e = &c->v[c->n++];
    e->key = *k;
    e->section_owned = section_owned;
    e->value = xstrdup(k->def);
    e->num = 0;
    e->source = SRC_DEFAULT;
    pl_error err;
    if (parse_value(k, k->def, &e->num, &err, "default")) {
        fprintf(stderr, "pulse: bad built-in default: %s\n", err.msg);
        abort();
    }
}

config *config_create(const config_key *const *tables, const size_t *counts, size_t ntables)
{
    config *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    for (size_t t = 0; t < ntables; t++)
        for (size_t i = 0; i < counts[t]; i++)
            add_key(c, &tables[t][i], NULL);
    return c;
}

void config_add_service(config *c, const char *service)
{
    char section[128];
    snprintf(section, sizeof section, "service.%s", service);
    for (int i = 0; config_store_kinds[i]; i++) {
        char *owned = xstrdup(section);
        config_key k = {owned, config_store_kinds[i], CFG_URL, "", 0, 0,
                        "engine of this service's store of this kind; empty: [defaults]"};
        add_key(c, &k, owned);
    }
}

void config_destroy(config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].value);
        free(c->v[i].section_owned);
    }
    free(c->v);
    free(c);
}

static entry *find(const config *c, const char *section, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].key.section, section) == 0 && strcmp(c->v[i].key.key, key) == 0)
            return &c->v[i];
    return NULL;
}

static int set_from(config *c, const char *section, const char *key, const char *value, int source,
                    const char *where, pl_error *err)
{
    entry *e = find(c, section, key);
    if (!e)
        return err_set(err, PL_ECONFIG, key, "%s: unknown key %s.%s", where, section, key);
    int64_t num = 0;
    int rc = parse_value(&e->key, value, &num, err, where);
    if (rc)
        return rc;
    free(e->value);
    e->value = xstrdup(value);
    e->num = num;
    e->source = source;
    return 0;
}

int config_set(config *c, const char *section, const char *key, const char *value, pl_error *err)
{
    return set_from(c, section, key, value, SRC_FLAG, "command line", err);
}

/* inih (as Debian builds it) passes no line numbers to the handler and
 * silently splits a line longer than its buffer into several lines, the tail
 * parsed as a line of its own. Reading through this function keeps the
 * physical line number for messages and turns such lines (and NUL bytes,
 * which would desynchronise the count) into errors. */
static char *read_line(char *buf, int size, void *stream)
{
    config *c = stream;
    if (c->rc)
        return NULL; /* stop at the first error */
    char *s = fgets(buf, size, c->f);
    if (!s)
        return NULL;
    c->line++;
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '\n')
        return s;
    if (n + 1 < (size_t)size) {
        if (feof(c->f))
            return s; /* last line without a newline */
        c->rc = err_set(c->err, PL_ECONFIG, "config", "%s:%d: NUL byte in the line", c->file, c->line);
        return NULL;
    }
    int next = getc(c->f); /* the buffer is full: is the line complete? */
    if (next == '\n' || next == EOF)
        return s;
    ungetc(next, c->f);
    c->rc = err_set(c->err, PL_ECONFIG, "config", "%s:%d: line longer than %d characters", c->file, c->line,
                    size - 1);
    return NULL;
}

static int on_ini_value(void *ud, const char *section, const char *name, const char *value)
{
    config *c = ud;
    if (c->rc)
        return 0; /* keep the first error */
    char where[PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:%d", c->file, c->line);
    if (!*section)
        c->rc = err_set(c->err, PL_ECONFIG, name, "%s: key \"%s\" outside of any [section]", where, name);
    else
        c->rc = set_from(c, section, name, value, SRC_FILE, where, c->err);
    return c->rc == 0;
}

int config_load_file(config *c, const char *path, pl_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, PL_ECONFIG, "config", "cannot open %s: %s", path, strerror(errno));
    pl_error local;
    c->file = path;
    c->f = f;
    c->line = 0;
    c->err = err ? err : &local;
    c->rc = 0;
    int line = ini_parse_stream(read_line, c, on_ini_value, c);
    fclose(f);
    c->f = NULL;
    if (c->rc)
        return c->rc;
    if (line != 0)
        return err_set(err, PL_ECONFIG, "config", "%s:%d: syntax error", path, line);
    return 0;
}

/* "service.identity" + "argon2_t_cost" -> "PULSE_SERVICE_IDENTITY_ARGON2_T_COST" */
static void env_name(const config_key *k, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "PULSE_%s_%s", k->section, k->key);
    for (size_t i = 0; i < n && i < size; i++)
        out[i] = out[i] == '.' || out[i] == '-' ? '_' : (char)toupper((unsigned char)out[i]);
}

int config_load_env(config *c, char **envp, pl_error *err)
{
    for (char **ep = envp; ep && *ep; ep++) {
        if (strncmp(*ep, "PULSE_", 6) != 0)
            continue;
        const char *eq = strchr(*ep, '=');
        if (!eq)
            continue;
        size_t nl = (size_t)(eq - *ep);
        entry *hit = NULL;
        for (size_t i = 0; i < c->n && !hit; i++) {
            char name[256];
            env_name(&c->v[i].key, name, sizeof name);
            if (strlen(name) == nl && strncmp(name, *ep, nl) == 0)
                hit = &c->v[i];
        }
        if (!hit) {
            if (strncmp(*ep, "PULSE_TEST_", 11) == 0) /* the test harnesses' own settings */
                continue;
            return err_set(err, PL_ECONFIG, "env", "environment variable %.*s names no configuration key"
                           " (see pulse config)", (int)nl, *ep);
        }
        char where[300];
        snprintf(where, sizeof where, "environment %.*s", (int)nl, *ep);
        int rc = set_from(c, hit->key.section, hit->key.key, eq + 1, SRC_ENV, where, err);
        if (rc)
            return rc;
    }
    return 0;
}

static entry *must_find(const config *c, const char *section, const char *key)
{
    entry *e = find(c, section, key);
    if (!e) {
        fprintf(stderr, "pulse: internal error: undeclared config key %s.%s\n", section, key);
        abort();
    }
    return e;
}

const char *config_str(const config *c, const char *section, const char *key)
{
    return must_find(c, section, key)->value;
}

int64_t config_int(const config *c, const char *section, const char *key)
{
    return must_find(c, section, key)->num;
}

bool config_bool(const config *c, const char *section, const char *key)
{
    return must_find(c, section, key)->num != 0;
}

const char *config_store_url(const config *c, const char *service, const char *kind)
{
    char section[128];
    snprintf(section, sizeof section, "service.%s", service);
    entry *e = find(c, section, kind);
    if (e && *e->value)
        return e->value;
    return config_str(c, "defaults", kind);
}

/* "postgres://u:secret@h/db" -> "postgres://u:***@h/db": dumps never show passwords. */
static void mask_password(const char *in, char *out, size_t size)
{
    const char *scheme = strstr(in, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    if (at && colon && colon < at)
        snprintf(out, size, "%.*s:***%s", (int)(colon - in), in, at);
    else
        snprintf(out, size, "%s", in);
}

void config_dump(const config *c, void (*line)(void *ud, const char *text), void *ud)
{
    for (size_t i = 0; i < c->n; i++) {
        char buf[1024], value[512];
        const entry *e = &c->v[i];
        mask_password(e->value, value, sizeof value);
        snprintf(buf, sizeof buf, "%s.%s = %s  ; %s; %s", e->key.section, e->key.key, value, src_names[e->source],
                 e->key.help);
        line(ud, buf);
    }
}
