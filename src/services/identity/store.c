/* store.c - identity's queries over its sql store (portable SQL, $N placeholders). */
#include "services/identity/identity.h"

#include <stdio.h>
#include <string.h>

#define USER_COLS "id, email, username, display_name, bio, role, created_at, updated_at, password_hash"

typedef struct {
    arena *a;
    user *u;
} user_row;

static void read_user(void *ud, sql_rows *r)
{
    user_row *ur = ud;
    user *u = ur->u;
    snprintf(u->id, sizeof u->id, "%s", sql_text(r, 0));
    u->email = arena_strdup(ur->a, sql_text(r, 1));
    u->username = arena_strdup(ur->a, sql_text(r, 2));
    u->display_name = arena_strdup(ur->a, sql_text(r, 3));
    u->bio = arena_strdup(ur->a, sql_text(r, 4));
    u->role = arena_strdup(ur->a, sql_text(r, 5));
    u->created_at = arena_strdup(ur->a, sql_text(r, 6));
    u->updated_at = arena_strdup(ur->a, sql_text(r, 7));
    u->password_hash = arena_strdup(ur->a, sql_text(r, 8));
}

int users_insert(sql_tx *tx, const user *u, pl_error *err)
{
    return sql_exec(tx,
                    "INSERT INTO users (" USER_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    SQL_ARGS(SQL_TEXT(u->id), SQL_TEXT(u->email), SQL_TEXT(u->username), SQL_TEXT(u->display_name),
                             SQL_TEXT(u->bio), SQL_TEXT(u->role), SQL_TEXT(u->created_at), SQL_TEXT(u->updated_at),
                             SQL_TEXT(u->password_hash)),
                    NULL, err);
}

int users_by_id(sql_tx *tx, arena *a, const char *id, user *out, pl_error *err)
{
    user_row ur = {a, out};
    return sql_one(tx, "SELECT " USER_COLS " FROM users WHERE id = $1", SQL_ARGS(SQL_TEXT(id)), read_user, &ur, err);
}

int users_by_login(sql_tx *tx, arena *a, const char *login, user *out, pl_error *err)
{
    user_row ur = {a, out};
    const char *sql = strchr(login, '@') ? "SELECT " USER_COLS " FROM users WHERE email = $1"
                                         : "SELECT " USER_COLS " FROM users WHERE username = $1";
    return sql_one(tx, sql, SQL_ARGS(SQL_TEXT(login)), read_user, &ur, err);
}

int users_exists(sql_tx *tx, const char *column, const char *value, pl_error *err)
{
    const char *sql = strcmp(column, "email") == 0 ? "SELECT 1 FROM users WHERE email = $1"
                                                   : "SELECT 1 FROM users WHERE username = $1";
    return sql_one(tx, sql, SQL_ARGS(SQL_TEXT(value)), NULL, NULL, err);
}

int users_update_profile(sql_tx *tx, const char *id, const char *display_name, const char *bio, const char *now,
                         pl_error *err)
{
    return sql_exec(tx,
                    "UPDATE users SET display_name = COALESCE($2, display_name), bio = COALESCE($3, bio),"
                    " updated_at = $4 WHERE id = $1",
                    SQL_ARGS(SQL_TEXT(id), SQL_TEXT_OR_NULL(display_name), SQL_TEXT_OR_NULL(bio), SQL_TEXT(now)),
                    NULL, err);
}

int users_set_role(sql_tx *tx, const char *id, const char *role, const char *now, pl_error *err)
{
    return sql_exec(tx, "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1",
                    SQL_ARGS(SQL_TEXT(id), SQL_TEXT(role), SQL_TEXT(now)), NULL, err);
}

static void read_count(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

int users_count(sql_tx *tx, int64_t *n, pl_error *err)
{
    *n = 0;
    int rc = sql_one(tx, "SELECT count(*) FROM users", SQL_NOARGS, read_count, n, err);
    return rc < 0 ? rc : 0;
}
