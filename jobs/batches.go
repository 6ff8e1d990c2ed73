package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"riverbank/internal/batch"
)

// BatchChunkWorker works batch.chunk: do the pending items of one chunk of
// a batch (batch.Service.RunChunk: each item's effect, its outcome and the
// batch's counters in one transaction). An error — items left PENDING by
// an internal error, or held by another runner — makes River run the
// chunk again; the last attempt records what still fails internally as
// FAILED, so every batch completes.
type BatchChunkWorker struct {
	river.WorkerDefaults[batch.ChunkArgs]
	Batches *batch.Service
}

// Work implements river.Worker.
func (w *BatchChunkWorker) Work(ctx context.Context, job *river.Job[batch.ChunkArgs]) error {
	_, err := w.Batches.RunChunk(ctx, job.Args, job.Attempt >= job.MaxAttempts)
	return err
}

// NextRetry implements river.Worker: a chunk is retried after 1 s, 2 s,
// 4 s, ... capped at a minute, so a batch held up by a passing failure
// (a restart, a deadlock) finishes in seconds, and all ten attempts span
// about five minutes instead of River's default of days.
func (w *BatchChunkWorker) NextRetry(job *river.Job[batch.ChunkArgs]) time.Time {
	d := time.Second << min(max(job.Attempt-1, 0), 6)
	return time.Now().Add(min(d, time.Minute))
}
