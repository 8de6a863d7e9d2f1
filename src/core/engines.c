/* engines.c - a small table of (driver, URL prefixes). */
#include "core/engines.h"

#include <stdbool.h>
#include <string.h>

void engines_add(engines *r, const void *driver, const char *const *schemes)
{
    pthread_mutex_lock(&r->lock);
    bool present = false;
    for (size_t i = 0; i < r->n; i++)
        present |= r->v[i].driver == driver;
    if (!present && r->n < ENGINES_MAX) {
        r->v[r->n].driver = driver;
        r->v[r->n++].schemes = schemes;
    }
    pthread_mutex_unlock(&r->lock);
}

const void *engines_find(engines *r, const char *url)
{
    const void *found = NULL;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && !found; i++)
        for (const char *const *s = r->v[i].schemes; *s && !found; s++)
            if (strncmp(url, *s, strlen(*s)) == 0)
                found = r->v[i].driver;
    pthread_mutex_unlock(&r->lock);
    return found;
}
