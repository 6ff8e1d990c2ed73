-- Collection cases (SPEC §4).

-- name: RequestMerge :one
-- See collection_request_merge in schema.sql.
SELECT collection_request_merge(sqlc.arg(borrowers)::text[])::text[] AS created;

-- name: LockBorrowerMergeExclusive :exec
SELECT pg_advisory_xact_lock(1919251320, hashtext(sqlc.arg(borrower_id)::text));

-- name: DeleteMergeSignal :exec
DELETE FROM collection_merge_signal WHERE borrower_id = $1;

-- name: HasUnattachedItems :one
SELECT EXISTS (SELECT 1 FROM collection_item WHERE borrower_id = $1 AND case_id IS NULL AND resolved_at IS NULL);

-- name: LockUnattachedItems :many
-- A merge locks the items it will attach before it locks the case, the
-- same order as resolvers (items, then their cases), so the two never
-- wait on each other in a cycle.
SELECT id FROM collection_item
WHERE borrower_id = $1 AND case_id IS NULL AND resolved_at IS NULL
ORDER BY id
FOR NO KEY UPDATE;

-- name: LockOpenCase :one
SELECT * FROM collection_case WHERE borrower_id = $1 AND status = 'OPEN' FOR NO KEY UPDATE;

-- name: InsertOpenCase :one
INSERT INTO collection_case (borrower_id) VALUES ($1) RETURNING *;

-- name: AttachItems :many
UPDATE collection_item
SET case_id = sqlc.arg(case_id), attached_at = now()
WHERE borrower_id = sqlc.arg(borrower_id) AND case_id IS NULL AND resolved_at IS NULL
RETURNING id, loan_id;

-- name: TouchCase :exec
UPDATE collection_case SET updated_at = now() WHERE id = $1;

-- name: BorrowersWithUnattachedItems :many
-- A loose index scan over the partial index of unattached open items: one
-- probe per borrower that has some, never a table scan.
WITH RECURSIVE b AS (
    (SELECT borrower_id FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL ORDER BY borrower_id LIMIT 1)
    UNION ALL
    SELECT (SELECT i.borrower_id FROM collection_item i
            WHERE i.case_id IS NULL AND i.resolved_at IS NULL AND i.borrower_id > b.borrower_id
            ORDER BY i.borrower_id LIMIT 1)
    FROM b WHERE b.borrower_id IS NOT NULL
)
SELECT borrower_id::text FROM b WHERE borrower_id IS NOT NULL LIMIT sqlc.arg(lim);

-- name: ResolveLoans :one
-- See collection_resolve_loans in schema.sql.
SELECT collection_resolve_loans(sqlc.arg(loan_ids)::bigint[])::bigint[] AS closed;

-- name: GetCase :one
SELECT * FROM collection_case WHERE id = $1;

-- name: ListCases :many
SELECT * FROM collection_case
WHERE id < sqlc.arg(before_id)::bigint
  AND (sqlc.narg(borrower_id)::text IS NULL OR borrower_id = sqlc.narg(borrower_id)::text)
  AND (sqlc.narg(status)::collection_case_status IS NULL OR status = sqlc.narg(status)::collection_case_status)
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CaseItems :many
-- The loans of cases, with what each owes now.
SELECT i.case_id, i.loan_id, l.loan_no, l.currency, l.status AS loan_status, l.days_past_due,
       (l.principal_outstanding_minor + l.interest_outstanding_dealer_minor + l.interest_outstanding_manufacturer_minor
        + l.penalty_outstanding_minor + l.late_fee_outstanding_minor)::bigint AS outstanding_minor,
       i.opened_on, i.attached_at, i.resolved_at
FROM collection_item i JOIN loan l ON l.id = i.loan_id
WHERE i.case_id = ANY(sqlc.arg(case_ids)::bigint[])
ORDER BY i.case_id, i.loan_id;

-- name: OpenCaseOfLoans :many
SELECT loan_id, case_id FROM collection_item
WHERE loan_id = ANY(sqlc.arg(loan_ids)::bigint[]) AND resolved_at IS NULL AND case_id IS NOT NULL;
