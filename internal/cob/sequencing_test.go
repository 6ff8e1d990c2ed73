package cob_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/cob"
	"riverbank/internal/db"
	"riverbank/internal/testkit"
)

func TestRunsAreSequential(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.creditLine(t, "b1", "CNY")
	l := b.loan(t, dealerLoan("L1", p10k, rate, "2024-03-01", "2024-12-31"))

	requireNotOpen := func(t *testing.T, err error, first string) {
		t.Helper()
		de := testkit.RequireCode(t, err, riverbank.EDATENOTOPEN)
		require.Equal(t, first, de.Details["first_open_date"])
	}

	t.Run("before any run the first open date is the earliest loan start", func(t *testing.T) {
		first, ok, err := cob.FirstOpenDate(b.Ctx, b.Store.Queries())
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, day("2024-03-01"), first)
		_, _, err = b.Services.COB.Start(b.Ctx, day("2024-03-02"))
		requireNotOpen(t, err, "2024-03-01")
	})
	t.Run("a date before the first loan is closed already", func(t *testing.T) {
		_, _, err := b.Services.COB.Start(b.Ctx, day("2024-02-28"))
		requireNotOpen(t, err, "2024-03-01")
	})
	t.Run("today and later cannot close", func(t *testing.T) {
		today := b.Services.COB.Today()
		for _, d := range []time.Time{today, today.AddDate(0, 0, 1)} {
			_, _, err := b.Services.COB.Start(b.Ctx, d)
			testkit.RequireCode(t, err, riverbank.EINVALID)
		}
	})
	t.Run("a gap is date_not_open naming the first open date", func(t *testing.T) {
		b.closeDate(t, day("2024-03-01"))
		_, _, err := b.Services.COB.Start(b.Ctx, day("2024-03-03"))
		requireNotOpen(t, err, "2024-03-02")
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM cob_run"), "nothing written")
	})
	t.Run("a loan cannot start on or before the newest run date, even while it runs", func(t *testing.T) {
		in := dealerLoan("L2", p10k, rate, "2024-03-01", "2024-12-31")
		_, _, err := b.Services.Lending.CreateLoan(b.Ctx, in)
		requireNotOpen(t, err, "2024-03-02")

		b.start(t, day("2024-03-02")) // RUNNING, not closed
		in.StartDate = "2024-03-02"
		_, _, err = b.Services.Lending.CreateLoan(b.Ctx, in)
		requireNotOpen(t, err, "2024-03-03")
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM loan"), "nothing written")

		b.runChunks(t, day("2024-03-02"))
		in.StartDate = "2024-03-03"
		b.loan(t, in)
	})
	t.Run("a repayment cannot be value-dated on or before the loan's last closed date", func(t *testing.T) {
		for _, vd := range []string{"2024-03-01", "2024-03-02"} {
			_, _, err := b.Services.Lending.Repay(b.Ctx, lendingRepayment(l.ID, "r-"+vd, "DEALER", 1, vd))
			requireNotOpen(t, err, "2024-03-03")
		}
		require.Zero(t, b.Count(t, "SELECT count(*) FROM repayment"), "nothing written")
		b.repay(t, l.ID, "r-ok", "DEALER", 1, "2024-03-03")
	})
}

// TestCatchUp: the scheduler, run three days after the last closed date,
// closes the three missed dates in order through the real workers (each
// completed run starts the next in its own transaction), and then has
// nothing left to do.
func TestCatchUp(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ChunkSize: 2})
	b.creditLine(t, "b1", "CNY")
	var ids []int64
	for _, no := range []string{"L1", "L2", "L3"} {
		ids = append(ids, b.loan(t, dealerLoan(no, p10k, rate, "2024-09-01", "2024-12-31")).ID)
	}
	b.closeDates(t, "2024-09-01", "2024-09-02", nil)
	testkit.Start(t, b.Client(t, nil))

	// Noon on September 6: yesterday is the 5th, so the 3rd, 4th and 5th
	// are missed.
	now := time.Date(2024, 9, 6, 12, 0, 0, 0, time.UTC)
	sched := cob.NewService(b.Store, cob.Options{Now: func() time.Time { return now }})
	started, err := sched.Schedule(b.Ctx)
	require.NoError(t, err)
	require.NotNil(t, started)
	require.Equal(t, day("2024-09-03"), *started)

	last := b.waitCompleted(t, day("2024-09-05"))
	var prev *cob.Run
	for _, d := range []string{"2024-09-03", "2024-09-04", "2024-09-05"} {
		run := b.getRun(t, day(d))
		require.Equal(t, db.CobRunStatusCOMPLETED, run.Status, d)
		require.EqualValues(t, 3, run.LoansDone, d)
		require.NotNil(t, run.CatchUpThrough, d)
		require.Equal(t, day("2024-09-05"), *run.CatchUpThrough, d)
		if prev != nil {
			require.False(t, run.StartedAt.Before(*prev.CompletedAt), "%s started after %s completed", d, fmtDay(prev.BusinessDate))
		}
		prev = run
	}
	_, err = b.Services.COB.Get(b.Ctx, day("2024-09-06"))
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)
	for _, id := range ids {
		l := stateOf(b.getLoan(t, id))
		require.Equal(t, "2024-09-05", l.LastClosedDate)
		require.EqualValues(t, 5*10_000, l.InterestDealer)
	}
	testkit.WaitFor(t, 20*time.Second, "trial balance of the last date", func() bool { return len(b.getRun(t, last.BusinessDate).TrialBalance) > 0 })
	require.True(t, b.trialBalance(t, last.BusinessDate).Balanced)

	started, err = sched.Schedule(b.Ctx)
	require.NoError(t, err)
	require.Nil(t, started, "nothing left to close")
	require.EqualValues(t, 5, b.Count(t, "SELECT count(*) FROM cob_run"))
}
