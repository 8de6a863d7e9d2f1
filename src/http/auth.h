/*
 * auth.h - how the HTTP layer authenticates bearer tokens without knowing
 * who issues them. The identity service registers the verifier when it
 * starts; a process that does not host identity gets a verifier that reads
 * the shared session store (once sessions live on the kv store kind).
 */
#ifndef PULSE_HTTP_AUTH_H
#define PULSE_HTTP_AUTH_H

#include "http/http.h"

/* Returns 0 and fills *out for a live token; PL_EUNAUTHORIZED for a missing,
 * unknown, expired or revoked one; another PL_E* code when it cannot tell
 * (for example PL_EUNAVAILABLE when the session store is down). Called on
 * worker threads concurrently. */
typedef int (*auth_verify_fn)(void *ud, const char *token, principal *out);

void auth_set_verifier(auth_verify_fn fn, void *ud);
int  auth_verify(const char *token, principal *out);

#endif
