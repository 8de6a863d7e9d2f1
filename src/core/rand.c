/* rand.c - a per-thread buffer over randombytes_buf. */
#include "core/rand.h"

#include <sodium.h>
#include <string.h>

#define POOL 512

static _Thread_local unsigned char pool[POOL];
static _Thread_local size_t left;

void rand_bytes(void *buf, size_t n)
{
    if (n > POOL / 4) { /* big draws go straight to the source */
        randombytes_buf(buf, n);
        return;
    }
    if (n > left) {
        randombytes_buf(pool, POOL);
        left = POOL;
    }
    unsigned char *src = pool + POOL - left;
    memcpy(buf, src, n);
    sodium_memzero(src, n); /* what was handed out does not stay behind */
    left -= n;
}
