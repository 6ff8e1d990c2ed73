package cob_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/cob"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// testBundle is a database of the test's own with the process's services,
// and helpers that drive close of business date by date.
type testBundle struct {
	*testkit.Bundle
}

// setupOpts change the configuration of setup's services.
type setupOpts struct {
	// LateFeeDay overrides RIVERBANK_LATE_FEE_DAY (default 20).
	LateFeeDay int
	// ChunkSize overrides RIVERBANK_COB_CHUNK_SIZE.
	ChunkSize int
}

func setup(t *testing.T, o setupOpts) *testBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{Configure: func(cfg *config.Config) {
		if o.LateFeeDay > 0 {
			cfg.LateFeeDay = o.LateFeeDay
		}
		if o.ChunkSize > 0 {
			cfg.COBChunkSize = o.ChunkSize
		}
	}})
	return &testBundle{Bundle: k}
}

// day parses a YYYY-MM-DD date of a test table.
func day(s string) time.Time {
	d, err := time.Parse(cob.DateLayout, s)
	if err != nil {
		panic(err)
	}
	return d
}

func fmtDay(d time.Time) string { return d.Format(cob.DateLayout) }

// creditLine gives borrower a line in currency large enough for any test.
func (b *testBundle) creditLine(t testing.TB, borrower, currency string) {
	t.Helper()
	_, _, err := b.Services.Lending.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: lending.MaxAmountMinor, Currency: currency})
	require.NoError(t, err)
}

// dealerLoan is a DEALER loan of borrower b1 in CNY with no penalty and no
// late fee; tests change what their rule needs.
func dealerLoan(no string, principal int64, rateBps int64, start, due string) lending.LoanInput {
	return lending.LoanInput{LoanNo: no, BorrowerID: "b1", Currency: "CNY", PrincipalMinor: principal, AnnualRateBps: rateBps,
		StartDate: start, DueDate: due, InterestMode: lending.ModeDealer, DealerID: "d1"}
}

// withMode turns in into a MANUFACTURER or SPLIT loan.
func withMode(in lending.LoanInput, mode string, shareBps int64) lending.LoanInput {
	in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = mode, "m1", shareBps
	return in
}

func (b *testBundle) loan(t testing.TB, in lending.LoanInput) *lending.Loan {
	t.Helper()
	l, created, err := b.Services.Lending.CreateLoan(b.Ctx, in)
	require.NoError(t, err)
	require.True(t, created)
	return l
}

func (b *testBundle) getLoan(t testing.TB, id int64) *lending.Loan {
	t.Helper()
	l, err := b.Services.Lending.GetLoan(b.Ctx, id)
	require.NoError(t, err)
	return l
}

func (b *testBundle) repay(t testing.TB, loanID int64, identifier, payer string, amount int64, valueDate string) *lending.Repayment {
	t.Helper()
	r, created, err := b.Services.Lending.Repay(b.Ctx, lendingRepayment(loanID, identifier, payer, amount, valueDate))
	require.NoError(t, err)
	require.True(t, created)
	return r
}

// start starts the run of date, which must be new.
func (b *testBundle) start(t testing.TB, date time.Time) *cob.Run {
	t.Helper()
	run, created, err := b.Services.COB.Start(b.Ctx, date)
	require.NoError(t, err, "start %s", fmtDay(date))
	require.True(t, created, "start %s", fmtDay(date))
	return run
}

// jobs lists the jobs of kind inserted for date (any state).
func (b *testBundle) jobs(t testing.TB, kind string, date time.Time) []*rivertype.JobRow {
	t.Helper()
	res, err := b.Inserter.JobList(b.Ctx, river.NewJobListParams().Kinds(kind).
		Where("args->>'date' = @date", river.NamedArgs{"date": fmtDay(date)}).First(10_000))
	require.NoError(t, err)
	return res.Jobs
}

// chunks returns the args of the chunk jobs the run of date enqueued, in
// chunk order (the jobs stay available: no client works them).
func (b *testBundle) chunks(t testing.TB, date time.Time) []cob.ChunkArgs {
	t.Helper()
	jobs := b.jobs(t, cob.KindChunk, date)
	out := make([]cob.ChunkArgs, len(jobs))
	for i, j := range jobs {
		require.NoError(t, json.Unmarshal(j.EncodedArgs, &out[i]))
	}
	slices.SortFunc(out, func(a, c cob.ChunkArgs) int { return a.Chunk - c.Chunk })
	return out
}

// runChunks works every chunk of date's run by calling RunChunk directly,
// one after the other, and returns the run.
func (b *testBundle) runChunks(t testing.TB, date time.Time) *cob.Run {
	t.Helper()
	for _, c := range b.chunks(t, date) {
		_, err := b.Services.COB.RunChunk(b.Ctx, c)
		require.NoError(t, err, "chunk %d of %s", c.Chunk, fmtDay(date))
	}
	return b.getRun(t, date)
}

// closeDate starts date's run, works its chunks and requires it COMPLETED.
func (b *testBundle) closeDate(t testing.TB, date time.Time) *cob.Run {
	t.Helper()
	b.start(t, date)
	run := b.runChunks(t, date)
	require.Equal(t, db.CobRunStatusCOMPLETED, run.Status, "run %s", fmtDay(date))
	return run
}

// closeDates closes every date from first through last, calling each
// (when not nil) after its date closed.
func (b *testBundle) closeDates(t testing.TB, first, last string, each func(d time.Time)) {
	t.Helper()
	for d := day(first); !d.After(day(last)); d = d.AddDate(0, 0, 1) {
		b.closeDate(t, d)
		if each != nil {
			each(d)
		}
	}
}

func (b *testBundle) getRun(t testing.TB, date time.Time) *cob.Run {
	t.Helper()
	run, err := b.Services.COB.Get(b.Ctx, date)
	require.NoError(t, err)
	return run
}

// waitCompleted waits for a run worked by a real River client.
func (b *testBundle) waitCompleted(t testing.TB, date time.Time) *cob.Run {
	t.Helper()
	var run *cob.Run
	testkit.WaitFor(t, 20*time.Second, "run "+fmtDay(date)+" completed", func() bool {
		r, err := b.Services.COB.Get(b.Ctx, date)
		if riverbankNotFound(err) {
			return false
		}
		require.NoError(t, err)
		run = r
		return r.Status == db.CobRunStatusCOMPLETED
	})
	return run
}

// entryCount counts the ledger entries the runs of date posted.
func (b *testBundle) entryCount(t testing.TB, date time.Time) int64 {
	t.Helper()
	return b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1 || '%'", cob.EntryKeyPrefix(date))
}

// openItems counts a loan's unresolved collection items.
func (b *testBundle) openItems(t testing.TB, loanID int64) int64 {
	t.Helper()
	return b.Count(t, "SELECT count(*) FROM collection_item WHERE loan_id = $1 AND resolved_at IS NULL", loanID)
}

// accruals returns a loan's monthly accruals keyed YYYY-MM.
func (b *testBundle) accruals(t testing.TB, loanID int64) map[string]lending.MonthAccrual {
	t.Helper()
	ms, err := b.Services.Lending.Accruals(b.Ctx, loanID)
	require.NoError(t, err)
	out := map[string]lending.MonthAccrual{}
	for _, m := range ms {
		key := m.Month.Format("2006-01")
		_, dup := out[key]
		require.False(t, dup, "month %s listed twice", key)
		out[key] = m
	}
	return out
}

// trialBalance decodes the stored trial balance of date's run.
func (b *testBundle) trialBalance(t testing.TB, date time.Time) cob.TrialBalanceCheck {
	t.Helper()
	run := b.getRun(t, date)
	require.NotEmpty(t, run.TrialBalance, "run %s has no trial balance", fmtDay(date))
	var tb cob.TrialBalanceCheck
	require.NoError(t, json.Unmarshal(run.TrialBalance, &tb))
	return tb
}

// loanState is what a test compares of a loan.
type loanState struct {
	Status          string
	Principal       int64
	InterestDealer  int64
	InterestManu    int64
	Penalty         int64
	LateFee         int64
	DaysPastDue     int32
	LastClosedDate  string
	AccruedDealer   int64
	MonthDealerAccr int64
}

func stateOf(l *lending.Loan) loanState {
	s := loanState{Status: string(l.Status), Principal: l.PrincipalOutstandingMinor, InterestDealer: l.InterestOutstandingDealerMinor,
		InterestManu: l.InterestOutstandingManufacturerMinor, Penalty: l.PenaltyOutstandingMinor, LateFee: l.LateFeeOutstandingMinor,
		DaysPastDue: l.DaysPastDue, AccruedDealer: l.InterestDealerAccruedMinor, MonthDealerAccr: l.MonthInterestDealerMinor}
	if l.LastClosedDate != nil {
		s.LastClosedDate = fmtDay(*l.LastClosedDate)
	}
	return s
}

// riverbankNotFound reports a not_found domain error.
func riverbankNotFound(err error) bool { return riverbank.ErrorCode(err) == riverbank.ENOTFOUND }

func lendingRepayment(loanID int64, identifier, payer string, amount int64, valueDate string) lending.RepaymentInput {
	return lending.RepaymentInput{LoanID: loanID, Identifier: identifier, Payer: payer, AmountMinor: amount, ValueDate: valueDate}
}
