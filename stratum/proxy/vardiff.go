package proxy

import (
	"math"
	"time"
)

// vardiff steers one miner's difficulty toward a target share rate. It is
// owned by the miner's session goroutine (no locking).
//
// The estimate is the miner's hashrate: the sum of the difficulties of its
// accepted shares over the window, which is independent of the difficulty the
// shares were found at. From it, the difficulty that yields the target rate is
// D = sumDiff · 60 / (elapsed_s · sharesPerMinute). Changes are applied only
// when a new job is sent (mid-job changes inflate rejects on S19s), only when
// the estimate is off by more than a factor, and always within [min, max] and
// never above the pool's difficulty.
type vardiff struct {
	target   float64 // shares per minute
	min, max float64

	windowStart time.Time
	sumDiff     float64
	shares      int
}

// retargetAfterShares: enough shares for a usable estimate.
const retargetAfterShares = 6

// retargetSlack: change only when off by more than this factor.
const retargetSlack = 1.5

func newVardiff(target, min, max float64, now time.Time) *vardiff {
	return &vardiff{target: target, min: min, max: max, windowStart: now}
}

// accepted records a share accepted at difficulty d.
func (v *vardiff) accepted(d float64) {
	v.sumDiff += d
	v.shares++
}

// next returns the difficulty to use for the next job given the current one
// and the pool's difficulty; changed reports whether it differs.
func (v *vardiff) next(cur, poolDiff float64, now time.Time) (float64, bool) {
	elapsed := now.Sub(v.windowStart).Seconds()
	interval := 60 / v.target // seconds per share at the target rate
	var want float64
	switch {
	case v.shares >= retargetAfterShares || (v.shares > 0 && elapsed >= 6*interval):
		want = v.sumDiff * 60 / (math.Max(elapsed, 1) * v.target)
	case v.shares == 0 && elapsed >= 6*interval:
		// Silent for six intervals: the difficulty is far too high. Halve per
		// retarget (at most once a job) rather than guess.
		want = cur / 2
	default:
		return v.clamp(cur, poolDiff), v.clamp(cur, poolDiff) != cur
	}
	want = v.clamp(want, poolDiff)
	if want < cur*retargetSlack && want > cur/retargetSlack {
		if v.shares >= 4*retargetAfterShares {
			v.reset(now) // on target; start a fresh window so the estimate follows changes
		}
		return v.clamp(cur, poolDiff), v.clamp(cur, poolDiff) != cur
	}
	v.reset(now)
	return want, want != cur
}

func (v *vardiff) reset(now time.Time) {
	v.windowStart = now
	v.sumDiff = 0
	v.shares = 0
}

// clamp bounds d by [min, max] and by the pool's difficulty (a miner's share
// can never be harder than what the pool wants, or valid pool shares would be
// thrown away as low difficulty). Difficulties are rounded to powers of two
// above 1 for stable, readable values, as most pools do.
func (v *vardiff) clamp(d, poolDiff float64) float64 {
	if d > 1 {
		d = math.Exp2(math.Round(math.Log2(d)))
	}
	d = math.Max(v.min, math.Min(v.max, d))
	if poolDiff > 0 && d > poolDiff {
		d = poolDiff
	}
	return d
}
