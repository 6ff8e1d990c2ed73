package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"riverbank/internal/events"
)

// EventsPruneWorker works the periodic events.prune: drop events older
// than RIVERBANK_EVENT_RETENTION in small batches (short transactions, no
// long locks).
type EventsPruneWorker struct {
	river.WorkerDefaults[events.PruneArgs]
	Events *events.Feed
}

// Work implements river.Worker.
func (w *EventsPruneWorker) Work(ctx context.Context, _ *river.Job[events.PruneArgs]) error {
	_, err := w.Events.Prune(ctx)
	return err
}

// Timeout implements river.Worker: a first prune after a long outage may
// have many batches; each is its own transaction, so a timeout loses
// nothing.
func (w *EventsPruneWorker) Timeout(*river.Job[events.PruneArgs]) time.Duration {
	return 10 * time.Minute
}
