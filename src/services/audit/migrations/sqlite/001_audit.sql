-- audit: the append-only, hash-chained trail and the directory read model.
CREATE TABLE audit_entries (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    event_id   TEXT NOT NULL UNIQUE,     -- the event that caused the entry (one entry per event)
    event_type TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor_id   TEXT,                     -- who did it; NULL for self-service actions
    subject_id TEXT NOT NULL,            -- whom or what it concerns
    detail     TEXT NOT NULL,            -- the event's data, JSON
    at         TEXT NOT NULL,            -- when it happened (event time)
    trace_id   TEXT,
    prev_hash  TEXT NOT NULL,            -- hash of the previous entry (64 zeros for the first)
    hash       TEXT NOT NULL             -- SHA-256 over prev_hash and this entry's fields
);
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;

-- The head of the chain: one row, updated with every entry. Writers lock it
-- first (UPDATE), so concurrent consumers on PostgreSQL cannot fork the chain.
CREATE TABLE audit_chain (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    hash TEXT NOT NULL
);
INSERT INTO audit_chain (id, hash) VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000');

-- Projection of identity's events: who is who, for reading the trail.
CREATE TABLE audit_users (
    user_id      TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
