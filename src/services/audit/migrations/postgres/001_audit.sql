-- audit (PostgreSQL): see the sqlite twin for the meaning of each column.
CREATE TABLE audit_entries (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor_id   TEXT,
    subject_id TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at         TEXT NOT NULL,
    trace_id   TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only';
END;
$$;
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();

CREATE TABLE audit_chain (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    hash TEXT NOT NULL
);
INSERT INTO audit_chain (id, hash) VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_users (
    user_id      TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
