package demo

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSummaryString(t *testing.T) {
	full := Summary{
		ElapsedS:         35.7,
		Simulated:        simulatedParts(),
		Miners:           300,
		MinersConnected:  300,
		HashrateHs:       12.34e9,
		SharesOK:         1234,
		SharesRejected:   12,
		RejectedBy:       map[string]uint64{"stale": 4, "low_difficulty": 8, "duplicate": 0},
		Forwarded:        310,
		PoolAccepted:     309,
		PoolRejected:     1,
		UpstreamSessions: 2,
		GPUs:             GPUSummary{Backend: "simulated", Total: 8, Health: map[string]int{"healthy": 8}},
	}
	tests := []struct {
		name string
		s    func(Summary) Summary
		want string
	}{
		{"full", func(s Summary) Summary { return s },
			"[demo 0:35] SIMULATED pool, 300 miners, 8 GPUs | miners 300/300 | hashrate 12.3 GH/s | shares ok 1,234 rej 12 (low_difficulty 8, stale 4)" +
				" | to pool 310: accepted 309, rejected 1 | upstream sessions 2 | GPUs 8 simulated: 8 healthy"},
		{"nothing yet", func(s Summary) Summary {
			return Summary{Simulated: simulatedParts(), Miners: 20, GPUs: GPUSummary{Unavailable: "GPU backend not running (see /readyz)"}}
		}, "[demo 0:00] SIMULATED pool, 20 miners, 0 GPUs | miners 0/20 | hashrate 0 H/s | shares ok 0 rej 0 | to pool 0: accepted 0, rejected 0" +
			" | upstream sessions 0 | GPUs: GPU backend not running (see /readyz)"},
		{"an hour in, sessions connecting", func(s Summary) Summary {
			s.ElapsedS = 3725
			s.MinersConnected = 298
			s.UpstreamConnecting = 1
			s.RejectedBy = nil
			s.SharesRejected = 0
			return s
		}, "[demo 1:02:05] SIMULATED pool, 300 miners, 8 GPUs | miners 298/300 | hashrate 12.3 GH/s | shares ok 1,234 rej 0" +
			" | to pool 310: accepted 309, rejected 1 | upstream sessions 2 (+1 connecting) | GPUs 8 simulated: 8 healthy"},
		{"GPU health and switcher states", func(s Summary) Summary {
			s.GPUs.Health = map[string]int{"unhealthy": 1, "healthy": 6, "degraded": 1}
			s.GPUs.States = map[string]int{"mining": 5, "inference": 2, "idle": 1, "draining": 0}
			return s
		}, "GPUs 8 simulated: 6 healthy, 1 degraded, 1 unhealthy; 1 idle, 2 inference, 5 mining"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.s(full).String()
			if !strings.HasSuffix(got, tc.want) {
				t.Errorf("got  %s\nwant …%s", got, tc.want)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("summary spans lines: %q", got)
			}
			if !strings.Contains(got, "SIMULATED") {
				t.Errorf("summary does not say SIMULATED: %q", got)
			}
		})
	}
}

func TestSummaryJSON(t *testing.T) {
	b, err := json.Marshal(Summary{Simulated: simulatedParts(), Miners: 3, GPUs: GPUSummary{Backend: "simulated", Total: 8}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"elapsed_s", "simulated", "miners", "miners_connected", "hashrate_hs", "shares_ok", "shares_rejected",
		"forwarded", "pool_accepted", "pool_rejected", "upstream_sessions", "gpus"} {
		if _, ok := m[k]; !ok {
			t.Errorf("summary JSON lacks %q: %s", k, b)
		}
	}
	if got := m["simulated"].([]any); len(got) != 3 || got[0] != "pool" || got[1] != "miners" || got[2] != "gpus" {
		t.Errorf("simulated = %v", got)
	}
}

func TestHashrate(t *testing.T) {
	tests := []struct {
		hs   float64
		want string
	}{
		{0, "0 H/s"},
		{-5, "0 H/s"},
		{1, "1.00 H/s"},
		{999, "999 H/s"},
		{999.6, "1.00 kH/s"},
		{1290000, "1.29 MH/s"},
		{12.34e9, "12.3 GH/s"},
		{123.4e12, "123 TH/s"},
		{5e21, "5000 EH/s"},
	}
	for _, tc := range tests {
		if got := Hashrate(tc.hs); got != tc.want {
			t.Errorf("Hashrate(%g) = %q, want %q", tc.hs, got, tc.want)
		}
	}
}

func TestCommasAndClock(t *testing.T) {
	for n, want := range map[uint64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", 100000: "100,000"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{-time.Second: "0:00", 0: "0:00", 59999 * time.Millisecond: "0:59",
		5 * time.Minute: "5:00", time.Hour + 2*time.Second: "1:00:02"} {
		if got := clock(d); got != want {
			t.Errorf("clock(%s) = %q, want %q", d, got, want)
		}
	}
}
