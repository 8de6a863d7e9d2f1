/* registry.c - every service compiled into the binary, in start order. */
#include "services/service.h"

#include <stdio.h>
#include <string.h>

extern const service_def identity_service;
extern const service_def audit_service;
extern const service_def social_service;
extern const service_def courses_service;
extern const service_def achievements_service;
extern const service_def testkit_service;
extern const service_def realtime_service;
extern const service_def notify_service, messaging_service;
extern const service_def doctest_service;

const service_def *const service_registry[] = {
    &identity_service,
    &audit_service,
    &social_service,
    &courses_service,
    &achievements_service,
    &testkit_service,
    &realtime_service,
    &notify_service, &messaging_service,
    &doctest_service,
    NULL,
};

void service_store_name(const config *cfg, const char *service, char *out, size_t size)
{
    const char *ns = config_str(cfg, "server", "namespace");
    if (*ns)
        snprintf(out, size, "%s_%s", ns, service);
    else
        snprintf(out, size, "%s", service);
}

const service_def *service_find(const char *name)
{
    for (const service_def *const *s = service_registry; *s; s++)
        if (strcmp((*s)->name, name) == 0)
            return *s;
    return NULL;
}
