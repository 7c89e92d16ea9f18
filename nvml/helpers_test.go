package nvml

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/hashgate/proxyd/nvml/nvmlsim"
)

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// beats records the heartbeat registrations of a Manager.
type beats struct {
	mu     sync.Mutex
	active map[string]int // loop → beats so far; removed when done
	ended  []string
}

func (b *beats) register(name string, _ time.Duration) (func(), func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active == nil {
		b.active = map[string]int{}
	}
	b.active[name] = 0
	return func() {
			b.mu.Lock()
			b.active[name]++
			b.mu.Unlock()
		}, func() {
			b.mu.Lock()
			delete(b.active, name)
			b.ended = append(b.ended, name)
			b.mu.Unlock()
		}
}

func (b *beats) count(name string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.active[name]
	return n, ok
}

// harness is a started Manager over a simulated server.
type harness struct {
	sim   *nvmlsim.Server
	m     *Manager
	clock *fakeClock
	beats *beats
	uuids []string
}

// newHarness starts a Manager with a fake clock and a poll interval long
// enough that tests drive sampling with SampleNow. setup, if given, changes
// the simulated server before the inventory is read. Stop, the event set
// and the library are checked at cleanup.
func newHarness(t *testing.T, opts Options, setup func(s *nvmlsim.Server)) *harness {
	t.Helper()
	sim := nvmlsim.New(nvmlsim.Options{})
	if setup != nil {
		setup(sim)
	}
	if ret := sim.Init(); ret != 0 {
		t.Fatalf("sim Init: %v", ret)
	}
	h := &harness{sim: sim, clock: newFakeClock(), beats: &beats{}, uuids: sim.UUIDs()}
	if opts.PollInterval == 0 {
		opts.PollInterval = time.Hour
	}
	if opts.EventWait == 0 {
		opts.EventWait = 5 * time.Millisecond
	}
	opts.Clock = h.clock
	opts.Log = zaptest.NewLogger(t)
	opts.Heartbeat = h.beats.register
	opts.Backend = BackendSimulated
	m, err := New(sim, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.m = m
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if n := sim.EventSets(); n != 0 {
			t.Errorf("%d event sets left after Stop", n)
		}
		sim.Shutdown()
		sim.Close()
	})
	return h
}

func (h *harness) sample(t *testing.T) {
	t.Helper()
	if err := h.m.SampleNow(context.Background()); err != nil {
		t.Fatalf("SampleNow: %v", err)
	}
}

func (h *harness) update(t *testing.T, i int, fn func(g *nvmlsim.GPUState)) {
	t.Helper()
	if err := h.sim.Update(h.uuids[i], fn); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) gpu(t *testing.T, i int) GPU {
	t.Helper()
	g, err := h.m.GPU(h.uuids[i])
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// eventually polls cond (which reads state the event loop changes) a
// bounded number of times. It is a hang guard, not a timing assertion: the
// bound is far beyond any plausible scheduling delay.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("never happened: %s", what)
}

// goroutines waits (bounded) for the goroutine count to drop to at most n.
func goroutinesAtMost(t *testing.T, n int) {
	t.Helper()
	got := 0
	for range 400 {
		if got = runtime.NumGoroutine(); got <= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("%d goroutines, want at most %d:\n%s", got, n, buf[:runtime.Stack(buf, true)])
}

func reasonCodes(h Health) []string {
	var out []string
	for _, r := range h.Reasons {
		out = append(out, r.Code)
	}
	return out
}
