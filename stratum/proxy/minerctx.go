package proxy

import (
	"context"
	"time"
)

// minerContext is a miner's context: done when the miner closes. It holds
// nothing of its own: a context.WithCancel of the proxy's context per
// miner cost about 0.5 KiB a miner (the cancelCtx, its done channel and
// its entry in the parent's table of children; pprof at 10,000 miners,
// docs/PERFORMANCE.md) for waits most miners never make.
//
// It does not watch the proxy's context: Proxy.Stop cancels that and then
// closes every miner, which ends this one. A context derived from it
// (context.WithTimeout) watches m.closed with a goroutine of its own for
// as long as it lives, which is only during such a wait.
type minerContext struct{ m *miner }

func (minerContext) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c minerContext) Done() <-chan struct{} { return c.m.closed }

func (c minerContext) Err() error {
	if isDone(c.m.closed) {
		return context.Canceled
	}
	return nil
}

func (c minerContext) Value(key any) any { return c.m.p.ctx.Value(key) }
