package switcher

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/switcher/workload"
)

// fakeCluster is a cluster's demand (what package kubeagent computes).
type fakeCluster struct {
	mu   sync.Mutex
	gpus int
	pin  []string
	// elapse, if set, runs on every call: time passes while a pass asks
	// (a real API cache read is not instantaneous).
	elapse func()
}

func (f *fakeCluster) ClusterDemand() (int, []string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.elapse != nil {
		f.elapse()
	}
	return f.gpus, slices.Clone(f.pin), true
}

func (f *fakeCluster) set(gpus int, pin []string) {
	f.mu.Lock()
	f.gpus, f.pin = gpus, pin
	f.mu.Unlock()
}

// fakeLender is the lending runtime: Start lends, Stop takes back or, with
// claimed set, finds the GPU taken meanwhile (workload.ErrInUse) and then
// asks the cluster to keep it.
type fakeLender struct {
	mu      sync.Mutex
	lent    map[string]bool
	claimed bool
	// quiet: a refused take-back does not make the cluster ask for the
	// GPU (an operator's contract ended under a claim the cluster's own
	// demand does not count).
	quiet   bool
	cluster *fakeCluster
	stops   int
}

func (l *fakeLender) Kind() string { return lendingKind }

// lendingKind is the lending runtime's kind (kubeagent.Kind).
const lendingKind = "kubernetes"

func (l *fakeLender) Start(_ context.Context, _ workload.Spec, in workload.Instance) (workload.Handle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lent[in.GPUUUID] = true
	return workload.Handle{Runtime: l.Kind(), ID: "kubernetes:" + in.GPUUUID, Instance: in}, nil
}

func (l *fakeLender) Status(_ context.Context, _ workload.Spec, h workload.Handle) (workload.Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return workload.Status{Running: l.lent[h.GPUUUID], Ready: l.lent[h.GPUUUID], Gone: !l.lent[h.GPUUUID]}, nil
}

func (l *fakeLender) Stop(_ context.Context, _ workload.Spec, h workload.Handle, _ bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stops++
	if l.claimed {
		if !l.quiet {
			l.cluster.set(1, []string{h.GPUUUID})
		}
		return fmt.Errorf("GPU %s: claim ai/job: %w", h.GPUUUID, workload.ErrInUse)
	}
	delete(l.lent, h.GPUUUID)
	return nil
}

func (l *fakeLender) List(_ context.Context, q workload.ListQuery) ([]workload.Listed, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []workload.Listed
	for _, h := range q.Known {
		if h.Runtime == l.Kind() && l.lent[h.GPUUUID] {
			out = append(out, workload.Listed{Handle: h, Running: true})
		}
	}
	return out, nil
}

func newClusterHarness(t *testing.T) (*harness, *fakeCluster, *fakeLender) {
	t.Helper()
	cl := &fakeCluster{}
	ld := &fakeLender{lent: map[string]bool{}, cluster: cl}
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		// The lending workload as the wiring adds it for [switcher.kubernetes].
		if c.Workload == nil {
			c.Workload = map[string]workload.Definition{}
		}
		c.Workload[ClusterWorkload] = workload.Definition{Runtime: lendingKind, Readiness: workload.ReadinessRunning,
			ProofOfStart: workload.ProofNone, StopTimeout: 3 * time.Second}
	}, extra: []workload.Runtime{ld}, cluster: cl})
	return h, cl, ld
}

// The cluster's demand is one contract: its GPUs are lent through the
// lending workload and given back to mining when the demand drops.
func TestClusterDemandLendsAndTakesBack(t *testing.T) {
	h, cl, ld := newClusterHarness(t)
	cl.set(1, slices.Clone(h.uuids))
	h.runUntil("one GPU serving the cluster", 60, func() bool { return h.count(StateServingAI) == 1 })
	var lent string
	for _, g := range h.sw.GPUStatuses() {
		if g.State == StateServingAI {
			lent = g.UUID
			if g.Contract != ClusterContractID || g.Workload != ClusterWorkload {
				t.Fatalf("serving GPU %+v, want contract %s workload %s", g, ClusterContractID, ClusterWorkload)
			}
		}
	}
	// The price floor is for sales, not for the site's own cluster.
	h.sw.mu.Lock()
	h.sw.cfg.MinPriceUSDPerGPUHour = 100
	h.sw.mu.Unlock()
	h.steady("still serving above a price floor", 5, func() bool { return h.count(StateServingAI) == 1 })
	// Unpinning the GPU (its dwell ran out) drains that GPU, not another.
	var rest []string
	for _, u := range h.uuids {
		if u != lent {
			rest = append(rest, u)
		}
	}
	cl.set(0, rest)
	h.runUntil("back to mining", 60, func() bool { return h.count(StateMining) == len(h.uuids) })
	if ld.lent[lent] || ld.stops != 1 {
		t.Errorf("after the drain: lent %v, %d stops", ld.lent, ld.stops)
	}
}

// A GPU whose take-back finds it claimed meanwhile (workload.ErrInUse)
// goes back to its contract and never towards mining.
func TestClusterClaimDuringReleaseKeepsTheGPU(t *testing.T) {
	h, cl, ld := newClusterHarness(t)
	cl.set(1, slices.Clone(h.uuids))
	h.runUntil("one GPU serving the cluster", 60, func() bool { return h.count(StateServingAI) == 1 })
	ld.mu.Lock()
	ld.claimed = true
	ld.mu.Unlock()
	cl.set(0, nil)
	h.runUntil("the take-back tried", 30, func() bool { ld.mu.Lock(); defer ld.mu.Unlock(); return ld.stops > 0 })
	h.runUntil("serving again", 30, func() bool { return h.count(StateServingAI) == 1 })
	for _, e := range h.sw.Events(EventFilter{Limit: 200}) {
		if e.From == StateDrainingAI && e.To != StateStartingAI {
			t.Errorf("a GPU claimed during its release went %s → %s (%s): %s", e.From, e.To, e.Reason, e.Message)
		}
	}
	if h.count(StateMining) != len(h.uuids)-1 {
		t.Errorf("states: %s", h.states())
	}
}

// A take-back refused by the GPU's other user (workload.ErrInUse) is not
// tried again before retry_backoff, even with the GPU's contract gone: the
// GPU serves on with one refusal in the journal, instead of a drain, a
// refusal and a restart every pass.
func TestClusterRefusedTakeBackWaitsRetryBackoff(t *testing.T) {
	h, cl, ld := newClusterHarness(t)
	cl.set(1, slices.Clone(h.uuids))
	h.runUntil("one GPU serving the cluster", 60, func() bool { return h.count(StateServingAI) == 1 })
	stops := func() int { ld.mu.Lock(); defer ld.mu.Unlock(); return ld.stops }
	ld.mu.Lock()
	ld.claimed, ld.quiet = true, true
	ld.mu.Unlock()
	cl.set(0, nil)
	h.runUntil("the take-back tried", 30, func() bool { return stops() == 1 })
	h.runUntil("serving again", 30, func() bool { return h.count(StateServingAI) == 1 })
	// Well inside retry_backoff (5m; a step is a tick): no second try.
	h.steady("serving, no second take-back", 40, func() bool { return stops() == 1 && h.count(StateServingAI) == 1 })
	refusals := func() int {
		n := 0
		for _, e := range h.sw.Events(EventFilter{Limit: 1000}) {
			if e.Reason == ReasonClaimedMeanwhile {
				n++
			}
		}
		return n
	}
	if n := refusals(); n != 1 {
		t.Fatalf("%d refusals journaled within retry_backoff, want 1:\n%s", n, h.eventLog())
	}
	// After retry_backoff the take-back is tried again (and refused again).
	h.clock.Advance(h.sw.cfg.RetryBackoff)
	h.runUntil("a second take-back after retry_backoff", 30, func() bool { return stops() == 2 })
	h.runUntil("serving again", 30, func() bool { return h.count(StateServingAI) == 1 })
	if n := refusals(); n != 2 {
		t.Fatalf("%d refusals journaled, want 2:\n%s", n, h.eventLog())
	}
	// The claim ends: the next take-back succeeds and the GPU mines.
	ld.mu.Lock()
	ld.claimed = false
	ld.mu.Unlock()
	h.clock.Advance(h.sw.cfg.RetryBackoff)
	h.runUntil("back to mining", 60, func() bool { return h.count(StateMining) == len(h.uuids) })
}

// A restart adopts a lent GPU: the cluster's contract is active at once,
// so the GPU is not drained (and re-tainted) under a running claim.
func TestClusterRestartAdoptsLentGPU(t *testing.T) {
	h, cl, _ := newClusterHarness(t)
	cl.set(1, slices.Clone(h.uuids))
	h.runUntil("one GPU serving the cluster", 60, func() bool { return h.count(StateServingAI) == 1 })
	cl.mu.Lock()
	cl.elapse = func() { h.clock.Advance(time.Millisecond) }
	cl.mu.Unlock()
	h.restart()
	// The first passes run back to back, nothing else asking for the
	// contracts in between (as in the daemon).
	for range 3 {
		h.clock.Advance(tick)
		if err := h.mgr.SampleNow(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.sw.step(context.Background())
	}
	for _, e := range h.sw.Events(EventFilter{Limit: 200}) {
		if e.To == StateDrainingAI {
			t.Errorf("after the restart a lent GPU was drained: %s → %s (%s): %s", e.From, e.To, e.Reason, e.Message)
		}
	}
	h.steady("the lent GPU stays serving across the restart", 10, func() bool { return h.count(StateServingAI) == 1 })
}
