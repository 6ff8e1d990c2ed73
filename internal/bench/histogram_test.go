package bench

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHistogramPercentilesWithinTwoPercent compares the histogram with the
// exact nearest-rank percentiles of Latencies on the same values.
func TestHistogramPercentilesWithinTwoPercent(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var exact Latencies
	for range 20000 {
		// Log-uniform from 50 µs to 5 s, like request latencies.
		d := time.Duration(50e3 * float64(uint64(1)<<rng.UintN(17)) * (1 + rng.Float64()))
		h.Add(d)
		exact.Add(d)
	}
	require.EqualValues(t, 20000, h.Count())
	require.Equal(t, exact.Percentile(100), h.Max())
	for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
		want, got := exact.Percentile(p), h.Percentile(p)
		require.GreaterOrEqual(t, got, want, "p%v", p)
		require.LessOrEqual(t, float64(got), float64(want)*1.02, "p%v: got %s, want %s", p, got, want)
	}
}

func TestHistogramMergeAndReset(t *testing.T) {
	t.Parallel()
	var a, b Histogram
	for i := 1; i <= 100; i++ {
		a.Add(time.Duration(i) * time.Millisecond)
		b.Add(time.Duration(i+100) * time.Millisecond)
	}
	a.Merge(&b)
	require.EqualValues(t, 200, a.Count())
	require.Equal(t, 200*time.Millisecond, a.Max())
	require.InDelta(t, float64(100*time.Millisecond), float64(a.Percentile(50)), float64(2*time.Millisecond))
	a.Reset()
	require.Zero(t, a.Count())
	require.Zero(t, a.Percentile(99))
	a.Add(0)
	require.Zero(t, a.Percentile(50))
}
