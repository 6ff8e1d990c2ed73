// Package db is riverbank's only door to Postgres: the sqlc-generated queries
// (committed, regenerated with `make generate`), the transaction helper that
// puts business writes and River job inserts into one transaction, the schema
// migrator, and the mapping of Postgres errors to domain errors. Nothing
// outside this package inspects pgx or pgconn errors.
package db
