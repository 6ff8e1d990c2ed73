-- riverbank application schema.
--
-- This file is the whole schema, read by sqlc as one file and applied by
-- `riverbank migrate` as numbered steps. Rules (enforced by the migrator):
--   * a step starts with a line `-- riverbank:step <N> <name>`, N = 1, 2, 3, ...
--   * steps are append-only: a step that has been released is never edited;
--     a change is a new step at the end (ALTER TABLE ..., CREATE INDEX ...).
--     The migrator stores a checksum per applied step and refuses to run when
--     an applied step's text has changed.
--   * each step runs in its own transaction together with the row that
--     records it, so a step is applied completely or not at all.
-- River's own tables come from rivermigrate, applied before these steps.

-- riverbank:step 1 foundation
CREATE TABLE IF NOT EXISTS riverbank_schema_step (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- riverbank:step 2 ledger
-- Double-entry ledger. Postings are signed (debit > 0, credit < 0) and are
-- written PENDING in the business transaction; ledger.apply jobs add them to
-- account balances in per-account batches.
CREATE TYPE ledger_account_type AS ENUM ('ASSET', 'LIABILITY', 'EQUITY', 'INCOME', 'EXPENSE');
CREATE TYPE ledger_entry_status AS ENUM ('PENDING', 'APPLIED');

CREATE TABLE ledger_account (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code                text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9_.:-]{0,127}$'),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    type                ledger_account_type NOT NULL,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    system              boolean NOT NULL DEFAULT false,
    balance_minor       bigint NOT NULL DEFAULT 0,
    -- how many postings have been applied: a version that moves with balance
    applied_postings    bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entry (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key     text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    description         text NOT NULL,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    urgent              boolean NOT NULL DEFAULT false,
    status              ledger_entry_status NOT NULL DEFAULT 'PENDING',
    -- sha256 of the canonical request, to tell a replay from a conflict
    payload_hash        text NOT NULL,
    -- postings not yet applied; the entry is APPLIED when it reaches 0
    pending_postings    integer NOT NULL CHECK (pending_postings >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    applied_at          timestamptz,
    CONSTRAINT ledger_entry_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT ledger_entry_status_consistent CHECK ((status = 'APPLIED') = (pending_postings = 0))
);

CREATE TABLE ledger_posting (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id            bigint NOT NULL REFERENCES ledger_entry (id),
    account_id          bigint NOT NULL REFERENCES ledger_account (id),
    amount_minor        bigint NOT NULL CHECK (amount_minor <> 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    applied_at          timestamptz
);
-- The apply worker's claim and the sweep read only pending postings.
CREATE INDEX ledger_posting_pending_idx ON ledger_posting (account_id, id) WHERE applied_at IS NULL;
CREATE INDEX ledger_posting_account_idx ON ledger_posting (account_id, id);
CREATE INDEX ledger_posting_entry_idx ON ledger_posting (entry_id);

-- One row per account whose urgent postings await a ledger.apply job. An
-- urgent writer share-locks the row (or creates it and enqueues the job);
-- the job deletes it in its final transaction, which waits for every writer
-- holding the share lock, so no urgent posting can slip past the job's last
-- look. Share locks do not block each other: writers to a hot account do
-- not queue behind one another, unlike an upsert on the unique job row.
CREATE TABLE ledger_apply_signal (
    account_id  bigint PRIMARY KEY REFERENCES ledger_account (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- No code path can commit an unbalanced entry: at commit, every new entry
-- must have at least two postings, all in the entry's currency, summing to 0.
CREATE FUNCTION ledger_entry_check_balanced_row(e ledger_entry) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n         integer;
    total     numeric;
    badcur    integer;
    unapplied integer;
BEGIN
    SELECT count(*), coalesce(sum(p.amount_minor), 0), count(*) FILTER (WHERE a.currency <> e.currency),
           count(*) FILTER (WHERE p.applied_at IS NULL)
      INTO n, total, badcur, unapplied
      FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
     WHERE p.entry_id = e.id;
    IF n < 2 OR total <> 0 OR badcur > 0 THEN
        RAISE EXCEPTION 'ledger entry % is unbalanced (postings %, sum %, foreign-currency postings %)', e.id, n, total, badcur
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_balanced';
    END IF;
    IF e.pending_postings <> unapplied THEN
        RAISE EXCEPTION 'ledger entry % records % pending postings but has %', e.id, e.pending_postings, unapplied
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_balanced';
    END IF;
END
$$;
CREATE FUNCTION ledger_entry_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_entry_check_balanced_row(NEW);
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON ledger_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_check_balanced();

-- The same check for postings added to an existing entry (the entry
-- trigger above only fires for new entries; this one catches an extra
-- posting slipped into an entry committed earlier).
CREATE FUNCTION ledger_posting_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    e ledger_entry;
BEGIN
    SELECT * INTO e FROM ledger_entry WHERE id = NEW.entry_id;
    PERFORM ledger_entry_check_balanced_row(e);
    RETURN NULL;
END
$$;

-- Postings are immutable apart from being applied once.
CREATE FUNCTION ledger_posting_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger postings cannot be deleted' USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_posting_immutable';
    END IF;
    IF NEW.entry_id <> OLD.entry_id OR NEW.account_id <> OLD.account_id OR NEW.amount_minor <> OLD.amount_minor
       OR (OLD.applied_at IS NOT NULL) THEN
        RAISE EXCEPTION 'ledger posting % is immutable once written and applied once', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_posting_immutable';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ledger_posting_guard
    BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_guard();

-- Postings are checked at commit too, which catches a posting slipped into
-- an entry committed earlier (ledger_entry_balanced fires only for new
-- entries). For a new entry this repeats that check once per posting (each
-- reads the entry's postings through ledger_posting_entry_idx): for the
-- usual two-posting entry, two extra small lookups at commit, the price of
-- no code path being able to unbalance an entry.
CREATE CONSTRAINT TRIGGER ledger_posting_balanced
    AFTER INSERT ON ledger_posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_check_balanced();

INSERT INTO ledger_account (code, name, type, currency, system) VALUES
    ('platform:cash',                'Platform cash',                          'ASSET',     'CNY', true),
    ('loans:principal',              'Loan principal receivable',              'ASSET',     'CNY', true),
    ('loans:interest:dealer',        'Interest receivable, dealer-borne',      'ASSET',     'CNY', true),
    ('loans:interest:manufacturer',  'Interest receivable, manufacturer-borne','ASSET',     'CNY', true),
    ('loans:penalty',                'Penalty interest receivable',            'ASSET',     'CNY', true),
    ('loans:late_fee',               'Late fee receivable',                    'ASSET',     'CNY', true),
    ('income:interest',              'Interest income',                        'INCOME',    'CNY', true),
    ('income:penalty',               'Penalty interest income',                'INCOME',    'CNY', true),
    ('income:late_fee',              'Late fee income',                        'INCOME',    'CNY', true);

-- riverbank:step 3 orders
-- Products, orders, their items and history (SPEC §3).
--
-- Stock of a product moves between three counters:
--   stock_on_hand   units in the warehouse, including the reserved ones
--   stock_reserved  the part of on_hand held by CREATED orders
--   sold            units taken out by confirmed orders
-- available = on_hand - reserved. Reserving, confirming (on_hand -= q,
-- reserved -= q, sold += q) and releasing (reserved -= q, or on_hand += q,
-- sold -= q) never change on_hand + sold; only PUT /v1/products does.
CREATE TYPE order_status AS ENUM ('CREATED', 'CONFIRMED', 'PAID', 'SHIPPED', 'COMPLETED', 'CANCELLED');

CREATE TABLE product (
    sku             text PRIMARY KEY CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_minor     bigint NOT NULL CHECK (price_minor > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock_on_hand   bigint NOT NULL CHECK (stock_on_hand >= 0),
    stock_reserved  bigint NOT NULL DEFAULT 0 CHECK (stock_reserved >= 0),
    sold            bigint NOT NULL DEFAULT 0 CHECK (sold >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- never oversold: whatever path moves stock, reservations fit on hand
    CONSTRAINT product_reserved_within_on_hand CHECK (stock_reserved <= stock_on_hand)
);

CREATE TABLE orders (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    buyer_id        text NOT NULL CHECK (buyer_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$'),
    -- lower case: it names the ledger account merchant:{merchant_id}:payable
    merchant_id     text NOT NULL CHECK (merchant_id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    identifier      text NOT NULL CHECK (length(identifier) BETWEEN 1 AND 128),
    -- sha256 of the canonical request, to tell a replay from a conflict
    request_hash    text NOT NULL,
    status          order_status NOT NULL DEFAULT 'CREATED',
    total_minor     bigint NOT NULL CHECK (total_minor > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    paid_at         timestamptz,
    shipped_at      timestamptz,
    completed_at    timestamptz,
    cancelled_at    timestamptz,
    cancel_reason   text CHECK (length(cancel_reason) BETWEEN 1 AND 200),
    payment_id      text CHECK (length(payment_id) BETWEEN 1 AND 128),
    ledger_entry_id bigint REFERENCES ledger_entry (id),
    tracking_no     text CHECK (length(tracking_no) BETWEEN 1 AND 128),
    CONSTRAINT orders_buyer_identifier_key UNIQUE (buyer_id, identifier),
    CONSTRAINT orders_payment_id_key UNIQUE (payment_id),
    -- Every status carries exactly the facts of the transitions that led to
    -- it; a path that skipped a step (or a stray UPDATE) cannot commit.
    CONSTRAINT orders_facts_match_status CHECK (
        CASE status WHEN 'CREATED' THEN confirmed_at IS NULL
                    WHEN 'CANCELLED' THEN true
                    ELSE confirmed_at IS NOT NULL END
        AND (paid_at IS NOT NULL) = (status IN ('PAID', 'SHIPPED', 'COMPLETED'))
        AND (payment_id IS NOT NULL) = (paid_at IS NOT NULL)
        AND (ledger_entry_id IS NOT NULL) = (paid_at IS NOT NULL)
        AND (shipped_at IS NOT NULL) = (status IN ('SHIPPED', 'COMPLETED'))
        AND (tracking_no IS NOT NULL) = (shipped_at IS NOT NULL)
        AND (completed_at IS NOT NULL) = (status = 'COMPLETED')
        AND (cancelled_at IS NOT NULL) = (status = 'CANCELLED')
        AND (cancel_reason IS NOT NULL) = (status = 'CANCELLED')
    )
);
CREATE INDEX orders_buyer_idx ON orders (buyer_id, id);
CREATE INDEX orders_status_idx ON orders (status, id);
-- The confirmation sweeper reads only orders still waiting in CREATED.
CREATE INDEX orders_created_waiting_idx ON orders (created_at, id) WHERE status = 'CREATED';

CREATE TABLE order_item (
    order_id         bigint NOT NULL REFERENCES orders (id),
    line_no          integer NOT NULL CHECK (line_no >= 1),
    sku              text NOT NULL REFERENCES product (sku),
    quantity         bigint NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor > 0),
    amount_minor     bigint NOT NULL,
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT order_item_one_line_per_sku UNIQUE (order_id, sku),
    CONSTRAINT order_item_amount CHECK (amount_minor = quantity * unit_price_minor)
);

-- An order's history: one row per transition, written in the transition's
-- transaction. from_status is NULL on the creation event.
CREATE TABLE order_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id),
    from_status order_status,
    to_status   order_status NOT NULL,
    actor       text NOT NULL,
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_event_order_idx ON order_event (order_id, id);
