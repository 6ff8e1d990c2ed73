package db

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Executor is what a service needs to run queries and open transactions. A
// *pgxpool.Pool, a *pgx.Conn and a pgx.Tx all satisfy it, so a service built
// on an Executor runs unchanged inside a caller's transaction (Begin on a
// pgx.Tx opens a savepoint).
type Executor interface {
	DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// JobInserter is the part of a River client the domain uses: inserting jobs
// on a caller's transaction. *river.Client[pgx.Tx] satisfies it; an
// insert-only client (no workers, never started) is enough.
type JobInserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Store runs business writes and the River jobs they cause in one
// transaction.
type Store struct {
	db    Executor
	river JobInserter
}

// NewStore returns a Store on db (a pool, or a caller's transaction) that
// inserts jobs with river.
func NewStore(db Executor, river JobInserter) *Store {
	return &Store{db: db, river: river}
}

// Queries returns sqlc queries on the store's executor (no transaction).
func (s *Store) Queries() *Queries { return New(s.db) }

// JobInserter returns the River client the store inserts jobs with. The
// store's contract stays insert-only; a service that needs another part of
// River's API on the same client (the dead-letter retry needs JobRetryTx)
// asserts it to its own small interface when it is built (domains.New), so
// no second client has to be threaded through the wiring.
func (s *Store) JobInserter() JobInserter { return s.river }

// Tx is one open transaction: sqlc queries and River inserts share it, so
// they commit or roll back together.
type Tx struct {
	*Queries
	// Tx is the underlying pgx transaction.
	Tx    pgx.Tx
	river JobInserter
	hooks *[]func()
}

// AfterCommit registers fn to run once the store's transaction has
// committed (never on rollback): work that must not happen inside it,
// like waking readers of what it wrote. On a store that sits on a
// caller's transaction, "committed" is the release of its savepoint.
func (t *Tx) AfterCommit(fn func()) {
	if t.hooks != nil {
		*t.hooks = append(*t.hooks, fn)
	}
}

// Insert inserts a River job in this transaction.
func (t *Tx) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	res, err := t.river.InsertTx(ctx, t.Tx, args, opts)
	if err != nil {
		return nil, fmt.Errorf("insert job %s: %w", args.Kind(), err)
	}
	return res, nil
}

// InsertMany inserts several River jobs in this transaction.
func (t *Tx) InsertMany(ctx context.Context, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	if len(params) == 0 {
		return nil, nil
	}
	res, err := t.river.InsertManyTx(ctx, t.Tx, params)
	if err != nil {
		return nil, fmt.Errorf("insert %d jobs: %w", len(params), err)
	}
	return res, nil
}

// InTx runs fn in a transaction (a savepoint when the store already sits on
// a transaction). fn's error rolls everything back, rows and jobs alike;
// nil commits both. The rollback runs with a context that ignores ctx's
// cancellation, so a request that is cancelled mid-transaction still
// returns its connection to the pool clean.
//
// A transaction of its own is always READ COMMITTED, whatever the server's
// default_transaction_isolation: the handoff protocols (ledger.apply's and
// the order confirmer's final transactions) rely on a statement after a
// lock seeing every transaction that committed before the lock was granted.
func (s *Store) InTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	var ptx pgx.Tx
	if b, ok := s.db.(interface {
		BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
	}); ok {
		ptx, err = b.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	} else {
		ptx, err = s.db.Begin(ctx) // a savepoint of a caller's transaction
	}
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = ptx.Rollback(rbCtx)
		}
	}()
	var hooks []func()
	if err := fn(&Tx{Queries: New(ptx), Tx: ptx, river: s.river, hooks: &hooks}); err != nil {
		return err
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, h := range hooks {
		h()
	}
	return nil
}

// InTxV is InTx for a function that also returns a value.
func InTxV[T any](ctx context.Context, s *Store, fn func(tx *Tx) (T, error)) (T, error) {
	var out T
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	return out, err
}

// ErrNoRows is returned by :one queries that find nothing.
var ErrNoRows = pgx.ErrNoRows

// IsNotFound reports whether err means a :one query found no row.
func IsNotFound(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// ConstraintViolation reports whether err is a unique (23505), check
// (23514), foreign-key (23503) or exclusion (23P01) violation, and names
// the constraint. Callers turn known constraints into domain errors.
func ConstraintViolation(err error) (constraint string, ok bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "", false
	}
	switch pgErr.Code {
	case "23505", "23514", "23503", "23P01":
		return pgErr.ConstraintName, true
	}
	return "", false
}

// IsUniqueViolation reports whether err is a unique violation of the named
// constraint (any constraint when name is empty).
func IsUniqueViolation(err error, name string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && (name == "" || pgErr.ConstraintName == name)
}

// IsInvalidText reports whether Postgres rejected a text value (a NUL
// character or invalid UTF-8): bad client input that slipped past
// validation.
func IsInvalidText(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "22021" || pgErr.Code == "22P05")
}

// IsUnavailable reports whether err means the database could not be
// reached or went away: a connection that could not be made (refused,
// timed out, server shutting down or starting up, too many connections),
// a session the server terminated (admin shutdown, crash, failover), a
// connection broken mid-statement or mid-transaction (reset, EOF) and any
// later use of it (pgconn.ErrConnClosed), and a statement or pool
// acquire that its context's deadline ended (the database did not answer
// in time: down, unreachable without a reset, or saturated). The client may
// retry later; the error is not the request's fault. A context cancelled
// because its caller went away is not unavailability.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	if errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// Dial, read and write failures (including i/o timeouts).
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// Savepoint runs fn on a savepoint of tx: fn's error rolls back only what
// fn did, and the transaction goes on (a chunk of work that fails is
// retried in smaller pieces without losing the rest). Hooks fn registers
// with AfterCommit run after tx's own commit, and are dropped when the
// savepoint rolls back.
func (t *Tx) Savepoint(ctx context.Context, fn func(tx *Tx) error) error {
	sp, err := t.Tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	hooks := 0
	if t.hooks != nil {
		hooks = len(*t.hooks)
	}
	if err := fn(&Tx{Queries: New(sp), Tx: sp, river: t.river, hooks: t.hooks}); err != nil {
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rbErr := sp.Rollback(rbCtx); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		if t.hooks != nil {
			*t.hooks = (*t.hooks)[:hooks]
		}
		return err
	}
	if err := sp.Commit(ctx); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// Describe summarises a database error for operators without SQL text or
// values: the SQLSTATE condition and the constraint, table or column it
// names. Non-database errors are described as "internal error".
func Describe(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "internal error"
	}
	out := "SQLSTATE " + pgErr.Code
	switch {
	case pgErr.ConstraintName != "":
		out += " (constraint " + pgErr.ConstraintName + ")"
	case pgErr.ColumnName != "":
		out += " (column " + pgErr.ColumnName + ")"
	case pgErr.TableName != "":
		out += " (table " + pgErr.TableName + ")"
	}
	switch {
	case pgErr.Code == "22003":
		out += ": a value is out of range"
	case strings.HasPrefix(pgErr.Code, "23"):
		out += ": a constraint was violated"
	}
	return out
}
