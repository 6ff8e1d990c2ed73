package jobs

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

// ApplyWorker works ledger.apply: it drains one account's pending postings
// in batches. Because ledger.apply is unique while running, an urgent entry
// that commits while this job runs gets no job of its own; so the job keeps
// draining until a batch comes back short, completes itself in the same
// transaction as that last batch, and then looks once more and re-enqueues
// if anything arrived. A posting whose transaction commits after that last
// look waits for the next sweep (at most a minute).
type ApplyWorker struct {
	river.WorkerDefaults[ledger.ApplyArgs]
	Store *db.Store
	// BatchSize defaults to ledger.ApplyBatchSize.
	BatchSize int
	// Budget bounds one job's run so a permanently hot account hands over
	// to a fresh job rather than holding a worker forever.
	Budget time.Duration
}

// Work implements river.Worker.
func (w *ApplyWorker) Work(ctx context.Context, job *river.Job[ledger.ApplyArgs]) error {
	batch := cmp.Or(w.BatchSize, ledger.ApplyBatchSize)
	deadline := time.Now().Add(cmp.Or(w.Budget, 20*time.Second))
	for {
		done := false
		err := w.Store.InTx(ctx, func(tx *db.Tx) error {
			res, err := ledger.ApplyBatchTx(ctx, tx, job.Args.AccountID, batch)
			if err != nil {
				return err
			}
			if res.Applied < batch || time.Now().After(deadline) {
				done = true
				_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx.Tx, job)
				return err
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("apply postings of account %d: %w", job.Args.AccountID, err)
		}
		if done {
			break
		}
	}
	// This job is now completed, so a new unique job is allowed.
	more, err := w.Store.Queries().HasPendingPostings(ctx, job.Args.AccountID)
	if err != nil {
		return fmt.Errorf("re-check pending postings: %w", err)
	}
	if more {
		client := river.ClientFromContext[pgx.Tx](ctx)
		if _, err := client.Insert(ctx, ledger.ApplyArgs{AccountID: job.Args.AccountID}, nil); err != nil {
			return fmt.Errorf("re-enqueue apply: %w", err)
		}
	}
	return nil
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
