-- testkit: effects of applied events (one row per application, so a double
-- application shows as two rows) and a projection counting events per subject.
CREATE TABLE testkit_effects (
    n          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    seq_in_key INTEGER,          -- data.seq, to check order per partition key
    applied_ms INTEGER NOT NULL
);
CREATE TABLE testkit_tally (
    subject TEXT PRIMARY KEY,
    n       INTEGER NOT NULL
);
