/* uuid.c - UUIDv7 with a 12-bit sequence in rand_a for same-millisecond order. */
#include "core/uuid.h"
#include "core/timeutil.h"

#include <ctype.h>
#include <pthread.h>
#include "core/rand.h"
#include <stdio.h>
#include <string.h>

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t uuid_last_ms;
static uint16_t uuid_seq;

void uuid7_new(char out[UUID_STR_LEN])
{
    unsigned char b[16];
    rand_bytes(b, sizeof b);
    int64_t ms = time_now_ms();

    pthread_mutex_lock(&uuid_lock);
    if (ms <= uuid_last_ms) {
        ms = uuid_last_ms;
        if (++uuid_seq > 0x0fff) { /* sequence exhausted: borrow the next millisecond */
            ms = ++uuid_last_ms;
            uuid_seq = b[6] & 0x07;
        }
    } else {
        uuid_last_ms = ms;
        uuid_seq = (uint16_t)(((b[6] & 0x07) << 8) | b[7]); /* random start, room to count up */
    }
    uint16_t seq = uuid_seq;
    pthread_mutex_unlock(&uuid_lock);

    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (seq >> 8));
    b[7] = (unsigned char)(seq & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));

    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

bool uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

int64_t uuid7_time_ms(const char *s)
{
    if (!uuid_valid(s) || s[14] != '7')
        return -1;
    int64_t ms = 0;
    for (int i = 0; i < 13; i++) {
        if (s[i] == '-')
            continue;
        int c = tolower((unsigned char)s[i]);
        ms = ms * 16 + (isdigit(c) ? c - '0' : c - 'a' + 10);
    }
    return ms;
}
