-- Queries used only by `riverbank bench cob` and `riverbank bench cases`
-- (cmd/riverbank/bench_cob.go, bench_cases.go): seeding shortcuts and the
-- measurements they print.

-- name: BenchCOBSeedClosedRun :exec
-- A completed run for the day before the bench's first date: the seeded
-- loans carry accruals up to that date (last_closed_date), as if earlier
-- runs had closed them, so the first open date is the bench's first date.
INSERT INTO cob_run (business_date, status, late_fee_day, id_lo, id_hi, chunk_size, chunks_total, loans_total, completed_at)
VALUES (sqlc.arg(business_date), 'COMPLETED', sqlc.arg(late_fee_day), 0, 0, 1, 0, 0, now());

-- name: BenchCOBCounters :one
-- Database size and the cluster's WAL position (bytes since 0/0).
SELECT pg_database_size(current_database())::bigint AS db_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_bytes;

-- name: BenchCOBChunkStats :one
-- Chunk job durations of a run from River's rows (attempted_at: fetched by
-- a worker; finalized_at: the worker finished), in seconds. (cob_chunk's
-- completed_at is now(), the chunk transaction's start, so it does not time
-- the chunk.)
SELECT count(*)::bigint AS chunks,
       coalesce(sum(extract(epoch FROM j.finalized_at - j.attempted_at)), 0)::float8 AS busy_seconds,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.finalized_at - j.attempted_at)), 0)::float8 AS p50_seconds,
       coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM j.finalized_at - j.attempted_at)), 0)::float8 AS p95_seconds,
       coalesce(max(extract(epoch FROM j.finalized_at - j.attempted_at)), 0)::float8 AS max_seconds,
       coalesce(extract(epoch FROM max(j.finalized_at) - min(j.attempted_at)), 0)::float8 AS span_seconds,
       coalesce(max(j.attempt), 0)::bigint AS max_attempt
FROM river_job j
WHERE j.kind = 'cob.chunk' AND j.args->>'date' = sqlc.arg(business_date)::text AND j.state = 'completed';

-- name: BenchCOBItemsOpened :one
-- Collection items a run opened (loans that turned overdue on the date).
SELECT count(*)::bigint AS items, count(DISTINCT borrower_id)::bigint AS borrowers
FROM collection_item WHERE opened_on = $1;

-- name: BenchCOBUnattachedItems :one
-- Open collection items not yet in a case (the partial index
-- collection_item_unattached_idx covers exactly these).
SELECT count(*)::bigint FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL;

-- name: BenchCOBAnyUnattached :one
-- Whether some open collection item is not in a case yet (stops at the
-- first one: cheap enough to poll).
SELECT EXISTS (SELECT 1 FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL);

-- name: BenchCOBMergesPending :one
-- Whether some borrower still awaits a case.merge (its signal row is
-- deleted by the merge's transaction): a tiny table, cheap to poll.
SELECT EXISTS (SELECT 1 FROM collection_merge_signal);

-- name: BenchCOBCaseCheck :one
-- The collection invariants after the merges: no borrower with two OPEN
-- cases, every borrower with an overdue loan has exactly one OPEN case, and
-- every open item sits in the OPEN case of its own borrower.
SELECT
    (SELECT count(*) FROM (SELECT c.borrower_id FROM collection_case c WHERE c.status = 'OPEN'
                           GROUP BY c.borrower_id HAVING count(*) > 1) d)::bigint AS duplicate_open,
    (SELECT count(*) FROM collection_case c WHERE c.status = 'OPEN')::bigint AS open_cases,
    (SELECT count(*) FROM loan l WHERE l.status = 'OVERDUE')::bigint AS overdue_loans,
    (SELECT count(DISTINCT l.borrower_id) FROM loan l WHERE l.status = 'OVERDUE')::bigint AS overdue_borrowers,
    (SELECT count(*) FROM (SELECT DISTINCT l.borrower_id FROM loan l WHERE l.status = 'OVERDUE') b
      WHERE (SELECT count(*) FROM collection_case c WHERE c.borrower_id = b.borrower_id AND c.status = 'OPEN') <> 1)::bigint AS borrowers_without_one_open_case,
    (SELECT count(*) FROM collection_item i WHERE i.resolved_at IS NULL)::bigint AS open_items,
    (SELECT count(*) FROM collection_item i JOIN collection_case c ON c.id = i.case_id
      WHERE i.resolved_at IS NULL AND c.status = 'OPEN' AND c.borrower_id = i.borrower_id)::bigint AS items_in_own_open_case,
    (SELECT count(*) FROM loan l WHERE l.status = 'OVERDUE'
        AND NOT EXISTS (SELECT 1 FROM collection_item i WHERE i.loan_id = l.id AND i.resolved_at IS NULL))::bigint AS overdue_loans_without_item;

-- name: BenchCOBAccrualSize :one
-- Size of the monthly accrual history.
SELECT count(*)::bigint AS rows_total,
       pg_relation_size('loan_accrual_month')::bigint AS heap_bytes,
       pg_indexes_size('loan_accrual_month')::bigint AS index_bytes,
       pg_total_relation_size('loan_accrual_month')::bigint AS total_bytes
FROM loan_accrual_month;

-- name: BenchCOBLoanTableSize :one
SELECT pg_relation_size('loan')::bigint AS heap_bytes, pg_indexes_size('loan')::bigint AS index_bytes;

-- name: BenchCOBInsertOverdueItems :one
-- bench cases --mode direct: what a run does to newly overdue loans, in one
-- statement for every open loan (status OVERDUE, one open collection item
-- each), without the accruals; the caller requests the merges in the same
-- transaction.
WITH l AS (
    UPDATE loan SET status = 'OVERDUE', days_past_due = 1, updated_at = now()
    WHERE status = 'ACTIVE'
    RETURNING id, borrower_id
), i AS (
    INSERT INTO collection_item (loan_id, borrower_id, opened_on)
    SELECT id, borrower_id, sqlc.arg(opened_on)::date FROM l
    RETURNING borrower_id
)
SELECT coalesce(array_agg(DISTINCT borrower_id ORDER BY borrower_id), '{}')::text[] AS borrowers FROM i;
