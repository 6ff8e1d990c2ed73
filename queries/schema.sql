-- name: SchemaStepTableExists :one
SELECT (to_regclass('riverbank_schema_step') IS NOT NULL)::boolean AS exists;

-- name: ListSchemaSteps :many
SELECT version, name, checksum, applied_at FROM riverbank_schema_step ORDER BY version;

-- name: MaxSchemaStep :one
SELECT coalesce(max(version), 0)::int FROM riverbank_schema_step;

-- name: InsertSchemaStep :one
INSERT INTO riverbank_schema_step (version, name, checksum) VALUES ($1, $2, $3)
RETURNING version;
