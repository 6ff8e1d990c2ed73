package rules_test

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/lending/rules"
)

func TestRoundHalfEvenDiv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		a, b, den int64
		want      int64
	}{
		{"TieTwoAndAHalfRoundsDownToEven", 5, 1, 2, 2}, // 2.5 → 2
		{"TieThreeAndAHalfRoundsUpToEven", 7, 1, 2, 4}, // 3.5 → 4
		{"TieOneHalfRoundsDownToZero", 1, 1, 2, 0},     // 0.5 → 0
		{"TieOneAndAHalfRoundsUpToTwo", 3, 1, 2, 2},    // 1.5 → 2
		{"TieOfProductRoundsDownToEven", 9, 5, 10, 4},  // 4.5 → 4
		{"TieOfProductRoundsUpToEven", 11, 5, 10, 6},   // 5.5 → 6
		{"JustBelowHalfRoundsDown", 149, 1, 100, 1},    // 1.49 → 1
		{"JustAboveHalfRoundsUp", 151, 1, 100, 2},      // 1.51 → 2
		{"ExactDivisionIsExact", 12, 3, 4, 9},
		{"ZeroNumeratorIsZero", 0, 123, 7, 0},
		{"ZeroFactorIsZero", 123, 0, 7, 0},
		{"DenominatorOneIsProduct", 1_000_000, 1_000_000, 1, 1_000_000_000_000},
		{"ProductBeyondInt64", math.MaxInt64, 4, 8, 1 << 62}, // (2^63-1)·4/8 = 2^62 - 0.5 → 2^62 (even)
		{"ProductBeyondUint64", math.MaxInt64, math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{"LargestResult", math.MaxInt64, 1, 1, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.RoundHalfEvenDiv(tt.a, tt.b, tt.den))
			require.Equal(t, tt.want, refHalfEven(tt.a, tt.b, tt.den), "reference disagrees with the table")
		})
	}
}

func TestRoundHalfEvenDivPanics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		a, b, den int64
	}{
		{"NegativeA", -1, 1, 1},
		{"NegativeB", 1, -1, 1},
		{"ZeroDenominator", 1, 1, 0},
		{"NegativeDenominator", 1, 1, -2},
		{"ResultOverflowsInt64", math.MaxInt64, 2, 1},
		{"QuotientOverflowsUint64", math.MaxInt64, math.MaxInt64, 1},
		// 31 × (2^65-1)/31 / 4 = MaxInt64 + 0.75: the quotient fits, rounding
		// it up does not.
		{"RoundingUpPastMaxInt64", 31, (1<<65 - 1) / 31, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { rules.RoundHalfEvenDiv(tt.a, tt.b, tt.den) })
		})
	}
}

// refHalfEven is RoundHalfEvenDiv in math/big, written the slow obvious way,
// so the 128-bit version has something independent to agree with.
func refHalfEven(a, b, den int64) int64 {
	return refHalfEvenBig(a, b, den).Int64()
}

func refHalfEvenBig(a, b, den int64) *big.Int {
	num := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
	q, r := new(big.Int).QuoRem(num, big.NewInt(den), new(big.Int))
	switch new(big.Int).Lsh(r, 1).Cmp(big.NewInt(den)) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}

// TestRoundHalfEvenDivMatchesBig compares RoundHalfEvenDiv with math/big on
// random operands up to the largest amounts and rates in practice, and with
// small denominators so ties come up. The seed is fixed and printed on
// failure.
func TestRoundHalfEvenDivMatchesBig(t *testing.T) {
	t.Parallel()
	const seed = 20260320
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range 10_000 {
		a := r.Int64N(1_000_000_000_000_000 + 1)
		b := r.Int64N(1_000_000 + 1)
		var den int64
		switch r.IntN(3) {
		case 0:
			den = r.Int64N(4) + 1
		case 1:
			den = 10_000 * 365
		default:
			den = r.Int64N(math.MaxInt64) + 1
		}
		if r.IntN(4) == 0 {
			a %= 1000
		}
		want := refHalfEvenBig(a, b, den)
		if !want.IsInt64() {
			require.Panics(t, func() { rules.RoundHalfEvenDiv(a, b, den) }, "seed %d iteration %d: %d×%d/%d", seed, i, a, b, den)
			continue
		}
		require.Equal(t, want.Int64(), rules.RoundHalfEvenDiv(a, b, den), "seed %d iteration %d: %d×%d/%d", seed, i, a, b, den)
	}
}

func TestDailyInterest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		principal int64
		rateBps   int64
		want      int64
	}{
		{"ZeroRateAccruesNothing", 1_000_000_000, 0, 0},
		{"ZeroPrincipalAccruesNothing", 0, 1_000, 0},
		{"TenPercentOnAYearsDenominator", 3_650_000, 1_000, 1_000},
		{"TinyInterestRoundsDown", 1, 1, 0},
		{"HalfUnitOnEvenRoundsDown", 1_825_000, 1, 0}, // 0.5 → 0
		{"HalfUnitOnOddRoundsUp", 5_475_000, 1, 2},    // 1.5 → 2
		{"HalfUnitOnEvenStays", 9_125_000, 1, 2},      // 2.5 → 2
		{"JustOverHalfRoundsUp", 1_825_001, 1, 1},     // 0.50000027 → 1
		{"TypicalLoan", 1_000_000_000_000_000, 1_800, 493_150_684_932},
		{"LargePrincipalLargeRateDoesNotOverflow", 1_000_000_000_000_000, 1_000_000, 273_972_602_739_726},
		{"LeapYearStillDividesBy365", 3_650_000, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.DailyInterest(tt.principal, tt.rateBps))
			require.Equal(t, tt.want, refHalfEven(tt.principal, tt.rateBps, 10_000*365))
		})
	}
	t.Run("NegativeInputPanics", func(t *testing.T) {
		t.Parallel()
		require.Panics(t, func() { rules.DailyInterest(-1, 100) })
		require.Panics(t, func() { rules.DailyInterest(100, -1) })
	})
	t.Run("ResultBeyondInt64Panics", func(t *testing.T) {
		t.Parallel()
		require.Panics(t, func() { rules.DailyInterest(math.MaxInt64, math.MaxInt64) })
	})
}

func TestSplitInterest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		interest, shareBps       int64
		wantDealer, wantManufact int64
	}{
		{"DealerModeShareZeroDealerPaysAll", 12_345, 0, 12_345, 0},
		{"ManufacturerModeShareFullManufacturerPaysAll", 12_345, 10_000, 0, 12_345},
		{"ZeroInterestSplitsToZero", 0, 5_000, 0, 0},
		{"HalfShareOfOneUnitTieGoesToEvenZero", 1, 5_000, 1, 0},     // 0.5 → 0
		{"HalfShareOfThreeUnitsTieGoesToEvenTwo", 3, 5_000, 1, 2},   // 1.5 → 2
		{"HalfShareOfFiveUnitsTieGoesToEvenTwo", 5, 5_000, 3, 2},    // 2.5 → 2
		{"HalfShareOfSevenUnitsTieGoesToEvenFour", 7, 5_000, 3, 4},  // 3.5 → 4
		{"ThirdShareOfOddUnits", 7, 3_333, 5, 2},                    // 2.3331 → 2
		{"ShareOneBpsOfOneUnitIsZero", 1, 1, 1, 0},                  // 0.0001 → 0
		{"ShareOneBpsTieGoesToEvenZero", 5_000, 1, 5_000, 0},        // 0.5 → 0
		{"ShareOneBpsTieGoesToEvenTwo", 15_000, 1, 14_998, 2},       // 1.5 → 2
		{"ShareOneBpsJustOverHalf", 5_001, 1, 5_000, 1},             // 0.5001 → 1
		{"Share9999BpsOfOneUnitIsOne", 1, 9_999, 0, 1},              // 0.9999 → 1
		{"Share9999BpsTieGoesToEvenUp", 5_000, 9_999, 0, 5_000},     // 4999.5 → 5000
		{"Share9999BpsTieGoesToEvenDown", 15_000, 9_999, 2, 14_998}, // 14998.5 → 14998
		{"Share9999BpsLeavesDealerOne", 10_000, 9_999, 1, 9_999},    // exact
		{"Share9999BpsRoundsUpNearlyAll", 10_001, 9_999, 1, 10_000}, // 9999.9999 → 10000
		{"LargeInterestSplitsExactly", 1_000_000_000_000_000, 3_333, 666_700_000_000_000, 333_300_000_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dealer, manufacturer := rules.SplitInterest(tt.interest, tt.shareBps)
			require.Equal(t, tt.wantDealer, dealer, "dealer")
			require.Equal(t, tt.wantManufact, manufacturer, "manufacturer")
			require.Equal(t, tt.interest, dealer+manufacturer, "the parts must sum to the interest")
		})
	}
	panics := []struct {
		name               string
		interest, shareBps int64
	}{
		{"NegativeShare", 100, -1},
		{"ShareOverFull", 100, 10_001},
		{"NegativeInterest", -1, 5_000},
	}
	for _, tt := range panics {
		t.Run(tt.name+"Panics", func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { rules.SplitInterest(tt.interest, tt.shareBps) })
		})
	}
	t.Run("PartsAlwaysSumAndStayNonNegative", func(t *testing.T) {
		t.Parallel()
		const seed = 7
		r := rand.New(rand.NewPCG(seed, seed))
		for i := range 10_000 {
			interest, share := r.Int64N(1_000_000_000_000_000+1), r.Int64N(10_000+1)
			if i%2 == 0 {
				interest %= 100
			}
			dealer, manufacturer := rules.SplitInterest(interest, share)
			msg := []any{"seed %d iteration %d: SplitInterest(%d, %d)", seed, i, interest, share}
			require.Equal(t, interest, dealer+manufacturer, msg...)
			require.GreaterOrEqual(t, dealer, int64(0), msg...)
			require.GreaterOrEqual(t, manufacturer, int64(0), msg...)
			require.Equal(t, refHalfEven(interest, share, 10_000), manufacturer, msg...)
		}
	})
}

func TestDailyPenalty(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                      string
		overdueInterest, overdueP int64
		rateBps                   int64
		want                      int64
	}{
		{"ZeroRateChargesNothing", 1_000_000, 1_000_000, 0, 0},
		{"NothingOverdueChargesNothing", 0, 0, 5_000, 0},
		{"OverdueInterestOnly", 3_650_000, 0, 100, 100},
		{"OverduePrincipalOnly", 0, 3_650_000, 100, 100},
		{"InterestAndPrincipalTogether", 1_825_000, 1_825_000, 100, 100},
		{"RoundsTheSumNotEachPart", 1_825_000, 1_825_000, 1, 1}, // 0.5 + 0.5 = 1, not 0 + 0
		{"HalfUnitOnEvenRoundsDown", 1_825_000, 0, 1, 0},        // 0.5 → 0
		{"HalfUnitOnOddRoundsUp", 1_825_000, 3_650_000, 1, 2},   // 1.5 → 2
		{"LargeAmountsLargeRateDoNotOverflow", 1_000_000_000_000_000, 1_000_000_000_000_000, 1_000_000, 547_945_205_479_452},
		{"SumBeyondInt64DoesNotOverflow", math.MaxInt64, math.MaxInt64, 1, 5_053_902_485_948},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.DailyPenalty(tt.overdueInterest, tt.overdueP, tt.rateBps))
		})
	}
	panics := []struct {
		name                      string
		overdueInterest, overdueP int64
		rateBps                   int64
	}{
		{"NegativeOverdueInterest", -1, 0, 100},
		{"NegativeOverduePrincipal", 0, -1, 100},
		{"NegativeRate", 0, 0, -1},
		{"ResultBeyondInt64", math.MaxInt64, math.MaxInt64, math.MaxInt64},
	}
	for _, tt := range panics {
		t.Run(tt.name+"Panics", func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { rules.DailyPenalty(tt.overdueInterest, tt.overdueP, tt.rateBps) })
		})
	}
}

// date is a civil date as the rules take it: midnight UTC.
func date(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func TestCutoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		d          time.Time
		lateFeeDay int
		want       time.Time
	}{
		{"OnLateFeeDayPreviousMonthIsOverdue28DayFebruary", date(2026, 3, 20), 20, date(2026, 2, 28)},
		{"BeforeLateFeeDayOnlyTwoMonthsBackIsOverdue31DayJanuary", date(2026, 3, 19), 20, date(2026, 1, 31)},
		{"LeapYearFebruaryEndsOn29", date(2024, 3, 20), 20, date(2024, 2, 29)},
		{"LeapDayIsOnOrAfterLateFeeDay28", date(2024, 2, 29), 28, date(2024, 1, 31)},
		{"LeapFebruaryNotOverdueBeforeLateFeeDay", date(2024, 3, 19), 20, date(2024, 1, 31)},
		{"NonLeapYearFebruaryEndsOn28", date(2025, 3, 31), 20, date(2025, 2, 28)},
		{"CenturyLeapYear2000", date(2000, 3, 20), 20, date(2000, 2, 29)},
		{"CenturyNonLeapYear2100", date(2100, 3, 20), 20, date(2100, 2, 28)},
		{"ThirtyDayMonth", date(2026, 5, 20), 20, date(2026, 4, 30)},
		{"ThirtyOneDayMonth", date(2026, 8, 25), 20, date(2026, 7, 31)},
		{"YearBoundaryBeforeLateFeeDay", date(2026, 1, 5), 20, date(2025, 11, 30)},
		{"YearBoundaryOnLateFeeDay", date(2026, 1, 20), 20, date(2025, 12, 31)},
		{"YearBoundaryFebruaryBeforeLateFeeDay", date(2026, 2, 19), 20, date(2025, 12, 31)},
		{"LastDayOfYear", date(2026, 12, 31), 20, date(2026, 11, 30)},
		{"FirstDayOfMonth", date(2026, 3, 1), 20, date(2026, 1, 31)},
		{"LateFeeDayOneEveryDayIsOnOrAfter", date(2026, 3, 1), 1, date(2026, 2, 28)},
		{"LateFeeDay28OnFebruary28", date(2026, 2, 28), 28, date(2026, 1, 31)},
		{"LateFeeDay28OnFebruary27", date(2026, 2, 27), 28, date(2025, 12, 31)},
		{"TimeOfDayIsIgnored", time.Date(2026, 3, 20, 23, 59, 59, 999, time.UTC), 20, date(2026, 2, 28)},
		{"CivilDateIsReadInItsOwnLocation", time.Date(2026, 3, 20, 0, 30, 0, 0, time.FixedZone("UTC+8", 8*3600)), 20, date(2026, 2, 28)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := rules.Cutoff(tt.d, tt.lateFeeDay)
			require.Equal(t, tt.want, got)
			require.Equal(t, time.UTC, got.Location())
		})
	}
	for _, day := range []int{-1, 0, 29, 31} {
		t.Run(fmt.Sprintf("LateFeeDay%dOutsideEveryMonthPanics", day), func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { rules.Cutoff(date(2026, 3, 20), day) })
		})
	}
}

// TestCutoffAdvancesOnlyOnLateFeeDay walks every day of 2020–2030 for every
// allowed late-fee day and checks the rule behind Cutoff: it is always a
// month end before d's month, it moves exactly on the late-fee day, and then
// by exactly one month.
func TestCutoffAdvancesOnlyOnLateFeeDay(t *testing.T) {
	t.Parallel()
	for lateFeeDay := 1; lateFeeDay <= rules.MaxLateFeeDay; lateFeeDay++ {
		prev := rules.Cutoff(date(2019, 12, 31), lateFeeDay)
		for d := date(2020, 1, 1); d.Year() <= 2030; d = d.AddDate(0, 0, 1) {
			got := rules.Cutoff(d, lateFeeDay)
			msg := []any{"Cutoff(%s, %d) = %s", d.Format(time.DateOnly), lateFeeDay, got.Format(time.DateOnly)}
			require.Equal(t, 1, got.AddDate(0, 0, 1).Day(), msg...)
			require.True(t, got.Before(rules.MonthStart(d)), msg...)
			if rules.IsLateFeeDay(d, lateFeeDay) {
				require.Equal(t, rules.MonthStart(prev.AddDate(0, 0, 1)).AddDate(0, 1, -1), got, msg...)
			} else {
				require.Equal(t, prev, got, msg...)
			}
			prev = got
		}
	}
}

func TestIsLateFeeDay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		d          time.Time
		lateFeeDay int
		want       bool
	}{
		{"TheLateFeeDay", date(2026, 3, 20), 20, true},
		{"DayBefore", date(2026, 3, 19), 20, false},
		{"DayAfter", date(2026, 3, 21), 20, false},
		{"Day28InFebruary", date(2026, 2, 28), 28, true},
		{"FirstOfMonth", date(2026, 1, 1), 1, true},
		{"CivilDateIsReadInItsOwnLocation", time.Date(2026, 3, 20, 0, 30, 0, 0, time.FixedZone("UTC+8", 8*3600)), 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.IsLateFeeDay(tt.d, tt.lateFeeDay))
		})
	}
	t.Run("LateFeeDayOutsideEveryMonthPanics", func(t *testing.T) {
		t.Parallel()
		require.Panics(t, func() { rules.IsLateFeeDay(date(2026, 1, 31), 31) })
		require.Panics(t, func() { rules.IsLateFeeDay(date(2026, 1, 1), 0) })
	})
}

func TestMonthStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    time.Time
		want time.Time
	}{
		{"MidMonth", date(2026, 3, 20), date(2026, 3, 1)},
		{"FirstOfMonthIsItself", date(2026, 3, 1), date(2026, 3, 1)},
		{"LeapDay", date(2024, 2, 29), date(2024, 2, 1)},
		{"LastDayOf30DayMonth", date(2026, 4, 30), date(2026, 4, 1)},
		{"LastMomentOfYear", time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), date(2026, 12, 1)},
		{"CivilDateIsReadInItsOwnLocation", time.Date(2026, 4, 1, 0, 30, 0, 0, time.FixedZone("UTC+8", 8*3600)), date(2026, 4, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := rules.MonthStart(tt.d)
			require.Equal(t, tt.want, got)
			require.Equal(t, time.UTC, got.Location())
		})
	}
}
