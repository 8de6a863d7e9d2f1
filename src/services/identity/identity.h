/*
 * identity.h - internal to the identity service: its state, its user record
 * and its store functions. Nothing outside src/services/identity includes it.
 */
#ifndef PULSE_IDENTITY_IDENTITY_H
#define PULSE_IDENTITY_IDENTITY_H

#include "core/arena.h"
#include "services/identity/domain.h"
#include "services/service.h"
#include "services/sessions.h"
#include "store/cache.h"

#include <jansson.h>
#include <pthread.h>

typedef struct identity {
    service_ctx *ctx;
    uint32_t t_cost, m_cost_kib, parallelism;
    int64_t token_ttl_ms, login_window_ms;
    int max_fail_account, max_fail_ip;
    size_t password_min;
    sessions *sessions;   /* login sessions on identity's kv */
    cache *profiles;      /* user id -> private profile JSON (L1, L2 kv, L3 sql) */
    pthread_mutex_t dummy_lock;
    char dummy_hash[256]; /* verified against when the login names nobody; made on first use */
} identity;

typedef struct user {
    char id[40];
    const char *email, *username, *display_name, *bio, *role, *created_at, *updated_at, *password_hash;
} user;

/* ---- store.c: identity's sql store (all strings in results live in `a`) ---- */
int users_insert(sql_tx *tx, const user *u, pl_error *err);
/* 1 found, 0 none, <0 error */
int users_by_id(sql_tx *tx, arena *a, const char *id, user *out, pl_error *err);
int users_by_login(sql_tx *tx, arena *a, const char *login, user *out, pl_error *err);
int users_exists(sql_tx *tx, const char *column /* "email" | "username" */, const char *value, pl_error *err);
int users_update_profile(sql_tx *tx, const char *id, const char *display_name, const char *bio,
                         const char *now, pl_error *err);
int users_set_role(sql_tx *tx, const char *id, const char *role, const char *now, pl_error *err);
int users_count(sql_tx *tx, int64_t *n, pl_error *err);


/* ---- identity.c ---- */
int identity_hash_password(const identity *id, const char *password, char *out, size_t size);
bool identity_verify_password(const char *encoded, const char *password);
/* A hash of a random password with the current parameters, made once. */
const char *identity_dummy_hash(identity *id);
/* Creates a user (hashing the password) or fails with field errors. */
int identity_create_user(identity *id, arena *a, const char *email, const char *username, const char *password,
                         const char *display_name, const char *role, user *out, json_t **fields, pl_error *err);

/* ---- handlers.c ---- */
json_t *user_private_json(const user *u);
json_t *user_public_json(const user *u);
int identity_register(http_req *req, http_res *res);
int identity_login(http_req *req, http_res *res);
int identity_logout(http_req *req, http_res *res);
int identity_me_get(http_req *req, http_res *res);
int identity_me_patch(http_req *req, http_res *res);
int identity_user_get(http_req *req, http_res *res);
int identity_user_role(http_req *req, http_res *res);
int identity_load_profile(void *ud, const char *uid, char **val, size_t *len, pl_error *err);

#endif
