-- Webhook subscriptions and deliveries (SPEC §8). See schema.sql step 9 and
-- internal/webhook. Positions in the events feed are (txid, id) and are
-- read only below the statement's snapshot xmin, as the feed is
-- (queries/events.sql): gap-free.
--
-- An event e is wanted by a subscription s when its type is one of
-- s.event_types (NULL: any) and its transaction was not visible to the
-- snapshot s was created in (s.start_snapshot; NULL once the cursor is past
-- that snapshot's xmax): new events only. Every query below spells out that
-- same predicate.

-- name: NextWebhookSubscriptionID :one
-- The id of a new subscription, drawn before the insert: it is the
-- additional data of the secret's encryption.
SELECT nextval(pg_get_serial_sequence('webhook_subscription', 'id'))::bigint AS id;

-- name: InsertWebhookSubscription :one
-- A new subscription starts at this statement's snapshot: its cursor at the
-- snapshot's xmin, (xmin, 0) (every event of a transaction below xmin is
-- before it), and the snapshot kept to skip the transactions between xmin
-- and xmax it saw committed. So exactly the events of transactions that
-- commit after it are delivered.
INSERT INTO webhook_subscription (id, url, event_types, description, secret_key_id, secret_nonce, secret_ciphertext, cursor_txid, cursor_id, start_snapshot)
VALUES (sqlc.arg(id), sqlc.arg(url), sqlc.narg(event_types)::text[], sqlc.arg(description), sqlc.arg(secret_key_id),
        sqlc.arg(secret_nonce), sqlc.arg(secret_ciphertext), pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 0,
        pg_current_snapshot()::text)
RETURNING *;

-- name: GetWebhookSubscription :one
SELECT * FROM webhook_subscription WHERE id = sqlc.arg(id);

-- name: ListWebhookSubscriptions :many
SELECT * FROM webhook_subscription
WHERE id > sqlc.arg(after_id)::bigint
ORDER BY id
LIMIT sqlc.arg(lim);

-- name: DeleteWebhookSubscription :execrows
DELETE FROM webhook_subscription WHERE id = sqlc.arg(id);

-- name: ClearWebhookStall :execrows
-- A run of the subscription's delivery job has started (a retried dead
-- letter, or a new job): the dispatch may wake the subscription again.
UPDATE webhook_subscription SET stalled_job_id = NULL
WHERE id = sqlc.arg(id) AND stalled_job_id IS NOT NULL;

-- name: WebhookEventsAfter :many
-- The next events a subscription wants after its cursor, in feed order,
-- only of transactions older than this statement's snapshot xmin.
SELECT e.txid, e.id, e.type, e.subject_type, e.subject_id, e.occurred_at, e.data, e.data_kind
FROM event e
WHERE (e.txid, e.id) > (sqlc.arg(after_txid)::bigint, sqlc.arg(after_id)::bigint)
  AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  AND (sqlc.narg(types)::text[] IS NULL OR e.type = ANY (sqlc.narg(types)::text[]))
  AND (sqlc.narg(start_snapshot)::text IS NULL OR NOT pg_visible_in_snapshot(e.txid::text::xid8, sqlc.narg(start_snapshot)::text::pg_snapshot))
ORDER BY e.txid, e.id
LIMIT sqlc.arg(lim);

-- name: AdvanceWebhookCursor :execrows
-- Moves the cursor past a delivered event, only from the position the
-- delivery started at: a deleted subscription, or a cursor that moved
-- meanwhile, updates nothing and the delivery job stops.
UPDATE webhook_subscription
SET cursor_txid = sqlc.arg(to_txid), cursor_id = sqlc.arg(to_id),
    start_snapshot = CASE WHEN sqlc.arg(to_txid)::bigint >= pg_snapshot_xmax(start_snapshot::pg_snapshot)::text::bigint THEN NULL ELSE start_snapshot END
WHERE id = sqlc.arg(id) AND cursor_txid = sqlc.arg(from_txid) AND cursor_id = sqlc.arg(from_id);

-- name: LockWebhookSubscriptionAt :one
-- Locks the subscription if it still exists with its cursor at the given
-- position (a failed attempt is recorded only then).
SELECT id FROM webhook_subscription
WHERE id = sqlc.arg(id) AND cursor_txid = sqlc.arg(at_txid) AND cursor_id = sqlc.arg(at_id)
FOR UPDATE;

-- name: StallWebhookSubscription :exec
UPDATE webhook_subscription SET stalled_job_id = sqlc.arg(job_id) WHERE id = sqlc.arg(id);

-- name: RecordWebhookAttempt :one
-- One attempt at delivering an event: the first creates the row, later
-- ones count up. delivered_at is set by the attempt that got a 2xx.
INSERT INTO webhook_delivery (subscription_id, event_id, event_type, attempts, last_status, last_error, last_attempt_at, delivered_at)
VALUES (sqlc.arg(subscription_id), sqlc.arg(event_id), sqlc.arg(event_type), 1, sqlc.narg(last_status), sqlc.narg(last_error), now(),
        CASE WHEN sqlc.arg(delivered)::boolean THEN now() END)
ON CONFLICT (subscription_id, event_id) DO UPDATE
SET attempts = webhook_delivery.attempts + 1,
    last_status = excluded.last_status,
    last_error = excluded.last_error,
    last_attempt_at = excluded.last_attempt_at,
    delivered_at = coalesce(webhook_delivery.delivered_at, excluded.delivered_at)
RETURNING *;

-- name: ListWebhookDeliveries :many
-- A subscription's deliveries, newest first (id order is feed order).
SELECT * FROM webhook_delivery
WHERE subscription_id = sqlc.arg(subscription_id)
  AND (sqlc.arg(before_id)::bigint = 0 OR id < sqlc.arg(before_id)::bigint)
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: WebhookSubscriptionsBehind :many
-- Subscriptions not stalled with an event they want after their cursor
-- (below xmin): the periodic dispatch enqueues their delivery jobs. One
-- probe per subscription, on the primary key (every type) or on
-- (type, txid, id) per wanted type, starting at the cursor.
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin)
SELECT s.id
FROM webhook_subscription s, h
WHERE s.stalled_job_id IS NULL
  AND s.id > sqlc.arg(after_id)::bigint
  AND CASE WHEN s.event_types IS NULL THEN
        EXISTS (SELECT 1 FROM event e
                WHERE (e.txid, e.id) > (s.cursor_txid, s.cursor_id) AND e.txid < h.xmin
                  AND (s.start_snapshot IS NULL OR NOT pg_visible_in_snapshot(e.txid::text::xid8, s.start_snapshot::pg_snapshot)))
      ELSE
        EXISTS (SELECT 1 FROM unnest(s.event_types) t (want)
                CROSS JOIN LATERAL (SELECT 1 FROM event e
                    WHERE e.type = t.want AND (e.txid, e.id) > (s.cursor_txid, s.cursor_id) AND e.txid < h.xmin
                      AND (s.start_snapshot IS NULL OR NOT pg_visible_in_snapshot(e.txid::text::xid8, s.start_snapshot::pg_snapshot))
                    LIMIT 1) m)
      END
ORDER BY s.id
LIMIT sqlc.arg(lim);

-- name: WebhookSubscriptionBehind :one
-- Whether one subscription has an event it wants after its cursor.
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin)
SELECT EXISTS (
    SELECT 1 FROM webhook_subscription s, h
    WHERE s.id = sqlc.arg(id)
      AND EXISTS (SELECT 1 FROM event e
                  WHERE (e.txid, e.id) > (s.cursor_txid, s.cursor_id) AND e.txid < h.xmin
                    AND (s.event_types IS NULL OR e.type = ANY (s.event_types))
                    AND (s.start_snapshot IS NULL OR NOT pg_visible_in_snapshot(e.txid::text::xid8, s.start_snapshot::pg_snapshot)))
)::boolean AS behind;

-- name: SkipUnwantedWebhookEvents :execrows
-- Moves the cursor of subscriptions to the feed's end (xmin, 0) when
-- events lie between but none they want (another type, or committed before
-- the subscription): without it, every dispatch would probe past a growing
-- run of unwanted events. Safe against a running delivery: that job moves
-- the cursor only over an event it wants, and none lies in the skipped
-- range (all of it is below xmin, so committed and visible to this
-- statement); its conditional update then finds the cursor moved and it
-- stops. Subscriptions without a filter or start snapshot never have
-- unwanted events and are left out.
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin)
UPDATE webhook_subscription s
SET cursor_txid = h.xmin, cursor_id = 0,
    start_snapshot = CASE WHEN h.xmin >= pg_snapshot_xmax(s.start_snapshot::pg_snapshot)::text::bigint THEN NULL ELSE s.start_snapshot END
FROM h
WHERE (s.event_types IS NOT NULL OR s.start_snapshot IS NOT NULL)
  AND s.stalled_job_id IS NULL
  AND (s.cursor_txid, s.cursor_id) < (h.xmin, 0)
  AND EXISTS (SELECT 1 FROM event e WHERE (e.txid, e.id) > (s.cursor_txid, s.cursor_id) AND e.txid < h.xmin)
  AND NOT EXISTS (SELECT 1 FROM event e
                  WHERE (e.txid, e.id) > (s.cursor_txid, s.cursor_id) AND e.txid < h.xmin
                    AND (s.event_types IS NULL OR e.type = ANY (s.event_types))
                    AND (s.start_snapshot IS NULL OR NOT pg_visible_in_snapshot(e.txid::text::xid8, s.start_snapshot::pg_snapshot)));

-- name: DeleteOldWebhookDeliveries :execrows
-- One small batch of delivered rows older than the cutoff (the event
-- retention). Undelivered rows stay: at most one per subscription, the
-- event it is stuck on.
DELETE FROM webhook_delivery d
WHERE d.id IN (
    SELECT o.id FROM webhook_delivery o
    WHERE o.created_at < sqlc.arg(cutoff)::timestamptz AND o.delivered_at IS NOT NULL
    LIMIT sqlc.arg(lim)
);

-- name: RelaxWebhookCommit :exec
-- The transaction that records a delivery commits without waiting for its
-- WAL flush: if the server crashes, the last few hundred milliseconds of
-- cursor moves may be lost and those events are sent again — which
-- at-least-once delivery allows (receivers de-duplicate on the event id) —
-- while one subscription's deliveries, strictly one after another, no
-- longer wait for a disk flush each.
SELECT set_config('synchronous_commit', 'off', true)::text AS setting;
