package db

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"riverbank"
)

// migrateLockKey is the session advisory lock that serialises concurrent
// `riverbank migrate` runs (several instances may start at once).
const migrateLockKey = int64(0x72697665726261) // "riverba"

// Step is one numbered step of schema.sql.
type Step struct {
	Version  int
	Name     string
	SQL      string
	Checksum string
}

var stepHeader = regexp.MustCompile(`(?m)^-- riverbank:step (\d+) ([a-z0-9_]+)\s*$`)

// ParseSteps splits a schema file into its numbered steps and checks that
// they are numbered 1..n in order.
func ParseSteps(schema string) ([]Step, error) {
	locs := stepHeader.FindAllStringSubmatchIndex(schema, -1)
	if len(locs) == 0 {
		return nil, errors.New("schema has no `-- riverbank:step` headers")
	}
	steps := make([]Step, 0, len(locs))
	for i, loc := range locs {
		version, err := strconv.Atoi(schema[loc[2]:loc[3]])
		if err != nil {
			return nil, fmt.Errorf("parse step version: %w", err)
		}
		if version != i+1 {
			return nil, fmt.Errorf("schema step %d found where step %d was expected: steps are numbered 1, 2, 3, ... in order", version, i+1)
		}
		end := len(schema)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := strings.TrimSpace(schema[loc[1]:end])
		sum := sha256.Sum256([]byte(body))
		steps = append(steps, Step{
			Version:  version,
			Name:     schema[loc[4]:loc[5]],
			SQL:      body,
			Checksum: hex.EncodeToString(sum[:]),
		})
	}
	return steps, nil
}

// SchemaStatus describes how the database's schema compares with the one
// this binary embeds.
type SchemaStatus struct {
	// AppVersion is the newest application step applied (0 = none).
	AppVersion int
	// AppWant is the newest step this binary knows.
	AppWant int
	// RiverVersion is the newest River migration applied (0 = none).
	RiverVersion int
	// RiverWant is the newest River migration this binary's River knows.
	RiverWant int
}

// Current reports whether the database has every migration this binary needs.
func (s SchemaStatus) Current() bool {
	return s.AppVersion >= s.AppWant && s.RiverVersion >= s.RiverWant
}

// Migrator applies River's migrations and then the steps of schema.sql.
type Migrator struct {
	pool  *pgxpool.Pool
	steps []Step
	river *rivermigrate.Migrator[pgx.Tx]
}

// NewMigrator returns a migrator for the embedded schema.
func NewMigrator(pool *pgxpool.Pool) (*Migrator, error) {
	return newMigrator(pool, riverbank.SchemaSQL)
}

func newMigrator(pool *pgxpool.Pool, schema string) (*Migrator, error) {
	steps, err := ParseSteps(schema)
	if err != nil {
		return nil, err
	}
	rm, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return nil, fmt.Errorf("create river migrator: %w", err)
	}
	return &Migrator{pool: pool, steps: steps, river: rm}, nil
}

// MigrateResult lists what a Migrate call applied.
type MigrateResult struct {
	RiverApplied []int
	AppApplied   []Step
	// RebasedPostings is RebaseAfterRestore's result: -1 unless the
	// database had been copied into another server.
	RebasedPostings int64
}

// Migrate brings the database up to date. It is idempotent: a second run
// applies nothing. Concurrent runs serialise on an advisory lock.
func (m *Migrator) Migrate(ctx context.Context) (*MigrateResult, error) {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	// Everything runs on this one connection: a migrator that needed a
	// second connection while others wait on the lock could exhaust a
	// small pool and deadlock.
	defer func() {
		// A fresh context: the lock must be released even if ctx is done.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	}()

	res := &MigrateResult{}
	// River migrations go one per transaction (some, like adding an enum
	// value, cannot share a transaction with their successors).
	for {
		var applied int
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// MigrateTx is deprecated because several migrations in one
			// transaction can fail; MaxSteps 1 avoids that, and Migrate would
			// take other pool connections while this one holds the lock.
			//lint:ignore SA1019 one migration per transaction on the locked connection (see above)
			riverRes, err := m.river.MigrateTx(ctx, tx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{MaxSteps: 1})
			if err != nil {
				return err
			}
			for _, v := range riverRes.Versions {
				res.RiverApplied = append(res.RiverApplied, v.Version)
				applied++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("apply river migrations: %w", err)
		}
		if applied == 0 {
			break
		}
	}

	// Step 1 creates the bookkeeping table itself; before it exists nothing
	// has been applied.
	applied, err := m.appliedSteps(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	for _, step := range m.steps {
		if sum, ok := applied[step.Version]; ok {
			if sum != step.Checksum {
				return nil, fmt.Errorf("schema step %d (%s) was changed after it was applied; steps are append-only: restore it and add a new step instead", step.Version, step.Name)
			}
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, step.SQL); err != nil {
				return err
			}
			_, err := New(tx).InsertSchemaStep(ctx, InsertSchemaStepParams{Version: int32(step.Version), Name: step.Name, Checksum: step.Checksum})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("apply schema step %d (%s): %w", step.Version, step.Name, err)
		}
		res.AppApplied = append(res.AppApplied, step)
	}
	stamped, err := RebaseAfterRestore(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	res.RebasedPostings = stamped
	return res, nil
}

// RebaseAfterRestore rebases the ledger's applied-through watermarks when
// the database was copied into another server (ledger_rebase_after_restore
// in schema.sql: a no-op otherwise). `riverbank migrate` and `riverbank
// serve` run it before anything is written. It returns how many postings
// it stamped, -1 when nothing needed it (or before schema step 12).
func RebaseAfterRestore(ctx context.Context, db DBTX) (int64, error) {
	var exists bool
	if err := db.QueryRow(ctx, "SELECT to_regproc('ledger_rebase_after_restore') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for ledger_rebase_after_restore: %w", err)
	}
	if !exists {
		return -1, nil
	}
	n, err := New(db).RebaseAfterRestore(ctx)
	if err != nil {
		return 0, fmt.Errorf("rebase ledger watermarks after a restore: %w", err)
	}
	return n, nil
}

func (m *Migrator) appliedSteps(ctx context.Context, conn *pgx.Conn) (map[int]string, error) {
	q := New(conn)
	exists, err := q.SchemaStepTableExists(ctx)
	if err != nil {
		return nil, fmt.Errorf("check schema table: %w", err)
	}
	out := map[int]string{}
	if !exists {
		return out, nil
	}
	rows, err := q.ListSchemaSteps(ctx)
	if err != nil {
		return nil, fmt.Errorf("list applied schema steps: %w", err)
	}
	for _, r := range rows {
		out[int(r.Version)] = r.Checksum
	}
	return out, nil
}

// Status compares the database with this binary's migrations without
// changing anything.
func (m *Migrator) Status(ctx context.Context) (SchemaStatus, error) {
	st := SchemaStatus{AppWant: m.steps[len(m.steps)-1].Version}
	all := m.river.AllVersions()
	st.RiverWant = all[len(all)-1].Version

	existing, err := m.river.ExistingVersions(ctx)
	if err != nil {
		return st, fmt.Errorf("read river migrations: %w", err)
	}
	if len(existing) > 0 {
		st.RiverVersion = existing[len(existing)-1].Version
	}
	q := New(m.pool)
	exists, err := q.SchemaStepTableExists(ctx)
	if err != nil {
		return st, fmt.Errorf("check schema table: %w", err)
	}
	if exists {
		v, err := q.MaxSchemaStep(ctx)
		if err != nil {
			return st, fmt.Errorf("read schema version: %w", err)
		}
		st.AppVersion = int(v)
	}
	return st, nil
}

// RequireCurrent returns an error naming `riverbank migrate` when the
// database is older than this binary needs.
func (m *Migrator) RequireCurrent(ctx context.Context) (SchemaStatus, error) {
	st, err := m.Status(ctx)
	if err != nil {
		return st, err
	}
	if !st.Current() {
		return st, fmt.Errorf("database schema is out of date (app step %d of %d, River migration %d of %d): run `riverbank migrate` (or start with --migrate)",
			st.AppVersion, st.AppWant, st.RiverVersion, st.RiverWant)
	}
	return st, nil
}
