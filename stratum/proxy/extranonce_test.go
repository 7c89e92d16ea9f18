package proxy

import (
	"bytes"
	"testing"
)

func TestPlanSplit(t *testing.T) {
	tests := []struct {
		name                    string
		n, want, perSession     int
		prefix, miner, capacity int
	}{
		{"8 from pool, 4 to miners", 8, 4, 256, 4, 4, 256},
		{"4 from pool (large pools)", 4, 4, 256, 1, 3, 256},
		{"4 from pool, want 2", 4, 2, 1000, 2, 2, 1000},
		{"nicehash 3 bytes", 3, 4, 256, 1, 2, 256},
		{"2 bytes: cannot split", 2, 4, 256, 0, 2, 1},
		{"1 byte: cannot split", 1, 4, 256, 0, 1, 1},
		{"small session", 8, 4, 10, 4, 4, 10},
		{"k=1 caps at 256", 5, 4, 1000, 1, 4, 256},
		{"huge pool size capped at 8 for miners", 16, 4, 256, 12, 4, 256},
		{"want more than cgminer can take", 12, 10, 256, 4, 8, 256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := PlanSplit(tc.n, tc.want, tc.perSession)
			if err != nil {
				t.Fatal(err)
			}
			if s.PrefixBytes != tc.prefix || s.MinerExtranonce2Size != tc.miner || s.Capacity != tc.capacity {
				t.Fatalf("PlanSplit(%d,%d,%d) = prefix %d miner %d cap %d; want %d %d %d (%s)",
					tc.n, tc.want, tc.perSession, s.PrefixBytes, s.MinerExtranonce2Size, s.Capacity, tc.prefix, tc.miner, tc.capacity, s.Why)
			}
			if s.PrefixBytes+s.MinerExtranonce2Size != tc.n || s.Why == "" {
				t.Errorf("split does not add up or lacks a reason: %+v", s)
			}
		})
	}
	for _, n := range []int{0, -1, 33} {
		if _, err := PlanSplit(n, 4, 256); err == nil {
			t.Errorf("PlanSplit(%d) accepted", n)
		}
	}
}

func TestPrefixes(t *testing.T) {
	s, _ := PlanSplit(4, 3, 3)
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
	s2, _ := PlanSplit(8, 6, 70000)
	p2 := newPrefixes(s2)
	if got := p2.encode(0x0102); !bytes.Equal(got, []byte{1, 2}) {
		t.Errorf("encode = %x", got)
	}
}
