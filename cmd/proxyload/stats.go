package main

import (
	"math"
	"slices"
)

// percentile returns the nearest-rank p-th percentile of sorted (ascending)
// values: the smallest value with at least p percent of the values at or
// below it. p <= 0 gives the minimum, p >= 100 the maximum, and no values
// give 0.
func percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// p*n first: 90*10/100 is exactly 9, while 0.9*10 need not be.
	rank := int(math.Ceil(p * float64(n) / 100))
	return sorted[min(max(rank, 1), n)-1]
}

// Summary describes a set of durations in milliseconds. Percentiles are
// nearest-rank (each is a measured value); all fields are 0 when Count is 0.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize sorts ns (nanoseconds) in place and summarizes it.
func summarize(ns []int64) Summary {
	if len(ns) == 0 {
		return Summary{}
	}
	slices.Sort(ns)
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	return Summary{
		Count: len(ns),
		Min:   ms(ns[0]),
		Mean:  sum / float64(len(ns)) / 1e6,
		P50:   ms(percentile(ns, 50)),
		P90:   ms(percentile(ns, 90)),
		P99:   ms(percentile(ns, 99)),
		Max:   ms(ns[len(ns)-1]),
	}
}

// Delta is proxied minus direct for each figure of two Summaries, in
// milliseconds: the latency the proxy adds at each percentile.
type Delta struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// added returns proxied − direct per percentile, or nil when either side
// has no values (a difference with nothing would be meaningless).
func added(direct, proxied Summary) *Delta {
	if direct.Count == 0 || proxied.Count == 0 {
		return nil
	}
	return &Delta{
		P50: proxied.P50 - direct.P50,
		P90: proxied.P90 - direct.P90,
		P99: proxied.P99 - direct.P99,
		Max: proxied.Max - direct.Max,
	}
}
