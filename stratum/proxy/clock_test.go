package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// testClock is a Clock the test moves: Now stands still until Advance,
// which fires the timers falling due on the way, in order, each with Now at
// its due time. Timer channels hold one value, like time.Timer's; Stop and
// Reset drop a value not yet received.
type testClock struct {
	mu     sync.Mutex // guards the fields below; never held while a timer fires
	now    time.Time
	seq    int
	timers map[*testTimer]struct{} // armed
}

type testTimer struct {
	c   *testClock
	at  time.Time
	seq int
	ch  chan time.Time // NewTimer's
	f   func()         // AfterFunc's
}

func newTestClock(start time.Time) *testClock {
	return &testClock{now: start, timers: map[*testTimer]struct{}{}}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) NewTimer(d time.Duration) Timer {
	t := &testTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

func (c *testClock) AfterFunc(d time.Duration, f func()) func() bool {
	t := &testTimer{c: c, f: f}
	t.Reset(d)
	return t.Stop
}

func (t *testTimer) C() <-chan time.Time { return t.ch }

func (t *testTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.disarmLocked()
}

func (t *testTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	armed := t.disarmLocked()
	t.c.seq++
	t.at, t.seq = t.c.now.Add(d), t.c.seq
	t.c.timers[t] = struct{}{}
	return armed
}

func (t *testTimer) disarmLocked() bool {
	_, armed := t.c.timers[t]
	delete(t.c.timers, t)
	if t.ch != nil {
		select {
		case <-t.ch:
		default:
		}
	}
	return armed
}

// Advance moves the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		var next *testTimer
		for t := range c.timers {
			if !t.at.After(end) && (next == nil || t.at.Before(next.at) || (t.at.Equal(next.at) && t.seq < next.seq)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		delete(c.timers, next)
		if next.at.After(c.now) {
			c.now = next.at
		}
		at := c.now
		c.mu.Unlock()
		if next.f != nil {
			next.f()
		} else {
			select {
			case next.ch <- at:
			default:
			}
		}
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// fastClock returns a fake clock that runs speed times faster than the
// wall clock until the test ends: for end-to-end tests whose pools and
// miners run on wall time while the proxy's timers (failback_delay,
// rebalance_interval, backoff, timeouts) pass speed times faster. It
// starts at the wall clock's now, so deadlines derived from it are never
// earlier than the wall clock's.
func fastClock(t *testing.T, speed int) *testClock {
	c := newTestClock(time.Now())
	const step = 2 * time.Millisecond
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(step)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				c.Advance(time.Duration(speed) * now.Sub(last))
				last = now
			}
		}
	}()
	// Registered before the proxy's Stop (cleanups run last first), so the
	// clock still runs while the proxy stops.
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	return c
}

func TestFakeClock(t *testing.T) {
	c := newTestClock(time.Unix(1_800_000_000, 0))
	var fired []string
	a := c.NewTimer(3 * time.Second)
	b := c.NewTimer(time.Second)
	stopF := c.AfterFunc(2*time.Second, func() { fired = append(fired, "f@"+c.Now().Format("05")) })
	stopG := c.AfterFunc(2*time.Second, func() { fired = append(fired, "g") })
	if !stopG() {
		t.Fatal("stopping a pending AfterFunc reported it was not pending")
	}
	c.Advance(1500 * time.Millisecond)
	select {
	case at := <-b.C():
		if got := at.Sub(time.Unix(1_800_000_000, 0)); got != time.Second {
			t.Errorf("timer fired at +%s, want +1s", got)
		}
	default:
		t.Fatal("a 1s timer did not fire after 1.5s")
	}
	select {
	case <-a.C():
		t.Fatal("a 3s timer fired after 1.5s")
	default:
	}
	a.Reset(time.Second) // now due at +2.5s
	c.Advance(time.Second)
	select {
	case <-a.C():
	default:
		t.Fatal("a timer reset to 1s did not fire 1s later")
	}
	if !slices.Equal(fired, []string{"f@02"}) || stopF() {
		t.Errorf("AfterFunc calls %q, want [f@02] (and nothing left to stop)", fired)
	}
	if a.Stop() {
		t.Error("Stop on a fired timer reported it armed")
	}

	ctx, cancel := withTimeout(context.Background(), c, time.Minute)
	defer cancel()
	c.Advance(59 * time.Second)
	if ctx.Err() != nil {
		t.Fatal("withTimeout's context ended before its time")
	}
	c.Advance(time.Second)
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("withTimeout's context after its time: %v", context.Cause(ctx))
	}
}
