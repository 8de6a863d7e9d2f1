/* json.c - jansson helpers and the field validator. */
#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        size_t len;
        unsigned cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) < len)
            return false;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += len;
    }
    return true;
}

char *json_compact(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        abort();
    return s;
}

void jv_init(jv *v, json_t *obj)
{
    v->obj = obj;
    v->fields = json_object();
}

void jv_free(jv *v)
{
    json_decref(v->fields);
    v->fields = NULL;
}

void jv_fail(jv *v, const char *field, const char *message)
{
    if (!json_object_get(v->fields, field)) /* keep the first problem per field */
        json_object_set_new(v->fields, field, json_string(message));
}

bool jv_ok(const jv *v) { return json_object_size(v->fields) == 0; }

json_t *jv_take_fields(jv *v)
{
    if (jv_ok(v))
        return NULL;
    json_t *f = v->fields;
    v->fields = json_object();
    return f;
}

void jv_only(jv *v, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach(v->obj, key, val) {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known)
            jv_fail(v, key, "unknown field");
    }
}

const char *jv_str(jv *v, const char *key, bool required, size_t min, size_t max)
{
    json_t *x = json_object_get(v->obj, key);
    if (!x || json_is_null(x)) {
        if (required)
            jv_fail(v, key, "is required");
        return NULL;
    }
    if (!json_is_string(x)) {
        jv_fail(v, key, "must be a string");
        return NULL;
    }
    const char *s = json_string_value(x);
    if (strlen(s) != json_string_length(x)) {
        jv_fail(v, key, "must not contain NUL characters");
        return NULL;
    }
    size_t n = utf8_len(s);
    if (n < min || n > max) {
        char msg[96];
        if (min == max)
            snprintf(msg, sizeof msg, "must be %zu characters", min);
        else
            snprintf(msg, sizeof msg, "must be %zu to %zu characters", min, max);
        jv_fail(v, key, msg);
        return NULL;
    }
    return s;
}

bool jv_int(jv *v, const char *key, bool required, long long min, long long max, long long *out)
{
    json_t *x = json_object_get(v->obj, key);
    if (!x || json_is_null(x)) {
        if (required)
            jv_fail(v, key, "is required");
        return false;
    }
    if (!json_is_integer(x)) {
        jv_fail(v, key, "must be an integer");
        return false;
    }
    long long n = json_integer_value(x);
    if (n < min || n > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be between %lld and %lld", min, max);
        jv_fail(v, key, msg);
        return false;
    }
    *out = n;
    return true;
}

bool jv_bool(jv *v, const char *key, bool required, bool *out)
{
    json_t *x = json_object_get(v->obj, key);
    if (!x || json_is_null(x)) {
        if (required)
            jv_fail(v, key, "is required");
        return false;
    }
    if (!json_is_boolean(x)) {
        jv_fail(v, key, "must be true or false");
        return false;
    }
    *out = json_is_true(x);
    return true;
}
