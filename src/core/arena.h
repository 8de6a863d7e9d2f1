/*
 * arena.h - a bump allocator for per-request memory.
 *
 * Everything allocated from an arena is released at once by arena_destroy()
 * or arena_reset(). Allocation aborts on out-of-memory (never returns NULL).
 * An arena is used by one thread at a time.
 */
#ifndef PULSE_CORE_ARENA_H
#define PULSE_CORE_ARENA_H

#include <stdarg.h>
#include <stddef.h>

typedef struct arena arena;

arena *arena_create(size_t first_block);
void   arena_destroy(arena *a);               /* NULL is a no-op */
void   arena_reset(arena *a);                 /* frees all but the first block */
void  *arena_alloc(arena *a, size_t n);       /* 16-byte aligned, uninitialised */
void  *arena_calloc(arena *a, size_t n);
char  *arena_strdup(arena *a, const char *s);
char  *arena_strndup(arena *a, const char *s, size_t n);
char  *arena_sprintf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char  *arena_vsprintf(arena *a, const char *fmt, va_list ap);
size_t arena_used(const arena *a);            /* bytes handed out since the last reset */

#endif
