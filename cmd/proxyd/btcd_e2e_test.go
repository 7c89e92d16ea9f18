package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
	"github.com/hashgate/proxyd/stratum/stratumtest/regtest"
)

// Bounds of the node run: blocks found through proxyd, and the wall time
// the whole test may take (regtest difficulty is trivial: every share is
// a block, found in milliseconds).
const (
	btcdBlocks  = 25
	btcdTimeout = 5 * time.Minute
)

// TestProxydBlocksAcceptedByBtcd runs the real proxyd binary between
// miners of every firmware style and a pool whose jobs come from a real
// btcd regtest node, with real legacy and segwit transactions in every
// template. Each share is a block candidate: proxyd forwards it, the pool
// submits the block (adding the coinbase witness) and btcd judges it. The
// pool raises and lowers its difficulty and changes every session's
// extranonce mid-run. Every block must be on btcd's main chain, paying the
// test key with a valid witness commitment, some with version bits rolled
// by a miner, over at least two upstream sessions; no share may be lost,
// and proxyd's ledger must match the node.
//
// Without btcd it skips, unless CI is set: then it fails (see .ci/run).
func TestProxydBlocksAcceptedByBtcd(t *testing.T) {
	bin := regtest.Need(t)
	ctx, cancel := context.WithTimeout(context.Background(), btcdTimeout)
	defer cancel()
	started := time.Now()

	node, err := regtest.StartNode(ctx, regtest.NodeOptions{Binary: bin, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("btcd output (tail):\n%s", node.Output())
		}
		if err := node.Close(); err != nil {
			t.Error(err)
		}
	})
	pool, err := regtest.StartPool(ctx, node.RPC(), regtest.PoolOptions{
		// SetExtranonceToAll: proxyd does not send
		// mining.extranonce.subscribe upstream, yet handles the change.
		Stratum:    stratumtest.PoolOptions{InitialDifficulty: 1e-5, SetExtranonceToAll: true},
		MempoolTxs: 30,
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	t.Logf("node and pool ready in %s (height %d)", time.Since(started).Round(time.Millisecond), pool.BaseHeight())

	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	const token = "btcd-e2e-0123456789abcdef"
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "proxyd.toml")
	body := fmt.Sprintf(`shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:0"
api_token_file = %q
[gpu]
backend = "off"
[[server]]
name = "farm"
listen = "127.0.0.1:0"
extranonce2_size = 4
initial_difficulty = 0.00001
min_difficulty = 0.000001
max_difficulty = 1
[[pool]]
name = "regtest"
url = %q
user = "regtest.farm"
password = "x"
miners_per_session = 2
`, tok, pool.URL())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, cfg)
	l := p.waitLog(t, "stratum listening", 1)
	stratumAddr, _ := l["addr"].(string)
	p.waitLog(t, "proxyd ready", 1)
	for i := 0; i < 1000; i++ {
		if code, _ := daemonGet(t, p, "/readyz", ""); code == 200 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	// One miner of each firmware style (all but Plain roll version bits;
	// NiceHash takes set_extranonce, the others reconnect on a change).
	var miners []*stratumtest.Miner
	for _, st := range stratumtest.AllStyles() {
		m, err := stratumtest.DialMiner(ctx, stratumAddr, stratumtest.MinerOptions{Style: st, User: "regtest." + st.String(), AutoReconnect: true})
		if err != nil {
			t.Fatalf("%s miner: %v", st, err)
		}
		t.Cleanup(func() { _ = m.Close() })
		miners = append(miners, m)
	}
	waitAll := func(seq uint64) {
		t.Helper()
		for _, m := range miners {
			if err := m.WaitPoolJob(ctx, seq); err != nil {
				t.Fatalf("%s miner never got pool job %d: %v", m.Style(), seq, err)
			}
		}
	}
	waitAll(pool.CurrentJob().Seq)

	var results []stratumtest.SubmitResult
	for i := 1; i <= btcdBlocks; i++ {
		switch i {
		case 6:
			// Raised between a job and its shares: the next share is
			// checked at the difficulty its job went out with; later
			// shares below the new one (proxyd keeps its miners lower)
			// still solve blocks, which the pool takes.
			pool.SetDifficulty(1e-4)
		case 12:
			// Lowered below the miners': proxyd must follow it down.
			pool.SetDifficulty(5e-6)
		case 17:
			// A new extranonce1 for every upstream session, applying
			// from the next job (a fresh template on the same block):
			// NiceHash gets set_extranonce, the others reconnect.
			if n := pool.SetExtranonce(nil, 0); n == 0 {
				t.Fatal("the pool changed no session's extranonce")
			}
			job, err := pool.Refresh(ctx)
			if err != nil {
				t.Fatal(err)
			}
			waitAll(job.Seq)
		}
		m := miners[i%len(miners)]
		r, err := m.SubmitOne(ctx)
		if err != nil || r.Verdict != stratumtest.VerdictAccepted {
			t.Fatalf("block %d: %s miner's share: %v %+v", i, m.Style(), err, r)
		}
		results = append(results, r)
		b, err := pool.WaitBlocks(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if b.Hash != r.Hash || !b.Accepted() {
			t.Fatalf("block %d: pool submitted %s (node said %q), miner found %s", i, b.Hash, b.Result, r.Hash)
		}
		waitAll(b.NextJob)
	}
	runTime := time.Since(started)

	// The node's verdict on every block: main chain, coinbase to the test
	// key, witness commitment, versions, tip.
	if err := pool.CheckChain(ctx); err != nil {
		t.Fatalf("the node disagrees:\n%v", err)
	}
	blocks := pool.Blocks()
	sessions := map[uint64]bool{}
	rolled, txs, segwit := 0, 0, 0
	for _, b := range blocks {
		sessions[b.SessionID] = true
		if b.Rolled() {
			rolled++
		}
		txs += b.Txs
		segwit += b.SegwitTxs
	}
	if len(blocks) != btcdBlocks || rolled == 0 || len(sessions) < 2 || segwit == 0 || txs-segwit == 0 {
		t.Errorf("%d blocks, %d with rolled versions, over %d upstream sessions, %d txs (%d segwit): want %d, >= 1, >= 2, both kinds",
			len(blocks), rolled, len(sessions), txs, segwit, btcdBlocks)
	}

	// The mid-run changes did happen: blocks were solved below the pool's
	// raised difficulty (a miner at 1e-5 reaches 1e-4 once in 10 shares),
	// proxyd followed the lowered difficulty down, NiceHash took the new
	// extranonce and the rest reconnected.
	below := 0
	for _, sh := range pool.AcceptedShares() {
		if sh.Difficulty < sh.Target {
			below++
		}
	}
	if below == 0 {
		t.Error("no block was solved below the pool's raised share difficulty")
	}
	for _, m := range miners {
		if d := m.Difficulty(); d > 5e-6 {
			t.Errorf("%s miner at difficulty %g after the pool lowered to 5e-6", m.Style(), d)
		}
		switch st := m.Stats(); {
		case m.Style() == stratumtest.StyleNiceHash && (m.Count(stratumtest.EventSetExtranonce) == 0 || st.Handshakes != 1):
			t.Errorf("nicehash miner: %d set_extranonce, %d handshakes; want >= 1 and 1", m.Count(stratumtest.EventSetExtranonce), st.Handshakes)
		case m.Style() != stratumtest.StyleNiceHash && st.Handshakes < 2:
			t.Errorf("%s miner: %d handshakes; want a reconnect after the extranonce change", m.Style(), st.Handshakes)
		}
	}

	// No share lost: every miner's share was accepted by the pool.
	if u := pool.Unaccounted(results, 0); len(u) != 0 {
		t.Errorf("%d shares the miners were told accepted are unknown to the pool: %+v", len(u), u)
	}
	st := pool.Stats()
	if st.Rejected != 0 || st.Accepted != btcdBlocks || st.BlockCandidates != btcdBlocks {
		t.Errorf("pool: %d accepted (%d block candidates), %d rejected; want %d, %d, 0", st.Accepted, st.BlockCandidates, st.Rejected, btcdBlocks, btcdBlocks)
	}

	// proxyd's side: every candidate it logged is a block the node holds;
	// the ledger balances and agrees with the node's count.
	onChain := map[string]bool{}
	for _, b := range blocks {
		onChain[b.Hash.String()] = true
	}
	p.mu.Lock()
	var logged []string
	for _, l := range p.lines {
		if l["msg"] == "block candidate: forwarding ahead of everything queued" {
			h, _ := l["hash"].(string)
			logged = append(logged, h)
		}
	}
	p.mu.Unlock()
	for _, h := range logged {
		if !onChain[h] {
			t.Errorf("proxyd forwarded block candidate %s, which is not among the node's blocks", h)
		}
	}
	if len(logged) != btcdBlocks {
		t.Errorf("proxyd logged %d block candidates, the node has %d blocks from it", len(logged), btcdBlocks)
	}
	code, body2 := daemonGet(t, p, "/api/v1/stratum", token)
	var api struct {
		Accounting struct {
			Received     uint64            `json:"received"`
			Valid        uint64            `json:"valid"`
			Rejected     uint64            `json:"rejected"`
			RejectedBy   map[string]uint64 `json:"rejected_by_reason"`
			BelowPool    uint64            `json:"below_pool_difficulty"`
			Forwarded    uint64            `json:"forwarded"`
			PoolAccepted uint64            `json:"pool_accepted"`
			PoolRejected uint64            `json:"pool_rejected"`
			NoVerdict    uint64            `json:"no_verdict"`
			InFlight     int64             `json:"in_flight"`
		} `json:"accounting"`
	}
	if code != 200 || json.Unmarshal([]byte(body2), &api) != nil {
		t.Fatalf("/api/v1/stratum = %d %s", code, body2)
	}
	a := api.Accounting
	if a.Received != btcdBlocks || a.Valid != btcdBlocks || a.Forwarded != btcdBlocks || a.PoolAccepted != btcdBlocks ||
		a.Rejected != 0 || a.BelowPool != 0 || a.PoolRejected != 0 || a.NoVerdict != 0 || a.InFlight != 0 {
		t.Errorf("proxyd ledger %+v; want %d received, valid, forwarded and pool-accepted, nothing else", a, btcdBlocks)
	}
	_, metrics := daemonGet(t, p, "/metrics", "")
	if n := metricSum(metrics, "proxyd_block_candidates_total"); n != btcdBlocks {
		t.Errorf("proxyd_block_candidates_total = %v, want %d", n, btcdBlocks)
	}
	tx := pool.TxStats()
	t.Logf("%d blocks accepted by btcd (heights %d..%d), %d with rolled versions, %d solved below the pool's difficulty, over %d upstream sessions; %d transactions in them (%d segwit); source sent %+v; ledger %+v; run %s",
		len(blocks), blocks[0].Height, blocks[len(blocks)-1].Height, rolled, below, len(sessions), txs, segwit, tx, a, runTime.Round(time.Millisecond))
	stopDaemon(t, p)
}

// metricSum adds up every series of a metric in a Prometheus text page.
func metricSum(page, name string) float64 {
	var sum float64
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
