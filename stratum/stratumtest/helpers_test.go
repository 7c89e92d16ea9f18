package stratumtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumsim"
)

// TestHelpersCloseInCleanup: what NewPool, NewMiner and NewFleet start works
// (a share is accepted end to end) and is closed when the test that started
// it ends.
func TestHelpersCloseInCleanup(t *testing.T) {
	var (
		pool  *Pool
		miner *Miner
		fleet *Fleet
	)
	t.Run("use", func(t *testing.T) {
		pool = NewPool(t, PoolOptions{InitialDifficulty: 1e-6})
		miner = NewMiner(t, pool.Addr(), MinerOptions{Style: StyleAntminer})
		fleet = NewFleet(t, pool.Addr(), FleetOptions{Miners: 2})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sub, err := miner.Submit(ctx, SubmitRequest{Kind: ShareGood})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		if r, err := sub.Wait(ctx); err != nil || r.Verdict != VerdictAccepted {
			t.Fatalf("share verdict %v (code %d %q), err %v; want accepted", r.Verdict, r.Code, r.Message, err)
		}
		rs, err := fleet.SubmitEach(ctx, 1)
		if err != nil {
			t.Fatalf("fleet submit: %v", err)
		}
		for _, r := range rs {
			if r.Verdict != VerdictAccepted {
				t.Errorf("fleet share verdict %v (code %d), want accepted", r.Verdict, r.Code)
			}
		}
	})
	if miner.Connected() {
		t.Error("miner still connected after its test ended")
	}
	for i, m := range fleet.Miners() {
		if m.Connected() {
			t.Errorf("fleet miner %d still connected after its test ended", i)
		}
	}
	if c, err := net.DialTimeout("tcp", pool.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("pool %s still accepts connections after its test ended", pool.Addr())
	}
}

// fatalTB records Fatalf instead of ending the goroutine, so a helper's
// failure path can be observed.
type fatalTB struct {
	testing.TB
	fatal    string
	cleanups int
}

func (f *fatalTB) Helper()                        {}
func (f *fatalTB) Cleanup(func())                 { f.cleanups++ }
func (f *fatalTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }

// TestHelpersFailTheTest: a pool or miner that cannot start fails the test
// with the simulator's reason.
func TestHelpersFailTheTest(t *testing.T) {
	tb := &fatalTB{TB: t}
	NewPool(tb, PoolOptions{Extranonce1Size: 99})
	if !strings.Contains(tb.fatal, "start pool") || !strings.Contains(tb.fatal, "extranonce sizes") {
		t.Errorf("NewPool with a bad extranonce size: Fatalf %q, want the start error", tb.fatal)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	tb = &fatalTB{TB: t}
	NewMiner(tb, addr, MinerOptions{})
	if !strings.Contains(tb.fatal, "dial miner") {
		t.Errorf("NewMiner to a closed port: Fatalf %q, want the dial error", tb.fatal)
	}
}

// TestAliasesAreTheSimulator: stratumtest's names are stratumsim's values,
// so errors.Is and type identity hold across the two packages.
func TestAliasesAreTheSimulator(t *testing.T) {
	var p *stratumsim.Pool = (*Pool)(nil) //nolint:staticcheck // ST1023: the explicit type is the assertion; this compiles only if the types are identical
	_ = p
	if !errors.Is(fmt.Errorf("wrapped: %w", stratumsim.ErrPoolClosed), ErrPoolClosed) {
		t.Error("ErrPoolClosed is not stratumsim's")
	}
	if StyleBitaxe != stratumsim.StyleBitaxe || ShareStale.String() != stratumsim.ShareStale.String() {
		t.Error("constants differ from stratumsim's")
	}
	if len(AllStyles()) != len(stratumsim.AllStyles()) || len(BadKinds()) != len(stratumsim.BadKinds()) {
		t.Error("AllStyles/BadKinds differ from stratumsim's")
	}
}
