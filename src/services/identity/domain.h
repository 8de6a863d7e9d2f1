/*
 * domain.h - identity's rules, free of I/O: what a valid email, username,
 * password and display name are, the roles, and tokens. (Failed-login limits
 * and sessions live on the kv store: handlers.c, services/sessions.h.)
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

#endif
