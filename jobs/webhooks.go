package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"riverbank/internal/db"
	"riverbank/internal/webhook"
)

// WebhookDeliverWorker works webhook.deliver: one subscription's events
// from its cursor, in feed order, one delivery in flight (the job is
// unique per subscription). A failed attempt is the job's error, so River
// retries it with the service's backoff and, after
// RIVERBANK_WEBHOOK_MAX_ATTEMPTS, discards it: the dead letter, retried
// from /v1/dead-letters at the same event.
type WebhookDeliverWorker struct {
	river.WorkerDefaults[webhook.DeliverArgs]
	Webhooks *webhook.Service
}

// Work implements river.Worker.
func (w *WebhookDeliverWorker) Work(ctx context.Context, job *river.Job[webhook.DeliverArgs]) error {
	return w.Webhooks.Deliver(ctx, webhook.Run{
		SubscriptionID: job.Args.SubscriptionID, JobID: job.ID, Attempt: job.Attempt, MaxAttempts: job.MaxAttempts,
		Complete: func(ctx context.Context, tx *db.Tx) error {
			_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx.Tx, job)
			return err
		},
	})
}

// NextRetry implements river.Worker: the service's doubling backoff
// (capped) instead of River's attempt⁴ seconds.
func (w *WebhookDeliverWorker) NextRetry(job *river.Job[webhook.DeliverArgs]) time.Time {
	return time.Now().Add(w.Webhooks.RetryDelay(job.Attempt))
}

// WebhookDispatchWorker works the periodic webhook.dispatch: enqueue the
// delivery job of every subscription with events to deliver.
type WebhookDispatchWorker struct {
	river.WorkerDefaults[webhook.DispatchArgs]
	Webhooks *webhook.Service
}

// Work implements river.Worker. The job has three attempts a second apart
// (a crash's rescue spends one); when the database is unavailable (an
// outage, a restart) it is snoozed instead — a snooze spends no attempt —
// and runs again a second later: an outage of any length leaves no
// discarded job behind (seen in TestDatabaseOutage).
func (w *WebhookDispatchWorker) Work(ctx context.Context, _ *river.Job[webhook.DispatchArgs]) error {
	_, err := w.Webhooks.Dispatch(ctx)
	if err != nil && ctx.Err() == nil && db.IsUnavailable(err) {
		return river.JobSnooze(time.Second)
	}
	return err
}

// NextRetry implements river.Worker: a second, like the period, instead of
// River's attempt⁴ seconds (a retryable dispatch holds off the periodic
// one, which is unique while live).
func (w *WebhookDispatchWorker) NextRetry(*river.Job[webhook.DispatchArgs]) time.Time {
	return time.Now().Add(time.Second)
}

// WebhookPruneWorker works the periodic webhook.prune: drop delivered rows
// older than the event retention, in small batches.
type WebhookPruneWorker struct {
	river.WorkerDefaults[webhook.PruneArgs]
	Webhooks *webhook.Service
}

// Work implements river.Worker.
func (w *WebhookPruneWorker) Work(ctx context.Context, _ *river.Job[webhook.PruneArgs]) error {
	_, err := w.Webhooks.Prune(ctx)
	return err
}

// Timeout implements river.Worker: each batch is its own transaction, so
// a long first prune loses nothing to a timeout.
func (w *WebhookPruneWorker) Timeout(*river.Job[webhook.PruneArgs]) time.Duration {
	return 10 * time.Minute
}
