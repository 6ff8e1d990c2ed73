package testkit

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
)

// Test-only job kinds. Their workers are registered only by WorkTestJobs,
// never by the process, so real dead letters (discarded by River itself
// after a failed attempt) can be made without touching a domain.
const (
	KindFail      = "test.fail"
	KindFailOther = "test.fail_other"
	KindOK        = "test.ok"
)

// FailArgs are a test.fail job: its worker always returns an error, so with
// MaxAttempts 1 River discards it on its first attempt.
type FailArgs struct {
	N int `json:"n"`
}

// Kind implements river.JobArgs.
func (FailArgs) Kind() string { return KindFail }

// FailOtherArgs are like FailArgs under a second kind, for kind filters.
type FailOtherArgs struct {
	N int `json:"n"`
}

// Kind implements river.JobArgs.
func (FailOtherArgs) Kind() string { return KindFailOther }

// OKArgs are a test.ok job: its worker succeeds, leaving it completed.
type OKArgs struct {
	N int `json:"n"`
}

// Kind implements river.JobArgs.
func (OKArgs) Kind() string { return KindOK }

// TestJobError is the error every failing test job records.
const TestJobError = "test job failed on purpose"

type testWorker[T river.JobArgs] struct {
	river.WorkerDefaults[T]
	fail bool
}

func (w *testWorker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	if w.fail {
		return errors.New(TestJobError)
	}
	return nil
}

// WorkTestJobs inserts one committed job per args (MaxAttempts 1, default
// queue) on a DB bundle and works them with RunTestWorkers: test.fail and
// test.fail_other end discarded (real dead letters), test.ok completed. It
// returns the jobs as River left them, in args order.
func (b *Bundle) WorkTestJobs(t testing.TB, args ...river.JobArgs) []*rivertype.JobRow {
	t.Helper()
	require.NotNil(t, b.Pool, "WorkTestJobs needs a DB bundle")
	ids := make([]int64, len(args))
	for i, a := range args {
		res, err := b.Inserter.Insert(context.Background(), a, &river.InsertOpts{MaxAttempts: 1})
		require.NoError(t, err)
		ids[i] = res.Job.ID
	}
	return b.RunTestWorkers(t, ids...)
}

// RunTestWorkers runs a River client with only the test workers on a DB
// bundle until every job in ids is finalized, then stops it, so the jobs
// stay as River left them (nothing re-runs a job a test later retries). It
// returns the jobs as River left them, in ids order.
func (b *Bundle) RunTestWorkers(t testing.TB, ids ...int64) []*rivertype.JobRow {
	t.Helper()
	require.NotNil(t, b.Pool, "RunTestWorkers needs a DB bundle")
	ctx := context.Background()
	workers := river.NewWorkers()
	river.AddWorker(workers, &testWorker[FailArgs]{fail: true})
	river.AddWorker(workers, &testWorker[FailOtherArgs]{fail: true})
	river.AddWorker(workers, &testWorker[OKArgs]{})
	client, err := river.NewClient(riverpgxv5.New(b.Pool), &river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, client.Start(ctx))
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		stopCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		require.NoError(t, client.Stop(stopCtx))
	}
	t.Cleanup(stop)
	rows := make([]*rivertype.JobRow, len(ids))
	WaitFor(t, 15*time.Second, "test jobs to be finalized", func() bool {
		for i, id := range ids {
			row, err := client.JobGet(ctx, id)
			require.NoError(t, err)
			if row.FinalizedAt == nil {
				return false
			}
			rows[i] = row
		}
		return true
	})
	stop()
	return rows
}
