package proxy

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// recorder is a lineHandler that records lines and can be made to block.
type recorder struct {
	mu    sync.Mutex
	lines []string
	block chan struct{} // non-nil: handleLine waits for it to close
	keep  bool
}

func (r *recorder) handleLine(line []byte) bool {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	r.lines = append(r.lines, string(line))
	r.mu.Unlock()
	return r.keep
}

func newWork(h lineHandler) *lineWork { return &lineWork{m: h, done: make(chan struct{}, 1)} }

func TestHandlersKeepOrderAndVerdict(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHandlers(ctx)
	for _, keep := range []bool{true, false} {
		rec := &recorder{keep: keep}
		w := newWork(rec)
		buf := make([]byte, 1)
		for i := range 50 {
			buf[0] = byte('a' + i%26)
			w.line = buf // reused like the reader's buffer: handled before the next line
			if got := h.do(w); got != keep {
				t.Fatalf("do returned %v, want %v", got, keep)
			}
		}
		if len(rec.lines) != 50 || rec.lines[0] != "a" || rec.lines[27] != "b" {
			t.Fatalf("lines %q: want 50, in order", rec.lines)
		}
	}
}

// A handler stuck on one miner (a slow pool, a pass-through authorization)
// must not hold up another miner's lines.
func TestHandlersBlockedMinerDoesNotStallOthers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHandlers(ctx)
	stuck := &recorder{block: make(chan struct{}), keep: true}
	stuckDone := make(chan bool, 1)
	go func() {
		w := newWork(stuck)
		w.line = []byte("stuck")
		stuckDone <- h.do(w)
	}()
	free := &recorder{keep: true}
	w := newWork(free)
	finished := make(chan struct{})
	go func() {
		for range 10 {
			w.line = []byte("x")
			h.do(w)
		}
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("a miner's lines waited behind another miner's blocked handler")
	}
	close(stuck.block)
	if !<-stuckDone {
		t.Fatal("blocked line lost its verdict")
	}
}

// Idle handlers are bounded, and all exit once the proxy's context ends.
func TestHandlersIdleBoundAndExit(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	h := newHandlers(ctx)
	h.maxIdle = 3
	// 20 miners at once, each blocked until released: 20 handlers.
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWork(&recorder{block: release, keep: true})
			w.line = []byte("l")
			h.do(w)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	waitGoroutines(t, func(n int) bool { return n <= before+3 }, "at most maxIdle=3 idle handlers after the burst")
	if got := h.idle.Load(); got > 3 {
		t.Fatalf("idle count %d, want <= 3", got)
	}
	cancel()
	waitGoroutines(t, func(n int) bool { return n <= before }, "no handler left once the context ends")
}

func waitGoroutines(t *testing.T, ok func(int) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(runtime.NumGoroutine()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines", what, runtime.NumGoroutine())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type nop struct{}

func (nop) handleLine([]byte) bool { return true }

// BenchmarkHandlersDo is the cost of handing one line to a handler and
// waiting for it, over calling the handler directly (BenchmarkDirectCall).
func BenchmarkHandlersDo(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHandlers(ctx)
	w := newWork(nop{})
	w.line = []byte("x")
	b.ReportAllocs()
	for b.Loop() {
		h.do(w)
	}
}

func BenchmarkDirectCall(b *testing.B) {
	var l lineHandler = nop{}
	line := []byte("x")
	b.ReportAllocs()
	for b.Loop() {
		l.handleLine(line)
	}
}
