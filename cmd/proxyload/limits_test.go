package main

import (
	"strings"
	"testing"
)

func TestPlanLayout(t *testing.T) {
	const limit = 20000
	tests := []struct {
		name      string
		in        layoutInput
		wantProcs int
		wantPer   []int
		wantTool  int
		wantProc  int
		errHas    string // "" for no error
	}{
		{
			name:      "1k direct auto: one miner process",
			in:        layoutInput{Miners: 1000, Direct: true, Procs: -1, Limit: limit, MinersPerSession: 256},
			wantProcs: 1, wantPer: []int{1000},
			wantTool: 1000 + fdReserve + 1 + 3, wantProc: 1000 + fdReserve,
		},
		{
			name:      "10k direct auto fits (pool 10k fds, miners 10k fds in another process)",
			in:        layoutInput{Miners: 10000, Direct: true, Procs: -1, Limit: limit, MinersPerSession: 256},
			wantProcs: 1, wantPer: []int{10000},
			wantTool: 10000 + fdReserve + 4, wantProc: 10000 + fdReserve,
		},
		{
			name:   "10k direct in-process needs 20k fds in one process",
			in:     layoutInput{Miners: 10000, Direct: true, Procs: 0, Limit: limit, MinersPerSession: 256},
			errHas: "needs 20129 file descriptors",
		},
		{
			name:      "10k proxied in-process fits: pool holds only upstream sessions",
			in:        layoutInput{Miners: 10000, Proxied: true, Procs: 0, Limit: limit, MinersPerSession: 256},
			wantProcs: 0, wantPer: []int{10000},
			wantTool: 10000 + (40 + 16) + fdReserve + 1,
		},
		{
			name:   "25k direct: the pool's process is over the limit",
			in:     layoutInput{Miners: 25000, Direct: true, Procs: -1, Limit: limit, MinersPerSession: 256},
			errHas: "the tool's own process needs 25",
		},
		{
			name:      "100k proxied auto: 6 miner processes",
			in:        layoutInput{Miners: 100000, Proxied: true, Procs: -1, Limit: limit, MinersPerSession: 256},
			wantProcs: 6, wantPer: []int{16667, 16667, 16667, 16667, 16666, 16666},
			wantTool: 391 + 16 + fdReserve + 1 + 18, wantProc: 16667 + fdReserve,
		},
		{
			name:   "100k spawned proxyd: proxyd inherits the limit",
			in:     layoutInput{Miners: 100000, Proxied: true, Spawn: true, Procs: -1, Limit: limit, MinersPerSession: 256},
			errHas: "spawned proxyd needs about",
		},
		{
			name:   "explicit procs too few",
			in:     layoutInput{Miners: 50000, Proxied: true, Procs: 2, Limit: limit, MinersPerSession: 256},
			errHas: "use more --procs",
		},
		{
			name:      "more procs than miners",
			in:        layoutInput{Miners: 3, Direct: true, Procs: 8, Limit: limit, MinersPerSession: 256},
			wantProcs: 3, wantPer: []int{1, 1, 1},
			wantTool: 3 + fdReserve + 1 + 9, wantProc: 1 + fdReserve,
		},
		{
			name:   "no miners",
			in:     layoutInput{Miners: 0, Direct: true, Procs: -1, Limit: limit},
			errHas: "at least one miner",
		},
		{
			name:   "tiny limit",
			in:     layoutInput{Miners: 10, Direct: true, Procs: -1, Limit: 100},
			errHas: "leaves no room",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lay, err := planLayout(tc.in)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if lay.Procs != tc.wantProcs || !equalInts(lay.PerProc, tc.wantPer) {
				t.Fatalf("procs %d %v, want %d %v", lay.Procs, lay.PerProc, tc.wantProcs, tc.wantPer)
			}
			if lay.ToolFDs != tc.wantTool || lay.ProcFDs != tc.wantProc {
				t.Fatalf("tool fds %d, proc fds %d; want %d, %d", lay.ToolFDs, lay.ProcFDs, tc.wantTool, tc.wantProc)
			}
			sum := 0
			for _, n := range lay.PerProc {
				sum += n
			}
			if sum != tc.in.Miners {
				t.Fatalf("miners over processes sum to %d, want %d", sum, tc.in.Miners)
			}
		})
	}
}

func TestMaxMiners(t *testing.T) {
	tests := []struct {
		name string
		in   layoutInput
		want int
	}{
		{"direct under 20k", layoutInput{Miners: 50000, Direct: true, Procs: -1, Limit: 20000, MinersPerSession: 256}, 20000 - fdReserve - 1 - 3}, // one miner process at that size
		{"fits already", layoutInput{Miners: 500, Direct: true, Procs: -1, Limit: 20000}, 500},
		{"in-process direct halves", layoutInput{Miners: 50000, Direct: true, Procs: 0, Limit: 20000, MinersPerSession: 256}, (20000 - fdReserve - 1) / 2},
		{"nothing fits", layoutInput{Miners: 5, Direct: true, Procs: -1, Limit: 50}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := maxMiners(tc.in)
			if got != tc.want {
				t.Fatalf("maxMiners = %d, want %d", got, tc.want)
			}
			if got > 0 {
				try := tc.in
				try.Miners = got
				if _, err := planLayout(try); err != nil {
					t.Fatalf("maxMiners %d does not fit: %v", got, err)
				}
				try.Miners = got + 1
				if _, err := planLayout(try); err == nil && got < tc.in.Miners {
					t.Fatalf("maxMiners %d is not the most: %d fits too", got, got+1)
				}
			}
		})
	}
}

func TestRaiseFDLimit(t *testing.T) {
	l := raiseFDLimit(64)
	if l.Soft != l.Hard || l.Soft < 64 || l.Hard < l.HardBefore {
		t.Fatalf("limits after raising: %+v", l)
	}
	if l.RaiseError != "" {
		t.Fatalf("raising the soft limit to the hard one failed: %s", l.RaiseError)
	}
}

func TestSourceIP(t *testing.T) {
	tests := []struct {
		j    int
		want string
	}{
		{0, "127.0.0.2"},
		{1, "127.0.0.3"},
		{252, "127.0.0.254"},
		{253, "127.0.1.1"},
		{254, "127.0.1.2"},
		{253 + 254, "127.0.2.1"},
		{254*256 - 1, "127.1.0.1"},
	}
	for _, tc := range tests {
		if got := sourceIP(tc.j); got != tc.want {
			t.Errorf("sourceIP(%d) = %s, want %s", tc.j, got, tc.want)
		}
	}
	seen := map[string]bool{}
	for j := range 100_000 {
		ip := sourceIP(j)
		if seen[ip] || ip == "127.0.0.1" || strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Fatalf("sourceIP(%d) = %s: repeated or not usable", j, ip)
		}
		seen[ip] = true
	}
}

func TestMinerSourceIPSpreading(t *testing.T) {
	tests := []struct {
		name    string
		miners  int
		k       int
		wantMax int // most miners on one address
		wantLen int // distinct addresses
	}{
		{"no spreading", 10, 0, 10, 1},
		{"one address", 10, 1, 10, 1},
		{"even", 12, 3, 4, 3},
		{"uneven", 10, 3, 4, 3},
		{"more addresses than miners", 3, 10, 1, 3},
		{"100k over 4", 100_000, 4, 25_000, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			count := map[string]int{}
			for i := range tc.miners {
				count[minerSourceIP(i, tc.k)]++
			}
			most := 0
			for _, n := range count {
				most = max(most, n)
			}
			if most != tc.wantMax || len(count) != tc.wantLen {
				t.Fatalf("%d addresses, most %d miners on one; want %d, %d (%v)", len(count), most, tc.wantLen, tc.wantMax, count)
			}
		})
	}
}

func TestSourceIPsForPorts(t *testing.T) {
	const ports = 28232 // Linux's default range
	tests := []struct {
		n, k    int
		auto    int
		wantErr bool
	}{
		{1000, 1, 1, false},
		{25408, 1, 1, false},
		{25409, 1, 2, true},
		{100_000, 4, 4, false},
		{100_000, 3, 4, true},
		{100_000, 0, 4, true}, // kernel's choice: one source address
		{10, 0, 1, false},
	}
	for _, tc := range tests {
		if got := autoSourceIPs(tc.n, ports); got != tc.auto {
			t.Errorf("autoSourceIPs(%d) = %d, want %d", tc.n, got, tc.auto)
		}
		err := checkSourceIPs(tc.n, tc.k, ports)
		if (err != nil) != tc.wantErr {
			t.Errorf("checkSourceIPs(%d, %d) = %v, want error %v", tc.n, tc.k, err, tc.wantErr)
		}
	}
}

func TestIsLoopbackTarget(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:3333": true, "127.9.8.7:1": true, "localhost:3333": true,
		"10.0.0.1:3333": false, "[::1]:3333": false, "pool.example.com:3333": false, "nonsense": false,
	} {
		if got := isLoopbackTarget(addr); got != want {
			t.Errorf("isLoopbackTarget(%q) = %v, want %v", addr, got, want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
