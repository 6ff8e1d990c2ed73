-- Batches (SPEC §8). See schema.sql step 8 and internal/batch.

-- name: InsertBatch :one
-- Claims the idempotency key and stores the batch RUNNING with every item
-- pending. ON CONFLICT DO NOTHING: a concurrent creator of the same key
-- waits here until the first commits, then gets no row (a replay or a
-- conflict, decided by the caller from the stored request hash).
INSERT INTO batch (idempotency_key, request_hash, operation, total)
VALUES (sqlc.arg(idempotency_key), sqlc.arg(request_hash), sqlc.arg(operation), sqlc.arg(total))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *;

-- name: InsertBatchItems :execrows
-- Stores a batch's items in one statement, item i at idx i (0-based), with
-- parallel arrays of equal length: an item with an empty error_code is
-- PENDING; one with a code is FAILED from the start with it and its
-- error_detail (an item that broke the text rule at submission, never
-- run). The caller writes the tally row of the failed ones in the same
-- transaction (InsertBatchTally).
INSERT INTO batch_item (batch_id, idx, payload, status, error_code, error_detail, finished_at)
SELECT sqlc.arg(batch_id), (p.ord - 1)::int, p.payload::json,
       CASE WHEN p.error_code = '' THEN 'PENDING' ELSE 'FAILED' END::batch_item_status,
       NULLIF(p.error_code, ''), NULLIF(p.error_detail, ''),
       CASE WHEN p.error_code = '' THEN NULL ELSE now() END
FROM (SELECT generate_subscripts(sqlc.arg(payloads)::text[], 1) AS ord,
             unnest(sqlc.arg(payloads)::text[]) AS payload,
             unnest(sqlc.arg(error_codes)::text[]) AS error_code,
             unnest(sqlc.arg(error_details)::text[]) AS error_detail) p;

-- name: InsertBatchTally :exec
-- A tally row written outside a chunk: the items a batch's creation
-- recorded FAILED (InsertBatchItems), in its transaction.
INSERT INTO batch_tally (batch_id, succeeded, failed)
VALUES (sqlc.arg(batch_id), sqlc.arg(succeeded), sqlc.arg(failed));

-- name: GetBatch :one
-- A batch with its counters: the sums of its tally rows.
SELECT b.*, t.succeeded, t.failed
FROM batch b,
     LATERAL (SELECT coalesce(sum(bt.succeeded), 0)::int AS succeeded, coalesce(sum(bt.failed), 0)::int AS failed
              FROM batch_tally bt WHERE bt.batch_id = b.id) t
WHERE b.id = $1;

-- name: GetBatchByKey :one
SELECT b.*, t.succeeded, t.failed
FROM batch b,
     LATERAL (SELECT coalesce(sum(bt.succeeded), 0)::int AS succeeded, coalesce(sum(bt.failed), 0)::int AS failed
              FROM batch_tally bt WHERE bt.batch_id = b.id) t
WHERE b.idempotency_key = $1;

-- name: CancelBatch :one
-- RUNNING → CANCELLED; no row when the batch is not RUNNING (or does not
-- exist). A concurrent completion (CompleteBatch) holds the row until it
-- commits; the status is re-checked after, so a completed batch is not
-- cancelled.
UPDATE batch
SET status = 'CANCELLED', cancelled_at = now()
WHERE id = $1 AND status = 'RUNNING'
RETURNING id;

-- name: CompleteBatch :one
-- Completes a RUNNING batch whose items are all recorded (the tallies add
-- up to total), returning it with its counters; no row otherwise. Every
-- chunk run calls it after its last commit, so the run that commits the
-- last items sees every tally and completes the batch (a run that checks
-- earlier sees items pending); two runs that both see the full tallies
-- meet on the row lock, and the second finds the batch COMPLETED.
WITH t AS (
    SELECT coalesce(sum(bt.succeeded), 0)::int AS succeeded, coalesce(sum(bt.failed), 0)::int AS failed
    FROM batch_tally bt WHERE bt.batch_id = sqlc.arg(batch_id)
)
UPDATE batch b
SET status = 'COMPLETED', completed_at = now()
FROM t
WHERE b.id = sqlc.arg(batch_id) AND b.status = 'RUNNING' AND t.succeeded + t.failed = b.total
RETURNING b.id, b.idempotency_key, b.request_hash, b.operation, b.status, b.total, b.created_at, b.completed_at, b.cancelled_at,
          t.succeeded, t.failed;

-- name: ClaimBatchItems :many
-- Claims the next pending items of one chunk (idx in [from_idx, to_idx),
-- after after_idx) while the batch is RUNNING. SKIP LOCKED: items another
-- runner of the same chunk holds (a rescued job whose first run is still
-- alive) are passed over, never done twice; the row lock is held until
-- the claiming transaction records the outcome and commits.
SELECT i.idx, i.payload
FROM batch_item i
WHERE i.batch_id = sqlc.arg(batch_id)
  AND i.idx >= sqlc.arg(from_idx)::int
  AND i.idx < sqlc.arg(to_idx)::int
  AND i.idx > sqlc.arg(after_idx)::int
  AND i.status = 'PENDING'
  AND EXISTS (SELECT 1 FROM batch b WHERE b.id = sqlc.arg(batch_id) AND b.status = 'RUNNING')
ORDER BY i.idx
LIMIT sqlc.arg(lim)
FOR UPDATE OF i SKIP LOCKED;

-- name: ClaimBatchItemsWait :many
-- ClaimBatchItems for a chunk's last attempt: it waits for items another
-- runner holds instead of passing them over, then re-checks that they are
-- still PENDING (READ COMMITTED re-reads a row after its lock is released),
-- so the last attempt finishes every item the other runner rolled back.
SELECT i.idx, i.payload
FROM batch_item i
WHERE i.batch_id = sqlc.arg(batch_id)
  AND i.idx >= sqlc.arg(from_idx)::int
  AND i.idx < sqlc.arg(to_idx)::int
  AND i.idx > sqlc.arg(after_idx)::int
  AND i.status = 'PENDING'
  AND EXISTS (SELECT 1 FROM batch b WHERE b.id = sqlc.arg(batch_id) AND b.status = 'RUNNING')
ORDER BY i.idx
LIMIT sqlc.arg(lim)
FOR UPDATE OF i;

-- name: RecordBatchItems :one
-- Records the outcome of claimed items (status SUCCEEDED with result_id,
-- or FAILED with error_code and error_detail; parallel arrays) and their
-- tally row, in one statement, returning how many it recorded. The items
-- are held by the caller's claim, so all of them are recorded.
WITH d AS (
    SELECT unnest(sqlc.arg(idxs)::int[]) AS idx,
           unnest(sqlc.arg(statuses)::text[]) AS status,
           unnest(sqlc.arg(result_ids)::bigint[]) AS result_id,
           unnest(sqlc.arg(error_codes)::text[]) AS error_code,
           unnest(sqlc.arg(error_details)::text[]) AS error_detail
), done AS (
    UPDATE batch_item i
    SET status = d.status::batch_item_status,
        result_id = NULLIF(d.result_id, 0),
        error_code = NULLIF(d.error_code, ''),
        error_detail = NULLIF(d.error_detail, ''),
        finished_at = now()
    FROM d
    WHERE i.batch_id = sqlc.arg(batch_id) AND i.idx = d.idx AND i.status = 'PENDING'
    RETURNING i.status
), tally AS (
    INSERT INTO batch_tally (batch_id, succeeded, failed)
    SELECT sqlc.arg(batch_id), count(*) FILTER (WHERE done.status = 'SUCCEEDED'), count(*) FILTER (WHERE done.status = 'FAILED')
    FROM done
    RETURNING succeeded, failed
)
SELECT (succeeded + failed)::int AS recorded FROM tally;

-- name: CountChunkPending :one
-- Items of one chunk still PENDING while the batch is RUNNING: left by an
-- internal error, or held by another runner of the chunk.
SELECT count(*)::int
FROM batch_item i
JOIN batch b ON b.id = i.batch_id
WHERE i.batch_id = sqlc.arg(batch_id)
  AND i.idx >= sqlc.arg(from_idx)::int
  AND i.idx < sqlc.arg(to_idx)::int
  AND i.status = 'PENDING'
  AND b.status = 'RUNNING';

-- name: ListBatchItems :many
-- A page of a batch's items in index order after after_idx, optionally of
-- one status.
SELECT idx, status, result_id, error_code, error_detail, finished_at
FROM batch_item
WHERE batch_id = sqlc.arg(batch_id)
  AND idx > sqlc.arg(after_idx)::int
  AND (sqlc.narg(status)::batch_item_status IS NULL OR status = sqlc.narg(status)::batch_item_status)
ORDER BY idx
LIMIT sqlc.arg(lim);
