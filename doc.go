// Package riverbank holds what every layer of riverbank shares: the domain
// error type with its machine-readable codes, and the application schema
// (schema.sql) embedded into the binary so `riverbank migrate` needs no files
// on disk.
//
// The layering follows the "standard package layout": this root package
// depends on nothing in the module; internal/<domain> packages implement the
// rules; api/ maps error codes to HTTP statuses; jobs/ holds River workers.
package riverbank

import _ "embed"

// SchemaSQL is the whole application schema, as a sequence of numbered,
// append-only migration steps (see internal/db/migrate.go for the format).
//
//go:embed schema.sql
var SchemaSQL string

// Version is the release version, set at build time with
// -ldflags "-X riverbank.Version=v1.2.3"; "dev" otherwise.
var Version = "dev"
