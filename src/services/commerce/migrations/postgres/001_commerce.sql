-- commerce (PostgreSQL): orders, the purchase saga's persisted state machine and
-- its step history, invoices with gapless per-year numbers, the catalog
-- projection of premium courses, and (in their own paysim_* tables) the
-- payment provider simulator's ledger. Times are RFC 3339 text; *_ms columns
-- are milliseconds since the epoch for the executor's scheduling.

-- what commerce knows about courses, from pl.courses.course_* events
CREATE TABLE commerce_catalog (
    course_id   TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    teacher_id  TEXT,
    premium     BIGINT NOT NULL,
    price_cents BIGINT,
    currency    TEXT,
    published   BIGINT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE commerce_orders (
    id           TEXT PRIMARY KEY,
    buyer_id     TEXT NOT NULL,
    course_id    TEXT NOT NULL,
    course_title TEXT NOT NULL,
    currency     TEXT NOT NULL,
    net_cents    BIGINT NOT NULL,
    tax_rate_bp  BIGINT NOT NULL,
    tax_cents    BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,           -- what is charged: net + tax
    state        TEXT NOT NULL,              -- pending|compensating|completed|failed|refunded|needs_attention
    step         TEXT NOT NULL,              -- the saga state
    reason       TEXT,
    idem_key     TEXT NOT NULL,
    payment_id   TEXT,
    refund_id    TEXT,
    invoice_id   TEXT,
    credit_note_id TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (buyer_id, idem_key)
);
CREATE INDEX commerce_orders_buyer ON commerce_orders (buyer_id, created_at);
-- at most one live order per buyer and course (concurrent purchases with different keys)
CREATE UNIQUE INDEX commerce_orders_one_live ON commerce_orders (buyer_id, course_id)
    WHERE state IN ('pending', 'compensating', 'completed', 'needs_attention', 'refunding');

-- one row per order: the saga's state machine
CREATE TABLE commerce_sagas (
    order_id     TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    attempt      BIGINT NOT NULL,           -- attempts of the current step so far
    next_at_ms   BIGINT NOT NULL,           -- when the executor looks at it next (deadline or retry)
    ver          BIGINT NOT NULL,           -- bumped by every transition (optimistic concurrency)
    reserved     BIGINT NOT NULL DEFAULT 0, -- courses confirmed the seat
    captured     BIGINT NOT NULL DEFAULT 0, -- the provider confirmed the capture
    parked_state TEXT,                       -- the step a needs_attention saga stopped at
    reason       TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX commerce_sagas_due ON commerce_sagas (state, next_at_ms);

CREATE TABLE commerce_saga_steps (
    seq      BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL,
    step     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    attempt  BIGINT NOT NULL,
    at       TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX commerce_saga_steps_order ON commerce_saga_steps (order_id, seq);

CREATE TABLE commerce_invoices (
    id             TEXT PRIMARY KEY,
    number         TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,            -- invoice|credit_note
    order_id       TEXT NOT NULL,
    buyer_id       TEXT NOT NULL,
    currency       TEXT NOT NULL,
    subtotal_cents BIGINT NOT NULL,
    tax_rate_bp    BIGINT NOT NULL,
    tax_cents      BIGINT NOT NULL,
    total_cents    BIGINT NOT NULL,
    lines          TEXT NOT NULL,            -- JSON array of line items
    issued_at      TEXT NOT NULL,
    UNIQUE (order_id, kind)
);

-- gapless numbering: the counter row is updated in the invoice's transaction
CREATE TABLE commerce_invoice_counters (
    kind TEXT NOT NULL,
    year BIGINT NOT NULL,
    last BIGINT NOT NULL,
    PRIMARY KEY (kind, year)
);

-- the payment provider simulator's own ledger (stands in for the gateway's books)
CREATE TABLE paysim_charges (
    key          TEXT PRIMARY KEY,           -- the capture's idempotency key
    payment_id   TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    calls        BIGINT NOT NULL,           -- capture calls seen with this key
    refunded_cents BIGINT NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
CREATE TABLE paysim_refunds (
    key          TEXT PRIMARY KEY,           -- the refund's idempotency key
    charge_key   TEXT NOT NULL,
    refund_id    TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    created_at   TEXT NOT NULL
);
-- calls per key, for the simulator's "fail the first call" rules
CREATE TABLE paysim_calls (
    key   TEXT PRIMARY KEY,
    calls BIGINT NOT NULL
);
