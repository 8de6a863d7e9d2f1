/*
 * domain.h - identity's rules, free of I/O: what a valid email, username,
 * password and display name are, the roles, tokens, and the login failure
 * limiter.
 */
#ifndef PULSE_IDENTITY_DOMAIN_H
#define PULSE_IDENTITY_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDENTITY_USERNAME_MIN 3
#define IDENTITY_USERNAME_MAX 30
#define IDENTITY_DISPLAY_MIN 1
#define IDENTITY_DISPLAY_MAX 80
#define IDENTITY_BIO_MAX 500
#define IDENTITY_EMAIL_MAX 254
#define IDENTITY_PASSWORD_MAX 128 /* bytes */

/* Each returns NULL when valid, else a message for the field. */
const char *identity_check_email(const char *email);
const char *identity_check_username(const char *username);
const char *identity_check_password(const char *password, size_t min_len, const char *username, const char *email);
const char *identity_check_display_name(const char *name);

/* Lower-cases ASCII in place (emails and logins compare case-insensitively). */
void identity_lower(char *s);

bool identity_role_valid(const char *role);

/* A bearer token: "plt_" + 43 characters of base64url (256 random bits). */
#define IDENTITY_TOKEN_LEN 47
void identity_token_new(char out[IDENTITY_TOKEN_LEN + 1]);
/* SHA-256 of the token as 64 hex characters: what the store keeps. */
void identity_token_hash(const char *token, char out[65]);

/* A fixed-window failure counter per key (an account, a client address),
 * bounded in memory; thread-safe. */
typedef struct limiter limiter;
limiter *limiter_create(size_t capacity);
void     limiter_destroy(limiter *l); /* NULL is a no-op */
/* Seconds until `key` may try again (0 when it may now), given `max`
 * failures per `window_ms`. */
int64_t  limiter_retry_after(limiter *l, const char *key, int max, int64_t window_ms, int64_t now_ms);
void     limiter_fail(limiter *l, const char *key, int64_t window_ms, int64_t now_ms);
void     limiter_clear(limiter *l, const char *key);

#endif
