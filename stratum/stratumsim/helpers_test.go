package stratumsim

import (
	"context"
	"testing"
	"time"
)

// The simulator's own tests use the same t-taking helpers as the tests of
// other packages (stratumtest.NewPool and friends). stratumtest imports this
// package, so these tests cannot import it back; the helpers are repeated
// here, in a _test file, so that testing stays out of the package proper.

func NewPool(t testing.TB, opts PoolOptions) *Pool {
	t.Helper()
	p, err := StartPool(opts)
	if err != nil {
		t.Fatalf("stratumsim: start pool: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func NewMiner(t testing.TB, addr string, opts MinerOptions) *Miner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := DialMiner(ctx, addr, opts)
	if err != nil {
		t.Fatalf("stratumsim: dial miner (%s): %v", opts.Style, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func NewFleet(t testing.TB, addr string, opts FleetOptions) *Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := StartFleet(ctx, addr, opts)
	if err != nil {
		t.Fatalf("stratumsim: start fleet: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
