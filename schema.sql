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

-- One row per account whose urgent postings await a ledger.apply job: a
-- writer that finds none creates it and enqueues the job; the job deletes
-- it in its final transaction, after taking the account's apply lock
-- exclusively (see ledger_request_apply), so no urgent posting can slip past
-- the job's last look.
CREATE TABLE ledger_apply_signal (
    account_id  bigint PRIMARY KEY REFERENCES ledger_account (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- ledger_request_apply is an urgent writer's half of the apply protocol in
-- one round trip: take a shared transaction-level advisory lock per account
-- (in id order; the apply job's final transaction takes it exclusively, and
-- the lock manager queues new shared requests behind a waiting exclusive
-- one, so writers cannot starve the job), then create the apply signal of
-- every account that has none. It returns the accounts whose signal it
-- created: the caller enqueues ledger.apply for exactly those. In READ
-- COMMITTED each statement of a volatile function takes a new snapshot, so
-- the signal lookup sees every job that finished before the lock was
-- granted.
CREATE FUNCTION ledger_request_apply(ids bigint[]) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    created bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1919251317, (id % 2147483647)::integer)
       FROM (SELECT DISTINCT unnest(ids) AS id ORDER BY 1) s;
    WITH ins AS (
        INSERT INTO ledger_apply_signal (account_id)
        SELECT DISTINCT unnest(ids)
        ON CONFLICT (account_id) DO NOTHING
        RETURNING account_id
    )
    SELECT coalesce(array_agg(account_id ORDER BY account_id), '{}') INTO created FROM ins;
    RETURN created;
END
$$;

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
    same_writer boolean;
BEGIN
    -- A posting written by the same (sub)transaction as its entry (the
    -- normal case: one statement writes both) is already covered by
    -- ledger_entry_balanced, which sees all of the entry's postings.
    SELECT e2.xmin = p.xmin INTO same_writer
      FROM ledger_entry e2, ledger_posting p
     WHERE e2.id = NEW.entry_id AND p.id = NEW.id;
    IF same_writer THEN
        RETURN NULL;
    END IF;
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
-- entries). For a posting written together with its entry it only
-- compares the two rows' xmin (two primary-key lookups) and stops.
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
-- Every transition rewrites the order row with a new status, so it is
-- never a HOT update and adds an entry to every index on orders: they are
-- kept to what the API needs (pages of a buyer's or a status's orders,
-- newest first, as index range scans); the payment_id index holds paid
-- orders only.
CREATE UNIQUE INDEX orders_payment_id_key ON orders (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX orders_buyer_idx ON orders (buyer_id, id);
CREATE INDEX orders_status_idx ON orders (status, id);
-- The confirmation sweeper reads only orders still waiting in CREATED.
CREATE INDEX orders_created_waiting_idx ON orders (created_at, id) WHERE status = 'CREATED';

-- One line per sku (the primary key); line_no keeps the request's order.
CREATE TABLE order_item (
    order_id         bigint NOT NULL REFERENCES orders (id),
    sku              text NOT NULL REFERENCES product (sku),
    line_no          integer NOT NULL CHECK (line_no >= 1),
    quantity         bigint NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor > 0),
    amount_minor     bigint NOT NULL,
    CONSTRAINT order_item_pkey PRIMARY KEY (order_id, sku),
    CONSTRAINT order_item_amount CHECK (amount_minor = quantity * unit_price_minor)
);

-- An order's history: one row per transition, written in the transition's
-- transaction. from_status is NULL on the creation event.
CREATE TABLE order_event (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    order_id    bigint NOT NULL REFERENCES orders (id),
    from_status order_status,
    to_status   order_status NOT NULL,
    actor       text NOT NULL,
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- one index serves both identity and an order's history in order
    CONSTRAINT order_event_pkey PRIMARY KEY (order_id, id)
);

-- Stock moves lock first and update second, as two statements. The lock
-- (ORDER BY sku ... FOR NO KEY UPDATE) is what makes concurrent
-- multi-item orders deadlock-free; it follows a row's update chain to its
-- newest version. The update must then read that version, which only a
-- statement with a newer snapshot can: a single statement that locks in a
-- CTE and updates in the same snapshot reaches the row through its old
-- version, and two such statements deadlock on the old version's tuple
-- lock. Functions run each statement with a fresh snapshot, so these keep
-- lock-then-update to one round trip for the caller.

-- orders_reserve reserves the lines of a new order (skus[i] × quantities[i];
-- skus are distinct): lock the products in sku order, then reserve every
-- line whose quantity is available at that instant (the conditional update
-- can never oversell; product_reserved_within_on_hand backs it up). Returns
-- every product found, with its price and availability before this call
-- and whether its line was reserved; the caller rolls back unless all were.
CREATE FUNCTION orders_reserve(p_skus text[], p_quantities bigint[])
RETURNS TABLE (sku text, price_minor bigint, currency text, available bigint, reserved boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM product p WHERE p.sku = ANY(p_skus) ORDER BY p.sku FOR NO KEY UPDATE;
    RETURN QUERY
    WITH upd AS (
        UPDATE product p
        SET stock_reserved = p.stock_reserved + l.quantity,
            updated_at = now()
        FROM unnest(p_skus, p_quantities) AS l(sku, quantity)
        WHERE p.sku = ANY(p_skus)
          AND p.sku = l.sku
          AND p.stock_on_hand - p.stock_reserved >= l.quantity
        RETURNING p.sku
    )
    SELECT p.sku, p.price_minor, p.currency, p.stock_on_hand - p.stock_reserved,
           EXISTS (SELECT 1 FROM upd WHERE upd.sku = p.sku)
    FROM product p
    WHERE p.sku = ANY(p_skus)
    ORDER BY p.sku;
END
$$;

-- orders_move_stock moves the stock of every line of an order: each
-- counter by its coefficient × the line's quantity (confirm: -1, -1, +1;
-- release a reservation: 0, -1, 0; return sold units: +1, 0, -1). It locks
-- the products in sku order first, fails unless every line moved, and
-- returns the number of lines.
CREATE FUNCTION orders_move_stock(p_order_id bigint, d_on_hand bigint, d_reserved bigint, d_sold bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    locked integer;
    moved  integer;
BEGIN
    PERFORM 1 FROM product p JOIN order_item oi ON oi.sku = p.sku
     WHERE oi.order_id = p_order_id
     ORDER BY p.sku
       FOR NO KEY UPDATE OF p;
    GET DIAGNOSTICS locked = ROW_COUNT;
    UPDATE product p
    SET stock_on_hand  = p.stock_on_hand + d_on_hand * oi.quantity,
        stock_reserved = p.stock_reserved + d_reserved * oi.quantity,
        sold           = p.sold + d_sold * oi.quantity,
        updated_at     = now()
    FROM order_item oi
    WHERE oi.order_id = p_order_id
      AND p.sku = oi.sku
      AND p.sku = ANY(ARRAY(SELECT i.sku FROM order_item i WHERE i.order_id = p_order_id));
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved = 0 OR moved <> locked THEN
        RAISE EXCEPTION 'order %: stock moved for % of % lines', p_order_id, moved, locked
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    RETURN moved;
END
$$;

-- riverbank:step 4 currencies
-- An account is identified by (code, currency): system accounts and
-- merchant payables exist once per currency, created by the internal writer
-- that first needs them (the CNY system accounts of step 2 stay).
ALTER TABLE ledger_account DROP CONSTRAINT ledger_account_code_key;
ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_code_currency_key UNIQUE (code, currency);

-- riverbank:step 5 lending
-- Credit lines, loans, repayments and credit restorations (SPEC §6).
--
-- A credit line has one currency for life. used_minor moves only by loans
-- (used += principal, a conditional update that never exceeds the limit)
-- and credit restorations (used -= repaid principal, once per repayment);
-- the limit is set by PUT and may be lowered below used (available is then
-- 0 and nothing is clawed back), so used <= limit is not a constraint.
CREATE TABLE credit_line (
    borrower_id  text PRIMARY KEY CHECK (borrower_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$'),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    limit_minor  bigint NOT NULL CHECK (limit_minor BETWEEN 0 AND 1000000000000000),
    used_minor   bigint NOT NULL DEFAULT 0 CHECK (used_minor >= 0),
    frozen       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE loan_status AS ENUM ('ACTIVE', 'OVERDUE', 'REPAID');
CREATE TYPE loan_interest_mode AS ENUM ('DEALER', 'MANUFACTURER', 'SPLIT');

CREATE TABLE loan (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loan_no                  text NOT NULL CHECK (loan_no ~ '^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$'),
    -- sha256 of the canonical request, to tell a replay from a conflict
    request_hash             text NOT NULL,
    borrower_id              text NOT NULL REFERENCES credit_line (borrower_id),
    currency                 text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    principal_minor          bigint NOT NULL CHECK (principal_minor BETWEEN 1 AND 1000000000000000),
    annual_rate_bps          integer NOT NULL CHECK (annual_rate_bps BETWEEN 0 AND 100000),
    penalty_rate_bps         integer NOT NULL CHECK (penalty_rate_bps BETWEEN 0 AND 100000),
    late_fee_minor           bigint NOT NULL CHECK (late_fee_minor BETWEEN 0 AND 1000000000000000),
    start_date               date NOT NULL,
    due_date                 date NOT NULL,
    interest_mode            loan_interest_mode NOT NULL,
    dealer_id                text NOT NULL CHECK (dealer_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$'),
    manufacturer_id          text CHECK (manufacturer_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$'),
    manufacturer_share_bps   integer NOT NULL DEFAULT 0,
    status                   loan_status NOT NULL DEFAULT 'ACTIVE',
    principal_outstanding_minor             bigint NOT NULL CHECK (principal_outstanding_minor >= 0),
    interest_outstanding_dealer_minor       bigint NOT NULL DEFAULT 0 CHECK (interest_outstanding_dealer_minor >= 0),
    interest_outstanding_manufacturer_minor bigint NOT NULL DEFAULT 0 CHECK (interest_outstanding_manufacturer_minor >= 0),
    penalty_outstanding_minor               bigint NOT NULL DEFAULT 0 CHECK (penalty_outstanding_minor >= 0),
    late_fee_outstanding_minor              bigint NOT NULL DEFAULT 0 CHECK (late_fee_outstanding_minor >= 0),
    days_past_due            integer NOT NULL DEFAULT 0 CHECK (days_past_due >= 0),
    -- the last business date close of business processed for this loan:
    -- a repayment must be value-dated after it, and COB processes a date
    -- for a loan only when it is the next one (exactly once per loan and date)
    last_closed_date         date,
    -- Accrual state kept by close of business (SPEC §7). The month_*
    -- columns accrue the current month (acc_month); when a loan's first
    -- date of a new month closes, the finished month moves to
    -- loan_accrual_month (one row per loan and month, written once) and
    -- its dealer interest to prev_month_interest_dealer_minor. Overdue
    -- interest needs dealer interest accrued through the last or the
    -- second-last month end: lifetime total − this month (− last month).
    acc_month                          date,
    month_interest_dealer_minor        bigint NOT NULL DEFAULT 0,
    month_interest_manufacturer_minor  bigint NOT NULL DEFAULT 0,
    month_penalty_minor                bigint NOT NULL DEFAULT 0,
    month_late_fee_minor               bigint NOT NULL DEFAULT 0,
    prev_month_interest_dealer_minor   bigint NOT NULL DEFAULT 0,
    interest_dealer_accrued_minor      bigint NOT NULL DEFAULT 0,
    disbursement_entry_id    bigint NOT NULL REFERENCES ledger_entry (id),
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    repaid_at                timestamptz,
    CONSTRAINT loan_loan_no_key UNIQUE (loan_no),
    CONSTRAINT loan_dates CHECK (due_date > start_date),
    CONSTRAINT loan_share CHECK (CASE interest_mode WHEN 'SPLIT' THEN manufacturer_share_bps BETWEEN 1 AND 9999
                                                    ELSE manufacturer_share_bps = 0 END),
    CONSTRAINT loan_manufacturer CHECK (interest_mode = 'DEALER' OR manufacturer_id IS NOT NULL),
    -- REPAID exactly when nothing is owed any more
    CONSTRAINT loan_repaid_when_nothing_owed CHECK ((status = 'REPAID') = (
        principal_outstanding_minor = 0 AND interest_outstanding_dealer_minor = 0
        AND interest_outstanding_manufacturer_minor = 0 AND penalty_outstanding_minor = 0
        AND late_fee_outstanding_minor = 0)),
    CONSTRAINT loan_repaid_at CHECK ((repaid_at IS NOT NULL) = (status = 'REPAID'))
) WITH (fillfactor = 70);
-- fillfactor 70: close of business rewrites every open loan once a day
-- without touching an indexed column; free space on the page lets those
-- be HOT updates (no index writes, pruned in place) instead of 1M index
-- insertions per date.
CREATE INDEX loan_borrower_idx ON loan (borrower_id, id);
CREATE INDEX loan_status_idx ON loan (status, id);

CREATE TYPE repayment_payer AS ENUM ('DEALER', 'MANUFACTURER');

-- A repayment and what it paid, by component. The dealer-interest part and
-- the value date are what close of business reads to compute overdue
-- interest.
CREATE TABLE repayment (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loan_id                     bigint NOT NULL REFERENCES loan (id),
    identifier                  text NOT NULL CHECK (length(identifier) BETWEEN 1 AND 128),
    request_hash                text NOT NULL,
    payer                       repayment_payer NOT NULL,
    amount_minor                bigint NOT NULL CHECK (amount_minor > 0),
    value_date                  date NOT NULL,
    penalty_minor               bigint NOT NULL CHECK (penalty_minor >= 0),
    late_fee_minor              bigint NOT NULL CHECK (late_fee_minor >= 0),
    interest_dealer_minor       bigint NOT NULL CHECK (interest_dealer_minor >= 0),
    interest_manufacturer_minor bigint NOT NULL CHECK (interest_manufacturer_minor >= 0),
    principal_minor             bigint NOT NULL CHECK (principal_minor >= 0),
    ledger_entry_id             bigint NOT NULL REFERENCES ledger_entry (id),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT repayment_loan_identifier_key UNIQUE (loan_id, identifier),
    CONSTRAINT repayment_allocation_sums CHECK (amount_minor = penalty_minor + late_fee_minor
        + interest_dealer_minor + interest_manufacturer_minor + principal_minor)
);
CREATE INDEX repayment_loan_value_date_idx ON repayment (loan_id, value_date, id);

-- One row per repayment whose principal went back to its credit line,
-- written in the transaction that does used -= amount: the credit.restore
-- worker is idempotent per repayment however often River (or an operator
-- retrying a dead letter) runs it.
CREATE TABLE credit_restoration (
    repayment_id  bigint PRIMARY KEY REFERENCES repayment (id),
    borrower_id   text NOT NULL REFERENCES credit_line (borrower_id),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    restored_at   timestamptz NOT NULL DEFAULT now()
);

-- riverbank:step 6 close_of_business
-- Close-of-business runs, their chunk accounting and failed loans, the
-- monthly accrual history, and collection cases (SPEC §4, §7).

CREATE TYPE cob_run_status AS ENUM ('RUNNING', 'COMPLETED', 'FAILED');

-- One row per business date. A date is closed when its run is COMPLETED;
-- runs are sequential (the next date starts only after this one closed).
-- Counters are kept here, by the chunk transactions, never in memory.
CREATE TABLE cob_run (
    business_date     date PRIMARY KEY,
    status            cob_run_status NOT NULL DEFAULT 'RUNNING',
    late_fee_day      integer NOT NULL CHECK (late_fee_day BETWEEN 1 AND 28),
    id_lo             bigint NOT NULL,
    id_hi             bigint NOT NULL,
    chunk_size        integer NOT NULL CHECK (chunk_size > 0),
    chunks_total      integer NOT NULL CHECK (chunks_total >= 0),
    chunks_done       integer NOT NULL DEFAULT 0,
    loans_total       bigint NOT NULL,
    loans_done        bigint NOT NULL DEFAULT 0,
    loans_failed      bigint NOT NULL DEFAULT 0,
    -- the scheduler's catch-up: when this run completes, the next date up
    -- to this one is started in the same transaction
    catch_up_through  date,
    trial_balance     jsonb,
    started_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cob_run_chunks CHECK (chunks_done BETWEEN 0 AND chunks_total)
);
-- The one running run (runs are sequential).
CREATE UNIQUE INDEX cob_run_one_running ON cob_run ((true)) WHERE status = 'RUNNING';

-- What a run accrued, per currency (added by each chunk).
CREATE TABLE cob_run_total (
    business_date               date NOT NULL REFERENCES cob_run (business_date),
    currency                    text NOT NULL,
    interest_dealer_minor       numeric NOT NULL DEFAULT 0,
    interest_manufacturer_minor numeric NOT NULL DEFAULT 0,
    penalty_minor               numeric NOT NULL DEFAULT 0,
    late_fee_minor              numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (business_date, currency)
);

-- One row per finished chunk: a chunk job run twice counts once, and the
-- rows time every chunk.
CREATE TABLE cob_chunk (
    business_date  date NOT NULL REFERENCES cob_run (business_date),
    chunk          integer NOT NULL,
    loans_done     integer NOT NULL,
    loans_failed   integer NOT NULL,
    started_at     timestamptz NOT NULL,
    completed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_date, chunk)
);

-- Loans a run could not process, with the error; retry-failures re-runs
-- them and deletes the row of each that succeeds.
CREATE TABLE cob_failed_loan (
    business_date  date NOT NULL REFERENCES cob_run (business_date),
    loan_id        bigint NOT NULL REFERENCES loan (id),
    error          text NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_date, loan_id)
);

-- A loan's accruals of one finished month, written once when the loan's
-- first date of the next month closes (the current month lives on the
-- loan row). 12 rows per loan-year, never updated: no bloat, fillfactor
-- 100. No unique index (it would cost a third of the table's size): the
-- row is written by the guarded update that closes the loan's date, once.
CREATE TABLE loan_accrual_month (
    loan_id                     bigint NOT NULL,
    interest_dealer_minor       bigint NOT NULL,
    interest_manufacturer_minor bigint NOT NULL,
    penalty_minor               bigint NOT NULL,
    late_fee_minor              bigint NOT NULL,
    month                       date NOT NULL
);
-- Deduplicated btree (one entry per loan, a posting list of its months).
CREATE INDEX loan_accrual_month_loan_idx ON loan_accrual_month (loan_id);

CREATE TYPE collection_case_status AS ENUM ('OPEN', 'CLOSED');

-- One OPEN case per borrower at most (the partial unique index), across
-- currencies; a later overdue loan after the case closed opens a new one.
CREATE TABLE collection_case (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    borrower_id  text NOT NULL,
    status       collection_case_status NOT NULL DEFAULT 'OPEN',
    opened_at    timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT collection_case_closed CHECK ((closed_at IS NOT NULL) = (status = 'CLOSED'))
);
CREATE UNIQUE INDEX collection_case_one_open ON collection_case (borrower_id) WHERE status = 'OPEN';
CREATE INDEX collection_case_borrower_idx ON collection_case (borrower_id, id);
CREATE INDEX collection_case_status_idx ON collection_case (status, id);

-- A loan's stay in collection: opened by the transaction that turns the
-- loan OVERDUE, attached to the borrower's open case by case.merge,
-- resolved by the transaction that repays the loan or finds it no longer
-- overdue. One unresolved item per loan (partial unique index), so every
-- overdue loan is in exactly one case.
CREATE TABLE collection_item (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loan_id      bigint NOT NULL REFERENCES loan (id),
    borrower_id  text NOT NULL,
    case_id      bigint REFERENCES collection_case (id),
    opened_on    date NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attached_at  timestamptz,
    resolved_at  timestamptz,
    CONSTRAINT collection_item_attached CHECK ((case_id IS NULL) = (attached_at IS NULL))
);
CREATE UNIQUE INDEX collection_item_one_open ON collection_item (loan_id) WHERE resolved_at IS NULL;
CREATE INDEX collection_item_case_idx ON collection_item (case_id) WHERE case_id IS NOT NULL;
-- The merge sweeper and the merge itself read only unattached open items.
CREATE INDEX collection_item_unattached_idx ON collection_item (borrower_id) WHERE case_id IS NULL AND resolved_at IS NULL;

-- One row per borrower whose new collection items await a case.merge job
-- (the same protocol as ledger_apply_signal): a writer that finds none
-- creates it and enqueues the job; the job deletes it in its transaction
-- after taking the borrower's lock exclusively, so a merge requested while
-- one runs still runs and no item slips past the job's last look.
CREATE TABLE collection_merge_signal (
    borrower_id  text PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- collection_request_merge is a writer's half of the merge protocol: take a
-- shared transaction lock per borrower (sorted; case.merge takes it
-- exclusively, queueing new writers behind it), create missing signals,
-- and return the borrowers whose signal was created: the caller enqueues
-- case.merge for exactly those.
CREATE FUNCTION collection_request_merge(borrowers text[]) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    created text[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1919251320, hashtext(b))
       FROM (SELECT DISTINCT unnest(borrowers) AS b ORDER BY 1) s;
    WITH ins AS (
        INSERT INTO collection_merge_signal (borrower_id)
        SELECT DISTINCT unnest(borrowers)
        ON CONFLICT (borrower_id) DO NOTHING
        RETURNING borrower_id
    )
    SELECT coalesce(array_agg(borrower_id ORDER BY borrower_id), '{}') INTO created FROM ins;
    RETURN created;
END
$$;

-- collection_resolve_loans resolves the open collection items of loans
-- that were repaid or are no longer overdue, and closes every case whose
-- last open item that was. The cases are locked (in id order) before they
-- are checked, by a later statement than the resolution, so two
-- transactions resolving a case's last two items cannot both leave it
-- open: the second waits for the first, then sees its resolution.
-- Returns the cases closed.
CREATE FUNCTION collection_resolve_loans(loan_ids bigint[]) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    touched bigint[];
    closed  bigint[];
BEGIN
    WITH r AS (
        UPDATE collection_item SET resolved_at = now()
        WHERE loan_id = ANY(loan_ids) AND resolved_at IS NULL
        RETURNING case_id
    )
    SELECT coalesce(array_agg(DISTINCT case_id) FILTER (WHERE case_id IS NOT NULL), '{}') INTO touched FROM r;
    IF cardinality(touched) = 0 THEN
        RETURN '{}';
    END IF;
    PERFORM 1 FROM collection_case WHERE id = ANY(touched) ORDER BY id FOR NO KEY UPDATE;
    WITH c AS (
        UPDATE collection_case cc SET status = 'CLOSED', closed_at = now(), updated_at = now()
        WHERE cc.id = ANY(touched) AND cc.status = 'OPEN'
          AND NOT EXISTS (SELECT 1 FROM collection_item i WHERE i.case_id = cc.id AND i.resolved_at IS NULL)
        RETURNING cc.id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO closed FROM c;
    RETURN closed;
END
$$;

-- riverbank_div_half_even is round_half_even(n / d) for n >= 0, d > 0,
-- exact in numeric (Postgres's round() sends ties away from zero). It is
-- written so the planner inlines it into the calling query (one SELECT of
-- an expression, no FROM, not STRICT: a NULL argument gives NULL anyway):
-- called as a function, each call starts a small executor, which made
-- this a third of cob_close_loans' time. Inlining needs cheap arguments
-- (a parameter used more than once is only substituted when its
-- expression costs little), which is why cob_close_loans computes them in
-- a MATERIALIZED step first.
CREATE FUNCTION riverbank_div_half_even(n numeric, d numeric) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (div(n, d) + CASE WHEN 2 * (n - div(n, d) * d) > d THEN 1
                             WHEN 2 * (n - div(n, d) * d) = d THEN mod(div(n, d), 2)
                             ELSE 0 END)::bigint
$$;

-- A chunk rewrites every open loan of its id range in one transaction, so
-- every row of a page gets its new version while the old one is still
-- live: a HOT update needs room on the page for a second copy of each row,
-- which fillfactor 70 (step 5) does not leave (measured with `riverbank
-- bench cob`: 47% HOT on the first date after a bulk load, the heap and
-- every index growing, the heap settling near twice its loaded size after
-- a few dates). 45 leaves room for all of them: every update is HOT.
ALTER TABLE loan SET (fillfactor = 45);

-- cob_close_loans closes business date p_date for the open loans with
-- ids in [p_lo, p_hi) whose previous date is closed (last_closed_date =
-- p_date - 1, or NULL for a loan's first date): SPEC §7's late fee,
-- interest (split by mode), penalty and overdue detection, set-based. The
-- guard on last_closed_date makes it exactly once per (loan, date): a
-- chunk run twice finds nothing left. Loans are locked first (id order),
-- and the computation reads repayments in a later statement, so every
-- repayment committed before the lock is seen and none can commit for
-- these loans until this transaction ends. Newly overdue loans get their
-- collection item; loans no longer overdue get theirs resolved. Returns
-- per currency what was accrued and how many loans were closed.
CREATE FUNCTION cob_close_loans(p_date date, p_lo bigint, p_hi bigint, p_late_fee_day integer)
RETURNS TABLE (currency text, loans bigint, interest_dealer_minor bigint, interest_manufacturer_minor bigint,
               penalty_minor bigint, late_fee_minor bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_month      date := date_trunc('month', p_date)::date;
    v_prev_month date := (date_trunc('month', p_date) - interval '1 month')::date;
    -- overdue interest counts dealer interest accrued through the end of
    -- last month from the late-fee day on, else through the month before
    v_cutoff_prev boolean := extract(day FROM p_date) >= p_late_fee_day;
    v_fee_day     boolean := extract(day FROM p_date) = p_late_fee_day;
    cured         bigint[];
BEGIN
    PERFORM 1 FROM loan l
     WHERE l.id >= p_lo AND l.id < p_hi AND l.status <> 'REPAID' AND l.start_date <= p_date
       AND (l.last_closed_date IS NULL OR l.last_closed_date = p_date - 1)
     ORDER BY l.id FOR NO KEY UPDATE;

    -- A finished month moves to the history before its accumulators reset.
    INSERT INTO loan_accrual_month (loan_id, month, interest_dealer_minor, interest_manufacturer_minor, penalty_minor, late_fee_minor)
    SELECT l.id, l.acc_month, l.month_interest_dealer_minor, l.month_interest_manufacturer_minor, l.month_penalty_minor, l.month_late_fee_minor
      FROM loan l
     WHERE l.id >= p_lo AND l.id < p_hi AND l.status <> 'REPAID' AND l.start_date <= p_date
       AND (l.last_closed_date IS NULL OR l.last_closed_date = p_date - 1)
       AND l.acc_month < v_month;

    CREATE TEMP TABLE IF NOT EXISTS cob_closed (
        id bigint, borrower_id text, currency text, was_overdue boolean, overdue boolean,
        d_int bigint, m_int bigint, pen bigint, fee bigint
    ) ON COMMIT DELETE ROWS;
    DELETE FROM cob_closed;

    WITH cand AS (
        SELECT l.*, (l.acc_month IS NOT NULL AND l.acc_month < v_month) AS rolled
          FROM loan l
         WHERE l.id >= p_lo AND l.id < p_hi AND l.status <> 'REPAID' AND l.start_date <= p_date
           AND (l.last_closed_date IS NULL OR l.last_closed_date = p_date - 1)
    ), rep AS (
        SELECT r.loan_id,
               coalesce(sum(r.principal_minor) FILTER (WHERE r.value_date > p_date), 0) AS principal_after,
               coalesce(sum(r.interest_dealer_minor) FILTER (WHERE r.value_date <= p_date), 0) AS dealer_repaid
          FROM repayment r
         WHERE r.loan_id >= p_lo AND r.loan_id < p_hi
         GROUP BY r.loan_id
    ), base AS (
        SELECT c.id, c.borrower_id, c.currency, c.status, c.due_date, c.annual_rate_bps, c.penalty_rate_bps,
               c.late_fee_minor, c.interest_mode, c.manufacturer_share_bps,
               c.principal_outstanding_minor + coalesce(rep.principal_after, 0) AS p,
               CASE WHEN c.rolled THEN 0 ELSE c.month_interest_dealer_minor END AS m_dealer,
               CASE WHEN c.rolled THEN 0 ELSE c.month_interest_manufacturer_minor END AS m_manu,
               CASE WHEN c.rolled THEN 0 ELSE c.month_penalty_minor END AS m_pen,
               CASE WHEN c.rolled THEN 0 ELSE c.month_late_fee_minor END AS m_fee,
               CASE WHEN NOT c.rolled THEN c.prev_month_interest_dealer_minor
                    WHEN c.acc_month = v_prev_month THEN c.month_interest_dealer_minor
                    ELSE 0 END AS prev_dealer,
               c.interest_dealer_accrued_minor AS total_dealer,
               coalesce(rep.dealer_repaid, 0) AS dealer_repaid
          FROM cand c LEFT JOIN rep ON rep.loan_id = c.id
    ), od AS MATERIALIZED (
        -- MATERIALIZED (and calc below): the arguments of
        -- riverbank_div_half_even are then plain columns, so it is inlined.
        SELECT b.*,
               greatest(0, b.total_dealer - b.m_dealer - CASE WHEN v_cutoff_prev THEN 0 ELSE b.prev_dealer END - b.dealer_repaid) AS overdue_interest
          FROM base b
    ), calc AS MATERIALIZED (
        SELECT o.*,
               CASE WHEN v_fee_day AND o.overdue_interest > 0 THEN o.late_fee_minor ELSE 0 END AS fee,
               riverbank_div_half_even(o.p::numeric * o.annual_rate_bps, 3650000) AS i,
               riverbank_div_half_even((o.overdue_interest + CASE WHEN p_date > o.due_date THEN o.p ELSE 0 END)::numeric * o.penalty_rate_bps, 3650000) AS pen,
               ((p_date > o.due_date AND o.p > 0) OR o.overdue_interest > 0) AS overdue
          FROM od o
    ), split AS (
        SELECT c.*,
               CASE c.interest_mode WHEN 'DEALER' THEN 0::bigint
                                    WHEN 'MANUFACTURER' THEN c.i
                                    ELSE riverbank_div_half_even(c.i::numeric * c.manufacturer_share_bps, 10000) END AS im
          FROM calc c
    ), upd AS (
        UPDATE loan l
           SET interest_outstanding_dealer_minor       = l.interest_outstanding_dealer_minor + (s.i - s.im),
               interest_outstanding_manufacturer_minor = l.interest_outstanding_manufacturer_minor + s.im,
               penalty_outstanding_minor               = l.penalty_outstanding_minor + s.pen,
               late_fee_outstanding_minor              = l.late_fee_outstanding_minor + s.fee,
               interest_dealer_accrued_minor           = l.interest_dealer_accrued_minor + (s.i - s.im),
               acc_month                               = v_month,
               month_interest_dealer_minor             = s.m_dealer + (s.i - s.im),
               month_interest_manufacturer_minor       = s.m_manu + s.im,
               month_penalty_minor                     = s.m_pen + s.pen,
               month_late_fee_minor                    = s.m_fee + s.fee,
               prev_month_interest_dealer_minor        = s.prev_dealer,
               days_past_due = CASE WHEN s.overdue THEN l.days_past_due + 1 ELSE 0 END,
               status        = CASE WHEN s.overdue THEN 'OVERDUE'::loan_status ELSE 'ACTIVE'::loan_status END,
               last_closed_date = p_date,
               updated_at       = now()
          FROM split s
         WHERE l.id = s.id
        RETURNING l.id, l.borrower_id, l.currency, s.status = 'OVERDUE' AS was_overdue, s.overdue,
                  s.i - s.im AS d_int, s.im AS m_int, s.pen, s.fee
    )
    INSERT INTO cob_closed SELECT * FROM upd;

    INSERT INTO collection_item (loan_id, borrower_id, opened_on)
    SELECT c.id, c.borrower_id, p_date FROM cob_closed c WHERE c.overdue AND NOT c.was_overdue
    ON CONFLICT (loan_id) WHERE resolved_at IS NULL DO NOTHING;

    SELECT coalesce(array_agg(c.id), '{}') INTO cured FROM cob_closed c WHERE c.was_overdue AND NOT c.overdue;
    IF cardinality(cured) > 0 THEN
        PERFORM collection_resolve_loans(cured);
    END IF;

    RETURN QUERY
    SELECT c.currency, count(*)::bigint, sum(c.d_int)::bigint, sum(c.m_int)::bigint, sum(c.pen)::bigint, sum(c.fee)::bigint
      FROM cob_closed c GROUP BY c.currency ORDER BY c.currency;
END
$$;
-- Close of business finds the items its chunk resolved (loan-id range).
CREATE INDEX collection_item_loan_idx ON collection_item (loan_id);

-- riverbank:step 7 events
-- The domain events feed (SPEC §8): one row per state change, appended by
-- the transaction that makes the change.
--
-- Order: txid is the writing transaction's id (pg_current_xact_id()). A
-- reader serves only events of transactions older than its snapshot's
-- xmin — every transaction below xmin has ended, so no event can appear
-- later below that line — and pages by (txid, id). A bigserial alone would
-- not do: ids are taken before commit, so a slow transaction's event
-- would appear behind a cursor that already passed it. See
-- internal/events for the argument in full.
CREATE TABLE event (
    txid          bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    id            bigint GENERATED ALWAYS AS IDENTITY,
    type          text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    subject_type  text NOT NULL,
    subject_id    text NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    data          jsonb NOT NULL,
    CONSTRAINT event_pkey PRIMARY KEY (txid, id)
);
CREATE UNIQUE INDEX event_id_key ON event (id);
CREATE INDEX event_type_idx ON event (type, txid, id);
CREATE INDEX event_subject_idx ON event (subject_id, txid, id);
-- Retention deletes by age in small batches; occurred_at grows with
-- insertion, so a BRIN index finds the oldest rows cheaply.
CREATE INDEX event_occurred_brin ON event USING brin (occurred_at);

-- riverbank:step 8 batches
-- Submitted batches (SPEC §8): one row per batch, one row per item with its
-- payload (json, not jsonb: json keeps an item's text as sent, so an item
-- Postgres's jsonb would refuse — a \u0000 escape — still fails alone, with
-- the code its single endpoint gives, instead of failing the batch), and
-- the counters as tally rows. Items are claimed by batch.chunk jobs with
-- FOR UPDATE SKIP LOCKED on rows still PENDING; an item's outcome and its
-- tally are written in the transaction that does its effect (see
-- internal/batch).
CREATE TYPE batch_operation AS ENUM ('journal_entry', 'order', 'loan', 'repayment');
CREATE TYPE batch_status AS ENUM ('RUNNING', 'COMPLETED', 'CANCELLED');
CREATE TYPE batch_item_status AS ENUM ('PENDING', 'SUCCEEDED', 'FAILED');

CREATE TABLE batch (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    operation       batch_operation NOT NULL,
    status          batch_status NOT NULL DEFAULT 'RUNNING',
    total           integer NOT NULL CHECK (total BETWEEN 1 AND 10000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    cancelled_at    timestamptz,
    CONSTRAINT batch_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT batch_completed_check CHECK ((status = 'COMPLETED') = (completed_at IS NOT NULL)),
    CONSTRAINT batch_cancelled_check CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL))
);

CREATE TABLE batch_item (
    batch_id     bigint NOT NULL REFERENCES batch (id),
    idx          integer NOT NULL CHECK (idx >= 0),
    status       batch_item_status NOT NULL DEFAULT 'PENDING',
    payload      json NOT NULL,
    result_id    bigint,
    error_code   text,
    error_detail text,
    finished_at  timestamptz,
    PRIMARY KEY (batch_id, idx),
    CONSTRAINT batch_item_outcome_check CHECK (
        (status = 'PENDING' AND result_id IS NULL AND error_code IS NULL AND finished_at IS NULL)
        OR (status = 'SUCCEEDED' AND result_id IS NOT NULL AND error_code IS NULL AND finished_at IS NOT NULL)
        OR (status = 'FAILED' AND result_id IS NULL AND error_code IS NOT NULL AND finished_at IS NOT NULL))
) WITH (fillfactor = 90);
-- No index on status: a batch has at most 10,000 items, so a list filtered
-- by status scans its primary-key range; without one, recording an
-- item's outcome is a HOT update (fillfactor leaves room on the page).

-- One row per transaction that recorded items: how many it recorded
-- SUCCEEDED and FAILED. A batch's counters are the sums (pending = total -
-- succeeded - failed). Counters on the batch row would be one hot row that
-- every chunk transaction of the batch locks until it commits, serialising
-- all their commits (one fsync after another) however many instances work
-- the batch; an insert locks nothing others wait for. No foreign key for
-- the same reason (its check would share-lock the batch row from every
-- chunk): tally rows are written only for items of an existing batch.
CREATE TABLE batch_tally (
    batch_id  bigint NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    succeeded integer NOT NULL CHECK (succeeded >= 0),
    failed    integer NOT NULL CHECK (failed >= 0),
    PRIMARY KEY (batch_id, id)
);

-- riverbank:step 9 webhooks
-- Webhook subscriptions and their deliveries (SPEC §8; internal/webhook).
--
-- A subscription's cursor (cursor_txid, cursor_id) is a position of the
-- events feed — (txid, id), read only below the snapshot xmin, so gap-free
-- (internal/events) — before which every event the subscription wants has
-- been delivered. It moves in the transaction that records a delivery (or
-- over events the subscription does not want, when none it wants lie in
-- between).
--
-- New events only: a subscription wants the events of transactions that
-- were not visible to the snapshot of the statement that created it
-- (start_snapshot, pg_snapshot as text), i.e. that committed after it. Its
-- cursor starts at that snapshot's xmin, (xmin, 0): transactions below it
-- had ended; those between xmin and xmax that the snapshot saw are
-- skipped by the visibility test, the rest delivered. start_snapshot is
-- cleared once the cursor passes its xmax (every later transaction is
-- new).
--
-- The signing secret is not stored in clear: secret_ciphertext is
-- AES-256-GCM under a key of RIVERBANK_WEBHOOK_KEY (secret_key_id names
-- which) with the subscription id as additional data, so a dump alone
-- reveals no secret and a ciphertext copied to another row does not
-- decrypt. The id is drawn before the insert (it is part of the
-- ciphertext), hence BY DEFAULT.
CREATE TABLE webhook_subscription (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    url               text NOT NULL CHECK (url ~* '^https?://' AND length(url) <= 2048),
    -- NULL: every event type.
    event_types       text[] CHECK (cardinality(event_types) > 0),
    description       text NOT NULL DEFAULT '',
    secret_key_id     text NOT NULL,
    secret_nonce      bytea NOT NULL,
    secret_ciphertext bytea NOT NULL,
    cursor_txid       bigint NOT NULL,
    cursor_id         bigint NOT NULL,
    start_snapshot    text,
    -- The webhook.deliver job River discarded after its last attempt (a
    -- dead letter): deliveries wait at the event it failed on until that
    -- job is retried (POST /v1/dead-letters/{job_id}/retry); the periodic
    -- dispatch leaves the subscription alone meanwhile.
    stalled_job_id    bigint,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per (subscription, event) that was attempted: attempts, the last
-- outcome, and delivered_at once a 2xx came back. Rows are created in feed
-- order per subscription, so id order is feed order.
CREATE TABLE webhook_delivery (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES webhook_subscription (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    event_type      text NOT NULL,
    attempts        integer NOT NULL CHECK (attempts > 0),
    last_status     integer,
    last_error      text,
    last_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_delivery_event_key UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_delivery_subscription_idx ON webhook_delivery (subscription_id, id);
-- Delivered rows older than the event retention are dropped in small
-- batches; created_at grows with insertion, so BRIN finds them cheaply.
CREATE INDEX webhook_delivery_created_brin ON webhook_delivery USING brin (created_at);

-- riverbank:step 10 event_stored_rows
-- Order events are appended by the statement that makes the order's change
-- (InsertOrder, ApplyTransition in queries/orders.sql) instead of by a
-- separate INSERT after it: a transition is one statement again, and the
-- products it locks are held for that statement and the commit only. Such
-- an event stores the changed row as Postgres has it (to_jsonb of the
-- order plus its items) and says so in data_kind; readers of the feed and
-- webhook deliveries render it into the API's body (internal/events
-- Stored). NULL data_kind: data is the API body already.
ALTER TABLE event ADD COLUMN data_kind text CHECK (data_kind IN ('order_row'));
-- Nothing looks events up by id alone (the feed pages by (txid, id), the
-- primary key); identity values are unique without it, and it was one more
-- index to update per event.
DROP INDEX event_id_key;

-- riverbank:step 11 order_batches
-- orders_move_stock (step 3) locked an order's products with a join whose
-- plan PL/pgSQL caches as a generic plan after five calls; for the generic
-- plan Postgres estimates ~140 lines per order and picks a sequential scan
-- of product with a hash join, so every confirmation, cancellation and
-- expiry read the whole catalogue (dead row versions included) under its
-- row locks. It now walks the order's lines in sku order (order_item_pkey
-- is (order_id, sku)) and moves each product with an UPDATE by primary
-- key: the row lock of each UPDATE is taken in sku order, as before, so
-- concurrent stock moves and reservations cannot deadlock; each UPDATE is
-- its own statement with a fresh snapshot, so it reads the product's newest
-- version (see the note above orders_reserve); and no plan can scan more
-- than the order's own products.
CREATE OR REPLACE FUNCTION orders_move_stock(p_order_id bigint, d_on_hand bigint, d_reserved bigint, d_sold bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    line  record;
    moved integer := 0;
BEGIN
    FOR line IN SELECT oi.sku, oi.quantity FROM order_item oi WHERE oi.order_id = p_order_id ORDER BY oi.sku LOOP
        UPDATE product p
        SET stock_on_hand  = p.stock_on_hand + d_on_hand * line.quantity,
            stock_reserved = p.stock_reserved + d_reserved * line.quantity,
            sold           = p.sold + d_sold * line.quantity,
            updated_at     = now()
        WHERE p.sku = line.sku;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order %: product % of a line is missing', p_order_id, line.sku
                USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
        END IF;
        moved := moved + 1;
    END LOOP;
    IF moved = 0 THEN
        RAISE EXCEPTION 'order %: no lines to move stock for', p_order_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    RETURN moved;
END
$$;

-- Orders are confirmed and expired in batches (queries/orders.sql
-- ConfirmCreatedOrders, ExpireDueOrders): one statement moves many orders,
-- and their stock moves are summed per product, so a hot product is
-- updated (and locked) once per batch instead of once per order. The
-- products are updated last, just before the commit, in sku order, like
-- every other stock move.
CREATE FUNCTION orders_move_stock_by_sku(p_skus text[], d_on_hand bigint[], d_reserved bigint[], d_sold bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    locked integer;
    moved  integer;
BEGIN
    -- Lock first, in sku order, then update in one statement (a fresh
    -- snapshot: see the note above orders_reserve). One UPDATE for the
    -- whole batch also evaluates product's CHECK constraints once per
    -- batch, not once per product.
    PERFORM 1 FROM product p WHERE p.sku = ANY(p_skus) ORDER BY p.sku FOR NO KEY UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    UPDATE product p
    SET stock_on_hand  = p.stock_on_hand + u.on_hand,
        stock_reserved = p.stock_reserved + u.reserved,
        sold           = p.sold + u.sold,
        updated_at     = now()
    FROM unnest(p_skus, d_on_hand, d_reserved, d_sold) AS u(sku, on_hand, reserved, sold)
    WHERE p.sku = ANY(p_skus) AND p.sku = u.sku;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> locked OR moved <> coalesce(array_length(p_skus, 1), 0) THEN
        RAISE EXCEPTION 'stock move: % of % products found, % moved', locked, coalesce(array_length(p_skus, 1), 0), moved
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    RETURN moved;
END
$$;
-- Generic plans (sku = ANY($1) by the primary key) for the statements of
-- the stock functions whose arguments are arrays: with custom plans,
-- PL/pgSQL planned them again on every call (about a tenth of Postgres's
-- CPU under order load).
ALTER FUNCTION orders_move_stock_by_sku(text[], bigint[], bigint[], bigint[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION orders_reserve(text[], bigint[]) SET plan_cache_mode = force_generic_plan;

-- Unpaid orders by deadline: the expiry sweep (ExpireDueOrders) reads the
-- due ones from here instead of one scheduled River job per order.
CREATE INDEX orders_unpaid_expiry_idx ON orders (expires_at, id) WHERE status IN ('CREATED', 'CONFIRMED');

-- riverbank:step 12 ledger_watermark
-- Application by watermark. Until step 11 ledger.apply marked every posting
-- it applied (an UPDATE per posting: a new row version and three index
-- entries) and counted down every entry it touched (another UPDATE per
-- entry). Now each account keeps an applied-through watermark and applying
-- a batch writes one account row, however many postings it covers.
--
-- Every posting records the transaction that wrote it (xid, the top-level
-- transaction id). A posting of account A is applied when
--     marked_at IS NOT NULL                      (applied on its own), or
--     (xid, id) < (A.applied_through_xid, A.applied_through_id).
-- ledger_apply moves the watermark no further than the oldest transaction
-- still running anywhere on the server (the snapshot's xmin, the same
-- horizon the events feed reads up to): every transaction below it has
-- committed or rolled back, and any posting still to commit has an xid at
-- or above it, so none can appear behind the watermark later. A transaction
-- that runs long (anywhere on the server) holds the horizon back; postings
-- that wait behind it longer than the apply job's stall limit are applied
-- on their own instead (marked_at), so the ledger does not stall with it.
ALTER TABLE ledger_posting ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE ledger_posting ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
ALTER TABLE ledger_posting RENAME COLUMN applied_at TO marked_at;
COMMENT ON COLUMN ledger_posting.xid IS 'Top-level transaction that wrote the posting; applied when below its account''s watermark.';
COMMENT ON COLUMN ledger_posting.marked_at IS 'Set when the posting was applied on its own (before step 12, or when the watermark was held back); NULL when the watermark applied it.';
ALTER TABLE ledger_account
    ADD COLUMN applied_through_xid xid8 NOT NULL DEFAULT '0',
    ADD COLUMN applied_through_id bigint NOT NULL DEFAULT 0;
DROP INDEX ledger_posting_pending_idx;
-- The apply batch, pending sums and the sweep read an account's postings
-- from its watermark on.
CREATE INDEX ledger_posting_apply_idx ON ledger_posting (account_id, xid, id) WHERE marked_at IS NULL;

-- One row per batch the watermark applied: when (applied_at) the
-- account's watermark moved to (through_xid, through_id). A posting's
-- applied_at is that of the first batch whose watermark passed it.
CREATE TABLE ledger_application (
    account_id   bigint      NOT NULL REFERENCES ledger_account (id),
    through_xid  xid8        NOT NULL,
    through_id   bigint      NOT NULL,
    postings     bigint      NOT NULL CHECK (postings > 0),
    total_minor  bigint      NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, through_xid, through_id)
);

-- An entry's state is derived from its postings (no row per entry is
-- written when postings are applied).
ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_status_consistent;
ALTER TABLE ledger_entry DROP COLUMN status, DROP COLUMN pending_postings, DROP COLUMN applied_at;

-- When a posting was applied (NULL while pending); a is its account.
CREATE FUNCTION ledger_posting_applied_at(p ledger_posting, a ledger_account) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p.marked_at IS NOT NULL THEN p.marked_at
        WHEN (p.xid, p.id) < (a.applied_through_xid, a.applied_through_id) THEN
            (SELECT la.applied_at FROM ledger_application la
              WHERE la.account_id = p.account_id AND (la.through_xid, la.through_id) > (p.xid, p.id)
              ORDER BY la.through_xid, la.through_id LIMIT 1)
    END
$$;

-- For operators and checks: every posting with its applied_at, and every
-- entry with its status, pending postings and applied_at, as before step 12.
CREATE VIEW ledger_posting_state AS
SELECT p.id, p.entry_id, p.account_id, a.code AS account, a.currency, p.amount_minor, p.created_at, p.xid, p.marked_at,
       ledger_posting_applied_at(p, a) AS applied_at
FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id;

CREATE VIEW ledger_entry_state AS
SELECT e.id, e.idempotency_key, e.description, e.currency, e.urgent, e.created_at,
       (CASE WHEN count(*) FILTER (WHERE s.applied_at IS NULL) = 0 THEN 'APPLIED' ELSE 'PENDING' END)::ledger_entry_status AS status,
       count(*) FILTER (WHERE s.applied_at IS NULL)::integer AS pending_postings,
       CASE WHEN count(*) FILTER (WHERE s.applied_at IS NULL) = 0 THEN max(s.applied_at) END AS applied_at
FROM ledger_entry e JOIN ledger_posting_state s ON s.entry_id = e.id
GROUP BY e.id;

-- A posting's foreign key to its account made every writer take a KEY
-- SHARE lock on the account row; on a hot account the concurrent writers'
-- locks became a new multixact per writer (measured: ~9 % of an urgent
-- entry's statement time). Accounts are never deleted (the trigger below)
-- and the commit-time check of every entry now also requires each posting's
-- account to exist, so the foreign key goes.
ALTER TABLE ledger_posting DROP CONSTRAINT ledger_posting_account_id_fkey;
CREATE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts cannot be deleted' USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_account_permanent';
END
$$;
CREATE TRIGGER ledger_account_guard
    BEFORE DELETE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard();
CREATE TRIGGER ledger_account_guard_truncate
    BEFORE TRUNCATE ON ledger_account
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_account_guard();

-- The commit-time check: balanced, one currency, and (since the foreign key
-- went) every posting's account exists. No pending count is stored on the
-- entry any more.
CREATE OR REPLACE FUNCTION ledger_entry_check_balanced_row(e ledger_entry) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n         integer;
    total     numeric;
    badcur    integer;
    noacc     integer;
BEGIN
    SELECT count(*), coalesce(sum(p.amount_minor), 0), count(*) FILTER (WHERE a.currency <> e.currency),
           count(*) FILTER (WHERE a.id IS NULL)
      INTO n, total, badcur, noacc
      FROM ledger_posting p LEFT JOIN ledger_account a ON a.id = p.account_id
     WHERE p.entry_id = e.id;
    IF noacc > 0 THEN
        RAISE EXCEPTION 'ledger entry % has % postings to accounts that do not exist', e.id, noacc
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_posting_account_id_fkey';
    END IF;
    IF n < 2 OR total <> 0 OR badcur > 0 THEN
        RAISE EXCEPTION 'ledger entry % is unbalanced (postings %, sum %, foreign-currency postings %)', e.id, n, total, badcur
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_balanced';
    END IF;
END
$$;

-- Postings are immutable apart from being marked applied once (only
-- ledger_apply marks, and only postings its watermark has not passed).
-- The WHEN clause lets the legal update through without calling PL/pgSQL.
DROP TRIGGER ledger_posting_guard ON ledger_posting;
CREATE OR REPLACE FUNCTION ledger_posting_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger postings cannot be deleted' USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_posting_immutable';
    END IF;
    RAISE EXCEPTION 'ledger posting % is immutable once written and applied once', OLD.id
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_posting_immutable';
END
$$;
CREATE TRIGGER ledger_posting_guard
    BEFORE DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_guard();
CREATE TRIGGER ledger_posting_guard_update
    BEFORE UPDATE ON ledger_posting
    FOR EACH ROW
    WHEN (NEW.entry_id <> OLD.entry_id OR NEW.account_id <> OLD.account_id OR NEW.amount_minor <> OLD.amount_minor
          OR NEW.xid <> OLD.xid OR NEW.created_at <> OLD.created_at
          OR OLD.marked_at IS NOT NULL OR NEW.marked_at IS NULL)
    EXECUTE FUNCTION ledger_posting_guard();

-- ledger_apply applies up to lim pending postings of one account in the
-- caller's transaction and returns how many and their sum. It locks the
-- account row (appliers of one account queue; writers do not), moves the watermark over
-- the pending postings below the horizon in (xid, id) order (one account
-- update however many), then applies on their own (marked_at) postings
-- above the horizon written before mark_before — the stall path: NULL
-- never, 'infinity' every committed one (the apply job's final
-- transaction, which holds the account's apply lock exclusively, so every
-- urgent writer of the account has committed).
CREATE FUNCTION ledger_apply(acc bigint, lim integer, mark_before timestamptz)
RETURNS TABLE (applied bigint, total_minor bigint) LANGUAGE plpgsql AS $$
DECLARE
    w_xid    xid8;
    w_id     bigint;
    horizon  xid8;
    n        bigint;
    tot      numeric;
    last_xid xid8;
    last_id  bigint;
    n2       bigint := 0;
    tot2     numeric := 0;
BEGIN
    IF lim IS NULL OR lim < 1 THEN
        RAISE EXCEPTION 'ledger_apply: lim must be at least 1, got %', lim USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- NO KEY UPDATE: writers' foreign-key checks (KEY SHARE) pass it.
    SELECT a.applied_through_xid, a.applied_through_id INTO w_xid, w_id
      FROM ledger_account a WHERE a.id = acc FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint;
        RETURN;
    END IF;
    IF w_xid > pg_current_xact_id() THEN
        -- Transaction ids went backwards: the database was copied into
        -- another server (pg_dump/pg_restore, logical replication). New
        -- postings would sit behind the watermark as if applied.
        RAISE EXCEPTION 'ledger account % has a watermark (xid %) above this server''s transaction ids: the database was restored into another server; run `riverbank migrate` (it rebases the watermarks) before serving', acc, w_xid
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Taken after the lock, in a statement of its own: every transaction
    -- below it has ended, so the postings below it that this and later
    -- statements see are all there will ever be.
    horizon := pg_snapshot_xmin(pg_current_snapshot());
    WITH c AS (
        SELECT p.xid, p.id, p.amount_minor FROM ledger_posting p
         WHERE p.account_id = acc AND p.marked_at IS NULL
           AND (p.xid, p.id) >= (w_xid, w_id) AND p.xid < horizon
         ORDER BY p.xid, p.id
         LIMIT lim
    ), s AS (
        SELECT count(*) AS n, coalesce(sum(c.amount_minor), 0) AS tot, max(c.xid) AS mx FROM c
    )
    SELECT s.n, s.tot, s.mx, (SELECT max(c.id) FROM c WHERE c.xid = s.mx)
      INTO n, tot, last_xid, last_id FROM s;
    IF n = lim THEN
        -- the batch is full: stop right after its last posting
        w_xid := last_xid;
        w_id := last_id + 1;
    ELSIF horizon > w_xid THEN
        w_xid := horizon;
        w_id := 0;
    END IF;
    IF n < lim AND mark_before IS NOT NULL THEN
        WITH m AS (
            UPDATE ledger_posting p SET marked_at = now()
             WHERE p.id IN (
                 SELECT q.id FROM ledger_posting q
                  WHERE q.account_id = acc AND q.marked_at IS NULL
                    AND (q.xid, q.id) >= (w_xid, w_id) AND q.created_at < mark_before
                  ORDER BY q.xid, q.id
                  LIMIT lim - n
                  FOR UPDATE SKIP LOCKED)
            RETURNING p.amount_minor
        )
        SELECT count(*), coalesce(sum(m.amount_minor), 0) INTO n2, tot2 FROM m;
    END IF;
    UPDATE ledger_account a
       SET balance_minor = a.balance_minor + (tot + tot2)::bigint,
           applied_postings = a.applied_postings + n + n2,
           applied_through_xid = w_xid,
           applied_through_id = w_id,
           updated_at = CASE WHEN n + n2 > 0 THEN now() ELSE a.updated_at END
     WHERE a.id = acc;
    IF n > 0 THEN
        INSERT INTO ledger_application (account_id, through_xid, through_id, postings, total_minor)
        VALUES (acc, w_xid, w_id, n, tot::bigint);
    END IF;
    RETURN QUERY SELECT n + n2, (tot + tot2)::bigint;
END
$$;

-- Order confirmation without a River job per order. A created order asks
-- for the confirmer in its own statement (orders_request_confirm): a shared
-- transaction-level advisory lock, held to commit, and the confirm signal
-- row, created by the first order that finds none; only that order inserts
-- the lingering order.confirm job (order_id 0), which confirms every
-- waiting order in batches while orders keep coming. The job's final
-- transaction takes the lock exclusively (so every order that asked has
-- committed), deletes the signal and re-enqueues itself if orders still
-- wait: an order is never left without a confirmer (the same protocol as
-- ledger_apply_signal). InsertOrder asks before it locks any product (its
-- target list evaluates the request before the reservation), and the
-- finishing transaction locks no product (only, with FOR SHARE, one
-- waiting order), so neither can deadlock with the other.
CREATE TABLE order_confirm_signal (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION orders_request_confirm() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1919251324, 0);
    -- A statement of its own after the lock (READ COMMITTED): it sees a
    -- finishing job's delete of the signal that committed before the lock
    -- was granted.
    INSERT INTO order_confirm_signal (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
    RETURN FOUND;
END
$$;

-- An order's feed row (event data_kind 'order_row', schema step 10): the
-- order's columns and its items, as the transitions and batch statements
-- store it. InsertOrder builds the same shape from its input lines (the
-- items it inserts are not visible to its own statement).
CREATE FUNCTION order_feed_row(o jsonb, order_id bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT o || jsonb_build_object('items', (
        SELECT jsonb_agg(to_jsonb(i) ORDER BY i.line_no) FROM order_item i WHERE i.order_id = order_feed_row.order_id))
$$;

-- A logical copy of the database into another server (pg_dump/pg_restore,
-- logical replication) keeps the postings' and watermarks' transaction ids
-- but not the server's xid counter, which may now be far below them: a new
-- posting would sit behind its account's watermark as if applied. Run
-- before anything is written on the new server (riverbank migrate and
-- riverbank serve call it at start), it stamps every posting the watermark
-- applied with its application time (marked_at: applied on its own from
-- now on) and resets the watermarks to the start; postings still pending
-- stay pending (their old ids sit above the new horizon, so the stall path
-- applies them). It does nothing unless some watermark is above this
-- server's current transaction id, and returns how many postings it
-- stamped (-1 when it did nothing).
CREATE FUNCTION ledger_rebase_after_restore() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1919251325, 0);
    IF NOT EXISTS (SELECT 1 FROM ledger_account WHERE applied_through_xid > pg_current_xact_id()) THEN
        RETURN -1;
    END IF;
    UPDATE ledger_posting p
       SET marked_at = coalesce(ledger_posting_applied_at(p, a), now())
      FROM ledger_account a
     WHERE a.id = p.account_id AND p.marked_at IS NULL
       AND (p.xid, p.id) < (a.applied_through_xid, a.applied_through_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE ledger_account
       SET applied_through_xid = '0', applied_through_id = 0
     WHERE applied_through_xid <> '0' OR applied_through_id <> 0;
    RETURN n;
END
$$;

-- ledger_request_apply (step 2) inserted missing apply signals in no
-- particular order: two writers creating the signals of the same two
-- accounts at once could each wait for the other's uncommitted row (a
-- deadlock Postgres breaks by failing one). Now in account order, like its
-- locks.
CREATE OR REPLACE FUNCTION ledger_request_apply(ids bigint[]) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    created bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1919251317, (id % 2147483647)::integer)
       FROM (SELECT DISTINCT unnest(ids) AS id ORDER BY 1) s;
    WITH ins AS (
        INSERT INTO ledger_apply_signal (account_id)
        SELECT s.id FROM (SELECT DISTINCT unnest(ids) AS id) s ORDER BY s.id
        ON CONFLICT (account_id) DO NOTHING
        RETURNING account_id
    )
    SELECT coalesce(array_agg(account_id ORDER BY account_id), '{}') INTO created FROM ins;
    RETURN created;
END
$$;

-- riverbank:step 13 stock_moves
-- A confirmation no longer updates product rows. Confirming moves a
-- reservation to sold (on_hand -= q, reserved -= q, sold += q), which
-- leaves what is available (on_hand - reserved) unchanged, yet the
-- confirmation batch locked every product of its orders (a fifth of a
-- 200-SKU catalogue per batch) through its commit, and creators reserving
-- those products waited for it: at full load, lock waits, not CPU, bounded
-- orders/s. A batch now adds its moves, summed per product, to the
-- product's row in product_stock_pending (no product lock), and they are
-- folded into the product row later, many batches at once:
--   * by orders_fold_stock_moves, which locks the products in sku order
--     (the rule every stock writer follows), then their pending rows in
--     sku order, adds the pending counts to the products and zeroes them,
--     in one transaction: a reader's snapshot sees a move either pending or
--     in the product row, never both or neither;
--   * every other stock move (orders_move_stock, orders_move_stock_by_sku:
--     cancels, expiry, returns) and PUT /v1/products fold the products they
--     change first, under the same locks, so they work on the true
--     counters (returning sold units must not take sold below zero while
--     the confirmation that sold them is still pending);
--   * the lingering confirmer folds about once a second (beside its
--     batches, skipping products a creator holds at that instant, every
--     tenth time waiting for them) and when it ends, and order.sweep folds
--     whatever is left (a confirmer that crashed, an order.confirm with an
--     order id), waiting.
-- PUT /v1/products takes the confirmer's lock before it folds, so no batch
-- commits a move between its fold and its new on-hand count.
-- Lock order, for every transaction that takes both: product rows (sku
-- order) before pending rows (sku order); a batch takes pending rows only,
-- in sku order; so no cycle.
-- Reservations (orders_reserve) need no fold: the moves never change
-- on_hand - reserved. A product row with moves pending is a valid state by
-- itself (on_hand and reserved both too high by the same q, sold too low),
-- so every CHECK on product still holds. Readers use product_stock.
-- One row per product, updated in place rather than a row per move: the
-- first version appended and deleted rows, and the dead ones (thousands a
-- second at full load, until autovacuum came) made every product read
-- walk them. These updates touch no indexed column, so they are HOT and
-- pruned within the page (fillfactor leaves the room).
-- No foreign key to product: its check would take KEY SHARE on hot product
-- rows that creators hold FOR NO KEY UPDATE (a multixact per batch);
-- products are never deleted, and every move comes from order_item rows,
-- whose own key references product.
CREATE TABLE product_stock_pending (
    sku       text PRIMARY KEY,
    on_hand   bigint NOT NULL DEFAULT 0,
    reserved  bigint NOT NULL DEFAULT 0,
    sold      bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

-- A product with its true stock counters: the row plus its pending moves.
CREATE VIEW product_stock AS
SELECT p.sku, p.name, p.price_minor, p.currency,
       p.stock_on_hand + coalesce(m.on_hand, 0) AS stock_on_hand,
       p.stock_reserved + coalesce(m.reserved, 0) AS stock_reserved,
       p.sold + coalesce(m.sold, 0) AS sold,
       p.created_at, p.updated_at
FROM product p
LEFT JOIN product_stock_pending m ON m.sku = p.sku;

-- orders_fold_stock_moves folds the pending moves of the given products
-- into their rows (see above). It locks the products in sku order first,
-- then, in a later statement (a fresh snapshot), their pending rows in
-- sku order: a batch that added to one meanwhile is waited for, and its
-- addition read. With p_skip_locked it takes only the products no one
-- holds at that instant and folds those (the background folds: they never
-- wait for a creator, so they never hold the products before a busy one
-- while they wait — a convoy — and a product skipped now is folded by a
-- later fold); without it, it waits for every lock (a writer that needs
-- the true counters). Returns the number of products folded; fails if a
-- pending row names no product (never written: moves come from order
-- items).
CREATE FUNCTION orders_fold_stock_moves(p_skus text[], p_skip_locked boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    locked   text[];
    skus     text[];
    on_hands bigint[];
    reserves bigint[];
    solds    bigint[];
    folded   integer;
BEGIN
    IF p_skip_locked THEN
        SELECT coalesce(array_agg(l.sku), '{}') INTO locked FROM (
            SELECT p.sku FROM product p WHERE p.sku = ANY(p_skus) ORDER BY p.sku FOR NO KEY UPDATE SKIP LOCKED
        ) l;
    ELSE
        PERFORM 1 FROM product p WHERE p.sku = ANY(p_skus) ORDER BY p.sku FOR NO KEY UPDATE;
        locked := p_skus;
    END IF;
    SELECT coalesce(array_agg(m.sku), '{}'), coalesce(array_agg(m.on_hand), '{}'),
           coalesce(array_agg(m.reserved), '{}'), coalesce(array_agg(m.sold), '{}')
      INTO skus, on_hands, reserves, solds
      FROM (
        SELECT m.sku, m.on_hand, m.reserved, m.sold FROM product_stock_pending m
        WHERE m.sku = ANY(locked)
        ORDER BY m.sku FOR NO KEY UPDATE
      ) m
     WHERE (m.on_hand, m.reserved, m.sold) <> (0, 0, 0);
    IF cardinality(skus) = 0 THEN
        RETURN 0;
    END IF;
    UPDATE product p
    SET stock_on_hand  = p.stock_on_hand + u.on_hand,
        stock_reserved = p.stock_reserved + u.reserved,
        sold           = p.sold + u.sold,
        updated_at     = now()
    FROM unnest(skus, on_hands, reserves, solds) AS u(sku, on_hand, reserved, sold)
    WHERE p.sku = ANY(skus) AND p.sku = u.sku;
    GET DIAGNOSTICS folded = ROW_COUNT;
    IF folded <> cardinality(skus) THEN
        RAISE EXCEPTION 'fold stock moves: % of % products found', folded, cardinality(skus)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    UPDATE product_stock_pending m SET on_hand = 0, reserved = 0, sold = 0
     WHERE m.sku = ANY(skus);
    RETURN folded;
END
$$;
ALTER FUNCTION orders_fold_stock_moves(text[], boolean) SET plan_cache_mode = force_generic_plan;

-- The stock moves of step 3 and step 11, folding first (same locks, taken
-- in the same sku order).
CREATE OR REPLACE FUNCTION orders_move_stock(p_order_id bigint, d_on_hand bigint, d_reserved bigint, d_sold bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    line  record;
    moved integer := 0;
BEGIN
    PERFORM orders_fold_stock_moves(ARRAY(SELECT oi.sku FROM order_item oi WHERE oi.order_id = p_order_id));
    FOR line IN SELECT oi.sku, oi.quantity FROM order_item oi WHERE oi.order_id = p_order_id ORDER BY oi.sku LOOP
        UPDATE product p
        SET stock_on_hand  = p.stock_on_hand + d_on_hand * line.quantity,
            stock_reserved = p.stock_reserved + d_reserved * line.quantity,
            sold           = p.sold + d_sold * line.quantity,
            updated_at     = now()
        WHERE p.sku = line.sku;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'order %: product % of a line is missing', p_order_id, line.sku
                USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
        END IF;
        moved := moved + 1;
    END LOOP;
    IF moved = 0 THEN
        RAISE EXCEPTION 'order %: no lines to move stock for', p_order_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    RETURN moved;
END
$$;

CREATE OR REPLACE FUNCTION orders_move_stock_by_sku(p_skus text[], d_on_hand bigint[], d_reserved bigint[], d_sold bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    locked integer;
    moved  integer;
BEGIN
    PERFORM orders_fold_stock_moves(p_skus);
    PERFORM 1 FROM product p WHERE p.sku = ANY(p_skus) ORDER BY p.sku FOR NO KEY UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    UPDATE product p
    SET stock_on_hand  = p.stock_on_hand + u.on_hand,
        stock_reserved = p.stock_reserved + u.reserved,
        sold           = p.sold + u.sold,
        updated_at     = now()
    FROM unnest(p_skus, d_on_hand, d_reserved, d_sold) AS u(sku, on_hand, reserved, sold)
    WHERE p.sku = ANY(p_skus) AND p.sku = u.sku;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> locked OR moved <> coalesce(array_length(p_skus, 1), 0) THEN
        RAISE EXCEPTION 'stock move: % of % products found, % moved', locked, coalesce(array_length(p_skus, 1), 0), moved
            USING ERRCODE = 'check_violation', CONSTRAINT = 'orders_move_stock';
    END IF;
    RETURN moved;
END
$$;
-- CREATE OR REPLACE resets a function's SET options: restore step 11's.
ALTER FUNCTION orders_move_stock_by_sku(text[], bigint[], bigint[], bigint[]) SET plan_cache_mode = force_generic_plan;
