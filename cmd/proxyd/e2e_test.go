package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// proxydBinary builds ./cmd/proxyd once per test run, so the end-to-end tests
// exercise exactly what an operator installs.
func proxydBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "proxyd-e2e")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "proxyd")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func runBinary(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(proxydBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestCheckConfigBinary(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name   string
		path   string
		code   int
		stdout string
		stderr []string
	}{
		{"example config", filepath.Join("..", "..", "configs", "proxyd.toml"), 0, "config ok: 1 server(s), 1 pool(s)", nil},
		{"empty file", write("empty.toml", nil), 0, "config ok: 0 server(s)", nil},
		{"unknown key", write("unknown.toml", []byte("[http]\nlisen = \"127.0.0.1:8080\"\n")), exitConfig, "",
			[]string{`unknown key "http.lisen"`, "line 2"}},
		{"port 70000", write("port.toml", []byte("[http]\nlisten = \"127.0.0.1:70000\"\n")), exitConfig, "",
			[]string{`"http.listen"`, "70000", "out of range"}},
		{"duration fast", write("dur.toml", []byte("shutdown_timeout = \"fast\"\n")), exitConfig, "",
			[]string{`"shutdown_timeout"`, `"fast" is not a duration`}},
		{"binary file", write("bin.toml", []byte{0x7f, 'E', 'L', 'F', 0, 0, 0xff, 0xfe, 1, 2, 3}), exitConfig, "", []string{"binary"}},
		{"random bytes", write("rand.toml", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1024)), exitConfig, "", []string{"config"}},
		{"missing file", filepath.Join(dir, "missing.toml"), exitConfig, "", []string{"no such file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBinary(t, "", "check-config", "--config", tc.path)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout %q lacks %q", out, tc.stdout)
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
				t.Errorf("panic on input: %s", errOut)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Commands:"},
		{[]string{"run", "--help"}, 0, "Usage: proxyd run"},
		{[]string{"check-config", "--help"}, 0, "-config"},
		{[]string{"version"}, 0, "proxyd "},
		{[]string{"nope"}, exitUsage, ""},
		{[]string{}, exitUsage, ""},
		{[]string{"run", "--bogus"}, exitUsage, ""},
	}
	for _, tc := range tests {
		out, errOut, code := runBinary(t, "", tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("proxyd %v: exit %d stdout %q stderr %q; want exit %d and %q", tc.args, code, out, errOut, tc.code, tc.want)
		}
	}
}

// daemonProc is a running `proxyd run` whose JSON log lines are collected.
type daemonProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	addr  chan string
	exit  chan int
}

func startDaemon(t *testing.T, cfgPath string) *daemonProc {
	t.Helper()
	cmd := exec.Command(proxydBinary(t), "run", "--config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, addr: make(chan string, 1), exit: make(chan int, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "non-JSON: " + sc.Text()}
			}
			p.mu.Lock()
			p.lines = append(p.lines, m)
			p.mu.Unlock()
			if m["msg"] == "http listening" {
				p.addr <- m["addr"].(string)
			}
		}
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		p.exit <- code
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return p
}

func (p *daemonProc) waitLog(t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	for i := 0; i < 2000; i++ {
		p.mu.Lock()
		seen := 0
		for _, l := range p.lines {
			if l["msg"] == msg {
				seen++
				if seen == n {
					p.mu.Unlock()
					return l
				}
			}
		}
		p.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Fatalf("log %q never appeared %d time(s); logs: %v", msg, n, p.lines)
	return nil
}

func TestRunServesSignalsAndExitsClean(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("e2e-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "proxyd.toml")
	body := "shutdown_timeout = \"5s\"\n[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n[gpu]\nbackend = \"off\"\n"
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(body, tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, cfg)
	p.waitLog(t, "proxyd ready", 1)
	get := func(path, token string) (int, string) { return daemonGet(t, p, path, token) }
	if code, _ := get("/healthz", ""); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz", ""); code != 200 && code != 503 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := get("/metrics", ""); code != 200 || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "proxyd_build_info") {
		t.Errorf("/metrics = %d, lacks go_goroutines or proxyd_ series", code)
	}
	if code, body := get("/api/v1/status", ""); code != 401 || !json.Valid([]byte(body)) {
		t.Errorf("/api/v1/status without token = %d %s, want 401 JSON", code, body)
	}
	if code, _ := get("/api/v1/status", "e2e-token-0123456789abcdef"); code != 200 {
		t.Errorf("/api/v1/status with token = %d", code)
	}

	// SIGHUP: a changed level is applied, a changed listen is reported as needing a restart.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(strings.Replace(body, "[http]", "[log]\nlevel = \"debug\"\n[http]", 1), tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l := p.waitLog(t, "config reloaded", 1)
	if !strings.Contains(fmt.Sprint(l["applied"]), "log.level") {
		t.Errorf("reload log %v does not list log.level as applied", l)
	}
	// A broken config on SIGHUP keeps the daemon running on the old one.
	if err := os.WriteFile(cfg, []byte("garbage = = ="), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "config reload failed; keeping the running config", 1)
	if code, _ := get("/healthz", ""); code != 200 {
		t.Errorf("/healthz after failed reload = %d", code)
	}

	t0 := time.Now()
	stopDaemon(t, p)
	p.waitLog(t, "proxyd stopped", 1)
	t.Logf("SIGTERM to exit: %s (shutdown_timeout 5s)", time.Since(t0))
}

func TestRunRefusesBadStartup(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("e2e-token-0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(tok, 0o644)
	cfg := filepath.Join(dir, "proxyd.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[http]\nlisten = \"127.0.0.1:0\"\napi_token_file = %q\n", tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBinary(t, "", "run", "--config", cfg)
	if code != exitConfig || !strings.Contains(errOut, "readable or writable by every user") {
		t.Errorf("world-readable token: exit %d, stderr %s", code, errOut)
	}
	_, errOut, code = runBinary(t, "", "run", "--config", filepath.Join(dir, "missing.toml"))
	if code != exitConfig || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing config: exit %d, stderr %s", code, errOut)
	}
}

// daemonGet fetches a path from a daemon started by startDaemon.
func daemonGet(t *testing.T, p *daemonProc, path, token string) (int, string) {
	t.Helper()
	var base string
	select {
	case a := <-p.addr:
		base = "http://" + a
		p.addr <- a // leave it for the next call
	case <-time.After(30 * time.Second):
		t.Fatal("proxyd run never logged its HTTP address")
	}
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func stopDaemon(t *testing.T, p *daemonProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-p.exit:
		if code != 0 {
			t.Errorf("exit status after SIGTERM = %d, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("proxyd did not exit after SIGTERM")
	}
}
