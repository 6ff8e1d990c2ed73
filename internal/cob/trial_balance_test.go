package cob_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/cob"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// receivables maps each receivable account to the loan field it mirrors.
var receivables = map[string]func(*lending.Loan) int64{
	ledger.AccountLoansPrincipal:            func(l *lending.Loan) int64 { return l.PrincipalOutstandingMinor },
	ledger.AccountLoansInterestDealer:       func(l *lending.Loan) int64 { return l.InterestOutstandingDealerMinor },
	ledger.AccountLoansInterestManufacturer: func(l *lending.Loan) int64 { return l.InterestOutstandingManufacturerMinor },
	ledger.AccountLoansPenalty:              func(l *lending.Loan) int64 { return l.PenaltyOutstandingMinor },
	ledger.AccountLoansLateFee:              func(l *lending.Loan) int64 { return l.LateFeeOutstandingMinor },
}

// owed sums the loans' outstanding fields per currency and receivable
// account ("CNY loans:penalty").
func (b *testBundle) owed(t testing.TB) map[string]int64 {
	t.Helper()
	loans, err := b.Services.Lending.ListLoans(b.Ctx, lending.LoanFilter{Limit: 500})
	require.NoError(t, err)
	out := map[string]int64{}
	for _, l := range loans {
		for code, f := range receivables {
			out[l.Currency+" "+code] += f(l)
		}
	}
	return out
}

// tbLoans builds a USD and a CNY book: every mode, a loan past due, a
// late-fee day inside the window (late-fee day 5).
func tbLoans(t *testing.T, b *testBundle) []*lending.Loan {
	t.Helper()
	b.creditLine(t, "cny", "CNY")
	b.creditLine(t, "usd", "USD")
	var loans []*lending.Loan
	for _, cur := range []struct{ borrower, currency string }{{"cny", "CNY"}, {"usd", "USD"}} {
		for i, in := range []lending.LoanInput{
			dealerLoan("D", 12_345_678, 1234, "2024-10-25", "2024-11-03"),
			withMode(dealerLoan("S", 98_765_432, 777, "2024-10-25", "2024-12-31"), lending.ModeSplit, 4321),
			withMode(dealerLoan("M", 5_555_555, 3000, "2024-10-26", "2024-12-31"), lending.ModeManufacturer, 0),
		} {
			in.LoanNo = in.LoanNo + "-" + cur.currency
			in.BorrowerID, in.Currency = cur.borrower, cur.currency
			in.PenaltyRateBps, in.LateFeeMinor = 1800+int64(i), 777
			loans = append(loans, b.loan(t, in))
		}
	}
	return loans
}

// tbRepay makes the book's repayments before date closes: partial and
// value-dated ahead, by both payers.
func tbRepay(t *testing.T, b *testBundle, loans []*lending.Loan, d time.Time) {
	t.Helper()
	switch fmtDay(d) {
	case "2024-10-29":
		for _, l := range loans {
			b.repay(t, l.ID, "a", "DEALER", 50_000, "2024-10-30")
		}
	case "2024-11-02":
		for _, l := range loans {
			if l.InterestMode != db.LoanInterestModeDEALER {
				owed := b.getLoan(t, l.ID).InterestOutstandingManufacturerMinor
				b.repay(t, l.ID, "m", "MANUFACTURER", owed/2+1, "2024-11-02")
			}
		}
	case "2024-11-06":
		for _, l := range loans {
			b.repay(t, l.ID, "b", "DEALER", 1_234_567, "2024-11-08")
		}
	}
}

// TestTrialBalanceAfterRuns closes two weeks with repayments through the
// real workers and reads the trial balance the last run stored: the
// ledger balances, each receivable account (balance + pending) equals the
// loans' matching outstanding field in USD and CNY, and the run's totals
// equal its postings. Once the apply queue drains, the balances alone
// equal the loans.
func TestTrialBalanceAfterRuns(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{LateFeeDay: 5, ChunkSize: 2})
	testkit.Start(t, b.Client(t, nil))
	loans := tbLoans(t, b)
	var last time.Time
	for d := day("2024-10-25"); !d.After(day("2024-11-08")); d = d.AddDate(0, 0, 1) {
		tbRepay(t, b, loans, d)
		b.start(t, d)
		b.waitCompleted(t, d)
		last = d
	}
	testkit.WaitFor(t, 20*time.Second, "trial balance stored", func() bool { return len(b.getRun(t, last).TrialBalance) > 0 })
	tb := b.trialBalance(t, last)
	owed := b.owed(t)
	require.True(t, tb.Balanced, "%+v", tb)
	require.True(t, tb.RunPostingsMatch)
	require.Len(t, tb.Ledger, 2)
	for _, l := range tb.Ledger {
		require.True(t, l.Balanced, "%+v", l)
	}
	seen := map[string]bool{}
	for _, l := range tb.Subledger {
		key := l.Currency + " " + l.Account
		seen[key] = true
		require.True(t, l.Equal, "%+v", l)
		require.Equal(t, owed[key], l.LoansMinor, key)
		require.Equal(t, owed[key], l.AccountMinor, key)
	}
	require.Len(t, seen, 10, "five receivables in each of USD and CNY")
	for _, k := range []string{"CNY " + ledger.AccountLoansPenalty, "USD " + ledger.AccountLoansInterestManufacturer} {
		require.Positive(t, owed[k], "the book exercises %s", k)
	}
	for _, tot := range b.getRun(t, day("2024-11-05")).Totals {
		require.Positive(t, tot.LateFeeMinor, "late fees charged on the late-fee day (repaid since) in %s", tot.Currency)
	}

	// Drain the apply queue: the balances alone now equal the loans, and
	// the ledger's own trial balance (pending 0) balances.
	require.NoError(t, b.Store.InTx(b.Ctx, func(tx *db.Tx) error {
		_, err := ledger.EnqueueApplyForPending(b.Ctx, tx)
		return err
	}))
	testkit.WaitFor(t, 30*time.Second, "ledger drained", func() bool {
		return b.Count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL") == 0
	})
	ltb, err := b.Services.Ledger.TrialBalance(b.Ctx)
	require.NoError(t, err)
	require.True(t, ltb.Balanced, "%+v", ltb)
	for key, want := range owed {
		cur, code := key[:3], key[4:]
		acc, err := b.Services.Ledger.GetAccount(b.Ctx, code, cur)
		if want == 0 && riverbankNotFound(err) {
			continue // never posted to
		}
		require.NoError(t, err)
		require.Equal(t, want, acc.BalanceMinor, key)
		require.Zero(t, acc.PendingMinor, key)
	}
}

// TestTrialBalanceWithApplyBacklog: the check holds whatever the apply
// queue's backlog, including an entry applied on one of its accounts and
// not yet on the other (the ledger's totals are then both non-zero).
func TestTrialBalanceWithApplyBacklog(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{LateFeeDay: 5, ChunkSize: 2})
	loans := tbLoans(t, b)
	b.closeDates(t, "2024-10-25", "2024-11-06", func(d time.Time) { tbRepay(t, b, loans, d.AddDate(0, 0, 1)) })
	last := day("2024-11-06")

	acc, err := b.Services.Ledger.GetAccount(b.Ctx, ledger.AccountLoansInterestDealer, "CNY")
	require.NoError(t, err)
	require.NoError(t, b.Store.InTx(b.Ctx, func(tx *db.Tx) error {
		_, err := ledger.ApplyBatchTx(context.WithoutCancel(b.Ctx), tx, acc.ID, ledger.ApplyBatchSize)
		return err
	}))
	tb, err := b.Services.COB.CheckTrialBalance(b.Ctx, fmtDay(last), b.Services.Ledger)
	require.NoError(t, err)
	var cny cob.LedgerLine
	for _, l := range tb.Ledger {
		if l.Currency == "CNY" {
			cny = l
		}
	}
	require.NotZero(t, cny.BalanceTotalMinor, "half-applied entries")
	require.Equal(t, -cny.BalanceTotalMinor, cny.PendingTotalMinor)
	require.True(t, cny.Balanced)
	require.True(t, tb.Balanced, "%+v", tb)
	require.Equal(t, tb.Balanced, b.trialBalance(t, last).Balanced, "stored on the run")
}
