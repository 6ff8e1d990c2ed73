package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"riverbank/internal/db"
	"riverbank/internal/queue"
)

// ApplyBatchSize is how many pending postings one apply transaction
// covers. Applying moves the account's watermark (one row, however many
// postings), so the size only bounds one transaction's index scan and sum
// (5,000 postings: a few milliseconds); measured with `riverbank bench
// ledger --mode apply`, 5,000 and 50,000 drain 100,000 postings alike.
const ApplyBatchSize = 5000

// StallAfter is how long a committed posting may wait above the horizon
// (behind a transaction still running somewhere on the server, which holds
// the watermark back) before the apply job applies it on its own.
const StallAfter = time.Second

// ApplyResult reports one batch.
type ApplyResult struct {
	Applied    int
	TotalMinor int64
}

// ApplyBatchTx applies up to limit pending postings of one account inside
// tx, every committed one it finds: by watermark as far as the horizon
// allows, the rest on their own. See ApplyWatermarkTx.
func ApplyBatchTx(ctx context.Context, tx *db.Tx, accountID int64, limit int) (ApplyResult, error) {
	return applyTx(ctx, tx, accountID, limit, 0)
}

// ApplyWatermarkTx applies up to limit pending postings of one account
// inside tx (ledger_apply in schema.sql): it locks the account row, sums
// the pending postings below the horizon (every transaction older than the
// oldest one still running has ended, so none can appear there later),
// adds the sum to the balance and moves the account's applied-through
// watermark past them, all in one account update; committed postings above
// the horizon older than stallAfter are applied on their own (marked). It
// commits or rolls back with tx, so a crash mid-batch leaves the batch
// pending for the next run and nothing is applied twice.
func ApplyWatermarkTx(ctx context.Context, tx *db.Tx, accountID int64, limit int, stallAfter time.Duration) (ApplyResult, error) {
	ms := max(stallAfter.Milliseconds(), 1)
	return applyTx(ctx, tx, accountID, limit, ms)
}

func applyTx(ctx context.Context, tx *db.Tx, accountID int64, limit int, markAfterMs int64) (ApplyResult, error) {
	r, err := tx.ApplyPostings(ctx, db.ApplyPostingsParams{AccountID: accountID, Lim: int32(limit), MarkAfterMs: int32(min(markAfterMs, 1<<31-1))})
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply postings: %w", err)
	}
	return ApplyResult{Applied: int(r.Applied), TotalMinor: r.TotalMinor}, nil
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
// for every account that has pending postings, found by one index probe
// per account from its watermark on. It returns how many accounts it found.
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
