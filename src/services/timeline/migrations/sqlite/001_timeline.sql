-- timeline (SQLite): the read models the timeline builds from events (never from social's or identity's
-- stores). The feeds themselves are sorted sets in the service's kv store; these tables say who follows whom,
-- what each post is (for hydrating a page) and whose feed keys exist (for emptying them on replay).

-- users, from identity's user_registered / profile_updated
CREATE TABLE timeline_users (
    user_id      TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    display_name TEXT NOT NULL
);

-- the follow graph, from social's user_followed / user_unfollowed
CREATE TABLE timeline_follows (
    followee_id TEXT NOT NULL,
    follower_id TEXT NOT NULL,
    PRIMARY KEY (followee_id, follower_id)
);
CREATE INDEX timeline_follows_follower ON timeline_follows (follower_id, followee_id);

-- per author: followers (decides fan-out on write or merge on read) and whether any post of theirs was
-- left out of the fan-out (then readers following them merge "posts:<author>" in at read time)
CREATE TABLE timeline_authors (
    author_id TEXT PRIMARY KEY,
    followers INTEGER NOT NULL DEFAULT 0,
    unfanned  INTEGER NOT NULL DEFAULT 0
);

-- the post read model, from social's post_created / post_updated / post_deleted
CREATE TABLE timeline_posts (
    post_id    TEXT PRIMARY KEY,
    author_id  TEXT NOT NULL,
    text       TEXT NOT NULL,
    course_id  TEXT,
    visibility TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    fanned     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX timeline_posts_author ON timeline_posts (author_id, created_ms);

-- counters live apart from the post row: a like or comment (partitioned by post) may be applied before
-- the post_created (partitioned by author) that it refers to
CREATE TABLE timeline_post_stats (
    post_id       TEXT PRIMARY KEY,
    like_count    INTEGER NOT NULL DEFAULT 0,
    comment_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE timeline_likes (
    user_id TEXT NOT NULL,
    post_id TEXT NOT NULL,
    PRIMARY KEY (user_id, post_id)
);
CREATE INDEX timeline_likes_post ON timeline_likes (post_id);
CREATE TABLE timeline_comments (
    comment_id TEXT PRIMARY KEY,
    post_id    TEXT NOT NULL
);

-- every user whose "feed:<id>", "posts:<id>" or "likes:<id>" key may exist in kv: the replay's reset deletes them
CREATE TABLE timeline_feed_owners (
    user_id TEXT PRIMARY KEY
);
