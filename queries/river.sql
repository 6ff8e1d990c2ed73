-- Read-only queries over River's tables (owned by rivermigrate; see
-- internal/db/river_schema.sql). Writes to river_job go through River's API.

-- name: JobCountsByKindState :many
SELECT kind, state, count(*)::bigint AS count
FROM river_job
GROUP BY kind, state
ORDER BY kind, state;

-- name: JobCountsByQueueState :many
SELECT queue, state, count(*)::bigint AS count
FROM river_job
GROUP BY queue, state
ORDER BY queue, state;

-- name: QueueDepth :many
SELECT queue, count(*)::bigint AS count
FROM river_job
WHERE state = 'available' AND scheduled_at <= now()
GROUP BY queue
ORDER BY queue;
