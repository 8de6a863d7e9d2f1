/* timeutil.h - clocks and RFC 3339 timestamps. */
#ifndef PULSE_CORE_TIMEUTIL_H
#define PULSE_CORE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

int64_t time_now_ms(void);     /* wall clock, milliseconds since the epoch */
int64_t time_mono_ns(void);    /* monotonic clock, nanoseconds */

/* Formats ms since the epoch as "2026-11-22T03:11:58.123Z" into buf (>= 25 bytes). */
void time_rfc3339(int64_t ms, char *buf, size_t size);

/* Parses an RFC 3339 timestamp (any offset, optional fraction); 0 or PL_EINVAL. */
int time_parse_rfc3339(const char *s, int64_t *ms_out);

#endif
