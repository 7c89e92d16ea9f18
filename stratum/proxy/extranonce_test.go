package proxy

import (
	"bytes"
	"strings"
	"testing"
)

func TestPlanSplit(t *testing.T) {
	const auto = 0
	tests := []struct {
		name                    string
		n                       int // the pool's extranonce2_size
		want, floor, perSession int // listener's extranonce2_size and minimum, pool's miners_per_session
		prefix, miner, capacity int
		whyHas                  string
	}{
		// miners_per_session = "auto" (the default), listener defaults (4, 4).
		{"auto, 8-byte pool", 8, 4, 4, auto, 4, 4, MaxSessionCapacity, "auto"},
		{"auto, 6-byte pool", 6, 4, 4, auto, 2, 4, MaxSessionCapacity, "2 byte(s) make the per-miner prefix"},
		{"auto, 5-byte pool", 5, 4, 4, auto, 1, 4, 256, "256 miner(s) a session"},
		{"auto, 4-byte pool: no room above the minimum", 4, 4, 4, auto, 0, 4, 1, "one miner per upstream session"},
		{"auto, 4-byte pool, minimum lowered to 3", 4, 4, 3, auto, 1, 3, 256, "min_miner_extranonce2_size 3 allows it"},
		{"auto, 3-byte pool (NiceHash), minimum 2", 3, 4, 2, auto, 1, 2, 256, ""},
		{"auto, 16-byte pool: miners capped at 8", 16, 4, 4, auto, 12, 4, MaxSessionCapacity, ""},
		// The listener asks for a specific size.
		{"listener asks 6, 8-byte pool", 8, 6, 4, auto, 2, 6, MaxSessionCapacity, "miners get the configured 6"},
		{"listener asks 2, 8-byte pool", 8, 2, 4, auto, 6, 2, MaxSessionCapacity, ""},
		{"listener asks 3, 4-byte pool (below the default minimum: the request wins)", 4, 3, 4, auto, 1, 3, 256, ""},
		{"listener asks 8, 8-byte pool: no room for a prefix", 8, 8, 4, auto, 1, 7, 256, "miners get 7 instead of the configured 8"},
		{"listener asks 6, 6-byte pool, minimum 6", 6, 6, 6, auto, 0, 6, 1, "one miner per upstream session"},
		{"want more than cgminer can take", 12, 10, 4, 256, 4, 8, 256, "cgminer"},
		// An explicit miners_per_session caps the session.
		{"explicit 256, 8-byte pool", 8, 4, 4, 256, 4, 4, 256, "miners_per_session = 256"},
		{"explicit 1000, 4-byte pool, listener 2", 4, 2, 2, 1000, 2, 2, 1000, ""},
		{"explicit 10, 8-byte pool", 8, 4, 4, 10, 4, 4, 10, ""},
		{"explicit above the prefix space", 5, 4, 4, 1000, 1, 4, 256, ""},
		{"explicit above the auto cap", 8, 4, 4, 1 << 20, 4, 4, 1 << 20, ""},
		{"2-byte pool, minimum 2: cannot split", 2, 4, 2, 256, 0, 2, 1, ""},
		{"1-byte pool: cannot split", 1, 4, 1, 256, 0, 1, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := PlanSplit(tc.n, SplitPolicy{MinerExtranonce2Size: tc.want, MinMinerExtranonce2Size: tc.floor, MinersPerSession: tc.perSession})
			if err != nil {
				t.Fatal(err)
			}
			if s.PrefixBytes != tc.prefix || s.MinerExtranonce2Size != tc.miner || s.Capacity != tc.capacity {
				t.Fatalf("PlanSplit(%d, want %d, min %d, per session %d) = prefix %d miner %d cap %d; want %d %d %d (%s)",
					tc.n, tc.want, tc.floor, tc.perSession, s.PrefixBytes, s.MinerExtranonce2Size, s.Capacity, tc.prefix, tc.miner, tc.capacity, s.Why)
			}
			if s.PrefixBytes+s.MinerExtranonce2Size != tc.n || s.PoolExtranonce2Size != tc.n || !strings.Contains(s.Why, tc.whyHas) {
				t.Errorf("split does not add up or its reason lacks %q: %+v", tc.whyHas, s)
			}
			if floor := min(tc.floor, tc.want); s.MinerExtranonce2Size < floor && s.PrefixBytes > 0 {
				t.Errorf("miners get %d bytes, below the minimum %d", s.MinerExtranonce2Size, floor)
			}
		})
	}
	for _, n := range []int{0, -1, 33} {
		if _, err := PlanSplit(n, SplitPolicy{MinerExtranonce2Size: 4, MinMinerExtranonce2Size: 4}); err == nil {
			t.Errorf("PlanSplit(%d) accepted", n)
		}
	}
}

// TestTenThousandMinersOneSession: with miners_per_session = "auto", 10,000
// miners fit one session of a pool with an 8-byte extranonce2, each with a
// distinct prefix, and the prefix table stays small. (A TCP test with
// 10,000 miners is too slow under -race; proxyload measures it end to end.)
func TestTenThousandMinersOneSession(t *testing.T) {
	for _, n := range []int{8, 6} {
		s, err := PlanSplit(n, SplitPolicy{MinerExtranonce2Size: 4, MinMinerExtranonce2Size: 4})
		if err != nil {
			t.Fatal(err)
		}
		p := newPrefixes(s)
		seen := make(map[string]bool, 10_000)
		for i := range 10_000 {
			v, err := p.take()
			if err != nil {
				t.Fatalf("%d-byte pool: miner %d found the session full: %v (%s)", n, i, err, s.Why)
			}
			e := string(p.encode(v))
			if seen[e] || len(e) != s.PrefixBytes {
				t.Fatalf("%d-byte pool: prefix %x repeated or of the wrong size", n, e)
			}
			seen[e] = true
		}
		if got := len(p.used) * 8; got > 10_000/8+8 {
			t.Fatalf("%d-byte pool: the table of 10,000 prefixes takes %d bytes", n, got)
		}
	}
}

func TestPrefixes(t *testing.T) {
	s, _ := PlanSplit(4, SplitPolicy{MinerExtranonce2Size: 3, MinMinerExtranonce2Size: 3, MinersPerSession: 3})
	p := newPrefixes(s)
	seen := map[uint32]bool{}
	for i := 0; i < 3; i++ {
		v, err := p.take()
		if err != nil || seen[v] {
			t.Fatalf("take %d: %v, %v (dup=%v)", i, v, err, seen[v])
		}
		seen[v] = true
	}
	if _, err := p.take(); err != errNoPrefix {
		t.Fatalf("full session gave a prefix: %v", err)
	}
	p.release(1)
	p.release(1) // double release is harmless
	p.release(99)
	p.release(0)
	if v, err := p.take(); err != nil || v != 1 {
		t.Fatalf("after release got %v %v, want 1 (the oldest released)", v, err)
	}
	if v, err := p.take(); err != nil || v != 0 {
		t.Fatalf("got %v %v, want 0", v, err)
	}
	if _, err := p.take(); err != errNoPrefix {
		t.Fatal("double release created capacity")
	}
	fresh := newPrefixes(Split{PrefixBytes: 1, Capacity: 4})
	a, _ := fresh.take()
	fresh.release(a)
	if b, _ := fresh.take(); b == a {
		t.Fatal("a released prefix was reused while fresh ones were left")
	}
	s2, _ := PlanSplit(8, SplitPolicy{MinerExtranonce2Size: 6, MinMinerExtranonce2Size: 4, MinersPerSession: 70000})
	p2 := newPrefixes(s2)
	if got := p2.encode(0x0102); !bytes.Equal(got, []byte{1, 2}) {
		t.Errorf("encode = %x", got)
	}
	// A huge explicit capacity costs nothing until miners come.
	big := newPrefixes(Split{PrefixBytes: 3, Capacity: 1 << 24})
	for range 130 {
		if _, err := big.take(); err != nil {
			t.Fatal(err)
		}
	}
	if len(big.used) != 3 {
		t.Fatalf("130 prefixes of a 16M session use %d words, want 3", len(big.used))
	}
	big.release(129)
	big.release(64)
	if v, _ := big.take(); v != 130 {
		t.Fatalf("took %d, want the fresh 130", v)
	}
}
