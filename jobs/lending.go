package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/lending"
)

// CreditRestoreWorker works credit.restore: it gives a repayment's
// principal back to the borrower's credit line, exactly once per
// repayment (lending.Service.Restore). A frozen line fails the attempt;
// River retries with the service's backoff and, after
// RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS, discards the job — the dead
// letter, listed by GET /v1/dead-letters and retried from there.
type CreditRestoreWorker struct {
	river.WorkerDefaults[lending.RestoreArgs]
	Lending *lending.Service
}

// Work implements river.Worker.
func (w *CreditRestoreWorker) Work(ctx context.Context, job *river.Job[lending.RestoreArgs]) error {
	_, err := w.Lending.Restore(ctx, job.Args.RepaymentID)
	if riverbank.ErrorCode(err) == riverbank.ENOTFOUND {
		// A repayment that does not exist cannot appear by retrying.
		return river.JobCancel(err)
	}
	return err
}

// NextRetry implements river.Worker: the service's doubling backoff
// instead of River's attempt⁴ seconds, so a line unfrozen within minutes
// is restored within minutes.
func (w *CreditRestoreWorker) NextRetry(job *river.Job[lending.RestoreArgs]) time.Time {
	return time.Now().Add(w.Lending.RestoreRetryDelay(job.Attempt))
}
