package proxy

import "time"

// meter estimates hashrate from accepted share difficulty over a sliding
// window of one-minute buckets: H = Σdiff · 2^32 / window. It is owned by its
// holder's mutex.
type meter struct {
	buckets [meterBuckets]float64
	stamps  [meterBuckets]int64 // minute index each bucket holds
	since   time.Time           // first observation, to avoid underestimating young miners
}

const meterBuckets = 10 // ten minutes

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// add records an accepted share of difficulty d at t.
func (m *meter) add(d float64, t time.Time) {
	if m.since.IsZero() {
		m.since = t
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
	window := float64(meterBuckets * 60)
	if age := now.Sub(m.since).Seconds(); age < window {
		window = max(age, 60)
	}
	return sum * 4294967296 / window
}
