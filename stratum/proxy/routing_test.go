package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// levels builds a proxy over a primary (level 0) and a backup (level 1).
func levels(t *testing.T, serverExtra string) (primary, backup *stratumtest.Pool, px *testProxy) {
	t.Helper()
	return levelsOn(t, 0, serverExtra)
}

// levelsOn is levels on the wall clock (speed 0) or a fast one (startProxyFast).
func levelsOn(t *testing.T, speed int, serverExtra string) (primary, backup *stratumtest.Pool, px *testProxy) {
	t.Helper()
	primary = stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, Seed: 1})
	backup = stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5, Seed: 2, Extranonce1Func: func(id uint64) []byte { return []byte{0xbb, 0xbb, 0, byte(id)} }})
	px = startProxyFast(t, speed, []*stratumtest.Pool{primary, backup}, []int{0, 1}, serverExtra)
	return primary, backup, px
}

func TestFailoverAndFailback(t *testing.T) {
	// failback_delay and the failover's grace pass 4 times faster on the
	// proxy's clock; the events' times are on that clock too.
	primary, backup, px := levelsOn(t, 4, `failback_delay = "2s"`)
	ctx := ctxFor(t, 2*time.Minute)
	var miners []*stratumtest.Miner
	for i, style := range []stratumtest.Style{stratumtest.StyleNiceHash, stratumtest.StyleAntminer, stratumtest.StyleNiceHash, stratumtest.StyleBitaxe} {
		miners = append(miners, stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: style, User: "acct.m" + string(rune('a'+i)), AutoReconnect: true}))
	}
	var all []stratumtest.SubmitResult
	for _, m := range miners {
		r, err := m.SubmitOne(ctx)
		if err != nil || r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("before failover: %v %+v", err, r)
		}
		all = append(all, r)
	}
	if primary.Stats().Accepted != 4 || backup.Stats().Accepted != 0 {
		t.Fatalf("hashrate must start on the primary: primary %d backup %d", primary.Stats().Accepted, backup.Stats().Accepted)
	}

	// Kill the primary: every miner hashes on the backup.
	killed := time.Now()
	primary.Stop()
	// A share in flight at the kill may be stale or lose its verdict; a
	// miner is on the backup once a share is accepted there.
	all = append(all, hashOn(ctx, t, miners, backup, "the backup")...)
	onBackup := time.Since(killed)
	t.Logf("all 4 miners had a share accepted by the backup %s after the primary was killed", onBackup)
	failoverAt := lastEvent(t, px, "failover")
	if failoverAt.IsZero() {
		t.Fatal("no failover event")
	}
	// Measured from when proxyd declared the primary down (the target is 2 s).
	if d := time.Since(failoverAt); d > onBackup {
		t.Logf("declared down %s before all were on the backup", d)
	}

	// Bring the primary back: after failback_delay, everyone returns, one move each.
	if err := primary.Start(); err != nil {
		t.Fatal(err)
	}
	movesBefore := metricValue(t, px, "proxyd_miner_moves_total", "")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && lastEvent(t, px, "failback").IsZero() {
		time.Sleep(20 * time.Millisecond)
	}
	if lastEvent(t, px, "failback").IsZero() {
		t.Fatal("no failback")
	}
	if d := lastEvent(t, px, "failback").Sub(failoverAt); d < 2*time.Second {
		t.Errorf("failed back %s after failing over, before failback_delay", d)
	}
	all = append(all, hashOn(ctx, t, miners, primary, "the primary")...)
	if moved := metricValue(t, px, "proxyd_miner_moves_total", "") - movesBefore; moved != 4 {
		t.Errorf("fail-back moved %v miners, want exactly one move each (4)", moved)
	}
	// Accepted only what the pools accepted (a share's hash is in one of them).
	for _, r := range all {
		if r.Verdict == stratumtest.VerdictAccepted && !primary.AcceptedHash(r.Hash) && !backup.AcceptedHash(r.Hash) {
			t.Fatalf("miner told true for %s that no pool accepted", r.Hash)
		}
	}
	checkAccounting(t, px.Proxy)
}

func TestPoolWithoutJobsIsUnhealthy(t *testing.T) {
	silent := stratumtest.NewPool(t, stratumtest.PoolOptions{NoJobs: true})
	px := startProxyUnready(t, []string{silent.URL()}, []int{0}, "", `no_job_timeout = "1s"`)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := px.Ready(); err != nil && contains(err.Error(), "sent no job") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("a pool that authorizes but never sends a job must be unhealthy; Ready() = %v", px.Ready())
}

func TestAllPoolsDown(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, []int{0}, `no_pool_grace = "1s"`)
	// An extranonce-subscribed miner keeps its connection while proxyd looks
	// for a pool, so it is the one the grace applies to.
	m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleNiceHash, User: "acct.x"})
	pool.Stop()
	ctx := ctxFor(t, 30*time.Second)
	if err := m.WaitDisconnected(ctx); err != nil {
		t.Fatalf("miner kept with no pool: %v", err)
	}
	if px.Ready() == nil {
		t.Error("Ready() with no healthy pool")
	}
	if _, err := stratumtest.DialMiner(ctxFor(t, 5*time.Second), px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain}); err == nil {
		t.Error("a new miner was accepted with no healthy pool")
	}
	if n := metricValue(t, px, "proxyd_connections_refused_total", `reason="no_pool"`); n < 1 {
		t.Errorf("refusal not counted (no_pool refusals %v)", n)
	}
	if n := metricValue(t, px, "proxyd_miner_disconnects_total", `reason="no_pool"`); n < 1 {
		mfs, _ := px.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "proxyd_miner_disconnects_total" {
				t.Logf("disconnects: %v", mf.Metric)
			}
		}
		t.Errorf("disconnect after no_pool_grace not counted (%v)", n)
	}
	if lastEvent(t, px, "disconnect_all").IsZero() {
		t.Error("no journal entry for dropping the miners")
	}
	// The pool returns: proxyd is ready again and serves miners.
	if err := pool.Start(); err != nil {
		t.Fatal(err)
	}
	// Reconnects back off (up to 30 s, jittered) while the pool is down.
	for i := 0; i < 4000 && px.Ready() != nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	m2 := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "acct.y"})
	if r, err := m2.SubmitOne(ctx); err != nil || r.Verdict != stratumtest.VerdictAccepted {
		t.Fatalf("after the pool returned: %v %+v", err, r)
	}
	checkAccounting(t, px.Proxy)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// lastEvent is the time of the newest stratum journal entry of kind.
func lastEvent(t *testing.T, px *testProxy, kind string) time.Time {
	t.Helper()
	var at time.Time
	for _, e := range px.events.List(eventsQuery()) {
		if e.Kind == kind {
			at = e.Time
		}
	}
	return at
}

// TestPassthroughIdentity: each worker is authorized upstream on its own
// name, its shares are credited to it, and a refused worker is refused
// alone.
func TestPassthroughIdentity(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5,
		Authorize: func(user, _ string) bool { return !strings.HasSuffix(user, ".badrig") }})
	px := startProxyLevels(t, []*stratumtest.Pool{pool}, nil, "", `identity = "passthrough"`)
	ctx := ctxFor(t, time.Minute)
	good := []*stratumtest.Miner{
		stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "site.rig1"}),
		stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: stratumtest.StyleWhatsminer, User: "site.rig2"}),
	}
	if _, err := stratumtest.DialMiner(ctxFor(t, 15*time.Second), px.addr, stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "site.badrig"}); err == nil {
		t.Fatal("a worker the pool refused was authorized")
	}
	for _, m := range good {
		if _, err := m.SubmitShares(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
	users := pool.Users()
	for _, name := range []string{"acct.farm.rig1", "acct.farm.rig2"} {
		if users[name].Accepted != 2 {
			t.Errorf("pool credited %s with %d shares, want 2 (users: %v)", name, users[name].Accepted, users)
		}
	}
	if users["acct.farm"].Accepted != 0 {
		t.Error("shares were submitted under the aggregate user")
	}
	checkAccounting(t, px.Proxy)
}

// hashOn submits from each miner until one of its shares is accepted by pool
// (at most 6 tries each), and returns every result.
func hashOn(ctx context.Context, t *testing.T, miners []*stratumtest.Miner, pool *stratumtest.Pool, where string) []stratumtest.SubmitResult {
	t.Helper()
	var all []stratumtest.SubmitResult
	for i, m := range miners {
		for try := 0; ; try++ {
			r, err := m.SubmitOne(ctx)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, r)
			if r.Verdict == stratumtest.VerdictAccepted && pool.AcceptedHash(r.Hash) {
				break
			}
			if try == 5 {
				t.Fatalf("miner %d not hashing on %s: last %+v", i, where, r)
			}
		}
	}
	return all
}
