package proxy

import (
	"context"
	"time"
)

// Clock is the proxy's time: routing, health, backoff, verdict timeouts,
// hashrate estimates and a miner's waits all read it. Socket deadlines and
// Stop's own waits stay on the wall clock (the kernel knows no other).
// Options.Clock nil is the wall clock; tests pass one they move faster.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped-or-running timer that sends on C once d
	// has passed.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f once d has passed, unless stop is called first;
	// stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// Timer is a one-shot timer of a Clock, like *time.Timer.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// wallClock is the Clock of production.
type wallClock struct{}

func (wallClock) Now() time.Time                 { return time.Now() }
func (wallClock) NewTimer(d time.Duration) Timer { return wallTimer{time.NewTimer(d)} }
func (wallClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

type wallTimer struct{ t *time.Timer }

func (w wallTimer) C() <-chan time.Time        { return w.t.C }
func (w wallTimer) Stop() bool                 { return w.t.Stop() }
func (w wallTimer) Reset(d time.Duration) bool { return w.t.Reset(d) }

// withTimeout is context.WithTimeout on clock c. The AfterFunc it arms is
// stopped by cancel, which the caller must call.
func withTimeout(parent context.Context, c Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := c.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}
