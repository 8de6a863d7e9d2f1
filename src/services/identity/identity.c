/*
 * identity.c - the identity service: users, passwords, sessions, roles.
 * Declares the service (stores, config keys, routes), starts it, verifies
 * bearer tokens for the HTTP layer and seeds demo users.
 */
#include "services/identity/identity.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "bus/outbox.h"
#include "http/auth.h"

#include <argon2.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_key identity_keys[] = {
    {"service.identity", "argon2_t_cost", CFG_INT, "2", 1, 16, "argon2id passes"},
    {"service.identity", "argon2_m_cost", CFG_SIZE, "19MiB", 64 * 1024, (int64_t)1 << 30, "argon2id memory per hash"},
    {"service.identity", "argon2_parallelism", CFG_INT, "1", 1, 16, "argon2id lanes"},
    {"service.identity", "token_ttl", CFG_DURATION, "24h", 60000, 90LL * 86400000, "lifetime of a login token"},
    {"service.identity", "password_min_length", CFG_INT, "10", 8, 128, "shortest password accepted at registration"},
    {"service.identity", "login_max_failures", CFG_INT, "5", 1, 1000, "failed logins per account per window before 429"},
    {"service.identity", "login_max_failures_ip", CFG_INT, "20", 1, 100000, "failed logins per client address per window before 429"},
    {"service.identity", "login_window", CFG_DURATION, "15m", 1000, 86400000, "window of the failed-login limits"},
    {"service.identity", "profile_cache_size", CFG_SIZE, "8MiB", 0, (int64_t)1 << 32, "in-process (L1) cache of profiles"},
    {"service.identity", "profile_cache_ttl", CFG_DURATION, "60s", 1000, 86400000, "longest a cached profile is served"},
};

int identity_hash_password(const identity *id, const char *password, char *out, size_t size)
{
    unsigned char salt[16];
    randombytes_buf(salt, sizeof salt);
    int rc = argon2id_hash_encoded(id->t_cost, id->m_cost_kib, id->parallelism, password, strlen(password), salt,
                                   sizeof salt, 32, out, size);
    return rc == ARGON2_OK ? 0 : PL_EINTERNAL;
}

bool identity_verify_password(const char *encoded, const char *password)
{
    return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}

const char *identity_dummy_hash(identity *id)
{
    /* Made on first use, not at start: one hash costs as much as the rest of
     * the start-up together. */
    pthread_mutex_lock(&id->dummy_lock);
    if (!id->dummy_hash[0]) {
        char pw[33];
        unsigned char raw[16];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(pw, sizeof pw, raw, sizeof raw);
        if (identity_hash_password(id, pw, id->dummy_hash, sizeof id->dummy_hash))
            id->dummy_hash[0] = '\0';
    }
    pthread_mutex_unlock(&id->dummy_lock);
    return id->dummy_hash;
}

int identity_create_user(identity *id, arena *a, const char *email, const char *username, const char *password,
                         const char *display_name, const char *role, user *out, json_t **fields, pl_error *err)
{
    *fields = NULL;
    char *hash = arena_alloc(a, 256);
    if (identity_hash_password(id, password, hash, 256))
        return err_set(err, PL_EINTERNAL, NULL, "password hashing failed");
    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    memset(out, 0, sizeof *out);
    uuid7_new(out->id);
    char *em = arena_strdup(a, email);
    identity_lower(em);
    out->email = em;
    out->username = arena_strdup(a, username);
    out->display_name = arena_strdup(a, display_name);
    out->bio = "";
    out->role = role;
    out->created_at = out->updated_at = arena_strdup(a, now);
    out->password_hash = hash;

    sql_tx *tx;
    int rc = sql_begin(id->ctx->sql, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    json_t *f = json_object();
    int e = users_exists(tx, "email", out->email, err);
    int u = e < 0 ? 0 : users_exists(tx, "username", out->username, err);
    if (e < 0 || u < 0) {
        rc = e < 0 ? e : u;
    } else if (e || u) {
        if (e)
            json_object_set_new(f, "email", json_string("is already registered"));
        if (u)
            json_object_set_new(f, "username", json_string("is taken"));
        rc = PL_ECONFLICT;
    } else {
        rc = users_insert(tx, out, err);
        if (rc == PL_ECONFLICT) /* lost a race with a concurrent registration */
            json_object_set_new(f, strstr(err ? err->msg : "", "email") ? "email" : "username",
                                json_string("is already taken"));
        if (!rc)
            rc = outbox_emit(tx, "identity", "pl.identity.user_registered.v1", out->id, NULL,
                             json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", out->id, "username", out->username,
                                       "display_name", out->display_name, "role", out->role, "created_at",
                                       out->created_at),
                             NULL, err);
    }
    if (rc) {
        sql_rollback(tx);
        if (json_object_size(f))
            *fields = f;
        else
            json_decref(f);
        return rc;
    }
    json_decref(f);
    return sql_commit(tx, err);
}

/* ---- identity's own events: keep sessions and caches in step ------------------------ */

/* Runs in one instance per event; its cache_invalidate reaches every
 * instance's L1 through the kv channel. Both effects are idempotent. */
static int sync_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    identity *id = ((service_ctx *)ctx)->state;
    const char *uid = json_string_value(json_object_get(ev->data, "user_id"));
    if (!uid)
        return err_set(err, PL_EINVAL, "data", "%s without data.user_id", ev->type);
    if (strcmp(ev->type, "pl.identity.role_changed.v1") == 0) {
        /* The role as it is now, not as this event says: an older event
         * applied after a newer change must not bring an old role back. */
        arena *a = arena_create(1024);
        user u;
        /* Lock the row first (PostgreSQL): a role change committing meanwhile
         * then waits for us, and its own session rewrite comes after ours. */
        int rc = sql_exec(tx, "UPDATE users SET role = role WHERE id = $1", SQL_ARGS(SQL_TEXT(uid)), NULL, err);
        if (!rc)
            rc = users_by_id(tx, a, uid, &u, err);
        if (rc == 1)
            rc = sessions_set_role(id->sessions, uid, u.role, err);
        arena_destroy(a);
        if (rc < 0)
            return rc;
    }
    cache_invalidate(id->profiles, uid);
    return 0;
}

static const char *const sync_types[] = {"pl.identity.profile_updated.v1", "pl.identity.role_changed.v1", NULL};

static const consumer_def identity_consumers[] = {
    {.name = "sync", .types = sync_types, .handle = sync_handle},
};

/* ---- lifecycle -------------------------------------------------------------------- */

static int identity_start(service_ctx *ctx, pl_error *err)
{
    identity *id = calloc(1, sizeof *id);
    if (!id)
        abort();
    id->ctx = ctx;
    const char *sec = "service.identity";
    id->t_cost = (uint32_t)config_int(ctx->cfg, sec, "argon2_t_cost");
    id->m_cost_kib = (uint32_t)(config_int(ctx->cfg, sec, "argon2_m_cost") / 1024);
    id->parallelism = (uint32_t)config_int(ctx->cfg, sec, "argon2_parallelism");
    id->token_ttl_ms = config_int(ctx->cfg, sec, "token_ttl");
    id->password_min = (size_t)config_int(ctx->cfg, sec, "password_min_length");
    id->max_fail_account = (int)config_int(ctx->cfg, sec, "login_max_failures");
    id->max_fail_ip = (int)config_int(ctx->cfg, sec, "login_max_failures_ip");
    id->login_window_ms = config_int(ctx->cfg, sec, "login_window");
    if (id->m_cost_kib < 8 * id->parallelism) {
        unsigned need = 8 * id->parallelism;
        free(id);
        return err_set(err, PL_ECONFIG, "argon2_m_cost", "service.identity.argon2_m_cost must be at least %u KiB",
                       need);
    }
    /* Check the parameters now (cheaply: a tiny hash fails the same way a big one would). */
    char probe[256];
    identity cheap = *id;
    cheap.m_cost_kib = 8 * id->parallelism;
    cheap.t_cost = 1;
    if (identity_hash_password(&cheap, "probe-password-1", probe, sizeof probe)) {
        free(id);
        return err_set(err, PL_ECONFIG, "argon2", "argon2id cannot run with the configured parameters");
    }
    int rc = cache_create("profiles", ctx->kv, (size_t)config_int(ctx->cfg, sec, "profile_cache_size"),
                          config_int(ctx->cfg, sec, "profile_cache_ttl"), &id->profiles, err);
    if (rc) {
        free(id);
        return rc;
    }
    pthread_mutex_init(&id->dummy_lock, NULL);
    id->sessions = sessions_over(ctx->kv);
    ctx->state = id;
    auth_set_verifier(sessions_auth_verifier, id->sessions);
    return 0;
}

static void identity_stop(service_ctx *ctx)
{
    identity *id = ctx->state;
    auth_set_verifier(NULL, NULL);
    if (id) {
        cache_destroy(id->profiles);
        sessions_close(id->sessions);
        pthread_mutex_destroy(&id->dummy_lock);
    }
    free(id);
    ctx->state = NULL;
}

static int identity_demo(service_ctx *ctx, void (*out)(const char *line), pl_error *err)
{
    identity *id = ctx->state;
    sql_tx *tx;
    int64_t n = 0;
    int rc = sql_begin(ctx->sql, SQL_TX_READ, &tx, err);
    if (rc)
        return rc;
    rc = users_count(tx, &n, err);
    sql_rollback(tx);
    if (rc || n > 0)
        return rc;
    static const struct { const char *email, *username, *name, *role; } demo[] = {
        {"admin@campus.example", "admin", "Campus Admin", "admin"},
        {"ada@campus.example", "ada", "Ada Lovelace", "teacher"},
        {"sam@campus.example", "sam", "Sam Student", "student"},
        {"lin@campus.example", "lin", "Lin Learner", "student"},
    };
    static const char password[] = "campus-demo-1";
    arena *a = arena_create(4096);
    out("Demo users (password for each: campus-demo-1):");
    for (size_t i = 0; i < sizeof demo / sizeof demo[0] && !rc; i++) {
        user u;
        json_t *fields = NULL;
        rc = identity_create_user(id, a, demo[i].email, demo[i].username, password, demo[i].name, demo[i].role, &u,
                                  &fields, err);
        json_decref(fields);
        char line[256];
        snprintf(line, sizeof line, "  %-8s %-7s %s", demo[i].username, demo[i].role, demo[i].email);
        if (!rc)
            out(line);
    }
    out("Log in:  curl -s -X POST http://127.0.0.1:8080/api/v1/auth/login -H 'Content-Type: application/json' "
        "-d '{\"login\":\"sam\",\"password\":\"campus-demo-1\"}'");
    arena_destroy(a);
    return rc;
}

static const http_route identity_routes[] = {
    {"POST", "/api/v1/auth/register", identity_register, 0, "register a new student account"},
    {"POST", "/api/v1/auth/login", identity_login, 0, "log in with email or username and password"},
    {"POST", "/api/v1/auth/logout", identity_logout, HTTP_AUTH, "revoke the token used"},
    {"GET", "/api/v1/me", identity_me_get, HTTP_AUTH, "the caller's own account"},
    {"PATCH", "/api/v1/me", identity_me_patch, HTTP_AUTH, "change display name or bio"},
    {"GET", "/api/v1/users/{id}", identity_user_get, 0, "a user's public profile"},
    {"PATCH", "/api/v1/users/{id}/role", identity_user_role, HTTP_AUTH, "change a user's role (admins)"},
};

const service_def identity_service = {
    .version = 1,
    .name = "identity",
    .summary = "users, passwords, login sessions and roles",
    .stores = SERVICE_USES_SQL | SERVICE_USES_KV,
    .routes = identity_routes,
    .nroutes = sizeof identity_routes / sizeof identity_routes[0],
    .config_keys = identity_keys,
    .nconfig_keys = sizeof identity_keys / sizeof identity_keys[0],
    .start = identity_start,
    .stop = identity_stop,
    .demo = identity_demo,
    .consumers = identity_consumers,
    .nconsumers = sizeof identity_consumers / sizeof identity_consumers[0],
};
