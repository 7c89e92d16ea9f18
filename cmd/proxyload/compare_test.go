package main

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// cmpRun is a completed run of proxy name in round r with the figures the
// comparison reads.
func cmpRun(name string, round int, fanoutP50, cpuPct, peakMiB float64, poolBytes uint64, sessions int) *RunReport {
	return &RunReport{
		Path: name, Round: round, Completed: true,
		Connect: ConnectFig{TotalS: 1, Handshake: Summary{Count: 10, P50: 2}},
		Fanout:  FanoutFig{Latency: Summary{Count: 10, P50: fanoutP50, P99: 2 * fanoutP50}},
		Submit:  SubmitFig{Path: Summary{Count: 5, P50: 0.2, P99: 0.4}, RTT: Summary{Count: 5, P50: 0.3}},
		Bytes:   BytesFig{PoolTotal: poolBytes, PoolSessions: sessions},
		Proxy:   &ProxyFig{PID: 9, CPUWindowPct: cpuPct, PeakRSSMiB: peakMiB, RSSPerMinerKiB: peakMiB / 2, PeakRSSPerMinerKiB: peakMiB},
	}
}

func figure(t *testing.T, cmp *Comparison, name string) CmpFigure {
	t.Helper()
	for _, f := range cmp.Figures {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no figure %q in %+v", name, cmp.Figures)
	return CmpFigure{}
}

func TestCompare(t *testing.T) {
	failed := cmpRun("B", 2, 1000, 1000, 1000, 1, 1)
	failed.Completed = false
	noPID := cmpRun("B", 3, 30, 0, 0, 300, 1)
	noPID.Proxy = &ProxyFig{Error: "no proxy PID"}
	tests := []struct {
		name   string
		runs   []*RunReport
		figure string
		a, b   []float64
		ratio  float64 // NaN: no ratio
	}{
		{name: "one round", runs: []*RunReport{cmpRun("A", 1, 10, 7, 115, 4000, 40), cmpRun("B", 1, 20, 16, 103, 800, 1)},
			figure: "fan-out p50", a: []float64{10}, b: []float64{20}, ratio: 2},
		{name: "median of three rounds, odd", runs: []*RunReport{
			cmpRun("A", 1, 10, 7, 100, 4000, 40), cmpRun("B", 1, 20, 16, 90, 800, 1),
			cmpRun("A", 2, 12, 9, 120, 4000, 40), cmpRun("B", 2, 26, 14, 95, 800, 1),
			cmpRun("A", 3, 11, 8, 110, 4000, 40), cmpRun("B", 3, 22, 18, 99, 800, 1),
		}, figure: "proxy CPU in the window", a: []float64{7, 9, 8}, b: []float64{16, 14, 18}, ratio: 2},
		{name: "median of two rounds is the mean of both", runs: []*RunReport{
			cmpRun("A", 1, 10, 7, 100, 4000, 40), cmpRun("B", 1, 20, 16, 80, 800, 1),
			cmpRun("A", 2, 10, 7, 120, 4000, 40), cmpRun("B", 2, 20, 16, 88, 800, 1),
		}, figure: "proxy peak RSS", a: []float64{100, 120}, b: []float64{80, 88}, ratio: 84.0 / 110},
		{name: "upstream sessions", runs: []*RunReport{cmpRun("A", 1, 10, 7, 115, 4000, 40), cmpRun("B", 1, 20, 16, 103, 800, 1)},
			figure: "upstream sessions", a: []float64{40}, b: []float64{1}, ratio: 1.0 / 40},
		{name: "upstream bytes", runs: []*RunReport{cmpRun("A", 1, 10, 7, 115, 4000, 40), cmpRun("B", 1, 20, 16, 103, 800, 1)},
			figure: "upstream bytes (pool side in+out)", a: []float64{4000}, b: []float64{800}, ratio: 0.2},
		{name: "per miner at peak", runs: []*RunReport{cmpRun("A", 1, 10, 7, 12, 4000, 40), cmpRun("B", 1, 20, 16, 6, 800, 1)},
			figure: "proxy RSS per miner at peak", a: []float64{12}, b: []float64{6}, ratio: 0.5},
		{name: "an incomplete run does not count", runs: []*RunReport{cmpRun("A", 1, 10, 7, 115, 4000, 40), cmpRun("B", 1, 20, 16, 103, 800, 1), failed},
			figure: "fan-out p50", a: []float64{10}, b: []float64{20}, ratio: 2},
		{name: "a run without proxy figures gives none", runs: []*RunReport{cmpRun("A", 1, 10, 7, 115, 4000, 40), noPID},
			figure: "proxy peak RSS", a: []float64{115}, b: []float64{}, ratio: math.NaN()},
		{name: "zero for A gives no ratio", runs: []*RunReport{cmpRun("A", 1, 10, 0, 115, 4000, 40), cmpRun("B", 1, 20, 16, 103, 800, 1)},
			figure: "proxy CPU in the window", a: []float64{0}, b: []float64{16}, ratio: math.NaN()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmp := compare(tc.runs, "A", "B", 3)
			if len(cmp.Figures) != len(cmpFigures) {
				t.Fatalf("%d figures, want %d", len(cmp.Figures), len(cmpFigures))
			}
			f := figure(t, cmp, tc.figure)
			if !equalFloats(f.A, tc.a) || !equalFloats(f.B, tc.b) {
				t.Fatalf("values A %v B %v, want %v %v", f.A, f.B, tc.a, tc.b)
			}
			switch {
			case math.IsNaN(tc.ratio) && f.Ratio != nil:
				t.Fatalf("ratio %v, want none", *f.Ratio)
			case !math.IsNaN(tc.ratio) && (f.Ratio == nil || math.Abs(*f.Ratio-tc.ratio) > 1e-9):
				t.Fatalf("ratio %v, want %v", f.Ratio, tc.ratio)
			}
			var out strings.Builder
			cmp.write(&out)
			if !strings.Contains(out.String(), tc.figure) || !strings.Contains(out.String(), "B/A") {
				t.Fatalf("table:\n%s", out.String())
			}
		})
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1}, 2}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		in := append([]float64(nil), tc.in...)
		if got := median(tc.in); got != tc.want || !equalFloats(in, tc.in) {
			t.Errorf("median(%v) = %v, want %v (input kept: %v)", in, got, tc.want, tc.in)
		}
	}
}

// TestProxyFiguresPerMiner checks RSS per miner after connect and at the
// peak, both over the RSS before the miners connected.
func TestProxyFiguresPerMiner(t *testing.T) {
	at := time.Unix(1000, 0)
	tests := []struct {
		name                   string
		start, conn, hwm, rssW int64 // KiB: at start, after connect, VmHWM at the end, RSS in the window
		ready                  int
		perConn, perPeak       float64
	}{
		{"peak from VmHWM", 10_240, 20_480, 40_960, 30_000, 1000, 10.24, 30.72},
		{"peak from a sample above VmHWM", 10_240, 20_480, 0, 30_960, 1000, 10.24, 20.72},
		{"no miners", 10_240, 10_240, 10_240, 10_240, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxySampler(42)
			p.samples[phStart] = procSample{At: at, RSSKiB: tc.start, HWMKiB: tc.start}
			p.samples[phConnected] = procSample{At: at, RSSKiB: tc.conn}
			p.samples[phWindowStart] = procSample{At: at, RSSKiB: tc.rssW}
			p.samples[phEnd] = procSample{At: at, RSSKiB: tc.start, HWMKiB: tc.hwm}
			f := p.figures(tc.ready)
			if math.Abs(f.RSSPerMinerKiB-tc.perConn) > 1e-9 || math.Abs(f.PeakRSSPerMinerKiB-tc.perPeak) > 1e-9 {
				t.Fatalf("per miner %v / %v KiB, want %v / %v", f.RSSPerMinerKiB, f.PeakRSSPerMinerKiB, tc.perConn, tc.perPeak)
			}
		})
	}
}

// TestResetPeak resets this process's VmHWM: right after the reset the
// peak is the RSS (within what the runtime touches meanwhile).
func TestResetPeak(t *testing.T) {
	p := newProxySampler(os.Getpid())
	p.resetPeak()
	if !p.peakReset {
		t.Skip("this kernel does not let the process reset its own VmHWM")
	}
	s, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.HWMKiB > s.RSSKiB+4096 {
		t.Fatalf("VmHWM %d KiB, RSS %d KiB right after the reset", s.HWMKiB, s.RSSKiB)
	}
	q := newProxySampler(1 << 30)
	q.resetPeak()
	if q.peakReset {
		t.Fatal("reset the peak of a process that cannot exist")
	}
}
