package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/ledger"
)

// COBChunkWorker works cob.chunk: close a business date for one range of
// loans (cob.Service.RunChunk, one transaction). Run twice, it does
// nothing the second time.
type COBChunkWorker struct {
	river.WorkerDefaults[cob.ChunkArgs]
	COB *cob.Service
}

// Work implements river.Worker.
func (w *COBChunkWorker) Work(ctx context.Context, job *river.Job[cob.ChunkArgs]) error {
	_, err := w.COB.RunChunk(ctx, job.Args)
	return cancelIfInvalid(err)
}

// COBTrialBalanceWorker works cob.trial_balance: check a closed run's
// ledger and sub-ledger and store the result on the run.
type COBTrialBalanceWorker struct {
	river.WorkerDefaults[cob.TrialBalanceArgs]
	COB    *cob.Service
	Ledger *ledger.Service
}

// Work implements river.Worker.
func (w *COBTrialBalanceWorker) Work(ctx context.Context, job *river.Job[cob.TrialBalanceArgs]) error {
	_, err := w.COB.CheckTrialBalance(ctx, job.Args.Date, w.Ledger)
	return cancelIfInvalid(err)
}

// COBRetryFailuresWorker works cob.retry_failures: re-run a run's failed
// loans one by one.
type COBRetryFailuresWorker struct {
	river.WorkerDefaults[cob.RetryFailuresArgs]
	COB *cob.Service
}

// Work implements river.Worker.
func (w *COBRetryFailuresWorker) Work(ctx context.Context, job *river.Job[cob.RetryFailuresArgs]) error {
	_, err := w.COB.RetryFailedLoans(ctx, job.Args.Date)
	return cancelIfInvalid(err)
}

// COBScheduleWorker works the periodic cob.schedule (leader only, on
// RIVERBANK_COB_SCHEDULE in the business time zone): close every open date
// up to yesterday, in order.
type COBScheduleWorker struct {
	river.WorkerDefaults[cob.ScheduleArgs]
	COB *cob.Service
}

// Work implements river.Worker.
func (w *COBScheduleWorker) Work(ctx context.Context, _ *river.Job[cob.ScheduleArgs]) error {
	_, err := w.COB.Schedule(ctx)
	return err
}

// CaseMergeWorker works case.merge: attach a borrower's unattached
// collection items to its one open case.
type CaseMergeWorker struct {
	river.WorkerDefaults[collection.MergeArgs]
	Collection *collection.Service
}

// Work implements river.Worker.
func (w *CaseMergeWorker) Work(ctx context.Context, job *river.Job[collection.MergeArgs]) error {
	_, err := w.Collection.Merge(ctx, job.Args.BorrowerID)
	return err
}

// CaseSweepWorker works the periodic case.sweep: re-request merges for
// items left unattached.
type CaseSweepWorker struct {
	river.WorkerDefaults[collection.SweepArgs]
	Collection *collection.Service
}

// Work implements river.Worker.
func (w *CaseSweepWorker) Work(ctx context.Context, _ *river.Job[collection.SweepArgs]) error {
	_, err := w.Collection.Sweep(ctx, 10_000)
	return err
}

// Timeout implements river.Worker: a sweep may request many merges.
func (w *CaseSweepWorker) Timeout(*river.Job[collection.SweepArgs]) time.Duration {
	return 5 * time.Minute
}

// cancelIfInvalid cancels a job whose args can never work (a malformed
// date, a run that does not exist); other errors are retried.
func cancelIfInvalid(err error) error {
	switch riverbank.ErrorCode(err) {
	case riverbank.EINVALID, riverbank.ENOTFOUND:
		return river.JobCancel(err)
	}
	return err
}
