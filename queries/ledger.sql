-- name: InsertAccount :one
INSERT INTO ledger_account (code, name, type, currency, system)
VALUES (sqlc.arg(code), sqlc.arg(name), sqlc.arg(type), sqlc.arg(currency), sqlc.arg(system))
ON CONFLICT (code, currency) DO NOTHING
RETURNING *;

-- name: LockAccountCode :exec
-- Serialises the API's creators of one account code (any currency).
SELECT pg_advisory_xact_lock(1919251318, hashtext(sqlc.arg(code)::text));

-- name: LockAccountsForLargeEntry :exec
-- Serialises large entries per account (ids sorted by the caller, so two
-- entries never wait on each other in a cycle).
SELECT pg_advisory_xact_lock(1919251322, (id % 2147483647)::integer)
FROM unnest(sqlc.arg(ids)::bigint[]) WITH ORDINALITY AS t(id, ord)
ORDER BY ord;

-- name: AccountCurrencies :many
-- The currencies a code exists in (an account is code + currency).
SELECT currency FROM ledger_account WHERE code = $1 ORDER BY currency;

-- name: GetAccountByCode :one
SELECT * FROM ledger_account WHERE code = sqlc.arg(code) AND currency = sqlc.arg(currency);

-- name: GetAccountWithPending :one
-- One statement, so balance and pending come from one snapshot (a batch
-- applied between two reads would otherwise vanish from both).
SELECT sqlc.embed(a),
       greatest(least(coalesce(p.pending_minor, 0), 9223372036854775807), -9223372036854775807)::bigint AS pending_minor,
       coalesce(p.pending_count, 0)::bigint AS pending_count
FROM ledger_account a
LEFT JOIN LATERAL (
    SELECT sum(amount_minor) AS pending_minor, count(*) AS pending_count
    FROM ledger_posting WHERE account_id = a.id AND marked_at IS NULL
      AND (xid, id) >= (a.applied_through_xid, a.applied_through_id)
) p ON true
WHERE a.code = sqlc.arg(code) AND a.currency = sqlc.arg(currency);

-- name: ListAccounts :many
SELECT * FROM ledger_account
WHERE (code, currency) > (sqlc.arg(after_code)::text, sqlc.arg(after_currency)::text)
ORDER BY code, currency
LIMIT sqlc.arg(lim);

-- name: AccountsByCodes :many
-- Every account with one of the codes, in any currency.
SELECT id, code, currency FROM ledger_account WHERE code = ANY(sqlc.arg(codes)::text[]);

-- name: InsertEntryWithPostings :one
-- Writes an entry and its postings in one round trip, unless it would take
-- an account's balance out of range: in_range is false then, and nothing
-- is written. Every account's balance plus this entry's net amount on it
-- must stay within ±max_balance; when the net amount is large (above
-- large_minor), the account's pending postings are added too, exactly (a
-- bounded index scan paid only by large entries; see ledger.MaxBalanceMinor
-- for why small ones need not). Sums are numeric, so nothing overflows
-- while checking. id is NULL (and in_range true) when the idempotency key
-- exists: the caller then loads that entry.
WITH lines AS (
    SELECT a.account_id, m.amount, a.ord
    FROM unnest(sqlc.arg(account_ids)::bigint[]) WITH ORDINALITY AS a(account_id, ord)
    JOIN unnest(sqlc.arg(amounts)::bigint[]) WITH ORDINALITY AS m(amount, ord) USING (ord)
), net AS (
    SELECT account_id, sum(amount) AS delta FROM lines GROUP BY account_id
), chk AS (
    SELECT coalesce(array_agg(acc.id ORDER BY acc.id) FILTER (
               WHERE abs(acc.balance_minor::numeric + net.delta + coalesce(pend.total, 0)) > sqlc.arg(max_balance)::numeric
           ), '{}')::bigint[] AS out_of_range
    FROM net
    JOIN ledger_account acc ON acc.id = net.account_id
    LEFT JOIN LATERAL (
        SELECT sum(p.amount_minor) AS total FROM ledger_posting p
        WHERE p.account_id = net.account_id AND p.marked_at IS NULL
          AND (p.xid, p.id) >= (acc.applied_through_xid, acc.applied_through_id)
          AND abs(net.delta) > sqlc.arg(large_minor)::numeric
    ) pend ON true
), e AS (
    INSERT INTO ledger_entry (idempotency_key, description, currency, urgent, payload_hash)
    SELECT sqlc.arg(idempotency_key), sqlc.arg(description), sqlc.arg(currency), sqlc.arg(urgent), sqlc.arg(payload_hash)
    FROM chk WHERE cardinality(chk.out_of_range) = 0
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
), p AS (
    INSERT INTO ledger_posting (entry_id, account_id, amount_minor)
    SELECT e.id, l.account_id, l.amount
    FROM e, lines l
    ORDER BY l.ord
    RETURNING id
)
SELECT chk.out_of_range, e.id, e.created_at, (SELECT array_agg(p.id ORDER BY p.id) FROM p)::bigint[] AS posting_ids
FROM chk LEFT JOIN e ON true;

-- name: GetEntryByKey :one
SELECT * FROM ledger_entry WHERE idempotency_key = $1;

-- name: GetEntry :one
SELECT * FROM ledger_entry WHERE id = $1;

-- name: EntryPostings :many
SELECT s.id, s.entry_id, s.account, s.amount_minor, s.created_at, s.applied_at
FROM ledger_posting_state s
WHERE s.entry_id = $1
ORDER BY s.id;

-- name: AccountPostings :many
SELECT s.id, s.entry_id, s.amount_minor, s.created_at, s.applied_at, e.description
FROM ledger_posting_state s JOIN ledger_entry e ON e.id = s.entry_id
WHERE s.account_id = sqlc.arg(account_id) AND s.id < sqlc.arg(before_id)::bigint
ORDER BY s.id DESC
LIMIT sqlc.arg(lim);

-- name: ApplyPostings :one
-- ledger_apply in schema.sql: up to lim pending postings of one account,
-- by watermark, plus (the stall path) committed postings above the horizon
-- written at least mark_after_ms milliseconds ago (0: every committed one).
SELECT applied::bigint AS applied, total_minor::bigint AS total_minor
FROM ledger_apply(sqlc.arg(account_id)::bigint, sqlc.arg(lim)::integer,
                  CASE WHEN sqlc.arg(mark_after_ms)::integer = 0 THEN 'infinity'::timestamptz
                       ELSE now() - sqlc.arg(mark_after_ms)::integer * interval '1 millisecond' END);

-- name: HasPendingPostings :one
SELECT EXISTS (
    SELECT 1 FROM ledger_account a JOIN ledger_posting p ON p.account_id = a.id
    WHERE a.id = $1 AND p.marked_at IS NULL
      AND (p.xid, p.id) >= (a.applied_through_xid, a.applied_through_id)
);

-- name: AccountsWithPendingPostings :many
-- One index probe per account, from its watermark on: never a scan of
-- applied history.
SELECT a.id::bigint AS account_id FROM ledger_account a
WHERE EXISTS (
    SELECT 1 FROM ledger_posting p
    WHERE p.account_id = a.id AND p.marked_at IS NULL
      AND (p.xid, p.id) >= (a.applied_through_xid, a.applied_through_id)
)
ORDER BY a.id;

-- name: TrialBalanceByCurrency :many
-- Sums in numeric (many balances can add up past int64); the totals are
-- clamped into bigint for the API, and balanced is decided on the exact sums.
SELECT t.currency,
       greatest(least(t.balance_total, 9223372036854775807), -9223372036854775807)::bigint AS balance_total_minor,
       greatest(least(t.pending_total, 9223372036854775807), -9223372036854775807)::bigint AS pending_total_minor,
       (t.balance_total = 0 AND t.pending_total = 0)::boolean AS balanced,
       t.accounts
FROM (
    SELECT a.currency,
           coalesce(sum(a.balance_minor), 0)::numeric AS balance_total,
           coalesce(sum(p.pending), 0)::numeric AS pending_total,
           count(*)::bigint AS accounts
    FROM ledger_account a
    LEFT JOIN LATERAL (
        SELECT sum(amount_minor) AS pending FROM ledger_posting
        WHERE account_id = a.id AND marked_at IS NULL
          AND (xid, id) >= (a.applied_through_xid, a.applied_through_id)
    ) p ON true
    GROUP BY a.currency
) t
ORDER BY t.currency;

-- name: AccountBalanceMismatches :many
-- Accounts whose stored balance differs from the sum of their applied
-- postings: a check, never a stored claim.
SELECT a.code, a.currency, a.balance_minor,
       greatest(least(coalesce(s.applied, 0), 9223372036854775807), -9223372036854775807)::bigint AS applied_sum_minor
FROM ledger_account a
LEFT JOIN LATERAL (
    SELECT sum(p.amount_minor) AS applied FROM ledger_posting p
    WHERE p.account_id = a.id
      AND (p.marked_at IS NOT NULL OR (p.xid, p.id) < (a.applied_through_xid, a.applied_through_id))
) s ON true
WHERE a.balance_minor <> coalesce(s.applied, 0)
ORDER BY a.code, a.currency;

-- name: LockApplySignalExclusive :exec
SELECT pg_advisory_xact_lock(1919251317, (sqlc.arg(account_id)::bigint % 2147483647)::integer);

-- name: DeleteApplySignal :exec
DELETE FROM ledger_apply_signal WHERE account_id = $1;

-- name: RequestApplyAndAppendEvent :one
-- An urgent entry's request for application (ledger_request_apply in
-- schema.sql: locks, creates missing signals, returns the accounts that
-- need a job) and its journal_entry.posted event, in one round trip
-- (event_type '' appends nothing: benchmarks only).
WITH ev AS (
    INSERT INTO event (type, subject_type, subject_id, data)
    SELECT sqlc.arg(event_type)::text, 'journal_entry', sqlc.arg(subject_id)::text, sqlc.arg(data)::jsonb
    WHERE sqlc.arg(event_type)::text <> ''
)
SELECT ledger_request_apply(sqlc.arg(ids)::bigint[])::bigint[] AS created;

-- name: RebaseAfterRestore :one
-- ledger_rebase_after_restore in schema.sql: -1 unless the database was
-- copied into another server.
SELECT ledger_rebase_after_restore()::bigint AS stamped;
