package logging

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/logkeep"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimited(t *testing.T, o RateLimitOptions) (*zap.Logger, *RateLimiter, *observer.ObservedLogs, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	core, logs := observer.New(zapcore.DebugLevel)
	o.Now = clk.Now
	rl := NewRateLimiter(core, o)
	return zap.New(rl.Core()), rl, logs, clk
}

func suppressedLines(logs *observer.ObservedLogs) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "similar messages suppressed") {
			out = append(out, e)
		}
	}
	return out
}

func TestRateLimiter(t *testing.T) {
	tests := []struct {
		name string
		// per is RateLimitOptions.PerSecond.
		per int
		// log writes the entries; clk advances the fake clock.
		log func(log *zap.Logger, clk *fakeClock)
		// wantPassed counts entries other than summaries that reach the output.
		wantPassed int
		// wantSummaries maps a suppressed message to its summary's count.
		wantSummaries map[string]uint64
	}{
		{"a refused-connection storm: 4,936 in 0.5 s", 10, func(log *zap.Logger, clk *fakeClock) {
			for i := 0; i < 4936; i++ {
				log.Warn("refusing miner connection", zap.String("remote", fmt.Sprintf("127.0.0.1:%d", 10000+i)), zap.String("limit", "per_ip"))
				if i%100 == 0 {
					clk.Add(10 * time.Millisecond)
				}
			}
		}, 10, map[string]uint64{"refusing miner connection": 4926}},
		{"a new second passes ten more", 10, func(log *zap.Logger, clk *fakeClock) {
			for i := 0; i < 30; i++ {
				log.Info("subscribe timeout")
			}
			clk.Add(time.Second)
			for i := 0; i < 30; i++ {
				log.Info("subscribe timeout")
			}
		}, 20, map[string]uint64{"subscribe timeout": 40}},
		{"reasons are kinds of their own", 10, func(log *zap.Logger, _ *fakeClock) {
			for i := 0; i < 50; i++ {
				log.Info("miner disconnected", zap.String("reason", "protocol_error"))
				log.Info("miner disconnected", zap.String("reason", "idle"))
			}
		}, 20, map[string]uint64{"miner disconnected": 80}},
		{"a reason set by With counts too", 10, func(log *zap.Logger, _ *fakeClock) {
			a, b := log.With(zap.String("reason", "a")), log.With(zap.String("reason", "b"))
			for i := 0; i < 15; i++ {
				a.Info("dropped")
				b.Info("dropped")
			}
		}, 20, map[string]uint64{"dropped": 10}},
		{"loggers are kinds of their own", 10, func(log *zap.Logger, _ *fakeClock) {
			for i := 0; i < 15; i++ {
				log.Named("stratum").Warn("slow")
				log.Named("switcher").Warn("slow")
			}
		}, 20, map[string]uint64{"slow": 10}},
		{"errors are never dropped", 10, func(log *zap.Logger, _ *fakeClock) {
			for i := 0; i < 500; i++ {
				log.Error("pool write failed")
			}
		}, 500, nil},
		{"logkeep entries are never dropped", 10, func(log *zap.Logger, _ *fakeClock) {
			for i := 0; i < 200; i++ {
				log.Warn("failover", logkeep.Field(), zap.String("to", "backup"))
			}
		}, 200, nil},
		{"a logkeep logger is never dropped", 10, func(log *zap.Logger, _ *fakeClock) {
			keep := log.With(logkeep.Field())
			for i := 0; i < 200; i++ {
				keep.Info("block candidate")
			}
		}, 200, nil},
		{"0 turns limiting off", 0, func(log *zap.Logger, _ *fakeClock) {
			for i := 0; i < 1000; i++ {
				log.Warn("refusing miner connection")
			}
		}, 1000, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, rl, logs, clk := newLimited(t, RateLimitOptions{PerSecond: tc.per})
			tc.log(log, clk)
			if got := logs.Len(); got != tc.wantPassed {
				t.Fatalf("%d entries passed before the flush, want %d", got, tc.wantPassed)
			}
			rl.Flush()
			sums := suppressedLines(logs)
			got := map[string]uint64{}
			for _, s := range sums {
				m := s.ContextMap()
				msg, _ := m["suppressed_msg"].(string)
				got[msg] += m["count"].(uint64)
				if !strings.HasPrefix(s.Message, fmt.Sprint(m["count"].(uint64))+" similar messages suppressed: "+msg) {
					t.Errorf("summary line %q does not say how many and which", s.Message)
				}
			}
			if len(got) != len(tc.wantSummaries) {
				t.Fatalf("summaries %v, want %v", got, tc.wantSummaries)
			}
			for msg, n := range tc.wantSummaries {
				if got[msg] != n {
					t.Errorf("summary for %q counts %d, want %d", msg, got[msg], n)
				}
				if v := testutil.ToFloat64(rl.suppressed.WithLabelValues(msg)); uint64(v) != n {
					t.Errorf("proxyd_log_suppressed_total{message=%q} = %v, want %d", msg, v, n)
				}
			}
			// A second flush has nothing new to say.
			before := logs.Len()
			rl.Flush()
			if logs.Len() != before {
				t.Errorf("second flush wrote %d more lines", logs.Len()-before)
			}
		})
	}
}

func TestRateLimiterSummaryKeepsLevelAndLogger(t *testing.T) {
	log, rl, logs, _ := newLimited(t, RateLimitOptions{PerSecond: 1})
	for i := 0; i < 3; i++ {
		log.Named("stratum").Warn("refusing miner connection", zap.String("reason", "per_ip"))
	}
	rl.Flush()
	sums := suppressedLines(logs)
	if len(sums) != 1 {
		t.Fatalf("%d summaries, want 1", len(sums))
	}
	s := sums[0]
	if s.Level != zapcore.WarnLevel || s.LoggerName != "stratum" || s.ContextMap()["reason"] != "per_ip" || s.ContextMap()["count"] != uint64(2) {
		t.Errorf("summary %+v %v: want level warn, logger stratum, reason per_ip, count 2", s.Entry, s.ContextMap())
	}
}

// TestRateLimiterBoundsItsTable: client-chosen reason values cannot grow the
// table past MaxKeys, nor the metric past MaxLabels, and idle kinds are
// forgotten at the next flush.
func TestRateLimiterBoundsItsTable(t *testing.T) {
	log, rl, logs, clk := newLimited(t, RateLimitOptions{PerSecond: 2, MaxKeys: 8, MaxLabels: 3})
	for i := 0; i < 1000; i++ {
		log.Info("bad name", zap.String("reason", fmt.Sprintf("worker-%d", i)))
	}
	rl.mu.Lock()
	kinds := len(rl.kinds)
	rl.mu.Unlock()
	if kinds > 9 { // MaxKeys plus the overflow kind
		t.Fatalf("%d kinds tracked, want at most 9", kinds)
	}
	// 8 kinds pass their first entry; the overflow kind passes 2 and drops the rest.
	if got := logs.Len(); got != 10 {
		t.Errorf("%d entries passed, want 10", got)
	}
	rl.Flush()
	clk.Add(2 * time.Second)
	rl.Flush()
	rl.mu.Lock()
	kinds = len(rl.kinds)
	rl.mu.Unlock()
	if kinds != 0 {
		t.Errorf("%d idle kinds kept after two flushes, want 0", kinds)
	}

	log, rl, _, _ = newLimited(t, RateLimitOptions{PerSecond: 2, MaxLabels: 3})
	for i := 0; i < 5; i++ {
		for j := 0; j < 4; j++ {
			log.Info(fmt.Sprintf("message %d", i))
		}
	}
	var labels int
	ch := make(chan prometheus.Metric, 100)
	rl.Collect(ch)
	close(ch)
	for range ch {
		labels++
	}
	if labels != 4 { // MaxLabels plus "other"
		t.Errorf("%d metric series, want 4", labels)
	}
	if v := testutil.ToFloat64(rl.suppressed.WithLabelValues(otherLabel)); v != 4 {
		t.Errorf("other = %v, want the 4 drops of the two messages past MaxLabels", v)
	}
}

func TestRateLimiterSetPerSecond(t *testing.T) {
	log, rl, logs, clk := newLimited(t, RateLimitOptions{PerSecond: 0})
	for i := 0; i < 50; i++ {
		log.Info("x")
	}
	rl.SetPerSecond(5)
	clk.Add(time.Second)
	for i := 0; i < 50; i++ {
		log.Info("x")
	}
	if got := logs.Len(); got != 55 {
		t.Errorf("%d passed, want 50 unlimited then 5", got)
	}
}

func TestRateLimiterOddMessages(t *testing.T) {
	log, rl, _, _ := newLimited(t, RateLimitOptions{PerSecond: 1})
	long := strings.Repeat("é", 200) // cut inside a rune if cut naively
	for _, msg := range []string{long, "bad \xff utf8", ""} {
		for i := 0; i < 3; i++ {
			log.Info(msg)
		}
	}
	rl.Flush() // must not panic on a label Prometheus would refuse
}

// TestNewIsRateLimited: the logger the daemon builds from [log] is limited
// at rate_limit_per_second, end to end through the JSON encoder.
func TestNewIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New(config.Log{Level: "info", Format: "json", RateLimitPerSecond: 10}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i < 4936; i++ {
		log.Warn("refusing miner connection", zap.String("limit", "per_ip"))
	}
	// The real clock: allow 10 per started second however slow the machine.
	bound := 10 * (int(time.Since(t0)/time.Second) + 1)
	log.Error("pool down") // never dropped
	if got := strings.Count(buf.String(), "refusing miner connection"); got > bound {
		t.Fatalf("%d lines for one message, want at most %d", got, bound)
	}
	rl := LimiterOf(log)
	if rl == nil {
		t.Fatal("LimiterOf found no limiter behind New's logger")
	}
	rl.Flush()
	out := buf.String()
	if !strings.Contains(out, "pool down") || !strings.Contains(out, `similar messages suppressed: refusing miner connection`) {
		t.Errorf("output lacks the error or the summary:\n%s", out)
	}
	if LimiterOf(zap.NewNop()) != nil {
		t.Error("LimiterOf found a limiter behind a plain logger")
	}
}
