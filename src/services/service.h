/*
 * service.h - the shape of a Pulse service (a bounded context).
 *
 * A service is a module that declares, as data: its name, the store kinds it
 * owns, its configuration keys, its HTTP routes and (with the event backbone)
 * its event consumers; and, as code: start/stop hooks and a demo-data hook.
 * The host (host.h) opens the declared stores on the engines configuration
 * names, applies the service's migrations, starts it and mounts its routes.
 *
 * Services never include each other's headers and never touch each other's
 * stores; they share only the platform (core, http, store, bus) and event types.
 */
#ifndef PULSE_SERVICES_SERVICE_H
#define PULSE_SERVICES_SERVICE_H

#include "bus/bus.h"
#include "bus/consumer.h"
#include "core/config.h"
#include "core/err.h"
#include "http/http.h"
#include "store/doc.h"
#include "store/kv.h"
#include "store/sql.h"

#include <stddef.h>

typedef struct service_ctx service_ctx;

enum { SERVICE_USES_SQL = 1u << 0, SERVICE_USES_KV = 1u << 1, SERVICE_USES_DOC = 1u << 2 };

typedef struct service_def {
    int version;                    /* 1; fields are only ever appended */
    const char *name;               /* "identity": also its data file, schema, config section */
    const char *summary;
    unsigned stores;                /* SERVICE_USES_* */
    const http_route *routes;
    size_t nroutes;
    const config_key *config_keys;  /* section "service.<name>" */
    size_t nconfig_keys;
    /* Called after stores are open and migrated, before routes are served.
     * Allocates ctx->state. A failure stops the process from starting. */
    int  (*start)(service_ctx *ctx, pl_error *err);
    /* Called after the HTTP server stopped; frees ctx->state. May be NULL. */
    void (*stop)(service_ctx *ctx);
    /* Seeds demo data when the service's stores are empty; prints how to use
     * it to `out`. May be NULL. */
    int  (*demo)(service_ctx *ctx, void (*out)(const char *line), pl_error *err);
    /* Event consumers, run with the service's sql store as their inbox. */
    const consumer_def *consumers;
    size_t nconsumers;
    /* Hosted only when named in --services (test fixtures). */
    bool hidden;
    /* Command-line verbs: `pulse <service> <verb> [args]` (e.g. `pulse audit
     * verify`), run with the service's stores open and the service started
     * (no relay, no consumers). Return the exit status. */
    const struct service_command {
        const char *verb;
        const char *help;
        int (*run)(service_ctx *ctx, int argc, char **argv);
    } *commands;
    size_t ncommands;
} service_def;

struct service_ctx {
    const service_def *def;
    const config *cfg;
    const char *data_dir;
    sql_db *sql;      /* when stores & SERVICE_USES_SQL */
    kv *kv;           /* when stores & SERVICE_USES_KV */
    bus *bus;         /* the event bus of this process */
    void *state;      /* the service's own */
    /* When stores & SERVICE_USES_DOC. A service without SERVICE_USES_SQL gets
     * ctx->sql = doc_sql(doc) (owned by doc): its outbox, its consumers' inbox
     * and its migrations live beside the documents, so outbox_emit and doc
     * writes commit in one transaction. */
    doc_store *doc;
};

/* The name a service's stores carry on an engine: "<namespace>_<service>"
 * when server.namespace is set (PostgreSQL schema, kv key prefix), else the
 * service's name. */
void service_store_name(const config *cfg, const char *service, char *out, size_t size);

/* The registry of every service compiled into this binary, in start order. */
extern const service_def *const service_registry[];
const service_def *service_find(const char *name);

#endif
