-- testkit (PostgreSQL): see the sqlite twin.
CREATE TABLE testkit_effects (
    n          BIGSERIAL PRIMARY KEY,
    event_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    seq_in_key BIGINT,
    applied_ms BIGINT NOT NULL
);
CREATE TABLE testkit_tally (
    subject TEXT PRIMARY KEY,
    n       BIGINT NOT NULL
);
