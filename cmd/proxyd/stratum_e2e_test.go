package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashgate/proxyd/stratum/stratumtest"
)

// TestRunProxiesSharesEndToEnd runs the built binary as an operator would:
// a [[server]] and a [[pool]] in the config, a pool and a miner on loopback,
// then checks the share reached the pool and the API and metrics show it.
func TestRunProxiesSharesEndToEnd(t *testing.T) {
	pool := stratumtest.NewPool(t, stratumtest.PoolOptions{InitialDifficulty: 1e-5})
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	const token = "stratum-e2e-0123456789abcdef"
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
initial_difficulty = 0.00001
min_difficulty = 0.0000001
max_difficulty = 1
[[pool]]
name = "primary"
url = %q
user = "acct.farm"
password = "x"
`, tok, pool.URL())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, cfg)
	l := p.waitLog(t, "stratum listening", 1)
	stratumAddr, _ := l["addr"].(string)
	p.waitLog(t, "proxyd ready", 1)
	// Miners are refused until a pool is healthy: wait for /readyz.
	for i := 0; i < 1000; i++ {
		if code, _ := daemonGet(t, p, "/readyz", ""); code == 200 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := stratumtest.DialMiner(ctx, stratumAddr, stratumtest.MinerOptions{Style: stratumtest.StyleAntminer, User: "acct.rig7"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.SubmitOne(ctx)
	if err != nil || r.Verdict != stratumtest.VerdictAccepted || !pool.AcceptedHash(r.Hash) {
		t.Fatalf("share through proxyd run: %v %+v", err, r)
	}

	get := func(path string) (int, string) { return daemonGet(t, p, path, token) }
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	code, body := get("/api/v1/workers")
	var w struct {
		Workers []struct {
			Name string
			Live struct{ Accepted uint64 }
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &w) != nil || len(w.Workers) != 1 || w.Workers[0].Name != "acct.rig7" || w.Workers[0].Live.Accepted != 1 {
		t.Errorf("/api/v1/workers = %d %s", code, body)
	}
	if code, body := get("/api/v1/pools"); code != 200 || !strings.Contains(body, `"state": "active"`) {
		t.Errorf("/api/v1/pools = %d %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{`proxyd_miners_connected{server="farm"} 1`, `proxyd_shares_total{pool="primary",reason="",result="pool_accepted",server="farm"} 1`,
		`proxyd_upstream_sessions{pool="primary"} 1`, "proxyd_job_fanout_seconds_bucket", "proxyd_upstream_submit_latency_seconds_bucket",
		`proxyd_downstream_bytes_total{direction="in",server="farm"}`, `proxyd_upstream_bytes_total{direction="out",pool="primary"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	stopDaemon(t, p)
}
