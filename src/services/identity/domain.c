/* domain.c - identity's pure rules and the failure limiter. */
#include "services/identity/domain.h"
#include "core/json.h"

#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *identity_check_email(const char *e)
{
    size_t n = strlen(e);
    if (n < 3 || n > IDENTITY_EMAIL_MAX)
        return "must be a valid email address";
    const char *at = strchr(e, '@');
    if (!at || at == e || strchr(at + 1, '@'))
        return "must be a valid email address";
    const char *domain = at + 1;
    const char *dot = strrchr(domain, '.');
    if (!dot || dot == domain || dot[1] == '\0' || strstr(domain, ".."))
        return "must be a valid email address";
    for (const char *p = e; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || strchr("()<>,;:\\\"[]", c))
            return "must be a valid email address";
    }
    if (domain[0] == '.' || domain[0] == '-')
        return "must be a valid email address";
    return NULL;
}

const char *identity_check_username(const char *u)
{
    size_t n = strlen(u);
    if (n < IDENTITY_USERNAME_MIN || n > IDENTITY_USERNAME_MAX)
        return "must be 3 to 30 characters";
    for (const char *p = u; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
            return "may contain only a-z, 0-9 and _";
    return NULL;
}

const char *identity_check_password(const char *pw, size_t min_len, const char *username, const char *email)
{
    size_t n = strlen(pw);
    if (utf8_len(pw) < min_len)
        return "is too short";
    if (n > IDENTITY_PASSWORD_MAX)
        return "must be at most 128 bytes";
    bool letter = false, other = false;
    for (const unsigned char *p = (const unsigned char *)pw; *p; p++) {
        if (isalpha(*p))
            letter = true;
        else
            other = true; /* digits, symbols and non-ASCII letters all count */
    }
    if (!letter || !other)
        return "must mix letters with digits or symbols";
    if ((username && strcasecmp(pw, username) == 0) || (email && strcasecmp(pw, email) == 0))
        return "must differ from the username and email";
    return NULL;
}

const char *identity_check_display_name(const char *name)
{
    size_t n = utf8_len(name);
    if (n < IDENTITY_DISPLAY_MIN || n > IDENTITY_DISPLAY_MAX)
        return "must be 1 to 80 characters";
    bool visible = false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
        visible |= *p != ' ';
    }
    return visible ? NULL : "must not be blank";
}

void identity_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

bool identity_role_valid(const char *r)
{
    return r && (!strcmp(r, "student") || !strcmp(r, "teacher") || !strcmp(r, "admin"));
}

void identity_token_new(char out[IDENTITY_TOKEN_LEN + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, "plt_", 4);
    sodium_bin2base64(out + 4, IDENTITY_TOKEN_LEN + 1 - 4, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

void identity_token_hash(const char *token, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(out, 65, h, sizeof h);
}

/* ---- limiter: open addressing over a fixed table; stale entries are reused ---- */

typedef struct {
    char key[96];
    int64_t window_start;
    int count;
} slot;

struct limiter {
    pthread_mutex_t lock;
    slot *v;
    size_t cap;
};

limiter *limiter_create(size_t capacity)
{
    limiter *l = calloc(1, sizeof *l);
    if (!l)
        abort();
    l->cap = capacity ? capacity : 4096;
    l->v = calloc(l->cap, sizeof *l->v);
    if (!l->v)
        abort();
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

void limiter_destroy(limiter *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->v);
    free(l);
}

#define PROBES 16

/* The key as stored: itself when it fits the slot, else a prefix and a hash
 * of the whole. Cutting long keys alone would make two accounts whose logins
 * share a long prefix share one failure count (one could lock the other
 * out). Every key of 95 bytes or more is hashed, so that no raw key can
 * spell another's hashed form. */
static void slot_key(const char *key, char out[sizeof ((slot *)0)->key])
{
    enum { SIZE = sizeof ((slot *)0)->key, PREFIX = SIZE - 1 - 1 - 32 };
    size_t n = strlen(key);
    if (n < SIZE - 1) {
        memcpy(out, key, n + 1);
        return;
    }
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)key, n, NULL, 0);
    memcpy(out, key, PREFIX);
    out[PREFIX] = '#';
    sodium_bin2hex(out + PREFIX + 1, 33, h, sizeof h);
}

static size_t khash(const char *k)
{
    size_t h = 1469598103934665603ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* Finds key's slot, or claims a free or expired one (or the oldest probed). */
static slot *lookup(limiter *l, const char *raw, int64_t window_ms, int64_t now, bool create)
{
    char key[sizeof l->v->key];
    slot_key(raw, key);
    size_t h = khash(key);
    slot *victim = NULL;
    bool victim_stale = false;
    for (size_t i = 0; i < PROBES; i++) {
        slot *s = &l->v[(h + i) % l->cap];
        if (s->key[0] && strcmp(s->key, key) == 0) {
            if (now - s->window_start >= window_ms) { /* window over: start afresh */
                s->window_start = now;
                s->count = 0;
            }
            return s;
        }
        bool stale = !s->key[0] || now - s->window_start >= window_ms;
        if (stale) {
            if (!victim_stale) {
                victim = s;
                victim_stale = true;
            }
        } else if (!victim || (!victim_stale && s->window_start < victim->window_start)) {
            victim = s; /* the table is full here: evict the oldest window */
        }
    }
    if (!create)
        return NULL;
    memcpy(victim->key, key, sizeof key);
    victim->window_start = now;
    victim->count = 0;
    return victim;
}

int64_t limiter_retry_after(limiter *l, const char *key, int max, int64_t window_ms, int64_t now)
{
    pthread_mutex_lock(&l->lock);
    slot *s = lookup(l, key, window_ms, now, false);
    int64_t wait = 0;
    if (s && s->count >= max)
        wait = (s->window_start + window_ms - now + 999) / 1000;
    pthread_mutex_unlock(&l->lock);
    return wait > 0 ? wait : 0;
}

void limiter_fail(limiter *l, const char *key, int64_t window_ms, int64_t now)
{
    pthread_mutex_lock(&l->lock);
    slot *s = lookup(l, key, window_ms, now, true);
    s->count++;
    pthread_mutex_unlock(&l->lock);
}

void limiter_clear(limiter *l, const char *raw)
{
    char key[sizeof l->v->key];
    slot_key(raw, key);
    pthread_mutex_lock(&l->lock);
    size_t h = khash(key);
    for (size_t i = 0; i < PROBES; i++) {
        slot *s = &l->v[(h + i) % l->cap];
        if (s->key[0] && strcmp(s->key, key) == 0)
            s->key[0] = '\0';
    }
    pthread_mutex_unlock(&l->lock);
}
