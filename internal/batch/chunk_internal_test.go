package batch

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testdb"
)

func TestGroupCut(t *testing.T) {
	t.Parallel()
	plain := []byte(`{"idempotency_key":"k","postings":[{"account":"a","amount_minor":10},{"account":"b","amount_minor":-10}]}`)
	urgent := []byte(`{"idempotency_key":"k","urgent":true,"postings":[]}`)
	large := []byte(`{"idempotency_key":"k","postings":[{"account":"a","amount_minor":20000000000},{"account":"b","amount_minor":-20000000000}]}`)
	edge := []byte(`{"idempotency_key":"k","postings":[{"account":"a","amount_minor":10000000000},{"account":"b","amount_minor":-10000000000}]}`)
	broken := []byte(`{"postings":"no"}`)
	rows := func(payloads ...[]byte) []db.ClaimBatchItemsRow {
		out := make([]db.ClaimBatchItemsRow, len(payloads))
		for i, p := range payloads {
			out[i] = db.ClaimBatchItemsRow{Idx: int32(i), Payload: p}
		}
		return out
	}
	require.EqualValues(t, 10_000_000_000, ledger.LargeAmountMinor/ledger.MaxPostings, "edge is the largest posting that runs with others")
	for name, tc := range map[string]struct {
		op   string
		rows []db.ClaimBatchItemsRow
		want int
	}{
		"plain entries share a transaction":            {OpJournalEntry, rows(plain, plain, edge, broken), 4},
		"an urgent entry ends the group before it":     {OpJournalEntry, rows(plain, plain, urgent, plain), 2},
		"an urgent entry first runs alone":             {OpJournalEntry, rows(urgent, plain, plain), 1},
		"a large entry ends the group before it":       {OpJournalEntry, rows(plain, large, plain), 1},
		"a large entry first runs alone":               {OpJournalEntry, rows(large, plain), 1},
		"one item is one item":                         {OpJournalEntry, rows(urgent), 1},
		"other operations are cut by their claim size": {OpOrder, rows(plain, urgent), 2},
	} {
		require.Equal(t, tc.want, groupCut(tc.op, tc.rows), name)
	}
}

// TestJoinedExecutorSeesWhatNeedsARollback: the joined executor runs a
// nested transaction in the group's own and reports an item as dirty
// exactly when it may have left writes its rollback was meant to undo.
func TestJoinedExecutorSeesWhatNeedsARollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testdb.Tx(t)
	state := &joinState{}
	store := db.NewStore(joined{Tx: tx, state: state}, nil)
	failed := errors.New("item failed")
	stmt := func(tx *db.Tx) error {
		_, err := tx.Tx.Exec(ctx, "SELECT 1")
		return err
	}
	for name, tc := range map[string]struct {
		run   func() error
		dirty bool
	}{
		"a success is clean": {func() error { return store.InTx(ctx, stmt) }, false},
		"a failure before any statement wrote nothing": {func() error {
			return store.InTx(ctx, func(*db.Tx) error { return failed })
		}, false},
		"a failure after a statement is dirty": {func() error {
			return store.InTx(ctx, func(tx *db.Tx) error { _ = stmt(tx); return failed })
		}, true},
		"a success after a rolled-back attempt is dirty": {func() error {
			_ = store.InTx(ctx, func(tx *db.Tx) error { _ = stmt(tx); return failed })
			return store.InTx(ctx, stmt)
		}, true},
		"a rollback after commit (pgx.BeginFunc) is clean": {func() error {
			return pgx.BeginFunc(ctx, joined{Tx: tx, state: state}, func(t pgx.Tx) error { _, err := t.Exec(ctx, "SELECT 1"); return err })
		}, false},
		"a nested savepoint joins too": {func() error {
			return store.InTx(ctx, func(tx *db.Tx) error { return tx.Savepoint(ctx, stmt) })
		}, false},
	} {
		*state = joinState{}
		err := tc.run()
		require.Equal(t, tc.dirty, state.dirty(err), name)
	}

	// Writes land in the group's transaction: visible in it, gone with it.
	_, err := tx.Exec(ctx, "CREATE TEMP TABLE joined_probe (n int)")
	require.NoError(t, err)
	require.NoError(t, store.InTx(ctx, func(tx *db.Tx) error {
		_, err := tx.Tx.Exec(ctx, "INSERT INTO joined_probe VALUES (1)")
		return err
	}))
	var n int
	require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM joined_probe").Scan(&n))
	require.Equal(t, 1, n)
}
