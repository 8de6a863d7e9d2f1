/*
 * engines.h - engines registered by URL scheme: the one lookup behind every
 * store kind (sql.c, kv.c) and the bus (bus.c). Each kind keeps its own
 * registry of its own driver structs; the registry only knows a driver as an
 * opaque pointer and the URL prefixes it serves. Thread-safe.
 */
#ifndef PULSE_CORE_ENGINES_H
#define PULSE_CORE_ENGINES_H

#include <pthread.h>
#include <stddef.h>

#define ENGINES_MAX 8

typedef struct engines {
    pthread_mutex_t lock;
    size_t n;
    struct {
        const void *driver;
        const char *const *schemes; /* NULL-terminated URL prefixes */
    } v[ENGINES_MAX];
} engines;

#define ENGINES_INIT {PTHREAD_MUTEX_INITIALIZER, 0, {{NULL, NULL}}}

/* Adds a driver (borrowed: it must be static) once; a full registry ignores it. */
void engines_add(engines *r, const void *driver, const char *const *schemes);

/* The driver whose scheme prefixes url, or NULL. */
const void *engines_find(engines *r, const char *url);

#endif
