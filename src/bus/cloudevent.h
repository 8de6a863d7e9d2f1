/*
 * cloudevent.h - CloudEvents 1.0 in structured JSON mode, as Pulse uses them.
 *
 *   specversion "1.0"; id a UUIDv7; source "/pulse/<service>";
 *   type "pl.<context>.<event>.v<N>" (lower snake case); subject the aggregate
 *   id; time RFC 3339 UTC; datacontenttype "application/json"; data a JSON
 *   object; extensions traceparent (W3C) and partitionkey (default: subject).
 *
 * Dead letters travel as type "<type>.dlq" (ce_type_valid accepts that suffix
 * only when allow_dlq is set).
 */
#ifndef PULSE_BUS_CLOUDEVENT_H
#define PULSE_BUS_CLOUDEVENT_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define CE_TYPE_MAX 128
#define CE_SUBJECT_MAX 128
#define CE_SOURCE_MAX 64

typedef struct cloudevent {
    char id[40];
    char source[CE_SOURCE_MAX];
    char type[CE_TYPE_MAX + 8];   /* room for ".dlq" */
    char subject[CE_SUBJECT_MAX + 1];
    char time[40];
    char traceparent[64];         /* "" when none */
    char partitionkey[CE_SUBJECT_MAX + 1];
    json_t *data;                 /* owned: a JSON object */
} cloudevent;

/* True when type is pl.<context>.<event>.v<N> in lower snake case. */
bool ce_type_valid(const char *type, bool allow_dlq);

/* True when a pattern like "pl.identity.*", "pl.*.user_registered.v1", "*"
 * or an exact type matches: '*' matches any run of characters, dots
 * included. Dead letters ("<type>.dlq") match only patterns that themselves
 * end in ".dlq" ("*.dlq", "pl.social.*.dlq"). */
bool ce_type_matches(const char *pattern, const char *type);

/* Fills a new event: id (UUIDv7), time (now), source "/pulse/<service>",
 * traceparent from the calling thread's log context. `data` is stolen.
 * Validates everything; on error nothing is kept (data is released). */
int ce_new(cloudevent *ev, const char *service, const char *type, const char *subject, const char *partitionkey,
           json_t *data, pl_error *err);

/* Encodes to compact JSON; the caller frees with free(). */
char *ce_encode(const cloudevent *ev);

/* Decodes and validates; on error *ev holds nothing that needs ce_clear. */
int ce_decode(const char *json, size_t len, cloudevent *ev, pl_error *err);

/* Validates a decoded event's attributes (what ce_decode checks). */
int ce_validate(const cloudevent *ev, pl_error *err);

void ce_clear(cloudevent *ev); /* releases data */

/* 32-bit hash of the partition key (stable across processes and engines). */
uint32_t ce_partition_hash(const char *key);

#endif
