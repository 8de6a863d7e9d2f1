/* host.c - opens, migrates, starts and stops the services of this process. */
#include "services/host.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERVICES 32

struct host {
    const config *cfg;
    service_ctx ctx[MAX_SERVICES];
    bool started[MAX_SERVICES];
    size_t n;
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
    return rc;
}

static int open_stores(host *h, service_ctx *c, pl_error *err)
{
    if (!(c->def->stores & SERVICE_USES_SQL))
        return 0;
    const char *url = config_store_url(h->cfg, c->def->name, "sql");
    sql_options o = {
        .data_dir = c->data_dir,
        .service = c->def->name,
    };
    int rc = sql_open(url, &o, &c->sql, err);
    if (rc)
        return rc;
    rc = sql_migrate(c->sql, c->def->name, sql_builtin_migrations, sql_builtin_nmigrations, err);
    if (rc < 0)
        return rc;
    if (rc > 0)
        log_with(LOG_INFO, "migrated", LF_STR("service", c->def->name), LF_STR("engine", sql_engine(c->sql)),
                 LF_INT("applied", rc));
    return 0;
}

int host_open(const config *cfg, const char *services, host **out, pl_error *err)
{
    host *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->cfg = cfg;
    int rc = select_services(h, services, err);
    for (size_t i = 0; i < h->n && !rc; i++)
        rc = open_stores(h, &h->ctx[i], err);
    if (rc) {
        host_close(h);
        return rc;
    }
    *out = h;
    return 0;
}

int host_start(host *h, router *r, pl_error *err)
{
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        log_ctx_service(c->def->name);
        int rc = c->def->start ? c->def->start(c, err) : 0;
        log_ctx_service(NULL);
        if (rc)
            return rc;
        h->started[i] = true;
        for (size_t k = 0; k < c->def->nroutes; k++) {
            rc = router_add(r, &c->def->routes[k], c);
            if (rc)
                return err_set(err, rc, "routes", "service %s: cannot add route %s %s", c->def->name,
                               c->def->routes[k].method, c->def->routes[k].pattern);
        }
    }
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
    for (size_t i = 0; i < h->n; i++) {
        service_ctx *c = &h->ctx[i];
        if (c->sql) {
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

void host_close(host *h)
{
    if (!h)
        return;
    for (size_t i = h->n; i-- > 0;) {
        service_ctx *c = &h->ctx[i];
        if (h->started[i] && c->def->stop)
            c->def->stop(c);
        sql_close(c->sql);
    }
    free(h);
}
