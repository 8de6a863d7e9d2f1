/*
 * json.h - helpers over jansson: typed getters and a request-body validator
 * that collects one message per offending field, so a client gets every
 * problem with its input in a single 400 response.
 */
#ifndef PULSE_CORE_JSON_H
#define PULSE_CORE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Number of UTF-8 code points in s (s must be valid UTF-8, as jansson ensures). */
size_t utf8_len(const char *s);

/* True when the n bytes at s are valid UTF-8 without NUL bytes. */
bool utf8_valid(const char *s, size_t n);

/* Compact serialisation; the caller frees the result with free(). */
char *json_compact(const json_t *v);

/* A validator: fields accumulates "field" -> "message" for every problem. */
typedef struct jv {
    json_t *obj;    /* borrowed: the body being validated */
    json_t *fields; /* owned until jv_take_fields or jv_free */
} jv;

void jv_init(jv *v, json_t *obj);
void jv_free(jv *v);
void jv_fail(jv *v, const char *field, const char *message);
bool jv_ok(const jv *v);
json_t *jv_take_fields(jv *v); /* new reference, or NULL when there were no errors */

/* Every key of the body must be in `allowed` (NULL-terminated). */
void jv_only(jv *v, const char *const *allowed);

/* A string field of min..max code points. Returns the value (borrowed from the
 * body), or NULL when absent (an error if required) or invalid. */
const char *jv_str(jv *v, const char *key, bool required, size_t min, size_t max);

/* An integer field within [min, max]; returns false when absent or invalid. */
bool jv_int(jv *v, const char *key, bool required, long long min, long long max, long long *out);

/* A boolean field; returns false when absent or invalid. */
bool jv_bool(jv *v, const char *key, bool required, bool *out);

#endif
