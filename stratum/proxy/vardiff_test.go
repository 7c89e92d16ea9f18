package proxy

import (
	"testing"
	"time"
)

func TestVardiff(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name     string
		cur      float64
		poolDiff float64
		shares   int // accepted shares at cur
		after    time.Duration
		want     float64
	}{
		{"too fast: 60 shares in a minute at 12/min target", 1024, 1e9, 60, time.Minute, 4096},
		{"on target stays", 1024, 1e9, 12, time.Minute, 1024},
		{"too slow: 3 shares in 2 minutes", 4096, 1e9, 3, 2 * time.Minute, 512},
		{"silent for long halves", 1024, 1e9, 0, 2 * time.Minute, 512},
		{"too early to judge", 1024, 1e9, 2, 5 * time.Second, 1024},
		{"never above pool difficulty", 1024, 2000, 600, time.Minute, 2000},
		{"clamped to max", 1 << 20, 1e12, 6000, time.Minute, 1 << 22},
		{"clamped to min", 512, 1e9, 1, 10 * time.Minute, 256},
		{"pool diff lowers current at once", 8192, 1000, 0, time.Second, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVardiff(12, 256, 1<<22, t0)
			for i := 0; i < tc.shares; i++ {
				v.accepted(tc.cur)
			}
			got, changed := v.next(tc.cur, tc.poolDiff, t0.Add(tc.after))
			if got != tc.want || changed != (tc.want != tc.cur) {
				t.Fatalf("next = %v (changed %v), want %v", got, changed, tc.want)
			}
		})
	}
}

// TestVardiffConverges: a simulated miner of fixed hashrate settles near the target rate.
func TestVardiffConverges(t *testing.T) {
	const hashrate = 100e12 // 100 TH/s
	now := time.Unix(1_700_000_000, 0)
	v := newVardiff(12, 256, 1<<40, now)
	d := 8192.0
	for job := 0; job < 200; job++ { // a job every 30 s for 100 minutes
		rate := hashrate / (d * 4294967296) // shares per second at d
		n := int(rate * 30)
		for i := 0; i < n; i++ {
			v.accepted(d)
		}
		now = now.Add(30 * time.Second)
		d, _ = v.next(d, 1e15, now)
	}
	spm := hashrate / (d * 4294967296) * 60
	if spm < 12/2 || spm > 12*2 {
		t.Fatalf("settled at difficulty %v = %.1f shares/min, want within 2x of 12", d, spm)
	}
}

func TestMeter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).Truncate(time.Minute)
	var m meter
	if m.hashrate(t0) != 0 {
		t.Fatal("empty meter reports hashrate")
	}
	// 100 TH/s at difficulty 65536: one share every 65536·2^32/1e14 ≈ 2.8 s.
	for s := 0; s < 20*60; s += 3 {
		m.add(65536*3/2.8147497671065600, t0.Add(time.Duration(s)*time.Second))
	}
	got := m.hashrate(t0.Add(20 * time.Minute))
	if got < 90e12 || got > 110e12 {
		t.Fatalf("hashrate = %.3g, want about 1e14", got)
	}
	if m.hashrate(t0.Add(2*time.Hour)) != 0 {
		t.Error("stale buckets still counted")
	}
}

// A young worker is estimated over the time since it was authorized (at
// least meterMinWindow), not over a fixed minute: issue 14's API read a
// third of the real rate 20 s in.
func TestMeterYoungWorker(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	const diff = 1.0
	tests := []struct {
		name    string
		elapsed time.Duration // since authorization
		every   time.Duration // one share of diff every
	}{
		{"20 s in", 20 * time.Second, 2 * time.Second},
		{"45 s in", 45 * time.Second, 3 * time.Second},
		{"3 min in", 3 * time.Minute, 5 * time.Second},
	}
	for _, tt := range tests {
		m := meter{since: t0}
		n := 0
		for at := tt.every; at <= tt.elapsed; at += tt.every {
			m.add(diff, t0.Add(at))
			n++
		}
		want := float64(n) * diff * 4294967296 / tt.elapsed.Seconds()
		got := m.hashrate(t0.Add(tt.elapsed))
		if got < 0.9*want || got > 1.1*want {
			t.Errorf("%s: hashrate %.4g, want %.4g ±10%%", tt.name, got, want)
		}
	}
	// One share in the first second does not read as a huge rate.
	m := meter{since: t0}
	m.add(diff, t0.Add(time.Second))
	if got, limit := m.hashrate(t0.Add(time.Second)), diff*4294967296/meterMinWindow.Seconds(); got > limit {
		t.Errorf("first second: %.4g H/s, more than one share over the minimum window (%.4g)", got, limit)
	}
}

// A steady worker reads its real rate whatever the second of the minute:
// the window is what the buckets cover, not a fixed ten minutes.
func TestMeterSteadyState(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0) // a minute boundary
	m := meter{since: t0}
	for at := time.Second; at <= 30*time.Minute; at += time.Second {
		m.add(1, t0.Add(at))
	}
	want := 4294967296.0 // one difficulty-1 share a second
	added := 30 * time.Minute
	for _, off := range []time.Duration{0, time.Second, 15 * time.Second, 59 * time.Second} {
		now := t0.Add(30*time.Minute + off)
		for ; added < 30*time.Minute+off; added += time.Second {
			m.add(1, t0.Add(added+time.Second))
		}
		if got := m.hashrate(now); got < 0.98*want || got > 1.02*want {
			t.Errorf("%v into the minute: %.4g H/s, want %.4g ±2%%", off, got, want)
		}
	}
}
