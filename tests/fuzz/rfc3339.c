/*
 * rfc3339.c - libFuzzer driver for RFC 3339 parsing (src/core/timeutil.c).
 *
 * Checks: no crash or undefined behaviour; a rejected input leaves the
 * output alone; an accepted one formats to a timestamp that parses back to
 * the same millisecond (when its year has four digits).
 */
#include "core/err.h"
#include "core/timeutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms = INT64_MIN;
    int rc = time_parse_rfc3339(s, &ms);
    if (rc != 0 && rc != PL_EINVAL)
        abort();
    if (rc != 0 && ms != INT64_MIN)
        abort();
    if (rc == 0) {
        char buf[64];
        time_rfc3339(ms, buf, sizeof buf);
        if (strlen(buf) == 24 && buf[0] >= '0' && buf[0] <= '9') { /* years 0000-9999 */
            int64_t back = INT64_MIN;
            if (time_parse_rfc3339(buf, &back) != 0 || back != ms)
                abort();
        }
    }
    free(s);
    return 0;
}
