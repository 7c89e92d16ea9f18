package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hashgate/proxyd/internal/config"
	"github.com/hashgate/proxyd/internal/events"
)

const testToken = "0123456789abcdef0123456789abcdef"

// fakeComponent records what the daemon asks of it.
type fakeComponent struct {
	name string
	log  *[]string
	mu   sync.Mutex
	// ready is what Ready returns.
	ready     error
	stopDelay time.Duration
	reloadKey string
	// reloadErr is what Reload returns.
	reloadErr error
}

func (f *fakeComponent) Name() string { return f.name }
func (f *fakeComponent) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.log = append(*f.log, f.name+":"+s)
}
func (f *fakeComponent) Start(context.Context) error { f.record("start"); return nil }
func (f *fakeComponent) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}
func (f *fakeComponent) setReady(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = err
}
func (f *fakeComponent) Stop(ctx context.Context) error {
	f.record("stop")
	select {
	case <-time.After(f.stopDelay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (f *fakeComponent) RegisterAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/"+f.name, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"component":%q}`, f.name)
	})
}
func (f *fakeComponent) Reload(cfg *config.Config) ([]string, error) {
	f.record("reload")
	if f.reloadErr != nil {
		return nil, f.reloadErr
	}
	if f.reloadKey != "" {
		return []string{f.reloadKey}, nil
	}
	return nil, nil
}

type harness struct {
	d       *Daemon
	base    string
	cancel  context.CancelFunc
	done    chan error
	reload  chan struct{}
	logs    *observer.ObservedLogs
	notes   *notes
	cfgPath string
}

type notes struct {
	mu sync.Mutex
	s  []string
}

func (n *notes) add(s string) { n.mu.Lock(); n.s = append(n.s, s); n.mu.Unlock() }
func (n *notes) has(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.s {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func writeToken(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte(testToken+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	return p
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, comps ...Component) *harness {
	t.Helper()
	return startWith(t, harnessOptions{}, comps...)
}

// harnessOptions vary what start builds.
type harnessOptions struct {
	// httpExtra is appended to the config's [http] table.
	httpExtra string
	// wrap, if set, builds the daemon's logger on the observer's core (the
	// log rate limiter's tests put it in between).
	wrap func(zapcore.Core) zapcore.Core
	// summaryEvery is Options.LogSummaryInterval.
	summaryEvery time.Duration
}

func startWith(t *testing.T, o harnessOptions, comps ...Component) *harness {
	t.Helper()
	dir := t.TempDir()
	tok := writeToken(t, dir, 0o600)
	cfgPath := filepath.Join(dir, "proxyd.toml")
	writeConfig(t, cfgPath, fmt.Sprintf("shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n%s", tok, o.httpExtra))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var core zapcore.Core
	core, logs := observer.New(zap.DebugLevel)
	if o.wrap != nil {
		core = o.wrap(core)
	}
	level := zap.NewAtomicLevelAt(zap.InfoLevel)
	n := &notes{}
	facs := make([]Factory, len(comps))
	for i, c := range comps {
		facs[i] = func(env Env) (Component, error) {
			if l, ok := c.(interface{ setLog(*zap.Logger) }); ok {
				l.setLog(env.Log)
			}
			return c, nil
		}
	}
	d, err := New(cfg, zap.New(core), Options{Factories: facs, Notify: n.add, Level: &level, LogSummaryInterval: o.summaryEvery})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{d: d, base: "http://" + d.Addr().String(), cancel: cancel, done: make(chan error, 1),
		reload: make(chan struct{}), logs: logs, notes: n, cfgPath: cfgPath}
	go func() { h.done <- d.Run(ctx, h.reload) }()
	deadline := time.Now().Add(10 * time.Second)
	for !n.has("READY=1") {
		if time.Now().After(deadline) {
			t.Fatal("daemon never notified READY=1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	return h
}

func (h *harness) get(t *testing.T, path, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: bad JSON %q: %v", path, b, err)
		}
	} else {
		m = map[string]any{"body": string(b)}
	}
	return resp.StatusCode, m
}

func TestHTTPSurface(t *testing.T) {
	var calls []string
	good := &fakeComponent{name: "good", log: &calls}
	slow := &fakeComponent{name: "gpu", log: &calls, ready: errors.New("NVIDIA library libnvidia-ml.so.1 not found")}
	h := start(t, good, slow)

	tests := []struct {
		name, path, token string
		code              int
		check             func(t *testing.T, m map[string]any)
	}{
		{"healthz", "/healthz", "", 200, func(t *testing.T, m map[string]any) {
			if m["status"] != "ok" {
				t.Errorf("healthz body %v", m)
			}
		}},
		{"readyz names the component and why", "/readyz", "", 503, func(t *testing.T, m map[string]any) {
			comps := m["components"].(map[string]any)
			if comps["gpu"] != "NVIDIA library libnvidia-ml.so.1 not found" || comps["good"] != "ok" || m["ready"] != false {
				t.Errorf("readyz body %v", m)
			}
		}},
		{"metrics", "/metrics", "", 200, func(t *testing.T, m map[string]any) {
			body := m["body"].(string)
			for _, want := range []string{"go_goroutines", "proxyd_build_info", `proxyd_component_ready{component="gpu"} 0`,
				`proxyd_component_ready{component="good"} 1`, "proxyd_healthy 1", "process_resident_memory_bytes"} {
				if !strings.Contains(body, want) {
					t.Errorf("metrics lack %q", want)
				}
			}
		}},
		{"api without token", "/api/v1/status", "", 401, func(t *testing.T, m map[string]any) {
			if !strings.Contains(m["error"].(string), "bearer token") {
				t.Errorf("401 body %v", m)
			}
		}},
		{"api wrong token", "/api/v1/status", "not-the-token-at-all", 401, nil},
		{"api wrong token same length", "/api/v1/status", strings.Repeat("x", len(testToken)), 401, nil},
		{"component route without token", "/api/v1/good", "", 401, nil},
		{"api status", "/api/v1/status", testToken, 200, func(t *testing.T, m map[string]any) {
			if m["version"] == nil || m["readiness"] == nil {
				t.Errorf("status body %v", m)
			}
		}},
		{"component route", "/api/v1/good", testToken, 200, nil},
		{"unknown api route is JSON 404", "/api/v1/nope", testToken, 404, func(t *testing.T, m map[string]any) {
			if m["error"] == nil {
				t.Errorf("404 body %v", m)
			}
		}},
		{"unknown path", "/nope", "", 404, nil},
		{"pprof off by default", "/debug/pprof/", "", 404, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, m := h.get(t, tc.path, tc.token)
			if code != tc.code {
				t.Fatalf("GET %s = %d %v, want %d", tc.path, code, m, tc.code)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}

	h.d.events.Add(events.Event{Component: "stratum", Kind: "failover", Subject: "primary", Reason: "no job for 2m"})
	h.d.events.Add(events.Event{Component: "switcher", Kind: "transition", Subject: "GPU-1", Reason: "contract c1"})
	if code, m := h.get(t, "/api/v1/events?component=stratum", testToken); code != 200 || len(m["events"].([]any)) != 1 {
		t.Errorf("events by component = %d %v", code, m)
	}
	if code, m := h.get(t, "/api/v1/events?limit=x", testToken); code != 400 || m["field"] != "limit" {
		t.Errorf("bad limit = %d %v, want 400 naming the field", code, m)
	}
	if code, _ := h.get(t, "/api/v1/events", ""); code != 401 {
		t.Errorf("events without token = %d", code)
	}

	slow.setReady(nil)
	if code, m := h.get(t, "/readyz", ""); code != 200 || m["ready"] != true {
		t.Errorf("readyz after component ready = %d %v", code, m)
	}
}

func TestHealthzFailsWhenALoopStalls(t *testing.T) {
	h := start(t)
	b := h.d.live.Register("stuck-loop", time.Millisecond)
	b.last.Store(time.Now().Add(-time.Hour).UnixNano())
	code, m := h.get(t, "/healthz", "")
	if code != 503 || !strings.Contains(m["reason"].(string), "stuck-loop") {
		t.Fatalf("healthz = %d %v, want 503 naming stuck-loop", code, m)
	}
	h.d.live.Unregister(b)
	if code, _ := h.get(t, "/healthz", ""); code != 200 {
		t.Fatalf("healthz after unregister = %d", code)
	}
}

func TestShutdownStopsComponentsInReverseWithinTimeout(t *testing.T) {
	var calls []string
	a := &fakeComponent{name: "a", log: &calls}
	b := &fakeComponent{name: "b", log: &calls, stopDelay: time.Hour} // never drains by itself
	h := start(t, a, b)
	t0 := time.Now()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil after a clean shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	h.done <- nil // for Cleanup
	if got := strings.Join(calls, ","); got != "a:start,b:start,b:stop,a:stop" {
		t.Errorf("calls = %s", got)
	}
	if !h.notes.has("STOPPING=1") {
		t.Error("no STOPPING=1 notification")
	}
	if h.logs.FilterMessage("shutdown timeout reached before everything drained").Len() != 1 {
		t.Error("a component that outlives the timeout must be logged")
	}
	// Informational: the bound is the configured 2s, not asserted as a wall-clock limit.
	t.Logf("shutdown took %s with shutdown_timeout=2s", time.Since(t0))
}

func TestReload(t *testing.T) {
	var calls []string
	c := &fakeComponent{name: "proxy", log: &calls, reloadKey: "server[0].listen"}
	h := start(t, c)
	dir := filepath.Dir(h.cfgPath)
	tok := filepath.Join(dir, "token")

	// A valid change: level applies live, listen needs a restart, the component is asked.
	writeConfig(t, h.cfgPath, fmt.Sprintf("shutdown_timeout = \"2s\"\n[log]\nlevel=\"debug\"\n[http]\nlisten = \"127.0.0.1:1\"\napi_token_file = %q\n", tok))
	h.reload <- struct{}{}
	waitLog(t, h.logs, "config reloaded")
	if !h.d.log.Core().Enabled(zap.DebugLevel) {
		// The observer core ignores the atomic level; check the level itself.
		if lvl := h.d.opts.Level.Level(); lvl != zap.DebugLevel {
			t.Errorf("level after reload = %v, want debug", lvl)
		}
	}
	restart := h.logs.FilterMessage("config changes need a restart to take effect (systemctl restart proxyd)").All()
	if len(restart) != 1 || !strings.Contains(fmt.Sprint(restart[0].ContextMap()["keys"]), "http.listen") ||
		!strings.Contains(fmt.Sprint(restart[0].ContextMap()["keys"]), "server[0].listen") {
		t.Errorf("restart-needed log = %v", restart)
	}
	if !strings.Contains(strings.Join(calls, ","), "proxy:reload") {
		t.Error("component was not offered the reload")
	}
	if !h.notes.has("RELOADING=1\nMONOTONIC_USEC=") {
		t.Error("no RELOADING=1 with MONOTONIC_USEC")
	}

	// A rotated token takes effect on reload.
	if err := os.WriteFile(tok, []byte("fedcba9876543210fedcba9876543210\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.reload <- struct{}{}
	waitLogCount(t, h.logs, "config reloaded", 2)
	if code, _ := h.get(t, "/api/v1/status", testToken); code != 401 {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	if code, _ := h.get(t, "/api/v1/status", "fedcba9876543210fedcba9876543210"); code != 200 {
		t.Errorf("new token after rotation: %d, want 200", code)
	}

	// A broken file keeps the running config.
	writeConfig(t, h.cfgPath, "shutdown_timeout = \"soon\"\n")
	h.reload <- struct{}{}
	waitLog(t, h.logs, "config reload failed; keeping the running config")
	if got := h.d.config().ShutdownTimeout.D(); got != 2*time.Second {
		t.Errorf("shutdown_timeout after failed reload = %v, want 2s kept", got)
	}
	if code, _ := h.get(t, "/healthz", ""); code != 200 {
		t.Error("daemon unhealthy after a failed reload")
	}
}

func waitLog(t *testing.T, logs *observer.ObservedLogs, msg string) { waitLogCount(t, logs, msg, 1) }

func waitLogCount(t *testing.T, logs *observer.ObservedLogs, msg string, n int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if logs.FilterMessage(msg).Len() >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("log %q never appeared %d times", msg, n)
}

func TestTokenFileRules(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"world readable", testToken, 0o644, "readable or writable by every user"},
		{"world writable", testToken, 0o602, "every user"},
		{"too short", "short", 0o600, "at least 16"},
		{"group readable ok", testToken, 0o640, ""},
		{"two lines", testToken + "\n" + testToken + "\n", 0o600, "holds 2 lines"},
		{"a line break in CR", testToken + "\r" + testToken, 0o600, "holds 2 lines"},
		{"empty", "", 0o600, "is empty"},
		{"blank lines", "\n\n", 0o600, "is empty"},
		{"trailing newlines ok", testToken + "\r\n\n", 0o600, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(p, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			_ = os.Chmod(p, tc.mode)
			_, err := readTokenFile(p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := readTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing token file accepted")
	}
}

func TestNewRefusesWorldReadableToken(t *testing.T) {
	dir := t.TempDir()
	tok := writeToken(t, dir, 0o644)
	cfg, err := config.Parse([]byte(fmt.Sprintf("[http]\nlisten=\"127.0.0.1:0\"\napi_token_file=%q\n", tok)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, zap.NewNop(), Options{Factories: []Factory{}}); err == nil || !strings.Contains(err.Error(), "chmod") {
		t.Fatalf("New with a world-readable token = %v, want a refusal that says how to fix it", err)
	}
}

func TestAPIDisabledWithoutTokenFile(t *testing.T) {
	cfg, err := config.Parse([]byte("[http]\nlisten=\"127.0.0.1:0\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, zap.NewNop(), Options{Factories: []Factory{}, Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get("http://" + d.Addr().String() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || !strings.Contains(string(b), "api_token_file") {
		t.Fatalf("GET /api/v1/status with API disabled = %d %s", resp.StatusCode, b)
	}
}
