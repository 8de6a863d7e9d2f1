-- achievements: badges (each at most once per user) and the days a user was active.
CREATE TABLE ach_badges (
    badge_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    badge      TEXT NOT NULL,
    event_id   TEXT NOT NULL,        -- the event that earned it
    awarded_at TEXT NOT NULL,
    UNIQUE (user_id, badge)
);
CREATE INDEX ach_badges_user ON ach_badges (user_id, awarded_at);

CREATE TABLE ach_activity (
    user_id TEXT NOT NULL,
    day     BIGINT NOT NULL,         -- days since 1970-01-01 (UTC) of the event's time
    PRIMARY KEY (user_id, day)
);
