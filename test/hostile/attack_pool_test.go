//go:build linux

package hostile

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Findings 11, 15 and 12: a pool that rejects, stalls or dies.
const (
	// staleAcceptOneIn: the pool accepts one share in this many and
	// rejects the rest as stale (code 21), like the CPU-starved pool of
	// finding 11.
	staleAcceptOneIn = 5
	// testNoPoolGrace is [[server]] no_pool_grace in these attacks: short,
	// so that a proxyd that wrongly drops miners does so within the
	// attack.
	testNoPoolGrace = 2 * time.Second
	// staleStormFor: long enough to fill the 50-share verdict window
	// several times over and to pass no_pool_grace.
	staleStormFor = 8 * time.Second
	// stallMiners submit through the stalled link: enough shares time out
	// to fill the verdict window (finding 15: 65 timed out).
	stallMiners = 10
	// stallFor is how long the proxyd-to-pool link carries nothing, in
	// either direction: longer than it takes the timed-out shares to
	// fill the verdict window plus no_pool_grace (finding 15's link
	// stalled for ~50 s). stallSubmitTimeout is [[pool]] submit_timeout
	// here, so shares time out during it.
	stallFor           = 9 * time.Second
	stallSubmitTimeout = time.Second
	// recoverWithin bounds how long after the link recovers proxyd may
	// take to be ready and serving again. It is a liveness bound (finding
	// 15 never recovered), generous for a loaded CI machine.
	recoverWithin = 30 * time.Second
	// maxDialsFirstSecond: dial backoff applies from the first failure,
	// per pool (finding 12 saw 27 dials in ~3 ms): at most one immediate
	// retry and the first backed-off one, however many sessions died.
	maxDialsFirstSecond = 3
	// deadPoolSessions: with miners_per_session = 1, this many miners keep
	// this many sessions open, and all of them die together.
	deadPoolSessions = 16
	// workingSessionAge: how long the sessions work before the pool dies.
	workingSessionAge = 2 * time.Second
	// poolDeadObserve: how long the dead pool is watched.
	poolDeadObserve = 3 * time.Second
)

func attackStaleStorm(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("11 the only pool rejects %d of %d shares as stale for %s", staleAcceptOneIn-1, staleAcceptOneIn, staleStormFor),
		"miners stay connected and keep working (one pool: nowhere better to go); /readyz 200")
	var n atomic.Int64
	p := newTestPool(t, stratumtest.PoolOptions{RejectFunc: func(stratumtest.Share) (int, string, bool) {
		if n.Add(1)%staleAcceptOneIn == 0 {
			return 0, "", false
		}
		return 21, "Stale share", true
	}})
	d := s.startDaemon(t, "stale-storm", proxyConfig{PoolURL: p.URL(), Server: fmt.Sprintf("no_pool_grace = %q", testNoPoolGrace)}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), goodMinerCount)
	w := s.measure(t, d, r)
	time.Sleep(staleStormFor)
	// Counted before the late miner below closes its own connection.
	disc := d.metric(t, "proxyd_miner_disconnects_total", `server="farm"`)
	alert := d.metric(t, "proxyd_pool_reject_alert", `server="farm"`, `pool="primary"`)
	// A new miner is still taken in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	late, err := stratumtest.DialMiner(ctx, d.stratumAddr("farm"), stratumtest.MinerOptions{Style: stratumtest.StyleBitaxe, User: "site.late", LocalAddr: goodMinerIP})
	if err == nil {
		err = late.WaitJob(ctx)
		_ = late.Close()
	}
	readyCode, readyBody := d.get(t, "/readyz")
	s.end(w)
	good.check(t, w.from, w.to, goodCheck{anyVerdict: true})
	acc, rej := good.verdictCounts(w.from, w.to)
	s.note(r, "%d accepted, %d rejected by the pool; disconnects %v; proxyd_pool_reject_alert %v; /readyz %d", acc, rej, disc, alert, readyCode)
	if rej < 50 {
		t.Errorf("only %d rejections reached the miners; the attack needs the verdict window full of them", rej)
	}
	if err != nil {
		t.Errorf("a new miner was not taken in during the storm: %v", err)
	}
	if readyCode != 200 {
		t.Errorf("/readyz = %d during a stale storm with one pool: %s", readyCode, readyBody)
	}
	if disc > 0 {
		t.Errorf("proxyd disconnected %v miner(s) during a stale storm from its only pool", disc)
	}
	if alert != 1 {
		t.Errorf("proxyd_pool_reject_alert = %v during the storm; a pool rejecting %d of %d shares is an alert", alert, staleAcceptOneIn-1, staleAcceptOneIn)
	}
	if !bytes.Contains(readyBody, []byte("reject")) {
		t.Errorf("/readyz says nothing about the rejects: %s", readyBody)
	}
}

func attackStalledLink(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("15 the pool link stalls for %s (submit_timeout %s), then recovers", stallFor, stallSubmitTimeout),
		fmt.Sprintf("ready and serving again within %s of recovery; every miner mining again", recoverWithin))
	p := newTestPool(t, stratumtest.PoolOptions{})
	rl := newRelay(t, p.Addr())
	d := s.startDaemon(t, "stalled-link", proxyConfig{PoolURL: rl.URL(),
		Server: fmt.Sprintf("no_pool_grace = %q", testNoPoolGrace),
		Pool:   fmt.Sprintf("submit_timeout = %q", stallSubmitTimeout)}.String())
	d.waitReady(t)
	good := startGoodMiners(t, d.stratumAddr("farm"), stallMiners)
	w := s.measure(t, d, r)
	time.Sleep(time.Second)
	rl.stall()
	time.Sleep(stallFor)
	rl.resume()
	resumed := time.Now()
	// Ready again, and a new miner gets a share accepted.
	var recovered time.Duration
	var lastErr error
	for time.Since(resumed) < recoverWithin {
		if code, _, _ := d.request("GET", "/readyz", ""); code == 200 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			m, err := stratumtest.DialMiner(ctx, d.stratumAddr("farm"), stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "site.after", LocalAddr: goodMinerIP})
			if err == nil {
				var res stratumtest.SubmitResult
				res, err = m.SubmitOne(ctx)
				if err == nil && res.Verdict != stratumtest.VerdictAccepted {
					err = fmt.Errorf("share %s: %d %s", res.Verdict, res.Code, res.Message)
				}
				_ = m.Close()
			}
			cancel()
			if err == nil {
				recovered = time.Since(resumed)
				break
			}
			lastErr = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The miners that lived through the stall mine again.
	time.Sleep(2 * time.Second)
	s.end(w)
	acc, rej := good.verdictCounts(w.from, w.to)
	accAfter, _ := good.verdictCounts(resumed.Add(recovered), w.to)
	s.note(r, "%d accepted, %d rejected or timed out during the attack; recovered %.1f s after the link did; %d accepted afterwards",
		acc, rej, recovered.Seconds(), accAfter)
	if recovered == 0 {
		t.Fatalf("proxyd did not serve a new miner within %s of the pool link recovering (last: %v); /readyz and log:\n%s",
			recoverWithin, lastErr, d.tail(15))
	}
	for i, g := range good.miners {
		if g.m.Stats().Disconnects > 0 {
			t.Errorf("well-behaved miner %d was disconnected during the stall (one pool, nowhere better to go)", i)
		}
		ok := false
		g.mu.Lock()
		for _, v := range g.verdicts {
			ok = ok || (v.accepted && v.at.After(resumed))
		}
		g.mu.Unlock()
		if !ok {
			t.Errorf("well-behaved miner %d had no share accepted after the link recovered", i)
		}
	}
}

func attackPoolDies(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("12 the pool dies under %d sessions (its port accepts, holds %s, closes)", deadPoolSessions, deadHold),
		fmt.Sprintf("≤ %d dials in the first second (backoff from the first failure)", maxDialsFirstSecond))
	p := newTestPool(t, stratumtest.PoolOptions{})
	rl := newRelay(t, p.Addr())
	d := s.startDaemon(t, "pool-dies", proxyConfig{PoolURL: rl.URL(), Pool: "miners_per_session = 1"}.String())
	d.waitReady(t)
	// Miners that take mining.set_extranonce are moved to a fresh session
	// on their open connection: each asks for one when theirs dies.
	_ = startGoodMiners(t, d.stratumAddr("farm"), deadPoolSessions, func(o *stratumtest.MinerOptions) { o.ExtranonceSubscribe = true })
	// The sessions have worked for a while when the pool dies (a session
	// lost right after its handshake is a failed attempt in itself).
	time.Sleep(workingSessionAge)
	w := s.measure(t, d, r)
	died := time.Now()
	rl.kill()
	time.Sleep(poolDeadObserve)
	s.end(w)
	first := rl.acceptsBetween(died, died.Add(time.Second))
	all := rl.acceptsBetween(died, died.Add(poolDeadObserve))
	s.upstream(r, "%d dials in the first second, %d in %s", first, all, poolDeadObserve)
	if first > maxDialsFirstSecond {
		t.Errorf("proxyd dialled its dead pool %d times in the first second; the bound is %d", first, maxDialsFirstSecond)
	}
	if all == 0 {
		t.Errorf("proxyd never tried to reach its pool again in %s", poolDeadObserve)
	}
}
