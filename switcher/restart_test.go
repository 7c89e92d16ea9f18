package switcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
	"github.com/hashgate/proxyd/switcher/workload"
)

// kill -9 at every step of the AI round trip, between two passes or in the
// middle of one (its ops did their work, their results are lost): the new
// process, started from the state file, must end consistent: the contract
// not lost, served in full, never a GPU with two workloads or AI beside a
// running process, every GPU back to mining with its own power limit.
func TestScenarioRestartInEveryTransition(t *testing.T) {
	// Learn how many steps the round trip takes.
	probe := newHarness(t, harnessOpts{})
	start := probe.clock.Now()
	probe.put(contract("acme", 3, start, 2*time.Minute))
	served, total := 0, 0
	// Restart where something changes: a step after which some GPU is in
	// another state than before it (the steps in between are alike).
	var points []int
	prev := ""
	for i := 0; i < 400; i++ {
		sig := ""
		for _, g := range probe.sw.GPUStatuses() {
			sig += string(g.State) + "/" + g.Contract + " "
		}
		if sig != prev {
			points = append(points, i)
			prev = sig
		}
		if served == 0 && probe.serving("acme") == 3 {
			served = i
		}
		if served > 0 && probe.clock.Now().After(start.Add(2*time.Minute)) && probe.count(StateMining) == 8 {
			total = i
			break
		}
		probe.step()
	}
	if served == 0 || total == 0 {
		t.Fatalf("the round trip did not complete: %s", probe.states())
	}
	// Also one step before each change: a pass whose ops are under way.
	var ks []int
	for _, p := range points {
		for _, k := range []int{p - 1, p} {
			if k >= 0 && (len(ks) == 0 || ks[len(ks)-1] < k) {
				ks = append(ks, k)
			}
		}
	}
	t.Logf("round trip: serving after %d steps, all mining again after %d; restarting at %d points", served, total, len(ks))

	for _, mode := range []string{"between passes", "mid-op"} {
		for _, k := range ks {
			t.Run(fmt.Sprintf("%s/step%d", mode, k), func(t *testing.T) {
				h := newHarness(t, harnessOpts{})
				start := h.clock.Now()
				h.put(contract("acme", 3, start, 2*time.Minute))
				for range k {
					h.step()
				}
				if mode == "mid-op" {
					h.crashStep()
				}
				before := h.states()
				h.restart()
				st, err := h.sw.ContractStatus("acme")
				if err != nil || st.Source != SourceAPI {
					t.Fatalf("the API contract was lost in the restart: %v %+v", err, st)
				}
				end := start.Add(2 * time.Minute)
				if h.clock.Now().Before(end.Add(-20 * time.Second)) {
					h.runUntil("3 serving after the restart", 150, func() bool {
						return h.serving("acme") == 3 || !h.clock.Now().Before(end)
					})
				}
				h.runUntil("every GPU mining after the end", 200, func() bool {
					return h.clock.Now().After(end) && h.count(StateMining) == 8
				})
				for i := range 8 {
					if l := h.limit(i); l != initialLimitMW {
						t.Errorf("GPU %d at %d mW, want exactly %d (before the restart:%s)", i, l, initialLimitMW, before)
					}
					if st, _ := h.sim.State(h.uuids[i]); len(st.Processes) != 1 {
						t.Errorf("GPU %d has %d processes, want its miner only", i, len(st.Processes))
					}
				}
				if n := len(h.rt.Instances()); n != 8 {
					t.Errorf("%d workloads run, want 8 miners: %v", n, h.rt.Instances())
				}
			})
		}
	}
}

// The reconcile rules, one GPU at a time: what the state file says, what
// runs, what NVML sees → where the GPU stands after the restart.
func TestReconcileOnStartRules(t *testing.T) {
	type reality struct {
		miner, ai  bool   // proxyd's workloads running on GPU 0
		aiContract string // the AI's contract label
		foreign    bool   // a process proxyd did not start
	}
	tests := []struct {
		name     string
		saved    *durable // GPU 0's record in the file; nil: no record
		real     reality
		want     State
		reason   string
		contract string
		strays   int
	}{
		{"no file, nothing runs", nil, reality{}, StateIdle, ReasonDiscovered, "", 0},
		{"no file, miner runs", nil, reality{miner: true}, StateMining, ReasonAdopted, "", 0},
		{"no file, AI runs", nil, reality{ai: true, aiContract: "acme"}, StateStartingAI, ReasonAdopted, "acme", 0},
		{"serving, AI runs", &durable{State: StateServingAI, Contract: "acme"}, reality{ai: true, aiContract: "acme"},
			StateServingAI, ReasonAdopted, "acme", 0},
		{"serving another contract, AI runs", &durable{State: StateServingAI, Contract: "other"}, reality{ai: true, aiContract: "acme"},
			StateDrainingAI, ReasonReconcileStop, "acme", 0},
		{"mining, AI runs", &durable{State: StateMining}, reality{ai: true, aiContract: "acme"}, StateDrainingAI, ReasonReconcileStop, "acme", 0},
		{"starting AI, miner runs", &durable{State: StateStartingAI, Contract: "acme"}, reality{miner: true},
			StateStoppingMiner, ReasonReconcileStop, "acme", 0},
		{"stopping miner, miner runs", &durable{State: StateStoppingMiner, Contract: "acme"}, reality{miner: true},
			StateStoppingMiner, ReasonReconcileStop, "acme", 0},
		{"miner and AI both run", &durable{State: StateStartingAI, Contract: "acme"}, reality{miner: true, ai: true, aiContract: "acme"},
			StateVerifyingFree, ReasonReconcileConflict, "", 2},
		{"quarantined stays", &durable{State: StateQuarantined, Reason: ReasonGPUNotReleased, Message: "x"}, reality{},
			StateQuarantined, ReasonGPUNotReleased, "", 0},
		{"starting AI, nothing runs", &durable{State: StateStartingAI, Contract: "acme"}, reality{},
			StateVerifyingFree, ReasonReconcileMissing, "acme", 0},
		{"draining AI, nothing runs", &durable{State: StateDrainingAI, Contract: "acme"}, reality{},
			StateVerifyingFree, ReasonReconcileVerify, "", 0},
		{"mining, nothing runs", &durable{State: StateMining}, reality{}, StateIdle, ReasonReconcileMissing, "", 0},
		{"foreign process", nil, reality{foreign: true}, StateQuarantined, ReasonForeignProcess, "", 0},
		{"mining, foreign process", &durable{State: StateMining}, reality{foreign: true}, StateQuarantined, ReasonForeignProcess, "", 0},
		{"verifying, leftover process", &durable{State: StateVerifyingFree, Contract: "acme"}, reality{foreign: true},
			StateVerifyingFree, ReasonReconcileVerify, "acme", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{noRun: true, setup: func(s *nvmlsim.Server) {}})
			h.allowViolations = true
			u := h.uuids[0]
			in := workload.Instance{GPUUUID: u, GPUIndex: 0}
			mining, _ := h.sw.specFor(workload.MiningWorkload, "")
			if tc.real.miner {
				mi := in
				mi.Workload = workload.MiningWorkload
				if _, err := h.rt.Start(t.Context(), mining, mi); err != nil {
					t.Fatal(err)
				}
			}
			if tc.real.ai {
				ai := in
				ai.Workload, ai.Contract = "llm", tc.real.aiContract
				if _, err := h.rt.Start(t.Context(), h.sw.specs["llm"], ai); err != nil {
					t.Fatal(err)
				}
			}
			if tc.real.foreign {
				_ = h.sim.StartProcess(u, 999, 1<<30)
			}
			h.clock.Advance(10 * time.Second) // processes appear
			_ = h.mgr.SampleNow(t.Context())
			h.put(contract("acme", 1, h.clock.Now(), time.Hour))
			h.put(contract("other", 1, h.clock.Now(), time.Hour))
			if tc.saved != nil {
				d := *tc.saved
				d.UUID, d.Since = u, h.clock.Now()
				h.sw.mu.Lock()
				h.sw.recs[u].durable = d
				h.sw.persistLocked()
				h.sw.mu.Unlock()
			}
			h.restart()
			h.sw.reconcileOnStart(t.Context())
			g := h.gpu(0)
			if g.State != tc.want || g.Reason != tc.reason || g.Contract != tc.contract {
				t.Errorf("got %s (%s) contract %q: %s; want %s (%s) contract %q", g.State, g.Reason, g.Contract, g.Message,
					tc.want, tc.reason, tc.contract)
			}
			h.sw.mu.Lock()
			strays := len(h.sw.recs[u].Strays)
			h.sw.mu.Unlock()
			if strays != tc.strays {
				t.Errorf("%d strays, want %d", strays, tc.strays)
			}
			if tc.real.foreign {
				if st, _ := h.sim.State(u); len(st.Processes) == 0 {
					t.Error("the foreign process was killed")
				}
			}
			// Whatever the start, the GPU settles without double booking.
			before := len(h.rt.Violations())
			for range 60 {
				h.step()
			}
			if v := h.rt.Violations(); len(v) > before {
				t.Errorf("after the restart: %v", v[before:])
			}
			per := map[string]int{}
			for _, in := range h.rt.Instances() {
				per[in.GPUUUID]++
			}
			if per[u] > 1 {
				t.Errorf("GPU 0 still runs %d workloads: %v", per[u], h.rt.Instances())
			}
		})
	}
}
