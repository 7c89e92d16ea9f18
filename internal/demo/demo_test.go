package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/hashgate/proxyd/internal/components"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashgate/proxyd/internal/daemon"
	"github.com/hashgate/proxyd/nvml"
)

// factories is the binary's list without the switcher: most tests here
// need only the proxy and the GPUs.
func factories() []daemon.Factory { return []daemon.Factory{components.GPU, components.Proxy} }

// testOptions is a small, fast site on free ports.
func testOptions() Options {
	return Options{
		Factories:       factories(),
		Miners:          12,
		Listen:          "127.0.0.1:0",
		SharesPerMinute: 60,
		Seed:            7,
	}
}

func startSite(t *testing.T, o Options) *Site {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// get calls the site's API with its token.
func get(t *testing.T, s *Site, path string) (*http.Response, []byte) {
	t.Helper()
	info := s.Info()
	req, err := http.NewRequest(http.MethodGet, info.API+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+info.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestSiteServesRealAPILabelledSimulated(t *testing.T) {
	s := startSite(t, testOptions())
	info := s.Info()
	if info.Miners != 12 || !strings.HasPrefix(info.API, "http://127.0.0.1:") || strings.HasSuffix(info.API, ":0") ||
		len(info.Token) < 32 || info.Stratum == "" || !strings.HasPrefix(info.Pool, "stratum+tcp://127.0.0.1:") {
		t.Errorf("info = %+v", info)
	}
	st, err := os.Stat(info.TokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("token file %s: %v, mode %v", info.TokenFile, err, st.Mode())
	}

	// Shares flow: wait (bounded) until the proxy has forwarded one the pool accepted.
	var sum Summary
	for deadline := time.Now().Add(45 * time.Second); ; {
		sum = s.Summary()
		if sum.PoolAccepted > 0 && sum.MinersConnected == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no share accepted by the pool yet: %s", sum)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if sum.Miners != 12 || sum.UpstreamSessions != 1 || sum.SharesOK == 0 || sum.GPUs.Total != 8 ||
		sum.GPUs.Backend != nvml.BackendSimulated || sum.GPUs.Health["healthy"] != 8 {
		t.Errorf("summary = %+v", sum)
	}

	resp, body := get(t, s, "/api/v1/workers")
	var workers struct {
		Simulated bool `json:"simulated"`
		Workers   []struct {
			Name        string `json:"name"`
			Connections []struct {
				Pool      string `json:"pool"`
				UserAgent string `json:"user_agent"`
			} `json:"connections"`
		} `json:"workers"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &workers) != nil {
		t.Fatalf("/api/v1/workers = %d %s", resp.StatusCode, body)
	}
	if !workers.Simulated || resp.Header.Get(SimulatedHeader) == "" {
		t.Errorf("/api/v1/workers not labelled simulated: %s %v", body[:min(len(body), 200)], resp.Header)
	}
	agents := map[string]bool{}
	for _, w := range workers.Workers {
		if !strings.HasPrefix(w.Name, "sim.") || len(w.Connections) != 1 || w.Connections[0].Pool != PoolName {
			t.Errorf("worker %+v", w)
			continue
		}
		agents[w.Connections[0].UserAgent] = true
	}
	if len(workers.Workers) != 12 || len(agents) != len(minerStyles()) {
		t.Errorf("%d workers with %d user agents, want 12 and %d", len(workers.Workers), len(agents), len(minerStyles()))
	}

	for _, path := range []string{"/api/v1/status", "/api/v1/pools", "/api/v1/stratum", "/api/v1/gpus", "/api/v1/events", "/api/v1/nope"} {
		resp, body := get(t, s, path)
		var m map[string]any
		if json.Unmarshal(body, &m) != nil || m["simulated"] != true || resp.Header.Get(SimulatedHeader) != "pool, miners, gpus" {
			t.Errorf("%s (%d) not labelled simulated: %.200s", path, resp.StatusCode, body)
		}
	}
	resp, body = get(t, s, "/api/v1/demo")
	var d Description
	if resp.StatusCode != 200 || json.Unmarshal(body, &d) != nil || !d.Simulated || len(d.SimulatedParts) != 3 || d.Summary == nil ||
		d.Summary.Miners != 12 || !strings.HasPrefix(d.SimulatedParts["gpus"], "8 × ") {
		t.Errorf("/api/v1/demo = %d %s", resp.StatusCode, body)
	}
	// Health and metrics are the daemon's own, unlabelled.
	mresp, err := http.Get(info.API + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !bytes.Contains(mb, []byte(`proxyd_miners_connected{server="demo"} 12`)) || !bytes.Contains(mb, []byte(`proxyd_component_ready{component="demo"} 1`)) {
		t.Errorf("/metrics lacks the demo's series")
	}

	tokenFile := info.TokenFile
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(tokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file left behind: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(info.API, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("HTTP listener still open after Close")
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a site.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRunPrintsSummariesAndStopsAfterDuration(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		name := "text"
		if asJSON {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			var out, log syncBuffer
			o := testOptions()
			o.Miners = 5
			o.Duration = 1500 * time.Millisecond
			o.SummaryEvery = 200 * time.Millisecond
			o.JSON = asJSON
			o.Out, o.Log = &out, &log
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := Run(ctx, o); err != nil {
				t.Fatalf("Run: %v\nout:\n%s\nlog:\n%s", err, out.String(), log.String())
			}
			text := out.String()
			if !asJSON {
				for _, want := range []string{"SIMULATED", "curl -H \"Authorization: Bearer ", "/api/v1/workers", "[demo 0:0",
					"miners 5/5", "GPUs 8 simulated", "--duration 1.5s reached", "stopped cleanly"} {
					if !strings.Contains(text, want) {
						t.Errorf("output lacks %q:\n%s", want, text)
					}
				}
				return
			}
			var types []string
			sc := bufio.NewScanner(strings.NewReader(text))
			for sc.Scan() {
				var line struct {
					Type      string   `json:"type"`
					Simulated []string `json:"simulated"`
					Token     string   `json:"token"`
					Miners    int      `json:"miners"`
				}
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("stdout line is not JSON: %q", sc.Text())
				}
				if len(line.Simulated) != 3 || (line.Type != "event" && line.Miners != 5) {
					t.Errorf("line %s", sc.Text())
				}
				if line.Type == "started" && line.Token == "" {
					t.Errorf("started line without a token: %s", sc.Text())
				}
				types = append(types, line.Type)
			}
			if len(types) < 2 || types[0] != "started" || types[len(types)-1] != "summary" {
				t.Errorf("JSON line types %v", types)
			}
			if !strings.Contains(log.String(), "SIMULATED") || !strings.Contains(log.String(), "stopped cleanly") {
				t.Errorf("banner and status not on Log in JSON mode:\n%s", log.String())
			}
		})
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	var out syncBuffer
	o := testOptions()
	o.Miners = 3
	o.Out = &out
	s := startSite(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its context ended")
	}
	if !strings.Contains(out.String(), "interrupted") || !strings.Contains(out.String(), "[demo ") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestRunInterruptedWhileStartingIsClean(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var log syncBuffer
	o := testOptions()
	o.Log = &log
	if err := Run(ctx, o); err != nil {
		t.Fatalf("Run after an interrupt during start = %v, want nil", err)
	}
	if !strings.Contains(log.String(), "interrupted") {
		t.Errorf("log:\n%s", log.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("an interrupted start left %s behind", left[0].Name())
	}
}

func TestStartFailures(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name  string
		o     func(*Options)
		check func(error) bool
	}{
		{"http address taken", func(o *Options) { o.Listen = taken.Addr().String() }, func(err error) bool {
			var e *AddrInUseError
			return errors.As(err, &e) && e.What == "http" && e.Addr == taken.Addr().String()
		}},
		{"stratum address taken", func(o *Options) { o.Stratum = taken.Addr().String() }, func(err error) bool {
			var e *AddrInUseError
			return errors.As(err, &e) && e.What == "stratum"
		}},
		{"no proxy component", func(o *Options) { o.Factories = []daemon.Factory{components.GPU} }, func(err error) bool {
			return strings.Contains(err.Error(), "no Stratum proxy")
		}},
		{"no factories", func(o *Options) { o.Factories = nil }, func(err error) bool {
			return strings.Contains(err.Error(), "no component factories")
		}},
		{"too many miners", func(o *Options) { o.Miners = MaxMiners + 1 }, func(err error) bool {
			return strings.Contains(err.Error(), "miners")
		}},
		{"difficulty too high", func(o *Options) { o.Difficulty = 1 }, func(err error) bool {
			return strings.Contains(err.Error(), "difficulty")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp) // where the token directory goes
			o := testOptions()
			tc.o(&o)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := Start(ctx, o)
			if err == nil {
				_ = s.Close(ctx)
				t.Fatal("Start succeeded")
			}
			if s != nil || !tc.check(err) {
				t.Errorf("Start = %v, %v", s, err)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("a failed Start left %s behind", left[0].Name())
			}
		})
	}
}

// TestContractMovesGPUsToAIAndBack: the demo's SIMULATED contract moves GPUs
// from mining to AI through the real switcher, and back when it ends.
func TestContractMovesGPUsToAIAndBack(t *testing.T) {
	var out, log syncBuffer
	o := testOptions()
	o.Factories = components.Factories()
	o.Miners = 4
	o.Duration = 25 * time.Second
	o.SummaryEvery = 250 * time.Millisecond
	o.ContractAfter = 2 * time.Second
	o.ContractFor = 5 * time.Second
	o.Out, o.Log = &out, &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Run(ctx, o); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	text := out.String()
	serving := strings.Index(text, "2 SERVING_AI")
	if !strings.Contains(text, `SIMULATED AI contract "demo-ai" arrives: 2 GPUs`) || serving < 0 {
		t.Fatalf("no GPUs moved to AI:\n%s", text)
	}
	if back := strings.LastIndex(text, "8 MINING"); back < serving {
		t.Fatalf("GPUs did not return to mining after the contract:\n%s", text)
	}
}
