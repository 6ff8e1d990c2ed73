package jobs

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

// ApplyWorker works ledger.apply. It drains one account's pending postings
// in batches (each moves the account's watermark: one row written), and
// while postings keep arriving it lingers (short sleeps
// between batches, up to Budget) so a hot account is served by one
// long-lived job applying large batches rather than by a stream of short
// jobs. Its final transaction takes the account's apply lock exclusively
// (waiting for every urgent writer holding it shared to commit), deletes
// the apply signal, applies what those writers wrote, completes the job and
// re-enqueues it if anything is still pending, all atomically; so an urgent
// posting is never left behind for the sweep.
type ApplyWorker struct {
	river.WorkerDefaults[ledger.ApplyArgs]
	Store *db.Store
	// BatchSize defaults to ledger.ApplyBatchSize.
	BatchSize int
	// Budget bounds one job's run so a permanently hot account hands over
	// to a fresh job rather than holding a worker forever. Default 20s.
	Budget time.Duration
	// Linger is the pause between batches while postings keep arriving.
	// Default 250ms: measured on the 2-core machine, 20 ms gave 0.26-0.29 ×
	// pgbench -N through the API (busy accounts' jobs spent the database on
	// small batches), 100 ms 0.34, 250 ms 0.37; a posting waits at most
	// about that long to be applied under load.
	Linger time.Duration
	// StallAfter is how long a committed posting may wait behind the
	// horizon (a transaction still running somewhere on the server) before
	// a batch applies it on its own. Default ledger.StallAfter.
	StallAfter time.Duration
}

// Work implements river.Worker.
func (w *ApplyWorker) Work(ctx context.Context, job *river.Job[ledger.ApplyArgs]) error {
	batch := cmp.Or(w.BatchSize, ledger.ApplyBatchSize)
	deadline := time.Now().Add(cmp.Or(w.Budget, 20*time.Second))
	linger := cmp.Or(w.Linger, 250*time.Millisecond)
	stall := cmp.Or(w.StallAfter, ledger.StallAfter)
	accountID := job.Args.AccountID
	for time.Now().Before(deadline) {
		var res ledger.ApplyResult
		err := w.Store.InTx(ctx, func(tx *db.Tx) error {
			var err error
			res, err = ledger.ApplyWatermarkTx(ctx, tx, accountID, batch, stall)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply postings of account %d: %w", accountID, err)
		}
		if res.Applied == batch {
			continue
		}
		if res.Applied == 0 {
			// Nothing applied: done when nothing is pending; otherwise the
			// postings wait behind the horizon (writers still committing),
			// and lingering lets the watermark take them instead of the
			// final transaction marking them one by one.
			pending, err := w.Store.Queries().HasPendingPostings(ctx, accountID)
			if err != nil {
				return fmt.Errorf("look for pending postings of account %d: %w", accountID, err)
			}
			if !pending {
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(linger):
		}
	}
	return w.Store.InTx(ctx, func(tx *db.Tx) error {
		if _, err := ledger.FinishApplyTx(ctx, tx, accountID, batch); err != nil {
			return fmt.Errorf("finish applying account %d: %w", accountID, err)
		}
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx.Tx, job); err != nil {
			return err
		}
		// This job is completed in this transaction, so a new unique job
		// for the account is allowed: re-enqueue atomically when anything
		// (a non-urgent posting, or more work after the budget ran out) is
		// still pending, so nothing depends on a step after commit.
		more, err := tx.HasPendingPostings(ctx, accountID)
		if err != nil {
			return fmt.Errorf("re-check pending postings: %w", err)
		}
		if more {
			_, err = tx.Insert(ctx, ledger.ApplyArgs{AccountID: accountID}, nil)
		}
		return err
	})
}

// SweepWorker works the periodic ledger.sweep: it enqueues ledger.apply for
// every account with pending postings (non-urgent entries rely on it).
type SweepWorker struct {
	river.WorkerDefaults[ledger.SweepArgs]
	Store *db.Store
}

// Work implements river.Worker.
func (w *SweepWorker) Work(ctx context.Context, job *river.Job[ledger.SweepArgs]) error {
	return w.Store.InTx(ctx, func(tx *db.Tx) error {
		_, err := ledger.EnqueueApplyForPending(ctx, tx)
		return err
	})
}
