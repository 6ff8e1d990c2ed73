-- Lending: credit lines, loans, repayments, credit restorations (SPEC §6).
--
-- Locking rules: a loan row is locked (FOR UPDATE) before its repayments
-- are read or written, so one loan's repayments are serialised; a credit
-- line row is locked only by the conditional update that takes credit and
-- by the restoration that gives it back, each in its own transaction.

-- name: UpsertCreditLine :one
-- Creates a credit line or sets its limit and frozen flag. The currency is
-- fixed for life: no row comes back when it differs (the caller reads why).
INSERT INTO credit_line (borrower_id, currency, limit_minor, frozen)
VALUES (sqlc.arg(borrower_id), sqlc.arg(currency), sqlc.arg(limit_minor), sqlc.arg(frozen))
ON CONFLICT (borrower_id) DO UPDATE
SET limit_minor = excluded.limit_minor,
    frozen = excluded.frozen,
    updated_at = now()
WHERE credit_line.currency = excluded.currency
RETURNING borrower_id, currency, limit_minor, used_minor, frozen, created_at, updated_at,
          (xmax = 0)::boolean AS inserted;

-- name: GetCreditLine :one
SELECT * FROM credit_line WHERE borrower_id = $1;

-- name: TakeCredit :one
-- Takes amount from the line in one conditional update: it never passes
-- the limit, whatever runs concurrently (the row lock serialises takers and
-- each re-checks the condition on the newest row). No row: missing,
-- another currency, frozen or short — the caller reads which.
UPDATE credit_line
SET used_minor = used_minor + sqlc.arg(amount)::bigint, updated_at = now()
WHERE borrower_id = sqlc.arg(borrower_id)
  AND currency = sqlc.arg(currency)
  AND NOT frozen
  AND limit_minor - used_minor >= sqlc.arg(amount)::bigint
RETURNING *;

-- name: LockCreditLine :one
SELECT * FROM credit_line WHERE borrower_id = $1 FOR NO KEY UPDATE;

-- name: ReleaseCredit :one
UPDATE credit_line
SET used_minor = used_minor - sqlc.arg(amount)::bigint, updated_at = now()
WHERE borrower_id = sqlc.arg(borrower_id)
RETURNING *;

-- name: InsertCreditRestoration :one
-- No row when the repayment's principal was already restored.
INSERT INTO credit_restoration (repayment_id, borrower_id, amount_minor)
VALUES (sqlc.arg(repayment_id), sqlc.arg(borrower_id), sqlc.arg(amount_minor))
ON CONFLICT (repayment_id) DO NOTHING
RETURNING *;

-- name: GetCreditRestoration :one
SELECT * FROM credit_restoration WHERE repayment_id = $1;

-- name: LockLoanNo :exec
-- Serialises creators of one loan_no, so a replay racing the original
-- waits for it and sees its loan (no credit taken twice).
SELECT pg_advisory_xact_lock(1919251319, hashtext(sqlc.arg(loan_no)::text));

-- name: InsertLoan :one
INSERT INTO loan (
    loan_no, request_hash, borrower_id, currency, principal_minor, annual_rate_bps, penalty_rate_bps,
    late_fee_minor, start_date, due_date, interest_mode, dealer_id, manufacturer_id, manufacturer_share_bps,
    principal_outstanding_minor, disbursement_entry_id
) VALUES (
    sqlc.arg(loan_no), sqlc.arg(request_hash), sqlc.arg(borrower_id), sqlc.arg(currency), sqlc.arg(principal_minor),
    sqlc.arg(annual_rate_bps), sqlc.arg(penalty_rate_bps), sqlc.arg(late_fee_minor), sqlc.arg(start_date),
    sqlc.arg(due_date), sqlc.arg(interest_mode), sqlc.arg(dealer_id), sqlc.narg(manufacturer_id),
    sqlc.arg(manufacturer_share_bps), sqlc.arg(principal_minor), sqlc.arg(disbursement_entry_id)
)
RETURNING *;

-- name: GetLoan :one
SELECT * FROM loan WHERE id = $1;

-- name: GetLoanByNo :one
SELECT * FROM loan WHERE loan_no = $1;

-- name: LockLoan :one
SELECT * FROM loan WHERE id = $1 FOR NO KEY UPDATE;

-- name: ListLoans :many
-- Newest first. Each filter combination is an index range scan on
-- (borrower_id, id) or (status, id).
SELECT * FROM loan
WHERE id < sqlc.arg(before_id)::bigint
  AND (sqlc.narg(borrower_id)::text IS NULL OR borrower_id = sqlc.narg(borrower_id)::text)
  AND (sqlc.narg(status)::loan_status IS NULL OR status = sqlc.narg(status)::loan_status)
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: RepayLoan :one
-- Subtracts a repayment's allocation from the loan's outstanding amounts;
-- a loan that owes nothing any more becomes REPAID in the same statement
-- (the CHECKs refuse anything negative, and REPAID with anything owed).
UPDATE loan
SET principal_outstanding_minor = principal_outstanding_minor - sqlc.arg(principal_minor)::bigint,
    interest_outstanding_dealer_minor = interest_outstanding_dealer_minor - sqlc.arg(interest_dealer_minor)::bigint,
    interest_outstanding_manufacturer_minor = interest_outstanding_manufacturer_minor - sqlc.arg(interest_manufacturer_minor)::bigint,
    penalty_outstanding_minor = penalty_outstanding_minor - sqlc.arg(penalty_minor)::bigint,
    late_fee_outstanding_minor = late_fee_outstanding_minor - sqlc.arg(late_fee_minor)::bigint,
    status = CASE WHEN sqlc.arg(repaid)::boolean THEN 'REPAID'::loan_status ELSE status END,
    repaid_at = CASE WHEN sqlc.arg(repaid)::boolean THEN now() ELSE repaid_at END,
    days_past_due = CASE WHEN sqlc.arg(repaid)::boolean THEN 0 ELSE days_past_due END,
    updated_at = now()
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: GetRepaymentByIdentifier :one
SELECT * FROM repayment WHERE loan_id = sqlc.arg(loan_id) AND identifier = sqlc.arg(identifier);

-- name: GetRepayment :one
SELECT * FROM repayment WHERE id = $1;

-- name: InsertRepayment :one
INSERT INTO repayment (
    loan_id, identifier, request_hash, payer, amount_minor, value_date, penalty_minor, late_fee_minor,
    interest_dealer_minor, interest_manufacturer_minor, principal_minor, ledger_entry_id
) VALUES (
    sqlc.arg(loan_id), sqlc.arg(identifier), sqlc.arg(request_hash), sqlc.arg(payer), sqlc.arg(amount_minor),
    sqlc.arg(value_date), sqlc.arg(penalty_minor), sqlc.arg(late_fee_minor), sqlc.arg(interest_dealer_minor),
    sqlc.arg(interest_manufacturer_minor), sqlc.arg(principal_minor), sqlc.arg(ledger_entry_id)
)
RETURNING *;

-- name: ListRepayments :many
-- A loan's repayments, oldest first.
SELECT * FROM repayment
WHERE loan_id = sqlc.arg(loan_id) AND id > sqlc.arg(after_id)::bigint
ORDER BY id
LIMIT sqlc.arg(lim);
