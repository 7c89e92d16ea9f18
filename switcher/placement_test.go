package switcher

import (
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/nvml"
)

// Placement on a hand-made fleet: healthy idle GPUs first, then mining,
// degraded last; never cordoned, quarantined, unhealthy, backed-off or
// another contract's; pins honoured; shortfall explained.
func TestPlacement(t *testing.T) {
	type gpu struct {
		state    State
		health   nvml.State
		cordon   bool
		contract string
		backoff  bool
	}
	fleet := []gpu{
		0: {state: StateMining, health: nvml.Healthy},
		1: {state: StateIdle, health: nvml.Degraded},
		2: {state: StateIdle, health: nvml.Healthy},
		3: {state: StateQuarantined, health: nvml.Healthy},
		4: {state: StateIdle, health: nvml.Healthy, cordon: true},
		5: {state: StateServingAI, health: nvml.Healthy, contract: "other"},
		6: {state: StateMining, health: nvml.Unhealthy},
		7: {state: StateMining, health: nvml.Healthy, backoff: true},
	}
	tests := []struct {
		name      string
		gpus      int
		pin       []int
		want      []int
		shortfall string
	}{
		{"one: the healthy idle GPU", 1, nil, []int{2}, ""},
		{"two: then mining", 2, nil, []int{0, 2}, ""},
		{"three: degraded last", 3, nil, []int{0, 1, 2}, ""},
		{"pinned", 1, []int{0, 7}, []int{0}, ""},
		{"pinned to a cordoned one", 1, []int{4}, nil, "1 cordoned"},
		{"more than there is", 6, nil, []int{0, 1, 2},
			"wants 6 GPU(s), 3 available on this node: 1 quarantined (gpu_not_released), 1 cordoned, 1 serve or switch to other contracts, 1 unhealthy, 1 in retry backoff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{noRun: true})
			now := h.clock.Now()
			sw := h.sw
			sw.mu.Lock()
			defer sw.mu.Unlock()
			c := contract("acme", tc.gpus, now, time.Hour)
			for _, i := range tc.pin {
				c.Pin = append(c.Pin, h.uuids[i])
			}
			sw.apiContracts["acme"] = c
			sw.apiContracts["other"] = contract("other", 1, now, time.Hour)
			for i, f := range fleet {
				g := sw.order[i]
				g.State, g.health.State, g.Contract = f.state, f.health, f.contract
				if f.contract != "" {
					g.Workload = "llm"
				}
				if f.state == StateQuarantined {
					g.Reason = ReasonGPUNotReleased
				}
				if f.cordon {
					g.Cordon = &Cordon{Reason: "maintenance"}
				}
				if f.backoff {
					g.Backoff = map[string]time.Time{"acme": now.Add(time.Minute)}
				}
			}
			pl := sw.placeLocked(now)
			var got []int
			for i, g := range sw.order {
				if pl.want[g.UUID] == "acme" {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.want) || !equalInts(got, tc.want) {
				t.Errorf("placed on %v, want %v", got, tc.want)
			}
			if pl.want[h.uuids[5]] != "other" {
				t.Error("the other contract lost its GPU")
			}
			sf := sw.shortfall["acme"]
			if (tc.shortfall == "") != (sf == "") || !strings.Contains(sf, tc.shortfall) {
				t.Errorf("shortfall %q, want %q", sf, tc.shortfall)
			}
		})
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
