-- ListDeadLetters pages River's discarded jobs (the dead letters, see
-- internal/deadletter) newest discarded first by the keyset
-- (finalized_at, id). `state = 'discarded' AND finalized_at IS NOT NULL`
-- matches River's partial index river_job_state_and_finalized_at_index
-- (state, finalized_at) WHERE finalized_at IS NOT NULL (the IS NOT NULL is
-- always true for a discarded job, by River's finalized_or_finalized_at_null
-- check, but the planner needs it written to use the partial index); the row
-- comparison becomes the index bound finalized_at <= before, scanned
-- backwards, so a deep page costs what the first one does. A missing cursor
-- is coalesced to (infinity, max bigint) rather than tested with an OR, so
-- the bound stays an index condition in a generic (prepared) plan. The kind
-- filter is applied on the rows the index yields: River has no (state,
-- kind) index, and dead letters are few.
-- name: ListDeadLetters :many
SELECT id, kind, queue, state, args, attempt, max_attempts, errors, finalized_at, created_at
FROM river_job
WHERE state = 'discarded'
  AND finalized_at IS NOT NULL
  AND (finalized_at, id) < (
        coalesce(sqlc.narg('before_finalized_at')::timestamptz, 'infinity'::timestamptz),
        coalesce(sqlc.narg('before_id')::bigint, 9223372036854775807))
  AND (sqlc.narg('kind')::text IS NULL OR kind = sqlc.narg('kind')::text)
ORDER BY finalized_at DESC, id DESC
LIMIT sqlc.arg('max_rows');

-- GetJob reads one job by primary key, in any state: the caller decides
-- whether it is a dead letter.
-- name: GetJob :one
SELECT id, kind, queue, state, args, attempt, max_attempts, errors, finalized_at, created_at
FROM river_job
WHERE id = @id;

-- LockJobState locks one job's row for the rest of the transaction and
-- returns its state. A dead-letter retry takes it before calling River's
-- JobRetryTx (which would also "retry" a completed or scheduled job), so a
-- concurrent retry of the same job waits here and then sees it available.
-- name: LockJobState :one
SELECT id, kind, state
FROM river_job
WHERE id = @id
FOR UPDATE;

-- DeadLetterCountsByKind counts discarded jobs by kind for the
-- riverbank_dead_letters gauge, read at scrape time through River's
-- state-leading indexes.
-- name: DeadLetterCountsByKind :many
SELECT kind, count(*)::bigint AS count
FROM river_job
WHERE state = 'discarded'
GROUP BY kind
ORDER BY kind;
