package main

import (
	"math"
	"slices"
	"testing"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []int64 {
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(i + 1)
		}
		return out
	}
	tests := []struct {
		name   string
		values []int64
		p      float64
		want   int64
	}{
		{"empty", nil, 50, 0},
		{"one p0", []int64{7}, 0, 7},
		{"one p50", []int64{7}, 50, 7},
		{"one p100", []int64{7}, 100, 7},
		{"two p50 is the lower", []int64{1, 2}, 50, 1},
		{"two p51 is the upper", []int64{1, 2}, 51, 2},
		{"ten p90 exact rank", seq(10), 90, 9},
		{"ten p91", seq(10), 91, 10},
		{"ten p99", seq(10), 99, 10},
		{"hundred p50", seq(100), 50, 50},
		{"hundred p90", seq(100), 90, 90},
		{"hundred p99", seq(100), 99, 99},
		{"hundred p99.9", seq(100), 99.9, 100},
		{"thousand p99", seq(1000), 99, 990},
		{"thousand p0.1", seq(1000), 0.1, 1},
		{"negative p is min", seq(5), -3, 1},
		{"above 100 is max", seq(5), 250, 5},
		{"duplicates", []int64{3, 3, 3, 9}, 75, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.values, tc.p); got != tc.want {
				t.Fatalf("percentile(%v, %v) = %d, want %d", tc.values, tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		ns   []int64
		want Summary
	}{
		{"none", nil, Summary{}},
		{"one", []int64{2_500_000}, Summary{Count: 1, Min: 2.5, Mean: 2.5, P50: 2.5, P90: 2.5, P99: 2.5, Max: 2.5}},
		{"unsorted", []int64{4e6, 1e6, 3e6, 2e6}, Summary{Count: 4, Min: 1, Mean: 2.5, P50: 2, P90: 4, P99: 4, Max: 4}},
		{"negative kept", []int64{-1e6, 1e6}, Summary{Count: 2, Min: -1, Mean: 0, P50: -1, P90: 1, P99: 1, Max: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.ns)
			got := summarize(in)
			if got != tc.want {
				t.Fatalf("summarize(%v) = %+v, want %+v", tc.ns, got, tc.want)
			}
			if !slices.IsSorted(in) {
				t.Fatalf("summarize left %v unsorted", in)
			}
		})
	}
}

func TestAdded(t *testing.T) {
	d := Summary{P50: 1, P90: 2, P99: 3, Max: 4}
	p := Summary{P50: 1.5, P90: 2, P99: 5, Max: 3}
	d.Count, p.Count = 10, 20
	got := added(d, p)
	want := Delta{P50: 0.5, P90: 0, P99: 2, Max: -1}
	if got == nil || math.Abs(got.P50-want.P50) > 1e-12 || got.P90 != want.P90 || got.P99 != want.P99 || got.Max != want.Max {
		t.Fatalf("added = %+v, want %+v", got, want)
	}
	if added(Summary{}, p) != nil || added(d, Summary{}) != nil {
		t.Fatal("a difference with an empty side is not nil")
	}
}
