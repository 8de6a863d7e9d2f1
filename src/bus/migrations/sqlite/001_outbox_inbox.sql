-- The event backbone's tables in every service's own sql store.
-- Outbox: events written in the same transaction as the state change they
-- describe; the relay publishes them in seq (commit) order and deletes them.
CREATE TABLE pulse_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    partitionkey TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);
-- Inbox: the event ids each consumer group has applied, written in the same
-- transaction as the consumer's effects, so a redelivery is applied once.
CREATE TABLE pulse_inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX pulse_inbox_age ON pulse_inbox (consumer, handled_ms);
