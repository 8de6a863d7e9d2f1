/*
 * json.c - libFuzzer driver for request-body validation (src/core/json.c):
 * utf8_valid is checked against jansson's own UTF-8 validation, utf8_len
 * against an independent count, and any body that parses as an object goes
 * through the jv_* validators the way a handler uses them.
 */
#include "core/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Code points of valid UTF-8, counted by decoding lead bytes. */
static size_t count_code_points(const unsigned char *s, size_t n)
{
    size_t cps = 0;
    for (size_t i = 0; i < n; cps++) {
        unsigned char c = s[i];
        i += c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    }
    return cps;
}

static void check_utf8(const uint8_t *data, size_t size)
{
    bool ours = utf8_valid((const char *)data, size);
    /* jansson accepts NUL in json_stringn; utf8_valid, by contract, does not */
    json_t *js = json_stringn((const char *)data, size);
    bool theirs = js != NULL && memchr(data, 0, size) == NULL;
    json_decref(js);
    if (ours != theirs)
        abort();
    if (!ours)
        return;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    if (utf8_len(s) != count_code_points(data, size) || utf8_len(s) > size)
        abort();
    free(s);
}

static void validate(json_t *body)
{
    static const char *const allowed[] = {"email", "username", "password", "display_name", "age", "admin", NULL};
    jv v;
    jv_init(&v, body);
    jv_only(&v, allowed);
    const char *email = jv_str(&v, "email", true, 3, 254);
    const char *username = jv_str(&v, "username", true, 3, 30);
    const char *name = jv_str(&v, "display_name", false, 1, 80);
    (void)jv_str(&v, "password", true, 0, 0);
    long long age = -1;
    bool has_age = jv_int(&v, "age", false, 0, 150, &age);
    bool admin = false;
    (void)jv_bool(&v, "admin", false, &admin);

    if (email && (utf8_len(email) < 3 || utf8_len(email) > 254))
        abort();
    if (username && (utf8_len(username) < 3 || utf8_len(username) > 30))
        abort();
    if (name && (utf8_len(name) < 1 || utf8_len(name) > 80))
        abort();
    if (has_age && (age < 0 || age > 150))
        abort();

    bool ok = jv_ok(&v);
    json_t *fields = jv_take_fields(&v);
    if (ok != (fields == NULL))
        abort();
    if (fields) {
        char *text = json_compact(fields); /* what the error response carries */
        if (!utf8_valid(text, strlen(text)))
            abort();
        free(text);
        json_decref(fields);
    }
    jv_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_utf8(data, size);
    json_error_t je;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (!body)
        return 0;
    if (json_is_object(body))
        validate(body);
    char *text = json_compact(body);
    free(text);
    json_decref(body);
    return 0;
}
