package switcher

import (
	"github.com/hashgate/proxyd/switcher/workload"

	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/internal/events"
	"github.com/hashgate/proxyd/nvml"
	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// The AI round trip: mining → AI for the contract → mining when it ends,
// with power limits lowered before load moves, raised after, restored
// exactly; never more than max_parallel GPUs in transition.
func TestScenarioHappyPath(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for i := range 8 {
		if st := h.gpu(i); st.Owner != "mining" || st.Handle == nil {
			t.Fatalf("GPU %d after bring-up: %+v", i, st)
		}
	}
	start := h.clock.Now().Add(30 * time.Second)
	h.put(contract("acme", 3, start, 10*time.Minute))
	if st := h.contractStatus("acme"); st.State != ContractScheduled || st.Desired != 0 {
		t.Errorf("before start: %+v", st)
	}
	h.steady("mining until the contract starts", 25, func() bool { return h.count(StateMining) == 8 })
	h.runUntil("3 GPUs serving acme", 120, func() bool { return h.serving("acme") == 3 })

	st := h.contractStatus("acme")
	if st.State != ContractActive || st.Desired != 3 || st.Assigned != 3 || st.Shortfall != "" || len(st.GPUList) != 3 {
		t.Errorf("serving contract: %+v", st)
	}
	serving := map[string]bool{}
	for _, u := range st.GPUList {
		serving[u] = true
	}
	for i, u := range h.uuids {
		g := h.gpu(i)
		if serving[u] {
			if g.State != StateServingAI || g.Owner != "ai" || g.Contract != "acme" || g.Workload != "llm" {
				t.Errorf("GPU %d: %+v", i, g)
			}
			if l := h.limit(i); l != aiLimitW*1000 {
				t.Errorf("GPU %d serves at %d mW, want the profile's %d", i, l, aiLimitW*1000)
			}
			if g.PowerSnapshot == nil || g.PowerSnapshot.LimitMW != initialLimitMW {
				t.Errorf("GPU %d: snapshot %+v, want the limit before the switch", i, g.PowerSnapshot)
			}
			want := []State{StateMining, StateStoppingMiner, StateVerifyingFree, StateStartingAI, StateServingAI}
			if p := h.path(u); !containsRun(p, want) {
				t.Errorf("GPU %d path %v lacks %v", i, p, want)
			}
		} else if g.State != StateMining {
			t.Errorf("GPU %d not in the contract left mining: %+v", i, g)
		}
	}
	// Idle GPUs first, then mining ones: all were mining, so the lowest indexes.
	for i := range 3 {
		if !serving[h.uuids[i]] {
			t.Errorf("placement took %v, want GPUs 0-2", st.GPUList)
		}
	}
	// AI never started beside a process; the limit was lowered before the
	// miner stopped.
	for _, c := range h.calls("start", "acme") {
		if c.Processes != 0 || c.PowerLimitMW != aiLimitW*1000 {
			t.Errorf("AI started with %d process(es) at %d mW: %+v", c.Processes, c.PowerLimitMW, c)
		}
	}
	for _, c := range h.calls("stop", "") {
		if serving[c.Instance.GPUUUID] && c.PowerLimitMW != aiLimitW*1000 {
			t.Errorf("miner on %s stopped at %d mW: the limit must drop before the load moves", c.Instance.GPUUUID, c.PowerLimitMW)
		}
	}

	// Past the end: back to mining, the limit raised only after the AI
	// stopped, restored exactly.
	h.clock.Advance(10 * time.Minute)
	h.runUntil("every GPU mining again", 120, func() bool { return h.count(StateMining) == 8 })
	if st := h.contractStatus("acme"); st.State != ContractEnded || st.Assigned != 0 {
		t.Errorf("after the end: %+v", st)
	}
	for i := range 8 {
		if l := h.limit(i); l != initialLimitMW {
			t.Errorf("GPU %d limit %d mW after the round trip, want exactly %d", i, l, initialLimitMW)
		}
		if g := h.gpu(i); g.PowerSnapshot != nil {
			t.Errorf("GPU %d keeps a snapshot after the restore: %+v", i, g.PowerSnapshot)
		}
	}
	for u := range serving {
		want := []State{StateServingAI, StateDrainingAI, StateVerifyingFree, StateRestoringMining, StateMining}
		if p := h.path(u); !containsRun(p, want) {
			t.Errorf("GPU %s path %v lacks %v", u, p, want)
		}
	}
	for _, c := range h.calls("stop", "acme") {
		if c.PowerLimitMW != aiLimitW*1000 {
			t.Errorf("AI stopped at %d mW: the limit must not rise before the load is gone", c.PowerLimitMW)
		}
	}
	restarts := 0
	for _, c := range h.calls("start", "") {
		if serving[c.Instance.GPUUUID] && c.At.After(start) {
			restarts++
			if c.PowerLimitMW != initialLimitMW || c.Processes != 0 {
				t.Errorf("miner restarted at %d mW with %d process(es)", c.PowerLimitMW, c.Processes)
			}
		}
	}
	if restarts != 3 {
		t.Errorf("%d miner restarts on the contract's GPUs, want 3", restarts)
	}
	if h.maxInTransition != 2 {
		t.Errorf("at most %d GPUs in transition; the test wants max_parallel (2) reached and never passed", h.maxInTransition)
	}
}

// A miner that ignores stop and kill: the GPU is quarantined
// (gpu_not_released) and the AI workload never starts on it.
func TestScenarioMinerRefusesRelease(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_ = h.sim.Update(h.uuids[0], func(g *nvmlsim.GPUState) { g.RefuseRelease = true })
	c := contract("stuck", 1, h.clock.Now(), time.Hour)
	c.Pin = []string{h.uuids[0]}
	h.put(c)
	h.runUntil("GPU 0 quarantined", 120, func() bool { return h.gpu(0).State == StateQuarantined })
	g := h.gpu(0)
	if g.Reason != ReasonGPUNotReleased || !strings.Contains(g.Message, "process") {
		t.Errorf("quarantine: %+v", g)
	}
	if n := len(h.calls("start", "stuck")); n != 0 {
		t.Errorf("AI started %d time(s) on a GPU that was never free", n)
	}
	if len(h.calls("kill", "")) == 0 {
		t.Error("the switcher never escalated to a kill of its own miner")
	}
	p := h.path(h.uuids[0])
	if !containsRun(p, []State{StateMining, StateStoppingMiner, StateVerifyingFree, StateQuarantined}) {
		t.Errorf("path %v", p)
	}
	st := h.contractStatus("stuck")
	if st.Serving != 0 || !strings.Contains(st.Shortfall, "quarantined") {
		t.Errorf("contract: %+v", st)
	}
	h.steady("quarantined", 30, func() bool { return h.gpu(0).State == StateQuarantined })
	// Resume is refused while proxyd's own miner still holds it.
	if _, err := h.sw.Resume(h.uuids[0]); !errors.Is(err, ErrStillHeld) {
		t.Errorf("resume with the miner stuck: %v", err)
	}
}

// Memory held with no process after the miner left (a zombie context):
// quarantined, no AI.
func TestScenarioZombieMemory(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_ = h.sim.Update(h.uuids[1], func(g *nvmlsim.GPUState) { g.BaseMemoryUsed += 6 << 30 })
	c := contract("zombie", 1, h.clock.Now(), time.Hour)
	c.Pin = []string{h.uuids[1]}
	h.put(c)
	h.runUntil("GPU 1 quarantined", 120, func() bool { return h.gpu(1).State == StateQuarantined })
	g := h.gpu(1)
	if g.Reason != ReasonGPUNotReleased || !strings.Contains(g.Message, "zombie") {
		t.Errorf("quarantine: %+v", g)
	}
	if n := len(h.calls("start", "zombie")); n != 0 {
		t.Errorf("AI started %d time(s) beside zombie memory", n)
	}
	h.runUntil("the quarantined GPU's own limit back", 3, func() bool { return h.limit(1) == initialLimitMW })
}

// A process proxyd does not own on a GPU at start: quarantined, nothing
// killed, the rest goes on; resume after the owner removed it.
func TestScenarioForeignProcessAtStart(t *testing.T) {
	h := newHarness(t, harnessOpts{setup: func(s *nvmlsim.Server) {
		_ = s.StartProcess(s.UUIDs()[2], 777, 1<<30)
	}, noRun: true})
	h.runUntil("the others mining", 200, func() bool { return h.count(StateMining) == 7 })
	g := h.gpu(2)
	if g.State != StateQuarantined || g.Reason != ReasonForeignProcess || !strings.Contains(g.Message, "pid 777") {
		t.Fatalf("GPU 2: %+v", g)
	}
	st, _ := h.sim.State(h.uuids[2])
	if len(st.Processes) != 1 || st.Processes[0].PID != 777 {
		t.Errorf("the foreign process was touched: %+v", st.Processes)
	}
	for _, c := range h.rt.Calls() {
		if c.Instance.GPUUUID == h.uuids[2] {
			t.Errorf("the switcher acted on the foreign GPU: %+v", c)
		}
	}
	// Its owner stops it; an operator resumes; it goes mining after a proof.
	_ = h.sim.StopProcess(h.uuids[2], 777)
	if _, err := h.sw.Resume(h.uuids[2]); err != nil {
		t.Fatal(err)
	}
	h.runUntil("GPU 2 mining", 60, func() bool { return h.gpu(2).State == StateMining })
	if p := h.path(h.uuids[2]); !containsRun(p, []State{StateQuarantined, StateIdle, StateVerifyingFree, StateRestoringMining, StateMining}) {
		t.Errorf("path %v", p)
	}
}

// A process appearing on an idle GPU (mining off): quarantined too.
func TestScenarioForeignProcessOnIdleGPU(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.Mining = nil }, noRun: true})
	h.runUntil("all idle", 10, func() bool { return h.count(StateIdle) == 8 })
	_ = h.sim.StartProcess(h.uuids[5], 4242, 1<<30)
	h.runUntil("GPU 5 quarantined", 10, func() bool { return h.gpu(5).State == StateQuarantined })
	if g := h.gpu(5); g.Reason != ReasonForeignProcess {
		t.Errorf("%+v", g)
	}
}

// A critical XID while serving: the GPU is quarantined and drained, the
// contract gets another GPU; resume brings it back to mining.
func TestScenarioCriticalXIDWhileServing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.put(contract("acme", 2, h.clock.Now(), time.Hour))
	h.runUntil("2 serving", 120, func() bool { return h.serving("acme") == 2 })
	victim := h.contractStatus("acme").GPUList[0]
	if n, _ := h.sim.InjectXID(victim, 79); n == 0 {
		t.Fatal("XID not delivered")
	}
	eventually(t, "the XID makes the GPU unhealthy", func() bool {
		g, _ := h.mgr.GPU(victim)
		return g.Health.State == nvml.Unhealthy
	})
	h.step()
	g, _ := h.sw.GPUStatus(victim)
	if g.State != StateQuarantined || g.Reason != ReasonUnhealthy || !strings.Contains(g.Message, "XID 79") {
		t.Fatalf("after the XID: %+v", g)
	}
	h.runUntil("its AI workload killed", 10, func() bool {
		for _, in := range h.rt.Instances() {
			if in.GPUUUID == victim {
				return false
			}
		}
		return true
	})
	h.runUntil("2 serving again", 120, func() bool { return h.serving("acme") == 2 })
	if st := h.contractStatus("acme"); strings.Contains(strings.Join(st.GPUList, ","), victim) {
		t.Errorf("the quarantined GPU is still assigned: %+v", st)
	}
	h.steady("quarantined", 20, func() bool { g, _ := h.sw.GPUStatus(victim); return g.State == StateQuarantined })
	if _, err := h.mgr.Resume(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sw.Resume(victim); err != nil {
		t.Fatal(err)
	}
	h.runUntil("back to mining", 60, func() bool { g, _ := h.sw.GPUStatus(victim); return g.State == StateMining })
}

// Readiness never comes: after start_ai the GPU goes back to mining and
// the contract says why it is short.
func TestScenarioAIReadinessNeverComes(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		w := c.Workload["llm"]
		p := w.Params.(workload.SimParams)
		p.NeverReady = true
		w.Params = p
		c.Workload["llm"] = w
	}})
	c := contract("slow", 1, h.clock.Now(), time.Hour)
	c.Pin = []string{h.uuids[3]}
	h.put(c)
	h.runUntil("GPU 3 starting AI", 60, func() bool { return h.gpu(3).State == StateStartingAI })
	h.runUntil("GPU 3 back to mining", 200, func() bool {
		return h.gpu(3).State == StateMining && h.calls("start", "slow") != nil
	})
	if p := h.path(h.uuids[3]); !containsRun(p, []State{StateStartingAI, StateDrainingAI, StateVerifyingFree, StateRestoringMining, StateMining}) {
		t.Errorf("path %v", p)
	}
	evs := h.sw.Events(EventFilter{GPU: h.uuids[3], Limit: events.DefaultSize})
	found := false
	for _, e := range evs {
		found = found || (e.Reason == ReasonAIStartTimeout && e.To == StateDrainingAI)
	}
	if !found {
		t.Error("no ai_start_timeout transition")
	}
	st := h.contractStatus("slow")
	if st.Serving != 0 || !strings.Contains(st.Shortfall, "not ready within 1m0s") || !strings.Contains(st.Shortfall, "backoff") {
		t.Errorf("shortfall: %+v", st)
	}
	// The backoff holds: the pinned GPU is not offered again for a while.
	h.steady("mining during the backoff", 60, func() bool { return h.gpu(3).State == StateMining })
	if n := len(h.calls("start", "slow")); n != 1 {
		t.Errorf("%d starts during the backoff, want 1", n)
	}
}

// Cordon without force: the work goes on; with force: drained to idle.
func TestScenarioCordon(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.put(contract("acme", 1, h.clock.Now(), time.Hour))
	h.runUntil("serving", 120, func() bool { return h.serving("acme") == 1 })
	u := h.contractStatus("acme").GPUList[0]
	if _, err := h.sw.Cordon(u, "  ", false); err == nil {
		t.Error("cordon without a reason accepted")
	}
	if _, err := h.sw.Cordon("GPU-nope", "x", false); !errors.Is(err, ErrUnknownGPU) {
		t.Errorf("cordon of an unknown GPU: %v", err)
	}
	st, err := h.sw.Cordon(u, "fan replacement", false)
	if err != nil || st.Cordon == nil || st.Cordon.Reason != "fan replacement" || st.Cordon.Force {
		t.Fatalf("cordon: %+v %v", st, err)
	}
	h.steady("still serving", 30, func() bool {
		g, _ := h.sw.GPUStatus(u)
		return g.State == StateServingAI
	})
	// A cordoned mining GPU takes no contract either.
	if _, err := h.sw.Cordon(h.uuids[7], "bench test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sw.Cordon(u, "fan replacement now", true); err != nil {
		t.Fatal(err)
	}
	h.runUntil("the cordoned GPU idle", 120, func() bool { g, _ := h.sw.GPUStatus(u); return g.State == StateIdle })
	h.runUntil("the contract served elsewhere", 120, func() bool { return h.serving("acme") == 1 })
	if nu := h.contractStatus("acme").GPUList[0]; nu == u || nu == h.uuids[7] {
		t.Errorf("the contract moved to a cordoned GPU %s", nu)
	}
	h.steady("idle while cordoned", 20, func() bool { g, _ := h.sw.GPUStatus(u); return g.State == StateIdle })
	if g, _ := h.sw.GPUStatus(u); g.PowerSnapshot != nil {
		t.Errorf("idle GPU keeps a changed limit: %+v", g.PowerSnapshot)
	}
	if _, err := h.sw.Uncordon(u); err != nil {
		t.Fatal(err)
	}
	h.runUntil("back to mining", 60, func() bool { g, _ := h.sw.GPUStatus(u); return g.State == StateMining })
}

// A contract below the price floor is refused with a reason; none of its
// GPUs move.
func TestScenarioPriceFloor(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.MinPriceUSDPerGPUHour = 3 }})
	_, _, err := h.sw.PutContract(contract("cheap", 2, h.clock.Now(), time.Hour))
	var fe *FieldError
	if !errors.Is(err, ErrBelowFloor) || !errors.As(err, &fe) || fe.Field != "price_usd_per_gpu_hour" {
		t.Fatalf("API contract below the floor: %v", err)
	}
	// One from the config is listed as refused.
	h.contracts = []Contract{{ID: "cheap-cfg", GPUs: 2, Start: h.clock.Now(), End: h.clock.Now().Add(time.Hour),
		PriceUSDPerGPUHour: 1.5, Workload: "llm"}}
	h.restart()
	h.steady("all mining", 30, func() bool { return h.count(StateMining) == 8 })
	st := h.contractStatus("cheap-cfg")
	if st.State != ContractRefused || !strings.Contains(st.Refused, "below the site's floor") || st.Desired != 0 {
		t.Errorf("config contract: %+v", st)
	}
	found := false
	for _, e := range h.sw.Events(EventFilter{Contract: "cheap-cfg"}) {
		found = found || e.Reason == "contract_refused"
	}
	if !found {
		t.Error("no contract_refused event")
	}
	good := contract("fair", 1, h.clock.Now(), time.Hour)
	good.PriceUSDPerGPUHour = 3
	h.put(good)
	h.runUntil("the fair one served", 120, func() bool { return h.serving("fair") == 1 })
}

// Two contracts, more demand than GPUs: priority wins, the other reports
// its shortfall; nothing is preempted.
func TestScenarioPriorityAndShortfall(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.MaxParallel = 4 }})
	lo := contract("low", 5, h.clock.Now(), time.Hour)
	h.put(lo)
	h.runUntil("low serving 5", 200, func() bool { return h.serving("low") == 5 })
	hi := contract("high", 5, h.clock.Now(), time.Hour)
	hi.Priority = 9
	h.put(hi)
	h.runUntil("high serving 3", 200, func() bool { return h.serving("high") == 3 })
	h.steady("low keeps its GPUs", 20, func() bool { return h.serving("low") == 5 })
	st := h.contractStatus("high")
	if !strings.Contains(st.Shortfall, "wants 5 GPU(s), 3 available") || !strings.Contains(st.Shortfall, "5 serve or switch to other contracts") {
		t.Errorf("shortfall: %q", st.Shortfall)
	}
	// Low shrinks: its spare GPUs go to high.
	lo.GPUs = 2
	h.put(lo)
	h.runUntil("high fully served", 200, func() bool { return h.serving("high") == 5 && h.serving("low") == 2 })
	if h.count(StateMining) != 1 {
		t.Errorf("states: %s", h.states())
	}
}

// The demand feed: its contracts are served; while it is down the last
// known demand stays (also across a restart); an empty answer ends it.
func TestScenarioDemandFeedDown(t *testing.T) {
	feed := newFakeFeed(t)
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.DemandURL = feed.srv.URL
		c.DemandTokenFile = feed.tokenFile
	}})
	feed.set(200, `[{"id":"feed-1","gpus":2,"start":"`+epoch.Format(time.RFC3339)+`","end":"`+
		epoch.Add(24*time.Hour).Format(time.RFC3339)+`","price_usd_per_gpu_hour":2.5,"workload":"llm","lead_time":"5m"},
		{"id":"feed-bad","gpus":0,"start":"`+epoch.Format(time.RFC3339)+`","end":"`+epoch.Add(time.Hour).Format(time.RFC3339)+
		`","price_usd_per_gpu_hour":2,"workload":"llm"}]`)
	ctx := context.Background()
	if err := h.sw.pollFeed(ctx); err != nil {
		t.Fatal(err)
	}
	if got := feed.lastAuth(); got != "Bearer feed-token-0123456789" {
		t.Errorf("feed saw Authorization %q", got)
	}
	if st := h.contractStatus("feed-bad"); st.State != ContractRefused || !strings.Contains(st.Refused, "gpus") {
		t.Errorf("invalid feed entry: %+v", st)
	}
	h.runUntil("feed contract served", 120, func() bool { return h.serving("feed-1") == 2 })

	for _, tc := range []struct {
		code int
		body string
	}{{500, "boom"}, {200, "{not json"}, {200, `[{"gpus": 1}]`}} {
		feed.set(tc.code, tc.body)
		if err := h.sw.pollFeed(ctx); err == nil {
			t.Fatalf("poll of a broken feed (%d %q) succeeded", tc.code, tc.body)
		}
		fs := h.sw.FeedStatus()
		if fs.Error == "" || fs.Contracts != 1+1 {
			t.Errorf("feed status while down: %+v", fs)
		}
		h.steady("still serving while the feed is down", 10, func() bool { return h.serving("feed-1") == 2 })
	}
	found := false
	for _, e := range h.sw.Events(EventFilter{}) {
		found = found || e.Reason == "demand_feed_failed"
	}
	if !found {
		t.Error("feed failure not reported as an event")
	}
	// A restart while the feed is down keeps the demand too.
	h.restart()
	if err := h.sw.pollFeed(ctx); err == nil {
		t.Fatal("feed still down")
	}
	h.steady("serving after a restart while the feed is down", 20, func() bool { return h.serving("feed-1") == 2 })
	// The feed says "no demand": that is an answer, not an outage.
	feed.set(200, `[]`)
	if err := h.sw.pollFeed(ctx); err != nil {
		t.Fatal(err)
	}
	h.runUntil("all mining", 120, func() bool { return h.count(StateMining) == 8 })
}

// The feed's token file must not be readable by everyone.
func TestFeedTokenFilePermissions(t *testing.T) {
	feed := newFakeFeed(t)
	h := newHarness(t, harnessOpts{noRun: true, cfg: func(c *Config) {
		c.DemandURL = feed.srv.URL
		c.DemandTokenFile = feed.tokenFile
	}})
	chmod(t, feed.tokenFile, 0o644)
	err := h.sw.pollFeed(context.Background())
	if err == nil || !strings.Contains(err.Error(), "readable or writable by every user") {
		t.Errorf("world-readable token: %v", err)
	}
}

// A contract changed in place: a new workload drains its GPUs and starts
// the new one; a new pin moves it.
func TestScenarioContractChanges(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := contract("acme", 1, h.clock.Now(), time.Hour)
	h.put(c)
	h.runUntil("serving llm", 120, func() bool { return h.serving("acme") == 1 })
	u := h.contractStatus("acme").GPUList[0]
	c.Workload = "llm2"
	h.put(c)
	// The new workload starts on a free GPU while the old one drains.
	h.runUntil("serving llm2", 120, func() bool {
		st := h.contractStatus("acme")
		if st.Serving != 1 {
			return false
		}
		g, _ := h.sw.GPUStatus(st.GPUList[0])
		return g.Workload == "llm2"
	})
	if p := h.path(u); !containsRun(p, []State{StateServingAI, StateDrainingAI, StateVerifyingFree}) {
		t.Errorf("the old GPU's path %v", p)
	}
	nu := h.contractStatus("acme").GPUList[0]
	if l := h.limit(h.gpuIndex(nu)); l != 200_000 {
		t.Errorf("llm2 runs at %d mW, want its 200 W profile", l)
	}
	c.Pin = []string{h.uuids[6]}
	h.put(c)
	h.runUntil("moved to the pinned GPU", 120, func() bool {
		st := h.contractStatus("acme")
		return st.Serving == 1 && st.GPUList[0] == h.uuids[6]
	})
	h.runUntil("the old GPU mining", 60, func() bool { g, _ := h.sw.GPUStatus(u); return g.State == StateMining })
}
