package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
)

// hasProxyB reports whether a second proxy is to be compared with the first.
func (c *config) hasProxyB() bool { return c.CompareTarget != "" || c.CompareSpawn != "" }

// finishProxyB checks the flags of proxy B, --rounds and --names.
func (c *config) finishProxyB() error {
	names := strings.Split(c.NamesText, ",")
	if len(names) != 2 {
		return fmt.Errorf("--names %q: want two names, A,B", c.NamesText)
	}
	for i, n := range names {
		n = strings.TrimSpace(n)
		switch {
		case n == "" || strings.ContainsAny(n, " \t\n\"#"):
			return fmt.Errorf("--names %q: want two non-empty names without spaces, quotes or #", c.NamesText)
		case n == "direct":
			return fmt.Errorf("--names %q: \"direct\" names the path without a proxy", c.NamesText)
		}
		c.Names[i] = n
	}
	if c.Names[0] == c.Names[1] {
		return fmt.Errorf("--names %q: the two names must differ", c.NamesText)
	}
	if c.Rounds < 1 || c.Rounds > 100 {
		return fmt.Errorf("--rounds %d: want 1 to 100", c.Rounds)
	}
	if !c.hasProxyB() {
		switch {
		case c.Rounds > 1:
			return errors.New("--rounds alternates two proxies: add --compare-target HOST:PORT or --compare-spawn-proxyd PATH")
		case c.ComparePID != 0:
			return errors.New("--compare-proxy-pid is proxy B's: add --compare-target HOST:PORT")
		}
		return nil
	}
	switch {
	case c.CompareTarget != "" && c.CompareSpawn != "":
		return errors.New("proxy B is either --compare-target (running) or --compare-spawn-proxyd (started by the tool), not both")
	case c.Target == targetDirect && c.SpawnProxyd == "":
		return errors.New("proxy B is compared with proxy A: add --target HOST:PORT or --spawn-proxyd PATH")
	case c.Compare:
		return errors.New("--compare measures direct against proxied; with proxy B, A and B are compared instead: drop --compare")
	case c.ComparePID < 0:
		return errors.New("--compare-proxy-pid must not be negative")
	case c.ComparePID > 0 && c.CompareSpawn != "":
		return errors.New("--compare-proxy-pid is for an external proxy B; --compare-spawn-proxyd measures its own")
	case c.PrintConfig:
		return errors.New("--print-config prints proxy A's config; run it without proxy B")
	}
	if c.CompareTarget != "" {
		if _, port, err := net.SplitHostPort(c.CompareTarget); err != nil || port == "" || port == "0" {
			return fmt.Errorf("--compare-target %q: want HOST:PORT of proxy B", c.CompareTarget)
		}
		if c.CompareTarget == c.Target {
			return fmt.Errorf("--compare-target %s is proxy A's --target too: B must be another proxy", c.CompareTarget)
		}
	}
	_, portB, err := net.SplitHostPort(c.ComparePoolListen)
	if err != nil {
		return fmt.Errorf("--compare-pool-listen %q: want HOST:PORT: %w", c.ComparePoolListen, err)
	}
	if _, portA, _ := net.SplitHostPort(c.PoolListen); portA != "0" && c.PoolListen == c.ComparePoolListen {
		return fmt.Errorf("--pool-listen and --compare-pool-listen are both %s: each proxy needs its own pool (port %s once)", c.PoolListen, portB)
	}
	return nil
}

// Comparison is proxy B against proxy A over the rounds: for every figure,
// the value of each completed run, the median over each proxy's runs and
// B's median over A's.
type Comparison struct {
	A       string      `json:"a"`
	B       string      `json:"b"`
	Rounds  int         `json:"rounds"`
	Figures []CmpFigure `json:"figures"`
}

// CmpFigure is one figure of a Comparison. Ratio is absent when A's median
// is 0 or either proxy has no value.
type CmpFigure struct {
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	A       []float64 `json:"a"` // per completed run of A, in round order
	B       []float64 `json:"b"`
	AMedian float64   `json:"a_median"`
	BMedian float64   `json:"b_median"`
	Ratio   *float64  `json:"ratio_b_over_a,omitempty"`
}

// cmpFigure names a figure and reads it from a run; ok is false when the
// run has no value for it (no samples, no proxy PID).
type cmpFigure struct {
	name, unit string
	get        func(*RunReport) (float64, bool)
}

// summaryFig reads one percentile of a latency Summary.
func summaryFig(name string, s func(*RunReport) Summary, q func(Summary) float64) cmpFigure {
	return cmpFigure{name, "ms", func(r *RunReport) (float64, bool) {
		v := s(r)
		return q(v), v.Count > 0
	}}
}

// proxyFig reads a figure of the proxy's process.
func proxyFig(name, unit string, f func(*ProxyFig) float64) cmpFigure {
	return cmpFigure{name, unit, func(r *RunReport) (float64, bool) {
		if r.Proxy == nil || r.Proxy.Error != "" || r.Proxy.PID == 0 {
			return 0, false
		}
		return f(r.Proxy), true
	}}
}

func p50(s Summary) float64 { return s.P50 }
func p99(s Summary) float64 { return s.P99 }

// cmpFigures are the figures a comparison reports, in table order.
var cmpFigures = []cmpFigure{
	{"connect all miners", "s", func(r *RunReport) (float64, bool) { return r.Connect.TotalS, r.Connect.TotalS > 0 }},
	summaryFig("handshake p50", func(r *RunReport) Summary { return r.Connect.Handshake }, p50),
	summaryFig("fan-out p50", func(r *RunReport) Summary { return r.Fanout.Latency }, p50),
	summaryFig("fan-out p99", func(r *RunReport) Summary { return r.Fanout.Latency }, p99),
	summaryFig("forward (submit miner→pool) p50", func(r *RunReport) Summary { return r.Submit.Path }, p50),
	summaryFig("forward (submit miner→pool) p99", func(r *RunReport) Summary { return r.Submit.Path }, p99),
	summaryFig("submit round trip p50", func(r *RunReport) Summary { return r.Submit.RTT }, p50),
	{"shares accepted at the pool", "/s", func(r *RunReport) (float64, bool) { return r.Throughput.PoolAcceptedPerS, true }},
	{"upstream bytes (pool side in+out)", "B", func(r *RunReport) (float64, bool) { return float64(r.Bytes.PoolTotal), true }},
	{"upstream sessions", "", func(r *RunReport) (float64, bool) { return float64(r.Bytes.PoolSessions), r.Bytes.PoolSessions > 0 }},
	proxyFig("proxy CPU in the window", "% core", func(p *ProxyFig) float64 { return p.CPUWindowPct }),
	proxyFig("proxy CPU, whole run", "s", func(p *ProxyFig) float64 { return p.CPUTotalS }),
	proxyFig("proxy RSS after connect", "MiB", func(p *ProxyFig) float64 { return p.RSSConnectedMiB }),
	proxyFig("proxy peak RSS", "MiB", func(p *ProxyFig) float64 { return p.PeakRSSMiB }),
	proxyFig("proxy RSS per miner after connect", "KiB", func(p *ProxyFig) float64 { return p.RSSPerMinerKiB }),
	proxyFig("proxy RSS per miner at peak", "KiB", func(p *ProxyFig) float64 { return p.PeakRSSPerMinerKiB }),
}

// compare builds the Comparison of the completed runs named a and b.
func compare(runs []*RunReport, a, b string, rounds int) *Comparison {
	cmp := &Comparison{A: a, B: b, Rounds: rounds}
	for _, f := range cmpFigures {
		cf := CmpFigure{Name: f.name, Unit: f.unit, A: []float64{}, B: []float64{}}
		for _, rr := range runs {
			if !rr.Completed {
				continue
			}
			v, ok := f.get(rr)
			switch {
			case !ok:
			case rr.Path == a:
				cf.A = append(cf.A, v)
			case rr.Path == b:
				cf.B = append(cf.B, v)
			}
		}
		if len(cf.A) > 0 && len(cf.B) > 0 {
			cf.AMedian, cf.BMedian = median(cf.A), median(cf.B)
			if cf.AMedian != 0 {
				r := cf.BMedian / cf.AMedian
				cf.Ratio = &r
			}
		}
		cmp.Figures = append(cmp.Figures, cf)
	}
	return cmp
}

// median returns the median of vs (the mean of the middle two for an even
// count); 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fmtFigure formats a comparison value for the table.
func fmtFigure(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmtMS(v) + " ms"
	case "B":
		return fmtBytes(uint64(math.Max(v, 0)))
	case "":
		return fmtInt(int(math.Round(v)))
	}
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case a >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// write writes the B/A table.
func (cmp *Comparison) write(w io.Writer) {
	t := &table{}
	t.row(fmt.Sprintf("B/A over %d round(s), medians", cmp.Rounds), cmp.A, cmp.B, cmp.B+"/"+cmp.A)
	for _, f := range cmp.Figures {
		if len(f.A) == 0 || len(f.B) == 0 {
			t.row(f.Name, "-", "-", "-")
			continue
		}
		ratio := "-"
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *f.Ratio)
		}
		t.row(f.Name, fmtFigure(f.AMedian, f.Unit), fmtFigure(f.BMedian, f.Unit), ratio)
	}
	t.write(w)
}
