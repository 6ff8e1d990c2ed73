package bench

import (
	"math"
	"sync"
	"time"
)

// histogramGrowth is the ratio between the bounds of consecutive buckets:
// a percentile is reported within 2% of the true value.
const histogramGrowth = 1.02

var histogramLogGrowth = math.Log(histogramGrowth)

// Histogram collects durations in logarithmic buckets (1 µs to about an
// hour, 2% wide) in constant memory, for runs too long to keep every
// value as Latencies does (a soak would otherwise grow its own RSS).
// The zero value is ready to use; it is safe for concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts map[int]int64
	n      int64
	max    time.Duration
}

func histogramBucket(d time.Duration) int {
	if d <= time.Microsecond {
		return 0
	}
	return int(math.Ceil(math.Log(float64(d)/float64(time.Microsecond)) / histogramLogGrowth))
}

// histogramUpper is the upper bound of bucket b.
func histogramUpper(b int) time.Duration {
	return time.Duration(float64(time.Microsecond) * math.Pow(histogramGrowth, float64(b)))
}

// Add records one duration.
func (h *Histogram) Add(d time.Duration) {
	b := histogramBucket(d)
	h.mu.Lock()
	if h.counts == nil {
		h.counts = map[int]int64{}
	}
	h.counts[b]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// Count is how many durations were recorded.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Max is the largest duration recorded.
func (h *Histogram) Max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}

// Percentile returns the p-th percentile (0 < p <= 100), nearest rank, as
// the upper bound of its bucket (never above the largest value recorded).
func (h *Histogram) Percentile(p float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(float64(h.n)*p/100)), 1)
	lo, hi := math.MaxInt, math.MinInt
	for b := range h.counts {
		lo, hi = min(lo, b), max(hi, b)
	}
	var seen int64
	for b := lo; b <= hi; b++ {
		seen += h.counts[b]
		if seen >= rank {
			return min(histogramUpper(b), h.max)
		}
	}
	return h.max
}

// Merge adds every duration of o to h.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	counts := make(map[int]int64, len(o.counts))
	for b, c := range o.counts {
		counts[b] = c
	}
	n, mx := o.n, o.max
	o.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = map[int]int64{}
	}
	for b, c := range counts {
		h.counts[b] += c
	}
	h.n += n
	h.max = max(h.max, mx)
}

// Reset forgets every duration.
func (h *Histogram) Reset() {
	h.mu.Lock()
	h.counts, h.n, h.max = nil, 0, 0
	h.mu.Unlock()
}
