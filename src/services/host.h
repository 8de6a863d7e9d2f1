/*
 * host.h - hosts a set of services in this process: opens their stores on
 * the configured engines, migrates them, starts them, mounts their routes
 * and answers readiness for them.
 */
#ifndef PULSE_SERVICES_HOST_H
#define PULSE_SERVICES_HOST_H

#include "core/config.h"
#include "http/metrics.h"
#include "http/router.h"
#include "services/service.h"

#include <jansson.h>

typedef struct host host;

/* Builds the configuration key table: platform keys, every service's own
 * keys and per-service engine keys. The caller destroys it. */
config *host_config_create(void);

/* Opens and migrates the stores of the services named in `services` (comma
 * separated; empty or NULL: all). Unknown names are PL_ECONFIG errors. */
int host_open(const config *cfg, const char *services, host **out, pl_error *err);

/* Starts every hosted service and mounts its routes on r; with `background`
 * also its outbox relay and its consumers. */
int host_start(host *h, router *r, bool background, pl_error *err);

/* Runs the demo hooks of the hosted services. */
int host_demo(host *h, void (*out)(const char *line), pl_error *err);

/* Readiness: pings every store. Returns 0 when all are reachable; *report
 * (new reference) maps "service.kind" to "ok" or the error. */
int host_ready(host *h, json_t **report);

/* Registers the host's gauges (consumer lag, outbox depth, dead letters). */
void host_metrics(host *h, metrics *m);

/* The event bus of this process (borrowed). */
bus *host_bus(host *h);

/* Rebuilds a projection ("<service>.<consumer>" or a unique "<consumer>")
 * of a hosted service from the start of the log. */
int host_replay(host *h, const char *projection, pl_error *err);

/* Runs `verb` of the hosted service `service` (see service_def.commands).
 * Returns the command's exit status, or 2 when there is no such command. */
int host_command(host *h, const char *service, const char *verb, int argc, char **argv);

/* Names of the hosted services, comma separated (borrowed). */
const char *host_services(const host *h);

/* Stops the started services and closes their stores. NULL is a no-op. */
void host_close(host *h);

#endif
