/* core_json.c - unit tests of the UTF-8 helpers and the request-body
 * validator (src/core/json.c). */
#include "core/json.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- utf8 ------------------------------------------------------------------- */

#define VALID(lit) utf8_valid((lit), sizeof(lit) - 1)

Test(utf8, valid_sequences)
{
    cr_assert(utf8_valid("", 0));
    cr_assert(VALID("plain ascii ~"));
    cr_assert(VALID("\xc2\x80"));                 /* U+0080, smallest 2-byte */
    cr_assert(VALID("\xdf\xbf"));                 /* U+07FF */
    cr_assert(VALID("\xe0\xa0\x80"));             /* U+0800, smallest 3-byte */
    cr_assert(VALID("\xed\x9f\xbf"));             /* U+D7FF, just below the surrogates */
    cr_assert(VALID("\xee\x80\x80"));             /* U+E000, just above */
    cr_assert(VALID("\xef\xbf\xbf"));             /* U+FFFF */
    cr_assert(VALID("\xf0\x90\x80\x80"));         /* U+10000, smallest 4-byte */
    cr_assert(VALID("\xf4\x8f\xbf\xbf"));         /* U+10FFFF, the last code point */
    cr_assert(VALID("Zoë Ångström 日本語 🎓"));
}

Test(utf8, invalid_sequences)
{
    cr_assert_not(VALID("\x80"), "lone continuation byte");
    cr_assert_not(VALID("a\xbf"), "lone continuation byte after ascii");
    cr_assert_not(VALID("\xc0\x80"), "overlong NUL");
    cr_assert_not(VALID("\xc1\xbf"), "overlong 2-byte");
    cr_assert_not(VALID("\xe0\x80\xaf"), "overlong 3-byte '/'");
    cr_assert_not(VALID("\xe0\x9f\xbf"), "overlong 3-byte U+07FF");
    cr_assert_not(VALID("\xf0\x80\x80\xaf"), "overlong 4-byte");
    cr_assert_not(VALID("\xf0\x8f\xbf\xbf"), "overlong 4-byte U+FFFF");
    cr_assert_not(VALID("\xed\xa0\x80"), "high surrogate U+D800");
    cr_assert_not(VALID("\xed\xbf\xbf"), "low surrogate U+DFFF");
    cr_assert_not(VALID("\xed\xa0\xbd\xed\xb8\x80"), "CESU-8 surrogate pair");
    cr_assert_not(VALID("\xf4\x90\x80\x80"), "U+110000 beyond Unicode");
    cr_assert_not(VALID("\xf5\x80\x80\x80"), "lead byte F5");
    cr_assert_not(VALID("\xf8\x88\x80\x80\x80"), "5-byte form");
    cr_assert_not(VALID("\xfe"), "FE");
    cr_assert_not(VALID("\xff"), "FF");
    cr_assert_not(VALID("\xc3"), "truncated 2-byte");
    cr_assert_not(VALID("ab\xe2\x82"), "truncated 3-byte");
    cr_assert_not(VALID("\xf0\x9f\x8e"), "truncated 4-byte");
    cr_assert_not(VALID("\xc3\x28"), "bad continuation");
    cr_assert_not(VALID("\xe2\x28\xa1"), "bad second of three");
    cr_assert_not(VALID("\xe2\x82\x28"), "bad third of three");
    cr_assert_not(VALID("a\0b"), "NUL byte");
    cr_assert_not(VALID("\xc3\x00"), "NUL as continuation");
}

Test(utf8, length_limit_is_respected)
{
    /* a valid sequence cut by n is invalid; bytes beyond n are never read */
    const char s[] = "\xe2\x82\xac\xff";
    cr_assert(utf8_valid(s, 3));
    cr_assert_not(utf8_valid(s, 2));
    cr_assert_not(utf8_valid(s, 4));
}

Test(utf8, length_in_code_points)
{
    cr_assert_eq(utf8_len(""), 0);
    cr_assert_eq(utf8_len("abc"), 3);
    cr_assert_eq(utf8_len("é"), 1);
    cr_assert_eq(utf8_len("日本語"), 3);
    cr_assert_eq(utf8_len("🎓x"), 2);
    cr_assert_eq(utf8_len("Zoë Ångström"), 12);
}

/* ---- validator ----------------------------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(v, "bad test JSON: %s", je.text);
    return v;
}

static const char *field_msg(json_t *fields, const char *key)
{
    return json_string_value(json_object_get(fields, key));
}

Test(jv, valid_body_has_no_fields)
{
    json_t *b = parse("{\"name\":\"Zoë\",\"age\":30,\"admin\":false}");
    jv v;
    jv_init(&v, b);
    static const char *const allowed[] = {"name", "age", "admin", NULL};
    jv_only(&v, allowed);
    cr_assert_str_eq(jv_str(&v, "name", true, 1, 3), "Zoë", "3 code points fit a max of 3 (5 bytes)");
    long long age = 0;
    cr_assert(jv_int(&v, "age", true, 0, 150, &age));
    cr_assert_eq(age, 30);
    bool admin = true;
    cr_assert(jv_bool(&v, "admin", true, &admin));
    cr_assert_eq(admin, false);
    cr_assert(jv_ok(&v));
    cr_assert_null(jv_take_fields(&v));
    jv_free(&v);
    json_decref(b);
}

Test(jv, required_missing_and_null)
{
    json_t *b = parse("{\"a\":null}");
    jv v;
    jv_init(&v, b);
    cr_assert_null(jv_str(&v, "a", true, 0, 10));
    cr_assert_null(jv_str(&v, "b", true, 0, 10));
    cr_assert_null(jv_str(&v, "c", false, 0, 10), "optional and absent");
    long long n = 5;
    cr_assert_not(jv_int(&v, "d", false, 0, 10, &n));
    cr_assert_eq(n, 5, "absent optional integer leaves *out alone");
    bool f;
    cr_assert_not(jv_bool(&v, "e", true, &f));
    json_t *fields = jv_take_fields(&v);
    cr_assert_not_null(fields);
    cr_assert_str_eq(field_msg(fields, "a"), "is required");
    cr_assert_str_eq(field_msg(fields, "b"), "is required");
    cr_assert_str_eq(field_msg(fields, "e"), "is required");
    cr_assert_null(json_object_get(fields, "c"));
    cr_assert_null(json_object_get(fields, "d"));
    cr_assert_eq(json_object_size(fields), 3);
    cr_assert(jv_ok(&v), "taking the fields leaves the validator empty");
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, wrong_types)
{
    json_t *b = parse("{\"s\":12,\"i\":\"12\",\"r\":1.5,\"b\":\"true\",\"o\":{},\"l\":[1]}");
    jv v;
    jv_init(&v, b);
    long long n;
    bool f;
    cr_assert_null(jv_str(&v, "s", true, 0, 10));
    cr_assert_not(jv_int(&v, "i", true, 0, 100, &n));
    cr_assert_not(jv_int(&v, "r", true, 0, 100, &n));
    cr_assert_not(jv_bool(&v, "b", true, &f));
    cr_assert_null(jv_str(&v, "o", false, 0, 10), "wrong type is an error even when optional");
    cr_assert_not(jv_bool(&v, "l", false, &f));
    cr_assert_not(jv_ok(&v));
    json_t *fields = jv_take_fields(&v);
    cr_assert_str_eq(field_msg(fields, "s"), "must be a string");
    cr_assert_str_eq(field_msg(fields, "i"), "must be an integer");
    cr_assert_str_eq(field_msg(fields, "r"), "must be an integer");
    cr_assert_str_eq(field_msg(fields, "b"), "must be true or false");
    cr_assert_str_eq(field_msg(fields, "o"), "must be a string");
    cr_assert_str_eq(field_msg(fields, "l"), "must be true or false");
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, string_lengths_count_code_points)
{
    /* "ééé" is 6 bytes but 3 characters */
    json_t *b = parse("{\"ok3\":\"ééé\",\"long\":\"éééé\",\"short\":\"é\",\"exact\":\"ab\",\"empty\":\"\"}");
    jv v;
    jv_init(&v, b);
    cr_assert_str_eq(jv_str(&v, "ok3", true, 3, 3), "ééé");
    cr_assert_null(jv_str(&v, "long", true, 1, 3));
    cr_assert_null(jv_str(&v, "short", true, 2, 3));
    cr_assert_null(jv_str(&v, "exact", true, 3, 3));
    cr_assert_null(jv_str(&v, "empty", true, 1, 10), "an empty string is not absent but too short");
    json_t *fields = jv_take_fields(&v);
    cr_assert_str_eq(field_msg(fields, "long"), "must be 1 to 3 characters");
    cr_assert_str_eq(field_msg(fields, "short"), "must be 2 to 3 characters");
    cr_assert_str_eq(field_msg(fields, "exact"), "must be 3 characters");
    cr_assert_str_eq(field_msg(fields, "empty"), "must be 1 to 10 characters");
    cr_assert_null(json_object_get(fields, "ok3"));
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, embedded_nul_is_rejected)
{
    json_error_t je;
    json_t *b = json_loads("{\"s\":\"a\\u0000b\"}", JSON_ALLOW_NUL, &je);
    cr_assert_not_null(b, "%s", je.text);
    jv v;
    jv_init(&v, b);
    cr_assert_null(jv_str(&v, "s", true, 0, 10));
    json_t *fields = jv_take_fields(&v);
    cr_assert_str_eq(field_msg(fields, "s"), "must not contain NUL characters");
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, unknown_fields)
{
    json_t *b = parse("{\"name\":\"x\",\"admin\":true,\"extra\":1}");
    jv v;
    jv_init(&v, b);
    static const char *const allowed[] = {"name", NULL};
    jv_only(&v, allowed);
    json_t *fields = jv_take_fields(&v);
    cr_assert_eq(json_object_size(fields), 2);
    cr_assert_str_eq(field_msg(fields, "admin"), "unknown field");
    cr_assert_str_eq(field_msg(fields, "extra"), "unknown field");
    json_decref(fields);

    static const char *const none[] = {NULL};
    jv_only(&v, none);
    fields = jv_take_fields(&v);
    cr_assert_eq(json_object_size(fields), 3, "with nothing allowed every key is unknown");
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, int_bounds)
{
    json_t *b = parse("{\"lo\":-1,\"min\":0,\"max\":10,\"hi\":11,\"big\":9223372036854775807,"
                      "\"neg\":-9223372036854775808}");
    jv v;
    jv_init(&v, b);
    long long n = 99;
    cr_assert_not(jv_int(&v, "lo", true, 0, 10, &n));
    cr_assert_eq(n, 99, "a rejected integer leaves *out alone");
    cr_assert(jv_int(&v, "min", true, 0, 10, &n));
    cr_assert_eq(n, 0);
    cr_assert(jv_int(&v, "max", true, 0, 10, &n));
    cr_assert_eq(n, 10);
    cr_assert_not(jv_int(&v, "hi", true, 0, 10, &n));
    cr_assert(jv_int(&v, "big", true, LLONG_MIN, LLONG_MAX, &n));
    cr_assert_eq(n, LLONG_MAX);
    cr_assert(jv_int(&v, "neg", true, LLONG_MIN, LLONG_MAX, &n));
    cr_assert_eq(n, LLONG_MIN);
    json_t *fields = jv_take_fields(&v);
    cr_assert_str_eq(field_msg(fields, "lo"), "must be between 0 and 10");
    cr_assert_str_eq(field_msg(fields, "hi"), "must be between 0 and 10");
    cr_assert_eq(json_object_size(fields), 2);
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(jv, bools)
{
    json_t *b = parse("{\"t\":true,\"f\":false,\"n\":0}");
    jv v;
    jv_init(&v, b);
    bool x = false;
    cr_assert(jv_bool(&v, "t", true, &x));
    cr_assert(x);
    cr_assert(jv_bool(&v, "f", true, &x));
    cr_assert_not(x);
    cr_assert_not(jv_bool(&v, "n", true, &x), "0 is not a boolean");
    cr_assert_not(jv_ok(&v));
    jv_free(&v);
    json_decref(b);
}

Test(jv, first_problem_per_field_is_kept)
{
    json_t *b = parse("{\"x\":5}");
    jv v;
    jv_init(&v, b);
    jv_fail(&v, "x", "first");
    jv_fail(&v, "x", "second");
    cr_assert_null(jv_str(&v, "x", true, 0, 1));
    json_t *fields = jv_take_fields(&v);
    cr_assert_str_eq(field_msg(fields, "x"), "first");
    json_decref(fields);
    jv_free(&v);
    json_decref(b);
}

Test(json, compact_serialisation)
{
    json_t *v = parse("{ \"a\" : [1, 2, {\"b\": \"é\"}] }");
    char *s = json_compact(v);
    cr_assert_str_eq(s, "{\"a\":[1,2,{\"b\":\"é\"}]}");
    free(s);
    json_decref(v);
    json_t *str = json_string("scalar");
    s = json_compact(str);
    cr_assert_str_eq(s, "\"scalar\"", "scalars serialise too");
    free(s);
    json_decref(str);
}
