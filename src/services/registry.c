/* registry.c - every service compiled into the binary, in start order. */
#include "services/service.h"

#include <string.h>

extern const service_def identity_service;
extern const service_def audit_service;
extern const service_def testkit_service;

const service_def *const service_registry[] = {
    &identity_service,
    &audit_service,
    &testkit_service,
    NULL,
};

const service_def *service_find(const char *name)
{
    for (const service_def *const *s = service_registry; *s; s++)
        if (strcmp((*s)->name, name) == 0)
            return *s;
    return NULL;
}
