package stratumsim

import (
	"net"
	"sync"
	"testing"
)

// TestFleetMinerFuncAndOnDialed checks the per-miner hooks: MinerFunc sets
// options per miner (here a source address and a user), OnDialed reports
// every dial once with its miner.
func TestFleetMinerFuncAndOnDialed(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	const n = 12
	var mu sync.Mutex
	called := map[int]int{}
	dialed := map[int]*Miner{}
	f := NewFleet(t, p.Addr(), FleetOptions{
		Miners: n,
		Styles: AllStyles(),
		MinerFunc: func(i int, o *MinerOptions) {
			mu.Lock()
			called[i]++
			mu.Unlock()
			o.LocalAddr = []string{"127.0.0.2", "127.0.0.3"}[i%2]
			o.SharesPerMinute = 1e6 // ignored in a fleet
		},
		OnDialed: func(i int, m *Miner, err error) {
			if err != nil {
				t.Errorf("miner %d: %v", i, err)
			}
			mu.Lock()
			dialed[i] = m
			mu.Unlock()
		},
	})
	if err := p.WaitReady(ctx, n); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(called) != n || len(dialed) != n {
		t.Fatalf("MinerFunc for %d miners, OnDialed for %d, want %d", len(called), len(dialed), n)
	}
	for i, m := range f.Miners() {
		if called[i] != 1 || dialed[i] != m {
			t.Fatalf("miner %d: MinerFunc called %d times, OnDialed miner %p, want %p", i, called[i], dialed[i], m)
		}
		host, _, err := net.SplitHostPort(m.LocalAddr())
		if want := []string{"127.0.0.2", "127.0.0.3"}[i%2]; err != nil || host != want {
			t.Fatalf("miner %d local address %q, want host %s", i, m.LocalAddr(), want)
		}
		if want := AllStyles()[i%len(AllStyles())]; m.Style() != want {
			t.Fatalf("miner %d style %s, want %s", i, m.Style(), want)
		}
	}
	if st := f.Stats(); st.Submitted != 0 {
		t.Fatalf("MinerFunc's SharesPerMinute was not ignored: %d submitted", st.Submitted)
	}
}

// TestFleetOnDialedFailure checks that OnDialed reports failed dials with a
// nil miner.
func TestFleetOnDialedFailure(t *testing.T) {
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	var mu sync.Mutex
	var fails int
	f, err := StartFleet(ctx, addr, FleetOptions{
		Miners:          3,
		ContinueOnError: true,
		OnDialed: func(i int, m *Miner, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil || m != nil {
				t.Errorf("miner %d: err %v, miner %v", i, err, m)
			}
			fails++
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fails != 3 || len(f.DialErrors()) != 3 || f.Len() != 0 {
		t.Fatalf("%d OnDialed failures, %d dial errors, %d miners", fails, len(f.DialErrors()), f.Len())
	}
}

// TestMinerByteCounters checks that a miner counts exactly the bytes the
// pool counts in the other direction.
func TestMinerByteCounters(t *testing.T) {
	ctx := testCtx(t)
	p := newTestPool(t, PoolOptions{})
	m := NewMiner(t, p.Addr(), MinerOptions{Style: StyleAntminer})
	if _, err := m.SubmitShares(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	if err := p.WaitFor(ctx, func(s PoolStats) bool { return s.SessionsOpen == 0 }); err != nil {
		t.Fatal(err)
	}
	ms, ps := m.Stats(), p.Stats()
	if ms.BytesOut == 0 || ms.BytesOut != ps.BytesIn || ms.BytesIn != ps.BytesOut {
		t.Fatalf("miner in/out %d/%d, pool in/out %d/%d", ms.BytesIn, ms.BytesOut, ps.BytesIn, ps.BytesOut)
	}
	f := NewFleet(t, p.Addr(), FleetOptions{Miners: 4})
	if _, err := f.SubmitEach(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var in, out uint64
	for _, fm := range f.Miners() {
		s := fm.Stats()
		in, out = in+s.BytesIn, out+s.BytesOut
	}
	if fs := f.Stats(); fs.BytesIn != in || fs.BytesOut != out || in == 0 || out == 0 {
		t.Fatalf("fleet bytes %d/%d, sum of miners %d/%d", fs.BytesIn, fs.BytesOut, in, out)
	}
}
