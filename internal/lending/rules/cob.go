package rules

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

const (
	// bpsPerUnit is basis points in a whole: a rate or share of 10000 bps is
	// 100%.
	bpsPerUnit = 10_000
	// daysPerYear is the day count of daily accrual (Actual/365 Fixed): a
	// day's interest is the annual rate over 365 in leap years too, so a
	// daily amount never depends on the year.
	daysPerYear = 365
	// yearBps is the denominator of the daily formulas.
	yearBps = bpsPerUnit * daysPerYear
)

// MaxLateFeeDay is the latest allowed late-fee day of the month. Every month
// has a day 28, so a late-fee day of 29 to 31 would skip February and leave
// January's interest not overdue until March; the functions below panic on
// such a day rather than compute that.
const MaxLateFeeDay = 28

// RoundHalfEvenDiv returns a × b / den rounded to the nearest integer, ties
// to the even one (banker's rounding, so rounding errors over many daily
// accruals do not drift one way). The product is computed in 128 bits, so it
// never overflows in between.
//
// It panics if a or b is negative, den is not positive, or the result does
// not fit in an int64. Its inputs are stored balances and configured rates
// that are validated non-negative before they get here, so any of those is
// a programming error, and an error return would force every caller to
// handle a case that cannot happen.
//
// Note for the SQL side: Postgres round(numeric) rounds ties away from zero,
// so it cannot implement this function on its own.
func RoundHalfEvenDiv(a, b, den int64) int64 {
	if a < 0 || b < 0 || den <= 0 {
		panic(fmt.Sprintf("rules: RoundHalfEvenDiv(%d, %d, %d): negative operand or non-positive denominator", a, b, den))
	}
	q, ok := mulDivHalfEven(uint64(a), uint64(b), uint64(den))
	if !ok || q > math.MaxInt64 {
		panic(fmt.Sprintf("rules: RoundHalfEvenDiv(%d, %d, %d): result overflows int64", a, b, den))
	}
	return int64(q)
}

// mulDivHalfEven returns round_half_even(a × b / den) for den > 0 and false
// if it does not fit in a uint64.
func mulDivHalfEven(a, b, den uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	if hi >= den {
		return 0, false // the quotient needs more than 64 bits
	}
	q, r := bits.Div64(hi, lo, den)
	// Compare r with den/2 without overflow: r < den, so den-r > 0.
	switch half := den - r; {
	case r > half, r == half && q%2 == 1:
		if q == math.MaxUint64 {
			return 0, false
		}
		q++
	}
	return q, true
}

// DailyInterest returns one day's interest on principalMinor at
// annualRateBps: round_half_even(P × rate / (10000 × 365)). It panics like
// RoundHalfEvenDiv on negative inputs.
func DailyInterest(principalMinor, annualRateBps int64) int64 {
	return RoundHalfEvenDiv(principalMinor, annualRateBps, yearBps)
}

// SplitInterest splits a day's interest between the manufacturer, who gets
// round_half_even(interest × share / 10000), and the dealer, who gets the
// rest, so the two parts always sum to interestMinor and no minor unit is
// created or lost.
//
// A loan in interest mode DEALER passes share 0 (the dealer pays all), one in
// mode MANUFACTURER passes 10000 (the manufacturer pays all), and a SPLIT
// loan passes its configured share. It panics if interestMinor is negative
// or the share is outside [0, 10000].
func SplitInterest(interestMinor, manufacturerShareBps int64) (dealer, manufacturer int64) {
	if manufacturerShareBps < 0 || manufacturerShareBps > bpsPerUnit {
		panic(fmt.Sprintf("rules: SplitInterest: manufacturer share %d bps outside [0, %d]", manufacturerShareBps, bpsPerUnit))
	}
	manufacturer = RoundHalfEvenDiv(interestMinor, manufacturerShareBps, bpsPerUnit)
	return interestMinor - manufacturer, manufacturer
}

// DailyPenalty returns one day's penalty on what is overdue:
// round_half_even((overdue interest + overdue principal) × rate /
// (10000 × 365)). The sum is taken in 128-bit arithmetic with the rest, so
// it cannot overflow. It panics on negative inputs or an int64 overflow of
// the result, like RoundHalfEvenDiv.
func DailyPenalty(overdueInterestMinor, overduePrincipalMinor, penaltyRateBps int64) int64 {
	if overdueInterestMinor < 0 || overduePrincipalMinor < 0 || penaltyRateBps < 0 {
		panic(fmt.Sprintf("rules: DailyPenalty(%d, %d, %d): negative input", overdueInterestMinor, overduePrincipalMinor, penaltyRateBps))
	}
	// Two non-negative int64s always fit in a uint64.
	overdue := uint64(overdueInterestMinor) + uint64(overduePrincipalMinor)
	q, ok := mulDivHalfEven(overdue, uint64(penaltyRateBps), yearBps)
	if !ok || q > math.MaxInt64 {
		panic(fmt.Sprintf("rules: DailyPenalty(%d, %d, %d): result overflows int64", overdueInterestMinor, overduePrincipalMinor, penaltyRateBps))
	}
	return int64(q)
}

// Cutoff returns the last day of the latest month whose dealer interest is
// overdue at close of business on d. Interest for a month is due by the
// late-fee day of the next month, and close of business on that day is when
// it becomes overdue: so from the late-fee day on, the cutoff is the last day
// of the previous month, and before it, the last day of the month before
// that.
//
// Dates are civil dates: d's year, month and day are read in d's own
// location, and the result is midnight UTC. It panics if lateFeeDay is
// outside [1, MaxLateFeeDay].
func Cutoff(d time.Time, lateFeeDay int) time.Time {
	checkLateFeeDay(lateFeeDay)
	y, m, day := d.Date()
	if day >= lateFeeDay {
		// Day 0 of month m is the last day of month m-1; time.Date
		// normalises across year boundaries.
		return time.Date(y, m, 0, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(y, m-1, 0, 0, 0, 0, 0, time.UTC)
}

// IsLateFeeDay reports whether d is the day of the month on which late fees
// are charged and the previous month's interest turns overdue. It panics if
// lateFeeDay is outside [1, MaxLateFeeDay].
func IsLateFeeDay(d time.Time, lateFeeDay int) bool {
	checkLateFeeDay(lateFeeDay)
	return d.Day() == lateFeeDay
}

// MonthStart returns the first day of d's month at midnight UTC: close of
// business books a day's interest to the month that starts there. Like
// Cutoff, it reads d's civil date in d's own location.
func MonthStart(d time.Time) time.Time {
	y, m, _ := d.Date()
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}

func checkLateFeeDay(day int) {
	if day < 1 || day > MaxLateFeeDay {
		panic(fmt.Sprintf("rules: late-fee day %d outside [1, %d]", day, MaxLateFeeDay))
	}
}
