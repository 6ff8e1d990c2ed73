package ledger

import (
	"context"
	"fmt"
	"slices"

	"github.com/riverqueue/river"

	"riverbank/internal/db"
	"riverbank/internal/queue"
)

// ApplyBatchSize is how many pending postings one apply transaction claims.
// Measured (docs/benchmarks.md): 5,000 keeps a batch well under 100 ms on
// the development machine while amortising the account update over
// thousands of postings.
const ApplyBatchSize = 5000

// ApplyResult reports one batch.
type ApplyResult struct {
	Applied    int
	TotalMinor int64
}

// ApplyBatchTx applies up to limit pending postings of one account inside
// tx: it claims them with FOR UPDATE SKIP LOCKED and marks them applied,
// adds their sum to the balance in one update, and counts down their
// entries (locked in id order, so two accounts' jobs sharing entries queue
// rather than deadlock), flipping entries with no pending postings left to
// APPLIED. Everything commits or rolls back together, so a crash mid-batch
// leaves the batch pending for the next run and nothing is applied twice.
func ApplyBatchTx(ctx context.Context, tx *db.Tx, accountID int64, limit int) (ApplyResult, error) {
	claimed, err := tx.ClaimAndMarkPostings(ctx, db.ClaimAndMarkPostingsParams{AccountID: accountID, Lim: int32(limit)})
	if err != nil {
		return ApplyResult{}, fmt.Errorf("claim postings: %w", err)
	}
	if claimed.N == 0 {
		return ApplyResult{}, nil
	}
	if err := tx.AddToBalance(ctx, db.AddToBalanceParams{ID: accountID, Delta: claimed.TotalMinor, N: int64(claimed.N)}); err != nil {
		return ApplyResult{}, fmt.Errorf("add to balance: %w", err)
	}
	if err := tx.LockEntries(ctx, slices.Compact(slices.Clone(claimed.EntryIds))); err != nil {
		return ApplyResult{}, fmt.Errorf("lock entries: %w", err)
	}
	if err := tx.CountDownEntries(ctx, claimed.EntryIds); err != nil {
		return ApplyResult{}, fmt.Errorf("count down entries: %w", err)
	}
	return ApplyResult{Applied: int(claimed.N), TotalMinor: claimed.TotalMinor}, nil
}

// SweepArgs are the args of the periodic ledger.sweep job.
type SweepArgs struct{}

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return "ledger.sweep" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (SweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Maintenance, MaxAttempts: 3}
}

// EnqueueApplyForPending inserts a ledger.apply job (unique per account)
// for every account that has pending postings, found by a loose index scan
// of the partial pending index. It returns how many accounts it found.
func EnqueueApplyForPending(ctx context.Context, tx *db.Tx) (int, error) {
	ids, err := tx.AccountsWithPendingPostings(ctx)
	if err != nil {
		return 0, fmt.Errorf("find accounts with pending postings: %w", err)
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: ApplyArgs{AccountID: id}}
	}
	if _, err := tx.InsertMany(ctx, params); err != nil {
		return 0, err
	}
	return len(ids), nil
}
