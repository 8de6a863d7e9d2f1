/* cloudevent.c - CloudEvents 1.0 structured-mode encoding, decoding, validation. */
#include "bus/cloudevent.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool snake_word(const char *s, size_t n)
{
    if (n == 0 || !islower((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
            return false;
    return s[n - 1] != '_';
}

bool ce_type_valid(const char *type, bool allow_dlq)
{
    size_t len = strlen(type);
    if (allow_dlq && len > 4 && strcmp(type + len - 4, ".dlq") == 0)
        len -= 4;
    if (len > CE_TYPE_MAX || strncmp(type, "pl.", 3) != 0)
        return false;
    /* pl . context . event . vN */
    const char *p = type + 3, *end = type + len;
    const char *dot1 = memchr(p, '.', (size_t)(end - p));
    if (!dot1 || !snake_word(p, (size_t)(dot1 - p)))
        return false;
    const char *q = dot1 + 1;
    const char *dot2 = memchr(q, '.', (size_t)(end - q));
    if (!dot2 || !snake_word(q, (size_t)(dot2 - q)))
        return false;
    const char *v = dot2 + 1;
    if (v >= end || *v != 'v' || v + 1 >= end || v[1] == '0')
        return false;
    for (const char *d = v + 1; d < end; d++)
        if (!isdigit((unsigned char)*d))
            return false;
    return end - (v + 1) <= 4;
}

static bool glob(const char *p, const char *t)
{
    const char *star = NULL, *resume = NULL;
    while (*t) {
        if (*p == '*') {
            star = p++;
            resume = t;
        } else if (*p == *t) {
            p++;
            t++;
        } else if (star) {
            p = star + 1;
            t = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static bool is_dlq(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && strcmp(s + n - 4, ".dlq") == 0;
}

bool ce_type_matches(const char *pattern, const char *type)
{
    /* dead letters reach only those who ask for them */
    if (is_dlq(type) && !is_dlq(pattern))
        return false;
    return glob(pattern, type);
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

int ce_validate(const cloudevent *ev, pl_error *err)
{
    if (!uuid_valid(ev->id))
        return err_set(err, PL_EINVAL, "id", "event id must be a UUID, got \"%s\"", ev->id);
    if (strncmp(ev->source, "/pulse/", 7) != 0 || !snake_word(ev->source + 7, strlen(ev->source + 7)))
        return err_set(err, PL_EINVAL, "source", "event source must be /pulse/<service>, got \"%s\"", ev->source);
    if (!ce_type_valid(ev->type, true))
        return err_set(err, PL_EINVAL, "type", "event type must match pl.<context>.<event>.v<N>, got \"%s\"",
                       ev->type);
    if (!ev->subject[0] || !printable(ev->subject))
        return err_set(err, PL_EINVAL, "subject", "event subject must be a non-empty printable string");
    int64_t ms;
    if (time_parse_rfc3339(ev->time, &ms))
        return err_set(err, PL_EINVAL, "time", "event time must be RFC 3339, got \"%s\"", ev->time);
    if (!ev->partitionkey[0] || !printable(ev->partitionkey))
        return err_set(err, PL_EINVAL, "partitionkey", "partitionkey must be a non-empty printable string");
    if (ev->traceparent[0] && (strlen(ev->traceparent) != 55 || ev->traceparent[2] != '-'))
        return err_set(err, PL_EINVAL, "traceparent", "traceparent is not a W3C trace context");
    if (!json_is_object(ev->data))
        return err_set(err, PL_EINVAL, "data", "event data must be a JSON object");
    return 0;
}

int ce_new(cloudevent *ev, const char *service, const char *type, const char *subject, const char *partitionkey,
           json_t *data, pl_error *err)
{
    memset(ev, 0, sizeof *ev);
    ev->data = data;
    uuid7_new(ev->id);
    snprintf(ev->source, sizeof ev->source, "/pulse/%s", service);
    time_rfc3339(time_now_ms(), ev->time, sizeof ev->time);
    int rc = 0;
    if (!ce_type_valid(type, false))
        rc = err_set(err, PL_EINVAL, "type", "event type must match pl.<context>.<event>.v<N>, got \"%s\"", type);
    else if (!subject || strlen(subject) > CE_SUBJECT_MAX)
        rc = err_set(err, PL_EINVAL, "subject", "event subject must be 1 to %d bytes", CE_SUBJECT_MAX);
    else if (partitionkey && strlen(partitionkey) > CE_SUBJECT_MAX)
        rc = err_set(err, PL_EINVAL, "partitionkey", "partitionkey must be at most %d bytes", CE_SUBJECT_MAX);
    if (!rc) {
        snprintf(ev->type, sizeof ev->type, "%s", type);
        snprintf(ev->subject, sizeof ev->subject, "%s", subject);
        snprintf(ev->partitionkey, sizeof ev->partitionkey, "%s", partitionkey ? partitionkey : subject);
        const char *tp = log_ctx_get_traceparent();
        if (tp)
            snprintf(ev->traceparent, sizeof ev->traceparent, "%s", tp);
        rc = ce_validate(ev, err);
    }
    if (rc)
        ce_clear(ev);
    return rc;
}

char *ce_encode(const cloudevent *ev)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O}", "specversion", "1.0", "id", ev->id,
                          "source", ev->source, "type", ev->type, "subject", ev->subject, "time", ev->time,
                          "datacontenttype", "application/json", "partitionkey", ev->partitionkey, "data",
                          ev->data);
    if (ev->traceparent[0])
        json_object_set_new(j, "traceparent", json_string(ev->traceparent));
    char *s = json_compact(j);
    json_decref(j);
    return s;
}

static int copy_attr(json_t *j, const char *name, char *dst, size_t size, bool required, pl_error *err)
{
    json_t *v = json_object_get(j, name);
    if (!v) {
        if (required)
            return err_set(err, PL_EINVAL, name, "required attribute \"%s\" is missing", name);
        dst[0] = '\0';
        return 0;
    }
    if (!json_is_string(v))
        return err_set(err, PL_EINVAL, name, "attribute \"%s\" must be a string", name);
    if (json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v))
        return err_set(err, PL_EINVAL, name, "attribute \"%s\" is too long or contains NUL", name);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

int ce_decode(const char *json, size_t len, cloudevent *ev, pl_error *err)
{
    memset(ev, 0, sizeof *ev);
    json_error_t je;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return err_set(err, PL_EBADJSON, NULL, "event is not valid JSON: %s at position %d", je.text, je.position);
    int rc = 0;
    char spec[8];
    if (!json_is_object(j))
        rc = err_set(err, PL_EINVAL, NULL, "event must be a JSON object");
    else if (!(rc = copy_attr(j, "specversion", spec, sizeof spec, true, err)) && strcmp(spec, "1.0") != 0)
        rc = err_set(err, PL_EINVAL, "specversion", "specversion must be \"1.0\"");
    if (!rc)
        rc = copy_attr(j, "id", ev->id, sizeof ev->id, true, err);
    if (!rc)
        rc = copy_attr(j, "source", ev->source, sizeof ev->source, true, err);
    if (!rc)
        rc = copy_attr(j, "type", ev->type, sizeof ev->type, true, err);
    if (!rc)
        rc = copy_attr(j, "subject", ev->subject, sizeof ev->subject, true, err);
    if (!rc)
        rc = copy_attr(j, "time", ev->time, sizeof ev->time, true, err);
    if (!rc)
        rc = copy_attr(j, "traceparent", ev->traceparent, sizeof ev->traceparent, false, err);
    if (!rc)
        rc = copy_attr(j, "partitionkey", ev->partitionkey, sizeof ev->partitionkey, false, err);
    if (!rc) {
        json_t *ct = json_object_get(j, "datacontenttype");
        if (ct && (!json_is_string(ct) || strcmp(json_string_value(ct), "application/json") != 0))
            rc = err_set(err, PL_EINVAL, "datacontenttype", "datacontenttype must be application/json");
    }
    if (!rc) {
        if (!ev->partitionkey[0])
            snprintf(ev->partitionkey, sizeof ev->partitionkey, "%s", ev->subject);
        ev->data = json_incref(json_object_get(j, "data"));
        if (!ev->data)
            rc = err_set(err, PL_EINVAL, "data", "required attribute \"data\" is missing");
    }
    if (!rc)
        rc = ce_validate(ev, err);
    json_decref(j);
    if (rc)
        ce_clear(ev);
    return rc;
}

void ce_clear(cloudevent *ev)
{
    json_decref(ev->data);
    ev->data = NULL;
}

uint32_t ce_partition_hash(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a: fixed, so every engine and process agrees */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}
