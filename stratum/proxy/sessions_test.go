package proxy

import (
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// TestSessionsSizedToThePool: with miners_per_session = "auto" (the
// default) a session carries as many miners as the pool's extranonce2
// allows, leaving each miner the listener's extranonce2_size; another
// session opens only when one is full or the operator caps it. Every share
// of every miner is accepted by the pool, which checks the split byte for
// byte.
func TestSessionsSizedToThePool(t *testing.T) {
	tests := []struct {
		name         string
		poolE2       int
		server, pool string // extra config lines
		miners       int
		sessions     int // upstream sessions open with every miner connected
		minerE2      int
		capacity     int
	}{
		{name: "8-byte pool, defaults: one session", poolE2: 8, miners: 300, sessions: 1, minerE2: 4, capacity: MaxSessionCapacity},
		{name: "6-byte pool, defaults: one session", poolE2: 6, miners: 300, sessions: 1, minerE2: 4, capacity: MaxSessionCapacity},
		{name: "5-byte pool: 256 a session", poolE2: 5, miners: 300, sessions: 2, minerE2: 4, capacity: 256},
		{name: "4-byte pool, defaults: one miner a session", poolE2: 4, miners: 3, sessions: 3, minerE2: 4, capacity: 1},
		{name: "4-byte pool, minimum lowered to 3", poolE2: 4, server: "min_miner_extranonce2_size = 3", miners: 300, sessions: 2, minerE2: 3, capacity: 256},
		{name: "listener asks 6 of an 8-byte pool", poolE2: 8, server: "extranonce2_size = 6", miners: 300, sessions: 1, minerE2: 6, capacity: MaxSessionCapacity},
		{name: "listener asks 2 of a 4-byte pool", poolE2: 4, server: "extranonce2_size = 2", miners: 300, sessions: 1, minerE2: 2, capacity: MaxSessionCapacity},
		{name: "explicit miners_per_session caps it", poolE2: 8, pool: "miners_per_session = 100", miners: 300, sessions: 3, minerE2: 4, capacity: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-6, Extranonce2Size: tc.poolE2})
			px := startProxy(t, []*stratumtest.Pool{pool}, "initial_difficulty = 0.000001\n"+tc.server, tc.pool)
			fleet := stratumtest.NewFleet(t, px.addr, stratumtest.FleetOptions{
				Miners: tc.miners, Styles: stratumtest.AllStyles(), DialConcurrency: 64,
			})
			ctx := ctxFor(t, 2*time.Minute)
			if err := fleet.WaitFor(ctx, func(s stratumtest.FleetStats) bool { return s.Ready == tc.miners }); err != nil {
				t.Fatalf("fleet not ready: %v (%+v)", err, fleet.Stats())
			}
			if got := pool.Stats().SessionsOpen; got != tc.sessions {
				t.Fatalf("upstream sessions = %d, want %d", got, tc.sessions)
			}
			for _, m := range fleet.Miners() {
				if h := m.Handshake(); h.Extranonce2Size != tc.minerE2 {
					t.Fatalf("%s got extranonce2_size %d, want %d", m.User(), h.Extranonce2Size, tc.minerE2)
				}
			}
			views := px.Pools()
			if len(views) != 1 || len(views[0].Sessions) != tc.sessions {
				t.Fatalf("/api/v1/pools shows %+v", views)
			}
			for _, s := range views[0].Sessions {
				if s.Capacity != tc.capacity || s.MinerE2Size != tc.minerE2 || s.PrefixBytes != tc.poolE2-tc.minerE2 {
					t.Fatalf("session in /api/v1/pools: %+v, want capacity %d", s, tc.capacity)
				}
			}
			results, err := fleet.SubmitEach(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				if r.Verdict != stratumtest.VerdictAccepted {
					t.Fatalf("share rejected: %d %s", r.Code, r.Message)
				}
			}
			if un := pool.Unaccounted(results, 1e-6); len(un) > 0 {
				t.Fatalf("%d shares told accepted never reached the pool; first %+v", len(un), un[0])
			}
			checkAccounting(t, px.Proxy)
		})
	}
}
