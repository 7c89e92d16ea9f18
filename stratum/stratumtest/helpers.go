package stratumtest

import (
	"context"
	"testing"
	"time"
)

// NewPool starts a pool for a test, failing it on error, and closes the pool
// in t.Cleanup.
func NewPool(t testing.TB, opts PoolOptions) *Pool {
	t.Helper()
	p, err := StartPool(opts)
	if err != nil {
		t.Fatalf("stratumtest: start pool: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// NewMiner dials a miner for a test (10s handshake bound), failing the
// test on error, and closes it in t.Cleanup.
func NewMiner(t testing.TB, addr string, opts MinerOptions) *Miner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := DialMiner(ctx, addr, opts)
	if err != nil {
		t.Fatalf("stratumtest: dial miner (%s): %v", opts.Style, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// NewFleet starts a fleet for a test (60s bound), failing the test on
// error, and closes it in t.Cleanup.
func NewFleet(t testing.TB, addr string, opts FleetOptions) *Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f, err := StartFleet(ctx, addr, opts)
	if err != nil {
		t.Fatalf("stratumtest: start fleet: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
