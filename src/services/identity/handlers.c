/* handlers.c - identity's HTTP handlers: validate at the edge, then store. */
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "bus/outbox.h"
#include "services/identity/identity.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *user_public_json(const user *u)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", u->id, "username", u->username, "display_name",
                     u->display_name, "bio", u->bio, "role", u->role, "created_at", u->created_at);
}

json_t *user_private_json(const user *u)
{
    json_t *j = user_public_json(u);
    json_object_set_new(j, "email", json_string(u->email));
    json_object_set_new(j, "updated_at", json_string(u->updated_at));
    return j;
}

/* A store failure: conflicts and unavailability pass through, the rest is internal. */
static int store_fail(http_req *req, int rc, const pl_error *err)
{
    return http_fail(req, rc, NULL, "%s", err->msg[0] ? err->msg : err_message(rc));
}

typedef struct registration {
    char *email, *username, *password, *display;
} registration;

static int register_finish(http_req *req, http_res *res, void *arg);

int identity_register(http_req *req, http_res *res)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"email", "username", "password", "display_name", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *email = jv_str(&v, "email", true, 3, IDENTITY_EMAIL_MAX);
    const char *username = jv_str(&v, "username", true, 0, 1000);
    const char *password = jv_str(&v, "password", true, 0, 10000);
    const char *display = jv_str(&v, "display_name", true, 0, 1000);
    const char *why;
    if (email && (why = identity_check_email(email)))
        jv_fail(&v, "email", why);
    if (username && (why = identity_check_username(username)))
        jv_fail(&v, "username", why);
    if (password && (why = identity_check_password(password, id->password_min, username, email)))
        jv_fail(&v, "password", why);
    if (display && (why = identity_check_display_name(display)))
        jv_fail(&v, "display_name", why);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    registration *r = arena_alloc(req->arena, sizeof *r);
    r->email = arena_strdup(req->arena, email);
    r->username = arena_strdup(req->arena, username);
    r->password = arena_strdup(req->arena, password);
    r->display = arena_strdup(req->arena, display);
    jv_free(&v);
    json_decref(body);
    /* hashing takes tens of milliseconds: not on an HTTP thread */
    return http_offload(req, res, register_finish, r);
}

static int register_finish(http_req *req, http_res *res, void *arg)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    registration *r = arg;
    user u;
    json_t *fields = NULL;
    pl_error err = {0};
    int rc = identity_create_user(id, req->arena, r->email, r->username, r->password, r->display, "student", &u,
                                  &fields, &err);
    sodium_memzero(r->password, strlen(r->password));
    if (rc == PL_ECONFLICT)
        return http_fail(req, rc, fields, "an account with this email or username already exists");
    json_decref(fields);
    if (rc)
        return store_fail(req, rc, &err);
    http_header_add(req, res, "Location", arena_sprintf(req->arena, "/api/v1/users/%s", u.id));
    http_json(res, 201, user_private_json(&u));
    return 0;
}

/* Failed-login limits: a counter per key that lives one window (kv_incr's
 * TTL-on-create makes it a fixed window shared by every instance). */
static int limit_wait(identity *id, const char *key, int max, int64_t *wait_s, pl_error *err)
{
    char *v = NULL;
    size_t len = 0;
    *wait_s = 0;
    int rc = kv_get(id->ctx->kv, key, &v, &len, err);
    if (rc != 1)
        return rc;
    long long n = strtoll(v, NULL, 10);
    free(v);
    if (n < max)
        return 0;
    int64_t ttl = 0;
    rc = kv_ttl(id->ctx->kv, key, &ttl, err);
    if (rc < 0)
        return rc;
    *wait_s = rc == 1 && ttl > 0 ? (ttl + 999) / 1000 : 1;
    return 0;
}

static int limit_fail(identity *id, const char *key, pl_error *err)
{
    int64_t n;
    return kv_incr(id->ctx->kv, key, 1, id->login_window_ms, &n, err);
}

static int too_many(http_req *req, http_res *res, int64_t wait)
{
    http_header_add(req, res, "Retry-After", arena_sprintf(req->arena, "%lld", (long long)wait));
    return http_fail(req, PL_ERATELIMIT, NULL, "too many failed logins; retry in %lld seconds", (long long)wait);
}

typedef struct credentials {
    char *login, *password;
} credentials;

static int login_finish(http_req *req, http_res *res, void *arg);

int identity_login(http_req *req, http_res *res)
{
    static const char *const allowed[] = {"login", "password", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *login_in = jv_str(&v, "login", true, 1, IDENTITY_EMAIL_MAX);
    const char *password = jv_str(&v, "password", true, 1, IDENTITY_PASSWORD_MAX);
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    credentials *c = arena_alloc(req->arena, sizeof *c);
    c->login = arena_strdup(req->arena, login_in);
    c->password = arena_strdup(req->arena, password);
    jv_free(&v);
    json_decref(body);
    identity_lower(c->login);
    /* verifying takes tens of milliseconds: not on an HTTP thread */
    return http_offload(req, res, login_finish, c);
}

static int login_finish(http_req *req, http_res *res, void *arg)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    credentials *c = arg;
    const char *login = c->login, *pw = c->password;
    pl_error err = {0};
    int rc;
    sql_tx *tx;
    user u;
    if ((rc = sql_begin(id->ctx->sql, SQL_TX_READ, &tx, &err)))
        return store_fail(req, rc, &err);
    rc = users_by_login(tx, req->arena, login, &u, &err);
    sql_rollback(tx);
    if (rc < 0)
        return store_fail(req, rc, &err);

    /* The account limit is keyed by the user's id, not by the login given:
     * keyed by the string, the username and the email would each get their
     * own allowance of guesses. An unknown login is keyed by itself, under
     * another prefix so that typing a user's (public) id as the login cannot
     * count against that user. */
    int64_t now = time_now_ms();
    int found = rc;
    const char *acct_key = found == 1 ? arena_sprintf(req->arena, "fail:acct:%s", u.id)
                                      : arena_sprintf(req->arena, "fail:login:%s", login);
    const char *ip_key = arena_sprintf(req->arena, "fail:ip:%s", http_client_ip(req));
    int64_t wait = 0, wait_ip = 0;
    if ((rc = limit_wait(id, acct_key, id->max_fail_account, &wait, &err)) ||
        (rc = limit_wait(id, ip_key, id->max_fail_ip, &wait_ip, &err)))
        return store_fail(req, rc, &err);
    if (wait || wait_ip)
        return too_many(req, res, wait > wait_ip ? wait : wait_ip);
    /* Verify against a dummy hash when nobody matched, so timing does not tell. */
    bool ok = identity_verify_password(found == 1 ? u.password_hash : identity_dummy_hash(id), pw) && found == 1;
    sodium_memzero(c->password, strlen(c->password));
    if (!ok) {
        if ((rc = limit_fail(id, acct_key, &err)) || (rc = limit_fail(id, ip_key, &err)))
            return store_fail(req, rc, &err);
        log_with(LOG_INFO, "login failed", LF_STR("client", http_client_ip(req)));
        return http_fail(req, PL_EUNAUTHORIZED, NULL, "invalid login or password");
    }
    kv_del(id->ctx->kv, acct_key, NULL);

    char token[IDENTITY_TOKEN_LEN + 1], hash[65];
    principal p = {0};
    identity_token_new(token);
    sessions_token_hash(token, hash);
    uuid7_new(p.session_id);
    snprintf(p.user_id, sizeof p.user_id, "%s", u.id);
    snprintf(p.role, sizeof p.role, "%s", u.role);
    int64_t expires = now + id->token_ttl_ms;
    if ((rc = sessions_create(id->sessions, hash, &p, expires, &err)))
        return store_fail(req, rc, &err);
    char exp[32];
    time_rfc3339(expires, exp, sizeof exp);
    http_json(res, 200, json_pack("{s:s, s:s, s:o}", "token", token, "expires_at", exp, "user", user_private_json(&u)));
    sodium_memzero(token, sizeof token);
    return 0;
}

int identity_logout(http_req *req, http_res *res)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    char hash[65];
    sessions_token_hash(req->bearer, hash);
    /* The event is written in the transaction and the session revoked before
     * it commits: a failed revocation emits nothing, and a commit that fails
     * after it leaves open sockets to the realtime gateway's periodic
     * re-verification (service.realtime.ping_interval). */
    sql_tx *tx;
    int rc = sql_begin(id->ctx->sql, SQL_TX_WRITE, &tx, &err);
    if (rc)
        return store_fail(req, rc, &err);
    const principal *p = req->principal;
    if ((rc = outbox_emit(tx, "identity", "pl.identity.session_revoked.v1", p->user_id, NULL,
                          json_pack("{s:s, s:s, s:s}", "user_id", p->user_id, "session_id", p->session_id, "reason",
                                    "logout"),
                          NULL, &err)) ||
        (rc = sessions_revoke(id->sessions, hash, p->user_id, &err))) {
        sql_rollback(tx);
        return store_fail(req, rc, &err);
    }
    if ((rc = sql_commit(tx, &err)))
        return store_fail(req, rc, &err);
    http_json(res, 204, NULL);
    return 0;
}

/* The profile cache's loader (L3): the user's private JSON from the sql store. */
int identity_load_profile(void *ud, const char *uid, char **val, size_t *len, pl_error *err)
{
    identity *id = ud;
    sql_tx *tx;
    int rc = sql_begin(id->ctx->sql, SQL_TX_READ, &tx, err);
    if (rc)
        return rc;
    arena *a = arena_create(1024);
    user u;
    rc = users_by_id(tx, a, uid, &u, err);
    sql_rollback(tx);
    if (rc == 1) {
        json_t *j = user_private_json(&u);
        *val = json_compact(j);
        *len = strlen(*val);
        json_decref(j);
    }
    arena_destroy(a);
    return rc;
}

/* The user's private JSON through the layered cache: 1 found, 0 not, <0 error (recorded on req). */
static int load_profile(http_req *req, const char *uid, json_t **out)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    pl_error err = {0};
    char *v = NULL;
    size_t len = 0;
    int rc = cache_get(id->profiles, uid, identity_load_profile, id, &v, &len, &err);
    if (rc < 0)
        return store_fail(req, rc, &err);
    if (rc == 0)
        return 0;
    json_error_t je;
    *out = json_loadb(v, len, 0, &je);
    free(v);
    return *out ? 1 : http_fail(req, PL_EINTERNAL, NULL, "cached profile is not JSON: %s", je.text);
}

int identity_me_get(http_req *req, http_res *res)
{
    json_t *j;
    int rc = load_profile(req, req->principal->user_id, &j);
    if (rc < 0)
        return rc;
    if (rc == 0) /* the session outlived its user */
        return http_fail(req, PL_EUNAUTHORIZED, NULL, "the account no longer exists");
    http_json(res, 200, j);
    return 0;
}

int identity_me_patch(http_req *req, http_res *res)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    static const char *const allowed[] = {"display_name", "bio", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *display = jv_str(&v, "display_name", false, 0, 1000);
    const char *bio = jv_str(&v, "bio", false, 0, IDENTITY_BIO_MAX);
    const char *why;
    if (display && (why = identity_check_display_name(display)))
        jv_fail(&v, "display_name", why);
    if (bio && utf8_len(bio) > IDENTITY_BIO_MAX)
        jv_fail(&v, "bio", "must be at most 500 characters");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    display = display ? arena_strdup(req->arena, display) : NULL;
    bio = bio ? arena_strdup(req->arena, bio) : NULL;
    jv_free(&v);
    json_decref(body);

    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    pl_error err = {0};
    sql_tx *tx;
    user u;
    if ((rc = sql_begin(id->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return store_fail(req, rc, &err);
    if ((display || bio) && (rc = users_update_profile(tx, req->principal->user_id, display, bio, now, &err))) {
        sql_rollback(tx);
        return store_fail(req, rc, &err);
    }
    rc = users_by_id(tx, req->arena, req->principal->user_id, &u, &err);
    if (rc != 1) {
        sql_rollback(tx);
        return rc < 0 ? store_fail(req, rc, &err) : http_fail(req, PL_EUNAUTHORIZED, NULL, "the account no longer exists");
    }
    if ((display || bio) &&
        (rc = outbox_emit(tx, "identity", "pl.identity.profile_updated.v1", u.id, NULL,
                          json_pack("{s:s, s:s, s:s, s:s}", "user_id", u.id, "display_name", u.display_name, "bio",
                                    u.bio, "updated_at", u.updated_at),
                          NULL, &err))) {
        sql_rollback(tx);
        return store_fail(req, rc, &err);
    }
    if ((rc = sql_commit(tx, &err)))
        return store_fail(req, rc, &err);
    cache_invalidate(id->profiles, u.id); /* read-your-writes here; the event tells other instances */
    http_json(res, 200, user_private_json(&u));
    return 0;
}

int identity_user_get(http_req *req, http_res *res)
{
    const char *uid = http_param(req, "id");
    if (!uuid_valid(uid))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    json_t *j;
    int rc = load_profile(req, uid, &j);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    json_object_del(j, "email"); /* the public profile */
    json_object_del(j, "updated_at");
    http_json(res, 200, j);
    return 0;
}

int identity_user_role(http_req *req, http_res *res)
{
    identity *id = ((service_ctx *)req->ctx)->state;
    if (strcmp(req->principal->role, "admin") != 0)
        return http_fail(req, PL_EFORBIDDEN, NULL, "only admins change roles");
    const char *uid = http_param(req, "id");
    static const char *const allowed[] = {"role", NULL};
    json_t *body;
    jv v;
    int rc = http_json_fields(req, &v, &body, allowed);
    if (rc)
        return rc;
    const char *role = jv_str(&v, "role", true, 1, 16);
    if (role && !identity_role_valid(role))
        jv_fail(&v, "role", "must be student, teacher or admin");
    if (!jv_ok(&v))
        return http_fail_fields(req, &v, body);
    role = arena_strdup(req->arena, role);
    jv_free(&v);
    json_decref(body);
    if (!uuid_valid(uid))
        return http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    if (strcmp(uid, req->principal->user_id) == 0)
        return http_fail(req, PL_EUNPROCESSABLE, NULL, "admins cannot change their own role");

    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    pl_error err = {0};
    sql_tx *tx;
    user u;
    if ((rc = sql_begin(id->ctx->sql, SQL_TX_WRITE, &tx, &err)))
        return store_fail(req, rc, &err);
    rc = users_by_id(tx, req->arena, uid, &u, &err);
    if (rc != 1) {
        sql_rollback(tx);
        return rc < 0 ? store_fail(req, rc, &err) : http_fail(req, PL_ENOTFOUND, NULL, "no such user");
    }
    if (strcmp(u.role, role) != 0 &&
        ((rc = users_set_role(tx, uid, role, now, &err)) ||
         (rc = outbox_emit(tx, "identity", "pl.identity.role_changed.v1", uid, NULL,
                           json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", uid, "old_role", u.role, "new_role", role,
                                     "changed_by", req->principal->user_id, "changed_at", now),
                           NULL, &err)))) {
        sql_rollback(tx);
        return store_fail(req, rc, &err);
    }
    if ((rc = sql_commit(tx, &err)))
        return store_fail(req, rc, &err);
    /* at once here; the role_changed event repeats both for other instances */
    if (sessions_set_role(id->sessions, uid, role, &err))
        log_with(LOG_WARN, "sessions keep the old role until the event is applied", LF_STR("detail", err.msg));
    cache_invalidate(id->profiles, uid);
    u.role = role;
    http_json(res, 200, user_public_json(&u));
    return 0;
}
