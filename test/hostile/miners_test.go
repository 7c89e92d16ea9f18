//go:build linux

package hostile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// Well-behaved miners: this many per attack, from their own loopback
// address so that per-IP limits aimed at the attacker (127.0.0.1) do not
// touch them.
const (
	goodMinerCount = 3
	goodMinerIP    = "127.0.0.2"
	// goodSubmitGap is the pause between a good miner's shares.
	goodSubmitGap = 150 * time.Millisecond
)

// verdict is one share answer a good miner got.
type verdict struct {
	at       time.Time
	accepted bool
	code     int
}

// goodMiner submits a share, waits for its verdict, pauses and repeats,
// from one goroutine (joined by stop). mu guards verdicts and errs.
type goodMiner struct {
	m *stratumtest.Miner

	mu       sync.Mutex
	verdicts []verdict
	errs     []string
}

// goodFleet is the attack's well-behaved miners.
type goodFleet struct {
	miners []*goodMiner
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startGoodMiners connects n miners to addr, waits for each one's first
// job and starts their submit loops. Their firmware styles cycle through
// stratumtest.AllStyles; tweak, when set, adjusts each one's options.
func startGoodMiners(t *testing.T, addr string, n int, tweak ...func(*stratumtest.MinerOptions)) *goodFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &goodFleet{cancel: cancel}
	t.Cleanup(f.stop)
	for i := range n {
		dctx, dcancel := context.WithTimeout(ctx, startTimeout)
		opts := stratumtest.MinerOptions{
			Style:     stratumtest.AllStyles()[i%len(stratumtest.AllStyles())],
			User:      fmt.Sprintf("site.good%d", i),
			LocalAddr: goodMinerIP,
			Seed:      uint64(100 + i),
		}
		for _, f := range tweak {
			f(&opts)
		}
		m, err := stratumtest.DialMiner(dctx, addr, opts)
		if err == nil {
			err = m.WaitJob(dctx)
		}
		dcancel()
		if err != nil {
			t.Fatalf("well-behaved miner %d could not start mining through proxyd: %v", i, err)
		}
		gm := &goodMiner{m: m}
		f.miners = append(f.miners, gm)
		f.wg.Add(1)
		go gm.loop(ctx, &f.wg)
	}
	return f
}

func (g *goodMiner) loop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		r, err := g.m.SubmitOne(sctx)
		cancel()
		g.mu.Lock()
		switch {
		case err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled):
			g.errs = append(g.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		case err == nil && r.Verdict == stratumtest.VerdictAccepted:
			g.verdicts = append(g.verdicts, verdict{at: time.Now(), accepted: true})
		case err == nil && r.Verdict == stratumtest.VerdictRejected:
			g.verdicts = append(g.verdicts, verdict{at: time.Now(), code: r.Code})
		case err == nil:
			g.errs = append(g.errs, fmt.Sprintf("%s: verdict %s code %d %s", time.Now().Format("15:04:05.000"), r.Verdict, r.Code, r.Message))
		}
		g.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(goodSubmitGap):
		}
	}
}

func (f *goodFleet) stop() {
	f.cancel()
	f.wg.Wait()
	for _, g := range f.miners {
		_ = g.m.Close()
	}
}

// goodCheck says what a window must show for every good miner.
type goodCheck struct {
	// anyVerdict accepts rejections as verdicts (a pool that rejects most
	// shares); otherwise at least one share must be accepted.
	anyVerdict bool
}

// check asserts that in [from, to] every good miner stayed connected, got
// at least one new job and at least one verdict in each half of the window
// (so it kept working throughout, not just at the start), and never lost a
// share or hit an error.
func (f *goodFleet) check(t *testing.T, from, to time.Time, c goodCheck) {
	t.Helper()
	mid := from.Add(to.Sub(from) / 2)
	for i, g := range f.miners {
		st := g.m.Stats()
		if st.Disconnects != 0 {
			t.Errorf("well-behaved miner %d was disconnected %d time(s) during the attack", i, st.Disconnects)
		}
		if st.Lost != 0 {
			t.Errorf("well-behaved miner %d lost %d share(s) without a verdict", i, st.Lost)
		}
		jobs := 0
		for _, e := range g.m.EventsOf(stratumtest.EventNotify) {
			if !e.At.Before(from) && !e.At.After(to) {
				jobs++
			}
		}
		if jobs == 0 {
			t.Errorf("well-behaved miner %d got no job between %s and %s", i, from.Format("15:04:05.000"), to.Format("15:04:05.000"))
		}
		g.mu.Lock()
		var first, second int
		for _, v := range g.verdicts {
			if v.at.Before(from) || v.at.After(to) || (!v.accepted && !c.anyVerdict) {
				continue
			}
			if v.at.Before(mid) {
				first++
			} else {
				second++
			}
		}
		errs := append([]string(nil), g.errs...)
		g.mu.Unlock()
		if first == 0 || second == 0 {
			t.Errorf("well-behaved miner %d: %d and %d verdict(s) in the two halves of the attack window; want some in each", i, first, second)
		}
		if len(errs) > 0 {
			t.Errorf("well-behaved miner %d: %d error(s), first: %s", i, len(errs), errs[0])
		}
	}
}

// verdictCounts returns how many accepted and rejected verdicts the fleet
// got in [from, to].
func (f *goodFleet) verdictCounts(from, to time.Time) (acc, rej int) {
	for _, g := range f.miners {
		g.mu.Lock()
		for _, v := range g.verdicts {
			if v.at.Before(from) || v.at.After(to) {
				continue
			}
			if v.accepted {
				acc++
			} else {
				rej++
			}
		}
		g.mu.Unlock()
	}
	return acc, rej
}
