//go:build linux

package hostile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// switcherConfig runs proxyd with the simulated GPUs, simulated runtimes
// and no Stratum listener. demand is the [switcher] demand_url ("" for
// none); extra is more [switcher] lines.
func switcherConfig(demand, extra string) string {
	feed := ""
	if demand != "" {
		feed = fmt.Sprintf("demand_url = %q\ndemand_poll_interval = \"200ms\"\n", demand)
	}
	return fmt.Sprintf(`shutdown_timeout = "5s"
[log]
level = "info"
[http]
listen = "127.0.0.1:0"
api_token_file = @TOKEN_FILE@
[gpu]
backend = "simulated"
poll_interval = "100ms"
[switcher]
enabled = true
state_dir = @STATE_DIR@
max_parallel = 2
free_polls = 2
reconcile_interval = "50ms"
status_interval = "200ms"
%s%s
[switcher.mining]
runtime = "simulated"
sim_memory_mib = 2048
sim_start_delay = "100ms"
sim_ready_delay = "200ms"
sim_stop_delay = "100ms"
[switcher.workload.llm]
runtime = "simulated"
sim_memory_mib = 30000
sim_start_delay = "100ms"
sim_ready_delay = "300ms"
sim_stop_delay = "100ms"
`, feed, extra)
}

// Finding 4: secrets in demand_url.
const (
	feedUser   = "feeduser7q"
	feedPass   = "S3cretPassw0rdX"
	feedAPIKey = "K3yS3cr3tValue9"
)

// secrets are the strings that must never leave proxyd.
var secrets = []string{feedUser, feedPass, feedAPIKey}

// leaks returns the secrets found in b.
func leaks(b []byte) []string {
	var out []string
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			out = append(out, s)
		}
	}
	return out
}

func attackDemandSecrets(s *suite, t *testing.T) {
	r := s.newRow(t, "4 demand_url with user:pass@ and ?api_key=", "no secret in logs, /api/v1/events, /api/v1/switcher, /metrics, check-config or run output")
	var mode atomic.Int32 // 0: 500, 1: not JSON, 2: an empty list
	feed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch mode.Load() {
		case 0:
			http.Error(w, "feed backend down", http.StatusInternalServerError)
		case 1:
			_, _ = w.Write([]byte("<html>not json</html>"))
		default:
			_, _ = w.Write([]byte("[]"))
		}
	}))
	host := strings.TrimPrefix(feed.URL, "http://")
	demand := fmt.Sprintf("http://%s:%s@%s/feed?api_key=%s&site=7", feedUser, feedPass, host, feedAPIKey)
	d := s.startDaemon(t, "demand-secrets", switcherConfig(demand, ""))
	w := s.measure(t, d, r)
	// Each failure kind is journaled once when it starts: walk through them.
	waitEvents := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, b, err := d.request("GET", "/api/v1/events?component=switcher&limit=1000", ""); err == nil &&
				bytes.Count(b, []byte("demand_feed_failed")) >= n {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("fewer than %d demand_feed_failed events after 10 s", n)
	}
	waitEvents(1)
	mode.Store(1)
	waitEvents(2)
	mode.Store(2)
	time.Sleep(500 * time.Millisecond)
	feed.Close() // now the dial fails: the HTTP client's own error quotes the URL
	waitEvents(3)
	s.end(w)
	var seen []string
	check := func(what string, b []byte) {
		if l := leaks(b); len(l) > 0 {
			t.Errorf("%s shows %v: %.600s", what, l, b)
		}
		seen = append(seen, what)
	}
	for _, l := range d.logs() {
		if lk := leaks(l.Raw); len(lk) > 0 {
			t.Errorf("log line shows %v: %s", lk, l.Raw)
			break
		}
	}
	for _, path := range []string{"/api/v1/events?limit=1000", "/api/v1/events?component=switcher&limit=1000", "/api/v1/switcher",
		"/api/v1/status", "/api/v1/contracts", "/readyz", "/metrics"} {
		_, b := d.get(t, path)
		check(path, b)
	}
	// The redacted URL still says which feed it is.
	if _, b := d.get(t, "/api/v1/switcher"); !bytes.Contains(b, []byte(host)) {
		t.Errorf("/api/v1/switcher does not name the feed's host %s at all: %.400s", host, b)
	}
	// check-config and run on the same config, and on one whose demand_url
	// is refused (the error quotes it).
	bad := switcherConfig(strings.Replace(demand, "http://", "ftp://", 1), "")
	for _, tc := range []struct {
		name, cfg string
		code      int
	}{{"valid", switcherConfig(demand, ""), 0}, {"ftp scheme", bad, exitConfig}} {
		out, code := s.runCmd(t, tc.cfg, "check-config")
		check("check-config ("+tc.name+")", out)
		if code != tc.code {
			t.Errorf("check-config (%s): exit %d, want %d: %s", tc.name, code, tc.code, out)
		}
	}
	out, code := s.runCmd(t, bad, "run")
	check("run (ftp scheme)", out)
	if code != exitConfig {
		t.Errorf("run with an ftp demand_url: exit %d, want %d: %s", code, exitConfig, out)
	}
	s.note(r, "checked %d log lines and %d outputs", len(d.logs()), len(seen))
}

// exitConfig is proxyd's exit status for a config it refuses (EX_CONFIG).
const exitConfig = 78

// runCmd writes cfg (with the same placeholders as startDaemon) and runs
// `proxyd <sub> --config FILE` to completion (at most 20 s; a run that is
// still going is killed and reported as exit -1). It returns stdout and
// stderr together and the exit status.
func (s *suite) runCmd(t *testing.T, cfg, sub string) ([]byte, int) {
	t.Helper()
	dir := t.TempDir()
	tok := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tok, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s.runConfig(t, dir, strings.NewReplacer("@TOKEN_FILE@", fmt.Sprintf("%q", tok), "@STATE_DIR@", fmt.Sprintf("%q", dir)).Replace(cfg), sub)
}

// runConfig writes body as dir/proxyd.toml and runs proxyd sub on it.
func (s *suite) runConfig(t *testing.T, dir, body, sub string) ([]byte, int) {
	t.Helper()
	path := filepath.Join(dir, "proxyd.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, sub, "--config", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return out.Bytes(), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.Bytes(), 0
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return out.Bytes(), -1
	}
}

// Finding 9: contract JSON.
const maxContractBody = 1 << 20 // the API's request body bound (1 MiB)

func contractJSON(id string, extra string) string {
	start := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	return fmt.Sprintf(`{"gpus": 1, "start": %q, "end": %q, "price_usd_per_gpu_hour": 3.5, "workload": "llm"%s}`,
		start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339), extra)
}

func attackContractJSON(s *suite, t *testing.T) {
	r := s.newRow(t, "9 contract JSON: case-variant and duplicate keys, > 1 MiB body, echoing errors",
		fmt.Sprintf("400 naming the field; 413 over %d bytes; error bodies ≤ %d bytes", maxContractBody, maxErrorBytes))
	d := s.startDaemon(t, "contract-json", switcherConfig("", ""))
	w := s.measure(t, d, r)
	long := strings.Repeat("A", 900<<10)
	tests := []struct {
		name, body string
		code       int
		field      string // the error must name it
	}{
		{"case-variant duplicate", contractJSON("x", `, "GPUS": 7`), http.StatusBadRequest, "GPUS"},
		{"exact duplicate", contractJSON("x", `, "gpus": 7`), http.StatusBadRequest, "gpus"},
		{"case-variant only", strings.Replace(contractJSON("x", ""), `"gpus"`, `"Gpus"`, 1), http.StatusBadRequest, "Gpus"},
		{"over 1 MiB", contractJSON("x", `, "pad": "`+strings.Repeat("x", maxContractBody)+`"`), http.StatusRequestEntityTooLarge, ""},
		{"900 KiB unknown key", `{"` + long + `": 1}`, http.StatusBadRequest, ""},
		{"900 KiB string value", contractJSON("x", `, "workload": "`+long+`"`), http.StatusBadRequest, ""},
		{"900 KiB broken JSON", `{"gpus": 1, "workload": "` + long, http.StatusBadRequest, ""},
	}
	for _, tc := range tests {
		code, b, err := d.request(http.MethodPut, "/api/v1/contracts/hostile", tc.body)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if code != tc.code {
			t.Errorf("%s: %d %.300s, want %d", tc.name, code, b, tc.code)
		}
		if len(b) > maxErrorBytes {
			t.Errorf("%s: the error is %d bytes (bound %d): %.200s…", tc.name, len(b), maxErrorBytes, b)
		}
		if tc.field != "" && !bytes.Contains(b, []byte(tc.field)) {
			t.Errorf("%s: the error does not name %q: %s", tc.name, tc.field, b)
		}
		if code, _ := d.get(t, "/api/v1/contracts/hostile"); code != http.StatusNotFound {
			t.Errorf("%s: the refused contract exists (GET %d)", tc.name, code)
			_, _, _ = d.request(http.MethodDelete, "/api/v1/contracts/hostile", "")
		}
	}
	// The well-formed one still works.
	if code, b, err := d.request(http.MethodPut, "/api/v1/contracts/hostile", contractJSON("x", "")); err != nil || code != http.StatusCreated {
		t.Errorf("a valid contract: %d %s %v", code, b, err)
	}
	s.end(w)
	s.note(r, "%d hostile bodies", len(tests))
}

// Finding 10: thousands of contracts.
const (
	// maxContracts is [switcher] max_contracts' default: contracts kept
	// from the API, and separately from the feed.
	maxContracts = 1000
	// The feed first lists feedEnded contracts that ended 30 days ago
	// (past contract_retention's 7 d default: never kept) and feedFuture
	// still to come (under max_contracts: all kept); then feedFlood live
	// ones, past max_contracts: that answer is refused whole and the last
	// known demand stays.
	feedEnded  = 3000
	feedFuture = 900
	feedFlood  = 5000
	// apiPuts contracts are PUT through the API on top of the feed.
	apiPuts = 300
	// maxMetricsBaseBytes bounds /metrics of the switcher daemon: the Go
	// runtime, process, GPU and switcher series of 8 simulated GPUs, and
	// proxyd_contract_gpus for active contracts only (none here).
	maxMetricsBaseBytes = 96 << 10
	// maxStateBytesPerContract bounds switcher-state.json per kept
	// contract (~300 bytes of JSON each).
	maxStateBytesPerContract = 600
	// maxContractFloodGrowthKiB: the kept contracts and one parsed feed
	// answer (~1 MB of JSON) at a time.
	maxContractFloodGrowthKiB = 32 << 10
)

// feedList returns a feed answer of n contracts named prefix-NNNNN, 1 GPU
// each, one hour long, the first starting at from, one a day apart.
func feedList(prefix string, n int, from time.Time) []map[string]any {
	var list []map[string]any
	for i := range n {
		st := from.Add(time.Duration(i) * 24 * time.Hour)
		list = append(list, map[string]any{"id": fmt.Sprintf("%s-%05d", prefix, i), "gpus": 1, "start": st, "end": st.Add(time.Hour),
			"price_usd_per_gpu_hour": 2.0, "workload": "llm"})
	}
	return list
}

func attackContractFlood(s *suite, t *testing.T) {
	r := s.newRow(t, fmt.Sprintf("10 feed of %d ended + %d future contracts, then %d future; %d API PUTs", feedEnded, feedFuture, feedFlood, apiPuts),
		fmt.Sprintf("≤ %d contracts kept per source (max_contracts), ended ones pruned (contract_retention 7d); /metrics, state file and RSS bounded", maxContracts))
	now := time.Now().UTC().Truncate(time.Second)
	first, err := json.Marshal(append(feedList("old", feedEnded, now.Add(-30*24*time.Hour-time.Duration(feedEnded)*24*time.Hour)),
		feedList("next", feedFuture, now.Add(24*time.Hour))...))
	if err != nil {
		t.Fatal(err)
	}
	flood, err := json.Marshal(feedList("flood", feedFlood, now.Add(24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	var polls atomic.Int64
	var answer atomic.Pointer[[]byte]
	answer.Store(&first)
	feed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		polls.Add(1)
		_, _ = w.Write(*answer.Load())
	}))
	t.Cleanup(feed.Close)
	d := s.startDaemon(t, "contract-flood", switcherConfig(feed.URL+"/feed", ""))
	w := s.measure(t, d, r)
	listed := func() (all, old, next, flood int) {
		var cs struct {
			Contracts []struct {
				ID string `json:"id"`
			} `json:"contracts"`
		}
		_, b := d.get(t, "/api/v1/contracts")
		if err := json.Unmarshal(b, &cs); err != nil {
			t.Fatalf("GET /api/v1/contracts: %v: %.300s", err, b)
		}
		for _, c := range cs.Contracts {
			switch {
			case strings.HasPrefix(c.ID, "old-"):
				old++
			case strings.HasPrefix(c.ID, "next-"):
				next++
			case strings.HasPrefix(c.ID, "flood-"):
				flood++
			}
		}
		return len(cs.Contracts), old, next, flood
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, _, next, _ := listed(); next == feedFuture {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed's %d future contracts never showed up", feedFuture)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var firstPut, lastPut time.Duration
	for i := range apiPuts {
		t0 := time.Now()
		code, b, err := d.request(http.MethodPut, fmt.Sprintf("/api/v1/contracts/api-%04d", i), contractJSON("", ""))
		el := time.Since(t0)
		if i == 0 {
			firstPut = el
		}
		lastPut = el
		if err != nil || code != http.StatusCreated {
			t.Fatalf("PUT %d: %d %.300s %v", i, code, b, err)
		}
	}
	answer.Store(&flood)
	p0 := polls.Load()
	for polls.Load() < p0+3 && time.Now().Before(deadline.Add(20*time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	s.end(w)
	all, old, next, flooded := listed()
	_, mlen, err := d.metrics()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(d.dir, "switcher-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sw struct {
		DemandFeed struct {
			Error string `json:"error"`
		} `json:"demand_feed"`
	}
	_, b := d.get(t, "/api/v1/switcher")
	_ = json.Unmarshal(b, &sw)
	s.note(r, "%d feed polls; %d contracts kept (%d ended long ago, %d from the first answer, %d from the flood); /metrics %d KiB; state file %d KiB; PUT first %s, last %s; feed error %q",
		polls.Load(), all, old, next, flooded, mlen>>10, st.Size()>>10, firstPut.Round(100*time.Microsecond), lastPut.Round(100*time.Microsecond),
		truncateNote(sw.DemandFeed.Error, 120))
	if all > 2*maxContracts {
		t.Errorf("%d contracts kept; the bound is %d from the API + %d from the feed (max_contracts)", all, maxContracts, maxContracts)
	}
	if old > 0 {
		t.Errorf("%d contracts that ended 30 days ago are kept (contract_retention 7d)", old)
	}
	if flooded > 0 {
		t.Errorf("%d contracts of a feed answer with %d live ones (max_contracts %d) were taken", flooded, feedFlood, maxContracts)
	}
	if next != feedFuture {
		t.Errorf("%d of the feed's %d earlier contracts are kept; a refused answer must keep the last known demand", next, feedFuture)
	}
	if sw.DemandFeed.Error == "" {
		t.Errorf("the refused feed answer shows no error in /api/v1/switcher")
	}
	if mlen > maxMetricsBaseBytes {
		t.Errorf("/metrics is %d bytes; the bound is %d", mlen, maxMetricsBaseBytes)
	}
	if limit := int64(all * maxStateBytesPerContract); st.Size() > limit {
		t.Errorf("switcher-state.json is %d bytes for %d contracts; the bound is %d", st.Size(), all, limit)
	}
	if g := r.RSSPeak - r.RSSBase; g > maxContractFloodGrowthKiB {
		t.Errorf("proxyd's RSS grew by %.1f MiB; the bound is %d MiB", float64(g)/1024, maxContractFloodGrowthKiB>>10)
	}
}

func truncateNote(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
