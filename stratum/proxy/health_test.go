package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hashgate/proxyd/internal/events"
)

func TestBackoffDelay(t *testing.T) {
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	tests := []struct {
		failures int
		lo, hi   time.Duration
	}{
		{1, time.Second, 2 * time.Second},
		{2, 2 * time.Second, 4 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{4, 8 * time.Second, 16 * time.Second},
		{5, 15 * time.Second, 30 * time.Second},
		{6, 15 * time.Second, 30 * time.Second},
		{1000, 15 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		lo, hi := backoffDelay(tt.failures, lowest), backoffDelay(tt.failures, highest)
		if lo != tt.lo || hi != tt.hi {
			t.Errorf("after %d failures: wait %s–%s, want %s–%s", tt.failures, lo, hi, tt.lo, tt.hi)
		}
		if lo < backoffMin || hi > backoffMax {
			t.Errorf("after %d failures: %s–%s outside the documented %s–%s", tt.failures, lo, hi, backoffMin, backoffMax)
		}
	}
}

func TestVerdictWindow(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var w verdictWindow
	if r, n := w.ratio(t0); r != 0 || n != 0 {
		t.Fatalf("empty window: %v of %d", r, n)
	}
	for i := range 60 { // only the last rejectWindow count: 10 good, then 20 good and 30 bad
		w.add(t0, i >= 30)
	}
	if r, n := w.ratio(t0); n != rejectWindow || r != 30.0/50 {
		t.Fatalf("ratio %v of %d, want 0.6 of 50", r, n)
	}
	w.add(t0.Add(time.Minute), false)
	if r, n := w.ratio(t0.Add(rejectMaxAge)); n != 1 || r != 0 {
		t.Fatalf("after rejectMaxAge: %v of %d, want only the newer verdict (0 of 1)", r, n)
	}
}

// routingFixture is a proxy that is never started: its pools have fake
// sessions that deliver jobs, and its clock is the test's. The test plays
// the router's goroutine: it hands the router its queued messages and runs
// its evaluation.
type routingFixture struct {
	t      *testing.T
	p      *Proxy
	s      *server
	events *events.Log
	reg    *prometheus.Registry
	now    time.Time
	skip   int // journal entries from the fixture's start
}

func newRoutingFixture(t *testing.T, levels []int, serverExtra string) *routingFixture {
	t.Helper()
	doc := "[[server]]\nname = \"farm\"\nlisten = \"127.0.0.1:0\"\n" + serverExtra + "\n"
	for i, l := range levels {
		doc += fmt.Sprintf("[[pool]]\nname = \"pool%d\"\nurl = \"stratum+tcp://127.0.0.1:9\"\nuser = \"acct.farm\"\nlevel = %d\n", i, l)
	}
	f := &routingFixture{t: t, reg: prometheus.NewRegistry(), now: time.Unix(1_800_000_000, 0)}
	o := testOptions(t, doc)
	o.Metrics = f.reg
	f.events = o.Events
	var err error
	f.p, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.p.cancel)
	f.s = f.p.servers[0]
	for i, pl := range f.s.pools {
		u := newUpstream(pl, uint64(i+1))
		u.setState(stateActive)
		u.connectedAt, u.readyAt = f.now, f.now
		pl.sessions = append(pl.sessions, u)
	}
	f.tick(0)
	f.skip = len(f.events.List(events.Query{Component: "stratum"}))
	return f
}

// tick advances the clock by d (the pools keep sending jobs) and runs routing.
func (f *routingFixture) tick(d time.Duration) {
	f.now = f.now.Add(d)
	for _, pl := range f.s.pools {
		for _, u := range pl.sessions {
			u.lastJobAt = f.now
		}
	}
	f.route()
}

// route runs the router as its goroutine would: its queued messages, then
// an evaluation at the current time.
func (f *routingFixture) route() {
	f.s.router.drain()
	f.s.router.evaluate(f.now)
}

// verdicts feeds pool i n verdicts at the current time, through the
// router's queue as the sessions do.
func (f *routingFixture) verdicts(i, n int, bad bool) {
	for range n {
		f.s.router.noteVerdict(f.s.pools[i], f.now, bad)
	}
	f.s.router.drain()
}

func (f *routingFixture) level() int { return f.s.router.view.Load().level }

func (f *routingFixture) carrying() string { return poolNames(f.s.carrying()) }

// kinds lists the journal's kinds, with To for alert events.
func (f *routingFixture) kinds() string {
	var out []string
	for _, e := range f.events.List(events.Query{Component: "stratum"})[f.skip:] {
		k := e.Kind
		if k == "pool_reject_alert" || k == "pool_health" {
			k += ":" + e.Subject[strings.Index(e.Subject, "/")+1:] + ":" + e.To
		}
		out = append(out, k)
	}
	return strings.Join(out, " ")
}

func (f *routingFixture) metric(name, match string) float64 {
	f.t.Helper()
	return metricValue(f.t, &testProxy{Proxy: f.p, reg: f.reg}, name, match)
}

// TestRejectAlertKeepsTheOnlyPoolCarrying (findings 11, 15): the only pool's
// reject alert is raised, shown and cleared; it never stops the pool from
// carrying, and clearing needs no miner.
func TestRejectAlertKeepsTheOnlyPoolCarrying(t *testing.T) {
	f := newRoutingFixture(t, []int{0}, `no_pool_grace = "1s"`)
	f.verdicts(0, minRejectSample-1, true)
	f.tick(janitorEvery)
	if f.metric("proxyd_pool_reject_alert", "") != 0 {
		t.Fatalf("alert raised on %d verdicts, fewer than minRejectSample", minRejectSample-1)
	}
	f.verdicts(0, 6, true)
	f.tick(janitorEvery)
	if f.metric("proxyd_pool_reject_alert", `pool="pool0"`) != 1 || f.metric("proxyd_pool_reject_ratio", `pool="pool0"`) != 1 {
		t.Fatal("25 rejects of 25: no alert")
	}
	f.tick(time.Minute) // far past no_pool_grace
	if f.level() != 0 || f.carrying() != "pool0" || f.p.Ready() != nil {
		t.Fatalf("level %d carrying %q ready %v: the only pool must carry through its alert", f.level(), f.carrying(), f.p.Ready())
	}
	if notes := f.p.ReadyNotes(); len(notes) != 1 || !strings.Contains(notes[0], "server farm: pool pool0 reject alert: rejected or left unanswered 100% of its last 25 shares") {
		t.Errorf("ReadyNotes = %q", notes)
	}
	// Miners keep hashing and the pool accepts again: the ratio falls to
	// 20 of 50. Past alertHold the alert clears.
	f.verdicts(0, 30, false)
	f.tick(janitorEvery)
	if f.metric("proxyd_pool_reject_alert", "") != 0 {
		t.Fatal("alert not cleared at 40% rejects")
	}
	if got, want := f.kinds(), "pool_reject_alert:pool0:alert pool_reject_alert:pool0:ok"; got != want {
		t.Errorf("journal %q, want %q", got, want)
	}
	if len(f.p.ReadyNotes()) != 0 {
		t.Errorf("notes after the alert cleared: %q", f.p.ReadyNotes())
	}
}

// TestRejectAlertHolds: an alert is not cleared (nor raised again) within
// alertHold, however the ratio moves around max_reject_rate.
func TestRejectAlertHolds(t *testing.T) {
	f := newRoutingFixture(t, []int{0}, "")
	f.verdicts(0, 25, true)
	f.tick(janitorEvery)
	f.verdicts(0, 25, false) // 25 of 50: at the limit, not above
	f.tick(alertHold / 2)
	if f.metric("proxyd_pool_reject_alert", "") != 1 {
		t.Fatal("alert cleared within alertHold")
	}
	f.tick(alertHold / 2)
	if f.metric("proxyd_pool_reject_alert", "") != 0 {
		t.Fatal("alert not cleared after alertHold at 50% rejects (max_reject_rate 50%)")
	}
	f.verdicts(0, 30, true) // 30 of the last 50
	f.tick(janitorEvery)
	if f.metric("proxyd_pool_reject_alert", "") != 0 {
		t.Fatal("alert raised again within alertHold of clearing")
	}
	f.tick(alertHold)
	if f.metric("proxyd_pool_reject_alert", "") != 1 {
		t.Fatal("alert not raised again after alertHold")
	}
}

// TestRejectAlertMovesWithinALevel: of two pools of one level, the one in
// reject alert stops carrying; the other takes the level's hashrate.
func TestRejectAlertMovesWithinALevel(t *testing.T) {
	f := newRoutingFixture(t, []int{0, 0}, "")
	if f.carrying() != "pool0,pool1" {
		t.Fatalf("carrying %q", f.carrying())
	}
	f.verdicts(0, 25, true)
	f.tick(janitorEvery)
	if f.level() != 0 || f.carrying() != "pool1" {
		t.Fatalf("level %d carrying %q, want level 0 carried by pool1 alone", f.level(), f.carrying())
	}
	// Both in alert: both carry again (there is nothing better).
	f.verdicts(1, 25, true)
	f.tick(janitorEvery)
	if f.carrying() != "pool0,pool1" {
		t.Fatalf("both in alert: carrying %q, want both", f.carrying())
	}
	if got, want := f.kinds(), "pool_reject_alert:pool0:alert failover pool_reject_alert:pool1:alert"; got != want {
		t.Errorf("journal %q, want %q", got, want)
	}
}

// TestRejectAlertFailoverAndFailback: a primary in reject alert hands the
// hashrate to a backup at once. With its miners gone it gets no verdicts;
// its alert clears when the last ones are rejectMaxAge old, and it carries
// again failback_delay later.
func TestRejectAlertFailoverAndFailback(t *testing.T) {
	f := newRoutingFixture(t, []int{0, 1}, `failback_delay = "1m"`)
	f.verdicts(0, 25, true)
	f.tick(janitorEvery)
	if f.level() != 1 || f.carrying() != "pool1" {
		t.Fatalf("level %d carrying %q, want the backup", f.level(), f.carrying())
	}
	f.tick(rejectMaxAge - 2*janitorEvery)
	if f.level() != 1 || f.metric("proxyd_pool_reject_alert", `pool="pool0"`) != 1 {
		t.Fatalf("alert cleared before its verdicts aged out")
	}
	f.tick(2 * janitorEvery)
	if f.metric("proxyd_pool_reject_alert", `pool="pool0"`) != 0 {
		t.Fatal("alert kept past rejectMaxAge with no verdicts")
	}
	f.tick(time.Minute - time.Second)
	if f.level() != 1 {
		t.Fatal("failed back before failback_delay")
	}
	f.tick(time.Second)
	if f.level() != 0 || f.carrying() != "pool0" {
		t.Fatalf("level %d carrying %q, want the primary back after failback_delay", f.level(), f.carrying())
	}
	if got, want := f.kinds(), "pool_reject_alert:pool0:alert failover pool_reject_alert:pool0:ok failback"; got != want {
		t.Errorf("journal %q, want %q", got, want)
	}
}

// TestUnhealthyCausesAreTyped: metrics label state changes from the typed
// cause, whatever the words say.
func TestUnhealthyCausesAreTyped(t *testing.T) {
	f := newRoutingFixture(t, []int{0}, "")
	pl := f.s.pools[0]
	pl.sessions[0].lastJobAt = f.now
	f.now = f.now.Add(pl.cfg.NoJobTimeout + time.Second)
	f.route()
	if f.metric("proxyd_pool_state_changes_total", `reason="no_job"`) != 1 {
		t.Errorf("no_job changes = %v", f.metric("proxyd_pool_state_changes_total", `reason="no_job"`))
	}
	pl.mu.Lock()
	pl.sessions = nil
	pl.lastErr = fmt.Errorf("authorized but the words do not matter")
	pl.failures = 1
	pl.mu.Unlock()
	f.tick(janitorEvery)
	cause := f.s.router.health[pl].cause
	if cause != causeConnection {
		t.Errorf("cause %v, want connection", cause)
	}
}
