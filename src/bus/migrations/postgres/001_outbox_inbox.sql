-- The event backbone's tables in every service's own schema (see the sqlite twin).
CREATE TABLE pulse_outbox (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    partitionkey TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL
);
CREATE TABLE pulse_inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX pulse_inbox_age ON pulse_inbox (consumer, handled_ms);
