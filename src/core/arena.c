/* arena.c - a chain of blocks; big requests get a block of their own, kept
 * apart so that the current block goes on serving small ones. */
#include "core/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct block {
    struct block *next;
    size_t size, used;
    max_align_t data[];
} block;

struct arena {
    block *head;  /* current block; the first block is the tail of the chain */
    block *big;   /* blocks of one big allocation each */
    size_t first, total;
};

static _Noreturn void oom(void)
{
    fputs("pulse: out of memory\n", stderr);
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        oom();
    return p;
}

static block *block_new(size_t size)
{
    if (size > PTRDIFF_MAX - sizeof(block))
        oom();
    block *b = xmalloc(sizeof *b + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

arena *arena_create(size_t first_block)
{
    arena *a = xmalloc(sizeof *a);
    a->first = first_block ? first_block : 4096;
    a->head = block_new(a->first);
    a->big = NULL;
    a->total = 0;
    return a;
}

static void free_chain(block *b)
{
    for (block *n; b; b = n) {
        n = b->next;
        free(b);
    }
}

void arena_destroy(arena *a)
{
    if (!a)
        return;
    free_chain(a->head);
    free_chain(a->big);
    free(a);
}

void arena_reset(arena *a)
{
    free_chain(a->big);
    a->big = NULL;
    block *b = a->head;
    while (b->next) {
        block *n = b->next;
        free(b);
        b = n;
    }
    b->used = 0;
    a->head = b;
    a->total = 0;
}

void *arena_alloc(arena *a, size_t n)
{
    if (n > PTRDIFF_MAX) /* rounding up would wrap to a tiny size */
        oom();
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    block *b = a->head;
    if (b->size - b->used < n && n > a->first / 2) {
        /* Growing the chain for this would leave the rest of the current
         * block unused and make the next block twice as big again. */
        b = block_new(n);
        b->next = a->big;
        a->big = b;
    } else if (b->size - b->used < n) {
        size_t size = b->size * 2;
        if (size < n)
            size = n;
        b = block_new(size);
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    a->total += n;
    return p;
}

void *arena_calloc(arena *a, size_t n)
{
    return memset(arena_alloc(a, n), 0, n);
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_vsprintf(arena *a, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        n = 0;
    char *p = arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *arena_sprintf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = arena_vsprintf(a, fmt, ap);
    va_end(ap);
    return p;
}

size_t arena_used(const arena *a) { return a->total; }
