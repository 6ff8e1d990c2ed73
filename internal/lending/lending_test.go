package lending_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/lending/rules"
	"riverbank/internal/testkit"
)

// testBundle is what a lending test works with: the kit's database and
// services plus the lending service. setup gives a rolled-back transaction
// on the package's shared database (Tx set); setupDB gives a database of the
// test's own with committed data (Pool set), for tests that run goroutines.
type testBundle struct {
	*testkit.Bundle
	svc *lending.Service
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &testBundle{Bundle: k, svc: k.Services.Lending}
}

func setupDB(t *testing.T) *testBundle {
	t.Helper()
	// A dozen connections: the goroutines race in Postgres (and queue for
	// the rest in the pool), while parallel tests stay under max_connections.
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 12})
	return &testBundle{Bundle: k, svc: k.Services.Lending}
}

// A loan's term in the past, so repayments can be value-dated between its
// start and today.
const (
	startDate = "2026-01-05"
	dueDate   = "2026-07-05"
)

func loanInput(borrower, loanNo string, principal int64) lending.LoanInput {
	return lending.LoanInput{LoanNo: loanNo, BorrowerID: borrower, Currency: "CNY", PrincipalMinor: principal,
		AnnualRateBps: 1200, PenaltyRateBps: 1800, LateFeeMinor: 500, StartDate: startDate, DueDate: dueDate,
		InterestMode: lending.ModeDealer, DealerID: borrower}
}

// splitInput is a SPLIT loan: dealer and manufacturer share the interest.
func splitInput(borrower, loanNo string, principal int64) lending.LoanInput {
	in := loanInput(borrower, loanNo, principal)
	in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", 2500
	return in
}

func (b *testBundle) line(t testing.TB, borrower string, limit int64, currency string) *lending.CreditLine {
	t.Helper()
	c, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: limit, Currency: currency})
	require.NoError(t, err)
	require.True(t, created)
	return c
}

func (b *testBundle) setFrozen(t testing.TB, borrower string, frozen bool) {
	t.Helper()
	c, err := b.svc.GetCreditLine(b.Ctx, borrower)
	require.NoError(t, err)
	_, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: c.LimitMinor, Currency: c.Currency, Frozen: frozen})
	require.NoError(t, err)
	require.False(t, created)
}

func (b *testBundle) loan(t testing.TB, in lending.LoanInput) *lending.Loan {
	t.Helper()
	l, created, err := b.svc.CreateLoan(b.Ctx, in)
	require.NoError(t, err)
	require.True(t, created)
	return l
}

func (b *testBundle) getLoan(t testing.TB, id int64) *lending.Loan {
	t.Helper()
	l, err := b.svc.GetLoan(b.Ctx, id)
	require.NoError(t, err)
	return l
}

// used reads a credit line's used_minor straight from the table.
func (b *testBundle) used(t testing.TB, borrower string) int64 {
	t.Helper()
	return b.Count(t, "SELECT used_minor FROM credit_line WHERE borrower_id = $1", borrower)
}

// setOutstanding sets what a loan owes besides principal, as close of
// business would have accrued it.
func (b *testBundle) setOutstanding(t testing.TB, loanID, penalty, lateFee, dealerInterest, manufacturerInterest int64) {
	t.Helper()
	_, err := b.DB.Exec(b.Ctx, `UPDATE loan SET penalty_outstanding_minor = $2, late_fee_outstanding_minor = $3,
		interest_outstanding_dealer_minor = $4, interest_outstanding_manufacturer_minor = $5 WHERE id = $1`,
		loanID, penalty, lateFee, dealerInterest, manufacturerInterest)
	require.NoError(t, err)
}

func (b *testBundle) setLastClosedDate(t testing.TB, loanID int64, date string) {
	t.Helper()
	_, err := b.DB.Exec(b.Ctx, "UPDATE loan SET last_closed_date = $2::date WHERE id = $1", loanID, date)
	require.NoError(t, err)
}

func (b *testBundle) repay(t testing.TB, loanID int64, identifier string, payer string, amount int64, valueDate string) *lending.Repayment {
	t.Helper()
	r, created, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: loanID, Identifier: identifier, Payer: payer, AmountMinor: amount, ValueDate: valueDate})
	require.NoError(t, err)
	require.True(t, created)
	return r
}

// postings returns an entry's postings summed by account, checking every
// posting is in the entry's currency.
func (b *testBundle) postings(t testing.TB, entryID int64, currency string) map[string]int64 {
	t.Helper()
	e, err := b.Services.Ledger.GetEntry(b.Ctx, entryID)
	require.NoError(t, err)
	require.Equal(t, currency, e.Currency)
	out := map[string]int64{}
	var sum int64
	for _, p := range e.Postings {
		require.Equal(t, currency, p.Currency, "posting on %s", p.Account)
		out[p.Account] += p.AmountMinor
		sum += p.AmountMinor
	}
	require.Zero(t, sum, "the entry balances")
	return out
}

// writes counts every row a lending call may write, and the credit taken.
type writes struct {
	Lines, Loans, Repayments, Restorations, Entries, Postings, Accounts, Jobs, Used int64
}

func (b *testBundle) writes(t testing.TB) writes {
	t.Helper()
	var w writes
	require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT (SELECT count(*) FROM credit_line), (SELECT count(*) FROM loan),
		(SELECT count(*) FROM repayment), (SELECT count(*) FROM credit_restoration), (SELECT count(*) FROM ledger_entry),
		(SELECT count(*) FROM ledger_posting), (SELECT count(*) FROM ledger_account), (SELECT count(*) FROM river_job),
		(SELECT coalesce(sum(used_minor), 0)::bigint FROM credit_line)`).
		Scan(&w.Lines, &w.Loans, &w.Repayments, &w.Restorations, &w.Entries, &w.Postings, &w.Accounts, &w.Jobs, &w.Used))
	return w
}

func requireCode(t testing.TB, err error, code string) *riverbank.Error {
	t.Helper()
	return testkit.RequireCode(t, err, code)
}

func TestPutCreditLine(t *testing.T) {
	t.Parallel()

	t.Run("CreatesThenUpdates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")

		c, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 10_000, Currency: "CNY"})
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, borrower, c.BorrowerID)
		require.Equal(t, "CNY", c.Currency)
		require.EqualValues(t, 10_000, c.LimitMinor)
		require.Zero(t, c.UsedMinor)
		require.False(t, c.Frozen)
		require.EqualValues(t, 10_000, c.AvailableMinor())

		b.loan(t, loanInput(borrower, b.ID("L1"), 4_000))
		u, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 20_000, Currency: "CNY", Frozen: true})
		require.NoError(t, err)
		require.False(t, created, "an update is not a create")
		require.EqualValues(t, 20_000, u.LimitMinor)
		require.EqualValues(t, 4_000, u.UsedMinor, "an update keeps what is used")
		require.True(t, u.Frozen)
		require.EqualValues(t, 16_000, u.AvailableMinor())
		require.True(t, c.CreatedAt.Equal(u.CreatedAt))

		got, err := b.svc.GetCreditLine(b.Ctx, borrower)
		require.NoError(t, err)
		require.Equal(t, u.LimitMinor, got.LimitMinor)
		require.Equal(t, u.UsedMinor, got.UsedMinor)
		require.True(t, got.Frozen)

		// The same request again is an update that changes nothing.
		again, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 20_000, Currency: "CNY", Frozen: true})
		require.NoError(t, err)
		require.False(t, created)
		require.EqualValues(t, 4_000, again.UsedMinor)
	})

	t.Run("UnknownBorrowerIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, id := range []string{b.ID("nobody"), "-bad", ""} {
			_, err := b.svc.GetCreditLine(b.Ctx, id)
			requireCode(t, err, riverbank.ENOTFOUND)
		}
	})

	t.Run("CurrencyIsFixedForLife", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		before := b.writes(t)
		_, _, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 50_000, Currency: "USD", Frozen: true})
		de := requireCode(t, err, riverbank.ECONFLICT)
		require.Equal(t, "CNY", de.Details["currency"])
		require.Equal(t, before, b.writes(t))
		c, err := b.svc.GetCreditLine(b.Ctx, borrower)
		require.NoError(t, err)
		require.EqualValues(t, 10_000, c.LimitMinor, "a refused update changes nothing")
		require.False(t, c.Frozen)
		require.Equal(t, "CNY", c.Currency)
	})

	t.Run("LimitMayBeLoweredBelowUsed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		b.loan(t, loanInput(borrower, b.ID("L1"), 6_000))

		c, created, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 4_000, Currency: "CNY"})
		require.NoError(t, err)
		require.False(t, created)
		require.EqualValues(t, 4_000, c.LimitMinor)
		require.EqualValues(t, 6_000, c.UsedMinor, "nothing is clawed back")
		require.Zero(t, c.AvailableMinor())

		before := b.writes(t)
		_, _, err = b.svc.CreateLoan(b.Ctx, loanInput(borrower, b.ID("L2"), 1))
		de := requireCode(t, err, riverbank.EINSUFFICIENTCREDIT)
		require.EqualValues(t, 0, de.Details["available_minor"])
		require.Equal(t, before, b.writes(t))

		c, _, err = b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 7_000, Currency: "CNY"})
		require.NoError(t, err)
		require.EqualValues(t, 1_000, c.AvailableMinor())
		b.loan(t, loanInput(borrower, b.ID("L3"), 1_000))
		require.EqualValues(t, 7_000, b.used(t, borrower))
	})

	t.Run("FrozenLineTakesNoLoans", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		b.setFrozen(t, borrower, true)

		before := b.writes(t)
		_, _, err := b.svc.CreateLoan(b.Ctx, loanInput(borrower, b.ID("L1"), 1_000))
		de := requireCode(t, err, riverbank.EINSUFFICIENTCREDIT)
		require.Equal(t, "frozen", de.Details["reason"])
		require.Equal(t, before, b.writes(t))

		b.setFrozen(t, borrower, false)
		b.loan(t, loanInput(borrower, b.ID("L1"), 1_000))
		require.EqualValues(t, 1_000, b.used(t, borrower))
	})

	t.Run("ConcurrentCreatesCreateOnceInOneCurrency", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		const borrower = "dealer-put"
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			created   int
			currency  = map[string]int{}
			conflicts = map[string]int{}
			errs      []error
		)
		start := make(chan struct{})
		for i := range 20 {
			cur := []string{"CNY", "USD"}[i%2]
			wg.Go(func() {
				<-start
				c, cr, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 1_000, Currency: cur})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					currency[c.Currency]++
					if cr {
						created++
					}
				case riverbank.ErrorCode(err) == riverbank.ECONFLICT:
					conflicts[cur]++
				default:
					errs = append(errs, err)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.Equal(t, 1, created)
		require.Len(t, currency, 1, "the first currency wins for life")
		for cur, n := range currency {
			require.Equal(t, 10, n)
			require.Len(t, conflicts, 1)
			require.NotContains(t, conflicts, cur)
		}
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_line"))
	})

	t.Run("BadInputIsInvalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		valid := lending.CreditLineInput{BorrowerID: b.ID("dealer"), LimitMinor: 100, Currency: "CNY"}
		tests := []struct {
			name  string
			mut   func(in *lending.CreditLineInput)
			field string
		}{
			{"EmptyBorrower", func(in *lending.CreditLineInput) { in.BorrowerID = "" }, "borrower_id"},
			{"BorrowerStartsWithDash", func(in *lending.CreditLineInput) { in.BorrowerID = "-dealer" }, "borrower_id"},
			{"BorrowerWithSpace", func(in *lending.CreditLineInput) { in.BorrowerID = "a b" }, "borrower_id"},
			{"BorrowerTooLong", func(in *lending.CreditLineInput) { in.BorrowerID = strings.Repeat("d", 65) }, "borrower_id"},
			{"NegativeLimit", func(in *lending.CreditLineInput) { in.LimitMinor = -1 }, "limit_minor"},
			{"LimitOverMax", func(in *lending.CreditLineInput) { in.LimitMinor = lending.MaxAmountMinor + 1 }, "limit_minor"},
			{"LowerCaseCurrency", func(in *lending.CreditLineInput) { in.Currency = "cny" }, "currency"},
			{"EmptyCurrency", func(in *lending.CreditLineInput) { in.Currency = "" }, "currency"},
			{"LongCurrency", func(in *lending.CreditLineInput) { in.Currency = "CNYY" }, "currency"},
		}
		before := b.writes(t)
		for _, tt := range tests {
			in := valid
			tt.mut(&in)
			_, _, err := b.svc.PutCreditLine(b.Ctx, in)
			de := requireCode(t, err, riverbank.EINVALID)
			require.Equal(t, tt.field, de.Details["field"], tt.name)
		}
		require.Equal(t, before, b.writes(t))
	})
}

func TestCreateLoan(t *testing.T) {
	t.Parallel()

	t.Run("TakesCreditAndDisbursesInTheLoansCurrency", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "USD")
		before := b.writes(t)

		in := loanInput(borrower, b.ID("L-1"), 6_000)
		in.Currency = "USD"
		l, created, err := b.svc.CreateLoan(b.Ctx, in)
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, lending.StatusActive, string(l.Status))
		require.Equal(t, in.LoanNo, l.LoanNo)
		require.Equal(t, "USD", l.Currency)
		require.EqualValues(t, 6_000, l.PrincipalMinor)
		require.EqualValues(t, 6_000, l.PrincipalOutstandingMinor)
		require.Zero(t, l.InterestOutstandingDealerMinor+l.InterestOutstandingManufacturerMinor+l.PenaltyOutstandingMinor+l.LateFeeOutstandingMinor)
		require.EqualValues(t, 1200, l.AnnualRateBps)
		require.EqualValues(t, 1800, l.PenaltyRateBps)
		require.EqualValues(t, 500, l.LateFeeMinor)
		require.Equal(t, startDate, l.StartDate.Format(lending.DateLayout))
		require.Equal(t, dueDate, l.DueDate.Format(lending.DateLayout))
		require.Nil(t, l.ManufacturerID)
		require.Nil(t, l.LastClosedDate)
		require.Nil(t, l.RepaidAt)

		require.EqualValues(t, 6_000, b.used(t, borrower))
		// The disbursement: debit loans:principal, credit platform:cash, in
		// USD, whose system accounts the loan created.
		require.Equal(t, map[string]int64{ledger.AccountLoansPrincipal: 6_000, ledger.AccountPlatformCash: -6_000},
			b.postings(t, l.DisbursementEntryID, "USD"))
		e, err := b.Services.Ledger.GetEntry(b.Ctx, l.DisbursementEntryID)
		require.NoError(t, err)
		require.Equal(t, lending.DisbursementKey(in.LoanNo), e.IdempotencyKey)
		for _, code := range []string{ledger.AccountLoansPrincipal, ledger.AccountPlatformCash} {
			a, err := b.Services.Ledger.GetAccount(b.Ctx, code, "USD")
			require.NoError(t, err)
			require.Equal(t, "USD", a.Currency)
		}
		after := b.writes(t)
		require.Equal(t, before.Loans+1, after.Loans)
		require.Equal(t, before.Entries+1, after.Entries)
		require.Equal(t, before.Postings+2, after.Postings)
		require.Equal(t, before.Jobs, after.Jobs, "a loan enqueues nothing")

		got := b.getLoan(t, l.ID)
		require.Equal(t, l.Loan, got.Loan)
		_, err = b.svc.GetLoan(b.Ctx, l.ID+1_000_000)
		requireCode(t, err, riverbank.ENOTFOUND)

		// Its repayments post in USD too, creating every receivable there.
		b.setOutstanding(t, l.ID, 10, 20, 30, 0)
		r := b.repay(t, l.ID, "usd-1", "DEALER", 100, "2026-02-01")
		require.Equal(t, map[string]int64{ledger.AccountPlatformCash: 100, ledger.AccountLoansPenalty: -10, ledger.AccountLoansLateFee: -20,
			ledger.AccountLoansInterestDealer: -30, ledger.AccountLoansPrincipal: -40}, b.postings(t, r.LedgerEntryID, "USD"))
	})

	t.Run("EveryRuleRefusesAndWritesNothing", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name    string
			mut     func(in *lending.LoanInput)
			frozen  bool
			code    string
			details map[string]any
		}{
			{"LoanNoEmpty", func(in *lending.LoanInput) { in.LoanNo = "" }, false, riverbank.EINVALID, map[string]any{"field": "loan_no"}},
			{"LoanNoWithSpace", func(in *lending.LoanInput) { in.LoanNo = "L 1" }, false, riverbank.EINVALID, map[string]any{"field": "loan_no"}},
			{"LoanNoStartsWithDash", func(in *lending.LoanInput) { in.LoanNo = "-L1" }, false, riverbank.EINVALID, map[string]any{"field": "loan_no"}},
			{"LoanNoTooLong", func(in *lending.LoanInput) { in.LoanNo = strings.Repeat("L", 65) }, false, riverbank.EINVALID, map[string]any{"field": "loan_no"}},
			{"BorrowerInvalid", func(in *lending.LoanInput) { in.BorrowerID = "a b" }, false, riverbank.EINVALID, map[string]any{"field": "borrower_id"}},
			{"CurrencyNotISO", func(in *lending.LoanInput) { in.Currency = "cny" }, false, riverbank.EINVALID, map[string]any{"field": "currency"}},
			{"PrincipalZero", func(in *lending.LoanInput) { in.PrincipalMinor = 0 }, false, riverbank.EINVALID, map[string]any{"field": "principal_minor"}},
			{"PrincipalNegative", func(in *lending.LoanInput) { in.PrincipalMinor = -100 }, false, riverbank.EINVALID, map[string]any{"field": "principal_minor"}},
			{"PrincipalOverMax", func(in *lending.LoanInput) { in.PrincipalMinor = lending.MaxAmountMinor + 1 }, false, riverbank.EINVALID, map[string]any{"field": "principal_minor"}},
			{"AnnualRateNegative", func(in *lending.LoanInput) { in.AnnualRateBps = -1 }, false, riverbank.EINVALID, map[string]any{"field": "annual_rate_bps"}},
			{"AnnualRateOverMax", func(in *lending.LoanInput) { in.AnnualRateBps = lending.MaxRateBps + 1 }, false, riverbank.EINVALID, map[string]any{"field": "annual_rate_bps"}},
			{"PenaltyRateNegative", func(in *lending.LoanInput) { in.PenaltyRateBps = -1 }, false, riverbank.EINVALID, map[string]any{"field": "penalty_rate_bps"}},
			{"PenaltyRateOverMax", func(in *lending.LoanInput) { in.PenaltyRateBps = lending.MaxRateBps + 1 }, false, riverbank.EINVALID, map[string]any{"field": "penalty_rate_bps"}},
			{"LateFeeNegative", func(in *lending.LoanInput) { in.LateFeeMinor = -1 }, false, riverbank.EINVALID, map[string]any{"field": "late_fee_minor"}},
			{"DealerMissing", func(in *lending.LoanInput) { in.DealerID = "" }, false, riverbank.EINVALID, map[string]any{"field": "dealer_id"}},
			{"StartDateMalformed", func(in *lending.LoanInput) { in.StartDate = "2026-1-5" }, false, riverbank.EINVALID, map[string]any{"field": "start_date"}},
			{"StartDateMissing", func(in *lending.LoanInput) { in.StartDate = "" }, false, riverbank.EINVALID, map[string]any{"field": "start_date"}},
			{"DueDateNotADay", func(in *lending.LoanInput) { in.DueDate = "2026-02-30" }, false, riverbank.EINVALID, map[string]any{"field": "due_date"}},
			{"DueDateWithTime", func(in *lending.LoanInput) { in.DueDate = "2026-07-05T00:00:00Z" }, false, riverbank.EINVALID, map[string]any{"field": "due_date"}},
			{"DueDateOnStartDate", func(in *lending.LoanInput) { in.DueDate = in.StartDate }, false, riverbank.EINVALID, map[string]any{"field": "due_date"}},
			{"DueDateBeforeStartDate", func(in *lending.LoanInput) { in.DueDate = "2026-01-04" }, false, riverbank.EINVALID, map[string]any{"field": "due_date"}},
			{"InterestModeUnknown", func(in *lending.LoanInput) { in.InterestMode = "BOTH" }, false, riverbank.EINVALID, map[string]any{"field": "interest_mode"}},
			{"InterestModeLowerCase", func(in *lending.LoanInput) { in.InterestMode = "dealer" }, false, riverbank.EINVALID, map[string]any{"field": "interest_mode"}},
			{"InterestModeMissing", func(in *lending.LoanInput) { in.InterestMode = "" }, false, riverbank.EINVALID, map[string]any{"field": "interest_mode"}},
			{"SplitShareZero", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", 0
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_share_bps"}},
			{"SplitShareAll", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", 10_000
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_share_bps"}},
			{"SplitShareNegative", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", -1
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_share_bps"}},
			{"ShareOnlyForSplitNotDealer", func(in *lending.LoanInput) { in.ManufacturerShareBps = 2500 }, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_share_bps"}},
			{"ShareOnlyForSplitNotManufacturer", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeManufacturer, "maker-1", 2500
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_share_bps"}},
			{"ManufacturerModeNeedsManufacturer", func(in *lending.LoanInput) { in.InterestMode = lending.ModeManufacturer }, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_id"}},
			{"SplitModeNeedsManufacturer", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerShareBps = lending.ModeSplit, 2500
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_id"}},
			{"ManufacturerInvalid", func(in *lending.LoanInput) {
				in.InterestMode, in.ManufacturerID = lending.ModeManufacturer, "maker 1"
			}, false, riverbank.EINVALID, map[string]any{"field": "manufacturer_id"}},
			{"CurrencyNotTheLines", func(in *lending.LoanInput) { in.Currency = "USD" }, false, riverbank.EINVALID,
				map[string]any{"field": "currency", "credit_line_currency": "CNY"}},
			{"NoCreditLine", func(in *lending.LoanInput) { in.BorrowerID += "-none" }, false, riverbank.EINSUFFICIENTCREDIT,
				map[string]any{"reason": "no_credit_line"}},
			{"LineTooShort", func(in *lending.LoanInput) { in.PrincipalMinor = 10_001 }, false, riverbank.EINSUFFICIENTCREDIT,
				map[string]any{"reason": "insufficient", "available_minor": int64(10_000)}},
			{"LineFrozen", func(in *lending.LoanInput) {}, true, riverbank.EINSUFFICIENTCREDIT, map[string]any{"reason": "frozen"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				borrower := b.ID("dealer")
				b.line(t, borrower, 10_000, "CNY")
				if tt.frozen {
					b.setFrozen(t, borrower, true)
				}
				before := b.writes(t)
				in := loanInput(borrower, b.ID("L-bad"), 1_000)
				tt.mut(&in)
				_, _, err := b.svc.CreateLoan(b.Ctx, in)
				de := requireCode(t, err, tt.code)
				for k, v := range tt.details {
					require.EqualValues(t, v, de.Details[k], "details[%s]", k)
				}
				require.Equal(t, before, b.writes(t), "a refused loan writes nothing")
			})
		}
	})

	t.Run("LimitsAreAccepted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, lending.MaxAmountMinor, "CNY")
		in := loanInput(borrower, b.ID("L/edge:1@x_y.z-2"), lending.MaxAmountMinor)
		in.AnnualRateBps, in.PenaltyRateBps, in.LateFeeMinor = lending.MaxRateBps, 0, 0
		in.DueDate = "2026-01-06"
		in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", 9_999
		l := b.loan(t, in)
		require.EqualValues(t, 9_999, l.ManufacturerShareBps)
		require.Equal(t, "maker-1", *l.ManufacturerID)
		require.Zero(t, b.Count(t, "SELECT limit_minor - used_minor FROM credit_line WHERE borrower_id = $1", borrower))

		other := b.ID("dealer2")
		b.line(t, other, 10, "CNY")
		in = loanInput(other, b.ID("L-share"), 1)
		in.InterestMode, in.ManufacturerID, in.ManufacturerShareBps = lending.ModeSplit, "maker-1", 1
		b.loan(t, in)
		in = loanInput(other, b.ID("L-maker"), 1)
		in.InterestMode, in.ManufacturerID = lending.ModeManufacturer, "maker-1"
		b.loan(t, in)
	})

	t.Run("IdempotentOnLoanNo", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		in := splitInput(borrower, b.ID("L-1"), 3_000)
		first := b.loan(t, in)
		before := b.writes(t)

		again, created, err := b.svc.CreateLoan(b.Ctx, in)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, first.ID, again.ID)
		require.Equal(t, first.DisbursementEntryID, again.DisbursementEntryID)
		require.Equal(t, before, b.writes(t), "a replay takes no credit and posts nothing")
		require.EqualValues(t, 3_000, b.used(t, borrower))

		for name, mut := range map[string]func(in *lending.LoanInput){
			"OtherPrincipal":    func(in *lending.LoanInput) { in.PrincipalMinor = 3_001 },
			"OtherDueDate":      func(in *lending.LoanInput) { in.DueDate = "2026-07-06" },
			"OtherRate":         func(in *lending.LoanInput) { in.AnnualRateBps = 1201 },
			"OtherShare":        func(in *lending.LoanInput) { in.ManufacturerShareBps = 2501 },
			"OtherManufacturer": func(in *lending.LoanInput) { in.ManufacturerID = "maker-2" },
			"OtherMode":         func(in *lending.LoanInput) { in.InterestMode, in.ManufacturerShareBps = lending.ModeManufacturer, 0 },
		} {
			other := in
			mut(&other)
			_, _, err := b.svc.CreateLoan(b.Ctx, other)
			de := requireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
			require.EqualValues(t, first.ID, de.Details["loan_id"], name)
		}
		require.Equal(t, before, b.writes(t))

		// A replay is answered from the loan, whatever the line says now.
		b.setFrozen(t, borrower, true)
		again, created, err = b.svc.CreateLoan(b.Ctx, in)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, first.ID, again.ID)
	})

	t.Run("ConcurrentLoansNeverPassTheLimit", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		borrower := "dealer-race"
		const principal = 1_000
		b.line(t, borrower, 10*principal, "CNY")

		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			ok, short int
			other     []error
		)
		start := make(chan struct{})
		for i := range 30 {
			wg.Go(func() {
				<-start
				_, created, err := b.svc.CreateLoan(b.Ctx, loanInput(borrower, fmt.Sprintf("L-%02d", i), principal))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && created:
					ok++
				case riverbank.ErrorCode(err) == riverbank.EINSUFFICIENTCREDIT:
					short++
				default:
					other = append(other, fmt.Errorf("created=%v: %w", created, err))
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, other)
		require.Equal(t, 10, ok)
		require.Equal(t, 20, short)

		// The invariant, in SQL: used is exactly the loans' principal and
		// never above the limit; every loan disbursed once.
		var loans, sum, used, limit, entries int64
		require.NoError(t, b.Pool.QueryRow(b.Ctx, `SELECT (SELECT count(*) FROM loan WHERE borrower_id = $1),
			(SELECT coalesce(sum(principal_minor), 0)::bigint FROM loan WHERE borrower_id = $1),
			used_minor, limit_minor,
			(SELECT count(*) FROM ledger_entry e JOIN loan l ON l.disbursement_entry_id = e.id WHERE l.borrower_id = $1)
			FROM credit_line WHERE borrower_id = $1`, borrower).Scan(&loans, &sum, &used, &limit, &entries))
		require.EqualValues(t, 10, loans)
		require.Equal(t, sum, used)
		require.LessOrEqual(t, used, limit)
		require.EqualValues(t, 10, entries)
		require.EqualValues(t, 10, b.Count(t, "SELECT count(*) FROM ledger_entry"))
	})

	t.Run("ConcurrentSameLoanNoTakesCreditOnce", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		borrower := "dealer-replay"
		b.line(t, borrower, 100_000, "CNY")
		in := loanInput(borrower, "L-same", 7_000)

		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			ids     = map[int64]int{}
			errs    []error
		)
		start := make(chan struct{})
		for range 20 {
			wg.Go(func() {
				<-start
				l, c, err := b.svc.CreateLoan(b.Ctx, in)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[l.ID]++
				if c {
					created++
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.Equal(t, 1, created)
		require.Len(t, ids, 1)
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM loan WHERE loan_no = $1", in.LoanNo))
		require.EqualValues(t, 7_000, b.used(t, borrower))
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", lending.DisbursementKey(in.LoanNo)))
	})
}

func TestListLoans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d1, d2 := b.ID("d1"), b.ID("d2")
	b.line(t, d1, 100_000, "CNY")
	b.line(t, d2, 100_000, "CNY")
	var mine []int64
	for i := range 3 {
		mine = append(mine, b.loan(t, loanInput(d1, b.ID(fmt.Sprintf("A%d", i)), 100)).ID)
	}
	theirs := b.loan(t, loanInput(d2, b.ID("B0"), 100))
	b.repay(t, theirs.ID, "all", "DEALER", 100, "2026-02-01")

	ids := func(ls []*lending.Loan) []int64 {
		out := make([]int64, len(ls))
		for i, l := range ls {
			out[i] = l.ID
		}
		return out
	}
	got, err := b.svc.ListLoans(b.Ctx, lending.LoanFilter{BorrowerID: d1, Limit: 50})
	require.NoError(t, err)
	require.Equal(t, []int64{mine[2], mine[1], mine[0]}, ids(got), "newest first")

	got, err = b.svc.ListLoans(b.Ctx, lending.LoanFilter{BorrowerID: d1, Limit: 2, BeforeID: mine[2]})
	require.NoError(t, err)
	require.Equal(t, []int64{mine[1], mine[0]}, ids(got))

	got, err = b.svc.ListLoans(b.Ctx, lending.LoanFilter{BorrowerID: d2, Status: lending.StatusRepaid, Limit: 50})
	require.NoError(t, err)
	require.Equal(t, []int64{theirs.ID}, ids(got))
	got, err = b.svc.ListLoans(b.Ctx, lending.LoanFilter{BorrowerID: d2, Status: lending.StatusActive, Limit: 50})
	require.NoError(t, err)
	require.Empty(t, got)

	_, err = b.svc.ListLoans(b.Ctx, lending.LoanFilter{Status: "PAID", Limit: 50})
	requireCode(t, err, riverbank.EINVALID)
	_, err = b.svc.ListLoans(b.Ctx, lending.LoanFilter{BorrowerID: "a b", Limit: 50})
	requireCode(t, err, riverbank.EINVALID)
}

func TestRepay(t *testing.T) {
	t.Parallel()

	t.Run("DealerPaysPenaltyLateFeeInterestThenPrincipal", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, splitInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 100, 50, 200, 70)

		steps := []struct {
			name       string
			payer      string
			amount     int64
			postings   map[string]int64
			status     string
			owedAfter  [5]int64 // penalty, late fee, dealer interest, manufacturer interest, principal
			restoreJob bool
		}{
			{"PenaltyThenLateFee", "DEALER", 120, map[string]int64{
				ledger.AccountPlatformCash: 120, ledger.AccountLoansPenalty: -100, ledger.AccountLoansLateFee: -20,
			}, lending.StatusActive, [5]int64{0, 30, 200, 70, 1_000}, false},
			{"LateFeeThenInterestThenPrincipal", "DEALER", 250, map[string]int64{
				ledger.AccountPlatformCash: 250, ledger.AccountLoansLateFee: -30, ledger.AccountLoansInterestDealer: -200, ledger.AccountLoansPrincipal: -20,
			}, lending.StatusActive, [5]int64{0, 0, 0, 70, 980}, true},
			{"RestOfPrincipalLeavesManufacturerInterest", "DEALER", 980, map[string]int64{
				ledger.AccountPlatformCash: 980, ledger.AccountLoansPrincipal: -980,
			}, lending.StatusActive, [5]int64{0, 0, 0, 70, 0}, true},
			{"ManufacturerClearsTheLoan", "MANUFACTURER", 70, map[string]int64{
				ledger.AccountPlatformCash: 70, ledger.AccountLoansInterestManufacturer: -70,
			}, lending.StatusRepaid, [5]int64{0, 0, 0, 0, 0}, false},
		}
		var withPrincipal []int64
		for i, s := range steps {
			r := b.repay(t, l.ID, fmt.Sprintf("pay-%d", i), s.payer, s.amount, "2026-02-01")
			a := r.Allocation()
			require.Equal(t, s.amount, a.Total(), s.name)
			require.Equal(t, map[string]int64{}, diff(s.postings, b.postings(t, r.LedgerEntryID, "CNY")), s.name)
			// The allocation is the entry's credits, component by component.
			require.Equal(t, -s.postings[ledger.AccountLoansPenalty], a.PenaltyMinor, s.name)
			require.Equal(t, -s.postings[ledger.AccountLoansLateFee], a.LateFeeMinor, s.name)
			require.Equal(t, -s.postings[ledger.AccountLoansInterestDealer], a.InterestDealerMinor, s.name)
			require.Equal(t, -s.postings[ledger.AccountLoansInterestManufacturer], a.InterestManufacturerMinor, s.name)
			require.Equal(t, -s.postings[ledger.AccountLoansPrincipal], a.PrincipalMinor, s.name)

			got := b.getLoan(t, l.ID)
			require.Equal(t, s.owedAfter, [5]int64{got.PenaltyOutstandingMinor, got.LateFeeOutstandingMinor, got.InterestOutstandingDealerMinor,
				got.InterestOutstandingManufacturerMinor, got.PrincipalOutstandingMinor}, s.name)
			require.Equal(t, s.status, string(got.Status), s.name)
			require.Equal(t, got.Loan, r.Loan.Loan, "the repayment returns the loan after it")
			require.Equal(t, s.status == lending.StatusRepaid, got.RepaidAt != nil, s.name)
			if s.restoreJob {
				withPrincipal = append(withPrincipal, r.ID)
			}
			if i == 2 {
				// Principal is paid but the manufacturer still owes: the
				// dealer has nothing left to pay.
				_, _, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "dealer-extra", Payer: "DEALER", AmountMinor: 1})
				de := requireCode(t, err, riverbank.EOVERPAYMENT)
				require.EqualValues(t, 0, de.Details["owed_minor"])
			}
		}
		// Credit is restored by the job, not by the repayment.
		require.EqualValues(t, 1_000, b.used(t, borrower))
		jobs := rivertest.RequireManyInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, []rivertest.ExpectedJob{
			{Args: lending.RestoreArgs{}, Opts: &rivertest.RequireInsertedOpts{MaxAttempts: 10}},
			{Args: lending.RestoreArgs{}, Opts: &rivertest.RequireInsertedOpts{MaxAttempts: 10}},
		})
		for i, j := range jobs {
			var args lending.RestoreArgs
			require.NoError(t, json.Unmarshal(j.EncodedArgs, &args))
			require.Equal(t, withPrincipal[i], args.RepaymentID)
		}

		reps, err := b.svc.ListRepayments(b.Ctx, l.ID, 0, 50)
		require.NoError(t, err)
		require.Len(t, reps, 4)
		for i, r := range reps {
			require.Equal(t, fmt.Sprintf("pay-%d", i), r.Identifier)
			require.Equal(t, "2026-02-01", r.ValueDate.Format(lending.DateLayout))
		}
		reps, err = b.svc.ListRepayments(b.Ctx, l.ID, reps[1].ID, 1)
		require.NoError(t, err)
		require.Len(t, reps, 1)
		require.Equal(t, "pay-2", reps[0].Identifier)
		_, err = b.svc.ListRepayments(b.Ctx, l.ID+1_000_000, 0, 50)
		requireCode(t, err, riverbank.ENOTFOUND)

		// A repaid loan owes nothing to anyone.
		before := b.writes(t)
		for _, payer := range []string{"DEALER", "MANUFACTURER"} {
			_, _, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "late-" + payer, Payer: payer, AmountMinor: 1})
			requireCode(t, err, riverbank.EOVERPAYMENT)
		}
		require.Equal(t, before, b.writes(t))
	})

	t.Run("FullRepaymentAtOnceRepaysTheLoan", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 100, 50, 200, 0)
		r := b.repay(t, l.ID, "all", "DEALER", 1_350, "")
		require.Equal(t, rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 50, InterestDealerMinor: 200, PrincipalMinor: 1_000}, r.Allocation())
		got := b.getLoan(t, l.ID)
		require.Equal(t, lending.StatusRepaid, string(got.Status))
		require.NotNil(t, got.RepaidAt)
		require.Zero(t, got.DaysPastDue)
		require.Equal(t, b.svc.Today(), r.ValueDate, "value_date defaults to today")
	})

	t.Run("ManufacturerPaysOnlyManufacturerInterest", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, splitInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 100, 50, 200, 70)

		r := b.repay(t, l.ID, "m-1", "MANUFACTURER", 30, "2026-02-01")
		require.Equal(t, rules.Allocation{InterestManufacturerMinor: 30}, r.Allocation(), "manufacturer interest and nothing else")
		require.Equal(t, map[string]int64{ledger.AccountPlatformCash: 30, ledger.AccountLoansInterestManufacturer: -30},
			b.postings(t, r.LedgerEntryID, "CNY"))
		rivertest.RequireNotInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, &lending.RestoreArgs{}, nil)

		before := b.writes(t)
		_, _, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "m-2", Payer: "MANUFACTURER", AmountMinor: 41, ValueDate: "2026-02-01"})
		de := requireCode(t, err, riverbank.EOVERPAYMENT)
		require.EqualValues(t, 40, de.Details["owed_minor"])
		require.Equal(t, before, b.writes(t))

		got := b.getLoan(t, l.ID)
		require.Equal(t, [5]int64{100, 50, 200, 40, 1_000}, [5]int64{got.PenaltyOutstandingMinor, got.LateFeeOutstandingMinor,
			got.InterestOutstandingDealerMinor, got.InterestOutstandingManufacturerMinor, got.PrincipalOutstandingMinor})
	})

	t.Run("OverpaymentWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, splitInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 100, 50, 200, 70)
		before := b.writes(t)
		// The dealer owes 1,350; the manufacturer's 70 is not the dealer's.
		_, _, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "too-much", Payer: "DEALER", AmountMinor: 1_351, ValueDate: "2026-02-01"})
		de := requireCode(t, err, riverbank.EOVERPAYMENT)
		require.EqualValues(t, 1_350, de.Details["owed_minor"])
		require.Equal(t, before, b.writes(t))
		got := b.getLoan(t, l.ID)
		require.Equal(t, l.UpdatedAt, got.UpdatedAt, "the loan is untouched")
		require.EqualValues(t, 1_000, got.PrincipalOutstandingMinor)

		// The identifier was not used up by the refusal.
		r := b.repay(t, l.ID, "too-much", "DEALER", 1_350, "2026-02-01")
		require.Equal(t, lending.StatusActive, string(r.Loan.Status), "manufacturer interest is still owed")
	})

	t.Run("ValueDateRules", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name       string
			valueDate  func(today time.Time) string
			lastClosed string
			code       string
			details    map[string]any
		}{
			{"FutureIsInvalid", func(today time.Time) string { return today.AddDate(0, 0, 1).Format(lending.DateLayout) }, "",
				riverbank.EINVALID, map[string]any{"field": "value_date"}},
			{"BeforeStartIsInvalid", func(time.Time) string { return "2026-01-04" }, "",
				riverbank.EINVALID, map[string]any{"field": "value_date"}},
			{"MalformedIsInvalid", func(time.Time) string { return "2026-2-1" }, "",
				riverbank.EINVALID, map[string]any{"field": "value_date"}},
			{"NotADayIsInvalid", func(time.Time) string { return "2026-02-30" }, "",
				riverbank.EINVALID, map[string]any{"field": "value_date"}},
			{"LastClosedDateIsNotOpen", func(time.Time) string { return "2026-03-31" }, "2026-03-31",
				riverbank.EDATENOTOPEN, map[string]any{"first_open_date": "2026-04-01"}},
			{"BeforeLastClosedDateIsNotOpen", func(time.Time) string { return "2026-02-01" }, "2026-03-31",
				riverbank.EDATENOTOPEN, map[string]any{"first_open_date": "2026-04-01"}},
			{"FirstOpenDateIsAccepted", func(time.Time) string { return "2026-04-01" }, "2026-03-31", "", nil},
			{"StartDateIsAccepted", func(time.Time) string { return startDate }, "", "", nil},
			{"TodayIsAccepted", func(today time.Time) string { return today.Format(lending.DateLayout) }, "", "", nil},
			{"EmptyIsTodayAndOpen", func(time.Time) string { return "" }, "2026-03-31", "", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				borrower := b.ID("dealer")
				b.line(t, borrower, 10_000, "CNY")
				l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
				if tt.lastClosed != "" {
					b.setLastClosedDate(t, l.ID, tt.lastClosed)
				}
				before := b.writes(t)
				r, created, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "p", Payer: "DEALER", AmountMinor: 100, ValueDate: tt.valueDate(b.svc.Today())})
				if tt.code == "" {
					require.NoError(t, err)
					require.True(t, created)
					want := tt.valueDate(b.svc.Today())
					if want == "" {
						want = b.svc.Today().Format(lending.DateLayout)
					}
					require.Equal(t, want, r.ValueDate.Format(lending.DateLayout))
					return
				}
				de := requireCode(t, err, tt.code)
				for k, v := range tt.details {
					require.EqualValues(t, v, de.Details[k], "details[%s]", k)
				}
				require.Equal(t, before, b.writes(t))
			})
		}
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		valid := lending.RepaymentInput{LoanID: l.ID, Identifier: "p", Payer: "DEALER", AmountMinor: 100, ValueDate: "2026-02-01"}
		tests := []struct {
			name string
			mut  func(in *lending.RepaymentInput)
			code string
		}{
			{"IdentifierEmpty", func(in *lending.RepaymentInput) { in.Identifier = "" }, riverbank.EINVALID},
			{"IdentifierTooLong", func(in *lending.RepaymentInput) { in.Identifier = strings.Repeat("x", lending.MaxIdentLen+1) }, riverbank.EINVALID},
			{"IdentifierWithNUL", func(in *lending.RepaymentInput) { in.Identifier = "p\x00" }, riverbank.EINVALID},
			{"IdentifierNotUTF8", func(in *lending.RepaymentInput) { in.Identifier = "p\xff" }, riverbank.EINVALID},
			{"PayerUnknown", func(in *lending.RepaymentInput) { in.Payer = "BANK" }, riverbank.EINVALID},
			{"PayerLowerCase", func(in *lending.RepaymentInput) { in.Payer = "dealer" }, riverbank.EINVALID},
			{"AmountZero", func(in *lending.RepaymentInput) { in.AmountMinor = 0 }, riverbank.EINVALID},
			{"AmountNegative", func(in *lending.RepaymentInput) { in.AmountMinor = -5 }, riverbank.EINVALID},
			{"AmountOverMax", func(in *lending.RepaymentInput) { in.AmountMinor = lending.MaxAmountMinor + 1 }, riverbank.EINVALID},
			{"UnknownLoan", func(in *lending.RepaymentInput) { in.LoanID += 1_000_000 }, riverbank.ENOTFOUND},
		}
		before := b.writes(t)
		for _, tt := range tests {
			in := valid
			tt.mut(&in)
			_, _, err := b.svc.Repay(b.Ctx, in)
			require.Equal(t, tt.code, riverbank.ErrorCode(err), "%s: %v", tt.name, err)
		}
		require.Equal(t, before, b.writes(t))
		// The longest identifier is accepted.
		b.repay(t, l.ID, strings.Repeat("é", lending.MaxIdentLen), "DEALER", 1, "2026-02-01")
	})

	t.Run("IdentifierReplayReturnsTheOriginal", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		in := lending.RepaymentInput{LoanID: l.ID, Identifier: "bank-tx-1", Payer: "DEALER", AmountMinor: 300, ValueDate: "2026-02-01"}
		first, created, err := b.svc.Repay(b.Ctx, in)
		require.NoError(t, err)
		require.True(t, created)
		before := b.writes(t)

		again, created, err := b.svc.Repay(b.Ctx, in)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, first.ID, again.ID)
		require.Equal(t, first.Allocation(), again.Allocation())
		require.Equal(t, first.LedgerEntryID, again.LedgerEntryID)
		require.EqualValues(t, 700, again.Loan.PrincipalOutstandingMinor)
		require.Equal(t, before, b.writes(t), "a replay writes nothing")

		for name, mut := range map[string]func(in *lending.RepaymentInput){
			"OtherAmount":    func(in *lending.RepaymentInput) { in.AmountMinor = 301 },
			"OtherPayer":     func(in *lending.RepaymentInput) { in.Payer = "MANUFACTURER" },
			"OtherValueDate": func(in *lending.RepaymentInput) { in.ValueDate = "2026-02-02" },
		} {
			other := in
			mut(&other)
			_, _, err := b.svc.Repay(b.Ctx, other)
			de := requireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
			require.EqualValues(t, first.ID, de.Details["repayment_id"], name)
		}
		require.Equal(t, before, b.writes(t))

		// The identifier is per loan: another loan may use it.
		l2 := b.loan(t, loanInput(borrower, b.ID("L-2"), 1_000))
		in.LoanID = l2.ID
		r2, created, err := b.svc.Repay(b.Ctx, in)
		require.NoError(t, err)
		require.True(t, created)
		require.NotEqual(t, first.ID, r2.ID)
	})

	t.Run("RestoreJobOnlyWhenPrincipalIsPaid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 100, 0, 0, 0)

		b.repay(t, l.ID, "penalty-only", "DEALER", 100, "2026-02-01")
		rivertest.RequireNotInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, &lending.RestoreArgs{}, nil)

		r := b.repay(t, l.ID, "principal", "DEALER", 400, "2026-02-01")
		require.EqualValues(t, 400, r.PrincipalMinor)
		job := rivertest.RequireInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, &lending.RestoreArgs{RepaymentID: r.ID},
			&rivertest.RequireInsertedOpts{MaxAttempts: b.Config.CreditRestoreMaxAttempts, Queue: "default"})
		require.Equal(t, r.ID, job.Args.RepaymentID)
		require.Equal(t, lending.KindCreditRestore, job.Kind)
	})

	t.Run("ConcurrentReplaysRepayOnce", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		borrower := "dealer-repay"
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, "L-race", 1_000))
		in := lending.RepaymentInput{LoanID: l.ID, Identifier: "bank-tx-race", Payer: "DEALER", AmountMinor: 300, ValueDate: "2026-02-01"}

		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			ids     = map[int64]int{}
			errs    []error
		)
		start := make(chan struct{})
		for range 20 {
			wg.Go(func() {
				<-start
				r, c, err := b.svc.Repay(b.Ctx, in)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[r.ID]++
				if c {
					created++
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.Equal(t, 1, created)
		require.Len(t, ids, 1)
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM repayment WHERE loan_id = $1", l.ID))
		require.EqualValues(t, 700, b.getLoan(t, l.ID).PrincipalOutstandingMinor, "outstanding reduced once")
		require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM ledger_entry"), "one disbursement, one repayment")
		for id := range ids {
			rivertest.RequireInserted(b.Ctx, t, riverpgxv5.New(b.Pool), &lending.RestoreArgs{RepaymentID: id}, nil)
		}
	})
}

// TestRepayConcurrentlyNeverOverpays: many payers with distinct
// identifiers race for one loan; its repayments are serialised on the
// loan's lock, so exactly what is owed is accepted, the rest is refused as
// overpayment, and the loan ends REPAID with one restoration job per
// repayment (every repayment here pays principal).
func TestRepayConcurrentlyNeverOverpays(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	const borrower = "dealer-many"
	b.line(t, borrower, 10_000, "CNY")
	l := b.loan(t, loanInput(borrower, "L-many", 1_000))

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		ok, over  int
		errs      []error
		principal int64
	)
	start := make(chan struct{})
	for i := range 20 {
		wg.Go(func() {
			<-start
			r, created, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: fmt.Sprintf("p-%02d", i), Payer: "DEALER", AmountMinor: 100, ValueDate: "2026-02-01"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && created:
				ok++
				principal += r.PrincipalMinor
			case riverbank.ErrorCode(err) == riverbank.EOVERPAYMENT:
				over++
			default:
				errs = append(errs, fmt.Errorf("created=%v: %w", created, err))
			}
		})
	}
	close(start)
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, 10, ok)
	require.Equal(t, 10, over)
	require.EqualValues(t, 1_000, principal)

	got := b.getLoan(t, l.ID)
	require.Equal(t, lending.StatusRepaid, string(got.Status))
	require.Zero(t, got.PrincipalOutstandingMinor)
	require.EqualValues(t, 1_000, b.Count(t, "SELECT coalesce(sum(principal_minor), 0)::bigint FROM repayment WHERE loan_id = $1", l.ID))
	require.EqualValues(t, 10, b.Count(t, "SELECT count(*) FROM repayment WHERE loan_id = $1", l.ID))
	require.EqualValues(t, 11, b.Count(t, "SELECT count(*) FROM ledger_entry"), "one disbursement, ten repayments")
	expected := make([]rivertest.ExpectedJob, 10)
	for i := range expected {
		expected[i] = rivertest.ExpectedJob{Args: lending.RestoreArgs{}}
	}
	rivertest.RequireManyInserted(b.Ctx, t, riverpgxv5.New(b.Pool), expected)
}

// TestLoansAndRestoresConcurrently: new loans take credit while
// restorations give repaid principal back, on one line; used stays exactly
// the principal lent minus the principal restored, and never passes the
// limit.
func TestLoansAndRestoresConcurrently(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	const borrower = "dealer-mixed"
	b.line(t, borrower, 5_000, "CNY")
	var reps []int64
	for i := range 5 {
		l := b.loan(t, loanInput(borrower, fmt.Sprintf("L-old-%d", i), 1_000))
		reps = append(reps, b.repay(t, l.ID, "all", "DEALER", 1_000, "2026-02-01").ID)
	}
	require.EqualValues(t, 5_000, b.used(t, borrower))

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		loans int
		errs  []error
	)
	start := make(chan struct{})
	for _, id := range reps {
		wg.Go(func() {
			<-start
			_, err := b.svc.Restore(b.Ctx, id)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	for i := range 10 {
		wg.Go(func() {
			<-start
			_, _, err := b.svc.CreateLoan(b.Ctx, loanInput(borrower, fmt.Sprintf("L-new-%d", i), 1_000))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				loans++
			case riverbank.ErrorCode(err) != riverbank.EINSUFFICIENTCREDIT:
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	require.Empty(t, errs)
	require.LessOrEqual(t, loans, 5)

	var lent, restored, used, limit int64
	require.NoError(t, b.Pool.QueryRow(b.Ctx, `SELECT (SELECT coalesce(sum(principal_minor), 0)::bigint FROM loan WHERE borrower_id = $1),
		(SELECT coalesce(sum(amount_minor), 0)::bigint FROM credit_restoration WHERE borrower_id = $1), used_minor, limit_minor
		FROM credit_line WHERE borrower_id = $1`, borrower).Scan(&lent, &restored, &used, &limit))
	require.EqualValues(t, 5_000, restored)
	require.Equal(t, lent-restored, used)
	require.LessOrEqual(t, used, limit)
	require.EqualValues(t, 1_000*loans, used)
}

func TestRestore(t *testing.T) {
	t.Parallel()

	// repaid sets up a loan of 1,000 with 400 of principal repaid.
	repaid := func(t *testing.T, b *testBundle) (borrower string, rep *lending.Repayment) {
		t.Helper()
		borrower = b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		return borrower, b.repay(t, l.ID, "p-1", "DEALER", 400, "2026-02-01")
	}

	t.Run("RestoresPrincipalOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower, rep := repaid(t, b)
		require.EqualValues(t, 1_000, b.used(t, borrower))

		res, err := b.svc.Restore(b.Ctx, rep.ID)
		require.NoError(t, err)
		require.Equal(t, lending.RestoreResult{Restored: 400}, res)
		require.EqualValues(t, 600, b.used(t, borrower))

		res, err = b.svc.Restore(b.Ctx, rep.ID)
		require.NoError(t, err)
		require.Equal(t, lending.RestoreResult{Already: true}, res)
		require.EqualValues(t, 600, b.used(t, borrower))
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_restoration WHERE repayment_id = $1", rep.ID))
		require.EqualValues(t, 400, b.Count(t, "SELECT amount_minor FROM credit_restoration WHERE repayment_id = $1", rep.ID))
	})

	t.Run("FrozenLineRestoresNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower, rep := repaid(t, b)
		b.setFrozen(t, borrower, true)
		before := b.writes(t)

		_, err := b.svc.Restore(b.Ctx, rep.ID)
		require.ErrorIs(t, err, lending.ErrCreditLineFrozen)
		require.Equal(t, before, b.writes(t))
		require.EqualValues(t, 1_000, b.used(t, borrower))

		b.setFrozen(t, borrower, false)
		res, err := b.svc.Restore(b.Ctx, rep.ID)
		require.NoError(t, err)
		require.EqualValues(t, 400, res.Restored)
		require.EqualValues(t, 600, b.used(t, borrower))

		// Once restored, a frozen line does not matter: nothing is left to do.
		b.setFrozen(t, borrower, true)
		res, err = b.svc.Restore(b.Ctx, rep.ID)
		require.NoError(t, err)
		require.True(t, res.Already)
		require.EqualValues(t, 600, b.used(t, borrower))
	})

	t.Run("NothingToRestoreWithoutPrincipal", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		borrower := b.ID("dealer")
		b.line(t, borrower, 10_000, "CNY")
		l := b.loan(t, loanInput(borrower, b.ID("L-1"), 1_000))
		b.setOutstanding(t, l.ID, 50, 0, 0, 0)
		rep := b.repay(t, l.ID, "p-1", "DEALER", 50, "2026-02-01")
		before := b.writes(t)
		res, err := b.svc.Restore(b.Ctx, rep.ID)
		require.NoError(t, err)
		require.Equal(t, lending.RestoreResult{}, res)
		require.Equal(t, before, b.writes(t))
	})

	t.Run("UnknownRepaymentIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.svc.Restore(b.Ctx, 1<<62)
		requireCode(t, err, riverbank.ENOTFOUND)
	})

	t.Run("ConcurrentRestoresRestoreOnce", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		borrower, rep := repaid(t, b)

		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			restored int64
			already  int
			errs     []error
		)
		start := make(chan struct{})
		for range 20 {
			wg.Go(func() {
				<-start
				res, err := b.svc.Restore(b.Ctx, rep.ID)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				restored += res.Restored
				if res.Already {
					already++
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.EqualValues(t, 400, restored)
		require.Equal(t, 19, already)
		require.EqualValues(t, 600, b.used(t, borrower))
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_restoration"))
	})

	t.Run("RetryDelayDoublesUpToAnHour", func(t *testing.T) {
		t.Parallel()
		svc := lending.NewService(nil, lending.Options{RestoreBackoff: 50 * time.Millisecond})
		require.Equal(t, 50*time.Millisecond, svc.RestoreRetryDelay(1))
		require.Equal(t, 100*time.Millisecond, svc.RestoreRetryDelay(2))
		require.Equal(t, 400*time.Millisecond, svc.RestoreRetryDelay(4))
		def := lending.NewService(nil, lending.Options{})
		require.Equal(t, time.Minute, def.RestoreRetryDelay(1))
		require.Equal(t, 32*time.Minute, def.RestoreRetryDelay(6))
		require.Equal(t, time.Hour, def.RestoreRetryDelay(7))
		require.Equal(t, time.Hour, def.RestoreRetryDelay(1000))
	})
}

// diff returns the accounts whose amounts differ between want and got.
func diff(want, got map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range want {
		if got[k] != v {
			out[k] = got[k] - v
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			out[k] = v
		}
	}
	return out
}
