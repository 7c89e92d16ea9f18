//go:build !linux

package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// readLoop exists only on Linux (readloop_linux.go); elsewhere every miner
// is read by a goroutine of its own (serve).
type readLoop struct{}

func newReadLoop(*server, prometheus.Counter) (*readLoop, error) {
	return nil, errors.New("no epoll read loop on this platform")
}

func (*readLoop) add(*miner) bool                               { return false }
func (*readLoop) remove(*miner)                                 {}
func (*readLoop) watching() int                                 { return 0 }
func (*readLoop) run(context.Context)                           {}
func (*readLoop) sweep(context.Context, time.Duration)          {}
func sweepInterval(subscribe, idle time.Duration) time.Duration { return time.Second }

// exec is never called without the read loop.
func (*miner) exec() {}
