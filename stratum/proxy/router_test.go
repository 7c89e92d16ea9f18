package proxy

import (
	"net"
	"net/netip"
	"testing"
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
