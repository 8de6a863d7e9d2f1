/* core_config.c - unit tests of configuration loading (src/core/config.c):
 * defaults, file, environment and flags in that order; clear errors naming
 * the key; the value parsers. */
#include "core/config.h"
#include "core/log.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const config_key test_keys[] = {
    {"test", "count", CFG_INT, "3", 0, 0, "an unbounded integer"},
    {"test", "flag", CFG_BOOL, "false", 0, 0, "a boolean"},
    {"test", "wait", CFG_DURATION, "1s", 0, 0, "a duration"},
    {"test", "size", CFG_SIZE, "1KiB", 0, 0, "a size"},
    {"test", "url", CFG_URL, "", 0, 0, "an engine url"},
    {"test", "addr", CFG_LISTEN, "127.0.0.1:1", 0, 0, "an address"},
    {"test", "level", CFG_LEVEL, "warn", 0, 0, "a level"},
    {"test", "name", CFG_STRING, "pulse", 0, 0, "a string"},
};

static config *make_config(void)
{
    const config_key *tables[] = {config_platform_keys, test_keys};
    const size_t counts[] = {config_platform_nkeys, sizeof test_keys / sizeof test_keys[0]};
    return config_create(tables, counts, 2);
}

static char cfg_path[64];

/* Writes text to a fresh temporary file; its path is in cfg_path. */
static const char *write_file(const char *text)
{
    snprintf(cfg_path, sizeof cfg_path, "/tmp/pulse-config-test-XXXXXX");
    int fd = mkstemp(cfg_path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return cfg_path;
}

static void cleanup(void)
{
    if (cfg_path[0])
        unlink(cfg_path);
    log_set_fd(2);
}

static void quiet(void)
{
    log_set_level(LOG_OFF); /* unknown PULSE_* variables are warned about */
}

TestSuite(config, .init = quiet, .fini = cleanup);

/* ---- loading ---------------------------------------------------------------- */

Test(config, defaults_need_no_file)
{
    config *c = make_config();
    cr_assert_str_eq(config_str(c, "server", "listen"), "127.0.0.1:8080");
    cr_assert_str_eq(config_str(c, "server", "data"), "./data");
    cr_assert_eq(config_int(c, "server", "threads"), 4);
    cr_assert_eq(config_int(c, "server", "body_limit"), 1 << 20);
    cr_assert_eq(config_int(c, "server", "header_limit"), 16 << 10);
    cr_assert_eq(config_int(c, "server", "idle_timeout"), 30000);
    cr_assert_eq(config_bool(c, "server", "demo"), false);
    cr_assert_eq(config_bool(c, "log", "access"), true);
    cr_assert_eq(config_int(c, "log", "level"), LOG_INFO);
    cr_assert_str_eq(config_str(c, "defaults", "sql"), "");
    cr_assert_eq(config_int(c, "test", "wait"), 1000);
    cr_assert_eq(config_int(c, "test", "size"), 1024);
    cr_assert_eq(config_int(c, "test", "level"), LOG_WARN);
    config_destroy(c);
    config_destroy(NULL);
}

Test(config, file_values_are_read)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("; a comment\n"
                                  "# another\n"
                                  "[server]\n"
                                  "listen = 0.0.0.0:9000\n"
                                  "threads=8\n"
                                  "body_limit = 2MiB   ; inline comment\n"
                                  "idle_timeout = 45s\n"
                                  "demo = yes\n"
                                  "\n"
                                  "[log]\n"
                                  "level = debug\n"
                                  "[test]\n"
                                  "name = hello world\n"
                                  "count = -42\n");
    int rc = config_load_file(c, path, &err);
    cr_assert_eq(rc, 0, "load failed: %s", err.msg);
    cr_assert_str_eq(config_str(c, "server", "listen"), "0.0.0.0:9000");
    cr_assert_eq(config_int(c, "server", "threads"), 8);
    cr_assert_eq(config_int(c, "server", "body_limit"), 2 << 20);
    cr_assert_eq(config_int(c, "server", "idle_timeout"), 45000);
    cr_assert_eq(config_bool(c, "server", "demo"), true);
    cr_assert_eq(config_int(c, "log", "level"), LOG_DEBUG);
    cr_assert_str_eq(config_str(c, "test", "name"), "hello world");
    cr_assert_eq(config_int(c, "test", "count"), -42);
    /* untouched keys keep their defaults */
    cr_assert_str_eq(config_str(c, "server", "data"), "./data");
    config_destroy(c);
}

static void collect(void *ud, const char *text)
{
    char *buf = ud;
    strncat(buf, text, 16383 - strlen(buf));
    strncat(buf, "\n", 16383 - strlen(buf));
}

static int dump_has(const config *c, const char *needle)
{
    static char buf[16384];
    buf[0] = '\0';
    config_dump(c, collect, buf);
    return strstr(buf, needle) != NULL;
}

Test(config, env_beats_file_and_flags_beat_env)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("[server]\nthreads = 8\ndata = /from/file\nlisten = 10.0.0.1:1\n");
    cr_assert_eq(config_load_file(c, path, &err), 0, "%s", err.msg);
    char e0[] = "HOME=/root", e1[] = "PULSE_SERVER_THREADS=16", e2[] = "PULSE_SERVER_DATA=/from/env",
         e3[] = "PULSE_TEST_X=1", e5[] = "PULSE_NOEQUALS";
    char *env[] = {e0, e1, e2, e3, e5, NULL};
    cr_assert_eq(config_load_env(c, env, &err), 0, "%s", err.msg);
    cr_assert_eq(config_int(c, "server", "threads"), 16, "env must beat the file");
    cr_assert_str_eq(config_str(c, "server", "data"), "/from/env");
    cr_assert_str_eq(config_str(c, "server", "listen"), "10.0.0.1:1", "the file still beats the default");
    cr_assert(dump_has(c, "server.threads = 16  ; env"));
    cr_assert(dump_has(c, "server.listen = 10.0.0.1:1  ; file"));
    cr_assert(dump_has(c, "server.connection_limit = 10000  ; default"));

    cr_assert_eq(config_set(c, "server", "threads", "32", &err), 0, "%s", err.msg);
    cr_assert_eq(config_int(c, "server", "threads"), 32, "a flag must beat the env");
    cr_assert_str_eq(config_str(c, "server", "data"), "/from/env");
    cr_assert(dump_has(c, "server.threads = 32  ; flag"));
    config_destroy(c);
}

Test(config, env_name_of_dotted_sections)
{
    config *c = make_config();
    config_add_service(c, "identity");
    pl_error err = {0};
    char e0[] = "PULSE_SERVICE_IDENTITY_KV=redis://cache:6379/0", e1[] = "PULSE_LOG_LEVEL=error";
    char *env[] = {e0, e1, NULL};
    cr_assert_eq(config_load_env(c, env, &err), 0, "%s", err.msg);
    cr_assert_str_eq(config_store_url(c, "identity", "kv"), "redis://cache:6379/0");
    cr_assert_eq(config_int(c, "log", "level"), LOG_ERROR);
    config_destroy(c);
}

Test(config, unknown_env_variable_is_an_error_naming_it)
{
    config *c = make_config();
    pl_error err = {0};
    char e0[] = "PULSE_SERVER_THREADS=8", e1[] = "PULSE_SERVR_THREADS=16";
    char *env[] = {e0, e1, NULL};
    cr_assert_eq(config_load_env(c, env, &err), PL_ECONFIG);
    cr_assert_not_null(strstr(err.msg, "PULSE_SERVR_THREADS"), "%s", err.msg);
    config_destroy(c);
}

Test(config, bad_env_value_names_the_variable_and_key)
{
    config *c = make_config();
    pl_error err = {0};
    char e0[] = "PULSE_SERVER_THREADS=lots";
    char *env[] = {e0, NULL};
    cr_assert_eq(config_load_env(c, env, &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "threads");
    cr_assert_not_null(strstr(err.msg, "PULSE_SERVER_THREADS"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "lots"), "%s", err.msg);
    cr_assert_eq(config_int(c, "server", "threads"), 4, "a rejected value must not be applied");
    config_destroy(c);
}

Test(config, unknown_key_in_file_names_key_and_line)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("[server]\nthreads = 2\nbogus_key = 1\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "bogus_key");
    cr_assert_not_null(strstr(err.msg, "bogus_key"), "%s", err.msg);
    char want[128];
    snprintf(want, sizeof want, "%s:3:", path);
    cr_assert_not_null(strstr(err.msg, want), "message does not name line 3: %s", err.msg);
    config_destroy(c);
}

Test(config, unknown_section_is_an_error)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("[nope]\nthreads = 2\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    cr_assert_not_null(strstr(err.msg, "nope.threads"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ":2:"), "%s", err.msg);
    config_destroy(c);
}

Test(config, error_line_is_the_offending_line_after_a_syntax_error)
{
    config *c = make_config();
    pl_error err = {0};
    /* line 2 is malformed; line 4 names an unknown key: the message must
     * pair the unknown key with line 4, not with the syntax error's line */
    const char *path = write_file("[server]\nthis line has no equals sign\nthreads = 2\nmystery = 1\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    if (strstr(err.msg, "mystery"))
        cr_assert_not_null(strstr(err.msg, ":4:"), "unknown key reported with the wrong line: %s", err.msg);
    else
        cr_assert_not_null(strstr(err.msg, ":2:"), "syntax error reported with the wrong line: %s", err.msg);
    config_destroy(c);
}

Test(config, key_outside_a_section)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("threads = 2\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "threads");
    cr_assert_not_null(strstr(err.msg, ":1:"), "%s", err.msg);
    config_destroy(c);
}

Test(config, syntax_error_names_the_line)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("[server]\nthreads = 2\n[broken\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    cr_assert_not_null(strstr(err.msg, ":3:"), "%s", err.msg);
    config_destroy(c);
}

Test(config, bad_value_in_file_names_key_value_and_line)
{
    config *c = make_config();
    pl_error err = {0};
    const char *path = write_file("[server]\n\nidle_timeout = 10 minutes\n");
    cr_assert_eq(config_load_file(c, path, &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "idle_timeout");
    cr_assert_not_null(strstr(err.msg, "server.idle_timeout"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "10 minutes"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ":3:"), "%s", err.msg);
    config_destroy(c);
}

Test(config, overlong_line_is_an_error_not_a_split)
{
    config *c = make_config();
    pl_error err = {0};
    /* inih's buffer holds 199 characters; the tail must not become a line */
    char text[1024];
    char path[400];
    memset(path, 'd', 300);
    path[300] = '\0';
    snprintf(text, sizeof text, "[server]\ndata = /%s\nthreads = 2\n", path);
    const char *file = write_file(text);
    cr_assert_eq(config_load_file(c, file, &err), PL_ECONFIG);
    cr_assert_not_null(strstr(err.msg, ":2:"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "longer"), "%s", err.msg);
    cr_assert_str_eq(config_str(c, "server", "data"), "./data", "a cut value was applied");
    config_destroy(c);
}

Test(config, longest_line_and_no_final_newline)
{
    config *c = make_config();
    pl_error err = {0};
    char text[1024], val[256];
    size_t vl = 199 - strlen("data = ");
    memset(val, 'v', vl);
    val[vl] = '\0';
    snprintf(text, sizeof text, "[server]\ndata = %s\nthreads = 3", val); /* no newline at the end */
    cr_assert_eq(config_load_file(c, write_file(text), &err), 0, "%s", err.msg);
    cr_assert_str_eq(config_str(c, "server", "data"), val);
    cr_assert_eq(config_int(c, "server", "threads"), 3);
    config_destroy(c);
}

Test(config, missing_file)
{
    config *c = make_config();
    pl_error err = {0};
    cr_assert_eq(config_load_file(c, "/nonexistent/pulse.ini", &err), PL_ECONFIG);
    cr_assert_not_null(strstr(err.msg, "/nonexistent/pulse.ini"), "%s", err.msg);
    cr_assert_eq(config_load_file(c, "/nonexistent/pulse.ini", NULL), PL_ECONFIG);
    config_destroy(c);
}

Test(config, bad_values_of_each_type_name_the_key)
{
    static const struct { const char *section, *key, *value; } bad[] = {
        {"test", "count", "twelve"},
        {"test", "count", "12abc"},
        {"test", "count", ""},
        {"test", "count", "99999999999999999999"},
        {"test", "flag", "maybe"},
        {"test", "flag", "TRUE "},
        {"test", "wait", "10x"},
        {"test", "wait", "-1s"},
        {"test", "size", "lots"},
        {"test", "size", "1.5MiB"},
        {"test", "url", "http://example.com"},
        {"test", "url", "mysql://x"},
        {"test", "addr", "nohost"},
        {"test", "addr", "host:70000"},
        {"test", "level", "loud"},
        {"server", "threads", "0"},          /* below min */
        {"server", "threads", "257"},        /* above max */
        {"server", "body_limit", "512"},     /* below 1024 */
        {"server", "idle_timeout", "2h"},    /* above 1h */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config *c = make_config();
        pl_error err = {0};
        int rc = config_set(c, bad[i].section, bad[i].key, bad[i].value, &err);
        cr_assert_eq(rc, PL_ECONFIG, "%s.%s = \"%s\" was accepted", bad[i].section, bad[i].key, bad[i].value);
        cr_assert_str_eq(err.field, bad[i].key);
        char full[96];
        snprintf(full, sizeof full, "%s.%s", bad[i].section, bad[i].key);
        cr_assert_not_null(strstr(err.msg, full), "message does not name %s: %s", full, err.msg);
        config_destroy(c);
    }
}

Test(config, good_values_of_each_type)
{
    config *c = make_config();
    pl_error err = {0};
    static const char *const trues[] = {"true", "yes", "on", "1"}, *const falses[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(config_set(c, "test", "flag", trues[i], &err), 0);
        cr_assert(config_bool(c, "test", "flag"), "%s", trues[i]);
        cr_assert_eq(config_set(c, "test", "flag", falses[i], &err), 0);
        cr_assert_not(config_bool(c, "test", "flag"), "%s", falses[i]);
    }
    static const char *const urls[] = {"", "sqlite:", "sqlite:/tmp/x.db", "postgres://u@h/db", "postgresql://h",
                                       "redis://h:6379", "nats://h:4222", "s3://bucket", "file:/srv/blobs"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
        cr_assert_eq(config_set(c, "test", "url", urls[i], &err), 0, "%s: %s", urls[i], err.msg);
    cr_assert_eq(config_set(c, "server", "threads", "256", &err), 0, "the max itself is allowed");
    cr_assert_eq(config_set(c, "server", "threads", "1", &err), 0, "the min itself is allowed");
    cr_assert_eq(config_set(c, "test", "count", "-9223372036854775808", &err), 0);
    cr_assert_eq(config_int(c, "test", "count"), INT64_MIN);
    config_destroy(c);
}

Test(config, unknown_key_via_set)
{
    config *c = make_config();
    pl_error err = {0};
    cr_assert_eq(config_set(c, "server", "nope", "1", &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "nope");
    cr_assert_not_null(strstr(err.msg, "server.nope"), "%s", err.msg);
    config_destroy(c);
}

Test(config, service_store_urls_fall_back_to_defaults)
{
    config *c = make_config();
    config_add_service(c, "identity");
    config_add_service(c, "courses");
    pl_error err = {0};
    cr_assert_str_eq(config_store_url(c, "identity", "sql"), "");
    cr_assert_eq(config_set(c, "defaults", "sql", "postgres://db/pulse", &err), 0, "%s", err.msg);
    cr_assert_str_eq(config_store_url(c, "identity", "sql"), "postgres://db/pulse");
    cr_assert_eq(config_set(c, "service.identity", "sql", "sqlite:/tmp/identity.db", &err), 0, "%s", err.msg);
    cr_assert_str_eq(config_store_url(c, "identity", "sql"), "sqlite:/tmp/identity.db");
    cr_assert_str_eq(config_store_url(c, "courses", "sql"), "postgres://db/pulse", "other services keep the default");
    cr_assert_str_eq(config_store_url(c, "unregistered", "sql"), "postgres://db/pulse");
    /* every store kind has a key */
    for (int i = 0; config_store_kinds[i]; i++)
        cr_assert_eq(config_set(c, "service.courses", config_store_kinds[i], "", &err), 0, "%s",
                     config_store_kinds[i]);
    cr_assert_eq(config_set(c, "service.identity", "kv", "ftp://nope", &err), PL_ECONFIG);
    cr_assert_str_eq(err.field, "kv");
    cr_assert_not_null(strstr(err.msg, "service.identity.kv"), "%s", err.msg);
    cr_assert_eq(config_set(c, "service.identity", "cache", "", &err), PL_ECONFIG, "not a store kind");
    config_destroy(c);
}

Test(config, service_keys_from_a_file)
{
    config *c = make_config();
    config_add_service(c, "identity");
    pl_error err = {0};
    const char *path = write_file("[defaults]\nkv = redis://r:6379\n[service.identity]\nsql = sqlite:/srv/id.db\n");
    cr_assert_eq(config_load_file(c, path, &err), 0, "%s", err.msg);
    cr_assert_str_eq(config_store_url(c, "identity", "sql"), "sqlite:/srv/id.db");
    cr_assert_str_eq(config_store_url(c, "identity", "kv"), "redis://r:6379");
    config_destroy(c);
}

/* ---- value parsers ---------------------------------------------------------------- */

Test(config_parse, durations)
{
    static const struct { const char *in; int64_t ms; } ok[] = {
        {"250ms", 250}, {"30s", 30000}, {"15m", 900000}, {"2h", 7200000}, {"1d", 86400000},
        {"45", 45000}, {"0", 0}, {"0ms", 0}, {"007s", 7000},
        {"106751991167d", 106751991167LL * 86400000}, /* the largest whole number of days */
        {"9223372036854775807ms", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        cr_assert_eq(config_parse_duration_ms(ok[i].in, &v), 0, "\"%s\" rejected", ok[i].in);
        cr_assert_eq(v, ok[i].ms, "\"%s\" -> %lld", ok[i].in, (long long)v);
    }
    static const char *const bad[] = {"", "s", "ms", "10x", "1.5s", "-1s", "-5", " 5s", "5s ", "5 s", "5S",
                                      "+5s", "0x10", "5sec", "5mss", "106751991168d", "9223372036854775807s",
                                      "9223372036854775808ms", "99999999999999999999", "5\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 12345;
        cr_assert_eq(config_parse_duration_ms(bad[i], &v), PL_EINVAL, "\"%s\" accepted as %lld", bad[i],
                     (long long)v);
        cr_assert_eq(v, 12345, "a rejected value must not be written");
    }
}

Test(config_parse, sizes)
{
    static const struct { const char *in; int64_t n; } ok[] = {
        {"512", 512}, {"0", 0}, {"10B", 10}, {"64KiB", 65536}, {"1k", 1024}, {"1K", 1024},
        {"1MiB", 1 << 20}, {"3M", 3 << 20}, {"2GiB", 2LL << 30}, {"1G", 1LL << 30},
        {"8589934591G", 8589934591LL << 30}, /* the largest whole number of GiB */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        cr_assert_eq(config_parse_size(ok[i].in, &v), 0, "\"%s\" rejected", ok[i].in);
        cr_assert_eq(v, ok[i].n, "\"%s\" -> %lld", ok[i].in, (long long)v);
    }
    static const char *const bad[] = {"", "KiB", "1.5MiB", "1MB", "1 MiB", "-1", "-1K", "1kib", "1T", "1KiBB",
                                      "8589934592G", "9223372036854775808", "12 ", "lots"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 777;
        cr_assert_eq(config_parse_size(bad[i], &v), PL_EINVAL, "\"%s\" accepted as %lld", bad[i], (long long)v);
        cr_assert_eq(v, 777);
    }
}

Test(config_parse, listen_addresses)
{
    char host[64];
    int port = -1;
    cr_assert_eq(config_parse_listen("127.0.0.1:8080", host, sizeof host, &port), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 8080);
    cr_assert_eq(config_parse_listen("[::1]:443", host, sizeof host, &port), 0);
    cr_assert_str_eq(host, "[::1]");
    cr_assert_eq(port, 443);
    cr_assert_eq(config_parse_listen("localhost:0", host, sizeof host, &port), 0);
    cr_assert_eq(port, 0);
    cr_assert_eq(config_parse_listen("h:65535", host, sizeof host, &port), 0);
    cr_assert_eq(port, 65535);

    static const char *const bad[] = {"", ":80", "host", "host:", "host:65536", "host:-1", "host:80x", "host: 80",
                                      "host:+80", "host:99999999999999999999", "host:0x50"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        port = -7;
        cr_assert_eq(config_parse_listen(bad[i], host, sizeof host, &port), PL_EINVAL, "\"%s\" accepted", bad[i]);
        cr_assert_eq(port, -7);
    }
    /* a host longer than the caller's buffer is an error, not a truncation */
    char small[8];
    cr_assert_eq(config_parse_listen("verylonghostname:80", small, sizeof small, &port), PL_EINVAL);
    cr_assert_eq(config_parse_listen("1234567:80", small, sizeof small, &port), 0);
    cr_assert_str_eq(small, "1234567");
}
