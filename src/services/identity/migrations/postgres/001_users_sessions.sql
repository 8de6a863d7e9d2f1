-- identity (PostgreSQL): users and their login sessions; the same schema as the sqlite twin.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,          -- lower-cased
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    bio           TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'teacher', 'admin')),
    created_at    TEXT NOT NULL,                 -- RFC 3339 UTC
    updated_at    TEXT NOT NULL,
    password_hash TEXT NOT NULL                  -- argon2id encoded string
);

-- Tokens are stored only as SHA-256 hashes.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    revoked_ms  BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
