-- Queries used only by `riverbank bench` to set up load quickly.

-- name: BenchInsertPendingEntries :one
-- Inserts n balanced entries, each debiting debit_account and crediting
-- credit_account by amount, all pending (2n postings), in one statement.
WITH e AS (
    INSERT INTO ledger_entry (idempotency_key, description, currency, urgent, payload_hash)
    SELECT sqlc.arg(key_prefix)::text || g, 'bench', sqlc.arg(currency)::text, false, 'bench'
    FROM generate_series(1, sqlc.arg(n)::integer) AS g
    RETURNING id
), p AS (
    INSERT INTO ledger_posting (entry_id, account_id, amount_minor)
    SELECT id, sqlc.arg(debit_account)::bigint, sqlc.arg(amount)::bigint FROM e
    UNION ALL
    SELECT id, sqlc.arg(credit_account)::bigint, -sqlc.arg(amount)::bigint FROM e
    RETURNING 1
)
SELECT count(*)::bigint FROM p;
