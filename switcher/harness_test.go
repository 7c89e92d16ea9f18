package switcher

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
	"github.com/hashgate/proxyd/switcher/internal/fakeclock"
	"github.com/hashgate/proxyd/switcher/workload"
)

// Test timing: one step is one second of fake time.
const (
	tick = time.Second
	// initialLimitMW is every simulated GPU's power limit before the
	// switcher touches it: an odd value, to prove the restore is exact.
	initialLimitMW = 350_500
	aiLimitW       = 250
)

var epoch = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// testConfig is a switcher with simulated mining and one simulated AI
// workload "llm" (250 W), two GPUs in transition at most.
func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.StateDir = dir
	cfg.MaxParallel = 2
	cfg.FreePolls = 2
	cfg.StatusInterval = time.Duration(5 * time.Second)
	cfg.RetryBackoff = time.Duration(5 * time.Minute)
	cfg.Timeouts = Timeouts{
		StopMiner:     time.Duration(30 * time.Second),
		VerifyFree:    time.Duration(20 * time.Second),
		StartAI:       time.Duration(60 * time.Second),
		DrainAI:       time.Duration(30 * time.Second),
		RestoreMining: time.Duration(30 * time.Second),
	}
	cfg.Mining = &workload.Definition{Runtime: workload.KindSimulated, StopTimeout: 10 * time.Second,
		Readiness: workload.ReadinessRunning, Params: workload.SimParams{MemoryMiB: 2048, Load: 0.8,
			StartDelay: tick, ReadyDelay: 2 * tick, StopDelay: tick}}
	cfg.Workload = map[string]workload.Definition{"llm": {Runtime: workload.KindSimulated, PowerLimitW: aiLimitW,
		StopTimeout: 10 * time.Second, Readiness: workload.ReadinessRunning, Params: workload.SimParams{MemoryMiB: 30000, Load: 0.95,
			StartDelay: 2 * tick, ReadyDelay: 8 * tick, StopDelay: 2 * tick}},
		"llm2": {Runtime: workload.KindSimulated, PowerLimitW: 200, StopTimeout: 10 * time.Second,
			Readiness: workload.ReadinessRunning, Params: workload.SimParams{MemoryMiB: 20000, Load: 0.9, StartDelay: tick,
				ReadyDelay: 3 * tick, StopDelay: tick}}}
	return cfg
}

func contract(id string, gpus int, start time.Time, d time.Duration) Contract {
	return Contract{ID: id, GPUs: gpus, Start: start, End: start.Add(d), PriceUSDPerGPUHour: 2, Priority: 1, Workload: "llm"}
}

// harness is a switcher on eight simulated GPUs with the simulated
// runtime and a fake clock, driven step by step.
type harness struct {
	t         *testing.T
	clock     *fakeclock.Clock
	sim       *nvmlsim.Server
	mgr       *nvml.Manager
	rt        *workload.Sim
	cfg       Config
	contracts []Contract
	sw        *Switcher
	uuids     []string
	steps     int
	// extra runtimes and a cluster's demand, for the cluster tests.
	extra   []workload.Runtime
	cluster ClusterDemand
	// allowViolations: the test itself put workloads on busy GPUs.
	allowViolations bool
	maxInTransition int
}

type harnessOpts struct {
	cfg   func(*Config)
	setup func(*nvmlsim.Server) // before the switcher first looks
	noRun bool                  // do not bring the GPUs to mining
	// extra runtimes and a cluster's demand (cluster tests).
	extra   []workload.Runtime
	cluster ClusterDemand
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	clock := fakeclock.New(epoch)
	sim := nvmlsim.New(nvmlsim.Options{AfterFunc: clock.AfterFunc})
	sim.UpdateAll(func(g *nvmlsim.GPUState) { g.PowerLimitMW = initialLimitMW })
	if ret := sim.Init(); ret != 0 {
		t.Fatalf("sim Init: %v", ret)
	}
	mgr, err := nvml.New(sim, nvml.Options{Backend: nvml.BackendSimulated, PollInterval: time.Hour, Processes: sim,
		EventWait: 5 * time.Millisecond, Clock: clock, Log: zaptest.NewLogger(t).Named("nvml")})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = mgr.Stop(ctx)
		sim.Close()
		sim.Shutdown()
	})
	cfg := testConfig(t.TempDir())
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	h := &harness{t: t, clock: clock, sim: sim, mgr: mgr, cfg: cfg, uuids: sim.UUIDs(),
		rt: workload.NewSim(workload.SimOptions{Server: sim, Now: clock.Now}), extra: o.extra, cluster: o.cluster}
	if o.setup != nil {
		o.setup(sim)
	}
	h.start()
	if !o.noRun {
		h.runUntil("every GPU mining", 200, func() bool { return h.count(StateMining) == 8 })
	}
	return h
}

// start builds a switcher from the state directory, as a (re)started
// proxyd would.
func (h *harness) start() {
	h.t.Helper()
	sw, err := New(Options{Config: h.cfg, Contracts: h.contracts, GPUs: h.mgr, Runtimes: append([]workload.Runtime{h.rt}, h.extra...),
		Cluster: h.cluster, Clock: h.clock, Log: zaptest.NewLogger(h.t).Named(fmt.Sprintf("switcher%d", h.steps))})
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.sw = sw
}

// restart drops the switcher as kill -9 would (nothing in memory survives,
// nothing is written) and starts a new one from the state directory.
func (h *harness) restart() {
	h.t.Helper()
	h.sw.stopOps() // the old process is gone: nothing of it runs on
	h.start()
}

// step advances fake time one tick, samples the GPUs and runs one pass.
func (h *harness) step() {
	h.t.Helper()
	h.clock.Advance(tick)
	if err := h.mgr.SampleNow(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.sw.step(context.Background())
	h.steps++
	h.check()
}

// crashStep runs a pass whose ops do their work but whose results are
// lost, as when proxyd is killed while a container starts or stops.
func (h *harness) crashStep() {
	h.t.Helper()
	h.clock.Advance(tick)
	_ = h.mgr.SampleNow(context.Background())
	h.sw.pass(context.Background())
	h.sw.ops.Wait()
	for len(h.sw.results) > 0 {
		<-h.sw.results
	}
	h.steps++
}

func (h *harness) check() {
	h.t.Helper()
	n := 0
	for _, st := range h.sw.GPUStatuses() {
		if st.InTransition {
			n++
		}
	}
	h.maxInTransition = max(h.maxInTransition, n)
	if n > h.cfg.MaxParallel {
		h.t.Fatalf("step %d: %d GPUs in transition, max_parallel is %d: %v", h.steps, n, h.cfg.MaxParallel, h.states())
	}
	if v := h.rt.Violations(); len(v) > 0 && !h.allowViolations {
		h.t.Fatalf("step %d: workload started on a busy GPU: %v", h.steps, v)
	}
	// Never two of proxyd's workloads on one GPU.
	per := map[string][]string{}
	for _, in := range h.rt.Instances() {
		per[in.GPUUUID] = append(per[in.GPUUUID], in.Instance.String())
	}
	for gpu, ins := range per {
		if len(ins) > 1 && !h.allowViolations {
			h.t.Fatalf("step %d: GPU %s double-booked: %v", h.steps, gpu, ins)
		}
	}
}

func (h *harness) runUntil(what string, maxSteps int, cond func() bool) {
	h.t.Helper()
	for range maxSteps {
		if cond() {
			return
		}
		h.step()
	}
	if !cond() {
		h.t.Fatalf("after %d steps, still not %s: %v\nevents:\n%s", maxSteps, what, h.states(), h.eventLog())
	}
}

// steady runs n steps and fails if cond stops holding.
func (h *harness) steady(what string, n int, cond func() bool) {
	h.t.Helper()
	for range n {
		h.step()
		if !cond() {
			h.t.Fatalf("step %d: no longer %s: %v\nevents:\n%s", h.steps, what, h.states(), h.eventLog())
		}
	}
}

func (h *harness) count(st State) int {
	n := 0
	for _, g := range h.sw.GPUStatuses() {
		if g.State == st {
			n++
		}
	}
	return n
}

func (h *harness) gpu(i int) GPUStatus {
	h.t.Helper()
	st, err := h.sw.GPUStatus(h.uuids[i])
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) states() string {
	var b strings.Builder
	for _, g := range h.sw.GPUStatuses() {
		fmt.Fprintf(&b, "\n  %d %s %s contract=%q reason=%s: %s", g.Index, g.State, g.Owner, g.Contract, g.Reason, g.Message)
	}
	return b.String()
}

func (h *harness) eventLog() string {
	var b strings.Builder
	for _, e := range h.sw.Events(EventFilter{Limit: 80}) {
		fmt.Fprintf(&b, "  %d %s gpu=%.12s %s→%s %s: %s\n", e.Seq, e.At.Format("15:04:05"), e.GPU, e.From, e.To, e.Reason, e.Message)
	}
	return b.String()
}

func (h *harness) put(c Contract) {
	h.t.Helper()
	if _, _, err := h.sw.PutContract(c); err != nil {
		h.t.Fatalf("PutContract: %v", err)
	}
}

func (h *harness) contractStatus(id string) ContractStatus {
	h.t.Helper()
	st, err := h.sw.ContractStatus(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) serving(id string) int { return h.contractStatus(id).Serving }

func (h *harness) limit(i int) uint32 {
	st, _ := h.sim.State(h.uuids[i])
	return st.PowerLimitMW
}

// transitions returns the path of one GPU through the states.
func (h *harness) path(uuid string) []State {
	var out []State
	for _, e := range h.sw.Events(EventFilter{GPU: uuid, Limit: events.DefaultSize}) {
		if e.To != "" && e.From != e.To {
			if len(out) == 0 {
				out = append(out, e.From)
			}
			out = append(out, e.To)
		}
	}
	return out
}

func containsRun(path, run []State) bool {
	for i := 0; i+len(run) <= len(path); i++ {
		if slices.Equal(path[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

func (h *harness) calls(op, contract string) []workload.SimCall {
	var out []workload.SimCall
	for _, c := range h.rt.Calls() {
		if c.Op == op && (contract == "*" || c.Instance.Contract == contract) {
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) gpuIndex(uuid string) int {
	for i, u := range h.uuids {
		if u == uuid {
			return i
		}
	}
	h.t.Fatalf("no GPU %s", uuid)
	return -1
}
