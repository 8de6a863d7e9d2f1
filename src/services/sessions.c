/* sessions.c - login sessions as kv records (see sessions.h for the layout). */
#include "services/sessions.h"
#include "services/service.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sessions {
    kv *kv;
    bool owned;
};

#define TOKEN_LEN 47 /* "plt_" + 43 characters of base64url */

sessions *sessions_over(kv *k)
{
    sessions *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->kv = k;
    return s;
}

int sessions_open(const config *cfg, sessions **out, pl_error *err)
{
    char name[96];
    service_store_name(cfg, "identity", name, sizeof name);
    kv_options o = {.data_dir = config_str(cfg, "server", "data"), .service = name};
    kv *k;
    int rc = kv_open(config_store_url(cfg, "identity", "kv"), &o, &k, err);
    if (rc)
        return rc;
    *out = sessions_over(k);
    (*out)->owned = true;
    return 0;
}

void sessions_close(sessions *s)
{
    if (!s)
        return;
    if (s->owned)
        kv_close(s->kv);
    free(s);
}

void sessions_token_hash(const char *token, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(out, 65, h, sizeof h);
}

static void key_of(char *out, size_t size, const char *kind, const char *id)
{
    snprintf(out, size, "%s:%s", kind, id);
}

static int put(sessions *s, const char *hash, const principal *p, int64_t expires_ms, pl_error *err)
{
    int64_t ttl = expires_ms - time_now_ms();
    if (ttl <= 0)
        return 0;
    json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "sid", p->session_id, "uid", p->user_id, "role", p->role, "exp",
                          (json_int_t)expires_ms);
    char *v = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    char key[96];
    key_of(key, sizeof key, "session", hash);
    int rc = kv_set(s->kv, key, v, strlen(v), ttl, err);
    free(v);
    return rc;
}

int sessions_create(sessions *s, const char *token_hash, const principal *p, int64_t expires_ms, pl_error *err)
{
    char key[96];
    key_of(key, sizeof key, "user_sessions", p->user_id);
    /* the index first: a session never exists without it (set_role and revoke_user find it) */
    kv_zop op = {key, token_hash, (double)expires_ms, 0};
    int rc = kv_zadd_batch(s->kv, &op, 1, err);
    return rc ? rc : put(s, token_hash, p, expires_ms, err);
}

/* 1 found (fills p and *exp), 0 none, <0 error. */
static int get(sessions *s, const char *hash, principal *p, int64_t *exp, pl_error *err)
{
    char key[96], *v = NULL;
    size_t len = 0;
    key_of(key, sizeof key, "session", hash);
    int rc = kv_get(s->kv, key, &v, &len, err);
    if (rc != 1)
        return rc;
    json_error_t je;
    json_t *j = json_loadb(v, len, 0, &je);
    free(v);
    const char *sid = json_string_value(json_object_get(j, "sid"));
    const char *uid = json_string_value(json_object_get(j, "uid"));
    const char *role = json_string_value(json_object_get(j, "role"));
    json_t *e = json_object_get(j, "exp");
    rc = 0;
    if (sid && uid && role && json_is_integer(e)) {
        snprintf(p->session_id, sizeof p->session_id, "%s", sid);
        snprintf(p->user_id, sizeof p->user_id, "%s", uid);
        snprintf(p->role, sizeof p->role, "%s", role);
        *exp = json_integer_value(e);
        rc = 1;
    } else {
        log_with(LOG_WARN, "malformed session record ignored", LF_STR("key", key));
    }
    json_decref(j);
    return rc;
}

int sessions_verify(sessions *s, const char *token, principal *out)
{
    if (strlen(token) != TOKEN_LEN || strncmp(token, "plt_", 4) != 0)
        return PL_EUNAUTHORIZED;
    char hash[65];
    sessions_token_hash(token, hash);
    pl_error err = {0};
    int64_t exp = 0;
    int rc = get(s, hash, out, &exp, &err);
    if (rc < 0) {
        log_with(LOG_ERROR, "session lookup failed", LF_STR("detail", err.msg));
        return rc == PL_ETIMEOUT ? PL_EUNAVAILABLE : rc;
    }
    return rc == 1 && exp > time_now_ms() ? 0 : PL_EUNAUTHORIZED;
}

int sessions_auth_verifier(void *ud, const char *token, principal *out) { return sessions_verify(ud, token, out); }

int sessions_revoke(sessions *s, const char *token_hash, const char *user_id, pl_error *err)
{
    char key[96];
    key_of(key, sizeof key, "session", token_hash);
    int rc = kv_del(s->kv, key, err);
    if (rc < 0)
        return rc;
    key_of(key, sizeof key, "user_sessions", user_id);
    rc = kv_zrem(s->kv, key, token_hash, err);
    return rc < 0 ? rc : 0;
}

/* Applies fn to every live session of the user, dropping expired index entries. */
static int each_session(sessions *s, const char *user_id, int (*fn)(sessions *, const char *hash, void *ud),
                        void *ud, pl_error *err)
{
    char key[96];
    key_of(key, sizeof key, "user_sessions", user_id);
    kv_zitem *items = NULL;
    size_t n = 0;
    int64_t now = time_now_ms();
    int rc = kv_zrange_score(s->kv, key, (double)now, 1e18, false, 0, 100000, &items, &n, err);
    for (size_t i = 0; i < n && !rc; i++)
        rc = fn(s, items[i].member, ud);
    kv_zitems_free(items, n);
    if (!rc) { /* the expired ones: their session keys are gone already */
        kv_zitem *old = NULL;
        size_t m = 0;
        if (!kv_zrange_score(s->kv, key, 0, (double)now, false, 0, 100000, &old, &m, NULL))
            for (size_t i = 0; i < m; i++)
                kv_zrem(s->kv, key, old[i].member, NULL);
        kv_zitems_free(old, m);
    }
    return rc;
}

static int rewrite_role(sessions *s, const char *hash, void *ud)
{
    principal p;
    int64_t exp = 0;
    pl_error err = {0};
    int rc = get(s, hash, &p, &exp, &err);
    if (rc != 1)
        return rc < 0 ? rc : 0; /* gone meanwhile: nothing to rewrite */
    snprintf(p.role, sizeof p.role, "%s", (const char *)ud);
    return put(s, hash, &p, exp, &err);
}

int sessions_set_role(sessions *s, const char *user_id, const char *role, pl_error *err)
{
    return each_session(s, user_id, rewrite_role, (void *)role, err);
}

static int revoke_one(sessions *s, const char *hash, void *ud)
{
    char key[96];
    key_of(key, sizeof key, "session", hash);
    int rc = kv_del(s->kv, key, NULL);
    return rc < 0 ? rc : 0;
}

int sessions_revoke_user(sessions *s, const char *user_id, pl_error *err)
{
    int rc = each_session(s, user_id, revoke_one, NULL, err);
    if (!rc) {
        char key[96];
        key_of(key, sizeof key, "user_sessions", user_id);
        rc = kv_del(s->kv, key, err);
    }
    return rc < 0 ? rc : 0;
}
