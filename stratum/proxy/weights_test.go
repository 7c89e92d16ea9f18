package proxy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// TestWeightedSplit: two pools of one level weighted 70/30 receive 70/30 of
// the hashrate (±5%) from 200 miners of mixed hashrate (a third of them
// three times as fast), measured at the pools.
func TestWeightedSplit(t *testing.T) {
	// The proxy runs on a clock 3 times faster than the wall clock; the
	// miners (wall time) submit 3 times as often, so in the proxy's time
	// the rates, the 2s rebalance interval and the 30 s + 15 s run are as
	// before: 45 s of routing in 15 s. (At 5 times, the miners' reconnect
	// backoff, wall time, weighed 5 times more in the proxy's time and the
	// split overshot.)
	const speed = 3
	a := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Seed: 3})
	b := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Seed: 4})
	px := startProxyFast(t, speed, []*stratumtest.Pool{a, b}, nil,
		"min_difficulty = 0.000001\nmax_difficulty = 0.000001\ninitial_difficulty = 0.000001\nrebalance_interval = \"2s\"",
		"weight = 70", "weight = 30")
	styles := stratumtest.AllStyles()
	slow := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{Miners: 134, Styles: styles, SharesPerMinute: 6 * speed,
		UserFunc: func(i int) string { return fmt.Sprintf("site.slow%d", i) }, Seed: 5,
		Miner: stratumtest.MinerOptions{AutoReconnect: true}})
	fast := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{Miners: 66, Styles: styles, SharesPerMinute: 18 * speed,
		UserFunc: func(i int) string { return fmt.Sprintf("site.fast%d", i) }, Seed: 6,
		Miner: stratumtest.MinerOptions{AutoReconnect: true}})
	if slow.Len()+fast.Len() != 200 {
		t.Fatalf("fleet of %d miners", slow.Len()+fast.Len())
	}

	// Let estimates form and rebalancing act, then measure a window at the
	// pools (their timestamps are wall time).
	time.Sleep(30 * time.Second / speed)
	start := time.Now()
	time.Sleep(15 * time.Second / speed)
	end := time.Now()
	sum := func(p *stratumtest.Pool) float64 {
		var d float64
		for _, s := range p.AcceptedShares() {
			if !s.ReceivedAt.Before(start) && s.ReceivedAt.Before(end) {
				d += s.Target // the difficulty the share was required to meet: its hashrate weight
			}
		}
		return d
	}
	da, db := sum(a), sum(b)
	if da+db == 0 {
		t.Fatal("no shares reached the pools")
	}
	share := da / (da + db)
	t.Logf("pool0 carried %.1f%% of the hashrate (target 70%%), pool1 %.1f%%; %d rebalance events",
		100*share, 100*(1-share), countEvents(px, "rebalance"))
	if math.Abs(share-0.70) > 0.05 {
		t.Fatalf("split %.1f/%.1f, want 70/30 within 5 points", 100*share, 100*(1-share))
	}
	checkAccountingEventually(t, px)
}

// TestChaos: 500 miners while pools restart at random for 60 s (of the
// proxy's time, 20 s of the wall clock's). No panic,
// no goroutine left behind, and the ledger balances.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 20 s")
	}
	// 60 s of the proxy's time in 20 s: see TestWeightedSplit.
	const speed = 3
	before := runtime.NumGoroutine()
	// Registered first, so it runs after every other cleanup (proxy Stop,
	// pools and fleet Close): nothing may be left running then.
	t.Cleanup(func() {
		var now int
		for i := 0; i < 200; i++ {
			now = runtime.NumGoroutine()
			if now <= before+5 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before, %d after the chaos run\n%s", before, now, buf[:n])
	})
	func() {
		p0 := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Seed: 7})
		p1 := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Seed: 8})
		p2 := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Seed: 9})
		px := startProxyFast(t, speed, []*stratumtest.Pool{p0, p1, p2}, []int{0, 0, 1},
			"initial_difficulty = 0.000001\nfailback_delay = \"3s\"\nno_pool_grace = \"3s\"\nrebalance_interval = \"2s\"")
		fleet, err := stratumtest.StartFleet(ctxFor(t, time.Minute), px.addr, stratumtest.FleetOptions{
			Miners: 500, Styles: stratumtest.AllStyles(), SharesPerMinute: 6 * speed, ContinueOnError: true, Seed: 10,
			Miner: stratumtest.MinerOptions{AutoReconnect: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(11, 12))
		pools := []*stratumtest.Pool{p0, p1, p2}
		deadline := time.Now().Add(60 * time.Second / speed)
		restarts := 0
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond / speed)
			p := pools[rng.IntN(len(pools))]
			p.Stop()
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond / speed)
			if err := p.Start(); err != nil {
				t.Fatalf("restarting a pool: %v", err)
			}
			restarts++
		}
		st := fleet.Stats()
		t.Logf("%d pool restarts; miners submitted %d, accepted %d, rejected %d; proxy moves %.0f",
			restarts, st.Submitted, st.Accepted, st.Rejected, metricValue(t, px, "proxyd_miner_moves_total", ""))
		if err := fleet.Close(); err != nil {
			t.Logf("fleet close: %v", err)
		}
		checkAccountingEventually(t, px)
		if st.Accepted == 0 {
			t.Error("no share was accepted during the run")
		}
	}()
}

func countEvents(px *testProxy, kind string) int {
	n := 0
	for _, e := range px.events.List(eventsQuery()) {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// checkAccountingEventually: the ledger balances once in-flight shares settle.
func checkAccountingEventually(t *testing.T, px *testProxy) {
	t.Helper()
	checkAccounting(t, px.Proxy)
}
