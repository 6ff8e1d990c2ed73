package cob_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/cob"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// onceBundle has five loans in two chunks (chunk size 3) with one date
// closed, so the next date accrues on every loan: interest, and on the
// overdue one penalty.
type onceBundle struct {
	*testBundle
	ids  []int64
	date time.Time
}

func setupOnce(t *testing.T) *onceBundle {
	t.Helper()
	b := setup(t, setupOpts{ChunkSize: 3})
	b.creditLine(t, "b1", "CNY")
	b.creditLine(t, "b2", "USD")
	var ids []int64
	for i, in := range []lending.LoanInput{
		dealerLoan("L1", p10k, rate, "2024-06-01", "2024-12-31"),
		withMode(dealerLoan("L2", p10k, rate, "2024-06-01", "2024-12-31"), lending.ModeSplit, 3333),
		withMode(dealerLoan("L3", p10k, rate, "2024-06-01", "2024-12-31"), lending.ModeManufacturer, 0),
		dealerLoan("L4", p10k, rate, "2024-06-01", "2024-06-02"),
		dealerLoan("L5", p10k, rate, "2024-06-01", "2024-12-31"),
	} {
		if i%2 == 1 {
			in.BorrowerID, in.Currency = "b2", "USD"
		}
		in.PenaltyRateBps = 500
		ids = append(ids, b.loan(t, in).ID)
	}
	b.closeDates(t, "2024-06-01", "2024-06-02", nil)
	return &onceBundle{testBundle: b, ids: ids, date: day("2024-06-03")}
}

func (b *onceBundle) states(t testing.TB) []loanState {
	t.Helper()
	out := make([]loanState, len(b.ids))
	for i, id := range b.ids {
		out[i] = stateOf(b.getLoan(t, id))
	}
	return out
}

// requireAccruedOnce checks that every loan closed b.date exactly once:
// one day's accrual on top of what it had before, and the ledger and the
// run agree with the loans.
func (b *onceBundle) requireAccruedOnce(t testing.TB, before []loanState) {
	t.Helper()
	after := b.states(t)
	for i := range b.ids {
		require.Equal(t, fmtDay(b.date), after[i].LastClosedDate)
		require.Equal(t, before[i].InterestDealer+before[i].InterestManu+10_000, after[i].InterestDealer+after[i].InterestManu, "loan %d: one day of interest", i)
	}
	require.Equal(t, before[3].Penalty+5000, after[3].Penalty, "the overdue loan: one day of penalty")
	run := b.getRun(t, b.date)
	require.Equal(t, db.CobRunStatusCOMPLETED, run.Status)
	require.EqualValues(t, 5, run.LoansDone)
	require.Zero(t, run.LoansFailed)
	require.EqualValues(t, 2, run.ChunksDone)
	require.Equal(t, []cob.Totals{
		{Currency: "CNY", InterestDealerMinor: 20_000, InterestManufacturerMinor: 10_000},
		{Currency: "USD", InterestDealerMinor: 16_667, InterestManufacturerMinor: 3333, PenaltyMinor: 5000},
	}, run.Totals)
	require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM cob_chunk WHERE business_date = $1", b.date))
	tb, err := b.Services.COB.CheckTrialBalance(b.Ctx, fmtDay(b.date), b.Services.Ledger)
	require.NoError(t, err)
	require.True(t, tb.RunPostingsMatch)
	for _, l := range tb.Subledger {
		require.True(t, l.Equal, "%+v", l)
	}
	require.True(t, tb.Balanced, "%+v", tb)
}

func TestExactlyOnce(t *testing.T) {
	t.Parallel()

	t.Run("a chunk run twice accrues once and counts once", func(t *testing.T) {
		t.Parallel()
		b := setupOnce(t)
		before := b.states(t)
		b.start(t, b.date)
		chunks := b.chunks(t, b.date)
		require.Len(t, chunks, 2)

		res, err := b.Services.COB.RunChunk(b.Ctx, chunks[0])
		require.NoError(t, err)
		require.Equal(t, cob.ChunkResult{Loans: 3, Counted: true}, res)
		afterFirst := b.states(t)
		run := b.getRun(t, b.date)
		entries := b.entryCount(t, b.date)

		res, err = b.Services.COB.RunChunk(b.Ctx, chunks[0])
		require.NoError(t, err)
		require.Equal(t, cob.ChunkResult{}, res, "nothing closed, not counted again")
		require.Equal(t, afterFirst, b.states(t))
		again := b.getRun(t, b.date)
		require.Equal(t, run.CobRun.ChunksDone, again.ChunksDone)
		require.Equal(t, run.LoansDone, again.LoansDone)
		require.Equal(t, run.Totals, again.Totals)
		require.Equal(t, db.CobRunStatusRUNNING, again.Status)
		require.Equal(t, entries, b.entryCount(t, b.date))
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM cob_chunk WHERE business_date = $1", b.date))

		for range 2 {
			_, err = b.Services.COB.RunChunk(b.Ctx, chunks[1])
			require.NoError(t, err)
		}
		b.requireAccruedOnce(t, before)
		// The completing chunk enqueued one trial balance, the repeat none.
		require.Len(t, b.jobs(t, cob.KindTrialBalance, b.date), 1)
	})

	t.Run("a run started again changes nothing", func(t *testing.T) {
		t.Parallel()
		b := setupOnce(t)
		b.start(t, b.date)
		again, created, err := b.Services.COB.Start(b.Ctx, b.date)
		require.NoError(t, err)
		require.False(t, created, "while running")
		require.Equal(t, db.CobRunStatusRUNNING, again.Status)
		require.Len(t, b.chunks(t, b.date), 2, "no second set of chunk jobs")

		before := b.states(t)
		b.runChunks(t, b.date)
		b.requireAccruedOnce(t, before)
		closed := b.states(t)
		run := b.getRun(t, b.date)

		again, created, err = b.Services.COB.Start(b.Ctx, b.date)
		require.NoError(t, err)
		require.False(t, created, "once closed")
		require.Equal(t, db.CobRunStatusCOMPLETED, again.Status)
		require.Equal(t, run.Totals, again.Totals)
		require.Equal(t, run.LoansDone, again.LoansDone)
		require.Len(t, b.chunks(t, b.date), 2)
		// Working the old chunk jobs again (a late duplicate) is harmless.
		b.runChunks(t, b.date)
		require.Equal(t, closed, b.states(t))
		b.requireAccruedOnce(t, before)
		// An earlier closed date, started again, is answered as it is.
		old, created, err := b.Services.COB.Start(b.Ctx, day("2024-06-01"))
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, db.CobRunStatusCOMPLETED, old.Status)
	})

	t.Run("a chunk cancelled mid-close leaves nothing and is accrued once when it runs again", func(t *testing.T) {
		t.Parallel()
		b := setupOnce(t)
		before := b.states(t)
		b.start(t, b.date)
		chunks := b.chunks(t, b.date)

		// Another transaction holds loan 2's row, so the chunk's close
		// waits inside cob_close_loans, holding the locks of loan 1 (and
		// every loan-accrual row it may have written): then the worker
		// is killed.
		blocker, err := b.Pool.Begin(b.Ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = blocker.Rollback(context.Background()) })
		_, err = blocker.Exec(b.Ctx, "SELECT 1 FROM loan WHERE id = $1 FOR UPDATE", b.ids[1])
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(b.Ctx)
		done := make(chan error, 1)
		go func() {
			_, err := b.Services.COB.RunChunk(ctx, chunks[0])
			done <- err
		}()
		testkit.WaitFor(t, 10*time.Second, "the chunk waits for the row lock", func() bool {
			return b.Count(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") > 0
		})
		cancel()
		select {
		case err := <-done:
			require.Error(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("RunChunk did not return after its context was cancelled")
		}
		require.NoError(t, blocker.Rollback(b.Ctx))

		require.Equal(t, before, b.states(t), "the killed chunk left nothing")
		run := b.getRun(t, b.date)
		require.Zero(t, run.ChunksDone)
		require.Zero(t, run.LoansDone)
		require.Empty(t, run.Totals)
		require.Zero(t, b.entryCount(t, b.date))

		b.runChunks(t, b.date)
		b.requireAccruedOnce(t, before)
	})

	t.Run("a close rolled back before commit is accrued once when the chunk runs", func(t *testing.T) {
		t.Parallel()
		b := setupOnce(t)
		before := b.states(t)
		run := b.start(t, b.date)
		// What a worker that dies before committing did: the set-based
		// close of the whole range, then no commit.
		err := pgx.BeginFunc(b.Ctx, b.Pool, func(tx pgx.Tx) error {
			rows, err := db.New(tx).CloseLoans(b.Ctx, db.CloseLoansParams{BusinessDate: b.date, IDLo: run.IDLo, IDHi: run.IDHi + 1, LateFeeDay: run.LateFeeDay})
			require.NoError(t, err)
			require.Len(t, rows, 2)
			return context.Canceled // roll back
		})
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, before, b.states(t))

		b.runChunks(t, b.date)
		b.requireAccruedOnce(t, before)
	})
}
