/* uuid.h - UUIDv7 (RFC 9562): time-ordered, 74 random bits. */
#ifndef PULSE_CORE_UUID_H
#define PULSE_CORE_UUID_H

#include <stdbool.h>
#include <stdint.h>

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Writes a new lower-case UUIDv7 string. Monotonic within a process: ids made
 * in the same millisecond still sort in creation order. Thread-safe. */
void uuid7_new(char out[UUID_STR_LEN]);

/* True when s is a canonical lower- or upper-case UUID string of any version. */
bool uuid_valid(const char *s);

/* Milliseconds since the epoch carried by a UUIDv7 string, or -1. */
int64_t uuid7_time_ms(const char *s);

#endif
