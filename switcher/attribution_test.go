package switcher

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
	"github.com/hashgate/proxyd/switcher/workload"
)

func (h *harness) events(gpu, reason string) []Event {
	var out []Event
	for _, e := range h.sw.Events(EventFilter{GPU: gpu, Limit: events.DefaultSize}) {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func pinned(id string, uuid string, start time.Time) Contract {
	c := contract(id, 1, start, time.Hour)
	c.Pin = []string{uuid}
	return c
}

// Issue 13, finding 1: the miner's stop reports success but the miner runs
// on. proxyd sees its own process still on the GPU, force-stops it, proves
// the GPU free and serves the contract: no quarantine, no operator.
func TestScenarioLyingStopIsEscalated(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	u := h.uuids[0]
	h.rt.SetFault(u, workload.SimFault{StopLies: true})
	h.put(pinned("acme", u, h.clock.Now()))
	h.runUntil("GPU 0 serving acme", 120, func() bool { return h.gpu(0).State == StateServingAI })
	kills := h.events(u, ReasonKillOwned)
	if len(kills) != 1 || len(kills[0].Processes) != 1 || kills[0].Processes[0].Owner.Class != "mining" ||
		!strings.Contains(kills[0].Message, "still runs") {
		t.Fatalf("escalation events %+v", kills)
	}
	if n := len(h.calls("kill", "")); n != 1 {
		t.Errorf("%d kills, want 1", n)
	}
	if p := h.path(u); containsRun(p, []State{StateQuarantined}) ||
		!containsRun(p, []State{StateStoppingMiner, StateVerifyingFree, StateStartingAI, StateServingAI}) {
		t.Errorf("path %v", p)
	}
}

// The field case in full: the lying miner and a foreign process on one
// GPU. The miner is killed; the foreign process is never touched and keeps
// the GPU quarantined, the reason naming it with its owner; once it is
// gone and an operator resumes, the contract is served.
func TestScenarioLyingStopBesideForeignProcess(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	u := h.uuids[0]
	h.rt.SetFault(u, workload.SimFault{StopLies: true})
	h.put(pinned("acme", u, h.clock.Now()))
	h.runUntil("GPU 0 stopping its miner", 30, func() bool { return h.gpu(0).State == StateStoppingMiner })
	_ = h.sim.StartProcess(u, 6229, 2566<<20)
	h.runUntil("GPU 0 quarantined", 200, func() bool { return h.gpu(0).State == StateQuarantined })
	g := h.gpu(0)
	if g.Reason != ReasonGPUNotReleased || !strings.Contains(g.Message, "pid 6229 (2566 MiB, foreign") ||
		strings.Contains(g.Message, "mining (") {
		t.Errorf("quarantine names the foreign process only: %+v", g)
	}
	if len(h.calls("kill", "")) != 1 {
		t.Errorf("kills %v", h.calls("kill", ""))
	}
	st, _ := h.sim.State(u)
	if len(st.Processes) != 1 || st.Processes[0].PID != 6229 {
		t.Fatalf("processes on GPU 0: %+v", st.Processes)
	}
	q := h.events(u, ReasonGPUNotReleased)
	if len(q) == 0 || len(q[len(q)-1].Processes) != 1 || q[len(q)-1].Processes[0].Owner.Class != "foreign" {
		t.Errorf("the quarantine's journal entry: %+v", q)
	}
	h.steady("quarantined while the foreign process runs", 30, func() bool { return h.gpu(0).State == StateQuarantined })
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { // its owner ends it
		g.StopProcess(6229)
		g.SetLoad(0)
	})
	h.steady("quarantined until an operator resumes", 10, func() bool { return h.gpu(0).State == StateQuarantined })
	if _, err := h.sw.Resume(u); err != nil {
		t.Fatal(err)
	}
	h.runUntil("acme served after the resume", 60, func() bool { return h.serving("acme") == 1 })
}

// A miner that ignores stop and kill alike, then finally dies: the GPU
// quarantined only for proxyd's own process goes back to work by itself.
func TestScenarioSelfBlockedQuarantineRecovers(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	u := h.uuids[0]
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { g.RefuseRelease = true })
	h.put(pinned("acme", u, h.clock.Now()))
	h.runUntil("GPU 0 quarantined", 120, func() bool { return h.gpu(0).State == StateQuarantined })
	if g := h.gpu(0); !strings.Contains(g.Message, "only proxyd's own workload holds it") {
		t.Errorf("quarantine %+v", g)
	}
	if _, err := h.sw.Resume(u); !errors.Is(err, ErrStillHeld) {
		t.Errorf("resume while the miner holds it: %v", err)
	}
	_ = h.sim.Update(u, func(g *nvmlsim.GPUState) { g.RefuseRelease = false })
	h.runUntil("acme served without an operator", 120, func() bool { return h.serving("acme") == 1 })
	if p := h.path(u); !containsRun(p, []State{StateQuarantined, StateIdle, StateVerifyingFree, StateStartingAI, StateServingAI}) {
		t.Errorf("path %v", p)
	}
}

// Proof of start: an AI workload whose process lands on another GPU is
// stopped (wrong_gpu) and never counts as serving; the GPU it landed on
// is not quarantined for it (the process is proxyd's).
func TestScenarioWrongGPU(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	u0, u1 := h.uuids[0], h.uuids[1]
	h.rt.SetFault(u0, workload.SimFault{LandOn: u1})
	h.put(pinned("acme", u0, h.clock.Now()))
	h.runUntil("wrong_gpu reported", 120, func() bool { return len(h.events(u0, ReasonWrongGPU)) > 0 })
	h.rt.SetFault(u0, workload.SimFault{}) // the miner's command is right
	e := h.events(u0, ReasonWrongGPU)[0]
	if e.From != StateStartingAI || e.To != StateDrainingAI || len(e.Processes) != 1 || e.Processes[0].Owner.Class != "ai:acme" ||
		!strings.Contains(e.Message, "GPU 1") {
		t.Errorf("wrong_gpu event %+v", e)
	}
	h.runUntil("GPU 0 back to mining", 120, func() bool { return h.gpu(0).State == StateMining })
	for _, ev := range h.sw.Events(EventFilter{GPU: u0, Limit: events.DefaultSize}) {
		if ev.To == StateServingAI {
			t.Errorf("served from the wrong GPU: %+v", ev)
		}
	}
	if st, _ := h.sim.State(u1); len(st.Processes) != 1 {
		t.Errorf("GPU 1 processes %+v, want its miner only", st.Processes)
	}
	if g := h.gpu(1); g.State != StateMining {
		t.Errorf("GPU 1: %+v", g)
	}
	if st := h.contractStatus("acme"); !strings.Contains(st.Shortfall, "wrong GPU") {
		t.Errorf("shortfall %+v", st)
	}
}

// Proof of start: "ready" per the status check is not enough while no
// process of the workload holds the GPU; proof_of_start = "none" trusts
// the status check.
func TestScenarioProofOfStart(t *testing.T) {
	h := newHarness(t, harnessOpts{noRun: true})
	h.step() // the reconcile pass: the switcher has its first samples
	u := h.uuids[2]
	in := workload.Instance{Workload: "llm", Contract: "acme", GPUUUID: u, GPUIndex: 2}
	spec := h.sw.specs["llm"]
	hd := workload.Handle{Runtime: workload.KindSimulated, ID: "sim-x", Instance: in}
	h.sw.mu.Lock()
	g := h.sw.recs[u]
	g.Handle = &hd
	proven, wrong, _, wait := h.sw.proofLocked(g)
	h.sw.mu.Unlock()
	if proven || wrong != "" || !strings.Contains(wait, "no process of it holds GPU 2") {
		t.Errorf("no process: proven %v wrong %q wait %q", proven, wrong, wait)
	}
	spec.ProofOfStart = "none"
	h.sw.mu.Lock()
	h.sw.specs["llm"] = spec
	proven, _, _, _ = h.sw.proofLocked(g)
	g.Handle = nil
	h.sw.mu.Unlock()
	if !proven {
		t.Error(`proof_of_start = "none" still wants a process`)
	}
}

// After a restart, a process that carries proxyd's marker though no
// runtime lists it (a status command that lies) is proxyd's leftover, not
// a foreign process: the GPU is proven free, and once the leftover is gone
// it goes on without an operator.
func TestReconcileLeftoverIsNotForeign(t *testing.T) {
	var u string
	h := newHarness(t, harnessOpts{noRun: true, setup: func(s *nvmlsim.Server) {
		u = s.UUIDs()[0]
		_ = s.Update(u, func(g *nvmlsim.GPUState) {
			g.AddProcess(nvmlsim.Process{PID: 999, UsedMemory: 1 << 30, Env: []string{"PROXYD_WORKLOAD=exec:mining:" + u}})
		})
	}})
	h.step()
	g := h.gpu(0)
	if g.State != StateVerifyingFree || g.Reason != ReasonReconcileVerify || !strings.Contains(g.Message, "proxyd's own") {
		t.Fatalf("GPU 0 after the restart: %+v", g)
	}
	h.runUntil("GPU 0 quarantined while the leftover holds it", 60, func() bool { return h.gpu(0).State == StateQuarantined })
	if g := h.gpu(0); !strings.Contains(g.Message, "only proxyd's own workload holds it") {
		t.Errorf("quarantine %+v", g)
	}
	_ = h.sim.StopProcess(u, 999)
	h.runUntil("GPU 0 mining without an operator", 60, func() bool { return h.gpu(0).State == StateMining })
}
