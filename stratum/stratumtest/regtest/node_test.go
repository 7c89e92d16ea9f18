package regtest

import (
	"context"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// startTestNode starts btcd for a test (skipped without btcd unless CI is
// set) and stops it in Cleanup, logging its output when the test failed.
func startTestNode(t *testing.T) *Node {
	t.Helper()
	bin := Need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := StartNode(ctx, NodeOptions{Binary: bin, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("btcd output (tail):\n%s", n.Output())
		}
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// TestPoolBlocksAcceptedByNode: miners straight on the regtest pool find
// blocks, with real transactions (legacy, segwit and mixed) or with the
// coinbase alone (an empty merkle branch, a commitment to no witnesses);
// the node takes every one onto its main chain, and the chain is exactly
// those blocks.
func TestPoolBlocksAcceptedByNode(t *testing.T) {
	tests := []struct {
		name string
		txs  int // MempoolTxs
	}{
		{"with transactions", 12},
		{"coinbase only", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := startTestNode(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			pool, err := StartPool(ctx, node.RPC(), PoolOptions{
				Stratum:    stratumtest.PoolOptions{InitialDifficulty: 1e-5},
				MempoolTxs: tc.txs,
				Logf:       t.Logf,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			miners := []*stratumtest.Miner{
				stratumtest.NewMiner(t, pool.Addr(), stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "regtest.s19"}),
				stratumtest.NewMiner(t, pool.Addr(), stratumtest.MinerOptions{Style: stratumtest.StylePlain, User: "regtest.cpu"}),
			}
			const blocks = 6
			for i := range blocks {
				m := miners[i%len(miners)]
				r, err := m.SubmitOne(ctx)
				if err != nil || r.Verdict != stratumtest.VerdictAccepted {
					t.Fatalf("block %d share: %v %+v", i+1, err, r)
				}
				b, err := pool.WaitBlocks(ctx, i+1)
				if err != nil {
					t.Fatal(err)
				}
				if b.Hash != r.Hash || !b.Accepted() {
					t.Fatalf("block %d: %+v, share %s", i+1, b, r.Hash)
				}
				for _, m := range miners {
					if err := m.WaitPoolJob(ctx, b.NextJob); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := pool.CheckChain(ctx); err != nil {
				t.Fatal(err)
			}
			var txs, segwit, rolled int
			for _, b := range pool.Blocks() {
				txs += b.Txs
				segwit += b.SegwitTxs
				if b.Rolled() {
					rolled++
				}
			}
			st := pool.TxStats()
			t.Logf("%d blocks, %d transactions (%d with witnesses), %d with rolled versions; source sent %+v", blocks, txs, segwit, rolled, st)
			switch {
			case tc.txs > 0 && (txs < blocks*tc.txs || segwit == 0 || segwit == txs || st.Mixed == 0):
				t.Errorf("blocks carried %d transactions (%d segwit), want >= %d of both kinds", txs, segwit, blocks*tc.txs)
			case tc.txs < 0 && (txs != 0 || st.Total() != 0):
				t.Errorf("coinbase-only blocks carried %d transactions", txs)
			}
			if rolled == 0 || rolled == blocks {
				t.Errorf("%d of %d blocks have rolled versions; the Antminer rolls, the plain miner does not", rolled, blocks)
			}
		})
	}
}
