-- The events feed (SPEC §8). See schema.sql step 7 and internal/events.

-- name: AppendEvent :one
-- Appends an event. Readers are woken after the commit, from outside the
-- transaction (NotifyEvents): a NOTIFY inside it would hold Postgres's
-- server-wide notification lock until the commit is flushed, serialising
-- every writing transaction.
INSERT INTO event (type, subject_type, subject_id, data)
VALUES (sqlc.arg(type), sqlc.arg(subject_type), sqlc.arg(subject_id), sqlc.arg(data))
RETURNING id, txid, occurred_at;

-- name: NotifyEvents :exec
-- Wakes the long-polling readers of every process (their hubs LISTEN).
-- Sent in its own short transaction, which writes nothing and so waits
-- for no flush.
SELECT pg_notify('riverbank_events', '');

-- name: ReadEvents :many
-- A page of the feed after (after_txid, after_id), only of transactions
-- older than this statement's snapshot xmin: gap-free.
SELECT e.txid, e.id, e.type, e.subject_type, e.subject_id, e.occurred_at, e.data, e.data_kind
FROM event e
WHERE (e.txid, e.id) > (sqlc.arg(after_txid)::bigint, sqlc.arg(after_id)::bigint)
  AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  AND (sqlc.narg(type)::text IS NULL OR e.type = sqlc.narg(type)::text)
  AND (sqlc.narg(subject_id)::text IS NULL OR e.subject_id = sqlc.narg(subject_id)::text)
ORDER BY e.txid, e.id
LIMIT sqlc.arg(lim);

-- name: PendingEventsExist :one
-- Whether events exist that a reader cannot serve yet (their transaction
-- is at or above the snapshot xmin): a long-poll then re-reads soon even
-- without a notification (xmin advances when an unrelated transaction
-- ends, which notifies nobody).
SELECT EXISTS (
    SELECT 1 FROM event e
    WHERE (e.txid, e.id) > (sqlc.arg(after_txid)::bigint, sqlc.arg(after_id)::bigint)
      AND e.txid >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint
);

-- name: DeleteExpiredEvents :execrows
-- One small batch of events older than the cutoff (retention): short
-- transactions, no long locks.
DELETE FROM event d
WHERE (d.txid, d.id) IN (
    SELECT o.txid, o.id FROM event o WHERE o.occurred_at < sqlc.arg(cutoff)::timestamptz LIMIT sqlc.arg(lim)
);

-- name: AppendEvents :exec
-- Appends many events of one type in one statement (a chunk's loans
-- turned overdue).
INSERT INTO event (type, subject_type, subject_id, data)
SELECT sqlc.arg(type)::text, sqlc.arg(subject_type)::text, s.subject_id, d.data
FROM unnest(sqlc.arg(subject_ids)::text[]) WITH ORDINALITY AS s(subject_id, ord)
JOIN unnest(sqlc.arg(datas)::jsonb[]) WITH ORDINALITY AS d(data, ord) USING (ord);
