/*
 * sessions.h - login sessions on the kv store kind.
 *
 * Identity writes them (login, logout, role changes); every process reads them
 * to authenticate bearer tokens, so a process that does not host identity
 * authenticates too. They live in identity's kv namespace:
 *
 *   session:<sha256(token)>   {"sid","uid","role","exp"}   TTL = the token's lifetime
 *   user_sessions:<uid>       sorted set of token hashes, score = expiry (ms)
 *
 * Tokens themselves are never stored. Revocation deletes the key: effective at
 * once for every process. Thread-safe.
 */
#ifndef PULSE_SERVICES_SESSIONS_H
#define PULSE_SERVICES_SESSIONS_H

#include "core/config.h"
#include "http/http.h"
#include "store/kv.h"

typedef struct sessions sessions;

/* Over an open kv of identity's namespace (borrowed). */
sessions *sessions_over(kv *k);
/* Opens identity's kv as configured ([service.identity] kv, else [defaults] kv). */
int  sessions_open(const config *cfg, sessions **out, pl_error *err);
void sessions_close(sessions *s); /* closes the kv only when sessions_open opened it; NULL is a no-op */

/* SHA-256 of the token as 64 hex characters. */
void sessions_token_hash(const char *token, char out[65]);

int sessions_create(sessions *s, const char *token_hash, const principal *p, int64_t expires_ms, pl_error *err);
/* 0 and *out for a live token; PL_EUNAUTHORIZED for an unknown, expired or
 * revoked one; PL_EUNAVAILABLE when the kv cannot be reached. */
int sessions_verify(sessions *s, const char *token, principal *out);
int sessions_revoke(sessions *s, const char *token_hash, const char *user_id, pl_error *err);
/* Rewrites the role in every live session of the user (after a role change). */
int sessions_set_role(sessions *s, const char *user_id, const char *role, pl_error *err);
/* Revokes every session of the user. */
int sessions_revoke_user(sessions *s, const char *user_id, pl_error *err);

/* The verifier for the HTTP layer (http/auth.h): ud is a sessions*. */
int sessions_auth_verifier(void *ud, const char *token, principal *out);

#endif
