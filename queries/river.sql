-- Read-only queries over River's tables (owned by rivermigrate; see
-- internal/db/river_schema.sql). Writes to river_job go through River's API.

-- Job counts leave out completed and cancelled jobs: River keeps them for
-- its retention period (24 h), so at a few hundred jobs a second counting
-- them would scan a table of tens of millions of rows on every scrape. The
-- states counted are the live ones plus discarded (the dead letters), all
-- reachable through River's state-leading indexes.

-- name: JobCountsByKindState :many
SELECT kind, state, count(*)::bigint AS count
FROM river_job
WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled', 'discarded')
GROUP BY kind, state
ORDER BY kind, state;

-- name: JobCountsByQueueState :many
SELECT queue, state, count(*)::bigint AS count
FROM river_job
WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled', 'discarded')
GROUP BY queue, state
ORDER BY queue, state;

-- name: QueueDepth :many
SELECT queue, count(*)::bigint AS count
FROM river_job
WHERE state = 'available' AND scheduled_at <= now()
GROUP BY queue
ORDER BY queue;
