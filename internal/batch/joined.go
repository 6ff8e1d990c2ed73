package batch

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A group first runs its items on a joined executor: the domain's InTx
// joins the group's transaction instead of opening a savepoint (two round
// trips and a subtransaction per item saved). That is only right while no
// item needs its own rollback, so the executor watches: an item that ran a
// statement and then failed, or whose domain call rolled back a nested
// transaction (even one it recovered from), may have left writes behind —
// the group is then rolled back whole (errRedo) and run again with a
// savepoint per item. An item that fails before running any statement (a
// validation error) wrote nothing, and fails without a redo.

// errRedo says the group must run again with savepoints.
var errRedo = errors.New("batch: redo the group with a savepoint per item")

// joinState is what the executor saw during one item.
type joinState struct {
	statements int
	rolledBack bool
}

// dirty reports whether the item may have left writes that a rollback of
// its own was meant to undo.
func (s *joinState) dirty(err error) bool {
	return s.statements > 0 && (err != nil || s.rolledBack)
}

// joined is a db.Executor on the group's transaction whose Begin joins
// that transaction.
type joined struct {
	pgx.Tx
	state *joinState
}

// Begin implements db.Executor: a nested transaction that is the group's.
func (j joined) Begin(context.Context) (pgx.Tx, error) { return &joinedNested{joined: j}, nil }

// Exec implements db.DBTX, counting the statement.
func (j joined) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	j.state.statements++
	return j.Tx.Exec(ctx, sql, args...)
}

// Query implements db.DBTX, counting the statement.
func (j joined) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	j.state.statements++
	return j.Tx.Query(ctx, sql, args...)
}

// QueryRow implements db.DBTX, counting the statement.
func (j joined) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	j.state.statements++
	return j.Tx.QueryRow(ctx, sql, args...)
}

// SendBatch implements pgx.Tx, counting the batch as a statement.
func (j joined) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	j.state.statements++
	return j.Tx.SendBatch(ctx, b)
}

// CopyFrom implements pgx.Tx, counting the copy as a statement.
func (j joined) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	j.state.statements++
	return j.Tx.CopyFrom(ctx, table, columns, src)
}

// joinedNested is a nested transaction that joined the group's: Commit
// does nothing (the group commits), Rollback records that an undo was
// wanted. After either, both answer pgx.ErrTxClosed as pgx's do.
type joinedNested struct {
	joined
	done bool
}

// Begin nests further, still in the group's transaction.
func (n *joinedNested) Begin(context.Context) (pgx.Tx, error) {
	return &joinedNested{joined: n.joined}, nil
}

// Commit implements pgx.Tx.
func (n *joinedNested) Commit(context.Context) error {
	if n.done {
		return pgx.ErrTxClosed
	}
	n.done = true
	return nil
}

// Rollback implements pgx.Tx.
func (n *joinedNested) Rollback(context.Context) error {
	if n.done {
		return pgx.ErrTxClosed
	}
	n.done = true
	n.state.rolledBack = true
	return nil
}
