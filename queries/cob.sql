-- Close of business (SPEC §7). The per-loan arithmetic is the set-based
-- function cob_close_loans in schema.sql; these queries keep the run's
-- bookkeeping.

-- name: LockCOBDatesExclusive :exec
-- Taken by a run's start: waits for loan creations in flight (they hold it
-- shared), so a loan can never start on a date that is being closed.
SELECT pg_advisory_xact_lock(1919251321, 0);

-- name: LockCOBDatesShared :exec
-- Taken by loan creation before it checks the start date.
SELECT pg_advisory_xact_lock_shared(1919251321, 0);

-- name: LastClosedDate :one
-- The newest closed business date (runs are sequential, so every earlier
-- date with loans is closed too); NULL before the first run.
-- 0001-01-01 stands for none.
SELECT coalesce(max(business_date), '0001-01-01')::date AS last_closed FROM cob_run WHERE status = 'COMPLETED';

-- name: LatestRunDate :one
-- The newest date with a run, closed or not (a loan must start after it).
SELECT coalesce(max(business_date), '0001-01-01')::date AS latest FROM cob_run;

-- name: OpenRun :one
-- The run that is not closed (RUNNING or FAILED), if any: it blocks the
-- next date.
SELECT * FROM cob_run WHERE status <> 'COMPLETED' ORDER BY business_date LIMIT 1;

-- name: MinLoanStartDate :one
SELECT coalesce(min(start_date), '0001-01-01')::date AS first_start FROM loan;

-- name: COBEligibleRange :one
-- The open loans a run for business_date closes, and their id range.
SELECT count(*)::bigint AS loans, coalesce(min(id), 0)::bigint AS id_lo, coalesce(max(id), 0)::bigint AS id_hi
FROM loan
WHERE status <> 'REPAID' AND start_date <= sqlc.arg(business_date)::date;

-- name: InsertCOBRun :one
INSERT INTO cob_run (business_date, late_fee_day, id_lo, id_hi, chunk_size, chunks_total, loans_total, catch_up_through, status, completed_at)
VALUES (sqlc.arg(business_date), sqlc.arg(late_fee_day), sqlc.arg(id_lo), sqlc.arg(id_hi), sqlc.arg(chunk_size),
        sqlc.arg(chunks_total), sqlc.arg(loans_total), sqlc.narg(catch_up_through), sqlc.arg(status),
        CASE WHEN sqlc.arg(status)::cob_run_status = 'COMPLETED' THEN now() END)
RETURNING *;

-- name: GetCOBRun :one
SELECT * FROM cob_run WHERE business_date = $1;

-- name: LockCOBRun :one
SELECT * FROM cob_run WHERE business_date = $1 FOR NO KEY UPDATE;

-- name: ListCOBRuns :many
-- Newest first.
SELECT * FROM cob_run
WHERE business_date < sqlc.arg(before)::date
ORDER BY business_date DESC
LIMIT sqlc.arg(lim);

-- name: CloseLoans :many
SELECT c.currency::text AS currency, c.loans::bigint AS loans, c.interest_dealer_minor::bigint AS interest_dealer_minor,
       c.interest_manufacturer_minor::bigint AS interest_manufacturer_minor, c.penalty_minor::bigint AS penalty_minor,
       c.late_fee_minor::bigint AS late_fee_minor
FROM cob_close_loans(sqlc.arg(business_date)::date, sqlc.arg(id_lo)::bigint, sqlc.arg(id_hi)::bigint, sqlc.arg(late_fee_day)::integer) AS c;

-- name: EligibleLoanIDs :many
-- The loans a chunk still has to close (for the loan-by-loan fallback).
SELECT id FROM loan
WHERE id >= sqlc.arg(id_lo)::bigint AND id < sqlc.arg(id_hi)::bigint AND status <> 'REPAID'
  AND start_date <= sqlc.arg(business_date)::date
  AND (last_closed_date IS NULL OR last_closed_date = sqlc.arg(business_date)::date - 1)
ORDER BY id;

-- name: InsertCOBChunk :one
-- Records a chunk's completion once; no row when it was recorded before
-- (a chunk job run twice counts once).
INSERT INTO cob_chunk (business_date, chunk, loans_done, loans_failed, started_at)
VALUES (sqlc.arg(business_date), sqlc.arg(chunk), sqlc.arg(loans_done), sqlc.arg(loans_failed), sqlc.arg(started_at))
ON CONFLICT (business_date, chunk) DO NOTHING
RETURNING business_date;

-- name: AddCOBProgress :one
UPDATE cob_run
SET chunks_done = chunks_done + sqlc.arg(chunks)::integer,
    loans_done = loans_done + sqlc.arg(loans_done)::bigint,
    loans_failed = loans_failed + sqlc.arg(loans_failed)::bigint,
    updated_at = now()
WHERE business_date = sqlc.arg(business_date)
RETURNING *;

-- name: AddCOBTotals :exec
INSERT INTO cob_run_total (business_date, currency, interest_dealer_minor, interest_manufacturer_minor, penalty_minor, late_fee_minor)
VALUES (sqlc.arg(business_date), sqlc.arg(currency), sqlc.arg(interest_dealer_minor)::bigint, sqlc.arg(interest_manufacturer_minor)::bigint,
        sqlc.arg(penalty_minor)::bigint, sqlc.arg(late_fee_minor)::bigint)
ON CONFLICT (business_date, currency) DO UPDATE
SET interest_dealer_minor = cob_run_total.interest_dealer_minor + excluded.interest_dealer_minor,
    interest_manufacturer_minor = cob_run_total.interest_manufacturer_minor + excluded.interest_manufacturer_minor,
    penalty_minor = cob_run_total.penalty_minor + excluded.penalty_minor,
    late_fee_minor = cob_run_total.late_fee_minor + excluded.late_fee_minor;

-- name: COBRunTotals :many
SELECT currency,
       least(interest_dealer_minor, 9223372036854775807)::bigint AS interest_dealer_minor,
       least(interest_manufacturer_minor, 9223372036854775807)::bigint AS interest_manufacturer_minor,
       least(penalty_minor, 9223372036854775807)::bigint AS penalty_minor,
       least(late_fee_minor, 9223372036854775807)::bigint AS late_fee_minor
FROM cob_run_total WHERE business_date = $1 ORDER BY currency;

-- name: SetCOBRunStatus :one
UPDATE cob_run
SET status = sqlc.arg(status),
    completed_at = CASE WHEN sqlc.arg(status)::cob_run_status = 'RUNNING' THEN NULL ELSE now() END,
    updated_at = now()
WHERE business_date = sqlc.arg(business_date)
RETURNING *;

-- name: SetCOBTrialBalance :exec
UPDATE cob_run SET trial_balance = sqlc.arg(trial_balance), updated_at = now() WHERE business_date = sqlc.arg(business_date);

-- name: RecordFailedLoan :exec
INSERT INTO cob_failed_loan (business_date, loan_id, error)
VALUES (sqlc.arg(business_date), sqlc.arg(loan_id), sqlc.arg(error))
ON CONFLICT (business_date, loan_id) DO UPDATE SET error = excluded.error, failed_at = now();

-- name: DeleteFailedLoan :exec
DELETE FROM cob_failed_loan WHERE business_date = sqlc.arg(business_date) AND loan_id = sqlc.arg(loan_id);

-- name: FailedLoans :many
SELECT * FROM cob_failed_loan WHERE business_date = $1 ORDER BY loan_id LIMIT sqlc.arg(lim);

-- name: COBSubledger :many
-- The sub-ledger check (SPEC §7): per currency, what the loans owe by
-- component next to the receivable accounts' balance plus pending postings
-- (all postings ever made), in one snapshot. They match whatever the
-- apply queue's backlog, because every writer changes both in one
-- transaction.
WITH owed AS (
    SELECT currency,
           sum(principal_outstanding_minor) AS principal,
           sum(interest_outstanding_dealer_minor) AS interest_dealer,
           sum(interest_outstanding_manufacturer_minor) AS interest_manufacturer,
           sum(penalty_outstanding_minor) AS penalty,
           sum(late_fee_outstanding_minor) AS late_fee
    FROM loan GROUP BY currency
), booked AS (
    SELECT a.currency, a.code,
           a.balance_minor + coalesce((SELECT sum(p.amount_minor) FROM ledger_posting p WHERE p.account_id = a.id AND p.marked_at IS NULL
                                                 AND (p.xid, p.id) >= (a.applied_through_xid, a.applied_through_id)), 0) AS total
    FROM ledger_account a
    WHERE a.code IN ('loans:principal', 'loans:interest:dealer', 'loans:interest:manufacturer', 'loans:penalty', 'loans:late_fee')
)
SELECT o.currency,
       o.principal::bigint AS loans_principal,
       coalesce((SELECT total FROM booked b WHERE b.currency = o.currency AND b.code = 'loans:principal'), 0)::bigint AS account_principal,
       o.interest_dealer::bigint AS loans_interest_dealer,
       coalesce((SELECT total FROM booked b WHERE b.currency = o.currency AND b.code = 'loans:interest:dealer'), 0)::bigint AS account_interest_dealer,
       o.interest_manufacturer::bigint AS loans_interest_manufacturer,
       coalesce((SELECT total FROM booked b WHERE b.currency = o.currency AND b.code = 'loans:interest:manufacturer'), 0)::bigint AS account_interest_manufacturer,
       o.penalty::bigint AS loans_penalty,
       coalesce((SELECT total FROM booked b WHERE b.currency = o.currency AND b.code = 'loans:penalty'), 0)::bigint AS account_penalty,
       o.late_fee::bigint AS loans_late_fee,
       coalesce((SELECT total FROM booked b WHERE b.currency = o.currency AND b.code = 'loans:late_fee'), 0)::bigint AS account_late_fee
FROM owed o
ORDER BY o.currency;

-- name: COBRunPostings :many
-- What a run posted, per currency and receivable account (entries keyed
-- sys:cob:<date>:...), to check against its stored totals.
SELECT e.currency, a.code, sum(p.amount_minor)::bigint AS total
FROM ledger_entry e
JOIN ledger_posting p ON p.entry_id = e.id
JOIN ledger_account a ON a.id = p.account_id
WHERE e.idempotency_key LIKE sqlc.arg(key_prefix)::text || '%' AND p.amount_minor > 0
GROUP BY e.currency, a.code
ORDER BY e.currency, a.code;

-- name: NewlyOverdueBorrowers :many
-- Borrowers of a chunk's loans that opened a collection item on the date
-- and are not attached yet: they need a case.merge.
SELECT DISTINCT borrower_id FROM collection_item
WHERE opened_on = sqlc.arg(business_date)::date AND loan_id >= sqlc.arg(id_lo)::bigint AND loan_id < sqlc.arg(id_hi)::bigint
  AND case_id IS NULL AND resolved_at IS NULL
ORDER BY borrower_id;

-- name: LoanAccrualMonths :many
SELECT month, interest_dealer_minor, interest_manufacturer_minor, penalty_minor, late_fee_minor
FROM loan_accrual_month WHERE loan_id = $1 ORDER BY month;

-- name: COBProgress :many
-- Runs not closed plus the newest one, for the progress metric.
SELECT business_date, status, loans_total, loans_done, loans_failed, chunks_total, chunks_done
FROM cob_run
WHERE status <> 'COMPLETED' OR business_date = (SELECT max(business_date) FROM cob_run)
ORDER BY business_date;

-- name: ExtendCatchUp :exec
UPDATE cob_run
SET catch_up_through = greatest(coalesce(catch_up_through, business_date), sqlc.arg(catch_up_through)::date), updated_at = now()
WHERE business_date = sqlc.arg(business_date);

-- name: LoansTurnedOverdue :many
-- The loans of a chunk this transaction turned overdue (their items were
-- opened now), for their loan.overdue events.
SELECT l.* FROM loan l JOIN collection_item i ON i.loan_id = l.id
WHERE i.loan_id >= sqlc.arg(id_lo)::bigint AND i.loan_id < sqlc.arg(id_hi)::bigint
  AND i.resolved_at IS NULL AND i.created_at = now()
ORDER BY l.id;

-- name: CasesClosedNow :many
-- The cases this transaction closed by resolving items of a chunk's
-- loans, for their case.closed events.
SELECT DISTINCT c.id FROM collection_item i JOIN collection_case c ON c.id = i.case_id
WHERE i.loan_id >= sqlc.arg(id_lo)::bigint AND i.loan_id < sqlc.arg(id_hi)::bigint
  AND i.resolved_at = now() AND c.status = 'CLOSED' AND c.closed_at = now()
ORDER BY c.id;

-- name: COBChunkCounted :one
SELECT EXISTS (SELECT 1 FROM cob_chunk WHERE business_date = sqlc.arg(business_date) AND chunk = sqlc.arg(chunk));
