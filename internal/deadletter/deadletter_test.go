package deadletter_test

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/deadletter"
	"riverbank/internal/metrics"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// testBundle is a database of the test's own (dead letters must be
// committed and discarded by a running River client) with the service on
// it.
type testBundle struct {
	ctx context.Context
	kit *testkit.Bundle
	svc *deadletter.Service
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	kit := testkit.DB(t, testkit.DBOptions{MaxConns: 12})
	return &testBundle{ctx: kit.Ctx, kit: kit, svc: kit.Services.DeadLetters}
}

// job reads a job as River has it now.
func (b *testBundle) job(t *testing.T, id int64) *rivertype.JobRow {
	t.Helper()
	row, err := b.kit.Inserter.JobGet(b.ctx, id)
	require.NoError(t, err)
	return row
}

// newestDiscardedFirst is the order the list promises, computed from River's
// own rows.
func newestDiscardedFirst(rows []*rivertype.JobRow) []int64 {
	var discarded []*rivertype.JobRow
	for _, r := range rows {
		if r.State == rivertype.JobStateDiscarded {
			discarded = append(discarded, r)
		}
	}
	sort.Slice(discarded, func(i, j int) bool {
		a, b := discarded[i], discarded[j]
		if !a.FinalizedAt.Equal(*b.FinalizedAt) {
			return a.FinalizedAt.After(*b.FinalizedAt)
		}
		return a.ID > b.ID
	})
	ids := make([]int64, len(discarded))
	for i, r := range discarded {
		ids[i] = r.ID
	}
	return ids
}

func ids(jobs []*deadletter.Job) []int64 {
	out := make([]int64, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func TestListNewestDiscardedFirstInPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailOtherArgs{N: 2}, testkit.OKArgs{N: 3},
		testkit.FailArgs{N: 4}, testkit.FailArgs{N: 5})
	want := newestDiscardedFirst(rows)
	require.Len(t, want, 4, "the completed job is not a dead letter")

	var got []int64
	var after *deadletter.Cursor
	for page := 0; ; page++ {
		require.Less(t, page, 10, "pagination does not end")
		jobs, err := b.svc.List(b.ctx, deadletter.ListParams{After: after, Limit: 2})
		require.NoError(t, err)
		require.LessOrEqual(t, len(jobs), 2)
		got = append(got, ids(jobs)...)
		if len(jobs) < 2 {
			break
		}
		last := jobs[len(jobs)-1]
		after = &deadletter.Cursor{DiscardedAt: *last.DiscardedAt, ID: last.ID}
	}
	require.Equal(t, want, got, "every dead letter once, newest discarded first")

	// A dead letter carries what an operator needs to judge it.
	all, err := b.svc.List(b.ctx, deadletter.ListParams{})
	require.NoError(t, err)
	require.Equal(t, want, ids(all))
	byID := map[int64]*rivertype.JobRow{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	for _, j := range all {
		r := byID[j.ID]
		require.Equal(t, "discarded", j.State)
		require.Equal(t, r.Kind, j.Kind)
		require.Equal(t, river.QueueDefault, j.Queue)
		require.JSONEq(t, string(r.EncodedArgs), string(j.Args))
		require.Equal(t, 1, j.Attempt)
		require.Equal(t, 1, j.MaxAttempts)
		require.Len(t, j.Errors, 1)
		require.Equal(t, 1, j.Errors[0].Attempt)
		require.Equal(t, testkit.TestJobError, j.Errors[0].Error)
		require.False(t, j.Errors[0].At.IsZero())
		require.NotNil(t, j.DiscardedAt)
		require.True(t, r.FinalizedAt.Equal(*j.DiscardedAt))
		require.True(t, r.CreatedAt.Equal(j.CreatedAt))
	}
}

func TestListKindFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailOtherArgs{N: 2}, testkit.FailOtherArgs{N: 3})

	other, err := b.svc.List(b.ctx, deadletter.ListParams{Kind: testkit.KindFailOther})
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{rows[1].ID, rows[2].ID}, ids(other))
	for _, j := range other {
		require.Equal(t, testkit.KindFailOther, j.Kind)
	}

	// Paging within a kind.
	first, err := b.svc.List(b.ctx, deadletter.ListParams{Kind: testkit.KindFailOther, Limit: 1})
	require.NoError(t, err)
	require.Len(t, first, 1)
	second, err := b.svc.List(b.ctx, deadletter.ListParams{Kind: testkit.KindFailOther, Limit: 1,
		After: &deadletter.Cursor{DiscardedAt: *first[0].DiscardedAt, ID: first[0].ID}})
	require.NoError(t, err)
	require.Len(t, second, 1)
	require.ElementsMatch(t, ids(other), []int64{first[0].ID, second[0].ID})

	none, err := b.svc.List(b.ctx, deadletter.ListParams{Kind: "credit.restore"})
	require.NoError(t, err)
	require.Empty(t, none)
}

func TestListRejectsBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1})
	jobsBefore := b.kit.Count(t, `SELECT count(*) FROM river_job`)

	for name, p := range map[string]deadletter.ListParams{
		"kind with upper case":    {Kind: "Test.Fail"},
		"kind with a space":       {Kind: "test fail"},
		"kind with SQL":           {Kind: "x' OR '1'='1"},
		"kind longer than 64":     {Kind: strings.Repeat("a", 65)},
		"cursor without a job":    {After: &deadletter.Cursor{DiscardedAt: time.Now()}},
		"negative limit":          {Limit: -1},
		"cursor with negative id": {After: &deadletter.Cursor{DiscardedAt: time.Now(), ID: -5}},
	} {
		_, err := b.svc.List(b.ctx, p)
		require.Equal(t, riverbank.EINVALID, riverbank.ErrorCode(err), "%s: %v", name, err)
	}
	require.Equal(t, jobsBefore, b.kit.Count(t, `SELECT count(*) FROM river_job`))
	require.Equal(t, int64(1), b.kit.Count(t, `SELECT count(*) FROM river_job WHERE state = 'discarded'`))
}

func TestGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 7}, testkit.OKArgs{N: 8})

	j, err := b.svc.Get(b.ctx, rows[0].ID)
	require.NoError(t, err)
	require.Equal(t, rows[0].ID, j.ID)
	require.Equal(t, "discarded", j.State)
	require.JSONEq(t, `{"n":7}`, string(j.Args))

	_, err = b.svc.Get(b.ctx, rows[1].ID)
	de := testkit.RequireCode(t, err, riverbank.ENOTFOUND)
	require.Equal(t, "completed", de.Details["state"], "a job that is not discarded is not a dead letter")

	_, err = b.svc.Get(b.ctx, rows[1].ID+1000)
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)
}

func TestRetryMakesTheJobAvailableThroughRiver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailArgs{N: 2})
	id := rows[0].ID

	j, err := b.svc.Retry(b.ctx, id)
	require.NoError(t, err)
	require.Equal(t, id, j.ID)
	require.Equal(t, "available", j.State)
	require.Nil(t, j.DiscardedAt)
	require.Equal(t, 2, j.MaxAttempts, "River raises an exhausted job's max_attempts by one")
	require.Len(t, j.Errors, 1, "the history stays")

	row := b.job(t, id)
	require.Equal(t, rivertype.JobStateAvailable, row.State)
	require.Nil(t, row.FinalizedAt)
	require.Equal(t, 2, row.MaxAttempts)

	list, err := b.svc.List(b.ctx, deadletter.ListParams{})
	require.NoError(t, err)
	require.Equal(t, []int64{rows[1].ID}, ids(list), "the retried job leaves the list")
	_, err = b.svc.Get(b.ctx, id)
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)

	// Retrying it again is refused: it is no longer a dead letter.
	_, err = b.svc.Retry(b.ctx, id)
	de := testkit.RequireCode(t, err, riverbank.ENOTDISCARDED)
	require.Equal(t, "available", de.Details["state"])
	require.Equal(t, 2, b.job(t, id).MaxAttempts)

	// The retry re-queued it for real: River works it again, and as its
	// worker still fails, discards it again with the second attempt's error.
	again := b.kit.RunTestWorkers(t, id)[0]
	require.Equal(t, rivertype.JobStateDiscarded, again.State)
	require.Equal(t, 2, again.Attempt)
	require.Len(t, again.Errors, 2)
	list, err = b.svc.List(b.ctx, deadletter.ListParams{})
	require.NoError(t, err)
	require.Equal(t, []int64{id, rows[1].ID}, ids(list), "newest discarded first")
}

func TestRetryUnknownOrNotDiscardedWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.OKArgs{N: 1})
	completed := rows[0]
	available, err := b.kit.Inserter.Insert(b.ctx, testkit.FailArgs{N: 2}, &river.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	scheduled, err := b.kit.Inserter.Insert(b.ctx, testkit.FailArgs{N: 3}, &river.InsertOpts{MaxAttempts: 1, ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	jobsBefore := b.kit.Count(t, `SELECT count(*) FROM river_job`)

	_, err = b.svc.Retry(b.ctx, completed.ID+1000)
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)

	for _, before := range []*rivertype.JobRow{completed, available.Job, scheduled.Job} {
		_, err := b.svc.Retry(b.ctx, before.ID)
		de := testkit.RequireCode(t, err, riverbank.ENOTDISCARDED)
		require.Equal(t, string(before.State), de.Details["state"])
		after := b.job(t, before.ID)
		require.Equal(t, before.State, after.State, "River's retry would have made it available now")
		require.True(t, before.ScheduledAt.Equal(after.ScheduledAt))
		require.Equal(t, before.MaxAttempts, after.MaxAttempts)
		require.Equal(t, before.FinalizedAt == nil, after.FinalizedAt == nil)
	}
	require.Equal(t, jobsBefore, b.kit.Count(t, `SELECT count(*) FROM river_job`))
}

// TestConcurrentRetriesOfOneJob: River's JobRetry alone would let every
// concurrent caller "succeed" (each re-makes the job available, the later
// ones as no-ops or, once a worker has discarded it again, as a second
// re-queue). The state check on the locked row makes exactly one win.
func TestConcurrentRetriesOfOneJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1})
	id := rows[0].ID

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = b.svc.Retry(b.ctx, id)
		}()
	}
	close(start)
	wg.Wait()

	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		require.Equal(t, riverbank.ENOTDISCARDED, riverbank.ErrorCode(err), "error: %v", err)
	}
	require.Equal(t, 1, ok, "exactly one retry wins")
	row := b.job(t, id)
	require.Equal(t, rivertype.JobStateAvailable, row.State)
	require.Equal(t, 2, row.MaxAttempts, "re-queued once")
}

func TestDeadLettersMetricCountsByKind(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailArgs{N: 2}, testkit.FailOtherArgs{N: 3}, testkit.OKArgs{N: 4})
	m := metrics.New(b.kit.Store.Queries(), slog.New(slog.DiscardHandler))

	gauge := func() map[string]float64 {
		t.Helper()
		families, err := m.Registry.Gather()
		require.NoError(t, err)
		out := map[string]float64{}
		for _, f := range families {
			switch f.GetName() {
			case "riverbank_metrics_db_scrape_errors":
				require.Zero(t, f.GetMetric()[0].GetGauge().GetValue())
			case "riverbank_dead_letters":
				for _, s := range f.GetMetric() {
					require.Len(t, s.GetLabel(), 1)
					require.Equal(t, "kind", s.GetLabel()[0].GetName())
					out[s.GetLabel()[0].GetValue()] = s.GetGauge().GetValue()
				}
			}
		}
		return out
	}
	require.Equal(t, map[string]float64{testkit.KindFail: 2, testkit.KindFailOther: 1}, gauge())

	_, err := b.svc.Retry(b.ctx, rows[2].ID)
	require.NoError(t, err)
	require.Equal(t, map[string]float64{testkit.KindFail: 2}, gauge(), "a kind with no dead letter has no series")
}
