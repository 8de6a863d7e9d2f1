/* host.c - opens, migrates, starts and stops the services of this process. */
#include "services/host.h"
#include "bus/outbox.h"
#include "core/log.h"
#include "http/auth.h"
#include "services/sessions.h"
#include "store/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERVICES 32

#define MAX_CONSUMERS 64

struct host {
    const config *cfg;
    bus *bus;
    service_ctx ctx[MAX_SERVICES];
    bool started[MAX_SERVICES];
    outbox_relay *relay[MAX_SERVICES];
    bool sql_of_doc[MAX_SERVICES]; /* ctx->sql is doc_sql(ctx->doc): the doc store closes it */
    consumer *consumers[MAX_CONSUMERS];
    size_t n, nconsumers;
    consumer_opts copts;
    sessions *sessions; /* for authentication when identity is not hosted here */
    char names[512];
};

config *host_config_create(void)
{
    const config_key *tables[MAX_SERVICES + 1] = {config_platform_keys};
    size_t counts[MAX_SERVICES + 1] = {config_platform_nkeys};
    size_t nt = 1;
    for (const service_def *const *s = service_registry; *s && nt < MAX_SERVICES + 1; s++) {
        if ((*s)->nconfig_keys) {
            tables[nt] = (*s)->config_keys;
            counts[nt++] = (*s)->nconfig_keys;
        }
    }
    config *c = config_create(tables, counts, nt);
    for (const service_def *const *s = service_registry; *s; s++)
        config_add_service(c, (*s)->name);
    return c;
}

static int add_service(host *h, const service_def *def, pl_error *err)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->ctx[i].def == def)
            return 0;
    if (h->n == MAX_SERVICES)
        return err_set(err, PL_ECONFIG, "services", "too many services");
    service_ctx *c = &h->ctx[h->n++];
    memset(c, 0, sizeof *c);
    c->def = def;
    c->cfg = h->cfg;
    c->data_dir = config_str(h->cfg, "server", "data");
    size_t l = strlen(h->names);
    snprintf(h->names + l, sizeof h->names - l, "%s%s", l ? "," : "", def->name);
    return 0;
}

static int select_services(host *h, const char *list, pl_error *err)
{
    if (!list || !*list) {
        for (const service_def *const *s = service_registry; *s; s++)
            if (!(*s)->hidden)
                add_service(h, *s, err);
        return 0;
    }
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        abort();
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        const service_def *def = service_find(tok);
        rc = def ? add_service(h, def, err)
                 : err_set(err, PL_ECONFIG, "services", "unknown service \"%s\" in --services", tok);
    }
    free(copy);
    if (!rc && h->n == 0)
        rc = err_set(err, PL_ECONFIG, "services", "--services names no service");
    for (size_t i = 0; i < h->n; i++)
        h->ctx[i].bus = h->bus;
    return rc;
}

static int open_stores(host *h, service_ctx *c, pl_error *err)
{
    char name[96];
    service_store_name(h->cfg, c->def->name, name, sizeof name);
    if (c->def->stores & SERVICE_USES_KV) {
        kv_options ko = {.data_dir = c->data_dir, .service = name};
        int rc = kv_open(config_store_url(h->cfg, c->def->name, "kv"), &ko, &c->kv, err);
        if (rc)
            return rc;
    }
    /* sql and doc take the same options: the same schema on PostgreSQL (doc tables are doc_<collection>),
     * and on SQLite <service>.db and <service>.doc.db */
    sql_options o = {
        .data_dir = c->data_dir,
        .service = name,
    };
    int rc;
    if (c->def->stores & SERVICE_USES_DOC) {
        if ((rc = doc_open(config_store_url(h->cfg, c->def->name, "doc"), &o, &c->doc, err)))
            return rc;
    }
    if (c->def->stores & SERVICE_USES_SQL) {
        if ((rc = sql_open(config_store_url(h->cfg, c->def->name, "sql"), &o, &c->sql, err)))
            return rc;
    } else if (c->doc) {
        c->sql = doc_sql(c->doc);
        h->sql_of_doc[c - h->ctx] = true;
    }
    if (!c->sql)
        return 0;
    /* the platform's outbox and inbox tables, then the service's own schema */
    static const char *const owners[] = {"bus", NULL};
    for (int i = 0; i < 2; i++) {
        const char *owner = owners[i] ? owners[i] : c->def->name;
        rc = sql_migrate(c->sql, owner, sql_builtin_migrations, sql_builtin_nmigrations, err);
        if (rc < 0)
            return rc;
        if (rc > 0)
            log_with(LOG_INFO, "migrated", LF_STR("service", c->def->name), LF_STR("schema", owner),
                     LF_STR("engine", sql_engine(c->sql)), LF_INT("applied", rc));
    }
    return 0;
}

int host_open(const config *cfg, const char *services, host **out, pl_error *err)
{
    host *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->cfg = cfg;
    const char *ns = config_str(cfg, "server", "namespace");
    if (strlen(ns) > 24 || strspn(ns, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(ns)) {
        free(h);
        return err_set(err, PL_ECONFIG, "namespace", "server.namespace must be up to 24 of [a-z0-9_], got \"%s\"", ns);
    }
    h->copts = (consumer_opts){
        .batch = (int)config_int(cfg, "bus", "batch"),
        .max_deliver = (int)config_int(cfg, "bus", "max_deliver"),
        .retry_base_ms = config_int(cfg, "bus", "retry_base"),
        .retry_max_ms = config_int(cfg, "bus", "retry_max"),
        .inbox_keep_ms = config_int(cfg, "bus", "retention_age"),
        .lease_ms = config_int(cfg, "bus", "lease"),
    };
    bus_options bo = {
        .data_dir = config_str(cfg, "server", "data"),
        .partitions = (int)config_int(cfg, "bus", "partitions"),
        .retention_age_ms = config_int(cfg, "bus", "retention_age"),
        .retention_max = config_int(cfg, "bus", "retention_max"),
        .ns = config_str(cfg, "server", "namespace"),
    };
    int rc = bus_open(config_str(cfg, "bus", "url"), &bo, &h->bus, err);
    if (rc) {
        free(h);
        return rc;
    }
    rc = select_services(h, services, err);
    for (size_t i = 0; i < h->n && !rc; i++)
        rc = open_stores(h, &h->ctx[i], err);
    if (rc) {
        host_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* A process that does not host identity still authenticates, from the
 * sessions identity writes to its kv, when that kv is shared (Redis). */
static void auth_fallback(host *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->ctx[i].def->name, "identity") == 0)
            return;
    pl_error e = {0};
    if (sessions_open(h->cfg, &h->sessions, &e)) {
        /* Not fatal: this process serves what needs no login. (The embedded kv
         * belongs to one process; share sessions through Redis instead.) */
        log_with(LOG_WARN, "this process cannot verify logins: routes that need one answer 503",
                 LF_STR("detail", e.msg));
        return;
    }
    auth_set_verifier(sessions_auth_verifier, h->sessions);
}

int host_start(host *h, router *r, bool background, pl_error *err)
{
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        log_ctx_service(c->def->name);
        int rc = c->def->start ? c->def->start(c, err) : 0;
        log_ctx_service(NULL);
        if (rc)
            return rc;
        h->started[i] = true;
        if (background && c->sql && (rc = outbox_relay_start(c->sql, c->def->name, h->bus, &h->relay[i], err)))
            return rc;
        for (size_t k = 0; background && k < c->def->nconsumers; k++) {
            if (!c->sql || h->nconsumers == MAX_CONSUMERS)
                return err_set(err, PL_ECONFIG, "consumers", "service %s: consumers need an sql store", c->def->name);
            rc = consumer_start(h->bus, c->sql, c->def->name, &c->def->consumers[k], c, &h->copts,
                                &h->consumers[h->nconsumers], err);
            if (rc)
                return rc;
            h->nconsumers++;
        }
        for (size_t k = 0; k < c->def->nroutes; k++) {
            rc = router_add(r, &c->def->routes[k], c);
            if (rc)
                return err_set(err, rc, "routes", "service %s: cannot add route %s %s", c->def->name,
                               c->def->routes[k].method, c->def->routes[k].pattern);
        }
    }
    auth_fallback(h);
    return 0;
}

int host_demo(host *h, void (*out)(const char *line), pl_error *err)
{
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        if (!c->def->demo)
            continue;
        int rc = c->def->demo(c, out, err);
        if (rc)
            return rc;
    }
    return 0;
}

int host_ready(host *h, json_t **report)
{
    json_t *rep = json_object();
    int worst = 0;
    pl_error be = {0};
    if (bus_ping(h->bus, &be)) {
        json_object_set_new(rep, "bus", json_string(be.msg));
        worst = PL_EUNAVAILABLE;
    } else {
        json_object_set_new(rep, "bus", json_string("ok"));
    }
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        if (c->kv) {
            pl_error e = {0};
            int rc = kv_ping(c->kv, &e);
            char key[96];
            snprintf(key, sizeof key, "%s.kv", c->def->name);
            json_object_set_new(rep, key, json_string(rc ? e.msg : "ok"));
            if (rc)
                worst = PL_EUNAVAILABLE;
        }
        if (c->doc) {
            pl_error e = {0};
            int rc = sql_ping(doc_sql(c->doc), &e);
            char key[96];
            snprintf(key, sizeof key, "%s.doc", c->def->name);
            json_object_set_new(rep, key, json_string(rc ? e.msg : "ok"));
            if (rc)
                worst = PL_EUNAVAILABLE;
        }
        if (c->sql && !h->sql_of_doc[i]) {
            pl_error e = {0};
            int rc = sql_ping(c->sql, &e);
            char key[96];
            snprintf(key, sizeof key, "%s.sql", c->def->name);
            json_object_set_new(rep, key, json_string(rc ? e.msg : "ok"));
            if (rc)
                worst = PL_EUNAVAILABLE;
        }
    }
    *report = rep;
    return worst;
}

const char *host_services(const host *h) { return h->names; }
bus *host_bus(host *h) { return h->bus; }

static void collect_cache(void *ud, cache *c)
{
    metrics_buf *b = ud;
    cache_stats st;
    cache_get_stats(c, &st);
    metrics_printf(b, "pulse_cache_requests_total{cache=\"%s\",result=\"l1_hit\"} %llu\n", cache_name(c),
                   (unsigned long long)st.l1_hits);
    metrics_printf(b, "pulse_cache_requests_total{cache=\"%s\",result=\"l2_hit\"} %llu\n", cache_name(c),
                   (unsigned long long)st.l2_hits);
    metrics_printf(b, "pulse_cache_requests_total{cache=\"%s\",result=\"miss\"} %llu\n", cache_name(c),
                   (unsigned long long)st.misses);
}

static void collect_cache_ratio(void *ud, cache *c)
{
    metrics_buf *b = ud;
    cache_stats st;
    cache_get_stats(c, &st);
    uint64_t all = st.l1_hits + st.l2_hits + st.misses;
    metrics_printf(b, "pulse_cache_hit_ratio{cache=\"%s\"} %.4f\n", cache_name(c),
                   all ? (double)(st.l1_hits + st.l2_hits) / (double)all : 0.0);
}

static void collect(void *ud, metrics_buf *b)
{
    host *h = ud;
    metrics_printf(b, "# HELP pulse_consumer_lag_events Events in the log after the consumer group's position.\n"
                      "# TYPE pulse_consumer_lag_events gauge\n");
    for (size_t i = 0; i < h->nconsumers; i++) {
        int64_t lag = 0;
        if (!bus_lag(h->bus, consumer_group(h->consumers[i]), &lag, NULL))
            metrics_printf(b, "pulse_consumer_lag_events{consumer=\"%s\"} %lld\n", consumer_group(h->consumers[i]),
                           (long long)lag);
    }
    metrics_printf(b, "# HELP pulse_consumer_handled_total Events applied by the consumer group in this process.\n"
                      "# TYPE pulse_consumer_handled_total counter\n");
    for (size_t i = 0; i < h->nconsumers; i++)
        metrics_printf(b, "pulse_consumer_handled_total{consumer=\"%s\"} %lld\n", consumer_group(h->consumers[i]),
                       (long long)consumer_handled(h->consumers[i]));
    metrics_printf(b, "# HELP pulse_outbox_depth Events committed to a service's outbox and not yet published.\n"
                      "# TYPE pulse_outbox_depth gauge\n");
    for (size_t i = 0; i < h->n; i++)
        if (h->relay[i])
            metrics_printf(b, "pulse_outbox_depth{service=\"%s\"} %lld\n", outbox_relay_service(h->relay[i]),
                           (long long)outbox_relay_depth(h->relay[i]));
    metrics_printf(b, "# HELP pulse_outbox_published_total Events published by a service's outbox relay.\n"
                      "# TYPE pulse_outbox_published_total counter\n");
    for (size_t i = 0; i < h->n; i++)
        if (h->relay[i])
            metrics_printf(b, "pulse_outbox_published_total{service=\"%s\"} %lld\n",
                           outbox_relay_service(h->relay[i]), (long long)outbox_relay_published(h->relay[i]));
    metrics_printf(b, "# HELP pulse_cache_requests_total Cache reads by layer that answered.\n"
                      "# TYPE pulse_cache_requests_total counter\n");
    cache_for_each(collect_cache, b);
    metrics_printf(b, "# HELP pulse_cache_hit_ratio Share of cache reads answered by L1 or L2.\n"
                      "# TYPE pulse_cache_hit_ratio gauge\n");
    cache_for_each(collect_cache_ratio, b);
    int64_t dead = 0;
    if (!bus_dead_count(h->bus, &dead, NULL))
        metrics_printf(b, "# HELP pulse_dlq_size Dead-lettered events waiting in the parking lot.\n"
                          "# TYPE pulse_dlq_size gauge\npulse_dlq_size %lld\n",
                       (long long)dead);
}

void host_metrics(host *h, metrics *m) { metrics_add_collector(m, collect, h); }

int host_replay(host *h, const char *projection, pl_error *err)
{
    const char *dot = strchr(projection, '.');
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        for (size_t k = 0; k < c->def->nconsumers; k++) {
            const consumer_def *d = &c->def->consumers[k];
            bool hit = dot ? (strncmp(projection, c->def->name, (size_t)(dot - projection)) == 0 &&
                              c->def->name[dot - projection] == '\0' && strcmp(dot + 1, d->name) == 0)
                           : strcmp(projection, d->name) == 0;
            if (hit)
                return consumer_replay(h->bus, c->sql, c->def->name, d, c, &h->copts, err);
        }
    }
    return err_set(err, PL_ENOTFOUND, "projection", "no hosted projection named \"%s\"", projection);
}

int host_command(host *h, const char *service, const char *verb, int argc, char **argv)
{
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        if (strcmp(c->def->name, service) != 0)
            continue;
        for (size_t k = 0; k < c->def->ncommands; k++)
            if (strcmp(c->def->commands[k].verb, verb) == 0)
                return c->def->commands[k].run(c, argc, argv);
    }
    fprintf(stderr, "pulse: %s has no command \"%s\"\n", service, verb);
    return 2;
}

void host_close(host *h)
{
    if (!h)
        return;
    /* consumers first (they write), then relays (they publish what is committed) */
    for (size_t i = 0; i < h->nconsumers; i++)
        consumer_request_stop(h->consumers[i]);
    for (size_t i = h->nconsumers; i-- > 0;)
        consumer_stop(h->consumers[i]);
    for (size_t i = h->n; i-- > 0;)
        outbox_relay_stop(h->relay[i]);
    for (size_t i = h->n; i-- > 0;) {
        service_ctx *c = &h->ctx[i];
        if (h->started[i] && c->def->stop)
            c->def->stop(c);
        if (!h->sql_of_doc[i])
            sql_close(c->sql);
        c->sql = NULL;
        doc_close(c->doc);
        kv_close(c->kv);
    }
    if (h->sessions) {
        auth_set_verifier(NULL, NULL);
        sessions_close(h->sessions);
    }
    bus_close(h->bus);
    free(h);
}
