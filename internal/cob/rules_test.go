package cob_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/cob"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/lending/rules"
)

// The tests in this file drive real runs (cob.Service.Start, then each
// chunk's RunChunk called directly, so the order is deterministic) over a
// few loans and check SPEC §7's formulas rule by rule. Principal 36.5M at
// 1,000 bps accrues exactly 10,000 a day, which keeps the expectations
// readable.

const (
	p10k = 36_500_000 // accrues 10,000 a day at 1,000 bps
	rate = 1000
)

func TestInterestRoundsHalfEvenDaily(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tests := []struct {
		name      string
		principal int64
		rateBps   int64
		want      int64
	}{
		{"exact daily interest", p10k, rate, 10_000},
		{"a half rounds down to even 0", 1825, rate, 0},
		{"a half rounds up to even 2", 5475, rate, 2},
		{"two and a half rounds down to even 2", 9125, rate, 2},
		{"just above a half rounds up", 1826, rate, 1},
		{"just below a half rounds down", 1824, rate, 0},
		{"zero rate accrues nothing", p10k, 0, 0},
		{"maximum rate", p10k, lending.MaxRateBps, 1_000_000},
		{"product beyond int64 is exact", lending.MaxAmountMinor, lending.MaxRateBps, 27_397_260_273_973},
		{"one minor unit at the maximum rate", 1, lending.MaxRateBps, 0},
	}
	ids := make([]int64, len(tests))
	for i, tt := range tests {
		borrower := fmt.Sprintf("b%d", i)
		b.creditLine(t, borrower, "CNY")
		in := dealerLoan(fmt.Sprintf("L%d", i), tt.principal, tt.rateBps, "2024-05-01", "2024-12-31")
		in.BorrowerID = borrower
		ids[i] = b.loan(t, in).ID
	}
	b.closeDates(t, "2024-05-01", "2024-05-02", nil)
	var total int64
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.DailyInterest(tt.principal, tt.rateBps), "the rules package disagrees with the table")
			l := b.getLoan(t, ids[i])
			require.Equal(t, 2*tt.want, l.InterestOutstandingDealerMinor)
			require.Equal(t, 2*tt.want, l.InterestDealerAccruedMinor)
			require.Zero(t, l.InterestOutstandingManufacturerMinor)
		})
		total += tt.want
	}
	run := b.getRun(t, day("2024-05-02"))
	require.Equal(t, []cob.Totals{{Currency: "CNY", InterestDealerMinor: total}}, run.Totals)
}

func TestSplitInterestRounding(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.creditLine(t, "b1", "CNY")
	tests := []struct {
		name             string
		mode             string
		shareBps         int64
		daily            int64 // the day's interest, principal 3,650 × daily at 1,000 bps
		wantDealer       int64
		wantManufacturer int64
	}{
		{"DEALER bears all", lending.ModeDealer, 0, 3, 3, 0},
		{"MANUFACTURER bears all", lending.ModeManufacturer, 0, 3, 0, 3},
		{"SPLIT half of 1 rounds to even 0", lending.ModeSplit, 5000, 1, 1, 0},
		{"SPLIT half of 3 rounds to even 2", lending.ModeSplit, 5000, 3, 1, 2},
		{"SPLIT half of 5 rounds to even 2", lending.ModeSplit, 5000, 5, 3, 2},
		{"SPLIT share 1 of 5000 is a half, rounds to 0", lending.ModeSplit, 1, 5000, 5000, 0},
		{"SPLIT share 1 of 15000 is 1.5, rounds to 2", lending.ModeSplit, 1, 15000, 14998, 2},
		{"SPLIT share 9999 of 1 rounds up to 1", lending.ModeSplit, 9999, 1, 0, 1},
		{"SPLIT share 9999 of 5000 is 4999.5, rounds to 5000", lending.ModeSplit, 9999, 5000, 0, 5000},
		{"SPLIT share 9999 of 15000 is 14998.5, rounds to 14998", lending.ModeSplit, 9999, 15000, 2, 14998},
		{"SPLIT share 3333 of 7 rounds down", lending.ModeSplit, 3333, 7, 5, 2},
		{"SPLIT of zero interest is zero", lending.ModeSplit, 9999, 0, 0, 0},
	}
	ids := make([]int64, len(tests))
	for i, tt := range tests {
		principal := 3650 * tt.daily
		if principal == 0 {
			principal = 1 // rounds to no interest at all
		}
		in := dealerLoan(fmt.Sprintf("L%d", i), principal, rate, "2024-05-01", "2024-12-31")
		if tt.mode != lending.ModeDealer {
			in = withMode(in, tt.mode, tt.shareBps)
		}
		ids[i] = b.loan(t, in).ID
	}
	b.closeDates(t, "2024-05-01", "2024-05-03", nil)
	var wantD, wantM int64
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			share := tt.shareBps
			if tt.mode == lending.ModeManufacturer {
				share = 10_000
			}
			d, m := rules.SplitInterest(tt.daily, share)
			require.Equal(t, [2]int64{tt.wantDealer, tt.wantManufacturer}, [2]int64{d, m}, "the rules package disagrees with the table")
			l := b.getLoan(t, ids[i])
			require.Equal(t, 3*tt.wantDealer, l.InterestOutstandingDealerMinor)
			require.Equal(t, 3*tt.wantManufacturer, l.InterestOutstandingManufacturerMinor)
			require.Equal(t, 3*tt.wantDealer, l.InterestDealerAccruedMinor)
		})
		wantD += tt.wantDealer
		wantM += tt.wantManufacturer
	}
	run := b.getRun(t, day("2024-05-03"))
	require.Equal(t, []cob.Totals{{Currency: "CNY", InterestDealerMinor: wantD, InterestManufacturerMinor: wantM}}, run.Totals)
}

// TestAccrualMonthRollover closes the days around a month of each length:
// a loan starting on the last day of the month before accrues one day
// there, every day of the month (including a leap day), and two days of
// the month after, which is still the loan's current month.
func TestAccrualMonthRollover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		month string // YYYY-MM
		days  int
	}{
		{"february of a common year has 28 days", "2023-02", 28},
		{"february of a leap year accrues on the 29th", "2024-02", 29},
		{"april has 30 days", "2024-04", 30},
		{"december has 31 days and rolls into the next year", "2024-12", 31},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{})
			b.creditLine(t, "b1", "CNY")
			first := day(tt.month + "-01")
			prev, next := first.AddDate(0, 0, -1), first.AddDate(0, 1, 0)
			// SPLIT 30%: 7,000 dealer and 3,000 manufacturer a day. The one
			// day of dealer interest of the month before (7,000) is overdue
			// from the 20th: a late fee of 100 then, and 7 of penalty a day
			// (3,650 bps is 1/1000 a day).
			in := withMode(dealerLoan("L1", p10k, rate, fmtDay(prev), fmtDay(next.AddDate(1, 0, 0))), lending.ModeSplit, 3000)
			in.PenaltyRateBps, in.LateFeeMinor = 3650, 100
			l := b.loan(t, in)
			b.closeDates(t, fmtDay(prev), fmtDay(next.AddDate(0, 0, 1)), func(d time.Time) {
				acc := b.accruals(t, l.ID)
				cur, ok := acc[d.Format("2006-01")]
				require.True(t, ok, "no accrual month for %s", fmtDay(d))
				require.True(t, cur.Current, "%s", fmtDay(d))
				from := rules.MonthStart(d) // the loan's first day in d's month
				if from.Before(prev) {
					from = prev
				}
				days := int64(d.Sub(from).Hours()/24) + 1
				require.Equal(t, days*7000, cur.InterestDealerMinor, "month-to-date dealer interest on %s", fmtDay(d))
			})
			require.Equal(t, db.CobRunStatusCOMPLETED, b.getRun(t, first.AddDate(0, 0, tt.days-1)).Status, "the month's last day has a run")

			acc := b.accruals(t, l.ID)
			require.Len(t, acc, 3)
			require.Equal(t, lending.MonthAccrual{Month: prev.AddDate(0, 0, 1-prev.Day()), InterestDealerMinor: 7000, InterestManufacturerMinor: 3000}, acc[prev.Format("2006-01")])
			overdueDays := int64(tt.days - 19)
			require.Equal(t, lending.MonthAccrual{Month: first, InterestDealerMinor: int64(tt.days) * 7000, InterestManufacturerMinor: int64(tt.days) * 3000,
				PenaltyMinor: overdueDays * 7, LateFeeMinor: 100}, acc[tt.month])
			require.Equal(t, lending.MonthAccrual{Month: next, InterestDealerMinor: 2 * 7000, InterestManufacturerMinor: 2 * 3000,
				PenaltyMinor: 2 * 7, Current: true}, acc[next.Format("2006-01")])

			got := b.getLoan(t, l.ID)
			totalDays := int64(tt.days + 3)
			require.Equal(t, totalDays*7000, got.InterestOutstandingDealerMinor)
			require.Equal(t, totalDays*7000, got.InterestDealerAccruedMinor)
			require.Equal(t, totalDays*3000, got.InterestOutstandingManufacturerMinor)
			require.Equal(t, (overdueDays+2)*7, got.PenaltyOutstandingMinor)
			require.EqualValues(t, 100, got.LateFeeOutstandingMinor)
			require.Equal(t, lending.StatusOverdue, string(got.Status))
			require.EqualValues(t, overdueDays+2, got.DaysPastDue)
			// The history has exactly the two finished months, written once.
			require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM loan_accrual_month WHERE loan_id = $1", l.ID))
		})
	}
}

// TestLateFeeDay follows four loans from January 1 through March 21 (late
// fee day 20). 10,000 dealer interest a day, penalty 3,650 bps (1/1000 of
// the overdue amount a day), late fee 5,000.
func TestLateFeeDay(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.creditLine(t, "b1", "CNY")
	mk := func(no, start string) int64 {
		in := dealerLoan(no, p10k, rate, start, "2024-12-31")
		in.PenaltyRateBps, in.LateFeeMinor = 3650, 5000
		return b.loan(t, in).ID
	}
	unpaid := mk("unpaid", "2024-01-01")
	paidEarly := mk("paid-value-feb-10", "2024-01-01")
	paidLate := mk("paid-value-feb-25", "2024-01-01")
	startsFeb := mk("starts-feb-5", "2024-02-05")
	const jan = 31 * 10_000

	states := map[string]map[int64]loanState{}
	b.closeDates(t, "2024-01-01", "2024-03-21", func(d time.Time) {
		states[fmtDay(d)] = map[int64]loanState{}
		for _, id := range []int64{unpaid, paidEarly, paidLate, startsFeb} {
			states[fmtDay(d)][id] = stateOf(b.getLoan(t, id))
		}
		if fmtDay(d) == "2024-02-09" {
			// January's dealer interest, paid after February 9 closed: one
			// value-dated February 10 (before the cutoff moves on the 20th),
			// one value-dated February 25 (after it).
			r := b.repay(t, paidEarly, "jan", "DEALER", jan, "2024-02-10")
			require.Equal(t, rules.Allocation{InterestDealerMinor: jan}, r.Allocation())
			r = b.repay(t, paidLate, "jan", "DEALER", jan, "2024-02-25")
			require.Equal(t, rules.Allocation{InterestDealerMinor: jan}, r.Allocation())
		}
		if fmtDay(d) == "2024-02-20" {
			// The late-fee day's chunks run again: nothing is charged twice.
			before := b.getRun(t, d)
			entries := b.entryCount(t, d)
			for _, c := range b.chunks(t, d) {
				res, err := b.Services.COB.RunChunk(b.Ctx, c)
				require.NoError(t, err)
				require.Equal(t, cob.ChunkResult{}, res)
			}
			require.Equal(t, before.Totals, b.getRun(t, d).Totals)
			require.Equal(t, entries, b.entryCount(t, d))
			require.Equal(t, states["2024-02-20"][unpaid], stateOf(b.getLoan(t, unpaid)))
		}
	})
	at := func(date string, id int64) loanState { return states[date][id] }
	// delta is what date added to a field (the day's accrual).
	delta := func(date string, id int64, f func(loanState) int64) int64 {
		return f(at(date, id)) - f(at(fmtDay(day(date).AddDate(0, 0, -1)), id))
	}
	fee := func(s loanState) int64 { return s.LateFee }
	pen := func(s loanState) int64 { return s.Penalty }

	t.Run("no fee before the late-fee day", func(t *testing.T) {
		t.Parallel()
		for _, id := range []int64{unpaid, paidEarly, paidLate, startsFeb} {
			require.Zero(t, at("2024-02-19", id).LateFee)
			require.Zero(t, at("2024-02-19", id).Penalty)
			require.Equal(t, lending.StatusActive, at("2024-02-19", id).Status)
		}
	})
	t.Run("unpaid interest of last month is charged the fee on the late-fee day, once", func(t *testing.T) {
		t.Parallel()
		require.EqualValues(t, 5000, delta("2024-02-20", unpaid, fee))
		require.EqualValues(t, 310, delta("2024-02-20", unpaid, pen)) // 310,000 overdue
		require.Equal(t, loanState{Status: lending.StatusOverdue, Principal: p10k, InterestDealer: 51 * 10_000, Penalty: 310, LateFee: 5000,
			DaysPastDue: 1, LastClosedDate: "2024-02-20", AccruedDealer: 51 * 10_000, MonthDealerAccr: 20 * 10_000}, at("2024-02-20", unpaid))
		require.Zero(t, delta("2024-02-21", unpaid, fee), "not on the 21st")
		require.EqualValues(t, 2, at("2024-02-21", unpaid).DaysPastDue)
		require.EqualValues(t, 5000, at("2024-03-19", unpaid).LateFee)
		require.EqualValues(t, 29*310, at("2024-03-19", unpaid).Penalty) // Feb 20 .. Mar 19
	})
	t.Run("still overdue next month: the fee is charged again on that month's day", func(t *testing.T) {
		t.Parallel()
		require.EqualValues(t, 5000, delta("2024-03-20", unpaid, fee))
		// Now January and February (29 days) are overdue: 600,000.
		require.EqualValues(t, 600, delta("2024-03-20", unpaid, pen))
		require.EqualValues(t, 600, delta("2024-03-21", unpaid, pen))
		require.Zero(t, delta("2024-03-21", unpaid, fee))
		require.EqualValues(t, 31, at("2024-03-21", unpaid).DaysPastDue)
	})
	t.Run("interest repaid with a value date before the cutoff moves is not overdue", func(t *testing.T) {
		t.Parallel()
		for _, d := range []string{"2024-02-20", "2024-02-21", "2024-03-19"} {
			require.Zero(t, at(d, paidEarly).LateFee, d)
			require.Zero(t, at(d, paidEarly).Penalty, d)
			require.Equal(t, lending.StatusActive, at(d, paidEarly).Status, d)
		}
		// February's interest (290,000) is unpaid on March 20.
		require.EqualValues(t, 5000, delta("2024-03-20", paidEarly, fee))
		require.EqualValues(t, 290, delta("2024-03-20", paidEarly, pen))
		require.Equal(t, lending.StatusOverdue, at("2024-03-20", paidEarly).Status)
	})
	t.Run("interest repaid with a value date after the cutoff moved is overdue until then", func(t *testing.T) {
		t.Parallel()
		for i, d := range []string{"2024-02-20", "2024-02-21", "2024-02-22", "2024-02-23", "2024-02-24"} {
			require.Equal(t, lending.StatusOverdue, at(d, paidLate).Status, d)
			require.EqualValues(t, i+1, at(d, paidLate).DaysPastDue, d)
			require.EqualValues(t, 310, delta(d, paidLate, pen), d)
		}
		require.EqualValues(t, 5000, at("2024-02-24", paidLate).LateFee)
		s := at("2024-02-25", paidLate)
		require.Equal(t, lending.StatusActive, s.Status, "cured on the value date")
		require.Zero(t, s.DaysPastDue)
		require.Zero(t, delta("2024-02-25", paidLate, pen))
		require.EqualValues(t, 5*310, s.Penalty)
		require.EqualValues(t, 5000, s.LateFee)
		// Overdue again on March 20 for February.
		require.Equal(t, lending.StatusOverdue, at("2024-03-20", paidLate).Status)
		require.EqualValues(t, 10_000, at("2024-03-20", paidLate).LateFee)
		require.EqualValues(t, 1, b.openItems(t, paidLate), "one open collection item")
		require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM collection_item WHERE loan_id = $1", paidLate), "the first was resolved")
	})
	t.Run("a loan with nothing due yet is charged nothing on the late-fee day", func(t *testing.T) {
		t.Parallel()
		require.Zero(t, at("2024-02-20", startsFeb).LateFee)
		require.Zero(t, at("2024-02-20", startsFeb).Penalty)
		require.Equal(t, lending.StatusActive, at("2024-02-20", startsFeb).Status)
		// Its first month (February 5..29) is overdue from March 20.
		require.EqualValues(t, 5000, delta("2024-03-20", startsFeb, fee))
		require.EqualValues(t, 250, delta("2024-03-20", startsFeb, pen))
	})
	t.Run("an overdue loan has exactly one open collection item", func(t *testing.T) {
		t.Parallel()
		require.EqualValues(t, 1, b.openItems(t, unpaid))
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM collection_item WHERE loan_id = $1", unpaid))
	})
}

// TestPenaltyAndValueDatedPrincipal: penalty on principal starts the day
// after the due date; P is the principal after repayments value-dated on
// or before the date, however early the repayment was booked.
func TestPenaltyAndValueDatedPrincipal(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.creditLine(t, "b1", "CNY")
	mk := func(no string) lending.LoanInput {
		in := dealerLoan(no, p10k, rate, "2024-03-01", "2024-03-10")
		in.PenaltyRateBps = 500 // 5,000 a day on 36.5M
		return in
	}
	plain := b.loan(t, mk("plain")).ID
	halfPaid := b.loan(t, mk("half-paid-value-mar-12")).ID
	split := b.loan(t, withMode(mk("split-principal-paid"), lending.ModeSplit, 5000)).ID

	states := map[string]map[int64]loanState{}
	b.closeDates(t, "2024-03-01", "2024-03-13", func(d time.Time) {
		states[fmtDay(d)] = map[int64]loanState{}
		for _, id := range []int64{plain, halfPaid, split} {
			states[fmtDay(d)][id] = stateOf(b.getLoan(t, id))
		}
		if fmtDay(d) == "2024-03-10" {
			// After the due date closed: the interest and half the
			// principal, value-dated two days later.
			r := b.repay(t, halfPaid, "half", "DEALER", 100_000+p10k/2, "2024-03-12")
			require.Equal(t, rules.Allocation{InterestDealerMinor: 100_000, PrincipalMinor: p10k / 2}, r.Allocation())
			// The dealer's interest and all the principal of the SPLIT
			// loan, value-dated the next day: the manufacturer's interest
			// is still owed.
			r = b.repay(t, split, "all", "DEALER", 50_000+p10k, "2024-03-11")
			require.Equal(t, rules.Allocation{InterestDealerMinor: 50_000, PrincipalMinor: p10k}, r.Allocation())
		}
	})
	at := func(date string, id int64) loanState { return states[date][id] }
	delta := func(date string, id int64, f func(loanState) int64) int64 {
		return f(at(date, id)) - f(at(fmtDay(day(date).AddDate(0, 0, -1)), id))
	}
	pen := func(s loanState) int64 { return s.Penalty }
	interest := func(s loanState) int64 { return s.AccruedDealer }

	t.Run("no penalty on the due date itself", func(t *testing.T) {
		t.Parallel()
		require.Zero(t, at("2024-03-10", plain).Penalty)
		require.Equal(t, lending.StatusActive, at("2024-03-10", plain).Status)
	})
	t.Run("penalty on principal from the day after the due date", func(t *testing.T) {
		t.Parallel()
		require.EqualValues(t, 5000, delta("2024-03-11", plain, pen))
		require.Equal(t, lending.StatusOverdue, at("2024-03-11", plain).Status)
		require.EqualValues(t, 3, at("2024-03-13", plain).DaysPastDue)
		require.EqualValues(t, 3*5000, at("2024-03-13", plain).Penalty)
	})
	t.Run("principal repaid ahead of its value date bears interest and penalty until then", func(t *testing.T) {
		t.Parallel()
		require.EqualValues(t, p10k/2, at("2024-03-11", halfPaid).Principal, "the outstanding principal drops when booked")
		require.EqualValues(t, 10_000, delta("2024-03-11", halfPaid, interest))
		require.EqualValues(t, 5000, delta("2024-03-11", halfPaid, pen))
		require.EqualValues(t, 5000, delta("2024-03-12", halfPaid, interest))
		require.EqualValues(t, 2500, delta("2024-03-12", halfPaid, pen))
		require.Equal(t, lending.StatusOverdue, at("2024-03-13", halfPaid).Status)
	})
	t.Run("past due with no principal left and only manufacturer interest owed is not overdue", func(t *testing.T) {
		t.Parallel()
		s := at("2024-03-11", split)
		require.Equal(t, lending.StatusActive, s.Status)
		require.Zero(t, s.DaysPastDue)
		require.Zero(t, s.Penalty)
		require.EqualValues(t, 50_000, s.InterestManu)
		require.Zero(t, delta("2024-03-11", split, interest))
		require.Equal(t, s.InterestManu, at("2024-03-13", split).InterestManu, "no principal, no interest")
		require.Equal(t, "2024-03-13", at("2024-03-13", split).LastClosedDate)
	})
}
