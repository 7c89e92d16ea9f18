package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// switcherConfig runs `proxyd run` on the simulated GPUs with simulated
// mining and one simulated AI workload, "llm", timed in fractions of a second.
const switcherConfig = `shutdown_timeout = "10s"
[log]
level = "info"
[http]
listen = "127.0.0.1:0"
api_token_file = %q
[gpu]
backend = "simulated"
poll_interval = "100ms"
[switcher]
enabled = true
state_dir = %q
max_parallel = 2
free_polls = 2
reconcile_interval = "50ms"
status_interval = "200ms"
[switcher.timeouts]
stop_miner = "10s"
verify_free = "10s"
start_ai = "20s"
drain_ai = "10s"
restore_mining = "10s"
[switcher.mining]
runtime = "simulated"
sim_memory_mib = 2048
sim_start_delay = "100ms"
sim_ready_delay = "200ms"
sim_stop_delay = "100ms"
[switcher.workload.llm]
runtime = "simulated"
power_limit_w = 300
sim_memory_mib = 30000
sim_start_delay = "100ms"
sim_ready_delay = "300ms"
sim_stop_delay = "100ms"
`

const e2eToken = "e2e-token-0123456789abcdef"

// apiClient talks to a running proxyd with the bearer token.
type apiClient struct {
	t    *testing.T
	base string
}

func (c apiClient) do(method, path, body string) (int, string) {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c apiClient) getJSON(path string, v any) {
	c.t.Helper()
	code, body := c.do("GET", path, "")
	if code != 200 {
		c.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		c.t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// waitFor polls cond every 50ms for at most 30 seconds.
func (c apiClient) waitFor(what string, cond func() bool) {
	c.t.Helper()
	for range 600 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s: never happened", what)
}

type e2eGPU struct {
	UUID   string `json:"uuid"`
	Switch *struct {
		State    string `json:"state"`
		Owner    string `json:"owner"`
		Contract string `json:"contract"`
		Reason   string `json:"reason"`
		Cordon   *struct {
			Reason string `json:"reason"`
		} `json:"cordon"`
	} `json:"switch"`
	Telemetry *struct {
		PowerLimitMW *uint32 `json:"power_limit_mw"`
	} `json:"telemetry"`
}

func (c apiClient) gpus() []e2eGPU {
	c.t.Helper()
	var node struct {
		GPUs []e2eGPU `json:"gpus"`
	}
	c.getJSON("/api/v1/gpus", &node)
	return node.GPUs
}

func (c apiClient) countState(state string) int {
	n := 0
	for _, g := range c.gpus() {
		if g.Switch != nil && g.Switch.State == state {
			n++
		}
	}
	return n
}

type e2eContract struct {
	ID        string   `json:"id"`
	Source    string   `json:"source"`
	State     string   `json:"state"`
	Desired   int      `json:"desired"`
	Serving   int      `json:"serving"`
	GPUs      []string `json:"assigned_gpus"`
	Shortfall string   `json:"shortfall_reason"`
}

func (c apiClient) contract(id string) (e2eContract, int) {
	c.t.Helper()
	code, body := c.do("GET", "/api/v1/contracts/"+id, "")
	var ct e2eContract
	if code == 200 {
		_ = json.Unmarshal([]byte(body), &ct)
	}
	return ct, code
}

func startSwitcherDaemon(t *testing.T, cfg string) (*daemonProc, apiClient) {
	t.Helper()
	p := startDaemon(t, cfg)
	var base string
	select {
	case a := <-p.addr:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("proxyd run never logged its HTTP address")
	}
	c := apiClient{t: t, base: base}
	c.waitFor("/readyz 200 (the switcher reconciled)", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p, c
}

// Everything from the outside, through the HTTP API of `proxyd run` on the
// simulated GPUs and runtime: mining at start, a contract put through the
// API moves two GPUs to AI (visible in /api/v1/gpus, the events and the
// metrics), a forced cordon moves the work elsewhere, a restart keeps the
// contract, a delete gives the GPUs back to mining.
func TestSwitcherEndToEnd(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "proxyd.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(switcherConfig, tok, filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	p, c := startSwitcherDaemon(t, cfgPath)
	c.waitFor("8 GPUs mining", func() bool { return c.countState("MINING") == 8 })
	if code, body := c.do("GET", "/api/v1/contracts", ""); code != 200 || !strings.Contains(body, `"contracts": []`) {
		t.Errorf("no contracts yet: %d %s", code, body)
	}

	// Bad bodies get 400 naming the field.
	for _, tc := range []struct{ body, field string }{
		{`{"gpus": "two"}`, "gpus"},
		{`{"gpus": 2, "colour": "red"}`, "colour"},
		{`{"gpus": 2, "start": "now"}`, "start"},
	} {
		code, body := c.do("PUT", "/api/v1/contracts/e2e", tc.body)
		if code != 400 || !strings.Contains(body, `"field": "`+tc.field+`"`) {
			t.Errorf("PUT %s: %d %s", tc.body, code, body)
		}
	}
	now := time.Now().UTC()
	contract := fmt.Sprintf(`{"gpus": 2, "start": %q, "end": %q, "price_usd_per_gpu_hour": 2.1, "priority": 5, "workload": "llm"}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	if code, body := c.do("PUT", "/api/v1/contracts/e2e", contract); code != http.StatusCreated {
		t.Fatalf("PUT contract: %d %s", code, body)
	}
	c.waitFor("the contract served by 2 GPUs", func() bool { ct, _ := c.contract("e2e"); return ct.Serving == 2 })
	ct, _ := c.contract("e2e")
	if ct.State != "active" || ct.Desired != 2 || ct.Source != "api" || len(ct.GPUs) != 2 {
		t.Errorf("contract: %+v", ct)
	}
	serving := 0
	for _, g := range c.gpus() {
		if g.Switch == nil {
			t.Fatalf("GPU %s has no switch fields", g.UUID)
		}
		if g.Switch.State == "SERVING_AI" {
			serving++
			if g.Switch.Owner != "ai" || g.Switch.Contract != "e2e" {
				t.Errorf("serving GPU: %+v", g.Switch)
			}
			if g.Telemetry == nil || g.Telemetry.PowerLimitMW == nil || *g.Telemetry.PowerLimitMW != 300_000 {
				t.Errorf("serving GPU's power limit: %+v", g.Telemetry)
			}
		}
	}
	if serving != 2 {
		t.Errorf("%d GPUs serving in /api/v1/gpus", serving)
	}
	var evs struct {
		Events []struct {
			Kind, Subject, From, To, Reason string
			Details                         map[string]any
		} `json:"events"`
	}
	c.getJSON("/api/v1/events?component=switcher&limit=4096", &evs)
	ready := 0
	for _, e := range evs.Events {
		if e.Kind == "transition" && e.From == "STARTING_AI" && e.To == "SERVING_AI" && e.Reason == "ai_ready" &&
			e.Details["contract"] == "e2e" && strings.HasPrefix(e.Subject, "GPU-") && e.Details["message"] != "" {
			ready++
		}
	}
	if ready != 2 {
		t.Errorf("%d ai_ready transitions in the journal: %+v", ready, evs.Events)
	}
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`proxyd_contract_gpus{contract="e2e",kind="serving"} 2`,
		`proxyd_contract_gpus{contract="e2e",kind="desired"} 2`,
		`proxyd_gpu_transitions_total{from="STARTING_AI",reason="ai_ready",to="SERVING_AI"} 2`,
		`proxyd_gpu_transition_seconds_bucket{from="VERIFYING_FREE",to="STARTING_AI"`,
		`proxyd_component_ready{component="switcher"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^proxyd_gpu_state\{state="SERVING_AI",uuid="GPU-[^"]+"\} 1$`).FindAll(metrics, -1)); n != 2 {
		t.Errorf("%d proxyd_gpu_state SERVING_AI series at 1, want 2", n)
	}

	// A forced cordon drains one GPU; the contract moves to another.
	victim := ct.GPUs[0]
	if code, body := c.do("POST", "/api/v1/gpus/"+victim+"/cordon", `{"reason": "e2e maintenance"}`); code != 200 ||
		!strings.Contains(body, "e2e maintenance") {
		t.Fatalf("cordon: %d %s", code, body)
	}
	if code, body := c.do("POST", "/api/v1/gpus/"+victim+"/cordon", `{"reason": "e2e maintenance now", "force": true}`); code != 200 {
		t.Fatalf("forced cordon: %d %s", code, body)
	}
	c.waitFor("the cordoned GPU idle and the contract served elsewhere", func() bool {
		ct, _ := c.contract("e2e")
		for _, g := range c.gpus() {
			if g.UUID == victim {
				return g.Switch.State == "IDLE" && ct.Serving == 2 && !strings.Contains(strings.Join(ct.GPUs, ","), victim)
			}
		}
		return false
	})
	if code, body := c.do("POST", "/api/v1/gpus/"+victim+"/uncordon", ""); code != 200 {
		t.Fatalf("uncordon: %d %s", code, body)
	}
	c.waitFor("the uncordoned GPU mining", func() bool {
		for _, g := range c.gpus() {
			if g.UUID == victim {
				return g.Switch.State == "MINING"
			}
		}
		return false
	})
	if code, body := c.do("POST", "/api/v1/gpus/"+victim+"/resume", ""); code != 200 || !strings.Contains(body, `"switch"`) {
		t.Errorf("resume of a healthy GPU: %d %s", code, body)
	}
	if code, body := c.do("GET", "/api/v1/switcher", ""); code != 200 || !strings.Contains(body, "e2e 2/2 serving") {
		t.Errorf("summary: %d %s", code, body)
	}

	// A restart keeps the API's contract and serves it again.
	stopDaemon(t, p)
	p, c = startSwitcherDaemon(t, cfgPath)
	if ct, code := c.contract("e2e"); code != 200 || ct.Source != "api" {
		t.Fatalf("the contract after a restart: %d %+v", code, ct)
	}
	c.waitFor("served again after the restart", func() bool { ct, _ := c.contract("e2e"); return ct.Serving == 2 })

	if code, body := c.do("DELETE", "/api/v1/contracts/e2e", ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	c.waitFor("every GPU mining again", func() bool { return c.countState("MINING") == 8 })
	for _, g := range c.gpus() {
		if g.Telemetry == nil || g.Telemetry.PowerLimitMW == nil || *g.Telemetry.PowerLimitMW != 400_000 {
			t.Errorf("GPU %s not back at its own limit: %+v", g.UUID, g.Telemetry)
		}
	}
	if _, code := c.contract("e2e"); code != 404 {
		t.Errorf("deleted contract: %d", code)
	}
	stopDaemon(t, p)
}
