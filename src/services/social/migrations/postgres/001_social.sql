-- social (PostgreSQL): see the sqlite twin for the meaning of each table.
-- users projection (from identity's events) and Idempotency-Key records.
-- Ids are UUIDv7 strings: time-ordered, so "newest first" is ORDER BY id DESC
-- and a page's cursor is the last id it returned (no gaps, no duplicates).
-- Deletes are hard and cascade by hand (no engine-specific FK settings).

-- Who exists, as identity announced it (pl.identity.user_registered.v1).
CREATE TABLE social_users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX social_users_username ON social_users (username);

CREATE TABLE social_posts (
    id            TEXT PRIMARY KEY,
    author_id     TEXT NOT NULL,
    text          TEXT NOT NULL,
    course_id     TEXT,
    visibility    TEXT NOT NULL CHECK (visibility IN ('public', 'followers')),
    like_count    BIGINT NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    comment_count BIGINT NOT NULL DEFAULT 0 CHECK (comment_count >= 0),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX social_posts_author ON social_posts (author_id, id);

CREATE TABLE social_comments (
    id          TEXT PRIMARY KEY,
    post_id     TEXT NOT NULL,
    author_id   TEXT NOT NULL,
    parent_id   TEXT,                 -- a top-level comment of the same post, or NULL
    text        TEXT NOT NULL,
    peer_review INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX social_comments_post ON social_comments (post_id, id);
CREATE INDEX social_comments_parent ON social_comments (parent_id);

CREATE TABLE social_likes (
    post_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (post_id, user_id)
);

-- id orders the follower/following lists (newest first).
CREATE TABLE social_follows (
    id          TEXT PRIMARY KEY,
    follower_id TEXT NOT NULL,
    followee_id TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (follower_id, followee_id)
);
CREATE INDEX social_follows_followee ON social_follows (followee_id, id);
CREATE INDEX social_follows_follower ON social_follows (follower_id, id);

CREATE TABLE social_campus_events (
    id               TEXT PRIMARY KEY,
    organizer_id     TEXT NOT NULL,
    title            TEXT NOT NULL,
    description      TEXT NOT NULL,
    location         TEXT NOT NULL,
    starts_at        TEXT NOT NULL,
    ends_at          TEXT NOT NULL,
    starts_ms        BIGINT NOT NULL,
    ends_ms          BIGINT NOT NULL CHECK (ends_ms > starts_ms),
    capacity         INTEGER CHECK (capacity IS NULL OR capacity >= 1),
    going_count      BIGINT NOT NULL DEFAULT 0 CHECK (going_count >= 0),
    interested_count BIGINT NOT NULL DEFAULT 0 CHECK (interested_count >= 0),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CHECK (capacity IS NULL OR going_count <= capacity)
);
CREATE INDEX social_campus_events_upcoming ON social_campus_events (starts_ms, id);

-- One row per (event, user); status 'cancelled' rows are kept so the next
-- change can say what came before. id orders the attendee list.
CREATE TABLE social_rsvps (
    event_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL CHECK (status IN ('going', 'interested', 'cancelled')),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX social_rsvps_list ON social_rsvps (event_id, id);

-- Idempotency-Key of POST /posts: (user, key) -> the post it created; rows
-- older than service.social.idempotency_ttl are swept.
CREATE TABLE social_idempotency (
    user_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    TEXT NOT NULL,         -- hash of the request body: a reuse with another body is refused
    post_id    TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX social_idempotency_age ON social_idempotency (created_ms);

-- Demo data waits here until the users it needs have been projected.
CREATE TABLE social_demo (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL              -- 'pending' or 'done'
);
