package proxy

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// End-to-end tests of pool health, reject alerts, the way back from every
// unhealthy state and dial backoff (issue 12, findings 11, 12, 13, 15).
// They use only what the proxy showed before that work (Ready, metrics,
// the journal, miners' connections), so each can be run against the old
// code.

// waitUntil polls cond every 10 ms for at most d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRejectStormKeepsMinersOnTheOnlyPool (finding 11): the only pool
// rejects every share for a while (a stale storm). That is an alert, not an
// outage: nobody is disconnected, new miners are still admitted, and once
// the pool accepts again so do the miners' shares.
func TestRejectStormKeepsMinersOnTheOnlyPool(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, []int{0}, `no_pool_grace = "1s"`)
	ctx := ctxFor(t, time.Minute)
	miners := []*stratumtest.Miner{
		stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.xn"}),
		stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.s19"}),
	}
	const storm = 30
	pool.RejectNext(storm, 21, "Stale share")
	for _, m := range miners {
		res, err := m.SubmitShares(ctx, storm/2)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Verdict != stratumtest.VerdictRejected || r.Code != 21 {
				t.Fatalf("during the storm: %v %d %q, want the pool's stale reject", r.Verdict, r.Code, r.Message)
			}
		}
	}
	// Wait for a decision on the pool (an alert now, an unhealthy pool
	// before), then for longer than no_pool_grace: by then the old code had
	// dropped the farm.
	decided := func() bool {
		return !lastEvent(t, px, "pool_reject_alert").IsZero() || !lastEvent(t, px, "no_pool").IsZero()
	}
	if !waitUntil(10*time.Second, decided) {
		t.Fatal("no routing decision after 30 rejected shares")
	}
	dropped := func() bool { return metricValue(t, px, "proxyd_miner_disconnects_total", "") > 0 }
	if waitUntil(2*time.Second+2*janitorEvery, dropped) {
		t.Errorf("a reject storm on the only pool disconnected miners: %v no_pool", metricValue(t, px, "proxyd_miner_disconnects_total", `reason="no_pool"`))
	}
	if err := px.Ready(); err != nil {
		t.Errorf("a pool that rejects shares but gives work made the proxy unready: %v", err)
	}
	if !lastEvent(t, px, "no_pool").IsZero() || !lastEvent(t, px, "disconnect_all").IsZero() {
		t.Error("journal shows no_pool or disconnect_all for a reject storm")
	}
	if v := metricValue(t, px, "proxyd_pool_reject_alert", `pool="pool0"`); v != 1 {
		t.Errorf("proxyd_pool_reject_alert = %v, want 1", v)
	}
	if v := metricValue(t, px, "proxyd_pool_reject_ratio", `pool="pool0"`); v != 1 {
		t.Errorf("proxyd_pool_reject_ratio = %v, want 1 (30 of 30 rejected)", v)
	}
	if v := metricValue(t, px, "proxyd_pool_up", `pool="pool0"`); v != 1 {
		t.Errorf("proxyd_pool_up = %v, want 1", v)
	}
	// The storm is over: the same connections hash on, and new miners come.
	for _, m := range append(miners, stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleBitaxe, User: "acct.new"})) {
		if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("after the storm: %v %+v", err, r)
		}
		if n := m.Stats().Connects; n != 1 {
			t.Errorf("%s connected %d times, want once", m.User(), n)
		}
	}
	checkAccounting(t, px.Proxy)
}

// TestBlockCandidateRejectsDoNotCount (finding 15, second run): a pool
// whose share target is easier than proxyd's vardiff rejects block
// candidates as shares ("23 Above target"). Those verdicts say nothing
// about the pool's health or the miners' work: no alert, no health change.
func TestBlockCandidateRejectsDoNotCount(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, NBits: stratumtest.EasyNBits})
	px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001\nno_pool_grace = \"1s\"", "")
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.block"})
	ctx := ctxFor(t, time.Minute)
	const n = 25
	pool.RejectNext(n, 23, "Above target")
	res, err := m.SubmitShares(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Verdict != stratumtest.VerdictRejected || r.Code != 23 {
			t.Fatalf("candidate: %v %d %q, want the pool's 23", r.Verdict, r.Code, r.Message)
		}
	}
	if got := metricValue(t, px, "proxyd_block_candidates_total", ""); got != n {
		t.Fatalf("%v block candidates forwarded, want %d", got, n)
	}
	// Several janitor ticks: the old code judged the pool on the first.
	healthy := func() bool { return px.Ready() == nil && metricValue(t, px, "proxyd_pool_up", `pool="pool0"`) == 1 }
	if !waitUntil(0, healthy) || waitUntil(4*janitorEvery, func() bool { return !healthy() }) {
		t.Fatalf("rejected block candidates made the pool unhealthy: %v", px.Ready())
	}
	if v := metricValue(t, px, "proxyd_pool_reject_alert", ""); v != 0 {
		t.Errorf("rejected block candidates raised a reject alert")
	}
	for _, e := range px.events.List(eventsQuery()) {
		if e.Kind == "pool_health" && e.To == "down" {
			t.Errorf("pool judged down: %+v", e)
		}
	}
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after: %v %+v", err, r)
	}
	checkAccounting(t, px.Proxy)
}

// TestStalledLinkRecovers (finding 15): the link to the only pool stalls;
// the shares forwarded meanwhile time out. When the link recovers the pool
// is usable again at once, with or without miners connected: it was never
// judged unhealthy for the timeouts, only alerted.
func TestStalledLinkRecovers(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, JobInterval: 250 * time.Millisecond})
	link := newRelay(t, pool.Addr())
	px := startProxyURLs(t, []string{link.URL()}, []int{0}, "", `no_job_timeout = "10s"`)
	if err := px.Ready(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, time.Minute)
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.stall"})
	if r, err := m.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("before the stall: %v %+v", err, r)
	}

	link.stall()
	const n = 25
	var subs []*stratumtest.Submission
	for range n {
		s, err := m.Submit(ctx, stratumtest.SubmitRequest{})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	for _, s := range subs {
		r, err := s.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Verdict != stratumtest.VerdictRejected || !strings.Contains(r.Message, "did not answer") {
			t.Fatalf("share during the stall: %v %q, want a timeout error", r.Verdict, r.Message)
		}
	}
	link.resume()
	m.Close() // no miner left to produce verdicts

	if !waitUntil(10*time.Second, func() bool { return px.Ready() == nil }) {
		t.Fatalf("the link recovered but the pool stays unusable: %v", px.Ready())
	}
	// Give a judgement made on the timeouts every chance to show.
	if waitUntil(4*janitorEvery, func() bool { return px.Ready() != nil }) {
		t.Fatalf("pool judged unhealthy after the link recovered: %v", px.Ready())
	}
	if !waitUntil(5*time.Second, func() bool { return metricValue(t, px, "proxyd_pool_reject_alert", "") == 1 }) {
		t.Error("25 timeouts in a row raised no reject alert")
	}
	m2 := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleWhatsminer, User: "acct.after"})
	if r, err := m2.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after the link recovered: %v %+v", err, r)
	}
	checkAccounting(t, px.Proxy)
}

// TestStalledLinkNoJobsComesBackWithoutMiners: a stall long enough to make
// the pool unhealthy (no job for no_job_timeout; its session is replaced
// after twice that) ends with the pool healthy again, found by proxyd's own
// session: no miner is connected to produce any traffic.
func TestStalledLinkNoJobsComesBackWithoutMiners(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, JobInterval: 200 * time.Millisecond})
	link := newRelay(t, pool.Addr())
	px := startProxyURLs(t, []string{link.URL()}, []int{0}, "", `no_job_timeout = "1s"`)
	if err := px.Ready(); err != nil {
		t.Fatal(err)
	}
	dialsBefore := link.dials.Load()
	link.stall()
	if !waitUntil(10*time.Second, func() bool { return px.Ready() != nil }) {
		t.Fatal("no job for no_job_timeout, yet the pool stays healthy")
	}
	// The silent session is replaced by a fresh one (which waits behind the
	// stalled link).
	if !waitUntil(10*time.Second, func() bool { return link.dials.Load() > dialsBefore }) {
		t.Error("the silent session was never replaced")
	}
	link.resume()
	if !waitUntil(20*time.Second, func() bool { return px.Ready() == nil }) {
		t.Fatalf("the link recovered but the pool stays unhealthy: %v", px.Ready())
	}
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.back"})
	if r, err := m.SubmitOne(ctxFor(t, 30*time.Second)); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after the stall: %v %+v", err, r)
	}
}

// TestRejectAlertMovesToAHealthierPool: with a backup that is fine, miners
// leave a primary in reject alert; the primary still counts as healthy.
func TestRejectAlertMovesToAHealthierPool(t *testing.T) {
	primary, backup, px := levels(t, "")
	ctx := ctxFor(t, time.Minute)
	var miners []*stratumtest.Miner
	for i, style := range []stratumtest.Style{stratumtest.StyleNiceHash, stratumtest.StyleAntminer} {
		miners = append(miners, stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: style, User: "acct.r" + string(rune('a'+i)), AutoReconnect: true}))
	}
	primary.RejectNext(30, 23, "Low difficulty share")
	alerted := func() bool { return metricValue(t, px, "proxyd_pool_reject_alert", `pool="pool0"`) == 1 }
	for i := 0; !alerted(); i++ {
		if ctx.Err() != nil {
			t.Fatal("no reject alert on the primary")
		}
		// Errors are expected once miners are being moved.
		_, _ = miners[i%len(miners)].SubmitOne(ctx)
	}
	hashOn(ctx, t, miners, backup, "the backup")
	if v := metricValue(t, px, "proxyd_pool_up", `pool="pool0"`); v != 1 {
		t.Errorf("primary's proxyd_pool_up = %v: an alert is not an outage", v)
	}
	checkAccounting(t, px.Proxy)
}

// TestPoolDeathDialsBackOff (finding 12): when a pool dies under many
// sessions, proxyd dials it once, then backs off (1–2 s, then 2–4 s): not
// one dial per lost session or waiting miner. Counted at a relay that
// plays the dead pool (it accepts, then closes at once).
func TestPoolDeathDialsBackOff(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	link := newRelay(t, pool.Addr())
	px := startProxyURLs(t, []string{link.URL()}, []int{0}, "", "miners_per_session = 1")
	if err := px.Ready(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, time.Minute)
	for i := range 8 {
		style := stratumtest.StyleNiceHash // keeps its connection and waits to be moved
		if i%4 == 3 {
			style = stratumtest.StyleAntminer // told to reconnect, and does
		}
		m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: style, User: "acct.d" + string(rune('a'+i)), AutoReconnect: true})
		if err := m.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if s := metricValue(t, px, "proxyd_upstream_sessions", ""); s < 8 {
		t.Fatalf("%v sessions for 8 miners at one per session", s)
	}
	// Sessions lost within flapWindow of their handshake count as failed
	// attempts; a farm's sessions are older than that.
	time.Sleep(flapWindow)
	before := link.dials.Load()
	link.die()
	// In this window the schedule allows the immediate redial and the
	// first retry (1–2 s later); the second retry comes 2–4 s after that.
	time.Sleep(2500 * time.Millisecond)
	dials := link.dials.Load() - before
	t.Logf("%d dials in the 2.5 s after the pool died", dials)
	if dials > 2 {
		t.Errorf("%d dials in the 2.5 s after the pool died, want at most 2: backoff must apply from the first failure", dials)
	}
	if dials == 0 {
		t.Error("no redial at all after the pool died")
	}
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 8<<20)
	n := runtime.Stack(buf, true)
	c := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, fn) {
			c++
		}
	}
	return c
}

const relocateFn = "proxy.(*miner).relocate"

// TestMoveEndsWithItsMiner (finding 13): a miner waiting to be moved (its
// pool died, none is healthy) that disconnects takes its wait with it; one
// that stays waits rehomeTimeout, not subscribe_timeout, before proxyd lets
// it go so its firmware can fail over.
func TestMoveEndsWithItsMiner(t *testing.T) {
	// rehomeTimeout passes 10 times faster on the proxy's clock.
	const speed = 10
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxyFast(t, speed, []*stratumtest.Pool{pool}, []int{0}, "no_pool_grace = \"5m\"\nsubscribe_timeout = \"5m\"")
	leaver := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.leaver"})
	stayer := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.stayer"})
	ctx := ctxFor(t, time.Minute)
	for _, m := range []*stratumtest.Miner{leaver, stayer} {
		if err := m.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pool.Stop()
	if !waitUntil(10*time.Second, func() bool { return goroutinesIn(relocateFn) == 2 }) {
		t.Fatalf("%d miners waiting to be moved, want 2", goroutinesIn(relocateFn))
	}
	lost := time.Now()
	leaver.Close()
	if !waitUntil(3*time.Second, func() bool { return goroutinesIn(relocateFn) == 1 }) {
		t.Fatalf("a disconnected miner is still waiting to be moved (%d waits)", goroutinesIn(relocateFn))
	}
	if err := stayer.WaitDisconnected(ctxFor(t, rehomeTimeout/speed+10*time.Second)); err != nil {
		t.Fatalf("a miner waiting for a pool session was kept past rehomeTimeout (%s): %v", rehomeTimeout, err)
	}
	t.Logf("the miner left waiting was let go %s after its pool died", time.Since(lost).Round(time.Millisecond))
	if !waitUntil(time.Second, func() bool {
		return metricValue(t, px, "proxyd_miner_disconnects_total", `reason="no_pool_session"`) == 1
	}) {
		t.Errorf("no_pool_session disconnects = %v, want 1", metricValue(t, px, "proxyd_miner_disconnects_total", `reason="no_pool_session"`))
	}
	if !waitUntil(time.Second, func() bool { return goroutinesIn(relocateFn) == 0 }) {
		t.Errorf("%d moves still running after their miners closed", goroutinesIn(relocateFn))
	}
}

// TestStopJoinsMinerTasks (finding 13): Stop returns only after every move
// and reconnect grace period it started has ended: none is left to log
// after the test (the old code's "Log in goroutine after ... has completed").
func TestStopJoinsMinerTasks(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, []int{0}, "no_pool_grace = \"5m\"\nsubscribe_timeout = \"5m\"")
	ctx := ctxFor(t, time.Minute)
	xn := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.xn"})
	plain := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.plain"})
	for _, m := range []*stratumtest.Miner{xn, plain} {
		if err := m.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pool.Stop()
	if err := plain.WaitEvents(ctx, stratumtest.EventReconnect, 1); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(10*time.Second, func() bool { return goroutinesIn(relocateFn) == 1 }) {
		t.Fatalf("the extranonce-subscribed miner is not waiting to be moved")
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := px.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{relocateFn, "proxy.(*miner).reconnect", "proxy.(*miner).moveTo", "proxy.(*pool).keep", "proxy.(*upstream).run"} {
		if n := goroutinesIn(fn); n != 0 {
			t.Errorf("%d goroutines in %s after Stop returned", n, fn)
		}
	}
}
