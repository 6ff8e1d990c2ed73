package cob_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/cob"
	"riverbank/internal/db"
	"riverbank/internal/testkit"
)

// TestFailedLoans makes one loan of three fail its close (its dealer
// interest outstanding set next to the bigint maximum, so adding a day's
// interest overflows: SQLSTATE 22003) and follows the run through
// FAILED, a retry that fails again, the fix, and the retry that closes it.
func TestFailedLoans(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.creditLine(t, "b1", "CNY")
	var ids []int64
	for _, no := range []string{"L1", "L2", "L3"} {
		ids = append(ids, b.loan(t, dealerLoan(no, p10k, rate, "2024-07-01", "2024-12-31")).ID)
	}
	b.closeDate(t, day("2024-07-01"))
	date := day("2024-07-02")
	bad := ids[1]
	setDealerInterest := func(v int64) {
		_, err := b.Pool.Exec(b.Ctx, "UPDATE loan SET interest_outstanding_dealer_minor = $2 WHERE id = $1", bad, v)
		require.NoError(t, err)
	}
	setDealerInterest(math.MaxInt64 - 1)

	b.start(t, date)
	chunks := b.chunks(t, date)
	require.Len(t, chunks, 1)
	res, err := b.Services.COB.RunChunk(b.Ctx, chunks[0])
	require.NoError(t, err, "a failing loan does not fail the chunk")
	require.Equal(t, cob.ChunkResult{Loans: 2, Failed: 1, Counted: true}, res)

	run := b.getRun(t, date)
	require.Equal(t, db.CobRunStatusFAILED, run.Status)
	require.EqualValues(t, 3, run.LoansTotal)
	require.EqualValues(t, 2, run.LoansDone)
	require.EqualValues(t, 1, run.LoansFailed)
	require.Len(t, run.FailedLoans, 1)
	require.Equal(t, bad, run.FailedLoans[0].LoanID)
	require.Contains(t, run.FailedLoans[0].Error, "SQLSTATE 22003")
	require.Equal(t, []cob.Totals{{Currency: "CNY", InterestDealerMinor: 20_000}}, run.Totals, "the others' accruals only")
	for _, id := range []int64{ids[0], ids[2]} {
		require.Equal(t, "2024-07-02", stateOf(b.getLoan(t, id)).LastClosedDate, "loan %d closed", id)
	}
	require.Equal(t, "2024-07-01", stateOf(b.getLoan(t, bad)).LastClosedDate, "the failed loan is not closed")
	require.Empty(t, b.jobs(t, cob.KindTrialBalance, date), "a FAILED run is not checked")

	t.Run("the date stays open: the next date is date_not_open", func(t *testing.T) {
		_, _, err := b.Services.COB.Start(b.Ctx, date.AddDate(0, 0, 1))
		de := testkit.RequireCode(t, err, riverbank.EDATENOTOPEN)
		require.Equal(t, "2024-07-02", de.Details["first_open_date"])
	})
	t.Run("the scheduler waits for an operator", func(t *testing.T) {
		svc := cob.NewService(b.Store, cob.Options{Now: func() time.Time { return time.Date(2024, 7, 10, 12, 0, 0, 0, time.UTC) }})
		started, err := svc.Schedule(b.Ctx)
		require.NoError(t, err)
		require.Nil(t, started)
		require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM cob_run"))
	})
	t.Run("the retry job does nothing unless the run was set RUNNING", func(t *testing.T) {
		remaining, err := b.Services.COB.RetryFailedLoans(b.Ctx, fmtDay(date))
		require.NoError(t, err)
		require.Zero(t, remaining)
		require.Equal(t, db.CobRunStatusFAILED, b.getRun(t, date).Status)
	})
	t.Run("a retry that fails again leaves the run FAILED with the new error", func(t *testing.T) {
		r, err := b.Services.COB.RetryFailures(b.Ctx, date)
		require.NoError(t, err)
		require.Equal(t, db.CobRunStatusRUNNING, r.Status)
		require.Len(t, b.jobs(t, cob.KindRetryFailures, date), 1)
		remaining, err := b.Services.COB.RetryFailedLoans(b.Ctx, fmtDay(date))
		require.NoError(t, err)
		require.Equal(t, 1, remaining)
		run := b.getRun(t, date)
		require.Equal(t, db.CobRunStatusFAILED, run.Status)
		require.EqualValues(t, 1, run.LoansFailed)
		require.Len(t, run.FailedLoans, 1)
		require.Contains(t, run.FailedLoans[0].Error, "SQLSTATE 22003")
	})
	t.Run("fixed and retried, the run completes and is checked", func(t *testing.T) {
		setDealerInterest(10_000) // what the loan owed after July 1
		r, err := b.Services.COB.RetryFailures(b.Ctx, date)
		require.NoError(t, err)
		require.Equal(t, db.CobRunStatusRUNNING, r.Status)
		remaining, err := b.Services.COB.RetryFailedLoans(b.Ctx, fmtDay(date))
		require.NoError(t, err)
		require.Zero(t, remaining)

		run := b.getRun(t, date)
		require.Equal(t, db.CobRunStatusCOMPLETED, run.Status)
		require.EqualValues(t, 3, run.LoansDone)
		require.Zero(t, run.LoansFailed)
		require.Empty(t, run.FailedLoans)
		require.Equal(t, []cob.Totals{{Currency: "CNY", InterestDealerMinor: 30_000}}, run.Totals)
		l := stateOf(b.getLoan(t, bad))
		require.Equal(t, "2024-07-02", l.LastClosedDate)
		require.EqualValues(t, 20_000, l.InterestDealer)
		require.Len(t, b.jobs(t, cob.KindTrialBalance, date), 1)

		// The retried loan's accruals are posted under its own key.
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1 || 'loan:%'", cob.EntryKeyPrefix(date)))
		tb, err := b.Services.COB.CheckTrialBalance(b.Ctx, fmtDay(date), b.Services.Ledger)
		require.NoError(t, err)
		require.True(t, tb.Balanced, "%+v", tb)
		require.True(t, tb.RunPostingsMatch)

		// Retrying the retry (a duplicate job) changes nothing.
		remaining, err = b.Services.COB.RetryFailedLoans(b.Ctx, fmtDay(date))
		require.NoError(t, err)
		require.Zero(t, remaining)
		require.Equal(t, run.Totals, b.getRun(t, date).Totals)
	})
	t.Run("a COMPLETED run's failures cannot be retried", func(t *testing.T) {
		_, err := b.Services.COB.RetryFailures(b.Ctx, date)
		de := testkit.RequireCode(t, err, riverbank.ECONFLICT)
		require.Equal(t, "COMPLETED", de.Details["status"])
		_, err = b.Services.COB.RetryFailures(b.Ctx, day("2024-08-01"))
		testkit.RequireCode(t, err, riverbank.ENOTFOUND)
	})
	t.Run("the next date opens", func(t *testing.T) {
		b.closeDate(t, date.AddDate(0, 0, 1))
		require.EqualValues(t, 30_000, b.getLoan(t, bad).InterestOutstandingDealerMinor)
	})
}

// TestFailedLoansWithWorkers runs the failure and its retry through the
// real River client: the chunk job records the failure, the
// retry-failures job closes the loan, and the trial balance is stored.
func TestFailedLoansWithWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	testkit.Start(t, b.Client(t, nil))
	b.creditLine(t, "b1", "CNY")
	ok := b.loan(t, dealerLoan("L1", p10k, rate, "2024-07-01", "2024-12-31")).ID
	bad := b.loan(t, dealerLoan("L2", p10k, rate, "2024-07-01", "2024-12-31")).ID
	_, err := b.Pool.Exec(b.Ctx, "UPDATE loan SET interest_outstanding_dealer_minor = $2 WHERE id = $1", bad, int64(math.MaxInt64))
	require.NoError(t, err)
	date := day("2024-07-01")
	b.start(t, date)
	testkit.WaitFor(t, 20*time.Second, "run failed", func() bool { return b.getRun(t, date).Status == db.CobRunStatusFAILED })
	require.Equal(t, "2024-07-01", stateOf(b.getLoan(t, ok)).LastClosedDate)

	_, err = b.Pool.Exec(b.Ctx, "UPDATE loan SET interest_outstanding_dealer_minor = 0 WHERE id = $1", bad)
	require.NoError(t, err)
	_, err = b.Services.COB.RetryFailures(b.Ctx, date)
	require.NoError(t, err)
	b.waitCompleted(t, date)
	testkit.WaitFor(t, 20*time.Second, "trial balance", func() bool { return len(b.getRun(t, date).TrialBalance) > 0 })
	tb := b.trialBalance(t, date)
	require.True(t, tb.Balanced, "%+v", tb)
	require.EqualValues(t, 10_000, b.getLoan(t, bad).InterestOutstandingDealerMinor)
}
