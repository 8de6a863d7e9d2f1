/* auth.c - the process-wide bearer token verifier slot. */
#include "http/auth.h"

#include <stdatomic.h>

typedef struct {
    auth_verify_fn fn;
    void *ud;
} verifier;

static verifier auth_current;
static atomic_bool auth_set;

void auth_set_verifier(auth_verify_fn fn, void *ud)
{
    /* Set once at start-up, before the server accepts requests. */
    auth_current.fn = fn;
    auth_current.ud = ud;
    atomic_store(&auth_set, fn != NULL);
}

int auth_verify(const char *token, principal *out)
{
    if (!atomic_load(&auth_set))
        return PL_EUNAVAILABLE; /* no identity service reachable from this process */
    return auth_current.fn(auth_current.ud, token, out);
}
