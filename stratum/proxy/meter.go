package proxy

import "time"

// meter estimates hashrate from accepted share difficulty over a sliding
// window of one-minute buckets: H = Σdiff · 2^32 / window. The window is ten
// minutes, or the time since the worker could first submit (since) when that
// is shorter, so a young worker is neither under- nor over-estimated; it is
// never under meterMinWindow, which keeps the first seconds' single share
// from reading as a huge rate. It is owned by its holder's mutex.
type meter struct {
	buckets [meterBuckets]float64
	stamps  [meterBuckets]int64 // minute index each bucket holds
	since   time.Time           // when the worker was authorized (else its first share)
	first   time.Time           // its first share
}

const (
	meterBuckets   = 10 // ten minutes
	meterMinWindow = 10 * time.Second
)

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// add records an accepted share of difficulty d at t.
func (m *meter) add(d float64, t time.Time) {
	if m.since.IsZero() {
		m.since = t
	}
	if m.first.IsZero() {
		m.first = t
	}
	mi := minuteOf(t)
	i := mi % meterBuckets
	if m.stamps[i] != mi {
		m.stamps[i] = mi
		m.buckets[i] = 0
	}
	m.buckets[i] += d
}

// hashrate returns hashes per second over the window ending at now.
func (m *meter) hashrate(now time.Time) float64 {
	if m.since.IsZero() {
		return 0
	}
	mi := minuteOf(now)
	var sum float64
	for i := range m.buckets {
		if mi-m.stamps[i] < meterBuckets {
			sum += m.buckets[i]
		}
	}
	// The buckets in the window cover the nine minutes before this one and
	// the part of this minute that has passed.
	window := float64((meterBuckets-1)*60) + now.Sub(time.Unix(mi*60, 0)).Seconds()
	if age := now.Sub(m.since).Seconds(); age < window {
		window = max(age, meterMinWindow.Seconds())
	}
	return sum * 4294967296 / window
}

// routingRate is the estimate the weighted split steers by: the window starts
// at the first share and is never under a minute, so a worker that just
// arrived (or just moved) counts for little until it has a minute of shares.
// That damping is what keeps rebalancing from chasing the noise of a few
// shares (TestWeightedSplit holds 70/30 with it; with hashrate's 10 s floor
// the split drifted to 74/26). Operators see hashrate, not this.
func (m *meter) routingRate(now time.Time) float64 {
	if m.first.IsZero() {
		return 0
	}
	mi := minuteOf(now)
	var sum float64
	for i := range m.buckets {
		if mi-m.stamps[i] < meterBuckets {
			sum += m.buckets[i]
		}
	}
	window := float64(meterBuckets * 60)
	if age := now.Sub(m.first).Seconds(); age < window {
		window = max(age, 60)
	}
	return sum * 4294967296 / window
}
