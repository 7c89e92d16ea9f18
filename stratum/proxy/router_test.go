package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestRouterSessionSet: the router's session set follows the placed and
// unplaced messages whatever order a miner's moves and its close send them
// in; a placement that arrives after its miner closed is not kept.
func TestRouterSessionSet(t *testing.T) {
	f := newRoutingFixture(t, []int{0, 0}, "")
	r := f.s.router
	u0, u1 := f.s.pools[0].sessions[0], f.s.pools[1].sessions[0]
	tests := []struct {
		name string
		msgs func(m *miner)
		want session // nil: not in the set
	}{
		{"placed", func(m *miner) { r.placedOn(m, u0) }, u0},
		{"placed, then unplaced", func(m *miner) { r.placedOn(m, u0); r.unplaced(m, u0) }, nil},
		{"moved to another pool", func(m *miner) { r.placedOn(m, u0); r.unplaced(m, u0); r.placedOn(m, u1) }, u1},
		{"an unplaced for another session", func(m *miner) { r.placedOn(m, u1); r.unplaced(m, u0) }, u1},
		{"closed before its placement arrived", func(m *miner) { close(m.closed); r.unplaced(m, u0); r.placedOn(m, u0) }, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			m := newMiner(f.p, f.s, uint64(i+1), a, netip.Addr{})
			tt.msgs(m)
			r.drain()
			got, ok := r.placed[m]
			switch {
			case tt.want == nil && ok:
				t.Fatalf("the session set has the miner on session %d, want it absent", got.sessionID())
			case tt.want != nil && got != tt.want:
				t.Fatalf("the session set has %v, want session %d", got, tt.want.sessionID())
			}
		})
	}
}

// A pool's verdict inbox hands the router its verdicts in the order they
// came and keeps only the newest rejectWindow of them, whatever the rate.
func TestVerdictInbox(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name      string
		in        int // verdicts added, the i-th at t0+i s, bad when i is odd
		wantN     int
		wantFirst int // the index of the oldest verdict handed on
	}{
		{"empty", 0, 0, 0},
		{"one", 1, 1, 0},
		{"just under the window", rejectWindow - 1, rejectWindow - 1, 0},
		{"exactly the window", rejectWindow, rejectWindow, 0},
		{"over the window keeps the newest", rejectWindow + 7, rejectWindow, 7},
		{"many windows", 10*rejectWindow + 3, rejectWindow, 9*rejectWindow + 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ib verdictInbox
			for i := range tc.in {
				ib.add(t0.Add(time.Duration(i)*time.Second), i%2 == 1)
			}
			var w verdictWindow
			ib.takeInto(&w)
			if w.n != tc.wantN {
				t.Fatalf("window holds %d verdicts, want %d", w.n, tc.wantN)
			}
			// In order: the window's slots 0..n-1 were filled oldest first.
			for k := range w.n {
				i := tc.wantFirst + k
				r := w.ring[k]
				if !r.at.Equal(t0.Add(time.Duration(i)*time.Second)) || r.bad != (i%2 == 1) {
					t.Fatalf("slot %d holds %v bad=%v, want verdict %d", k, r.at, r.bad, i)
				}
			}
			// Taken: a second take hands on nothing.
			var again verdictWindow
			ib.takeInto(&again)
			if again.n != 0 {
				t.Fatalf("the inbox handed on %d verdicts twice", again.n)
			}
		})
	}
}
