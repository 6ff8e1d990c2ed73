-- name: InsertAccount :one
INSERT INTO ledger_account (code, name, type, currency)
VALUES ($1, $2, $3, $4)
ON CONFLICT (code) DO NOTHING
RETURNING *;

-- name: GetAccountByCode :one
SELECT * FROM ledger_account WHERE code = $1;

-- name: GetAccountWithPending :one
-- One statement, so balance and pending come from one snapshot (a batch
-- applied between two reads would otherwise vanish from both).
SELECT sqlc.embed(a),
       coalesce(p.pending_minor, 0)::bigint AS pending_minor,
       coalesce(p.pending_count, 0)::bigint AS pending_count
FROM ledger_account a
LEFT JOIN LATERAL (
    SELECT sum(amount_minor) AS pending_minor, count(*) AS pending_count
    FROM ledger_posting WHERE account_id = a.id AND applied_at IS NULL
) p ON true
WHERE a.code = $1;

-- name: ListAccounts :many
SELECT * FROM ledger_account
WHERE code > sqlc.arg(after_code)::text
ORDER BY code
LIMIT sqlc.arg(lim);

-- name: AccountsByCodes :many
SELECT id, code, currency FROM ledger_account WHERE code = ANY(sqlc.arg(codes)::text[]);

-- name: InsertEntryWithPostings :one
-- Writes an entry and its postings in one round trip. No row comes back
-- when the idempotency key exists (the caller then loads that entry).
WITH e AS (
    INSERT INTO ledger_entry (idempotency_key, description, currency, urgent, payload_hash, pending_postings)
    VALUES (sqlc.arg(idempotency_key), sqlc.arg(description), sqlc.arg(currency), sqlc.arg(urgent), sqlc.arg(payload_hash),
            cardinality(sqlc.arg(account_ids)::bigint[]))
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
), p AS (
    INSERT INTO ledger_posting (entry_id, account_id, amount_minor)
    SELECT e.id, a.account_id, m.amount
    FROM e,
         unnest(sqlc.arg(account_ids)::bigint[]) WITH ORDINALITY AS a(account_id, ord)
         JOIN unnest(sqlc.arg(amounts)::bigint[]) WITH ORDINALITY AS m(amount, ord) USING (ord)
    ORDER BY ord
    RETURNING id
)
SELECT e.id, e.created_at, (SELECT array_agg(p.id ORDER BY p.id) FROM p)::bigint[] AS posting_ids
FROM e;

-- name: GetEntryByKey :one
SELECT * FROM ledger_entry WHERE idempotency_key = $1;

-- name: GetEntry :one
SELECT * FROM ledger_entry WHERE id = $1;

-- name: EntryPostings :many
SELECT p.id, p.entry_id, a.code AS account, p.amount_minor, p.created_at, p.applied_at
FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
WHERE p.entry_id = $1
ORDER BY p.id;

-- name: AccountPostings :many
SELECT p.id, p.entry_id, p.amount_minor, p.created_at, p.applied_at, e.description
FROM ledger_posting p JOIN ledger_entry e ON e.id = p.entry_id
WHERE p.account_id = sqlc.arg(account_id) AND p.id < sqlc.arg(before_id)::bigint
ORDER BY p.id DESC
LIMIT sqlc.arg(lim);

-- name: ClaimAndMarkPostings :one
-- Claims up to lim pending postings of one account (skipping rows another
-- transaction holds), marks them applied and returns their sum and the
-- entry id of each (repeated per posting, sorted) in one round trip.
WITH claimed AS (
    SELECT lp.id FROM ledger_posting lp
    WHERE lp.account_id = sqlc.arg(account_id)::bigint AND lp.applied_at IS NULL
    ORDER BY lp.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE ledger_posting p SET applied_at = now()
    FROM claimed c WHERE p.id = c.id
    RETURNING p.entry_id, p.amount_minor
)
SELECT coalesce(sum(amount_minor), 0)::bigint AS total_minor,
       count(*)::integer AS n,
       coalesce(array_agg(entry_id ORDER BY entry_id), '{}')::bigint[] AS entry_ids
FROM marked;

-- name: AddToBalance :exec
UPDATE ledger_account
SET balance_minor = balance_minor + sqlc.arg(delta)::bigint,
    applied_postings = applied_postings + sqlc.arg(n)::bigint,
    updated_at = now()
WHERE id = sqlc.arg(id);

-- name: LockEntries :exec
-- Locks entries in id order so two apply jobs touching the same entries
-- (the two sides of a transfer) queue instead of deadlocking.
SELECT id FROM ledger_entry WHERE id = ANY(sqlc.arg(ids)::bigint[]) ORDER BY id FOR UPDATE;

-- name: CountDownEntries :exec
-- ids repeats an entry once per posting applied now.
WITH d AS (
    SELECT entry_id, count(*)::integer AS n FROM unnest(sqlc.arg(ids)::bigint[]) AS entry_id GROUP BY entry_id
)
UPDATE ledger_entry e
SET pending_postings = e.pending_postings - d.n,
    status = CASE WHEN e.pending_postings - d.n = 0 THEN 'APPLIED'::ledger_entry_status ELSE e.status END,
    applied_at = CASE WHEN e.pending_postings - d.n = 0 THEN now() ELSE e.applied_at END
FROM d
WHERE e.id = d.entry_id;

-- name: HasPendingPostings :one
SELECT EXISTS (SELECT 1 FROM ledger_posting WHERE account_id = $1 AND applied_at IS NULL);

-- name: AccountsWithPendingPostings :many
-- A loose index scan over the partial pending index: one probe per account
-- that has pending postings, never a scan of applied history.
WITH RECURSIVE acc AS (
    (SELECT account_id FROM ledger_posting WHERE applied_at IS NULL ORDER BY account_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.account_id FROM ledger_posting p
            WHERE p.applied_at IS NULL AND p.account_id > acc.account_id
            ORDER BY p.account_id LIMIT 1)
    FROM acc WHERE acc.account_id IS NOT NULL
)
SELECT account_id::bigint FROM acc WHERE account_id IS NOT NULL;

-- name: TrialBalanceByCurrency :many
SELECT a.currency,
       coalesce(sum(a.balance_minor), 0)::bigint AS balance_total_minor,
       coalesce(sum(p.pending), 0)::bigint AS pending_total_minor,
       count(*)::bigint AS accounts
FROM ledger_account a
LEFT JOIN LATERAL (
    SELECT sum(amount_minor) AS pending FROM ledger_posting
    WHERE account_id = a.id AND applied_at IS NULL
) p ON true
GROUP BY a.currency
ORDER BY a.currency;

-- name: AccountBalanceMismatches :many
-- Accounts whose stored balance differs from the sum of their applied
-- postings: a check, never a stored claim.
SELECT a.code, a.balance_minor, coalesce(s.applied, 0)::bigint AS applied_sum_minor
FROM ledger_account a
LEFT JOIN (
    SELECT account_id, sum(amount_minor)::bigint AS applied FROM ledger_posting
    WHERE applied_at IS NOT NULL GROUP BY account_id
) s ON s.account_id = a.id
WHERE a.balance_minor <> coalesce(s.applied, 0)
ORDER BY a.code;

-- name: RequestApply :one
-- See ledger_request_apply in schema.sql: locks, creates missing signals,
-- returns the accounts that need a job.
SELECT ledger_request_apply(sqlc.arg(ids)::bigint[])::bigint[] AS created;

-- name: LockApplySignalExclusive :exec
SELECT pg_advisory_xact_lock(1919251317, (sqlc.arg(account_id)::bigint % 2147483647)::integer);

-- name: DeleteApplySignal :exec
DELETE FROM ledger_apply_signal WHERE account_id = $1;
