package rules_test

import (
	"math"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank/internal/lending/rules"
)

// roundHalfEven is the reference: a×b/den in exact rationals, rounded to
// the nearest integer, ties to even.
func roundHalfEven(a, b, den int64) *big.Int {
	num := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
	d := big.NewInt(den)
	q, r := new(big.Int).QuoRem(num, d, new(big.Int))
	twice := new(big.Int).Mul(r, big.NewInt(2))
	switch c := twice.Cmp(d); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		q.Add(q, big.NewInt(1))
	}
	return q
}

// FuzzRoundHalfEvenDiv: the 128-bit rounding division equals exact
// rational arithmetic, and panics exactly when the inputs are out of its
// domain or the result does not fit in an int64.
func FuzzRoundHalfEvenDiv(f *testing.F) {
	for _, s := range [][3]int64{
		{0, 0, 1}, {5, 1, 2}, {15, 1, 2}, {25, 1, 10}, {35, 1, 10}, {1_000_000_000_000_000, 100_000, 3_650_000},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64}, {math.MaxInt64, 2, 1}, {math.MaxInt64, 1, 1}, {-1, 1, 1}, {1, 1, 0}, {1, 1, -1},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, den int64) {
		if a < 0 || b < 0 || den <= 0 {
			require.Panics(t, func() { rules.RoundHalfEvenDiv(a, b, den) })
			return
		}
		want := roundHalfEven(a, b, den)
		if !want.IsInt64() {
			require.Panics(t, func() { rules.RoundHalfEvenDiv(a, b, den) }, "%d×%d/%d overflows", a, b, den)
			return
		}
		require.Equal(t, want.Int64(), rules.RoundHalfEvenDiv(a, b, den), "%d×%d/%d", a, b, den)
	})
}

// FuzzSplitInterest: the two parts are never negative, always sum to the
// interest (no minor unit created or lost), and the manufacturer's is the
// rounded share.
func FuzzSplitInterest(f *testing.F) {
	for _, s := range [][2]int64{{0, 0}, {1, 5000}, {3, 5000}, {5, 5000}, {100, 10000}, {100, 0}, {math.MaxInt64, 9999}, {7, 1}, {1, -1}, {1, 10001}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, interest, share int64) {
		if interest < 0 || share < 0 || share > 10_000 {
			require.Panics(t, func() { rules.SplitInterest(interest, share) })
			return
		}
		dealer, mfr := rules.SplitInterest(interest, share)
		require.GreaterOrEqual(t, dealer, int64(0))
		require.GreaterOrEqual(t, mfr, int64(0))
		require.Equal(t, interest, dealer+mfr)
		require.Equal(t, roundHalfEven(interest, share, 10_000).Int64(), mfr)
	})
}
