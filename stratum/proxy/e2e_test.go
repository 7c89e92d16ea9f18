package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// testProxy runs a Proxy in-process against pools on loopback.
type testProxy struct {
	*Proxy
	addr string
	reg  *prometheus.Registry
}

// serverTOML is the [[server]] table the tests start from; extra lines
// override or add keys.
func startProxy(t *testing.T, pools []*stratumtest.Pool, serverExtra, poolExtra string) *testProxy {
	t.Helper()
	return startProxyLevels(t, pools, nil, serverExtra, poolExtra)
}

// startProxyLevels gives pool i failover level levels[i] (all 0 when nil).
// One poolExtra applies to every pool; several apply to pool i each.
func startProxyLevels(t *testing.T, pools []*stratumtest.Pool, levels []int, serverExtra string, poolExtra ...string) *testProxy {
	t.Helper()
	urls := make([]string, len(pools))
	for i, pl := range pools {
		urls[i] = pl.URL()
	}
	return startProxyURLs(t, urls, levels, serverExtra, poolExtra...)
}

// startProxyURLs is startProxyLevels for pools given by URL (a relay in
// front of a test pool, say).
func startProxyURLs(t *testing.T, urls []string, levels []int, serverExtra string, poolExtra ...string) *testProxy {
	t.Helper()
	return startProxyOn(t, startHow{}, urls, levels, serverExtra, poolExtra...)
}

// startProxyUnready is startProxyURLs for a test whose pool is not meant to
// become healthy: it does not wait for the proxy to be ready.
func startProxyUnready(t *testing.T, urls []string, levels []int, serverExtra string, poolExtra ...string) *testProxy {
	t.Helper()
	return startProxyOn(t, startHow{unready: true}, urls, levels, serverExtra, poolExtra...)
}

// startProxyFast is startProxyLevels on a clock that runs speed times
// faster than the wall clock (fastClock): failback_delay, no_pool_grace,
// rebalance_interval, backoff and the hashrate windows pass speed times
// faster, while the pools and miners keep wall time. submit_timeout, a
// wait on the network, is scaled up by speed so it stays the same in wall
// time. Durations a test waits for are divided by speed.
func startProxyFast(t *testing.T, speed int, pools []*stratumtest.Pool, levels []int, serverExtra string, poolExtra ...string) *testProxy {
	t.Helper()
	urls := make([]string, len(pools))
	for i, pl := range pools {
		urls[i] = pl.URL()
	}
	return startProxyOn(t, startHow{speed: speed}, urls, levels, serverExtra, poolExtra...)
}

// startHow is how startProxyOn starts the proxy.
type startHow struct {
	speed   int  // 0: the wall clock; else a fastClock this many times faster
	unready bool // do not wait for a healthy pool
	// stall, when set, is Options.MinerWriteStall: the queue-bound tests
	// wait for it in wall time, so they use a shorter one than 5 s.
	stall time.Duration
}

// startProxyOn starts the proxy.
func startProxyOn(t *testing.T, how startHow, urls []string, levels []int, serverExtra string, poolExtra ...string) *testProxy {
	t.Helper()
	// Defaults for the tests; a key given in serverExtra replaces its default.
	defaults := []string{
		`name = "farm"`, `listen = "127.0.0.1:0"`, `initial_difficulty = 0.00001`, `min_difficulty = 0.0000001`,
		`max_difficulty = 1`, `shares_per_minute = 6`, `max_connections_per_ip = 0`,
	}
	doc := "[[server]]\n" + serverExtra + "\n"
	for _, d := range defaults {
		key := strings.TrimSpace(strings.SplitN(d, "=", 2)[0])
		if !strings.Contains(serverExtra, key+" ") && !strings.Contains(serverExtra, key+"=") {
			doc += d + "\n"
		}
	}
	for i, url := range urls {
		doc += fmt.Sprintf(`
[[pool]]
name = "pool%d"
url = %q
user = "acct.farm"
password = "x"
submit_timeout = "2s"
level = %d
%s
`, i, url, level(levels, i), extraFor(poolExtra, i))
	}
	reg := prometheus.NewRegistry()
	o := testOptions(t, doc)
	o.Metrics = reg
	o.Liveness = new(liveBoard).register
	o.MinerWriteStall = how.stall
	if how.speed > 0 {
		o.Clock = fastClock(t, how.speed)
		for i := range o.Pools {
			o.Pools[i].SubmitTimeout *= time.Duration(how.speed)
		}
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tp := &testProxy{Proxy: p, addr: p.Addrs()["farm"], reg: reg}
	// Miners are refused until a pool is healthy; most tests want one.
	for i := 0; i < 500 && !how.unready && p.Ready() != nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return tp
}

func extraFor(extra []string, i int) string {
	switch {
	case len(extra) == 1:
		return extra[0]
	case i < len(extra):
		return extra[i]
	}
	return ""
}

func level(levels []int, i int) int {
	if i < len(levels) {
		return levels[i]
	}
	return 0
}

func eventsQuery() events.Query { return events.Query{Component: "stratum"} }

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkAccounting asserts the ledger balances once nothing is in flight.
func checkAccounting(t *testing.T, p *Proxy) Accounting {
	t.Helper()
	var a Accounting
	for i := 0; i < 500; i++ {
		a = p.Accounting()
		if a.InFlight == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, why := a.Balanced(); !ok {
		t.Fatalf("accounting does not balance (%s): %+v", why, a)
	}
	return a
}

func TestEveryFirmwareStyleMinesThroughTheProxy(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	px := startProxy(t, []*stratumtest.Pool{pool}, "", "")
	for _, style := range stratumtest.AllStyles() {
		t.Run(style.String(), func(t *testing.T) {
			m := stratumtest.NewMiner(t, px.addr, stratumtest.MinerOptions{Style: style, User: "acct.rig-" + style.String(), StrictConfigure: true})
			res, err := m.SubmitShares(ctxFor(t, 60*time.Second), 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Verdict != stratumtest.VerdictAccepted {
					t.Fatalf("share %d: verdict %v code %d %q", r.Seq, r.Verdict, r.Code, r.Message)
				}
				if !pool.AcceptedHash(r.Hash) {
					t.Errorf("miner was told true for share %s the pool never accepted", r.Hash)
				}
			}
			if hs := m.Handshake(); len(hs.UnrequestedKeys) > 0 {
				t.Errorf("configure answered keys the miner did not request: %v", hs.UnrequestedKeys)
			}
		})
	}
	checkAccounting(t, px.Proxy)
}
